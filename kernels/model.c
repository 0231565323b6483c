/* Layer graphs run through the backend interface only, so the same code
 * drives the CPU and OpenCL backends. The layers come in the order of the
 * spec, which is a topological order (a layer only names earlier ones as
 * inputs), so the forward pass walks them first to last and the backward
 * pass last to first.
 *
 * For the shorthand MLP a minibatch of n rows flows like this (layer l
 * from 1 to L, a[0] = x):
 *   forward   z[l] = a[l-1] W[l]^T + b[l]          gemm (trans_b)
 *             a[l] = relu(z[l]) for l < L           fused into bias_add
 *   head      loss, dz[L] = (softmax(z[L]) - onehot) / n
 *   backward  dW[l] = dz[l]^T a[l-1]                gemm (trans_a)
 *             db[l] = column sums of dz[l]
 *             dz[l-1] = (dz[l] W[l]) * (a[l-1] > 0) gemm + relu_backward
 * and every other graph the same way, layer by layer:
 * - a ReLU or flatten whose input has no other consumer works in place: it
 *   shares its input's activation and gradient buffers (ReLU's mask uses
 *   the post-activation a > 0, exactly where z > 0), and a dense layer
 *   followed by such a ReLU applies it in its bias_add;
 * - the input's gradient is never computed, nor any gradient of a layer
 *   with no parameters before it;
 * - a layer with several consumers (a residual's trunk) takes the first
 *   gradient written straight into its buffer and adds the others through
 *   a scratch buffer, so no op needs an accumulating variant. */
#include "model.h"

#include "backend-impl.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TENSORS (2 * GP_MODEL_MAX_NODES)

enum init_kind {
	INIT_HE = 0, /* He uniform over fan_in = cols */
	INIT_ZERO,
	INIT_ONE,
	INIT_LINEAR, /* nn.Linear's U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
	INIT_EMBED,  /* uniform with standard deviation 0.02, as GPT-2 */
};

struct node {
	const struct gp_model_layer *l;
	size_t size;         /* elements of one sample's output */
	struct gp_buf *out;  /* max_batch x size; may be an input's */
	struct gp_buf *grad; /* the owner's, or NULL when not needed */
	struct gp_buf *aux;  /* maxpool indices, layernorm stats, mask */
	bool own_out;
	size_t owner;        /* whose grad buffer this layer's gradient is */
	bool alias;          /* shares input 0's out and grad (in place) */
	bool fuse_relu;      /* dense: apply its aliasing ReLU in bias_add */
	bool needs_grad;     /* dL/d(out) is wanted */
	size_t consumers;
	int w, b;            /* tensor indices, or -1 */
	size_t param_layer;  /* gp_tensor_info.layer */
};

struct gp_model {
	struct gp_backend *be;
	struct gp_model_spec spec;
	size_t max_batch;
	size_t loaded;   /* rows of the loaded batch */
	size_t n_params; /* f32 parameters in all */
	size_t n_tensors;
	uint64_t seed;   /* dropout */
	struct gp_tensor_info tensors[MAX_TENSORS];
	enum init_kind init[MAX_TENSORS];
	/* [slot][tensor] */
	struct gp_buf *bufs[3][MAX_TENSORS];
	struct node nodes[GP_MODEL_MAX_NODES];
	bool written[GP_MODEL_MAX_NODES]; /* grads begun in this pass */
	struct gp_buf *x;       /* max_batch x dims[0] */
	struct gp_buf *labels;  /* max_batch, int32 */
	struct gp_buf *target;  /* mse: max_batch x outputs */
	struct gp_buf *argmax;  /* mse: max_batch, int32 */
	struct gp_buf *scratch; /* gradient contributions to add */
	struct gp_buf *attn;    /* attention backward: t x t */
	size_t n_labels;        /* labels a sample: gp_model_spec_labels() */
	int32_t *host_labels;   /* mse: for the correct count */
	int32_t *host_idx;      /* mse: argmax read back */
	float *host;            /* mse targets, dropout masks */
	size_t host_len;
};

static size_t layer_size(const struct gp_model_layer *l)
{
	return (size_t)l->c * l->h * l->w;
}

static struct node *in_node(struct gp_model *m, const struct node *nd,
			    size_t k)
{
	return &m->nodes[nd->l->in[k]];
}

static const struct gp_model_layer *loss_layer(const struct gp_model *m)
{
	return &m->spec.layers[m->spec.n_nodes - 1];
}

void gp_model_destroy(struct gp_model *m)
{
	if (!m)
		return;
	for (size_t s = 0; s < 3; s++)
		for (size_t i = 0; i < MAX_TENSORS; i++)
			gp_buf_destroy(m->bufs[s][i]);
	for (size_t i = 0; i < GP_MODEL_MAX_NODES; i++) {
		struct node *nd = &m->nodes[i];

		if (nd->own_out)
			gp_buf_destroy(nd->out);
		if (nd->l && nd->owner == i)
			gp_buf_destroy(nd->grad);
		gp_buf_destroy(nd->aux);
	}
	gp_buf_destroy(m->x);
	gp_buf_destroy(m->labels);
	gp_buf_destroy(m->target);
	gp_buf_destroy(m->argmax);
	gp_buf_destroy(m->scratch);
	gp_buf_destroy(m->attn);
	free(m->host_labels);
	free(m->host_idx);
	free(m->host);
	free(m);
}

static int add_tensor(struct gp_model *m, struct node *nd, const char *suffix,
		      size_t rows, size_t cols, enum init_kind init)
{
	struct gp_tensor_info *t = &m->tensors[m->n_tensors];

	snprintf(t->name, sizeof(t->name), "%s.%s", nd->l->name, suffix);
	t->layer = nd->param_layer;
	t->rows = rows;
	t->cols = cols;
	m->init[m->n_tensors] = init;
	m->n_params += rows * cols;
	return (int)m->n_tensors++;
}

/* The backend feature a layer type needs beyond the MLP's ops. */
static int layer_feature(enum gp_layer_type t)
{
	switch (t) {
	case GP_LAYER_CONV2D:
		return GP_FEATURE_CONV2D;
	case GP_LAYER_MAXPOOL2D:
	case GP_LAYER_AVGPOOL2D:
		return GP_FEATURE_POOL2D;
	case GP_LAYER_GELU:
		return GP_FEATURE_GELU;
	case GP_LAYER_DROPOUT:
		return GP_FEATURE_MUL;
	case GP_LAYER_LAYERNORM:
		return GP_FEATURE_LAYERNORM;
	case GP_LAYER_GROUPNORM:
		return GP_FEATURE_GROUPNORM;
	case GP_LAYER_MSE:
		return GP_FEATURE_MSE;
	case GP_LAYER_EMBEDDING:
		return GP_FEATURE_EMBEDDING;
	case GP_LAYER_ATTENTION:
		return GP_FEATURE_ATTENTION;
	default:
		return -1;
	}
}

/* The tensors of the language model's layers, in PyTorch's layouts:
 * nn.Embedding(vocab, dim).weight, the position table as
 * nn.Embedding(t, dim).weight, nn.Linear(in, out)'s weight and bias. */
static void plan_seq_tensors(struct gp_model *m, struct node *nd,
			     const struct node *a, size_t param_layer)
{
	const struct gp_model_layer *l = nd->l;

	nd->param_layer = param_layer;
	switch (l->type) {
	case GP_LAYER_EMBEDDING:
		nd->w = add_tensor(m, nd, "weight", l->vocab, l->out,
				   INIT_EMBED);
		break;
	case GP_LAYER_POSEMBED:
		nd->w = add_tensor(m, nd, "weight", l->h, l->w, INIT_EMBED);
		break;
	case GP_LAYER_LINEAR:
		nd->w = add_tensor(m, nd, "weight", l->out, a->l->w,
				   INIT_LINEAR);
		nd->b = add_tensor(m, nd, "bias", l->out, 1, INIT_ZERO);
		break;
	default:
		break;
	}
}

/* Decides buffers and sharing, and names the tensors. */
static int plan(struct gp_model *m)
{
	size_t n = m->spec.n_nodes, param_layer = 0;

	for (size_t i = 0; i < n; i++) {
		struct node *nd = &m->nodes[i];

		nd->l = &m->spec.layers[i];
		nd->size = layer_size(nd->l);
		nd->w = nd->b = -1;
		nd->owner = i;
		for (size_t k = 0; k < nd->l->n_in; k++)
			m->nodes[nd->l->in[k]].consumers++;
	}
	for (size_t i = 0; i < n; i++) {
		struct node *nd = &m->nodes[i];
		const struct gp_model_layer *l = nd->l;
		struct node *a = l->n_in ? in_node(m, nd, 0) : NULL;
		int f = layer_feature(l->type);

		if (f >= 0 && !gp_backend_has(m->be, (enum gp_backend_feature)f)) {
			gp_backend_set_error(m->be,
					     "layer \"%s\" (%s) is not supported "
					     "by the %s backend yet",
					     l->name,
					     gp_model_layer_type_name(l->type),
					     gp_backend_info(m->be)->type ==
							     GP_BACKEND_OPENCL
						     ? "OpenCL"
						     : "CPU");
			return -ENOTSUP;
		}
		switch (l->type) {
		case GP_LAYER_DENSE:
			nd->param_layer = ++param_layer;
			nd->w = add_tensor(m, nd, "weight", l->out, a->size,
					   INIT_HE);
			nd->b = add_tensor(m, nd, "bias", l->out, 1, INIT_ZERO);
			break;
		case GP_LAYER_CONV2D:
			nd->param_layer = ++param_layer;
			nd->w = add_tensor(m, nd, "weight", l->out,
					   (size_t)a->l->c * l->kernel *
						   l->kernel,
					   INIT_HE);
			nd->b = add_tensor(m, nd, "bias", l->out, 1, INIT_ZERO);
			break;
		case GP_LAYER_LAYERNORM:
		case GP_LAYER_GROUPNORM: {
			/* Over the last axis, or one per channel. */
			size_t k = l->type == GP_LAYER_LAYERNORM ? l->w : l->c;

			nd->param_layer = ++param_layer;
			nd->w = add_tensor(m, nd, "weight", k, 1, INIT_ONE);
			nd->b = add_tensor(m, nd, "bias", k, 1, INIT_ZERO);
			break;
		}
		case GP_LAYER_EMBEDDING:
		case GP_LAYER_POSEMBED:
		case GP_LAYER_LINEAR:
			plan_seq_tensors(m, nd, a, ++param_layer);
			break;
		default:
			break;
		}
		nd->needs_grad = nd->w >= 0;
		for (size_t k = 0; k < l->n_in; k++)
			nd->needs_grad |= in_node(m, nd, k)->needs_grad;
		/* In place: the input's buffers are its own and nothing
		 * else reads them. A flatten's values are its input's
		 * whatever the consumers, so it always shares the
		 * activation. */
		if ((l->type == GP_LAYER_RELU || l->type == GP_LAYER_FLATTEN) &&
		    a->own_out && a->consumers == 1) {
			nd->alias = true;
			nd->owner = a->owner;
			if (l->type == GP_LAYER_RELU &&
			    a->l->type == GP_LAYER_DENSE)
				a->fuse_relu = true;
		}
		nd->own_out = !nd->alias && l->type != GP_LAYER_INPUT &&
			      l->type != GP_LAYER_FLATTEN &&
			      l->type != GP_LAYER_SOFTMAX_XENT &&
			      l->type != GP_LAYER_MSE &&
			      l->type != GP_LAYER_SEQ_XENT;
	}
	return 0;
}

static int alloc_bufs(struct gp_model *m)
{
	struct gp_backend *be = m->be;
	size_t nb = m->max_batch, most = 0, host = 0;
	bool shared = false;
	int r;

	for (size_t s = 0; s < 3; s++)
		for (size_t i = 0; i < m->n_tensors; i++)
			if ((r = gp_buf_create(be, GP_F32,
					       m->tensors[i].rows *
						       m->tensors[i].cols,
					       &m->bufs[s][i])) < 0)
				return r;
	m->n_labels = gp_model_spec_labels(&m->spec);
	if ((r = gp_buf_create(be, GP_F32, nb * m->spec.dims[0], &m->x)) < 0 ||
	    (r = gp_buf_create(be, GP_I32, nb * m->n_labels, &m->labels)) < 0)
		return r;
	for (size_t i = 0; i < m->spec.n_nodes; i++) {
		struct node *nd = &m->nodes[i];
		const struct gp_model_layer *l = nd->l;

		if (l->type == GP_LAYER_INPUT)
			nd->out = m->x;
		else if (nd->own_out &&
			 (r = gp_buf_create(be, GP_F32, nb * nd->size,
					    &nd->out)) < 0)
			return r;
		else if (!nd->own_out)
			nd->out = in_node(m, nd, 0)->out;
		if (nd->owner != i)
			nd->grad = m->nodes[nd->owner].grad;
		else if (nd->needs_grad && l->type != GP_LAYER_SOFTMAX_XENT &&
			 l->type != GP_LAYER_MSE &&
			 l->type != GP_LAYER_SEQ_XENT &&
			 (r = gp_buf_create(be, GP_F32, nb * nd->size,
					    &nd->grad)) < 0)
			return r;
		if (nd->consumers > 1 && nd->needs_grad)
			shared = true;
		if (nd->size > most)
			most = nd->size;
		switch (l->type) {
		case GP_LAYER_MAXPOOL2D:
			r = gp_buf_create(be, GP_I32, nb * nd->size, &nd->aux);
			break;
		case GP_LAYER_LAYERNORM:
			r = gp_buf_create(be, GP_F32, 2 * nb * l->c * l->h,
					  &nd->aux);
			break;
		case GP_LAYER_GROUPNORM:
			r = gp_buf_create(be, GP_F32, 2 * nb * l->groups,
					  &nd->aux);
			break;
		case GP_LAYER_DROPOUT:
			r = gp_buf_create(be, GP_F32, nb * nd->size, &nd->aux);
			if (nb * nd->size > host)
				host = nb * nd->size;
			break;
		case GP_LAYER_ATTENTION:
			/* The attention weights, and the backward pass's
			 * t x t scratch, sized for the longest sequence. */
			r = gp_buf_create(be, GP_F32,
					  nb * l->heads * l->h * l->h, &nd->aux);
			if (r >= 0 && (!m->attn || gp_buf_len(m->attn) <
							   (size_t)l->h * l->h)) {
				gp_buf_destroy(m->attn);
				m->attn = NULL;
				r = gp_buf_create(be, GP_F32,
						  (size_t)l->h * l->h, &m->attn);
			}
			break;
		default:
			r = 0;
			break;
		}
		if (r < 0)
			return r;
	}
	if (shared && (r = gp_buf_create(be, GP_F32, nb * most, &m->scratch)) < 0)
		return r;
	if (loss_layer(m)->type == GP_LAYER_MSE) {
		size_t outs = m->spec.dims[m->spec.n_layers];

		if ((r = gp_buf_create(be, GP_F32, nb * outs, &m->target)) < 0 ||
		    (r = gp_buf_create(be, GP_I32, nb, &m->argmax)) < 0)
			return r;
		if (nb * outs > host)
			host = nb * outs;
		m->host_labels = calloc(nb, sizeof(int32_t));
		m->host_idx = calloc(nb, sizeof(int32_t));
		if (!m->host_labels || !m->host_idx)
			return -ENOMEM;
	}
	if (host) {
		m->host = malloc(host * sizeof(float));
		if (!m->host)
			return -ENOMEM;
		m->host_len = host;
	}
	return 0;
}

int gp_model_create(struct gp_backend *be, const struct gp_model_spec *spec,
		    size_t max_batch, struct gp_model **ret)
{
	struct gp_model *m;
	size_t most = 0;
	int r;

	if (!be || !ret || !gp_model_spec_valid(spec) || max_batch == 0)
		return -EINVAL;
	for (size_t i = 0; i < spec->n_nodes; i++)
		if (layer_size(&spec->layers[i]) > most)
			most = layer_size(&spec->layers[i]);
	if (max_batch > (size_t)INT32_MAX / (most > GP_MODEL_MAX_WIDTH
						     ? most
						     : GP_MODEL_MAX_WIDTH))
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->be = be;
	m->spec = *spec;
	m->max_batch = max_batch;
	if ((r = plan(m)) < 0 || (r = alloc_bufs(m)) < 0)
		goto fail;
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
	return m ? m->n_tensors : 0;
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

/* FNV-1a of a tensor's or layer's name, to give each its own stream. */
static uint64_t name_hash(const char *s)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * UINT64_C(0x100000001b3);
	return h;
}

/* A uniform draw in [0, 1) from 24 random bits: exactly representable, so
 * the float is the same everywhere. */
static double uniform24(uint64_t *state)
{
	return (double)(splitmix64(state) >> 40) * 0x1p-24;
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

		if (m->init[i] == INIT_ZERO) {
			memset(host, 0, len * sizeof(float));
		} else if (m->init[i] == INIT_ONE) {
			for (size_t j = 0; j < len; j++)
				host[j] = 1.0f;
		} else {
			uint64_t state = seed ^ name_hash(t->name);
			/* He uniform: variance 2 / fan_in keeps the ReLU
			 * activations' scale from layer to layer. */
			double bound = sqrt(6.0 / (double)t->cols);

			if (m->init[i] == INIT_LINEAR)
				bound = 1.0 / sqrt((double)t->cols);
			else if (m->init[i] == INIT_EMBED)
				bound = 0.02 * sqrt(3.0);

			for (size_t j = 0; j < len; j++)
				host[j] = (float)((2.0 * uniform24(&state) -
						   1.0) *
						  bound);
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

/* Every tensor of a slot from or into buf (write: buf is read). */
static int slot_all(const struct gp_model *m, enum gp_model_slot slot,
		    float *buf, bool write)
{
	size_t off = 0;
	int r = 0;

	for (size_t i = 0; r >= 0 && i < gp_model_tensor_count(m); i++) {
		size_t rows = m->tensors[i].rows;

		r = write ? gp_model_write((struct gp_model *)m, slot, i, 0,
					   rows, buf + off) :
			    gp_model_read(m, slot, i, 0, rows, buf + off);
		off += rows * m->tensors[i].cols;
	}
	return r;
}

int gp_model_write_all(struct gp_model *m, enum gp_model_slot slot,
		       const float *src)
{
	return slot_all(m, slot, (float *)src, true);
}

int gp_model_read_all(const struct gp_model *m, enum gp_model_slot slot,
		      float *dst)
{
	return slot_all(m, slot, dst, false);
}

int gp_model_set_batch(struct gp_model *m, const float *x,
		       const int32_t *labels, size_t n)
{
	int r;

	if (!m || !x || !labels || n == 0 || n > m->max_batch)
		return -EINVAL;
	m->loaded = 0;
	if ((r = gp_buf_write(m->x, 0, x, n * m->spec.dims[0])) < 0 ||
	    (r = gp_buf_write(m->labels, 0, labels, n * m->n_labels)) < 0)
		return r;
	if (m->target) {
		size_t outs = m->spec.dims[m->spec.n_layers];

		memset(m->host, 0, n * outs * sizeof(float));
		for (size_t i = 0; i < n; i++) {
			if (labels[i] < 0 || (size_t)labels[i] >= outs)
				return -EINVAL;
			m->host[i * outs + (size_t)labels[i]] = 1.0f;
		}
		memcpy(m->host_labels, labels, n * sizeof(int32_t));
		if ((r = gp_buf_write(m->target, 0, m->host, n * outs)) < 0)
			return r;
	}
	m->loaded = n;
	return 0;
}

int gp_model_set_targets(struct gp_model *m, const float *t, size_t n)
{
	if (!m || !t || !m->target || n == 0 || n != m->loaded)
		return -EINVAL;
	return gp_buf_write(m->target, 0, t,
			    n * m->spec.dims[m->spec.n_layers]);
}

void gp_model_set_seed(struct gp_model *m, uint64_t seed)
{
	if (m)
		m->seed = seed;
}

uint64_t gp_model_minibatch_seed(uint64_t job_seed, uint64_t epoch,
				 uint64_t minibatch)
{
	uint64_t z = job_seed;

	z = splitmix64(&z) ^ epoch;
	z = splitmix64(&z) ^ minibatch;
	return splitmix64(&z);
}

/* Where layer i's contribution to the gradient of its input k goes: the
 * input's gradient buffer if nothing was written there in this pass yet,
 * else the scratch buffer, added by grad_end(). */
static struct gp_buf *grad_begin(struct gp_model *m, const struct node *nd,
				 size_t k, bool *acc)
{
	const struct node *a = in_node(m, nd, k);

	if (!m->written[a->owner]) {
		m->written[a->owner] = true;
		*acc = false;
		return m->nodes[a->owner].grad;
	}
	*acc = true;
	return m->scratch;
}

static int grad_end(struct gp_model *m, const struct node *nd, size_t k,
		    bool acc, size_t n)
{
	const struct node *a = in_node(m, nd, k);

	if (!acc)
		return 0;
	return gp_axpy(m->be, n * a->size, 1.0f, m->scratch,
		       m->nodes[a->owner].grad);
}

/* Adds dy to input k's gradient as it is (flatten, add). */
static int grad_pass(struct gp_model *m, const struct node *nd, size_t k,
		     const struct gp_buf *dy, size_t n)
{
	const struct node *a = in_node(m, nd, k);
	bool acc;
	struct gp_buf *dst;

	if (!a->needs_grad)
		return 0;
	dst = grad_begin(m, nd, k, &acc);
	if (acc)
		return gp_axpy(m->be, n * a->size, 1.0f, dy,
			       m->nodes[a->owner].grad);
	return gp_buf_copy(dst, dy, n * a->size);
}

static void conv_shape(const struct node *nd, const struct node *a, size_t n,
		       struct gp_conv2d_shape *s)
{
	s->n = n;
	s->c = a->l->c;
	s->h = a->l->h;
	s->w = a->l->w;
	s->oc = nd->l->out;
	s->kh = s->kw = nd->l->kernel;
	s->stride = nd->l->stride;
	s->pad = nd->l->pad;
	s->oh = nd->l->h;
	s->ow = nd->l->w;
}

static void pool_shape(const struct node *nd, const struct node *a, size_t n,
		       struct gp_pool2d_shape *s)
{
	s->n = n;
	s->c = a->l->c;
	s->h = a->l->h;
	s->w = a->l->w;
	s->k = nd->l->kernel;
	s->stride = nd->l->stride;
	s->oh = nd->l->h;
	s->ow = nd->l->w;
}

static void groupnorm_shape(const struct node *nd, size_t n,
			    struct gp_groupnorm_shape *s)
{
	s->n = n;
	s->c = nd->l->c;
	s->hw = (size_t)nd->l->h * nd->l->w;
	s->groups = nd->l->groups;
}

/* The dropout mask of layer nd for n rows: 0 with probability p, else
 * 1 / (1 - p), from the model's seed and the layer's name. */
static int dropout_mask(struct gp_model *m, const struct node *nd, size_t n)
{
	uint64_t state = m->seed ^ name_hash(nd->l->name);
	double p = (double)nd->l->p;
	float keep = (float)(1.0 / (1.0 - p));
	size_t len = n * nd->size;

	for (size_t i = 0; i < len; i++)
		m->host[i] = uniform24(&state) < p ? 0.0f : keep;
	return gp_buf_write(nd->aux, 0, m->host, len);
}

/* The loss layer: loss, correct and (when want_grad) the gradient of its
 * input. */
static int forward_loss(struct gp_model *m, struct node *nd, size_t n,
			bool want_grad, struct gp_model_stats *ret)
{
	struct node *a = in_node(m, nd, 0);
	struct gp_buf *dst = NULL;
	size_t cols = a->size, correct = 0;
	double loss;
	bool acc = false;
	int r;

	if (want_grad && a->needs_grad)
		dst = grad_begin(m, nd, 0, &acc);
	if (nd->l->type == GP_LAYER_SOFTMAX_XENT) {
		r = gp_softmax_xent(m->be, a->out, m->labels, n, cols, dst,
				    &loss, &correct);
		if (r < 0)
			return r;
	} else if (nd->l->type == GP_LAYER_SEQ_XENT) {
		/* Every position is a row of logits with its own label:
		 * nn.CrossEntropyLoss over (n t, vocab). */
		r = gp_softmax_xent(m->be, a->out, m->labels, n * a->l->h,
				    a->l->w, dst, &loss, &correct);
		if (r < 0)
			return r;
	} else {
		r = gp_mse(m->be, a->out, m->target, n, cols, dst, &loss);
		if (r < 0)
			return r;
		if ((r = gp_argmax(m->be, a->out, n, cols, m->argmax)) < 0 ||
		    (r = gp_buf_read(m->argmax, 0, m->host_idx, n)) < 0)
			return r;
		for (size_t i = 0; i < n; i++)
			correct += m->host_idx[i] == m->host_labels[i];
	}
	if (dst && (r = grad_end(m, nd, 0, acc, n)) < 0)
		return r;
	if (ret) {
		ret->samples = n;
		ret->loss = loss;
		ret->correct = correct;
		ret->labels = n * m->n_labels;
	}
	return 0;
}

static void attention_shape(const struct node *nd, size_t n,
			    struct gp_attention_shape *s)
{
	s->n = n;
	s->t = nd->l->h;
	s->heads = nd->l->heads;
	s->dim = nd->l->w;
}

/* The forward pass of the language model's layers. A sequence of n
 * samples is n t rows of w features, so linear is one GEMM over all
 * positions, as nn.Linear over the last axis. */
static int forward_seq(struct gp_model *m, struct node *nd, size_t n)
{
	const struct gp_model_layer *l = nd->l;
	struct node *a = in_node(m, nd, 0);
	struct gp_buf **P = m->bufs[GP_MODEL_PARAM];
	size_t rows = n * l->c * l->h;
	int r;

	switch (l->type) {
	case GP_LAYER_EMBEDDING:
		return gp_embedding_forward(m->be, a->out, P[nd->w], nd->out,
					    n * l->h, l->vocab, l->out);
	case GP_LAYER_POSEMBED:
		if ((r = gp_buf_copy(nd->out, a->out, n * nd->size)) < 0)
			return r;
		/* The table is one row of t w values added to each
		 * sample. */
		return gp_bias_add(m->be, nd->out, P[nd->w], n, nd->size, false);
	case GP_LAYER_LINEAR:
		if ((r = gp_gemm(m->be, false, true, rows, l->out, a->l->w, 1.0f,
				 a->out, P[nd->w], 0.0f, nd->out)) < 0)
			return r;
		return gp_bias_add(m->be, nd->out, P[nd->b], rows, l->out,
				   false);
	case GP_LAYER_ATTENTION: {
		struct gp_attention_shape s;

		attention_shape(nd, n, &s);
		return gp_attention_forward(m->be, a->out, nd->out, nd->aux, &s);
	}
	default:
		return -EINVAL;
	}
}

/* The backward pass of the language model's layers: parameter gradients
 * into G (beta as backward() says), the input's gradient into dx (may be
 * NULL when the input needs none). */
static int backward_seq(struct gp_model *m, struct node *nd, size_t n,
			struct gp_buf **G, float beta, struct gp_buf *dx,
			int (*ready)(void *ctx, size_t layer), void *ctx)
{
	const struct gp_model_layer *l = nd->l;
	struct node *a = in_node(m, nd, 0);
	struct gp_buf **P = m->bufs[GP_MODEL_PARAM];
	struct gp_buf *dy = nd->grad;
	size_t rows = n * l->c * l->h;
	int r;

	switch (l->type) {
	case GP_LAYER_EMBEDDING:
		r = gp_embedding_backward(m->be, a->out, dy, G[nd->w], beta,
					  n * l->h, l->vocab, l->out);
		break;
	case GP_LAYER_POSEMBED:
		if ((r = gp_col_sum(m->be, dy, n, nd->size, beta, G[nd->w])) < 0)
			return r;
		if (ready && (r = ready(ctx, nd->param_layer)) < 0)
			return r;
		return dx ? gp_buf_copy(dx, dy, n * nd->size) : 0;
	case GP_LAYER_LINEAR:
		if ((r = gp_gemm(m->be, true, false, l->out, a->l->w, rows, 1.0f,
				 dy, a->out, beta, G[nd->w])) < 0 ||
		    (r = gp_col_sum(m->be, dy, rows, l->out, beta,
				    G[nd->b])) < 0)
			return r;
		if (ready && (r = ready(ctx, nd->param_layer)) < 0)
			return r;
		return dx ? gp_gemm(m->be, false, false, rows, a->l->w, l->out,
				    1.0f, dy, P[nd->w], 0.0f, dx)
			  : 0;
	case GP_LAYER_ATTENTION: {
		struct gp_attention_shape s;

		if (!dx)
			return 0;
		attention_shape(nd, n, &s);
		return gp_attention_backward(m->be, a->out, nd->aux, dy, dx,
					     m->attn, &s);
	}
	default:
		return -EINVAL;
	}
	if (r >= 0 && ready)
		r = ready(ctx, nd->param_layer);
	return r;
}

/* Forward over n rows of the loaded batch, then the loss: loss, correct
 * and (when want_grad) the loss's input gradient. Without want_grad (an
 * evaluation) dropout passes its input through. */
static int forward_upto(struct gp_model *m, size_t n, bool want_grad,
			struct gp_model_stats *ret, size_t upto)
{
	struct gp_backend *be = m->be;
	int r = 0;

	if (want_grad)
		memset(m->written, 0, sizeof(m->written));
	for (size_t i = 1; i < upto; i++) {
		struct node *nd = &m->nodes[i];
		const struct gp_model_layer *l = nd->l;
		struct node *a = in_node(m, nd, 0);
		struct gp_buf **P = m->bufs[GP_MODEL_PARAM];

		switch (l->type) {
		case GP_LAYER_INPUT:
			break;
		case GP_LAYER_DENSE:
			if ((r = gp_gemm(be, false, true, n, l->out, a->size,
					 1.0f, a->out, P[nd->w], 0.0f,
					 nd->out)) < 0)
				return r;
			r = gp_bias_add(be, nd->out, P[nd->b], n, l->out,
					nd->fuse_relu);
			break;
		case GP_LAYER_CONV2D: {
			struct gp_conv2d_shape s;

			conv_shape(nd, a, n, &s);
			r = gp_conv2d_forward(be, a->out, P[nd->w], P[nd->b],
					      nd->out, &s);
			break;
		}
		case GP_LAYER_MAXPOOL2D:
		case GP_LAYER_AVGPOOL2D: {
			struct gp_pool2d_shape s;

			pool_shape(nd, a, n, &s);
			r = gp_pool2d_forward(be, l->type == GP_LAYER_MAXPOOL2D,
					      a->out, nd->out, nd->aux, &s);
			break;
		}
		case GP_LAYER_FLATTEN:
			break;
		case GP_LAYER_RELU:
			if (!(nd->alias && a->fuse_relu))
				r = gp_relu_forward(be, a->out, nd->out,
						    n * nd->size);
			break;
		case GP_LAYER_GELU:
			r = gp_gelu_forward(be, a->out, nd->out, n * nd->size);
			break;
		case GP_LAYER_DROPOUT:
			if (!want_grad || l->p == 0.0f) {
				r = gp_buf_copy(nd->out, a->out, n * nd->size);
				break;
			}
			if ((r = dropout_mask(m, nd, n)) < 0)
				return r;
			r = gp_mul(be, a->out, nd->aux, nd->out, n * nd->size);
			break;
		case GP_LAYER_LAYERNORM:
			r = gp_layernorm_forward(be, a->out, P[nd->w], P[nd->b],
						 nd->out, nd->aux,
						 n * l->c * l->h, l->w, l->eps);
			break;
		case GP_LAYER_GROUPNORM: {
			struct gp_groupnorm_shape s;

			groupnorm_shape(nd, n, &s);
			r = gp_groupnorm_forward(be, a->out, P[nd->w], P[nd->b],
						 nd->out, nd->aux, &s, l->eps);
			break;
		}
		case GP_LAYER_ADD:
			if ((r = gp_buf_copy(nd->out, a->out, n * nd->size)) < 0)
				return r;
			r = gp_axpy(be, n * nd->size, 1.0f,
				    in_node(m, nd, 1)->out, nd->out);
			break;
		case GP_LAYER_SOFTMAX_XENT:
		case GP_LAYER_MSE:
		case GP_LAYER_SEQ_XENT:
			r = forward_loss(m, nd, n, want_grad, ret);
			break;
		default:
			r = forward_seq(m, nd, n);
			break;
		}
		if (r < 0)
			return r;
	}
	return 0;
}

static int forward(struct gp_model *m, size_t n, bool want_grad,
		   struct gp_model_stats *ret)
{
	return forward_upto(m, n, want_grad, ret, m->spec.n_nodes);
}

int gp_model_logits(struct gp_model *m, const float *x, size_t n,
		    float *ret)
{
	const struct node *a;
	int r;

	if (!m || !x || !ret || n == 0 || n > m->max_batch)
		return -EINVAL;
	m->loaded = 0;
	if ((r = gp_buf_write(m->x, 0, x, n * m->spec.dims[0])) < 0 ||
	    (r = forward_upto(m, n, false, NULL, m->spec.n_nodes - 1)) < 0)
		return r;
	a = in_node(m, &m->nodes[m->spec.n_nodes - 1], 0);
	return gp_buf_read(a->out, 0, ret, n * a->size);
}

/* Momentum SGD of a layer's tensors in the fused step, once the layer no
 * longer needs its parameters: the gradient already sits in v. */
static int fused_update(struct gp_model *m, const struct node *nd, float lr)
{
	int r;

	int last = nd->b >= 0 ? nd->b : nd->w;

	for (int t = nd->w; t >= 0 && t <= last; t++) {
		r = gp_axpy(m->be,
			    m->tensors[t].rows * m->tensors[t].cols, -lr,
			    m->bufs[GP_MODEL_MOMENTUM][t],
			    m->bufs[GP_MODEL_PARAM][t]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Backward from the loss's input gradient. Unfused, the parameter
 * gradients go to the GRAD slots; fused, they accumulate into the
 * momentum (beta = mu) and each layer is updated (p -= lr * v) as soon as
 * its parameters are no longer needed. */
static int backward(struct gp_model *m, size_t n, bool fused, float lr,
		    float mu, int (*ready)(void *ctx, size_t layer), void *ctx)
{
	struct gp_backend *be = m->be;
	enum gp_model_slot slot = fused ? GP_MODEL_MOMENTUM : GP_MODEL_GRAD;
	float beta = fused ? mu : 0.0f;
	int r = 0;

	for (size_t i = m->spec.n_nodes - 1; i-- > 1;) {
		struct node *nd = &m->nodes[i];
		const struct gp_model_layer *l = nd->l;
		struct node *a = in_node(m, nd, 0);
		struct gp_buf **P = m->bufs[GP_MODEL_PARAM];
		struct gp_buf **G = m->bufs[slot];
		struct gp_buf *dy = nd->grad, *dx = NULL;
		bool acc = false;

		if (!nd->needs_grad)
			continue;
		/* Layers in place turn their gradient into their input's
		 * where it lies. */
		if (nd->alias) {
			if (l->type == GP_LAYER_RELU &&
			    (r = gp_relu_backward(be, nd->out, dy, dy,
						  n * nd->size)) < 0)
				return r;
			continue;
		}
		if (l->type == GP_LAYER_FLATTEN) {
			if ((r = grad_pass(m, nd, 0, dy, n)) < 0)
				return r;
			continue;
		}
		if (l->type == GP_LAYER_ADD) {
			if ((r = grad_pass(m, nd, 0, dy, n)) < 0 ||
			    (r = grad_pass(m, nd, 1, dy, n)) < 0)
				return r;
			continue;
		}
		if (a->needs_grad)
			dx = grad_begin(m, nd, 0, &acc);
		switch (l->type) {
		case GP_LAYER_DENSE:
			if ((r = gp_gemm(be, true, false, l->out, a->size, n,
					 1.0f, dy, a->out, beta, G[nd->w])) < 0 ||
			    (r = gp_col_sum(be, dy, n, l->out, beta,
					    G[nd->b])) < 0)
				return r;
			if (ready && (r = ready(ctx, nd->param_layer)) < 0)
				return r;
			if (dx)
				r = gp_gemm(be, false, false, n, a->size, l->out,
					    1.0f, dy, P[nd->w], 0.0f, dx);
			break;
		case GP_LAYER_CONV2D: {
			struct gp_conv2d_shape s;

			conv_shape(nd, a, n, &s);
			r = gp_conv2d_backward(be, a->out, P[nd->w], dy, dx,
					       G[nd->w], G[nd->b], beta, &s);
			if (r >= 0 && ready)
				r = ready(ctx, nd->param_layer);
			break;
		}
		case GP_LAYER_LAYERNORM:
			r = gp_layernorm_backward(be, a->out, P[nd->w], nd->aux,
						  dy, dx, G[nd->w], G[nd->b],
						  beta, n * l->c * l->h, l->w);
			if (r >= 0 && ready)
				r = ready(ctx, nd->param_layer);
			break;
		case GP_LAYER_GROUPNORM: {
			struct gp_groupnorm_shape s;

			groupnorm_shape(nd, n, &s);
			r = gp_groupnorm_backward(be, a->out, P[nd->w], nd->aux,
						  dy, dx, G[nd->w], G[nd->b],
						  beta, &s);
			if (r >= 0 && ready)
				r = ready(ctx, nd->param_layer);
			break;
		}
		case GP_LAYER_MAXPOOL2D:
		case GP_LAYER_AVGPOOL2D: {
			struct gp_pool2d_shape s;

			pool_shape(nd, a, n, &s);
			r = gp_pool2d_backward(be,
					       l->type == GP_LAYER_MAXPOOL2D,
					       dy, nd->aux, dx, &s);
			break;
		}
		case GP_LAYER_RELU:
			r = gp_relu_backward(be, nd->out, dy, dx, n * nd->size);
			break;
		case GP_LAYER_GELU:
			r = gp_gelu_backward(be, a->out, dy, dx, n * nd->size);
			break;
		case GP_LAYER_DROPOUT:
			r = l->p == 0.0f ? gp_buf_copy(dx, dy, n * nd->size)
					 : gp_mul(be, dy, nd->aux, dx,
						  n * nd->size);
			break;
		case GP_LAYER_EMBEDDING:
		case GP_LAYER_POSEMBED:
		case GP_LAYER_LINEAR:
		case GP_LAYER_ATTENTION:
			r = backward_seq(m, nd, n, G, beta, dx, ready, ctx);
			break;
		default:
			break;
		}
		if (r < 0)
			return r;
		if (dx && (r = grad_end(m, nd, 0, acc, n)) < 0)
			return r;
		if (fused && nd->w >= 0 && (r = fused_update(m, nd, lr)) < 0)
			return r;
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
				       labels + off * m->n_labels, rows);
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
	ret->labels = n * m->n_labels;
	return 0;
}
