/* The export writers (coordinator/export*.c): the tensor layout against
 * the model's own, the safetensors bytes read back with a JSON parser,
 * metadata escaping, refusals, and the ONNX ModelProto read back with
 * protobuf-c. test_export.py loads the files with PyTorch and onnx. */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "export.h"
#include "gp-config.h"
#include "model.h"
#include "test.h"

#if GP_HAVE_ONNX
#include "onnx.pb-c.h"
#endif

/* Every layer kind, values flat and 4-D, residual add, both losses. */
static const char *const models[] = {
	"784-256-128-10",
	"gradpool-model 1; input shape=1x28x28; conv2d conv1 out=4 kernel=3 "
	"padding=1; relu r1; maxpool2d p1 kernel=2; conv2d conv2 out=6 "
	"kernel=3 stride=2; avgpool2d p2 kernel=2 stride=1; layernorm ln; "
	"gelu g; dropout d p=0.5; dense fc out=12; add a in=fc,fc; flatten f; "
	"dense out out=10; softmax_xent loss",
	"gradpool-model 1; input shape=20; conv2d c out=3 kernel=1; "
	"dense logits out=5; mse loss",
	"gradpool-model 1; input shape=2x6x6; conv2d c out=4 kernel=3; "
	"groupnorm gn groups=2 eps=1e-3; flatten f; dense out out=3; "
	"softmax_xent loss",
};

struct model_fixture {
	struct gp_model_spec spec;
	struct gp_export_tensor t[2 * GP_MODEL_MAX_NODES];
	size_t n;
	float *vals;
};

static void fixture(const char *text, struct model_fixture *f)
{
	char err[256];
	size_t total = 0, off = 0;

	ASSERT_OK(gp_model_spec_parse(text, &f->spec, err, sizeof(err)));
	ASSERT_OK(gp_export_layout(&f->spec, f->t, &f->n));
	for (size_t i = 0; i < f->n; i++)
		total += f->t[i].count;
	f->vals = malloc(total * sizeof(float));
	ASSERT_NOT_NULL(f->vals);
	for (size_t i = 0; i < total; i++)
		f->vals[i] = (float)i * 0.25f - 3.0f;
	for (size_t i = 0; i < f->n; i++) {
		f->t[i].data = f->vals + off;
		off += f->t[i].count;
	}
}

/* gp_export_layout() names and sizes the tensors exactly as the model
 * (and so the coordinator's parameter store) does. */
static void test_layout(void)
{
	struct gp_backend *be;

	ASSERT_OK(gp_backend_create_cpu(1, &be));
	for (size_t k = 0; k < sizeof(models) / sizeof(models[0]); k++) {
		struct model_fixture f;
		struct gp_model *m;

		fixture(models[k], &f);
		ASSERT_OK(gp_model_create(be, &f.spec, 1, &m));
		ASSERT_EQ(f.n, gp_model_tensor_count(m));
		for (size_t i = 0; i < f.n; i++) {
			struct gp_tensor_info ti;

			ASSERT_OK(gp_model_tensor_info(m, i, &ti));
			ASSERT_STR_EQ(f.t[i].name, ti.name);
			ASSERT_EQ(f.t[i].count, ti.rows * ti.cols);
			ASSERT_EQ(f.t[i].dims[0], ti.rows);
		}
		gp_model_destroy(m);
		free(f.vals);
	}
	gp_backend_destroy(be);

	/* PyTorch's shapes. */
	{
		struct model_fixture f;

		fixture(models[1], &f);
		ASSERT_STR_EQ(f.t[0].name, "conv1.weight");
		ASSERT_EQ(f.t[0].n_dims, 4);
		ASSERT_EQ(f.t[0].dims[1], 1);
		ASSERT_EQ(f.t[0].dims[3], 3);
		ASSERT_STR_EQ(f.t[1].name, "conv1.bias");
		ASSERT_EQ(f.t[1].n_dims, 1);
		ASSERT_STR_EQ(f.t[4].name, "ln.weight");
		ASSERT_EQ(f.t[4].n_dims, 1);
		ASSERT_EQ(f.t[4].dims[0], 5); /* W of 6 x 5 x 5 */
		ASSERT_STR_EQ(f.t[6].name, "fc.weight");
		ASSERT_EQ(f.t[6].n_dims, 2);
		ASSERT_EQ(f.t[6].dims[1], 6 * 5 * 5); /* read flat */
		free(f.vals);
		/* nn.GroupNorm(2, 4): a weight and a bias per channel. */
		fixture(models[3], &f);
		ASSERT_STR_EQ(f.t[2].name, "gn.weight");
		ASSERT_EQ(f.t[2].n_dims, 1);
		ASSERT_EQ(f.t[2].dims[0], 4);
		ASSERT_STR_EQ(f.t[3].name, "gn.bias");
		ASSERT_EQ(f.t[3].dims[0], 4);
		free(f.vals);
	}
}

static char *write_mem(const struct gp_export_model *m, bool onnx,
		       size_t *ret_len, int *ret_r)
{
	char *buf = NULL;
	FILE *f = open_memstream(&buf, ret_len);

	ASSERT_NOT_NULL(f);
	*ret_r = onnx ? gp_export_onnx(m, f, NULL, 0)
		      : gp_export_safetensors(m, f);
	ASSERT_OK(fclose(f));
	return buf;
}

static uint64_t le64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void test_safetensors(void)
{
	struct model_fixture f;
	struct gp_export_meta meta[] = {
		{ "format", "pt" },
		{ "quote\"key", "line\none\ttab \\ \x01 caf\xc3\xa9 bad\xff"
				"\xc0\xaf end" },
	};
	struct gp_export_model m;
	struct json_object *h, *o, *v;
	unsigned char *buf;
	uint64_t n, off = 0;
	size_t len;
	int r;

	fixture(models[1], &f);
	m = (struct gp_export_model){ &f.spec, f.t, f.n, meta, 2, 0 };
	buf = (unsigned char *)write_mem(&m, false, &len, &r);
	ASSERT_OK(r);
	n = le64(buf);
	ASSERT_EQ(n % 8, 0);
	ASSERT(8 + n <= len);
	ASSERT_EQ(buf[8], '{');
	for (uint64_t i = n; buf[8 + i - 1] != '}'; i--)
		ASSERT_EQ(buf[8 + i - 1], ' ');
	{
		char *text = strndup((char *)buf + 8, n);

		h = json_tokener_parse(text);
		free(text);
	}
	ASSERT_NOT_NULL(h);
	ASSERT(json_object_object_get_ex(h, "__metadata__", &o));
	ASSERT(json_object_object_get_ex(o, "quote\"key", &v));
	ASSERT_STR_EQ(json_object_get_string(v),
		      "line\none\ttab \\ \x01 caf\xc3\xa9 bad\xef\xbf\xbd"
		      "\xef\xbf\xbd\xef\xbf\xbd end");
	ASSERT_EQ(json_object_object_length(h), f.n + 1);
	for (size_t i = 0; i < f.n; i++) {
		struct json_object *shape, *offs;

		ASSERT(json_object_object_get_ex(h, f.t[i].name, &o));
		ASSERT(json_object_object_get_ex(o, "dtype", &v));
		ASSERT_STR_EQ(json_object_get_string(v), "F32");
		ASSERT(json_object_object_get_ex(o, "shape", &shape));
		ASSERT_EQ(json_object_array_length(shape), f.t[i].n_dims);
		for (size_t d = 0; d < f.t[i].n_dims; d++)
			ASSERT_EQ(json_object_get_int64(
					  json_object_array_get_idx(shape, d)),
				  f.t[i].dims[d]);
		ASSERT(json_object_object_get_ex(o, "data_offsets", &offs));
		ASSERT_EQ(json_object_get_int64(json_object_array_get_idx(offs, 0)),
			  off);
		ASSERT_EQ(json_object_get_int64(json_object_array_get_idx(offs, 1)),
			  off + 4 * f.t[i].count);
		/* Little-endian f32, as given. */
		for (size_t k = 0; k < f.t[i].count; k += 17) {
			const unsigned char *p = buf + 8 + n + off + 4 * k;
			uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 |
				     (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
			float x;

			memcpy(&x, &u, 4);
			ASSERT(x == f.t[i].data[k]);
		}
		off += 4 * f.t[i].count;
	}
	ASSERT_EQ(8 + n + off, len); /* the tensors cover the buffer */
	json_object_put(h);
	free(buf);

	/* No metadata: no "__metadata__" key, still valid JSON. */
	m.n_meta = 0;
	buf = (unsigned char *)write_mem(&m, false, &len, &r);
	ASSERT_OK(r);
	ASSERT(memmem(buf, len, "__metadata__", 12) == NULL);
	free(buf);

	/* A failing write is an error, not a short file called complete. */
	{
		FILE *full = fopen("/dev/full", "wb");

		if (full) {
			setvbuf(full, NULL, _IONBF, 0);
			ASSERT_EQ(gp_export_safetensors(&m, full), -EIO);
			fclose(full);
		}
	}
	free(f.vals);
}

/* Tensors that do not follow the layout are refused before a byte is
 * written. */
static void test_refusals(void)
{
	struct model_fixture f;
	struct gp_export_model m;
	struct gp_export_meta bad_meta = { "k", NULL };
	const float *keep;
	size_t len;
	char *buf;
	int r;

	fixture(models[0], &f);
	m = (struct gp_export_model){ &f.spec, f.t, f.n, NULL, 0, 0 };
	ASSERT_OK(gp_export_check(&m));
	m.n_tensors = f.n - 1;
	ASSERT_EQ(gp_export_check(&m), -EINVAL);
	m.n_tensors = f.n;
	f.t[2].dims[1] += 1;
	ASSERT_EQ(gp_export_check(&m), -EINVAL);
	f.t[2].dims[1] -= 1;
	f.t[3].name[0] = 'g';
	ASSERT_EQ(gp_export_check(&m), -EINVAL);
	f.t[3].name[0] = 'f';
	keep = f.t[4].data;
	f.t[4].data = NULL;
	ASSERT_EQ(gp_export_check(&m), -EINVAL);
	f.t[4].data = keep;
	m.meta = &bad_meta;
	m.n_meta = 1;
	ASSERT_EQ(gp_export_check(&m), -EINVAL);
	buf = write_mem(&m, false, &len, &r);
	ASSERT_EQ(r, -EINVAL);
	ASSERT_EQ(len, 0);
	free(buf);
	buf = write_mem(&m, true, &len, &r);
	ASSERT_EQ(r, gp_export_have_onnx() ? -EINVAL : -ENOTSUP);
	ASSERT_EQ(len, 0);
	free(buf);
	m.n_meta = 0;
	ASSERT_OK(gp_export_check(&m));
	free(f.vals);
}

#if GP_HAVE_ONNX
static const Onnx__TensorProto *find_init(const Onnx__GraphProto *g,
					  const char *name)
{
	for (size_t i = 0; i < g->n_initializer; i++)
		if (strcmp(g->initializer[i]->name, name) == 0)
			return g->initializer[i];
	return NULL;
}

static void test_onnx(void)
{
	static const char *const mlp_ops[] = { "Gemm", "Relu", "Gemm", "Relu",
					       "Gemm", "Identity", "Softmax" };
	struct gp_export_meta meta[] = { { "gradpool.checkpoint", "7" } };

	for (size_t k = 0; k < sizeof(models) / sizeof(models[0]); k++) {
		struct model_fixture f;
		struct gp_export_model m;
		Onnx__ModelProto *mp;
		const Onnx__GraphProto *g;
		size_t len;
		char *buf;
		int r;

		fixture(models[k], &f);
		m = (struct gp_export_model){ &f.spec, f.t, f.n, meta, 1, 0 };
		buf = write_mem(&m, true, &len, &r);
		ASSERT_OK(r);
		mp = onnx__model_proto__unpack(NULL, len, (uint8_t *)buf);
		ASSERT_NOT_NULL(mp);
		ASSERT_EQ(mp->ir_version, GP_EXPORT_ONNX_IR_VERSION);
		ASSERT_EQ(mp->n_opset_import, 1);
		ASSERT_STR_EQ(mp->opset_import[0]->domain, "");
		ASSERT_EQ(mp->opset_import[0]->version, GP_EXPORT_ONNX_OPSET);
		ASSERT_STR_EQ(mp->producer_name, "gradpool");
		ASSERT_EQ(mp->n_metadata_props, 1);
		ASSERT_STR_EQ(mp->metadata_props[0]->value, "7");
		ASSERT(strncmp(mp->doc_string, "gradpool-model 1; input", 23) == 0);
		g = mp->graph;
		ASSERT_EQ(g->n_input, 1);
		ASSERT_STR_EQ(g->input[0]->name, "input");
		ASSERT_STR_EQ(g->output[0]->name, "output");
		/* Every parameter is an initializer with its PyTorch shape
		 * and its bytes. */
		for (size_t i = 0; i < f.n; i++) {
			const Onnx__TensorProto *t = find_init(g, f.t[i].name);

			ASSERT_NOT_NULL(t);
			ASSERT_EQ(t->data_type, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
			ASSERT_EQ(t->n_dims, f.t[i].n_dims);
			for (size_t d = 0; d < t->n_dims; d++)
				ASSERT_EQ(t->dims[d], f.t[i].dims[d]);
			ASSERT_EQ(t->raw_data.len, 4 * f.t[i].count);
			ASSERT_MEM_EQ(t->raw_data.data, f.t[i].data,
				      4 * f.t[i].count);
		}
		if (k == 0) {
			ASSERT_EQ(g->n_node, 7);
			for (size_t i = 0; i < g->n_node; i++)
				ASSERT_STR_EQ(g->node[i]->op_type, mlp_ops[i]);
			ASSERT_EQ(g->n_output, 2);
			ASSERT_STR_EQ(g->output[1]->name, "logits");
			ASSERT_EQ(g->input[0]->type->tensor_type->shape->n_dim, 2);
			ASSERT_STR_EQ(g->input[0]->type->tensor_type->shape->dim[0]
					      ->dim_param,
				      "batch");
		} else if (k == 2) {
			/* A conv after a flat input reshapes it first; the
			 * mse output is the prediction; a layer named
			 * "logits" does not take the output's name. */
			ASSERT_STR_EQ(g->node[0]->op_type, "Reshape");
			ASSERT_STR_EQ(g->node[1]->op_type, "Conv");
			ASSERT_EQ(g->n_output, 1);
			ASSERT_STR_EQ(g->node[g->n_node - 1]->input[0],
				      "logits/value");
		}
		onnx__model_proto__free_unpacked(mp, NULL);
		free(buf);
		free(f.vals);
	}
}
#endif

int main(void)
{
	test_layout();
	test_safetensors();
	test_refusals();
#if GP_HAVE_ONNX
	test_onnx();
#endif
	printf("export: all tests passed\n");
	return 0;
}
