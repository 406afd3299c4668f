/*
 * extension/keys/kms_providers.c
 *
 * The SQL functions create_kms_provider, alter_kms_provider and
 * drop_kms_provider: KMS providers as rows of keysmith.kms_provider.
 *
 * Creating or altering a provider is for superusers only: its options make
 * the server read files (a token, a CA, a master key file) and, for the
 * external KMSs, send requests to URLs, so anything less would let a
 * non-superuser read server files or send them somewhere.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "extension/common/args.h"
#include "extension/common/catalog.h"
#include "extension/common/errors.h"
#include "extension/common/owner_spi.h"
#include "extension/keys/kms_instance.h"

PG_FUNCTION_INFO_V1(keysmith_create_kms_provider);
PG_FUNCTION_INFO_V1(keysmith_alter_kms_provider);
PG_FUNCTION_INFO_V1(keysmith_drop_kms_provider);

#define KS_PROVIDER_NAME_MAX 64

static void
RequireSuperuser(const char *what)
{
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to %s", what),
				 errdetail("A KMS provider's options make the server read files and call URLs.")));
}

static void
CheckProviderName(const char *name)
{
	size_t		len = strlen(name);
	bool		ok = len >= 1 && len <= KS_PROVIDER_NAME_MAX;

	for (size_t i = 0; ok && i < len; i++)
	{
		char		c = name[i];

		ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			c == '_' || c == '-' || c == '.' || c == ':' || c == '@';
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid KMS provider name"),
				 errdetail("A name has 1 to %d letters, digits and _ - . : @.", KS_PROVIDER_NAME_MAX)));
}

/* Catalog checks shared by the three functions; SPI as the owner follows. */
static void
RequireProviderCatalog(void)
{
	KsCatalog	cat;

	KsCatalogRequire(&cat);
	KsCatalogRequireVersion(&cat, 0, 7);
	(void) KsCatalogRequireRelation(&cat, "kms_provider");
}

/* keysmith.create_kms_provider(name text, type text, options jsonb) */
Datum
keysmith_create_kms_provider(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *type;
	Jsonb	   *options;
	KsKmsInstance inst = {0};
	KsOwnerSpi	spi;
	Oid			types[4] = {TEXTOID, TEXTOID, JSONBOID, NAMEOID};
	Datum		values[4];

	KsRequirePrimary("change KMS providers", KS_PRIMARY_HINT_KEYS);
	KsRequireArg(fcinfo, 0, "name");
	KsRequireArg(fcinfo, 1, "type");
	RequireSuperuser("create a KMS provider");
	RequireProviderCatalog();
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	type = text_to_cstring(PG_GETARG_TEXT_PP(1));
	options = PG_ARGISNULL(2) ? DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")))
		: PG_GETARG_JSONB_P(2);
	CheckProviderName(name);
	KsKmsInstanceCheck(name, type, options, &inst);

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(type);
	values[2] = JsonbPGetDatum(options);
	values[3] = DirectFunctionCall1(namein, CStringGetDatum(GetUserNameFromId(GetUserId(), false)));
	KsOwnerSpiBegin(&spi);
	KsSpiExec("INSERT INTO keysmith.kms_provider (name, type, options, created_by) VALUES ($1, $2, $3, $4)"
			  " ON CONFLICT (name) DO NOTHING",
			  4, types, values, NULL, false, 0, SPI_OK_INSERT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("KMS provider \"%s\" already exists", name)));
	KsOwnerSpiEnd(&spi);
	PG_RETURN_VOID();
}

/* The type of provider name, locked FOR UPDATE; ERROR 42704 if none. */
static char *
LockProvider(const char *name)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	KsSpiExec("SELECT type FROM keysmith.kms_provider WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE",
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("KMS provider \"%s\" does not exist", name)));
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

/*
 * keysmith.alter_kms_provider(name text, options jsonb): new options for
 * the same type.  Keys keep their wrapped DEKs: options that point at
 * another KMS (or another master key file) make them fail to unwrap.  The
 * provider's KEK check values (keysmith.kek_check) described the key
 * material its old options named, so they go: its next wrap is vouched for
 * again by the data keys, and by the records of providers that read the
 * same file (extension/keys/kek_check.c).  Kept, a provider pointed at the
 * main file would refuse the right key for every provider reading it.
 */
Datum
keysmith_alter_kms_provider(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Jsonb	   *options = PG_GETARG_JSONB_P(1);
	KsKmsInstance inst = {0};
	KsOwnerSpi	spi;
	Oid			types[2] = {TEXTOID, JSONBOID};
	Datum		values[2] = {CStringGetTextDatum(name), JsonbPGetDatum(options)};

	KsRequirePrimary("change KMS providers", KS_PRIMARY_HINT_KEYS);
	RequireSuperuser("alter a KMS provider");
	RequireProviderCatalog();
	KsOwnerSpiBegin(&spi);
	KsKmsInstanceCheck(name, LockProvider(name), options, &inst);
	KsSpiExec("UPDATE keysmith.kms_provider SET options = $2, altered_at = pg_catalog.now()"
			  " WHERE name OPERATOR(pg_catalog.=) $1",
			  2, types, values, NULL, false, 0, SPI_OK_UPDATE);
	if (KsCatalogHasKekCheck())
		KsSpiExec("DELETE FROM keysmith.kek_check WHERE provider OPERATOR(pg_catalog.=) $1",
				  1, types, values, NULL, false, 0, SPI_OK_DELETE);
	KsOwnerSpiEnd(&spi);
	PG_RETURN_VOID();
}

/* keysmith.drop_kms_provider(name text): refused while keys use it. */
Datum
keysmith_drop_kms_provider(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	KsOwnerSpi	spi;
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	bool		isnull;
	int64		keys;

	KsRequirePrimary("change KMS providers", KS_PRIMARY_HINT_KEYS);
	RequireSuperuser("drop a KMS provider");
	RequireProviderCatalog();
	if (strcmp(name, "local") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the built-in KMS provider \"local\" cannot be dropped")));
	KsOwnerSpiBegin(&spi);
	(void) LockProvider(name);
	KsSpiExec("SELECT pg_catalog.count(*) FROM keysmith.key WHERE kms OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
	keys = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (keys > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("KMS provider \"%s\" is used by %lld key(s)", name, (long long) keys),
				 errhint("A key keeps its provider for good, a destroyed key too; moving keys between providers is not built yet.")));
	KsSpiExec("DELETE FROM keysmith.kms_provider WHERE name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, false, 0, SPI_OK_DELETE);
	if (KsCatalogHasKekCheck())
		KsSpiExec("DELETE FROM keysmith.kek_check WHERE provider OPERATOR(pg_catalog.=) $1",
				  1, types, values, NULL, false, 0, SPI_OK_DELETE);
	KsOwnerSpiEnd(&spi);
	PG_RETURN_VOID();
}
