/* The CPU backend, op by op, against naive double-precision references on
 * fresh random inputs. The seed is printed; GP_TEST_SEED replays a run. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backend.h"
#include "test.h"

static uint64_t rng;

static uint64_t next_u64(void)
{
	uint64_t z = (rng += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static float uni(float lo, float hi)
{
	return lo + (hi - lo) * (float)((double)(next_u64() >> 40) * 0x1p-24);
}

static size_t between(size_t lo, size_t hi)
{
	return lo + (size_t)(next_u64() % (hi - lo + 1));
}

static float *rand_vec(size_t n, float lo, float hi)
{
	float *v = malloc(n * sizeof(float));

	ASSERT_NOT_NULL(v);
	for (size_t i = 0; i < n; i++)
		v[i] = uni(lo, hi);
	return v;
}

static struct gp_buf *upload(struct gp_backend *be, const float *v, size_t n)
{
	struct gp_buf *b;

	ASSERT_OK(gp_buf_create(be, GP_F32, n, &b));
	ASSERT_OK(gp_buf_write(b, 0, v, n));
	return b;
}

static float *download(const struct gp_buf *b, size_t n)
{
	float *v = malloc(n * sizeof(float));

	ASSERT_NOT_NULL(v);
	ASSERT_OK(gp_buf_read(b, 0, v, n));
	return v;
}

static void test_buffers(struct gp_backend *be)
{
	struct gp_buf *a, *b, *i;
	float src[10], dst[10];
	int32_t labels[3] = { 1, -2, 3 }, back[3];

	for (int k = 0; k < 10; k++)
		src[k] = (float)k + 0.5f;
	ASSERT_OK(gp_buf_create(be, GP_F32, 10, &a));
	ASSERT_OK(gp_buf_create(be, GP_F32, 10, &b));
	ASSERT_OK(gp_buf_create(be, GP_I32, 3, &i));
	ASSERT_UINT_EQ(gp_buf_len(a), 10);
	ASSERT_EQ(gp_buf_dtype(i), GP_I32);
	/* Fresh buffers are zero. */
	ASSERT_OK(gp_buf_read(a, 0, dst, 10));
	for (int k = 0; k < 10; k++)
		ASSERT_NEAR(dst[k], 0, 0);
	ASSERT_OK(gp_buf_write(a, 0, src, 10));
	ASSERT_OK(gp_buf_write(a, 7, src, 3));
	ASSERT_OK(gp_buf_read(a, 5, dst, 5));
	ASSERT_NEAR(dst[0], 5.5, 0);
	ASSERT_NEAR(dst[2], 0.5, 0);
	ASSERT_NEAR(dst[4], 2.5, 0);
	ASSERT_EQ(gp_buf_write(a, 8, src, 3), -EINVAL);
	ASSERT_EQ(gp_buf_read(a, 11, dst, 0), -EINVAL);
	ASSERT_OK(gp_buf_copy(b, a, 10));
	ASSERT_OK(gp_buf_read(b, 0, dst, 10));
	ASSERT_NEAR(dst[9], 2.5, 0);
	ASSERT_EQ(gp_buf_copy(i, a, 3), -EINVAL);
	ASSERT_OK(gp_buf_write(i, 0, labels, 3));
	ASSERT_OK(gp_buf_read(i, 0, back, 3));
	ASSERT_EQ(back[1], -2);
	gp_buf_destroy(a);
	gp_buf_destroy(b);
	gp_buf_destroy(i);
	gp_buf_destroy(NULL);
}

static void test_gemm(struct gp_backend *be)
{
	for (int trial = 0; trial < 24; trial++) {
		bool ta = trial & 1, tb = trial & 2;
		size_t m = between(1, 70), n = between(1, 70),
		       k = between(1, 300);
		float alpha = uni(-2, 2), beta = trial % 3 == 0 ? 0.0f
							       : uni(-1, 1);
		float *a = rand_vec(m * k, -1, 1), *b = rand_vec(k * n, -1, 1);
		float *c = rand_vec(m * n, -1, 1), *out;
		struct gp_buf *ba = upload(be, a, m * k),
			      *bb = upload(be, b, k * n),
			      *bc = upload(be, c, m * n);

		ASSERT_OK(gp_gemm(be, ta, tb, m, n, k, alpha, ba, bb, beta,
				  bc));
		out = download(bc, m * n);
		for (size_t i = 0; i < m; i++) {
			for (size_t j = 0; j < n; j++) {
				double s = 0, mag = 0;

				for (size_t p = 0; p < k; p++) {
					double x = ta ? a[p * m + i]
						      : a[i * k + p];
					double y = tb ? b[j * k + p]
						      : b[p * n + j];

					s += x * y;
					mag += fabs(x * y);
				}
				s = alpha * s + beta * (double)c[i * n + j];
				ASSERT_NEAR(out[i * n + j], s,
					    1e-5 * (fabs(alpha) * mag + 1));
			}
		}
		free(a);
		free(b);
		free(c);
		free(out);
		gp_buf_destroy(ba);
		gp_buf_destroy(bb);
		gp_buf_destroy(bc);
	}
}

static void test_gemm_checks(struct gp_backend *be)
{
	struct gp_buf *a, *i;

	ASSERT_OK(gp_buf_create(be, GP_F32, 12, &a));
	ASSERT_OK(gp_buf_create(be, GP_I32, 12, &i));
	ASSERT_EQ(gp_gemm(be, false, false, 4, 4, 4, 1, a, a, 0, a), -EINVAL);
	ASSERT_EQ(gp_gemm(be, false, false, 3, 3, 3, 1, a, i, 0, a), -EINVAL);
	ASSERT_EQ(gp_bias_add(be, a, a, 4, 4, false), -EINVAL);
	gp_buf_destroy(a);
	gp_buf_destroy(i);
}

static void test_bias_colsum(struct gp_backend *be)
{
	for (int trial = 0; trial < 6; trial++) {
		size_t rows = between(1, 300), cols = between(1, 300);
		bool relu = trial & 1;
		float beta = trial < 2 ? 0.0f : trial < 4 ? 1.0f : uni(-1, 1);
		float *x = rand_vec(rows * cols, -1, 1), *bias =
			rand_vec(cols, -1, 1);
		float *o0 = rand_vec(cols, -1, 1), *out, *sum;
		struct gp_buf *bx = upload(be, x, rows * cols),
			      *bb = upload(be, bias, cols),
			      *bo = upload(be, o0, cols);

		ASSERT_OK(gp_col_sum(be, bx, rows, cols, beta, bo));
		sum = download(bo, cols);
		for (size_t c = 0; c < cols; c++) {
			double s = beta * (double)o0[c];

			for (size_t r = 0; r < rows; r++)
				s += x[r * cols + c];
			ASSERT_NEAR(sum[c], s, 1e-4);
		}
		ASSERT_OK(gp_bias_add(be, bx, bb, rows, cols, relu));
		out = download(bx, rows * cols);
		for (size_t r = 0; r < rows; r++) {
			for (size_t c = 0; c < cols; c++) {
				double v = (double)x[r * cols + c] + bias[c];

				if (relu && v < 0)
					v = 0;
				ASSERT_NEAR(out[r * cols + c], v, 1e-6);
			}
		}
		free(x);
		free(bias);
		free(o0);
		free(out);
		free(sum);
		gp_buf_destroy(bx);
		gp_buf_destroy(bb);
		gp_buf_destroy(bo);
	}
}

static void test_relu(struct gp_backend *be)
{
	size_t n = between(1, 5000);
	float *x = rand_vec(n, -1, 1), *dy = rand_vec(n, -1, 1), *y, *dx;
	struct gp_buf *bx = upload(be, x, n), *bdy = upload(be, dy, n), *by;

	ASSERT_OK(gp_buf_create(be, GP_F32, n, &by));
	ASSERT_OK(gp_relu_forward(be, bx, by, n));
	y = download(by, n);
	for (size_t i = 0; i < n; i++)
		ASSERT_NEAR(y[i], x[i] > 0 ? x[i] : 0, 0);
	/* In place: dx is dy. */
	ASSERT_OK(gp_relu_backward(be, by, bdy, bdy, n));
	dx = download(bdy, n);
	for (size_t i = 0; i < n; i++)
		ASSERT_NEAR(dx[i], x[i] > 0 ? dy[i] : 0, 0);
	ASSERT_OK(gp_relu_forward(be, bx, bx, n));
	free(y);
	y = download(bx, n);
	for (size_t i = 0; i < n; i++)
		ASSERT_NEAR(y[i], x[i] > 0 ? x[i] : 0, 0);
	free(x);
	free(dy);
	free(y);
	free(dx);
	gp_buf_destroy(bx);
	gp_buf_destroy(by);
	gp_buf_destroy(bdy);
}

static void test_softmax(struct gp_backend *be)
{
	for (int trial = 0; trial < 6; trial++) {
		size_t rows = between(1, 200), cols = between(2, 40), correct;
		bool in_place = trial & 1;
		/* Large logits check the max subtraction. */
		float span = trial >= 4 ? 80.0f : 4.0f;
		float *x = rand_vec(rows * cols, -span, span), *d;
		int32_t *lab = malloc(rows * sizeof(int32_t));
		struct gp_buf *bx = upload(be, x, rows * cols), *bl, *bd;
		double loss, ref = 0;
		size_t ref_correct = 0;

		ASSERT_NOT_NULL(lab);
		for (size_t r = 0; r < rows; r++)
			lab[r] = (int32_t)between(0, cols - 1);
		ASSERT_OK(gp_buf_create(be, GP_I32, rows, &bl));
		ASSERT_OK(gp_buf_write(bl, 0, lab, rows));
		if (in_place)
			bd = bx;
		else
			ASSERT_OK(gp_buf_create(be, GP_F32, rows * cols, &bd));
		ASSERT_OK(gp_softmax_xent(be, bx, bl, rows, cols, bd, &loss,
					  &correct));
		d = download(bd, rows * cols);
		for (size_t r = 0; r < rows; r++) {
			const float *row = x + r * cols;
			double max = row[0], sum = 0;
			size_t best = 0;

			for (size_t c = 1; c < cols; c++)
				if (row[c] > max)
					max = row[c], best = c;
			for (size_t c = 0; c < cols; c++)
				sum += exp(row[c] - max);
			ref += log(sum) - (row[lab[r]] - max);
			ref_correct += best == (size_t)lab[r];
			for (size_t c = 0; c < cols; c++) {
				double g = exp(row[c] - max) / sum -
					   (c == (size_t)lab[r]);

				ASSERT_NEAR(d[r * cols + c], g / rows,
					    1e-6 / rows);
			}
		}
		ASSERT_NEAR(loss, ref / rows, 1e-5 * (1 + ref / rows));
		ASSERT_UINT_EQ(correct, ref_correct);
		/* Without dlogits, the loss alone. */
		gp_buf_write(bx, 0, x, rows * cols);
		ASSERT_OK(gp_softmax_xent(be, bx, bl, rows, cols, NULL, &loss,
					  NULL));
		ASSERT_NEAR(loss, ref / rows, 1e-5 * (1 + ref / rows));
		/* A label out of range is refused and nothing is written. */
		lab[rows - 1] = (int32_t)cols;
		ASSERT_OK(gp_buf_write(bl, 0, lab, rows));
		ASSERT_OK(gp_buf_write(bx, 0, x, rows * cols));
		ASSERT_EQ(gp_softmax_xent(be, bx, bl, rows, cols, bx, &loss,
					  NULL),
			  -EINVAL);
		free(d);
		d = download(bx, rows * cols);
		ASSERT_MEM_EQ(d, x, rows * cols * sizeof(float));
		free(x);
		free(d);
		free(lab);
		if (!in_place)
			gp_buf_destroy(bd);
		gp_buf_destroy(bx);
		gp_buf_destroy(bl);
	}
}

static void test_argmax(struct gp_backend *be)
{
	size_t rows = between(1, 300), cols = between(1, 50);
	float *x = rand_vec(rows * cols, -3, 3);
	struct gp_buf *bx = upload(be, x, rows * cols), *bo;
	int32_t *o = malloc(rows * sizeof(int32_t));

	ASSERT_NOT_NULL(o);
	ASSERT_OK(gp_buf_create(be, GP_I32, rows, &bo));
	ASSERT_OK(gp_argmax(be, bx, rows, cols, bo));
	ASSERT_OK(gp_buf_read(bo, 0, o, rows));
	for (size_t r = 0; r < rows; r++) {
		size_t best = 0;

		for (size_t c = 1; c < cols; c++)
			if (x[r * cols + c] > x[r * cols + best])
				best = c;
		ASSERT_EQ(o[r], best);
	}
	free(x);
	free(o);
	gp_buf_destroy(bx);
	gp_buf_destroy(bo);
}

static void test_vector_ops(struct gp_backend *be)
{
	size_t n = between(1, 100000);
	float alpha = uni(-2, 2), lr = uni(0, 0.5f), mu = uni(0, 1);
	float *x = rand_vec(n, -1, 1), *y = rand_vec(n, -1, 1),
	      *v = rand_vec(n, -1, 1), *out, *outv;
	struct gp_buf *bx = upload(be, x, n), *by = upload(be, y, n),
		      *bv = upload(be, v, n);
	double ss, ref = 0;

	ASSERT_OK(gp_sumsq(be, bx, n, &ss));
	for (size_t i = 0; i < n; i++)
		ref += (double)x[i] * x[i];
	ASSERT_NEAR(ss, ref, 1e-12 * ref + 1e-12);

	ASSERT_OK(gp_axpy(be, n, alpha, bx, by));
	out = download(by, n);
	for (size_t i = 0; i < n; i++)
		ASSERT_NEAR(out[i], (double)alpha * x[i] + y[i], 1e-6);
	free(out);

	ASSERT_OK(gp_buf_write(by, 0, y, n));
	ASSERT_OK(gp_scale(be, n, alpha, by));
	out = download(by, n);
	for (size_t i = 0; i < n; i++)
		ASSERT_NEAR(out[i], (double)alpha * y[i], 1e-6);
	free(out);

	/* p = y, g = x. */
	ASSERT_OK(gp_buf_write(by, 0, y, n));
	ASSERT_OK(gp_sgd_momentum(be, n, lr, mu, bx, bv, by));
	out = download(by, n);
	outv = download(bv, n);
	for (size_t i = 0; i < n; i++) {
		double nv = (double)mu * v[i] + x[i];

		ASSERT_NEAR(outv[i], nv, 1e-6);
		ASSERT_NEAR(out[i], y[i] - (double)lr * nv, 1e-6);
	}
	ASSERT_EQ(gp_sgd_momentum(be, n, lr, mu, bx, bv, bv), -EINVAL);
	free(out);
	free(outv);
	free(x);
	free(y);
	free(v);
	gp_buf_destroy(bx);
	gp_buf_destroy(by);
	gp_buf_destroy(bv);
}

int main(void)
{
	struct gp_backend *be;
	const struct gp_device_info *info;
	const char *env = getenv("GP_TEST_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0)
			    : (uint64_t)time(NULL) ^ (uint64_t)clock();

	printf("seed %llu (GP_TEST_SEED=%llu replays it)\n",
	       (unsigned long long)seed, (unsigned long long)seed);
	rng = seed;
	ASSERT_OK(gp_backend_create_cpu(1, &be));
	info = gp_backend_info(be);
	ASSERT_EQ(info->type, GP_BACKEND_CPU);
	ASSERT_STR_EQ(info->kind, "cpu");
	ASSERT_STR_EQ(info->platform, "cblas");
	test_buffers(be);
	test_gemm(be);
	test_gemm_checks(be);
	test_bias_colsum(be);
	test_relu(be);
	test_softmax(be);
	test_argmax(be);
	test_vector_ops(be);
	ASSERT_OK(gp_backend_finish(be));
	gp_backend_destroy(be);
	/* Two threads take BLAS's threaded paths. */
	ASSERT_OK(gp_backend_create_cpu(2, &be));
	test_gemm(be);
	test_vector_ops(be);
	gp_backend_destroy(be);
	gp_backend_destroy(NULL);
	printf("ok\n");
	return 0;
}
