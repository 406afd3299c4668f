/*
 * rotator/sql_strategy.h
 *
 * The sql rotation strategy (rotator/sql_strategy.c): the secret owner's
 * own function, fn(step text, secret_name text, token uuid, pending text)
 * RETURNS void, does the target-side work of each step.
 */
#ifndef KEYSMITH_SQL_STRATEGY_H
#define KEYSMITH_SQL_STRATEGY_H

#include "postgres.h"

/*
 * The function named "schema.fn" with the strategy's signature, which
 * actor may execute; ERROR (42883, 42P13, 42501) otherwise.
 */
extern Oid	KsSqlStrategyFunction(const char *name, Oid actor);

/*
 * Call it for one step in an owner job (rotator/owner_job.h): a process
 * whose session user is owner, in a transaction of its own that has
 * committed when this returns, ended at keysmith.rotation_step_timeout.
 * Errors propagate, with the function's SQLSTATE.
 */
extern void KsSqlStrategyCall(const char *name, Oid owner, const char *step, const char *secret,
							  const char *token, const char *pending);

#endif							/* KEYSMITH_SQL_STRATEGY_H */
