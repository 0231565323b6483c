/* Fuzz target for proto/msg: every input is decoded as a message (the type
 * byte in the header picks the decoder, so the corpus of valid samples of
 * every type steers the fuzzer into each). What decodes is also re-encoded
 * and decoded again, and must give the same bytes: the decoder never
 * accepts something the encoder cannot reproduce. A parameter change
 * (Q8_DELTA, Q4_DELTA) is also added to a mirror (gp_msg_block_add), and
 * a q8 or q4 block's sum of squares from its payload must be its values'. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(void)
{
	abort();
}

/* Decoded blocks carry raw bytes; the encoder wants host floats. */
static float *blocks_to_values(struct gp_msg_block *b, size_t n)
{
	size_t total = 0, o = 0;
	float *vals;

	for (size_t i = 0; i < n; i++)
		total += b[i].count;
	vals = malloc((total ? total : 1) * sizeof(float));
	if (!vals)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		double sq = gp_msg_block_sum_squares(&b[i]), want = 0;

		if (gp_msg_block_read(&b[i], vals + o, b[i].count) < 0)
			fail();
		/* q8 and q4: the payload's sum of squares is the values'. */
		for (size_t k = 0; sq >= 0 && k < b[i].count; k++)
			want += (double)vals[o + k] * vals[o + k];
		if (sq >= 0 && isfinite(want) &&
		    !(fabs(sq - want) <= 1e-5 * want + 1e-30))
			fail();
		b[i].values = vals + o;
		o += b[i].count;
	}
	return vals;
}

/* The blocks of a message of a type that has them (NULL, 0 for the
 * others). */
static struct gp_msg_block *msg_blocks(const struct gp_msg *m, size_t *ret_n)
{
	switch (m->type) {
	case GP_MSG_PARAM_SHARDS:
		*ret_n = m->u.param_shards.n_blocks;
		return m->u.param_shards.blocks;
	case GP_MSG_UPDATE:
		*ret_n = m->u.update.n_blocks;
		return m->u.update.blocks;
	case GP_MSG_VERIFY_TASK:
		*ret_n = m->u.verify_task.n_blocks;
		return m->u.verify_task.blocks;
	case GP_MSG_VERIFY_RESULT:
		*ret_n = m->u.verify_result.n_blocks;
		return m->u.verify_result.blocks;
	default:
		*ret_n = 0;
		return NULL;
	}
}

static bool has_i8(const struct gp_msg *m)
{
	size_t n;
	const struct gp_msg_block *b = msg_blocks(m, &n);

	for (size_t i = 0; i < n; i++)
		if (b[i].dtype == GP_DTYPE_I8 || b[i].dtype == GP_DTYPE_Q8 ||
		    b[i].dtype == GP_DTYPE_Q8_DELTA ||
		    b[i].dtype == GP_DTYPE_Q4 ||
		    b[i].dtype == GP_DTYPE_Q4_DELTA)
			return true;
	return false;
}

/* A change added to a mirror of zeros is what the block decodes to, or
 * refused (mirror untouched) when a value is not finite. */
static void check_deltas(const struct gp_msg_param_shards *ps)
{
	for (size_t i = 0; i < ps->n_blocks; i++) {
		const struct gp_msg_block *b = &ps->blocks[i];
		bool finite = true;
		float *mir;
		int r;

		if (b->dtype != GP_DTYPE_Q8_DELTA &&
		    b->dtype != GP_DTYPE_Q4_DELTA) {
			if (gp_msg_block_add(b, NULL, b->count) != -EINVAL)
				fail();
			continue;
		}
		mir = calloc(b->count ? b->count : 1, sizeof(float));
		if (!mir)
			return;
		for (size_t k = 0; k < b->count; k++)
			finite &= isfinite(b->values[k]) != 0;
		r = gp_msg_block_add(b, mir, b->count);
		if (r != (finite ? 0 : -ERANGE))
			fail();
		for (size_t k = 0; k < b->count; k++)
			if (mir[k] != (finite ? b->values[k] : 0.0f))
				fail();
		free(mir);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gp_msg m, m2;
	struct gp_msg_header h;
	struct gp_msg_block *blocks;
	uint8_t *enc = NULL, *enc2 = NULL;
	size_t len, len2, n_blocks;
	float *vals = NULL;
	int r;

	r = gp_msg_decode(data, size, &m);
	if (r < 0)
		return 0;
	/* peek must agree about the header when decode got past it. */
	if (gp_msg_peek(data, size, &h) < 0 || h.type != m.type)
		fail();
	if (r == GP_MSG_UNKNOWN_TYPE) {
		gp_msg_finish(&m);
		return 0;
	}
	blocks = msg_blocks(&m, &n_blocks);
	if (blocks) {
		vals = blocks_to_values(blocks, n_blocks);
		if (!vals)
			goto out;
	}
	if (m.type == GP_MSG_PARAM_SHARDS)
		check_deltas(&m.u.param_shards);
	/* Re-encoding drops unknown fields and may renormalise floats (an
	 * int8 scale, a NaN payload in f16), so compare a second round
	 * trip, which must be a fixed point. */
	if (gp_msg_encode_alloc(&m, &enc, &len) < 0)
		fail();
	if (gp_msg_decode(enc, len, &m2) != 0)
		fail();
	{
		float *vals2 = NULL;

		blocks = msg_blocks(&m2, &n_blocks);
		if (blocks) {
			vals2 = blocks_to_values(blocks, n_blocks);
			if (!vals2) {
				gp_msg_finish(&m2);
				goto out;
			}
		}
		if (gp_msg_encode_alloc(&m2, &enc2, &len2) < 0)
			fail();
		free(vals2);
	}
	/* int8 and 4-bit scales are recomputed from dequantised values and
	 * may move by a rounding step; everything else must be
	 * byte-identical. */
	if (len2 != len || (!has_i8(&m) && memcmp(enc, enc2, len) != 0))
		fail();
	gp_msg_finish(&m2);
out:
	free(enc);
	free(enc2);
	free(vals);
	gp_msg_finish(&m);
	return 0;
}
