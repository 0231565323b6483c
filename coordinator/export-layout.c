/* The parameter tensors of a model as PyTorch shapes them: the order and
 * names of gp_model_tensor_info(), the shapes of nn.Linear, nn.Conv2d,
 * nn.LayerNorm, nn.GroupNorm and nn.Embedding. Pure: shared by both writers and the tests. */
#include "export.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static void put(struct gp_export_tensor *t, const char *layer,
		const char *what, size_t n_dims, const int64_t *dims)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->name, sizeof(t->name), "%s.%s", layer, what);
	t->n_dims = n_dims;
	t->count = 1;
	for (size_t i = 0; i < n_dims; i++) {
		t->dims[i] = dims[i];
		t->count *= (size_t)dims[i];
	}
}

int gp_export_layout(const struct gp_model_spec *spec,
		     struct gp_export_tensor *ret, size_t *ret_n)
{
	size_t n = 0;

	if (!gp_model_spec_valid(spec) || !ret || !ret_n)
		return -EINVAL;
	for (size_t i = 0; i < spec->n_nodes; i++) {
		const struct gp_model_layer *l = &spec->layers[i];
		const struct gp_model_layer *a = &spec->layers[l->in[0]];
		int64_t d[4];

		switch (l->type) {
		case GP_LAYER_DENSE:
			/* Any input is read flat, as torch.flatten(x, 1). */
			d[0] = l->out;
			d[1] = (int64_t)a->c * a->h * a->w;
			put(&ret[n++], l->name, "weight", 2, d);
			put(&ret[n++], l->name, "bias", 1, d);
			break;
		case GP_LAYER_CONV2D:
			d[0] = l->out;
			d[1] = a->c;
			d[2] = d[3] = l->kernel;
			put(&ret[n++], l->name, "weight", 4, d);
			put(&ret[n++], l->name, "bias", 1, d);
			break;
		case GP_LAYER_EMBEDDING:
			/* nn.Embedding(vocab, dim). */
			d[0] = l->vocab;
			d[1] = l->out;
			put(&ret[n++], l->name, "weight", 2, d);
			break;
		case GP_LAYER_POSEMBED:
			/* nn.Embedding(t, dim), looked up with arange(t). */
			d[0] = l->h;
			d[1] = l->w;
			put(&ret[n++], l->name, "weight", 2, d);
			break;
		case GP_LAYER_LINEAR:
			/* nn.Linear over the last axis. */
			d[0] = l->out;
			d[1] = a->w;
			put(&ret[n++], l->name, "weight", 2, d);
			put(&ret[n++], l->name, "bias", 1, d);
			break;
		case GP_LAYER_LAYERNORM:
		case GP_LAYER_GROUPNORM:
			/* Over the last axis, nn.LayerNorm(W); or per
			 * channel, nn.GroupNorm(G, C). */
			d[0] = l->type == GP_LAYER_LAYERNORM ? l->w : l->c;
			put(&ret[n++], l->name, "weight", 1, d);
			put(&ret[n++], l->name, "bias", 1, d);
			break;
		default:
			break;
		}
	}
	*ret_n = n;
	return 0;
}

int gp_export_check(const struct gp_export_model *m)
{
	struct gp_export_tensor want[2 * GP_MODEL_MAX_NODES];
	size_t n;

	if (!m || gp_export_layout(m->spec, want, &n) < 0 ||
	    m->n_tensors != n || (n && !m->tensors) || (m->n_meta && !m->meta))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		const struct gp_export_tensor *t = &m->tensors[i];

		if (strcmp(t->name, want[i].name) != 0 ||
		    t->n_dims != want[i].n_dims || t->count != want[i].count ||
		    !t->data ||
		    memcmp(t->dims, want[i].dims,
			   want[i].n_dims * sizeof(t->dims[0])) != 0)
			return -EINVAL;
	}
	for (size_t i = 0; i < m->n_meta; i++)
		if (!m->meta[i].key || !m->meta[i].value)
			return -EINVAL;
	for (size_t i = n; i < n + m->n_extra; i++) {
		const struct gp_export_tensor *t = &m->tensors[i];
		size_t count = 1;

		if (!t->data || !t->name[0] || t->n_dims == 0 ||
		    t->n_dims > GP_EXPORT_MAX_DIMS)
			return -EINVAL;
		for (size_t d = 0; d < t->n_dims; d++)
			count *= (size_t)t->dims[d];
		if (count != t->count)
			return -EINVAL;
		for (size_t j = 0; j < i; j++)
			if (strcmp(m->tensors[j].name, t->name) == 0)
				return -EINVAL;
	}
	return 0;
}
