/*
 * rotator/strategy_sql.c
 *
 * The sql strategy, keysmith's equivalent of a rotation Lambda.  keysmith
 * generates the pending value, stores it and moves the labels; the
 * secret owner's function does the target-side work, once per step:
 *
 *   fn(step text, secret_name text, token uuid, pending text) RETURNS void
 *
 * with step 'create', 'set', 'test' or 'finish'.  It runs as the secret's
 * owner, never as the worker's superuser, with SECURITY_RESTRICTED_OPERATION
 * (no SET ROLE, no temporary objects) and with any SET it makes undone
 * when it returns.  The name is schema-qualified and resolved without a
 * search_path; EXECUTE is checked again at every call.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "parser/parse_func.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "extension/common/roles.h"
#include "rotator/owner_job.h"
#include "rotator/rotation_job.h"
#include "rotator/strategy.h"

/*
 * The function named "schema.fn" with the strategy's signature, which
 * actor may execute; ERROR (42883, 42P13, 42501) otherwise.
 */
static Oid
StepFunction(const char *name, Oid actor)
{
	static const Oid argtypes[4] = {TEXTOID, TEXTOID, UUIDOID, TEXTOID};
	List	   *names = stringToQualifiedNameList(name);
	Oid			fn;
	HeapTuple	tup;
	Oid			rettype;

	if (list_length(names) != 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option function must be a schema-qualified function name")));
	/* qualified, so no search_path is consulted */
	fn = LookupFuncName(names, 4, argtypes, true);
	if (!OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("function %s(text, text, uuid, text) does not exist", name),
				 errhint("A sql strategy function takes (step text, secret_name text, token uuid, pending text) and returns void.")));
	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for function %u", fn);
	rettype = ((Form_pg_proc) GETSTRUCT(tup))->prorettype;
	ReleaseSysCache(tup);
	if (rettype != VOIDOID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
				 errmsg("function %s must return void", name)));
	if (pg_proc_aclcheck(fn, actor, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", name),
				 errdetail("The secret's owner must be able to execute its rotation function.")));
	return fn;
}

/*
 * Call it for one step in an owner job (rotator/owner_job.h): a process
 * whose session user is owner, in a transaction of its own that has
 * committed when this returns, ended at keysmith.rotation_step_timeout.
 * Errors propagate, with the function's SQLSTATE.
 */
static void
StepFunctionCall(const char *name, Oid owner, const char *step, const char *secret,
				 const char *token, const char *pending)
{
	Oid			fn = StepFunction(name, owner);
	KsOwnerJob	job = {0};

	/* resolved once, by OID; called by its qualified name with exact types */
	job.role = owner;
	job.what = psprintf("the %s step function of secret \"%s\"", step, secret);
	job.sql = psprintf("SELECT %s($1, $2, $3, $4)",
					   quote_qualified_identifier(get_namespace_name(get_func_namespace(fn)),
												  get_func_name(fn)));
	job.nargs = 4;
	job.types[0] = TEXTOID;
	job.types[1] = TEXTOID;
	job.types[2] = UUIDOID;
	job.types[3] = TEXTOID;
	job.values[0] = step;
	job.values[1] = secret;
	job.values[2] = token;
	job.values[3] = pending;
	(void) KsOwnerJobRun(&job);	/* void: the result says nothing */
}

/* ------------------------------------------------------------ the table */

static void
Check(const KsSecret *s, Oid actor)
{
	(void) StepFunction(s->opt.function, actor);
}

/* Run the function for this step, with the pending value. */
static void
CallStep(KsRotationJob *job, KsRotationState step)
{
	char	   *value = KsRotationOpenPending(job);

	PG_TRY();
	{
		StepFunctionCall(job->secret.opt.function, job->secret.owner, KsRotationStateNames[step],
						 job->secret.name, job->token, value);
	}
	PG_FINALLY();
	{
		explicit_bzero(value, strlen(value));
	}
	PG_END_TRY();
	pfree(value);
}

static const char *
Create(KsRotationJob *job)
{
	CallStep(job, KS_ROT_CREATE);
	return "pending value stored; create step function ran";
}

static const char *
Set(KsRotationJob *job)
{
	CallStep(job, KS_ROT_SET);
	return "set step function ran";
}

static const char *
Test(KsRotationJob *job)
{
	CallStep(job, KS_ROT_TEST);
	return "test step function ran";
}

static void
Finish(KsRotationJob *job)
{
	CallStep(job, KS_ROT_FINISH);
}

const KsRotationStrategy KsStrategySql = {
	.strategy = KS_STRATEGY_SQL,
	.owner_jobs = true,
	.check = Check,
	.create = Create,
	.set = Set,
	.test = Test,
	.finish = Finish,
};
