/*
 * rotator/strategy_remote.c
 *
 * postgres_remote: a login role on another PostgreSQL server, whose
 * password keysmith sets through an admin login kept in another keysmith
 * secret (admin_secret).  The host is the owner's choice, so every
 * connection to it from the rotation worker is made in an owner job, a
 * process whose session user is the secret's owner (rotator/owner_job.h),
 * never in the superuser worker; from the SQL functions, in the caller's
 * own backend.  The connections themselves, their deadlines and the
 * checks of every answer are rotator/pq_conn.c's.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "libpq/scram.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "common/scram-common.h"

#include "extension/common/guc.h"
#include "extension/common/owner_spi.h"
#include "kms/pgremote.h"
#include "rotator/job.h"
#include "rotator/owner_job.h"
#include "rotator/pq_conn.h"
#include "rotator/rotation_job.h"
#include "rotator/strategy.h"

/*
 * ERROR unless the secret's conninfo parses, holds no password and (for a
 * non-superuser owner) names no file, and its admin secret exists and
 * owner may read it; that secret in *admin_out if not NULL.
 */
static void
RemoteCheck(const KsSecret *s, Oid owner, KsSecret *admin_out)
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
		switch (KsPqClassifyKeyword(o->keyword, o->val))
		{
			case KS_KW_PASSWORD:
				PQconninfoFree(opts);
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("option conninfo must not hold a password"),
						 errhint("The remote's admin login is the keysmith secret named by admin_secret.")));
				break;
			case KS_KW_REFUSED:
				PQconninfoFree(opts);
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("option conninfo must not set %s", keyword),
						 errdetail("keysmith's logins prove a password: they never use GSSAPI, which would present this server's own Kerberos identity, nor replication connections.")));
				break;
			case KS_KW_FILE:
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
			case KS_KW_KEYSMITH:
			case KS_KW_PASS:
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

	RemoteCheck(s, owner, &admin);
	if (!KsSecretFindVersion(admin.name, KS_STAGE_CURRENT, version, &ct, NULL))
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
 * Everything RemoteSetPassword does on the admin connection: whatever
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
		KsPqAnswerError(&err);

	*res = KsPqExec(conn, "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) $1",
					  1, params, PGRES_TUPLES_OK, deadline);
	if (PQntuples(*res) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" does not exist on the remote server", s->opt.role)));
	v = KsPqValue(*res, "rolsuper", &len);
	if (KsRemoteParseBool(v, len, &super, &err) != KS_OK)
		KsPqAnswerError(&err);
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
		*res = KsPqExec(conn, "SELECT pg_catalog.current_setting('scram_iterations')", 0, NULL,
						  PGRES_TUPLES_OK, deadline);
		v = KsPqValue(*res, "scram_iterations", &len);
		if (KsRemoteParseIterations(v, len, &iterations, &err) != KS_OK)
			KsPqAnswerError(&err);
		PQclear(*res);
		*res = NULL;
	}
	if (!pg_strong_random(salt, sizeof(salt)))
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not generate a random salt")));
	verifier = scram_build_secret(salt, sizeof(salt), iterations, password, &errstr);
	if (verifier == NULL)
		ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("could not build a SCRAM verifier: %s", errstr)));
	/* the verifier, never the password, crosses the wire */
	*res = KsPqExec(conn, psprintf("ALTER ROLE %s PASSWORD %s", quote_identifier(s->opt.role),
									 quote_literal_cstr(verifier)), 0, NULL, PGRES_COMMAND_OK, deadline);
}

/*
 * Give the remote role password, as a SCRAM verifier computed here with
 * the remote's iteration count (4096 to 1,000,000), through the admin
 * login (opened as owner), unless a login with password already works.
 * Refuses a remote superuser unless owner is a superuser.  Everything the
 * remote answers is checked; all of it ends by
 * keysmith.rotation_step_timeout from the call.  Decides by owner alone,
 * in any backend.
 */
static void
RemoteSetPassword(const KsSecret *s, Oid owner, const char *password)
{
	char		user[KS_ROLE_NAME_MAX];
	char		admin_pw[KS_CREDENTIAL_PASSWORD_MAX + 1];
	char		errbuf[512];
	TimestampTz deadline = KsPqStepDeadline();
	PGconn	   *volatile conn;
	PGresult   *volatile res = NULL;

	/* already set?  A login with the new password says so */
	if (KsPqTestLogin(s->opt.conninfo, false, s->opt.role, password, deadline, errbuf, sizeof(errbuf)))
		return;

	RemoteAdminLogin(s, owner, user, admin_pw);
	conn = KsPqConnect(s->opt.conninfo, false, user, admin_pw, deadline, errbuf, sizeof(errbuf));
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
 * values: the step (KsRotationStateNames: set or test), the secret's
 * name, the password.  set installs the password (RemoteSetPassword);
 * test logs in with it and returns why that failed, or NULL.
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
	if (strcmp(values[0], KsRotationStateNames[KS_ROT_SET]) == 0)
		RemoteSetPassword(&s, owner, values[2]);
	else if (strcmp(values[0], KsRotationStateNames[KS_ROT_TEST]) == 0)
	{
		if (!KsRoleTestLogin(s.opt.conninfo, s.opt.role, values[2], errbuf, sizeof(errbuf)))
			result = pstrdup(errbuf);
	}
	else
		elog(ERROR, "keysmith: unknown remote job \"%s\"", values[0]);
	KsOwnerSpiEnd(&spi);
	return result;
}

/*
 * From the rotation worker: run step op (KS_ROT_SET: install password on
 * the remote; KS_ROT_TEST: log in with it) in an owner job, a process
 * whose session user is the secret's owner.  The test returns why the
 * login failed, or NULL; errors propagate.
 */
static char *
RemoteInOwnerJob(const KsSecret *s, KsRotationState op, const char *password)
{
	KsOwnerJob	job = {0};

	job.role = s->owner;
	job.what = psprintf("the remote %s of secret \"%s\"", op == KS_ROT_TEST ? "test login" : "password change",
						s->name);
	job.entry = "KsRemoteJob";
	job.nargs = 3;
	for (int i = 0; i < 3; i++)
		job.types[i] = TEXTOID;
	job.values[0] = KsRotationStateNames[op];
	job.values[1] = s->name;
	job.values[2] = password;
	return KsOwnerJobRun(&job);
}

/* ------------------------------------------------------------ the table */

static void
Check(const KsSecret *s, Oid actor)
{
	RemoteCheck(s, actor, NULL);
}

static bool
IsTarget(const KsSecretOptions *opt, const char *username)
{
	return strcmp(opt->role, username) == 0;
}

static void
Install(const KsSecret *s, Oid actor, const char *username, const char *password)
{
	RemoteSetPassword(s, actor, password);
}

static const char *
InstallInitial(const KsSecret *s, Oid actor, const char *password)
{
	RemoteSetPassword(s, actor, password);
	return s->opt.role;
}

/* The remote's role; its verifier is built at set, with the remote's iteration count. */
static void
ChooseTarget(KsRotationJob *job, char *target)
{
	strlcpy(target, job->secret.opt.role, NAMEDATALEN);
	RemoteCheck(&job->secret, job->secret.owner, NULL);
}

/* set: the pending password, installed on the remote from an owner job. */
static const char *
Set(KsRotationJob *job)
{
	char		password[KS_CREDENTIAL_PASSWORD_MAX + 1];

	KsRotationOpenPendingPassword(job, password);
	PG_TRY();
	{
		(void) RemoteInOwnerJob(&job->secret, KS_ROT_SET, password);
	}
	PG_FINALLY();
	{
		explicit_bzero(password, sizeof(password));
	}
	PG_END_TRY();
	return "on the remote server";
}

typedef struct LoginArgs
{
	KsRotationJob *job;
	MemoryContext cxt;			/* where why goes: it outlives the transaction */
	char	   *why;
} LoginArgs;

static void
LoginItem(void *arg)
{
	LoginArgs  *a = arg;
	char	   *why = RemoteInOwnerJob(&a->job->secret, KS_ROT_TEST, a->job->password);

	if (why)
		a->why = MemoryContextStrdup(a->cxt, why);
}

/* The test login: from an owner job, in a short transaction of its own. */
static char *
Login(KsRotationJob *job)
{
	LoginArgs	a = {job, CurrentMemoryContext, NULL};
	char	   *message = NULL;

	KsJobBegin("keysmith rotation: remote test login", keysmith_rotation_lock_timeout);
	if (!KsJobTry(LoginItem, &a, &message))
		a.why = MemoryContextStrdup(a.cxt, message);
	KsJobEnd();
	return a.why;
}

static void
Restore(KsRotationJob *job, const char *password)
{
	(void) RemoteInOwnerJob(&job->secret, KS_ROT_SET, password);
}

const KsRotationStrategy KsStrategyPostgresRemote = {
	.strategy = KS_STRATEGY_REMOTE,
	.credential = true,
	.owner_jobs = true,
	.check = Check,
	.check_reads_store = true,
	.is_target = IsTarget,
	.install = Install,
	.install_initial = InstallInitial,
	.choose_target = ChooseTarget,
	.set = Set,
	.login = Login,
	.test = KsRotationLoginTested,
	.restore = Restore,
};
