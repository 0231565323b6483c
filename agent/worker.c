#include "worker.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adamw.h"
#include "data.h"
#include "log.h"
#include "tokens.h"
#include "util.h"

enum job_kind {
	JOB_PARAMS,
	JOB_COMPUTE,
	JOB_INNER,
	JOB_VERIFY,
};

struct job {
	enum job_kind kind;
	struct job *next;
	/* JOB_PARAMS */
	enum gp_model_slot slot;
	size_t tensor, row0, rows;
	float *values;
	bool rebase;              /* gp_worker_rebase_params, onto run ref */
	uint64_t ref;
	/* JOB_INNER */
	struct gp_worker_inner inner;
	/* JOB_VERIFY (its arrays owned by the job) */
	struct gp_worker_verify verify;
	/* JOB_COMPUTE */
	uint32_t epoch;
	uint64_t minibatch, clock;
	uint32_t n;
	uint8_t *pixels, *labels;
	uint8_t dtype;            /* the pixels' enum gp_data_dtype */
	float lr, mu;
	uint32_t group;           /* > 1: opens a group of that many */
	uint64_t gen;             /* gp_worker_drop_queued() generation */
	/* Allocated with the job (JOB_COMPUTE, JOB_VERIFY), so that the
	 * thread can always answer it, even with a failure: a minibatch never
	 * answered would hold the coordinator's clock for this agent until
	 * its work timeout. */
	struct gp_worker_result *res;
};

/* The group being summed (GP_UPDATE_SUMS). Its minibatches take the
 * fused local step (gp_model_train_step, as a local loop does) and the sums
 * come from the copy's change at the end: with w0, v0 the parameters and
 * velocity at the group's start, a = vK - mu^K v0 and
 * sum_j lr_j a_j = w0 - wK - (sum_j lr_j mu^j) v0. */
struct group {
	uint32_t left;            /* minibatches still to come; 0: none open */
	uint32_t count;           /* computed so far */
	uint64_t gen;
	uint64_t clock;
	bool failed;              /* reported; the rest is not computed */
	float mu;
	float *w0, *v0;           /* n_params each, host */
	float lrs[GP_WORKER_GROUP_MAX];
	struct gp_worker_result *res; /* what is reported at the end */
};

/* Local AdamW steps (gp_worker_set_inner): the session's own moments
 * and step count, and host copies of the parameters and gradient that
 * the step reads and writes (kernels/adamw.h works on host floats; the
 * backend keeps the copy the next minibatch computes with). */
struct inner {
	bool on;
	/* Asked for (on, or its state could not be allocated): every
	 * minibatch must then be answered by a delta or not at all, as the
	 * coordinator refuses a gradient from such an agent. */
	bool want;
	struct gp_worker_inner cfg;
	uint64_t t;               /* steps taken this session */
	float *m, *v, *w, *g;     /* n_params each */
	/* GP_CAP_OVERLAP (cfg.overlap): runs cut this session, and the
	 * copy as it was when each of the last ones was cut (run 0: as the
	 * session's first run began), moved with the copy at each rebase;
	 * oldest first. */
	uint64_t runs;
	uint64_t lost;            /* pulls that found no cut, for the log */
	struct cut {
		uint64_t run;
		float *w;         /* n_params */
	} cuts[GP_WORKER_CUTS_MAX];
	size_t n_cuts;
};

struct gp_worker {
	struct gp_worker_config cfg;
	uv_loop_t *loop;
	uv_async_t async;
	gp_worker_result_cb *on_result;
	void *data;
	pthread_t thread;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *head, *tail;  /* queued jobs */
	size_t pending;           /* queued + in hand */
	struct gp_worker_result *results, *results_tail;
	bool stopping;
	bool ready;
	uint64_t gen;
	int start_error;
	char start_errmsg[512];

	/* Owned by the thread. */
	struct gp_backend *be;
	struct gp_model *model;
	size_t n_tensors;
	struct gp_tensor_info tensors[2 * GP_MODEL_MAX_NODES];
	size_t n_params;
	size_t inputs;            /* the model's input width */
	double flops_per_sample;
	float *x;
	int32_t *y;
	size_t labels;            /* labels a sample */
	uint32_t vocab;           /* the classes (a language model's tokens) */
	struct group grp;
	struct inner inner;
	/* Verifications' model (gp_worker_verify): the same spec and batch
	 * as model, made at the first, so that recomputing another member's
	 * update leaves this agent's own copy, momentum and group alone. */
	struct gp_model *vmodel;
	uint64_t steps;           /* minibatches computed (test.fail_step) */
	uint64_t typical_us;      /* moving average of rest_basis() */
};

static void job_free(struct job *j)
{
	if (!j)
		return;
	gp_worker_verify_free(&j->verify);
	free(j->values);
	free(j->pixels);
	free(j->labels);
	free(j->res);
	free(j);
}

void gp_worker_result_free(struct gp_worker_result *res)
{
	if (!res)
		return;
	free(res->grads);
	free(res->sums_b);
	free(res->items);
	free(res);
}

static void post_result(struct gp_worker *w, struct gp_worker_result *res)
{
	pthread_mutex_lock(&w->lock);
	res->next = NULL;
	if (w->results_tail)
		w->results_tail->next = res;
	else
		w->results = res;
	w->results_tail = res;
	pthread_mutex_unlock(&w->lock);
	uv_async_send(&w->async);
}

/* The model's text for messages: the shorthand whole, a description's
 * first bytes. */
static const char *spec_name(const struct gp_worker *w, char *buf, size_t len)
{
	size_t n = strnlen(w->cfg.spec, len);

	if (n >= len) {
		n = len - 4;
		memcpy(buf + n, "...", 4);
	} else {
		buf[n] = '\0';
	}
	memcpy(buf, w->cfg.spec, n);
	return buf;
}

static int setup(struct gp_worker *w)
{
	struct gp_model_spec spec;
	char err[256], name[72];
	int r;

	r = gp_model_spec_parse(w->cfg.spec, &spec, err, sizeof(err));
	if (r < 0) {
		snprintf(w->start_errmsg, sizeof(w->start_errmsg),
			 "model '%s': %.200s", spec_name(w, name, sizeof(name)),
			 err);
		return r;
	}
	w->inputs = spec.dims[0];
	/* A language model reads token windows (tokens.h), one label a
	 * position. */
	w->labels = gp_model_spec_labels(&spec);
	if (w->cfg.backend == GP_BACKEND_OPENCL)
		r = gp_backend_create_opencl(w->cfg.device_index, &w->be);
	else
		r = gp_backend_create_cpu(w->cfg.threads, &w->be);
	if (r < 0) {
		snprintf(w->start_errmsg, sizeof(w->start_errmsg),
			 "cannot open the %s backend: %s",
			 w->cfg.backend == GP_BACKEND_OPENCL ? "OpenCL" : "CPU",
			 w->be ? gp_backend_error(w->be) : strerror(-r));
		return r;
	}
	r = gp_model_create(w->be, &spec, w->cfg.max_batch, &w->model);
	if (r == -ENOTSUP && w->cfg.backend == GP_BACKEND_OPENCL) {
		/* A layer the OpenCL kernels lack yet: the job still runs,
		 * on the CPU, and the volunteer's log says why. */
		gp_warn("%s; computing on the CPU instead",
			gp_backend_error(w->be));
		gp_backend_destroy(w->be);
		w->be = NULL;
		r = gp_backend_create_cpu(w->cfg.threads, &w->be);
		if (r < 0) {
			snprintf(w->start_errmsg, sizeof(w->start_errmsg),
				 "cannot open the CPU backend: %s",
				 w->be ? gp_backend_error(w->be) : strerror(-r));
			return r;
		}
		r = gp_model_create(w->be, &spec, w->cfg.max_batch, &w->model);
	}
	if (r < 0) {
		snprintf(w->start_errmsg, sizeof(w->start_errmsg),
			 "cannot create the model: %s", gp_backend_error(w->be));
		return r;
	}
	w->n_tensors = gp_model_tensor_count(w->model);
	w->n_params = gp_model_param_count(w->model);
	for (size_t i = 0; i < w->n_tensors; i++)
		gp_model_tensor_info(w->model, i, &w->tensors[i]);
	/* Forward GEMMs, weight-gradient GEMMs and the input gradients
	 * somebody needs (not the first layer's). */
	w->flops_per_sample = gp_model_spec_train_flops(&spec);
	w->vocab = spec.dims[spec.n_layers];
	w->x = malloc(w->cfg.max_batch * w->inputs * sizeof(float));
	w->y = malloc(w->cfg.max_batch * w->labels * sizeof(int32_t));
	if (!w->x || !w->y)
		return -ENOMEM;
	return 0;
}

static void inner_free(struct inner *in)
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
static void cut_keep(struct inner *in, uint64_t run, float *copy)
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
static ptrdiff_t cut_find(const struct inner *in, uint64_t run)
{
	for (size_t i = 0; i < in->n_cuts; i++)
		if (in->cuts[i].run == run)
			return (ptrdiff_t)i;
	return -1;
}

/* Starts a session's local AdamW state from zero (cfg->on), or ends it. */
static int inner_reset(struct gp_worker *w, const struct gp_worker_inner *cfg)
{
	struct inner *in = &w->inner;
	size_t n = w->n_params;

	inner_free(in);
	if (!cfg->on)
		return 0;
	in->want = true;
	in->m = calloc(n, sizeof(float));
	in->v = calloc(n, sizeof(float));
	in->w = malloc(n * sizeof(float));
	in->g = malloc(n * sizeof(float));
	if (!in->m || !in->v || !in->w || !in->g) {
		inner_free(in);
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
static int inner_step(struct gp_worker *w, float lr)
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

/* Computes one minibatch. Returns its result (taken from the job, never
 * NULL), with error set when the step failed. */
static struct gp_worker_result *compute(struct gp_worker *w, struct job *j)
{
	struct gp_worker_result *res = j->res;
	struct gp_model_stats st;
	uint64_t t0 = gp_mono_us();
	double sumsq = 0;
	size_t off = 0;
	int r;

	j->res = NULL;
	res->gen = j->gen;
	res->epoch = j->epoch;
	res->minibatch = j->minibatch;
	res->clock = j->clock;
	res->samples = j->n;
	if (j->n == 0 || j->n > w->cfg.max_batch) {
		res->error = -EINVAL;
		return res;
	}
	if (w->cfg.test.fail_step && ++w->steps == w->cfg.test.fail_step) {
		gp_debug("test: minibatch %" PRIu64 " fails on purpose",
			 j->minibatch);
		res->error = -EIO;
		return res;
	}
	if (w->labels > 1) {
		/* Windows of token ids; their labels are their own next
		 * tokens. */
		r = gp_tokens_unpack(j->pixels, j->n, w->inputs, w->vocab,
				     w->x, w->y);
		if (r < 0) {
			res->error = -EINVAL;
			return res;
		}
	} else {
		gp_data_to_floats(w->x, j->pixels, (size_t)j->n * w->inputs,
				  j->dtype);
		for (size_t i = 0; i < j->n; i++)
			w->y[i] = j->labels[i];
	}
	r = gp_model_set_batch(w->model, w->x, w->y, j->n);
	/* Dropout masks are the minibatch's own, wherever it is computed. */
	gp_model_set_seed(w->model, gp_model_minibatch_seed(w->cfg.seed,
							    j->epoch,
							    j->minibatch));
	if (r >= 0 && w->grp.left && w->inner.on) {
		/* A local AdamW step; the run's change comes at its end. */
		r = gp_model_compute_grads(w->model, j->n, &st);
		if (r >= 0)
			r = inner_step(w, j->lr);
		if (r < 0) {
			res->error = r;
			return res;
		}
		res->loss = st.loss;
		res->correct = st.correct;
		goto done;
	}
	if (r >= 0 && w->grp.left) {
		/* In a group: the local step only; the sums come at its end. */
		r = gp_model_train_step(w->model, j->n, j->lr, j->mu, &st);
		if (r < 0) {
			res->error = r;
			return res;
		}
		res->loss = st.loss;
		res->correct = st.correct;
		goto done;
	}
	if (r >= 0)
		r = gp_model_compute_grads(w->model, j->n, &st);
	if (r >= 0) {
		res->grads = malloc(w->n_params * sizeof(float));
		if (!res->grads)
			r = -ENOMEM;
	}
	for (size_t i = 0; r >= 0 && i < w->n_tensors; i++) {
		r = gp_model_read(w->model, GP_MODEL_GRAD, i, 0,
				  w->tensors[i].rows, res->grads + off);
		off += w->tensors[i].rows * w->tensors[i].cols;
	}
	/* Read-my-writes: the coordinator applies the same gradient with the
	 * same rate; until it sends parameters again, this copy follows. */
	if (r >= 0 && j->lr > 0)
		r = gp_model_apply_grads(w->model, j->lr, j->mu);
	if (r < 0) {
		res->error = r;
		free(res->grads);
		res->grads = NULL;
		return res;
	}
	if (gp_model_grad_sumsq(w->model, &sumsq) < 0)
		sumsq = 0;
	res->n_grads = w->n_params;
	res->loss = st.loss;
	res->correct = st.correct;
	res->grad_norm = sqrt(sumsq);
done:
	if (w->cfg.test.step_delay_ms) {
		struct timespec ts = {
			.tv_sec = w->cfg.test.step_delay_ms / 1000,
			.tv_nsec = (long)(w->cfg.test.step_delay_ms % 1000) * 1000000L,
		};
		nanosleep(&ts, NULL);
	}
	res->compute_us = gp_mono_us() - t0;
	return res;
}

/* Recomputes another member's update (gp_worker_verify) on the scratch
 * model, made here at the first verification. Returns its result (taken
 * from the job, never NULL), with error set when it was not computed. */
static struct gp_worker_result *verify(struct gp_worker *w, struct job *j)
{
	const struct gp_worker_verify *t = &j->verify;
	struct gp_worker_result *res = j->res;
	uint64_t t0 = gp_mono_us();
	int r = 0;

	j->res = NULL;
	res->verify = true;
	res->task = t->task;
	res->gen = j->gen;
	/* gp_recompute() gathers the samples into the worker's x and y:
	 * images of the model's input width, one label each. */
	if (t->data->features != w->inputs || w->labels != 1)
		r = -EINVAL;
	if (r >= 0 && !w->vmodel) {
		r = gp_model_create(w->be, gp_model_get_spec(w->model),
				    w->cfg.max_batch, &w->vmodel);
		if (r < 0)
			gp_debug("no model for verifications: %s",
				 gp_backend_error(w->be));
	}
	if (r >= 0) {
		res->grads = malloc(w->n_params * sizeof(float));
		if (t->sums)
			res->sums_b = malloc(w->n_params * sizeof(float));
		if (!res->grads || (t->sums && !res->sums_b))
			r = -ENOMEM;
	}
	if (r >= 0)
		r = gp_recompute(w->vmodel,
				 &(struct gp_recompute_data){ .train = t->data },
				 w->cfg.seed, t->sums,
				 t->mu, t->items, t->k, t->w0, t->v0, w->x,
				 w->y, res->grads, res->sums_b);
	if (r < 0) {
		free(res->grads);
		free(res->sums_b);
		res->grads = res->sums_b = NULL;
		res->error = r;
	} else {
		res->n_grads = w->n_params;
	}
	res->compute_us = gp_mono_us() - t0;
	return res;
}

static void group_reset(struct gp_worker *w)
{
	gp_worker_result_free(w->grp.res);
	w->grp.res = NULL;
	w->grp.left = 0;
	w->grp.count = 0;
	w->grp.failed = false;
}

/* The group's sums from the copy's change (see struct group): a into
 * out->grads, b (divided by the rates' sum) into out->sums_b. */
static int group_finish(struct gp_worker *w, struct gp_worker_result *out)
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
			cut_keep(&w->inner, out->run, b);
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
static struct gp_worker_result *group_add(struct gp_worker *w,
					  const struct job *j,
					  struct gp_worker_result *res)
{
	struct group *g = &w->grp;
	struct gp_worker_result *out = g->res;
	int r;

	if (res->error < 0) {
		g->failed = true;
		if (--g->left == 0)
			group_reset(w);
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
	if ((r = group_finish(w, out)) < 0)
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
static struct gp_worker_result *group_cut(struct gp_worker *w)
{
	struct group *g = &w->grp;
	struct gp_worker_result *out = g->res;
	int r;

	if (!g->count || g->failed || !out) {
		group_reset(w);
		return NULL;
	}
	g->res = NULL;
	r = group_finish(w, out);
	out->loss /= out->samples ? out->samples : 1;
	group_reset(w);
	if (r < 0)
		out->error = r;
	return out;
}

/* Posts a result that no queued job accounts for (a group cut short). */
static void post_extra(struct gp_worker *w, struct gp_worker_result *res)
{
	pthread_mutex_lock(&w->lock);
	w->pending++;
	pthread_mutex_unlock(&w->lock);
	post_result(w, res);
}

/* Opens a group of j->group minibatches (at least one): snapshots the
 * copy. Returns 0 or a negative errno (the minibatch is then answered
 * alone). */
static int group_open(struct gp_worker *w, const struct job *j)
{
	struct group *g = &w->grp;
	/* Local AdamW steps answer a lone minibatch as a group of one. */
	uint32_t size = j->group ? j->group : 1;
	int r = -ENOMEM;

	group_reset(w);
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
	    cut_find(&w->inner, 0) < 0) {
		float *c = malloc(w->n_params * sizeof(float));

		if (c) {
			memcpy(c, g->w0, w->n_params * sizeof(float));
			cut_keep(&w->inner, 0, c);
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
	group_reset(w);
	return r;
}

/* The part of a step's wall time (wall_us) that counts as computing for the
 * volunteer's share. A process stopped in a step (SIGSTOP, a suspended
 * laptop, a debugger) spent no CPU meanwhile: counted as computing, a 4 s
 * stop at a share of 0.2 became a 16 s rest with the pool's work held.
 * The process's CPU time over the step (cpu_us; every thread, the BLAS
 * threads included) does not grow while stopped. A device that computes
 * while the thread waits (a GPU) spends little CPU, so a step counts at
 * least twice the typical step's wall time seen so far; the smaller of
 * that and the wall time is used. The test hook's delay stands for a slow
 * device's computing and counts as CPU time. */
static uint64_t rest_basis(struct gp_worker *w, uint64_t wall_us,
			   uint64_t cpu_us)
{
	uint64_t floor_us = cpu_us + (uint64_t)w->cfg.test.step_delay_ms * 1000;
	uint64_t basis;

	if (floor_us < 2 * w->typical_us)
		floor_us = 2 * w->typical_us;
	basis = wall_us < floor_us ? wall_us : floor_us;
	w->typical_us = w->typical_us ? (4 * w->typical_us + basis) / 5 : basis;
	return basis;
}

static uint64_t process_cpu_us(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) < 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* The volunteer's share (cfg.duty): after a step of step_us, the thread
 * rests step_us * (1/duty - 1) before it takes the next job, so that
 * computing takes at most that share of the wall time (the coordinator sees
 * a slower device and hands out work accordingly). The rest comes after the
 * step's result went to the loop, never before: at a share of 0.01 it is
 * 99 steps long, and a result held that long would miss the coordinator's
 * work timeout. It waits on the queue's condition, so that
 * gp_worker_stop() ends it at once; a new job or a lost connection does
 * not (the share is the volunteer's limit, whatever the pool does). */
static void rest(struct gp_worker *w, uint64_t step_us)
{
	struct timespec until;
	uint64_t rest_us;

	if (!(w->cfg.duty > 0 && w->cfg.duty < 1) || !step_us)
		return;
	rest_us = (uint64_t)((double)step_us * (1.0 / w->cfg.duty - 1.0));
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += (time_t)(rest_us / 1000000);
	until.tv_nsec += (long)(rest_us % 1000000) * 1000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&w->lock);
	while (!w->stopping &&
	       pthread_cond_timedwait(&w->cond, &w->lock, &until) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&w->lock);
}

/* Rows of parameters written whole over the copy: every cut kept takes
 * them too, so that the copy less a cut is again what the local steps
 * did since (nothing yet), whatever run a later pull names. */
static void cuts_set(struct gp_worker *w, const struct job *j)
{
	struct inner *in = &w->inner;
	size_t cols = w->tensors[j->tensor].cols, off = 0;

	for (size_t t = 0; t < j->tensor; t++)
		off += w->tensors[t].rows * w->tensors[t].cols;
	off += j->row0 * cols;
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
static int rebase_rows(struct gp_worker *w, const struct job *j)
{
	struct inner *in = &w->inner;
	size_t cols = w->tensors[j->tensor].cols, off = 0,
	       n = j->rows * cols;
	ptrdiff_t c = in->on && in->cfg.overlap ? cut_find(in, j->ref) : -1;
	float *cur, *base;
	int r;

	if (j->slot != GP_MODEL_PARAM || !in->on || !in->cfg.overlap)
		return -ENOENT;
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
	for (size_t t = 0; t < j->tensor; t++)
		off += w->tensors[t].rows * w->tensors[t].cols;
	off += j->row0 * cols;
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

static void *thread_main(void *arg)
{
	struct gp_worker *w = arg;
	int r = setup(w);

	pthread_mutex_lock(&w->lock);
	w->start_error = r < 0 ? r : 0;
	w->ready = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	if (r < 0)
		return NULL;

	for (;;) {
		struct job *j;

		pthread_mutex_lock(&w->lock);
		while (!w->head && !w->stopping)
			pthread_cond_wait(&w->cond, &w->lock);
		if (w->stopping) {
			pthread_mutex_unlock(&w->lock);
			break;
		}
		j = w->head;
		w->head = j->next;
		if (!w->head)
			w->tail = NULL;
		pthread_mutex_unlock(&w->lock);

		if (j->kind == JOB_INNER) {
			/* A new session: what a group had is not its. */
			group_reset(w);
			r = inner_reset(w, &j->inner);
			if (r < 0)
				gp_warn("no memory for local AdamW steps: %s; "
					"the next minibatch fails",
					strerror(-r));
			pthread_mutex_lock(&w->lock);
			w->pending--;
			pthread_mutex_unlock(&w->lock);
		} else if (j->kind == JOB_PARAMS && j->rebase &&
			   rebase_rows(w, j) == 0) {
			/* Under the work in hand: the open run goes on. */
			pthread_mutex_lock(&w->lock);
			w->pending--;
			pthread_mutex_unlock(&w->lock);
		} else if (j->kind == JOB_PARAMS) {
			/* Parameters in the middle of a group (not what a
			 * coordinator sends) would spoil its sums: answer what
			 * it has first. */
			if (w->grp.left) {
				struct gp_worker_result *cut =
					j->gen == w->grp.gen ? group_cut(w) : NULL;

				group_reset(w);
				if (cut)
					post_extra(w, cut);
			}
			r = gp_model_write(w->model, j->slot, j->tensor,
					   j->row0, j->rows, j->values);
			if (r < 0)
				gp_warn("cannot load parameters of tensor %zu: %s",
					j->tensor, gp_backend_error(w->be));
			else if (j->slot == GP_MODEL_PARAM)
				cuts_set(w, j);
			pthread_mutex_lock(&w->lock);
			w->pending--;
			pthread_mutex_unlock(&w->lock);
		} else if (j->kind == JOB_VERIFY) {
			/* Another member's group, on the scratch model: an open
			 * group of this agent's goes on after it untouched. Its
			 * rest is that of as many steps as it has items. */
			uint64_t cpu0 = process_cpu_us(), step_us;
			struct gp_worker_result *res = verify(w, j);
			uint64_t k = j->verify.k;

			step_us = k * rest_basis(w, res->compute_us / k,
						 (process_cpu_us() - cpu0) / k);
			post_result(w, res);
			job_free(j);
			rest(w, step_us);
			continue;
		} else {
			struct gp_worker_result *res;
			uint64_t step_us = 0;

			/* A group cut short: after the connection went away
			 * it is dropped (its minibatches are handed out again);
			 * when a new group, a minibatch of its own or another
			 * clock begins, what it has is answered. */
			if (w->grp.left && j->gen != w->grp.gen) {
				group_reset(w);
			} else if (w->grp.left && (j->group >= 1 ||
						   j->clock != w->grp.clock)) {
				struct gp_worker_result *cut = group_cut(w);

				if (cut)
					post_extra(w, cut);
			}
			if (w->grp.left && w->grp.failed) {
				/* The rest of a failed group, whose failure was
				 * reported: computing it would be wasted. */
				if (--w->grp.left == 0)
					group_reset(w);
				res = NULL;
			} else {
				/* With local AdamW steps every minibatch is
				 * in a group, a lone one a group of one. */
				bool open = j->group > 1 ||
					    (w->inner.on && !w->grp.left);
				int fail = 0;

				if (open && (r = group_open(w, j)) < 0) {
					gp_warn("cannot open a group of %u minibatches "
						"(%s); answering them one by one",
						j->group, strerror(-r));
					if (w->inner.want)
						fail = r;
				} else if (w->inner.want && !w->inner.on) {
					fail = -ENOMEM;
				}
				uint64_t cpu0 = process_cpu_us();

				res = compute(w, j);
				/* A gradient instead of a delta would be
				 * refused: the session restarts instead. */
				if (fail && res->error == 0)
					res->error = fail;
				step_us = rest_basis(w, res->compute_us,
						     process_cpu_us() - cpu0);
				if (w->grp.left)
					res = group_add(w, j, res);
			}
			if (res)
				post_result(w, res);
			else {
				pthread_mutex_lock(&w->lock);
				w->pending--;
				pthread_mutex_unlock(&w->lock);
			}
			job_free(j);
			rest(w, step_us);
			continue;
		}
		job_free(j);
	}
	return NULL;
}

static void on_async(uv_async_t *a)
{
	struct gp_worker *w = a->data;

	for (;;) {
		struct gp_worker_result *res;

		pthread_mutex_lock(&w->lock);
		res = w->results;
		if (res) {
			w->results = res->next;
			if (!w->results)
				w->results_tail = NULL;
			w->pending--;
		}
		pthread_mutex_unlock(&w->lock);
		if (!res)
			break;
		w->on_result(w, res, w->data);
	}
}

static void on_async_closed(uv_handle_t *h)
{
	struct gp_worker *w = h->data;

	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
}

static void release_thread_state(struct gp_worker *w)
{
	group_reset(w);
	inner_free(&w->inner);
	free(w->grp.w0);
	free(w->grp.v0);
	gp_model_destroy(w->vmodel);
	gp_model_destroy(w->model);
	gp_backend_destroy(w->be);
	free(w->x);
	free(w->y);
	while (w->head) {
		struct job *j = w->head;

		w->head = j->next;
		job_free(j);
	}
	while (w->results) {
		struct gp_worker_result *res = w->results;

		w->results = res->next;
		gp_worker_result_free(res);
	}
}

int gp_worker_start(uv_loop_t *loop, const struct gp_worker_config *cfg,
		    gp_worker_result_cb *on_result, void *data,
		    struct gp_worker **ret, char *err, size_t errlen)
{
	struct gp_worker *w = calloc(1, sizeof(*w));
	int r;

	if (!w)
		return -ENOMEM;
	w->cfg = *cfg;
	w->loop = loop;
	w->on_result = on_result;
	w->data = data;
	pthread_mutex_init(&w->lock, NULL);
	{
		/* The rest's deadline is on the monotonic clock: a clock set
		 * back (NTP at boot) must not stretch it. */
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&w->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	r = uv_async_init(loop, &w->async, on_async);
	if (r < 0) {
		pthread_mutex_destroy(&w->lock);
		pthread_cond_destroy(&w->cond);
		free(w);
		return r;
	}
	w->async.data = w;
	/* Results matter only while the session's channel keeps the loop
	 * running; an idle worker must not keep it alive on its own, or a
	 * stopping session would wait for ever. */
	uv_unref((uv_handle_t *)&w->async);
	r = -pthread_create(&w->thread, NULL, thread_main, w);
	if (r < 0) {
		uv_close((uv_handle_t *)&w->async, on_async_closed);
		return r;
	}
	pthread_mutex_lock(&w->lock);
	while (!w->ready)
		pthread_cond_wait(&w->cond, &w->lock);
	r = w->start_error;
	pthread_mutex_unlock(&w->lock);
	if (r < 0) {
		if (err && errlen)
			snprintf(err, errlen, "%s", w->start_errmsg);
		pthread_join(w->thread, NULL);
		release_thread_state(w);
		uv_close((uv_handle_t *)&w->async, on_async_closed);
		return r;
	}
	*ret = w;
	return 0;
}

void gp_worker_stop(struct gp_worker *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stopping = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	pthread_join(w->thread, NULL);
	release_thread_state(w);
	uv_close((uv_handle_t *)&w->async, on_async_closed);
}

size_t gp_worker_tensor_count(const struct gp_worker *w)
{
	return w->n_tensors;
}

const struct gp_tensor_info *gp_worker_tensor(const struct gp_worker *w,
					      size_t i)
{
	return i < w->n_tensors ? &w->tensors[i] : NULL;
}

/* Queues j after `after` (NULL: first), w->lock held. */
static void insert_locked(struct gp_worker *w, struct job *after,
			  struct job *j)
{
	j->next = after ? after->next : w->head;
	if (after)
		after->next = j;
	else
		w->head = j;
	if (!j->next)
		w->tail = j;
	w->pending++;
	j->gen = w->gen;
	pthread_cond_signal(&w->cond);
}

static int enqueue(struct gp_worker *w, struct job *j)
{
	pthread_mutex_lock(&w->lock);
	insert_locked(w, w->tail, j);
	pthread_mutex_unlock(&w->lock);
	return 0;
}

/* A JOB_PARAMS of rows [row0, row0 + rows) of tensor in slot (values
 * taken); NULL with *ret set when they do not fit the model or without
 * memory. */
static struct job *params_job(struct gp_worker *w, enum gp_model_slot slot,
			      size_t tensor, size_t row0, size_t rows,
			      float *values, int *ret)
{
	struct job *j;

	if (tensor >= w->n_tensors || row0 + rows > w->tensors[tensor].rows ||
	    rows == 0) {
		free(values);
		*ret = -EINVAL;
		return NULL;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		free(values);
		*ret = -ENOMEM;
		return NULL;
	}
	j->kind = JOB_PARAMS;
	j->slot = slot;
	j->tensor = tensor;
	j->row0 = row0;
	j->rows = rows;
	j->values = values;
	return j;
}

int gp_worker_rebase_params(struct gp_worker *w, size_t tensor, size_t row0,
			    size_t rows, float *values, uint64_t ref)
{
	struct job *j, *after = NULL;
	int r;

	if (!(j = params_job(w, GP_MODEL_PARAM, tensor, row0, rows, values,
			     &r)))
		return r;
	j->rebase = true;
	j->ref = ref;
	/* After the last job that is not a minibatch (parameters, settings
	 * and checks keep their order), before the minibatches queued
	 * after it: they are computed on the rows it brings. */
	pthread_mutex_lock(&w->lock);
	for (struct job *q = w->head; q; q = q->next)
		if (q->kind != JOB_COMPUTE)
			after = q;
	insert_locked(w, after, j);
	pthread_mutex_unlock(&w->lock);
	return 0;
}

int gp_worker_set_params(struct gp_worker *w, enum gp_model_slot slot,
			 size_t tensor, size_t row0, size_t rows, float *values)
{
	int r;
	struct job *j = params_job(w, slot, tensor, row0, rows, values, &r);

	return j ? enqueue(w, j) : r;
}

int gp_worker_compute(struct gp_worker *w, uint32_t epoch,
		      uint64_t minibatch, uint64_t clock, uint32_t n,
		      uint8_t *pixels, uint8_t dtype, uint8_t *labels,
		      float lr, float mu, uint32_t group)
{
	struct job *j = calloc(1, sizeof(*j));

	if (j)
		j->res = calloc(1, sizeof(*j->res));
	if (!j || !j->res) {
		free(j);
		free(pixels);
		free(labels);
		return -ENOMEM;
	}
	j->kind = JOB_COMPUTE;
	j->epoch = epoch;
	j->minibatch = minibatch;
	j->clock = clock;
	j->n = n;
	j->pixels = pixels;
	j->dtype = dtype;
	j->labels = labels;
	j->group = group <= GP_WORKER_GROUP_MAX ? group : 0;
	if (isfinite(lr) && isfinite(mu) && lr >= 0 && lr <= 10 && mu >= 0 &&
	    mu < 1) {
		j->lr = lr;
		j->mu = mu;
	}
	return enqueue(w, j);
}

int gp_worker_verify(struct gp_worker *w, struct gp_worker_verify *t)
{
	struct job *j;

	if (t->k == 0 || !t->items || !t->w0 || (t->sums && !t->v0) ||
	    !t->data) {
		gp_worker_verify_free(t);
		return -EINVAL;
	}
	j = calloc(1, sizeof(*j));
	if (j)
		j->res = calloc(1, sizeof(*j->res));
	if (!j || !j->res) {
		free(j);
		gp_worker_verify_free(t);
		return -ENOMEM;
	}
	j->kind = JOB_VERIFY;
	j->verify = *t;
	return enqueue(w, j);
}

int gp_worker_set_inner(struct gp_worker *w,
			const struct gp_worker_inner *in)
{
	struct job *j;

	if (in->on && (!gp_adamw_config_ok(&in->adamw) ||
		       !isfinite(in->clip_norm) || in->clip_norm < 0))
		return -EINVAL;
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->kind = JOB_INNER;
	j->inner = *in;
	return enqueue(w, j);
}

size_t gp_worker_inputs(const struct gp_worker *w)
{
	return w->inputs;
}

double gp_worker_flops_per_sample(const struct gp_worker *w)
{
	return w->flops_per_sample;
}

size_t gp_worker_pending(const struct gp_worker *w)
{
	size_t n;

	pthread_mutex_lock((pthread_mutex_t *)&w->lock);
	n = w->pending;
	pthread_mutex_unlock((pthread_mutex_t *)&w->lock);
	return n;
}

void gp_worker_drop_queued(struct gp_worker *w)
{
	struct job **pp, *j;

	pthread_mutex_lock(&w->lock);
	w->gen++;
	pp = &w->head;
	w->tail = NULL;
	while ((j = *pp)) {
		if (j->kind == JOB_COMPUTE || j->kind == JOB_VERIFY) {
			*pp = j->next;
			w->pending--;
			job_free(j);
		} else {
			w->tail = j;
			pp = &j->next;
		}
	}
	pthread_mutex_unlock(&w->lock);
}

uint64_t gp_worker_generation(const struct gp_worker *w)
{
	uint64_t gen;

	pthread_mutex_lock((pthread_mutex_t *)&w->lock);
	gen = w->gen;
	pthread_mutex_unlock((pthread_mutex_t *)&w->lock);
	return gen;
}
