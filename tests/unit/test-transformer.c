/* The language model's layers (embedding, posembed, linear, attention,
 * seq_xent) on the CPU backend: the description format, the gradient of
 * every parameter against central finite differences of an independent
 * double-precision forward pass written here from the definitions (not
 * from kernels/), the fused step against compute + apply, bad token ids,
 * the causal mask (a later token never changes an earlier position's
 * loss), and a tiny GPT whose loss falls on a repeating text. The seed of
 * the random values is printed; GP_TEST_SEED replays a run. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "model.h"
#include "test.h"

static uint64_t rng;

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

static float uni(float lo, float hi)
{
	return lo + (hi - lo) * (float)((double)(splitmix(&rng) >> 40) * 0x1p-24);
}

/* ---- the double-precision reference ---------------------------------- */

struct ref {
	const struct gp_model_spec *spec;
	double *p;                   /* every parameter */
	size_t off[128];             /* where tensor t starts in p */
	int wt[GP_MODEL_MAX_NODES];  /* layer i's weight tensor, or -1 */
	int bt[GP_MODEL_MAX_NODES];  /* layer i's bias tensor, or -1 */
};

static size_t lsize(const struct gp_model_layer *l)
{
	return (size_t)l->c * l->h * l->w;
}

/* One sample (x: t token ids) through the graph; returns the sum of its
 * positions' cross-entropies (or the loss of a softmax_xent head). */
static double ref_sample(const struct ref *rf, const float *x,
			 const int32_t *labels)
{
	const struct gp_model_spec *s = rf->spec;
	double *act[GP_MODEL_MAX_NODES] = { 0 };
	double loss = 0;

	for (size_t i = 0; i < s->n_nodes; i++) {
		act[i] = calloc(lsize(&s->layers[i]) + 1, sizeof(double));
		ASSERT_NOT_NULL(act[i]);
	}
	for (size_t k = 0; k < s->dims[0]; k++)
		act[0][k] = x[k];
	for (size_t i = 1; i < s->n_nodes; i++) {
		const struct gp_model_layer *l = &s->layers[i];
		const struct gp_model_layer *a = &s->layers[l->in[0]];
		const double *in = act[l->in[0]];
		double *out = act[i];
		const double *W = rf->wt[i] >= 0 ? rf->p + rf->off[rf->wt[i]]
						 : NULL;
		const double *B = rf->bt[i] >= 0 ? rf->p + rf->off[rf->bt[i]]
						 : NULL;
		size_t rows = (size_t)a->c * a->h, w = a->w;

		switch (l->type) {
		case GP_LAYER_EMBEDDING:
			for (size_t t = 0; t < a->w; t++)
				for (size_t c = 0; c < l->out; c++)
					out[t * l->out + c] =
						W[(size_t)in[t] * l->out + c];
			break;
		case GP_LAYER_POSEMBED:
			for (size_t k = 0; k < lsize(l); k++)
				out[k] = in[k] + W[k];
			break;
		case GP_LAYER_LINEAR:
		case GP_LAYER_DENSE:
			if (l->type == GP_LAYER_DENSE) {
				rows = 1;
				w = lsize(a);
			}
			for (size_t r = 0; r < rows; r++)
				for (size_t o = 0; o < l->out; o++) {
					double v = B[o];

					for (size_t c = 0; c < w; c++)
						v += W[o * w + c] * in[r * w + c];
					out[r * l->out + o] = v;
				}
			break;
		case GP_LAYER_LAYERNORM:
			for (size_t r = 0; r < rows; r++) {
				double mean = 0, var = 0;

				for (size_t c = 0; c < w; c++)
					mean += in[r * w + c];
				mean /= (double)w;
				for (size_t c = 0; c < w; c++)
					var += (in[r * w + c] - mean) *
					       (in[r * w + c] - mean);
				var /= (double)w;
				for (size_t c = 0; c < w; c++)
					out[r * w + c] =
						(in[r * w + c] - mean) /
							sqrt(var + l->eps) *
							W[c] +
						B[c];
			}
			break;
		case GP_LAYER_ATTENTION: {
			size_t t = l->h, d = l->w, dh = d / l->heads;
			double *sc = calloc(t, sizeof(double));

			ASSERT_NOT_NULL(sc);
			for (size_t h = 0; h < l->heads; h++)
				for (size_t qi = 0; qi < t; qi++) {
					double max = -1e300, sum = 0;

					for (size_t kj = 0; kj <= qi; kj++) {
						double v = 0;

						for (size_t c = 0; c < dh; c++)
							v += in[qi * 3 * d +
								h * dh + c] *
							     in[kj * 3 * d + d +
								h * dh + c];
						sc[kj] = v / sqrt((double)dh);
						if (sc[kj] > max)
							max = sc[kj];
					}
					for (size_t kj = 0; kj <= qi; kj++) {
						sc[kj] = exp(sc[kj] - max);
						sum += sc[kj];
					}
					for (size_t c = 0; c < dh; c++) {
						double v = 0;

						for (size_t kj = 0; kj <= qi;
						     kj++)
							v += sc[kj] / sum *
							     in[kj * 3 * d +
								2 * d + h * dh +
								c];
						out[qi * d + h * dh + c] = v;
					}
				}
			free(sc);
			break;
		}
		case GP_LAYER_GELU:
			for (size_t k = 0; k < lsize(l); k++)
				out[k] = 0.5 * in[k] *
					 (1 + erf(in[k] / sqrt(2.0)));
			break;
		case GP_LAYER_RELU:
			for (size_t k = 0; k < lsize(l); k++)
				out[k] = in[k] > 0 ? in[k] : 0;
			break;
		case GP_LAYER_ADD:
			for (size_t k = 0; k < lsize(l); k++)
				out[k] = in[k] + act[l->in[1]][k];
			break;
		case GP_LAYER_SEQ_XENT:
		case GP_LAYER_SOFTMAX_XENT: {
			size_t npos = l->type == GP_LAYER_SEQ_XENT ? a->h : 1;
			size_t v = l->type == GP_LAYER_SEQ_XENT ? a->w
								: lsize(a);

			for (size_t t = 0; t < npos; t++) {
				const double *z = in + t * v;
				double max = z[0], sum = 0;

				for (size_t c = 1; c < v; c++)
					if (z[c] > max)
						max = z[c];
				for (size_t c = 0; c < v; c++)
					sum += exp(z[c] - max);
				loss += log(sum) + max - z[labels[t]];
			}
			break;
		}
		default:
			GP_TEST_FAIL("reference lacks layer type %d",
				     (int)l->type);
		}
	}
	for (size_t i = 0; i < s->n_nodes; i++)
		free(act[i]);
	return loss;
}

/* Mean loss over n samples and all their labels, as the model reports. */
static double ref_loss(const struct ref *rf, const float *x,
		       const int32_t *labels, size_t n)
{
	size_t nl = gp_model_spec_labels(rf->spec);
	double sum = 0;

	for (size_t i = 0; i < n; i++)
		sum += ref_sample(rf, x + i * rf->spec->dims[0],
				  labels + i * nl);
	return sum / (double)(n * nl);
}

/* ---- helpers ---------------------------------------------------------- */

static struct gp_model *make(struct gp_backend *be, const char *text,
			     size_t max_batch, struct gp_model_spec *spec)
{
	struct gp_model *m;
	char err[256] = "";
	int r = gp_model_spec_parse(text, spec, err, sizeof(err));

	if (r < 0)
		GP_TEST_FAIL("%s: %s", text, err);
	ASSERT_OK(gp_model_create(be, spec, max_batch, &m));
	ASSERT_OK(gp_model_init_params(m, 3));
	return m;
}

/* n random sequences of token ids below vocab, and their labels. */
static void random_tokens(const struct gp_model_spec *spec, size_t n,
			  float *x, int32_t *labels)
{
	uint32_t vocab = spec->dims[spec->n_layers];
	size_t nl = gp_model_spec_labels(spec);

	for (size_t i = 0; i < n * spec->dims[0]; i++)
		x[i] = (float)(splitmix(&rng) % spec->layers[1].vocab);
	for (size_t i = 0; i < n * nl; i++)
		labels[i] = (int32_t)(splitmix(&rng) % vocab);
}

/* Random parameters, a random batch, then every parameter's analytic
 * gradient against central differences of ref_loss(). */
static void gradcheck(struct gp_backend *be, const char *what,
		      const char *text, size_t n)
{
	struct gp_model_spec spec;
	struct gp_model *m = make(be, text, n, &spec);
	struct ref rf = { .spec = &spec };
	size_t np = gp_model_param_count(m), nt = gp_model_tensor_count(m);
	size_t nl = gp_model_spec_labels(&spec);
	float *x = malloc(n * spec.dims[0] * sizeof(float));
	float *g = malloc(np * sizeof(float)), *pf = malloc(np * sizeof(float));
	int32_t *labels = malloc(n * nl * sizeof(int32_t));
	struct gp_model_stats st;
	double worst = 0, h = 1e-4;

	rf.p = malloc(np * sizeof(double));
	ASSERT(x && g && pf && labels && rf.p);
	for (size_t i = 0, off = 0; i < nt; i++) {
		struct gp_tensor_info ti;

		ASSERT_OK(gp_model_tensor_info(m, i, &ti));
		rf.off[i] = off;
		for (size_t k = 0; k < ti.rows * ti.cols; k++)
			pf[off + k] = uni(-0.5f, 0.5f) +
				      (strncmp(ti.name, "ln", 2) == 0 &&
						       strstr(ti.name, "weight")
					       ? 1.0f
					       : 0.0f);
		ASSERT_OK(gp_model_write(m, GP_MODEL_PARAM, i, 0, ti.rows,
					 pf + off));
		off += ti.rows * ti.cols;
	}
	for (size_t i = 0; i < spec.n_nodes; i++) {
		char name[64];

		snprintf(name, sizeof(name), "%s.weight", spec.layers[i].name);
		rf.wt[i] = gp_model_tensor_find(m, name);
		snprintf(name, sizeof(name), "%s.bias", spec.layers[i].name);
		rf.bt[i] = gp_model_tensor_find(m, name);
		if (rf.wt[i] < 0)
			rf.wt[i] = -1;
		if (rf.bt[i] < 0)
			rf.bt[i] = -1;
	}
	for (size_t i = 0; i < np; i++)
		rf.p[i] = pf[i];
	random_tokens(&spec, n, x, labels);
	ASSERT_OK(gp_model_set_batch(m, x, labels, n));
	ASSERT_OK(gp_model_compute_grads(m, n, &st));
	ASSERT_EQ(st.labels, n * nl);
	ASSERT_NEAR(st.loss, ref_loss(&rf, x, labels, n),
		    1e-5 * (1 + st.loss));
	for (size_t i = 0, off = 0; i < nt; i++) {
		struct gp_tensor_info ti;

		ASSERT_OK(gp_model_tensor_info(m, i, &ti));
		ASSERT_OK(gp_model_read(m, GP_MODEL_GRAD, i, 0, ti.rows,
					g + off));
		off += ti.rows * ti.cols;
	}
	for (size_t i = 0; i < np; i++) {
		double keep = rf.p[i], up, down, fd;

		rf.p[i] = keep + h;
		up = ref_loss(&rf, x, labels, n);
		rf.p[i] = keep - h;
		down = ref_loss(&rf, x, labels, n);
		rf.p[i] = keep;
		fd = (up - down) / (2 * h);
		if (fabs(g[i] - fd) > worst)
			worst = fabs(g[i] - fd);
		if (fabs(g[i] - fd) > 1e-4 + 2e-3 * fabs(fd))
			GP_TEST_FAIL("%s: parameter %zu: analytic %.8g, fd "
				     "%.8g",
				     text, i, (double)g[i], fd);
	}
	printf("gradcheck %s, batch %zu: %zu parameters, worst |analytic - "
	       "fd| %.3g\n",
	       what, n, np, worst);
	free(x);
	free(g);
	free(pf);
	free(labels);
	free(rf.p);
	gp_model_destroy(m);
}

#define HDR "gradpool-model 1\n"

/* A GPT block: pre-norm attention and MLP, each with its residual. */
#define BLOCK(P, IN, D, H, F)                                                  \
	"layernorm " P "ln1 in=" IN "\n"                                       \
	"linear " P "qkv out=" #D "\n"                                         \
	"attention " P "attn heads=" #H "\n"                                   \
	"linear " P "proj out=" F "\n"                                         \
	"add " P "res1 in=" IN "," P "proj\n"                                   \
	"layernorm " P "ln2\n"                                                 \
	"linear " P "fc out=" #D "\n"                                          \
	"gelu " P "act\n"                                                      \
	"linear " P "fc2 out=" F "\n"                                          \
	"add " P "out in=" P "res1," P "fc2\n"

static const char *const tiny_gpt =
	HDR "input shape=5\n"
	"embedding tok vocab=7 dim=4\n"
	"posembed h0in\n"
	"layernorm h0ln1\n"
	"linear h0qkv out=12\n"
	"attention h0attn heads=2\n"
	"linear h0proj out=4\n"
	"add h0res1 in=h0in,h0proj\n"
	"layernorm h0ln2\n"
	"linear h0fc out=8\n"
	"gelu h0act\n"
	"linear h0fc2 out=4\n"
	"add h0out in=h0res1,h0fc2\n"
	"layernorm lnf\n"
	"linear head out=7\n"
	"seq_xent loss\n";

static void test_gradients(struct gp_backend *be)
{
	/* Each layer alone, then a whole block. */
	gradcheck(be, "embedding + linear",
		  HDR "input shape=3\nembedding tok vocab=5 dim=4\n"
		      "linear head out=5\nseq_xent loss\n",
		  2);
	gradcheck(be, "posembed",
		  HDR "input shape=4\nembedding tok vocab=6 dim=3\n"
		      "posembed pos\nlinear head out=6\nseq_xent loss\n",
		  3);
	gradcheck(be, "attention, 1 head",
		  HDR "input shape=4\nembedding tok vocab=5 dim=4\n"
		      "linear qkv out=12\nattention attn heads=1\n"
		      "linear head out=5\nseq_xent loss\n",
		  2);
	gradcheck(be, "attention, 3 heads",
		  HDR "input shape=6\nembedding tok vocab=5 dim=6\n"
		      "linear qkv out=18\nattention attn heads=3\n"
		      "linear head out=5\nseq_xent loss\n",
		  2);
	/* A classifier over a sequence: a flat dense head reads it. */
	gradcheck(be, "attention + flat dense head",
		  HDR "input shape=3\nembedding tok vocab=4 dim=2\n"
		      "linear qkv out=6\nattention attn heads=2\n"
		      "dense fc out=3\nsoftmax_xent loss\n",
		  3);
	gradcheck(be, "GPT block", tiny_gpt, 2);
}

static void test_format(void)
{
	struct gp_model_spec a, b;
	char text[4096], err[256];
	static const char *const bad[] = {
		HDR "input shape=2x3x4\nembedding e vocab=4 dim=2\n"
		    "linear h out=4\nseq_xent loss\n",
		HDR "input shape=3\nembedding e dim=2\nlinear h out=4\n"
		    "seq_xent loss\n",
		HDR "input shape=3\nembedding e vocab=1 dim=2\n"
		    "linear h out=4\nseq_xent loss\n",
		HDR "input shape=3\nembedding e vocab=4 dim=4\n"
		    "attention a heads=2\nlinear h out=4\nseq_xent loss\n",
		HDR "input shape=3\nembedding e vocab=4 dim=4\n"
		    "linear q out=12\nattention a heads=3\nlinear h out=4\n"
		    "seq_xent loss\n",
		HDR "input shape=3\nembedding e vocab=4 dim=4\n"
		    "linear q out=12\nattention a\nlinear h out=4\n"
		    "seq_xent loss\n",
		HDR "input shape=2x3x4\nconv2d c out=2 kernel=1\n"
		    "seq_xent loss\n",
	};

	ASSERT_OK(gp_model_spec_parse(tiny_gpt, &a, err, sizeof(err)));
	ASSERT_EQ(gp_model_spec_labels(&a), 5);
	ASSERT_EQ(a.dims[0], 5);
	ASSERT_EQ(a.dims[1], 7);
	/* tok 7x4, pos 5x4, two norms 2x2x4, qkv 12x5, proj 4x5, fc 8x5,
	 * fc2 4x9, lnf 2x4, head 7x5 */
	ASSERT_EQ(gp_model_spec_param_count(&a),
		  28 + 20 + 16 + 60 + 20 + 40 + 36 + 8 + 35);
	ASSERT(gp_model_spec_flops(&a) > 0);
	ASSERT(gp_model_spec_format(&a, text, sizeof(text)) > 0);
	ASSERT(strstr(text, "embedding tok vocab=7 dim=4"));
	ASSERT(strstr(text, "attention h0attn heads=2"));
	ASSERT_OK(gp_model_spec_parse(text, &b, err, sizeof(err)));
	ASSERT_MEM_EQ(&a, &b, sizeof(a));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		if (gp_model_spec_parse(bad[i], &b, err, sizeof(err)) !=
		    -EINVAL)
			GP_TEST_FAIL("bad description %zu parsed", i);
		printf("refused: %s\n", err);
		ASSERT(err[0]);
	}
}

/* The fused step (gradients accumulated into the momentum) against
 * compute + apply on the tiny GPT. */
static void test_fused(struct gp_backend *be)
{
	struct gp_model_spec spec;
	struct gp_model *a = make(be, tiny_gpt, 3, &spec);
	struct gp_model *b = make(be, tiny_gpt, 3, &spec);
	size_t nl = gp_model_spec_labels(&spec);
	float x[15];
	int32_t labels[15];

	for (int step = 0; step < 3; step++) {
		random_tokens(&spec, 3, x, labels);
		ASSERT_OK(gp_model_set_batch(a, x, labels, 3));
		ASSERT_OK(gp_model_set_batch(b, x, labels, 3));
		ASSERT_OK(gp_model_compute_grads(a, 3, NULL));
		ASSERT_OK(gp_model_apply_grads(a, 0.1f, 0.9f));
		ASSERT_OK(gp_model_train_step(b, 3, 0.1f, 0.9f, NULL));
	}
	(void)nl;
	for (size_t i = 0; i < gp_model_tensor_count(a); i++) {
		struct gp_tensor_info ti;
		float pa[64], pb[64];

		ASSERT_OK(gp_model_tensor_info(a, i, &ti));
		ASSERT(ti.rows * ti.cols <= 64);
		ASSERT_OK(gp_model_read(a, GP_MODEL_PARAM, i, 0, ti.rows, pa));
		ASSERT_OK(gp_model_read(b, GP_MODEL_PARAM, i, 0, ti.rows, pb));
		for (size_t k = 0; k < ti.rows * ti.cols; k++)
			ASSERT_NEAR(pa[k], pb[k], 1e-5);
	}
	gp_model_destroy(a);
	gp_model_destroy(b);
}

/* A token id outside the vocabulary, or not a whole number, is refused;
 * the causal mask keeps a later token from changing an earlier
 * position's logits. */
static void test_tokens_and_mask(struct gp_backend *be)
{
	struct gp_model_spec spec;
	struct gp_model *m = make(be,
				  HDR "input shape=4\n"
				      "embedding tok vocab=5 dim=4\n"
				      "posembed pos\n"
				      "linear qkv out=12\n"
				      "attention attn heads=2\n"
				      "linear head out=5\nseq_xent loss\n",
				  1, &spec);
	float x[4] = { 1, 2, 3, 4 };
	int32_t labels[4] = { 0, 0, 0, 0 }, one[4] = { 0, 0, 0, 0 };
	struct gp_model_stats st, st2;

	x[2] = 5;
	ASSERT_OK(gp_model_set_batch(m, x, labels, 1));
	ASSERT_EQ(gp_model_compute_grads(m, 1, &st), -EINVAL);
	x[2] = 1.5f;
	ASSERT_OK(gp_model_set_batch(m, x, labels, 1));
	ASSERT_EQ(gp_model_compute_grads(m, 1, &st), -EINVAL);
	x[2] = -1;
	ASSERT_OK(gp_model_set_batch(m, x, labels, 1));
	ASSERT_EQ(gp_model_compute_grads(m, 1, &st), -EINVAL);
	labels[3] = 5;
	x[2] = 3;
	ASSERT_OK(gp_model_set_batch(m, x, labels, 1));
	ASSERT_EQ(gp_model_compute_grads(m, 1, &st), -EINVAL);
	/* Two batches that differ in position 0's label only differ in
	 * position 0's loss (over 4). That difference must not change
	 * when tokens 1..3 change, as position 0 sees token 0 only. */
	one[0] = 2;
	ASSERT_OK(gp_model_set_batch(m, x, one, 1));
	ASSERT_OK(gp_model_compute_grads(m, 1, &st));
	labels[3] = 0;
	ASSERT_OK(gp_model_set_batch(m, x, labels, 1));
	ASSERT_OK(gp_model_compute_grads(m, 1, &st2));
	{
		double d1 = st.loss - st2.loss, d2;

		x[1] = 0;
		x[2] = 4;
		x[3] = 1;
		ASSERT_OK(gp_model_set_batch(m, x, one, 1));
		ASSERT_OK(gp_model_compute_grads(m, 1, &st));
		ASSERT_OK(gp_model_set_batch(m, x, labels, 1));
		ASSERT_OK(gp_model_compute_grads(m, 1, &st2));
		d2 = st.loss - st2.loss;
		ASSERT_NEAR(d1, d2, 1e-6);
		ASSERT(fabs(d1) > 1e-6);
	}
	gp_model_destroy(m);
}

/* A 2-block GPT learns a repeating text: its loss falls from about
 * ln(vocab) to well below. */
static void test_gpt_trains(struct gp_backend *be)
{
	static const char *const text =
		HDR "input shape=16\n"
		"embedding tok vocab=32 dim=32\n"
		"posembed pos\n"
		BLOCK("h0", "pos", 96, 4, "32")
		BLOCK("h1", "h0out", 96, 4, "32")
		"layernorm lnf\n"
		"linear head out=32\n"
		"seq_xent loss\n";
	struct gp_model_spec spec;
	struct gp_model *m = make(be, text, 8, &spec);
	const char *corpus = "the quick brown fox jumps over the lazy dog; ";
	size_t clen = strlen(corpus);
	float x[8 * 16];
	int32_t labels[8 * 16];
	struct gp_model_stats first = { 0 }, st = { 0 };

	for (int step = 0; step < 150; step++) {
		for (size_t i = 0; i < 8; i++) {
			size_t at = (size_t)(splitmix(&rng) % clen);

			for (size_t t = 0; t < 16; t++) {
				x[i * 16 + t] =
					(float)(corpus[(at + t) % clen] % 32);
				labels[i * 16 + t] =
					corpus[(at + t + 1) % clen] % 32;
			}
		}
		ASSERT_OK(gp_model_set_batch(m, x, labels, 8));
		ASSERT_OK(gp_model_train_step(m, 8, 0.05f, 0.9f, &st));
		if (step == 0)
			first = st;
	}
	printf("tiny GPT: loss %.3f -> %.3f\n", first.loss, st.loss);
	ASSERT(first.loss > 3.0);
	ASSERT(st.loss < 1.0);
	gp_model_destroy(m);
}

int main(void)
{
	struct gp_backend *be;
	const char *env = getenv("GP_TEST_SEED");

	rng = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
	printf("GP_TEST_SEED=%llu\n", (unsigned long long)rng);
	ASSERT_OK(gp_backend_create_cpu(1, &be));
	test_format();
	test_gradients(be);
	test_fused(be);
	test_tokens_and_mask(be);
	test_gpt_trains(be);
	gp_backend_destroy(be);
	printf("transformer: ok\n");
	return 0;
}
