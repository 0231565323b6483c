/* The CPU backend: buffers are 64-byte aligned host memory, GEMM goes to the
 * system's cblas (OpenBLAS in practice, with its thread count set here), and
 * the other ops are plain C loops written so that the compiler vectorises
 * them. Every op runs synchronously, so finish() has nothing to wait for.
 *
 * backend.c has already checked every argument (types, lengths, aliasing),
 * so the ops below trust their shapes. */
#include "backend-impl.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A cache line, and AVX-512's vector width: aligned loads and no false
 * sharing between buffers. */
#define CPU_ALIGN 64

/* The elementwise loops work on data in cache, so at the baseline SSE2
 * width they are bound by instruction count. Built also for AVX2 and
 * AVX-512 and picked at load time (an ifunc), they run four to six times
 * faster on the machines that have those units, and the binary still runs
 * on any x86-64. */
#if defined(__x86_64__) && defined(__has_attribute) && !defined(__clang__)
#if __has_attribute(target_clones)
#define CPU_VECTOR __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef CPU_VECTOR
#define CPU_VECTOR
#endif

struct cpu_backend {
	struct gp_backend base;
	int threads;
};

static size_t dtype_bytes(enum gp_dtype dt)
{
	return dt == GP_I32 ? sizeof(int32_t) : sizeof(float);
}

static float *fptr(const struct gp_buf *b)
{
	return (float *)b->impl;
}

static void cpu_destroy(struct gp_backend *be)
{
	free(be);
}

static int cpu_finish(struct gp_backend *be)
{
	(void)be;
	return 0;
}

static int cpu_buf_alloc(struct gp_backend *be, struct gp_buf *b)
{
	size_t bytes;
	void *p;

	if (__builtin_mul_overflow(b->n, dtype_bytes(b->dtype), &bytes) ||
	    bytes > SIZE_MAX - CPU_ALIGN)
		return -ENOMEM;
	/* aligned_alloc wants a multiple of the alignment. */
	bytes = (bytes + CPU_ALIGN - 1) / CPU_ALIGN * CPU_ALIGN;
	p = aligned_alloc(CPU_ALIGN, bytes ? bytes : CPU_ALIGN);
	if (!p) {
		gp_backend_set_error(be, "cannot allocate %zu bytes", bytes);
		return -ENOMEM;
	}
	memset(p, 0, bytes);
	b->impl = p;
	return 0;
}

static void cpu_buf_free(struct gp_buf *b)
{
	free(b->impl);
	b->impl = NULL;
}

static int cpu_buf_write(struct gp_buf *b, const void *src, size_t bytes_off,
			 size_t bytes)
{
	memcpy((char *)b->impl + bytes_off, src, bytes);
	return 0;
}

static int cpu_buf_read(const struct gp_buf *b, void *dst, size_t bytes_off,
			size_t bytes)
{
	memcpy(dst, (const char *)b->impl + bytes_off, bytes);
	return 0;
}

static int cpu_buf_copy(struct gp_buf *dst, const struct gp_buf *src,
			size_t bytes)
{
	if (dst != src)
		memmove(dst->impl, src->impl, bytes);
	return 0;
}

static int cpu_gemm(struct gp_backend *be, bool ta, bool tb, size_t m,
		    size_t n, size_t k, float alpha, const struct gp_buf *a,
		    const struct gp_buf *b, float beta, struct gp_buf *c)
{
	(void)be;
	/* Row-major leading dimensions: the stored row length of each
	 * operand, which is the other dimension when it is transposed. */
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
		    tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k,
		    alpha, fptr(a), ta ? (int)m : (int)k, fptr(b),
		    tb ? (int)k : (int)n, beta, fptr(c), (int)n);
	return 0;
}

CPU_VECTOR static int cpu_bias_add(struct gp_backend *be, struct gp_buf *x,
			const struct gp_buf *bias, size_t rows, size_t cols,
			bool relu)
{
	float *restrict px = fptr(x);
	const float *restrict pb = fptr(bias);

	(void)be;
	for (size_t r = 0; r < rows; r++) {
		float *restrict row = px + r * cols;

		if (relu) {
			for (size_t c = 0; c < cols; c++) {
				float v = row[c] + pb[c];

				row[c] = v > 0.0f ? v : 0.0f;
			}
		} else {
			for (size_t c = 0; c < cols; c++)
				row[c] += pb[c];
		}
	}
	return 0;
}

CPU_VECTOR static int cpu_col_sum(struct gp_backend *be, const struct gp_buf *x,
		       size_t rows, size_t cols, float beta,
		       struct gp_buf *out)
{
	const float *restrict px = fptr(x);
	float *restrict po = fptr(out);

	(void)be;
	/* beta == 0 ignores what out held, as BLAS does, so that a NaN left
	 * in a fresh buffer cannot leak into the sum. */
	if (beta == 0.0f)
		memset(po, 0, cols * sizeof(float));
	else if (beta != 1.0f)
		for (size_t c = 0; c < cols; c++)
			po[c] *= beta;
	/* Row by row keeps both streams sequential and vectorisable. */
	for (size_t r = 0; r < rows; r++) {
		const float *restrict row = px + r * cols;

		for (size_t c = 0; c < cols; c++)
			po[c] += row[c];
	}
	return 0;
}

CPU_VECTOR static int cpu_relu_forward(struct gp_backend *be, const struct gp_buf *x,
			    struct gp_buf *y, size_t n)
{
	const float *px = fptr(x);
	float *py = fptr(y);

	(void)be;
	for (size_t i = 0; i < n; i++)
		py[i] = px[i] > 0.0f ? px[i] : 0.0f;
	return 0;
}

CPU_VECTOR static int cpu_relu_backward(struct gp_backend *be, const struct gp_buf *y,
			     const struct gp_buf *dy, struct gp_buf *dx,
			     size_t n)
{
	const float *py = fptr(y), *pdy = fptr(dy);
	float *pdx = fptr(dx);

	(void)be;
	for (size_t i = 0; i < n; i++)
		pdx[i] = py[i] > 0.0f ? pdy[i] : 0.0f;
	return 0;
}

/* One pass per row: max, exponentials, loss, argmax and the gradient, so the
 * logits are read from cache once they are loaded. */
static int cpu_softmax_xent(struct gp_backend *be, struct gp_buf *logits,
			    const struct gp_buf *labels, size_t rows,
			    size_t cols, struct gp_buf *dlogits,
			    double *ret_loss, size_t *ret_correct)
{
	const float *px = fptr(logits);
	const int32_t *pl = (const int32_t *)labels->impl;
	float *pd = dlogits ? fptr(dlogits) : NULL;
	double loss = 0.0;
	size_t correct = 0;
	float inv_rows = 1.0f / (float)rows;

	/* Check every label before writing anything, so a bad one leaves
	 * dlogits as it was. */
	for (size_t r = 0; r < rows; r++) {
		if (pl[r] < 0 || (size_t)pl[r] >= cols) {
			gp_backend_set_error(be,
					     "gp_softmax_xent: label %d of row "
					     "%zu is outside [0, %zu)",
					     (int)pl[r], r, cols);
			return -EINVAL;
		}
	}
	for (size_t r = 0; r < rows; r++) {
		const float *row = px + r * cols;
		float *drow = pd ? pd + r * cols : NULL;
		size_t label = (size_t)pl[r], best = 0;
		float max = row[0], xl = row[label];
		double sum = 0.0;

		for (size_t c = 1; c < cols; c++) {
			if (row[c] > max) {
				max = row[c];
				best = c;
			}
		}
		/* drow may be row: each element is read before it is
		 * overwritten with its exponential. */
		if (drow) {
			for (size_t c = 0; c < cols; c++) {
				float e = expf(row[c] - max);

				sum += (double)e;
				drow[c] = e;
			}
		} else {
			for (size_t c = 0; c < cols; c++)
				sum += (double)expf(row[c] - max);
		}
		loss += log(sum) - (double)(xl - max);
		correct += best == label;
		if (drow) {
			float scale = (float)(1.0 / sum) * inv_rows;

			for (size_t c = 0; c < cols; c++)
				drow[c] *= scale;
			drow[label] -= inv_rows;
		}
	}
	*ret_loss = loss / (double)rows;
	if (ret_correct)
		*ret_correct = correct;
	return 0;
}

static int cpu_argmax(struct gp_backend *be, const struct gp_buf *x,
		      size_t rows, size_t cols, struct gp_buf *out)
{
	const float *px = fptr(x);
	int32_t *po = (int32_t *)out->impl;

	(void)be;
	for (size_t r = 0; r < rows; r++) {
		const float *row = px + r * cols;
		size_t best = 0;

		for (size_t c = 1; c < cols; c++)
			if (row[c] > row[best])
				best = c;
		po[r] = (int32_t)best;
	}
	return 0;
}

/* The vector ops go to BLAS, which splits long vectors across its threads;
 * cblas takes int lengths, so longer ones go in pieces. */
#define CPU_CHUNK ((size_t)1 << 30)

static int cpu_axpy(struct gp_backend *be, size_t n, float alpha,
		    const struct gp_buf *x, struct gp_buf *y)
{
	(void)be;
	for (size_t i = 0; i < n; i += CPU_CHUNK) {
		size_t len = n - i < CPU_CHUNK ? n - i : CPU_CHUNK;

		cblas_saxpy((int)len, alpha, fptr(x) + i, 1, fptr(y) + i, 1);
	}
	return 0;
}

static int cpu_scale(struct gp_backend *be, size_t n, float alpha,
		     struct gp_buf *x)
{
	(void)be;
	for (size_t i = 0; i < n; i += CPU_CHUNK) {
		size_t len = n - i < CPU_CHUNK ? n - i : CPU_CHUNK;

		cblas_sscal((int)len, alpha, fptr(x) + i, 1);
	}
	return 0;
}

CPU_VECTOR static int cpu_sumsq(struct gp_backend *be, const struct gp_buf *x, size_t n,
		     double *ret)
{
	const float *px = fptr(x);
	/* Four partial sums let the loop pipeline (a single double chain is
	 * latency bound) and keep the double accumulation the interface
	 * promises. */
	double s[4] = { 0.0, 0.0, 0.0, 0.0 };
	size_t i = 0;

	(void)be;
	for (; i + 4 <= n; i += 4)
		for (size_t j = 0; j < 4; j++)
			s[j] += (double)px[i + j] * (double)px[i + j];
	for (; i < n; i++)
		s[0] += (double)px[i] * (double)px[i];
	*ret = (s[0] + s[1]) + (s[2] + s[3]);
	return 0;
}

/* One pass over g, v and p instead of scal + axpy + axpy. */
CPU_VECTOR static int cpu_sgd_momentum(struct gp_backend *be, size_t n, float lr,
			    float mu, const struct gp_buf *g, struct gp_buf *v,
			    struct gp_buf *p)
{
	const float *restrict pg = fptr(g);
	float *restrict pv = fptr(v);
	float *restrict pp = fptr(p);

	(void)be;
	for (size_t i = 0; i < n; i++) {
		float vi = mu * pv[i] + pg[i];

		pv[i] = vi;
		pp[i] -= lr * vi;
	}
	return 0;
}

static const struct gp_backend_ops cpu_ops = {
	.destroy = cpu_destroy,
	.finish = cpu_finish,
	.buf_alloc = cpu_buf_alloc,
	.buf_free = cpu_buf_free,
	.buf_write = cpu_buf_write,
	.buf_read = cpu_buf_read,
	.buf_copy = cpu_buf_copy,
	.gemm = cpu_gemm,
	.bias_add = cpu_bias_add,
	.col_sum = cpu_col_sum,
	.relu_forward = cpu_relu_forward,
	.relu_backward = cpu_relu_backward,
	.softmax_xent = cpu_softmax_xent,
	.argmax = cpu_argmax,
	.axpy = cpu_axpy,
	.scale = cpu_scale,
	.sumsq = cpu_sumsq,
	.sgd_momentum = cpu_sgd_momentum,
};

int gp_cpu_create(int threads, struct gp_backend **ret)
{
	struct cpu_backend *cb = calloc(1, sizeof(*cb));

	if (!cb) {
		gp_backend_set_create_error("out of memory");
		return -ENOMEM;
	}
	cb->base.ops = &cpu_ops;
	cb->base.impl = cb;
	gp_cpu_fill_info(&cb->base.info);
#if GP_HAVE_OPENBLAS
	/* OpenBLAS keeps one thread pool per process, so this setting is
	 * process-wide: the last CPU backend created wins. */
	if (threads > 0)
		openblas_set_num_threads(threads);
	cb->threads = openblas_get_num_threads();
#else
	cb->threads = threads > 0 ? threads : 1;
#endif
	*ret = &cb->base;
	return 0;
}
