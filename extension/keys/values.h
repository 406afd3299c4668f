/*
 * extension/keys/values.h
 *
 * Encrypting and decrypting one value under a keysmith key, with the
 * current user's privileges: the bodies of encrypt_value and
 * decrypt_value_bytea (extension/keys/values.c), for other modules of the
 * extension (the secrets store).
 */
#ifndef KEYSMITH_VALUES_H
#define KEYSMITH_VALUES_H

#include "extension/keys/dek_cache.h"

extern bytea *KsEncryptBytes(const char *name, int name_len, const uint8 *pt, size_t pt_len,
							 const KsContext *context);
extern bytea *KsDecryptBytes(const uint8 *ct, size_t ct_len, const KsContext *context);

#endif							/* KEYSMITH_VALUES_H */
