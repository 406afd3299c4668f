/*
 * extension/keys/key_verify.h
 *
 * Checks that need the DEK cache (extension/keys/key_verify.c): before a
 * key gets a new DEK version, one of its live versions must open with the
 * key material at hand; and keysmith.verify_keys(), the restore check.
 */
#ifndef KEYSMITH_KEY_VERIFY_H
#define KEYSMITH_KEY_VERIFY_H

/* Register the new-version check with the key store (at preload). */
extern void KsKeyVerifyInit(void);

#endif							/* KEYSMITH_KEY_VERIFY_H */
