/* The agent's compute thread. It owns the backend and the model; the loop
 * thread hands it parameter blocks and minibatches through a queue and gets
 * gradients back through uv_async_send, so that sending one step's update
 * and receiving the next minibatch overlap the computation. Only the loop
 * thread calls these functions; on_result runs on the loop thread. */
#ifndef GP_AGENT_WORKER_H
#define GP_AGENT_WORKER_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <uv.h>

#include "adamw.h"
#include "backend.h"
#include "data.h"
#include "model.h"
#include "recompute.h"
#include "testhooks.h"

struct gp_worker;

struct gp_worker_config {
	enum gp_backend_type backend;
	int device_index;        /* OpenCL device index */
	int threads;             /* CPU backend BLAS threads, <= 0: default */
	/* The model in text (WELCOME.model_text): the shorthand or a
	 * description, NUL-terminated. */
	char spec[GP_MODEL_DESC_MAX + 1];
	/* The job's seed: minibatch (epoch, m) computes with the dropout
	 * seed gp_model_minibatch_seed(seed, epoch, m). */
	uint64_t seed;
	size_t max_batch;
	/* Test only (testhooks.h): a slow laptop, a step that fails. */
	struct gp_testhooks test;
	/* The volunteer's CPU/GPU share, a duty cycle: after each step the
	 * thread reports the result, then rests before the next job so that
	 * computing takes at most this share of the wall time (gp_worker_stop
	 * ends a rest at once). 0 or 1: no rest. */
	double duty;
};

/* Most minibatches in one group (== GP_MSG_GROUP_MAX). */
#define GP_WORKER_GROUP_MAX 256

/* One minibatch of a group. */
struct gp_worker_item {
	uint32_t epoch;
	uint64_t minibatch;
	float loss;
};

/* One computed minibatch, or a group of them (n_items > 0), owned by the
 * receiver of on_result (gp_worker_result_free). For a group, epoch,
 * minibatch and clock are the first's, samples, correct and compute_us
 * the sums, loss the mean per sample and grad_norm the norm of a divided
 * by sum_i mu^i (a weighted mean gradient); grads holds the sum a and
 * sums_b the sum b of GP_UPDATE_SUMS (proto/msg.h). A failed result
 * (error < 0) names the minibatch that failed and carries no gradient;
 * for a group it stands for the whole group. */
struct gp_worker_result {
	int error;               /* 0, or the negative errno of the step */
	/* gp_worker_generation() when the work was queued: a result whose
	 * generation is no longer the current one answers work of a
	 * connection that is gone. */
	uint64_t gen;
	uint32_t epoch;
	uint64_t minibatch;
	uint64_t clock;
	uint32_t samples;
	double loss;
	size_t correct;
	double grad_norm;
	uint64_t compute_us;
	float *grads;            /* every tensor's gradient, in tensor order */
	size_t n_grads;
	float *sums_b;           /* group of sums only, n_grads floats */
	/* A group of local AdamW steps (gp_worker_set_inner): grads holds
	 * the run's change w_start - w_end (GP_UPDATE_DELTA), sums_b is
	 * NULL, and grad_norm is |change| / the sum of the rates. */
	bool delta;
	/* A delta's run, numbered from 1 in the session (0: not a delta),
	 * for gp_worker_rebase_params. */
	uint64_t run;
	struct gp_worker_item *items; /* group only, n_items */
	size_t n_items;
	/* The answer to a verification (gp_worker_verify), not training
	 * work: task is its id, grads holds the gradient or the sum A and
	 * sums_b the sum B (sums only); of the other fields only gen,
	 * error, n_grads and compute_us are set. */
	bool verify;
	uint64_t task;
	struct gp_worker_result *next;
};

typedef void gp_worker_result_cb(struct gp_worker *w,
				 struct gp_worker_result *res, void *data);

/* Starts the thread, which creates the backend and the model. cfg is
 * copied. On success *ret is owned by the caller (gp_worker_stop). A failure
 * to create the backend or model is reported by gp_worker_start itself
 * (it waits for the thread to be ready), with the backend's error text in
 * err. */
int gp_worker_start(uv_loop_t *loop, const struct gp_worker_config *cfg,
		    gp_worker_result_cb *on_result, void *data,
		    struct gp_worker **ret, char *err, size_t errlen);

/* Stops the thread after the job in hand (a rest after it ends at once),
 * drops queued jobs and results, frees everything. NULL is a no-op. Must not be called from on_result. */
void gp_worker_stop(struct gp_worker *w);

/* The model's tensor layout (valid after start). Borrowed. */
size_t gp_worker_tensor_count(const struct gp_worker *w);
const struct gp_tensor_info *gp_worker_tensor(const struct gp_worker *w,
					      size_t i);

/* Queues rows [row0, row0 + rows) of tensor i's parameters (slot
 * GP_MODEL_PARAM) or momentum (GP_MODEL_MOMENTUM, the pool's, which the
 * local steps then go on with); values
 * (rows * cols floats) are taken (malloc'd, freed by the worker). Jobs run
 * in order, so parameters queued before a minibatch are in place for it. */
int gp_worker_set_params(struct gp_worker *w, enum gp_model_slot slot,
			 size_t tensor, size_t row0, size_t rows, float *values);

/* Local AdamW steps (GP_CAP_INNER_ADAMW in proto/msg.h). */
struct gp_worker_inner {
	bool on;
	struct gp_adamw_config adamw;
	float clip_norm;         /* > 0: clip each gradient's norm to it */
	/* GP_CAP_OVERLAP: keep the copy as each run was cut, so that
	 * parameters may come under the work in hand
	 * (gp_worker_rebase_params). */
	bool overlap;
};

/* Queues a new session's local-step settings (in, copied): from the
 * minibatches queued after it, with in->on, each minibatch takes an AdamW
 * step of the worker's own moments, which start at zero here (step count
 * 0), and every minibatch is in a group (a lone one a group of one),
 * answered with its change (gp_worker_result.delta); without, the SGD
 * local steps and sums below. An open group is dropped. Returns 0,
 * -EINVAL (a setting out of range), -ENOMEM. */
int gp_worker_set_inner(struct gp_worker *w,
			const struct gp_worker_inner *in);

/* The copies of the parameters kept for gp_worker_rebase_params (n_params
 * floats each): the runs cut since the one the last pull named, the
 * oldest dropped beyond this many. The reference coordinator pulls after
 * every second update read (GP_WORK_OVERLAP_RUNS) with at most two runs
 * open, so a pull names one of the last three or four while each run is
 * one group (at most 256 minibatches); a run of more groups, on a slow
 * link, can outrun them, and the pull then replaces the copy (logged).
 * An agent alone, never pulled, keeps this many. */
#define GP_WORKER_CUTS_MAX 6

/* GP_CAP_OVERLAP: parameter rows [row0, row0 + rows) of tensor i as the
 * coordinator holds them once it has the update of run `ref` (a
 * gp_worker_result.run; 0: none of this session's yet), taken under the
 * work in hand: the copy's rows become values plus what its local steps
 * did since run ref was cut (copy - cut), and an open run's start
 * moves by as much, so that its change stays its own. The job goes
 * before the minibatches queued (not before other parameters), since it
 * keeps their work. With no copy of run ref kept (ref UINT64_MAX, or
 * too old), or without overlap, the rows replace the copy as
 * gp_worker_set_params does, local work and all. values taken. */
int gp_worker_rebase_params(struct gp_worker *w, size_t tensor, size_t row0,
			    size_t rows, float *values, uint64_t ref);

/* Queues one minibatch (every one queued is answered by a result, unless
 * gp_worker_drop_queued() drops it first): n samples of the model's
 * inputs, as elements of dtype (enum gp_data_dtype: u8 scaled by 1/255, or
 * f32 LE), and n u8 labels; pixels and labels are taken (malloc'd). With lr > 0 the worker
 * then applies the gradient to its own parameters (SGD, momentum mu, its
 * own velocity), so the next minibatch sees this one's step before the
 * coordinator sends parameters again (read-my-writes); lr and mu come from
 * the wire and are ignored unless finite, lr <= 10 and 0 <= mu < 1.
 * group > 1 opens a group: this minibatch and the next group - 1 are
 * reported as one result with their momentum sums (n_items > 0); a group
 * cut short by gp_worker_drop_queued() or by the next group is dropped.
 * A failed minibatch is reported at once with its error; in a group, it
 * fails the group, whose other minibatches are then not computed (the
 * whole group's work is lost: the caller gives it back). Returns 0, or
 * -ENOMEM (nothing queued; pixels and labels freed). */
int gp_worker_compute(struct gp_worker *w, uint32_t epoch,
		      uint64_t minibatch, uint64_t clock, uint32_t n,
		      uint8_t *pixels, uint8_t dtype, uint8_t *labels,
		      float lr, float mu,
		      uint32_t group);

/* A recomputation of another member's update (VERIFY_TASK in
 * proto/msg.h): what gp_recompute() computes from w0 (and v0) for the
 * items, on the worker's device. The arrays are taken by
 * gp_worker_verify(), also when it fails. */
struct gp_worker_verify {
	uint64_t task;            /* echoed in the result */
	bool sums;                /* GP_UPDATE_SUMS, else one gradient */
	float mu;                 /* the local steps' momentum */
	/* k items (taken); their idx point into idx (taken), the items'
	 * indices one after the other, each below data->count. */
	struct gp_recompute_item *items;
	size_t k;
	uint32_t *idx;
	/* The parameters and, with sums, the momentum to start from, in
	 * tensor order (the model's parameter count each; taken; v0 NULL
	 * without sums). */
	float *w0, *v0;
	/* The training set the indices name: borrowed, it must outlive the
	 * worker (gp_worker_stop). */
	const struct gp_dataset *data;
};

/* Queues a verification (t's arrays taken; t itself borrowed). It runs in
 * queue order like a minibatch, with the same rest after it (cfg.duty),
 * but on a scratch model of the same spec and batch, made at the first
 * one and kept: the worker's own parameters, momentum and open group are
 * not touched. Its result has verify set (error < 0: not computed, e.g.
 * -ENOMEM, or -EINVAL when the data set's samples do not fit the model);
 * gp_worker_drop_queued() drops it while queued. Returns 0, -EINVAL (no
 * item, no w0, sums without v0, no data set) or -ENOMEM; nothing is
 * queued then and the arrays are freed. */
int gp_worker_verify(struct gp_worker *w, struct gp_worker_verify *t);

/* Frees t's arrays (a task read but not queued). Inline: machine.c,
 * which reaches the worker only through its ops, frees them too. */
static inline void gp_worker_verify_free(const struct gp_worker_verify *t)
{
	free(t->items);
	free(t->idx);
	free(t->w0);
	free(t->v0);
}

/* The model's input width: elements of one sample (valid after start). */
size_t gp_worker_inputs(const struct gp_worker *w);

/* Floating-point operations one training sample costs (forward and
 * backward), for the contribution statistics. */
double gp_worker_flops_per_sample(const struct gp_worker *w);

/* Jobs queued or in hand, not yet reported. */
size_t gp_worker_pending(const struct gp_worker *w);

/* Drops every queued minibatch and verification not yet started (the
 * coordinator went away and will hand them out again; a verification's
 * answer has nobody to go to) and starts a new generation: the job in
 * hand, which cannot be stopped, still reports, with the old generation
 * in its result. */
void gp_worker_drop_queued(struct gp_worker *w);

/* The current generation: 0 at start, one more after each
 * gp_worker_drop_queued(). Results carry the generation their work was
 * queued in (gp_worker_result.gen). */
uint64_t gp_worker_generation(const struct gp_worker *w);

void gp_worker_result_free(struct gp_worker_result *res);

#endif
