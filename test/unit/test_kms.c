/*
 * test/unit/test_kms.c
 *
 * C unit tests of kms/, run outside the server: the ciphertext format
 * against the fixed test vectors of docs/format.md (computed independently
 * by test/vectors.py), every way a ciphertext can be damaged, the master
 * key file parser and loader, and the local provider's wrap format.
 * Prints TAP; exits non-zero if anything failed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include "envelope.h"
#include "local.h"
#include "oauth.h"
#include "template_options.h"
#include "pgremote.h"
#include "secret_options.h"

/* The plan, declared up front; a run that stops short of it fails. */
#define TESTS_PLANNED 175

static int	tests_run = 0;
static int	tests_failed = 0;

static void
check(int cond, const char *what)
{
	tests_run++;
	if (cond)
		printf("ok %d - %s\n", tests_run, what);
	else
	{
		tests_failed++;
		printf("not ok %d - %s\n", tests_run, what);
	}
}

static size_t
unhex(const char *hex, uint8_t *out)
{
	size_t		n = strlen(hex) / 2;

	for (size_t i = 0; i < n; i++)
	{
		unsigned int b;

		sscanf(hex + 2 * i, "%2x", &b);
		out[i] = (uint8_t) b;
	}
	return n;
}

typedef struct Vector
{
	const char *name;
	uint32_t	key_id;
	uint32_t	version;
	const char *pt;
	size_t		pt_len;
	const char *context;		/* NULL = no context */
	const char *expected_hex;
} Vector;

/* Same values as docs/format.md and test/vectors.py. */
static const Vector vectors[] = {
	{"v1", 1, 1, "hello, keysmith", 15, NULL,
	"01010000000100000001a0a1a2a3a4a5a6a7a8a9aaab8e7d10412ae722d4071cf4be6e0ea803f1b43d2430d9e7e79ff30c81b117d9"},
	{"v2", 1, 1, "hello, keysmith", 15, "customer:42",
	"01010000000100000001a0a1a2a3a4a5a6a7a8a9aaab8e7d10412ae722d4071cf4be6e0ea8eb3553a488dd37c8cae51f3af59b4b44"},
	{"v3", 1, 1, "", 0, "",
	"01010000000100000001a0a1a2a3a4a5a6a7a8a9aaab2496f16d8d7f9ce4ca201c4f0b211d11"},
	{"v4", 0x01020304, 7, "\x00\xff binary", 9, NULL,
	"01010102030400000007a0a1a2a3a4a5a6a7a8a9aaabe6e75c4f2ca563cd1b7e46dd5a866c7187a41a1da91a945e86"},
};

static const char *WRAP_VECTOR =
"0100000003b0b1b2b3b4b5b6b7b8b9babb03018286c54fed9e33e72df3e1fb42c4ae19963b5000c088ebdf7a2095adec8ff0af667fdbf78bfed1d240bd8015719a";

static uint8_t DEK[32];

static KsContext
make_context(const char *s)
{
	KsContext	c = {false, NULL, 0};

	if (s != NULL)
	{
		c.present = true;
		c.data = (const uint8_t *) s;
		c.len = strlen(s);
	}
	return c;
}

/* Decrypt buf with the test DEK; returns the status. */
static KsStatus
try_open(KsAead *aead, const uint8_t *buf, size_t len, const char *context,
		 uint8_t *out)
{
	KsHeader	hdr;
	KsError		err;
	KsContext	c = make_context(context);
	KsStatus	st = KsParseHeader(buf, len, &hdr, &err);

	if (st != KS_OK)
		return st;
	return KsAeadOpen(aead, &hdr, &c, buf, len, out, &err);
}

static void
test_vectors(KsAead *aead)
{
	char		what[128];

	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
	{
		const Vector *v = &vectors[i];
		uint8_t		expected[256];
		uint8_t		out[256];
		uint8_t		pt[256];
		size_t		len = unhex(v->expected_hex, expected);
		KsHeader	hdr = {KS_FORMAT_VERSION, KS_ALG_AES256GCM, v->key_id, v->version, {0}};
		KsContext	c = make_context(v->context);
		KsError		err;

		for (int j = 0; j < KS_NONCE_LEN; j++)
			hdr.nonce[j] = (uint8_t) (0xA0 + j);
		snprintf(what, sizeof(what), "vector %s: seal gives the specified bytes", v->name);
		check(len == v->pt_len + KS_OVERHEAD &&
			  KsAeadSeal(aead, &hdr, &c, (const uint8_t *) v->pt, v->pt_len, out, &err) == KS_OK &&
			  memcmp(out, expected, len) == 0, what);
		snprintf(what, sizeof(what), "vector %s: open gives the plaintext", v->name);
		check(try_open(aead, expected, len, v->context, pt) == KS_OK &&
			  memcmp(pt, v->pt, v->pt_len) == 0, what);
		snprintf(what, sizeof(what), "vector %s: header fields parse", v->name);
		check(KsParseHeader(expected, len, &hdr, &err) == KS_OK &&
			  hdr.key_id == v->key_id && hdr.key_version == v->version, what);
	}
}

/*
 * One context seals and opens (kms/envelope.c): after a failed open, in the
 * middle of a run of opens, a seal still gives the specified bytes, and an
 * open after it still authenticates.
 */
static void
test_one_context(KsAead *aead)
{
	const Vector *v = &vectors[0];
	uint8_t		expected[256];
	uint8_t		bad[256];
	uint8_t		out[256];
	uint8_t		pt[256];
	size_t		len = unhex(v->expected_hex, expected);
	KsHeader	hdr = {KS_FORMAT_VERSION, KS_ALG_AES256GCM, v->key_id, v->version, {0}};
	KsContext	c = make_context(v->context);
	KsError		err;

	for (int j = 0; j < KS_NONCE_LEN; j++)
		hdr.nonce[j] = (uint8_t) (0xA0 + j);
	memcpy(bad, expected, len);
	bad[len - 1] ^= 1;
	check(try_open(aead, bad, len, v->context, pt) == KS_ERR_AUTH_FAILED &&
		  KsAeadSeal(aead, &hdr, &c, (const uint8_t *) v->pt, v->pt_len, out, &err) == KS_OK &&
		  memcmp(out, expected, len) == 0 &&
		  try_open(aead, expected, len, v->context, pt) == KS_OK &&
		  memcmp(pt, v->pt, v->pt_len) == 0 &&
		  KsAeadSeal(aead, &hdr, &c, (const uint8_t *) v->pt, v->pt_len, out, &err) == KS_OK &&
		  memcmp(out, expected, len) == 0,
		  "one context: failed open, seal, open, seal give the specified bytes");
}

static void
test_damage(KsAead *aead)
{
	uint8_t		good[256];
	uint8_t		buf[300];
	uint8_t		out[300];
	size_t		len = unhex(vectors[1].expected_hex, good);
	const char *ctx = vectors[1].context;
	int			bad = 0;

	/* every single-bit flip anywhere is refused */
	for (size_t i = 0; i < len; i++)
		for (int b = 0; b < 8; b++)
		{
			KsStatus	st;

			memcpy(buf, good, len);
			buf[i] ^= (uint8_t) (1 << b);
			st = try_open(aead, buf, len, ctx, out);
			if (i == 0 && st != KS_ERR_CT_VERSION)
				bad++;
			else if (i == 1 && st != KS_ERR_CT_ALGORITHM)
				bad++;
			else if (i > 1 && st != KS_ERR_AUTH_FAILED)
				bad++;
		}
	check(bad == 0, "every flipped bit (header, nonce, body, tag) is refused with the right status");

	/* every truncation is refused */
	bad = 0;
	for (size_t l = 0; l < len; l++)
	{
		KsStatus	st = try_open(aead, good, l, ctx, out);

		if (l < KS_OVERHEAD ? st != KS_ERR_CT_TRUNCATED : st != KS_ERR_AUTH_FAILED)
			bad++;
	}
	check(bad == 0, "every truncation is refused (short ones as truncated)");

	memcpy(buf, good, len);
	buf[len] = 0;
	check(try_open(aead, buf, len + 1, ctx, out) == KS_ERR_AUTH_FAILED, "a trailing byte is refused");
	check(try_open(aead, good, len, NULL, out) == KS_ERR_AUTH_FAILED, "missing context is refused");
	check(try_open(aead, good, len, "customer:43", out) == KS_ERR_AUTH_FAILED, "wrong context is refused");
	len = unhex(vectors[0].expected_hex, good);
	check(try_open(aead, good, len, "x", out) == KS_ERR_AUTH_FAILED, "unexpected context is refused");
	check(try_open(aead, good, len, "", out) == KS_ERR_AUTH_FAILED, "empty context differs from no context");

	/* a header from another key spliced onto this body */
	{
		uint8_t		other[256];

		unhex(vectors[3].expected_hex, other);
		memcpy(buf, good, len);
		memcpy(buf, other, 10);
		check(try_open(aead, buf, len, NULL, out) == KS_ERR_AUTH_FAILED, "spliced header is refused");
	}
	{
		KsHeader	hdr;
		KsError		err;
		uint8_t		v2[64] = {2, 1};
		uint8_t		a9[64] = {1, 9};

		check(KsParseHeader(good, 0, &hdr, &err) == KS_ERR_CT_TRUNCATED, "empty input is truncated");
		check(KsParseHeader(v2, sizeof(v2), &hdr, &err) == KS_ERR_CT_VERSION &&
			  strstr(err.message, "version 2") != NULL, "format version 2 is unsupported");
		check(KsParseHeader(a9, sizeof(a9), &hdr, &err) == KS_ERR_CT_ALGORITHM &&
			  strstr(err.message, "id 9") != NULL, "algorithm 9 is unsupported");
	}
}

static void
test_roundtrip(KsAead *aead)
{
	size_t		n = 1 << 20;
	uint8_t    *pt = malloc(n);
	uint8_t    *ct = malloc(n + KS_OVERHEAD);
	uint8_t    *back = malloc(n);
	KsHeader	hdr = {KS_FORMAT_VERSION, KS_ALG_AES256GCM, 5, 2, {0}};
	KsContext	c = make_context("row:1");
	KsError		err;

	for (size_t i = 0; i < n; i++)
		pt[i] = (uint8_t) (i * 7);
	check(KsNextNonce(hdr.nonce, &err) == KS_OK &&
		  KsAeadSeal(aead, &hdr, &c, pt, n, ct, &err) == KS_OK &&
		  try_open(aead, ct, n + KS_OVERHEAD, "row:1", back) == KS_OK &&
		  memcmp(pt, back, n) == 0, "1 MB value round-trips");
	free(pt);
	free(ct);
	free(back);
}

static int
cmp_nonce(const void *a, const void *b)
{
	return memcmp(a, b, KS_NONCE_LEN);
}

static void
test_nonces(void)
{
	enum
	{
	N = 20000};
	uint8_t    *all = malloc((size_t) N * KS_NONCE_LEN);
	KsError		err;
	int			dup = 0;

	for (int i = 0; i < N; i++)
		KsNextNonce(all + (size_t) i * KS_NONCE_LEN, &err);
	qsort(all, N, KS_NONCE_LEN, cmp_nonce);
	for (int i = 1; i < N; i++)
		if (memcmp(all + (size_t) (i - 1) * KS_NONCE_LEN, all + (size_t) i * KS_NONCE_LEN, KS_NONCE_LEN) == 0)
			dup++;
	check(dup == 0, "20000 nonces are all distinct");
	free(all);

	/* a forked child must not hand out the nonces its parent will use */
	{
		uint8_t		mine[KS_NONCE_LEN];
		uint8_t		theirs[KS_NONCE_LEN] = {0};
		int			fds[2];
		pid_t		pid;

		KsNextNonce(mine, &err);	/* the pool now holds unused nonces */
		if (pipe(fds) != 0 || (pid = fork()) < 0)
		{
			check(0, "fork for the nonce test");
			return;
		}
		if (pid == 0)
		{
			KsNextNonce(theirs, &err);
			if (write(fds[1], theirs, KS_NONCE_LEN) != KS_NONCE_LEN)
				_exit(1);
			_exit(0);
		}
		KsNextNonce(mine, &err);
		check(read(fds[0], theirs, KS_NONCE_LEN) == KS_NONCE_LEN &&
			  memcmp(mine, theirs, KS_NONCE_LEN) != 0,
			  "a forked child draws fresh nonces, not its parent's next ones");
		waitpid(pid, NULL, 0);
		close(fds[0]);
		close(fds[1]);
	}
}

static KsStatus
parse(const char *text, KsMasterKeySet *set, KsError *err)
{
	return KsLocalParse(text, strlen(text), set, err);
}

static void
test_keyfile_parse(void)
{
	KsMasterKeySet *set = malloc(sizeof(KsMasterKeySet));
	KsError		err;
	const char *k = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
	char		text[1024];

	snprintf(text, sizeof(text), "# comment\n\n  1:%s  \r\n3:%s\n#2:zz\n", k, k);
	check(parse(text, set, &err) == KS_OK && set->count == 2 && set->current == 3 &&
		  set->keys[0].key[31] == 0x1f, "comments, blanks, CRLF; highest version is current");
	snprintf(text, sizeof(text), "1:%s", k);
	check(parse(text, set, &err) == KS_OK && set->count == 1, "no trailing newline is fine");

	check(parse("", set, &err) == KS_ERR_KEYFILE_MALFORMED, "empty file is malformed");
	check(parse("# nothing\n", set, &err) == KS_ERR_KEYFILE_MALFORMED &&
		  strstr(err.message, "no keys"), "comments only: no keys");
	snprintf(text, sizeof(text), "1%s\n", k);
	check(parse(text, set, &err) == KS_ERR_KEYFILE_MALFORMED, "missing colon is malformed");
	snprintf(text, sizeof(text), ":%s\n", k);
	check(parse(text, set, &err) == KS_ERR_KEYFILE_MALFORMED, "missing version is malformed");
	snprintf(text, sizeof(text), "0:%s\n", k);
	check(parse(text, set, &err) == KS_ERR_KEYFILE_MALFORMED, "version 0 is malformed");
	snprintf(text, sizeof(text), "99999999999:%s\n", k);
	check(parse(text, set, &err) == KS_ERR_KEYFILE_MALFORMED, "huge version is malformed");
	check(parse("1:0011\n", set, &err) == KS_ERR_KEYFILE_MALFORMED &&
		  strstr(err.message, "expected 64") != NULL, "short key: wrong length");
	snprintf(text, sizeof(text), "1:%s00\n", k);
	check(parse(text, set, &err) == KS_ERR_KEYFILE_MALFORMED, "long key: wrong length");
	snprintf(text, sizeof(text), "1:%.63sg\n", k);
	check(parse(text, set, &err) == KS_ERR_KEYFILE_MALFORMED &&
		  strstr(err.message, "line 1") != NULL, "non-hex key names the line");
	snprintf(text, sizeof(text), "1:%s\n\n1:%s\n", k, k);
	check(parse(text, set, &err) == KS_ERR_KEYFILE_MALFORMED &&
		  strstr(err.message, "line 3") != NULL, "duplicate version is malformed");
	snprintf(text, sizeof(text), "1:%s\n", k);
	check(strstr(err.message, "0001020304") == NULL, "messages never echo key material");
	KsWipe(set, sizeof(*set));
	free(set);
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
	FILE	   *f;

	unlink(path);
	f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	chmod(path, mode);
}

static void
test_keyfile_load_and_wrap(const char *dir)
{
	char		path[512];
	char		text[256];
	KsMasterKeySet *set = malloc(sizeof(KsMasterKeySet));
	KsError		err;
	uint8_t		blob[KS_WRAPPED_MAX];
	size_t		blob_len = unhex(WRAP_VECTOR, blob);
	uint8_t		aad[256];
	size_t		aad_len = KsDekBindingAad("demo", 1, aad, sizeof(aad));
	uint8_t		dek[32];
	KsKmsInstance inst = {.provider = &KsLocalProvider, .name = "local", .noptions = 1,
	.options = {{"master_key_file", path}}};
	const KsKmsInstance *cfg = &inst;
	const KsKmsProvider *local = KsKmsLookup("local");
	char		kek_version[KS_KEK_VERSION_LEN] = "";
	int			needs = -1;

	check(local == &KsLocalProvider && KsKmsLookup("nope") == NULL, "provider registry finds local, and nothing by a made-up name");
	{
		KsKmsInstance bad = {.provider = &KsLocalProvider, .name = "x", .noptions = 1,
		.options = {{"master_key_file", ""}}};

		check(KsKmsCheckOptions(&bad, &err) == KS_ERR_INVALID_ARGUMENT && strstr(err.message, "empty") != NULL,
			  "local: an empty master_key_file is refused");
		bad.options[0].name = "url";
		check(KsKmsCheckOptions(&bad, &err) == KS_ERR_INVALID_ARGUMENT &&
			  strstr(err.message, "unknown option \"url\" for KMS type local") != NULL,
			  "local: an unknown option is refused");
		bad.options[0].name = "master_key_file";
		bad.options[0].value = "/a.key";
		bad.options[1].name = "master_key_file";
		bad.options[1].value = "/b.key";
		bad.noptions = 2;
		check(KsKmsCheckOptions(&bad, &err) == KS_ERR_INVALID_ARGUMENT && strstr(err.message, "twice") != NULL,
			  "an option given twice is refused");
		check(local->check_key(&bad, "transit-key", &err) == KS_ERR_INVALID_ARGUMENT &&
			  local->check_key(&bad, NULL, &err) == KS_OK, "local: no kms_key");
	}

	snprintf(path, sizeof(path), "%s/missing.key", dir);
	check(KsLocalLoad(path, set, &err) == KS_ERR_KEYFILE_MISSING, "missing file");
	check(KsLocalLoad("", set, &err) == KS_ERR_KEYFILE_MISSING, "unset path");

	snprintf(path, sizeof(path), "%s", dir);
	check(KsLocalLoad(path, set, &err) == KS_ERR_KEYFILE_UNREADABLE, "directory is not a key file");

	snprintf(text, sizeof(text), "3:%s\n",
			 "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f");
	snprintf(path, sizeof(path), "%s/loose.key", dir);
	write_file(path, text, 0640);
	check(KsLocalLoad(path, set, &err) == KS_ERR_KEYFILE_PERMISSIONS &&
		  strstr(err.message, "0640") != NULL, "group-readable file is refused");

	snprintf(path, sizeof(path), "%s/unreadable.key", dir);
	write_file(path, text, 0000);
	if (geteuid() == 0)
	{
		tests_run++;
		printf("ok %d - # SKIP unreadable file: root reads anything (the pgTAP suite checks it as the server user)\n", tests_run);
	}
	else
		check(KsLocalLoad(path, set, &err) == KS_ERR_KEYFILE_UNREADABLE, "unreadable file");

	snprintf(path, sizeof(path), "%s/good.key", dir);
	write_file(path, text, 0600);
	check(KsLocalLoad(path, set, &err) == KS_OK && set->current == 3, "0600 file loads");
	{
		/* the caller's buffer: filled on success, left wiped on every failure */
		static const KsMasterKeySet zero;
		char		missing[1100];

		check(KsLocalLoad(path, set, &err) == KS_OK && set->count == 1 && set->keys[0].key[0] == 0x40,
			  "the master keys are loaded into the caller's buffer");
		snprintf(missing, sizeof(missing), "%s/missing.key", dir);
		check(KsLocalLoad(missing, set, &err) == KS_ERR_KEYFILE_MISSING && memcmp(set, &zero, sizeof(zero)) == 0,
			  "a failed load leaves the caller's buffer wiped");
		snprintf(missing, sizeof(missing), "%s/loose.key", dir);
		memset(set, 0xAA, sizeof(*set));
		check(KsLocalLoad(missing, set, &err) == KS_ERR_KEYFILE_PERMISSIONS && memcmp(set, &zero, sizeof(zero)) == 0,
			  "a refused key file leaves the caller's buffer wiped");
	}
	KsWipe(set, sizeof(*set));
	free(set);

	check(local->unwrap(cfg, NULL, blob, blob_len, aad, aad_len, dek, 32, &err) == KS_OK &&
		  memcmp(dek, DEK, 32) == 0, "wrap vector unwraps to the DEK");
	check(KsLocalWrappedKekVersion(blob, blob_len) == 3, "wrap records master key version 3");
	{
		uint8_t		aad2[256];
		size_t		aad2_len = KsDekBindingAad("demo", 2, aad2, sizeof(aad2));

		check(local->unwrap(cfg, NULL, blob, blob_len, aad2, aad2_len, dek, 32, &err) == KS_ERR_UNWRAP_FAILED,
			  "wrapped DEK does not unwrap as another version");
		aad2_len = KsDekBindingAad("demo2", 1, aad2, sizeof(aad2));
		check(local->unwrap(cfg, NULL, blob, blob_len, aad2, aad2_len, dek, 32, &err) == KS_ERR_UNWRAP_FAILED,
			  "wrapped DEK does not unwrap as another key");
	}
	check(local->unwrap(cfg, NULL, blob, blob_len - 1, aad, aad_len, dek, 32, &err) == KS_ERR_WRAP_MALFORMED,
		  "short wrapped DEK is malformed");
	{
		uint8_t		w[KS_WRAPPED_MAX];
		size_t		wl = 0;

		check(local->wrap(cfg, NULL, DEK, 32, aad, aad_len, w, &wl, kek_version, &err) == KS_OK &&
			  wl == KS_LOCAL_WRAPPED_LEN && strcmp(kek_version, "3") == 0 &&
			  local->unwrap(cfg, NULL, w, wl, aad, aad_len, dek, 32, &err) == KS_OK &&
			  memcmp(dek, DEK, 32) == 0, "wrap then unwrap round-trips");
	}
	/* rewrap moves a DEK to the newest master key in one step */
	snprintf(text, sizeof(text), "3:%s\n4:%s\n",
			 "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f",
			 "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f");
	write_file(path, text, 0600);
	{
		uint8_t		w[KS_WRAPPED_MAX];
		size_t		wl = 0;

		check(local->rewrap(cfg, NULL, blob, blob_len, aad, aad_len, w, &wl, kek_version, &err) == KS_OK &&
			  strcmp(kek_version, "4") == 0 && KsLocalWrappedKekVersion(w, wl) == 4 &&
			  local->unwrap(cfg, NULL, w, wl, aad, aad_len, dek, 32, &err) == KS_OK &&
			  memcmp(dek, DEK, 32) == 0, "rewrap moves the wrap vector to master key 4, same DEK");
		check(local->rewrap(cfg, NULL, blob, blob_len - 1, aad, aad_len, w, &wl, kek_version, &err) == KS_ERR_WRAP_MALFORMED,
			  "rewrap refuses a malformed blob");
		check(local->needs_rewrap(cfg, NULL, "3", &needs, &err) == KS_OK && needs == 1 &&
			  local->needs_rewrap(cfg, NULL, "4", &needs, &err) == KS_OK && needs == 0,
			  "needs_rewrap: yes under master key 3, no under the newest, 4");
		aad[0] ^= 1;
		check(local->rewrap(cfg, NULL, blob, blob_len, aad, aad_len, w, &wl, kek_version, &err) == KS_ERR_UNWRAP_FAILED,
			  "rewrap refuses a blob bound to another key");
		aad[0] ^= 1;
	}
	/* the file loses version 3 */
	snprintf(text, sizeof(text), "4:%s\n",
			 "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f");
	write_file(path, text, 0600);
	check(local->unwrap(cfg, NULL, blob, blob_len, aad, aad_len, dek, 32, &err) == KS_ERR_KEK_VERSION_UNKNOWN &&
		  strstr(err.message, "version 3") != NULL, "missing master key version is reported");
	{
		uint8_t		w[KS_WRAPPED_MAX];
		size_t		wl = 0;

		check(local->rewrap(cfg, NULL, blob, blob_len, aad, aad_len, w, &wl, kek_version, &err) == KS_ERR_KEK_VERSION_UNKNOWN,
			  "rewrap reports a missing master key version too");
	}
	/* a different key under the same version */
	snprintf(text, sizeof(text), "3:%s\n",
			 "505152535455565758595a5b5c5d5e5f404142434445464748494a4b4c4d4e4f");
	write_file(path, text, 0600);
	check(local->unwrap(cfg, NULL, blob, blob_len, aad, aad_len, dek, 32, &err) == KS_ERR_UNWRAP_FAILED,
		  "wrong master key fails to unwrap");
}

/*
 * The kept master key set (kms/local.c): with ks_local_keep_after_ms at 0 a
 * file is kept at once, so each change below is made under a kept set and
 * must be noticed by the stat comparison; at the default, a file younger
 * than 2 s is read on every use, so an in-place rewrite within a clock tick
 * is never missed.
 */
static void
test_keyfile_kept(const char *dir)
{
	char		path[512];
	char		other[512];
	char		moved[600];
	const char *right = "3:404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f\n";
	const char *wrong = "3:505152535455565758595a5b5c5d5e5f404142434445464748494a4b4c4d4e4f\n";
	KsKmsInstance inst = {.provider = &KsLocalProvider, .name = "local", .noptions = 1,
	.options = {{"master_key_file", path}}};
	KsKmsInstance inst_other = {.provider = &KsLocalProvider, .name = "other", .noptions = 1,
	.options = {{"master_key_file", other}}};
	uint8_t		blob[KS_WRAPPED_MAX];
	size_t		blob_len = unhex(WRAP_VECTOR, blob);
	uint8_t		aad[256];
	size_t		aad_len = KsDekBindingAad("demo", 1, aad, sizeof(aad));
	uint8_t		dek[32];
	KsError		err;
	FILE	   *f;

	snprintf(path, sizeof(path), "%s/kept.key", dir);
	snprintf(other, sizeof(other), "%s/kept-other.key", dir);
	snprintf(moved, sizeof(moved), "%s/kept-new.key", dir);
	write_file(path, right, 0600);
	write_file(other, wrong, 0600);
	ks_local_keep_after_ms = 0;
	check(KsLocalProvider.unwrap(&inst, NULL, blob, blob_len, aad, aad_len, dek, 32, &err) == KS_OK &&
		  memcmp(dek, DEK, 32) == 0, "kept set: the right file unwraps (and is kept)");
	check(KsLocalProvider.unwrap(&inst_other, NULL, blob, blob_len, aad, aad_len, dek, 32, &err) == KS_ERR_UNWRAP_FAILED &&
		  KsLocalProvider.unwrap(&inst, NULL, blob, blob_len, aad, aad_len, dek, 32, &err) == KS_OK,
		  "kept set: another path is another file, and back");
	chmod(path, 0640);
	check(KsLocalProvider.unwrap(&inst, NULL, blob, blob_len, aad, aad_len, dek, 32, &err) == KS_ERR_KEYFILE_PERMISSIONS,
		  "kept set: a chmod 0640 is noticed and refused");
	chmod(path, 0600);
	check(KsLocalProvider.unwrap(&inst, NULL, blob, blob_len, aad, aad_len, dek, 32, &err) == KS_OK,
		  "kept set: mode 0600 again unwraps");
	/* a new inode while the old one still exists, then renamed over it */
	write_file(moved, wrong, 0600);
	check(rename(moved, path) == 0 &&
		  KsLocalProvider.unwrap(&inst, NULL, blob, blob_len, aad, aad_len, dek, 32, &err) == KS_ERR_UNWRAP_FAILED,
		  "kept set: a file replaced by rename is read again");
	unlink(path);
	check(KsLocalProvider.unwrap(&inst, NULL, blob, blob_len, aad, aad_len, dek, 32, &err) == KS_ERR_KEYFILE_MISSING,
		  "kept set: a deleted file is missing");
	KsLocalForget();

	/* the default: a young file is not kept; rewritten in place at once */
	ks_local_keep_after_ms = 2000;
	write_file(path, right, 0600);
	check(KsLocalProvider.unwrap(&inst, NULL, blob, blob_len, aad, aad_len, dek, 32, &err) == KS_OK,
		  "young file: unwraps");
	f = fopen(path, "r+");
	if (f != NULL)
	{
		fputs(wrong, f);
		fclose(f);
	}
	check(f != NULL &&
		  KsLocalProvider.unwrap(&inst, NULL, blob, blob_len, aad, aad_len, dek, 32, &err) == KS_ERR_UNWRAP_FAILED,
		  "young file: rewritten in place at the same size, read again");
	KsLocalForget();
}

/*
 * KEK check values (kms/local.c): HMAC-SHA256 of the label under the master
 * key, first 16 bytes, checked against Python's hmac (the expected values
 * were computed with it, not with this code); by version, and from a blob,
 * which must open under the key whose value is returned.
 */
static void
test_kek_check(const char *dir)
{
	char		path[512];
	const char *text = "1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"
		"2:202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\n";
	const char *other = "2:404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f\n";
	static const uint8_t v1[16] = {0x00, 0x3c, 0x5c, 0xc0, 0xd6, 0xac, 0x32, 0x50,
	0x95, 0x2d, 0x5e, 0x87, 0x0b, 0x3a, 0x52, 0x50};
	static const uint8_t v2[16] = {0x96, 0x9d, 0xa2, 0xc9, 0x0a, 0x12, 0xc2, 0x96,
	0xfd, 0x6e, 0x08, 0xa5, 0x7d, 0x47, 0x4d, 0x2d};
	KsKmsInstance inst = {.provider = &KsLocalProvider, .name = "local", .noptions = 1,
	.options = {{"master_key_file", path}}};
	uint8_t		check_value[16];
	uint8_t		dek[32] = {7};
	uint8_t		aad[64];
	size_t		aad_len = KsDekBindingAad("k", 1, aad, sizeof(aad));
	uint8_t		blob[KS_WRAPPED_MAX];
	size_t		blob_len = 0;
	char		version[KS_KEK_VERSION_LEN] = "1";
	char		wrapped_under[KS_KEK_VERSION_LEN] = "";
	uint8_t		id1[16];
	uint8_t		id2[16];
	KsError		err;

	snprintf(path, sizeof(path), "%s/check.key", dir);
	write_file(path, text, 0600);
	KsLocalForget();
	check(KsLocalProvider.kek_check(&inst, NULL, version, NULL, 0, NULL, 0, check_value, NULL, &err) == KS_OK &&
		  memcmp(check_value, v1, 16) == 0, "kek check: version 1's value is Python's HMAC-SHA256 of the label");
	strcpy(version, "2");
	check(KsLocalProvider.kek_check(&inst, NULL, version, NULL, 0, NULL, 0, check_value, NULL, &err) == KS_OK &&
		  memcmp(check_value, v2, 16) == 0, "kek check: version 2's value too (each key its own)");
	strcpy(version, "1");
	check(KsLocalProvider.kek_check(&inst, NULL, version, NULL, 0, NULL, 0, check_value, id1, &err) == KS_OK &&
		  (strcpy(version, "2"), KsLocalProvider.kek_check(&inst, NULL, version, NULL, 0, NULL, 0, check_value, id2,
														   &err)) == KS_OK &&
		  memcmp(id1, id2, 16) == 0, "kek check: the key set's identity is the same for two calls on one file");
	strcpy(version, "9");
	check(KsLocalProvider.kek_check(&inst, NULL, version, NULL, 0, NULL, 0, check_value, NULL, &err) ==
		  KS_ERR_KEK_VERSION_UNKNOWN, "kek check: a version not in the file is unknown");
	strcpy(version, "2x");
	check(KsLocalProvider.kek_check(&inst, NULL, version, NULL, 0, NULL, 0, check_value, NULL, &err) ==
		  KS_ERR_KEK_VERSION_UNKNOWN, "kek check: a version that is no number is unknown");
	check(KsLocalProvider.wrap(&inst, NULL, dek, 32, aad, aad_len, blob, &blob_len, wrapped_under, &err) == KS_OK &&
		  KsLocalProvider.kek_check(&inst, NULL, version, blob, blob_len, aad, aad_len, check_value, NULL, &err) == KS_OK &&
		  strcmp(version, "2") == 0 && memcmp(check_value, v2, 16) == 0,
		  "kek check of a blob: the version that wrapped it (the newest) and its value");
	/* the file swapped for another key of the same version after the wrap */
	write_file(path, other, 0600);
	KsLocalForget();
	memset(check_value, 0, sizeof(check_value));
	version[0] = '\0';
	check(KsLocalProvider.kek_check(&inst, NULL, version, blob, blob_len, aad, aad_len, check_value, id2, &err) ==
		  KS_ERR_UNWRAP_FAILED && strcmp(version, "2") == 0 && memcmp(check_value, v2, 16) != 0 &&
		  memcmp(id1, id2, 16) != 0,
		  "kek check of a blob under a swapped file: refused (does not open), with the file's version and value for the hint, and another set identity");
	KsLocalForget();
}

/* Retiring a master key version: the file without it, atomically, and the refusals. */
static void
test_keyfile_retire(const char *dir)
{
	char		path[512];
	const char *text = "# keys\n1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"
		"  2:202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f  \n"
		"3:404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f\n";
	KsMasterKeySet *set = malloc(sizeof(KsMasterKeySet));
	KsError		err;
	struct stat st;
	uint32_t	added = 0;

	snprintf(path, sizeof(path), "%s/retire.key", dir);
	write_file(path, text, 0600);
	check(KsLocalRetireKey(path, 2, &err) == KS_OK && KsLocalLoad(path, set, &err) == KS_OK &&
		  set->count == 2 && set->keys[0].version == 1 && set->keys[1].version == 3 && set->current == 3 &&
		  set->keys[1].key[0] == 0x40,
		  "retire: version 2 leaves the file, versions 1 and 3 stay intact");
	check(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "retire: the new file has mode 0600");
	check(KsLocalRetireKey(path, 3, &err) == KS_ERR_INVALID_ARGUMENT && KsLocalLoad(path, set, &err) == KS_OK &&
		  set->count == 2, "retire: the newest version is refused, the file unchanged");
	check(KsLocalRetireKey(path, 2, &err) == KS_ERR_KEK_VERSION_UNKNOWN, "retire: a version not in the file is unknown");
	check(KsLocalAppendKey(path, &added, &err) == KS_OK && added == 4 && KsLocalRetireKey(path, 1, &err) == KS_OK &&
		  KsLocalLoad(path, set, &err) == KS_OK && set->count == 2 && set->keys[0].version == 3 &&
		  set->keys[1].version == 4,
		  "retire after append: versions 3 and 4 remain, the next append would be 5");
	{
		char		lnk[600];
		char		hard[600];
		struct stat lst;

		snprintf(lnk, sizeof(lnk), "%s/retire-link.key", dir);
		snprintf(hard, sizeof(hard), "%s/retire-hard.key", dir);
		unlink(lnk);
		unlink(hard);
		check(KsLocalAppendKey(path, &added, &err) == KS_OK && symlink(path, lnk) == 0 &&
			  KsLocalRetireKey(lnk, 3, &err) == KS_OK && lstat(lnk, &lst) == 0 && S_ISLNK(lst.st_mode) &&
			  KsLocalLoad(path, set, &err) == KS_OK && set->count == 2 && set->keys[0].version == 4,
			  "retire through a symbolic link: the file it names loses the version, the link stays a link");
		check(link(path, hard) == 0 && KsLocalRetireKey(path, 4, &err) == KS_ERR_INVALID_ARGUMENT &&
			  KsLocalLoad(path, set, &err) == KS_OK && set->count == 2,
			  "retire of a file with another hard link is refused: the version would stay there");
		unlink(lnk);
		unlink(hard);
	}
	chmod(path, 0644);
	check(KsLocalRetireKey(path, 4, &err) == KS_ERR_KEYFILE_PERMISSIONS, "retire: a file others can read is refused");
	KsWipe(set, sizeof(KsMasterKeySet));
	free(set);
	KsLocalForget();
}

/* Tokens: the asked length, only alphabet characters, every one used. */
static void
test_random_token(void)
{
	KsError		err;
	char		tok[4001];
	char		other[41];
	int			seen[256] = {0},
				outside = 0,
				unused = 0;
	const char *alpha = "abcdefghijklmnopqrstuvwxyz0123456789";

	check(KsRandomToken(tok, 4000, alpha, &err) == KS_OK && strlen(tok) == 4000,
		  "a 4000-character token");
	for (int i = 0; i < 4000; i++)
	{
		if (strchr(alpha, tok[i]) == NULL)
			outside++;
		seen[(unsigned char) tok[i]]++;
	}
	for (const char *a = alpha; *a; a++)
		if (seen[(unsigned char) *a] == 0)
			unused++;
	check(outside == 0 && unused == 0, "only alphabet characters, and all 36 of them");
	KsRandomToken(other, 40, alpha, &err);
	check(strncmp(tok, other, 40) != 0, "two tokens differ");
	check(KsRandomToken(other, 10, "a", &err) == KS_ERR_INVALID_ARGUMENT,
		  "a one-character alphabet is refused");
}


/* kms/template_options.c: the role template options parser */
static void
test_template_options(void)
{
	KsTemplateOptions o;
	KsError		err;
	const char *all = "{\"username_prefix\": \"app_\", \"max_leases\": 3, \"connection_limit\": -1,"
		" \"owner_role\": \"Owner Role\", \"issuers\": [\"a\", \"b\"], \"allow_role_attributes\": true}";
	char		big[200];

#define OPT(text) KsTemplateOptionsParse(text, strlen(text), &o, &err)
	check(OPT(all) == KS_OK && strcmp(o.prefix, "app_") == 0 && o.max_leases == 3 &&
		  o.connection_limit == -1 && o.has_owner && strcmp(o.owner_role, "Owner Role") == 0 &&
		  o.n_issuers == 2 && strcmp(o.issuers[1], "b") == 0 && o.allow_role_attributes,
		  "options: every option parses");
	check(OPT("{}") == KS_OK && o.prefix[0] == '\0' && o.max_leases == 0 && o.connection_limit == -1 &&
		  !o.has_owner && o.n_issuers == 0 && !o.allow_role_attributes, "options: defaults");
	check(OPT("[]") == KS_ERR_INVALID_ARGUMENT && strcmp(err.message, "template options must be a JSON object") == 0,
		  "options: not an object");
	check(OPT("{\"username_prefix\": \"pg_x\"}") == KS_ERR_INVALID_NAME && o.detail != NULL,
		  "options: a pg_ prefix is an invalid name, with a detail");
	check(OPT("{\"max_leases\": 1.5}") == KS_ERR_INVALID_ARGUMENT && strcmp(err.message, "invalid max_leases") == 0,
		  "options: max_leases must be whole");
	check(OPT("{\"max_leases\": 1e400}") == KS_ERR_INVALID_ARGUMENT &&
		  strcmp(err.message, "a number in the template options is out of range") == 0,
		  "options: a number jansson cannot hold is out of range");
	check(OPT("{\"connection_limit\": -2}") == KS_ERR_INVALID_ARGUMENT, "options: connection_limit below -1");
	check(OPT("{\"owner_role\": \"a\\u0000b\"}") == KS_ERR_INVALID_ARGUMENT,
		  "options: a role name with an embedded NUL");
	snprintf(big, sizeof(big), "{\"issuers\": [\"%064d\"]}", 0);
	check(OPT(big) == KS_ERR_INVALID_ARGUMENT, "options: a 64-byte role name is too long");
	check(OPT("{\"colour\": 1}") == KS_ERR_INVALID_ARGUMENT && o.hint != NULL &&
		  strcmp(err.message, "unknown template option \"colour\"") == 0, "options: unknown option, with a hint");
	check(OPT("{\"allow_role_attributes\": \"yes\"}") == KS_ERR_INVALID_ARGUMENT, "options: the opt-in is a boolean");
	{
		char		many[1024] = "{\"issuers\": [";

		for (int i = 0; i <= KS_ISSUERS_MAX; i++)
			strcat(many, i ? ", \"r\"" : "\"r\"");
		strcat(many, "]}");
		check(OPT(many) == KS_ERR_INVALID_ARGUMENT && strcmp(err.message, "too many issuers") == 0 && o.detail != NULL,
			  "options: 65 issuers are too many, with a detail");
	}
#undef OPT
}

static void
test_secret_options(void)
{
	KsSecretOptions o;
	KsError		err;
	KsStrategy	st;
	char		user[KS_ROLE_NAME_MAX];
	char		pw[KS_CREDENTIAL_PASSWORD_MAX + 1];
	char		json[KS_CREDENTIAL_JSON_MAX + 1];
	size_t		json_len = 0;

#define SOPT(s, text) KsSecretOptionsParse(s, text, strlen(text), &o, &err)
	check(KsStrategyFromName("postgres_role_pair", &st, &err) == KS_OK && st == KS_STRATEGY_ROLE_PAIR &&
		  KsStrategyFromName("vault", &st, &err) == KS_ERR_INVALID_ARGUMENT, "secret: strategy names");
	check(SOPT(KS_STRATEGY_NONE, "{}") == KS_OK && o.keep_versions == 5 && o.password_length == 32,
		  "secret: defaults");
	check(SOPT(KS_STRATEGY_ROLE, "{\"role\": \"App User\", \"password_length\": 40, \"keep_versions\": 2}") == KS_OK &&
		  strcmp(o.role, "App User") == 0 && o.password_length == 40 && o.keep_versions == 2,
		  "secret: postgres_role options parse");
	check(SOPT(KS_STRATEGY_ROLE, "{}") == KS_ERR_INVALID_ARGUMENT && o.hint != NULL &&
		  strcmp(err.message, "strategy postgres_role needs option role") == 0, "secret: role is required");
	check(SOPT(KS_STRATEGY_NONE, "{\"role\": \"x\"}") == KS_ERR_INVALID_ARGUMENT &&
		  strcmp(err.message, "unknown option \"role\" for strategy none") == 0,
		  "secret: an option of another strategy is unknown");
	check(SOPT(KS_STRATEGY_ROLE, "{\"role\": \"x\", \"password_length\": 15}") == KS_ERR_INVALID_ARGUMENT &&
		  SOPT(KS_STRATEGY_ROLE, "{\"role\": \"x\", \"password_length\": 129}") == KS_ERR_INVALID_ARGUMENT &&
		  SOPT(KS_STRATEGY_ROLE, "{\"role\": \"x\", \"password_length\": 20.5}") == KS_ERR_INVALID_ARGUMENT,
		  "secret: password_length is a whole number from 16 to 128");
	check(SOPT(KS_STRATEGY_NONE, "{\"keep_versions\": 0}") == KS_ERR_INVALID_ARGUMENT &&
		  SOPT(KS_STRATEGY_NONE, "{\"keep_versions\": 101}") == KS_ERR_INVALID_ARGUMENT,
		  "secret: keep_versions from 1 to 100");
	check(SOPT(KS_STRATEGY_ROLE_PAIR, "{\"roles\": [\"a\", \"b\"], \"owner_role\": \"o\"}") == KS_OK &&
		  strcmp(o.roles[1], "b") == 0 && strcmp(o.owner_role, "o") == 0, "secret: pair options parse");
	check(SOPT(KS_STRATEGY_ROLE_PAIR, "{\"roles\": [\"a\"], \"owner_role\": \"o\"}") == KS_ERR_INVALID_ARGUMENT &&
		  SOPT(KS_STRATEGY_ROLE_PAIR, "{\"roles\": [\"a\", \"b\", \"c\"], \"owner_role\": \"o\"}") == KS_ERR_INVALID_ARGUMENT,
		  "secret: a pair is exactly two roles");
	check(SOPT(KS_STRATEGY_ROLE_PAIR, "{\"roles\": [\"a\", \"a\"], \"owner_role\": \"o\"}") == KS_ERR_INVALID_ARGUMENT &&
		  SOPT(KS_STRATEGY_ROLE_PAIR, "{\"roles\": [\"a\", \"b\"], \"owner_role\": \"a\"}") == KS_ERR_INVALID_ARGUMENT,
		  "secret: two different roles, and a third as owner");
	check(SOPT(KS_STRATEGY_ROLE_PAIR, "{\"roles\": [\"a\", \"b\"]}") == KS_ERR_INVALID_ARGUMENT,
		  "secret: a pair needs its owner role");
	check(SOPT(KS_STRATEGY_ROLE, "{\"role\": \"a\\u0000b\"}") == KS_ERR_INVALID_ARGUMENT &&
		  SOPT(KS_STRATEGY_NONE, "not json") == KS_ERR_INVALID_ARGUMENT, "secret: NUL in a name, and bad JSON");
	check(SOPT(KS_STRATEGY_SQL, "{\"function\": \"app.rotate_key\", \"password_length\": 64}") == KS_OK &&
		  strcmp(o.function, "app.rotate_key") == 0 && o.password_length == 64, "secret: sql options parse");
	check(SOPT(KS_STRATEGY_SQL, "{\"function\": \"rotate_key\"}") == KS_ERR_INVALID_ARGUMENT &&
		  SOPT(KS_STRATEGY_SQL, "{\"function\": \"app.\"}") == KS_ERR_INVALID_ARGUMENT &&
		  SOPT(KS_STRATEGY_SQL, "{}") == KS_ERR_INVALID_ARGUMENT,
		  "secret: the sql function is schema-qualified and required");
	check(SOPT(KS_STRATEGY_REMOTE, "{\"conninfo\": \"host=db2\", \"role\": \"app\", \"admin_secret\": \"db2/admin\"}") == KS_OK &&
		  strcmp(o.conninfo, "host=db2") == 0 && strcmp(o.admin_secret, "db2/admin") == 0 &&
		  SOPT(KS_STRATEGY_REMOTE, "{\"conninfo\": \"host=db2\", \"role\": \"app\"}") == KS_ERR_INVALID_ARGUMENT,
		  "secret: postgres_remote options parse, all three required");
#undef SOPT
	check(KsCredentialBuild("app\"x", "p\\w\n\x01" "d", json, sizeof(json), &json_len, &err) == KS_OK &&
		  strcmp(json, "{\"username\": \"app\\\"x\", \"password\": \"p\\\\w\\u000a\\u0001d\"}") == 0 &&
		  json_len == strlen(json),
		  "credential: built with quotes, backslashes and control characters escaped");
	check(KsCredentialParse(json, strlen(json), user, pw, &err) == KS_OK &&
		  strcmp(user, "app\"x") == 0 && strcmp(pw, "p\\w\n\x01" "d") == 0, "credential: what is built parses back");
	{
		/* the caller's buffer: exactly json_len + 1 bytes suffice, one less is refused untouched */
		char		small[64];
		size_t		len = 0;
		size_t		exact;

		(void) KsCredentialBuild("app", "pw", json, sizeof(json), &exact, &err);
		memset(small, '#', sizeof(small));
		check(KsCredentialBuild("app", "pw", small, exact + 1, &len, &err) == KS_OK && len == exact &&
			  strcmp(small, json) == 0 && small[exact + 1] == '#',
			  "credential: built into a caller's buffer of exactly its size, nothing written past it");
		memset(small, '#', sizeof(small));
		check(KsCredentialBuild("app", "pw", small, exact, &len, &err) == KS_ERR_INVALID_ARGUMENT && len == 0 &&
			  small[0] == '#' && small[exact] == '#',
			  "credential: a buffer one byte short is refused, and not written");
	}
	{
		/* the largest credential KsCredentialParse accepts fits KS_CREDENTIAL_JSON_MAX */
		char		name[KS_ROLE_NAME_MAX];
		char		big[KS_CREDENTIAL_PASSWORD_MAX + 1];
		char		user2[KS_ROLE_NAME_MAX];

		memset(name, '"', sizeof(name) - 1);
		name[sizeof(name) - 1] = '\0';
		memset(big, '\x01', KS_CREDENTIAL_PASSWORD_MAX);
		big[KS_CREDENTIAL_PASSWORD_MAX] = '\0';
		check(KsCredentialBuild(name, big, json, sizeof(json), &json_len, &err) == KS_OK &&
			  json_len <= KS_CREDENTIAL_JSON_MAX &&
			  KsCredentialParse(json, json_len, user2, pw, &err) == KS_OK &&
			  strcmp(user2, name) == 0 && strcmp(pw, big) == 0,
			  "credential: the worst case (a 1024-byte password of control characters) fits KS_CREDENTIAL_JSON_MAX and parses back");
	}
	check(KsCredentialParse("{\"username\": \"a\"}", 16, user, pw, &err) == KS_ERR_INVALID_ARGUMENT &&
		  KsCredentialParse("{\"username\": \"a\", \"password\": \"p\", \"x\": 1}", 39, user, pw, &err) == KS_ERR_INVALID_ARGUMENT &&
		  KsCredentialParse("{\"username\": \"a\", \"password\": \"\"}", 33, user, pw, &err) == KS_ERR_INVALID_ARGUMENT,
		  "credential: exactly username and a non-empty password");
	check(KsCredentialParse("{\"username\": \"a\", \"password\": \"p\\u0000q\"}", 41, user, pw, &err) == KS_ERR_INVALID_ARGUMENT &&
		  KsCredentialParse("[1]", 3, user, pw, &err) == KS_ERR_INVALID_ARGUMENT,
		  "credential: no NUL in the password; an object only");
}

/* The helpers of the HTTP providers: pure functions, no network. */
static void
test_remote_helpers(void)
{
	uint8_t		aad[128];
	size_t		aad_len = KsDekBindingAad("orders", 0x01020304, aad, sizeof(aad));
	char		name[64];
	uint32_t	version = 0;
	uint8_t		buf[64];
	char	   *s;
	KsKmsInstance kms = {.provider = &KsVaultTransitProvider, .name = "t", .noptions = 1};

	check(KsDekBindingParse(aad, aad_len, name, sizeof(name), &version) == 1 &&
		  strcmp(name, "orders") == 0 && version == 0x01020304,
		  "binding: parse gives back the key name and version");
	check(!KsDekBindingParse(aad, aad_len - 1, name, sizeof(name), &version) &&
		  !KsDekBindingParse(aad, aad_len, name, 4, &version),
		  "binding: a short blob or a short name buffer is refused");
	aad[3] ^= 1;
	check(!KsDekBindingParse(aad, aad_len, name, sizeof(name), &version), "binding: a wrong prefix is refused");

	s = KsBase64((const uint8_t *) "\xff\xfe\x00", 3);
	check(s && strcmp(s, "//4A") == 0 && KsUnbase64(s, buf, sizeof(buf)) == 3 && buf[0] == 0xff,
		  "base64: encodes and decodes");
	free(s);
	check(KsUnbase64("QQ==", buf, sizeof(buf)) == 1 && buf[0] == 'A' && KsUnbase64("QUI=", buf, sizeof(buf)) == 2,
		  "base64: padding is not counted as data");
	check(KsUnbase64("QUJD", buf, 2) == -1 && KsUnbase64("QUJ", buf, sizeof(buf)) == -1 &&
		  KsUnbase64("", buf, sizeof(buf)) == -1,
		  "base64: too long for the buffer, a bad length, or empty: -1");
	s = KsBase64Url((const uint8_t *) "\xff\xfe\xfd\xfc", 4);
	check(s && strcmp(s, "__79_A") == 0 && KsUnbase64Url(s, buf, sizeof(buf)) == 4 && buf[3] == 0xfc,
		  "base64url: no padding, - and _, and back");
	free(s);
	s = KsFormEncode("a b&c=d/+~");
	check(s && strcmp(s, "a%20b%26c%3Dd%2F%2B~") == 0, "form encoding escapes all but unreserved characters");
	free(s);

	kms.options[0].name = "url";
	kms.options[0].value = "http://vault:8200";
	check(KsHttpCheckUrl(&kms, "url", NULL) == KS_ERR_INVALID_ARGUMENT, "http: plain http is refused");
	kms.options[0].value = "https://vault:8200/x?token=1";
	check(KsHttpCheckUrl(&kms, "url", NULL) == KS_ERR_INVALID_ARGUMENT, "http: a query string is refused");
	kms.options[0].name = "timeout_ms";
	kms.options[0].value = "99";
	check(KsHttpCheckTimeout(&kms, NULL) == KS_ERR_INVALID_ARGUMENT, "http: a timeout under 100 ms is refused");
	kms.options[0].value = "2500";
	check(KsHttpCheckTimeout(&kms, NULL) == KS_OK && KsHttpTimeoutMs(&kms) == 2500,
		  "http: timeout_ms overrides the default");
	kms.options[0].value = "600000";
	KsHttpSetTimeoutCap(2000);
	check(KsHttpTimeoutMs(&kms) == 2000, "http: the rotation worker's cap shortens a ten-minute timeout_ms");
	kms.options[0].value = "1500";
	check(KsHttpTimeoutMs(&kms) == 1500, "http: and leaves a shorter one alone");
	KsHttpSetTimeoutCap(0);
	kms.options[0].value = "600000";
	check(KsHttpTimeoutMs(&kms) == 600000, "http: without a cap timeout_ms stands");
}

/*
 * kms/pgremote.c: what a hostile remote server may answer, and the socket
 * table lines the test login's peer check reads.
 */
static void
test_pgremote(void)
{
	KsError		err;
	int			v = -1;
	char		out[KS_REMOTE_TEXT_MAX + 4];
	char		big[400];
	char		l[64],
				r[64];
	unsigned long uid = 0;
	struct sockaddr_in a4;
	struct sockaddr_in6 a6;

	check(KsRemoteParseVersion("15.4", 4, &v, &err) == KS_OK && v == 150004, "pgremote: version 15.4 is 150004");
	check(KsRemoteParseVersion("16.1 (Debian 16.1-1.pgdg120+1)", 30, &v, &err) == KS_OK && v == 160001,
		  "pgremote: a version with a distribution label");
	check(KsRemoteParseVersion("17beta1", 7, &v, &err) == KS_OK && v == 170000, "pgremote: 17beta1 is 170000");
	check(KsRemoteParseVersion("9.6.24", 6, &v, &err) == KS_ERR_INVALID_ARGUMENT,
		  "pgremote: 9.6 (no SCRAM) is refused as unsupported");
	check(KsRemoteParseVersion("x16", 3, &v, &err) == KS_ERR_KMS_BAD_RESPONSE, "pgremote: a version not starting with a digit");
	check(KsRemoteParseVersion(NULL, 0, &v, &err) == KS_ERR_KMS_BAD_RESPONSE, "pgremote: no version at all");
	check(KsRemoteParseVersion("16.", 3, &v, &err) == KS_ERR_KMS_BAD_RESPONSE, "pgremote: a dot with no minor version");
	check(KsRemoteParseVersion("99999.1", 7, &v, &err) == KS_ERR_KMS_BAD_RESPONSE, "pgremote: a five-digit major version");
	check(KsRemoteParseVersion("160001", 6, &v, &err) == KS_ERR_KMS_BAD_RESPONSE,
		  "pgremote: a version number of more than four digits");
	check(KsRemoteParseVersion("16.1", 2, &v, &err) == KS_OK && v == 160000, "pgremote: the version reads only len bytes");

	check(KsRemoteParseIterations("4096", 4, &v, &err) == KS_OK && v == 4096, "pgremote: 4096 iterations");
	check(KsRemoteParseIterations("1000000", 7, &v, &err) == KS_OK && v == 1000000, "pgremote: the most iterations accepted");
	check(KsRemoteParseIterations("1000001", 7, &v, &err) == KS_ERR_INVALID_ARGUMENT &&
		  strstr(err.message, "4096 to 1000000") != NULL, "pgremote: one iteration more is refused, naming the range");
	check(KsRemoteParseIterations("2147483648", 10, &v, &err) == KS_ERR_INVALID_ARGUMENT, "pgremote: 2^31 iterations refused");
	check(KsRemoteParseIterations("99999999999", 11, &v, &err) == KS_ERR_KMS_BAD_RESPONSE,
		  "pgremote: eleven digits are not read at all");
	check(KsRemoteParseIterations("4095", 4, &v, &err) == KS_ERR_INVALID_ARGUMENT, "pgremote: fewer than 4096 refused");
	check(KsRemoteParseIterations("-4096", 5, &v, &err) == KS_ERR_KMS_BAD_RESPONSE, "pgremote: a sign is refused");
	check(KsRemoteParseIterations("4096 ", 5, &v, &err) == KS_ERR_KMS_BAD_RESPONSE, "pgremote: trailing bytes refused");
	check(KsRemoteParseIterations("40\0" "96", 5, &v, &err) == KS_ERR_KMS_BAD_RESPONSE, "pgremote: an embedded NUL refused");
	check(KsRemoteParseIterations("", 0, &v, &err) == KS_ERR_KMS_BAD_RESPONSE, "pgremote: an empty count refused");

	check(KsRemoteParseBool("t", 1, &v, &err) == KS_OK && v == 1 && KsRemoteParseBool("f", 1, &v, &err) == KS_OK && v == 0,
		  "pgremote: t and f");
	check(KsRemoteParseBool("true", 4, &v, &err) == KS_ERR_KMS_BAD_RESPONSE &&
		  KsRemoteParseBool("t", 0, &v, &err) == KS_ERR_KMS_BAD_RESPONSE, "pgremote: anything else is no boolean");

	KsRemoteCleanText("bad\x01" "th\xc3\xa9ng\n", out, sizeof(out));
	check(strcmp(out, "bad?th??ng") == 0, "pgremote: control and non-ASCII bytes become ?, the trailing newline goes");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	KsRemoteCleanText(big, out, sizeof(out));
	check(strlen(out) == KS_REMOTE_TEXT_MAX + 3 && strcmp(out + KS_REMOTE_TEXT_MAX, "...") == 0,
		  "pgremote: a long message is cut and marked");
	KsRemoteCleanText(NULL, out, sizeof(out));
	check(strcmp(out, "(no message)") == 0, "pgremote: no message");

	memset(&a4, 0, sizeof(a4));
	a4.sin_family = AF_INET;
	a4.sin_port = htons(5432);
	inet_pton(AF_INET, "127.0.0.1", &a4.sin_addr);
	check(KsProcNetAddr((struct sockaddr *) &a4, 0, l, sizeof(l)) && strcmp(l, "0100007F:1538") == 0,
		  "pgremote: 127.0.0.1:5432 in /proc/net/tcp notation");
	check(KsProcNetAddr((struct sockaddr *) &a4, 1, l, sizeof(l)) &&
		  strcmp(l, "0000000000000000FFFF00000100007F:1538") == 0, "pgremote: the same, v4-mapped, in tcp6 notation");
	memset(&a6, 0, sizeof(a6));
	a6.sin6_family = AF_INET6;
	a6.sin6_port = htons(80);
	inet_pton(AF_INET6, "::1", &a6.sin6_addr);
	check(KsProcNetAddr((struct sockaddr *) &a6, 0, r, sizeof(r)) &&
		  strcmp(r, "00000000000000000000000001000000:0050") == 0, "pgremote: [::1]:80 in tcp6 notation");
	check(KsProcNetLineUid("   3: 0100007F:1538 0100007F:C350 01 00000000:00000000 00:00000000 00000000   101        0 4242 1\n",
						   "0100007F:1538", "0100007F:C350", &uid) && uid == 101,
		  "pgremote: the uid of the matching socket table line");
	check(!KsProcNetLineUid("   3: 0100007F:1538 0100007F:C351 01 00000000:00000000 00:00000000 00000000   101        0 4242 1\n",
							"0100007F:1538", "0100007F:C350", &uid) &&
		  !KsProcNetLineUid("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
							"0100007F:1538", "0100007F:C350", &uid) &&
		  !KsProcNetLineUid("   3: 0100007F:1538 0100007F:C350", "0100007F:1538", "0100007F:C350", &uid),
		  "pgremote: another connection, the header and a cut line match nothing");
}

int
main(void)
{
	KsError		err;
	KsAead	   *aead;
	char		dir[] = "/tmp/keysmith-unit.XXXXXX";

	printf("1..%d\n", TESTS_PLANNED);
	for (int i = 0; i < 32; i++)
		DEK[i] = (uint8_t) i;
	aead = KsAeadCreate(DEK, 32, &err);
	check(aead != NULL, "AEAD context keyed");
	check(KsAeadCreate(DEK, 16, &err) == NULL && err.status == KS_ERR_INVALID_ARGUMENT,
		  "a 128-bit DEK is refused");
	test_vectors(aead);
	test_random_token();
	test_damage(aead);
	test_one_context(aead);
	test_roundtrip(aead);
	test_nonces();
	test_keyfile_parse();
	test_template_options();
	test_secret_options();
	test_remote_helpers();
	test_pgremote();
	if (mkdtemp(dir) == NULL)
	{
		perror("mkdtemp");
		return 2;
	}
	test_keyfile_load_and_wrap(dir);
	test_keyfile_retire(dir);
	test_kek_check(dir);
	test_keyfile_kept(dir);
	KsAeadFree(aead);
	{
		char		cmd[600];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	}
	if (tests_run != TESTS_PLANNED)
	{
		printf("# planned %d tests, ran %d\n", TESTS_PLANNED, tests_run);
		return 1;
	}
	return tests_failed == 0 ? 0 : 1;
}
