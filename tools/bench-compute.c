/* Driver of tools/bench-compute: measures, for each backend asked for, the
 * training-step throughput of the default MLP (forward, backward and
 * SGD-momentum update) and SGEMM GFLOP/s, and the same SGEMM through the
 * BLAS called directly, as the yardstick of the CPU backend's overhead.
 * Prints one JSON object per line. */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "log.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench-compute [--backend cpu|opencl:N|blas]... "
		"[--seconds S] [--threads N] [--batch N] [--model SPEC]\n"
		"       bench-compute --list   (the backends, one a line)\n");
}

/* SGEMM n^3 through cblas directly, for about seconds. */
static int blas_gemm(size_t n, double seconds, double *ret)
{
	float *a = malloc(n * n * sizeof(float)), *b = malloc(n * n * 4),
	      *c = malloc(n * n * 4);
	size_t reps = 0;
	double t0, t;

	if (!a || !b || !c) {
		free(a);
		free(b);
		free(c);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n * n; i++)
		a[i] = b[i] = (float)(i % 97) / 97.0f;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n,
		    (int)n, 1.0f, a, (int)n, b, (int)n, 0.0f, c, (int)n);
	t0 = gp_bench_now();
	do {
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n,
			    (int)n, (int)n, 1.0f, a, (int)n, b, (int)n, 0.0f,
			    c, (int)n);
		reps++;
		t = gp_bench_now() - t0;
	} while (reps < 2 || t < seconds);
	*ret = 2.0 * (double)n * n * n * reps / t * 1e-9;
	free(a);
	free(b);
	free(c);
	return 0;
}

static int list_backends(void)
{
	struct gp_device_info *list;
	size_t n;
	int r = gp_backend_list_devices(&list, &n);

	if (r < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "cannot list devices");
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		if (list[i].type == GP_BACKEND_CPU)
			printf("cpu\t%s\n", list[i].name);
		else
			printf("opencl:%d\t%s (%s)\n", list[i].index,
			       list[i].name, list[i].platform);
	}
	free(list);
	return 0;
}

static int run_backend(const char *name, int threads, double seconds,
		       const char *model, size_t batch)
{
	struct gp_backend *be = NULL;
	const struct gp_device_info *info;
	double gemm = 0, sps = 0, gflops = 0;
	int r;

	if (strcmp(name, "cpu") == 0) {
		r = gp_backend_create_cpu(threads, &be);
	} else if (strncmp(name, "opencl:", 7) == 0) {
		r = gp_backend_create_opencl(atoi(name + 7), &be);
	} else {
		fprintf(stderr, "bench-compute: unknown backend %s\n", name);
		return -EINVAL;
	}
	if (r < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "%s: cannot create backend",
			     name);
		return r;
	}
	info = gp_backend_info(be);
	r = gp_bench_step(be, model, batch, seconds, &sps, &gflops);
	if (r >= 0 && !getenv("GP_BENCH_STEP_ONLY"))
		r = gp_bench_gemm(be, GP_BENCH_GEMM_N, seconds, &gemm);
	if (r < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "%s: benchmark failed: %s", name,
			     gp_backend_error(be));
		gp_backend_destroy(be);
		return r;
	}
	printf("{\"backend\": \"%s\", \"device\": \"%s\", \"threads\": %d, "
	       "\"model\": \"%s\", \"batch\": %zu, \"samples_per_s\": %.0f, "
	       "\"step_gflops\": %.1f, \"gemm_n\": %d, \"gemm_gflops\": %.1f}\n",
	       name, info->name, threads, model, batch, sps, gflops,
	       GP_BENCH_GEMM_N, gemm);
	fflush(stdout);
	gp_backend_destroy(be);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "seconds", required_argument, NULL, 's' },
		{ "threads", required_argument, NULL, 't' },
		{ "batch", required_argument, NULL, 'n' },
		{ "model", required_argument, NULL, 'm' },
		{ "list", no_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *backends[16];
	size_t n_backends = 0, batch = GP_BENCH_BATCH;
	const char *model = GP_BENCH_MODEL;
	double seconds = 1.0;
	int threads = 0, c, failed = 0;

	gp_log_init("bench-compute");
	while ((c = getopt_long(argc, argv, "b:s:t:n:m:h", opts, NULL)) != -1) {
		switch (c) {
		case 'b':
			if (n_backends < 16)
				backends[n_backends++] = optarg;
			break;
		case 's':
			seconds = atof(optarg);
			break;
		case 't':
			threads = atoi(optarg);
			break;
		case 'n':
			batch = (size_t)strtoul(optarg, NULL, 10);
			break;
		case 'm':
			model = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case 'l':
			return list_backends();
		default:
			usage(stderr);
			return 2;
		}
	}
	if (n_backends == 0)
		backends[n_backends++] = "cpu";
	for (size_t i = 0; i < n_backends; i++) {
		if (strcmp(backends[i], "blas") == 0) {
			double g = 0;

#if GP_HAVE_OPENBLAS
			if (threads > 0)
				openblas_set_num_threads(threads);
#endif
			if (blas_gemm(GP_BENCH_GEMM_N, seconds, &g) < 0) {
				failed = 1;
				continue;
			}
			printf("{\"backend\": \"blas\", \"threads\": %d, "
			       "\"gemm_n\": %d, \"gemm_gflops\": %.1f}\n",
			       threads, GP_BENCH_GEMM_N, g);
			fflush(stdout);
		} else if (run_backend(backends[i], threads, seconds, model,
				       batch) < 0) {
			failed = 1;
		}
	}
	return failed;
}
