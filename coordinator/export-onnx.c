/* ONNX: the model as a graph of standard operators (opset
 * GP_EXPORT_ONNX_OPSET) with the parameters as initializers, serialised by
 * protobuf-c with the C code generated at build time from ONNX's own
 * onnx.proto (Debian's libonnx-dev ships it). protobuf-c is used here
 * only. Which operators each layer becomes is in docs/operations.md
 * ("Exporting the trained model"):
 *
 *   input        graph input "input", float [batch, W] or [batch, C, H, W]
 *   dense        Gemm(x, W, b, transB=1), after Flatten(axis=1) if x is 4-D
 *   conv2d       Conv(kernel_shape, strides, pads)
 *   maxpool2d    MaxPool(kernel_shape, strides)
 *   avgpool2d    AveragePool(kernel_shape, strides)
 *   flatten      Flatten(axis=1)
 *   relu         Relu
 *   gelu         x * 0.5 * (1 + Erf(x * 1/sqrt(2))) (Gelu is opset 20)
 *   dropout      Dropout(x, ratio) in inference mode: the identity
 *   layernorm    LayerNormalization(axis=-1, epsilon)
 *   groupnorm    Reshape to [N, G, -1], InstanceNormalization(scale 1,
 *                bias 0, epsilon), Reshape to [N, C, H, W], then Mul by
 *                the weight and Add the bias, each reshaped to [C, 1, 1]
 *                (GroupNormalization is opset 18; onnx 1.12 stops at 17)
 *   add          Add
 *   softmax_xent outputs "output" = Softmax(axis=1) of the flattened
 *                input and "logits" = that input
 *   mse          output "output" = the input
 *
 * A 2-D value that a 4-D operator needs (a conv after a flat input) is
 * reshaped to [-1, C, H, W]; the shapes are the model's own, which the
 * parser has checked. */
#include "export.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "gp-config.h"

#if GP_HAVE_ONNX

#include "gp-endian.h"
#include "onnx.pb-c.h"

/* Everything the builder allocates, freed at once. */
struct builder {
	void **blocks;
	size_t n_blocks, cap_blocks;
	Onnx__NodeProto **nodes;
	size_t n_nodes, cap_nodes;
	Onnx__TensorProto **inits;
	size_t n_inits, cap_inits;
	int err;
};

static void *b_alloc(struct builder *b, size_t size)
{
	void *p;

	if (b->err)
		return NULL;
	if (b->n_blocks == b->cap_blocks) {
		size_t cap = b->cap_blocks ? 2 * b->cap_blocks : 256;
		void **nb = realloc(b->blocks, cap * sizeof(*nb));

		if (!nb) {
			b->err = -ENOMEM;
			return NULL;
		}
		b->blocks = nb;
		b->cap_blocks = cap;
	}
	p = calloc(1, size ? size : 1);
	if (!p) {
		b->err = -ENOMEM;
		return NULL;
	}
	b->blocks[b->n_blocks++] = p;
	return p;
}

static char *b_printf(struct builder *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static char *b_printf(struct builder *b, const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->err = b->err ? b->err : -EINVAL;
		return NULL;
	}
	s = b_alloc(b, (size_t)n + 1);
	if (!s)
		return NULL;
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

static bool b_push(struct builder *b, void ***arr, size_t *n, size_t *cap,
		   void *item)
{
	if (b->err || !item)
		return false;
	if (*n == *cap) {
		size_t nc = *cap ? 2 * *cap : 64;
		void **na = realloc(*arr, nc * sizeof(*na));

		if (!na) {
			b->err = -ENOMEM;
			return false;
		}
		*arr = na;
		*cap = nc;
	}
	(*arr)[(*n)++] = item;
	return true;
}

static void b_free(struct builder *b)
{
	for (size_t i = 0; i < b->n_blocks; i++)
		free(b->blocks[i]);
	free(b->blocks);
	free(b->nodes);
	free(b->inits);
}

/* A node op(inputs) -> out, added to the graph in order. inputs and out
 * are copied. */
static Onnx__NodeProto *node(struct builder *b, const char *op,
			     const char *name, size_t n_in,
			     const char *const *inputs, const char *out)
{
	Onnx__NodeProto *n = b_alloc(b, sizeof(*n));
	char **in = b_alloc(b, n_in * sizeof(char *));
	char **outs = b_alloc(b, sizeof(char *));

	if (!n || !in || !outs || !out || !name)
		goto fail;
	for (size_t i = 0; i < n_in; i++)
		if (!inputs[i])
			goto fail;
	onnx__node_proto__init(n);
	for (size_t i = 0; i < n_in; i++)
		in[i] = b_printf(b, "%s", inputs[i]);
	outs[0] = b_printf(b, "%s", out);
	n->n_input = n_in;
	n->input = in;
	n->n_output = 1;
	n->output = outs;
	n->name = b_printf(b, "%s", name);
	n->op_type = b_printf(b, "%s", op);
	if (!b_push(b, (void ***)&b->nodes, &b->n_nodes, &b->cap_nodes, n))
		return NULL;
	return n;
fail:
	/* An earlier allocation failed and left a name NULL. */
	b->err = b->err ? b->err : -ENOMEM;
	return NULL;
}

static Onnx__AttributeProto *attr(struct builder *b, Onnx__NodeProto *n,
				  const char *name)
{
	Onnx__AttributeProto *a, **arr;

	if (!n)
		return NULL;
	a = b_alloc(b, sizeof(*a));
	arr = b_alloc(b, (n->n_attribute + 1) * sizeof(*arr));
	if (!a || !arr)
		return NULL;
	onnx__attribute_proto__init(a);
	a->name = b_printf(b, "%s", name);
	if (n->n_attribute)
		memcpy(arr, n->attribute, n->n_attribute * sizeof(*arr));
	arr[n->n_attribute++] = a;
	n->attribute = arr;
	return a;
}

static void attr_int(struct builder *b, Onnx__NodeProto *n, const char *name,
		     int64_t v)
{
	Onnx__AttributeProto *a = attr(b, n, name);

	if (!a)
		return;
	a->has_type = 1;
	a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
	a->has_i = 1;
	a->i = v;
}

static void attr_float(struct builder *b, Onnx__NodeProto *n,
		       const char *name, float v)
{
	Onnx__AttributeProto *a = attr(b, n, name);

	if (!a)
		return;
	a->has_type = 1;
	a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
	a->has_f = 1;
	a->f = v;
}

static void attr_ints(struct builder *b, Onnx__NodeProto *n, const char *name,
		      size_t count, int64_t v)
{
	Onnx__AttributeProto *a = attr(b, n, name);
	int64_t *vals = b_alloc(b, count * sizeof(*vals));

	if (!a || !vals)
		return;
	for (size_t i = 0; i < count; i++)
		vals[i] = v;
	a->has_type = 1;
	a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
	a->n_ints = count;
	a->ints = vals;
}

/* An initializer: name, shape, and its bytes (already little-endian,
 * borrowed for as long as the builder lives). */
static void init_raw(struct builder *b, const char *name, int32_t type,
		     size_t n_dims, const int64_t *dims, const void *bytes,
		     size_t len)
{
	Onnx__TensorProto *t = b_alloc(b, sizeof(*t));
	int64_t *d = b_alloc(b, n_dims * sizeof(*d));

	if (!t || !d)
		return;
	onnx__tensor_proto__init(t);
	if (n_dims)
		memcpy(d, dims, n_dims * sizeof(*d));
	t->n_dims = n_dims;
	t->dims = d;
	t->has_data_type = 1;
	t->data_type = type;
	t->name = b_printf(b, "%s", name);
	t->has_raw_data = 1;
	t->raw_data.len = len;
	t->raw_data.data = (uint8_t *)bytes;
	b_push(b, (void ***)&b->inits, &b->n_inits, &b->cap_inits, t);
}

/* A float scalar constant. */
static void init_scalar(struct builder *b, const char *name, float v)
{
	uint8_t *p = b_alloc(b, 4);
	uint32_t u;

	if (!p)
		return;
	memcpy(&u, &v, 4);
	gp_put_le32(p, u);
	init_raw(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 0, NULL, p, 4);
}

/* A tensor's floats, little-endian, in builder memory. */
static void init_floats(struct builder *b, const struct gp_export_tensor *t)
{
	uint8_t *p = b_alloc(b, t->count * 4);

	if (!p)
		return;
	for (size_t i = 0; i < t->count; i++) {
		uint32_t u;

		memcpy(&u, &t->data[i], 4);
		gp_put_le32(p + 4 * i, u);
	}
	init_raw(b, t->name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, t->n_dims,
		 t->dims, p, t->count * 4);
}

/* A graph input or output: float, [batch, dims...]. */
static Onnx__ValueInfoProto *value_info(struct builder *b, const char *name,
					size_t n_dims, const int64_t *dims)
{
	Onnx__ValueInfoProto *v = b_alloc(b, sizeof(*v));
	Onnx__TypeProto *tp = b_alloc(b, sizeof(*tp));
	Onnx__TypeProto__Tensor *tt = b_alloc(b, sizeof(*tt));
	Onnx__TensorShapeProto *sh = b_alloc(b, sizeof(*sh));
	Onnx__TensorShapeProto__Dimension **dv =
		b_alloc(b, (n_dims + 1) * sizeof(*dv));

	if (!v || !tp || !tt || !sh || !dv)
		return NULL;
	onnx__value_info_proto__init(v);
	onnx__type_proto__init(tp);
	onnx__type_proto__tensor__init(tt);
	onnx__tensor_shape_proto__init(sh);
	for (size_t i = 0; i <= n_dims; i++) {
		dv[i] = b_alloc(b, sizeof(**dv));
		if (!dv[i])
			return NULL;
		onnx__tensor_shape_proto__dimension__init(dv[i]);
		if (i == 0) {
			dv[i]->value_case =
				ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
			dv[i]->dim_param = b_printf(b, "batch");
		} else {
			dv[i]->value_case =
				ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
			dv[i]->dim_value = dims[i - 1];
		}
	}
	sh->n_dim = n_dims + 1;
	sh->dim = dv;
	tt->has_elem_type = 1;
	tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
	tt->shape = sh;
	tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
	tp->tensor_type = tt;
	v->name = b_printf(b, "%s", name);
	v->type = tp;
	return v;
}

/* A 1-D int64 constant of n values (a shape for Reshape). */
static void init_int64s(struct builder *b, const char *name, size_t n,
			const int64_t *v)
{
	uint8_t *raw = b_alloc(b, 8 * n);
	int64_t dim = (int64_t)n;

	if (!raw)
		return;
	for (size_t k = 0; k < n; k++)
		gp_put_le64(raw + 8 * k, (uint64_t)v[k]);
	init_raw(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, &dim, raw,
		 8 * n);
}

/* A 1-D float constant of n copies of v. */
static void init_fill(struct builder *b, const char *name, size_t n, float v)
{
	uint8_t *raw = b_alloc(b, 4 * n);
	int64_t dim = (int64_t)n;
	uint32_t u;

	if (!raw)
		return;
	memcpy(&u, &v, 4);
	for (size_t k = 0; k < n; k++)
		gp_put_le32(raw + 4 * k, u);
	init_raw(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, &dim, raw,
		 4 * n);
}

/* out = Reshape(in, shape), with the shape as a constant named
 * out/shape. */
static void reshape(struct builder *b, const char *in, const char *out,
		    size_t n, const int64_t *shape)
{
	char *sname = b_printf(b, "%s/shape", out);
	const char *ins[2] = { in, sname };

	if (!sname)
		return;
	init_int64s(b, sname, n, shape);
	node(b, "Reshape", out, 2, ins, out);
}

/* Group norm x (4-D) of layer l into value v, its weight and bias named w
 * and bias: nn.GroupNorm's definition in opset 17's operators. */
static void group_norm(struct builder *b, const struct gp_model_layer *l,
		       const char *x, const char *w, const char *bias,
		       const char *v)
{
	const int64_t grouped[3] = { 0, l->groups, -1 };
	const int64_t back[4] = { 0, l->c, l->h, l->w };
	const int64_t per_channel[3] = { l->c, 1, 1 };
	char *g = b_printf(b, "%s/grouped", l->name);
	char *one = b_printf(b, "%s/ones", l->name);
	char *zero = b_printf(b, "%s/zeros", l->name);
	char *normed = b_printf(b, "%s/normed", l->name);
	char *full = b_printf(b, "%s/4d", l->name);
	char *w3 = b_printf(b, "%s/weight3", l->name);
	char *b3 = b_printf(b, "%s/bias3", l->name);
	char *scaled = b_printf(b, "%s/scaled", l->name);
	const char *ins[3];
	Onnx__NodeProto *n;

	if (b->err)
		return;
	reshape(b, x, g, 3, grouped);
	init_fill(b, one, l->groups, 1.0f);
	init_fill(b, zero, l->groups, 0.0f);
	ins[0] = g;
	ins[1] = one;
	ins[2] = zero;
	n = node(b, "InstanceNormalization", normed, 3, ins, normed);
	attr_float(b, n, "epsilon", l->eps);
	reshape(b, normed, full, 4, back);
	reshape(b, w, w3, 3, per_channel);
	reshape(b, bias, b3, 3, per_channel);
	ins[0] = full;
	ins[1] = w3;
	node(b, "Mul", scaled, 2, ins, scaled);
	ins[0] = scaled;
	ins[1] = b3;
	node(b, "Add", v, 2, ins, v);
}

/* Each layer's output: its value's name and rank (2: [batch, W], 4:
 * [batch, C, H, W]). */
struct value {
	const char *name;
	int rank;
};

/* The value of layer i in the rank an operator needs, reshaping or
 * flattening it first when it has the other one. */
static const char *as_rank(struct builder *b, const struct gp_model_spec *spec,
			   struct value *vals, uint32_t i, int rank,
			   const char *user)
{
	const struct gp_model_layer *l = &spec->layers[i];
	char *out;

	if (vals[i].rank == rank)
		return vals[i].name;
	if (rank == 2) {
		Onnx__NodeProto *n;

		out = b_printf(b, "%s/flat", user);
		n = node(b, "Flatten", out, 1, &vals[i].name, out);
		attr_int(b, n, "axis", 1);
		return out;
	}
	{
		int64_t *shape = b_alloc(b, 4 * sizeof(int64_t));
		uint8_t *raw = b_alloc(b, 4 * 8);
		const char *ins[2];
		char *sname = b_printf(b, "%s/shape", user);

		out = b_printf(b, "%s/4d", user);
		if (!shape || !raw || !sname || !out)
			return NULL;
		shape[0] = -1;
		shape[1] = l->c;
		shape[2] = l->h;
		shape[3] = l->w;
		for (size_t k = 0; k < 4; k++)
			gp_put_le64(raw + 8 * k, (uint64_t)shape[k]);
		{
			int64_t four = 4;

			init_raw(b, sname, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1,
				 &four, raw, 32);
		}
		ins[0] = vals[i].name;
		ins[1] = sname;
		node(b, "Reshape", out, 2, ins, out);
		return out;
	}
}

static const char *param(const struct gp_export_model *m, const char *layer,
			 const char *what, char *buf, size_t len)
{
	snprintf(buf, len, "%s.%s", layer, what);
	for (size_t i = 0; i < m->n_tensors; i++)
		if (strcmp(m->tensors[i].name, buf) == 0)
			return buf;
	return NULL;
}

static int build_graph(struct builder *b, const struct gp_export_model *m,
		       Onnx__GraphProto *g, char *err, size_t err_len)
{
	const struct gp_model_spec *spec = m->spec;
	struct value vals[GP_MODEL_MAX_NODES];
	Onnx__ValueInfoProto **outputs = b_alloc(b, 2 * sizeof(*outputs));
	Onnx__ValueInfoProto **inputs = b_alloc(b, sizeof(*inputs));
	size_t n_out = 0;
	const char *missing = NULL;

	if (!outputs || !inputs)
		return -ENOMEM;
	for (size_t t = 0; t < m->n_tensors; t++)
		init_floats(b, &m->tensors[t]);
	for (size_t i = 0; i < spec->n_nodes && !b->err; i++) {
		const struct gp_model_layer *l = &spec->layers[i];
		const char *x = NULL, *v, *ins[3];
		char wname[GP_MODEL_TENSOR_NAME_MAX], bname[GP_MODEL_TENSOR_NAME_MAX];
		Onnx__NodeProto *n;

		missing = l->name;
		/* A layer's value has the layer's name, unless that is one
		 * of the graph outputs' names. */
		vals[i].name = strcmp(l->name, "output") == 0 ||
					       strcmp(l->name, "logits") == 0
				       ? b_printf(b, "%s/value", l->name)
				       : l->name;
		vals[i].rank = 4;
		v = vals[i].name;
		if (l->type != GP_LAYER_INPUT)
			x = vals[l->in[0]].name;
		switch (l->type) {
		case GP_LAYER_INPUT: {
			int64_t d[3] = { l->c, l->h, l->w };

			vals[i].name = "input";
			vals[i].rank = l->c == 1 && l->h == 1 ? 2 : 4;
			inputs[0] = vals[i].rank == 2
					    ? value_info(b, "input", 1, &d[2])
					    : value_info(b, "input", 3, d);
			break;
		}
		case GP_LAYER_DENSE:
			ins[0] = as_rank(b, spec, vals, l->in[0], 2, l->name);
			ins[1] = param(m, l->name, "weight", wname, sizeof(wname));
			ins[2] = param(m, l->name, "bias", bname, sizeof(bname));
			if (!ins[1] || !ins[2])
				goto no_params;
			n = node(b, "Gemm", v, 3, ins, v);
			attr_int(b, n, "transB", 1);
			vals[i].rank = 2;
			break;
		case GP_LAYER_CONV2D:
			ins[0] = as_rank(b, spec, vals, l->in[0], 4, l->name);
			ins[1] = param(m, l->name, "weight", wname, sizeof(wname));
			ins[2] = param(m, l->name, "bias", bname, sizeof(bname));
			if (!ins[1] || !ins[2])
				goto no_params;
			n = node(b, "Conv", v, 3, ins, v);
			attr_ints(b, n, "kernel_shape", 2, l->kernel);
			attr_ints(b, n, "strides", 2, l->stride);
			attr_ints(b, n, "pads", 4, l->pad);
			break;
		case GP_LAYER_MAXPOOL2D:
		case GP_LAYER_AVGPOOL2D:
			ins[0] = as_rank(b, spec, vals, l->in[0], 4, l->name);
			n = node(b, l->type == GP_LAYER_MAXPOOL2D ? "MaxPool"
								   : "AveragePool",
				 v, 1, ins, v);
			attr_ints(b, n, "kernel_shape", 2, l->kernel);
			attr_ints(b, n, "strides", 2, l->stride);
			break;
		case GP_LAYER_FLATTEN:
			n = node(b, "Flatten", v, 1, &x, v);
			attr_int(b, n, "axis", 1);
			vals[i].rank = 2;
			break;
		case GP_LAYER_RELU:
			node(b, "Relu", v, 1, &x, v);
			vals[i].rank = vals[l->in[0]].rank;
			break;
		case GP_LAYER_GELU: {
			/* The exact GELU, x Phi(x), as nn.GELU() and our
			 * layer compute it. */
			char *c_rs2 = b_printf(b, "%s/rsqrt2", l->name);
			char *c_one = b_printf(b, "%s/one", l->name);
			char *c_half = b_printf(b, "%s/half", l->name);
			char *s1 = b_printf(b, "%s/scaled", l->name);
			char *s2 = b_printf(b, "%s/erf", l->name);
			char *s3 = b_printf(b, "%s/erf1", l->name);
			char *s4 = b_printf(b, "%s/xerf1", l->name);

			if (b->err)
				break;
			init_scalar(b, c_rs2, (float)M_SQRT1_2);
			init_scalar(b, c_one, 1.0f);
			init_scalar(b, c_half, 0.5f);
			ins[0] = x;
			ins[1] = c_rs2;
			node(b, "Mul", s1, 2, ins, s1);
			ins[0] = s1;
			node(b, "Erf", s2, 1, ins, s2);
			ins[0] = s2;
			ins[1] = c_one;
			node(b, "Add", s3, 2, ins, s3);
			ins[0] = x;
			ins[1] = s3;
			node(b, "Mul", s4, 2, ins, s4);
			ins[0] = s4;
			ins[1] = c_half;
			node(b, "Mul", v, 2, ins, v);
			vals[i].rank = vals[l->in[0]].rank;
			break;
		}
		case GP_LAYER_DROPOUT: {
			/* Inference: training_mode is absent (false), so
			 * Dropout passes its input through; the ratio is
			 * kept for whoever trains the graph further. */
			char *c_p = b_printf(b, "%s/ratio", l->name);

			if (b->err)
				break;
			init_scalar(b, c_p, l->p);
			ins[0] = x;
			ins[1] = c_p;
			node(b, "Dropout", v, 2, ins, v);
			vals[i].rank = vals[l->in[0]].rank;
			break;
		}
		case GP_LAYER_LAYERNORM:
			ins[0] = x;
			ins[1] = param(m, l->name, "weight", wname, sizeof(wname));
			ins[2] = param(m, l->name, "bias", bname, sizeof(bname));
			if (!ins[1] || !ins[2])
				goto no_params;
			n = node(b, "LayerNormalization", v, 3, ins, v);
			attr_int(b, n, "axis", -1);
			attr_float(b, n, "epsilon", l->eps);
			vals[i].rank = vals[l->in[0]].rank;
			break;
		case GP_LAYER_GROUPNORM:
			ins[0] = as_rank(b, spec, vals, l->in[0], 4, l->name);
			ins[1] = param(m, l->name, "weight", wname, sizeof(wname));
			ins[2] = param(m, l->name, "bias", bname, sizeof(bname));
			if (!ins[1] || !ins[2])
				goto no_params;
			group_norm(b, l, ins[0], ins[1], ins[2], v);
			break;
		case GP_LAYER_ADD: {
			int rank = vals[l->in[0]].rank == vals[l->in[1]].rank
					   ? vals[l->in[0]].rank
					   : 4;

			ins[0] = as_rank(b, spec, vals, l->in[0], rank, l->name);
			ins[1] = as_rank(b, spec, vals, l->in[1], rank, l->name);
			node(b, "Add", v, 2, ins, v);
			vals[i].rank = rank;
			break;
		}
		case GP_LAYER_SOFTMAX_XENT: {
			const struct gp_model_layer *a = &spec->layers[l->in[0]];
			int64_t classes = (int64_t)a->c * a->h * a->w;

			ins[0] = as_rank(b, spec, vals, l->in[0], 2, l->name);
			node(b, "Identity", "logits", 1, ins, "logits");
			ins[0] = "logits";
			n = node(b, "Softmax", "output", 1, ins, "output");
			attr_int(b, n, "axis", 1);
			outputs[n_out++] = value_info(b, "output", 1, &classes);
			outputs[n_out++] = value_info(b, "logits", 1, &classes);
			break;
		}
		case GP_LAYER_MSE: {
			const struct gp_model_layer *a = &spec->layers[l->in[0]];
			int64_t d[3] = { a->c, a->h, a->w };

			node(b, "Identity", "output", 1, &x, "output");
			outputs[n_out++] = vals[l->in[0]].rank == 2
						   ? value_info(b, "output", 1, &d[2])
						   : value_info(b, "output", 3, d);
			break;
		}		default:
			/* The language model's layers: safetensors only. */
			snprintf(err, err_len,
				 "layer \"%s\" (%s) has no ONNX form yet; "
				 "export with --format safetensors",
				 l->name, gp_model_layer_type_name(l->type));
			return -ENOTSUP;
		}
	}
	if (b->err)
		return b->err;
	g->name = b_printf(b, "gradpool-model");
	g->n_node = b->n_nodes;
	g->node = b->nodes;
	g->n_initializer = b->n_inits;
	g->initializer = b->inits;
	g->n_input = 1;
	g->input = inputs;
	g->n_output = n_out;
	g->output = outputs;
	return b->err;
no_params:
	snprintf(err, err_len, "layer \"%s\" has no parameters", missing);
	return -EINVAL;
}

/* Writes what protobuf-c packs straight to the file. */
struct file_buffer {
	ProtobufCBuffer base;
	FILE *f;
	bool failed;
};

static void file_append(ProtobufCBuffer *buf, size_t len, const uint8_t *data)
{
	struct file_buffer *fb = (struct file_buffer *)buf;

	if (!fb->failed && fwrite(data, 1, len, fb->f) != len)
		fb->failed = true;
}

bool gp_export_have_onnx(void)
{
	return true;
}

int gp_export_onnx(const struct gp_export_model *m, FILE *f, char *err,
		   size_t err_len)
{
	struct builder b = { 0 };
	Onnx__ModelProto model = ONNX__MODEL_PROTO__INIT;
	Onnx__GraphProto graph = ONNX__GRAPH_PROTO__INIT;
	Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT;
	Onnx__OperatorSetIdProto *opsets[1] = { &opset };
	Onnx__StringStringEntryProto **props = NULL;
	struct file_buffer fb = { .base = { file_append }, .f = f };
	char text[GP_MODEL_DESC_MAX];
	char dummy[1];
	int r;

	if (!err) {
		err = dummy;
		err_len = sizeof(dummy);
	}
	if (m && m->n_extra) {
		snprintf(err, err_len, "the optimizer's state goes into "
			 "safetensors only");
		return -ENOTSUP;
	}
	if (!f || gp_export_check(m) < 0) {
		snprintf(err, err_len, "the parameters do not fit the model");
		return -EINVAL;
	}
	r = build_graph(&b, m, &graph, err, err_len);
	if (r < 0)
		goto out;
	props = b_alloc(&b, (m->n_meta + 1) * sizeof(*props));
	for (size_t i = 0; props && i < m->n_meta; i++) {
		props[i] = b_alloc(&b, sizeof(**props));
		if (!props[i])
			break;
		onnx__string_string_entry_proto__init(props[i]);
		props[i]->key = b_printf(&b, "%s", m->meta[i].key);
		props[i]->value = b_printf(&b, "%s", m->meta[i].value);
	}
	if (b.err) {
		r = b.err;
		goto out;
	}
	opset.domain = (char *)"";
	opset.has_version = 1;
	opset.version = GP_EXPORT_ONNX_OPSET;
	model.has_ir_version = 1;
	model.ir_version = GP_EXPORT_ONNX_IR_VERSION;
	model.n_opset_import = 1;
	model.opset_import = opsets;
	model.producer_name = (char *)"gradpool";
	model.producer_version = (char *)GP_VERSION;
	model.graph = &graph;
	model.n_metadata_props = m->n_meta;
	model.metadata_props = props;
	{
		struct gp_model_spec desc = *m->spec;

		/* The graph's description, in the description form even for
		 * the shorthand, whose layers the parser has expanded. */
		desc.version = GP_MODEL_FORMAT_VERSION;
		if (gp_model_spec_format(&desc, text, sizeof(text)) >= 0)
			model.doc_string = text;
	}
	/* Protobuf messages stop at 2 GiB. */
	if (onnx__model_proto__get_packed_size(&model) > INT32_MAX) {
		snprintf(err, err_len, "the model is larger than ONNX's 2 GiB");
		r = -E2BIG;
		goto out;
	}
	onnx__model_proto__pack_to_buffer(&model, &fb.base);
	if (fb.failed) {
		snprintf(err, err_len, "%s", strerror(errno));
		r = -EIO;
	}
out:
	if (r == -ENOMEM)
		snprintf(err, err_len, "out of memory");
	b_free(&b);
	return r;
}

#else /* !GP_HAVE_ONNX */

bool gp_export_have_onnx(void)
{
	return false;
}

int gp_export_onnx(const struct gp_export_model *m, FILE *f, char *err,
		   size_t err_len)
{
	(void)m;
	(void)f;
	if (err && err_len)
		snprintf(err, err_len,
			 "this build has no ONNX support (protobuf-c and "
			 "onnx.proto were not found when it was built)");
	return -ENOTSUP;
}

#endif
