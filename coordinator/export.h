/* The trained model out: a model's graph and parameters written as files
 * that other tools load (docs/operations.md, "Exporting the trained
 * model").
 *
 * - safetensors (export-safetensors.c): Hugging Face's published layout,
 *   an 8-byte little-endian header length, a JSON header naming each
 *   tensor's dtype, shape and byte range (padded with spaces to a multiple
 *   of 8 bytes), then the tensors' bytes, back to back, in the model's
 *   tensor order. "__metadata__" holds the caller's key/value strings.
 * - ONNX (export-onnx.c): a ModelProto (IR version 8, opset 17) written
 *   through protobuf-c from ONNX's own onnx.proto: every layer as standard
 *   operators, the parameters as initializers, the metadata as
 *   metadata_props. Built only when the build found protobuf-c and
 *   onnx.proto (GP_HAVE_ONNX).
 *
 * Both use PyTorch's names and shapes: "conv1.weight" is out x in x kh x
 * kw, "fc1.weight" out x in, every bias and layernorm tensor 1-D. The
 * writers take the model and the values from the caller and write to a
 * FILE; choosing a checkpoint and writing the file safely is export.c's.
 * Nothing here logs. */
#ifndef GP_EXPORT_H
#define GP_EXPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "model.h"

struct gp_params;

#define GP_EXPORT_MAX_DIMS 4
#define GP_EXPORT_ERR_MAX 256
/* Bytes of an exported tensor's name, NUL included: a parameter's, or an
 * optimiser state's ("exp_avg_sq." and the parameter's). */
#define GP_EXPORT_NAME_MAX 64

/* One parameter tensor: its PyTorch shape and its values (borrowed, row
 * major, dims[0] * ... * dims[n_dims - 1] floats). */
struct gp_export_tensor {
	char name[GP_EXPORT_NAME_MAX];
	size_t n_dims;
	int64_t dims[GP_EXPORT_MAX_DIMS];
	size_t count; /* elements */
	const float *data;
};

/* One metadata entry; both strings borrowed, any text (escaped as each
 * format needs; bytes that are not UTF-8 are written as U+FFFD). */
struct gp_export_meta {
	const char *key;
	const char *value;
};

/* What the writers write. tensors[0..n_tensors) follows
 * gp_export_layout()'s order; n_extra more tensors may follow them (the
 * optimiser's state, safetensors only), each named uniquely. */
struct gp_export_model {
	const struct gp_model_spec *spec;
	const struct gp_export_tensor *tensors;
	size_t n_tensors;
	const struct gp_export_meta *meta;
	size_t n_meta;
	size_t n_extra;
};

/* Fills ret[0..*ret_n) with the spec's parameter tensors in the model's
 * order (layer by layer, weight before bias: the order and names of
 * gp_model_tensor_info()), each with its PyTorch shape and count; data is
 * left NULL. ret has room for 2 * GP_MODEL_MAX_NODES entries. Returns 0 or
 * -EINVAL for a spec gp_model_spec_valid() refuses. */
int gp_export_layout(const struct gp_model_spec *spec,
		     struct gp_export_tensor *ret, size_t *ret_n);

/* Checks that m's tensors are exactly gp_export_layout()'s for m->spec
 * (names, shapes, counts, data present), and that the extra ones have
 * data, counts that match their shapes and names of their own. Returns 0
 * or -EINVAL. */
int gp_export_check(const struct gp_export_model *m);

/* Writes m as safetensors to f (borrowed; written from its current
 * position). Returns 0, -EINVAL for a model whose tensors do not follow
 * gp_export_layout(), -ENOMEM, or -EIO when a write failed (errno says
 * why). */
int gp_export_safetensors(const struct gp_export_model *m, FILE *f);

/* Whether this build writes ONNX. */
bool gp_export_have_onnx(void);

/* Writes m as an ONNX model to f (borrowed). Returns 0, -EINVAL as above,
 * -ENOTSUP without ONNX support, -E2BIG for a model protobuf cannot hold
 * (2 GiB), -ENOMEM, or -EIO. err (err_len bytes, may be NULL) says why. */
int gp_export_onnx(const struct gp_export_model *m, FILE *f, char *err,
		   size_t err_len);

/* ---- the command (export.c, in gradpool-coordinator) ------------------ */

enum gp_export_format {
	GP_EXPORT_SAFETENSORS = 1,
	GP_EXPORT_ONNX = 2,
};

/* `gradpool-coordinator export`: what to write, and where. */
struct gp_export_request {
	int64_t job_id;     /* 0: the newest job */
	int64_t checkpoint; /* its seq; 0: the newest intact one */
	const char *format; /* "safetensors", "onnx", or NULL: from out's name */
	const char *out;    /* the file to write (replaced if it exists) */
	/* Also the optimiser's state (AdamW: each parameter's exp_avg and
	 * exp_avg_sq, and its step), safetensors only. */
	bool optimizer_state;
};

/* Writes the parameters of a job's checkpoint from the ledger in
 * state_dir (both borrowed) as req asks: the checkpoint is checked as a
 * restore checks it (checksums, sections, the tensors against the job's
 * model); a named one that fails is an error, and without a name the
 * newest one that passes is taken, each damaged newer one named in a
 * warning. The file appears whole or not at all (a temporary file in the
 * same folder, renamed). Errors are logged. Returns 0, -EINVAL (bad
 * request), -ENOENT (no such job or checkpoint), -EBADMSG (damaged),
 * -ENOTSUP, or the errno of writing. */
int gp_export_command(const char *state_dir,
		      const struct gp_export_request *req);

/* Loads a job's checkpoint from the ledger in state_dir (borrowed) as
 * export does (job_id 0: the newest job; checkpoint 0: its newest intact
 * checkpoint, checked whole): *ret_spec gets the model, *ret_params the
 * parameter store (owned by the caller, gp_params_destroy()), *ret_seq
 * (may be NULL) the checkpoint's seq. Errors are logged. Returns 0,
 * -ENOENT, -EBADMSG or another negative errno. */
int gp_export_load(const char *state_dir, int64_t job_id, int64_t checkpoint,
		   struct gp_model_spec *ret_spec, struct gp_params **ret_params,
		   int64_t *ret_seq);

/* The ONNX operator set and IR version written. */
#define GP_EXPORT_ONNX_OPSET 17
#define GP_EXPORT_ONNX_IR_VERSION 8

#endif
