/*
 * rotator/role_strategy.h
 *
 * The role strategies of credential rotation (rotator/role_strategy.c):
 * who may target a role, installing a password as a SCRAM verifier, and
 * the test login over libpq that must really use the password.
 */
#ifndef KEYSMITH_ROLE_STRATEGY_H
#define KEYSMITH_ROLE_STRATEGY_H

#include "postgres.h"

#include "../extension/secret_store.h"

/*
 * ERROR unless actor may have keysmith set rolename's password: the role
 * exists and can log in, is no predefined, keysmith or bootstrap role, and
 * passes the one delegation rule (role_strategy.c,
 * RequirePasswordDelegation; docs/security.md, "Role targets"): a
 * superuser actor, or ADMIN OPTION on a role that is neither a superuser
 * nor (before PostgreSQL 16, or without CREATEROLE) REPLICATION.  Decides
 * by actor alone, in any backend.  Returns the role's OID.
 */
extern Oid	KsRoleTargetCheck(Oid actor, const char *rolename);

/*
 * For postgres_role_pair: both roles pass KsRoleTargetCheck, and the owner
 * role exists, cannot log in, and has both roles as members.
 */
extern void KsRolePairCheck(Oid actor, const KsSecretOptions *opt);

/* The role a credential of this secret may be for: one of its target roles. */
extern bool KsRoleIsTarget(const KsSecretOptions *opt, const char *rolename);

/*
 * Install password on rolename as a SCRAM verifier, after
 * KsRoleTargetCheck(actor, ...).  Returns the verifier (palloc'd).
 */
extern char *KsRoleInstallPassword(Oid actor, const char *rolename, const char *password);

/*
 * Log in as rolename with password over libpq, to conninfo (NULL or empty:
 * this cluster, by keysmith.rotation_test_conninfo, by default loopback
 * TCP to this server's port, and only to a peer running as this server's
 * OS user), and require that the server asked for the password.  Ends by
 * keysmith.rotation_step_timeout.  Called outside any transaction, or
 * inside one.  False with the reason in errbuf on failure.  Interruptible.
 */
extern bool KsRoleTestLogin(const char *conninfo, const char *rolename, const char *password,
							char *errbuf, size_t errlen);

/*
 * postgres_remote: ERROR unless the secret's conninfo parses, holds no
 * password and (for a non-superuser owner) names no file, and its admin
 * secret exists and owner may read it; that secret in *admin if not NULL.
 */
extern void KsRemoteCheck(const KsSecret *s, Oid owner, KsSecret *admin);

/*
 * postgres_remote: give the remote role password, as a SCRAM verifier
 * computed here with the remote's iteration count (4096 to 1,000,000),
 * through the admin login (opened as owner), unless a login with password
 * already works.  Refuses a remote superuser unless owner is a superuser.
 * Everything the remote answers is checked; all of it ends by
 * keysmith.rotation_step_timeout from the call.  Decides by owner alone,
 * in any backend.
 */
extern void KsRemoteSetPassword(const KsSecret *s, Oid owner, const char *password);

/*
 * postgres_remote from the rotation worker: run op ("set": install
 * password on the remote; "test": log in with it) in an owner job, a
 * process whose session user is the secret's owner (rotator/owner_job.h).
 * "test" returns why the login failed, or NULL; errors propagate.
 */
extern char *KsRemoteInOwnerJob(const KsSecret *s, const char *op, const char *password);

#endif							/* KEYSMITH_ROLE_STRATEGY_H */
