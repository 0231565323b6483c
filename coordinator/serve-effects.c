/* The pool's effects (pool.h, struct gp_pool_effects): what the pool's
 * decisions send and write, implemented for serve on the channels and the
 * ledger. Parameter pulls (the shards changed since the member's last,
 * or their changes for GP_CAP_PARAM_DELTA), minibatches (pixels, sample
 * indices or token windows), goodbyes, the update log's rows and
 * rejections, and the evaluations an epoch's end asks for. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channel.h"
#include "data.h"
#include "downlink.h"
#include "gp-endian.h"
#include "log.h"
#include "msg.h"
#include "params.h"
#include "pool.h"
#include "scheduler.h"
#include "server.h"
#include "ssp.h"
#include "util.h"
#include "work.h"

/* Sends the agent every shard changed since its last pull (work.c decides
 * whether one is needed and records it). */
static int send_params(struct peer *p)
{
	struct gp_pool *pool = &p->srv->pool;
	size_t n = gp_params_changed_since(pool->params, p->m.pulled_version,
					   NULL, 0);
	uint32_t *idx = malloc((n ? n : 1) * sizeof(*idx));
	float *deltas = NULL;
	struct gp_msg m;
	size_t queued;
	int r;

	gp_msg_init(&m, GP_MSG_PARAM_SHARDS);
	m.u.param_shards.blocks = calloc(2 * (n ? n : 1),
					 sizeof(struct gp_msg_block));
	if (!idx || !m.u.param_shards.blocks) {
		r = -ENOMEM;
		goto out;
	}
	gp_params_changed_since(pool->params, p->m.pulled_version, idx, n);
	for (size_t i = 0; i < n; i++) {
		struct gp_params_shard sh;
		struct gp_msg_block *b = &m.u.param_shards.blocks[i];

		gp_params_shard(pool->params, idx[i], &sh);
		b->tensor = sh.tensor;
		b->row_start = sh.row_begin;
		b->rows = sh.rows;
		b->version = sh.version;
		b->count = (uint32_t)sh.count;
		b->dtype = (p->m.caps & GP_CAP_F16) ? GP_DTYPE_F16 : GP_DTYPE_F32;
		b->values = gp_params_shard_data(pool->params, idx[i]);
	}
	m.u.param_shards.n_blocks = n;
	if (p->m.caps & GP_CAP_MOMENTUM) {
		for (size_t i = 0; i < n; i++) {
			struct gp_msg_block *b = &m.u.param_shards.blocks[n + i];

			*b = m.u.param_shards.blocks[i];
			b->tensor += (uint32_t)gp_params_tensor_count(pool->params);
			b->values = gp_params_shard_momentum(pool->params, idx[i]);
			/* The agent's local steps only start from it. */
			if (p->m.caps & GP_CAP_Q8)
				b->dtype = GP_DTYPE_Q8;
		}
		m.u.param_shards.n_blocks = 2 * n;
	}
	/* GP_CAP_PARAM_DELTA: changes against the agent's mirror. */
	r = gp_downlink_encode(pool, &p->m, m.u.param_shards.blocks, idx, n,
			       &deltas);
	if (r < 0)
		goto out;
	m.u.param_shards.clock = (uint64_t)gp_ssp_min_clock(pool->ssp);
	if (p->m.caps & GP_CAP_OVERLAP)
		m.u.param_shards.updates_read = p->m.updates_read;
	queued = p->ch ? gp_channel_queued_bytes(p->ch) : 0;
	r = gp_serve_send_blocks(p, &m, pool->n_params);
	/* What the socket did not take at once counts in the pull budget
	 * until the connection drains (on_drain): what the queue grew by.
	 * The socket may have taken earlier messages with this one, so the
	 * queue can be shorter than before. */
	if (r == 0 && p->ch) {
		size_t after = gp_channel_queued_bytes(p->ch);

		if (after > GP_SERVE_PULL_LOW_WATER && after > queued)
			gp_work_pull_queued(pool, &p->m, after - queued);
	}
out:
	free(m.u.param_shards.blocks);
	free(deltas);
	free(idx);
	return r;
}

/* group > 1: this minibatch opens a group of that many, sent next
 * (GP_CAP_SUMS, GP_CAP_INNER_ADAMW). */
static int send_minibatch(struct peer *p, uint64_t id, int64_t clock,
			  uint32_t group)
{
	struct server *srv = p->srv;
	struct gp_sched *sched = srv->pool.sched;
	uint32_t n = gp_sched_minibatch_samples(sched, id);
	uint32_t per = gp_sched_minibatches(sched);
	bool local = p->m.caps & (GP_CAP_LOCAL_DATA | GP_CAP_DATA_SHARDS);
	/* A language model's sample is a window of token ids (tokens.h);
	 * any other's bytes are u8 samples here. */
	size_t features = srv->train_tok ?
		gp_tokens_window_bytes(srv->spec.dims[0],
				       srv->spec.dims[srv->spec.n_layers]) :
		srv->train->features;
	uint32_t *idx = malloc(n * sizeof(*idx));
	uint8_t *px = malloc(local ? (size_t)n * 4 : (size_t)n * features);
	uint8_t *lb = malloc(n ? n : 1);
	struct gp_msg m;
	size_t got = 0;
	int r;

	if (!idx || !px || !lb) {
		r = -ENOMEM;
		goto out;
	}
	r = gp_sched_samples(sched, id, idx, n, &got);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < got && local; i++)
		gp_put_le32(px + 4 * i, idx[i]);
	if (!local && srv->train_tok &&
	    (r = gp_tokens_pack(srv->train_tok, srv->spec.dims[0],
				srv->spec.dims[srv->spec.n_layers], idx, got,
				px)) < 0)
		goto out;
	for (size_t i = 0; i < got && !local && !srv->train_tok; i++) {
		memcpy(px + i * features,
		       srv->train->images + (size_t)idx[i] * features,
		       features);
		lb[i] = srv->train->labels[idx[i]];
	}
	gp_msg_init(&m, GP_MSG_MINIBATCH);
	m.u.minibatch.epoch = (uint32_t)(id / per);
	m.u.minibatch.minibatch = id % per;
	m.u.minibatch.clock = (uint64_t)clock;
	m.u.minibatch.samples = (uint32_t)got;
	m.u.minibatch.features = (uint32_t)features;
	if (local) {
		m.u.minibatch.indices = px;
		m.u.minibatch.indices_len = got * 4;
	} else {
		m.u.minibatch.pixels = px;
		m.u.minibatch.pixels_len = got * features;
		/* A window's labels are its own next tokens. */
		m.u.minibatch.labels = lb;
		m.u.minibatch.labels_len = srv->train_tok ? 0 : got;
	}
	if (p->m.caps & GP_CAP_LOCAL_STEP) {
		m.u.minibatch.lr = (float)gp_pool_lr_at(&srv->pool, id);
		m.u.minibatch.momentum = srv->job.optimizer == GP_OPT_SGD_MOMENTUM ?
						 (float)srv->job.momentum : 0.0f;
	}
	/* A delta answers a group too, a minibatch alone being a group of
	 * one (group 1). */
	if (p->m.caps & (GP_CAP_SUMS | GP_CAP_INNER_ADAMW))
		m.u.minibatch.group = group;
	r = gp_serve_send(p, &m);
out:
	free(idx);
	free(px);
	free(lb);
	return r;
}

static bool fx_can_send(void *ctx, const struct gp_member *m)
{
	struct peer *p = peer_of((struct gp_member *)m);

	(void)ctx;
	return p->ch && gp_channel_is_established(p->ch);
}

static int fx_send_params(void *ctx, struct gp_member *m)
{
	(void)ctx;
	return send_params(peer_of(m));
}

static int fx_send_minibatch(void *ctx, struct gp_member *m, uint64_t id,
			     int64_t clock, uint32_t group)
{
	(void)ctx;
	return send_minibatch(peer_of(m), id, clock, group);
}

static int fx_send_verify(void *ctx, struct gp_member *m, struct gp_msg *msg)
{
	(void)ctx;
	return gp_serve_send(peer_of(m), msg);
}

static void fx_send_bye(void *ctx, struct gp_member *m, uint16_t reason,
			const char *text)
{
	(void)ctx;
	gp_serve_bye(peer_of(m), reason, text);
}

static void fx_close(void *ctx, struct gp_member *m, uint16_t code,
		     const char *text)
{
	(void)ctx;
	gp_serve_close(peer_of(m), code, text);
}

static bool fx_ledger_room(void *ctx, size_t n)
{
	struct server *srv = ctx;

	return gp_ledger_update_room(srv->st.ledger, n);
}

static int fx_ledger_update(void *ctx, const struct gp_ledger_update *row)
{
	struct server *srv = ctx;

	return gp_ledger_update_append(srv->st.ledger, row);
}

static void fx_ledger_rejection(void *ctx, const struct gp_ledger_rejection *rej)
{
	struct server *srv = ctx;

	gp_ledger_rejection_append(srv->st.ledger, rej);
}

static void fx_interim_eval(void *ctx)
{
	gp_bg_start_eval(ctx, true);
}

static void fx_epochs_completed(void *ctx, uint32_t n, bool job_done)
{
	struct server *srv = ctx;

	srv->eval_pending += n;
	if (job_done) {
		uint64_t first = srv->pool.first_work_us;
		double secs = first ? (double)(gp_mono_us() - first) / 1e6 : 0;

		srv->done = true;
		gp_info("all %u epochs applied", srv->job.epochs);
		/* From the first minibatch handed out to the last applied:
		 * start-up and the final evaluation are not in it. */
		printf("trained %" PRIu64 " samples in %.3f s: %.0f samples/s\n",
		       srv->pool.samples_run, secs,
		       secs > 0 ? (double)srv->pool.samples_run / secs : 0.0);
		fflush(stdout);
	}
	if (srv->job.eval)
		gp_bg_start_eval(srv, false);
	else if (job_done) {
		srv->final_reported = true;
		srv->pool.checkpoint_wanted = true;
		gp_bg_kick_db(srv, true);
	}
}

/* The rest of gp_work_serve_all's members, in the loop's idle phase:
 * a slice at a time, each followed by a poll for I/O (heartbeats and
 * updates are not held behind a clock edge's herd). */
static void on_serve_later(uv_idle_t *h)
{
	struct server *srv = h->data;

	uv_idle_stop(h);
	if (gp_serve_serving_work(srv))
		gp_work_serve_all(&srv->pool);
}

static void fx_serve_later(void *ctx)
{
	struct server *srv = ctx;

	/* data: made with the tick, before any member can be served. */
	if (srv->serve_idle.data &&
	    !uv_is_closing((uv_handle_t *)&srv->serve_idle))
		uv_idle_start(&srv->serve_idle, on_serve_later);
}

const struct gp_pool_effects gp_serve_effects = {
	.can_send = fx_can_send,
	.send_params = fx_send_params,
	.send_minibatch = fx_send_minibatch,
	.send_bye = fx_send_bye,
	.close = fx_close,
	.ledger_room = fx_ledger_room,
	.ledger_update = fx_ledger_update,
	.ledger_rejection = fx_ledger_rejection,
	.send_verify = fx_send_verify,
	.interim_eval = fx_interim_eval,
	.epochs_completed = fx_epochs_completed,
	.serve_later = fx_serve_later,
};
