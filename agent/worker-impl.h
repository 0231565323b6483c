/* The compute thread's private state (agent/worker.c, worker-runs.c):
 * the job queue, the open group (a run) and the session's local AdamW
 * state with the copies kept for overlap. Not for other files. */
#ifndef GP_WORKER_IMPL_H
#define GP_WORKER_IMPL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "model.h"
#include "worker.h"

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

/* worker-runs.c: groups (runs) and their results, local AdamW steps, and
 * the copies overlap keeps (all on the thread). */
void wk_inner_free(struct inner *in);
void wk_cut_keep(struct inner *in, uint64_t run, float *copy);
ptrdiff_t wk_cut_find(const struct inner *in, uint64_t run);
int wk_inner_reset(struct gp_worker *w, const struct gp_worker_inner *cfg);
int wk_inner_step(struct gp_worker *w, float lr);
void wk_group_reset(struct gp_worker *w);
int wk_group_finish(struct gp_worker *w, struct gp_worker_result *out);
struct gp_worker_result *wk_group_add(struct gp_worker *w,
				      const struct job *j,
				      struct gp_worker_result *res);
struct gp_worker_result *wk_group_cut(struct gp_worker *w);
int wk_group_open(struct gp_worker *w, const struct job *j);
void wk_cuts_set(struct gp_worker *w, const struct job *j);
int wk_rebase_rows(struct gp_worker *w, const struct job *j);

#endif
