/* The OpenCL backend's transformer ops: token embedding, and causal
 * multi-head self-attention as CLBlast strided-batched GEMMs with the
 * softmax step in kernels/layers.cl. The same lowering as the CPU's
 * (kernels/attn.c), with one GEMM call per head batched over the samples:
 * within a head, sample b's q, k and v lie t * 3 dim floats after sample
 * b - 1's, its attention weights heads * t * t floats after, so each
 * matrix of a batch is an offset, a leading dimension and a stride into
 * the packed buffers, and no head is ever copied:
 *   forward   S = q k^T / sqrt(dh)        (t x t, into probs)
 *             P = causal softmax(S)        (kept for the backward pass)
 *             o = P v                      (into the head's columns of y)
 *   backward  dv = P^T do
 *             dP = do v^T                  (into the backend's scratch)
 *             dS = P * (dP - rowsum(P * dP))
 *             dq = dS k / sqrt(dh),  dk = dS^T q / sqrt(dh) */
#include "opencl-impl.h"

#include <clblast_c.h>
#include <math.h>

int gp_cl_embedding_forward(struct gp_backend *be,
			    const struct gp_buf *tokens,
			    const struct gp_buf *weight, struct gp_buf *y,
			    size_t rows, size_t vocab, size_t dim)
{
	struct cl_backend *cb = to_cl(be);
	cl_kernel kern = cb->kernels[K_EMBEDDING_FORWARD];
	cl_mem tm = mem_of(tokens), wm = mem_of(weight), ym = mem_of(y);
	cl_uint r32 = (cl_uint)rows, v32 = (cl_uint)vocab, d32 = (cl_uint)dim;
	cl_int st = CL_SUCCESS;
	int r;

	if ((r = check_u32(be, "gp_embedding_forward", rows * dim)) < 0 ||
	    (r = check_u32(be, "gp_embedding_forward", vocab * dim)) < 0 ||
	    (r = gp_cl_ensure_rows(cb, rows)) < 0)
		return r;
	set_arg(kern, 0, sizeof(tm), &tm, &st);
	set_arg(kern, 1, sizeof(wm), &wm, &st);
	set_arg(kern, 2, sizeof(ym), &ym, &st);
	set_arg(kern, 3, sizeof(cb->row_status), &cb->row_status, &st);
	set_arg(kern, 4, sizeof(r32), &r32, &st);
	set_arg(kern, 5, sizeof(v32), &v32, &st);
	set_arg(kern, 6, sizeof(d32), &d32, &st);
	if ((r = gp_cl_launch(be, K_EMBEDDING_FORWARD, rows * dim, 0, st)) < 0 ||
	    (r = gp_cl_read_rows(cb, rows, false, true)) < 0)
		return r;
	for (size_t i = 0; i < rows; i++) {
		float v = NAN;

		if (cb->host_status[i] == 0)
			continue;
		/* The id itself, for the message; the read may fail and
		 * leave NaN. */
		clEnqueueReadBuffer(cb->queue, tm, CL_TRUE, i * sizeof(v),
				    sizeof(v), &v, 0, NULL, NULL);
		gp_backend_set_error(be,
				     "gp_embedding_forward: token %g of row "
				     "%zu is not an id in [0, %zu)",
				     (double)v, i, vocab);
		return -EINVAL;
	}
	return 0;
}

int gp_cl_embedding_backward(struct gp_backend *be,
			     const struct gp_buf *tokens,
			     const struct gp_buf *dy, struct gp_buf *dweight,
			     float beta, size_t rows, size_t vocab,
			     size_t dim)
{
	cl_kernel kern = to_cl(be)->kernels[K_EMBEDDING_BACKWARD];
	cl_mem tm = mem_of(tokens), dym = mem_of(dy), dwm = mem_of(dweight);
	cl_uint r32 = (cl_uint)rows, v32 = (cl_uint)vocab, d32 = (cl_uint)dim;
	cl_int st = CL_SUCCESS;
	int r;

	if ((r = check_u32(be, "gp_embedding_backward", rows * dim)) < 0 ||
	    (r = check_u32(be, "gp_embedding_backward", vocab * dim)) < 0)
		return r;
	set_arg(kern, 0, sizeof(tm), &tm, &st);
	set_arg(kern, 1, sizeof(dym), &dym, &st);
	set_arg(kern, 2, sizeof(dwm), &dwm, &st);
	set_arg(kern, 3, sizeof(beta), &beta, &st);
	set_arg(kern, 4, sizeof(r32), &r32, &st);
	set_arg(kern, 5, sizeof(v32), &v32, &st);
	set_arg(kern, 6, sizeof(d32), &d32, &st);
	return gp_cl_launch(be, K_EMBEDDING_BACKWARD, dim, 0, st);
}

/* One operand of a strided-batched GEMM: buffer, offset of sample 0, leading
 * dimension, stride from sample to sample (all in floats). */
struct operand {
	cl_mem mem;
	size_t off, ld, stride;
};

/* C = alpha op(A) op(B) for every sample of the batch (beta 0). */
static int batched_gemm(struct gp_backend *be, bool ta, bool tb, size_t m,
			size_t n, size_t k, float alpha, struct operand a,
			struct operand b, struct operand c, size_t batch)
{
	CLBlastStatusCode st;

	st = CLBlastSgemmStridedBatched(
		CLBlastLayoutRowMajor,
		ta ? CLBlastTransposeYes : CLBlastTransposeNo,
		tb ? CLBlastTransposeYes : CLBlastTransposeNo, m, n, k, alpha,
		a.mem, a.off, a.ld, a.stride, b.mem, b.off, b.ld, b.stride,
		0.0f, c.mem, c.off, c.ld, c.stride, batch,
		&to_cl(be)->queue, NULL);
	return st == CLBlastSuccess
		       ? 0
		       : gp_cl_blast_fail(be, "CLBlastSgemmStridedBatched",
					  st);
}

/* The causal softmax (forward) or its backward step over every row of the
 * n x heads t x t matrices. */
static int softmax_rows(struct gp_backend *be, bool backward, cl_mem p,
			cl_mem ds, const struct gp_attention_shape *s)
{
	int id = backward ? K_CAUSAL_SOFTMAX_BACKWARD : K_CAUSAL_SOFTMAX;
	cl_kernel kern = to_cl(be)->kernels[id];
	size_t rows = s->n * s->heads * s->t;
	cl_uint r32 = (cl_uint)rows, t32 = (cl_uint)s->t;
	cl_int st = CL_SUCCESS;
	cl_uint i = 0;

	set_arg(kern, i++, sizeof(p), &p, &st);
	if (backward)
		set_arg(kern, i++, sizeof(ds), &ds, &st);
	set_arg(kern, i++, sizeof(r32), &r32, &st);
	set_arg(kern, i, sizeof(t32), &t32, &st);
	return gp_cl_launch(be, id, rows, 0, st);
}

static int check_attention(struct gp_backend *be, const char *what,
			   const struct gp_attention_shape *s)
{
	int r;

	if ((r = check_u32(be, what, s->n * s->heads * s->t * s->t)) < 0)
		return r;
	return check_u32(be, what, s->n * s->t * 3 * s->dim);
}

int gp_cl_attention_forward(struct gp_backend *be, const struct gp_buf *x,
			    struct gp_buf *y, struct gp_buf *probs,
			    const struct gp_attention_shape *s)
{
	size_t t = s->t, d = s->dim, dh = d / s->heads, tt = t * t;
	size_t xs = t * 3 * d, ps = s->heads * tt;
	float scale = 1.0f / sqrtf((float)dh);
	cl_mem xm = mem_of(x), ym = mem_of(y), pm = mem_of(probs);
	int r;

	if ((r = check_attention(be, "gp_attention_forward", s)) < 0)
		return r;
	for (size_t h = 0; h < s->heads; h++) {
		struct operand q = { xm, h * dh, 3 * d, xs };
		struct operand k = { xm, d + h * dh, 3 * d, xs };
		struct operand p = { pm, h * tt, t, ps };

		if ((r = batched_gemm(be, false, true, t, t, dh, scale, q, k, p,
				      s->n)) < 0)
			return r;
	}
	if ((r = softmax_rows(be, false, pm, NULL, s)) < 0)
		return r;
	for (size_t h = 0; h < s->heads; h++) {
		struct operand p = { pm, h * tt, t, ps };
		struct operand v = { xm, 2 * d + h * dh, 3 * d, xs };
		struct operand o = { ym, h * dh, d, t * d };

		if ((r = batched_gemm(be, false, false, t, dh, t, 1.0f, p, v, o,
				      s->n)) < 0)
			return r;
	}
	return 0;
}

int gp_cl_attention_backward(struct gp_backend *be, const struct gp_buf *x,
			     const struct gp_buf *probs,
			     const struct gp_buf *dy, struct gp_buf *dx,
			     struct gp_buf *scratch,
			     const struct gp_attention_shape *s)
{
	size_t t = s->t, d = s->dim, dh = d / s->heads, tt = t * t;
	size_t xs = t * 3 * d, ps = s->heads * tt;
	float scale = 1.0f / sqrtf((float)dh);
	cl_mem xm = mem_of(x), pm = mem_of(probs), dym = mem_of(dy);
	cl_mem dxm = mem_of(dx), dsm;
	int r;

	/* The caller's scratch holds one t x t matrix, enough for the CPU's
	 * head-by-head loop; the batched GEMMs need every head's. */
	(void)scratch;
	if ((r = check_attention(be, "gp_attention_backward", s)) < 0 ||
	    (r = gp_cl_scratch(to_cl(be), SCRATCH_ATTN,
			       s->n * ps * sizeof(cl_float), &dsm)) < 0)
		return r;
	for (size_t h = 0; h < s->heads; h++) {
		struct operand p = { pm, h * tt, t, ps };
		struct operand dout = { dym, h * dh, d, t * d };
		struct operand v = { xm, 2 * d + h * dh, 3 * d, xs };
		struct operand dv = { dxm, 2 * d + h * dh, 3 * d, xs };
		struct operand ds = { dsm, h * tt, t, ps };

		if ((r = batched_gemm(be, true, false, t, dh, t, 1.0f, p, dout,
				      dv, s->n)) < 0 ||
		    (r = batched_gemm(be, false, true, t, t, dh, 1.0f, dout, v,
				      ds, s->n)) < 0)
			return r;
	}
	if ((r = softmax_rows(be, true, pm, dsm, s)) < 0)
		return r;
	for (size_t h = 0; h < s->heads; h++) {
		struct operand ds = { dsm, h * tt, t, ps };
		struct operand q = { xm, h * dh, 3 * d, xs };
		struct operand k = { xm, d + h * dh, 3 * d, xs };
		struct operand dq = { dxm, h * dh, 3 * d, xs };
		struct operand dk = { dxm, d + h * dh, 3 * d, xs };

		if ((r = batched_gemm(be, false, false, t, dh, t, scale, ds, k,
				      dq, s->n)) < 0 ||
		    (r = batched_gemm(be, true, false, t, dh, t, scale, ds, q,
				      dk, s->n)) < 0)
			return r;
	}
	return 0;
}
