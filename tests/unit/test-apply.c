/* Unit tests for coordinator/apply: the one update path. Refusals (NaN/Inf,
 * shape, norm and strikes, unassigned, unknown, duplicate, stale, a group's
 * shape rules, parts > 1), the staleness scale, clipping, a group applied
 * or refused whole with one ledger row per minibatch, a group against the
 * same minibatches one by one, a delta of local AdamW steps (alone and
 * through the outer optimiser), the full ledger buffer, and 4-bit updates
 * granted and taken only when the job asks for them. */
#include <errno.h>
#include <math.h>

#include "pool-fixture.h"

static const float zero[FX_N];
static const float ones[FX_N] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 };

/* Member 0 joins and asks for work: GP_WORK_BASE minibatches at clock 0,
 * ids in ids[]. */
static struct gp_member *start(struct fixture *f, uint32_t caps, uint64_t *ids)
{
	struct gp_member *m = fx_join(f, 0, caps);

	gp_work_request(&f->pool, m, 1);
	ASSERT_EQ(fx_work_of(f, 1, 0, ids, GP_WORK_BASE), GP_WORK_BASE);
	return m;
}

static float param(const struct fixture *f, size_t i)
{
	return gp_params_values(f->params)[i];
}

static void test_applied(void)
{
	struct fixture f;
	struct fx_update x;
	struct gp_member *m;
	uint64_t ids[GP_WORK_BASE];

	fx_setup(&f, 1);
	m = start(&f, 0, ids);
	ASSERT_OK(gp_apply_update(&f.pool, m, fx_plain(&x, ids[0], 0, ones), 5));
	/* lr 0.1, plain SGD. */
	ASSERT_NEAR(param(&f, 0), -0.1f, 1e-6);
	ASSERT_NEAR(param(&f, 8), -0.1f, 1e-6);
	ASSERT_EQ(f.n_rows, 1);
	ASSERT_EQ(f.rows[0].outcome, GP_UPDATE_APPLIED);
	ASSERT_EQ(f.rows[0].minibatch, (int64_t)(ids[0] % 10));
	ASSERT_EQ(f.rows[0].samples, 4);
	ASSERT_EQ(f.rows[0].received_at, 5);
	ASSERT_EQ(f.rows[0].staleness, 0);
	ASSERT_NEAR(f.rows[0].grad_norm, 3.0, 1e-6);
	ASSERT_EQ(m->clock_open, GP_WORK_BASE - 1);
	ASSERT_EQ(m->applied, 1);
	ASSERT_EQ(f.pool.applied_run, 1);
	ASSERT_EQ(f.pool.samples_run, 4);
	ASSERT_EQ(f.n_rejections, 0);
	/* The last of the clock advances it. */
	ASSERT_OK(gp_apply_update(&f.pool, m, fx_plain(&x, ids[1], 0, zero), 6));
	ASSERT_EQ(gp_ssp_min_clock(f.ssp), 1);
	ASSERT_EQ(m->clock, 1);
	fx_teardown(&f);
}

/* A refused update: one REJECTED row, a rejection, a strike, its
 * minibatch back in the queue and resolved on the agent's clock. */
static void expect_refused(struct fixture *f, struct gp_member *m,
			   const struct gp_msg_update *u, int reason)
{
	size_t rows = f->n_rows, rej = f->n_rejections;
	unsigned strikes = m->strikes, open = m->clock_open;
	size_t out = gp_sched_outstanding(f->sched, 1);
	int64_t clock = m->clock;
	float w0 = param(f, 0);

	ASSERT_EQ(gp_apply_update(&f->pool, m, u, 1), reason);
	ASSERT_EQ(f->n_rows, rows + 1);
	ASSERT_EQ(f->rows[rows].outcome, GP_UPDATE_REJECTED);
	ASSERT_STR_EQ(f->rows[rows].reason, gp_reason_str(reason));
	ASSERT_EQ(f->n_rejections, rej + 1);
	ASSERT_EQ(m->strikes, strikes + 1);
	if (m->clock == clock) {
		ASSERT_EQ(gp_sched_outstanding(f->sched, 1), out - 1);
		ASSERT_EQ(m->clock_open, open - 1);
	} else {
		ASSERT_EQ(open, 1); /* the clock's last: the next one is out */
		ASSERT_EQ(m->clock, clock + 1);
	}
	ASSERT(param(f, 0) == w0);
}

static void test_refusals(void)
{
	struct fixture f;
	struct fx_update x;
	struct gp_member *m;
	uint64_t ids[GP_WORK_BASE];
	float bad[FX_N] = { 0 };

	fx_setup(&f, 1);
	f.job.max_strikes = 100;
	m = start(&f, 0, ids);
	bad[4] = NAN;
	expect_refused(&f, m, fx_plain(&x, ids[0], 0, bad), GP_REASON_NONFINITE);
	/* Clock 0's other minibatch: Inf. Refused, the clock resolves. */
	bad[4] = INFINITY;
	expect_refused(&f, m, fx_plain(&x, ids[1], 0, bad), GP_REASON_NONFINITE);
	ASSERT_EQ(gp_ssp_min_clock(f.ssp), 1);
	/* The refused ones are handed out again. */
	ASSERT_EQ(fx_work_of(&f, 1, 1, ids, GP_WORK_BASE), GP_WORK_BASE);
	/* Shape: a block missing, a wrong count, a block of the wrong
	 * tensor. */
	fx_plain(&x, ids[0], 1, ones);
	x.u.n_blocks = 1;
	expect_refused(&f, m, &x.u, GP_REASON_SHAPE);
	fx_plain(&x, ids[1], 1, ones);
	x.blocks[1].count = 2;
	x.blocks[1].raw_len = 8;
	expect_refused(&f, m, &x.u, GP_REASON_SHAPE);
	ASSERT_EQ(fx_work_of(&f, 1, 2, ids, GP_WORK_BASE), GP_WORK_BASE);
	fx_plain(&x, ids[0], 2, ones);
	x.blocks[0].tensor = 1;
	expect_refused(&f, m, &x.u, GP_REASON_SHAPE);
	/* Split updates are not reassembled. */
	fx_plain(&x, ids[1], 2, ones);
	x.u.parts = 2;
	expect_refused(&f, m, &x.u, GP_REASON_SHAPE);
	/* A clock that is not the agent's. */
	ASSERT_EQ(fx_work_of(&f, 1, 3, ids, GP_WORK_BASE), GP_WORK_BASE);
	expect_refused(&f, m, fx_plain(&x, ids[0], 7, ones),
		       GP_REASON_CLOCK_AHEAD);
	ASSERT_EQ(f.byes, 0);
	fx_teardown(&f);
}

static void test_norm_strikes(void)
{
	struct fixture f;
	struct fx_update x;
	struct gp_member *m;
	uint64_t ids[GP_WORK_BASE];

	fx_setup_with(&f, 1, 0, 0, 2.0f);
	m = start(&f, 0, ids);
	/* |ones| = 3 > 2. */
	expect_refused(&f, m, fx_plain(&x, ids[0], 0, ones), GP_REASON_NORM);
	expect_refused(&f, m, fx_plain(&x, ids[1], 0, ones), GP_REASON_NORM);
	ASSERT_EQ(f.byes, 0);
	ASSERT_EQ(fx_work_of(&f, 1, 1, ids, GP_WORK_BASE), GP_WORK_BASE);
	/* The third strike (max_strikes = 3) closes the connection. */
	expect_refused(&f, m, fx_plain(&x, ids[0], 1, ones), GP_REASON_NORM);
	ASSERT_EQ(f.byes, 1);
	ASSERT_EQ(f.last_bye, GP_BYE_PROTOCOL);
	fx_teardown(&f);
}

/* A minibatch's own check: not this agent's, unknown, a second answer. */
static void test_checks(void)
{
	struct fixture f;
	struct fx_update x;
	struct gp_member *a, *b;
	uint64_t ids[GP_WORK_BASE], bids[GP_WORK_BASE];
	size_t rows;

	fx_setup(&f, 1);
	f.job.max_strikes = 100;
	a = start(&f, 0, ids);
	b = fx_join(&f, 1, 0);
	gp_work_request(&f.pool, b, 1);
	ASSERT_EQ(fx_work_of(&f, 2, 0, bids, GP_WORK_BASE), GP_WORK_BASE);
	/* b's minibatch from a: refused, a strike; b keeps it. */
	ASSERT_EQ(gp_apply_update(&f.pool, a, fx_plain(&x, bids[0], 0, ones), 1),
		  GP_REASON_NOT_ASSIGNED);
	ASSERT_EQ(f.rows[0].outcome, GP_UPDATE_REJECTED);
	ASSERT_EQ(a->strikes, 1);
	ASSERT_EQ(a->clock_open, GP_WORK_BASE);
	ASSERT_OK(gp_sched_check(f.sched, 2, bids[0]));
	/* Unknown: nothing of the agent's to resolve, samples 0. */
	fx_plain(&x, ids[0], 0, ones);
	x.u.epoch = 99;
	ASSERT_EQ(gp_apply_update(&f.pool, a, &x.u, 1),
		  GP_REASON_UNKNOWN_MINIBATCH);
	ASSERT_EQ(f.rows[1].samples, 0);
	ASSERT_EQ(a->strikes, 2);
	ASSERT_EQ(a->clock_open, GP_WORK_BASE);
	/* Applied, then answered again: a discard, no strike, no second
	 * resolve. */
	ASSERT_OK(gp_apply_update(&f.pool, a, fx_plain(&x, ids[0], 0, ones), 1));
	ASSERT_EQ(a->clock_open, GP_WORK_BASE - 1);
	rows = f.n_rows;
	ASSERT_EQ(gp_apply_update(&f.pool, a, fx_plain(&x, ids[0], 0, ones), 1),
		  GP_REASON_DUPLICATE);
	ASSERT_EQ(f.rows[rows].outcome, GP_UPDATE_DUPLICATE);
	ASSERT_EQ(a->strikes, 2);
	ASSERT_EQ(a->clock_open, GP_WORK_BASE - 1);
	fx_teardown(&f);
}

/* An update from parameters SSP no longer counts for the agent (never
 * pulled since it came back): a discard (LATE), no strike, back in the
 * queue. */
static void test_stale(void)
{
	struct fixture f;
	struct fx_update x;
	struct gp_member *m;
	uint64_t ids[GP_WORK_BASE];

	fx_setup(&f, 1);
	m = start(&f, 0, ids);
	ASSERT_OK(gp_ssp_mark_dead(f.ssp, 1));
	ASSERT_OK(gp_ssp_revive(f.ssp, 1, NULL));
	ASSERT_EQ(gp_apply_update(&f.pool, m, fx_plain(&x, ids[0], 0, ones), 1),
		  GP_REASON_STALE);
	ASSERT_EQ(f.n_rows, 1);
	ASSERT_EQ(f.rows[0].outcome, GP_UPDATE_LATE);
	ASSERT_EQ(m->strikes, 0);
	ASSERT_EQ(f.n_rejections, 0);
	ASSERT_EQ(gp_sched_outstanding(f.sched, 1), GP_WORK_BASE - 1);
	ASSERT(param(&f, 0) == 0);
	fx_teardown(&f);
}

/* Two agents: b's update lands after a pulled, so a's copy lacks one
 * update: a's is scaled by k / (k + 1), k = 2 minibatches at its clock. */
static void test_staleness_scale(void)
{
	struct fixture f;
	struct fx_update x;
	struct gp_member *a, *b;
	uint64_t ids[GP_WORK_BASE], bids[GP_WORK_BASE];

	fx_setup(&f, 1);
	a = start(&f, 0, ids);
	b = fx_join(&f, 1, 0);
	gp_work_request(&f.pool, b, 1);
	ASSERT_EQ(fx_work_of(&f, 2, 0, bids, GP_WORK_BASE), GP_WORK_BASE);
	ASSERT(gp_apply_staleness_scale(&f.pool, a) == 1);
	ASSERT_OK(gp_apply_update(&f.pool, b, fx_plain(&x, bids[0], 0, zero), 1));
	ASSERT_NEAR(gp_apply_staleness_scale(&f.pool, a), 2.0 / 3.0, 1e-9);
	ASSERT_OK(gp_apply_update(&f.pool, a, fx_plain(&x, ids[0], 0, ones), 1));
	ASSERT_NEAR(param(&f, 0), -0.1f * 2 / 3, 1e-6);
	/* Switched off: no scale. */
	f.job.staleness_scaling = false;
	ASSERT(gp_apply_staleness_scale(&f.pool, a) == 1);
	fx_teardown(&f);

	/* Under AdamW a gradient takes none (Adam divides its scale out),
	 * a delta of local AdamW steps does (it is in parameter units):
	 * b's applied minibatch is one a's copy lacks. */
	fx_setup(&f, 1);
	f.job.optimizer = GP_OPT_ADAMW;
	f.job.inner_optimizer = GP_INNER_ADAMW;
	a = start(&f, GP_CAP_LOCAL_STEP | GP_CAP_INNER_ADAMW, ids);
	b = fx_join(&f, 1, 0);
	gp_work_request(&f.pool, b, 1);
	ASSERT(fx_work_of(&f, 2, 0, bids, GP_WORK_BASE) >= 1);
	ASSERT_OK(gp_apply_update(&f.pool, b, fx_plain(&x, bids[0], 0, zero), 1));
	ASSERT(gp_apply_staleness_scale(&f.pool, b) == 1);
	ASSERT_NEAR(gp_apply_staleness_scale(&f.pool, a),
		    (double)a->clock_work / (a->clock_work + 1), 1e-9);
	ASSERT(gp_apply_staleness_scale(&f.pool, a) < 1);
	fx_teardown(&f);
}

/* Clipping is on the gradient as received; the staleness scale applies
 * after it, for one minibatch as for a group. */
static void test_clip(void)
{
	struct fixture f;
	struct fx_update x;
	struct gp_member *a, *b;
	uint64_t ids[GP_WORK_BASE], bids[GP_WORK_BASE];

	fx_setup_with(&f, 1, 0, 1.5f, 0);
	a = start(&f, 0, ids);
	b = fx_join(&f, 1, 0);
	gp_work_request(&f.pool, b, 1);
	ASSERT_EQ(fx_work_of(&f, 2, 0, bids, GP_WORK_BASE), GP_WORK_BASE);
	/* |ones| = 3, clipped to 1.5: half a step. */
	ASSERT_OK(gp_apply_update(&f.pool, a, fx_plain(&x, ids[0], 0, ones), 1));
	ASSERT_NEAR(param(&f, 0), -0.05f, 1e-6);
	ASSERT_NEAR(f.rows[0].grad_norm, 3.0, 1e-6);
	/* b lacks a's update: scale 2/3 times the clip's 1/2. */
	ASSERT_OK(gp_apply_update(&f.pool, b, fx_plain(&x, bids[0], 0, ones), 1));
	ASSERT_NEAR(param(&f, 0), -0.05f - 0.05f * 2 / 3, 1e-6);
	fx_teardown(&f);
}

/* The momentum sums of g1 then g2 at lrs l1, l2 (struct gp_params_sums). */
static void sums_of(const float *g1, const float *g2, float mu, float l1,
		    float l2, float *a, float *b)
{
	for (size_t i = 0; i < FX_N; i++) {
		float a1 = g1[i], a2 = mu * a1 + g2[i];

		a[i] = a2;
		b[i] = (l1 * a1 + l2 * a2) / (l1 + l2);
	}
}

/* In a job with momentum and verification on, groups come with the
 * coordinator's momentum or not at all: a group from the agent's own
 * velocity cannot be recomputed, so asking for SUMS without MOMENTUM
 * would opt a member out of every check. */
static void test_sums_need_momentum(void)
{
	const uint32_t sums = GP_CAP_LOCAL_STEP | GP_CAP_SUMS;
	struct fixture f;

	fx_setup_with(&f, 1, 0.9f, 0, 0);
	ASSERT(f.job.verify_rate > 0);
	ASSERT_UINT_EQ(fx_join(&f, 0, sums)->caps, GP_CAP_LOCAL_STEP);
	ASSERT_UINT_EQ(fx_join(&f, 1, sums | GP_CAP_MOMENTUM)->caps,
		       sums | GP_CAP_MOMENTUM);
	fx_teardown(&f);
	/* Verification off, or no momentum to start from: as asked. */
	fx_setup_with(&f, 1, 0.9f, 0, 0);
	f.job.verify_rate = 0;
	ASSERT_UINT_EQ(fx_join(&f, 0, sums)->caps, sums);
	fx_teardown(&f);
	fx_setup_with(&f, 1, 0, 0, 0);
	ASSERT_UINT_EQ(fx_join(&f, 0, sums)->caps, sums);
	fx_teardown(&f);
}

/* A group of two applied at once equals the two applied one by one; one
 * row per minibatch; the clock advances. */
static void test_group_vs_single(void)
{
	static const float g1[FX_N] = { 1, -2, 3, 0.5f, 0, 1, -1, 2, 0.25f };
	static const float g2[FX_N] = { -1, 1, 0, 2, 1, -0.5f, 3, 0, 1 };
	struct fixture one, grp;
	struct fx_update x;
	struct gp_member *m;
	uint64_t ids[GP_WORK_BASE], gids[GP_WORK_BASE];
	float a[FX_N], b[FX_N];

	fx_setup_with(&one, 1, 0.9f, 0, 0);
	m = start(&one, GP_CAP_LOCAL_STEP, ids);
	ASSERT_OK(gp_apply_update(&one.pool, m, fx_plain(&x, ids[0], 0, g1), 1));
	ASSERT_OK(gp_apply_update(&one.pool, m, fx_plain(&x, ids[1], 0, g2), 1));

	fx_setup_with(&grp, 1, 0.9f, 0, 0);
	m = start(&grp, GP_CAP_LOCAL_STEP | GP_CAP_SUMS | GP_CAP_MOMENTUM,
		  gids);
	ASSERT_UINT_EQ(gids[0], ids[0]); /* same seed, same schedule */
	sums_of(g1, g2, 0.9f, 0.1f, 0.1f, a, b);
	ASSERT_OK(gp_apply_update(&grp.pool, m, fx_sums(&x, gids, 2, 0, a, b), 1));
	ASSERT_EQ(grp.n_rows, 2);
	ASSERT_EQ(grp.rows[0].outcome, GP_UPDATE_APPLIED);
	ASSERT_EQ(grp.rows[1].outcome, GP_UPDATE_APPLIED);
	ASSERT_EQ(grp.rows[1].minibatch, (int64_t)(gids[1] % 10));
	ASSERT_NEAR(grp.rows[1].loss, 2.0, 1e-6);
	ASSERT_UINT_EQ(gp_params_updates(grp.params), 2);
	ASSERT_EQ(m->clock, 1);
	for (size_t i = 0; i < FX_N; i++)
		ASSERT_NEAR(param(&grp, i), param(&one, i), 1e-5);
	fx_teardown(&one);
	fx_teardown(&grp);
}

/* A group is refused whole: one row per minibatch, one strike, every
 * minibatch of the agent's back in the queue. */
static void test_group_refused(void)
{
	struct fixture f;
	struct fx_update x;
	struct gp_member *m;
	uint64_t ids[GP_WORK_BASE], twin[2];
	float bad[FX_N] = { 0 };

	fx_setup(&f, 1);
	f.job.max_strikes = 100;
	m = start(&f, GP_CAP_LOCAL_STEP | GP_CAP_SUMS, ids);
	bad[0] = NAN;
	ASSERT_EQ(gp_apply_update(&f.pool, m, fx_sums(&x, ids, 2, 0, bad, zero), 1),
		  GP_REASON_NONFINITE);
	ASSERT_EQ(f.n_rows, 2);
	ASSERT_EQ(f.rows[0].outcome, GP_UPDATE_REJECTED);
	ASSERT_EQ(f.rows[1].outcome, GP_UPDATE_REJECTED);
	ASSERT_EQ(m->strikes, 1);
	ASSERT_UINT_EQ(gp_params_updates(f.params), 0);
	/* Both resolved: clock 1 (handed out ahead) is the current one, and
	 * the refused two go out again at clock 2, first in the queue. */
	ASSERT_EQ(m->clock, 1);
	ASSERT_EQ(fx_work_of(&f, 1, 2, twin, 2), 2);
	ASSERT((twin[0] == ids[0] && twin[1] == ids[1]) ||
	       (twin[0] == ids[1] && twin[1] == ids[0]));
	ASSERT_EQ(fx_work_of(&f, 1, 1, ids, GP_WORK_BASE), GP_WORK_BASE);
	/* Listed twice: the twin is a duplicate, the other refused with
	 * the group (GROUP), one strike. */
	twin[0] = twin[1] = ids[0];
	ASSERT_EQ(gp_apply_update(&f.pool, m, fx_sums(&x, twin, 2, 1, zero, zero),
				  1), GP_REASON_DUPLICATE);
	ASSERT_EQ(f.n_rows, 4);
	ASSERT_STR_EQ(f.rows[2].reason, gp_reason_str(GP_REASON_GROUP));
	ASSERT_STR_EQ(f.rows[3].reason, gp_reason_str(GP_REASON_DUPLICATE));
	ASSERT_EQ(f.rows[3].outcome, GP_UPDATE_REJECTED);
	ASSERT_EQ(m->strikes, 2);
	ASSERT_EQ(m->clock_open, GP_WORK_BASE - 1);
	fx_teardown(&f);
}

/* A group's shape: sums only with GP_CAP_SUMS, of the current clock, no
 * more minibatches than it has open. */
static void test_group_shape(void)
{
	struct fixture f;
	struct fx_update x;
	struct gp_member *m;
	uint64_t ids[GP_WORK_BASE], ahead[GP_WORK_BASE], three[3];

	fx_setup(&f, 1);
	f.job.max_strikes = 100;
	m = start(&f, GP_CAP_LOCAL_STEP, ids);
	/* Not agreed: the agent has no GP_CAP_SUMS. */
	ASSERT_EQ(gp_apply_update(&f.pool, m, fx_sums(&x, ids, 2, 0, zero, zero), 1),
		  GP_REASON_SHAPE);
	ASSERT_EQ(f.n_rows, 2);
	ASSERT_EQ(m->strikes, 1);
	fx_teardown(&f);

	fx_setup(&f, 1);
	f.job.max_strikes = 100;
	m = start(&f, GP_CAP_LOCAL_STEP | GP_CAP_SUMS, ids);
	/* Clock 1 went out ahead: its minibatches are the agent's too. */
	ASSERT_EQ(m->next_work, GP_WORK_BASE);
	ASSERT_EQ(fx_work_of(&f, 1, 1, ahead, GP_WORK_BASE), GP_WORK_BASE);
	/* Three at clock 0, which has two open: each minibatch is the
	 * agent's, the group is not one of clock 0's. Refused whole. */
	three[0] = ids[0];
	three[1] = ids[1];
	three[2] = ahead[0];
	ASSERT_EQ(gp_apply_update(&f.pool, m, fx_sums(&x, three, 3, 0, zero, zero),
				  1), GP_REASON_SHAPE);
	ASSERT_EQ(f.n_rows, 3);
	ASSERT_EQ(m->strikes, 1);
	ASSERT_UINT_EQ(gp_params_updates(f.params), 0);
	fx_teardown(&f);
}

/* A delta (GP_CAP_INNER_ADAMW): subtracted as sent, one row per
 * minibatch with |d| / the rates' sum as its norm, the clock moves on;
 * refused without the capability, with a NaN, or beyond what the steps
 * it claims can move (GP_PARAMS_DELTA_STEP_MAX, with reject_norm on);
 * through an outer Nesterov it is the outer step's descent. */
static void test_delta(void)
{
	static const float d[FX_N] = { 0.01f, -0.02f, 0.03f, 0, 0.005f,
					-0.01f, 0.02f, 0, -0.04f };
	static const float p0[FX_N] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };
	struct fixture f;
	struct fx_update x;
	struct gp_member *m;
	uint64_t ids[GP_WORK_BASE];
	float absurd[FX_N] = { 0 };
	double sq = 0;

	fx_setup_with(&f, 1, 0, 0, 1000);
	f.job.max_strikes = 100;
	ASSERT_OK(gp_params_set_tensor(f.params, 0, p0, 6));
	ASSERT_OK(gp_params_set_tensor(f.params, 1, p0 + 6, 3));
	/* AdamW without inner_optimizer: no local steps at all. */
	f.job.optimizer = GP_OPT_ADAMW;
	ASSERT_EQ(fx_join(&f, 1, GP_CAP_LOCAL_STEP | GP_CAP_INNER_ADAMW)->caps &
			  (GP_CAP_LOCAL_STEP | GP_CAP_INNER_ADAMW), 0);
	gp_members_leave(&f.pool, &f.members[1]);
	f.job.optimizer = GP_OPT_SGD;
	m = start(&f, GP_CAP_LOCAL_STEP, ids);
	/* Not agreed: no GP_CAP_INNER_ADAMW. */
	ASSERT_EQ(gp_apply_update(&f.pool, m, fx_delta(&x, ids, 2, 0, d), 1),
		  GP_REASON_SHAPE);
	ASSERT_UINT_EQ(gp_params_updates(f.params), 0);
	fx_teardown(&f);

	fx_setup_with(&f, 1, 0, 0, 1000);
	f.job.max_strikes = 100;
	f.job.optimizer = GP_OPT_ADAMW;
	f.job.inner_optimizer = GP_INNER_ADAMW;
	ASSERT_OK(gp_params_set_tensor(f.params, 0, p0, 6));
	ASSERT_OK(gp_params_set_tensor(f.params, 1, p0 + 6, 3));
	/* Offered with sums too: local AdamW steps send deltas, not sums. */
	m = start(&f, GP_CAP_LOCAL_STEP | GP_CAP_INNER_ADAMW | GP_CAP_SUMS, ids);
	ASSERT_EQ(m->caps & (GP_CAP_LOCAL_STEP | GP_CAP_INNER_ADAMW |
			     GP_CAP_SUMS),
		  GP_CAP_LOCAL_STEP | GP_CAP_INNER_ADAMW);
	ASSERT_OK(gp_apply_update(&f.pool, m, fx_delta(&x, ids, 2, 0, d), 1));
	for (size_t i = 0; i < FX_N; i++) {
		ASSERT_NEAR(param(&f, i), p0[i] - d[i], 1e-6);
		sq += (double)d[i] * d[i];
	}
	ASSERT_EQ(f.n_rows, 2);
	ASSERT_EQ(f.rows[0].outcome, GP_UPDATE_APPLIED);
	ASSERT_EQ(f.rows[1].outcome, GP_UPDATE_APPLIED);
	ASSERT_NEAR(f.rows[1].loss, 2.0, 1e-6);
	/* lr 0.1 a minibatch: the norm is |d| / 0.2. */
	ASSERT_NEAR(f.rows[0].grad_norm, sqrt(sq) / 0.2, 1e-5);
	ASSERT_UINT_EQ(gp_params_updates(f.params), 2);
	ASSERT_EQ(m->clock, 1);
	/* A NaN, then a parameter moved further than 2 steps at 0.1 can
	 * (0.2 * 100 * (1 + |w|) for w = 1 is 40): refused, nothing
	 * changed. */
	ASSERT_EQ(fx_work_of(&f, 1, 1, ids, GP_WORK_BASE), GP_WORK_BASE);
	absurd[0] = 41;
	ASSERT_EQ(gp_apply_update(&f.pool, m, fx_delta(&x, ids, 2, 1, absurd),
				  1), GP_REASON_NORM);
	ASSERT_EQ(f.n_rows, 4);
	ASSERT_EQ(f.rows[3].outcome, GP_UPDATE_REJECTED);
	ASSERT_UINT_EQ(gp_params_updates(f.params), 2);
	ASSERT_NEAR(param(&f, 0), p0[0] - d[0], 1e-6);
	/* A plain gradient from an agent with local AdamW steps would be
	 * the coordinator's step while its copy took its own: refused. */
	ASSERT_EQ(fx_work_of(&f, 1, 1, ids, GP_WORK_BASE), GP_WORK_BASE);
	ASSERT_EQ(gp_apply_update(&f.pool, m, fx_plain(&x, ids[0], 1, d), 1),
		  GP_REASON_SHAPE);
	ASSERT_UINT_EQ(gp_params_updates(f.params), 2);
	ASSERT_NEAR(param(&f, 0), p0[0] - d[0], 1e-6);
	{
		/* The store's own checks: just inside the bound, then a
		 * NaN. */
		struct gp_params_delta dl = {
			.d = absurd, .lr_sum = 0.2, .count = 2, .scale = 1,
		};

		absurd[0] = 39;
		ASSERT_OK(gp_params_apply_delta(f.params, &dl, FX_N, NULL));
		ASSERT_NEAR(param(&f, 0), p0[0] - d[0] - 39, 1e-5);
		absurd[0] = NAN;
		ASSERT_EQ(gp_params_apply_delta(f.params, &dl, FX_N, NULL),
			  GP_REASON_NONFINITE);
		dl.count = 0;
		ASSERT_EQ(gp_params_apply_delta(f.params, &dl, FX_N, NULL),
			  -EINVAL);
		ASSERT_UINT_EQ(gp_params_updates(f.params), 4);
	}
	fx_teardown(&f);

	/* Through an outer Nesterov (lr 0.7, mu 0.5): m = d, and
	 * w = w0 - 0.7 (d + 0.5 d). */
	fx_setup(&f, 1);
	f.job.optimizer = GP_OPT_ADAMW;
	f.job.inner_optimizer = GP_INNER_ADAMW;
	f.job.outer_optimizer = GP_OUTER_NESTEROV;
	ASSERT_OK(gp_params_set_tensor(f.params, 0, p0, 6));
	ASSERT_OK(gp_params_set_tensor(f.params, 1, p0 + 6, 3));
	ASSERT_OK(gp_params_set_outer(f.params, 0.7f, 0.5f));
	m = start(&f, GP_CAP_LOCAL_STEP | GP_CAP_INNER_ADAMW, ids);
	ASSERT_OK(gp_apply_update(&f.pool, m, fx_delta(&x, ids, 2, 0, d), 1));
	for (size_t i = 0; i < FX_N; i++) {
		ASSERT_NEAR(param(&f, i), p0[i] - 1.05f * d[i], 1e-6);
		ASSERT_NEAR(gp_params_outer_momentum(f.params)[i], d[i], 1e-6);
	}
	fx_teardown(&f);
}

/* The ledger's buffer cannot take the rows: put back, no row, no strike,
 * nothing applied; applied once there is room. */
static void test_ledger_full(void)
{
	struct fixture f;
	struct fx_update x;
	struct gp_member *m;
	uint64_t ids[GP_WORK_BASE];

	fx_setup(&f, 1);
	m = start(&f, GP_CAP_LOCAL_STEP | GP_CAP_SUMS, ids);
	f.room = false;
	ASSERT_EQ(gp_apply_update(&f.pool, m, fx_sums(&x, ids, 2, 0, ones, ones), 1),
		  -ENOBUFS);
	ASSERT_EQ(f.n_rows, 0);
	ASSERT_EQ(m->strikes, 0);
	ASSERT_EQ(f.pool.unlogged, 1);
	ASSERT_UINT_EQ(gp_params_updates(f.params), 0);
	/* Put back and resolved: clock 1 hands the same two out again. */
	ASSERT_EQ(gp_ssp_min_clock(f.ssp), 1);
	ASSERT_EQ(fx_work_of(&f, 1, 1, ids, GP_WORK_BASE), GP_WORK_BASE);
	f.room = true;
	ASSERT_OK(gp_apply_update(&f.pool, m, fx_sums(&x, ids, 2, 1, ones, ones), 1));
	ASSERT_EQ(f.n_rows, 2);
	fx_teardown(&f);
}

/* Counters: eval_every and a checkpoint every n minibatches; the epoch's
 * end is reported. */
static void test_counters(void)
{
	struct fixture f;
	struct fx_update x;
	struct gp_member *m;
	uint64_t ids[GP_WORK_BASE];

	fx_setup(&f, 1);
	f.job.eval_every = 2;
	f.job.checkpoint_interval_minibatches = 3;
	m = fx_join(&f, 0, 0);
	gp_work_request(&f.pool, m, 1);
	for (int64_t c = 0; f.epochs_done == 0; c++) {
		size_t n = fx_work_of(&f, 1, c, ids, GP_WORK_BASE);

		ASSERT_GT(n, 0);
		for (size_t i = 0; i < n; i++)
			ASSERT_OK(gp_apply_update(&f.pool, m,
						  fx_plain(&x, ids[i], c, zero), 1));
		if (c == 0)
			ASSERT_EQ(f.interim, 1);
		if (c == 1)
			ASSERT(f.pool.checkpoint_wanted);
	}
	ASSERT_EQ(f.epochs_done, 1);
	ASSERT(!f.job_done);
	ASSERT_EQ(f.pool.epoch_updates, 10);
	ASSERT_EQ(m->epoch_samples, 40);
	fx_teardown(&f);
}

/* Whether a member that asks for caps is granted GP_CAP_Q4 in a job
 * with [pool] update_bits and int8. */
static bool q4_granted(uint32_t update_bits, bool int8, uint32_t caps)
{
	struct fixture f;
	bool granted;

	fx_setup(&f, 1);
	f.job.update_bits = update_bits;
	f.job.int8 = int8;
	granted = fx_join(&f, 0, caps)->caps & GP_CAP_Q4;
	fx_teardown(&f);
	return granted;
}

/* x's two blocks as 4-bit ones of q = 1 at scale 1: ones. */
static void q4_ones(struct fx_update *x)
{
	static const uint8_t one[4] = { 0, 0, 0x80, 0x3f }; /* 1.0f */

	memcpy(x->raw[0], one, 4);
	memset(x->raw[0] + 4, 0x11, 3);
	memcpy(x->raw[0] + 7, one, 4);
	x->raw[0][11] = 0x11;
	x->raw[0][12] = 0x01;
	x->blocks[0].dtype = GP_DTYPE_Q4;
	x->blocks[0].raw_len = 7;
	x->blocks[1].dtype = GP_DTYPE_Q4;
	x->blocks[1].raw = x->raw[0] + 7;
	x->blocks[1].raw_len = 6;
}

static void test_q4(void)
{
	const uint32_t q4 = GP_CAP_F16 | GP_CAP_Q8 | GP_CAP_Q4;
	struct fixture f;
	struct fx_update x;
	struct gp_member *m;
	uint64_t ids[GP_WORK_BASE];

	/* Only when the job asks, and with GP_CAP_Q8. */
	ASSERT(!q4_granted(8, true, q4));
	ASSERT(q4_granted(4, true, q4));
	ASSERT(!q4_granted(4, true, q4 & ~(uint32_t)GP_CAP_F16));
	ASSERT(!q4_granted(4, true, q4 & ~(uint32_t)GP_CAP_Q8));
	ASSERT(!q4_granted(4, false, q4));

	/* A member without it may not send it: its coarser rounding gets a
	 * wider allowance from verification. */
	fx_setup(&f, 1);
	f.job.max_strikes = 100;
	f.job.update_bits = 4;
	m = start(&f, q4 & ~(uint32_t)GP_CAP_Q4, ids);
	ASSERT(m->caps & GP_CAP_Q8);
	fx_plain(&x, ids[0], 0, zero);
	q4_ones(&x);
	expect_refused(&f, m, &x.u, GP_REASON_SHAPE);
	fx_teardown(&f);

	fx_setup(&f, 1);
	f.job.update_bits = 4;
	m = start(&f, q4, ids);
	ASSERT(m->caps & GP_CAP_Q4);
	fx_plain(&x, ids[0], 0, zero);
	q4_ones(&x);
	ASSERT_OK(gp_apply_update(&f.pool, m, &x.u, 5));
	ASSERT_EQ(f.rows[0].outcome, GP_UPDATE_APPLIED);
	ASSERT_NEAR(param(&f, 0), -0.1f, 1e-6);
	ASSERT_NEAR(param(&f, 8), -0.1f, 1e-6);
	fx_teardown(&f);
}

/* A straggler's group, whose minibatches were handed out before the job's
 * progress at a higher rate (cosine decay), moves the parameters along the
 * momentum already there at the rate in force now, not at its own (the
 * pool's momentum carried twice as far made three agents' test accuracy
 * fall 5-10 points late in a job); its own sums still at its rates. And
 * scaled by f for its staleness, its K steps count as f K of the pool's
 * time for that momentum (params.h gp_params_sums_coefficients()). */
static void test_straggler_carry(void)
{
	static const float g[FX_N] = { 1, -2, 3, 0.5f, 0, 1, -1, 2, 0.25f };
	const uint32_t caps = GP_CAP_LOCAL_STEP | GP_CAP_SUMS | GP_CAP_MOMENTUM;
	struct fixture f;
	struct fx_update x;
	struct gp_member *slow, *fast;
	uint64_t sids[GP_WORK_BASE], fids[GP_WORK_BASE];
	float w0[FX_N], v0[FX_N];
	double now, c = 0, c_own = 0, mk = 1;

	fx_setup_with(&f, 3, 0.9f, 0, 0);
	f.job.lr_schedule = GP_LR_COSINE;
	slow = fx_join(&f, 0, caps);
	gp_work_request(&f.pool, slow, 1);
	ASSERT_EQ(fx_work_of(&f, 1, 0, sids, GP_WORK_BASE), GP_WORK_BASE);
	fast = fx_join(&f, 1, caps);
	gp_work_request(&f.pool, fast, 1);
	ASSERT_EQ(fx_work_of(&f, 2, 0, fids, GP_WORK_BASE), GP_WORK_BASE);
	ASSERT(sids[1] < fids[0]);
	/* The fast member's group lands first: momentum, and progress. */
	ASSERT_OK(gp_apply_update(&f.pool, fast, fx_sums(&x, fids, 2, 0, g, g),
				  1));
	ASSERT_UINT_EQ(gp_sched_position(f.sched), 2);
	now = gp_pool_lr_now(&f.pool);
	ASSERT(now < gp_pool_lr_at(&f.pool, sids[1]));
	memcpy(w0, gp_params_values(f.params), sizeof(w0));
	memcpy(v0, gp_params_momentum(f.params), sizeof(v0));
	ASSERT_NEAR(gp_apply_staleness_scale(&f.pool, slow), 0.5, 1e-12);
	/* The straggler's group, zero sums: only the carry moves w. */
	ASSERT_OK(gp_apply_update(&f.pool, slow,
				  fx_sums(&x, sids, 2, 0, zero, zero), 1));
	for (size_t j = 0; j < 2; j++) {
		mk *= 0.9;
		c += (double)(float)now * mk;
		c_own += (double)(float)gp_pool_lr_at(&f.pool, sids[j]) * mk;
	}
	ASSERT(c_own - c > 0.004); /* its own rates: another w */
	/* Scaled 2 / (2 + 2) for its staleness (above), its 2 steps are 1
	 * of the pool's time: the momentum decays by 0.9, not 0.81, and
	 * coasts (1 - 0.9) / (1 - 0.81) as far. */
	c *= (1 - 0.9) / (1 - 0.81);
	for (size_t i = 0; i < FX_N; i++) {
		ASSERT_NEAR(param(&f, i), w0[i] - c * v0[i], 1e-5);
		ASSERT_NEAR(gp_params_momentum(f.params)[i], 0.9 * v0[i],
			    1e-5);
	}
	fx_teardown(&f);
}

int main(void)
{
	test_applied();
	test_refusals();
	test_norm_strikes();
	test_checks();
	test_stale();
	test_staleness_scale();
	test_clip();
	test_sums_need_momentum();
	test_group_vs_single();
	test_group_refused();
	test_group_shape();
	test_delta();
	test_ledger_full();
	test_counters();
	test_q4();
	test_straggler_carry();
	return 0;
}
