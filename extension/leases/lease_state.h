/*
 * extension/leases/lease_state.h
 *
 * The states of a lease (keysmith.lease.state), spelled once: revoke_lease
 * (extension/leases/leases.c), the revocation steps
 * (rotator/lease_revoke.c) and the reaper (rotator/reaper.c) all name them
 * from here.  The names are the values of the table's CHECK constraint;
 * C passes them to SQL as parameters, never as literals in SQL text.
 */
#ifndef KEYSMITH_LEASE_STATE_H
#define KEYSMITH_LEASE_STATE_H

#include "postgres.h"

typedef enum KsLeaseState
{
	KS_LEASE_ACTIVE = 0,		/* next: lock out (NOLOGIN, sessions ended) */
	KS_LEASE_REVOKING,			/* next: objects, DROP ROLE */
	KS_LEASE_REVOKED,
	KS_LEASE_STATE_COUNT
} KsLeaseState;

extern const char *const KsLeaseStateNames[KS_LEASE_STATE_COUNT];

/* The state a name from keysmith.lease.state stands for; ERROR if none. */
extern KsLeaseState KsLeaseStateFromName(const char *name);

/* The state's name as a text Datum, for an SPI parameter. */
extern Datum KsLeaseStateDatum(KsLeaseState state);

#endif							/* KEYSMITH_LEASE_STATE_H */
