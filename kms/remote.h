/*
 * kms/remote.h
 *
 * What the providers of external KMSs share beyond HTTP (kms/remote.c):
 * reading a data key out of a JSON answer, rotation by unwrap-then-wrap
 * for KMSs without a rewrap call, and the JSON error objects of Azure and
 * Google.  No PostgreSQL headers.
 */
#ifndef KEYSMITH_REMOTE_H
#define KEYSMITH_REMOTE_H

#include <jansson.h>

#include "http.h"

/*
 * The DEK of a KMS answer's base64 field b64 (may be NULL) into dek; the
 * field is wiped.  KS_ERR_KMS_BAD_RESPONSE unless it is exactly dek_len
 * bytes.
 */
extern KsStatus KsTakeDek(const KsKmsInstance *kms, const char *b64, uint8_t *dek, size_t dek_len,
						  KsError *err);

/* rewrap for a KMS without one: p's unwrap, then p's wrap under the newest KEK. */
extern KsStatus KsUnwrapThenWrap(const KsKmsProvider *p, const KsKmsInstance *kms, const char *kms_key,
								 const uint8_t *wrapped, size_t wrapped_len,
								 const uint8_t *aad, size_t aad_len,
								 uint8_t *out, size_t *out_len, char *kek_version, KsError *err);

/*
 * Judge an answer of an API whose errors are {"error": {<code_key>,
 * "message"}} (Azure Key Vault: "code"; Google: "status").  On HTTP 200
 * with a JSON object: KS_OK, *answer kept.  Otherwise *answer is freed
 * and: 401, 403, 404 denied; 400 while unwrapping not authentic; the rest
 * a bad response.  service names the API in messages ("Key Vault").
 */
extern KsStatus KsJsonApiAnswer(const KsKmsInstance *kms, long status, json_t **answer,
								const char *code_key, int unwrapping, const char *service, KsError *err);

#endif							/* KEYSMITH_REMOTE_H */
