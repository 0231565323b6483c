/* Models as data: spec parsing, the tensor table, seeded initialisation,
 * and the gradients of every layer kind checked against central finite
 * differences of an independent double-precision forward pass. The seed of
 * the random inputs is printed; GP_TEST_SEED replays a run. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backend.h"
#include "model.h"
#include "test.h"

static uint64_t rng;

static uint64_t next_u64(void)
{
	uint64_t z = (rng += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

static float uni(float lo, float hi)
{
	return lo + (hi - lo) * (float)((double)(next_u64() >> 40) * 0x1p-24);
}

static void test_spec(void)
{
	static const char *const bad[] = {
		"", "784", "784-", "-10", "784--10", "784-0-10", "784-10x",
		"784-70000-10", "784-1", "784 - 10", "0x10-10",
		"1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16-17-18",
		"99999999999999999999999-10",
	};
	struct gp_model_spec spec;
	char err[256], buf[GP_MODEL_SPEC_MAX];

	ASSERT_OK(gp_model_spec_parse("784-256-128-10", &spec, err,
				      sizeof(err)));
	ASSERT_UINT_EQ(spec.n_layers, 3);
	ASSERT_EQ(spec.dims[0], 784);
	ASSERT_EQ(spec.dims[1], 256);
	ASSERT_EQ(spec.dims[2], 128);
	ASSERT_EQ(spec.dims[3], 10);
	ASSERT_EQ(gp_model_spec_format(&spec, buf, sizeof(buf)), 14);
	ASSERT_STR_EQ(buf, "784-256-128-10");
	ASSERT_EQ(gp_model_spec_format(&spec, buf, 5), -ENOSPC);
	ASSERT_UINT_EQ(gp_model_spec_param_count(&spec), 235146);
	/* The widest and deepest that are allowed. */
	ASSERT_OK(gp_model_spec_parse("65536-2", &spec, NULL, 0));
	ASSERT_OK(gp_model_spec_parse("1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16-17",
				      &spec, NULL, 0));
	ASSERT_UINT_EQ(spec.n_layers, 16);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		memset(&spec, 0x55, sizeof(spec));
		ASSERT_EQ(gp_model_spec_parse(bad[i], &spec, err, sizeof(err)),
			  -EINVAL);
		printf("spec \"%s\": %s\n", bad[i], err);
		ASSERT(strstr(err, "model spec") != NULL);
		/* ret is not written on failure. */
		ASSERT_EQ(spec.n_layers, (size_t)0x5555555555555555ull);
	}
	ASSERT_EQ(gp_model_spec_parse(NULL, &spec, err, sizeof(err)), -EINVAL);
}

static struct gp_model *make(struct gp_backend *be, const char *text,
			     size_t max_batch, uint64_t seed)
{
	struct gp_model_spec spec;
	struct gp_model *m;

	ASSERT_OK(gp_model_spec_parse(text, &spec, NULL, 0));
	ASSERT_OK(gp_model_create(be, &spec, max_batch, &m));
	ASSERT_OK(gp_model_init_params(m, seed));
	return m;
}

/* All of slot's values, tensor after tensor, in one host array. */
static float *read_all(const struct gp_model *m, enum gp_model_slot slot)
{
	float *all = malloc(gp_model_param_count(m) * sizeof(float)), *p;

	ASSERT_NOT_NULL(all);
	p = all;
	for (size_t i = 0; i < gp_model_tensor_count(m); i++) {
		struct gp_tensor_info t;

		ASSERT_OK(gp_model_tensor_info(m, i, &t));
		ASSERT_OK(gp_model_read(m, slot, i, 0, t.rows, p));
		p += t.rows * t.cols;
	}
	return all;
}

static void test_tensors_and_init(struct gp_backend *be)
{
	struct gp_model *a = make(be, "784-256-128-10", 8, 42);
	struct gp_model *b = make(be, "784-256-128-10", 1, 42);
	struct gp_model *c = make(be, "784-256-128-10", 8, 43);
	static const char *const names[] = { "fc1.weight", "fc1.bias",
					     "fc2.weight", "fc2.bias",
					     "fc3.weight", "fc3.bias" };
	struct gp_tensor_info t;
	float *pa, *pb, *pc, rows[3 * 784], back[3 * 784];
	size_t n = gp_model_param_count(a), off = 0, differ = 0;

	ASSERT_UINT_EQ(gp_model_tensor_count(a), 6);
	ASSERT_UINT_EQ(n, 235146);
	for (size_t i = 0; i < 6; i++) {
		ASSERT_OK(gp_model_tensor_info(a, i, &t));
		ASSERT_STR_EQ(t.name, names[i]);
		ASSERT_EQ(gp_model_tensor_find(a, names[i]), i);
		ASSERT_UINT_EQ(t.layer, i / 2 + 1);
	}
	ASSERT_OK(gp_model_tensor_info(a, 0, &t));
	ASSERT_UINT_EQ(t.rows, 256);
	ASSERT_UINT_EQ(t.cols, 784);
	ASSERT_OK(gp_model_tensor_info(a, 5, &t));
	ASSERT_UINT_EQ(t.rows, 10);
	ASSERT_UINT_EQ(t.cols, 1);
	ASSERT_EQ(gp_model_tensor_info(a, 6, &t), -EINVAL);
	ASSERT_EQ(gp_model_tensor_find(a, "fc4.weight"), -ENOENT);
	ASSERT(gp_model_buf(a, GP_MODEL_GRAD, 6) == NULL);
	ASSERT_NOT_NULL(gp_model_buf(a, GP_MODEL_MOMENTUM, 5));

	/* Same seed, same bits, whatever the batch size; another seed,
	 * other weights. */
	pa = read_all(a, GP_MODEL_PARAM);
	pb = read_all(b, GP_MODEL_PARAM);
	pc = read_all(c, GP_MODEL_PARAM);
	ASSERT_MEM_EQ(pa, pb, n * sizeof(float));
	for (size_t i = 0; i < 6; i++) {
		double bound, sum = 0, sq = 0;
		size_t len;

		ASSERT_OK(gp_model_tensor_info(a, i, &t));
		len = t.rows * t.cols;
		bound = sqrt(6.0 / (double)t.cols);
		for (size_t j = 0; j < len; j++) {
			double v = pa[off + j];

			if (t.cols == 1) {
				ASSERT_NEAR(v, 0, 0);
				continue;
			}
			ASSERT(fabs(v) <= bound);
			sum += v;
			sq += v * v;
			differ += pa[off + j] != pc[off + j];
		}
		if (t.cols > 1 && len > 1000) {
			/* U(-b, b): mean 0, variance b^2 / 3 = 2 / fan_in. */
			ASSERT_NEAR(sum / len, 0, 4 * bound / sqrt(3.0 * len));
			ASSERT_NEAR(sq / len, 2.0 / t.cols, 0.05 * 2.0 / t.cols);
		}
		off += len;
	}
	ASSERT_GT(differ, n / 2);
	/* Row ranges read and write the right rows. */
	ASSERT_OK(gp_model_read(a, GP_MODEL_PARAM, 0, 5, 3, rows));
	ASSERT_MEM_EQ(rows, pa + 5 * 784, sizeof(rows));
	for (size_t j = 0; j < 3 * 784; j++)
		rows[j] = (float)j;
	ASSERT_OK(gp_model_write(a, GP_MODEL_PARAM, 0, 253, 3, rows));
	ASSERT_OK(gp_model_read(a, GP_MODEL_PARAM, 0, 253, 3, back));
	ASSERT_MEM_EQ(rows, back, sizeof(rows));
	ASSERT_OK(gp_model_read(a, GP_MODEL_PARAM, 0, 252, 1, back));
	ASSERT_MEM_EQ(back, pa + 252 * 784, 784 * sizeof(float));
	ASSERT_EQ(gp_model_write(a, GP_MODEL_PARAM, 0, 254, 3, rows), -EINVAL);
	ASSERT_EQ(gp_model_read(a, GP_MODEL_GRAD, 1, 257, 0, back), -EINVAL);
	ASSERT_EQ(gp_model_read(a, (enum gp_model_slot)3, 1, 0, 1, back),
		  -EINVAL);
	/* init also clears the momentum and the gradients. */
	ASSERT_OK(gp_model_write(a, GP_MODEL_MOMENTUM, 5, 0, 3, rows));
	ASSERT_OK(gp_model_init_params(a, 42));
	ASSERT_OK(gp_model_read(a, GP_MODEL_MOMENTUM, 5, 0, 3, back));
	ASSERT_NEAR(back[1], 0, 0);
	free(pa);
	free(pb);
	free(pc);
	gp_model_destroy(a);
	gp_model_destroy(b);
	gp_model_destroy(c);
	gp_model_destroy(NULL);
}

/* The independent reference: the model's loss in double precision from
 * host parameters (packed as read_all() packs them). *ret_zmin gets the
 * smallest |pre-activation| of any hidden unit, the distance to a ReLU
 * kink. */
static double ref_loss(const struct gp_model_spec *s, const double *p,
		       const float *x, const int32_t *labels, size_t n,
		       double *ret_zmin)
{
	double act[2][64], loss = 0, zmin = INFINITY;

	for (size_t r = 0; r < n; r++) {
		const double *w = p;
		double *in = act[0], *out = act[1];
		size_t L = s->n_layers;

		for (size_t i = 0; i < s->dims[0]; i++)
			in[i] = x[r * s->dims[0] + i];
		for (size_t l = 1; l <= L; l++) {
			size_t ni = s->dims[l - 1], no = s->dims[l];
			const double *bias = w + no * ni;

			for (size_t o = 0; o < no; o++) {
				double z = bias[o];

				for (size_t i = 0; i < ni; i++)
					z += w[o * ni + i] * in[i];
				if (l < L) {
					if (fabs(z) < zmin)
						zmin = fabs(z);
					z = z > 0 ? z : 0;
				}
				out[o] = z;
			}
			w = bias + no;
			in = out;
			out = in == act[0] ? act[1] : act[0];
		}
		{
			size_t k = s->dims[L];
			double max = in[0], sum = 0;

			for (size_t c = 1; c < k; c++)
				if (in[c] > max)
					max = in[c];
			for (size_t c = 0; c < k; c++)
				sum += exp(in[c] - max);
			loss += log(sum) - (in[labels[r]] - max);
		}
	}
	if (ret_zmin)
		*ret_zmin = zmin;
	return loss / (double)n;
}

/* Analytic gradients of the backend against central differences of
 * ref_loss() for every parameter of a small model. */
static void gradcheck(struct gp_backend *be, const char *text, size_t n)
{
	struct gp_model *m = make(be, text, n, next_u64());
	const struct gp_model_spec *s = gp_model_get_spec(m);
	size_t np = gp_model_param_count(m), in = s->dims[0];
	float *x = malloc(n * in * sizeof(float)), *pf, *g;
	int32_t *labels = malloc(n * sizeof(int32_t));
	double *p = malloc(np * sizeof(double)), zmin, loss, worst = 0;
	struct gp_model_stats st;
	const double h = 1e-6;

	ASSERT(x && labels && p);
	pf = read_all(m, GP_MODEL_PARAM);
	for (size_t i = 0; i < np; i++)
		p[i] = pf[i];
	/* Biases start at zero; give them values so their gradients are
	 * tested away from the initial point too. */
	for (size_t i = 0, off = 0; i < gp_model_tensor_count(m); i++) {
		struct gp_tensor_info t;

		ASSERT_OK(gp_model_tensor_info(m, i, &t));
		if (t.cols == 1) {
			for (size_t j = 0; j < t.rows; j++)
				pf[off + j] = uni(-0.2f, 0.2f);
			ASSERT_OK(gp_model_write(m, GP_MODEL_PARAM, i, 0, t.rows,
						 pf + off));
			for (size_t j = 0; j < t.rows; j++)
				p[off + j] = pf[off + j];
		}
		off += t.rows * t.cols;
	}
	/* Inputs far enough from every ReLU kink that a step of h cannot
	 * cross one. */
	do {
		for (size_t i = 0; i < n * in; i++)
			x[i] = uni(0, 1);
		for (size_t r = 0; r < n; r++)
			labels[r] = (int32_t)(next_u64() %
					      s->dims[s->n_layers]);
		loss = ref_loss(s, p, x, labels, n, &zmin);
	} while (zmin < 1e-3);
	ASSERT_OK(gp_model_set_batch(m, x, labels, n));
	ASSERT_OK(gp_model_compute_grads(m, n, &st));
	ASSERT_UINT_EQ(st.samples, n);
	ASSERT_NEAR(st.loss, loss, 1e-5 * (1 + loss));
	g = read_all(m, GP_MODEL_GRAD);
	for (size_t i = 0; i < np; i++) {
		double keep = p[i], up, down, fd;

		p[i] = keep + h;
		up = ref_loss(s, p, x, labels, n, NULL);
		p[i] = keep - h;
		down = ref_loss(s, p, x, labels, n, NULL);
		p[i] = keep;
		fd = (up - down) / (2 * h);
		if (fabs(g[i] - fd) > worst)
			worst = fabs(g[i] - fd);
		ASSERT_NEAR(g[i], fd, 1e-5 + 1e-3 * fabs(fd));
	}
	printf("gradcheck %s, batch %zu: %zu parameters, worst |analytic - "
	       "fd| %.3g\n",
	       text, n, np, worst);
	/* The squared norm is the sum over every gradient. */
	{
		double ss = 0, got;

		for (size_t i = 0; i < np; i++)
			ss += (double)g[i] * g[i];
		ASSERT_OK(gp_model_grad_sumsq(m, &got));
		ASSERT_NEAR(got, ss, 1e-9 * ss + 1e-12);
	}
	/* Evaluation in chunks of 2 agrees with the reference too. */
	{
		struct gp_model *e;
		struct gp_model_spec spec = *s;
		struct gp_model_stats ev;

		ASSERT_OK(gp_model_create(be, &spec, 2, &e));
		for (size_t i = 0; i < gp_model_tensor_count(m); i++) {
			struct gp_tensor_info t;
			float *buf;

			ASSERT_OK(gp_model_tensor_info(m, i, &t));
			buf = malloc(t.rows * t.cols * sizeof(float));
			ASSERT_NOT_NULL(buf);
			ASSERT_OK(gp_model_read(m, GP_MODEL_PARAM, i, 0, t.rows,
						buf));
			ASSERT_OK(gp_model_write(e, GP_MODEL_PARAM, i, 0,
						 t.rows, buf));
			free(buf);
		}
		ASSERT_OK(gp_model_evaluate(e, x, labels, n, &ev));
		ASSERT_UINT_EQ(ev.samples, n);
		ASSERT_NEAR(ev.loss, loss, 1e-5 * (1 + loss));
		ASSERT_UINT_EQ(ev.correct, st.correct);
		gp_model_destroy(e);
	}
	free(x);
	free(labels);
	free(p);
	free(pf);
	free(g);
	gp_model_destroy(m);
}

/* The fused step and grads-then-update give the same parameters. */
static void test_fused_step(struct gp_backend *be)
{
	struct gp_model *a = make(be, "20-16-8-4", 10, 7);
	struct gp_model *b = make(be, "20-16-8-4", 10, 7);
	float x[10 * 20], *pa, *pb, *va, *vb, *p0;
	int32_t labels[10];
	size_t np = gp_model_param_count(a), moved = 0;

	for (size_t i = 0; i < 200; i++)
		x[i] = uni(0, 1);
	for (size_t r = 0; r < 10; r++)
		labels[r] = (int32_t)(next_u64() % 4);
	p0 = read_all(a, GP_MODEL_PARAM);
	ASSERT_OK(gp_model_set_batch(a, x, labels, 10));
	ASSERT_OK(gp_model_set_batch(b, x, labels, 10));
	for (int step = 0; step < 3; step++) {
		struct gp_model_stats sa, sb;

		ASSERT_OK(gp_model_train_step(a, 10 - step, 0.1f, 0.9f, &sa));
		ASSERT_OK(gp_model_compute_grads(b, 10 - step, &sb));
		ASSERT_OK(gp_model_apply_grads(b, 0.1f, 0.9f));
		ASSERT_NEAR(sa.loss, sb.loss, 1e-5);
		ASSERT_UINT_EQ(sa.correct, sb.correct);
	}
	pa = read_all(a, GP_MODEL_PARAM);
	pb = read_all(b, GP_MODEL_PARAM);
	va = read_all(a, GP_MODEL_MOMENTUM);
	vb = read_all(b, GP_MODEL_MOMENTUM);
	for (size_t i = 0; i < np; i++) {
		ASSERT_NEAR(pa[i], pb[i], 1e-5);
		ASSERT_NEAR(va[i], vb[i], 1e-5);
		moved += fabsf(pa[i] - p0[i]) > 1e-4f;
	}
	/* Most parameters moved (some ReLU units may be dead). */
	ASSERT_GT(moved, np / 2);
	free(pa);
	free(pb);
	free(va);
	free(vb);
	free(p0);
	gp_model_destroy(a);
	gp_model_destroy(b);
}

struct ready_log {
	struct gp_model *m;
	size_t calls;
	size_t layers[8];
	float *grads[8]; /* the weight gradient as seen in the callback */
};

static int on_ready(void *ctx, size_t layer)
{
	struct ready_log *log = ctx;
	struct gp_tensor_info t;

	ASSERT_OK(gp_model_tensor_info(log->m, 2 * (layer - 1), &t));
	log->grads[log->calls] = malloc(t.rows * t.cols * sizeof(float));
	ASSERT_NOT_NULL(log->grads[log->calls]);
	ASSERT_OK(gp_model_read(log->m, GP_MODEL_GRAD, 2 * (layer - 1), 0,
				t.rows, log->grads[log->calls]));
	log->layers[log->calls++] = layer;
	return layer == 1 ? -ECANCELED : 0;
}

/* The per-layer notification comes last layer first, with that layer's
 * gradients already final; a negative return stops the step. */
static void test_notify(struct gp_backend *be)
{
	struct gp_model *m = make(be, "9-8-7-3", 4, 5);
	struct ready_log log = { .m = m };
	float x[4 * 9], *g;
	int32_t labels[4] = { 0, 1, 2, 1 };

	for (size_t i = 0; i < 36; i++)
		x[i] = uni(0, 1);
	ASSERT_OK(gp_model_set_batch(m, x, labels, 4));
	ASSERT_EQ(gp_model_compute_grads_notify(m, 4, NULL, on_ready, &log),
		  -ECANCELED);
	ASSERT_UINT_EQ(log.calls, 3);
	for (size_t i = 0; i < 3; i++)
		ASSERT_UINT_EQ(log.layers[i], 3 - i);
	g = read_all(m, GP_MODEL_GRAD);
	/* fc3.weight starts after fc1 (8 x 9 + 8) and fc2 (7 x 8 + 7). */
	ASSERT_MEM_EQ(log.grads[0], g + 80 + 63, 3 * 7 * sizeof(float));
	ASSERT_MEM_EQ(log.grads[1], g + 80, 7 * 8 * sizeof(float));
	ASSERT_MEM_EQ(log.grads[2], g, 8 * 9 * sizeof(float));
	for (size_t i = 0; i < 3; i++)
		free(log.grads[i]);
	free(g);
	gp_model_destroy(m);
}

static void test_errors(struct gp_backend *be)
{
	struct gp_model *m = make(be, "4-3", 2, 1);
	struct gp_model_spec spec = { 0 };
	struct gp_model *none = NULL;
	float x[12] = { 0 };
	int32_t labels[3] = { 0, 3, 1 };
	struct gp_model_stats st;

	ASSERT_EQ(gp_model_create(be, &spec, 2, &none), -EINVAL);
	ASSERT(none == NULL);
	ASSERT_OK(gp_model_spec_parse("4-3", &spec, NULL, 0));
	ASSERT_EQ(gp_model_create(be, &spec, 0, &none), -EINVAL);
	ASSERT_EQ(gp_model_set_batch(m, x, labels, 3), -EINVAL);
	/* Nothing loaded yet. */
	ASSERT_EQ(gp_model_compute_grads(m, 1, &st), -EINVAL);
	ASSERT_OK(gp_model_set_batch(m, x, labels, 2));
	ASSERT_EQ(gp_model_compute_grads(m, 3, &st), -EINVAL);
	/* Label 3 of 3 classes. */
	ASSERT_EQ(gp_model_compute_grads(m, 2, &st), -EINVAL);
	ASSERT_EQ(gp_model_train_step(m, 2, 0.1f, 0.9f, &st), -EINVAL);
	ASSERT_OK(gp_model_compute_grads(m, 1, &st));
	ASSERT_NEAR(st.loss, log(3.0), 1e-6);
	gp_model_destroy(m);
}

int main(void)
{
	struct gp_backend *be;
	const char *env = getenv("GP_TEST_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0)
			    : (uint64_t)time(NULL) ^ (uint64_t)clock();

	printf("seed %llu (GP_TEST_SEED=%llu replays it)\n",
	       (unsigned long long)seed, (unsigned long long)seed);
	rng = seed;
	ASSERT_OK(gp_backend_create_cpu(1, &be));
	test_spec();
	test_tensors_and_init(be);
	/* Dense + softmax alone, one ReLU layer, two, and a wide batch. */
	gradcheck(be, "6-3", 5);
	gradcheck(be, "6-5-3", 7);
	gradcheck(be, "7-6-5-4", 9);
	gradcheck(be, "12-10-8-6-5", 16);
	test_fused_step(be);
	test_notify(be);
	test_errors(be);
	gp_backend_destroy(be);
	printf("ok\n");
	return 0;
}
