/*
 * extension/keys/key_verify.c
 *
 * No rollover onto a key the existing versions contradict.  Before a key
 * gets a new DEK version (rotate_dek, the rollover at the encryption limit
 * or onto a new server history, a family's complete_shreds), one of its
 * live versions must open with the key material at hand, newest first.  If
 * none authenticates, the new version would be wrapped under a key that
 * contradicts every existing one and would make them unreachable once the
 * right key material is back: KS019, nothing made.  This holds for every
 * provider, including those that record no check value (kek_check.c).
 *
 * And the restore check, keysmith.verify_keys(): one unwrap per live DEK
 * version of the keys the caller administers, reporting which open and why
 * the others do not.
 *
 * The key store calls the new-version check through a hook it is given
 * here (KsKeyStoreBeforeNewVersion), as it calls the family's member wrap:
 * the store does not call up into the DEK cache.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "extension/common/catalog.h"
#include "extension/common/errors.h"
#include "extension/common/owner_spi.h"
#include "extension/keys/dek_cache.h"
#include "extension/keys/key_acl.h"
#include "extension/keys/key_store.h"
#include "extension/keys/key_verify.h"

PG_FUNCTION_INFO_V1(keysmith_verify_keys);

/* How many data keys a check tries before it gives up deciding. */
#define LIVE_TRIES 8

/* What one try of a data key says about the key material at hand. */
typedef enum TryResult
{
	TRY_OPENS,					/* it is the material the DEK was wrapped under */
	TRY_CONTRADICTS,			/* the KMS answered, and not with that material */
	TRY_UNDECIDED				/* no answer either way: unavailable, denied, ... */
} TryResult;

/*
 * Open (key_id, version) through its KMS now (KsDekProbe: no cached DEK
 * vouches) in a subtransaction.  On failure, the error's SQLSTATE and
 * message.  A cancel, a termination or out-of-memory is raised again once
 * the subtransaction is rolled back, never swallowed.
 */
static TryResult
TryUnwrap(uint32 key_id, uint32 version, bool probe_family, int *sqlerrcode, char **message)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile TryResult result = TRY_OPENS;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		KsDekProbe(key_id, version, probe_family);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			code;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		code = edata->sqlerrcode;
		if (code == ERRCODE_QUERY_CANCELED || code == ERRCODE_ADMIN_SHUTDOWN || code == ERRCODE_OUT_OF_MEMORY)
			ReThrowError(edata);
		*sqlerrcode = code;
		*message = edata->message;
		/* the KMS answered, and not with the key: another one of the same name */
		result = (code == ERRCODE_KS_UNWRAP_FAILED || code == ERRCODE_KS_WRONG_KEK ||
				  code == ERRCODE_KS_KMS_BAD_RESPONSE || code == ERRCODE_KS_KEK_VERSION_UNKNOWN)
			? TRY_CONTRADICTS : TRY_UNDECIDED;
	}
	PG_END_TRY();
	return result;
}

/*
 * The key store's check before a new DEK version of rec (see the top of
 * this file).  Its live versions are tried oldest first, and the first
 * that decides (opens, or is contradicted) decides: in a database where an
 * earlier mistake left a newer version under other material, the oldest
 * speaks for the material the key was made with.  When none decides (a
 * KMS that does not answer), the first error is raised as it is: no
 * version is made then either.
 */
static void
RequireLiveVersion(KsKeyRec *rec)
{
	uint64		n;
	SPITupleTable *tt;
	int			tries = 0;
	int			first_code = 0;
	char	   *first_message = NULL;

	if (rec->parent_id != 0)
		return;					/* a member's new version needs its family's DEK anyway */
	tt = KsKeyLiveVersions(rec, &n);
	for (uint64 i = 0; i < n && tries < LIVE_TRIES; i++, tries++)
	{
		bool		isnull;
		int32		version = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		int			code = 0;
		char	   *message = NULL;
		TryResult	r = TryUnwrap((uint32) rec->key_id, (uint32) version, false, &code, &message);

		if (r == TRY_OPENS)
			return;
		if (r == TRY_CONTRADICTS)
			ereport(ERROR,
					(errcode(ERRCODE_KS_WRONG_KEK),
					 errmsg("key \"%s\" gets no new version: its versions do not open with the key material"
							" of KMS provider \"%s\" at hand", rec->name, rec->kms),
					 errdetail("Its oldest live version that could be tried (%d) does not open.  A version made now"
							   " would be wrapped under material that contradicts it, and leave the key's values"
							   " unreachable once the right material is back.", version),
					 errhint("Is the master key file (or KMS key) the one this database was made with?"
							 "  keysmith.verify_keys() lists which keys open.")));
		if (first_message == NULL)
		{
			first_code = code;
			first_message = message;
		}
	}
	if (tries == 0)
		return;					/* nothing live to contradict */
	ereport(ERROR,
			(errcode(first_code),
			 errmsg("key \"%s\" gets no new version: its current versions cannot be opened: %s", rec->name,
					first_message)));
}

/*
 * The data keys of this database under (kms, kms_key), or, when there are
 * none, under any KMS key of that provider (a wrong KMS server answers for
 * all its keys alike), oldest first: (key_id, version) rows.
 */
static SPITupleTable *
DataKeysUnder(const char *kms, const char *kms_key, bool any_kms_key, uint64 *n)
{
	Oid			types[3] = {TEXTOID, TEXTOID, BOOLOID};
	Datum		values[3] = {CStringGetTextDatum(kms), CStringGetTextDatum(kms_key ? kms_key : ""),
	BoolGetDatum(any_kms_key)};

	/*
	 * members (0.11 on) are wrapped by their family, not by a KMS; before
	 * 0.7 there is no kms_key column: every key is under the one local
	 * master key file
	 */
	KsSpiExec(KsCatalogHasFamilies() ?
			  "SELECT v.key_id, v.version FROM keysmith.key k"
			  "  JOIN keysmith.key_version v ON v.key_id OPERATOR(pg_catalog.=) k.key_id"
			  " WHERE k.kms OPERATOR(pg_catalog.=) $1"
			  "   AND ($3 OR COALESCE(k.kms_key, '') OPERATOR(pg_catalog.=) $2)"
			  "   AND k.parent_id IS NULL AND v.wrapped_dek IS NOT NULL"
			  " ORDER BY k.key_id, v.version LIMIT " CppAsString2(LIVE_TRIES) :
			  KsKmsCatalogHasProviders() ?
			  "SELECT v.key_id, v.version FROM keysmith.key k"
			  "  JOIN keysmith.key_version v ON v.key_id OPERATOR(pg_catalog.=) k.key_id"
			  " WHERE k.kms OPERATOR(pg_catalog.=) $1"
			  "   AND ($3 OR COALESCE(k.kms_key, '') OPERATOR(pg_catalog.=) $2)"
			  "   AND v.wrapped_dek IS NOT NULL"
			  " ORDER BY k.key_id, v.version LIMIT " CppAsString2(LIVE_TRIES) :
			  "SELECT v.key_id, v.version FROM keysmith.key k"
			  "  JOIN keysmith.key_version v ON v.key_id OPERATOR(pg_catalog.=) k.key_id"
			  " WHERE k.kms OPERATOR(pg_catalog.=) $1"	/* $2, $3: no kms_key before 0.7 */
			  "   AND v.wrapped_dek IS NOT NULL"
			  " ORDER BY k.key_id, v.version LIMIT " CppAsString2(LIVE_TRIES),
			  3, types, values, NULL, false, 0, SPI_OK_SELECT);
	*n = SPI_processed;
	return SPI_tuptable;
}

void
KsKeyVerifyKmsKey(const char *kms, const char *kms_key)
{
	KsOwnerSpi	spi;
	SPITupleTable *tt;
	uint64		n;
	int			first_code = 0;
	char	   *first_message = NULL;

	KsOwnerSpiBegin(&spi);
	tt = DataKeysUnder(kms, kms_key, false, &n);
	if (n == 0)
		tt = DataKeysUnder(kms, kms_key, true, &n);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		int32		key_id = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		int32		version = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
		int			code = 0;
		char	   *message = NULL;
		TryResult	r = TryUnwrap((uint32) key_id, (uint32) version, false, &code, &message);

		if (r == TRY_OPENS)
		{
			KsOwnerSpiEnd(&spi);
			return;
		}
		if (r == TRY_CONTRADICTS)
			ereport(ERROR,
					(errcode(ERRCODE_KS_WRONG_KEK),
					 errmsg("KMS provider \"%s\" holds other key material than the one this database's data keys"
							" were wrapped under; nothing was wrapped", kms),
					 errdetail_log("KMS key \"%s\": the oldest data key under it that could be tried (key id %d,"
								   " version %d) does not open: %s", kms_key ? kms_key : "", key_id, version, message),
					 errhint("Is it the KMS (and key) this database was made with, or one of the same name?"
							 "  keysmith.verify_keys() lists which keys open.")));
		if (first_message == NULL)
		{
			first_code = code;
			first_message = message;
		}
	}
	KsOwnerSpiEnd(&spi);
	/* data keys there, none decided (a KMS that does not answer, or denies): fail closed */
	if (n > 0)
		ereport(ERROR,
				(errcode(first_code),
				 errmsg("nothing was wrapped under KMS provider \"%s\": the data keys already under it could not be"
						" opened to check that it holds the right key material: %s", kms, first_message)));
}

void
KsKeyVerifyInit(void)
{
	KsKeyStoreBeforeNewVersion(RequireLiveVersion);
	KsKeyStoreBeforeWrap(KsKeyVerifyKmsKey);
}

/* ------------------------------------------------------------ verify_keys */

/* A family version verify_keys has tried: members under it follow it. */
typedef struct TriedFamily
{
	uint32		parent_id;
	uint32		wrapped_by;
	bool		opens;
} TriedFamily;

/*
 * keysmith.verify_keys(key_name text DEFAULT NULL) RETURNS SETOF (key_name,
 * version, kms, kek_version, readable, sqlstate, reason)
 *
 * One row per live DEK version of the keys the caller administers: one
 * unwrap each through the KMS (KsDekProbe: neither this backend's cached
 * DEK nor the cluster's shared cache answers), each in its own
 * subtransaction and memory context.  Family versions come first; a member
 * of one that did not open is reported without a try, and one of a family
 * version that opened is opened under it without asking the KMS again (a
 * million members cost one KMS call).
 */
Datum
keysmith_verify_keys(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *only = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			types[1] = {TEXTOID};
	Datum		args[1] = {only ? CStringGetTextDatum(only) : (Datum) 0};
	char		nulls[1] = {only ? ' ' : 'n'};
	KsOwnerSpi	spi;
	SPITupleTable *tt;
	uint64		n;
	MemoryContext rowcxt;
	MemoryContext outer;
	Oid			invoker = GetUserId();
	int32		admin_key = -1;
	bool		admin = false;
	List	   *families = NIL;

	InitMaterializedSRF(fcinfo, 0);
	outer = CurrentMemoryContext;
	KsOwnerSpiBegin(&spi);
	KsSpiExec("SELECT k.key_id, k.name, v.version, k.kms, v.kek_version::pg_catalog.text,"
			  "       COALESCE(k.parent_id, 0), COALESCE(v.wrapped_by, 0), k.family"
			  "  FROM keysmith.key k JOIN keysmith.key_version v ON v.key_id OPERATOR(pg_catalog.=) k.key_id"
			  " WHERE v.wrapped_dek IS NOT NULL AND ($1::pg_catalog.text IS NULL OR k.name OPERATOR(pg_catalog.=) $1)"
			  " ORDER BY k.parent_id NULLS FIRST, k.name, v.version",
			  1, types, args, nulls, true, 0, SPI_OK_SELECT);
	tt = SPI_tuptable;
	n = SPI_processed;
	if (only != NULL && n == 0)
	{
		KsSpiExec("SELECT 1 FROM keysmith.key WHERE name OPERATOR(pg_catalog.=) $1",
				  1, types, args, nulls, true, 0, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("key \"%s\" does not exist", only)));
	}
	rowcxt = AllocSetContextCreate(outer, "keysmith verify_keys row", ALLOCSET_SMALL_SIZES);
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = tt->vals[i];
		bool		isnull;
		int32		key_id = DatumGetInt32(SPI_getbinval(tup, tt->tupdesc, 1, &isnull));
		int32		version = DatumGetInt32(SPI_getbinval(tup, tt->tupdesc, 3, &isnull));
		uint32		parent_id = (uint32) DatumGetInt32(SPI_getbinval(tup, tt->tupdesc, 6, &isnull));
		uint32		wrapped_by = (uint32) DatumGetInt32(SPI_getbinval(tup, tt->tupdesc, 7, &isnull));
		bool		family = DatumGetBool(SPI_getbinval(tup, tt->tupdesc, 8, &isnull));
		Datum		values[7];
		bool		vnulls[7] = {false, false, false, false, false, true, true};
		int			code = 0;
		char	   *message = NULL;
		bool		ok = false;
		TriedFamily *under = NULL;
		ListCell   *lc;
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		if (key_id != admin_key)
		{
			admin_key = key_id;
			admin = KsHasKeyPrivilege(key_id, KS_PRIV_ADMIN, invoker);
			if (!admin && only != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("permission denied to verify key \"%s\"", only),
						 errhint("verify_keys checks the keys the caller administers.")));
		}
		if (!admin)
			continue;
		old = MemoryContextSwitchTo(rowcxt);
		foreach(lc, families)
		{
			TriedFamily *f = lfirst(lc);

			if (parent_id != 0 && f->parent_id == parent_id && f->wrapped_by == wrapped_by)
				under = f;
		}
		if (under != NULL && !under->opens)
		{
			code = ERRCODE_KS_UNWRAP_FAILED;
			message = psprintf("its family's version %u does not open", wrapped_by);
		}
		else
			ok = TryUnwrap((uint32) key_id, (uint32) version, parent_id != 0 && under == NULL,
						   &code, &message) == TRY_OPENS;
		if (family || (parent_id != 0 && under == NULL && ok))
		{
			/* what the family version did, for its members */
			MemoryContext o2 = MemoryContextSwitchTo(outer);
			TriedFamily *f = palloc(sizeof(TriedFamily));

			f->parent_id = family ? (uint32) key_id : parent_id;
			f->wrapped_by = family ? (uint32) version : wrapped_by;
			f->opens = ok;
			families = lappend(families, f);
			MemoryContextSwitchTo(o2);
		}
		values[0] = CStringGetTextDatum(SPI_getvalue(tup, tt->tupdesc, 2));
		values[1] = Int32GetDatum(version);
		values[2] = CStringGetTextDatum(SPI_getvalue(tup, tt->tupdesc, 4));
		values[3] = CStringGetTextDatum(SPI_getvalue(tup, tt->tupdesc, 5));
		values[4] = BoolGetDatum(ok);
		if (!ok)
		{
			values[5] = CStringGetTextDatum(unpack_sql_state(code));
			values[6] = CStringGetTextDatum(message ? message : "");
			vnulls[5] = vnulls[6] = false;
		}
		MemoryContextSwitchTo(old);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, vnulls);
		MemoryContextReset(rowcxt);
	}
	KsOwnerSpiEnd(&spi);
	return (Datum) 0;
}
