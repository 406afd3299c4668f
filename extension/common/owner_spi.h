/*
 * extension/common/owner_spi.h
 *
 * SPI on keysmith's tables as their owner (extension/common/owner_spi.c).  Begin
 * switches to the owner and connects; End finishes and switches back.
 * KsSpiExec runs one statement and raises an internal error unless SPI
 * returns `expect`.
 */
#ifndef KEYSMITH_OWNER_SPI_H
#define KEYSMITH_OWNER_SPI_H

#include "postgres.h"

#include "access/xact.h"

typedef struct KsOwnerSpi
{
	Oid			save_userid;
	int			save_sec;
} KsOwnerSpi;

extern void KsOwnerSpiBegin(KsOwnerSpi *spi);
extern void KsOwnerSpiEnd(KsOwnerSpi *spi);
extern void KsSpiExec(const char *sql, int nargs, Oid *types, Datum *values,
					  const char *nulls, bool read_only, long count, int expect);

/* OID of keysmith.key, resolving and checking the key tables on first use. */
extern Oid	KsKeyTableOid(void);

/* Is relid keysmith.key or keysmith.key_version (as last resolved)? */
extern bool KsIsKeyTable(Oid relid);

/*
 * Lookups run read-write (a fresh snapshot that sees this transaction's own
 * key changes, such as a rollover a moment ago) except in parallel mode,
 * where only the query's own snapshot may be used.
 */
static inline bool
KsSpiReadOnly(void)
{
	return IsInParallelMode();
}

#endif							/* KEYSMITH_OWNER_SPI_H */
