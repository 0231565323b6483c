/* Unit tests for coordinator/work and coordinator/members: what a WORK_REQUEST
 * gets, the clock handed out ahead, the SSP bound parking and releasing,
 * paused members, clock sizes from the slowest agent, and the join and
 * leave decisions, all without a socket. */
#include <errno.h>
#include <time.h>

#include "pool-fixture.h"
#include "verify.h"

static const float zero[FX_N];

static const float *answer_grad = zero;

/* Answers every minibatch of m's current clock with a zero gradient (or
 * answer_grad). */
static void answer_clock(struct fixture *f, struct gp_member *m)
{
	uint64_t ids[64];
	int64_t clock = m->clock;
	size_t n = fx_work_of(f, m->agent_id, clock, ids, 64);
	struct fx_update x;

	for (size_t i = 0; i < n; i++)
		if (gp_sched_check(f->sched, (uint64_t)m->agent_id, ids[i]) == 0)
			ASSERT_OK(gp_apply_update(&f->pool, m,
						  fx_plain(&x, ids[i], clock, answer_grad),
						  gp_now_ms()));
}

static void test_request(void)
{
	struct fixture f;
	struct gp_member *m;

	fx_setup(&f, 1);
	m = fx_join(&f, 0, 0);
	/* Not asked yet, or asked for none: nothing. */
	gp_work_serve(&f.pool, m);
	ASSERT_EQ(f.n_sent, 0);
	gp_work_request(&f.pool, m, 0);
	ASSERT_EQ(f.n_sent, 0);
	/* A connection not established yet gets nothing either. */
	f.established = false;
	gp_work_request(&f.pool, m, 1);
	ASSERT_EQ(f.n_sent, 0);
	f.established = true;
	gp_work_request(&f.pool, m, 1);
	/* An unmeasured agent: a short first clock, with a full pull. */
	ASSERT_EQ(f.n_sent, GP_WORK_BASE);
	ASSERT_EQ(f.params_sent, 1);
	ASSERT_EQ(f.sent[0].clock, 0);
	ASSERT_EQ(f.sent[0].group, GP_WORK_BASE);
	ASSERT_EQ(f.sent[1].group, 0);
	ASSERT_EQ(m->clock_open, GP_WORK_BASE);
	ASSERT_EQ(m->clock_work, GP_WORK_BASE);
	ASSERT_UINT_EQ(m->pulled_version, gp_params_version(f.params));
	ASSERT_EQ(gp_sched_outstanding(f.sched, 1), GP_WORK_BASE);
	ASSERT(f.pool.first_work_us > 0);
	/* Without GP_CAP_LOCAL_STEP nothing is handed out ahead. */
	gp_work_serve(&f.pool, m);
	ASSERT_EQ(f.n_sent, GP_WORK_BASE);
	ASSERT_EQ(m->next_work, 0);
	/* Measured fast (a solo clock would be 250), it still gets at most
	 * GP_WORK_BASE a clock: they are computed on one copy. */
	ASSERT_OK(gp_ssp_observe_speed(f.ssp, 1, 10000));
	answer_clock(&f, m);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 1), GP_WORK_BASE);
	ASSERT_EQ(f.n_sent, 2 * GP_WORK_BASE);
	/* A stopping pool hands out nothing. */
	answer_clock(&f, m);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 1), GP_WORK_BASE); /* clock 1 */
	f.pool.stopping = true;
	answer_clock(&f, m);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 1), 0);
	fx_teardown(&f);
}

/* Where updates are checked, a member with local steps but no groups
 * gets one minibatch a clock, ahead too: its later updates would come
 * from a copy stepped with its own velocity, which cannot be recomputed.
 * With groups, or unchecked, GP_WORK_BASE as before. */
static void test_local_step_checked(void)
{
	struct gp_verify_env env = {0};
	struct fixture f;
	struct gp_member *a, *b;
	uint64_t ids[8];

	fx_setup(&f, 1);
	ASSERT_OK(gp_verify_create(&f.pool, &env, 1, &f.pool.verify));
	a = fx_join(&f, 0, GP_CAP_LOCAL_STEP);
	b = fx_join(&f, 1, GP_CAP_LOCAL_STEP | GP_CAP_SUMS);
	ASSERT(b->caps & GP_CAP_SUMS);
	gp_work_request(&f.pool, a, 1);
	ASSERT_EQ(fx_work_of(&f, 1, 0, ids, 8), 1);
	ASSERT_EQ(a->clock_open, 1);
	/* The clock handed out ahead holds one too. */
	ASSERT_EQ(fx_work_of(&f, 1, 1, ids, 8), 1);
	ASSERT_EQ(a->next_work, 1);
	gp_work_request(&f.pool, b, 1);
	ASSERT_EQ(fx_work_of(&f, 2, 0, ids, 8), GP_WORK_BASE);
	gp_verify_member_finish(&f.pool, a);
	gp_verify_member_finish(&f.pool, b);
	gp_verify_destroy(f.pool.verify);
	f.pool.verify = NULL;
	fx_teardown(&f);

	fx_setup(&f, 1);
	a = fx_join(&f, 0, GP_CAP_LOCAL_STEP);
	gp_work_request(&f.pool, a, 1);
	ASSERT_EQ(fx_work_of(&f, 1, 0, ids, 8), GP_WORK_BASE);
	fx_teardown(&f);
}

static void test_ahead(void)
{
	struct fixture f;
	struct gp_member *m;
	uint64_t ids[8];

	fx_setup(&f, 1);
	m = fx_join(&f, 0, GP_CAP_LOCAL_STEP);
	gp_work_request(&f.pool, m, 1);
	/* All of clock 0 is out and the copy is current: clock 1 follows at
	 * once, without a second pull. */
	ASSERT_EQ(fx_work_of(&f, 1, 0, ids, 8), GP_WORK_BASE);
	ASSERT_EQ(fx_work_of(&f, 1, 1, ids, 8), GP_WORK_BASE);
	ASSERT_EQ(f.params_sent, 1);
	ASSERT_EQ(m->next_work, GP_WORK_BASE);
	ASSERT_EQ(m->next_open, GP_WORK_BASE);
	/* Never two clocks ahead. */
	gp_work_serve(&f.pool, m);
	ASSERT_EQ(f.n_sent, 2 * GP_WORK_BASE);
	/* Clock 0 answered: the work ahead becomes clock 1's, and clock 2
	 * goes out ahead (1 + 1 <= m + s with m = 1). */
	answer_clock(&f, m);
	ASSERT_EQ(m->clock, 1);
	ASSERT_EQ(m->clock_open, GP_WORK_BASE);
	ASSERT_EQ(fx_work_of(&f, 1, 2, ids, 8), GP_WORK_BASE);
	ASSERT_EQ(f.params_sent, 1);
	/* Its copy holds its own updates (read-my-writes), nobody else's:
	 * it stays current, no pull. */
	ASSERT_UINT_EQ(m->view.own, GP_WORK_BASE);
	answer_clock(&f, m);
	ASSERT_EQ(m->clock, 2);
	ASSERT_UINT_EQ(m->view.own, 2 * GP_WORK_BASE);
	ASSERT_EQ(f.params_sent, 1);
	fx_teardown(&f);
}

/* With an outer optimiser the coordinator applies an agent's own
 * updates otherwise than its copy took them: an agent alone gets the
 * clock ahead while nothing landed, then pulls at the next boundary
 * instead of reading its own writes (test_ahead without it: no pull). */
static void test_outer_pulls(void)
{
	struct fixture f;
	struct gp_member *m;
	uint64_t ids[8];

	static float g[FX_N];

	for (size_t i = 0; i < FX_N; i++)
		g[i] = 0.01f * (float)(i % 5) - 0.02f;
	answer_grad = g;
	fx_setup(&f, 1);
	f.job.outer_optimizer = GP_OUTER_NESTEROV;
	ASSERT_OK(gp_params_set_outer(f.params, 0.7f, 0.9f));
	m = fx_join(&f, 0, GP_CAP_LOCAL_STEP);
	gp_work_request(&f.pool, m, 1);
	ASSERT_EQ(fx_work_of(&f, 1, 0, ids, 8), GP_WORK_BASE);
	ASSERT_EQ(fx_work_of(&f, 1, 1, ids, 8), GP_WORK_BASE);
	ASSERT_EQ(f.params_sent, 1);
	/* Clock 0 answered: its copy no longer matches the store, so clock
	 * 2 is not handed out ahead on it. */
	answer_clock(&f, m);
	ASSERT_EQ(m->clock, 1);
	ASSERT_EQ(m->next_work, 0);
	ASSERT_EQ(f.params_sent, 1);
	/* Clock 1 answered: clock 2 comes with a pull. */
	answer_clock(&f, m);
	ASSERT_EQ(m->clock, 2);
	ASSERT_EQ(fx_work_of(&f, 1, 2, ids, 8), GP_WORK_BASE);
	ASSERT_EQ(f.params_sent, 2);
	ASSERT_UINT_EQ(m->pulled_version, gp_params_version(f.params));
	answer_grad = zero;
	fx_teardown(&f);
}

/* Answers m's work at `clock` with one delta (local AdamW steps), as
 * serve does: applied, then gp_work_update_read. */
static void answer_delta(struct fixture *f, struct gp_member *m, int64_t clock)
{
	static const float d[FX_N] = { 0.001f, -0.002f, 0.003f, 0, 0.0005f,
				       -0.001f, 0.002f, 0, -0.004f };
	uint64_t ids[64];
	size_t n = fx_work_of(f, m->agent_id, clock, ids, 64);
	struct fx_update x;

	ASSERT(n > 0);
	ASSERT_OK(gp_apply_update(&f->pool, m, fx_delta(&x, ids, n, clock, d),
				  gp_now_ms()));
	gp_work_update_read(&f->pool, m);
}

/* GP_CAP_OVERLAP: two members taking local AdamW steps. With it, a
 * member whose copy lacks the other's run still gets its next clock
 * ahead, without a pull; the pull goes out on its own once two of its
 * updates were read (GP_WORK_OVERLAP_RUNS), while it holds that work,
 * and the views start from it. Without it (the job's overlap off), the
 * next clock waits and comes with its pull. */
static void test_overlap(void)
{
	const uint32_t caps = GP_CAP_LOCAL_STEP | GP_CAP_INNER_ADAMW |
			      GP_CAP_OVERLAP;
	struct fixture f;
	struct gp_member *a, *b;
	uint64_t ids[8];

	for (int on = 1; on >= 0; on--) {
		fx_setup(&f, 3);
		f.job.optimizer = GP_OPT_ADAMW;
		f.job.inner_optimizer = GP_INNER_ADAMW;
		f.job.overlap = on;
		a = fx_join(&f, 0, caps);
		b = fx_join(&f, 1, caps);
		ASSERT_EQ(!!(a->caps & GP_CAP_OVERLAP), on);
		ASSERT(a->caps & GP_CAP_INNER_ADAMW);
		gp_work_request(&f.pool, a, 1);
		gp_work_request(&f.pool, b, 1);
		ASSERT_EQ(f.params_sent, 2);
		ASSERT_EQ(fx_work_of(&f, 1, 1, ids, 8), GP_WORK_BASE);
		/* b's run lands first: a's copy lacks it. */
		answer_delta(&f, b, 0);
		answer_delta(&f, a, 0);
		ASSERT_EQ(a->clock, 1);
		ASSERT_UINT_EQ(a->updates_read, 1);
		ASSERT_EQ(f.params_sent, 2);
		if (!on) {
			/* Clock 2 waits for clock 1 and comes with a
			 * pull. */
			ASSERT_EQ(fx_work_of(&f, 1, 2, ids, 8), 0);
			answer_delta(&f, a, 1);
			ASSERT_EQ(f.params_sent, 3);
			ASSERT_EQ(fx_work_of(&f, 1, 2, ids, 8), GP_WORK_BASE);
			ASSERT_UINT_EQ(a->pull_read, 2);
			fx_teardown(&f);
			continue;
		}
		/* Clock 2 ahead on the copy as it is. */
		ASSERT_EQ(fx_work_of(&f, 1, 2, ids, 8), GP_WORK_BASE);
		ASSERT_UINT_EQ(a->pull_read, 0);
		/* The second update read: the pull, on its own, while a
		 * computes clock 2; its views start from it. */
		answer_delta(&f, a, 1);
		ASSERT_EQ(a->clock, 2);
		ASSERT_EQ(f.params_sent, 3);
		ASSERT_UINT_EQ(a->pull_read, 2);
		ASSERT_UINT_EQ(a->view.base, gp_params_updates(f.params));
		ASSERT_UINT_EQ(a->view.own, 0);
		ASSERT_UINT_EQ(a->pulled_version, gp_params_version(f.params));
		/* Nothing landed since: no pull after its next. */
		answer_delta(&f, a, 2);
		answer_delta(&f, a, 3);
		ASSERT_UINT_EQ(a->updates_read, 4);
		ASSERT_EQ(f.params_sent, 3);
		fx_teardown(&f);
	}
}

/* s = 0: the fast agent waits at the bound until the slow one finishes
 * its clock, then is served at once. */
static void test_bound(void)
{
	struct fixture f;
	struct gp_member *a, *b;
	struct gp_ssp_agent_info info;
	uint64_t ids[8];

	fx_setup(&f, 0);
	a = fx_join(&f, 0, GP_CAP_LOCAL_STEP);
	b = fx_join(&f, 1, GP_CAP_LOCAL_STEP);
	gp_work_request(&f.pool, a, 1);
	gp_work_request(&f.pool, b, 1);
	/* s = 0: no clock ahead. */
	ASSERT_EQ(a->next_work, 0);
	answer_clock(&f, a);
	ASSERT_OK(gp_ssp_get(f.ssp, 1, &info));
	ASSERT_EQ(info.clock, 1);
	ASSERT(info.waiting);
	ASSERT_EQ(fx_work_of(&f, 1, 1, ids, 8), 0);
	/* The slow one finishes: m rises and the parked one is served. */
	answer_clock(&f, b);
	ASSERT_EQ(fx_work_of(&f, 1, 1, ids, 8), GP_WORK_BASE);
	ASSERT_EQ(fx_work_of(&f, 2, 1, ids, 8), GP_WORK_BASE);
	ASSERT_EQ(a->clock, 1);
	fx_teardown(&f);
}

static void test_pause(void)
{
	struct fixture f;
	struct gp_member *a, *b;
	struct gp_ssp_agent_info info;
	uint64_t ids[8];
	unsigned pulls;

	fx_setup(&f, 0);
	a = fx_join(&f, 0, 0);
	b = fx_join(&f, 1, 0);
	gp_work_request(&f.pool, a, 1);
	gp_work_request(&f.pool, b, 1);
	/* Paused with work out: it still counts until that is resolved. */
	ASSERT(!gp_work_pause(&f.pool, b));
	ASSERT(!b->ssp_parked);
	answer_clock(&f, a);
	ASSERT_EQ(fx_work_of(&f, 1, 1, ids, 8), 0); /* held by b */
	answer_clock(&f, b);
	/* b's work is resolved: b is parked out of the bound, a goes on,
	 * and b gets nothing while paused. */
	ASSERT(b->ssp_parked);
	ASSERT_OK(gp_ssp_get(f.ssp, 2, &info));
	ASSERT(!info.live);
	ASSERT_EQ(fx_work_of(&f, 1, 1, ids, 8), GP_WORK_BASE);
	ASSERT_EQ(fx_work_of(&f, 2, 1, ids, 8), 0);
	answer_clock(&f, a);
	ASSERT_EQ(fx_work_of(&f, 1, 2, ids, 8), GP_WORK_BASE);
	/* Paused with nothing out: parked at once. */
	ASSERT(!gp_work_pause(&f.pool, b)); /* already */
	/* RESUME: back at the slowest live clock, with a full pull. */
	pulls = f.params_sent;
	gp_work_resume(&f.pool, b);
	ASSERT(!b->paused);
	ASSERT(!b->ssp_parked);
	ASSERT_OK(gp_ssp_get(f.ssp, 2, &info));
	ASSERT(info.live);
	ASSERT_EQ(b->clock, 2);
	ASSERT_EQ(fx_work_of(&f, 2, 2, ids, 8), GP_WORK_BASE);
	ASSERT_EQ(f.params_sent, pulls + 1);
	fx_teardown(&f);
}

static void test_pause_idle(void)
{
	struct fixture f;
	struct gp_member *a;

	fx_setup(&f, 0);
	a = fx_join(&f, 0, 0);
	ASSERT(gp_work_pause(&f.pool, a));
	ASSERT(a->ssp_parked);
	gp_work_request(&f.pool, a, 1);
	ASSERT_EQ(f.n_sent, 0);
	gp_work_resume(&f.pool, a);
	ASSERT_EQ(f.n_sent, GP_WORK_BASE);
	fx_teardown(&f);
}

/* Clock sizes: the slowest measured agent does clock_duration's worth,
 * the others in proportion; an announced speed is not measured. */
static void test_per_clock(void)
{
	struct fixture f;
	struct gp_member *a, *b, *c;
	struct gp_ssp_agent_info ia, ib;

	fx_setup(&f, 2);
	f.job.clock_duration_ms = 20;
	a = fx_join_speed(&f, 0, 0, 100);
	b = fx_join_speed(&f, 1, 0, 400);
	ASSERT_OK(gp_ssp_get(f.ssp, 1, &ia));
	ASSERT(!ia.speed_measured);
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ia), GP_WORK_BASE);
	/* Announced speeds count only while none is measured. */
	ASSERT_NEAR(gp_ssp_slowest_speed(f.ssp), 100, 1e-9);
	ASSERT_OK(gp_ssp_observe_speed(f.ssp, 2, 400));
	ASSERT_NEAR(gp_ssp_slowest_speed(f.ssp), 400, 1e-9);
	ASSERT_OK(gp_ssp_observe_speed(f.ssp, 1, 100));
	ASSERT_NEAR(gp_ssp_slowest_speed(f.ssp), 100, 1e-9);
	ASSERT_OK(gp_ssp_get(f.ssp, 1, &ia));
	ASSERT_OK(gp_ssp_get(f.ssp, 2, &ib));
	/* 100/s for 20 ms: 2; four times as fast: 8. */
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ia), 2);
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ib), 8);
	/* A slow agent that left no longer sizes the clocks. */
	gp_members_leave(&f.pool, a);
	ASSERT_OK(gp_ssp_get(f.ssp, 2, &ib));
	/* Alone: at least GP_WORK_SOLO_CLOCK_MS (400/s * 25 ms). */
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ib), 10);
	/* More than two: one minibatch of the slowest. */
	gp_ssp_revive(f.ssp, 1, NULL);
	c = fx_join_speed(&f, 2, 0, 200);
	ASSERT_OK(gp_ssp_observe_speed(f.ssp, 3, 200));
	ASSERT_OK(gp_ssp_get(f.ssp, 2, &ib));
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ib), 4);
	(void)c;
	(void)b;
	fx_teardown(&f);
}

/* Sets agent `id`'s measured link to bytes / wait_s, as one round trip
 * that moved `bytes` beyond no compute. */
static void set_link(struct fixture *f, uint64_t id, uint64_t bytes,
		     double wait_s)
{
	ASSERT_OK(gp_ssp_link_sent(f->ssp, id, 100, 1000000, 0));
	ASSERT_EQ(gp_ssp_link_answered(f->ssp, id, 100,
				       1000000 + (uint64_t)(wait_s * 1e6), 0, 0,
				       bytes), 1);
}

/* GP_CAP_OVERLAP on measured links: a member's runs are at least as long
 * as their update's transfer. Here an update is 36 bytes (9 f32
 * values) and a minibatch 16 bytes of indices on a 7,200 bytes/s link,
 * at 10,000 minibatches a second: a run covers its update's 5 ms from
 * ceil(5 / 2.32) = 3 minibatches, where the ramp (nothing applied yet)
 * gives GP_WORK_BASE, 2, as it does without overlap. */
static void test_overlap_cover(void)
{
	const uint32_t caps = GP_CAP_LOCAL_STEP | GP_CAP_INNER_ADAMW |
			      GP_CAP_OVERLAP | GP_CAP_LOCAL_DATA;
	struct gp_sched_config sc = {
		.n_samples = 4 * 1200, .batch_size = 4, .epochs = 1, .seed = 7,
	};

	for (int on = 1; on >= 0; on--) {
		struct fixture f;
		struct gp_member *a, *b;

		fx_setup(&f, 3);
		gp_sched_destroy(f.sched);
		ASSERT_OK(gp_sched_create(&sc, &f.sched));
		f.pool.sched = f.sched;
		f.pool.minibatches_total = 1200;
		f.job.optimizer = GP_OPT_ADAMW;
		f.job.inner_optimizer = GP_INNER_ADAMW;
		f.job.overlap = on;
		f.job.comm_share = 0.10;
		f.job.max_sync_interval_ms = 250;
		f.job.clock_duration_ms = 1;
		a = fx_join_speed(&f, 0, caps, 10000);
		b = fx_join_speed(&f, 1, caps, 10000);
		a->caps = b->caps = on ? caps : caps & ~(uint32_t)GP_CAP_OVERLAP;
		ASSERT_OK(gp_ssp_observe_speed(f.ssp, 1, 10000));
		ASSERT_OK(gp_ssp_observe_speed(f.ssp, 2, 10000));
		set_link(&f, 1, 72, 0.01);
		set_link(&f, 2, 72, 0.01);
		gp_work_request(&f.pool, a, 1);
		ASSERT(f.n_sent > 0);
		ASSERT_EQ(f.sent[0].group, (on ? 3 : GP_WORK_BASE));
		fx_teardown(&f);
	}
}

/* The clock the links ask for counts a pull's parameter changes at the
 * size they travel: q8 changes with GP_CAP_PARAM_DELTA, q4 ones with
 * GP_CAP_Q4_DELTA too (work.c param_bytes). 9 values: updates 2 x q8
 * (13 bytes each) up, momentum q8 (13) and the changes q8 (13) or q4 (9)
 * down: 52 or 48 bytes at 720 B/s, a tenth of the clock. */
static void test_link_clock_q4_delta(void)
{
	const uint32_t caps = GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
			      GP_CAP_MOMENTUM | GP_CAP_LOCAL_DATA |
			      GP_CAP_F16 | GP_CAP_Q8 | GP_CAP_PARAM_DELTA;
	struct fixture f;
	double s8, s4;

	fx_setup(&f, 0);
	f.job.comm_share = 0.10;
	f.job.max_sync_interval_ms = 20000;
	fx_join_speed(&f, 0, caps, 100);
	fx_join_speed(&f, 1, caps, 100);
	f.members[0].caps = caps;
	f.members[1].caps = caps;
	set_link(&f, 1, 72, 0.100);
	set_link(&f, 2, 72, 0.100);
	s8 = gp_work_sync_interval(&f.pool);
	ASSERT_NEAR(s8, 52 / 720.0 / 0.10, 1e-9);
	f.members[0].caps |= GP_CAP_Q4_DELTA;
	f.members[1].caps |= GP_CAP_Q4_DELTA;
	s4 = gp_work_sync_interval(&f.pool);
	ASSERT_NEAR(s4, 48 / 720.0 / 0.10, 1e-9);
	fx_teardown(&f);
}

/* Link-aware clocks: the slowest link sets a clock of equal time for
 * everyone (its wait is comm_share of it), and each agent gets what it
 * computes in that time beside its own wait; a long clock goes out as
 * groups of at most GP_MSG_GROUP_MAX. */
static void test_link_clock(void)
{
	const uint32_t caps = GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
			      GP_CAP_MOMENTUM | GP_CAP_LOCAL_DATA | GP_CAP_F16;
	struct gp_sched_config sc = {
		.n_samples = 4 * 1200, .batch_size = 4, .epochs = 1, .seed = 7,
	};
	struct gp_ssp_agent_info ia, ib;
	struct gp_member *a;
	struct fixture f;

	fx_setup(&f, 0);
	f.job.comm_share = 0.10;
	f.job.max_sync_interval_ms = 20000;
	a = fx_join_speed(&f, 0, caps, 100);
	fx_join_speed(&f, 1, caps, 100);
	/* As agreed with agents that hold the data set. */
	f.members[0].caps = caps;
	f.members[1].caps = caps;
	ASSERT_OK(gp_ssp_observe_speed(f.ssp, 1, 100));
	ASSERT_OK(gp_ssp_observe_speed(f.ssp, 2, 100));
	/* No link measured: clocks from compute only (100/s x 20 ms). */
	ASSERT_OK(gp_ssp_get(f.ssp, 1, &ia));
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ia), 2);
	ASSERT_NEAR(gp_work_sync_interval(&f.pool), 0, 0);
	/* A clock's fixed bytes: 9 f16 values x 2 sums up, x 2 (parameters
	 * and momentum) down = 72; a minibatch's 4 indices, 16. Agent 1
	 * waits 10 ms for them, agent 2 100 ms: a clock of 1 s. */
	set_link(&f, 1, 72, 0.010);
	set_link(&f, 2, 72, 0.100);
	ASSERT_NEAR(gp_work_sync_interval(&f.pool), 1.0, 1e-9);
	ASSERT_OK(gp_ssp_get(f.ssp, 1, &ia));
	ASSERT_OK(gp_ssp_get(f.ssp, 2, &ib));
	/* Local runs grow with the training done: at most what the pool
	 * applied so far times the agent's share of the work (81 of 81 +
	 * 27.9), GP_WORK_BASE at least. None applied yet: runs of 2, 29 of
	 * them with a pull before each (1 s / 34.4 ms), and agent 2 fits 6
	 * (1 s / 164.4 ms); beside 1 + 6 waits, (1 - 0.07) s / 24.4 ms =
	 * 38.1 runs, 76 minibatches. */
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ia), 76);
	/* 60 applied: runs of 44 (60 x 0.744), one fits with its pull, and
	 * beside 2 waits (1 - 0.02) s / 537.8 ms = 1.82 runs: 80. */
	f.pool.applied_run = 60;
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ia), 80);
	f.pool.applied_run = 100000;
	/* 0.99 s / (10 ms + 16 B at 7200 B/s) = 81, more than
	 * GP_WORK_LINK_STEPS with another agent to merge with: runs of 48.
	 * With a pull (10 ms) before each, one run fits (1 s / 0.596 s),
	 * and so does one of agent 2's: its clock holds the runs that fit
	 * beside 1 + 1 waits, (1 - 0.02) s / 586.7 ms = 1.67, 80. 0.9 s /
	 * (10 ms + 16 B at 720 B/s) = 27.9. */
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ia), 80);
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ib), 28);
	/* max_sync_interval caps the computing beyond the slowest wait:
	 * 0.1 + 0.3 s; 0.39 s / 12.2 ms = 31.9, 0.3 s / 32.2 ms = 9.3. */
	f.job.max_sync_interval_ms = 300;
	ASSERT_NEAR(gp_work_sync_interval(&f.pool), 0.4, 1e-9);
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ia), 32);
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ib), 9);
	/* comm_share 0 turns it off; a link that asks for less than the
	 * compute clock changes nothing either. */
	f.job.comm_share = 0;
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ia), 2);
	f.job.comm_share = 0.9;
	set_link(&f, 2, 72, 0.0001);
	set_link(&f, 2, 72, 0.0001);
	set_link(&f, 2, 72, 0.0001);
	set_link(&f, 1, 72, 0.0001);
	set_link(&f, 1, 72, 0.0001);
	set_link(&f, 1, 72, 0.0001);
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ia), 2);

	fx_teardown(&f);

	/* Long clocks go out in groups: an agent alone (no step cap), 2000/s
	 * for 1 s at 7200 B/s (comm_share 0.5 %: its 36 B update waits 5 ms). */
	fx_setup(&f, 0);
	f.job.comm_share = 0.005;
	f.job.max_sync_interval_ms = 20000;
	gp_sched_destroy(f.sched);
	ASSERT_OK(gp_sched_create(&sc, &f.sched));
	f.pool.sched = f.sched;
	f.pool.minibatches_total = 1200;
	a = fx_join_speed(&f, 0, caps, 2000);
	f.members[0].caps = caps;
	ASSERT_OK(gp_ssp_observe_speed(f.ssp, 1, 2000));
	set_link(&f, 1, 72, 0.010);
	f.pool.applied_run = 100000;
	ASSERT_OK(gp_ssp_get(f.ssp, 1, &ia));
	{
		uint32_t k = gp_work_per_clock(&f.pool, &ia);

		/* 0.995 s / (0.5 ms + 16 B at 7200 B/s) = 365.5 */
		ASSERT_NEAR(gp_work_sync_interval(&f.pool), 1.0, 1e-9);
		ASSERT_EQ(k, 366);
		ASSERT(k > GP_MSG_GROUP_MAX && k < FX_LOG);
		gp_work_request(&f.pool, a, 1);
		ASSERT_EQ(f.n_sent, k);
		for (size_t i = 0; i < f.n_sent; i++)
			ASSERT_EQ(f.sent[i].group,
				  i == 0 ? GP_MSG_GROUP_MAX :
				  i == GP_MSG_GROUP_MAX ? k - GP_MSG_GROUP_MAX :
				  0);
	}
	fx_teardown(&f);
}

/* With clocks sized for the links, a copy that lacks others' work is
 * reused without a pull only while that work is under a quarter of the
 * agent's clock (or at most GP_WORK_BASE minibatches): 8 of another
 * agent's minibatches against a clock of 20 call for a pull before the
 * next clock goes out. (Links this fast leave the clocks compute-sized.) */
/* answer_clock() for a schedule of 1200 minibatches an epoch, with
 * gradients that change every shard. */
static void answer_clock_1200(struct fixture *f, struct gp_member *m)
{
	static const float g[FX_N] = { 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f,
				       0.1f, 0.1f, 0.1f };
	uint64_t ids[64];
	int64_t clock = m->clock;
	size_t n = fx_work_of(f, m->agent_id, clock, ids, 64);
	struct fx_update x;

	for (size_t i = 0; i < n; i++) {
		struct gp_msg_update *u = fx_plain(&x, ids[i], clock, g);

		u->epoch = (uint32_t)(ids[i] / 1200);
		u->minibatch = ids[i] % 1200;
		ASSERT_OK(gp_apply_update(&f->pool, m, u, gp_now_ms()));
	}
}

static void test_copy_reuse(void)
{
	struct gp_sched_config sc = {
		.n_samples = 4 * 1200, .batch_size = 4, .epochs = 1, .seed = 7,
	};
	struct fixture f;
	struct gp_member *a, *b;
	unsigned pulls;

	fx_setup(&f, 3);
	gp_sched_destroy(f.sched);
	ASSERT_OK(gp_sched_create(&sc, &f.sched));
	f.pool.sched = f.sched;
	f.pool.minibatches_total = 1200;
	a = fx_join(&f, 0, GP_CAP_LOCAL_STEP);
	b = fx_join(&f, 1, GP_CAP_LOCAL_STEP);
	/* 20 ms clocks: 400/s does 8, 1000/s 20. */
	ASSERT_OK(gp_ssp_observe_speed(f.ssp, 1, 1000));
	ASSERT_OK(gp_ssp_observe_speed(f.ssp, 2, 400));
	set_link(&f, 1, 72, 0.0001);
	set_link(&f, 2, 72, 0.0001);
	ASSERT(gp_work_sync_interval(&f.pool) > 0);
	gp_work_request(&f.pool, a, 1);
	gp_work_request(&f.pool, b, 1);
	ASSERT_EQ(a->clock_work, 20);
	ASSERT_EQ(a->next_work, 20);
	ASSERT_EQ(b->clock_work, 8);
	ASSERT_EQ(f.params_sent, 2);
	answer_clock_1200(&f, b);
	/* A's own clock 0 answered: its work ahead (clock 1) goes on, but
	 * its copy lacks b's 8: clock 2 is not handed out ahead on it. */
	answer_clock_1200(&f, a);
	ASSERT_EQ(a->clock, 1);
	ASSERT_EQ(a->clock_open, 20);
	ASSERT_EQ(a->next_work, 0);
	pulls = f.params_sent;
	/* Clock 1 answered: clock 2 comes with a pull. */
	answer_clock_1200(&f, a);
	ASSERT_EQ(a->clock, 2);
	ASSERT_EQ(f.params_sent, pulls + 1);
	fx_teardown(&f);
}

static void test_members(void)
{
	struct fixture f;
	struct gp_member *a, *extra = &f.members[3];
	struct gp_msg_join j = { .caps = GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
				 GP_CAP_MOMENTUM | GP_CAP_LOCAL_DATA |
				 GP_CAP_F16, .data_fingerprint = 0xf00d };
	uint32_t live;
	int64_t clock;

	fx_setup(&f, 1);
	a = fx_join(&f, 0, 0);
	fx_join(&f, 1, 0);
	fx_join(&f, 2, 0);
	ASSERT_EQ(f.pool.n_members, 3);
	ASSERT(gp_members_find(&f.pool, 2) == &f.members[1]);
	ASSERT(gp_members_find(&f.pool, 9) == NULL);
	/* max_agents = 3: a fourth key is one too many... */
	memset(extra, 0, sizeof(*extra));
	memset(extra->key, 9, sizeof(extra->key));
	gp_members_add(&f.pool, extra);
	ASSERT(gp_members_full(&f.pool, extra, &live));
	ASSERT_EQ(live, 3);
	/* ...but a member's own new connection is not. */
	memcpy(extra->key, a->key, sizeof(extra->key));
	ASSERT(!gp_members_full(&f.pool, extra, NULL));
	/* It replaces the old connection, whose work goes back. */
	gp_work_request(&f.pool, a, 1);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 1), GP_WORK_BASE);
	ASSERT_OK(gp_members_join(&f.pool, extra, 1, &j, &clock));
	ASSERT_EQ(f.closes, 1);
	ASSERT(!a->joined);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 1), 0);
	ASSERT(gp_members_find(&f.pool, 1) == extra);
	/* Every capability offered, and the job allows them all. */
	ASSERT_UINT_EQ(extra->caps, j.caps);
	/* Weight decay: no sums (the step is not linear), so no momentum. */
	f.job.weight_decay = 0.01;
	ASSERT_OK(gp_members_join(&f.pool, extra, 1, &j, &clock));
	ASSERT_UINT_EQ(extra->caps, GP_CAP_LOCAL_STEP | GP_CAP_LOCAL_DATA |
					    GP_CAP_F16);
	/* Another data set: pixels, not indices; no local step: no sums. */
	f.job.weight_decay = 0;
	j.data_fingerprint = 1;
	j.caps &= ~(uint32_t)GP_CAP_LOCAL_STEP;
	ASSERT_OK(gp_members_join(&f.pool, extra, 1, &j, &clock));
	ASSERT_UINT_EQ(extra->caps, GP_CAP_F16);
	/* Leaving: work back in the queue, out of the SSP bound. */
	extra->wants_work = true;
	gp_work_serve(&f.pool, extra);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 1), GP_WORK_BASE);
	ASSERT_EQ(gp_members_leave(&f.pool, extra), GP_WORK_BASE);
	ASSERT_EQ(gp_ssp_live_count(f.ssp), 2);
	gp_members_remove(&f.pool, extra);
	gp_members_remove(&f.pool, a);
	ASSERT_EQ(f.pool.n_members, 2);
	ASSERT_EQ(gp_members_leave(&f.pool, a), 0); /* not joined */
	fx_teardown(&f);
}

/* The pull budget: parameter sends still queued on their connections
 * hold it; a pull that does not fit waits, oldest first, and gets the
 * room when a send is written or its connection goes; a newcomer does not
 * take the room of those that waited. */
static void test_pull_budget(void)
{
	struct fixture f;
	struct gp_member *a, *b, *c, *d, *e;
	const uint64_t each = 3u << 19; /* 1.5 MiB */

	fx_setup(&f, 4);
	f.job.pull_budget_mib = 1;
	f.job.max_agents = 5;
	f.pull_queued = each;
	a = fx_join(&f, 0, 0);
	b = fx_join(&f, 1, 0);
	c = fx_join(&f, 2, 0);
	/* One always goes out, however large. */
	gp_work_request(&f.pool, a, 1);
	ASSERT_EQ(f.params_sent, 1);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 1), GP_WORK_BASE);
	ASSERT_UINT_EQ(f.pool.pull_bytes, each);
	/* b and c wait, holding no work, in the order they asked. */
	gp_work_request(&f.pool, b, 1);
	gp_work_request(&f.pool, c, 1);
	ASSERT_EQ(f.params_sent, 1);
	ASSERT_EQ(f.n_sent, GP_WORK_BASE);
	ASSERT(b->pull_waiting && c->pull_waiting);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 2), 0);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 3), 0);
	/* Asking again does not queue twice; a serve_all changes nothing. */
	gp_work_serve_all(&f.pool);
	ASSERT_EQ(f.pool.pull_wait_n, 2);
	ASSERT_EQ(f.params_sent, 1);
	/* a's send is written: the room is b's, then c waits again (b's
	 * send fills the budget). */
	gp_work_pull_written(&f.pool, a);
	ASSERT_UINT_EQ(f.pool.pull_bytes, 0);
	ASSERT_UINT_EQ(a->pull_bytes, 0);
	gp_work_pull_serve(&f.pool);
	ASSERT_EQ(f.params_sent, 2);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 2), GP_WORK_BASE);
	ASSERT(!b->pull_waiting && c->pull_waiting);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 3), 0);
	ASSERT_UINT_EQ(f.pool.pull_bytes, each);
	ASSERT_EQ(f.pool.pull_wait_n, 1);
	/* A budget with room for one more beside b's: d, who asks now,
	 * would fit, but c waited first. */
	f.job.pull_budget_mib = 2;
	d = fx_join(&f, 3, 0);
	gp_work_request(&f.pool, d, 1);
	ASSERT(d->pull_waiting);
	ASSERT_EQ(f.params_sent, 2);
	ASSERT_EQ(f.pool.pull_wait_n, 2);
	gp_work_pull_serve(&f.pool);
	ASSERT_EQ(f.params_sent, 3);
	ASSERT(!c->pull_waiting && d->pull_waiting);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 3), GP_WORK_BASE);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 4), 0);
	/* b's connection goes: its bytes leave the budget with it and d,
	 * the oldest waiting, pulls; e asks after and waits. */
	e = fx_join(&f, 4, 0);
	gp_members_leave(&f.pool, b);
	gp_members_remove(&f.pool, b);
	ASSERT_UINT_EQ(f.pool.pull_bytes, each);
	gp_work_request(&f.pool, e, 1);
	ASSERT(e->pull_waiting);
	gp_work_pull_serve(&f.pool);
	ASSERT_EQ(f.params_sent, 4);
	ASSERT(!d->pull_waiting && e->pull_waiting);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 4), GP_WORK_BASE);
	/* A member served otherwise (it left the queue) is skipped, and a
	 * written send the budget no longer counts is not taken twice. */
	e->pull_waiting = false;
	gp_work_pull_written(&f.pool, c);
	gp_work_pull_written(&f.pool, c);
	ASSERT_UINT_EQ(f.pool.pull_bytes, each);
	gp_work_pull_serve(&f.pool);
	ASSERT_EQ(f.pool.pull_wait_n, 0);
	ASSERT_EQ(f.params_sent, 4);
	/* The job's end empties the queue and its counters. */
	e->pull_waiting = true;
	f.pool.pulls_waited = 3;
	gp_work_finish(&f.pool);
	ASSERT(!e->pull_waiting);
	ASSERT_EQ(f.pool.pulls_waited, 0);
	ASSERT_UINT_EQ(f.pool.pull_bytes, each); /* d's send still queued */
	fx_teardown(&f);
}

/* A pull picked for verification that must wait for the budget is not
 * counted as picked, and sends every shard when it goes. */
static void test_pull_budget_verify(void)
{
	struct fixture f;
	struct gp_verify_env env = {0};
	struct gp_verify_stats st;
	struct gp_verify *v;
	struct gp_member *a, *b;

	fx_setup(&f, 4);
	f.job.pull_budget_mib = 1;
	f.job.verify_rate = 1;
	f.pull_queued = 3u << 19;
	ASSERT_OK(gp_verify_create(&f.pool, &env, 1, &v));
	f.pool.verify = v;
	a = fx_join(&f, 0, 0);
	b = fx_join(&f, 1, 0);
	gp_work_request(&f.pool, a, 1);
	gp_verify_get_stats(v, &st);
	ASSERT_UINT_EQ(st.picked, 1);
	gp_work_request(&f.pool, b, 1);
	ASSERT(b->pull_waiting);
	gp_verify_get_stats(v, &st);
	ASSERT_UINT_EQ(st.picked, 1);
	gp_work_pull_written(&f.pool, a);
	gp_work_pull_serve(&f.pool);
	ASSERT(!b->pull_waiting);
	ASSERT_EQ(f.params_sent, 2);
	gp_verify_get_stats(v, &st);
	ASSERT_UINT_EQ(st.picked, 2);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 2), GP_WORK_BASE);
	/* The members hold the copies their updates are checked against. */
	gp_verify_member_finish(&f.pool, a);
	gp_verify_member_finish(&f.pool, b);
	fx_teardown(&f);
	f.pool.verify = NULL;
	gp_verify_destroy(v);
}

/* Above GP_WORK_MEMO_MIN live agents the links' clock is a figure at most
 * GP_WORK_MEMO_US old: a slower link shows after that, not at once;
 * with fewer agents at once. */
static void test_memo(void)
{
	const uint32_t caps = GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
			      GP_CAP_MOMENTUM | GP_CAP_LOCAL_DATA | GP_CAP_F16;
	const size_t n = GP_WORK_MEMO_MIN + 1;
	struct fixture f;
	double s0, s1;

	fx_setup(&f, 1);
	f.job.comm_share = 0.10;
	f.job.max_agents = FX_MEMBERS;
	for (size_t i = 0; i < n; i++) {
		fx_join(&f, i, caps);
		set_link(&f, i + 1, 72, 0.001);
	}
	s0 = gp_work_sync_interval(&f.pool);
	ASSERT(s0 > 0);
	/* One link ten times slower (its measurement is smoothed: slower,
	 * not ten times): the memo still holds. Its time is set, not waited
	 * for (a loaded machine may stall between two calls): made an hour
	 * from now, it is fresh; made at 0, it is old. */
	set_link(&f, 1, 72, 0.01);
	f.pool.memo.at_us = gp_mono_us() + 3600000000ull;
	ASSERT(gp_work_sync_interval(&f.pool) == s0);
	f.pool.memo.at_us = 0;
	s1 = gp_work_sync_interval(&f.pool);
	ASSERT(s1 > s0);
	/* One fewer live agent, at GP_WORK_MEMO_MIN: no memo, a slower link
	 * shows at once. */
	ASSERT_EQ(gp_members_leave(&f.pool, &f.members[n - 1]), 0);
	gp_members_remove(&f.pool, &f.members[n - 1]);
	s0 = gp_work_sync_interval(&f.pool);
	set_link(&f, 1, 72, 0.1);
	ASSERT(gp_work_sync_interval(&f.pool) > s0);
	fx_teardown(&f);
}

/* One pacing window of gp_work_pace with its longest stall; returns the
 * floor after it. */
static uint32_t pace_window(struct fixture *f, uint64_t *t, uint64_t stall)
{
	gp_work_pace(&f->pool, stall, *t + GP_WORK_PACE_WINDOW_US / 2);
	*t += GP_WORK_PACE_WINDOW_US;
	gp_work_pace(&f->pool, 0, *t);
	return f->pool.group_floor;
}

/* Above GP_WORK_MEMO_MIN live agents serve's loop stalls pace the pool:
 * a window with a stall past GP_WORK_STALL_HIGH_US raises the fewest
 * minibatches a clock holds, up to GP_WORK_PACE_MAX; quiet windows
 * lower it; a stall between the two thresholds holds it; a pool of at
 * most GP_WORK_MEMO_MIN is never paced. */
static void test_pace(void)
{
	const uint32_t caps = GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
			      GP_CAP_MOMENTUM | GP_CAP_LOCAL_DATA | GP_CAP_F16;
	const size_t n = GP_WORK_MEMO_MIN + 1;
	const uint64_t high = GP_WORK_STALL_HIGH_US + 1;
	const uint64_t mid = (GP_WORK_STALL_HIGH_US + GP_WORK_STALL_LOW_US) / 2;
	struct gp_ssp_agent_info ia, ib;
	struct fixture f;
	uint64_t t = 1000000;
	uint32_t fl, prev;

	fx_setup(&f, 3);
	f.job.max_agents = FX_MEMBERS;
	for (size_t i = 0; i < n; i++) {
		fx_join_speed(&f, i, caps, 100);
		ASSERT_OK(gp_ssp_observe_speed(f.ssp, i + 1, 100));
	}
	ASSERT_OK(gp_ssp_get(f.ssp, 1, &ia));
	/* More than two agents: one minibatch of the slowest a clock. */
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ia), 1);
	/* The first call opens a window; stalls inside it count only at
	 * its end. */
	gp_work_pace(&f.pool, 10 * high, t);
	ASSERT_EQ(f.pool.group_floor, 0);
	ASSERT_EQ(pace_window(&f, &t, 0), GP_WORK_PACE_START);
	ASSERT_EQ(pace_window(&f, &t, GP_WORK_STALL_HIGH_US), GP_WORK_PACE_START);
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ia), GP_WORK_PACE_START);
	/* The first clock of an agent whose speed is not measured too. */
	ASSERT_OK(gp_ssp_get(f.ssp, 2, &ib));
	ib.speed_measured = false;
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ib), GP_WORK_PACE_START);
	/* A quarter more, rounded up. */
	ASSERT_EQ(pace_window(&f, &t, high), 5);
	ASSERT_EQ(pace_window(&f, &t, high), 7);
	for (prev = 7, fl = 0; prev < GP_WORK_PACE_MAX; prev = fl) {
		fl = pace_window(&f, &t, high);
		ASSERT(fl > prev);
	}
	ASSERT_EQ(fl, GP_WORK_PACE_MAX);
	ASSERT_EQ(pace_window(&f, &t, high), GP_WORK_PACE_MAX);
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ia), GP_WORK_PACE_MAX);
	/* Quiet windows: an eighth less after GP_WORK_PACE_QUIET in a row;
	 * a stall between the thresholds starts the count again. */
	for (int i = 0; i < GP_WORK_PACE_QUIET - 1; i++)
		ASSERT_EQ(pace_window(&f, &t, 0), GP_WORK_PACE_MAX);
	ASSERT_EQ(pace_window(&f, &t, mid), GP_WORK_PACE_MAX);
	for (int i = 0; i < GP_WORK_PACE_QUIET - 1; i++)
		ASSERT_EQ(pace_window(&f, &t, 0), GP_WORK_PACE_MAX);
	prev = GP_WORK_PACE_MAX - (GP_WORK_PACE_MAX + 7) / 8;
	ASSERT_EQ(pace_window(&f, &t, 0), prev);
	/* Down to none, never below GP_WORK_PACE_START. */
	for (; prev > 0; prev = fl) {
		fl = pace_window(&f, &t, 0);
		ASSERT(fl <= prev);
		ASSERT(fl == 0 || fl >= GP_WORK_PACE_START);
	}
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ia), 1);
	/* With no floor, a newcomer's first clock holds what the pool's
	 * updates hold lately, at most GP_WORK_PACE_MAX and what its
	 * announced speed (100 a second) computes in GP_WORK_FIRST_CLOCK_S,
	 * at least GP_WORK_BASE. */
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ib), GP_WORK_BASE);
	f.pool.group_mean = 9.6;
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ib), 10);
	f.pool.group_mean = 30;
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ib), GP_WORK_PACE_MAX);
	ib.speed = 6;
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ib), 3);
	ib.speed = 100;
	/* The mean follows the applied updates' sizes. */
	f.pool.group_mean = 0;
	gp_work_answered(&f.pool, &f.members[0], &(struct gp_msg_update){
				 .clock = 999 }, 8);
	ASSERT_NEAR(f.pool.group_mean, 8, 1e-12);
	gp_work_answered(&f.pool, &f.members[0], &(struct gp_msg_update){
				 .clock = 999 }, 8 + GP_WORK_GROUP_MEAN_N);
	ASSERT_NEAR(f.pool.group_mean, 9, 1e-12);
	/* A job's run_steps under GP_WORK_PACE_MAX caps the floor as it caps
	 * the runs. */
	f.job.run_steps = 8;
	for (int i = 0; i < 20; i++)
		fl = pace_window(&f, &t, high);
	ASSERT_EQ(fl, 8);
	/* At GP_WORK_MEMO_MIN live agents the agents size the clocks. */
	ASSERT_EQ(gp_members_leave(&f.pool, &f.members[n - 1]), 0);
	gp_members_remove(&f.pool, &f.members[n - 1]);
	ASSERT_EQ(pace_window(&f, &t, high), 0);
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ia), 1);
	/* And a newcomer's first clock is the short probe again. */
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ib), GP_WORK_BASE);
	fx_teardown(&f);
}

/* A pool (staleness 1) of n members that asked for work while none could
 * be sent; now it can. */
static void waiting_members(struct fixture *f, size_t n)
{
	fx_setup(f, 1);
	f->job.max_agents = FX_MEMBERS;
	f->established = false;
	for (size_t i = 0; i < n; i++)
		gp_work_request(&f->pool, fx_join(f, i, 0), 1);
	ASSERT_EQ(f->n_sent, 0);
	f->established = true;
}

/* gp_work_serve_all's pass over members that want work visits at most
 * serve_scan of them and goes on where it stopped, also when the member
 * it would have started with left. */
static void test_serve_scan(void)
{
	struct fixture f;

	waiting_members(&f, 5);
	f.pool.serve_scan = 3;
	/* Listed newest first: 4, 3, 2 get their clocks. */
	gp_work_serve_all(&f.pool);
	ASSERT_EQ(f.n_sent, 3 * GP_WORK_BASE);
	for (size_t i = 2; i < 5; i++)
		ASSERT_EQ(f.members[i].clock_open, GP_WORK_BASE);
	ASSERT(f.pool.cursors[GP_WALK_SERVE] == &f.members[1]);
	/* 1 leaves before the next pass would start with it: it starts
	 * with 0, the rest have their work. */
	ASSERT_EQ(gp_members_leave(&f.pool, &f.members[1]), 0);
	gp_members_remove(&f.pool, &f.members[1]);
	ASSERT(f.pool.cursors[GP_WALK_SERVE] == &f.members[0]);
	gp_work_serve_all(&f.pool);
	ASSERT_EQ(f.n_sent, 4 * GP_WORK_BASE);
	ASSERT_EQ(f.members[0].clock_open, GP_WORK_BASE);
	ASSERT_EQ(f.members[1].clock_open, 0);
	fx_teardown(&f);
}

/* Connections that wait too long: no JOIN, no work request, no update. */
static void test_overdue(void)
{
	struct fixture f;
	struct gp_member *a, fresh = { .connected_ms = 1000 };
	int64_t since, t;

	fx_setup(&f, 1);
	f.job.work_timeout_ms = 500;
	ASSERT_EQ(gp_members_overdue(&f.pool, &fresh, 1500, &since),
		  GP_OVERDUE_NONE);
	ASSERT_EQ(gp_members_overdue(&f.pool, &fresh, 1501, &since),
		  GP_OVERDUE_JOIN);
	ASSERT_EQ(since, 501);
	a = fx_join(&f, 0, 0);
	t = a->joined_ms;
	ASSERT_EQ(gp_members_overdue(&f.pool, a, t + 501, &since),
		  GP_OVERDUE_REQUEST);
	/* Paused members may keep quiet. */
	a->paused = true;
	ASSERT_EQ(gp_members_overdue(&f.pool, a, t + 501, &since),
		  GP_OVERDUE_NONE);
	a->paused = false;
	gp_work_request(&f.pool, a, 1);
	t = a->work_since_ms;
	ASSERT_EQ(gp_members_overdue(&f.pool, a, t + 500, &since),
		  GP_OVERDUE_NONE);
	ASSERT_EQ(gp_members_overdue(&f.pool, a, t + 501, &since),
		  GP_OVERDUE_UPDATE);
	fx_teardown(&f);
}

/* Applies m's minibatches among f->sent[from..to) one by one (schedule
 * of 1200 an epoch, gradients that change every shard). */
static void answer_sent(struct fixture *f, struct gp_member *m, size_t from,
			size_t to)
{
	static const float g[FX_N] = { 0.1f, 0.1f, 0.1f, 0.1f, 0.1f, 0.1f,
				       0.1f, 0.1f, 0.1f };
	struct fx_update x;

	for (size_t i = from; i < to; i++) {
		const struct fx_sent *t = &f->sent[i];
		struct gp_msg_update *u;

		if (t->agent != m->agent_id)
			continue;
		u = fx_plain(&x, t->id, t->clock, g);
		u->epoch = (uint32_t)(t->id / 1200);
		u->minibatch = t->id % 1200;
		ASSERT_OK(gp_apply_update(&f->pool, m, u, gp_now_ms()));
	}
}

/* The index in f->sent of the first minibatch of m's sent after `from`,
 * or f->n_sent. */
static size_t next_of(const struct fixture *f, const struct gp_member *m,
		      size_t from)
{
	while (from < f->n_sent && f->sent[from].agent != m->agent_id)
		from++;
	return from;
}

/* A fast agent next to a slow link: its clock lasts as long as the slow
 * agent's (no parking at SSP's bound), and holds what it computes in that
 * time as runs of GP_WORK_LINK_STEPS, the next run handed out while it
 * computes the one before as long as its copy lacks little of the
 * others' work, else after its work is resolved, with a pull. The clock
 * advances only when all its runs are resolved. */
/* test_link_runs' pool: a (agent 1, 200 minibatches/s, a 1 ms link)
 * and b (agent 2, 1000/s, a 1 s link), both with local steps and groups,
 * the schedule 1,200 minibatches of one epoch. */
static void link_runs_setup(struct fixture *f, struct gp_member **a,
			    struct gp_member **b)
{
	const uint32_t caps = GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
			      GP_CAP_MOMENTUM | GP_CAP_LOCAL_DATA | GP_CAP_F16;
	struct gp_sched_config sc = {
		.n_samples = 4 * 1200, .batch_size = 4, .epochs = 1, .seed = 7,
	};

	fx_setup(f, 3);
	gp_sched_destroy(f->sched);
	ASSERT_OK(gp_sched_create(&sc, &f->sched));
	f->pool.sched = f->sched;
	f->pool.minibatches_total = 1200;
	f->pool.applied_run = 100000;
	f->job.comm_share = 0.10;
	f->job.max_sync_interval_ms = 250;
	*a = fx_join_speed(f, 0, caps, 200);
	*b = fx_join_speed(f, 1, caps, 1000);
	(*a)->caps = caps;
	(*b)->caps = caps;
	ASSERT_OK(gp_ssp_observe_speed(f->ssp, 1, 200));
	ASSERT_OK(gp_ssp_observe_speed(f->ssp, 2, 1000));
	/* a waits 1 ms for its 72 fixed bytes, b 1 s: clocks of 1.25 s. */
	set_link(f, 1, 72, 0.001);
	set_link(f, 2, 72, 1.0);
}

static void test_link_runs(void)
{
	const uint32_t L = GP_WORK_LINK_STEPS;
	struct gp_ssp_agent_info ia, ib;
	struct gp_member *a, *b;
	struct fixture f;
	size_t run[6], bclock;
	unsigned pulls;
	uint32_t k;

	link_runs_setup(&f, &a, &b);
	ASSERT_NEAR(gp_work_sync_interval(&f.pool), 1.25, 1e-9);
	ASSERT_OK(gp_ssp_get(f.ssp, 1, &ia));
	ASSERT_OK(gp_ssp_get(f.ssp, 2, &ib));
	/* a: 4 runs with a pull before each fit in 1.25 s (251.7 ms each),
	 * but b lands one run a clock: beside 2 waits, (1.25 - 0.002) s /
	 * 5.22 ms = 239.0 (beside one, 239.2). b computes 1.1 beside its
	 * wait: its compute-sized clock, 20 (4 x 1000 / 200), is more. */
	k = gp_work_per_clock(&f.pool, &ia);
	ASSERT_EQ(k, 239);
	ASSERT_EQ(gp_work_per_clock(&f.pool, &ib), 20);

	/* The first run with a pull, the second at once (the copy is
	 * current): two runs open, never more. */
	gp_work_request(&f.pool, a, 1);
	ASSERT_EQ(f.params_sent, 1);
	ASSERT_EQ(f.n_sent, 2 * L);
	ASSERT_EQ(f.sent[0].group, L);
	ASSERT_EQ(f.sent[L].group, L);
	ASSERT_EQ(a->clock_target, k);
	ASSERT_EQ(a->clock_open, 2 * L);
	ASSERT_EQ(a->next_work, 0);
	run[0] = 0;
	run[1] = L;
	gp_work_serve(&f.pool, a);
	ASSERT_EQ(f.n_sent, 2 * L);
	bclock = f.n_sent;
	gp_work_request(&f.pool, b, 1);
	ASSERT_EQ(f.params_sent, 2);
	ASSERT_EQ(f.n_sent, bclock + 40); /* and its clock 1, ahead */

	/* Run 1 answered: run 3 follows, still without a pull. */
	run[2] = f.n_sent;
	answer_sent(&f, a, run[0], run[1]);
	ASSERT_EQ(a->clock, 0);
	ASSERT_EQ(f.n_sent, run[2] + L);
	ASSERT_EQ(f.sent[run[2]].clock, 0);
	ASSERT_EQ(f.sent[run[2]].group, L);
	ASSERT_EQ(f.params_sent, 2);
	ASSERT_EQ(a->run_work, 3 * L);

	/* b's clock lands: a's copy lacks 20 of its minibatches, over a
	 * quarter of a run. Run 2 answered, run 4 waits; run 3 answered, a
	 * holds no work: run 4 goes out with a pull, at the same clock. */
	answer_sent(&f, b, bclock, bclock + 20);
	ASSERT_EQ(b->clock, 1);
	pulls = f.params_sent;
	run[3] = f.n_sent;
	answer_sent(&f, a, run[1], run[1] + L);
	ASSERT_EQ(next_of(&f, a, run[3]), f.n_sent);
	ASSERT_EQ(a->clock_open, L);
	answer_sent(&f, a, run[2], run[2] + L);
	ASSERT_EQ(a->clock, 0);
	ASSERT_EQ(f.params_sent, pulls + 1);
	run[3] = next_of(&f, a, run[3]);
	ASSERT(run[3] < f.n_sent);
	ASSERT_EQ(f.sent[run[3]].clock, 0);
	ASSERT_EQ(f.sent[run[3]].group, L);
	/* The pull started a new local run: the staleness scale counts it,
	 * not the clock's 192. */
	ASSERT_EQ(a->clock_work, 3 * L + L + (k - 4 * L > 0 ? k - 4 * L : 0));
	ASSERT_EQ(a->run_work, L + (k - 4 * L));
	ASSERT_OK(gp_ssp_get(f.ssp, 1, &ia));
	ASSERT_EQ(ia.clock, 0);

	/* Runs 4 and 5 (47) answered: clock 0 is done, and clock 1 begins
	 * (its first run was handed out ahead once all of clock 0 was).
	 * (The answers came at once, so the links now measure fast and the
	 * clocks are compute-sized again.) */
	run[4] = next_of(&f, a, run[3] + L);
	ASSERT_EQ(f.sent[run[4]].group, k - 4 * L);
	answer_sent(&f, a, run[3], run[4] + (k - 4 * L));
	ASSERT_EQ(a->clock, 1);
	ASSERT_OK(gp_ssp_get(f.ssp, 1, &ia));
	ASSERT_EQ(ia.clock, 1);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 1),
		  a->clock_open + a->next_open);
	ASSERT(a->clock_open > 0 && a->clock_open + a->next_open <= 2 * L);
	fx_teardown(&f);
}

/* PAUSE stops new work, the rest of a clock of runs included: a paused
 * member answering a run gets no next run (the code before handed it out
 * from clock_resolved, after a finishing agent's PAUSE: CI, 2026-12-07,
 * 12 minibatches put back when it closed). Its clock then ends with what
 * it answered, and it is parked. */
static void test_pause_runs(void)
{
	const uint32_t L = GP_WORK_LINK_STEPS;
	struct gp_ssp_agent_info ia;
	struct gp_member *a, *b;
	struct fixture f;
	size_t sent;

	link_runs_setup(&f, &a, &b);
	gp_work_request(&f.pool, a, 1);
	ASSERT_EQ(f.n_sent, 2 * L); /* two runs open */
	ASSERT(a->clock_target > 2 * L);
	ASSERT(!gp_work_pause(&f.pool, a));
	sent = f.n_sent;
	answer_sent(&f, a, 0, L);
	ASSERT_EQ(f.n_sent, sent); /* no third run */
	answer_sent(&f, a, L, 2 * L);
	ASSERT_EQ(f.n_sent, sent);
	ASSERT_OK(gp_ssp_get(f.ssp, 1, &ia));
	ASSERT_EQ(ia.clock, 1);
	ASSERT_EQ(a->clock_open, 0);
	ASSERT(a->ssp_parked);
	fx_teardown(&f);
}

/* While an agent's link is not measured (its first clock, a probe, lasts
 * its link's whole wait), an agent with a measured link that would be
 * parked at the bound by it gets one more run at its clock instead; once
 * the link is measured, the bound parks it as before. */
static void test_probe_extend(void)
{
	const uint32_t caps = GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
			      GP_CAP_MOMENTUM | GP_CAP_LOCAL_DATA | GP_CAP_F16;
	struct gp_sched_config sc = {
		.n_samples = 4 * 1200, .batch_size = 4, .epochs = 1, .seed = 7,
	};
	struct gp_ssp_agent_info ia;
	struct gp_member *a, *b;
	struct fixture f;
	size_t n0, n1;

	fx_setup(&f, 1);
	gp_sched_destroy(f.sched);
	ASSERT_OK(gp_sched_create(&sc, &f.sched));
	f.pool.sched = f.sched;
	f.pool.minibatches_total = 1200;
	f.pool.applied_run = 100000;
	f.job.comm_share = 0.10;
	a = fx_join_speed(&f, 0, caps, 1000);
	b = fx_join_speed(&f, 1, caps, 1000);
	a->caps = caps;
	b->caps = caps;
	ASSERT_OK(gp_ssp_observe_speed(f.ssp, 1, 1000));
	ASSERT_OK(gp_ssp_observe_speed(f.ssp, 2, 1000));
	set_link(&f, 1, 72, 0.0001);
	/* a: clocks 0 and 1 (ahead, 1 <= 0 + s); b: its probe, unanswered. */
	gp_work_request(&f.pool, a, 1);
	gp_work_request(&f.pool, b, 1);
	ASSERT_EQ(a->clock_work, 20);
	ASSERT_EQ(a->next_work, 20);
	n0 = f.n_sent;
	answer_sent(&f, a, 0, n0);
	/* Clock 1 resolved: clock 2 would wait for b; a run of 48 more at
	 * clock 1 instead. */
	ASSERT_EQ(a->clock, 1);
	ASSERT_EQ(f.n_sent, n0 + GP_WORK_LINK_STEPS);
	for (size_t i = n0; i < f.n_sent; i++) {
		ASSERT_EQ(f.sent[i].agent, 1);
		ASSERT_EQ(f.sent[i].clock, 1);
	}
	/* b's link measured: the next resolution parks a at the bound. */
	set_link(&f, 2, 72, 0.0001);
	n1 = f.n_sent;
	answer_sent(&f, a, n0, n1);
	ASSERT_OK(gp_ssp_get(f.ssp, 1, &ia));
	ASSERT_EQ(ia.clock, 2);
	ASSERT_EQ(a->clock_open, 0);
	ASSERT_EQ(next_of(&f, a, n1), f.n_sent);
	ASSERT(!gp_ssp_may_compute(f.ssp, 1));
	fx_teardown(&f);
}

/* gp_work_serve_all stops at its time budget once a member was served
 * and asks to be called again (fx->serve_later); the calls that follow
 * serve the rest, each member once. */
static void test_serve_budget(void)
{
	struct fixture f;
	unsigned calls = 0;

	waiting_members(&f, 4);
	f.slow_send = true;     /* every member served outlasts ... */
	f.pool.serve_budget_us = 1; /* ... the budget */
	do {
		size_t before = f.n_sent;
		unsigned laters = f.serve_laters;

		gp_work_serve_all(&f.pool);
		calls++;
		/* One member a call, and a call back while any is left. */
		ASSERT_EQ(f.n_sent, before + GP_WORK_BASE);
		ASSERT(f.n_sent == 4 * GP_WORK_BASE ||
		       f.serve_laters == laters + 1);
	} while (f.n_sent < 4 * GP_WORK_BASE && calls < 10);
	ASSERT_EQ(calls, 4);
	for (size_t i = 0; i < 4; i++)
		ASSERT_EQ(f.members[i].clock_open, GP_WORK_BASE);
	fx_teardown(&f);
}

/* gp_members_step: n steps visit each of n members once, from where the
 * walk stopped, wrapping at the end; a member that leaves is skipped and
 * one that joins comes in the next time round; the walks are separate. */
static void test_walk(void)
{
	struct fixture f;
	unsigned seen[5] = { 0 };
	struct gp_member *m;

	fx_setup(&f, 1);
	f.job.max_agents = FX_MEMBERS;
	ASSERT(gp_members_step(&f.pool, GP_WALK_STATS) == NULL);
	for (size_t i = 0; i < 4; i++)
		fx_join(&f, i, 0);
	/* Listed newest first: 3, 2 ... */
	ASSERT(gp_members_step(&f.pool, GP_WALK_STATS) == &f.members[3]);
	ASSERT(gp_members_step(&f.pool, GP_WALK_STATS) == &f.members[2]);
	ASSERT(gp_members_step(&f.pool, GP_WALK_UPKEEP) == &f.members[3]);
	/* ... then 1, which leaves; 4 joins at the head. */
	gp_members_leave(&f.pool, &f.members[1]);
	gp_members_remove(&f.pool, &f.members[1]);
	fx_join(&f, 4, 0);
	ASSERT(gp_members_step(&f.pool, GP_WALK_STATS) == &f.members[0]);
	for (size_t k = 0; k < 2 * 4; k++) {
		m = gp_members_step(&f.pool, GP_WALK_STATS);
		ASSERT(m != NULL && m != &f.members[1]);
		seen[m - f.members]++;
	}
	for (size_t i = 0; i < 5; i++)
		ASSERT_EQ(seen[i], i == 1 ? 0u : 2u);
	/* The upkeep walk went on from 2 all the while. */
	ASSERT(gp_members_step(&f.pool, GP_WALK_UPKEEP) == &f.members[2]);
	fx_teardown(&f);
}

/* The link an update's round trip measures, with the update read at
 * read_us (pool.msg_read_us, 0: now) after a 100 ms wait between reading
 * and handling, as in the server's deferred queue; the update says
 * compute_us and held_us. */
static double link_measured(bool read_time, uint64_t compute_us,
			    uint64_t held_us)
{
	struct fixture f;
	struct gp_member *m;
	struct gp_ssp_agent_info info;
	struct timespec wait = { .tv_nsec = 100 * 1000 * 1000 };
	uint64_t ids[64], read_us;
	struct fx_update x;
	size_t n;

	fx_setup(&f, 1);
	m = fx_join(&f, 0, 0);
	gp_work_request(&f.pool, m, 1);
	n = fx_work_of(&f, m->agent_id, 0, ids, 64);
	ASSERT(n > 0);
	read_us = gp_mono_us();
	nanosleep(&wait, NULL);
	f.pool.msg_read_us = read_time ? read_us : 0;
	fx_plain(&x, ids[0], 0, zero);
	x.u.compute_us = compute_us;
	x.u.held_us = held_us;
	ASSERT_OK(gp_apply_update(&f.pool, m, &x.u, gp_now_ms()));
	f.pool.msg_read_us = 0;
	ASSERT_OK(gp_ssp_get(f.pool.ssp, (uint64_t)m->agent_id, &info));
	ASSERT(info.link_bps > 0);
	fx_teardown(&f);
	return info.link_bps;
}

/* A link is measured to the time its update was read, not to the time it
 * was handled: the 100 ms an update waits in the server's queue is not
 * the link's. With the read time the round trip is the microseconds
 * between handing out and reading; without it, 100 ms or more. */
static void test_link_read_time(void)
{
	double with_read = link_measured(true, 0, 0);
	double without = link_measured(false, 0, 0);

	ASSERT(with_read > 2 * without);
}

/* What the agent says it held the work (UPDATE.held_us: its compute and
 * its own handling) is not the link's: the 100 ms it held it leave a
 * round trip of microseconds, as with the read time above. Without
 * held_us, or with one under compute_us, compute_us counts. */
static void test_link_held(void)
{
	double none = link_measured(false, 0, 0);
	double held = link_measured(false, 0, 100000);
	double computed = link_measured(false, 100000, 0);
	double under = link_measured(false, 100000, 50);

	ASSERT(held > 2 * none);
	ASSERT(computed > 2 * none);
	ASSERT(under > 2 * none);
}

int main(void)
{
	test_overdue();
	test_request();
	test_local_step_checked();
	test_ahead();
	test_outer_pulls();
	test_overlap();
	test_overlap_cover();
	test_bound();
	test_pause();
	test_pause_idle();
	test_pause_runs();
	test_per_clock();
	test_link_clock();
	test_link_clock_q4_delta();
	test_copy_reuse();
	test_link_runs();
	test_probe_extend();
	test_members();
	test_pull_budget();
	test_pull_budget_verify();
	test_memo();
	test_pace();
	test_serve_scan();
	test_walk();
	test_serve_budget();
	test_link_read_time();
	test_link_held();
	return 0;
}
