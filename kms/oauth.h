/*
 * kms/oauth.h
 *
 * OAuth2 bearer tokens for the KMS providers that need one (Azure Key
 * Vault: client credentials; Google Cloud KMS: a JWT bearer grant), kept
 * per process until shortly before they expire (kms/oauth.c).  No
 * PostgreSQL headers.  Tokens never appear in a message.
 */
#ifndef KEYSMITH_OAUTH_H
#define KEYSMITH_OAUTH_H

#include <jansson.h>

#include "http.h"

#define KS_TOKEN_MAX 8192

/*
 * Builds the token request's form body (application/x-www-form-urlencoded,
 * malloc'd; the caller wipes and frees it).  Called only when no cached
 * token serves.
 */
typedef KsStatus (*KsTokenBodyFn) (void *arg, char **body, KsError *err);

/*
 * A bearer token for cache_key (a digest of everything the token stands
 * for: the token URL, the client, a digest of its secret): the cached one,
 * or a new one from token_url.  token holds KS_TOKEN_MAX + 1 bytes; the
 * caller wipes it.  A 400/401/403 answer is KS_ERR_KMS_DENIED.
 */
extern KsStatus KsBearerToken(const KsKmsInstance *kms, const char *token_url, const uint8_t cache_key[32],
							  KsTokenBodyFn body_fn, void *arg, char *token, KsError *err);

/* Forget the token of cache_key (the KMS refused it). */
extern void KsBearerForget(const uint8_t cache_key[32]);

/* How a provider gets its bearer token: for KsBearerCall. */
typedef struct KsBearerAuth
{
	const char *token_url;
	uint8_t		cache_key[32];
	KsTokenBodyFn body_fn;
	void	   *arg;
} KsBearerAuth;

/*
 * A JSON request with the bearer token of auth.  KS_OK with the HTTP
 * status and the parsed answer (NULL when it is not JSON; json_decref it)
 * for the provider to read; a 401 is retried once with a new token.
 */
extern KsStatus KsBearerCall(const KsKmsInstance *kms, const KsBearerAuth *auth, const char *method,
							 const char *url, const char *body, long *status, json_t **answer,
							 KsError *err);

/* SHA-256 over the NUL-separated strings, ended by a NULL. */
extern void KsDigestStrings(uint8_t out[32], ...);

/* s, percent-encoded for a form body (malloc'd; NULL if out of memory). */
extern char *KsFormEncode(const char *s);

/* Base64url without padding (RFC 4648 section 5), malloc'd. */
extern char *KsBase64Url(const uint8_t *in, size_t len);

/* Decode base64url (padding optional) into out; the length, or -1. */
extern long KsUnbase64Url(const char *in, uint8_t *out, size_t max);

#endif							/* KEYSMITH_OAUTH_H */
