/*
 * kms/envelope.c
 *
 * AES-256-GCM for keysmith values and wrapped keys, on OpenSSL's EVP API.
 * The format is described in envelope.h and docs/format.md.
 *
 * Speed matters here: decrypt_value runs once per row.  A KsAead keeps one
 * EVP_CIPHER_CTX keyed with the DEK, so each value only costs an IV set, the
 * GHASH of the AAD and the data, and the tag.  GCM encrypts and decrypts
 * with the same key schedule, and each value's first call (EncryptInit or
 * DecryptInit with the nonce) sets the direction and resets the state, so
 * one context serves both: half the memory and set-up of two (issue 22,
 * part 2: about 1.3 kB less per cached version).  Nothing in this file
 * allocates on the per-value path.
 */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "envelope.h"

struct KsAead
{
	EVP_CIPHER_CTX *ctx;		/* keyed; each use sets direction and nonce */
};

static const uint8_t KsNoContextMarker = 0x00;
static const uint8_t KsContextMarker = 0x01;

static inline uint32_t
ReadBE32(const uint8_t *p)
{
	return ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) |
		((uint32_t) p[2] << 8) | (uint32_t) p[3];
}

static inline void
WriteBE32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t) (v >> 24);
	p[1] = (uint8_t) (v >> 16);
	p[2] = (uint8_t) (v >> 8);
	p[3] = (uint8_t) v;
}

const char *
KsAlgorithmName(uint8_t algorithm)
{
	switch (algorithm)
	{
		case KS_ALG_AES256GCM:
			return "aes-256-gcm";
		default:
			return NULL;
	}
}

KsStatus
KsParseHeader(const uint8_t *ct, size_t ct_len, KsHeader *hdr, KsError *err)
{
	/*
	 * Check the version before the length: a value from a future format may
	 * have a different minimum size, and "unsupported version" is the more
	 * useful message.  An empty input has no version byte at all.
	 */
	if (ct_len == 0)
		return KsFail(err, KS_ERR_CT_TRUNCATED, "ciphertext is empty");
	if (ct[0] != KS_FORMAT_VERSION)
		return KsFail(err, KS_ERR_CT_VERSION,
					  "unsupported ciphertext format version %u", (unsigned) ct[0]);
	if (ct_len < KS_OVERHEAD)
		return KsFail(err, KS_ERR_CT_TRUNCATED,
					  "ciphertext is %zu bytes, shorter than the minimum of %d",
					  ct_len, KS_OVERHEAD);
	if (KsAlgorithmName(ct[1]) == NULL)
		return KsFail(err, KS_ERR_CT_ALGORITHM,
					  "unsupported ciphertext algorithm id %u", (unsigned) ct[1]);

	hdr->format_version = ct[0];
	hdr->algorithm = ct[1];
	hdr->key_id = ReadBE32(ct + 2);
	hdr->key_version = ReadBE32(ct + 6);
	memcpy(hdr->nonce, ct + 10, KS_NONCE_LEN);
	return KS_OK;
}

void
KsWriteHeader(const KsHeader *hdr, uint8_t *out)
{
	out[0] = hdr->format_version;
	out[1] = hdr->algorithm;
	WriteBE32(out + 2, hdr->key_id);
	WriteBE32(out + 6, hdr->key_version);
	memcpy(out + 10, hdr->nonce, KS_NONCE_LEN);
}

KsAead *
KsAeadCreate(const uint8_t *dek, size_t dek_len, KsError *err)
{
	KsAead	   *aead;

	if (dek_len != KS_DEK_LEN)
	{
		KsFail(err, KS_ERR_INVALID_ARGUMENT, "a data key must be %d bytes", KS_DEK_LEN);
		return NULL;
	}
	aead = calloc(1, sizeof(KsAead));
	if (aead == NULL)
	{
		KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
		return NULL;
	}
	aead->ctx = EVP_CIPHER_CTX_new();
	if (aead->ctx == NULL ||
		EVP_EncryptInit_ex(aead->ctx, EVP_aes_256_gcm(), NULL, dek, NULL) != 1)
	{
		KsAeadFree(aead);
		KsFail(err, KS_ERR_CRYPTO, "could not set up AES-256-GCM");
		return NULL;
	}
	return aead;
}

void
KsAeadFree(KsAead *aead)
{
	if (aead == NULL)
		return;
	/* EVP_CIPHER_CTX_free cleanses the key schedule before freeing it. */
	EVP_CIPHER_CTX_free(aead->ctx);
	free(aead);
}

/* Feed len bytes through an EVP update call, in int-sized pieces. */
static int
CipherUpdate(EVP_CIPHER_CTX *ctx, uint8_t *out, const uint8_t *in, size_t len)
{
	while (len > 0)
	{
		int			chunk = len > (size_t) (INT_MAX / 2) ? INT_MAX / 2 : (int) len;
		int			outl = 0;

		if (EVP_CipherUpdate(ctx, out, &outl, in, chunk) != 1)
			return 0;
		if (out != NULL)
			out += outl;
		in += chunk;
		len -= (size_t) chunk;
	}
	return 1;
}

/*
 * Absorb header bytes and the context marker (and context) as GCM AAD.
 * Each EVP call has a fixed dispatch cost that is large next to a 32-byte
 * value, so a short AAD is gathered into one buffer and fed in one call.
 */
static int
AbsorbAad(EVP_CIPHER_CTX *ctx, const uint8_t *header, const KsContext *context)
{
	uint8_t		aad[256];
	bool		has_context = context != NULL && context->present;
	size_t		ctx_len = has_context ? context->len : 0;

	if (KS_HEADER_LEN + 1 + ctx_len <= sizeof(aad))
	{
		memcpy(aad, header, KS_HEADER_LEN);
		aad[KS_HEADER_LEN] = has_context ? KsContextMarker : KsNoContextMarker;
		if (ctx_len > 0)
			memcpy(aad + KS_HEADER_LEN + 1, context->data, ctx_len);
		return CipherUpdate(ctx, NULL, aad, KS_HEADER_LEN + 1 + ctx_len);
	}
	if (!CipherUpdate(ctx, NULL, header, KS_HEADER_LEN) ||
		!CipherUpdate(ctx, NULL, &KsContextMarker, 1))
		return 0;
	return CipherUpdate(ctx, NULL, context->data, context->len);
}

KsStatus
KsAeadSeal(KsAead *aead, const KsHeader *hdr, const KsContext *context,
		   const uint8_t *pt, size_t pt_len, uint8_t *out, KsError *err)
{
	EVP_CIPHER_CTX *ctx = aead->ctx;
	int			outl = 0;

	if (pt_len > KS_MAX_PLAINTEXT)
		return KsFail(err, KS_ERR_TOO_LARGE, "value of %zu bytes is too large to encrypt", pt_len);

	KsWriteHeader(hdr, out);
	if (EVP_EncryptInit_ex(ctx, NULL, NULL, NULL, hdr->nonce) != 1 ||
		!AbsorbAad(ctx, out, context) ||
		!CipherUpdate(ctx, out + KS_HEADER_LEN, pt, pt_len) ||
		EVP_EncryptFinal_ex(ctx, out + KS_HEADER_LEN + pt_len, &outl) != 1 ||
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, KS_TAG_LEN,
							out + KS_HEADER_LEN + pt_len) != 1)
	{
		KsWipe(out + KS_HEADER_LEN, pt_len);
		return KsFail(err, KS_ERR_CRYPTO, "AES-256-GCM encryption failed");
	}
	return KS_OK;
}

KsStatus
KsAeadOpen(KsAead *aead, const KsHeader *hdr, const KsContext *context,
		   const uint8_t *ct, size_t ct_len, uint8_t *out, KsError *err)
{
	EVP_CIPHER_CTX *ctx = aead->ctx;
	size_t		body_len = ct_len - KS_OVERHEAD;
	uint8_t		tag[KS_TAG_LEN];
	int			outl = 0;

	if (ct_len < KS_OVERHEAD)
		return KsFail(err, KS_ERR_CT_TRUNCATED, "ciphertext is too short");

	/* EVP wants a writable tag buffer. */
	memcpy(tag, ct + KS_HEADER_LEN + body_len, KS_TAG_LEN);
	if (EVP_DecryptInit_ex(ctx, NULL, NULL, NULL, hdr->nonce) != 1 ||
		!AbsorbAad(ctx, ct, context) ||
		!CipherUpdate(ctx, out, ct + KS_HEADER_LEN, body_len) ||
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, KS_TAG_LEN, tag) != 1)
	{
		KsWipe(out, body_len);
		return KsFail(err, KS_ERR_CRYPTO, "AES-256-GCM decryption failed");
	}
	if (EVP_DecryptFinal_ex(ctx, out + body_len, &outl) != 1)
	{
		KsWipe(out, body_len);
		return KsFail(err, KS_ERR_AUTH_FAILED,
					  "ciphertext authentication failed");
	}
	return KS_OK;
}

/* Shared body of the one-shot GCM helpers. */
static KsStatus
GcmOnce(int encrypt, const uint8_t *key, const uint8_t *nonce,
		const uint8_t *aad1, size_t aad1_len,
		const uint8_t *aad2, size_t aad2_len,
		const uint8_t *in, size_t in_len, uint8_t *out, uint8_t *tag,
		KsError *err)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	uint8_t		tagbuf[KS_TAG_LEN];
	int			outl = 0;
	int			ok;

	if (ctx == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	if (!encrypt)
		memcpy(tagbuf, tag, KS_TAG_LEN);
	ok = EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce, encrypt) == 1 &&
		(aad1_len == 0 || CipherUpdate(ctx, NULL, aad1, aad1_len)) &&
		(aad2_len == 0 || CipherUpdate(ctx, NULL, aad2, aad2_len)) &&
		(in_len == 0 || CipherUpdate(ctx, out, in, in_len)) &&
		(encrypt || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, KS_TAG_LEN, tagbuf) == 1);
	if (!ok)
	{
		EVP_CIPHER_CTX_free(ctx);
		KsWipe(out, in_len);
		return KsFail(err, KS_ERR_CRYPTO, "AES-256-GCM failed");
	}
	if (EVP_CipherFinal_ex(ctx, out + in_len, &outl) != 1)
	{
		EVP_CIPHER_CTX_free(ctx);
		KsWipe(out, in_len);
		if (encrypt)
			return KsFail(err, KS_ERR_CRYPTO, "AES-256-GCM failed");
		return KsFail(err, KS_ERR_AUTH_FAILED, "authentication failed");
	}
	if (encrypt &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, KS_TAG_LEN, tag) != 1)
	{
		EVP_CIPHER_CTX_free(ctx);
		KsWipe(out, in_len);
		return KsFail(err, KS_ERR_CRYPTO, "AES-256-GCM failed");
	}
	EVP_CIPHER_CTX_free(ctx);
	return KS_OK;
}

KsStatus
KsGcmSealOnce(const uint8_t *key, const uint8_t *nonce,
			  const uint8_t *aad1, size_t aad1_len,
			  const uint8_t *aad2, size_t aad2_len,
			  const uint8_t *pt, size_t pt_len,
			  uint8_t *ct, uint8_t *tag, KsError *err)
{
	return GcmOnce(1, key, nonce, aad1, aad1_len, aad2, aad2_len,
				   pt, pt_len, ct, tag, err);
}

KsStatus
KsGcmOpenOnce(const uint8_t *key, const uint8_t *nonce,
			  const uint8_t *aad1, size_t aad1_len,
			  const uint8_t *aad2, size_t aad2_len,
			  const uint8_t *ct, size_t ct_len,
			  const uint8_t *tag, uint8_t *pt, KsError *err)
{
	return GcmOnce(0, key, nonce, aad1, aad1_len, aad2, aad2_len,
				   ct, ct_len, pt, (uint8_t *) tag, err);
}

#define NONCE_POOL_LEN (KS_NONCE_LEN * 256)

static uint8_t NoncePool[NONCE_POOL_LEN];
static size_t NoncePoolUsed = NONCE_POOL_LEN;
static bool NonceForkHandlerSet = false;

/*
 * In a forked child, drop whatever the parent had not used yet.  An atfork
 * handler rather than a getpid() check per nonce: getpid() is a system call
 * and cost more than the encryption of a small value.
 */
static void
NoncePoolAfterFork(void)
{
	memset(NoncePool, 0, sizeof(NoncePool));
	NoncePoolUsed = NONCE_POOL_LEN;
}

KsStatus
KsNextNonce(uint8_t *nonce, KsError *err)
{
	if (NoncePoolUsed + KS_NONCE_LEN > NONCE_POOL_LEN)
	{
		KsStatus	st;

		if (!NonceForkHandlerSet)
		{
			if (pthread_atfork(NULL, NULL, NoncePoolAfterFork) != 0)
				return KsFail(err, KS_ERR_NO_MEMORY, "could not register a fork handler");
			NonceForkHandlerSet = true;
		}
		st = KsRandomBytes(NoncePool, NONCE_POOL_LEN, err);
		if (st != KS_OK)
			return st;
		NoncePoolUsed = 0;
	}
	memcpy(nonce, NoncePool + NoncePoolUsed, KS_NONCE_LEN);
	/* Never hand out the same bytes twice. */
	memset(NoncePool + NoncePoolUsed, 0, KS_NONCE_LEN);
	NoncePoolUsed += KS_NONCE_LEN;
	return KS_OK;
}
