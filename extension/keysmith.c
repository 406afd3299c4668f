/*
 * extension/keysmith.c
 *
 * Module entry point: _PG_init refuses to run unless keysmith is being
 * preloaded, defines the settings (extension/common/guc.c), requests shared
 * memory, registers the background workers and wires keysmith into the
 * server's hooks.  Nothing else lives here.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"

#include "extension/common/guc.h"
#include "extension/hooks.h"
#include "extension/keys/counters.h"
#include "extension/keys/family.h"
#include "extension/keys/key_verify.h"
#include "extension/keys/dek_shared.h"
#include "kms/http.h"
#include "rotator/job.h"
#include "rotator/worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);
static int	HttpInterrupted(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* keysmith's shared memory: the encryption counters and the reaper's state. */
static void
KsShmemRequest(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	KsCountersShmemRequest();
	KsWorkersShmemRequest();
	KsSharedDekShmemRequest();
}

static void
KsShmemStartup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	KsCountersShmemStartup();
	KsWorkersShmemStartup();
	KsSharedDekShmemStartup();
}

void
_PG_init(void)
{
	/* pg_upgrade loads libraries only to check they exist: do nothing */
	if (IsBinaryUpgrade)
		return;

	KsGucsDefine();

	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("keysmith must be loaded via shared_preload_libraries"),
				 errhint("Add keysmith to shared_preload_libraries in postgresql.conf and restart the server.")));

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = KsShmemRequest;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = KsShmemStartup;
	KsCountersInstallHooks();
	KsFamilyInit();
	KsKeyVerifyInit();
	KsAuthInit();
	KsRedactInit();
	KsWorkersRegister();
	KsHttpSetInterruptCheck(HttpInterrupted);
}

/*
 * libcurl's progress callback asks this: a pending cancel or termination
 * stops a KMS call (it is reported by CHECK_FOR_INTERRUPTS afterwards; a
 * callback must never throw through libcurl).
 */
static int
HttpInterrupted(void)
{
	return InterruptPending && (QueryCancelPending || ProcDiePending);
}
