/* Local training end to end on the CPU backend: the default MLP trained on
 * Fashion-MNIST for 5 epochs (minibatch 64, SGD momentum 0.9, cosine
 * learning rate from 0.05) must reach 85 % test accuracy; tools/demo's
 * configuration reaches about 88 %. The data set is a dependency
 * (dataset-fashion-mnist), so its absence is a failure. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "data.h"
#include "model.h"
#include "test.h"

#define EPOCHS 5
#define BATCH 64

int main(void)
{
	struct gp_dataset *train, *test;
	struct gp_backend *be;
	struct gp_model_spec spec;
	struct gp_model *m;
	struct gp_model_stats ev;
	char err[GP_DATA_ERR_MAX];
	float *x, *test_x;
	int32_t *labels, *test_labels;
	uint32_t *perm;
	uint64_t state = 1;
	size_t steps, step = 0;
	double acc = 0, first_loss = 0;
	int r;

	r = gp_data_load_fashion_mnist(NULL, true, &train, err, sizeof(err));
	if (r < 0)
		GP_TEST_FAIL("%s", err);
	ASSERT_OK(gp_data_load_fashion_mnist(NULL, false, &test, err,
					     sizeof(err)));
	/* One BLAS thread: meson runs tests side by side, and OpenBLAS's
	 * threads spin badly on a machine with no core to spare. */
	ASSERT_OK(gp_backend_create_cpu(1, &be));
	ASSERT_OK(gp_model_spec_parse("784-256-128-10", &spec, NULL, 0));
	ASSERT_OK(gp_model_create(be, &spec, BATCH, &m));
	ASSERT_OK(gp_model_init_params(m, 1));
	x = malloc(BATCH * GP_DATA_PIXELS * sizeof(float));
	labels = malloc(BATCH * sizeof(int32_t));
	perm = malloc(train->count * sizeof(uint32_t));
	test_x = malloc(test->count * GP_DATA_PIXELS * sizeof(float));
	test_labels = malloc(test->count * sizeof(int32_t));
	ASSERT(x && labels && perm && test_x && test_labels);
	ASSERT_OK(gp_data_gather(test, NULL, test->count, test_x,
				 test_labels));
	steps = EPOCHS * ((train->count + BATCH - 1) / BATCH);
	for (int epoch = 1; epoch <= EPOCHS; epoch++) {
		double loss = 0;

		gp_data_shuffle(perm, train->count, &state);
		for (size_t off = 0; off < train->count; off += BATCH) {
			size_t n = train->count - off < BATCH
					   ? train->count - off
					   : BATCH;
			float lr = 0.05f * 0.5f *
				   (1.0f + cosf((float)M_PI * (float)step++ /
						(float)steps));
			struct gp_model_stats st;

			ASSERT_OK(gp_data_gather(train, perm + off, n, x,
						 labels));
			ASSERT_OK(gp_model_set_batch(m, x, labels, n));
			ASSERT_OK(gp_model_train_step(m, n, lr, 0.9f, &st));
			ASSERT(isfinite(st.loss));
			loss += st.loss * (double)n;
		}
		loss /= (double)train->count;
		ASSERT_OK(gp_model_evaluate(m, test_x, test_labels,
					    test->count, &ev));
		acc = 100.0 * (double)ev.correct / (double)ev.samples;
		printf("epoch %d: train loss %.4f, test loss %.4f, test "
		       "accuracy %.2f %%\n",
		       epoch, loss, ev.loss, acc);
		fflush(stdout);
		if (epoch == 1)
			first_loss = loss;
		else
			ASSERT(loss < first_loss);
	}
	ASSERT(acc >= 85.0);
	free(x);
	free(labels);
	free(perm);
	free(test_x);
	free(test_labels);
	gp_model_destroy(m);
	gp_backend_destroy(be);
	gp_data_destroy(train);
	gp_data_destroy(test);
	return 0;
}
