/*
 * extension/common/guc.h
 *
 * keysmith's settings (keysmith.*).  Every one is defined in the table of
 * extension/common/guc.c; docs/guc-reference.md describes them.
 */
#ifndef KEYSMITH_GUC_H
#define KEYSMITH_GUC_H

#include "postgres.h"

/* envelope encryption and the DEK caches */
extern char *keysmith_local_master_key_file;
extern int	keysmith_dek_cache_ttl;
extern int	keysmith_dek_cache_size;
extern int	keysmith_dek_cache_shared_size;
extern int	keysmith_dek_cache_stale_grace;
extern int	keysmith_kms_timeout;
extern double keysmith_max_encryptions_per_dek;
extern int	keysmith_counter_slots;
extern bool keysmith_redact_statements;

/* the workers */
extern char *keysmith_database_name;
extern int	keysmith_reaper_naptime;
extern int	keysmith_reaper_lock_timeout;
extern int	keysmith_rotation_naptime;
extern int	keysmith_rotation_lock_timeout;
extern int	keysmith_rotation_step_timeout;
extern int	keysmith_rotation_max_attempts;
extern char *keysmith_rotation_test_conninfo;
extern char *keysmith_rotation_pause_at;

/* Define every keysmith.* setting and reserve the prefix (from _PG_init). */
extern void KsGucsDefine(void);

#endif							/* KEYSMITH_GUC_H */
