/* Centred clipping of updates: see robust.h.
 *
 * A group of K gradients g_1..g_K arrives as two sums (GP_UPDATE_SUMS):
 * a = a_K and b = sum_j lr_j a_j / sum_j lr_j, with a_j = mu a_(j-1) + g_j.
 * Replacing every g_i by c + lambda (g_i - c) turns a_j into
 * lambda a_j + (1 - lambda) d_j c, d_j = sum_(t<j) mu^t, so
 *   a <- lambda a + (1 - lambda) D_a c,   D_a = d_K,
 *   b <- lambda b + (1 - lambda) D_b c,   D_b = sum_j lr_j d_j / sum_j lr_j.
 * The group's mean gradient is a / D_a, a mean of K gradients weighted
 * mu^(K-i); its noise is sqrt(K_eff) times a single one's, K_eff =
 * D_a^2 / sum_(t<K) mu^(2t). Form 0 is the group of one: D_a = 1, no b. */
#include "robust.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gp-vectorize.h"
#include "par.h"

static uint64_t thread_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct entry {
	double v, w;
};

static int cmp_entry(const void *a, const void *b)
{
	double x = ((const struct entry *)a)->v, y = ((const struct entry *)b)->v;

	return (x > y) - (x < y);
}

/* GP_ROBUST_QUANTILE of ring[0..len), each member weighing the same
 * however many of the entries are its own: a member that answers at once
 * (one that computes nothing) has most of the updates, and would else
 * set the radii itself. who[] names each entry's member. A deviation of
 * exactly 0 (an update that is the centre itself) says nothing about the
 * honest noise and is left out; 0 when nothing is left: no radius. */
static double quantile(const double *ring, const uint64_t *who, uint32_t len)
{
	struct entry e[GP_ROBUST_WINDOW];
	double total = 0, acc = 0;
	uint32_t k = 0;

	for (uint32_t i = 0; i < len; i++) {
		uint32_t same = 0;

		if (!(ring[i] > 0))
			continue;
		for (uint32_t j = 0; j < len; j++)
			same += who[j] == who[i] && ring[j] > 0;
		e[k] = (struct entry){ ring[i], 1.0 / same };
		total += e[k++].w;
	}
	if (k == 0)
		return 0;
	qsort(e, k, sizeof(e[0]), cmp_entry);
	for (uint32_t i = 0; i < k; i++) {
		acc += e[i].w;
		if (acc >= GP_ROBUST_QUANTILE * total)
			return e[i].v;
	}
	return e[k - 1].v;
}

/* The sums' weights of a group of u->k: D_a, D_b and K_eff. */
static void weights(const struct gp_robust_update *u, double *ret_da,
		    double *ret_db, double *ret_keff)
{
	double mu = u->b ? u->mu : 0, d = 0, pw = 1, sq = 0, lsum = 0, lw = 0;

	for (uint32_t j = 1; j <= u->k; j++) {
		double lr = u->lrs ? u->lrs[j - 1] : 1;

		sq += pw * pw;
		d += pw;        /* d_j */
		pw *= mu;
		lw += lr * d;
		lsum += lr;
	}
	*ret_da = d;
	*ret_db = lsum > 0 ? lw / lsum : d;
	*ret_keff = d * d / sq;
}

#define LANES 16

/* The passes over the parameters go in ranges of this many values (a
 * multiple of the measure's runs of 256): a range is one task on the pool
 * (gp_robust.par), and what the ranges sum is added in range order, so
 * the result is the same bits on any number of threads. */
#define RANGE 16384

/* gp_robust_sum_squares of one range (at most RANGE values). */
GP_VECTORIZE static double squares_range(const float *x, size_t n)
{
	double total = 0, s[4] = { 0, 0, 0, 0 };
	size_t i = 0;

	while (i + LANES <= n) {
		float acc[LANES] = { 0 };
		size_t end = n - i > 256 ? i + 256 : n;

		for (; i + LANES <= end; i += LANES)
			for (size_t j = 0; j < LANES; j++)
				acc[j] += x[i + j] * x[i + j];
		for (size_t j = 0; j < LANES; j++)
			total += acc[j];
	}
	for (; i < n; i++)
		total += (double)x[i] * x[i];
	if (isfinite(total))
		return total;
	/* A float square overflowed: in double, in four sums. */
	for (i = 0; i + 4 <= n; i += 4)
		for (size_t j = 0; j < 4; j++)
			s[j] += (double)x[i + j] * x[i + j];
	for (; i < n; i++)
		s[0] += (double)x[i] * x[i];
	return (s[0] + s[1]) + (s[2] + s[3]);
}

double gp_robust_sum_squares(const float *x, size_t n)
{
	double total = 0;

	for (size_t x0 = 0; x0 < n; x0 += RANGE)
		total += squares_range(x + x0, n - x0 < RANGE ? n - x0 : RANGE);
	return total;
}

/* measure()'s whole lanes of values [x, end), returning where it
 * stopped; inlined with fuse constant, so that each copy vectorises. */
static inline __attribute__((always_inline)) size_t
measure_run(const float *restrict a, const float *restrict c,
	    float *restrict m, float *restrict cn, size_t x, size_t end,
	    float inv, float beta, float bk, bool fuse, float *restrict dg,
	    float *restrict dm)
{
	for (; x + LANES <= end; x += LANES)
		for (size_t j = 0; j < LANES; j++) {
			float g = a[x + j] * inv, ci = c[x + j];
			float e = g - ci;
			float mi = beta * m[x + j] + (1 - beta) * g;
			float f = mi - ci;

			m[x + j] = mi;
			if (fuse)
				cn[x + j] = bk * ci + (1 - bk) * g;
			dg[j] += e * e;
			dm[j] += f * f;
		}
	return x;
}

/* Pass 1: |g - c|^2 and |m' - c|^2, with m' the member's momentum m after
 * g (beta^k m + (1 - beta^k) g; its first, m' = g), which it writes over
 * m: the momentum is the member's record of what it sent, whatever the
 * filter then does with the update. fuse: the centre's average too,
 * beta_k c + (1 - beta_k) g, into centre_next: the centre to be if g is
 * not shrunk (else the centre, untouched, is averaged after the shrink).
 * Float lanes over runs of 256 values, each run's partial sums added in
 * double, as gp_robust_sum_squares. */
struct sums {
	double dg, dm;
};

GP_VECTORIZE static struct sums measure(struct gp_robust *r,
					float *restrict m, bool first,
					const struct gp_robust_update *u,
					double da, bool fuse, double beta_k,
					size_t x, size_t n)
{
	const float *restrict c = r->centre, *restrict a = u->a;
	float *restrict cn = r->centre_next;
	float inv = (float)(1.0 / da), beta = first ? 0 : (float)pow(r->beta, u->k),
	      rest = 1 - beta, bk = (float)beta_k, bk_rest = 1 - bk;
	struct sums s = {0};

	/* 0 m, not 0 times whatever a run before left there. */
	if (first)
		memset(m + x, 0, (n - x) * sizeof(*m));
	while (x < n) {
		float dg[LANES] = {0}, dm[LANES] = {0};
		size_t end = n - x > 256 ? x + 256 : n;

		/* fuse is known before the loop: two copies of it. */
		if (fuse)
			x = measure_run(a, c, m, cn, x, end, inv, beta, bk, true,
					dg, dm);
		else
			x = measure_run(a, c, m, cn, x, end, inv, beta, bk, false,
					dg, dm);
		for (; x < end; x++) {
			float g = a[x] * inv, ci = c[x];
			float e = g - ci, mi = beta * m[x] + rest * g;
			float f = mi - ci;

			m[x] = mi;
			if (fuse)
				cn[x] = bk * ci + bk_rest * g;
			dg[0] += e * e;
			dm[0] += f * f;
		}
		for (size_t j = 0; j < LANES; j++) {
			s.dg += dg[j];
			s.dm += dm[j];
		}
	}
	return s;
}

/* Pass 2: the shrink of a and b towards the centre (lambda < 1), the
 * centre's average. */
/* y = p y + q x, in blocks of LANES that -O2 turns into SIMD. */
GP_VECTORIZE static void axpby(float *restrict y, const float *restrict x,
			       size_t n, float p, float q)
{
	size_t i = 0;

	for (; i + LANES <= n; i += LANES)
		for (size_t j = 0; j < LANES; j++)
			y[i + j] = p * y[i + j] + q * x[i + j];
	for (; i < n; i++)
		y[i] = p * y[i] + q * x[i];
}

static void shrink(struct gp_robust *r, const struct gp_robust_update *u,
		   double lambda, double da, double db, double beta_k,
		   size_t x, size_t n)
{
	if (lambda < 1) {
		if (u->b)
			axpby(u->b + x, r->centre + x, n - x, (float)lambda,
			      (float)((1 - lambda) * db));
		axpby(u->a + x, r->centre + x, n - x, (float)lambda,
		      (float)((1 - lambda) * da));
	}
	if (beta_k < 1)
		axpby(r->centre + x, u->a + x, n - x, (float)beta_k,
		      (float)((1 - beta_k) / da));
}

/* Pass 2 after a fused pass 1, when the update is shrunk: a and b shrunk
 * towards the centre, and the centre's average of the shrunk g, in one
 * pass (centre_next, which assumed g as sent, is not used). */
GP_VECTORIZE static void shrink_fused(struct gp_robust *r,
				      const struct gp_robust_update *u,
				      double lambda, double da, double db,
				      double beta_k, size_t x0, size_t n)
{
	float *restrict c = r->centre, *restrict a = u->a, *restrict b = u->b;
	float inv = (float)(1.0 / da), bk = (float)beta_k, bk_rest = 1 - bk,
	      l = (float)lambda, ka = (float)((1 - lambda) * da),
	      kb = (float)((1 - lambda) * db);

	if (b)
		for (size_t x = x0; x < n; x++)
			b[x] = l * b[x] + kb * c[x];
	for (size_t x = x0; x < n; x++) {
		float c0 = c[x];

		a[x] = l * a[x] + ka * c0;
		c[x] = bk * c0 + bk_rest * (a[x] * inv);
	}
}

/* ---- the passes, one task per range on the pool (from GP_PAR_MIN
 * values, par.h) ---- */

struct pass {
	struct gp_robust *r;
	float *m;
	const struct gp_robust_update *u;
	double da, db, lambda, beta_k;
	bool first, fuse;
};

static size_t range_end(size_t n, size_t k)
{
	return n - k * RANGE < RANGE ? n : (k + 1) * RANGE;
}

/* |a|^2 and |b|^2 of range k. */
static void squares_task(void *arg, size_t k)
{
	struct pass *ps = arg;
	const struct gp_robust_update *u = ps->u;
	size_t x = k * RANGE, end = range_end(u->n, k);

	ps->r->part[2 * k] = squares_range(u->a + x, end - x);
	ps->r->part[2 * k + 1] = u->b ? squares_range(u->b + x, end - x) : 0;
}

static void measure_task(void *arg, size_t k)
{
	struct pass *ps = arg;
	struct sums s = measure(ps->r, ps->m, ps->first, ps->u, ps->da,
				ps->fuse, ps->beta_k, k * RANGE,
				range_end(ps->u->n, k));

	ps->r->part[2 * k] = s.dg;
	ps->r->part[2 * k + 1] = s.dm;
}

static void shrink_task(void *arg, size_t k)
{
	struct pass *ps = arg;
	size_t x = k * RANGE, end = range_end(ps->u->n, k);

	if (ps->fuse)
		shrink_fused(ps->r, ps->u, ps->lambda, ps->da, ps->db,
			     ps->beta_k, x, end);
	else
		shrink(ps->r, ps->u, ps->lambda, ps->da, ps->db, ps->beta_k,
		       x, end);
}

/* Runs task over every range; *ret_a and *ret_b: the ranges' two results
 * (r->part) added in range order. */
static void for_ranges(struct pass *ps, void (*task)(void *, size_t),
		       double *ret_a, double *ret_b)
{
	size_t n = ps->u->n, k = (n + RANGE - 1) / RANGE;

	gp_par_for(n >= GP_PAR_MIN ? ps->r->par : NULL, k, task, ps);
	if (!ret_a)
		return;
	*ret_a = *ret_b = 0;
	for (size_t i = 0; i < k; i++) {
		*ret_a += ps->r->part[2 * i];
		*ret_b += ps->r->part[2 * i + 1];
	}
}

/* Whether the window and the update's sender `who` make
 * GP_ROBUST_MEMBERS members (the sender counted once, in the window or
 * not): a newcomer's first update, or that of a member whose entries left
 * the window while it was away, is judged by the radii of the two members
 * there. Before 2026-12-07 it was applied as sent, and an attacker that
 * joined two honest members broke the model with two updates just under
 * the norm limit before any radius held. */
static bool enough_members(const struct gp_robust *r, uint64_t who)
{
	uint64_t seen[GP_ROBUST_MEMBERS];
	uint32_t n = 1;

	seen[0] = who;
	for (uint32_t i = 0; i < r->ring_len && n < GP_ROBUST_MEMBERS; i++) {
		bool known = false;

		for (uint32_t j = 0; j < n; j++)
			known |= seen[j] == r->ring_who[i];
		if (!known)
			seen[n++] = r->ring_who[i];
	}
	return n >= GP_ROBUST_MEMBERS;
}

static void push(struct gp_robust *r, uint64_t who, double dg, double dm)
{
	r->ring_g[r->ring_pos] = dg;
	r->ring_m[r->ring_pos] = dm;
	r->ring_who[r->ring_pos] = who;
	r->ring_pos = (r->ring_pos + 1) % GP_ROBUST_WINDOW;
	if (r->ring_len < GP_ROBUST_WINDOW)
		r->ring_len++;
}

/* The weight of the past in the centre's average at u, from `who`
 * (beta_k): 0 for the pool's first update, 1 (the centre left alone) for
 * one that is not pushed into the window (zeros), else beta^(k /
 * members), and the centre weighs members, not updates: a member with
 * more than its share of the window (u's entry counted, as push() will
 * leave it) moves it less, one with less more (at most 4 times). */
static double centre_weight(const struct gp_robust *r,
			    const struct gp_robust_update *u, bool first,
			    bool pushed)
{
	uint32_t mine = 1, len = r->ring_len;
	double beta_k, share, f;

	if (first)
		return 0;
	if (!pushed)
		return 1;
	beta_k = pow(r->beta, (double)u->k / (u->members ? u->members : 1));
	if (!(beta_k < 1))
		return beta_k;
	for (uint32_t i = 0; i < r->ring_len; i++)
		mine += r->ring_who[i] == u->who;
	/* push() overwrites the oldest entry of a full window. */
	if (len == GP_ROBUST_WINDOW)
		mine -= r->ring_who[r->ring_pos] == u->who;
	else
		len++;
	share = (double)mine / len;
	f = 1.0 / ((u->members ? u->members : 1) * share);
	f = f > 4 ? 4 : f;
	beta_k = 1 - (1 - beta_k) * f;
	return beta_k < 0 ? 0 : beta_k;
}

int gp_robust_filter(struct gp_robust *r, struct gp_robust_agent *agent,
		     const struct gp_robust_update *u,
		     struct gp_robust_result *ret)
{
	uint64_t t0 = thread_ns();
	double da, db, keff, lambda = 1, norm, beta_k, aa, bb;
	bool first = !r->centre, pushed, fuse;
	struct sums s;
	struct pass ps = { .r = r, .u = u };
	int rc = 0;

	*ret = (struct gp_robust_result){ .weight = 1, .skipped = true,
					   .centre_weight = 1 };
	if (!(r->clip > 0) || u->n == 0 || u->k == 0)
		return 0;
	if (!r->centre) {
		r->centre = calloc(u->n, sizeof(float));
		r->n = u->n;
	}
	if (!r->part)
		r->part = calloc(2 * ((r->n + RANGE - 1) / RANGE),
				 sizeof(double));
	if (!agent->momentum)
		agent->momentum = calloc(u->n, sizeof(float));
	if (!r->centre || !r->part || !agent->momentum || r->n != u->n) {
		rc = -ENOMEM;
		goto out;
	}
	weights(u, &da, &db, &keff);
	if (u->sq_known) {
		aa = u->sq_a;
		bb = u->b ? u->sq_b : 0;
	} else {
		/* gp_robust_sum_squares' own sums, range by range. */
		for_ranges(&ps, squares_task, &aa, &bb);
	}
	/* The optimiser's own norm check (params.c): leave to it what it
	 * refuses, so that the refusal is judged on what was sent. The
	 * norms here may come from elsewhere (the payload: sq_known) and
	 * differ from params.c's in the last digits: only what is surely
	 * over the limit is left, else an update sent at the limit could
	 * pass both unfiltered. */
	norm = sqrt(aa > bb ? aa : bb) / da;
	if (!isfinite(norm) ||
	    (u->reject_norm > 0 && norm > u->reject_norm * (1 + 1e-5)))
		goto out;
	/* The centre's weight for this update is known before the pass
	 * (centre_weight()): the pass also averages it in, into
	 * centre_next, which takes the centre's place unless the update is
	 * shrunk. */
	pushed = !first && aa > 0;
	beta_k = centre_weight(r, u, first, pushed);
	fuse = beta_k < 1;
	if (fuse && !r->centre_next &&
	    !(r->centre_next = malloc(u->n * sizeof(float))))
		fuse = false;
	ps.m = agent->momentum;
	ps.first = agent->run == 0;
	ps.fuse = fuse;
	ps.da = da;
	ps.db = db;
	ps.beta_k = beta_k;
	for_ranges(&ps, measure_task, &s.dg, &s.dm);
	if (!isfinite(s.dg) || !isfinite(s.dm)) {
		/* Out of float's range (no norm limit): skipped, and the
		 * momentum, which measure() wrote, starts anew. */
		agent->run = 0;
		goto out;
	}
	ret->skipped = false;
	ret->dev_g = sqrt(s.dg);
	ret->dev_m = sqrt(s.dm);
	if (!first && r->ring_len >= GP_ROBUST_WARMUP &&
	    enough_members(r, u->who)) {
		ret->tau_g = r->clip * quantile(r->ring_g, r->ring_who, r->ring_len) /
			     sqrt(keff);
		ret->tau_m = r->clip * quantile(r->ring_m, r->ring_who, r->ring_len);
		/* A radius of 0 is no measure of the noise: nothing shrunk. */
		if (!(ret->tau_g > 0) || !(ret->tau_m > 0))
			ret->tau_g = ret->tau_m = 0;
		else if (ret->dev_g > ret->tau_g)
			lambda = ret->tau_g / ret->dev_g;
		/* A member whose average is away from the pool's keeps the
		 * square of the ratio: its drift is no noise (honest momenta
		 * average theirs out), and half of a sign-flipped update
		 * still undoes an honest one. */
		if (ret->tau_m > 0 && ret->dev_m > ret->tau_m) {
			double q = ret->tau_m / ret->dev_m;

			if (q * q < lambda)
				lambda = q * q;
		}
	}
	/* An update of zeros (a member that computed nothing) carries no
	 * measure of the honest noise nor of the pool's direction: several
	 * such members, each with a few updates at the start (the centre
	 * still 0, their deviations 0), made the radii 0 and every honest
	 * update was replaced by the centre for an epoch
	 * (fault/hostile-members). It is shrunk like any other, and leaves
	 * the window and the centre alone. */
	if (pushed)
		push(r, u->who, ret->dev_g * sqrt(keff), ret->dev_m);
	ps.lambda = lambda;
	if (!fuse || lambda < 1) {
		for_ranges(&ps, shrink_task, NULL, NULL);
	} else {
		float *c = r->centre;

		r->centre = r->centre_next;
		r->centre_next = c;
	}
	ret->centre_weight = beta_k;
	ret->weight = lambda;
	r->updates++;
	agent->updates++;
	agent->run++;
	agent->last_at = r->updates;
	agent->weight_sum += lambda;
	if (lambda < 1) {
		r->damped++;
		agent->damped++;
	}
out:
	r->cpu_ns += thread_ns() - t0;
	return rc;
}

void gp_robust_forget(struct gp_robust *r, uint64_t who)
{
	double g[GP_ROBUST_WINDOW], m[GP_ROBUST_WINDOW];
	uint64_t w[GP_ROBUST_WINDOW];
	uint32_t first = r->ring_len < GP_ROBUST_WINDOW ? 0 : r->ring_pos;
	uint32_t k = 0;

	/* Oldest first, as push() left them. */
	for (uint32_t i = 0; i < r->ring_len; i++) {
		uint32_t at = (first + i) % GP_ROBUST_WINDOW;

		if (r->ring_who[at] == who)
			continue;
		g[k] = r->ring_g[at];
		m[k] = r->ring_m[at];
		w[k++] = r->ring_who[at];
	}
	memcpy(r->ring_g, g, k * sizeof(g[0]));
	memcpy(r->ring_m, m, k * sizeof(m[0]));
	memcpy(r->ring_who, w, k * sizeof(w[0]));
	r->ring_len = k;
	r->ring_pos = k % GP_ROBUST_WINDOW;
}

void gp_robust_agent_finish(struct gp_robust_agent *agent)
{
	free(agent->momentum);
	agent->momentum = NULL;
	agent->run = 0;
}

uint64_t gp_robust_idle_limit(const struct gp_robust *r)
{
	uint64_t limit = GP_ROBUST_IDLE_UPDATES;

	if (r->n > 0 && GP_ROBUST_MOMENTA_BYTES / (r->n * sizeof(float)) < limit)
		limit = GP_ROBUST_MOMENTA_BYTES / (r->n * sizeof(float));
	return limit < GP_ROBUST_WINDOW ? GP_ROBUST_WINDOW : limit;
}

void gp_robust_agent_trim(const struct gp_robust *r,
			  struct gp_robust_agent *agent)
{
	if (agent->momentum &&
	    r->updates - agent->last_at > gp_robust_idle_limit(r))
		gp_robust_agent_finish(agent);
}

void gp_robust_finish(struct gp_robust *r)
{
	free(r->centre);
	free(r->centre_next);
	free(r->part);
	r->centre = r->centre_next = NULL;
	r->part = NULL;
}
