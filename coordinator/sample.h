/* `gradpool-coordinator sample`: text from a trained language model. */
#ifndef GP_SAMPLE_H
#define GP_SAMPLE_H

#include <stdint.h>

/* What to generate; the strings are the command line's (borrowed, NULL:
 * the default). */
struct gp_sample_request {
	const char *job;         /* job id; NULL: the newest job */
	const char *checkpoint;  /* its seq; NULL: the newest intact one */
	const char *prompt;      /* bytes to start from; NULL: "\n" */
	const char *length;      /* tokens to generate, 1..100000 (200) */
	const char *temperature; /* > 0 (0.8) */
	const char *top_k;       /* 0 (all) or the k likeliest (40) */
	const char *seed;        /* the sampler's seed (1) */
};

/* Loads the job's checkpoint as export does (export.h), builds its
 * language model (docs/models.md) on the CPU backend and writes the
 * prompt and then `length` sampled tokens to stdout: each from the
 * softmax of the last position's logits over the temperature, among the
 * top_k likeliest, with a splitmix64 stream from the seed (the same seed
 * and checkpoint give the same text). A byte-level model writes bytes;
 * a larger vocabulary writes each id as decimal text. The context is the
 * last T tokens (T the model's input width). Errors are logged. Returns
 * 0, -EINVAL for a bad request or a model that is not a language model,
 * or the loader's error. */
int gp_sample_command(const char *state_dir,
		      const struct gp_sample_request *req);

#endif
