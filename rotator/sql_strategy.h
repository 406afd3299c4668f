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
 * Call it for one step, as owner, with SECURITY_RESTRICTED_OPERATION and
 * its settings confined to the call (as REFRESH MATERIALIZED VIEW runs a
 * view's owner's code).  Errors propagate.
 */
extern void KsSqlStrategyCall(const char *name, Oid owner, const char *step, const char *secret,
							  const char *token, const char *pending);

#endif							/* KEYSMITH_SQL_STRATEGY_H */
