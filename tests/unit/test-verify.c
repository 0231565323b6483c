/* Unit tests for coordinator/verify: the picking draw detects a member
 * that cheats on every clock within 50 clocks in at least 99 % of 20 000
 * simulated runs at the default rate (0.1); honest q8 and q4 updates with
 * error feedback, whatever their norms, pass the allowance with no
 * tolerance at all, while sign flip, zeros, noise and a stale update fail
 * at the default tolerance, and so does scaling in q8; and taking a member's updates back leaves the
 * parameters and momentum exactly where the same steps with its updates
 * zero lead, through a rebase of the momentum's scale, whether its
 * effects were measured, reported or kept as the updates came; a pull for a
 * clock with work still out is never picked; and after a mismatch every
 * clock of the member is picked, and its mismatches still count when it
 * comes back after leaving; a check handed to another member goes out
 * as the VERIFY_TASK of what the checked member was sent, an agreeing
 * answer verifies it without the coordinator's recomputation, and an
 * answer to a task the member does not hold changes nothing. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "data.h"
#include "model.h"
#include "params.h"
#include "pool-fixture.h"
#include "pool.h"
#include "scheduler.h"
#include "verify-impl.h"
#include "test.h"
#include "verify.h"
#include "util.h"

#define N 1000

static uint64_t rng = 0x2545f4914f6cdd1dull;

/* Uniform in [-1, 1). */
static double noise(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) / (double)(1ull << 52) - 1;
}

static double dist(const float *a, const float *b, size_t n)
{
	double s = 0;

	for (size_t i = 0; i < n; i++)
		s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
	return sqrt(s);
}

static double norm(const float *a, size_t n)
{
	double s = 0;

	for (size_t i = 0; i < n; i++)
		s += (double)a[i] * a[i];
	return sqrt(s);
}

/* A persistent cheater is caught at the first picked clock: the share of
 * runs with a pick within 50 clocks. */
static void test_detection(void)
{
	const int runs = 20000;
	int caught = 0, twice = 0;
	uint64_t state = 42;

	for (int r = 0; r < runs; r++) {
		int picks = 0;

		for (int clock = 0; clock < 50; clock++)
			picks += gp_verify_draw(&state, 0.1);
		caught += picks >= 1;
		twice += picks >= 2;
	}
	printf("rate 0.1: caught within 50 clocks in %d of %d runs (%.2f %%), "
	       "twice (revoked) in %.2f %%\n", caught, runs,
	       100.0 * caught / runs, 100.0 * twice / runs);
	ASSERT_GE(caught, runs * 99 / 100);
	/* The draw's rate is what it says. */
	{
		int hits = 0;

		for (int i = 0; i < 100000; i++)
			hits += gp_verify_draw(&state, 0.25);
		ASSERT_NEAR(hits / 100000.0, 0.25, 0.01);
	}
}

/* One q8 or q4 update with error feedback (agent/feedback.c): sent =
 * Q(x + e), e = x + e - sent. */
static void q_send(uint8_t dtype, const float *x, float *e, float *sent,
		   size_t n)
{
	float y[N];

	for (size_t i = 0; i < n; i++)
		y[i] = x[i] + e[i];
	if (dtype == GP_DTYPE_Q4)
		gp_msg_q4_round(y, sent, n);
	else
		gp_msg_q8_round(y, sent, n);
	for (size_t i = 0; i < n; i++)
		e[i] = y[i] - sent[i];
}

static void test_allowance(uint8_t dtype)
{
	float x[N], e[N] = {0}, sent[N], bad[N], first[N];
	double prev = 0;

	/* Honest: norms jumping by 100x between updates (a group of one
	 * after a long one) and heavy-tailed values. */
	for (int t = 0; t < 2000; t++) {
		double scale = (t % 7 == 0) ? 100 : (t % 3 == 0) ? 0.01 : 1;
		double q;

		for (size_t i = 0; i < N; i++)
			x[i] = (float)(scale * noise() *
				       (i % 61 == 0 ? 30 : 1));
		if (t == 5)
			memcpy(first, x, sizeof(x));
		q_send(dtype, x, e, sent, N);
		q = gp_verify_allowance(dtype, norm(sent, N), prev);
		ASSERT(gp_verify_pass(dist(sent, x, N), norm(x, N), q, 0));
		prev = norm(sent, N);
	}
	/* f16 and f32. */
	for (size_t i = 0; i < N; i++) {
		x[i] = (float)noise();
		sent[i] = gp_msg_f16_to_f32(gp_msg_f32_to_f16(x[i]));
	}
	ASSERT(gp_verify_pass(dist(sent, x, N), norm(x, N),
			      gp_verify_allowance(GP_DTYPE_F16, norm(sent, N), 0),
			      0));
	ASSERT(!gp_verify_pass(dist(sent, x, N), norm(x, N),
			       gp_verify_allowance(GP_DTYPE_F32, 0, 0), 0));
	/* Attacks, each sent as dtype after an honest update of the same
	 * norm, at the default tolerance. q4's allowance is over half the
	 * norm (verify.c Q4_BOUND): a sum scaled by 1.2 is within it. */
	for (int mode = 0; mode < 5; mode++) {
		float e2[N] = {0}, prev_sent[N];
		double q;

		if (mode == 2 && dtype == GP_DTYPE_Q4)
			continue;
		for (size_t i = 0; i < N; i++)
			x[i] = (float)noise();
		q_send(dtype, x, e2, prev_sent, N);
		for (size_t i = 0; i < N; i++)
			x[i] = (float)noise();
		for (size_t i = 0; i < N; i++) {
			switch (mode) {
			case 0: bad[i] = -x[i]; break;           /* sign flip */
			case 1: bad[i] = 0; break;               /* zeros */
			case 2: bad[i] = 1.2f * x[i]; break;     /* scaled */
			case 3: bad[i] = (float)noise(); break;  /* noise */
			default: bad[i] = 0; break;              /* stale */
			}
		}
		if (mode == 4)
			for (size_t i = 0; i < N; i++)
				bad[i] = (float)(first[i] * norm(x, N) /
						 norm(first, N));
		q_send(dtype, bad, e2, sent, N);
		q = gp_verify_allowance(dtype, norm(sent, N),
					norm(prev_sent, N));
		printf("dtype %u attack %d: residual %.3f of what passes\n",
		       dtype, mode,
		       dist(sent, x, N) / (q + 0.05 * norm(x, N)));
		ASSERT(!gp_verify_pass(dist(sent, x, N), norm(x, N), q, 0.05));
	}
}

/* Two agents step the store; agent 3 cheats. After gp_verify_take_back,
 * the store is where the same steps with agent 3's gradients zero lead. */
/* How verification learns an update's effect: measured (the parameters
 * before and after), reported by a linear step and added to the member's
 * sums, or reported and kept as the update came (its blocks' bytes, one
 * update in five still added to the sums). All three take back to the
 * same place. */
enum effect_mode { MEASURED, REPORTED, KEPT };

/* g as an UPDATE's f16 blocks of the two tensors below (twice for a
 * group: b = a), g rounded to what they decode to. */
static struct gp_msg_update *as_blocks(float *g, size_t n, bool sums,
				       uint8_t *raw,
				       struct gp_msg_block blocks[4],
				       struct gp_msg_update *u)
{
	gp_msg_f16_round(g, g, n);
	for (size_t i = 0; i < n; i++)
		gp_put_le16(raw + 2 * i, gp_msg_f32_to_f16(g[i]));
	for (size_t set = 0; set < (sums ? 2u : 1u); set++) {
		blocks[2 * set] = (struct gp_msg_block){
			.tensor = 0, .rows = 50, .count = 800,
			.dtype = GP_DTYPE_F16, .raw = raw, .raw_len = 1600,
		};
		blocks[2 * set + 1] = (struct gp_msg_block){
			.tensor = 1, .rows = 1, .count = 16,
			.dtype = GP_DTYPE_F16, .raw = raw + 1600,
			.raw_len = 32,
		};
	}
	*u = (struct gp_msg_update){
		.form = sums ? GP_UPDATE_SUMS : GP_UPDATE_GRADIENT,
		.blocks = blocks, .n_blocks = sums ? 4 : 2, .parts = 1,
	};
	return u;
}

/* kept_bytes: env.kept_bytes (0: the default). */
static void test_take_back(enum effect_mode mode, float mu, uint64_t steps,
			   uint64_t kept_bytes)
{
	bool linear = mode != MEASURED;
	struct gp_msg_block blocks[4];
	struct gp_msg_update msg;
	uint8_t *raw;
	uint64_t kept = 0;
	struct gp_tensor_shape shapes[] = { { "w", 50, 16 }, { "b", 1, 16 } };
	struct gp_params_config cfg = { .lr = 0.05f, .momentum = mu };
	struct gp_sched_config sc = { .n_samples = 1000, .batch_size = 10,
				      .epochs = 3, .seed = 1 };
	struct gp_job job = { .optimizer = mu > 0 ? GP_OPT_SGD_MOMENTUM :
						    GP_OPT_SGD,
			      .momentum = mu };
	struct gp_params *p, *ref;
	struct gp_pool pool = {0};
	struct gp_member honest = { .agent_id = 1 }, cheat = { .agent_id = 3 };
	struct gp_verify_env env = {0};
	struct gp_verify *v;
	size_t n;
	float *g, *zero;
	double d_w, d_v, n_w;

	ASSERT_OK(gp_params_create(&cfg, shapes, 2, &p));
	ASSERT_OK(gp_params_create(&cfg, shapes, 2, &ref));
	n = gp_params_size(p);
	ASSERT_EQ(n, 816);
	raw = malloc(2 * n);
	ASSERT_NOT_NULL(raw);
	g = malloc(n * sizeof(float));
	zero = calloc(n, sizeof(float));
	ASSERT_NOT_NULL(g);
	ASSERT_NOT_NULL(zero);
	pool.job = &job;
	pool.params = p;
	pool.n_params = n;
	ASSERT_OK(gp_sched_create(&sc, &pool.sched));
	env.kept_bytes = kept_bytes;
	ASSERT_OK(gp_verify_create(&pool, &env, 1, &v));
	pool.verify = v;
	/* 300 steps: 0.9^300 passes below the rebase threshold. */
	for (uint64_t t = 0; t < steps; t++) {
		bool bad = t % 4 == 1;
		float lr = (float)(0.05 * (1 + 0.5 * noise()));
		struct gp_member *m = bad ? &cheat : &honest;
		bool group = mu > 0 && !bad && t % 3 == 0;
		const struct gp_msg_update *u = NULL;

		for (size_t i = 0; i < n; i++)
			g[i] = (float)(bad ? 5 * noise() : noise() + 0.1);
		if (mode == KEPT && t % 5 != 0)
			u = as_blocks(g, n, group, raw, blocks, &msg);
		if (group) {
			/* An honest group of 4 (GP_UPDATE_SUMS): a step of
			 * c = sum_j lr_j mu^j and mu^4; every other one
			 * stale, scaled 0.5: 2 steps of the pool's time,
			 * mu^2 and c (1 - mu^2) / (1 - mu^4) (params.h). */
			float lrs[4];
			double c = 0, mk = 1;
			bool stale = t % 2 == 0;
			/* b = a: a plausible pair. */
			struct gp_params_sums sums = {
				.a = g, .b = g, .lrs = lrs, .count = 4,
				.scale = stale ? 0.5f : 1,
				.carry_time = stale ? 0.5f : 1,
			};

			for (int j = 0; j < 4; j++) {
				lrs[j] = (float)(0.05 * (1 + 0.5 * noise()));
				mk *= mu;
				c += (double)lrs[j] * mk;
			}
			if (stale) {
				c *= (1 - (double)mu * mu) / (1 - mk);
				mk = (double)mu * mu;
			}
			struct gp_params_apply_info info;
			struct gp_verify_effect e;

			gp_verify_before_step(&pool, linear);
			ASSERT_OK(gp_params_apply_sums(p, &sums, n, &info));
			ASSERT(info.linear);
			e = (struct gp_verify_effect){ info.ka, info.kb, g, g,
						       u };
			gp_verify_applied(&pool, m, &t, 1, c, mk,
					  linear ? &e : NULL);
			kept = v->raw_bytes > kept ? v->raw_bytes : kept;
			ASSERT_OK(gp_params_apply_sums(ref, &sums, n, NULL));
			continue;
		}
		ASSERT_OK(gp_params_set_lr(p, lr));
		ASSERT_OK(gp_params_set_lr(ref, lr));
		{
			struct gp_params_apply_info info;
			struct gp_verify_effect e;

			gp_verify_before_step(&pool, linear);
			ASSERT_OK(gp_params_apply(p, g, n, &info));
			ASSERT(info.linear);
			e = (struct gp_verify_effect){ info.ka, info.kb, g, g,
						       u };
			gp_verify_applied(&pool, m, &t, 1, (double)lr * mu,
					  mu, linear ? &e : NULL);
			kept = v->raw_bytes > kept ? v->raw_bytes : kept;
		}
		ASSERT_OK(gp_params_apply(ref, bad ? zero : g, n, NULL));
	}
	ASSERT(dist(gp_params_values(p), gp_params_values(ref), n) > 1);
	/* Kept as they came only where asked, and only with momentum (else
	 * the next step would fold it in at once). */
	ASSERT_EQ(kept > 0, mode == KEPT && mu > 0);
	/* Kept updates take at most half the budget with the sums. */
	ASSERT(kept + v->segs * n * 2 * sizeof(float) <= v->kept_max / 2);
	ASSERT_EQ(gp_verify_take_back(v, 3), (int)(steps / 4));
	d_w = dist(gp_params_values(p), gp_params_values(ref), n);
	d_v = dist(gp_params_momentum(p), gp_params_momentum(ref), n);
	n_w = norm(gp_params_values(ref), n);
	printf("taken back (%s, mu %.1f, %" PRIu64 " steps): |w - ref| %.3g "
	       "of |ref| %.3g, |v - ref| %.3g\n",
	       mode == MEASURED ? "measured effects" : mode == REPORTED ?
	       "reported effects" : "kept updates", mu, steps, d_w, n_w,
	       d_v);
	ASSERT(d_w <= 1e-5 * n_w);
	ASSERT(d_v <= 1e-5 * norm(gp_params_momentum(ref), n));
	/* Nothing is left to take back. */
	ASSERT_EQ(gp_verify_take_back(v, 3), 0);
	gp_verify_destroy(v);
	free(raw);
	gp_sched_destroy(pool.sched);
	gp_params_destroy(p);
	gp_params_destroy(ref);
	free(g);
	free(zero);
}

/* The kept effects stay within env.kept_bytes: with room for two
 * stretches, a third member's update is applied without a way back, the
 * first two members' can still be taken back. */
static void test_kept_budget(void)
{
	struct gp_tensor_shape shapes[] = { { "w", 8, 4 } };
	struct gp_params_config cfg = { .lr = 0.05f, .momentum = 0.9f };
	struct gp_sched_config sc = { .n_samples = 100, .batch_size = 10,
				      .epochs = 1, .seed = 1 };
	struct gp_job job = { .optimizer = GP_OPT_SGD_MOMENTUM,
			      .momentum = 0.9 };
	struct gp_member ms[3] = { { .agent_id = 1 }, { .agent_id = 2 },
				   { .agent_id = 3 } };
	struct gp_pool pool = {0};
	struct gp_verify_env env = {0};
	struct gp_verify *v;
	struct gp_params *p;
	float g[32];

	ASSERT_OK(gp_params_create(&cfg, shapes, 1, &p));
	for (size_t i = 0; i < 32; i++)
		g[i] = (float)noise();
	pool.job = &job;
	pool.params = p;
	pool.n_params = 32;
	ASSERT_OK(gp_sched_create(&sc, &pool.sched));
	env.kept_bytes = 2 * 32 * 2 * sizeof(float);
	ASSERT_OK(gp_verify_create(&pool, &env, 1, &v));
	pool.verify = v;
	for (uint64_t t = 0; t < 3; t++) {
		gp_verify_before_step(&pool, false);
		ASSERT_OK(gp_params_apply(p, g, 32, NULL));
		gp_verify_applied(&pool, &ms[t], &t, 1, 0.05 * 0.9f, 0.9f,
				  NULL);
	}
	ASSERT_EQ(gp_verify_take_back(v, 3), 0);
	ASSERT_EQ(gp_verify_take_back(v, 1), 1);
	ASSERT_EQ(gp_verify_take_back(v, 2), 1);
	gp_verify_destroy(v);
	gp_sched_destroy(pool.sched);
	gp_params_destroy(p);
}

/* A pull while any of the member's work is on its way is never picked:
 * the whole pull would replace the copy that holds its own updates still
 * on their way (the next run, computed without them, lands on top of
 * them), and that work's update, computed from the copy before, would be
 * compared with this one's copy (a false mismatch after a coordinator's
 * resume, fault/crash-coordinator). The clock handed out ahead draws its
 * pick before it goes (gp_verify_defer()) and, picked, waits until
 * nothing is in flight, when its pull is picked without a second draw. */
static void test_pick_open(void)
{
	struct gp_job job = { .optimizer = GP_OPT_SGD_MOMENTUM,
			      .momentum = 0.9, .verify_rate = 1 };
	struct gp_pool pool = { .job = &job, .n_params = 4 };
	struct gp_member m = { .agent_id = 1, .clock = 5, .clock_open = 3 };
	struct gp_verify_env env = {0};
	struct gp_verify *v;

	ASSERT_OK(gp_verify_create(&pool, &env, 1, &v));
	pool.verify = v;
	/* The next run of clock 5, pipelined while 3 of its minibatches are
	 * out; and clock 6 handed out ahead meanwhile. */
	ASSERT(!gp_verify_pick(&pool, &m, 5, 32));
	ASSERT(!gp_verify_pick(&pool, &m, 6, 32));
	ASSERT_EQ(v->st.picked, 0);
	/* Clock 6 drawn before it goes ahead: picked, so it waits; asked
	 * again, it still waits (no second draw). */
	ASSERT(gp_verify_defer(&pool, &m, 6, 32));
	job.verify_rate = 0;
	ASSERT(gp_verify_defer(&pool, &m, 6, 32));
	/* Clock 5's work all answered and the member on clock 6: the
	 * deferred pick is taken, at a rate that draws nothing, once. */
	m.clock_open = 0;
	m.clock = 6;
	ASSERT(gp_verify_pick(&pool, &m, 6, 32));
	ASSERT_EQ(v->st.picked, 1);
	ASSERT(!gp_verify_pick(&pool, &m, 6, 32));
	/* Nothing deferred and nothing drawn: clock 7 goes ahead. */
	m.clock_open = 2;
	ASSERT(!gp_verify_defer(&pool, &m, 7, 32));
	/* Work ahead out: no pick either. */
	m.clock_open = 0;
	m.next_open = 2;
	job.verify_rate = 1;
	ASSERT(!gp_verify_pick(&pool, &m, 7, 32));
	m.next_open = 0;
	ASSERT(gp_verify_pick(&pool, &m, 7, 32));
	gp_verify_destroy(v);
}

/* After a mismatch the member's clocks are all picked, even at a rate
 * that picks nothing, and neither that nor its count of mismatches
 * (verify_bans) is lost when it leaves and joins again: a cheater that
 * reconnected after each mismatch was never revoked. */
static void test_suspect(void)
{
	struct gp_job job = { .optimizer = GP_OPT_SGD_MOMENTUM,
			      .momentum = 0.9, .verify_rate = 0 };
	struct gp_pool pool = { .job = &job, .n_params = 4 };
	struct gp_member m = { .agent_id = 7, .clock = 1 };
	struct gp_member again = { .agent_id = 7, .clock = 9 };
	struct gp_member other = { .agent_id = 8, .clock = 1 };
	struct gp_verify_env env = {0};
	struct gp_verify *v;

	ASSERT_OK(gp_verify_create(&pool, &env, 1, &v));
	pool.verify = v;
	ASSERT(!gp_verify_pick(&pool, &m, 1, 32));
	ASSERT_EQ(gp_verify_note_mismatch(v, 7), 1);
	ASSERT(gp_verify_suspect(v, 7));
	ASSERT(gp_verify_pick(&pool, &m, 2, 32));
	ASSERT(!gp_verify_pick(&pool, &other, 2, 32));
	/* It leaves and comes back as a new connection. */
	gp_verify_member_finish(&pool, &m);
	ASSERT(gp_verify_suspect(v, 7));
	ASSERT(gp_verify_pick(&pool, &again, 10, 32));
	ASSERT_EQ(gp_verify_note_mismatch(v, 7), 2);
	ASSERT(!gp_verify_suspect(v, 8));
	gp_verify_member_finish(&pool, &again);
	gp_verify_destroy(v);
}

/* A run shorter than GP_VERIFY_CLOCK_STEPS is picked more often, so that
 * its check costs as much as a longer one's: at rate 0.1, 4 in 10 clocks
 * of one minibatch, 1 in 10 of 32. */
static void test_pick_short(void)
{
	struct gp_job job = { .optimizer = GP_OPT_SGD_MOMENTUM,
			      .momentum = 0.9, .verify_rate = 0.1 };
	struct gp_pool pool = { .job = &job, .n_params = 4 };
	struct gp_member m = { .agent_id = 1, .clock = 1 };
	struct gp_verify_env env = {0};
	struct gp_verify *v;
	int one = 0, two = 0, long_ = 0, new_two = 0, new_long = 0;

	ASSERT(fabs(gp_verify_pick_rate(0.1, 1, false) - 0.4) < 1e-12);
	ASSERT(fabs(gp_verify_pick_rate(0.1, 2, false) - 0.2) < 1e-12);
	ASSERT(fabs(gp_verify_pick_rate(0.1, 48, false) - 0.1) < 1e-12);
	ASSERT(gp_verify_pick_rate(0.5, 1, false) == 1);
	/* On probation: short clocks at 5 x the rate at least, long ones
	 * as before. */
	ASSERT(fabs(gp_verify_pick_rate(0.1, 1, true) - 0.5) < 1e-12);
	ASSERT(fabs(gp_verify_pick_rate(0.1, 2, true) - 0.5) < 1e-12);
	ASSERT(fabs(gp_verify_pick_rate(0.02, 1, true) - 0.1) < 1e-12);
	ASSERT(fabs(gp_verify_pick_rate(0.1, 48, true) - 0.1) < 1e-12);
	ASSERT(gp_verify_pick_rate(0.3, 2, true) == 1);
	ASSERT_OK(gp_verify_create(&pool, &env, 3, &v));
	pool.verify = v;
	/* None of its work verified yet: on probation. */
	for (int i = 0; i < 10000; i++) {
		new_two += gp_verify_pick(&pool, &m, 1, 2);
		new_long += gp_verify_pick(&pool, &m, 1, 32);
	}
	m.verify.verified = 1;
	for (int i = 0; i < 10000; i++) {
		one += gp_verify_pick(&pool, &m, 1, 1);
		two += gp_verify_pick(&pool, &m, 1, 2);
		long_ += gp_verify_pick(&pool, &m, 1, 32);
	}
	printf("picked: on probation %d of 10000 two-minibatch clocks, %d of "
	       "32; then %d of one-minibatch clocks, %d of two, %d of 32\n",
	       new_two, new_long, one, two, long_);
	ASSERT(new_two > 4700 && new_two < 5300);
	ASSERT(new_long > 850 && new_long < 1150);
	ASSERT(one > 3700 && one < 4300);
	ASSERT(two > 1800 && two < 2200);
	ASSERT(long_ > 850 && long_ < 1150);
	gp_verify_destroy(v);
}

/* The detection target through gp_verify_pick() itself, at the default
 * rate: a member cheating on every clock is caught (a mismatch at its
 * first picked clock) within 50 clocks in at least 99 % of 20 000
 * simulated runs, whether its clocks are long (32 minibatches) or a
 * member without local steps' (2); and, with every clock of a suspect
 * picked, revoked (a second mismatch) within 50 in at least 99 % too
 * (96.8 % with the draw alone: test_detection). */
static void test_detection_pick(void)
{
	const int runs = 20000;
	const uint32_t steps[] = { 32, 2 };

	for (size_t s = 0; s < 2; s++) {
		int caught = 0, revoked = 0;

		for (int r = 0; r < runs; r++) {
			struct gp_job job = { .optimizer = GP_OPT_SGD_MOMENTUM,
					      .momentum = 0.9,
					      .verify_rate = 0.1 };
			struct gp_pool pool = { .job = &job, .n_params = 4 };
			struct gp_member m = { .agent_id = 5 };
			struct gp_verify_env env = {0};
			struct gp_verify *v;
			uint32_t mm = 0;

			ASSERT_OK(gp_verify_create(&pool, &env,
						   (uint64_t)r * 7919 + s, &v));
			pool.verify = v;
			for (int64_t c = 1; c <= 50 && mm < 2; c++) {
				m.clock = c;
				if (gp_verify_pick(&pool, &m, c, steps[s]))
					mm = gp_verify_note_mismatch(v, 5);
			}
			caught += mm >= 1;
			revoked += mm >= 2;
			gp_verify_destroy(v);
		}
		printf("clocks of %u: caught within 50 in %.2f %%, revoked in "
		       "%.2f %%\n", steps[s], 100.0 * caught / runs,
		       100.0 * revoked / runs);
		ASSERT_GE(caught, runs * 99 / 100);
		ASSERT_GE(revoked, runs * 99 / 100);
	}
}

/* A pool with every clock picked (verify_rate 1, the verifier seeded with
 * `seed`) and one member offering `caps`, handed its first clock: its ids
 * in ids[], how many is returned; g gets any values for an update (not
 * noise(): the later tests' data come from its stream). */
static size_t picked_clock(struct fixture *f, uint64_t seed, uint32_t caps,
			   struct gp_member **ret_m, uint64_t ids[8],
			   float g[FX_N])
{
	struct gp_verify_env env = {0};
	size_t n;

	fx_setup(f, 3);
	f->job.verify_rate = 1;
	ASSERT_OK(gp_verify_create(&f->pool, &env, seed, &f->pool.verify));
	*ret_m = fx_join(f, 0, caps);
	gp_work_request(&f->pool, *ret_m, 1);
	n = fx_work_of(f, 1, 0, ids, 8);
	ASSERT_EQ((*ret_m)->clock_open, n);
	for (size_t i = 0; i < FX_N; i++)
		g[i] = (float)i - 4;
	memcpy(f->pool.grad, g, FX_N * sizeof(float));
	return n;
}

static void picked_done(struct fixture *f, struct gp_member *m)
{
	gp_verify_member_finish(&f->pool, m);
	gp_verify_destroy(f->pool.verify);
	f->pool.verify = NULL;
	fx_teardown(f);
}

/* A member without local steps computes its clock's minibatches on one
 * copy: the update checked is drawn among them, not always the first
 * (else cheating on the second alone is never found). With local steps
 * (one minibatch a clock where checked: work.c) it is the first. */
static void test_pick_which(void)
{
	const int runs = 400;
	int first[2] = { 0, 0 };

	for (int ls = 0; ls < 2; ls++)
		for (int r = 0; r < runs; r++) {
			struct fixture f;
			struct fx_update x;
			struct gp_member *m;
			uint64_t ids[8];
			float g[FX_N];
			double sq[2];
			size_t n = picked_clock(&f, (uint64_t)r + 1,
						ls ? GP_CAP_LOCAL_STEP : 0,
						&m, ids, g);

			ASSERT_EQ(n, ls ? 1 : GP_WORK_BASE);
			ASSERT(gp_verify_received(&f.pool, m,
						  fx_plain(&x, ids[0], 0, g),
						  ids, 1, sq));
			if (f.pool.verify->pending) {
				first[ls]++;
			} else {
				/* The copy waited for the clock's second. */
				ASSERT(!ls);
				m->clock_open = 1;
				ASSERT(gp_verify_received(&f.pool, m,
							  fx_plain(&x, ids[1],
								   0, g),
							  ids + 1, 1, sq));
				ASSERT(f.pool.verify->pending);
				ASSERT_UINT_EQ(f.pool.verify->pending->ids[0],
					       ids[1]);
			}
			picked_done(&f, m);
		}
	printf("checked the clock's first update: %d of %d without local "
	       "steps, %d of %d with\n", first[0], runs, first[1], runs);
	ASSERT(first[0] > runs * 3 / 8 && first[0] < runs * 5 / 8);
	ASSERT_EQ(first[1], runs);
}

/* A refused update drops a picked clock's copy only when it was the
 * member's own work and the member takes local steps (its next update
 * then came from a stepped copy); a refused update that held none of its
 * work (a duplicate of an applied minibatch costs nothing to send), or a
 * member without local steps, leaves the copy for the clock's update. */
static void test_refused_copy(void)
{
	static const struct {
		uint32_t caps;
		bool own, kept;
	} cases[] = { { 0, true, true }, { 0, false, true },
		      { GP_CAP_LOCAL_STEP, false, true },
		      { GP_CAP_LOCAL_STEP, true, false } };

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct fixture f;
		double sq[2];
		struct fx_update x;
		struct gp_member *m;
		uint64_t ids[8];
		float g[FX_N];

		ASSERT(picked_clock(&f, 5, cases[c].caps, &m, ids, g) >= 1);
		gp_verify_refused(&f.pool, m, fx_plain(&x, ids[0], 0, g),
				  cases[c].own);
		m->clock_open = 1; /* the update below is the clock's last */
		ASSERT(gp_verify_received(&f.pool, m,
					  fx_plain(&x, ids[0], 0, g), ids, 1,
					  sq));
		ASSERT_EQ(f.pool.verify->pending != NULL, cases[c].kept);
		picked_done(&f, m);
	}
}

/* Probation (GP_VERIFY_PROBATION) against the collude run that broke the
 * model: two members without local steps (two-minibatch clocks), neither
 * picked in its first six clocks. 20 000 simulated pairs: at most 0.2 %
 * unpicked on probation (0.5^12 = 0.02 %), where the same draw for
 * members past probation leaves about 7 % (0.8^12). */
static void test_probation_pair(void)
{
	const int runs = 20000;
	int missed[2] = { 0, 0 };

	for (int past = 0; past < 2; past++) {
		for (int r = 0; r < runs; r++) {
			struct gp_job job = { .optimizer = GP_OPT_SGD_MOMENTUM,
					      .momentum = 0.9,
					      .verify_rate = 0.1 };
			struct gp_pool pool = { .job = &job, .n_params = 4 };
			struct gp_member m[2] = { { .agent_id = 5 },
						  { .agent_id = 6 } };
			struct gp_verify_env env = {0};
			struct gp_verify *v;
			bool picked = false;

			ASSERT_OK(gp_verify_create(&pool, &env,
						   (uint64_t)r * 104729 + 11,
						   &v));
			pool.verify = v;
			for (int64_t c = 1; c <= 6 && !picked; c++)
				for (int i = 0; i < 2 && !picked; i++) {
					m[i].clock = c;
					m[i].verify.verified = (uint32_t)past;
					picked = gp_verify_pick(&pool, &m[i], c,
								2);
				}
			missed[past] += !picked;
			gp_verify_destroy(v);
		}
	}
	printf("two colluders unpicked in their first 6 clocks: %.3f %% on "
	       "probation, %.2f %% past it\n", 100.0 * missed[0] / runs,
	       100.0 * missed[1] / runs);
	ASSERT(missed[0] <= runs / 500);
	ASSERT(missed[1] > runs * 5 / 100 && missed[1] < runs * 9 / 100);
}

/* What fx_send_verify saw: the last VERIFY_TASK, encoded as serve sends
 * it, and to whom. */
static uint8_t *task_wire;
static size_t task_len;
static int64_t task_to;

static int fx_send_verify(void *ctx, struct gp_member *m, struct gp_msg *msg)
{
	(void)ctx;
	free(task_wire);
	ASSERT_OK(gp_msg_encode_alloc(msg, &task_wire, &task_len));
	task_to = m->agent_id;
	return 0;
}

/* A VERIFY_RESULT of `task` holding x (the fixture's two tensors), as the
 * decoder leaves it; *wire to free. */
static void answer(uint64_t task, const float *x, struct gp_msg *ret,
		   uint8_t **wire)
{
	struct gp_msg_block b[2] = {
		{ .tensor = 0, .rows = 2, .count = 6, .values = x },
		{ .tensor = 1, .rows = 1, .count = 3, .values = x + 6 },
	};
	struct gp_msg msg;
	size_t len;

	gp_msg_init(&msg, GP_MSG_VERIFY_RESULT);
	msg.u.verify_result.task = task;
	msg.u.verify_result.blocks = b;
	msg.u.verify_result.n_blocks = 2;
	ASSERT_OK(gp_msg_encode_alloc(&msg, wire, &len));
	ASSERT_OK(gp_msg_decode(*wire, len, ret));
}

/* m's clock is picked and its copy sent; its one-minibatch update g
 * (minibatch *id) is received and applied as apply.c does it (the
 * blocks read into grad). */
static void apply_picked(struct fixture *f, struct gp_member *m,
			 uint64_t *id, const float *g, struct fx_update *x)
{
	ASSERT(gp_verify_pick(&f->pool, m, m->clock, 1));
	gp_verify_sent(&f->pool, m, m->clock);
	memcpy(f->pool.grad, g, FX_N * sizeof(float));
	double sq[2], want = 0;

	ASSERT(gp_verify_received(&f->pool, m, fx_plain(x, *id, m->clock, g),
				  id, 1, sq));
	/* The norms it hands the robust filter: those of the update as
	 * sent (form 0: no second sum). */
	for (size_t i = 0; i < FX_N; i++)
		want += (double)g[i] * g[i];
	ASSERT(fabs(sq[0] - want) <= 1e-6 * want);
	ASSERT(sq[1] == 0);
	gp_verify_before_step(&f->pool, false);
	ASSERT_OK(gp_params_apply(f->params, g, FX_N, NULL));
	gp_verify_applied(&f->pool, m, id, 1, 0.1, 0, NULL);
}

/* checker answers `task` with x, as serve hands the decoded message to
 * verification; *st gets the counters after it. */
static void deliver(struct gp_pool *pool, struct gp_member *checker,
		    uint64_t task, const float *x, struct gp_verify_stats *st)
{
	struct gp_msg res;
	uint8_t *wire = NULL;

	answer(task, x, &res, &wire);
	gp_verify_result(pool, checker, &res.u.verify_result);
	gp_msg_finish(&res);
	free(wire);
	gp_verify_get_stats(pool->verify, st);
}

static void test_delegate(void)
{
	struct gp_pool_effects fx = fx_effects;
	struct fixture f;
	struct gp_verify_env env = {0};
	struct gp_verify_stats st;
	struct gp_member *checked, *checker, *untried;
	struct gp_msg task;
	uint64_t id = 3, mb;
	uint32_t idx[4], epoch, samples;
	size_t got;
	float g[FX_N], w0[FX_N], lr;
	struct fx_update x;

	fx.send_verify = fx_send_verify;
	fx_setup(&f, 3);
	f.pool.fx = &fx;
	f.job.verify_rate = 1;
	f.job.verify_audit = 0;
	ASSERT_OK(gp_verify_create(&f.pool, &env, 1, &f.pool.verify));
	checked = fx_join(&f, 0, 0);
	checker = fx_join(&f, 1, 0);
	untried = fx_join(&f, 2, 0);
	/* Granted only with the training set; the grant is members.c's. */
	checker->caps |= GP_CAP_VERIFY;
	untried->caps |= GP_CAP_VERIFY;
	/* A checker's link must be measured (here 1 MB in 1 ms). */
	ASSERT_OK(gp_ssp_link_sent(f.ssp, 2, checker->clock, 1000, 500000));
	ASSERT_EQ(gp_ssp_link_answered(f.ssp, 2, checker->clock, 2000, 0, 0,
				       500000), 1);
	ASSERT_OK(gp_ssp_link_sent(f.ssp, 3, untried->clock, 1000, 500000));
	ASSERT_EQ(gp_ssp_link_answered(f.ssp, 3, untried->clock, 2000, 0, 0,
				       500000), 1);
	/* Only a member with work of its own verified is handed checks:
	 * untried is never (it may be a cheat's partner). */
	checker->verify.verified = 1;
	f.pool.verify->qualified = 1;
	memcpy(w0, gp_params_values(f.params), sizeof(w0));
	for (size_t i = 0; i < FX_N; i++)
		g[i] = (float)noise();
	apply_picked(&f, checked, &id, g, &x);
	/* Out with the checker, not recomputed here, and never with the
	 * member of no verified work. */
	ASSERT_EQ(task_to, checker->agent_id);
	ASSERT(gp_verify_busy(f.pool.verify));
	ASSERT_OK(gp_msg_decode(task_wire, task_len, &task));
	ASSERT_EQ(task.type, GP_MSG_VERIFY_TASK);
	ASSERT_EQ(task.u.verify_task.form, GP_UPDATE_GRADIENT);
	ASSERT_EQ(task.u.verify_task.items_len, GP_MSG_VERIFY_ITEM_SIZE);
	gp_msg_verify_item(&task.u.verify_task, 0, &epoch, &mb, &lr, &samples);
	ASSERT_EQ(epoch, 0);
	ASSERT_EQ(mb, 3);
	ASSERT_EQ(samples, 4);
	ASSERT_OK(gp_sched_samples(f.sched, id, idx, 4, &got));
	ASSERT_EQ(task.u.verify_task.indices_len, 16);
	for (size_t i = 0; i < 4; i++)
		ASSERT_EQ(gp_get_le32(task.u.verify_task.indices + 4 * i),
			  idx[i]);
	/* The parameters the checked member was sent, before its step. */
	ASSERT_EQ(task.u.verify_task.n_blocks, 2);
	for (size_t b = 0; b < 2; b++) {
		float got_w[6];
		const struct gp_msg_block *bl = &task.u.verify_task.blocks[b];

		ASSERT_EQ(bl->tensor, b);
		ASSERT_OK(gp_msg_block_read(bl, got_w, bl->count));
		ASSERT_EQ(memcmp(got_w, w0 + 6 * b, bl->count * 4), 0);
	}
	/* An answer to another task: ignored, the check still out. */
	deliver(&f.pool, checker, task.u.verify_task.task + 1, g, &st);
	ASSERT_EQ(st.verified, 0);
	ASSERT(gp_verify_busy(f.pool.verify));
	/* The checker computed what was sent: verified, nothing
	 * recomputed here. */
	deliver(&f.pool, checker, task.u.verify_task.task, g, &st);
	ASSERT_EQ(st.delegated, 1);
	ASSERT_EQ(st.verified, 1);
	ASSERT_EQ(st.mismatched, 0);
	ASSERT_EQ(st.recompute_ns, 0);
	ASSERT(!gp_verify_busy(f.pool.verify));
	ASSERT_EQ(checker->verify.task, 0);
	/* The checked member's work was found right: it may check now. */
	ASSERT_EQ(checked->verify.verified, 1);
	ASSERT_EQ(untried->verify.verified, 0);
	ASSERT_EQ(f.pool.verify->qualified, 1);
	gp_msg_finish(&task);

	/* untried's clock, with both members that may check it busy with
	 * other checks: it waits for one, not recomputed here, and goes to
	 * the first that is free at the next tick. */
	checked->verify.task = 98;
	checker->verify.task = 99;
	task_to = 0;
	id = 5;
	apply_picked(&f, untried, &id, g, &x);
	ASSERT_EQ(task_to, 0);
	ASSERT_EQ(f.pool.verify->n_waiting, 1);
	ASSERT(gp_verify_busy(f.pool.verify));
	gp_verify_tick(&f.pool, gp_now_ms());
	ASSERT_EQ(task_to, 0); /* still none free */
	checker->verify.task = 0;
	gp_verify_tick(&f.pool, gp_now_ms());
	ASSERT_EQ(task_to, checker->agent_id);
	ASSERT_EQ(f.pool.verify->n_waiting, 0);
	ASSERT_OK(gp_msg_decode(task_wire, task_len, &task));
	deliver(&f.pool, checker, task.u.verify_task.task, g, &st);
	ASSERT_EQ(st.verified, 2);
	ASSERT_EQ(st.recompute_ns, 0);
	ASSERT(!gp_verify_busy(f.pool.verify));
	ASSERT_EQ(untried->verify.verified, 1);
	ASSERT_EQ(f.pool.verify->qualified, 2);
	checked->verify.task = 0;
	gp_msg_finish(&task);
	free(task_wire);
	task_wire = NULL;
	gp_verify_member_finish(&f.pool, checked);
	gp_verify_member_finish(&f.pool, checker);
	gp_verify_member_finish(&f.pool, untried);
	gp_verify_destroy(f.pool.verify);
	f.pool.verify = NULL;
	fx_teardown(&f);
}

/* Moves the pool's parameters to w (gp_params_undo of the difference). */
static void set_params(struct gp_params *p, const float *w, size_t n)
{
	double dw[FX_N], dv[FX_N] = { 0 };

	for (size_t i = 0; i < n; i++)
		dw[i] = (double)gp_params_values(p)[i] - w[i];
	ASSERT_OK(gp_params_undo(p, dw, dv, n));
}

/* A take-back's share is the largest whose parameters' training loss is
 * within 5 % of the lowest: on a data set a 2-3 model labels itself
 * (parameters good, so good's loss is the lowest), an effect e taken
 * back from good + e goes out whole, from good + e / 2 by half, and from
 * good (the updates after it undid it already) not at all; but a small
 * one (-e / 100), whose removal raises the loss by less than 5 %, goes
 * out whole even from good. */
static void test_take_share(void)
{
	enum { S = 256 };
	struct fixture f;
	struct gp_model_spec spec;
	struct gp_backend *be;
	struct gp_model *m;
	struct gp_verify_env env = {0};
	static float x[S * 2], logits[S * 3];
	static uint8_t labels[S];
	struct gp_dataset ds = {
		.count = S, .features = 2, .shape = { 2, 1, 1 },
		.dtype = GP_DATA_F32, .classes = 3,
		.images = (uint8_t *)x, .labels = labels,
	};
	float good[FX_N], w[FX_N];
	double e[FX_N], d[FX_N];
	static const struct {
		double at;     /* good + at * e */
		double size;   /* the effect taken back: size * e */
		double share;  /* what of it is taken out */
	} cases[] = { { 1, 1, 1 }, { 0.5, 1, 0.5 }, { 0, 1, 0 },
		      { 0, -0.01, 1 } };

	ASSERT_OK(gp_model_spec_parse("2-3", &spec, NULL, 0));
	ASSERT_OK(gp_backend_create_cpu(1, &be));
	ASSERT_OK(gp_model_create(be, &spec, S, &m));
	ASSERT_EQ(gp_model_param_count(m), FX_N);
	for (size_t i = 0; i < FX_N; i++) {
		good[i] = (float)(4 * noise());
		e[i] = 6 * noise();
	}
	for (size_t i = 0; i < S * 2; i++)
		x[i] = (float)noise();
	ASSERT_OK(gp_model_write_all(m, GP_MODEL_PARAM, good));
	ASSERT_OK(gp_model_logits(m, x, S, logits));
	for (size_t i = 0; i < S; i++) {
		labels[i] = 0;
		for (uint8_t c = 1; c < 3; c++)
			if (logits[i * 3 + c] > logits[i * 3 + labels[i]])
				labels[i] = c;
	}
	fx_setup(&f, 3);
	env.train = &ds;
	env.spec = &spec;
	env.batch_size = 64; /* 4 minibatches: all 256 samples drawn from */
	env.job_seed = 11;
	ASSERT_OK(gp_verify_create(&f.pool, &env, 1, &f.pool.verify));
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		double share;

		for (size_t i = 0; i < FX_N; i++) {
			w[i] = (float)(good[i] + cases[k].at * e[i]);
			d[i] = cases[k].size * e[i];
		}
		set_params(f.params, w, FX_N);
		share = gp_verify_take_share(f.pool.verify, d);
		printf("take-back of %.3f e from good + %.1f e: %.1f (losses "
		       "%.4f / %.4f / %.4f with 100 / 50 / 0 %% out)\n",
		       cases[k].size, cases[k].at, share,
		       f.pool.verify->share_loss[0],
		       f.pool.verify->share_loss[1],
		       f.pool.verify->share_loss[2]);
		ASSERT(share == cases[k].share);
		/* The margin at work: out whole at a (small) cost. */
		if (cases[k].size < 0)
			ASSERT(f.pool.verify->share_loss[0] >
			       f.pool.verify->share_loss[2]);
		/* The parameters are not touched: roll_back applies it. */
		ASSERT(dist(gp_params_values(f.params), w, FX_N) == 0);
	}
	gp_verify_destroy(f.pool.verify);
	f.pool.verify = NULL;
	fx_teardown(&f);
	gp_model_destroy(m);
	gp_backend_destroy(be);
}

int main(void)
{
	test_delegate();
	test_detection_pick();
	test_probation_pair();
	test_pick_which();
	test_refused_copy();
	test_pick_short();
	test_suspect();
	test_pick_open();
	test_detection();
	test_allowance(GP_DTYPE_Q8);
	test_allowance(GP_DTYPE_Q4);
	test_take_back(MEASURED, 0.9f, 300, 0);
	test_take_back(REPORTED, 0.9f, 300, 0);
	/* Without momentum every step rebases (M = 0): a fold, not a
	 * division by 0. */
	test_take_back(MEASURED, 0, 300, 0);
	test_take_back(REPORTED, 0, 300, 0);
	test_kept_budget();
	test_take_share();
	/* Last: test_take_share's cases hold for the noise() it draws
	 * after the tests above. */
	test_take_back(KEPT, 0.9f, 300, 0);
	/* Room for 40 of them with the two members' sums: the rest are
	 * added to the sums. */
	test_take_back(KEPT, 0.9f, 300, 2 * (2 * 816 * 4 + 40 * 1800));
	test_take_back(KEPT, 0, 300, 0);
	/* mu 0.5: about 20 rebases, after which the first kept updates'
	 * bases pass SEG_BASE_MAX and they are folded into the sums. */
	test_take_back(KEPT, 0.5f, 800, 0);
	return 0;
}
