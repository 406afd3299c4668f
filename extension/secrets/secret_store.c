/*
 * extension/secrets/secret_store.c
 *
 * The secrets store under the SQL functions and the rotation engine.  A
 * version's value is sealed with keysmith's own envelope under the secret's
 * key, with the privileges of the role acting (the caller, or the secret's
 * owner when the rotation worker acts for it), and bound to the secret's
 * name and the version id through the context, so a ciphertext copied to
 * another secret or version does not open.  The tables are the extension
 * owner's; callers reach them through KsOwnerSpiBegin.
 *
 * Every event and version records the acting role its caller names
 * (KsSecretActor): there is no process-wide "current actor", so nothing one
 * secret's code does in a process can change whom another's records name.
 * A new current version is announced on the secret's own notification
 * channel, which only its readers are told (keysmith.secret_channel), with
 * a payload that names nothing; the secret then gets a new channel, so a
 * role that lost read hears at most one more announcement.
 */
#include "postgres.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/json.h"
#include "utils/uuid.h"

#include "extension/common/catalog.h"
#include "extension/common/owner_spi.h"
#include "extension/common/roles.h"
#include "extension/common/secret_mem.h"
#include "extension/keys/values.h"
#include "extension/secrets/rotation_state.h"
#include "extension/secrets/secret_store.h"

char *
KsSecretActor(Oid role)
{
	char	   *name = GetUserNameFromId(role, true);

	return name ? name : psprintf("(role OID %u)", role);
}

const char *const KsSecretPrivNames[KS_SECRET_PRIV_COUNT] = {"read", "rotate", "admin"};

const char *const KsSecretTables[] = {"secret", "secret_version", "secret_acl", "rotation", "rotation_event"};
const int	KsSecretTableCount = lengthof(KsSecretTables);

void
KsRequireSecretCatalog(void)
{
	KsRequireWorkerCatalog(KsSecretTables, KsSecretTableCount, "secrets", 0, 4);
}

void
KsCheckSecretName(const char *name)
{
	size_t		len = strlen(name);
	bool		ok = len >= 1 && len <= KS_SECRET_NAME_MAX;

	for (size_t i = 0; ok && i < len; i++)
	{
		char		c = name[i];

		ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			strchr("_.:/@-", c) != NULL;
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid secret name"),
				 errdetail("A secret name is 1 to 128 characters from A-Z, a-z, 0-9 and _.:/@-.")));
}

static char *
GetText(int col)
{
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col);
}

bool
KsSecretLoad(const char *name, KsSecret *s, bool for_update)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};
	char	   *strategy;
	char	   *options;
	bool		isnull;
	KsError		err;

#define SECRET_BY_NAME "SELECT key_name, strategy, options::pg_catalog.text, owner_role::pg_catalog.oid" \
	"  FROM keysmith.secret WHERE name OPERATOR(pg_catalog.=) $1"
	KsSpiExec(for_update ? SECRET_BY_NAME " FOR UPDATE" : SECRET_BY_NAME,
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	memset(s, 0, sizeof(*s));
	strlcpy(s->name, name, sizeof(s->name));
	strlcpy(s->key_name, GetText(1), sizeof(s->key_name));
	strategy = GetText(2);
	options = GetText(3);
	s->owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	/* stored options were checked when written; a failure here is damage */
	if (KsStrategyFromName(strategy, &s->opt.strategy, &err) != KS_OK ||
		KsSecretOptionsParse(s->opt.strategy, options, strlen(options), &s->opt, &err) != KS_OK)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("secret \"%s\" has unusable stored options: %s", name, err.message)));
	return true;
}

bool
KsSecretHasPrivilege(const char *name, KsSecretPriv priv, Oid role)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];

	if (superuser_arg(role))
		return true;
	values[0] = CStringGetTextDatum(name);
	values[1] = priv == KS_SECRET_ANY ? (Datum) 0 : CStringGetTextDatum(KsSecretPrivNames[priv]);
	KsSpiExec("SELECT grantee::pg_catalog.oid FROM keysmith.secret_acl"
			  " WHERE secret_name OPERATOR(pg_catalog.=) $1"
			  "   AND ($2 IS NULL OR privilege OPERATOR(pg_catalog.=) $2)",
			  2, types, values, priv == KS_SECRET_ANY ? " n" : "  ", false, 0, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Oid			grantee = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));

		if (has_privs_of_role(role, grantee))
			return true;
	}
	return false;
}

void
KsSecretLoadForCaller(const char *name, KsSecretPriv priv, Oid caller, KsSecret *s, bool for_update)
{
	bool		found;

	KsCheckSecretName(name);
	found = KsSecretLoad(name, s, for_update);
	if (!found && KsIsKeysmithAdmin(caller))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("secret \"%s\" does not exist", name)));
	if (!found || !KsSecretHasPrivilege(name, priv, caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for secret \"%s\"", name),
				 errdetail("This needs the %s privilege on the secret.", KsSecretPrivNames[priv]),
				 errhint("A role with admin on the secret can run keysmith.grant_secret.")));
}

void
KsNewUuid(char *out)
{
	Datum		u = OidFunctionCall0(F_GEN_RANDOM_UUID);	/* as issue_role does */

	strlcpy(out, DatumGetCString(DirectFunctionCall1(uuid_out, u)), KS_UUID_LEN);
}

static void
SecretContext(const KsSecret *s, const char *version_id, KsContext *ctx)
{
	char	   *c = psprintf("keysmith secret:%s:%s", s->name, version_id);

	ctx->present = true;
	ctx->data = (const uint8 *) c;
	ctx->len = strlen(c);
}

bytea *
KsSecretSeal(Oid user, const KsSecret *s, const char *version_id, const char *value, size_t len)
{
	Oid			save_user;
	int			save_sec;
	KsContext	ctx;
	bytea	   *ct;

	SecretContext(s, version_id, &ctx);
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(user, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	ct = KsEncryptBytes(s->key_name, strlen(s->key_name), (const uint8 *) value, len, &ctx);
	SetUserIdAndSecContext(save_user, save_sec);
	return ct;
}

text *
KsSecretOpenText(Oid user, const KsSecret *s, const char *version_id, bytea *ct, MemoryContext cxt)
{
	Oid			save_user;
	int			save_sec;
	KsContext	ctx;
	MemoryContext old;
	bytea	   *pt;

	SecretContext(s, version_id, &ctx);
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(user, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	old = MemoryContextSwitchTo(cxt);
	pt = KsDecryptBytes((const uint8 *) VARDATA_ANY(ct), VARSIZE_ANY_EXHDR(ct), &ctx);
	MemoryContextSwitchTo(old);
	SetUserIdAndSecContext(save_user, save_sec);
	/* stored from text, so it is text: the value as given, no copy */
	return (text *) pt;
}

char *
KsSecretOpen(Oid user, const KsSecret *s, const char *version_id, bytea *ct)
{
	text	   *pt = KsSecretOpenText(user, s, version_id, ct, CurrentMemoryContext);
	size_t		len = VARSIZE(pt) - VARHDRSZ;
	char	   *out = palloc(len + 1);

	memcpy(out, VARDATA(pt), len);
	out[len] = '\0';
	KsSecretFree(pt);
	return out;
}

void
KsSecretInsertVersion(const KsSecret *s, const char *version_id, bytea *ct, KsSecretStage stage,
					  const char *username, const char *actor)
{
	Oid			types[6] = {UUIDOID, TEXTOID, BYTEAOID, TEXTOID, NAMEOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', stage != KS_STAGE_NONE ? ' ' : 'n', username ? ' ' : 'n', ' '};

	values[0] = DirectFunctionCall1(uuid_in, CStringGetDatum(version_id));
	values[1] = CStringGetTextDatum(s->name);
	values[2] = PointerGetDatum(ct);
	values[3] = stage != KS_STAGE_NONE ? CStringGetTextDatum(KsSecretStageNames[stage]) : (Datum) 0;
	values[4] = username ? DirectFunctionCall1(namein, CStringGetDatum(username)) : (Datum) 0;
	values[5] = CStringGetTextDatum(actor);
	KsSpiExec("INSERT INTO keysmith.secret_version (version_id, secret_name, ciphertext, stage, username, created_by)"
			  " VALUES ($1, $2, $3, $4, $5, $6)", 6, types, values, nulls, false, 0, SPI_OK_INSERT);
}

bool
KsSecretFindVersion(const char *name, KsSecretStage stage, char *version_id, bytea **ct, char *username)
{
	bool		by_stage = stage != KS_STAGE_NONE;
	Oid			types[2] = {TEXTOID, by_stage ? TEXTOID : UUIDOID};
	Datum		values[2];
	bool		isnull;
	Datum		d;

	values[0] = CStringGetTextDatum(name);
	values[1] = by_stage ? CStringGetTextDatum(KsSecretStageNames[stage])
		: DirectFunctionCall1(uuid_in, CStringGetDatum(version_id));
#define VERSION_BY "SELECT version_id::pg_catalog.text, ciphertext, coalesce(username::pg_catalog.text, '')" \
	"  FROM keysmith.secret_version WHERE secret_name OPERATOR(pg_catalog.=) $1 AND "
	KsSpiExec(by_stage ? VERSION_BY "stage OPERATOR(pg_catalog.=) $2" : VERSION_BY "version_id OPERATOR(pg_catalog.=) $2",
			  2, types, values, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	strlcpy(version_id, GetText(1), KS_UUID_LEN);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (ct)
		*ct = DatumGetByteaPCopy(d);
	if (username)
		strlcpy(username, GetText(3), NAMEDATALEN);
	return true;
}

/*
 * Does the installed catalog give secrets channels of their own (0.10)?
 * A newer keysmith.so runs on an older catalog until ALTER EXTENSION
 * UPDATE: then nothing is announced, since 0.9's one channel for all told
 * every role every secret's name.
 */
static bool
CatalogHasChannels(void)
{
	KsCatalog	cat;
	char		why[256];

	return KsCatalogFind(&cat, why, sizeof(why)) == KS_CATALOG_OK && cat.version >= 10;
}

/*
 * Tell the secret's channel that event happened, then give the secret a
 * new channel (as the tables' owner).  The payload, {"event": "<event>"},
 * names neither the secret nor a version: whoever still listens on the old
 * channel (a role that lost read, or anyone it handed the name to) learns
 * that one more thing happened, and nothing after it.  Readers ask
 * keysmith.secret_channel again and LISTEN there.  Nothing listens on the
 * new channel yet, so nothing is sent on it.  The caller holds the
 * secret's row locked, so two transactions cannot both move it from the
 * same channel.
 */
static void
MoveChannel(const char *name, const char *event)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	StringInfoData payload;

	if (!CatalogHasChannels())
		return;
	initStringInfo(&payload);
	appendStringInfoString(&payload, "{\"event\": ");
	escape_json(&payload, event);
	appendStringInfoChar(&payload, '}');
	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(payload.data);
	/* the old channel hears it last: it is sent before the new one is set */
	KsSpiExec("SELECT pg_catalog.pg_notify(notify_channel, $2) FROM keysmith.secret"
			  " WHERE name OPERATOR(pg_catalog.=) $1",
			  2, types, values, NULL, false, 0, SPI_OK_SELECT);
	/* the column's default is the one generator of channels */
	KsSpiExec("UPDATE keysmith.secret SET notify_channel = DEFAULT WHERE name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, false, 0, SPI_OK_UPDATE);
}

void
KsSecretPromote(const KsSecret *s, const char *version_id)
{
	Oid			types[5] = {TEXTOID, UUIDOID, INT4OID, TEXTOID, TEXTOID};
	Datum		values[5];

	values[0] = CStringGetTextDatum(s->name);
	values[1] = DirectFunctionCall1(uuid_in, CStringGetDatum(version_id));
	values[2] = Int32GetDatum(s->opt.keep_versions);
	values[3] = CStringGetTextDatum(KsSecretStageNames[KS_STAGE_CURRENT]);
	values[4] = CStringGetTextDatum(KsSecretStageNames[KS_STAGE_PREVIOUS]);

	/* one label at a time, so UNIQUE (secret_name, stage) holds throughout */
	KsSpiExec("UPDATE keysmith.secret_version SET stage = NULL"
			  " WHERE secret_name OPERATOR(pg_catalog.=) $1 AND stage OPERATOR(pg_catalog.=) $5"
			  "   AND version_id OPERATOR(pg_catalog.<>) $2",
			  5, types, values, NULL, false, 0, SPI_OK_UPDATE);
	KsSpiExec("UPDATE keysmith.secret_version SET stage = $5"
			  " WHERE secret_name OPERATOR(pg_catalog.=) $1 AND stage OPERATOR(pg_catalog.=) $4"
			  "   AND version_id OPERATOR(pg_catalog.<>) $2",
			  5, types, values, NULL, false, 0, SPI_OK_UPDATE);
	KsSpiExec("UPDATE keysmith.secret_version SET stage = $4"
			  " WHERE secret_name OPERATOR(pg_catalog.=) $1 AND version_id OPERATOR(pg_catalog.=) $2",
			  4, types, values, NULL, false, 0, SPI_OK_UPDATE);
	if (SPI_processed != 1)
		elog(ERROR, "keysmith: version %s of secret \"%s\" vanished", version_id, s->name);
	KsSpiExec("UPDATE keysmith.secret SET last_rotated_at = pg_catalog.now()"
			  " WHERE name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, false, 0, SPI_OK_UPDATE);
	/* unlabelled versions beyond keep_versions, oldest first */
	KsSpiExec("DELETE FROM keysmith.secret_version"
			  " WHERE secret_name OPERATOR(pg_catalog.=) $1 AND stage IS NULL"
			  "   AND version_id OPERATOR(pg_catalog.<>) ALL (ARRAY("
			  "       SELECT v.version_id FROM keysmith.secret_version v"
			  "        WHERE v.secret_name OPERATOR(pg_catalog.=) $1 AND v.stage IS NULL"
			  "        ORDER BY v.created_at DESC LIMIT $3))",
			  3, types, values, NULL, false, 0, SPI_OK_DELETE);

	/* the row is locked since the UPDATE above: no other channel slips in */
	MoveChannel(s->name, "rotated");
}

bool
KsSecretChannel(const char *name, char *channel)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	if (!CatalogHasChannels())
		return false;
	KsSpiExec("SELECT notify_channel FROM keysmith.secret WHERE name OPERATOR(pg_catalog.=) $1",
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	strlcpy(channel, GetText(1), NAMEDATALEN);
	return true;
}

void
KsSecretNewChannel(const char *name)
{
	MoveChannel(name, "channel_changed");
}

void
KsSecretEvent(const char *secret, const char *token, const char *version_id, const char *event,
			  const char *detail, const char *actor)
{
	Oid			types[6] = {TEXTOID, UUIDOID, UUIDOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		values[6];
	char		nulls[6] = {' ', token ? ' ' : 'n', version_id ? ' ' : 'n', ' ', ' ', detail ? ' ' : 'n'};

	values[0] = CStringGetTextDatum(secret);
	values[1] = token ? DirectFunctionCall1(uuid_in, CStringGetDatum(token)) : (Datum) 0;
	values[2] = version_id ? DirectFunctionCall1(uuid_in, CStringGetDatum(version_id)) : (Datum) 0;
	values[3] = CStringGetTextDatum(event);
	values[4] = CStringGetTextDatum(actor);
	values[5] = detail ? CStringGetTextDatum(detail) : (Datum) 0;
	KsSpiExec("INSERT INTO keysmith.rotation_event (secret_name, token, version_id, event, acting_role, detail)"
			  " VALUES ($1, $2, $3, $4, $5, $6)", 6, types, values, nulls, false, 0, SPI_OK_INSERT);
}

char *
KsSecretRotationInFlight(const char *name, char **state)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(name)};

	KsSpiExec("SELECT token::pg_catalog.text, state FROM keysmith.rotation"
			  " WHERE secret_name OPERATOR(pg_catalog.=) $1"
			  "   AND state OPERATOR(pg_catalog.=) ANY (" KS_ROT_IN_FLIGHT_SQL ")",
			  1, types, values, NULL, false, 0, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return NULL;
	if (state)
		*state = pstrdup(GetText(2));
	return pstrdup(GetText(1));
}

char *
KsSecretTargetingRole(const char *role, const char *except)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2] = {CStringGetTextDatum(role), CStringGetTextDatum(except)};

	KsSpiExec("SELECT name FROM keysmith.secret"
			  " WHERE name OPERATOR(pg_catalog.<>) $2"
			  "   AND strategy OPERATOR(pg_catalog.<>) 'postgres_remote'"
			  "   AND ((options OPERATOR(pg_catalog.->>) 'role') OPERATOR(pg_catalog.=) $1"
			  "        OR (options OPERATOR(pg_catalog.->) 'roles') OPERATOR(pg_catalog.?) $1)"
			  " LIMIT 1",
			  2, types, values, NULL, false, 0, SPI_OK_SELECT);
	return SPI_processed > 0 ? pstrdup(GetText(1)) : NULL;
}
