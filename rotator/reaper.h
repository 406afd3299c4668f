/*
 * rotator/reaper.h
 *
 * The lease reaper's round (rotator/reaper.c), run by the reaper worker's
 * loop (rotator/worker.c).
 */
#ifndef KEYSMITH_REAPER_H
#define KEYSMITH_REAPER_H

#include "postgres.h"

/* One round: revoke what is due; true when there is more to do at once. */
extern bool KsReaperRound(MemoryContext cxt);

#endif							/* KEYSMITH_REAPER_H */
