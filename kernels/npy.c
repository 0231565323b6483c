/* The .npy reader: the header dict is parsed by a small recursive-descent
 * reader of exactly the literal forms numpy writes (strings, True/False,
 * tuples of integers), so nothing in a file is evaluated. */
#include "npy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "gp-endian.h"

static const uint8_t magic[6] = { 0x93, 'N', 'U', 'M', 'P', 'Y' };

static int fail(char *err, size_t err_len, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t err_len, int code, const char *fmt, ...)
{
	va_list ap;

	if (err && err_len > 0) {
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* A cursor over the header text. */
struct cur {
	const char *p, *end;
};

static void skip_ws(struct cur *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' ||
				 *c->p == '\n' || *c->p == '\r'))
		c->p++;
}

static bool take(struct cur *c, char ch)
{
	skip_ws(c);
	if (c->p < c->end && *c->p == ch) {
		c->p++;
		return true;
	}
	return false;
}

/* A quoted string ('...' or "..."), without escapes (numpy writes none in
 * these keys and values); copied into out (cap bytes, NUL-terminated).
 * Returns false when malformed or too long. */
static bool read_str(struct cur *c, char *out, size_t cap)
{
	char q;
	size_t n = 0;

	skip_ws(c);
	if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
		return false;
	q = *c->p++;
	while (c->p < c->end && *c->p != q) {
		if (*c->p == '\\' || n + 1 >= cap)
			return false;
		out[n++] = *c->p++;
	}
	if (c->p >= c->end)
		return false;
	c->p++;
	out[n] = '\0';
	return true;
}

static bool read_word(struct cur *c, const char *w)
{
	size_t n = strlen(w);

	skip_ws(c);
	if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0)
		return false;
	c->p += n;
	return true;
}

/* A tuple of non-negative integers: "()", "(5,)", "(60000, 28, 28)" (a
 * trailing 'L' of Python 2 allowed). */
static int read_shape(struct cur *c, struct gp_npy *a)
{
	if (!take(c, '('))
		return -EBADMSG;
	a->ndims = 0;
	for (;;) {
		uint64_t v = 0;
		bool digits = false;

		if (take(c, ')'))
			return 0;
		skip_ws(c);
		while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
			unsigned d = (unsigned)(*c->p++ - '0');

			if (v > (UINT64_MAX - d) / 10)
				return -ERANGE;
			v = v * 10 + d;
			digits = true;
		}
		if (!digits)
			return -EBADMSG;
		if (c->p < c->end && *c->p == 'L')
			c->p++;
		if (a->ndims == GP_NPY_DIMS_MAX)
			return -ERANGE;
		a->shape[a->ndims++] = v;
		if (take(c, ')'))
			return 0;
		if (!take(c, ','))
			return -EBADMSG;
	}
}

/* Sets kind and elsize from descr; -ENOTSUP for what is not supported. */
static int parse_descr(struct gp_npy *a)
{
	const char *d = a->descr;
	unsigned size;

	if (strlen(d) != 3 || d[2] < '1' || d[2] > '8')
		return -ENOTSUP;
	size = (unsigned)(d[2] - '0');
	if (size != 1 && size != 2 && size != 4 && size != 8)
		return -ENOTSUP;
	/* Byte order: little-endian or native (every platform this builds
	 * on is little-endian: gp-endian.h); '|' only for one byte; '>'
	 * only for one byte, where it means nothing. */
	if (d[0] == '|' || d[0] == '>') {
		if (size != 1)
			return -ENOTSUP;
	} else if (d[0] != '<' && d[0] != '=') {
		return -ENOTSUP;
	}
	switch (d[1]) {
	case 'b':
		if (size != 1)
			return -ENOTSUP;
		break;
	case 'u':
	case 'i':
		break;
	case 'f':
		if (size != 4 && size != 8)
			return -ENOTSUP;
		break;
	default:
		return -ENOTSUP;
	}
	a->kind = d[1];
	a->elsize = size;
	return 0;
}

int gp_npy_decode(const void *buf, size_t len, const char *name,
		  struct gp_npy *ret, char *err, size_t err_len)
{
	const uint8_t *b = buf;
	struct gp_npy a;
	struct cur c;
	size_t hdr_len, pre;
	bool have_descr = false, have_fo = false, have_shape = false;
	bool fortran = false;
	uint64_t bytes;
	int r;

	if (!name)
		name = "(memory)";
	if (!buf || !ret)
		return fail(err, err_len, -EINVAL, "%s: bad arguments", name);
	memset(&a, 0, sizeof(a));
	if (len < 10 || memcmp(b, magic, sizeof(magic)) != 0)
		return fail(err, err_len, -EPROTO,
			    "%s: not a NumPy .npy file (no \\x93NUMPY magic)",
			    name);
	if (b[6] == 1 && b[7] == 0) {
		hdr_len = gp_get_le16(b + 8);
		pre = 10;
	} else if ((b[6] == 2 || b[6] == 3) && b[7] == 0) {
		if (len < 12)
			return fail(err, err_len, -ENODATA,
				    "%s: truncated .npy preamble", name);
		hdr_len = gp_get_le32(b + 8);
		pre = 12;
	} else {
		return fail(err, err_len, -EPROTO,
			    "%s: .npy format version %u.%u is not supported "
			    "(1.0, 2.0 and 3.0 are)", name, b[6], b[7]);
	}
	if (hdr_len > GP_NPY_HEADER_MAX)
		return fail(err, err_len, -ERANGE,
			    "%s: .npy header of %zu bytes (at most %d)", name,
			    hdr_len, GP_NPY_HEADER_MAX);
	if (len - pre < hdr_len)
		return fail(err, err_len, -ENODATA,
			    "%s: truncated: the .npy header needs %zu bytes, "
			    "the file has %zu", name, hdr_len, len - pre);
	c.p = (const char *)b + pre;
	c.end = c.p + hdr_len;
	if (!take(&c, '{'))
		goto bad;
	while (!take(&c, '}')) {
		char key[32];

		if (!read_str(&c, key, sizeof(key)) || !take(&c, ':'))
			goto bad;
		if (strcmp(key, "descr") == 0 && !have_descr) {
			skip_ws(&c);
			if (c.p < c.end && (*c.p == '[' || *c.p == '{'))
				return fail(err, err_len, -ENOTSUP,
					    "%s: structured dtypes are not "
					    "supported (a plain numeric array "
					    "is)", name);
			if (!read_str(&c, a.descr, sizeof(a.descr)))
				return fail(err, err_len, -ENOTSUP,
					    "%s: dtype not supported (descr is "
					    "not a short type string)", name);
			have_descr = true;
		} else if (strcmp(key, "fortran_order") == 0 && !have_fo) {
			if (read_word(&c, "True"))
				fortran = true;
			else if (!read_word(&c, "False"))
				goto bad;
			have_fo = true;
		} else if (strcmp(key, "shape") == 0 && !have_shape) {
			r = read_shape(&c, &a);
			if (r == -ERANGE)
				return fail(err, err_len, -ERANGE,
					    "%s: shape has more than %d "
					    "dimensions or a dimension too "
					    "large", name, GP_NPY_DIMS_MAX);
			if (r < 0)
				goto bad;
			have_shape = true;
		} else {
			return fail(err, err_len, -EBADMSG,
				    "%s: .npy header has an unexpected or "
				    "repeated key '%s'", name, key);
		}
		if (!take(&c, ',')) {
			if (!take(&c, '}'))
				goto bad;
			break;
		}
	}
	skip_ws(&c);
	if (c.p != c.end)
		goto bad;
	if (!have_descr || !have_fo || !have_shape)
		return fail(err, err_len, -EBADMSG,
			    "%s: .npy header lacks '%s'", name,
			    !have_descr ? "descr" :
			    !have_fo ? "fortran_order" : "shape");
	if (fortran)
		return fail(err, err_len, -ENOTSUP,
			    "%s: fortran_order is True: save the array in C "
			    "order (numpy.ascontiguousarray) instead", name);
	if (parse_descr(&a) < 0)
		return fail(err, err_len, -ENOTSUP,
			    "%s: dtype '%s' is not supported (little-endian "
			    "bool, integers and float32/64 are)", name, a.descr);
	a.count = 1;
	for (unsigned i = 0; i < a.ndims; i++) {
		if (a.shape[i] && a.count > GP_NPY_DATA_MAX / a.shape[i])
			return fail(err, err_len, -ERANGE,
				    "%s: shape too large", name);
		a.count *= a.shape[i];
	}
	bytes = a.count * a.elsize;
	if (a.count > GP_NPY_DATA_MAX || bytes > GP_NPY_DATA_MAX)
		return fail(err, err_len, -ERANGE,
			    "%s: %llu data bytes (at most %llu)", name,
			    (unsigned long long)bytes,
			    (unsigned long long)GP_NPY_DATA_MAX);
	if (len - pre - hdr_len < bytes)
		return fail(err, err_len, -ENODATA,
			    "%s: truncated: the shape needs %llu data bytes, "
			    "the file has %zu", name, (unsigned long long)bytes,
			    len - pre - hdr_len);
	if (len - pre - hdr_len > bytes)
		return fail(err, err_len, -E2BIG,
			    "%s: %zu bytes after the data the shape describes",
			    name, len - pre - hdr_len - (size_t)bytes);
	a.data = b + pre + hdr_len;
	*ret = a;
	return 0;
bad:
	return fail(err, err_len, -EBADMSG,
		    "%s: .npy header is not a dict of descr, fortran_order "
		    "and shape", name);
}

int64_t gp_npy_int(const struct gp_npy *a, uint64_t i)
{
	const uint8_t *p = a->data + i * a->elsize;
	uint64_t u;

	switch (a->elsize) {
	case 1:
		return a->kind == GP_NPY_INT ? (int8_t)p[0] : p[0];
	case 2:
		u = gp_get_le16(p);
		return a->kind == GP_NPY_INT ? (int16_t)u : (int64_t)u;
	case 4:
		u = gp_get_le32(p);
		return a->kind == GP_NPY_INT ? (int32_t)u : (int64_t)u;
	default:
		u = gp_get_le64(p);
		if (a->kind == GP_NPY_INT)
			return (int64_t)u;
		return u > INT64_MAX ? INT64_MAX : (int64_t)u;
	}
}

double gp_npy_double(const struct gp_npy *a, uint64_t i)
{
	const uint8_t *p = a->data + i * a->elsize;

	if (a->kind == GP_NPY_FLOAT) {
		if (a->elsize == 4) {
			uint32_t u = gp_get_le32(p);
			float f;

			memcpy(&f, &u, sizeof(f));
			return f;
		} else {
			uint64_t u = gp_get_le64(p);
			double d;

			memcpy(&d, &u, sizeof(d));
			return d;
		}
	}
	return (double)gp_npy_int(a, i);
}
