/*
 * extension/common/errors.c
 *
 * The one place that maps kms/ statuses to SQLSTATEs, with the hint an
 * operator needs for each (see extension/common/errors.h).
 */
#include "postgres.h"

#include "miscadmin.h"

#include "extension/common/errors.h"

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
