/*
 * extension/secrets/rotation_state.c
 *
 * The name arrays of the persisted rotation states and staging labels
 * (rotation_state.h), indexed by their enums, as pg_cron's GetCronStatus
 * names its task states: C code takes a name from here rather than typing
 * it again.
 */
#include "postgres.h"

#include "extension/secrets/rotation_state.h"

const char *const KsRotationStateNames[KS_ROT_STATE_COUNT] = {
	[KS_ROT_CREATE] = KS_ROT_CREATE_NAME,
	[KS_ROT_SET] = KS_ROT_SET_NAME,
	[KS_ROT_TEST] = KS_ROT_TEST_NAME,
	[KS_ROT_FINISH] = KS_ROT_FINISH_NAME,
	[KS_ROT_FINISHED] = KS_ROT_FINISHED_NAME,
	[KS_ROT_FAILED] = KS_ROT_FAILED_NAME,
	[KS_ROT_CANCELLED] = KS_ROT_CANCELLED_NAME,
};

const char *const KsSecretStageNames[KS_STAGE_COUNT] = {
	[KS_STAGE_CURRENT] = "current",
	[KS_STAGE_PENDING] = "pending",
	[KS_STAGE_PREVIOUS] = "previous",
};

KsSecretStage
KsSecretStageFromName(const char *name)
{
	for (int i = 0; i < KS_STAGE_COUNT; i++)
		if (strcmp(name, KsSecretStageNames[i]) == 0)
			return (KsSecretStage) i;
	return KS_STAGE_NONE;
}
