/* gp-train: trains a model on Fashion-MNIST on this machine alone, with one
 * backend, printing one progress line per epoch and the final test accuracy
 * as the last line. The local counterpart of the distributed job, and the
 * reference it is compared with. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "data.h"
#include "log.h"
#include "model.h"

struct opts {
	const char *backend;
	const char *model;
	const char *data_dir;
	int epochs;
	size_t batch;
	float lr;
	float momentum;
	bool cosine;
	uint64_t seed;
	int threads;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: gp-train [options]\n"
		"  --backend cpu|opencl:N  compute backend (cpu)\n"
		"  --model SPEC|FILE       layer widths (784-256-128-10), or a\n"
		"                          model description file (docs/models.md)\n"
		"  --epochs N              passes over the training set (5)\n"
		"  --batch N               minibatch rows (64)\n"
		"  --lr X                  learning rate (0.05)\n"
		"  --momentum X            SGD momentum (0.9)\n"
		"  --schedule cosine|const learning-rate schedule (cosine)\n"
		"  --seed N                initialisation and shuffling (1)\n"
		"  --threads N             BLAS threads, 0 = default (0)\n"
		"  --data-dir DIR          Fashion-MNIST IDX files\n");
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	static const struct option lopts[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "model", required_argument, NULL, 'm' },
		{ "epochs", required_argument, NULL, 'e' },
		{ "batch", required_argument, NULL, 'n' },
		{ "lr", required_argument, NULL, 'l' },
		{ "momentum", required_argument, NULL, 'u' },
		{ "schedule", required_argument, NULL, 'c' },
		{ "seed", required_argument, NULL, 's' },
		{ "threads", required_argument, NULL, 't' },
		{ "data-dir", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
		char *end = NULL;

		errno = 0;
		switch (c) {
		case 'b':
			o->backend = optarg;
			break;
		case 'm':
			o->model = optarg;
			break;
		case 'd':
			o->data_dir = optarg;
			break;
		case 'e':
			o->epochs = (int)strtol(optarg, &end, 10);
			if (o->epochs < 1 || o->epochs > 10000)
				goto bad;
			break;
		case 'n':
			o->batch = (size_t)strtoul(optarg, &end, 10);
			if (o->batch < 1 || o->batch > 65536)
				goto bad;
			break;
		case 'l':
			o->lr = strtof(optarg, &end);
			if (!(o->lr > 0.0f))
				goto bad;
			break;
		case 'u':
			o->momentum = strtof(optarg, &end);
			if (!(o->momentum >= 0.0f && o->momentum < 1.0f))
				goto bad;
			break;
		case 'c':
			if (strcmp(optarg, "cosine") == 0)
				o->cosine = true;
			else if (strcmp(optarg, "const") == 0)
				o->cosine = false;
			else
				goto bad;
			break;
		case 's':
			o->seed = strtoull(optarg, &end, 0);
			break;
		case 't':
			o->threads = (int)strtol(optarg, &end, 10);
			if (o->threads < 0 || o->threads > 1024)
				goto bad;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
		if (end && (*end != '\0' || errno != 0))
			goto bad;
		continue;
bad:
		gp_error("invalid value '%s'", optarg);
		usage(stderr);
		return -EINVAL;
	}
	if (optind < argc) {
		gp_error("unexpected argument '%s'", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

static int create_backend(const struct opts *o, struct gp_backend **ret)
{
	if (strcmp(o->backend, "cpu") == 0)
		return gp_backend_create_cpu(o->threads, ret);
	if (strncmp(o->backend, "opencl:", 7) == 0) {
		char *end;
		long idx = strtol(o->backend + 7, &end, 10);

		if (*end == '\0' && end != o->backend + 7 && idx >= 0 &&
		    idx < 1024)
			return gp_backend_create_opencl((int)idx, ret);
	}
	gp_error("unknown backend '%s' (cpu or opencl:N)", o->backend);
	return -EINVAL;
}

int main(int argc, char **argv)
{
	struct opts o = {
		.backend = "cpu",
		.model = "784-256-128-10",
		.epochs = 5,
		.batch = 64,
		.lr = 0.05f,
		.momentum = 0.9f,
		.cosine = true,
		.seed = 1,
	};
	struct gp_dataset *train = NULL, *test = NULL;
	struct gp_backend *be = NULL;
	struct gp_model *m = NULL;
	struct gp_model_spec spec;
	char err[GP_DATA_ERR_MAX];
	float *x = NULL, *test_x = NULL;
	int32_t *labels = NULL, *test_labels = NULL;
	uint32_t *perm = NULL;
	uint64_t shuffle_state;
	size_t step = 0, total_steps;
	struct gp_model_stats ev = { 0 };
	int r;

	gp_log_init("gp-train");
	if ((r = parse_args(argc, argv, &o)) < 0)
		return 2;
	/* Widths are the shorthand; anything else names a file. */
	r = o.model[0] >= '0' && o.model[0] <= '9'
		    ? gp_model_spec_parse(o.model, &spec, err, sizeof(err))
		    : gp_model_spec_load(o.model, &spec, err, sizeof(err));
	if (r < 0) {
		gp_error("%s", err);
		return 2;
	}
	if (spec.dims[0] != GP_DATA_PIXELS ||
	    spec.dims[spec.n_layers] != GP_DATA_CLASSES) {
		gp_error("model %s: Fashion-MNIST needs %d inputs and %d "
			 "classes",
			 o.model, GP_DATA_PIXELS, GP_DATA_CLASSES);
		return 2;
	}
	if ((r = gp_data_load_fashion_mnist(o.data_dir, true, &train, err,
					    sizeof(err))) < 0 ||
	    (r = gp_data_load_fashion_mnist(o.data_dir, false, &test, err,
					    sizeof(err))) < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "%s", err);
		goto out;
	}
	if ((r = create_backend(&o, &be)) < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "backend %s: %s", o.backend,
			     gp_backend_create_error());
		goto out;
	}
	if ((r = gp_model_create(be, &spec, o.batch, &m)) < 0 ||
	    (r = gp_model_init_params(m, o.seed)) < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "cannot create the model: %s",
			     gp_backend_error(be));
		goto out;
	}
	x = malloc(o.batch * GP_DATA_PIXELS * sizeof(float));
	labels = malloc(o.batch * sizeof(int32_t));
	perm = malloc(train->count * sizeof(uint32_t));
	test_x = malloc(test->count * GP_DATA_PIXELS * sizeof(float));
	test_labels = malloc(test->count * sizeof(int32_t));
	if (!x || !labels || !perm || !test_x || !test_labels) {
		r = gp_log_errno(GP_LOG_ERROR, -ENOMEM, "out of memory");
		goto out;
	}
	gp_data_gather(test, NULL, test->count, test_x, test_labels);
	printf("model %s, %zu parameters, backend %s (%s), batch %zu, "
	       "lr %g (%s), momentum %g, seed %llu\n",
	       o.model, gp_model_param_count(m), o.backend,
	       gp_backend_info(be)->name, o.batch, (double)o.lr,
	       o.cosine ? "cosine" : "const",
	       (double)o.momentum, (unsigned long long)o.seed);
	total_steps = (size_t)o.epochs * ((train->count + o.batch - 1) / o.batch);
	shuffle_state = o.seed ^ UINT64_C(0x5eed5eed5eed5eed);
	for (int epoch = 1; epoch <= o.epochs; epoch++) {
		double loss = 0, t0, t;
		size_t correct = 0;

		gp_data_shuffle(perm, train->count, &shuffle_state);
		t0 = gp_bench_now();
		for (size_t off = 0; off < train->count; off += o.batch) {
			size_t n = train->count - off < o.batch
					   ? train->count - off
					   : o.batch;
			struct gp_model_stats st;
			/* Cosine decay to zero over the run: large steps
			 * early, a settled model at the end. */
			float lr = o.cosine ? o.lr * 0.5f *
					(1.0f + cosf((float)M_PI * (float)step /
						     (float)total_steps))
					    : o.lr;

			/* Dropout draws its masks from this: one seed per
			 * step, as an agent gets one per minibatch. */
			gp_model_set_seed(m, o.seed ^ (UINT64_C(0x9E3779B97F4A7C15) *
						       (step + 1)));
			step++;
			gp_data_gather(train, perm + off, n, x, labels);
			if ((r = gp_model_set_batch(m, x, labels, n)) < 0 ||
			    (r = gp_model_train_step(m, n, lr, o.momentum,
						     &st)) < 0) {
				gp_log_errno(GP_LOG_ERROR, r,
					     "training step failed: %s",
					     gp_backend_error(be));
				goto out;
			}
			loss += st.loss * (double)n;
			correct += st.correct;
		}
		t = gp_bench_now() - t0;
		if ((r = gp_model_evaluate(m, test_x, test_labels, test->count,
					   &ev)) < 0) {
			gp_log_errno(GP_LOG_ERROR, r, "evaluation failed: %s",
				     gp_backend_error(be));
			goto out;
		}
		printf("epoch %d/%d  %.0f samples/s  train loss %.4f  "
		       "train acc %.2f %%  test loss %.4f  test acc %.2f %%\n",
		       epoch, o.epochs, (double)train->count / t,
		       loss / (double)train->count,
		       100.0 * (double)correct / (double)train->count,
		       ev.loss, 100.0 * (double)ev.correct / (double)ev.samples);
		fflush(stdout);
	}
	printf("final test accuracy: %.2f %%\n",
	       100.0 * (double)ev.correct / (double)ev.samples);
	r = 0;
out:
	free(x);
	free(labels);
	free(perm);
	free(test_x);
	free(test_labels);
	gp_model_destroy(m);
	gp_backend_destroy(be);
	gp_data_destroy(train);
	gp_data_destroy(test);
	return r < 0 ? 1 : 0;
}
