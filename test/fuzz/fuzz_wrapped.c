/*
 * test/fuzz/fuzz_wrapped.c
 *
 * libFuzzer target: the local provider's unwrap path (kms/local.c) on
 * arbitrary wrapped-DEK blobs and binding data, as a restored dump could
 * supply them: the format check the provider makes first
 * (KsLocalWrappedKekVersion), then KsLocalUnwrapWithSet against a master
 * key set parsed once.  The first byte splits the input into the blob and
 * the binding (AAD).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "local.h"

static KsMasterKeySet *set;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t		dek[KS_DEK_LEN];
	KsError		err;
	size_t		split;

	if (set == NULL)
	{
		static const char keys[] =
			"1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n"
			"2:202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\n";

		set = calloc(1, sizeof(*set));
		if (set == NULL || KsLocalParse(keys, sizeof(keys) - 1, set, &err) != KS_OK)
			abort();
	}
	if (size < 1)
		return 0;
	split = data[0];
	if (split > size - 1)
		split = size - 1;
	if (KsLocalWrappedKekVersion(data + 1, split) == 0)
		return 0;
	if (KsLocalUnwrapWithSet(set, data + 1, split, data + 1 + split, size - 1 - split, dek, &err) == KS_OK)
	{
		/* only the seed made with key 1 and this binding may authenticate */
		if (memcmp(data + 1 + split, "binding", 7) != 0 || size - 1 - split != 7)
			abort();
	}
	return 0;
}
