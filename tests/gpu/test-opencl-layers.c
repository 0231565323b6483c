/* The OpenCL backend's layer ops beyond the MLP's and the CNN's (GELU,
 * the dropout product, layer and group norm, MSE, token embedding, causal
 * attention) against the CPU backend, op by op from the same random
 * values, and whole models built from them (a residual MLP with dropout
 * under MSE, a CNN with group norm, a small GPT under seq_xent) on both
 * backends: the same loss, gradients and fused step. The CPU backend's ops
 * are themselves checked against finite differences in double
 * (tests/unit/test-layers.c, test-transformer.c), so agreement here makes
 * the OpenCL ops right too. Exits 77 (skipped) without an OpenCL device;
 * GP_TEST_SEED=<n> replays a run, GP_TEST_OPENCL_DEVICE picks the device. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "model.h"
#include "test.h"

static uint64_t rng_state;

/* splitmix64: the same stream everywhere for a given seed. */
static uint64_t rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Uniform in [-scale, scale). */
static float *rnd_vec(size_t n, float scale)
{
	float *v = malloc(n * sizeof(*v));

	ASSERT_NOT_NULL(v);
	for (size_t i = 0; i < n; i++)
		v[i] = scale * (2.0f * (float)((rng_next() >> 40) * 0x1p-24) -
				1.0f);
	return v;
}

/* Both backends' copies of one tensor. */
struct pair {
	struct gp_buf *b[2];
	size_t n;
};

/* be[0] is OpenCL, be[1] the CPU. v (borrowed, may be NULL for zeros) is
 * written to both. */
static struct pair pair_new(struct gp_backend *be[2], const float *v,
			    size_t n)
{
	struct pair p = { .n = n };

	for (int i = 0; i < 2; i++) {
		ASSERT_OK(gp_buf_create(be[i], GP_F32, n, &p.b[i]));
		if (v)
			ASSERT_OK(gp_buf_write(p.b[i], 0, v, n));
	}
	return p;
}

static struct pair pair_rnd(struct gp_backend *be[2], size_t n, float scale)
{
	float *v = rnd_vec(n, scale);
	struct pair p = pair_new(be, v, n);

	free(v);
	return p;
}

static void pair_free(struct pair *p)
{
	gp_buf_destroy(p->b[0]);
	gp_buf_destroy(p->b[1]);
}

/* The two copies agree within rel times the largest |CPU value|, and the
 * CPU's is not all zero. */
static void agree(const struct pair *p, double rel, const char *what)
{
	float *va = malloc(p->n * sizeof(*va)), *vb = malloc(p->n * sizeof(*vb));
	double maxabs = 0, maxdiff = 0;
	size_t worst = 0;

	ASSERT_NOT_NULL(va);
	ASSERT_NOT_NULL(vb);
	ASSERT_OK(gp_buf_read(p->b[0], 0, va, p->n));
	ASSERT_OK(gp_buf_read(p->b[1], 0, vb, p->n));
	for (size_t i = 0; i < p->n; i++) {
		double d = fabs((double)va[i] - vb[i]);

		if (!isfinite(va[i]) || !isfinite(vb[i]))
			GP_TEST_FAIL("%s[%zu]: opencl %g, cpu %g", what, i,
				     (double)va[i], (double)vb[i]);
		if (fabs(vb[i]) > maxabs)
			maxabs = fabs(vb[i]);
		if (d > maxdiff) {
			maxdiff = d;
			worst = i;
		}
	}
	if (maxabs == 0)
		GP_TEST_FAIL("%s: all zero", what);
	if (!(maxdiff <= rel * maxabs))
		GP_TEST_FAIL("%s[%zu]: opencl %.9g, cpu %.9g (max |cpu| %.9g)",
			     what, worst, (double)va[worst], (double)vb[worst],
			     maxabs);
	printf("  %-28s max diff %.3g of max %.3g\n", what, maxdiff, maxabs);
	free(va);
	free(vb);
}

static void check_elementwise(struct gp_backend *be[2])
{
	const size_t n = 1037;
	struct pair x = pair_rnd(be, n, 4), dy = pair_rnd(be, n, 1);
	struct pair y = pair_new(be, NULL, n), dx = pair_new(be, NULL, n);

	for (int i = 0; i < 2; i++) {
		ASSERT_OK(gp_gelu_forward(be[i], x.b[i], y.b[i], n));
		ASSERT_OK(gp_gelu_backward(be[i], x.b[i], dy.b[i], dx.b[i], n));
	}
	agree(&y, 1e-6, "gelu forward");
	agree(&dx, 1e-6, "gelu backward");
	/* In place, as the model's backward pass may run it. */
	for (int i = 0; i < 2; i++)
		ASSERT_OK(gp_gelu_backward(be[i], x.b[i], dy.b[i], dy.b[i], n));
	agree(&dy, 1e-6, "gelu backward in place");
	for (int i = 0; i < 2; i++)
		ASSERT_OK(gp_mul(be[i], x.b[i], dy.b[i], y.b[i], n));
	agree(&y, 1e-6, "mul");
	pair_free(&x);
	pair_free(&dy);
	pair_free(&y);
	pair_free(&dx);
}

static void check_layernorm(struct gp_backend *be[2], size_t rows,
			    size_t cols)
{
	struct pair x = pair_rnd(be, rows * cols, 3);
	struct pair g = pair_rnd(be, cols, 1.5f), b = pair_rnd(be, cols, 1);
	struct pair y = pair_new(be, NULL, rows * cols);
	struct pair st = pair_new(be, NULL, 2 * rows);
	struct pair dy = pair_rnd(be, rows * cols, 1);
	struct pair dx = pair_rnd(be, rows * cols, 1e30f);
	struct pair dg = pair_rnd(be, cols, 1e30f), db = pair_rnd(be, cols, 1e30f);

	printf(" layernorm %zu x %zu\n", rows, cols);
	for (int i = 0; i < 2; i++) {
		ASSERT_OK(gp_layernorm_forward(be[i], x.b[i], g.b[i], b.b[i],
					       y.b[i], st.b[i], rows, cols,
					       1e-5f));
		ASSERT_OK(gp_layernorm_backward(be[i], x.b[i], g.b[i], st.b[i],
						dy.b[i], dx.b[i], dg.b[i],
						db.b[i], 0.0f, rows, cols));
	}
	agree(&y, 1e-5, "layernorm forward");
	agree(&st, 1e-5, "layernorm stats");
	agree(&dx, 1e-4, "layernorm dx");
	agree(&dg, 1e-5, "layernorm dgamma");
	agree(&db, 1e-5, "layernorm dbeta");
	/* Accumulated, without dx. */
	for (int i = 0; i < 2; i++)
		ASSERT_OK(gp_layernorm_backward(be[i], x.b[i], g.b[i], st.b[i],
						dy.b[i], NULL, dg.b[i],
						db.b[i], 0.5f, rows, cols));
	agree(&dg, 1e-5, "layernorm dgamma beta 0.5");
	agree(&db, 1e-5, "layernorm dbeta beta 0.5");
	pair_free(&x);
	pair_free(&g);
	pair_free(&b);
	pair_free(&y);
	pair_free(&st);
	pair_free(&dy);
	pair_free(&dx);
	pair_free(&dg);
	pair_free(&db);
}

static void check_groupnorm(struct gp_backend *be[2],
			    struct gp_groupnorm_shape s)
{
	size_t nx = s.n * s.c * s.hw;
	struct pair x = pair_rnd(be, nx, 3);
	struct pair g = pair_rnd(be, s.c, 1.5f), b = pair_rnd(be, s.c, 1);
	struct pair y = pair_new(be, NULL, nx);
	struct pair st = pair_new(be, NULL, 2 * s.n * s.groups);
	struct pair dy = pair_rnd(be, nx, 1), dx = pair_rnd(be, nx, 1e30f);
	struct pair dg = pair_rnd(be, s.c, 1e30f), db = pair_rnd(be, s.c, 1e30f);

	printf(" groupnorm n %zu c %zu hw %zu groups %zu\n", s.n, s.c, s.hw,
	       s.groups);
	for (int i = 0; i < 2; i++) {
		ASSERT_OK(gp_groupnorm_forward(be[i], x.b[i], g.b[i], b.b[i],
					       y.b[i], st.b[i], &s, 1e-5f));
		ASSERT_OK(gp_groupnorm_backward(be[i], x.b[i], g.b[i], st.b[i],
						dy.b[i], dx.b[i], dg.b[i],
						db.b[i], 0.0f, &s));
	}
	agree(&y, 1e-5, "groupnorm forward");
	agree(&st, 1e-5, "groupnorm stats");
	agree(&dx, 1e-4, "groupnorm dx");
	agree(&dg, 1e-5, "groupnorm dgamma");
	agree(&db, 1e-5, "groupnorm dbeta");
	for (int i = 0; i < 2; i++)
		ASSERT_OK(gp_groupnorm_backward(be[i], x.b[i], g.b[i], st.b[i],
						dy.b[i], NULL, dg.b[i],
						db.b[i], 0.5f, &s));
	agree(&dg, 1e-5, "groupnorm dgamma beta 0.5");
	agree(&db, 1e-5, "groupnorm dbeta beta 0.5");
	pair_free(&x);
	pair_free(&g);
	pair_free(&b);
	pair_free(&y);
	pair_free(&st);
	pair_free(&dy);
	pair_free(&dx);
	pair_free(&dg);
	pair_free(&db);
}

static void check_mse(struct gp_backend *be[2])
{
	const size_t rows = 37, cols = 11;
	struct pair p = pair_rnd(be, rows * cols, 2), t = pair_rnd(be, rows * cols, 2);
	struct pair d = pair_new(be, NULL, rows * cols);
	double loss[2], again[2];

	for (int i = 0; i < 2; i++) {
		ASSERT_OK(gp_mse(be[i], p.b[i], t.b[i], rows, cols, d.b[i],
				 &loss[i]));
		ASSERT_OK(gp_mse(be[i], p.b[i], t.b[i], rows, cols, NULL,
				 &again[i]));
		ASSERT_NEAR(loss[i], again[i], 0);
	}
	ASSERT(loss[1] > 0.1);
	ASSERT_NEAR(loss[0], loss[1], 1e-6 * loss[1]);
	agree(&d, 1e-6, "mse gradient");
	/* In place over the predictions. */
	for (int i = 0; i < 2; i++)
		ASSERT_OK(gp_mse(be[i], p.b[i], t.b[i], rows, cols, p.b[i],
				 &loss[i]));
	agree(&p, 1e-6, "mse gradient in place");
	printf(" mse %.6f on both\n", loss[1]);
	pair_free(&p);
	pair_free(&t);
	pair_free(&d);
}

static void check_embedding(struct gp_backend *be[2])
{
	const size_t rows = 53, vocab = 13, dim = 7;
	float tok[53];
	struct pair w = pair_rnd(be, vocab * dim, 1);
	struct pair y = pair_new(be, NULL, rows * dim);
	struct pair dy = pair_rnd(be, rows * dim, 1);
	struct pair dw = pair_rnd(be, vocab * dim, 1e30f);
	struct pair t;

	/* Few ids, so most repeat and their gradients add up. */
	for (size_t r = 0; r < rows; r++)
		tok[r] = (float)(rng_next() % (vocab - 2));
	t = pair_new(be, tok, rows);
	for (int i = 0; i < 2; i++) {
		ASSERT_OK(gp_embedding_forward(be[i], t.b[i], w.b[i], y.b[i],
					       rows, vocab, dim));
		ASSERT_OK(gp_embedding_backward(be[i], t.b[i], dy.b[i],
						dw.b[i], 0.0f, rows, vocab,
						dim));
	}
	agree(&y, 0, "embedding forward");
	agree(&dw, 1e-6, "embedding backward");
	for (int i = 0; i < 2; i++)
		ASSERT_OK(gp_embedding_backward(be[i], t.b[i], dy.b[i],
						dw.b[i], 0.5f, rows, vocab,
						dim));
	agree(&dw, 1e-6, "embedding backward beta 0.5");
	/* An id out of range, a fraction and NaN are refused by both, with
	 * the row named. */
	{
		const float bad[3] = { (float)vocab, 2.5f, NAN };

		for (int k = 0; k < 3; k++) {
			float keep = tok[17];

			tok[17] = bad[k];
			for (int i = 0; i < 2; i++) {
				ASSERT_OK(gp_buf_write(t.b[i], 0, tok, rows));
				ASSERT_EQ(gp_embedding_forward(be[i], t.b[i],
							       w.b[i], y.b[i],
							       rows, vocab,
							       dim),
					  -EINVAL);
				ASSERT(strstr(gp_backend_error(be[i]),
					      "row 17") != NULL);
			}
			tok[17] = keep;
		}
		printf(" refused: %s\n", gp_backend_error(be[0]));
	}
	pair_free(&t);
	pair_free(&w);
	pair_free(&y);
	pair_free(&dy);
	pair_free(&dw);
}

static void check_attention(struct gp_backend *be[2],
			    struct gp_attention_shape s)
{
	size_t nx = s.n * s.t * 3 * s.dim, ny = s.n * s.t * s.dim;
	struct pair x = pair_rnd(be, nx, 1.5f), y = pair_new(be, NULL, ny);
	struct pair p = pair_new(be, NULL, s.n * s.heads * s.t * s.t);
	struct pair dy = pair_rnd(be, ny, 1), dx = pair_rnd(be, nx, 1e30f);
	struct pair scratch = pair_new(be, NULL, s.t * s.t);
	char what[64];

	printf(" attention n %zu t %zu heads %zu dim %zu\n", s.n, s.t, s.heads,
	       s.dim);
	for (int i = 0; i < 2; i++) {
		ASSERT_OK(gp_attention_forward(be[i], x.b[i], y.b[i], p.b[i],
					       &s));
		ASSERT_OK(gp_attention_backward(be[i], x.b[i], p.b[i], dy.b[i],
						dx.b[i], scratch.b[i], &s));
	}
	snprintf(what, sizeof(what), "attention y");
	agree(&y, 1e-5, what);
	agree(&p, 1e-5, "attention probs");
	agree(&dx, 1e-4, "attention dx");
	pair_free(&x);
	pair_free(&y);
	pair_free(&p);
	pair_free(&dy);
	pair_free(&dx);
	pair_free(&scratch);
}

/* Every parameter tensor of slot agrees between the two models. */
static void models_agree(struct gp_model *m[2], enum gp_model_slot slot,
			 double rel, const char *what)
{
	for (size_t t = 0; t < gp_model_tensor_count(m[0]); t++) {
		struct gp_tensor_info ti;
		size_t n;
		float *a, *b;
		double maxabs = 0, maxdiff = 0;

		ASSERT_OK(gp_model_tensor_info(m[0], t, &ti));
		n = ti.rows * ti.cols;
		a = malloc(n * sizeof(*a));
		b = malloc(n * sizeof(*b));
		ASSERT_NOT_NULL(a);
		ASSERT_NOT_NULL(b);
		ASSERT_OK(gp_model_read(m[0], slot, t, 0, ti.rows, a));
		ASSERT_OK(gp_model_read(m[1], slot, t, 0, ti.rows, b));
		for (size_t i = 0; i < n; i++) {
			ASSERT(isfinite(a[i]));
			if (fabs(b[i]) > maxabs)
				maxabs = fabs(b[i]);
			if (fabs((double)a[i] - b[i]) > maxdiff)
				maxdiff = fabs((double)a[i] - b[i]);
		}
		if (!(maxdiff <= rel * maxabs) || maxabs == 0)
			GP_TEST_FAIL("%s %s: max diff %.3g of max %.3g", what,
				     ti.name, maxdiff, maxabs);
		free(a);
		free(b);
	}
}

/* The model on both backends from the same parameters, batch and dropout
 * seed: the same loss, gradients, and fused step. x holds n samples;
 * labels n * labels-per-sample; targets (may be NULL) n * outputs. */
static void check_model(struct gp_backend *be[2], const char *text,
			size_t n, const float *x, const int32_t *labels,
			const float *targets, uint64_t seed)
{
	struct gp_model_spec spec;
	struct gp_model *m[2];
	struct gp_model_stats st[2];

	ASSERT_OK(gp_model_spec_parse(text, &spec, NULL, 0));
	for (int i = 0; i < 2; i++) {
		ASSERT_OK(gp_model_create(be[i], &spec, n, &m[i]));
		ASSERT_OK(gp_model_init_params(m[i], seed));
		gp_model_set_seed(m[i], seed + 1);
		ASSERT_OK(gp_model_set_batch(m[i], x, labels, n));
		if (targets)
			ASSERT_OK(gp_model_set_targets(m[i], targets, n));
		ASSERT_OK(gp_model_compute_grads(m[i], n, &st[i]));
	}
	ASSERT_NEAR(st[0].loss, st[1].loss, 1e-5 * (1 + st[1].loss));
	models_agree(m, GP_MODEL_GRAD, 2e-4, "grad");
	for (int i = 0; i < 2; i++)
		ASSERT_OK(gp_model_train_step(m[i], n, 0.05f, 0.9f, &st[i]));
	models_agree(m, GP_MODEL_PARAM, 1e-5, "step param");
	models_agree(m, GP_MODEL_MOMENTUM, 2e-4, "step momentum");
	/* An evaluation (dropout off) agrees too. */
	for (int i = 0; i < 2; i++)
		ASSERT_OK(gp_model_evaluate(m[i], x, labels, n, &st[i]));
	ASSERT_NEAR(st[0].loss, st[1].loss, 1e-5 * (1 + st[1].loss));
	printf(" model: loss %.6f on both; gradients and step agree\n",
	       st[1].loss);
	gp_model_destroy(m[0]);
	gp_model_destroy(m[1]);
}

#define RESMLP "gradpool-model 1\n" \
	"input shape=12\n" \
	"dense d1 out=16\n" \
	"layernorm ln1\n" \
	"gelu a1\n" \
	"dropout drop p=0.25\n" \
	"dense d2 out=16\n" \
	"add res in=ln1,d2\n" \
	"dense out out=5\n" \
	"mse loss\n"

#define GNCNN "gradpool-model 1\n" \
	"input shape=2x8x6\n" \
	"conv2d c1 out=6 kernel=3 padding=1\n" \
	"groupnorm gn1 groups=3\n" \
	"gelu a1\n" \
	"avgpool2d p1 kernel=2\n" \
	"groupnorm gn2 groups=2 eps=1e-3\n" \
	"flatten f\n" \
	"dense out out=4\n" \
	"softmax_xent loss\n"

#define GPT "gradpool-model 1\n" \
	"input shape=6\n" \
	"embedding tok vocab=11 dim=8\n" \
	"posembed pos\n" \
	"layernorm ln1\n" \
	"linear qkv out=24\n" \
	"attention attn heads=2\n" \
	"linear proj out=8\n" \
	"add res1 in=pos,proj\n" \
	"layernorm ln2\n" \
	"linear fc out=16\n" \
	"gelu act\n" \
	"dropout drop p=0.1\n" \
	"linear fc2 out=8\n" \
	"add res2 in=res1,fc2\n" \
	"layernorm lnf\n" \
	"linear head out=11\n" \
	"seq_xent loss\n"

static void check_models(struct gp_backend *be[2], uint64_t seed)
{
	enum { N = 6, T = 6 };
	float *x = rnd_vec(N * 12, 1), *tgt = rnd_vec(N * 5, 1);
	int32_t labels[N * T];
	float tok[N * T];

	for (int i = 0; i < N; i++)
		labels[i] = (int32_t)(rng_next() % 5);
	printf(" residual MLP with dropout under MSE\n");
	check_model(be, RESMLP, N, x, labels, tgt, seed);
	for (int i = 0; i < N * T; i++) {
		tok[i] = (float)(rng_next() % 11);
		labels[i] = (int32_t)(rng_next() % 11);
	}
	{
		float *img = rnd_vec(N * 96, 1);

		for (int i = 0; i < N; i++)
			labels[i] = (int32_t)(rng_next() % 4);
		printf(" CNN with group norm\n");
		check_model(be, GNCNN, N, img, labels, NULL, seed);
		free(img);
	}
	printf(" GPT of two blocks\n");
	check_model(be, GPT, N, tok, labels, NULL, seed);
	free(x);
	free(tgt);
}

int main(void)
{
	const char *seed_env = getenv("GP_TEST_SEED");
	const char *dev_env = getenv("GP_TEST_OPENCL_DEVICE");
	uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0)
				 : (uint64_t)time(NULL);
	int dev = dev_env ? atoi(dev_env) : 0;
	struct gp_device_info *list = NULL;
	struct gp_backend *be[2] = { NULL, NULL };
	size_t ndev = 0;
	int r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("seed %llu (GP_TEST_SEED=%llu replays it)\n",
	       (unsigned long long)seed, (unsigned long long)seed);
	rng_state = seed;
	ASSERT_OK(gp_backend_list_devices(&list, &ndev));
	free(list);
	if (ndev < 2) {
		printf("no OpenCL device: skipped\n");
		return GP_TEST_SKIP;
	}
	r = gp_backend_create_opencl(dev, &be[0]);
	if (r < 0)
		GP_TEST_FAIL("gp_backend_create_opencl(%d): %d: %s", dev, r,
			     gp_backend_create_error());
	ASSERT_OK(gp_backend_create_cpu(0, &be[1]));

	check_elementwise(be);
	check_layernorm(be, 29, 24);
	check_layernorm(be, 3, 257);
	check_groupnorm(be, (struct gp_groupnorm_shape){ .n = 3, .c = 6,
			.hw = 20, .groups = 3 });
	check_groupnorm(be, (struct gp_groupnorm_shape){ .n = 2, .c = 4,
			.hw = 9, .groups = 1 });
	check_groupnorm(be, (struct gp_groupnorm_shape){ .n = 2, .c = 5,
			.hw = 7, .groups = 5 });
	check_mse(be);
	check_embedding(be);
	check_attention(be, (struct gp_attention_shape){ .n = 3, .t = 7,
			.heads = 2, .dim = 8 });
	check_attention(be, (struct gp_attention_shape){ .n = 2, .t = 1,
			.heads = 3, .dim = 6 });
	check_attention(be, (struct gp_attention_shape){ .n = 1, .t = 33,
			.heads = 1, .dim = 5 });
	check_models(be, rng_next());
	gp_backend_destroy(be[0]);
	gp_backend_destroy(be[1]);
	TEST_LEAK_CHECK();
	printf("ok\n");
	return 0;
}
