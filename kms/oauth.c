/*
 * kms/oauth.c
 *
 * Bearer tokens for the HTTP providers (see oauth.h).  A process keeps a
 * few tokens, each under the digest of what it stands for, until 60 s
 * before it expires; a token the KMS refuses is forgotten.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "oauth.h"

#define TOKEN_SLOTS 8

typedef struct TokenSlot
{
	uint8_t		key[32];
	int			used;
	time_t		expires_at;
	char		token[KS_TOKEN_MAX + 1];
} TokenSlot;

static TokenSlot Tokens[TOKEN_SLOTS];

void
KsDigestStrings(uint8_t out[32], ...)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = 0;
	va_list		ap;
	const char *s;

	memset(out, 0, 32);
	if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
	{
		EVP_MD_CTX_free(md);
		return;
	}
	va_start(ap, out);
	while ((s = va_arg(ap, const char *)) != NULL)
		EVP_DigestUpdate(md, s, strlen(s) + 1);
	va_end(ap);
	EVP_DigestFinal_ex(md, out, &len);
	EVP_MD_CTX_free(md);
}

char *
KsFormEncode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	char	   *out = malloc(3 * strlen(s) + 1);
	char	   *p = out;

	if (out == NULL)
		return NULL;
	for (; *s; s++)
	{
		unsigned char c = (unsigned char) *s;

		if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~')
			*p++ = (char) c;
		else
		{
			*p++ = '%';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
	}
	*p = '\0';
	return out;
}

char *
KsBase64Url(const uint8_t *in, size_t len)
{
	char	   *out = KsBase64(in, len);
	char	   *p;

	if (out == NULL)
		return NULL;
	for (p = out; *p; p++)
	{
		if (*p == '+')
			*p = '-';
		else if (*p == '/')
			*p = '_';
		else if (*p == '=')
		{
			*p = '\0';
			break;
		}
	}
	return out;
}

long
KsUnbase64Url(const char *in, uint8_t *out, size_t max)
{
	size_t		n = strlen(in);
	char	   *std = malloc(n + 4);
	long		r;

	if (std == NULL)
		return -1;
	for (size_t i = 0; i < n; i++)
		std[i] = in[i] == '-' ? '+' : (in[i] == '_' ? '/' : in[i]);
	while (n % 4 != 0)
		std[n++] = '=';
	std[n] = '\0';
	r = KsUnbase64(std, out, max);
	KsWipe(std, n);
	free(std);
	return r;
}

static TokenSlot *
FindToken(const uint8_t key[32])
{
	for (int i = 0; i < TOKEN_SLOTS; i++)
		if (Tokens[i].used && memcmp(Tokens[i].key, key, 32) == 0)
			return &Tokens[i];
	return NULL;
}

void
KsBearerForget(const uint8_t cache_key[32])
{
	TokenSlot  *t = FindToken(cache_key);

	if (t)
		KsWipe(t, sizeof(*t));
}

KsStatus
KsBearerToken(const KsKmsInstance *kms, const char *token_url, const uint8_t cache_key[32],
			  KsTokenBodyFn body_fn, void *arg, char *token, KsError *err)
{
	TokenSlot  *t = FindToken(cache_key);
	time_t		now = time(NULL);
	KsHttpRequest req = {0};
	KsHttpResponse resp;
	char	   *body = NULL;
	json_t	   *root;
	const char *access;
	json_t	   *expires;
	long		lifetime;
	KsStatus	st;

	if (t && t->expires_at > now)
	{
		memcpy(token, t->token, KS_TOKEN_MAX + 1);
		return KS_OK;
	}
	if ((st = body_fn(arg, &body, err)) != KS_OK)
		return st;
	req.method = "POST";
	req.url = token_url;
	req.headers[req.nheaders++] = "Content-Type: application/x-www-form-urlencoded";
	req.headers[req.nheaders++] = "Accept: application/json";
	req.body = body;
	req.ca_file = KsKmsOptionValue(kms, "ca_file");
	req.timeout_ms = KsHttpTimeoutMs(kms);
	req.provider = kms->name;
	st = KsHttpDo(&req, &resp, err);
	KsWipe(body, strlen(body));
	free(body);
	if (st != KS_OK)
		return st;
	root = json_loads(resp.body, 0, NULL);
	if (resp.status != 200)
	{
		long		status = resp.status;
		json_t	   *e = root ? json_object_get(root, "error") : NULL;
		char		code[80];

		snprintf(code, sizeof(code), "%s", json_is_string(e) ? json_string_value(e) : "no error code");
		if (root)
			json_decref(root);
		KsHttpResponseFree(&resp);
		if (status == 400 || status == 401 || status == 403)
			return KsFail(err, KS_ERR_KMS_DENIED, "KMS provider \"%s\": the token endpoint refused the credentials (HTTP %ld, %s)",
						  kms->name, status, code);
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\": the token endpoint answered HTTP %ld (%s)",
					  kms->name, status, code);
	}
	KsHttpResponseFree(&resp);
	if (root == NULL)
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\": the token endpoint answered something that is not JSON",
					  kms->name);
	access = json_string_value(json_object_get(root, "access_token"));
	expires = json_object_get(root, "expires_in");
	/* expires_in is a number; some endpoints send it as a string */
	lifetime = json_is_integer(expires) ? (long) json_integer_value(expires) :
		(json_is_string(expires) ? strtol(json_string_value(expires), NULL, 10) : 0);
	if (access == NULL || strlen(access) == 0 || strlen(access) > KS_TOKEN_MAX ||
		strpbrk(access, "\r\n") != NULL || lifetime <= 0)
	{
		if (access)
			KsWipe((void *) access, strlen(access));
		json_decref(root);
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\": the token endpoint answered no usable access_token",
					  kms->name);
	}
	snprintf(token, KS_TOKEN_MAX + 1, "%s", access);
	KsWipe((void *) access, strlen(access));
	json_decref(root);

	if (t == NULL)
	{
		/* a free slot, or the one that expires first */
		for (int i = 0; i < TOKEN_SLOTS; i++)
			if (t == NULL || !Tokens[i].used || (t->used && Tokens[i].expires_at < t->expires_at))
				t = &Tokens[i];
	}
	KsWipe(t, sizeof(*t));
	memcpy(t->key, cache_key, 32);
	t->used = 1;
	t->expires_at = now + (lifetime > 120 ? lifetime - 60 : lifetime / 2);
	snprintf(t->token, sizeof(t->token), "%s", token);
	return KS_OK;
}

KsStatus
KsBearerCall(const KsKmsInstance *kms, const KsBearerAuth *auth, const char *method, const char *url,
			 const char *body, long *status, json_t **answer, KsError *err)
{
	for (int attempt = 0;; attempt++)
	{
		char	   *token = malloc(KS_TOKEN_MAX + 1);
		char	   *header;
		KsHttpRequest req = {0};
		KsHttpResponse resp;
		KsStatus	st;

		*answer = NULL;
		if (token == NULL)
			return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
		st = KsBearerToken(kms, auth->token_url, auth->cache_key, auth->body_fn, auth->arg, token, err);
		if (st != KS_OK)
		{
			free(token);
			return st;
		}
		header = malloc(strlen(token) + 32);
		if (header == NULL)
		{
			KsWipe(token, KS_TOKEN_MAX + 1);
			free(token);
			return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
		}
		sprintf(header, "Authorization: Bearer %s", token);
		KsWipe(token, KS_TOKEN_MAX + 1);
		free(token);
		req.method = method;
		req.url = url;
		req.headers[req.nheaders++] = header;
		req.headers[req.nheaders++] = "Content-Type: application/json";
		req.body = body;
		req.ca_file = KsKmsOptionValue(kms, "ca_file");
		req.timeout_ms = KsHttpTimeoutMs(kms);
		req.provider = kms->name;
		st = KsHttpDo(&req, &resp, err);
		KsWipe(header, strlen(header));
		free(header);
		if (st != KS_OK)
			return st;
		/* a token revoked or expired early: once more with a new one */
		if (resp.status == 401 && attempt == 0)
		{
			KsHttpResponseFree(&resp);
			KsBearerForget(auth->cache_key);
			continue;
		}
		*status = resp.status;
		*answer = json_loads(resp.body, 0, NULL);
		KsHttpResponseFree(&resp);
		return KS_OK;
	}
}
