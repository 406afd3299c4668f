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
 *
 * The parsed file is kept for the next wrap or unwrap of this process (see
 * "The parsed file, kept" below): reading and wiping the 150 kB set on every
 * unwrap was most of the cost of a cold key load (issue 22, part 2).
 */
#include <ctype.h>
#include <stdio.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "envelope.h"
#include "local.h"

static KsStatus LoadFile(const char *path, KsMasterKeySet *set, struct stat *read_st,
						 KsError *err);

/*
 * The parsed file, kept: one set per process, in a page-aligned mapping of
 * its own (mlock'd where the limit allows, left out of core dumps), never
 * PostgreSQL memory.  It is used again only while stat() of the same path
 * shows the very file that was read: same device, inode, size, mode, owner,
 * group, and modification and change times to the nanosecond (the change
 * time moves on chmod, chown and on any write, and cannot be set back).  On
 * any difference, or if stat fails, the set is wiped and the file read and
 * checked again, with every refusal of a first read.
 *
 * File times come from a clock that ticks every few milliseconds, so a file
 * rewritten in place at the same size within one tick of being read would
 * look unchanged.  A set is therefore kept only once the file's newest time
 * is KeepAfterMs older than the moment it was read (as git treats "racily
 * clean" index entries); until then each use reads the file again.  The
 * unit tests lower KeepAfterMs to exercise the kept set.
 *
 * The set is wiped when it stops matching, by KsLocalForget and at exit.
 */
static KsMasterKeySet *Kept;		/* the mapping, NULL until first use */
static size_t KeptMapLen;
static int	KeptValid;			/* Kept holds the file KeptPath, KeptStat */
static char KeptPath[1024];
static struct stat KeptStat;
int			ks_local_keep_after_ms = 2000;

void
KsLocalForget(void)
{
	if (Kept != NULL)
		KsWipe(Kept, sizeof(KsMasterKeySet));
	KeptValid = 0;
	KeptPath[0] = '\0';
}

static void
ForgetAtExit(void)
{
	KsLocalForget();
}

static int
SameFile(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
		a->st_size == b->st_size && a->st_mode == b->st_mode &&
		a->st_uid == b->st_uid && a->st_gid == b->st_gid &&
		a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
		a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
		a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
		a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Whether the file's times are far enough before now to trust them. */
static int
Settled(const struct stat *st)
{
	struct timespec now;
	const struct timespec *newest = &st->st_mtim;
	int64_t		age_ms;

	if (st->st_ctim.tv_sec > newest->tv_sec ||
		(st->st_ctim.tv_sec == newest->tv_sec && st->st_ctim.tv_nsec > newest->tv_nsec))
		newest = &st->st_ctim;
	if (clock_gettime(CLOCK_REALTIME, &now) != 0)
		return 0;
	age_ms = ((int64_t) now.tv_sec - (int64_t) newest->tv_sec) * 1000 +
		((int64_t) now.tv_nsec - (int64_t) newest->tv_nsec) / 1000000;
	return age_ms >= ks_local_keep_after_ms;
}

static KsStatus
MapKept(KsError *err)
{
	long		page = sysconf(_SC_PAGESIZE);
	void	   *p;

	if (page <= 0)
		page = 4096;
	KeptMapLen = (sizeof(KsMasterKeySet) + (size_t) page - 1) / (size_t) page * (size_t) page;
	p = mmap(NULL, KeptMapLen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return KsFail(err, KS_ERR_NO_MEMORY, "could not map memory for the master keys");
	/* best effort: out of swap and out of core dumps */
	(void) mlock(p, KeptMapLen);
#ifdef MADV_DONTDUMP
	(void) madvise(p, KeptMapLen, MADV_DONTDUMP);
#endif
	Kept = p;
	atexit(ForgetAtExit);
	return KS_OK;
}

/*
 * The set of the file at path, for one wrap or unwrap: the kept set if the
 * file is unchanged, else the file read again.  Pair with SetRelease.
 */
static KsStatus
SetLoad(const char *path, const KsMasterKeySet **setp, KsError *err)
{
	struct stat st;
	KsStatus	status;

	*setp = NULL;
	if (KeptValid && path != NULL && strcmp(path, KeptPath) == 0 &&
		stat(path, &st) == 0 && SameFile(&st, &KeptStat))
	{
		*setp = Kept;
		return KS_OK;
	}
	KsLocalForget();
	if (Kept == NULL && (status = MapKept(err)) != KS_OK)
		return status;
	status = LoadFile(path, Kept, &st, err);
	if (status != KS_OK)
		return status;			/* LoadFile left it wiped */
	if (strlen(path) < sizeof(KeptPath) && Settled(&st))
	{
		strcpy(KeptPath, path);
		KeptStat = st;
		KeptValid = 1;
	}
	*setp = Kept;
	return KS_OK;
}

/* The end of one use: a set not kept is wiped at once. */
static void
SetRelease(const KsMasterKeySet *set)
{
	if (set != NULL && !KeptValid)
		KsWipe(Kept, sizeof(KsMasterKeySet));
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

	return LoadFile(path, set, &st, err);
}

/*
 * Read the whole master key file, after the checks every reader makes
 * (regular file, no group or other access, size), into *bufp (malloc'd:
 * the caller wipes and frees it) with its fstat.
 */
static KsStatus
ReadKeyFile(const char *path, char **bufp, size_t *lenp, struct stat *read_st, KsError *err)
{
	struct stat st;
	char	   *buf;
	size_t		got = 0;
	int			fd;

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
	*bufp = buf;
	*lenp = got;
	*read_st = st;
	return KS_OK;
}

/* KsLocalLoad, also returning the fstat of what was read. */
static KsStatus
LoadFile(const char *path, KsMasterKeySet *set, struct stat *read_st, KsError *err)
{
	struct stat st;
	char	   *buf;
	size_t		got;
	KsStatus	status;

	KsWipe(set, sizeof(KsMasterKeySet));
	status = ReadKeyFile(path, &buf, &got, &st, err);
	if (status != KS_OK)
		return status;
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
	*read_st = st;
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
	const KsMasterKeySet *set;
	KsStatus	st;
	uint32_t	version = 0;

	if (dek_len != KS_DEK_LEN)
		return KsFail(err, KS_ERR_INVALID_ARGUMENT, "a data key must be %d bytes", KS_DEK_LEN);
	st = SetLoad(KeyFile(kms), &set, err);
	if (st != KS_OK)
		return st;
	st = WrapWithSet(set, dek, aad, aad_len, out, out_len, &version, err);
	SetRelease(set);
	if (st == KS_OK)
		FormatKekVersion(version, kek_version);
	return st;
}

static KsStatus
LocalUnwrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *wrapped, size_t wrapped_len,
			const uint8_t *aad, size_t aad_len, uint8_t *dek, size_t dek_len,
			KsError *err)
{
	const KsMasterKeySet *set;
	KsStatus	st;

	if (KsLocalWrappedKekVersion(wrapped, wrapped_len) == 0 || dek_len != KS_DEK_LEN)
		return KsFail(err, KS_ERR_WRAP_MALFORMED,
					  "wrapped data key is not in the local provider's format");
	st = SetLoad(KeyFile(kms), &set, err);
	if (st != KS_OK)
		return st;
	st = KsLocalUnwrapWithSet(set, wrapped, wrapped_len, aad, aad_len, dek, err);
	SetRelease(set);
	return st;
}

/* One read of the key file; the DEK exists only on this stack, then wiped. */
static KsStatus
LocalRewrap(const KsKmsInstance *kms, const char *kms_key, const uint8_t *wrapped, size_t wrapped_len,
			const uint8_t *aad, size_t aad_len, uint8_t *out, size_t *out_len,
			char *kek_version, KsError *err)
{
	const KsMasterKeySet *set;
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
	SetRelease(set);
	if (st == KS_OK)
		FormatKekVersion(version, kek_version);
	return st;
}

/* A blob needs rewrapping unless it is under the file's newest master key. */
static KsStatus
LocalNeedsRewrap(const KsKmsInstance *kms, const char *kms_key, const char *kek_version, int *needs,
				 KsError *err)
{
	const KsMasterKeySet *set;
	char		current[KS_KEK_VERSION_LEN];
	KsStatus	st = SetLoad(KeyFile(kms), &set, err);

	if (st != KS_OK)
		return st;
	FormatKekVersion(set->current, current);
	SetRelease(set);
	*needs = strcmp(current, kek_version) != 0;
	return KS_OK;
}

/*
 * The check value of a master key: HMAC-SHA256 of a fixed label under it,
 * its first KS_KEK_CHECK_LEN bytes.  Not the classic encryption of a zero
 * block: under GCM that block is the GHASH key.  The label names the
 * purpose, so the value cannot be any other output keysmith makes.
 */
#define KEK_CHECK_LABEL "keysmith local master key check value v1"

static KsStatus
CheckValue(const KsMasterKey *kek, uint8_t *check, KsError *err)
{
	uint8_t		mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;

	if (HMAC(EVP_sha256(), kek->key, KS_DEK_LEN, (const unsigned char *) KEK_CHECK_LABEL,
			 sizeof(KEK_CHECK_LABEL) - 1, mac, &mac_len) == NULL || mac_len < KS_KEK_CHECK_LEN)
		return KsFail(err, KS_ERR_CRYPTO, "HMAC-SHA256 failed");
	memcpy(check, mac, KS_KEK_CHECK_LEN);
	KsWipe(mac, sizeof(mac));
	return KS_OK;
}

/*
 * One load of the file for both: the blob must open under the key whose
 * check value is returned, so a file swapped between a wrap and this check
 * cannot vouch for a DEK wrapped under another key.  When the blob does not
 * open (KS_ERR_UNWRAP_FAILED), check and kek_version are still those of the
 * version it names, for the caller's hint.
 */
/*
 * The identity of a key set: SHA-256 over each version and its check
 * value, in file order (check values reveal nothing of the keys, so
 * neither does this), first KS_KEK_CHECK_LEN bytes.
 */
static KsStatus
SetIdentity(const KsMasterKeySet *set, uint8_t *set_id, KsError *err)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t		digest[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	KsStatus	st = KS_OK;
	int			ok;

	if (md == NULL)
		return KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
	ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	for (int i = 0; ok && i < set->count; i++)
	{
		uint8_t		cv[KS_KEK_CHECK_LEN];
		uint8_t		v[4] = {(uint8_t) (set->keys[i].version >> 24), (uint8_t) (set->keys[i].version >> 16),
		(uint8_t) (set->keys[i].version >> 8), (uint8_t) set->keys[i].version};

		st = CheckValue(&set->keys[i], cv, err);
		if (st != KS_OK)
			break;
		ok = EVP_DigestUpdate(md, v, sizeof(v)) && EVP_DigestUpdate(md, cv, sizeof(cv));
	}
	if (st == KS_OK && (!ok || !EVP_DigestFinal_ex(md, digest, &len) || len < KS_KEK_CHECK_LEN))
		st = KsFail(err, KS_ERR_CRYPTO, "SHA-256 failed");
	if (st == KS_OK)
		memcpy(set_id, digest, KS_KEK_CHECK_LEN);
	EVP_MD_CTX_free(md);
	return st;
}

static KsStatus
LocalKekCheck(const KsKmsInstance *kms, const char *kms_key, char *kek_version,
			  const uint8_t *wrapped, size_t wrapped_len, const uint8_t *aad, size_t aad_len,
			  uint8_t *check, uint8_t *set_id, KsError *err)
{
	const KsMasterKeySet *set;
	const KsMasterKey *kek;
	uint32_t	version;
	KsStatus	st;

	if (wrapped != NULL)
	{
		version = KsLocalWrappedKekVersion(wrapped, wrapped_len);
		if (version == 0)
			return KsFail(err, KS_ERR_WRAP_MALFORMED,
						  "wrapped data key is not in the local provider's format");
	}
	else
	{
		char	   *end;
		unsigned long v;

		errno = 0;
		v = strtoul(kek_version, &end, 10);
		if (errno != 0 || end == kek_version || *end != '\0' || v == 0 || v > UINT32_MAX)
			return KsFail(err, KS_ERR_KEK_VERSION_UNKNOWN, "\"%s\" is not a master key version", kek_version);
		version = (uint32_t) v;
	}
	st = SetLoad(KeyFile(kms), &set, err);
	if (st != KS_OK)
		return st;
	if (set_id != NULL && (st = SetIdentity(set, set_id, err)) != KS_OK)
	{
		SetRelease(set);
		return st;
	}
	kek = FindKey(set, version);
	if (kek == NULL)
		st = KsFail(err, KS_ERR_KEK_VERSION_UNKNOWN,
					"master key version %u is not in the master key file", (unsigned) version);
	else
	{
		st = CheckValue(kek, check, err);
		if (st == KS_OK && wrapped != NULL)
		{
			uint8_t		dek[KS_DEK_LEN];

			FormatKekVersion(version, kek_version);
			st = KsLocalUnwrapWithSet(set, wrapped, wrapped_len, aad, aad_len, dek, err);
			KsWipe(dek, sizeof(dek));
		}
	}
	SetRelease(set);
	return st;
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
	.kek_check = LocalKekCheck,
};

/*
 * Open the key file and take an exclusive flock on it, for the two writers
 * (append, retire): a retire renames a new file over the path, so a writer
 * that waited for the lock checks that what it holds is still the file at
 * path, and opens it again if not.  Returns the fd, or -1 with err set.
 */
static int
OpenLocked(const char *path, int flags, KsError *err)
{
	for (int tries = 0; tries < 100; tries++)
	{
		struct stat held;
		struct stat now;
		int			fd = open(path, flags);

		if (fd < 0)
		{
			KsFail(err, KS_ERR_KEYFILE_UNREADABLE,
				   "could not open master key file \"%s\" for writing: %s", path, strerror(errno));
			return -1;
		}
		if (flock(fd, LOCK_EX) != 0)
		{
			int			e = errno;

			close(fd);
			KsFail(err, KS_ERR_KEYFILE_UNREADABLE, "could not lock master key file \"%s\": %s", path, strerror(e));
			return -1;
		}
		if (fstat(fd, &held) == 0 && stat(path, &now) == 0 &&
			held.st_dev == now.st_dev && held.st_ino == now.st_ino)
			return fd;
		close(fd);				/* replaced while we waited: the new one */
	}
	KsFail(err, KS_ERR_KEYFILE_UNREADABLE, "master key file \"%s\" keeps being replaced", path);
	return -1;
}

/*
 * Append a new random master key, version = highest + 1, to the file.  The
 * file is validated first (so a broken file is never extended), the line is
 * written with one write() and fsync'd.  The new key never leaves this
 * function except into the file.
 */
KsStatus
KsLocalAppendKey(const char *path, uint32_t *new_version, KsError *err)
{
	const KsMasterKeySet *set;
	uint8_t		key[KS_DEK_LEN];
	char		line[32 + 2 * KS_DEK_LEN];
	int			len;
	int			fd;
	uint32_t	version;
	KsStatus	st;
	char		last = '\n';
	struct stat sb;

	/* the lock first: the version is read from, and appended to, one file */
	fd = OpenLocked(path, O_RDWR | O_APPEND | O_CLOEXEC, err);
	if (fd < 0)
		return err->status;
	st = SetLoad(path, &set, err);
	if (st != KS_OK)
	{
		close(fd);
		return st;
	}
	version = set->current + 1;
	SetRelease(set);
	if (version > 0x7FFFFFFF)
	{
		close(fd);
		return KsFail(err, KS_ERR_KEYFILE_MALFORMED, "master key versions are exhausted");
	}
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

/*
 * Remove master key version `version` from the file: under the writers'
 * lock (OpenLocked), the file is read and checked whole, written again
 * without that key's line to a new "<path>.retire.XXXXXX" (mode 0600 or
 * narrower), fsync'd, renamed over the file, and the directory fsync'd.
 * The newest version (the one new wraps use) is never retired.  Every
 * buffer that held the file is wiped.  What the file system kept of the old
 * blocks is beyond this function: docs/key-rotation.md.
 */
KsStatus
KsLocalRetireKey(const char *path, uint32_t version, KsError *err)
{
	KsMasterKeySet *set;
	struct stat st;
	char	   *buf;
	char	   *out;
	char	   *tmp;
	char	   *slash;
	size_t		len;
	size_t		out_len = 0;
	const char *p;
	KsStatus	status;
	int			fd;
	int			lockfd;
	bool		found = false;
	char	   *real;

	/*
	 * The file itself, not a link to it: a rename over a symbolic link
	 * would replace the link and leave the key in the file it named, and
	 * another hard link would keep the old contents whole.
	 */
	real = realpath(path, NULL);
	if (real == NULL)
		return KsFail(err, KS_ERR_KEYFILE_UNREADABLE, "could not resolve master key file \"%s\": %s", path,
					  strerror(errno));
	path = real;
	/* held to the rename: no append or other retire in between */
	lockfd = OpenLocked(path, O_RDONLY | O_CLOEXEC, err);
	if (lockfd < 0)
	{
		free(real);
		return err->status;
	}
	status = ReadKeyFile(path, &buf, &len, &st, err);
	if (status != KS_OK)
	{
		close(lockfd);
		free(real);
		return status;
	}
	if (st.st_nlink > 1)
	{
		KsWipe(buf, len);
		free(buf);
		close(lockfd);
		status = KsFail(err, KS_ERR_INVALID_ARGUMENT,
						"master key file \"%s\" has %lu hard links: a version retired here would stay in the others",
						path, (unsigned long) st.st_nlink);
		free(real);
		return status;
	}
	set = malloc(sizeof(KsMasterKeySet));
	out = malloc(len + 1);
	tmp = malloc(strlen(path) + sizeof(".retire.XXXXXX"));
	if (set == NULL || out == NULL || tmp == NULL)
	{
		status = KsFail(err, KS_ERR_NO_MEMORY, "out of memory");
		goto done;
	}
	status = KsLocalParse(buf, len, set, err);
	if (status != KS_OK)
		goto done;
	if (version == set->current)
	{
		status = KsFail(err, KS_ERR_INVALID_ARGUMENT,
						"master key version %u is the newest, which new keys are wrapped with", (unsigned) version);
		goto done;
	}
	/* copy every line but the key line of version */
	for (p = buf; p < buf + len;)
	{
		const char *eol = memchr(p, '\n', (size_t) (buf + len - p));
		const char *next = eol ? eol + 1 : buf + len;
		const char *q = p;
		const char *digits;
		uint64_t	v = 0;

		while (q < next && (*q == ' ' || *q == '\t' || *q == '\r'))
			q++;
		digits = q;
		while (q < next && *q >= '0' && *q <= '9' && v <= 0x7FFFFFFF)
			v = v * 10 + (uint64_t) (*q++ - '0');
		if (q < next && *q == ':' && q > digits && v == version)
			found = true;
		else
		{
			memcpy(out + out_len, p, (size_t) (next - p));
			out_len += (size_t) (next - p);
		}
		p = next;
	}
	if (!found)
	{
		status = KsFail(err, KS_ERR_KEK_VERSION_UNKNOWN,
						"master key file \"%s\" has no version %u", path, (unsigned) version);
		goto done;
	}
	/* what is written must parse, with one key fewer */
	{
		int			before = set->count;

		status = KsLocalParse(out, out_len, set, err);
		if (status == KS_OK && set->count != before - 1)
			status = KsFail(err, KS_ERR_KEYFILE_MALFORMED, "retiring version %u would change other keys",
							(unsigned) version);
		if (status != KS_OK)
			goto done;
	}
	sprintf(tmp, "%s.retire.XXXXXX", path);
	fd = mkstemp(tmp);			/* mode 0600, a name no one else has */
	if (fd < 0)
	{
		status = KsFail(err, KS_ERR_KEYFILE_UNREADABLE, "could not create \"%s\": %s", tmp, strerror(errno));
		goto done;
	}
	(void) fchmod(fd, st.st_mode & 0600);
	if (write(fd, out, out_len) != (ssize_t) out_len || fsync(fd) != 0)
	{
		int			e = errno;

		close(fd);
		(void) unlink(tmp);
		status = KsFail(err, KS_ERR_KEYFILE_UNREADABLE, "could not write \"%s\": %s", tmp, strerror(e));
		goto done;
	}
	close(fd);
	if (rename(tmp, path) != 0)
	{
		int			e = errno;

		(void) unlink(tmp);
		status = KsFail(err, KS_ERR_KEYFILE_UNREADABLE, "could not rename \"%s\" to \"%s\": %s", tmp, path,
						strerror(e));
		goto done;
	}
	slash = strrchr(tmp, '/');
	if (slash != NULL)
		*slash = '\0';
	fd = open(slash != NULL ? (tmp[0] ? tmp : "/") : ".", O_RDONLY | O_CLOEXEC);
	if (fd >= 0)
	{
		(void) fsync(fd);
		close(fd);
	}
	KsLocalForget();
done:
	close(lockfd);
	KsWipe(buf, len);
	free(buf);
	free(real);
	if (out != NULL)
	{
		KsWipe(out, len + 1);
		free(out);
	}
	if (set != NULL)
	{
		KsWipe(set, sizeof(KsMasterKeySet));
		free(set);
	}
	free(tmp);
	return status;
}
