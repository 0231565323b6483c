/* Unit tests for coordinator/robust: centred clipping. Off is a no-op;
 * honest members around one direction are not shrunk while an attacker
 * (sign flip, a small steady shift, a huge update under the norm limit,
 * zeros sent six times as often as the others) is, and one update's
 * applied deviation stays within the radius; a
 * group's sums are shrunk exactly as its gradients one by one would be;
 * what the optimiser refuses is left as sent and changes no state; a
 * member idle for GP_ROBUST_IDLE_UPDATES of the pool's updates gives its
 * momentum back and starts a new one with its next update; members that
 * sent only zeros set no radius; a member that left is dropped from the
 * window; norms handed in change nothing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "robust.h"
#include "test.h"

#define N 64
#define HONEST 3

static uint64_t rng = 0x9e3779b97f4a7c15ull;

/* Uniform in [-1, 1). */
static double noise(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) / (double)(1ull << 52) - 1;
}

/* An honest gradient: the true one (all 1) plus noise of norm ~ 2.3. */
static void honest(float *g)
{
	for (size_t x = 0; x < N; x++)
		g[x] = (float)(1 + 0.5 * noise());
}

static double dist(const float *a, const float *b)
{
	double s = 0;

	for (size_t x = 0; x < N; x++)
		s += ((double)a[x] - b[x]) * ((double)a[x] - b[x]);
	return sqrt(s);
}

static struct gp_robust_update plain(float *g, uint64_t who)
{
	return (struct gp_robust_update){ .a = g, .n = N, .k = 1, .who = who,
					  .members = HONEST + 1,
					  .reject_norm = 1000 };
}

static void test_off(void)
{
	struct gp_robust r = { .clip = 0, .beta = 0.9 };
	struct gp_robust_agent a = {0};
	struct gp_robust_result res;
	float g[N], before[N];

	honest(g);
	memcpy(before, g, sizeof(g));
	struct gp_robust_update u = plain(g, 1);

	ASSERT_OK(gp_robust_filter(&r, &a, &u, &res));
	ASSERT(res.skipped);
	ASSERT_NEAR(res.weight, 1, 0);
	ASSERT_MEM_EQ(g, before, sizeof(g));
	ASSERT(!r.centre && !a.momentum);
}

/* Three honest members and one attacker taking turns; `attack` makes the
 * attacker's gradient from an honest one. Returns the attacker's damped
 * count; *ret_honest_damped the honest members'. */
static uint64_t run(void (*attack)(float *g), unsigned rounds,
		    uint64_t *ret_honest_damped, double *ret_max_excess)
{
	struct gp_robust r = { .clip = 2, .beta = 0.9 };
	struct gp_robust_agent ag[HONEST + 1] = {0};
	uint64_t honest_damped = 0, damped;
	double excess = 0;
	float g[N], c[N];

	for (unsigned t = 0; t < rounds; t++)
		for (size_t i = 0; i <= HONEST; i++) {
			struct gp_robust_update u = plain(g, i);
			struct gp_robust_result res;

			honest(g);
			if (i == HONEST)
				attack(g);
			if (r.centre)
				memcpy(c, r.centre, sizeof(c));
			else
				memset(c, 0, sizeof(c));
			ASSERT_OK(gp_robust_filter(&r, &ag[i], &u, &res));
			ASSERT(!res.skipped);
			/* The centre averaged in what was applied: as sent
			 * in the measuring pass, or after the shrink. */
			for (size_t x = 0; x < N; x++) {
				double want = res.centre_weight * c[x] +
					      (1 - res.centre_weight) * g[x];

				ASSERT(fabs(r.centre[x] - want) <=
				       1e-5 * (fabs(c[x]) + fabs(g[x]) + 1));
			}
			/* The applied deviation is within the radius. */
			if (res.tau_g > 0 && dist(g, c) - res.tau_g > excess)
				excess = dist(g, c) - res.tau_g;
			if (i < HONEST && res.weight < 1 && t >= 20)
				honest_damped++;
		}
	damped = ag[HONEST].damped;
	ASSERT_EQ(r.updates, (uint64_t)rounds * (HONEST + 1));
	for (size_t i = 0; i <= HONEST; i++)
		gp_robust_agent_finish(&ag[i]);
	gp_robust_finish(&r);
	*ret_honest_damped = honest_damped;
	*ret_max_excess = excess;
	return damped;
}

static void none(float *g)
{
	(void)g;
}

static void sign_flip(float *g)
{
	for (size_t x = 0; x < N; x++)
		g[x] = -g[x];
}

/* "A little is enough": a steady shift of about the honest noise's
 * standard deviation per coordinate, in one direction. */
static void little(float *g)
{
	for (size_t x = 0; x < N; x++)
		g[x] -= 0.3f;
}

static void huge(float *g)
{
	for (size_t x = 0; x < N; x++)
		g[x] *= -100;
}

static void test_attacks(void)
{
	uint64_t hd, d;
	double excess;

	/* Clean: no honest member shrunk once the momenta settled. */
	d = run(none, 200, &hd, &excess);
	ASSERT_EQ(hd, 0);
	ASSERT_LT(d, 10);
	d = run(sign_flip, 200, &hd, &excess);
	ASSERT_GT(d, 190);
	ASSERT_EQ(hd, 0);
	ASSERT(excess < 1e-3);
	d = run(little, 200, &hd, &excess);
	ASSERT_GT(d, 150);
	ASSERT_EQ(hd, 0);
	d = run(huge, 200, &hd, &excess);
	ASSERT_GT(d, 190);
	ASSERT_EQ(hd, 0);
	ASSERT(excess < 1e-3);
}

/* A group of K = 3: its sums after the filter are the sums of its three
 * gradients each replaced by c + lambda (g_i - c). */
static void test_group(void)
{
	const double mu = 0.9;
	const float lrs[3] = { 0.1f, 0.08f, 0.05f };
	struct gp_robust r = { .clip = 1, .beta = 0.9 };
	struct gp_robust_agent ag[2] = {0};
	struct gp_robust_result res;
	float gi[3][N], a[N], b[N], c[N], want_a[N], want_b[N];

	/* Warm up with honest single updates of three members. */
	for (int t = 0; t < 40; t++) {
		float g[N];
		struct gp_robust_update u = plain(g, (uint64_t)t % 3);

		honest(g);
		ASSERT_OK(gp_robust_filter(&r, &ag[0], &u, &res));
	}
	for (int i = 0; i < 3; i++)
		for (size_t x = 0; x < N; x++)
			gi[i][x] = (float)(-5 + noise()); /* far off: shrunk */
	memcpy(c, r.centre, sizeof(c));
	/* The sums as the agent builds them (proto/msg.h GP_UPDATE_SUMS). */
	for (size_t x = 0; x < N; x++) {
		double aj = 0, bsum = 0, lsum = 0;

		for (int j = 0; j < 3; j++) {
			aj = mu * aj + gi[j][x];
			bsum += lrs[j] * aj;
			lsum += lrs[j];
		}
		a[x] = (float)aj;
		b[x] = (float)(bsum / lsum);
	}
	struct gp_robust_update u = { .a = a, .b = b, .n = N, .k = 3, .who = 9,
				      .lrs = lrs, .mu = mu,
				      .reject_norm = 1000 };

	ASSERT_OK(gp_robust_filter(&r, &ag[1], &u, &res));
	ASSERT(res.weight < 0.5);
	for (size_t x = 0; x < N; x++) {
		double aj = 0, bsum = 0, lsum = 0;

		for (int j = 0; j < 3; j++) {
			double g = c[x] + res.weight * (gi[j][x] - c[x]);

			aj = mu * aj + g;
			bsum += lrs[j] * aj;
			lsum += lrs[j];
		}
		want_a[x] = (float)aj;
		want_b[x] = (float)(bsum / lsum);
		ASSERT_NEAR(a[x], want_a[x], 1e-4);
		ASSERT_NEAR(b[x], want_b[x], 1e-4);
	}
	gp_robust_agent_finish(&ag[0]);
	gp_robust_agent_finish(&ag[1]);
	gp_robust_finish(&r);
}

/* A member that answers at once (zeros, computing nothing) with six
 * updates to each honest member's one does not set the radii: it is
 * damped, the honest members are not. */
static void test_fast_attacker(void)
{
	struct gp_robust r = { .clip = 2, .beta = 0.9 };
	struct gp_robust_agent ag[HONEST + 1] = {0};
	uint64_t honest_damped = 0;
	float g[N];

	for (unsigned t = 0; t < 200; t++)
		for (size_t i = 0; i < HONEST + 6; i++) {
			size_t who = i < HONEST ? i : HONEST;
			struct gp_robust_update u = plain(g, who);
			struct gp_robust_result res;

			honest(g);
			if (who == HONEST)
				memset(g, 0, sizeof(g));
			ASSERT_OK(gp_robust_filter(&r, &ag[who], &u, &res));
			if (who < HONEST && res.weight < 1 && t >= 20)
				honest_damped++;
		}
	ASSERT_LT(honest_damped, 10);
	ASSERT_GT(ag[HONEST].damped, 1100);
	for (size_t i = 0; i <= HONEST; i++)
		gp_robust_agent_finish(&ag[i]);
	gp_robust_finish(&r);
}

/* One member alone (or two) is never shrunk, however far its momentum
 * drifts: there is no majority to follow. */
static void test_few_members(void)
{
	struct gp_robust r = { .clip = 2, .beta = 0.9 };
	struct gp_robust_agent a[2] = {0};
	struct gp_robust_result res;
	float g[N];

	for (int t = 0; t < 200; t++) {
		struct gp_robust_update u = plain(g, (uint64_t)t % 2);

		honest(g);
		if (t % 2)
			sign_flip(g);
		ASSERT_OK(gp_robust_filter(&r, &a[t % 2], &u, &res));
		ASSERT(!res.skipped);
		ASSERT_NEAR(res.weight, 1, 0);
	}
	gp_robust_agent_finish(&a[0]);
	gp_robust_agent_finish(&a[1]);
	gp_robust_finish(&r);
}

/* Two honest members measured, then a newcomer whose first update is
 * just under the norm limit: judged by their radii at once (the sender
 * makes the third member), not applied as sent while the window holds
 * two members only. Likewise a member that sent one honest update and
 * came back after its entry left the window. */
static void test_newcomer_first(void)
{
	struct gp_robust r = { .clip = 2, .beta = 0.9 };
	struct gp_robust_agent a[4] = {0};
	struct gp_robust_result res;
	float g[N];
	struct gp_robust_update u;

	for (int t = 0; t < 40; t++) {
		u = plain(g, (uint64_t)t % 2);
		honest(g);
		ASSERT_OK(gp_robust_filter(&r, &a[t % 2], &u, &res));
		ASSERT_NEAR(res.weight, 1, 0); /* two members: nothing shrunk */
	}
	for (size_t x = 0; x < N; x++)
		g[x] = (float)(950 / sqrt(N));
	u = plain(g, 2);
	ASSERT_OK(gp_robust_filter(&r, &a[2], &u, &res));
	ASSERT(!res.skipped);
	ASSERT(res.tau_g > 0);
	ASSERT(res.weight < 0.01);
	ASSERT(dist(g, r.centre) <= res.tau_g * 1.0001);
	/* Member 3: one honest update, away while the two fill the window
	 * (member 2's entry leaves it too), then one just under the limit. */
	honest(g);
	u = plain(g, 3);
	ASSERT_OK(gp_robust_filter(&r, &a[3], &u, &res));
	for (int t = 0; t < GP_ROBUST_WINDOW; t++) {
		u = plain(g, (uint64_t)t % 2);
		honest(g);
		ASSERT_OK(gp_robust_filter(&r, &a[t % 2], &u, &res));
	}
	for (size_t x = 0; x < N; x++)
		g[x] = (float)(950 / sqrt(N));
	u = plain(g, 3);
	ASSERT_OK(gp_robust_filter(&r, &a[3], &u, &res));
	ASSERT(res.tau_g > 0);
	ASSERT(res.weight < 0.01);
	for (int i = 0; i < 4; i++)
		gp_robust_agent_finish(&a[i]);
	gp_robust_finish(&r);
}

/* Over the norm limit, or not finite: left as sent, no state changed. */
static void test_refused_left(void)
{
	struct gp_robust r = { .clip = 2, .beta = 0.9 };
	struct gp_robust_agent a = {0};
	struct gp_robust_result res;
	float g[N], before[N], c[N];

	for (int t = 0; t < 20; t++) {
		struct gp_robust_update u = plain(g, 1);

		honest(g);
		ASSERT_OK(gp_robust_filter(&r, &a, &u, &res));
	}
	memcpy(c, r.centre, sizeof(c));
	for (size_t x = 0; x < N; x++)
		g[x] = 1e4f;
	memcpy(before, g, sizeof(g));
	struct gp_robust_update u = plain(g, 1);
	uint32_t len = r.ring_len;
	uint64_t upd = a.updates;

	ASSERT_OK(gp_robust_filter(&r, &a, &u, &res));
	ASSERT(res.skipped);
	ASSERT_MEM_EQ(g, before, sizeof(g));
	ASSERT_MEM_EQ(r.centre, c, sizeof(c));
	ASSERT_EQ(r.ring_len, len);
	ASSERT_EQ(a.updates, upd);
	g[3] = NAN;
	ASSERT_OK(gp_robust_filter(&r, &a, &u, &res));
	ASSERT(res.skipped);
	ASSERT_MEM_EQ(r.centre, c, sizeof(c));
	gp_robust_agent_finish(&a);
	gp_robust_finish(&r);
}

/* For a large model the idle limit shrinks so that the momenta stay
 * within GP_ROBUST_MOMENTA_BYTES (never below the window), and trim
 * follows it. */
static void test_trim_budget(void)
{
	const size_t big = (size_t)1 << 21; /* 8 MiB a momentum: limit 32 -> 64 */
	struct gp_robust r = { .clip = 2, .beta = 0.9 };
	struct gp_robust_agent a[HONEST + 1] = {{0}};
	struct gp_robust_result res;
	float *g = malloc(big * sizeof(float));

	ASSERT_NOT_NULL(g);
	ASSERT_EQ(gp_robust_idle_limit(&r), GP_ROBUST_IDLE_UPDATES);
	r.n = 1000;
	ASSERT_EQ(gp_robust_idle_limit(&r), GP_ROBUST_IDLE_UPDATES);
	r.n = 235146; /* the MLP 784-256-128-10 */
	ASSERT_EQ(gp_robust_idle_limit(&r),
		  GP_ROBUST_MOMENTA_BYTES / (235146 * sizeof(float)));
	ASSERT(gp_robust_idle_limit(&r) < GP_ROBUST_IDLE_UPDATES);
	r.n = 0;
	for (uint64_t t = 0; t <= GP_ROBUST_WINDOW + 1; t++) {
		uint64_t who = t == 0 ? 0 : 1 + t % HONEST;
		struct gp_robust_update u = {
			.a = g, .n = big, .k = 1, .who = who,
			.members = HONEST + 1, .reject_norm = 1e9,
		};

		for (size_t x = 0; x < big; x++)
			g[x] = (float)(1 + 0.5 * noise());
		ASSERT_OK(gp_robust_filter(&r, &a[who], &u, &res));
		ASSERT_EQ(gp_robust_idle_limit(&r), GP_ROBUST_WINDOW);
		gp_robust_agent_trim(&r, &a[0]);
		/* Member 0's update was the first: kept while at most the
		 * window's updates came after it. */
		ASSERT((a[0].momentum != NULL) == (t <= GP_ROBUST_WINDOW));
	}
	for (int i = 0; i <= HONEST; i++)
		gp_robust_agent_finish(&a[i]);
	gp_robust_finish(&r);
	free(g);
}

/* A member idle for GP_ROBUST_IDLE_UPDATES of the pool's updates gives
 * its momentum back; one that worked keeps it; the idle one's next update
 * starts a new momentum (its own update), and its counters stay. */
static void test_trim_idle(void)
{
	struct gp_robust r = { .clip = 2, .beta = 0.9 };
	struct gp_robust_agent a[HONEST + 1] = {{0}};
	struct gp_robust_result res;
	float g[N], first[N];
	uint64_t upd;

	/* 41 updates, member 0's last. */
	for (int t = 0; t <= 40; t++) {
		struct gp_robust_update u = plain(g, (uint64_t)t % (HONEST + 1));

		honest(g);
		ASSERT_OK(gp_robust_filter(&r, &a[t % (HONEST + 1)], &u, &res));
	}
	ASSERT(a[0].momentum != NULL);
	upd = a[0].updates;
	/* Members 1-3 go on; member 0 is idle. */
	for (int t = 0; t < GP_ROBUST_IDLE_UPDATES; t++) {
		struct gp_robust_update u = plain(g, 1 + (uint64_t)t % HONEST);

		honest(g);
		ASSERT_OK(gp_robust_filter(&r, &a[1 + t % HONEST], &u, &res));
		gp_robust_agent_trim(&r, &a[0]);
		gp_robust_agent_trim(&r, &a[1 + t % HONEST]);
	}
	/* Exactly at the limit it is kept; one more update drops it. */
	ASSERT(a[0].momentum != NULL);
	{
		struct gp_robust_update u = plain(g, 1);

		honest(g);
		ASSERT_OK(gp_robust_filter(&r, &a[1], &u, &res));
	}
	gp_robust_agent_trim(&r, &a[0]);
	ASSERT(a[0].momentum == NULL);
	ASSERT_EQ(a[0].run, 0);
	ASSERT_EQ(a[0].updates, upd);
	for (int i = 1; i <= HONEST; i++)
		ASSERT(a[i].momentum != NULL);
	/* The next update of member 0 starts its momentum from itself. */
	honest(g);
	memcpy(first, g, sizeof(g));
	{
		struct gp_robust_update u = plain(g, 0);

		ASSERT_OK(gp_robust_filter(&r, &a[0], &u, &res));
	}
	ASSERT(a[0].momentum != NULL);
	ASSERT_EQ(a[0].run, 1);
	ASSERT_EQ(a[0].updates, upd + 1);
	/* The update as it came, before any shrinking. */
	ASSERT(dist(a[0].momentum, first) < 1e-5);
	for (int i = 0; i <= HONEST; i++)
		gp_robust_agent_finish(&a[i]);
	gp_robust_finish(&r);
}

/* Three members that send a few updates of zeros first (computing
 * nothing) and two honest ones after them: the zeros' deviations (0, the
 * centre still 0) set no radius, and the honest updates are not replaced
 * by the centre (fault/hostile-members: every honest update damped to 0
 * for an epoch). */
static void test_zero_members(void)
{
	struct gp_robust r = { .clip = 2, .beta = 0.9 };
	struct gp_robust_agent a[5] = {{0}};
	struct gp_robust_result res;
	const uint64_t zeros[] = { 2, 3, 4, 3, 4, 2, 3 };
	double lowest = 1;
	float g[N];

	for (size_t t = 0; t < sizeof(zeros) / sizeof(zeros[0]); t++) {
		struct gp_robust_update u = plain(g, zeros[t]);

		memset(g, 0, sizeof(g));
		u.members = 5;
		ASSERT_OK(gp_robust_filter(&r, &a[zeros[t]], &u, &res));
	}
	for (int t = 0; t < 200; t++) {
		struct gp_robust_update u = plain(g, (uint64_t)t % 2);

		honest(g);
		u.members = 5;
		ASSERT_OK(gp_robust_filter(&r, &a[t % 2], &u, &res));
		if (res.weight < lowest)
			lowest = res.weight;
	}
	printf("zero members: lowest honest weight %.3f\n", lowest);
	ASSERT(lowest > 0.5);
	for (int i = 0; i < 5; i++)
		gp_robust_agent_finish(&a[i]);
	gp_robust_finish(&r);
}

/* gp_robust_forget() drops a member's deviations, before and after the
 * window wraps, and the window goes on filling in order. */
static void test_forget(void)
{
	struct gp_robust r = { .clip = 2, .beta = 0.9 };
	struct gp_robust_agent a[HONEST + 1] = {{0}};
	struct gp_robust_result res;
	float g[N];

	for (int round = 0; round < 2; round++) {
		/* 21 updates (the first sets the centre), then 100 more. */
		int n = round ? 100 : 21;

		for (int t = 0; t < n; t++) {
			size_t i = (size_t)t % (HONEST + 1);
			struct gp_robust_update u = plain(g, i);

			honest(g);
			ASSERT_OK(gp_robust_filter(&r, &a[i], &u, &res));
		}
		{
			uint32_t len = r.ring_len, mine = 0;

			for (uint32_t i = 0; i < len; i++)
				mine += r.ring_who[i] == HONEST;
			ASSERT_GT(mine, 0);
			gp_robust_forget(&r, HONEST);
			ASSERT_EQ(r.ring_len, len - mine);
			ASSERT_EQ(r.ring_pos, r.ring_len % GP_ROBUST_WINDOW);
			for (uint32_t i = 0; i < r.ring_len; i++)
				ASSERT(r.ring_who[i] != HONEST);
		}
	}
	/* It fills up again. */
	for (int t = 0; t < 100; t++) {
		struct gp_robust_update u = plain(g, (uint64_t)t % HONEST);

		honest(g);
		ASSERT_OK(gp_robust_filter(&r, &a[t % HONEST], &u, &res));
	}
	ASSERT_EQ(r.ring_len, GP_ROBUST_WINDOW);
	for (int i = 0; i <= HONEST; i++)
		gp_robust_agent_finish(&a[i]);
	gp_robust_finish(&r);
}

/* The sums of squares a caller hands in (apply.c: verification's) are
 * those the filter would take itself: the same shrinks, bit for bit; and
 * gp_robust_sum_squares matches a plain double sum, also where a float
 * square overflows. */
static void test_sq_given(void)
{
	struct gp_robust r[2] = { { .clip = 2, .beta = 0.9 },
				  { .clip = 2, .beta = 0.9 } };
	struct gp_robust_agent ag[2][HONEST + 1];
	static float big[1003];
	double want = 0;

	memset(ag, 0, sizeof(ag));
	for (unsigned t = 0; t < 40; t++)
		for (size_t i = 0; i <= HONEST; i++) {
			float g[2][N];
			struct gp_robust_result res[2];

			honest(g[0]);
			if (i == HONEST)
				for (size_t x = 0; x < N; x++)
					g[0][x] = -3 * g[0][x];
			memcpy(g[1], g[0], sizeof(g[0]));
			for (int k = 0; k < 2; k++) {
				struct gp_robust_update u = plain(g[k], i);

				if (k) {
					u.sq_known = true;
					u.sq_a = gp_robust_sum_squares(g[k], N);
				}
				ASSERT_OK(gp_robust_filter(&r[k], &ag[k][i],
							   &u, &res[k]));
			}
			ASSERT(res[0].weight == res[1].weight);
			ASSERT_MEM_EQ(g[0], g[1], sizeof(g[0]));
			ASSERT_MEM_EQ(r[0].centre, r[1].centre,
				      N * sizeof(float));
		}
	ASSERT(r[0].damped > 0);
	for (size_t x = 0; x < 1003; x++) {
		big[x] = (float)(x % 7 == 0 ? 3e19 : noise());
		want += (double)big[x] * big[x];
	}
	ASSERT(isfinite(gp_robust_sum_squares(big, 1003)));
	ASSERT(fabs(gp_robust_sum_squares(big, 1003) - want) <= 1e-12 * want);
	for (size_t x = 0; x < 1003; x++)
		big[x] = (float)noise();
	want = 0;
	for (size_t x = 0; x < 1003; x++)
		want += (double)big[x] * big[x];
	ASSERT(fabs(gp_robust_sum_squares(big, 1003) - want) <= 1e-6 * want);
	for (int k = 0; k < 2; k++) {
		for (size_t i = 0; i <= HONEST; i++)
			gp_robust_agent_finish(&ag[k][i]);
		gp_robust_finish(&r[k]);
	}
}

int main(void)
{
	test_zero_members();
	test_forget();
	test_trim_idle();
	test_trim_budget();
	test_off();
	test_attacks();
	test_group();
	test_few_members();
	test_newcomer_first();
	test_fast_attacker();
	test_refused_left();
	test_sq_given();
	return 0;
}
