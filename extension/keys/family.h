/*
 * extension/keys/family.h
 *
 * Key families (extension/keys/family.c): a family is a key whose DEK
 * versions wrap other keys' DEKs (its members') and encrypt no values.  A
 * member's DEK version is sealed by the family's current DEK version, here
 * in the backend, so a million members cost a KMS one unwrap per family
 * version, and each member is still destroyed on its own.
 */
#ifndef KEYSMITH_FAMILY_H
#define KEYSMITH_FAMILY_H

#include "postgres.h"

#include "extension/keys/key_store.h"

/* Register the member wrap with the key store (from _PG_init). */
extern void KsFamilyInit(void);

/*
 * Make ready to wrap n members under family parent_id: count n encryptions
 * under its current version (rolling the family over first when that
 * version is full or its count unknown), and hold the family row FOR SHARE
 * to the end of the transaction, so a family rotation waits for the
 * members being wrapped.  Returns the family version to wrap under.
 * SPI must be connected as the tables' owner (KsKeyOpBegin).
 */
extern int32 KsFamilyReserve(int32 parent_id, int64 n);

/*
 * A fresh random DEK for member (name, version), sealed under family
 * version parent_version (which KsFamilyReserve counted for it).
 */
extern bytea *KsFamilyWrapNew(int32 parent_id, int32 parent_version, const char *name, int32 version);

/*
 * Rewrap every live version of family's members under its current
 * version, in batches; returns how many were rewrapped.  The family row
 * must be locked FOR UPDATE (KsKeyLock).
 */
extern int64 KsFamilyRewrapMembers(KsKeyRec *family);

/* Does a live (not destroyed) member of family_id exist? */
extern bool KsFamilyHasLiveMembers(int32 family_id);

/*
 * Record in keysmith.key_shred the versions of member key_id (all of them
 * with version 0) whose DEK is about to be erased.  Not a member: nothing.
 */
extern void KsFamilyRecordShreds(int32 key_id, int32 version);

#endif							/* KEYSMITH_FAMILY_H */
