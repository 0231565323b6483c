/* Parameters down as changes against a per-member mirror (downlink.h). */
#include "downlink.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "params.h"
#include "ssp.h"

void gp_downlink_delta(const float *w, float *mirror, float *delta, size_t n,
		       uint8_t dtype)
{
	float q[GP_MSG_Q8_CHUNK];

	assert(dtype == GP_DTYPE_Q8_DELTA || dtype == GP_DTYPE_Q4_DELTA);
	static_assert(GP_MSG_Q4_CHUNK == GP_MSG_Q8_CHUNK, "q[] holds a chunk");
	for (size_t i = 0; i < n; i++)
		delta[i] = w[i] - mirror[i];
	/* Chunk by chunk from the block's start, as the encoder cuts it. */
	for (size_t at = 0; at < n; at += GP_MSG_Q8_CHUNK) {
		size_t c = n - at < GP_MSG_Q8_CHUNK ? n - at : GP_MSG_Q8_CHUNK;

		if (dtype == GP_DTYPE_Q4_DELTA)
			gp_msg_q4_round(delta + at, q, c);
		else
			gp_msg_q8_round(delta + at, q, c);
		for (size_t i = 0; i < c; i++)
			mirror[at + i] += q[i];
	}
}

/* The mirror's rows of a shard sent whole as f16: what the member
 * decodes. */
static void set_f16(float *mirror, const float *w, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mirror[i] = gp_msg_f16_to_f32(gp_msg_f32_to_f16(w[i]));
}

/* m's link as measured: bytes per second, 0 when not measured yet. */
static double link_bps(const struct gp_pool *pool, const struct gp_member *m)
{
	struct gp_ssp_agent_info info;

	if (gp_ssp_get(pool->ssp, (uint64_t)m->agent_id, &info) < 0 ||
	    !(info.link_bps > 0))
		return 0;
	return info.link_bps;
}

bool gp_downlink_first_change(const struct gp_member *m)
{
	return (m->caps & GP_CAP_ZERO_MIRROR) && (m->caps & GP_CAP_Q4_DELTA) &&
	       !m->pulled_once && !m->mirror && !m->pull_check &&
	       m->pulled_version == 0;
}

int gp_downlink_encode(struct gp_pool *pool, struct gp_member *m,
		       struct gp_msg_block *blocks, const uint32_t *idx,
		       size_t n, float **ret_scratch)
{
	uint64_t bytes = (uint64_t)pool->n_params * sizeof(float);
	double bps = link_bps(pool, m);
	bool fast = bps >= GP_DOWNLINK_SLOW_BPS;
	/* The session's first pull against the zeros both mirrors start
	 * from (GP_CAP_ZERO_MIRROR), before the link is measured. */
	bool zero = gp_downlink_first_change(m) && !fast;
	/* Otherwise only on a measured slow link do the bytes saved pay for
	 * the coordinator's work. */
	bool delta = zero ||
		     (m->pulled_version != 0 && m->mirror && bps > 0 && !fast);
	uint8_t dtype = (m->caps & GP_CAP_Q4_DELTA) ? GP_DTYPE_Q4_DELTA :
						     GP_DTYPE_Q8_DELTA;
	float *scratch = NULL;

	*ret_scratch = NULL;
	m->pulled_once = true;
	m->pull_as_changes = false;
	if (!(m->caps & GP_CAP_PARAM_DELTA))
		return 0;
	if (fast) {
		gp_downlink_finish(pool, m);
		return 0;
	}
	/* A mirror starts with a pull of every shard (it is then what the
	 * member decodes), within the budget, or as zeros for a first pull
	 * of changes; without one, or without memory, the member gets f16
	 * blocks, as without the capability. */
	if (!m->mirror) {
		if (m->pulled_version != 0 ||
		    pool->mirror_bytes + bytes > GP_DOWNLINK_MIRRORS_BYTES ||
		    !(m->mirror = zero ? calloc(1, bytes) : malloc(bytes)))
			return 0;
		pool->mirror_bytes += bytes;
	}
	if (delta && !(scratch = malloc(pool->n_params * sizeof(float))))
		delta = false;
	for (size_t i = 0; i < n; i++) {
		struct gp_params_shard sh;
		struct gp_msg_block *b = &blocks[i];

		if (gp_params_shard(pool->params, idx[i], &sh) < 0)
			continue;
		if (!delta) {
			set_f16(m->mirror + sh.offset, b->values, sh.count);
			continue;
		}
		gp_downlink_delta(b->values, m->mirror + sh.offset,
				  scratch + sh.offset, sh.count, dtype);
		b->values = scratch + sh.offset;
		b->dtype = dtype;
	}
	if (delta)
		m->deltas_sent++;
	m->pull_as_changes = delta;
	*ret_scratch = scratch;
	return 0;
}

void gp_downlink_finish(struct gp_pool *pool, struct gp_member *m)
{
	if (!m->mirror)
		return;
	free(m->mirror);
	m->mirror = NULL;
	pool->mirror_bytes -= (uint64_t)pool->n_params * sizeof(float);
}
