/*
 * rotator/schedule.c
 *
 * Schedules, run by the rotation worker between its rotation rounds.
 *
 * A schedule (a row of keysmith.schedule) divides time into periods:
 * period k begins at starting + k * every, and its run is due
 * spread_offset later, an offset within the schedule's window taken from a
 * hash of the target's name, so that a thousand secrets on one schedule
 * fire over the window rather than in one second.  Serving a period means,
 * in one transaction:
 *
 *   secret  start a rotation, with a token derived from the schedule and
 *           the period (rotator/rotation.c then runs it as for
 *           rotate_secret);
 *   key     rotate_dek as the role that scheduled it (for a key family,
 *           complete_shreds: rotated, members rewrapped, old versions
 *           destroyed when a shred is pending), and mark the
 *           columns registered for the key as pending re-encryption;
 *
 * and recording that period as served: keysmith.schedule.last_period and
 * a row of keysmith.schedule_run, whose primary key is (kind, target,
 * period).  Effect and record commit together, so no crash can serve a
 * period twice, and a period whose transaction was lost is still unserved.
 * When several periods have passed unserved (the server was down), only
 * the latest is served, once; the others are counted as missed.
 *
 * Pending columns are re-encrypted by the existing resumable reencrypt
 * functions (_reencrypt_start, _reencrypt_step), one batch per transaction,
 * as the role that registered the column: its checks and lock as that role
 * (KsAsRoleBegin, keysmith's own code only), each batch, which runs the
 * role's context_expr and triggers, in an owner job of that role
 * (rotator/owner_job.c), at most
 * REENCRYPT_SLICE_MS per worker round so that rotations are not held up.
 * A crash resumes from keysmith.reencrypt_job like a second CALL would.
 *
 * The previous version of a secret whose schedule has
 * destroy_previous_after is shredded once it has been previous that long.
 *
 * Every run acts with the privileges its creator holds at that run, never
 * the worker's: a secret's run needs rotate on the secret, a key's admin on
 * the key (and rotate_dek then runs as that role), a shredding admin on the
 * secret (what destroy_previous_after needed), and re-encryption runs as
 * the column's registrant.  A refusal is recorded where the schedule is
 * watched (rotation_schedules.last_result, shred_error), and the run's
 * records name the role, passed to them explicitly.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "extension/common/guc.h"
#include "extension/common/owner_spi.h"
#include "extension/common/roles.h"
#include "extension/keys/key_acl.h"
#include "extension/common/catalog.h"
#include "extension/keys/reencrypt.h"
#include "kms/http.h"
#include "rotator/job.h"
#include "rotator/owner_job.h"
#include "rotator/rotation.h"
#include "rotator/schedule.h"
#include "rotator/strategy.h"

#define SCHEDULE_BATCH 50
#define REENCRYPT_BATCH_ROWS 10000
#define REENCRYPT_SLICE_MS 2000
/*
 * keysmith.reencrypt's lock: from 0.10 (CatalogVersion >= 10)
 * keysmith._reencrypt_lock's, which no other role can take
 * (extension/keys/reencrypt.c); before, the advisory lock (19283, table OID).
 */
#define REENCRYPT_LOCK_CLASS 19283

const char *const KsScheduleTables[] = {"secret", "secret_version", "secret_acl", "rotation", "rotation_event",
"schedule", "schedule_run", "encrypted_column"};
const int	KsScheduleTableCount = lengthof(KsScheduleTables);

static const char *const KindNames[] = {"secret", "key"};
static const char *const KindColumns[] = {"secret_name", "key_name"};

void
KsRequireScheduleCatalog(void)
{
	KsRequireWorkerCatalog(KsScheduleTables, KsScheduleTableCount, "schedules", 0, 6);
}

static int
IntervalCompare(const Interval *a, const Interval *b)
{
	return DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(a), IntervalPGetDatum(b)));
}

void
KsScheduleCheckPeriod(const Interval *every, const Interval *window)
{
	Interval	second = {.time = USECS_PER_SEC};
	Interval	zero = {0};

	if (IntervalCompare(every, &second) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a schedule's period must be at least one second"),
				 errhint("Rotation periods are usually days, for example '30 days'.")));
	if (window && (IntervalCompare(window, &zero) < 0 || IntervalCompare(window, every) >= 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a schedule's window must not be negative and must be shorter than its period")));
}

TimestampTz
KsScheduleSet(const KsScheduleSpec *spec)
{
	Oid			types[8] = {TEXTOID, INTERVALOID, INTERVALOID, INTERVALOID, TIMESTAMPTZOID, BOOLOID,
	INTERVALOID, OIDOID};
	Datum		values[8];
	char		nulls[8] = "        ";
	Interval	zero = {0};
	const Interval *window = spec->window ? spec->window : &zero;
	uint64		h = hash_bytes_extended((const unsigned char *) spec->target, strlen(spec->target), 0);
	char		sql[1024];
	bool		isnull;
	TimestampTz next;

	values[0] = CStringGetTextDatum(spec->target);
	values[1] = IntervalPGetDatum(spec->every);
	values[2] = IntervalPGetDatum(window);
	/* the offset within the window: the same for a name every time */
	values[3] = DirectFunctionCall2(interval_mul, IntervalPGetDatum(window),
									Float8GetDatum((double) (h % 1000000) / 1000000.0));
	values[4] = TimestampTzGetDatum(spec->starting);
	values[5] = BoolGetDatum(spec->reencrypt);
	values[6] = spec->destroy_previous_after ? IntervalPGetDatum(spec->destroy_previous_after) : (Datum) 0;
	nulls[6] = spec->destroy_previous_after ? ' ' : 'n';
	values[7] = ObjectIdGetDatum(spec->owner);

	(void) KsScheduleRemove(spec->kind, spec->target);
	snprintf(sql, sizeof(sql),
			 "INSERT INTO keysmith.schedule (%s, every, spread, spread_offset, starting, reencrypt,"
			 " destroy_previous_after, owner_role, last_period, next_due_at)"
			 " SELECT $1, $2, $3, $4, $5, $6, $7, $8::pg_catalog.regrole, p.first OPERATOR(pg_catalog.-) 1,"
			 "  $5 OPERATOR(pg_catalog.+) ($2 OPERATOR(pg_catalog.*) p.first::pg_catalog.float8)"
			 "   OPERATOR(pg_catalog.+) $4"
			 " FROM (SELECT GREATEST(keysmith._schedule_period($5, $2, $4, pg_catalog.now()), 0) AS first) p"
			 " RETURNING next_due_at", KindColumns[spec->kind]);
	KsSpiExec(sql, 8, types, values, nulls, false, 0, SPI_OK_INSERT_RETURNING);
	next = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (next <= GetCurrentTransactionStartTimestamp())
		KsWorkerWakeAtCommit(KS_WORKER_ROTATION);	/* due now: not a naptime later */
	return next;
}

bool
KsScheduleRemove(KsScheduleKind kind, const char *target)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(target)};
	char		sql[256];

	snprintf(sql, sizeof(sql), "DELETE FROM keysmith.schedule WHERE %s OPERATOR(pg_catalog.=) $1",
			 KindColumns[kind]);
	KsSpiExec(sql, 1, types, values, NULL, false, 0, SPI_OK_DELETE);
	return SPI_processed > 0;
}

/* ------------------------------------------------------------ serving a period */

typedef struct DueSchedule
{
	int64		id;				/* schedule_id */
	KsScheduleKind kind;
	char	   *target;
	Oid			owner;
	bool		reencrypt;
	/* filled by ServeItem */
	int64		period;
	int64		missed;
	char		token[KS_UUID_LEN];
	char	   *result;
	bool		served;
} DueSchedule;

/*
 * Lock the schedule and learn its latest due period, the periods missed
 * before it, and the token of that period's rotation.  False if the
 * schedule is gone, locked by another, or has nothing due.
 */
static bool
LockDue(DueSchedule *d, TimestampTz *period_start)
{
	Oid			types[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(d->id)};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		last;

	/* the token: a uuid derived from the schedule and the period */
	KsSpiExec("SELECT p.k, sc.last_period,"
			  "  sc.starting OPERATOR(pg_catalog.+) (sc.every OPERATOR(pg_catalog.*) p.k::pg_catalog.float8),"
			  "  pg_catalog.md5('keysmith schedule ' OPERATOR(pg_catalog.||) sc.schedule_id::pg_catalog.text"
			  "     OPERATOR(pg_catalog.||) ' period ' OPERATOR(pg_catalog.||) p.k::pg_catalog.text)"
			  "     ::pg_catalog.uuid::pg_catalog.text"
			  " FROM keysmith.schedule sc,"
			  "  LATERAL (SELECT keysmith._schedule_period(sc.starting, sc.every, sc.spread_offset,"
			  "                                            pg_catalog.now()) AS k) p"
			  " WHERE sc.schedule_id OPERATOR(pg_catalog.=) $1 FOR UPDATE OF sc SKIP LOCKED",
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	d->period = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	last = SPI_getbinval(tup, desc, 2, &isnull);
	if (d->period < 0 || (!isnull && DatumGetInt64(last) >= d->period))
		return false;
	/* last_period starts one before the first period due */
	d->missed = isnull ? 0 : d->period - DatumGetInt64(last) - 1;
	*period_start = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
	strlcpy(d->token, SPI_getvalue(tup, desc, 4), sizeof(d->token));
	return true;
}

typedef struct StartArgs
{
	KsSecret   *secret;
	char	   *token;
	const char *requester;
} StartArgs;

static void
StartItem(void *arg)
{
	StartArgs  *a = arg;

	KsRotationStart(a->secret, a->token, true, a->requester);
}

static void
ServeSecret(DueSchedule *d)
{
	KsSecret	s;
	char	   *owner_name = GetUserNameFromId(d->owner, true);
	char	   *message = NULL;
	char	   *in_flight;

	if (!KsSecretLoad(d->target, &s, true))
	{
		d->result = "failed: the secret is gone";
		return;
	}
	if (owner_name == NULL || !KsSecretHasPrivilege(d->target, KS_SECRET_ROTATE, d->owner))
	{
		d->result = psprintf("refused: role %s no longer holds rotate on this secret",
							 owner_name ? owner_name : "(dropped)");
		return;
	}
	in_flight = KsSecretRotationInFlight(d->target, NULL);
	if (in_flight)
	{
		d->result = psprintf("skipped: rotation %s was in flight", in_flight);
		return;
	}
	/* the rotation is recorded as requested by the role that scheduled it */
	{
		StartArgs	a = {&s, d->token, owner_name};

		if (KsJobTry(StartItem, &a, &message))
			d->result = "started";
		else
		{
			d->result = psprintf("failed to start: %s", message);
			d->token[0] = '\0';
		}
	}
}

typedef struct RotateDekArgs
{
	DueSchedule *d;
	int32		version;
	bool		family;			/* a key family: complete_shreds instead */
} RotateDekArgs;

/* rotate_dek as the role that scheduled it: its privileges on the key. */
static void
RotateDekItem(void *arg)
{
	RotateDekArgs *a = arg;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(a->d->target)};
	KsAsRole	as;
	bool		isnull;

	if (GetUserNameFromId(a->d->owner, true) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the role that scheduled this (OID %u) no longer exists", a->d->owner)));
	KsAsRoleBegin(&as, a->d->owner);
	KsSpiExec(a->family ? "SELECT family_version FROM keysmith.complete_shreds($1)" : "SELECT keysmith.rotate_dek($1)",
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
	a->version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	KsAsRoleEnd(&as);
}

static void
ServeKey(DueSchedule *d)
{
	RotateDekArgs a = {d, 0, false};
	char	   *message = NULL;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(d->target)};
	uint64		columns = 0;
	char	   *owner_name = GetUserNameFromId(d->owner, true);
	bool		isnull;

	d->token[0] = '\0';
	/* rotate_dek checks it too, as the role; said here as a refusal */
	KsSpiExec(KsCatalogHasFamilies() ?
			  "SELECT key_id, family FROM keysmith.key WHERE name OPERATOR(pg_catalog.=) $1" :
			  "SELECT key_id, false FROM keysmith.key WHERE name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		d->result = "failed: the key is gone";
		return;
	}
	a.family = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	if (owner_name == NULL ||
		!KsHasKeyPrivilege(DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)),
						   KS_PRIV_ADMIN, d->owner))
	{
		d->result = psprintf("refused: role %s no longer holds admin on this key",
							 owner_name ? owner_name : "(dropped)");
		return;
	}
	if (!KsJobTry(RotateDekItem, &a, &message))
	{
		d->result = psprintf("failed: %s", message);
		return;
	}
	if (d->reencrypt)
	{
		KsSpiExec("UPDATE keysmith.encrypted_column SET pending = true, attempts = 0,"
				  " next_attempt_at = '-infinity', last_error = NULL"
				  " WHERE key_name OPERATOR(pg_catalog.=) $1",
				  1, types, values, NULL, false, 0, SPI_OK_UPDATE);
		columns = SPI_processed;
	}
	if (a.family)
		d->result = psprintf("completed the family's shreds (its version is %d)", a.version);
	else if (d->reencrypt)
		d->result = psprintf("rotated the DEK to version %d; %llu registered column(s) to re-encrypt", a.version,
							 (unsigned long long) columns);
	else
		d->result = psprintf("rotated the DEK to version %d", a.version);
}

/* Serve the schedule's latest due period and record it, or do nothing. */
static void
ServeItem(void *arg)
{
	DueSchedule *d = arg;
	TimestampTz period_start;
	Oid			types[7] = {INT8OID, INT8OID, TIMESTAMPTZOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[7];
	char		nulls[7] = "       ";

	/* a period is due at starting + every * k + spread_offset */

	if (!LockDue(d, &period_start))
		return;
	if (d->kind == KS_SCHEDULE_SECRET)
		ServeSecret(d);
	else
		ServeKey(d);
	if (d->missed > 0)
		d->result = psprintf("%s (%lld earlier period(s) missed while nothing ran)", d->result,
							 (long long) d->missed);

	values[0] = Int64GetDatum(d->id);
	values[1] = Int64GetDatum(d->period);
	values[2] = TimestampTzGetDatum(period_start);
	if (d->token[0])
		values[3] = DirectFunctionCall1(uuid_in, CStringGetDatum(d->token));
	else
		nulls[3] = 'n';
	values[4] = CStringGetTextDatum(d->result);
	values[5] = CStringGetTextDatum(KindNames[d->kind]);
	values[6] = CStringGetTextDatum(d->target);
	KsSpiExec("INSERT INTO keysmith.schedule_run (schedule_id, period, period_start, token, result, kind, target)"
			  " VALUES ($1, $2, $3, $4, $5, $6, $7)", 7, types, values, nulls, false, 0, SPI_OK_INSERT);
	/* a period is due at starting + every * k + spread_offset */
	KsSpiExec("UPDATE keysmith.schedule SET last_period = $2, last_run_at = pg_catalog.now(),"
			  " last_result = $5, last_token = $4,"
			  " next_due_at = starting OPERATOR(pg_catalog.+) (every OPERATOR(pg_catalog.*)"
			  "   ($2 OPERATOR(pg_catalog.+) 1)::pg_catalog.float8) OPERATOR(pg_catalog.+) spread_offset"
			  " WHERE schedule_id OPERATOR(pg_catalog.=) $1",
			  5, types, values, nulls, false, 0, SPI_OK_UPDATE);
	d->served = true;
	ereport(LOG,
			(errmsg("keysmith schedule of %s \"%s\", period %lld: %s", KindNames[d->kind], d->target,
					(long long) d->period, d->result)));
}

/*
 * A run that failed as a whole (not the rotation or rotate_dek it started,
 * which are recorded as its result): try again in a minute, not at every
 * round, and say why in the view.
 */
static void
PostponeAfterError(DueSchedule *d, const char *message)
{
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2] = {Int64GetDatum(d->id), CStringGetTextDatum(psprintf("error, retrying: %s", message))};

	KsSpiExec("UPDATE keysmith.schedule SET last_result = $2,"
			  " next_due_at = pg_catalog.now() OPERATOR(pg_catalog.+) '1 minute'::pg_catalog.interval"
			  " WHERE schedule_id OPERATOR(pg_catalog.=) $1",
			  2, types, values, NULL, false, 0, SPI_OK_UPDATE);
	ereport(LOG,
			(errmsg("keysmith schedule of %s \"%s\" could not run, will retry in a minute: %s",
					KindNames[d->kind], d->target, message)));
}

/* ------------------------------------------------------------ shredding */

typedef struct ShredArgs
{
	char	   *secret;
	char	   *version;
	char	   *username;
	int64		schedule_id;
	Oid			owner;			/* the role that set the schedule */
} ShredArgs;

/* The catalog version the round found (ScheduleCatalogUsable). */
static int	CatalogVersion = 0;
static Oid ExtOid = InvalidOid;	/* the extension, found by the round's catalog check */

/*
 * Record on the schedule why its shredding is refused (error) or that it
 * is not (NULL), logging only a change, since a refused shredding is
 * checked again at every round.  A catalog before 0.10 has no place for
 * it: the log says it, once per worker.
 */
static void
ShredRecord(ShredArgs *a, const char *error)
{
	static bool said = false;
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2] = {Int64GetDatum(a->schedule_id), error ? CStringGetTextDatum(error) : (Datum) 0};
	char		nulls[2] = {' ', error ? ' ' : 'n'};

	if (CatalogVersion < 10)
	{
		if (error && !said)
			ereport(LOG,
					(errmsg("keysmith schedule of secret \"%s\" does not shred: %s", a->secret, error)));
		said = error != NULL;
		return;
	}
	KsSpiExec("UPDATE keysmith.schedule SET shred_error = $2"
			  " WHERE schedule_id OPERATOR(pg_catalog.=) $1 AND shred_error IS DISTINCT FROM $2",
			  2, types, values, nulls, false, 0, SPI_OK_UPDATE);
	if (SPI_processed > 0 && error)
		ereport(LOG,
				(errmsg("keysmith schedule of secret \"%s\" does not shred: %s", a->secret, error)));
}

/*
 * Erase a previous version whose time is up, if the role that set the
 * schedule still holds admin on the secret.  For a role pair, the
 * previous credential is still the other role's password: it goes too, so
 * that what was shredded no longer logs in either.
 */
static void
ShredItem(void *arg)
{
	ShredArgs  *a = arg;
	KsSecret	s;
	const KsRotationStrategy *rs;
	Oid			types[3] = {TEXTOID, UUIDOID, TEXTOID};
	Datum		values[3];
	char		current[KS_UUID_LEN];
	char		current_user[NAMEDATALEN] = "";
	const char *detail = "the previous version's value is erased";
	char	   *owner_name;

	if (!KsSecretLoad(a->secret, &s, true) || KsSecretRotationInFlight(a->secret, NULL))
		return;					/* gone, or a rotation will move the labels */
	owner_name = GetUserNameFromId(a->owner, true);
	if (owner_name == NULL)
	{
		ShredRecord(a, psprintf("refused: the role that set this schedule (OID %u) no longer exists;"
								" the previous version is kept", a->owner));
		return;
	}
	if (!KsSecretHasPrivilege(a->secret, KS_SECRET_ADMIN, a->owner))
	{
		ShredRecord(a, psprintf("refused: role %s no longer holds admin on this secret;"
								" the previous version is kept", owner_name));
		return;
	}
	rs = KsRotationStrategyFor(s.opt.strategy);
	if (rs->shred_previous && a->username[0] &&
		KsSecretFindVersion(a->secret, KS_STAGE_CURRENT, current, NULL, current_user) &&
		strcmp(current_user, a->username) != 0)
		detail = rs->shred_previous(&s, a->username);
	values[0] = CStringGetTextDatum(a->secret);
	values[1] = DirectFunctionCall1(uuid_in, CStringGetDatum(a->version));
	values[2] = CStringGetTextDatum(KsSecretStageNames[KS_STAGE_PREVIOUS]);
	KsSpiExec("DELETE FROM keysmith.secret_version WHERE secret_name OPERATOR(pg_catalog.=) $1"
			  " AND version_id OPERATOR(pg_catalog.=) $2 AND stage OPERATOR(pg_catalog.=) $3",
			  3, types, values, NULL, false, 0, SPI_OK_DELETE);
	if (SPI_processed > 0)
		KsSecretEvent(a->secret, NULL, a->version, "previous_destroyed", detail, owner_name);
	ShredRecord(a, NULL);
}

static void
ShredDue(void)
{
	int			n;
	ShredArgs  *items;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(KsSecretStageNames[KS_STAGE_PREVIOUS])};

	/*
	 * Refused before, last: a batch of refusals, checked again at every
	 * round, must not hold up the others.
	 */
	KsSpiExec(psprintf("SELECT v.secret_name, v.version_id::pg_catalog.text,"
					   "  coalesce(v.username::pg_catalog.text, ''), sc.schedule_id, sc.owner_role::pg_catalog.oid"
					   " FROM keysmith.schedule sc"
					   " JOIN keysmith.secret s ON s.name OPERATOR(pg_catalog.=) sc.secret_name"
					   " JOIN keysmith.secret_version v ON v.secret_name OPERATOR(pg_catalog.=) s.name"
					   "  AND v.stage OPERATOR(pg_catalog.=) $1"
					   " WHERE sc.destroy_previous_after IS NOT NULL"
					   "   AND s.last_rotated_at OPERATOR(pg_catalog.+) sc.destroy_previous_after"
					   "       OPERATOR(pg_catalog.<=) pg_catalog.now()"
					   " ORDER BY %s sc.schedule_id"
					   " LIMIT " CppAsString2(SCHEDULE_BATCH),
					   CatalogVersion >= 10 ? "sc.shred_error IS NOT NULL," : ""),
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
	n = (int) SPI_processed;
	items = palloc0(sizeof(ShredArgs) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		items[i].secret = SPI_getvalue(tup, desc, 1);
		items[i].version = SPI_getvalue(tup, desc, 2);
		items[i].username = SPI_getvalue(tup, desc, 3);
		items[i].schedule_id = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
		items[i].owner = DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull));
	}
	if (n > 0 && KsWorkerWaitsForRestore(ExtOid))
		return;
	for (int i = 0; i < n; i++)
	{
		char	   *message = NULL;

		if (!KsJobTry(ShredItem, &items[i], &message))
			ereport(LOG,
					(errmsg("keysmith could not shred the previous version of secret \"%s\": %s",
							items[i].secret, message)));
	}
}

/* ------------------------------------------------------------ re-encryption */

typedef struct PendingColumn
{
	Oid			relid;
	char	   *col;
	char	   *context_expr;	/* or NULL */
	Oid			registrar;
	bool		more;			/* _reencrypt_step: is there more to do */
} PendingColumn;

/*
 * Run sql as the column's registrant, with the column's parameters ($1 the
 * table, $2 the column, $3 the batch size, $4 the context expression;
 * typed, so a query need not use them all).  Its boolean result, or false
 * for a void one.
 */
static bool
ReencryptCall(PendingColumn *c, const char *sql)
{
	Oid			types[4] = {OIDOID, NAMEOID, INT4OID, TEXTOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', c->context_expr ? ' ' : 'n'};
	KsAsRole	as;
	bool		isnull;
	Datum		d;
	bool		result;

	values[0] = ObjectIdGetDatum(c->relid);
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(c->col));
	values[2] = Int32GetDatum(REENCRYPT_BATCH_ROWS);
	values[3] = c->context_expr ? CStringGetTextDatum(c->context_expr) : (Datum) 0;
	KsAsRoleBegin(&as, c->registrar);
	KsSpiExec(sql, 4, types, values, nulls, false, 0, SPI_OK_SELECT);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	result = !isnull && SPI_gettypeid(SPI_tuptable->tupdesc, 1) == BOOLOID && DatumGetBool(d);
	KsAsRoleEnd(&as);
	return result;
}

static void
ReencryptStartItem(void *arg)
{
	PendingColumn *c = arg;

	if (GetUserNameFromId(c->registrar, true) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the role that registered the column (OID %u) no longer exists", c->registrar)));

	/*
	 * A job this worker left running at its last slice goes on as one run:
	 * _reencrypt_start would count a resumed job as started mid-table and
	 * ask for one more full pass, so a table whose pass takes longer than
	 * a slice would never be done.  Only the lock is taken again.
	 */
	if (!ReencryptCall(c, "SELECT coalesce((SELECT j.state OPERATOR(pg_catalog.=) " KS_REENCRYPT_RUNNING_SQL
					   " FROM keysmith._reencrypt_job_get($1::pg_catalog.regclass, $2) j), false)"))
	{
		(void) ReencryptCall(c, "SELECT keysmith._reencrypt_start($1::pg_catalog.regclass, $2, $3,"
							 " '0'::pg_catalog.interval)");
		return;
	}
	if (!ReencryptCall(c, CatalogVersion >= 10 ? "SELECT keysmith._reencrypt_lock($1::pg_catalog.regclass)" :
					   "SELECT pg_catalog.pg_try_advisory_lock(" CppAsString2(REENCRYPT_LOCK_CLASS) ","
					   " $1::pg_catalog.int4)"))
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("keysmith.reencrypt is already running on %s", get_rel_name(c->relid))));
}

/*
 * One batch: _reencrypt_step evaluates the registrant's context_expr and
 * its UPDATE fires the table's triggers, so it runs in an owner job
 * (rotator/owner_job.c), a process whose session user is the registrant,
 * never in this superuser worker, and ends at
 * keysmith.rotation_step_timeout.  This worker keeps reencrypt's advisory
 * lock on the table meanwhile; the batch takes no lock this transaction
 * holds.
 */
static void
ReencryptStepItem(void *arg)
{
	PendingColumn *c = arg;
	KsOwnerJob	job = {0};
	char		relid[16];
	char		batch[16];
	char	   *more;

	snprintf(relid, sizeof(relid), "%u", c->relid);
	snprintf(batch, sizeof(batch), "%d", REENCRYPT_BATCH_ROWS);
	job.role = c->registrar;
	job.what = psprintf("the re-encryption batch of column \"%s\" of table OID %u", c->col, c->relid);
	job.sql = "SELECT keysmith._reencrypt_step($1::pg_catalog.regclass, $2, $3, $4)";
	job.nargs = 4;
	job.types[0] = OIDOID;
	job.types[1] = NAMEOID;
	job.types[2] = INT4OID;
	job.types[3] = TEXTOID;
	job.values[0] = relid;
	job.values[1] = c->col;
	job.values[2] = batch;
	job.values[3] = c->context_expr;

	/*
	 * The worker commits synchronously (rotator/worker.c), but a batch has
	 * no effect outside the database: a batch lost in a crash, with its
	 * progress, is simply done again.  Waiting for the flush of every
	 * batch would make a scheduled run a third slower than a CALL.
	 */
	job.async_commit = true;
	more = KsOwnerJobRun(&job);
	c->more = more != NULL && strcmp(more, "t") == 0;
}

/* Release reencrypt's lock on the table if this session holds it. */
static void
ReencryptUnlock(Oid relid)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};

	if (CatalogVersion >= 10)
	{
		KsSpiExec("SELECT keysmith._reencrypt_unlock($1::pg_catalog.regclass)",
				  1, types, values, NULL, false, 0, SPI_OK_SELECT);
		return;
	}
	KsSpiExec("SELECT pg_catalog.pg_advisory_unlock(" CppAsString2(REENCRYPT_LOCK_CLASS) ", $1::pg_catalog.int4)"
			  " FROM pg_catalog.pg_locks l"
			  " WHERE l.locktype OPERATOR(pg_catalog.=) 'advisory'"
			  "   AND l.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()"
			  "   AND l.classid OPERATOR(pg_catalog.=) " CppAsString2(REENCRYPT_LOCK_CLASS)
			  "   AND l.objid OPERATOR(pg_catalog.=) $1 AND l.objsubid OPERATOR(pg_catalog.=) 2",
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
}

/* Record how the column's slice ended: done, more to do, or an error. */
static void
ReencryptRecord(PendingColumn *c, bool done, const char *error)
{
	Oid			types[3] = {OIDOID, NAMEOID, TEXTOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', error ? ' ' : 'n'};

	values[0] = ObjectIdGetDatum(c->relid);
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(c->col));
	values[2] = error ? CStringGetTextDatum(error) : (Datum) 0;
	KsJobBegin("keysmith reencrypt: recording", keysmith_rotation_lock_timeout);
	ReencryptUnlock(c->relid);
	if (error)
		KsSpiExec("UPDATE keysmith.encrypted_column SET attempts = attempts OPERATOR(pg_catalog.+) 1,"
				  " last_error = $3, next_attempt_at = " KS_JOB_BACKOFF_SQL("attempts")
				  " WHERE tbl OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND col OPERATOR(pg_catalog.=) $2",
				  3, types, values, nulls, false, 0, SPI_OK_UPDATE);
	else if (done)
		KsSpiExec("UPDATE keysmith.encrypted_column SET pending = false, attempts = 0, last_error = $3,"
				  " last_done_at = pg_catalog.now()"
				  " WHERE tbl OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND col OPERATOR(pg_catalog.=) $2",
				  3, types, values, nulls, false, 0, SPI_OK_UPDATE);
	/* in the transaction: the relation's name comes from the catalog */
	if (error)
		ereport(LOG,
				(errmsg("keysmith scheduled re-encryption of %s.%s failed, will retry: %s",
						get_rel_name(c->relid) ? get_rel_name(c->relid) : "(dropped)", c->col, error)));
	KsJobEnd();
}

/*
 * Re-encrypt one pending column for at most REENCRYPT_SLICE_MS, a batch
 * per transaction.  True if there is more to do at once.
 */
static bool
ReencryptSlice(MemoryContext cxt)
{
	PendingColumn c = {0};
	TimestampTz deadline;
	char	   *message = NULL;
	bool		isnull;
	bool		exists;

	KsJobBegin("keysmith reencrypt: looking for pending columns", keysmith_rotation_lock_timeout);
	KsSpiExec("SELECT tbl::pg_catalog.oid, col::pg_catalog.text, context_expr, registered_by::pg_catalog.oid"
			  " FROM keysmith.encrypted_column"
			  " WHERE pending AND next_attempt_at OPERATOR(pg_catalog.<=) pg_catalog.now()"
			  " ORDER BY next_attempt_at, registered_at LIMIT 1",
			  0, NULL, NULL, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		KsJobEnd();
		return false;
	}
	c.relid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	/* copied to the round's memory: each transaction's goes at its end */
	c.col = MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
	c.context_expr = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	if (c.context_expr)
		c.context_expr = MemoryContextStrdup(cxt, c.context_expr);
	c.registrar = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	if (KsWorkerWaitsForRestore(ExtOid))
	{
		KsJobEnd();
		return false;
	}
	exists = SearchSysCacheExists1(RELOID, ObjectIdGetDatum(c.relid));
	if (!exists)
	{
		/* the table was dropped: nothing left to re-encrypt, nor to register */
		Oid			types[1] = {OIDOID};
		Datum		values[1] = {ObjectIdGetDatum(c.relid)};

		KsSpiExec("DELETE FROM keysmith.encrypted_column WHERE tbl OPERATOR(pg_catalog.=) $1::pg_catalog.regclass",
				  1, types, values, NULL, false, 0, SPI_OK_DELETE);
		ereport(LOG,
				(errmsg("keysmith dropped the registration of column \"%s\" of a table that no longer exists (OID %u)",
						c.col, c.relid)));
	}
	KsJobEnd();
	if (!exists)
		return true;

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), REENCRYPT_SLICE_MS);
	KsJobBegin("keysmith reencrypt: starting", keysmith_rotation_lock_timeout);
	if (!KsJobTry(ReencryptStartItem, &c, &message))
	{
		message = MemoryContextStrdup(cxt, message);
		KsJobEnd();
		ReencryptRecord(&c, false, message);
		return true;
	}
	KsJobEnd();
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		KsJobBegin("keysmith reencrypt: batch", keysmith_rotation_lock_timeout);
		if (!KsJobTry(ReencryptStepItem, &c, &message))
		{
			message = MemoryContextStrdup(cxt, message);
			KsJobEnd();
			ReencryptRecord(&c, false, message);
			return true;
		}
		KsJobEnd();
		if (!c.more)
		{
			ReencryptRecord(&c, true, NULL);
			return true;
		}
		if (GetCurrentTimestamp() >= deadline)
		{
			ReencryptRecord(&c, false, NULL);	/* lets rotations run, then goes on */
			return true;
		}
	}
}

/* ------------------------------------------------------------ the round */

/* Is the catalog at 0.6 and keysmith's own?  Said once in the log if not. */
static bool
ScheduleCatalogUsable(void)
{
	static KsCatalogStatus said = KS_CATALOG_OK;
	KsCatalog	cat;
	char		why[256];
	KsCatalogStatus st = KsCatalogWithTables(&cat, KsScheduleTables, KsScheduleTableCount, "schedules",
											 why, sizeof(why));

	if (st == KS_CATALOG_UNTRUSTED && said != st)
		ereport(LOG, (errmsg("keysmith rotation worker runs no schedules: %s", why)));
	said = st;
	CatalogVersion = st == KS_CATALOG_OK ? cat.version : 0;
	ExtOid = cat.extoid;
	return st == KS_CATALOG_OK && cat.version >= 6;
}

static bool
ScheduleRound(MemoryContext cxt)
{
	DueSchedule *due;
	int			n;
	bool		usable;

	KsJobBegin("keysmith schedules: looking for due runs", keysmith_rotation_lock_timeout);
	usable = ScheduleCatalogUsable();
	if (!usable)
	{
		KsJobEnd();
		return false;
	}
	KsSpiExec("SELECT CASE WHEN secret_name IS NULL THEN 1 ELSE 0 END,"
			  " coalesce(secret_name, key_name), owner_role::pg_catalog.oid, reencrypt, schedule_id"
			  " FROM keysmith.schedule WHERE next_due_at OPERATOR(pg_catalog.<=) pg_catalog.now()"
			  " ORDER BY next_due_at LIMIT " CppAsString2(SCHEDULE_BATCH),
			  0, NULL, NULL, NULL, false, 0, SPI_OK_SELECT);
	n = (int) SPI_processed;
	due = MemoryContextAllocZero(cxt, sizeof(DueSchedule) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;

		due[i].kind = (KsScheduleKind) DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		due[i].target = MemoryContextStrdup(cxt, SPI_getvalue(tup, desc, 2));
		due[i].owner = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		due[i].reencrypt = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
		due[i].id = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
	}
	/* a restore in progress: no schedule, no shredding, no re-encryption */
	if (n > 0 && KsWorkerWaitsForRestore(ExtOid))
	{
		KsJobEnd();
		return false;
	}
	for (int i = 0; i < n; i++)
	{
		char	   *message = NULL;

		if (!KsJobTry(ServeItem, &due[i], &message))
			PostponeAfterError(&due[i], message);
	}
	ShredDue();
	KsJobEnd();
	return true;
}

/*
 * The rotation worker's round: due schedules (which may start rotations),
 * then the rotations, then a slice of scheduled re-encryption.
 */
bool
KsRotationWorkerRound(MemoryContext cxt)
{
	bool		usable;
	bool		more;

	KsOwnerJobNewRound();
	/* every KMS call this worker makes waits at most one step's deadline */
	KsHttpSetTimeoutCap(keysmith_rotation_step_timeout);
	usable = ScheduleRound(cxt);
	more = KsRotationRound(cxt);

	if (usable)
		more |= ReencryptSlice(cxt);
	return more;
}
