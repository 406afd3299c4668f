/*
 * rotator/role_strategy.c
 *
 * What the role strategies (postgres_role, postgres_role_pair) do to a
 * role, and who may have them do it.  keysmith acts as a superuser here, so
 * every action is first checked against what the secret's owner could do
 * itself: set the role's password (a superuser, or ADMIN OPTION on the
 * role), and never on a superuser unless the owner is one.  The checks run
 * again at every step, since roles and memberships change while a secret
 * lives.
 *
 * A password reaches the role only as a SCRAM verifier computed here
 * (extension/roles.c writes it to pg_authid), never in SQL text.  The test
 * login goes over libpq, and counts only if the server asked for the
 * password: a trust line in pg_hba.conf lets anyone in and proves nothing.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
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

#include "../extension/roles.h"
#include "role_strategy.h"

Oid
KsRoleTargetCheck(Oid actor, const char *rolename)
{
	HeapTuple	tup = SearchSysCache1(AUTHNAME, CStringGetDatum(rolename));
	Form_pg_authid role;
	Oid			roleid;
	bool		super,
				canlogin;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" does not exist", rolename)));
	role = (Form_pg_authid) GETSTRUCT(tup);
	roleid = role->oid;
	super = role->rolsuper;
	canlogin = role->rolcanlogin;
	ReleaseSysCache(tup);

	if (KsIsPredefinedRole(roleid, rolename) || KsIsKeysmithRole(rolename) ||
		roleid == BOOTSTRAP_SUPERUSERID)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("keysmith does not rotate the password of role \"%s\"", rolename),
				 errdetail("Predefined roles, keysmith's own roles and the bootstrap superuser are never a rotation target.")));
	if (super && !superuser_arg(actor))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" is a superuser", rolename),
				 errdetail("Only a secret created by a superuser may rotate a superuser's password.")));
	if (!superuser_arg(actor) && !is_admin_of_role(actor, roleid))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to set the password of role \"%s\"", rolename),
				 errdetail("The secret's owner must be a superuser or hold ADMIN OPTION on the role."),
				 errhint("GRANT \"%s\" TO the owner WITH ADMIN OPTION.", rolename)));
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

/* ------------------------------------------------------------ test login */

/* Copy libpq's message without its trailing newline. */
static void
ConnError(PGconn *conn, const char *what, char *errbuf, size_t errlen)
{
	const char *msg = conn ? PQerrorMessage(conn) : "out of memory";
	size_t		n;

	snprintf(errbuf, errlen, "%s: %s", what, msg);
	n = strlen(errbuf);
	while (n > 0 && (errbuf[n - 1] == '\n' || errbuf[n - 1] == ' '))
		errbuf[--n] = '\0';
}

/*
 * Connect over libpq as user with password, to conninfo (NULL or empty:
 * keysmith.rotation_test_conninfo, whose empty default is loopback TCP to
 * this server).  A password in the connection string is refused.  The
 * wait is on the latch too, so SIGTERM or a cancel ends it, and a deadline
 * (connect_timeout, default 10 s) bounds it; statements on the connection
 * are bounded by the same time.  NULL with the reason in errbuf.
 */
static PGconn *
Connect(const char *conninfo, const char *user, const char *password, char *errbuf, size_t errlen)
{
	char	   *parse_error = NULL;
	PQconninfoOption *opts;
	const char *keys[64];
	const char *vals[64];
	int			n = 0;
	bool		have_dbname = false;
	volatile int timeout_s = 10;
	char		port[16];
	char		options[64];
	PGconn	   *volatile conn;
	TimestampTz deadline;
	volatile bool ok = false;

	if (conninfo == NULL || conninfo[0] == '\0')
		conninfo = keysmith_rotation_test_conninfo;
	if (conninfo == NULL || conninfo[0] == '\0')
	{
		snprintf(port, sizeof(port), "%d", PostPortNumber);
		keys[n] = "host";
		vals[n++] = "127.0.0.1";
		keys[n] = "port";
		vals[n++] = port;
		opts = NULL;
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
			if (strcmp(o->keyword, "password") == 0)
			{
				PQconninfoFree(opts);
				snprintf(errbuf, errlen, "the connection string must not hold a password");
				return NULL;
			}
			if (strcmp(o->keyword, "user") == 0 || strcmp(o->keyword, "passfile") == 0 ||
				strcmp(o->keyword, "options") == 0)
				continue;
			if (strcmp(o->keyword, "dbname") == 0)
				have_dbname = true;
			if (strcmp(o->keyword, "connect_timeout") == 0)
				timeout_s = Max(atoi(o->val), 1);
			keys[n] = o->keyword;
			vals[n++] = o->val;
		}
	}
	if (!have_dbname)
	{
		keys[n] = "dbname";
		vals[n++] = keysmith_database_name;
	}
	snprintf(options, sizeof(options), "-c statement_timeout=%d", timeout_s * 1000);
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

	/* PQconnectPoll ignores connect_timeout: the deadline is kept here */
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_s * 1000);
	PG_TRY();
	{
		PostgresPollingStatusType st = PGRES_POLLING_WRITING;

		while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED)
		{
			int			io = st == PGRES_POLLING_READING ? WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE;
			long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
			int			rc;

			if (left <= 0)
			{
				snprintf(errbuf, errlen, "login timed out after %d s", timeout_s);
				break;
			}
			rc = WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH | io,
								   PQsocket(conn), left, PG_WAIT_EXTENSION);
			if (rc & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				CHECK_FOR_INTERRUPTS();
			}
			if (rc & io)
				st = PQconnectPoll(conn);
		}
		if (st == PGRES_POLLING_FAILED)
			ConnError(conn, "login failed", errbuf, errlen);
		else if (st == PGRES_POLLING_OK)
			ok = true;
	}
	PG_CATCH();
	{
		PQfinish(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (!ok)
	{
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

bool
KsRoleTestLogin(const char *conninfo, const char *rolename, const char *password, char *errbuf, size_t errlen)
{
	PGconn	   *conn = Connect(conninfo, rolename, password, errbuf, errlen);
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

/*
 * Run one statement on conn and wait for its result, interruptibly.  The
 * server bounds it (statement_timeout, set at connect).  ERROR on failure,
 * with the remote's message, after closing conn.
 */
static PGresult *
RemoteExec(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult   *volatile last = NULL;

	PG_TRY();
	{
		if (!PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0))
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("remote server: %s", PQerrorMessage(conn))));
		for (;;)
		{
			PGresult   *res;

			while (PQisBusy(conn))
			{
				int			rc = WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_SOCKET_READABLE | WL_EXIT_ON_PM_DEATH,
												   PQsocket(conn), -1, PG_WAIT_EXTENSION);

				if (rc & WL_LATCH_SET)
				{
					ResetLatch(MyLatch);
					CHECK_FOR_INTERRUPTS();
				}
				if ((rc & WL_SOCKET_READABLE) && !PQconsumeInput(conn))
					ereport(ERROR,
							(errcode(ERRCODE_CONNECTION_FAILURE),
							 errmsg("remote server: %s", PQerrorMessage(conn))));
			}
			res = PQgetResult(conn);
			if (res == NULL)
				break;
			if (last)
				PQclear(last);
			last = res;
		}
		if (last == NULL || (PQresultStatus(last) != PGRES_COMMAND_OK && PQresultStatus(last) != PGRES_TUPLES_OK))
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_EXCEPTION),
					 errmsg("remote server: %s", last ? PQresultErrorField(last, PG_DIAG_MESSAGE_PRIMARY) : PQerrorMessage(conn))));
	}
	PG_CATCH();
	{
		if (last)
			PQclear(last);
		PQfinish(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return last;
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
		static const char *const files[] = {"sslcert", "sslkey", "sslrootcert", "sslcrl", "sslcrldir",
		"passfile", "service"};

		if (o->val == NULL || o->val[0] == '\0')
			continue;
		if (strcmp(o->keyword, "password") == 0)
		{
			PQconninfoFree(opts);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("option conninfo must not hold a password"),
					 errhint("The remote's admin login is the keysmith secret named by admin_secret.")));
		}
		/* the server would read its own files on a non-superuser's behalf */
		for (int i = 0; i < (int) lengthof(files); i++)
			if (strcmp(o->keyword, files[i]) == 0 && !superuser_arg(owner))
			{
				PQconninfoFree(opts);
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("only a superuser's secret may name %s in its conninfo", files[i]),
						 errdetail("The server would read that file with its own rights.")));
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

void
KsRemoteSetPassword(const KsSecret *s, Oid owner, const char *password)
{
	char		user[KS_ROLE_NAME_MAX];
	char		admin_pw[KS_CREDENTIAL_PASSWORD_MAX + 1];
	char		errbuf[512];
	PGconn	   *conn;
	PGresult   *res;
	const char *params[1] = {s->opt.role};
	int			iterations = SCRAM_DEFAULT_ITERATIONS;
	char		salt[SCRAM_DEFAULT_SALT_LEN];
	const char *errstr = NULL;
	char	   *verifier;
	bool		super;

	/* already set?  A login with the new password says so */
	if (KsRoleTestLogin(s->opt.conninfo, s->opt.role, password, errbuf, sizeof(errbuf)))
		return;

	RemoteAdminLogin(s, owner, user, admin_pw);
	conn = Connect(s->opt.conninfo, user, admin_pw, errbuf, sizeof(errbuf));
	explicit_bzero(admin_pw, sizeof(admin_pw));
	if (conn == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not reach the remote server as its admin: %s", errbuf)));
	/*
	 * The admin login must have been proven by its password: a trust or
	 * peer line (this very server over its socket, say) would otherwise
	 * hand the server's own rights to whoever wrote the secret.
	 */
	if (!PQconnectionUsedPassword(conn))
	{
		PQfinish(conn);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("the admin login to the remote server did not use its password"),
				 errdetail("A trust or peer line in the remote's pg_hba.conf let it in; keysmith acts only through a login that proved its password.")));
	}
	res = RemoteExec(conn, "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) $1", 1, params);
	if (PQntuples(res) != 1)
	{
		PQclear(res);
		PQfinish(conn);
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" does not exist on the remote server", s->opt.role)));
	}
	super = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (super && !superuser_arg(owner))
	{
		PQfinish(conn);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" is a superuser on the remote server", s->opt.role),
				 errdetail("Only a secret created by a superuser may rotate a superuser's password.")));
	}
	/* the remote's own iteration count, where it has one (PostgreSQL 16+) */
	if (PQserverVersion(conn) >= 160000)
	{
		res = RemoteExec(conn, "SELECT pg_catalog.current_setting('scram_iterations')", 0, NULL);
		iterations = Max(atoi(PQgetvalue(res, 0, 0)), 1);
		PQclear(res);
	}
	if (!pg_strong_random(salt, sizeof(salt)))
	{
		PQfinish(conn);
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not generate a random salt")));
	}
	verifier = scram_build_secret(salt, sizeof(salt), iterations, password, &errstr);
	if (verifier == NULL)
	{
		PQfinish(conn);
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not build a SCRAM verifier: %s", errstr)));
	}
	/* the verifier, never the password, crosses the wire */
	res = RemoteExec(conn, psprintf("ALTER ROLE %s PASSWORD %s", quote_identifier(s->opt.role),
									quote_literal_cstr(verifier)), 0, NULL);
	PQclear(res);
	PQfinish(conn);
}
