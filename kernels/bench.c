/* Benchmarks over the backend interface. Each timed run ends with
 * gp_backend_finish(), so asynchronous (OpenCL) backends are measured to
 * completion, not to enqueueing. */
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "model.h"

double gp_bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Fills n floats with deterministic values in [0, 1). */
static void fill(float *x, size_t n, uint32_t seed)
{
	uint32_t s = seed * 2654435761u + 1;

	for (size_t i = 0; i < n; i++) {
		s = s * 1664525u + 1013904223u;
		x[i] = (float)(s >> 8) * 0x1p-24f;
	}
}

int gp_bench_gemm(struct gp_backend *be, size_t n, double seconds,
		  double *ret_gflops)
{
	struct gp_buf *a = NULL, *b = NULL, *c = NULL;
	float *host = NULL;
	size_t reps = 0;
	double t0, t;
	int r;

	if (!be || !ret_gflops || n == 0)
		return -EINVAL;
	host = malloc(n * n * sizeof(float));
	if (!host)
		return -ENOMEM;
	fill(host, n * n, 1);
	if ((r = gp_buf_create(be, GP_F32, n * n, &a)) < 0 ||
	    (r = gp_buf_create(be, GP_F32, n * n, &b)) < 0 ||
	    (r = gp_buf_create(be, GP_F32, n * n, &c)) < 0 ||
	    (r = gp_buf_write(a, 0, host, n * n)) < 0 ||
	    (r = gp_buf_write(b, 0, host, n * n)) < 0)
		goto out;
	/* Warm-up: thread pools, kernel compilation, page faults. */
	if ((r = gp_gemm(be, false, false, n, n, n, 1.0f, a, b, 0.0f, c)) <
		    0 ||
	    (r = gp_backend_finish(be)) < 0)
		goto out;
	t0 = gp_bench_now();
	do {
		r = gp_gemm(be, false, false, n, n, n, 1.0f, a, b, 0.0f, c);
		if (r < 0)
			goto out;
		reps++;
		/* Sync every few calls so the clock sees real work. */
		if (reps % 4 == 0 && (r = gp_backend_finish(be)) < 0)
			goto out;
		t = gp_bench_now() - t0;
	} while (reps < 2 || t < seconds);
	if ((r = gp_backend_finish(be)) < 0)
		goto out;
	t = gp_bench_now() - t0;
	*ret_gflops = 2.0 * (double)n * (double)n * (double)n *
		      (double)reps / t * 1e-9;
out:
	gp_buf_destroy(a);
	gp_buf_destroy(b);
	gp_buf_destroy(c);
	free(host);
	return r;
}

int gp_bench_step(struct gp_backend *be, const char *spec_text,
		  size_t batch, double seconds, double *ret_samples_per_s,
		  double *ret_gflops)
{
	struct gp_model_spec spec;
	struct gp_model *m = NULL;
	float *x = NULL;
	int32_t *labels = NULL;
	size_t steps = 0;
	double t0, t;
	int r;

	if (!be || !spec_text || !ret_samples_per_s || batch == 0)
		return -EINVAL;
	if ((r = gp_model_spec_parse(spec_text, &spec, NULL, 0)) < 0)
		return r;
	x = malloc(batch * spec.dims[0] * sizeof(float));
	labels = malloc(batch * sizeof(int32_t));
	if (!x || !labels) {
		r = -ENOMEM;
		goto out;
	}
	fill(x, batch * spec.dims[0], 2);
	for (size_t i = 0; i < batch; i++)
		labels[i] = (int32_t)(i % spec.dims[spec.n_layers]);
	if ((r = gp_model_create(be, &spec, batch, &m)) < 0 ||
	    (r = gp_model_init_params(m, 1)) < 0 ||
	    (r = gp_model_set_batch(m, x, labels, batch)) < 0)
		goto out;
	for (int i = 0; i < 3; i++)
		if ((r = gp_model_train_step(m, batch, 0.01f, 0.9f, NULL)) < 0)
			goto out;
	if ((r = gp_backend_finish(be)) < 0)
		goto out;
	t0 = gp_bench_now();
	do {
		/* The step returns the loss, so it synchronises each time,
		 * as a real training loop does. */
		r = gp_model_train_step(m, batch, 0.01f, 0.9f, NULL);
		if (r < 0)
			goto out;
		steps++;
		t = gp_bench_now() - t0;
	} while (steps < 5 || t < seconds);
	if ((r = gp_backend_finish(be)) < 0)
		goto out;
	t = gp_bench_now() - t0;
	*ret_samples_per_s = (double)(steps * batch) / t;
	if (ret_gflops)
		*ret_gflops = *ret_samples_per_s * gp_model_spec_train_flops(&spec) *
			      1e-9;
out:
	gp_model_destroy(m);
	free(x);
	free(labels);
	return r;
}

int gp_bench_run(struct gp_backend *be, double seconds,
		 struct gp_bench_result *ret)
{
	struct gp_bench_result res;
	int r;

	if (!be || !ret)
		return -EINVAL;
	r = gp_bench_gemm(be, GP_BENCH_GEMM_N, seconds, &res.gemm_gflops);
	if (r < 0)
		return r;
	r = gp_bench_step(be, GP_BENCH_MODEL, GP_BENCH_BATCH, seconds,
			  &res.step_samples_per_s, &res.step_gflops);
	if (r < 0)
		return r;
	*ret = res;
	return 0;
}
