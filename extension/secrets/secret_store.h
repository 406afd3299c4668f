/*
 * extension/secrets/secret_store.h
 *
 * keysmith's stored secrets (extension/secrets/secret_store.c): loading a secret,
 * its per-secret privileges, sealing and opening version values under the
 * secret's key as a given role, staging labels, pruning and the audit
 * trail.  Used by the SQL functions (extension/secrets/secrets.c) and by the
 * rotation engine (rotator/rotation.c).  Everything here expects SPI to be
 * connected as the extension owner (KsOwnerSpiBegin) in keysmith's trusted
 * catalog (KsRequireSecretCatalog, or the worker's own check).
 */
#ifndef KEYSMITH_SECRET_STORE_H
#define KEYSMITH_SECRET_STORE_H



#include "postgres.h"

#include "extension/keys/key_store.h"
#include "extension/secrets/rotation_state.h"
#include "kms/secret_options.h"

#define KS_SECRET_NAME_MAX 128
#define KS_UUID_LEN 37			/* a uuid's text form and its NUL */

typedef enum KsSecretPriv
{
	KS_SECRET_READ = 0,
	KS_SECRET_ROTATE,
	KS_SECRET_ADMIN,
	KS_SECRET_PRIV_COUNT,
	KS_SECRET_ANY = KS_SECRET_PRIV_COUNT	/* KsSecretHasPrivilege: any of them */
} KsSecretPriv;

extern const char *const KsSecretPrivNames[KS_SECRET_PRIV_COUNT];

typedef struct KsSecret
{
	char		name[KS_SECRET_NAME_MAX + 1];
	char		key_name[KS_KEY_NAME_MAX + 1];
	KsSecretOptions opt;		/* opt.strategy is the strategy */
	Oid			owner;			/* the creator: rotations act as this role */
} KsSecret;

/* The tables of the secrets store, for catalog checks. */
extern const char *const KsSecretTables[];
extern const int KsSecretTableCount;

/* ERROR unless this is the workers' database with a trusted 0.4 catalog. */
extern void KsRequireSecretCatalog(void);

/* Check a secret name's shape; ERROR (42602) if it is unusable. */
extern void KsCheckSecretName(const char *name);

/* Load a secret (locking its row FOR UPDATE when asked); false if absent. */
extern bool KsSecretLoad(const char *name, KsSecret *s, bool for_update);

/*
 * Does role hold priv (or, with KS_SECRET_ANY, any privilege) on the
 * secret?  Superusers hold everything; others through a grant to
 * themselves or a role they have the privileges of.  One query.
 */
extern bool KsSecretHasPrivilege(const char *name, KsSecretPriv priv, Oid role);

/*
 * Load the secret name for a caller who needs priv on it, or ERROR: 42704
 * for a missing secret only to keysmith admins, 42501 alike for a missing
 * secret and a withheld privilege to everyone else, so that no role learns
 * what secrets exist.
 */
extern void KsSecretLoadForCaller(const char *name, KsSecretPriv priv, Oid caller, KsSecret *s,
								  bool for_update);

/* A fresh random uuid in text form. */
extern void KsNewUuid(char *out);

/*
 * Encrypt value under the secret's key with the privileges of user, bound
 * to the secret's name and version_id.
 */
extern bytea *KsSecretSeal(Oid user, const KsSecret *s, const char *version_id,
						   const char *value, size_t len);

/*
 * The reverse: the value as text, in a secret buffer (secret_mem.h) of
 * memory context cxt, which the caller chooses so that the value outlives
 * whatever it must (a function's result must outlive its KsOwnerSpiEnd:
 * SPI_finish frees the SPI context).  Never pfree it: KsSecretFree, or
 * leave it to the context.
 */
extern text *KsSecretOpenText(Oid user, const KsSecret *s, const char *version_id, bytea *ct,
							  MemoryContext cxt);

/*
 * The older form: a NUL-terminated palloc'd copy in the current context,
 * which the caller wipes and may pfree, by hand on every path.  Prefer
 * KsSecretOpenText.
 */
extern char *KsSecretOpen(Oid user, const KsSecret *s, const char *version_id, bytea *ct);

/*
 * The role name the audit trail records for role: what the SQL functions
 * pass as the actor for their caller.  Every function below that writes
 * an event or a version takes the acting role's name explicitly, so what
 * one caller (or one secret's step function) did in this process can never
 * be recorded as another's.  The rotation worker passes the role that
 * requested the rotation, or that set the schedule.
 */
extern char *KsSecretActor(Oid role);

/* Insert a version with stage (KS_STAGE_NONE for none) and username (or NULL). */
extern void KsSecretInsertVersion(const KsSecret *s, const char *version_id, bytea *ct,
								  KsSecretStage stage, const char *username, const char *actor);

/*
 * The version carrying stage, or with version_id (KS_STAGE_NONE): fills
 * version_id, *ct (palloc'd) and username (may be ""); false if none.
 */
extern bool KsSecretFindVersion(const char *name, KsSecretStage stage, char *version_id,
								bytea **ct, char *username);

/*
 * Make version_id current: previous loses its label, current becomes
 * previous.  Then erase unlabelled versions beyond keep_versions, send
 * {"event": "rotated"} on the secret's channel (KsSecretChannel) and give
 * the secret a new one.  One transaction with the caller's.
 */
extern void KsSecretPromote(const KsSecret *s, const char *version_id);

/*
 * The secret's notification channel, "keysmith_rotation_" and 32 hex
 * digits of a random value kept in its row: unguessable, so that only a
 * role that was told it (keysmith.secret_channel, which needs read) can
 * LISTEN to it; a new one at every new version and every revoked read.
 * Into channel (NAMEDATALEN bytes); false if the secret is
 * gone or the catalog is older than 0.10, which has none.
 */
extern bool KsSecretChannel(const char *name, char *channel);

/*
 * Give the secret a new channel (a role lost read: it must hear nothing
 * more), telling listeners of the old one {"event": "channel_changed"}
 * so that readers ask for the new one.  The caller holds the secret's row
 * locked.
 */
extern void KsSecretNewChannel(const char *name);

/* The audit trail; token and version_id may be NULL. */
extern void KsSecretEvent(const char *secret, const char *token, const char *version_id,
						  const char *event, const char *detail, const char *actor);

/* The token (and next step) of the secret's rotation in flight, or NULL. */
extern char *KsSecretRotationInFlight(const char *name, char **state);

/* The name of the secret (other than except) that targets role, or NULL. */
extern char *KsSecretTargetingRole(const char *role, const char *except);

#endif							/* KEYSMITH_SECRET_STORE_H */
