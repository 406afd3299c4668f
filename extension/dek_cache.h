/*
 * extension/dek_cache.h
 *
 * The per-backend cache of unwrapped data keys (extension/dek_cache.c), and
 * key names.
 */
#ifndef KEYSMITH_DEK_CACHE_H
#define KEYSMITH_DEK_CACHE_H

#include "keysmith.h"
#include "key_acl.h"

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

/* Drop every cached DEK in this backend; returns how many were dropped. */
extern int	KsDekCacheFlush(void);

/* Key name of a key id, or NULL if there is no such key (palloc'd). */
extern char *KsKeyNameById(uint32 key_id);

/* Check a key name's shape; ERROR with 22023 if it is unusable. */
extern void KsCheckKeyName(const char *name);

/*
 * Move a key to a new DEK version when the current one hits its limit, or
 * was made on another server history (keys.c).
 */
extern void KsRollover(int32 key_id, int32 full_version, bool other_history);

#endif							/* KEYSMITH_DEK_CACHE_H */
