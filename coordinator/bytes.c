#include "bytes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "endian.h"

void gp_wbuf_put(struct gp_wbuf *w, const void *src, size_t n)
{
	if (w->failed || n == 0)
		return;
	if (n > w->cap - w->len) {
		size_t cap = w->cap ? w->cap : 256;
		uint8_t *d;

		while (cap - w->len < n) {
			if (cap > SIZE_MAX / 2) {
				w->failed = true;
				return;
			}
			cap *= 2;
		}
		d = realloc(w->data, cap);
		if (!d) {
			w->failed = true;
			return;
		}
		w->data = d;
		w->cap = cap;
	}
	memcpy(w->data + w->len, src, n);
	w->len += n;
}

void gp_wbuf_put_u8(struct gp_wbuf *w, uint8_t v)
{
	gp_wbuf_put(w, &v, 1);
}

void gp_wbuf_put_u16(struct gp_wbuf *w, uint16_t v)
{
	uint8_t b[2];

	gp_put_le16(b, v);
	gp_wbuf_put(w, b, sizeof(b));
}

void gp_wbuf_put_u32(struct gp_wbuf *w, uint32_t v)
{
	uint8_t b[4];

	gp_put_le32(b, v);
	gp_wbuf_put(w, b, sizeof(b));
}

void gp_wbuf_put_u64(struct gp_wbuf *w, uint64_t v)
{
	uint8_t b[8];

	gp_put_le64(b, v);
	gp_wbuf_put(w, b, sizeof(b));
}

void gp_wbuf_put_i64(struct gp_wbuf *w, int64_t v)
{
	gp_wbuf_put_u64(w, (uint64_t)v);
}

void gp_wbuf_put_f32(struct gp_wbuf *w, float v)
{
	uint8_t b[4];

	gp_put_lef32(b, v);
	gp_wbuf_put(w, b, sizeof(b));
}

void gp_wbuf_put_f64(struct gp_wbuf *w, double v)
{
	uint8_t b[8];

	gp_put_lef64(b, v);
	gp_wbuf_put(w, b, sizeof(b));
}

void gp_wbuf_put_f32s(struct gp_wbuf *w, const float *v, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	if (n > SIZE_MAX / 4) {
		w->failed = true;
		return;
	}
	gp_wbuf_put(w, v, n * 4);
#else
	for (size_t i = 0; i < n; i++)
		gp_wbuf_put_f32(w, v[i]);
#endif
}

void gp_wbuf_begin_blob(struct gp_wbuf *w, const char magic[4],
			uint16_t version)
{
	gp_wbuf_put(w, magic, 4);
	gp_wbuf_put_u16(w, version);
	gp_wbuf_put_u16(w, 0);
	gp_wbuf_put_u32(w, 0);
}

int gp_wbuf_finish_blob(struct gp_wbuf *w, uint8_t **ret_data,
			size_t *ret_len)
{
	size_t payload;

	if (!w->failed && w->len >= GP_BLOB_HEADER_SIZE) {
		payload = w->len - GP_BLOB_HEADER_SIZE;
		if (payload > UINT32_MAX) {
			w->failed = true;
		} else {
			gp_put_le32(w->data + 8, (uint32_t)payload);
			gp_wbuf_put_u32(w, gp_crc32(w->data, w->len));
		}
	}
	if (w->failed || w->len < GP_BLOB_HEADER_SIZE) {
		free(w->data);
		*w = (struct gp_wbuf){0};
		return -ENOMEM;
	}
	*ret_data = w->data;
	*ret_len = w->len;
	*w = (struct gp_wbuf){0};
	return 0;
}

int gp_rbuf_open_blob(const uint8_t *data, size_t len, const char magic[4],
		      uint16_t version, struct gp_rbuf *ret_payload)
{
	uint64_t payload;

	if (!data || len < GP_BLOB_HEADER_SIZE + GP_BLOB_TRAILER_SIZE)
		return -EBADMSG;
	if (memcmp(data, magic, 4) != 0 || gp_get_le16(data + 4) != version ||
	    gp_get_le16(data + 6) != 0)
		return -EBADMSG;
	payload = gp_get_le32(data + 8);
	if (payload != len - GP_BLOB_HEADER_SIZE - GP_BLOB_TRAILER_SIZE)
		return -EBADMSG;
	if (gp_get_le32(data + len - 4) != gp_crc32(data, len - 4))
		return -EBADMSG;
	ret_payload->p = data + GP_BLOB_HEADER_SIZE;
	ret_payload->left = (size_t)payload;
	return 0;
}

bool gp_rbuf_get(struct gp_rbuf *r, void *dst, size_t n)
{
	if (n > r->left)
		return false;
	if (n)
		memcpy(dst, r->p, n);
	r->p += n;
	r->left -= n;
	return true;
}

/* Returns the next n bytes and moves past them, or NULL (nothing consumed)
 * when fewer are left. */
static const uint8_t *take(struct gp_rbuf *r, size_t n)
{
	const uint8_t *p = r->p;

	if (n > r->left)
		return NULL;
	r->p += n;
	r->left -= n;
	return p;
}

bool gp_rbuf_get_u8(struct gp_rbuf *r, uint8_t *v)
{
	const uint8_t *p = take(r, 1);

	if (p)
		*v = *p;
	return p != NULL;
}

bool gp_rbuf_get_u16(struct gp_rbuf *r, uint16_t *v)
{
	const uint8_t *p = take(r, 2);

	if (p)
		*v = gp_get_le16(p);
	return p != NULL;
}

bool gp_rbuf_get_u32(struct gp_rbuf *r, uint32_t *v)
{
	const uint8_t *p = take(r, 4);

	if (p)
		*v = gp_get_le32(p);
	return p != NULL;
}

bool gp_rbuf_get_u64(struct gp_rbuf *r, uint64_t *v)
{
	const uint8_t *p = take(r, 8);

	if (p)
		*v = gp_get_le64(p);
	return p != NULL;
}

bool gp_rbuf_get_i64(struct gp_rbuf *r, int64_t *v)
{
	const uint8_t *p = take(r, 8);

	if (p)
		*v = (int64_t)gp_get_le64(p);
	return p != NULL;
}

bool gp_rbuf_get_f32(struct gp_rbuf *r, float *v)
{
	const uint8_t *p = take(r, 4);

	if (p)
		*v = gp_get_lef32(p);
	return p != NULL;
}

bool gp_rbuf_get_f64(struct gp_rbuf *r, double *v)
{
	const uint8_t *p = take(r, 8);

	if (p)
		*v = gp_get_lef64(p);
	return p != NULL;
}

bool gp_rbuf_get_f32s(struct gp_rbuf *r, float *v, size_t n)
{
	if (n > r->left / 4)
		return false;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return gp_rbuf_get(r, v, n * 4);
#else
	for (size_t i = 0; i < n; i++)
		gp_rbuf_get_f32(r, &v[i]);
	return true;
#endif
}

/* zlib's crc32() is table driven and thread safe; checkpoints may be encoded
 * on a worker thread. */
uint32_t gp_crc32(const uint8_t *data, size_t len)
{
	uLong c = crc32(0L, Z_NULL, 0);

	while (len > 0) {
		uInt n = len > UINT32_MAX ? UINT32_MAX : (uInt)len;

		c = crc32(c, data, n);
		data += n;
		len -= n;
	}
	return (uint32_t)c;
}
