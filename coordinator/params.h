/* The parameter server's store: named f32 tensors (row-major, rows x cols),
 * split into shards of whole rows, each shard carrying a version, plus the
 * server-side optimizer that applies gradients additively as they arrive.
 * Pure logic, no I/O.
 *
 * Versions. The store has a version counter that starts at 1 and is bumped
 * by every change (an applied update, gp_params_set_tensor). A shard's
 * version is the store version at which its bytes last changed. An agent
 * that holds the parameters of version v needs exactly the shards whose
 * version is > v (gp_params_changed_since); v = 0 means it holds nothing.
 * An update leaves a shard's version alone when it cannot have changed it:
 * its gradient rows are all zero, its momentum is zero and weight decay is
 * off (for example the first-layer rows of always-black border pixels when
 * momentum is 0).
 *
 * Optimizer: SGD with momentum (PyTorch's torch.optim.SGD without
 * dampening or Nesterov):
 *     g  = clip(grad) + weight_decay * w
 *     v  = momentum * v + g
 *     w -= lr * v
 * where clip() scales the whole gradient down to clip_norm when its global
 * L2 norm exceeds it. A gradient with a NaN/Inf, the wrong size, or a norm
 * above reject_norm is refused with nothing changed. */
#ifndef GP_PARAMS_H
#define GP_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reason.h"

#define GP_PARAMS_MAX_TENSORS 4096u
#define GP_PARAMS_MAX_NAME 63u
/* 2^28 floats = 1 GiB of parameters (and as much momentum). */
#define GP_PARAMS_MAX_FLOATS (UINT64_C(1) << 28)
#define GP_PARAMS_MAX_SHARDS (UINT64_C(1) << 20)
/* Default shard size when neither rows_per_shard nor shard_bytes is set. */
#define GP_PARAMS_DEFAULT_SHARD_BYTES (64u * 1024u)

/* A tensor's name and shape; name is borrowed by gp_params_create (copied). */
struct gp_tensor_shape {
	const char *name;
	uint32_t rows;
	uint32_t cols;
};

struct gp_params_config {
	/* Rows per shard; 0: as many whole rows as fit in shard_bytes (at least
	 * one row). */
	uint32_t rows_per_shard;
	uint32_t shard_bytes;  /* 0: GP_PARAMS_DEFAULT_SHARD_BYTES */
	float lr;              /* >= 0 */
	float momentum;        /* [0, 1) */
	float weight_decay;    /* >= 0 */
	float clip_norm;       /* > 0: clip the global norm to this; 0: off */
	float reject_norm;     /* > 0: refuse gradients with a larger norm */
};

/* One shard: rows [row_begin, row_begin + rows) of tensor `tensor`, stored
 * at floats [offset, offset + count) of the flat parameter array. */
struct gp_params_shard {
	uint32_t tensor;
	uint32_t row_begin;
	uint32_t rows;
	uint32_t cols;
	size_t offset;
	size_t count;
	uint64_t version;
};

/* What an applied update did. */
struct gp_params_apply_info {
	double norm;          /* global L2 norm of the gradient as received */
	bool clipped;         /* scaled down to clip_norm */
	uint64_t version;     /* store version after the update */
	uint32_t shards_changed;
	/* The step's own effect, when it is linear in what it was given
	 * (gp_params_linear(), and not a delta): beyond what the momentum
	 * already there did (mk v to the momentum, -c v to the parameters:
	 * mu^K and sum_j lr_j mu^j, a group's gp_params_sums_coefficients()),
	 * the momentum moved by ka times
	 * the gradient (a group's sum a) and the parameters by kb times the
	 * gradient (a group's sum b), in exact arithmetic; the floats differ
	 * by their rounding. linear false: ka, kb are 0. */
	bool linear;
	float ka, kb;
};

struct gp_params;

/* Creates a store of n tensors, all zero, at version 1. shapes and cfg are
 * borrowed. *ret is returned-and-owned-by-caller (gp_params_destroy()).
 * Returns 0, -EINVAL (no tensor, a zero dimension, a name empty or longer
 * than GP_PARAMS_MAX_NAME or repeated, more than GP_PARAMS_MAX_TENSORS,
 * GP_PARAMS_MAX_FLOATS or GP_PARAMS_MAX_SHARDS, an out-of-range config
 * value), -ENOMEM. */
int gp_params_create(const struct gp_params_config *cfg,
		     const struct gp_tensor_shape *shapes, size_t n,
		     struct gp_params **ret);

/* Frees the store; NULL is a no-op. */
void gp_params_destroy(struct gp_params *p);

/* The config in force (rows_per_shard as given, not resolved). */
const struct gp_params_config *gp_params_config(const struct gp_params *p);

/* Sets the learning rate (a schedule); refused (-EINVAL) unless finite and
 * >= 0. */
int gp_params_set_lr(struct gp_params *p, float lr);

size_t gp_params_tensor_count(const struct gp_params *p);

/* Shape of tensor i (name borrowed from the store, valid until destroy) and
 * *ret_offset (optional): its first float in the flat array. Returns 0 or
 * -ENOENT. */
int gp_params_tensor(const struct gp_params *p, size_t i,
		     struct gp_tensor_shape *ret_shape, size_t *ret_offset);

/* Whether gp_params_apply_scaled() and gp_params_apply_sums() report
 * their effect (gp_params_apply_info.linear): no weight decay, no step
 * hook, no outer optimiser. */
bool gp_params_linear(const struct gp_params *p);

/* Index of the tensor with this name, or -ENOENT. */
int gp_params_find(const struct gp_params *p, const char *name);

/* Total number of floats of all tensors (the size of a full gradient). */
size_t gp_params_size(const struct gp_params *p);

/* The flat parameter array (tensor after tensor, row-major), borrowed:
 * valid until the next change. */
const float *gp_params_values(const struct gp_params *p);

/* Checks that a gradient piece announced as rows x cols for tensor i fits
 * it. Returns 0 or GP_REASON_SHAPE (also for a bad i). */
int gp_params_check_tensor(const struct gp_params *p, size_t i, uint32_t rows,
			   uint32_t cols);

/* Checks a row block of a gradient as it travels (tensor, first row, rows,
 * element count) against the layout and gives the float offset where it
 * goes in a full gradient buffer. rows == 0 means the whole tensor (then
 * row_start must be 0). Returns 0 with *ret_offset set, or GP_REASON_SHAPE. */
int gp_params_check_block(const struct gp_params *p, uint32_t tensor,
			  uint32_t row_start, uint32_t rows, uint64_t count,
			  size_t *ret_offset);

/* Index of the shard that starts at row row_start of tensor, or -ENOENT
 * (also when row_start is inside a shard rather than at its start). */
int gp_params_find_shard(const struct gp_params *p, uint32_t tensor,
			 uint32_t row_start);

/* Overwrites tensor i with count floats from src (initialisation); bumps the
 * version of the store and of the tensor's shards. src is borrowed. Returns
 * 0 or -EINVAL (bad i or count != rows * cols). Leaves momentum alone. */
int gp_params_set_tensor(struct gp_params *p, size_t i, const float *src,
			 size_t count);

/* The flat momentum (velocity) array, laid out as gp_params_values(),
 * borrowed: valid until the next change. */
const float *gp_params_momentum(const struct gp_params *p);

/* Takes an effect back (coordinator/verify.c's rollback): subtracts dw
 * from the parameters and dv from the momentum (n == gp_params_size()
 * doubles each, borrowed) and bumps the version of every shard, so that
 * every agent's next pull carries the result. Counts no update. Returns
 * 0 or -EINVAL. */
int gp_params_undo(struct gp_params *p, const double *dw, const double *dv,
		   size_t n);

/* Store version (see above) and the number of updates applied. */
uint64_t gp_params_version(const struct gp_params *p);
uint64_t gp_params_updates(const struct gp_params *p);

size_t gp_params_shard_count(const struct gp_params *p);

/* Describes shard i. Returns 0 or -ENOENT. */
int gp_params_shard(const struct gp_params *p, size_t i,
		    struct gp_params_shard *ret);

/* Borrowed pointer to the floats of shard i (count floats), valid until the
 * next change, or NULL for a bad i. */
const float *gp_params_shard_data(const struct gp_params *p, size_t i);

/* The same for shard i's momentum (velocity). */
const float *gp_params_shard_momentum(const struct gp_params *p, size_t i);

/* Copies shard i's floats into dst (room for cap floats). Returns the count
 * copied, -ENOENT for a bad i, -ENOBUFS if cap is too small. */
int gp_params_copy_shard(const struct gp_params *p, size_t i, float *dst,
			 size_t cap);

/* Lists the shards whose version is > since (in shard order): writes up to
 * cap indices to ret_idx (may be NULL when cap is 0) and returns how many
 * there are in all. since = 0 lists every shard. */
size_t gp_params_changed_since(const struct gp_params *p, uint64_t since,
			       uint32_t *ret_idx, size_t cap);

/* The number of values (floats) in the shards gp_params_changed_since()
 * lists for `since`: what a pull from that version sends. */
uint64_t gp_params_changed_values(const struct gp_params *p, uint64_t since);

/* Global L2 norm of n floats (accumulated in double). Returns 0 with
 * *ret_norm set, or GP_REASON_NONFINITE if any value is NaN/Inf. */
int gp_params_grad_norm(const float *grad, size_t n, double *ret_norm);

/* Applies one gradient (the mean over a minibatch) for all tensors, laid out
 * like the flat parameter array. grad is borrowed. Returns 0 with *ret_info
 * (optional) filled, or a reason with nothing changed: SHAPE (n !=
 * gp_params_size()), NONFINITE, NORM (above reject_norm). */
int gp_params_apply(struct gp_params *p, const float *grad, size_t n,
		    struct gp_params_apply_info *ret_info);

/* gp_params_apply() of the gradient times `weight` (staleness), in (0, 1]:
 * the norm is checked and clipped on the gradient as received, the weight
 * applied after clipping, as gp_params_apply_sums() does with its scale.
 * Returns what gp_params_apply() does, or -EINVAL for a bad weight. */
int gp_params_apply_scaled(struct gp_params *p, const float *grad, size_t n,
			   float weight, struct gp_params_apply_info *ret_info);

/* A group of K minibatches' gradients g_1..g_K, computed one after the
 * other (GP_UPDATE_SUMS in proto/msg.h): with a_j = mu a_(j-1) + g_j,
 * a = a_K and b = sum_j lrs[j] a_j / sum_j lrs[j]. */
struct gp_params_sums {
	const float *a;
	const float *b;
	const float *lrs;   /* K learning rates, in the order computed */
	/* The K rates of the momentum already there (c below); NULL: lrs.
	 * A stale update's rates are those of its minibatches, handed out
	 * long before; the momentum is the pool's now (apply.c). */
	const float *carry_lrs;
	uint32_t count;     /* K >= 1 */
	float scale;        /* applied to a and b (staleness), in (0, 1] */
	/* The share of the K steps the momentum already there lives
	 * through, in (0, 1]; 0: 1 (gp_params_sums_coefficients()). */
	float carry_time;
};

/* What a group's step does to the momentum already there: it moves the
 * parameters by *ret_c times it and multiplies it by *ret_mk. With
 * carry_time t = 1 (or 0): c = sum_j lr'_j mu^j (lr'_j the carry_lrs,
 * else the lrs) and mk = mu^K. A stale group, scaled by f for its
 * staleness, counts as t = f of the K steps of the pool's time: mk =
 * mu^(tK) and c times (1 - mu^(tK)) / (1 - mu^K), so that the momentum
 * coasts as far as it decays. At t = 1 its K steps would each coast the
 * pool's momentum with almost no gradient (f small) to steer it: a
 * straggler's group at f 0.05 moved the parameters further than a fast
 * agent's whole run, and test accuracy fell 20-40 points for a moment.
 * -EINVAL for a bad rate or count. apply.c takes verification's
 * coefficients from here too, so both agree to the bit. */
int gp_params_sums_coefficients(double mu, const struct gp_params_sums *sums,
				double *ret_c, double *ret_mk);

/* Applies the K momentum-SGD steps of a group at once, exactly as K calls
 * of gp_params_apply() with g_1..g_K and lrs[j] would (up to rounding):
 * w -= (sum_j lr_j mu^j) v + (sum_j lr_j) b; v = mu^K v + a (with
 * carry_lrs and carry_time, gp_params_sums_coefficients()'s c and mk for
 * the first sum and mu^K). The norm
 * checked and clipped (both a and b) is the larger of a's and b's divided
 * by sum_i mu^(K-i) (for a, a weighted mean gradient). The store's own lr is not
 * used. Counts K updates (gp_params_updates()) and one version. sums and
 * its arrays are borrowed; n is the length of a and b. Returns 0 with
 * *ret_info (optional) filled, or a reason with nothing changed: SHAPE,
 * NONFINITE, NORM; -EINVAL for K == 0, a bad lr or scale, or a store
 * with weight decay (not a linear step). */
int gp_params_apply_sums(struct gp_params *p, const struct gp_params_sums *sums,
			 size_t n, struct gp_params_apply_info *ret_info);

/* A run's change from an agent's local AdamW steps (GP_UPDATE_DELTA in
 * proto/msg.h): d = w_start - w_end over the run's K minibatches. */
struct gp_params_delta {
	const float *d;
	double lr_sum;      /* sum of the run's K rates, >= 0 */
	uint32_t count;     /* K >= 1 */
	float scale;        /* applied to d (staleness), in (0, 1] */
};

/* A sanity bound on a delta, per parameter: an AdamW step moves w_i by
 * lr (|m^/(sqrt(v^) + eps)| + weight_decay |w_i|), and |m^|/sqrt(v^) is
 * 1 at the first step and later at most gp_job_adamw_ratio() (about 1.2
 * for nanoGPT's 0.9 / 0.95, 7.3 for 0.9 / 0.999), which a job with
 * inner_optimizer = adamw keeps at most GP_JOB_INNER_RATIO_MAX (job.h),
 * half of this. With reject_norm
 * on, a delta with some |d_i| > lr_sum * GP_PARAMS_DELTA_STEP_MAX *
 * (1 + |w_i|) is refused (GP_REASON_NORM): it cannot come from the steps
 * it claims. */
#define GP_PARAMS_DELTA_STEP_MAX 100.0

/* Applies a run's delta: w -= scale * d, through the outer optimiser
 * when there is one (the delta is then its descent d). Neither the
 * store's own momentum nor an optimiser hook's state is touched: the
 * run's AdamW state is the agent's. No clipping (the agent clipped each
 * gradient). Counts K updates (gp_params_updates()) and one version.
 * dl and its array are borrowed; n is the length of d. Returns 0 with
 * *ret_info (optional) filled, its norm |d| / lr_sum (|d| when lr_sum
 * is 0), or a reason with nothing changed: SHAPE, NONFINITE, NORM (the
 * bound above); -EINVAL for K == 0, a bad lr_sum or scale. */
int gp_params_apply_delta(struct gp_params *p,
			  const struct gp_params_delta *dl, size_t n,
			  struct gp_params_apply_info *ret_info);

/* Another optimiser in place of SGD (optim.h's AdamW): for every accepted
 * gradient the store calls begin(ctx) once, then step(ctx, w, g, off, n,
 * gscale, lr) for each shard (every shard changes: w and g point at its
 * floats, off is where they start in the flat array, gscale the clipping
 * factor, lr the store's rate times the update's weight). */
struct gp_params_step {
	void (*begin)(void *ctx);
	void (*step)(void *ctx, float *w, const float *g, size_t off,
		     size_t n, float gscale, float lr);
	void *ctx;
};

/* Sets the optimiser hook (copied; ctx borrowed), or NULL for the store's
 * own SGD. With a hook, gp_params_apply_sums() is -EINVAL; an outer
 * optimiser takes the hook's step as its inner step. Returns 0 or
 * -EINVAL (a hook without both functions). */
int gp_params_set_step(struct gp_params *p, const struct gp_params_step *s);
/* The pool that an update's passes over the shards (the sums of squares
 * of gp_params_apply_scaled, gp_params_apply_sums and
 * gp_params_apply_delta, and their steps but a step hook's) run on, one
 * task per
 * shard, from 65,536 parameters on; NULL (the default): on the caller.
 * The results are the same bits either way. par is borrowed and must
 * outlive p's use of it. */
struct gp_par;
void gp_params_set_par(struct gp_params *p, struct gp_par *par);

/* The outer optimiser (DiLoCo's, Douillard et al. 2023, made
 * asynchronous): every accepted update's effect on the parameters, the
 * inner step of gp_params_apply_scaled() or gp_params_apply_sums() (for a
 * group, the change its K local steps made: its pseudo-gradient, scaled
 * for staleness), is taken as a descent d and applied through Nesterov
 * momentum m instead:
 *     w0 = w before the update, d = w0 - (w after the inner step)
 *     m  = mu * m + d
 *     w  = w0 - lr * (d + mu * m)
 * The inner momentum v moves as it would without (the agents' local steps
 * go on along it). lr = 1 and mu = 0 is the inner step itself. With an
 * optimiser hook (AdamW) the inner step is the hook's, and a delta's
 * (gp_params_apply_delta) is the agent's run. Set once, before any
 * update, with m zero: lr in (0, 10], mu in [0, 1). Returns 0, -EINVAL
 * (a value out of range, or already set), -ENOMEM. */
int gp_params_set_outer(struct gp_params *p, float lr, float mu);

/* The outer momentum m (gp_params_size() floats, laid out as the
 * parameters; borrowed, valid until the next change), or NULL when there
 * is no outer optimiser. */
const float *gp_params_outer_momentum(const struct gp_params *p);

/* Encodes the outer momentum for a checkpoint (GP_CKPT_OUTER): *ret_data
 * owned by the caller (free()). Returns 0, -EINVAL without an outer
 * optimiser, -ENOMEM. */
int gp_params_save_outer(const struct gp_params *p, uint8_t **ret_data,
			 size_t *ret_len);

/* Restores the outer momentum from a checkpoint's bytes (borrowed) into
 * a store whose outer optimiser is set. Returns 0, -EBADMSG (malformed,
 * another parameter count, a non-finite value; nothing changed),
 * -EINVAL without an outer optimiser, -ENOMEM. */
int gp_params_load_outer(struct gp_params *p, const uint8_t *data,
			 size_t len);

/* Encodes shapes, config, versions, parameters and momentum for a
 * checkpoint: *ret_data (owned by caller, free()), *ret_len. Layout in
 * params.c. Returns 0 or -ENOMEM. */
int gp_params_save(const struct gp_params *p, uint8_t **ret_data,
		   size_t *ret_len);

/* Decodes a checkpoint into a new store (*ret, owned by caller). data is
 * borrowed. Returns 0, -EBADMSG for malformed bytes, -ENOMEM. */
int gp_params_load(const uint8_t *data, size_t len, struct gp_params **ret);

#endif
