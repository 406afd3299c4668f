/*
 * extension/leases/auth.c
 *
 * The authentication hook that makes lease expiry impossible to miss, and
 * the "keysmith" security-label provider that marks leased roles.
 *
 * PostgreSQL honours VALID UNTIL only for password methods: a role whose
 * VALID UNTIL has passed still logs in through trust, peer or certificate
 * authentication.  issue_role labels every leased role in pg_shseclabel
 * (a shared catalog, readable before a database is chosen) and keeps VALID
 * UNTIL equal to the lease's expiry; this hook rejects, after any method
 * has succeeded, a labelled role whose VALID UNTIL has passed or that has
 * lost LOGIN (the first step of every revocation).  Roles without the label
 * keep PostgreSQL's own behaviour.
 *
 * The label is looked up only for roles that are about to be refused, so
 * ordinary logins pay one syscache lookup.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_shseclabel.h"
#include "commands/seclabel.h"
#include "libpq/auth.h"
#include "libpq/libpq-be.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "extension/hooks.h"

static ClientAuthentication_hook_type prev_client_auth_hook = NULL;

/*
 * The role's keysmith label, or NULL.  A heap scan while the shared
 * relcache is still being built (first connection after start), as the
 * catalog caches do; the index afterwards.
 */
static char *
LeaseLabel(Oid roleid)
{
	Relation	rel;
	ScanKeyData keys[3];
	SysScanDesc scan;
	HeapTuple	tup;
	char	   *label = NULL;

	ScanKeyInit(&keys[0], Anum_pg_shseclabel_objoid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(roleid));
	ScanKeyInit(&keys[1], Anum_pg_shseclabel_classoid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(AuthIdRelationId));
	ScanKeyInit(&keys[2], Anum_pg_shseclabel_provider, BTEqualStrategyNumber, F_TEXTEQ,
				CStringGetTextDatum(KS_SECLABEL_PROVIDER));

	rel = table_open(SharedSecLabelRelationId, AccessShareLock);
	scan = systable_beginscan(rel, SharedSecLabelObjectIndexId, criticalSharedRelcachesBuilt,
							  NULL, 3, keys);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_shseclabel_label, RelationGetDescr(rel), &isnull);

		if (!isnull)
			label = TextDatumGetCString(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return label;
}

static void
KsClientAuthentication(Port *port, int status)
{
	HeapTuple	tup;
	Oid			roleid;
	bool		canlogin,
				isnull,
				expired = false;
	Datum		until;
	char	   *label;

	if (prev_client_auth_hook)
		prev_client_auth_hook(port, status);
	if (status != STATUS_OK || port->user_name == NULL)
		return;

	tup = SearchSysCache1(AUTHNAME, CStringGetDatum(port->user_name));
	if (!HeapTupleIsValid(tup))
		return;
	roleid = ((Form_pg_authid) GETSTRUCT(tup))->oid;
	canlogin = ((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin;
	until = SysCacheGetAttr(AUTHNAME, tup, Anum_pg_authid_rolvaliduntil, &isnull);
	if (!isnull)
		expired = DatumGetTimestampTz(until) <= GetCurrentTimestamp();
	ReleaseSysCache(tup);

	if (!expired && canlogin)
		return;
	label = LeaseLabel(roleid);
	if (label == NULL || strncmp(label, "lease:", 6) != 0)
		return;

	ereport(FATAL,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg(canlogin ? "the lease of role \"%s\" has expired"
					: "the lease of role \"%s\" has been revoked", port->user_name),
			 errdetail("Role \"%s\" was issued by keysmith (%s); its credentials no longer work with any authentication method.",
					   port->user_name, label),
			 errhint("Ask keysmith.issue_role for a new role.")));
}

/*
 * SECURITY LABEL FOR keysmith: only keysmith itself sets labels (through
 * SetSecurityLabel, which does not come here).  A superuser may still set
 * one by hand, which is what restoring a pg_dumpall of the roles does.
 */
static void
KsObjectRelabel(const ObjectAddress *object, const char *seclabel)
{
	if (object->classId != AuthIdRelationId)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("keysmith labels only roles")));
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only keysmith and superusers may set keysmith security labels")));
	if (seclabel != NULL && strncmp(seclabel, "lease:", 6) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid keysmith security label"),
				 errdetail("keysmith labels have the form lease:<lease id>.")));
}

void
KsAuthInit(void)
{
	prev_client_auth_hook = ClientAuthentication_hook;
	ClientAuthentication_hook = KsClientAuthentication;
	register_label_provider(KS_SECLABEL_PROVIDER, KsObjectRelabel);
}
