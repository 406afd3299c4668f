/*
 * extension/common/roles.c
 *
 * Role helpers shared by leased roles (extension/leases/leases.c) and credential
 * rotation (rotator/): a SCRAM verifier installed straight into pg_authid,
 * so that no password ever appears in SQL text, and the roles keysmith
 * never acts on.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_authid.h"
#include "commands/user.h"
#include "libpq/crypt.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "extension/common/errors.h"
#include "extension/common/roles.h"

const char	KsAlnumMixed[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/*
 * Give a role its SCRAM verifier by updating pg_authid directly, as ALTER
 * ROLE ... PASSWORD would, but without its check that the verifier is not
 * that of an empty password: that check derives a second 4096-round key
 * for "" and would double the cost of every issue_role.  keysmith's
 * passwords are never empty.  check_password_hook and the object-access
 * hook still see the change.
 */
void
KsSetRoleVerifier(Oid roleid, const char *rolename, const char *verifier, TimestampTz valid_until)
{
	Relation	rel;
	HeapTuple	tup,
				newtup;
	Datum		values[Natts_pg_authid] = {0};
	bool		nulls[Natts_pg_authid] = {0};
	bool		replace[Natts_pg_authid] = {0};

	if (check_password_hook && verifier)
		(*check_password_hook) (rolename, verifier, PASSWORD_TYPE_SCRAM_SHA_256,
								TimestampTzGetDatum(valid_until), false);

	rel = table_open(AuthIdRelationId, RowExclusiveLock);
	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(roleid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "keysmith: role %u vanished while being created", roleid);
	if (verifier)
		values[Anum_pg_authid_rolpassword - 1] = CStringGetTextDatum(verifier);
	else
		nulls[Anum_pg_authid_rolpassword - 1] = true;
	replace[Anum_pg_authid_rolpassword - 1] = true;
	newtup = heap_modify_tuple(tup, RelationGetDescr(rel), values, nulls, replace);
	CatalogTupleUpdate(rel, &newtup->t_self, newtup);
	InvokeObjectPostAlterHook(AuthIdRelationId, roleid, 0);
	ReleaseSysCache(tup);
	if (verifier)
		explicit_bzero(VARDATA_ANY(DatumGetPointer(values[Anum_pg_authid_rolpassword - 1])),
					   VARSIZE_ANY_EXHDR(DatumGetPointer(values[Anum_pg_authid_rolpassword - 1])));
	heap_freetuple(newtup);
	table_close(rel, NoLock);
	CommandCounterIncrement();
}

bool
KsRoleHasVerifier(Oid roleid, const char *verifier)
{
	HeapTuple	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(roleid));
	bool		isnull;
	Datum		d;
	bool		same = false;

	if (!HeapTupleIsValid(tup))
		return false;
	d = SysCacheGetAttr(AUTHOID, tup, Anum_pg_authid_rolpassword, &isnull);
	if (!isnull)
	{
		char	   *current = TextDatumGetCString(d);

		same = strcmp(current, verifier) == 0;
		pfree(current);
	}
	ReleaseSysCache(tup);
	return same;
}

bool
KsIsKeysmithAdmin(Oid role)
{
	Oid			admin;

	if (superuser_arg(role))
		return true;
	admin = get_role_oid("keysmith_admin", true);
	return OidIsValid(admin) && has_privs_of_role(role, admin);
}

bool
KsIsPredefinedRole(Oid roleid, const char *name)
{
	return roleid < FirstNormalObjectId && strncmp(name, "pg_", 3) == 0;
}

bool
KsIsKeysmithRole(const char *name)
{
	return strncmp(name, "keysmith_", 9) == 0;
}

void
KsRandomString(char *out, int len, const char *alphabet)
{
	KsError		err;

	if (KsRandomToken(out, (size_t) len, alphabet, &err) != KS_OK)
		KsReportError(&err);
}

void
KsAsRoleBegin(KsAsRole *as, Oid role)
{
	GetUserIdAndSecContext(&as->save_user, &as->save_sec);
	SetUserIdAndSecContext(role, as->save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	as->nestlevel = NewGUCNestLevel();
}

void
KsAsRoleEnd(KsAsRole *as)
{
	AtEOXact_GUC(false, as->nestlevel);
	SetUserIdAndSecContext(as->save_user, as->save_sec);
}
