/*
 * extension/common/errors.h
 *
 * keysmith's own SQLSTATEs (class KS) and the one place that turns a kms/
 * status into an ereport.  Standard codes are used where one fits (22P03
 * for a malformed ciphertext, 42704 for an unknown key, 58P01 for a missing
 * file); docs/sql-reference.md lists them all.
 */
#ifndef KEYSMITH_ERRORS_H
#define KEYSMITH_ERRORS_H

#include "postgres.h"

#include "kms/kms.h"

#define ERRCODE_KS_UNSUPPORTED_FORMAT	MAKE_SQLSTATE('K','S','0','0','1')
#define ERRCODE_KS_UNSUPPORTED_ALGORITHM MAKE_SQLSTATE('K','S','0','0','2')
#define ERRCODE_KS_AUTH_FAILED			MAKE_SQLSTATE('K','S','0','0','3')
#define ERRCODE_KS_UNKNOWN_KEY_VERSION	MAKE_SQLSTATE('K','S','0','0','4')
#define ERRCODE_KS_KMS_FAILURE			MAKE_SQLSTATE('K','S','0','0','5')
#define ERRCODE_KS_KEYFILE_PERMISSIONS	MAKE_SQLSTATE('K','S','0','0','6')
#define ERRCODE_KS_KEK_VERSION_UNKNOWN	MAKE_SQLSTATE('K','S','0','0','7')
#define ERRCODE_KS_UNWRAP_FAILED		MAKE_SQLSTATE('K','S','0','0','8')
#define ERRCODE_KS_VERSION_RETIRED		MAKE_SQLSTATE('K','S','0','0','9')
#define ERRCODE_KS_KEY_DESTROYED		MAKE_SQLSTATE('K','S','0','1','0')
#define ERRCODE_KS_LEASE_TTL_EXCEEDED	MAKE_SQLSTATE('K','S','0','1','1')
#define ERRCODE_KS_LEASE_NOT_ACTIVE		MAKE_SQLSTATE('K','S','0','1','2')
#define ERRCODE_KS_UNTRUSTED_CATALOG	MAKE_SQLSTATE('K','S','0','1','3')
#define ERRCODE_KS_ROTATION_IN_FLIGHT	MAKE_SQLSTATE('K','S','0','1','4')
#define ERRCODE_KS_KMS_UNAVAILABLE		MAKE_SQLSTATE('K','S','0','1','5')
#define ERRCODE_KS_KMS_DENIED			MAKE_SQLSTATE('K','S','0','1','6')
#define ERRCODE_KS_KMS_BAD_RESPONSE		MAKE_SQLSTATE('K','S','0','1','7')
/* a key family used as a plain key, or a member where only a family will do */
#define ERRCODE_KS_KEY_FAMILY			MAKE_SQLSTATE('K','S','0','1','8')
/* key material other than the one this database was made with (extension/keys/kek_check.c) */
#define ERRCODE_KS_WRONG_KEK			MAKE_SQLSTATE('K','S','0','1','9')

/* Report a kms/ failure as an ERROR with the matching SQLSTATE. */
extern void KsReportError(const KsError *err) pg_attribute_noreturn();

#endif							/* KEYSMITH_ERRORS_H */
