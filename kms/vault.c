/*
 * kms/vault.c
 *
 * The vault_transit provider: HashiCorp Vault's (or OpenBao's) Transit
 * secrets engine, over its documented HTTP API:
 *
 *   POST /v1/<mount>/encrypt/<key>   {"plaintext", "associated_data"}
 *   POST /v1/<mount>/decrypt/<key>   {"ciphertext", "associated_data"}
 *   GET  /v1/<mount>/keys/<key>      data.latest_version
 *
 * The wrapped DEK is Transit's ciphertext string, "vault:v<N>:<base64>";
 * N is the KEK version.  The key name and DEK version are bound as
 * associated_data (the Transit key must be of an AEAD type, such as the
 * default aes256-gcm96).
 *
 * KEK rotation decrypts and encrypts again.  Transit's own rewrap endpoint
 * takes no associated_data (Vault ignores the parameter with a warning),
 * so rewrapping a value encrypted with associated data fails to
 * authenticate; binding through a derived key's context instead would tie
 * every key to derivation.  The DEK is in this process's memory only for
 * the two calls, then wiped, as when it is unwrapped for use.
 *
 * Auth: X-Vault-Token, read from token_file at every call (Vault Agent
 * rewrites that file as tokens renew), and X-Vault-Namespace when set.
 * Errors come from Vault's "errors" array; 403 is denied.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "remote.h"

#define VAULT_TOKEN_MAX 4096

static const char *const VaultOptions[] = {"url", "mount", "token_file", "namespace", "ca_file", "timeout_ms", NULL};

/* A name of letters, digits, _ - . (and / in a path), of 1 to max bytes. */
static int
SafeName(const char *s, size_t max, int slashes)
{
	size_t		n = strlen(s);

	if (n == 0 || n > max)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!(isalnum((unsigned char) s[i]) || s[i] == '_' || s[i] == '-' || s[i] == '.' ||
			  (s[i] == '/' && slashes)))
			return 0;
	return 1;
}

static KsStatus
VaultCheckOptions(const KsKmsInstance *kms, KsError *err)
{
	const char *mount = KsKmsOptionValue(kms, "mount");

	if (KsHttpCheckUrl(kms, "url", err) != KS_OK)
		return err->status;
	if (KsKmsOptionValue(kms, "token_file") == NULL)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT,
					  "vault_transit needs option token_file, a file holding the Vault token");
	if (mount && !SafeName(mount, 256, 1))
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "option mount must be a Vault mount path");
	return KsHttpCheckTimeout(kms, err);
}

static KsStatus
VaultCheckKey(const KsKmsInstance *kms, const char *kms_key, KsError *err)
{
	if (kms_key == NULL || !SafeName(kms_key, 128, 0))
		return KsFail(err, KS_ERR_INVALID_ARGUMENT,
					  "a key of KMS type vault_transit needs kms_key, the name of its Transit key (letters, digits, _ - .)");
	return KS_OK;
}

/* Vault's first error message, or a fallback; never the request. */
static void
VaultErrors(const char *body, char *out, size_t outlen)
{
	json_t	   *root = json_loads(body, 0, NULL);
	json_t	   *errors = root ? json_object_get(root, "errors") : NULL;
	json_t	   *first = errors ? json_array_get(errors, 0) : NULL;

	snprintf(out, outlen, "%s", first && json_is_string(first) ? json_string_value(first) : "no error message");
	if (root)
		json_decref(root);
}

/*
 * One call: method on /v1/<mount>/<path>, with body (or NULL); on success
 * the "data" object of the answer, to json_decref.
 */
static KsStatus
VaultCall(const KsKmsInstance *kms, const char *method, const char *path, const char *body,
		  json_t **data, KsError *err)
{
	const char *mount = KsKmsOptionValue(kms, "mount");
	const char *ns = KsKmsOptionValue(kms, "namespace");
	char		url[1024];
	char		token[VAULT_TOKEN_MAX + 1];
	char	   *token_header;
	char		ns_header[512];
	KsHttpRequest req = {0};
	KsHttpResponse resp;
	KsStatus	st;
	json_t	   *root;

	*data = NULL;
	snprintf(url, sizeof(url), "%s/v1/%s/%s", KsKmsOptionValue(kms, "url"), mount ? mount : "transit", path);
	/* read at every call: Vault Agent rewrites the file as tokens renew */
	if ((st = KsReadSecretFile(kms, "token_file", token, VAULT_TOKEN_MAX, err)) != KS_OK)
		return st;
	token_header = malloc(strlen(token) + 32);
	if (token_header == NULL)
	{
		KsWipe(token, sizeof(token));
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	}
	sprintf(token_header, "X-Vault-Token: %s", token);
	KsWipe(token, sizeof(token));
	req.method = method;
	req.url = url;
	req.headers[req.nheaders++] = token_header;
	req.headers[req.nheaders++] = "Content-Type: application/json";
	if (ns)
	{
		snprintf(ns_header, sizeof(ns_header), "X-Vault-Namespace: %s", ns);
		req.headers[req.nheaders++] = ns_header;
	}
	req.body = body;
	req.ca_file = KsKmsOptionValue(kms, "ca_file");
	req.timeout_ms = KsHttpTimeoutMs(kms);
	req.provider = kms->name;
	st = KsHttpDo(&req, &resp, err);
	KsWipe(token_header, strlen(token_header));
	free(token_header);
	if (st != KS_OK)
		return st;
	if (resp.status != 200)
	{
		char		msg[160];
		long		status = resp.status;

		VaultErrors(resp.body, msg, sizeof(msg));
		KsHttpResponseFree(&resp);
		if (status == 401 || status == 403)
			return KsFail(err, KS_ERR_KMS_DENIED, "KMS provider \"%s\" denied the request (HTTP %ld): %s",
						  kms->name, status, msg);
		if (status == 400 && strstr(msg, "message authentication failed") != NULL)
			return KsFail(err, KS_ERR_UNWRAP_FAILED,
						  "KMS provider \"%s\": the wrapped data key does not authenticate: %s", kms->name, msg);
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" answered HTTP %ld: %s",
					  kms->name, status, msg);
	}
	root = json_loads(resp.body, 0, NULL);
	KsHttpResponseFree(&resp);
	if (root == NULL || !json_is_object(json_object_get(root, "data")))
	{
		if (root)
			json_decref(root);
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" answered something that is not Vault's JSON",
					  kms->name);
	}
	*data = json_incref(json_object_get(root, "data"));
	json_decref(root);
	return KS_OK;
}

/* The KEK version of a Transit ciphertext "vault:v<N>:...", or 0. */
static long
CiphertextVersion(const char *ct, size_t len)
{
	char	   *end;
	long		v;

	if (len < 10 || strncmp(ct, "vault:v", 7) != 0)
		return 0;
	v = strtol(ct + 7, &end, 10);
	return (end < ct + len && *end == ':' && v > 0) ? v : 0;
}

static KsStatus
Encrypt(const KsKmsInstance *kms, const char *kms_key, const uint8_t *dek, size_t dek_len,
		const uint8_t *aad, size_t aad_len, uint8_t *out, size_t *out_len, char *kek_version, KsError *err)
{
	char	   *pt = KsBase64(dek, dek_len);
	char	   *ad = KsBase64(aad, aad_len);
	char		path[256];
	char	   *body;
	json_t	   *data;
	json_t	   *req;
	const char *ct;
	size_t		ctlen;
	long		version;
	KsStatus	st;

	if (pt == NULL || ad == NULL)
	{
		free(pt);
		free(ad);
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	}
	req = json_pack("{s:s, s:s}", "plaintext", pt, "associated_data", ad);
	KsWipe(pt, strlen(pt));
	free(pt);
	free(ad);
	body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	if (req)
	{
		/* jansson keeps its own copy of the plaintext string */
		json_t	   *p = json_object_get(req, "plaintext");

		KsWipe((void *) json_string_value(p), json_string_length(p));
		json_decref(req);
	}
	if (body == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	snprintf(path, sizeof(path), "encrypt/%s", kms_key);
	st = VaultCall(kms, "POST", path, body, &data, err);
	KsWipe(body, strlen(body));
	free(body);
	if (st != KS_OK)
		return st;
	ct = json_string_value(json_object_get(data, "ciphertext"));
	ctlen = ct ? strlen(ct) : 0;
	version = ct ? CiphertextVersion(ct, ctlen) : 0;
	if (version == 0 || ctlen > KS_WRAPPED_MAX)
	{
		json_decref(data);
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" answered no usable Transit ciphertext",
					  kms->name);
	}
	memcpy(out, ct, ctlen);
	*out_len = ctlen;
	snprintf(kek_version, KS_KEK_VERSION_LEN, "%ld", version);
	json_decref(data);
	return KS_OK;
}

static KsStatus
VaultWrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *dek, size_t dek_len,
		  const uint8_t *aad, size_t aad_len, uint8_t *out, size_t *out_len, char *kek_version, KsError *err)
{
	if (dek_len != KS_DEK_LEN)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "a data key must be %d bytes", KS_DEK_LEN);
	return Encrypt(kms, kms_key, dek, dek_len, aad, aad_len, out, out_len, kek_version, err);
}

static KsStatus
VaultUnwrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *wrapped, size_t wrapped_len,
			const uint8_t *aad, size_t aad_len, uint8_t *dek, size_t dek_len, KsError *err)
{
	char		ct[KS_WRAPPED_MAX + 1];
	char	   *ad;
	char		path[256];
	char	   *body;
	json_t	   *req;
	json_t	   *data;
	KsStatus	st;

	if (wrapped_len > KS_WRAPPED_MAX || CiphertextVersion((const char *) wrapped, wrapped_len) == 0)
		return KsFail(err, KS_ERR_WRAP_MALFORMED, "wrapped data key is not a Transit ciphertext");
	memcpy(ct, wrapped, wrapped_len);
	ct[wrapped_len] = '\0';
	ad = KsBase64(aad, aad_len);
	req = ad ? json_pack("{s:s, s:s}", "ciphertext", ct, "associated_data", ad) : NULL;
	free(ad);
	body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	if (req)
		json_decref(req);
	if (body == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	snprintf(path, sizeof(path), "decrypt/%s", kms_key);
	st = VaultCall(kms, "POST", path, body, &data, err);
	free(body);
	if (st != KS_OK)
		return st;
	st = KsTakeDek(kms, json_string_value(json_object_get(data, "plaintext")), dek, dek_len, err);
	json_decref(data);
	return st;
}

/* Decrypt, then encrypt under the newest version: see the header. */
static KsStatus
VaultRewrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *wrapped, size_t wrapped_len,
			const uint8_t *aad, size_t aad_len, uint8_t *out, size_t *out_len, char *kek_version, KsError *err)
{
	return KsUnwrapThenWrap(&KsVaultTransitProvider, kms, kms_key, wrapped, wrapped_len, aad, aad_len,
							out, out_len, kek_version, err);
}

static KsStatus
VaultNeedsRewrap(const KsKmsInstance *kms, const char *kms_key, const char *kek_version, int *needs,
				 KsError *err)
{
	char		path[256];
	json_t	   *data;
	json_t	   *latest;
	char		current[32];
	KsStatus	st;

	snprintf(path, sizeof(path), "keys/%s", kms_key);
	st = VaultCall(kms, "GET", path, NULL, &data, err);
	if (st != KS_OK)
		return st;
	latest = json_object_get(data, "latest_version");
	if (!json_is_integer(latest))
	{
		json_decref(data);
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" did not say the key's latest version",
					  kms->name);
	}
	snprintf(current, sizeof(current), "%lld", (long long) json_integer_value(latest));
	json_decref(data);
	*needs = strcmp(current, kek_version) != 0;
	return KS_OK;
}

const KsKmsProvider KsVaultTransitProvider = {
	.type = "vault_transit",
	.shared_cache = 1,
	.option_names = VaultOptions,
	.check_options = VaultCheckOptions,
	.check_key = VaultCheckKey,
	.wrap = VaultWrap,
	.unwrap = VaultUnwrap,
	.rewrap = VaultRewrap,
	.needs_rewrap = VaultNeedsRewrap,
};
