/*
 * extension/keysmith.h
 *
 * Declarations shared by the PostgreSQL glue of keysmith: the GUC
 * variables, keysmith's own SQLSTATEs, the DEK cache, and the helper that
 * turns a kms/ status into an ereport.  Nothing in kms/ includes this file.
 */
#ifndef KEYSMITH_EXTENSION_H
#define KEYSMITH_EXTENSION_H

#include "postgres.h"

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

/* GUCs (extension/keysmith.c) */
extern char *keysmith_local_master_key_file;
extern int	keysmith_dek_cache_ttl;
extern int	keysmith_dek_cache_size;
extern double keysmith_max_encryptions_per_dek;
extern char *keysmith_database_name;
extern int	keysmith_reaper_naptime;
extern int	keysmith_reaper_lock_timeout;
extern bool keysmith_redact_statements;
extern int	keysmith_rotation_naptime;
extern int	keysmith_rotation_lock_timeout;
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
extern void KsRequireWorkerCatalog(const char *const *tables, int ntables, const char *feature,
								   int major, int minor);

/* Report a kms/ failure as an ERROR with the matching SQLSTATE. */
extern void KsReportError(const KsError *err) pg_attribute_noreturn();

/* The provider configuration built from the GUCs. */
extern void KsCurrentKmsConfig(KsKmsConfig *cfg);

/* Shared encryption counters (extension/counters.c). */
typedef struct KsCounterSlot KsCounterSlot;
extern void KsCountersShmemRequest(void);
extern void KsCountersShmemStartup(void);
extern KsCounterSlot *KsCounterFind(int32 key_id, int32 version, bool create);
extern bool KsCounterTake(KsCounterSlot *slot);
extern uint64 KsCounterValue(int32 key_id, int32 version);

/* Per-key privileges. */
typedef enum KsPrivilege
{
	KS_PRIV_NONE = -1,			/* lookups that check nothing themselves */
	KS_PRIV_ENCRYPT = 0,
	KS_PRIV_DECRYPT,
	KS_PRIV_ADMIN,
	KS_PRIV_COUNT
} KsPrivilege;

extern const char *const KsPrivilegeNames[KS_PRIV_COUNT];

/* A usable DEK version, as held by the cache. */
typedef struct KsDek
{
	uint32		key_id;
	uint32		version;
	KsAead	   *aead;
	bool		retired;		/* decrypt refuses; rewrap still works */
	char		name[KS_KEY_NAME_MAX + 1];
	KsCounterSlot *counter;		/* set on first encryption */
	Oid			allowed[KS_PRIV_COUNT]; /* user last found to hold each */
} KsDek;

/*
 * Cache lookups; each falls back to the key tables and the KMS on a miss,
 * and ERRORs (42501) unless the current user holds priv on the key.
 */
extern KsDek *KsDekForEncrypt(const char *name, int name_len, KsPrivilege priv);
extern KsDek *KsDekForDecrypt(uint32 key_id, uint32 version, KsPrivilege priv);

/* ERROR (42501) unless the current user holds priv on the key. */
extern void KsRequirePrivilege(int32 key_id, const char *key_name, KsPrivilege priv);

/* Does role hold priv on key_id?  Reads keysmith.key_acl. */
extern bool KsHasKeyPrivilege(int32 key_id, KsPrivilege priv, Oid role);

/* Is this version off its key's current one, and still re-encryptable? */
extern bool KsVersionNeedsReencrypt(uint32 key_id, uint32 version);

/* Move a key to a new DEK version when the current one hits its limit. */
extern void KsRollover(int32 key_id, int32 full_version);

/* Drop every cached DEK in this backend; returns how many were dropped. */
extern int	KsDekCacheFlush(void);

/* Key name of a key id, or NULL if there is no such key (palloc'd). */
extern char *KsKeyNameById(uint32 key_id);

/* OID of keysmith.key, resolving it on first use in this backend. */
extern Oid	KsKeyTableOid(void);

/*
 * SPI on the key tables as their owner.  Begin switches user and connects;
 * End finishes and switches back.  KsSpiExec runs one statement and raises
 * an internal error unless SPI returns `expect`; the lease code and the
 * reaper use it too.
 */
typedef struct KsOwnerSpi
{
	Oid			save_userid;
	int			save_sec;
} KsOwnerSpi;

extern void KsOwnerSpiBegin(KsOwnerSpi *spi);
extern void KsOwnerSpiEnd(KsOwnerSpi *spi);
extern void KsSpiExec(const char *sql, int nargs, Oid *types, Datum *values,
					  const char *nulls, bool read_only, long count, int expect);

/* Check a key name's shape; ERROR with 22023 if it is unusable. */
extern void KsCheckKeyName(const char *name);

/*
 * Leased roles (extension/leases.c).  The revocation steps are shared by
 * revoke_lease and the reaper; each expects SPI to be connected and runs
 * as a superuser (the extension owner or the reaper).
 */
#define KS_SECLABEL_PROVIDER "keysmith"

extern void KsLeaseSetNologin(Oid roleid);
extern void KsLeaseTerminateSessions(const Oid *roles, int n);
extern void KsLeaseDropOwnedHere(Oid roleid, Oid owner);
extern List *KsLeaseDatabases(Oid roleid, bool *here);
extern bool KsLeaseDropRole(Oid roleid);
extern void KsLeaseEvent(Datum lease_id, const char *event, const char *detail);
extern void KsLeaseRecordFailure(Datum lease_id, const char *message);
extern void KsLeaseFinish(Datum lease_id, Oid role_oid, Oid owner, const char *by);
extern KsCatalogStatus KsLeaseCatalog(KsCatalog *cat, char *why, size_t whylen);

/* Log redaction (extension/redact.c). */
extern void KsRedactInit(void);
extern char *KsRedactStatement(const char *sql);

/* Authentication hook and security-label provider (extension/auth.c). */
extern void KsAuthInit(void);


#endif							/* KEYSMITH_EXTENSION_H */
