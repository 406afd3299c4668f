/*
 * kms/local.c
 *
 * The local KMS provider (see local.h for the file format).  A DEK is
 * wrapped with AES-256-GCM under the newest master key:
 *
 *     byte 0      wrap format (1)
 *     bytes 1-4   master-key version, big-endian
 *     bytes 5-16  nonce
 *     bytes 17-48 encrypted DEK
 *     bytes 49-64 tag
 *
 * The additional data is bytes 0-4 followed by the binding AAD (key name and
 * DEK version), so neither the recorded master-key version nor the key a
 * blob belongs to can be changed without the unwrap failing.
 *
 * Error messages name the file and a line number, never a line's content.
 */
#include <ctype.h>
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envelope.h"
#include "local.h"

/*
 * The provider's own set, for one wrap or unwrap: malloc'd here, since
 * nothing between this load and SetFree can leave the function (kms/ never
 * raises an ERROR), and wiped before it is freed.
 */
static KsStatus SetLoad(const char *path, KsMasterKeySet **setp, KsError *err);

static void
SetFree(KsMasterKeySet *set)
{
	if (set == NULL)
		return;
	KsWipe(set, sizeof(KsMasterKeySet));
	free(set);
}

static int
HexValue(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Parse one non-comment line [p, end) into key; lineno is for messages. */
static KsStatus
ParseLine(const char *p, const char *end, int lineno, KsMasterKeySet *set,
		  KsError *err)
{
	uint64_t	version = 0;
	const char *digits = p;
	const char *hex;
	size_t		hex_len;
	KsMasterKey *key;

	while (p < end && *p >= '0' && *p <= '9')
	{
		version = version * 10 + (uint64_t) (*p - '0');
		if (version > 0x7FFFFFFF)
			return KsFail(err, KS_ERR_KEYFILE_MALFORMED,
						  "line %d: key version is out of range", lineno);
		p++;
	}
	if (p == digits || p == end || *p != ':')
		return KsFail(err, KS_ERR_KEYFILE_MALFORMED,
					  "line %d: expected <version>:<64 hex characters>", lineno);
	if (version == 0)
		return KsFail(err, KS_ERR_KEYFILE_MALFORMED,
					  "line %d: key versions start at 1", lineno);
	hex = ++p;
	hex_len = (size_t) (end - hex);
	for (size_t i = 0; i < hex_len; i++)
	{
		if (HexValue(hex[i]) < 0)
			return KsFail(err, KS_ERR_KEYFILE_MALFORMED,
						  "line %d: key contains a character that is not a hex digit", lineno);
	}
	if (hex_len != 2 * KS_DEK_LEN)
		return KsFail(err, KS_ERR_KEYFILE_MALFORMED,
					  "line %d: key is %zu hex characters long, expected %d (256 bits)",
					  lineno, hex_len, 2 * KS_DEK_LEN);
	for (int i = 0; i < set->count; i++)
	{
		if (set->keys[i].version == (uint32_t) version)
			return KsFail(err, KS_ERR_KEYFILE_MALFORMED,
						  "line %d: key version %u appears more than once",
						  lineno, (unsigned) version);
	}
	if (set->count >= KS_LOCAL_MAX_KEYS)
		return KsFail(err, KS_ERR_KEYFILE_MALFORMED,
					  "more than %d keys", KS_LOCAL_MAX_KEYS);

	key = &set->keys[set->count++];
	key->version = (uint32_t) version;
	for (int i = 0; i < KS_DEK_LEN; i++)
		key->key[i] = (uint8_t) (HexValue(hex[2 * i]) << 4 | HexValue(hex[2 * i + 1]));
	if (key->version > set->current)
		set->current = key->version;
	return KS_OK;
}

KsStatus
KsLocalParse(const char *text, size_t len, KsMasterKeySet *set, KsError *err)
{
	const char *p = text;
	const char *stop = text + len;
	int			lineno = 0;

	set->count = 0;
	set->current = 0;
	while (p < stop)
	{
		const char *eol = memchr(p, '\n', (size_t) (stop - p));
		const char *end = eol ? eol : stop;
		KsStatus	st;

		lineno++;
		if (memchr(p, '\0', (size_t) (end - p)) != NULL)
			return KsFail(err, KS_ERR_KEYFILE_MALFORMED,
						  "line %d: contains a NUL byte", lineno);
		/* trim blanks, tabs and a CR on both sides */
		while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
			p++;
		while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
			end--;
		if (p < end && *p != '#')
		{
			st = ParseLine(p, end, lineno, set, err);
			if (st != KS_OK)
				return st;
		}
		p = eol ? eol + 1 : stop;
	}
	if (set->count == 0)
		return KsFail(err, KS_ERR_KEYFILE_MALFORMED, "the file contains no keys");
	return KS_OK;
}

KsStatus
KsLocalLoad(const char *path, KsMasterKeySet *set, KsError *err)
{
	struct stat st;
	char	   *buf;
	size_t		got = 0;
	int			fd;
	KsStatus	status;

	KsWipe(set, sizeof(KsMasterKeySet));
	if (path == NULL || path[0] == '\0')
		return KsFail(err, KS_ERR_KEYFILE_MISSING,
					  "keysmith.local_master_key_file is not set");

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
	{
		int			e = errno;

		if (e == ENOENT || e == ENOTDIR)
			return KsFail(err, KS_ERR_KEYFILE_MISSING,
						  "master key file \"%s\" does not exist", path);
		return KsFail(err, KS_ERR_KEYFILE_UNREADABLE,
					  "could not open master key file \"%s\": %s", path, strerror(e));
	}
	/* fstat the open file so what we check is what we read */
	if (fstat(fd, &st) != 0)
	{
		int			e = errno;

		close(fd);
		return KsFail(err, KS_ERR_KEYFILE_UNREADABLE,
					  "could not stat master key file \"%s\": %s", path, strerror(e));
	}
	if (!S_ISREG(st.st_mode))
	{
		close(fd);
		return KsFail(err, KS_ERR_KEYFILE_UNREADABLE,
					  "master key file \"%s\" is not a regular file", path);
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
	{
		close(fd);
		return KsFail(err, KS_ERR_KEYFILE_PERMISSIONS,
					  "master key file \"%s\" has mode %04o; group and others must have no access (use 0600)",
					  path, (unsigned) (st.st_mode & 07777));
	}
	if (st.st_size > KS_LOCAL_MAX_FILE_SIZE)
	{
		close(fd);
		return KsFail(err, KS_ERR_KEYFILE_MALFORMED,
					  "master key file \"%s\" is larger than %d bytes", path,
					  KS_LOCAL_MAX_FILE_SIZE);
	}

	buf = malloc((size_t) st.st_size + 1);
	if (buf == NULL)
	{
		close(fd);
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	}
	while (got < (size_t) st.st_size)
	{
		ssize_t		n = read(fd, buf + got, (size_t) st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
		{
			int			e = errno;

			KsWipe(buf, got);
			free(buf);
			close(fd);
			return KsFail(err, KS_ERR_KEYFILE_UNREADABLE,
						  "could not read master key file \"%s\": %s", path, strerror(e));
		}
		if (n == 0)
			break;
		got += (size_t) n;
	}
	close(fd);

	status = KsLocalParse(buf, got, set, err);
	KsWipe(buf, got);
	free(buf);
	if (status != KS_OK)
	{
		/* prefix the path: the parser only knows line numbers */
		char		detail[KS_ERRMSG_LEN];

		memcpy(detail, err->message, sizeof(detail));
		KsFail(err, status, "master key file \"%s\" is malformed: %s", path, detail);
		KsWipe(set, sizeof(KsMasterKeySet));
		return status;
	}
	return KS_OK;
}

static KsStatus
SetLoad(const char *path, KsMasterKeySet **setp, KsError *err)
{
	KsMasterKeySet *set = malloc(sizeof(KsMasterKeySet));
	KsStatus	st;

	*setp = NULL;
	if (set == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	st = KsLocalLoad(path, set, err);
	if (st != KS_OK)
	{
		free(set);				/* KsLocalLoad left it wiped */
		return st;
	}
	*setp = set;
	return KS_OK;
}

static const KsMasterKey *
FindKey(const KsMasterKeySet *set, uint32_t version)
{
	for (int i = 0; i < set->count; i++)
		if (set->keys[i].version == version)
			return &set->keys[i];
	return NULL;
}

uint32_t
KsLocalWrappedKekVersion(const uint8_t *wrapped, size_t len)
{
	if (len != KS_LOCAL_WRAPPED_LEN || wrapped[0] != KS_LOCAL_WRAP_FORMAT)
		return 0;
	return ((uint32_t) wrapped[1] << 24) | ((uint32_t) wrapped[2] << 16) |
		((uint32_t) wrapped[3] << 8) | (uint32_t) wrapped[4];
}

/* Wrap dek under the set's current master key into out. */
static KsStatus
WrapWithSet(const KsMasterKeySet *set, const uint8_t *dek, const uint8_t *aad,
			size_t aad_len, uint8_t *out, size_t *out_len, uint32_t *kek_version,
			KsError *err)
{
	const KsMasterKey *kek = FindKey(set, set->current);
	KsStatus	st;

	out[0] = KS_LOCAL_WRAP_FORMAT;
	out[1] = (uint8_t) (kek->version >> 24);
	out[2] = (uint8_t) (kek->version >> 16);
	out[3] = (uint8_t) (kek->version >> 8);
	out[4] = (uint8_t) kek->version;
	st = KsRandomBytes(out + 5, 12, err);
	if (st == KS_OK)
		st = KsGcmSealOnce(kek->key, out + 5, out, 5, aad, aad_len,
						   dek, KS_DEK_LEN, out + 17, out + 17 + KS_DEK_LEN, err);
	if (st == KS_OK)
	{
		*out_len = KS_LOCAL_WRAPPED_LEN;
		*kek_version = kek->version;
	}
	return st;
}

/* Unwrap a blob with the master key version it names (kms/local.h). */
KsStatus
KsLocalUnwrapWithSet(const KsMasterKeySet *set, const uint8_t *wrapped, size_t wrapped_len,
			  const uint8_t *aad, size_t aad_len, uint8_t *dek, KsError *err)
{
	uint32_t	version = KsLocalWrappedKekVersion(wrapped, wrapped_len);
	const KsMasterKey *kek = FindKey(set, version);
	KsStatus	st;

	if (kek == NULL)
		return KsFail(err, KS_ERR_KEK_VERSION_UNKNOWN,
					  "master key version %u is not in the master key file",
					  (unsigned) version);
	st = KsGcmOpenOnce(kek->key, wrapped + 5, wrapped, 5, aad, aad_len,
					   wrapped + 17, KS_DEK_LEN, wrapped + 17 + KS_DEK_LEN,
					   dek, err);
	if (st == KS_ERR_AUTH_FAILED)
		return KsFail(err, KS_ERR_UNWRAP_FAILED,
					  "wrapped data key does not authenticate under master key version %u",
					  (unsigned) version);
	return st;
}

/* The master key file of an instance: its option master_key_file. */
static const char *
KeyFile(const KsKmsInstance *kms)
{
	return KsKmsOptionValue(kms, "master_key_file");
}

static void
FormatKekVersion(uint32_t version, char *out)
{
	snprintf(out, KS_KEK_VERSION_LEN, "%u", (unsigned) version);
}

static KsStatus
LocalCheckOptions(const KsKmsInstance *kms, KsError *err)
{
	const char *path = KeyFile(kms);

	/* a relative path is relative to the data directory, as for the setting */
	if (path != NULL && path[0] == '\0')
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "option master_key_file must not be empty");
	return KS_OK;
}

static KsStatus
LocalCheckKey(const KsKmsInstance *kms, const char *kms_key, KsError *err)
{
	if (kms_key != NULL)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT,
					  "a key of KMS type local takes no kms_key: its KEK is the newest master key of the file");
	return KS_OK;
}

static KsStatus
LocalWrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *dek, size_t dek_len,
		  const uint8_t *aad, size_t aad_len, uint8_t *out, size_t *out_len,
		  char *kek_version, KsError *err)
{
	KsMasterKeySet *set;
	KsStatus	st;
	uint32_t	version = 0;

	if (dek_len != KS_DEK_LEN)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "a data key must be %d bytes", KS_DEK_LEN);
	st = SetLoad(KeyFile(kms), &set, err);
	if (st != KS_OK)
		return st;
	st = WrapWithSet(set, dek, aad, aad_len, out, out_len, &version, err);
	SetFree(set);
	if (st == KS_OK)
		FormatKekVersion(version, kek_version);
	return st;
}

static KsStatus
LocalUnwrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *wrapped, size_t wrapped_len,
			const uint8_t *aad, size_t aad_len, uint8_t *dek, size_t dek_len,
			KsError *err)
{
	KsMasterKeySet *set;
	KsStatus	st;

	if (KsLocalWrappedKekVersion(wrapped, wrapped_len) == 0 || dek_len != KS_DEK_LEN)
		return KsFail(err, KS_ERR_WRAP_MALFORMED,
					  "wrapped data key is not in the local provider's format");
	st = SetLoad(KeyFile(kms), &set, err);
	if (st != KS_OK)
		return st;
	st = KsLocalUnwrapWithSet(set, wrapped, wrapped_len, aad, aad_len, dek, err);
	SetFree(set);
	return st;
}

/* One read of the key file; the DEK exists only on this stack, then wiped. */
static KsStatus
LocalRewrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *wrapped, size_t wrapped_len,
			const uint8_t *aad, size_t aad_len, uint8_t *out, size_t *out_len,
			char *kek_version, KsError *err)
{
	KsMasterKeySet *set;
	uint8_t		dek[KS_DEK_LEN];
	KsStatus	st;
	uint32_t	version = 0;

	if (KsLocalWrappedKekVersion(wrapped, wrapped_len) == 0)
		return KsFail(err, KS_ERR_WRAP_MALFORMED,
					  "wrapped data key is not in the local provider's format");
	st = SetLoad(KeyFile(kms), &set, err);
	if (st != KS_OK)
		return st;
	st = KsLocalUnwrapWithSet(set, wrapped, wrapped_len, aad, aad_len, dek, err);
	if (st == KS_OK)
		st = WrapWithSet(set, dek, aad, aad_len, out, out_len, &version, err);
	KsWipe(dek, sizeof(dek));
	SetFree(set);
	if (st == KS_OK)
		FormatKekVersion(version, kek_version);
	return st;
}

/* A blob needs rewrapping unless it is under the file's newest master key. */
static KsStatus
LocalNeedsRewrap(const KsKmsInstance *kms, const char *kms_key, const char *kek_version, int *needs,
				 KsError *err)
{
	KsMasterKeySet *set;
	char		current[KS_KEK_VERSION_LEN];
	KsStatus	st = SetLoad(KeyFile(kms), &set, err);

	if (st != KS_OK)
		return st;
	FormatKekVersion(set->current, current);
	SetFree(set);
	*needs = strcmp(current, kek_version) != 0;
	return KS_OK;
}

static const char *const LocalOptions[] = {"master_key_file", NULL};

const KsKmsProvider KsLocalProvider = {
	.type = "local",
	.option_names = LocalOptions,
	.check_options = LocalCheckOptions,
	.check_key = LocalCheckKey,
	.wrap = LocalWrap,
	.unwrap = LocalUnwrap,
	.rewrap = LocalRewrap,
	.needs_rewrap = LocalNeedsRewrap,
};

/*
 * Append a new random master key, version = highest + 1, to the file.  The
 * file is validated first (so a broken file is never extended), the line is
 * written with one write() and fsync'd.  The new key never leaves this
 * function except into the file.
 */
KsStatus
KsLocalAppendKey(const char *path, uint32_t *new_version, KsError *err)
{
	KsMasterKeySet *set;
	uint8_t		key[KS_DEK_LEN];
	char		line[32 + 2 * KS_DEK_LEN];
	int			len;
	int			fd;
	uint32_t	version;
	KsStatus	st;
	char		last = '\n';
	struct stat sb;

	st = SetLoad(path, &set, err);
	if (st != KS_OK)
		return st;
	version = set->current + 1;
	SetFree(set);
	if (version > 0x7FFFFFFF)
		return KsFail(err, KS_ERR_KEYFILE_MALFORMED, "master key versions are exhausted");

	fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC);
	if (fd < 0)
		return KsFail(err, KS_ERR_KEYFILE_UNREADABLE,
					  "could not open master key file \"%s\" for writing: %s", path, strerror(errno));
	/* start on a new line if the file does not end with one */
	if (fstat(fd, &sb) == 0 && sb.st_size > 0 &&
		pread(fd, &last, 1, sb.st_size - 1) != 1)
		last = '\n';

	st = KsRandomBytes(key, sizeof(key), err);
	if (st != KS_OK)
	{
		close(fd);
		return st;
	}
	len = snprintf(line, sizeof(line), "%s%u:", last == '\n' ? "" : "\n", (unsigned) version);
	for (int i = 0; i < KS_DEK_LEN; i++)
		len += snprintf(line + len, sizeof(line) - (size_t) len, "%02x", key[i]);
	line[len++] = '\n';
	KsWipe(key, sizeof(key));

	if (write(fd, line, (size_t) len) != len || fsync(fd) != 0)
	{
		int			e = errno;

		KsWipe(line, sizeof(line));
		close(fd);
		return KsFail(err, KS_ERR_KEYFILE_UNREADABLE,
					  "could not append to master key file \"%s\": %s", path, strerror(e));
	}
	KsWipe(line, sizeof(line));
	close(fd);
	*new_version = version;
	return KS_OK;
}
