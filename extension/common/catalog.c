/*
 * extension/common/catalog.c
 *
 * Finding keysmith's own catalog in a database, by OID, and deciding
 * whether it can be trusted.  Every superuser process of keysmith (the
 * reaper, the SECURITY DEFINER lease functions, the key functions that
 * switch to the table owner) goes through here before it reads or writes a
 * keysmith table, so that nothing a non-superuser can create is ever taken
 * for one.
 *
 * The rules (docs/security.md):
 *
 *   - the extension named keysmith exists in pg_extension; the name of a
 *     schema or a table proves nothing, anyone with CREATE on a database can
 *     make a schema called keysmith;
 *   - its owner is a superuser (the control file says superuser = true, but
 *     the owner may have lost the attribute since);
 *   - its schema (pg_extension.extnamespace) is still called keysmith, so
 *     that the schema-qualified names in keysmith's SQL text resolve to it,
 *     is owned by a superuser, and grants CREATE to nobody else: only then
 *     can no other role put an object next to keysmith's own;
 *   - each table keysmith uses is a member of the extension (pg_depend,
 *     deptype 'e').
 *
 * The extension and its schema are read afresh on every call.  Only the
 * membership of a table is cached (until its relcache invalidation); the
 * DEK cache keeps the key tables' OIDs itself and drops them when a role or
 * a schema changes.
 */
#include "postgres.h"

#include "access/xlog.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/dependency.h"
#include "catalog/pg_class.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/array.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "extension/common/catalog.h"
#include "extension/common/errors.h"
#include "extension/common/guc.h"

#define KS_SCHEMA_NAME "keysmith"

static void ReportUntrusted(const char *why) pg_attribute_noreturn();

/*
 * Find extension keysmith in pg_extension, one index scan by name: its
 * OID, owner, schema and version.  False if it is not installed.
 */
static bool
ReadExtension(KsCatalog *cat)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;
	bool		found = false;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("keysmith"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		Form_pg_extension ext = (Form_pg_extension) GETSTRUCT(tup);
		bool		isnull;
		Datum		v = heap_getattr(tup, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);
		int			major = 0,
					minor = 0;

		cat->extoid = ext->oid;
		cat->owner = ext->extowner;
		cat->schema = ext->extnamespace;
		if (!isnull)
			(void) sscanf(TextDatumGetCString(v), "%d.%d", &major, &minor);
		cat->version = major * 100 + minor;
		found = true;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

static void
ReportUntrusted(const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_KS_UNTRUSTED_CATALOG),
			 errmsg("keysmith refuses to use its catalog in this database"),
			 errdetail("%s.", why),
			 errhint("See \"Installing safely\" in keysmith's docs/security.md.")));
}

/*
 * Does any role other than the schema's owner, and not a superuser, hold
 * CREATE on it?  PUBLIC counts as such a role.
 */
static bool
OthersMayCreate(HeapTuple nsptup, Oid owner, char **who)
{
	bool		isnull;
	Datum		d = SysCacheGetAttr(NAMESPACEOID, nsptup, Anum_pg_namespace_nspacl, &isnull);
	Acl		   *acl;
	AclItem    *items;

	if (isnull)
		return false;			/* default: only the owner */
	acl = DatumGetAclP(d);
	/* ARR_DATA_PTR mixes signedness, which -Wextra reports */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
	items = ACL_DAT(acl);
#pragma GCC diagnostic pop
	for (int i = 0; i < ACL_NUM(acl); i++)
	{
		Oid			grantee = items[i].ai_grantee;

		if (!(ACLITEM_GET_PRIVS(items[i]) & ACL_CREATE))
			continue;
		if (grantee == owner)
			continue;
		if (grantee != ACL_ID_PUBLIC && superuser_arg(grantee))
			continue;
		*who = grantee == ACL_ID_PUBLIC ? pstrdup("PUBLIC") : GetUserNameFromId(grantee, true);
		if (*who == NULL)
			*who = psprintf("OID %u", grantee);
		return true;
	}
	return false;
}

KsCatalogStatus
KsCatalogFind(KsCatalog *cat, char *why, size_t whylen)
{
	HeapTuple	nsptup;
	char	   *nspname;
	Oid			nspowner;
	char	   *who = NULL;

	memset(cat, 0, sizeof(*cat));
	if (why && whylen)
		why[0] = '\0';

	if (!ReadExtension(cat))
	{
		if (why)
			snprintf(why, whylen, "extension keysmith is not installed in this database");
		return KS_CATALOG_ABSENT;
	}
	if (!superuser_arg(cat->owner))
	{
		if (why)
			snprintf(why, whylen, "the owner of extension keysmith (role OID %u) is not a superuser", cat->owner);
		return KS_CATALOG_UNTRUSTED;
	}

	nsptup = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(cat->schema));
	if (!HeapTupleIsValid(nsptup))
	{
		if (why)
			snprintf(why, whylen, "the schema of extension keysmith (OID %u) does not exist", cat->schema);
		return KS_CATALOG_UNTRUSTED;
	}
	nspname = pstrdup(NameStr(((Form_pg_namespace) GETSTRUCT(nsptup))->nspname));
	nspowner = ((Form_pg_namespace) GETSTRUCT(nsptup))->nspowner;
	if (OthersMayCreate(nsptup, nspowner, &who))
	{
		ReleaseSysCache(nsptup);
		if (why)
			snprintf(why, whylen, "role %s may create objects in the schema of extension keysmith", who);
		return KS_CATALOG_UNTRUSTED;
	}
	ReleaseSysCache(nsptup);

	if (strcmp(nspname, KS_SCHEMA_NAME) != 0)
	{
		if (why)
			snprintf(why, whylen, "the schema of extension keysmith was renamed to \"%s\"", nspname);
		return KS_CATALOG_UNTRUSTED;
	}
	if (!superuser_arg(nspowner))
	{
		if (why)
			snprintf(why, whylen, "schema keysmith is owned by a role that is not a superuser");
		return KS_CATALOG_UNTRUSTED;
	}
	return KS_CATALOG_OK;
}

void
KsCatalogRequire(KsCatalog *cat)
{
	char		why[256];

	switch (KsCatalogFind(cat, why, sizeof(why)))
	{
		case KS_CATALOG_OK:
			return;
		case KS_CATALOG_ABSENT:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("keysmith is not installed in this database"),
					 errhint("Run CREATE EXTENSION keysmith.")));
			break;
		case KS_CATALOG_UNTRUSTED:
			ReportUntrusted(why);
			break;
	}
}

/*
 * Relations already found to be members of the extension, so each lease
 * call does not scan pg_depend again.  An entry goes when its relation is
 * invalidated (dropped, altered) and all go on a full relcache reset.
 * Membership changes otherwise only by ALTER EXTENSION ... ADD/DROP, which
 * only a superuser may run.
 */
#define MEMBER_CACHE_SIZE 16

typedef struct MemberEntry
{
	Oid			extoid;
	Oid			relid;
} MemberEntry;

static MemberEntry MemberCache[MEMBER_CACHE_SIZE];
static int	MemberCacheUsed = 0;
static bool MemberCallbackRegistered = false;

static void
MemberCacheInvalidate(Datum arg, Oid relid)
{
	for (int i = 0; i < MemberCacheUsed; i++)
		if (relid == InvalidOid || MemberCache[i].relid == relid)
		{
			MemberCache[i] = MemberCache[--MemberCacheUsed];
			i--;
		}
}

static bool
IsMember(Oid extoid, Oid relid)
{
	for (int i = 0; i < MemberCacheUsed; i++)
		if (MemberCache[i].extoid == extoid && MemberCache[i].relid == relid)
			return true;
	if (getExtensionOfObject(RelationRelationId, relid) != extoid)
		return false;
	if (!MemberCallbackRegistered)
	{
		CacheRegisterRelcacheCallback(MemberCacheInvalidate, (Datum) 0);
		MemberCallbackRegistered = true;
	}
	if (MemberCacheUsed < MEMBER_CACHE_SIZE)
	{
		MemberCache[MemberCacheUsed].extoid = extoid;
		MemberCache[MemberCacheUsed].relid = relid;
		MemberCacheUsed++;
	}
	return true;
}

KsCatalogStatus
KsCatalogRelation(const KsCatalog *cat, const char *relname, Oid *relid)
{
	*relid = get_relname_relid(relname, cat->schema);
	if (!OidIsValid(*relid))
		return KS_CATALOG_ABSENT;
	if (!IsMember(cat->extoid, *relid))
		return KS_CATALOG_UNTRUSTED;
	return KS_CATALOG_OK;
}

Oid
KsCatalogRequireRelation(const KsCatalog *cat, const char *relname)
{
	Oid			relid;

	switch (KsCatalogRelation(cat, relname, &relid))
	{
		case KS_CATALOG_OK:
			break;
		case KS_CATALOG_ABSENT:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("keysmith's table %s.%s is missing", KS_SCHEMA_NAME, relname),
					 errhint("Run ALTER EXTENSION keysmith UPDATE.")));
			break;
		case KS_CATALOG_UNTRUSTED:
			ereport(ERROR,
					(errcode(ERRCODE_KS_UNTRUSTED_CATALOG),
					 errmsg("keysmith refuses to use its catalog in this database"),
					 errdetail("Relation %s.%s is not a member of extension keysmith.", KS_SCHEMA_NAME, relname)));
			break;
	}
	return relid;
}

/*
 * ERROR unless the installed SQL objects are at least major.minor: after a
 * new keysmith.so is installed, functions that need the newer catalog say
 * so instead of failing on a missing column.
 */
void
KsCatalogRequireVersion(const KsCatalog *cat, int major, int minor)
{
	if (cat->version < major * 100 + minor)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this needs keysmith %d.%d, but the extension in this database is at %d.%d",
						major, minor, cat->version / 100, cat->version % 100),
				 errhint("Run ALTER EXTENSION keysmith UPDATE.")));
}

/*
 * keysmith's catalog with the member tables a feature needs (the lease
 * tables, the secret tables).  KS_CATALOG_ABSENT with cat->extoid set means
 * an extension that predates the feature; why says which.
 */
KsCatalogStatus
KsCatalogWithTables(KsCatalog *cat, const char *const *tables, int ntables, const char *feature,
					char *why, size_t whylen)
{
	KsCatalogStatus st = KsCatalogFind(cat, why, whylen);

	for (int i = 0; i < ntables && st == KS_CATALOG_OK; i++)
	{
		Oid			relid;

		st = KsCatalogRelation(cat, tables[i], &relid);
		if (st == KS_CATALOG_UNTRUSTED)
			snprintf(why, whylen, "relation %s.%s is not a member of extension keysmith", KS_SCHEMA_NAME, tables[i]);
		else if (st == KS_CATALOG_ABSENT)
			snprintf(why, whylen, "keysmith in this database predates %s", feature);
	}
	return st;
}

bool
KsCatalogHasEpoch(void)
{
	KsCatalog	cat;
	char		why[256];
	Oid			relid;

	if (KsCatalogFind(&cat, why, sizeof(why)) != KS_CATALOG_OK ||
		KsCatalogRelation(&cat, "key_version", &relid) != KS_CATALOG_OK)
		return false;
	return get_attnum(relid, "server_epoch") != InvalidAttrNumber;
}

bool
KsCatalogHasFamilies(void)
{
	KsCatalog	cat;
	char		why[256];
	Oid			relid;

	if (KsCatalogFind(&cat, why, sizeof(why)) != KS_CATALOG_OK ||
		KsCatalogRelation(&cat, "key", &relid) != KS_CATALOG_OK)
		return false;
	return get_attnum(relid, "parent_id") != InvalidAttrNumber;
}

bool
KsCatalogHasKekCheck(void)
{
	KsCatalog	cat;
	char		why[256];
	Oid			relid;

	return KsCatalogFind(&cat, why, sizeof(why)) == KS_CATALOG_OK &&
		KsCatalogRelation(&cat, "kek_check", &relid) == KS_CATALOG_OK;
}

/*
 * This primary's place in server history: "<system identifier>/<timeline>".
 * A promoted standby, a point-in-time recovery or a restored base backup
 * brought up as a primary is on a new timeline; a cluster made by initdb
 * has a new system identifier.  Only on a primary (a standby's insertion
 * timeline is not settled).
 */
void
KsServerEpoch(char *buf)
{
	Assert(!RecoveryInProgress());
	snprintf(buf, KS_EPOCH_LEN, UINT64_FORMAT "/%u", GetSystemIdentifier(), GetWALInsertionTimeLine());
}

void
KsRequirePrimary(const char *what, const char *hint)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot %s on a standby", what),
				 errhint("%s", hint)));
}

/*
 * For SQL functions whose work a background worker finishes (leases,
 * rotations): they run only in the database the workers work in, where
 * anything left behind would never be picked up otherwise; there the
 * feature's tables must be keysmith's own and the extension's SQL objects
 * at least at major.minor.
 */
void
KsRequireWorkerCatalog(const char *const *tables, int ntables, const char *feature,
					   int major, int minor)
{
	char	   *here = get_database_name(MyDatabaseId);
	KsCatalog	cat;
	char		why[256];

	if (here == NULL || strcmp(here, keysmith_database_name) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s are managed in database \"%s\"", feature, keysmith_database_name),
				 errdetail("keysmith's background workers work only in the database named by keysmith.database_name."),
				 errhint("Connect to database \"%s\", or change keysmith.database_name and restart the server.",
						 keysmith_database_name)));
	switch (KsCatalogWithTables(&cat, tables, ntables, feature, why, sizeof(why)))
	{
		case KS_CATALOG_OK:
			break;
		case KS_CATALOG_ABSENT:
			if (!OidIsValid(cat.extoid))
				KsCatalogRequire(&cat); /* "not installed", with its hint */
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("%s", why),
					 errhint("Run ALTER EXTENSION keysmith UPDATE.")));
			break;
		case KS_CATALOG_UNTRUSTED:
			ReportUntrusted(why);
			break;
	}
	KsCatalogRequireVersion(&cat, major, minor);
}
