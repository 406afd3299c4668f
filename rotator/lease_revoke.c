/*
 * rotator/lease_revoke.c
 *
 * Revoking a lease, in the shape of the rotation engine: the lease's state
 * (keysmith.lease.state) names the next step, and KsLeaseAdvance runs that
 * step and writes the next state in the same transaction as its effect.
 * revoke_lease (extension/leases/leases.c) advances a lease through both steps at
 * once, the second in a subtransaction; the reaper (rotator/reaper.c)
 * advances due leases in batches, clearing other databases with helper
 * workers in between.  Both record a failed step the same way
 * (KsLeaseRecordFailure) and both finish the same way, so the two paths
 * cannot drift apart.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/timestamp.h"

#include "extension/common/catalog.h"
#include "extension/common/owner_spi.h"
#include "extension/common/roles.h"
#include "extension/leases/lease_state.h"
#include "rotator/job.h"
#include "rotator/lease_revoke.h"

const char *const KsLeaseTables[] = {"lease", "lease_event", "role_template"};
const int	KsLeaseTableCount = lengthof(KsLeaseTables);

/*
 * keysmith's lease tables in this database, found by OID and trusted
 * (extension/common/catalog.c): KS_CATALOG_ABSENT with cat->extoid set means an
 * extension that predates leased roles.  The reaper and the SQL functions
 * both ask this before they touch a lease table as a superuser.
 */
KsCatalogStatus
KsLeaseCatalog(KsCatalog *cat, char *why, size_t whylen)
{
	return KsCatalogWithTables(cat, KsLeaseTables, KsLeaseTableCount, "leased roles", why, whylen);
}

/*
 * May revocation give a lease's objects to owner?  Only to a role the
 * lease could already act as: one of its template's member_of roles, and
 * never a superuser, a predefined role or a keysmith role.  A template made
 * before 0.3 may name another; revocation then drops the objects instead.
 */
bool
KsLeaseOwnerIsSafe(Oid owner)
{
	char	   *name = GetUserNameFromId(owner, true);

	return name != NULL && !superuser_arg(owner) && !KsIsPredefinedRole(owner, name) &&
		!KsIsKeysmithRole(name);
}

static char *
OwnerName(Oid owner)
{
	char	   *name = GetUserNameFromId(owner, true);

	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("owner_role of the lease (OID %u) no longer exists", owner)));
	return name;
}

void
KsLeaseEvent(Datum lease_id, const char *event, const char *detail)
{
	Oid			types[4] = {UUIDOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', detail ? ' ' : 'n'};
	char	   *actor = GetUserNameFromId(GetOuterUserId(), true);

	values[0] = lease_id;
	values[1] = CStringGetTextDatum(event);
	values[2] = CStringGetTextDatum(actor ? actor : "?");
	values[3] = detail ? CStringGetTextDatum(detail) : (Datum) 0;
	KsSpiExec("INSERT INTO keysmith.lease_event (lease_id, event, acting_role, detail)"
		" VALUES ($1, $2, $3, $4)", 4, types, values, nulls, false, 0, SPI_OK_INSERT);
}


/*
 * keysmith.lease keeps role_oid and requester_oid as OIDs, and pg_dump
 * copies them as numbers.  Restored into another cluster (pg_dumpall
 * --globals-only and pg_dump), the roles come back under new OIDs, and the
 * old numbers may name unrelated roles there: acting on them would lock
 * out and drop a role that was never leased, and let another role renew
 * or revoke the lease.  So an OID is trusted only while the role it names
 * carries the lease's security label, lease:<id> (pg_shseclabel, which
 * pg_dumpall carries and only keysmith or a superuser can set).  A lease
 * whose role_oid does not is bound again, here, to the one role that
 * carries the label (none, or more than one: InvalidOid, and revocation
 * then finds the role gone and touches no role), and its requester to the
 * role named requested_by (none: InvalidOid, so only keysmith admins may
 * act on it).  The check is one index probe per unrevoked lease.
 */
uint64
KsLeaseRebind(const Datum *lease_id)
{
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		values[2] = {lease_id ? *lease_id : (Datum) 0, KsLeaseStateDatum(KS_LEASE_REVOKED)};
	char		nulls[2] = {lease_id ? ' ' : 'n', ' '};

	KsSpiExec("WITH moved AS ("
			  "  SELECT l.lease_id, l.role_oid AS old_oid,"
			  "         (SELECT CASE WHEN pg_catalog.count(*) OPERATOR(pg_catalog.=) 1"
			  "                      THEN pg_catalog.min(s.objoid::pg_catalog.int8) END"
			  "            FROM pg_catalog.pg_shseclabel s"
			  "           WHERE s.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_authid'::pg_catalog.regclass"
			  "             AND s.provider OPERATOR(pg_catalog.=) 'keysmith'"
			  "             AND s.label OPERATOR(pg_catalog.=) ('lease:' OPERATOR(pg_catalog.||) l.lease_id::pg_catalog.text))"
			  "           AS new_oid,"
			  "         (SELECT a.oid FROM pg_catalog.pg_authid a"
			  "           WHERE a.rolname OPERATOR(pg_catalog.=) l.requested_by) AS new_requester"
			  "    FROM keysmith.lease l"
			  "   WHERE l.state OPERATOR(pg_catalog.<>) $2"
			  "     AND ($1 IS NULL OR l.lease_id OPERATOR(pg_catalog.=) $1)"
			  "     AND l.role_oid OPERATOR(pg_catalog.<>) 0"
			  "     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_shseclabel s"
			  "                      WHERE s.objoid OPERATOR(pg_catalog.=) l.role_oid"
			  "                        AND s.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_authid'::pg_catalog.regclass"
			  "                        AND s.provider OPERATOR(pg_catalog.=) 'keysmith'"
			  "                        AND s.label OPERATOR(pg_catalog.=) ('lease:' OPERATOR(pg_catalog.||) l.lease_id::pg_catalog.text))"
			  "     FOR UPDATE OF l)"
			  " UPDATE keysmith.lease l"
			  "    SET role_oid = COALESCE(m.new_oid, 0)::pg_catalog.oid,"
			  "        requester_oid = COALESCE(m.new_requester, 0::pg_catalog.oid)"
			  "   FROM moved m WHERE l.lease_id OPERATOR(pg_catalog.=) m.lease_id"
			  " RETURNING l.lease_id, m.old_oid, l.role_oid",
			  2, types, values, nulls, false, 0, SPI_OK_UPDATE_RETURNING);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Oid			role = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		char	   *id = SPI_getvalue(tup, desc, 1);
		char	   *old = SPI_getvalue(tup, desc, 2);

		ereport(LOG,
				(errmsg("keysmith: lease %s was bound to role OID %s, which does not carry its security label; %s",
						id, old,
						OidIsValid(role)
						? psprintf("bound again to role OID %u, which does (restored from another cluster?)", role)
						: "no single role carries it, so revocation will find the role gone and touch none")));
	}
	return SPI_processed;
}

/*
 * Step 1: the role can no longer log in.  VALID UNTIL moves to now as
 * well, so the authentication hook refuses it whatever the method.
 */
static void
SetNologin(Oid roleid)
{
	char	   *name = GetUserNameFromId(roleid, true);
	char	   *sql;

	if (name == NULL)
		return;
	sql = psprintf("ALTER ROLE %s NOLOGIN VALID UNTIL %s", quote_identifier(name),
				   quote_literal_cstr(DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(GetCurrentTransactionStartTimestamp())))));
	KsSpiExec(sql, 0, NULL, NULL, NULL, false, 0, SPI_OK_UTILITY);
}

/*
 * Step 2: terminate the sessions of these n roles, in every database.  The
 * backends are read from this transaction's snapshot of the backend
 * status array, without a query, so the reaper can do it per lease.
 */
void
KsLeaseTerminateSessions(const Oid *roles, int n)
{
	int			nbackends = pgstat_fetch_stat_numbackends();

	for (int i = 1; i <= nbackends && n > 0; i++)
	{
		LocalPgBackendStatus *local = pgstat_fetch_stat_local_beentry(i);
		PgBackendStatus *be = local ? &local->backendStatus : NULL;

		if (be == NULL || be->st_procpid == MyProcPid || !OidIsValid(be->st_userid))
			continue;
		for (int j = 0; j < n; j++)
			if (be->st_userid == roles[j])
			{
				(void) DirectFunctionCall2(pg_terminate_backend, Int32GetDatum(be->st_procpid),
										   Int64GetDatum(0));
				break;
			}
	}
}

/*
 * Where the role owns or holds something (pg_shdepend): *here is set when
 * that includes this database or cluster-wide objects; the result lists
 * the other databases.
 */
List *
KsLeaseDatabases(Oid roleid, bool *here)
{
	Oid			types[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(roleid)};
	List	   *others = NIL;
	bool		isnull;

	KsSpiExec("SELECT DISTINCT d.dbid FROM pg_catalog.pg_shdepend d"
			  " WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_authid'::pg_catalog.regclass"
			  "   AND d.refobjid OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
	*here = false;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Oid			dbid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
														  SPI_tuptable->tupdesc, 1, &isnull));

		if (dbid == MyDatabaseId || dbid == InvalidOid)
			*here = true;
		else
			others = lappend_oid(others, dbid);
	}
	return others;
}

/*
 * Step 3, in this database: objects go to the template's owner_role, or
 * are dropped when it has none; privileges granted to the role go.
 */
void
KsLeaseDropOwnedHere(Oid roleid, Oid owner)
{
	char	   *name = GetUserNameFromId(roleid, true);

	if (name == NULL)
		return;
	if (OidIsValid(owner) && KsLeaseOwnerIsSafe(owner))
	{
		char	   *owner_name = OwnerName(owner);

		KsSpiExec(psprintf("REASSIGN OWNED BY %s TO %s", quote_identifier(name), quote_identifier(owner_name)),
			0, NULL, NULL, NULL, false, 0, SPI_OK_UTILITY);
	}
	KsSpiExec(psprintf("DROP OWNED BY %s", quote_identifier(name)), 0, NULL, NULL, NULL, false, 0, SPI_OK_UTILITY);
}

/* Step 4: drop the role.  False if it was already gone. */
static bool
DropRole(Oid roleid)
{
	char	   *name = GetUserNameFromId(roleid, true);

	if (name == NULL)
		return false;
	KsSpiExec(psprintf("DROP ROLE %s", quote_identifier(name)), 0, NULL, NULL, NULL, false, 0, SPI_OK_UTILITY);
	return true;
}

/*
 * Record a failed revocation step of a lease: count it, keep the message
 * for keysmith.leases, and back off (1 s doubling to 5 min) before the
 * reaper tries again.  Expects SPI.
 */
void
KsLeaseRecordFailure(Datum lease_id, const char *message)
{
	Oid			types[2] = {UUIDOID, TEXTOID};
	Datum		values[2] = {lease_id, CStringGetTextDatum(message)};

	KsSpiExec("UPDATE keysmith.lease SET attempts = attempts OPERATOR(pg_catalog.+) 1, last_error = $2,"
			  " last_attempt_at = pg_catalog.now(),"
			  " next_attempt_at = " KS_JOB_BACKOFF_SQL("attempts")
			  " WHERE lease_id OPERATOR(pg_catalog.=) $1",
			  2, types, values, NULL, false, 0, SPI_OK_UPDATE);
}

/*
 * The last revocation step, shared by revoke_lease and the reaper: the
 * role's objects here, DROP ROLE, and the lease marked 'revoked' with its
 * event, in one transaction so no lease is revoked twice.  revoke_reason
 * keeps what the lockout set ('expired' or 'revoked') unless the role was
 * already gone.  Expects SPI; objects in other databases are cleared first.
 */
static void
Finish(Datum lease_id, Oid role_oid, Oid owner, const char *by)
{
	Oid			types[3] = {UUIDOID, TEXTOID, TEXTOID};
	Datum		values[3] = {lease_id, CStringGetTextDatum("role_missing"), KsLeaseStateDatum(KS_LEASE_REVOKED)};
	bool		here;
	bool		existed;

	(void) KsLeaseDatabases(role_oid, &here);
	if (here)
		KsLeaseDropOwnedHere(role_oid, owner);
	existed = DropRole(role_oid);
	KsSpiExec("UPDATE keysmith.lease SET state = $3, revoked_at = pg_catalog.now(),"
			  " revoke_reason = COALESCE($2, revoke_reason, 'expired'), last_error = NULL"
			  " WHERE lease_id OPERATOR(pg_catalog.=) $1",
			  3, types, values, existed ? " n " : "   ", false, 0, SPI_OK_UPDATE);
	KsLeaseEvent(lease_id, "revoked", existed ? by : psprintf("%s; the role was already gone", by));
}

/* The lockout, committed before anything else. */
static void
Lockout(KsLeaseJob *job)
{
	Oid			types[3] = {UUIDOID, TEXTOID, TEXTOID};
	Datum		values[3] = {job->lease_id, CStringGetTextDatum(job->reason), KsLeaseStateDatum(KS_LEASE_REVOKING)};

	SetNologin(job->role_oid);
	KsLeaseTerminateSessions(&job->role_oid, 1);
	KsSpiExec("UPDATE keysmith.lease SET state = $3,"
			  " revoke_reason = COALESCE(revoke_reason, $2), next_attempt_at = '-infinity'"
			  " WHERE lease_id OPERATOR(pg_catalog.=) $1",
			  3, types, values, NULL, false, 0, SPI_OK_UPDATE);
	KsLeaseEvent(job->lease_id, "nologin",
				 job->lockout_note ? psprintf("%s; %s", job->by, job->lockout_note) : job->by);
}

void
KsLeaseAdvance(KsLeaseJob *job)
{
	switch (job->state)
	{
		case KS_LEASE_ACTIVE:
			Lockout(job);
			job->state = KS_LEASE_REVOKING;
			break;
		case KS_LEASE_REVOKING:
			if (job->helper_error)
				ereport(ERROR,
						(errmsg("could not clear the role's objects in another database: %s", job->helper_error)));
			Finish(job->lease_id, job->role_oid, job->owner, job->by);
			job->state = KS_LEASE_REVOKED;
			break;
		case KS_LEASE_REVOKED:
		case KS_LEASE_STATE_COUNT:
			break;
	}
}
