/* The OpenCL backend's elementwise and normalisation layers and the MSE
 * loss: GELU, the product that applies a dropout mask, layer
 * normalisation and mean squared error, each one or two kernels of
 * kernels/layers.cl. The dropout mask itself is drawn on the host by
 * kernels/model.c from the minibatch's seed, for every backend alike, so a
 * recomputation on either backend applies the same mask. */
#include "opencl-impl.h"

/* The three elementwise kernels take (in, in2, out, n) or (in, out, n). */
static int elementwise(struct gp_backend *be, int id, const char *what,
		       const struct gp_buf *a, const struct gp_buf *b,
		       struct gp_buf *y, size_t n)
{
	cl_kernel kern = to_cl(be)->kernels[id];
	cl_mem am = mem_of(a), ym = mem_of(y);
	cl_uint n32 = (cl_uint)n, i = 0;
	cl_int st = CL_SUCCESS;
	int r;

	if ((r = check_u32(be, what, n)) < 0)
		return r;
	set_arg(kern, i++, sizeof(am), &am, &st);
	if (b) {
		cl_mem bm = mem_of(b);

		set_arg(kern, i++, sizeof(bm), &bm, &st);
	}
	set_arg(kern, i++, sizeof(ym), &ym, &st);
	set_arg(kern, i, sizeof(n32), &n32, &st);
	return gp_cl_launch(be, id, n, 0, st);
}

int gp_cl_gelu_forward(struct gp_backend *be, const struct gp_buf *x,
		       struct gp_buf *y, size_t n)
{
	return elementwise(be, K_GELU_FORWARD, "gp_gelu_forward", x, NULL, y,
			   n);
}

int gp_cl_gelu_backward(struct gp_backend *be, const struct gp_buf *x,
			const struct gp_buf *dy, struct gp_buf *dx, size_t n)
{
	return elementwise(be, K_GELU_BACKWARD, "gp_gelu_backward", x, dy, dx,
			   n);
}

int gp_cl_mul(struct gp_backend *be, const struct gp_buf *a,
	      const struct gp_buf *b, struct gp_buf *y, size_t n)
{
	return elementwise(be, K_MUL, "gp_mul", a, b, y, n);
}

int gp_cl_layernorm_forward(struct gp_backend *be, const struct gp_buf *x,
			    const struct gp_buf *gamma,
			    const struct gp_buf *beta_p, struct gp_buf *y,
			    struct gp_buf *stats, size_t rows, size_t cols,
			    float eps)
{
	cl_kernel kern = to_cl(be)->kernels[K_LAYERNORM_FORWARD];
	cl_mem xm = mem_of(x), gm = mem_of(gamma), bm = mem_of(beta_p);
	cl_mem ym = mem_of(y), sm = mem_of(stats);
	cl_uint r32 = (cl_uint)rows, c32 = (cl_uint)cols;
	cl_int st = CL_SUCCESS;
	int r;

	if ((r = check_u32(be, "gp_layernorm_forward", 2 * rows)) < 0 ||
	    (r = check_u32(be, "gp_layernorm_forward", cols)) < 0)
		return r;
	set_arg(kern, 0, sizeof(xm), &xm, &st);
	set_arg(kern, 1, sizeof(gm), &gm, &st);
	set_arg(kern, 2, sizeof(bm), &bm, &st);
	set_arg(kern, 3, sizeof(ym), &ym, &st);
	set_arg(kern, 4, sizeof(sm), &sm, &st);
	set_arg(kern, 5, sizeof(r32), &r32, &st);
	set_arg(kern, 6, sizeof(c32), &c32, &st);
	set_arg(kern, 7, sizeof(eps), &eps, &st);
	return gp_cl_launch(be, K_LAYERNORM_FORWARD, rows, 0, st);
}

int gp_cl_layernorm_backward(struct gp_backend *be, const struct gp_buf *x,
			     const struct gp_buf *gamma,
			     const struct gp_buf *stats,
			     const struct gp_buf *dy, struct gp_buf *dx,
			     struct gp_buf *dgamma, struct gp_buf *dbeta_p,
			     float beta, size_t rows, size_t cols)
{
	struct cl_backend *cb = to_cl(be);
	cl_mem xm = mem_of(x), sm = mem_of(stats), dym = mem_of(dy);
	cl_mem dgm = mem_of(dgamma), dbm = mem_of(dbeta_p);
	cl_uint r32 = (cl_uint)rows, c32 = (cl_uint)cols;
	cl_int st = CL_SUCCESS;
	cl_kernel kern;
	int r;

	if ((r = check_u32(be, "gp_layernorm_backward", 2 * rows)) < 0 ||
	    (r = check_u32(be, "gp_layernorm_backward", cols)) < 0)
		return r;
	kern = cb->kernels[K_LAYERNORM_BACKWARD_P];
	set_arg(kern, 0, sizeof(xm), &xm, &st);
	set_arg(kern, 1, sizeof(sm), &sm, &st);
	set_arg(kern, 2, sizeof(dym), &dym, &st);
	set_arg(kern, 3, sizeof(dgm), &dgm, &st);
	set_arg(kern, 4, sizeof(dbm), &dbm, &st);
	set_arg(kern, 5, sizeof(beta), &beta, &st);
	set_arg(kern, 6, sizeof(r32), &r32, &st);
	set_arg(kern, 7, sizeof(c32), &c32, &st);
	if ((r = gp_cl_launch(be, K_LAYERNORM_BACKWARD_P, cols, 0, st)) < 0 ||
	    !dx)
		return r;
	{
		cl_mem gm = mem_of(gamma), dxm = mem_of(dx);

		kern = cb->kernels[K_LAYERNORM_BACKWARD_X];
		set_arg(kern, 0, sizeof(xm), &xm, &st);
		set_arg(kern, 1, sizeof(gm), &gm, &st);
		set_arg(kern, 2, sizeof(sm), &sm, &st);
		set_arg(kern, 3, sizeof(dym), &dym, &st);
		set_arg(kern, 4, sizeof(dxm), &dxm, &st);
		set_arg(kern, 5, sizeof(r32), &r32, &st);
		set_arg(kern, 6, sizeof(c32), &c32, &st);
	}
	return gp_cl_launch(be, K_LAYERNORM_BACKWARD_X, rows, 0, st);
}

int gp_cl_mse(struct gp_backend *be, const struct gp_buf *pred,
	      const struct gp_buf *target, size_t rows, size_t cols,
	      struct gp_buf *dpred, double *ret_loss)
{
	struct cl_backend *cb = to_cl(be);
	cl_kernel kern = cb->kernels[K_MSE];
	cl_mem pm = mem_of(pred), tm = mem_of(target);
	/* Without dpred the kernel gets pred there and writes nothing. */
	cl_mem dm = dpred ? mem_of(dpred) : pm;
	cl_uint r32 = (cl_uint)rows, c32 = (cl_uint)cols;
	cl_int want = dpred != NULL, st = CL_SUCCESS;
	size_t n = rows * cols;
	float scale = 2.0f / (float)n;
	double loss = 0.0;
	int r;

	if ((r = check_u32(be, "gp_mse", n)) < 0 ||
	    (r = gp_cl_ensure_rows(cb, rows)) < 0)
		return r;
	set_arg(kern, 0, sizeof(pm), &pm, &st);
	set_arg(kern, 1, sizeof(tm), &tm, &st);
	set_arg(kern, 2, sizeof(dm), &dm, &st);
	set_arg(kern, 3, sizeof(want), &want, &st);
	set_arg(kern, 4, sizeof(scale), &scale, &st);
	set_arg(kern, 5, sizeof(r32), &r32, &st);
	set_arg(kern, 6, sizeof(c32), &c32, &st);
	set_arg(kern, 7, sizeof(cb->row_loss), &cb->row_loss, &st);
	if ((r = gp_cl_launch(be, K_MSE, rows, 0, st)) < 0 ||
	    (r = gp_cl_read_rows(cb, rows, true, false)) < 0)
		return r;
	/* Summed in double in row order: the same answer every time. */
	for (size_t i = 0; i < rows; i++)
		loss += cb->host_loss[i];
	*ret_loss = loss / (double)n;
	return 0;
}
