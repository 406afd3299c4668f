/*
 * rotator/rotation_job.c
 *
 * What the rotation engine offers the strategies while a step runs
 * (rotation_job.h): every value is opened as the secret's owner, with the
 * owner's key privileges, never the worker's; and the test step shared by
 * the strategies that prove a credential by logging in with it.
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/builtins.h"

#include "extension/common/errors.h"
#include "kms/secret_options.h"
#include "rotator/rotation_job.h"

void
KsRotationRequireOwner(const KsRotationJob *job)
{
	if (GetUserNameFromId(job->secret.owner, true) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the owner of secret \"%s\" (role OID %u) no longer exists",
						job->secret.name, job->secret.owner)));
}

/* The pending version's ciphertext, and its id in version. */
static bytea *
PendingCiphertext(const KsRotationJob *job, char *version)
{
	bytea	   *ct;

	strlcpy(version, job->pending, KS_UUID_LEN);
	if (!KsSecretFindVersion(job->secret.name, KS_STAGE_NONE, version, &ct, NULL))
		elog(ERROR, "keysmith: the pending version of rotation %s is missing", job->token);
	return ct;
}

char *
KsRotationOpenPending(const KsRotationJob *job)
{
	char		version[KS_UUID_LEN];
	bytea	   *ct = PendingCiphertext(job, version);

	KsRotationRequireOwner(job);
	return KsSecretOpen(job->secret.owner, &job->secret, version, ct);
}

void
KsRotationOpenCredential(const KsRotationJob *job, const char *version, bytea *ct, char *password)
{
	char	   *value;
	char		username[NAMEDATALEN];
	KsError		err;
	KsStatus	st;

	KsRotationRequireOwner(job);
	value = KsSecretOpen(job->secret.owner, &job->secret, version, ct);
	st = KsCredentialParse(value, strlen(value), username, password, &err);
	explicit_bzero(value, strlen(value));
	pfree(value);
	if (st != KS_OK)
		KsReportError(&err);
}

void
KsRotationOpenPendingPassword(const KsRotationJob *job, char *password)
{
	char		version[KS_UUID_LEN];
	bytea	   *ct = PendingCiphertext(job, version);

	KsRotationOpenCredential(job, version, ct, password);
}

const char *
KsRotationLoginTested(KsRotationJob *job)
{
	if (!job->tested)
		elog(ERROR, "keysmith: rotation %s reached test without a login", job->token);
	if (job->test_error)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("%s", job->test_error)));
	return "login with the pending credential used the password";
}
