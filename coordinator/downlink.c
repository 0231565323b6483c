/* Parameters down as changes against a per-member mirror (downlink.h). */
#include "downlink.h"

#include <errno.h>
#include <stdlib.h>

#include "params.h"
#include "ssp.h"

void gp_downlink_delta(const float *w, float *mirror, float *delta, size_t n)
{
	float q[GP_MSG_Q8_CHUNK];

	for (size_t i = 0; i < n; i++)
		delta[i] = w[i] - mirror[i];
	/* Chunk by chunk from the block's start, as the encoder cuts it. */
	for (size_t at = 0; at < n; at += GP_MSG_Q8_CHUNK) {
		size_t c = n - at < GP_MSG_Q8_CHUNK ? n - at : GP_MSG_Q8_CHUNK;

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

/* Whether m's link is measured and slower than GP_DOWNLINK_SLOW_BPS:
 * only there do the bytes saved pay for the coordinator's work. */
static bool slow_link(const struct gp_pool *pool, const struct gp_member *m)
{
	struct gp_ssp_agent_info info;

	return gp_ssp_get(pool->ssp, (uint64_t)m->agent_id, &info) == 0 &&
	       info.link_bps > 0 && info.link_bps < GP_DOWNLINK_SLOW_BPS;
}

int gp_downlink_encode(struct gp_pool *pool, struct gp_member *m,
		       struct gp_msg_block *blocks, const uint32_t *idx,
		       size_t n, float **ret_scratch)
{
	bool delta = m->pulled_version != 0 && m->mirror &&
		     slow_link(pool, m);
	float *scratch = NULL;

	*ret_scratch = NULL;
	if (!(m->caps & GP_CAP_PARAM_DELTA))
		return 0;
	/* Without memory the member gets f16 blocks, as without the
	 * capability; a whole block sets its mirror's rows anyway. */
	if (!m->mirror && !(m->mirror = malloc(pool->n_params * sizeof(float))))
		return 0;
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
				  scratch + sh.offset, sh.count);
		b->values = scratch + sh.offset;
		b->dtype = GP_DTYPE_Q8_DELTA;
	}
	if (delta)
		m->deltas_sent++;
	*ret_scratch = scratch;
	return 0;
}

void gp_downlink_finish(struct gp_member *m)
{
	free(m->mirror);
	m->mirror = NULL;
}
