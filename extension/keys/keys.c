/*
 * extension/keys/keys.c
 *
 * Key lifecycle, as SQL-callable functions: create_key, rotate_dek,
 * rotate_kek, retire/restore/destroy of versions, destroy_key, per-key
 * grants, automatic rollover, and the local provider's master-key helpers.
 *
 * Every function captures the calling user first (for the per-key admin
 * check and the audit row), then works on the key tables as their owner
 * through SPI, locking the key row so concurrent lifecycle calls on one key
 * serialise.  Each change sends a relcache invalidation on keysmith.key, so
 * every backend of the database drops its cached DEKs and privilege memos
 * at its next transaction.  KMS work (wrapping) happens before any write, so
 * a KMS failure leaves the tables untouched.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"

#include "extension/common/args.h"
#include "extension/common/catalog.h"
#include "extension/common/errors.h"
#include "extension/common/guc.h"
#include "extension/common/owner_spi.h"
#include "extension/common/secret_mem.h"
#include "extension/keys/counters.h"
#include "extension/keys/dek_cache.h"
#include "extension/keys/dek_shared.h"
#include "extension/keys/family.h"
#include "extension/keys/kek_check.h"
#include "extension/keys/key_acl.h"
#include "extension/keys/key_lifecycle.h"
#include "extension/keys/key_store.h"
#include "extension/keys/key_verify.h"
#include "extension/keys/kms_instance.h"
#include "kms/local.h"

PG_FUNCTION_INFO_V1(keysmith_create_key);
PG_FUNCTION_INFO_V1(keysmith_create_key_family);
PG_FUNCTION_INFO_V1(keysmith_create_keys);
PG_FUNCTION_INFO_V1(keysmith_rotate_dek);
PG_FUNCTION_INFO_V1(keysmith_rotate_kek);
PG_FUNCTION_INFO_V1(keysmith_migrate_key);
PG_FUNCTION_INFO_V1(keysmith_retire_key_version);
PG_FUNCTION_INFO_V1(keysmith_restore_key_version);
PG_FUNCTION_INFO_V1(keysmith_destroy_key_version);
PG_FUNCTION_INFO_V1(keysmith_destroy_key);
PG_FUNCTION_INFO_V1(keysmith_grant_key);
PG_FUNCTION_INFO_V1(keysmith_revoke_key);
PG_FUNCTION_INFO_V1(keysmith_add_local_master_key);
PG_FUNCTION_INFO_V1(keysmith_local_master_key_versions);
PG_FUNCTION_INFO_V1(keysmith_dek_encryptions);

static void
RequireAdmin(KsKeyOp *op, KsKeyRec *rec)
{
	KsRequireKeyAdmin(op->invoker, rec->key_id, rec->name);
}

/*
 * A key of its own KMS: a plain key, or a family (wraps members, encrypts
 * no values).  Default grants: encrypt and decrypt to keysmith_user, admin
 * to keysmith_admin; narrow them with revoke_key.  A family's encrypt and
 * decrypt grants are its members' (inherited), not its own use.
 */
static void
CreateKmsKey(const char *name, const char *kms, const char *kms_key, bool family)
{
	char		kek_version[KS_KEK_VERSION_LEN] = "";
	bytea	   *wrapped;
	KsKeyOp		op;
	KsKeyRec	rec;
	KsError		err;

	KsKeyOpBegin(&op);
	memset(&rec, 0, sizeof(rec));
	rec.text_kek = KsKmsCatalogHasProviders();
	if (family && !KsCatalogHasFamilies())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("key families need keysmith 0.11"),
				 errhint("Run ALTER EXTENSION keysmith UPDATE.")));
	if (rec.text_kek)
		KsKeyLoadProvider(kms, &rec);
	else if (strcmp(kms, "local") == 0)
	{
		rec.kms_type = "local";
		rec.kms_options = "{}";
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("KMS provider \"%s\" does not exist", kms),
				 errhint("Before keysmith 0.7 the one provider is local; run ALTER EXTENSION keysmith UPDATE.")));
	rec.kms = (char *) kms;
	if (KsKeyInstance(&rec)->provider->check_key(&rec.inst, kms_key, &err) != KS_OK)
		KsReportError(&err);
	/* the KMS call comes before any write: a failure leaves nothing behind */
	wrapped = KsKeyWrapNewDek(name, 1, &rec.inst, kms, kms_key, kek_version);
	{
		Oid			types[4] = {TEXTOID, TEXTOID, TEXTOID, BOOLOID};
		Datum		values[4] = {CStringGetTextDatum(name), CStringGetTextDatum(kms),
		kms_key ? CStringGetTextDatum(kms_key) : (Datum) 0, BoolGetDatum(family)};
		char		nulls[4] = {' ', ' ', kms_key ? ' ' : 'n', ' '};
		bool		isnull;

		if (family)
			KsKeyExec("INSERT INTO keysmith.key (name, kms, kms_key, current_version, family) VALUES ($1, $2, $3, 1, $4)"
					  " ON CONFLICT (name) DO NOTHING RETURNING key_id",
					  4, types, values, nulls, SPI_OK_INSERT_RETURNING);
		else
			KsKeyExec(rec.text_kek ?
				 "INSERT INTO keysmith.key (name, kms, kms_key, current_version) VALUES ($1, $2, $3, 1)"
				 " ON CONFLICT (name) DO NOTHING RETURNING key_id" :
				 "INSERT INTO keysmith.key (name, kms, current_version) VALUES ($1, $2, 1)"
				 " ON CONFLICT (name) DO NOTHING RETURNING key_id",
				 rec.text_kek ? 3 : 2, types, values, nulls, SPI_OK_INSERT_RETURNING);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("key \"%s\" already exists", name)));
		rec.key_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		rec.name = (char *) name;
		rec.kms_key = (char *) kms_key;
		rec.family = family;
	}
	KsKeyInsertVersion(&rec, 1, wrapped, kek_version);
	KsKeyInsertAcl(rec.key_id, "keysmith_user", "encrypt");
	KsKeyInsertAcl(rec.key_id, "keysmith_user", "decrypt");
	KsKeyInsertAcl(rec.key_id, "keysmith_admin", "admin");
	KsKeyAudit(&op, family ? "create_family" : "create", &rec, 1, psprintf("kms %s", kms));
	KsKeyOpEndCreated(&op);
}

/*
 * A family, by name, for creating members: not locked (members of one
 * family are created concurrently; KsFamilyReserve holds it FOR SHARE), and
 * the caller must administer it.
 */
static void
FindFamilyForMembers(KsKeyOp *op, const char *parent, KsKeyRec *rec)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(parent)};
	bool		isnull;

	if (!KsCatalogHasFamilies())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("key families need keysmith 0.11"),
				 errhint("Run ALTER EXTENSION keysmith UPDATE.")));
	KsKeyExec("SELECT key_id, family, state OPERATOR(pg_catalog.=) " KS_KEY_DESTROYED_SQL ", kms"
			  "  FROM keysmith.key WHERE name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("key family \"%s\" does not exist", parent)));
	memset(rec, 0, sizeof(*rec));
	rec->key_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	rec->family = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	rec->destroyed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	rec->kms = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4);
	rec->name = pstrdup(parent);
	/* admin first: who may not administer it learns nothing more of it */
	RequireAdmin(op, rec);
	if (!rec->family)
		ereport(ERROR,
				(errcode(ERRCODE_KS_KEY_FAMILY),
				 errmsg("key \"%s\" is not a key family", parent),
				 errhint("Members are created under a key made with keysmith.create_key_family.")));
	KsKeyRequireNotDestroyed(rec);
}

/* A member of family: version 1 wrapped by the family's current version. */
static void
CreateMember(const char *name, const char *parent)
{
	KsKeyOp		op;
	KsKeyRec	fam;
	KsKeyRec	rec;
	int32		pv;
	bytea	   *wrapped;
	bool		isnull;

	KsKeyOpBegin(&op);
	FindFamilyForMembers(&op, parent, &fam);
	pv = KsFamilyReserve(fam.key_id, 1);
	wrapped = KsFamilyWrapNew(fam.key_id, pv, name, 1);
	{
		Oid			types[3] = {TEXTOID, TEXTOID, INT4OID};
		Datum		values[3] = {CStringGetTextDatum(name), CStringGetTextDatum(fam.kms), Int32GetDatum(fam.key_id)};

		KsKeyExec("INSERT INTO keysmith.key (name, kms, current_version, parent_id) VALUES ($1, $2, 1, $3)"
				  " ON CONFLICT (name) DO NOTHING RETURNING key_id",
				  3, types, values, NULL, SPI_OK_INSERT_RETURNING);
	}
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("key \"%s\" already exists", name)));
	memset(&rec, 0, sizeof(rec));
	rec.key_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	rec.name = (char *) name;
	rec.parent_id = fam.key_id;
	KsKeyInsertMemberVersion(&rec, 1, wrapped, pv);
	KsKeyAudit(&op, "create", &rec, 1, psprintf("member of family %s (version %d)", parent, pv));
	KsKeyOpEndCreated(&op);
}

/*
 * keysmith.create_key(name text, kms text DEFAULT 'local', kms_key text
 * DEFAULT NULL, parent text DEFAULT NULL) RETURNS void
 *
 * A new key with DEK version 1: under a KMS provider (default local), or,
 * with parent, a member of that key family (admin on the family needed;
 * the member inherits the family's grants and takes its KMS: kms may only
 * keep its default).
 */
Datum
keysmith_create_key(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *kms;
	char	   *kms_key;
	char	   *parent;

	KsRequirePrimary("create a key", KS_PRIMARY_HINT_KEYS);
	KsRequireArg(fcinfo, 0, "name");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	kms = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	kms_key = PG_NARGS() > 2 && !PG_ARGISNULL(2) ? text_to_cstring(PG_GETARG_TEXT_PP(2)) : NULL;
	parent = PG_NARGS() > 3 && !PG_ARGISNULL(3) ? text_to_cstring(PG_GETARG_TEXT_PP(3)) : NULL;
	KsCheckKeyName(name);
	if (parent != NULL)
	{
		/* kms is 'local' when left to its default */
		if ((kms != NULL && strcmp(kms, "local") != 0) || kms_key != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a member of a key family takes no kms or kms_key"),
					 errdetail("Its data keys are wrapped by the family's, which names the KMS.")));
		CreateMember(name, parent);
	}
	else
	{
		KsRequireArg(fcinfo, 1, "kms");
		CreateKmsKey(name, kms, kms_key, false);
	}
	PG_RETURN_VOID();
}

/* the most members create_keys makes in one call */
#define KS_CREATE_KEYS_MAX 1000000

/* keysmith.create_key_family(name text, kms text, kms_key text) RETURNS void */
Datum
keysmith_create_key_family(PG_FUNCTION_ARGS)
{
	char	   *name;

	KsRequirePrimary("create a key", KS_PRIMARY_HINT_KEYS);
	KsRequireArg(fcinfo, 0, "name");
	KsRequireArg(fcinfo, 1, "kms");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	KsCheckKeyName(name);
	CreateKmsKey(name, text_to_cstring(PG_GETARG_TEXT_PP(1)),
				   PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2)), true);
	PG_RETURN_VOID();
}

/* ERROR 42710 naming the first name of names that exists, or repeats. */
static void
RequireNewNames(ArrayType *names)
{
	Oid			types[1] = {TEXTARRAYOID};
	Datum		values[1] = {PointerGetDatum(names)};

	KsKeyExec("SELECT u.n FROM pg_catalog.unnest($1) WITH ORDINALITY AS u(n, i)"
			  " WHERE EXISTS (SELECT 1 FROM keysmith.key k WHERE k.name OPERATOR(pg_catalog.=) u.n)"
			  " ORDER BY u.i LIMIT 1", 1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("key \"%s\" already exists", SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1))));
	KsKeyExec("SELECT u.n FROM pg_catalog.unnest($1) AS u(n) GROUP BY u.n"
			  " HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 1 LIMIT 1", 1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("names lists key \"%s\" more than once", SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1))));
}

/*
 * keysmith.create_keys(parent text, names text[]) RETURNS integer
 *
 * Members of a family, one per name, in one statement per table: each
 * name is checked, then the family's current version is counted once per
 * member and seals each one's DEK; the rows, their versions and one audit
 * row per member go in by unnest.  All or nothing: a name that exists
 * already (or twice in names) fails the call with 42710.
 */
Datum
keysmith_create_keys(PG_FUNCTION_ARGS)
{
	char	   *parent;
	ArrayType  *arr;
	Datum	   *names;
	bool	   *nulls;
	int			n;
	KsKeyOp		op;
	KsKeyRec	fam;
	int32		pv;
	Datum	   *wrapped;
	char		epoch[KS_EPOCH_LEN];

	KsRequirePrimary("create a key", KS_PRIMARY_HINT_KEYS);
	KsRequireArg(fcinfo, 0, "parent");
	KsRequireArg(fcinfo, 1, "names");
	parent = text_to_cstring(PG_GETARG_TEXT_PP(0));
	arr = PG_GETARG_ARRAYTYPE_P(1);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("names must be a one-dimensional array")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &names, &nulls, &n);
	if (n > KS_CREATE_KEYS_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("create_keys makes at most %d keys per call", KS_CREATE_KEYS_MAX)));
	for (int i = 0; i < n; i++)
	{
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("names must not contain null")));
		KsCheckKeyName(TextDatumGetCString(names[i]));
	}
	KsKeyOpBegin(&op);
	FindFamilyForMembers(&op, parent, &fam);
	if (n == 0)
	{
		KsKeyOpEndCreated(&op);
		PG_RETURN_INT32(0);
	}
	RequireNewNames(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
	pv = KsFamilyReserve(fam.key_id, n);
	wrapped = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		wrapped[i] = PointerGetDatum(KsFamilyWrapNew(fam.key_id, pv, TextDatumGetCString(names[i]), 1));
		CHECK_FOR_INTERRUPTS();
	}
	KsServerEpoch(epoch);
	{
		Oid			types[8] = {TEXTARRAYOID, TEXTOID, INT4OID, BYTEAARRAYOID, TEXTOID, INT4OID, NAMEOID, NAMEOID};
		Datum		values[8];
		ArrayType  *names_arr = construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT);
		bool		isnull;

		values[0] = PointerGetDatum(names_arr);
		values[1] = CStringGetTextDatum(fam.kms);
		values[2] = Int32GetDatum(fam.key_id);
		values[3] = PointerGetDatum(construct_array(wrapped, n, BYTEAOID, -1, false, TYPALIGN_INT));
		values[4] = CStringGetTextDatum(epoch);
		values[5] = Int32GetDatum(pv);
		values[6] = DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(op.invoker, false)));
		values[7] = DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(GetSessionUserId(), false)));

		/*
		 * One statement: the keys, their versions and the audit rows, so
		 * the counts of each can be checked against n together.
		 */
		KsKeyExec("WITH k AS ("
				  "  INSERT INTO keysmith.key (name, kms, current_version, parent_id)"
				  "  SELECT u.n, $2, 1, $3 FROM pg_catalog.unnest($1) AS u(n)"
				  "  ON CONFLICT (name) DO NOTHING RETURNING key_id, name),"
				  " v AS ("
				  "  INSERT INTO keysmith.key_version (key_id, version, wrapped_dek, kek_version, server_epoch, wrapped_by)"
				  "  SELECT k.key_id, 1, u.w, 'parent', $5, $6"
				  "    FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($4)) AS u(n, w) JOIN k ON k.name OPERATOR(pg_catalog.=) u.n"
				  "  RETURNING key_id),"
				  " e AS ("
				  "  INSERT INTO keysmith.key_event (event, key_id, key_name, key_version, session_role, acting_role, detail)"
				  "  SELECT 'create', k.key_id, k.name, 1, $8, $7,"
				  "         pg_catalog.format('member of family %s (version %s)', (SELECT f.name FROM keysmith.key f"
				  "                           WHERE f.key_id OPERATOR(pg_catalog.=) $3), $6)"
				  "    FROM k RETURNING 1)"
				  " SELECT (SELECT pg_catalog.count(*) FROM k), (SELECT pg_catalog.count(*) FROM v),"
				  "        (SELECT pg_catalog.count(*) FROM e),"
				  "        (SELECT pg_catalog.array_agg(key_id) FROM k)",
				  8, types, values, NULL, SPI_OK_SELECT);
		if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) != n)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("a key of names was created by another session meanwhile"),
					 errhint("Run create_keys again without the names that exist now.")));
		{
			ArrayType  *ids = DatumGetArrayTypeP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
			Datum	   *id;
			int			nids;

			deconstruct_array(ids, INT4OID, 4, true, TYPALIGN_INT, &id, NULL, &nids);
			/* new DEKs: this server knows their counts, zero */
			for (int i = 0; i < nids; i++)
				KsCounterCreate(DatumGetInt32(id[i]), 1);
		}
	}
	KsKeyOpEndCreated(&op);
	PG_RETURN_INT32(n);
}

/* keysmith.rotate_dek(key_name text) RETURNS integer: the new version. */
Datum
keysmith_rotate_dek(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	KsKeyOp		op;
	KsKeyRec		rec;
	char	   *detail = NULL;

	KsRequirePrimary("rotate a key", KS_PRIMARY_HINT_KEYS);
	KsKeyOpBegin(&op);
	KsKeyLock(name, 0, &rec);
	RequireAdmin(&op, &rec);
	KsKeyRequireNotDestroyed(&rec);
	KsKeyAddVersion(&rec, rec.current_version + 1);
	/* a family's members move to its new version: no KMS call, no value touched */
	if (rec.family)
		detail = psprintf(INT64_FORMAT " member version(s) rewrapped", KsFamilyRewrapMembers(&rec));
	/* the old versions still decrypt; their shared copies are wiped all the same */
	KsSharedDekInvalidate(MyDatabaseId, (uint32) rec.key_id);
	KsKeyAudit(&op, "rotate_dek", &rec, rec.current_version, detail);
	KsKeyOpEnd(&op);
	PG_RETURN_INT32(rec.current_version);
}

/*
 * keysmith.rotate_kek(key_name text) RETURNS integer
 *
 * Re-wraps every live DEK version of the key that is not yet under the
 * KMS's newest KEK.  Touches no encrypted data.  Returns how many versions
 * were re-wrapped (0 when all already were: safe to run again).
 */
Datum
keysmith_rotate_kek(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	KsError		err;
	KsKeyOp		op;
	KsKeyRec		rec;
	int			n = 0;
	uint64		nrows;
	SPITupleTable *tuptable;
	char		last_kek[KS_KEK_VERSION_LEN] = "";
	const KsKmsInstance *inst;
	List	   *asked = NIL;	/* KEK versions whose answer is known */
	List	   *answers = NIL;

	KsRequirePrimary("rotate a key's KEK", KS_PRIMARY_HINT_KEYS);
	KsKeyOpBegin(&op);
	KsKeyLock(name, 0, &rec);
	RequireAdmin(&op, &rec);
	KsKeyRequireNotDestroyed(&rec);
	KsKeyRequireNotMember(&rec, "rotate the KEK of");
	inst = KsKeyInstance(&rec);
	tuptable = KsKeyLiveVersions(&rec, &nrows);
	for (uint64 i = 0; i < nrows; i++)
	{
		bool		isnull;
		int32		version = DatumGetInt32(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 1, &isnull));
		bytea	   *old = DatumGetByteaPP(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 2, &isnull));
		char	   *stored = SPI_getvalue(tuptable->vals[i], tuptable->tupdesc, 3);
		uint8		aad[KS_KEY_NAME_MAX + 64];
		size_t		aad_len = KsDekBindingAad(rec.name, (uint32) version, aad, sizeof(aad));
		uint8		wrapped[KS_WRAPPED_MAX];
		size_t		wrapped_len = 0;
		char		kek_version[KS_KEK_VERSION_LEN] = "";
		int			needs = -1;
		ListCell   *a;
		ListCell   *b;

		/*
		 * The provider alone knows whether a blob is under its current KEK;
		 * asked once per KEK version in use (it may read a file or call the
		 * KMS), not once per DEK version.
		 */
		forboth(a, asked, b, answers)
			if (strcmp((char *) lfirst(a), stored) == 0)
				needs = lfirst_int(b);
		if (needs < 0)
		{
			if (inst->provider->needs_rewrap(inst, rec.kms_key, stored, &needs, &err) != KS_OK)
				KsReportError(&err);
			asked = lappend(asked, stored);
			answers = lappend_int(answers, needs);
		}
		if (!needs)
			continue;
		if (inst->provider->rewrap(inst, rec.kms_key, (const uint8 *) VARDATA_ANY(old),
									  VARSIZE_ANY_EXHDR(old), aad, aad_len, wrapped, &wrapped_len,
									  kek_version, &err) != KS_OK)
			KsReportError(&err);
		KsKekCheckWrap(inst, rec.kms, rec.kms_key, wrapped, wrapped_len, aad, aad_len);
		KsKeyStoreWrapped(&rec, version, wrapped, wrapped_len, kek_version);
		strlcpy(last_kek, kek_version, sizeof(last_kek));
		n++;
	}
	KsSharedDekInvalidate(MyDatabaseId, (uint32) rec.key_id);
	KsKeyAudit(&op, "rotate_kek", &rec, 0,
		  n > 0 ? psprintf("%d version(s) re-wrapped under KEK version %s", n, last_kek[0] ? last_kek : "(not shown by the KMS)")
		  : pstrdup("every version was already under the current KEK"));
	KsKeyOpEnd(&op);
	PG_RETURN_INT32(n);
}

/*
 * keysmith.migrate_key(key_name text, to_provider text, to_kms_key text)
 * RETURNS integer
 *
 * Moves a key to another provider (or another key of the same KMS): every
 * DEK version that still has its key material is unwrapped by the old
 * provider and wrapped by the new one, with the same binding, then the key
 * names its new provider.  Encrypted values are untouched: the DEKs are the
 * same.  One transaction: a KMS failure half-way leaves every version as it
 * was.  Returns how many versions were re-wrapped.
 */
Datum
keysmith_migrate_key(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *to_kms;
	char	   *to_kms_key;
	KsError		err;
	KsKeyOp		op;
	KsKeyRec		rec;
	KsKeyRec		to;
	const KsKmsInstance *from_inst;
	const KsKmsInstance *to_inst;
	uint64		nrows;
	SPITupleTable *tuptable;
	char	   *from_desc;
	int			n = 0;

	KsRequirePrimary("migrate a key", KS_PRIMARY_HINT_KEYS);
	KsRequireArg(fcinfo, 0, "key_name");
	KsRequireArg(fcinfo, 1, "to_provider");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	to_kms = text_to_cstring(PG_GETARG_TEXT_PP(1));
	to_kms_key = PG_ARGISNULL(2) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(2));

	KsKeyOpBegin(&op);
	KsKeyLock(name, 0, &rec);
	RequireAdmin(&op, &rec);
	KsKeyRequireNotDestroyed(&rec);
	KsKeyRequireNotMember(&rec, "migrate");
	to = rec;
	memset(&to.inst, 0, sizeof(to.inst));
	KsKeyLoadProvider(to_kms, &to);
	to.kms_key = to_kms_key;
	to_inst = KsKeyInstance(&to);
	if (to_inst->provider->check_key(to_inst, to_kms_key, &err) != KS_OK)
		KsReportError(&err);
	if (strcmp(rec.kms, to_kms) == 0 &&
		((rec.kms_key == NULL && to_kms_key == NULL) ||
		 (rec.kms_key != NULL && to_kms_key != NULL && strcmp(rec.kms_key, to_kms_key) == 0)))
	{
		KsKeyOpEnd(&op);
		PG_RETURN_INT32(0);
	}
	/* a destination that cannot tell its keys apart: the data keys already there must open */
	if (to_inst->provider->kek_check == NULL || !KsCatalogHasKekCheck())
		KsKeyVerifyKmsKey(to_kms, to_kms_key);
	from_inst = KsKeyInstance(&rec);
	from_desc = psprintf("%s%s%s", rec.kms, rec.kms_key ? " " : "", rec.kms_key ? rec.kms_key : "");
	tuptable = KsKeyLiveVersions(&rec, &nrows);
	for (uint64 i = 0; i < nrows; i++)
	{
		bool		isnull;
		int32		version = DatumGetInt32(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 1, &isnull));
		bytea	   *old = DatumGetByteaPP(SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 2, &isnull));
		uint8		aad[KS_KEY_NAME_MAX + 64];
		size_t		aad_len = KsDekBindingAad(rec.name, (uint32) version, aad, sizeof(aad));
		uint8		dek[KS_DEK_LEN];
		uint8		wrapped[KS_WRAPPED_MAX];
		size_t		wrapped_len = 0;
		char		kek_version[KS_KEK_VERSION_LEN] = "";
		KsStatus	st;

		st = from_inst->provider->unwrap(from_inst, rec.kms_key, (const uint8 *) VARDATA_ANY(old),
										 VARSIZE_ANY_EXHDR(old), aad, aad_len, dek, sizeof(dek), &err);
		if (st == KS_OK)
			st = to_inst->provider->wrap(to_inst, to_kms_key, dek, sizeof(dek), aad, aad_len,
										 wrapped, &wrapped_len, kek_version, &err);
		KsWipe(dek, sizeof(dek));
		if (st != KS_OK)
			KsReportError(&err);
		KsKekCheckWrap(to_inst, to_kms, to_kms_key, wrapped, wrapped_len, aad, aad_len);
		KsKeyStoreWrapped(&rec, version, wrapped, wrapped_len, kek_version);
		n++;
	}
	{
		Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
		Datum		values[3] = {Int32GetDatum(rec.key_id), CStringGetTextDatum(to_kms),
		to_kms_key ? CStringGetTextDatum(to_kms_key) : (Datum) 0};
		char		nulls[3] = {' ', ' ', to_kms_key ? ' ' : 'n'};

		KsKeyExec("UPDATE keysmith.key SET kms = $2, kms_key = $3 WHERE key_id OPERATOR(pg_catalog.=) $1",
			 3, types, values, nulls, SPI_OK_UPDATE);
		/* a family's members name its provider too (they take the family's) */
		if (rec.family)
			KsKeyExec("UPDATE keysmith.key SET kms = $2 WHERE parent_id OPERATOR(pg_catalog.=) $1",
					  2, types, values, nulls, SPI_OK_UPDATE);
	}
	KsSharedDekInvalidate(MyDatabaseId, (uint32) rec.key_id);
	KsKeyAudit(&op, "migrate", &rec, 0,
		  psprintf("%d version(s) moved from %s to %s%s%s", n, from_desc, to_kms,
				   to_kms_key ? " " : "", to_kms_key ? to_kms_key : ""));
	KsKeyOpEnd(&op);
	PG_RETURN_INT32(n);
}

/* Read a version's state under the locked key; ERROR KS004 if absent. */
static KsKeyVersionState
VersionState(KsKeyRec *rec, int32 version)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2] = {Int32GetDatum(rec->key_id), Int32GetDatum(version)};

	KsKeyExec("SELECT state FROM keysmith.key_version"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
		 2, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_KS_UNKNOWN_KEY_VERSION),
				 errmsg("key \"%s\" has no version %d", rec->name, version)));
	return KsKeyVersionStateFromName(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
}

static void
SetVersionState(KsKeyRec *rec, int32 version, KsKeyVersionState state)
{
	Oid			types[3] = {INT4OID, INT4OID, TEXTOID};
	Datum		values[3] = {Int32GetDatum(rec->key_id), Int32GetDatum(version),
	CStringGetTextDatum(KsKeyVersionStateNames[state])};

	KsKeyExec("UPDATE keysmith.key_version SET state = $3,"
		 "  retired_at = CASE WHEN $3 OPERATOR(pg_catalog.=) " KS_KEY_RETIRED_SQL " THEN pg_catalog.now() END,"
		 "  destroyed_at = CASE WHEN $3 OPERATOR(pg_catalog.=) " KS_KEY_DESTROYED_SQL " THEN pg_catalog.now() END,"
		 "  wrapped_dek = CASE WHEN $3 OPERATOR(pg_catalog.=) " KS_KEY_DESTROYED_SQL " THEN NULL ELSE wrapped_dek END"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
		 3, types, values, NULL, SPI_OK_UPDATE);
}

static void
RequireNotCurrent(KsKeyRec *rec, int32 version, const char *what)
{
	if (version == rec->current_version)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot %s version %d of key \"%s\": it is the current version", what, version, rec->name),
				 errhint("Run keysmith.rotate_dek('%s') first.", rec->name)));
}

/*
 * A family version that still seals a live member version cannot be
 * destroyed: that member would be lost with it.
 */
static void
RequireNoMemberUnder(KsKeyRec *rec, int32 version)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2] = {Int32GetDatum(rec->key_id), Int32GetDatum(version)};
	bool		isnull;
	int64		n;

	KsKeyExec("SELECT pg_catalog.count(*) FROM keysmith.key k"
			  "  JOIN keysmith.key_version v ON v.key_id OPERATOR(pg_catalog.=) k.key_id"
			  " WHERE k.parent_id OPERATOR(pg_catalog.=) $1 AND v.wrapped_by OPERATOR(pg_catalog.=) $2"
			  "   AND v.wrapped_dek IS NOT NULL",
			  2, types, values, NULL, SPI_OK_SELECT);
	n = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (n > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("cannot destroy version %d of key family \"%s\": it wraps " INT64_FORMAT " member key version(s)",
						version, rec->name, n),
				 errhint("keysmith.complete_shreds('%s') rewraps every member under a new version and then destroys the old ones.",
						 rec->name)));
}

/* Shared body of retire / restore / destroy of one version. */
static void
ChangeVersion(FunctionCallInfo fcinfo, const char *action)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		version = PG_GETARG_INT32(1);
	KsKeyOp		op;
	KsKeyRec		rec;
	KsKeyVersionState state;

	KsRequirePrimary("change a key version", KS_PRIMARY_HINT_KEYS);
	KsKeyOpBegin(&op);
	KsKeyLock(name, 0, &rec);
	RequireAdmin(&op, &rec);
	KsKeyRequireNotDestroyed(&rec);
	state = VersionState(&rec, version);
	if (state == KS_KEY_VERSION_DESTROYED)
		ereport(ERROR,
				(errcode(ERRCODE_KS_KEY_DESTROYED),
				 errmsg("version %d of key \"%s\" has been destroyed", version, rec.name),
				 errdetail("Destruction cannot be undone.")));
	if (strcmp(action, "retire") == 0)
	{
		RequireNotCurrent(&rec, version, "retire");
		if (state != KS_KEY_VERSION_RETIRED)
			SetVersionState(&rec, version, KS_KEY_VERSION_RETIRED);
	}
	else if (strcmp(action, "restore") == 0)
	{
		if (state != KS_KEY_VERSION_ACTIVE)
			SetVersionState(&rec, version, KS_KEY_VERSION_ACTIVE);
	}
	else
	{
		RequireNotCurrent(&rec, version, "destroy");
		if (rec.family)
		{
			KsKeyRequireReadCommitted("destroy a version of a key family");
			RequireNoMemberUnder(&rec, version);
		}
		KsFamilyRecordShreds(rec.key_id, version);
		SetVersionState(&rec, version, KS_KEY_VERSION_DESTROYED);
	}
	if (strcmp(action, "restore") != 0)
		KsSharedDekInvalidate(MyDatabaseId, (uint32) rec.key_id);
	KsKeyAudit(&op, action, &rec, version, NULL);
	KsKeyOpEnd(&op);
}

Datum
keysmith_retire_key_version(PG_FUNCTION_ARGS)
{
	ChangeVersion(fcinfo, "retire");
	PG_RETURN_VOID();
}

Datum
keysmith_restore_key_version(PG_FUNCTION_ARGS)
{
	ChangeVersion(fcinfo, "restore");
	PG_RETURN_VOID();
}

Datum
keysmith_destroy_key_version(PG_FUNCTION_ARGS)
{
	ChangeVersion(fcinfo, "destroy");
	PG_RETURN_VOID();
}

/* keysmith.destroy_key(key_name text) RETURNS integer: versions erased. */
Datum
keysmith_destroy_key(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	KsKeyOp		op;
	KsKeyRec		rec;
	Oid			types[1] = {INT4OID};
	Datum		values[1];
	int			n;

	KsRequirePrimary("destroy a key", KS_PRIMARY_HINT_KEYS);
	KsKeyOpBegin(&op);
	KsKeyLock(name, 0, &rec);
	RequireAdmin(&op, &rec);
	KsKeyRequireNotDestroyed(&rec);
	if (rec.family && KsFamilyHasLiveMembers(rec.key_id))
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("cannot destroy key family \"%s\": it has members that are not destroyed", rec.name),
				 errhint("Destroy each member with keysmith.destroy_key first.")));
	if (rec.parent_id != 0)
		KsFamilyRecordShreds(rec.key_id, 0);
	values[0] = Int32GetDatum(rec.key_id);
	KsKeyExec("UPDATE keysmith.key_version SET state = " KS_KEY_DESTROYED_SQL ", wrapped_dek = NULL,"
		 "  destroyed_at = pg_catalog.now()"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.<>) " KS_KEY_DESTROYED_SQL,
		 1, types, values, NULL, SPI_OK_UPDATE);
	n = (int) SPI_processed;
	KsKeyExec("UPDATE keysmith.key SET state = " KS_KEY_DESTROYED_SQL ", destroyed_at = pg_catalog.now()"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1", 1, types, values, NULL, SPI_OK_UPDATE);
	KsSharedDekInvalidate(MyDatabaseId, (uint32) rec.key_id);
	KsKeyAudit(&op, "destroy", &rec, 0, psprintf("%d version(s) erased", n));
	KsKeyOpEnd(&op);
	PG_RETURN_INT32(n);
}

static KsPrivilege
ParsePrivilege(const char *s)
{
	for (int i = 0; i < KS_PRIV_COUNT; i++)
		if (strcmp(s, KsPrivilegeNames[i]) == 0)
			return (KsPrivilege) i;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown key privilege \"%s\"", s),
			 errhint("Use encrypt, decrypt or admin.")));
	pg_unreachable();
}

static void
GrantOrRevoke(FunctionCallInfo fcinfo, bool grant)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *role = NameStr(*PG_GETARG_NAME(1));
	char	   *privname = text_to_cstring(PG_GETARG_TEXT_PP(2));
	KsPrivilege priv = ParsePrivilege(privname);
	Oid			roleid = get_role_oid(role, false);
	KsKeyOp		op;
	KsKeyRec		rec;

	KsRequirePrimary("grant or revoke key privileges", KS_PRIMARY_HINT_KEYS);
	KsKeyOpBegin(&op);
	KsKeyLock(name, 0, &rec);
	RequireAdmin(&op, &rec);
	if (grant)
	{
		KsKeyRequireNotDestroyed(&rec);
		KsKeyInsertAcl(rec.key_id, role, KsPrivilegeNames[priv]);
	}
	else
	{
		Oid			types[3] = {INT4OID, OIDOID, TEXTOID};
		Datum		values[3] = {Int32GetDatum(rec.key_id), ObjectIdGetDatum(roleid),
		CStringGetTextDatum(KsPrivilegeNames[priv])};

		/*
		 * A member's revoke that its family's grants would undo is no
		 * revoke.  A superuser holds everything anyway: its own grants go
		 * (pg_has_role would call it a member of every grantee).
		 */
		if (rec.parent_id != 0 && !superuser_arg(roleid) && KsKeyGrantGives(rec.parent_id, priv, roleid))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("role %s holds %s on key \"%s\" through its family \"%s\"",
							quote_identifier(role), KsPrivilegeNames[priv], rec.name, rec.parent_name),
					 errhint("Revoke it on the family (keysmith.revoke_key('%s', ...)), then grant it on the members that keep it.",
							 rec.parent_name)));

		KsKeyExec("DELETE FROM keysmith.key_acl WHERE key_id OPERATOR(pg_catalog.=) $1"
			 " AND grantee::pg_catalog.oid OPERATOR(pg_catalog.=) $2 AND privilege OPERATOR(pg_catalog.=) $3",
			 3, types, values, NULL, SPI_OK_DELETE);
	}
	KsKeyAudit(&op, grant ? "grant" : "revoke", &rec, 0,
		  psprintf("%s %s %s", KsPrivilegeNames[priv], grant ? "to" : "from", quote_identifier(role)));
	KsKeyOpEnd(&op);
}

/* keysmith.grant_key(key_name text, role name, privilege text) */
Datum
keysmith_grant_key(PG_FUNCTION_ARGS)
{
	GrantOrRevoke(fcinfo, true);
	PG_RETURN_VOID();
}

/* keysmith.revoke_key(key_name text, role name, privilege text) */
Datum
keysmith_revoke_key(PG_FUNCTION_ARGS)
{
	GrantOrRevoke(fcinfo, false);
	PG_RETURN_VOID();
}

/*
 * keysmith.add_local_master_key() RETURNS integer
 *
 * Appends a new random master key (highest version + 1) to the local master
 * key file and returns its version; new wraps use it at once.  Existing
 * DEKs stay wrapped by older versions until rotate_kek re-wraps them.
 */
Datum
keysmith_add_local_master_key(PG_FUNCTION_ARGS)
{
	KsError		err;
	uint32		version = 0;
	KsKeyOp		op;

	KsRequirePrimary("add a master key", KS_PRIMARY_HINT_KEYS);
	if (KsLocalAppendKey(keysmith_local_master_key_file, &version, &err) != KS_OK)
		KsReportError(&err);
	KsKeyOpBegin(&op);
	KsKeyAudit(&op, "add_master_key", NULL, 0, psprintf("local master key version %u", version));
	KsOwnerSpiEnd(&op.spi);
	PG_RETURN_INT32((int32) version);
}

/*
 * keysmith._local_master_key_versions() RETURNS TABLE(version, is_current)
 *
 * The versions in the master key file, never the keys.  The keys are read
 * too (the file is checked whole), into a secret buffer: an ERROR while
 * the rows are stored leaves them wiped with the query's memory.
 */
Datum
keysmith_local_master_key_versions(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	KsMasterKeySet *set;
	KsError		err;

	InitMaterializedSRF(fcinfo, 0);
	set = KsSecretAlloc(CurrentMemoryContext, sizeof(KsMasterKeySet));
	if (KsLocalLoad(keysmith_local_master_key_file, set, &err) != KS_OK)
		KsReportError(&err);
	for (int i = 0; i < set->count; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		values[0] = Int64GetDatum((int64) set->keys[i].version);
		values[1] = BoolGetDatum(set->keys[i].version == set->current);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	KsSecretFree(set);
	return (Datum) 0;
}

/* keysmith._dek_encryptions(key_id integer, version integer) RETURNS bigint */
Datum
keysmith_dek_encryptions(PG_FUNCTION_ARGS)
{
	int64		n = KsCounterValue(PG_GETARG_INT32(0), PG_GETARG_INT32(1));

	/* NULL: this server does not know (the version rolls over at its next use) */
	if (n < 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(n);
}
