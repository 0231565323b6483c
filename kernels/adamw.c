/* AdamW's step: see adamw.h. */
#include "adamw.h"

#include <math.h>

bool gp_adamw_config_ok(const struct gp_adamw_config *c)
{
	return c && c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 &&
	       c->beta2 < 1 && c->eps > 0 && c->eps < 1 &&
	       c->weight_decay >= 0 && c->weight_decay < 1;
}

void gp_adamw_step(const struct gp_adamw_config *c, float *restrict w,
		   float *restrict m, float *restrict v,
		   const float *restrict g, size_t n, float gscale, float lr,
		   uint64_t t)
{
	float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
	float c1 = (float)(1.0 - pow(b1, (double)t));
	float c2 = (float)(1.0 - pow(b2, (double)t));
	float decay = 1.0f - lr * c->weight_decay;
	float step = lr / c1, inv_c2 = 1.0f / c2;

	for (size_t i = 0; i < n; i++) {
		float gi = gscale * g[i];

		m[i] = b1 * m[i] + (1.0f - b1) * gi;
		v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
		w[i] = w[i] * decay - step * m[i] / (sqrtf(v[i] * inv_c2) + eps);
	}
}
