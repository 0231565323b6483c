/* The OpenCL backend: with opencl-conv.c, opencl-layers.c and
 * opencl-attn.c (the layer ops beyond the MLP's), the only files that
 * talk to OpenCL and CLBlast.
 *
 * One backend is one device with one long-lived context and one in-order
 * queue. GEMMs are CLBlast's; every other op is one of the project's
 * kernels (kernels/ops.cl and layers.cl, embedded at build time by
 * embed-cl), built once when the backend is created. Ops only enqueue;
 * the calls that hand a result to the host (gp_buf_read and the ops that
 * return a loss, a norm or a status: softmax_xent, sumsq, the losses, the
 * embedding's token check) are the only ones that wait.
 * OpenCL and CLBlast status codes are turned into negative errno here, with
 * their names in gp_backend_error(). */
#include "opencl-impl.h"

#include <clblast_c.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

extern const char *const gp_cl_sources[];
extern const char *const gp_cl_source_names[];
extern const size_t gp_cl_source_count;

/* Partial sums of gp_sumsq: at most this many work-groups. */
#define SUMSQ_MAX_GROUPS 256
/* The largest local size tried for gp_sumsq_partial (a power of two). */
#define SUMSQ_MAX_LOCAL 256

static const char *const kernel_names[K_COUNT] = {
	[K_BIAS_ADD] = "gp_bias_add",
	[K_COL_SUM] = "gp_col_sum",
	[K_RELU_FORWARD] = "gp_relu_forward",
	[K_RELU_BACKWARD] = "gp_relu_backward",
	[K_SOFTMAX_XENT] = "gp_softmax_xent",
	[K_ARGMAX] = "gp_argmax",
	[K_AXPY] = "gp_axpy",
	[K_SCALE] = "gp_scale",
	[K_SUMSQ_PARTIAL] = "gp_sumsq_partial",
	[K_SGD_MOMENTUM] = "gp_sgd_momentum",
	[K_CONV2D_FORWARD] = "gp_conv2d_forward",
	[K_CONV2D_BACKWARD_X] = "gp_conv2d_backward_x",
	[K_CONV2D_BACKWARD_W] = "gp_conv2d_backward_w",
	[K_CONV2D_BACKWARD_B] = "gp_conv2d_backward_b",
	[K_POOL2D_FORWARD] = "gp_pool2d_forward",
	[K_POOL2D_BACKWARD] = "gp_pool2d_backward",
	[K_GELU_FORWARD] = "gp_gelu_forward",
	[K_GELU_BACKWARD] = "gp_gelu_backward",
	[K_MUL] = "gp_mul",
	[K_LAYERNORM_FORWARD] = "gp_layernorm_forward",
	[K_LAYERNORM_BACKWARD_X] = "gp_layernorm_backward_x",
	[K_LAYERNORM_BACKWARD_P] = "gp_layernorm_backward_p",
	[K_MSE] = "gp_mse",
	[K_EMBEDDING_FORWARD] = "gp_embedding_forward",
	[K_EMBEDDING_BACKWARD] = "gp_embedding_backward",
	[K_CAUSAL_SOFTMAX] = "gp_causal_softmax",
	[K_CAUSAL_SOFTMAX_BACKWARD] = "gp_causal_softmax_backward",
	[K_GROUPNORM_FORWARD] = "gp_groupnorm_forward",
	[K_GROUPNORM_BACKWARD_X] = "gp_groupnorm_backward_x",
	[K_GROUPNORM_BACKWARD_P] = "gp_groupnorm_backward_p",
	[K_CHANNEL_BIAS_ADD] = "gp_channel_bias_add",
};

/* CLBlast keeps compiled kernels in a process-wide cache keyed by context;
 * it is cleared when the last OpenCL backend goes, so that nothing of ours
 * outlives the backends (and leak checkers see a clean exit). */
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned live_backends;

int gp_cl_fail(struct gp_backend *be, const char *call, cl_int st)
{
	gp_backend_set_error(be, "%s: %s (%d)", call, gp_cl_status_name(st),
			     (int)st);
	return gp_cl_status_errno(st);
}

static const char *clblast_status_name(CLBlastStatusCode st)
{
	switch (st) {
	case CLBlastNotImplemented:
		return "CLBlastNotImplemented";
	case CLBlastInvalidMatrixA:
		return "CLBlastInvalidMatrixA";
	case CLBlastInvalidMatrixB:
		return "CLBlastInvalidMatrixB";
	case CLBlastInvalidMatrixC:
		return "CLBlastInvalidMatrixC";
	case CLBlastInvalidVectorX:
		return "CLBlastInvalidVectorX";
	case CLBlastInvalidVectorY:
		return "CLBlastInvalidVectorY";
	case CLBlastInvalidDimension:
		return "CLBlastInvalidDimension";
	case CLBlastInvalidLeadDimA:
		return "CLBlastInvalidLeadDimA";
	case CLBlastInvalidLeadDimB:
		return "CLBlastInvalidLeadDimB";
	case CLBlastInvalidLeadDimC:
		return "CLBlastInvalidLeadDimC";
	case CLBlastInvalidIncrementX:
		return "CLBlastInvalidIncrementX";
	case CLBlastInvalidIncrementY:
		return "CLBlastInvalidIncrementY";
	case CLBlastInsufficientMemoryA:
		return "CLBlastInsufficientMemoryA";
	case CLBlastInsufficientMemoryB:
		return "CLBlastInsufficientMemoryB";
	case CLBlastInsufficientMemoryC:
		return "CLBlastInsufficientMemoryC";
	case CLBlastInsufficientMemoryX:
		return "CLBlastInsufficientMemoryX";
	case CLBlastInsufficientMemoryY:
		return "CLBlastInsufficientMemoryY";
	case CLBlastInsufficientMemoryTemp:
		return "CLBlastInsufficientMemoryTemp";
	case CLBlastInvalidBatchCount:
		return "CLBlastInvalidBatchCount";
	case CLBlastInvalidOverrideKernel:
		return "CLBlastInvalidOverrideKernel";
	case CLBlastMissingOverrideParameter:
		return "CLBlastMissingOverrideParameter";
	case CLBlastInvalidLocalMemUsage:
		return "CLBlastInvalidLocalMemUsage";
	case CLBlastNoHalfPrecision:
		return "CLBlastNoHalfPrecision";
	case CLBlastNoDoublePrecision:
		return "CLBlastNoDoublePrecision";
	case CLBlastInvalidVectorScalar:
		return "CLBlastInvalidVectorScalar";
	case CLBlastInsufficientMemoryScalar:
		return "CLBlastInsufficientMemoryScalar";
	case CLBlastDatabaseError:
		return "CLBlastDatabaseError";
	case CLBlastUnknownError:
		return "CLBlastUnknownError";
	case CLBlastUnexpectedError:
		return "CLBlastUnexpectedError";
	default:
		/* The rest of CLBlast's codes are OpenCL's. */
		return gp_cl_status_name((int)st);
	}
}

static int clblast_status_errno(CLBlastStatusCode st)
{
	if (st == CLBlastSuccess)
		return 0;
	if (st > -1000)
		return gp_cl_status_errno((int)st);
	switch (st) {
	case CLBlastNotImplemented:
		return -ENOSYS;
	case CLBlastNoHalfPrecision:
	case CLBlastNoDoublePrecision:
	case CLBlastInvalidLocalMemUsage:
		return -ENOTSUP;
	case CLBlastDatabaseError:
	case CLBlastUnknownError:
	case CLBlastUnexpectedError:
		return -EIO;
	default:
		/* Invalid buffers, dimensions, leading dimensions, sizes. */
		return -EINVAL;
	}
}

int gp_cl_blast_fail(struct gp_backend *be, const char *call, int st)
{
	gp_backend_set_error(be, "%s: %s (%d)", call,
			     clblast_status_name((CLBlastStatusCode)st), st);
	return clblast_status_errno((CLBlastStatusCode)st);
}

/* Calls fn for every device of every platform, platform by platform, device
 * by device (the order of gp_backend_list_devices()), until fn returns
 * non-zero; returns that value, 0, or a negative errno. A platform with no
 * device, or whose devices cannot be listed, is skipped, and no platform at
 * all is not an error. */
static int for_each_device(int (*fn)(cl_platform_id, cl_device_id, int,
				     void *),
			   void *userdata)
{
	cl_platform_id *platforms = NULL;
	cl_device_id *devices = NULL;
	cl_uint np = 0;
	int index = 0, r = 0;
	cl_int st;

	st = clGetPlatformIDs(0, NULL, &np);
	if (st == -1001 /* CL_PLATFORM_NOT_FOUND_KHR */ || np == 0)
		return 0;
	if (st != CL_SUCCESS)
		return gp_cl_status_errno(st);
	platforms = calloc(np, sizeof(*platforms));
	if (!platforms)
		return -ENOMEM;
	st = clGetPlatformIDs(np, platforms, NULL);
	if (st != CL_SUCCESS) {
		r = gp_cl_status_errno(st);
		goto out;
	}
	for (cl_uint p = 0; p < np && r == 0; p++) {
		cl_uint nd = 0;

		/* A platform that cannot list its devices (a broken driver
		 * on a volunteer's machine) is skipped rather than hiding
		 * the others and the CPU path. */
		st = clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, 0, NULL,
				    &nd);
		if (st != CL_SUCCESS || nd == 0)
			continue;
		free(devices);
		devices = calloc(nd, sizeof(*devices));
		if (!devices) {
			r = -ENOMEM;
			break;
		}
		st = clGetDeviceIDs(platforms[p], CL_DEVICE_TYPE_ALL, nd,
				    devices, NULL);
		if (st != CL_SUCCESS)
			continue;
		for (cl_uint d = 0; d < nd && r == 0; d++)
			r = fn(platforms[p], devices[d], index++, userdata);
	}
out:
	free(devices);
	free(platforms);
	return r;
}

/* Copies src into out, truncated and NUL-terminated. */
static void copy_str(char *out, size_t size, const char *src)
{
	size_t len = strnlen(src, size - 1);

	memcpy(out, src, len);
	out[len] = '\0';
}

/* Copies a string property of a device (platform == NULL) or a platform
 * into out; a property the driver cannot report leaves "". */
static void info_string(cl_platform_id platform, cl_device_id dev,
			cl_uint what, char *out, size_t size)
{
	size_t len = 0;
	cl_int st;
	char *buf;

	out[0] = '\0';
	st = platform ? clGetPlatformInfo(platform, what, 0, NULL, &len)
		      : clGetDeviceInfo(dev, what, 0, NULL, &len);
	if (st != CL_SUCCESS || len == 0)
		return;
	buf = malloc(len + 1);
	if (!buf)
		return;
	st = platform ? clGetPlatformInfo(platform, what, len, buf, NULL)
		      : clGetDeviceInfo(dev, what, len, buf, NULL);
	if (st == CL_SUCCESS) {
		buf[len] = '\0';
		copy_str(out, size, buf);
	}
	free(buf);
}

static void fill_info(cl_platform_id platform, cl_device_id dev, int index,
		      struct gp_device_info *info)
{
	cl_device_type type = 0;
	cl_ulong mem = 0;
	cl_uint units = 0;

	memset(info, 0, sizeof(*info));
	info->type = GP_BACKEND_OPENCL;
	info->index = index;
	clGetDeviceInfo(dev, CL_DEVICE_TYPE, sizeof(type), &type, NULL);
	if (type & CL_DEVICE_TYPE_GPU)
		snprintf(info->kind, sizeof(info->kind), "gpu");
	else if (type & CL_DEVICE_TYPE_CPU)
		snprintf(info->kind, sizeof(info->kind), "cpu");
	else if (type & CL_DEVICE_TYPE_ACCELERATOR)
		snprintf(info->kind, sizeof(info->kind), "accelerator");
	else
		snprintf(info->kind, sizeof(info->kind), "other");
	info_string(NULL, dev, CL_DEVICE_NAME, info->name, sizeof(info->name));
	info_string(NULL, dev, CL_DEVICE_VENDOR, info->vendor,
		    sizeof(info->vendor));
	info_string(NULL, dev, CL_DRIVER_VERSION, info->driver,
		    sizeof(info->driver));
	info_string(platform, NULL, CL_PLATFORM_NAME, info->platform,
		    sizeof(info->platform));
	if (clGetDeviceInfo(dev, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof(mem), &mem,
			    NULL) == CL_SUCCESS)
		info->global_mem = mem;
	if (clGetDeviceInfo(dev, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof(units),
			    &units, NULL) == CL_SUCCESS)
		info->compute_units = units;
}

struct list_state {
	struct gp_device_info *list;
	size_t n;
};

static int list_one(cl_platform_id platform, cl_device_id dev, int index,
		    void *userdata)
{
	struct list_state *s = userdata;
	struct gp_device_info *grown;

	grown = realloc(s->list, (s->n + 1) * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	s->list = grown;
	fill_info(platform, dev, index, &s->list[s->n]);
	s->n++;
	return 0;
}

int gp_opencl_list_devices(struct gp_device_info **list, size_t *n)
{
	struct list_state s = {*list, *n};
	int r;

	r = for_each_device(list_one, &s);
	/* realloc may have moved the list even when a later step failed. */
	*list = s.list;
	if (r < 0)
		return r;
	*n = s.n;
	return 0;
}

struct find_state {
	int want;
	cl_platform_id platform;
	cl_device_id device;
};

static int find_one(cl_platform_id platform, cl_device_id dev, int index,
		    void *userdata)
{
	struct find_state *s = userdata;

	if (index != s->want)
		return 0;
	s->platform = platform;
	s->device = dev;
	return 1;
}

static void cl_destroy(struct gp_backend *be)
{
	struct cl_backend *cb = to_cl(be);
	bool last;

	if (cb->queue)
		clFinish(cb->queue);
	for (int i = 0; i < K_COUNT; i++)
		if (cb->kernels[i])
			clReleaseKernel(cb->kernels[i]);
	if (cb->program)
		clReleaseProgram(cb->program);
	if (cb->sumsq_partial)
		clReleaseMemObject(cb->sumsq_partial);
	if (cb->row_loss)
		clReleaseMemObject(cb->row_loss);
	if (cb->row_status)
		clReleaseMemObject(cb->row_status);
	free(cb->host_loss);
	free(cb->host_status);
	for (int i = 0; i < SCRATCH_COUNT; i++)
		if (cb->scratch[i])
			clReleaseMemObject(cb->scratch[i]);
	pthread_mutex_lock(&live_lock);
	last = --live_backends == 0;
	/* CLBlast's cache holds the context and queue; empty it before they
	 * go so it keeps no dangling handle. */
	if (last)
		CLBlastClearCache();
	pthread_mutex_unlock(&live_lock);
	if (cb->queue)
		clReleaseCommandQueue(cb->queue);
	if (cb->ctx)
		clReleaseContext(cb->ctx);
	free(cb);
}

static int cl_finish(struct gp_backend *be)
{
	cl_int st = clFinish(to_cl(be)->queue);

	return st == CL_SUCCESS ? 0 : gp_cl_fail(be, "clFinish", st);
}

static int cl_buf_alloc(struct gp_backend *be, struct gp_buf *b)
{
	struct cl_backend *cb = to_cl(be);
	size_t bytes = b->n * (b->dtype == GP_F32 ? sizeof(cl_float)
						  : sizeof(cl_int));
	const cl_int zero = 0;
	cl_mem mem;
	cl_int st;

	mem = clCreateBuffer(cb->ctx, CL_MEM_READ_WRITE, bytes, NULL, &st);
	if (st != CL_SUCCESS)
		return gp_cl_fail(be, "clCreateBuffer", st);
	/* float 0.0 and int 0 are both all-zero bits. */
	st = clEnqueueFillBuffer(cb->queue, mem, &zero, sizeof(zero), 0, bytes,
				 0, NULL, NULL);
	if (st != CL_SUCCESS) {
		clReleaseMemObject(mem);
		return gp_cl_fail(be, "clEnqueueFillBuffer", st);
	}
	b->impl = mem;
	return 0;
}

static void cl_buf_free(struct gp_buf *b)
{
	/* The runtime keeps the memory until the ops enqueued on it finish. */
	clReleaseMemObject(mem_of(b));
}

static int cl_buf_write(struct gp_buf *b, const void *src, size_t off,
			size_t bytes)
{
	/* Blocking: src is only borrowed for the duration of the call. */
	cl_int st = clEnqueueWriteBuffer(to_cl(b->be)->queue, mem_of(b),
					 CL_TRUE, off, bytes, src, 0, NULL,
					 NULL);

	return st == CL_SUCCESS ? 0 : gp_cl_fail(b->be, "clEnqueueWriteBuffer",
					      st);
}

static int cl_buf_read(const struct gp_buf *b, void *dst, size_t off,
		       size_t bytes)
{
	cl_int st = clEnqueueReadBuffer(to_cl(b->be)->queue, mem_of(b),
					CL_TRUE, off, bytes, dst, 0, NULL,
					NULL);

	return st == CL_SUCCESS ? 0 : gp_cl_fail(b->be, "clEnqueueReadBuffer",
					      st);
}

static int cl_buf_copy(struct gp_buf *dst, const struct gp_buf *src,
		       size_t bytes)
{
	cl_int st;

	if (dst == src)
		return 0;
	st = clEnqueueCopyBuffer(to_cl(dst->be)->queue, mem_of(src),
				 mem_of(dst), 0, 0, bytes, 0, NULL, NULL);
	return st == CL_SUCCESS ? 0 : gp_cl_fail(dst->be, "clEnqueueCopyBuffer",
					      st);
}

int gp_cl_launch(struct gp_backend *be, int id, size_t global, size_t local,
		 cl_int st)
{
	struct cl_backend *cb = to_cl(be);

	if (st != CL_SUCCESS)
		return gp_cl_fail(be, kernel_names[id], st);
	st = clEnqueueNDRangeKernel(cb->queue, cb->kernels[id], 1, NULL,
				    &global, local ? &local : NULL, 0, NULL,
				    NULL);
	if (st != CL_SUCCESS) {
		char call[96];

		snprintf(call, sizeof(call), "clEnqueueNDRangeKernel(%s)",
			 kernel_names[id]);
		return gp_cl_fail(be, call, st);
	}
	return 0;
}

static int cl_gemm(struct gp_backend *be, bool ta, bool tb, size_t m,
		   size_t n, size_t k, float alpha, const struct gp_buf *a,
		   const struct gp_buf *b, float beta, struct gp_buf *c)
{
	struct cl_backend *cb = to_cl(be);
	CLBlastStatusCode st;

	/* Row-major leading dimensions: the row length of each matrix as
	 * stored (A is k x m when transposed, B is n x k). */
	st = CLBlastSgemm(CLBlastLayoutRowMajor,
			  ta ? CLBlastTransposeYes : CLBlastTransposeNo,
			  tb ? CLBlastTransposeYes : CLBlastTransposeNo, m, n,
			  k, alpha, mem_of(a), 0, ta ? m : k, mem_of(b), 0,
			  tb ? k : n, beta, mem_of(c), 0, n, &cb->queue,
			  NULL);
	return st == CLBlastSuccess ? 0
				    : gp_cl_blast_fail(be, "CLBlastSgemm", st);
}

static int cl_bias_add(struct gp_backend *be, struct gp_buf *x,
		       const struct gp_buf *bias, size_t rows, size_t cols,
		       bool relu)
{
	cl_kernel kern = to_cl(be)->kernels[K_BIAS_ADD];
	size_t total = rows * cols;
	cl_uint n32 = (cl_uint)total, c32 = (cl_uint)cols;
	cl_int relu32 = relu, st = CL_SUCCESS;
	cl_mem xm = mem_of(x), bm = mem_of(bias);
	int r;

	if ((r = check_u32(be, "gp_bias_add", total)) < 0)
		return r;
	set_arg(kern, 0, sizeof(xm), &xm, &st);
	set_arg(kern, 1, sizeof(bm), &bm, &st);
	set_arg(kern, 2, sizeof(n32), &n32, &st);
	set_arg(kern, 3, sizeof(c32), &c32, &st);
	set_arg(kern, 4, sizeof(relu32), &relu32, &st);
	return gp_cl_launch(be, K_BIAS_ADD, total, 0, st);
}

static int cl_col_sum(struct gp_backend *be, const struct gp_buf *x,
		      size_t rows, size_t cols, float beta, struct gp_buf *out)
{
	cl_kernel kern = to_cl(be)->kernels[K_COL_SUM];
	cl_uint r32 = (cl_uint)rows, c32 = (cl_uint)cols;
	cl_mem xm = mem_of(x), om = mem_of(out);
	cl_int st = CL_SUCCESS;

	set_arg(kern, 0, sizeof(xm), &xm, &st);
	set_arg(kern, 1, sizeof(r32), &r32, &st);
	set_arg(kern, 2, sizeof(c32), &c32, &st);
	set_arg(kern, 3, sizeof(beta), &beta, &st);
	set_arg(kern, 4, sizeof(om), &om, &st);
	return gp_cl_launch(be, K_COL_SUM, cols, 0, st);
}

static int cl_relu_forward(struct gp_backend *be, const struct gp_buf *x,
			   struct gp_buf *y, size_t n)
{
	cl_kernel kern = to_cl(be)->kernels[K_RELU_FORWARD];
	cl_mem xm = mem_of(x), ym = mem_of(y);
	cl_uint n32 = (cl_uint)n;
	cl_int st = CL_SUCCESS;
	int r;

	if ((r = check_u32(be, "gp_relu_forward", n)) < 0)
		return r;
	set_arg(kern, 0, sizeof(xm), &xm, &st);
	set_arg(kern, 1, sizeof(ym), &ym, &st);
	set_arg(kern, 2, sizeof(n32), &n32, &st);
	return gp_cl_launch(be, K_RELU_FORWARD, n, 0, st);
}

static int cl_relu_backward(struct gp_backend *be, const struct gp_buf *y,
			    const struct gp_buf *dy, struct gp_buf *dx,
			    size_t n)
{
	cl_kernel kern = to_cl(be)->kernels[K_RELU_BACKWARD];
	cl_mem ym = mem_of(y), dym = mem_of(dy), dxm = mem_of(dx);
	cl_uint n32 = (cl_uint)n;
	cl_int st = CL_SUCCESS;
	int r;

	if ((r = check_u32(be, "gp_relu_backward", n)) < 0)
		return r;
	set_arg(kern, 0, sizeof(ym), &ym, &st);
	set_arg(kern, 1, sizeof(dym), &dym, &st);
	set_arg(kern, 2, sizeof(dxm), &dxm, &st);
	set_arg(kern, 3, sizeof(n32), &n32, &st);
	return gp_cl_launch(be, K_RELU_BACKWARD, n, 0, st);
}

int gp_cl_ensure_rows(struct cl_backend *cb, size_t rows)
{
	struct gp_backend *be = &cb->base;
	cl_mem loss, status;
	float *hloss;
	cl_int *hstatus;
	cl_int st;

	if (rows <= cb->rows_cap)
		return 0;
	loss = clCreateBuffer(cb->ctx, CL_MEM_READ_WRITE,
			      rows * sizeof(cl_float), NULL, &st);
	if (st != CL_SUCCESS)
		return gp_cl_fail(be, "clCreateBuffer", st);
	status = clCreateBuffer(cb->ctx, CL_MEM_READ_WRITE,
				rows * sizeof(cl_int), NULL, &st);
	if (st != CL_SUCCESS) {
		clReleaseMemObject(loss);
		return gp_cl_fail(be, "clCreateBuffer", st);
	}
	hloss = malloc(rows * sizeof(*hloss));
	hstatus = malloc(rows * sizeof(*hstatus));
	if (!hloss || !hstatus) {
		free(hloss);
		free(hstatus);
		clReleaseMemObject(loss);
		clReleaseMemObject(status);
		return -ENOMEM;
	}
	if (cb->row_loss)
		clReleaseMemObject(cb->row_loss);
	if (cb->row_status)
		clReleaseMemObject(cb->row_status);
	free(cb->host_loss);
	free(cb->host_status);
	cb->row_loss = loss;
	cb->row_status = status;
	cb->host_loss = hloss;
	cb->host_status = hstatus;
	cb->rows_cap = rows;
	return 0;
}

int gp_cl_read_rows(struct cl_backend *cb, size_t rows, bool loss,
		    bool status)
{
	cl_int st = CL_SUCCESS;

	/* The queue is in order: the blocking last read also waits for the
	 * first. */
	if (loss)
		st = clEnqueueReadBuffer(cb->queue, cb->row_loss, !status, 0,
					 rows * sizeof(cl_float),
					 cb->host_loss, 0, NULL, NULL);
	if (st == CL_SUCCESS && status)
		st = clEnqueueReadBuffer(cb->queue, cb->row_status, CL_TRUE,
					 0, rows * sizeof(cl_int),
					 cb->host_status, 0, NULL, NULL);
	if (st != CL_SUCCESS) {
		/* A non-blocking read may still be pending: drain it. */
		clFinish(cb->queue);
		return gp_cl_fail(&cb->base, "clEnqueueReadBuffer", st);
	}
	return 0;
}

int gp_cl_scratch(struct cl_backend *cb, int slot, size_t bytes,
		  cl_mem *ret)
{
	cl_mem mem;
	cl_int st;

	if (bytes > cb->scratch_bytes[slot]) {
		mem = clCreateBuffer(cb->ctx, CL_MEM_READ_WRITE, bytes, NULL,
				     &st);
		if (st != CL_SUCCESS)
			return gp_cl_fail(&cb->base, "clCreateBuffer", st);
		/* Ops enqueued on the old buffer still hold it. */
		if (cb->scratch[slot])
			clReleaseMemObject(cb->scratch[slot]);
		cb->scratch[slot] = mem;
		cb->scratch_bytes[slot] = bytes;
	}
	*ret = cb->scratch[slot];
	return 0;
}

static int cl_softmax_xent(struct gp_backend *be, struct gp_buf *logits,
			   const struct gp_buf *labels, size_t rows,
			   size_t cols, struct gp_buf *dlogits,
			   double *ret_loss, size_t *ret_correct)
{
	struct cl_backend *cb = to_cl(be);
	cl_kernel kern = cb->kernels[K_SOFTMAX_XENT];
	cl_uint r32 = (cl_uint)rows, c32 = (cl_uint)cols;
	cl_mem lm = mem_of(logits), labm = mem_of(labels);
	/* Without dlogits the kernel gets logits there and writes nothing. */
	cl_mem dm = dlogits ? mem_of(dlogits) : lm;
	cl_int want = dlogits != NULL, st = CL_SUCCESS;
	float inv_rows = (float)(1.0 / (double)rows);
	double loss = 0.0;
	size_t correct = 0;
	int r;

	if ((r = gp_cl_ensure_rows(cb, rows)) < 0)
		return r;
	set_arg(kern, 0, sizeof(lm), &lm, &st);
	set_arg(kern, 1, sizeof(labm), &labm, &st);
	set_arg(kern, 2, sizeof(r32), &r32, &st);
	set_arg(kern, 3, sizeof(c32), &c32, &st);
	set_arg(kern, 4, sizeof(dm), &dm, &st);
	set_arg(kern, 5, sizeof(want), &want, &st);
	set_arg(kern, 6, sizeof(inv_rows), &inv_rows, &st);
	set_arg(kern, 7, sizeof(cb->row_loss), &cb->row_loss, &st);
	set_arg(kern, 8, sizeof(cb->row_status), &cb->row_status, &st);
	if ((r = gp_cl_launch(be, K_SOFTMAX_XENT, rows, 0, st)) < 0)
		return r;
	if ((r = gp_cl_read_rows(cb, rows, true, true)) < 0)
		return r;
	/* Summed in double in row order: the same answer every time. */
	for (size_t i = 0; i < rows; i++) {
		if (cb->host_status[i] < 0) {
			gp_backend_set_error(be, "gp_softmax_xent: label of "
						 "row %zu is outside [0, %zu)",
					     i, cols);
			return -EINVAL;
		}
		loss += cb->host_loss[i];
		correct += cb->host_status[i] == 1;
	}
	*ret_loss = loss / (double)rows;
	if (ret_correct)
		*ret_correct = correct;
	return 0;
}

static int cl_argmax(struct gp_backend *be, const struct gp_buf *x,
		     size_t rows, size_t cols, struct gp_buf *out)
{
	cl_kernel kern = to_cl(be)->kernels[K_ARGMAX];
	cl_uint r32 = (cl_uint)rows, c32 = (cl_uint)cols;
	cl_mem xm = mem_of(x), om = mem_of(out);
	cl_int st = CL_SUCCESS;

	set_arg(kern, 0, sizeof(xm), &xm, &st);
	set_arg(kern, 1, sizeof(r32), &r32, &st);
	set_arg(kern, 2, sizeof(c32), &c32, &st);
	set_arg(kern, 3, sizeof(om), &om, &st);
	return gp_cl_launch(be, K_ARGMAX, rows, 0, st);
}

static int cl_axpy(struct gp_backend *be, size_t n, float alpha,
		   const struct gp_buf *x, struct gp_buf *y)
{
	cl_kernel kern = to_cl(be)->kernels[K_AXPY];
	cl_mem xm = mem_of(x), ym = mem_of(y);
	cl_uint n32 = (cl_uint)n;
	cl_int st = CL_SUCCESS;
	int r;

	if ((r = check_u32(be, "gp_axpy", n)) < 0)
		return r;
	set_arg(kern, 0, sizeof(n32), &n32, &st);
	set_arg(kern, 1, sizeof(alpha), &alpha, &st);
	set_arg(kern, 2, sizeof(xm), &xm, &st);
	set_arg(kern, 3, sizeof(ym), &ym, &st);
	return gp_cl_launch(be, K_AXPY, n, 0, st);
}

static int cl_scale(struct gp_backend *be, size_t n, float alpha,
		    struct gp_buf *x)
{
	cl_kernel kern = to_cl(be)->kernels[K_SCALE];
	cl_mem xm = mem_of(x);
	cl_uint n32 = (cl_uint)n;
	cl_int st = CL_SUCCESS;
	int r;

	if ((r = check_u32(be, "gp_scale", n)) < 0)
		return r;
	set_arg(kern, 0, sizeof(n32), &n32, &st);
	set_arg(kern, 1, sizeof(alpha), &alpha, &st);
	set_arg(kern, 2, sizeof(xm), &xm, &st);
	return gp_cl_launch(be, K_SCALE, n, 0, st);
}

static int cl_sumsq(struct gp_backend *be, const struct gp_buf *x, size_t n,
		    double *ret)
{
	struct cl_backend *cb = to_cl(be);
	cl_kernel kern = cb->kernels[K_SUMSQ_PARTIAL];
	float partial[SUMSQ_MAX_GROUPS];
	size_t local = cb->sumsq_local, groups, global;
	cl_mem xm = mem_of(x);
	cl_uint n32 = (cl_uint)n;
	cl_int st = CL_SUCCESS;
	double sum = 0.0;
	int r;

	if ((r = check_u32(be, "gp_sumsq", n)) < 0)
		return r;
	/* The group count depends only on n, so the summation order (and the
	 * rounding) is the same on every call. */
	groups = (n + local - 1) / local;
	if (groups > SUMSQ_MAX_GROUPS)
		groups = SUMSQ_MAX_GROUPS;
	global = groups * local;
	set_arg(kern, 0, sizeof(xm), &xm, &st);
	set_arg(kern, 1, sizeof(n32), &n32, &st);
	set_arg(kern, 2, sizeof(cb->sumsq_partial), &cb->sumsq_partial, &st);
	set_arg(kern, 3, local * sizeof(cl_float), NULL, &st);
	if ((r = gp_cl_launch(be, K_SUMSQ_PARTIAL, global, local, st)) < 0)
		return r;
	st = clEnqueueReadBuffer(cb->queue, cb->sumsq_partial, CL_TRUE, 0,
				 groups * sizeof(cl_float), partial, 0, NULL,
				 NULL);
	if (st != CL_SUCCESS)
		return gp_cl_fail(be, "clEnqueueReadBuffer", st);
	for (size_t i = 0; i < groups; i++)
		sum += partial[i];
	*ret = sum;
	return 0;
}

static int cl_sgd_momentum(struct gp_backend *be, size_t n, float lr,
			   float mu, const struct gp_buf *g, struct gp_buf *v,
			   struct gp_buf *p)
{
	cl_kernel kern = to_cl(be)->kernels[K_SGD_MOMENTUM];
	cl_mem gm = mem_of(g), vm = mem_of(v), pm = mem_of(p);
	cl_uint n32 = (cl_uint)n;
	cl_int st = CL_SUCCESS;
	int r;

	if ((r = check_u32(be, "gp_sgd_momentum", n)) < 0)
		return r;
	set_arg(kern, 0, sizeof(n32), &n32, &st);
	set_arg(kern, 1, sizeof(lr), &lr, &st);
	set_arg(kern, 2, sizeof(mu), &mu, &st);
	set_arg(kern, 3, sizeof(gm), &gm, &st);
	set_arg(kern, 4, sizeof(vm), &vm, &st);
	set_arg(kern, 5, sizeof(pm), &pm, &st);
	return gp_cl_launch(be, K_SGD_MOMENTUM, n, 0, st);
}

static const struct gp_backend_ops cl_ops = {
	.destroy = cl_destroy,
	.finish = cl_finish,
	.buf_alloc = cl_buf_alloc,
	.buf_free = cl_buf_free,
	.buf_write = cl_buf_write,
	.buf_read = cl_buf_read,
	.buf_copy = cl_buf_copy,
	.gemm = cl_gemm,
	.bias_add = cl_bias_add,
	.col_sum = cl_col_sum,
	.relu_forward = cl_relu_forward,
	.relu_backward = cl_relu_backward,
	.softmax_xent = cl_softmax_xent,
	.argmax = cl_argmax,
	.axpy = cl_axpy,
	.scale = cl_scale,
	.sumsq = cl_sumsq,
	.sgd_momentum = cl_sgd_momentum,
	.conv2d_forward = gp_cl_conv2d_forward,
	.conv2d_backward = gp_cl_conv2d_backward,
	.pool2d_forward = gp_cl_pool2d_forward,
	.pool2d_backward = gp_cl_pool2d_backward,
	.gelu_forward = gp_cl_gelu_forward,
	.gelu_backward = gp_cl_gelu_backward,
	.mul = gp_cl_mul,
	.layernorm_forward = gp_cl_layernorm_forward,
	.layernorm_backward = gp_cl_layernorm_backward,
	.groupnorm_forward = gp_cl_groupnorm_forward,
	.groupnorm_backward = gp_cl_groupnorm_backward,
	.mse = gp_cl_mse,
	.embedding_forward = gp_cl_embedding_forward,
	.embedding_backward = gp_cl_embedding_backward,
	.attention_forward = gp_cl_attention_forward,
	.attention_backward = gp_cl_attention_backward,
};

/* Builds the embedded sources for the device; on failure the build log goes
 * into the backend's error text. */
static int build_program(struct cl_backend *cb)
{
	struct gp_backend *be = &cb->base;
	size_t log_len = 0, used = 0;
	char names[256] = "", *log;
	cl_int st, lst;

	cb->program = clCreateProgramWithSource(cb->ctx,
						(cl_uint)gp_cl_source_count,
						(const char **)gp_cl_sources,
						NULL, &st);
	if (st != CL_SUCCESS)
		return gp_cl_fail(be, "clCreateProgramWithSource", st);
	st = clBuildProgram(cb->program, 1, &cb->device, "", NULL, NULL);
	if (st == CL_SUCCESS)
		return 0;
	/* The sources are built as one text: the log's line numbers may
	 * refer to any of them. */
	for (size_t i = 0; i < gp_cl_source_count && used < sizeof(names); i++)
		used += (size_t)snprintf(names + used, sizeof(names) - used,
					 "%s%s", i ? ", " : "",
					 gp_cl_source_names[i]);
	lst = clGetProgramBuildInfo(cb->program, cb->device,
				    CL_PROGRAM_BUILD_LOG, 0, NULL, &log_len);
	log = lst == CL_SUCCESS && log_len > 0 ? malloc(log_len + 1) : NULL;
	if (log &&
	    clGetProgramBuildInfo(cb->program, cb->device, CL_PROGRAM_BUILD_LOG,
				  log_len, log, NULL) == CL_SUCCESS) {
		log[log_len] = '\0';
		gp_backend_set_error(be, "clBuildProgram(%s): %s (%d)\n%s",
				     names,
				     gp_cl_status_name(st), (int)st, log);
	} else {
		gp_backend_set_error(be, "clBuildProgram(%s): %s (%d), no log",
				     names,
				     gp_cl_status_name(st), (int)st);
	}
	free(log);
	return gp_cl_status_errno(st);
}

/* The local size of the sumsq reduction: the largest power of two the
 * kernel allows on this device, up to SUMSQ_MAX_LOCAL. */
static int pick_sumsq_local(struct cl_backend *cb)
{
	size_t max = 0, local = 1;
	cl_int st;

	st = clGetKernelWorkGroupInfo(cb->kernels[K_SUMSQ_PARTIAL],
				      cb->device, CL_KERNEL_WORK_GROUP_SIZE,
				      sizeof(max), &max, NULL);
	if (st != CL_SUCCESS)
		return gp_cl_fail(&cb->base, "clGetKernelWorkGroupInfo", st);
	while (local * 2 <= max && local * 2 <= SUMSQ_MAX_LOCAL)
		local *= 2;
	cb->sumsq_local = local;
	return 0;
}

/* Convolutions lower to CLBlast's convgemm, im2col and GEMMs: on PoCL
 * (the CPU as an OpenCL device) that ran the CNN of tools/bench-compute
 * 2.4-9x faster than the direct kernels (docs/performance.md), and GPUs
 * are what CLBlast is tuned for. GP_OPENCL_CONV=direct keeps the direct
 * kernels, GP_OPENCL_CONV=gemm the lowering, for tests and benchmarks;
 * opencl-conv.c also falls back to the direct kernels when the device's
 * CLBlast cannot run convgemm. */
static void pick_conv_path(struct cl_backend *cb)
{
	const char *env = getenv("GP_OPENCL_CONV");

	cb->conv_gemm = !(env && strcmp(env, "direct") == 0);
}

int gp_opencl_create(int device_index, struct gp_backend **ret)
{
	struct find_state found = {.want = device_index};
	cl_context_properties props[3];
	struct cl_backend *cb;
	cl_int st;
	int r;

	r = for_each_device(find_one, &found);
	if (r < 0) {
		gp_backend_set_create_error("enumerating OpenCL devices: %s",
					    strerror(-r));
		return r;
	}
	if (r == 0) {
		gp_backend_set_create_error("no OpenCL device %d",
					    device_index);
		return -ENODEV;
	}
	cb = calloc(1, sizeof(*cb));
	if (!cb)
		return -ENOMEM;
	cb->base.ops = &cl_ops;
	cb->base.impl = cb;
	cb->device = found.device;
	fill_info(found.platform, found.device, device_index, &cb->base.info);
	pthread_mutex_lock(&live_lock);
	live_backends++;
	pthread_mutex_unlock(&live_lock);

	props[0] = CL_CONTEXT_PLATFORM;
	props[1] = (cl_context_properties)found.platform;
	props[2] = 0;
	cb->ctx = clCreateContext(props, 1, &cb->device, NULL, NULL, &st);
	if (st != CL_SUCCESS) {
		r = gp_cl_fail(&cb->base, "clCreateContext", st);
		goto fail;
	}
	/* In order, no profiling: ops depend on each other's results and the
	 * queue order is what makes that safe without events. */
	cb->queue = clCreateCommandQueue(cb->ctx, cb->device, 0, &st);
	if (st != CL_SUCCESS) {
		r = gp_cl_fail(&cb->base, "clCreateCommandQueue", st);
		goto fail;
	}
	if ((r = build_program(cb)) < 0)
		goto fail;
	for (int i = 0; i < K_COUNT; i++) {
		cb->kernels[i] = clCreateKernel(cb->program, kernel_names[i],
						&st);
		if (st != CL_SUCCESS) {
			r = gp_cl_fail(&cb->base, kernel_names[i], st);
			goto fail;
		}
	}
	if ((r = pick_sumsq_local(cb)) < 0)
		goto fail;
	pick_conv_path(cb);
	cb->sumsq_partial = clCreateBuffer(cb->ctx, CL_MEM_READ_WRITE,
					   SUMSQ_MAX_GROUPS * sizeof(cl_float),
					   NULL, &st);
	if (st != CL_SUCCESS) {
		r = gp_cl_fail(&cb->base, "clCreateBuffer", st);
		goto fail;
	}
	*ret = &cb->base;
	return 0;

fail:
	gp_backend_set_create_error("%s", cb->base.error);
	cl_destroy(&cb->base);
	return r;
}
