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

/* GUCs (extension/keysmith.c) */
extern char *keysmith_local_master_key_file;
extern int	keysmith_dek_cache_ttl;
extern int	keysmith_dek_cache_size;

/* Report a kms/ failure as an ERROR with the matching SQLSTATE. */
extern void KsReportError(const KsError *err) pg_attribute_noreturn();

/* The provider configuration built from the GUCs. */
extern void KsCurrentKmsConfig(KsKmsConfig *cfg);

/* A usable DEK version, as held by the cache. */
typedef struct KsDek
{
	uint32		key_id;
	uint32		version;
	KsAead	   *aead;
} KsDek;

/* Cache lookups; each falls back to the key tables and the KMS on a miss. */
extern KsDek *KsDekForEncrypt(const char *name, int name_len);
extern KsDek *KsDekForDecrypt(uint32 key_id, uint32 version);

/* Drop every cached DEK in this backend; returns how many were dropped. */
extern int	KsDekCacheFlush(void);

/* Key name of a key id, or NULL if there is no such key (palloc'd). */
extern char *KsKeyNameById(uint32 key_id);

/* OID of keysmith.key, resolving it on first use in this backend. */
extern Oid	KsKeyTableOid(void);

/* Switch to / back from the owner of the key tables for catalog work. */
extern void KsBecomeKeyOwner(Oid *save_userid, int *save_sec_context);
extern void KsRestoreUser(Oid save_userid, int save_sec_context);

/* Check a key name's shape; ERROR with 22023 if it is unusable. */
extern void KsCheckKeyName(const char *name);

#endif							/* KEYSMITH_EXTENSION_H */
