/* safetensors, as Hugging Face publishes it (github.com/huggingface/
 * safetensors, README "Format", and its reference reader):
 *
 *   offset 0   8 bytes  N, the header's length, unsigned little-endian
 *   offset 8   N bytes  the header: a UTF-8 JSON object, starting with '{',
 *                       padded with spaces (0x20) so that the data starts at
 *                       a multiple of 8 bytes
 *   offset 8+N          the byte buffer: every tensor's bytes, back to back
 *
 * The header maps each tensor's name to {"dtype": "F32", "shape": [...],
 * "data_offsets": [BEGIN, END]}, offsets into the byte buffer (END one
 * past the last byte); the tensors cover the buffer exactly, without
 * holes or overlaps, and no name repeats. The optional "__metadata__" key
 * maps strings to strings. Values are little-endian, row-major. */
#include "export.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "gp-endian.h"

struct sbuf {
	char *p;
	size_t len, cap;
	int err;
};

static void sb_grow(struct sbuf *b, size_t more)
{
	size_t cap;
	char *p;

	if (b->err || b->len + more < b->cap)
		return;
	cap = b->cap ? b->cap : 4096;
	while (cap <= b->len + more)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p) {
		b->err = -ENOMEM;
		return;
	}
	b->p = p;
	b->cap = cap;
}

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
	sb_grow(b, n);
	if (b->err)
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

static void sb_printf(struct sbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	sb_put(b, tmp, (size_t)n);
}

/* Length of the well-formed UTF-8 sequence at s (1-4), or 0 when s does
 * not start one (overlong forms, surrogates and values above U+10FFFF
 * included). */
static size_t utf8_len(const unsigned char *s)
{
	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		return (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (s[0] >= 0xe0 && s[0] <= 0xef) {
		if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
			return 0;
		if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f))
			return 0;
		return 3;
	}
	if (s[0] >= 0xf0 && s[0] <= 0xf4) {
		if ((s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 ||
		    (s[3] & 0xc0) != 0x80)
			return 0;
		if ((s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
			return 0;
		return 4;
	}
	return 0;
}

/* A JSON string: quotes, backslashes and control characters escaped,
 * UTF-8 kept, any other byte as U+FFFD. */
static void sb_json(struct sbuf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	sb_put(b, "\"", 1);
	while (*p) {
		size_t n = utf8_len(p);

		if (n == 0) {
			sb_str(b, "\\ufffd");
			p++;
		} else if (*p == '"' || *p == '\\') {
			sb_put(b, "\\", 1);
			sb_put(b, (const char *)p++, 1);
		} else if (*p == '\n') {
			sb_str(b, "\\n");
			p++;
		} else if (*p == '\t') {
			sb_str(b, "\\t");
			p++;
		} else if (*p == '\r') {
			sb_str(b, "\\r");
			p++;
		} else if (*p < 0x20 || *p == 0x7f) {
			sb_printf(b, "\\u%04x", *p);
			p++;
		} else {
			sb_put(b, (const char *)p, n);
			p += n;
		}
	}
	sb_put(b, "\"", 1);
}

/* Writes n floats little-endian, in blocks. */
static int write_floats(FILE *f, const float *v, size_t n)
{
	uint8_t buf[4096];

	while (n) {
		size_t k = n < sizeof(buf) / 4 ? n : sizeof(buf) / 4;

		for (size_t i = 0; i < k; i++) {
			uint32_t u;

			memcpy(&u, &v[i], 4);
			gp_put_le32(buf + 4 * i, u);
		}
		if (fwrite(buf, 4, k, f) != k)
			return -EIO;
		v += k;
		n -= k;
	}
	return 0;
}

int gp_export_safetensors(const struct gp_export_model *m, FILE *f)
{
	struct sbuf h = { 0 };
	uint64_t off = 0;
	uint8_t len[8];
	int r;

	if (!f || gp_export_check(m) < 0)
		return -EINVAL;
	sb_put(&h, "{", 1);
	if (m->n_meta) {
		sb_str(&h, "\"__metadata__\":{");
		for (size_t i = 0; i < m->n_meta; i++) {
			if (i)
				sb_put(&h, ",", 1);
			sb_json(&h, m->meta[i].key);
			sb_put(&h, ":", 1);
			sb_json(&h, m->meta[i].value);
		}
		sb_put(&h, "}", 1);
	}
	for (size_t i = 0; i < m->n_tensors + m->n_extra; i++) {
		const struct gp_export_tensor *t = &m->tensors[i];
		uint64_t bytes = (uint64_t)t->count * 4;

		if (i || m->n_meta)
			sb_put(&h, ",", 1);
		sb_json(&h, t->name);
		sb_str(&h, ":{\"dtype\":\"F32\",\"shape\":[");
		for (size_t d = 0; d < t->n_dims; d++)
			sb_printf(&h, "%s%lld", d ? "," : "",
				  (long long)t->dims[d]);
		sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}",
			  (unsigned long long)off,
			  (unsigned long long)(off + bytes));
		off += bytes;
	}
	sb_put(&h, "}", 1);
	while (!h.err && h.len % 8)
		sb_put(&h, " ", 1);
	if (h.err) {
		r = h.err;
		goto out;
	}
	gp_put_le64(len, h.len);
	r = -EIO;
	if (fwrite(len, 1, 8, f) != 8 || fwrite(h.p, 1, h.len, f) != h.len)
		goto out;
	for (size_t i = 0; i < m->n_tensors + m->n_extra; i++)
		if (write_floats(f, m->tensors[i].data, m->tensors[i].count) < 0)
			goto out;
	r = 0;
out:
	free(h.p);
	return r;
}
