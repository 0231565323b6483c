/* The compute thread's runs (worker-impl.h): a group of minibatches and
 * its result (momentum sums, or with local AdamW steps the run's
 * change), the session's AdamW state, and the copies overlap keeps to
 * take parameters under the work in hand (gp_worker_rebase_params). */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "log.h"
#include "worker-impl.h"

void wk_inner_free(struct inner *in)
{
	free(in->m);
	free(in->v);
	free(in->w);
	free(in->g);
	for (size_t i = 0; i < in->n_cuts; i++)
		free(in->cuts[i].w);
	*in = (struct inner){ 0 };
}

/* Keeps copy (n_params floats, taken) as run's cut, dropping the oldest
 * beyond GP_WORKER_CUTS_MAX. */
void wk_cut_keep(struct inner *in, uint64_t run, float *copy)
{
	if (in->n_cuts == GP_WORKER_CUTS_MAX) {
		free(in->cuts[0].w);
		memmove(in->cuts, in->cuts + 1,
			(GP_WORKER_CUTS_MAX - 1) * sizeof(in->cuts[0]));
		in->n_cuts--;
	}
	in->cuts[in->n_cuts++] = (struct cut){ .run = run, .w = copy };
}

/* The index of run's cut, or -1. */
ptrdiff_t wk_cut_find(const struct inner *in, uint64_t run)
{
	for (size_t i = 0; i < in->n_cuts; i++)
		if (in->cuts[i].run == run)
			return (ptrdiff_t)i;
	return -1;
}

/* Starts a session's local AdamW state from zero (cfg->on), or ends it. */
int wk_inner_reset(struct gp_worker *w, const struct gp_worker_inner *cfg)
{
	struct inner *in = &w->inner;
	size_t n = w->n_params;

	wk_inner_free(in);
	if (!cfg->on)
		return 0;
	in->want = true;
	in->m = calloc(n, sizeof(float));
	in->v = calloc(n, sizeof(float));
	in->w = malloc(n * sizeof(float));
	in->g = malloc(n * sizeof(float));
	if (!in->m || !in->v || !in->w || !in->g) {
		wk_inner_free(in);
		in->want = true;
		return -ENOMEM;
	}
	in->cfg = *cfg;
	in->on = true;
	return 0;
}

/* One local AdamW step from the GRAD slots at rate lr: the gradient
 * clipped to the job's global norm first, as the coordinator clips one
 * (clip_grad_norm), then kernels/adamw.h's step on the host copy, which
 * goes back to the backend for the next minibatch. */
int wk_inner_step(struct gp_worker *w, float lr)
{
	struct inner *in = &w->inner;
	double sq = 0;
	float gscale = 1;
	int r;

	if ((r = gp_model_read_all(w->model, GP_MODEL_GRAD, in->g)) < 0 ||
	    (r = gp_model_read_all(w->model, GP_MODEL_PARAM, in->w)) < 0)
		return r;
	for (size_t i = 0; i < w->n_params; i++)
		sq += (double)in->g[i] * in->g[i];
	/* A non-finite gradient is not stepped on: the copy would be lost
	 * for the rest of the session. */
	if (!isfinite(sq))
		return -EDOM;
	if (in->cfg.clip_norm > 0 && sqrt(sq) > in->cfg.clip_norm)
		gscale = (float)(in->cfg.clip_norm / sqrt(sq));
	gp_adamw_step(&in->cfg.adamw, in->w, in->m, in->v, in->g, w->n_params,
		      gscale, lr, ++in->t);
	return gp_model_write_all(w->model, GP_MODEL_PARAM, in->w);
}

void wk_group_reset(struct gp_worker *w)
{
	gp_worker_result_free(w->grp.res);
	w->grp.res = NULL;
	w->grp.left = 0;
	w->grp.count = 0;
	w->grp.failed = false;
}

/* The group's sums from the copy's change (see struct group): a into
 * out->grads, b (divided by the rates' sum) into out->sums_b. */
int wk_group_finish(struct gp_worker *w, struct gp_worker_result *out)
{
	struct group *g = &w->grp;
	double mk = 1, cv = 0, lsum = 0, sq = 0;
	float *a = malloc(w->n_params * sizeof(float));
	float *b = malloc(w->n_params * sizeof(float));
	int r = -ENOMEM;

	if (!a || !b)
		goto fail;
	if (w->inner.on) {
		/* The run's change, start minus end: the descent it took. */
		r = gp_model_read_all(w->model, GP_MODEL_PARAM, b);
		if (r < 0)
			goto fail;
		for (uint32_t j = 0; j < g->count; j++)
			lsum += g->lrs[j];
		for (size_t i = 0; i < w->n_params; i++) {
			a[i] = g->w0[i] - b[i];
			sq += (double)a[i] * a[i];
		}
		out->run = ++w->inner.runs;
		/* The copy at the cut, for the pull that will hold this
		 * run (gp_worker_rebase_params). */
		if (w->inner.cfg.overlap)
			wk_cut_keep(&w->inner, out->run, b);
		else
			free(b);
		out->grads = a;
		out->n_grads = w->n_params;
		out->delta = true;
		/* As the coordinator's ledger shows a delta's norm. */
		out->grad_norm = lsum > 0 ? sqrt(sq) / lsum : sqrt(sq);
		return 0;
	}
	r = gp_model_read_all(w->model, GP_MODEL_MOMENTUM, a);
	if (r >= 0)
		r = gp_model_read_all(w->model, GP_MODEL_PARAM, b);
	if (r < 0)
		goto fail;
	for (uint32_t j = 0; j < g->count; j++) {
		mk *= g->mu;
		cv += g->lrs[j] * mk;
		lsum += g->lrs[j];
	}
	{
		float fmk = (float)mk, fcv = (float)cv;
		float inv = lsum > 0 ? (float)(1.0 / lsum) : 0.0f;

		for (size_t i = 0; i < w->n_params; i++) {
			float v0 = g->v0[i];

			a[i] -= fmk * v0;
			b[i] = (g->w0[i] - b[i] - fcv * v0) * inv;
			sq += (double)a[i] * a[i];
		}
	}
	out->grads = a;
	out->sums_b = b;
	out->n_grads = w->n_params;
	/* The group's weighted mean gradient, as the coordinator checks it. */
	out->grad_norm = sqrt(sq) / (g->mu > 0 && g->mu < 1 ?
				    (1 - mk) / (1 - g->mu) : (double)g->count);
	return 0;
fail:
	free(a);
	free(b);
	return r;
}

/* Folds one computed minibatch into the open group. Returns the group's
 * result when this was its last minibatch, the failed minibatch's own
 * result when it failed (reported at once: the group cannot be answered,
 * and waiting for its end would only hold the coordinator's clock longer),
 * else NULL (res is consumed then). */
struct gp_worker_result *wk_group_add(struct gp_worker *w,
					  const struct job *j,
					  struct gp_worker_result *res)
{
	struct group *g = &w->grp;
	struct gp_worker_result *out = g->res;
	int r;

	if (res->error < 0) {
		g->failed = true;
		if (--g->left == 0)
			wk_group_reset(w);
		return res;
	}
	out->items[out->n_items++] = (struct gp_worker_item){
		.epoch = res->epoch,
		.minibatch = res->minibatch,
		.loss = (float)res->loss,
	};
	g->lrs[g->count++] = j->lr;
	out->samples += res->samples;
	out->loss += res->loss * res->samples;
	out->correct += res->correct;
	out->compute_us += res->compute_us;
	gp_worker_result_free(res);
	if (--g->left > 0)
		return NULL;
	g->res = NULL;
	if ((r = wk_group_finish(w, out)) < 0)
		out->error = r;
	out->loss /= out->samples ? out->samples : 1;
	g->count = 0;
	return out;
}

/* Ends the open group before its announced size: the minibatches computed
 * so far are answered as a group of their own (the sums are exact for
 * them), so the coordinator need not wait for a work timeout. Returns the
 * result (with error set when the sums cannot be had: the caller must
 * still learn that the work is lost), or NULL when nothing was computed
 * or the failure was already reported. */
struct gp_worker_result *wk_group_cut(struct gp_worker *w)
{
	struct group *g = &w->grp;
	struct gp_worker_result *out = g->res;
	int r;

	if (!g->count || g->failed || !out) {
		wk_group_reset(w);
		return NULL;
	}
	g->res = NULL;
	r = wk_group_finish(w, out);
	out->loss /= out->samples ? out->samples : 1;
	wk_group_reset(w);
	if (r < 0)
		out->error = r;
	return out;
}

/* Opens a group of j->group minibatches (at least one): snapshots the
 * copy. Returns 0 or a negative errno (the minibatch is then answered
 * alone). */
int wk_group_open(struct gp_worker *w, const struct job *j)
{
	struct group *g = &w->grp;
	/* Local AdamW steps answer a lone minibatch as a group of one. */
	uint32_t size = j->group ? j->group : 1;
	int r = -ENOMEM;

	wk_group_reset(w);
	if (!g->w0)
		g->w0 = malloc(w->n_params * sizeof(float));
	if (!g->v0)
		g->v0 = malloc(w->n_params * sizeof(float));
	g->res = calloc(1, sizeof(*g->res));
	if (g->res)
		g->res->items = calloc(size, sizeof(*g->res->items));
	if (!g->w0 || !g->v0 || !g->res || !g->res->items)
		goto fail;
	r = gp_model_read_all(w->model, GP_MODEL_PARAM, g->w0);
	if (r >= 0)
		r = gp_model_read_all(w->model, GP_MODEL_MOMENTUM, g->v0);
	if (r < 0)
		goto fail;
	/* The copy the session's first run starts from: what a pull that
	 * holds none of its updates yet is taken against. */
	if (w->inner.on && w->inner.cfg.overlap && w->inner.runs == 0 &&
	    wk_cut_find(&w->inner, 0) < 0) {
		float *c = malloc(w->n_params * sizeof(float));

		if (c) {
			memcpy(c, g->w0, w->n_params * sizeof(float));
			wk_cut_keep(&w->inner, 0, c);
		}
	}
	g->res->gen = j->gen;
	g->res->clock = j->clock;
	g->res->epoch = j->epoch;
	g->res->minibatch = j->minibatch;
	g->left = size;
	g->gen = j->gen;
	g->clock = j->clock;
	g->mu = j->mu;
	return 0;
fail:
	wk_group_reset(w);
	return r;
}

/* Where a parameter job's rows start among the model's values, flat
 * (gp_model_read_all's order: tensor by tensor, row by row). */
static size_t rows_at(const struct gp_worker *w, const struct job *j)
{
	size_t off = 0;

	for (size_t t = 0; t < j->tensor; t++)
		off += w->tensors[t].rows * w->tensors[t].cols;
	return off + j->row0 * w->tensors[j->tensor].cols;
}

/* Rows of parameters written whole over the copy: every cut kept takes
 * them too, so that the copy less a cut is again what the local steps
 * did since (nothing yet), whatever run a later pull names. */
void wk_cuts_set(struct gp_worker *w, const struct job *j)
{
	struct inner *in = &w->inner;
	size_t cols = w->tensors[j->tensor].cols, off = rows_at(w, j);

	for (size_t k = 0; k < in->n_cuts; k++)
		memcpy(in->cuts[k].w + off, j->values,
		       j->rows * cols * sizeof(float));
}

/* A rebase job (gp_worker_rebase_params) on the thread: the copy's rows
 * become the values plus the copy's change since run j->ref's cut; that
 * cut's rows become the values, and the later cuts and an open run's
 * start move by what the cut's rows moved, so that a later pull against
 * any of them, and the run's change, stay right. The cuts before ref are
 * dropped: the pulls name runs in the order they were sent. Returns 0,
 * or a negative errno with nothing changed (no cut of run ref, no
 * overlap, no memory). */
int wk_rebase_rows(struct gp_worker *w, const struct job *j)
{
	struct inner *in = &w->inner;
	size_t n = j->rows * w->tensors[j->tensor].cols, off = rows_at(w, j);
	ptrdiff_t c;
	float *cur, *base;
	int r;

	if (j->slot != GP_MODEL_PARAM || !in->on || !in->cfg.overlap)
		return -ENOENT;
	c = wk_cut_find(in, j->ref);
	if (c < 0) {
		/* The session's first parameters (nothing computed, no
		 * copy kept yet) are just that. */
		if (j->ref == 0 && in->runs == 0 && !w->grp.left)
			return -ENOENT;
		if (in->lost++ % 100 == 0)
			gp_warn("parameters named run %" PRIu64 ", whose copy is "
				"no longer kept: they replace the copy, local "
				"steps and all (%" PRIu64 " such so far)", j->ref,
				in->lost);
		return -ENOENT;
	}
	if (!(cur = malloc(n * sizeof(float))))
		return -ENOMEM;
	r = gp_model_read(w->model, GP_MODEL_PARAM, j->tensor, j->row0,
			  j->rows, cur);
	if (r < 0) {
		free(cur);
		return r;
	}
	base = in->cuts[c].w + off;
	for (size_t i = 0; i < n; i++)
		cur[i] = j->values[i] + (cur[i] - base[i]);
	r = gp_model_write(w->model, GP_MODEL_PARAM, j->tensor, j->row0,
			   j->rows, cur);
	free(cur);
	if (r < 0)
		return r;
	/* Written: the later cuts and the open run's start move with it. */
	for (size_t i = 0; i < n; i++) {
		float v = j->values[i], d = v - base[i];

		for (size_t k = (size_t)c + 1; k < in->n_cuts; k++)
			in->cuts[k].w[off + i] += d;
		if (w->grp.left)
			w->grp.w0[off + i] += d;
		base[i] = v;
	}
	for (ptrdiff_t k = 0; k < c; k++)
		free(in->cuts[k].w);
	memmove(in->cuts, in->cuts + c, (in->n_cuts - (size_t)c) *
					       sizeof(in->cuts[0]));
	in->n_cuts -= (size_t)c;
	return 0;
}
