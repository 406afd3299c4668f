/*
 * rotator/lease_revoke.h
 *
 * Revoking a lease (rotator/lease_revoke.c): one function that advances a
 * lease by a switch on its state (extension/leases/lease_state.h), shared by revoke_lease
 * (extension/leases/leases.c) and the reaper (rotator/reaper.c), and the steps
 * they are made of.  Everything here expects SPI and runs as a superuser.
 */
#ifndef KEYSMITH_LEASE_REVOKE_H
#define KEYSMITH_LEASE_REVOKE_H

#include "postgres.h"

#include "nodes/pg_list.h"

#include "extension/common/catalog.h"
#include "extension/leases/lease_state.h"

/* The lease tables, and keysmith's catalog with them, found by OID. */
extern const char *const KsLeaseTables[];
extern const int KsLeaseTableCount;
extern KsCatalogStatus KsLeaseCatalog(KsCatalog *cat, char *why, size_t whylen);

typedef struct KsLeaseJob
{
	Datum		lease_id;		/* uuid */
	Oid			role_oid;
	Oid			owner;			/* the template's owner_role, or InvalidOid */
	KsLeaseState state;
	const char *reason;			/* revoke_reason the lockout sets: expired, revoked */
	const char *by;				/* who acts, for the events: reaper, revoke_lease */
	const char *lockout_note;	/* appended to the lockout event, or NULL */
	char	   *helper_error;	/* another database could not be cleared */
} KsLeaseJob;

/*
 * Run the step the lease's state names and move it to the next state, in
 * the caller's (sub)transaction:
 *   active    NOLOGIN and VALID UNTIL now, sessions terminated, 'revoking'
 *   revoking  objects reassigned or dropped here, DROP ROLE, 'revoked'
 * Objects in other databases must be cleared first (the reaper's helpers);
 * job->helper_error makes the revoking step fail with it.
 */
extern void KsLeaseAdvance(KsLeaseJob *job);

/* A failed step: counted, kept in last_error, retried after backoff. */
extern void KsLeaseRecordFailure(Datum lease_id, const char *message);

/*
 * Bind leases to their roles again after a restore into another cluster,
 * where keysmith.lease's OIDs may name other roles: the lease lease_id, or
 * every unrevoked one when lease_id is NULL.  Returns how many changed.
 */
extern uint64 KsLeaseRebind(const Datum *lease_id);

/*
 * SQL: the lease row l (alias) is bound to no role, or to the role that
 * carries its security label, in the statement's own snapshot.  A query
 * that picks leases to act on says this, because under READ COMMITTED a
 * KsLeaseRebind in an earlier statement may not have seen a row the pick
 * sees (one a restore committed in between).
 */
#define KS_LEASE_BOUND_SQL(l) \
	"(" l ".role_oid OPERATOR(pg_catalog.=) 0 OR EXISTS (SELECT 1 FROM pg_catalog.pg_shseclabel s" \
	"   WHERE s.objoid OPERATOR(pg_catalog.=) " l ".role_oid" \
	"     AND s.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_authid'::pg_catalog.regclass" \
	"     AND s.provider OPERATOR(pg_catalog.=) 'keysmith'" \
	"     AND s.label OPERATOR(pg_catalog.=) ('lease:' OPERATOR(pg_catalog.||) " l ".lease_id::pg_catalog.text)))"

extern void KsLeaseEvent(Datum lease_id, const char *event, const char *detail);
extern void KsLeaseTerminateSessions(const Oid *roles, int n);
extern List *KsLeaseDatabases(Oid roleid, bool *here);
extern void KsLeaseDropOwnedHere(Oid roleid, Oid owner);

/* May revocation give a lease's objects to owner? */
extern bool KsLeaseOwnerIsSafe(Oid owner);

#endif							/* KEYSMITH_LEASE_REVOKE_H */
