/*
 * extension/schedules/schedules.c
 *
 * SQL-callable functions of schedules: schedule_rotation,
 * unschedule_rotation, schedule_key_rotation, unschedule_key_rotation,
 * register_column and unregister_column.  They run as their caller: the
 * checks here are the caller's privileges (on the secret, the key, the
 * table); the tables are written as their owner; the runs themselves are
 * the rotation worker's (rotator/schedule.c), which checks the scheduling
 * role's privileges again at every run.
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "extension/common/args.h"
#include "extension/common/catalog.h"
#include "extension/common/owner_spi.h"
#include "extension/common/roles.h"
#include "extension/keys/key_acl.h"
#include "extension/keys/key_lifecycle.h"
#include "extension/keys/key_store.h"
#include "extension/secrets/secret_store.h"
#include "rotator/rotation.h"
#include "rotator/schedule.h"

PG_FUNCTION_INFO_V1(keysmith_schedule_rotation);
PG_FUNCTION_INFO_V1(keysmith_unschedule_rotation);
PG_FUNCTION_INFO_V1(keysmith_schedule_key_rotation);
PG_FUNCTION_INFO_V1(keysmith_unschedule_key_rotation);
PG_FUNCTION_INFO_V1(keysmith_register_column);
PG_FUNCTION_INFO_V1(keysmith_unregister_column);

/* Writers are refused on a standby, with a hint, before anything else. */
static void
RequirePrimary(const char *what)
{
	KsRequirePrimary(what, "Schedules are set on the primary.");
}

/*
 * The schedule options of a secret: {"destroy_previous_after": "7 days"}.
 * Returns the interval, or NULL when not given.
 */
static Interval *
ParseSecretScheduleOptions(Jsonb *options)
{
	char	   *names[8];
	char	   *values[8];
	int			n = KsJsonbOptions(options, "schedule options", lengthof(names), names, values);
	Interval   *destroy_after = NULL;
	Interval	zero = {0};

	for (int i = 0; i < n; i++)
	{
		if (strcmp(names[i], "destroy_previous_after") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown schedule option \"%s\"", names[i]),
					 errhint("The one schedule option is destroy_previous_after.")));
		if (values[i] == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("schedule option destroy_previous_after must be an interval in a string, such as \"7 days\"")));
		destroy_after = DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(values[i]),
															  ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
		if (DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(destroy_after),
											  IntervalPGetDatum(&zero))) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("schedule option destroy_previous_after must not be negative")));
	}
	return destroy_after;
}

/*
 * keysmith.schedule_rotation(secret, every, window, starting, options):
 * needs rotate on the secret, and admin to shred previous versions.
 */
Datum
keysmith_schedule_rotation(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	KsScheduleSpec spec = {0};
	KsSecret	s;
	KsOwnerSpi	spi;
	TimestampTz next;

	KsRequireArg(fcinfo, 0, "secret");
	KsRequireArg(fcinfo, 1, "every");
	KsRequireArg(fcinfo, 3, "starting");
	RequirePrimary("schedule a rotation");
	KsRequireScheduleCatalog();
	spec.kind = KS_SCHEDULE_SECRET;
	spec.target = text_to_cstring(PG_GETARG_TEXT_PP(0));
	spec.every = PG_GETARG_INTERVAL_P(1);
	spec.window = PG_ARGISNULL(2) ? NULL : PG_GETARG_INTERVAL_P(2);
	spec.starting = PG_GETARG_TIMESTAMPTZ(3);
	spec.destroy_previous_after = PG_ARGISNULL(4) ? NULL : ParseSecretScheduleOptions(PG_GETARG_JSONB_P(4));
	spec.owner = caller;
	KsScheduleCheckPeriod(spec.every, spec.window);

	KsOwnerSpiBegin(&spi);
	KsSecretLoadForCaller(spec.target, KS_SECRET_ROTATE, caller, &s, true);
	if (spec.destroy_previous_after && !KsSecretHasPrivilege(s.name, KS_SECRET_ADMIN, caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to shred versions of secret \"%s\"", s.name),
				 errdetail("destroy_previous_after needs the admin privilege on the secret.")));
	/* a schedule that could never run is refused now, not at its first run */
	KsRotationCheckStrategy(&s);
	next = KsScheduleSet(&spec);
	KsSecretEvent(s.name, NULL, NULL, "scheduled",
				  psprintf("every %s%s%s", DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(spec.every))),
						   spec.destroy_previous_after ? ", previous versions shredded after " : "",
						   spec.destroy_previous_after ?
						   DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(spec.destroy_previous_after))) : ""),
				  KsSecretActor(caller));
	KsOwnerSpiEnd(&spi);
	PG_RETURN_TIMESTAMPTZ(next);
}

/* keysmith.unschedule_rotation(secret): needs rotate on the secret. */
Datum
keysmith_unschedule_rotation(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	KsSecret	s;
	KsOwnerSpi	spi;
	bool		removed;

	RequirePrimary("unschedule a rotation");
	KsRequireScheduleCatalog();
	KsOwnerSpiBegin(&spi);
	KsSecretLoadForCaller(text_to_cstring(PG_GETARG_TEXT_PP(0)), KS_SECRET_ROTATE, caller, &s, true);
	removed = KsScheduleRemove(KS_SCHEDULE_SECRET, s.name);
	if (removed)
		KsSecretEvent(s.name, NULL, NULL, "unscheduled", NULL, KsSecretActor(caller));
	KsOwnerSpiEnd(&spi);
	PG_RETURN_BOOL(removed);
}

/*
 * ERROR unless caller may execute keysmith.fname: what a run does on the
 * caller's behalf goes through that function, as the caller.
 */
static void
RequireExecute(const char *fname, int nargs, const Oid *argtypes, Oid caller, const char *why)
{
	List	   *names = list_make2(makeString(pstrdup("keysmith")), makeString(pstrdup(fname)));
	Oid			fn = LookupFuncName(names, nargs, argtypes, false);

	if (pg_proc_aclcheck(fn, caller, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", fname),
				 errdetail("%s", why)));
}

/* The key's id; ERROR if it does not exist (42704) or is destroyed (55000). */
static int32
FindKey(const char *name, bool for_update)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	bool		isnull;

	KsSpiExec(for_update ?
			  "SELECT key_id, state OPERATOR(pg_catalog.=) " KS_KEY_DESTROYED_SQL " FROM keysmith.key"
			  " WHERE name OPERATOR(pg_catalog.=) $1 FOR UPDATE" :
			  "SELECT key_id, state OPERATOR(pg_catalog.=) " KS_KEY_DESTROYED_SQL " FROM keysmith.key"
			  " WHERE name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("key \"%s\" does not exist", name)));
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("key \"%s\" is destroyed", name)));
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

static void
RequireKeyAdmin(int32 key_id, const char *name, Oid caller)
{
	if (!KsHasKeyPrivilege(key_id, KS_PRIV_ADMIN, caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to administer key \"%s\"", name),
				 errdetail("Scheduling a key's rotation needs admin on the key, as rotate_dek does.")));
}

/*
 * keysmith.schedule_key_rotation(key_name, every, reencrypt, window,
 * starting): needs admin on the key (rotate_dek's privilege).
 */
Datum
keysmith_schedule_key_rotation(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	KsScheduleSpec spec = {0};
	KsOwnerSpi	spi;
	TimestampTz next;
	char	   *name;

	KsRequireArg(fcinfo, 0, "key_name");
	KsRequireArg(fcinfo, 1, "every");
	KsRequireArg(fcinfo, 2, "reencrypt");
	KsRequireArg(fcinfo, 4, "starting");
	RequirePrimary("schedule a key rotation");
	KsRequireScheduleCatalog();
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	KsCheckKeyName(name);
	spec.kind = KS_SCHEDULE_KEY;
	spec.target = name;
	spec.every = PG_GETARG_INTERVAL_P(1);
	spec.reencrypt = PG_GETARG_BOOL(2);
	spec.window = PG_ARGISNULL(3) ? NULL : PG_GETARG_INTERVAL_P(3);
	spec.starting = PG_GETARG_TIMESTAMPTZ(4);
	spec.owner = caller;
	KsScheduleCheckPeriod(spec.every, spec.window);

	{
		Oid			argtypes[1] = {TEXTOID};

		RequireExecute("rotate_dek", 1, argtypes, caller,
					   "Each scheduled run calls keysmith.rotate_dek as the role that scheduled it.");
	}
	KsOwnerSpiBegin(&spi);
	RequireKeyAdmin(FindKey(name, true), name, caller);
	next = KsScheduleSet(&spec);
	KsOwnerSpiEnd(&spi);
	PG_RETURN_TIMESTAMPTZ(next);
}

/* keysmith.unschedule_key_rotation(key_name): needs admin on the key. */
Datum
keysmith_unschedule_key_rotation(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	KsOwnerSpi	spi;
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	bool		removed;

	RequirePrimary("unschedule a key rotation");
	KsRequireScheduleCatalog();
	KsCheckKeyName(name);
	KsOwnerSpiBegin(&spi);
	RequireKeyAdmin(FindKey(name, true), name, caller);
	removed = KsScheduleRemove(KS_SCHEDULE_KEY, name);
	KsOwnerSpiEnd(&spi);
	PG_RETURN_BOOL(removed);
}

/* ERROR unless the caller may read and rewrite tbl.col (as reencrypt will). */
static void
RequireColumnRights(Oid relid, const char *col, Oid caller)
{
	AttrNumber	attnum = get_attnum(relid, col);

	if (attnum == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation %s does not exist", col, get_rel_name(relid))));
	{
	/* pg_attribute_aclcheck looks at the column's own ACL only */
	bool		can_select = pg_class_aclcheck(relid, caller, ACL_SELECT) == ACLCHECK_OK ||
		pg_attribute_aclcheck(relid, attnum, caller, ACL_SELECT) == ACLCHECK_OK;
	bool		can_update = pg_class_aclcheck(relid, caller, ACL_UPDATE) == ACLCHECK_OK ||
		pg_attribute_aclcheck(relid, attnum, caller, ACL_UPDATE) == ACLCHECK_OK;

	if (!can_select || !can_update)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to re-encrypt column \"%s\" of relation %s", col, get_rel_name(relid)),
				 errdetail("Registering a column needs SELECT on the table and UPDATE on the column: "
						   "scheduled re-encryption runs with the registering role's privileges.")));
	}
}

/*
 * Check the column's type, and that context_expr is an expression over the
 * table's row, by parsing (not running) it as the caller.
 */
static void
CheckColumnAndContext(Oid relid, const char *col, const char *context_expr)
{
	Oid			types[2] = {OIDOID, NAMEOID};
	Datum		values[2] = {ObjectIdGetDatum(relid), DirectFunctionCall1(namein, CStringGetDatum(col))};

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	KsSpiExec("SELECT keysmith._check_bytea_column($1::pg_catalog.regclass, $2)", 2, types, values, NULL,
			  true, 0, SPI_OK_SELECT);
	if (context_expr)
	{
		char	   *sql = psprintf("SELECT (%s)::pg_catalog.text FROM %s LIMIT 0", context_expr,
								   quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
															  get_rel_name(relid)));

		if (SPI_prepare(sql, 0, NULL) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("context_expr is not an expression over the table's row")));
	}
	SPI_finish();
}

/*
 * keysmith.register_column(tbl, col, key_name, context_expr): the caller
 * needs SELECT and UPDATE on the column and encrypt and decrypt on the key,
 * which is what reencrypt needs of the role it runs as.
 */
Datum
keysmith_register_column(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	Oid			relid;
	char	   *col;
	char	   *key;
	char	   *context_expr;
	KsOwnerSpi	spi;
	int32		key_id;
	Oid			types[5] = {OIDOID, NAMEOID, TEXTOID, TEXTOID, OIDOID};
	Datum		values[5];
	char		nulls[5] = "     ";
	KsCatalog	cat;
	char		why[256];

	KsRequireArg(fcinfo, 0, "tbl");
	KsRequireArg(fcinfo, 1, "col");
	KsRequireArg(fcinfo, 2, "key_name");
	RequirePrimary("register a column");
	KsRequireScheduleCatalog();
	relid = PG_GETARG_OID(0);
	col = NameStr(*PG_GETARG_NAME(1));
	key = text_to_cstring(PG_GETARG_TEXT_PP(2));
	context_expr = PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3));
	KsCheckKeyName(key);
	if (get_rel_relkind(relid) != RELKIND_RELATION && get_rel_relkind(relid) != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("%s is not a table", get_rel_name(relid) ? get_rel_name(relid) : "the relation")));
	if (KsCatalogFind(&cat, why, sizeof(why)) == KS_CATALOG_OK && get_rel_namespace(relid) == cat.schema)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("keysmith's own tables cannot be registered for re-encryption")));
	RequireColumnRights(relid, col, caller);
	{
		Oid			argtypes[4] = {REGCLASSOID, NAMEOID, INT4OID, TEXTOID};

		RequireExecute("_reencrypt_step", 4, argtypes, caller,
					   "Scheduled re-encryption runs keysmith.reencrypt's steps as the registering role.");
	}
	CheckColumnAndContext(relid, col, context_expr);

	KsOwnerSpiBegin(&spi);
	key_id = FindKey(key, false);
	if (!KsHasKeyPrivilege(key_id, KS_PRIV_ENCRYPT, caller) || !KsHasKeyPrivilege(key_id, KS_PRIV_DECRYPT, caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to re-encrypt under key \"%s\"", key),
				 errdetail("Registering a column needs encrypt and decrypt on its key, as rewrap_value does.")));
	values[0] = ObjectIdGetDatum(relid);
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(col));
	values[2] = CStringGetTextDatum(key);
	values[3] = context_expr ? CStringGetTextDatum(context_expr) : (Datum) 0;
	nulls[3] = context_expr ? ' ' : 'n';
	values[4] = ObjectIdGetDatum(caller);
	KsSpiExec("INSERT INTO keysmith.encrypted_column (tbl, col, key_name, context_expr, registered_by)"
			  " VALUES ($1::pg_catalog.regclass, $2, $3, $4, $5::pg_catalog.regrole)"
			  " ON CONFLICT (tbl, col) DO UPDATE SET key_name = excluded.key_name,"
			  "  context_expr = excluded.context_expr, registered_by = excluded.registered_by,"
			  "  registered_at = pg_catalog.now(), attempts = 0, last_error = NULL,"
			  "  next_attempt_at = '-infinity'",
			  5, types, values, nulls, false, 0, SPI_OK_INSERT);
	KsOwnerSpiEnd(&spi);
	PG_RETURN_VOID();
}

/*
 * keysmith.unregister_column(tbl, col): for the role that registered it,
 * the table's owner, or a keysmith admin.
 */
Datum
keysmith_unregister_column(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	Oid			relid = PG_GETARG_OID(0);
	char	   *col = NameStr(*PG_GETARG_NAME(1));
	KsOwnerSpi	spi;
	Oid			types[2] = {OIDOID, NAMEOID};
	Datum		values[2];
	bool		isnull;
	Oid			registrar;
	bool		is_table_owner;

	RequirePrimary("unregister a column");
	KsRequireScheduleCatalog();
	values[0] = ObjectIdGetDatum(relid);
	values[1] = DirectFunctionCall1(namein, CStringGetDatum(col));
	KsOwnerSpiBegin(&spi);
	KsSpiExec("SELECT registered_by::pg_catalog.oid FROM keysmith.encrypted_column"
			  " WHERE tbl OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND col OPERATOR(pg_catalog.=) $2 FOR UPDATE",
			  2, types, values, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		KsOwnerSpiEnd(&spi);
		PG_RETURN_BOOL(false);
	}
	registrar = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
#if PG_VERSION_NUM >= 160000
	is_table_owner = object_ownercheck(RelationRelationId, relid, caller);
#else
	is_table_owner = pg_class_ownercheck(relid, caller);
#endif
	if (!has_privs_of_role(caller, registrar) && !is_table_owner && !KsIsKeysmithAdmin(caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to unregister column \"%s\" of relation %s", col,
						get_rel_name(relid) ? get_rel_name(relid) : "(dropped)"),
				 errdetail("The registering role, the table's owner or a keysmith admin may.")));
	KsSpiExec("DELETE FROM keysmith.encrypted_column"
			  " WHERE tbl OPERATOR(pg_catalog.=) $1::pg_catalog.regclass AND col OPERATOR(pg_catalog.=) $2",
			  2, types, values, NULL, false, 0, SPI_OK_DELETE);
	KsOwnerSpiEnd(&spi);
	PG_RETURN_BOOL(true);
}
