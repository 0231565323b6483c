/* Unit tests of agent/worker: a group of minibatches (GP_UPDATE_SUMS) gives
 * the momentum sums that the same local steps give on a reference model;
 * a group cut short by a lone minibatch answers what it computed; a group
 * cut by gp_worker_drop_queued() (the connection went away) is dropped;
 * every job is accounted for (gp_worker_pending() back to 0). On a slow
 * worker: the job in hand when the connection went away reports with the
 * old generation (what the session drops), the next with the new one; a
 * failed minibatch in a group is reported at once, as itself, and the
 * worker goes on with the next. At a small share (duty cycle), a step's
 * result comes about one step after it was queued, the rest follows it
 * before the next step, and gp_worker_stop() does not wait the rest out.
 * Local AdamW steps answer with their runs' changes, as AdamW in double
 * computes them. A verification (gp_worker_verify) gives bit for bit what
 * gp_recompute() gives, and what the worker's own group of the same
 * minibatches gives, while the worker's own parameters, momentum and an
 * open group are left as they were; a queued one is dropped with the
 * connection's work. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "data.h"
#include "model.h"
#include "recompute.h"
#include "test.h"
#include "worker.h"

#define SPEC "784-32-10"
#define BATCH 16
#define MU 0.9f

static struct gp_worker_result *results[8];
static size_t n_results;

static void on_result(struct gp_worker *w, struct gp_worker_result *res,
		      void *data)
{
	(void)w;
	(void)data;
	ASSERT(n_results < 8);
	results[n_results++] = res;
}

static void on_tick(uv_timer_t *t)
{
	size_t *want = t->data;

	if (n_results >= *want)
		uv_stop(t->loop);
}

/* Runs the loop until `want` results are in (or 20 s passed). */
static void wait_results(uv_loop_t *loop, size_t want)
{
	uv_timer_t t;
	uint64_t start = uv_now(loop);

	uv_timer_init(loop, &t);
	t.data = &want;
	uv_timer_start(&t, on_tick, 1, 1);
	while (n_results < want && uv_now(loop) - start < 20000) {
		uv_run(loop, UV_RUN_DEFAULT);
		uv_update_time(loop);
	}
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	ASSERT_UINT_EQ(n_results, want);
}

static void free_results(void)
{
	for (size_t i = 0; i < n_results; i++)
		gp_worker_result_free(results[i]);
	n_results = 0;
}

struct batch {
	uint8_t px[BATCH * GP_DATA_PIXELS];
	uint8_t lb[BATCH];
	float x[BATCH * GP_DATA_PIXELS];
	int32_t y[BATCH];
};

static void make_batch(struct batch *b, unsigned seed)
{
	srand(seed);
	for (size_t i = 0; i < sizeof(b->px); i++) {
		b->px[i] = (uint8_t)(rand() & 0xff);
		b->x[i] = (float)b->px[i] * (1.0f / 255.0f);
	}
	for (size_t i = 0; i < BATCH; i++) {
		b->lb[i] = (uint8_t)(rand() % GP_DATA_CLASSES);
		b->y[i] = b->lb[i];
	}
}

static void *copy(const void *p, size_t n)
{
	void *q = malloc(n);

	ASSERT_NOT_NULL(q);
	memcpy(q, p, n);
	return q;
}

static void compute(struct gp_worker *w, const struct batch *b, uint64_t id,
		    uint64_t clock, float lr, uint32_t group)
{
	ASSERT_OK(gp_worker_compute(w, 0, id, clock, BATCH,
				    copy(b->px, sizeof(b->px)), GP_DATA_U8,
				    copy(b->lb, sizeof(b->lb)), lr, MU, group));
}

/* Reads or writes every tensor of a slot, flat. */
static void slot_io(struct gp_model *m, enum gp_model_slot slot, float *v,
		    bool write)
{
	if (write)
		ASSERT_OK(gp_model_write_all(m, slot, v));
	else
		ASSERT_OK(gp_model_read_all(m, slot, v));
}

/* The reference model: text's model on its own CPU backend, its
 * parameters drawn from seed. Returns its parameter count. */
static size_t make_ref(const char *text, uint64_t seed,
		       struct gp_backend **be, struct gp_model **ref)
{
	struct gp_model_spec spec;
	char err[256];

	ASSERT_OK(gp_model_spec_parse(text, &spec, err, sizeof(err)));
	ASSERT_OK(gp_backend_create_cpu(1, be));
	ASSERT_OK(gp_model_create(*be, &spec, BATCH, ref));
	ASSERT_OK(gp_model_init_params(*ref, seed));
	return gp_model_param_count(*ref);
}

/* Loads the reference's parameters and velocity into the worker. */
static void load_worker(struct gp_worker *w, struct gp_model *ref,
			const float *p, const float *v)
{
	size_t off = 0;

	for (size_t i = 0; i < gp_model_tensor_count(ref); i++) {
		struct gp_tensor_info ti;
		size_t n;

		ASSERT_OK(gp_model_tensor_info(ref, i, &ti));
		n = ti.rows * ti.cols;
		ASSERT_OK(gp_worker_set_params(w, GP_MODEL_PARAM, i, 0, ti.rows,
					       copy(p + off, n * sizeof(float))));
		ASSERT_OK(gp_worker_set_params(w, GP_MODEL_MOMENTUM, i, 0,
					       ti.rows,
					       copy(v + off, n * sizeof(float))));
		off += n;
	}
}

/* 8. A model description with dropout: the worker's gradient of a
 * minibatch is the reference's with the dropout seed of that minibatch
 * (gp_model_minibatch_seed(job seed, epoch, minibatch)), so a
 * recomputation anywhere drops the same units; another minibatch id with
 * the same pixels drops others. */
static void test_description(uv_loop_t *loop, const struct batch *b)
{
	static const char desc[] =
		"gradpool-model 1; input shape=1x28x28; conv2d c1 out=4 "
		"kernel=3 padding=1; relu r1; maxpool2d p1 kernel=2; flatten f; "
		"dropout d1 p=0.5; dense fc1 out=10; softmax_xent loss";
	static struct gp_worker_config cfg = {
		.backend = GP_BACKEND_CPU,
		.threads = 1,
		.max_batch = BATCH,
		.seed = 11,
	};
	struct gp_model_spec spec;
	struct gp_backend *be = NULL;
	struct gp_model *ref = NULL;
	struct gp_worker *w = NULL;
	float *p, *v, *g5, *g6;
	double worst = 0, scale = 0, apart = 0;
	char err[256];
	size_t n;

	snprintf(cfg.spec, sizeof(cfg.spec), "%s", desc);
	ASSERT_OK(gp_worker_start(loop, &cfg, on_result, NULL, &w, err,
				  sizeof(err)));
	ASSERT_OK(gp_model_spec_parse(desc, &spec, err, sizeof(err)));
	ASSERT_NEAR(gp_worker_flops_per_sample(w),
		    gp_model_spec_train_flops(&spec), 0);
	/* conv c1 on the input needs no input gradient: 2 x forward there. */
	ASSERT_NEAR(gp_model_spec_train_flops(&spec),
		    3 * gp_model_spec_flops(&spec) -
			    2.0 * 28 * 28 * 4 * 9 * 1,
		    1e-6);
	ASSERT_OK(gp_backend_create_cpu(1, &be));
	ASSERT_OK(gp_model_create(be, &spec, BATCH, &ref));
	ASSERT_OK(gp_model_init_params(ref, 3));
	n = gp_model_param_count(ref);
	p = calloc(n, sizeof(float));
	v = calloc(n, sizeof(float));
	g5 = calloc(n, sizeof(float));
	g6 = calloc(n, sizeof(float));
	ASSERT(p && v && g5 && g6);
	slot_io(ref, GP_MODEL_PARAM, p, false);
	load_worker(w, ref, p, v);
	/* lr 0: the local step leaves the parameters as they were. */
	compute(w, b, 5, 1, 0.0f, 0);
	compute(w, b, 5, 2, 0.0f, 0);
	wait_results(loop, 2);
	ASSERT_OK(results[0]->error);
	ASSERT_OK(results[1]->error);
	ASSERT_UINT_EQ(results[0]->n_grads, n);
	/* The same minibatch twice: the same bits. */
	ASSERT_MEM_EQ(results[0]->grads, results[1]->grads, n * sizeof(float));

	ASSERT_OK(gp_model_set_batch(ref, b->x, b->y, BATCH));
	gp_model_set_seed(ref, gp_model_minibatch_seed(11, 0, 5));
	ASSERT_OK(gp_model_compute_grads(ref, BATCH, NULL));
	slot_io(ref, GP_MODEL_GRAD, g5, false);
	gp_model_set_seed(ref, gp_model_minibatch_seed(11, 0, 6));
	ASSERT_OK(gp_model_compute_grads(ref, BATCH, NULL));
	slot_io(ref, GP_MODEL_GRAD, g6, false);
	for (size_t i = 0; i < n; i++) {
		scale = fmax(scale, fabs(g5[i]));
		worst = fmax(worst, fabs(results[0]->grads[i] - g5[i]));
		apart = fmax(apart, fabs(g6[i] - g5[i]));
	}
	printf("description with dropout: |g|max %.3g, worst |worker - ref| "
	       "%.3g, another minibatch's mask moves it by %.3g\n", scale,
	       worst, apart);
	ASSERT(scale > 1e-4);
	ASSERT(worst <= 1e-5 * scale);
	ASSERT(apart > 1e-2 * scale);
	/* The seed mixes every input. */
	ASSERT(gp_model_minibatch_seed(11, 0, 5) !=
	       gp_model_minibatch_seed(11, 1, 5));
	ASSERT(gp_model_minibatch_seed(11, 0, 5) !=
	       gp_model_minibatch_seed(12, 0, 5));
	free_results();
	gp_worker_stop(w);
	uv_run(loop, UV_RUN_DEFAULT);
	gp_model_destroy(ref);
	gp_backend_destroy(be);
	free(p);
	free(v);
	free(g5);
	free(g6);
}

/* The reference AdamW step of the inner test, in double: the gradient
 * of the model at the float parameters of *pd, clipped to clip, then
 * kernels/adamw.h's formula. Returns whether it clipped. */
static bool ref_adamw_step(struct gp_model *ref, const struct batch *b,
			   double *pd, double *md, double *vd, float *tmp,
			   size_t n, const struct gp_adamw_config *c,
			   double clip, double lr, uint64_t t)
{
	double sq = 0, s = 1;
	double c1 = 1 - pow(c->beta1, (double)t);
	double c2 = 1 - pow(c->beta2, (double)t);

	for (size_t i = 0; i < n; i++)
		tmp[i] = (float)pd[i];
	slot_io(ref, GP_MODEL_PARAM, tmp, true);
	ASSERT_OK(gp_model_set_batch(ref, b->x, b->y, BATCH));
	ASSERT_OK(gp_model_compute_grads(ref, BATCH, NULL));
	slot_io(ref, GP_MODEL_GRAD, tmp, false);
	for (size_t i = 0; i < n; i++)
		sq += (double)tmp[i] * tmp[i];
	if (sqrt(sq) > clip)
		s = clip / sqrt(sq);
	for (size_t i = 0; i < n; i++) {
		double g = s * tmp[i];

		md[i] = c->beta1 * md[i] + (1 - c->beta1) * g;
		vd[i] = c->beta2 * vd[i] + (1 - c->beta2) * g * g;
		pd[i] = pd[i] * (1 - lr * c->weight_decay) -
			lr * (md[i] / c1) / (sqrt(vd[i] / c2) + c->eps);
	}
	return s < 1;
}

/* The worker's delta against the reference's: the largest difference
 * within tol of the largest change. */
static void check_delta(const struct gp_worker_result *res, const double *want,
			size_t n, double tol, const char *what)
{
	double scale = 0, worst = 0;

	ASSERT_OK(res->error);
	ASSERT(res->delta);
	ASSERT(res->sums_b == NULL);
	ASSERT_UINT_EQ(res->n_grads, n);
	for (size_t i = 0; i < n; i++) {
		scale = fmax(scale, fabs(want[i]));
		worst = fmax(worst, fabs(res->grads[i] - want[i]));
	}
	printf("inner AdamW, %s: |delta|max %.3g, worst |delta - ref| %.3g\n",
	       what, scale, worst);
	ASSERT(scale > 1e-4);
	ASSERT(worst <= tol * scale);
}

/* 9. Local AdamW steps (gp_worker_set_inner): a group of three and a lone
 * minibatch answer with their runs' changes, which match AdamW computed
 * here in double (clipping and weight decay on, the moments carried from
 * the first run into the second); set again, the moments start from zero
 * (the reference's first step from the same point). */
static void test_inner_adamw(uv_loop_t *loop, const struct batch *b)
{
	const struct gp_worker_inner in = {
		.on = true,
		.adamw = { .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
			   .weight_decay = 0.1f },
		.clip_norm = 0.5f,
	};
	const float lrs[4] = { 0.01f, 0.008f, 0.006f, 0.005f };
	struct gp_worker_config cfg = {
		.backend = GP_BACKEND_CPU,
		.threads = 1,
		.max_batch = BATCH,
	};
	struct gp_backend *be = NULL;
	struct gp_model *ref = NULL;
	struct gp_worker *w = NULL;
	double *pd, *md, *vd, *want, *mark;
	float *p0, *zero, *tmp;
	unsigned clipped = 0;
	char err[256];
	size_t n;

	snprintf(cfg.spec, sizeof(cfg.spec), "%s", SPEC);
	ASSERT_OK(gp_worker_start(loop, &cfg, on_result, NULL, &w, err,
				  sizeof(err)));
	n = make_ref(SPEC, 9, &be, &ref);
	p0 = malloc(n * sizeof(float));
	zero = calloc(n, sizeof(float));
	tmp = malloc(n * sizeof(float));
	pd = malloc(n * sizeof(double));
	md = calloc(n, sizeof(double));
	vd = calloc(n, sizeof(double));
	want = malloc(n * sizeof(double));
	mark = malloc(n * sizeof(double));
	ASSERT(p0 && zero && tmp && pd && md && vd && want && mark);
	slot_io(ref, GP_MODEL_PARAM, p0, false);
	for (size_t i = 0; i < n; i++)
		pd[i] = p0[i];

	/* Out of range settings are refused. */
	{
		struct gp_worker_inner bad = in;

		bad.adamw.beta2 = 1.0f;
		ASSERT_EQ(gp_worker_set_inner(w, &bad), -EINVAL);
		bad = in;
		bad.clip_norm = -1;
		ASSERT_EQ(gp_worker_set_inner(w, &bad), -EINVAL);
	}
	load_worker(w, ref, p0, zero);
	ASSERT_OK(gp_worker_set_inner(w, &in));

	/* A run of three, then a lone minibatch (a group of one) that goes
	 * on with the moments of the first. */
	for (int j = 0; j < 3; j++)
		compute(w, &b[j], 30 + (uint64_t)j, 2, lrs[j], j == 0 ? 3 : 0);
	compute(w, &b[3], 33, 3, lrs[3], 1);
	wait_results(loop, 2);
	for (uint64_t t = 1; t <= 3; t++)
		clipped += ref_adamw_step(ref, &b[t - 1], pd, md, vd, tmp, n,
					  &in.adamw, in.clip_norm, lrs[t - 1],
					  t);
	for (size_t i = 0; i < n; i++) {
		want[i] = p0[i] - pd[i];
		mark[i] = pd[i];
	}
	ASSERT_UINT_EQ(results[0]->n_items, 3);
	ASSERT_UINT_EQ(results[0]->items[2].minibatch, 32);
	check_delta(results[0], want, n, 1e-4, "a run of 3");
	clipped += ref_adamw_step(ref, &b[3], pd, md, vd, tmp, n, &in.adamw,
				  in.clip_norm, lrs[3], 4);
	for (size_t i = 0; i < n; i++)
		want[i] = mark[i] - pd[i];
	ASSERT_UINT_EQ(results[1]->n_items, 1);
	ASSERT_UINT_EQ(results[1]->items[0].minibatch, 33);
	check_delta(results[1], want, n, 1e-4, "then 1, moments carried");
	printf("inner AdamW: %u of 4 reference steps clipped\n", clipped);
	ASSERT(clipped >= 1);
	free_results();

	/* A new session's settings: the moments start from zero. */
	ASSERT_OK(gp_worker_set_inner(w, &in));
	compute(w, &b[0], 40, 4, lrs[0], 1);
	wait_results(loop, 1);
	memset(md, 0, n * sizeof(double));
	memset(vd, 0, n * sizeof(double));
	for (size_t i = 0; i < n; i++)
		mark[i] = pd[i];
	ref_adamw_step(ref, &b[0], pd, md, vd, tmp, n, &in.adamw, in.clip_norm,
		       lrs[0], 1);
	for (size_t i = 0; i < n; i++)
		want[i] = mark[i] - pd[i];
	check_delta(results[0], want, n, 1e-4, "after a reset");
	free_results();
	ASSERT_UINT_EQ(gp_worker_pending(w), 0);

	gp_worker_stop(w);
	uv_run(loop, UV_RUN_DEFAULT);
	gp_model_destroy(ref);
	gp_backend_destroy(be);
	free(p0);
	free(zero);
	free(tmp);
	free(pd);
	free(md);
	free(vd);
	free(want);
	free(mark);
}

/* Queues every tensor of p (n_params floats, flat) as rebased rows
 * against run ref (gp_worker_rebase_params). */
static void rebase_worker(struct gp_worker *w, struct gp_model *ref,
			  const float *p, uint64_t run)
{
	size_t off = 0;

	for (size_t i = 0; i < gp_model_tensor_count(ref); i++) {
		struct gp_tensor_info ti;
		size_t n;

		ASSERT_OK(gp_model_tensor_info(ref, i, &ti));
		n = ti.rows * ti.cols;
		ASSERT_OK(gp_worker_rebase_params(w, i, 0, ti.rows,
						  copy(p + off,
						       n * sizeof(float)),
						  run));
		off += n;
	}
}

/* Runs the loop until the worker holds no job (a group's minibatch
 * computed: it posts nothing until the group's end). */
static void wait_idle(uv_loop_t *loop, struct gp_worker *w)
{
	uint64_t start = uv_now(loop);

	while (gp_worker_pending(w) > 0 && uv_now(loop) - start < 20000) {
		uv_run(loop, UV_RUN_NOWAIT);
		usleep(1000);
		uv_update_time(loop);
	}
	ASSERT_UINT_EQ(gp_worker_pending(w), 0);
}

/* 10. Overlap (gp_worker_rebase_params): parameters P that hold run 1
 * come in the middle of run 2; the copy becomes P plus run 2's step so
 * far, and run 2 answers with its own change only (P's start, not run
 * 1's end), as AdamW in double computes it with the moments carried.
 * Then P2 against run 2 with nothing computed since: the copy is P2
 * exactly (the next lone minibatch's change is one step from P2). And
 * against a run not kept: the rows replace the copy. */
static void test_rebase(uv_loop_t *loop, const struct batch *b)
{
	struct gp_worker_inner in = {
		.on = true,
		.adamw = { .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f },
		.clip_norm = 0,
		.overlap = true,
	};
	const float lr = 0.01f;
	struct gp_worker_config cfg = {
		.backend = GP_BACKEND_CPU,
		.threads = 1,
		.max_batch = BATCH,
	};
	struct gp_backend *be = NULL;
	struct gp_model *ref = NULL;
	struct gp_worker *w = NULL;
	double *pd, *md, *vd, *want, *e1;
	float *p0, *zero, *tmp, *pp;
	char err[256];
	uint64_t t = 0;
	size_t n;

	snprintf(cfg.spec, sizeof(cfg.spec), "%s", SPEC);
	ASSERT_OK(gp_worker_start(loop, &cfg, on_result, NULL, &w, err,
				  sizeof(err)));
	n = make_ref(SPEC, 11, &be, &ref);
	p0 = malloc(n * sizeof(float));
	zero = calloc(n, sizeof(float));
	tmp = malloc(n * sizeof(float));
	pp = malloc(n * sizeof(float));
	pd = malloc(n * sizeof(double));
	md = calloc(n, sizeof(double));
	vd = calloc(n, sizeof(double));
	want = malloc(n * sizeof(double));
	e1 = malloc(n * sizeof(double));
	ASSERT(p0 && zero && tmp && pp && pd && md && vd && want && e1);
	slot_io(ref, GP_MODEL_PARAM, p0, false);
	for (size_t i = 0; i < n; i++)
		pd[i] = p0[i];
	load_worker(w, ref, p0, zero);
	ASSERT_OK(gp_worker_set_inner(w, &in));

	/* Run 1: two steps. */
	compute(w, &b[0], 50, 1, lr, 2);
	compute(w, &b[1], 51, 1, lr, 0);
	wait_results(loop, 1);
	ASSERT_UINT_EQ(results[0]->run, 1);
	for (int j = 0; j < 2; j++)
		ref_adamw_step(ref, &b[j], pd, md, vd, tmp, n, &in.adamw, 1e30,
			       lr, ++t);
	for (size_t i = 0; i < n; i++) {
		want[i] = p0[i] - pd[i];
		e1[i] = pd[i];
	}
	check_delta(results[0], want, n, 1e-4, "overlap, run 1");
	free_results();

	/* Run 2's first step, then P (run 1's end moved elsewhere, as the
	 * coordinator's parameters with others' work), then its second. */
	compute(w, &b[2], 52, 2, lr, 2);
	wait_idle(loop, w);
	for (size_t i = 0; i < n; i++)
		pp[i] = (float)e1[i] + 0.01f * (float)((int)(i % 7) - 3);
	rebase_worker(w, ref, pp, 1);
	compute(w, &b[3], 53, 2, lr, 0);
	wait_results(loop, 1);
	ASSERT_UINT_EQ(results[0]->run, 2);
	ref_adamw_step(ref, &b[2], pd, md, vd, tmp, n, &in.adamw, 1e30, lr,
		       ++t);
	for (size_t i = 0; i < n; i++)
		pd[i] = (double)pp[i] + (pd[i] - e1[i]);
	ref_adamw_step(ref, &b[3], pd, md, vd, tmp, n, &in.adamw, 1e30, lr,
		       ++t);
	for (size_t i = 0; i < n; i++)
		want[i] = (double)pp[i] - pd[i];
	check_delta(results[0], want, n, 1e-4, "overlap, run 2 rebased");
	free_results();

	/* P2 against run 2, nothing computed since: the copy is P2. */
	for (size_t i = 0; i < n; i++)
		pp[i] = (float)pd[i] - 0.005f * (float)((int)(i % 5) - 2);
	rebase_worker(w, ref, pp, 2);
	compute(w, &b[0], 54, 3, lr, 1);
	wait_results(loop, 1);
	for (size_t i = 0; i < n; i++)
		pd[i] = pp[i];
	ref_adamw_step(ref, &b[0], pd, md, vd, tmp, n, &in.adamw, 1e30, lr,
		       ++t);
	for (size_t i = 0; i < n; i++)
		want[i] = (double)pp[i] - pd[i];
	check_delta(results[0], want, n, 1e-4, "overlap, P2 with no work since");
	free_results();

	/* A run not kept (the pull names one the agent never cut): the
	 * rows replace the copy, the step goes on from them. */
	for (size_t i = 0; i < n; i++)
		pp[i] = (float)pd[i] + 0.03f * (float)((int)(i % 3) - 1);
	rebase_worker(w, ref, pp, 99);
	compute(w, &b[1], 55, 4, lr, 1);
	wait_results(loop, 1);
	for (size_t i = 0; i < n; i++)
		pd[i] = pp[i];
	ref_adamw_step(ref, &b[1], pd, md, vd, tmp, n, &in.adamw, 1e30, lr,
		       ++t);
	for (size_t i = 0; i < n; i++)
		want[i] = (double)pp[i] - pd[i];
	check_delta(results[0], want, n, 1e-4, "overlap, unknown run");
	free_results();

	/* Run 3's copy was kept through that replacement, which it took
	 * too: a pull naming run 3 keeps only the step since (run 4's). */
	for (size_t i = 0; i < n; i++) {
		e1[i] = (double)pp[i];
		pp[i] = (float)pd[i] - 0.003f;
	}
	rebase_worker(w, ref, pp, 3);
	compute(w, &b[2], 56, 5, lr, 1);
	wait_results(loop, 1);
	for (size_t i = 0; i < n; i++) {
		pd[i] = (double)pp[i] + (pd[i] - e1[i]);
		want[i] = pd[i];
	}
	ref_adamw_step(ref, &b[2], pd, md, vd, tmp, n, &in.adamw, 1e30, lr,
		       ++t);
	for (size_t i = 0; i < n; i++)
		want[i] -= pd[i];
	check_delta(results[0], want, n, 1e-4,
		    "overlap, a kept run after a replacement");
	free_results();
	ASSERT_UINT_EQ(gp_worker_pending(w), 0);

	gp_worker_stop(w);
	uv_run(loop, UV_RUN_DEFAULT);
	gp_model_destroy(ref);
	gp_backend_destroy(be);
	free(p0);
	free(zero);
	free(tmp);
	free(pp);
	free(pd);
	free(md);
	free(vd);
	free(want);
	free(e1);
}

/* The verification test's training set: count random images of
 * side x side bytes, random labels. Owned by the caller. */
static struct gp_dataset *make_data(size_t count, uint32_t side)
{
	struct gp_dataset *ds = NULL;

	ASSERT_OK(gp_data_create(count, GP_DATA_U8, 1, side, side,
				 GP_DATA_CLASSES, &ds));
	srand(17);
	for (size_t i = 0; i < count * ds->features; i++)
		ds->images[i] = (uint8_t)(rand() & 0xff);
	for (size_t i = 0; i < count; i++)
		ds->labels[i] = (uint8_t)(rand() % GP_DATA_CLASSES);
	return ds;
}

/* Queues a verification of items (copied) from w0 and v0 (n floats each,
 * copied; v0 NULL: one gradient) over ds. */
static int queue_verify(struct gp_worker *w, const struct gp_dataset *ds,
			uint64_t task, const struct gp_recompute_item *items,
			size_t k, const float *w0, const float *v0, size_t n)
{
	struct gp_worker_verify t = {
		.task = task,
		.sums = v0 != NULL,
		.mu = MU,
		.k = k,
		.data = ds,
	};
	size_t total = 0, at = 0;

	for (size_t j = 0; j < k; j++)
		total += items[j].samples;
	t.items = copy(items, k * sizeof(*items));
	t.idx = malloc(total * sizeof(*t.idx));
	ASSERT_NOT_NULL(t.idx);
	for (size_t j = 0; j < k; j++) {
		memcpy(t.idx + at, items[j].idx,
		       items[j].samples * sizeof(*t.idx));
		t.items[j].idx = t.idx + at;
		at += items[j].samples;
	}
	t.w0 = copy(w0, n * sizeof(float));
	t.v0 = v0 ? copy(v0, n * sizeof(float)) : NULL;
	return gp_worker_verify(w, &t);
}

/* Queues an item's minibatch as the machine does a local one: its
 * samples' bytes and labels gathered from ds. */
static void compute_item(struct gp_worker *w, const struct gp_dataset *ds,
			 const struct gp_recompute_item *it, uint64_t clock,
			 uint32_t group)
{
	uint8_t *px = malloc(it->samples * ds->features);
	uint8_t *lb = malloc(it->samples);

	ASSERT(px && lb);
	for (size_t i = 0; i < it->samples; i++) {
		memcpy(px + i * ds->features,
		       ds->images + it->idx[i] * ds->features, ds->features);
		lb[i] = ds->labels[it->idx[i]];
	}
	ASSERT_OK(gp_worker_compute(w, it->epoch, it->minibatch, clock,
				    it->samples, px, GP_DATA_U8, lb, it->lr,
				    MU, group));
}

/* The largest |got - want| over the largest |want|, printed. */
static double rel_diff(const char *what, const float *got,
		       const float *want, size_t n)
{
	double scale = 0, worst = 0;

	for (size_t i = 0; i < n; i++) {
		scale = fmax(scale, fabs(want[i]));
		worst = fmax(worst, fabs((double)got[i] - want[i]));
	}
	printf("verify, %s: |x|max %.3g, worst |x - ref| %.3g%s\n", what,
	       scale, worst,
	       memcmp(got, want, n * sizeof(float)) ? "" : " (bit-identical)");
	ASSERT(scale > 0);
	return worst / scale;
}

/* rel_diff(), and no difference at all. */
static void same_bits(const char *what, const float *got, const float *want,
		      size_t n)
{
	rel_diff(what, got, want, n);
	ASSERT_MEM_EQ(got, want, n * sizeof(float));
}

/* 10. Verifications (gp_worker_verify) on a model with dropout, queued
 * between the minibatches of the worker's own group: a group's sums and a
 * gradient come out bit for bit as gp_recompute() computes them on
 * another model, and as the worker's own group of the same minibatches
 * from the same start; the worker's own parameters and momentum after its
 * group are those the reference reached (its next minibatch's gradient
 * and a further group match the reference's from there), so the
 * verifications touched neither. A data set of another width is declined
 * (error, no values). */
static void test_verify(uv_loop_t *loop)
{
	static const char desc[] =
		"gradpool-model 1; input shape=1x28x28; flatten f; "
		"dense fc1 out=32; relu r1; dropout d1 p=0.5; "
		"dense fc2 out=10; softmax_xent loss";
	static struct gp_worker_config cfg = {
		.backend = GP_BACKEND_CPU,
		.threads = 1,
		.max_batch = BATCH,
		.seed = 21,
	};
	const float lrs[4] = { 0.05f, 0.04f, 0.03f, 0.0f };
	struct gp_recompute_item items[4];
	uint32_t idx[4][BATCH];
	struct gp_backend *be = NULL;
	struct gp_model *ref = NULL;
	struct gp_worker *w = NULL;
	struct gp_dataset *ds = make_data(64, GP_DATA_SIDE);
	struct gp_dataset *narrow = make_data(8, 3);
	struct gp_recompute_data rd = { .train = ds };
	float *p0, *v0, *pk, *vk, *junk, *a, *b, *g8, *gk, *a2, *b2, *x;
	int32_t y[BATCH];
	char err[256];
	size_t n;

	snprintf(cfg.spec, sizeof(cfg.spec), "%s", desc);
	ASSERT_OK(gp_worker_start(loop, &cfg, on_result, NULL, &w, err,
				  sizeof(err)));
	n = make_ref(desc, 4, &be, &ref);
	p0 = malloc(n * sizeof(float));
	v0 = malloc(n * sizeof(float));
	pk = malloc(n * sizeof(float));
	vk = malloc(n * sizeof(float));
	junk = malloc(n * sizeof(float));
	a = malloc(n * sizeof(float));
	b = malloc(n * sizeof(float));
	g8 = malloc(n * sizeof(float));
	gk = malloc(n * sizeof(float));
	a2 = malloc(n * sizeof(float));
	b2 = malloc(n * sizeof(float));
	x = malloc(BATCH * GP_DATA_PIXELS * sizeof(float));
	ASSERT(p0 && v0 && pk && vk && junk && a && b && g8 && gk && a2 &&
	       b2 && x);
	slot_io(ref, GP_MODEL_PARAM, p0, false);
	srand(6);
	for (size_t i = 0; i < n; i++) {
		v0[i] = (float)(rand() % 2001 - 1000) * 1e-5f;
		junk[i] = (float)(rand() % 2001 - 1000) * 1e-4f;
	}
	for (size_t j = 0; j < 4; j++) {
		for (size_t i = 0; i < BATCH; i++)
			idx[j][i] = (uint32_t)((j * 13 + i * 5) % ds->count);
		items[j] = (struct gp_recompute_item){
			.epoch = 1,
			.minibatch = 40 + j,
			.lr = lrs[j],
			.samples = BATCH,
			.idx = idx[j],
		};
	}

	/* The reference: the group's sums from (p0, v0), where its steps
	 * end (pk, vk), the 4th item's gradient from junk and from pk, and
	 * a group of the first two from (pk, vk). */
	ASSERT_OK(gp_recompute(ref, &rd, 21, true, MU, items, 3, p0, v0, x, y,
			       a, b));
	slot_io(ref, GP_MODEL_PARAM, pk, false);
	slot_io(ref, GP_MODEL_MOMENTUM, vk, false);
	ASSERT_OK(gp_recompute(ref, &rd, 21, false, MU, &items[3], 1, junk,
			       NULL, x, y, g8, NULL));
	ASSERT_OK(gp_recompute(ref, &rd, 21, false, MU, &items[3], 1, pk, NULL,
			       x, y, gk, NULL));
	ASSERT_OK(gp_recompute(ref, &rd, 21, true, MU, items, 2, pk, vk, x, y,
			       a2, b2));
	ASSERT(memcmp(g8, gk, n * sizeof(float)) != 0);

	/* The worker: its own group of three from (p0, v0), with both
	 * verifications queued after its first minibatch, then the 4th
	 * item alone (lr 0: a gradient that leaves the copy as it is),
	 * then a group of two. */
	load_worker(w, ref, p0, v0);
	compute_item(w, ds, &items[0], 3, 3);
	ASSERT_OK(queue_verify(w, ds, 7, items, 3, p0, v0, n));
	ASSERT_OK(queue_verify(w, ds, 8, &items[3], 1, junk, NULL, n));
	compute_item(w, ds, &items[1], 3, 0);
	compute_item(w, ds, &items[2], 3, 0);
	compute_item(w, ds, &items[3], 4, 0);
	compute_item(w, ds, &items[0], 5, 2);
	compute_item(w, ds, &items[1], 5, 0);
	wait_results(loop, 5);

	ASSERT(results[0]->verify);
	ASSERT_UINT_EQ(results[0]->task, 7);
	ASSERT_OK(results[0]->error);
	ASSERT_UINT_EQ(results[0]->n_grads, n);
	ASSERT_NOT_NULL(results[0]->sums_b);
	ASSERT(results[0]->compute_us > 0);
	ASSERT(results[1]->verify);
	ASSERT_UINT_EQ(results[1]->task, 8);
	ASSERT_OK(results[1]->error);
	ASSERT(results[1]->sums_b == NULL);
	for (size_t i = 2; i < 5; i++) {
		ASSERT(!results[i]->verify);
		ASSERT_OK(results[i]->error);
	}
	ASSERT_UINT_EQ(results[2]->n_items, 3);
	ASSERT_UINT_EQ(results[3]->n_items, 0);
	ASSERT_UINT_EQ(results[3]->minibatch, 43);
	ASSERT_UINT_EQ(results[4]->n_items, 2);

	/* The worker's verification is gp_recompute()'s, bit for bit. */
	same_bits("sums A against gp_recompute", results[0]->grads, a, n);
	same_bits("sums B against gp_recompute", results[0]->sums_b, b, n);
	same_bits("gradient against gp_recompute", results[1]->grads, g8, n);
	/* The member's own group gives what its checker recomputes. */
	ASSERT(rel_diff("own group's A against gp_recompute",
			results[2]->grads, a, n) <= 1e-6);
	ASSERT(rel_diff("own group's B against gp_recompute",
			results[2]->sums_b, b, n) <= 1e-6);
	/* The worker's own copy went on from where its group ended. */
	ASSERT(rel_diff("own next gradient against the reference's",
			results[3]->grads, gk, n) <= 1e-6);
	ASSERT(rel_diff("own next group's A against the reference's",
			results[4]->grads, a2, n) <= 1e-6);
	ASSERT(rel_diff("own next group's B against the reference's",
			results[4]->sums_b, b2, n) <= 1e-6);
	free_results();
	ASSERT_UINT_EQ(gp_worker_pending(w), 0);

	/* Samples that are not the model's inputs: declined. */
	ASSERT_OK(queue_verify(w, narrow, 9, &items[3], 1, junk, NULL, n));
	wait_results(loop, 1);
	ASSERT(results[0]->verify);
	ASSERT_UINT_EQ(results[0]->task, 9);
	ASSERT_EQ(results[0]->error, -EINVAL);
	ASSERT(results[0]->grads == NULL);
	free_results();
	/* Malformed: nothing queued, the arrays freed. */
	{
		struct gp_worker_verify t = {
			.task = 10,
			.sums = true,
			.k = 1,
			.items = copy(items, sizeof(items[0])),
			.w0 = copy(p0, n * sizeof(float)),
			.data = ds,
		};

		ASSERT_EQ(gp_worker_verify(w, &t), -EINVAL);
	}
	ASSERT_UINT_EQ(gp_worker_pending(w), 0);

	gp_worker_stop(w);
	uv_run(loop, UV_RUN_DEFAULT);
	gp_model_destroy(ref);
	gp_backend_destroy(be);
	gp_data_destroy(ds);
	gp_data_destroy(narrow);
	free(p0);
	free(v0);
	free(pk);
	free(vk);
	free(junk);
	free(a);
	free(b);
	free(g8);
	free(gk);
	free(a2);
	free(b2);
	free(x);
}

int main(void)
{
	static struct batch b[4];
	const float lrs[3] = { 0.05f, 0.04f, 0.03f };
	struct gp_worker_config cfg = {
		.backend = GP_BACKEND_CPU,
		.threads = 1,
		.max_batch = BATCH,
	};
	struct gp_backend *be = NULL;
	struct gp_model *ref = NULL;
	struct gp_worker *w = NULL;
	float *p0, *v0, *pk, *vk;
	char err[256];
	uv_loop_t loop;
	size_t n;
	double mk = 1, cv = 0, lsum = 0, scale = 0, worst_a = 0, worst_b = 0;
	struct gp_dataset *ds = make_data(BATCH, GP_DATA_SIDE);
	uint32_t vidx[BATCH];
	struct gp_recompute_item vitem = {
		.samples = BATCH,
		.idx = vidx,
	};

	for (unsigned i = 0; i < 4; i++)
		make_batch(&b[i], 100 + i);
	for (uint32_t i = 0; i < BATCH; i++)
		vidx[i] = i;
	snprintf(cfg.spec, sizeof(cfg.spec), "%s", SPEC);
	ASSERT_OK(uv_loop_init(&loop));
	ASSERT_OK(gp_worker_start(&loop, &cfg, on_result, NULL, &w, err,
				  sizeof(err)));

	/* The reference: the same start, the same three local steps. */
	n = make_ref(SPEC, 7, &be, &ref);
	p0 = malloc(n * sizeof(float));
	v0 = malloc(n * sizeof(float));
	pk = malloc(n * sizeof(float));
	vk = malloc(n * sizeof(float));
	ASSERT(p0 && v0 && pk && vk);
	slot_io(ref, GP_MODEL_PARAM, p0, false);
	srand(5);
	for (size_t i = 0; i < n; i++)
		v0[i] = (float)(rand() % 2001 - 1000) * 1e-5f;
	slot_io(ref, GP_MODEL_MOMENTUM, v0, true);
	for (int j = 0; j < 3; j++) {
		ASSERT_OK(gp_model_set_batch(ref, b[j].x, b[j].y, BATCH));
		ASSERT_OK(gp_model_train_step(ref, BATCH, lrs[j], MU, NULL));
		mk *= MU;
		cv += lrs[j] * mk;
		lsum += lrs[j];
	}
	slot_io(ref, GP_MODEL_PARAM, pk, false);
	slot_io(ref, GP_MODEL_MOMENTUM, vk, false);

	/* 1. A group of three. */
	load_worker(w, ref, p0, v0);
	for (int j = 0; j < 3; j++)
		compute(w, &b[j], 10 + (uint64_t)j, 4, lrs[j], j == 0 ? 3 : 0);
	wait_results(&loop, 1);
	ASSERT_OK(results[0]->error);
	ASSERT_UINT_EQ(results[0]->n_items, 3);
	ASSERT_UINT_EQ(results[0]->items[0].minibatch, 10);
	ASSERT_UINT_EQ(results[0]->items[2].minibatch, 12);
	ASSERT_UINT_EQ(results[0]->clock, 4);
	ASSERT_UINT_EQ(results[0]->samples, 3 * BATCH);
	ASSERT_UINT_EQ(results[0]->n_grads, n);
	for (size_t i = 0; i < n; i++) {
		double a = vk[i] - mk * v0[i];
		double bb = (p0[i] - pk[i] - cv * v0[i]) / lsum;

		scale = fmax(scale, fmax(fabs(a), fabs(bb)));
		worst_a = fmax(worst_a, fabs(results[0]->grads[i] - a));
		worst_b = fmax(worst_b, fabs(results[0]->sums_b[i] - bb));
	}
	printf("sums: |A|max %.3g, worst |A - ref| %.3g, |B - ref| %.3g\n",
	       scale, worst_a, worst_b);
	ASSERT(scale > 1e-3);
	ASSERT(worst_a <= 1e-4 * scale);
	ASSERT(worst_b <= 1e-3 * scale);
	free_results();
	ASSERT_UINT_EQ(gp_worker_pending(w), 0);

	/* 2. A group of three cut short by a lone minibatch: the two
	 * computed come back as a group of their own, then the lone one. */
	compute(w, &b[0], 20, 5, 0.05f, 3);
	compute(w, &b[1], 21, 5, 0.05f, 0);
	compute(w, &b[2], 22, 6, 0.05f, 1);
	wait_results(&loop, 2);
	ASSERT_OK(results[0]->error);
	ASSERT_UINT_EQ(results[0]->n_items, 2);
	ASSERT_UINT_EQ(results[0]->items[1].minibatch, 21);
	ASSERT_UINT_EQ(results[0]->clock, 5);
	ASSERT_OK(results[1]->error);
	ASSERT_UINT_EQ(results[1]->n_items, 0);
	ASSERT_UINT_EQ(results[1]->minibatch, 22);
	ASSERT_NOT_NULL(results[1]->grads);
	free_results();
	ASSERT_UINT_EQ(gp_worker_pending(w), 0);

	/* 3. A group cut by a lost connection is dropped: only the next
	 * group answers. */
	compute(w, &b[0], 30, 7, 0.05f, 3);
	gp_worker_drop_queued(w);
	compute(w, &b[1], 40, 8, 0.05f, 2);
	compute(w, &b[2], 41, 8, 0.05f, 0);
	wait_results(&loop, 1);
	ASSERT_OK(results[0]->error);
	ASSERT_UINT_EQ(results[0]->n_items, 2);
	ASSERT_UINT_EQ(results[0]->items[0].minibatch, 40);
	free_results();
	ASSERT_UINT_EQ(gp_worker_pending(w), 0);

	gp_worker_stop(w);
	uv_run(&loop, UV_RUN_DEFAULT);

	/* A slow worker (each step 300 ms) whose 4th minibatch fails. */
	cfg.test.step_delay_ms = 300;
	cfg.test.fail_step = 4;
	ASSERT_OK(gp_worker_start(&loop, &cfg, on_result, NULL, &w, err,
				  sizeof(err)));
	ASSERT_UINT_EQ(gp_worker_generation(w), 0);

	/* 4. The connection goes away while a minibatch is in hand: it cannot
	 * be stopped, but its result carries the old generation; the next
	 * connection's minibatch carries the new one. A minibatch the thread
	 * had not taken yet is dropped instead: try again, waiting longer. A
	 * verification queued behind it is dropped with it (its answer
	 * would have nobody to go to): only the two minibatches answer. */
	for (unsigned wait_ms = 20;; wait_ms *= 2) {
		ASSERT(wait_ms <= 5000);
		compute(w, &b[0], 50, 9, 0.05f, 0);
		ASSERT_OK(queue_verify(w, ds, 1, &vitem, 1, p0, NULL, n));
		uv_sleep(wait_ms);
		gp_worker_drop_queued(w);
		if (gp_worker_pending(w) == 1)
			break; /* in hand */
		ASSERT_UINT_EQ(gp_worker_pending(w), 0);
	}
	compute(w, &b[1], 51, 10, 0.05f, 0);
	wait_results(&loop, 2);
	ASSERT_OK(results[0]->error);
	ASSERT_UINT_EQ(results[0]->minibatch, 50);
	ASSERT_NE(results[0]->gen, gp_worker_generation(w));
	ASSERT_UINT_EQ(results[0]->gen + 1, gp_worker_generation(w));
	ASSERT_OK(results[1]->error);
	ASSERT_UINT_EQ(results[1]->minibatch, 51);
	ASSERT_UINT_EQ(results[1]->gen, gp_worker_generation(w));
	free_results();
	ASSERT_UINT_EQ(gp_worker_pending(w), 0);

	/* 5. A group of three whose second minibatch (the worker's 4th) fails:
	 * the failure is reported at once, as that minibatch, with no
	 * gradient; the third is not computed, and nothing else of the group
	 * is reported. The worker goes on with the next minibatch. */
	compute(w, &b[0], 60, 11, 0.05f, 3);
	compute(w, &b[1], 61, 11, 0.05f, 0);
	compute(w, &b[2], 62, 11, 0.05f, 0);
	wait_results(&loop, 1);
	ASSERT_EQ(results[0]->error, -EIO);
	ASSERT_UINT_EQ(results[0]->minibatch, 61);
	ASSERT_UINT_EQ(results[0]->clock, 11);
	ASSERT_UINT_EQ(results[0]->n_items, 0);
	ASSERT(results[0]->grads == NULL);
	ASSERT_UINT_EQ(results[0]->gen, gp_worker_generation(w));
	compute(w, &b[3], 70, 12, 0.05f, 0);
	wait_results(&loop, 2);
	ASSERT_OK(results[1]->error);
	ASSERT_UINT_EQ(results[1]->minibatch, 70);
	ASSERT_NOT_NULL(results[1]->grads);
	free_results();
	ASSERT_UINT_EQ(gp_worker_pending(w), 0);

	gp_worker_stop(w);
	uv_run(&loop, UV_RUN_DEFAULT);

	/* 6. A share of 0.05 and steps of 150 ms: a rest of 2.85 s after each
	 * step. The result must not wait for it (at the lowest share, 0.01,
	 * the rest is 99 steps: a result held that long misses the
	 * coordinator's work timeout); the next step comes after it; and a
	 * stop (SIGTERM) during a rest returns at once, not after it. */
	cfg.test.step_delay_ms = 150;
	cfg.test.fail_step = 0;
	cfg.duty = 0.05;
	ASSERT_OK(gp_worker_start(&loop, &cfg, on_result, NULL, &w, err,
				  sizeof(err)));
	{
		uint64_t t0 = uv_hrtime(), t1, t2, t3;

		compute(w, &b[0], 80, 13, 0.05f, 0);
		wait_results(&loop, 1);
		t1 = uv_hrtime();
		compute(w, &b[1], 81, 14, 0.05f, 0);
		wait_results(&loop, 2);
		t2 = uv_hrtime();
		printf("share 0.05, 150 ms steps: first result after %.0f ms, "
		       "the next %.0f ms later\n", (double)(t1 - t0) / 1e6,
		       (double)(t2 - t1) / 1e6);
		ASSERT_OK(results[0]->error);
		ASSERT_OK(results[1]->error);
		ASSERT(results[0]->compute_us >= 150000);
		/* A step and some slack, well short of the 2.85 s rest. */
		ASSERT((t1 - t0) / 1000000 < 1400);
		/* The rest (2.85 s, from the first result) held the next step. */
		ASSERT((t2 - t1) / 1000000 >= 2500);
		free_results();
		ASSERT_UINT_EQ(gp_worker_pending(w), 0);
		/* Now resting again, for 2.85 s. */
		t2 = uv_hrtime();
		gp_worker_stop(w);
		t3 = uv_hrtime();
		printf("stopped during a rest in %.1f ms\n",
		       (double)(t3 - t2) / 1e6);
		ASSERT((t3 - t2) / 1000000 < 1000);
	}
	uv_run(&loop, UV_RUN_DEFAULT);

	/* 7. A share of 0.5 and steps of 300 ms (a rest of 300 ms), and the
	 * whole process stopped for 2 s inside the first step (a child sends
	 * SIGSTOP, then SIGCONT). The stopped time is not computing: the rest
	 * after that step stays near one step, not the 2 s that wall time
	 * gave (which held the pool's work, issue 16.9). */
	cfg.test.step_delay_ms = 300;
	cfg.duty = 0.5;
	ASSERT_OK(gp_worker_start(&loop, &cfg, on_result, NULL, &w, err,
				  sizeof(err)));
	{
		uint64_t t1, t2;
		pid_t child;
		int status;

		compute(w, &b[0], 90, 15, 0.05f, 0);
		child = fork();
		ASSERT(child >= 0);
		if (child == 0) {
			struct timespec d = { 0, 30 * 1000000L };
			struct timespec s = { 2, 0 };

			nanosleep(&d, NULL);
			kill(getppid(), SIGSTOP);
			nanosleep(&s, NULL);
			kill(getppid(), SIGCONT);
			_exit(0);
		}
		wait_results(&loop, 1);
		ASSERT(waitpid(child, &status, 0) == child);
		t1 = uv_hrtime();
		compute(w, &b[1], 91, 16, 0.05f, 0);
		wait_results(&loop, 2);
		t2 = uv_hrtime();
		printf("share 0.5, 300 ms steps, stopped 2 s in a step: first "
		       "step took %.0f ms, the next result %.0f ms later\n",
		       (double)results[0]->compute_us / 1e3,
		       (double)(t2 - t1) / 1e6);
		ASSERT_OK(results[0]->error);
		ASSERT_OK(results[1]->error);
		/* The stop landed inside the step. */
		ASSERT(results[0]->compute_us >= 1900000);
		/* A rest of 300-600 ms and a 300 ms step, not a 2 s rest. */
		ASSERT((t2 - t1) / 1000000 < 1600);
		free_results();
		gp_worker_stop(w);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	test_description(&loop, &b[2]);
	test_inner_adamw(&loop, b);
	test_rebase(&loop, b);
	test_verify(&loop);
	ASSERT_OK(uv_loop_close(&loop));
	gp_model_destroy(ref);
	gp_backend_destroy(be);
	free(p0);
	free(v0);
	free(pk);
	free(vk);
	gp_data_destroy(ds);
	printf("worker: ok\n");
	return 0;
}
