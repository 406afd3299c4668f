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
 * exists and can log in, is no predefined, keysmith or (unless actor is a
 * superuser) superuser role, and actor is a superuser or holds ADMIN
 * OPTION on it.  Returns the role's OID.
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
 * Log in as rolename with password over libpq, to conninfo (NULL: by
 * keysmith.rotation_test_conninfo, by default loopback TCP to this
 * server), and require that the server asked for the password.  Called
 * outside any transaction, or inside one with bounded waits.  False with
 * the reason in errbuf on failure.  Interruptible.
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
 * computed here with the remote's iteration count, through the admin
 * login (opened as owner), unless a login with password already works.
 * Refuses a remote superuser unless owner is a superuser.
 */
extern void KsRemoteSetPassword(const KsSecret *s, Oid owner, const char *password);

#endif							/* KEYSMITH_ROLE_STRATEGY_H */
