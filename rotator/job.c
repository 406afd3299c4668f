/*
 * rotator/job.c
 *
 * The job runner shared by keysmith's background workers (rotator/worker.c
 * runs the loop).  What the rounds share is here: the workers' latches and
 * wake-at-commit (revoke_lease and rotate_secret wake a worker when they
 * commit), the one-time log lines about an unusable catalog, rounds as
 * transactions with bounded lock waits, one subtransaction per item,
 * settings pinned against ALTER DATABASE/ROLE ... SET, and helper workers
 * that run one function in another database.  It calls no round, so every
 * round can use it without a cycle.
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
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
#include "utils/guc_tables.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

#include "extension/common/errors.h"
#include "extension/common/guc.h"
#include "extension/common/owner_spi.h"
#include "rotator/job.h"

typedef struct KsWorkersShared
{
	slock_t		mutex;
	Latch	   *latch[KS_WORKER_KINDS]; /* NULL while that worker does not run */
	bool		helper_ok;
	char		helper_error[512];
} KsWorkersShared;

static KsWorkersShared *Workers = NULL;
static bool wake_at_commit[KS_WORKER_KINDS];
static bool xact_callback_registered = false;
static KsWorkerKind MyKind;

const KsWorkerIdentity KsWorkerIdentities[KS_WORKER_KINDS] = {
	{"keysmith lease reaper", "revoking leases", "leased roles"},
	{"keysmith rotation worker", "rotating secrets", "credential rotation"},
};

void
KsWorkersShmemRequest(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(KsWorkersShared)));
}

void
KsWorkersShmemStartup(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	Workers = ShmemInitStruct("keysmith workers", sizeof(KsWorkersShared), &found);
	if (!found)
	{
		memset(Workers, 0, sizeof(*Workers));
		SpinLockInit(&Workers->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

static void
WakeXactCallback(XactEvent event, void *arg)
{
	for (int kind = 0; kind < KS_WORKER_KINDS; kind++)
	{
		if (event == XACT_EVENT_COMMIT && wake_at_commit[kind] && Workers != NULL)
		{
			Latch	   *latch;

			SpinLockAcquire(&Workers->mutex);
			latch = Workers->latch[kind];
			SpinLockRelease(&Workers->mutex);
			if (latch)
				SetLatch(latch);
		}
		if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
			wake_at_commit[kind] = false;
	}
}

void
KsWorkerWakeAtCommit(KsWorkerKind kind)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(WakeXactCallback, NULL);
		xact_callback_registered = true;
	}
	wake_at_commit[kind] = true;
}

/* What a worker last said in the log about its catalog. */
typedef enum CatalogSaid
{
	SAID_NOTHING,
	SAID_OK,
	SAID_ABSENT,
	SAID_OLD,
	SAID_UNTRUSTED
} CatalogSaid;

bool
KsWorkerCatalogUsable(KsWorkerKind kind, KsCatalogStatus st, const KsCatalog *cat, const char *why)
{
	static CatalogSaid said = SAID_NOTHING;
	const KsWorkerIdentity *spec = &KsWorkerIdentities[kind];
	CatalogSaid now = st == KS_CATALOG_OK ? SAID_OK :
		st == KS_CATALOG_UNTRUSTED ? SAID_UNTRUSTED :
		OidIsValid(cat->extoid) ? SAID_OLD : SAID_ABSENT;

	if (now != said)
	{
		if (now == SAID_OK && said != SAID_NOTHING)
			ereport(LOG,
					(errmsg("%s found keysmith installed in database \"%s\" and is %s",
							spec->name, keysmith_database_name, spec->job)));
		else if (now == SAID_ABSENT)
			ereport(LOG,
					(errmsg("%s is idle: extension keysmith is not installed in database \"%s\"",
							spec->name, keysmith_database_name),
					 errhint("Run CREATE EXTENSION keysmith in that database, or set keysmith.database_name.")));
		else if (now == SAID_UNTRUSTED)
			ereport(WARNING,
					(errcode(ERRCODE_KS_UNTRUSTED_CATALOG),
					 errmsg("%s is idle: it refuses to act on keysmith's catalog in database \"%s\"",
							spec->name, keysmith_database_name),
					 errdetail("%s.", why),
					 errhint("See \"Installing safely\" in keysmith's docs/security.md.")));
		else if (now == SAID_OLD)
			ereport(LOG,
					(errmsg("%s is idle: keysmith in database \"%s\" predates %s",
							spec->name, keysmith_database_name, spec->feature),
					 errhint("Run ALTER EXTENSION keysmith UPDATE.")));
		said = now;
	}
	return now == SAID_OK;
}

/* ------------------------------------------------------------ restores */

/*
 * One sequence of keysmith's catalog, checked against the column it feeds:
 * the name of the sequence (for the log) if a restore is filling the
 * table, else NULL.  Behind means the column already holds the value the
 * sequence would hand out next.  For lease_event also: the sequence was
 * never used while leases exist, since every lease writes an event when
 * it is issued (0.2 on), so only a restore that has copied lease but not
 * yet lease_event looks like this.
 */
static char *
SequenceBehind(const char *seqnsp, const char *seq, const char *tblnsp, const char *tbl, const char *col)
{
	const char *qseq = quote_qualified_identifier(seqnsp, seq);
	char	   *sql;
	bool		isnull;
	bool		behind;

	sql = psprintf("SELECT coalesce((SELECT pg_catalog.max(%s) FROM %s)"
				   "   OPERATOR(pg_catalog.>=) CASE WHEN s.is_called THEN s.last_value OPERATOR(pg_catalog.+) 1"
				   "                                ELSE s.last_value END, false)"
				   "  OR (%s AND NOT s.is_called AND EXISTS (SELECT 1 FROM %s))"
				   " FROM %s s",
				   quote_identifier(col), quote_qualified_identifier(tblnsp, tbl),
				   strcmp(tbl, "lease_event") == 0 ? "true" : "false",
				   quote_qualified_identifier(tblnsp, "lease"), qseq);
	KsSpiExec(sql, 0, NULL, NULL, NULL, false, 1, SPI_OK_SELECT);
	behind = SPI_processed == 1 &&
		DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) && !isnull;
	return behind ? pstrdup(qseq) : NULL;
}

/*
 * Is a restore (pg_restore, or psql running a dump) filling keysmith's
 * catalog right now?  pg_restore commits each table's COPY on its own and
 * sets the sequences last, so a worker acting between two COPYs would take
 * ids the next COPY brings (a duplicate key there, and the restore fails),
 * or act on rows whose companions have not arrived.  Outside a restore no
 * keysmith sequence is ever behind its column.
 *
 * Called in a round's transaction, after the query that picks the round's
 * work (under READ COMMITTED a check before it would not see the rows that
 * query sees) and after its rows were copied: it runs SPI queries of its
 * own, each with a fresh snapshot (not read-only: a read-only SPI query
 * would use the round's first snapshot, older than the pick's, and miss a
 * COPY committed in between; seen in CI).  The sequences are found through the extension's membership
 * (pg_depend), by OID.  The first round that waits logs a WARNING naming
 * the sequence; the first one that goes on again logs that.
 */
bool
KsWorkerWaitsForRestore(Oid extoid)
{
	static bool waiting = false;
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(extoid)};
	SPITupleTable *seqs;
	uint64		nseqs;
	char	   *behind = NULL;

	KsSpiExec("SELECT sn.nspname::pg_catalog.text, sc.relname::pg_catalog.text,"
			  "       tn.nspname::pg_catalog.text, tc.relname::pg_catalog.text, a.attname::pg_catalog.text"
			  "  FROM pg_catalog.pg_depend e"
			  "  JOIN pg_catalog.pg_class sc ON sc.oid OPERATOR(pg_catalog.=) e.objid"
			  "   AND sc.relkind OPERATOR(pg_catalog.=) 'S'"
			  "  JOIN pg_catalog.pg_namespace sn ON sn.oid OPERATOR(pg_catalog.=) sc.relnamespace"
			  "  JOIN pg_catalog.pg_depend o ON o.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass"
			  "   AND o.objid OPERATOR(pg_catalog.=) sc.oid"
			  "   AND o.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass"
			  "   AND o.deptype OPERATOR(pg_catalog.=) 'a' AND o.refobjsubid OPERATOR(pg_catalog.>) 0"
			  "  JOIN pg_catalog.pg_class tc ON tc.oid OPERATOR(pg_catalog.=) o.refobjid"
			  "  JOIN pg_catalog.pg_namespace tn ON tn.oid OPERATOR(pg_catalog.=) tc.relnamespace"
			  "  JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) tc.oid"
			  "   AND a.attnum OPERATOR(pg_catalog.=) o.refobjsubid"
			  " WHERE e.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass"
			  "   AND e.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass"
			  "   AND e.refobjid OPERATOR(pg_catalog.=) $1 AND e.deptype OPERATOR(pg_catalog.=) 'e'"
			  " ORDER BY sc.relname",
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
	seqs = SPI_tuptable;
	nseqs = SPI_processed;
	for (uint64 i = 0; i < nseqs && behind == NULL; i++)
	{
		HeapTuple	tup = seqs->vals[i];

		behind = SequenceBehind(SPI_getvalue(tup, seqs->tupdesc, 1), SPI_getvalue(tup, seqs->tupdesc, 2),
								SPI_getvalue(tup, seqs->tupdesc, 3), SPI_getvalue(tup, seqs->tupdesc, 4),
								SPI_getvalue(tup, seqs->tupdesc, 5));
	}
	if (behind && !waiting)
		ereport(WARNING,
				(errmsg("%s waits: keysmith's catalog in database \"%s\" is being restored",
						KsWorkerIdentities[MyKind].name, keysmith_database_name),
				 errdetail("Sequence %s is behind the rows of its table, as it is until a restore sets the"
						   " sequences at its end.", behind),
				 errhint("If no restore is running, set the sequence past the largest id of its table with"
						 " setval().")));
	else if (!behind && waiting)
		ereport(LOG,
				(errmsg("%s goes on: keysmith's catalog in database \"%s\" is no longer being restored",
						KsWorkerIdentities[MyKind].name, keysmith_database_name)));
	waiting = behind != NULL;
	return waiting;
}

static void
SetLockTimeout(int ms)
{
	char		buf[32];

	snprintf(buf, sizeof(buf), "%d", ms);
	SetConfigOption("lock_timeout", buf, PGC_SUSET, PGC_S_OVERRIDE);
}

void
KsJobBegin(const char *activity, int lock_timeout_ms)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SetLockTimeout(lock_timeout_ms);
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	pgstat_report_activity(STATE_RUNNING, activity);
}

void
KsJobEnd(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
}

bool
KsJobTry(void (*fn) (void *), void *arg, char **message)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		fn(arg);
		SPI_finish();
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		*message = pstrdup(edata->message);
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* ------------------------------------------------------------ helpers */

bool
KsRunHelper(Oid dboid, const char *fn, const char *what, const void *extra, size_t len,
			char *errbuf, size_t errlen)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	bool		ok;

	Assert(len <= KS_HELPER_EXTRA && len + sizeof(Oid) <= BGW_EXTRALEN);
	SpinLockAcquire(&Workers->mutex);
	Workers->helper_ok = false;
	snprintf(Workers->helper_error, sizeof(Workers->helper_error),
			 "the helper worker for database OID %u exited without reporting; the server log has its error", dboid);
	SpinLockRelease(&Workers->mutex);

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	worker.bgw_notify_pid = MyProcPid;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "keysmith");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "%s", fn);
	snprintf(worker.bgw_name, BGW_MAXLEN, "%s", what);
	snprintf(worker.bgw_type, BGW_MAXLEN, "%s", what);
	memcpy(worker.bgw_extra, &dboid, sizeof(Oid));
	memcpy(worker.bgw_extra + sizeof(Oid), extra, len);

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		snprintf(errbuf, errlen, "could not start a helper worker for database %u (max_worker_processes reached)", dboid);
		return false;
	}
	if (WaitForBackgroundWorkerShutdown(handle) == BGWH_POSTMASTER_DIED)
		proc_exit(1);

	SpinLockAcquire(&Workers->mutex);
	ok = Workers->helper_ok;
	if (!ok)
		strlcpy(errbuf, Workers->helper_error, errlen);
	SpinLockRelease(&Workers->mutex);
	return ok;
}

/* The built-in default of a setting, as text; NULL if it has none. */
static const char *
BootValue(struct config_generic *g, char *buf, size_t len)
{
	switch (g->vartype)
	{
		case PGC_BOOL:
			return ((struct config_bool *) g)->boot_val ? "on" : "off";
		case PGC_INT:
			snprintf(buf, len, "%d", ((struct config_int *) g)->boot_val);
			return buf;
		case PGC_REAL:
			snprintf(buf, len, "%.17g", ((struct config_real *) g)->boot_val);
			return buf;
		case PGC_STRING:
			return ((struct config_string *) g)->boot_val;
		case PGC_ENUM:
			return config_enum_lookup_by_value((struct config_enum *) g,
											   ((struct config_enum *) g)->boot_val);
	}
	return NULL;
}

/*
 * A database's owner can ALTER DATABASE ... SET (and a role's admin ALTER
 * ROLE ... SET) settings that every session there starts with, a keysmith
 * worker's included: default_transaction_read_only = on stopped the reaper
 * and the rotation worker, role = 'x' made them act as x, exit_on_error
 * turned every caught error into an exit, statement_timeout, lock_timeout,
 * temp_tablespaces and transform_null_equals changed what their SQL does.
 * So a worker sets every setting that came from pg_db_role_setting back to
 * its built-in default, whatever it is (ALTER ROLE ALL ... SET, which only
 * a superuser can run, is left alone), then pins the ones keysmith relies
 * on.  Every name in keysmith's SQL is schema-qualified; search_path is
 * pinned anyway.  Called in a transaction, at the start of every process
 * keysmith's workers run: the reaper, the rotation worker, their helpers
 * and owner jobs.
 */
void
KsWorkerPinSettings(void)
{
	struct config_generic **vars = get_guc_variables();
	int			n = GetNumConfigOptions();

	for (int i = 0; i < n; i++)
	{
		struct config_generic *g = vars[i];
		char		buf[64];
		const char *boot;

		if (g->source != PGC_S_DATABASE && g->source != PGC_S_USER && g->source != PGC_S_DATABASE_USER)
			continue;
		if (g->flags & GUC_CUSTOM_PLACEHOLDER)
			continue;
		if (g->context != PGC_SUSET && g->context != PGC_USERSET)
			continue;			/* fixed at connection start */
		boot = BootValue(g, buf, sizeof(buf));
		if (boot == NULL)
			boot = "";
		(void) set_config_option(g->name, boot, PGC_SUSET, PGC_S_OVERRIDE, GUC_ACTION_SET,
								 true, WARNING, false);
	}
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("role", "none", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("session_replication_role", "origin", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("exit_on_error", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_transaction_isolation", "read committed", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("transform_null_equals", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("temp_tablespaces", "", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("default_tablespace", "", PGC_SUSET, PGC_S_OVERRIDE);
}

/* KsWorkerPinSettings, in a transaction of its own. */
void
KsWorkerPinSettingsNow(void)
{
	StartTransactionCommand();
	KsWorkerPinSettings();
	CommitTransactionCommand();
}

/* In a helper: connect to its database and copy out its argument. */
void
KsHelperStart(void *extra, size_t len)
{
	Oid			dboid;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	memcpy(extra, MyBgworkerEntry->bgw_extra + sizeof(Oid), len);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	KsWorkerPinSettingsNow();
}

void
KsHelperFailed(const char *message)
{
	SpinLockAcquire(&Workers->mutex);
	snprintf(Workers->helper_error, sizeof(Workers->helper_error), "in database %u: %s",
			 MyDatabaseId, message);
	SpinLockRelease(&Workers->mutex);
}

void
KsHelperDone(void)
{
	SpinLockAcquire(&Workers->mutex);
	Workers->helper_ok = true;
	SpinLockRelease(&Workers->mutex);
}

/* ------------------------------------------------------------ attaching */

static void
WorkerDetach(int code, Datum arg)
{
	SpinLockAcquire(&Workers->mutex);
	Workers->latch[MyKind] = NULL;
	SpinLockRelease(&Workers->mutex);
}

void
KsWorkerAttach(KsWorkerKind kind)
{
	MyKind = kind;
	SpinLockAcquire(&Workers->mutex);
	Workers->latch[MyKind] = MyLatch;
	SpinLockRelease(&Workers->mutex);
	before_shmem_exit(WorkerDetach, (Datum) 0);
}
