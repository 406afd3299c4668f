/*
 * extension/roles.h
 *
 * Role helpers shared by leased roles and credential rotation
 * (extension/roles.c): installing a SCRAM verifier without the password
 * ever reaching SQL text, and telling roles keysmith never acts on.
 */
#ifndef KEYSMITH_ROLES_H
#define KEYSMITH_ROLES_H

#include "postgres.h"

#include "utils/timestamp.h"

/* [A-Za-z0-9]: the alphabet of the passwords keysmith generates */
extern const char KsAlnumMixed[];

/* Give roleid the SCRAM verifier verifier (valid_until for the hook only). */
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

#endif							/* KEYSMITH_ROLES_H */
