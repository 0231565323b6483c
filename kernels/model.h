/* Models as data: a model is a graph of layers from the fixed set the
 * agent already has, described by text, never by code. Two forms parse
 * (docs/models.md has the whole format):
 * - the shorthand "784-256-128-10": 784 inputs, dense 256 + ReLU, dense
 *   128 + ReLU, dense 10 + softmax cross-entropy;
 * - a model description, "gradpool-model 1" and then one layer a line
 *   (or ';'-separated): input, dense, conv2d, maxpool2d, avgpool2d,
 *   flatten, relu, gelu, dropout, layernorm, groupnorm, add, softmax_xent,
 *   mse.
 *
 * Parameters are named flat f32 tensors, "<layer>.weight" and
 * "<layer>.bias" in layer order ("fc<l>.*" for the shorthand's dense layer
 * l), in PyTorch's layouts flattened to rows x cols: a dense weight is
 * outputs x inputs, a conv2d weight out x (in * kh * kw), biases and norm
 * weights rows x 1. Every tensor is a whole number of rows, so a
 * coordinator can shard any of them by row blocks. Each tensor has three
 * slots on the backend: the parameters, the last gradients and the
 * momentum.
 *
 * The three users and their calls:
 * - an agent: write params (from the coordinator), gp_model_set_batch(),
 *   gp_model_compute_grads(), read grads and send them;
 * - the coordinator: write grads (received), gp_model_apply_grads();
 * - the local trainer: gp_model_set_batch(), gp_model_train_step(), which
 *   fuses the two (the gradient GEMMs accumulate into the momentum).
 *
 * Activation buffers are allocated once for max_batch rows; the steps
 * allocate nothing (the CPU backend's im2col scratch grows once). A model
 * belongs to one thread at a time, like its backend. */
#ifndef GP_MODEL_H
#define GP_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

#define GP_MODEL_MAX_LAYERS 16      /* dense layers of the shorthand */
#define GP_MODEL_MAX_WIDTH 65536    /* units of any layer, inputs included */
#define GP_MODEL_SPEC_MAX 256       /* bytes of a shorthand spec, NUL included */
#define GP_MODEL_TENSOR_NAME_MAX 32 /* bytes of a tensor name, NUL included */
#define GP_MODEL_MAX_NODES 64       /* layers of a description, input included */
#define GP_MODEL_NAME_MAX 24        /* bytes of a layer name, NUL included */
#define GP_MODEL_MAX_SIZE (1u << 24) /* elements of one sample's activation */
#define GP_MODEL_DESC_MAX 65536     /* bytes of a model description file */
#define GP_MODEL_FORMAT_VERSION 1   /* "gradpool-model 1" */

enum gp_layer_type {
	GP_LAYER_INPUT = 0,
	GP_LAYER_DENSE,
	GP_LAYER_CONV2D,
	GP_LAYER_MAXPOOL2D,
	GP_LAYER_AVGPOOL2D,
	GP_LAYER_FLATTEN,
	GP_LAYER_RELU,
	GP_LAYER_GELU,
	GP_LAYER_DROPOUT,
	GP_LAYER_LAYERNORM,
	GP_LAYER_ADD,
	GP_LAYER_SOFTMAX_XENT,
	GP_LAYER_MSE,
	/* The transformer's layers (docs/models.md "Language models"). */
	GP_LAYER_EMBEDDING,
	GP_LAYER_POSEMBED,
	GP_LAYER_LINEAR,
	GP_LAYER_ATTENTION,
	GP_LAYER_SEQ_XENT,
	/* nn.GroupNorm over the channels of a C x H x W value. */
	GP_LAYER_GROUPNORM,
};

/* One layer of a parsed description. in[] are indices of earlier layers;
 * c x h x w is the shape of one sample's output (a flat width w is
 * 1 x 1 x w), filled in by the parser. */
struct gp_model_layer {
	enum gp_layer_type type;
	char name[GP_MODEL_NAME_MAX];
	uint32_t n_in;
	uint32_t in[2];
	uint32_t out;    /* dense: units; conv2d: output channels */
	uint32_t kernel; /* conv2d, pools: square kernel side */
	uint32_t stride; /* conv2d, pools */
	uint32_t pad;    /* conv2d: zero padding on each side */
	float p;         /* dropout: probability of dropping */
	float eps;       /* layernorm, groupnorm */
	uint32_t vocab;  /* embedding: token ids; out is the width */
	uint32_t heads;  /* attention */
	uint32_t groups; /* groupnorm: channel groups, dividing c */
	uint32_t c, h, w;
};

/* A parsed spec. n_layers and dims keep their shorthand meaning for both
 * forms as far as callers need them: dims[0] is the input width (c * h * w),
 * dims[n_layers] the width the loss sees (the classes); for the shorthand
 * dims[l] are the dense layers' widths, for a description n_layers is 1.
 * layers[] is the graph for both forms (the shorthand expands into input,
 * dense + relu pairs and softmax_xent). */
struct gp_model_spec {
	size_t n_layers;
	uint32_t dims[GP_MODEL_MAX_LAYERS + 1];
	uint32_t version; /* 0: shorthand; else the description's version */
	size_t n_nodes;
	struct gp_model_layer layers[GP_MODEL_MAX_NODES];
};

/* Which of a tensor's three buffers. */
enum gp_model_slot {
	GP_MODEL_PARAM = 0,
	GP_MODEL_GRAD = 1,
	GP_MODEL_MOMENTUM = 2,
};

struct gp_tensor_info {
	char name[GP_MODEL_TENSOR_NAME_MAX];
	size_t layer; /* layer with parameters, counting from 1 */
	size_t rows;
	size_t cols;
};

/* What a step or an evaluation saw. */
struct gp_model_stats {
	size_t samples;
	double loss;    /* the loss layer's mean over the batch */
	size_t correct; /* labels that are their row's argmax */
	size_t labels;  /* labels seen: samples x gp_model_spec_labels() */
};

struct gp_model;

/* Parses text: the shorthand ("784-256-128-10": two to
 * GP_MODEL_MAX_LAYERS + 1 positive decimal widths joined by '-', each at
 * most GP_MODEL_MAX_WIDTH, at least two classes) or a model description
 * ("gradpool-model 1" first; docs/models.md). Returns 0, or -EINVAL with
 * the reason (and the line) in err (err_len bytes, may be NULL / 0). text
 * is borrowed. */
int gp_model_spec_parse(const char *text, struct gp_model_spec *ret,
			char *err, size_t err_len);

/* Reads the file at path (borrowed; at most GP_MODEL_DESC_MAX bytes) and
 * parses it as gp_model_spec_parse() does. -ENOENT and friends for a file
 * that cannot be read, -EFBIG for one too large, -EINVAL for bad text;
 * err says which and why. */
int gp_model_spec_load(const char *path, struct gp_model_spec *ret,
		       char *err, size_t err_len);

/* Writes the canonical text into buf (len bytes): the shorthand for a
 * shorthand spec (GP_MODEL_SPEC_MAX suffices), else a one-line description
 * with ';' between layers, which parses back to the same spec. Returns its
 * length or -EINVAL / -ENOSPC. */
int gp_model_spec_format(const struct gp_model_spec *spec, char *buf,
			 size_t len);

/* The layer type's name as the description spells it ("conv2d"); static
 * storage. */
const char *gp_model_layer_type_name(enum gp_layer_type t);

/* Whether spec is one gp_model_spec_parse() could have returned (the
 * graph is trusted as the parser built it; the shorthand's widths are
 * checked). */
bool gp_model_spec_valid(const struct gp_model_spec *spec);

/* Labels one sample carries: the positions for a seq_xent loss (one
 * target token a position), else 1. 0 for a bad spec. */
size_t gp_model_spec_labels(const struct gp_model_spec *spec);

/* Number of f32 parameters the spec describes (weights and biases). */
size_t gp_model_spec_param_count(const struct gp_model_spec *spec);

/* Floating-point operations of one sample's forward pass through the
 * dense and conv2d layers (2 per multiply-add); a training step is about
 * three times as many. 0 for a bad spec. */
double gp_model_spec_flops(const struct gp_model_spec *spec);

/* Floating-point operations of one sample's training step (forward and
 * backward through the dense and conv2d layers): three times the forward
 * pass, less the input gradient of a layer fed by the input itself, which
 * nobody needs (for the shorthand: 4 d0 d1 + 6 d1 d2 + ...). 0 for a bad
 * spec. */
double gp_model_spec_train_flops(const struct gp_model_spec *spec);

/* The dropout seed of minibatch (epoch, minibatch) of a job with seed
 * job_seed, for gp_model_set_seed(): mix(mix(mix(job_seed) ^ epoch) ^
 * minibatch), mix being one splitmix64 step (docs/protocol.md "Which
 * model"). Every agent and any verifier get the same masks for the same
 * minibatch. */
uint64_t gp_model_minibatch_seed(uint64_t job_seed, uint64_t epoch,
				 uint64_t minibatch);

/* Creates a model on be (borrowed; must outlive the model) with every
 * buffer allocated for batches of up to max_batch rows; parameters, grads
 * and momentum start at zero (call gp_model_init_params()). *ret is owned
 * by the caller (gp_model_destroy()). -EINVAL for a bad spec or
 * max_batch == 0, -ENOTSUP when the backend lacks an op a layer needs
 * (gp_backend_error(be) names the layer), -ENOMEM, or the backend's
 * error. */
int gp_model_create(struct gp_backend *be, const struct gp_model_spec *spec,
		    size_t max_batch, struct gp_model **ret);

/* Frees the model's buffers and the model; NULL is a no-op. */
void gp_model_destroy(struct gp_model *m);

/* Borrowed, valid as long as m. */
const struct gp_model_spec *gp_model_get_spec(const struct gp_model *m);
struct gp_backend *gp_model_backend(const struct gp_model *m);
size_t gp_model_max_batch(const struct gp_model *m);

/* Number of tensors (2 per layer with parameters) and of f32 parameters in
 * all. */
size_t gp_model_tensor_count(const struct gp_model *m);
size_t gp_model_param_count(const struct gp_model *m);

/* Describes tensor i (0 <= i < gp_model_tensor_count(); the order is the
 * layers', weight before bias: fc1.weight, fc1.bias, fc2.weight, ...).
 * -EINVAL for a bad index. */
int gp_model_tensor_info(const struct gp_model *m, size_t i,
			 struct gp_tensor_info *ret);

/* Index of the tensor called name, or -ENOENT. */
int gp_model_tensor_find(const struct gp_model *m, const char *name);

/* Sets every dense and conv2d weight from He (Kaiming) uniform, U(-b, b)
 * with b = sqrt(6 / fan_in) (fan_in = inputs, or in * kh * kw), layernorm
 * and groupnorm weights to one (PyTorch's default), and every bias, grad
 * and momentum to zero. The values depend only on the seed and the
 * tensor's name and shape (a splitmix64 stream per tensor, computed on the
 * host), so every backend and every machine starts from the same bits. */
int gp_model_init_params(struct gp_model *m, uint64_t seed);

/* Copies rows [row0, row0 + nrows) of tensor i's slot from host memory src
 * (borrowed, nrows * cols floats) to the backend, or back into dst.
 * -EINVAL for a bad index, slot or row range. */
int gp_model_write(struct gp_model *m, enum gp_model_slot slot, size_t i,
		   size_t row0, size_t nrows, const float *src);
int gp_model_read(const struct gp_model *m, enum gp_model_slot slot,
		  size_t i, size_t row0, size_t nrows, float *dst);

/* The same for every tensor of a slot: the model's parameter count of
 * floats, tensor after tensor. Return 0 or a negative errno. */
int gp_model_write_all(struct gp_model *m, enum gp_model_slot slot,
		       const float *src);
int gp_model_read_all(const struct gp_model *m, enum gp_model_slot slot,
		      float *dst);

/* The backend buffer behind tensor i's slot (borrowed, valid as long as m),
 * for callers that run backend ops on it directly; NULL for a bad index. */
struct gp_buf *gp_model_buf(const struct gp_model *m, enum gp_model_slot slot,
			    size_t i);

/* Loads a minibatch: x is n rows of dims[0] floats (inputs scaled to
 * [0, 1]; an image input in C x H x W order; token ids for a language
 * model), labels n x gp_model_spec_labels() class indices (for a language
 * model the next token at every position); both borrowed. -EINVAL for n == 0 or n > max_batch. Labels are checked by the
 * step that uses them. With an mse loss the targets become the labels'
 * one-hot rows (a label outside the outputs is then -EINVAL here) unless
 * gp_model_set_targets() follows. */
int gp_model_set_batch(struct gp_model *m, const float *x,
		       const int32_t *labels, size_t n);

/* Replaces the loaded batch's mse targets with t (borrowed; n rows of
 * dims[n_layers] floats). -EINVAL without an mse loss or for n other than
 * the loaded batch's rows. */
int gp_model_set_targets(struct gp_model *m, const float *t, size_t n);

/* The seed the dropout layers draw their masks from in the next steps:
 * the mask of a layer is a function of this seed, the layer's name and
 * the element only, so a recomputation of a minibatch with the same seed
 * drops the same units (an agent sets it per minibatch). 0 at creation.
 * Evaluation never drops. */
void gp_model_set_seed(struct gp_model *m, uint64_t seed);

/* Forward and backward over the loaded batch's first n rows: writes the
 * mean-loss gradients of every tensor into the GRAD slots and the batch's
 * loss and correct count into *ret (may be NULL). Parameters and momentum
 * are not touched. -EINVAL for n larger than the loaded batch or a label
 * outside the classes. */
int gp_model_compute_grads(struct gp_model *m, size_t n,
			   struct gp_model_stats *ret);

/* gp_model_compute_grads() that also calls ready(ctx, layer) as soon as
 * the gradients of the tensors whose gp_tensor_info.layer is `layer` (for
 * the shorthand: dense layer `layer`, tensors 2 * (layer - 1) and
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
 * n x gp_model_spec_labels(); both borrowed), forward only, in chunks of max_batch. Replaces the
 * loaded batch. */
int gp_model_evaluate(struct gp_model *m, const float *x,
		      const int32_t *labels, size_t n,
		      struct gp_model_stats *ret);

/* The loss's input for n samples x (n rows of dims[0] floats; borrowed),
 * forward only: ret (caller-owned) gets n rows of what the loss layer
 * reads, the logits (for a language model 1 x T x V a sample: position
 * t's logits for the token after it). Replaces the loaded batch. */
int gp_model_logits(struct gp_model *m, const float *x, size_t n,
		    float *ret);

#endif
