/*
 * extension/keys/dek_shared.c
 *
 * The cluster-wide cache of unwrapped data keys, for providers that call an
 * external KMS (KsKmsProvider.shared_cache).  Each backend keeps its own
 * cache of cipher contexts (dek_cache.c); without this one, every new
 * backend would unwrap each key version it touches, so 500 connections
 * meant 500 KMS calls per key.  With it, the KMS is called about once per
 * DEK version per keysmith.dek_cache_ttl for the whole cluster.
 *
 * Where the keys live.  The slots are one mapping of their own, made by
 * the postmaster at preload and inherited by every backend it forks:
 * MADV_DONTDUMP keeps them out of core dumps, mlock (best effort, within
 * RLIMIT_MEMLOCK) out of swap.  A slot is wiped when it is evicted,
 * invalidated or found expired past its grace, and all slots when shared
 * memory is (re)initialised.  The local provider's keys are never put here:
 * unwrapping them costs a file read, not a network call.
 *
 * What a slot is for.  Slots are found by a SHA-256 digest of the database,
 * key id, DEK version, provider, kms_key, binding AAD and wrapped DEK, so a
 * slot can only ever answer for exactly the blob it was unwrapped from: a
 * rewrapped, migrated, copied or re-created key version is another digest.
 * State (destroyed, retired) is not cached here: callers read it from the
 * key tables before they ask.  Invalidation on rotate, retire and destroy
 * (KsSharedDekInvalidate) is for hygiene: the DEK is wiped at once, not at
 * the end of its TTL.
 *
 * One unwrap at a time.  A backend that misses marks the slot LOADING and
 * calls the KMS without the lock; others asking for the same DEK sleep on
 * a condition variable until it is READY, or until the load failed, in
 * which case they report the loader's error (one KMS timeout, not one per
 * waiting backend).  A load abandoned by a backend that died is taken over
 * after its deadline.
 *
 * When the KMS is down.  A DEK whose TTL has passed stays usable for
 * keysmith.dek_cache_stale_grace more, but only while refreshing it fails
 * as unavailable (KS015): a KMS that answers "denied" revokes at once.
 * During the grace, one backend per second retries the KMS; the others use
 * the stale DEK.
 *
 * Locking: one LWLock over all slots, taken only on a backend-cache miss.
 */
#include "postgres.h"

#include <sys/mman.h>
#include <time.h>

#include <openssl/evp.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/wait_event.h"

#include "extension/common/errors.h"
#include "extension/common/guc.h"
#include "extension/keys/dek_shared.h"


typedef enum SlotState
{
	SLOT_EMPTY = 0,
	SLOT_READY,
	SLOT_LOADING
} SlotState;

typedef struct Slot
{
	KsSharedDekId id;
	SlotState	state;
	bool		has_dek;
	uint8		dek[KS_DEK_LEN];
	uint64		fresh_until;	/* TTL: used without asking the KMS */
	uint64		usable_until;	/* fresh_until + grace: used while the KMS is unavailable */
	uint64		retry_after;	/* in the grace, when the KMS may be tried again */
	int			loader_pid;
	uint64		load_deadline;
	uint64		load_gen;		/* counts loads of this slot */
	uint64		fail_gen;		/* the load that failed last */
	KsStatus	fail_status;
	char		fail_msg[KS_ERRMSG_LEN];
} Slot;

typedef struct SharedHeader
{
	LWLock	   *lock;
	ConditionVariable cv;
	int64		hits;
	int64		unwraps;
	int64		waits;
	int64		stale_uses;
	int64		failures;
} SharedHeader;

static SharedHeader *Header = NULL;
static Slot *Slots = NULL;		/* the postmaster's own mapping, inherited */
static size_t SlotsBytes = 0;
static int	NSlots = 0;

/* invalidations to repeat at commit */
typedef struct PendingInval
{
	Oid			dboid;
	uint32		key_id;
} PendingInval;
static List *Pending = NIL;
static bool XactCallbackSet = false;

void
KsSharedDekShmemRequest(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(SharedHeader)));
	RequestNamedLWLockTranche("keysmith_dek_cache", 1);

	NSlots = keysmith_dek_cache_shared_size;
	if (NSlots == 0 || Slots != NULL)
		return;
	SlotsBytes = TYPEALIGN(4096, (size_t) NSlots * sizeof(Slot));
	Slots = mmap(NULL, SlotsBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (Slots == MAP_FAILED)
		ereport(FATAL,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not map %zu bytes for keysmith's shared DEK cache", SlotsBytes)));
#ifdef MADV_DONTDUMP
	(void) madvise(Slots, SlotsBytes, MADV_DONTDUMP);
#endif
	if (mlock(Slots, SlotsBytes) != 0)
		ereport(LOG,
				(errmsg("keysmith could not lock its shared DEK cache in memory: %m"),
				 errhint("Raise the server's RLIMIT_MEMLOCK (ulimit -l) to at least %zu kB, or lower keysmith.dek_cache_shared_size.",
						 SlotsBytes / 1024)));
}

void
KsSharedDekShmemStartup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	Header = ShmemInitStruct("keysmith shared DEK cache", sizeof(SharedHeader), &found);
	if (!found)
	{
		memset(Header, 0, sizeof(SharedHeader));
		Header->lock = &(GetNamedLWLockTranche("keysmith_dek_cache"))->lock;
		ConditionVariableInit(&Header->cv);
		/* shared memory is new, after a crash too: no key survives it */
		if (Slots != NULL)
			KsWipe(Slots, SlotsBytes);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
KsSharedDekIdFor(KsSharedDekId *id, uint32 key_id, uint32 version, const char *provider,
				 const char *kms_key, const uint8 *aad, size_t aad_len,
				 const uint8 *wrapped, size_t wrapped_len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = 0;
	uint32		lens[4] = {(uint32) strlen(provider), kms_key ? (uint32) strlen(kms_key) : 0,
	(uint32) aad_len, (uint32) wrapped_len};

	memset(id, 0, sizeof(*id));
	id->dboid = MyDatabaseId;
	id->key_id = key_id;
	id->version = version;
	if (md == NULL ||
		EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
		EVP_DigestUpdate(md, &id->dboid, sizeof(Oid)) != 1 ||
		EVP_DigestUpdate(md, &key_id, sizeof(key_id)) != 1 ||
		EVP_DigestUpdate(md, &version, sizeof(version)) != 1 ||
		EVP_DigestUpdate(md, lens, sizeof(lens)) != 1 ||
		EVP_DigestUpdate(md, provider, lens[0]) != 1 ||
		(kms_key && EVP_DigestUpdate(md, kms_key, lens[1]) != 1) ||
		EVP_DigestUpdate(md, aad, aad_len) != 1 ||
		EVP_DigestUpdate(md, wrapped, wrapped_len) != 1 ||
		EVP_DigestFinal_ex(md, id->digest, &len) != 1 || len != 32)
	{
		EVP_MD_CTX_free(md);
		elog(ERROR, "could not compute a SHA-256 digest");
	}
	EVP_MD_CTX_free(md);
}

static void
WipeSlot(Slot *s)
{
	KsWipe(s, sizeof(Slot));
	s->state = SLOT_EMPTY;
}

static Slot *
FindSlot(const KsSharedDekId *id)
{
	for (int i = 0; i < NSlots; i++)
		if (Slots[i].state != SLOT_EMPTY && memcmp(Slots[i].id.digest, id->digest, 32) == 0)
			return &Slots[i];
	return NULL;
}

/* An empty slot, else the READY one whose use ends first. */
static Slot *
ClaimSlot(uint64 now)
{
	Slot	   *victim = NULL;

	for (int i = 0; i < NSlots; i++)
	{
		Slot	   *s = &Slots[i];

		if (s->state == SLOT_READY && s->usable_until <= now)
			WipeSlot(s);
		if (s->state == SLOT_EMPTY)
			return s;
		if (s->state == SLOT_READY && (victim == NULL || s->usable_until < victim->usable_until))
			victim = s;
	}
	if (victim)
		WipeSlot(victim);
	return victim;
}

/* Raise a failure recorded in err, after the lock is released. */
static void
Fail(KsError *err)
{
	KsReportError(err);
}

/*
 * Unwrap without the shared cache, for this backend alone: when there is
 * no shared cache, or every slot is busy loading.  ERRORs as unwrap failed.
 */
static void
UnwrapAlone(KsUnwrapFn unwrap, void *arg, uint8 *dek, uint64 *valid_until)
{
	KsError		err;

	if (unwrap(arg, dek, &err) != KS_OK)
		Fail(&err);
	*valid_until = KsMonotonicMs() + (uint64) keysmith_dek_cache_ttl * 1000;
}

/*
 * Under the lock: copy the slot's DEK into dek if it may be used now, while
 * fresh (a hit), or in its grace while the KMS failed less than a second
 * ago (a stale use).  False if the KMS must be asked.
 */
static bool
TakeCached(Slot *s, uint64 now, uint8 *dek, uint64 *valid_until)
{
	if (!s->has_dek || !(now < s->fresh_until || (now < s->usable_until && now < s->retry_after)))
		return false;
	memcpy(dek, s->dek, KS_DEK_LEN);
	if (now < s->fresh_until)
	{
		Header->hits++;
		*valid_until = s->fresh_until;
	}
	else
	{
		/* in the grace, and the KMS failed less than a second ago */
		Header->stale_uses++;
		*valid_until = Min(s->usable_until, s->retry_after);
	}
	return true;
}

/*
 * Called with the lock held, on a slot another backend is loading: release
 * the lock and sleep on the condition variable until a load ends, or for
 * 100 ms (a loader that died wakes nobody).  If the load this backend
 * waited for failed and left no usable DEK, its error is this backend's
 * too: one KMS timeout, not one per waiting backend.  Otherwise the caller
 * looks again.  Returns with the lock released.
 */
static void
WaitForLoader(const KsSharedDekId *id, Slot *s)
{
	uint64		gen = s->load_gen;
	KsError		err;

	Header->waits++;
	LWLockRelease(Header->lock);
	ConditionVariablePrepareToSleep(&Header->cv);
	(void) ConditionVariableTimedSleep(&Header->cv, 100, PG_WAIT_EXTENSION);
	ConditionVariableCancelSleep();
	LWLockAcquire(Header->lock, LW_EXCLUSIVE);
	s = FindSlot(id);
	if (s && s->fail_gen == gen && s->state != SLOT_LOADING && !(s->has_dek && KsMonotonicMs() < s->usable_until))
	{
		/* the load we waited for failed: its error is ours */
		err.status = s->fail_status;
		strlcpy(err.message, s->fail_msg, sizeof(err.message));
		LWLockRelease(Header->lock);
		Fail(&err);
	}
	LWLockRelease(Header->lock);
}

/*
 * Under the lock: mark the slot as loaded by this backend, with a deadline
 * after which another backend may take the load over (this one may die
 * while it calls the KMS).  Returns the load's generation, which tells this
 * load's outcome from a later one's and from an invalidation.
 */
static uint64
BeginLoad(Slot *s, uint64 now, long wait_ms)
{
	s->state = SLOT_LOADING;
	s->loader_pid = MyProcPid;
	s->load_deadline = now + (uint64) wait_ms + 1000;
	Header->unwraps++;
	return ++s->load_gen;
}

typedef enum Lookup
{
	LOOKUP_HIT,					/* the DEK came from the cache */
	LOOKUP_LOAD,				/* this backend loads the slot */
	LOOKUP_ALONE				/* no slot free: unwrap without the cache */
} Lookup;

/*
 * Find the DEK of id in the cache, waiting (up to wait_ms in all) while
 * another backend loads it; or claim a slot for this backend to load, its
 * load generation in *gen.  A load past its deadline is taken over.
 */
static Lookup
LookupOrClaim(const KsSharedDekId *id, long wait_ms, uint8 *dek, uint64 *valid_until, uint64 *gen)
{
	uint64		start = KsMonotonicMs();

	for (;;)
	{
		uint64		now = KsMonotonicMs();
		Slot	   *s;

		LWLockAcquire(Header->lock, LW_EXCLUSIVE);
		s = FindSlot(id);
		if (s && TakeCached(s, now, dek, valid_until))
		{
			LWLockRelease(Header->lock);
			return LOOKUP_HIT;
		}
		if (s && s->state == SLOT_LOADING && now < s->load_deadline && now < start + (uint64) wait_ms)
		{
			WaitForLoader(id, s);
			continue;
		}
		if (s == NULL)
		{
			s = ClaimSlot(now);
			if (s == NULL)
			{
				LWLockRelease(Header->lock);
				return LOOKUP_ALONE;
			}
			s->id = *id;
			s->has_dek = false;
		}
		*gen = BeginLoad(s, now, wait_ms);
		LWLockRelease(Header->lock);
		return LOOKUP_LOAD;
	}
}

/*
 * The unwrap threw (a query cancel, the backend's termination): the slot
 * goes back to what it was, READY with its old DEK or empty, with an error
 * for the backends that waited on this load; and they are woken.
 */
static void
AbandonLoad(const KsSharedDekId *id, uint64 gen)
{
	Slot	   *s;

	LWLockAcquire(Header->lock, LW_EXCLUSIVE);
	s = FindSlot(id);
	if (s && s->load_gen == gen && s->state == SLOT_LOADING)
	{
		s->state = s->has_dek ? SLOT_READY : SLOT_EMPTY;
		s->fail_gen = gen;
		s->fail_status = KS_ERR_KMS_UNAVAILABLE;
		snprintf(s->fail_msg, sizeof(s->fail_msg), "the backend unwrapping this data key was interrupted");
		if (s->state == SLOT_EMPTY)
			WipeSlot(s);
	}
	LWLockRelease(Header->lock);
	ConditionVariableBroadcast(&Header->cv);
}

/*
 * Unwrap through the KMS for the slot this backend loads (generation gen),
 * without the lock: the call may take the KMS's whole timeout.
 */
static KsStatus
UnwrapForSlot(const KsSharedDekId *id, uint64 gen, KsUnwrapFn unwrap, void *arg, uint8 *dek,
			  KsError *err)
{
	KsStatus	st;

	PG_TRY();
	{
		st = unwrap(arg, dek, err);
	}
	PG_CATCH();
	{
		AbandonLoad(id, gen);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return st;
}

/*
 * Under the lock, after an unwrap that worked: the DEK goes to the caller,
 * and into the slot (s, if still this load's) with a fresh TTL and grace.
 */
static void
PublishDek(Slot *s, const uint8 *dek, uint64 *valid_until)
{
	uint64		now = KsMonotonicMs();
	uint64		ttl = (uint64) keysmith_dek_cache_ttl * 1000;
	uint64		grace = (uint64) keysmith_dek_cache_stale_grace * 1000;

	*valid_until = now + ttl;
	if (s)
	{
		memcpy(s->dek, dek, KS_DEK_LEN);
		s->has_dek = true;
		s->fresh_until = now + ttl;
		s->usable_until = now + ttl + grace;
		s->retry_after = 0;
		s->state = SLOT_READY;
	}
}

/*
 * Under the lock, after the KMS was unavailable, with the slot's old DEK
 * still in its grace: the caller gets the old DEK, the others get it too
 * for a second before one of them tries the KMS again, and the log says so.
 */
static void
UseStale(Slot *s, const KsSharedDekId *id, const KsError *err, uint8 *dek, uint64 *valid_until)
{
	uint64		now = KsMonotonicMs();

	memcpy(dek, s->dek, KS_DEK_LEN);
	s->retry_after = now + 1000;
	s->state = SLOT_READY;
	Header->stale_uses++;
	*valid_until = Min(s->usable_until, s->retry_after);
	ereport(LOG,
			(errmsg("keysmith uses a cached data key of key id %u past its TTL: %s",
					id->key_id, err->message),
			 errdetail("keysmith.dek_cache_stale_grace allows it until the KMS answers again.")));
}

/*
 * Under the lock, after an unwrap that failed otherwise: the slot (s, if
 * still this load's) records the error for its waiters.  A KMS that denies
 * the key or a blob that is not authentic revokes the old DEK at once; only
 * an unavailable KMS leaves it for its grace.
 */
static void
RecordFailure(Slot *s, uint64 gen, KsStatus st, const KsError *err)
{
	Header->failures++;
	if (s == NULL)
		return;
	s->fail_gen = gen;
	s->fail_status = st;
	strlcpy(s->fail_msg, err->message, sizeof(s->fail_msg));
	if (s->has_dek && st != KS_ERR_KMS_UNAVAILABLE)
	{
		/* denied or not authentic: the old DEK goes too */
		KsWipe(s->dek, KS_DEK_LEN);
		s->has_dek = false;
	}
	s->state = s->has_dek ? SLOT_READY : SLOT_EMPTY;
}

/*
 * The outcome of this backend's load (generation gen, unwrap status st),
 * into the slot, unless an invalidation took it meanwhile; then the waiters
 * are woken.  Returns st, or KS_OK when a stale DEK stands in.
 */
static KsStatus
FinishLoad(const KsSharedDekId *id, uint64 gen, KsStatus st, const KsError *err, uint8 *dek,
		   uint64 *valid_until)
{
	Slot	   *s;

	LWLockAcquire(Header->lock, LW_EXCLUSIVE);
	s = FindSlot(id);
	/* an invalidation may have taken the slot meanwhile: then keep nothing */
	if (s && (s->load_gen != gen || s->state != SLOT_LOADING))
		s = NULL;
	if (st == KS_OK)
		PublishDek(s, dek, valid_until);
	else if (s && st == KS_ERR_KMS_UNAVAILABLE && s->has_dek && KsMonotonicMs() < s->usable_until)
	{
		UseStale(s, id, err, dek, valid_until);
		st = KS_OK;
	}
	else
		RecordFailure(s, gen, st, err);
	LWLockRelease(Header->lock);
	ConditionVariableBroadcast(&Header->cv);
	return st;
}

/*
 * The DEK of id (see dek_shared.h): from the cache, from the backend that
 * is loading it, or from this backend's own call to the KMS, published for
 * the others.  The lock is never held across the KMS call or a sleep.
 */
void
KsSharedDekGet(const KsSharedDekId *id, KsUnwrapFn unwrap, void *arg, long wait_ms,
			   uint8 *dek, uint64 *valid_until)
{
	uint64		gen = 0;
	KsError		err;
	KsStatus	st;

	if (Slots == NULL || Header == NULL)
	{
		/* no shared cache: unwrap for this backend alone */
		UnwrapAlone(unwrap, arg, dek, valid_until);
		return;
	}
	switch (LookupOrClaim(id, wait_ms, dek, valid_until, &gen))
	{
		case LOOKUP_HIT:
			return;
		case LOOKUP_ALONE:
			/* every slot is loading: do without the shared cache */
			UnwrapAlone(unwrap, arg, dek, valid_until);
			return;
		case LOOKUP_LOAD:
			break;
	}
	st = UnwrapForSlot(id, gen, unwrap, arg, dek, &err);
	if (FinishLoad(id, gen, st, &err, dek, valid_until) != KS_OK)
		Fail(&err);
}

static void
InvalidateNow(Oid dboid, uint32 key_id)
{
	if (Slots == NULL || Header == NULL)
		return;
	LWLockAcquire(Header->lock, LW_EXCLUSIVE);
	for (int i = 0; i < NSlots; i++)
	{
		Slot	   *s = &Slots[i];

		if (s->state == SLOT_EMPTY || s->id.dboid != dboid || (key_id != 0 && s->id.key_id != key_id))
			continue;
		if (s->state == SLOT_LOADING)
		{
			/* its loader will find the slot gone and keep nothing */
			s->load_gen++;
			s->has_dek = false;
			KsWipe(s->dek, KS_DEK_LEN);
			s->state = SLOT_EMPTY;
			memset(s->id.digest, 0, sizeof(s->id.digest));
		}
		else
			WipeSlot(s);
	}
	LWLockRelease(Header->lock);
	ConditionVariableBroadcast(&Header->cv);
}

static void
PendingXactCallback(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		foreach(lc, Pending)
		{
			PendingInval *p = lfirst(lc);

			InvalidateNow(p->dboid, p->key_id);
		}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		list_free_deep(Pending);
		Pending = NIL;
	}
}

void
KsSharedDekInvalidate(Oid dboid, uint32 key_id)
{
	PendingInval *p;
	MemoryContext old;

	InvalidateNow(dboid, key_id);
	if (!XactCallbackSet)
	{
		RegisterXactCallback(PendingXactCallback, NULL);
		XactCallbackSet = true;
	}
	old = MemoryContextSwitchTo(TopMemoryContext);
	p = palloc(sizeof(PendingInval));
	p->dboid = dboid;
	p->key_id = key_id;
	Pending = lappend(Pending, p);
	MemoryContextSwitchTo(old);
}

void
KsSharedDekGetStats(KsSharedDekStats *stats)
{
	memset(stats, 0, sizeof(*stats));
	if (Slots == NULL || Header == NULL)
		return;
	LWLockAcquire(Header->lock, LW_SHARED);
	stats->slots = NSlots;
	for (int i = 0; i < NSlots; i++)
		if (Slots[i].state != SLOT_EMPTY)
			stats->used++;
	stats->hits = Header->hits;
	stats->unwraps = Header->unwraps;
	stats->waits = Header->waits;
	stats->stale_uses = Header->stale_uses;
	stats->failures = Header->failures;
	LWLockRelease(Header->lock);
}
