/*
 * kms/template_options.h
 *
 * Parsing a role template's options (a JSON object) without PostgreSQL, so
 * the parser can be unit-tested and fuzzed.  See kms/template_options.c.
 */
#ifndef KEYSMITH_TEMPLATE_OPTIONS_H
#define KEYSMITH_TEMPLATE_OPTIONS_H

#include "kms.h"

#define KS_ROLE_NAME_MAX 64		/* NAMEDATALEN: 63 bytes and a NUL */
#define KS_PREFIX_MAX 40
#define KS_ISSUERS_MAX 64

typedef struct KsTemplateOptions
{
	char		prefix[KS_PREFIX_MAX + 1];	/* "" when not given */
	int			max_leases;		/* 0: no limit */
	int			connection_limit;	/* -1: no limit */
	int			has_owner;
	char		owner_role[KS_ROLE_NAME_MAX];
	int			n_issuers;
	char		issuers[KS_ISSUERS_MAX][KS_ROLE_NAME_MAX];
	int			allow_role_attributes;
	/* on failure: an errdetail and an errhint for the glue, or NULL */
	const char *detail;
	const char *hint;
} KsTemplateOptions;

/*
 * Parse text (len bytes, JSON) into opt.  KS_ERR_INVALID_NAME for a bad
 * username_prefix, KS_ERR_INVALID_ARGUMENT for anything else that is wrong;
 * the message names the option, never echoes a value.
 */
extern KsStatus KsTemplateOptionsParse(const char *text, size_t len, KsTemplateOptions *opt,
									   KsError *err);

/*
 * Shared by the JSON parsers of kms/ (options.c, secret.c); v is a json_t
 * (jansson), declared void here so that this header needs no jansson.
 * A role name of 1 to 63 bytes without NUL, copied into out; a whole
 * number in [lo, hi].  Each returns 1 if v is one.
 */
extern int	KsJsonRoleName(void *v, char *out);
extern int	KsJsonWholeInRange(void *v, long lo, long hi, long *out);
/* How many bytes of a caller's unknown key a message may show. */
extern int	KsJsonKeyShown(const char *key);

#endif							/* KEYSMITH_TEMPLATE_OPTIONS_H */
