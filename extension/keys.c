/*
 * extension/keys.c
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
#include "utils/builtins.h"
#include "utils/inval.h"

#include "../kms/local.h"
#include "keysmith.h"
#include "dek_cache.h"
#include "dek_shared.h"
#include "key_acl.h"
#include "kms_instance.h"
#include "owner_spi.h"
#include "secret_mem.h"

PG_FUNCTION_INFO_V1(keysmith_create_key);
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

/* A lifecycle call in progress: who called, and the SPI session as owner. */
typedef struct KsOp
{
	Oid			invoker;
	KsOwnerSpi	spi;
} KsOp;

typedef struct KeyRec
{
	int32		key_id;
	char	   *name;
	char	   *kms;
	int32		current_version;
	bool		destroyed;
	char	   *kms_type;		/* the provider's type and options (JSON) */
	char	   *kms_options;
	KsKmsInstance inst;			/* built from them when KMS work comes */
	bool		inst_built;
	char	   *kms_key;		/* its reference in the KMS, or NULL */
	bool		text_kek;		/* catalog 0.7+: KEK versions are text */
} KeyRec;

/*
 * The key's provider instance, built on first use: most lifecycle calls
 * (grants, retire, destroy) never talk to the KMS.
 */
static const KsKmsInstance *
KeyInstance(KeyRec *rec)
{
	if (!rec->inst_built)
	{
		KsKmsInstanceBuild(rec->kms, rec->kms_type, rec->kms_options, &rec->inst);
		rec->inst_built = true;
	}
	return &rec->inst;
}

static void
OpBegin(KsOp *op)
{
	op->invoker = GetUserId();
	KsOwnerSpiBegin(&op->spi);
}

static void
OpEnd(KsOp *op)
{
	KsOwnerSpiEnd(&op->spi);
	/* other backends at their next transaction, this one now */
	CacheInvalidateRelcacheByRelid(KsKeyTableOid());
	KsDekCacheFlush();
}

/* A read-write statement with a fresh snapshot, all rows. */
static void
Exec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls, int expect)
{
	KsSpiExec(sql, nargs, types, values, nulls, false, 0, expect);
}

/*
 * Lock and read a key, by name (name != NULL) or by id.  An unknown name is
 * the caller's mistake (42704); an unknown id cannot happen.
 */
static void
LockKey(const char *name, int32 key_id, KeyRec *rec)
{
	Oid			types[1] = {name ? TEXTOID : INT4OID};
	Datum		values[1] = {name ? CStringGetTextDatum(name) : Int32GetDatum(key_id)};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;

	bool		has_providers = KsKmsCatalogHasProviders();
#define LOCK_KEY_SQL(cols, join, where) \
	"SELECT k.key_id, k.name, k.kms, k.current_version, k.state OPERATOR(pg_catalog.=) 'destroyed'" cols \
	"  FROM keysmith.key k" join " WHERE " where " FOR UPDATE OF k"

	if (has_providers)
		Exec(name ? LOCK_KEY_SQL(KS_KMS_COLS_07, KS_KMS_JOIN_07, "k.name OPERATOR(pg_catalog.=) $1") :
			 LOCK_KEY_SQL(KS_KMS_COLS_07, KS_KMS_JOIN_07, "k.key_id OPERATOR(pg_catalog.=) $1"),
			 1, types, values, NULL, SPI_OK_SELECT);
	else
		Exec(name ? LOCK_KEY_SQL(KS_KMS_COLS_06, KS_KMS_JOIN_06, "k.name OPERATOR(pg_catalog.=) $1") :
			 LOCK_KEY_SQL(KS_KMS_COLS_06, KS_KMS_JOIN_06, "k.key_id OPERATOR(pg_catalog.=) $1"),
			 1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0 && name == NULL)
		elog(ERROR, "key id %d vanished", key_id);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("key \"%s\" does not exist", name)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	rec->key_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	rec->name = SPI_getvalue(tup, desc, 2);
	rec->kms = SPI_getvalue(tup, desc, 3);
	rec->current_version = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
	rec->destroyed = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
	rec->kms_key = SPI_getvalue(tup, desc, 6);
	rec->kms_type = SPI_getvalue(tup, desc, 7);
	rec->kms_options = SPI_getvalue(tup, desc, 8);
	rec->inst_built = false;
	rec->text_kek = has_providers;
}

static void
RequireAdmin(KsOp *op, KeyRec *rec)
{
	if (!KsHasKeyPrivilege(rec->key_id, KS_PRIV_ADMIN, op->invoker))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to administer key \"%s\"", rec->name),
				 errhint("A key administrator can run keysmith.grant_key('%s', <role>, 'admin').",
						 rec->name)));
}

static void
RequireNotDestroyed(KeyRec *rec)
{
	if (rec->destroyed)
		ereport(ERROR,
				(errcode(ERRCODE_KS_KEY_DESTROYED),
				 errmsg("key \"%s\" has been destroyed", rec->name)));
}

/* Append a row to keysmith.key_event. */
static void
Audit(KsOp *op, const char *event, KeyRec *rec, int32 version, const char *detail)
{
	Oid			types[7] = {TEXTOID, INT4OID, TEXTOID, INT4OID, NAMEOID, NAMEOID, TEXTOID};
	Datum		values[7];
	char		nulls[7] = "       ";

	values[0] = CStringGetTextDatum(event);
	if (rec)
	{
		values[1] = Int32GetDatum(rec->key_id);
		values[2] = CStringGetTextDatum(rec->name);
	}
	else
		nulls[1] = nulls[2] = 'n';
	if (version > 0)
		values[3] = Int32GetDatum(version);
	else
		nulls[3] = 'n';
	values[4] = DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(GetSessionUserId(), false)));
	values[5] = DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(op->invoker, false)));
	if (detail)
		values[6] = CStringGetTextDatum(detail);
	else
		nulls[6] = 'n';
	Exec("INSERT INTO keysmith.key_event (event, key_id, key_name, key_version, session_role, acting_role, detail)"
		 " VALUES ($1, $2, $3, $4, $5, $6, $7)", 7, types, values, nulls, SPI_OK_INSERT);
}

/*
 * A fresh random DEK for (name, version), wrapped by the key's provider;
 * kek_version receives the KEK version used.
 */
static bytea *
WrapNewDek(const char *name, int32 version, const KsKmsInstance *inst, const char *kms_key, char *kek_version)
{
	KsError		err;
	uint8		dek[KS_DEK_LEN];
	uint8		aad[KS_KEY_NAME_MAX + 64];
	size_t		aad_len = KsDekBindingAad(name, (uint32) version, aad, sizeof(aad));
	uint8		wrapped[KS_WRAPPED_MAX];
	size_t		wrapped_len = 0;
	KsStatus	st;
	bytea	   *result;

	st = KsRandomBytes(dek, sizeof(dek), &err);
	if (st == KS_OK)
		st = inst->provider->wrap(inst, kms_key, dek, sizeof(dek), aad, aad_len,
								  wrapped, &wrapped_len, kek_version, &err);
	KsWipe(dek, sizeof(dek));
	if (st != KS_OK)
		KsReportError(&err);
	result = (bytea *) palloc(VARHDRSZ + wrapped_len);
	SET_VARSIZE(result, VARHDRSZ + wrapped_len);
	memcpy(VARDATA(result), wrapped, wrapped_len);
	return result;
}

/*
 * Store a new version's wrapped DEK.  KEK versions are text from 0.7 on;
 * from 0.9 on a version records the server history it was made on
 * (KsServerEpoch), so that a primary on another history rolls the key over
 * before it encrypts (dek_cache.c).
 */
static void
InsertVersion(KeyRec *rec, int32 version, bytea *wrapped, const char *kek_version)
{
	char		epoch[KS_EPOCH_LEN];
	Oid			types[5] = {INT4OID, INT4OID, BYTEAOID, TEXTOID, TEXTOID};
	Datum		values[5] = {Int32GetDatum(rec->key_id), Int32GetDatum(version),
	PointerGetDatum(wrapped), CStringGetTextDatum(kek_version), 0};

	if (KsCatalogHasEpoch())
	{
		KsServerEpoch(epoch);
		values[4] = CStringGetTextDatum(epoch);
		Exec("INSERT INTO keysmith.key_version (key_id, version, wrapped_dek, kek_version, server_epoch)"
			 " VALUES ($1, $2, $3, $4, $5)", 5, types, values, NULL, SPI_OK_INSERT);
	}
	else
		Exec(rec->text_kek ?
			 "INSERT INTO keysmith.key_version (key_id, version, wrapped_dek, kek_version) VALUES ($1, $2, $3, $4)" :
			 "INSERT INTO keysmith.key_version (key_id, version, wrapped_dek, kek_version)"
			 " VALUES ($1, $2, $3, $4::pg_catalog.int8)",
			 4, types, values, NULL, SPI_OK_INSERT);
}

/* Insert DEK version `version` of rec and make it current. */
static void
AddVersion(KeyRec *rec, int32 version)
{
	char		kek_version[KS_KEK_VERSION_LEN] = "";
	bytea	   *wrapped = WrapNewDek(rec->name, version, KeyInstance(rec), rec->kms_key, kek_version);
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2] = {Int32GetDatum(rec->key_id), Int32GetDatum(version)};

	InsertVersion(rec, version, wrapped, kek_version);
	Exec("UPDATE keysmith.key SET current_version = $2, rotated_at = pg_catalog.now()"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1", 2, types, values, NULL, SPI_OK_UPDATE);
	rec->current_version = version;
}

/*
 * The versions of rec that still have key material: (version, wrapped_dek,
 * kek_version as text), oldest first; *n of them.
 */
static SPITupleTable *
LiveVersions(KeyRec *rec, uint64 *n)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(rec->key_id)};

	Exec("SELECT version, wrapped_dek, kek_version::pg_catalog.text FROM keysmith.key_version"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1 AND wrapped_dek IS NOT NULL ORDER BY version",
		 1, types, values, NULL, SPI_OK_SELECT);
	*n = SPI_processed;
	return SPI_tuptable;
}

/* Replace the wrapped DEK of one version (rotate_kek, migrate_key). */
static void
StoreWrapped(KeyRec *rec, int32 version, const uint8 *wrapped, size_t wrapped_len, const char *kek_version)
{
	bytea	   *nw = (bytea *) palloc(VARHDRSZ + wrapped_len);
	Oid			types[4] = {INT4OID, INT4OID, BYTEAOID, TEXTOID};
	Datum		values[4];

	SET_VARSIZE(nw, VARHDRSZ + wrapped_len);
	memcpy(VARDATA(nw), wrapped, wrapped_len);
	values[0] = Int32GetDatum(rec->key_id);
	values[1] = Int32GetDatum(version);
	values[2] = PointerGetDatum(nw);
	values[3] = CStringGetTextDatum(kek_version);
	Exec(rec->text_kek ?
		 "UPDATE keysmith.key_version SET wrapped_dek = $3, kek_version = $4"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2" :
		 "UPDATE keysmith.key_version SET wrapped_dek = $3, kek_version = $4::pg_catalog.int8"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
		 4, types, values, NULL, SPI_OK_UPDATE);
}

/* rec's provider type and options, from the kms_provider row kms, locked against drop. */
static void
LoadProvider(const char *kms, KeyRec *rec)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(kms)};

	Exec("SELECT type, options::pg_catalog.text FROM keysmith.kms_provider"
		 " WHERE name OPERATOR(pg_catalog.=) $1 FOR SHARE",
		 1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("KMS provider \"%s\" does not exist", kms),
				 errhint("See keysmith.kms_providers; a superuser creates one with keysmith.create_kms_provider.")));
	rec->kms_type = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	rec->kms_options = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	rec->kms = pstrdup(kms);
	rec->inst_built = false;
}

static void
InsertAcl(int32 key_id, const char *role, const char *privilege)
{
	Oid			types[3] = {INT4OID, OIDOID, TEXTOID};
	Datum		values[3] = {Int32GetDatum(key_id), ObjectIdGetDatum(get_role_oid(role, false)),
	CStringGetTextDatum(privilege)};

	Exec("INSERT INTO keysmith.key_acl (key_id, grantee, privilege) VALUES ($1, $2::pg_catalog.regrole, $3)"
		 " ON CONFLICT DO NOTHING", 3, types, values, NULL, SPI_OK_INSERT);
}

/*
 * keysmith.create_key(name text, kms text DEFAULT 'local') RETURNS void
 *
 * A new key with DEK version 1.  Default grants: encrypt and decrypt to
 * keysmith_user, admin to keysmith_admin; narrow them with revoke_key.
 */
Datum
keysmith_create_key(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *kms;
	char	   *kms_key;
	char		kek_version[KS_KEK_VERSION_LEN] = "";
	bytea	   *wrapped;
	KsOp		op;
	KeyRec		rec;
	KsError		err;

	KsRequirePrimary("create a key", KS_PRIMARY_HINT_KEYS);
	KsRequireArg(fcinfo, 0, "name");
	KsRequireArg(fcinfo, 1, "kms");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	kms = text_to_cstring(PG_GETARG_TEXT_PP(1));
	kms_key = PG_NARGS() > 2 && !PG_ARGISNULL(2) ? text_to_cstring(PG_GETARG_TEXT_PP(2)) : NULL;
	KsCheckKeyName(name);

	OpBegin(&op);
	memset(&rec, 0, sizeof(rec));
	rec.text_kek = KsKmsCatalogHasProviders();
	if (rec.text_kek)
		LoadProvider(kms, &rec);
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
	rec.kms = kms;
	if (KeyInstance(&rec)->provider->check_key(&rec.inst, kms_key, &err) != KS_OK)
		KsReportError(&err);
	/* the KMS call comes before any write: a failure leaves nothing behind */
	wrapped = WrapNewDek(name, 1, &rec.inst, kms_key, kek_version);
	{
		Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
		Datum		values[3] = {CStringGetTextDatum(name), CStringGetTextDatum(kms),
		kms_key ? CStringGetTextDatum(kms_key) : (Datum) 0};
		char		nulls[3] = {' ', ' ', kms_key ? ' ' : 'n'};
		bool		isnull;

		Exec(rec.text_kek ?
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
		rec.name = name;
		rec.kms = kms;
		rec.kms_key = kms_key;
	}
	InsertVersion(&rec, 1, wrapped, kek_version);
	InsertAcl(rec.key_id, "keysmith_user", "encrypt");
	InsertAcl(rec.key_id, "keysmith_user", "decrypt");
	InsertAcl(rec.key_id, "keysmith_admin", "admin");
	Audit(&op, "create", &rec, 1, psprintf("kms %s", kms));
	OpEnd(&op);
	PG_RETURN_VOID();
}

/* keysmith.rotate_dek(key_name text) RETURNS integer: the new version. */
Datum
keysmith_rotate_dek(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	KsOp		op;
	KeyRec		rec;

	KsRequirePrimary("rotate a key", KS_PRIMARY_HINT_KEYS);
	OpBegin(&op);
	LockKey(name, 0, &rec);
	RequireAdmin(&op, &rec);
	RequireNotDestroyed(&rec);
	AddVersion(&rec, rec.current_version + 1);
	/* the old versions still decrypt; their shared copies are wiped all the same */
	KsSharedDekInvalidate(MyDatabaseId, (uint32) rec.key_id);
	Audit(&op, "rotate_dek", &rec, rec.current_version, NULL);
	OpEnd(&op);
	PG_RETURN_INT32(rec.current_version);
}

/*
 * Called by encrypt_value when the current version reached
 * keysmith.max_encryptions_per_dek (other_history false), or was made on
 * another server history: before a failover, or in the cluster this one
 * was restored from (other_history true), where its encryption count is
 * not this server's to know.  Only the first caller for a version rolls
 * over; the others find the key already moved on.  No admin check: the
 * caller holds encrypt, and rollover is the key's own safety rule.
 */
void
KsRollover(int32 key_id, int32 full_version, bool other_history)
{
	KsOp		op;
	KeyRec		rec;
	char		epoch[KS_EPOCH_LEN];

	OpBegin(&op);
	LockKey(NULL, key_id, &rec);
	RequireNotDestroyed(&rec);
	if (rec.current_version == full_version)
	{
		AddVersion(&rec, rec.current_version + 1);
		if (other_history)
		{
			KsServerEpoch(epoch);
			Audit(&op, "rollover", &rec, rec.current_version,
				  psprintf("version %d was made on another server history; this primary is %s", full_version, epoch));
			ereport(LOG,
					(errmsg("keysmith: key \"%s\" rolled over to version %d: version %d was made on another server history (this primary is %s)",
							rec.name, rec.current_version, full_version, epoch)));
		}
		else
		{
			Audit(&op, "rollover", &rec, rec.current_version,
				  psprintf("version %d reached keysmith.max_encryptions_per_dek (%.0f)",
						   full_version, keysmith_max_encryptions_per_dek));
			ereport(LOG,
					(errmsg("keysmith: key \"%s\" rolled over to version %d after %.0f encryptions under version %d",
							rec.name, rec.current_version, keysmith_max_encryptions_per_dek, full_version)));
		}
	}
	OpEnd(&op);
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
	KsOp		op;
	KeyRec		rec;
	int			n = 0;
	uint64		nrows;
	SPITupleTable *tuptable;
	char		last_kek[KS_KEK_VERSION_LEN] = "";
	const KsKmsInstance *inst;
	List	   *asked = NIL;	/* KEK versions whose answer is known */
	List	   *answers = NIL;

	KsRequirePrimary("rotate a key's KEK", KS_PRIMARY_HINT_KEYS);
	OpBegin(&op);
	LockKey(name, 0, &rec);
	RequireAdmin(&op, &rec);
	RequireNotDestroyed(&rec);
	inst = KeyInstance(&rec);
	tuptable = LiveVersions(&rec, &nrows);
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
		StoreWrapped(&rec, version, wrapped, wrapped_len, kek_version);
		strlcpy(last_kek, kek_version, sizeof(last_kek));
		n++;
	}
	KsSharedDekInvalidate(MyDatabaseId, (uint32) rec.key_id);
	Audit(&op, "rotate_kek", &rec, 0,
		  n > 0 ? psprintf("%d version(s) re-wrapped under KEK version %s", n, last_kek[0] ? last_kek : "(not shown by the KMS)")
		  : pstrdup("every version was already under the current KEK"));
	OpEnd(&op);
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
	KsOp		op;
	KeyRec		rec;
	KeyRec		to;
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

	OpBegin(&op);
	LockKey(name, 0, &rec);
	RequireAdmin(&op, &rec);
	RequireNotDestroyed(&rec);
	to = rec;
	memset(&to.inst, 0, sizeof(to.inst));
	LoadProvider(to_kms, &to);
	to.kms_key = to_kms_key;
	to_inst = KeyInstance(&to);
	if (to_inst->provider->check_key(to_inst, to_kms_key, &err) != KS_OK)
		KsReportError(&err);
	if (strcmp(rec.kms, to_kms) == 0 &&
		((rec.kms_key == NULL && to_kms_key == NULL) ||
		 (rec.kms_key != NULL && to_kms_key != NULL && strcmp(rec.kms_key, to_kms_key) == 0)))
	{
		OpEnd(&op);
		PG_RETURN_INT32(0);
	}
	from_inst = KeyInstance(&rec);
	from_desc = psprintf("%s%s%s", rec.kms, rec.kms_key ? " " : "", rec.kms_key ? rec.kms_key : "");
	tuptable = LiveVersions(&rec, &nrows);
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
		StoreWrapped(&rec, version, wrapped, wrapped_len, kek_version);
		n++;
	}
	{
		Oid			types[3] = {INT4OID, TEXTOID, TEXTOID};
		Datum		values[3] = {Int32GetDatum(rec.key_id), CStringGetTextDatum(to_kms),
		to_kms_key ? CStringGetTextDatum(to_kms_key) : (Datum) 0};
		char		nulls[3] = {' ', ' ', to_kms_key ? ' ' : 'n'};

		Exec("UPDATE keysmith.key SET kms = $2, kms_key = $3 WHERE key_id OPERATOR(pg_catalog.=) $1",
			 3, types, values, nulls, SPI_OK_UPDATE);
	}
	KsSharedDekInvalidate(MyDatabaseId, (uint32) rec.key_id);
	Audit(&op, "migrate", &rec, 0,
		  psprintf("%d version(s) moved from %s to %s%s%s", n, from_desc, to_kms,
				   to_kms_key ? " " : "", to_kms_key ? to_kms_key : ""));
	OpEnd(&op);
	PG_RETURN_INT32(n);
}

/* Read a version's state under the locked key; ERROR KS004 if absent. */
static char *
VersionState(KeyRec *rec, int32 version)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2] = {Int32GetDatum(rec->key_id), Int32GetDatum(version)};

	Exec("SELECT state FROM keysmith.key_version"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
		 2, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_KS_UNKNOWN_KEY_VERSION),
				 errmsg("key \"%s\" has no version %d", rec->name, version)));
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

static void
SetVersionState(KeyRec *rec, int32 version, const char *state)
{
	Oid			types[3] = {INT4OID, INT4OID, TEXTOID};
	Datum		values[3] = {Int32GetDatum(rec->key_id), Int32GetDatum(version), CStringGetTextDatum(state)};

	Exec("UPDATE keysmith.key_version SET state = $3,"
		 "  retired_at = CASE WHEN $3 OPERATOR(pg_catalog.=) 'retired' THEN pg_catalog.now() END,"
		 "  destroyed_at = CASE WHEN $3 OPERATOR(pg_catalog.=) 'destroyed' THEN pg_catalog.now() END,"
		 "  wrapped_dek = CASE WHEN $3 OPERATOR(pg_catalog.=) 'destroyed' THEN NULL ELSE wrapped_dek END"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
		 3, types, values, NULL, SPI_OK_UPDATE);
}

static void
RequireNotCurrent(KeyRec *rec, int32 version, const char *what)
{
	if (version == rec->current_version)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot %s version %d of key \"%s\": it is the current version", what, version, rec->name),
				 errhint("Run keysmith.rotate_dek('%s') first.", rec->name)));
}

/* Shared body of retire / restore / destroy of one version. */
static void
ChangeVersion(FunctionCallInfo fcinfo, const char *action)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		version = PG_GETARG_INT32(1);
	KsOp		op;
	KeyRec		rec;
	char	   *state;

	KsRequirePrimary("change a key version", KS_PRIMARY_HINT_KEYS);
	OpBegin(&op);
	LockKey(name, 0, &rec);
	RequireAdmin(&op, &rec);
	RequireNotDestroyed(&rec);
	state = VersionState(&rec, version);
	if (strcmp(state, "destroyed") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_KS_KEY_DESTROYED),
				 errmsg("version %d of key \"%s\" has been destroyed", version, rec.name),
				 errdetail("Destruction cannot be undone.")));
	if (strcmp(action, "retire") == 0)
	{
		RequireNotCurrent(&rec, version, "retire");
		if (strcmp(state, "retired") != 0)
			SetVersionState(&rec, version, "retired");
	}
	else if (strcmp(action, "restore") == 0)
	{
		if (strcmp(state, "active") != 0)
			SetVersionState(&rec, version, "active");
	}
	else
	{
		RequireNotCurrent(&rec, version, "destroy");
		SetVersionState(&rec, version, "destroyed");
	}
	if (strcmp(action, "restore") != 0)
		KsSharedDekInvalidate(MyDatabaseId, (uint32) rec.key_id);
	Audit(&op, action, &rec, version, NULL);
	OpEnd(&op);
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
	KsOp		op;
	KeyRec		rec;
	Oid			types[1] = {INT4OID};
	Datum		values[1];
	int			n;

	KsRequirePrimary("destroy a key", KS_PRIMARY_HINT_KEYS);
	OpBegin(&op);
	LockKey(name, 0, &rec);
	RequireAdmin(&op, &rec);
	RequireNotDestroyed(&rec);
	values[0] = Int32GetDatum(rec.key_id);
	Exec("UPDATE keysmith.key_version SET state = 'destroyed', wrapped_dek = NULL,"
		 "  destroyed_at = pg_catalog.now()"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1 AND state OPERATOR(pg_catalog.<>) 'destroyed'",
		 1, types, values, NULL, SPI_OK_UPDATE);
	n = (int) SPI_processed;
	Exec("UPDATE keysmith.key SET state = 'destroyed', destroyed_at = pg_catalog.now()"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1", 1, types, values, NULL, SPI_OK_UPDATE);
	KsSharedDekInvalidate(MyDatabaseId, (uint32) rec.key_id);
	Audit(&op, "destroy", &rec, 0, psprintf("%d version(s) erased", n));
	OpEnd(&op);
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
	KsOp		op;
	KeyRec		rec;

	KsRequirePrimary("grant or revoke key privileges", KS_PRIMARY_HINT_KEYS);
	OpBegin(&op);
	LockKey(name, 0, &rec);
	RequireAdmin(&op, &rec);
	if (grant)
	{
		RequireNotDestroyed(&rec);
		InsertAcl(rec.key_id, role, KsPrivilegeNames[priv]);
	}
	else
	{
		Oid			types[3] = {INT4OID, OIDOID, TEXTOID};
		Datum		values[3] = {Int32GetDatum(rec.key_id), ObjectIdGetDatum(roleid),
		CStringGetTextDatum(KsPrivilegeNames[priv])};

		Exec("DELETE FROM keysmith.key_acl WHERE key_id OPERATOR(pg_catalog.=) $1"
			 " AND grantee::pg_catalog.oid OPERATOR(pg_catalog.=) $2 AND privilege OPERATOR(pg_catalog.=) $3",
			 3, types, values, NULL, SPI_OK_DELETE);
	}
	Audit(&op, grant ? "grant" : "revoke", &rec, 0,
		  psprintf("%s %s %s", KsPrivilegeNames[priv], grant ? "to" : "from", quote_identifier(role)));
	OpEnd(&op);
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
	KsOp		op;

	KsRequirePrimary("add a master key", KS_PRIMARY_HINT_KEYS);
	if (KsLocalAppendKey(keysmith_local_master_key_file, &version, &err) != KS_OK)
		KsReportError(&err);
	OpBegin(&op);
	Audit(&op, "add_master_key", NULL, 0, psprintf("local master key version %u", version));
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
	PG_RETURN_INT64((int64) KsCounterValue(PG_GETARG_INT32(0), PG_GETARG_INT32(1)));
}
