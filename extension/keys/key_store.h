/*
 * extension/keys/key_store.h
 *
 * The key store (extension/keys/key_store.c): every read and write of the
 * key tables, the key-name rule, and automatic rollover.  Below it: the
 * common helpers and kms/; above it: the DEK cache, values and the key
 * lifecycle functions.
 */
#ifndef KEYSMITH_KEY_STORE_H
#define KEYSMITH_KEY_STORE_H

#include "postgres.h"

#include "executor/spi.h"

#include "extension/common/owner_spi.h"
#include "extension/keys/key_scan.h"
#include "extension/keys/kms_instance.h"
#include "kms/envelope.h"

#define KS_KEY_NAME_MAX 128

/* Check a key name's shape; ERROR with 22023 if it is unusable. */
extern void KsCheckKeyName(const char *name);

/* A lifecycle call in progress: who called, and the SPI session as owner. */
typedef struct KsKeyOp
{
	Oid			invoker;
	KsOwnerSpi	spi;
} KsKeyOp;

typedef struct KsKeyRec
{
	int32		key_id;
	char	   *name;
	char	   *kms;
	int32		current_version;
	bool		destroyed;
	char	   *kms_type;		/* the provider's type and options (JSON) */
	char	   *kms_options;
	KsKmsInstance inst;			/* built from them when KMS work comes */
	bool		inst_built;
	char	   *kms_key;		/* its reference in the KMS, or NULL */
	bool		text_kek;		/* catalog 0.7+: KEK versions are text */
	bool		family;			/* catalog 0.11+: a key family */
	int32		parent_id;		/* a member's family, else 0 */
	char	   *parent_name;	/* and its name, else NULL */
} KsKeyRec;

/* Lifecycle operations: the caller, then SPI as the key tables' owner. */
extern void KsKeyOpBegin(KsKeyOp *op);
extern void KsKeyOpEnd(KsKeyOp *op);
/*
 * End a call that only created keys: nothing any backend cached can be
 * stale, so no backend's DEK cache is flushed (creating one key must not
 * cost every backend its cache).
 */
extern void KsKeyOpEndCreated(KsKeyOp *op);

/*
 * Called by KsKeyOpEnd after a change, so this backend's DEK cache drops
 * what it holds at once (other backends at their next transaction, through
 * the relcache invalidation).  The DEK cache registers itself: the store
 * does not call up into it.
 */
typedef void (*KsKeyStoreChangedFn) (void);
extern void KsKeyStoreOnChange(KsKeyStoreChangedFn fn);

/* A read-write statement with a fresh snapshot, all rows. */
extern void KsKeyExec(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls, int expect);

/* Lock and read a key, by name (name != NULL, 42704 if unknown) or by id. */
extern void KsKeyLock(const char *name, int32 key_id, KsKeyRec *rec);
/* Read a key by name without locking it (catalog 0.11+). */
extern void KsKeyPeek(const char *name, KsKeyRec *rec);
/*
 * ERROR (25000) unless the transaction takes a new snapshot per statement:
 * work that must see every member version committed before it (a family's
 * rewrap, a master key's last users) cannot run on a transaction snapshot.
 */
extern void KsKeyRequireReadCommitted(const char *what);
extern void KsKeyLoadProvider(const char *kms, KsKeyRec *rec);
extern const KsKmsInstance *KsKeyInstance(KsKeyRec *rec);
extern void KsKeyRequireNotDestroyed(KsKeyRec *rec);
extern void KsKeyAudit(KsKeyOp *op, const char *event, KsKeyRec *rec, int32 version, const char *detail);

/*
 * Key families (extension/keys/family.c): a member's DEK versions are
 * wrapped by its family's current DEK version, not by a KMS.  The family
 * module registers the wrap, as the DEK cache registers KsKeyStoreOnChange:
 * the store does not call up into either.  The function wraps a fresh DEK
 * for (name, version), a member of family parent_id, and sets *wrapped_by
 * to the family version used.
 */
typedef bytea *(*KsMemberWrapFn) (int32 parent_id, const char *name, int32 version, int32 *wrapped_by);
extern void KsKeyStoreOnMemberWrap(KsMemberWrapFn fn);

/*
 * Called before a key that is no member gets a new DEK version; it raises
 * an error to refuse (extension/keys/key_verify.c registers it: one of the
 * key's live versions must open with the key material at hand).
 */
typedef void (*KsNewVersionCheckFn) (KsKeyRec *rec);
extern void KsKeyStoreBeforeNewVersion(KsNewVersionCheckFn fn);

/*
 * Called before a new DEK is wrapped under (kms, kms_key) of a provider
 * that records no KEK check value (extension/keys/kek_check.c): the data
 * keys already under that KMS key must open with it (key_verify.c).
 */
typedef void (*KsKmsKeyCheckFn) (const char *kms, const char *kms_key);
extern void KsKeyStoreBeforeWrap(KsKmsKeyCheckFn fn);

/*
 * The GCM context (additional data) a member's DEK is sealed with under its
 * family's DEK: a label no value's context can take, then the DEK binding
 * of (name, version).  Returns its length, 0 if out is too small.
 */
#define KS_MEMBER_BINDING_MAX (KS_KEY_NAME_MAX + 96)
extern size_t KsMemberBinding(const char *name, uint32 version, uint8 *out, size_t out_len);

/*
 * A member's wrapped DEK: check it is a keysmith ciphertext of a DEK sealed
 * by family parent_id, and give its header (the family version is
 * hdr->key_version); ERROR (KS008) if not.  Then open it with that family
 * version's AEAD into dek (KS_DEK_LEN bytes, wiped on failure); ERROR
 * (KS008) if it does not authenticate.
 */
extern void KsMemberParse(const char *name, uint32 version, uint32 parent_id, const bytea *wrapped,
						  KsHeader *hdr);
extern void KsMemberOpen(KsAead *family, const char *family_name, const KsHeader *hdr,
						 const char *name, uint32 version, const bytea *wrapped, uint8 *dek);

/* ERROR (KS018) for a family where a key that encrypts values is needed, and back. */
extern void KsKeyRequireNotFamily(KsKeyRec *rec, const char *what);
extern void KsKeyRequireNotMember(KsKeyRec *rec, const char *what);

/* Versions: new DEKs, their rows, rewrapping, the live ones. */
extern bytea *KsKeyWrapNewDek(const char *name, int32 version, const KsKmsInstance *inst, const char *kms,
							  const char *kms_key, char *kek_version);
extern void KsKeyInsertVersion(KsKeyRec *rec, int32 version, bytea *wrapped, const char *kek_version);
extern void KsKeyInsertMemberVersion(KsKeyRec *rec, int32 version, bytea *wrapped, int32 wrapped_by);
extern void KsKeyAddVersion(KsKeyRec *rec, int32 version);
extern void KsKeyStoreWrapped(KsKeyRec *rec, int32 version, const uint8 *wrapped, size_t wrapped_len,
							  const char *kek_version);
extern SPITupleTable *KsKeyLiveVersions(KsKeyRec *rec, uint64 *n);
extern void KsKeyInsertAcl(int32 key_id, const char *role, const char *privilege);

/*
 * Move a key to a new DEK version when the current one hits its limit, when
 * this server does not know its count, or when it was made on another
 * server history.
 */
typedef enum KsRolloverReason
{
	KS_ROLLOVER_LIMIT,
	KS_ROLLOVER_COUNT_UNKNOWN,
	KS_ROLLOVER_OTHER_HISTORY
} KsRolloverReason;

extern void KsRollover(int32 key_id, int32 full_version, KsRolloverReason why);

/*
 * Reading one version for the DEK cache (KsKeyRow: key_scan.h), by index,
 * where SPI as the tables' owner read it before; and whether the version
 * it read was made on another server history (no query: the row has it).
 */
extern void KsKeyFetchRow(const char *name, uint32 key_id, uint32 version, KsKeyRow *row);
extern bool KsKeyMadeOnOtherHistory(const KsKeyRow *row);

/* Catalog 0.11+: key families, from the key tables' cached shape. */
extern bool KsKeyStoreHasFamilies(void);

/* Key name of a key id, or NULL if there is no such key (palloc'd). */
extern char *KsKeyNameById(uint32 key_id);

#endif							/* KEYSMITH_KEY_STORE_H */
