/*
 * rotator/rotation.h
 *
 * The credential-rotation engine (rotator/rotation.c): one state enum and
 * one function that advances a rotation by a switch, run by the rotation
 * worker; rotate_secret and cancel_rotation (extension/secrets.c) start and
 * abandon rotations through it.
 */
#ifndef KEYSMITH_ROTATION_H
#define KEYSMITH_ROTATION_H

#include "postgres.h"

#include "../extension/secret_store.h"

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

extern const char *const KsRotationStateNames[KS_ROT_STATE_COUNT];

/* The in-flight states of KsRotationStateNames (create to finish), for SQL text. */
#define KS_ROT_IN_FLIGHT_SQL "ARRAY['create', 'set', 'test', 'finish']"

/*
 * Start a rotation of secret s (locked FOR UPDATE by the caller), with
 * token (generated when NULL in *token), requested by the role named
 * requester: every event of the rotation, the worker's steps included,
 * names it.  Returns the token in effect: the same token again is the same
 * rotation, and nothing else happens.
 */
extern void KsRotationStart(const KsSecret *s, char *token, bool token_given, const char *requester);

/*
 * ERROR unless secret s can be rotated now: not strategy none, and its
 * owner may still act on its target (role, pair, function, remote).
 */
extern void KsRotationCheckStrategy(const KsSecret *s);

/*
 * Abandon the rotation in flight for secret s (locked by the caller), as
 * the role named actor: the pending version is erased, and if set had
 * already changed the target, the target gets back the credential of the
 * version it had.  current is never touched.
 */
extern void KsRotationCancel(const KsSecret *s, const char *actor);

#endif							/* KEYSMITH_ROTATION_H */
