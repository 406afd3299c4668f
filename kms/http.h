/*
 * kms/http.h
 *
 * The one HTTP client of keysmith's KMS providers (kms/http.c), on libcurl,
 * free of PostgreSQL headers:
 *   - one curl handle per process, reused across calls (keep-alive), and
 *     made anew in a process forked from the one that made it;
 *   - TLS verification always on (a CA file may be named), HTTPS only;
 *   - redirects never followed: one would carry the token elsewhere;
 *   - one deadline for the whole call, connect included, and a cap on the
 *     response's size;
 *   - 429 and 5xx answers and connection failures retried, with jittered
 *     backoff that honours Retry-After, all within the deadline;
 *   - the call stops when the interrupt check the glue installs says so
 *     (a query cancel or a backend's termination).
 * Messages name the URL's host and what went wrong; never a header value,
 * so never a token.
 */
#ifndef KEYSMITH_HTTP_H
#define KEYSMITH_HTTP_H

#include "kms.h"

#define KS_HTTP_MAX_HEADERS 8
#define KS_HTTP_MAX_RESPONSE (256 * 1024)

typedef struct KsHttpRequest
{
	const char *method;			/* "GET" or "POST" */
	const char *url;			/* https://... */
	const char *headers[KS_HTTP_MAX_HEADERS];	/* "Name: value" */
	int			nheaders;
	const char *body;			/* or NULL */
	const char *ca_file;		/* or NULL: the system's CAs */
	long		timeout_ms;		/* the whole call, retries included */
	const char *provider;		/* the provider's name, for messages */

	/*
	 * AWS Signature Version 4, computed by libcurl (CURLOPT_AWS_SIGV4):
	 * aws_sigv4 is "aws:amz:<region>:<service>", aws_keys "<key id>:<secret
	 * key>" (a secret: the caller wipes it).  Both NULL for other KMSs.
	 */
	const char *aws_sigv4;
	const char *aws_keys;

	/*
	 * Answers that mean "try again" besides 429 and 5xx (AWS KMS throttles
	 * with HTTP 400 and a ThrottlingException); NULL for none.
	 */
	int			(*retryable) (long status, const char *body);
} KsHttpRequest;

typedef struct KsHttpResponse
{
	long		status;
	char	   *body;			/* NUL-terminated, malloc'd; KsHttpResponseFree */
	size_t		len;
	int			attempts;		/* how many requests it took */
} KsHttpResponse;

/*
 * Send the request.  KS_OK with any HTTP status the server answered with
 * (but not 429 or 5xx when retries ran out, nor a redirect): the caller
 * reads it.  Otherwise KS_ERR_KMS_UNAVAILABLE (no answer in time, refused,
 * TLS failure, 429/5xx to the end), KS_ERR_KMS_BAD_RESPONSE (a redirect, a
 * body over KS_HTTP_MAX_RESPONSE), KS_ERR_INTERRUPTED (the interrupt check
 * said stop), or KS_ERR_INVALID_ARGUMENT.
 */
extern KsStatus KsHttpDo(const KsHttpRequest *req, KsHttpResponse *resp, KsError *err);
extern void KsHttpResponseFree(KsHttpResponse *resp);

/*
 * The glue's interrupt check: returns non-zero when the call must stop.
 * Called from libcurl's progress callback and while waiting to retry; it
 * must not throw.
 */
extern void KsHttpSetInterruptCheck(int (*check) (void));

/*
 * Helpers the HTTP providers share.
 *
 * KsHttpCheckUrl: value (of option opt) is an https:// URL keysmith may put
 * in a request line.  KsHttpCheckTimeout: option timeout_ms, when set, is
 * 100 to 600000.  KsHttpTimeoutMs: that option, or the default the glue set
 * from keysmith.kms_timeout (KsHttpSetDefaultTimeout).
 */
extern KsStatus KsHttpCheckUrl(const KsKmsInstance *kms, const char *opt, KsError *err);
extern KsStatus KsHttpCheckTimeout(const KsKmsInstance *kms, KsError *err);
extern long KsHttpTimeoutMs(const KsKmsInstance *kms);
extern void KsHttpSetDefaultTimeout(long ms);

/*
 * A cap on every provider's timeout in this process, whatever its
 * timeout_ms option says (0: none).  The rotation worker sets it to
 * keysmith.rotation_step_timeout: a provider that a keysmith admin gave a
 * ten-minute timeout must not hold up every owner's rotation that long.
 */
extern void KsHttpSetTimeoutCap(long ms);

/*
 * Read a secret (a token, a client secret) from the file named by option
 * opt: at most max bytes, trailing white space dropped, one line.  buf holds
 * max + 1 bytes; the caller wipes it.  A missing, unreadable or empty file
 * is KS_ERR_KMS_DENIED (the KMS would refuse the call), naming the file.
 */
extern KsStatus KsReadSecretFile(const KsKmsInstance *kms, const char *opt, char *buf, size_t max,
								 KsError *err);

/* Base64, malloc'd and NUL-terminated; NULL when out of memory. */
extern char *KsBase64(const uint8_t *in, size_t len);

/* Decode base64 text into out (at most max bytes); the length, or -1. */
extern long KsUnbase64(const char *in, uint8_t *out, size_t max);

/* How many requests this process has sent (for tests and benchmarks). */
extern long KsHttpRequestCount(void);

#endif							/* KEYSMITH_HTTP_H */
