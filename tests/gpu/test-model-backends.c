/* One model, two backends: the same spec, seed and minibatch on the CPU
 * backend and on an OpenCL device must give the same loss, the same
 * gradients and, after a few fused training steps, the same parameters,
 * within float tolerance. Exits 77 (skipped) without an OpenCL device;
 * GP_TEST_OPENCL_DEVICE picks it (default 0). The seed of the inputs is
 * printed; GP_TEST_SEED replays a run. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backend.h"
#include "model.h"
#include "test.h"

#define BATCH 100

static uint64_t rng;

static uint64_t next_u64(void)
{
	uint64_t z = (rng += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* Every tensor of slot on both models agrees within rel * max|value| of
 * that tensor (plus a floor for all-zero tensors). */
static void compare(struct gp_model *a, struct gp_model *b,
		   enum gp_model_slot slot, double rel, const char *what)
{
	for (size_t i = 0; i < gp_model_tensor_count(a); i++) {
		struct gp_tensor_info t;
		float *va, *vb;
		double scale = 0, worst = 0;
		size_t n;

		ASSERT_OK(gp_model_tensor_info(a, i, &t));
		n = t.rows * t.cols;
		va = malloc(n * sizeof(float));
		vb = malloc(n * sizeof(float));
		ASSERT(va && vb);
		ASSERT_OK(gp_model_read(a, slot, i, 0, t.rows, va));
		ASSERT_OK(gp_model_read(b, slot, i, 0, t.rows, vb));
		for (size_t j = 0; j < n; j++)
			if (fabs(va[j]) > scale)
				scale = fabs(va[j]);
		for (size_t j = 0; j < n; j++) {
			double d = fabs((double)va[j] - vb[j]);

			if (d > worst)
				worst = d;
			ASSERT_NEAR(va[j], vb[j], rel * scale + 1e-9);
		}
		printf("%s %s: max |cpu - opencl| %.3g (max |value| %.3g)\n",
		       what, t.name, worst, scale);
		free(va);
		free(vb);
	}
}

int main(void)
{
	struct gp_backend *cpu, *cl;
	struct gp_model *mc, *mo;
	struct gp_model_spec spec;
	struct gp_model_stats sc, so;
	const char *env = getenv("GP_TEST_SEED");
	const char *dev = getenv("GP_TEST_OPENCL_DEVICE");
	uint64_t seed = env ? strtoull(env, NULL, 0)
			    : (uint64_t)time(NULL) ^ (uint64_t)clock();
	float *x = malloc(BATCH * 784 * sizeof(float));
	int32_t labels[BATCH];
	int r;

	ASSERT_NOT_NULL(x);
	r = gp_backend_create_opencl(dev ? atoi(dev) : 0, &cl);
	if (r == -ENODEV) {
		printf("skip: no OpenCL device\n");
		free(x);
		return GP_TEST_SKIP;
	}
	if (r < 0)
		GP_TEST_FAIL("gp_backend_create_opencl: %d: %s", r,
			     gp_backend_create_error());
	printf("seed %llu (GP_TEST_SEED=%llu replays it), device %s\n",
	       (unsigned long long)seed, (unsigned long long)seed,
	       gp_backend_info(cl)->name);
	rng = seed;
	ASSERT_OK(gp_backend_create_cpu(1, &cpu));
	ASSERT_OK(gp_model_spec_parse("784-256-128-10", &spec, NULL, 0));
	ASSERT_OK(gp_model_create(cpu, &spec, BATCH, &mc));
	ASSERT_OK(gp_model_create(cl, &spec, BATCH, &mo));
	ASSERT_OK(gp_model_init_params(mc, seed));
	ASSERT_OK(gp_model_init_params(mo, seed));
	/* Initialisation is computed on the host: the very same bits. */
	compare(mc, mo, GP_MODEL_PARAM, 0, "init");
	for (size_t i = 0; i < BATCH * 784; i++)
		x[i] = (float)((double)(next_u64() >> 40) * 0x1p-24);
	for (size_t i = 0; i < BATCH; i++)
		labels[i] = (int32_t)(next_u64() % 10);
	ASSERT_OK(gp_model_set_batch(mc, x, labels, BATCH));
	ASSERT_OK(gp_model_set_batch(mo, x, labels, BATCH));
	ASSERT_OK(gp_model_compute_grads(mc, BATCH, &sc));
	ASSERT_OK(gp_model_compute_grads(mo, BATCH, &so));
	ASSERT_NEAR(sc.loss, so.loss, 1e-5 * sc.loss);
	ASSERT_UINT_EQ(sc.correct, so.correct);
	compare(mc, mo, GP_MODEL_GRAD, 1e-4, "grad");
	for (int step = 0; step < 5; step++) {
		ASSERT_OK(gp_model_train_step(mc, BATCH - step, 0.05f, 0.9f,
					      &sc));
		ASSERT_OK(gp_model_train_step(mo, BATCH - step, 0.05f, 0.9f,
					      &so));
		ASSERT_NEAR(sc.loss, so.loss, 1e-4 * sc.loss);
	}
	compare(mc, mo, GP_MODEL_PARAM, 1e-4, "params after 5 steps");
	compare(mc, mo, GP_MODEL_MOMENTUM, 1e-3, "momentum after 5 steps");
	ASSERT_OK(gp_model_evaluate(mc, x, labels, BATCH, &sc));
	ASSERT_OK(gp_model_evaluate(mo, x, labels, BATCH, &so));
	ASSERT_NEAR(sc.loss, so.loss, 1e-4 * sc.loss);
	ASSERT_NEAR((double)sc.correct, (double)so.correct, 1);
	gp_model_destroy(mc);
	gp_model_destroy(mo);
	gp_backend_destroy(cpu);
	gp_backend_destroy(cl);
	free(x);
	printf("ok\n");
	return 0;
}
