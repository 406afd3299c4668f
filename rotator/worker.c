/*
 * rotator/worker.c
 *
 * keysmith's two static background workers, registered at preload, both in
 * the database named by keysmith.database_name and both running
 * KsWorkerMain:
 *
 *   keysmith lease reaper      revokes expired leases (rotator/reaper.c)
 *   keysmith rotation worker   runs schedules, credential rotations and
 *                              scheduled re-encryption (rotator/schedule.c,
 *                              rotator/rotation.c)
 *
 * They are separate processes so that a slow rotation (each one logs in
 * over the network) never delays a lease revocation.  The loop is here:
 * wait on the latch or the naptime, reload the configuration, idle during
 * recovery, one round in a memory context reset afterwards.  What the rounds
 * share (transactions with bounded lock waits, one subtransaction per item,
 * wake-at-commit, helper workers) is the job runner, rotator/job.c, which
 * knows nothing of the rounds.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "access/xlog.h"

#include "extension/common/guc.h"
#include "rotator/job.h"
#include "rotator/reaper.h"
#include "rotator/rotation.h"
#include "rotator/schedule.h"
#include "rotator/worker.h"

PGDLLEXPORT void KsWorkerMain(Datum arg);

/* A kind of worker: its name (rotator/job.c), its round and its naptime. */
typedef struct KsWorkerSpec
{
	const char *name;			/* bgw_name, bgw_type and application_name */
	bool		(*round) (MemoryContext cxt);
	int		   *naptime_ms;
} KsWorkerSpec;

static const KsWorkerSpec Specs[KS_WORKER_KINDS] = {
	{"keysmith lease reaper", KsReaperRound, &keysmith_reaper_naptime},
	{"keysmith rotation worker", KsRotationWorkerRound, &keysmith_rotation_naptime},
};

void
KsWorkersRegister(void)
{
	for (int kind = 0; kind < KS_WORKER_KINDS; kind++)
	{
		BackgroundWorker worker;

		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_ConsistentState;
		worker.bgw_restart_time = 5;
		worker.bgw_main_arg = Int32GetDatum(kind);
		snprintf(worker.bgw_library_name, BGW_MAXLEN, "keysmith");
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "KsWorkerMain");
		snprintf(worker.bgw_name, BGW_MAXLEN, "%s", Specs[kind].name);
		snprintf(worker.bgw_type, BGW_MAXLEN, "%s", Specs[kind].name);
		RegisterBackgroundWorker(&worker);
	}
}

/* ------------------------------------------------------------ the loop */


void
KsWorkerMain(Datum arg)
{
	const KsWorkerSpec *spec;
	MemoryContext round_cxt;
	bool		idle_logged = false;

	spec = &Specs[DatumGetInt32(arg)];
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	KsWorkerAttach((KsWorkerKind) DatumGetInt32(arg));

	BackgroundWorkerInitializeConnection(keysmith_database_name, NULL, 0);
	pgstat_report_appname(spec->name);

	/*
	 * A step's record must be durable before the next step's effect (a
	 * login, a NOTIFY an application acts on, a role dropped), whatever
	 * the server's default for synchronous_commit.
	 */
	KsWorkerPinSettingsNow();
	SetConfigOption("synchronous_commit", "on", PGC_SUSET, PGC_S_OVERRIDE);
	ereport(LOG,
			(errmsg("%s started in database \"%s\"", spec->name, keysmith_database_name)));

	round_cxt = AllocSetContextCreate(TopMemoryContext, "keysmith worker round", ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		bool		more = false;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		if (RecoveryInProgress())
		{
			if (!idle_logged)
				ereport(LOG, (errmsg("%s is idle while the server is in recovery", spec->name)));
			idle_logged = true;
		}
		else
		{
			MemoryContext old = MemoryContextSwitchTo(round_cxt);

			idle_logged = false;
			more = spec->round(round_cxt);
			MemoryContextSwitchTo(old);
			MemoryContextReset(round_cxt);
		}

		if (!more)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 *spec->naptime_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
}
