/* Recomputing an update: see recompute.h. It follows agent/worker.c's
 * steps: the same model calls in the same order give the same floats. */
#include "recompute.h"

#include <errno.h>

#include "data.h"
#include "model.h"
#include "tokens.h"

int gp_recompute(struct gp_model *model, const struct gp_recompute_data *data,
		 uint64_t job_seed, bool sums, float mu,
		 const struct gp_recompute_item *items, size_t k,
		 const float *w0, const float *v0, float *x, int32_t *y,
		 float *ret_a, float *ret_b)
{
	size_t n = gp_model_param_count(model);
	double mk = 1, cv = 0, lsum = 0;
	int r;

	if (k == 0 || (!sums && k != 1))
		return -EINVAL;
	r = gp_model_write_all(model, GP_MODEL_PARAM, w0);
	if (r >= 0 && sums)
		r = gp_model_write_all(model, GP_MODEL_MOMENTUM, v0);
	for (size_t j = 0; r >= 0 && j < k; j++) {
		const struct gp_recompute_item *it = &items[j];
		struct gp_model_stats st;

		if (it->samples == 0 ||
		    it->samples > gp_model_max_batch(model))
			return -EINVAL;
		/* As the agent converts them (gp_data_to_floats; a
		 * window's ids as floats, gp_tokens_unpack). */
		r = data->tok ? gp_tokens_gather(data->tok, data->len, it->idx,
						 it->samples, x, y) :
				gp_data_gather(data->train, it->idx,
					       it->samples, x, y);
		if (r >= 0)
			r = gp_model_set_batch(model, x, y, it->samples);
		gp_model_set_seed(model, gp_model_minibatch_seed(
						 job_seed, it->epoch,
						 it->minibatch));
		if (r < 0)
			break;
		if (sums)
			r = gp_model_train_step(model, it->samples, it->lr, mu,
						&st);
		else
			r = gp_model_compute_grads(model, it->samples, &st);
	}
	if (r < 0)
		return r;
	if (!sums)
		return gp_model_read_all(model, GP_MODEL_GRAD, ret_a);
	r = gp_model_read_all(model, GP_MODEL_MOMENTUM, ret_a);
	if (r >= 0)
		r = gp_model_read_all(model, GP_MODEL_PARAM, ret_b);
	if (r < 0)
		return r;
	for (size_t j = 0; j < k; j++) {
		mk *= mu;
		cv += items[j].lr * mk;
		lsum += items[j].lr;
	}
	{
		float fmk = (float)mk, fcv = (float)cv;
		float inv = lsum > 0 ? (float)(1.0 / lsum) : 0.0f;

		for (size_t i = 0; i < n; i++) {
			float v0i = v0[i];

			ret_a[i] -= fmk * v0i;
			ret_b[i] = (w0[i] - ret_b[i] - fcv * v0i) * inv;
		}
	}
	return 0;
}
