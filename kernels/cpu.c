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
	/* The im2col matrix of one sample, grown on first use to the largest
	 * convolution seen and kept, so later steps allocate nothing. */
	float *cols;
	size_t cols_len;
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
	struct cpu_backend *cb = be->impl;

	free(cb->cols);
	free(cb);
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

/* The convolutions lower to GEMM one sample at a time (im2col): the
 * sample's input becomes a (c kh kw) x (oh ow) matrix whose row
 * (ci, ki, kj) holds the input pixel each output position sees through
 * that tap, so y_n = W cols (oc x oh ow, already NCHW) and the backward
 * pass is dW += dy_n cols^T and dcols = W^T dy_n, folded back by col2im.
 * Per sample keeps the scratch small (it stays in cache) and needs no
 * layout permutation. */
static float *cols_scratch(struct gp_backend *be, size_t len)
{
	struct cpu_backend *cb = be->impl;

	if (cb->cols_len < len) {
		size_t bytes = (len * sizeof(float) + CPU_ALIGN - 1) /
			       CPU_ALIGN * CPU_ALIGN;
		float *p = aligned_alloc(CPU_ALIGN, bytes);

		if (!p) {
			gp_backend_set_error(be, "cannot allocate %zu bytes",
					     bytes);
			return NULL;
		}
		free(cb->cols);
		cb->cols = p;
		cb->cols_len = len;
	}
	return cb->cols;
}

/* The output columns [*lo, *hi) whose input column ox * stride + kj - pad
 * lies inside the image; the others read zero padding. */
static void valid_cols(const struct gp_conv2d_shape *s, size_t kj, size_t *lo,
		       size_t *hi)
{
	long first = (long)s->pad - (long)kj, end = (long)(s->w + s->pad) -
						   (long)kj;
	long st = (long)s->stride;

	*lo = first <= 0 ? 0 : (size_t)((first + st - 1) / st);
	*hi = end <= 0 ? 0 : (size_t)((end + st - 1) / st);
	if (*hi > s->ow)
		*hi = s->ow;
	if (*lo > *hi)
		*lo = *hi;
}

static void im2col(const float *restrict x, const struct gp_conv2d_shape *s,
		   float *restrict cols)
{
	size_t p = s->oh * s->ow;

	for (size_t ci = 0; ci < s->c; ci++) {
		const float *plane = x + ci * s->h * s->w;

		for (size_t ki = 0; ki < s->kh; ki++) {
			for (size_t kj = 0; kj < s->kw; kj++) {
				float *row = cols + ((ci * s->kh + ki) * s->kw +
						     kj) * p;
				size_t lo, hi;

				valid_cols(s, kj, &lo, &hi);
				for (size_t oy = 0; oy < s->oh; oy++) {
					long iy = (long)(oy * s->stride + ki) -
						  (long)s->pad;
					float *out = row + oy * s->ow;
					const float *in;

					if (iy < 0 || iy >= (long)s->h) {
						memset(out, 0,
						       s->ow * sizeof(float));
						continue;
					}
					/* Output column ox reads input column
					 * ox * stride + kj - pad, which is
					 * >= 0 from lo on. */
					in = plane + (size_t)iy * s->w;
					for (size_t ox = 0; ox < lo; ox++)
						out[ox] = 0.0f;
					if (hi > lo && s->stride == 1)
						memcpy(out + lo,
						       in + lo + kj - s->pad,
						       (hi - lo) * sizeof(float));
					else
						for (size_t ox = lo; ox < hi; ox++)
							out[ox] = in[ox * s->stride +
								     kj - s->pad];
					for (size_t ox = hi; ox < s->ow; ox++)
						out[ox] = 0.0f;
				}
			}
		}
	}
}

/* dx += the columns folded back onto the pixels they came from. */
static void col2im(const float *restrict cols, const struct gp_conv2d_shape *s,
		   float *restrict dx)
{
	size_t p = s->oh * s->ow;

	for (size_t ci = 0; ci < s->c; ci++) {
		float *plane = dx + ci * s->h * s->w;

		for (size_t ki = 0; ki < s->kh; ki++) {
			for (size_t kj = 0; kj < s->kw; kj++) {
				const float *row =
					cols + ((ci * s->kh + ki) * s->kw + kj) * p;
				size_t lo, hi;

				valid_cols(s, kj, &lo, &hi);
				for (size_t oy = 0; oy < s->oh; oy++) {
					long iy = (long)(oy * s->stride + ki) -
						  (long)s->pad;
					const float *in = row + oy * s->ow;
					float *out;

					if (iy < 0 || iy >= (long)s->h)
						continue;
					out = plane + (size_t)iy * s->w;
					for (size_t ox = lo; ox < hi; ox++)
						out[ox * s->stride + kj -
						    s->pad] += in[ox];
				}
			}
		}
	}
}

/* A 1 x 1 convolution with stride 1 and no padding needs no im2col: the
 * sample itself is the column matrix. */
static bool conv_is_pointwise(const struct gp_conv2d_shape *s)
{
	return s->kh == 1 && s->kw == 1 && s->stride == 1 && s->pad == 0;
}

static int cpu_conv2d_forward(struct gp_backend *be, const struct gp_buf *x,
			      const struct gp_buf *w, const struct gp_buf *b,
			      struct gp_buf *y,
			      const struct gp_conv2d_shape *s)
{
	size_t k = s->c * s->kh * s->kw, p = s->oh * s->ow;
	size_t in_len = s->c * s->h * s->w, out_len = s->oc * p;
	const float *pb = fptr(b);
	float *cols = NULL;

	if (!conv_is_pointwise(s) && !(cols = cols_scratch(be, k * p)))
		return -ENOMEM;
	for (size_t n = 0; n < s->n; n++) {
		const float *xn = fptr(x) + n * in_len;
		float *yn = fptr(y) + n * out_len;

		if (cols)
			im2col(xn, s, cols);
		/* The bias first, so the GEMM accumulates onto it. */
		for (size_t o = 0; o < s->oc; o++)
			for (size_t i = 0; i < p; i++)
				yn[o * p + i] = pb[o];
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
			    (int)s->oc, (int)p, (int)k, 1.0f, fptr(w), (int)k,
			    cols ? cols : xn, (int)p, 1.0f, yn, (int)p);
	}
	return 0;
}

static int cpu_conv2d_backward(struct gp_backend *be, const struct gp_buf *x,
			       const struct gp_buf *w, const struct gp_buf *dy,
			       struct gp_buf *dx, struct gp_buf *dw,
			       struct gp_buf *db, float beta,
			       const struct gp_conv2d_shape *s)
{
	size_t k = s->c * s->kh * s->kw, p = s->oh * s->ow;
	size_t in_len = s->c * s->h * s->w, out_len = s->oc * p;
	float *pdb = fptr(db);
	float *cols = NULL;

	if (!conv_is_pointwise(s) && !(cols = cols_scratch(be, k * p)))
		return -ENOMEM;
	if (beta == 0.0f)
		memset(pdb, 0, s->oc * sizeof(float));
	else if (beta != 1.0f)
		for (size_t o = 0; o < s->oc; o++)
			pdb[o] *= beta;
	for (size_t n = 0; n < s->n; n++) {
		const float *dyn = fptr(dy) + n * out_len;

		for (size_t o = 0; o < s->oc; o++) {
			float sum = 0.0f;

			for (size_t i = 0; i < p; i++)
				sum += dyn[o * p + i];
			pdb[o] += sum;
		}
		if (cols)
			im2col(fptr(x) + n * in_len, s, cols);
		/* dW = beta dW + dy_n cols^T; beta applies once. */
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans,
			    (int)s->oc, (int)k, (int)p, 1.0f, dyn, (int)p,
			    cols ? cols : fptr(x) + n * in_len, (int)p,
			    n == 0 ? beta : 1.0f, fptr(dw), (int)k);
		if (!dx)
			continue;
		if (cols) {
			float *dxn = fptr(dx) + n * in_len;

			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans,
				    (int)k, (int)p, (int)s->oc, 1.0f, fptr(w),
				    (int)k, dyn, (int)p, 0.0f, cols, (int)p);
			memset(dxn, 0, in_len * sizeof(float));
			col2im(cols, s, dxn);
		} else {
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans,
				    (int)k, (int)p, (int)s->oc, 1.0f, fptr(w),
				    (int)k, dyn, (int)p, 0.0f,
				    fptr(dx) + n * in_len, (int)p);
		}
	}
	return 0;
}

/* The common 2 x 2, stride 2 window, without the generic loops' index
 * arithmetic. Same results: the first maximum in row-major order. */
static void pool2x2_forward(bool max, const float *restrict px,
			    float *restrict py, int32_t *restrict pi,
			    const struct gp_pool2d_shape *s)
{
	for (size_t pl = 0; pl < s->n * s->c; pl++) {
		const float *in = px + pl * s->h * s->w;
		float *out = py + pl * s->oh * s->ow;
		int32_t *oi = pi ? pi + pl * s->oh * s->ow : NULL;

		for (size_t oy = 0; oy < s->oh; oy++) {
			const float *r0 = in + 2 * oy * s->w, *r1 = r0 + s->w;
			float *o = out + oy * s->ow;

			if (!max) {
				for (size_t ox = 0; ox < s->ow; ox++)
					o[ox] = 0.25f * (r0[2 * ox] + r0[2 * ox + 1] +
							 r1[2 * ox] + r1[2 * ox + 1]);
				continue;
			}
			for (size_t ox = 0; ox < s->ow; ox++) {
				size_t at = 2 * oy * s->w + 2 * ox;
				float b = r0[2 * ox];

				if (r0[2 * ox + 1] > b) {
					b = r0[2 * ox + 1];
					at = 2 * oy * s->w + 2 * ox + 1;
				}
				if (r1[2 * ox] > b) {
					b = r1[2 * ox];
					at = (2 * oy + 1) * s->w + 2 * ox;
				}
				if (r1[2 * ox + 1] > b) {
					b = r1[2 * ox + 1];
					at = (2 * oy + 1) * s->w + 2 * ox + 1;
				}
				o[ox] = b;
				oi[oy * s->ow + ox] = (int32_t)at;
			}
		}
	}
}

static int cpu_pool2d_forward(struct gp_backend *be, bool max,
			      const struct gp_buf *x, struct gp_buf *y,
			      struct gp_buf *idx,
			      const struct gp_pool2d_shape *s)
{
	const float *px = fptr(x);
	float *py = fptr(y);
	int32_t *pi = max ? (int32_t *)idx->impl : NULL;
	float inv = 1.0f / (float)(s->k * s->k);

	(void)be;
	if (s->k == 2 && s->stride == 2) {
		pool2x2_forward(max, px, py, pi, s);
		return 0;
	}
	for (size_t pl = 0; pl < s->n * s->c; pl++) {
		const float *in = px + pl * s->h * s->w;
		float *out = py + pl * s->oh * s->ow;
		int32_t *oi = pi ? pi + pl * s->oh * s->ow : NULL;

		for (size_t oy = 0; oy < s->oh; oy++) {
			for (size_t ox = 0; ox < s->ow; ox++) {
				size_t y0 = oy * s->stride, x0 = ox * s->stride;
				size_t best = y0 * s->w + x0;
				float acc = 0.0f;

				for (size_t i = 0; i < s->k; i++) {
					for (size_t j = 0; j < s->k; j++) {
						size_t at = (y0 + i) * s->w +
							    x0 + j;

						if (max) {
							if (in[at] > in[best])
								best = at;
						} else {
							acc += in[at];
						}
					}
				}
				if (max) {
					out[oy * s->ow + ox] = in[best];
					oi[oy * s->ow + ox] = (int32_t)best;
				} else {
					out[oy * s->ow + ox] = acc * inv;
				}
			}
		}
	}
	return 0;
}

static int cpu_pool2d_backward(struct gp_backend *be, bool max,
			       const struct gp_buf *dy,
			       const struct gp_buf *idx, struct gp_buf *dx,
			       const struct gp_pool2d_shape *s)
{
	const float *pdy = fptr(dy);
	const int32_t *pi = max ? (const int32_t *)idx->impl : NULL;
	float *pdx = fptr(dx);
	float inv = 1.0f / (float)(s->k * s->k);

	(void)be;
	memset(pdx, 0, s->n * s->c * s->h * s->w * sizeof(float));
	for (size_t pl = 0; pl < s->n * s->c; pl++) {
		const float *g = pdy + pl * s->oh * s->ow;
		float *out = pdx + pl * s->h * s->w;

		for (size_t oy = 0; oy < s->oh; oy++) {
			for (size_t ox = 0; ox < s->ow; ox++) {
				size_t o = oy * s->ow + ox;

				if (max) {
					out[pi[pl * s->oh * s->ow + o]] += g[o];
					continue;
				}
				for (size_t i = 0; i < s->k; i++)
					for (size_t j = 0; j < s->k; j++)
						out[(oy * s->stride + i) * s->w +
						    ox * s->stride + j] +=
							g[o] * inv;
			}
		}
	}
	return 0;
}

static int cpu_gelu_forward(struct gp_backend *be, const struct gp_buf *x,
			    struct gp_buf *y, size_t n)
{
	const float *px = fptr(x);
	float *py = fptr(y);

	(void)be;
	for (size_t i = 0; i < n; i++)
		py[i] = 0.5f * px[i] * (1.0f + erff(px[i] * (float)M_SQRT1_2));
	return 0;
}

static int cpu_gelu_backward(struct gp_backend *be, const struct gp_buf *x,
			     const struct gp_buf *dy, struct gp_buf *dx,
			     size_t n)
{
	const float *px = fptr(x), *pdy = fptr(dy);
	float *pdx = fptr(dx);
	/* 1 / sqrt(2 pi) */
	const float inv_sqrt_2pi = 0.3989422804014327f;

	(void)be;
	for (size_t i = 0; i < n; i++) {
		float v = px[i];
		float cdf = 0.5f * (1.0f + erff(v * (float)M_SQRT1_2));
		float pdf = inv_sqrt_2pi * expf(-0.5f * v * v);

		pdx[i] = pdy[i] * (cdf + v * pdf);
	}
	return 0;
}

CPU_VECTOR static int cpu_mul(struct gp_backend *be, const struct gp_buf *a,
			      const struct gp_buf *b, struct gp_buf *y,
			      size_t n)
{
	const float *pa = fptr(a), *pb = fptr(b);
	float *py = fptr(y);

	(void)be;
	for (size_t i = 0; i < n; i++)
		py[i] = pa[i] * pb[i];
	return 0;
}

static int cpu_layernorm_forward(struct gp_backend *be, const struct gp_buf *x,
				 const struct gp_buf *gamma,
				 const struct gp_buf *beta_p, struct gp_buf *y,
				 struct gp_buf *stats, size_t rows,
				 size_t cols, float eps)
{
	const float *px = fptr(x), *pg = fptr(gamma), *pb = fptr(beta_p);
	float *py = fptr(y), *ps = fptr(stats);

	(void)be;
	for (size_t r = 0; r < rows; r++) {
		const float *row = px + r * cols;
		float *out = py + r * cols;
		double mean = 0.0, var = 0.0;
		float m, rstd;

		for (size_t c = 0; c < cols; c++)
			mean += row[c];
		mean /= (double)cols;
		for (size_t c = 0; c < cols; c++)
			var += ((double)row[c] - mean) * ((double)row[c] - mean);
		var /= (double)cols;
		m = (float)mean;
		rstd = (float)(1.0 / sqrt(var + (double)eps));
		ps[2 * r] = m;
		ps[2 * r + 1] = rstd;
		for (size_t c = 0; c < cols; c++)
			out[c] = (row[c] - m) * rstd * pg[c] + pb[c];
	}
	return 0;
}

/* With xhat = (x - mean) rstd and g = dy gamma:
 * dx = rstd (g - mean(g) - xhat mean(g xhat)). */
static int cpu_layernorm_backward(struct gp_backend *be,
				  const struct gp_buf *x,
				  const struct gp_buf *gamma,
				  const struct gp_buf *stats,
				  const struct gp_buf *dy, struct gp_buf *dx,
				  struct gp_buf *dgamma, struct gp_buf *dbeta_p,
				  float beta, size_t rows, size_t cols)
{
	const float *px = fptr(x), *pg = fptr(gamma), *ps = fptr(stats);
	const float *pdy = fptr(dy);
	float *pdx = dx ? fptr(dx) : NULL;
	float *pdg = fptr(dgamma), *pdb = fptr(dbeta_p);

	(void)be;
	for (size_t c = 0; c < cols; c++) {
		pdg[c] = beta == 0.0f ? 0.0f : beta * pdg[c];
		pdb[c] = beta == 0.0f ? 0.0f : beta * pdb[c];
	}
	for (size_t r = 0; r < rows; r++) {
		const float *row = px + r * cols, *g = pdy + r * cols;
		float m = ps[2 * r], rstd = ps[2 * r + 1];
		double sum_g = 0.0, sum_gx = 0.0;

		for (size_t c = 0; c < cols; c++) {
			float xhat = (row[c] - m) * rstd;

			pdg[c] += g[c] * xhat;
			pdb[c] += g[c];
			sum_g += (double)(g[c] * pg[c]);
			sum_gx += (double)(g[c] * pg[c] * xhat);
		}
		if (!pdx)
			continue;
		{
			float mg = (float)(sum_g / (double)cols);
			float mgx = (float)(sum_gx / (double)cols);
			float *out = pdx + r * cols;

			for (size_t c = 0; c < cols; c++) {
				float xhat = (row[c] - m) * rstd;

				out[c] = rstd * (g[c] * pg[c] - mg - xhat * mgx);
			}
		}
	}
	return 0;
}

/* Each sample's group is a row of cpg * hw consecutive values (cpg
 * channels of the group); the statistics in double as layer norm's. */
static int cpu_groupnorm_forward(struct gp_backend *be,
				 const struct gp_buf *x,
				 const struct gp_buf *gamma,
				 const struct gp_buf *beta_p, struct gp_buf *y,
				 struct gp_buf *stats,
				 const struct gp_groupnorm_shape *s, float eps)
{
	const float *px = fptr(x), *pg = fptr(gamma), *pb = fptr(beta_p);
	float *py = fptr(y), *ps = fptr(stats);
	size_t cpg = s->c / s->groups, len = cpg * s->hw;

	(void)be;
	for (size_t r = 0; r < s->n * s->groups; r++) {
		const float *row = px + r * len;
		float *out = py + r * len;
		size_t ch0 = (r % s->groups) * cpg;
		double mean = 0.0, var = 0.0;
		float m, rstd;

		for (size_t i = 0; i < len; i++)
			mean += row[i];
		mean /= (double)len;
		for (size_t i = 0; i < len; i++)
			var += ((double)row[i] - mean) * ((double)row[i] - mean);
		var /= (double)len;
		m = (float)mean;
		rstd = (float)(1.0 / sqrt(var + (double)eps));
		ps[2 * r] = m;
		ps[2 * r + 1] = rstd;
		for (size_t k = 0; k < cpg; k++) {
			float gk = pg[ch0 + k], bk = pb[ch0 + k];

			for (size_t i = k * s->hw; i < (k + 1) * s->hw; i++)
				out[i] = (row[i] - m) * rstd * gk + bk;
		}
	}
	return 0;
}

/* As layer norm's, over each group's row, with g = dy gamma[channel]:
 * dx = rstd (g - mean(g) - xhat mean(g xhat)); dgamma[k] sums dy xhat and
 * dbeta_p[k] sums dy over channel k's values of every sample. */
static int cpu_groupnorm_backward(struct gp_backend *be,
				  const struct gp_buf *x,
				  const struct gp_buf *gamma,
				  const struct gp_buf *stats,
				  const struct gp_buf *dy, struct gp_buf *dx,
				  struct gp_buf *dgamma, struct gp_buf *dbeta_p,
				  float beta,
				  const struct gp_groupnorm_shape *s)
{
	const float *px = fptr(x), *pg = fptr(gamma), *ps = fptr(stats);
	const float *pdy = fptr(dy);
	float *pdx = dx ? fptr(dx) : NULL;
	float *pdg = fptr(dgamma), *pdb = fptr(dbeta_p);
	size_t cpg = s->c / s->groups, len = cpg * s->hw;

	(void)be;
	for (size_t k = 0; k < s->c; k++) {
		pdg[k] = beta == 0.0f ? 0.0f : beta * pdg[k];
		pdb[k] = beta == 0.0f ? 0.0f : beta * pdb[k];
	}
	for (size_t r = 0; r < s->n * s->groups; r++) {
		const float *row = px + r * len, *g = pdy + r * len;
		size_t ch0 = (r % s->groups) * cpg;
		float m = ps[2 * r], rstd = ps[2 * r + 1];
		double sum_g = 0.0, sum_gx = 0.0;

		for (size_t k = 0; k < cpg; k++) {
			float gk = pg[ch0 + k];
			double dgk = 0.0, dbk = 0.0;

			for (size_t i = k * s->hw; i < (k + 1) * s->hw; i++) {
				float xhat = (row[i] - m) * rstd;

				dgk += (double)(g[i] * xhat);
				dbk += (double)g[i];
				sum_g += (double)(g[i] * gk);
				sum_gx += (double)(g[i] * gk * xhat);
			}
			pdg[ch0 + k] += (float)dgk;
			pdb[ch0 + k] += (float)dbk;
		}
		if (!pdx)
			continue;
		{
			float mg = (float)(sum_g / (double)len);
			float mgx = (float)(sum_gx / (double)len);
			float *out = pdx + r * len;

			for (size_t k = 0; k < cpg; k++) {
				float gk = pg[ch0 + k];

				for (size_t i = k * s->hw; i < (k + 1) * s->hw;
				     i++) {
					float xhat = (row[i] - m) * rstd;

					out[i] = rstd *
						 (g[i] * gk - mg - xhat * mgx);
				}
			}
		}
	}
	return 0;
}

static int cpu_mse(struct gp_backend *be, const struct gp_buf *pred,
		   const struct gp_buf *target, size_t rows, size_t cols,
		   struct gp_buf *dpred, double *ret_loss)
{
	const float *pp = fptr(pred), *pt = fptr(target);
	float *pd = dpred ? fptr(dpred) : NULL;
	size_t n = rows * cols;
	float scale = 2.0f / (float)n;
	double loss = 0.0;

	(void)be;
	for (size_t i = 0; i < n; i++) {
		float d = pp[i] - pt[i];

		loss += (double)d * (double)d;
		if (pd)
			pd[i] = scale * d;
	}
	*ret_loss = loss / (double)n;
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
	.conv2d_forward = cpu_conv2d_forward,
	.conv2d_backward = cpu_conv2d_backward,
	.pool2d_forward = cpu_pool2d_forward,
	.pool2d_backward = cpu_pool2d_backward,
	.gelu_forward = cpu_gelu_forward,
	.gelu_backward = cpu_gelu_backward,
	.mul = cpu_mul,
	.groupnorm_forward = cpu_groupnorm_forward,
	.groupnorm_backward = cpu_groupnorm_backward,
	.layernorm_forward = cpu_layernorm_forward,
	.layernorm_backward = cpu_layernorm_backward,
	.mse = cpu_mse,
	.embedding_forward = gp_cpu_embedding_forward,
	.embedding_backward = gp_cpu_embedding_backward,
	.attention_forward = gp_cpu_attention_forward,
	.attention_backward = gp_cpu_attention_backward,
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
