/*
 * extension/leases/lease_state.c
 *
 * The names of the lease states (extension/leases/lease_state.h), the one
 * place they are spelled in C.  They must stay the values that
 * keysmith.lease's CHECK constraint allows (extension/scripts/).
 */
#include "postgres.h"

#include "utils/builtins.h"

#include "extension/leases/lease_state.h"

const char *const KsLeaseStateNames[KS_LEASE_STATE_COUNT] = {
	[KS_LEASE_ACTIVE] = "active",
	[KS_LEASE_REVOKING] = "revoking",
	[KS_LEASE_REVOKED] = "revoked",
};

KsLeaseState
KsLeaseStateFromName(const char *name)
{
	for (int i = 0; i < KS_LEASE_STATE_COUNT; i++)
		if (strcmp(name, KsLeaseStateNames[i]) == 0)
			return (KsLeaseState) i;
	elog(ERROR, "keysmith: unknown lease state \"%s\"", name);
	pg_unreachable();
}

Datum
KsLeaseStateDatum(KsLeaseState state)
{
	Assert(state >= 0 && state < KS_LEASE_STATE_COUNT);
	return CStringGetTextDatum(KsLeaseStateNames[state]);
}
