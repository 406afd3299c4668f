/*
 * extension/counters.c
 *
 * Encryption counters per DEK version, shared by all backends and kept
 * across restarts, so no DEK version ever encrypts more than
 * keysmith.max_encryptions_per_dek values (at most 2^32, the random-nonce
 * bound of NIST SP 800-38D).
 *
 * Each counter lives in shared memory and is bumped with one atomic add per
 * encryption.  What reaches disk is a reservation: before a counter passes
 * its reserved bound, the bound is raised by a block and the whole table is
 * written to $PGDATA/keysmith_counters (write, fsync, rename).  After a
 * crash every counter restarts at its reserved bound, which can only
 * over-count, never under-count.
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"

#include "keysmith.h"

#define KS_COUNTER_SLOTS 16384
#define KS_COUNTER_FILE "keysmith_counters"
#define KS_COUNTER_MAGIC 0x4B53434EU	/* "KSCN" */

struct KsCounterSlot
{
	Oid			dbid;			/* InvalidOid = free */
	int32		key_id;
	int32		version;
	pg_atomic_uint64 count;
	uint64		reserved;		/* persisted upper bound of count */
};

typedef struct KsCounterShared
{
	LWLock	   *lock;
	int			used;
	KsCounterSlot slots[KS_COUNTER_SLOTS];
} KsCounterShared;

typedef struct KsCounterRecord
{
	Oid			dbid;
	int32		key_id;
	int32		version;
	uint64		reserved;
} KsCounterRecord;

static KsCounterShared *Counters = NULL;

static void KsCountersShutdown(int code, Datum arg);

void
KsCountersShmemRequest(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(KsCounterShared)));
	RequestNamedLWLockTranche("keysmith", 1);
}

/* Read the persisted reservations; called once, in the postmaster. */
static void
LoadCounters(void)
{
	int			fd = OpenTransientFile(KS_COUNTER_FILE, O_RDONLY | PG_BINARY);
	uint32		header[2];
	KsCounterRecord rec;

	if (fd < 0)
	{
		if (errno != ENOENT)
			ereport(LOG,
					(errcode_for_file_access(),
					 errmsg("could not open \"%s\": %m", KS_COUNTER_FILE)));
		return;
	}
	if (read(fd, header, sizeof(header)) != sizeof(header) ||
		header[0] != KS_COUNTER_MAGIC || header[1] > KS_COUNTER_SLOTS)
	{
		ereport(WARNING,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("keysmith counter file \"%s\" is corrupt; encryption counts restart", KS_COUNTER_FILE)));
		CloseTransientFile(fd);
		return;
	}
	for (uint32 i = 0; i < header[1]; i++)
	{
		KsCounterSlot *slot;

		if (read(fd, &rec, sizeof(rec)) != sizeof(rec))
			break;
		slot = &Counters->slots[Counters->used++];
		slot->dbid = rec.dbid;
		slot->key_id = rec.key_id;
		slot->version = rec.version;
		slot->reserved = rec.reserved;
		/* we do not know how much of the reservation was used: assume all */
		pg_atomic_write_u64(&slot->count, rec.reserved);
	}
	CloseTransientFile(fd);
}

void
KsCountersShmemStartup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	Counters = ShmemInitStruct("keysmith counters", sizeof(KsCounterShared), &found);
	if (!found)
	{
		memset(Counters, 0, sizeof(KsCounterShared));
		Counters->lock = &(GetNamedLWLockTranche("keysmith"))->lock;
		for (int i = 0; i < KS_COUNTER_SLOTS; i++)
			pg_atomic_init_u64(&Counters->slots[i].count, 0);
		LoadCounters();
	}
	LWLockRelease(AddinShmemInitLock);
	if (!IsUnderPostmaster)
		on_shmem_exit(KsCountersShutdown, (Datum) 0);
}

/*
 * Write every reservation durably.  Caller holds the lock exclusively (or
 * is the postmaster at shutdown).  elevel is ERROR in backends, LOG at
 * shutdown, where an error must not stop the shutdown.
 */
static bool
PersistCountersAt(int elevel)
{
	char		tmp[] = KS_COUNTER_FILE ".tmp";
	int			fd;
	uint32		header[2] = {KS_COUNTER_MAGIC, (uint32) Counters->used};

	fd = OpenTransientFile(tmp, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY);
	if (fd < 0)
	{
		ereport(elevel,
				(errcode_for_file_access(),
				 errmsg("could not create \"%s\": %m", tmp)));
		return false;
	}
	if (write(fd, header, sizeof(header)) != sizeof(header))
		goto fail;
	for (int i = 0; i < Counters->used; i++)
	{
		KsCounterSlot *slot = &Counters->slots[i];
		KsCounterRecord rec = {slot->dbid, slot->key_id, slot->version, slot->reserved};

		if (write(fd, &rec, sizeof(rec)) != sizeof(rec))
			goto fail;
	}
	if (pg_fsync(fd) != 0)
		goto fail;
	CloseTransientFile(fd);
	return durable_rename(tmp, KS_COUNTER_FILE, elevel) == 0;

fail:
	{
		int			save_errno = errno;

		CloseTransientFile(fd);
		errno = save_errno;
		ereport(elevel,
				(errcode_for_file_access(),
				 errmsg("could not write \"%s\": %m", tmp)));
		return false;
	}
}

static void
PersistCounters(void)
{
	PersistCountersAt(ERROR);
}

/*
 * At a clean shutdown, record the exact counts so a restart resumes from
 * them rather than from the reserved bounds.  After a crash this does not
 * run, and the reserved bounds (never lower than the truth) are used.
 */
static void
KsCountersShutdown(int code, Datum arg)
{
	if (code != 0 || Counters == NULL)
		return;
	for (int i = 0; i < Counters->used; i++)
		Counters->slots[i].reserved = pg_atomic_read_u64(&Counters->slots[i].count);
	PersistCountersAt(LOG);
}

KsCounterSlot *
KsCounterFind(int32 key_id, int32 version, bool create)
{
	KsCounterSlot *found = NULL;

	if (Counters == NULL)
		elog(ERROR, "keysmith shared memory is not initialised");
	LWLockAcquire(Counters->lock, create ? LW_EXCLUSIVE : LW_SHARED);
	for (int i = 0; i < Counters->used; i++)
	{
		KsCounterSlot *slot = &Counters->slots[i];

		if (slot->dbid == MyDatabaseId && slot->key_id == key_id && slot->version == version)
		{
			found = slot;
			break;
		}
	}
	if (found == NULL && create)
	{
		if (Counters->used >= KS_COUNTER_SLOTS)
		{
			LWLockRelease(Counters->lock);
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("keysmith tracks at most %d data key versions", KS_COUNTER_SLOTS)));
		}
		found = &Counters->slots[Counters->used++];
		found->dbid = MyDatabaseId;
		found->key_id = key_id;
		found->version = version;
		found->reserved = 0;
		pg_atomic_write_u64(&found->count, 0);
	}
	LWLockRelease(Counters->lock);
	return found;
}

uint64
KsCounterValue(int32 key_id, int32 version)
{
	KsCounterSlot *slot = KsCounterFind(key_id, version, false);

	return slot ? pg_atomic_read_u64(&slot->count) : 0;
}

/*
 * Count one encryption.  Returns false when the version has reached the
 * limit: the caller must not encrypt under it and rolls over instead.
 */
bool
KsCounterTake(KsCounterSlot *slot)
{
	uint64		limit = (uint64) keysmith_max_encryptions_per_dek;
	uint64		n = pg_atomic_fetch_add_u64(&slot->count, 1);

	if (n >= limit)
	{
		/* not used after all: keep the count equal to real encryptions */
		pg_atomic_fetch_sub_u64(&slot->count, 1);
		return false;
	}
	if (n >= slot->reserved)
	{
		uint64		block = Max(Min(limit / 1024, (uint64) 1 << 20), 1);

		LWLockAcquire(Counters->lock, LW_EXCLUSIVE);
		if (n >= slot->reserved)
		{
			while (slot->reserved <= n)
				slot->reserved += block;
			PersistCounters();
		}
		LWLockRelease(Counters->lock);
	}
	return true;
}
