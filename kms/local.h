/*
 * kms/local.h
 *
 * The local KMS provider: versioned 256-bit master keys (KEKs) in a file
 * that only the server's OS user may read.  File format, one key per line:
 *
 *     <version>:<64 hex characters>
 *
 * with '#' comments and blank lines allowed; the highest version is the
 * current one.  Each wrap or unwrap (once per DEK version per backend, never
 * per row) stats the file; the parsed set is kept in wiped, mlock'd memory
 * of kms/local.c while the file is unchanged (device, inode, size, mode,
 * owner, modification and change times), and read and checked again on any
 * change, so an edit takes effect at once.
 */
#ifndef KEYSMITH_LOCAL_H
#define KEYSMITH_LOCAL_H

#include "kms.h"

#define KS_LOCAL_MAX_KEYS		4096
#define KS_LOCAL_MAX_FILE_SIZE	(1024 * 1024)

typedef struct KsMasterKey
{
	uint32_t	version;
	uint8_t		key[KS_DEK_LEN];
} KsMasterKey;

typedef struct KsMasterKeySet
{
	int			count;
	uint32_t	current;		/* highest version */
	KsMasterKey keys[KS_LOCAL_MAX_KEYS];
} KsMasterKeySet;

/*
 * Read and check the master key file into set, which the caller provides
 * (about 150 kB) and wipes after use: kms/ never hands out key material in
 * memory of its own.  On failure set is left wiped.
 */
extern KsStatus KsLocalLoad(const char *path, KsMasterKeySet *set, KsError *err);

/* Parse the contents of a key file already in memory (used by the tests). */
extern KsStatus KsLocalParse(const char *text, size_t len, KsMasterKeySet *set,
							 KsError *err);

/*
 * Wipe the kept master key set of this process (it is also wiped at exit and
 * whenever the file changes); the next use reads the file again.
 */
extern void KsLocalForget(void);

/*
 * How old (ms) the file's newest time must be when it is read for the set to
 * be kept; younger files are read on every use.  Lowered by the unit tests.
 */
extern int	ks_local_keep_after_ms;

/* Append a fresh random key as version highest+1; returns that version. */
extern KsStatus KsLocalAppendKey(const char *path, uint32_t *new_version, KsError *err);

/*
 * Remove version `version` (not the newest) from the file, atomically
 * (written aside, fsync'd, renamed).  KS_ERR_KEK_VERSION_UNKNOWN if absent.
 */
extern KsStatus KsLocalRetireKey(const char *path, uint32_t version, KsError *err);

/* Length of a local wrapped DEK: format, KEK version, nonce, DEK, tag. */
#define KS_LOCAL_WRAP_FORMAT	1
#define KS_LOCAL_WRAPPED_LEN	(1 + 4 + 12 + KS_DEK_LEN + 16)

/*
 * Unwrap a blob of KS_LOCAL_WRAPPED_LEN bytes with the master key of the
 * version it names, from an already loaded set.  The provider's unwrap
 * loads the file and calls this; the fuzzer calls it directly.
 */
extern KsStatus KsLocalUnwrapWithSet(const KsMasterKeySet *set, const uint8_t *wrapped,
									 size_t wrapped_len, const uint8_t *aad, size_t aad_len,
									 uint8_t *dek, KsError *err);

/* Which master-key version wrapped this blob (0 if it is malformed). */
extern uint32_t KsLocalWrappedKekVersion(const uint8_t *wrapped, size_t len);

#endif							/* KEYSMITH_LOCAL_H */
