/*
 * kms/secret_options.h
 *
 * A stored secret's options (keysmith.create_secret's jsonb argument) and
 * the JSON form of a role credential, {"username": ..., "password": ...},
 * parsed and built without PostgreSQL so that both can be unit-tested and
 * fuzzed.  See kms/secret_options.c.
 */
#ifndef KEYSMITH_SECRET_OPTIONS_H
#define KEYSMITH_SECRET_OPTIONS_H

#include "template_options.h"

typedef enum KsStrategy
{
	KS_STRATEGY_NONE = 0,
	KS_STRATEGY_ROLE,			/* postgres_role: one login role */
	KS_STRATEGY_ROLE_PAIR,		/* postgres_role_pair: two roles taking turns */
	KS_STRATEGY_SQL,			/* sql: the owner's own step function */
	KS_STRATEGY_REMOTE,			/* postgres_remote: a role on another server */
	KS_STRATEGY_COUNT			/* not a strategy: how many there are */
} KsStrategy;

#define KS_CONNINFO_MAX 1024

#define KS_FUNCTION_NAME_MAX 200	/* "schema.function", quoted as in SQL */

#define KS_PASSWORD_MIN 16
#define KS_PASSWORD_MAX 128
#define KS_PASSWORD_DEFAULT 32
#define KS_KEEP_VERSIONS_DEFAULT 5
#define KS_KEEP_VERSIONS_MAX 100

typedef struct KsSecretOptions
{
	KsStrategy	strategy;
	char		role[KS_ROLE_NAME_MAX]; /* postgres_role */
	char		roles[2][KS_ROLE_NAME_MAX]; /* postgres_role_pair */
	char		owner_role[KS_ROLE_NAME_MAX];	/* postgres_role_pair */
	char		function[KS_FUNCTION_NAME_MAX + 1];	/* sql */
	char		conninfo[KS_CONNINFO_MAX + 1];	/* postgres_remote */
	char		admin_secret[129];	/* postgres_remote: a secret's name */
	int			password_length;
	int			keep_versions;
	/* on failure: an errdetail and an errhint for the glue, or NULL */
	const char *detail;
	const char *hint;
} KsSecretOptions;

/* "none", "postgres_role", "postgres_role_pair", "sql", "postgres_remote"; KS_ERR_INVALID_ARGUMENT otherwise. */
extern KsStatus KsStrategyFromName(const char *name, KsStrategy *out, KsError *err);
extern const char *KsStrategyName(KsStrategy s);

/*
 * Parse the options of a secret with strategy s.  Unknown options are
 * refused (a typo must not silently mean a default); the message names the
 * option, never echoes a value.
 */
extern KsStatus KsSecretOptionsParse(KsStrategy s, const char *text, size_t len,
									 KsSecretOptions *opt, KsError *err);

/*
 * A role credential.  Parse: text must be a JSON object with string
 * members "username" (1 to 63 bytes) and "password" (1 to 1024 bytes, no
 * NUL); other members are refused.  The password is copied into password
 * (size at least KS_CREDENTIAL_PASSWORD_MAX + 1), which the caller wipes.
 */
#define KS_CREDENTIAL_PASSWORD_MAX 1024
extern KsStatus KsCredentialParse(const char *text, size_t len, char *username,
								  char *password, KsError *err);

/*
 * Build {"username": ..., "password": ...} (escaped the way jansson reads
 * it back) into out, a buffer of out_size bytes that the caller provides
 * and wipes: kms/ never allocates a credential.  *out_len gets its length
 * without the NUL.  KS_CREDENTIAL_JSON_MAX + 1 bytes always suffice for a
 * username of a role name's size and a password KsCredentialParse would
 * accept; a smaller out is refused (KS_ERR_INVALID_ARGUMENT), and nothing
 * is written past out_size.
 */
#define KS_CREDENTIAL_JSON_MAX (32 + 6 * (KS_ROLE_NAME_MAX + KS_CREDENTIAL_PASSWORD_MAX))
extern KsStatus KsCredentialBuild(const char *username, const char *password, char *out,
								  size_t out_size, size_t *out_len, KsError *err);

#endif							/* KEYSMITH_SECRET_OPTIONS_H */
