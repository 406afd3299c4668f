/*
 * test/fuzz/fuzz_keyfile.c
 *
 * libFuzzer target: the local master key file parser (kms/local.c,
 * KsLocalParse) on arbitrary text.  A set it accepts must be consistent:
 * at least one key, each version unique and non-zero, and current the
 * highest of them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "local.h"

static KsMasterKeySet set;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	KsError		err;
	uint32_t	highest = 0;

	if (size > KS_LOCAL_MAX_FILE_SIZE)
		return 0;
	memset(&set, 0, sizeof(set));
	if (KsLocalParse((const char *) data, size, &set, &err) != KS_OK)
		return 0;
	if (set.count < 1 || set.count > KS_LOCAL_MAX_KEYS)
		abort();
	for (int i = 0; i < set.count; i++)
	{
		if (set.keys[i].version == 0)
			abort();
		if (set.keys[i].version > highest)
			highest = set.keys[i].version;
		for (int j = 0; j < i; j++)
			if (set.keys[j].version == set.keys[i].version)
				abort();
	}
	if (set.current != highest)
		abort();
	return 0;
}
