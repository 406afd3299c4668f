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
 * A provider type (local, and the external KMSs to come: Vault Transit,
 * AWS KMS, ...) is a table of function pointers, found by type name in a
 * registry (KsKmsLookup).  Every operation gets a provider instance, one
 * configured provider (a row of keysmith.kms_provider: its name and
 * options), and the key's reference in that KMS (kms_key: a Transit key
 * name, an AWS key ARN; NULL where the provider has none).  KEK versions
 * are text, as KMSs name them; a provider alone decides whether a wrapped
 * DEK needs rewrapping (needs_rewrap).
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
	KS_ERR_INVALID_NAME,		/* a name (identifier) of the wrong shape */
	KS_ERR_KMS_UNAVAILABLE,		/* the KMS did not answer in time, or refused the connection */
	KS_ERR_KMS_DENIED,			/* the KMS answered: not allowed */
	KS_ERR_KMS_BAD_RESPONSE,	/* the KMS answered something unusable */
	KS_ERR_INTERRUPTED			/* the glue's interrupt check stopped the call */
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

/* A KEK version as text, with its NUL: "3" (local), a hex id, ... */
#define KS_KEK_VERSION_LEN 128

/* At most this many options per provider instance. */
#define KS_KMS_MAX_OPTIONS 16

typedef struct KsKmsOption
{
	const char *name;
	const char *value;
} KsKmsOption;

struct KsKmsProvider;

/*
 * A provider instance: a provider type configured by one row of
 * keysmith.kms_provider.  Options hold references only (a URL, a file
 * holding a token, a CA file, timeouts), never secrets themselves: see
 * DESIGN.md, "KMS credentials are never stored in tables".  state is for
 * per-process state a provider may keep (a connection, a cached token).
 */
typedef struct KsKmsInstance
{
	const struct KsKmsProvider *provider;
	const char *name;			/* the instance's name, for messages */
	int			noptions;
	KsKmsOption options[KS_KMS_MAX_OPTIONS];
	void	   *state;
} KsKmsInstance;

/* The value of an instance's option, or NULL when it is not set. */
extern const char *KsKmsOptionValue(const KsKmsInstance *kms, const char *name);

/*
 * A KMS provider type.
 *
 * option_names: the options it accepts (NULL-terminated); check_options
 * checks their values, when an instance is created or altered and when it
 * is loaded.  check_key checks a key's kms_key (NULL when none was given).
 *
 * wrap: encrypt dek under the current KEK of kms_key, binding aad (the key
 * name and DEK version) so the result cannot be moved to another key.  The
 * result goes to out (at most KS_WRAPPED_MAX bytes, *out_len set), and the
 * KEK version used to kek_version (KS_KEK_VERSION_LEN bytes; "" where the
 * KMS does not say).
 *
 * unwrap: the reverse; the wrapped blob records which KEK version it needs.
 *
 * rewrap: unwrap and wrap again under the current KEK in one step, so the
 * DEK never leaves the provider where the KMS can do that itself (Vault
 * Transit's rewrap, AWS KMS's ReEncrypt).
 *
 * needs_rewrap: would rewrap change a blob wrapped under kek_version?
 *
 * shared_cache: unwrapped DEKs may be cached for the whole cluster, to save
 * calls to a KMS over the network (extension/keys/dek_shared.c).
 *
 * kek_check (NULL where the provider cannot tell): a value that identifies
 * a KEK version without revealing anything of it (KS_KEK_CHECK_LEN bytes),
 * so that a database can tell the KEK it was made with from another one of
 * the same name and version (a different key file).  With wrapped set, of
 * the KEK version that wrapped it, after checking that it unwraps with that
 * very key (kek_version receives the version; when the blob does not
 * open, KS_ERR_UNWRAP_FAILED with check and kek_version still set, so the
 * caller can tell another key from an altered blob); else of kek_version.
 * KS_ERR_KEK_VERSION_UNKNOWN when the KMS does not have that version.
 * set_id (KS_KEK_CHECK_LEN bytes, may be NULL) receives an identity of the
 * whole key set the answer came from (the same for two calls only if the
 * set did not change between them), so a caller that makes several calls
 * for one decision can tell that they all saw the same material.
 */
typedef struct KsKmsProvider
{
	const char *type;
	int			shared_cache;
	const char *const *option_names;
	KsStatus	(*check_options) (const KsKmsInstance *kms, KsError *err);
	KsStatus	(*check_key) (const KsKmsInstance *kms, const char *kms_key, KsError *err);
	KsStatus	(*wrap) (const KsKmsInstance *kms, const char *kms_key,
						 const uint8_t *dek, size_t dek_len,
						 const uint8_t *aad, size_t aad_len,
						 uint8_t *out, size_t *out_len,
						 char *kek_version, KsError *err);
	KsStatus	(*unwrap) (const KsKmsInstance *kms, const char *kms_key,
						   const uint8_t *wrapped, size_t wrapped_len,
						   const uint8_t *aad, size_t aad_len,
						   uint8_t *dek, size_t dek_len, KsError *err);
	KsStatus	(*rewrap) (const KsKmsInstance *kms, const char *kms_key,
						   const uint8_t *wrapped, size_t wrapped_len,
						   const uint8_t *aad, size_t aad_len,
						   uint8_t *out, size_t *out_len,
						   char *kek_version, KsError *err);
	KsStatus	(*needs_rewrap) (const KsKmsInstance *kms, const char *kms_key,
								 const char *kek_version, int *needs, KsError *err);
	KsStatus	(*kek_check) (const KsKmsInstance *kms, const char *kms_key, char *kek_version,
							  const uint8_t *wrapped, size_t wrapped_len,
							  const uint8_t *aad, size_t aad_len,
							  uint8_t *check, uint8_t *set_id, KsError *err);
} KsKmsProvider;

/* Length of a KEK check value (kek_check). */
#define KS_KEK_CHECK_LEN 16

/*
 * Check an instance's options against its provider: only known names, each
 * once, then the provider's own check_options.
 */
extern KsStatus KsKmsCheckOptions(const KsKmsInstance *kms, KsError *err);

/* Find a provider type by name; NULL if there is none. */
extern const KsKmsProvider *KsKmsLookup(const char *type);

/* The local master-key-file provider (kms/local.c). */
extern const KsKmsProvider KsLocalProvider;

/* HashiCorp Vault / OpenBao Transit (kms/vault.c). */
extern const KsKmsProvider KsVaultTransitProvider;

/* AWS KMS (kms/aws.c). */
extern const KsKmsProvider KsAwsKmsProvider;

/* Azure Key Vault and Managed HSM (kms/azure.c). */
extern const KsKmsProvider KsAzureKeyVaultProvider;

/* Google Cloud KMS (kms/gcp.c). */
extern const KsKmsProvider KsGcpKmsProvider;

/* The provider types of this build, as "a, b", for messages. */
extern const char *KsKmsTypeList(void);

/*
 * Build the AAD that binds a wrapped DEK to its key name and DEK version.
 * Returns the number of bytes written, or 0 if out is too small.
 */
extern size_t KsDekBindingAad(const char *key_name, uint32_t dek_version,
							  uint8_t *out, size_t out_len);

/*
 * The reverse, for KMSs that bind through readable fields rather than bytes
 * (AWS's EncryptionContext): 1 and the name (NUL-terminated, at most
 * name_len bytes with its NUL) and version when aad is such a binding.
 */
extern int	KsDekBindingParse(const uint8_t *aad, size_t aad_len, char *key_name, size_t name_len,
							  uint32_t *dek_version);

/* Fill buf with bytes from OpenSSL's CSPRNG. */
extern KsStatus KsRandomBytes(uint8_t *buf, size_t len, KsError *err);

/*
 * len characters drawn uniformly (rejection sampling) from alphabet, which
 * has 2 to 256 characters, then a NUL: out holds len + 1 bytes.  Used for
 * leased roles' passwords and username suffixes.
 */
extern KsStatus KsRandomToken(char *out, size_t len, const char *alphabet, KsError *err);

#endif							/* KEYSMITH_KMS_H */
