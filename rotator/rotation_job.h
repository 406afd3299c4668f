/*
 * rotator/rotation_job.h
 *
 * One rotation as the engine (rotator/rotation.c) holds it while it runs
 * a step, and what the engine offers the strategies (rotator/strategy_*.c)
 * that do the target's share of each step (rotator/rotation_job.c):
 * opening the pending version as the secret's owner, and the test step of
 * a strategy that proves its credential by a login.
 */
#ifndef KEYSMITH_ROTATION_JOB_H
#define KEYSMITH_ROTATION_JOB_H

#include "postgres.h"

#include "extension/secrets/rotation_state.h"
#include "extension/secrets/secret_store.h"

typedef struct KsRotationJob
{
	char		token[KS_UUID_LEN];
	KsRotationState state;
	int			attempts;
	KsSecret	secret;
	char		target[NAMEDATALEN];	/* "" until create ran, or for none */
	char		pending[KS_UUID_LEN];	/* "" until create ran */
	char	   *verifier;		/* the pending SCRAM verifier, or NULL */
	char	   *password;		/* the pending password, for the test login */
	bool		tested;
	char	   *test_error;		/* why the test login failed, or NULL */
	bool		skip;			/* gone, locked by another, or failed this round */
	char		actor[NAMEDATALEN]; /* whom its events name: the requester, or
									 * the caller of cancel_rotation */
} KsRotationJob;

/* ERROR unless the secret's owner still exists: every step acts as it. */
extern void KsRotationRequireOwner(const KsRotationJob *job);

/* The pending value, opened as the secret's owner (palloc'd; wipe it). */
extern char *KsRotationOpenPending(const KsRotationJob *job);

/*
 * The password of a role credential version, opened as the secret's owner,
 * into password (KS_CREDENTIAL_PASSWORD_MAX + 1 bytes, wiped by the caller).
 */
extern void KsRotationOpenCredential(const KsRotationJob *job, const char *version, bytea *ct,
									 char *password);

/* The same for the pending credential. */
extern void KsRotationOpenPendingPassword(const KsRotationJob *job, char *password);

/*
 * The test step of a strategy that logs in: ERROR unless the login made
 * before it (outside any transaction) used the pending password.  Returns
 * the 'tested' event's detail.
 */
extern const char *KsRotationLoginTested(KsRotationJob *job);

#endif							/* KEYSMITH_ROTATION_JOB_H */
