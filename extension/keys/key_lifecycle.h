/*
 * extension/keys/key_lifecycle.h
 *
 * The states of a key (keysmith.key.state: active, destroyed) and of a key
 * version (keysmith.key_version.state: active, retired, destroyed),
 * spelled once for the key store, the DEK cache, the key-state cache, the
 * key lifecycle functions and key schedules.  The names are the values
 * the tables' CHECK constraints allow.  C compares and passes names from
 * the arrays; SQL text that holds a state builds it from the _SQL macros.
 */
#ifndef KEYSMITH_KEY_LIFECYCLE_H
#define KEYSMITH_KEY_LIFECYCLE_H

#include "postgres.h"

typedef enum KsKeyState
{
	KS_KEY_ACTIVE = 0,
	KS_KEY_DESTROYED,			/* every version erased; nothing decrypts */
	KS_KEY_STATE_COUNT
} KsKeyState;

typedef enum KsKeyVersionState
{
	KS_KEY_VERSION_ACTIVE = 0,	/* encrypts when current, decrypts */
	KS_KEY_VERSION_RETIRED,		/* decrypts; values under it want re-encryption */
	KS_KEY_VERSION_DESTROYED,	/* its wrapped DEK is erased */
	KS_KEY_VERSION_STATE_COUNT
} KsKeyVersionState;

#define KS_KEY_ACTIVE_NAME "active"
#define KS_KEY_RETIRED_NAME "retired"
#define KS_KEY_DESTROYED_NAME "destroyed"

/* The same names as SQL string literals, for SQL text built at compile time. */
#define KS_KEY_RETIRED_SQL "'" KS_KEY_RETIRED_NAME "'"
#define KS_KEY_DESTROYED_SQL "'" KS_KEY_DESTROYED_NAME "'"

extern const char *const KsKeyStateNames[KS_KEY_STATE_COUNT];
extern const char *const KsKeyVersionStateNames[KS_KEY_VERSION_STATE_COUNT];

/* The version state a name from keysmith.key_version.state stands for; ERROR if none. */
extern KsKeyVersionState KsKeyVersionStateFromName(const char *name);

#endif							/* KEYSMITH_KEY_LIFECYCLE_H */
