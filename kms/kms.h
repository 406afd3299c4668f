/*
 * kms/kms.h
 *
 * The key-management interface of keysmith, in plain C with no PostgreSQL
 * headers.  A KMS provider wraps and unwraps data-encryption keys (DEKs)
 * under a key-encryption key (KEK) that it keeps; keysmith never stores an
 * unwrapped DEK.  Every function here reports failure as a KsStatus plus a
 * message written into a caller-supplied KsError; the PostgreSQL glue in
 * extension/ turns those into ereport() calls with a SQLSTATE.  Messages
 * never contain key material, plaintext or credentials.
 *
 * Providers are found by name in a registry (KsKmsLookup).  Each provider
 * is a table of function pointers, so external KMSs (Vault Transit, AWS
 * KMS, PKCS#11, KMIP) slot in beside the local master-key file.
 */
#ifndef KEYSMITH_KMS_H
#define KEYSMITH_KMS_H

#include <stddef.h>
#include <stdint.h>

/* Outcome of a kms/ call.  The glue maps each to one SQLSTATE. */
typedef enum KsStatus
{
	KS_OK = 0,
	KS_ERR_INVALID_ARGUMENT,	/* caller passed something unusable */
	KS_ERR_NO_MEMORY,
	KS_ERR_CRYPTO,				/* the crypto library failed unexpectedly */
	KS_ERR_CT_TRUNCATED,		/* ciphertext shorter than header + tag */
	KS_ERR_CT_VERSION,			/* unknown ciphertext format version */
	KS_ERR_CT_ALGORITHM,		/* unknown algorithm id */
	KS_ERR_AUTH_FAILED,			/* GCM tag did not verify */
	KS_ERR_TOO_LARGE,			/* plaintext larger than the format allows */
	KS_ERR_KEYFILE_MISSING,		/* master key file does not exist */
	KS_ERR_KEYFILE_UNREADABLE,	/* master key file cannot be opened/read */
	KS_ERR_KEYFILE_MALFORMED,	/* bad syntax, bad length, duplicates */
	KS_ERR_KEYFILE_PERMISSIONS, /* group or others may access the file */
	KS_ERR_KEK_VERSION_UNKNOWN, /* wrapped under a KEK version we lack */
	KS_ERR_WRAP_MALFORMED,		/* wrapped DEK blob has the wrong shape */
	KS_ERR_UNWRAP_FAILED,		/* wrapped DEK does not authenticate */
	KS_ERR_PROVIDER_UNKNOWN,	/* no provider of that name */
	KS_ERR_INVALID_NAME			/* a name (identifier) of the wrong shape */
} KsStatus;

#define KS_ERRMSG_LEN 256

/* Where a failing call explains itself; never holds secrets. */
typedef struct KsError
{
	KsStatus	status;
	char		message[KS_ERRMSG_LEN];
} KsError;

/* Record a failure in err (which may be NULL) and return the status. */
extern KsStatus KsFail(KsError *err, KsStatus status, const char *fmt,...)
			__attribute__((format(printf, 3, 4)));

/* Overwrite a buffer so the compiler cannot elide it. */
extern void KsWipe(void *buf, size_t len);

/* Size of a DEK: AES-256. */
#define KS_DEK_LEN 32

/* Largest wrapped DEK any provider may return. */
#define KS_WRAPPED_MAX 1024

/*
 * Settings a provider needs.  They hold references (paths), never secrets
 * themselves: see DESIGN.md, "KMS credentials are never stored in tables".
 */
typedef struct KsKmsConfig
{
	const char *local_master_key_file;
} KsKmsConfig;

/*
 * A KMS provider.
 *
 * wrap: encrypt dek under the provider's current KEK, binding aad (the key
 * name and DEK version) so the result cannot be moved to another key.  The
 * result is written to out (at most KS_WRAPPED_MAX bytes) and *out_len set;
 * *kek_version receives the KEK version used, for bookkeeping.
 *
 * unwrap: the reverse; the wrapped blob records which KEK version it needs.
 *
 * rewrap: unwrap and wrap again under the current KEK in one step, so the
 * DEK never leaves the provider (Vault Transit's rewrap and AWS KMS's
 * ReEncrypt work the same way).
 *
 * current_kek_version: which KEK version wrap would use now.
 */
typedef struct KsKmsProvider
{
	const char *name;
	KsStatus	(*wrap) (const KsKmsConfig *cfg,
						 const uint8_t *dek, size_t dek_len,
						 const uint8_t *aad, size_t aad_len,
						 uint8_t *out, size_t *out_len,
						 uint32_t *kek_version, KsError *err);
	KsStatus	(*unwrap) (const KsKmsConfig *cfg,
						   const uint8_t *wrapped, size_t wrapped_len,
						   const uint8_t *aad, size_t aad_len,
						   uint8_t *dek, size_t dek_len, KsError *err);
	KsStatus	(*rewrap) (const KsKmsConfig *cfg,
						   const uint8_t *wrapped, size_t wrapped_len,
						   const uint8_t *aad, size_t aad_len,
						   uint8_t *out, size_t *out_len,
						   uint32_t *kek_version, KsError *err);
	KsStatus	(*current_kek_version) (const KsKmsConfig *cfg,
										uint32_t *kek_version, KsError *err);
} KsKmsProvider;

/* Find a provider by name; NULL if there is none. */
extern const KsKmsProvider *KsKmsLookup(const char *name);

/* The local master-key-file provider (kms/local.c). */
extern const KsKmsProvider KsLocalProvider;

/*
 * Build the AAD that binds a wrapped DEK to its key name and DEK version.
 * Returns the number of bytes written, or 0 if out is too small.
 */
extern size_t KsDekBindingAad(const char *key_name, uint32_t dek_version,
							  uint8_t *out, size_t out_len);

/* Fill buf with bytes from OpenSSL's CSPRNG. */
extern KsStatus KsRandomBytes(uint8_t *buf, size_t len, KsError *err);

/*
 * len characters drawn uniformly (rejection sampling) from alphabet, which
 * has 2 to 256 characters, then a NUL: out holds len + 1 bytes.  Used for
 * leased roles' passwords and username suffixes.
 */
extern KsStatus KsRandomToken(char *out, size_t len, const char *alphabet, KsError *err);

#endif							/* KEYSMITH_KMS_H */
