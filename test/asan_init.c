/*
 * test/asan_init.c
 *
 * keysmith_asan_init.so: lets the sanitized test pass (make test
 * SANITIZE=1) run Debian's postgres binary with the ASan runtime
 * preloaded.  test/lib.sh starts the server with
 *
 *     LD_PRELOAD="<libasan.so.8> <pkglibdir>/keysmith_asan_init.so"
 *
 * Why it is needed: a preloaded ASan runtime initialises itself lazily, at
 * the first call of a function it intercepts.  Constructors of the shared
 * libraries postgres links (libgpg-error, gnutls: through libsystemd and
 * libldap) run before any preloaded library's, and the first of them calls
 * bindtextdomain(), which takes glibc's _nl_state_lock for writing and then
 * calls malloc().  ASan's malloc then initialises ASan, whose
 * initialisation calls dlerror(), which translates its message under the
 * same lock: dcigettext's read lock fails with EDEADLK (ignored), its
 * unlock releases the writer's lock, and bindtextdomain's own unlock
 * leaves the lock broken.  The next bindtextdomain (postgres's own, in
 * main) waits for ever.
 *
 * This library interposes bindtextdomain and bind_textdomain_codeset (the
 * two entry points that reach that lock for writing): each initialises
 * ASan first, while no lock is held, then calls glibc's.  It is a test
 * helper only, never loaded outside the sanitized test pass, and is built
 * without sanitizers.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

/* ASan's entry point; weak, so that the library also loads without ASan. */
extern void __asan_init(void) __attribute__((weak));

typedef char *(*BindFn) (const char *, const char *);

static char *
Forward(const char *symbol, BindFn *real, const char *a, const char *b)
{
	if (__asan_init)
		__asan_init();			/* idempotent; no lock is held here */
	if (*real == NULL)
		*real = (BindFn) dlsym(RTLD_NEXT, symbol);
	return *real ? (*real) (a, b) : NULL;
}

char *
bindtextdomain(const char *domainname, const char *dirname)
{
	static BindFn real;

	return Forward("bindtextdomain", &real, domainname, dirname);
}

char *
bind_textdomain_codeset(const char *domainname, const char *codeset)
{
	static BindFn real;

	return Forward("bind_textdomain_codeset", &real, domainname, codeset);
}
