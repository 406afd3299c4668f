/*
 * kms/azure.c
 *
 * The azure_keyvault provider: Azure Key Vault (or Managed HSM) keys, over
 * the documented REST API (api-version 7.4):
 *
 *   POST <vault_url>/keys/<name>[/<version>]/wrapkey    {"alg", "value"} -> {"kid", "value"}
 *   POST <vault_url>/keys/<name>/<version>/unwrapkey    {"alg", "value"} -> {"value"}
 *   GET  <vault_url>/keys/<name>                         {"key": {"kid"}}
 *
 * with an OAuth2 client-credentials token from <authority_url>/<tenant_id>
 * /oauth2/v2.0/token (scope https://vault.azure.net/.default, or
 * https://managedhsm.azure.net/.default for a *.managedhsm.azure.net URL),
 * the client secret read from client_secret_file at every call, the token
 * kept until shortly before it expires (kms/oauth.c).
 *
 * Binding.  wrapkey takes no associated data, so keysmith wraps the DEK
 * followed by a digest of its binding:
 *     payload = DEK (32 bytes) || SHA-256("keysmith-azure-binding" NUL || AAD)
 * where AAD is KsDekBindingAad(key name, DEK version).  Unwrapping checks
 * the digest (in constant time): a wrapped DEK copied to another key or
 * version fails as not authentic.  docs/format.md describes it.
 *
 * The stored blob is 0x01 || len || <key version, len bytes> || <wrapped
 * value>: unwrap calls the same key version, whose URL is built from the
 * provider's vault_url, never from anything stored, so a blob cannot send
 * the token elsewhere.  The KEK version is that key version (a hex id).
 * Key Vault has no rewrap: rotation unwraps then wraps under the newest
 * version.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "oauth.h"
#include "remote.h"

#define AZ_API "api-version=7.4"
#define AZ_SECRET_MAX 4096
#define AZ_PAYLOAD_LEN (KS_DEK_LEN + 32)
#define AZ_VERSION_MAX 64

static const char *const AzureOptions[] = {"vault_url", "tenant_id", "client_id", "client_secret_file",
"authority_url", "algorithm", "ca_file", "timeout_ms", NULL};

static int
Chars(const char *s, size_t min, size_t max, const char *extra)
{
	size_t		n = strlen(s);

	if (n < min || n > max)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char) s[i]) && strchr(extra, s[i]) == NULL)
			return 0;
	return 1;
}

static const char *
Algorithm(const KsKmsInstance *kms)
{
	const char *a = KsKmsOptionValue(kms, "algorithm");

	return a ? a : "RSA-OAEP-256";
}

static KsStatus
AzureCheckOptions(const KsKmsInstance *kms, KsError *err)
{
	const char *tenant = KsKmsOptionValue(kms, "tenant_id");
	const char *client = KsKmsOptionValue(kms, "client_id");
	const char *alg = Algorithm(kms);

	if (KsHttpCheckUrl(kms, "vault_url", err) != KS_OK)
		return err->status;
	if (KsKmsOptionValue(kms, "authority_url") && KsHttpCheckUrl(kms, "authority_url", err) != KS_OK)
		return err->status;
	if (tenant == NULL || !Chars(tenant, 1, 128, "-._"))
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "azure_keyvault needs option tenant_id, the directory (tenant) id");
	if (client == NULL || !Chars(client, 1, 128, "-._"))
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "azure_keyvault needs option client_id, the application (client) id");
	if (KsKmsOptionValue(kms, "client_secret_file") == NULL)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT,
					  "azure_keyvault needs option client_secret_file, a file holding the client secret");
	if (strcmp(alg, "RSA-OAEP-256") != 0 && strcmp(alg, "A256KW") != 0)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT,
					  "option algorithm must be RSA-OAEP-256 (Key Vault RSA keys) or A256KW (Managed HSM AES keys)");
	return KsHttpCheckTimeout(kms, err);
}

/* kms_key: "<name>" or "<name>/<version>". */
static int
SplitKey(const char *kms_key, char *name, char *version)
{
	const char *slash = kms_key ? strchr(kms_key, '/') : NULL;
	size_t		n;

	if (kms_key == NULL)
		return 0;
	n = slash ? (size_t) (slash - kms_key) : strlen(kms_key);
	if (n == 0 || n > 127)
		return 0;
	memcpy(name, kms_key, n);
	name[n] = '\0';
	snprintf(version, AZ_VERSION_MAX + 1, "%s", slash ? slash + 1 : "");
	return Chars(name, 1, 127, "-") && (slash == NULL || Chars(version, 1, AZ_VERSION_MAX, ""));
}

static KsStatus
AzureCheckKey(const KsKmsInstance *kms, const char *kms_key, KsError *err)
{
	char		name[128];
	char		version[AZ_VERSION_MAX + 1];

	if (!SplitKey(kms_key, name, version))
		return KsFail(err, KS_ERR_INVALID_ARGUMENT,
					  "a key of KMS type azure_keyvault needs kms_key, a Key Vault key name (letters, digits, -), optionally /<version>");
	return KS_OK;
}

/* The token request, and what identifies its token. */
typedef struct AzureAuth
{
	const KsKmsInstance *kms;
	char		secret[AZ_SECRET_MAX + 1];
	char		scope[64];
	char		token_url[640];
} AzureAuth;

static KsStatus
AzureTokenBody(void *arg, char **body, KsError *err)
{
	AzureAuth  *a = arg;
	char	   *client = KsFormEncode(KsKmsOptionValue(a->kms, "client_id"));
	char	   *secret = KsFormEncode(a->secret);
	char	   *scope = KsFormEncode(a->scope);

	*body = NULL;
	if (client && secret && scope)
	{
		size_t		n = strlen(client) + strlen(secret) + strlen(scope) + 96;

		*body = malloc(n);
		if (*body)
			snprintf(*body, n, "grant_type=client_credentials&client_id=%s&client_secret=%s&scope=%s",
					 client, secret, scope);
	}
	free(client);
	free(scope);
	if (secret)
	{
		KsWipe(secret, strlen(secret));
		free(secret);
	}
	return *body ? KS_OK : KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
}

static KsStatus
PrepareAuth(const KsKmsInstance *kms, AzureAuth *a, KsBearerAuth *auth, KsError *err)
{
	const char *vault = KsKmsOptionValue(kms, "vault_url");
	const char *authority = KsKmsOptionValue(kms, "authority_url");
	const char *host = strstr(vault, "://") + 3;
	size_t		hostlen = strcspn(host, ":/");
	KsStatus	st;

	memset(a, 0, sizeof(*a));
	a->kms = kms;
	if ((st = KsReadSecretFile(kms, "client_secret_file", a->secret, AZ_SECRET_MAX, err)) != KS_OK)
		return st;
	snprintf(a->scope, sizeof(a->scope), "%s",
			 hostlen > 21 && strncmp(host + hostlen - 21, ".managedhsm.azure.net", 21) == 0 ?
			 "https://managedhsm.azure.net/.default" : "https://vault.azure.net/.default");
	snprintf(a->token_url, sizeof(a->token_url), "%s/%s/oauth2/v2.0/token",
			 authority ? authority : "https://login.microsoftonline.com", KsKmsOptionValue(kms, "tenant_id"));
	auth->token_url = a->token_url;
	KsDigestStrings(auth->cache_key, "azure", a->token_url, KsKmsOptionValue(kms, "client_id"), a->scope,
					a->secret, (const char *) NULL);
	auth->body_fn = AzureTokenBody;
	auth->arg = a;
	return KS_OK;
}

/* One call; the answer's JSON on HTTP 200.  unwrapping: a 400 is not authentic. */
static KsStatus
AzureCall(const KsKmsInstance *kms, const char *method, const char *url, json_t *req, int unwrapping,
		  json_t **answer, KsError *err)
{
	AzureAuth	a;
	KsBearerAuth auth;
	char	   *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	long		status = 0;
	KsStatus	st;

	*answer = NULL;
	if (req && body == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	st = PrepareAuth(kms, &a, &auth, err);
	if (st == KS_OK)
		st = KsBearerCall(kms, &auth, method, url, body, &status, answer, err);
	KsWipe(&a, sizeof(a));
	if (body)
	{
		KsWipe(body, strlen(body));
		free(body);
	}
	if (st != KS_OK)
		return st;
	return KsJsonApiAnswer(kms, status, answer, "code", unwrapping, "Key Vault", err);
}

static void
BindingDigest(const uint8_t *aad, size_t aad_len, uint8_t out[32])
{
	static const char label[] = "keysmith-azure-binding";	/* with its NUL */
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = 0;

	memset(out, 0, 32);
	if (md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
		EVP_DigestUpdate(md, label, sizeof(label)) == 1 &&
		EVP_DigestUpdate(md, aad, aad_len) == 1)
		EVP_DigestFinal_ex(md, out, &len);
	EVP_MD_CTX_free(md);
}

static KsStatus
AzureWrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *dek, size_t dek_len,
		  const uint8_t *aad, size_t aad_len, uint8_t *out, size_t *out_len, char *kek_version, KsError *err)
{
	const char *vault = KsKmsOptionValue(kms, "vault_url");
	char		name[128];
	char		version[AZ_VERSION_MAX + 1];
	char		url[1024];
	char		prefix[800];
	uint8_t		payload[AZ_PAYLOAD_LEN];
	char	   *value;
	json_t	   *req;
	json_t	   *answer;
	const char *kid;
	const char *wrapped;
	uint8_t		raw[KS_WRAPPED_MAX];
	long		n;
	size_t		vlen;
	KsStatus	st;

	if (dek_len != KS_DEK_LEN)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "a data key must be %d bytes", KS_DEK_LEN);
	if (!SplitKey(kms_key, name, version))
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "azure_keyvault: unusable kms_key");
	memcpy(payload, dek, KS_DEK_LEN);
	BindingDigest(aad, aad_len, payload + KS_DEK_LEN);
	value = KsBase64Url(payload, sizeof(payload));
	KsWipe(payload, sizeof(payload));
	req = value ? json_pack("{s:s, s:s}", "alg", Algorithm(kms), "value", value) : NULL;
	if (value)
	{
		KsWipe(value, strlen(value));
		free(value);
	}
	if (req == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	snprintf(url, sizeof(url), "%s/keys/%s%s%s/wrapkey?" AZ_API, vault, name, version[0] ? "/" : "", version);
	st = AzureCall(kms, "POST", url, req, 0, &answer, err);
	{
		json_t	   *v = json_object_get(req, "value");

		KsWipe((void *) json_string_value(v), json_string_length(v));
	}
	json_decref(req);
	if (st != KS_OK)
		return st;
	kid = json_string_value(json_object_get(answer, "kid"));
	wrapped = json_string_value(json_object_get(answer, "value"));
	snprintf(prefix, sizeof(prefix), "%s/keys/%s/", vault, name);
	n = wrapped ? KsUnbase64Url(wrapped, raw, sizeof(raw)) : -1;
	vlen = kid && strncmp(kid, prefix, strlen(prefix)) == 0 ? strlen(kid + strlen(prefix)) : 0;
	if (n <= 0 || vlen == 0 || vlen > AZ_VERSION_MAX || !Chars(kid + strlen(prefix), 1, AZ_VERSION_MAX, "") ||
		2 + vlen + (size_t) n > KS_WRAPPED_MAX)
	{
		json_decref(answer);
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE,
					  "KMS provider \"%s\" answered no usable wrapped key and key version", kms->name);
	}
	out[0] = 1;
	out[1] = (uint8_t) vlen;
	memcpy(out + 2, kid + strlen(prefix), vlen);
	memcpy(out + 2 + vlen, raw, n);
	*out_len = 2 + vlen + (size_t) n;
	snprintf(kek_version, KS_KEK_VERSION_LEN, "%s", kid + strlen(prefix));
	json_decref(answer);
	return KS_OK;
}

static KsStatus
AzureUnwrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *wrapped, size_t wrapped_len,
			const uint8_t *aad, size_t aad_len, uint8_t *dek, size_t dek_len, KsError *err)
{
	char		name[128];
	char		pinned[AZ_VERSION_MAX + 1];
	char		version[AZ_VERSION_MAX + 1];
	char		url[1024];
	char	   *value;
	json_t	   *req;
	json_t	   *answer;
	const char *plain;
	uint8_t		payload[128];
	uint8_t		expect[32];
	long		n;
	size_t		vlen;
	KsStatus	st;

	if (!SplitKey(kms_key, name, pinned))
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "azure_keyvault: unusable kms_key");
	vlen = wrapped_len >= 2 ? wrapped[1] : 0;
	if (wrapped_len < 3 || wrapped[0] != 1 || vlen == 0 || vlen > AZ_VERSION_MAX || 2 + vlen >= wrapped_len)
		return KsFail(err, KS_ERR_WRAP_MALFORMED, "wrapped data key is not a keysmith Key Vault blob");
	memcpy(version, wrapped + 2, vlen);
	version[vlen] = '\0';
	if (!Chars(version, 1, AZ_VERSION_MAX, ""))
		return KsFail(err, KS_ERR_WRAP_MALFORMED, "wrapped data key names no usable key version");
	value = KsBase64Url(wrapped + 2 + vlen, wrapped_len - 2 - vlen);
	req = value ? json_pack("{s:s, s:s}", "alg", Algorithm(kms), "value", value) : NULL;
	free(value);
	if (req == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	snprintf(url, sizeof(url), "%s/keys/%s/%s/unwrapkey?" AZ_API, KsKmsOptionValue(kms, "vault_url"), name, version);
	st = AzureCall(kms, "POST", url, req, 1, &answer, err);
	json_decref(req);
	if (st != KS_OK)
		return st;
	plain = json_string_value(json_object_get(answer, "value"));
	n = plain ? KsUnbase64Url(plain, payload, sizeof(payload)) : -1;
	if (plain)
		KsWipe((void *) plain, strlen(plain));
	json_decref(answer);
	BindingDigest(aad, aad_len, expect);
	if (n != AZ_PAYLOAD_LEN || dek_len != KS_DEK_LEN)
	{
		KsWipe(payload, sizeof(payload));
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" answered a data key of the wrong length",
					  kms->name);
	}
	if (CRYPTO_memcmp(payload + KS_DEK_LEN, expect, 32) != 0)
	{
		KsWipe(payload, sizeof(payload));
		return KsFail(err, KS_ERR_UNWRAP_FAILED,
					  "KMS provider \"%s\": the wrapped data key is bound to another key or version", kms->name);
	}
	memcpy(dek, payload, KS_DEK_LEN);
	KsWipe(payload, sizeof(payload));
	return KS_OK;
}

/* Key Vault has no rewrap: unwrap, then wrap under the newest version. */
static KsStatus
AzureRewrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *wrapped, size_t wrapped_len,
			const uint8_t *aad, size_t aad_len, uint8_t *out, size_t *out_len, char *kek_version, KsError *err)
{
	return KsUnwrapThenWrap(&KsAzureKeyVaultProvider, kms, kms_key, wrapped, wrapped_len, aad, aad_len,
							out, out_len, kek_version, err);
}

/* The current version: the pinned one, else the newest Key Vault names. */
static KsStatus
AzureNeedsRewrap(const KsKmsInstance *kms, const char *kms_key, const char *kek_version, int *needs,
				 KsError *err)
{
	const char *vault = KsKmsOptionValue(kms, "vault_url");
	char		name[128];
	char		version[AZ_VERSION_MAX + 1];
	char		url[1024];
	char		prefix[800];
	json_t	   *answer;
	const char *kid;
	KsStatus	st;

	if (!SplitKey(kms_key, name, version))
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "azure_keyvault: unusable kms_key");
	if (version[0])
	{
		*needs = strcmp(version, kek_version) != 0;
		return KS_OK;
	}
	snprintf(url, sizeof(url), "%s/keys/%s?" AZ_API, vault, name);
	if ((st = AzureCall(kms, "GET", url, NULL, 0, &answer, err)) != KS_OK)
		return st;
	kid = json_string_value(json_object_get(json_object_get(answer, "key"), "kid"));
	snprintf(prefix, sizeof(prefix), "%s/keys/%s/", vault, name);
	if (kid == NULL || strncmp(kid, prefix, strlen(prefix)) != 0)
	{
		json_decref(answer);
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" did not say the key's current version",
					  kms->name);
	}
	*needs = strcmp(kid + strlen(prefix), kek_version) != 0;
	json_decref(answer);
	return KS_OK;
}

const KsKmsProvider KsAzureKeyVaultProvider = {
	.type = "azure_keyvault",
	.shared_cache = 1,
	.option_names = AzureOptions,
	.check_options = AzureCheckOptions,
	.check_key = AzureCheckKey,
	.wrap = AzureWrap,
	.unwrap = AzureUnwrap,
	.rewrap = AzureRewrap,
	.needs_rewrap = AzureNeedsRewrap,
};
