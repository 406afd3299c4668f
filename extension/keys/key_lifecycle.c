/*
 * extension/keys/key_lifecycle.c
 *
 * The names of the key and key-version states
 * (extension/keys/key_lifecycle.h), the one place they are spelled in C.
 * They must stay the values that the CHECK constraints of keysmith.key and
 * keysmith.key_version allow (extension/scripts/).
 */
#include "postgres.h"

#include "extension/keys/key_lifecycle.h"

const char *const KsKeyStateNames[KS_KEY_STATE_COUNT] = {
	[KS_KEY_ACTIVE] = KS_KEY_ACTIVE_NAME,
	[KS_KEY_DESTROYED] = KS_KEY_DESTROYED_NAME,
};

const char *const KsKeyVersionStateNames[KS_KEY_VERSION_STATE_COUNT] = {
	[KS_KEY_VERSION_ACTIVE] = KS_KEY_ACTIVE_NAME,
	[KS_KEY_VERSION_RETIRED] = KS_KEY_RETIRED_NAME,
	[KS_KEY_VERSION_DESTROYED] = KS_KEY_DESTROYED_NAME,
};

KsKeyVersionState
KsKeyVersionStateFromName(const char *name)
{
	for (int i = 0; i < KS_KEY_VERSION_STATE_COUNT; i++)
		if (strcmp(name, KsKeyVersionStateNames[i]) == 0)
			return (KsKeyVersionState) i;
	elog(ERROR, "keysmith: unknown key version state \"%s\"", name);
	pg_unreachable();
}
