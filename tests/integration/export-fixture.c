/* export-fixture MODEL OUTDIR [STEPS]: trains the model description MODEL
 * (a file) for STEPS minibatches of Fashion-MNIST on the CPU backend,
 * writes its parameters with the export writers the coordinator uses
 * (OUTDIR/model.safetensors, OUTDIR/model.onnx when built with ONNX), and
 * what the project's own model computes on the test set as the reference
 * a reader of those files must reproduce (OUTDIR/reference.txt):
 *
 *   accuracy A          over the whole test set
 *   loss L              mean loss over the whole test set
 *   sample I LOSS OK    for the first 256 test samples, one at a time
 *
 * Used by test_export.py for the layers a pool cannot train yet (conv,
 * pooling, GELU, dropout, layernorm, residual add, mse): the writers are
 * the ones `gradpool-coordinator export` calls. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "data.h"
#include "export.h"
#include "gp-config.h"
#include "model.h"

#define BATCH 64
#define SAMPLES 256

static int write_with(const char *dir, const char *name,
		      const struct gp_export_model *m, bool onnx)
{
	char path[1024], err[GP_EXPORT_ERR_MAX] = "";
	FILE *f;
	int r;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f) {
		perror(path);
		return -errno;
	}
	r = onnx ? gp_export_onnx(m, f, err, sizeof(err))
		 : gp_export_safetensors(m, f);
	if (fclose(f) != 0 && r >= 0)
		r = -EIO;
	if (r < 0)
		fprintf(stderr, "%s: %s\n", path, err[0] ? err : strerror(-r));
	return r;
}

int main(int argc, char **argv)
{
	struct gp_model_spec spec;
	struct gp_dataset *train = NULL, *test = NULL;
	struct gp_backend *be = NULL;
	struct gp_model *m = NULL;
	struct gp_export_tensor t[2 * GP_MODEL_MAX_NODES];
	struct gp_export_meta meta[2];
	struct gp_export_model em = { 0 };
	char err[512], desc[GP_MODEL_DESC_MAX], path[1024];
	float *x = NULL, *vals[2 * GP_MODEL_MAX_NODES] = { 0 };
	int32_t *y = NULL;
	uint32_t *perm = NULL;
	uint64_t shuffle = 7;
	size_t n_t = 0, steps = argc > 3 ? strtoul(argv[3], NULL, 10) : 200;
	struct gp_model_stats st;
	FILE *ref = NULL;
	const char *data_dir = GP_DATA_DIR_DEFAULT;
	int r = 1;

	if (argc < 3) {
		fprintf(stderr, "usage: export-fixture MODEL OUTDIR [STEPS]\n");
		return 2;
	}
	if (gp_model_spec_load(argv[1], &spec, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 2;
	}
	if (spec.dims[0] != GP_DATA_PIXELS) {
		fprintf(stderr, "%s: not a Fashion-MNIST model\n", argv[1]);
		return 2;
	}
	if (getenv("GP_DATA_DIR"))
		data_dir = getenv("GP_DATA_DIR");
	if (gp_data_load_fashion_mnist(data_dir, true, &train, err,
				       sizeof(err)) < 0 ||
	    gp_data_load_fashion_mnist(data_dir, false, &test, err,
				       sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 77;
	}
	if (gp_backend_create_cpu(1, &be) < 0 ||
	    gp_model_create(be, &spec, BATCH, &m) < 0 ||
	    gp_model_init_params(m, 1) < 0) {
		fprintf(stderr, "cannot build the model\n");
		goto out;
	}
	x = malloc(test->count * GP_DATA_PIXELS * sizeof(float));
	y = malloc(test->count * sizeof(int32_t));
	perm = malloc(train->count * sizeof(uint32_t));
	if (!x || !y || !perm)
		goto out;
	gp_data_shuffle(perm, train->count, &shuffle);
	for (size_t s = 0; s < steps; s++) {
		size_t off = (s * BATCH) % (train->count - BATCH);

		gp_model_set_seed(m, s + 1);
		if (gp_data_gather(train, perm + off, BATCH, x, y) < 0 ||
		    gp_model_set_batch(m, x, y, BATCH) < 0 ||
		    gp_model_train_step(m, BATCH, 0.02f, 0.9f, &st) < 0) {
			fprintf(stderr, "training failed: %s\n",
				gp_backend_error(be));
			goto out;
		}
	}

	/* The parameters, laid out as the coordinator's store holds them. */
	gp_export_layout(&spec, t, &n_t);
	for (size_t i = 0; i < n_t; i++) {
		struct gp_tensor_info ti;

		if (gp_model_tensor_info(m, i, &ti) < 0 ||
		    strcmp(ti.name, t[i].name) != 0 ||
		    ti.rows * ti.cols != t[i].count) {
			fprintf(stderr, "tensor %zu: layout and model differ\n", i);
			goto out;
		}
		vals[i] = malloc(t[i].count * sizeof(float));
		if (!vals[i] ||
		    gp_model_read(m, GP_MODEL_PARAM, i, 0, ti.rows, vals[i]) < 0)
			goto out;
		t[i].data = vals[i];
	}
	{
		struct gp_model_spec d = spec;

		d.version = GP_MODEL_FORMAT_VERSION;
		gp_model_spec_format(&d, desc, sizeof(desc));
	}
	meta[0] = (struct gp_export_meta){ "format", "pt" };
	meta[1] = (struct gp_export_meta){ "gradpool.model", desc };
	em = (struct gp_export_model){ &spec, t, n_t, meta, 2, 0 };
	if (write_with(argv[2], "model.safetensors", &em, false) < 0)
		goto out;
	if (gp_export_have_onnx() &&
	    write_with(argv[2], "model.onnx", &em, true) < 0)
		goto out;

	snprintf(path, sizeof(path), "%s/reference.txt", argv[2]);
	ref = fopen(path, "w");
	if (!ref)
		goto out;
	gp_data_gather(test, NULL, test->count, x, y);
	if (gp_model_evaluate(m, x, y, test->count, &st) < 0)
		goto out;
	fprintf(ref, "accuracy %.6f\nloss %.9g\n",
		(double)st.correct / (double)st.samples, st.loss);
	for (size_t i = 0; i < SAMPLES; i++) {
		if (gp_model_evaluate(m, x + i * GP_DATA_PIXELS, y + i, 1,
				      &st) < 0)
			goto out;
		fprintf(ref, "sample %zu %.9g %zu\n", i, st.loss, st.correct);
	}
	if (fclose(ref) != 0) {
		ref = NULL;
		goto out;
	}
	ref = NULL;
	r = 0;
out:
	if (ref)
		fclose(ref);
	for (size_t i = 0; i < n_t; i++)
		free(vals[i]);
	free(x);
	free(y);
	free(perm);
	gp_model_destroy(m);
	gp_backend_destroy(be);
	gp_data_destroy(train);
	gp_data_destroy(test);
	return r;
}
