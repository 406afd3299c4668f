/*
 * extension/keys/key_acl.h
 *
 * Per-key privileges (extension/keys/key_acl.c).
 */
#ifndef KEYSMITH_KEY_ACL_H
#define KEYSMITH_KEY_ACL_H

#include "postgres.h"

typedef enum KsPrivilege
{
	KS_PRIV_NONE = -1,			/* lookups that check nothing themselves */
	KS_PRIV_ENCRYPT = 0,
	KS_PRIV_DECRYPT,
	KS_PRIV_ADMIN,
	KS_PRIV_COUNT
} KsPrivilege;

extern const char *const KsPrivilegeNames[KS_PRIV_COUNT];

/* Does role hold priv on key_id?  Reads keysmith.key_acl. */
extern bool KsHasKeyPrivilege(int32 key_id, KsPrivilege priv, Oid role);

/*
 * Does a grant on key_id itself (not its family's, and not superuser)
 * give role priv?  For revoke_key's check of what a family grants.
 */
extern bool KsKeyGrantGives(int32 key_id, KsPrivilege priv, Oid role);

/* ERROR (42501) unless the current user holds priv on the key. */
extern void KsRequirePrivilege(int32 key_id, const char *key_name, KsPrivilege priv);

/* ERROR (42501) unless invoker may administer the key (lifecycle calls). */
extern void KsRequireKeyAdmin(Oid invoker, int32 key_id, const char *key_name);

#endif							/* KEYSMITH_KEY_ACL_H */
