/* The coordinator's adaptive optimiser: AdamW (Loshchilov and Hutter,
 * as PyTorch's torch.optim.AdamW), applied to every gradient the
 * parameter store accepts. Pure logic, no I/O.
 *
 * For each parameter w with gradient g (already clipped) at step t:
 *     w -= lr * weight_decay * w            (decoupled weight decay)
 *     m  = beta1 * m + (1 - beta1) * g
 *     v  = beta2 * v + (1 - beta2) * g^2
 *     w -= lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
 * The staleness weight of an update scales its lr, not its gradient:
 * Adam divides the gradient's scale out, so a scaled gradient would be a
 * full step. The store (params.h) still checks, refuses and clips every
 * gradient and keeps the versions; this module owns the moments m and v
 * and the step count, and they travel in checkpoints (GP_CKPT_OPTIM). */
#ifndef GP_OPTIM_H
#define GP_OPTIM_H

#include <stddef.h>
#include <stdint.h>

struct gp_params;

struct gp_optim_config {
	float beta1;        /* [0, 1) */
	float beta2;        /* [0, 1) */
	float eps;          /* (0, 1) */
	float weight_decay; /* [0, 1) */
};

struct gp_optim;

/* Creates AdamW state for n parameters (moments zero, step 0). cfg is
 * borrowed. *ret is owned by the caller (gp_optim_destroy()). -EINVAL for
 * n == 0 or a value out of range, -ENOMEM. */
int gp_optim_create(const struct gp_optim_config *cfg, size_t n,
		    struct gp_optim **ret);

/* Frees o; NULL is a no-op. Detach it first (gp_optim_attach(NULL, p)). */
void gp_optim_destroy(struct gp_optim *o);

/* Makes the store apply its accepted gradients through o (borrowed: it
 * must outlive the store or be detached with o NULL). The store must
 * have as many floats as o, no momentum and no weight decay of its own:
 * -EINVAL otherwise. Groups of momentum sums are refused by such a store
 * (AdamW's K steps cannot be had from their sums). */
int gp_optim_attach(struct gp_optim *o, struct gp_params *p);

/* The steps taken (PyTorch's state "step"). */
uint64_t gp_optim_steps(const struct gp_optim *o);

/* The configuration in force. */
const struct gp_optim_config *gp_optim_config(const struct gp_optim *o);

/* The first and second moments, n floats each, in the store's flat
 * order; borrowed, valid as long as o. */
const float *gp_optim_m(const struct gp_optim *o);
const float *gp_optim_v(const struct gp_optim *o);

/* One AdamW step over floats [off, off + n) of the flat parameters w
 * (borrowed, n floats at w) with gradient g times gscale, at rate lr.
 * Counts no step: gp_optim_begin() starts one, before its ranges. */
void gp_optim_begin(struct gp_optim *o);
void gp_optim_step_range(struct gp_optim *o, float *w, const float *g,
			 size_t off, size_t n, float gscale, float lr);

/* Encodes the state for a checkpoint (envelope of bytes.h, magic "GPOP"):
 * *ret_data owned by the caller (free()). Returns 0 or -ENOMEM. */
int gp_optim_save(const struct gp_optim *o, uint8_t **ret_data,
		  size_t *ret_len);

/* Decodes a checkpoint's state into a new optimiser (*ret, owned by the
 * caller) for n parameters. data is borrowed. -EBADMSG for malformed
 * bytes or another parameter count, -ENOMEM. */
int gp_optim_load(const uint8_t *data, size_t len, size_t n,
		  struct gp_optim **ret);

#endif
