/*
 * rotator/owner_job.h
 *
 * Owner jobs (rotator/owner_job.c): code that a secret's or a column's
 * owner supplies (a sql strategy step function, a registered context_expr
 * and the triggers its UPDATE fires) never runs in keysmith's superuser
 * workers.  A worker hands one statement to a short-lived background
 * worker whose session user and outer user are that owner, and waits for
 * it at most keysmith.rotation_step_timeout.
 */
#ifndef KEYSMITH_OWNER_JOB_H
#define KEYSMITH_OWNER_JOB_H

#include "postgres.h"

#define KS_OWNER_JOB_MAX_ARGS 8

/*
 * A job's C entry point (instead of a statement): called in the job's
 * transaction, SPI connected, with the argument values as C strings; the
 * string it returns (or NULL) is the job's result.  Named by its exported
 * symbol in keysmith.so, since the job is another process.
 */
typedef char *(*KsOwnerJobEntry) (int nargs, char **values);

typedef struct KsOwnerJob
{
	Oid			role;			/* the owner: session, outer and current user */
	const char *what;			/* for messages: "the sql step function of secret \"s\"" */
	const char *sql;			/* one statement, every name schema-qualified */
	const char *entry;			/* or, instead, a KsOwnerJobEntry's symbol */
	int			nargs;
	Oid			types[KS_OWNER_JOB_MAX_ARGS];
	const char *values[KS_OWNER_JOB_MAX_ARGS];	/* text form; NULL is SQL NULL */
	bool		async_commit;	/* synchronous_commit off for its transaction */
} KsOwnerJob;

/*
 * Run job->sql in a new process connected to this database as job->role,
 * in a transaction of its own that commits before this returns.  The first
 * column of the first row comes back as text (palloc'd), or NULL.  The
 * argument values are wiped from shared memory once read.  ERROR with the
 * owner's SQLSTATE and message if the statement failed, and 57014 if it
 * did not end within keysmith.rotation_step_timeout (it is then
 * terminated).  Called inside a transaction, which it leaves alone: the
 * caller must hold no lock the statement could need.
 */
extern char *KsOwnerJobRun(const KsOwnerJob *job);

/*
 * Isolation between owners within one worker round: once a job of a role
 * has passed its deadline, KsOwnerJobRun refuses that role's other jobs
 * (55006) until KsOwnerJobNewRound, so that one owner costs every other
 * owner at most one keysmith.rotation_step_timeout per round.  The
 * rotation worker calls it at the start of each round.
 */
extern void KsOwnerJobNewRound(void);

/*
 * Would KsOwnerJobRun refuse role now (a job of it passed its deadline in
 * this round, or is still running past it)?  Callers skip such work for
 * the round instead of spending one of its attempts.
 */
extern bool KsOwnerJobRoleHeld(Oid role);

#endif							/* KEYSMITH_OWNER_JOB_H */
