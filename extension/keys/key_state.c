/*
 * extension/keys/key_state.c
 *
 * The key-state cache behind keysmith.ciphertext_needs_reencrypt: per key
 * id, the current version and which versions are destroyed, so the
 * per-row answer needs no query.  Flushed when the key tables change (a
 * rotation is seen by the next transaction) and with the DEK cache.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/memutils.h"


#include "extension/common/owner_spi.h"
#include "extension/keys/key_lifecycle.h"
#include "extension/keys/key_state.h"

static bool CallbacksRegistered = false;

static void
RelcacheCallback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || KsIsKeyTable(relid))
		KsKeyStatesFlush();
}

static void
EnsureCallbacks(void)
{
	if (!CallbacksRegistered)
	{
		CacheRegisterRelcacheCallback(RelcacheCallback, (Datum) 0);
		CallbacksRegistered = true;
	}
}

/*
 * Key states for keysmith.ciphertext_needs_reencrypt: per key id, the
 * current version and which versions are destroyed.  Flushed with the DEK
 * cache, so a rotation is seen by the next transaction.
 */
typedef struct KeyStateEntry
{
	int32		key_id;			/* hash key */
	bool		exists;
	bool		destroyed;
	int32		current_version;
	int			ndestroyed;
	int32	   *destroyed_versions;
} KeyStateEntry;

static HTAB *KeyStateTable = NULL;

void
KsKeyStatesFlush(void)
{
	HASH_SEQ_STATUS status;
	KeyStateEntry *e;

	if (KeyStateTable == NULL)
		return;
	hash_seq_init(&status, KeyStateTable);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		if (e->destroyed_versions)
			pfree(e->destroyed_versions);
		hash_search(KeyStateTable, &e->key_id, HASH_REMOVE, NULL);
	}
}

static KeyStateEntry *
LoadKeyState(int32 key_id)
{
	KsOwnerSpi	spi;
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(key_id)};
	KeyStateEntry *e;
	bool		found;
	bool		isnull;

	if (KeyStateTable == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(int32);
		ctl.entrysize = sizeof(KeyStateEntry);
		ctl.hcxt = TopMemoryContext;
		KeyStateTable = hash_create("keysmith key states", 64, &ctl,
									HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}

	KsOwnerSpiBegin(&spi);
	KsSpiExec("SELECT k.current_version, k.state OPERATOR(pg_catalog.=) " KS_KEY_DESTROYED_SQL ","
							  "       (SELECT pg_catalog.array_agg(v.version) FROM keysmith.key_version v"
							  "         WHERE v.key_id OPERATOR(pg_catalog.=) k.key_id"
							  "           AND v.state OPERATOR(pg_catalog.=) " KS_KEY_DESTROYED_SQL ")"
							  "  FROM keysmith.key k WHERE k.key_id OPERATOR(pg_catalog.=) $1",
				   1, types, values, NULL, KsSpiReadOnly(), 1, SPI_OK_SELECT);

	/* the query may have flushed the table: enter afterwards */
	e = hash_search(KeyStateTable, &key_id, HASH_ENTER, &found);
	e->exists = SPI_processed > 0;
	e->destroyed = false;
	e->current_version = 0;
	e->ndestroyed = 0;
	e->destroyed_versions = NULL;
	if (e->exists)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		Datum		arr;

		e->current_version = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		e->destroyed = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
		arr = SPI_getbinval(tup, desc, 3, &isnull);
		if (!isnull)
		{
			Datum	   *elems;
			int			n;

			deconstruct_array(DatumGetArrayTypeP(arr), INT4OID, sizeof(int32), true,
							  TYPALIGN_INT, &elems, NULL, &n);
			e->destroyed_versions = MemoryContextAlloc(TopMemoryContext, sizeof(int32) * Max(n, 1));
			for (int i = 0; i < n; i++)
				e->destroyed_versions[i] = DatumGetInt32(elems[i]);
			e->ndestroyed = n;
		}
	}
	KsOwnerSpiEnd(&spi);
	return e;
}

bool
KsVersionNeedsReencrypt(uint32 key_id, uint32 version)
{
	KeyStateEntry *e = NULL;
	int32		id = (int32) key_id;

	EnsureCallbacks();
	if (KeyStateTable != NULL)
		e = hash_search(KeyStateTable, &id, HASH_FIND, NULL);
	if (e == NULL)
		e = LoadKeyState(id);
	if (!e->exists || e->destroyed || (int32) version == e->current_version)
		return false;
	for (int i = 0; i < e->ndestroyed; i++)
		if (e->destroyed_versions[i] == (int32) version)
			return false;
	return true;
}

