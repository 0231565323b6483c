/* Verification by recomputation: see verify.h. The hooks run on the loop
 * thread; one recomputation at a time runs on the libuv thread pool, with
 * its own CPU model, and reports back on the loop thread. */
#include "verify.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "backend.h"
#include "data.h"
#include "gp-vectorize.h"
#include "ledger.h"
#include "log.h"
#include "members.h"
#include "model.h"
#include "pool.h"
#include "recompute.h"
#include "robust.h"
#include "util.h"
#include "verify-impl.h"

uint64_t gp_verify_thread_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t gp_verify_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

bool gp_verify_draw(uint64_t *state, double rate)
{
	return (double)(gp_verify_next(state) >> 11) * 0x1.0p-53 < rate;
}

double gp_verify_allowance(uint8_t dtype, double sent, double prev)
{
	switch (dtype) {
	case GP_DTYPE_Q8:
		return Q8_BOUND * (sent + prev);
	case GP_DTYPE_Q4:
		return Q4_BOUND * (sent + prev);
	case GP_DTYPE_F16:
		/* Plus f16's smallest step for values rounded to zero. */
		return F16_BOUND * sent + 1e-7;
	default:
		return 0;
	}
}

bool gp_verify_pass(double residual, double norm_x, double q,
		    double tolerance)
{
	return isfinite(residual) && residual <= q + tolerance * norm_x + 1e-12;
}

/* A record for an agent that has none; NULL when out of memory. */
struct record *gp_verify_record_add(struct gp_verify *v, int64_t agent_id)
{
	struct record *rec = calloc(1, sizeof(*rec));

	if (!rec)
		return NULL;
	rec->agent_id = agent_id;
	rec->last_step = v->steps;
	rec->next = v->records;
	v->records = rec;
	return rec;
}

static void suspect(struct gp_verify *v, struct record *rec)
{
	if (!rec->suspect)
		v->suspects++;
	rec->suspect = SUSPECT_CHECKS;
}

/* The members' mismatches on record: counted against verify_bans as
 * this run's, and each such member suspect until it passes checks. */
static int restore(struct gp_verify *v)
{
	struct gp_ledger_mismatches *rows = NULL;
	size_t n = 0;
	int r = gp_ledger_trust_mismatches(v->env.ledger, &rows, &n);

	for (size_t i = 0; r == 0 && i < n; i++) {
		struct record *rec = gp_verify_record_add(v, rows[i].agent_id);

		if (!rec) {
			r = -ENOMEM;
			break;
		}
		rec->mismatches = rows[i].mismatched > UINT32_MAX ?
					  UINT32_MAX :
					  (uint32_t)rows[i].mismatched;
		suspect(v, rec);
	}
	if (r == 0 && n)
		gp_info("verification: %zu member(s) with mismatches on record, "
			"all their clocks checked until each passes %d",
			n, SUSPECT_CHECKS);
	free(rows);
	return r;
}

int gp_verify_create(struct gp_pool *pool, const struct gp_verify_env *env,
		     uint64_t seed, struct gp_verify **ret)
{
	struct gp_verify *v = calloc(1, sizeof(*v));
	size_t n = pool->n_params;
	int r;

	if (!v)
		return -ENOMEM;
	v->pool = pool;
	v->env = *env;
	v->kept_max = env->kept_bytes ? env->kept_bytes : GP_VERIFY_KEPT_BYTES;
	v->rng = seed;
	v->M = 1;
	v->w_old = malloc(n * sizeof(float));
	v->v_old = malloc(n * sizeof(float));
	if (!v->w_old || !v->v_old) {
		gp_verify_destroy(v);
		return -ENOMEM;
	}
	if (env->ledger && (r = restore(v)) < 0) {
		gp_verify_destroy(v);
		return r;
	}
	*ret = v;
	return 0;
}

void gp_verify_check_free(struct check *c)
{
	if (!c)
		return;
	free(c->idx);
	gp_verify_floats_put(c->v, c->w0);
	gp_verify_floats_put(c->v, c->v0);
	gp_verify_floats_put(c->v, c->a);
	gp_verify_floats_put(c->v, c->b);
	gp_verify_floats_put(c->v, c->da);
	gp_verify_floats_put(c->v, c->db);
	free(c);
}

void gp_verify_destroy(struct gp_verify *v)
{
	if (!v)
		return;
	while (v->records) {
		struct record *r = v->records;

		v->records = r->next;
		gp_verify_record_free(v, r);
	}
	while (v->queue) {
		struct check *c = v->queue;

		v->queue = c->next;
		gp_verify_check_free(c);
	}
	gp_verify_check_free(v->pending);
	gp_verify_delegated_free(v);
	gp_model_destroy(v->model);
	gp_backend_destroy(v->be);
	gp_verify_share_free(v);
	free(v->x);
	free(v->y);
	free(v->rx);
	free(v->ry);
	for (int i = 0; i < RAW_SPARES; i++)
		free(v->spare[i].p);
	free(v->w_old);
	free(v->v_old);
	free(v);
}

/* m's verified work no longer counts (a mismatch, or it left): it checks
 * only members whose work verified until its own does again. */
void gp_verify_unqualify(struct gp_verify *v, struct gp_member *m)
{
	if (m->verify.verified && (m->caps & GP_CAP_VERIFY))
		v->qualified--;
	m->verify.verified = 0;
}

bool gp_verify_busy(const struct gp_verify *v)
{
	return v && (v->running || v->queued || v->n_delegated ||
		     v->n_waiting);
}

void gp_verify_get_stats(const struct gp_verify *v,
			 struct gp_verify_stats *ret)
{
	*ret = v->st;
}

struct record *gp_verify_record(struct gp_verify *v, int64_t agent_id)
{
	for (struct record *r = v->records; r; r = r->next)
		if (r->agent_id == agent_id)
			return r;
	return NULL;
}

/* rec's updates can no longer be judged (its member left or idles): its
 * stretches go; the record itself stays while it counts a mismatch
 * (its few bytes hold verify_bans and the suspicion across reconnects). */
static void record_retire(struct gp_verify *v, struct record *rec)
{
	gp_verify_drop_segs(v, rec);
	if (rec->mismatches)
		return;
	for (struct record **pp = &v->records; *pp; pp = &(*pp)->next) {
		if (*pp == rec) {
			*pp = rec->next;
			gp_verify_record_free(v, rec);
			return;
		}
	}
}

static float *rounded_copy(struct gp_verify *v, const float *src, size_t n,
			   uint8_t dtype)
{
	float *dst = gp_verify_floats(v);

	if (!dst)
		return NULL;
	if (dtype == GP_DTYPE_F16)
		gp_msg_f16_round(src, dst, n);
	else
		memcpy(dst, src, n * sizeof(float));
	return dst;
}

/* Whether m's first update of a clock can be recomputed from the pull:
 * a delta of local AdamW steps (GP_CAP_INNER_ADAMW) depends on the
 * agent's own moments, which never travel: it cannot be recomputed at all
 * (docs/security.md "Verification"). A group with momentum needs the
 * momentum sent with it; members.c agree_caps grants no groups without
 * it while updates are checked, so that case is only a guard here (a
 * check of such a group would strike an honest member). */
static bool checkable(const struct gp_pool *pool, const struct gp_member *m)
{
	bool momentum = pool->job->optimizer == GP_OPT_SGD_MOMENTUM &&
			pool->job->momentum > 0;

	if (m->caps & GP_CAP_INNER_ADAMW)
		return false;
	return !(momentum && (m->caps & GP_CAP_SUMS) &&
		 !(m->caps & GP_CAP_MOMENTUM));
}

static void snap_drop(struct gp_verify *v, struct gp_verify_member *vm,
		      int i)
{
	gp_verify_floats_put(v, vm->snap[i].w);
	gp_verify_floats_put(v, vm->snap[i].v);
	vm->snap[i].w = NULL;
	vm->snap[i].v = NULL;
}

double gp_verify_pick_rate(double rate, uint32_t steps, bool probation)
{
	double p = rate;

	if (steps < GP_VERIFY_CLOCK_STEPS) {
		p = rate * GP_VERIFY_CLOCK_STEPS / (steps ? steps : 1);
		if (probation && p < rate * GP_VERIFY_PROBATION)
			p = rate * GP_VERIFY_PROBATION;
	}
	return p < 1 ? p : 1;
}

/* Whether m's `clock` may be picked at all, its snapshot slots tidied:
 * a free slot, no pick of that clock already, a checkable member. */
static bool pickable(struct gp_pool *pool, struct gp_member *m,
		     int64_t clock)
{
	struct gp_verify_member *vm = &m->verify;
	int free_slot = -1;

	/* Copies of clocks the member has moved past were never answered
	 * (their work was taken back): nothing will come for them. */
	for (int i = 0; i < 2; i++) {
		if (vm->snap[i].w && vm->snap[i].clock < m->clock)
			snap_drop(pool->verify, vm, i);
		if (!vm->snap[i].w && free_slot < 0)
			free_slot = i;
		/* A second pull for a clock already picked: its first
		 * update comes from the first copy. */
		if (vm->snap[i].w && vm->snap[i].clock == clock)
			return false;
	}
	return free_slot >= 0 && checkable(pool, m);
}

/* The draw: a suspect's clocks are all checked; the records are looked
 * at only while there is one (a pool of thousands pulls often). */
static bool draw(struct gp_pool *pool, const struct gp_member *m,
		 uint32_t steps)
{
	struct gp_verify *v = pool->verify;

	return (v->suspects && gp_verify_suspect(v, m->agent_id)) ||
	       gp_verify_draw(&v->rng,
			      gp_verify_pick_rate(pool->job->verify_rate, steps,
						  m->verify.verified == 0));
}

bool gp_verify_pick(struct gp_pool *pool, struct gp_member *m,
		    int64_t clock, uint32_t steps)
{
	struct gp_verify_member *vm = &m->verify;
	bool deferred = vm->deferred && vm->deferred_clock == clock;

	if (!pool->verify)
		return false;
	/* Work still on its way was computed from the copy before this
	 * pull: a pull that replaces the copy loses the agent's own updates
	 * from it (gp_verify_defer() holds such a clock back instead); and
	 * of the same clock, its update would arrive first and be compared
	 * with this one, a false mismatch (the pull before a clock's second
	 * run, pipelined: serve_run). */
	if (m->clock_open > 0 || m->next_open > 0)
		return false;
	vm->deferred = false;
	if (!pickable(pool, m, clock) || (!deferred && !draw(pool, m, steps)))
		return false;
	pool->verify->st.picked++;
	return true;
}

bool gp_verify_defer(struct gp_pool *pool, struct gp_member *m,
		     int64_t clock, uint32_t steps)
{
	struct gp_verify_member *vm = &m->verify;

	if (!pool->verify)
		return false;
	if (vm->deferred && vm->deferred_clock == clock)
		return true;
	vm->deferred = pickable(pool, m, clock) && draw(pool, m, steps);
	vm->deferred_clock = clock;
	return vm->deferred;
}

void gp_verify_unpick(struct gp_pool *pool)
{
	if (pool->verify && pool->verify->st.picked > 0)
		pool->verify->st.picked--;
}

void gp_verify_sent(struct gp_pool *pool, struct gp_member *m, int64_t clock)
{
	struct gp_verify_member *vm = &m->verify;
	const struct gp_params *p = pool->params;
	size_t n = pool->n_params;
	uint8_t dt = (m->caps & GP_CAP_F16) ? GP_DTYPE_F16 : GP_DTYPE_F32;
	int i = vm->snap[0].w ? 1 : 0;
	uint64_t t0;

	if (!pool->verify || vm->snap[i].w)
		return;
	t0 = gp_verify_thread_ns();
	vm->snap[i].w = rounded_copy(pool->verify, gp_params_values(p), n, dt);
	if (m->caps & GP_CAP_MOMENTUM) {
		vm->snap[i].v = rounded_copy(pool->verify,
					     gp_params_momentum(p), n, dt);
		for (size_t s = 0; vm->snap[i].v && (m->caps & GP_CAP_Q8) &&
				   s < gp_params_shard_count(p); s++) {
			struct gp_params_shard sh;

			gp_params_shard(p, s, &sh);
			gp_msg_q8_round(gp_params_shard_momentum(p, s),
					vm->snap[i].v + sh.offset, sh.count);
		}
	} else {
		/* What the agent holds is its own: only an update that does
		 * not read it (checkable()) is picked. */
		vm->snap[i].v = gp_verify_floats(pool->verify);
		if (vm->snap[i].v)
			memset(vm->snap[i].v, 0, n * sizeof(float));
	}
	if (!vm->snap[i].w || !vm->snap[i].v) {
		snap_drop(pool->verify, vm, i);
		pool->verify->st.skipped++;
	} else {
		vm->snap[i].clock = clock;
	}
	pool->verify->st.cpu_ns += gp_verify_thread_ns() - t0;
}

/* |x|^2 of the set of blocks u->blocks[from..from + count) decoded into
 * x[0..n): from the payload where each block is q8 or q4 (a quarter of
 * the bytes or less), else from x. */
static double sent_sq(const struct gp_msg_update *u, size_t from,
		      size_t count, const float *x, size_t n)
{
	double total = 0;

	for (size_t k = from; k < from + count && k < u->n_blocks; k++) {
		double sq = gp_msg_block_sum_squares(&u->blocks[k]);

		if (sq < 0)
			return gp_robust_sum_squares(x, n);
		total += sq;
	}
	return total;
}

bool gp_verify_received(struct gp_pool *pool, struct gp_member *m,
			const struct gp_msg_update *u, const uint64_t *ids,
			size_t k, double ret_sq[2])
{
	struct gp_verify *v = pool->verify;
	struct gp_verify_member *vm = &m->verify;
	size_t n = pool->n_params, nt = gp_params_tensor_count(pool->params);
	bool sums = u->form == GP_UPDATE_SUMS;
	double na, nb = 0, pa, pb;
	uint64_t t0;
	struct check *c;
	int slot = -1;

	if (!v)
		return false;
	t0 = gp_verify_thread_ns();
	v->received = m;
	ret_sq[0] = sent_sq(u, 0, nt, pool->grad, n);
	ret_sq[1] = sums ? sent_sq(u, nt, nt, pool->grad_b, n) : 0;
	na = sqrt(ret_sq[0]);
	nb = sqrt(ret_sq[1]);
	/* The error an update carries in is its predecessor's; when one was
	 * never decoded, the largest seen stands for it. */
	pa = vm->prev_unknown ? vm->max_a : vm->prev_a;
	pb = vm->prev_unknown ? vm->max_b : vm->prev_b;
	vm->prev_a = na;
	vm->max_a = fmax(vm->max_a, na);
	if (sums) {
		vm->prev_b = nb;
		vm->max_b = fmax(vm->max_b, nb);
	}
	vm->prev_unknown = false;
	for (int i = 0; i < 2; i++)
		if (vm->snap[i].w && vm->snap[i].clock == (int64_t)u->clock)
			slot = i;
	if (slot < 0)
		goto out;
	/* A member without local steps computed every minibatch of the
	 * clock on this one copy: the update checked is drawn among the
	 * clock's (this one with its share of the minibatches still open,
	 * so each as likely), not always the first, else one that cheats
	 * on its later updates only would never be found. The copy waits
	 * for the next one. */
	if (!(m->caps & GP_CAP_LOCAL_STEP) && m->clock_open > k &&
	    !gp_verify_draw(&v->rng, (double)k / (double)m->clock_open))
		goto out;
	c = calloc(1, sizeof(*c));
	if (c) {
		size_t total = 0;

		c->v = v;
		c->agent_id = m->agent_id;
		c->caps = m->caps;
		c->clock = (int64_t)u->clock;
		c->sums = sums;
		c->k = (uint32_t)k;
		c->mu = pool->job->optimizer == GP_OPT_SGD_MOMENTUM ?
				(float)pool->job->momentum : 0.0f;
		for (size_t i = 0; i < k; i++) {
			c->ids[i] = ids[i];
			c->lrs[i] = (float)gp_pool_lr_at(pool, ids[i]);
			c->n_samples[i] =
				gp_sched_minibatch_samples(pool->sched, ids[i]);
			total += c->n_samples[i];
		}
		c->idx = malloc((total ? total : 1) * sizeof(uint32_t));
		c->a = gp_verify_floats(v);
		c->b = sums ? gp_verify_floats(v) : NULL;
		total = 0;
		for (size_t i = 0; c->idx && i < k; i++) {
			size_t got = 0;

			if (gp_sched_samples(pool->sched, ids[i], c->idx + total,
					     c->n_samples[i], &got) < 0 ||
			    got != c->n_samples[i]) {
				free(c->idx);
				c->idx = NULL;
			}
			total += c->n_samples[i];
		}
		if (c->idx && c->a && (!sums || c->b)) {
			memcpy(c->a, pool->grad, n * sizeof(float));
			if (sums)
				memcpy(c->b, pool->grad_b, n * sizeof(float));
			c->q_a = gp_verify_allowance(u->blocks[0].dtype, na, pa);
			if (sums)
				c->q_b = gp_verify_allowance(u->blocks[nt].dtype,
							     nb, pb);
			c->w0 = vm->snap[slot].w;
			c->v0 = vm->snap[slot].v;
			vm->snap[slot].w = NULL;
			vm->snap[slot].v = NULL;
		} else {
			gp_verify_check_free(c);
			c = NULL;
		}
	}
	if (!c)
		v->st.skipped++;
	snap_drop(v, vm, slot);
	gp_verify_check_free(v->pending);
	v->pending = c;
out:
	v->st.cpu_ns += gp_verify_thread_ns() - t0;
	return true;
}

void gp_verify_before_step(struct gp_pool *pool, bool linear)
{
	struct gp_verify *v = pool->verify;
	size_t n = pool->n_params;
	uint64_t t0;

	if (!v)
		return;
	t0 = gp_verify_thread_ns();
	v->copied = !linear;
	if (!linear) {
		memcpy(v->w_old, gp_params_values(pool->params),
		       n * sizeof(float));
		memcpy(v->v_old, gp_params_momentum(pool->params),
		       n * sizeof(float));
	}
	v->stepping = true;
	v->st.cpu_ns += gp_verify_thread_ns() - t0;
}

static void check_run(uv_work_t *req);
static void check_done(uv_work_t *req, int status);

static void start_next(struct gp_verify *v)
{
	struct check *c = v->queue;

	if (v->running || !c)
		return;
	v->queue = c->next;
	if (!v->queue)
		v->queue_tail = NULL;
	v->queued--;
	c->req.data = c;
	v->running = true;
	if (uv_queue_work(v->env.loop, &c->req, check_run, check_done) < 0) {
		v->running = false;
		c->err = -EIO;
		check_done(&c->req, -EIO);
	}
}

/* |sent - x| and |x|. */
GP_VECTORIZE static void residual(const float *restrict sent,
				  const float *restrict x, size_t n,
				  double *ret_res, double *ret_x)
{
	double d = 0, s = 0;
	size_t i = 0;

	/* Sixteen float sums over runs of 256 values, each run's added in
	 * double (as gp_robust_sum_squares does within each of its ranges);
	 * in double where a float square overflows. */
	while (i < n) {
		float dl[16] = { 0 }, sl[16] = { 0 };
		size_t end = n - i > 256 ? i + 256 : n;

		for (; i + 16 <= end; i += 16)
			for (size_t j = 0; j < 16; j++) {
				float e = sent[i + j] - x[i + j];

				dl[j] += e * e;
				sl[j] += x[i + j] * x[i + j];
			}
		for (; i < end; i++) {
			float e = sent[i] - x[i];

			dl[0] += e * e;
			sl[0] += x[i] * x[i];
		}
		for (size_t j = 0; j < 16; j++) {
			d += dl[j];
			s += sl[j];
		}
	}
	if (!isfinite(d) || !isfinite(s)) {
		d = s = 0;
		for (i = 0; i < n; i++) {
			double e = (double)sent[i] - x[i];

			d += e * e;
			s += (double)x[i] * x[i];
		}
	}
	*ret_res = sqrt(d);
	*ret_x = sqrt(s);
}

bool gp_verify_compare(const float *a, const float *b, const float *xa,
		       const float *xb, size_t n, double q_a, double q_b,
		       double rel, double tol, double res[2], double x[2])
{
	bool pass;

	residual(a, xa, n, &res[0], &x[0]);
	pass = gp_verify_pass(res[0], x[0], q_a + rel * x[0], tol);
	res[1] = x[1] = 0;
	if (b) {
		residual(b, xb, n, &res[1], &x[1]);
		pass = pass && gp_verify_pass(res[1], x[1], q_b + rel * x[1],
					      tol);
	}
	return pass;
}

bool gp_verify_room(const struct gp_verify *v)
{
	return v->queued < MAX_QUEUED;
}

void gp_verify_run_here(struct gp_verify *v, struct check *c)
{
	c->next = NULL;
	if (v->queue_tail)
		v->queue_tail->next = c;
	else
		v->queue = c;
	v->queue_tail = c;
	v->queued++;
	start_next(v);
}

void gp_verify_refused(struct gp_pool *pool, struct gp_member *m,
		       const struct gp_msg_update *u, bool own)
{
	struct gp_verify *v = pool->verify;
	struct gp_verify_member *vm = &m->verify;

	if (!v)
		return;
	if (v->received != m)
		vm->prev_unknown = true;
	v->received = NULL;
	v->stepping = false;
	if (v->pending && v->pending->agent_id == m->agent_id) {
		gp_verify_check_free(v->pending);
		v->pending = NULL;
	}
	/* A member with local steps computed its next update of the clock
	 * from a copy this refused one stepped: the copy is of no use. Not
	 * so when the refused update held none of its own work of the clock
	 * (a duplicate of someone's applied minibatch, one never assigned:
	 * nothing an honest agent computes), nor for a member without local
	 * steps, whose later updates of the clock all come from the copy;
	 * else a member could drop every copy with a free refused update
	 * and never be checked. */
	if (!own || !(m->caps & GP_CAP_LOCAL_STEP))
		return;
	for (int i = 0; i < 2; i++)
		if (vm->snap[i].w && vm->snap[i].clock == (int64_t)u->clock)
			snap_drop(v, vm, i);
}

void gp_verify_member_finish(struct gp_pool *pool, struct gp_member *m)
{
	struct gp_verify *v = pool->verify;
	struct record *rec;

	snap_drop(v, &m->verify, 0);
	snap_drop(v, &m->verify, 1);
	if (!v || !m->agent_id)
		return;
	gp_verify_unqualify(v, m);
	gp_verify_member_left(v, m);
	if (v->received == m)
		v->received = NULL;
	rec = gp_verify_record(v, m->agent_id);
	if (!rec)
		return;
	/* A check still running may need what it applied; without one, its
	 * updates can no longer be judged. */
	if (rec->checks)
		rec->gone = true;
	else
		record_retire(v, rec);
}

/* ---- the recomputation, on the thread pool ----------------------------- */

/* Computes the update as the agent does (agent/worker.c, through the same
 * kernels/recompute.c): one gradient, or a group's local steps and its two
 * sums from the copy's change. */
static int recompute(struct gp_verify *v, struct check *c, float *xa,
		     float *xb)
{
	const struct gp_verify_env *env = &v->env;
	uint32_t per = gp_sched_minibatches(v->pool->sched);
	struct gp_recompute_item items[GP_MSG_GROUP_MAX];
	size_t at = 0;
	int r;

	if (!v->model) {
		r = gp_backend_create_cpu(1, &v->be);
		if (r >= 0)
			r = gp_model_create(v->be, env->spec, env->batch_size,
					    &v->model);
		if (r < 0)
			return r;
		/* A window's ids as floats and its next ids as labels, or an
		 * image's pixels and its label. */
		v->x = malloc((size_t)env->batch_size *
			      (env->train_tok ? env->spec->dims[0] :
					        env->train->features) *
			      sizeof(float));
		v->y = malloc((size_t)env->batch_size *
			      gp_model_spec_labels(env->spec) *
			      sizeof(int32_t));
		if (!v->x || !v->y)
			return -ENOMEM;
	}
	for (uint32_t j = 0; j < c->k; j++) {
		items[j] = (struct gp_recompute_item){
			.epoch = (uint32_t)(c->ids[j] / per),
			.minibatch = c->ids[j] % per,
			.lr = c->lrs[j],
			.samples = c->n_samples[j],
			.idx = c->idx + at,
		};
		at += c->n_samples[j];
	}
	return gp_recompute(v->model, &(struct gp_recompute_data){
				    .train = env->train,
				    .tok = env->train_tok,
				    .len = env->spec->dims[0] },
			    env->job_seed, c->sums,
			    c->mu, items, c->k, c->w0, c->v0, v->x, v->y, xa,
			    xb);
}

static void check_run(uv_work_t *req)
{
	struct check *c = req->data;
	struct gp_verify *v = c->v;
	size_t n = v->pool->n_params;
	double tol = v->pool->job->verify_tolerance;
	uint64_t t0 = gp_verify_thread_ns();
	float *xa = malloc(n * sizeof(float));
	float *xb = malloc(n * sizeof(float));

	c->err = xa && xb ? recompute(v, c, xa, xb) : -ENOMEM;
	if (c->err >= 0) {
		double res[2], x[2];

		c->pass = gp_verify_compare(c->a, c->sums ? c->b : NULL, xa,
					    xb, n, c->q_a, c->q_b, 0, tol, res,
					    x);
		c->res_a = res[0];
		c->res_b = res[1];
		c->x_a = x[0];
		c->x_b = x[1];
		/* The answer another member gave for it, judged the same
		 * way (its own rounding, f16 or none, in place of the
		 * wire's). */
		if (c->da) {
			c->d_pass = gp_verify_compare(c->da, c->db, xa, xb, n,
						      0, 0, c->d_round, tol,
						      res, x);
			c->d_res = fmax(res[0], res[1]);
			c->d_x = x[0];
		}
	}
	free(xa);
	free(xb);
	c->ns = gp_verify_thread_ns() - t0;
}

void gp_verify_log_summary(const struct gp_verify *v)
{
	if (!v)
		return;
	gp_info("verification: %" PRIu64 " clock(s) picked, %" PRIu64
		" update(s) checked: %" PRIu64 " verified, %" PRIu64
		" mismatched, %" PRIu64 " skipped; %" PRIu64 " minibatch(es) "
		"rolled back (%" PRIu64 " not redone), %" PRIu64 " member(s) "
		"revoked; largest passing residual %.3f of its allowance; "
		"%.3f s CPU (%.3f s recomputing); %" PRIu64 " handed to "
		"members: %" PRIu64 " given back, %" PRIu64 " audited, %" PRIu64
		" disagreed, %" PRIu64 " answered wrong; %" PRIu64 " take-back(s) "
		"of part of the effect", v->st.picked,
		v->st.checked, v->st.verified, v->st.mismatched, v->st.skipped,
		v->st.rolled_back, v->st.lost, v->st.banned,
		v->st.worst_honest, (double)v->st.cpu_ns / 1e9,
		(double)v->st.recompute_ns / 1e9, v->st.delegated,
		v->st.delegate_failed, v->st.audited, v->st.disagreed,
		v->st.checker_mismatched, v->st.taken_in_part);
}

uint32_t gp_verify_note_mismatch(struct gp_verify *v, int64_t agent_id)
{
	struct record *rec = gp_verify_record(v, agent_id);

	if (!rec && !(rec = gp_verify_record_add(v, agent_id)))
		return 0;
	suspect(v, rec);
	return ++rec->mismatches;
}

bool gp_verify_suspect(const struct gp_verify *v, int64_t agent_id)
{
	for (const struct record *r = v->records; r; r = r->next)
		if (r->agent_id == agent_id)
			return r->suspect > 0;
	return false;
}

void gp_verify_checker_mismatch(struct gp_verify *v, const struct check *c,
				double res, double norm_x)
{
	struct record *rec = gp_verify_record(v, c->delegate_id);
	char what[200];

	if (!rec && !(rec = gp_verify_record_add(v, c->delegate_id))) {
		gp_error("verification: out of memory; agent %" PRId64 "'s "
			 "wrong check is not counted", c->delegate_id);
		return;
	}
	char brief[64];

	v->st.checker_mismatched++;
	snprintf(what, sizeof(what), "its recomputation of agent %" PRId64
		 "'s update of clock %" PRId64 " is wrong (|given - x| %.4g "
		 "of |x| %.4g)", c->agent_id, c->clock, res, norm_x);
	snprintf(brief, sizeof(brief), "its check of agent %" PRId64 "'s "
		 "update is wrong", c->agent_id);
	/* Its own updates are taken back too: a member that lies in a check
	 * is not trusted with what it computed. */
	gp_verify_mismatch(v, rec, UINT64_MAX, what, brief);
}

void gp_verify_passed(struct gp_verify *v, struct check *c, double res,
		      double allowed)
{
	struct record *rec = gp_verify_record(v, c->agent_id);
	struct gp_member *m = gp_members_find(v->pool, (uint64_t)c->agent_id);

	v->st.checked++;
	v->st.verified++;
	if (m && m->verify.verified++ == 0 && (m->caps & GP_CAP_VERIFY))
		v->qualified++;
	if (allowed > 0 && res / allowed > v->st.worst_honest)
		v->st.worst_honest = res / allowed;
	gp_debug("agent %" PRId64 ": clock %" PRId64 " verified%s "
		 "(|sent - x| %.3g, allowed %.3g)", c->agent_id, c->clock,
		 c->delegate_id && !c->da ? " by another member" : "", res,
		 allowed);
	if (!rec)
		return;
	gp_verify_release_upto(v, rec, c->tag);
	if (rec->suspect && --rec->suspect == 0)
		v->suspects--;
	if (v->env.ledger &&
	    gp_ledger_trust_add(v->env.ledger, c->agent_id, 1, 0, 0,
				gp_now_ms()) < 0)
		gp_error("verification: %s", gp_ledger_error(v->env.ledger));
}

void gp_verify_check_ended(struct gp_verify *v, struct check *c)
{
	struct record *rec = gp_verify_record(v, c->agent_id);

	for (struct seg *s = rec ? rec->head : NULL; s; s = s->next)
		if (s->tag == c->tag)
			s->checking = false;
	if (rec && rec->checks)
		rec->checks--;
	if (rec && rec->gone && !rec->checks)
		record_retire(v, rec);
	gp_verify_check_free(c);
	start_next(v);
	if (!gp_verify_busy(v) && v->env.idle)
		v->env.idle(v->env.ctx);
}

static void check_done(uv_work_t *req, int status)
{
	struct check *c = req->data;
	struct gp_verify *v = c->v;
	struct record *rec = gp_verify_record(v, c->agent_id);
	uint64_t t0 = gp_verify_thread_ns();

	v->running = false;
	v->st.cpu_ns += c->ns;
	v->st.recompute_ns += c->ns;
	/* A checker's wrong answer counts even when the checked member's
	 * updates can no longer be judged (it left meanwhile). */
	if (status >= 0 && c->err >= 0 && c->da && !c->d_pass)
		gp_verify_checker_mismatch(v, c, c->d_res, c->d_x);
	if (status < 0 || c->err < 0 || !rec) {
		if (c->err < 0 && c->err != -EIO)
			gp_warn("verification of agent %" PRId64 "'s update "
				"failed: %s", c->agent_id, strerror(-c->err));
		v->st.skipped++;
	} else {
		double q = c->q_a + v->pool->job->verify_tolerance * c->x_a;

		if (c->pass) {
			gp_verify_passed(v, c, c->res_a, q);
		} else {
			char what[200];

			char brief[80];

			snprintf(what, sizeof(what), "update of clock %" PRId64
				 " does not match its recomputation (|sent - x|"
				 " %.4g of |x| %.4g, allowed %.4g)", c->clock,
				 fmax(c->res_a, c->res_b), c->x_a, q);
			snprintf(brief, sizeof(brief), "update of clock %"
				 PRId64 " differs from its recomputation",
				 c->clock);
			v->st.checked++;
			v->st.mismatched++;
			gp_verify_mismatch(v, rec, c->ids[0], what, brief);
		}
	}
	v->st.cpu_ns += gp_verify_thread_ns() - t0;
	gp_verify_check_ended(v, c);
}
