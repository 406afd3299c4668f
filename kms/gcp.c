/*
 * kms/gcp.c
 *
 * The gcp_kms provider: Google Cloud KMS symmetric keys, over the
 * documented REST API (v1):
 *
 *   POST <endpoint>/v1/<cryptoKey>:encrypt  {plaintext, additionalAuthenticatedData}
 *                                           -> {name: .../cryptoKeyVersions/N, ciphertext}
 *   POST <endpoint>/v1/<cryptoKey>:decrypt  {ciphertext, additionalAuthenticatedData} -> {plaintext}
 *   GET  <endpoint>/v1/<cryptoKey>          {primary: {name: .../cryptoKeyVersions/N}}
 *
 * kms_key is the full projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>
 * name.  The key name and DEK version are bound as additional
 * authenticated data; the wrapped DEK is Cloud KMS's ciphertext, as bytes;
 * the KEK version is the number of the primary version that encrypted it.
 * Cloud KMS has no rewrap: rotation decrypts then encrypts.
 *
 * Auth: a service-account key file (credentials_file, read at every call:
 * client_email, private_key, private_key_id, token_uri).  keysmith signs
 * the OAuth2 JWT bearer grant (RFC 7523) with RS256 through OpenSSL, sends
 * it to token_uri (or the token_url option) for an access token with the
 * cloudkms scope, and keeps that token until shortly before it expires.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "oauth.h"
#include "remote.h"

#define GCP_FILE_MAX (64 * 1024)
#define GCP_SCOPE "https://www.googleapis.com/auth/cloudkms"

static const char *const GcpOptions[] = {"credentials_file", "endpoint", "token_url", "ca_file", "timeout_ms", NULL};

static KsStatus
GcpCheckOptions(const KsKmsInstance *kms, KsError *err)
{
	if (KsKmsOptionValue(kms, "credentials_file") == NULL)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT,
					  "gcp_kms needs option credentials_file, a service account key file");
	if (KsKmsOptionValue(kms, "endpoint") && KsHttpCheckUrl(kms, "endpoint", err) != KS_OK)
		return err->status;
	if (KsKmsOptionValue(kms, "token_url") && KsHttpCheckUrl(kms, "token_url", err) != KS_OK)
		return err->status;
	return KsHttpCheckTimeout(kms, err);
}

/* projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k> */
static int
CryptoKeyName(const char *s)
{
	static const char *const fixed[] = {"projects", "locations", "keyRings", "cryptoKeys"};
	char		copy[512];
	char	   *save = NULL;
	char	   *part;
	int			i = 0;

	if (s == NULL || strlen(s) >= sizeof(copy) || strstr(s, "//") || s[0] == '/' || s[strlen(s) - 1] == '/')
		return 0;
	snprintf(copy, sizeof(copy), "%s", s);
	for (part = strtok_r(copy, "/", &save); part; part = strtok_r(NULL, "/", &save), i++)
	{
		if (i >= 8)
			return 0;
		if (i % 2 == 0 && strcmp(part, fixed[i / 2]) != 0)
			return 0;
		for (const char *c = part; *c; c++)
			if (!isalnum((unsigned char) *c) && *c != '-' && *c != '_')
				return 0;
	}
	return i == 8;
}

static KsStatus
GcpCheckKey(const KsKmsInstance *kms, const char *kms_key, KsError *err)
{
	if (!CryptoKeyName(kms_key))
		return KsFail(err, KS_ERR_INVALID_ARGUMENT,
					  "a key of KMS type gcp_kms needs kms_key, projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>");
	return KS_OK;
}

/* The service account, from credentials_file; the caller frees it with FreeAccount. */
typedef struct GcpAccount
{
	const KsKmsInstance *kms;
	json_t	   *root;
	const char *email;
	const char *private_key;
	const char *key_id;
	char		token_url[600];
} GcpAccount;

static void
FreeAccount(GcpAccount *a)
{
	if (a->private_key)
		KsWipe((void *) a->private_key, strlen(a->private_key));
	if (a->root)
		json_decref(a->root);
	memset(a, 0, sizeof(*a));
}

static KsStatus
ReadAccount(const KsKmsInstance *kms, GcpAccount *a, KsError *err)
{
	const char *path = KsKmsOptionValue(kms, "credentials_file");
	const char *override = KsKmsOptionValue(kms, "token_url");
	const char *uri;
	json_error_t jerr;

	memset(a, 0, sizeof(*a));
	a->kms = kms;
	a->root = json_load_file(path, 0, &jerr);
	if (a->root == NULL)
		return KsFail(err, KS_ERR_KMS_DENIED, "KMS provider \"%s\": could not read credentials_file \"%s\" as JSON",
					  kms->name, path);
	a->email = json_string_value(json_object_get(a->root, "client_email"));
	a->private_key = json_string_value(json_object_get(a->root, "private_key"));
	a->key_id = json_string_value(json_object_get(a->root, "private_key_id"));
	uri = json_string_value(json_object_get(a->root, "token_uri"));
	if (a->email == NULL || a->private_key == NULL || (uri == NULL && override == NULL))
	{
		FreeAccount(a);
		return KsFail(err, KS_ERR_KMS_DENIED,
					  "KMS provider \"%s\": credentials_file \"%s\" is no service account key (client_email, private_key, token_uri)",
					  kms->name, path);
	}
	snprintf(a->token_url, sizeof(a->token_url), "%s", override ? override : uri);
	if (override == NULL && strncmp(a->token_url, "https://", 8) != 0)
	{
		FreeAccount(a);
		return KsFail(err, KS_ERR_KMS_DENIED, "KMS provider \"%s\": the token_uri of credentials_file must be https://",
					  kms->name);
	}
	return KS_OK;
}

/* "<header>.<claims>" signed with RS256: the JWT bearer grant's assertion. */
static KsStatus
SignedJwt(GcpAccount *a, char **jwt, KsError *err)
{
	char		header[256];
	char		claims[1024];
	char	   *h64 = NULL;
	char	   *c64 = NULL;
	char	   *s64 = NULL;
	char	   *input = NULL;
	unsigned char sig[1024];
	size_t		siglen = sizeof(sig);
	time_t		now = time(NULL);
	BIO		   *bio = NULL;
	EVP_PKEY   *pkey = NULL;
	EVP_MD_CTX *md = NULL;
	KsStatus	st = KS_OK;

	*jwt = NULL;
	if (a->key_id)
		snprintf(header, sizeof(header), "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"%s\"}", a->key_id);
	else
		snprintf(header, sizeof(header), "{\"alg\":\"RS256\",\"typ\":\"JWT\"}");
	{
		json_t	   *c = json_pack("{s:s, s:s, s:s, s:I, s:I}", "iss", a->email, "scope", GCP_SCOPE,
								  "aud", a->token_url, "iat", (json_int_t) now, "exp", (json_int_t) now + 3600);
		char	   *text = c ? json_dumps(c, JSON_COMPACT) : NULL;

		if (c)
			json_decref(c);
		if (text == NULL || strlen(text) >= sizeof(claims))
		{
			free(text);
			return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
		}
		snprintf(claims, sizeof(claims), "%s", text);
		free(text);
	}
	h64 = KsBase64Url((const uint8_t *) header, strlen(header));
	c64 = KsBase64Url((const uint8_t *) claims, strlen(claims));
	if (h64 && c64)
		input = malloc(strlen(h64) + strlen(c64) + 2);
	if (input == NULL)
	{
		st = KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
		goto done;
	}
	sprintf(input, "%s.%s", h64, c64);
	bio = BIO_new_mem_buf(a->private_key, -1);
	pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	if (pkey == NULL)
	{
		st = KsFail(err, KS_ERR_KMS_DENIED, "KMS provider \"%s\": the private_key of credentials_file is not a PEM private key",
					a->kms->name);
		goto done;
	}
	md = EVP_MD_CTX_new();
	if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, pkey) != 1 ||
		EVP_DigestSign(md, sig, &siglen, (const unsigned char *) input, strlen(input)) != 1)
	{
		st = KsFail(err, KS_ERR_CRYPTO, "KMS provider \"%s\": could not sign the token request", a->kms->name);
		goto done;
	}
	s64 = KsBase64Url(sig, siglen);
	*jwt = s64 ? malloc(strlen(input) + strlen(s64) + 2) : NULL;
	if (*jwt == NULL)
		st = KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	else
		sprintf(*jwt, "%s.%s", input, s64);
done:
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pkey);
	BIO_free(bio);
	free(h64);
	free(c64);
	free(s64);
	free(input);
	return st;
}

static KsStatus
GcpTokenBody(void *arg, char **body, KsError *err)
{
	char	   *jwt;
	KsStatus	st = SignedJwt(arg, &jwt, err);

	*body = NULL;
	if (st != KS_OK)
		return st;
	*body = malloc(strlen(jwt) + 96);
	if (*body)
		sprintf(*body, "grant_type=urn%%3Aietf%%3Aparams%%3Aoauth%%3Agrant-type%%3Ajwt-bearer&assertion=%s", jwt);
	free(jwt);
	return *body ? KS_OK : KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
}

/* One call on <endpoint>/v1/<path>; the answer's JSON on HTTP 200. */
static KsStatus
GcpCall(const KsKmsInstance *kms, const char *method, const char *path, json_t *req, int decrypting,
		json_t **answer, KsError *err)
{
	const char *endpoint = KsKmsOptionValue(kms, "endpoint");
	GcpAccount	a;
	KsBearerAuth auth;
	char		url[1024];
	char	   *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	long		status = 0;
	KsStatus	st;

	*answer = NULL;
	if (req && body == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	snprintf(url, sizeof(url), "%s/v1/%s", endpoint ? endpoint : "https://cloudkms.googleapis.com", path);
	st = ReadAccount(kms, &a, err);
	if (st == KS_OK)
	{
		auth.token_url = a.token_url;
		KsDigestStrings(auth.cache_key, "gcp", a.token_url, a.email, a.key_id ? a.key_id : "", a.private_key,
						(const char *) NULL);
		auth.body_fn = GcpTokenBody;
		auth.arg = &a;
		st = KsBearerCall(kms, &auth, method, url, body, &status, answer, err);
		FreeAccount(&a);
	}
	if (body)
	{
		KsWipe(body, strlen(body));
		free(body);
	}
	if (st != KS_OK)
		return st;
	return KsJsonApiAnswer(kms, status, answer, "status", decrypting, "Cloud KMS", err);
}

/* N of "<kms_key>/cryptoKeyVersions/N", into version; 0 if it is not that. */
static int
VersionOf(const char *kms_key, const char *name, char *version)
{
	size_t		n = strlen(kms_key);
	const char *rest;

	if (name == NULL || strncmp(name, kms_key, n) != 0 || strncmp(name + n, "/cryptoKeyVersions/", 19) != 0)
		return 0;
	rest = name + n + 19;
	if (*rest == '\0' || strlen(rest) >= 32 || strspn(rest, "0123456789") != strlen(rest))
		return 0;
	strcpy(version, rest);
	return 1;
}

static KsStatus
Encrypt(const KsKmsInstance *kms, const char *kms_key, const uint8_t *dek, size_t dek_len,
		const uint8_t *aad, size_t aad_len, uint8_t *out, size_t *out_len, char *kek_version, KsError *err)
{
	char	   *pt = KsBase64(dek, dek_len);
	char	   *ad = KsBase64(aad, aad_len);
	char		path[600];
	char		version[32];
	json_t	   *req = (pt && ad) ? json_pack("{s:s, s:s}", "plaintext", pt, "additionalAuthenticatedData", ad) : NULL;
	json_t	   *answer;
	const char *ct;
	long		n;
	KsStatus	st;

	if (pt)
	{
		KsWipe(pt, strlen(pt));
		free(pt);
	}
	free(ad);
	if (req == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	snprintf(path, sizeof(path), "%s:encrypt", kms_key);
	st = GcpCall(kms, "POST", path, req, 0, &answer, err);
	{
		json_t	   *p = json_object_get(req, "plaintext");

		KsWipe((void *) json_string_value(p), json_string_length(p));
	}
	json_decref(req);
	if (st != KS_OK)
		return st;
	ct = json_string_value(json_object_get(answer, "ciphertext"));
	n = ct ? KsUnbase64(ct, out, KS_WRAPPED_MAX) : -1;
	if (n <= 0 || !VersionOf(kms_key, json_string_value(json_object_get(answer, "name")), version))
	{
		json_decref(answer);
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" answered no usable ciphertext and key version",
					  kms->name);
	}
	*out_len = (size_t) n;
	snprintf(kek_version, KS_KEK_VERSION_LEN, "%s", version);
	json_decref(answer);
	return KS_OK;
}

static KsStatus
GcpWrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *dek, size_t dek_len,
		const uint8_t *aad, size_t aad_len, uint8_t *out, size_t *out_len, char *kek_version, KsError *err)
{
	if (dek_len != KS_DEK_LEN)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "a data key must be %d bytes", KS_DEK_LEN);
	return Encrypt(kms, kms_key, dek, dek_len, aad, aad_len, out, out_len, kek_version, err);
}

static KsStatus
GcpUnwrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *wrapped, size_t wrapped_len,
		  const uint8_t *aad, size_t aad_len, uint8_t *dek, size_t dek_len, KsError *err)
{
	char	   *ct;
	char	   *ad;
	char		path[600];
	json_t	   *req;
	json_t	   *answer;
	KsStatus	st;

	if (wrapped_len == 0 || wrapped_len > KS_WRAPPED_MAX)
		return KsFail(err, KS_ERR_WRAP_MALFORMED, "wrapped data key is not a Cloud KMS ciphertext");
	ct = KsBase64(wrapped, wrapped_len);
	ad = KsBase64(aad, aad_len);
	req = (ct && ad) ? json_pack("{s:s, s:s}", "ciphertext", ct, "additionalAuthenticatedData", ad) : NULL;
	free(ct);
	free(ad);
	if (req == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	snprintf(path, sizeof(path), "%s:decrypt", kms_key);
	st = GcpCall(kms, "POST", path, req, 1, &answer, err);
	json_decref(req);
	if (st != KS_OK)
		return st;
	st = KsTakeDek(kms, json_string_value(json_object_get(answer, "plaintext")), dek, dek_len, err);
	json_decref(answer);
	return st;
}

/* Cloud KMS has no rewrap: decrypt, then encrypt under the primary version. */
static KsStatus
GcpRewrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *wrapped, size_t wrapped_len,
		  const uint8_t *aad, size_t aad_len, uint8_t *out, size_t *out_len, char *kek_version, KsError *err)
{
	return KsUnwrapThenWrap(&KsGcpKmsProvider, kms, kms_key, wrapped, wrapped_len, aad, aad_len,
							out, out_len, kek_version, err);
}

static KsStatus
GcpNeedsRewrap(const KsKmsInstance *kms, const char *kms_key, const char *kek_version, int *needs, KsError *err)
{
	json_t	   *answer;
	char		version[32];
	KsStatus	st = GcpCall(kms, "GET", kms_key, NULL, 0, &answer, err);

	if (st != KS_OK)
		return st;
	if (!VersionOf(kms_key, json_string_value(json_object_get(json_object_get(answer, "primary"), "name")), version))
	{
		json_decref(answer);
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" did not say the key's primary version",
					  kms->name);
	}
	json_decref(answer);
	*needs = strcmp(version, kek_version) != 0;
	return KS_OK;
}

const KsKmsProvider KsGcpKmsProvider = {
	.type = "gcp_kms",
	.shared_cache = 1,
	.option_names = GcpOptions,
	.check_options = GcpCheckOptions,
	.check_key = GcpCheckKey,
	.wrap = GcpWrap,
	.unwrap = GcpUnwrap,
	.rewrap = GcpRewrap,
	.needs_rewrap = GcpNeedsRewrap,
};
