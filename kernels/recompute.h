/* Recomputing a member's update from the parameters it was sent: what the
 * agent's worker sends for a minibatch or a group (proto/msg.h
 * GP_UPDATE_GRADIENT, GP_UPDATE_SUMS), computed again elsewhere. The
 * coordinator's own checks (coordinator/verify.c) and a member that checks
 * another's on request (VERIFY_TASK, agent/worker.c) both call it, so the
 * two compute the same thing. */
#ifndef GP_RECOMPUTE_H
#define GP_RECOMPUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gp_model;
struct gp_dataset;
struct gp_tokens;

/* Where the items' samples are: an image set, or (tok non-NULL) a token
 * stream's windows of len tokens (tokens.h; a language model's). */
struct gp_recompute_data {
	const struct gp_dataset *train;
	const struct gp_tokens *tok;
	size_t len;
};

/* One minibatch: its place (for its dropout seed), its local step's rate
 * and its samples, idx[0..samples) indices into the training set. */
struct gp_recompute_item {
	uint32_t epoch;
	uint64_t minibatch;
	float lr;
	uint32_t samples;
	const uint32_t *idx;
};

/* Computes on model (whose batch size is at least every item's samples,
 * and whose PARAM and MOMENTUM slots it overwrites) the update the items
 * make from parameters w0: with sums, each item takes an SGD step with
 * momentum mu from momentum v0 and ret_a, ret_b get the group's sums A and
 * B; without, the one item's gradient goes to ret_a (v0 and ret_b
 * unused). Each item's dropout seed is gp_model_minibatch_seed(job_seed,
 * epoch, minibatch). x and y are scratch for the model's batch (batch *
 * train->features floats and batch labels; for windows batch * len of
 * each, as the agent unpacks them). Every float array holds the model's
 * parameters in tensor order. Returns 0 or a negative errno (-EINVAL: no
 * item, more than one without sums, a count of 0 or over the batch, an
 * index out of range). */
int gp_recompute(struct gp_model *model, const struct gp_recompute_data *data,
		 uint64_t job_seed, bool sums, float mu,
		 const struct gp_recompute_item *items, size_t k,
		 const float *w0, const float *v0, float *x, int32_t *y,
		 float *ret_a, float *ret_b);

#endif
