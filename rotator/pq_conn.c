/*
 * rotator/pq_conn.c
 *
 * Every libpq connection keysmith makes: the test login of a rotation to
 * this cluster (the role strategies), and a postgres_remote secret's test
 * and admin logins.  Each goes through KsPqConnect, and every statement on
 * it through KsPqExec: one place for the rules below.  The test login
 * counts only if the server asked for the password (a trust line in
 * pg_hba.conf lets anyone in and proves nothing), and on this cluster
 * sends the password only to a process of this server's own OS user.
 * Everything a remote answers is judged by kms/pgremote.c before use.
 *
 * Deadlines.  Whoever chose the host may stall it, so every wait ends at a
 * deadline keysmith sets: keysmith.rotation_step_timeout from the start of
 * the step's work on that host (all its logins and statements together),
 * or earlier where the conninfo's connect_timeout ends a connection
 * attempt sooner.  The latch interrupts every wait (cancel, SIGTERM).
 *
 * Credentials of the server.  libpq would otherwise use what the server's
 * OS user has: GSSAPI is never used (gssencmode=disable, and a service
 * name no Kerberos realm has, so a server asking for GSS authentication
 * gets no ticket of this host), and no client certificate is loaded that
 * the conninfo does not name (~/.postgresql/postgresql.crt).  Passwords
 * are always keysmith's own; passfile and service are never consulted.
 */
#include "postgres.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/postmaster.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

#include "extension/common/guc.h"
#include "extension/common/roles.h"
#include "kms/pgremote.h"
#include "rotator/pq_conn.h"

/* sslcert where the conninfo names none: a path that cannot exist (ENOTDIR) */
#define NO_CLIENT_CERT "/dev/null/keysmith-names-no-client-certificate"
/* krbsrvname: no realm has this service, so GSS authentication fails at once */
#define NO_GSS_SERVICE "keysmith-never-uses-gssapi"

KsPqKeyword
KsPqClassifyKeyword(const char *keyword, const char *value)
{
	static const char *const files[] = {"sslcert", "sslkey", "sslrootcert", "sslcrl", "sslcrldir",
	"passfile", "service"};
	static const char *const ours[] = {"user", "options", "application_name", "fallback_application_name"};

	if (strcmp(keyword, "password") == 0 || strcmp(keyword, "sslpassword") == 0)
		return KS_KW_PASSWORD;
	if (strcmp(keyword, "replication") == 0 || strcmp(keyword, "krbsrvname") == 0 ||
		strcmp(keyword, "gsslib") == 0 ||
		(strcmp(keyword, "gssencmode") == 0 && strcmp(value, "require") == 0))
		return KS_KW_REFUSED;
	if (strcmp(keyword, "gssencmode") == 0)
		return KS_KW_KEYSMITH;		/* disable or prefer: keysmith disables it */
	for (int i = 0; i < (int) lengthof(ours); i++)
		if (strcmp(keyword, ours[i]) == 0)
			return KS_KW_KEYSMITH;
	for (int i = 0; i < (int) lengthof(files); i++)
		if (strcmp(keyword, files[i]) == 0)
			return KS_KW_FILE;
	return KS_KW_PASS;
}

/* Copy libpq's (or a remote's) text, made safe to quote, after what. */
static void
ConnError(PGconn *conn, const char *what, char *errbuf, size_t errlen)
{
	char		clean[KS_REMOTE_TEXT_MAX + 4];

	KsRemoteCleanText(conn ? PQerrorMessage(conn) : "out of memory", clean, sizeof(clean));
	snprintf(errbuf, errlen, "%s: %s", what, clean);
}

/* Notices from a remote are dropped: it must not write into this server's log. */
static void
DropNotice(void *arg, const char *message)
{
}

TimestampTz
KsPqStepDeadline(void)
{
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), keysmith_rotation_step_timeout);
}

/*
 * Wait until conn's socket is ready for io (WL_SOCKET_READABLE or
 * WL_SOCKET_WRITEABLE), serving the latch meanwhile.  False once the
 * deadline has passed.
 */
static bool
WaitConn(PGconn *conn, int io, TimestampTz deadline)
{
	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		int			rc;

		if (left <= 0)
			return false;
		rc = WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH | io,
							   PQsocket(conn), left, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		if (rc & io)
			return true;
	}
}

/* Find the TCP socket local -> remote in one /proc/net table: its owner's uid. */
static bool
ScanSocketTable(const char *path, const char *local, const char *remote, unsigned long *uid)
{
	FILE	   *f = fopen(path, "r");
	char		line[512];
	bool		found = false;

	if (f == NULL)
		return false;
	while (!found && fgets(line, sizeof(line), f) != NULL)
		found = KsProcNetLineUid(line, local, remote, uid) != 0;
	fclose(f);
	return found;
}

/*
 * The uid owning the other end of a TCP connection from self to peer, if
 * that end is a socket of this host (network namespace): the socket whose
 * local address is peer and remote address is self.  A dual-stack
 * listener's sockets show IPv4 peers in tcp6 as ::ffff:a.b.c.d.
 */
static bool
TcpPeerUid(const struct sockaddr *peer, const struct sockaddr *self, unsigned long *uid)
{
	char		l[64],
				r[64];

	if (KsProcNetAddr(peer, 0, l, sizeof(l)) && KsProcNetAddr(self, 0, r, sizeof(r)) &&
		ScanSocketTable(peer->sa_family == AF_INET ? "/proc/net/tcp" : "/proc/net/tcp6", l, r, uid))
		return true;
	return peer->sa_family == AF_INET &&
		KsProcNetAddr(peer, 1, l, sizeof(l)) && KsProcNetAddr(self, 1, r, sizeof(r)) &&
		ScanSocketTable("/proc/net/tcp6", l, r, uid);
}

/*
 * The test login to this cluster sends the password only to a process of
 * this server's own OS user.  Called before every PQconnectPoll: libpq
 * sends the password at the earliest two polls after the socket connects
 * (startup packet, then the answer to the server's authentication
 * request), so a socket checked here has carried nothing secret yet.  A
 * socket already checked (by inode: libpq may open a new one, for another
 * host or without SSL) passes at once; one not yet connected has sent
 * nothing.  False, with the reason, unless the peer is verified: its
 * SO_PEERCRED for a Unix socket, its entry in /proc/net/tcp or tcp6 for
 * TCP; anything else cannot be verified and is refused.
 */
static bool
PeerIsThisServer(PGconn *conn, ino_t *checked, char *errbuf, size_t errlen)
{
	int			sock = PQsocket(conn);
	struct stat st;
	struct sockaddr_storage peer,
				self;
	socklen_t	plen = sizeof(peer),
				slen = sizeof(self);
	unsigned long uid;

	if (sock < 0)
		return true;
	if (fstat(sock, &st) != 0)
	{
		snprintf(errbuf, errlen, "login refused: could not inspect its socket: %m");
		return false;
	}
	if (st.st_ino == *checked)
		return true;
	if (getpeername(sock, (struct sockaddr *) &peer, &plen) != 0)
	{
		if (errno == ENOTCONN)
			return true;		/* still connecting: nothing sent */
		snprintf(errbuf, errlen, "login refused: could not find who it connected to: %m");
		return false;
	}
	if (peer.ss_family == AF_UNIX)
	{
		struct ucred cred;
		socklen_t	clen = sizeof(cred);

		if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0)
		{
			snprintf(errbuf, errlen, "login refused: could not read the credentials of its Unix socket's peer: %m");
			return false;
		}
		uid = (unsigned long) cred.uid;
	}
	else if (getsockname(sock, (struct sockaddr *) &self, &slen) != 0 ||
			 !TcpPeerUid((struct sockaddr *) &peer, (struct sockaddr *) &self, &uid))
	{
		snprintf(errbuf, errlen,
				 "login refused: its connection does not end at a socket of this host, so nothing shows that this server is listening there; the password was not sent");
		return false;
	}
	if (uid != (unsigned long) geteuid())
	{
		snprintf(errbuf, errlen,
				 "login refused: what listens there runs as OS user %lu, not as this server's OS user (%lu); the password was not sent",
				 uid, (unsigned long) geteuid());
		return false;
	}
	*checked = st.st_ino;
	return true;
}

/*
 * Drive a started connection until it is made, fails, or until passes.
 * PQconnectPoll ignores connect_timeout: the deadline is kept here.
 */
static bool
PollConnect(PGconn *conn, bool this_cluster, TimestampTz until, char *errbuf, size_t errlen)
{
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	ino_t		checked = 0;

	errbuf[0] = '\0';
	while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED)
	{
		if (!WaitConn(conn, st == PGRES_POLLING_READING ? WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE, until))
		{
			snprintf(errbuf, errlen, "login timed out after %d ms (keysmith.rotation_step_timeout, or a shorter connect_timeout)",
					 keysmith_rotation_step_timeout);
			return false;
		}
		if (this_cluster && !PeerIsThisServer(conn, &checked, errbuf, errlen))
			return false;
		st = PQconnectPoll(conn);
	}
	if (st == PGRES_POLLING_FAILED)
	{
		ConnError(conn, "login failed", errbuf, errlen);
		return false;
	}
	return true;
}

typedef struct PollArgs
{
	bool		this_cluster;
	TimestampTz until;
	char	   *errbuf;
	size_t		errlen;
} PollArgs;

/* PollConnect, closing conn if an interrupt throws. */
static bool
PollGuarded(PGconn *conn, const PollArgs *a)
{
	volatile bool ok = false;

	PG_TRY();
	{
		ok = PollConnect(conn, a->this_cluster, a->until, a->errbuf, a->errlen);
	}
	PG_CATCH();
	{
		PQfinish(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return ok;
}

PGconn *
KsPqConnect(const char *conninfo, bool this_cluster, const char *user, const char *password,
		TimestampTz deadline, char *errbuf, size_t errlen)
{
	char	   *parse_error = NULL;
	PQconninfoOption *opts = NULL;
	const char *keys[64];
	const char *vals[64];
	int			n = 0;
	bool		have_dbname = false;
	bool		have_sslcert = false;
	char		port[16];
	char		options[64];
	PGconn	   *conn;
	TimestampTz until = deadline;
	PollArgs	pa;

	if (this_cluster)
		conninfo = keysmith_rotation_test_conninfo;
	else if (conninfo == NULL || conninfo[0] == '\0')
	{
		snprintf(errbuf, errlen, "the connection string is empty");
		return NULL;
	}
	if (conninfo == NULL || conninfo[0] == '\0')
	{
		snprintf(port, sizeof(port), "%d", PostPortNumber);
		keys[n] = "host";
		vals[n++] = "127.0.0.1";
		keys[n] = "port";
		vals[n++] = port;
	}
	else
	{
		opts = PQconninfoParse(conninfo, &parse_error);
		if (opts == NULL)
		{
			snprintf(errbuf, errlen, "the connection string is not valid");
			if (parse_error)
				PQfreemem(parse_error);
			return NULL;
		}
		for (PQconninfoOption *o = opts; o->keyword != NULL && n < 50; o++)
		{
			if (o->val == NULL || o->val[0] == '\0')
				continue;
			switch (KsPqClassifyKeyword(o->keyword, o->val))
			{
				case KS_KW_PASSWORD:
					PQconninfoFree(opts);
					snprintf(errbuf, errlen, "the connection string must not hold a password");
					return NULL;
				case KS_KW_REFUSED:
					snprintf(errbuf, errlen, "the connection string must not set %s: keysmith never uses GSSAPI or replication connections",
							 o->keyword);
					PQconninfoFree(opts);
					return NULL;
				case KS_KW_KEYSMITH:
					continue;
				case KS_KW_FILE:
					if (strcmp(o->keyword, "passfile") == 0 || strcmp(o->keyword, "service") == 0)
						continue;	/* keysmith always gives the password */
					if (strcmp(o->keyword, "sslcert") == 0)
						have_sslcert = true;
					break;
				case KS_KW_PASS:
					break;
			}
			if (strcmp(o->keyword, "dbname") == 0)
				have_dbname = true;
			if (strcmp(o->keyword, "connect_timeout") == 0)
			{
				/* libpq's meaning: seconds, 0 or less for none; it can only shorten */
				long		s = strtol(o->val, NULL, 10);

				if (s > 0 && s < keysmith_rotation_step_timeout / 1000 + 1)
					until = Min(until, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), s * 1000));
			}
			keys[n] = o->keyword;
			vals[n++] = o->val;
		}
	}
	if (!have_dbname)
	{
		keys[n] = "dbname";
		vals[n++] = keysmith_database_name;
	}
	if (!have_sslcert)
	{
		keys[n] = "sslcert";
		vals[n++] = NO_CLIENT_CERT;
	}
	keys[n] = "gssencmode";
	vals[n++] = "disable";
	keys[n] = "krbsrvname";
	vals[n++] = NO_GSS_SERVICE;
	snprintf(options, sizeof(options), "-c statement_timeout=%d", keysmith_rotation_step_timeout);
	keys[n] = "options";
	vals[n++] = options;
	keys[n] = "user";
	vals[n++] = user;
	keys[n] = "password";
	vals[n++] = password;
	keys[n] = "application_name";
	vals[n++] = "keysmith rotation";
	keys[n] = NULL;
	vals[n] = NULL;

	conn = PQconnectStartParams(keys, vals, false);
	if (opts)
		PQconninfoFree(opts);
	if (conn == NULL || PQstatus(conn) == CONNECTION_BAD)
	{
		ConnError(conn, "login failed", errbuf, errlen);
		if (conn)
			PQfinish(conn);
		return NULL;
	}
	PQsetNoticeProcessor(conn, DropNotice, NULL);

	pa.this_cluster = this_cluster;
	pa.until = until;
	pa.errbuf = errbuf;
	pa.errlen = errlen;
	if (!PollGuarded(conn, &pa))
	{
		PQfinish(conn);
		return NULL;
	}
	/* statements are sent and read without blocking, under the deadline */
	if (PQsetnonblocking(conn, 1) != 0)
	{
		ConnError(conn, "login failed", errbuf, errlen);
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

bool
KsPqTestLogin(const char *conninfo, bool this_cluster, const char *rolename, const char *password,
		  TimestampTz deadline, char *errbuf, size_t errlen)
{
	PGconn	   *conn = KsPqConnect(conninfo, this_cluster, rolename, password, deadline, errbuf, errlen);
	bool		used;

	if (conn == NULL)
	{
		char		msg[512];

		snprintf(msg, sizeof(msg), "test %s", errbuf);
		strlcpy(errbuf, msg, errlen);
		return false;
	}
	used = PQconnectionUsedPassword(conn);
	PQfinish(conn);
	if (!used)
		snprintf(errbuf, errlen,
				 "test login as \"%s\" succeeded without using the password (a trust or peer line in pg_hba.conf?), so it proves nothing",
				 rolename);
	return used;
}

bool
KsRoleTestLogin(const char *conninfo, const char *rolename, const char *password, char *errbuf, size_t errlen)
{
	bool		this_cluster = conninfo == NULL || conninfo[0] == '\0';

	return KsPqTestLogin(conninfo, this_cluster, rolename, password, KsPqStepDeadline(), errbuf, errlen);
}

static void
RemoteTimedOut(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("the remote server did not answer within keysmith.rotation_step_timeout (%d ms)",
					keysmith_rotation_step_timeout)));
}

static void
RemoteConnFailed(PGconn *conn)
{
	char		clean[KS_REMOTE_TEXT_MAX + 4];

	KsRemoteCleanText(PQerrorMessage(conn), clean, sizeof(clean));
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("remote server: %s", clean)));
}

PGresult *
KsPqExec(PGconn *conn, const char *sql, int nparams, const char *const *params,
		   ExecStatusType expect, TimestampTz deadline)
{
	PGresult   *volatile row = NULL;
	PGresult   *volatile last = NULL;

	PG_TRY();
	{
		int			f;

		if (!PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0))
			RemoteConnFailed(conn);
		(void) PQsetSingleRowMode(conn);
		while ((f = PQflush(conn)) != 0)
		{
			if (f < 0)
				RemoteConnFailed(conn);
			if (!WaitConn(conn, WL_SOCKET_WRITEABLE, deadline))
				RemoteTimedOut();
		}
		for (;;)
		{
			PGresult   *res;

			while (PQisBusy(conn))
			{
				if (!WaitConn(conn, WL_SOCKET_READABLE, deadline))
					RemoteTimedOut();
				if (!PQconsumeInput(conn))
					RemoteConnFailed(conn);
			}
			res = PQgetResult(conn);
			if (res == NULL)
				break;
			if (PQresultStatus(res) == PGRES_SINGLE_TUPLE)
			{
				bool		second = row != NULL;

				if (row)
					PQclear(row);
				row = res;
				if (second || expect != PGRES_TUPLES_OK)
					ereport(ERROR,
							(errcode(ERRCODE_PROTOCOL_VIOLATION),
							 errmsg("the remote server answered keysmith's statement with more rows than it can have")));
				continue;
			}
			if (last)
				PQclear(last);
			last = res;
		}
		if (last != NULL && PQresultStatus(last) == PGRES_FATAL_ERROR)
		{
			char		clean[KS_REMOTE_TEXT_MAX + 4];

			KsRemoteCleanText(PQresultErrorField(last, PG_DIAG_MESSAGE_PRIMARY), clean, sizeof(clean));
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("remote server: %s", clean)));
		}
		if (last == NULL || PQresultStatus(last) != expect)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("the remote server answered keysmith's statement with %s, not %s",
							last ? PQresStatus(PQresultStatus(last)) : "nothing", PQresStatus(expect))));
	}
	PG_CATCH();
	{
		if (row)
			PQclear(row);
		if (last)
			PQclear(last);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (row)
	{
		PQclear(last);
		return row;
	}
	return last;
}

const char *
KsPqValue(const PGresult *res, const char *what, size_t *len)
{
	if (PQntuples(res) != 1 || PQnfields(res) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("the remote server answered %d rows of %d columns for %s, not one value",
						PQntuples(res), PQnfields(res), what)));
	if (PQgetisnull(res, 0, 0))
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("the remote server answered NULL for %s", what)));
	if (PQgetlength(res, 0, 0) > KS_REMOTE_VALUE_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("the remote server answered %d bytes for %s, more than keysmith reads (%d)",
						PQgetlength(res, 0, 0), what, KS_REMOTE_VALUE_MAX)));
	*len = (size_t) PQgetlength(res, 0, 0);
	return PQgetvalue(res, 0, 0);
}

void
KsPqAnswerError(const KsError *err)
{
	ereport(ERROR,
			(errcode(err->status == KS_ERR_INVALID_ARGUMENT ? ERRCODE_INVALID_PARAMETER_VALUE
					 : ERRCODE_PROTOCOL_VIOLATION),
			 errmsg("%s", err->message)));
}
