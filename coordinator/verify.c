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
static struct record *record_add(struct gp_verify *v, int64_t agent_id)
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
		struct record *rec = record_add(v, rows[i].agent_id);

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

/* A buffer of at least `size` bytes: a spare one (the smallest that
 * fits), else a new one; *ret_cap its size. */
static uint8_t *bytes_get(struct gp_verify *v, size_t size, size_t *ret_cap)
{
	int best = -1;
	uint8_t *p;

	/* Not one of more than twice the size: the budget counts what a
	 * buffer holds (cap), and a small update would hold a large one. */
	for (int i = 0; i < RAW_SPARES; i++)
		if (v->spare[i].p && v->spare[i].cap >= size &&
		    v->spare[i].cap / 2 <= size &&
		    (best < 0 || v->spare[i].cap < v->spare[best].cap))
			best = i;
	if (best >= 0) {
		p = v->spare[best].p;
		*ret_cap = v->spare[best].cap;
		v->spare[best].p = NULL;
		return p;
	}
	*ret_cap = size;
	return malloc(size ? size : 1);
}

/* Keeps buffer p (of cap bytes) as a spare, in place of the smallest one
 * when all are taken, else frees it. */
static void bytes_put(struct gp_verify *v, uint8_t *p, size_t cap)
{
	uint64_t held = 0;
	int low = 0;

	if (!p)
		return;
	for (int i = 0; i < RAW_SPARES; i++)
		held += v->spare[i].p ? v->spare[i].cap : 0;
	if (held + cap > RAW_SPARES_BYTES) {
		free(p);
		return;
	}
	for (int i = 0; i < RAW_SPARES; i++) {
		if (!v->spare[i].p) {
			low = i;
			break;
		}
		if (v->spare[i].cap < v->spare[low].cap)
			low = i;
	}
	if (v->spare[low].p && v->spare[low].cap >= cap) {
		free(p);
		return;
	}
	free(v->spare[low].p);
	v->spare[low].p = p;
	v->spare[low].cap = cap;
}

float *gp_verify_floats(struct gp_verify *v)
{
	size_t cap;

	return (float *)bytes_get(v, v->pool->n_params * sizeof(float), &cap);
}

void gp_verify_floats_put(struct gp_verify *v, float *p)
{
	if (!p)
		return;
	if (!v) {
		free(p);
		return;
	}
	bytes_put(v, (uint8_t *)p, v->pool->n_params * sizeof(float));
}

static void raw_free(struct gp_verify *v, struct raw *r)
{
	v->raw_bytes -= r->size;
	free(r->blocks);
	free(r->offs);
	bytes_put(v, r->bytes, r->cap);
	free(r);
}

static void seg_free(struct gp_verify *v, struct seg *s)
{
	if (!s)
		return;
	while (s->raws) {
		struct raw *r = s->raws;

		s->raws = r->next;
		raw_free(v, r);
	}
	free(s->a);
	free(s->b);
	free(s->ids);
	free(s);
}

static void record_free(struct gp_verify *v, struct record *r)
{
	while (r->head) {
		struct seg *s = r->head;

		r->head = s->next;
		seg_free(v, s);
	}
	free(r);
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
		record_free(v, r);
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

void gp_verify_drop_segs(struct gp_verify *v, struct record *rec)
{
	while (rec->head) {
		struct seg *s = rec->head;

		rec->head = s->next;
		seg_free(v, s);
		v->segs--;
	}
	rec->tail = NULL;
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
			record_free(v, rec);
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

/* Stretch s's effect at the pool's (C, M) (verify.h): a - k1 b on the
 * parameters, k2 b on the momentum. */
void gp_verify_seg_k(const struct seg *s, double C, double M, double *k1,
		     double *k2)
{
	*k1 = (C - s->C0) / s->M0;
	*k2 = M / s->M0;
}

/* Gives s its two sums, zero, where it has none yet: a stretch whose
 * updates are all kept as they came (struct raw) never needs them.
 * Returns false when they could not be had. */
static bool seg_sums(struct seg *s, size_t n)
{
	if (s->a)
		return true;
	s->a = calloc(n, sizeof(float));
	s->b = calloc(n, sizeof(float));
	if (s->a && s->b)
		return true;
	free(s->a);
	free(s->b);
	s->a = s->b = NULL;
	return false;
}

/* Moves stretch s's base to the pool's (C, M), adding (ka x, kb y + kxa
 * x) at the same time, in one pass (x, y NULL: nothing). The sums stay of
 * the size of what they hold, so floats keep their precision: verify.h.
 * kxa: the parameters' part of a kept update's momentum since it came
 * (fold_raw()); 0 for one added as it is applied. */
GP_VECTORIZE static void seg_add(struct seg *restrict s, double C, double M,
				 const float *restrict x,
				 const float *restrict y, size_t n, float ka,
				 float kb, float kxa)
{
	float *restrict a = s->a, *restrict b = s->b;
	double d1, d2;
	float k1, k2;

	/* No sums yet (seg_sums()): nothing to move. */
	if (!a) {
		s->C0 = C;
		s->M0 = M;
		return;
	}
	/* At its base already (rebase()'s fold, with M 0 possibly, adds
	 * several kept updates at the same (C, M)): no move, not 0 / 0. */
	if (C == s->C0 && M == s->M0) {
		d1 = 0;
		d2 = 1;
	} else {
		gp_verify_seg_k(s, C, M, &d1, &d2);
	}
	k1 = (float)d1;
	k2 = (float)d2;

	if (x && kxa != 0) {
		for (size_t i = 0; i < n; i++) {
			float bi = b[i];

			a[i] = a[i] - k1 * bi + kb * y[i] + kxa * x[i];
			b[i] = k2 * bi + ka * x[i];
		}
	} else if (x) {
		for (size_t i = 0; i < n; i++) {
			float bi = b[i];

			a[i] = a[i] - k1 * bi + kb * y[i];
			b[i] = k2 * bi + ka * x[i];
		}
	} else {
		for (size_t i = 0; i < n; i++) {
			float bi = b[i];

			a[i] -= k1 * bi;
			b[i] = k2 * bi;
		}
	}
	s->C0 = C;
	s->M0 = M;
}

/* Decodes kept update r into v->rx (and v->ry for a group's b; for a
 * gradient *ret_y is v->rx). */
static int raw_decode(struct gp_verify *v, const struct raw *r, size_t n,
		      const float **ret_y)
{
	if (!v->rx)
		v->rx = malloc(n * sizeof(float));
	if (r->sums && !v->ry)
		v->ry = malloc(n * sizeof(float));
	if (!v->rx || (r->sums && !v->ry))
		return -ENOMEM;
	for (size_t k = 0; k < r->n_blocks; k++) {
		float *dst = r->sums && k >= r->n_blocks / 2 ? v->ry : v->rx;
		const struct gp_msg_block *b = &r->blocks[k];

		if (r->offs[k] > n || b->count > n - r->offs[k] ||
		    gp_msg_block_read(b, dst + r->offs[k], b->count) < 0)
			return -EINVAL;
	}
	*ret_y = r->sums ? v->ry : v->rx;
	return 0;
}

/* Adds kept update r to its stretch's sums at the pool's (C, M): what it
 * did since it came, a - k1 b and k2 b with r's own (C0, M0), in one
 * pass with the stretch's move to (C, M). */
static int fold_raw(struct gp_verify *v, struct seg *s, struct raw *r,
		    double C, double M, size_t n)
{
	const float *y;
	int e = raw_decode(v, r, n, &y);

	if (e < 0)
		return e;
	if (!seg_sums(s, n))
		return -ENOMEM;
	seg_add(s, C, M, v->rx, y, n, (float)(r->ka * (M / r->M0)), r->kb,
		(float)(-r->ka * ((C - r->C0) / r->M0)));
	return 0;
}

/* Folds s's kept updates into its sums (at the pool's (C, M)), freeing
 * them; one that cannot be decoded again is lost from the take-back
 * (logged). */
static void fold_raws(struct gp_verify *v, struct seg *s, double C,
		      double M, size_t n)
{
	while (s->raws) {
		struct raw *r = s->raws;

		s->raws = r->next;
		if (fold_raw(v, s, r, C, M, n) < 0)
			gp_error("verification: a kept update could not be "
				 "decoded again; it can no longer be taken "
				 "back");
		raw_free(v, r);
	}
}

int gp_verify_raws_effect(struct gp_verify *v, const struct seg *s,
			  double *dw, double *dv, size_t n)
{
	int ret = 0;

	for (const struct raw *r = s->raws; r; r = r->next) {
		const float *y, *x;
		double k1 = (v->C - r->C0) / r->M0, k2 = v->M / r->M0;
		int e = raw_decode(v, r, n, &y);

		if (e < 0) {
			ret = e;
			continue;
		}
		x = v->rx;
		for (size_t i = 0; i < n; i++) {
			dw[i] += (double)r->kb * y[i] - k1 * r->ka * x[i];
			dv[i] += k2 * r->ka * x[i];
		}
	}
	return ret;
}

/* Keeps the update u of effect e as it came, in s, at the pool's (C, M)
 * after its step, where the budget allows: false (nothing kept) when it
 * does not, or a buffer could not be had. */
static bool keep_raw(struct gp_verify *v, struct seg *s, size_t n,
		     const struct gp_verify_effect *e)
{
	const struct gp_msg_update *u = e->u;
	size_t nt = gp_params_tensor_count(v->pool->params), total = 0, at = 0;
	uint64_t size;
	struct raw *r;

	for (size_t k = 0; k < u->n_blocks; k++)
		total += u->blocks[k].raw_len;
	size = sizeof(*r) + total + u->n_blocks * (sizeof(*r->blocks) +
						   sizeof(*r->offs));
	/* Within half of kept_max with the stretches' sums, the bytes of
	 * the buffers they hold counted (at most twice the bytes asked:
	 * bytes_get()): a member with a long stretch of them leaves the
	 * other half for other members' stretches (open_seg()); beyond it
	 * its updates are added to its sums. */
	if ((uint64_t)v->segs * n * 2 * sizeof(float) + v->raw_bytes + size +
	    total > v->kept_max / 2)
		return false;
	r = calloc(1, sizeof(*r));
	if (!r)
		return false;
	r->blocks = malloc(u->n_blocks * sizeof(*r->blocks));
	r->offs = malloc(u->n_blocks * sizeof(*r->offs));
	r->bytes = bytes_get(v, total, &r->cap);
	if (!r->blocks || !r->offs || !r->bytes) {
		free(r->blocks);
		free(r->offs);
		free(r->bytes);
		free(r);
		return false;
	}
	for (size_t k = 0; k < u->n_blocks; k++) {
		const struct gp_msg_block *b = &u->blocks[k];
		size_t off;

		if (gp_params_check_block(v->pool->params, b->tensor,
					  b->row_start, b->rows, b->count,
					  &off) != 0) {
			free(r->blocks);
			free(r->offs);
			bytes_put(v, r->bytes, r->cap);
			free(r);
			return false;
		}
		r->blocks[k] = *b;
		r->blocks[k].values = NULL;
		memcpy(r->bytes + at, b->raw, b->raw_len);
		r->blocks[k].raw = r->bytes + at;
		r->offs[k] = off;
		at += b->raw_len;
	}
	r->n_blocks = u->n_blocks;
	r->sums = u->form == GP_UPDATE_SUMS && u->n_blocks == 2 * nt;
	r->ka = e->ka;
	r->kb = e->kb;
	r->C0 = v->C;
	r->M0 = v->M;
	r->size = size - total + r->cap;
	r->next = s->raws;
	s->raws = r;
	v->raw_bytes += r->size;
	return true;
}

/* Moves the pool's (C, M) to (0, 1) and every stretch's base with it:
 * C0 - C and M0 divided by M leave every stretch's effect as it is
 * (verify.h), in one pass over the stretches, not their sums. C starts
 * from 0 again, so C - C0 never loses its digits to a large C. */
static void rebase(struct gp_verify *v, size_t n)
{
	double l = v->M, c = v->C;
	/* M of 0 (no momentum: mk = 0) or so small that dividing by it
	 * overflows: every stretch is brought to the present first (its
	 * momentum part is then 0 or nothing), a pass over its sums. */
	bool fold = !(l >= 1 / SEG_BASE_MAX);

	for (struct record *r = v->records; r; r = r->next) {
		for (struct seg *s = r->head; s; s = s->next) {
			if (fold) {
				fold_raws(v, s, c, l, n);
				seg_add(s, c, l, NULL, NULL, n, 0, 0, 0);
				s->C0 = 0;
				s->M0 = 1;
				continue;
			}
			s->C0 = (s->C0 - c) / l;
			s->M0 /= l;
			/* Moved to the present, the pool's new (0, 1). */
			if (s->M0 > SEG_BASE_MAX)
				seg_add(s, 0, 1, NULL, NULL, n, 0, 0, 0);
			for (struct raw *w = s->raws; w; w = w->next) {
				w->C0 = (w->C0 - c) / l;
				w->M0 /= l;
			}
			/* The same for a kept update: folded in. */
			for (struct raw *w = s->raws; w; w = w->next)
				if (w->M0 > SEG_BASE_MAX) {
					fold_raws(v, s, 0, 1, n);
					break;
				}
		}
	}
	v->C = 0;
	v->M = 1;
}

static struct seg *open_seg(struct gp_verify *v, struct record *rec,
			    size_t n)
{
	struct seg *s;

	if (rec->tail && !rec->tail->tag)
		return rec->tail;
	if ((uint64_t)(v->segs + 1) * n * 2 * sizeof(float) + v->raw_bytes >
	    v->kept_max) {
		if (!v->full_logged)
			gp_warn("verification: %zu stretches of updates kept "
				"(%" PRIu64 " MiB); further ones cannot be taken "
				"back", v->segs, v->kept_max >> 20);
		v->full_logged = true;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->C0 = v->C;
	s->M0 = v->M;
	if (rec->tail)
		rec->tail->next = s;
	else
		rec->head = s;
	rec->tail = s;
	v->segs++;
	return s;
}

/* Drops the kept effects of members idle for IDLE_STEPS updates. */
static void drop_idle(struct gp_verify *v)
{
	struct record **pp = &v->records;

	while (*pp) {
		struct record *r = *pp;

		if (!r->checks && v->steps - r->last_step > IDLE_STEPS &&
		    !r->mismatches) {
			*pp = r->next;
			for (struct seg *s = r->head; s; s = s->next)
				v->segs--;
			record_free(v, r);
		} else {
			if (!r->checks && v->steps - r->last_step > IDLE_STEPS)
				gp_verify_drop_segs(v, r);
			pp = &r->next;
		}
	}
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

/* The effect of the step that moved w_old, v_old to w, vel, measured: a
 * step that does not report its effect (weight decay, a step hook, a
 * delta). dv = vel - mk v_old, dw = w - w_old + c v_old, added to s with
 * its base moved to now (seg_add). Once per applied update over every
 * parameter, so the arrays are declared apart (restrict), which lets the
 * compiler vectorise it. */
GP_VECTORIZE static void add_effect(struct seg *restrict s, const struct gp_verify *v,
		       const float *restrict w, const float *restrict vel,
		       const float *restrict w_old,
		       const float *restrict v_old, size_t n, float c,
		       float mk)
{
	float *restrict a = s->a, *restrict b = s->b;
	double d1, d2;
	float k1, k2;

	gp_verify_seg_k(s, v->C, v->M, &d1, &d2);
	k1 = (float)d1;
	k2 = (float)d2;
	for (size_t i = 0; i < n; i++) {
		float bi = b[i];
		float dv = vel[i] - mk * v_old[i];
		float dw = w[i] - w_old[i] + c * v_old[i];

		a[i] = a[i] - k1 * bi + dw;
		b[i] = k2 * bi + dv;
	}
	s->C0 = v->C;
	s->M0 = v->M;
}

/* |sent - x| and |x|. */
GP_VECTORIZE static void residual(const float *restrict sent,
				  const float *restrict x, size_t n,
				  double *ret_res, double *ret_x)
{
	double d = 0, s = 0;
	size_t i = 0;

	/* Sixteen float sums over runs of 256 values, each run's added in
	 * double (as gp_robust_sum_squares); in double where a float square
	 * overflows. */
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

/* Out of memory to keep m's update: it is applied without a way back
 * (logged once). */
static void no_way_back(struct gp_verify *v, const struct gp_member *m)
{
	if (!v->full_logged)
		gp_error("verification: out of memory; agent %" PRId64 "'s "
			 "updates can no longer be taken back", m->agent_id);
	v->full_logged = true;
}

void gp_verify_applied(struct gp_pool *pool, struct gp_member *m,
		       const uint64_t *ids, size_t k, double c, double mk,
		       const struct gp_verify_effect *e)
{
	struct gp_verify *v = pool->verify;
	size_t n = pool->n_params;
	const float *w, *vel;
	struct record *rec;
	struct seg *s;
	uint64_t t0;

	if (!v || !v->stepping)
		return;
	t0 = gp_verify_thread_ns();
	v->stepping = false;
	v->received = NULL;
	/* The step's effect on every effect kept so far (verify.h). */
	v->C += c * v->M;
	v->M *= mk;
	if (v->M < REBASE_BELOW)
		rebase(v, n);
	rec = gp_verify_record(v, m->agent_id);
	if (!rec)
		rec = record_add(v, m->agent_id);
	if (++v->steps % 256 == 0)
		drop_idle(v);
	if (rec) {
		rec->last_step = v->steps;
		rec->gone = false;
	}
	s = rec ? open_seg(v, rec, n) : NULL;
	if (s && s->n_ids + k > s->cap_ids) {
		size_t cap = (s->n_ids + k) * 2;
		uint64_t *ni = realloc(s->ids, cap * sizeof(*ni));

		if (ni) {
			s->ids = ni;
			s->cap_ids = cap;
		}
	}
	if (!s || s->n_ids + k > s->cap_ids) {
		no_way_back(v, m);
		goto out;
	}
	/* This update's own effect: what the step did beyond carrying the
	 * momentum already there. */
	w = gp_params_values(pool->params);
	vel = gp_params_momentum(pool->params);
	/* Kept as it came where it can be (a copy of its bytes), else
	 * added to the sums (a pass over both). Not with mk = 0 (no
	 * momentum): the next step's rebase() would fold it in at once. */
	if (e && e->u && mk > 0 && keep_raw(v, s, n, e))
		;
	else if ((e || v->copied) && !seg_sums(s, n)) {
		no_way_back(v, m);
		goto out;
	} else if (e)
		seg_add(s, v->C, v->M, e->x, e->y, n, (float)e->ka,
			(float)e->kb, 0);
	else if (v->copied)
		add_effect(s, v, w, vel, v->w_old, v->v_old, n, (float)c,
			   (float)mk);
	else
		gp_error("verification: a step reported no effect and none was "
			 "measured; agent %" PRId64 "'s update cannot be taken "
			 "back", m->agent_id);
	memcpy(s->ids + s->n_ids, ids, k * sizeof(*ids));
	s->n_ids += k;
	if (v->pending && v->pending->agent_id == m->agent_id) {
		struct check *ck = v->pending;

		v->pending = NULL;
		ck->tag = ++v->next_tag;
		/* Handed to a member, else waiting for one to be free (when
		 * one could take it), else queued here; with none, the
		 * stretch stays open for the next check (skipped). */
		if (!gp_verify_delegate(v, ck) && !gp_verify_wait(v, ck) &&
		    !gp_verify_room(v)) {
			v->st.skipped++;
			gp_verify_check_free(ck);
			goto out;
		}
		s->tag = ck->tag;
		s->checking = true;
		rec->checks++;
		if (!ck->task && !ck->waiting)
			gp_verify_run_here(v, ck);
	}
out:
	v->st.cpu_ns += gp_verify_thread_ns() - t0;
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

/* Frees rec's stretches up to and including the one the check `tag`
 * closed: they are verified. Not while an earlier stretch's check is
 * still under way (one handed to a slower member): its verdict may yet
 * take them back, and they go with the next pass after it. */
static void release_upto(struct gp_verify *v, struct record *rec,
			 uint64_t tag)
{
	bool found = false;

	for (struct seg *s = rec->head; s && !found; s = s->next) {
		found = s->tag == tag;
		if (!found && s->checking)
			return;
	}
	while (found && rec->head) {
		struct seg *s = rec->head;
		bool last = s->tag == tag;

		rec->head = s->next;
		if (!rec->head)
			rec->tail = NULL;
		seg_free(v, s);
		v->segs--;
		if (last)
			break;
	}
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

	if (!rec && !(rec = record_add(v, agent_id)))
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

	if (!rec && !(rec = record_add(v, c->delegate_id))) {
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
	release_upto(v, rec, c->tag);
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
