/*
 * rotator/pq_conn.h
 *
 * Every libpq connection keysmith makes (rotator/pq_conn.c): the rules for
 * a connection string, connecting under a deadline keysmith sets, the test
 * login that must really use the password, and one statement at a time on
 * a remote whose every answer is checked.  Used by the role strategies
 * (the test login to this cluster) and postgres_remote (its logins).
 */
#ifndef KEYSMITH_PQ_CONN_H
#define KEYSMITH_PQ_CONN_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "libpq-fe.h"

#include "kms/kms.h"

/* What keysmith does with one keyword of a connection string. */
typedef enum KsPqKeyword
{
	KS_KW_PASS,					/* handed to libpq as it is */
	KS_KW_KEYSMITH,				/* keysmith sets its own: dropped */
	KS_KW_PASSWORD,				/* a secret in the connection string: refused */
	KS_KW_FILE,					/* names a file the server would read */
	KS_KW_REFUSED				/* GSSAPI or replication: never used */
} KsPqKeyword;

extern KsPqKeyword KsPqClassifyKeyword(const char *keyword, const char *value);

/* The deadline of a step's work on one host: keysmith.rotation_step_timeout from now. */
extern TimestampTz KsPqStepDeadline(void);

/*
 * Connect over libpq as user with password.  this_cluster: to this server,
 * by keysmith.rotation_test_conninfo, whose empty default is loopback TCP
 * to this server's port, and only to a peer of this server's OS user;
 * otherwise to conninfo, a postgres_remote secret's.  A password, GSSAPI
 * or replication in the connection string is refused.  Waits end at
 * deadline, or at the conninfo's connect_timeout if that is sooner.  NULL
 * with the reason in errbuf on failure.
 */
extern PGconn *KsPqConnect(const char *conninfo, bool this_cluster, const char *user, const char *password,
						   TimestampTz deadline, char *errbuf, size_t errlen);

/*
 * A login as rolename with password that must use the password: false
 * with the reason in errbuf otherwise.  this_cluster and conninfo as for
 * KsPqConnect.
 */
extern bool KsPqTestLogin(const char *conninfo, bool this_cluster, const char *rolename, const char *password,
						  TimestampTz deadline, char *errbuf, size_t errlen);

/*
 * Log in as rolename with password over libpq, to conninfo (NULL or empty:
 * this cluster, by keysmith.rotation_test_conninfo, by default loopback
 * TCP to this server's port, and only to a peer running as this server's
 * OS user), and require that the server asked for the password.  Ends by
 * keysmith.rotation_step_timeout.  Called outside any transaction, or
 * inside one.  False with the reason in errbuf on failure.  Interruptible.
 */
extern bool KsRoleTestLogin(const char *conninfo, const char *rolename, const char *password,
							char *errbuf, size_t errlen);

/*
 * Run one statement on conn (nonblocking, from KsPqConnect) and wait for
 * its result, interruptibly, until deadline.  Rows come one at a time, so
 * an answer of more than one row is refused at its second.  The result
 * must have status expect: for PGRES_TUPLES_OK, the one row (or the empty
 * result).  ERROR otherwise; the caller closes conn.
 */
extern PGresult *KsPqExec(PGconn *conn, const char *sql, int nparams, const char *const *params,
						  ExecStatusType expect, TimestampTz deadline);

/*
 * The one value of a one-row, one-column answer to the query for what:
 * not NULL and at most KS_REMOTE_VALUE_MAX bytes; its length in *len.
 */
extern const char *KsPqValue(const PGresult *res, const char *what, size_t *len);

/* ERROR for a kms/pgremote.c verdict on what the remote answered. */
extern void KsPqAnswerError(const KsError *err);

#endif							/* KEYSMITH_PQ_CONN_H */
