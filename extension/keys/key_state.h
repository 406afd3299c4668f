/*
 * extension/keys/key_state.h
 *
 * The key-state cache (extension/keys/key_state.c).
 */
#ifndef KEYSMITH_KEY_STATE_H
#define KEYSMITH_KEY_STATE_H

#include "postgres.h"

/* Is this version off its key's current one, and still re-encryptable? */
extern bool KsVersionNeedsReencrypt(uint32 key_id, uint32 version);

/* Forget every cached key state. */
extern void KsKeyStatesFlush(void);

#endif							/* KEYSMITH_KEY_STATE_H */
