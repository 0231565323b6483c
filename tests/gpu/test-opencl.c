/* The OpenCL backend against a double-precision host reference, op by op, on
 * fresh random inputs (the seed is printed; GP_TEST_SEED=<n> replays one).
 * Exits 77 (skipped) when there is no OpenCL device. GP_TEST_OPENCL_DEVICE
 * picks the device (default 0). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "model.h"
#include "test.h"

static uint64_t rng_state;

/* splitmix64: small, and the same stream everywhere for a given seed. */
static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static float rnd(float lo, float hi)
{
	return lo + (hi - lo) * (float)((rng_next() >> 40) * 0x1p-24);
}

static float *rnd_vec(size_t n, float lo, float hi)
{
	float *v = malloc(n * sizeof(*v));

	ASSERT_NOT_NULL(v);
	for (size_t i = 0; i < n; i++)
		v[i] = rnd(lo, hi);
	return v;
}

static struct gp_buf *upload(struct gp_backend *be, const float *v, size_t n)
{
	struct gp_buf *b = NULL;

	ASSERT_OK(gp_buf_create(be, GP_F32, n, &b));
	ASSERT_OK(gp_buf_write(b, 0, v, n));
	return b;
}

static float *download(const struct gp_buf *b, size_t n)
{
	float *v = malloc(n * sizeof(*v));

	ASSERT_NOT_NULL(v);
	ASSERT_OK(gp_buf_read(b, 0, v, n));
	return v;
}

/* got[i] ~= want[i] within abs + rel * |want[i]|. */
static void assert_close(const char *what, const float *got,
			 const double *want, size_t n, double abs_tol,
			 double rel_tol)
{
	for (size_t i = 0; i < n; i++) {
		double tol = abs_tol + rel_tol * fabs(want[i]);

		if (!(fabs((double)got[i] - want[i]) <= tol))
			GP_TEST_FAIL("%s[%zu]: got %.9g, want %.9g (tol %g)",
				     what, i, (double)got[i], want[i], tol);
	}
}

static void test_status_codes(void)
{
	ASSERT_STR_EQ(gp_cl_status_name(-5), "CL_OUT_OF_RESOURCES");
	ASSERT_STR_EQ(gp_cl_status_name(0), "CL_SUCCESS");
	ASSERT_STR_EQ(gp_cl_status_name(-11), "CL_BUILD_PROGRAM_FAILURE");
	ASSERT_STR_EQ(gp_cl_status_name(-72),
		      "CL_MAX_SIZE_RESTRICTION_EXCEEDED");
	ASSERT_STR_EQ(gp_cl_status_name(-1001), "CL_PLATFORM_NOT_FOUND_KHR");
	ASSERT_STR_EQ(gp_cl_status_name(-20), "CL_UNKNOWN_ERROR");
	ASSERT_STR_EQ(gp_cl_status_name(12345), "CL_UNKNOWN_ERROR");
	ASSERT_EQ(gp_cl_status_errno(0), 0);
	ASSERT_EQ(gp_cl_status_errno(-5), -EIO);
	ASSERT_EQ(gp_cl_status_errno(-4), -ENOMEM);
	ASSERT_EQ(gp_cl_status_errno(-6), -ENOMEM);
	ASSERT_EQ(gp_cl_status_errno(-1), -ENODEV);
	ASSERT_EQ(gp_cl_status_errno(-2), -ENODEV);
	ASSERT_EQ(gp_cl_status_errno(-30), -EINVAL);
	ASSERT_EQ(gp_cl_status_errno(-52), -EINVAL);
	ASSERT_EQ(gp_cl_status_errno(-11), -EIO);
	ASSERT_EQ(gp_cl_status_errno(-9999), -EIO);
}

/* Checks the list and returns how many OpenCL devices it has. */
static size_t test_enumeration(void)
{
	struct gp_device_info *list = NULL;
	size_t n = 0, ncl = 0;

	ASSERT_OK(gp_backend_list_devices(&list, &n));
	ASSERT_GE(n, 1);
	ASSERT_EQ(list[0].type, GP_BACKEND_CPU);
	ASSERT_STR_EQ(list[0].kind, "cpu");
	ASSERT_STR_EQ(list[0].platform, "cblas");
	ASSERT_GE(list[0].compute_units, 1);
	ASSERT_GT(list[0].global_mem, 0);
	for (size_t i = 1; i < n; i++) {
		const struct gp_device_info *d = &list[i];

		printf("opencl %d: %s | %s | %s | %s | %s | %u units | %llu "
		       "MiB\n",
		       d->index, d->kind, d->name, d->vendor, d->platform,
		       d->driver, d->compute_units,
		       (unsigned long long)(d->global_mem >> 20));
		ASSERT_EQ(d->type, GP_BACKEND_OPENCL);
		ASSERT_EQ(d->index, (int64_t)(i - 1));
		ASSERT(!strcmp(d->kind, "cpu") || !strcmp(d->kind, "gpu") ||
		       !strcmp(d->kind, "accelerator") ||
		       !strcmp(d->kind, "other"));
		ASSERT_GT(strlen(d->name), 0);
		ASSERT_GT(strlen(d->platform), 0);
		ASSERT_GE(d->compute_units, 1);
		ASSERT_GT(d->global_mem, 0);
		ncl++;
	}
	free(list);
	return ncl;
}

static void test_buffers(struct gp_backend *be, struct gp_backend *other)
{
	struct gp_buf *a = NULL, *b = NULL, *c = NULL, *x = NULL;
	int32_t iv[20], iback[20];
	float *v = rnd_vec(100, -5, 5), back[100];

	ASSERT_OK(gp_buf_create(be, GP_F32, 100, &a));
	ASSERT_UINT_EQ(gp_buf_len(a), 100);
	ASSERT_EQ(gp_buf_dtype(a), GP_F32);
	/* Fresh buffers are zero. */
	ASSERT_OK(gp_buf_read(a, 0, back, 100));
	for (int i = 0; i < 100; i++)
		ASSERT_NEAR(back[i], 0, 0);
	/* Write a middle range, read it back through an offset. */
	ASSERT_OK(gp_buf_write(a, 30, v, 50));
	ASSERT_OK(gp_buf_read(a, 0, back, 100));
	for (int i = 0; i < 100; i++) {
		float want = i >= 30 && i < 80 ? v[i - 30] : 0.0f;

		ASSERT(back[i] == want);
	}
	ASSERT_OK(gp_buf_read(a, 40, back, 10));
	ASSERT_MEM_EQ(back, v + 10, 10 * sizeof(float));
	ASSERT_EQ(gp_buf_write(a, 60, v, 41), -EINVAL);
	ASSERT_EQ(gp_buf_read(a, 101, back, 0), -EINVAL);
	ASSERT_EQ(gp_buf_read(a, SIZE_MAX, back, 2), -EINVAL);
	ASSERT_OK(gp_buf_read(a, 100, back, 0));

	/* Copy a prefix into a longer buffer. */
	ASSERT_OK(gp_buf_create(be, GP_F32, 120, &b));
	ASSERT_OK(gp_buf_copy(b, a, 100));
	ASSERT_OK(gp_buf_read(b, 0, back, 100));
	ASSERT_MEM_EQ(back + 30, v, 50 * sizeof(float));
	ASSERT_EQ(gp_buf_copy(a, b, 101), -EINVAL);

	/* int32 buffers, and type mismatches. */
	ASSERT_OK(gp_buf_create(be, GP_I32, 20, &c));
	for (int i = 0; i < 20; i++)
		iv[i] = (int32_t)(rng_next() & 0x7fffffff) - (1 << 30);
	ASSERT_OK(gp_buf_write(c, 5, iv, 15));
	ASSERT_OK(gp_buf_read(c, 5, iback, 15));
	ASSERT_MEM_EQ(iback, iv, 15 * sizeof(int32_t));
	ASSERT_EQ(gp_buf_copy(a, c, 10), -EINVAL);
	ASSERT_EQ(gp_axpy(be, 20, 1.0f, c, a), -EINVAL);
	ASSERT_GT(strlen(gp_backend_error(be)), 0);
	ASSERT_EQ(gp_buf_create(be, GP_F32, 0, &x), -EINVAL);
	ASSERT_EQ(gp_buf_create(be, (enum gp_dtype)7, 4, &x), -EINVAL);
	ASSERT(x == NULL);

	/* Buffers of another backend are refused. */
	ASSERT_OK(gp_buf_create(other, GP_F32, 100, &x));
	ASSERT_EQ(gp_axpy(be, 100, 1.0f, x, a), -EINVAL);
	ASSERT_EQ(gp_buf_copy(a, x, 100), -EINVAL);
	/* Too short for the shape. */
	ASSERT_EQ(gp_bias_add(be, a, b, 11, 10, false), -EINVAL);

	gp_buf_destroy(x);
	gp_buf_destroy(c);
	gp_buf_destroy(b);
	gp_buf_destroy(a);
	free(v);
}

static void test_gemm(struct gp_backend *be)
{
	const size_t m = 37, n = 29, k = 41;
	const float alpha = 0.7f, beta = 0.3f;

	for (int combo = 0; combo < 4; combo++) {
		bool ta = combo & 1, tb = combo & 2;
		float *a = rnd_vec(m * k, -1, 1), *b = rnd_vec(k * n, -1, 1);
		float *c = rnd_vec(m * n, -1, 1), *got;
		double *want = malloc(m * n * sizeof(*want));
		struct gp_buf *ba = upload(be, a, m * k);
		struct gp_buf *bb = upload(be, b, k * n);
		struct gp_buf *bc = upload(be, c, m * n);
		char what[32];

		ASSERT_NOT_NULL(want);
		for (size_t i = 0; i < m; i++)
			for (size_t j = 0; j < n; j++) {
				double s = 0;

				for (size_t l = 0; l < k; l++) {
					double av = ta ? a[l * m + i]
						       : a[i * k + l];
					double bv = tb ? b[j * k + l]
						       : b[l * n + j];

					s += av * bv;
				}
				want[i * n + j] = alpha * s + beta * c[i * n + j];
			}
		ASSERT_OK(gp_gemm(be, ta, tb, m, n, k, alpha, ba, bb, beta,
				  bc));
		got = download(bc, m * n);
		snprintf(what, sizeof(what), "gemm(ta=%d,tb=%d)", ta, tb);
		assert_close(what, got, want, m * n, 1e-5, 1e-4);
		gp_buf_destroy(ba);
		gp_buf_destroy(bb);
		gp_buf_destroy(bc);
		free(a);
		free(b);
		free(c);
		free(got);
		free(want);
	}

	/* beta == 0 ignores what C held, as BLAS does: a NaN there does not
	 * leak into the product. */
	{
		float a[6] = {1, 2, 3, 4, 5, 6}, cv[4] = {NAN, NAN, NAN, NAN};
		struct gp_buf *ba = upload(be, a, 6), *bc = upload(be, cv, 4);

		ASSERT_OK(gp_gemm(be, false, true, 2, 2, 3, 1.0f, ba, ba, 0.0f,
				  bc));
		ASSERT_OK(gp_buf_read(bc, 0, cv, 4));
		ASSERT_NEAR(cv[0], 14, 0);
		ASSERT_NEAR(cv[1], 32, 0);
		ASSERT_NEAR(cv[2], 32, 0);
		ASSERT_NEAR(cv[3], 77, 0);
		gp_buf_destroy(ba);
		gp_buf_destroy(bc);
	}
}

static void test_bias_colsum(struct gp_backend *be)
{
	const size_t rows = 33, cols = 19;
	float *x = rnd_vec(rows * cols, -2, 2), *bias = rnd_vec(cols, -1, 1);
	float *out0 = rnd_vec(cols, -1, 1), *got;
	double want[33 * 19];
	struct gp_buf *bx, *bb = upload(be, bias, cols), *bo;

	for (int relu = 0; relu < 2; relu++) {
		bx = upload(be, x, rows * cols);
		ASSERT_OK(gp_bias_add(be, bx, bb, rows, cols, relu));
		for (size_t i = 0; i < rows * cols; i++) {
			double v = (double)x[i] + bias[i % cols];

			want[i] = relu && v < 0 ? 0 : v;
		}
		got = download(bx, rows * cols);
		assert_close(relu ? "bias_add+relu" : "bias_add", got, want,
			     rows * cols, 1e-6, 1e-6);
		free(got);
		gp_buf_destroy(bx);
	}

	bx = upload(be, x, rows * cols);
	for (int pass = 0; pass < 2; pass++) {
		float beta = pass ? 0.5f : 0.0f;

		/* With beta == 0 what out held is ignored, NaN included. */
		if (!pass)
			out0[cols / 2] = NAN;
		else
			out0[cols / 2] = 0.25f;
		bo = upload(be, out0, cols);
		ASSERT_OK(gp_col_sum(be, bx, rows, cols, beta, bo));
		for (size_t c = 0; c < cols; c++) {
			double s = beta == 0 ? 0 : beta * (double)out0[c];

			for (size_t r = 0; r < rows; r++)
				s += x[r * cols + c];
			want[c] = s;
		}
		got = download(bo, cols);
		assert_close("col_sum", got, want, cols, 1e-5, 1e-5);
		free(got);
		gp_buf_destroy(bo);
	}
	gp_buf_destroy(bx);
	gp_buf_destroy(bb);
	free(x);
	free(bias);
	free(out0);
}

static void test_relu(struct gp_backend *be)
{
	const size_t n = 1001;
	float *x = rnd_vec(n, -1, 1), *dy = rnd_vec(n, -3, 3), *got;
	double *want = malloc(n * sizeof(*want));
	struct gp_buf *bx = upload(be, x, n), *by, *bdy = upload(be, dy, n);

	ASSERT_NOT_NULL(want);
	ASSERT_OK(gp_buf_create(be, GP_F32, n, &by));
	ASSERT_OK(gp_relu_forward(be, bx, by, n));
	for (size_t i = 0; i < n; i++)
		want[i] = x[i] > 0 ? x[i] : 0;
	got = download(by, n);
	assert_close("relu_forward", got, want, n, 0, 0);
	free(got);
	/* In place. */
	ASSERT_OK(gp_relu_forward(be, bx, bx, n));
	got = download(bx, n);
	assert_close("relu_forward in place", got, want, n, 0, 0);
	free(got);

	/* dx into dy itself. */
	ASSERT_OK(gp_relu_backward(be, by, bdy, bdy, n));
	for (size_t i = 0; i < n; i++)
		want[i] = x[i] > 0 ? dy[i] : 0;
	got = download(bdy, n);
	assert_close("relu_backward", got, want, n, 0, 0);
	free(got);

	gp_buf_destroy(bx);
	gp_buf_destroy(by);
	gp_buf_destroy(bdy);
	free(x);
	free(dy);
	free(want);
}

static void test_softmax_xent(struct gp_backend *be)
{
	const size_t rows = 50, cols = 10;
	float *x = rnd_vec(rows * cols, -8, 8), *got;
	int32_t labels[50], argmax_got[50];
	double want_d[50 * 10], want_loss = 0, loss = -1;
	size_t want_correct = 0, correct = 999;
	struct gp_buf *bx, *bl, *bd, *bi;

	/* Large logits: exp() of them overflows unless the max goes first. */
	for (size_t c = 0; c < cols; c++)
		x[3 * cols + c] = 1000.0f + (float)c;
	for (size_t r = 0; r < rows; r++) {
		const float *row = x + r * cols;
		double mx = row[0], sum = 0;
		size_t best = 0;

		labels[r] = (int32_t)(rng_next() % cols);
		/* Make about half the rows correct. */
		for (size_t c = 1; c < cols; c++)
			if (row[c] > mx) {
				mx = row[c];
				best = c;
			}
		if (r % 2 == 0)
			labels[r] = (int32_t)best;
		for (size_t c = 0; c < cols; c++)
			sum += exp(row[c] - mx);
		want_loss += log(sum) - (row[labels[r]] - mx);
		want_correct += best == (size_t)labels[r];
		for (size_t c = 0; c < cols; c++)
			want_d[r * cols + c] =
				(exp(row[c] - mx) / sum -
				 (c == (size_t)labels[r] ? 1 : 0)) /
				(double)rows;
	}
	want_loss /= rows;

	bx = upload(be, x, rows * cols);
	ASSERT_OK(gp_buf_create(be, GP_I32, rows, &bl));
	ASSERT_OK(gp_buf_write(bl, 0, labels, rows));
	ASSERT_OK(gp_buf_create(be, GP_F32, rows * cols, &bd));
	ASSERT_OK(gp_softmax_xent(be, bx, bl, rows, cols, bd, &loss,
				  &correct));
	ASSERT_NEAR(loss, want_loss, 1e-5 * (1 + want_loss));
	ASSERT_UINT_EQ(correct, want_correct);
	got = download(bd, rows * cols);
	assert_close("dlogits", got, want_d, rows * cols, 1e-7, 1e-4);
	free(got);

	/* Without gradient and without correct count. */
	loss = -1;
	ASSERT_OK(gp_softmax_xent(be, bx, bl, rows, cols, NULL, &loss, NULL));
	ASSERT_NEAR(loss, want_loss, 1e-5 * (1 + want_loss));
	/* In place: dlogits over logits. */
	ASSERT_OK(gp_softmax_xent(be, bx, bl, rows, cols, bx, &loss,
				  &correct));
	ASSERT_UINT_EQ(correct, want_correct);
	got = download(bx, rows * cols);
	assert_close("dlogits in place", got, want_d, rows * cols, 1e-7, 1e-4);
	free(got);

	/* argmax over the original logits. */
	ASSERT_OK(gp_buf_write(bx, 0, x, rows * cols));
	ASSERT_OK(gp_buf_create(be, GP_I32, rows, &bi));
	ASSERT_OK(gp_argmax(be, bx, rows, cols, bi));
	ASSERT_OK(gp_buf_read(bi, 0, argmax_got, rows));
	for (size_t r = 0; r < rows; r++) {
		size_t best = 0;

		for (size_t c = 1; c < cols; c++)
			if (x[r * cols + c] > x[r * cols + best])
				best = c;
		ASSERT_EQ(argmax_got[r], (int64_t)best);
	}

	/* A label out of range, either side, is -EINVAL and writes neither
	 * ret_loss nor ret_correct. */
	loss = -1;
	correct = 999;
	labels[17] = (int32_t)cols;
	ASSERT_OK(gp_buf_write(bl, 0, labels, rows));
	ASSERT_EQ(gp_softmax_xent(be, bx, bl, rows, cols, bd, &loss, &correct),
		  -EINVAL);
	ASSERT(loss == -1);
	ASSERT_UINT_EQ(correct, 999);
	ASSERT(strstr(gp_backend_error(be), "row 17") != NULL);
	labels[17] = -1;
	ASSERT_OK(gp_buf_write(bl, 0, labels, rows));
	ASSERT_EQ(gp_softmax_xent(be, bx, bl, rows, cols, NULL, &loss, NULL),
		  -EINVAL);
	/* Labels of the wrong type. */
	ASSERT_EQ(gp_softmax_xent(be, bx, bx, rows, cols, NULL, &loss, NULL),
		  -EINVAL);

	gp_buf_destroy(bx);
	gp_buf_destroy(bl);
	gp_buf_destroy(bd);
	gp_buf_destroy(bi);
	free(x);
}

static void test_vector_ops(struct gp_backend *be)
{
	const size_t n = 100003;
	const float lr = 0.05f, mu = 0.9f;
	float *x = rnd_vec(n, -1, 1), *y = rnd_vec(n, -1, 1);
	float *v = rnd_vec(n, -1, 1), *got;
	double *want = malloc(n * sizeof(*want)), *want_v, ss = 0, got_ss = 0;
	struct gp_buf *bx = upload(be, x, n), *by = upload(be, y, n);
	struct gp_buf *bv = upload(be, v, n);

	ASSERT_NOT_NULL(want);
	want_v = malloc(n * sizeof(*want_v));
	ASSERT_NOT_NULL(want_v);

	ASSERT_OK(gp_axpy(be, n, -0.25f, bx, by));
	for (size_t i = 0; i < n; i++)
		want[i] = y[i] - 0.25 * x[i];
	got = download(by, n);
	assert_close("axpy", got, want, n, 1e-6, 1e-6);
	free(got);

	ASSERT_OK(gp_scale(be, n, 3.5f, bx));
	for (size_t i = 0; i < n; i++)
		want[i] = 3.5 * x[i];
	got = download(bx, n);
	assert_close("scale", got, want, n, 1e-6, 1e-6);

	/* sumsq of the scaled x, against a double sum of the floats read
	 * back; twice, to see it is the same. */
	for (size_t i = 0; i < n; i++)
		ss += (double)got[i] * got[i];
	free(got);
	ASSERT_OK(gp_sumsq(be, bx, n, &got_ss));
	ASSERT_NEAR(got_ss, ss, 1e-6 * ss);
	{
		double again = 0;

		ASSERT_OK(gp_sumsq(be, bx, n, &again));
		ASSERT(again == got_ss);
		/* A prefix. */
		ASSERT_OK(gp_sumsq(be, bx, 7, &again));
		ss = 0;
		for (size_t i = 0; i < 7; i++)
			ss += 3.5 * x[i] * 3.5 * x[i];
		ASSERT_NEAR(again, ss, 1e-5 * ss);
	}

	/* SGD with momentum: g = y, v, p = x (unscaled). */
	ASSERT_OK(gp_buf_write(bx, 0, x, n));
	ASSERT_OK(gp_buf_write(by, 0, y, n));
	ASSERT_OK(gp_sgd_momentum(be, n, lr, mu, by, bv, bx));
	for (size_t i = 0; i < n; i++) {
		want_v[i] = (double)mu * v[i] + y[i];
		want[i] = x[i] - (double)lr * want_v[i];
	}
	got = download(bv, n);
	assert_close("sgd v", got, want_v, n, 1e-6, 1e-6);
	free(got);
	got = download(bx, n);
	assert_close("sgd p", got, want, n, 1e-6, 1e-6);
	free(got);
	ASSERT_EQ(gp_sgd_momentum(be, n, lr, mu, by, bx, bx), -EINVAL);

	gp_buf_destroy(bx);
	gp_buf_destroy(by);
	gp_buf_destroy(bv);
	free(x);
	free(y);
	free(v);
	free(want);
	free(want_v);
}

/* The OpenCL backend has every layer op (test-opencl-cpu and
 * test-opencl-layers check them against the CPU), so a model of any layers
 * is created on it. */
static void test_layers_present(struct gp_backend *be)
{
	static const char *const models[] = {
		"gradpool-model 1; input shape=1x4x4; conv2d conv1 out=2 "
		"kernel=3; gelu act; dropout drop p=0.5; flatten f; "
		"softmax_xent loss",
		"gradpool-model 1; input shape=1x4x4; conv2d conv1 out=2 "
		"kernel=3; maxpool2d p kernel=2; flatten f; layernorm ln; "
		"mse loss",
		"gradpool-model 1; input shape=2x4x4; conv2d c out=4 kernel=3; "
		"groupnorm gn groups=2; flatten f; softmax_xent loss",
		"gradpool-model 1; input shape=4; embedding tok vocab=5 dim=4; "
		"posembed pos; linear qkv out=12; attention attn heads=2; "
		"linear head out=5; seq_xent loss",
		"4-3",
	};
	struct gp_model_spec spec;
	struct gp_model *m = NULL;

	for (int f = GP_FEATURE_CONV2D; f <= GP_FEATURE_GROUPNORM; f++)
		ASSERT(gp_backend_has(be, (enum gp_backend_feature)f));
	for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++) {
		ASSERT_OK(gp_model_spec_parse(models[i], &spec, NULL, 0));
		ASSERT_OK(gp_model_create(be, &spec, 4, &m));
		gp_model_destroy(m);
	}
}

int main(void)
{
	const char *seed_env = getenv("GP_TEST_SEED");
	const char *dev_env = getenv("GP_TEST_OPENCL_DEVICE");
	uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0)
				 : (uint64_t)time(NULL);
	int dev = dev_env ? atoi(dev_env) : 0;
	struct gp_backend *be = NULL, *other = NULL;
	size_t ncl;
	int r;

	/* Line-buffered, so the seed is in the log even when a check
	 * aborts. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("seed %llu (GP_TEST_SEED=%llu replays it)\n",
	       (unsigned long long)seed, (unsigned long long)seed);
	rng_state = seed;

	test_status_codes();
	ncl = test_enumeration();
	if (ncl == 0) {
		printf("no OpenCL device: skipped\n");
		return GP_TEST_SKIP;
	}
	ASSERT_EQ(gp_backend_create_opencl((int)ncl, &be), -ENODEV);
	ASSERT(be == NULL);
	ASSERT_GT(strlen(gp_backend_create_error()), 0);
	ASSERT_EQ(gp_backend_create_opencl(-1, &be), -EINVAL);

	r = gp_backend_create_opencl(dev, &be);
	if (r < 0)
		GP_TEST_FAIL("gp_backend_create_opencl(%d): %d: %s", dev, r,
			     gp_backend_create_error());
	ASSERT_EQ(gp_backend_info(be)->type, GP_BACKEND_OPENCL);
	ASSERT_EQ(gp_backend_info(be)->index, dev);
	ASSERT_OK(gp_backend_create_opencl(dev, &other));

	test_buffers(be, other);
	gp_backend_destroy(other);
	test_gemm(be);
	test_bias_colsum(be);
	test_relu(be);
	test_softmax_xent(be);
	test_vector_ops(be);
	test_layers_present(be);
	ASSERT_OK(gp_backend_finish(be));
	gp_backend_destroy(be);
	gp_backend_destroy(NULL);
	TEST_LEAK_CHECK();
	printf("ok\n");
	return 0;
}
