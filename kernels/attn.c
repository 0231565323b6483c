/* The CPU backend's transformer ops: token embedding and causal
 * multi-head self-attention. The attention runs head by head and sample
 * by sample through cblas with leading dimensions that pick a head's
 * columns out of the packed q|k|v rows, so no head is ever copied:
 *   forward   S = q k^T / sqrt(dh)        (t x t, upper triangle masked)
 *             P = softmax(S) row by row    (kept for the backward pass)
 *             o = P v                      (into the head's columns of y)
 *   backward  dv = P^T do
 *             dP = do v^T
 *             dS = P * (dP - rowsum(P * dP))
 *             dq = dS k / sqrt(dh),  dk = dS^T q / sqrt(dh)
 * backend.c has checked every argument. */
#include "backend-impl.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <string.h>

static float *fptr(const struct gp_buf *b)
{
	return (float *)b->impl;
}

int gp_cpu_embedding_forward(struct gp_backend *be,
			     const struct gp_buf *tokens,
			     const struct gp_buf *weight, struct gp_buf *y,
			     size_t rows, size_t vocab, size_t dim)
{
	const float *pt = fptr(tokens), *pw = fptr(weight);
	float *py = fptr(y);

	for (size_t r = 0; r < rows; r++) {
		float v = pt[r];

		/* Written so that NaN fails too. */
		if (!(v >= 0.0f && v < (float)vocab) || v != floorf(v)) {
			gp_backend_set_error(be,
					     "gp_embedding_forward: token %g of "
					     "row %zu is not an id in [0, %zu)",
					     (double)v, r, vocab);
			return -EINVAL;
		}
		memcpy(py + r * dim, pw + (size_t)v * dim, dim * sizeof(float));
	}
	return 0;
}

int gp_cpu_embedding_backward(struct gp_backend *be,
			      const struct gp_buf *tokens,
			      const struct gp_buf *dy, struct gp_buf *dweight,
			      float beta, size_t rows, size_t vocab,
			      size_t dim)
{
	const float *pt = fptr(tokens), *pdy = fptr(dy);
	float *pdw = fptr(dweight);

	(void)be;
	if (beta == 0.0f)
		memset(pdw, 0, vocab * dim * sizeof(float));
	else if (beta != 1.0f)
		cblas_sscal((int)(vocab * dim), beta, pdw, 1);
	for (size_t r = 0; r < rows; r++) {
		float *dst = pdw + (size_t)pt[r] * dim;
		const float *src = pdy + r * dim;

		for (size_t c = 0; c < dim; c++)
			dst[c] += src[c];
	}
	return 0;
}

/* Softmax of the first len elements of a row of s, in place; the rest of
 * the row (the future positions) becomes 0. */
static void causal_softmax(float *s, size_t len, size_t t)
{
	float max = s[0], sum = 0.0f, inv;

	for (size_t j = 1; j < len; j++)
		if (s[j] > max)
			max = s[j];
	for (size_t j = 0; j < len; j++) {
		s[j] = expf(s[j] - max);
		sum += s[j];
	}
	inv = 1.0f / sum;
	for (size_t j = 0; j < len; j++)
		s[j] *= inv;
	for (size_t j = len; j < t; j++)
		s[j] = 0.0f;
}

int gp_cpu_attention_forward(struct gp_backend *be, const struct gp_buf *x,
			     struct gp_buf *y, struct gp_buf *probs,
			     const struct gp_attention_shape *s)
{
	size_t t = s->t, d = s->dim, dh = d / s->heads, ld = 3 * d;
	float scale = 1.0f / sqrtf((float)dh);
	const float *px = fptr(x);
	float *py = fptr(y), *pp = fptr(probs);

	(void)be;
	for (size_t i = 0; i < s->n; i++) {
		for (size_t h = 0; h < s->heads; h++) {
			const float *q = px + i * t * ld + h * dh;
			const float *k = q + d, *v = q + 2 * d;
			float *p = pp + (i * s->heads + h) * t * t;
			float *o = py + i * t * d + h * dh;

			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans,
				    (int)t, (int)t, (int)dh, scale, q, (int)ld,
				    k, (int)ld, 0.0f, p, (int)t);
			for (size_t r = 0; r < t; r++)
				causal_softmax(p + r * t, r + 1, t);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
				    (int)t, (int)dh, (int)t, 1.0f, p, (int)t, v,
				    (int)ld, 0.0f, o, (int)d);
		}
	}
	return 0;
}

int gp_cpu_attention_backward(struct gp_backend *be, const struct gp_buf *x,
			      const struct gp_buf *probs,
			      const struct gp_buf *dy, struct gp_buf *dx,
			      struct gp_buf *scratch,
			      const struct gp_attention_shape *s)
{
	size_t t = s->t, d = s->dim, dh = d / s->heads, ld = 3 * d;
	float scale = 1.0f / sqrtf((float)dh);
	const float *px = fptr(x), *pp = fptr(probs), *pdy = fptr(dy);
	float *pdx = fptr(dx), *ds = fptr(scratch);

	(void)be;
	for (size_t i = 0; i < s->n; i++) {
		for (size_t h = 0; h < s->heads; h++) {
			const float *q = px + i * t * ld + h * dh;
			const float *k = q + d, *v = q + 2 * d;
			const float *p = pp + (i * s->heads + h) * t * t;
			const float *dout = pdy + i * t * d + h * dh;
			float *dq = pdx + i * t * ld + h * dh;
			float *dk = dq + d, *dv = dq + 2 * d;

			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans,
				    (int)t, (int)dh, (int)t, 1.0f, p, (int)t,
				    dout, (int)d, 0.0f, dv, (int)ld);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans,
				    (int)t, (int)t, (int)dh, 1.0f, dout,
				    (int)d, v, (int)ld, 0.0f, ds, (int)t);
			for (size_t r = 0; r < t; r++) {
				const float *prow = p + r * t;
				float *row = ds + r * t, dot = 0.0f;

				for (size_t j = 0; j <= r; j++)
					dot += prow[j] * row[j];
				for (size_t j = 0; j <= r; j++)
					row[j] = prow[j] * (row[j] - dot);
				for (size_t j = r + 1; j < t; j++)
					row[j] = 0.0f;
			}
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans,
				    (int)t, (int)dh, (int)t, scale, ds, (int)t,
				    k, (int)ld, 0.0f, dq, (int)ld);
			cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans,
				    (int)t, (int)dh, (int)t, scale, ds, (int)t,
				    q, (int)ld, 0.0f, dk, (int)ld);
		}
	}
	return 0;
}
