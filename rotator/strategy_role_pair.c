/*
 * rotator/strategy_role_pair.c
 *
 * postgres_role_pair: two login roles of this cluster that take turns.
 * Each rotation sets the password of the role that is not current, so the
 * current credential keeps working until finish moves the label, and the
 * previous one (the other role's) after it.  Both roles are members of one
 * NOLOGIN owner role that owns their objects.  What is done to a role is
 * rotator/role_target.c's.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/syscache.h"

#include "extension/common/roles.h"
#include "rotator/role_target.h"
#include "rotator/rotation_job.h"
#include "rotator/strategy.h"

/*
 * Both roles pass KsRoleTargetCheck, and the owner role exists, cannot log
 * in, and has both roles as members.
 */
static void
PairCheck(Oid actor, const KsSecretOptions *opt)
{
	HeapTuple	tup;
	Oid			owner;
	bool		canlogin;

	for (int i = 0; i < 2; i++)
		(void) KsRoleTargetCheck(actor, opt->roles[i]);
	tup = SearchSysCache1(AUTHNAME, CStringGetDatum(opt->owner_role));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" does not exist", opt->owner_role)));
	owner = ((Form_pg_authid) GETSTRUCT(tup))->oid;
	canlogin = ((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin;
	ReleaseSysCache(tup);
	if (canlogin)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("owner_role \"%s\" must be NOLOGIN", opt->owner_role),
				 errdetail("The owner role holds the objects both roles of the pair use; nobody logs in as it.")));
	for (int i = 0; i < 2; i++)
	{
		Oid			r = get_role_oid(opt->roles[i], false);

		if (!is_member_of_role_nosuper(r, owner))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("role \"%s\" is not a member of owner_role \"%s\"", opt->roles[i], opt->owner_role),
					 errdetail("Both roles of a pair must be members of one NOLOGIN owner role, so that objects keep one owner whichever role is current."),
					 errhint("GRANT \"%s\" TO \"%s\".", opt->owner_role, opt->roles[i])));
	}
}

static void
Check(const KsSecret *s, Oid actor)
{
	PairCheck(actor, &s->opt);
}

static int
LocalRoles(const KsSecretOptions *opt, const char *roles[2])
{
	roles[0] = opt->roles[0];
	roles[1] = opt->roles[1];
	return 2;
}

static bool
IsTarget(const KsSecretOptions *opt, const char *username)
{
	return strcmp(opt->roles[0], username) == 0 || strcmp(opt->roles[1], username) == 0;
}

/* The first credential is the first role's. */
static const char *
InstallInitial(const KsSecret *s, Oid actor, const char *password)
{
	(void) KsRoleInstallPassword(actor, s->opt.roles[0], password);
	return s->opt.roles[0];
}

/* The previous credential is the other role's password still: it goes too. */
static const char *
ShredPrevious(const KsSecret *s, const char *username)
{
	Oid			roleid = KsRoleTargetCheck(s->owner, username);

	KsSetRoleVerifier(roleid, username, NULL, 0);
	return psprintf("the previous version's value is erased, and role %s no longer has a password", username);
}

/* The role the next credential is for: the pair's role that is not current. */
static void
ChooseTarget(KsRotationJob *job, char *target)
{
	const KsSecretOptions *opt = &job->secret.opt;
	char		version[KS_UUID_LEN];
	char		current_user[NAMEDATALEN] = "";

	(void) KsSecretFindVersion(job->secret.name, KS_STAGE_CURRENT, version, NULL, current_user);
	strlcpy(target, strcmp(current_user, opt->roles[0]) == 0 ? opt->roles[1] : opt->roles[0], NAMEDATALEN);
	(void) KsRoleTargetCheck(job->secret.owner, target);
}

const KsRotationStrategy KsStrategyPostgresRolePair = {
	.strategy = KS_STRATEGY_ROLE_PAIR,
	.credential = true,
	.pending_verifier = true,
	.check = Check,
	.local_roles = LocalRoles,
	.is_target = IsTarget,
	.install = KsRoleInstall,
	.install_initial = InstallInitial,
	.shred_previous = ShredPrevious,
	.choose_target = ChooseTarget,
	.set = KsRoleSet,
	.login = KsRoleLogin,
	.test = KsRotationLoginTested,
	.restore = KsRoleRestore,
};
