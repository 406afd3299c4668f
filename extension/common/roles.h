/*
 * extension/common/roles.h
 *
 * Role helpers shared by leased roles and credential rotation
 * (extension/common/roles.c): installing a SCRAM verifier without the password
 * ever reaching SQL text, and telling roles keysmith never acts on.
 */
#ifndef KEYSMITH_ROLES_H
#define KEYSMITH_ROLES_H

#include "postgres.h"

#include "utils/timestamp.h"

/* [A-Za-z0-9]: the alphabet of the passwords keysmith generates */
extern const char KsAlnumMixed[];

/*
 * Give roleid the SCRAM verifier verifier (valid_until for the hook only);
 * a NULL verifier removes the role's password.
 */
extern void KsSetRoleVerifier(Oid roleid, const char *rolename, const char *verifier,
							  TimestampTz valid_until);

/* Does roleid's pg_authid.rolpassword equal verifier? */
extern bool KsRoleHasVerifier(Oid roleid, const char *verifier);

/* A keysmith admin: a superuser, or a role with keysmith_admin's privileges. */
extern bool KsIsKeysmithAdmin(Oid role);

/* A predefined role (pg_*), or one of keysmith's own (keysmith_*). */
extern bool KsIsPredefinedRole(Oid roleid, const char *name);
extern bool KsIsKeysmithRole(const char *name);

/* len random characters from alphabet; ERROR if the RNG fails. */
extern void KsRandomString(char *out, int len, const char *alphabet);

/*
 * Act as role, for user code run on a role's behalf (a sql strategy step,
 * a scheduled rotate_dek or re-encryption): its privileges, never the
 * worker's; SECURITY_RESTRICTED_OPERATION (no SET ROLE, no temporary
 * objects); and any SET it makes undone at KsAsRoleEnd.  An error in
 * between is undone by the (sub)transaction's abort.
 */
typedef struct KsAsRole
{
	Oid			save_user;
	int			save_sec;
	int			nestlevel;
} KsAsRole;

extern void KsAsRoleBegin(KsAsRole *as, Oid role);
extern void KsAsRoleEnd(KsAsRole *as);

#endif							/* KEYSMITH_ROLES_H */
