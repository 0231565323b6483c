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
#include "worker-impl.h"

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
			r = wk_inner_step(w, j->lr);
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

/* Posts a result that no queued job accounts for (a group cut short). */
static void post_extra(struct gp_worker *w, struct gp_worker_result *res)
{
	pthread_mutex_lock(&w->lock);
	w->pending++;
	pthread_mutex_unlock(&w->lock);
	post_result(w, res);
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
			wk_group_reset(w);
			r = wk_inner_reset(w, &j->inner);
			if (r < 0)
				gp_warn("no memory for local AdamW steps: %s; "
					"the next minibatch fails",
					strerror(-r));
			pthread_mutex_lock(&w->lock);
			w->pending--;
			pthread_mutex_unlock(&w->lock);
		} else if (j->kind == JOB_PARAMS && j->rebase &&
			   wk_rebase_rows(w, j) == 0) {
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
					j->gen == w->grp.gen ? wk_group_cut(w) : NULL;

				wk_group_reset(w);
				if (cut)
					post_extra(w, cut);
			}
			r = gp_model_write(w->model, j->slot, j->tensor,
					   j->row0, j->rows, j->values);
			if (r < 0)
				gp_warn("cannot load parameters of tensor %zu: %s",
					j->tensor, gp_backend_error(w->be));
			else if (j->slot == GP_MODEL_PARAM)
				wk_cuts_set(w, j);
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
				wk_group_reset(w);
			} else if (w->grp.left && (j->group >= 1 ||
						   j->clock != w->grp.clock)) {
				struct gp_worker_result *cut = wk_group_cut(w);

				if (cut)
					post_extra(w, cut);
			}
			if (w->grp.left && w->grp.failed) {
				/* The rest of a failed group, whose failure was
				 * reported: computing it would be wasted. */
				if (--w->grp.left == 0)
					wk_group_reset(w);
				res = NULL;
			} else {
				/* With local AdamW steps every minibatch is
				 * in a group, a lone one a group of one. */
				bool open = j->group > 1 ||
					    (w->inner.on && !w->grp.left);
				int fail = 0;

				if (open && (r = wk_group_open(w, j)) < 0) {
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
					res = wk_group_add(w, j, res);
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
	wk_group_reset(w);
	wk_inner_free(&w->inner);
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
