/*
 * extension/keys/dek_cache.h
 *
 * The per-backend cache of unwrapped data keys (extension/keys/dek_cache.c).
 */
#ifndef KEYSMITH_DEK_CACHE_H
#define KEYSMITH_DEK_CACHE_H

#include "postgres.h"

#include "extension/keys/counters.h"
#include "extension/keys/key_acl.h"
#include "extension/keys/key_store.h"
#include "kms/envelope.h"

/* A usable DEK version, as held by the cache. */
typedef struct KsDek
{
	uint32		key_id;
	uint32		version;
	KsAead	   *aead;
	bool		retired;		/* decrypt refuses; rewrap still works */
	bool		family;			/* a key family's: wraps members, no values */
	char		name[KS_KEY_NAME_MAX + 1];
	KsCounterRef counter;		/* attached on first encryption */
	Oid			allowed[KS_PRIV_COUNT]; /* user last found to hold each */
} KsDek;

/*
 * Cache lookups; each falls back to the key tables and the KMS on a miss,
 * and ERRORs (42501) unless the current user holds priv on the key.  With
 * a privilege (a user's use), a key family's DEK is refused (KS018): only
 * the family module asks for one, with KS_PRIV_NONE.  A member's DEK is
 * unwrapped by its family's (the KMS is asked once per family version).
 */
extern KsDek *KsDekForEncrypt(const char *name, int name_len, KsPrivilege priv);
extern KsDek *KsDekForDecrypt(uint32 key_id, uint32 version, KsPrivilege priv);

/*
 * Open (key_id, version) through its KMS now, bypassing this backend's
 * entry and the cluster's shared cache (whose DEKs may predate a change of
 * key material); a member under its family version, probed too when
 * probe_family.  ERROR as a decrypt would.  For the wrong-key checks.
 */
extern void KsDekProbe(uint32 key_id, uint32 version, bool probe_family);

/* ERROR (KS018): dek is a key family's, which no value may use. */
extern void KsRefuseFamilyDek(const KsDek *dek) pg_attribute_noreturn();

/* Drop every cached DEK in this backend; returns how many were dropped. */
extern int	KsDekCacheFlush(void);

#endif							/* KEYSMITH_DEK_CACHE_H */
