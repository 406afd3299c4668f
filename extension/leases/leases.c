/*
 * extension/leases/leases.c
 *
 * Leased dynamic roles, the SQL entry points: create_role_template and
 * drop_role_template, issue_role, renew_lease and revoke_lease; and the
 * check of what a leased role may act as (CheckLeaseMembership), made when
 * a template is created and again at every issue.  They work only on the
 * primary, in the database whose keysmith tables the reaper uses
 * (keysmith.database_name, the tables trusted by OID: RequireLeaseCatalog).
 * Revocation is the lease state machine of rotator/lease_revoke.c, which
 * the reaper (rotator/reaper.c) drives for expired leases and revoke_lease
 * runs in the caller's transaction.  Leased roles carry the "keysmith"
 * security label, which the authentication hook (auth.c) checks.
 *
 * The SQL-callable functions are SECURITY DEFINER and run as the extension
 * owner, a superuser; the requester is GetOuterUserId(), the role the
 * caller's SQL runs as (SET ROLE counts, SECURITY DEFINER wrappers do not).
 * That holds only where no code of another role runs with the caller's
 * outer user: inside a security-restricted operation (a materialized
 * view's or an index expression's owner code, keysmith's own as-role
 * sections) the outer user is whoever started the operation, so the lease
 * functions refuse there (LeaseCaller).  keysmith's workers never run a
 * role's code in their own process (rotator/owner_job.c).
 *
 * The plaintext password exists only in this backend's memory and in the
 * result row.  The role is created by a CREATE ROLE without a password, and
 * then given a SCRAM-SHA-256 verifier computed here, written to pg_authid
 * in the same transaction (KsSetRoleVerifier, roles.c), so no SQL text
 * anywhere (log_statement, pg_stat_activity, pg_stat_statements, audit
 * hooks) holds the password or even the verifier.  The SQL text built here
 * (CREATE ROLE, ALTER ROLE ... VALID UNTIL) holds role names, always
 * through quote_identifier, and timestamps; values go to SPI as parameters.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/objectaccess.h"
#include "catalog/objectaddress.h"
#include "catalog/pg_auth_members.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_shdepend.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/seclabel.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "commands/user.h"
#include "libpq/crypt.h"
#include "libpq/scram.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/catcache.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/uuid.h"

#include "extension/common/args.h"
#include "extension/common/catalog.h"
#include "extension/common/errors.h"
#include "extension/hooks.h"
#include "extension/leases/lease_state.h"
#include "kms/template_options.h"

#define KS_PRIMARY_HINT_LEASES "Leases and role templates change on the primary; standbys receive the change by replication."
#include "extension/common/owner_spi.h"
#include "extension/common/roles.h"
#include "rotator/job.h"
#include "rotator/lease_revoke.h"

PG_FUNCTION_INFO_V1(keysmith_create_role_template);
PG_FUNCTION_INFO_V1(keysmith_drop_role_template);
PG_FUNCTION_INFO_V1(keysmith_issue_role);
PG_FUNCTION_INFO_V1(keysmith_renew_lease);
PG_FUNCTION_INFO_V1(keysmith_revoke_lease);

#define LEASE_PASSWORD_LEN	40		/* ~238 bits from [A-Za-z0-9] */
#define LEASE_SUFFIX_LEN	16		/* ~82 bits from [a-z0-9] */
#define TEMPLATE_NAME_MAX	32

static const char AlnumLower[] = "abcdefghijklmnopqrstuvwxyz0123456789";

/* ---------------------------------------------------------------- helpers */

/* Leases live in the database the reaper works in (KsRequireWorkerCatalog). */
static void
RequireLeaseCatalog(int major, int minor)
{
	KsRequireWorkerCatalog(KsLeaseTables, KsLeaseTableCount, "leased roles", major, minor);
}

/*
 * The role the lease functions act for.  Inside a security-restricted
 * operation the code that called them may belong to another role than
 * GetOuterUserId() (REFRESH MATERIALIZED VIEW runs the view owner's code
 * with the refresher as outer user): refused, 42501.
 */
static Oid
LeaseCaller(void)
{
	if (InSecurityRestrictedOperation())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("keysmith's lease functions cannot be called within a security-restricted operation"),
				 errdetail("There the role that called them need not be the role they would act for.")));
	return GetOuterUserId();
}

/* The lease database and trusted lease tables, at any version. */
static void
RequireLeaseDatabase(void)
{
	RequireLeaseCatalog(0, 0);
}

/* Does s match ^[a-z][a-z0-9_]{0,max-1}$ ? */
static bool
IsSafeIdentifier(const char *s, int max)
{
	int			n = 0;

	if (s[0] < 'a' || s[0] > 'z')
		return false;
	for (; s[n]; n++)
	{
		char		c = s[n];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	return n <= max;
}

static char *
TimestampText(TimestampTz t)
{
	return DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(t)));
}

static bool
IntervalPositive(Interval *iv)
{
	Interval	zero = {0};

	return DatumGetBool(DirectFunctionCall2(interval_gt, IntervalPGetDatum(iv),
											IntervalPGetDatum(&zero)));
}

static TimestampTz
PlusInterval(TimestampTz t, Interval *iv)
{
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												   TimestampTzGetDatum(t),
												   IntervalPGetDatum(iv)));
}

static char *
RoleNameOrError(Oid roleid, const char *what)
{
	char	   *name = GetUserNameFromId(roleid, true);

	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("%s (OID %u) no longer exists", what, roleid)));
	return name;
}

/* ------------------------------------------------- what a lease may hold */

/* Is this one of PostgreSQL's predefined roles (pg_read_server_files, ...)? */
/* ERROR if a lease may not act as role r (reached from roleid, named via). */
static void
CheckOneLeaseRole(Oid r, Oid roleid, const char *via, bool allow_attributes)
{
	HeapTuple	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(r));
	Form_pg_authid role;
	const char *kind = NULL;
	const char *attr = NULL;
	char	   *name;
	char	   *detail;

	if (!HeapTupleIsValid(tup))
		return;					/* dropped meanwhile: grants nothing */
	role = (Form_pg_authid) GETSTRUCT(tup);
	name = pstrdup(NameStr(role->rolname));
	if (role->rolsuper)
		kind = "superuser role";
	else if (KsIsPredefinedRole(r, name))
		kind = "predefined role";
	else if (KsIsKeysmithRole(name))
		kind = "keysmith role";
	else if (!allow_attributes)
		attr = role->rolcreaterole ? "CREATEROLE" : role->rolcreatedb ? "CREATEDB" :
			role->rolreplication ? "REPLICATION" : role->rolbypassrls ? "BYPASSRLS" : NULL;
	ReleaseSysCache(tup);
	if (kind == NULL && attr == NULL)
		return;
	detail = r == roleid ? NULL :
		psprintf("Role \"%s\" is a member of \"%s\", and a leased role can act as every role in that chain.",
				 via, name);
	if (kind)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("a leased role may not be a member of %s \"%s\"", kind, name),
				 detail ? errdetail("%s", detail) : 0));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("a leased role may not be a member of role \"%s\", which has %s", name, attr),
			 detail ? errdetail("%s", detail) : 0,
			 errhint("A superuser may allow this with the template option \"allow_role_attributes\": true.")));
}

/*
 * May a leased role be a member of roleid?  Checks roleid and every role it
 * is, directly or not, a member of (pg_auth_members, breadth first, from
 * the catalog caches): a lease can SET ROLE to any of them.  Superusers,
 * predefined roles and keysmith's own roles are refused always; roles with
 * CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS only unless
 * allow_attributes (a superuser's explicit opt-in).
 */
static void
CheckLeaseMembership(Oid roleid, const char *via, bool allow_attributes)
{
	List	   *queue = list_make1_oid(roleid);
	List	   *seen = NIL;

	while (queue != NIL)
	{
		Oid			r = linitial_oid(queue);
		CatCList   *members;

		queue = list_delete_first(queue);
		if (list_member_oid(seen, r))
			continue;
		seen = lappend_oid(seen, r);
		CheckOneLeaseRole(r, roleid, via, allow_attributes);
		members = SearchSysCacheList1(AUTHMEMMEMROLE, ObjectIdGetDatum(r));
		for (int i = 0; i < members->n_members; i++)
		{
			Form_pg_auth_members m = (Form_pg_auth_members) GETSTRUCT(&members->members[i]->tuple);

			queue = lappend_oid(queue, m->roleid);
		}
		ReleaseSysCacheList(members);
	}
	list_free(seen);
}

/* -------------------------------------------------------------- templates */

typedef struct TemplateOptions
{
	char	   *prefix;
	int			max_leases;		/* 0: no limit */
	int			connection_limit;
	Oid			owner;
	char	   *owner_name;
	bool		allow_attributes;
	List	   *issuers;		/* OIDs */
} TemplateOptions;

static Oid
TemplateRole(const char *rolename, const char *what)
{
	Oid			roleid = get_role_oid(rolename, true);

	if (!OidIsValid(roleid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" named in %s does not exist", rolename, what)));
	return roleid;
}

/*
 * Read and check the options jsonb of create_role_template.  The shapes
 * and ranges are checked by kms/template_options.c (plain C, fuzzed); here the role
 * names are resolved and the opt-in is checked against the caller.
 */
static void
ParseTemplateOptions(Datum options, Oid caller, TemplateOptions *opt)
{
	char	   *text = DatumGetCString(DirectFunctionCall1(jsonb_out, options));
	KsTemplateOptions parsed;
	KsError		err;

	if (KsTemplateOptionsParse(text, strlen(text), &parsed, &err) != KS_OK)
		ereport(ERROR,
				(errcode(err.status == KS_ERR_INVALID_NAME ? ERRCODE_INVALID_NAME : ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s", err.message),
				 parsed.detail ? errdetail("%s", parsed.detail) : 0,
				 parsed.hint ? errhint("%s", parsed.hint) : 0));
	if (parsed.prefix[0])
		opt->prefix = pstrdup(parsed.prefix);
	opt->max_leases = parsed.max_leases;
	opt->connection_limit = parsed.connection_limit;
	if (parsed.has_owner)
	{
		opt->owner_name = pstrdup(parsed.owner_role);
		opt->owner = TemplateRole(opt->owner_name, "owner_role");
	}
	for (int i = 0; i < parsed.n_issuers; i++)
		opt->issuers = lappend_oid(opt->issuers, TemplateRole(parsed.issuers[i], "issuers"));
	opt->allow_attributes = parsed.allow_role_attributes != 0;
	if (opt->allow_attributes && !superuser_arg(caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("only a superuser may set allow_role_attributes"),
				 errdetail("It lets leased roles act as roles with CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS.")));
}

static Datum
OidListToRegroleArray(List *oids)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(oids), 1));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, oids)
		elems[n++] = ObjectIdGetDatum(lfirst_oid(lc));
	return PointerGetDatum(construct_array(elems, n, REGROLEOID, sizeof(Oid), true, TYPALIGN_INT));
}

/*
 * keysmith.create_role_template(name, member_of, default_ttl, max_ttl,
 *                               options) RETURNS void
 *
 * Define what issue_role may hand out: a leased role is made a member of
 * the member_of roles and gets nothing else, for default_ttl unless asked
 * for less or more, never past max_ttl from its issue.  A keysmith admin's
 * function (superuser or keysmith_admin, as LeaseCaller; 42501 otherwise),
 * on the primary, in the lease database.  It checks, before writing
 * anything:
 *   - the name is a safe identifier (42602), the durations are positive and
 *     default_ttl <= max_ttl (22023), member_of names at least one role and
 *     no NULL;
 *   - the creator holds every member_of role WITH ADMIN OPTION (or is a
 *     superuser): a template grants nothing its creator could not grant;
 *   - what those roles reach through membership (CheckLeaseMembership):
 *     never a superuser, predefined or keysmith role, nor a role with
 *     CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS unless a superuser
 *     set allow_role_attributes;
 *   - the options (ParseTemplateOptions; their shapes in kms/template_options.c),
 *     and that owner_role, which inherits what a lease leaves behind, is
 *     one of member_of.
 * A template of the same name is refused (42710) after its row is read FOR
 * UPDATE; a concurrent create of that name fails on the primary key.  The
 * row records the creator.  Memberships are checked again at every
 * issue_role, since they may change after the template is made.
 */
Datum
keysmith_create_role_template(PG_FUNCTION_ARGS)
{
	Oid			caller = LeaseCaller();
	char	   *name;
	ArrayType  *member_arr;
	Datum	   *elems;
	bool	   *enulls;
	int			nelems;
	Interval   *default_ttl,
			   *max_ttl;
	List	   *members = NIL;
	ListCell   *lc;
	TemplateOptions opt = {0};

	KsRequirePrimary("create a role template", KS_PRIMARY_HINT_LEASES);
	KsRequireArg(fcinfo, 0, "template name");
	KsRequireArg(fcinfo, 1, "member_of");
	KsRequireArg(fcinfo, 2, "default_ttl");
	KsRequireArg(fcinfo, 3, "max_ttl");
	KsRequireArg(fcinfo, 4, "options");
	RequireLeaseCatalog(0, 3);	/* role_template.allow_role_attributes */

	if (!KsIsKeysmithAdmin(caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to create role templates"),
				 errdetail("Only superusers and members of keysmith_admin manage role templates.")));

	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!IsSafeIdentifier(name, TEMPLATE_NAME_MAX))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid template name"),
				 errdetail("A template name is 1 to %d characters: a lowercase letter, then lowercase letters, digits or underscores.",
						   TEMPLATE_NAME_MAX)));

	default_ttl = PG_GETARG_INTERVAL_P(2);
	max_ttl = PG_GETARG_INTERVAL_P(3);
	if (!IntervalPositive(default_ttl) ||
		DatumGetBool(DirectFunctionCall2(interval_gt, IntervalPGetDatum(default_ttl),
										 IntervalPGetDatum(max_ttl))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid lease durations"),
				 errdetail("default_ttl must be positive and no longer than max_ttl.")));

	/* member_of: existing roles the caller could grant itself */
	member_arr = PG_GETARG_ARRAYTYPE_P(1);
	deconstruct_array(member_arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &nelems);
	if (nelems == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("member_of must name at least one role"),
				 errdetail("A leased role gets its privileges only through membership in these roles.")));
	for (int i = 0; i < nelems; i++)
	{
		char	   *rolename;
		Oid			roleid;

		if (enulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("member_of must not contain nulls")));
		rolename = TextDatumGetCString(elems[i]);
		roleid = TemplateRole(rolename, "member_of");
		if (!superuser_arg(caller) && !is_admin_of_role(caller, roleid))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied to grant membership in role \"%s\"", rolename),
					 errdetail("A template may only name roles its creator holds with ADMIN OPTION.")));
		members = list_append_unique_oid(members, roleid);
	}

	opt.connection_limit = -1;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ParseTemplateOptions(PG_GETARG_DATUM(4), caller, &opt);
	if (opt.prefix == NULL)
		opt.prefix = psprintf("ks_%s_", name);

	/* what a lease could act as: every member_of role and all they reach */
	foreach(lc, members)
		CheckLeaseMembership(lfirst_oid(lc), GetUserNameFromId(lfirst_oid(lc), false), opt.allow_attributes);
	if (OidIsValid(opt.owner) && !list_member_oid(members, opt.owner))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("owner_role \"%s\" is not one of the template's member_of roles", opt.owner_name),
				 errdetail("Objects a leased role leaves behind are given to owner_role, so it must be a role the lease could already act as.")));

	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(name)};

		KsSpiExec("SELECT 1 FROM keysmith.role_template WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE",
			1, types, values, NULL, false, 0, SPI_OK_SELECT);
		if (SPI_processed > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("role template \"%s\" already exists", name)));
	}
	{
		Oid			types[11] = {TEXTOID, REGROLEARRAYOID, INTERVALOID, INTERVALOID, TEXTOID,
		INT4OID, INT4OID, REGROLEOID, REGROLEARRAYOID, TEXTOID, BOOLOID};
		Datum		values[11];
		char		nulls[11] = "           ";

		values[0] = CStringGetTextDatum(name);
		values[1] = OidListToRegroleArray(members);
		values[2] = IntervalPGetDatum(default_ttl);
		values[3] = IntervalPGetDatum(max_ttl);
		values[4] = CStringGetTextDatum(opt.prefix);
		values[5] = Int32GetDatum(opt.max_leases);
		if (opt.max_leases == 0)
			nulls[5] = 'n';
		values[6] = Int32GetDatum(opt.connection_limit);
		values[7] = ObjectIdGetDatum(opt.owner);
		if (!OidIsValid(opt.owner))
			nulls[7] = 'n';
		values[8] = OidListToRegroleArray(opt.issuers);
		values[9] = CStringGetTextDatum(GetUserNameFromId(caller, false));
		values[10] = BoolGetDatum(opt.allow_attributes);
		KsSpiExec("INSERT INTO keysmith.role_template (name, member_of, default_ttl, max_ttl,"
			" username_prefix, max_leases, connection_limit, owner_role, issuers, created_by,"
			" allow_role_attributes)"
			" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
			11, types, values, nulls, false, 0, SPI_OK_INSERT);
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * Lock a template's row and count its unrevoked leases; -1 if there is no
 * such template.  The lock serialises drop_role_template and the
 * max_leases check of concurrent issue_role calls.  The row is locked by a
 * no-op UPDATE first and the leases counted by a second statement: under
 * READ COMMITTED that statement's snapshot is taken after the lock wait,
 * so it sees the lease a concurrent issue_role committed; under REPEATABLE
 * READ the UPDATE fails with a serialization error instead of counting
 * from a stale snapshot.
 */
static int64
LockTemplateCountLeases(const char *name)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(name), KsLeaseStateDatum(KS_LEASE_REVOKED)};
	bool		isnull;

	KsSpiExec("UPDATE keysmith.role_template SET name = name WHERE name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, false, 0, SPI_OK_UPDATE);
	if (SPI_processed == 0)
		return -1;
	KsSpiExec("SELECT pg_catalog.count(*) FROM keysmith.lease l"
			  " WHERE l.template OPERATOR(pg_catalog.=) $1"
			  "   AND l.state OPERATOR(pg_catalog.<>) $2",
			  2, types, values, NULL, false, 0, SPI_OK_SELECT);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

Datum
keysmith_drop_role_template(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	int64		unrevoked;

	KsRequirePrimary("drop a role template", KS_PRIMARY_HINT_LEASES);
	RequireLeaseDatabase();
	if (!KsIsKeysmithAdmin(LeaseCaller()))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to drop role templates"),
				 errdetail("Only superusers and members of keysmith_admin manage role templates.")));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	unrevoked = LockTemplateCountLeases(name);
	if (unrevoked < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role template \"%s\" does not exist", name)));
	if (unrevoked > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("role template \"%s\" still has leases that are not revoked", name),
				 errhint("Revoke them with keysmith.revoke_lease, or wait until they expire and are revoked.")));
	KsSpiExec("DELETE FROM keysmith.role_template WHERE name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, false, 0, SPI_OK_DELETE);
	SPI_finish();
	PG_RETURN_VOID();
}

/* ------------------------------------------------------------------ issue */

typedef struct Template
{
	List	   *members;		/* OIDs */
	Interval   *default_ttl;
	Interval   *max_ttl;
	char	   *prefix;
	int			max_leases;		/* 0: none */
	int			connection_limit;
	Oid			owner;
	List	   *issuers;
	bool		allow_attributes;
} Template;

static List *
RegroleArrayToList(Datum d)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *result = NIL;

	deconstruct_array(DatumGetArrayTypeP(d), REGROLEOID, sizeof(Oid), true, TYPALIGN_INT,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			result = lappend_oid(result, DatumGetObjectId(elems[i]));
	return result;
}

/* Load a template into the current (upper) memory context. */
static void
LoadTemplate(const char *name, Template *t)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	MemoryContext spicxt;

	KsSpiExec("SELECT member_of, default_ttl, max_ttl, username_prefix, max_leases,"
			  " connection_limit, owner_role, issuers, allow_role_attributes FROM keysmith.role_template"
			  " WHERE name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role template \"%s\" does not exist", name)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;

	spicxt = MemoryContextSwitchTo(CurTransactionContext);
	t->members = RegroleArrayToList(SPI_getbinval(tup, desc, 1, &isnull));
	t->default_ttl = DatumGetIntervalP(datumCopy(SPI_getbinval(tup, desc, 2, &isnull), false, sizeof(Interval)));
	t->max_ttl = DatumGetIntervalP(datumCopy(SPI_getbinval(tup, desc, 3, &isnull), false, sizeof(Interval)));
	t->prefix = TextDatumGetCString(SPI_getbinval(tup, desc, 4, &isnull));
	t->max_leases = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
	if (isnull)
		t->max_leases = 0;
	t->connection_limit = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	t->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 7, &isnull));
	if (isnull)
		t->owner = InvalidOid;
	t->issuers = RegroleArrayToList(SPI_getbinval(tup, desc, 8, &isnull));
	t->allow_attributes = DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull));
	MemoryContextSwitchTo(spicxt);
}

static bool
MayIssue(Oid caller, Template *t)
{
	ListCell   *lc;

	if (KsIsKeysmithAdmin(caller))
		return true;
	foreach(lc, t->issuers)
		if (has_privs_of_role(caller, lfirst_oid(lc)))
			return true;
	return false;
}

/*
 * keysmith.issue_role(template, ttl DEFAULT NULL)
 *   RETURNS TABLE (username, password, lease_id, expires_at)
 *
 * Create a short-lived login role from a template and return its password
 * once: keysmith keeps only the SCRAM verifier, in pg_authid.  Granted to
 * keysmith_user and keysmith_admin; it acts for keysmith admins and for
 * roles with the privileges of one of the template's issuers (42501
 * otherwise; never from a security-restricted operation), on the primary,
 * in the lease database.  It checks:
 *   - ttl (the template's default_ttl if NULL) is positive (22023) and ends
 *     no later than issue + max_ttl (KS011), compared as points in time;
 *   - what the member_of roles reach, again (CheckLeaseMembership): grants
 *     made since the template was created count;
 *   - max_leases, if set: the template's row is locked and its unrevoked
 *     leases counted under that lock (LockTemplateCountLeases), so
 *     concurrent calls cannot overshoot it (53400) and drop_role_template
 *     waits.
 * Then, in the caller's transaction: a role named prefix + 16 random
 * characters, made by CREATE ROLE without a password (LOGIN, no
 * attributes, the template's connection limit, VALID UNTIL the expiry, IN
 * ROLE member_of, names quoted); its verifier written straight to pg_authid
 * (KsSetRoleVerifier), so no SQL text holds the password or the verifier;
 * the "keysmith" security label that the authentication hook (auth.c)
 * looks for; the keysmith.lease row and its 'issued' event.  The verifier,
 * the slow part, is computed before the template lock is taken.  The
 * password and the result's copy of it are wiped once the row is in the
 * tuplestore.
 */
Datum
keysmith_issue_role(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			caller = LeaseCaller();
	char	   *tname;
	Template	t;
	Interval   *ttl;
	TimestampTz issued,
				expires,
				max_expires;
	char		username[NAMEDATALEN];
	char		password[LEASE_PASSWORD_LEN + 1];
	char	   *verifier;
	StringInfoData sql,
				inrole;
	pg_uuid_t  *lease_id;
	Oid			roleid;
	ListCell   *lc;
	Datum		outv[4];
	bool		outn[4] = {false, false, false, false};
	ObjectAddress addr;

	KsRequirePrimary("issue a leased role", KS_PRIMARY_HINT_LEASES);
	KsRequireArg(fcinfo, 0, "template");
	RequireLeaseCatalog(0, 3);	/* role_template.allow_role_attributes */
	tname = text_to_cstring(PG_GETARG_TEXT_PP(0));
	InitMaterializedSRF(fcinfo, 0);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	LoadTemplate(tname, &t);

	if (!MayIssue(caller, &t))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to issue roles from template \"%s\"", tname),
				 errdetail("The template's issuers option lists the roles that may issue from it.")));

	/*
	 * Durations are compared as the points in time they lead to: as
	 * intervals, '1 year' is 360 days and would pass a '360 days' max_ttl.
	 */
	ttl = PG_ARGISNULL(1) ? t.default_ttl : PG_GETARG_INTERVAL_P(1);
	issued = GetCurrentTransactionStartTimestamp();
	expires = PlusInterval(issued, ttl);
	max_expires = PlusInterval(issued, t.max_ttl);
	if (expires <= issued)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease ttl must be positive")));
	if (expires > max_expires)
		ereport(ERROR,
				(errcode(ERRCODE_KS_LEASE_TTL_EXCEEDED),
				 errmsg("requested ttl exceeds the max_ttl of template \"%s\"", tname),
				 errdetail("The template allows at most %s, until %s.",
						   DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(t.max_ttl))),
						   TimestampText(max_expires))));

	/*
	 * The member roles, by name, each quoted; and what they reach, checked
	 * again, since memberships may have changed since the template was made.
	 */
	initStringInfo(&inrole);
	foreach(lc, t.members)
	{
		char	   *rolename = RoleNameOrError(lfirst_oid(lc), "a member_of role of the template");

		CheckLeaseMembership(lfirst_oid(lc), rolename, t.allow_attributes);
		appendStringInfo(&inrole, "%s%s", inrole.len ? ", " : "", quote_identifier(rolename));
	}

	/* the verifier is the slow part (4096 PBKDF2 rounds): before any lock */
	KsRandomString(password, LEASE_PASSWORD_LEN, KsAlnumMixed);
	verifier = pg_be_scram_build_secret(password);

	if (t.max_leases > 0 && LockTemplateCountLeases(tname) >= t.max_leases)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("template \"%s\" already has its maximum of %d leases", tname, t.max_leases),
				 errhint("Revoke a lease, or wait until one expires and is revoked.")));

	/* a fresh, unused username */
	for (int attempt = 0;; attempt++)
	{
		char		suffix[LEASE_SUFFIX_LEN + 1];

		KsRandomString(suffix, LEASE_SUFFIX_LEN, AlnumLower);
		snprintf(username, sizeof(username), "%s%s", t.prefix, suffix);
		if (!OidIsValid(get_role_oid(username, true)))
			break;
		if (attempt == 10)
			elog(ERROR, "keysmith: could not find an unused role name");
	}

	/* the role, without a password; then its verifier, in this transaction */
	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE ROLE %s LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
					 " NOBYPASSRLS INHERIT CONNECTION LIMIT %d VALID UNTIL %s IN ROLE %s",
					 quote_identifier(username), t.connection_limit,
					 quote_literal_cstr(TimestampText(expires)), inrole.data);
	KsSpiExec(sql.data, 0, NULL, NULL, NULL, false, 0, SPI_OK_UTILITY);
	roleid = get_role_oid(username, false);
	KsSetRoleVerifier(roleid, username, verifier, expires);
	explicit_bzero(verifier, strlen(verifier));

	lease_id = DatumGetUUIDP(OidFunctionCall0(F_GEN_RANDOM_UUID));

	/* the mark the authentication hook looks for */
	ObjectAddressSet(addr, AuthIdRelationId, roleid);
	SetSecurityLabel(&addr, KS_SECLABEL_PROVIDER,
					 psprintf("lease:%s", DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(lease_id)))));

	{
		Oid			types[11] = {UUIDOID, TEXTOID, TEXTOID, OIDOID, TEXTOID, OIDOID, REGROLEOID,
		TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID, INTERVALOID};
		Datum		values[11];
		char		nulls[11] = "           ";

		values[0] = UUIDPGetDatum(lease_id);
		values[1] = CStringGetTextDatum(tname);
		values[2] = CStringGetTextDatum(username);
		values[3] = ObjectIdGetDatum(roleid);
		values[4] = CStringGetTextDatum(GetUserNameFromId(caller, false));
		values[5] = ObjectIdGetDatum(caller);
		values[6] = ObjectIdGetDatum(t.owner);
		if (!OidIsValid(t.owner))
			nulls[6] = 'n';
		values[7] = TimestampTzGetDatum(issued);
		values[8] = TimestampTzGetDatum(expires);
		values[9] = TimestampTzGetDatum(max_expires);
		values[10] = IntervalPGetDatum(t.default_ttl);
		KsSpiExec("INSERT INTO keysmith.lease (lease_id, template, username, role_oid, requested_by,"
			" requester_oid, owner_role, issued_at, expires_at, max_expires_at, default_ttl)"
			" VALUES ($1, $2, $3::pg_catalog.name, $4, $5::pg_catalog.name, $6, $7, $8, $9, $10, $11)",
			11, types, values, nulls, false, 0, SPI_OK_INSERT);
	}
	KsLeaseEvent(UUIDPGetDatum(lease_id), "issued", NULL);
	SPI_finish();

	outv[0] = CStringGetTextDatum(username);
	outv[1] = CStringGetTextDatum(password);
	outv[2] = UUIDPGetDatum(lease_id);
	outv[3] = TimestampTzGetDatum(expires);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, outv, outn);
	explicit_bzero(password, sizeof(password));
	explicit_bzero(VARDATA_ANY(DatumGetPointer(outv[1])), VARSIZE_ANY_EXHDR(DatumGetPointer(outv[1])));
	return (Datum) 0;
}

/* ------------------------------------------------------- renew and revoke */

typedef struct Lease
{
	Oid			role_oid;
	Oid			requester;
	Oid			owner;
	KsLeaseState state;
	TimestampTz expires;
	TimestampTz max_expires;
	Interval   *default_ttl;
} Lease;

/* Lock and load a lease; ERROR unless the caller may act on it. */
static void
LoadLeaseForCaller(Datum lease_id, Lease *l, const char *action)
{
	Oid			types[1] = {UUIDOID};
	Datum		values[1] = {lease_id};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Oid			caller = LeaseCaller();
	MemoryContext old;

	(void) KsLeaseRebind(&lease_id);
	KsSpiExec("SELECT role_oid, requester_oid, owner_role, state, expires_at, max_expires_at, default_ttl"
		"  FROM keysmith.lease WHERE lease_id OPERATOR(pg_catalog.=) $1 FOR UPDATE",
		1, types, values, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("lease %s does not exist",
						DatumGetCString(DirectFunctionCall1(uuid_out, lease_id)))));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	old = MemoryContextSwitchTo(CurTransactionContext);
	l->role_oid = DatumGetObjectId(SPI_getbinval(tup, desc, 1, &isnull));
	l->requester = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	l->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
	if (isnull)
		l->owner = InvalidOid;
	l->state = KsLeaseStateFromName(SPI_getvalue(tup, desc, 4));
	l->expires = DatumGetTimestampTz(SPI_getbinval(tup, desc, 5, &isnull));
	l->max_expires = DatumGetTimestampTz(SPI_getbinval(tup, desc, 6, &isnull));
	l->default_ttl = DatumGetIntervalP(datumCopy(SPI_getbinval(tup, desc, 7, &isnull), false, sizeof(Interval)));
	MemoryContextSwitchTo(old);

	if (!KsIsKeysmithAdmin(caller) && !has_privs_of_role(caller, l->requester))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s lease %s", action,
						DatumGetCString(DirectFunctionCall1(uuid_out, lease_id))),
				 errdetail("Only the role that requested a lease, and keysmith admins, may %s it.", action)));
}

Datum
keysmith_renew_lease(PG_FUNCTION_ARGS)
{
	Datum		lease_id;
	Lease		l;
	Interval   *inc;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	TimestampTz wanted;
	char	   *name;

	KsRequirePrimary("renew a lease", KS_PRIMARY_HINT_LEASES);
	KsRequireArg(fcinfo, 0, "lease_id");
	RequireLeaseDatabase();
	lease_id = PG_GETARG_DATUM(0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	LoadLeaseForCaller(lease_id, &l, "renew");

	if (l.state != KS_LEASE_ACTIVE || l.expires <= now)
		ereport(ERROR,
				(errcode(ERRCODE_KS_LEASE_NOT_ACTIVE),
				 errmsg("lease %s is %s and cannot be renewed",
						DatumGetCString(DirectFunctionCall1(uuid_out, lease_id)),
						l.state == KS_LEASE_ACTIVE ? "expired" : "revoked"),
				 errhint("Issue a new role with keysmith.issue_role.")));

	inc = PG_ARGISNULL(1) ? l.default_ttl : PG_GETARG_INTERVAL_P(1);
	wanted = PlusInterval(now, inc);
	if (wanted <= now)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease increment must be positive")));
	if (wanted > l.max_expires)
		ereport(ERROR,
				(errcode(ERRCODE_KS_LEASE_TTL_EXCEEDED),
				 errmsg("renewal would extend the lease past its max_ttl"),
				 errdetail("The lease may last until %s at the latest.", TimestampText(l.max_expires)),
				 errhint("Renew with a smaller increment, or issue a new role.")));

	if (wanted > l.expires)		/* renewing never shortens a lease */
	{
		Oid			types[2] = {UUIDOID, TIMESTAMPTZOID};
		Datum		values[2] = {lease_id, TimestampTzGetDatum(wanted)};

		name = RoleNameOrError(l.role_oid, "the lease's role");
		KsSpiExec(psprintf("ALTER ROLE %s VALID UNTIL %s", quote_identifier(name),
					 quote_literal_cstr(TimestampText(wanted))),
			0, NULL, NULL, NULL, false, 0, SPI_OK_UTILITY);
		KsSpiExec("UPDATE keysmith.lease SET expires_at = $2 WHERE lease_id OPERATOR(pg_catalog.=) $1",
			2, types, values, NULL, false, 0, SPI_OK_UPDATE);
		KsLeaseEvent(lease_id, "renewed", TimestampText(wanted));
		l.expires = wanted;
	}
	SPI_finish();
	PG_RETURN_TIMESTAMPTZ(l.expires);
}

static void
AdvanceStep(void *arg)
{
	KsLeaseAdvance((KsLeaseJob *) arg);
}

/*
 * Revoke now, in the caller's transaction, through the same state machine
 * as the reaper (rotator/lease_revoke.c).  The lockout comes first and
 * cannot be undone by what follows: NOLOGIN, VALID UNTIL now, sessions
 * terminated, state 'revoking'.  The cleanup (objects, DROP ROLE) then runs
 * in a subtransaction; if it fails (another role's view depends on a
 * function the lease made, say), only the cleanup rolls back, the failure
 * is recorded in keysmith.leases with a WARNING, and the reaper retries it.
 * Objects in other databases need the reaper's helper workers, so such a
 * lease is also left 'revoking' and the reaper is woken at commit.
 */
Datum
keysmith_revoke_lease(PG_FUNCTION_ARGS)
{
	Datum		lease_id = PG_GETARG_DATUM(0);
	Lease		l;
	List	   *others;
	bool		here;
	KsLeaseJob	job;
	char	   *message = NULL;

	KsRequirePrimary("revoke a lease", KS_PRIMARY_HINT_LEASES);
	RequireLeaseDatabase();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	LoadLeaseForCaller(lease_id, &l, "revoke");

	memset(&job, 0, sizeof(job));
	job.lease_id = lease_id;
	job.role_oid = l.role_oid;
	job.owner = l.owner;
	job.state = l.state;
	job.reason = "revoked";
	job.by = "revoke_lease";
	if (job.state == KS_LEASE_REVOKED)
	{
		SPI_finish();
		PG_RETURN_VOID();
	}

	others = KsLeaseDatabases(l.role_oid, &here);
	if (others != NIL)
		job.lockout_note = "objects in other databases left to the reaper";
	if (job.state == KS_LEASE_ACTIVE)
		KsLeaseAdvance(&job);	/* the lockout: now 'revoking' */

	/*
	 * The reaper is woken at commit in any case: a login that slipped in
	 * between the termination above and this commit is ended by its next
	 * round (TerminateOrphanSessions in rotator/reaper.c).
	 */
	KsWorkerWakeAtCommit(KS_WORKER_REAPER);
	if (others == NIL && !KsJobTry(AdvanceStep, &job, &message))
	{
		KsLeaseRecordFailure(lease_id, message);
		ereport(WARNING,
				(errmsg("lease %s is locked out, but its role could not be dropped yet",
						DatumGetCString(DirectFunctionCall1(uuid_out, lease_id))),
				 errdetail("%s", message),
				 errhint("The lease stays in state revoking; the reaper retries, and keysmith.leases shows the error.")));
	}
	SPI_finish();
	PG_RETURN_VOID();
}
