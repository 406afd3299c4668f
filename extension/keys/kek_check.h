/*
 * extension/keys/kek_check.h
 *
 * Wrong key material never leads to writes (extension/keys/kek_check.c):
 * every KEK version a database wraps under is known by a check value in
 * keysmith.kek_check, and a wrap under another key of the same name and
 * version is refused (KS019).  extension/keys/key_verify.c adds the checks
 * that need the DEK cache: no new DEK version while none of a key's live
 * versions unwraps, and keysmith.verify_keys().
 */
#ifndef KEYSMITH_KEK_CHECK_H
#define KEYSMITH_KEK_CHECK_H

#include "postgres.h"

#include "kms/kms.h"

/*
 * After a wrap by inst (provider `provider`, kms_key) of a DEK bound by
 * aad: the blob must open under a KEK version whose check value is the one
 * recorded, or, for a version new to the database, one the recorded
 * versions (or, for the first record, the live DEKs) vouch for; it is then
 * recorded.  Else ERROR KS019 (and one WARNING per backend).  Nothing for
 * providers that cannot tell their keys apart (kek_check NULL) and before
 * catalog 0.11.  Runs inside a key operation (SPI as the tables' owner).
 */
extern void KsKekCheckWrap(const KsKmsInstance *inst, const char *provider, const char *kms_key,
						   const uint8 *wrapped, size_t wrapped_len, const uint8 *aad, size_t aad_len);

/*
 * A DEK of key `name` did not authenticate under its KEK: ERROR KS008 with
 * a hint telling a different key (the recorded check value differs) from
 * an altered wrapped DEK (it matches).  err holds the provider's message.
 */
extern void KsKekReportUnwrapFailure(const KsKmsInstance *inst, const char *provider, const char *kms_key,
									 const uint8 *wrapped, size_t wrapped_len, const uint8 *aad, size_t aad_len,
									 const KsError *err) pg_attribute_noreturn();

#endif							/* KEYSMITH_KEK_CHECK_H */
