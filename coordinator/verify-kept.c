/* Verification's kept effects (verify.h "Taking an update back"): each
 * member's stretches of unverified updates, as two float sums relative to
 * the pool's (C, M) or as the updates' own bytes (struct raw), their
 * rebase, the step that adds an applied update to them
 * (gp_verify_applied), their release once verified, and the buffers
 * verification reuses. The checks themselves are verify.c's, the
 * take-back verify-takeback.c's. */
#include "verify.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "gp-vectorize.h"
#include "log.h"
#include "members.h"
#include "params.h"
#include "pool.h"
#include "verify-impl.h"

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

void gp_verify_record_free(struct gp_verify *v, struct record *r)
{
	while (r->head) {
		struct seg *s = r->head;

		r->head = s->next;
		seg_free(v, s);
	}
	free(r);
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
			gp_verify_record_free(v, r);
		} else {
			if (!r->checks && v->steps - r->last_step > IDLE_STEPS)
				gp_verify_drop_segs(v, r);
			pp = &r->next;
		}
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
		rec = gp_verify_record_add(v, m->agent_id);
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

/* Frees rec's stretches up to and including the one the check `tag`
 * closed: they are verified. Not while an earlier stretch's check is
 * still under way (one handed to a slower member): its verdict may yet
 * take them back, and they go with the next pass after it. */
void gp_verify_release_upto(struct gp_verify *v, struct record *rec,
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
