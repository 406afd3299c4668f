/*
 * extension/keys/reencrypt.c
 *
 * The only way into keysmith.reencrypt_job, the progress table of
 * keysmith.reencrypt.  No role but the extension owner may write a keysmith
 * table (docs/security.md), so the procedure reads and writes its job row
 * through these two functions.  Each checks that the calling user may
 * UPDATE the table being re-encrypted, which is what re-encrypting it takes
 * anyway, and only then works on reencrypt_job as its owner: nobody can
 * forge or read progress rows for a table it could not re-encrypt itself.
 * The job's state names (extension/keys/reencrypt.h) are defined here.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "extension/common/catalog.h"
#include "extension/common/owner_spi.h"
#include "extension/keys/reencrypt.h"

const char *const KsReencryptStateNames[KS_REENCRYPT_STATE_COUNT] = {
	[KS_REENCRYPT_RUNNING] = KS_REENCRYPT_RUNNING_NAME,
	[KS_REENCRYPT_DONE] = KS_REENCRYPT_DONE_NAME,
};

PG_FUNCTION_INFO_V1(keysmith_reencrypt_job_get);
PG_FUNCTION_INFO_V1(keysmith_reencrypt_job_put);
PG_FUNCTION_INFO_V1(keysmith_reencrypt_lock);
PG_FUNCTION_INFO_V1(keysmith_reencrypt_unlock);

static void
RequireUpdateOn(Oid relid)
{
	if (pg_class_aclcheck(relid, GetUserId(), ACL_UPDATE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", get_rel_name(relid)),
				 errdetail("Re-encryption progress is kept only for tables the caller may UPDATE.")));
}

/*
 * keysmith._reencrypt_job_get(tbl regclass, col name)
 *   RETURNS TABLE (state text, rows_done bigint, rows_total bigint,
 *                  resume_after tid, pass_rows bigint, started_mid boolean)
 * The job row, or no row.
 */
Datum
keysmith_reencrypt_job_get(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			relid = PG_GETARG_OID(0);
	Oid			types[2] = {REGCLASSOID, NAMEOID};
	Datum		values[2] = {PG_GETARG_DATUM(0), PG_GETARG_DATUM(1)};
	KsOwnerSpi	spi;

	RequireUpdateOn(relid);
	InitMaterializedSRF(fcinfo, 0);
	KsOwnerSpiBegin(&spi);
	KsSpiExec("SELECT j.state, j.rows_done, j.rows_total, j.resume_after, j.pass_rows, j.started_mid"
			  "  FROM keysmith.reencrypt_job j"
			  " WHERE j.tbl OPERATOR(pg_catalog.=) $1 AND j.col OPERATOR(pg_catalog.=) $2",
			  2, types, values, NULL, false, 1, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		Datum		out[6];
		bool		nulls[6];

		for (int i = 0; i < 6; i++)
			out[i] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1, &nulls[i]);
		/* copied out of SPI's memory by the tuplestore */
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, nulls);
	}
	KsOwnerSpiEnd(&spi);
	return (Datum) 0;
}

/*
 * keysmith._reencrypt_job_put(tbl regclass, col name, state text,
 *     rows_done bigint, rows_total bigint, resume_after tid,
 *     pass_rows bigint, started_mid boolean) RETURNS void
 * Upserts the job row.  started_at moves when a finished job starts again,
 * last_batch_at when a batch moved resume_after, finished_at when it is done.
 */
Datum
keysmith_reencrypt_job_put(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *state;
	bool		known = false;
	Oid			types[10] = {REGCLASSOID, NAMEOID, TEXTOID, INT8OID, INT8OID, TIDOID, INT8OID, BOOLOID,
	TEXTOID, TEXTOID};
	Datum		values[10];
	char		nulls[10];
	KsOwnerSpi	spi;

	KsRequirePrimary("re-encrypt", "Re-encryption writes rows: run it on the primary.");
	for (int i = 0; i < 8; i++)
	{
		if (PG_ARGISNULL(i) && i != 5)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("only resume_after may be null")));
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	relid = PG_GETARG_OID(0);
	state = text_to_cstring(PG_GETARG_TEXT_PP(2));
	for (int i = 0; i < KS_REENCRYPT_STATE_COUNT; i++)
		known = known || strcmp(state, KsReencryptStateNames[i]) == 0;
	if (!known)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a re-encryption job is running or done")));
	RequireUpdateOn(relid);
	values[8] = CStringGetTextDatum(KsReencryptStateNames[KS_REENCRYPT_DONE]);
	values[9] = CStringGetTextDatum(KsReencryptStateNames[KS_REENCRYPT_RUNNING]);
	nulls[8] = nulls[9] = ' ';

	KsOwnerSpiBegin(&spi);
	KsSpiExec("INSERT INTO keysmith.reencrypt_job AS j (tbl, col, state, started_at, rows_done, rows_total,"
			  "                                    resume_after, pass_rows, started_mid)"
			  " VALUES ($1, $2, $3, pg_catalog.clock_timestamp(), $4, $5, $6, $7, $8)"
			  " ON CONFLICT ON CONSTRAINT reencrypt_job_pkey DO UPDATE SET"
			  "   state = excluded.state,"
			  "   started_at = CASE WHEN j.state OPERATOR(pg_catalog.=) $9"
			  "                      AND excluded.state OPERATOR(pg_catalog.=) $10"
			  "                     THEN excluded.started_at ELSE j.started_at END,"
			  "   finished_at = CASE WHEN excluded.state OPERATOR(pg_catalog.=) $9"
			  "                      THEN pg_catalog.clock_timestamp() END,"
			  "   last_batch_at = CASE WHEN excluded.resume_after IS NOT NULL"
			  "                        THEN pg_catalog.clock_timestamp() ELSE j.last_batch_at END,"
			  "   rows_done = excluded.rows_done, rows_total = excluded.rows_total,"
			  "   resume_after = excluded.resume_after, pass_rows = excluded.pass_rows,"
			  "   started_mid = excluded.started_mid",
			  10, types, values, nulls, false, 0, SPI_OK_INSERT);
	KsOwnerSpiEnd(&spi);
	PG_RETURN_VOID();
}

/*
 * The lock that keeps two re-encryptions of one table apart.  Up to 0.9 it
 * was the advisory lock (19283, table OID), which any login role could
 * take first with pg_advisory_lock and hold, stalling every re-encryption
 * of the table (docs/security.md).  It is now an advisory lock tag that no
 * SQL function can ask for: pg_advisory_lock's tags end in 1 (one bigint
 * key) or 2 (two integer keys), keysmith's ends in 3.  It is taken only
 * here, by a role that may UPDATE the table, and shows in pg_locks as
 * advisory with classid 19283, objid the table's OID and objsubid 3.
 */
#define REENCRYPT_LOCK_CLASS 19283
#define REENCRYPT_LOCK_KIND 3

static void
ReencryptLockTag(LOCKTAG *tag, Oid relid)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, REENCRYPT_LOCK_CLASS, relid, REENCRYPT_LOCK_KIND);
}

/*
 * keysmith._reencrypt_lock(tbl regclass) RETURNS boolean: take the
 * session's re-encryption lock on tbl if nobody holds it.
 */
Datum
keysmith_reencrypt_lock(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	LOCKTAG		tag;

	RequireUpdateOn(relid);
	ReencryptLockTag(&tag, relid);
	if (LockHeldByMe(&tag, ExclusiveLock))
		PG_RETURN_BOOL(true);	/* a resumed run of this session */
	PG_RETURN_BOOL(LockAcquire(&tag, ExclusiveLock, true, true) != LOCKACQUIRE_NOT_AVAIL);
}

/*
 * keysmith._reencrypt_unlock(tbl regclass) RETURNS boolean: release it if
 * this session holds it.
 */
Datum
keysmith_reencrypt_unlock(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	LOCKTAG		tag;

	ReencryptLockTag(&tag, relid);
	if (!LockHeldByMe(&tag, ExclusiveLock))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(LockRelease(&tag, ExclusiveLock, true));
}
