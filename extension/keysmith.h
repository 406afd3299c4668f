/*
 * extension/keysmith.h
 *
 * Declarations shared by all of keysmith's PostgreSQL glue: the GUC
 * variables, keysmith's own SQLSTATEs, finding its trusted catalog, the
 * encryption counters, and the helper that turns a kms/ status into an
 * ereport.  Each module has its own header besides, so that dependencies
 * run one way:
 *
 *   SQL-callable functions   values.c keys.c leases.c secrets.c reencrypt.c
 *        |
 *   engines (rotator/)       worker.c (the job runner), lease_revoke.c,
 *        |                   reaper.c, rotation.c, role_strategy.c
 *        |
 *   stores and helpers       secret_store.c, values.h (one value sealed),
 *                            dek_cache.c, key_acl.c, key_state.c,
 *                            owner_spi.c, roles.c, catalog.c, counters.c
 *        |
 *   kms/                     no PostgreSQL headers; includes none of these
 *
 * keysmith.c (_PG_init, the GUCs) sits above them all.
 */
#ifndef KEYSMITH_EXTENSION_H
#define KEYSMITH_EXTENSION_H

#include "postgres.h"

#include "utils/jsonb.h"

#include "nodes/pg_list.h"

#include "../kms/envelope.h"
#include "../kms/kms.h"

/*
 * keysmith's SQLSTATEs, class KS.  Standard codes are used where one fits
 * (22P03 for a malformed ciphertext, 42704 for an unknown key, 58P01 for a
 * missing file); docs/sql-reference.md lists them all.
 */
#define ERRCODE_KS_UNSUPPORTED_FORMAT	MAKE_SQLSTATE('K','S','0','0','1')
#define ERRCODE_KS_UNSUPPORTED_ALGORITHM MAKE_SQLSTATE('K','S','0','0','2')
#define ERRCODE_KS_AUTH_FAILED			MAKE_SQLSTATE('K','S','0','0','3')
#define ERRCODE_KS_UNKNOWN_KEY_VERSION	MAKE_SQLSTATE('K','S','0','0','4')
#define ERRCODE_KS_KMS_FAILURE			MAKE_SQLSTATE('K','S','0','0','5')
#define ERRCODE_KS_KEYFILE_PERMISSIONS	MAKE_SQLSTATE('K','S','0','0','6')
#define ERRCODE_KS_KEK_VERSION_UNKNOWN	MAKE_SQLSTATE('K','S','0','0','7')
#define ERRCODE_KS_UNWRAP_FAILED		MAKE_SQLSTATE('K','S','0','0','8')
#define ERRCODE_KS_VERSION_RETIRED		MAKE_SQLSTATE('K','S','0','0','9')
#define ERRCODE_KS_KEY_DESTROYED		MAKE_SQLSTATE('K','S','0','1','0')
#define ERRCODE_KS_LEASE_TTL_EXCEEDED	MAKE_SQLSTATE('K','S','0','1','1')
#define ERRCODE_KS_LEASE_NOT_ACTIVE		MAKE_SQLSTATE('K','S','0','1','2')
#define ERRCODE_KS_UNTRUSTED_CATALOG	MAKE_SQLSTATE('K','S','0','1','3')
#define ERRCODE_KS_ROTATION_IN_FLIGHT	MAKE_SQLSTATE('K','S','0','1','4')
#define ERRCODE_KS_KMS_UNAVAILABLE		MAKE_SQLSTATE('K','S','0','1','5')
#define ERRCODE_KS_KMS_DENIED			MAKE_SQLSTATE('K','S','0','1','6')
#define ERRCODE_KS_KMS_BAD_RESPONSE		MAKE_SQLSTATE('K','S','0','1','7')

/* GUCs (extension/keysmith.c) */
extern char *keysmith_local_master_key_file;
extern int	keysmith_dek_cache_ttl;
extern int	keysmith_dek_cache_size;
extern int	keysmith_kms_timeout;
extern double keysmith_max_encryptions_per_dek;
extern char *keysmith_database_name;
extern int	keysmith_reaper_naptime;
extern int	keysmith_reaper_lock_timeout;
extern bool keysmith_redact_statements;
extern int	keysmith_rotation_naptime;
extern int	keysmith_rotation_lock_timeout;
extern int	keysmith_rotation_step_timeout;
extern int	keysmith_rotation_max_attempts;
extern char *keysmith_rotation_test_conninfo;
extern char *keysmith_rotation_pause_at;

#define KS_KEY_NAME_MAX 128

/*
 * keysmith's own catalog in this database, found by OID (extension/catalog.c).
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
/* Writers are refused on a standby (25006), what saying what, with hint. */
extern void KsRequirePrimary(const char *what, const char *hint);

/* From 0.9 on, DEK versions record the server history they were made on. */
#define KS_EPOCH_LEN 48
extern bool KsCatalogHasEpoch(void);
extern void KsServerEpoch(char *buf);
#define KS_PRIMARY_HINT_KEYS "Keys and KMS providers change on the primary; standbys receive the change by replication."
extern void KsRequireWorkerCatalog(const char *const *tables, int ntables, const char *feature,
								   int major, int minor);

/* ERROR (22004) "<what> must not be null" if argument argno is NULL. */
#define KsRequireArg(fcinfo, argno, what) \
	do { \
		if (PG_ARGISNULL(argno)) \
			ereport(ERROR, \
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), \
					 errmsg("%s must not be null", (what)))); \
	} while (0)

/*
 * The members of a JSON object given as options: names[i] and values[i]
 * (NULL where the value is not a string), at most max of them; returns how
 * many.  ERROR (22023) "<what> must be a JSON object", or if there are
 * more than max.  Used by schedules and KMS providers.
 */
extern int	KsJsonbOptions(Jsonb *options, const char *what, int max, char **names, char **values);

/* Report a kms/ failure as an ERROR with the matching SQLSTATE. */
extern void KsReportError(const KsError *err) pg_attribute_noreturn();


/* Shared encryption counters (extension/counters.c). */
typedef struct KsCounterSlot KsCounterSlot;
extern void KsCountersShmemRequest(void);
extern void KsCountersShmemStartup(void);
extern KsCounterSlot *KsCounterFind(int32 key_id, int32 version, bool create);
extern bool KsCounterTake(KsCounterSlot *slot);
extern uint64 KsCounterValue(int32 key_id, int32 version);

/* The security-label provider of leased roles (extension/auth.c). */
#define KS_SECLABEL_PROVIDER "keysmith"

/* Log redaction (extension/redact.c). */
extern void KsRedactInit(void);
extern char *KsRedactStatement(const char *sql);

/* Authentication hook and security-label provider (extension/auth.c). */
extern void KsAuthInit(void);


#endif							/* KEYSMITH_EXTENSION_H */
