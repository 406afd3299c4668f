/*
 * extension/key_acl.c
 *
 * Per-key privileges (encrypt, decrypt, admin) from keysmith.key_acl.  A
 * role holds a privilege when it is, or has the privileges of, a grantee;
 * superusers hold all.  The DEK cache memoises the answers per user.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"

#include "keysmith.h"
#include "key_acl.h"
#include "owner_spi.h"

const char *const KsPrivilegeNames[KS_PRIV_COUNT] = {"encrypt", "decrypt", "admin"};

bool
KsHasKeyPrivilege(int32 key_id, KsPrivilege priv, Oid role)
{
	KsOwnerSpi	spi;
	Oid			types[3] = {INT4OID, TEXTOID, OIDOID};
	Datum		values[3];
	bool		result;
	bool		isnull;

	if (superuser_arg(role))
		return true;
	values[0] = Int32GetDatum(key_id);
	values[1] = CStringGetTextDatum(KsPrivilegeNames[priv]);
	values[2] = ObjectIdGetDatum(role);
	KsOwnerSpiBegin(&spi);
	KsSpiExec("SELECT EXISTS (SELECT 1 FROM keysmith.key_acl a"
				   " WHERE a.key_id OPERATOR(pg_catalog.=) $1"
				   "   AND a.privilege OPERATOR(pg_catalog.=) $2"
				   "   AND pg_catalog.pg_has_role($3, a.grantee::pg_catalog.oid, 'USAGE'))",
				   3, types, values, NULL, KsSpiReadOnly(), 1, SPI_OK_SELECT);
	result = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	KsOwnerSpiEnd(&spi);
	return result;
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

