/*
 * extension/keys/family.c
 *
 * Key families: a family is a key whose DEK versions seal other keys' DEKs
 * (its members') and never a value; members are plain keys to every user
 * (encrypt_value, decrypt_value, grants, destroy_key) except that their
 * DEK versions are wrapped here, by the family's current DEK version, in
 * the keysmith ciphertext format (kms/envelope.h: header naming the family
 * version, random nonce, the member binding of key_store.c as context).
 * So the KMS sees one unwrap per family version per cache TTL whatever the
 * number of members, and creating a member costs no KMS call.
 *
 * Nonces: every member wrap is one encryption under the family version and
 * is counted on that version's counter (counters.c), exactly like a value,
 * so a family version never seals more than keysmith.max_encryptions_per_dek
 * DEKs; a family whose count is unknown (after a crash, on a promoted
 * standby) rolls over before it wraps, like any key.
 *
 * Concurrency: wrapping a member holds the family row FOR SHARE until the
 * transaction ends (KsFamilyReserve), and rotating a family, which rewraps
 * every member under the new version, locks it FOR UPDATE.  So the rewrap
 * sees every member version that exists, and no member can be wrapped by a
 * family version that complete_shreds is about to destroy.  Two
 * transactions that each wrapped members and then both need the family to
 * roll over (its count unknown or full) wait on each other; PostgreSQL's
 * deadlock check cancels one (40P01), which may simply run again.
 *
 * Shredding: destroying a member's version erases its wrapped DEK, but
 * copies of that row survive (dead tuples, WAL, backups, dumps), each
 * sealed by the family version of its time.  keysmith.key_shred records
 * each erased version with the family version that wrapped it last; the
 * copies are unreadable once every family version up to that one is
 * destroyed, which complete_shreds does after rewrapping the surviving
 * members (families.c, docs/key-rotation.md).
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "extension/common/catalog.h"
#include "extension/common/errors.h"
#include "extension/common/guc.h"
#include "extension/keys/counters.h"
#include "extension/keys/dek_cache.h"
#include "extension/keys/family.h"
#include "extension/keys/key_lifecycle.h"
#include "extension/keys/key_store.h"
#include "kms/envelope.h"

#define REWRAP_BATCH 4096

/* The member's wrapped DEK: a keysmith ciphertext of the 32 DEK bytes. */
#define MEMBER_WRAPPED_LEN (KS_OVERHEAD + KS_DEK_LEN)

static KsContext
MemberContext(const char *name, int32 version, uint8 *buf)
{
	KsContext	ctx;

	ctx.present = true;
	ctx.data = buf;
	ctx.len = KsMemberBinding(name, (uint32) version, buf, KS_MEMBER_BINDING_MAX);
	if (ctx.len == 0)
		elog(ERROR, "key name too long for binding");
	return ctx;
}

/* Seal dek for member (name, version) under family version pv. */
static bytea *
SealMember(int32 parent_id, int32 pv, const char *name, int32 version, const uint8 *dek)
{
	uint8		binding[KS_MEMBER_BINDING_MAX];
	KsContext	ctx = MemberContext(name, version, binding);
	KsHeader	hdr;
	KsError		err;
	KsDek	   *family = KsDekForDecrypt((uint32) parent_id, (uint32) pv, KS_PRIV_NONE);
	bytea	   *result;

	hdr.format_version = KS_FORMAT_VERSION;
	hdr.algorithm = KS_ALG_AES256GCM;
	hdr.key_id = (uint32) parent_id;
	hdr.key_version = (uint32) pv;
	if (KsNextNonce(hdr.nonce, &err) != KS_OK)
		KsReportError(&err);
	result = (bytea *) palloc(VARHDRSZ + MEMBER_WRAPPED_LEN);
	SET_VARSIZE(result, VARHDRSZ + MEMBER_WRAPPED_LEN);
	if (KsAeadSeal(family->aead, &hdr, &ctx, dek, KS_DEK_LEN, (uint8 *) VARDATA(result), &err) != KS_OK)
		KsReportError(&err);
	return result;
}

/* Open a member's wrapped DEK (sealed by one of its family's versions) into dek. */
static void
OpenMember(int32 parent_id, const char *name, int32 version, const bytea *wrapped, uint8 *dek)
{
	KsHeader	hdr;
	KsDek	   *family;

	KsMemberParse(name, (uint32) version, (uint32) parent_id, wrapped, &hdr);
	family = KsDekForDecrypt((uint32) parent_id, hdr.key_version, KS_PRIV_NONE);
	KsMemberOpen(family->aead, family->name, &hdr, name, (uint32) version, wrapped, dek);
}

/* The family row: its current version; FOR SHARE when lock. */
static int32
ReadFamily(int32 parent_id, bool lock)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(parent_id)};
	bool		isnull;
	HeapTuple	tup;
	TupleDesc	desc;

	KsKeyExec(lock ?
			  "SELECT current_version, family, state OPERATOR(pg_catalog.=) " KS_KEY_DESTROYED_SQL ", name"
			  "  FROM keysmith.key WHERE key_id OPERATOR(pg_catalog.=) $1 FOR SHARE" :
			  "SELECT current_version, family, state OPERATOR(pg_catalog.=) " KS_KEY_DESTROYED_SQL ", name"
			  "  FROM keysmith.key WHERE key_id OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		elog(ERROR, "key family %d vanished", parent_id);
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	if (!DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_KS_KEY_FAMILY),
				 errmsg("key \"%s\" is not a key family", SPI_getvalue(tup, desc, 4))));
	if (DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_KS_KEY_DESTROYED),
				 errmsg("key family \"%s\" has been destroyed", SPI_getvalue(tup, desc, 4))));
	return DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
}

int32
KsFamilyReserve(int32 parent_id, int64 n)
{
	int			stalled = 0;

	/* n counts under one family version: more than one version may hold never fit */
	if ((double) n > keysmith_max_encryptions_per_dek)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%lld members at once need as many encryptions under one version of their family, more"
						" than keysmith.max_encryptions_per_dek (%.0f)", (long long) n,
						keysmith_max_encryptions_per_dek),
				 errhint("Create fewer members per call.")));

	for (;;)
	{
		int32		pv = ReadFamily(parent_id, false);
		KsDek	   *family = KsDekForDecrypt((uint32) parent_id, (uint32) pv, KS_PRIV_NONE);
		KsCountResult r = KS_COUNT_OK;

		for (int64 i = 0; i < n && r == KS_COUNT_OK; i++)
			r = KsCounterTake(parent_id, pv, &family->counter);
		if (r == KS_COUNT_OK)
		{
			/* the version counted is still current once the row is held */
			if (ReadFamily(parent_id, true) == pv)
				return pv;
			continue;
		}
		if (stalled >= 3)
			ereport(ERROR,
					(errcode(ERRCODE_KS_KMS_FAILURE),
					 errmsg("key family %d could not roll over to a new version", parent_id)));
		CHECK_FOR_INTERRUPTS();
		KsRollover(parent_id, pv, r == KS_COUNT_FULL ? KS_ROLLOVER_LIMIT : KS_ROLLOVER_COUNT_UNKNOWN);
		stalled = ReadFamily(parent_id, false) > pv ? 0 : stalled + 1;
	}
}

bytea *
KsFamilyWrapNew(int32 parent_id, int32 parent_version, const char *name, int32 version)
{
	uint8		dek[KS_DEK_LEN];
	KsError		err;
	bytea	   *volatile wrapped = NULL;

	if (KsRandomBytes(dek, sizeof(dek), &err) != KS_OK)
		KsReportError(&err);
	PG_TRY();
	{
		wrapped = SealMember(parent_id, parent_version, name, version, dek);
	}
	PG_CATCH();
	{
		KsWipe(dek, sizeof(dek));
		PG_RE_THROW();
	}
	PG_END_TRY();
	KsWipe(dek, sizeof(dek));
	return wrapped;
}

/* The key store's member wrap (KsKeyStoreOnMemberWrap): one member version. */
static bytea *
WrapMember(int32 parent_id, const char *name, int32 version, int32 *wrapped_by)
{
	int32		pv = KsFamilyReserve(parent_id, 1);

	*wrapped_by = pv;
	return KsFamilyWrapNew(parent_id, pv, name, version);
}

void
KsFamilyInit(void)
{
	KsKeyStoreOnMemberWrap(WrapMember);
}

/* One fetched member version, copied out of SPI's result. */
typedef struct MemberVersion
{
	int32		key_id;
	int32		version;
	char	   *name;
	bytea	   *wrapped;
} MemberVersion;

static void
StoreRewrapped(int32 pv, MemberVersion *mv, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *vers = palloc(sizeof(Datum) * n);
	Datum	   *blobs = palloc(sizeof(Datum) * n);
	Oid			types[4] = {INT4ARRAYOID, INT4ARRAYOID, BYTEAARRAYOID, INT4OID};
	Datum		values[4];

	for (int i = 0; i < n; i++)
	{
		ids[i] = Int32GetDatum(mv[i].key_id);
		vers[i] = Int32GetDatum(mv[i].version);
		blobs[i] = PointerGetDatum(mv[i].wrapped);
	}
	values[0] = PointerGetDatum(construct_array(ids, n, INT4OID, 4, true, TYPALIGN_INT));
	values[1] = PointerGetDatum(construct_array(vers, n, INT4OID, 4, true, TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(blobs, n, BYTEAOID, -1, false, TYPALIGN_INT));
	values[3] = Int32GetDatum(pv);
	KsKeyExec("UPDATE keysmith.key_version v SET wrapped_dek = u.w, wrapped_by = $4"
			  "  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) AS u(k, ver, w)"
			  " WHERE v.key_id OPERATOR(pg_catalog.=) u.k AND v.version OPERATOR(pg_catalog.=) u.ver",
			  4, types, values, NULL, SPI_OK_UPDATE);
	if (SPI_processed != (uint64) n)
		elog(ERROR, "keysmith: rewrapped %d member versions but stored " UINT64_FORMAT, n, SPI_processed);
}

/* A member version's DEK, opened under its family version and sealed under the current one. */
static bytea *
RewrapOne(KsKeyRec *family, const char *name, int32 version, const bytea *wrapped)
{
	uint8		dek[KS_DEK_LEN];
	bytea	   *volatile result = NULL;

	PG_TRY();
	{
		OpenMember(family->key_id, name, version, wrapped, dek);
		result = SealMember(family->key_id, family->current_version, name, version, dek);
	}
	PG_CATCH();
	{
		KsWipe(dek, sizeof(dek));
		PG_RE_THROW();
	}
	PG_END_TRY();
	KsWipe(dek, sizeof(dek));
	return result;
}

int64
KsFamilyRewrapMembers(KsKeyRec *family)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2] = {Int32GetDatum(family->key_id), Int32GetDatum(family->current_version)};
	Portal		portal;
	int64		total = 0;
	MemoryContext batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "keysmith rewrap batch",
													ALLOCSET_DEFAULT_SIZES);
	MemberVersion *mv = palloc(sizeof(MemberVersion) * REWRAP_BATCH);

	KsKeyRequireReadCommitted("rewrap the members of a key family");
	portal = SPI_cursor_open_with_args(NULL,
									   "SELECT v.key_id, v.version, k.name, v.wrapped_dek"
									   "  FROM keysmith.key k"
									   "  JOIN keysmith.key_version v ON v.key_id OPERATOR(pg_catalog.=) k.key_id"
									   " WHERE k.parent_id OPERATOR(pg_catalog.=) $1"
									   "   AND v.wrapped_dek IS NOT NULL"
									   "   AND v.wrapped_by OPERATOR(pg_catalog.<>) $2",
									   2, types, values, NULL, false, 0);
	for (;;)
	{
		MemoryContext old;
		int			n;

		SPI_cursor_fetch(portal, true, REWRAP_BATCH);
		n = (int) SPI_processed;
		if (n == 0)
			break;
		MemoryContextReset(batch_cxt);
		old = MemoryContextSwitchTo(batch_cxt);
		for (int i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			KsDek	   *cur;

			mv[i].key_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
			mv[i].version = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
			mv[i].name = SPI_getvalue(tup, desc, 3);
			cur = KsDekForDecrypt((uint32) family->key_id, (uint32) family->current_version, KS_PRIV_NONE);
			if (KsCounterTake(family->key_id, family->current_version, &cur->counter) != KS_COUNT_OK)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("version %d of key family \"%s\" reached keysmith.max_encryptions_per_dek while rewrapping its members",
								family->current_version, family->name),
						 errhint("A family version seals at most keysmith.max_encryptions_per_dek member keys; raise it (up to 2^32).")));
			mv[i].wrapped = RewrapOne(family, mv[i].name, mv[i].version,
									  DatumGetByteaPP(SPI_getbinval(tup, desc, 4, &isnull)));
		}
		MemoryContextSwitchTo(old);
		StoreRewrapped(family->current_version, mv, n);
		total += n;
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(batch_cxt);
	pfree(mv);
	return total;
}

bool
KsFamilyHasLiveMembers(int32 family_id)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(family_id)};
	bool		isnull;

	KsKeyExec("SELECT EXISTS (SELECT 1 FROM keysmith.key WHERE parent_id OPERATOR(pg_catalog.=) $1"
			  "   AND state OPERATOR(pg_catalog.<>) " KS_KEY_DESTROYED_SQL ")",
			  1, types, values, NULL, SPI_OK_SELECT);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

void
KsFamilyRecordShreds(int32 key_id, int32 version)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2] = {Int32GetDatum(key_id), Int32GetDatum(version)};

	if (!KsCatalogHasFamilies())
		return;
	KsKeyExec("INSERT INTO keysmith.key_shred (key_id, version, key_name, parent_id, wrapped_by)"
			  " SELECT v.key_id, v.version, k.name, k.parent_id, v.wrapped_by"
			  "   FROM keysmith.key_version v JOIN keysmith.key k ON k.key_id OPERATOR(pg_catalog.=) v.key_id"
			  "  WHERE v.key_id OPERATOR(pg_catalog.=) $1"
			  "    AND ($2 OPERATOR(pg_catalog.=) 0 OR v.version OPERATOR(pg_catalog.=) $2)"
			  "    AND v.wrapped_dek IS NOT NULL AND k.parent_id IS NOT NULL AND v.wrapped_by IS NOT NULL"
			  " ON CONFLICT DO NOTHING",
			  2, types, values, NULL, SPI_OK_INSERT);
}
