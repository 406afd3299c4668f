/*
 * test/fuzz/fuzz_secret.c
 *
 * libFuzzer target: the secret options parser and the role credential
 * parser (kms/secret_options.c) on arbitrary bytes.  The first byte picks the
 * strategy.  What is accepted must be within the documented bounds, and a
 * parsed credential must build back into JSON that parses to the same
 * username and password.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "secret_options.h"

static void
CheckName(const char *s)
{
	if (s[0] == '\0' || strlen(s) >= KS_ROLE_NAME_MAX)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	KsSecretOptions o;
	KsError		err;
	KsStrategy	s;
	char		user[KS_ROLE_NAME_MAX];
	char		pw[KS_CREDENTIAL_PASSWORD_MAX + 1];

	if (size < 1)
		return 0;
	s = (KsStrategy) (data[0] % 5);
	if (KsSecretOptionsParse(s, (const char *) data + 1, size - 1, &o, &err) == KS_OK)
	{
		if (o.keep_versions < 1 || o.keep_versions > KS_KEEP_VERSIONS_MAX ||
			o.password_length < KS_PASSWORD_MIN || o.password_length > KS_PASSWORD_MAX)
			abort();
		if (s == KS_STRATEGY_ROLE)
			CheckName(o.role);
		if (s == KS_STRATEGY_SQL && (strchr(o.function, '.') == NULL || strlen(o.function) > KS_FUNCTION_NAME_MAX))
			abort();
		if (s == KS_STRATEGY_ROLE_PAIR)
		{
			CheckName(o.roles[0]);
			CheckName(o.roles[1]);
			CheckName(o.owner_role);
			if (strcmp(o.roles[0], o.roles[1]) == 0 || strcmp(o.owner_role, o.roles[0]) == 0)
				abort();
		}
	}
	else if (memchr(err.message, '\0', sizeof(err.message)) == NULL)
		abort();

	if (KsCredentialParse((const char *) data + 1, size - 1, user, pw, &err) == KS_OK)
	{
		char		json[KS_CREDENTIAL_JSON_MAX + 1];
		size_t		json_len;
		char		user2[KS_ROLE_NAME_MAX];
		char		pw2[KS_CREDENTIAL_PASSWORD_MAX + 1];

		CheckName(user);
		if (pw[0] == '\0' || strlen(pw) > KS_CREDENTIAL_PASSWORD_MAX)
			abort();
		/* whatever parses must fit the documented buffer size */
		if (KsCredentialBuild(user, pw, json, sizeof(json), &json_len, &err) != KS_OK ||
			json_len != strlen(json))
			abort();
		if (KsCredentialParse(json, json_len, user2, pw2, &err) != KS_OK ||
			strcmp(user, user2) != 0 || strcmp(pw, pw2) != 0)
			abort();
	}
	return 0;
}
