/*
 * extension/keys/key_acl.c
 *
 * Per-key privileges (encrypt, decrypt, admin) from keysmith.key_acl.  A
 * role holds a privilege when it is, or has the privileges of, a grantee;
 * superusers hold all.  A family's grants hold on each of its members too
 * (granted once on the family), besides the member's own.  The DEK cache memoises the answers per user.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"


#include "extension/common/owner_spi.h"
#include "extension/keys/key_acl.h"
#include "extension/keys/key_store.h"

const char *const KsPrivilegeNames[KS_PRIV_COUNT] = {"encrypt", "decrypt", "admin"};

/* The grants of key_id, and of its family when inherit, through role membership. */
static bool
GrantGives(int32 key_id, KsPrivilege priv, Oid role, bool inherit)
{
	KsOwnerSpi	spi;
	Oid			types[3] = {INT4OID, TEXTOID, OIDOID};
	Datum		values[3];
	bool		result;
	bool		isnull;

	values[0] = Int32GetDatum(key_id);
	values[1] = CStringGetTextDatum(KsPrivilegeNames[priv]);
	values[2] = ObjectIdGetDatum(role);
	KsOwnerSpiBegin(&spi);
	/* a family's members inherit its grants (catalog 0.11+) */
	if (inherit && KsKeyStoreHasFamilies())
		KsSpiExec("SELECT EXISTS (SELECT 1 FROM keysmith.key_acl a"
				  " WHERE (a.key_id OPERATOR(pg_catalog.=) $1"
				  "        OR a.key_id OPERATOR(pg_catalog.=) (SELECT k.parent_id FROM keysmith.key k"
				  "                                             WHERE k.key_id OPERATOR(pg_catalog.=) $1))"
				  "   AND a.privilege OPERATOR(pg_catalog.=) $2"
				  "   AND pg_catalog.pg_has_role($3, a.grantee::pg_catalog.oid, 'USAGE'))",
				  3, types, values, NULL, KsSpiReadOnly(), 1, SPI_OK_SELECT);
	else
		KsSpiExec("SELECT EXISTS (SELECT 1 FROM keysmith.key_acl a"
				  " WHERE a.key_id OPERATOR(pg_catalog.=) $1"
				  "   AND a.privilege OPERATOR(pg_catalog.=) $2"
				  "   AND pg_catalog.pg_has_role($3, a.grantee::pg_catalog.oid, 'USAGE'))",
				  3, types, values, NULL, KsSpiReadOnly(), 1, SPI_OK_SELECT);
	result = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	KsOwnerSpiEnd(&spi);
	return result;
}

bool
KsHasKeyPrivilege(int32 key_id, KsPrivilege priv, Oid role)
{
	if (superuser_arg(role))
		return true;
	return GrantGives(key_id, priv, role, true);
}

bool
KsKeyGrantGives(int32 key_id, KsPrivilege priv, Oid role)
{
	return GrantGives(key_id, priv, role, false);
}

/*
 * ERROR unless the current user holds priv on the key.  This reads key_acl,
 * which may process invalidations and flush the cache: callers must not
 * hold a KsDek pointer across it (see values.c for the memo that keeps the
 * per-row cost flat).
 */
void
KsRequirePrivilege(int32 key_id, const char *key_name, KsPrivilege priv)
{
	char		name[KS_KEY_NAME_MAX + 1];

	strlcpy(name, key_name, sizeof(name));
	if (!KsHasKeyPrivilege(key_id, priv, GetUserId()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s with key \"%s\"", KsPrivilegeNames[priv], name),
				 errhint("A key administrator can run keysmith.grant_key('%s', <role>, '%s').",
						 name, KsPrivilegeNames[priv])));
}


void
KsRequireKeyAdmin(Oid invoker, int32 key_id, const char *key_name)
{
	if (!KsHasKeyPrivilege(key_id, KS_PRIV_ADMIN, invoker))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to administer key \"%s\"", key_name),
				 errhint("A key administrator can run keysmith.grant_key('%s', <role>, 'admin').",
						 key_name)));
}
