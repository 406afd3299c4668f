/*
 * rotator/role_target.h
 *
 * Roles of this cluster as rotation targets (rotator/role_target.c): who
 * may have keysmith set a role's password, installing a password as a
 * SCRAM verifier, and the steps the postgres_role and postgres_role_pair
 * strategies share.
 */
#ifndef KEYSMITH_ROLE_TARGET_H
#define KEYSMITH_ROLE_TARGET_H

#include "postgres.h"

#include "extension/secrets/secret_store.h"
#include "rotator/rotation_job.h"

/*
 * ERROR unless actor may have keysmith set rolename's password: the role
 * exists and can log in, is no predefined, keysmith or bootstrap role, and
 * passes the one delegation rule (role_target.c,
 * RequirePasswordDelegation; docs/security.md, "Role targets"): a
 * superuser actor, or ADMIN OPTION on a role that is neither a superuser
 * nor (before PostgreSQL 16, or without CREATEROLE) REPLICATION.  Decides
 * by actor alone, in any backend.  Returns the role's OID.
 */
extern Oid	KsRoleTargetCheck(Oid actor, const char *rolename);

/*
 * Install password on rolename as a SCRAM verifier, after
 * KsRoleTargetCheck(actor, ...).  Returns the verifier (palloc'd).
 */
extern char *KsRoleInstallPassword(Oid actor, const char *rolename, const char *password);

/* The strategy functions (rotator/strategy.h) both role strategies use. */
extern void KsRoleInstall(const KsSecret *s, Oid actor, const char *username, const char *password);
extern const char *KsRoleSet(KsRotationJob *job);
extern char *KsRoleLogin(KsRotationJob *job);
extern void KsRoleRestore(KsRotationJob *job, const char *password);

#endif							/* KEYSMITH_ROLE_TARGET_H */
