/*
 * rotator/strategy.c
 *
 * The registry of rotation strategies: one line per strategy, from its
 * KsStrategy (kms/secret_options.h) to its table (rotator/strategy.h).
 *
 * Adding a strategy:
 *   1. kms/secret_options.[ch]: a KsStrategy value, its name, and its
 *      options (parsed without PostgreSQL, so unit-tested and fuzzed);
 *   2. rotator/strategy_<name>.c: its table, the functions it names, and
 *      nothing else keysmith needs to know;
 *   3. here: one line in Strategies[] (and its extern);
 *   4. a new extension version whose upgrade script lets the CHECK on
 *      keysmith.secret.strategy accept its name.
 * The engine and the SQL functions then run it with no edit of theirs;
 * docs/credential-rotation.md describes it for users.
 */
#include "postgres.h"

#include "rotator/strategy.h"

extern const KsRotationStrategy KsStrategyPostgresRole;
extern const KsRotationStrategy KsStrategyPostgresRolePair;
extern const KsRotationStrategy KsStrategySql;
extern const KsRotationStrategy KsStrategyPostgresRemote;

/* none: values put by hand; keysmith never rotates them. */
static const KsRotationStrategy KsStrategyNone = {
	.strategy = KS_STRATEGY_NONE,
};

static const KsRotationStrategy *const Strategies[] = {
	[KS_STRATEGY_NONE] = &KsStrategyNone,
	[KS_STRATEGY_ROLE] = &KsStrategyPostgresRole,
	[KS_STRATEGY_ROLE_PAIR] = &KsStrategyPostgresRolePair,
	[KS_STRATEGY_SQL] = &KsStrategySql,
	[KS_STRATEGY_REMOTE] = &KsStrategyPostgresRemote,
};

StaticAssertDecl(lengthof(Strategies) == KS_STRATEGY_COUNT, "every KsStrategy needs a line in Strategies[]");

const KsRotationStrategy *
KsRotationStrategyFor(KsStrategy s)
{
	if ((int) s < 0 || (int) s >= (int) lengthof(Strategies) || Strategies[s] == NULL)
		elog(ERROR, "keysmith: no table for rotation strategy %d", (int) s);
	return Strategies[s];
}

const KsRotationStrategy *
KsRotationStrategyNamed(const char *name)
{
	KsStrategy	s;
	KsError		err;

	if (KsStrategyFromName(name, &s, &err) != KS_OK)
		return NULL;
	return KsRotationStrategyFor(s);
}
