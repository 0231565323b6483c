/* The hostile member's honest half: it computes the real gradient of a
 * minibatch on the parameters the coordinator sent, with the project's
 * CPU backend, so that an attack can start from what an honest member
 * would have sent (tests/fault/hostile-agent.c). */
#ifndef GP_HOSTILE_TRAIN_H
#define GP_HOSTILE_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"

struct htrain;

/* A model for WELCOME's `model` text (borrowed) and batches of up to
 * `batch` samples. *ret is owned by the caller (htrain_destroy()).
 * Returns 0, -EINVAL for a model it cannot build, -ENOMEM. */
int htrain_create(const char *model, uint32_t batch, struct htrain **ret);
void htrain_destroy(struct htrain *t);

/* Every f32 parameter, the tensors one after the other (the UPDATE's
 * order). */
size_t htrain_size(const struct htrain *t);
size_t htrain_tensors(const struct htrain *t);
/* Tensor i's rows and columns. */
void htrain_shape(const struct htrain *t, size_t i, uint32_t *ret_rows,
		  uint32_t *ret_cols);

/* Loads PARAM_SHARDS' blocks (borrowed) into the parameters. Returns 0 or
 * -EINVAL for a block that does not fit. */
int htrain_load(struct htrain *t, const struct gp_msg_param_shards *ps);

/* The mean-loss gradient of minibatch mb (borrowed; pixels and labels)
 * on the current parameters into out (htrain_size() floats); labels
 * replaced by 9 - label when flip_labels. Returns 0 and the loss, or a
 * negative errno. */
int htrain_grad(struct htrain *t, const struct gp_msg_minibatch *mb,
		bool flip_labels, float *out, float *ret_loss);

#endif
