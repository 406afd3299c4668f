/*
 * extension/secrets/secrets.c
 *
 * SQL-callable functions of the secrets store: create_secret,
 * put_secret_value, get_secret, get_secret_version, drop_secret,
 * grant_secret, revoke_secret, rotate_secret, cancel_rotation,
 * secret_channel and the visibility test of the views.  They run as their caller (not SECURITY
 * DEFINER): privileges are checked here, the tables are reached as their
 * owner (KsOwnerSpiBegin), values are sealed and opened with the caller's
 * own key privileges, and rotations are left to rotator/rotation.c.  Every
 * value, password and credential they hold is a secret buffer
 * (secret_mem.h), wiped with its memory context on every path, ERRORs
 * included; a value they return is made in the caller's context, which
 * outlives their SPI session.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/uuid.h"

#include "extension/common/args.h"
#include "extension/common/catalog.h"
#include "extension/common/errors.h"
#include "extension/common/owner_spi.h"
#include "extension/common/roles.h"
#include "extension/common/secret_mem.h"
#include "extension/keys/key_store.h"
#include "extension/secrets/secret_store.h"
#include "rotator/rotation.h"
#include "rotator/strategy.h"

PG_FUNCTION_INFO_V1(keysmith_create_secret);
PG_FUNCTION_INFO_V1(keysmith_put_secret_value);
PG_FUNCTION_INFO_V1(keysmith_get_secret);
PG_FUNCTION_INFO_V1(keysmith_get_secret_version);
PG_FUNCTION_INFO_V1(keysmith_drop_secret);
PG_FUNCTION_INFO_V1(keysmith_grant_secret);
PG_FUNCTION_INFO_V1(keysmith_revoke_secret);
PG_FUNCTION_INFO_V1(keysmith_rotate_secret);
PG_FUNCTION_INFO_V1(keysmith_cancel_rotation);
PG_FUNCTION_INFO_V1(keysmith_secret_visible);
PG_FUNCTION_INFO_V1(keysmith_secret_channel);

/* Writers are refused on a standby, with a hint, before anything else. */
static void
RequirePrimary(const char *what)
{
	KsRequirePrimary(what, "Secrets are written and rotated on the primary.");
}

static Datum
UuidDatum(const char *text)
{
	return DirectFunctionCall1(uuid_in, CStringGetDatum(text));
}

/* Values and labels change only between rotations. */
static void
RequireNoRotationInFlight(const KsSecret *s)
{
	char	   *token = KsSecretRotationInFlight(s->name, NULL);

	if (token)
		ereport(ERROR,
				(errcode(ERRCODE_KS_ROTATION_IN_FLIGHT),
				 errmsg("a rotation of secret \"%s\" is in flight", s->name),
				 errdetail("Its token is %s.", token),
				 errhint("Wait for it, or run keysmith.cancel_rotation first.")));
}

/* Refuse a second target for one role: two secrets would fight over it. */
static void
RequireUnmanagedRole(const char *role, const char *secret)
{
	char	   *other = KsSecretTargetingRole(role, secret);

	if (other)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("role \"%s\" is already rotated by secret \"%s\"", role, other)));
}

/*
 * A role credential given by a caller (value, len bytes), for a secret
 * whose strategy holds credentials: parsed, its username one of the
 * secret's roles, and installed there as the caller (who must be able to
 * set that role's password).  Returns the username.
 */
static char *
InstallGivenCredential(const KsSecret *s, const char *value, size_t len, Oid caller)
{
	const KsRotationStrategy *rs = KsRotationStrategyFor(s->opt.strategy);
	char		username[NAMEDATALEN];
	char	   *password = KsSecretAlloc(CurrentMemoryContext, KS_CREDENTIAL_PASSWORD_MAX + 1);
	KsError		err;

	if (KsCredentialParse(value, len, username, password, &err) != KS_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s", err.message),
				 errdetail("A secret of strategy %s holds {\"username\": ..., \"password\": ...}.",
						   KsStrategyName(s->opt.strategy))));
	if (!rs->is_target(&s->opt, username))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the credential's username \"%s\" is not a role of secret \"%s\"", username, s->name)));
	rs->install(s, caller, username, password);
	KsSecretFree(password);
	return pstrdup(username);
}

/*
 * keysmith.create_secret(name, key_name, strategy, options, value) RETURNS uuid
 */
Datum
keysmith_create_secret(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *name;
	char	   *strategy;
	char	   *options;
	KsSecret	s;
	const KsRotationStrategy *rs;
	KsError		err;
	KsOwnerSpi	spi;
	char		version[KS_UUID_LEN];
	text	   *given = NULL;
	const char *value;
	size_t		value_len;
	char	   *credential = NULL;
	char	   *username = NULL;
	bool		generated = false;
	bytea	   *ct;

	KsRequireArg(fcinfo, 0, "name");
	KsRequireArg(fcinfo, 1, "key_name");
	KsRequireArg(fcinfo, 2, "strategy");
	KsRequireArg(fcinfo, 3, "options");
	RequirePrimary("create a secret");
	KsRequireSecretCatalog();

	memset(&s, 0, sizeof(s));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	KsCheckSecretName(name);
	strlcpy(s.name, name, sizeof(s.name));
	{
		char	   *key = text_to_cstring(PG_GETARG_TEXT_PP(1));

		KsCheckKeyName(key);	/* before the copy could cut a long name */
		strlcpy(s.key_name, key, sizeof(s.key_name));
	}
	strategy = text_to_cstring(PG_GETARG_TEXT_PP(2));
	rs = KsRotationStrategyNamed(strategy);
	if (rs == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown rotation strategy \"%s\"", strategy),
				 errhint("Strategies are none, postgres_role, postgres_role_pair, sql and postgres_remote.")));
	s.opt.strategy = rs->strategy;
	options = JsonbToCString(NULL, &PG_GETARG_JSONB_P(3)->root, VARSIZE(PG_GETARG_JSONB_P(3)));
	if (KsSecretOptionsParse(s.opt.strategy, options, strlen(options), &s.opt, &err) != KS_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s", err.message),
				 s.opt.detail ? errdetail("%s", s.opt.detail) : 0,
				 s.opt.hint ? errhint("%s", s.opt.hint) : 0));
	s.owner = caller;
	if (!PG_ARGISNULL(4))
		given = (text *) KsSecretArg(fcinfo, 4);

	/* the caller's own authority over the target, with the caller's rights */
	if (rs->check && !rs->check_reads_store)
		rs->check(&s, caller);
	if (given == NULL && rs->install_initial == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a secret of strategy %s needs a value", KsStrategyName(s.opt.strategy)),
				 errdetail("keysmith generates a first credential only for the role strategies; give the value the target holds now.")));

	KsOwnerSpiBegin(&spi);
	{
		Oid			types[6] = {TEXTOID, TEXTOID, TEXTOID, JSONBOID, OIDOID, TEXTOID};
		Datum		values[6];

		values[0] = CStringGetTextDatum(s.name);
		KsSpiExec("SELECT 1 FROM keysmith.secret WHERE name OPERATOR(pg_catalog.=) $1",
				  1, types, values, NULL, false, 0, SPI_OK_SELECT);
		if (SPI_processed > 0)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("secret \"%s\" already exists", s.name)));
		KsSpiExec("SELECT 1 FROM keysmith.key WHERE name OPERATOR(pg_catalog.=) $1",
				  1, types + 1, (values[1] = CStringGetTextDatum(s.key_name), values + 1), NULL, false, 0,
				  SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("key \"%s\" does not exist", s.key_name)));
		if (rs->check && rs->check_reads_store)
			rs->check(&s, caller);
		if (rs->local_roles)
		{
			const char *roles[2];
			int			nroles = rs->local_roles(&s.opt, roles);

			for (int i = 0; i < nroles; i++)
				RequireUnmanagedRole(roles[i], s.name);
		}

		values[2] = CStringGetTextDatum(KsStrategyName(s.opt.strategy));
		values[3] = PointerGetDatum(PG_GETARG_JSONB_P(3));
		values[4] = ObjectIdGetDatum(caller);
		KsSpiExec("INSERT INTO keysmith.secret (name, key_name, strategy, options, owner_role)"
				  " VALUES ($1, $2, $3, $4, $5::pg_catalog.regrole)",
				  5, types, values, NULL, false, 0, SPI_OK_INSERT);
		for (int p = 0; p < KS_SECRET_PRIV_COUNT; p++)
		{
			Oid			atypes[3] = {TEXTOID, OIDOID, TEXTOID};
			Datum		avalues[3] = {values[0], ObjectIdGetDatum(caller), CStringGetTextDatum(KsSecretPrivNames[p])};

			KsSpiExec("INSERT INTO keysmith.secret_acl (secret_name, grantee, privilege)"
					  " VALUES ($1, $2::pg_catalog.regrole, $3)",
					  3, atypes, avalues, NULL, false, 0, SPI_OK_INSERT);
		}
	}

	/* the first value: generated and installed, or given */
	if (given == NULL)
	{
		char	   *password = KsSecretAlloc(CurrentMemoryContext, KS_PASSWORD_MAX + 1);
		const char *role;

		KsRandomString(password, s.opt.password_length, KsAlnumMixed);
		password[s.opt.password_length] = '\0';
		role = rs->install_initial(&s, caller, password);
		credential = KsSecretAlloc(CurrentMemoryContext, KS_CREDENTIAL_JSON_MAX + 1);
		if (KsCredentialBuild(role, password, credential, KS_CREDENTIAL_JSON_MAX + 1, &value_len, &err) != KS_OK)
			KsReportError(&err);
		KsSecretFree(password);
		value = credential;
		username = pstrdup(role);
		generated = true;
	}
	else
	{
		value = VARDATA_ANY(given);
		value_len = VARSIZE_ANY_EXHDR(given);
		if (rs->credential)
			username = InstallGivenCredential(&s, value, value_len, caller);
	}

	KsNewUuid(version);
	ct = KsSecretSeal(caller, &s, version, value, value_len);
	KsSecretFree(credential);
	KsSecretInsertVersion(&s, version, ct, KS_STAGE_CURRENT, username, KsSecretActor(caller));
	KsSecretEvent(s.name, NULL, version, "created",
				  psprintf("strategy %s, key %s%s", KsStrategyName(s.opt.strategy), s.key_name,
						   generated ? ", credential generated and installed" : ""), KsSecretActor(caller));
	KsOwnerSpiEnd(&spi);
	PG_RETURN_DATUM(UuidDatum(version));
}

/* keysmith.put_secret_value(name, value) RETURNS uuid */
Datum
keysmith_put_secret_value(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	text	   *value = (text *) KsSecretArg(fcinfo, 1);
	KsSecret	s;
	const KsRotationStrategy *rs;
	KsOwnerSpi	spi;
	char		version[KS_UUID_LEN];
	char	   *username = NULL;
	bytea	   *ct;

	RequirePrimary("store a secret value");
	KsRequireSecretCatalog();
	KsOwnerSpiBegin(&spi);
	KsSecretLoadForCaller(name, KS_SECRET_ROTATE, caller, &s, true);
	rs = KsRotationStrategyFor(s.opt.strategy);
	/* a value by hand in a secret keysmith rotates is an override */
	if (rs->check != NULL && !KsSecretHasPrivilege(s.name, KS_SECRET_ADMIN, caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for secret \"%s\"", s.name),
				 errdetail("Storing a value by hand in a secret of strategy %s is an override and needs the admin privilege.",
						   KsStrategyName(s.opt.strategy)),
				 errhint("Use keysmith.rotate_secret to rotate it.")));
	RequireNoRotationInFlight(&s);
	if (rs->credential)
		username = InstallGivenCredential(&s, VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value), caller);
	KsNewUuid(version);
	ct = KsSecretSeal(caller, &s, version, VARDATA_ANY(value), VARSIZE_ANY_EXHDR(value));
	KsSecretInsertVersion(&s, version, ct, KS_STAGE_NONE, username, KsSecretActor(caller));
	KsSecretPromote(&s, version);
	KsSecretEvent(s.name, NULL, version, "put", NULL, KsSecretActor(caller));
	KsOwnerSpiEnd(&spi);
	PG_RETURN_DATUM(UuidDatum(version));
}

/*
 * The value of a version found by stage or id; NULL when none.  It is
 * opened into the function's own memory context: the SPI context, where
 * the ciphertext was read, is gone after KsOwnerSpiEnd.
 */
static Datum
GetValue(FunctionCallInfo fcinfo, const char *name, KsSecretStage stage, const char *version_id)
{
	Oid			caller = GetUserId();
	MemoryContext fn_cxt = CurrentMemoryContext;
	KsSecret	s;
	KsOwnerSpi	spi;
	char		version[KS_UUID_LEN];
	bytea	   *ct;
	text	   *result;
	bool		found;

	KsRequireSecretCatalog();
	KsOwnerSpiBegin(&spi);
	KsSecretLoadForCaller(name, KS_SECRET_READ, caller, &s, false);
	if (version_id)
		strlcpy(version, version_id, sizeof(version));
	found = KsSecretFindVersion(s.name, stage, version, &ct, NULL);
	if (!found)
	{
		KsOwnerSpiEnd(&spi);
		if (version_id)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("secret \"%s\" has no version %s", s.name, version_id),
					 errhint("Versions beyond keep_versions are erased; keysmith.secret_versions lists those kept.")));
		PG_RETURN_NULL();
	}
	result = KsSecretOpenText(caller, &s, version, ct, fn_cxt);
	KsOwnerSpiEnd(&spi);
	PG_RETURN_TEXT_P(result);
}

/* keysmith.get_secret(name, stage DEFAULT 'current') RETURNS text */
Datum
keysmith_get_secret(PG_FUNCTION_ARGS)
{
	char	   *stage_name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	KsSecretStage stage = KsSecretStageFromName(stage_name);

	if (stage == KS_STAGE_NONE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown stage \"%s\"", stage_name),
				 errhint("Stages are %s, %s and %s.", KsSecretStageNames[KS_STAGE_CURRENT],
						 KsSecretStageNames[KS_STAGE_PENDING], KsSecretStageNames[KS_STAGE_PREVIOUS])));
	return GetValue(fcinfo, text_to_cstring(PG_GETARG_TEXT_PP(0)), stage, NULL);
}

/* keysmith.get_secret_version(name, version_id) RETURNS text */
Datum
keysmith_get_secret_version(PG_FUNCTION_ARGS)
{
	char	   *version = DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(1)));

	return GetValue(fcinfo, text_to_cstring(PG_GETARG_TEXT_PP(0)), KS_STAGE_NONE, version);
}

/*
 * keysmith.drop_secret(name): every version is erased with the secret; the
 * audit trail keeps a 'dropped' event.
 */
Datum
keysmith_drop_secret(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	KsSecret	s;
	KsOwnerSpi	spi;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	uint64		versions;

	RequirePrimary("drop a secret");
	KsRequireSecretCatalog();
	KsOwnerSpiBegin(&spi);
	KsSecretLoadForCaller(name, KS_SECRET_ADMIN, caller, &s, true);
	RequireNoRotationInFlight(&s);
	values[0] = CStringGetTextDatum(s.name);
	KsSpiExec("DELETE FROM keysmith.secret_version WHERE secret_name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, false, 0, SPI_OK_DELETE);
	versions = SPI_processed;
	KsSpiExec("DELETE FROM keysmith.secret WHERE name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, false, 0, SPI_OK_DELETE);
	KsSecretEvent(s.name, NULL, NULL, "dropped",
				  psprintf("%llu version(s) erased", (unsigned long long) versions), KsSecretActor(caller));
	KsOwnerSpiEnd(&spi);
	PG_RETURN_VOID();
}

static void
GrantOrRevoke(FunctionCallInfo fcinfo, bool grant)
{
	Oid			caller = GetUserId();
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *role = NameStr(*PG_GETARG_NAME(1));
	char	   *priv = text_to_cstring(PG_GETARG_TEXT_PP(2));
	KsSecret	s;
	KsOwnerSpi	spi;
	Oid			roleid;
	int			p;
	Oid			types[3] = {TEXTOID, OIDOID, TEXTOID};
	Datum		values[3];

	RequirePrimary(grant ? "grant a secret privilege" : "revoke a secret privilege");
	KsRequireSecretCatalog();
	for (p = 0; p < KS_SECRET_PRIV_COUNT; p++)
		if (strcmp(priv, KsSecretPrivNames[p]) == 0)
			break;
	if (p == KS_SECRET_PRIV_COUNT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown secret privilege \"%s\"", priv),
				 errhint("Secret privileges are read, rotate and admin.")));
	roleid = get_role_oid(role, false);
	KsOwnerSpiBegin(&spi);
	KsSecretLoadForCaller(name, KS_SECRET_ADMIN, caller, &s, true);
	values[0] = CStringGetTextDatum(s.name);
	values[1] = ObjectIdGetDatum(roleid);
	values[2] = CStringGetTextDatum(KsSecretPrivNames[p]);
	if (grant)
		KsSpiExec("INSERT INTO keysmith.secret_acl (secret_name, grantee, privilege)"
				  " VALUES ($1, $2::pg_catalog.regrole, $3) ON CONFLICT DO NOTHING",
				  3, types, values, NULL, false, 0, SPI_OK_INSERT);
	else
	{
		KsSpiExec("DELETE FROM keysmith.secret_acl WHERE secret_name OPERATOR(pg_catalog.=) $1"
				  " AND grantee::pg_catalog.oid OPERATOR(pg_catalog.=) $2 AND privilege OPERATOR(pg_catalog.=) $3",
				  3, types, values, NULL, false, 0, SPI_OK_DELETE);
		/* a role that lost read must hear nothing more of the secret */
		if (SPI_processed > 0 && p == KS_SECRET_READ)
			KsSecretNewChannel(s.name);
	}
	KsSecretEvent(s.name, NULL, NULL, grant ? "granted" : "revoked",
				  psprintf("%s %s %s", KsSecretPrivNames[p], grant ? "to" : "from", role), KsSecretActor(caller));
	KsOwnerSpiEnd(&spi);
}

Datum
keysmith_grant_secret(PG_FUNCTION_ARGS)
{
	GrantOrRevoke(fcinfo, true);
	PG_RETURN_VOID();
}

Datum
keysmith_revoke_secret(PG_FUNCTION_ARGS)
{
	GrantOrRevoke(fcinfo, false);
	PG_RETURN_VOID();
}

/* keysmith.rotate_secret(name, token DEFAULT NULL) RETURNS uuid */
Datum
keysmith_rotate_secret(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	KsSecret	s;
	KsOwnerSpi	spi;
	char		token[KS_UUID_LEN] = "";
	bool		given = !PG_ARGISNULL(1);

	KsRequireArg(fcinfo, 0, "name");
	RequirePrimary("rotate a secret");
	KsRequireSecretCatalog();
	if (given)
		strlcpy(token, DatumGetCString(DirectFunctionCall1(uuid_out, PG_GETARG_DATUM(1))), sizeof(token));
	KsOwnerSpiBegin(&spi);
	KsSecretLoadForCaller(text_to_cstring(PG_GETARG_TEXT_PP(0)), KS_SECRET_ROTATE, caller, &s, true);
	KsRotationStart(&s, token, given, KsSecretActor(caller));
	KsOwnerSpiEnd(&spi);
	PG_RETURN_DATUM(UuidDatum(token));
}

/* keysmith.cancel_rotation(name) */
Datum
keysmith_cancel_rotation(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	KsSecret	s;
	KsOwnerSpi	spi;

	RequirePrimary("cancel a rotation");
	KsRequireSecretCatalog();
	KsOwnerSpiBegin(&spi);
	KsSecretLoadForCaller(text_to_cstring(PG_GETARG_TEXT_PP(0)), KS_SECRET_ROTATE, caller, &s, true);
	KsRotationCancel(&s, KsSecretActor(caller));
	KsOwnerSpiEnd(&spi);
	PG_RETURN_VOID();
}

/*
 * keysmith._secret_visible(name): may the querying role see this secret in
 * the views?  keysmith admins see all, others what they hold a privilege on.
 */
Datum
keysmith_secret_visible(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			caller = GetUserId();
	KsOwnerSpi	spi;
	bool		visible;

	if (KsIsKeysmithAdmin(caller))
		PG_RETURN_BOOL(true);
	KsOwnerSpiBegin(&spi);
	visible = KsSecretHasPrivilege(name, KS_SECRET_ANY, caller);
	KsOwnerSpiEnd(&spi);
	PG_RETURN_BOOL(visible);
}

/*
 * keysmith.secret_channel(name) RETURNS text: the channel on which the
 * secret's new versions are announced, for a role that holds read on it
 * (refused like get_secret, so a non-reader learns nothing, not even
 * whether the secret exists).  Knowing the channel is what lets a role
 * LISTEN to it: no other channel carries anything about a secret.  The
 * channel changes at every new version, so a reader asks again after each
 * notification, and a former reader hears at most one more.
 */
Datum
keysmith_secret_channel(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	KsSecret	s;
	KsOwnerSpi	spi;
	char		channel[NAMEDATALEN];
	bool		found;

	KsRequireSecretCatalog();
	KsOwnerSpiBegin(&spi);
	KsSecretLoadForCaller(text_to_cstring(PG_GETARG_TEXT_PP(0)), KS_SECRET_READ, caller, &s, false);
	found = KsSecretChannel(s.name, channel);
	KsOwnerSpiEnd(&spi);
	if (!found)
		elog(ERROR, "keysmith: secret \"%s\" has no notification channel", s.name);
	PG_RETURN_TEXT_P(cstring_to_text(channel));
}
