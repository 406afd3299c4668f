/*
 * extension/keys/key_store.c
 *
 * The key store: the one module that reads and writes keysmith.key and
 * keysmith.key_version.  The lifecycle functions (extension/keys/keys.c)
 * lock a key row, add or rewrap versions and audit through it; the DEK cache
 * (extension/keys/dek_cache.c) reads key versions through it (by index,
 * extension/keys/key_scan.c); and the
 * automatic rollover lives here, because encrypt_value, the cache and
 * rotate_dek all move a key to a new version the same way.
 *
 * Writers run as the key tables' owner through SPI (extension/common/
 * owner_spi.c), with the key row locked so concurrent lifecycle calls on one
 * key serialise.  KMS work (wrapping) happens before any write, so a KMS
 * failure leaves the tables untouched.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"

#include "extension/common/catalog.h"
#include "extension/common/errors.h"
#include "extension/common/guc.h"
#include "extension/keys/key_lifecycle.h"
#include "extension/keys/counters.h"
#include "extension/keys/key_state.h"
#include "extension/keys/kek_check.h"
#include "extension/keys/key_store.h"
#include "kms/envelope.h"

static KsKeyStoreChangedFn OnChange = NULL;
static KsMemberWrapFn MemberWrap = NULL;
static KsNewVersionCheckFn NewVersionCheck = NULL;
static KsKmsKeyCheckFn KmsKeyCheck = NULL;

void
KsKeyStoreBeforeWrap(KsKmsKeyCheckFn fn)
{
	KmsKeyCheck = fn;
}

void
KsKeyStoreBeforeNewVersion(KsNewVersionCheckFn fn)
{
	NewVersionCheck = fn;
}

void
KsKeyStoreOnChange(KsKeyStoreChangedFn fn)
{
	OnChange = fn;
}

void
KsKeyStoreOnMemberWrap(KsMemberWrapFn fn)
{
	MemberWrap = fn;
}

size_t
KsMemberBinding(const char *name, uint32 version, uint8 *out, size_t out_len)
{
	static const char label[] = "keysmith family member";	/* with its NUL */
	size_t		n;

	if (out_len < sizeof(label))
		return 0;
	memcpy(out, label, sizeof(label));
	n = KsDekBindingAad(name, version, out + sizeof(label), out_len - sizeof(label));
	return n == 0 ? 0 : sizeof(label) + n;
}

void
KsMemberParse(const char *name, uint32 version, uint32 parent_id, const bytea *wrapped, KsHeader *hdr)
{
	KsError		err;
	size_t		len = VARSIZE_ANY_EXHDR(wrapped);

	if (KsParseHeader((const uint8 *) VARDATA_ANY(wrapped), len, hdr, &err) != KS_OK ||
		len != KS_OVERHEAD + KS_DEK_LEN || hdr->key_id != parent_id)
		ereport(ERROR,
				(errcode(ERRCODE_KS_UNWRAP_FAILED),
				 errmsg("wrapped data key of version %u of key \"%s\" is not one its family sealed", version, name)));
}

void
KsMemberOpen(KsAead *family, const char *family_name, const KsHeader *hdr,
			 const char *name, uint32 version, const bytea *wrapped, uint8 *dek)
{
	uint8		binding[KS_MEMBER_BINDING_MAX];
	KsContext	ctx;
	KsError		err;

	ctx.present = true;
	ctx.data = binding;
	ctx.len = KsMemberBinding(name, version, binding, sizeof(binding));
	if (ctx.len == 0)
		elog(ERROR, "key name too long for binding");
	if (KsAeadOpen(family, hdr, &ctx, (const uint8 *) VARDATA_ANY(wrapped), VARSIZE_ANY_EXHDR(wrapped),
				   dek, &err) != KS_OK)
		ereport(ERROR,
				(errcode(ERRCODE_KS_UNWRAP_FAILED),
				 errmsg("wrapped data key of version %u of key \"%s\" does not authenticate under version %u of its family \"%s\"",
						version, name, hdr->key_version, family_name)));
}

void
KsKeyRequireReadCommitted(const char *what)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("cannot %s in a REPEATABLE READ or SERIALIZABLE transaction", what),
				 errdetail("It must see every key version committed while it runs, which a transaction snapshot hides."),
				 errhint("Run it at READ COMMITTED.")));
}

void
KsKeyRequireNotFamily(KsKeyRec *rec, const char *what)
{
	if (rec->family)
		ereport(ERROR,
				(errcode(ERRCODE_KS_KEY_FAMILY),
				 errmsg("cannot %s key \"%s\": it is a key family", what, rec->name),
				 errdetail("A family wraps its members' data keys and encrypts no values.")));
}

void
KsKeyRequireNotMember(KsKeyRec *rec, const char *what)
{
	if (rec->parent_id != 0)
		ereport(ERROR,
				(errcode(ERRCODE_KS_KEY_FAMILY),
				 errmsg("cannot %s key \"%s\": it is a member of key family \"%s\"", what, rec->name,
						rec->parent_name ? rec->parent_name : "?"),
				 errdetail("A member's data keys are wrapped by its family's, not by a KMS."),
				 errhint("Run it on the family instead.")));
}

/*
 * The key's provider instance, built on first use: most lifecycle calls
 * (grants, retire, destroy) never talk to the KMS.
 */
const KsKmsInstance *
KsKeyInstance(KsKeyRec *rec)
{
	if (!rec->inst_built)
	{
		KsKmsInstanceBuild(rec->kms, rec->kms_type, rec->kms_options, &rec->inst);
		rec->inst_built = true;
	}
	return &rec->inst;
}

void
KsKeyOpBegin(KsKeyOp *op)
{
	op->invoker = GetUserId();
	KsOwnerSpiBegin(&op->spi);
}

void
KsKeyOpEnd(KsKeyOp *op)
{
	KsOwnerSpiEnd(&op->spi);
	/* other backends at their next transaction, this one now */
	CacheInvalidateRelcacheByRelid(KsKeyTableOid());
	/* the key states are cached apart from the DEKs, maybe without a DEK cache */
	KsKeyStatesFlush();
	if (OnChange)
		OnChange();
}

void
KsKeyOpEndCreated(KsKeyOp *op)
{
	KsOwnerSpiEnd(&op->spi);
}

/* A read-write statement with a fresh snapshot, all rows. */
void
KsKeyExec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls, int expect)
{
	KsSpiExec(sql, nargs, types, values, nulls, false, 0, expect);
}

/*
 * Lock and read a key, by name (name != NULL) or by id.  An unknown name is
 * the caller's mistake (42704); an unknown id cannot happen.
 */
static void ReadKey(const char *name, int32 key_id, KsKeyRec *rec, bool lock);

void
KsKeyLock(const char *name, int32 key_id, KsKeyRec *rec)
{
	ReadKey(name, key_id, rec, true);
}

void
KsKeyPeek(const char *name, KsKeyRec *rec)
{
	ReadKey(name, 0, rec, false);
}

static void
ReadKey(const char *name, int32 key_id, KsKeyRec *rec, bool lock)
{
	Oid			types[1] = {name ? TEXTOID : INT4OID};
	Datum		values[1] = {name ? CStringGetTextDatum(name) : Int32GetDatum(key_id)};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;

	bool		has_providers = KsKmsCatalogHasProviders();
	bool		has_families = has_providers && KsCatalogHasFamilies();
#define LOCK_KEY_SQL(cols, join, where) \
	"SELECT k.key_id, k.name, k.kms, k.current_version, k.state OPERATOR(pg_catalog.=) " KS_KEY_DESTROYED_SQL cols \
	"  FROM keysmith.key k" join " WHERE " where " FOR UPDATE OF k"
#define PEEK_KEY_SQL(cols, join, where) \
	"SELECT k.key_id, k.name, k.kms, k.current_version, k.state OPERATOR(pg_catalog.=) " KS_KEY_DESTROYED_SQL cols \
	"  FROM keysmith.key k" join " WHERE " where
#define KS_FAMILY_COLS KS_KMS_COLS_07 ", k.family, k.parent_id," \
	" (SELECT p.name FROM keysmith.key p WHERE p.key_id OPERATOR(pg_catalog.=) k.parent_id)"

	if (has_families && !lock)
		KsKeyExec(PEEK_KEY_SQL(KS_FAMILY_COLS, KS_KMS_JOIN_07, "k.name OPERATOR(pg_catalog.=) $1"),
				  1, types, values, NULL, SPI_OK_SELECT);
	else if (!lock)
		elog(ERROR, "keysmith: reading a key without a lock needs a 0.11 catalog");
	else if (has_families)
		KsKeyExec(name ? LOCK_KEY_SQL(KS_FAMILY_COLS, KS_KMS_JOIN_07, "k.name OPERATOR(pg_catalog.=) $1") :
			 LOCK_KEY_SQL(KS_FAMILY_COLS, KS_KMS_JOIN_07, "k.key_id OPERATOR(pg_catalog.=) $1"),
			 1, types, values, NULL, SPI_OK_SELECT);
	else if (has_providers)
		KsKeyExec(name ? LOCK_KEY_SQL(KS_KMS_COLS_07, KS_KMS_JOIN_07, "k.name OPERATOR(pg_catalog.=) $1") :
			 LOCK_KEY_SQL(KS_KMS_COLS_07, KS_KMS_JOIN_07, "k.key_id OPERATOR(pg_catalog.=) $1"),
			 1, types, values, NULL, SPI_OK_SELECT);
	else
		KsKeyExec(name ? LOCK_KEY_SQL(KS_KMS_COLS_06, KS_KMS_JOIN_06, "k.name OPERATOR(pg_catalog.=) $1") :
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
	rec->family = false;
	rec->parent_id = 0;
	rec->parent_name = NULL;
	if (has_families)
	{
		rec->family = DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull));
		rec->parent_id = DatumGetInt32(SPI_getbinval(tup, desc, 10, &isnull));
		if (isnull)
			rec->parent_id = 0;
		rec->parent_name = SPI_getvalue(tup, desc, 11);
	}
}

void
KsKeyRequireNotDestroyed(KsKeyRec *rec)
{
	if (rec->destroyed)
		ereport(ERROR,
				(errcode(ERRCODE_KS_KEY_DESTROYED),
				 errmsg("key \"%s\" has been destroyed", rec->name)));
}

/* Append a row to keysmith.key_event. */
void
KsKeyAudit(KsKeyOp *op, const char *event, KsKeyRec *rec, int32 version, const char *detail)
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
	KsKeyExec("INSERT INTO keysmith.key_event (event, key_id, key_name, key_version, session_role, acting_role, detail)"
		 " VALUES ($1, $2, $3, $4, $5, $6, $7)", 7, types, values, nulls, SPI_OK_INSERT);
}

/*
 * A fresh random DEK for (name, version), wrapped by the key's provider
 * (kms names it); kek_version receives the KEK version used.  The wrap is
 * checked against the KEK this database recorded (KsKekCheckWrap) before
 * the caller stores anything.
 */
bytea *
KsKeyWrapNewDek(const char *name, int32 version, const KsKmsInstance *inst, const char *kms,
				const char *kms_key, char *kek_version)
{
	KsError		err;
	uint8		dek[KS_DEK_LEN];
	uint8		aad[KS_KEY_NAME_MAX + 64];
	size_t		aad_len = KsDekBindingAad(name, (uint32) version, aad, sizeof(aad));
	uint8		wrapped[KS_WRAPPED_MAX];
	size_t		wrapped_len = 0;
	KsStatus	st;
	bytea	   *result;

	/* no check value to compare (a provider without one, a catalog before 0.11): the data keys decide */
	if ((inst->provider->kek_check == NULL || !KsCatalogHasKekCheck()) && KmsKeyCheck != NULL)
		KmsKeyCheck(kms, kms_key);
	st = KsRandomBytes(dek, sizeof(dek), &err);
	if (st == KS_OK)
		st = inst->provider->wrap(inst, kms_key, dek, sizeof(dek), aad, aad_len,
								  wrapped, &wrapped_len, kek_version, &err);
	KsWipe(dek, sizeof(dek));
	if (st != KS_OK)
		KsReportError(&err);
	KsKekCheckWrap(inst, kms, kms_key, wrapped, wrapped_len, aad, aad_len);
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
void
KsKeyInsertVersion(KsKeyRec *rec, int32 version, bytea *wrapped, const char *kek_version)
{
	char		epoch[KS_EPOCH_LEN];
	Oid			types[5] = {INT4OID, INT4OID, BYTEAOID, TEXTOID, TEXTOID};
	Datum		values[5] = {Int32GetDatum(rec->key_id), Int32GetDatum(version),
	PointerGetDatum(wrapped), CStringGetTextDatum(kek_version), 0};

	if (KsCatalogHasEpoch())
	{
		KsServerEpoch(epoch);
		values[4] = CStringGetTextDatum(epoch);
		KsKeyExec("INSERT INTO keysmith.key_version (key_id, version, wrapped_dek, kek_version, server_epoch)"
			 " VALUES ($1, $2, $3, $4, $5)", 5, types, values, NULL, SPI_OK_INSERT);
	}
	else
		KsKeyExec(rec->text_kek ?
			 "INSERT INTO keysmith.key_version (key_id, version, wrapped_dek, kek_version) VALUES ($1, $2, $3, $4)" :
			 "INSERT INTO keysmith.key_version (key_id, version, wrapped_dek, kek_version)"
			 " VALUES ($1, $2, $3, $4::pg_catalog.int8)",
			 4, types, values, NULL, SPI_OK_INSERT);
	/* a new DEK: this server knows its count, zero (extension/keys/counters.c) */
	KsCounterCreate(rec->key_id, version);
}

/*
 * A member's version: wrapped by family version wrapped_by (kek_version
 * 'parent'), from the same server history rule as any version.
 */
void
KsKeyInsertMemberVersion(KsKeyRec *rec, int32 version, bytea *wrapped, int32 wrapped_by)
{
	char		epoch[KS_EPOCH_LEN];
	Oid			types[5] = {INT4OID, INT4OID, BYTEAOID, TEXTOID, INT4OID};
	Datum		values[5];

	KsServerEpoch(epoch);
	values[0] = Int32GetDatum(rec->key_id);
	values[1] = Int32GetDatum(version);
	values[2] = PointerGetDatum(wrapped);
	values[3] = CStringGetTextDatum(epoch);
	values[4] = Int32GetDatum(wrapped_by);
	KsKeyExec("INSERT INTO keysmith.key_version (key_id, version, wrapped_dek, kek_version, server_epoch, wrapped_by)"
		 " VALUES ($1, $2, $3, 'parent', $4, $5)", 5, types, values, NULL, SPI_OK_INSERT);
	KsCounterCreate(rec->key_id, version);
}

/* Insert DEK version `version` of rec and make it current. */
void
KsKeyAddVersion(KsKeyRec *rec, int32 version)
{
	Oid			types[2] = {INT4OID, INT4OID};
	Datum		values[2] = {Int32GetDatum(rec->key_id), Int32GetDatum(version)};

	if (rec->parent_id != 0)
	{
		int32		wrapped_by = 0;
		bytea	   *wrapped;

		if (MemberWrap == NULL)
			elog(ERROR, "keysmith: key families are not set up in this process");
		wrapped = MemberWrap(rec->parent_id, rec->name, version, &wrapped_by);
		KsKeyInsertMemberVersion(rec, version, wrapped, wrapped_by);
	}
	else
	{
		char		kek_version[KS_KEK_VERSION_LEN] = "";
		bytea	   *wrapped;

		if (NewVersionCheck != NULL)
			NewVersionCheck(rec);
		wrapped = KsKeyWrapNewDek(rec->name, version, KsKeyInstance(rec), rec->kms, rec->kms_key, kek_version);

		KsKeyInsertVersion(rec, version, wrapped, kek_version);
	}
	KsKeyExec("UPDATE keysmith.key SET current_version = $2, rotated_at = pg_catalog.now()"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1", 2, types, values, NULL, SPI_OK_UPDATE);
	rec->current_version = version;
}

/*
 * The versions of rec that still have key material: (version, wrapped_dek,
 * kek_version as text), oldest first; *n of them.
 */
SPITupleTable *
KsKeyLiveVersions(KsKeyRec *rec, uint64 *n)
{
	Oid			types[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(rec->key_id)};

	KsKeyExec("SELECT version, wrapped_dek, kek_version::pg_catalog.text FROM keysmith.key_version"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1 AND wrapped_dek IS NOT NULL ORDER BY version",
		 1, types, values, NULL, SPI_OK_SELECT);
	*n = SPI_processed;
	return SPI_tuptable;
}

/* Replace the wrapped DEK of one version (rotate_kek, migrate_key). */
void
KsKeyStoreWrapped(KsKeyRec *rec, int32 version, const uint8 *wrapped, size_t wrapped_len, const char *kek_version)
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
	KsKeyExec(rec->text_kek ?
		 "UPDATE keysmith.key_version SET wrapped_dek = $3, kek_version = $4"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2" :
		 "UPDATE keysmith.key_version SET wrapped_dek = $3, kek_version = $4::pg_catalog.int8"
		 " WHERE key_id OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
		 4, types, values, NULL, SPI_OK_UPDATE);
}

/* rec's provider type and options, from the kms_provider row kms, locked against drop. */
void
KsKeyLoadProvider(const char *kms, KsKeyRec *rec)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(kms)};

	KsKeyExec("SELECT type, options::pg_catalog.text FROM keysmith.kms_provider"
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

void
KsKeyInsertAcl(int32 key_id, const char *role, const char *privilege)
{
	Oid			types[3] = {INT4OID, OIDOID, TEXTOID};
	Datum		values[3] = {Int32GetDatum(key_id), ObjectIdGetDatum(get_role_oid(role, false)),
	CStringGetTextDatum(privilege)};

	KsKeyExec("INSERT INTO keysmith.key_acl (key_id, grantee, privilege) VALUES ($1, $2::pg_catalog.regrole, $3)"
		 " ON CONFLICT DO NOTHING", 3, types, values, NULL, SPI_OK_INSERT);
}

/*
 * Called by encrypt_value when the current version reached
 * keysmith.max_encryptions_per_dek (KS_ROLLOVER_LIMIT), when this server
 * does not know how often it was used (KS_ROLLOVER_COUNT_UNKNOWN: after a
 * crash, a restore or an eviction of its counter, extension/keys/counters.c),
 * or when it was made on another server history: before a failover, or in
 * the cluster this one was restored from (KS_ROLLOVER_OTHER_HISTORY).  Only
 * the first caller for a version rolls over; the others find the key already
 * moved on.  No admin check: the caller holds encrypt, and rollover is the
 * key's own safety rule.
 */
void
KsRollover(int32 key_id, int32 full_version, KsRolloverReason why)
{
	static bool said_unknown = false;
	KsKeyOp		op;
	KsKeyRec	rec;
	char		epoch[KS_EPOCH_LEN];

	KsKeyOpBegin(&op);
	KsKeyLock(NULL, key_id, &rec);
	KsKeyRequireNotDestroyed(&rec);
	if (rec.current_version == full_version)
	{
		KsKeyAddVersion(&rec, rec.current_version + 1);
		switch (why)
		{
			case KS_ROLLOVER_OTHER_HISTORY:
				KsServerEpoch(epoch);
				KsKeyAudit(&op, "rollover", &rec, rec.current_version,
						   psprintf("version %d was made on another server history; this primary is %s", full_version, epoch));
				ereport(LOG,
						(errmsg("keysmith: key \"%s\" rolled over to version %d: version %d was made on another server history (this primary is %s)",
								rec.name, rec.current_version, full_version, epoch)));
				break;
			case KS_ROLLOVER_COUNT_UNKNOWN:
				KsKeyAudit(&op, "rollover", &rec, rec.current_version,
						   psprintf("this server does not know how often version %d was used", full_version));
				/* after a crash every key does this once: one line per backend */
				if (!said_unknown)
					ereport(LOG,
							(errmsg("keysmith: key \"%s\" rolled over to version %d: this server does not know how often version %d was used",
									rec.name, rec.current_version, full_version),
							 errdetail("Encryption counts are kept in shared memory and across clean restarts; after a crash, a restore or an eviction (keysmith.counter_slots) a key rolls over once instead.  Further such rollovers by this backend are audited in keysmith.key_event only.")));
				said_unknown = true;
				break;
			case KS_ROLLOVER_LIMIT:
				KsKeyAudit(&op, "rollover", &rec, rec.current_version,
						   psprintf("version %d reached keysmith.max_encryptions_per_dek (%.0f)",
									full_version, keysmith_max_encryptions_per_dek));
				ereport(LOG,
						(errmsg("keysmith: key \"%s\" rolled over to version %d after %.0f encryptions under version %d",
								rec.name, rec.current_version, keysmith_max_encryptions_per_dek, full_version)));
				break;
		}
	}
	KsKeyOpEnd(&op);
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

/*
 * Read one key version.  With name, the key's current version; else
 * (key_id, version).  Until 0.11 this was a statement run as the key
 * tables' owner, read-only; now it is a direct index read with the same
 * trust check, snapshot and result (key_scan.c), for the DEK cache's cold
 * path and ciphertext_info, which check the caller's privileges themselves.
 */
void
KsKeyFetchRow(const char *name, uint32 key_id, uint32 version, KsKeyRow *row)
{
	KsKeyScanRow(name, key_id, version, row);
}

/*
 * Was the key version of row made on another server history than this
 * primary's (KsServerEpoch)?  Versions from before 0.9 record none, and
 * count as made elsewhere: the update rolls each key over once.  A catalog
 * before 0.9, or a version without a row, says no.  The row read the
 * version's server_epoch with it, so this asks the tables nothing.
 */
bool
KsKeyMadeOnOtherHistory(const KsKeyRow *row)
{
	char		epoch[KS_EPOCH_LEN];

	if (!row->has_epoch || row->version_state == NULL)
		return false;
	KsServerEpoch(epoch);
	return row->server_epoch == NULL || strcmp(row->server_epoch, epoch) != 0;
}

bool
KsKeyStoreHasFamilies(void)
{
	return KsKeyScanHasFamilies();
}

char *
KsKeyNameById(uint32 key_id)
{
	KsKeyRow		row;

	KsKeyFetchRow(NULL, key_id, 0, &row);
	return row.found_key ? row.name : NULL;
}
