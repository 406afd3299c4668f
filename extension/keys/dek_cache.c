/*
 * extension/keys/dek_cache.c
 *
 * The per-backend cache of unwrapped data keys, and the slow path that
 * fills it from the key tables and the KMS.  The key tables are reached
 * through owner_spi.c, privileges checked by key_acl.c, and the key
 * states of ciphertext_needs_reencrypt kept by key_state.c.
 *
 * Each cached DEK version is held only as a KsAead (OpenSSL cipher contexts
 * keyed with it); the raw DEK exists briefly in a locked, non-dumpable page
 * while the context is keyed, then is wiped.  Entries expire after
 * keysmith.dek_cache_ttl and the least recently used is evicted when the
 * cache holds keysmith.dek_cache_size versions; eviction frees the contexts,
 * which cleanses their key schedules.  The entries are threaded on an
 * intrusive list in order of use (lib/ilist.h): a use moves an entry to the
 * front and eviction takes the tail, both O(1) whatever the cache size.
 *
 * Memory per cached version, on x86-64 with OpenSSL 3: a DekEntry (232
 * bytes, 248 with dynahash's header) and the KsAead, one keyed AES-256-GCM
 * context that OpenSSL mallocs, about 1.5 kB in all as measured by
 * test/bench/bench_keys_cold.sh; plus a NameEntry (152 bytes, 168 in the
 * table) per key name encrypted with.  The default
 * keysmith.dek_cache_size (guc.c) is sized by it: docs/configuration.md.
 * Expiry is a second list, in order of expires_at, so the sweep at each
 * transaction end costs what it drops, not the cache's size.
 *
 * The hit path does no SPI, no catalog access and no allocation: a one-entry
 * memo for the last key name (encrypt) and the last key version (decrypt)
 * in front of two dynahash tables.
 *
 * Staleness: changes to the key tables made through keysmith's functions
 * send a relcache invalidation for keysmith.key; the callback below flushes
 * the cache when it arrives (in every backend of the database, at their next
 * transaction), and a backend that created entries in a transaction that
 * aborts flushes them too, so a rolled-back key can never be used.
 */
#include "postgres.h"

#include <sys/mman.h>
#include <time.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "catalog/pg_class.h"

#include "extension/common/catalog.h"
#include "extension/common/errors.h"
#include "extension/common/guc.h"
#include "extension/common/owner_spi.h"
#include "extension/keys/dek_cache.h"
#include "extension/keys/dek_shared.h"
#include "extension/keys/kek_check.h"
#include "extension/keys/key_acl.h"
#include "extension/keys/key_lifecycle.h"
#include "extension/keys/key_state.h"
#include "extension/keys/kms_instance.h"
#include "kms/http.h"

typedef struct DekKey
{
	uint32		key_id;
	uint32		version;
} DekKey;

typedef struct DekEntry
{
	DekKey		key;			/* hash key, must be first */
	KsDek		dek;
	uint64		expires_at;		/* monotonic ms */
	uint64		serial;			/* unique per load; 0 once removed */
	bool		used;			/* used since the clock hand last passed */
	dlist_node	lru;			/* in Lru: in order of load (or of second chance) */
	dlist_node	expiry;			/* in ByExpiry: soonest to expire first */
	uint64		role_gen;		/* dek.allowed is good while RoleGen is this */
} DekEntry;

/*
 * A key name's current version.  dek points at its DEK entry, valid while
 * that entry's serial is dek_serial: dynahash keeps a removed element in
 * its free list (the memory stays), and a removal zeroes the serial, so a
 * stale pointer is told by the serial and the lookup falls back to the
 * table.  One hash lookup per value instead of two.
 */
typedef struct NameEntry
{
	char		name[KS_KEY_NAME_MAX + 1];	/* hash key, must be first */
	uint32		key_id;
	uint32		version;		/* current version when looked up */
	uint64		expires_at;
	DekEntry   *dek;
	uint64		dek_serial;
} NameEntry;

static HTAB *DekTable = NULL;
static uint64 NextSerial = 1;
static HTAB *NameTable = NULL;
static dlist_head Lru = DLIST_STATIC_INIT(Lru);
static dlist_head ByExpiry = DLIST_STATIC_INIT(ByExpiry);
static uint64 RoleGen = 0;
static bool CallbacksRegistered = false;
static bool CacheTouchedInXact = false;

/* one-entry memos in front of the hash tables */
static char MemoName[KS_KEY_NAME_MAX + 1];
static int	MemoNameLen = -1;
static DekEntry *MemoEncrypt = NULL;
static DekEntry *MemoDecrypt = NULL;


/* A locked page for raw DEK bytes while a cipher context is keyed. */
static uint8 *SecretPage = NULL;
/* KsDekProbe at work: unwraps go to the KMS, never to the shared cache */
static bool ProbeFresh = false;


#define MonotonicMs() KsMonotonicMs()

static void
ForgetMemos(void)
{
	MemoNameLen = -1;
	MemoEncrypt = NULL;
	MemoDecrypt = NULL;
}

/*
 * A use: the entry gets a second chance at the next eviction (a flag in
 * the entry itself: a use writes no other memory, where moving it to the
 * head of a list wrote two neighbours, cold at 100,000 keys), and forgets
 * whom it found to hold privileges if roles changed since (KsRoleCallback).
 * A load is not a use: an entry loaded and never used again goes first.
 */
static inline void
TouchEntry(DekEntry *entry)
{
	entry->used = true;
	if (entry->role_gen != RoleGen)
	{
		for (int i = 0; i < KS_PRIV_COUNT; i++)
			entry->dek.allowed[i] = InvalidOid;
		entry->role_gen = RoleGen;
	}
}

/*
 * Thread a new entry on ByExpiry in order of expires_at.  New entries
 * usually expire last (the TTL is the same for all), so the walk from the
 * tail stops at once; an earlier expiry (a shared cache entry's, a lowered
 * TTL) walks further.
 */
static void
ThreadByExpiry(DekEntry *entry)
{
	dlist_iter	it;

	dlist_reverse_foreach(it, &ByExpiry)
	{
		DekEntry   *e = dlist_container(DekEntry, expiry, it.cur);

		if (e->expires_at <= entry->expires_at)
		{
			dlist_insert_after(&e->expiry, &entry->expiry);
			return;
		}
	}
	dlist_push_head(&ByExpiry, &entry->expiry);
}

static void
EvictEntry(DekEntry *entry)
{
	if (MemoEncrypt == entry || MemoDecrypt == entry)
		ForgetMemos();
	KsAeadFree(entry->dek.aead);
	entry->dek.aead = NULL;
	entry->serial = 0;
	dlist_delete(&entry->lru);
	dlist_delete(&entry->expiry);
	hash_search(DekTable, &entry->key, HASH_REMOVE, NULL);
}

int
KsDekCacheFlush(void)
{
	HASH_SEQ_STATUS status;
	DekEntry   *entry;
	NameEntry  *nentry;
	int			n = 0;

	ForgetMemos();
	KsKeyStatesFlush();
	if (DekTable != NULL)
	{
		hash_seq_init(&status, DekTable);
		while ((entry = hash_seq_search(&status)) != NULL)
		{
			KsAeadFree(entry->dek.aead);
			entry->serial = 0;
			dlist_delete(&entry->lru);
			dlist_delete(&entry->expiry);
			hash_search(DekTable, &entry->key, HASH_REMOVE, NULL);
			n++;
		}
	}
	if (NameTable != NULL)
	{
		hash_seq_init(&status, NameTable);
		while ((nentry = hash_seq_search(&status)) != NULL)
			hash_search(NameTable, nentry->name, HASH_REMOVE, NULL);
	}
	return n;
}

/*
 * Drop entries whose TTL has passed, so idle keys do not linger: at every
 * transaction end, from the head of ByExpiry, so it costs what it drops.
 */
static void
SweepExpired(void)
{
	uint64		now;

	if (dlist_is_empty(&ByExpiry))
		return;
	now = MonotonicMs();
	while (!dlist_is_empty(&ByExpiry))
	{
		DekEntry   *entry = dlist_head_element(DekEntry, expiry, &ByExpiry);

		if (entry->expires_at > now)
			break;
		EvictEntry(entry);
	}
}

static void
KsRelcacheCallback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || KsIsKeyTable(relid))
		KsDekCacheFlush();
}

/*
 * Role memberships or attributes changed: forget every privilege memo.
 * Each entry does so at its next use (TouchEntry), so this costs O(1)
 * however many versions are cached: any role change in the cluster calls
 * it, leases included.
 */
static void
KsRoleCallback(Datum arg, int cacheid, uint32 hashvalue)
{
	RoleGen++;
}

static void
KsXactCallback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			if (CacheTouchedInXact)
				KsDekCacheFlush();
			CacheTouchedInXact = false;
			SweepExpired();
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			CacheTouchedInXact = false;
			SweepExpired();
			break;
		default:
			break;
	}
}

static void
KsSubXactCallback(SubXactEvent event, SubTransactionId mySubid,
				  SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB && CacheTouchedInXact)
		KsDekCacheFlush();
}

/*
 * The key store changed a key in this transaction: what this backend
 * cached of it may be stale now (before the cache exists there is nothing
 * to drop).
 */
static void
FlushAfterKeyChange(void)
{
	(void) KsDekCacheFlush();
}

static void
EnsureCache(void)
{
	HASHCTL		ctl;

	if (!CallbacksRegistered)
	{
		CacheRegisterRelcacheCallback(KsRelcacheCallback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHMEMROLEMEM, KsRoleCallback, (Datum) 0);
		CacheRegisterSyscacheCallback(AUTHOID, KsRoleCallback, (Datum) 0);
		RegisterXactCallback(KsXactCallback, NULL);
		RegisterSubXactCallback(KsSubXactCallback, NULL);
		KsKeyStoreOnChange(FlushAfterKeyChange);
		CallbacksRegistered = true;
	}
	if (DekTable == NULL)
	{
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(DekKey);
		ctl.entrysize = sizeof(DekEntry);
		ctl.hcxt = TopMemoryContext;
		DekTable = hash_create("keysmith DEK cache", 64, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	if (NameTable == NULL)
	{
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = KS_KEY_NAME_MAX + 1;
		ctl.entrysize = sizeof(NameEntry);
		ctl.hcxt = TopMemoryContext;
		NameTable = hash_create("keysmith key names", 64, &ctl,
								HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	if (SecretPage == NULL)
	{
		void	   *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
							 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not map memory for key material")));
		/* best effort: keep it out of swap and out of core dumps */
		(void) mlock(p, 4096);
#ifdef MADV_DONTDUMP
		(void) madvise(p, 4096, MADV_DONTDUMP);
#endif
		SecretPage = p;
	}
}

/*
 * A member's DEK: its wrapped form is a keysmith ciphertext under a version
 * of its family's DEK (family.c seals it), with the member binding as
 * context.  The family version comes from the cache like any other, so a
 * million members cost one KMS unwrap per family version.
 */
static void
UnwrapMember(const KsKeyRow *row)
{
	KsHeader	hdr;
	KsDek	   *parent;

	KsMemberParse(row->name, row->version, row->parent_id, row->wrapped, &hdr);
	if (hdr.key_version != row->wrapped_by)
		ereport(ERROR,
				(errcode(ERRCODE_KS_UNWRAP_FAILED),
				 errmsg("wrapped data key of version %u of key \"%s\" is not one its family's version %u sealed",
						row->version, row->name, row->wrapped_by)));
	parent = KsDekForDecrypt(row->parent_id, row->wrapped_by, KS_PRIV_NONE);
	if (!parent->family)
		ereport(ERROR,
				(errcode(ERRCODE_KS_UNWRAP_FAILED),
				 errmsg("key \"%s\" names key \"%s\" as its family, which is not a key family",
						row->name, parent->name)));
	/* KsAeadOpen wipes the page when it fails */
	KsMemberOpen(parent->aead, parent->name, &hdr, row->name, row->version, row->wrapped, SecretPage);
}

typedef struct UnwrapArgs
{
	KsKmsInstance *inst;
	const KsKeyRow *row;
	const uint8 *aad;
	size_t		aad_len;
} UnwrapArgs;

static KsStatus
UnwrapThroughKms(void *arg, uint8 *dek, KsError *err)
{
	UnwrapArgs *a = arg;

	return a->inst->provider->unwrap(a->inst, a->row->kms_key, (const uint8 *) VARDATA_ANY(a->row->wrapped),
									 VARSIZE_ANY_EXHDR(a->row->wrapped), a->aad, a->aad_len,
									 dek, KS_DEK_LEN, err);
}

/*
 * Unwrap a key version through its KMS (or the shared cache, for external
 * KMSs) and key a cipher context with it.  *valid_until: how long this
 * backend may keep it.
 */
static KsAead *
UnwrapToAead(const KsKeyRow *row, uint64 *valid_until)
{
	KsKmsInstance inst;
	KsError		err;
	uint8		aad[KS_KEY_NAME_MAX + 64];
	size_t		aad_len;
	KsAead	   *aead;
	KsStatus	st;
	UnwrapArgs	args;

	if (row->parent_id != 0)
	{
		UnwrapMember(row);
		*valid_until = MonotonicMs() + (uint64) keysmith_dek_cache_ttl * 1000;
		aead = KsAeadCreate(SecretPage, KS_DEK_LEN, &err);
		KsWipe(SecretPage, KS_DEK_LEN);
		if (aead == NULL)
			KsReportError(&err);
		return aead;
	}
	if (KsKmsLookup(row->kms_type) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_KS_KMS_FAILURE),
				 errmsg("key \"%s\" uses KMS provider \"%s\" of type %s, which this build does not provide",
						row->name, row->kms, row->kms_type)));
	KsKmsInstanceBuild(row->kms, row->kms_type, row->kms_options, &inst);
	aad_len = KsDekBindingAad(row->name, row->version, aad, sizeof(aad));
	if (aad_len == 0)
		elog(ERROR, "key name too long for binding");

	args.inst = &inst;
	args.row = row;
	args.aad = aad;
	args.aad_len = aad_len;
	if (inst.provider->shared_cache && !ProbeFresh)
	{
		KsSharedDekId id;

		KsSharedDekIdFor(&id, row->key_id, row->version, row->kms, row->kms_key, aad, aad_len,
						 (const uint8 *) VARDATA_ANY(row->wrapped), VARSIZE_ANY_EXHDR(row->wrapped));
		PG_TRY();
		{
			KsSharedDekGet(&id, UnwrapThroughKms, &args, KsHttpTimeoutMs(&inst), SecretPage, valid_until);
		}
		PG_CATCH();
		{
			KsWipe(SecretPage, KS_DEK_LEN);
			PG_RE_THROW();
		}
		PG_END_TRY();
	}
	else
	{
		st = UnwrapThroughKms(&args, SecretPage, &err);
		if (st != KS_OK)
		{
			KsWipe(SecretPage, KS_DEK_LEN);
			if (st == KS_ERR_UNWRAP_FAILED)
				KsKekReportUnwrapFailure(&inst, row->kms, row->kms_key, (const uint8 *) VARDATA_ANY(row->wrapped),
										 VARSIZE_ANY_EXHDR(row->wrapped), aad, aad_len, &err);
			KsReportError(&err);
		}
		*valid_until = MonotonicMs() + (uint64) keysmith_dek_cache_ttl * 1000;
	}
	aead = KsAeadCreate(SecretPage, KS_DEK_LEN, &err);
	KsWipe(SecretPage, KS_DEK_LEN);
	if (aead == NULL)
		KsReportError(&err);
	return aead;
}

/*
 * Evict entries until there is room for one more, by second chance (the
 * clock): the oldest entry of Lru goes unless it was used since the hand
 * last passed it; then it loses the flag and goes to the head.  Each
 * entry is passed at most once per eviction, so an eviction is O(1)
 * amortized.  More than one goes only when keysmith.dek_cache_size was
 * lowered.
 */
static void
MakeRoom(void)
{
	while (hash_get_num_entries(DekTable) >= keysmith_dek_cache_size &&
		   !dlist_is_empty(&Lru))
	{
		DekEntry   *oldest = dlist_tail_element(DekEntry, lru, &Lru);

		if (oldest->used)
		{
			oldest->used = false;
			dlist_move_head(&Lru, &oldest->lru);
			continue;
		}
		EvictEntry(oldest);
	}
}

/* Find or load the DEK entry for a row already read from the tables. */
static DekEntry *
EntryForRow(const KsKeyRow *row, uint64 now)
{
	DekKey		key = {row->key_id, row->version};
	DekEntry   *entry;
	bool		found;
	KsAead	   *aead;
	uint64		valid_until;

	entry = hash_search(DekTable, &key, HASH_FIND, NULL);
	if (entry != NULL && entry->expires_at > now)
		return entry;
	if (entry != NULL)
		EvictEntry(entry);

	/* unwrap before inserting, so an error leaves the table untouched */
	aead = UnwrapToAead(row, &valid_until);
	MakeRoom();
	entry = hash_search(DekTable, &key, HASH_ENTER, &found);
	if (found)
	{
		/* cannot happen (it was evicted above), but never leak a key */
		KsAeadFree(entry->dek.aead);
		dlist_delete(&entry->lru);
		dlist_delete(&entry->expiry);
	}
	entry->dek.key_id = row->key_id;
	entry->dek.version = row->version;
	entry->dek.aead = aead;
	entry->dek.retired = strcmp(row->version_state, KsKeyVersionStateNames[KS_KEY_VERSION_RETIRED]) == 0;
	entry->dek.family = row->family;
	strlcpy(entry->dek.name, row->name, sizeof(entry->dek.name));
	entry->dek.counter.slot = 0;
	entry->dek.counter.generation = 0;
	for (int i = 0; i < KS_PRIV_COUNT; i++)
		entry->dek.allowed[i] = InvalidOid;
	entry->role_gen = RoleGen;
	entry->expires_at = Min(now + (uint64) keysmith_dek_cache_ttl * 1000, valid_until);
	entry->serial = NextSerial++;
	entry->used = false;
	dlist_push_head(&Lru, &entry->lru);
	ThreadByExpiry(entry);
	CacheTouchedInXact = true;
	return entry;
}

static void
ReportUnknownName(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("key \"%s\" does not exist", name)));
}

/* With use false, the lookup gives no second chance (a fetch again after a privilege check). */
static KsDek *
LookupForEncrypt(const char *name, int name_len, bool use)
{
	uint64		now = MonotonicMs();
	char		namebuf[KS_KEY_NAME_MAX + 1];
	NameEntry  *nentry;
	DekEntry   *entry;
	KsKeyRow		row;
	bool		found;

	if (MemoEncrypt != NULL && name_len == MemoNameLen &&
		memcmp(name, MemoName, name_len) == 0 &&
		MemoEncrypt->expires_at > now)
	{
		if (use)
			TouchEntry(MemoEncrypt);
		return &MemoEncrypt->dek;
	}

	if (name_len <= 0 || name_len > KS_KEY_NAME_MAX ||
		memchr(name, '\0', name_len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("key name is empty or longer than %d characters, so no such key exists",
						KS_KEY_NAME_MAX)));
	EnsureCache();
	memcpy(namebuf, name, name_len);
	namebuf[name_len] = '\0';

	nentry = hash_search(NameTable, namebuf, HASH_FIND, NULL);
	if (nentry != NULL && nentry->expires_at > now)
	{
		DekKey		key = {nentry->key_id, nentry->version};

		entry = nentry->dek;
		if (entry == NULL || entry->serial != nentry->dek_serial || entry->serial == 0)
		{
			entry = hash_search(DekTable, &key, HASH_FIND, NULL);
			if (entry != NULL)
			{
				nentry->dek = entry;
				nentry->dek_serial = entry->serial;
			}
		}
		if (entry != NULL && entry->expires_at > now)
			goto hit;
	}

	KsRequirePrimary("encrypt",
					 "Encryption counts are kept by the primary, so values are encrypted there; decrypt_value works on a standby.");
	KsKeyFetchRow(namebuf, 0, 0, &row);
	if (row.found_key && row.found_version && !row.key_destroyed && KsKeyMadeOnOtherHistory(&row))
	{
		/* its encryption count is not this server's to know: a new version */
		KsRollover((int32) row.key_id, (int32) row.version, KS_ROLLOVER_OTHER_HISTORY);
		KsKeyFetchRow(namebuf, 0, 0, &row);
	}
	if (!row.found_key)
		ReportUnknownName(namebuf);
	if (row.key_destroyed)
		ereport(ERROR,
				(errcode(ERRCODE_KS_KEY_DESTROYED),
				 errmsg("key \"%s\" has been destroyed", namebuf),
				 errdetail("A destroyed key can neither encrypt nor decrypt.")));
	if (!row.found_version)
		ereport(ERROR,
				(errcode(ERRCODE_KS_UNKNOWN_KEY_VERSION),
				 errmsg("key \"%s\" has no version %u", namebuf, row.version)));
	entry = EntryForRow(&row, now);

	if (hash_get_num_entries(NameTable) >= 4L * keysmith_dek_cache_size)
	{
		HASH_SEQ_STATUS status;

		hash_seq_init(&status, NameTable);
		while ((nentry = hash_seq_search(&status)) != NULL)
			hash_search(NameTable, nentry->name, HASH_REMOVE, NULL);
	}
	nentry = hash_search(NameTable, namebuf, HASH_ENTER, &found);
	nentry->key_id = row.key_id;
	nentry->version = row.version;
	nentry->expires_at = entry->expires_at;
	nentry->dek = entry;
	nentry->dek_serial = entry->serial;

	use = false;				/* a load is not a use */
hit:
	if (use)
		TouchEntry(entry);
	memcpy(MemoName, namebuf, name_len + 1);
	MemoNameLen = name_len;
	MemoEncrypt = entry;
	return &entry->dek;
}

/* Read (key_id, version) for a decrypt, with its refusals. */
static void
FetchForDecrypt(uint32 key_id, uint32 version, KsKeyRow *row)
{
	KsKeyFetchRow(NULL, key_id, version, row);
	if (!row->found_key)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("ciphertext refers to key id %u, which does not exist in this database",
						key_id)));
	if (row->version_state != NULL &&
		strcmp(row->version_state, KsKeyVersionStateNames[KS_KEY_VERSION_DESTROYED]) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_KS_KEY_DESTROYED),
				 errmsg("version %u of key \"%s\" has been destroyed", version, row->name),
				 errdetail("Values encrypted under a destroyed key version cannot be recovered.")));
	if (!row->found_version)
		ereport(ERROR,
				(errcode(ERRCODE_KS_UNKNOWN_KEY_VERSION),
				 errmsg("key \"%s\" has no version %u", row->name, version)));
}

static KsDek *
LookupForDecrypt(uint32 key_id, uint32 version, bool use)
{
	uint64		now = MonotonicMs();
	DekKey		key = {key_id, version};
	DekEntry   *entry;
	KsKeyRow		row;

	if (MemoDecrypt != NULL && MemoDecrypt->key.key_id == key_id &&
		MemoDecrypt->key.version == version && MemoDecrypt->expires_at > now)
	{
		if (use)
			TouchEntry(MemoDecrypt);
		return &MemoDecrypt->dek;
	}

	EnsureCache();
	entry = hash_search(DekTable, &key, HASH_FIND, NULL);
	if (entry == NULL || entry->expires_at <= now)
	{
		FetchForDecrypt(key_id, version, &row);
		entry = EntryForRow(&row, now);
		use = false;			/* a load is not a use */
	}
	if (use)
		TouchEntry(entry);
	MemoDecrypt = entry;
	return &entry->dek;
}

/*
 * Open (key_id, version) through its KMS now, for the checks that must not
 * take a cached DEK's word for the key material at hand
 * (extension/keys/key_verify.c): this backend's entry, if any, is evicted
 * first, and the unwrap neither reads nor fills the cluster's shared cache.
 * The DEK so proven then takes the entry.  A member is opened under its
 * family version, which is probed the same way first when probe_family.
 */
void
KsDekProbe(uint32 key_id, uint32 version, bool probe_family)
{
	DekKey		key = {key_id, version};
	DekEntry   *entry;
	KsKeyRow	row;

	EnsureCache();
	FetchForDecrypt(key_id, version, &row);
	if (row.parent_id != 0 && probe_family)
		KsDekProbe(row.parent_id, row.wrapped_by, false);
	entry = hash_search(DekTable, &key, HASH_FIND, NULL);
	if (entry != NULL)
		EvictEntry(entry);
	ProbeFresh = true;
	PG_TRY();
	{
		(void) EntryForRow(&row, MonotonicMs());
	}
	PG_FINALLY();
	{
		ProbeFresh = false;
	}
	PG_END_TRY();
}


void
KsRefuseFamilyDek(const KsDek *dek)
{
	ereport(ERROR,
			(errcode(ERRCODE_KS_KEY_FAMILY),
			 errmsg("key \"%s\" is a key family: it encrypts and decrypts no values", dek->name),
			 errhint("Create a member with keysmith.create_key(<name>, parent => '%s') and use that.", dek->name)));
}

/*
 * The public lookups add the privilege check, memoised on the entry per
 * user so only the first call per user and key version reads key_acl.  The
 * check may flush the cache, so the entry is fetched again after it.
 */
KsDek *
KsDekForEncrypt(const char *name, int name_len, KsPrivilege priv)
{
	KsDek	   *dek = LookupForEncrypt(name, name_len, true);
	Oid			user = GetUserId();

	if (priv != KS_PRIV_NONE && dek->family)
		KsRefuseFamilyDek(dek);
	if (priv != KS_PRIV_NONE && dek->allowed[priv] != user)
	{
		KsRequirePrivilege((int32) dek->key_id, dek->name, priv);
		dek = LookupForEncrypt(name, name_len, false);
		dek->allowed[priv] = user;
	}
	return dek;
}

KsDek *
KsDekForDecrypt(uint32 key_id, uint32 version, KsPrivilege priv)
{
	KsDek	   *dek = LookupForDecrypt(key_id, version, true);
	Oid			user = GetUserId();

	if (priv != KS_PRIV_NONE && dek->family)
		KsRefuseFamilyDek(dek);
	if (priv != KS_PRIV_NONE && dek->allowed[priv] != user)
	{
		KsRequirePrivilege((int32) dek->key_id, dek->name, priv);
		dek = LookupForDecrypt(key_id, version, false);
		dek->allowed[priv] = user;
	}
	return dek;
}
