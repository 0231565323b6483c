/* Dense + ReLU MLPs with a softmax cross-entropy head, run through the
 * backend interface only, so the same code drives the CPU and OpenCL
 * backends.
 *
 * A minibatch of n rows flows like this (layer l from 1 to L, a[0] = x):
 *   forward   z[l] = a[l-1] W[l]^T + b[l]          gemm (trans_b)
 *             a[l] = relu(z[l]) for l < L           fused into bias_add
 *   head      loss, dz[L] = (softmax(z[L]) - onehot) / n
 *   backward  dW[l] = dz[l]^T a[l-1]                gemm (trans_a)
 *             db[l] = column sums of dz[l]
 *             dz[l-1] = (dz[l] W[l]) * (a[l-1] > 0) gemm + relu_backward
 * The input's gradient dz[0] is never needed, which saves a GEMM as large
 * as the first layer's forward one. ReLU's mask uses the post-activation a[l-1]
 * (a > 0 exactly where z > 0), so z is never kept. */
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gp_model {
	struct gp_backend *be;
	struct gp_model_spec spec;
	size_t max_batch;
	size_t loaded;   /* rows of the loaded batch */
	size_t n_params; /* f32 parameters in all */
	struct gp_tensor_info tensors[2 * GP_MODEL_MAX_LAYERS];
	/* [slot][tensor] */
	struct gp_buf *bufs[3][2 * GP_MODEL_MAX_LAYERS];
	struct gp_buf *x;                          /* max_batch x dims[0] */
	struct gp_buf *labels;                     /* max_batch, int32 */
	struct gp_buf *act[GP_MODEL_MAX_LAYERS + 1]; /* [1..L]: a[l], logits */
	struct gp_buf *dz[GP_MODEL_MAX_LAYERS + 1];  /* [1..L] */
};

static void set_err(char *err, size_t err_len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
	va_list ap;

	if (!err || err_len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

int gp_model_spec_parse(const char *text, struct gp_model_spec *ret,
			char *err, size_t err_len)
{
	struct gp_model_spec spec;
	const char *p = text;
	size_t n = 0;

	if (!text || !ret) {
		set_err(err, err_len, "no model spec");
		return -EINVAL;
	}
	memset(&spec, 0, sizeof(spec));
	for (;;) {
		uint64_t v = 0;
		const char *start = p;

		while (*p >= '0' && *p <= '9') {
			v = v * 10 + (uint64_t)(*p - '0');
			if (v > GP_MODEL_MAX_WIDTH)
				break;
			p++;
		}
		if (*p >= '0' && *p <= '9') {
			set_err(err, err_len,
				"model spec \"%.64s\": width %zu is larger than "
				"%d",
				text, n + 1, GP_MODEL_MAX_WIDTH);
			return -EINVAL;
		}
		if (p == start) {
			set_err(err, err_len,
				"model spec \"%.64s\": expected a width at "
				"offset %zu",
				text, (size_t)(p - text));
			return -EINVAL;
		}
		if (v == 0) {
			set_err(err, err_len,
				"model spec \"%.64s\": width %zu is zero", text,
				n + 1);
			return -EINVAL;
		}
		if (n > GP_MODEL_MAX_LAYERS) {
			set_err(err, err_len,
				"model spec \"%.64s\": more than %d layers",
				text, GP_MODEL_MAX_LAYERS);
			return -EINVAL;
		}
		spec.dims[n++] = (uint32_t)v;
		if (*p == '\0')
			break;
		if (*p != '-') {
			set_err(err, err_len,
				"model spec \"%.64s\": unexpected character "
				"'%c' at offset %zu",
				text, *p, (size_t)(p - text));
			return -EINVAL;
		}
		p++;
	}
	if (n < 2) {
		set_err(err, err_len,
			"model spec \"%.64s\": needs inputs and classes "
			"(at least two widths)",
			text);
		return -EINVAL;
	}
	if (spec.dims[n - 1] < 2) {
		set_err(err, err_len,
			"model spec \"%.64s\": needs at least two classes",
			text);
		return -EINVAL;
	}
	spec.n_layers = n - 1;
	*ret = spec;
	return 0;
}

static bool spec_valid(const struct gp_model_spec *spec)
{
	if (!spec || spec->n_layers < 1 ||
	    spec->n_layers > GP_MODEL_MAX_LAYERS)
		return false;
	for (size_t i = 0; i <= spec->n_layers; i++)
		if (spec->dims[i] == 0 || spec->dims[i] > GP_MODEL_MAX_WIDTH)
			return false;
	return spec->dims[spec->n_layers] >= 2;
}

int gp_model_spec_format(const struct gp_model_spec *spec, char *buf,
			 size_t len)
{
	size_t used = 0;

	if (!spec_valid(spec) || !buf)
		return -EINVAL;
	for (size_t i = 0; i <= spec->n_layers; i++) {
		int w = snprintf(buf + used, len - used, "%s%u",
				 i ? "-" : "", (unsigned)spec->dims[i]);

		if (w < 0 || (size_t)w >= len - used)
			return -ENOSPC;
		used += (size_t)w;
	}
	return (int)used;
}

size_t gp_model_spec_param_count(const struct gp_model_spec *spec)
{
	size_t n = 0;

	if (!spec_valid(spec))
		return 0;
	for (size_t l = 1; l <= spec->n_layers; l++)
		n += (size_t)spec->dims[l] * (spec->dims[l - 1] + 1);
	return n;
}

void gp_model_destroy(struct gp_model *m)
{
	if (!m)
		return;
	for (size_t s = 0; s < 3; s++)
		for (size_t i = 0; i < 2 * GP_MODEL_MAX_LAYERS; i++)
			gp_buf_destroy(m->bufs[s][i]);
	gp_buf_destroy(m->x);
	gp_buf_destroy(m->labels);
	for (size_t l = 0; l <= GP_MODEL_MAX_LAYERS; l++) {
		gp_buf_destroy(m->act[l]);
		gp_buf_destroy(m->dz[l]);
	}
	free(m);
}

int gp_model_create(struct gp_backend *be, const struct gp_model_spec *spec,
		    size_t max_batch, struct gp_model **ret)
{
	struct gp_model *m;
	size_t L;
	int r;

	if (!be || !ret || !spec_valid(spec) || max_batch == 0 ||
	    max_batch > (size_t)INT32_MAX / GP_MODEL_MAX_WIDTH)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->be = be;
	m->spec = *spec;
	m->max_batch = max_batch;
	L = spec->n_layers;
	for (size_t l = 1; l <= L; l++) {
		struct gp_tensor_info *w = &m->tensors[2 * (l - 1)];
		struct gp_tensor_info *b = w + 1;

		snprintf(w->name, sizeof(w->name), "fc%zu.weight", l);
		w->layer = l;
		w->rows = spec->dims[l];
		w->cols = spec->dims[l - 1];
		snprintf(b->name, sizeof(b->name), "fc%zu.bias", l);
		b->layer = l;
		b->rows = spec->dims[l];
		b->cols = 1;
		m->n_params += w->rows * w->cols + b->rows;
	}
	for (size_t s = 0; s < 3; s++) {
		for (size_t i = 0; i < 2 * L; i++) {
			r = gp_buf_create(be, GP_F32,
					  m->tensors[i].rows * m->tensors[i].cols,
					  &m->bufs[s][i]);
			if (r < 0)
				goto fail;
		}
	}
	r = gp_buf_create(be, GP_F32, max_batch * spec->dims[0], &m->x);
	if (r < 0)
		goto fail;
	r = gp_buf_create(be, GP_I32, max_batch, &m->labels);
	if (r < 0)
		goto fail;
	for (size_t l = 1; l <= L; l++) {
		r = gp_buf_create(be, GP_F32, max_batch * spec->dims[l],
				  &m->act[l]);
		if (r < 0)
			goto fail;
		r = gp_buf_create(be, GP_F32, max_batch * spec->dims[l],
				  &m->dz[l]);
		if (r < 0)
			goto fail;
	}
	*ret = m;
	return 0;
fail:
	gp_model_destroy(m);
	return r;
}

const struct gp_model_spec *gp_model_get_spec(const struct gp_model *m)
{
	return m ? &m->spec : NULL;
}

struct gp_backend *gp_model_backend(const struct gp_model *m)
{
	return m ? m->be : NULL;
}

size_t gp_model_max_batch(const struct gp_model *m)
{
	return m ? m->max_batch : 0;
}

size_t gp_model_tensor_count(const struct gp_model *m)
{
	return m ? 2 * m->spec.n_layers : 0;
}

size_t gp_model_param_count(const struct gp_model *m)
{
	return m ? m->n_params : 0;
}

int gp_model_tensor_info(const struct gp_model *m, size_t i,
			 struct gp_tensor_info *ret)
{
	if (!m || !ret || i >= gp_model_tensor_count(m))
		return -EINVAL;
	*ret = m->tensors[i];
	return 0;
}

int gp_model_tensor_find(const struct gp_model *m, const char *name)
{
	if (!m || !name)
		return -EINVAL;
	for (size_t i = 0; i < gp_model_tensor_count(m); i++)
		if (strcmp(m->tensors[i].name, name) == 0)
			return (int)i;
	return -ENOENT;
}

struct gp_buf *gp_model_buf(const struct gp_model *m, enum gp_model_slot slot,
			    size_t i)
{
	if (!m || (unsigned)slot > GP_MODEL_MOMENTUM ||
	    i >= gp_model_tensor_count(m))
		return NULL;
	return m->bufs[slot][i];
}

/* splitmix64 (Steele, Lea, Flood 2014): a tiny generator whose output
 * depends only on the state, the same on every platform. */
static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* FNV-1a of the tensor's name, to give each tensor its own stream. */
static uint64_t name_hash(const char *s)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * UINT64_C(0x100000001b3);
	return h;
}

int gp_model_init_params(struct gp_model *m, uint64_t seed)
{
	size_t n = gp_model_tensor_count(m), most = 0;
	float *host = NULL;
	int r = 0;

	if (!m)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (m->tensors[i].rows * m->tensors[i].cols > most)
			most = m->tensors[i].rows * m->tensors[i].cols;
	host = malloc(most * sizeof(float));
	if (!host)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const struct gp_tensor_info *t = &m->tensors[i];
		size_t len = t->rows * t->cols;

		if (t->cols == 1) {
			memset(host, 0, len * sizeof(float));
		} else {
			uint64_t state = seed ^ name_hash(t->name);
			/* He uniform: variance 2 / fan_in keeps the ReLU
			 * activations' scale from layer to layer. */
			double bound = sqrt(6.0 / (double)t->cols);

			for (size_t j = 0; j < len; j++) {
				/* 24 random bits: exactly representable, so
				 * the float is the same everywhere. */
				double u = (double)(splitmix64(&state) >> 40) *
					   0x1p-24;

				host[j] = (float)((2.0 * u - 1.0) * bound);
			}
		}
		if ((r = gp_buf_write(m->bufs[GP_MODEL_PARAM][i], 0, host,
				      len)) < 0)
			goto out;
		memset(host, 0, len * sizeof(float));
		if ((r = gp_buf_write(m->bufs[GP_MODEL_GRAD][i], 0, host,
				      len)) < 0 ||
		    (r = gp_buf_write(m->bufs[GP_MODEL_MOMENTUM][i], 0, host,
				      len)) < 0)
			goto out;
	}
out:
	free(host);
	return r;
}

/* Checks a tensor index, slot and row range. */
static int check_rows(const struct gp_model *m, enum gp_model_slot slot,
		      size_t i, size_t row0, size_t nrows, const void *p)
{
	if (!m || !p || (unsigned)slot > GP_MODEL_MOMENTUM ||
	    i >= gp_model_tensor_count(m))
		return -EINVAL;
	if (row0 > m->tensors[i].rows || nrows > m->tensors[i].rows - row0)
		return -EINVAL;
	return 0;
}

int gp_model_write(struct gp_model *m, enum gp_model_slot slot, size_t i,
		   size_t row0, size_t nrows, const float *src)
{
	int r = check_rows(m, slot, i, row0, nrows, src);
	size_t cols;

	if (r < 0)
		return r;
	cols = m->tensors[i].cols;
	return gp_buf_write(m->bufs[slot][i], row0 * cols, src, nrows * cols);
}

int gp_model_read(const struct gp_model *m, enum gp_model_slot slot,
		  size_t i, size_t row0, size_t nrows, float *dst)
{
	int r = check_rows(m, slot, i, row0, nrows, dst);
	size_t cols;

	if (r < 0)
		return r;
	cols = m->tensors[i].cols;
	return gp_buf_read(m->bufs[slot][i], row0 * cols, dst, nrows * cols);
}

int gp_model_set_batch(struct gp_model *m, const float *x,
		       const int32_t *labels, size_t n)
{
	int r;

	if (!m || !x || !labels || n == 0 || n > m->max_batch)
		return -EINVAL;
	m->loaded = 0;
	if ((r = gp_buf_write(m->x, 0, x, n * m->spec.dims[0])) < 0 ||
	    (r = gp_buf_write(m->labels, 0, labels, n)) < 0)
		return r;
	m->loaded = n;
	return 0;
}

#define W(m, l) ((m)->bufs[GP_MODEL_PARAM][2 * ((l) - 1)])
#define B(m, l) ((m)->bufs[GP_MODEL_PARAM][2 * ((l) - 1) + 1])

/* Forward over n rows of the loaded batch, then the head: loss, correct
 * and (when want_grad) dz[L]. */
static int forward(struct gp_model *m, size_t n, bool want_grad,
		   struct gp_model_stats *ret)
{
	const uint32_t *d = m->spec.dims;
	size_t L = m->spec.n_layers;
	double loss;
	size_t correct;
	int r;

	for (size_t l = 1; l <= L; l++) {
		const struct gp_buf *in = l == 1 ? m->x : m->act[l - 1];

		r = gp_gemm(m->be, false, true, n, d[l], d[l - 1], 1.0f, in,
			    W(m, l), 0.0f, m->act[l]);
		if (r < 0)
			return r;
		r = gp_bias_add(m->be, m->act[l], B(m, l), n, d[l], l < L);
		if (r < 0)
			return r;
	}
	r = gp_softmax_xent(m->be, m->act[L], m->labels, n, d[L],
			    want_grad ? m->dz[L] : NULL, &loss, &correct);
	if (r < 0)
		return r;
	if (ret) {
		ret->samples = n;
		ret->loss = loss;
		ret->correct = correct;
	}
	return 0;
}

/* Backward from dz[L]. Unfused, the gradients go to the GRAD slots;
 * fused, they accumulate into the momentum (beta = mu) and each layer
 * is updated (p -= lr * v) as soon as its W is no longer needed. */
static int backward(struct gp_model *m, size_t n, bool fused, float lr,
		    float mu, int (*ready)(void *ctx, size_t layer), void *ctx)
{
	const uint32_t *d = m->spec.dims;
	size_t L = m->spec.n_layers;
	enum gp_model_slot slot = fused ? GP_MODEL_MOMENTUM : GP_MODEL_GRAD;
	float beta = fused ? mu : 0.0f;
	int r;

	for (size_t l = L; l >= 1; l--) {
		const struct gp_buf *in = l == 1 ? m->x : m->act[l - 1];
		struct gp_buf *gw = m->bufs[slot][2 * (l - 1)];
		struct gp_buf *gb = m->bufs[slot][2 * (l - 1) + 1];

		r = gp_gemm(m->be, true, false, d[l], d[l - 1], n, 1.0f,
			    m->dz[l], in, beta, gw);
		if (r < 0)
			return r;
		r = gp_col_sum(m->be, m->dz[l], n, d[l], beta, gb);
		if (r < 0)
			return r;
		if (ready && (r = ready(ctx, l)) < 0)
			return r;
		if (l > 1) {
			r = gp_gemm(m->be, false, false, n, d[l - 1], d[l],
				    1.0f, m->dz[l], W(m, l), 0.0f,
				    m->dz[l - 1]);
			if (r < 0)
				return r;
			r = gp_relu_backward(m->be, m->act[l - 1],
					     m->dz[l - 1], m->dz[l - 1],
					     n * d[l - 1]);
			if (r < 0)
				return r;
		}
		if (fused) {
			r = gp_axpy(m->be, (size_t)d[l] * d[l - 1], -lr, gw,
				    W(m, l));
			if (r < 0)
				return r;
			r = gp_axpy(m->be, d[l], -lr, gb, B(m, l));
			if (r < 0)
				return r;
		}
	}
	return 0;
}

int gp_model_compute_grads_notify(struct gp_model *m, size_t n,
				  struct gp_model_stats *ret,
				  int (*ready)(void *ctx, size_t layer),
				  void *ctx)
{
	struct gp_model_stats st;
	int r;

	if (!m || n == 0 || n > m->loaded)
		return -EINVAL;
	if ((r = forward(m, n, true, &st)) < 0 ||
	    (r = backward(m, n, false, 0.0f, 0.0f, ready, ctx)) < 0)
		return r;
	if (ret)
		*ret = st;
	return 0;
}

int gp_model_compute_grads(struct gp_model *m, size_t n,
			   struct gp_model_stats *ret)
{
	return gp_model_compute_grads_notify(m, n, ret, NULL, NULL);
}

int gp_model_apply_grads(struct gp_model *m, float lr, float mu)
{
	int r;

	if (!m)
		return -EINVAL;
	for (size_t i = 0; i < gp_model_tensor_count(m); i++) {
		r = gp_sgd_momentum(m->be,
				    m->tensors[i].rows * m->tensors[i].cols, lr,
				    mu, m->bufs[GP_MODEL_GRAD][i],
				    m->bufs[GP_MODEL_MOMENTUM][i],
				    m->bufs[GP_MODEL_PARAM][i]);
		if (r < 0)
			return r;
	}
	return 0;
}

int gp_model_train_step(struct gp_model *m, size_t n, float lr, float mu,
			struct gp_model_stats *ret)
{
	struct gp_model_stats st;
	int r;

	if (!m || n == 0 || n > m->loaded)
		return -EINVAL;
	if ((r = forward(m, n, true, &st)) < 0 ||
	    (r = backward(m, n, true, lr, mu, NULL, NULL)) < 0)
		return r;
	if (ret)
		*ret = st;
	return 0;
}

int gp_model_grad_sumsq(struct gp_model *m, double *ret)
{
	double total = 0.0;
	int r;

	if (!m || !ret)
		return -EINVAL;
	for (size_t i = 0; i < gp_model_tensor_count(m); i++) {
		double s;

		r = gp_sumsq(m->be, m->bufs[GP_MODEL_GRAD][i],
			     m->tensors[i].rows * m->tensors[i].cols, &s);
		if (r < 0)
			return r;
		total += s;
	}
	*ret = total;
	return 0;
}

int gp_model_evaluate(struct gp_model *m, const float *x,
		      const int32_t *labels, size_t n,
		      struct gp_model_stats *ret)
{
	double loss = 0.0;
	size_t correct = 0;
	int r;

	if (!m || !x || !labels || !ret || n == 0)
		return -EINVAL;
	for (size_t off = 0; off < n; off += m->max_batch) {
		size_t rows = n - off < m->max_batch ? n - off : m->max_batch;
		struct gp_model_stats st;

		r = gp_model_set_batch(m, x + off * m->spec.dims[0],
				       labels + off, rows);
		if (r < 0)
			return r;
		r = forward(m, rows, false, &st);
		if (r < 0)
			return r;
		loss += st.loss * (double)rows;
		correct += st.correct;
	}
	ret->samples = n;
	ret->loss = loss / (double)n;
	ret->correct = correct;
	return 0;
}
