/*
 * extension/keys/kek_check.c
 *
 * Wrong key material never leads to writes.  A common operator mistake is
 * a master key file of the same version numbers but other keys: a copy
 * from another environment, a stale secret mount, a file restored from an
 * old backup.  Unchecked, decryption failed but encryption went on: the
 * restored database's first encryption rolled to a new DEK version wrapped
 * under the wrong key, and with the right file back neither that version
 * nor the rows under it could be read.
 *
 * So keysmith knows its keys.  For every (provider, kms_key, KEK version)
 * it has wrapped under, keysmith.kek_check holds a check value from the
 * provider (kms/kms.h, kek_check: for the local provider an HMAC of a fixed
 * label under the master key).  Every wrap compares before anything is
 * stored: a new DEK, rotate_kek, migrate_key.  A KEK version new to the
 * database is recorded only when the versions recorded before, still in
 * the key material, all match (at least one); the very first record, when
 * every KEK version that wrapped this database's DEKs, if present, opens
 * one of them.  A mismatch is KS019, with one WARNING per backend.
 *
 * Providers that cannot tell two keys of one name apart (kek_check NULL:
 * the HTTP KMSs so far) record nothing; for them, and for every provider,
 * extension/keys/key_verify.c refuses a new DEK version when none of the
 * key's live versions unwraps, and verify_keys() reports what is readable.
 *
 * This module reads and writes keysmith.kek_check through SPI as the key
 * tables' owner (the caller's key operation, or its own for a hint) and
 * knows nothing of the key store above it.
 */
#include "postgres.h"

#include <sys/stat.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "extension/common/catalog.h"
#include "extension/common/errors.h"
#include "extension/common/guc.h"
#include "extension/common/owner_spi.h"
#include "extension/keys/kek_check.h"

/*
 * How long a record waits for another transaction writing the same row:
 * briefly when committed evidence vouched for the material (the row is then
 * left to the next wrap), longer for the first record of a key set (the
 * other transaction's value is the only one to compare with).
 */
#define RECORD_BUSY_MS 100
#define RECORD_FIRST_MS 2000
/* A binding's size: a key name (at most 128 bytes) and its framing. */
#define AAD_MAX 256

#define WRONG_KEY_HINT \
	"The key material differs from the one this database was made with: a master key file copied from another" \
	" environment, a stale secret mount, or one restored from an old backup?  Put back the key material this" \
	" database was made with; keysmith.verify_keys() lists which keys it can read."

static bool said_warning = false;

/* Refuse: KS019, nothing written; the detail (which names keys) goes to the log only. */
static void
pg_attribute_noreturn()
Refuse(const char *provider, const char *why)
{
	if (!said_warning)
	{
		said_warning = true;
		ereport(WARNING,
				(errcode(ERRCODE_KS_WRONG_KEK),
				 errmsg("keysmith refuses to wrap data keys under KMS provider \"%s\": its key material is not the"
						" one this database was made with", provider),
				 errdetail_log("%s", why),
				 errhint(WRONG_KEY_HINT)));
	}
	ereport(ERROR,
			(errcode(ERRCODE_KS_WRONG_KEK),
			 errmsg("the key material of KMS provider \"%s\" is not the one this database was made with;"
					" nothing was written", provider),
			 errdetail_log("%s", why),
			 errhint(WRONG_KEY_HINT)));
}

/* The check value recorded for (provider, kms_key, version) into out; false if none. */
static bool
Recorded(const char *provider, const char *kms_key, const char *version, uint8 *out)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3] = {CStringGetTextDatum(provider), CStringGetTextDatum(kms_key),
	CStringGetTextDatum(version)};
	bool		isnull;
	bytea	   *v;

	KsSpiExec("SELECT check_value FROM keysmith.kek_check WHERE provider OPERATOR(pg_catalog.=) $1"
			  " AND kms_key OPERATOR(pg_catalog.=) $2 AND kek_version OPERATOR(pg_catalog.=) $3",
			  3, types, values, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	v = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (VARSIZE_ANY_EXHDR(v) != KS_KEK_CHECK_LEN)
		memset(out, 0, KS_KEK_CHECK_LEN);	/* never equal to a real one in practice */
	else
		memcpy(out, VARDATA_ANY(v), KS_KEK_CHECK_LEN);
	return true;
}

/*
 * One decision about the key material at hand: which provider it is for,
 * and the identity of the key set the first answer came from.  Every
 * answer after it must come from the same set (Ask): a file changed in
 * the middle of one check cannot have one version vouch for another's
 * record.
 */
typedef struct KekCheck
{
	const KsKmsInstance *inst;
	const char *provider;
	const char *kms_key;		/* never NULL: '' for none */
	bool		have_set;
	uint8		set_id[KS_KEK_CHECK_LEN];
} KekCheck;

/* The provider's answer for version (or the blob), from the set the check began with. */
static KsStatus
Ask(KekCheck *kc, char *version, const uint8 *wrapped, size_t wrapped_len, const uint8 *aad, size_t aad_len,
	uint8 *check, KsError *err)
{
	uint8		set_id[KS_KEK_CHECK_LEN];
	KsStatus	st;

	st = kc->inst->provider->kek_check(kc->inst, kc->kms_key[0] ? kc->kms_key : NULL, version, wrapped,
									   wrapped_len, aad, aad_len, check, set_id, err);
	if (st == KS_OK || st == KS_ERR_UNWRAP_FAILED || st == KS_ERR_KEK_VERSION_UNKNOWN)
	{
		if (!kc->have_set)
		{
			memcpy(kc->set_id, set_id, sizeof(set_id));
			kc->have_set = true;
		}
		else if (memcmp(kc->set_id, set_id, sizeof(set_id)) != 0)
			Refuse(kc->provider, "the key material changed while it was being checked");
	}
	return st;
}

/*
 * Record a check value the material at hand was vouched for.  With
 * evidence (records or data keys this database committed vouched for it),
 * a row another open transaction is writing is not waited for: that
 * transaction's value was vouched for by the same evidence, the next wrap
 * records it, and one open transaction must not hold up every wrap in the
 * database (the insert waits RECORD_LOCK_TIMEOUT_MS at most, in a
 * subtransaction of its own).  Without evidence (the first wrap of a
 * database, or of a new key set), the other transaction's value is the
 * only one there is to compare with: wait for it (bounded, 55P03), then
 * compare.  Afterwards a row that exists must hold this value.
 */
static void
Record(KekCheck *kc, const char *version, const uint8 *check, bool evidence)
{
	Oid			types[4] = {TEXTOID, TEXTOID, TEXTOID, BYTEAOID};
	bytea	   *cv = palloc(VARHDRSZ + KS_KEK_CHECK_LEN);
	Datum		values[4] = {CStringGetTextDatum(kc->provider), CStringGetTextDatum(kc->kms_key),
	CStringGetTextDatum(version), PointerGetDatum(cv)};
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	int			wait_ms = evidence ? RECORD_BUSY_MS : RECORD_FIRST_MS;
	volatile bool busy = false;
	volatile uint64 inserted = 0;
	uint8		stored[KS_KEK_CHECK_LEN];

	SET_VARSIZE(cv, VARHDRSZ + KS_KEK_CHECK_LEN);
	memcpy(VARDATA(cv), check, KS_KEK_CHECK_LEN);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		/* undone by the subtransaction's abort, or right after the insert */
		int			nest = NewGUCNestLevel();

		if (LockTimeout == 0 || LockTimeout > wait_ms)
			(void) set_config_option("lock_timeout", psprintf("%d", wait_ms), PGC_USERSET,
									 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
		KsSpiExec("INSERT INTO keysmith.kek_check (provider, kms_key, kek_version, check_value)"
				  " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
				  4, types, values, NULL, false, 0, SPI_OK_INSERT);
		inserted = SPI_processed;
		AtEOXact_GUC(true, nest);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (edata->sqlerrcode != ERRCODE_LOCK_NOT_AVAILABLE)
			ReThrowError(edata);
		busy = true;
	}
	PG_END_TRY();
	if (busy && evidence)
	{
		ereport(DEBUG1,
				(errmsg("keysmith: the check value of KEK version %s of provider \"%s\" is being recorded by"
						" another transaction; left to the next wrap", version, kc->provider)));
		return;
	}
	if (busy)
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("another transaction is recording the first check value of KMS provider \"%s\"",
						kc->provider),
				 errhint("Try again once that transaction has ended.")));
	if (inserted == 0 &&
		(!Recorded(kc->provider, kc->kms_key, version, stored) || memcmp(stored, check, KS_KEK_CHECK_LEN) != 0))
		Refuse(kc->provider, psprintf("another session recorded a different check value for KEK version %s"
									  " meanwhile", version));
}

/*
 * The providers whose records and data keys speak for inst's key material,
 * as text[]: for a local provider, every local provider that reads the same
 * file (by device and inode: two names for one file are one key set), so a
 * provider with nothing recorded yet is vouched for or refused by the
 * others; else the provider alone.  A provider's records name what its file
 * was when they were made: alter_kms_provider drops them when its options
 * change (extension/keys/kms_providers.c).
 */
static Datum
Peers(const KsKmsInstance *inst, const char *provider)
{
	const char *path;
	struct stat target;
	Datum	   *names;
	int			n = 0;
	bool		self = false;

	if (inst->provider != &KsLocalProvider)
		return PointerGetDatum(construct_array(&(Datum) {CStringGetTextDatum(provider)}, 1, TEXTOID, -1, false,
											   TYPALIGN_INT));
	path = KsKmsOptionValue(inst, "master_key_file");
	if (path == NULL)
		path = keysmith_local_master_key_file;
	KsSpiExec("SELECT p.name, p.options OPERATOR(pg_catalog.->>) 'master_key_file' FROM keysmith.kms_provider p"
			  " WHERE p.type OPERATOR(pg_catalog.=) 'local'", 0, NULL, NULL, NULL, false, 0, SPI_OK_SELECT);
	names = palloc(sizeof(Datum) * (SPI_processed + 1));
	if (stat(path, &target) == 0)
	{
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			char	   *file = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
			char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
			struct stat st;

			if (stat(file ? file : keysmith_local_master_key_file, &st) == 0 &&
				st.st_dev == target.st_dev && st.st_ino == target.st_ino)
			{
				names[n++] = CStringGetTextDatum(name);
				self |= strcmp(name, provider) == 0;
			}
		}
	}
	if (!self)
		names[n++] = CStringGetTextDatum(provider);
	return PointerGetDatum(construct_array(names, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* How many of the oldest data keys per KEK version the first record tries. */
#define FIRST_RECORD_TRIES 4

/*
 * The first record for a key set (no provider that reads it has recorded
 * a version still in it): the data keys decide.  Per KEK version they
 * wrapped under, the oldest data key that gives an answer decides it: one
 * that opens proves the material (and its value is recorded), one that
 * does not is KS019.  The oldest, because a database that an earlier
 * mistake left with newer versions under other material must be decided by
 * what it was made with.  At least one version must be proven if the
 * database has data keys under these providers at all; a KEK version
 * absent from the key material proves nothing either way (its data keys
 * fail on their own, KS007).  True if a data key vouched (evidence).
 */
static bool
VouchByDataKeys(KekCheck *kc, Datum peers)
{
	Oid			types[2] = {TEXTARRAYOID, TEXTOID};
	Datum		values[2] = {peers, CStringGetTextDatum(kc->kms_key)};
	SPITupleTable *tt;
	uint64		n;
	int			proven = 0;
	char	   *decided = NULL;

	KsSpiExec("SELECT name, version, wrapped_dek, kek_version FROM ("
			  "  SELECT k.name, v.version, v.wrapped_dek, v.kek_version::pg_catalog.text AS kek_version,"
			  "         pg_catalog.row_number() OVER (PARTITION BY v.kek_version ORDER BY k.key_id, v.version) AS n"
			  "    FROM keysmith.key_version v JOIN keysmith.key k ON k.key_id OPERATOR(pg_catalog.=) v.key_id"
			  "   WHERE k.kms OPERATOR(pg_catalog.=) ANY ($1)"
			  "     AND COALESCE(k.kms_key, '') OPERATOR(pg_catalog.=) $2"
			  "     AND v.wrapped_dek IS NOT NULL AND k.parent_id IS NULL) o"
			  " WHERE o.n OPERATOR(pg_catalog.<=) " CppAsString2(FIRST_RECORD_TRIES)
			  " ORDER BY kek_version, n",
			  2, types, values, NULL, false, 0, SPI_OK_SELECT);
	tt = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		char	   *name = SPI_getvalue(tt->vals[i], tt->tupdesc, 1);
		int32		version = DatumGetInt32(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
		bytea	   *wrapped = DatumGetByteaPP(SPI_getbinval(tt->vals[i], tt->tupdesc, 3, &isnull));
		char	   *stored_kek = SPI_getvalue(tt->vals[i], tt->tupdesc, 4);
		uint8		aad[AAD_MAX];
		size_t		aad_len = KsDekBindingAad(name, (uint32) version, aad, sizeof(aad));
		char		kek_version[KS_KEK_VERSION_LEN] = "";
		uint8		check[KS_KEK_CHECK_LEN];
		KsError		err;
		KsStatus	st;

		if (decided != NULL && strcmp(decided, stored_kek) == 0)
			continue;			/* this KEK version is decided */
		st = Ask(kc, kek_version, (const uint8 *) VARDATA_ANY(wrapped), VARSIZE_ANY_EXHDR(wrapped), aad, aad_len,
				 check, &err);
		if (st == KS_ERR_KEK_VERSION_UNKNOWN)
		{
			decided = stored_kek;
			continue;
		}
		if (st == KS_ERR_UNWRAP_FAILED)
			Refuse(kc->provider, psprintf("version %d of key \"%s\", the oldest data key wrapped under KEK version"
										  " %s that could be tried, does not open under the KEK version of that"
										  " number at hand", version, name, stored_kek));
		if (st != KS_OK)
			KsReportError(&err);
		Record(kc, kek_version, check, true);
		decided = stored_kek;
		proven++;
	}
	if (n > 0 && proven == 0)
		Refuse(kc->provider, "none of the KEK versions this database's data keys were wrapped under is in the key"
			   " material at hand");
	return proven > 0;
}

/*
 * May a KEK version new to this database be recorded?  Every version the
 * providers reading this key set recorded, still in it, must match, and one
 * must be there; else the data keys decide (VouchByDataKeys).  True if
 * committed evidence vouched; false for a database (or key set) with
 * neither records nor data keys.
 */
static bool
Vouch(KekCheck *kc, const char *version)
{
	Datum		peers = Peers(kc->inst, kc->provider);
	Oid			types[2] = {TEXTARRAYOID, TEXTOID};
	Datum		values[2] = {peers, CStringGetTextDatum(kc->kms_key)};
	SPITupleTable *tt;
	uint64		n;
	bool		vouched = false;

	KsSpiExec("SELECT kek_version, check_value, provider FROM keysmith.kek_check"
			  " WHERE provider OPERATOR(pg_catalog.=) ANY ($1) AND kms_key OPERATOR(pg_catalog.=) $2",
			  2, types, values, NULL, false, 0, SPI_OK_SELECT);
	tt = SPI_tuptable;
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		char	   *recorded = SPI_getvalue(tt->vals[i], tt->tupdesc, 1);
		bytea	   *cv = DatumGetByteaPP(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
		char	   *by = SPI_getvalue(tt->vals[i], tt->tupdesc, 3);
		uint8		check[KS_KEK_CHECK_LEN];
		KsError		err;
		KsStatus	st;

		st = Ask(kc, recorded, NULL, 0, NULL, 0, check, &err);
		if (st == KS_ERR_KEK_VERSION_UNKNOWN)
			continue;			/* retired from the key material */
		if (st != KS_OK)
			KsReportError(&err);
		if (VARSIZE_ANY_EXHDR(cv) != KS_KEK_CHECK_LEN || memcmp(VARDATA_ANY(cv), check, KS_KEK_CHECK_LEN) != 0)
			Refuse(kc->provider, psprintf("KEK version %s at hand is not the one recorded in keysmith.kek_check for"
										  " provider \"%s\", which reads the same key material (the wrap was under"
										  " version %s)", recorded, by, version));
		vouched = true;
	}
	if (vouched)
		return true;
	return VouchByDataKeys(kc, peers);
}

/*
 * The first record of a key set, one transaction at a time in a database:
 * two sessions that see different files (a SET of the file's setting, a
 * file swapped while the first is open) must not both record, each under
 * its own version number, with nothing committed to compare.  An advisory
 * lock no SQL function can ask for (pg_advisory_* set the last field to 1
 * or 2), held to the end of the transaction and waited for
 * RECORD_FIRST_MS at most.
 */
#define KEK_CHECK_LOCK_CLASS 19285
#define KEK_CHECK_LOCK_KIND 5

static void
LockFirstRecord(const char *provider)
{
	LOCKTAG		tag;
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), RECORD_FIRST_MS);

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, KEK_CHECK_LOCK_CLASS, 0, KEK_CHECK_LOCK_KIND);
	while (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
	{
		if (GetCurrentTimestamp() >= deadline)
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("another transaction is recording the first check value of KMS provider \"%s\"",
							provider),
					 errhint("Try again once that transaction has ended.")));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

void
KsKekCheckWrap(const KsKmsInstance *inst, const char *provider, const char *kms_key,
			   const uint8 *wrapped, size_t wrapped_len, const uint8 *aad, size_t aad_len)
{
	KekCheck	kc = {inst, provider, kms_key ? kms_key : "", false, {0}};
	char		version[KS_KEK_VERSION_LEN] = "";
	uint8		check[KS_KEK_CHECK_LEN];
	uint8		recorded[KS_KEK_CHECK_LEN];
	KsError		err;
	KsStatus	st;

	if (inst->provider->kek_check == NULL || !KsCatalogHasKekCheck())
		return;
	st = Ask(&kc, version, wrapped, wrapped_len, aad, aad_len, check, &err);
	if (st == KS_ERR_UNWRAP_FAILED || st == KS_ERR_KEK_VERSION_UNKNOWN)
		Refuse(provider, psprintf("a data key just wrapped under KEK version %s did not open under it: the key"
								  " material changed during the call", version[0] ? version : "(unknown)"));
	if (st != KS_OK)
		KsReportError(&err);
	if (Recorded(provider, kc.kms_key, version, recorded))
	{
		if (memcmp(recorded, check, KS_KEK_CHECK_LEN) != 0)
			Refuse(provider, psprintf("KEK version %s at hand is not the one recorded in keysmith.kek_check",
									  version));
		return;
	}
	if (!Vouch(&kc, version))
	{
		/* nothing committed vouches: the first record, one at a time, then look again */
		LockFirstRecord(provider);
		if (Recorded(provider, kc.kms_key, version, recorded))
		{
			if (memcmp(recorded, check, KS_KEK_CHECK_LEN) != 0)
				Refuse(provider, psprintf("KEK version %s at hand is not the one recorded in keysmith.kek_check",
										  version));
			return;
		}
		Record(&kc, version, check, Vouch(&kc, version));
		return;
	}
	Record(&kc, version, check, true);
}

/* ------------------------------------------------------------ unwrap failures */

void
KsKekReportUnwrapFailure(const KsKmsInstance *inst, const char *provider, const char *kms_key,
						 const uint8 *wrapped, size_t wrapped_len, const uint8 *aad, size_t aad_len,
						 const KsError *err)
{
	char		version[KS_KEK_VERSION_LEN] = "";
	uint8		check[KS_KEK_CHECK_LEN];
	uint8		recorded[KS_KEK_CHECK_LEN];
	const char *hint = NULL;
	KsError		err2;

	if (inst->provider->kek_check != NULL && KsCatalogHasKekCheck() &&
		inst->provider->kek_check(inst, kms_key, version, wrapped, wrapped_len, aad, aad_len,
								  check, NULL, &err2) == KS_ERR_UNWRAP_FAILED)
	{
		KsOwnerSpi	spi;
		bool		found;

		KsOwnerSpiBegin(&spi);
		found = Recorded(provider, kms_key ? kms_key : "", version, recorded);
		KsOwnerSpiEnd(&spi);
		if (!found)
			hint = psprintf("No check value is recorded for KEK version %s: either the key material differs from"
							" the one this database was made with, or the wrapped data key was altered.", version);
		else if (memcmp(recorded, check, KS_KEK_CHECK_LEN) != 0)
			hint = psprintf("KEK version %s at hand is not the one this database recorded: the key material (a"
							" master key file?) differs from the one this database was made with.  Put back the"
							" right one; keysmith.verify_keys() lists which keys it can read.", version);
		else
			hint = psprintf("KEK version %s at hand is the one this database recorded, so the wrapped data key"
							" itself was altered: restore keysmith.key_version from a backup.", version);
	}
	ereport(ERROR,
			(errcode(ERRCODE_KS_UNWRAP_FAILED),
			 errmsg("%s", err->message),
			 hint ? errhint("%s", hint) : 0));
}
