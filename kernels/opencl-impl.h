/* Private to the OpenCL backend (kernels/opencl*.c): the backend's state,
 * its kernels, and the helpers its files share. opencl.c owns the device,
 * the queue, the buffers and the MLP's ops; opencl-layers.c the elementwise
 * and normalisation layers and MSE; opencl-attn.c the transformer's
 * embedding and attention. backend.c has checked every argument before an
 * op is called. */
#ifndef GP_OPENCL_IMPL_H
#define GP_OPENCL_IMPL_H

#define CL_TARGET_OPENCL_VERSION 120
#include "backend-impl.h"

#include <CL/cl.h>
#include <errno.h>
#include <stdint.h>

/* The project's kernels, one cl_kernel each, created when the backend is. */
enum {
	K_BIAS_ADD,
	K_COL_SUM,
	K_RELU_FORWARD,
	K_RELU_BACKWARD,
	K_SOFTMAX_XENT,
	K_ARGMAX,
	K_AXPY,
	K_SCALE,
	K_SUMSQ_PARTIAL,
	K_SGD_MOMENTUM,
	K_CONV2D_FORWARD,
	K_CONV2D_BACKWARD_X,
	K_CONV2D_BACKWARD_W,
	K_CONV2D_BACKWARD_B,
	K_POOL2D_FORWARD,
	K_POOL2D_BACKWARD,
	K_GELU_FORWARD,
	K_GELU_BACKWARD,
	K_MUL,
	K_LAYERNORM_FORWARD,
	K_LAYERNORM_BACKWARD_X,
	K_LAYERNORM_BACKWARD_P,
	K_MSE,
	K_EMBEDDING_FORWARD,
	K_EMBEDDING_BACKWARD,
	K_CAUSAL_SOFTMAX,
	K_CAUSAL_SOFTMAX_BACKWARD,
	K_COUNT,
};

/* Device scratch buffers the ops grow on demand and keep. */
enum {
	SCRATCH_ATTN, /* attention backward: dP and dS, n x heads x t x t */
	SCRATCH_COUNT,
};

struct cl_backend {
	struct gp_backend base;
	cl_device_id device;
	cl_context ctx;
	cl_command_queue queue;
	cl_program program;
	cl_kernel kernels[K_COUNT];
	size_t sumsq_local; /* local size of gp_sumsq_partial */
	cl_mem sumsq_partial; /* SUMSQ_MAX_GROUPS floats */
	/* Per-row results of softmax_xent, mse and the embedding's id check,
	 * grown on demand, on the device and on the host. */
	cl_mem row_loss, row_status;
	float *host_loss;
	cl_int *host_status;
	size_t rows_cap;
	cl_mem scratch[SCRATCH_COUNT];
	size_t scratch_bytes[SCRATCH_COUNT];
};

static inline struct cl_backend *to_cl(struct gp_backend *be)
{
	return (struct cl_backend *)be;
}

static inline cl_mem mem_of(const struct gp_buf *b)
{
	return (cl_mem)b->impl;
}

/* Kernel arguments are uint: rejects what does not fit before enqueueing. */
static inline int check_u32(struct gp_backend *be, const char *what,
			    size_t v)
{
	if (v > UINT32_MAX) {
		gp_backend_set_error(be, "%s: %zu elements are too many for "
					 "the OpenCL kernels", what, v);
		return -EINVAL;
	}
	return 0;
}

/* Sets argument i of k; collects the first failure in *st. */
static inline void set_arg(cl_kernel k, cl_uint i, size_t size,
			   const void *value, cl_int *st)
{
	cl_int s;

	if (*st != CL_SUCCESS)
		return;
	s = clSetKernelArg(k, i, size, value);
	if (s != CL_SUCCESS)
		*st = s;
}

/* Records which call failed and why (in gp_backend_error()), and returns
 * the OpenCL status as a negative errno. */
int gp_cl_fail(struct gp_backend *be, const char *call, cl_int st);

/* Records a failed CLBlast call the same way; call names the routine. */
int gp_cl_blast_fail(struct gp_backend *be, const char *call, int st);

/* Enqueues kernel id over global work-items (one dimension, the local size
 * chosen by the runtime unless local != 0). st carries an earlier
 * clSetKernelArg failure. */
int gp_cl_launch(struct gp_backend *be, int id, size_t global, size_t local,
		 cl_int st);

/* Makes the per-row result buffers hold at least rows entries. */
int gp_cl_ensure_rows(struct cl_backend *cb, size_t rows);

/* Reads the first rows entries of the per-row results back to host_loss
 * (when loss) and host_status (when status), waiting for both. */
int gp_cl_read_rows(struct cl_backend *cb, size_t rows, bool loss,
		    bool status);

/* Scratch buffer slot, grown to at least bytes (its contents are then
 * lost); *ret is borrowed from the backend. */
int gp_cl_scratch(struct cl_backend *cb, int slot, size_t bytes,
		  cl_mem *ret);

/* The layer ops of opencl-layers.c and opencl-attn.c, for the ops table. */
int gp_cl_gelu_forward(struct gp_backend *be, const struct gp_buf *x,
		       struct gp_buf *y, size_t n);
int gp_cl_gelu_backward(struct gp_backend *be, const struct gp_buf *x,
			const struct gp_buf *dy, struct gp_buf *dx, size_t n);
int gp_cl_mul(struct gp_backend *be, const struct gp_buf *a,
	      const struct gp_buf *b, struct gp_buf *y, size_t n);
int gp_cl_layernorm_forward(struct gp_backend *be, const struct gp_buf *x,
			    const struct gp_buf *gamma,
			    const struct gp_buf *beta_p, struct gp_buf *y,
			    struct gp_buf *stats, size_t rows, size_t cols,
			    float eps);
int gp_cl_layernorm_backward(struct gp_backend *be, const struct gp_buf *x,
			     const struct gp_buf *gamma,
			     const struct gp_buf *stats,
			     const struct gp_buf *dy, struct gp_buf *dx,
			     struct gp_buf *dgamma, struct gp_buf *dbeta_p,
			     float beta, size_t rows, size_t cols);
int gp_cl_mse(struct gp_backend *be, const struct gp_buf *pred,
	      const struct gp_buf *target, size_t rows, size_t cols,
	      struct gp_buf *dpred, double *ret_loss);
int gp_cl_embedding_forward(struct gp_backend *be,
			    const struct gp_buf *tokens,
			    const struct gp_buf *weight, struct gp_buf *y,
			    size_t rows, size_t vocab, size_t dim);
int gp_cl_embedding_backward(struct gp_backend *be,
			     const struct gp_buf *tokens,
			     const struct gp_buf *dy, struct gp_buf *dweight,
			     float beta, size_t rows, size_t vocab,
			     size_t dim);
int gp_cl_attention_forward(struct gp_backend *be, const struct gp_buf *x,
			    struct gp_buf *y, struct gp_buf *probs,
			    const struct gp_attention_shape *s);
int gp_cl_attention_backward(struct gp_backend *be, const struct gp_buf *x,
			     const struct gp_buf *probs,
			     const struct gp_buf *dy, struct gp_buf *dx,
			     struct gp_buf *scratch,
			     const struct gp_attention_shape *s);

#endif
