/*
 * extension/keys/kms_instance.c
 *
 * KMS providers as catalog rows: building a provider instance (kms/kms.h)
 * from a row of keysmith.kms_provider, or checking one about to be stored.
 * The SQL functions that store them are in extension/keys/kms_providers.c.
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
#include "extension/common/guc.h"
#include "extension/common/owner_spi.h"
#include "extension/keys/kms_instance.h"


bool
KsKmsCatalogHasProviders(void)
{
	KsCatalog	cat;
	char		why[256];
	Oid			relid;

	if (KsCatalogFind(&cat, why, sizeof(why)) != KS_CATALOG_OK)
		return false;
	return KsCatalogRelation(&cat, "kms_provider", &relid) == KS_CATALOG_OK;
}

/* The options of a JSON object of strings, into inst (palloc'd copies). */
static void
ParseOptions(Jsonb *options, KsKmsInstance *inst)
{
	char	   *names[KS_KMS_MAX_OPTIONS];
	char	   *values[KS_KMS_MAX_OPTIONS];
	int			n = KsJsonbOptions(options, "KMS provider options", KS_KMS_MAX_OPTIONS, names, values);

	for (int i = 0; i < n; i++)
	{
		if (values[i] == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("KMS provider option \"%s\" must be a string", names[i])));
		inst->options[inst->noptions].name = names[i];
		inst->options[inst->noptions].value = values[i];
		inst->noptions++;
	}
}

static const KsKmsProvider *
RequireType(const char *type)
{
	const KsKmsProvider *p = KsKmsLookup(type);

	if (p == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown KMS type \"%s\"", type),
				 errhint("Available in this build: %s.", KsKmsTypeList())));
	return p;
}

/* Check the options as the provider would load them, ERROR if unusable. */
static void
CheckInstance(const KsKmsInstance *inst)
{
	KsError		err;

	if (KsKmsCheckOptions(inst, &err) != KS_OK)
		KsReportError(&err);
}

void
KsKmsInstanceBuild(const char *name, const char *type, const char *options, KsKmsInstance *inst)
{
	memset(inst, 0, sizeof(*inst));
	inst->name = pstrdup(name);
	inst->provider = RequireType(type);
	ParseOptions(DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(options))), inst);
	CheckInstance(inst);
	/* the local provider's default file is the server's setting */
	if (inst->provider == &KsLocalProvider && KsKmsOptionValue(inst, "master_key_file") == NULL)
	{
		inst->options[inst->noptions].name = "master_key_file";
		inst->options[inst->noptions].value = keysmith_local_master_key_file;
		inst->noptions++;
	}
}

/*
 * An instance of provider type from options, checked as create and alter
 * check it before storing: a known type, string options, and the provider's
 * own check of them.
 */
void
KsKmsInstanceCheck(const char *name, const char *type, Jsonb *options, KsKmsInstance *inst)
{
	inst->name = name;
	inst->provider = RequireType(type);
	ParseOptions(options, inst);
	CheckInstance(inst);
}
