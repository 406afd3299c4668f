/*
 * extension/keys/counters.c
 *
 * Encryption counters per DEK version, shared by all backends, so no DEK
 * version ever encrypts more than keysmith.max_encryptions_per_dek values
 * (at most 2^32, the random-nonce bound of NIST SP 800-38D).
 *
 * The rule is "known or retired": a version is encrypted under only while
 * this server knows an upper bound of every encryption ever made under it.
 * It knows that
 *
 *   - for a version it made itself: the counter starts at zero in the
 *     transaction that makes the version (KsCounterCreate), before the new
 *     DEK can encrypt anything;
 *   - across a clean restart: at shutdown the postmaster writes every count
 *     to $PGDATA/keysmith_counters, and at start reads them back and
 *     removes the file durably, so a later crash cannot reload them.
 *
 * A counter names its database by OID, and OIDs of dropped databases are
 * given again (CREATE DATABASE ... OID, or wraparound).  So when a
 * database is created, every counter of its OID is forgotten
 * (KsCountersObjectAccess); otherwise a copy of another database's DEKs
 * created under it would take a dropped database's counts for its own.  A data directory that is a base backup
 * (backup_label) takes no counts either: a counter file in it (0.10 kept
 * one while running) is its source's, which goes on encrypting.
 *
 * In every other case (after a crash, on a promoted standby, after a
 * restore, for a counter evicted to make room, for a version made before
 * this scheme) the count is unknown, KsCounterTake says so, and the caller
 * rolls the key over to a new version instead of guessing.  So nothing is
 * written or fsync'd while encrypting, and a version needs no I/O of its
 * own beyond the transaction that creates it; the price is one rollover
 * per key after a crash or an eviction.  docs/format.md has the argument.
 *
 * Shared memory holds keysmith.counter_slots counters, whatever the number
 * of keys: a partitioned hash from (database, key, version) to a slot, and
 * the slots, reused by a clock sweep when full.  A backend keeps a
 * reference (slot and generation) per cached DEK; a slot that changed hands
 * has another generation, and the version is then unknown.
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include "catalog/objectaccess.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"

#include "extension/common/guc.h"
#include "extension/keys/counters.h"

#define KS_COUNTER_FILE "keysmith_counters"
#define KS_COUNTER_MAGIC 0x4B53434EU	/* "KSCN" */
#define KS_COUNTER_PARTITIONS 16	/* a power of 2 */
#define KS_COUNTER_TRANCHE "keysmith counters"

typedef struct CounterKey
{
	Oid			dbid;			/* InvalidOid: a free slot */
	int32		key_id;
	int32		version;
} CounterKey;

typedef struct CounterSlot
{
	CounterKey	key;			/* changes only under the sweep lock and the
								 * partition locks of the old and new key */
	uint32		generation;		/* bumped whenever key changes */
	pg_atomic_uint32 recent;	/* the clock sweep's second chance */
	pg_atomic_uint64 count;		/* an upper bound of encryptions under key */
} CounterSlot;

typedef struct IndexEntry
{
	CounterKey	key;			/* hash key, must be first */
	int32		slot;
} IndexEntry;

typedef struct CountersShared
{
	int			nslots;
	int			clock;			/* under the sweep lock */
	CounterSlot slots[FLEXIBLE_ARRAY_MEMBER];
} CountersShared;

/* The file's records: an upper bound of the count of each version. */
typedef struct CounterRecord
{
	Oid			dbid;
	int32		key_id;
	int32		version;
	uint64		count;
} CounterRecord;

static CountersShared *Counters = NULL;
static HTAB *CounterIndex = NULL;
static LWLockPadded *Locks = NULL;	/* the partitions, then the sweep */
static object_access_hook_type prev_object_access_hook = NULL;

static void CountersShutdown(int code, Datum arg);

static Size
CountersSize(void)
{
	return add_size(offsetof(CountersShared, slots),
					mul_size(sizeof(CounterSlot), keysmith_counter_slots));
}

void
KsCountersShmemRequest(void)
{
	RequestAddinShmemSpace(MAXALIGN(CountersSize()));
	RequestAddinShmemSpace(hash_estimate_size(keysmith_counter_slots + 1, sizeof(IndexEntry)));
	RequestNamedLWLockTranche(KS_COUNTER_TRANCHE, KS_COUNTER_PARTITIONS + 1);
}

static inline bool
KeyEqual(const CounterKey *a, const CounterKey *b)
{
	return a->dbid == b->dbid && a->key_id == b->key_id && a->version == b->version;
}

static inline LWLock *
PartitionLock(uint32 hash)
{
	return &Locks[hash % KS_COUNTER_PARTITIONS].lock;
}

static inline LWLock *
SweepLock(void)
{
	return &Locks[KS_COUNTER_PARTITIONS].lock;
}

static uint32
KeyHash(const CounterKey *key)
{
	return get_hash_value(CounterIndex, key);
}

/*
 * A slot for key, which is in no slot yet: a free one, or the first in
 * clock order not used since the hand last passed it.  Caller holds the
 * sweep lock and key's partition lock exclusively; the victim's partition
 * lock is taken here (only holders of the sweep lock ever hold two
 * partition locks, so this cannot deadlock).
 */
static int
ClaimSlot(const CounterKey *key, uint32 hash)
{
	LWLock	   *mine = PartitionLock(hash);

	for (int tries = 0; tries < 2 * Counters->nslots + 1; tries++)
	{
		int			i = Counters->clock;
		CounterSlot *slot = &Counters->slots[i];

		Counters->clock = (i + 1) % Counters->nslots;
		if (OidIsValid(slot->key.dbid))
		{
			uint32		ohash;
			LWLock	   *theirs;

			if (pg_atomic_exchange_u32(&slot->recent, 0) != 0)
				continue;
			ohash = KeyHash(&slot->key);
			theirs = PartitionLock(ohash);
			if (theirs != mine)
				LWLockAcquire(theirs, LW_EXCLUSIVE);
			hash_search_with_hash_value(CounterIndex, &slot->key, ohash, HASH_REMOVE, NULL);
			slot->key.dbid = InvalidOid;
			slot->generation++;
			if (theirs != mine)
				LWLockRelease(theirs);
		}
		slot->key = *key;
		slot->generation++;
		pg_atomic_write_u64(&slot->count, 0);
		pg_atomic_write_u32(&slot->recent, 1);
		return i;
	}
	elog(ERROR, "keysmith found no counter slot to reuse");
	pg_unreachable();
}

/*
 * Put key in a slot with count; caller holds the sweep and key's partition
 * lock.  The slot is claimed (evicting another key where the table is
 * full) before the index gets the new entry, so the index never holds more
 * than keysmith.counter_slots entries.
 */
static void
InsertLocked(const CounterKey *key, uint32 hash, uint64 count)
{
	IndexEntry *entry;
	bool		found;
	int			i;

	entry = hash_search_with_hash_value(CounterIndex, key, hash, HASH_FIND, NULL);
	if (entry != NULL)
	{
		/* a version number made again after an aborted attempt: keep the larger count */
		CounterSlot *slot = &Counters->slots[entry->slot];

		if (pg_atomic_read_u64(&slot->count) < count)
			pg_atomic_write_u64(&slot->count, count);
		pg_atomic_write_u32(&slot->recent, 1);
		return;
	}
	i = ClaimSlot(key, hash);
	pg_atomic_write_u64(&Counters->slots[i].count, count);
	entry = hash_search_with_hash_value(CounterIndex, key, hash, HASH_ENTER_NULL, &found);
	if (entry == NULL)
	{
		/* cannot happen: the slot's old entry was just removed */
		Counters->slots[i].key.dbid = InvalidOid;
		Counters->slots[i].generation++;
		elog(ERROR, "keysmith's counter index is full");
	}
	entry->slot = i;
}

/*
 * Read the counts written at the last clean shutdown, then remove the file
 * for good: after a crash, a file from an earlier shutdown must not bring
 * back counts that are lower than the truth.  If it cannot be removed, the
 * counts are forgotten instead (every version is then unknown and rolls
 * over).  A server started to recover (a standby, a restore) takes no
 * counts: its primary may have encrypted more since.  Nor does a base
 * backup started without recovery.signal (backup_label; PostgreSQL 15 has
 * no exclusive backups, so the file means exactly that): a counter file in
 * it was copied from a running server, which is still encrypting.
 * Postmaster only.
 */
static void
LoadCounters(void)
{
	int			fd;
	uint32		header[2];
	CounterRecord rec;
	int			loaded = 0;
	bool		recovering = access("standby.signal", F_OK) == 0 || access("recovery.signal", F_OK) == 0 ||
		access("backup_label", F_OK) == 0;

	fd = OpenTransientFile(KS_COUNTER_FILE, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		if (errno != ENOENT)
			ereport(LOG,
					(errcode_for_file_access(),
					 errmsg("could not open \"%s\": %m", KS_COUNTER_FILE)));
		return;
	}
	if (read(fd, header, sizeof(header)) != sizeof(header) || header[0] != KS_COUNTER_MAGIC)
		ereport(WARNING,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("keysmith counter file \"%s\" is corrupt; every key rolls over at its next encryption",
						KS_COUNTER_FILE)));
	else if (!recovering)
	{
		for (uint32 n = 0; n < header[1] && loaded < Counters->nslots; n++)
		{
			CounterKey	key;

			if (read(fd, &rec, sizeof(rec)) != sizeof(rec))
				break;
			key.dbid = rec.dbid;
			key.key_id = rec.key_id;
			key.version = rec.version;
			if (!OidIsValid(key.dbid))
				continue;
			/* a hand-edited count near 2^64 could wrap when two backends add at once */
			InsertLocked(&key, KeyHash(&key), Min(rec.count, (uint64) 1 << 62));
			loaded++;
		}
	}
	CloseTransientFile(fd);
	if (durable_unlink(KS_COUNTER_FILE, LOG) != 0)
	{
		ereport(WARNING,
				(errmsg("keysmith forgets the encryption counts of \"%s\", which it could not remove; every key rolls over at its next encryption",
						KS_COUNTER_FILE)));
		for (int i = 0; i < Counters->nslots; i++)
		{
			CounterSlot *slot = &Counters->slots[i];

			if (OidIsValid(slot->key.dbid))
				hash_search(CounterIndex, &slot->key, HASH_REMOVE, NULL);
			slot->key.dbid = InvalidOid;
			slot->generation++;
		}
	}
}

void
KsCountersShmemStartup(void)
{
	bool		found;
	HASHCTL		info;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	Counters = ShmemInitStruct("keysmith counters", CountersSize(), &found);
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(CounterKey);
	info.entrysize = sizeof(IndexEntry);
	info.num_partitions = KS_COUNTER_PARTITIONS;
	/* fixed size: all its entries are made now, and it never takes more */
	CounterIndex = ShmemInitHash("keysmith counter index", keysmith_counter_slots + 1, keysmith_counter_slots + 1,
								 &info, HASH_ELEM | HASH_BLOBS | HASH_PARTITION | HASH_FIXED_SIZE);
	Locks = GetNamedLWLockTranche(KS_COUNTER_TRANCHE);
	if (!found)
	{
		memset(Counters, 0, CountersSize());
		Counters->nslots = keysmith_counter_slots;
		for (int i = 0; i < Counters->nslots; i++)
		{
			pg_atomic_init_u32(&Counters->slots[i].recent, 0);
			pg_atomic_init_u64(&Counters->slots[i].count, 0);
		}
		LoadCounters();
	}
	LWLockRelease(AddinShmemInitLock);
	if (!IsUnderPostmaster)
		on_shmem_exit(CountersShutdown, (Datum) 0);
}

/*
 * At a clean shutdown, write every count, so a restart resumes from them.
 * After a crash this does not run and there is no file: every version is
 * unknown.  An error must not stop the shutdown: it is logged, and the
 * versions are then unknown after the restart.
 */
static void
CountersShutdown(int code, Datum arg)
{
	char		tmp[] = KS_COUNTER_FILE ".tmp";
	uint32		header[2] = {KS_COUNTER_MAGIC, 0};
	int			fd;

	if (code != 0 || Counters == NULL)
		return;
	for (int i = 0; i < Counters->nslots; i++)
		if (OidIsValid(Counters->slots[i].key.dbid))
			header[1]++;
	fd = OpenTransientFile(tmp, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
	if (fd < 0)
	{
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not create \"%s\": %m", tmp)));
		return;
	}
	if (write(fd, header, sizeof(header)) != sizeof(header))
		goto fail;
	for (int i = 0; i < Counters->nslots; i++)
	{
		CounterSlot *slot = &Counters->slots[i];
		CounterRecord rec;

		if (!OidIsValid(slot->key.dbid))
			continue;
		rec.dbid = slot->key.dbid;
		rec.key_id = slot->key.key_id;
		rec.version = slot->key.version;
		rec.count = pg_atomic_read_u64(&slot->count);
		if (write(fd, &rec, sizeof(rec)) != sizeof(rec))
			goto fail;
	}
	if (pg_fsync(fd) != 0)
		goto fail;
	CloseTransientFile(fd);
	(void) durable_rename(tmp, KS_COUNTER_FILE, LOG);
	return;

fail:
	{
		int			save_errno = errno;

		CloseTransientFile(fd);
		errno = save_errno;
		ereport(LOG,
				(errcode_for_file_access(),
				 errmsg("could not write \"%s\": %m", tmp)));
	}
}

/*
 * Forget every counter of database dbid.  Called when a database is made
 * with that OID: no backend can be connected to it yet, so every counter
 * under the OID is a dropped database's, whose DEKs are not the new
 * one's.  Slots change keys only under the sweep lock, so the scan reads
 * them under it.
 */
static void
ForgetDatabase(Oid dbid)
{
	int			forgotten = 0;

	if (Counters == NULL || !OidIsValid(dbid))
		return;
	LWLockAcquire(SweepLock(), LW_EXCLUSIVE);
	for (int i = 0; i < Counters->nslots; i++)
	{
		CounterSlot *slot = &Counters->slots[i];
		uint32		hash;
		LWLock	   *lock;

		if (slot->key.dbid != dbid)
			continue;
		hash = KeyHash(&slot->key);
		lock = PartitionLock(hash);
		LWLockAcquire(lock, LW_EXCLUSIVE);
		hash_search_with_hash_value(CounterIndex, &slot->key, hash, HASH_REMOVE, NULL);
		slot->key.dbid = InvalidOid;
		slot->generation++;
		LWLockRelease(lock);
		forgotten++;
	}
	LWLockRelease(SweepLock());
	if (forgotten > 0)
		ereport(DEBUG1,
				(errmsg_internal("keysmith forgot %d encryption counters of a dropped database with OID %u",
								 forgotten, dbid)));
}

static void
KsCountersObjectAccess(ObjectAccessType access, Oid classId, Oid objectId, int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (access == OAT_POST_CREATE && classId == DatabaseRelationId)
		ForgetDatabase(objectId);
}

void
KsCountersInstallHooks(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = KsCountersObjectAccess;
}

static void
RequireCounters(void)
{
	if (Counters == NULL)
		elog(ERROR, "keysmith shared memory is not initialised");
}

void
KsCounterCreate(int32 key_id, int32 version)
{
	CounterKey	key = {MyDatabaseId, key_id, version};
	uint32		hash;
	LWLock	   *lock;

	RequireCounters();
	hash = KeyHash(&key);
	lock = PartitionLock(hash);
	LWLockAcquire(SweepLock(), LW_EXCLUSIVE);
	LWLockAcquire(lock, LW_EXCLUSIVE);
	InsertLocked(&key, hash, 0);
	LWLockRelease(lock);
	LWLockRelease(SweepLock());
}

/*
 * The slot of key, attaching ref if it is not (still) attached to it; NULL
 * when this server does not know the version.  Caller holds key's
 * partition lock.
 */
static CounterSlot *
Attached(const CounterKey *key, uint32 hash, KsCounterRef *ref)
{
	IndexEntry *entry;

	if (ref->slot > 0)
	{
		CounterSlot *slot = &Counters->slots[ref->slot - 1];

		if (slot->generation == ref->generation && KeyEqual(&slot->key, key))
			return slot;
		ref->slot = 0;
	}
	entry = hash_search_with_hash_value(CounterIndex, key, hash, HASH_FIND, NULL);
	if (entry == NULL)
		return NULL;
	ref->slot = entry->slot + 1;
	if (entry->slot < 0 || entry->slot >= Counters->nslots ||
		!KeyEqual(&Counters->slots[entry->slot].key, key))
		return NULL;			/* cannot happen; unknown is the safe answer */
	ref->generation = Counters->slots[entry->slot].generation;
	return &Counters->slots[entry->slot];
}

/*
 * Count one encryption.  KS_COUNT_FULL when the version has reached the
 * limit and KS_COUNT_UNKNOWN when this server does not know its count: in
 * both cases the caller must not encrypt under it, and rolls over instead.
 * The partition lock is held shared across the check and the add, so a
 * slot cannot change hands between them.
 */
KsCountResult
KsCounterTake(int32 key_id, int32 version, KsCounterRef *ref)
{
	CounterKey	key = {MyDatabaseId, key_id, version};
	uint64		limit = (uint64) keysmith_max_encryptions_per_dek;
	uint32		hash;
	LWLock	   *lock;
	CounterSlot *slot;
	KsCountResult result = KS_COUNT_OK;

	RequireCounters();
	hash = KeyHash(&key);
	lock = PartitionLock(hash);
	LWLockAcquire(lock, LW_SHARED);
	slot = Attached(&key, hash, ref);
	if (slot == NULL)
		result = KS_COUNT_UNKNOWN;
	else if (pg_atomic_fetch_add_u64(&slot->count, 1) >= limit)
	{
		/* not used after all: the count stays an upper bound either way */
		pg_atomic_fetch_sub_u64(&slot->count, 1);
		result = KS_COUNT_FULL;
	}
	else
		pg_atomic_write_u32(&slot->recent, 1);
	LWLockRelease(lock);
	return result;
}

int64
KsCounterValue(int32 key_id, int32 version)
{
	CounterKey	key = {MyDatabaseId, key_id, version};
	KsCounterRef ref = {0, 0};
	uint32		hash;
	LWLock	   *lock;
	CounterSlot *slot;
	int64		value = -1;

	RequireCounters();
	hash = KeyHash(&key);
	lock = PartitionLock(hash);
	LWLockAcquire(lock, LW_SHARED);
	slot = Attached(&key, hash, &ref);
	if (slot)
		value = (int64) pg_atomic_read_u64(&slot->count);
	LWLockRelease(lock);
	return value;
}
