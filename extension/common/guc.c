/*
 * extension/common/guc.c
 *
 * Every keysmith.* setting, in one table (STYLE rule 4), defined from
 * _PG_init.  Settings that point at credentials are GUC_SUPERUSER_ONLY;
 * settings a worker re-reads are PGC_SIGHUP.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/guc.h"

#include "extension/common/guc.h"
#include "kms/http.h"

char	   *keysmith_local_master_key_file = NULL;
int			keysmith_dek_cache_ttl = 300;
int			keysmith_dek_cache_size = 100000;
int			keysmith_dek_cache_shared_size = 1024;
int			keysmith_dek_cache_stale_grace = 300;
int			keysmith_kms_timeout = 5000;
double		keysmith_max_encryptions_per_dek = 4000000000.0;
int			keysmith_counter_slots = 131072;
bool		keysmith_redact_statements = true;
char	   *keysmith_database_name = NULL;
int			keysmith_reaper_naptime = 1000;
int			keysmith_reaper_lock_timeout = 5000;
int			keysmith_rotation_naptime = 1000;
int			keysmith_rotation_lock_timeout = 5000;
int			keysmith_rotation_step_timeout = 30000;
int			keysmith_rotation_max_attempts = 5;
char	   *keysmith_rotation_test_conninfo = NULL;
char	   *keysmith_rotation_pause_at = NULL;

static void AssignKmsTimeout(int newval, void *extra);

typedef enum KsGucType
{
	KS_GUC_BOOL,
	KS_GUC_INT,
	KS_GUC_REAL,
	KS_GUC_STRING
} KsGucType;

/* One setting: boot, min and max are read as the type says. */
typedef struct KsGuc
{
	KsGucType	type;
	const char *name;
	const char *short_desc;
	const char *long_desc;
	void	   *var;
	double		boot;			/* bool, int, real */
	const char *boot_string;	/* string */
	double		min;
	double		max;
	GucContext	context;
	int			flags;
	GucIntAssignHook int_assign;
} KsGuc;

static const KsGuc Gucs[] = {
	{KS_GUC_STRING, "keysmith.local_master_key_file",
		"Path of the local KMS master key file.",
		"One key per line as <version>:<64 hex characters>; the file must not be accessible by group or others.  A relative path is taken from the data directory.",
		&keysmith_local_master_key_file, 0, "keysmith_master.key", 0, 0, PGC_SUSET, GUC_SUPERUSER_ONLY, NULL},
	{KS_GUC_INT, "keysmith.dek_cache_ttl",
		"How long an unwrapped data key stays cached in a backend.",
		"After this, the next use unwraps it again through the KMS.",
		&keysmith_dek_cache_ttl, 300, NULL, 1, 7 * 24 * 3600, PGC_SUSET, GUC_UNIT_S, NULL},
	/*
	 * Sized for a key per tenant or per person (issue 22): 100,000 hot keys
	 * stay cached by default.  About 1.5 kB per version (dek_cache.c), paid
	 * only for versions a backend has used within keysmith.dek_cache_ttl:
	 * at most about 150 MB for a backend that uses 100,000, and 1.5 GB at
	 * the maximum, which a server with a million hot keys may choose.
	 */
	{KS_GUC_INT, "keysmith.dek_cache_size",
		"Most unwrapped data key versions a backend caches.",
		"When full, the least recently used version is evicted and wiped.  Each cached version takes about 1.5 kB of the backend's memory.",
		&keysmith_dek_cache_size, 100000, NULL, 1, 1000000, PGC_SUSET, 0, NULL},
	{KS_GUC_INT, "keysmith.kms_timeout",
		"Longest a call to an external KMS may take, retries included.",
		"A KMS provider's timeout_ms option overrides it.  Past it the call fails as unavailable (SQLSTATE KS015).",
		&keysmith_kms_timeout, 5000, NULL, 100, 600000, PGC_SUSET, GUC_UNIT_MS, AssignKmsTimeout},
	{KS_GUC_REAL, "keysmith.max_encryptions_per_dek",
		"Encryptions after which a DEK version is replaced by a new one.",
		"GCM with random nonces is safe for at most 2^32 encryptions per key; the count is shared by all backends and survives restarts.",
		&keysmith_max_encryptions_per_dek, 4000000000.0, NULL, 1.0, 4294967296.0, PGC_SUSET, 0, NULL},
	{KS_GUC_INT, "keysmith.counter_slots",
		"Most DEK versions whose encryption count the server keeps in shared memory.",
		"72 bytes of shared memory each.  A version whose count is not kept (its counter reused for another, or lost in a crash) is not encrypted under again: its key rolls over to a new version at its next encryption.  Make it larger than the number of keys that encrypt between restarts.",
		&keysmith_counter_slots, 131072, NULL, 64, 16777216, PGC_POSTMASTER, 0, NULL},
	{KS_GUC_STRING, "keysmith.database_name",
		"Database the lease reaper works in.",
		"Leased roles can be issued only in this database.",
		&keysmith_database_name, 0, "postgres", 0, 0, PGC_POSTMASTER, 0, NULL},
	{KS_GUC_INT, "keysmith.reaper_naptime",
		"How long the lease reaper sleeps between rounds.",
		"An expired lease is revoked within about this long; revoke_lease wakes the reaper at once.",
		&keysmith_reaper_naptime, 1000, NULL, 10, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, NULL},
	{KS_GUC_INT, "keysmith.reaper_lock_timeout",
		"Longest the reaper waits for a lock while revoking one lease.",
		"A revocation that waits longer fails, is recorded in keysmith.leases and retried later, so one blocked lease does not hold up the others.",
		&keysmith_reaper_lock_timeout, 5000, NULL, 1, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, NULL},
	{KS_GUC_INT, "keysmith.rotation_naptime",
		"How long the rotation worker sleeps between rounds.",
		"rotate_secret wakes the worker at commit; the naptime paces retries.",
		&keysmith_rotation_naptime, 1000, NULL, 10, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, NULL},
	{KS_GUC_INT, "keysmith.rotation_lock_timeout",
		"Longest the rotation worker waits for a lock in one rotation step.",
		"A step that waits longer fails, is recorded in keysmith.rotations and retried.",
		&keysmith_rotation_lock_timeout, 5000, NULL, 1, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, NULL},
	{KS_GUC_INT, "keysmith.rotation_step_timeout",
		"Longest any one wait of the rotation worker on something a user controls may take.",
		"A step function, a context_expr batch, a remote server, a KMS call or a test login that takes longer is stopped and counts as a failed attempt; an owner's own connect_timeout or statement_timeout can only shorten it.",
		&keysmith_rotation_step_timeout, 30000, NULL, 100, 3600 * 1000, PGC_SIGHUP, GUC_UNIT_MS, NULL},
	{KS_GUC_INT, "keysmith.rotation_max_attempts",
		"Failed attempts after which a rotation ends failed.",
		"A failing step is retried with backoff (1 s doubling to 5 min); after this many failures the rotation ends 'failed' and current is left working.",
		&keysmith_rotation_max_attempts, 5, NULL, 1, 1000, PGC_SIGHUP, 0, NULL},
	{KS_GUC_STRING, "keysmith.rotation_test_conninfo",
		"Connection string the rotation worker's test step logs in with.",
		"Empty means host=127.0.0.1, this server's port and keysmith.database_name. It must not hold a password; user and password are the new credential's.",
		&keysmith_rotation_test_conninfo, 0, "", 0, 0, PGC_SIGHUP, GUC_SUPERUSER_ONLY, NULL},
	{KS_GUC_STRING, "keysmith.rotation_pause_at",
		"Testing aid: the rotation worker stops at this point of a step.",
		"One of create:after, set:after, test:after, finish:after (after the step's side effect, before its state is committed); empty in production.  Crash drills kill the server while the worker waits there.",
		&keysmith_rotation_pause_at, 0, "", 0, 0, PGC_SIGHUP, GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE, NULL},
	{KS_GUC_BOOL, "keysmith.redact_statements",
		"Redacts constants in logged statements that call keysmith functions taking secrets.",
		"Statement text in the server log (log_statement, log_min_duration_statement, log_min_error_statement) keeps its shape; string and numeric constants become '***'.",
		&keysmith_redact_statements, 1, NULL, 0, 0, PGC_SUSET, 0, NULL},
	{KS_GUC_INT, "keysmith.dek_cache_shared_size",
		"Unwrapped data keys of external KMSs cached for the whole cluster.",
		"0 turns the shared cache off: every backend then unwraps through the KMS.",
		&keysmith_dek_cache_shared_size, 1024, NULL, 0, 65536, PGC_POSTMASTER, 0, NULL},
	{KS_GUC_INT, "keysmith.dek_cache_stale_grace",
		"How long past its TTL a shared cached data key may still be used while its KMS is unavailable.",
		"Only when the KMS does not answer (KS015); a KMS that denies the key revokes at once.  0: never.",
		&keysmith_dek_cache_stale_grace, 300, NULL, 0, 86400, PGC_SIGHUP, GUC_UNIT_S, NULL},
};

/* The HTTP providers read their default timeout from kms/http.c. */
static void
AssignKmsTimeout(int newval, void *extra)
{
	KsHttpSetDefaultTimeout(newval);
}

void
KsGucsDefine(void)
{
	for (size_t i = 0; i < lengthof(Gucs); i++)
	{
		const KsGuc *g = &Gucs[i];

		/*
		 * A PGC_POSTMASTER variable can only be defined at preload; defining
		 * it later is a FATAL error, and _PG_init must reach its own clear
		 * refusal.
		 */
		if (g->context == PGC_POSTMASTER && !process_shared_preload_libraries_in_progress)
			continue;
		switch (g->type)
		{
			case KS_GUC_BOOL:
				DefineCustomBoolVariable(g->name, g->short_desc, g->long_desc, (bool *) g->var,
										 g->boot != 0, g->context, g->flags, NULL, NULL, NULL);
				break;
			case KS_GUC_INT:
				DefineCustomIntVariable(g->name, g->short_desc, g->long_desc, (int *) g->var,
										(int) g->boot, (int) g->min, (int) g->max, g->context,
										g->flags, NULL, g->int_assign, NULL);
				break;
			case KS_GUC_REAL:
				DefineCustomRealVariable(g->name, g->short_desc, g->long_desc, (double *) g->var,
										 g->boot, g->min, g->max, g->context, g->flags,
										 NULL, NULL, NULL);
				break;
			case KS_GUC_STRING:
				DefineCustomStringVariable(g->name, g->short_desc, g->long_desc, (char **) g->var,
										   g->boot_string, g->context, g->flags, NULL, NULL, NULL);
				break;
		}
	}
	MarkGUCPrefixReserved("keysmith");
}
