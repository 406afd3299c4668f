/*
 * extension/keys/reencrypt.h
 *
 * The states of a re-encryption job (keysmith.reencrypt_job.state),
 * spelled once: the job writer (extension/keys/reencrypt.c), the SQL
 * procedure that calls it (extension/scripts/) and the worker's scheduled
 * re-encryption (rotator/schedule.c) use these names, and the table's
 * CHECK constraint (keysmith--0.10--0.11.sql) allows exactly them.
 * Each name is a macro so that SQL text that must hold one as a literal
 * is built from it; C passes them as SPI parameters where it can.
 */
#ifndef KEYSMITH_REENCRYPT_H
#define KEYSMITH_REENCRYPT_H

#include "postgres.h"

typedef enum KsReencryptState
{
	KS_REENCRYPT_RUNNING = 0,	/* started, resumable from resume_after */
	KS_REENCRYPT_DONE,			/* a full pass found nothing left */
	KS_REENCRYPT_STATE_COUNT
} KsReencryptState;

#define KS_REENCRYPT_RUNNING_NAME "running"
#define KS_REENCRYPT_DONE_NAME "done"

/* The same names as SQL string literals, for SQL text that cannot take a parameter. */
#define KS_REENCRYPT_RUNNING_SQL "'" KS_REENCRYPT_RUNNING_NAME "'"
#define KS_REENCRYPT_DONE_SQL "'" KS_REENCRYPT_DONE_NAME "'"

extern const char *const KsReencryptStateNames[KS_REENCRYPT_STATE_COUNT];

#endif							/* KEYSMITH_REENCRYPT_H */
