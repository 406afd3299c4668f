/*
 * extension/keys/key_scan.h
 *
 * One key version read straight from the key tables by index, for the DEK
 * cache's cold path (extension/keys/key_scan.c).  The key store
 * (key_store.c) is its only caller: KsKeyFetchRow.
 */
#ifndef KEYSMITH_KEY_SCAN_H
#define KEYSMITH_KEY_SCAN_H

#include "postgres.h"

/* What the slow path reads from the key tables. */
typedef struct KsKeyRow
{
	bool		found_key;
	bool		found_version;	/* the version exists and has key material */
	bool		key_destroyed;
	uint32		key_id;
	uint32		version;
	char	   *name;
	char	   *kms;
	char	   *kms_key;		/* NULL where the provider has none */
	char	   *kms_type;
	char	   *kms_options;	/* JSON text */
	char	   *version_state;	/* NULL when the version has no row */
	bytea	   *wrapped;
	bool		has_epoch;		/* catalog 0.9+: versions record server_epoch */
	char	   *server_epoch;	/* the version's, NULL if it recorded none */
	bool		family;			/* catalog 0.11+: a key family (wraps members) */
	uint32		parent_id;		/* a member's family, else 0 */
	uint32		wrapped_by;		/* a member version's family version, else 0 */
} KsKeyRow;

/*
 * Read one key version, without privilege checks: only for callers that
 * would read it as the key tables' owner.  With name, the key's current
 * version; else (key_id, version).  Sees what a read-only statement of
 * KsSpiExec would (owner_spi.h): this transaction's own changes included.
 */
extern void KsKeyScanRow(const char *name, uint32 key_id, uint32 version, KsKeyRow *row);

/* Does the key tables' shape have key families (catalog 0.11+)?  Cached. */
extern bool KsKeyScanHasFamilies(void);

#endif							/* KEYSMITH_KEY_SCAN_H */
