/* The compute backend interface: device buffers and the handful of ops an MLP
 * needs, with two implementations (CPU: cblas + C loops; OpenCL: CLBlast +
 * the project's own .cl kernels). Both give the same results within float
 * tolerance.
 *
 * Conventions:
 * - Matrices are row-major and dense; a buffer holds whole tensors, so no op
 *   takes an offset (parameters are one buffer per named tensor).
 * - Ops are enqueued in order on the backend's single queue; gp_buf_read() and
 *   gp_backend_finish() wait for everything enqueued before them.
 * - Every function returns >= 0 on success or a negative errno: -EINVAL for
 *   shape/type mismatches, -ENOMEM, -ENODEV for a missing device, -EIO for a
 *   device failure. Foreign codes (OpenCL, CLBlast) never pass through raw;
 *   gp_backend_error() holds the detailed text of the last failure (for
 *   example an OpenCL kernel build log).
 * - A backend and its buffers belong to one thread at a time. */
#ifndef GP_BACKEND_H
#define GP_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gp_backend_type {
	GP_BACKEND_CPU = 0,
	GP_BACKEND_OPENCL = 1,
};

enum gp_dtype {
	GP_F32 = 0, /* IEEE float, the only type of parameters and activations */
	GP_I32 = 1, /* int32 labels and argmax results */
};

/* What a device is, as enumerated and as reported to the coordinator. */
struct gp_device_info {
	enum gp_backend_type type;
	int index;            /* opencl: index in gp_backend_list_devices() order */
	char kind[16];        /* "cpu", "gpu", "accelerator", "other" */
	char name[128];
	char vendor[128];
	char platform[128];   /* OpenCL platform name; "cblas" for the CPU path */
	char driver[64];      /* driver / BLAS version */
	uint64_t global_mem;  /* bytes */
	unsigned compute_units;
};

struct gp_backend;
struct gp_buf;

/* Lists every OpenCL device of every platform (in a stable order: platform
 * by platform, device by device), preceded by the CPU path as entry 0.
 * *ret_list is returned-and-owned-by-caller (free()); no OpenCL platform is
 * not an error (only the CPU entry is listed). */
int gp_backend_list_devices(struct gp_device_info **ret_list, size_t *ret_n);

/* Creates the CPU backend. threads <= 0 means the BLAS default. */
int gp_backend_create_cpu(int threads, struct gp_backend **ret);

/* Creates an OpenCL backend on the device with this opencl index (the
 * device_index-th OpenCL device in gp_backend_list_devices() order, counting
 * from 0 and not counting the CPU entry): one context, one in-order queue,
 * CLBlast for GEMM, and the embedded .cl kernels built once. -ENODEV when
 * there is no such device or the build has no OpenCL support. */
int gp_backend_create_opencl(int device_index, struct gp_backend **ret);

/* The detailed text of the last failed gp_backend_create_*() on this thread
 * ("" if none), for example the OpenCL kernel build log: a failed create
 * leaves no backend to ask gp_backend_error(). Borrowed; valid until the
 * next create on this thread. */
const char *gp_backend_create_error(void);

/* Destroys a backend; NULL is a no-op. All its buffers must be destroyed
 * first. */
void gp_backend_destroy(struct gp_backend *be);

/* Borrowed; valid as long as be. */
const struct gp_device_info *gp_backend_info(const struct gp_backend *be);

/* The detailed text of the last failure on this backend ("" if none).
 * Borrowed; valid until the next call on be. */
const char *gp_backend_error(const struct gp_backend *be);

/* Waits until every enqueued op has completed. */
int gp_backend_finish(struct gp_backend *be);

/* Buffers of n elements of type dt, zero-filled. */
int gp_buf_create(struct gp_backend *be, enum gp_dtype dt, size_t n,
		  struct gp_buf **ret);
void gp_buf_destroy(struct gp_buf *b);
size_t gp_buf_len(const struct gp_buf *b);
enum gp_dtype gp_buf_dtype(const struct gp_buf *b);
/* Copies n elements from host memory src (borrowed) to elements
 * [off, off + n) of b, or back. -EINVAL if the range exceeds the buffer. */
int gp_buf_write(struct gp_buf *b, size_t off, const void *src, size_t n);
int gp_buf_read(const struct gp_buf *b, size_t off, void *dst, size_t n);
/* dst[0..n) = src[0..n); same backend, same type. */
int gp_buf_copy(struct gp_buf *dst, const struct gp_buf *src, size_t n);

/* C = alpha * op(A) * op(B) + beta * C, where op(A) is m x k, op(B) is
 * k x n and C is m x n, all row-major (A is k x m when trans_a). */
int gp_gemm(struct gp_backend *be, bool trans_a, bool trans_b, size_t m,
	    size_t n, size_t k, float alpha, const struct gp_buf *a,
	    const struct gp_buf *b, float beta, struct gp_buf *c);

/* x[r][c] += bias[c] for an x of rows x cols; with relu, then
 * x = max(x, 0) (the fused dense + ReLU epilogue). */
int gp_bias_add(struct gp_backend *be, struct gp_buf *x,
		const struct gp_buf *bias, size_t rows, size_t cols, bool relu);

/* out[c] = beta * out[c] + sum_r x[r][c] (the bias gradient). beta == 0
 * ignores what out held, as BLAS does for gemm's C. */
int gp_col_sum(struct gp_backend *be, const struct gp_buf *x, size_t rows,
	       size_t cols, float beta, struct gp_buf *out);

/* y = max(x, 0) over n elements; y may be x. */
int gp_relu_forward(struct gp_backend *be, const struct gp_buf *x,
		    struct gp_buf *y, size_t n);
/* dx = dy where y > 0, else 0; dx may be dy. */
int gp_relu_backward(struct gp_backend *be, const struct gp_buf *y,
		     const struct gp_buf *dy, struct gp_buf *dx, size_t n);

/* Softmax cross-entropy over rows x cols logits and rows int32 labels.
 * *ret_loss = mean loss over rows; dlogits (may be NULL, may be logits) =
 * (softmax - onehot) / rows; *ret_correct (may be NULL) = rows whose argmax
 * equals the label. A label outside [0, cols) is -EINVAL; ret_loss and
 * ret_correct are then not written and dlogits is unspecified. */
int gp_softmax_xent(struct gp_backend *be, struct gp_buf *logits,
		    const struct gp_buf *labels, size_t rows, size_t cols,
		    struct gp_buf *dlogits, double *ret_loss,
		    size_t *ret_correct);

/* out[r] = argmax_c x[r][c] (int32 buffer). */
int gp_argmax(struct gp_backend *be, const struct gp_buf *x, size_t rows,
	      size_t cols, struct gp_buf *out);

/* y = alpha * x + y over n elements. */
int gp_axpy(struct gp_backend *be, size_t n, float alpha,
	    const struct gp_buf *x, struct gp_buf *y);
/* x = alpha * x over n elements. */
int gp_scale(struct gp_backend *be, size_t n, float alpha, struct gp_buf *x);
/* *ret = sum of x[i]^2 over n elements, accumulated in double. */
int gp_sumsq(struct gp_backend *be, const struct gp_buf *x, size_t n,
	     double *ret);
/* SGD with momentum, in place: v = mu * v + g; p -= lr * v. */
int gp_sgd_momentum(struct gp_backend *be, size_t n, float lr, float mu,
		    const struct gp_buf *g, struct gp_buf *v, struct gp_buf *p);

/* The layer ops beyond the MLP's (conv nets now, transformers later). A
 * backend may lack some of them: gp_backend_has() says which it has, and a
 * missing one returns -ENOTSUP with the op's name in gp_backend_error(). */
enum gp_backend_feature {
	GP_FEATURE_CONV2D = 0,    /* gp_conv2d_forward / _backward */
	GP_FEATURE_POOL2D = 1,    /* gp_pool2d_forward / _backward */
	GP_FEATURE_GELU = 2,      /* gp_gelu_forward / _backward */
	GP_FEATURE_MUL = 3,       /* gp_mul */
	GP_FEATURE_LAYERNORM = 4, /* gp_layernorm_forward / _backward */
	GP_FEATURE_MSE = 5,       /* gp_mse */
	GP_FEATURE_EMBEDDING = 6, /* gp_embedding_forward / _backward */
	GP_FEATURE_ATTENTION = 7, /* gp_attention_forward / _backward */
	GP_FEATURE_GROUPNORM = 8, /* gp_groupnorm_forward / _backward */
};

bool gp_backend_has(const struct gp_backend *be, enum gp_backend_feature f);

/* A 2-D convolution over a batch in NCHW layout: x is n x c x h x w, the
 * weight oc x (c * kh * kw) (PyTorch's oc, c, kh, kw flattened), the bias
 * oc, y n x oc x oh x ow with oh = (h + 2 pad - kh) / stride + 1 (the
 * caller fills oh and ow; they are checked). Zero padding. */
struct gp_conv2d_shape {
	size_t n, c, h, w;
	size_t oc, kh, kw, stride, pad;
	size_t oh, ow;
};

/* y = conv(x, weight) + bias. */
int gp_conv2d_forward(struct gp_backend *be, const struct gp_buf *x,
		      const struct gp_buf *weight, const struct gp_buf *bias,
		      struct gp_buf *y, const struct gp_conv2d_shape *s);

/* From dy (n x oc x oh x ow): dweight = beta * dweight + dL/dweight and
 * dbias likewise (beta == 0 ignores what they held), and dx = dL/dx
 * (overwritten; dx may be NULL when the input needs no gradient). */
int gp_conv2d_backward(struct gp_backend *be, const struct gp_buf *x,
		       const struct gp_buf *weight, const struct gp_buf *dy,
		       struct gp_buf *dx, struct gp_buf *dweight,
		       struct gp_buf *dbias, float beta,
		       const struct gp_conv2d_shape *s);

/* Max or average pooling over k x k windows with a stride, no padding:
 * x n x c x h x w, y n x c x oh x ow, oh = (h - k) / stride + 1. */
struct gp_pool2d_shape {
	size_t n, c, h, w;
	size_t k, stride;
	size_t oh, ow;
};

/* y = pool(x); for max pooling, idx (int32, as long as y) records which
 * input element of its window each output took (the first maximum), for
 * the backward pass; for average pooling idx is unused and may be NULL. */
int gp_pool2d_forward(struct gp_backend *be, bool max, const struct gp_buf *x,
		      struct gp_buf *y, struct gp_buf *idx,
		      const struct gp_pool2d_shape *s);

/* dx = dL/dx from dy (dx overwritten). */
int gp_pool2d_backward(struct gp_backend *be, bool max,
		       const struct gp_buf *dy, const struct gp_buf *idx,
		       struct gp_buf *dx, const struct gp_pool2d_shape *s);

/* GELU with the exact erf form (PyTorch's nn.GELU() default):
 * y = x * Phi(x); backward dx = dy * (Phi(x) + x * phi(x)). dx may be dy. */
int gp_gelu_forward(struct gp_backend *be, const struct gp_buf *x,
		    struct gp_buf *y, size_t n);
int gp_gelu_backward(struct gp_backend *be, const struct gp_buf *x,
		     const struct gp_buf *dy, struct gp_buf *dx, size_t n);

/* y = a * b elementwise over n elements; y may be a or b. */
int gp_mul(struct gp_backend *be, const struct gp_buf *a,
	   const struct gp_buf *b, struct gp_buf *y, size_t n);

/* Layer normalisation of each of rows rows of cols elements:
 * y = (x - mean) / sqrt(var + eps) * gamma + beta_p (biased variance, as
 * PyTorch). stats (2 * rows floats) keeps each row's mean and 1 / std for
 * the backward pass. */
int gp_layernorm_forward(struct gp_backend *be, const struct gp_buf *x,
			 const struct gp_buf *gamma,
			 const struct gp_buf *beta_p, struct gp_buf *y,
			 struct gp_buf *stats, size_t rows, size_t cols,
			 float eps);

/* dx = dL/dx (overwritten; may be NULL), dgamma = beta * dgamma +
 * dL/dgamma, dbeta_p likewise. */
int gp_layernorm_backward(struct gp_backend *be, const struct gp_buf *x,
			  const struct gp_buf *gamma,
			  const struct gp_buf *stats, const struct gp_buf *dy,
			  struct gp_buf *dx, struct gp_buf *dgamma,
			  struct gp_buf *dbeta_p, float beta, size_t rows,
			  size_t cols);

/* Group normalisation (nn.GroupNorm(groups, c, eps)) of n samples of
 * c x hw values (NCHW with the plane flattened): the c channels fall into
 * groups groups of c / groups consecutive channels, and each sample's
 * group, c / groups * hw consecutive values, is normalised by its own mean
 * and biased variance; then channel k is scaled by gamma[k] and shifted
 * by beta_p[k]. groups divides c. */
struct gp_groupnorm_shape {
	size_t n, c, hw, groups;
};

/* y = groupnorm(x) (y must not be x); stats (2 * n * groups floats) keeps
 * each group's mean and 1 / std for the backward pass. */
int gp_groupnorm_forward(struct gp_backend *be, const struct gp_buf *x,
			 const struct gp_buf *gamma,
			 const struct gp_buf *beta_p, struct gp_buf *y,
			 struct gp_buf *stats,
			 const struct gp_groupnorm_shape *s, float eps);

/* dx = dL/dx (overwritten; may be NULL), dgamma = beta * dgamma +
 * dL/dgamma, dbeta_p likewise (beta == 0 ignores what they held). */
int gp_groupnorm_backward(struct gp_backend *be, const struct gp_buf *x,
			  const struct gp_buf *gamma,
			  const struct gp_buf *stats, const struct gp_buf *dy,
			  struct gp_buf *dx, struct gp_buf *dgamma,
			  struct gp_buf *dbeta_p, float beta,
			  const struct gp_groupnorm_shape *s);

/* Mean squared error over rows x cols predictions and targets, averaged
 * over every element (PyTorch's MSELoss() default): *ret_loss, and dpred
 * (may be NULL) = 2 (pred - target) / (rows * cols). */
int gp_mse(struct gp_backend *be, const struct gp_buf *pred,
	   const struct gp_buf *target, size_t rows, size_t cols,
	   struct gp_buf *dpred, double *ret_loss);

/* Token embedding (nn.Embedding): tokens holds rows token ids stored as
 * floats (whole numbers, exact up to 2^24), weight is vocab x dim, and
 * y[r] = weight[tokens[r]] (rows x dim). An id that is not a whole number
 * in [0, vocab) is -EINVAL, with the row in gp_backend_error(); y is then
 * unspecified. */
int gp_embedding_forward(struct gp_backend *be, const struct gp_buf *tokens,
			 const struct gp_buf *weight, struct gp_buf *y,
			 size_t rows, size_t vocab, size_t dim);

/* dweight = beta * dweight + dL/dweight: row tokens[r] of the gradient
 * gains dy[r] (dy rows x dim). beta == 0 ignores what dweight held. The
 * ids are those the forward pass checked. */
int gp_embedding_backward(struct gp_backend *be, const struct gp_buf *tokens,
			  const struct gp_buf *dy, struct gp_buf *dweight,
			  float beta, size_t rows, size_t vocab, size_t dim);

/* Causal multi-head self-attention without its projections, as
 * torch.nn.functional.scaled_dot_product_attention(q, k, v,
 * is_causal=True) over heads: x is n x t x (3 dim), each position's q, k
 * and v side by side (the output of one nn.Linear(dim, 3 dim), split as
 * x.split(dim, dim=2)), each of them heads blocks of dim / heads; y is
 * n x t x dim with the heads side by side. Position i attends to
 * positions 0..i with weights softmax(q k^T / sqrt(dim / heads)). */
struct gp_attention_shape {
	size_t n, t, heads, dim;
};

/* y = attention(x); probs (n x heads x t x t floats) keeps the attention
 * weights for the backward pass (zero above the diagonal). */
int gp_attention_forward(struct gp_backend *be, const struct gp_buf *x,
			 struct gp_buf *y, struct gp_buf *probs,
			 const struct gp_attention_shape *s);

/* dx = dL/dx (overwritten, n x t x 3 dim) from dy (n x t x dim), with
 * the probs of the forward pass over the same x; scratch holds t x t
 * floats. */
int gp_attention_backward(struct gp_backend *be, const struct gp_buf *x,
			  const struct gp_buf *probs, const struct gp_buf *dy,
			  struct gp_buf *dx, struct gp_buf *scratch,
			  const struct gp_attention_shape *s);

/* The name of an OpenCL status code ("CL_OUT_OF_RESOURCES"), or
 * "CL_UNKNOWN_ERROR"; and its mapping to a negative errno. Exposed for the
 * OpenCL backend and its tests. */
const char *gp_cl_status_name(int status);
int gp_cl_status_errno(int status);

#endif
