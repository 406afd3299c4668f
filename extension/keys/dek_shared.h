/*
 * extension/keys/dek_shared.h
 *
 * The cluster-wide cache of unwrapped data keys of external KMSs
 * (extension/keys/dek_shared.c), below each backend's own cache (dek_cache.c).
 */
#ifndef KEYSMITH_DEK_SHARED_H
#define KEYSMITH_DEK_SHARED_H

#include <time.h>

#include "postgres.h"

#include "kms/kms.h"

/* What a cached DEK is for: the digest names it, the rest is for invalidation and the view. */
typedef struct KsSharedDekId
{
	uint8		digest[32];		/* SHA-256 of database, key, version, provider, binding, wrapped DEK */
	Oid			dboid;
	uint32		key_id;
	uint32		version;
} KsSharedDekId;

/* Unwrap through the KMS into dek (KS_DEK_LEN bytes); KS_OK or a failure in err. */
typedef KsStatus (*KsUnwrapFn) (void *arg, uint8 *dek, KsError *err);

extern void KsSharedDekShmemRequest(void);
extern void KsSharedDekShmemStartup(void);

/* The id of a wrapped DEK: digest over everything that identifies it. */
extern void KsSharedDekIdFor(KsSharedDekId *id, uint32 key_id, uint32 version, const char *provider,
							 const char *kms_key, const uint8 *aad, size_t aad_len,
							 const uint8 *wrapped, size_t wrapped_len);

/*
 * The DEK of id into dek: from the shared cache, or through unwrap (called
 * by one backend at a time per DEK; the others wait for its answer, at most
 * wait_ms).  ERRORs as unwrap failed.  *valid_until: until when (monotonic
 * ms) the caller may keep it.
 */
extern void KsSharedDekGet(const KsSharedDekId *id, KsUnwrapFn unwrap, void *arg, long wait_ms,
						   uint8 *dek, uint64 *valid_until);

/*
 * Wipe every cached DEK of a key (key_id 0: of every key of the database),
 * now and again when the transaction commits.
 */
extern void KsSharedDekInvalidate(Oid dboid, uint32 key_id);

/* Counters, for keysmith.dek_cache_stats(). */
typedef struct KsSharedDekStats
{
	int			slots;
	int			used;
	int64		hits;
	int64		unwraps;
	int64		waits;
	int64		stale_uses;
	int64		failures;
} KsSharedDekStats;
extern void KsSharedDekGetStats(KsSharedDekStats *stats);

/* Monotonic milliseconds, the clock of both caches (inline: the hit path reads it). */
static inline uint64
KsMonotonicMs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64) ts.tv_sec * 1000 + (uint64) ts.tv_nsec / 1000000;
}

#endif							/* KEYSMITH_DEK_SHARED_H */
