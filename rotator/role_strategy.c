/*
 * rotator/role_strategy.c
 *
 * What the role strategies (postgres_role, postgres_role_pair,
 * postgres_remote) do to a role, and who may have them do it.  keysmith
 * acts with more rights than the secret's owner here (a superuser worker,
 * or any backend on the owner's behalf), so every action is first checked
 * against the owner alone, never against the process: the one rule of
 * RequirePasswordDelegation, again at every step, since roles and
 * memberships change while a secret lives.
 *
 * A password reaches the role only as a SCRAM verifier computed here
 * (extension/roles.c writes it to pg_authid), never in SQL text.  The test
 * login goes over libpq, counts only if the server asked for the password
 * (a trust line in pg_hba.conf lets anyone in and proves nothing), and on
 * this cluster sends the password only to a process of this server's own
 * OS user.  All libpq connections live here (Connect, RemoteExec): each
 * wait ends at a deadline keysmith sets, and everything a remote answers
 * is judged by kms/pgremote.c before use.
 */
#include "postgres.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "libpq/scram.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/postmaster.h"
#include "storage/latch.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "common/scram-common.h"
#include "libpq-fe.h"

#include "../extension/owner_spi.h"
#include "../extension/roles.h"
#include "owner_job.h"
#include "pgremote.h"
#include "role_strategy.h"

/*
 * The one rule for who may have keysmith set a role's password: ERROR
 * unless actor may.  keysmith must never hand a role a credential that
 * PostgreSQL's own rules and role membership would not already let it use
 * (docs/security.md, "Role targets", gives the reasoning per attribute):
 *
 * - a superuser may target any role (but those KsRoleTargetCheck excludes);
 * - a superuser target needs a superuser actor: membership never confers
 *   superuser;
 * - otherwise actor needs ADMIN OPTION on the role, with which it can
 *   grant itself the role and SET ROLE to it: CREATEROLE, CREATEDB and
 *   BYPASSRLS are then its own already, since PostgreSQL checks them on the
 *   current user;
 * - REPLICATION counts only at login (a walsender checks the session
 *   user), never through SET ROLE: it needs a superuser actor, or, from
 *   PostgreSQL 16 on, where ALTER ROLE ... PASSWORD allows exactly that,
 *   an actor with CREATEROLE as well as ADMIN OPTION.
 */
static void
RequirePasswordDelegation(Oid actor, Form_pg_authid role)
{
	const char *rolename = NameStr(role->rolname);

	if (superuser_arg(actor))
		return;
	if (role->rolsuper)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" is a superuser", rolename),
				 errdetail("Only a secret created by a superuser may rotate a superuser's password.")));
	if (!is_admin_of_role(actor, role->oid))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to set the password of role \"%s\"", rolename),
				 errdetail("The secret's owner must be a superuser or hold ADMIN OPTION on the role."),
				 errhint("GRANT \"%s\" TO the owner WITH ADMIN OPTION.", rolename)));
#if PG_VERSION_NUM >= 160000
	if (role->rolreplication && !has_createrole_privilege(actor))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" has the REPLICATION attribute", rolename),
				 errdetail("REPLICATION counts only at login and is never conferred by membership: only a secret created by a superuser, or by a role with CREATEROLE and ADMIN OPTION on it, may rotate its password.")));
#else
	if (role->rolreplication)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" has the REPLICATION attribute", rolename),
				 errdetail("REPLICATION counts only at login and is never conferred by membership: only a secret created by a superuser may rotate its password.")));
#endif
}

Oid
KsRoleTargetCheck(Oid actor, const char *rolename)
{
	HeapTuple	tup = SearchSysCache1(AUTHNAME, CStringGetDatum(rolename));
	Form_pg_authid role;
	Oid			roleid;
	bool		canlogin;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" does not exist", rolename)));
	role = (Form_pg_authid) GETSTRUCT(tup);
	roleid = role->oid;
	canlogin = role->rolcanlogin;

	if (KsIsPredefinedRole(roleid, rolename) || KsIsKeysmithRole(rolename) ||
		roleid == BOOTSTRAP_SUPERUSERID)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("keysmith does not rotate the password of role \"%s\"", rolename),
				 errdetail("Predefined roles, keysmith's own roles and the bootstrap superuser are never a rotation target.")));
	RequirePasswordDelegation(actor, role);
	ReleaseSysCache(tup);
	if (!canlogin)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("role \"%s\" cannot log in", rolename),
				 errdetail("A rotated credential must be proven by a login."),
				 errhint("ALTER ROLE \"%s\" LOGIN.", rolename)));
	return roleid;
}

void
KsRolePairCheck(Oid actor, const KsSecretOptions *opt)
{
	HeapTuple	tup;
	Oid			owner;
	bool		canlogin;

	for (int i = 0; i < 2; i++)
		(void) KsRoleTargetCheck(actor, opt->roles[i]);
	tup = SearchSysCache1(AUTHNAME, CStringGetDatum(opt->owner_role));
	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" does not exist", opt->owner_role)));
	owner = ((Form_pg_authid) GETSTRUCT(tup))->oid;
	canlogin = ((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin;
	ReleaseSysCache(tup);
	if (canlogin)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("owner_role \"%s\" must be NOLOGIN", opt->owner_role),
				 errdetail("The owner role holds the objects both roles of the pair use; nobody logs in as it.")));
	for (int i = 0; i < 2; i++)
	{
		Oid			r = get_role_oid(opt->roles[i], false);

		if (!is_member_of_role_nosuper(r, owner))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("role \"%s\" is not a member of owner_role \"%s\"", opt->roles[i], opt->owner_role),
					 errdetail("Both roles of a pair must be members of one NOLOGIN owner role, so that objects keep one owner whichever role is current."),
					 errhint("GRANT \"%s\" TO \"%s\".", opt->owner_role, opt->roles[i])));
	}
}

bool
KsRoleIsTarget(const KsSecretOptions *opt, const char *rolename)
{
	switch (opt->strategy)
	{
		case KS_STRATEGY_ROLE:
		case KS_STRATEGY_REMOTE:
			return strcmp(opt->role, rolename) == 0;
		case KS_STRATEGY_ROLE_PAIR:
			return strcmp(opt->roles[0], rolename) == 0 || strcmp(opt->roles[1], rolename) == 0;
		default:
			return false;
	}
}

char *
KsRoleInstallPassword(Oid actor, const char *rolename, const char *password)
{
	Oid			roleid = KsRoleTargetCheck(actor, rolename);
	char	   *verifier = pg_be_scram_build_secret(password);

	KsSetRoleVerifier(roleid, rolename, verifier, DT_NOBEGIN);
	return verifier;
}

/* ------------------------------------------------------------ connections */

/*
 * Every libpq connection keysmith makes (the test login to this cluster, a
 * remote's test and admin logins) goes through Connect, and every statement
 * on it through RemoteExec: one place for the rules below.
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

/* sslcert where the conninfo names none: a path that cannot exist (ENOTDIR) */
#define NO_CLIENT_CERT "/dev/null/keysmith-names-no-client-certificate"
/* krbsrvname: no realm has this service, so GSS authentication fails at once */
#define NO_GSS_SERVICE "keysmith-never-uses-gssapi"

typedef enum ConninfoKeyword
{
	KW_PASS,					/* handed to libpq as it is */
	KW_KEYSMITH,				/* keysmith sets its own: dropped */
	KW_PASSWORD,				/* a secret in the connection string: refused */
	KW_FILE,					/* names a file the server would read */
	KW_REFUSED					/* GSSAPI or replication: never used */
} ConninfoKeyword;

static ConninfoKeyword
ClassifyKeyword(const char *keyword, const char *value)
{
	static const char *const files[] = {"sslcert", "sslkey", "sslrootcert", "sslcrl", "sslcrldir",
	"passfile", "service"};
	static const char *const ours[] = {"user", "options", "application_name", "fallback_application_name"};

	if (strcmp(keyword, "password") == 0 || strcmp(keyword, "sslpassword") == 0)
		return KW_PASSWORD;
	if (strcmp(keyword, "replication") == 0 || strcmp(keyword, "krbsrvname") == 0 ||
		strcmp(keyword, "gsslib") == 0 ||
		(strcmp(keyword, "gssencmode") == 0 && strcmp(value, "require") == 0))
		return KW_REFUSED;
	if (strcmp(keyword, "gssencmode") == 0)
		return KW_KEYSMITH;		/* disable or prefer: keysmith disables it */
	for (int i = 0; i < (int) lengthof(ours); i++)
		if (strcmp(keyword, ours[i]) == 0)
			return KW_KEYSMITH;
	for (int i = 0; i < (int) lengthof(files); i++)
		if (strcmp(keyword, files[i]) == 0)
			return KW_FILE;
	return KW_PASS;
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

/* The deadline of a step's work on one host: keysmith.rotation_step_timeout from now. */
static TimestampTz
StepDeadline(void)
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

/*
 * Connect over libpq as user with password.  this_cluster: to this server,
 * by keysmith.rotation_test_conninfo, whose empty default is loopback TCP
 * to this server's port, and only to a peer of this server's OS user;
 * otherwise to conninfo, a postgres_remote secret's.  A password, GSSAPI
 * or replication in the connection string is refused.  Waits end at
 * deadline, or at the conninfo's connect_timeout if that is sooner.  NULL
 * with the reason in errbuf on failure.
 */
static PGconn *
Connect(const char *conninfo, bool this_cluster, const char *user, const char *password,
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
			switch (ClassifyKeyword(o->keyword, o->val))
			{
				case KW_PASSWORD:
					PQconninfoFree(opts);
					snprintf(errbuf, errlen, "the connection string must not hold a password");
					return NULL;
				case KW_REFUSED:
					snprintf(errbuf, errlen, "the connection string must not set %s: keysmith never uses GSSAPI or replication connections",
							 o->keyword);
					PQconninfoFree(opts);
					return NULL;
				case KW_KEYSMITH:
					continue;
				case KW_FILE:
					if (strcmp(o->keyword, "passfile") == 0 || strcmp(o->keyword, "service") == 0)
						continue;	/* keysmith always gives the password */
					if (strcmp(o->keyword, "sslcert") == 0)
						have_sslcert = true;
					break;
				case KW_PASS:
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

/*
 * A login as rolename with password that must use the password: false
 * with the reason in errbuf otherwise.  this_cluster and conninfo as for
 * Connect.
 */
static bool
TestLogin(const char *conninfo, bool this_cluster, const char *rolename, const char *password,
		  TimestampTz deadline, char *errbuf, size_t errlen)
{
	PGconn	   *conn = Connect(conninfo, this_cluster, rolename, password, deadline, errbuf, errlen);
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

	return TestLogin(conninfo, this_cluster, rolename, password, StepDeadline(), errbuf, errlen);
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

/*
 * Run one statement on conn (nonblocking, from Connect) and wait for its
 * result, interruptibly, until deadline.  Rows come one at a time, so an
 * answer of more than one row is refused at its second.  The result must
 * have status expect: for PGRES_TUPLES_OK, the one row (or the empty
 * result).  ERROR otherwise; the caller closes conn.
 */
static PGresult *
RemoteExec(PGconn *conn, const char *sql, int nparams, const char *const *params,
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

/*
 * The one value of a one-row, one-column answer to the query for what:
 * not NULL and at most KS_REMOTE_VALUE_MAX bytes; its length in *len.
 */
static const char *
RemoteValue(const PGresult *res, const char *what, size_t *len)
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

/* ERROR for a kms/pgremote.c verdict on what the remote answered. */
static void
RemoteAnswerError(const KsError *err)
{
	ereport(ERROR,
			(errcode(err->status == KS_ERR_INVALID_ARGUMENT ? ERRCODE_INVALID_PARAMETER_VALUE
					 : ERRCODE_PROTOCOL_VIOLATION),
			 errmsg("%s", err->message)));
}

/* ------------------------------------------------------------ remote */

void
KsRemoteCheck(const KsSecret *s, Oid owner, KsSecret *admin_out)
{
	PQconninfoOption *opts;
	char	   *parse_error = NULL;
	KsSecret	local;
	KsSecret   *admin = admin_out ? admin_out : &local;

	opts = PQconninfoParse(s->opt.conninfo, &parse_error);
	if (opts == NULL)
	{
		if (parse_error)
			PQfreemem(parse_error);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option conninfo of secret \"%s\" is not a valid connection string", s->name)));
	}
	for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
	{
		char		keyword[32];

		if (o->val == NULL || o->val[0] == '\0')
			continue;
		strlcpy(keyword, o->keyword, sizeof(keyword));
		switch (ClassifyKeyword(o->keyword, o->val))
		{
			case KW_PASSWORD:
				PQconninfoFree(opts);
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("option conninfo must not hold a password"),
						 errhint("The remote's admin login is the keysmith secret named by admin_secret.")));
				break;
			case KW_REFUSED:
				PQconninfoFree(opts);
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("option conninfo must not set %s", keyword),
						 errdetail("keysmith's logins prove a password: they never use GSSAPI, which would present this server's own Kerberos identity, nor replication connections.")));
				break;
			case KW_FILE:
				/* the server would read its own files on a non-superuser's behalf */
				if (!superuser_arg(owner))
				{
					PQconninfoFree(opts);
					ereport(ERROR,
							(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
							 errmsg("only a superuser's secret may name %s in its conninfo", keyword),
							 errdetail("The server would read that file with its own rights.")));
				}
				break;
			case KW_KEYSMITH:
			case KW_PASS:
				break;
		}
	}
	PQconninfoFree(opts);
	if (!KsSecretLoad(s->opt.admin_secret, admin, false))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("admin secret \"%s\" does not exist", s->opt.admin_secret)));
	if (!KsSecretHasPrivilege(admin->name, KS_SECRET_READ, owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for admin secret \"%s\"", admin->name),
				 errdetail("The owner of a postgres_remote secret needs the read privilege on its admin secret.")));
}

/* The admin login of the remote, opened as owner; password wiped by the caller. */
static void
RemoteAdminLogin(const KsSecret *s, Oid owner, char *user, char *password)
{
	KsSecret	admin;
	char		version[KS_UUID_LEN];
	bytea	   *ct;
	char	   *value;
	KsError		err;
	KsStatus	st;

	KsRemoteCheck(s, owner, &admin);
	if (!KsSecretFindVersion(admin.name, "current", version, &ct, NULL))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("admin secret \"%s\" has no current version", admin.name)));
	value = KsSecretOpen(owner, &admin, version, ct);
	st = KsCredentialParse(value, strlen(value), user, password, &err);
	explicit_bzero(value, strlen(value));
	pfree(value);
	if (st != KS_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("admin secret \"%s\" does not hold a login: %s", admin.name, err.message)));
}

/*
 * Everything KsRemoteSetPassword does on the admin connection: whatever
 * the remote answers is checked for shape and range before use.
 */
static void
RemoteInstall(const KsSecret *s, Oid owner, PGconn *conn, const char *password, TimestampTz deadline,
			  PGresult *volatile *res)
{
	const char *params[1] = {s->opt.role};
	const char *v;
	size_t		len;
	int			version;
	int			iterations = SCRAM_DEFAULT_ITERATIONS;
	int			super;
	char		salt[SCRAM_DEFAULT_SALT_LEN];
	const char *errstr = NULL;
	char	   *verifier;
	KsError		err;

	/*
	 * The admin login must have been proven by its password: a trust or
	 * peer line (this very server over its socket, say) would otherwise
	 * hand the server's own rights to whoever wrote the secret.
	 */
	if (!PQconnectionUsedPassword(conn))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("the admin login to the remote server did not use its password"),
				 errdetail("A trust or peer line in the remote's pg_hba.conf let it in; keysmith acts only through a login that proved its password.")));
	v = PQparameterStatus(conn, "server_version");
	if (KsRemoteParseVersion(v, v ? strnlen(v, KS_REMOTE_VALUE_MAX + 1) : 0, &version, &err) != KS_OK)
		RemoteAnswerError(&err);

	*res = RemoteExec(conn, "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) $1",
					  1, params, PGRES_TUPLES_OK, deadline);
	if (PQntuples(*res) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" does not exist on the remote server", s->opt.role)));
	v = RemoteValue(*res, "rolsuper", &len);
	if (KsRemoteParseBool(v, len, &super, &err) != KS_OK)
		RemoteAnswerError(&err);
	PQclear(*res);
	*res = NULL;
	if (super && !superuser_arg(owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" is a superuser on the remote server", s->opt.role),
				 errdetail("Only a secret created by a superuser may rotate a superuser's password.")));

	/* the remote's own iteration count, where it has one (PostgreSQL 16+) */
	if (version >= 160000)
	{
		*res = RemoteExec(conn, "SELECT pg_catalog.current_setting('scram_iterations')", 0, NULL,
						  PGRES_TUPLES_OK, deadline);
		v = RemoteValue(*res, "scram_iterations", &len);
		if (KsRemoteParseIterations(v, len, &iterations, &err) != KS_OK)
			RemoteAnswerError(&err);
		PQclear(*res);
		*res = NULL;
	}
	if (!pg_strong_random(salt, sizeof(salt)))
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not generate a random salt")));
	verifier = scram_build_secret(salt, sizeof(salt), iterations, password, &errstr);
	if (verifier == NULL)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not build a SCRAM verifier: %s", errstr)));
	/* the verifier, never the password, crosses the wire */
	*res = RemoteExec(conn, psprintf("ALTER ROLE %s PASSWORD %s", quote_identifier(s->opt.role),
									 quote_literal_cstr(verifier)), 0, NULL, PGRES_COMMAND_OK, deadline);
}

void
KsRemoteSetPassword(const KsSecret *s, Oid owner, const char *password)
{
	char		user[KS_ROLE_NAME_MAX];
	char		admin_pw[KS_CREDENTIAL_PASSWORD_MAX + 1];
	char		errbuf[512];
	TimestampTz deadline = StepDeadline();
	PGconn	   *volatile conn;
	PGresult   *volatile res = NULL;

	/* already set?  A login with the new password says so */
	if (TestLogin(s->opt.conninfo, false, s->opt.role, password, deadline, errbuf, sizeof(errbuf)))
		return;

	RemoteAdminLogin(s, owner, user, admin_pw);
	conn = Connect(s->opt.conninfo, false, user, admin_pw, deadline, errbuf, sizeof(errbuf));
	explicit_bzero(admin_pw, sizeof(admin_pw));
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not reach the remote server as its admin: %s", errbuf)));
	PG_TRY();
	{
		RemoteInstall(s, owner, conn, password, deadline, &res);
	}
	PG_FINALLY();
	{
		if (res)
			PQclear(res);
		PQfinish(conn);
	}
	PG_END_TRY();
}

/* ------------------------------------------------------------ owner jobs */

PGDLLEXPORT char *KsRemoteJob(int nargs, char **values);

/*
 * An owner job (rotator/owner_job.c) for a postgres_remote secret: the
 * connection to the host the owner chose is made in a process whose
 * session user is the owner, never in the superuser rotation worker.
 * values: the operation ("set" or "test"), the secret's name, the
 * password.  "set" installs the password (KsRemoteSetPassword); "test"
 * logs in with it and returns why that failed, or NULL.
 */
char *
KsRemoteJob(int nargs, char **values)
{
	Oid			owner = GetSessionUserId();
	KsOwnerSpi	spi;
	KsSecret	s;
	char		errbuf[512];
	char	   *result = NULL;

	if (nargs != 3 || values[0] == NULL || values[1] == NULL || values[2] == NULL)
		elog(ERROR, "keysmith: a remote job takes an operation, a secret and a password");
	KsOwnerSpiBegin(&spi);
	if (!KsSecretLoad(values[1], &s, false) || s.owner != owner || s.opt.strategy != KS_STRATEGY_REMOTE)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("secret \"%s\" is not a postgres_remote secret of this job's role", values[1])));
	if (strcmp(values[0], "set") == 0)
		KsRemoteSetPassword(&s, owner, values[2]);
	else if (strcmp(values[0], "test") == 0)
	{
		if (!KsRoleTestLogin(s.opt.conninfo, s.opt.role, values[2], errbuf, sizeof(errbuf)))
			result = pstrdup(errbuf);
	}
	else
		elog(ERROR, "keysmith: unknown remote job \"%s\"", values[0]);
	KsOwnerSpiEnd(&spi);
	return result;
}

char *
KsRemoteInOwnerJob(const KsSecret *s, const char *op, const char *password)
{
	KsOwnerJob	job = {0};

	job.role = s->owner;
	job.what = psprintf("the remote %s of secret \"%s\"", strcmp(op, "test") == 0 ? "test login" : "password change",
						s->name);
	job.entry = "KsRemoteJob";
	job.nargs = 3;
	for (int i = 0; i < 3; i++)
		job.types[i] = TEXTOID;
	job.values[0] = op;
	job.values[1] = s->name;
	job.values[2] = password;
	return KsOwnerJobRun(&job);
}
