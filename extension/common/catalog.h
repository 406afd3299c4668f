/*
 * extension/common/catalog.h
 *
 * keysmith's own catalog in this database, found by OID, and the checks
 * every writer and every superuser process makes before it acts: is the
 * catalog trusted, is it new enough, is this server a primary.  See
 * extension/common/catalog.c for the rules.
 */
#ifndef KEYSMITH_CATALOG_H
#define KEYSMITH_CATALOG_H

#include "postgres.h"

/*
 * KS_CATALOG_UNTRUSTED means something that keysmith must not act on: an
 * owner that is no superuser, a renamed schema, a schema where other roles
 * may create objects, or a table that is not a member of the extension.
 */
typedef enum KsCatalogStatus
{
	KS_CATALOG_OK,
	KS_CATALOG_ABSENT,
	KS_CATALOG_UNTRUSTED
} KsCatalogStatus;

typedef struct KsCatalog
{
	Oid			extoid;
	Oid			schema;
	Oid			owner;			/* the extension's owner, a superuser */
	int			version;		/* extversion major * 100 + minor */
} KsCatalog;

extern KsCatalogStatus KsCatalogFind(KsCatalog *cat, char *why, size_t whylen);
extern void KsCatalogRequire(KsCatalog *cat);
extern KsCatalogStatus KsCatalogRelation(const KsCatalog *cat, const char *relname, Oid *relid);
extern Oid	KsCatalogRequireRelation(const KsCatalog *cat, const char *relname);
extern void KsCatalogRequireVersion(const KsCatalog *cat, int major, int minor);
extern KsCatalogStatus KsCatalogWithTables(KsCatalog *cat, const char *const *tables, int ntables,
										   const char *feature, char *why, size_t whylen);
extern void KsRequireWorkerCatalog(const char *const *tables, int ntables, const char *feature,
								   int major, int minor);

/* Writers are refused on a standby (25006), saying what, with hint. */
extern void KsRequirePrimary(const char *what, const char *hint);
#define KS_PRIMARY_HINT_KEYS "Keys and KMS providers change on the primary; standbys receive the change by replication."

/* From 0.9 on, DEK versions record the server history they were made on. */
#define KS_EPOCH_LEN 48
extern bool KsCatalogHasEpoch(void);

/* Catalog 0.11+: key families (key.parent_id, key_version.wrapped_by). */
extern bool KsCatalogHasFamilies(void);
/* Catalog 0.11+: keysmith.kek_check, the KEK check values. */
extern bool KsCatalogHasKekCheck(void);
extern void KsServerEpoch(char *buf);

#endif							/* KEYSMITH_CATALOG_H */
