/*
 * kms/aws.c
 *
 * The aws_kms provider: AWS Key Management Service over its documented
 * JSON 1.1 API (POST /, X-Amz-Target: TrentService.<Operation>,
 * Content-Type: application/x-amz-json-1.1):
 *
 *   Encrypt      {KeyId, Plaintext, EncryptionContext} -> {CiphertextBlob, KeyId}
 *   Decrypt      {CiphertextBlob, EncryptionContext}   -> {Plaintext, KeyId}
 *   ReEncrypt    {CiphertextBlob, SourceEncryptionContext, DestinationKeyId,
 *                 DestinationEncryptionContext}        -> {CiphertextBlob, KeyId}
 *   DescribeKey  {KeyId}                               -> {KeyMetadata: {Arn}}
 *
 * Requests are signed with Signature Version 4 by libcurl itself
 * (CURLOPT_AWS_SIGV4), never by code of ours.
 *
 * The wrapped DEK is KMS's CiphertextBlob, as bytes.  The key name and DEK
 * version are bound as the EncryptionContext {"keysmith_key": <name>,
 * "keysmith_dek_version": "<N>"}: readable in CloudTrail, and usable in IAM
 * conditions (kms:EncryptionContext:keysmith_key).
 *
 * KEK versions.  AWS does not show the version of a key's backing
 * material; automatic rotation keeps the old material, so nothing needs
 * rewrapping after it.  What can change is which KMS key kms_key means: an
 * alias repointed at a new key is AWS's manual rotation.  So the KEK
 * version keysmith records is the key ARN Encrypt answers with, and a
 * wrapped DEK needs rewrapping when DescribeKey(kms_key) names another ARN.
 * rewrap is ReEncrypt: the DEK never leaves KMS.
 *
 * Credentials come from the standard shared credentials file
 * (credentials_file, default $AWS_SHARED_CREDENTIALS_FILE or
 * ~/.aws/credentials of the server's OS user), section profile (default
 * "default"): aws_access_key_id, aws_secret_access_key and, for temporary
 * credentials, aws_session_token.  The file is read at every call, so
 * whatever refreshes it is seen at once.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "remote.h"

#define AWS_FILE_MAX (64 * 1024)
#define AWS_FIELD_MAX 2048

static const char *const AwsOptions[] = {"region", "endpoint", "credentials_file", "profile", "ca_file",
"timeout_ms", NULL};

/* Letters, digits and the characters in extra; 1 to max bytes. */
static int
Plain(const char *s, size_t max, const char *extra)
{
	size_t		n = strlen(s);

	if (n == 0 || n > max)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char) s[i]) && strchr(extra, s[i]) == NULL)
			return 0;
	return 1;
}

static KsStatus
AwsCheckOptions(const KsKmsInstance *kms, KsError *err)
{
	const char *region = KsKmsOptionValue(kms, "region");
	const char *profile = KsKmsOptionValue(kms, "profile");

	if (region == NULL || !Plain(region, 32, "-"))
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "aws_kms needs option region, such as \"eu-west-1\"");
	if (KsKmsOptionValue(kms, "endpoint") && KsHttpCheckUrl(kms, "endpoint", err) != KS_OK)
		return err->status;
	if (profile && !Plain(profile, 64, "_-.@+"))
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "option profile must be a profile name of the credentials file");
	return KsHttpCheckTimeout(kms, err);
}

static KsStatus
AwsCheckKey(const KsKmsInstance *kms, const char *kms_key, KsError *err)
{
	if (kms_key == NULL || !Plain(kms_key, 256, "-_/:."))
		return KsFail(err, KS_ERR_INVALID_ARGUMENT,
					  "a key of KMS type aws_kms needs kms_key, a KMS key id, key ARN, alias name or alias ARN");
	return KS_OK;
}

/*
 * Credentials from the shared credentials file: an INI file of [profile]
 * sections with "name = value" lines; # and ; start comments.
 */
typedef struct AwsCredentials
{
	char		keys[2 * AWS_FIELD_MAX + 2];	/* "<key id>:<secret>" for libcurl */
	char		token[AWS_FIELD_MAX + 1];	/* session token, or "" */
} AwsCredentials;

static char *
Trim(char *s)
{
	char	   *e;

	while (isspace((unsigned char) *s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char) e[-1]))
		*--e = '\0';
	return s;
}

static KsStatus
ReadCredentials(const KsKmsInstance *kms, AwsCredentials *cred, KsError *err)
{
	const char *path = KsKmsOptionValue(kms, "credentials_file");
	const char *profile = KsKmsOptionValue(kms, "profile");
	char		dflt[1024];
	char	   *text;
	char	   *line;
	char	   *save = NULL;
	char		id[AWS_FIELD_MAX + 1] = "";
	char		secret[AWS_FIELD_MAX + 1] = "";
	int			in = 0;
	FILE	   *f;
	size_t		n;

	if (profile == NULL)
		profile = "default";
	if (path == NULL)
	{
		const char *env = getenv("AWS_SHARED_CREDENTIALS_FILE");
		const char *home = getenv("HOME");

		if (env && *env)
			snprintf(dflt, sizeof(dflt), "%s", env);
		else
			snprintf(dflt, sizeof(dflt), "%s/.aws/credentials", home ? home : "");
		path = dflt;
	}
	memset(cred, 0, sizeof(*cred));
	text = malloc(AWS_FILE_MAX + 1);
	if (text == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	f = fopen(path, "r");
	if (f == NULL)
	{
		free(text);
		return KsFail(err, KS_ERR_KMS_DENIED, "KMS provider \"%s\": could not read credentials_file \"%s\"",
					  kms->name, path);
	}
	n = fread(text, 1, AWS_FILE_MAX, f);
	fclose(f);
	text[n] = '\0';
	for (line = strtok_r(text, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save))
	{
		char	   *l = Trim(line);
		char	   *eq;

		if (*l == '#' || *l == ';' || *l == '\0')
			continue;
		if (*l == '[')
		{
			char	   *close = strchr(l, ']');

			if (close)
				*close = '\0';
			in = strcmp(Trim(l + 1), profile) == 0;
			continue;
		}
		if (!in || (eq = strchr(l, '=')) == NULL)
			continue;
		*eq = '\0';
		l = Trim(l);
		if (strcmp(l, "aws_access_key_id") == 0)
			snprintf(id, sizeof(id), "%s", Trim(eq + 1));
		else if (strcmp(l, "aws_secret_access_key") == 0)
			snprintf(secret, sizeof(secret), "%s", Trim(eq + 1));
		else if (strcmp(l, "aws_session_token") == 0)
			snprintf(cred->token, sizeof(cred->token), "%s", Trim(eq + 1));
	}
	KsWipe(text, AWS_FILE_MAX + 1);
	free(text);
	if (id[0] == '\0' || secret[0] == '\0' || strchr(id, ':') != NULL)
	{
		KsWipe(secret, sizeof(secret));
		KsWipe(cred, sizeof(*cred));
		return KsFail(err, KS_ERR_KMS_DENIED,
					  "KMS provider \"%s\": profile \"%s\" of credentials_file \"%s\" has no aws_access_key_id and aws_secret_access_key",
					  kms->name, profile, path);
	}
	snprintf(cred->keys, sizeof(cred->keys), "%s:%s", id, secret);
	KsWipe(secret, sizeof(secret));
	return KS_OK;
}

/* AWS's error type, without a namespace ("...#AccessDeniedException"). */
static const char *
ErrorType(json_t *root)
{
	const char *t = json_string_value(json_object_get(root, "__type"));
	const char *hash = t ? strrchr(t, '#') : NULL;

	return hash ? hash + 1 : (t ? t : "");
}

/* AWS KMS throttles with HTTP 400: retried like a 429. */
static int
AwsRetryable(long status, const char *body)
{
	return status == 400 && (strstr(body, "ThrottlingException") != NULL ||
							 strstr(body, "LimitExceededException") != NULL);
}

static int
OneOf(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(s, *list) == 0)
			return 1;
	return 0;
}

static const char *const DeniedTypes[] = {
	"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
	"IncompleteSignature", "ExpiredTokenException", "MissingAuthenticationToken",
	"InvalidClientTokenId", "DisabledException", "KMSInvalidStateException", "NotFoundException",
	"InvalidKeyUsageException", NULL
};

/* One call of operation op with the JSON body; the answer's JSON on success. */
static KsStatus
AwsCall(const KsKmsInstance *kms, const char *op, json_t *body, json_t **answer, KsError *err)
{
	const char *region = KsKmsOptionValue(kms, "region");
	const char *endpoint = KsKmsOptionValue(kms, "endpoint");
	char		url[600];
	char		sigv4[64];
	char		target[64];
	char	   *token_header = NULL;
	char	   *text;
	AwsCredentials cred;
	KsHttpRequest req = {0};
	KsHttpResponse resp;
	KsStatus	st;
	json_t	   *root;

	*answer = NULL;
	text = json_dumps(body, JSON_COMPACT);
	if (text == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	if ((st = ReadCredentials(kms, &cred, err)) != KS_OK)
	{
		KsWipe(text, strlen(text));
		free(text);
		return st;
	}
	if (endpoint)
		snprintf(url, sizeof(url), "%s/", endpoint);
	else
		snprintf(url, sizeof(url), "https://kms.%s.amazonaws.com/", region);
	snprintf(sigv4, sizeof(sigv4), "aws:amz:%s:kms", region);
	snprintf(target, sizeof(target), "X-Amz-Target: TrentService.%s", op);
	req.method = "POST";
	req.url = url;
	req.headers[req.nheaders++] = "Content-Type: application/x-amz-json-1.1";
	req.headers[req.nheaders++] = target;
	if (cred.token[0])
	{
		token_header = malloc(strlen(cred.token) + 32);
		if (token_header == NULL)
		{
			KsWipe(&cred, sizeof(cred));
			KsWipe(text, strlen(text));
			free(text);
			return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
		}
		sprintf(token_header, "X-Amz-Security-Token: %s", cred.token);
		req.headers[req.nheaders++] = token_header;
	}
	req.body = text;
	req.ca_file = KsKmsOptionValue(kms, "ca_file");
	req.timeout_ms = KsHttpTimeoutMs(kms);
	req.provider = kms->name;
	req.aws_sigv4 = sigv4;
	req.aws_keys = cred.keys;
	req.retryable = AwsRetryable;
	st = KsHttpDo(&req, &resp, err);
	KsWipe(&cred, sizeof(cred));
	if (token_header)
	{
		KsWipe(token_header, strlen(token_header));
		free(token_header);
	}
	KsWipe(text, strlen(text));
	free(text);
	if (st != KS_OK)
		return st;
	root = json_loads(resp.body, 0, NULL);
	if (resp.status != 200)
	{
		long		status = resp.status;
		char		type[80];
		char		msg[160];
		json_t	   *m = root ? json_object_get(root, "message") : NULL;

		if (m == NULL && root)
			m = json_object_get(root, "Message");
		snprintf(type, sizeof(type), "%s", root ? ErrorType(root) : "");
		snprintf(msg, sizeof(msg), "%s", json_is_string(m) ? json_string_value(m) : "no message");
		if (root)
			json_decref(root);
		KsHttpResponseFree(&resp);
		if (status == 401 || status == 403 || OneOf(type, DeniedTypes))
			return KsFail(err, KS_ERR_KMS_DENIED, "KMS provider \"%s\" denied the request (HTTP %ld, %s): %s",
						  kms->name, status, type[0] ? type : "no error type", msg);
		if (strcmp(type, "InvalidCiphertextException") == 0 || strcmp(type, "IncorrectKeyException") == 0)
			return KsFail(err, KS_ERR_UNWRAP_FAILED,
						  "KMS provider \"%s\": the wrapped data key does not authenticate (%s)", kms->name, type);
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" answered HTTP %ld (%s): %s",
					  kms->name, status, type[0] ? type : "no error type", msg);
	}
	KsHttpResponseFree(&resp);
	if (root == NULL || !json_is_object(root))
	{
		if (root)
			json_decref(root);
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" answered something that is not AWS's JSON",
					  kms->name);
	}
	*answer = root;
	return KS_OK;
}

/* The EncryptionContext that binds aad (a KsDekBindingAad). */
static json_t *
Context(const uint8_t *aad, size_t aad_len)
{
	char		name[256];
	char		version[16];
	uint32_t	v;

	if (!KsDekBindingParse(aad, aad_len, name, sizeof(name), &v))
		return NULL;
	snprintf(version, sizeof(version), "%u", v);
	return json_pack("{s:s, s:s}", "keysmith_key", name, "keysmith_dek_version", version);
}

/*
 * From an answer: CiphertextBlob, decoded into out, and KeyId (the key ARN)
 * into kek_version.
 */
static KsStatus
TakeCiphertext(const KsKmsInstance *kms, json_t *answer, uint8_t *out, size_t *out_len,
			   char *kek_version, KsError *err)
{
	const char *blob = json_string_value(json_object_get(answer, "CiphertextBlob"));
	const char *arn = json_string_value(json_object_get(answer, "KeyId"));
	long		n = blob ? KsUnbase64(blob, out, KS_WRAPPED_MAX) : -1;

	if (n <= 0 || arn == NULL || strlen(arn) >= KS_KEK_VERSION_LEN)
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE,
					  "KMS provider \"%s\" answered no usable CiphertextBlob and KeyId", kms->name);
	*out_len = (size_t) n;
	snprintf(kek_version, KS_KEK_VERSION_LEN, "%s", arn);
	return KS_OK;
}

static KsStatus
AwsWrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *dek, size_t dek_len,
		const uint8_t *aad, size_t aad_len, uint8_t *out, size_t *out_len, char *kek_version, KsError *err)
{
	char	   *pt;
	json_t	   *ctx;
	json_t	   *req;
	json_t	   *answer;
	KsStatus	st;

	if (dek_len != KS_DEK_LEN)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "a data key must be %d bytes", KS_DEK_LEN);
	if ((ctx = Context(aad, aad_len)) == NULL)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "aws_kms binds only keysmith's data-key bindings");
	pt = KsBase64(dek, dek_len);
	if (pt == NULL)
		json_decref(ctx);
	req = pt ? json_pack("{s:s, s:s, s:o}", "KeyId", kms_key, "Plaintext", pt, "EncryptionContext", ctx) : NULL;
	if (pt)
	{
		KsWipe(pt, strlen(pt));
		free(pt);
	}
	if (req == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	st = AwsCall(kms, "Encrypt", req, &answer, err);
	{
		/* jansson keeps its own copy of the plaintext string */
		json_t	   *p = json_object_get(req, "Plaintext");

		KsWipe((void *) json_string_value(p), json_string_length(p));
	}
	json_decref(req);
	if (st != KS_OK)
		return st;
	st = TakeCiphertext(kms, answer, out, out_len, kek_version, err);
	json_decref(answer);
	return st;
}

static KsStatus
AwsUnwrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *wrapped, size_t wrapped_len,
		  const uint8_t *aad, size_t aad_len, uint8_t *dek, size_t dek_len, KsError *err)
{
	char	   *blob;
	json_t	   *ctx;
	json_t	   *req;
	json_t	   *answer;
	KsStatus	st;

	if (wrapped_len == 0 || wrapped_len > KS_WRAPPED_MAX)
		return KsFail(err, KS_ERR_WRAP_MALFORMED, "wrapped data key is not an AWS KMS ciphertext");
	if ((ctx = Context(aad, aad_len)) == NULL)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "aws_kms binds only keysmith's data-key bindings");
	blob = KsBase64(wrapped, wrapped_len);
	if (blob == NULL)
		json_decref(ctx);
	req = blob ? json_pack("{s:s, s:o}", "CiphertextBlob", blob, "EncryptionContext", ctx) : NULL;
	free(blob);
	if (req == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	st = AwsCall(kms, "Decrypt", req, &answer, err);
	json_decref(req);
	if (st != KS_OK)
		return st;
	st = KsTakeDek(kms, json_string_value(json_object_get(answer, "Plaintext")), dek, dek_len, err);
	json_decref(answer);
	return st;
}

/* ReEncrypt: the DEK never leaves KMS. */
static KsStatus
AwsRewrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *wrapped, size_t wrapped_len,
		  const uint8_t *aad, size_t aad_len, uint8_t *out, size_t *out_len, char *kek_version, KsError *err)
{
	char	   *blob;
	json_t	   *src;
	json_t	   *dst;
	json_t	   *req;
	json_t	   *answer;
	KsStatus	st;

	if (wrapped_len == 0 || wrapped_len > KS_WRAPPED_MAX)
		return KsFail(err, KS_ERR_WRAP_MALFORMED, "wrapped data key is not an AWS KMS ciphertext");
	src = Context(aad, aad_len);
	dst = Context(aad, aad_len);
	if (src == NULL || dst == NULL)
	{
		json_decref(src);
		json_decref(dst);
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "aws_kms binds only keysmith's data-key bindings");
	}
	blob = KsBase64(wrapped, wrapped_len);
	if (blob == NULL)
	{
		json_decref(src);
		json_decref(dst);
	}
	req = blob ? json_pack("{s:s, s:o, s:s, s:o}", "CiphertextBlob", blob, "SourceEncryptionContext", src,
						   "DestinationKeyId", kms_key, "DestinationEncryptionContext", dst) : NULL;
	free(blob);
	if (req == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	st = AwsCall(kms, "ReEncrypt", req, &answer, err);
	json_decref(req);
	if (st != KS_OK)
		return st;
	st = TakeCiphertext(kms, answer, out, out_len, kek_version, err);
	json_decref(answer);
	return st;
}

/* Does kms_key still name the key whose ARN is kek_version? */
static KsStatus
AwsNeedsRewrap(const KsKmsInstance *kms, const char *kms_key, const char *kek_version, int *needs,
			   KsError *err)
{
	json_t	   *req = json_pack("{s:s}", "KeyId", kms_key);
	json_t	   *answer;
	const char *arn;
	KsStatus	st;

	if (req == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	st = AwsCall(kms, "DescribeKey", req, &answer, err);
	json_decref(req);
	if (st != KS_OK)
		return st;
	arn = json_string_value(json_object_get(json_object_get(answer, "KeyMetadata"), "Arn"));
	if (arn == NULL)
	{
		json_decref(answer);
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" did not say the key's ARN", kms->name);
	}
	*needs = strcmp(arn, kek_version) != 0;
	json_decref(answer);
	return KS_OK;
}

const KsKmsProvider KsAwsKmsProvider = {
	.type = "aws_kms",
	.shared_cache = 1,
	.option_names = AwsOptions,
	.check_options = AwsCheckOptions,
	.check_key = AwsCheckKey,
	.wrap = AwsWrap,
	.unwrap = AwsUnwrap,
	.rewrap = AwsRewrap,
	.needs_rewrap = AwsNeedsRewrap,
};
