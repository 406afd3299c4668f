/*
 * extension/common/secret_mem.h
 *
 * Memory for secrets: data keys, master keys, passwords, credentials and
 * plaintext values (extension/common/secret_mem.c).  A secret buffer is palloc'd
 * in a memory context together with a reset callback of that context that
 * wipes it, as pgsodium does, so the buffer is wiped when the context is
 * reset or deleted, whatever the path: a normal return, the end of a
 * query, or an ERROR that aborts the (sub)transaction between allocation
 * and use.  Code that holds a secret across anything that can raise an
 * ERROR needs no PG_TRY and no hand-placed wipe.
 *
 * Rules: a secret buffer is never pfree'd or repalloc'd (its wipe would
 * then touch freed memory); KsSecretFree wipes and frees it early, for
 * example to give back a large value's memory at once.  A function result
 * in a secret buffer is fine: the executor never frees the result datums
 * of a function, and the per-tuple context they live in is reset.
 */
#ifndef KEYSMITH_SECRET_MEM_H
#define KEYSMITH_SECRET_MEM_H

#include "postgres.h"

#include "fmgr.h"

/* size bytes (not zeroed) in cxt, wiped when cxt is reset or deleted. */
extern void *KsSecretAlloc(MemoryContext cxt, Size size);

/* A secret buffer of size bytes holding a varlena of datalen bytes: VARSIZE set. */
extern struct varlena *KsSecretVarlena(MemoryContext cxt, Size datalen, Size spare);

/*
 * Wipe a buffer from KsSecretAlloc or KsSecretAdopt now and free it.  NULL
 * is fine.  Finding its callback costs one step per secret buffer of its
 * context.
 */
extern void KsSecretFree(void *p);

/*
 * Treat an existing chunk that this code owns ([p, p + len), palloc'd by
 * someone else, such as a detoasted copy) as a secret buffer: it is wiped
 * with its context, and must then follow the rules above.
 */
extern void KsSecretAdopt(void *p, Size len);

/*
 * Argument argno as text or bytea, detoasted; if detoasting made a copy,
 * the copy is adopted as a secret buffer.  The argument itself (a constant
 * of the query, a column's value) is not this code's to wipe.
 */
extern struct varlena *KsSecretArg(FunctionCallInfo fcinfo, int argno);

#endif							/* KEYSMITH_SECRET_MEM_H */
