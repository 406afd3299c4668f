/*
 * extension/values.c
 *
 * SQL-callable functions for envelope-encrypted values: create_key,
 * encrypt_value, decrypt_value, decrypt_value_bytea, ciphertext_info and
 * flush_dek_cache.  They stay thin: argument handling and ereport here, the
 * cryptography in kms/, the key lookups in dek_cache.c.
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

#include "keysmith.h"

PG_FUNCTION_INFO_V1(keysmith_create_key);
PG_FUNCTION_INFO_V1(keysmith_encrypt_value);
PG_FUNCTION_INFO_V1(keysmith_decrypt_value);
PG_FUNCTION_INFO_V1(keysmith_decrypt_value_bytea);
PG_FUNCTION_INFO_V1(keysmith_ciphertext_info);
PG_FUNCTION_INFO_V1(keysmith_flush_dek_cache);

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
 * keysmith.create_key(name text, kms text DEFAULT 'local') RETURNS void
 *
 * Creates the key with DEK version 1.  The DEK is wrapped before anything is
 * written, so a KMS failure leaves no trace; a duplicate name is refused.
 */
Datum
keysmith_create_key(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *kms = text_to_cstring(PG_GETARG_TEXT_PP(1));
	const KsKmsProvider *provider;
	KsKmsConfig cfg;
	KsError		err;
	uint8		dek[KS_DEK_LEN];
	uint8		aad[256];
	size_t		aad_len;
	uint8		wrapped[KS_WRAPPED_MAX];
	size_t		wrapped_len = 0;
	uint32		kek_version = 0;
	KsStatus	st;
	Oid			save_userid;
	int			save_sec;
	int			rc;
	bytea	   *wrapped_datum;

	KsCheckKeyName(name);
	provider = KsKmsLookup(kms);
	if (provider == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown KMS \"%s\"", kms),
				 errhint("Available: local.")));

	aad_len = KsDekBindingAad(name, 1, aad, sizeof(aad));
	KsCurrentKmsConfig(&cfg);
	st = KsRandomBytes(dek, sizeof(dek), &err);
	if (st == KS_OK)
		st = provider->wrap(&cfg, dek, sizeof(dek), aad, aad_len,
							wrapped, &wrapped_len, &kek_version, &err);
	KsWipe(dek, sizeof(dek));
	if (st != KS_OK)
		KsReportError(&err);

	wrapped_datum = (bytea *) palloc(VARHDRSZ + wrapped_len);
	SET_VARSIZE(wrapped_datum, VARHDRSZ + wrapped_len);
	memcpy(VARDATA(wrapped_datum), wrapped, wrapped_len);

	KsBecomeKeyOwner(&save_userid, &save_sec);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Oid			types[2] = {TEXTOID, TEXTOID};
		Datum		values[2] = {CStringGetTextDatum(name), CStringGetTextDatum(kms)};

		rc = SPI_execute_with_args(
								   "INSERT INTO keysmith.key (name, kms, current_version)"
								   " VALUES ($1, $2, 1)"
								   " ON CONFLICT (name) DO NOTHING RETURNING key_id",
								   2, types, values, NULL, false, 0);
		if (rc != SPI_OK_INSERT_RETURNING)
			elog(ERROR, "could not insert key: %s", SPI_result_code_string(rc));
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("key \"%s\" already exists", name)));
	}
	{
		bool		isnull;
		Datum		key_id = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		Oid			types[3] = {INT4OID, BYTEAOID, INT8OID};
		Datum		values[3] = {key_id, PointerGetDatum(wrapped_datum),
		Int64GetDatum((int64) kek_version)};

		rc = SPI_execute_with_args(
								   "INSERT INTO keysmith.key_version (key_id, version, wrapped_dek, kek_version)"
								   " VALUES ($1, 1, $2, $3)",
								   3, types, values, NULL, false, 0);
		if (rc != SPI_OK_INSERT)
			elog(ERROR, "could not insert key version: %s", SPI_result_code_string(rc));
	}
	SPI_finish();
	KsRestoreUser(save_userid, save_sec);

	/* every backend of this database drops cached keys at commit */
	CacheInvalidateRelcacheByRelid(KsKeyTableOid());
	PG_RETURN_VOID();
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
	size_t		pt_len;
	KsContext	context;
	KsDek	   *dek;
	KsHeader	hdr;
	KsError		err;
	bytea	   *result;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	name = PG_GETARG_TEXT_PP(0);
	pt = PG_GETARG_BYTEA_PP(1);
	pt_len = VARSIZE_ANY_EXHDR(pt);
	GetContextArg(fcinfo, 2, &context);

	if (pt_len > KS_MAX_PLAINTEXT)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("value of %zu bytes is too large to encrypt", pt_len),
				 errdetail("The largest value keysmith encrypts is %zu bytes.",
						   (size_t) KS_MAX_PLAINTEXT)));

	dek = KsDekForEncrypt(VARDATA_ANY(name), VARSIZE_ANY_EXHDR(name));

	hdr.format_version = KS_FORMAT_VERSION;
	hdr.algorithm = KS_ALG_AES256GCM;
	hdr.key_id = dek->key_id;
	hdr.key_version = dek->version;
	if (KsNextNonce(hdr.nonce, &err) != KS_OK)
		KsReportError(&err);

	result = (bytea *) palloc(VARHDRSZ + pt_len + KS_OVERHEAD);
	SET_VARSIZE(result, VARHDRSZ + pt_len + KS_OVERHEAD);
	if (KsAeadSeal(dek->aead, &hdr, &context, (const uint8 *) VARDATA_ANY(pt),
				   pt_len, (uint8 *) VARDATA(result), &err) != KS_OK)
		KsReportError(&err);
	PG_RETURN_BYTEA_P(result);
}

/* Shared body of both decrypt functions; NULL when the input is NULL. */
static bytea *
DecryptCommon(FunctionCallInfo fcinfo)
{
	bytea	   *ct;
	size_t		ct_len;
	KsHeader	hdr;
	KsContext	context;
	KsError		err;
	KsDek	   *dek;
	bytea	   *result;

	ct = PG_GETARG_BYTEA_PP(0);
	ct_len = VARSIZE_ANY_EXHDR(ct);
	GetContextArg(fcinfo, 1, &context);

	if (KsParseHeader((const uint8 *) VARDATA_ANY(ct), ct_len, &hdr, &err) != KS_OK)
		KsReportError(&err);
	dek = KsDekForDecrypt(hdr.key_id, hdr.key_version);

	result = (bytea *) palloc(VARHDRSZ + ct_len - KS_OVERHEAD + 1);
	SET_VARSIZE(result, VARHDRSZ + ct_len - KS_OVERHEAD);
	if (KsAeadOpen(dek->aead, &hdr, &context, (const uint8 *) VARDATA_ANY(ct),
				   ct_len, (uint8 *) VARDATA(result), &err) != KS_OK)
		KsReportError(&err);
	return result;
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
	if (!pg_verify_mbstr(GetDatabaseEncoding(), VARDATA(result), len, true))
	{
		explicit_bzero(VARDATA(result), len);
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("decrypted value is not valid in encoding \"%s\"",
						GetDatabaseEncodingName()),
				 errhint("Use keysmith.decrypt_value_bytea for binary values.")));
	}
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
