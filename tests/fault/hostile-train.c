/* The hostile member's honest gradient: see hostile-train.h. */
#include "hostile-train.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"

struct htrain {
	struct gp_backend *be;
	struct gp_model *model;
	size_t n_tensors, total;
	uint32_t rows[64], cols[64];
	size_t off[64];
	float *params;
	float *x;
	int32_t *labels;
	uint32_t batch, features;
};

void htrain_destroy(struct htrain *t)
{
	if (!t)
		return;
	gp_model_destroy(t->model);
	gp_backend_destroy(t->be);
	free(t->params);
	free(t->x);
	free(t->labels);
	free(t);
}

int htrain_create(const char *model, uint32_t batch, struct htrain **ret)
{
	struct gp_model_spec spec;
	struct htrain *t = calloc(1, sizeof(*t));
	int r;

	if (!t)
		return -ENOMEM;
	r = gp_model_spec_parse(model, &spec, NULL, 0);
	if (r == 0)
		r = gp_backend_create_cpu(1, &t->be);
	if (r == 0)
		r = gp_model_create(t->be, &spec, batch, &t->model);
	if (r < 0)
		goto fail;
	t->batch = batch;
	t->n_tensors = gp_model_tensor_count(t->model);
	if (t->n_tensors > 64) {
		r = -EINVAL;
		goto fail;
	}
	for (size_t i = 0; i < t->n_tensors; i++) {
		struct gp_tensor_info ti;

		gp_model_tensor_info(t->model, i, &ti);
		t->rows[i] = (uint32_t)ti.rows;
		t->cols[i] = (uint32_t)ti.cols;
		t->off[i] = t->total;
		t->total += ti.rows * ti.cols;
	}
	t->features = (uint32_t)spec.dims[0];
	t->params = calloc(t->total, sizeof(float));
	t->x = malloc((size_t)batch * t->features * sizeof(float));
	t->labels = malloc(batch * sizeof(int32_t));
	if (!t->params || !t->x || !t->labels) {
		r = -ENOMEM;
		goto fail;
	}
	*ret = t;
	return 0;
fail:
	htrain_destroy(t);
	return r < 0 ? r : -EINVAL;
}

size_t htrain_size(const struct htrain *t)
{
	return t->total;
}

size_t htrain_tensors(const struct htrain *t)
{
	return t->n_tensors;
}

void htrain_shape(const struct htrain *t, size_t i, uint32_t *ret_rows,
		  uint32_t *ret_cols)
{
	*ret_rows = t->rows[i];
	*ret_cols = t->cols[i];
}

int htrain_load(struct htrain *t, const struct gp_msg_param_shards *ps)
{
	for (size_t k = 0; k < ps->n_blocks; k++) {
		const struct gp_msg_block *b = &ps->blocks[k];
		size_t i = b->tensor;

		if (i >= t->n_tensors)
			continue; /* momentum blocks: not asked for */
		if ((uint64_t)b->row_start * t->cols[i] + b->count >
		    (uint64_t)t->rows[i] * t->cols[i])
			return -EINVAL;
		if (gp_msg_block_read(b, t->params + t->off[i] +
				      (size_t)b->row_start * t->cols[i],
				      b->count) < 0)
			return -EINVAL;
	}
	return 0;
}

int htrain_grad(struct htrain *t, const struct gp_msg_minibatch *mb,
		bool flip_labels, float *out, float *ret_loss)
{
	struct gp_model_stats st;
	uint32_t n = mb->samples;
	int r;

	if (n == 0 || n > t->batch || mb->features != t->features ||
	    mb->pixels_len != (size_t)n * t->features || mb->labels_len != n)
		return -EINVAL;
	for (size_t j = 0; j < (size_t)n * t->features; j++)
		t->x[j] = (float)mb->pixels[j] * (1.0f / 255.0f);
	for (uint32_t s = 0; s < n; s++)
		t->labels[s] = flip_labels ? 9 - mb->labels[s] : mb->labels[s];
	for (size_t i = 0; i < t->n_tensors; i++) {
		r = gp_model_write(t->model, GP_MODEL_PARAM, i, 0, t->rows[i],
				   t->params + t->off[i]);
		if (r < 0)
			return r;
	}
	r = gp_model_set_batch(t->model, t->x, t->labels, n);
	if (r == 0)
		r = gp_model_compute_grads(t->model, n, &st);
	for (size_t i = 0; r == 0 && i < t->n_tensors; i++)
		r = gp_model_read(t->model, GP_MODEL_GRAD, i, 0, t->rows[i],
				  out + t->off[i]);
	if (r < 0)
		return r;
	*ret_loss = (float)st.loss;
	return 0;
}
