/*
 * rotator/strategy.h
 *
 * Rotation strategies as tables of functions, the shape of KsKmsProvider
 * (kms/kms.h): what keysmith does to a secret's target is asked of its
 * strategy's table, so the rotation engine (rotator/rotation.c) is a pure
 * state machine and the SQL functions (extension/secrets/secrets.c) hold
 * no strategy's rules.  One file per strategy (rotator/strategy_*.c), one
 * registry line each (rotator/strategy.c, which says how to add one).
 *
 * Every function is asked a question by name: NULL, where allowed, is the
 * answer "nothing to do".  A function that acts for the secret's owner
 * decides by the owner alone, never by the process's rights: the worker
 * is a superuser.
 */
#ifndef KEYSMITH_STRATEGY_H
#define KEYSMITH_STRATEGY_H

#include "postgres.h"

#include "extension/secrets/secret_store.h"
#include "rotator/rotation_job.h"

typedef struct KsRotationStrategy
{
	KsStrategy	strategy;		/* its value; KsStrategyName gives its name */

	/* ---- what a secret of the strategy is */

	/* Its values are role credentials, {"username": ..., "password": ...}. */
	bool		credential;

	/* create keeps the pending SCRAM verifier in the rotation's row for set. */
	bool		pending_verifier;

	/*
	 * Its steps run code or reach hosts its owner chose, in owner jobs
	 * (rotator/owner_job.h): an owner whose job passed its deadline this
	 * round defers them to the next round.
	 */
	bool		owner_jobs;

	/* ---- asked by the SQL functions and schedules */

	/*
	 * ERROR unless actor may have keysmith act on the secret's target
	 * (create_secret, rotate_secret, a schedule starting a rotation).
	 * NULL: keysmith does not rotate such a secret (none).
	 */
	void		(*check) (const KsSecret *s, Oid actor);

	/*
	 * check reads keysmith's store (a remote's admin secret): create_secret
	 * runs it once the store is open, after the name and key were checked;
	 * otherwise first, with the caller's own rights.
	 */
	bool		check_reads_store;

	/*
	 * The roles of this cluster whose passwords the secret sets, into
	 * roles (at most 2); returns how many.  No role is rotated by two
	 * secrets.  NULL: none.
	 */
	int			(*local_roles) (const KsSecretOptions *opt, const char *roles[2]);

	/* May a credential of the secret be for role username?  (credential only) */
	bool		(*is_target) (const KsSecretOptions *opt, const char *username);

	/*
	 * Give role username of the target password, as actor (a credential
	 * given to create_secret or put_secret_value).  (credential only)
	 */
	void		(*install) (const KsSecret *s, Oid actor, const char *username, const char *password);

	/*
	 * create_secret without a value: install password, generated, on the
	 * role that gets the first credential, as actor; returns that role.
	 * NULL: the caller must give the first value.
	 */
	const char *(*install_initial) (const KsSecret *s, Oid actor, const char *password);

	/*
	 * A schedule shreds the previous version, whose credential is for role
	 * username and not current's: make it log in no more where its role
	 * still takes it (the pair's other role).  Returns the event's detail.
	 * NULL: a previous credential is already dead.
	 */
	const char *(*shred_previous) (const KsSecret *s, const char *username);

	/* ---- the engine's steps (rotator/rotation.c), in order */

	/*
	 * create: the role the next credential is for, into target
	 * (NAMEDATALEN bytes), once the owner may still act on it.  NULL: the
	 * target is the strategy's own business, and target stays "".
	 */
	void		(*choose_target) (KsRotationJob *job, char *target);

	/*
	 * create, once the pending version is stored: the target's share.
	 * Returns the 'created' event's detail.  NULL: none, and the detail
	 * names the target.
	 */
	const char *(*create) (KsRotationJob *job);

	/* set: install the pending value at the target; the 'set' detail (or NULL). */
	const char *(*set) (KsRotationJob *job);

	/*
	 * Between set and test, outside any transaction: log in with
	 * job->password, which the engine opened; why it failed, or NULL
	 * (palloc'd in the current context).  NULL: no login (test proves it).
	 */
	char	   *(*login) (KsRotationJob *job);

	/* test: ERROR unless the pending value works; the 'tested' detail. */
	const char *(*test) (KsRotationJob *job);

	/* finish, once the labels moved.  NULL: nothing more. */
	void		(*finish) (KsRotationJob *job);

	/*
	 * An unfinished rotation whose set had run: give the target back
	 * password, of the version it had.  NULL: nothing to give back.
	 */
	void		(*restore) (KsRotationJob *job, const char *password);
} KsRotationStrategy;

/* The table of strategy s (every KsStrategy has one). */
extern const KsRotationStrategy *KsRotationStrategyFor(KsStrategy s);

/* The table of the strategy named name, or NULL when there is none. */
extern const KsRotationStrategy *KsRotationStrategyNamed(const char *name);

#endif							/* KEYSMITH_STRATEGY_H */
