/*
 * extension/keys/families.c
 *
 * Shredding in key families, as SQL-callable functions: complete_shreds,
 * and the local provider's retire_local_master_key.  Families and their
 * members are created in keys.c (create_key_family, create_key(...,
 * parent => ...), create_keys); the wrapping is extension/keys/family.c.
 *
 * complete_shreds(family) makes every shred of the family complete: the
 * copies of an erased member DEK that outlive it (dead tuples, WAL,
 * backups, dumps) are sealed by family versions up to the one recorded in
 * keysmith.key_shred, so it
 *
 *   1. for a family of the local provider, run by a superuser: adds a
 *      master key version when the newest one wraps a live family version
 *      and a shred is not complete (pending, or blocked by that master key
 *      version), then waits for the transactions that may still be
 *      wrapping under the older one (they began before the new line was in
 *      the file);
 *   2. when a shred is pending or step 1 added a master key: rotates the
 *      family and rewraps every live member under the new version (the
 *      family row FOR UPDATE: no member is being wrapped);
 *   3. destroys every older family version (erases its wrapped DEK);
 *   4. local provider, superuser: retires from the key file each master key
 *      version up to the newest that wrapped a destroyed family version,
 *      once no key of this database needs it.  The file is not
 *      transactional, so this happens when the transaction commits (an
 *      abort would bring the old family versions back, wrapped under keys
 *      no longer in the file).
 *
 * What stays beyond keysmith's reach is in docs/key-rotation.md: master key
 * versions other databases of the cluster use (retiring is a superuser's
 * act, checked against this database only), KMS key versions of external
 * providers, and file-system remanence of the old key file.
 */
#include "postgres.h"

#include <sys/stat.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "extension/common/args.h"
#include "extension/common/catalog.h"
#include "extension/common/errors.h"
#include "extension/common/guc.h"
#include "extension/common/owner_spi.h"
#include "extension/common/secret_mem.h"
#include "extension/keys/counters.h"
#include "extension/keys/dek_shared.h"
#include "extension/keys/family.h"
#include "extension/keys/key_acl.h"
#include "extension/keys/key_lifecycle.h"
#include "extension/keys/key_store.h"
#include "kms/local.h"

PG_FUNCTION_INFO_V1(keysmith_complete_shreds);
PG_FUNCTION_INFO_V1(keysmith_retire_local_master_key);
PG_FUNCTION_INFO_V1(keysmith_local_master_key_oldest);

/* Master key retirements waiting for their transaction to commit. */
typedef struct PendingRetire
{
	char	   *path;
	uint32		version;
	SubTransactionId subid;
} PendingRetire;

static List *Pending = NIL;
static bool CallbacksRegistered = false;

static void
ForgetPending(SubTransactionId subid)
{
	ListCell   *lc;

	foreach(lc, Pending)
	{
		PendingRetire *p = lfirst(lc);

		if (subid == InvalidSubTransactionId || p->subid == subid)
		{
			pfree(p->path);
			pfree(p);
			Pending = foreach_delete_current(Pending, lc);
		}
	}
}

/*
 * At commit: retire what the transaction decided.  Nothing here may raise
 * an ERROR (the transaction is committed): a failure is a WARNING, and the
 * shreds stay blocked in keysmith.key_shreds until the next run.
 */
static void
RetireXactCallback(XactEvent event, void *arg)
{
	ListCell   *lc;

	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (Pending != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot prepare a transaction that retires local master keys")));
			break;
		case XACT_EVENT_COMMIT:
			foreach(lc, Pending)
			{
				PendingRetire *p = lfirst(lc);
				KsError		err;

				if (KsLocalRetireKey(p->path, p->version, &err) == KS_OK)
					ereport(LOG,
							(errmsg("keysmith: master key version %u retired from \"%s\"", p->version, p->path)));
				else
					ereport(WARNING,
							(errmsg("keysmith: could not retire master key version %u: %s", p->version, err.message),
							 errhint("The shreds it blocks stay blocked; run keysmith.complete_shreds again.")));
			}
			ForgetPending(InvalidSubTransactionId);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			ForgetPending(InvalidSubTransactionId);
			break;
		default:
			break;
	}
}

static void
RetireSubXactCallback(SubXactEvent event, SubTransactionId mySubid,
					  SubTransactionId parentSubid, void *arg)
{
	ListCell   *lc;

	if (event == SUBXACT_EVENT_ABORT_SUB)
		ForgetPending(mySubid);
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
		foreach(lc, Pending)
		{
			PendingRetire *p = lfirst(lc);

			if (p->subid == mySubid)
				p->subid = parentSubid;
		}
}

static void
RetireAtCommit(const char *path, uint32 version)
{
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);
	PendingRetire *p = palloc(sizeof(PendingRetire));

	if (!CallbacksRegistered)
	{
		RegisterXactCallback(RetireXactCallback, NULL);
		RegisterSubXactCallback(RetireSubXactCallback, NULL);
		CallbacksRegistered = true;
	}
	p->path = pstrdup(path);
	p->version = version;
	p->subid = GetCurrentSubTransactionId();
	Pending = lappend(Pending, p);
	MemoryContextSwitchTo(old);

	/*
	 * The file changes in the commit callback: the commit must be on disk
	 * by then, whatever synchronous_commit says, or a crash could undo the
	 * rewrap that moved keys off the version the file no longer has.
	 */
	ForceSyncCommit();
}

/*
 * Wait until every other transaction of this database that is running now
 * has ended: one that read the master key file before its newest version
 * was appended may still be wrapping under the previous one, and its rows
 * are not visible yet.  As CREATE INDEX CONCURRENTLY waits for older
 * transactions, but with keysmith's own deadline: any login role can hold
 * a transaction open.  Returns false when the deadline passed first.
 */
#define KS_RETIRE_WAIT_MS 30000

static bool
WaitForRunningTransactions(void)
{
	int			n;
	VirtualTransactionId *vxids = GetCurrentVirtualXIDs(InvalidTransactionId, false, false,
														 PROC_IS_AUTOVACUUM | PROC_IN_VACUUM, &n);
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), KS_RETIRE_WAIT_MS);

	for (int i = 0; i < n; i++)
	{
		while (!VirtualXactLock(vxids[i], false))
		{
			if (GetCurrentTimestamp() >= deadline)
				return false;
			CHECK_FOR_INTERRUPTS();
			pg_usleep(10000L);
		}
	}
	pfree(vxids);
	return true;
}

/* The master key file a local provider instance reads. */
static const char *
LocalFile(KsKeyRec *rec)
{
	const char *own = KsKmsOptionValue(KsKeyInstance(rec), "master_key_file");

	return own != NULL ? own : keysmith_local_master_key_file;
}

/*
 * The local providers of this database that read the master key file at
 * path, as a text[] of their names, however each option spells the path
 * (relative to the data directory, the server's cwd; through a link):
 * compared by device and inode.  With unreadable, a provider whose file
 * cannot be stat'd is counted as reading it too (never assumed apart).
 */
static Datum
ProvidersReadingFile(const char *path, bool unreadable)
{
	struct stat target;
	Datum	   *names;
	int			n = 0;

	if (stat(path, &target) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat master key file \"%s\": %m", path)));
	KsKeyExec("SELECT p.name, p.options OPERATOR(pg_catalog.->>) 'master_key_file' FROM keysmith.kms_provider p"
			  " WHERE p.type OPERATOR(pg_catalog.=) 'local'", 0, NULL, NULL, NULL, SPI_OK_SELECT);
	names = palloc(sizeof(Datum) * (SPI_processed + 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *file = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		struct stat st;
		bool		same;

		if (stat(file ? file : keysmith_local_master_key_file, &st) != 0)
			same = unreadable;
		else
			same = st.st_dev == target.st_dev && st.st_ino == target.st_ino;
		if (same)
			names[n++] = CStringGetTextDatum(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	}
	return PointerGetDatum(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * Key versions of this database under master key version v of the file the
 * providers (ProvidersReadingFile) read.  Members are wrapped by their
 * family, not by a master key.
 */
static int64
LiveUnderMasterKey(Datum providers, uint32 v)
{
	Oid			types[2] = {TEXTOID, TEXTARRAYOID};
	Datum		values[2] = {CStringGetTextDatum(psprintf("%u", v)), providers};
	bool		isnull;

	KsKeyExec("SELECT pg_catalog.count(*) FROM keysmith.key_version v"
			  "  JOIN keysmith.key k ON k.key_id OPERATOR(pg_catalog.=) v.key_id"
			  " WHERE k.kms OPERATOR(pg_catalog.=) ANY ($2) AND k.parent_id IS NULL"
			  "   AND v.wrapped_dek IS NOT NULL AND v.kek_version OPERATOR(pg_catalog.=) $1",
			  2, types, values, NULL, SPI_OK_SELECT);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* A copy of the master key versions in a file (no keys), oldest first. */
static int
FileVersions(const char *path, uint32 *versions, uint32 *current)
{
	KsMasterKeySet *set = KsSecretAlloc(CurrentMemoryContext, sizeof(KsMasterKeySet));
	KsError		err;
	int			n;

	if (KsLocalLoad(path, set, &err) != KS_OK)
	{
		KsSecretFree(set);
		KsReportError(&err);
	}
	n = set->count;
	for (int i = 0; i < n; i++)
		versions[i] = set->keys[i].version;
	*current = set->current;
	KsSecretFree(set);
	return n;
}

/* A shred of this family not yet complete on the family's side? */
static bool
HasPendingShreds(int32 family_id)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(family_id)};
	bool		isnull;

	KsKeyExec("SELECT EXISTS (SELECT 1 FROM keysmith.key_shred s"
			  "  JOIN keysmith.key_version pv ON pv.key_id OPERATOR(pg_catalog.=) s.parent_id"
			  "   AND pv.version OPERATOR(pg_catalog.<=) s.wrapped_by AND pv.wrapped_dek IS NOT NULL"
			  " WHERE s.parent_id OPERATOR(pg_catalog.=) $1)",
			  1, types, values, NULL, SPI_OK_SELECT);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * A shred of this family that keysmith.key_shreds does not call complete:
 * pending, or blocked by a master key version still in the file.
 */
static bool
HasIncompleteShreds(const char *family)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(family)};
	bool		isnull;

	KsKeyExec("SELECT EXISTS (SELECT 1 FROM keysmith.key_shreds WHERE family OPERATOR(pg_catalog.=) $1"
			  "   AND state OPERATOR(pg_catalog.<>) 'complete')",
			  1, types, values, NULL, SPI_OK_SELECT);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Did the newest master key version wrap a version of the family, live or
 * destroyed?  Then it must leave the file for the shreds to complete, and
 * the newest version never can: a new one is added first.
 */
static bool
NewestWrapsFamily(KsKeyRec *rec)
{
	uint32	   *versions = palloc(sizeof(uint32) * KS_LOCAL_MAX_KEYS);
	uint32		current;
	Oid			types[2] = {INT4OID, TEXTOID};
	Datum		values[2];
	bool		isnull;

	(void) FileVersions(LocalFile(rec), versions, &current);
	values[0] = Int32GetDatum(rec->key_id);
	values[1] = CStringGetTextDatum(psprintf("%u", current));
	KsKeyExec("SELECT EXISTS (SELECT 1 FROM keysmith.key_version WHERE key_id OPERATOR(pg_catalog.=) $1"
			  "   AND kek_version OPERATOR(pg_catalog.=) $2)",
			  2, types, values, NULL, SPI_OK_SELECT);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The newest master key version that wrapped a destroyed version of the
 * family (0: none); with all, any version, live or not (every one but the
 * new version complete_shreds makes is destroyed by it).
 */
static int64
NewestMasterKeyOfFamily(KsKeyRec *rec, bool all)
{
	Oid			types[2] = {INT4OID, BOOLOID};
	Datum		values[2] = {Int32GetDatum(rec->key_id), BoolGetDatum(all)};
	bool		isnull;

	KsKeyExec("SELECT COALESCE(pg_catalog.max(kek_version::pg_catalog.int8), 0)"
			  "  FROM keysmith.key_version WHERE key_id OPERATOR(pg_catalog.=) $1 AND ($2 OR wrapped_dek IS NULL)"
			  "   AND kek_version OPERATOR(pg_catalog.~) '^[0-9]{1,10}$'",
			  2, types, values, NULL, SPI_OK_SELECT);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * One complete_shreds or retire_local_master_key at a time in the cluster
 * does master key work: a transaction-level advisory lock with a tag no SQL
 * function can ask for (pg_advisory_* set the last field to 1 or 2), taken
 * without waiting.  A second run cannot wait for it: the first waits for
 * every running transaction, the second's included.
 */
#define KS_MASTER_KEY_LOCK_CLASS 19284
#define KS_MASTER_KEY_LOCK_KIND 4

static bool
LockMasterKeyWork(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, InvalidOid, KS_MASTER_KEY_LOCK_CLASS, 0, KS_MASTER_KEY_LOCK_KIND);
	return LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * The other keys of this database whose versions are wrapped under master
 * key versions up to `upto` of the family's file move to its newest, by
 * rotate_kek (as the superuser this runs for: each is audited as its own
 * rotate_kek), so those master key versions can leave the file.  Only
 * versions that are not the newest need it; returns how many keys moved.
 */
static int
MoveKeysOffOldMasterKeys(KsKeyRec *family, int64 upto)
{
	uint32	   *versions = palloc(sizeof(uint32) * KS_LOCAL_MAX_KEYS);
	uint32		current;
	List	   *names = NIL;
	ListCell   *lc;
	int			moved = 0;
	Oid			types[4] = {INT8OID, INT8OID, INT4OID, TEXTARRAYOID};
	Datum		values[4];

	if (upto <= 0)
		return 0;
	(void) FileVersions(LocalFile(family), versions, &current);
	values[0] = Int64GetDatum(upto);
	values[1] = Int64GetDatum((int64) current);
	values[2] = Int32GetDatum(family->key_id);
	/* a provider whose file is unreadable cannot rotate_kek: left, and counted as a user */
	values[3] = ProvidersReadingFile(LocalFile(family), false);
	KsKeyExec("SELECT DISTINCT k.name FROM keysmith.key k"
			  "  JOIN keysmith.key_version v ON v.key_id OPERATOR(pg_catalog.=) k.key_id"
			  " WHERE k.kms OPERATOR(pg_catalog.=) ANY ($4) AND k.parent_id IS NULL"
			  "   AND k.key_id OPERATOR(pg_catalog.<>) $3"
			  "   AND v.wrapped_dek IS NOT NULL"
			  "   AND v.kek_version OPERATOR(pg_catalog.~) '^[0-9]{1,10}$'"
			  "   AND v.kek_version::pg_catalog.int8 OPERATOR(pg_catalog.<=) $1"
			  "   AND v.kek_version::pg_catalog.int8 OPERATOR(pg_catalog.<>) $2",
			  4, types, values, NULL, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
		names = lappend(names, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	foreach(lc, names)
	{
		Oid			ntypes[1] = {TEXTOID};
		Datum		nvalues[1] = {CStringGetTextDatum((char *) lfirst(lc))};

		/* a key another transaction holds is left where it is: no wait */
		KsKeyExec("SELECT 1 FROM keysmith.key WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE SKIP LOCKED",
				  1, ntypes, nvalues, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			continue;
		KsKeyExec("SELECT keysmith.rotate_kek($1)", 1, ntypes, nvalues, NULL, SPI_OK_SELECT);
		moved++;
	}
	return moved;
}

/*
 * keysmith.complete_shreds(parent text, retire_master_key boolean DEFAULT
 * true) RETURNS (family_version, members_rewrapped, versions_destroyed,
 * master_keys_retired)
 *
 * Needs admin on the family; retiring master keys also needs superuser
 * (the file serves the whole cluster).  Safe to run again: with no shred
 * pending it changes no version and only retires what is still due.
 */
Datum
keysmith_complete_shreds(PG_FUNCTION_ARGS)
{
	char	   *name;
	bool		retire;
	KsKeyOp		op;
	KsKeyRec	rec;
	TupleDesc	tupdesc;
	Datum		result[4];
	bool		rnulls[4] = {false, false, false, false};
	int64		rewrapped = 0;
	int			destroyed = 0;
	int			retired = 0;
	bool		local;
	bool		may_retire;
	bool		pending;
	bool		rekey = false;	/* the family rotated under the newest master key */
	int			moved = 0;

	KsRequirePrimary("complete shreds", KS_PRIMARY_HINT_KEYS);
	KsRequireArg(fcinfo, 0, "parent");
	KsRequireArg(fcinfo, 1, "retire_master_key");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	retire = PG_GETARG_BOOL(1);
	KsKeyRequireReadCommitted("complete shreds");
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	KsKeyOpBegin(&op);
	KsKeyPeek(name, &rec);
	KsRequireKeyAdmin(op.invoker, rec.key_id, rec.name);
	KsKeyRequireNotDestroyed(&rec);
	if (!rec.family)
		ereport(ERROR,
				(errcode(ERRCODE_KS_KEY_FAMILY),
				 errmsg("key \"%s\" is not a key family", rec.name),
				 errhint("A plain key is shredded by keysmith.destroy_key; only members of a family need this.")));
	local = strcmp(rec.kms_type, "local") == 0;
	may_retire = local && retire && superuser_arg(op.invoker);

	/*
	 * The master key steps come before the family is locked: waiting for
	 * other transactions while holding it would stop every member's
	 * creation and rollover for as long as any login role keeps a
	 * transaction open.  One master key run at a time (an advisory lock
	 * no SQL can take), so two runs never wait for each other.
	 */
	/* with every shred complete there is no master key to retire */
	if (may_retire && !HasPendingShreds(rec.key_id) && !HasIncompleteShreds(rec.name))
		may_retire = false;
	if (may_retire && !LockMasterKeyWork())
	{
		ereport(WARNING,
				(errmsg("keysmith: complete_shreds retires no master key: another run is retiring master keys"),
				 errhint("The shreds it leaves blocked complete when keysmith.complete_shreds('%s') runs again.", rec.name)));
		may_retire = false;
	}
	if (may_retire)
	{
		if (NewestWrapsFamily(&rec))
		{
			uint32		added;
			KsError		err;

			/* the new family version goes under a new master key, so the old one can leave */
			if (KsLocalAppendKey(LocalFile(&rec), &added, &err) != KS_OK)
				KsReportError(&err);
			KsKeyAudit(&op, "add_master_key", NULL, 0,
					   psprintf("local master key version %u, for complete_shreds of %s", added, rec.name));
			rekey = true;
		}
		/* whatever is retired below: nothing may still be wrapping under it */
		if (!WaitForRunningTransactions())
		{
			ereport(WARNING,
					(errmsg("keysmith: complete_shreds retires no master key: transactions that began before it still run after %d s",
							KS_RETIRE_WAIT_MS / 1000),
					 errhint("The shreds they block stay blocked; run keysmith.complete_shreds('%s') again.", rec.name)));
			may_retire = false;
		}
		else
		{
			/*
			 * Every other key under a master key version that wrapped a
			 * version of the family moves to the newest first, still
			 * before the family is locked; a key another transaction holds
			 * is skipped (and keeps its master key version in the file).
			 * Not the family: a rotate_kek would make one more copy of the
			 * versions about to be destroyed, under the newest master key.
			 * It is rotated instead, which puts its one live version under
			 * the newest.
			 */
			moved = MoveKeysOffOldMasterKeys(&rec, NewestMasterKeyOfFamily(&rec, true));
			rekey = true;
		}
	}
	KsKeyLock(name, 0, &rec);
	KsKeyRequireNotDestroyed(&rec);
	pending = HasPendingShreds(rec.key_id);
	if (pending || rekey)
	{
		Oid			types[2] = {INT4OID, INT4OID};
		Datum		values[2];
		bool		isnull;

		KsKeyAddVersion(&rec, rec.current_version + 1);
		rewrapped = KsFamilyRewrapMembers(&rec);
		values[0] = Int32GetDatum(rec.key_id);
		values[1] = Int32GetDatum(rec.current_version);
		KsKeyExec("SELECT pg_catalog.count(*) FROM keysmith.key k"
				  "  JOIN keysmith.key_version v ON v.key_id OPERATOR(pg_catalog.=) k.key_id"
				  " WHERE k.parent_id OPERATOR(pg_catalog.=) $1 AND v.wrapped_dek IS NOT NULL"
				  "   AND v.wrapped_by OPERATOR(pg_catalog.<>) $2",
				  2, types, values, NULL, SPI_OK_SELECT);
		if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) != 0)
			elog(ERROR, "keysmith: a member of family \"%s\" is still wrapped by an older version", rec.name);
		KsKeyExec("UPDATE keysmith.key_version SET state = " KS_KEY_DESTROYED_SQL ", wrapped_dek = NULL,"
				  "       destroyed_at = pg_catalog.now()"
				  " WHERE key_id OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.<) $2"
				  "   AND state OPERATOR(pg_catalog.<>) " KS_KEY_DESTROYED_SQL,
				  2, types, values, NULL, SPI_OK_UPDATE);
		destroyed = (int) SPI_processed;
		KsSharedDekInvalidate(MyDatabaseId, (uint32) rec.key_id);
	}

	if (may_retire)
	{
		uint32	   *versions = palloc(sizeof(uint32) * KS_LOCAL_MAX_KEYS);
		uint32		current;
		int			n = FileVersions(LocalFile(&rec), versions, &current);
		Datum		users = ProvidersReadingFile(LocalFile(&rec), true);
		int64		newest_used;

		newest_used = NewestMasterKeyOfFamily(&rec, false);
		for (int i = 0; i < n; i++)
		{
			if (versions[i] == current || (int64) versions[i] > newest_used)
				continue;
			if (LiveUnderMasterKey(users, versions[i]) > 0)
				continue;		/* still needed: the shred stays blocked, and says why */
			RetireAtCommit(LocalFile(&rec), versions[i]);
			retired++;
		}
	}

	KsKeyAudit(&op, "complete_shreds", &rec, rec.current_version,
			   psprintf(INT64_FORMAT " member version(s) rewrapped, %d family version(s) destroyed, %d other key(s) moved to the newest master key, %d master key version(s) retired at commit",
						rewrapped, destroyed, moved, retired));
	KsKeyOpEnd(&op);
	result[0] = Int32GetDatum(rec.current_version);
	result[1] = Int64GetDatum(rewrapped);
	result[2] = Int32GetDatum(destroyed);
	result[3] = Int32GetDatum(retired);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), result, rnulls)));
}

/*
 * keysmith.retire_local_master_key(version integer) RETURNS void
 *
 * Superuser: removes a master key version from keysmith.local_master_key_file
 * when the transaction commits, refused while a key of this database needs
 * it (55006) or when it is the newest.  Other databases of the cluster are
 * not visible here: check keysmith.local_master_keys() in each first.
 */
Datum
keysmith_retire_local_master_key(PG_FUNCTION_ARGS)
{
	int32		version;
	uint32	   *versions = palloc(sizeof(uint32) * KS_LOCAL_MAX_KEYS);
	uint32		current;
	int			n;
	bool		found = false;
	KsKeyOp		op;
	int64		live;

	KsRequirePrimary("retire a master key", KS_PRIMARY_HINT_KEYS);
	KsRequireArg(fcinfo, 0, "version");
	version = PG_GETARG_INT32(0);
	KsKeyRequireReadCommitted("retire a master key");
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only a superuser may retire a master key version"),
				 errdetail("The master key file serves every database of the cluster.")));
	n = FileVersions(keysmith_local_master_key_file, versions, &current);
	for (int i = 0; i < n; i++)
		found |= versions[i] == (uint32) version;
	if (version <= 0 || !found)
		ereport(ERROR,
				(errcode(ERRCODE_KS_KEK_VERSION_UNKNOWN),
				 errmsg("the master key file has no version %d", version)));
	if ((uint32) version == current)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("master key version %d is the newest: new keys are wrapped with it", version),
				 errhint("Add one with keysmith.add_local_master_key() and move keys to it with keysmith.rotate_kek first.")));
	KsKeyOpBegin(&op);
	if (!LockMasterKeyWork())
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("another complete_shreds or retire_local_master_key is retiring master keys"),
				 errhint("Try again when it has ended.")));
	if (!WaitForRunningTransactions())
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("transactions that began before retire_local_master_key still run after %d s",
						KS_RETIRE_WAIT_MS / 1000),
				 errdetail("One of them may be wrapping a key under master key version %d.", version),
				 errhint("Try again when they have ended (pg_stat_activity shows them).")));
	live = LiveUnderMasterKey(ProvidersReadingFile(keysmith_local_master_key_file, true), (uint32) version);
	if (live > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("master key version %d still wraps " INT64_FORMAT " key version(s) of this database", version, live),
				 errhint("Run keysmith.rotate_kek on those keys (keysmith.local_master_keys() counts them).")));
	RetireAtCommit(keysmith_local_master_key_file, (uint32) version);
	KsKeyAudit(&op, "retire_master_key", NULL, 0, psprintf("local master key version %d, at commit", version));
	KsKeyOpEnd(&op);
	PG_RETURN_VOID();
}

/*
 * keysmith._local_master_key_oldest(provider text) RETURNS bigint: the
 * oldest version in the file a local provider reads (NULL for another
 * type).  For keysmith.key_shreds; reads only the files providers name.
 */
Datum
keysmith_local_master_key_oldest(PG_FUNCTION_ARGS)
{
	KsKeyRec	rec;
	KsOwnerSpi	spi;
	uint32	   *versions = palloc(sizeof(uint32) * KS_LOCAL_MAX_KEYS);
	uint32		current;
	uint32		oldest = 0;
	int			n;

	memset(&rec, 0, sizeof(rec));
	KsOwnerSpiBegin(&spi);
	KsKeyLoadProvider(text_to_cstring(PG_GETARG_TEXT_PP(0)), &rec);
	KsOwnerSpiEnd(&spi);
	if (strcmp(rec.kms_type, "local") != 0)
		PG_RETURN_NULL();
	n = FileVersions(LocalFile(&rec), versions, &current);
	for (int i = 0; i < n; i++)
		if (oldest == 0 || versions[i] < oldest)
			oldest = versions[i];
	PG_RETURN_INT64((int64) oldest);
}
