/* Little-endian byte writer and bounds-checked reader shared by the
 * checkpoint encoders of ssp, params and sched (private to coordinator/).
 *
 * Every checkpoint blob has the same envelope:
 *
 *   offset  size  field
 *   0       4     magic (ASCII, e.g. "GPSS")
 *   4       2     format version (u16)
 *   6       2     reserved, must be 0
 *   8       4     payload length P (u32)
 *   12      P     payload (module specific, little-endian)
 *   12+P    4     CRC-32 (IEEE 802.3) of bytes [0, 12+P)
 *
 * The reader never reads past its end: each get returns false instead, and a
 * decoder that sees false fails with -EBADMSG. */
#ifndef GP_COORD_BYTES_H
#define GP_COORD_BYTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GP_BLOB_HEADER_SIZE 12u
#define GP_BLOB_TRAILER_SIZE 4u

struct gp_wbuf {
	uint8_t *data; /* owned */
	size_t len;
	size_t cap;
	bool failed;   /* an allocation failed; later puts are ignored */
};

struct gp_rbuf {
	const uint8_t *p; /* borrowed */
	size_t left;
};

/* Writer: puts append; on allocation failure the buffer is marked failed and
 * gp_wbuf_finish_blob() reports -ENOMEM. */
void gp_wbuf_put(struct gp_wbuf *w, const void *src, size_t n);
void gp_wbuf_put_u8(struct gp_wbuf *w, uint8_t v);
void gp_wbuf_put_u16(struct gp_wbuf *w, uint16_t v);
void gp_wbuf_put_u32(struct gp_wbuf *w, uint32_t v);
void gp_wbuf_put_u64(struct gp_wbuf *w, uint64_t v);
void gp_wbuf_put_i64(struct gp_wbuf *w, int64_t v);
void gp_wbuf_put_f32(struct gp_wbuf *w, float v);
void gp_wbuf_put_f64(struct gp_wbuf *w, double v);
/* Appends n floats as little-endian f32. */
void gp_wbuf_put_f32s(struct gp_wbuf *w, const float *v, size_t n);

/* Starts a blob: writes the 12-byte header with a placeholder length. */
void gp_wbuf_begin_blob(struct gp_wbuf *w, const char magic[4],
			uint16_t version);
/* Patches the payload length, appends the CRC and hands the bytes over:
 * *ret_data (owned by the caller, free()) and *ret_len. On failure the
 * buffer is freed and nothing is written to the ret_* pointers. */
int gp_wbuf_finish_blob(struct gp_wbuf *w, uint8_t **ret_data,
			size_t *ret_len);

/* Checks the envelope (magic, version, reserved, length, CRC) and points
 * *ret_payload at the payload. Returns 0, or -EBADMSG. data is borrowed. */
int gp_rbuf_open_blob(const uint8_t *data, size_t len, const char magic[4],
		      uint16_t version, struct gp_rbuf *ret_payload);

bool gp_rbuf_get(struct gp_rbuf *r, void *dst, size_t n);
bool gp_rbuf_get_u8(struct gp_rbuf *r, uint8_t *v);
bool gp_rbuf_get_u16(struct gp_rbuf *r, uint16_t *v);
bool gp_rbuf_get_u32(struct gp_rbuf *r, uint32_t *v);
bool gp_rbuf_get_u64(struct gp_rbuf *r, uint64_t *v);
bool gp_rbuf_get_i64(struct gp_rbuf *r, int64_t *v);
bool gp_rbuf_get_f32(struct gp_rbuf *r, float *v);
bool gp_rbuf_get_f64(struct gp_rbuf *r, double *v);
bool gp_rbuf_get_f32s(struct gp_rbuf *r, float *v, size_t n);

/* CRC-32 (IEEE, reflected, init and final xor 0xffffffff), as zlib's
 * crc32(0, data, len). */
uint32_t gp_crc32(const uint8_t *data, size_t len);

#endif
