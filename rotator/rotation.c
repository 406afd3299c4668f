/*
 * rotator/rotation.c
 *
 * The credential-rotation engine.  A rotation is a row of keysmith.rotation
 * whose state names the step to run next:
 *
 *   create   generate the pending credential; store it as the pending
 *            version (sealed under the secret's key as the secret's owner)
 *            and remember its SCRAM verifier                  -> set
 *   set      install the verifier on the target role, unless the role
 *            already carries it                               -> test
 *   test     record the outcome of a real login with the pending
 *            password, made outside any transaction           -> finish
 *   finish   pending becomes current, current previous, old unlabelled
 *            versions are erased, NOTIFY the secret's channel -> finished
 *
 * That is what the role strategies do; what a step does to the target is
 * asked of the secret's strategy table (rotator/strategy.h), and the
 * engine keeps only what every strategy shares: the pending version, the
 * labels, the states, the audit trail, retries and the worker's rounds.
 * No strategy is named here.
 *
 * Advance() is the one place a rotation moves: a switch over the state
 * that runs the step and writes the next state in the same transaction as
 * the step's effect.  The state is committed before every step and after
 * it, so a crash anywhere resumes from the table and runs each step to
 * completion exactly once in effect; every step first checks whether its
 * effect is already there.  The test login is the one effect outside a
 * transaction: a crash after it just logs in again.
 *
 * A failing step rolls back alone (a subtransaction per rotation, as the
 * reaper does per lease), is counted, and retried with backoff; after
 * keysmith.rotation_max_attempts the rotation ends 'failed'.  A rotation
 * that ends without finishing (failed, or cancelled by cancel_rotation)
 * erases its pending version and, if set had already changed the target
 * role, gives the role back the credential of the version it had, so
 * current keeps working.
 *
 * The worker (rotator/worker.c) runs rounds: up to ROTATION_BATCH due
 * rotations, each phase (create, set, the logins, test, finish) for the
 * whole batch in one transaction, so a round of many rotations costs a
 * handful of commits.  Everything done for a secret is done with its
 * owner's privileges: the key privileges through SetUserId, the checks
 * of its strategy at every step (rotator/role_target.c for roles).  Its audit events name
 * the role that requested it (read from its row, passed to every
 * KsSecretEvent), whatever other code runs in the same round.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "libpq/scram.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "extension/common/errors.h"
#include "extension/common/guc.h"
#include "extension/common/owner_spi.h"
#include "extension/common/roles.h"
#include "extension/common/secret_mem.h"
#include "rotator/job.h"
#include "rotator/owner_job.h"
#include "rotator/rotation.h"
#include "rotator/rotation_job.h"
#include "rotator/strategy.h"

#define ROTATION_BATCH 50

/* Where job strings live: the round's context (the worker) or the caller's. */
static MemoryContext JobCxt = NULL;

static KsRotationState
StateFromName(const char *name)
{
	for (int i = 0; i < KS_ROT_STATE_COUNT; i++)
		if (strcmp(name, KsRotationStateNames[i]) == 0)
			return (KsRotationState) i;
	elog(ERROR, "keysmith: unknown rotation state \"%s\"", name);
	pg_unreachable();
}

static bool
IsTerminal(KsRotationState s)
{
	return !KsRotationInFlight(s);
}

/*
 * Read a rotation's row and its secret, locking the row (waiting, or
 * skipping it when skip_locked).  False if it is gone or locked.
 */
static bool
LoadJob(KsRotationJob *job, bool skip_locked)
{
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {DirectFunctionCall1(uuid_in, CStringGetDatum(job->token))};
	HeapTuple	tup;
	TupleDesc	desc;
	char	   *secret_name;
	char	   *verifier;
	bool		isnull;

#define ROTATION_BY_TOKEN "SELECT secret_name, state, attempts, coalesce(target_role::pg_catalog.text, '')," \
	" coalesce(pending_version::pg_catalog.text, ''), pending_verifier" \
	" FROM keysmith.rotation WHERE token OPERATOR(pg_catalog.=) $1 FOR UPDATE"
	KsSpiExec(skip_locked ? ROTATION_BY_TOKEN " SKIP LOCKED" : ROTATION_BY_TOKEN,
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	secret_name = SPI_getvalue(tup, desc, 1);
	job->state = StateFromName(SPI_getvalue(tup, desc, 2));
	job->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	strlcpy(job->target, SPI_getvalue(tup, desc, 4), sizeof(job->target));
	strlcpy(job->pending, SPI_getvalue(tup, desc, 5), sizeof(job->pending));
	verifier = SPI_getvalue(tup, desc, 6);
	job->verifier = verifier ? MemoryContextStrdup(JobCxt, verifier) : NULL;
	/*
	 * A secret's strategy, options and owner never change, and dropping it
	 * deletes its rotations: loaded once per round is enough.
	 */
	if (strcmp(job->secret.name, secret_name) == 0)
		return true;
	return KsSecretLoad(secret_name, &job->secret, false);
}

/* Write the rotation's next state, with what the steps so far produced. */
static void
SaveState(KsRotationJob *job, KsRotationState next)
{
	Oid			types[7] = {UUIDOID, TEXTOID, NAMEOID, UUIDOID, TEXTOID, BOOLOID, BOOLOID};
	Datum		values[7];
	char		nulls[7] = {' ', ' ', job->target[0] ? ' ' : 'n', job->pending[0] ? ' ' : 'n',
	job->verifier && !IsTerminal(next) ? ' ' : 'n', ' ', ' '};

	values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(job->token));
	values[1] = CStringGetTextDatum(KsRotationStateNames[next]);
	values[2] = job->target[0] ? DirectFunctionCall1(namein, CStringGetDatum(job->target)) : (Datum) 0;
	values[3] = job->pending[0] ? DirectFunctionCall1(uuid_in, CStringGetDatum(job->pending)) : (Datum) 0;
	values[4] = nulls[4] == ' ' ? CStringGetTextDatum(job->verifier) : (Datum) 0;
	values[5] = BoolGetDatum(IsTerminal(next));
	values[6] = BoolGetDatum(next == KS_ROT_FINISHED);
	KsSpiExec("UPDATE keysmith.rotation SET state = $2, target_role = $3, pending_version = $4,"
			  " pending_verifier = $5,"
			  " finished_at = CASE WHEN $6 THEN pg_catalog.now() END,"
			  " last_error = CASE WHEN $7 THEN NULL ELSE last_error END"
			  " WHERE token OPERATOR(pg_catalog.=) $1",
			  7, types, values, nulls, false, 0, SPI_OK_UPDATE);
	job->state = next;
}

/*
 * Testing aid (keysmith.rotation_pause_at): stop after a step's effect,
 * before its state is written, so that a crash drill can kill the server
 * exactly there.  Only the worker pauses, for at most two minutes.
 */
static void
PauseIfAsked(KsRotationState step)
{
	char		point[32];

	if (!IsBackgroundWorker || keysmith_rotation_pause_at == NULL || keysmith_rotation_pause_at[0] == '\0')
		return;
	snprintf(point, sizeof(point), "%s:after", KsRotationStateNames[step]);
	if (strcmp(point, keysmith_rotation_pause_at) != 0)
		return;
	ereport(LOG, (errmsg("keysmith rotation worker paused at %s (keysmith.rotation_pause_at)", point)));
	pgstat_report_activity(STATE_RUNNING, psprintf("keysmith rotation paused at %s", point));
	for (int i = 0; i < 120; i++)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* The table of the rotation's strategy. */
static const KsRotationStrategy *
StrategyOf(const KsRotationJob *job)
{
	return KsRotationStrategyFor(job->secret.opt.strategy);
}

/* Erase a pending version left by nobody (cancel erases its own). */
static void
DeleteStalePending(const KsSecret *s)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];

	values[0] = CStringGetTextDatum(s->name);
	values[1] = CStringGetTextDatum(KsSecretStageNames[KS_STAGE_PENDING]);
	KsSpiExec("DELETE FROM keysmith.secret_version"
			  " WHERE secret_name OPERATOR(pg_catalog.=) $1 AND stage OPERATOR(pg_catalog.=) $2",
			  2, types, values, NULL, false, 0, SPI_OK_DELETE);
}

/*
 * A rotation row whose secret has a strategy without steps (none) can only
 * come from a hand-written row: create_secret and rotate_secret refuse it.
 * The step then fails with the same 22023 rotate_secret gives, counted as a
 * failed attempt, instead of calling a step the strategy does not have.
 */
static void
RequireRotatable(KsRotationJob *job)
{
	const KsRotationStrategy *rs = StrategyOf(job);

	if (rs->set == NULL || rs->test == NULL)
	{
		KsRotationCheckStrategy(&job->secret);
		elog(ERROR, "rotation strategy %s has no set or test step", KsStrategyName(rs->strategy));
	}
}

/*
 * create: a random password, for the target the strategy chooses (as a
 * role credential where its values are), sealed as the secret's owner and
 * stored as the pending version; with it the SCRAM verifier for set, where
 * the strategy keeps one; then the strategy's own share.
 */
static void
StepCreate(KsRotationJob *job)
{
	const KsRotationStrategy *rs = StrategyOf(job);
	const KsSecret *s = &job->secret;
	char		target[NAMEDATALEN] = "";
	char	   *password;
	char	   *value;
	size_t		value_len;
	char	   *verifier = NULL;
	const char *detail;
	bytea	   *ct;
	KsError		err;

	if (job->pending[0] && (job->verifier || !rs->pending_verifier))
		return;					/* already stored */
	KsRotationRequireOwner(job);
	/* a strategy keysmith does not rotate ('none', set on the row by hand) fails the attempt */
	RequireRotatable(job);
	if (rs->choose_target)
		rs->choose_target(job, target);

	/* secret buffers (secret_mem.h): a KMS outage at the seal leaves no copy */
	password = KsSecretAlloc(CurrentMemoryContext, KS_PASSWORD_MAX + 1);
	KsRandomString(password, s->opt.password_length, KsAlnumMixed);
	password[s->opt.password_length] = '\0';
	if (rs->credential)
	{
		value = KsSecretAlloc(CurrentMemoryContext, KS_CREDENTIAL_JSON_MAX + 1);
		if (KsCredentialBuild(target, password, value, KS_CREDENTIAL_JSON_MAX + 1, &value_len, &err) != KS_OK)
			KsReportError(&err);
	}
	else
	{
		value = password;
		value_len = strlen(password);
	}
	KsNewUuid(job->pending);
	ct = KsSecretSeal(s->owner, s, job->pending, value, value_len);
	if (value != password)
		KsSecretFree(value);
	if (rs->pending_verifier)
		verifier = pg_be_scram_build_secret(password);
	KsSecretFree(password);

	DeleteStalePending(s);
	KsSecretInsertVersion(s, job->pending, ct, KS_STAGE_PENDING, target[0] ? target : NULL, job->actor);
	job->verifier = verifier ? MemoryContextStrdup(JobCxt, verifier) : NULL;
	strlcpy(job->target, target, sizeof(job->target));
	detail = rs->create ? rs->create(job) : psprintf("pending credential for role %s", target);
	KsSecretEvent(s->name, job->token, job->pending, "created", detail, job->actor);
}

static void
StepSet(KsRotationJob *job)
{
	const char *detail;

	RequireRotatable(job);
	detail = StrategyOf(job)->set(job);

	KsSecretEvent(job->secret.name, job->token, job->pending, "set", detail, job->actor);
}

static void
StepTest(KsRotationJob *job)
{
	const char *detail;

	RequireRotatable(job);
	detail = StrategyOf(job)->test(job);

	KsSecretEvent(job->secret.name, job->token, job->pending, "tested", detail, job->actor);
}

static void
StepFinish(KsRotationJob *job)
{
	const KsRotationStrategy *rs = StrategyOf(job);
	char		version[KS_UUID_LEN];

	if (KsSecretFindVersion(job->secret.name, KS_STAGE_CURRENT, version, NULL, NULL) &&
		strcmp(version, job->pending) == 0)
		return;					/* already current */
	KsSecretPromote(&job->secret, job->pending);
	if (rs->finish)
		rs->finish(job);
	KsSecretEvent(job->secret.name, job->token, job->pending, KsRotationStateNames[KS_ROT_FINISHED], NULL,
				  job->actor);
}

/*
 * Run the step the rotation's state names and move it to the next state,
 * in the caller's (sub)transaction.  The terminal states do nothing.
 */
static void
Advance(KsRotationJob *job)
{
	KsRotationState step = job->state;
	KsRotationState next;

	switch (step)
	{
		case KS_ROT_CREATE:
			StepCreate(job);
			next = KS_ROT_SET;
			break;
		case KS_ROT_SET:
			StepSet(job);
			next = KS_ROT_TEST;
			break;
		case KS_ROT_TEST:
			StepTest(job);
			next = KS_ROT_FINISH;
			break;
		case KS_ROT_FINISH:
			StepFinish(job);
			next = KS_ROT_FINISHED;
			break;
		case KS_ROT_FINISHED:
		case KS_ROT_FAILED:
		case KS_ROT_CANCELLED:
		default:
			return;
	}
	PauseIfAsked(step);
	SaveState(job, next);
}

/*
 * Give the target role back the credential of the version it had (current,
 * else previous), through the strategy.  Nothing to give back when it had
 * none from keysmith.
 */
static void
RestoreTarget(KsRotationJob *job)
{
	Oid			types[4] = {TEXTOID, NAMEOID, TEXTOID, TEXTOID};
	Datum		values[4];
	char		version[KS_UUID_LEN];
	bytea	   *ct;
	char		password[KS_CREDENTIAL_PASSWORD_MAX + 1];

	values[0] = CStringGetTextDatum(job->secret.name);
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(job->target));
	values[2] = CStringGetTextDatum(KsSecretStageNames[KS_STAGE_CURRENT]);
	values[3] = CStringGetTextDatum(KsSecretStageNames[KS_STAGE_PREVIOUS]);
	KsSpiExec("SELECT version_id::pg_catalog.text, ciphertext FROM keysmith.secret_version"
			  " WHERE secret_name OPERATOR(pg_catalog.=) $1 AND username OPERATOR(pg_catalog.=) $2"
			  "   AND stage OPERATOR(pg_catalog.=) ANY (ARRAY[$3, $4])"
			  " ORDER BY stage OPERATOR(pg_catalog.=) $3 DESC LIMIT 1",
			  4, types, values, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return;
	strlcpy(version, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), sizeof(version));
	{
		bool		isnull;

		ct = DatumGetByteaPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
	KsRotationOpenCredential(job, version, ct, password);
	PG_TRY();
	{
		StrategyOf(job)->restore(job, password);
	}
	PG_FINALLY();
	{
		explicit_bzero(password, sizeof(password));
	}
	PG_END_TRY();
	KsSecretEvent(job->secret.name, job->token, version, "restored",
				  psprintf("role %s has the credential of this version again", job->target), job->actor);
}

static void
RestoreItem(void *arg)
{
	RestoreTarget((KsRotationJob *) arg);
}

/*
 * End a rotation that did not finish: give the target back its credential
 * if set had changed it, erase the pending version, and write final.
 */
static void
Abandon(KsRotationJob *job, KsRotationState final, const char *why)
{
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		values[2];
	char	   *message = NULL;
	bool		set_done = (job->state == KS_ROT_TEST || job->state == KS_ROT_FINISH) &&
		StrategyOf(job)->restore != NULL;

	if (set_done && job->target[0] && !KsJobTry(RestoreItem, job, &message))
		why = psprintf("%s; the target role could not get its credential back: %s", why ? why : "", message);
	if (job->pending[0])
	{
		values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(job->pending));
		values[1] = CStringGetTextDatum(KsSecretStageNames[KS_STAGE_PENDING]);
		KsSpiExec("DELETE FROM keysmith.secret_version WHERE version_id OPERATOR(pg_catalog.=) $1"
				  " AND stage OPERATOR(pg_catalog.=) $2",
				  2, types, values, NULL, false, 0, SPI_OK_DELETE);
	}
	SaveState(job, final);
	KsSecretEvent(job->secret.name, job->token, NULL, KsRotationStateNames[final], why, job->actor);
}

/* ------------------------------------------------------------ SQL side */

void
KsRotationCheckStrategy(const KsSecret *s)
{
	const KsRotationStrategy *rs = KsRotationStrategyFor(s->opt.strategy);

	if (rs->check == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("secret \"%s\" has strategy %s and is not rotated by keysmith", s->name,
						KsStrategyName(s->opt.strategy)),
				 errhint("Store a new value with keysmith.put_secret_value.")));
	rs->check(s, s->owner);
}

void
KsRotationStart(const KsSecret *s, char *token, bool token_given, const char *requester)
{
	Oid			types[3] = {UUIDOID, TEXTOID, NAMEOID};
	Datum		values[3];

	values[1] = CStringGetTextDatum(s->name);
	if (token_given)
	{
		values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(token));
		KsSpiExec("SELECT secret_name FROM keysmith.rotation WHERE token OPERATOR(pg_catalog.=) $1",
				  1, types, values, NULL, false, 0, SPI_OK_SELECT);
		if (SPI_processed > 0)
		{
			char	   *other = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			if (strcmp(other, s->name) != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("rotation token %s belongs to a rotation of another secret", token)));
			return;				/* the same rotation: nothing else happens */
		}
	}
	{
		char	   *state;
		char	   *other = KsSecretRotationInFlight(s->name, &state);

		if (other)
			ereport(ERROR,
					(errcode(ERRCODE_KS_ROTATION_IN_FLIGHT),
					 errmsg("a rotation of secret \"%s\" is already in flight", s->name),
					 errdetail("Its token is %s; its next step is %s.", other, state),
					 errhint("Wait for it (keysmith.rotations), call rotate_secret with its token, or keysmith.cancel_rotation.")));
	}
	KsRotationCheckStrategy(s);
	if (!token_given)
		KsNewUuid(token);
	values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(token));
	values[2] = DirectFunctionCall1(namein, CStringGetDatum(requester));
	KsSpiExec("INSERT INTO keysmith.rotation (token, secret_name, requested_by) VALUES ($1, $2, $3)",
			  3, types, values, NULL, false, 0, SPI_OK_INSERT);
	KsSecretEvent(s->name, token, NULL, "requested", NULL, requester);
	KsWorkerWakeAtCommit(KS_WORKER_ROTATION);
}

void
KsRotationCancel(const KsSecret *s, const char *actor)
{
	KsRotationJob job;
	char	   *token = KsSecretRotationInFlight(s->name, NULL);

	if (token == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no rotation of secret \"%s\" is in flight", s->name)));
	memset(&job, 0, sizeof(job));
	strlcpy(job.token, token, sizeof(job.token));
	strlcpy(job.actor, actor, sizeof(job.actor));
	JobCxt = CurrentMemoryContext;
	if (!LoadJob(&job, false) || IsTerminal(job.state))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no rotation of secret \"%s\" is in flight", s->name)));
	Abandon(&job, KS_ROT_CANCELLED, "cancel_rotation");
}

/* ------------------------------------------------------------ the worker */

static KsRotationJob *RoundJobs = NULL;
static int	RoundCount = 0;

/* Wipe the round's passwords when its memory goes, however the round ends. */
static void
WipeRoundPasswords(void *arg)
{
	for (int i = 0; i < RoundCount; i++)
		if (RoundJobs[i].password)
			explicit_bzero(RoundJobs[i].password, strlen(RoundJobs[i].password));
	RoundJobs = NULL;
	RoundCount = 0;
}

/* Does this (loaded) rotation run its owner's code or reach its owner's host? */
static bool
UsesOwnerJobs(const KsRotationJob *job)
{
	return StrategyOf(job)->owner_jobs;
}

/* Say in keysmith.rotations why a rotation waits, without spending an attempt. */
static void
NoteDeferred(KsRotationJob *job)
{
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		values[2];
	char	   *owner = GetUserNameFromId(job->secret.owner, true);

	values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(job->token));
	values[1] = CStringGetTextDatum(psprintf("waiting: a job of role %s passed keysmith.rotation_step_timeout "
											 "(or still runs past it); this rotation goes on in a later round",
											 owner ? owner : "(dropped)"));
	KsSpiExec("UPDATE keysmith.rotation SET last_error = $2 WHERE token OPERATOR(pg_catalog.=) $1",
			  2, types, values, NULL, false, 0, SPI_OK_UPDATE);
}

typedef struct PhaseItemArgs
{
	KsRotationJob *job;
	KsRotationState phase;
} PhaseItemArgs;

static void
PhaseItem(void *arg)
{
	PhaseItemArgs *a = arg;

	if (!LoadJob(a->job, true))
	{
		a->job->skip = true;	/* cancelled meanwhile, or being cancelled */
		return;
	}
	if (a->job->state != a->phase)
		return;
	if (UsesOwnerJobs(a->job) && KsOwnerJobRoleHeld(a->job->secret.owner))
	{
		a->job->skip = true;	/* its owner's job hit the deadline: next round, no attempt spent */
		NoteDeferred(a->job);
		return;
	}
	Advance(a->job);
}

/* Decrypt the pending credential, as the secret's owner, for the test login. */
static void
LoadPasswordItem(void *arg)
{
	KsRotationJob *job = arg;
	char		password[KS_CREDENTIAL_PASSWORD_MAX + 1];

	KsRotationOpenPendingPassword(job, password);
	job->password = MemoryContextStrdup(JobCxt, password);
	explicit_bzero(password, sizeof(password));
}

/* Count a failed step; past the limit, end the rotation 'failed'. */
static void
RecordFailure(KsRotationJob *job, const char *message)
{
	Oid			types[3] = {UUIDOID, TEXTOID, TEXTOID};
	Datum		values[3];
	int			attempts;
	bool		isnull;

	values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(job->token));
	values[1] = CStringGetTextDatum(message);
	values[2] = CStringGetTextDatum(KsRotationStateNames[job->state]);
	KsSpiExec("UPDATE keysmith.rotation SET attempts = attempts OPERATOR(pg_catalog.+) 1, last_error = $2,"
			  " next_attempt_at = " KS_JOB_BACKOFF_SQL("attempts")
			  " WHERE token OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.=) $3"
			  " RETURNING attempts",
			  3, types, values, NULL, false, 0, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		return;					/* it moved on meanwhile (cancelled) */
	attempts = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	KsSecretEvent(job->secret.name, job->token, job->pending[0] ? job->pending : NULL, "step_failed",
				  psprintf("%s (attempt %d of %d): %s", KsRotationStateNames[job->state], attempts,
						   keysmith_rotation_max_attempts, message), job->actor);
	if (attempts < keysmith_rotation_max_attempts)
	{
		ereport(LOG,
				(errmsg("keysmith rotation of secret \"%s\" failed at step %s (attempt %d of %d), will retry: %s",
						job->secret.name, KsRotationStateNames[job->state], attempts,
						keysmith_rotation_max_attempts, message)));
		return;
	}
	ereport(LOG,
			(errmsg("keysmith rotation of secret \"%s\" failed at step %s after %d attempts and is abandoned: %s",
					job->secret.name, KsRotationStateNames[job->state], attempts, message)));
	Abandon(job, KS_ROT_FAILED, message);
}

static void
RunPhase(KsRotationJob *jobs, int n, KsRotationState phase)
{
	char		activity[64];

	snprintf(activity, sizeof(activity), "keysmith rotation: step %s", KsRotationStateNames[phase]);
	KsJobBegin(activity, keysmith_rotation_lock_timeout);
	for (int i = 0; i < n; i++)
	{
		PhaseItemArgs a = {&jobs[i], phase};
		char	   *message = NULL;

		if (jobs[i].skip)
			continue;
		if (!KsJobTry(PhaseItem, &a, &message))
		{
			jobs[i].skip = true;
			RecordFailure(&jobs[i], message);
		}
	}
	/* the test logins need the pending passwords, read as each owner */
	if (phase == KS_ROT_SET)
		for (int i = 0; i < n; i++)
		{
			char	   *message = NULL;

			if (jobs[i].skip || jobs[i].state != KS_ROT_TEST || jobs[i].password ||
				StrategyOf(&jobs[i])->login == NULL)
				continue;
			if (!KsJobTry(LoadPasswordItem, &jobs[i], &message))
			{
				jobs[i].skip = true;
				RecordFailure(&jobs[i], message);
			}
		}
	KsJobEnd();
}

bool
KsRotationRound(MemoryContext cxt)
{
	KsCatalog	cat;
	char		why[256];
	KsCatalogStatus st;
	KsRotationJob *jobs;
	int			n;
	MemoryContextCallback *cb;

	JobCxt = cxt;
	KsJobBegin("keysmith rotation: looking for due rotations", keysmith_rotation_lock_timeout);
	st = KsCatalogWithTables(&cat, KsSecretTables, KsSecretTableCount, "credential rotation", why, sizeof(why));
	if (!KsWorkerCatalogUsable(KS_WORKER_ROTATION, st, &cat, why))
	{
		KsJobEnd();
		return false;
	}
	/* each rotation's events name the role that requested it */
	KsSpiExec("SELECT token::pg_catalog.text, requested_by::pg_catalog.text FROM keysmith.rotation"
			  " WHERE state OPERATOR(pg_catalog.=) ANY (" KS_ROT_IN_FLIGHT_SQL ")"
			  "   AND next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()"
			  " ORDER BY started_at LIMIT " CppAsString2(ROTATION_BATCH),
			  0, NULL, NULL, NULL, false, 0, SPI_OK_SELECT);
	n = (int) SPI_processed;
	jobs = MemoryContextAllocZero(cxt, sizeof(KsRotationJob) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		strlcpy(jobs[i].token, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
				sizeof(jobs[i].token));
		strlcpy(jobs[i].actor, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2),
				sizeof(jobs[i].actor));
	}
	if (n > 0 && KsWorkerWaitsForRestore(cat.extoid))
		n = 0;
	KsJobEnd();
	if (n == 0)
		return false;

	RoundJobs = jobs;
	RoundCount = n;
	cb = MemoryContextAlloc(cxt, sizeof(*cb));
	cb->func = WipeRoundPasswords;
	cb->arg = NULL;
	MemoryContextRegisterResetCallback(cxt, cb);

	RunPhase(jobs, n, KS_ROT_CREATE);
	RunPhase(jobs, n, KS_ROT_SET);

	/* the logins, outside any transaction */
	for (int i = 0; i < n; i++)
	{
		char	   *why;

		if (jobs[i].skip || jobs[i].state != KS_ROT_TEST || jobs[i].password == NULL)
			continue;
		pgstat_report_activity(STATE_RUNNING, "keysmith rotation: test login");
		if (UsesOwnerJobs(&jobs[i]) && KsOwnerJobRoleHeld(jobs[i].secret.owner))
		{
			jobs[i].skip = true;	/* next round; it tests again then */
			explicit_bzero(jobs[i].password, strlen(jobs[i].password));
			continue;
		}
		why = StrategyOf(&jobs[i])->login(&jobs[i]);
		if (why)
		{
			/* the login's copy is in TopMemoryContext (after a commit): keep the round's */
			jobs[i].test_error = MemoryContextStrdup(cxt, why);
			pfree(why);
		}
		jobs[i].tested = true;
		explicit_bzero(jobs[i].password, strlen(jobs[i].password));
	}
	pgstat_report_activity(STATE_IDLE, NULL);

	RunPhase(jobs, n, KS_ROT_TEST);
	RunPhase(jobs, n, KS_ROT_FINISH);
	return n == ROTATION_BATCH;
}
