/* A pool for the unit tests of coordinator/apply, work and members: a
 * small parameter store (a 2x3 and a 1x3 tensor), SSP clocks, a schedule of
 * 10 minibatches of 4 samples per epoch, and effects that record what the
 * decisions send and write instead of touching a socket or a database.
 * Header-only: each test executable includes it once. */
#ifndef GP_POOL_FIXTURE_H
#define GP_POOL_FIXTURE_H

#include <string.h>

#include "apply.h"
#include "gp-endian.h"
#include "members.h"
#include "pool.h"
#include "test.h"
#include "util.h"
#include "work.h"

#define FX_N 9          /* floats of the whole model */
#define FX_MEMBERS (GP_WORK_MEMO_MIN + 8)
#define FX_LOG 512

struct fx_sent {
	int64_t agent;
	uint64_t id;
	int64_t clock;
	uint32_t group;
};

struct fixture {
	struct gp_job job;
	struct gp_params *params;
	struct gp_ssp *ssp;
	struct gp_sched *sched;
	float grad[FX_N], grad_b[FX_N];
	struct gp_pool pool;
	struct gp_member members[FX_MEMBERS];
	/* What the effects saw. */
	bool established;       /* what can_send answers */
	bool room;              /* what ledger_room answers */
	unsigned params_sent, byes, closes, interim, epochs_done;
	uint64_t pull_queued;   /* bytes each parameter send leaves queued */
	bool job_done;
	unsigned serve_laters;  /* fx->serve_later calls */
	bool slow_send;         /* each minibatch sent takes >= 2 µs */
	uint16_t last_bye;
	struct fx_sent sent[FX_LOG];
	size_t n_sent;
	struct gp_ledger_update rows[FX_LOG];
	size_t n_rows;
	size_t n_rejections;
};

static bool fx_can_send(void *ctx, const struct gp_member *m)
{
	(void)m;
	return ((struct fixture *)ctx)->established;
}

static int fx_send_params(void *ctx, struct gp_member *m)
{
	struct fixture *f = ctx;

	f->params_sent++;
	/* What serve does when the socket does not take it all at once. */
	if (f->pull_queued)
		gp_work_pull_queued(&f->pool, m, f->pull_queued);
	return 0;
}

static int fx_send_minibatch(void *ctx, struct gp_member *m, uint64_t id,
			     int64_t clock, uint32_t group)
{
	struct fixture *f = ctx;

	ASSERT_LT(f->n_sent, FX_LOG);
	f->sent[f->n_sent++] = (struct fx_sent){ m->agent_id, id, clock, group };
	for (uint64_t t0 = gp_mono_us(); f->slow_send && gp_mono_us() < t0 + 2;)
		;
	return 0;
}

static void fx_send_bye(void *ctx, struct gp_member *m, uint16_t reason,
			const char *text)
{
	struct fixture *f = ctx;

	(void)m;
	(void)text;
	f->byes++;
	f->last_bye = reason;
}

static void fx_close(void *ctx, struct gp_member *m, uint16_t code,
		     const char *text)
{
	(void)m;
	(void)code;
	(void)text;
	((struct fixture *)ctx)->closes++;
}

static bool fx_ledger_room(void *ctx, size_t n)
{
	(void)n;
	return ((struct fixture *)ctx)->room;
}

static int fx_ledger_update(void *ctx, const struct gp_ledger_update *row)
{
	struct fixture *f = ctx;

	ASSERT_LT(f->n_rows, FX_LOG);
	f->rows[f->n_rows++] = *row;
	return 0;
}

static void fx_ledger_rejection(void *ctx, const struct gp_ledger_rejection *rej)
{
	(void)rej;
	((struct fixture *)ctx)->n_rejections++;
}

static void fx_interim_eval(void *ctx)
{
	((struct fixture *)ctx)->interim++;
}

static void fx_epochs_completed(void *ctx, uint32_t n, bool job_done)
{
	struct fixture *f = ctx;

	f->epochs_done += n;
	f->job_done |= job_done;
}

static void fx_serve_later(void *ctx)
{
	((struct fixture *)ctx)->serve_laters++;
}

static const struct gp_pool_effects fx_effects = {
	.can_send = fx_can_send,
	.send_params = fx_send_params,
	.send_minibatch = fx_send_minibatch,
	.send_bye = fx_send_bye,
	.close = fx_close,
	.ledger_room = fx_ledger_room,
	.ledger_update = fx_ledger_update,
	.ledger_rejection = fx_ledger_rejection,
	.interim_eval = fx_interim_eval,
	.epochs_completed = fx_epochs_completed,
	.serve_later = fx_serve_later,
};

/* A pool with staleness bound s and the optimiser's momentum; lr 0.1,
 * constant. The caller may change f->job and the params config before
 * the first request. */
static inline void fx_setup_with(struct fixture *f, uint32_t s, float momentum,
			  float clip_norm, float reject_norm)
{
	struct gp_tensor_shape shapes[2] = { { "w", 2, 3 }, { "b", 1, 3 } };
	struct gp_params_config pc = {
		.lr = 0.1f, .momentum = momentum, .clip_norm = clip_norm,
		.reject_norm = reject_norm,
	};
	struct gp_sched_config sc = {
		.n_samples = 40, .batch_size = 4, .epochs = 2, .seed = 7,
	};

	memset(f, 0, sizeof(*f));
	gp_job_defaults(&f->job);
	f->job.learning_rate = 0.1;
	f->job.lr_schedule = GP_LR_CONSTANT;
	f->job.warmup_epochs = 0;
	f->job.momentum = momentum;
	f->job.weight_decay = 0;
	f->job.batch_size = 4;
	f->job.epochs = 2;
	f->job.staleness = s;
	f->job.staleness_scaling = true;
	f->job.group_updates = true;
	f->job.max_strikes = 3;
	f->job.max_agents = 3;
	f->job.eval_every = 0;
	f->job.checkpoint_interval_minibatches = 0;
	f->job.clock_duration_ms = 20;
	ASSERT_OK(gp_params_create(&pc, shapes, 2, &f->params));
	ASSERT_OK(gp_ssp_create(s, &f->ssp));
	ASSERT_OK(gp_sched_create(&sc, &f->sched));
	f->pool = (struct gp_pool){
		.job = &f->job,
		.job_id = 1,
		.params = f->params,
		.ssp = f->ssp,
		.sched = f->sched,
		.grad = f->grad,
		.grad_b = f->grad_b,
		.n_params = FX_N,
		.minibatches_total = 20,
		.train_fingerprint = 0xf00d,
		.fx = &fx_effects,
		.fx_data = f,
	};
	f->established = true;
	f->room = true;
}

static inline void fx_setup(struct fixture *f, uint32_t s)
{
	fx_setup_with(f, s, 0, 0, 0);
}

static inline void fx_teardown(struct fixture *f)
{
	for (size_t i = 0; i < sizeof(f->members) / sizeof(f->members[0]); i++)
		gp_robust_agent_finish(&f->members[i].robust);
	gp_robust_finish(&f->pool.robust);
	gp_members_finish(&f->pool);
	gp_work_finish(&f->pool);
	gp_params_destroy(f->params);
	gp_ssp_destroy(f->ssp);
	gp_sched_destroy(f->sched);
}

/* Member i joins as agent i + 1 with these caps offered and an announced
 * speed of `speed` minibatches per second (0: none). */
static inline struct gp_member *fx_join_speed(struct fixture *f, size_t i,
				       uint32_t caps, double speed)
{
	struct gp_member *m = &f->members[i];
	struct gp_msg_device dev = { .samples_per_s = (float)(speed * 4) };
	struct gp_msg_join j = { .caps = caps, .devices = &dev,
				 .n_devices = speed > 0 };
	int64_t clock = -1;

	gp_robust_agent_finish(&m->robust);
	memset(m, 0, sizeof(*m));
	memset(m->key, (int)i + 1, sizeof(m->key));
	snprintf(m->addr, sizeof(m->addr), "test-%zu", i);
	gp_members_add(&f->pool, m);
	ASSERT(!gp_members_full(&f->pool, m, NULL));
	ASSERT_OK(gp_members_join(&f->pool, m, (int64_t)i + 1, &j, &clock));
	ASSERT_EQ(clock, m->clock);
	return m;
}

static inline struct gp_member *fx_join(struct fixture *f, size_t i, uint32_t caps)
{
	return fx_join_speed(f, i, caps, 0);
}

/* An UPDATE as the decoder would leave it: blocks pointing at LE bytes. */
struct fx_update {
	struct gp_msg_update u;
	struct gp_msg_block blocks[4];
	uint8_t raw[2][FX_N * 4];
	uint8_t items[GP_MSG_GROUP_MAX * GP_MSG_ITEM_SIZE];
};

static inline void fx_blocks(struct fx_update *x, size_t set, const float *g)
{
	for (size_t i = 0; i < FX_N; i++)
		gp_put_lef32(x->raw[set] + 4 * i, g[i]);
	x->blocks[2 * set] = (struct gp_msg_block){
		.tensor = 0, .rows = 2, .count = 6, .dtype = GP_DTYPE_F32,
		.raw = x->raw[set], .raw_len = 24,
	};
	x->blocks[2 * set + 1] = (struct gp_msg_block){
		.tensor = 1, .rows = 1, .count = 3, .dtype = GP_DTYPE_F32,
		.raw = x->raw[set] + 24, .raw_len = 12,
	};
}

/* A plain update of minibatch `id` at `clock` with gradient g. */
static inline struct gp_msg_update *fx_plain(struct fx_update *x, uint64_t id,
				      int64_t clock, const float *g)
{
	memset(x, 0, sizeof(*x));
	fx_blocks(x, 0, g);
	x->u.epoch = (uint32_t)(id / 10);
	x->u.minibatch = id % 10;
	x->u.clock = (uint64_t)clock;
	x->u.samples = 4;
	x->u.loss = 1.5f;
	x->u.parts = 1;
	x->u.blocks = x->blocks;
	x->u.n_blocks = 2;
	x->u.form = GP_UPDATE_GRADIENT;
	return &x->u;
}

/* A group update of minibatches ids[0..k) at `clock` with sums a, b. */
static inline struct gp_msg_update *fx_sums(struct fx_update *x, const uint64_t *ids,
				     size_t k, int64_t clock, const float *a,
				     const float *b)
{
	memset(x, 0, sizeof(*x));
	fx_blocks(x, 0, a);
	fx_blocks(x, 1, b);
	for (size_t i = 0; i < k; i++)
		gp_msg_update_item_put(x->items, i, (uint32_t)(ids[i] / 10),
				       ids[i] % 10, 1.0f + (float)i);
	x->u.epoch = (uint32_t)(ids[0] / 10);
	x->u.minibatch = ids[0] % 10;
	x->u.clock = (uint64_t)clock;
	x->u.parts = 1;
	x->u.blocks = x->blocks;
	x->u.n_blocks = 4;
	x->u.form = GP_UPDATE_SUMS;
	x->u.items = x->items;
	x->u.items_len = k * GP_MSG_ITEM_SIZE;
	return &x->u;
}

/* A delta update (local AdamW steps) of minibatches ids[0..k) at
 * `clock`, the run's change d. */
static inline struct gp_msg_update *fx_delta(struct fx_update *x,
					     const uint64_t *ids, size_t k,
					     int64_t clock, const float *d)
{
	fx_sums(x, ids, k, clock, d, d);
	x->u.n_blocks = 2;
	x->u.form = GP_UPDATE_DELTA;
	return &x->u;
}

/* The minibatch ids sent to agent `agent` at `clock`, in order; returns
 * how many (at most cap). */
static inline size_t fx_work_of(const struct fixture *f, int64_t agent, int64_t clock,
			 uint64_t *ids, size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < f->n_sent; i++)
		if (f->sent[i].agent == agent && f->sent[i].clock == clock &&
		    n < cap)
			ids[n++] = f->sent[i].id;
	return n;
}

#endif
