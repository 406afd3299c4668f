/*
 * rotator/worker.h
 *
 * keysmith's static background workers (rotator/worker.c), registered from
 * _PG_init.
 */
#ifndef KEYSMITH_WORKER_H
#define KEYSMITH_WORKER_H

extern void KsWorkersRegister(void);

#endif							/* KEYSMITH_WORKER_H */
