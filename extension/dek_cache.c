/*
 * extension/dek_cache.c
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
 * which cleanses their key schedules.
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
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "catalog/pg_class.h"

#include "keysmith.h"
#include "dek_cache.h"
#include "dek_shared.h"
#include "../kms/http.h"
#include "key_acl.h"
#include "kms_instance.h"
#include "key_state.h"
#include "owner_spi.h"

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
	uint64		last_used;		/* LRU clock */
} DekEntry;

typedef struct NameEntry
{
	char		name[KS_KEY_NAME_MAX + 1];	/* hash key, must be first */
	uint32		key_id;
	uint32		version;		/* current version when looked up */
	uint64		expires_at;
} NameEntry;

static HTAB *DekTable = NULL;
static HTAB *NameTable = NULL;
static uint64 LruClock = 0;
static bool CallbacksRegistered = false;
static bool CacheTouchedInXact = false;

/* one-entry memos in front of the hash tables */
static char MemoName[KS_KEY_NAME_MAX + 1];
static int	MemoNameLen = -1;
static DekEntry *MemoEncrypt = NULL;
static DekEntry *MemoDecrypt = NULL;


/* A locked page for raw DEK bytes while a cipher context is keyed. */
static uint8 *SecretPage = NULL;


#define MonotonicMs() KsMonotonicMs()

static void
ForgetMemos(void)
{
	MemoNameLen = -1;
	MemoEncrypt = NULL;
	MemoDecrypt = NULL;
}

static void
EvictEntry(DekEntry *entry)
{
	if (MemoEncrypt == entry || MemoDecrypt == entry)
		ForgetMemos();
	KsAeadFree(entry->dek.aead);
	entry->dek.aead = NULL;
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

/* Drop entries whose TTL has passed, so idle keys do not linger. */
static void
SweepExpired(void)
{
	HASH_SEQ_STATUS status;
	DekEntry   *entry;
	uint64		now = MonotonicMs();

	if (DekTable == NULL)
		return;
	hash_seq_init(&status, DekTable);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		if (entry->expires_at <= now)
			EvictEntry(entry);
	}
}

static void
KsRelcacheCallback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || KsIsKeyTable(relid))
		KsDekCacheFlush();
}

/* Role memberships or attributes changed: forget every privilege memo. */
static void
KsRoleCallback(Datum arg, int cacheid, uint32 hashvalue)
{
	HASH_SEQ_STATUS status;
	DekEntry   *entry;

	if (DekTable == NULL)
		return;
	hash_seq_init(&status, DekTable);
	while ((entry = hash_seq_search(&status)) != NULL)
		for (int i = 0; i < KS_PRIV_COUNT; i++)
			entry->dek.allowed[i] = InvalidOid;
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

void
KsCheckKeyName(const char *name)
{
	size_t		len = strlen(name);

	if (len == 0 || len > KS_KEY_NAME_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("key name must be 1 to %d characters long", KS_KEY_NAME_MAX)));
	for (size_t i = 0; i < len; i++)
	{
		char		c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.' ||
			  c == ':' || c == '/' || c == '@'))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("key name contains a character other than letters, digits and _ - . : / @")));
	}
}

/* What the slow path reads from the key tables. */
typedef struct KeyRow
{
	bool		found_key;
	bool		found_version;
	bool		key_destroyed;
	uint32		key_id;
	uint32		version;
	char	   *name;
	char	   *kms;
	char	   *kms_key;		/* NULL where the provider has none */
	char	   *kms_type;
	char	   *kms_options;	/* JSON text */
	char	   *version_state;
	bytea	   *wrapped;
} KeyRow;

/*
 * Read one key version.  With by_name, the key's current version; else
 * (key_id, version).  Runs as the key tables' owner, read-only.
 */
static void
FetchKeyRow(const char *name, uint32 key_id, uint32 version, KeyRow *row)
{
	KsOwnerSpi	spi;
	MemoryContext outer = CurrentMemoryContext;
	bool		has_providers;

	memset(row, 0, sizeof(*row));
	KsOwnerSpiBegin(&spi);
	has_providers = KsKmsCatalogHasProviders();

	if (name != NULL)
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(name)};

#define BY_NAME_SQL(cols, join) \
		"SELECT k.key_id, k.current_version, k.name, k.kms, v.wrapped_dek, k.state, v.state" cols \
		"  FROM keysmith.key k" join \
		"  LEFT JOIN keysmith.key_version v" \
		"    ON v.key_id OPERATOR(pg_catalog.=) k.key_id" \
		"   AND v.version OPERATOR(pg_catalog.=) k.current_version" \
		" WHERE k.name OPERATOR(pg_catalog.=) $1"
		KsSpiExec(has_providers ? BY_NAME_SQL(KS_KMS_COLS_07, KS_KMS_JOIN_07) :
				  BY_NAME_SQL(KS_KMS_COLS_06, KS_KMS_JOIN_06),
				  1, types, values, NULL, KsSpiReadOnly(), 1, SPI_OK_SELECT);
	}
	else
	{
		Oid			types[2] = {INT4OID, INT4OID};
		Datum		values[2] = {Int32GetDatum((int32) key_id), Int32GetDatum((int32) version)};

#define BY_ID_SQL(cols, join) \
		"SELECT k.key_id, v.version, k.name, k.kms, v.wrapped_dek, k.state, v.state" cols \
		"  FROM keysmith.key k" join \
		"  LEFT JOIN keysmith.key_version v" \
		"    ON v.key_id OPERATOR(pg_catalog.=) k.key_id" \
		"   AND v.version OPERATOR(pg_catalog.=) $2" \
		" WHERE k.key_id OPERATOR(pg_catalog.=) $1"
		KsSpiExec(has_providers ? BY_ID_SQL(KS_KMS_COLS_07, KS_KMS_JOIN_07) :
				  BY_ID_SQL(KS_KMS_COLS_06, KS_KMS_JOIN_06),
				  2, types, values, NULL, KsSpiReadOnly(), 1, SPI_OK_SELECT);
	}

	if (SPI_processed > 0)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;
		MemoryContext spicxt = MemoryContextSwitchTo(outer);

		row->found_key = true;
		row->key_id = (uint32) DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		row->name = SPI_getvalue(tup, desc, 3);
		row->kms = SPI_getvalue(tup, desc, 4);
		row->kms_key = SPI_getvalue(tup, desc, 8);
		row->kms_type = SPI_getvalue(tup, desc, 9);
		row->kms_options = SPI_getvalue(tup, desc, 10);
		row->key_destroyed = strcmp(SPI_getvalue(tup, desc, 6), "destroyed") == 0;
		row->version_state = SPI_getvalue(tup, desc, 7);
		d = SPI_getbinval(tup, desc, 5, &isnull);
		if (!isnull)
		{
			row->found_version = true;
			row->version = (uint32) DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
			row->wrapped = DatumGetByteaPCopy(d);
		}
		else
			row->version = name != NULL ?
				(uint32) DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull)) : version;
		MemoryContextSwitchTo(spicxt);
	}
	KsOwnerSpiEnd(&spi);
}

typedef struct UnwrapArgs
{
	KsKmsInstance *inst;
	const KeyRow *row;
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
UnwrapToAead(const KeyRow *row, uint64 *valid_until)
{
	KsKmsInstance inst;
	KsError		err;
	uint8		aad[KS_KEY_NAME_MAX + 64];
	size_t		aad_len;
	KsAead	   *aead;
	KsStatus	st;
	UnwrapArgs	args;

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
	if (inst.provider->shared_cache)
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

/* Evict least-recently-used entries until there is room for one more. */
static void
MakeRoom(void)
{
	while (hash_get_num_entries(DekTable) >= keysmith_dek_cache_size)
	{
		HASH_SEQ_STATUS status;
		DekEntry   *entry;
		DekEntry   *oldest = NULL;

		hash_seq_init(&status, DekTable);
		while ((entry = hash_seq_search(&status)) != NULL)
		{
			if (oldest == NULL || entry->last_used < oldest->last_used)
				oldest = entry;
		}
		if (oldest == NULL)
			break;
		EvictEntry(oldest);
	}
}

/* Find or load the DEK entry for a row already read from the tables. */
static DekEntry *
EntryForRow(const KeyRow *row, uint64 now)
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
	entry->dek.key_id = row->key_id;
	entry->dek.version = row->version;
	entry->dek.aead = aead;
	entry->dek.retired = strcmp(row->version_state, "retired") == 0;
	strlcpy(entry->dek.name, row->name, sizeof(entry->dek.name));
	entry->dek.counter = NULL;
	for (int i = 0; i < KS_PRIV_COUNT; i++)
		entry->dek.allowed[i] = InvalidOid;
	entry->expires_at = Min(now + (uint64) keysmith_dek_cache_ttl * 1000, valid_until);
	entry->last_used = ++LruClock;
	CacheTouchedInXact = true;
	return entry;
}

/*
 * Was the key version of row made on another server history than this
 * primary's (KsServerEpoch)?  Versions from before 0.9 record none, and
 * count as made elsewhere: the update rolls each key over once.
 */
static bool
MadeOnOtherHistory(const KeyRow *row)
{
	KsOwnerSpi	spi;
	char		epoch[KS_EPOCH_LEN];
	bool		other = false;
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2] = {Int32GetDatum((int32) row->key_id), Int32GetDatum((int32) row->version)};

	if (!KsCatalogHasEpoch())
		return false;
	KsServerEpoch(epoch);
	KsOwnerSpiBegin(&spi);
	KsSpiExec("SELECT server_epoch FROM keysmith.key_version"
			  " WHERE key_id OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
			  2, types, values, NULL, KsSpiReadOnly(), 1, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		char	   *stored = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		other = stored == NULL || strcmp(stored, epoch) != 0;
	}
	KsOwnerSpiEnd(&spi);
	return other;
}

static void
ReportUnknownName(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("key \"%s\" does not exist", name)));
}

static KsDek *
LookupForEncrypt(const char *name, int name_len)
{
	uint64		now = MonotonicMs();
	char		namebuf[KS_KEY_NAME_MAX + 1];
	NameEntry  *nentry;
	DekEntry   *entry;
	KeyRow		row;
	bool		found;

	if (MemoEncrypt != NULL && name_len == MemoNameLen &&
		memcmp(name, MemoName, name_len) == 0 &&
		MemoEncrypt->expires_at > now)
	{
		MemoEncrypt->last_used = ++LruClock;
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

		entry = hash_search(DekTable, &key, HASH_FIND, NULL);
		if (entry != NULL && entry->expires_at > now)
			goto hit;
	}

	KsRequirePrimary("encrypt",
					 "Encryption counts are kept by the primary, so values are encrypted there; decrypt_value works on a standby.");
	FetchKeyRow(namebuf, 0, 0, &row);
	if (row.found_key && row.found_version && !row.key_destroyed && MadeOnOtherHistory(&row))
	{
		/* its encryption count is not this server's to know: a new version */
		KsRollover((int32) row.key_id, (int32) row.version, true);
		FetchKeyRow(namebuf, 0, 0, &row);
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

hit:
	entry->last_used = ++LruClock;
	memcpy(MemoName, namebuf, name_len + 1);
	MemoNameLen = name_len;
	MemoEncrypt = entry;
	return &entry->dek;
}

static KsDek *
LookupForDecrypt(uint32 key_id, uint32 version)
{
	uint64		now = MonotonicMs();
	DekKey		key = {key_id, version};
	DekEntry   *entry;
	KeyRow		row;

	if (MemoDecrypt != NULL && MemoDecrypt->key.key_id == key_id &&
		MemoDecrypt->key.version == version && MemoDecrypt->expires_at > now)
	{
		MemoDecrypt->last_used = ++LruClock;
		return &MemoDecrypt->dek;
	}

	EnsureCache();
	entry = hash_search(DekTable, &key, HASH_FIND, NULL);
	if (entry == NULL || entry->expires_at <= now)
	{
		FetchKeyRow(NULL, key_id, version, &row);
		if (!row.found_key)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("ciphertext refers to key id %u, which does not exist in this database",
							key_id)));
		if (row.version_state != NULL && strcmp(row.version_state, "destroyed") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_KS_KEY_DESTROYED),
					 errmsg("version %u of key \"%s\" has been destroyed", version, row.name),
					 errdetail("Values encrypted under a destroyed key version cannot be recovered.")));
		if (!row.found_version)
			ereport(ERROR,
					(errcode(ERRCODE_KS_UNKNOWN_KEY_VERSION),
					 errmsg("key \"%s\" has no version %u", row.name, version)));
		entry = EntryForRow(&row, now);
	}
	entry->last_used = ++LruClock;
	MemoDecrypt = entry;
	return &entry->dek;
}

char *
KsKeyNameById(uint32 key_id)
{
	KeyRow		row;

	FetchKeyRow(NULL, key_id, 0, &row);
	return row.found_key ? row.name : NULL;
}

/*
 * The public lookups add the privilege check, memoised on the entry per
 * user so only the first call per user and key version reads key_acl.  The
 * check may flush the cache, so the entry is fetched again after it.
 */
KsDek *
KsDekForEncrypt(const char *name, int name_len, KsPrivilege priv)
{
	KsDek	   *dek = LookupForEncrypt(name, name_len);
	Oid			user = GetUserId();

	if (priv != KS_PRIV_NONE && dek->allowed[priv] != user)
	{
		KsRequirePrivilege((int32) dek->key_id, dek->name, priv);
		dek = LookupForEncrypt(name, name_len);
		dek->allowed[priv] = user;
	}
	return dek;
}

KsDek *
KsDekForDecrypt(uint32 key_id, uint32 version, KsPrivilege priv)
{
	KsDek	   *dek = LookupForDecrypt(key_id, version);
	Oid			user = GetUserId();

	if (priv != KS_PRIV_NONE && dek->allowed[priv] != user)
	{
		KsRequirePrivilege((int32) dek->key_id, dek->name, priv);
		dek = LookupForDecrypt(key_id, version);
		dek->allowed[priv] = user;
	}
	return dek;
}
