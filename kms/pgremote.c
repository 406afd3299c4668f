/*
 * kms/pgremote.c
 *
 * What keysmith reads from another PostgreSQL server, and from the socket
 * table of this host, judged without PostgreSQL or libpq (see pgremote.h).
 * Each parser reads exactly the bytes it is given, never past them, and
 * refuses anything but the one form PostgreSQL itself would send.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "pgremote.h"

/* A run of 1 to maxdigits decimal digits at s[*pos], as a value; -1 if none or too long. */
static long
Digits(const char *s, size_t len, size_t *pos, int maxdigits)
{
	long		v = 0;
	int			n = 0;

	while (*pos < len && s[*pos] >= '0' && s[*pos] <= '9')
	{
		if (++n > maxdigits)
			return -1;
		v = v * 10 + (s[*pos] - '0');
		(*pos)++;
	}
	return n == 0 ? -1 : v;
}

KsStatus
KsRemoteParseVersion(const char *s, size_t len, int *version, KsError *err)
{
	size_t		pos = 0;
	long		major,
				minor = 0,
				patch = 0;
	long		v;

	if (s == NULL || len == 0 || len > KS_REMOTE_VALUE_MAX)
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "the remote server sent no usable server_version");
	major = Digits(s, len, &pos, 4);
	if (major < 0)
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "the remote server's server_version does not start with a number");
	if (pos < len && s[pos] == '.')
	{
		pos++;
		minor = Digits(s, len, &pos, 4);
		if (minor < 0)
			return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "the remote server's server_version has no minor version after its dot");
		if (major < 10 && pos < len && s[pos] == '.')
		{
			pos++;
			patch = Digits(s, len, &pos, 4);
			if (patch < 0)
				patch = 0;
		}
	}
	/* "16devel", "17beta1", "16.1 (Debian ...)": whatever follows is a label */
	if (major >= 10)
		v = major * 10000 + (minor > 9999 ? 9999 : minor);
	else
		v = major * 10000 + (minor > 99 ? 99 : minor) * 100 + (patch > 99 ? 99 : patch);
	if (v < KS_REMOTE_VERSION_MIN || v > KS_REMOTE_VERSION_MAX)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT,
					  "the remote server's version (%ld) is not one keysmith supports (PostgreSQL 10 or later)", v);
	*version = (int) v;
	return KS_OK;
}

KsStatus
KsRemoteParseIterations(const char *s, size_t len, int *iterations, KsError *err)
{
	size_t		pos = 0;
	long		v;

	if (s == NULL || len == 0 || len > 10)
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "the remote server's scram_iterations is not a number");
	v = Digits(s, len, &pos, 10);
	if (v < 0 || pos != len)
		return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "the remote server's scram_iterations is not a number");
	if (v < KS_REMOTE_SCRAM_ITERATIONS_MIN || v > KS_REMOTE_SCRAM_ITERATIONS_MAX)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT,
					  "the remote server's scram_iterations (%ld) is outside the range keysmith accepts (%d to %d)",
					  v, KS_REMOTE_SCRAM_ITERATIONS_MIN, KS_REMOTE_SCRAM_ITERATIONS_MAX);
	*iterations = (int) v;
	return KS_OK;
}

KsStatus
KsRemoteParseBool(const char *s, size_t len, int *value, KsError *err)
{
	if (s != NULL && len == 1 && (s[0] == 't' || s[0] == 'f'))
	{
		*value = s[0] == 't';
		return KS_OK;
	}
	return KsFail(err, KS_ERR_KMS_BAD_RESPONSE, "the remote server answered a boolean that is neither t nor f");
}

void
KsRemoteCleanText(const char *in, char *out, size_t outlen)
{
	size_t		n = 0;
	size_t		i;

	if (outlen == 0)
		return;
	if (in == NULL)
		in = "(no message)";
	for (i = 0; in[i] != '\0' && i < KS_REMOTE_TEXT_MAX && n + 1 < outlen; i++)
	{
		unsigned char c = (unsigned char) in[i];

		out[n++] = (c >= 0x20 && c < 0x7f) ? (char) c : (c == '\n' || c == '\t' || c == '\r') ? ' ' : '?';
	}
	/* libpq ends its messages with a newline, now a '?': drop trailing ones */
	while (n > 0 && (in[n - 1] == '\n' || in[n - 1] == '\r' || in[n - 1] == ' '))
		n--;
	if (in[i] != '\0' && n + 4 <= outlen)
	{
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
}

int
KsProcNetAddr(const struct sockaddr *sa, int mapped, char *out, size_t outlen)
{
	uint32_t	w[4];
	unsigned	port;

	if (sa->sa_family == AF_INET)
	{
		const struct sockaddr_in *in4 = (const struct sockaddr_in *) sa;

		port = ntohs(in4->sin_port);
		if (!mapped)
		{
			memcpy(&w[0], &in4->sin_addr, 4);
			return snprintf(out, outlen, "%08X:%04X", w[0], port) < (int) outlen;
		}
		/* ::ffff:a.b.c.d, each 32-bit word as the kernel prints it */
		w[0] = 0;
		w[1] = 0;
		w[2] = htonl(0x0000ffff);
		memcpy(&w[3], &in4->sin_addr, 4);
	}
	else if (sa->sa_family == AF_INET6)
	{
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;

		if (mapped)
			return 0;
		port = ntohs(in6->sin6_port);
		memcpy(w, &in6->sin6_addr, 16);
	}
	else
		return 0;
	return snprintf(out, outlen, "%08X%08X%08X%08X:%04X", w[0], w[1], w[2], w[3], port) < (int) outlen;
}

int
KsProcNetLineUid(const char *line, const char *local, const char *remote, unsigned long *uid)
{
	char		l[64],
				r[64];
	unsigned long u;

	/* "  12: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000   101 ..." */
	if (sscanf(line, " %*[0-9]: %63[0-9A-Fa-f:] %63[0-9A-Fa-f:] %*x %*[0-9A-Fa-f:] %*[0-9A-Fa-f:] %*x %lu",
			   l, r, &u) != 3)
		return 0;
	if (strcmp(l, local) != 0 || strcmp(r, remote) != 0)
		return 0;
	*uid = u;
	return 1;
}
