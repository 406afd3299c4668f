/*
 * kms/common.c
 *
 * Helpers shared by every part of kms/: error reporting into a KsError,
 * wiping memory, the CSPRNG, the AAD that binds a wrapped DEK to its key,
 * and the registry that finds a provider by name.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "kms.h"

KsStatus
KsFail(KsError *err, KsStatus status, const char *fmt,...)
{
	if (err != NULL)
	{
		va_list		ap;

		err->status = status;
		va_start(ap, fmt);
		vsnprintf(err->message, sizeof(err->message), fmt, ap);
		va_end(ap);
	}
	return status;
}

void
KsWipe(void *buf, size_t len)
{
	if (buf != NULL && len > 0)
		OPENSSL_cleanse(buf, len);
}

KsStatus
KsRandomBytes(uint8_t *buf, size_t len, KsError *err)
{
	if (len > (size_t) 0x7FFFFFFF)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "random request too large");
	if (RAND_bytes(buf, (int) len) != 1)
		return KsFail(err, KS_ERR_CRYPTO, "the random number generator failed");
	return KS_OK;
}

KsStatus
KsRandomToken(char *out, size_t len, const char *alphabet, KsError *err)
{
	size_t		nalpha = strlen(alphabet);
	unsigned	limit;
	uint8_t		buf[64];
	size_t		have = 0,
				pos = sizeof(buf);

	if (nalpha < 2 || nalpha > 256)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "alphabet must have 2 to 256 characters");
	limit = 256 - (256 % nalpha);	/* bytes at or above it would bias */
	while (have < len)
	{
		if (pos == sizeof(buf))
		{
			if (KsRandomBytes(buf, sizeof(buf), err) != KS_OK)
			{
				KsWipe(buf, sizeof(buf));
				return err->status;
			}
			pos = 0;
		}
		if (buf[pos] < limit)
			out[have++] = alphabet[buf[pos] % nalpha];
		pos++;
	}
	out[len] = '\0';
	KsWipe(buf, sizeof(buf));
	return KS_OK;
}

/*
 * The binding AAD is "keysmith-dek\0" || key name || "\0" || version (BE32).
 * The separators keep ("ab", 1) and ("a", ...) from ever colliding.
 */
size_t
KsDekBindingAad(const char *key_name, uint32_t dek_version,
				uint8_t *out, size_t out_len)
{
	static const char prefix[] = "keysmith-dek";
	size_t		name_len = strlen(key_name);
	size_t		need = sizeof(prefix) + name_len + 1 + 4;
	uint8_t    *p = out;

	if (need > out_len)
		return 0;
	memcpy(p, prefix, sizeof(prefix));	/* includes the NUL */
	p += sizeof(prefix);
	memcpy(p, key_name, name_len);
	p += name_len;
	*p++ = 0;
	*p++ = (uint8_t) (dek_version >> 24);
	*p++ = (uint8_t) (dek_version >> 16);
	*p++ = (uint8_t) (dek_version >> 8);
	*p++ = (uint8_t) dek_version;
	return need;
}

int
KsDekBindingParse(const uint8_t *aad, size_t aad_len, char *key_name, size_t name_len,
				  uint32_t *dek_version)
{
	static const char prefix[] = "keysmith-dek";
	const uint8_t *name = aad + sizeof(prefix);
	const uint8_t *nul;
	size_t		n;

	if (aad_len < sizeof(prefix) + 1 + 4 || memcmp(aad, prefix, sizeof(prefix)) != 0)
		return 0;
	nul = memchr(name, 0, aad_len - sizeof(prefix) - 4);
	if (nul == NULL || nul + 1 + 4 != aad + aad_len)
		return 0;
	n = (size_t) (nul - name);
	if (n + 1 > name_len)
		return 0;
	memcpy(key_name, name, n + 1);
	*dek_version = ((uint32_t) nul[1] << 24) | ((uint32_t) nul[2] << 16) |
		((uint32_t) nul[3] << 8) | (uint32_t) nul[4];
	return 1;
}

static const KsKmsProvider *const KsProviders[] = {
	&KsLocalProvider,
	&KsVaultTransitProvider,
	&KsAwsKmsProvider,
	&KsAzureKeyVaultProvider,
	&KsGcpKmsProvider,
};

const char *
KsKmsTypeList(void)
{
	return "local, vault_transit, aws_kms, azure_keyvault, gcp_kms";
}

const KsKmsProvider *
KsKmsLookup(const char *type)
{
	for (size_t i = 0; i < sizeof(KsProviders) / sizeof(KsProviders[0]); i++)
	{
		if (strcmp(KsProviders[i]->type, type) == 0)
			return KsProviders[i];
	}
	return NULL;
}

const char *
KsKmsOptionValue(const KsKmsInstance *kms, const char *name)
{
	for (int i = 0; i < kms->noptions; i++)
		if (strcmp(kms->options[i].name, name) == 0)
			return kms->options[i].value;
	return NULL;
}

KsStatus
KsKmsCheckOptions(const KsKmsInstance *kms, KsError *err)
{
	for (int i = 0; i < kms->noptions; i++)
	{
		const char *const *known = kms->provider->option_names;
		int			found = 0;

		for (; known && *known; known++)
			if (strcmp(*known, kms->options[i].name) == 0)
				found = 1;
		if (!found)
			return KsFail(err, KS_ERR_INVALID_ARGUMENT, "unknown option \"%s\" for KMS type %s",
						  kms->options[i].name, kms->provider->type);
		for (int j = 0; j < i; j++)
			if (strcmp(kms->options[j].name, kms->options[i].name) == 0)
				return KsFail(err, KS_ERR_INVALID_ARGUMENT, "option \"%s\" is given twice",
							  kms->options[i].name);
	}
	return kms->provider->check_options ? kms->provider->check_options(kms, err) : KS_OK;
}
