/*
 * rotator/rotation.h
 *
 * The credential-rotation engine (rotator/rotation.c): one function that
 * advances a rotation by a switch over its state (the enum is the secrets
 * store's, extension/secrets/rotation_state.h), run by the rotation
 * worker; rotate_secret and cancel_rotation (extension/secrets/secrets.c)
 * start and abandon rotations through it.
 */
#ifndef KEYSMITH_ROTATION_H
#define KEYSMITH_ROTATION_H

#include "postgres.h"

#include "extension/secrets/rotation_state.h"
#include "extension/secrets/secret_store.h"

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

/* One round of the rotation state machine; true when there is more to do at once. */
extern bool KsRotationRound(MemoryContext cxt);

#endif							/* KEYSMITH_ROTATION_H */
