/* Models as data: a model is a list of layers from the fixed set the agent
 * already has, described by a spec string, never by code. Today the set is
 * dense layers with ReLU between them and a softmax cross-entropy head:
 * "784-256-128-10" is 784 inputs, dense 256 + ReLU, dense 128 + ReLU,
 * dense 10 + softmax cross-entropy.
 *
 * Parameters are named flat f32 tensors, two per dense layer l (counting
 * from 1): "fc<l>.weight" (rows = outputs, cols = inputs, row-major, as
 * PyTorch stores nn.Linear) and "fc<l>.bias" (rows = outputs, cols = 1).
 * Every tensor is a whole number of rows, so a coordinator can shard any of
 * them by row blocks. Each tensor has three slots on the backend: the
 * parameters, the last gradients and the momentum.
 *
 * The three users and their calls:
 * - an agent: write params (from the coordinator), gp_model_set_batch(),
 *   gp_model_compute_grads(), read grads and send them;
 * - the coordinator: write grads (received), gp_model_apply_grads();
 * - the local trainer: gp_model_set_batch(), gp_model_train_step(), which
 *   fuses the two (the gradient GEMMs accumulate into the momentum).
 *
 * Activation buffers are allocated once for max_batch rows; the steps
 * allocate nothing. A model belongs to one thread at a time, like its
 * backend. */
#ifndef GP_MODEL_H
#define GP_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#define GP_MODEL_MAX_LAYERS 16      /* dense layers */
#define GP_MODEL_MAX_WIDTH 65536    /* units of any layer, inputs included */
#define GP_MODEL_SPEC_MAX 256       /* bytes of a spec string, NUL included */
#define GP_MODEL_TENSOR_NAME_MAX 32 /* bytes of a tensor name, NUL included */

/* A parsed spec: n_layers dense layers, dims[0] inputs, dims[l] outputs of
 * layer l, dims[n_layers] classes. */
struct gp_model_spec {
	size_t n_layers;
	uint32_t dims[GP_MODEL_MAX_LAYERS + 1];
};

/* Which of a tensor's three buffers. */
enum gp_model_slot {
	GP_MODEL_PARAM = 0,
	GP_MODEL_GRAD = 1,
	GP_MODEL_MOMENTUM = 2,
};

struct gp_tensor_info {
	char name[GP_MODEL_TENSOR_NAME_MAX];
	size_t layer; /* dense layer, from 1 */
	size_t rows;
	size_t cols;
};

/* What a step or an evaluation saw. */
struct gp_model_stats {
	size_t samples;
	double loss;    /* mean softmax cross-entropy over samples */
	size_t correct; /* samples whose argmax is the label */
};

struct gp_model;

/* Parses text ("784-256-128-10": two to GP_MODEL_MAX_LAYERS + 1 positive
 * decimal widths joined by '-', each at most GP_MODEL_MAX_WIDTH, at least
 * two classes). Returns 0, or -EINVAL with the reason in err (err_len
 * bytes, may be NULL / 0). text is borrowed. */
int gp_model_spec_parse(const char *text, struct gp_model_spec *ret,
			char *err, size_t err_len);

/* Writes the canonical spec string into buf (len bytes, at least
 * GP_MODEL_SPEC_MAX suffices). Returns its length or -EINVAL / -ENOSPC. */
int gp_model_spec_format(const struct gp_model_spec *spec, char *buf,
			 size_t len);

/* Number of f32 parameters the spec describes (weights and biases). */
size_t gp_model_spec_param_count(const struct gp_model_spec *spec);

/* Creates a model on be (borrowed; must outlive the model) with every
 * buffer allocated for batches of up to max_batch rows; parameters, grads
 * and momentum start at zero (call gp_model_init_params()). *ret is owned
 * by the caller (gp_model_destroy()). -EINVAL for a bad spec or
 * max_batch == 0, -ENOMEM, or the backend's error. */
int gp_model_create(struct gp_backend *be, const struct gp_model_spec *spec,
		    size_t max_batch, struct gp_model **ret);

/* Frees the model's buffers and the model; NULL is a no-op. */
void gp_model_destroy(struct gp_model *m);

/* Borrowed, valid as long as m. */
const struct gp_model_spec *gp_model_get_spec(const struct gp_model *m);
struct gp_backend *gp_model_backend(const struct gp_model *m);
size_t gp_model_max_batch(const struct gp_model *m);

/* Number of tensors (2 per dense layer) and of f32 parameters in all. */
size_t gp_model_tensor_count(const struct gp_model *m);
size_t gp_model_param_count(const struct gp_model *m);

/* Describes tensor i (0 <= i < gp_model_tensor_count(); the order is fc1
 * weight, fc1 bias, fc2 weight, ...). -EINVAL for a bad index. */
int gp_model_tensor_info(const struct gp_model *m, size_t i,
			 struct gp_tensor_info *ret);

/* Index of the tensor called name, or -ENOENT. */
int gp_model_tensor_find(const struct gp_model *m, const char *name);

/* Sets every weight from He (Kaiming) uniform, U(-b, b) with
 * b = sqrt(6 / fan_in), and every bias, grad and momentum to zero. The
 * values depend only on the seed and the tensor's name and shape (a
 * splitmix64 stream per tensor, computed on the host), so every backend and
 * every machine starts from the same bits. */
int gp_model_init_params(struct gp_model *m, uint64_t seed);

/* Copies rows [row0, row0 + nrows) of tensor i's slot from host memory src
 * (borrowed, nrows * cols floats) to the backend, or back into dst.
 * -EINVAL for a bad index, slot or row range. */
int gp_model_write(struct gp_model *m, enum gp_model_slot slot, size_t i,
		   size_t row0, size_t nrows, const float *src);
int gp_model_read(const struct gp_model *m, enum gp_model_slot slot,
		  size_t i, size_t row0, size_t nrows, float *dst);

/* The backend buffer behind tensor i's slot (borrowed, valid as long as m),
 * for callers that run backend ops on it directly; NULL for a bad index. */
struct gp_buf *gp_model_buf(const struct gp_model *m, enum gp_model_slot slot,
			    size_t i);

/* Loads a minibatch: x is n rows of dims[0] floats (inputs scaled to
 * [0, 1]), labels n class indices; both borrowed. -EINVAL for n == 0 or
 * n > max_batch. Labels are checked by the step that uses them. */
int gp_model_set_batch(struct gp_model *m, const float *x,
		       const int32_t *labels, size_t n);

/* Forward and backward over the loaded batch's first n rows: writes the
 * mean-loss gradients of every tensor into the GRAD slots and the batch's
 * loss and correct count into *ret (may be NULL). Parameters and momentum
 * are not touched. -EINVAL for n larger than the loaded batch or a label
 * outside the classes. */
int gp_model_compute_grads(struct gp_model *m, size_t n,
			   struct gp_model_stats *ret);

/* gp_model_compute_grads() that also calls ready(ctx, layer) as soon as
 * the gradients of dense layer `layer` (tensors 2 * (layer - 1) and
 * 2 * (layer - 1) + 1) are final, from the last layer to the first, so an
 * agent can read them (gp_model_read() waits for the device) and start
 * sending one layer while the next is computed. ready runs on the caller's
 * thread; a negative return stops the step and is returned. ctx is
 * borrowed. */
int gp_model_compute_grads_notify(struct gp_model *m, size_t n,
				  struct gp_model_stats *ret,
				  int (*ready)(void *ctx, size_t layer),
				  void *ctx);

/* SGD with momentum from the GRAD slots, for every tensor:
 * v = mu * v + g; p -= lr * v. */
int gp_model_apply_grads(struct gp_model *m, float lr, float mu);

/* gp_model_compute_grads() + gp_model_apply_grads() in one pass: the
 * weight-gradient GEMMs accumulate straight into the momentum
 * (v = mu * v + g as beta = mu), so the GRAD slots are left as they were
 * and no gradient is stored or read back. Same result within float
 * rounding. */
int gp_model_train_step(struct gp_model *m, size_t n, float lr, float mu,
			struct gp_model_stats *ret);

/* Sum of squares of every GRAD slot (the squared gradient norm), in
 * double. */
int gp_model_grad_sumsq(struct gp_model *m, double *ret);

/* Loss and accuracy over n samples (x: n rows of dims[0] floats, labels:
 * n; both borrowed), forward only, in chunks of max_batch. Replaces the
 * loaded batch. */
int gp_model_evaluate(struct gp_model *m, const float *x,
		      const int32_t *labels, size_t n,
		      struct gp_model_stats *ret);

#endif
