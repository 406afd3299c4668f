/*
 * extension/common/args.h
 *
 * Checking the arguments of SQL-callable functions: a NULL where none is
 * allowed, and a jsonb options object taken apart into names and values.
 */
#ifndef KEYSMITH_ARGS_H
#define KEYSMITH_ARGS_H

#include "postgres.h"

#include "utils/jsonb.h"

/* ERROR (22004) "<what> must not be null" if argument argno is NULL. */
#define KsRequireArg(fcinfo, argno, what) \
	do { \
		if (PG_ARGISNULL(argno)) \
			ereport(ERROR, \
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), \
					 errmsg("%s must not be null", (what)))); \
	} while (0)

/*
 * The members of a JSON object given as options: names[i] and values[i]
 * (NULL where the value is not a string), at most max of them; returns how
 * many.  ERROR (22023) "<what> must be a JSON object", or if there are
 * more than max.  Used by schedules and KMS providers.
 */
extern int	KsJsonbOptions(Jsonb *options, const char *what, int max, char **names, char **values);

#endif							/* KEYSMITH_ARGS_H */
