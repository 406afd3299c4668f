/*
 * kms/template_options.c
 *
 * The parser of a role template's options (keysmith.create_role_template's
 * jsonb argument), in plain C with jansson and no PostgreSQL headers, so
 * that it can be fuzzed (test/fuzz/fuzz_options.c).  It checks shapes and
 * ranges only; the glue (extension/leases/leases.c) resolves role names and checks
 * privileges.  The input is what a caller typed, so nothing here trusts it:
 * every string is length-checked, embedded NULs are refused, and numbers
 * must be whole and in range.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "template_options.h"

static int
IsSafeIdentifier(const char *s, size_t len, size_t max)
{
	if (len == 0 || len > max || s[0] < 'a' || s[0] > 'z')
		return 0;
	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return 0;
	}
	return 1;
}

/* A role name: 1 to 63 bytes, no NUL.  Copied into out. */
int
KsJsonRoleName(void *jv, char *out)
{
	json_t	   *v = jv;
	size_t		len;

	if (!json_is_string(v))
		return 0;
	len = json_string_length(v);
	if (len == 0 || len >= KS_ROLE_NAME_MAX || memchr(json_string_value(v), '\0', len) != NULL)
		return 0;
	memcpy(out, json_string_value(v), len);
	out[len] = '\0';
	return 1;
}

/*
 * How many bytes of an unknown key a message shows: the key is the
 * caller's, so at most 63 bytes, not cutting a UTF-8 character.
 */
int
KsJsonKeyShown(const char *key)
{
	size_t		klen = strlen(key);

	if (klen > KS_ROLE_NAME_MAX - 1)
	{
		klen = KS_ROLE_NAME_MAX - 1;
		while (klen > 0 && ((unsigned char) key[klen] & 0xC0) == 0x80)
			klen--;
	}
	return (int) klen;
}

/* A whole number in [lo, hi]; numbers arrive as reals (see the flags). */
int
KsJsonWholeInRange(void *jv, long lo, long hi, long *out)
{
	json_t	   *v = jv;
	double		d;

	if (!json_is_number(v))
		return 0;
	d = json_number_value(v);
	if (!isfinite(d) || d != floor(d) || d < (double) lo || d > (double) hi)
		return 0;
	*out = (long) d;
	return 1;
}

/* Fail with message, and the glue's errdetail and errhint (or NULL). */
static KsStatus
Refuse(KsTemplateOptions *opt, KsError *err, KsStatus status, const char *message,
	   const char *detail, const char *hint)
{
	opt->detail = detail;
	opt->hint = hint;
	return KsFail(err, status, "%s", message);
}

/* Check one option and store it in opt. */
static KsStatus
ParseOption(const char *key, json_t *value, KsTemplateOptions *opt, KsError *err)
{
	long		n;

	if (strcmp(key, "username_prefix") == 0)
	{
		size_t		plen = json_is_string(value) ? json_string_length(value) : 0;

		if (!json_is_string(value) || !IsSafeIdentifier(json_string_value(value), plen, KS_PREFIX_MAX) ||
			strncmp(json_string_value(value), "pg_", 3) == 0)
			return Refuse(opt, err, KS_ERR_INVALID_NAME, "invalid username_prefix",
						  "A prefix is 1 to 40 characters: a lowercase letter, then lowercase letters, digits or underscores, not starting with pg_.",
						  NULL);
		memcpy(opt->prefix, json_string_value(value), plen);
		opt->prefix[plen] = '\0';
	}
	else if (strcmp(key, "max_leases") == 0)
	{
		if (!KsJsonWholeInRange(value, 1, 1000000, &n))
			return Refuse(opt, err, KS_ERR_INVALID_ARGUMENT, "invalid max_leases",
						  "max_leases is a whole number from 1 to 1000000.", NULL);
		opt->max_leases = (int) n;
	}
	else if (strcmp(key, "connection_limit") == 0)
	{
		if (!KsJsonWholeInRange(value, -1, 1000000, &n))
			return Refuse(opt, err, KS_ERR_INVALID_ARGUMENT, "invalid connection_limit",
						  "connection_limit is a whole number from -1 (no limit) to 1000000.", NULL);
		opt->connection_limit = (int) n;
	}
	else if (strcmp(key, "owner_role") == 0)
	{
		if (!KsJsonRoleName(value, opt->owner_role))
			return Refuse(opt, err, KS_ERR_INVALID_ARGUMENT, "owner_role must be a role name", NULL, NULL);
		opt->has_owner = 1;
	}
	else if (strcmp(key, "issuers") == 0)
	{
		size_t		i;
		json_t	   *elem;

		if (!json_is_array(value))
			return Refuse(opt, err, KS_ERR_INVALID_ARGUMENT, "issuers must be an array of role names", NULL, NULL);
		if (json_array_size(value) > KS_ISSUERS_MAX)
			return Refuse(opt, err, KS_ERR_INVALID_ARGUMENT, "too many issuers",
						  "A template lists at most 64 issuer roles; grant one role to many instead.", NULL);
		json_array_foreach(value, i, elem)
		{
			if (!KsJsonRoleName(elem, opt->issuers[i]))
				return Refuse(opt, err, KS_ERR_INVALID_ARGUMENT, "issuers must be an array of role names", NULL, NULL);
			opt->n_issuers = (int) i + 1;
		}
	}
	else if (strcmp(key, "allow_role_attributes") == 0)
	{
		if (!json_is_boolean(value))
			return Refuse(opt, err, KS_ERR_INVALID_ARGUMENT, "allow_role_attributes must be true or false", NULL, NULL);
		opt->allow_role_attributes = json_is_true(value);
	}
	else
	{
		char		message[KS_ERRMSG_LEN];

		snprintf(message, sizeof(message), "unknown template option \"%.*s\"", KsJsonKeyShown(key), key);
		return Refuse(opt, err, KS_ERR_INVALID_ARGUMENT, message, NULL,
					  "Valid options are username_prefix, max_leases, connection_limit, owner_role, issuers and allow_role_attributes.");
	}
	return KS_OK;
}

KsStatus
KsTemplateOptionsParse(const char *text, size_t len, KsTemplateOptions *opt, KsError *err)
{
	json_t	   *root;
	json_error_t jerr;
	const char *key;
	json_t	   *value;
	KsStatus	st = KS_OK;

	memset(opt, 0, sizeof(*opt));
	opt->connection_limit = -1;

	/*
	 * Every number as a real: "1.5" and "1e400" then reach the range
	 * checks instead of failing inside the parser.  The input comes from
	 * jsonb, which has no duplicate keys; refusing them anyway costs
	 * nothing.
	 */
	root = json_loadb(text, len, JSON_DECODE_INT_AS_REAL | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (root == NULL)
		return Refuse(opt, err, KS_ERR_INVALID_ARGUMENT,
					  strstr(jerr.text, "overflow") || strstr(jerr.text, "too big")
					  ? "a number in the template options is out of range"
					  : "template options are not valid JSON", NULL, NULL);
	if (!json_is_object(root))
		st = Refuse(opt, err, KS_ERR_INVALID_ARGUMENT, "template options must be a JSON object", NULL, NULL);
	else
		json_object_foreach(root, key, value)
		{
			if ((st = ParseOption(key, value, opt, err)) != KS_OK)
				break;
		}
	json_decref(root);
	return st;
}
