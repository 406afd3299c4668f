/*
 * extension/common/owner_spi.c
 *
 * SPI on keysmith's tables as their owner.  The key tables are found
 * through the extension's own schema OID and checked to be members of the
 * extension (extension/common/catalog.c), never by a name that another role could
 * create; their owner (the extension's, a superuser) is the role the
 * SQL-callable functions switch to while they read or write keysmith's
 * tables, the way a SECURITY DEFINER function would, without the per-call
 * cost of one.  What is found is remembered until a relcache invalidation
 * of the key tables, or a change to any role or schema (the owner may have
 * lost superuser, the schema been renamed or granted away).
 */
#include "postgres.h"

#include "catalog/pg_class.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/inval.h"
#include "utils/syscache.h"

#include "extension/common/catalog.h"
#include "extension/common/owner_spi.h"

static Oid	KeyTableOid = InvalidOid;
static Oid	KeyVersionTableOid = InvalidOid;
static Oid	KeyOwnerOid = InvalidOid;
static bool Stale = false;
static bool CallbacksRegistered = false;

bool
KsIsKeyTable(Oid relid)
{
	return OidIsValid(relid) && (relid == KeyTableOid || relid == KeyVersionTableOid);
}

/* The OIDs are kept for KsIsKeyTable, but resolved again at next use. */
static void
RelcacheCallback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || KsIsKeyTable(relid))
		Stale = true;
}

static void
TrustCallback(Datum arg, int cacheid, uint32 hashvalue)
{
	Stale = true;
}

static void
EnsureCallbacks(void)
{
	if (CallbacksRegistered)
		return;
	CacheRegisterRelcacheCallback(RelcacheCallback, (Datum) 0);
	CacheRegisterSyscacheCallback(AUTHOID, TrustCallback, (Datum) 0);
	CacheRegisterSyscacheCallback(NAMESPACEOID, TrustCallback, (Datum) 0);
	CallbacksRegistered = true;
}

/*
 * The key tables, found through the extension's own schema OID and checked
 * to be members of the extension (extension/common/catalog.c), never by a name
 * that another role could create.
 */
Oid
KsKeyTableOid(void)
{
	EnsureCallbacks();
	if (!OidIsValid(KeyTableOid) || Stale)
	{
		KsCatalog	cat;
		Oid			key,
					key_version;
		HeapTuple	tup;

		KsCatalogRequire(&cat);
		key = KsCatalogRequireRelation(&cat, "key");
		key_version = KsCatalogRequireRelation(&cat, "key_version");
		tup = SearchSysCache1(RELOID, ObjectIdGetDatum(key));
		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for relation %u", key);
		KeyOwnerOid = ((Form_pg_class) GETSTRUCT(tup))->relowner;
		ReleaseSysCache(tup);
		KeyVersionTableOid = key_version;
		KeyTableOid = key;
		Stale = false;
	}
	return KeyTableOid;
}

/*
 * The key tables are readable only by their owner.  SQL-callable functions
 * that need them switch to that owner for the duration of a query, the way a
 * SECURITY DEFINER function would, without the per-call cost of one.  An
 * error in between is safe: (sub)transaction abort restores the user.
 */
void
KsOwnerSpiBegin(KsOwnerSpi *spi)
{
	KsKeyTableOid();
	GetUserIdAndSecContext(&spi->save_userid, &spi->save_sec);
	SetUserIdAndSecContext(KeyOwnerOid, spi->save_sec | SECURITY_LOCAL_USERID_CHANGE);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
KsOwnerSpiEnd(KsOwnerSpi *spi)
{
	SPI_finish();
	SetUserIdAndSecContext(spi->save_userid, spi->save_sec);
}

void
KsSpiExec(const char *sql, int nargs, Oid *types, Datum *values,
			   const char *nulls, bool read_only, long count, int expect)
{
	int			rc = SPI_execute_with_args(sql, nargs, types, values, nulls, read_only, count);

	if (rc != expect)
		elog(ERROR, "keysmith: SPI statement failed (%s)", SPI_result_code_string(rc));
}

