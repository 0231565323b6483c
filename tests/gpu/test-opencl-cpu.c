/* The OpenCL backend and the CPU backend agree on the MLP 784-256-128-10:
 * forward (loss and correct count, also against a double-precision host
 * forward), backward (every parameter gradient), an SGD-with-momentum step
 * (parameters and momentum) and the fused train step, on fresh random inputs
 * (the seed is printed; GP_TEST_SEED=<n> replays one). Exits 77 (skipped)
 * when there is no OpenCL device; GP_TEST_OPENCL_DEVICE picks one. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "model.h"
#include "test.h"

#define BATCH 32
#define SPEC "784-256-128-10"
/* Pre-activations and logit margins closer to a decision than this (in the
 * double reference) could go either way in float on two backends: a ReLU
 * whose input is 1e-7 contributes its whole row to one gradient and nothing
 * to the other. Such batches are drawn again rather than compared loosely. */
#define MIN_MARGIN 2e-5

static uint64_t rng_state;

static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static float rnd01(void)
{
	return (float)((rng_next() >> 40) * 0x1p-24);
}

struct host_ref {
	double loss;
	size_t correct;
	double min_margin; /* smallest |pre-activation| or top-2 gap */
};

/* y[r][o] = b[o] + sum_i x[r][i] * w[o][i] (nn.Linear layout), in double;
 * relu when asked; tracks the smallest |pre-activation|. */
static void dense(const double *x, size_t rows, size_t in, const float *w,
		  const float *b, size_t out, bool relu, double *y,
		  double *min_abs)
{
	for (size_t r = 0; r < rows; r++)
		for (size_t o = 0; o < out; o++) {
			double s = b[o];

			for (size_t i = 0; i < in; i++)
				s += x[r * in + i] * (double)w[o * in + i];
			if (relu) {
				if (fabs(s) < *min_abs)
					*min_abs = fabs(s);
				s = s > 0 ? s : 0;
			}
			y[r * out + o] = s;
		}
}

/* The forward pass in double from the model's parameters (read back from
 * m), for the batch x / labels. */
static void host_forward(struct gp_model *m, const float *x,
			 const int32_t *labels, size_t n, struct host_ref *ret)
{
	const struct gp_model_spec *spec = gp_model_get_spec(m);
	size_t width = 0;
	double *act, *next, margin = INFINITY;

	for (size_t l = 0; l <= spec->n_layers; l++)
		if (spec->dims[l] > width)
			width = spec->dims[l];
	act = malloc(n * width * sizeof(*act));
	next = malloc(n * width * sizeof(*next));
	ASSERT_NOT_NULL(act);
	ASSERT_NOT_NULL(next);
	for (size_t i = 0; i < n * spec->dims[0]; i++)
		act[i] = x[i];
	for (size_t l = 1; l <= spec->n_layers; l++) {
		size_t in = spec->dims[l - 1], out = spec->dims[l];
		float *w = malloc(in * out * sizeof(*w));
		float *b = malloc(out * sizeof(*b));
		double *t;

		ASSERT_NOT_NULL(w);
		ASSERT_NOT_NULL(b);
		ASSERT_OK(gp_model_read(m, GP_MODEL_PARAM, 2 * (l - 1), 0, out,
					w));
		ASSERT_OK(gp_model_read(m, GP_MODEL_PARAM, 2 * (l - 1) + 1, 0,
					out, b));
		dense(act, n, in, w, b, out, l < spec->n_layers, next,
		      &margin);
		t = act;
		act = next;
		next = t;
		free(w);
		free(b);
	}
	ret->loss = 0;
	ret->correct = 0;
	for (size_t r = 0; r < n; r++) {
		size_t cols = spec->dims[spec->n_layers], best = 0, second;
		const double *row = act + r * cols;
		double mx, sum = 0;

		for (size_t c = 1; c < cols; c++)
			if (row[c] > row[best])
				best = c;
		second = best == 0 ? 1 : 0;
		for (size_t c = 0; c < cols; c++)
			if (c != best && row[c] > row[second])
				second = c;
		if (row[best] - row[second] < margin)
			margin = row[best] - row[second];
		mx = row[best];
		for (size_t c = 0; c < cols; c++)
			sum += exp(row[c] - mx);
		ret->loss += log(sum) - (row[labels[r]] - mx);
		ret->correct += best == (size_t)labels[r];
	}
	ret->loss /= (double)n;
	ret->min_margin = margin;
	free(act);
	free(next);
}

/* Every tensor of slot agrees between the two models: the largest
 * difference is within rel of the tensor's largest magnitude. */
static void assert_slot_close(struct gp_model *a, struct gp_model *b,
			      enum gp_model_slot slot, const char *what,
			      double rel, bool may_be_zero)
{
	for (size_t i = 0; i < gp_model_tensor_count(a); i++) {
		struct gp_tensor_info ti;
		float *va, *vb;
		double maxabs = 0, maxdiff = 0;
		size_t n, worst = 0;

		ASSERT_OK(gp_model_tensor_info(a, i, &ti));
		n = ti.rows * ti.cols;
		va = malloc(n * sizeof(*va));
		vb = malloc(n * sizeof(*vb));
		ASSERT_NOT_NULL(va);
		ASSERT_NOT_NULL(vb);
		ASSERT_OK(gp_model_read(a, slot, i, 0, ti.rows, va));
		ASSERT_OK(gp_model_read(b, slot, i, 0, ti.rows, vb));
		for (size_t j = 0; j < n; j++) {
			double d = fabs((double)va[j] - vb[j]);

			ASSERT(isfinite(va[j]) && isfinite(vb[j]));
			if (fabs(vb[j]) > maxabs)
				maxabs = fabs(vb[j]);
			if (d > maxdiff) {
				maxdiff = d;
				worst = j;
			}
		}
		/* A tensor that is all zero would make the test vacuous
		 * (only the initial biases are). */
		if (!may_be_zero && maxabs == 0)
			GP_TEST_FAIL("%s %s: all zero", what, ti.name);
		if (!(maxdiff <= rel * maxabs))
			GP_TEST_FAIL("%s %s[%zu]: opencl %.9g, cpu %.9g "
				     "(max |cpu| %.9g, rel tol %g)",
				     what, ti.name, worst, (double)va[worst],
				     (double)vb[worst], maxabs, rel);
		free(va);
		free(vb);
	}
}

/* Writes the same pseudo-random momentum into both models, so that mu in
 * the step is exercised. */
static void write_momentum(struct gp_model *a, struct gp_model *b,
			   uint64_t seed)
{
	uint64_t saved = rng_state;

	rng_state = seed;
	for (size_t i = 0; i < gp_model_tensor_count(a); i++) {
		struct gp_tensor_info ti;
		float *v;

		ASSERT_OK(gp_model_tensor_info(a, i, &ti));
		v = malloc(ti.rows * ti.cols * sizeof(*v));
		ASSERT_NOT_NULL(v);
		for (size_t j = 0; j < ti.rows * ti.cols; j++)
			v[j] = 0.01f * (rnd01() - 0.5f);
		ASSERT_OK(gp_model_write(a, GP_MODEL_MOMENTUM, i, 0, ti.rows,
					 v));
		ASSERT_OK(gp_model_write(b, GP_MODEL_MOMENTUM, i, 0, ti.rows,
					 v));
		free(v);
	}
	rng_state = saved;
}

int main(void)
{
	const char *seed_env = getenv("GP_TEST_SEED");
	const char *dev_env = getenv("GP_TEST_OPENCL_DEVICE");
	uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0)
				 : (uint64_t)time(NULL);
	int dev = dev_env ? atoi(dev_env) : 0;
	const float lr = 0.05f, mu = 0.9f;
	struct gp_device_info *list = NULL;
	struct gp_backend *cl = NULL, *cpu = NULL;
	struct gp_model *mcl = NULL, *mcpu = NULL;
	struct gp_model_spec spec;
	struct gp_model_stats scl, scpu;
	struct host_ref ref = {0};
	float *x, *p_cl_step = NULL;
	int32_t labels[BATCH];
	size_t ndev = 0, in, tries = 0;
	double ss_cl, ss_cpu;
	uint64_t init_seed, mom_seed;
	int r;

	/* Line-buffered, so the seed is in the log even when a check
	 * aborts. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("seed %llu (GP_TEST_SEED=%llu replays it)\n",
	       (unsigned long long)seed, (unsigned long long)seed);
	rng_state = seed;
	init_seed = rng_next();
	mom_seed = rng_next();

	ASSERT_OK(gp_backend_list_devices(&list, &ndev));
	free(list);
	if (ndev < 2) {
		printf("no OpenCL device: skipped\n");
		return GP_TEST_SKIP;
	}
	r = gp_backend_create_opencl(dev, &cl);
	if (r < 0)
		GP_TEST_FAIL("gp_backend_create_opencl(%d): %d: %s", dev, r,
			     gp_backend_create_error());
	ASSERT_OK(gp_backend_create_cpu(0, &cpu));

	ASSERT_OK(gp_model_spec_parse(SPEC, &spec, NULL, 0));
	ASSERT_OK(gp_model_create(cl, &spec, BATCH, &mcl));
	ASSERT_OK(gp_model_create(cpu, &spec, BATCH, &mcpu));
	ASSERT_OK(gp_model_init_params(mcl, init_seed));
	ASSERT_OK(gp_model_init_params(mcpu, init_seed));
	/* The initial parameters are computed on the host: the same bits. */
	assert_slot_close(mcl, mcpu, GP_MODEL_PARAM, "init", 0, true);

	in = spec.dims[0];
	x = malloc(BATCH * in * sizeof(*x));
	ASSERT_NOT_NULL(x);
	/* Draw batches until none of its decisions is a near tie. */
	do {
		ASSERT_LT(tries++, 100);
		for (size_t i = 0; i < BATCH * in; i++)
			x[i] = rnd01();
		for (size_t i = 0; i < BATCH; i++)
			labels[i] = (int32_t)(rng_next() %
					      spec.dims[spec.n_layers]);
		host_forward(mcpu, x, labels, BATCH, &ref);
	} while (ref.min_margin < MIN_MARGIN);
	printf("batch drawn in %zu tries; host loss %.6f, correct %zu, "
	       "smallest margin %.3g\n",
	       tries, ref.loss, ref.correct, ref.min_margin);

	/* Forward and backward. */
	write_momentum(mcl, mcpu, mom_seed);
	ASSERT_OK(gp_model_set_batch(mcl, x, labels, BATCH));
	ASSERT_OK(gp_model_set_batch(mcpu, x, labels, BATCH));
	ASSERT_OK(gp_model_compute_grads(mcl, BATCH, &scl));
	ASSERT_OK(gp_model_compute_grads(mcpu, BATCH, &scpu));
	ASSERT_UINT_EQ(scl.samples, BATCH);
	ASSERT_UINT_EQ(scpu.samples, BATCH);
	ASSERT_NEAR(scl.loss, ref.loss, 1e-5 * (1 + ref.loss));
	ASSERT_NEAR(scpu.loss, ref.loss, 1e-5 * (1 + ref.loss));
	ASSERT_NEAR(scl.loss, scpu.loss, 1e-5 * (1 + ref.loss));
	ASSERT_UINT_EQ(scl.correct, ref.correct);
	ASSERT_UINT_EQ(scpu.correct, ref.correct);
	assert_slot_close(mcl, mcpu, GP_MODEL_GRAD, "grad", 1e-4, false);
	ASSERT_OK(gp_model_grad_sumsq(mcl, &ss_cl));
	ASSERT_OK(gp_model_grad_sumsq(mcpu, &ss_cpu));
	ASSERT_GT(ss_cpu, 0);
	ASSERT_NEAR(ss_cl, ss_cpu, 1e-4 * ss_cpu);

	/* An SGD step with momentum from those gradients. */
	ASSERT_OK(gp_model_apply_grads(mcl, lr, mu));
	ASSERT_OK(gp_model_apply_grads(mcpu, lr, mu));
	assert_slot_close(mcl, mcpu, GP_MODEL_MOMENTUM, "step momentum", 1e-4,
			  false);
	assert_slot_close(mcl, mcpu, GP_MODEL_PARAM, "step param", 1e-5,
			  false);
	{
		struct gp_tensor_info ti;

		ASSERT_OK(gp_model_tensor_info(mcl, 0, &ti));
		p_cl_step = malloc(ti.rows * ti.cols * sizeof(float));
		ASSERT_NOT_NULL(p_cl_step);
		ASSERT_OK(gp_model_read(mcl, GP_MODEL_PARAM, 0, 0, ti.rows,
					p_cl_step));
	}

	/* The fused step from the same start: the same result on both, and
	 * the same as compute + apply above. */
	ASSERT_OK(gp_model_init_params(mcl, init_seed));
	ASSERT_OK(gp_model_init_params(mcpu, init_seed));
	write_momentum(mcl, mcpu, mom_seed);
	ASSERT_OK(gp_model_train_step(mcl, BATCH, lr, mu, &scl));
	ASSERT_OK(gp_model_train_step(mcpu, BATCH, lr, mu, &scpu));
	ASSERT_NEAR(scl.loss, ref.loss, 1e-5 * (1 + ref.loss));
	ASSERT_NEAR(scpu.loss, ref.loss, 1e-5 * (1 + ref.loss));
	ASSERT_UINT_EQ(scl.correct, ref.correct);
	ASSERT_UINT_EQ(scpu.correct, ref.correct);
	assert_slot_close(mcl, mcpu, GP_MODEL_MOMENTUM, "train momentum",
			  1e-4, false);
	assert_slot_close(mcl, mcpu, GP_MODEL_PARAM, "train param", 1e-5,
			  false);
	{
		struct gp_tensor_info ti;
		float *p;

		ASSERT_OK(gp_model_tensor_info(mcl, 0, &ti));
		p = malloc(ti.rows * ti.cols * sizeof(*p));
		ASSERT_NOT_NULL(p);
		ASSERT_OK(gp_model_read(mcl, GP_MODEL_PARAM, 0, 0, ti.rows,
					p));
		for (size_t j = 0; j < ti.rows * ti.cols; j++)
			ASSERT_NEAR(p[j], p_cl_step[j], 1e-6);
		free(p);
	}

	/* A label outside the classes is refused by both. */
	labels[5] = (int32_t)spec.dims[spec.n_layers];
	ASSERT_OK(gp_model_set_batch(mcl, x, labels, BATCH));
	ASSERT_OK(gp_model_set_batch(mcpu, x, labels, BATCH));
	ASSERT_EQ(gp_model_compute_grads(mcl, BATCH, &scl), -EINVAL);
	ASSERT_EQ(gp_model_compute_grads(mcpu, BATCH, &scpu), -EINVAL);

	free(p_cl_step);
	free(x);
	gp_model_destroy(mcl);
	gp_model_destroy(mcpu);
	gp_backend_destroy(cl);
	gp_backend_destroy(cpu);
	printf("ok\n");
	return 0;
}
