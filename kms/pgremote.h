/*
 * kms/pgremote.h
 *
 * Judging what another PostgreSQL server, or whatever listens where
 * keysmith connects, answers: its version string, its SCRAM iteration
 * count, a boolean, a message to quote, and (for the test login) which OS
 * user owns the other end of a local TCP connection.  Everything here is
 * hostile input: a postgres_remote secret's owner chooses the host, and a
 * local OS user may listen where the test login connects.  The glue in
 * rotator/pq_conn.c checks the shape of each libpq result and hands
 * the bytes here.  Plain C without PostgreSQL or libpq headers, so that it
 * is unit-tested and fuzzed (test/fuzz/fuzz_pgremote.c).  (Not in
 * kms/remote.h, which includes jansson: jansson's json_object collides
 * with PostgreSQL's declarations in the glue that uses these.)
 */
#ifndef KEYSMITH_PGREMOTE_H
#define KEYSMITH_PGREMOTE_H

#include <stddef.h>
#include <sys/socket.h>

#include "kms.h"

/* The longest single value keysmith reads from a remote's query answer. */
#define KS_REMOTE_VALUE_MAX 64

/* A remote's text (an error message) is quoted up to this many bytes. */
#define KS_REMOTE_TEXT_MAX 200

/*
 * Server versions keysmith talks to: 10 (the first with SCRAM) up to a
 * major version of 99.
 */
#define KS_REMOTE_VERSION_MIN 100000
#define KS_REMOTE_VERSION_MAX 999999

/*
 * The SCRAM iteration counts keysmith computes a verifier with.  Below
 * 4096 (PostgreSQL's default) the verifier the remote receives would be
 * cheaper to attack than PostgreSQL's own; above 1,000,000 (about 0.7 s of
 * PBKDF2 here) a hostile remote would pin the CPU of the process that
 * computes it.
 */
#define KS_REMOTE_SCRAM_ITERATIONS_MIN 4096
#define KS_REMOTE_SCRAM_ITERATIONS_MAX 1000000

/*
 * A server_version string ("15.4", "16.1 (Debian 16.1-1)", "17beta1",
 * "9.6.24") of len bytes, as PostgreSQL's server_version_num: major *
 * 10000 + minor (9.6.24: 90624).  KS_ERR_KMS_BAD_RESPONSE unless it starts
 * with a version number; KS_ERR_INVALID_ARGUMENT for a version outside
 * KS_REMOTE_VERSION_MIN..MAX.
 */
extern KsStatus KsRemoteParseVersion(const char *s, size_t len, int *version, KsError *err);

/*
 * The remote's scram_iterations setting: 1 to 10 decimal digits and
 * nothing else (KS_ERR_KMS_BAD_RESPONSE otherwise), within
 * KS_REMOTE_SCRAM_ITERATIONS_MIN..MAX (KS_ERR_INVALID_ARGUMENT otherwise).
 */
extern KsStatus KsRemoteParseIterations(const char *s, size_t len, int *iterations, KsError *err);

/* A boolean in PostgreSQL's text output: exactly "t" or "f". */
extern KsStatus KsRemoteParseBool(const char *s, size_t len, int *value, KsError *err);

/*
 * A remote's text made safe to quote in a message or store in a table:
 * at most KS_REMOTE_TEXT_MAX bytes of it, line breaks and tabs as spaces,
 * every other byte outside printable ASCII replaced by '?', trailing
 * white space dropped, "..." appended when cut; "(no message)" for NULL.
 * out holds at least KS_REMOTE_TEXT_MAX + 4 bytes.
 */
extern void KsRemoteCleanText(const char *in, char *out, size_t outlen);

/*
 * A TCP endpoint in the notation of Linux's /proc/net/tcp (IPv4:
 * "0100007F:1F90") or /proc/net/tcp6, into out (at least 64 bytes).  An
 * IPv4 address in tcp6 notation, as a dual-stack listener sees it, when
 * mapped is set.  0 for a family other than AF_INET and AF_INET6.
 */
extern int	KsProcNetAddr(const struct sockaddr *sa, int mapped, char *out, size_t outlen);

/*
 * One line of /proc/net/tcp or tcp6: 1 and the owner's uid if its local
 * and remote addresses are exactly local and remote (KsProcNetAddr
 * notation); 0 otherwise, the header line and malformed lines included.
 */
extern int	KsProcNetLineUid(const char *line, const char *local, const char *remote, unsigned long *uid);

#endif							/* KEYSMITH_PGREMOTE_H */
