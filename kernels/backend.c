/* The generic layer of the compute backend: every public function checks its
 * arguments here, once (NULL pointers, element types, buffer lengths against
 * the shapes, all buffers on the same backend), then calls through the
 * backend's ops table, so that neither implementation repeats the checks and
 * both reject the same mistakes with the same -EINVAL. */
#include "backend-impl.h"

#include <cblas.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void gp_backend_set_error(struct gp_backend *be, const char *fmt, ...)
{
	va_list ap;

	if (!be)
		return;
	va_start(ap, fmt);
	vsnprintf(be->error, sizeof(be->error), fmt, ap);
	va_end(ap);
}

/* Per thread, as a backend belongs to one thread at a time. */
static _Thread_local char create_error[4096];

void gp_backend_set_create_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(create_error, sizeof(create_error), fmt, ap);
	va_end(ap);
}

const char *gp_backend_create_error(void)
{
	return create_error;
}

/* Records the text and returns -EINVAL, for the argument checks below. */
static int einval(struct gp_backend *be, const char *what, const char *why)
{
	gp_backend_set_error(be, "%s: %s", what, why);
	return -EINVAL;
}

static size_t dtype_size(enum gp_dtype dt)
{
	switch (dt) {
	case GP_F32:
		return sizeof(float);
	case GP_I32:
		return sizeof(int32_t);
	}
	return 0;
}

/* Copies the value of a "key : value" line of /proc/cpuinfo into out, with
 * surrounding blanks removed. Leaves out untouched when there is none. */
static void cpuinfo_field(const char *key, char *out, size_t size)
{
	char line[512];
	size_t klen = strlen(key);
	FILE *f = fopen("/proc/cpuinfo", "re");

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *v;
		size_t len;

		if (strncmp(line, key, klen) != 0 ||
		    (line[klen] != ' ' && line[klen] != '\t' &&
		     line[klen] != ':'))
			continue;
		v = strchr(line, ':');
		if (!v)
			continue;
		v++;
		while (*v == ' ' || *v == '\t')
			v++;
		len = strcspn(v, "\r\n");
		while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
			len--;
		if (len == 0)
			continue;
		if (len >= size)
			len = size - 1;
		memcpy(out, v, len);
		out[len] = '\0';
		break;
	}
	fclose(f);
}

void gp_cpu_fill_info(struct gp_device_info *info)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	long pages = sysconf(_SC_PHYS_PAGES);
	long page_size = sysconf(_SC_PAGESIZE);

	memset(info, 0, sizeof(*info));
	info->type = GP_BACKEND_CPU;
	info->index = 0;
	snprintf(info->kind, sizeof(info->kind), "cpu");
	snprintf(info->name, sizeof(info->name), "cpu");
	cpuinfo_field("model name", info->name, sizeof(info->name));
	snprintf(info->vendor, sizeof(info->vendor), "unknown");
	cpuinfo_field("vendor_id", info->vendor, sizeof(info->vendor));
	snprintf(info->platform, sizeof(info->platform), "cblas");
#ifdef OPENBLAS_VERSION
	{
		/* OPENBLAS_VERSION is " OpenBLAS 0.3.21 ", blanks included. */
		const char *v = OPENBLAS_VERSION;
		size_t len;

		while (*v == ' ')
			v++;
		len = strlen(v);
		while (len > 0 && v[len - 1] == ' ')
			len--;
		snprintf(info->driver, sizeof(info->driver), "%.*s", (int)len,
			 v);
	}
#else
	snprintf(info->driver, sizeof(info->driver), "cblas");
#endif
	info->compute_units = ncpu > 0 ? (unsigned)ncpu : 1;
	if (pages > 0 && page_size > 0)
		info->global_mem = (uint64_t)pages * (uint64_t)page_size;
}

int gp_backend_list_devices(struct gp_device_info **ret_list, size_t *ret_n)
{
	struct gp_device_info *list;
	size_t n = 1;
	int r;

	if (!ret_list || !ret_n)
		return -EINVAL;
	list = calloc(1, sizeof(*list));
	if (!list)
		return -ENOMEM;
	gp_cpu_fill_info(&list[0]);
	r = gp_opencl_list_devices(&list, &n);
	if (r < 0) {
		free(list);
		return r;
	}
	*ret_list = list;
	*ret_n = n;
	return 0;
}

int gp_backend_create_cpu(int threads, struct gp_backend **ret)
{
	create_error[0] = '\0';
	if (!ret)
		return -EINVAL;
	return gp_cpu_create(threads, ret);
}

int gp_backend_create_opencl(int device_index, struct gp_backend **ret)
{
	create_error[0] = '\0';
	if (!ret || device_index < 0)
		return -EINVAL;
	return gp_opencl_create(device_index, ret);
}

void gp_backend_destroy(struct gp_backend *be)
{
	if (!be)
		return;
	be->ops->destroy(be);
}

const struct gp_device_info *gp_backend_info(const struct gp_backend *be)
{
	return be ? &be->info : NULL;
}

const char *gp_backend_error(const struct gp_backend *be)
{
	return be ? be->error : "";
}

int gp_backend_finish(struct gp_backend *be)
{
	if (!be)
		return -EINVAL;
	return be->ops->finish(be);
}

int gp_buf_create(struct gp_backend *be, enum gp_dtype dt, size_t n,
		  struct gp_buf **ret)
{
	struct gp_buf *b;
	size_t esize = dtype_size(dt), bytes;
	int r;

	if (!be || !ret)
		return -EINVAL;
	if (esize == 0)
		return einval(be, "gp_buf_create", "unknown dtype");
	if (n == 0 || __builtin_mul_overflow(n, esize, &bytes))
		return einval(be, "gp_buf_create", "bad length");
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->be = be;
	b->dtype = dt;
	b->n = n;
	r = be->ops->buf_alloc(be, b);
	if (r < 0) {
		free(b);
		return r;
	}
	*ret = b;
	return 0;
}

void gp_buf_destroy(struct gp_buf *b)
{
	if (!b)
		return;
	b->be->ops->buf_free(b);
	free(b);
}

size_t gp_buf_len(const struct gp_buf *b)
{
	return b ? b->n : 0;
}

enum gp_dtype gp_buf_dtype(const struct gp_buf *b)
{
	return b ? b->dtype : GP_F32;
}

/* Whether [off, off + n) lies inside b. */
static bool in_range(const struct gp_buf *b, size_t off, size_t n)
{
	return off <= b->n && n <= b->n - off;
}

int gp_buf_write(struct gp_buf *b, size_t off, const void *src, size_t n)
{
	size_t esize;

	if (!b)
		return -EINVAL;
	if (!src && n > 0)
		return einval(b->be, "gp_buf_write", "NULL source");
	if (!in_range(b, off, n))
		return einval(b->be, "gp_buf_write", "range exceeds buffer");
	if (n == 0)
		return 0;
	esize = dtype_size(b->dtype);
	return b->be->ops->buf_write(b, src, off * esize, n * esize);
}

int gp_buf_read(const struct gp_buf *b, size_t off, void *dst, size_t n)
{
	size_t esize;

	if (!b)
		return -EINVAL;
	if (!dst && n > 0)
		return einval(b->be, "gp_buf_read", "NULL destination");
	if (!in_range(b, off, n))
		return einval(b->be, "gp_buf_read", "range exceeds buffer");
	if (n == 0)
		return 0;
	esize = dtype_size(b->dtype);
	return b->be->ops->buf_read(b, dst, off * esize, n * esize);
}

int gp_buf_copy(struct gp_buf *dst, const struct gp_buf *src, size_t n)
{
	if (!dst || !src)
		return -EINVAL;
	if (dst->be != src->be)
		return einval(dst->be, "gp_buf_copy", "different backends");
	if (dst->dtype != src->dtype)
		return einval(dst->be, "gp_buf_copy", "different dtypes");
	if (n > dst->n || n > src->n)
		return einval(dst->be, "gp_buf_copy", "length exceeds buffer");
	if (n == 0)
		return 0;
	return dst->be->ops->buf_copy(dst, src, n * dtype_size(dst->dtype));
}

/* Checks that buffer b (may not be NULL) is on be, has type dt and holds at
 * least rows * cols elements. Records why not in be's error. */
static int check_buf(struct gp_backend *be, const char *what,
		     const char *name, const struct gp_buf *b,
		     enum gp_dtype dt, size_t rows, size_t cols)
{
	size_t need;

	if (!b) {
		gp_backend_set_error(be, "%s: %s is NULL", what, name);
		return -EINVAL;
	}
	if (b->be != be) {
		gp_backend_set_error(be, "%s: %s is on another backend", what,
				     name);
		return -EINVAL;
	}
	if (b->dtype != dt) {
		gp_backend_set_error(be, "%s: %s has the wrong dtype", what,
				     name);
		return -EINVAL;
	}
	if (__builtin_mul_overflow(rows, cols, &need) || need > b->n) {
		gp_backend_set_error(be,
				     "%s: %s holds %zu elements, needs %zu x %zu",
				     what, name, b->n, rows, cols);
		return -EINVAL;
	}
	return 0;
}

/* Matrix ops need non-empty shapes: an empty matrix is a caller's bug, and
 * OpenCL cannot enqueue an empty range. */
static int check_dims(struct gp_backend *be, const char *what, size_t rows,
		      size_t cols)
{
	if (rows == 0 || cols == 0)
		return einval(be, what, "empty shape");
	if (rows > INT32_MAX || cols > INT32_MAX)
		return einval(be, what, "dimension too large");
	return 0;
}

int gp_gemm(struct gp_backend *be, bool trans_a, bool trans_b, size_t m,
	    size_t n, size_t k, float alpha, const struct gp_buf *a,
	    const struct gp_buf *b, float beta, struct gp_buf *c)
{
	static const char what[] = "gp_gemm";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_dims(be, what, m, n)) < 0 ||
	    (r = check_dims(be, what, k, 1)) < 0 ||
	    (r = check_buf(be, what, "a", a, GP_F32, m, k)) < 0 ||
	    (r = check_buf(be, what, "b", b, GP_F32, k, n)) < 0 ||
	    (r = check_buf(be, what, "c", c, GP_F32, m, n)) < 0)
		return r;
	if (c == a || c == b)
		return einval(be, what, "c aliases an input");
	return be->ops->gemm(be, trans_a, trans_b, m, n, k, alpha, a, b, beta,
			     c);
}

int gp_bias_add(struct gp_backend *be, struct gp_buf *x,
		const struct gp_buf *bias, size_t rows, size_t cols, bool relu)
{
	static const char what[] = "gp_bias_add";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_dims(be, what, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "x", x, GP_F32, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "bias", bias, GP_F32, 1, cols)) < 0)
		return r;
	return be->ops->bias_add(be, x, bias, rows, cols, relu);
}

int gp_col_sum(struct gp_backend *be, const struct gp_buf *x, size_t rows,
	       size_t cols, float beta, struct gp_buf *out)
{
	static const char what[] = "gp_col_sum";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_dims(be, what, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "x", x, GP_F32, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "out", out, GP_F32, 1, cols)) < 0)
		return r;
	if (out == x)
		return einval(be, what, "out aliases x");
	return be->ops->col_sum(be, x, rows, cols, beta, out);
}

int gp_relu_forward(struct gp_backend *be, const struct gp_buf *x,
		    struct gp_buf *y, size_t n)
{
	static const char what[] = "gp_relu_forward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_buf(be, what, "x", x, GP_F32, 1, n)) < 0 ||
	    (r = check_buf(be, what, "y", y, GP_F32, 1, n)) < 0)
		return r;
	if (n == 0)
		return 0;
	return be->ops->relu_forward(be, x, y, n);
}

int gp_relu_backward(struct gp_backend *be, const struct gp_buf *y,
		     const struct gp_buf *dy, struct gp_buf *dx, size_t n)
{
	static const char what[] = "gp_relu_backward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_buf(be, what, "y", y, GP_F32, 1, n)) < 0 ||
	    (r = check_buf(be, what, "dy", dy, GP_F32, 1, n)) < 0 ||
	    (r = check_buf(be, what, "dx", dx, GP_F32, 1, n)) < 0)
		return r;
	if (n == 0)
		return 0;
	return be->ops->relu_backward(be, y, dy, dx, n);
}

int gp_softmax_xent(struct gp_backend *be, struct gp_buf *logits,
		    const struct gp_buf *labels, size_t rows, size_t cols,
		    struct gp_buf *dlogits, double *ret_loss,
		    size_t *ret_correct)
{
	static const char what[] = "gp_softmax_xent";
	int r;

	if (!be)
		return -EINVAL;
	if (!ret_loss)
		return einval(be, what, "ret_loss is NULL");
	if ((r = check_dims(be, what, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "logits", logits, GP_F32, rows, cols)) <
		    0 ||
	    (r = check_buf(be, what, "labels", labels, GP_I32, rows, 1)) < 0)
		return r;
	if (dlogits &&
	    (r = check_buf(be, what, "dlogits", dlogits, GP_F32, rows, cols)) <
		    0)
		return r;
	return be->ops->softmax_xent(be, logits, labels, rows, cols, dlogits,
				     ret_loss, ret_correct);
}

int gp_argmax(struct gp_backend *be, const struct gp_buf *x, size_t rows,
	      size_t cols, struct gp_buf *out)
{
	static const char what[] = "gp_argmax";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_dims(be, what, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "x", x, GP_F32, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "out", out, GP_I32, rows, 1)) < 0)
		return r;
	return be->ops->argmax(be, x, rows, cols, out);
}

int gp_axpy(struct gp_backend *be, size_t n, float alpha,
	    const struct gp_buf *x, struct gp_buf *y)
{
	static const char what[] = "gp_axpy";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_buf(be, what, "x", x, GP_F32, 1, n)) < 0 ||
	    (r = check_buf(be, what, "y", y, GP_F32, 1, n)) < 0)
		return r;
	if (n == 0)
		return 0;
	return be->ops->axpy(be, n, alpha, x, y);
}

int gp_scale(struct gp_backend *be, size_t n, float alpha, struct gp_buf *x)
{
	static const char what[] = "gp_scale";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_buf(be, what, "x", x, GP_F32, 1, n)) < 0)
		return r;
	if (n == 0)
		return 0;
	return be->ops->scale(be, n, alpha, x);
}

int gp_sumsq(struct gp_backend *be, const struct gp_buf *x, size_t n,
	     double *ret)
{
	static const char what[] = "gp_sumsq";
	int r;

	if (!be)
		return -EINVAL;
	if (!ret)
		return einval(be, what, "ret is NULL");
	if ((r = check_buf(be, what, "x", x, GP_F32, 1, n)) < 0)
		return r;
	if (n == 0) {
		*ret = 0.0;
		return 0;
	}
	return be->ops->sumsq(be, x, n, ret);
}

int gp_sgd_momentum(struct gp_backend *be, size_t n, float lr, float mu,
		    const struct gp_buf *g, struct gp_buf *v, struct gp_buf *p)
{
	static const char what[] = "gp_sgd_momentum";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_buf(be, what, "g", g, GP_F32, 1, n)) < 0 ||
	    (r = check_buf(be, what, "v", v, GP_F32, 1, n)) < 0 ||
	    (r = check_buf(be, what, "p", p, GP_F32, 1, n)) < 0)
		return r;
	if (v == p || g == p)
		return einval(be, what, "p aliases g or v");
	if (n == 0)
		return 0;
	return be->ops->sgd_momentum(be, n, lr, mu, g, v, p);
}

bool gp_backend_has(const struct gp_backend *be, enum gp_backend_feature f)
{
	const struct gp_backend_ops *o;

	if (!be)
		return false;
	o = be->ops;
	switch (f) {
	case GP_FEATURE_CONV2D:
		return o->conv2d_forward && o->conv2d_backward;
	case GP_FEATURE_POOL2D:
		return o->pool2d_forward && o->pool2d_backward;
	case GP_FEATURE_GELU:
		return o->gelu_forward && o->gelu_backward;
	case GP_FEATURE_MUL:
		return o->mul != NULL;
	case GP_FEATURE_LAYERNORM:
		return o->layernorm_forward && o->layernorm_backward;
	case GP_FEATURE_MSE:
		return o->mse != NULL;
	case GP_FEATURE_EMBEDDING:
		return o->embedding_forward && o->embedding_backward;
	case GP_FEATURE_ATTENTION:
		return o->attention_forward && o->attention_backward;
	case GP_FEATURE_GROUPNORM:
		return o->groupnorm_forward && o->groupnorm_backward;
	}
	return false;
}

/* A layer op this backend does not implement. */
static int enotsup(struct gp_backend *be, const char *what)
{
	gp_backend_set_error(be, "%s: not implemented by the %s backend", what,
			     be->info.type == GP_BACKEND_OPENCL ? "OpenCL"
								 : "CPU");
	return -ENOTSUP;
}

static int check_conv(struct gp_backend *be, const char *what,
		      const struct gp_conv2d_shape *s)
{
	if (!s)
		return einval(be, what, "no shape");
	if (s->n == 0 || s->c == 0 || s->h == 0 || s->w == 0 || s->oc == 0 ||
	    s->kh == 0 || s->kw == 0 || s->stride == 0)
		return einval(be, what, "empty shape");
	if (s->h > 65536 || s->w > 65536 || s->c > 65536 || s->oc > 65536 ||
	    s->kh > 64 || s->kw > 64 || s->pad > 64 || s->stride > 64 ||
	    s->n > INT32_MAX)
		return einval(be, what, "dimension too large");
	if (s->h + 2 * s->pad < s->kh || s->w + 2 * s->pad < s->kw ||
	    s->oh != (s->h + 2 * s->pad - s->kh) / s->stride + 1 ||
	    s->ow != (s->w + 2 * s->pad - s->kw) / s->stride + 1)
		return einval(be, what, "output size does not match");
	return 0;
}

int gp_conv2d_forward(struct gp_backend *be, const struct gp_buf *x,
		      const struct gp_buf *weight, const struct gp_buf *bias,
		      struct gp_buf *y, const struct gp_conv2d_shape *s)
{
	static const char what[] = "gp_conv2d_forward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_conv(be, what, s)) < 0 ||
	    (r = check_buf(be, what, "x", x, GP_F32, s->n, s->c * s->h * s->w)) <
		    0 ||
	    (r = check_buf(be, what, "weight", weight, GP_F32, s->oc,
			   s->c * s->kh * s->kw)) < 0 ||
	    (r = check_buf(be, what, "bias", bias, GP_F32, s->oc, 1)) < 0 ||
	    (r = check_buf(be, what, "y", y, GP_F32, s->n,
			   s->oc * s->oh * s->ow)) < 0)
		return r;
	if (y == x)
		return einval(be, what, "y aliases x");
	if (!be->ops->conv2d_forward)
		return enotsup(be, what);
	return be->ops->conv2d_forward(be, x, weight, bias, y, s);
}

int gp_conv2d_backward(struct gp_backend *be, const struct gp_buf *x,
		       const struct gp_buf *weight, const struct gp_buf *dy,
		       struct gp_buf *dx, struct gp_buf *dweight,
		       struct gp_buf *dbias, float beta,
		       const struct gp_conv2d_shape *s)
{
	static const char what[] = "gp_conv2d_backward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_conv(be, what, s)) < 0 ||
	    (r = check_buf(be, what, "x", x, GP_F32, s->n, s->c * s->h * s->w)) <
		    0 ||
	    (r = check_buf(be, what, "weight", weight, GP_F32, s->oc,
			   s->c * s->kh * s->kw)) < 0 ||
	    (r = check_buf(be, what, "dy", dy, GP_F32, s->n,
			   s->oc * s->oh * s->ow)) < 0 ||
	    (r = check_buf(be, what, "dweight", dweight, GP_F32, s->oc,
			   s->c * s->kh * s->kw)) < 0 ||
	    (r = check_buf(be, what, "dbias", dbias, GP_F32, s->oc, 1)) < 0)
		return r;
	if (dx && (r = check_buf(be, what, "dx", dx, GP_F32, s->n,
				 s->c * s->h * s->w)) < 0)
		return r;
	if (dx == x || dx == dy || dweight == weight)
		return einval(be, what, "an output aliases an input");
	if (!be->ops->conv2d_backward)
		return enotsup(be, what);
	return be->ops->conv2d_backward(be, x, weight, dy, dx, dweight, dbias,
					beta, s);
}

static int check_pool(struct gp_backend *be, const char *what,
		      const struct gp_pool2d_shape *s)
{
	if (!s)
		return einval(be, what, "no shape");
	if (s->n == 0 || s->c == 0 || s->h == 0 || s->w == 0 || s->k == 0 ||
	    s->stride == 0)
		return einval(be, what, "empty shape");
	if (s->h > 65536 || s->w > 65536 || s->c > 65536 || s->k > 64 ||
	    s->stride > 64 || s->n > INT32_MAX)
		return einval(be, what, "dimension too large");
	if (s->h < s->k || s->w < s->k ||
	    s->oh != (s->h - s->k) / s->stride + 1 ||
	    s->ow != (s->w - s->k) / s->stride + 1)
		return einval(be, what, "output size does not match");
	return 0;
}

int gp_pool2d_forward(struct gp_backend *be, bool max, const struct gp_buf *x,
		      struct gp_buf *y, struct gp_buf *idx,
		      const struct gp_pool2d_shape *s)
{
	static const char what[] = "gp_pool2d_forward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_pool(be, what, s)) < 0 ||
	    (r = check_buf(be, what, "x", x, GP_F32, s->n * s->c, s->h * s->w)) <
		    0 ||
	    (r = check_buf(be, what, "y", y, GP_F32, s->n * s->c,
			   s->oh * s->ow)) < 0)
		return r;
	if (max && (r = check_buf(be, what, "idx", idx, GP_I32, s->n * s->c,
				  s->oh * s->ow)) < 0)
		return r;
	if (y == x)
		return einval(be, what, "y aliases x");
	if (!be->ops->pool2d_forward)
		return enotsup(be, what);
	return be->ops->pool2d_forward(be, max, x, y, idx, s);
}

int gp_pool2d_backward(struct gp_backend *be, bool max,
		       const struct gp_buf *dy, const struct gp_buf *idx,
		       struct gp_buf *dx, const struct gp_pool2d_shape *s)
{
	static const char what[] = "gp_pool2d_backward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_pool(be, what, s)) < 0 ||
	    (r = check_buf(be, what, "dy", dy, GP_F32, s->n * s->c,
			   s->oh * s->ow)) < 0 ||
	    (r = check_buf(be, what, "dx", dx, GP_F32, s->n * s->c,
			   s->h * s->w)) < 0)
		return r;
	if (max && (r = check_buf(be, what, "idx", idx, GP_I32, s->n * s->c,
				  s->oh * s->ow)) < 0)
		return r;
	if (dx == dy)
		return einval(be, what, "dx aliases dy");
	if (!be->ops->pool2d_backward)
		return enotsup(be, what);
	return be->ops->pool2d_backward(be, max, dy, idx, dx, s);
}

int gp_gelu_forward(struct gp_backend *be, const struct gp_buf *x,
		    struct gp_buf *y, size_t n)
{
	static const char what[] = "gp_gelu_forward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_buf(be, what, "x", x, GP_F32, 1, n)) < 0 ||
	    (r = check_buf(be, what, "y", y, GP_F32, 1, n)) < 0)
		return r;
	if (!be->ops->gelu_forward)
		return enotsup(be, what);
	if (n == 0)
		return 0;
	return be->ops->gelu_forward(be, x, y, n);
}

int gp_gelu_backward(struct gp_backend *be, const struct gp_buf *x,
		     const struct gp_buf *dy, struct gp_buf *dx, size_t n)
{
	static const char what[] = "gp_gelu_backward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_buf(be, what, "x", x, GP_F32, 1, n)) < 0 ||
	    (r = check_buf(be, what, "dy", dy, GP_F32, 1, n)) < 0 ||
	    (r = check_buf(be, what, "dx", dx, GP_F32, 1, n)) < 0)
		return r;
	if (dx == x)
		return einval(be, what, "dx aliases x");
	if (!be->ops->gelu_backward)
		return enotsup(be, what);
	if (n == 0)
		return 0;
	return be->ops->gelu_backward(be, x, dy, dx, n);
}

int gp_mul(struct gp_backend *be, const struct gp_buf *a,
	   const struct gp_buf *b, struct gp_buf *y, size_t n)
{
	static const char what[] = "gp_mul";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_buf(be, what, "a", a, GP_F32, 1, n)) < 0 ||
	    (r = check_buf(be, what, "b", b, GP_F32, 1, n)) < 0 ||
	    (r = check_buf(be, what, "y", y, GP_F32, 1, n)) < 0)
		return r;
	if (!be->ops->mul)
		return enotsup(be, what);
	if (n == 0)
		return 0;
	return be->ops->mul(be, a, b, y, n);
}

int gp_layernorm_forward(struct gp_backend *be, const struct gp_buf *x,
			 const struct gp_buf *gamma,
			 const struct gp_buf *beta_p, struct gp_buf *y,
			 struct gp_buf *stats, size_t rows, size_t cols,
			 float eps)
{
	static const char what[] = "gp_layernorm_forward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_dims(be, what, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "x", x, GP_F32, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "gamma", gamma, GP_F32, cols, 1)) < 0 ||
	    (r = check_buf(be, what, "beta", beta_p, GP_F32, cols, 1)) < 0 ||
	    (r = check_buf(be, what, "y", y, GP_F32, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "stats", stats, GP_F32, rows, 2)) < 0)
		return r;
	if (!(eps > 0.0f))
		return einval(be, what, "eps must be positive");
	if (y == x)
		return einval(be, what, "y aliases x");
	if (!be->ops->layernorm_forward)
		return enotsup(be, what);
	return be->ops->layernorm_forward(be, x, gamma, beta_p, y, stats, rows,
					  cols, eps);
}

int gp_layernorm_backward(struct gp_backend *be, const struct gp_buf *x,
			  const struct gp_buf *gamma,
			  const struct gp_buf *stats, const struct gp_buf *dy,
			  struct gp_buf *dx, struct gp_buf *dgamma,
			  struct gp_buf *dbeta_p, float beta, size_t rows,
			  size_t cols)
{
	static const char what[] = "gp_layernorm_backward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_dims(be, what, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "x", x, GP_F32, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "gamma", gamma, GP_F32, cols, 1)) < 0 ||
	    (r = check_buf(be, what, "stats", stats, GP_F32, rows, 2)) < 0 ||
	    (r = check_buf(be, what, "dy", dy, GP_F32, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "dgamma", dgamma, GP_F32, cols, 1)) < 0 ||
	    (r = check_buf(be, what, "dbeta", dbeta_p, GP_F32, cols, 1)) < 0)
		return r;
	if (dx && (r = check_buf(be, what, "dx", dx, GP_F32, rows, cols)) < 0)
		return r;
	if (dx == x || dx == dy || dgamma == dbeta_p)
		return einval(be, what, "an output aliases an input");
	if (!be->ops->layernorm_backward)
		return enotsup(be, what);
	return be->ops->layernorm_backward(be, x, gamma, stats, dy, dx, dgamma,
					   dbeta_p, beta, rows, cols);
}

static int check_groupnorm(struct gp_backend *be, const char *what,
			   const struct gp_groupnorm_shape *s)
{
	int r;

	if (!s)
		return einval(be, what, "no shape");
	if (s->groups == 0 || s->c % s->groups != 0)
		return einval(be, what, "groups does not divide the channels");
	if ((r = check_dims(be, what, s->n, s->c)) < 0)
		return r;
	return check_dims(be, what, s->n * s->c, s->hw);
}

int gp_groupnorm_forward(struct gp_backend *be, const struct gp_buf *x,
			 const struct gp_buf *gamma,
			 const struct gp_buf *beta_p, struct gp_buf *y,
			 struct gp_buf *stats,
			 const struct gp_groupnorm_shape *s, float eps)
{
	static const char what[] = "gp_groupnorm_forward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_groupnorm(be, what, s)) < 0 ||
	    (r = check_buf(be, what, "x", x, GP_F32, s->n * s->c, s->hw)) < 0 ||
	    (r = check_buf(be, what, "gamma", gamma, GP_F32, s->c, 1)) < 0 ||
	    (r = check_buf(be, what, "beta", beta_p, GP_F32, s->c, 1)) < 0 ||
	    (r = check_buf(be, what, "y", y, GP_F32, s->n * s->c, s->hw)) < 0 ||
	    (r = check_buf(be, what, "stats", stats, GP_F32, s->n * s->groups,
			   2)) < 0)
		return r;
	if (!(eps > 0.0f))
		return einval(be, what, "eps must be positive");
	if (y == x)
		return einval(be, what, "y aliases x");
	if (!be->ops->groupnorm_forward)
		return enotsup(be, what);
	return be->ops->groupnorm_forward(be, x, gamma, beta_p, y, stats, s,
					  eps);
}

int gp_groupnorm_backward(struct gp_backend *be, const struct gp_buf *x,
			  const struct gp_buf *gamma,
			  const struct gp_buf *stats, const struct gp_buf *dy,
			  struct gp_buf *dx, struct gp_buf *dgamma,
			  struct gp_buf *dbeta_p, float beta,
			  const struct gp_groupnorm_shape *s)
{
	static const char what[] = "gp_groupnorm_backward";
	size_t rows;
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_groupnorm(be, what, s)) < 0)
		return r;
	rows = s->n * s->c;
	if ((r = check_buf(be, what, "x", x, GP_F32, rows, s->hw)) < 0 ||
	    (r = check_buf(be, what, "gamma", gamma, GP_F32, s->c, 1)) < 0 ||
	    (r = check_buf(be, what, "stats", stats, GP_F32, s->n * s->groups,
			   2)) < 0 ||
	    (r = check_buf(be, what, "dy", dy, GP_F32, rows, s->hw)) < 0 ||
	    (r = check_buf(be, what, "dgamma", dgamma, GP_F32, s->c, 1)) < 0 ||
	    (r = check_buf(be, what, "dbeta", dbeta_p, GP_F32, s->c, 1)) < 0)
		return r;
	if (dx && (r = check_buf(be, what, "dx", dx, GP_F32, rows, s->hw)) < 0)
		return r;
	if (dx == x || dx == dy || dgamma == dbeta_p)
		return einval(be, what, "an output aliases an input");
	if (!be->ops->groupnorm_backward)
		return enotsup(be, what);
	return be->ops->groupnorm_backward(be, x, gamma, stats, dy, dx, dgamma,
					   dbeta_p, beta, s);
}

int gp_mse(struct gp_backend *be, const struct gp_buf *pred,
	   const struct gp_buf *target, size_t rows, size_t cols,
	   struct gp_buf *dpred, double *ret_loss)
{
	static const char what[] = "gp_mse";
	int r;

	if (!be)
		return -EINVAL;
	if (!ret_loss)
		return einval(be, what, "ret_loss is NULL");
	if ((r = check_dims(be, what, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "pred", pred, GP_F32, rows, cols)) < 0 ||
	    (r = check_buf(be, what, "target", target, GP_F32, rows, cols)) <
		    0)
		return r;
	if (dpred &&
	    (r = check_buf(be, what, "dpred", dpred, GP_F32, rows, cols)) < 0)
		return r;
	if (!be->ops->mse)
		return enotsup(be, what);
	return be->ops->mse(be, pred, target, rows, cols, dpred, ret_loss);
}

int gp_embedding_forward(struct gp_backend *be, const struct gp_buf *tokens,
			 const struct gp_buf *weight, struct gp_buf *y,
			 size_t rows, size_t vocab, size_t dim)
{
	static const char what[] = "gp_embedding_forward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_dims(be, what, rows, dim)) < 0 ||
	    (r = check_dims(be, what, vocab, 1)) < 0 ||
	    (r = check_buf(be, what, "tokens", tokens, GP_F32, rows, 1)) < 0 ||
	    (r = check_buf(be, what, "weight", weight, GP_F32, vocab, dim)) <
		    0 ||
	    (r = check_buf(be, what, "y", y, GP_F32, rows, dim)) < 0)
		return r;
	if (y == tokens || y == weight)
		return einval(be, what, "y aliases an input");
	if (!be->ops->embedding_forward)
		return enotsup(be, what);
	return be->ops->embedding_forward(be, tokens, weight, y, rows, vocab,
					  dim);
}

int gp_embedding_backward(struct gp_backend *be, const struct gp_buf *tokens,
			  const struct gp_buf *dy, struct gp_buf *dweight,
			  float beta, size_t rows, size_t vocab, size_t dim)
{
	static const char what[] = "gp_embedding_backward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_dims(be, what, rows, dim)) < 0 ||
	    (r = check_dims(be, what, vocab, 1)) < 0 ||
	    (r = check_buf(be, what, "tokens", tokens, GP_F32, rows, 1)) < 0 ||
	    (r = check_buf(be, what, "dy", dy, GP_F32, rows, dim)) < 0 ||
	    (r = check_buf(be, what, "dweight", dweight, GP_F32, vocab, dim)) <
		    0)
		return r;
	if (dweight == tokens || dweight == dy)
		return einval(be, what, "dweight aliases an input");
	if (!be->ops->embedding_backward)
		return enotsup(be, what);
	return be->ops->embedding_backward(be, tokens, dy, dweight, beta, rows,
					   vocab, dim);
}

/* Checks an attention shape and its activations. */
static int check_attention(struct gp_backend *be, const char *what,
			   const struct gp_buf *x, const struct gp_buf *y,
			   const char *y_name,
			   const struct gp_attention_shape *s)
{
	size_t tt;
	int r;

	if (!s)
		return einval(be, what, "shape is NULL");
	if ((r = check_dims(be, what, s->n, s->t)) < 0 ||
	    (r = check_dims(be, what, s->heads, s->dim)) < 0)
		return r;
	if (s->dim % s->heads != 0)
		return einval(be, what, "dim is not a multiple of heads");
	if (__builtin_mul_overflow(s->t, s->t, &tt) ||
	    __builtin_mul_overflow(tt, s->heads, &tt) || tt > INT32_MAX ||
	    s->dim > INT32_MAX / 3)
		return einval(be, what, "shape too large");
	if ((r = check_buf(be, what, "x", x, GP_F32, s->n * s->t,
			   3 * s->dim)) < 0 ||
	    (r = check_buf(be, what, y_name, y, GP_F32, s->n * s->t,
			   s->dim)) < 0)
		return r;
	return 0;
}

int gp_attention_forward(struct gp_backend *be, const struct gp_buf *x,
			 struct gp_buf *y, struct gp_buf *probs,
			 const struct gp_attention_shape *s)
{
	static const char what[] = "gp_attention_forward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_attention(be, what, x, y, "y", s)) < 0 ||
	    (r = check_buf(be, what, "probs", probs, GP_F32,
			   s->n * s->heads, s->t * s->t)) < 0)
		return r;
	if (y == x || probs == x || probs == y)
		return einval(be, what, "an output aliases an input");
	if (!be->ops->attention_forward)
		return enotsup(be, what);
	return be->ops->attention_forward(be, x, y, probs, s);
}

int gp_attention_backward(struct gp_backend *be, const struct gp_buf *x,
			  const struct gp_buf *probs, const struct gp_buf *dy,
			  struct gp_buf *dx, struct gp_buf *scratch,
			  const struct gp_attention_shape *s)
{
	static const char what[] = "gp_attention_backward";
	int r;

	if (!be)
		return -EINVAL;
	if ((r = check_attention(be, what, x, dy, "dy", s)) < 0 ||
	    (r = check_buf(be, what, "probs", probs, GP_F32,
			   s->n * s->heads, s->t * s->t)) < 0 ||
	    (r = check_buf(be, what, "dx", dx, GP_F32, s->n * s->t,
			   3 * s->dim)) < 0 ||
	    (r = check_buf(be, what, "scratch", scratch, GP_F32, s->t,
			   s->t)) < 0)
		return r;
	if (dx == x || dx == dy || dx == probs || scratch == x ||
	    scratch == dy || scratch == probs || scratch == dx)
		return einval(be, what, "an output aliases an input");
	if (!be->ops->attention_backward)
		return enotsup(be, what);
	return be->ops->attention_backward(be, x, probs, dy, dx, scratch, s);
}
