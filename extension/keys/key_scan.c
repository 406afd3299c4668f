/*
 * extension/keys/key_scan.c
 *
 * The DEK cache's cold path reads one key version: the key row, its
 * provider row and the version row.  Through SPI that cost a statement
 * parsed, planned and executed per load, and a second one for the
 * version's server history; here it is three index lookups on the unique
 * indexes the extension's own constraints made (key's name and key_id,
 * key_version's (key_id, version), kms_provider's name), in one pass that
 * also returns server_epoch.
 *
 * What it reads is exactly what KsKeyFetchRow's statements read
 * (key_store.c before 0.11): the same rows, joined the same way (the
 * provider by inner join, the version by left join), at every catalog shape
 * this library supports:
 *
 *   - before 0.7 there is no kms_provider: every key is the built-in
 *     "local" with no options and no kms_key (KS_KMS_COLS_06);
 *   - before 0.9 versions record no server_epoch (KsCatalogHasEpoch);
 *   - before 0.11 there are no key families (key.family, key.parent_id,
 *     key_version.wrapped_by).
 *
 * Columns are found by name, since upgraded catalogs need not number them
 * as a fresh install does.  An index is used only if it is a valid unique
 * btree on exactly the looked-up columns, without predicate, whose equality
 * operator is the one the SQL used (int4 =, text =), with the index's own
 * collation; a catalog without one (a superuser dropped it) is read by a
 * heap scan with the same keys, never wrongly.
 *
 * Snapshot: the SQL ran with KsSpiReadOnly() (owner_spi.h): outside
 * parallel mode read-write, where SPI advances the command counter and
 * takes the transaction snapshot (a fresh one in READ COMMITTED, the
 * transaction's in REPEATABLE READ and SERIALIZABLE), so it sees this
 * transaction's own changes, such as a KsRollover a moment ago; in
 * parallel mode the query's active snapshot, as read-only SPI does.  The
 * same is done here.  GetLatestSnapshot would be wrong: it would let a
 * REPEATABLE READ transaction see key changes committed after it began,
 * which the SQL never did.
 *
 * Privileges: a direct scan checks none.  The SQL ran as the tables' owner
 * (KsOwnerSpiBegin) after the same trust check of the catalog
 * (KsKeyTableOid), so KsKeyScanRow makes that check and must be reached
 * only where KsOwnerSpiBegin was: KsKeyFetchRow, whose callers check the
 * caller's key privileges themselves.  Locks are those the statements
 * took: AccessShareLock on each table, kept to the end of the transaction.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/pg_am.h"
#include "catalog/pg_index.h"
#include "catalog/pg_operator.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "extension/common/catalog.h"
#include "extension/common/owner_spi.h"
#include "extension/keys/key_lifecycle.h"
#include "extension/keys/key_scan.h"

/* One equality lookup: a unique index (or none: heap scan) and its keys. */
typedef struct Lookup
{
	Oid			index;			/* InvalidOid: no usable index */
	int			nkeys;
	AttrNumber	attno[2];		/* table columns */
	RegProcedure proc[2];
	Oid			collation[2];
} Lookup;

/* The shape of the key tables, found once and kept until they change. */
typedef struct Shape
{
	bool		valid;
	Oid			key;
	Oid			version;
	Oid			provider;		/* InvalidOid: a catalog before 0.7 */
	bool		has_epoch;
	bool		has_families;
	/* keysmith.key */
	AttrNumber	k_key_id,
				k_name,
				k_kms,
				k_current,
				k_state,
				k_kms_key,
				k_family,
				k_parent;
	/* keysmith.key_version */
	AttrNumber	v_wrapped,
				v_state,
				v_epoch,
				v_wrapped_by;
	/* keysmith.kms_provider */
	AttrNumber	p_type,
				p_options;
	Lookup		key_by_name;
	Lookup		key_by_id;
	Lookup		version_by_id;
	Lookup		provider_by_name;
} Shape;

static Shape S;
static bool CallbacksRegistered = false;

static bool
IsShapeOid(Oid relid)
{
	return relid == S.key || relid == S.version || relid == S.provider ||
		relid == S.key_by_name.index || relid == S.key_by_id.index ||
		relid == S.version_by_id.index || relid == S.provider_by_name.index;
}

static void
RelcacheCallback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || (OidIsValid(relid) && IsShapeOid(relid)))
		S.valid = false;
}

static void
SyscacheCallback(Datum arg, int cacheid, uint32 hashvalue)
{
	S.valid = false;
}

static AttrNumber
RequireColumn(Oid relid, const char *table, const char *column)
{
	AttrNumber	attno = get_attnum(relid, column);

	if (attno == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("keysmith's table keysmith.%s has no column %s", table, column),
				 errhint("Run ALTER EXTENSION keysmith UPDATE.")));
	return attno;
}

/*
 * The lookup of rel's columns attno[] by equality (operators eqop[], procs
 * proc[]): the first index that answers it exactly as the SQL did, else a
 * heap scan with the columns' own collations.
 */
static void
FindLookup(Relation rel, int nkeys, const AttrNumber *attno, const Oid *eqop,
		   const RegProcedure *proc, Lookup *lk)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;

	memset(lk, 0, sizeof(*lk));
	lk->nkeys = nkeys;
	for (int i = 0; i < nkeys; i++)
	{
		lk->attno[i] = attno[i];
		lk->proc[i] = proc[i];
		lk->collation[i] = TupleDescAttr(RelationGetDescr(rel), attno[i] - 1)->attcollation;
	}
	foreach(lc, indexes)
	{
		Oid			indexoid = lfirst_oid(lc);
		Relation	idx = index_open(indexoid, AccessShareLock);
		Form_pg_index form = idx->rd_index;
		bool		ok;

		ok = form->indisunique && form->indisvalid && form->indislive &&
			idx->rd_rel->relam == BTREE_AM_OID &&
			form->indnkeyatts == nkeys &&
			heap_attisnull(idx->rd_indextuple, Anum_pg_index_indpred, NULL);
		for (int i = 0; ok && i < nkeys; i++)
			ok = form->indkey.values[i] == attno[i] &&
				get_opfamily_member(idx->rd_opfamily[i], idx->rd_opcintype[i],
									idx->rd_opcintype[i], BTEqualStrategyNumber) == eqop[i];
		if (ok)
		{
			lk->index = indexoid;
			for (int i = 0; i < nkeys; i++)
				lk->collation[i] = idx->rd_indcollation[i];
		}
		index_close(idx, AccessShareLock);
		if (ok)
			break;
	}
	list_free(indexes);
}

/* Find the tables through the trusted catalog, their columns and indexes. */
static void
Resolve(void)
{
	KsCatalog	cat;
	Oid			provider;
	Relation	krel,
				vrel,
				prel;
	static const Oid int4eq[2] = {Int4EqualOperator, Int4EqualOperator};
	static const RegProcedure int4eqproc[2] = {F_INT4EQ, F_INT4EQ};
	static const Oid texteq[1] = {TextEqualOperator};
	static const RegProcedure texteqproc[1] = {F_TEXTEQ};
	AttrNumber	cols[2];

	if (!CallbacksRegistered)
	{
		CacheRegisterRelcacheCallback(RelcacheCallback, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, SyscacheCallback, (Datum) 0);
		CallbacksRegistered = true;
	}
	S.valid = false;
	KsCatalogRequire(&cat);
	S.key = KsCatalogRequireRelation(&cat, "key");
	S.version = KsCatalogRequireRelation(&cat, "key_version");
	/* as KsKmsCatalogHasProviders: only a member of the extension counts */
	S.provider = KsCatalogRelation(&cat, "kms_provider", &provider) == KS_CATALOG_OK ?
		provider : InvalidOid;

	/*
	 * Lock the tables before reading their shape: that takes in pending
	 * invalidations, and no one can alter them until this transaction ends.
	 */
	krel = table_open(S.key, AccessShareLock);
	vrel = table_open(S.version, AccessShareLock);
	prel = OidIsValid(S.provider) ? table_open(S.provider, AccessShareLock) : NULL;
	S.valid = false;

	S.k_key_id = RequireColumn(S.key, "key", "key_id");
	S.k_name = RequireColumn(S.key, "key", "name");
	S.k_kms = RequireColumn(S.key, "key", "kms");
	S.k_current = RequireColumn(S.key, "key", "current_version");
	S.k_state = RequireColumn(S.key, "key", "state");
	S.k_kms_key = OidIsValid(S.provider) ? RequireColumn(S.key, "key", "kms_key") : InvalidAttrNumber;
	S.v_wrapped = RequireColumn(S.version, "key_version", "wrapped_dek");
	S.v_state = RequireColumn(S.version, "key_version", "state");
	S.v_epoch = get_attnum(S.version, "server_epoch");
	S.has_epoch = S.v_epoch != InvalidAttrNumber;
	S.k_family = get_attnum(S.key, "family");
	S.k_parent = get_attnum(S.key, "parent_id");
	S.v_wrapped_by = get_attnum(S.version, "wrapped_by");
	S.has_families = S.k_family != InvalidAttrNumber && S.k_parent != InvalidAttrNumber &&
		S.v_wrapped_by != InvalidAttrNumber;

	cols[0] = S.k_name;
	FindLookup(krel, 1, cols, texteq, texteqproc, &S.key_by_name);
	cols[0] = S.k_key_id;
	FindLookup(krel, 1, cols, int4eq, int4eqproc, &S.key_by_id);
	cols[0] = RequireColumn(S.version, "key_version", "key_id");
	cols[1] = RequireColumn(S.version, "key_version", "version");
	FindLookup(vrel, 2, cols, int4eq, int4eqproc, &S.version_by_id);
	if (prel != NULL)
	{
		S.p_type = RequireColumn(S.provider, "kms_provider", "type");
		S.p_options = RequireColumn(S.provider, "kms_provider", "options");
		cols[0] = RequireColumn(S.provider, "kms_provider", "name");
		FindLookup(prel, 1, cols, texteq, texteqproc, &S.provider_by_name);
		table_close(prel, NoLock);
	}
	table_close(krel, NoLock);
	table_close(vrel, NoLock);
	S.valid = true;
}

/*
 * The one row of rel whose lookup columns equal values[] (all lookups here
 * are on unique columns), or NULL; a copy in the current memory context.
 */
static HeapTuple
FetchOne(Relation rel, const Lookup *lk, const Datum *values, Snapshot snap)
{
	ScanKeyData keys[2];
	SysScanDesc scan;
	HeapTuple	tup;

	for (int i = 0; i < lk->nkeys; i++)
		ScanKeyEntryInitialize(&keys[i], 0, lk->attno[i], BTEqualStrategyNumber,
							   InvalidOid, lk->collation[i], lk->proc[i], values[i]);
	scan = systable_beginscan(rel, lk->index, OidIsValid(lk->index), snap, lk->nkeys, keys);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		tup = heap_copytuple(tup);
	systable_endscan(scan);
	return tup;
}

static char *
GetText(HeapTuple tup, Relation rel, AttrNumber attno)
{
	bool		isnull;
	Datum		d = heap_getattr(tup, attno, RelationGetDescr(rel), &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

void
KsKeyScanRow(const char *name, uint32 key_id, uint32 version, KsKeyRow *row)
{
	Relation	krel,
				vrel,
				prel = NULL;
	Snapshot	snap;
	bool		registered = false;
	HeapTuple	ktup,
				vtup = NULL,
				ptup = NULL;
	Datum		values[2];
	bool		isnull;
	char	   *state;
	uint32		want;

	memset(row, 0, sizeof(*row));

	/*
	 * The trust check KsOwnerSpiBegin makes; then open the tables, which
	 * takes in pending invalidations, and resolve again if they changed.
	 */
	for (;;)
	{
		Oid			key = KsKeyTableOid();

		if (!S.valid || S.key != key)
			Resolve();
		krel = table_open(S.key, AccessShareLock);
		vrel = table_open(S.version, AccessShareLock);
		prel = OidIsValid(S.provider) ? table_open(S.provider, AccessShareLock) : NULL;
		if (S.valid && RelationGetRelid(krel) == KsKeyTableOid())
			break;
		table_close(krel, NoLock);
		table_close(vrel, NoLock);
		if (prel)
			table_close(prel, NoLock);
	}

	if (IsInParallelMode())
		snap = GetActiveSnapshot();
	else
	{
		CommandCounterIncrement();
		snap = RegisterSnapshot(GetTransactionSnapshot());
		registered = true;
	}

	if (name != NULL)
	{
		values[0] = CStringGetTextDatum(name);
		ktup = FetchOne(krel, &S.key_by_name, values, snap);
	}
	else
	{
		values[0] = Int32GetDatum((int32) key_id);
		ktup = FetchOne(krel, &S.key_by_id, values, snap);
	}
	if (ktup != NULL && prel != NULL)
	{
		values[0] = heap_getattr(ktup, S.k_kms, RelationGetDescr(krel), &isnull);
		ptup = isnull ? NULL : FetchOne(prel, &S.provider_by_name, values, snap);
		if (ptup == NULL)
			ktup = NULL;		/* the SQL joined the provider: no row */
	}
	if (ktup != NULL)
	{
		want = name != NULL ?
			(uint32) DatumGetInt32(heap_getattr(ktup, S.k_current, RelationGetDescr(krel), &isnull)) :
			version;
		values[0] = heap_getattr(ktup, S.k_key_id, RelationGetDescr(krel), &isnull);
		values[1] = Int32GetDatum((int32) want);
		vtup = FetchOne(vrel, &S.version_by_id, values, snap);

		row->found_key = true;
		row->key_id = (uint32) DatumGetInt32(values[0]);
		row->version = want;
		row->name = GetText(ktup, krel, S.k_name);
		row->kms = GetText(ktup, krel, S.k_kms);
		state = GetText(ktup, krel, S.k_state);
		row->key_destroyed = state != NULL && strcmp(state, KsKeyStateNames[KS_KEY_DESTROYED]) == 0;
		if (prel != NULL)
		{
			Datum		d;

			row->kms_key = GetText(ktup, krel, S.k_kms_key);
			row->kms_type = GetText(ptup, prel, S.p_type);
			d = heap_getattr(ptup, S.p_options, RelationGetDescr(prel), &isnull);
			if (!isnull)
			{
				Jsonb	   *jb = DatumGetJsonbP(d);

				row->kms_options = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
			}
		}
		else
		{
			row->kms_key = NULL;
			row->kms_type = pstrdup("local");
			row->kms_options = pstrdup("{}");
		}
		row->has_epoch = S.has_epoch;
		if (S.has_families)
		{
			Datum		d = heap_getattr(ktup, S.k_family, RelationGetDescr(krel), &isnull);

			row->family = !isnull && DatumGetBool(d);
			d = heap_getattr(ktup, S.k_parent, RelationGetDescr(krel), &isnull);
			row->parent_id = isnull ? 0 : (uint32) DatumGetInt32(d);
		}
		if (vtup != NULL)
		{
			Datum		d = heap_getattr(vtup, S.v_wrapped, RelationGetDescr(vrel), &isnull);

			row->version_state = GetText(vtup, vrel, S.v_state);
			if (!isnull)
			{
				row->found_version = true;
				row->wrapped = DatumGetByteaPCopy(d);
			}
			if (S.has_epoch)
				row->server_epoch = GetText(vtup, vrel, S.v_epoch);
			if (S.has_families)
			{
				d = heap_getattr(vtup, S.v_wrapped_by, RelationGetDescr(vrel), &isnull);
				row->wrapped_by = isnull ? 0 : (uint32) DatumGetInt32(d);
			}
		}
	}

	if (registered)
		UnregisterSnapshot(snap);
	table_close(krel, NoLock);
	table_close(vrel, NoLock);
	if (prel)
		table_close(prel, NoLock);
}

bool
KsKeyScanHasFamilies(void)
{
	if (!S.valid || S.key != KsKeyTableOid())
		Resolve();
	return S.has_families;
}
