/* bench-params: times the coordinator's parameter store on the main job's
 * MLP (784-256-128-10, 235,146 floats): applying one update (norm, clip,
 * momentum SGD with weight decay), serving a full pull (copy of every
 * shard), and a checkpoint save/load. Prints wall and CPU time per
 * operation. Usage: bench-params [ITERATIONS] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "params.h"

static double seconds(clockid_t id)
{
	struct timespec t;

	clock_gettime(id, &t);
	return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void report(const char *what, int iters, double wall, double cpu)
{
	printf("%-28s %9.1f us wall %9.1f us cpu  (%.0f/s per CPU second)\n",
	       what, wall / iters * 1e6, cpu / iters * 1e6, iters / cpu);
}

int main(int argc, char **argv)
{
	static const struct gp_tensor_shape shapes[] = {
		{ "w1", 784, 256 }, { "b1", 1, 256 }, { "w2", 256, 128 },
		{ "b2", 1, 128 }, { "w3", 128, 10 }, { "b3", 1, 10 },
	};
	struct gp_params_config cfg = {
		.lr = 0.05f, .momentum = 0.9f, .weight_decay = 1e-4f,
		.clip_norm = 5.0f, .reject_norm = 1e4f,
	};
	struct gp_params *p = NULL, *q = NULL;
	int iters = argc > 1 ? atoi(argv[1]) : 2000;
	float *g = NULL, *buf = NULL;
	uint8_t *blob = NULL;
	size_t n, len = 0;
	double w0, c0;
	int r = 1;

	if (iters <= 0 || gp_params_create(&cfg, shapes, 6, &p) < 0)
		return 1;
	n = gp_params_size(p);
	g = malloc(n * sizeof(float));
	buf = malloc(n * sizeof(float));
	if (!g || !buf)
		goto out;
	for (size_t i = 0; i < n; i++)
		g[i] = (float)((double)((i * 7919) % 1000) * 1e-5 - 5e-3);
	printf("params: %zu floats in %zu shards (64 KiB), %d iterations\n", n,
	       gp_params_shard_count(p), iters);
	for (int i = 0; i < 50; i++)
		gp_params_apply(p, g, n, NULL);

	w0 = seconds(CLOCK_MONOTONIC);
	c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
	for (int i = 0; i < iters; i++)
		if (gp_params_apply(p, g, n, NULL) != 0)
			goto out;
	report("apply (norm+clip+momentum)", iters,
	       seconds(CLOCK_MONOTONIC) - w0,
	       seconds(CLOCK_PROCESS_CPUTIME_ID) - c0);

	w0 = seconds(CLOCK_MONOTONIC);
	c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
	for (int i = 0; i < iters; i++) {
		size_t off = 0;

		for (size_t k = 0; k < gp_params_shard_count(p); k++)
			off += (size_t)gp_params_copy_shard(p, k, buf + off, n - off);
		if (off != n)
			goto out;
	}
	report("full pull (copy all shards)", iters,
	       seconds(CLOCK_MONOTONIC) - w0,
	       seconds(CLOCK_PROCESS_CPUTIME_ID) - c0);

	w0 = seconds(CLOCK_MONOTONIC);
	c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
	for (int i = 0; i < iters / 20 + 1; i++) {
		free(blob);
		blob = NULL;
		if (gp_params_save(p, &blob, &len) < 0)
			goto out;
	}
	report("checkpoint save", iters / 20 + 1, seconds(CLOCK_MONOTONIC) - w0,
	       seconds(CLOCK_PROCESS_CPUTIME_ID) - c0);
	w0 = seconds(CLOCK_MONOTONIC);
	c0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
	for (int i = 0; i < iters / 20 + 1; i++) {
		gp_params_destroy(q);
		q = NULL;
		if (gp_params_load(blob, len, &q) < 0)
			goto out;
	}
	report("checkpoint load", iters / 20 + 1, seconds(CLOCK_MONOTONIC) - w0,
	       seconds(CLOCK_PROCESS_CPUTIME_ID) - c0);
	printf("checkpoint blob: %zu bytes\n", len);
	r = 0;
out:
	free(g);
	free(buf);
	free(blob);
	gp_params_destroy(p);
	gp_params_destroy(q);
	return r;
}
