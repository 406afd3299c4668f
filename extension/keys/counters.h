/*
 * extension/keys/counters.h
 *
 * Encryption counters per DEK version (extension/keys/counters.c), shared
 * by all backends, so that no DEK version passes
 * keysmith.max_encryptions_per_dek.  A version is counted only while this
 * server knows its count; one it does not know is never encrypted under
 * again (the key rolls over).
 */
#ifndef KEYSMITH_COUNTERS_H
#define KEYSMITH_COUNTERS_H

#include "postgres.h"

/* A backend's handle on a counter; zeroed means "not attached yet". */
typedef struct KsCounterRef
{
	int32		slot;			/* slot number + 1; 0: none */
	uint32		generation;		/* the slot's generation when attached */
} KsCounterRef;

typedef enum KsCountResult
{
	KS_COUNT_OK,				/* counted: encrypt */
	KS_COUNT_FULL,				/* the version reached the limit */
	KS_COUNT_UNKNOWN			/* this server does not know the count */
} KsCountResult;

extern void KsCountersShmemRequest(void);
extern void KsCountersShmemStartup(void);

/* Forget the counters of a dropped database when its OID is given again. */
extern void KsCountersInstallHooks(void);

/* A version made here, in this transaction: its count is known (zero). */
extern void KsCounterCreate(int32 key_id, int32 version);

/* Count one encryption under (key_id, version), attaching ref on first use. */
extern KsCountResult KsCounterTake(int32 key_id, int32 version, KsCounterRef *ref);

/* The known count, or -1 when this server does not know it. */
extern int64 KsCounterValue(int32 key_id, int32 version);

#endif							/* KEYSMITH_COUNTERS_H */
