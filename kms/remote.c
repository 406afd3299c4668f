/*
 * kms/remote.c
 *
 * What the external KMS providers share beyond HTTP (see remote.h).
 */
#include <stdio.h>
#include <string.h>

#include "remote.h"

KsStatus
KsTakeDek(const KsKmsInstance *kms, const char *b64, uint8_t *dek, size_t dek_len, KsError *err)
{
	uint8_t		buf[128];
	long		n = b64 ? KsUnbase64(b64, buf, sizeof(buf)) : -1;

	if (b64)
		KsWipe((void *) b64, strlen(b64));
	if (n != (long) dek_len)
	{
		KsWipe(buf, sizeof(buf));
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" answered a data key of the wrong length",
					  kms->name);
	}
	memcpy(dek, buf, dek_len);
	KsWipe(buf, sizeof(buf));
	return KS_OK;
}

KsStatus
KsUnwrapThenWrap(const KsKmsProvider *p, const KsKmsInstance *kms, const char *kms_key,
				 const uint8_t *wrapped, size_t wrapped_len, const uint8_t *aad, size_t aad_len,
				 uint8_t *out, size_t *out_len, char *kek_version, KsError *err)
{
	uint8_t		dek[KS_DEK_LEN];
	KsStatus	st = p->unwrap(kms, kms_key, wrapped, wrapped_len, aad, aad_len, dek, sizeof(dek), err);

	if (st == KS_OK)
		st = p->wrap(kms, kms_key, dek, sizeof(dek), aad, aad_len, out, out_len, kek_version, err);
	KsWipe(dek, sizeof(dek));
	return st;
}

KsStatus
KsJsonApiAnswer(const KsKmsInstance *kms, long status, json_t **answer, const char *code_key,
				int unwrapping, const char *service, KsError *err)
{
	json_t	   *e;
	char		code[64];
	char		msg[160];

	if (status == 200 && *answer != NULL && json_is_object(*answer))
		return KS_OK;
	e = *answer ? json_object_get(*answer, "error") : NULL;
	snprintf(code, sizeof(code), "%s", json_is_string(json_object_get(e, code_key)) ?
			 json_string_value(json_object_get(e, code_key)) : "no error code");
	snprintf(msg, sizeof(msg), "%s", json_is_string(json_object_get(e, "message")) ?
			 json_string_value(json_object_get(e, "message")) : "no message");
	if (*answer)
		json_decref(*answer);
	*answer = NULL;
	if (status == 200)
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" answered something that is not %s's JSON",
					  kms->name, service);
	if (status == 401 || status == 403 || status == 404)
		return KsFail(err, KS_ERR_KMS_DENIED, "KMS provider \"%s\" denied the request (HTTP %ld, %s): %s",
					  kms->name, status, code, msg);
	if (status == 400 && unwrapping)
		return KsFail(err, KS_ERR_UNWRAP_FAILED,
					  "KMS provider \"%s\": the wrapped data key does not authenticate (%s)", kms->name, code);
	return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" answered HTTP %ld (%s): %s",
				  kms->name, status, code, msg);
}
