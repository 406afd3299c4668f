/*
 * extension/keys/key_verify.h
 *
 * Checks that need the DEK cache (extension/keys/key_verify.c): before a
 * key gets a new DEK version, one of its live versions must open with the
 * key material at hand; and keysmith.verify_keys(), the restore check.
 */
#ifndef KEYSMITH_KEY_VERIFY_H
#define KEYSMITH_KEY_VERIFY_H

/* Register the key store's checks (at preload). */
extern void KsKeyVerifyInit(void);

/*
 * Before a wrap under (kms, kms_key) of a provider that records no KEK
 * check value: if data keys of this database are under that KMS key, one
 * of them (up to 8 tried) must open with it; if none does and the KMS
 * answered for one (KS008, KS017 or KS007, not unavailable or denied),
 * ERROR KS019.  A KMS of the same key name that
 * holds other key material (a fresh Vault, another AWS account behind the
 * same alias) is so refused before anything is wrapped under it.
 */
extern void KsKeyVerifyKmsKey(const char *kms, const char *kms_key);

#endif							/* KEYSMITH_KEY_VERIFY_H */
