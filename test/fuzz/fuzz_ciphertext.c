/*
 * test/fuzz/fuzz_ciphertext.c
 *
 * libFuzzer target: the ciphertext parser and the whole decrypt path of
 * kms/envelope.c on arbitrary bytes.  The first byte chooses whether a
 * context is passed (and how long it is); the rest is the ciphertext.
 * Every input must be refused or decrypted without a crash, a sanitizer
 * report, or output larger than the ciphertext allows.  Seeds in
 * corpus/ciphertext include real ciphertexts sealed with the fixed DEK
 * below.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"

static KsAead *aead;

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	KsHeader	hdr;
	KsError		err;
	KsContext	ctx = {false, NULL, 0};
	uint8_t    *out;

	if (aead == NULL)
	{
		uint8_t		dek[KS_DEK_LEN];

		for (int i = 0; i < KS_DEK_LEN; i++)
			dek[i] = (uint8_t) i;
		aead = KsAeadCreate(dek, sizeof(dek), &err);
		if (aead == NULL)
			abort();
	}
	if (size < 1)
		return 0;
	if (data[0] & 0x80)
	{
		size_t		clen = data[0] & 0x7F;

		if (clen > size - 1)
			clen = size - 1;
		ctx.present = true;
		ctx.data = data + 1;
		ctx.len = clen;
		data += 1 + clen;
		size -= 1 + clen;
	}
	else
	{
		data += 1;
		size -= 1;
	}
	if (KsParseHeader(data, size, &hdr, &err) != KS_OK)
		return 0;
	if (KsAlgorithmName(hdr.algorithm) == NULL)
		abort();				/* the parser let an unknown algorithm through */
	out = malloc(size - KS_OVERHEAD + 1);
	if (out == NULL)
		return 0;
	(void) KsAeadOpen(aead, &hdr, &ctx, data, size, out, &err);
	free(out);
	return 0;
}
