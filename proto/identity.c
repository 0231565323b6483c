#include "identity.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const uint8_t key_magic[8] = { 'G', 'P', 'K', 'E', 'Y', 0, 1, 0 };

/* Writes "PATH: sentence" into err and returns r. */
__attribute__((format(printf, 5, 6))) static int
fail(char *err, size_t errlen, int r, const char *path, const char *fmt, ...)
{
	char detail[200];
	va_list ap;

	if (!err || !errlen)
		return r;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	snprintf(err, errlen, "%s: %s", path, detail);
	return r;
}

static struct gp_identity *identity_new(void)
{
	struct gp_identity *id;

	if (sodium_init() < 0)
		return NULL;
	id = calloc(1, sizeof(*id));
	if (!id)
		return NULL;
	id->private_key = sodium_malloc(GP_KEY_SIZE);
	if (!id->private_key) {
		free(id);
		return NULL;
	}
	return id;
}

void gp_identity_destroy(struct gp_identity *id)
{
	if (!id)
		return;
	/* sodium_free wipes the guarded allocation before releasing it. */
	sodium_free(id->private_key);
	free(id);
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int gp_identity_create_file(const char *path, struct gp_identity **ret,
			    char *err, size_t errlen)
{
	uint8_t file[GP_IDENTITY_FILE_SIZE];
	struct gp_identity *id;
	int fd, r;

	id = identity_new();
	if (!id)
		return fail(err, errlen, -ENOMEM, path, "%s", "cannot allocate secure memory");
	randombytes_buf(id->private_key, GP_KEY_SIZE);
	crypto_scalarmult_base(id->public_key, id->private_key);

	/* O_EXCL: never overwrite an existing key, even a corrupt one. */
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		gp_identity_destroy(id);
		return fail(err, errlen, r, path, "cannot create key file: %s", strerror(-r));
	}
	memcpy(file, key_magic, sizeof(key_magic));
	memcpy(file + 8, id->private_key, GP_KEY_SIZE);
	crypto_generichash(file + 40, 8, file, 40, NULL, 0);
	r = write_all(fd, file, sizeof(file));
	if (r >= 0 && fsync(fd) < 0)
		r = -errno;
	sodium_memzero(file, sizeof(file));
	if (close(fd) < 0 && r >= 0)
		r = -errno;
	if (r < 0) {
		unlink(path);
		gp_identity_destroy(id);
		return fail(err, errlen, r, path, "cannot write key file: %s", strerror(-r));
	}
	*ret = id;
	return 0;
}

int gp_identity_parse(const uint8_t *data, size_t len, const char *name,
		      struct gp_identity **ret, char *err, size_t errlen)
{
	uint8_t sum[8];
	struct gp_identity *id;

	if (len != GP_IDENTITY_FILE_SIZE) {
		char detail[96];

		snprintf(detail, sizeof(detail),
			 "key file is %s%zu bytes, want %d: truncated or not "
			 "a gradpool key",
			 len > GP_IDENTITY_FILE_SIZE ? "at least " : "", len,
			 GP_IDENTITY_FILE_SIZE);
		return fail(err, errlen, -EBADMSG, name, "%s", detail);
	}
	if (memcmp(data, key_magic, sizeof(key_magic)) != 0)
		return fail(err, errlen, -EBADMSG, name, "%s",
			    "not a gradpool key file (bad magic)");
	crypto_generichash(sum, sizeof(sum), data, 40, NULL, 0);
	if (sodium_memcmp(sum, data + 40, sizeof(sum)) != 0)
		return fail(err, errlen, -EBADMSG, name, "%s",
			    "key file is corrupt (checksum mismatch)");
	id = identity_new();
	if (!id)
		return fail(err, errlen, -ENOMEM, name, "%s",
			    "cannot allocate secure memory");
	memcpy(id->private_key, data + 8, GP_KEY_SIZE);
	crypto_scalarmult_base(id->public_key, id->private_key);
	*ret = id;
	return 0;
}

int gp_identity_load(const char *path, struct gp_identity **ret, char *err,
		     size_t errlen)
{
	uint8_t file[GP_IDENTITY_FILE_SIZE + 1];
	struct stat st;
	ssize_t n;
	int fd, r;

	/* O_NONBLOCK: a FIFO in its place must not hang the caller before
	 * the regular-file check below. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		r = -errno;
		return fail(err, errlen, r, path, "cannot open key file: %s", strerror(-r));
	}
	if (fstat(fd, &st) < 0) {
		r = -errno;
		close(fd);
		return fail(err, errlen, r, path, "%s", strerror(-r));
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return fail(err, errlen, -EBADMSG, path, "%s", "key file is not a regular file");
	}
	if (st.st_mode & 077) {
		char detail[96];

		close(fd);
		snprintf(detail, sizeof(detail),
			 "key file mode %04o is too open, want 0600 "
			 "(chmod 600 it if it is yours)",
			 (unsigned)(st.st_mode & 07777));
		return fail(err, errlen, -EACCES, path, "%s", detail);
	}
	do
		n = read(fd, file, sizeof(file));
	while (n < 0 && errno == EINTR);
	r = n < 0 ? -errno : 0;
	close(fd);
	if (r < 0)
		return fail(err, errlen, r, path, "cannot read key file: %s", strerror(-r));
	/* One byte more than a key is read, so a longer file says so. */
	r = gp_identity_parse(file, (size_t)n, path, ret, err, errlen);
	sodium_memzero(file, sizeof(file));
	return r;
}

int gp_identity_load_or_create(const char *path, struct gp_identity **ret,
			       char *err, size_t errlen)
{
	int r = gp_identity_load(path, ret, err, errlen);

	if (r != -ENOENT)
		return r;
	r = gp_identity_create_file(path, ret, err, errlen);
	/* Lost a race with another process creating it: load theirs. */
	if (r == -EEXIST)
		r = gp_identity_load(path, ret, err, errlen);
	return r;
}

void gp_identity_fingerprint(const uint8_t public_key[GP_KEY_SIZE],
			     char out[GP_FINGERPRINT_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t h[8];
	size_t o = 0;

	crypto_generichash(h, sizeof(h), public_key, GP_KEY_SIZE, NULL, 0);
	for (size_t i = 0; i < sizeof(h); i++) {
		if (i && i % 2 == 0)
			out[o++] = '-';
		out[o++] = hex[h[i] >> 4];
		out[o++] = hex[h[i] & 15];
	}
	out[o] = '\0';
}

int gp_identity_derive_key(const struct gp_identity *id, const char *purpose,
			   uint8_t out[GP_KEY_SIZE])
{
	uint8_t personal[crypto_generichash_blake2b_PERSONALBYTES] = { 0 };
	uint8_t salt[crypto_generichash_blake2b_SALTBYTES] = { 0 };
	size_t n = strlen(purpose);

	if (n > sizeof(personal))
		return -EINVAL;
	memcpy(personal, purpose, n);
	crypto_generichash_blake2b_salt_personal(out, GP_KEY_SIZE, NULL, 0,
						 id->private_key, GP_KEY_SIZE,
						 salt, personal);
	return 0;
}
