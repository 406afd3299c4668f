/*
 * extension/keysmith.c
 *
 * Module entry point: _PG_init refuses to run unless keysmith is being
 * preloaded, defines every GUC (they all live here), and reserves the
 * "keysmith." prefix.  Also the one place that maps kms/ statuses to
 * SQLSTATEs.
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"

#include "utils/jsonb.h"
#include "keysmith.h"
#include "dek_shared.h"
#include "../kms/http.h"
#include "../rotator/worker.h"

PG_MODULE_MAGIC;

char	   *keysmith_local_master_key_file = NULL;
int			keysmith_dek_cache_ttl = 300;
int			keysmith_dek_cache_size = 1000;
int			keysmith_kms_timeout = 5000;
double		keysmith_max_encryptions_per_dek = 4000000000.0;
char	   *keysmith_database_name = NULL;
int			keysmith_reaper_naptime = 1000;
int			keysmith_reaper_lock_timeout = 5000;
int			keysmith_rotation_naptime = 1000;
int			keysmith_rotation_lock_timeout = 5000;
int			keysmith_rotation_step_timeout = 30000;
int			keysmith_rotation_max_attempts = 5;
char	   *keysmith_rotation_test_conninfo = NULL;
char	   *keysmith_rotation_pause_at = NULL;

void		_PG_init(void);
static int	HttpInterrupted(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* keysmith's shared memory: the encryption counters and the reaper's state. */
static void
KsShmemRequest(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	KsCountersShmemRequest();
	KsWorkersShmemRequest();
	KsSharedDekShmemRequest();
}

static void
KsShmemStartup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	KsCountersShmemStartup();
	KsWorkersShmemStartup();
	KsSharedDekShmemStartup();
}

static void
AssignKmsTimeout(int newval, void *extra)
{
	KsHttpSetDefaultTimeout(newval);
}

static void
DefineGucs(void)
{
	DefineCustomStringVariable("keysmith.local_master_key_file",
							   "Path of the local KMS master key file.",
							   "One key per line as <version>:<64 hex characters>; the file "
							   "must not be accessible by group or others.  A relative "
							   "path is taken from the data directory.",
							   &keysmith_local_master_key_file,
							   "keysmith_master.key",
							   PGC_SUSET,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("keysmith.dek_cache_ttl",
							"How long an unwrapped data key stays cached in a backend.",
							"After this, the next use unwraps it again through the KMS.",
							&keysmith_dek_cache_ttl,
							300, 1, 7 * 24 * 3600,
							PGC_SUSET,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("keysmith.dek_cache_size",
							"Most unwrapped data key versions a backend caches.",
							"When full, the least recently used version is evicted and wiped.",
							&keysmith_dek_cache_size,
							1000, 1, 100000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("keysmith.kms_timeout",
							"Longest a call to an external KMS may take, retries included.",
							"A KMS provider's timeout_ms option overrides it.  Past it the call "
							"fails as unavailable (SQLSTATE KS015).",
							&keysmith_kms_timeout,
							5000, 100, 600000,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, AssignKmsTimeout, NULL);

	DefineCustomRealVariable("keysmith.max_encryptions_per_dek",
							 "Encryptions after which a DEK version is replaced by a new one.",
							 "GCM with random nonces is safe for at most 2^32 encryptions per key; "
							 "the count is shared by all backends and survives restarts.",
							 &keysmith_max_encryptions_per_dek,
							 4000000000.0, 1.0, 4294967296.0,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	/*
	 * A PGC_POSTMASTER variable can only be defined at preload; defining it
	 * later is a FATAL error, and _PG_init must reach its own clear refusal.
	 */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomStringVariable("keysmith.database_name",
								   "Database the lease reaper works in.",
								   "Leased roles can be issued only in this database.",
								   &keysmith_database_name,
								   "postgres",
								   PGC_POSTMASTER,
								   0,
								   NULL, NULL, NULL);

	DefineCustomIntVariable("keysmith.reaper_naptime",
							"How long the lease reaper sleeps between rounds.",
							"An expired lease is revoked within about this long; "
							"revoke_lease wakes the reaper at once.",
							&keysmith_reaper_naptime,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("keysmith.reaper_lock_timeout",
							"Longest the reaper waits for a lock while revoking one lease.",
							"A revocation that waits longer fails, is recorded in keysmith.leases "
							"and retried later, so one blocked lease does not hold up the others.",
							&keysmith_reaper_lock_timeout,
							5000, 1, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("keysmith.rotation_naptime",
							"How long the rotation worker sleeps between rounds.",
							"rotate_secret wakes the worker at commit; the naptime paces retries.",
							&keysmith_rotation_naptime,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("keysmith.rotation_lock_timeout",
							"Longest the rotation worker waits for a lock in one rotation step.",
							"A step that waits longer fails, is recorded in keysmith.rotations and retried.",
							&keysmith_rotation_lock_timeout,
							5000, 1, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("keysmith.rotation_step_timeout",
							"Longest any one wait of the rotation worker on something a user controls may take.",
							"A step function, a context_expr batch, a remote server, a KMS call or a test login "
							"that takes longer is stopped and counts as a failed attempt; an owner's own "
							"connect_timeout or statement_timeout can only shorten it.",
							&keysmith_rotation_step_timeout,
							30000, 100, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("keysmith.rotation_max_attempts",
							"Failed attempts after which a rotation ends failed.",
							"A failing step is retried with backoff (1 s doubling to 5 min); "
							"after this many failures the rotation ends 'failed' and current is left working.",
							&keysmith_rotation_max_attempts,
							5, 1, 1000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("keysmith.rotation_test_conninfo",
							   "Connection string the rotation worker's test step logs in with.",
							   "Empty means host=127.0.0.1, this server's port and keysmith.database_name. "
							   "It must not hold a password; user and password are the new credential's.",
							   &keysmith_rotation_test_conninfo,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("keysmith.rotation_pause_at",
							   "Testing aid: the rotation worker stops at this point of a step.",
							   "One of create:after, set:after, test:after, finish:after (after the step's "
							   "side effect, before its state is committed); empty in production.  "
							   "Crash drills kill the server while the worker waits there.",
							   &keysmith_rotation_pause_at,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	DefineCustomBoolVariable("keysmith.redact_statements",
							 "Redacts constants in logged statements that call keysmith functions taking secrets.",
							 "Statement text in the server log (log_statement, log_min_duration_statement, "
							 "log_min_error_statement) keeps its shape; string and numeric constants become '***'.",
							 &keysmith_redact_statements,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);

	KsSharedDekDefineGucs();

	MarkGUCPrefixReserved("keysmith");
}

void
_PG_init(void)
{
	/* pg_upgrade loads libraries only to check they exist: do nothing */
	if (IsBinaryUpgrade)
		return;

	DefineGucs();

	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("keysmith must be loaded via shared_preload_libraries"),
				 errhint("Add keysmith to shared_preload_libraries in postgresql.conf and restart the server.")));

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = KsShmemRequest;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = KsShmemStartup;
	KsAuthInit();
	KsRedactInit();
	KsWorkersRegister();
	KsHttpSetInterruptCheck(HttpInterrupted);
}

int
KsJsonbOptions(Jsonb *options, const char *what, int max, char **names, char **values)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			n = 0;

	if (!JB_ROOT_IS_OBJECT(options))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", what)));
	it = JsonbIteratorInit(&options->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		if (n == max)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s take at most %d members", what, max)));
		names[n] = pnstrdup(v.val.string.val, v.val.string.len);
		(void) JsonbIteratorNext(&it, &v, true);
		values[n] = v.type == jbvString ? pnstrdup(v.val.string.val, v.val.string.len) : NULL;
		n++;
	}
	return n;
}

/*
 * libcurl's progress callback asks this: a pending cancel or termination
 * stops a KMS call (it is reported by CHECK_FOR_INTERRUPTS afterwards; a
 * callback must never throw through libcurl).
 */
static int
HttpInterrupted(void)
{
	return InterruptPending && (QueryCancelPending || ProcDiePending);
}

/*
 * One SQLSTATE per kind of failure, so callers can tell them apart without
 * parsing messages.  The message from kms/ names no secret.
 */
void
KsReportError(const KsError *err)
{
	int			code;
	const char *hint = NULL;

	switch (err->status)
	{
		case KS_ERR_CT_TRUNCATED:
			code = ERRCODE_INVALID_BINARY_REPRESENTATION;
			break;
		case KS_ERR_CT_VERSION:
			code = ERRCODE_KS_UNSUPPORTED_FORMAT;
			break;
		case KS_ERR_CT_ALGORITHM:
			code = ERRCODE_KS_UNSUPPORTED_ALGORITHM;
			break;
		case KS_ERR_AUTH_FAILED:
			code = ERRCODE_KS_AUTH_FAILED;
			hint = "The value was altered, truncated or extended, or the context differs from the one used to encrypt it.";
			break;
		case KS_ERR_TOO_LARGE:
			code = ERRCODE_PROGRAM_LIMIT_EXCEEDED;
			break;
		case KS_ERR_KEYFILE_MISSING:
			code = ERRCODE_UNDEFINED_FILE;
			hint = "Create the file (one line <version>:<64 hex characters>, mode 0600), or point keysmith.local_master_key_file (or the provider's master_key_file) at one.";
			break;
		case KS_ERR_KEYFILE_UNREADABLE:
			code = ERRCODE_IO_ERROR;
			hint = "The file must be a regular file readable by the server's operating-system user.";
			break;
		case KS_ERR_KEYFILE_MALFORMED:
			code = ERRCODE_CONFIG_FILE_ERROR;
			hint = "Each key line must be <version>:<64 hex characters>; '#' starts a comment.";
			break;
		case KS_ERR_KEYFILE_PERMISSIONS:
			code = ERRCODE_KS_KEYFILE_PERMISSIONS;
			hint = "Run chmod 600 on the file.";
			break;
		case KS_ERR_KEK_VERSION_UNKNOWN:
			code = ERRCODE_KS_KEK_VERSION_UNKNOWN;
			hint = "Restore the missing master key version to the master key file.";
			break;
		case KS_ERR_WRAP_MALFORMED:
		case KS_ERR_UNWRAP_FAILED:
			code = ERRCODE_KS_UNWRAP_FAILED;
			break;
		case KS_ERR_INVALID_NAME:
			code = ERRCODE_INVALID_NAME;
			break;
		case KS_ERR_PROVIDER_UNKNOWN:
		case KS_ERR_INVALID_ARGUMENT:
			code = ERRCODE_INVALID_PARAMETER_VALUE;
			break;
		case KS_ERR_NO_MEMORY:
			code = ERRCODE_OUT_OF_MEMORY;
			break;
		case KS_ERR_INTERRUPTED:
			/* a KMS call stopped by a cancel or a termination reports that */
			CHECK_FOR_INTERRUPTS();
			/* nothing was pending after all: the KMS did not answer */
			code = ERRCODE_KS_KMS_UNAVAILABLE;
			break;
		case KS_ERR_KMS_UNAVAILABLE:
			code = ERRCODE_KS_KMS_UNAVAILABLE;
			hint = "The KMS provider named in the message did not answer in time; data keys already cached keep working. Check its URL, the network and its timeout_ms (keysmith.kms_providers).";
			break;
		case KS_ERR_KMS_DENIED:
			code = ERRCODE_KS_KMS_DENIED;
			hint = "The KMS refused: check the credentials the provider's options name and the KMS's policy for this key.";
			break;
		case KS_ERR_KMS_BAD_RESPONSE:
			code = ERRCODE_KS_KMS_BAD_RESPONSE;
			hint = "The KMS answered something keysmith cannot use: check that the provider's URL points at the KMS it names.";
			break;
		case KS_ERR_CRYPTO:
		default:
			code = ERRCODE_KS_KMS_FAILURE;
			break;
	}
	ereport(ERROR,
			(errcode(code),
			 errmsg("%s", err->message),
			 hint ? errhint("%s", hint) : 0));
	pg_unreachable();
}
