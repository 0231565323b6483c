/* The OpenCL backend's convolutions and pooling. A convolution has two
 * paths:
 * - gemm, the default: the forward pass is CLBlast's convgemm (im2col
 *   fused into a batched GEMM, CLBlastSconvgemm) plus a per-channel bias;
 *   the backward pass lowers as the CPU backend's does: CLBlast's im2col
 *   of each sample into a scratch buffer, the weight gradient as one GEMM
 *   a sample (dW += dY_n cols_n^T), then the column gradients of a chunk
 *   of samples as one strided-batched GEMM (cols_n = W^T dY_n, W shared
 *   with stride 0) into the same scratch, scattered back by CLBlast's
 *   col2im.
 * - direct: the kernels of ops.cl, one work-item per element written (an
 *   output, an input gradient, a weight gradient, a bias gradient), each
 *   sum one work-item's in a fixed order, no scratch memory. Slower even
 *   on PoCL; kept for devices whose CLBlast cannot run convgemm (the
 *   forward pass falls back to it for good when convgemm reports it is
 *   not implemented or lacks local memory) and picked by
 *   GP_OPENCL_CONV=direct.
 * Pooling is direct kernels only. */
#include "opencl-impl.h"

#include <clblast_c.h>
#include <string.h>

/* The most im2col values the gemm path's backward pass holds at once. */
#define CONV_SCRATCH_BYTES ((size_t)64 << 20)

/* The shape of a convolution as the kernels take it: the eleven sizes
 * after the buffers, in struct gp_conv2d_shape's order. Fails when a count
 * the kernels index with does not fit in uint. */
static int conv_args(struct gp_backend *be, const char *what,
		     const struct gp_conv2d_shape *s, cl_uint out[11])
{
	const size_t v[11] = { s->n, s->c, s->h, s->w, s->oc, s->kh, s->kw,
			       s->stride, s->pad, s->oh, s->ow };
	int r;

	if ((r = check_u32(be, what, s->n * s->c * s->h * s->w)) < 0 ||
	    (r = check_u32(be, what, s->n * s->oc * s->oh * s->ow)) < 0 ||
	    (r = check_u32(be, what, s->oc * s->c * s->kh * s->kw)) < 0)
		return r;
	for (int i = 0; i < 11 && out; i++)
		out[i] = (cl_uint)v[i];
	return 0;
}

/* dbias = beta * dbias + the sum of dy over the batch and each channel's
 * plane, one work-item per channel. */
static int conv_bias_grad(struct gp_backend *be, const struct gp_buf *dy,
			  struct gp_buf *db, float beta,
			  const struct gp_conv2d_shape *s)
{
	cl_kernel kern = to_cl(be)->kernels[K_CONV2D_BACKWARD_B];
	cl_mem dym = mem_of(dy), dbm = mem_of(db);
	cl_uint n32 = (cl_uint)s->n, oc32 = (cl_uint)s->oc;
	cl_uint plane = (cl_uint)(s->oh * s->ow);
	cl_int st = CL_SUCCESS;

	set_arg(kern, 0, sizeof(dym), &dym, &st);
	set_arg(kern, 1, sizeof(dbm), &dbm, &st);
	set_arg(kern, 2, sizeof(beta), &beta, &st);
	set_arg(kern, 3, sizeof(n32), &n32, &st);
	set_arg(kern, 4, sizeof(oc32), &oc32, &st);
	set_arg(kern, 5, sizeof(plane), &plane, &st);
	return gp_cl_launch(be, K_CONV2D_BACKWARD_B, s->oc, 0, st);
}

/* The direct path: one work-item per element written. */
static int conv_direct_forward(struct gp_backend *be, const struct gp_buf *x,
			       const struct gp_buf *w, const struct gp_buf *b,
			       struct gp_buf *y, const struct gp_conv2d_shape *s)
{
	cl_kernel kern = to_cl(be)->kernels[K_CONV2D_FORWARD];
	cl_mem xm = mem_of(x), wm = mem_of(w), bm = mem_of(b), ym = mem_of(y);
	cl_int st = CL_SUCCESS;
	cl_uint a[11];
	int r;

	if ((r = conv_args(be, "gp_conv2d_forward", s, a)) < 0)
		return r;
	set_arg(kern, 0, sizeof(xm), &xm, &st);
	set_arg(kern, 1, sizeof(wm), &wm, &st);
	set_arg(kern, 2, sizeof(bm), &bm, &st);
	set_arg(kern, 3, sizeof(ym), &ym, &st);
	for (cl_uint i = 0; i < 11; i++)
		set_arg(kern, 4 + i, sizeof(a[i]), &a[i], &st);
	return gp_cl_launch(be, K_CONV2D_FORWARD,
			    s->n * s->oc * s->oh * s->ow, 0, st);
}

static int conv_direct_backward(struct gp_backend *be, const struct gp_buf *x,
				const struct gp_buf *w, const struct gp_buf *dy,
				struct gp_buf *dx, struct gp_buf *dw,
				struct gp_buf *db, float beta,
				const struct gp_conv2d_shape *s)
{
	struct cl_backend *cb = to_cl(be);
	cl_mem xm = mem_of(x), wm = mem_of(w), dym = mem_of(dy);
	cl_mem dwm = mem_of(dw);
	cl_uint a[11];
	cl_kernel kern;
	cl_int st = CL_SUCCESS;
	int r;

	if ((r = conv_args(be, "gp_conv2d_backward", s, a)) < 0)
		return r;
	if (dx) {
		cl_mem dxm = mem_of(dx);

		kern = cb->kernels[K_CONV2D_BACKWARD_X];
		set_arg(kern, 0, sizeof(wm), &wm, &st);
		set_arg(kern, 1, sizeof(dym), &dym, &st);
		set_arg(kern, 2, sizeof(dxm), &dxm, &st);
		for (cl_uint i = 0; i < 11; i++)
			set_arg(kern, 3 + i, sizeof(a[i]), &a[i], &st);
		r = gp_cl_launch(be, K_CONV2D_BACKWARD_X,
				 s->n * s->c * s->h * s->w, 0, st);
		if (r < 0)
			return r;
	}
	kern = cb->kernels[K_CONV2D_BACKWARD_W];
	set_arg(kern, 0, sizeof(xm), &xm, &st);
	set_arg(kern, 1, sizeof(dym), &dym, &st);
	set_arg(kern, 2, sizeof(dwm), &dwm, &st);
	set_arg(kern, 3, sizeof(beta), &beta, &st);
	for (cl_uint i = 0; i < 11; i++)
		set_arg(kern, 4 + i, sizeof(a[i]), &a[i], &st);
	r = gp_cl_launch(be, K_CONV2D_BACKWARD_W,
			 s->oc * s->c * s->kh * s->kw, 0, st);
	if (r < 0)
		return r;
	return conv_bias_grad(be, dy, db, beta, s);
}

/* The gemm path. */

static int blast(struct gp_backend *be, const char *call,
		 CLBlastStatusCode st)
{
	return st == CLBlastSuccess ? 0 : gp_cl_blast_fail(be, call, st);
}

/* y[n][k][p] += bias[k]: the bias of each output channel over its plane. */
static int channel_bias(struct gp_backend *be, const struct gp_buf *b,
			struct gp_buf *y, const struct gp_conv2d_shape *s)
{
	cl_kernel kern = to_cl(be)->kernels[K_CHANNEL_BIAS_ADD];
	cl_mem ym = mem_of(y), bm = mem_of(b);
	size_t total = s->n * s->oc * s->oh * s->ow;
	cl_uint n32 = (cl_uint)total, plane = (cl_uint)(s->oh * s->ow);
	cl_uint oc32 = (cl_uint)s->oc;
	cl_int st = CL_SUCCESS;

	set_arg(kern, 0, sizeof(ym), &ym, &st);
	set_arg(kern, 1, sizeof(bm), &bm, &st);
	set_arg(kern, 2, sizeof(n32), &n32, &st);
	set_arg(kern, 3, sizeof(plane), &plane, &st);
	set_arg(kern, 4, sizeof(oc32), &oc32, &st);
	return gp_cl_launch(be, K_CHANNEL_BIAS_ADD, total, 0, st);
}

static int conv_gemm_forward(struct gp_backend *be, const struct gp_buf *x,
			     const struct gp_buf *w, const struct gp_buf *b,
			     struct gp_buf *y, const struct gp_conv2d_shape *s)
{
	int r;

	r = blast(be, "CLBlastSconvgemm",
		  CLBlastSconvgemm(CLBlastKernelModeCrossCorrelation, s->c,
				   s->h, s->w, s->kh, s->kw, s->pad, s->pad,
				   s->stride, s->stride, 1, 1, s->oc, s->n,
				   mem_of(x), 0, mem_of(w), 0, mem_of(y), 0,
				   &to_cl(be)->queue, NULL));
	return r < 0 ? r : channel_bias(be, b, y, s);
}

/* Fills n floats of mem with zeros. */
static int zero(struct gp_backend *be, cl_mem mem, size_t n)
{
	const cl_float z = 0.0f;
	cl_int st;

	st = clEnqueueFillBuffer(to_cl(be)->queue, mem, &z, sizeof(z), 0,
				 n * sizeof(z), 0, NULL, NULL);
	return st == CL_SUCCESS ? 0 : gp_cl_fail(be, "clEnqueueFillBuffer", st);
}

/* The dx pass of one chunk of samples [i0, i1) whose im2col values are in
 * cols: cols_i = W^T dY_i for all of them at once (W shared: stride 0),
 * over the im2col values the weight gradient no longer needs, then
 * col2im of each into dx. */
static int conv_gemm_dx(struct gp_backend *be, const struct gp_buf *w,
			const struct gp_buf *dy, struct gp_buf *dx, cl_mem cols,
			size_t i0, size_t i1, const struct gp_conv2d_shape *s)
{
	struct cl_backend *cb = to_cl(be);
	size_t ckk = s->c * s->kh * s->kw, p = s->oh * s->ow;
	size_t xs = s->c * s->h * s->w, ys = s->oc * p, cs = ckk * p;
	int r;

	r = blast(be, "CLBlastSgemmStridedBatched",
		  CLBlastSgemmStridedBatched(
			  CLBlastLayoutRowMajor, CLBlastTransposeYes,
			  CLBlastTransposeNo, ckk, p, s->oc, 1.0f, mem_of(w), 0,
			  ckk, 0, mem_of(dy), i0 * ys, p, ys, 0.0f, cols, 0, p,
			  cs, i1 - i0, &cb->queue, NULL));
	for (size_t i = i0; i < i1 && r >= 0; i++)
		r = blast(be, "CLBlastScol2im",
			  CLBlastScol2im(CLBlastKernelModeCrossCorrelation,
					 s->c, s->h, s->w, s->kh, s->kw, s->pad,
					 s->pad, s->stride, s->stride, 1, 1,
					 cols, (i - i0) * cs, mem_of(dx), i * xs,
					 &cb->queue, NULL));
	return r;
}

/* The samples go through in chunks whose im2col values fit in
 * CONV_SCRATCH_BYTES (one sample at least), so a large batch of large
 * images does not need its whole im2col matrix at once. */
static int conv_gemm_backward(struct gp_backend *be, const struct gp_buf *x,
			      const struct gp_buf *w, const struct gp_buf *dy,
			      struct gp_buf *dx, struct gp_buf *dw,
			      struct gp_buf *db, float beta,
			      const struct gp_conv2d_shape *s)
{
	struct cl_backend *cb = to_cl(be);
	size_t ckk = s->c * s->kh * s->kw, p = s->oh * s->ow;
	size_t xs = s->c * s->h * s->w, ys = s->oc * p, cs = ckk * p;
	size_t chunk = CONV_SCRATCH_BYTES / (cs * sizeof(cl_float));
	cl_mem cols;
	int r;

	if (chunk == 0)
		chunk = 1;
	if (chunk > s->n)
		chunk = s->n;
	if ((r = gp_cl_scratch(cb, SCRATCH_COLS, chunk * cs * sizeof(cl_float),
			       &cols)) < 0 ||
	    (r = conv_bias_grad(be, dy, db, beta, s)) < 0)
		return r;
	/* beta == 0 must not read what dw held (it may be NaN); col2im
	 * may add into dx. */
	if (beta == 0.0f && (r = zero(be, mem_of(dw), s->oc * ckk)) < 0)
		return r;
	if (dx && (r = zero(be, mem_of(dx), s->n * xs)) < 0)
		return r;
	for (size_t i0 = 0; i0 < s->n; i0 += chunk) {
		size_t i1 = i0 + chunk < s->n ? i0 + chunk : s->n;

		for (size_t i = i0; i < i1; i++) {
			r = blast(be, "CLBlastSim2col",
				  CLBlastSim2col(
					  CLBlastKernelModeCrossCorrelation,
					  s->c, s->h, s->w, s->kh, s->kw,
					  s->pad, s->pad, s->stride, s->stride,
					  1, 1, mem_of(x), i * xs, cols,
					  (i - i0) * cs, &cb->queue, NULL));
			if (r < 0)
				return r;
			/* dW = (first ? beta : 1) dW + dY_i cols_i^T. */
			r = blast(be, "CLBlastSgemm",
				  CLBlastSgemm(CLBlastLayoutRowMajor,
					       CLBlastTransposeNo,
					       CLBlastTransposeYes, s->oc, ckk,
					       p, 1.0f, mem_of(dy), i * ys, p,
					       cols, (i - i0) * cs, p,
					       i || beta == 0.0f ? 1.0f : beta,
					       mem_of(dw), 0, ckk, &cb->queue,
					       NULL));
			if (r < 0)
				return r;
		}
		if (dx && (r = conv_gemm_dx(be, w, dy, dx, cols, i0, i1, s)) < 0)
			return r;
	}
	return 0;
}

int gp_cl_conv2d_forward(struct gp_backend *be, const struct gp_buf *x,
			 const struct gp_buf *w, const struct gp_buf *b,
			 struct gp_buf *y, const struct gp_conv2d_shape *s)
{
	struct cl_backend *cb = to_cl(be);
	int r;

	if ((r = conv_args(be, "gp_conv2d_forward", s, NULL)) < 0)
		return r;
	if (cb->conv_gemm) {
		r = conv_gemm_forward(be, x, w, b, y, s);
		/* Not implemented, or too little local memory, for this
		 * device: the direct kernels from now on (convgemm failed
		 * before writing y). */
		if (r != -ENOSYS && r != -ENOTSUP)
			return r;
		cb->conv_gemm = false;
	}
	return conv_direct_forward(be, x, w, b, y, s);
}

int gp_cl_conv2d_backward(struct gp_backend *be, const struct gp_buf *x,
			  const struct gp_buf *w, const struct gp_buf *dy,
			  struct gp_buf *dx, struct gp_buf *dw,
			  struct gp_buf *db, float beta,
			  const struct gp_conv2d_shape *s)
{
	int r;

	if ((r = conv_args(be, "gp_conv2d_backward", s, NULL)) < 0)
		return r;
	return to_cl(be)->conv_gemm
		       ? conv_gemm_backward(be, x, w, dy, dx, dw, db, beta, s)
		       : conv_direct_backward(be, x, w, dy, dx, dw, db, beta,
					      s);
}

/* The pooling kernels' size arguments after the buffers and the max flag:
 * planes, h, w, k, stride, oh, ow. */
static int pool_args(struct gp_backend *be, const char *what,
		     const struct gp_pool2d_shape *s, cl_uint out[7])
{
	const size_t v[7] = { s->n * s->c, s->h, s->w, s->k, s->stride,
			      s->oh, s->ow };
	int r;

	if ((r = check_u32(be, what, s->n * s->c * s->h * s->w)) < 0)
		return r;
	for (int i = 0; i < 7; i++)
		out[i] = (cl_uint)v[i];
	return 0;
}

static int cl_pool2d(struct gp_backend *be, int id, bool max, cl_mem in,
		     cl_mem idx, cl_mem out, size_t global,
		     const struct gp_pool2d_shape *s)
{
	cl_kernel kern = to_cl(be)->kernels[id];
	cl_int max32 = max, st = CL_SUCCESS;
	cl_uint a[7];
	int r;

	if ((r = pool_args(be, id == K_POOL2D_FORWARD ? "gp_pool2d_forward"
						      : "gp_pool2d_backward",
			   s, a)) < 0)
		return r;
	if (id == K_POOL2D_FORWARD) {
		set_arg(kern, 0, sizeof(in), &in, &st);
		set_arg(kern, 1, sizeof(out), &out, &st);
		set_arg(kern, 2, sizeof(idx), &idx, &st);
	} else {
		set_arg(kern, 0, sizeof(in), &in, &st);
		set_arg(kern, 1, sizeof(idx), &idx, &st);
		set_arg(kern, 2, sizeof(out), &out, &st);
	}
	set_arg(kern, 3, sizeof(max32), &max32, &st);
	for (cl_uint i = 0; i < 7; i++)
		set_arg(kern, 4 + i, sizeof(a[i]), &a[i], &st);
	return gp_cl_launch(be, id, global, 0, st);
}

/* Average pooling has no index buffer: the kernels then get the output
 * (forward) or input (backward) buffer in its place, never read. */
int gp_cl_pool2d_forward(struct gp_backend *be, bool max,
			 const struct gp_buf *x, struct gp_buf *y,
			 struct gp_buf *idx, const struct gp_pool2d_shape *s)
{
	return cl_pool2d(be, K_POOL2D_FORWARD, max, mem_of(x),
			 max ? mem_of(idx) : mem_of(y), mem_of(y),
			 s->n * s->c * s->oh * s->ow, s);
}

int gp_cl_pool2d_backward(struct gp_backend *be, bool max,
			  const struct gp_buf *dy, const struct gp_buf *idx,
			  struct gp_buf *dx, const struct gp_pool2d_shape *s)
{
	return cl_pool2d(be, K_POOL2D_BACKWARD, max, mem_of(dy),
			 max ? mem_of(idx) : mem_of(dy), mem_of(dx),
			 s->n * s->c * s->h * s->w, s);
}

