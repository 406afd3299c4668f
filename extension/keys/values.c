/*
 * extension/keys/values.c
 *
 * The SQL-callable functions on envelope-encrypted values: encrypt_value,
 * decrypt_value, decrypt_value_bytea, rewrap_value (onto the key's current
 * version), ciphertext_info and ciphertext_needs_reencrypt (the header
 * only); and those of the data-key caches: flush_dek_cache (this
 * backend's), flush_shared_dek_cache and dek_cache_stats (the cluster-wide
 * one, dek_shared.c).  Keys are created and managed in keys.c.
 *
 * KsEncryptBytes and KsDecryptBytes, the bodies of encrypt_value and
 * decrypt_value_bytea, also serve the secrets store (secret_store.c).
 * Every encryption is counted against its DEK version (counters.c); a
 * version that reaches keysmith.max_encryptions_per_dek is rolled over to
 * a new one (KsRollover, keys.c) before the value is sealed.
 *
 * They stay thin: argument handling and ereport here, the cryptography in
 * kms/, the key lookups and privilege checks in dek_cache.c and
 * key_acl.c.  Every plaintext they make (a decrypted value, a detoasted
 * copy of one to encrypt, a value being rewrapped) is a secret buffer
 * (secret_mem.h), wiped with its memory context or at once.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/inval.h"

#include "extension/common/errors.h"
#include "extension/common/owner_spi.h"
#include "extension/common/secret_mem.h"
#include "extension/keys/counters.h"
#include "extension/keys/dek_cache.h"
#include "extension/keys/dek_shared.h"
#include "extension/keys/key_acl.h"
#include "extension/keys/key_state.h"
#include "extension/keys/key_store.h"
#include "extension/keys/values.h"

PG_FUNCTION_INFO_V1(keysmith_encrypt_value);
PG_FUNCTION_INFO_V1(keysmith_decrypt_value);
PG_FUNCTION_INFO_V1(keysmith_decrypt_value_bytea);
PG_FUNCTION_INFO_V1(keysmith_ciphertext_info);
PG_FUNCTION_INFO_V1(keysmith_flush_dek_cache);
PG_FUNCTION_INFO_V1(keysmith_flush_shared_dek_cache);
PG_FUNCTION_INFO_V1(keysmith_dek_cache_stats);
PG_FUNCTION_INFO_V1(keysmith_rewrap_value);
PG_FUNCTION_INFO_V1(keysmith_ciphertext_needs_reencrypt);

/* The optional context argument at position argno. */
static inline void
GetContextArg(FunctionCallInfo fcinfo, int argno, KsContext *context)
{
	if (PG_NARGS() > argno && !PG_ARGISNULL(argno))
	{
		text	   *t = PG_GETARG_TEXT_PP(argno);

		context->present = true;
		context->data = (const uint8 *) VARDATA_ANY(t);
		context->len = VARSIZE_ANY_EXHDR(t);
	}
	else
	{
		context->present = false;
		context->data = NULL;
		context->len = 0;
	}
}


/*
 * Count one encryption under dek's version.  Past the limit, or where this
 * server does not know the version's count (extension/keys/counters.c),
 * roll the key over to a new version and use that (checking priv again, as
 * the caller's lookup did).  Returns the DEK to encrypt with.
 *
 * A new version can be full at once: a transaction that made the same
 * version number and encrypted under it, then aborted, left its count
 * (counters.c keeps the larger).  Any role with encrypt can leave such
 * counts for as many numbers ahead as it pays encryptions for, so the
 * loop goes on while each rollover moves the key to a higher version,
 * and gives up only after three rollovers that did not; otherwise the
 * error would abort the versions made, and the key would never encrypt
 * again.
 */
static KsDek *
TakeEncryption(const char *name, int name_len, KsDek *dek, KsPrivilege priv)
{
	int			stalled = 0;

	for (;;)
	{
		KsCountResult r = KsCounterTake((int32) dek->key_id, (int32) dek->version, &dek->counter);
		uint32		before = dek->version;

		if (r == KS_COUNT_OK)
			return dek;
		if (stalled >= 3)
			ereport(ERROR,
					(errcode(ERRCODE_KS_KMS_FAILURE),
					 errmsg("key \"%s\" could not roll over to a new version", dek->name)));
		CHECK_FOR_INTERRUPTS();
		KsRollover((int32) dek->key_id, (int32) dek->version,
				   r == KS_COUNT_FULL ? KS_ROLLOVER_LIMIT : KS_ROLLOVER_COUNT_UNKNOWN);
		dek = KsDekForEncrypt(name, name_len, priv);
		stalled = dek->version > before ? 0 : stalled + 1;
	}
}

/* Seal pt under dek into a new bytea. */
static bytea *
SealValue(KsDek *dek, const KsContext *context, const uint8 *pt, size_t pt_len)
{
	KsHeader	hdr;
	KsError		err;
	bytea	   *result;

	hdr.format_version = KS_FORMAT_VERSION;
	hdr.algorithm = KS_ALG_AES256GCM;
	hdr.key_id = dek->key_id;
	hdr.key_version = dek->version;
	if (KsNextNonce(hdr.nonce, &err) != KS_OK)
		KsReportError(&err);
	result = (bytea *) palloc(VARHDRSZ + pt_len + KS_OVERHEAD);
	SET_VARSIZE(result, VARHDRSZ + pt_len + KS_OVERHEAD);
	if (KsAeadSeal(dek->aead, &hdr, context, pt, pt_len, (uint8 *) VARDATA(result), &err) != KS_OK)
		KsReportError(&err);
	return result;
}

static void
CheckPlaintextSize(size_t pt_len)
{
	if (pt_len > KS_MAX_PLAINTEXT)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("value of %zu bytes is too large to encrypt", pt_len),
				 errdetail("The largest value keysmith encrypts is %zu bytes.",
						   (size_t) KS_MAX_PLAINTEXT)));
}

/*
 * keysmith.encrypt_value(key_name text, plaintext text|bytea,
 *                        context text DEFAULT NULL) RETURNS bytea
 *
 * The per-row path: a cache hit, a nonce from the pool, one GCM pass.
 */
Datum
keysmith_encrypt_value(PG_FUNCTION_ARGS)
{
	text	   *name;
	bytea	   *pt;
	KsContext	context;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	name = PG_GETARG_TEXT_PP(0);
	pt = (bytea *) KsSecretArg(fcinfo, 1);
	GetContextArg(fcinfo, 2, &context);
	PG_RETURN_BYTEA_P(KsEncryptBytes(VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name),
									 (const uint8 *) VARDATA_ANY(pt), VARSIZE_ANY_EXHDR(pt), &context));
}

/*
 * Encrypt pt under the current DEK version of key name, with the current
 * user's encrypt privilege; the body of encrypt_value, also used by the
 * secrets store.
 */
bytea *
KsEncryptBytes(const char *name, int name_len, const uint8 *pt, size_t pt_len, const KsContext *context)
{
	KsDek	   *dek;

	CheckPlaintextSize(pt_len);
	dek = KsDekForEncrypt(name, name_len, KS_PRIV_ENCRYPT);
	dek = TakeEncryption(name, name_len, dek, KS_PRIV_ENCRYPT);
	return SealValue(dek, context, pt, pt_len);
}

/*
 * Decrypt ct with the current user's decrypt privilege on its key; the body
 * of both decrypt functions, also used by the secrets store.  The result is
 * a secret buffer in the current memory context (never pfree it:
 * KsSecretFree), with one spare byte after its data (room for a NUL).
 */
bytea *
KsDecryptBytes(const uint8 *ct, size_t ct_len, const KsContext *context)
{
	KsHeader	hdr;
	KsError		err;
	KsDek	   *dek;
	bytea	   *result;

	if (KsParseHeader(ct, ct_len, &hdr, &err) != KS_OK)
		KsReportError(&err);
	dek = KsDekForDecrypt(hdr.key_id, hdr.key_version, KS_PRIV_DECRYPT);
	if (dek->retired)
		ereport(ERROR,
				(errcode(ERRCODE_KS_VERSION_RETIRED),
				 errmsg("version %u of key \"%s\" is retired", hdr.key_version, dek->name),
				 errhint("Re-encrypt the value with keysmith.rewrap_value or keysmith.reencrypt, "
						 "or undo with keysmith.restore_key_version.")));

	result = (bytea *) KsSecretVarlena(CurrentMemoryContext, ct_len - KS_OVERHEAD, 1);
	if (KsAeadOpen(dek->aead, &hdr, context, ct, ct_len, (uint8 *) VARDATA(result), &err) != KS_OK)
		KsReportError(&err);
	return result;
}

static bytea *
DecryptCommon(FunctionCallInfo fcinfo)
{
	bytea	   *ct = PG_GETARG_BYTEA_PP(0);
	KsContext	context;

	GetContextArg(fcinfo, 1, &context);
	return KsDecryptBytes((const uint8 *) VARDATA_ANY(ct), VARSIZE_ANY_EXHDR(ct), &context);
}

/* keysmith.decrypt_value(ciphertext bytea, context text DEFAULT NULL) RETURNS text */
Datum
keysmith_decrypt_value(PG_FUNCTION_ARGS)
{
	bytea	   *result;
	int			len;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	result = DecryptCommon(fcinfo);
	len = VARSIZE(result) - VARHDRSZ;
	/* on this ERROR the result is wiped with the query's memory */
	if (!pg_verify_mbstr(GetDatabaseEncoding(), VARDATA(result), len, true))
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("decrypted value is not valid in encoding \"%s\"",
						GetDatabaseEncodingName()),
				 errhint("Use keysmith.decrypt_value_bytea for binary values.")));
	PG_RETURN_TEXT_P((text *) result);
}

/* keysmith.decrypt_value_bytea(ciphertext bytea, context text DEFAULT NULL) RETURNS bytea */
Datum
keysmith_decrypt_value_bytea(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_BYTEA_P(DecryptCommon(fcinfo));
}

/*
 * keysmith.ciphertext_info(ciphertext bytea) RETURNS record
 *
 * Reads the header only.  key_name is NULL when the key id is not in this
 * database (for example a value copied from elsewhere).
 */
Datum
keysmith_ciphertext_info(PG_FUNCTION_ARGS)
{
	bytea	   *ct = PG_GETARG_BYTEA_PP(0);
	KsHeader	hdr;
	KsError		err;
	TupleDesc	desc;
	Datum		values[7];
	bool		nulls[7] = {false};
	char	   *name;
	bytea	   *nonce;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (KsParseHeader((const uint8 *) VARDATA_ANY(ct), VARSIZE_ANY_EXHDR(ct),
					  &hdr, &err) != KS_OK)
		KsReportError(&err);

	name = KsKeyNameById(hdr.key_id);
	nonce = (bytea *) palloc(VARHDRSZ + KS_NONCE_LEN);
	SET_VARSIZE(nonce, VARHDRSZ + KS_NONCE_LEN);
	memcpy(VARDATA(nonce), hdr.nonce, KS_NONCE_LEN);

	if (name != NULL)
		values[0] = CStringGetTextDatum(name);
	else
		nulls[0] = true;
	values[1] = Int64GetDatum((int64) hdr.key_version);
	values[2] = CStringGetTextDatum(KsAlgorithmName(hdr.algorithm));
	values[3] = Int32GetDatum(hdr.format_version);
	values[4] = Int64GetDatum((int64) hdr.key_id);
	values[5] = PointerGetDatum(nonce);
	values[6] = Int64GetDatum((int64) (VARSIZE_ANY_EXHDR(ct) - KS_OVERHEAD));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/* keysmith.flush_dek_cache() RETURNS integer: this backend only. */
Datum
keysmith_flush_dek_cache(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(KsDekCacheFlush());
}

/*
 * keysmith.flush_shared_dek_cache() RETURNS integer
 *
 * Wipes this database's data keys from the shared cache, and makes every
 * backend of the database drop its own at its next transaction (this one
 * at once); returns how many this backend dropped.
 */
Datum
keysmith_flush_shared_dek_cache(PG_FUNCTION_ARGS)
{
	KsSharedDekInvalidate(MyDatabaseId, 0);
	CacheInvalidateRelcacheByRelid(KsKeyTableOid());
	PG_RETURN_INT32(KsDekCacheFlush());
}

/* keysmith.dek_cache_stats(): the shared cache's size and counters since start. */
Datum
keysmith_dek_cache_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[7];
	bool		nulls[7] = {false};
	KsSharedDekStats st;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "dek_cache_stats must return a record");
	KsSharedDekGetStats(&st);
	values[0] = Int32GetDatum(st.slots);
	values[1] = Int32GetDatum(st.used);
	values[2] = Int64GetDatum(st.hits);
	values[3] = Int64GetDatum(st.unwraps);
	values[4] = Int64GetDatum(st.waits);
	values[5] = Int64GetDatum(st.stale_uses);
	values[6] = Int64GetDatum(st.failures);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/*
 * keysmith.rewrap_value(ciphertext bytea, context text DEFAULT NULL) RETURNS bytea
 *
 * Re-encrypts a value under its key's current version; the plaintext never
 * leaves this function, and is wiped on every path (a secret buffer).  A value already on the current
 * version comes back unchanged.  Works on retired versions (that is how
 * stragglers are moved off them), not on destroyed ones.  Needs the key's
 * admin privilege, or both decrypt and encrypt.
 */
Datum
keysmith_rewrap_value(PG_FUNCTION_ARGS)
{
	bytea	   *ct;
	size_t		ct_len;
	KsHeader	hdr;
	KsContext	context;
	KsError		err;
	KsDek	   *src = NULL;
	KsDek	   *dst = NULL;
	char		name[KS_KEY_NAME_MAX + 1];
	int			name_len;
	Oid			user = GetUserId();
	uint8	   *pt;
	size_t		pt_len;
	bytea	   *result;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	ct = PG_GETARG_BYTEA_PP(0);
	ct_len = VARSIZE_ANY_EXHDR(ct);
	GetContextArg(fcinfo, 1, &context);
	if (KsParseHeader((const uint8 *) VARDATA_ANY(ct), ct_len, &hdr, &err) != KS_OK)
		KsReportError(&err);

	src = KsDekForDecrypt(hdr.key_id, hdr.key_version, KS_PRIV_NONE);
	if (src->family)
		KsRefuseFamilyDek(src);
	strlcpy(name, src->name, sizeof(name));
	name_len = strlen(name);
	if (src->allowed[KS_PRIV_ADMIN] != user &&
		!(src->allowed[KS_PRIV_DECRYPT] == user && src->allowed[KS_PRIV_ENCRYPT] == user))
	{
		bool		admin = KsHasKeyPrivilege((int32) hdr.key_id, KS_PRIV_ADMIN, user);

		if (!admin)
		{
			KsRequirePrivilege((int32) hdr.key_id, name, KS_PRIV_DECRYPT);
			KsRequirePrivilege((int32) hdr.key_id, name, KS_PRIV_ENCRYPT);
		}
		src = KsDekForDecrypt(hdr.key_id, hdr.key_version, KS_PRIV_NONE);
		if (admin)
			src->allowed[KS_PRIV_ADMIN] = user;
		else
			src->allowed[KS_PRIV_DECRYPT] = src->allowed[KS_PRIV_ENCRYPT] = user;
	}

	/*
	 * Decrypt first, then look up the current version to seal with.  A
	 * lookup may flush the cache, so no KsDek pointer is kept across one:
	 * each is used right after it is fetched.
	 */
	dst = KsDekForEncrypt(name, name_len, KS_PRIV_NONE);
	if (dst->version == hdr.key_version)
		PG_RETURN_BYTEA_P(ct);	/* already current */

	src = KsDekForDecrypt(hdr.key_id, hdr.key_version, KS_PRIV_NONE);
	pt_len = ct_len - KS_OVERHEAD;
	pt = KsSecretAlloc(CurrentMemoryContext, pt_len + 1);
	if (KsAeadOpen(src->aead, &hdr, &context, (const uint8 *) VARDATA_ANY(ct),
				   ct_len, pt, &err) != KS_OK)
		KsReportError(&err);	/* KsAeadOpen has wiped pt */

	dst = TakeEncryption(name, name_len, KsDekForEncrypt(name, name_len, KS_PRIV_NONE),
						 KS_PRIV_NONE);	/* checked above */
	result = SealValue(dst, &context, pt, pt_len);
	KsSecretFree(pt);			/* now, not at the end of the query: it may be large */
	PG_RETURN_BYTEA_P(result);
}

/*
 * keysmith.ciphertext_needs_reencrypt(ciphertext bytea) RETURNS boolean
 *
 * True when the value is not on its key's current version and can still be
 * re-encrypted (its version is not destroyed).  NULL for NULL.  The filter
 * that keysmith.reencrypt uses; no privilege beyond reading the header.
 */
Datum
keysmith_ciphertext_needs_reencrypt(PG_FUNCTION_ARGS)
{
	bytea	   *ct = PG_GETARG_BYTEA_PP(0);
	KsHeader	hdr;
	KsError		err;

	if (KsParseHeader((const uint8 *) VARDATA_ANY(ct), VARSIZE_ANY_EXHDR(ct), &hdr, &err) != KS_OK)
		KsReportError(&err);
	PG_RETURN_BOOL(KsVersionNeedsReencrypt(hdr.key_id, hdr.key_version));
}
