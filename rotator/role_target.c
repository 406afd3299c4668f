/*
 * rotator/role_target.c
 *
 * What the strategies with roles of this cluster (postgres_role,
 * postgres_role_pair) do to a role, and who may have them do it.
 * keysmith acts with more rights than the secret's owner here (a
 * superuser worker, or any backend on the owner's behalf), so every action
 * is first checked against the owner alone, never against the process:
 * the one rule of RequirePasswordDelegation, again at every step, since
 * roles and memberships change while a secret lives.
 *
 * A password reaches the role only as a SCRAM verifier computed here
 * (extension/common/roles.c writes it to pg_authid), never in SQL text.
 * The test login is rotator/pq_conn.c's.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "libpq/scram.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "extension/common/roles.h"
#include "rotator/pq_conn.h"
#include "rotator/role_target.h"

/*
 * The one rule for who may have keysmith set a role's password: ERROR
 * unless actor may.  keysmith must never hand a role a credential that
 * PostgreSQL's own rules and role membership would not already let it use
 * (docs/security.md, "Role targets", gives the reasoning per attribute):
 *
 * - a superuser may target any role (but those KsRoleTargetCheck excludes);
 * - a superuser target needs a superuser actor: membership never confers
 *   superuser;
 * - otherwise actor needs ADMIN OPTION on the role, with which it can
 *   grant itself the role and SET ROLE to it: CREATEROLE, CREATEDB and
 *   BYPASSRLS are then its own already, since PostgreSQL checks them on the
 *   current user;
 * - REPLICATION counts only at login (a walsender checks the session
 *   user), never through SET ROLE: it needs a superuser actor, or, from
 *   PostgreSQL 16 on, where ALTER ROLE ... PASSWORD allows exactly that,
 *   an actor with CREATEROLE as well as ADMIN OPTION.
 */
static void
RequirePasswordDelegation(Oid actor, Form_pg_authid role)
{
	const char *rolename = NameStr(role->rolname);

	if (superuser_arg(actor))
		return;
	if (role->rolsuper)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" is a superuser", rolename),
				 errdetail("Only a secret created by a superuser may rotate a superuser's password.")));
	if (!is_admin_of_role(actor, role->oid))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to set the password of role \"%s\"", rolename),
				 errdetail("The secret's owner must be a superuser or hold ADMIN OPTION on the role."),
				 errhint("GRANT \"%s\" TO the owner WITH ADMIN OPTION.", rolename)));
#if PG_VERSION_NUM >= 160000
	if (role->rolreplication && !has_createrole_privilege(actor))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" has the REPLICATION attribute", rolename),
				 errdetail("REPLICATION counts only at login and is never conferred by membership: only a secret created by a superuser, or by a role with CREATEROLE and ADMIN OPTION on it, may rotate its password.")));
#else
	if (role->rolreplication)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" has the REPLICATION attribute", rolename),
				 errdetail("REPLICATION counts only at login and is never conferred by membership: only a secret created by a superuser may rotate its password.")));
#endif
}

Oid
KsRoleTargetCheck(Oid actor, const char *rolename)
{
	HeapTuple	tup = SearchSysCache1(AUTHNAME, CStringGetDatum(rolename));
	Form_pg_authid role;
	Oid			roleid;
	bool		canlogin;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" does not exist", rolename)));
	role = (Form_pg_authid) GETSTRUCT(tup);
	roleid = role->oid;
	canlogin = role->rolcanlogin;

	if (KsIsPredefinedRole(roleid, rolename) || KsIsKeysmithRole(rolename) ||
		roleid == BOOTSTRAP_SUPERUSERID)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("keysmith does not rotate the password of role \"%s\"", rolename),
				 errdetail("Predefined roles, keysmith's own roles and the bootstrap superuser are never a rotation target.")));
	RequirePasswordDelegation(actor, role);
	ReleaseSysCache(tup);
	if (!canlogin)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("role \"%s\" cannot log in", rolename),
				 errdetail("A rotated credential must be proven by a login."),
				 errhint("ALTER ROLE \"%s\" LOGIN.", rolename)));
	return roleid;
}


char *
KsRoleInstallPassword(Oid actor, const char *rolename, const char *password)
{
	Oid			roleid = KsRoleTargetCheck(actor, rolename);
	char	   *verifier = pg_be_scram_build_secret(password);

	KsSetRoleVerifier(roleid, rolename, verifier, DT_NOBEGIN);
	return verifier;
}

/* ------------------------------------------------------------ shared steps */

void
KsRoleInstall(const KsSecret *s, Oid actor, const char *username, const char *password)
{
	(void) KsRoleInstallPassword(actor, username, password);
}

const char *
KsRoleSet(KsRotationJob *job)
{
	Oid			roleid;

	KsRotationRequireOwner(job);
	roleid = KsRoleTargetCheck(job->secret.owner, job->target);
	if (job->verifier == NULL)
		elog(ERROR, "keysmith: rotation %s lost its pending verifier", job->token);
	if (KsRoleHasVerifier(roleid, job->verifier))
		return "the role already had the pending credential";
	KsSetRoleVerifier(roleid, job->target, job->verifier, DT_NOBEGIN);
	return NULL;
}

char *
KsRoleLogin(KsRotationJob *job)
{
	char		err[512];

	if (!KsRoleTestLogin(NULL, job->target, job->password, err, sizeof(err)))
		return pstrdup(err);
	return NULL;
}

void
KsRoleRestore(KsRotationJob *job, const char *password)
{
	(void) KsRoleInstallPassword(job->secret.owner, job->target, password);
}
