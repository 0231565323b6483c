/* Token files (the layout is in tokens.h): decoded with every field
 * checked before anything is allocated from it, written atomically. */
#include "tokens.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "gp-endian.h"

static int fail(char *err, size_t err_len, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t err_len, int r, const char *fmt, ...)
{
	va_list ap;

	if (err && err_len) {
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
	}
	return r;
}

/* zlib's crc32() takes a uInt length: large buffers go in pieces. */
static uint32_t crc_bytes(const uint8_t *p, size_t n)
{
	uLong c = crc32(0L, Z_NULL, 0);

	for (size_t off = 0; off < n; off += 1u << 30)
		c = crc32(c, p + off,
			  (uInt)(n - off < (1u << 30) ? n - off : (1u << 30)));
	return (uint32_t)c;
}

int gp_tokens_decode(const void *buf, size_t len, const char *name,
		     struct gp_tokens **ret, char *err, size_t err_len)
{
	const uint8_t *p = buf;
	uint32_t version, vocab, width, crc;
	uint64_t count;
	struct gp_tokens *t;

	if (!buf || !ret)
		return -EINVAL;
	if (!name)
		name = "token file";
	if (len < GP_TOKENS_HEADER)
		return fail(err, err_len, -ENODATA,
			    "%s: %zu bytes, shorter than the %d-byte header",
			    name, len, GP_TOKENS_HEADER);
	if (memcmp(p, GP_TOKENS_MAGIC, 8) != 0)
		return fail(err, err_len, -EPROTO,
			    "%s: not a token file (no \"%s\" magic)", name,
			    GP_TOKENS_MAGIC);
	version = gp_get_le32(p + 8);
	vocab = gp_get_le32(p + 12);
	width = gp_get_le32(p + 16);
	crc = gp_get_le32(p + 20);
	count = gp_get_le64(p + 24);
	if (version != GP_TOKENS_VERSION)
		return fail(err, err_len, -EPROTO,
			    "%s: format version %u (this build reads %d)", name,
			    version, GP_TOKENS_VERSION);
	if (vocab < 2 || vocab > GP_TOKENS_VOCAB_MAX)
		return fail(err, err_len, -ERANGE,
			    "%s: vocabulary %u is outside 2..%d", name, vocab,
			    GP_TOKENS_VOCAB_MAX);
	if (width != 1 && width != 2)
		return fail(err, err_len, -ERANGE,
			    "%s: %u bytes a token (1 or 2)", name, width);
	if (width == 1 && vocab > 256)
		return fail(err, err_len, -ERANGE,
			    "%s: vocabulary %u does not fit 1 byte a token",
			    name, vocab);
	if (count < 2 || count > GP_TOKENS_MAX)
		return fail(err, err_len, -ERANGE,
			    "%s: %llu tokens (2 to %llu)", name,
			    (unsigned long long)count,
			    (unsigned long long)GP_TOKENS_MAX);
	if ((len - GP_TOKENS_HEADER) / width < count)
		return fail(err, err_len, -ENODATA,
			    "%s: truncated: %llu tokens declared, %zu bytes "
			    "present",
			    name, (unsigned long long)count,
			    len - GP_TOKENS_HEADER);
	if (len - GP_TOKENS_HEADER > count * width)
		return fail(err, err_len, -E2BIG,
			    "%s: %zu bytes after the %llu tokens", name,
			    len - GP_TOKENS_HEADER - (size_t)(count * width),
			    (unsigned long long)count);
	if (crc_bytes(p + GP_TOKENS_HEADER, (size_t)(count * width)) != crc)
		return fail(err, err_len, -EBADMSG,
			    "%s: CRC mismatch: the tokens are damaged", name);
	t = calloc(1, sizeof(*t));
	if (!t || !(t->ids = malloc((size_t)count * sizeof(uint16_t)))) {
		free(t);
		return fail(err, err_len, -ENOMEM, "%s: out of memory", name);
	}
	t->vocab = vocab;
	t->count = (size_t)count;
	for (size_t i = 0; i < t->count; i++) {
		const uint8_t *q = p + GP_TOKENS_HEADER + i * width;
		uint16_t id = width == 1 ? q[0] : gp_get_le16(q);

		if (id >= vocab) {
			gp_tokens_destroy(t);
			return fail(err, err_len, -EDOM,
				    "%s: token %zu is %u, outside the vocabulary "
				    "of %u",
				    name, i, id, vocab);
		}
		t->ids[i] = id;
	}
	*ret = t;
	return 0;
}

int gp_tokens_load(const char *path, struct gp_tokens **ret, char *err,
		   size_t err_len)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t have = 0, size;
	int fd, r;

	if (!path || !ret)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(err, err_len, -errno, "%s: cannot open: %s", path,
			    strerror(errno));
	if (fstat(fd, &st) < 0) {
		r = fail(err, err_len, -errno, "%s: cannot stat: %s", path,
			 strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = fail(err, err_len, -EINVAL, "%s: not a regular file", path);
		goto out;
	}
	if ((uint64_t)st.st_size > GP_TOKENS_HEADER + 2 * GP_TOKENS_MAX) {
		r = fail(err, err_len, -E2BIG, "%s: %lld bytes, too large",
			 path, (long long)st.st_size);
		goto out;
	}
	size = (size_t)st.st_size;
	buf = malloc(size ? size : 1);
	if (!buf) {
		r = fail(err, err_len, -ENOMEM, "%s: out of memory", path);
		goto out;
	}
	while (have < size) {
		ssize_t n = read(fd, buf + have, size - have);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = fail(err, err_len, -errno, "%s: cannot read: %s",
				 path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		have += (size_t)n;
	}
	r = gp_tokens_decode(buf, have, path, ret, err, err_len);
out:
	free(buf);
	close(fd);
	return r;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int gp_tokens_write(const char *path, uint32_t vocab, const uint16_t *ids,
		    size_t count)
{
	size_t width = vocab <= 256 ? 1 : 2, len;
	uint8_t *buf;
	char tmp[4096];
	int fd = -1, r;

	if (!path || !ids || vocab < 2 || vocab > GP_TOKENS_VOCAB_MAX ||
	    count < 2 || count > GP_TOKENS_MAX)
		return -EINVAL;
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	len = GP_TOKENS_HEADER + count * width;
	buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < count; i++) {
		uint8_t *q = buf + GP_TOKENS_HEADER + i * width;

		if (ids[i] >= vocab) {
			r = -EINVAL;
			goto out;
		}
		if (width == 1)
			q[0] = (uint8_t)ids[i];
		else
			gp_put_le16(q, ids[i]);
	}
	memcpy(buf, GP_TOKENS_MAGIC, 8);
	gp_put_le32(buf + 8, GP_TOKENS_VERSION);
	gp_put_le32(buf + 12, vocab);
	gp_put_le32(buf + 16, (uint32_t)width);
	gp_put_le32(buf + 20, crc_bytes(buf + GP_TOKENS_HEADER, count * width));
	gp_put_le64(buf + 24, count);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	if ((r = write_all(fd, buf, len)) < 0)
		goto out;
	if (fsync(fd) < 0) {
		r = -errno;
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		r = -errno;
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		r = -errno;
		goto out;
	}
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	if (r < 0)
		unlink(tmp);
	free(buf);
	return r;
}

void gp_tokens_destroy(struct gp_tokens *t)
{
	if (!t)
		return;
	free(t->ids);
	free(t);
}

size_t gp_tokens_windows(const struct gp_tokens *t, size_t len)
{
	if (!t || len == 0 || t->count < 2)
		return 0;
	return (t->count - 1) / len;
}

int gp_tokens_gather(const struct gp_tokens *t, size_t len,
		     const uint32_t *idx, size_t n, float *x, int32_t *labels)
{
	size_t windows = gp_tokens_windows(t, len);

	if (!t || !x || !labels || len == 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		size_t k = idx ? idx[i] : i;
		const uint16_t *src;

		if (k >= windows)
			return -EINVAL;
		src = t->ids + k * len;
		for (size_t j = 0; j < len; j++) {
			x[i * len + j] = (float)src[j];
			labels[i * len + j] = src[j + 1];
		}
	}
	return 0;
}

uint64_t gp_tokens_fingerprint(const struct gp_tokens *t)
{
	uLong c = crc32(0L, Z_NULL, 0);

	if (!t)
		return 0;
	for (size_t off = 0; off < t->count; off += 1u << 28) {
		size_t n = t->count - off < (1u << 28) ? t->count - off
						       : (1u << 28);

		c = crc32(c, (const Bytef *)(t->ids + off),
			  (uInt)(n * sizeof(uint16_t)));
	}
	return (uint64_t)(uint32_t)c << 32 |
	       (uint32_t)(t->vocab ^ (uint32_t)t->count);
}

size_t gp_tokens_window_bytes(size_t len, uint32_t vocab)
{
	return (len + 1) * (vocab <= 256 ? 1 : 2);
}

int gp_tokens_pack(const struct gp_tokens *t, size_t len, uint32_t vocab,
		   const uint32_t *idx, size_t n, uint8_t *out)
{
	size_t windows = gp_tokens_windows(t, len);
	size_t width = vocab <= 256 ? 1 : 2;

	if (!t || !idx || !out || len == 0 || vocab < t->vocab)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		const uint16_t *src;

		if (idx[i] >= windows)
			return -EINVAL;
		src = t->ids + (size_t)idx[i] * len;
		for (size_t j = 0; j <= len; j++, out += width) {
			if (width == 1)
				out[0] = (uint8_t)src[j];
			else
				gp_put_le16(out, src[j]);
		}
	}
	return 0;
}

int gp_tokens_unpack(const uint8_t *in, size_t n, size_t len,
		     uint32_t vocab, float *x, int32_t *labels)
{
	size_t width = vocab <= 256 ? 1 : 2;

	if (!in || !x || !labels || len == 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		for (size_t j = 0; j <= len; j++, in += width) {
			uint32_t id = width == 1 ? in[0] : gp_get_le16(in);

			if (id >= vocab)
				return -EDOM;
			if (j < len)
				x[i * len + j] = (float)id;
			if (j > 0)
				labels[i * len + j - 1] = (int32_t)id;
		}
	}
	return 0;
}
