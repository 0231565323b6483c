/* Private to kernels/: the table each backend implementation fills in.
 * backend.c checks arguments (types, lengths, same backend) once, then calls
 * through this table, so implementations may assume valid shapes. */
#ifndef GP_BACKEND_IMPL_H
#define GP_BACKEND_IMPL_H

#include "backend.h"

#include <stdio.h>

struct gp_buf {
	struct gp_backend *be;
	enum gp_dtype dtype;
	size_t n;
	void *impl; /* host pointer (CPU) or cl_mem (OpenCL) */
};

/* buf_alloc sets b->impl to zero-filled storage for b->n elements of
 * b->dtype; buf_free releases it (not b itself). Byte offsets and sizes are
 * already checked against the buffer. */
struct gp_backend_ops {
	void (*destroy)(struct gp_backend *be);
	int (*finish)(struct gp_backend *be);
	int (*buf_alloc)(struct gp_backend *be, struct gp_buf *b);
	void (*buf_free)(struct gp_buf *b);
	int (*buf_write)(struct gp_buf *b, const void *src, size_t bytes_off,
			 size_t bytes);
	int (*buf_read)(const struct gp_buf *b, void *dst, size_t bytes_off,
			size_t bytes);
	int (*buf_copy)(struct gp_buf *dst, const struct gp_buf *src,
			size_t bytes);
	int (*gemm)(struct gp_backend *be, bool ta, bool tb, size_t m,
		    size_t n, size_t k, float alpha, const struct gp_buf *a,
		    const struct gp_buf *b, float beta, struct gp_buf *c);
	int (*bias_add)(struct gp_backend *be, struct gp_buf *x,
			const struct gp_buf *bias, size_t rows, size_t cols,
			bool relu);
	int (*col_sum)(struct gp_backend *be, const struct gp_buf *x,
		       size_t rows, size_t cols, float beta,
		       struct gp_buf *out);
	int (*relu_forward)(struct gp_backend *be, const struct gp_buf *x,
			    struct gp_buf *y, size_t n);
	int (*relu_backward)(struct gp_backend *be, const struct gp_buf *y,
			     const struct gp_buf *dy, struct gp_buf *dx,
			     size_t n);
	int (*softmax_xent)(struct gp_backend *be, struct gp_buf *logits,
			    const struct gp_buf *labels, size_t rows,
			    size_t cols, struct gp_buf *dlogits,
			    double *ret_loss, size_t *ret_correct);
	int (*argmax)(struct gp_backend *be, const struct gp_buf *x,
		      size_t rows, size_t cols, struct gp_buf *out);
	int (*axpy)(struct gp_backend *be, size_t n, float alpha,
		    const struct gp_buf *x, struct gp_buf *y);
	int (*scale)(struct gp_backend *be, size_t n, float alpha,
		     struct gp_buf *x);
	int (*sumsq)(struct gp_backend *be, const struct gp_buf *x, size_t n,
		     double *ret);
	int (*sgd_momentum)(struct gp_backend *be, size_t n, float lr,
			    float mu, const struct gp_buf *g, struct gp_buf *v,
			    struct gp_buf *p);
	/* The layer ops: NULL where a backend lacks them. */
	int (*conv2d_forward)(struct gp_backend *be, const struct gp_buf *x,
			      const struct gp_buf *w, const struct gp_buf *b,
			      struct gp_buf *y,
			      const struct gp_conv2d_shape *s);
	int (*conv2d_backward)(struct gp_backend *be, const struct gp_buf *x,
			       const struct gp_buf *w, const struct gp_buf *dy,
			       struct gp_buf *dx, struct gp_buf *dw,
			       struct gp_buf *db, float beta,
			       const struct gp_conv2d_shape *s);
	int (*pool2d_forward)(struct gp_backend *be, bool max,
			      const struct gp_buf *x, struct gp_buf *y,
			      struct gp_buf *idx,
			      const struct gp_pool2d_shape *s);
	int (*pool2d_backward)(struct gp_backend *be, bool max,
			       const struct gp_buf *dy,
			       const struct gp_buf *idx, struct gp_buf *dx,
			       const struct gp_pool2d_shape *s);
	int (*gelu_forward)(struct gp_backend *be, const struct gp_buf *x,
			    struct gp_buf *y, size_t n);
	int (*gelu_backward)(struct gp_backend *be, const struct gp_buf *x,
			     const struct gp_buf *dy, struct gp_buf *dx,
			     size_t n);
	int (*mul)(struct gp_backend *be, const struct gp_buf *a,
		   const struct gp_buf *b, struct gp_buf *y, size_t n);
	int (*layernorm_forward)(struct gp_backend *be, const struct gp_buf *x,
				 const struct gp_buf *gamma,
				 const struct gp_buf *beta_p, struct gp_buf *y,
				 struct gp_buf *stats, size_t rows,
				 size_t cols, float eps);
	int (*layernorm_backward)(struct gp_backend *be,
				  const struct gp_buf *x,
				  const struct gp_buf *gamma,
				  const struct gp_buf *stats,
				  const struct gp_buf *dy, struct gp_buf *dx,
				  struct gp_buf *dgamma, struct gp_buf *dbeta_p,
				  float beta, size_t rows, size_t cols);
	int (*groupnorm_forward)(struct gp_backend *be, const struct gp_buf *x,
				 const struct gp_buf *gamma,
				 const struct gp_buf *beta_p, struct gp_buf *y,
				 struct gp_buf *stats,
				 const struct gp_groupnorm_shape *s,
				 float eps);
	int (*groupnorm_backward)(struct gp_backend *be,
				  const struct gp_buf *x,
				  const struct gp_buf *gamma,
				  const struct gp_buf *stats,
				  const struct gp_buf *dy, struct gp_buf *dx,
				  struct gp_buf *dgamma, struct gp_buf *dbeta_p,
				  float beta,
				  const struct gp_groupnorm_shape *s);
	int (*mse)(struct gp_backend *be, const struct gp_buf *pred,
		   const struct gp_buf *target, size_t rows, size_t cols,
		   struct gp_buf *dpred, double *ret_loss);
	int (*embedding_forward)(struct gp_backend *be,
				 const struct gp_buf *tokens,
				 const struct gp_buf *weight, struct gp_buf *y,
				 size_t rows, size_t vocab, size_t dim);
	int (*embedding_backward)(struct gp_backend *be,
				  const struct gp_buf *tokens,
				  const struct gp_buf *dy,
				  struct gp_buf *dweight, float beta,
				  size_t rows, size_t vocab, size_t dim);
	int (*attention_forward)(struct gp_backend *be, const struct gp_buf *x,
				 struct gp_buf *y, struct gp_buf *probs,
				 const struct gp_attention_shape *s);
	int (*attention_backward)(struct gp_backend *be,
				  const struct gp_buf *x,
				  const struct gp_buf *probs,
				  const struct gp_buf *dy, struct gp_buf *dx,
				  struct gp_buf *scratch,
				  const struct gp_attention_shape *s);
};

struct gp_backend {
	const struct gp_backend_ops *ops;
	struct gp_device_info info;
	char error[4096]; /* gp_backend_error() */
	void *impl;
};

/* Records the detailed text of a failure for gp_backend_error(). */
void gp_backend_set_error(struct gp_backend *be, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Records the text for gp_backend_create_error(); for an implementation's
 * create function, which fails before the caller has a backend. */
void gp_backend_set_create_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

/* Implemented by the OpenCL backend (kernels/opencl.c), or by a stub when the
 * build has no OpenCL: appends every OpenCL device to *list. */
int gp_opencl_list_devices(struct gp_device_info **list, size_t *n);
int gp_opencl_create(int device_index, struct gp_backend **ret);
int gp_cpu_create(int threads, struct gp_backend **ret);

/* The CPU backend's transformer ops (kernels/attn.c), for its ops table;
 * arguments as backend.c checked them. */
int gp_cpu_embedding_forward(struct gp_backend *be,
			     const struct gp_buf *tokens,
			     const struct gp_buf *weight, struct gp_buf *y,
			     size_t rows, size_t vocab, size_t dim);
int gp_cpu_embedding_backward(struct gp_backend *be,
			      const struct gp_buf *tokens,
			      const struct gp_buf *dy, struct gp_buf *dweight,
			      float beta, size_t rows, size_t vocab,
			      size_t dim);
int gp_cpu_attention_forward(struct gp_backend *be, const struct gp_buf *x,
			     struct gp_buf *y, struct gp_buf *probs,
			     const struct gp_attention_shape *s);
int gp_cpu_attention_backward(struct gp_backend *be, const struct gp_buf *x,
			      const struct gp_buf *probs,
			      const struct gp_buf *dy, struct gp_buf *dx,
			      struct gp_buf *scratch,
			      const struct gp_attention_shape *s);

/* Fills info with the CPU path as gp_backend_list_devices() lists it (entry
 * 0): kind "cpu", the model name from /proc/cpuinfo, platform "cblas", the
 * BLAS version, online CPUs and physical memory. In backend.c, so that the
 * list and the CPU backend's gp_backend_info() agree. */
void gp_cpu_fill_info(struct gp_device_info *info);

#endif
