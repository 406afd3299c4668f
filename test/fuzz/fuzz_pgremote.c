/*
 * test/fuzz/fuzz_pgremote.c
 *
 * libFuzzer target: what a hostile remote PostgreSQL server may answer
 * (kms/pgremote.c), on arbitrary bytes.  The first byte picks the parser:
 * server_version, scram_iterations, a boolean, a message to quote, a line
 * of /proc/net/tcp.  What is accepted must be within the documented
 * bounds; a quoted message must be printable ASCII of bounded length.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pgremote.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	KsError		err;
	int			v = -1;
	const char *s;
	size_t		len;

	if (size == 0)
		return 0;
	/* the parsers get exactly the bytes after the selector, not NUL-terminated */
	s = (const char *) data + 1;
	len = size - 1;
	switch (data[0] % 5)
	{
		case 0:
			if (KsRemoteParseVersion(s, len, &v, &err) == KS_OK &&
				(v < KS_REMOTE_VERSION_MIN || v > KS_REMOTE_VERSION_MAX))
				abort();
			break;
		case 1:
			if (KsRemoteParseIterations(s, len, &v, &err) == KS_OK &&
				(v < KS_REMOTE_SCRAM_ITERATIONS_MIN || v > KS_REMOTE_SCRAM_ITERATIONS_MAX))
				abort();
			break;
		case 2:
			if (KsRemoteParseBool(s, len, &v, &err) == KS_OK && v != 0 && v != 1)
				abort();
			break;
		case 3:
		case 4:
			{
				char	   *z = malloc(len + 1);
				char		out[KS_REMOTE_TEXT_MAX + 4];
				unsigned long uid;

				memcpy(z, s, len);
				z[len] = '\0';
				if (data[0] % 5 == 3)
				{
					KsRemoteCleanText(z, out, sizeof(out));
					if (strlen(out) > KS_REMOTE_TEXT_MAX + 3)
						abort();
					for (const char *p = out; *p; p++)
						if (*p < 0x20 || *p > 0x7e)
							abort();
				}
				else
					(void) KsProcNetLineUid(z, "0100007F:1538", "0100007F:C350", &uid);
				free(z);
				return 0;
			}
	}
	if (memchr(err.message, '\0', sizeof(err.message)) == NULL)
		abort();
	return 0;
}
