/*
 * extension/common/secret_mem.c
 *
 * Secret buffers that their memory context wipes (see secret_mem.h).  Each
 * buffer is one palloc'd chunk: the caller's bytes, then a tail holding a
 * MemoryContextCallback registered on the same context.  A context calls
 * its reset callbacks before it frees any memory, on MemoryContextReset and
 * MemoryContextDelete alike, so the wipe always runs while the bytes are
 * still there, and it runs on ERROR too: aborting a (sub)transaction
 * resets or deletes the contexts it used.  An adopted chunk (someone
 * else's palloc, such as a detoasted argument) gets a tail of its own.
 *
 * PostgreSQL 15 cannot unregister a callback, so KsSecretFree takes the
 * buffer's own off the context's list before it frees the chunk that
 * holds it.
 */
#include "postgres.h"

#include "fmgr.h"
#include "nodes/memnodes.h"
#include "utils/memutils.h"

#include "extension/common/secret_mem.h"

typedef struct SecretTail
{
	MemoryContextCallback cb;	/* first: cb.arg points here */
	void	   *ptr;			/* the bytes to wipe */
	Size		len;
	bool		own_chunk;		/* this tail is a palloc of its own (adopted) */
} SecretTail;

static void
WipeSecret(void *arg)
{
	SecretTail *tail = (SecretTail *) arg;

	explicit_bzero(tail->ptr, tail->len);
}

static void
Register(MemoryContext cxt, SecretTail *tail, void *ptr, Size len, bool own_chunk)
{
	tail->ptr = ptr;
	tail->len = len;
	tail->own_chunk = own_chunk;
	tail->cb.func = WipeSecret;
	tail->cb.arg = tail;
	MemoryContextRegisterResetCallback(cxt, &tail->cb);
}

void *
KsSecretAlloc(MemoryContext cxt, Size size)
{
	Size		offset = MAXALIGN(size);
	char	   *chunk;

	/* a value too large for one chunk: a clear error, not an internal one */
	if (size > MaxAllocSize - sizeof(SecretTail) - MAXIMUM_ALIGNOF)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("value of %zu bytes is too large", (size_t) size),
				 errdetail("keysmith holds a value in one piece of memory of at most %zu bytes.",
						   (size_t) (MaxAllocSize - sizeof(SecretTail) - MAXIMUM_ALIGNOF))));
	chunk = MemoryContextAlloc(cxt, offset + sizeof(SecretTail));
	Register(cxt, (SecretTail *) (chunk + offset), chunk, size, false);
	return chunk;
}

struct varlena *
KsSecretVarlena(MemoryContext cxt, Size datalen, Size spare)
{
	struct varlena *v = (struct varlena *) KsSecretAlloc(cxt, VARHDRSZ + datalen + spare);

	SET_VARSIZE(v, VARHDRSZ + datalen);
	return v;
}

void
KsSecretAdopt(void *p, Size len)
{
	MemoryContext cxt = GetMemoryChunkContext(p);

	Register(cxt, MemoryContextAlloc(cxt, sizeof(SecretTail)), p, len, true);
}

void
KsSecretFree(void *p)
{
	MemoryContext cxt;
	MemoryContextCallback **link;

	if (p == NULL)
		return;
	cxt = GetMemoryChunkContext(p);
	for (link = &cxt->reset_cbs; *link != NULL; link = &(*link)->next)
	{
		MemoryContextCallback *cb = *link;
		SecretTail *tail;

		if (cb->func != WipeSecret || ((SecretTail *) cb->arg)->ptr != p)
			continue;
		tail = (SecretTail *) cb->arg;
		*link = cb->next;
		explicit_bzero(p, tail->len);
		if (tail->own_chunk)
			pfree(tail);
		pfree(p);
		return;
	}
	elog(ERROR, "keysmith: KsSecretFree of a buffer that is not a secret buffer");
}

struct varlena *
KsSecretArg(FunctionCallInfo fcinfo, int argno)
{
	struct varlena *raw = (struct varlena *) DatumGetPointer(PG_GETARG_DATUM(argno));
	struct varlena *v = PG_DETOAST_DATUM_PACKED(PG_GETARG_DATUM(argno));

	if (v != raw)
		KsSecretAdopt(v, VARSIZE_ANY(v));
	return v;
}
