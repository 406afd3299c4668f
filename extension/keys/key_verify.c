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

#include "extension/common/errors.h"
#include "extension/common/owner_spi.h"
#include "extension/keys/dek_cache.h"
#include "extension/keys/key_acl.h"
#include "extension/keys/key_store.h"
#include "extension/keys/key_verify.h"

PG_FUNCTION_INFO_V1(keysmith_verify_keys);

/* How many of a key's newest live versions a new version's check tries. */
#define LIVE_TRIES 8

/*
 * Open (key_id, version) in a subtransaction: true if it did; else false
 * with the error's SQLSTATE and message.  A cancel or a termination is
 * never swallowed.
 */
static bool
TryUnwrap(uint32 key_id, uint32 version, int *sqlerrcode, char **message)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile bool ok = false;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		(void) KsDekForDecrypt(key_id, version, KS_PRIV_NONE);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED || edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN ||
			edata->sqlerrcode == ERRCODE_OUT_OF_MEMORY)
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		*sqlerrcode = edata->sqlerrcode;
		*message = edata->message;
	}
	PG_END_TRY();
	return ok;
}

/*
 * The key store's check before a new DEK version of rec (see the top of
 * this file).  A failure other than a contradiction (a KMS that does not
 * answer, a missing master key version) is raised as it is: no version
 * is made then either.
 */
static void
RequireLiveVersion(KsKeyRec *rec)
{
	uint64		n;
	SPITupleTable *tt;
	int			tries = 0;
	bool		contradicted = false;
	int			first_code = 0;
	char	   *first_message = NULL;

	if (rec->parent_id != 0)
		return;					/* a member's new version needs its family's DEK anyway */
	tt = KsKeyLiveVersions(rec, &n);
	for (uint64 i = n; i > 0 && tries < LIVE_TRIES; i--, tries++)
	{
		bool		isnull;
		int32		version = DatumGetInt32(SPI_getbinval(tt->vals[i - 1], tt->tupdesc, 1, &isnull));
		int			code = 0;
		char	   *message = NULL;

		if (TryUnwrap((uint32) rec->key_id, (uint32) version, &code, &message))
			return;
		if (code == ERRCODE_KS_UNWRAP_FAILED || code == ERRCODE_KS_WRONG_KEK)
			contradicted = true;
		if (first_message == NULL)
		{
			first_code = code;
			first_message = message;
		}
	}
	if (tries == 0)
		return;					/* nothing live to contradict */
	if (contradicted)
		ereport(ERROR,
				(errcode(ERRCODE_KS_WRONG_KEK),
				 errmsg("key \"%s\" gets no new version: none of its live versions opens with the key material"
						" of KMS provider \"%s\" at hand", rec->name, rec->kms),
				 errdetail("%d version(s) tried, newest first.  A version made now would be wrapped under a key"
						   " that contradicts them, and leave them unreachable once the right key is back.", tries),
				 errhint("Is the master key file (or KMS key) the one this database was made with?"
						 "  keysmith.verify_keys() lists which keys open.")));
	ereport(ERROR,
			(errcode(first_code),
			 errmsg("key \"%s\" gets no new version: its current versions cannot be opened: %s", rec->name,
					first_message)));
}

void
KsKeyVerifyKmsKey(const char *kms, const char *kms_key)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(kms), CStringGetTextDatum(kms_key ? kms_key : "")};
	KsOwnerSpi	spi;
	SPITupleTable *tt;
	uint64		n;
	bool		contradicted = false;

	/* any rows will do, so no ORDER BY: the scan stops at the first few */
	KsOwnerSpiBegin(&spi);
	KsSpiExec("SELECT v.key_id, v.version FROM keysmith.key_version v"
			  "  JOIN keysmith.key k ON k.key_id OPERATOR(pg_catalog.=) v.key_id"
			  " WHERE k.kms OPERATOR(pg_catalog.=) $1 AND COALESCE(k.kms_key, '') OPERATOR(pg_catalog.=) $2"
			  "   AND k.parent_id IS NULL AND v.wrapped_dek IS NOT NULL"
			  " LIMIT " CppAsString2(LIVE_TRIES),
			  2, types, values, NULL, false, 0, SPI_OK_SELECT);
	tt = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		int32		key_id = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		int32		version = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
		int			code = 0;
		char	   *message = NULL;

		if (TryUnwrap((uint32) key_id, (uint32) version, &code, &message))
		{
			KsOwnerSpiEnd(&spi);
			return;
		}
		/* the KMS answered, and not with the key: another one of the same name */
		if (code == ERRCODE_KS_UNWRAP_FAILED || code == ERRCODE_KS_KMS_BAD_RESPONSE ||
			code == ERRCODE_KS_KEK_VERSION_UNKNOWN)
			contradicted = true;
	}
	KsOwnerSpiEnd(&spi);
	if (contradicted)
		ereport(ERROR,
				(errcode(ERRCODE_KS_WRONG_KEK),
				 errmsg("KMS provider \"%s\"%s%s holds other key material than the one this database's data keys"
						" were wrapped under; nothing was wrapped", kms, kms_key ? " key " : "", kms_key ? kms_key : ""),
				 errdetail("None of the data keys under it that were tried (%d) opens.", (int) n),
				 errhint("Is it the KMS (and key) this database was made with, or one of the same name?"
						 "  keysmith.verify_keys() lists which keys open.")));
}

void
KsKeyVerifyInit(void)
{
	KsKeyStoreBeforeNewVersion(RequireLiveVersion);
	KsKeyStoreBeforeWrap(KsKeyVerifyKmsKey);
}

/* ------------------------------------------------------------ verify_keys */

typedef struct FailedFamily
{
	uint32		parent_id;
	uint32		wrapped_by;
} FailedFamily;

/*
 * keysmith.verify_keys(key_name text DEFAULT NULL) RETURNS SETOF (key_name,
 * version, kms, kek_version, readable, sqlstate, reason)
 *
 * One row per live DEK version of the keys the caller administers: one
 * unwrap each, with the caller's DEK cache flushed first, each in its own
 * subtransaction and memory context.  A member of a family version that
 * did not open is reported without a try (a million members cost one).
 * For external KMSs, a version another backend unwrapped within
 * keysmith.dek_cache_ttl may be answered from the cluster's shared cache.
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
	List	   *failed = NIL;

	InitMaterializedSRF(fcinfo, 0);
	outer = CurrentMemoryContext;
	(void) KsDekCacheFlush();
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
		bool		skipped = false;
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
		foreach(lc, failed)
		{
			FailedFamily *f = lfirst(lc);

			if (parent_id != 0 && f->parent_id == parent_id && f->wrapped_by == wrapped_by)
				skipped = true;
		}
		if (skipped)
		{
			code = ERRCODE_KS_UNWRAP_FAILED;
			message = psprintf("its family's version %u does not open (reported above)", wrapped_by);
		}
		else
			ok = TryUnwrap((uint32) key_id, (uint32) version, &code, &message);
		if (!ok && family)
		{
			/* a family's version that fails takes its members with it */
			MemoryContext o2 = MemoryContextSwitchTo(outer);
			FailedFamily *f = palloc(sizeof(FailedFamily));

			f->parent_id = (uint32) key_id;
			f->wrapped_by = (uint32) version;
			failed = lappend(failed, f);
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
