/*
 * extension/keys/kms_instance.h
 *
 * KMS provider instances from keysmith.kms_provider rows
 * (extension/keys/kms_instance.c), and the SQL that reads a key's provider at
 * either shape of the catalog: from 0.7 on, keys name a provider row and
 * may carry a kms_key, and KEK versions are text; before, every key was
 * the built-in "local" and KEK versions were bigint.
 */
#ifndef KEYSMITH_KMS_INSTANCE_H
#define KEYSMITH_KMS_INSTANCE_H

#include "postgres.h"

#include "utils/jsonb.h"

#include "kms/kms.h"

/*
 * Build the instance named name, of type, with options (a JSON object of
 * strings, as text), in the current memory context.  A local instance
 * without master_key_file reads keysmith.local_master_key_file.  ERROR
 * with the provider's SQLSTATE if the type is unknown or an option is bad.
 */
extern void KsKmsInstanceBuild(const char *name, const char *type, const char *options, KsKmsInstance *inst);

/* Does this database's catalog have KMS provider rows (0.7 and later)? */
extern bool KsKmsCatalogHasProviders(void);

/* Check a provider about to be stored; ERROR (22023 and others) if unusable. */
extern void KsKmsInstanceCheck(const char *name, const char *type, Jsonb *options, KsKmsInstance *inst);

/*
 * The columns a key query selects for its provider, after k.kms, and the
 * join that provides them, for the catalog at hand: kms_key, provider type,
 * provider options as text.  The key table is aliased k.
 */
#define KS_KMS_COLS_07 ", k.kms_key, p.type, p.options::pg_catalog.text"
#define KS_KMS_JOIN_07 " JOIN keysmith.kms_provider p ON p.name OPERATOR(pg_catalog.=) k.kms"
#define KS_KMS_COLS_06 ", NULL::pg_catalog.text, 'local'::pg_catalog.text, '{}'::pg_catalog.text"
#define KS_KMS_JOIN_06 ""

#endif							/* KEYSMITH_KMS_INSTANCE_H */
