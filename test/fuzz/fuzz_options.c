/*
 * test/fuzz/fuzz_options.c
 *
 * libFuzzer target: the role template options parser (kms/template_options.c) on
 * arbitrary bytes.  What it accepts must be within its documented bounds:
 * a prefix of safe characters not starting with pg_, numbers in range,
 * role names of 1 to 63 bytes without NUL.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "template_options.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	KsTemplateOptions o;
	KsError		err;

	if (KsTemplateOptionsParse((const char *) data, size, &o, &err) != KS_OK)
	{
		if (memchr(err.message, '\0', sizeof(err.message)) == NULL)
			abort();			/* an unterminated message */
		return 0;
	}
	if (strncmp(o.prefix, "pg_", 3) == 0 || strlen(o.prefix) > KS_PREFIX_MAX)
		abort();
	for (const char *p = o.prefix; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
			abort();
	if (o.max_leases < 0 || o.max_leases > 1000000 || o.connection_limit < -1 || o.connection_limit > 1000000)
		abort();
	if (o.has_owner && (o.owner_role[0] == '\0' || strlen(o.owner_role) >= KS_ROLE_NAME_MAX))
		abort();
	if (o.n_issuers < 0 || o.n_issuers > KS_ISSUERS_MAX)
		abort();
	for (int i = 0; i < o.n_issuers; i++)
		if (o.issuers[i][0] == '\0' || strlen(o.issuers[i]) >= KS_ROLE_NAME_MAX)
			abort();
	return 0;
}
