/*
 * kms/http.c
 *
 * The KMS providers' HTTP client (see http.h for its rules).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "http.h"

static CURL *Handle = NULL;
static pid_t HandlePid = 0;
static int	GlobalInit = 0;
static int	(*InterruptCheck) (void) = NULL;
static long RequestCount = 0;
static long DefaultTimeoutMs = 5000;

void
KsHttpSetInterruptCheck(int (*check) (void))
{
	InterruptCheck = check;
}

long
KsHttpRequestCount(void)
{
	return RequestCount;
}

void
KsHttpResponseFree(KsHttpResponse *resp)
{
	if (resp->body)
	{
		KsWipe(resp->body, resp->len);
		free(resp->body);
	}
	resp->body = NULL;
	resp->len = 0;
}

static long
NowMs(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The process's handle.  A forked child must not use its parent's: the
 * connections it holds are the parent's sockets.  It is forgotten, not
 * cleaned up (that would close them under the parent).
 */
static CURL *
GetHandle(KsError *err)
{
	if (!GlobalInit)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		{
			KsFail(err, KS_ERR_CRYPTO, "libcurl could not be initialised");
			return NULL;
		}
		GlobalInit = 1;
	}
	if (Handle != NULL && HandlePid != getpid())
		Handle = NULL;
	if (Handle == NULL)
	{
		Handle = curl_easy_init();
		HandlePid = getpid();
		if (Handle == NULL)
			KsFail(err, KS_ERR_NO_MEMORY, "libcurl could not make a handle");
	}
	return Handle;
}

typedef struct Sink
{
	char	   *buf;
	size_t		len;
	size_t		cap;
	int			overflow;
} Sink;

static size_t
WriteBody(char *data, size_t size, size_t nmemb, void *arg)
{
	Sink	   *s = arg;
	size_t		n = size * nmemb;

	if (s->len + n > KS_HTTP_MAX_RESPONSE)
	{
		s->overflow = 1;
		return 0;				/* stops the transfer */
	}
	if (s->len + n + 1 > s->cap)
	{
		size_t		cap = s->cap ? s->cap * 2 : 4096;
		char	   *nb;

		while (cap < s->len + n + 1)
			cap *= 2;
		nb = malloc(cap);
		if (nb == NULL)
			return 0;
		if (s->buf)
		{
			memcpy(nb, s->buf, s->len);
			KsWipe(s->buf, s->len);
			free(s->buf);
		}
		s->buf = nb;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, data, n);
	s->len += n;
	s->buf[s->len] = '\0';
	return n;
}

/*
 * Wipe and free a body that is not handed to the caller.  Even a partial
 * one may hold key material: an unwrap's answer cut short by a cancel, say.
 */
static void
DropBody(Sink *s)
{
	KsWipe(s->buf, s->len);
	free(s->buf);
	s->buf = NULL;
	s->len = 0;
}

/* Retry-After in seconds, from the response headers; -1 if absent. */
typedef struct Hdrs
{
	long		retry_after;
} Hdrs;

static size_t
ReadHeader(char *data, size_t size, size_t nmemb, void *arg)
{
	Hdrs	   *h = arg;
	size_t		n = size * nmemb;

	if (n > 12 && strncasecmp(data, "Retry-After:", 12) == 0)
		h->retry_after = strtol(data + 12, NULL, 10);
	return n;
}

static int
Progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	return InterruptCheck && InterruptCheck() ? 1 : 0;
}

/* Sleep up to ms, in steps, stopping early when interrupted. */
static int
Pause(long ms)
{
	while (ms > 0)
	{
		long		step = ms < 50 ? ms : 50;
		struct timespec ts = {0, step * 1000000L};

		if (InterruptCheck && InterruptCheck())
			return 1;
		nanosleep(&ts, NULL);
		ms -= step;
	}
	return InterruptCheck && InterruptCheck() ? 1 : 0;
}

/* The host part of a URL, for messages (never the path or a query). */
static void
HostOf(const char *url, char *out, size_t outlen)
{
	const char *p = strstr(url, "://");
	size_t		n;

	p = p ? p + 3 : url;
	n = strcspn(p, "/?#");
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, p, n);
	out[n] = '\0';
}

/*
 * The request's header list, in memory of its own (curl_slist): it holds
 * the caller's token, so KsHttpDo wipes it when the call is over
 * (ForgetCredentials).
 */
static struct curl_slist *
BuildHeaders(const KsHttpRequest *req)
{
	struct curl_slist *headers = NULL;

	for (int i = 0; i < req->nheaders; i++)
		headers = curl_slist_append(headers, req->headers[i]);

	/*
	 * No "Expect: 100-continue" (libcurl adds it only to bodies over 1 MB;
	 * ours are small).  The empty header that would turn it off is left out
	 * of SigV4 requests: libcurl 7.88 signs it as "expect:", and AWS, not
	 * receiving it, computes another signature.
	 */
	if (req->aws_sigv4 == NULL)
		headers = curl_slist_append(headers, "Expect:");
	return headers;
}

/* What one attempt leaves behind: what libcurl and its callbacks filled in. */
typedef struct Attempt
{
	Sink		sink;			/* the response body */
	Hdrs		hdrs;			/* what the response headers said */
	CURLcode	rc;
	long		status;			/* the HTTP status, 0 if none */
	char		curlerr[CURL_ERROR_SIZE];
} Attempt;

/*
 * Every option that makes a call safe, set again before each attempt: the
 * reset drops whatever the previous call (another provider's, perhaps) left
 * on the handle, but keeps its connection cache.  HTTPS only, TLS verified
 * (against the request's CA file, if it names one), redirects never
 * followed (one would carry the token elsewhere), and the time left until
 * the deadline as the limit for connecting and for the whole transfer.
 * NOSIGNAL: libcurl must leave the signals of a PostgreSQL backend alone
 * (it would use SIGALRM for its DNS timeouts).
 */
static void
SetSafetyOptions(CURL *h, const KsHttpRequest *req, long left)
{
	curl_easy_reset(h);			/* every option again; keeps the connection cache */
	curl_easy_setopt(h, CURLOPT_URL, req->url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (req->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, req->ca_file);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, left);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, left);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
}

/*
 * Where libcurl puts what it receives, all in a: the body into a sink
 * capped at KS_HTTP_MAX_RESPONSE (WriteBody), Retry-After from the headers
 * (ReadHeader), and its own error text.  The progress callback asks the
 * glue's interrupt check, so a query cancel stops a hung transfer.
 */
static void
SetReceivers(CURL *h, Attempt *a)
{
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, WriteBody);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &a->sink);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, ReadHeader);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &a->hdrs);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, Progress);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, a->curlerr);
	a->curlerr[0] = '\0';
}

/*
 * What is sent: the headers, AWS's SigV4 credentials (libcurl signs the
 * request with them), and the method with its body.
 */
static void
SetContent(CURL *h, const KsHttpRequest *req, struct curl_slist *headers)
{
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	if (req->aws_sigv4)
	{
		curl_easy_setopt(h, CURLOPT_AWS_SIGV4, req->aws_sigv4);
		curl_easy_setopt(h, CURLOPT_USERPWD, req->aws_keys);
	}
	if (strcmp(req->method, "POST") == 0)
	{
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
	}
	else
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
}

/*
 * One attempt, counted for KsHttpRequestCount and resp->attempts.  libcurl
 * keeps a pointer to the body, which the caller may wipe and free once the
 * call returns: the handle is pointed away from it at once.
 */
static void
Perform(CURL *h, const KsHttpRequest *req, KsHttpResponse *resp, Attempt *a)
{
	RequestCount++;
	resp->attempts++;
	a->rc = curl_easy_perform(h);
	if (req->body && strcmp(req->method, "POST") == 0)
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a->status);
}

/*
 * An attempt that got no whole answer: interrupted, a body over the cap
 * and a certificate that does not verify end the call; any other failure
 * (refused, reset, timed out) is retried (*retry) if the backoff still
 * fits before the deadline.  The partial body is wiped and dropped.
 */
static KsStatus
TransferFailed(const KsHttpRequest *req, const char *host, Attempt *a, long deadline,
			   long backoff, int *retry, KsError *err)
{
	const char *why = a->curlerr[0] ? a->curlerr : curl_easy_strerror(a->rc);

	DropBody(&a->sink);
	if (a->rc == CURLE_ABORTED_BY_CALLBACK)
		return KsFail(err, KS_ERR_INTERRUPTED, "the call to KMS provider \"%s\" was interrupted", req->provider);
	if (a->sink.overflow)
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "KMS provider \"%s\" (%s) answered more than %d bytes",
					  req->provider, host, KS_HTTP_MAX_RESPONSE);
	if (a->rc == CURLE_PEER_FAILED_VERIFICATION || a->rc == CURLE_SSL_CACERT_BADFILE ||
		a->rc == CURLE_SSL_CERTPROBLEM)
		return KsFail(err, KS_ERR_KMS_UNAVAILABLE, "KMS provider \"%s\": the TLS certificate of %s does not verify: %s",
					  req->provider, host, why);
	if (NowMs() + backoff >= deadline)
		return KsFail(err, KS_ERR_KMS_UNAVAILABLE, "KMS provider \"%s\" (%s) is unavailable: %s",
					  req->provider, host, why);
	*retry = 1;
	return KS_OK;
}

/*
 * An attempt that got an answer.  A redirect ends the call (keysmith never
 * follows one).  429, 5xx and what the provider's retryable() calls
 * throttling are retried (*retry), after Retry-After if the server sent
 * one (it becomes *backoff), while that still fits before the deadline.
 * Any other status is the caller's to read: the body moves into resp.
 */
static KsStatus
ReadStatus(const KsHttpRequest *req, const char *host, Attempt *a, long deadline,
		   long *backoff, int *retry, KsHttpResponse *resp, KsError *err)
{
	long		status = a->status;

	if (status >= 300 && status < 400)
	{
		DropBody(&a->sink);
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE,
					  "KMS provider \"%s\" (%s) answered with a redirect (HTTP %ld), which keysmith never follows",
					  req->provider, host, status);
	}
	if (status == 429 || status >= 500 ||
		(req->retryable && req->retryable(status, a->sink.buf ? a->sink.buf : "")))
	{
		long		wait = a->hdrs.retry_after >= 0 ? a->hdrs.retry_after * 1000 : *backoff;

		DropBody(&a->sink);
		if (NowMs() + wait >= deadline)
			return KsFail(err, KS_ERR_KMS_UNAVAILABLE,
						  "KMS provider \"%s\" (%s) answered HTTP %ld until its time ran out",
						  req->provider, host, status);
		*backoff = wait;
		*retry = 1;
		return KS_OK;
	}
	resp->status = status;
	resp->body = a->sink.buf ? a->sink.buf : calloc(1, 1);
	resp->len = a->sink.len;
	return KS_OK;
}

/*
 * Sleep before the next attempt: backoff with jitter (half of it, plus up
 * to half again at random, so backends that failed together do not retry
 * together), interruptible; then the backoff doubles, up to 2 s.
 */
static KsStatus
WaitToRetry(const KsHttpRequest *req, long *backoff, KsError *err)
{
	uint8_t		r = 0;
	long		jittered;

	(void) KsRandomBytes(&r, 1, NULL);
	jittered = *backoff / 2 + (*backoff / 2) * r / 255;
	if (Pause(jittered))
		return KsFail(err, KS_ERR_INTERRUPTED, "the call to KMS provider \"%s\" was interrupted",
					  req->provider);
	*backoff = *backoff * 2 > 2000 ? 2000 : *backoff * 2;
	return KS_OK;
}

/*
 * After the call, whatever its outcome: no credential stays behind.  The
 * handle forgets the header list, the header list (it held the token) is
 * wiped and freed, and after a SigV4 request the handle is reset, since
 * libcurl keeps its own copy of the AWS secret key until then.
 */
static void
ForgetCredentials(CURL *h, const KsHttpRequest *req, struct curl_slist *headers)
{
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	if (req->aws_sigv4)
		curl_easy_reset(h);
	for (struct curl_slist *l = headers; l != NULL; l = l->next)
		KsWipe(l->data, strlen(l->data));
	curl_slist_free_all(headers);
}

/*
 * Send the request (see http.h for the contract): attempts until one gets
 * an answer the caller must read, a failure that retrying cannot mend, or
 * the deadline, which covers the whole call, retries and waits included.
 */
KsStatus
KsHttpDo(const KsHttpRequest *req, KsHttpResponse *resp, KsError *err)
{
	CURL	   *h;
	struct curl_slist *headers;
	long		deadline = NowMs() + (req->timeout_ms > 0 ? req->timeout_ms : 5000);
	long		backoff = 100;
	char		host[256];
	KsStatus	st = KS_OK;

	memset(resp, 0, sizeof(*resp));
	HostOf(req->url, host, sizeof(host));
	if (strncmp(req->url, "https://", 8) != 0)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "KMS provider \"%s\": the URL must be https://", req->provider);
	h = GetHandle(err);
	if (h == NULL)
		return err->status;
	headers = BuildHeaders(req);

	for (;;)
	{
		Attempt		a = {.sink = {0}, .hdrs = {-1}};
		long		left = deadline - NowMs();
		int			retry = 0;

		if (left <= 0)
		{
			st = KsFail(err, KS_ERR_KMS_UNAVAILABLE, "KMS provider \"%s\" did not answer within %ld ms (%s)",
						req->provider, req->timeout_ms, host);
			break;
		}
		SetSafetyOptions(h, req, left);
		SetReceivers(h, &a);
		SetContent(h, req, headers);
		Perform(h, req, resp, &a);
		if (a.rc != CURLE_OK || a.sink.overflow)
			st = TransferFailed(req, host, &a, deadline, backoff, &retry, err);
		else
			st = ReadStatus(req, host, &a, deadline, &backoff, &retry, resp, err);
		if (st != KS_OK || !retry)
			break;
		st = WaitToRetry(req, &backoff, err);
		if (st != KS_OK)
			break;
	}
	ForgetCredentials(h, req, headers);
	return st;
}

KsStatus
KsHttpCheckUrl(const KsKmsInstance *kms, const char *opt, KsError *err)
{
	const char *url = KsKmsOptionValue(kms, opt);

	if (url == NULL || strncmp(url, "https://", 8) != 0 || strlen(url) > 512 ||
		strpbrk(url, " \t\r\n\"?#") != NULL)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "%s needs option %s, an https:// URL",
					  kms->provider->type, opt);
	return KS_OK;
}

KsStatus
KsHttpCheckTimeout(const KsKmsInstance *kms, KsError *err)
{
	const char *t = KsKmsOptionValue(kms, "timeout_ms");
	char	   *end;
	long		v;

	if (t == NULL)
		return KS_OK;
	errno = 0;
	v = strtol(t, &end, 10);
	if (errno != 0 || end == t || *end != '\0' || v < 100 || v > 600000)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "option timeout_ms must be a whole number from 100 to 600000");
	return KS_OK;
}

void
KsHttpSetDefaultTimeout(long ms)
{
	DefaultTimeoutMs = ms;
}

/* The longest any call may take in this process (0: no cap); see http.h. */
static long TimeoutCapMs = 0;

void
KsHttpSetTimeoutCap(long ms)
{
	TimeoutCapMs = ms;
}

long
KsHttpTimeoutMs(const KsKmsInstance *kms)
{
	const char *t = KsKmsOptionValue(kms, "timeout_ms");
	long		ms = t ? strtol(t, NULL, 10) : DefaultTimeoutMs;

	return TimeoutCapMs > 0 && ms > TimeoutCapMs ? TimeoutCapMs : ms;
}

KsStatus
KsReadSecretFile(const KsKmsInstance *kms, const char *opt, char *buf, size_t max, KsError *err)
{
	const char *path = KsKmsOptionValue(kms, opt);
	FILE	   *f = path ? fopen(path, "r") : NULL;
	size_t		n;

	if (f == NULL)
		return KsFail(err, KS_ERR_KMS_DENIED, "KMS provider \"%s\": could not read %s \"%s\": %s",
					  kms->name, opt, path ? path : "", path ? strerror(errno) : "not set");
	n = fread(buf, 1, max, f);
	fclose(f);
	while (n > 0 && isspace((unsigned char) buf[n - 1]))
		n--;
	buf[n] = '\0';
	if (n == 0 || n == max || strpbrk(buf, "\r\n") != NULL)
	{
		KsWipe(buf, max + 1);
		return KsFail(err, KS_ERR_KMS_DENIED, "KMS provider \"%s\": %s \"%s\" holds no usable secret",
					  kms->name, opt, path);
	}
	return KS_OK;
}

char *
KsBase64(const uint8_t *in, size_t len)
{
	char	   *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out)
		EVP_EncodeBlock((unsigned char *) out, in, (int) len);
	return out;
}

long
KsUnbase64(const char *in, uint8_t *out, size_t max)
{
	size_t		len = strlen(in);
	uint8_t    *buf;
	int			n;

	if (len == 0 || len % 4 != 0 || len / 4 * 3 > max + 2)
		return -1;
	buf = malloc(len / 4 * 3 + 1);
	if (buf == NULL)
		return -1;
	n = EVP_DecodeBlock(buf, (const unsigned char *) in, (int) len);
	/* EVP_DecodeBlock counts the padding as bytes */
	if (n >= 0 && in[len - 1] == '=')
		n -= in[len - 2] == '=' ? 2 : 1;
	if (n < 0 || (size_t) n > max)
		n = -1;
	else
		memcpy(out, buf, n);
	KsWipe(buf, len / 4 * 3 + 1);
	free(buf);
	return n;
}
