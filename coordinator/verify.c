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
#include "ledger.h"
#include "log.h"
#include "members.h"
#include "model.h"
#include "pool.h"
#include "util.h"

/* q8's allowance per unit of norm: a chunk of at most 64 values of
 * largest magnitude A rounds each by at most A / 254 (half of A / 127),
 * so by at most 8 A / 254 in norm, and A is at most the chunk's norm. */
#define Q8_BOUND (8.0 / 254.0)
/* q4's the same way: the step is A / 7, so each value rounds by at most
 * A / 14 and a chunk by at most 8 A / 14 in norm. As with q8 the sent
 * chunk holds A itself (q = 7), so A is at most the sent chunk's norm,
 * and summed over chunks the error of a sum is at most Q4_BOUND times its
 * norm: once for the error it leaves, once for the error it carries in
 * from the previous sum. That is over half the norm: a sum sent in four
 * bits is checked far more loosely than in eight (a sign flip, zeros,
 * noise or a stale sum still fail; a sum scaled by 1.2 passes). */
#define Q4_BOUND (8.0 / 14.0)
/* f16 rounds to nearest with an 11-bit significand. */
#define F16_BOUND (1.0 / 2048.0)
/* Recomputations waiting beyond this are dropped (counted skipped): the
 * coordinator's CPU is not given up to a backlog. */
#define MAX_QUEUED 8
/* The momentum's scale M is rebased below this (see verify.h). */
#define REBASE_BELOW 1e-9
/* A member's kept effects are dropped once the pool applied this many
 * updates since its last (as robust.c drops its momentum): it is gone or
 * idle, and its updates can no longer be taken back. */
#define IDLE_STEPS 2048
/* After a mismatch, a member's clocks are all picked (whatever
 * verify_rate) until this many of its checks passed: a member that
 * cheats on every clock meets its second mismatch, and its ban
 * (verify_bans), at its next checked clock instead of after about
 * 1 / verify_rate more clocks of rolled-back work (tools/bench-attack:
 * the collude run kept 2 of 4 members attacking for 7-9 more clocks
 * each). Honest members never mismatch, so this costs them nothing. */
#define SUSPECT_CHECKS 2

/* A stretch of a member's applied updates: their effect, as two sums
 * (verify.h: the parameters' part is a - C b, the momentum's M b), and
 * their minibatches. tag != 0: closed by the checked update `tag`. */
struct seg {
	struct seg *next;
	double *a, *b;
	uint64_t *ids;
	size_t n_ids, cap_ids;
	uint64_t tag;
};

/* A member's unverified updates, kept by agent id so that a check that
 * ends after it left still finds them. */
struct record {
	struct record *next;
	int64_t agent_id;
	struct seg *head, *tail;
	unsigned checks;        /* queued or running */
	uint64_t last_step;     /* gp_verify.steps at its last update */
	/* This run's mismatches; kept when the member leaves, so that
	 * reconnecting after each mismatch does not escape verify_bans
	 * (the record then holds no stretch: record_retire). */
	uint32_t mismatches;
	uint32_t suspect;       /* checks at rate 1 left (SUSPECT_CHECKS) */
	bool gone;              /* left the pool */
};

struct check {
	uv_work_t req;
	struct check *next;
	struct gp_verify *v;
	int64_t agent_id;
	uint64_t tag;
	int64_t clock;
	bool sums;
	uint32_t k;
	uint64_t ids[GP_MSG_GROUP_MAX];
	float lrs[GP_MSG_GROUP_MAX];
	uint32_t n_samples[GP_MSG_GROUP_MAX];
	uint32_t *idx;          /* the samples, item after item */
	float mu;
	float *w0, *v0;         /* the copy sent (taken from the member) */
	float *a, *b;           /* as received */
	double q_a, q_b;        /* the wire's allowances */
	/* Results. */
	int err;
	double res_a, res_b, x_a, x_b;
	bool pass;
	uint64_t ns;
};

struct gp_verify {
	struct gp_pool *pool;
	struct gp_verify_env env;
	uint64_t rng;
	double C, M;
	float *w_old, *v_old;   /* before the step being applied */
	bool stepping;
	struct gp_member *received; /* whose update is decoded now */
	struct check *pending;  /* its check, until it is applied */
	struct record *records;
	size_t suspects;        /* records with suspect > 0 */
	struct check *queue, *queue_tail;
	size_t queued;
	bool running;
	uint64_t next_tag;
	uint64_t steps;         /* updates applied */
	size_t segs;            /* stretches kept, all members */
	uint64_t kept_max;      /* their bytes' limit (env.kept_bytes) */
	bool full_logged;
	struct gp_backend *be;  /* the thread pool's, created there */
	struct gp_model *model;
	float *x;
	int32_t *y;
	struct gp_verify_stats st;
};

static uint64_t thread_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

bool gp_verify_draw(uint64_t *state, double rate)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	return (double)(z >> 11) * 0x1.0p-53 < rate;
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

static void seg_free(struct seg *s)
{
	if (!s)
		return;
	free(s->a);
	free(s->b);
	free(s->ids);
	free(s);
}

static void record_free(struct record *r)
{
	while (r->head) {
		struct seg *s = r->head;

		r->head = s->next;
		seg_free(s);
	}
	free(r);
}

static void check_free(struct check *c)
{
	if (!c)
		return;
	free(c->idx);
	free(c->w0);
	free(c->v0);
	free(c->a);
	free(c->b);
	free(c);
}

void gp_verify_destroy(struct gp_verify *v)
{
	if (!v)
		return;
	while (v->records) {
		struct record *r = v->records;

		v->records = r->next;
		record_free(r);
	}
	while (v->queue) {
		struct check *c = v->queue;

		v->queue = c->next;
		check_free(c);
	}
	check_free(v->pending);
	gp_model_destroy(v->model);
	gp_backend_destroy(v->be);
	free(v->x);
	free(v->y);
	free(v->w_old);
	free(v->v_old);
	free(v);
}

bool gp_verify_busy(const struct gp_verify *v)
{
	return v && (v->running || v->queued);
}

void gp_verify_get_stats(const struct gp_verify *v,
			 struct gp_verify_stats *ret)
{
	*ret = v->st;
}

static struct record *record_find(struct gp_verify *v, int64_t agent_id)
{
	for (struct record *r = v->records; r; r = r->next)
		if (r->agent_id == agent_id)
			return r;
	return NULL;
}

static void record_drop_segs(struct gp_verify *v, struct record *rec)
{
	while (rec->head) {
		struct seg *s = rec->head;

		rec->head = s->next;
		seg_free(s);
		v->segs--;
	}
	rec->tail = NULL;
}

/* rec's updates can no longer be judged (its member left or idles): its
 * stretches go; the record itself stays while it counts a mismatch
 * (its few bytes hold verify_bans and the suspicion across reconnects). */
static void record_retire(struct gp_verify *v, struct record *rec)
{
	record_drop_segs(v, rec);
	if (rec->mismatches)
		return;
	for (struct record **pp = &v->records; *pp; pp = &(*pp)->next) {
		if (*pp == rec) {
			*pp = rec->next;
			record_free(rec);
			return;
		}
	}
}

static float *rounded_copy(const float *src, size_t n, uint8_t dtype)
{
	float *dst = malloc(n * sizeof(float));

	if (!dst)
		return NULL;
	for (size_t i = 0; i < n; i++)
		dst[i] = dtype == GP_DTYPE_F16 ?
				 gp_msg_f16_to_f32(gp_msg_f32_to_f16(src[i])) :
				 src[i];
	return dst;
}

/* Whether m's first update of a clock can be recomputed from the pull:
 * a group with momentum needs the momentum sent with it, and a delta of
 * local AdamW steps (GP_CAP_INNER_ADAMW) depends on the agent's own
 * moments, which never travel: it cannot be recomputed at all
 * (docs/security.md "Verification"). */
static bool checkable(const struct gp_pool *pool, const struct gp_member *m)
{
	bool momentum = pool->job->optimizer == GP_OPT_SGD_MOMENTUM &&
			pool->job->momentum > 0;

	if (m->caps & GP_CAP_INNER_ADAMW)
		return false;
	return !(momentum && (m->caps & GP_CAP_SUMS) &&
		 !(m->caps & GP_CAP_MOMENTUM));
}

static void snap_drop(struct gp_verify_member *vm, int i)
{
	free(vm->snap[i].w);
	free(vm->snap[i].v);
	vm->snap[i].w = NULL;
	vm->snap[i].v = NULL;
}

double gp_verify_pick_rate(double rate, uint32_t steps)
{
	double p = rate;

	if (steps < GP_VERIFY_CLOCK_STEPS)
		p = rate * GP_VERIFY_CLOCK_STEPS / (steps ? steps : 1);
	return p < 1 ? p : 1;
}

bool gp_verify_pick(struct gp_pool *pool, struct gp_member *m,
		    int64_t clock, uint32_t steps)
{
	struct gp_verify *v = pool->verify;
	struct gp_verify_member *vm = &m->verify;
	int free_slot = -1;

	if (!v)
		return false;
	/* Work of this clock still on its way was computed from the copy
	 * before this pull, and its update would arrive first and be
	 * compared with this one: a false mismatch. That is the pull before
	 * a clock's second run, pipelined (serve_run), and such runs are
	 * short and many after a resume or early in a job (work.c
	 * run_length). */
	if ((clock == m->clock && m->clock_open > 0) ||
	    (clock == m->clock + 1 && m->next_open > 0))
		return false;
	/* Copies of clocks the member has moved past were never answered
	 * (their work was taken back): nothing will come for them. */
	for (int i = 0; i < 2; i++) {
		if (vm->snap[i].w && vm->snap[i].clock < m->clock)
			snap_drop(vm, i);
		if (!vm->snap[i].w && free_slot < 0)
			free_slot = i;
		/* A second pull for a clock already picked: its first
		 * update comes from the first copy. */
		if (vm->snap[i].w && vm->snap[i].clock == clock)
			return false;
	}
	if (free_slot < 0 || !checkable(pool, m))
		return false;
	/* A suspect's clocks are all checked; the records are looked at
	 * only while there is one (a pool of thousands pulls often). */
	if (!(v->suspects && gp_verify_suspect(v, m->agent_id)) &&
	    !gp_verify_draw(&v->rng, gp_verify_pick_rate(
					     pool->job->verify_rate, steps)))
		return false;
	v->st.picked++;
	return true;
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

	if (!pool->verify || vm->snap[i].w)
		return;
	vm->snap[i].w = rounded_copy(gp_params_values(p), n, dt);
	if (m->caps & GP_CAP_MOMENTUM) {
		vm->snap[i].v = rounded_copy(gp_params_momentum(p), n, dt);
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
		vm->snap[i].v = calloc(n, sizeof(float));
	}
	if (!vm->snap[i].w || !vm->snap[i].v) {
		snap_drop(vm, i);
		pool->verify->st.skipped++;
		return;
	}
	vm->snap[i].clock = clock;
}

static double norm(const float *x, size_t n)
{
	double s = 0;

	for (size_t i = 0; i < n; i++)
		s += (double)x[i] * x[i];
	return sqrt(s);
}

void gp_verify_received(struct gp_pool *pool, struct gp_member *m,
			const struct gp_msg_update *u, const uint64_t *ids,
			size_t k)
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
		return;
	t0 = thread_ns();
	v->received = m;
	na = norm(pool->grad, n);
	if (sums)
		nb = norm(pool->grad_b, n);
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
	c = calloc(1, sizeof(*c));
	if (c) {
		size_t total = 0;

		c->v = v;
		c->agent_id = m->agent_id;
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
		c->a = malloc(n * sizeof(float));
		c->b = sums ? malloc(n * sizeof(float)) : NULL;
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
			check_free(c);
			c = NULL;
		}
	}
	if (!c)
		v->st.skipped++;
	snap_drop(vm, slot);
	check_free(v->pending);
	v->pending = c;
out:
	v->st.cpu_ns += thread_ns() - t0;
}

void gp_verify_before_step(struct gp_pool *pool)
{
	struct gp_verify *v = pool->verify;
	size_t n = pool->n_params;
	uint64_t t0;

	if (!v)
		return;
	t0 = thread_ns();
	memcpy(v->w_old, gp_params_values(pool->params), n * sizeof(float));
	memcpy(v->v_old, gp_params_momentum(pool->params), n * sizeof(float));
	v->stepping = true;
	v->st.cpu_ns += thread_ns() - t0;
}

/* Moves the reference of every kept effect to now: C = 0, M = 1. */
static void rebase(struct gp_verify *v, size_t n)
{
	for (struct record *r = v->records; r; r = r->next) {
		for (struct seg *s = r->head; s; s = s->next) {
			for (size_t i = 0; i < n; i++) {
				s->a[i] -= v->C * s->b[i];
				s->b[i] *= v->M;
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
	if ((uint64_t)(v->segs + 1) * n * 2 * sizeof(double) > v->kept_max) {
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
	s->a = calloc(n, sizeof(double));
	s->b = calloc(n, sizeof(double));
	if (!s->a || !s->b) {
		seg_free(s);
		return NULL;
	}
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
			record_free(r);
		} else {
			if (!r->checks && v->steps - r->last_step > IDLE_STEPS)
				record_drop_segs(v, r);
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

void gp_verify_applied(struct gp_pool *pool, struct gp_member *m,
		       const uint64_t *ids, size_t k, double c, double mk)
{
	struct gp_verify *v = pool->verify;
	size_t n = pool->n_params;
	const float *w, *vel;
	struct record *rec;
	struct seg *s;
	double cm, im;
	uint64_t t0;

	if (!v || !v->stepping)
		return;
	t0 = thread_ns();
	v->stepping = false;
	v->received = NULL;
	/* The step's effect on every effect kept so far (verify.h). */
	v->C += c * v->M;
	v->M *= mk;
	if (v->M < REBASE_BELOW)
		rebase(v, n);
	rec = record_find(v, m->agent_id);
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
		if (!v->full_logged)
			gp_error("verification: out of memory; agent %" PRId64
				 "'s updates can no longer be taken back",
				 m->agent_id);
		v->full_logged = true;
		goto out;
	}
	/* This update's own effect: what the step did beyond carrying the
	 * momentum already there. */
	w = gp_params_values(pool->params);
	vel = gp_params_momentum(pool->params);
	cm = v->C / v->M;
	im = 1 / v->M;
	for (size_t i = 0; i < n; i++) {
		double dv = (double)vel[i] - mk * (double)v->v_old[i];
		double dw = (double)w[i] - (double)v->w_old[i] +
			    c * (double)v->v_old[i];

		s->a[i] += dw + cm * dv;
		s->b[i] += im * dv;
	}
	memcpy(s->ids + s->n_ids, ids, k * sizeof(*ids));
	s->n_ids += k;
	if (v->pending && v->pending->agent_id == m->agent_id) {
		struct check *ck = v->pending;

		v->pending = NULL;
		if (v->queued >= MAX_QUEUED) {
			v->st.skipped++;
			check_free(ck);
			goto out;
		}
		ck->tag = s->tag = ++v->next_tag;
		rec->checks++;
		if (v->queue_tail)
			v->queue_tail->next = ck;
		else
			v->queue = ck;
		v->queue_tail = ck;
		v->queued++;
		start_next(v);
	}
out:
	v->st.cpu_ns += thread_ns() - t0;
}

void gp_verify_refused(struct gp_pool *pool, struct gp_member *m,
		       const struct gp_msg_update *u)
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
		check_free(v->pending);
		v->pending = NULL;
	}
	/* The copy was for this update, refused: the next one of the clock
	 * was not computed from it. */
	for (int i = 0; i < 2; i++)
		if (vm->snap[i].w && vm->snap[i].clock == (int64_t)u->clock)
			snap_drop(vm, i);
}

void gp_verify_member_finish(struct gp_pool *pool, struct gp_member *m)
{
	struct gp_verify *v = pool->verify;
	struct record *rec;

	snap_drop(&m->verify, 0);
	snap_drop(&m->verify, 1);
	if (!v || !m->agent_id)
		return;
	if (v->received == m)
		v->received = NULL;
	rec = record_find(v, m->agent_id);
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

static int write_slot(struct gp_model *model, enum gp_model_slot slot,
		      const float *src)
{
	size_t off = 0;
	int r = 0;

	for (size_t i = 0; r >= 0 && i < gp_model_tensor_count(model); i++) {
		struct gp_tensor_info ti;

		gp_model_tensor_info(model, i, &ti);
		r = gp_model_write(model, slot, i, 0, ti.rows, src + off);
		off += ti.rows * ti.cols;
	}
	return r;
}

static int read_slot(struct gp_model *model, enum gp_model_slot slot,
		     float *dst)
{
	size_t off = 0;
	int r = 0;

	for (size_t i = 0; r >= 0 && i < gp_model_tensor_count(model); i++) {
		struct gp_tensor_info ti;

		gp_model_tensor_info(model, i, &ti);
		r = gp_model_read(model, slot, i, 0, ti.rows, dst + off);
		off += ti.rows * ti.cols;
	}
	return r;
}

/* Computes the update as the agent does (agent/worker.c): one gradient,
 * or a group's local steps and its two sums from the copy's change. */
static int recompute(struct gp_verify *v, struct check *c, float *xa,
		     float *xb)
{
	const struct gp_verify_env *env = &v->env;
	uint32_t per = gp_sched_minibatches(v->pool->sched);
	size_t n = v->pool->n_params, at = 0;
	double mk = 1, cv = 0, lsum = 0;
	int r;

	if (!v->model) {
		r = gp_backend_create_cpu(1, &v->be);
		if (r >= 0)
			r = gp_model_create(v->be, env->spec, env->batch_size,
					    &v->model);
		if (r < 0)
			return r;
		v->x = malloc((size_t)env->batch_size * env->train->features *
			      sizeof(float));
		v->y = malloc(env->batch_size * sizeof(int32_t));
		if (!v->x || !v->y)
			return -ENOMEM;
	}
	r = write_slot(v->model, GP_MODEL_PARAM, c->w0);
	if (r >= 0 && c->sums)
		r = write_slot(v->model, GP_MODEL_MOMENTUM, c->v0);
	for (uint32_t j = 0; r >= 0 && j < c->k; j++) {
		uint32_t ns = c->n_samples[j];
		struct gp_model_stats st;

		if (ns == 0 || ns > env->batch_size)
			return -EINVAL;
		/* As the agent converts them (gp_data_to_floats). */
		r = gp_data_gather(env->train, c->idx + at, ns, v->x, v->y);
		at += ns;
		if (r >= 0)
			r = gp_model_set_batch(v->model, v->x, v->y, ns);
		gp_model_set_seed(v->model,
				  gp_model_minibatch_seed(env->job_seed,
							  c->ids[j] / per,
							  c->ids[j] % per));
		if (r < 0)
			break;
		if (c->sums)
			r = gp_model_train_step(v->model, ns, c->lrs[j], c->mu,
						&st);
		else
			r = gp_model_compute_grads(v->model, ns, &st);
	}
	if (r < 0)
		return r;
	if (!c->sums)
		return read_slot(v->model, GP_MODEL_GRAD, xa);
	r = read_slot(v->model, GP_MODEL_MOMENTUM, xa);
	if (r >= 0)
		r = read_slot(v->model, GP_MODEL_PARAM, xb);
	if (r < 0)
		return r;
	for (uint32_t j = 0; j < c->k; j++) {
		mk *= c->mu;
		cv += c->lrs[j] * mk;
		lsum += c->lrs[j];
	}
	{
		float fmk = (float)mk, fcv = (float)cv;
		float inv = lsum > 0 ? (float)(1.0 / lsum) : 0.0f;

		for (size_t i = 0; i < n; i++) {
			float v0 = c->v0[i];

			xa[i] -= fmk * v0;
			xb[i] = (c->w0[i] - xb[i] - fcv * v0) * inv;
		}
	}
	return 0;
}

static void residual(const float *sent, const float *x, size_t n,
		     double *ret_res, double *ret_x)
{
	double d = 0, s = 0;

	for (size_t i = 0; i < n; i++) {
		double e = (double)sent[i] - x[i];

		d += e * e;
		s += (double)x[i] * x[i];
	}
	*ret_res = sqrt(d);
	*ret_x = sqrt(s);
}

static void check_run(uv_work_t *req)
{
	struct check *c = req->data;
	struct gp_verify *v = c->v;
	size_t n = v->pool->n_params;
	double tol = v->pool->job->verify_tolerance;
	uint64_t t0 = thread_ns();
	float *xa = malloc(n * sizeof(float));
	float *xb = malloc(n * sizeof(float));

	c->err = xa && xb ? recompute(v, c, xa, xb) : -ENOMEM;
	if (c->err >= 0) {
		residual(c->a, xa, n, &c->res_a, &c->x_a);
		c->pass = gp_verify_pass(c->res_a, c->x_a, c->q_a, tol);
		if (c->sums) {
			residual(c->b, xb, n, &c->res_b, &c->x_b);
			c->pass = c->pass &&
				  gp_verify_pass(c->res_b, c->x_b, c->q_b, tol);
		}
	}
	free(xa);
	free(xb);
	c->ns = thread_ns() - t0;
}

/* Frees rec's stretches up to and including the one the check `tag`
 * closed: they are verified. */
static void release_upto(struct gp_verify *v, struct record *rec,
			 uint64_t tag)
{
	bool found = false;

	for (struct seg *s = rec->head; s; s = s->next)
		found |= s->tag == tag;
	while (found && rec->head) {
		struct seg *s = rec->head;
		bool last = s->tag == tag;

		rec->head = s->next;
		if (!rec->head)
			rec->tail = NULL;
		seg_free(s);
		v->segs--;
		if (last)
			break;
	}
}

/* A mismatch: takes back every update of rec's kept so far. Returns the
 * minibatches taken back. */
static size_t roll_back(struct gp_verify *v, struct record *rec,
			uint64_t first)
{
	struct gp_pool *pool = v->pool;
	struct gp_ledger *ledger = v->env.ledger;
	size_t n = pool->n_params, total = 0, at = 0;
	uint32_t per = gp_sched_minibatches(pool->sched);
	double *dw = calloc(n, sizeof(double));
	double *dv = calloc(n, sizeof(double));
	int64_t *pairs;
	bool kept = false;

	for (struct seg *s = rec->head; s; s = s->next) {
		total += s->n_ids;
		for (size_t i = 0; i < s->n_ids; i++)
			kept |= s->ids[i] == first;
	}
	/* The checked update was taken back already, by an earlier check's
	 * mismatch that ended while this one waited: the first of what is
	 * left marks the rest (and the pairs then fit, first not added). */
	if (!kept && total) {
		for (struct seg *s = rec->head; s && !kept; s = s->next)
			if (s->n_ids) {
				first = s->ids[0];
				kept = true;
			}
	}
	pairs = malloc((total + 1) * 2 * sizeof(*pairs));
	if (!dw || !dv || !pairs) {
		gp_error("verification: out of memory: agent %" PRId64 "'s "
			 "updates are not taken back", rec->agent_id);
		goto out;
	}
	/* The checked update's first minibatch first: its row id marks the
	 * others (gp_ledger_rollback_minibatches). */
	pairs[at++] = (int64_t)(first / per);
	pairs[at++] = (int64_t)(first % per);
	for (struct seg *s = rec->head; s; s = s->next) {
		for (size_t i = 0; i < n; i++) {
			dw[i] += s->a[i] - v->C * s->b[i];
			dv[i] += v->M * s->b[i];
		}
		for (size_t i = 0; i < s->n_ids; i++) {
			int r = gp_sched_reopen(pool->sched, s->ids[i]);

			if (s->ids[i] != first) {
				pairs[at++] = (int64_t)(s->ids[i] / per);
				pairs[at++] = (int64_t)(s->ids[i] % per);
			}
			if (r == -ESTALE)
				v->st.lost++;
		}
	}
	if (gp_params_undo(pool->params, dw, dv, n) < 0)
		gp_error("verification: cannot take agent %" PRId64 "'s "
			 "updates back", rec->agent_id);
	if (ledger && total &&
	    gp_ledger_rollback_minibatches(ledger, pool->job_id, rec->agent_id,
					   pairs, at / 2) < 0)
		gp_error("verification: cannot mark agent %" PRId64 "'s "
			 "updates rolled back: %s", rec->agent_id,
			 gp_ledger_error(ledger));
out:
	record_drop_segs(v, rec);
	free(dw);
	free(dv);
	free(pairs);
	return total;
}

void gp_verify_log_summary(const struct gp_verify *v)
{
	if (!v)
		return;
	gp_info("verification: %" PRIu64 " clock(s) picked, %" PRIu64
		" update(s) recomputed: %" PRIu64 " verified, %" PRIu64
		" mismatched, %" PRIu64 " skipped; %" PRIu64 " minibatch(es) "
		"rolled back (%" PRIu64 " not redone), %" PRIu64 " member(s) "
		"revoked; largest passing residual %.3f of its allowance; "
		"%.3f s CPU (%.3f s recomputing)", v->st.picked, v->st.checked, v->st.verified,
		v->st.mismatched, v->st.skipped, v->st.rolled_back, v->st.lost,
		v->st.banned, v->st.worst_honest, (double)v->st.cpu_ns / 1e9,
		(double)v->st.recompute_ns / 1e9);
}

size_t gp_verify_take_back(struct gp_verify *v, int64_t agent_id)
{
	struct record *rec = record_find(v, agent_id);
	size_t n;

	if (!rec || !rec->head || !rec->head->n_ids)
		return 0;
	n = roll_back(v, rec, rec->head->ids[0]);
	v->st.rolled_back += n;
	return n;
}

uint32_t gp_verify_note_mismatch(struct gp_verify *v, int64_t agent_id)
{
	struct record *rec = record_find(v, agent_id);

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

static void mismatch(struct gp_verify *v, struct record *rec,
		     const struct check *ck)
{
	struct gp_pool *pool = v->pool;
	struct gp_ledger *ledger = v->env.ledger;
	struct gp_member *m = gp_members_find(pool, (uint64_t)rec->agent_id);
	int64_t now = gp_now_ms();
	struct gp_ledger_rejection rej = {
		.agent_id = rec->agent_id,
		.at = now,
	};
	size_t undone;

	v->st.mismatched++;
	gp_verify_note_mismatch(v, rec->agent_id);
	undone = roll_back(v, rec, ck->ids[0]);
	v->st.rolled_back += undone;
	gp_warn("agent %" PRId64 ": update of clock %" PRId64 " does not match "
		"its recomputation (|sent - x| %.4g of |x| %.4g, allowed %.4g);"
		" %zu applied minibatch(es) taken back", rec->agent_id,
		ck->clock, ck->pass ? 0 : fmax(ck->res_a, ck->res_b),
		ck->x_a, ck->q_a + pool->job->verify_tolerance * ck->x_a,
		undone);
	snprintf(rej.kind, sizeof(rej.kind), "mismatch");
	snprintf(rej.reason, sizeof(rej.reason),
		 "update of clock %" PRId64 " differs from its recomputation; "
		 "%zu minibatch(es) rolled back", ck->clock, undone);
	pool->fx->ledger_rejection(pool->fx_data, &rej);
	if (ledger && gp_ledger_trust_add(ledger, rec->agent_id, 0, 1,
					  (int64_t)undone, now) < 0)
		gp_error("verification: %s", gp_ledger_error(ledger));
	if (rec->mismatches >= pool->job->verify_bans) {
		/* Revoked: it cannot come back, nothing more to check. */
		if (rec->suspect) {
			rec->suspect = 0;
			v->suspects--;
		}
		v->st.banned++;
		gp_warn("agent %" PRId64 ": %u mismatches, revoked",
			rec->agent_id, rec->mismatches);
		if (ledger &&
		    gp_ledger_agent_revoke(ledger, rec->agent_id, now) < 0)
			gp_error("verification: cannot revoke agent %" PRId64
				 ": %s", rec->agent_id, gp_ledger_error(ledger));
		if (m)
			pool->fx->send_bye(pool->fx_data, m, GP_BYE_REVOKED,
					   "revoked: updates do not match their "
					   "recomputation");
	} else if (m && ++m->strikes >= pool->job->max_strikes) {
		pool->fx->send_bye(pool->fx_data, m, GP_BYE_PROTOCOL,
				   "too many rejected updates");
	}
}

static void check_done(uv_work_t *req, int status)
{
	struct check *c = req->data;
	struct gp_verify *v = c->v;
	struct record *rec = record_find(v, c->agent_id);
	uint64_t t0 = thread_ns();

	v->running = false;
	v->st.cpu_ns += c->ns;
	v->st.recompute_ns += c->ns;
	if (status < 0 || c->err < 0 || !rec) {
		if (c->err < 0 && c->err != -EIO)
			gp_warn("verification of agent %" PRId64 "'s update "
				"failed: %s", c->agent_id, strerror(-c->err));
		v->st.skipped++;
	} else if (c->pass) {
		double q = c->q_a + v->pool->job->verify_tolerance * c->x_a;

		v->st.checked++;
		v->st.verified++;
		if (q > 0 && c->res_a / q > v->st.worst_honest)
			v->st.worst_honest = c->res_a / q;
		gp_debug("agent %" PRId64 ": clock %" PRId64 " verified "
			 "(|sent - x| %.3g, |x| %.3g, allowed %.3g)",
			 c->agent_id, c->clock, c->res_a, c->x_a, q);
		release_upto(v, rec, c->tag);
		if (rec->suspect && --rec->suspect == 0)
			v->suspects--;
		if (v->env.ledger &&
		    gp_ledger_trust_add(v->env.ledger, c->agent_id, 1, 0, 0,
					gp_now_ms()) < 0)
			gp_error("verification: %s",
				 gp_ledger_error(v->env.ledger));
	} else {
		v->st.checked++;
		mismatch(v, rec, c);
	}
	if (rec && rec->checks)
		rec->checks--;
	if (rec && rec->gone && !rec->checks)
		record_retire(v, rec);
	check_free(c);
	v->st.cpu_ns += thread_ns() - t0;
	start_next(v);
	if (!gp_verify_busy(v) && v->env.idle)
		v->env.idle(v->env.ctx);
}
