/* Fuzz target for the frame decoder. The input is decoded twice, once in a
 * single call and once cut into pieces whose sizes come from the input
 * itself; both runs must yield the same frames and the same error, and no
 * frame may ever exceed the maximum. The first byte picks the maximum
 * body, the second the piece sizes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

struct result {
	uint8_t *bytes; /* kind, u32 len, body ... for every frame */
	size_t len, cap;
	int error;
};

static void append(struct result *r, const void *p, size_t n)
{
	if (r->len + n > r->cap) {
		size_t cap = (r->len + n) * 2;
		uint8_t *nb = realloc(r->bytes, cap);

		if (!nb)
			abort();
		r->bytes = nb;
		r->cap = cap;
	}
	memcpy(r->bytes + r->len, p, n);
	r->len += n;
}

static void run(const uint8_t *in, size_t size, uint32_t max_body,
		unsigned step_seed, struct result *res)
{
	struct gp_frame_decoder d;
	uint8_t *copy = malloc(size ? size : 1);
	size_t pos = 0;

	if (!copy)
		abort();
	memcpy(copy, in, size);
	gp_frame_decoder_init(&d, max_body);
	while (pos < size) {
		/* step_seed 0 means one call for everything. */
		size_t piece = step_seed ? 1 + (step_seed * (pos + 7)) % 97 :
					   size - pos;
		size_t off = 0;

		if (piece > size - pos)
			piece = size - pos;
		while (off < piece) {
			struct gp_frame f;
			size_t used = 0;
			int r = gp_frame_decode(&d, copy + pos + off,
						piece - off, &used, &f);

			if (r < 0) {
				res->error = r;
				goto out;
			}
			if (used > piece - off)
				abort();
			off += used;
			if (r == 1) {
				uint8_t k = (uint8_t)f.kind;
				uint32_t l = (uint32_t)f.len;

				if (f.len > max_body && max_body)
					abort();
				append(res, &k, 1);
				append(res, &l, 4);
				append(res, f.body, f.len);
			} else if (off != piece) {
				abort(); /* 0 means everything consumed */
			}
		}
		pos += piece;
	}
out:
	gp_frame_decoder_finish(&d);
	free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct result a = { 0 }, b = { 0 };
	uint32_t max_body;
	unsigned seed;

	if (size < 2)
		return 0;
	max_body = data[0] ? (uint32_t)data[0] * 257u : 0;
	seed = data[1];
	data += 2;
	size -= 2;
	run(data, size, max_body, 0, &a);
	run(data, size, max_body, seed | 1, &b);
	if (a.error != b.error || a.len != b.len ||
	    (a.len && memcmp(a.bytes, b.bytes, a.len) != 0))
		abort();
	free(a.bytes);
	free(b.bytes);
	return 0;
}
