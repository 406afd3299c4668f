/*
 * rotator/schedule.h
 *
 * Schedules (rotator/schedule.c): secrets rotated and keys given a new DEK
 * version once per period, the re-encryption of the columns registered for
 * a key, and the shredding of previous versions.  The SQL functions that
 * set them are in extension/schedules/schedules.c; the rotation worker runs them.
 */
#ifndef KEYSMITH_SCHEDULE_H
#define KEYSMITH_SCHEDULE_H

#include "postgres.h"

#include "datatype/timestamp.h"

#include "extension/secrets/secret_store.h"

typedef enum KsScheduleKind
{
	KS_SCHEDULE_SECRET = 0,
	KS_SCHEDULE_KEY
} KsScheduleKind;

typedef struct KsScheduleSpec
{
	KsScheduleKind kind;
	const char *target;			/* the secret's or the key's name */
	Interval   *every;
	Interval   *window;			/* start times spread within it */
	TimestampTz starting;
	bool		reencrypt;		/* keys: re-encrypt the registered columns */
	Interval   *destroy_previous_after; /* secrets: or NULL */
	Oid			owner;			/* runs act with its privileges */
} KsScheduleSpec;

/* The tables schedules use (the secrets store's among them). */
extern const char *const KsScheduleTables[];
extern const int KsScheduleTableCount;

/* ERROR unless this is the workers' database with a trusted 0.6 catalog. */
extern void KsRequireScheduleCatalog(void);

/*
 * ERROR (22023) unless every is at least a second and window (NULL: none)
 * is not negative and shorter than every.
 */
extern void KsScheduleCheckPeriod(const Interval *every, const Interval *window);

/*
 * Set (or replace) a schedule; SPI is connected as the extension owner.
 * Returns when its first run is due: at starting plus its offset within
 * the window, or, when starting is past, for the latest period begun.
 */
extern TimestampTz KsScheduleSet(const KsScheduleSpec *spec);

/* Remove a schedule; false if there was none. */
extern bool KsScheduleRemove(KsScheduleKind kind, const char *target);

/*
 * The rotation worker's round: schedules, rotations, scheduled re-encryption;
 * true when there is more to do at once.
 */
extern bool KsRotationWorkerRound(MemoryContext cxt);

#endif							/* KEYSMITH_SCHEDULE_H */
