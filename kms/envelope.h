/*
 * kms/envelope.h
 *
 * The keysmith ciphertext format and the AES-256-GCM code that produces and
 * checks it.  docs/format.md specifies the bytes; this header mirrors it.
 *
 *   offset  size  field
 *        0     1  format version (1)
 *        1     1  algorithm id (1 = AES-256-GCM)
 *        2     4  key id, big-endian
 *        6     4  DEK version, big-endian
 *       10    12  nonce (random)
 *       22     n  GCM ciphertext
 *     22+n    16  GCM tag
 *
 * The 22 header bytes are the first part of the GCM additional data; the
 * second part is one marker byte, 0x00 when there is no context and 0x01
 * followed by the context bytes when there is one.  So a NULL context and an
 * empty one are different, and no header byte can change unnoticed.
 *
 * A KsAead holds cipher contexts already keyed with one DEK, so the per-value
 * path only sets a nonce: that is what makes encrypting a million small
 * values cheap.
 */
#ifndef KEYSMITH_ENVELOPE_H
#define KEYSMITH_ENVELOPE_H

#include <stdbool.h>
#include "kms.h"

#define KS_FORMAT_VERSION		1
#define KS_ALG_AES256GCM		1
#define KS_NONCE_LEN			12
#define KS_TAG_LEN				16
#define KS_HEADER_LEN			22
#define KS_OVERHEAD				(KS_HEADER_LEN + KS_TAG_LEN)

/* Largest plaintext we accept: keeps every length inside a signed int. */
#define KS_MAX_PLAINTEXT		((size_t) 0x3FFFFFFF - KS_OVERHEAD - 64)

typedef struct KsHeader
{
	uint8_t		format_version;
	uint8_t		algorithm;
	uint32_t	key_id;
	uint32_t	key_version;
	uint8_t		nonce[KS_NONCE_LEN];
} KsHeader;

/* An optional caller context, appended to the additional data. */
typedef struct KsContext
{
	bool		present;
	const uint8_t *data;
	size_t		len;
} KsContext;

/*
 * Parse and check the fixed part of a ciphertext: length, version and
 * algorithm.  Does not touch keys.
 */
extern KsStatus KsParseHeader(const uint8_t *ct, size_t ct_len,
							  KsHeader *hdr, KsError *err);

/* Serialise a header into out[KS_HEADER_LEN]. */
extern void KsWriteHeader(const KsHeader *hdr, uint8_t *out);

/* Name of an algorithm id, or NULL when unknown. */
extern const char *KsAlgorithmName(uint8_t algorithm);

/* A DEK ready for use: opaque, owns OpenSSL cipher contexts. */
typedef struct KsAead KsAead;

/* Key a new KsAead with a 32-byte DEK; the caller may wipe dek afterwards. */
extern KsAead *KsAeadCreate(const uint8_t *dek, size_t dek_len, KsError *err);

/* Free a KsAead, wiping its key schedule. NULL is fine. */
extern void KsAeadFree(KsAead *aead);

/*
 * Encrypt pt into out, which must hold pt_len + KS_OVERHEAD bytes.  hdr
 * supplies every header field including the nonce (callers normally fill it
 * with KsNextNonce; tests pass fixed nonces to reproduce test vectors).
 */
extern KsStatus KsAeadSeal(KsAead *aead, const KsHeader *hdr,
						   const KsContext *context,
						   const uint8_t *pt, size_t pt_len,
						   uint8_t *out, KsError *err);

/*
 * Decrypt a whole ciphertext (header included, already parsed into hdr)
 * into out, which must hold ct_len - KS_OVERHEAD bytes.  On any failure
 * out is wiped.
 */
extern KsStatus KsAeadOpen(KsAead *aead, const KsHeader *hdr,
						   const KsContext *context,
						   const uint8_t *ct, size_t ct_len,
						   uint8_t *out, KsError *err);

/*
 * One-shot AES-256-GCM with a raw key, for wrapping DEKs.  aad1/aad2 are
 * concatenated as the additional data; either may be empty.
 */
extern KsStatus KsGcmSealOnce(const uint8_t *key, const uint8_t *nonce,
							  const uint8_t *aad1, size_t aad1_len,
							  const uint8_t *aad2, size_t aad2_len,
							  const uint8_t *pt, size_t pt_len,
							  uint8_t *ct, uint8_t *tag, KsError *err);
extern KsStatus KsGcmOpenOnce(const uint8_t *key, const uint8_t *nonce,
							  const uint8_t *aad1, size_t aad1_len,
							  const uint8_t *aad2, size_t aad2_len,
							  const uint8_t *ct, size_t ct_len,
							  const uint8_t *tag, uint8_t *pt, KsError *err);

/*
 * A fresh random nonce.  Draws from OpenSSL's CSPRNG in blocks to keep the
 * per-value cost low; a fork handler discards the block in a child process
 * so a forked child never reuses its parent's unread bytes.
 */
extern KsStatus KsNextNonce(uint8_t *nonce, KsError *err);

#endif							/* KEYSMITH_ENVELOPE_H */
