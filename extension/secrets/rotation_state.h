/*
 * extension/secrets/rotation_state.h
 *
 * The persisted states of a secret's rotation, spelled once: the state a
 * rotation row of keysmith.rotation is in (its next step), the staging
 * label a row of keysmith.secret_version carries, and the set of states a
 * rotation is "in flight" in.  The secrets store (secret_store.c), the SQL
 * functions and the rotation engine (rotator/rotation.c) all take the
 * names from here: C passes them to SPI as parameters, and SQL text that
 * must hold a literal (a partial index's predicate) is built from the
 * same macros.  The released scripts (extension/scripts/) spell the same
 * names in their CHECK constraints; a change here needs an upgrade script.
 *
 * This is a header of the secrets feature, so that the store need not
 * include the engine: rotator/rotation.h includes it.
 */
#ifndef KEYSMITH_ROTATION_STATE_H
#define KEYSMITH_ROTATION_STATE_H

#include "postgres.h"

/* keysmith.rotation.state: the step a rotation runs next, or how it ended. */
typedef enum KsRotationState
{
	KS_ROT_CREATE = 0,			/* next: store a pending version */
	KS_ROT_SET,					/* next: install it at the target */
	KS_ROT_TEST,				/* next: prove it by a login */
	KS_ROT_FINISH,				/* next: move the labels, NOTIFY its channel */
	KS_ROT_FINISHED,
	KS_ROT_FAILED,
	KS_ROT_CANCELLED,
	KS_ROT_STATE_COUNT
} KsRotationState;

/* The names, as stored; KsRotationStateNames is built from them. */
#define KS_ROT_CREATE_NAME		"create"
#define KS_ROT_SET_NAME			"set"
#define KS_ROT_TEST_NAME		"test"
#define KS_ROT_FINISH_NAME		"finish"
#define KS_ROT_FINISHED_NAME	"finished"
#define KS_ROT_FAILED_NAME		"failed"
#define KS_ROT_CANCELLED_NAME	"cancelled"

extern const char *const KsRotationStateNames[KS_ROT_STATE_COUNT];

/*
 * The in-flight states (create to finish), as an SQL array literal: the
 * form of the predicate of keysmith.rotation's partial unique index, so
 * that the planner matches it.  The one definition of "in flight".
 */
#define KS_ROT_IN_FLIGHT_SQL \
	"ARRAY['" KS_ROT_CREATE_NAME "', '" KS_ROT_SET_NAME "', '" KS_ROT_TEST_NAME "', '" KS_ROT_FINISH_NAME "']"

/* The same set in C. */
static inline bool
KsRotationInFlight(KsRotationState s)
{
	return s >= KS_ROT_CREATE && s <= KS_ROT_FINISH;
}

/* keysmith.secret_version.stage: a version's staging label (or none). */
typedef enum KsSecretStage
{
	KS_STAGE_NONE = -1,			/* unlabelled (SQL NULL); not in the names */
	KS_STAGE_CURRENT = 0,		/* what readers use */
	KS_STAGE_PENDING,			/* a rotation's next value, until finish */
	KS_STAGE_PREVIOUS,			/* the one before current */
	KS_STAGE_COUNT
} KsSecretStage;

extern const char *const KsSecretStageNames[KS_STAGE_COUNT];

/*
 * The stage named name (get_secret's argument), or KS_STAGE_NONE when it
 * names none.
 */
extern KsSecretStage KsSecretStageFromName(const char *name);

#endif							/* KEYSMITH_ROTATION_STATE_H */
