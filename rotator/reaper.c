/*
 * rotator/reaper.c
 *
 * The lease reaper: a background worker, registered at preload, that
 * revokes expired leases.  It runs in the database named by
 * keysmith.database_name, wakes every keysmith.reaper_naptime (or at once
 * when revoke_lease asks), and works only on a primary: during recovery it
 * waits, and after promotion the same loop starts revoking.
 *
 * A lease moves active -> revoking -> revoked (rotator/lease_revoke.c, the
 * state machine shared with revoke_lease); each move is committed with
 * the side effect that causes it, so a crash anywhere resumes from the
 * table:
 *
 *   active    due when expires_at has passed.  In one transaction per batch,
 *             each lease gets NOLOGIN (and VALID UNTIL now) and becomes
 *             'revoking'.  That commit is what locks the role out.
 *   revoking  sessions are terminated; for every other database where the
 *             role owns or holds something, a short-lived helper worker
 *             connects there and runs REASSIGN OWNED / DROP OWNED; then, in
 *             one transaction, the same in this database, DROP ROLE, and
 *             the lease becomes 'revoked' with a 'revoked' event.  The drop
 *             and the state change commit together, so no lease is revoked
 *             twice.
 *
 * Each lease is handled in its own subtransaction, so one failing lease
 * rolls back alone: its attempts, last_error and next_attempt_at (backoff
 * doubling from 1 s to at most 5 min) are recorded and the others go on.
 * Nothing is ever given up.  Catching the error per lease (PG_TRY with a
 * subtransaction, as the procedural languages do) is the one place keysmith
 * catches rather than re-throws: a worker that died on the first bad lease
 * would hold up every other.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/htup_details.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "extension/common/guc.h"
#include "extension/common/owner_spi.h"
#include "extension/leases/lease_state.h"
#include "rotator/job.h"
#include "rotator/lease_revoke.h"
#include "rotator/reaper.h"

PGDLLEXPORT void KsOwnedHelperMain(Datum arg);

#define REAPER_BATCH	500

typedef struct KsHelperArgs
{
	Oid			roleid;
	Oid			owner;
} KsHelperArgs;

/* ------------------------------------------------------------ helper */

/*
 * REASSIGN OWNED / DROP OWNED for a lease role in another database, in a
 * helper worker connected there (KsRunHelper in rotator/job.c).
 */
static bool
RunOwnedHelper(Oid dboid, Oid roleid, Oid owner, char *errbuf, size_t errlen)
{
	KsHelperArgs args = {roleid, owner};

	return KsRunHelper(dboid, "KsOwnedHelperMain", "keysmith lease revocation helper",
					   &args, sizeof(args), errbuf, errlen);
}

void
KsOwnedHelperMain(Datum arg)
{
	KsHelperArgs args;

	KsHelperStart(&args, sizeof(args));
	KsJobBegin("keysmith: reassigning a lease role's objects", keysmith_reaper_lock_timeout);
	PG_TRY();
	{
		KsLeaseDropOwnedHere(args.roleid, args.owner);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		KsHelperFailed(edata->message);
		PG_RE_THROW();
	}
	PG_END_TRY();
	KsJobEnd();
	KsHelperDone();
	proc_exit(0);
}

/*
 * A helper worker cannot connect to a database with datallowconn = false
 * (it would die at start, and its reason would reach only the server log).
 * keysmith does not bypass the DBA's setting; it says why the lease waits,
 * in the current memory context.  NULL if every database allows connections.
 */
static char *
DatabaseRefusingConnections(List *dbs)
{
	ListCell   *lc;

	foreach(lc, dbs)
	{
		HeapTuple	tup = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(lfirst_oid(lc)));
		char	   *msg = NULL;

		if (!HeapTupleIsValid(tup))
			continue;			/* dropped meanwhile: nothing left there */
		if (!((Form_pg_database) GETSTRUCT(tup))->datallowconn)
			msg = psprintf("database \"%s\" does not allow connections (datallowconn is false), so the role's"
						   " objects there cannot be cleared; the lease is retried until it does",
						   NameStr(((Form_pg_database) GETSTRUCT(tup))->datname));
		ReleaseSysCache(tup);
		if (msg)
			return msg;
	}
	return NULL;
}

/* ------------------------------------------------------------ the rounds */

#define LEASE_ID_LEN 37			/* a uuid's text form and its NUL */

typedef struct DueLease
{
	char		lease_id[LEASE_ID_LEN];
	Oid			role_oid;
	Oid			owner;
	KsLeaseState state;
	char	   *helper_error;	/* set when another database failed */
} DueLease;

/*
 * May the reaper work in this database?  Only on keysmith's own catalog,
 * found by OID and trusted (extension/common/catalog.c): a schema called keysmith
 * with a table called lease proves nothing, since any role with CREATE on
 * the database can make one.
 */
static bool
LeaseCatalogUsable(Oid *extoid)
{
	KsCatalog	cat;
	char		why[256];
	KsCatalogStatus st = KsLeaseCatalog(&cat, why, sizeof(why));

	*extoid = cat.extoid;
	return KsWorkerCatalogUsable(KS_WORKER_REAPER, st, &cat, why);
}

/*
 * Run step(lease) in a subtransaction; on error roll back just that, and
 * record the failure on the lease.  True if the step succeeded.
 */
static bool
InSubtransaction(void (*step) (void *), DueLease *lease)
{
	char	   *message = NULL;

	if (KsJobTry(step, lease, &message))
		return true;
	KsLeaseRecordFailure(DirectFunctionCall1(uuid_in, CStringGetDatum(lease->lease_id)), message);
	ereport(LOG,
			(errmsg("keysmith reaper: revoking lease %s failed, will retry: %s", lease->lease_id, message)));
	return false;
}

/* One step of a lease's revocation (rotator/lease_revoke.c). */
static void
StepAdvance(void *arg)
{
	DueLease   *lease = arg;
	KsLeaseJob	job;

	memset(&job, 0, sizeof(job));
	job.lease_id = DirectFunctionCall1(uuid_in, CStringGetDatum(lease->lease_id));
	job.role_oid = lease->role_oid;
	job.owner = lease->owner;
	job.state = lease->state;
	job.reason = "expired";
	job.by = "reaper";
	job.helper_error = lease->helper_error;
	KsLeaseAdvance(&job);
	lease->state = job.state;
}

/* Copy the (lease_id, role_oid, owner) rows of the last SPI query. */
static DueLease *
FetchLeases(int *n, MemoryContext cxt, KsLeaseState state)
{
	DueLease   *leases;
	bool		isnull;

	*n = (int) SPI_processed;
	leases = MemoryContextAllocZero(cxt, sizeof(DueLease) * Max(*n, 1));
	for (int i = 0; i < *n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		strlcpy(leases[i].lease_id, SPI_getvalue(tup, desc, 1), sizeof(leases[i].lease_id));
		leases[i].role_oid = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
		leases[i].state = state;
		leases[i].owner = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		if (isnull)
			leases[i].owner = InvalidOid;
	}
	return leases;
}

/*
 * Sessions of leased roles that no longer exist.  revoke_lease terminates
 * a role's sessions before its transaction commits NOLOGIN, so a login in
 * between can outlive the DROP ROLE that follows.  Each round ends such a
 * session.  The first CTE is materialised so that keysmith.lease (which
 * has no index on role_oid) is read only when a session without a role
 * exists, which is almost never.
 */
static void
TerminateOrphanSessions(void)
{
	KsSpiExec("WITH orphan AS MATERIALIZED ("
			  "  SELECT a.pid, a.usesysid FROM pg_catalog.pg_stat_activity a"
			  "   WHERE a.usesysid IS NOT NULL"
			  "     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_authid r"
			  "                      WHERE r.oid OPERATOR(pg_catalog.=) a.usesysid))"
			  " SELECT pg_catalog.pg_terminate_backend(o.pid) FROM orphan o"
			  "  WHERE EXISTS (SELECT 1 FROM keysmith.lease l"
			  "                 WHERE l.role_oid OPERATOR(pg_catalog.=) o.usesysid)",
			  0, NULL, NULL, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed > 0)
		ereport(LOG,
				(errmsg("keysmith reaper: terminated %llu session(s) of leased roles that were already dropped",
						(unsigned long long) SPI_processed)));
}

/*
 * One round: lock out every due lease, then finish the revoking ones.
 * Returns true when a batch was full, so the caller goes again at once.
 */
bool
KsReaperRound(MemoryContext cxt)
{
	DueLease   *leases;
	int			n,
				n_nologin;
	Oid			state_type[1] = {TEXTOID};
	Datum		state[1];
	Oid			extoid;

	/* active -> revoking: NOLOGIN, committed before anything else */
	KsJobBegin("keysmith reaper: locking out expired leases", keysmith_reaper_lock_timeout);
	if (!LeaseCatalogUsable(&extoid))
	{
		KsJobEnd();
		return false;
	}
	(void) KsLeaseRebind(NULL);
	state[0] = KsLeaseStateDatum(KS_LEASE_ACTIVE);
	KsSpiExec("SELECT l.lease_id, l.role_oid, l.owner_role FROM keysmith.lease l"
			  " WHERE l.state OPERATOR(pg_catalog.=) $1"
			  "   AND l.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now()"
			  "   AND l.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()"
			  "   AND " KS_LEASE_BOUND_SQL("l")
			  " ORDER BY l.expires_at LIMIT " CppAsString2(REAPER_BATCH) " FOR UPDATE OF l SKIP LOCKED",
			  1, state_type, state, NULL, false, 0, SPI_OK_SELECT);
	leases = FetchLeases(&n_nologin, cxt, KS_LEASE_ACTIVE);
	if (n_nologin > 0 && KsWorkerWaitsForRestore(extoid))
	{
		KsJobEnd();
		return false;
	}
	for (int i = 0; i < n_nologin; i++)
		InSubtransaction(StepAdvance, &leases[i]);
	KsJobEnd();

	/* revoking -> revoked */
	KsJobBegin("keysmith reaper: revoking leases", keysmith_reaper_lock_timeout);
	TerminateOrphanSessions();
	state[0] = KsLeaseStateDatum(KS_LEASE_REVOKING);
	KsSpiExec("SELECT l.lease_id, l.role_oid, l.owner_role FROM keysmith.lease l"
			  " WHERE l.state OPERATOR(pg_catalog.=) $1"
			  "   AND l.next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()"
			  "   AND " KS_LEASE_BOUND_SQL("l")
			  " ORDER BY l.expires_at LIMIT " CppAsString2(REAPER_BATCH),
			  1, state_type, state, NULL, false, 0, SPI_OK_SELECT);
	leases = FetchLeases(&n, cxt, KS_LEASE_REVOKING);
	if (n > 0 && KsWorkerWaitsForRestore(extoid))
	{
		KsJobEnd();
		return false;
	}
	/* the sessions of the whole batch, with one scan of the backends */
	{
		Oid		   *roles = palloc(sizeof(Oid) * Max(n, 1));

		for (int i = 0; i < n; i++)
			roles[i] = leases[i].role_oid;
		KsLeaseTerminateSessions(roles, n);
	}
	/* which leases have objects in other databases */
	{
		List	  **others = MemoryContextAllocZero(cxt, sizeof(List *) * Max(n, 1));
		bool		any = false;

		for (int i = 0; i < n; i++)
		{
			bool		here;
			List	   *dbs = KsLeaseDatabases(leases[i].role_oid, &here);

			if (dbs != NIL)
			{
				MemoryContext old = MemoryContextSwitchTo(cxt);
				char	   *refused = DatabaseRefusingConnections(dbs);

				if (refused)
					leases[i].helper_error = refused;
				else
				{
					others[i] = list_copy(dbs);
					any = true;
				}
				MemoryContextSwitchTo(old);
			}
		}
		KsJobEnd();

		/* helpers run outside any transaction of ours */
		for (int i = 0; any && i < n; i++)
		{
			ListCell   *lc;

			foreach(lc, others[i])
			{
				char		err[512];

				pgstat_report_activity(STATE_RUNNING, "keysmith reaper: clearing objects in another database");
				if (!RunOwnedHelper(lfirst_oid(lc), leases[i].role_oid, leases[i].owner, err, sizeof(err)))
				{
					leases[i].helper_error = MemoryContextStrdup(cxt, err);
					break;
				}
			}
			pgstat_report_activity(STATE_IDLE, NULL);
		}
	}

	KsJobBegin("keysmith reaper: dropping revoked roles", keysmith_reaper_lock_timeout);
	for (int i = 0; i < n; i++)
	{
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2] = {CStringGetTextDatum(leases[i].lease_id), KsLeaseStateDatum(KS_LEASE_REVOKING)};

		/* lock it and make sure nobody (revoke_lease) finished it meanwhile */
		KsSpiExec("SELECT 1 FROM keysmith.lease WHERE lease_id OPERATOR(pg_catalog.=) $1::pg_catalog.uuid"
				  " AND state OPERATOR(pg_catalog.=) $2 FOR UPDATE SKIP LOCKED",
				  2, types, values, NULL, false, 0, SPI_OK_SELECT);
		if (SPI_processed == 0)
			continue;
		InSubtransaction(StepAdvance, &leases[i]);
	}
	KsJobEnd();

	return n_nologin == REAPER_BATCH || n == REAPER_BATCH;
}
