/*
 * rotator/owner_job.c
 *
 * Owner jobs: the one way keysmith's superuser workers run code that a
 * role supplies (a sql strategy step function; a registered context_expr,
 * with the triggers and index expressions its UPDATE runs).
 *
 * Switching the current user inside the superuser worker was not enough
 * (docs/security.md, "Code a role supplies"): the session and outer user
 * stayed the bootstrap superuser, which every function that trusts "the
 * caller" (GetOuterUserId, session_user) then saw; and a function that
 * slept and swallowed query_canceled held up every other owner's work.  So
 * the statement runs in a process of its own:
 *
 *   - a dynamic background worker, connected to the worker's database,
 *     whose session user, outer user and current user are the owner, under
 *     SECURITY_RESTRICTED_OPERATION for its whole life (no SET ROLE, no SET
 *     SESSION AUTHORIZATION back to the superuser it connected as, no
 *     temporary objects);
 *   - every setting a database or role owner put on the database
 *     (ALTER DATABASE/ROLE ... SET) back at its built-in default
 *     (KsWorkerPinSettings), then keysmith's statement_timeout;
 *   - a timer of keysmith's own that ends the process at the deadline: it
 *     acts like pg_terminate_backend, so no exception handler of the
 *     owner's can catch it and no SET can lift it;
 *   - the worker waits at most keysmith.rotation_step_timeout (plus a
 *     short grace) and terminates it if it is still there.
 *
 * Arguments and the result cross in a dynamic shared memory segment; the
 * argument values (a pending password, say) are wiped there as soon as
 * the job has read them, and again by the worker before it detaches.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "extension/common/guc.h"
#include "rotator/job.h"
#include "rotator/owner_job.h"

PGDLLEXPORT void KsOwnerJobMain(Datum arg);

#define OWNER_JOB_MAGIC 0x4b534f4a	/* "KSOJ" */
#define OWNER_JOB_RESULT_MAX 8192
#define OWNER_JOB_GRACE_MS 5000
#define OWNER_JOB_TIMER_GRACE_MS 500

typedef enum OwnerJobStatus
{
	JOB_STARTING = 0,
	JOB_RUNNING,
	JOB_OK,
	JOB_FAILED
} OwnerJobStatus;

typedef struct OwnerJobShared
{
	uint32		magic;
	Oid			dboid;
	Oid			role;
	int			timeout_ms;
	bool		async_commit;
	int			nargs;
	Oid			types[KS_OWNER_JOB_MAX_ARGS];
	int32		value_off[KS_OWNER_JOB_MAX_ARGS];	/* -1: NULL */
	int32		value_len[KS_OWNER_JOB_MAX_ARGS];
	int32		sql_off;
	int32		data_len;
	char		entry[NAMEDATALEN];	/* a KsOwnerJobEntry, or "" to run the statement */
	/* written by the job */
	volatile sig_atomic_t timed_out;
	volatile int status;
	int			sqlerrcode;
	char		message[1024];
	bool		result_isnull;
	char		result[OWNER_JOB_RESULT_MAX];
	char		data[FLEXIBLE_ARRAY_MEMBER];
} OwnerJobShared;

/*
 * Jobs that did not exit when their deadline passed, nor when terminated:
 * code waiting where PostgreSQL checks no interrupt (a dblink or
 * postgres_fdw connection with connect_timeout=0 to a host that never
 * answers, some XML processing).  Nothing short of a crash of the cluster
 * ends such a process.  While one lives, its role gets no other job, so
 * one role holds at most one worker slot and everyone else's jobs still
 * start.
 */
#define STUCK_MAX 64
typedef struct StuckJob
{
	Oid			role;
	pid_t		pid;
} StuckJob;
static StuckJob Stuck[STUCK_MAX];
static int	StuckCount = 0;

/* The PID of role's job that is still running past its deadline, or 0. */
static pid_t
StuckJobOf(Oid role)
{
	int			kept = 0;
	pid_t		found = 0;

	for (int i = 0; i < StuckCount; i++)
	{
		if (BackendPidGetProc(Stuck[i].pid) == NULL)
			continue;			/* it has exited since */
		Stuck[kept++] = Stuck[i];
		if (Stuck[i].role == role)
			found = Stuck[i].pid;
	}
	StuckCount = kept;
	return found;
}

/* roles whose job passed its deadline in this round (see KsOwnerJobNewRound) */
#define SLOW_MAX 64
static Oid	SlowRoles[SLOW_MAX];
static int	SlowCount = 0;

void
KsOwnerJobNewRound(void)
{
	SlowCount = 0;
}

static bool
RoleWasSlow(Oid role)
{
	for (int i = 0; i < SlowCount; i++)
		if (SlowRoles[i] == role)
			return true;
	return false;
}

/* Wipe the argument values (not the statement) in shared memory. */
/* role's name for a message, or "(dropped)". */
static const char *
RoleName(Oid role)
{
	const char *name = GetUserNameFromId(role, true);

	return name ? name : "(dropped)";
}

bool
KsOwnerJobRoleHeld(Oid role)
{
	return RoleWasSlow(role) || StuckJobOf(role) != 0;
}

static void
WipeArgs(OwnerJobShared *sh)
{
	for (int i = 0; i < sh->nargs; i++)
		if (sh->value_off[i] >= 0)
			explicit_bzero(sh->data + sh->value_off[i], sh->value_len[i]);
}

/* ------------------------------------------------------------ the worker's side */

/* Wait for the job to stop, at most until deadline; true if it stopped. */
static bool
WaitStopped(BackgroundWorkerHandle *handle, TimestampTz deadline)
{
	for (;;)
	{
		pid_t		pid;
		BgwHandleStatus st = GetBackgroundWorkerPid(handle, &pid);
		long		left;

		if (st == BGWH_STOPPED)
			return true;
		if (st == BGWH_POSTMASTER_DIED)
			proc_exit(1);
		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (left <= 0)
			return false;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(left, 1000), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

char *
KsOwnerJobRun(const KsOwnerJob *job)
{
	const char *sql = job->sql ? job->sql : "";
	Size		data_len = strlen(sql) + 1;
	Size		size;
	dsm_segment *seg;
	OwnerJobShared *sh;
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	char	   *p;
	TimestampTz deadline;
	bool		stopped;
	int			timeout_ms = keysmith_rotation_step_timeout;
	char	   *result = NULL;
	int			status;
	bool		timed_out;

	Assert(job->nargs >= 0 && job->nargs <= KS_OWNER_JOB_MAX_ARGS);
	{
		pid_t		stuck = StuckJobOf(job->role);

		if (stuck != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_IN_USE),
					 errmsg("%s was not run: an earlier job of role %s (PID %d) is still running past keysmith.rotation_step_timeout",
							job->what, RoleName(job->role),
							(int) stuck),
					 errdetail("Its code waits where no interrupt is checked (dblink or postgres_fdw connecting with connect_timeout=0, for example), so neither keysmith's deadline nor pg_terminate_backend ends it."),
					 errhint("End what it waits on; the role's jobs run again once that process exits.")));
	}
	if (RoleWasSlow(job->role))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_IN_USE),
				 errmsg("%s was not run in this round: another job of role %s passed keysmith.rotation_step_timeout",
						job->what, RoleName(job->role)),
				 errhint("It is retried in a later round.")));
	if (GetUserNameFromId(job->role, true) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the role that owns %s (OID %u) no longer exists", job->what, job->role)));

	for (int i = 0; i < job->nargs; i++)
		if (job->values[i])
			data_len += strlen(job->values[i]) + 1;
	size = offsetof(OwnerJobShared, data) + data_len;
	seg = dsm_create(size, 0);
	sh = dsm_segment_address(seg);
	memset(sh, 0, offsetof(OwnerJobShared, data));
	sh->magic = OWNER_JOB_MAGIC;
	sh->dboid = MyDatabaseId;
	sh->role = job->role;
	sh->timeout_ms = timeout_ms;
	sh->async_commit = job->async_commit;
	sh->nargs = job->nargs;
	sh->data_len = (int32) data_len;
	p = sh->data;
	sh->sql_off = 0;
	strcpy(p, sql);
	p += strlen(sql) + 1;
	if (job->entry)
		strlcpy(sh->entry, job->entry, sizeof(sh->entry));
	for (int i = 0; i < job->nargs; i++)
	{
		sh->types[i] = job->types[i];
		if (job->values[i] == NULL)
		{
			sh->value_off[i] = -1;
			continue;
		}
		sh->value_off[i] = (int32) (p - sh->data);
		sh->value_len[i] = (int32) strlen(job->values[i]);
		memcpy(p, job->values[i], sh->value_len[i] + 1);
		p += sh->value_len[i] + 1;
	}
	sh->status = JOB_STARTING;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_ConsistentState;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	worker.bgw_notify_pid = MyProcPid;
	worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "keysmith");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "KsOwnerJobMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "keysmith owner job");
	snprintf(worker.bgw_type, BGW_MAXLEN, "keysmith owner job");
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		WipeArgs(sh);
		dsm_detach(seg);
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a worker to run %s", job->what),
				 errhint("Raise max_worker_processes: keysmith needs one more while a job runs.")));
	}

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms + OWNER_JOB_GRACE_MS);
	stopped = WaitStopped(handle, deadline);
	if (!stopped)
	{
		/* its own timer did not end it: end it from here */
		TerminateBackgroundWorker(handle);
		stopped = WaitStopped(handle, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), OWNER_JOB_GRACE_MS));
		sh->timed_out = true;
		if (!stopped)
		{
			pid_t		pid;

			if (GetBackgroundWorkerPid(handle, &pid) == BGWH_STARTED && StuckCount < STUCK_MAX)
			{
				Stuck[StuckCount].role = job->role;
				Stuck[StuckCount].pid = pid;
				StuckCount++;
			}
			ereport(WARNING,
					(errmsg("%s is still running after keysmith.rotation_step_timeout and a terminate request", job->what),
					 errdetail("Its code waits where no interrupt is checked; role %s gets no other job until it exits.",
							   RoleName(job->role))));
		}
	}
	WipeArgs(sh);
	status = sh->status;
	timed_out = sh->timed_out;
	if (status == JOB_OK && !timed_out)
	{
		result = sh->result_isnull ? NULL : pstrdup(sh->result);
		dsm_detach(seg);
		return result;
	}
	if (timed_out)
	{
		if (SlowCount < SLOW_MAX)
			SlowRoles[SlowCount++] = job->role;
		dsm_detach(seg);
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("%s did not finish within keysmith.rotation_step_timeout (%d ms) and was stopped",
						job->what, timeout_ms),
				 stopped ? 0 : errdetail("Its process did not exit when told to.")));
	}
	if (status == JOB_FAILED)
	{
		int			code = sh->sqlerrcode;
		char	   *message = pstrdup(sh->message);

		dsm_detach(seg);
		ereport(ERROR,
				(errcode(code ? code : ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("%s", message),
				 errdetail("Raised by %s, run as role %s.", job->what,
						   RoleName(job->role))));
	}
	dsm_detach(seg);
	ereport(ERROR,
			(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
			 errmsg("%s ended without reporting (status %d); the server log has its error", job->what, status)));
	pg_unreachable();
}

/* ------------------------------------------------------------ the job's side */

static OwnerJobShared *Job = NULL;

/*
 * The deadline, in the job's own process: like pg_terminate_backend, it
 * makes the next CHECK_FOR_INTERRUPTS raise FATAL, which no PL/pgSQL
 * handler catches.  Runs in the SIGALRM handler: flags and the latch only.
 */
static void
DeadlineHandler(void)
{
	if (Job)
		Job->timed_out = true;
	InterruptPending = true;
	ProcDiePending = true;
	SetLatch(MyLatch);
}

/* Copy the argument values out of shared memory as Datums, then wipe them there. */
static void
ReadArgs(OwnerJobShared *sh, Datum *values, char *nulls)
{
	for (int i = 0; i < sh->nargs; i++)
	{
		Oid			input;
		Oid			ioparam;

		if (sh->value_off[i] < 0)
		{
			values[i] = (Datum) 0;
			nulls[i] = 'n';
			continue;
		}
		getTypeInputInfo(sh->types[i], &input, &ioparam);
		values[i] = OidInputFunctionCall(input, sh->data + sh->value_off[i], ioparam, -1);
		nulls[i] = ' ';
	}
	WipeArgs(sh);
}

/* Wipe what ReadArgs made of the values, where it is text (a pending value). */
static void
WipeDatums(OwnerJobShared *sh, Datum *values, const char *nulls)
{
	for (int i = 0; i < sh->nargs; i++)
		if (nulls[i] == ' ' && get_typlen(sh->types[i]) == -1)
		{
			struct varlena *v = (struct varlena *) DatumGetPointer(values[i]);

			explicit_bzero(VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
		}
}

/* The job's result, v or NULL, into shared memory. */
static void
KeepResult(OwnerJobShared *sh, const char *v)
{
	sh->result_isnull = v == NULL;
	if (v == NULL)
		return;
	if (strlen(v) >= OWNER_JOB_RESULT_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the job's result is longer than %d bytes", OWNER_JOB_RESULT_MAX - 1)));
	strlcpy(sh->result, v, sizeof(sh->result));
}

/*
 * Call the job's C entry point with its arguments as C strings (copies,
 * wiped when it returns; the shared copies are wiped at once), and keep
 * its result.
 */
static void
RunEntry(OwnerJobShared *sh)
{
	KsOwnerJobEntry fn;
	char	   *args[KS_OWNER_JOB_MAX_ARGS];
	char	   *result;

	fn = (KsOwnerJobEntry) load_external_function("$libdir/keysmith", sh->entry, true, NULL);
	for (int i = 0; i < sh->nargs; i++)
		args[i] = sh->value_off[i] < 0 ? NULL : pnstrdup(sh->data + sh->value_off[i], sh->value_len[i]);
	WipeArgs(sh);
	result = fn(sh->nargs, args);
	for (int i = 0; i < sh->nargs; i++)
		if (args[i])
			explicit_bzero(args[i], strlen(args[i]));
	KeepResult(sh, result);
}

/* Run the job's statement with its arguments, and keep its first value. */
static void
RunStatement(OwnerJobShared *sh)
{
	Datum		values[KS_OWNER_JOB_MAX_ARGS];
	char		nulls[KS_OWNER_JOB_MAX_ARGS];
	int			rc;

	ReadArgs(sh, values, nulls);
	rc = SPI_execute_with_args(sh->data + sh->sql_off, sh->nargs, sh->types, values, nulls, false, 1);
	if (rc < 0)
		elog(ERROR, "keysmith: owner job statement failed (%s)", SPI_result_code_string(rc));
	WipeDatums(sh, values, nulls);
	KeepResult(sh, SPI_tuptable != NULL && SPI_processed > 0 && SPI_tuptable->tupdesc->natts > 0 ?
			   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : NULL);
}

void
KsOwnerJobMain(Datum arg)
{
	dsm_segment *seg;
	OwnerJobShared *sh;
	char		buf[32];
	TimeoutId	deadline_id;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	seg = dsm_attach(DatumGetUInt32(arg));
	if (seg == NULL)
		proc_exit(1);			/* the worker gave up on it already */
	sh = dsm_segment_address(seg);
	if (sh->magic != OWNER_JOB_MAGIC)
		proc_exit(1);
	Job = sh;
	sh->status = JOB_RUNNING;

	/* keysmith's deadline, counted from here whatever the job does */
	deadline_id = RegisterTimeout(USER_TIMEOUT, DeadlineHandler);
	/*
	 * A little later than the deadlines the job's own waits keep (a
	 * remote server's, for example), so that those end it with their own
	 * clear error first.
	 */
	enable_timeout_after(deadline_id, sh->timeout_ms + OWNER_JOB_TIMER_GRACE_MS);

	/*
	 * libpq, used by dblink and postgres_fdw, waits in connect without
	 * checking interrupts; its default connect_timeout comes from here,
	 * unless the role's connection string names one.
	 */
	snprintf(buf, sizeof(buf), "%d", Max((sh->timeout_ms + 999) / 1000, 2));
	setenv("PGCONNECT_TIMEOUT", buf, 1);

	BackgroundWorkerInitializeConnectionByOid(sh->dboid, InvalidOid, 0);
	pgstat_report_appname("keysmith owner job");

	PG_TRY();
	{
		const char *rolename;

		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		KsWorkerPinSettings();
		snprintf(buf, sizeof(buf), "%d", sh->timeout_ms);
		SetConfigOption("statement_timeout", buf, PGC_SUSET, PGC_S_OVERRIDE);
		snprintf(buf, sizeof(buf), "%d", Min(sh->timeout_ms, keysmith_rotation_lock_timeout));
		SetConfigOption("lock_timeout", buf, PGC_SUSET, PGC_S_OVERRIDE);
		if (sh->async_commit)
			SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

		/*
		 * Become the owner for good: session user, outer user and current
		 * user.  The process authenticated as the bootstrap superuser, so
		 * SET SESSION AUTHORIZATION could go back to it; the security-
		 * restricted operation, kept until exit, forbids that and SET ROLE.
		 */
		rolename = GetUserNameFromId(sh->role, true);
		if (rolename == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("role with OID %u does not exist", sh->role)));
		SetSessionAuthorization(sh->role, superuser_arg(sh->role));
		SetUserIdAndSecContext(sh->role, SECURITY_RESTRICTED_OPERATION);
		pgstat_report_activity(STATE_RUNNING, "keysmith owner job");

		PushActiveSnapshot(GetTransactionSnapshot());
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (sh->entry[0])
			RunEntry(sh);
		else
			RunStatement(sh);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		disable_timeout(deadline_id, false);
		pg_memory_barrier();
		sh->status = JOB_OK;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		HOLD_INTERRUPTS();
		WipeArgs(sh);
		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		sh->sqlerrcode = edata->sqlerrcode;
		strlcpy(sh->message, edata->message ? edata->message : "unknown error", sizeof(sh->message));
		pg_memory_barrier();
		sh->status = JOB_FAILED;
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		RESUME_INTERRUPTS();
	}
	PG_END_TRY();
	Job = NULL;
	dsm_detach(seg);
	proc_exit(0);
}
