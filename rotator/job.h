/*
 * rotator/job.h
 *
 * The job runner shared by keysmith's background workers (rotator/job.c):
 * the worker kinds and their shared state, wake-at-commit, rounds as
 * transactions with bounded lock waits, one subtransaction per item, retry
 * backoff, pinned settings, and short-lived helper workers that run one
 * function in another database.  The workers themselves and their loop are
 * in rotator/worker.c, above every round; this file knows no round.
 */
#ifndef KEYSMITH_JOB_H
#define KEYSMITH_JOB_H

#include "postgres.h"

#include "extension/common/catalog.h"

typedef enum KsWorkerKind
{
	KS_WORKER_REAPER = 0,
	KS_WORKER_ROTATION,
	KS_WORKER_KINDS
} KsWorkerKind;

/* Who each kind is, for its process name and its log lines. */
typedef struct KsWorkerIdentity
{
	const char *name;			/* bgw_name, bgw_type and application_name */
	const char *job;			/* what it does */
	const char *feature;		/* the tables it needs */
} KsWorkerIdentity;

extern const KsWorkerIdentity KsWorkerIdentities[KS_WORKER_KINDS];

/* A static worker announces its latch, for wake-at-commit (until it exits). */
extern void KsWorkerAttach(KsWorkerKind kind);

/*
 * Undo every ALTER DATABASE/ROLE ... SET a non-superuser could have made
 * for this process, and pin what keysmith's SQL relies on (in a
 * transaction).  Every keysmith worker process calls it once connected.
 */
extern void KsWorkerPinSettings(void);
/* The same in a transaction of its own. */
extern void KsWorkerPinSettingsNow(void);
extern void KsWorkersShmemRequest(void);
extern void KsWorkersShmemStartup(void);

/* Wake the worker of this kind when the current transaction commits. */
extern void KsWorkerWakeAtCommit(KsWorkerKind kind);

/*
 * Is keysmith's catalog usable for this worker's job?  When the answer
 * changes, the worker says so once in the log (why names the reason), and
 * it idles until the answer is yes.
 */
extern bool KsWorkerCatalogUsable(KsWorkerKind kind, KsCatalogStatus st, const KsCatalog *cat,
								  const char *why);

/*
 * Is a restore filling keysmith's catalog (extension extoid) right now?
 * Then the round must do nothing.  Called after the round's pick, whose
 * rows must already be copied (rotator/job.c says why).
 */
extern bool KsWorkerWaitsForRestore(Oid extoid);

/*
 * A round's transaction: started with a snapshot, SPI connected, lock waits
 * bounded by lock_timeout_ms, and the activity shown in pg_stat_activity.
 */
extern void KsJobBegin(const char *activity, int lock_timeout_ms);
extern void KsJobEnd(void);

/*
 * Run fn(arg) in a subtransaction with its own SPI connection.  On error,
 * roll back just that, put the message in *message and return false; the
 * caller's transaction goes on.  The one pattern keysmith uses to catch
 * rather than re-throw, for work whose failure must not undo what came
 * before it: a worker's per-item steps, revoke_lease's cleanup.
 */
extern bool KsJobTry(void (*fn) (void *), void *arg, char **message);

/*
 * The SQL expression for the next attempt after a failure, as a
 * timestamptz, given the column holding the attempts made before it: 1 s
 * doubling to at most 5 min, counted from the failure (clock_timestamp:
 * a step that failed after waiting out its deadline must not be due again
 * at once, as it would be from the transaction's start).
 */
#define KS_JOB_BACKOFF_SQL(attempts) \
	"pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs =>" \
	" LEAST(300, pg_catalog.power(2, LEAST(" attempts ", 16)))::pg_catalog.float8)"

/*
 * Run the function named fn of keysmith.so in a helper worker connected to
 * database dboid, passing extra (at most KS_HELPER_EXTRA bytes), and wait
 * for it.  Called outside any transaction.  False, with the helper's error
 * in errbuf, on failure.  The helper calls KsHelperArgs to get extra and
 * KsHelperDone when its work committed.
 */
#define KS_HELPER_EXTRA 64
extern bool KsRunHelper(Oid dboid, const char *fn, const char *what, const void *extra, size_t len,
						char *errbuf, size_t errlen);
extern void KsHelperStart(void *extra, size_t len);
extern void KsHelperFailed(const char *message);
extern void KsHelperDone(void);

#endif							/* KEYSMITH_JOB_H */
