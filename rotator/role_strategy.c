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

bool
KsRoleTestLogin(const char *rolename, const char *password, char *errbuf, size_t errlen)
{
	const char *conninfo = keysmith_rotation_test_conninfo;
	char	   *parse_error = NULL;
	PQconninfoOption *opts;
	const char *keys[64];
	const char *vals[64];
	int			n = 0;
	bool		have_dbname = false;
	volatile int timeout_s = 10;
	char		port[16];
	PGconn	   *volatile conn;
	TimestampTz deadline;
	volatile bool ok = false;

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
			snprintf(errbuf, errlen, "keysmith.rotation_test_conninfo is not a valid connection string");
			if (parse_error)
				PQfreemem(parse_error);
			return false;
		}
		for (PQconninfoOption *o = opts; o->keyword != NULL && n < 50; o++)
		{
			if (o->val == NULL || o->val[0] == '\0')
				continue;
			if (strcmp(o->keyword, "password") == 0)
			{
				PQconninfoFree(opts);
				snprintf(errbuf, errlen, "keysmith.rotation_test_conninfo must not hold a password");
				return false;
			}
			if (strcmp(o->keyword, "user") == 0 || strcmp(o->keyword, "passfile") == 0)
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
	keys[n] = "user";
	vals[n++] = rolename;
	keys[n] = "password";
	vals[n++] = password;
	keys[n] = "application_name";
	vals[n++] = "keysmith rotation test";
	keys[n] = NULL;
	vals[n] = NULL;

	conn = PQconnectStartParams(keys, vals, false);
	if (opts)
		PQconninfoFree(opts);
	if (conn == NULL || PQstatus(conn) == CONNECTION_BAD)
	{
		ConnError(conn, "test login failed", errbuf, errlen);
		if (conn)
			PQfinish(conn);
		return false;
	}

	/*
	 * PQconnectPoll ignores connect_timeout: the deadline is kept here, and
	 * the wait is on the latch too, so that SIGTERM or a cancel ends it.
	 */
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
				snprintf(errbuf, errlen, "test login timed out after %d s", timeout_s);
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
			ConnError(conn, "test login failed", errbuf, errlen);
		else if (st == PGRES_POLLING_OK)
		{
			if (!PQconnectionUsedPassword(conn))
				snprintf(errbuf, errlen,
						 "test login as \"%s\" succeeded without using the password (a trust or peer line in pg_hba.conf?), so it proves nothing",
						 rolename);
			else
				ok = true;
		}
	}
	PG_CATCH();
	{
		PQfinish(conn);
		PG_RE_THROW();
	}
	PG_END_TRY();
	PQfinish(conn);
	return ok;
}
