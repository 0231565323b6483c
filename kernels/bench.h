/* The device benchmark an agent runs at start-up and reports to the
 * coordinator, and that tools/bench-compute prints: SGEMM throughput and
 * the training-step throughput of the default model on one backend. Short
 * by design (about a second per device). */
#ifndef GP_BENCH_H
#define GP_BENCH_H

#include <stddef.h>

#include "backend.h"

#define GP_BENCH_GEMM_N 1024
#define GP_BENCH_MODEL "784-256-128-10"
#define GP_BENCH_BATCH 256

struct gp_bench_result {
	double gemm_gflops;        /* SGEMM GP_BENCH_GEMM_N^3, GFLOP/s */
	double step_samples_per_s; /* GP_BENCH_MODEL, GP_BENCH_BATCH rows */
	double step_gflops;        /* the same step in GFLOP/s */
};

/* C = A B for n x n matrices, repeated for about seconds (at least twice,
 * after one warm-up). *ret_gflops = 2 n^3 per call / time. */
int gp_bench_gemm(struct gp_backend *be, size_t n, double seconds,
		  double *ret_gflops);

/* Training steps (forward, backward and SGD-momentum update: the fused
 * gp_model_train_step()) of model spec on synthetic data with batch rows,
 * for about seconds after three warm-up steps. *ret_samples_per_s; and
 * *ret_gflops (may be NULL), counting the GEMMs' multiply-adds. */
int gp_bench_step(struct gp_backend *be, const char *spec, size_t batch,
		  double seconds, double *ret_samples_per_s,
		  double *ret_gflops);

/* Both, with the defaults above, in about 2 * seconds. */
int gp_bench_run(struct gp_backend *be, double seconds,
		 struct gp_bench_result *ret);

/* Monotonic clock in seconds, for the benchmarks' timing. */
double gp_bench_now(void);

#endif
