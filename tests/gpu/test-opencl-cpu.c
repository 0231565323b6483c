/* The OpenCL backend and the CPU backend agree on the convolution and
 * pooling ops (every output and gradient, with and without stride,
 * padding and accumulation, on both convolution paths of
 * kernels/opencl-conv.c) and on a CNN's loss, gradients and fused step;
 * and on the MLP 784-256-128-10:
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

/* A buffer on be holding v[0..n) (host floats), or zeros when v is NULL. */
static struct gp_buf *upload(struct gp_backend *be, const float *v, size_t n)
{
	struct gp_buf *b;

	ASSERT_OK(gp_buf_create(be, GP_F32, n, &b));
	if (v)
		ASSERT_OK(gp_buf_write(b, 0, v, n));
	return b;
}

static float *rnd_vec(size_t n, float scale)
{
	float *v = malloc(n * sizeof(*v));

	ASSERT_NOT_NULL(v);
	for (size_t i = 0; i < n; i++)
		v[i] = scale * (2.0f * rnd01() - 1.0f);
	return v;
}

/* The buffers a (OpenCL) and b (CPU), n floats, agree within rel times
 * the largest |b|, and b is not all zero. */
static void bufs_close(const struct gp_buf *a, const struct gp_buf *b,
		       size_t n, double rel, const char *what)
{
	float *va = malloc(n * sizeof(*va)), *vb = malloc(n * sizeof(*vb));
	double maxabs = 0, maxdiff = 0;
	size_t worst = 0;

	ASSERT_NOT_NULL(va);
	ASSERT_NOT_NULL(vb);
	ASSERT_OK(gp_buf_read(a, 0, va, n));
	ASSERT_OK(gp_buf_read(b, 0, vb, n));
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)va[i] - vb[i]);

		ASSERT(isfinite(va[i]) && isfinite(vb[i]));
		if (fabs(vb[i]) > maxabs)
			maxabs = fabs(vb[i]);
		if (d > maxdiff) {
			maxdiff = d;
			worst = i;
		}
	}
	if (maxabs == 0)
		GP_TEST_FAIL("%s: all zero", what);
	if (!(maxdiff <= rel * maxabs))
		GP_TEST_FAIL("%s[%zu]: opencl %.9g, cpu %.9g (max |cpu| %.9g)",
			     what, worst, (double)va[worst], (double)vb[worst],
			     maxabs);
	free(va);
	free(vb);
}

/* gp_conv2d_forward / _backward on both backends, from the same random
 * values; dw and db once overwritten (beta 0 over garbage) and once
 * accumulated (beta 0.5). */
static void check_conv(struct gp_backend *cl, struct gp_backend *cpu,
		       struct gp_conv2d_shape s)
{
	struct gp_backend *be[2] = { cl, cpu };
	size_t nx = s.n * s.c * s.h * s.w, nw = s.oc * s.c * s.kh * s.kw;
	size_t ny, nb = s.oc;
	struct gp_buf *x[2], *w[2], *b[2], *y[2], *dy[2], *dx[2], *dw[2],
		*db[2];
	float *hx, *hw, *hb, *hdy, *junk;
	char what[96];

	s.oh = (s.h + 2 * s.pad - s.kh) / s.stride + 1;
	s.ow = (s.w + 2 * s.pad - s.kw) / s.stride + 1;
	ny = s.n * s.oc * s.oh * s.ow;
	hx = rnd_vec(nx, 1);
	hw = rnd_vec(nw, 0.5f);
	hb = rnd_vec(nb, 0.5f);
	hdy = rnd_vec(ny, 1);
	junk = rnd_vec(nw > nb ? nw : nb, 1e30f);
	for (int i = 0; i < 2; i++) {
		x[i] = upload(be[i], hx, nx);
		w[i] = upload(be[i], hw, nw);
		b[i] = upload(be[i], hb, nb);
		y[i] = upload(be[i], NULL, ny);
		dy[i] = upload(be[i], hdy, ny);
		dx[i] = upload(be[i], NULL, nx);
		dw[i] = upload(be[i], junk, nw);
		db[i] = upload(be[i], junk, nb);
		ASSERT_OK(gp_conv2d_forward(be[i], x[i], w[i], b[i], y[i], &s));
		ASSERT_OK(gp_conv2d_backward(be[i], x[i], w[i], dy[i], dx[i],
					     dw[i], db[i], 0.0f, &s));
	}
	snprintf(what, sizeof(what), "conv %zux%zux%zux%zu oc %zu k %zux%zu "
		 "stride %zu pad %zu", s.n, s.c, s.h, s.w, s.oc, s.kh, s.kw,
		 s.stride, s.pad);
	bufs_close(y[0], y[1], ny, 1e-5, what);
	bufs_close(dx[0], dx[1], nx, 1e-5, what);
	bufs_close(dw[0], dw[1], nw, 1e-5, what);
	bufs_close(db[0], db[1], nb, 1e-5, what);
	/* Accumulated, and without dx. */
	for (int i = 0; i < 2; i++)
		ASSERT_OK(gp_conv2d_backward(be[i], x[i], w[i], dy[i], NULL,
					     dw[i], db[i], 0.5f, &s));
	bufs_close(dw[0], dw[1], nw, 1e-5, what);
	bufs_close(db[0], db[1], nb, 1e-5, what);
	for (int i = 0; i < 2; i++) {
		gp_buf_destroy(x[i]);
		gp_buf_destroy(w[i]);
		gp_buf_destroy(b[i]);
		gp_buf_destroy(y[i]);
		gp_buf_destroy(dy[i]);
		gp_buf_destroy(dx[i]);
		gp_buf_destroy(dw[i]);
		gp_buf_destroy(db[i]);
	}
	free(hx);
	free(hw);
	free(hb);
	free(hdy);
	free(junk);
}

/* gp_pool2d_forward / _backward, max (the same indices) and average. */
static void check_pool(struct gp_backend *cl, struct gp_backend *cpu,
		       bool max, struct gp_pool2d_shape s)
{
	struct gp_backend *be[2] = { cl, cpu };
	size_t nx = s.n * s.c * s.h * s.w, ny;
	struct gp_buf *x[2], *y[2], *idx[2] = { NULL, NULL }, *dy[2], *dx[2];
	float *hx, *hdy;
	char what[96];

	s.oh = (s.h - s.k) / s.stride + 1;
	s.ow = (s.w - s.k) / s.stride + 1;
	ny = s.n * s.c * s.oh * s.ow;
	hx = rnd_vec(nx, 1);
	hdy = rnd_vec(ny, 1);
	for (int i = 0; i < 2; i++) {
		x[i] = upload(be[i], hx, nx);
		y[i] = upload(be[i], NULL, ny);
		dy[i] = upload(be[i], hdy, ny);
		dx[i] = upload(be[i], hx, nx); /* overwritten */
		if (max)
			ASSERT_OK(gp_buf_create(be[i], GP_I32, ny, &idx[i]));
		ASSERT_OK(gp_pool2d_forward(be[i], max, x[i], y[i], idx[i],
					    &s));
		ASSERT_OK(gp_pool2d_backward(be[i], max, dy[i], idx[i], dx[i],
					     &s));
	}
	snprintf(what, sizeof(what), "%s pool %zux%zux%zux%zu k %zu stride "
		 "%zu", max ? "max" : "avg", s.n, s.c, s.h, s.w, s.k,
		 s.stride);
	bufs_close(y[0], y[1], ny, max ? 0 : 1e-6, what);
	bufs_close(dx[0], dx[1], nx, 1e-6, what);
	if (max) {
		int32_t *a = malloc(ny * sizeof(*a)), *b = malloc(ny * sizeof(*b));

		ASSERT_NOT_NULL(a);
		ASSERT_NOT_NULL(b);
		ASSERT_OK(gp_buf_read(idx[0], 0, a, ny));
		ASSERT_OK(gp_buf_read(idx[1], 0, b, ny));
		ASSERT_MEM_EQ(a, b, ny * sizeof(*a));
		free(a);
		free(b);
	}
	for (int i = 0; i < 2; i++) {
		gp_buf_destroy(x[i]);
		gp_buf_destroy(y[i]);
		gp_buf_destroy(dy[i]);
		gp_buf_destroy(dx[i]);
		gp_buf_destroy(idx[i]);
	}
	free(hx);
	free(hdy);
}

#define CNN "gradpool-model 1\n" \
	"input shape=2x12x10\n" \
	"conv2d c1 out=4 kernel=3 padding=1\n" \
	"maxpool2d p1 kernel=2\n" \
	"conv2d c2 out=6 kernel=3 stride=2 padding=1\n" \
	"avgpool2d p2 kernel=2 stride=1\n" \
	"flatten f\n" \
	"dense out out=5\n" \
	"softmax_xent loss\n"

/* A CNN without ReLUs (whose kinks would make float noise decide whole
 * rows): the same loss, gradients and fused step on both backends. */
static void check_cnn(struct gp_backend *cl, struct gp_backend *cpu,
		      uint64_t init_seed)
{
	struct gp_model_spec spec;
	struct gp_model *mcl, *mcpu;
	struct gp_model_stats scl, scpu;
	int32_t labels[8];
	float *x;

	ASSERT_OK(gp_model_spec_parse(CNN, &spec, NULL, 0));
	ASSERT_OK(gp_model_create(cl, &spec, 8, &mcl));
	ASSERT_OK(gp_model_create(cpu, &spec, 8, &mcpu));
	ASSERT_OK(gp_model_init_params(mcl, init_seed));
	ASSERT_OK(gp_model_init_params(mcpu, init_seed));
	x = rnd_vec(8 * spec.dims[0], 1);
	for (int i = 0; i < 8; i++)
		labels[i] = (int32_t)(rng_next() % 5);
	ASSERT_OK(gp_model_set_batch(mcl, x, labels, 8));
	ASSERT_OK(gp_model_set_batch(mcpu, x, labels, 8));
	ASSERT_OK(gp_model_compute_grads(mcl, 8, &scl));
	ASSERT_OK(gp_model_compute_grads(mcpu, 8, &scpu));
	ASSERT_NEAR(scl.loss, scpu.loss, 1e-5 * (1 + scpu.loss));
	assert_slot_close(mcl, mcpu, GP_MODEL_GRAD, "cnn grad", 1e-4, true);
	write_momentum(mcl, mcpu, init_seed + 1);
	ASSERT_OK(gp_model_train_step(mcl, 8, 0.05f, 0.9f, &scl));
	ASSERT_OK(gp_model_train_step(mcpu, 8, 0.05f, 0.9f, &scpu));
	assert_slot_close(mcl, mcpu, GP_MODEL_PARAM, "cnn step param", 1e-5,
			  false);
	assert_slot_close(mcl, mcpu, GP_MODEL_MOMENTUM, "cnn step momentum",
			  1e-4, false);
	printf("cnn: loss %.6f on both, gradients and step agree\n",
	       scpu.loss);
	free(x);
	gp_model_destroy(mcl);
	gp_model_destroy(mcpu);
}

static void check_layers(struct gp_backend *cl, struct gp_backend *cpu,
			 uint64_t seed)
{
	check_conv(cl, cpu, (struct gp_conv2d_shape){ .n = 3, .c = 2, .h = 9,
		   .w = 7, .oc = 4, .kh = 3, .kw = 3, .stride = 1, .pad = 1 });
	check_conv(cl, cpu, (struct gp_conv2d_shape){ .n = 2, .c = 3, .h = 11,
		   .w = 8, .oc = 5, .kh = 5, .kw = 3, .stride = 2, .pad = 2 });
	check_conv(cl, cpu, (struct gp_conv2d_shape){ .n = 2, .c = 1, .h = 6,
		   .w = 6, .oc = 3, .kh = 2, .kw = 2, .stride = 3, .pad = 0 });
	check_pool(cl, cpu, true, (struct gp_pool2d_shape){ .n = 2, .c = 3,
		   .h = 8, .w = 6, .k = 2, .stride = 2 });
	check_pool(cl, cpu, true, (struct gp_pool2d_shape){ .n = 2, .c = 2,
		   .h = 9, .w = 7, .k = 3, .stride = 2 });
	check_pool(cl, cpu, false, (struct gp_pool2d_shape){ .n = 2, .c = 3,
		   .h = 8, .w = 6, .k = 2, .stride = 2 });
	check_pool(cl, cpu, false, (struct gp_pool2d_shape){ .n = 1, .c = 2,
		   .h = 7, .w = 9, .k = 3, .stride = 1 });
	check_cnn(cl, cpu, seed);
	printf("conv2d and pooling agree\n");
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
	/* Both convolution paths, whichever the device would pick: the
	 * direct kernels and the lowering to CLBlast's convgemm, im2col,
	 * GEMMs and col2im (kernels/opencl-conv.c). */
	{
		static const char *const paths[] = { "direct", "gemm" };

		for (int i = 0; i < 2; i++) {
			struct gp_backend *other = NULL;

			ASSERT_OK(setenv("GP_OPENCL_CONV", paths[i], 1));
			ASSERT_OK(gp_backend_create_opencl(dev, &other));
			ASSERT_OK(unsetenv("GP_OPENCL_CONV"));
			printf("conv2d path %s:\n", paths[i]);
			check_layers(other, cpu, init_seed);
			gp_backend_destroy(other);
		}
	}

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
	ASSERT(ss_cpu > 0);
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
	TEST_LEAK_CHECK();
	printf("ok\n");
	return 0;
}
