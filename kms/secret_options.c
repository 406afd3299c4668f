/*
 * kms/secret_options.c
 *
 * Stored secrets without PostgreSQL: the parser of a secret's options and
 * the JSON form of a role credential.  The input is what a caller typed,
 * so nothing here trusts it: strings are length-checked, embedded NULs are
 * refused, numbers must be whole and in range, and unknown members are
 * refused.  Messages name an option, never a value.
 *
 * jansson keeps its own copies of the strings it parses and frees them
 * without wiping; credentials are therefore built here by hand (escaped
 * into a buffer the caller provides and wipes), and parsed by jansson only
 * when a caller hands keysmith a value to store.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "secret_options.h"

static const char *const StrategyNames[] = {"none", "postgres_role", "postgres_role_pair", "sql", "postgres_remote"};

_Static_assert(sizeof(StrategyNames) / sizeof(StrategyNames[0]) == KS_STRATEGY_COUNT,
			   "every KsStrategy needs a name");

const char *
KsStrategyName(KsStrategy s)
{
	return (unsigned) s < sizeof(StrategyNames) / sizeof(StrategyNames[0]) ? StrategyNames[s] : "?";
}

KsStatus
KsStrategyFromName(const char *name, KsStrategy *out, KsError *err)
{
	for (size_t i = 0; i < sizeof(StrategyNames) / sizeof(StrategyNames[0]); i++)
		if (strcmp(name, StrategyNames[i]) == 0)
		{
			*out = (KsStrategy) i;
			return KS_OK;
		}
	return KsFail(err, KS_ERR_INVALID_ARGUMENT, "unknown rotation strategy");
}

static KsStatus
Refuse(KsSecretOptions *opt, KsError *err, const char *message, const char *detail, const char *hint)
{
	opt->detail = detail;
	opt->hint = hint;
	return KsFail(err, KS_ERR_INVALID_ARGUMENT, "%s", message);
}

static const char *
ValidOptionsHint(KsStrategy s)
{
	switch (s)
	{
		case KS_STRATEGY_ROLE:
			return "Options of strategy postgres_role: role, password_length, keep_versions.";
		case KS_STRATEGY_ROLE_PAIR:
			return "Options of strategy postgres_role_pair: roles, owner_role, password_length, keep_versions.";
		case KS_STRATEGY_SQL:
			return "Options of strategy sql: function, password_length, keep_versions.";
		case KS_STRATEGY_REMOTE:
			return "Options of strategy postgres_remote: conninfo, role, admin_secret, password_length, keep_versions.";
		default:
			return "Options of strategy none: keep_versions.";
	}
}

static KsStatus
ParseOption(const char *key, json_t *value, KsSecretOptions *opt, KsError *err, unsigned *seen)
{
	long		n;
	KsStrategy	s = opt->strategy;

	if (strcmp(key, "keep_versions") == 0)
	{
		if (!KsJsonWholeInRange(value, 1, KS_KEEP_VERSIONS_MAX, &n))
			return Refuse(opt, err, "invalid keep_versions",
						  "keep_versions is a whole number from 1 to 100: how many unlabelled versions are kept.", NULL);
		opt->keep_versions = (int) n;
		return KS_OK;
	}
	if (strcmp(key, "password_length") == 0 && s != KS_STRATEGY_NONE)
	{
		if (!KsJsonWholeInRange(value, KS_PASSWORD_MIN, KS_PASSWORD_MAX, &n))
			return Refuse(opt, err, "invalid password_length",
						  "password_length is a whole number from 16 to 128.", NULL);
		opt->password_length = (int) n;
		return KS_OK;
	}
	if (strcmp(key, "conninfo") == 0 && s == KS_STRATEGY_REMOTE)
	{
		size_t		len = json_is_string(value) ? json_string_length(value) : 0;

		if (len == 0 || len > KS_CONNINFO_MAX || memchr(json_string_value(value), '\0', len) != NULL)
			return Refuse(opt, err, "option conninfo must be a connection string of 1 to 1024 bytes", NULL, NULL);
		memcpy(opt->conninfo, json_string_value(value), len);
		opt->conninfo[len] = '\0';
		*seen |= 2;
		return KS_OK;
	}
	if (strcmp(key, "admin_secret") == 0 && s == KS_STRATEGY_REMOTE)
	{
		size_t		len = json_is_string(value) ? json_string_length(value) : 0;

		if (len == 0 || len >= sizeof(opt->admin_secret) || memchr(json_string_value(value), '\0', len) != NULL)
			return Refuse(opt, err, "option admin_secret must be a secret name", NULL, NULL);
		memcpy(opt->admin_secret, json_string_value(value), len);
		opt->admin_secret[len] = '\0';
		*seen |= 4;
		return KS_OK;
	}
	if (strcmp(key, "role") == 0 && (s == KS_STRATEGY_ROLE || s == KS_STRATEGY_REMOTE))
	{
		if (!KsJsonRoleName(value, opt->role))
			return Refuse(opt, err, "option role must be a role name", NULL, NULL);
		*seen |= 1;
		return KS_OK;
	}
	if (strcmp(key, "roles") == 0 && s == KS_STRATEGY_ROLE_PAIR)
	{
		if (!json_is_array(value) || json_array_size(value) != 2 ||
			!KsJsonRoleName(json_array_get(value, 0), opt->roles[0]) ||
			!KsJsonRoleName(json_array_get(value, 1), opt->roles[1]))
			return Refuse(opt, err, "option roles must be an array of two role names", NULL, NULL);
		if (strcmp(opt->roles[0], opt->roles[1]) == 0)
			return Refuse(opt, err, "option roles must name two different roles", NULL, NULL);
		*seen |= 1;
		return KS_OK;
	}
	if (strcmp(key, "function") == 0 && s == KS_STRATEGY_SQL)
	{
		size_t		len = json_is_string(value) ? json_string_length(value) : 0;
		const char *dot = len ? memchr(json_string_value(value), '.', len) : NULL;

		/* schema-qualified: the worker never resolves a name through a search_path */
		if (len < 3 || len > KS_FUNCTION_NAME_MAX || dot == NULL || dot == json_string_value(value) ||
			dot == json_string_value(value) + len - 1 || memchr(json_string_value(value), '\0', len) != NULL)
			return Refuse(opt, err, "option function must be a schema-qualified function name",
						  "For example: '{\"function\": \"app.rotate_api_key\"}'; the function takes (step text, secret_name text, token uuid, pending text) and returns void.",
						  NULL);
		memcpy(opt->function, json_string_value(value), len);
		opt->function[len] = '\0';
		*seen |= 1;
		return KS_OK;
	}
	if (strcmp(key, "owner_role") == 0 && s == KS_STRATEGY_ROLE_PAIR)
	{
		if (!KsJsonRoleName(value, opt->owner_role))
			return Refuse(opt, err, "option owner_role must be a role name", NULL, NULL);
		*seen |= 2;
		return KS_OK;
	}

	{
		char		message[KS_ERRMSG_LEN];

		snprintf(message, sizeof(message), "unknown option \"%.*s\" for strategy %s",
				 KsJsonKeyShown(key), key, KsStrategyName(s));
		return Refuse(opt, err, message, NULL, ValidOptionsHint(s));
	}
}

KsStatus
KsSecretOptionsParse(KsStrategy s, const char *text, size_t len, KsSecretOptions *opt, KsError *err)
{
	json_t	   *root;
	json_error_t jerr;
	const char *key;
	json_t	   *value;
	KsStatus	st = KS_OK;
	unsigned	seen = 0;

	memset(opt, 0, sizeof(*opt));
	opt->strategy = s;
	opt->password_length = KS_PASSWORD_DEFAULT;
	opt->keep_versions = KS_KEEP_VERSIONS_DEFAULT;

	root = json_loadb(text, len, JSON_DECODE_INT_AS_REAL | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (root == NULL)
		return Refuse(opt, err, "secret options are not valid JSON", NULL, NULL);
	if (!json_is_object(root))
		st = Refuse(opt, err, "secret options must be a JSON object", NULL, NULL);
	else
		json_object_foreach(root, key, value)
		{
			if ((st = ParseOption(key, value, opt, err, &seen)) != KS_OK)
				break;
		}
	json_decref(root);
	if (st != KS_OK)
		return st;
	if (s == KS_STRATEGY_ROLE && !(seen & 1))
		return Refuse(opt, err, "strategy postgres_role needs option role", NULL,
					  "For example: '{\"role\": \"app\"}'.");
	if (s == KS_STRATEGY_REMOTE && seen != 7)
		return Refuse(opt, err, "strategy postgres_remote needs options conninfo, role and admin_secret", NULL,
					  "For example: '{\"conninfo\": \"host=db2 dbname=app\", \"role\": \"app\", \"admin_secret\": \"db2/admin\"}'.");
	if (s == KS_STRATEGY_SQL && !(seen & 1))
		return Refuse(opt, err, "strategy sql needs option function", NULL,
					  "For example: '{\"function\": \"app.rotate_api_key\"}'.");
	if (s == KS_STRATEGY_ROLE_PAIR && seen != 3)
		return Refuse(opt, err, "strategy postgres_role_pair needs options roles and owner_role", NULL,
					  "For example: '{\"roles\": [\"app_a\", \"app_b\"], \"owner_role\": \"app_owner\"}'.");
	if (s == KS_STRATEGY_ROLE_PAIR &&
		(strcmp(opt->owner_role, opt->roles[0]) == 0 || strcmp(opt->owner_role, opt->roles[1]) == 0))
		return Refuse(opt, err, "owner_role must be a third role, not one of roles", NULL, NULL);
	return KS_OK;
}

KsStatus
KsCredentialParse(const char *text, size_t len, char *username, char *password, KsError *err)
{
	json_t	   *root;
	json_error_t jerr;
	json_t	   *u,
			   *p;
	size_t		plen;
	KsStatus	st = KS_OK;

	root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
	if (root == NULL || !json_is_object(root))
		st = KsFail(err, KS_ERR_INVALID_ARGUMENT, "a role credential must be a JSON object");
	else if (json_object_size(root) != 2 ||
			 (u = json_object_get(root, "username")) == NULL ||
			 (p = json_object_get(root, "password")) == NULL)
		st = KsFail(err, KS_ERR_INVALID_ARGUMENT,
					"a role credential has exactly the members username and password");
	else if (!KsJsonRoleName(u, username))
		st = KsFail(err, KS_ERR_INVALID_ARGUMENT, "the credential's username must be a role name");
	else if (!json_is_string(p) || (plen = json_string_length(p)) == 0 ||
			 plen > KS_CREDENTIAL_PASSWORD_MAX || memchr(json_string_value(p), '\0', plen) != NULL)
		st = KsFail(err, KS_ERR_INVALID_ARGUMENT,
					"the credential's password must be a string of 1 to 1024 bytes without NUL");
	else
	{
		memcpy(password, json_string_value(p), plen);
		password[plen] = '\0';
	}
	if (root)
		json_decref(root);
	return st;
}

/* How many bytes s takes as a JSON string, with its quotes. */
static size_t
JsonStringLength(const char *s)
{
	size_t		n = 2;

	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		n += (c == '"' || c == '\\') ? 2 : c < 0x20 ? 6 : 1;
	}
	return n;
}

/* Append s as a JSON string (with its quotes) at *pos; out has room. */
static void
AppendJsonString(char *out, size_t *pos, const char *s)
{
	static const char hex[] = "0123456789abcdef";

	out[(*pos)++] = '"';
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if (c == '"' || c == '\\')
		{
			out[(*pos)++] = '\\';
			out[(*pos)++] = (char) c;
		}
		else if (c < 0x20)
		{
			memcpy(out + *pos, "\\u00", 4);
			*pos += 4;
			out[(*pos)++] = hex[c >> 4];
			out[(*pos)++] = hex[c & 15];
		}
		else
			out[(*pos)++] = (char) c;
	}
	out[(*pos)++] = '"';
}

KsStatus
KsCredentialBuild(const char *username, const char *password, char *out, size_t out_size,
				  size_t *out_len, KsError *err)
{
	static const char head[] = "{\"username\": ";
	static const char middle[] = ", \"password\": ";
	size_t		need = (sizeof(head) - 1) + JsonStringLength(username) + (sizeof(middle) - 1) +
		JsonStringLength(password) + 1;
	size_t		pos;

	*out_len = 0;
	if (out == NULL || need + 1 > out_size)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "the credential does not fit its buffer");
	memcpy(out, head, sizeof(head) - 1);
	pos = sizeof(head) - 1;
	AppendJsonString(out, &pos, username);
	memcpy(out + pos, middle, sizeof(middle) - 1);
	pos += sizeof(middle) - 1;
	AppendJsonString(out, &pos, password);
	out[pos++] = '}';
	out[pos] = '\0';
	*out_len = pos;
	return KS_OK;
}
