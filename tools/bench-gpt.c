/* bench-gpt: the training step of a language model (docs/models.md
 * "Language models") on the CPU backend (or, with --opencl N, on OpenCL
 * device N), in tokens a second: forward,
 * backward and the SGD-momentum update fused (gp_model_train_step()), on
 * windows of a token file, for tools/bench/gpt.py, which runs PyTorch's
 * step on the identical model beside it. Prints one JSON object.
 *
 *   bench-gpt --model FILE --tokens FILE [--batch 16] [--seconds 2]
 *             [--threads 0] [--opencl N] */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backend.h"
#include "model.h"
#include "tokens.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "model", required_argument, NULL, 'm' },
		{ "tokens", required_argument, NULL, 't' },
		{ "batch", required_argument, NULL, 'b' },
		{ "seconds", required_argument, NULL, 's' },
		{ "threads", required_argument, NULL, 'n' },
		{ "opencl", required_argument, NULL, 'o' },
		{ NULL, 0, NULL, 0 },
	};
	const char *model_path = NULL, *tok_path = NULL;
	size_t batch = 16, steps = 0, windows, t;
	double seconds = 2.0, t0, spent;
	int threads = 0, opencl = -1, c, r;
	struct gp_model_spec spec;
	struct gp_backend *be = NULL;
	struct gp_model *m = NULL;
	struct gp_tokens *tok = NULL;
	struct gp_model_stats st = { 0 };
	char err[512];
	float *x;
	int32_t *y;
	uint32_t *idx;
	uint64_t rng = 1;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm':
			model_path = optarg;
			break;
		case 't':
			tok_path = optarg;
			break;
		case 'b':
			batch = (size_t)strtoul(optarg, NULL, 10);
			break;
		case 's':
			seconds = strtod(optarg, NULL);
			break;
		case 'n':
			threads = atoi(optarg);
			break;
		case 'o':
			opencl = atoi(optarg);
			break;
		default:
			return 2;
		}
	}
	if (!model_path || !tok_path || batch == 0 || batch > 4096 ||
	    !(seconds > 0)) {
		fprintf(stderr, "usage: bench-gpt --model FILE --tokens FILE "
				"[--batch N] [--seconds S] [--threads N] "
				"[--opencl N]\n");
		return 2;
	}
	if (gp_model_spec_load(model_path, &spec, err, sizeof(err)) < 0 ||
	    gp_tokens_load(tok_path, &tok, err, sizeof(err)) < 0) {
		fprintf(stderr, "bench-gpt: %s\n", err);
		return 1;
	}
	t = spec.dims[0];
	windows = gp_tokens_windows(tok, t);
	if (gp_model_spec_labels(&spec) < 2 || windows < batch) {
		fprintf(stderr, "bench-gpt: not a language model, or too few "
				"windows\n");
		return 1;
	}
	x = malloc(batch * t * sizeof(float));
	y = malloc(batch * t * sizeof(int32_t));
	idx = malloc(batch * sizeof(uint32_t));
	if (!x || !y || !idx)
		return 1;
	r = opencl >= 0 ? gp_backend_create_opencl(opencl, &be)
			: gp_backend_create_cpu(threads, &be);
	if (r < 0) {
		fprintf(stderr, "bench-gpt: %s\n", gp_backend_create_error());
		return 1;
	}
	if ((r = gp_model_create(be, &spec, batch, &m)) < 0 ||
	    (r = gp_model_init_params(m, 1)) < 0) {
		fprintf(stderr, "bench-gpt: %s\n",
			be ? gp_backend_error(be) : "no backend");
		return 1;
	}
	t0 = now_s();
	do {
		for (size_t i = 0; i < batch; i++) {
			rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
			idx[i] = (uint32_t)((rng >> 33) % windows);
		}
		if (gp_tokens_gather(tok, t, idx, batch, x, y) < 0 ||
		    gp_model_set_batch(m, x, y, batch) < 0 ||
		    gp_model_train_step(m, batch, 0.01f, 0.9f, &st) < 0) {
			fprintf(stderr, "bench-gpt: step failed: %s\n",
				gp_backend_error(be));
			return 1;
		}
		/* The first step warms the caches; it is not counted. */
		if (++steps == 1)
			t0 = now_s();
		spent = now_s() - t0;
	} while (steps < 3 || spent < seconds);
	if (opencl >= 0)
		printf("{\"backend\":\"opencl:%d\",", opencl);
	else
		printf("{\"backend\":\"cpu\",");
	printf("\"model\":\"gpt\",\"threads\":%d,"
	       "\"batch\":%zu,\"context\":%zu,\"steps\":%zu,"
	       "\"tokens_per_s\":%.1f,\"loss\":%.4f}\n",
	       threads, batch, t, steps - 1,
	       (double)(steps - 1) * batch * t / spent, st.loss);
	gp_model_destroy(m);
	gp_backend_destroy(be);
	gp_tokens_destroy(tok);
	free(x);
	free(y);
	free(idx);
	return 0;
}
