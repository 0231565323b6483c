/* AdamW's step (Loshchilov and Hutter, as PyTorch's torch.optim.AdamW),
 * on host floats: the one formula the coordinator's optimiser
 * (coordinator/optim.h) and an agent's local steps (agent/worker.h,
 * GP_CAP_INNER_ADAMW) both take, so that the two cannot drift apart.
 * Pure arithmetic, no state of its own.
 *
 * For each parameter w with gradient g (times gscale, the clipping
 * factor) at step t (1 for the first):
 *     w -= lr * weight_decay * w            (decoupled weight decay)
 *     m  = beta1 * m + (1 - beta1) * g
 *     v  = beta2 * v + (1 - beta2) * g^2
 *     w -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps) */
#ifndef GP_ADAMW_H
#define GP_ADAMW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gp_adamw_config {
	float beta1;        /* [0, 1) */
	float beta2;        /* [0, 1) */
	float eps;          /* (0, 1) */
	float weight_decay; /* [0, 1) */
};

/* Whether every value of c is in its range (NULL: false). */
bool gp_adamw_config_ok(const struct gp_adamw_config *c);

/* One step over n parameters: w, m and v (n floats each, borrowed) are
 * updated in place from g (n floats, borrowed) times gscale, at rate lr
 * and step t >= 1 (the bias corrections' exponent). */
void gp_adamw_step(const struct gp_adamw_config *c, float *w, float *m,
		   float *v, const float *g, size_t n, float gscale, float lr,
		   uint64_t t);

#endif
