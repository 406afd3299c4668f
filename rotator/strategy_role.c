/*
 * rotator/strategy_role.c
 *
 * postgres_role: one login role of this cluster, whose password keysmith
 * replaces at every rotation.  Between set and finish the role already
 * takes only the pending password, so clients that read current then fail
 * until finish moves the label (docs/credential-rotation.md); the pair
 * strategy avoids that.  What is done to the role is rotator/role_target.c's.
 */
#include "postgres.h"

#include "rotator/role_target.h"
#include "rotator/rotation_job.h"
#include "rotator/strategy.h"

static void
Check(const KsSecret *s, Oid actor)
{
	(void) KsRoleTargetCheck(actor, s->opt.role);
}

static int
LocalRoles(const KsSecretOptions *opt, const char *roles[2])
{
	roles[0] = opt->role;
	return 1;
}

static bool
IsTarget(const KsSecretOptions *opt, const char *username)
{
	return strcmp(opt->role, username) == 0;
}

static const char *
InstallInitial(const KsSecret *s, Oid actor, const char *password)
{
	(void) KsRoleInstallPassword(actor, s->opt.role, password);
	return s->opt.role;
}

static void
ChooseTarget(KsRotationJob *job, char *target)
{
	strlcpy(target, job->secret.opt.role, NAMEDATALEN);
	(void) KsRoleTargetCheck(job->secret.owner, target);
}

const KsRotationStrategy KsStrategyPostgresRole = {
	.strategy = KS_STRATEGY_ROLE,
	.credential = true,
	.pending_verifier = true,
	.check = Check,
	.local_roles = LocalRoles,
	.is_target = IsTarget,
	.install = KsRoleInstall,
	.install_initial = InstallInitial,
	.choose_target = ChooseTarget,
	.set = KsRoleSet,
	.login = KsRoleLogin,
	.test = KsRotationLoginTested,
	.restore = KsRoleRestore,
};
