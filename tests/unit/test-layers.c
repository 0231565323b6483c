/* Layer graphs: the model description format (good and bad text, the
 * canonical form, files), and the gradient of every layer kind checked
 * against central finite differences of an independent double-precision
 * forward pass written here from the definitions (not from kernels/), on
 * small shapes; the fused step against compute + apply on a CNN; dropout's
 * masks replayed from the seed; and a tiny CNN whose loss falls on
 * Fashion-MNIST. The seed of the random values is printed; GP_TEST_SEED
 * replays a run. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "data.h"
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

/* Parameters of the model as doubles, tensor after tensor. */
struct ref {
	const struct gp_model_spec *spec;
	double *p;        /* every parameter */
	size_t off[128];  /* where tensor t starts in p */
	int wt[GP_MODEL_MAX_NODES]; /* first tensor of layer i, or -1 */
	uint64_t seed;    /* dropout */
};

static size_t lsize(const struct gp_model_layer *l)
{
	return (size_t)l->c * l->h * l->w;
}

static uint64_t fnv(const char *s)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * UINT64_C(0x100000001b3);
	return h;
}

/* Mean loss over n samples (x: n x in floats) of the graph with the
 * reference's parameters: each layer by its definition, in double. */
static double ref_loss(const struct ref *rf, const float *x,
		       const int32_t *labels, const float *targets, size_t n)
{
	const struct gp_model_spec *s = rf->spec;
	double *act[GP_MODEL_MAX_NODES] = { 0 };
	double loss = 0;
	size_t nn = s->n_nodes;

	for (size_t i = 0; i < nn; i++) {
		act[i] = calloc(n * lsize(&s->layers[i]) + 1, sizeof(double));
		ASSERT_NOT_NULL(act[i]);
	}
	for (size_t k = 0; k < n * s->dims[0]; k++)
		act[0][k] = x[k];
	for (size_t i = 1; i < nn; i++) {
		const struct gp_model_layer *l = &s->layers[i];
		const struct gp_model_layer *a = &s->layers[l->in[0]];
		const double *in = act[l->in[0]];
		double *out = act[i];
		size_t isz = lsize(a), osz = lsize(l);
		const double *W = rf->wt[i] >= 0 ? rf->p + rf->off[rf->wt[i]]
						  : NULL;
		const double *B = rf->wt[i] >= 0
					  ? rf->p + rf->off[rf->wt[i] + 1]
					  : NULL;

		for (size_t b = 0; b < n; b++) {
			const double *xi = in + b * isz;
			double *yo = out + b * osz;

			switch (l->type) {
			case GP_LAYER_INPUT:
				break;
			case GP_LAYER_DENSE:
				for (size_t o = 0; o < l->out; o++) {
					double v = B[o];

					for (size_t k = 0; k < isz; k++)
						v += W[o * isz + k] * xi[k];
					yo[o] = v;
				}
				break;
			case GP_LAYER_CONV2D:
				for (size_t o = 0; o < l->c; o++)
					for (size_t oy = 0; oy < l->h; oy++)
						for (size_t ox = 0; ox < l->w; ox++) {
							double v = B[o];

							for (size_t c = 0; c < a->c; c++)
								for (size_t ki = 0; ki < l->kernel; ki++)
									for (size_t kj = 0; kj < l->kernel; kj++) {
										long iy = (long)(oy * l->stride + ki) - (long)l->pad;
										long ix = (long)(ox * l->stride + kj) - (long)l->pad;

										if (iy < 0 || ix < 0 || iy >= (long)a->h || ix >= (long)a->w)
											continue;
										v += W[((o * a->c + c) * l->kernel + ki) * l->kernel + kj] *
										     xi[(c * a->h + (size_t)iy) * a->w + (size_t)ix];
									}
							yo[(o * l->h + oy) * l->w + ox] = v;
						}
				break;
			case GP_LAYER_MAXPOOL2D:
			case GP_LAYER_AVGPOOL2D:
				for (size_t c = 0; c < l->c; c++)
					for (size_t oy = 0; oy < l->h; oy++)
						for (size_t ox = 0; ox < l->w; ox++) {
							double best = -INFINITY, sum = 0;

							for (size_t ki = 0; ki < l->kernel; ki++)
								for (size_t kj = 0; kj < l->kernel; kj++) {
									double v = xi[(c * a->h + oy * l->stride + ki) * a->w + ox * l->stride + kj];

									best = v > best ? v : best;
									sum += v;
								}
							yo[(c * l->h + oy) * l->w + ox] =
								l->type == GP_LAYER_MAXPOOL2D
									? best
									: sum / (double)(l->kernel * l->kernel);
						}
				break;
			case GP_LAYER_FLATTEN:
				memcpy(yo, xi, osz * sizeof(double));
				break;
			case GP_LAYER_RELU:
				for (size_t k = 0; k < osz; k++)
					yo[k] = xi[k] > 0 ? xi[k] : 0;
				break;
			case GP_LAYER_GELU:
				for (size_t k = 0; k < osz; k++)
					yo[k] = 0.5 * xi[k] * (1 + erf(xi[k] / sqrt(2.0)));
				break;
			case GP_LAYER_DROPOUT: {
				/* The mask's definition (docs/models.md): one
				 * splitmix64 stream per layer from seed ^
				 * FNV-1a(name), a draw per element of the
				 * batch in order. */
				uint64_t st = rf->seed ^ fnv(l->name);

				for (size_t k = 0; k < b * osz; k++)
					splitmix(&st);
				for (size_t k = 0; k < osz; k++) {
					double u = (double)(splitmix(&st) >> 40) * 0x1p-24;

					yo[k] = u < l->p ? 0 : xi[k] / (1.0 - l->p);
				}
				break;
			}
			case GP_LAYER_LAYERNORM:
				for (size_t r = 0; r < (size_t)l->c * l->h; r++) {
					const double *row = xi + r * l->w;
					double mean = 0, var = 0;

					for (size_t k = 0; k < l->w; k++)
						mean += row[k];
					mean /= l->w;
					for (size_t k = 0; k < l->w; k++)
						var += (row[k] - mean) * (row[k] - mean);
					var /= l->w;
					for (size_t k = 0; k < l->w; k++)
						yo[r * l->w + k] = (row[k] - mean) / sqrt(var + l->eps) * W[k] + B[k];
				}
				break;
			case GP_LAYER_GROUPNORM: {
				/* nn.GroupNorm: statistics over each group's
				 * channels and positions, then a weight and
				 * bias per channel. */
				size_t cpg = l->c / l->groups, hw = (size_t)l->h * l->w;
				size_t len = cpg * hw;

				for (size_t g = 0; g < l->groups; g++) {
					const double *row = xi + g * len;
					double mean = 0, var = 0;

					for (size_t k = 0; k < len; k++)
						mean += row[k];
					mean /= (double)len;
					for (size_t k = 0; k < len; k++)
						var += (row[k] - mean) * (row[k] - mean);
					var /= (double)len;
					for (size_t k = 0; k < len; k++) {
						size_t ch = g * cpg + k / hw;

						yo[g * len + k] = (row[k] - mean) / sqrt(var + l->eps) * W[ch] + B[ch];
					}
				}
				break;
			}
			case GP_LAYER_ADD: {
				const double *x2 = act[l->in[1]] + b * osz;

				for (size_t k = 0; k < osz; k++)
					yo[k] = xi[k] + x2[k];
				break;
			}
			case GP_LAYER_SOFTMAX_XENT: {
				double mx = xi[0], sum = 0;

				for (size_t k = 1; k < isz; k++)
					mx = xi[k] > mx ? xi[k] : mx;
				for (size_t k = 0; k < isz; k++)
					sum += exp(xi[k] - mx);
				loss += log(sum) + mx - xi[labels[b]];
				break;
			}
			case GP_LAYER_MSE:
				for (size_t k = 0; k < isz; k++) {
					double d = xi[k] - targets[b * isz + k];

					loss += d * d / (double)isz;
				}
				break;
			default:
				/* The language model's layers: checked in
				 * test-transformer.c. */
				GP_TEST_FAIL("no reference for layer type %d",
					     (int)l->type);
			}
		}
	}
	for (size_t i = 0; i < nn; i++)
		free(act[i]);
	return loss / (double)n;
}

/* ---- gradient checks --------------------------------------------------- */

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

/* Random parameters (biases and norm weights too, so that no layer sits
 * at a special point), a random batch, then every parameter's analytic
 * gradient against central differences of ref_loss(). */
static void gradcheck(struct gp_backend *be, const char *text, size_t n,
		      uint64_t seed)
{
	struct gp_model_spec spec;
	struct gp_model *m = make(be, text, n, &spec);
	struct ref rf = { .spec = &spec, .seed = seed };
	size_t np = gp_model_param_count(m), nt = gp_model_tensor_count(m);
	size_t in = spec.dims[0], outs = spec.dims[spec.n_layers];
	float *x = malloc(n * in * sizeof(float));
	float *t = malloc(n * outs * sizeof(float));
	float *g = malloc(np * sizeof(float)), *pf = malloc(np * sizeof(float));
	int32_t *labels = malloc(n * sizeof(int32_t));
	const struct gp_model_layer *loss = &spec.layers[spec.n_nodes - 1];
	struct gp_model_stats st;
	double worst = 0, h = 1e-4;
	size_t kinks = 0;

	rf.p = malloc(np * sizeof(double));
	ASSERT(x && t && g && pf && labels && rf.p);
	for (size_t i = 0; i < spec.n_nodes; i++)
		rf.wt[i] = -1;
	for (size_t i = 0, off = 0, tt = 0; i < nt; i++) {
		struct gp_tensor_info ti;

		ASSERT_OK(gp_model_tensor_info(m, i, &ti));
		rf.off[i] = off;
		for (size_t k = 0; k < ti.rows * ti.cols; k++)
			pf[off + k] = uni(-0.5f, 0.5f) +
				      (strstr(ti.name, "ln") && ti.cols == 1 &&
						       strstr(ti.name, "weight")
					       ? 1.0f
					       : 0.0f);
		ASSERT_OK(gp_model_write(m, GP_MODEL_PARAM, i, 0, ti.rows,
					 pf + off));
		off += ti.rows * ti.cols;
		(void)tt;
	}
	/* Map layers to their first tensor by name. */
	for (size_t i = 0; i < spec.n_nodes; i++) {
		char name[64];

		snprintf(name, sizeof(name), "%s.weight", spec.layers[i].name);
		rf.wt[i] = gp_model_tensor_find(m, name);
		if (rf.wt[i] < 0)
			rf.wt[i] = -1;
	}
	for (size_t i = 0; i < np; i++)
		rf.p[i] = pf[i];
	for (size_t i = 0; i < n * in; i++)
		x[i] = uni(-1.0f, 1.0f);
	for (size_t i = 0; i < n; i++)
		labels[i] = (int32_t)(splitmix(&rng) % outs);
	for (size_t i = 0; i < n * outs; i++)
		t[i] = uni(-1.0f, 1.0f);
	ASSERT_OK(gp_model_set_batch(m, x, labels, n));
	if (loss->type == GP_LAYER_MSE)
		ASSERT_OK(gp_model_set_targets(m, t, n));
	gp_model_set_seed(m, seed);
	ASSERT_OK(gp_model_compute_grads(m, n, &st));
	ASSERT_NEAR(st.loss, ref_loss(&rf, x, labels, t, n),
		    1e-5 * (1 + st.loss));
	for (size_t i = 0, off = 0; i < nt; i++) {
		struct gp_tensor_info ti;

		ASSERT_OK(gp_model_tensor_info(m, i, &ti));
		ASSERT_OK(gp_model_read(m, GP_MODEL_GRAD, i, 0, ti.rows,
					g + off));
		off += ti.rows * ti.cols;
	}
	for (size_t i = 0; i < np; i++) {
		double keep = rf.p[i], fd = 0, tol = 0, d = h;
		bool kink = false;

		/* A kink (a ReLU's or max pool's input crossing its switch)
		 * within d of this point makes the central difference the mean
		 * of two slopes. It is a property of the point, not of the
		 * code: at a step a hundred times shorter the kink is a hundred
		 * times less likely to lie inside, while a wrong gradient stays
		 * wrong at every step. So a mismatch is asked again at 1e-6
		 * and 1e-8 (the reference is in double) before it fails. */
		for (int k = 0; k < 3; k++, d /= 100) {
			double up, down;

			rf.p[i] = keep + d;
			up = ref_loss(&rf, x, labels, t, n);
			rf.p[i] = keep - d;
			down = ref_loss(&rf, x, labels, t, n);
			rf.p[i] = keep;
			fd = (up - down) / (2 * d);
			tol = 1e-4 + 2e-3 * fabs(fd);
			if (fabs(g[i] - fd) <= tol)
				break;
			kink = true;
		}
		if (fabs(g[i] - fd) > tol)
			GP_TEST_FAIL("%s: parameter %zu: analytic %.8g, fd %.8g "
				     "at steps 1e-4, 1e-6 and 1e-8",
				     text, i, (double)g[i], fd);
		if (fabs(g[i] - fd) > worst)
			worst = fabs(g[i] - fd);
		kinks += kink;
	}
	printf("gradcheck \"%s\", batch %zu: %zu parameters, worst |analytic "
	       "- fd| %.3g, %zu near a kink (shorter step)\n",
	       text, n, np, worst, kinks);
	free(x);
	free(t);
	free(g);
	free(pf);
	free(labels);
	free(rf.p);
	gp_model_destroy(m);
}

#define HDR "gradpool-model 1\n"

static void test_gradients(struct gp_backend *be)
{
	/* conv2d with padding, flatten, dense */
	gradcheck(be,
		  HDR "input shape=2x5x5\n"
		      "conv2d c1 out=3 kernel=3 padding=1\n"
		      "flatten f\ndense fc out=3\nsoftmax_xent loss\n",
		  3, 1);
	/* conv2d + ReLU in place + max pooling */
	gradcheck(be,
		  HDR "input shape=1x6x6\n"
		      "conv2d c1 out=2 kernel=3\nrelu r\n"
		      "maxpool2d p kernel=2\nflatten f\n"
		      "dense fc out=3\nsoftmax_xent loss\n",
		  4, 2);
	/* strided conv2d, overlapping average pooling, a 1 x 1 conv2d */
	gradcheck(be,
		  HDR "input shape=2x7x7\n"
		      "conv2d c1 out=3 kernel=3 stride=2 padding=1\n"
		      "avgpool2d p kernel=2 stride=1\n"
		      "conv2d c2 out=2 kernel=1\n"
		      "flatten f\ndense fc out=3\nsoftmax_xent loss\n",
		  3, 3);
	/* GELU, layernorm, a residual add whose trunk has two consumers */
	gradcheck(be,
		  HDR "input shape=6\ndense fc1 out=5\ngelu g\nlayernorm ln\n"
		      "dense fc2 out=5\nadd res in=ln,fc2\nrelu r\n"
		      "dense fc3 out=3\nsoftmax_xent loss\n",
		  4, 4);
	/* 2 x 2 average pooling; layernorm over the last axis of a
	 * C x H x W activation */
	gradcheck(be,
		  HDR "input shape=1x6x6\nconv2d c1 out=2 kernel=3 padding=1\n"
		      "avgpool2d p kernel=2\n"
		      "layernorm ln\nflatten f\ndense fc out=3\n"
		      "softmax_xent loss\n",
		  3, 5);
	/* group norm of two groups of two channels after a conv2d, and
	 * of one group (every channel together) after pooling */
	gradcheck(be,
		  HDR "input shape=2x5x4\nconv2d c1 out=4 kernel=3 padding=1\n"
		      "groupnorm gn groups=2\nrelu r\n"
		      "avgpool2d p kernel=2\ngroupnorm gn2 groups=1 eps=1e-3\n"
		      "flatten f\ndense fc out=3\nsoftmax_xent loss\n",
		  3, 9);
	/* dropout, replayed from the seed by the reference */
	gradcheck(be,
		  HDR "input shape=6\ndense fc1 out=8\ndropout d p=0.5\n"
		      "dense fc2 out=3\nsoftmax_xent loss\n",
		  5, 6);
	/* mean squared error; a ReLU straight on the input (not in place) */
	gradcheck(be,
		  HDR "input shape=5\nrelu r0\ndense fc1 out=4\nrelu r\n"
		      "dense fc2 out=3\nmse loss\n",
		  4, 7);
	/* the shorthand through the same path */
	gradcheck(be, "6-5-3", 5, 8);
}

/* ---- the format -------------------------------------------------------- */

static void test_format(void)
{
	static const char *const bad[] = {
		"gradpool-model 2\ninput shape=4\ndense a out=2\nmse l\n",
		"gradpool-model 1\n",
		"gradpool-model 1\ndense a out=2\n",
		"gradpool-model 1\ninput shape=4\ndense a\nmse l\n",
		"gradpool-model 1\ninput shape=4\ndense a out=2\n",
		"gradpool-model 1\ninput shape=4\ndense a out=2\nmse l\nrelu r\n",
		"gradpool-model 1\ninput shape=4\nfoo a\nmse l\n",
		"gradpool-model 1\ninput shape=4\ndense a out=2\ndense a out=2\n"
		"mse l\n",
		"gradpool-model 1\ninput shape=4\ndense a out=2 in=b\nmse l\n",
		"gradpool-model 1\ninput shape=4\ndense a out=0\nmse l\n",
		"gradpool-model 1\ninput shape=4\ndense a out=2 kernel=3\nmse l\n",
		"gradpool-model 1\ninput shape=1x3x3\nconv2d c out=2 kernel=5\n"
		"flatten f\nmse l\n",
		"gradpool-model 1\ninput shape=4\ndense a out=2\ndense b out=3\n"
		"add s in=a,b\nmse l\n",
		"gradpool-model 1\ninput shape=4\ndense a out=2\ndense b out=2 "
		"in=input\nmse l\n",
		"gradpool-model 1\ninput shape=4\nrelu r\nmse l\n",
		"gradpool-model 1\ninput shape=4x4\ndense a out=2\nmse l\n",
		"gradpool-model 1\ninput shape=4\ndropout d p=1\ndense a out=2\n"
		"mse l\n",
		"gradpool-model 1\ninput shape=4\ndense 1a out=2\nmse l\n",
		"gradpool-model 1\ninput shape=4\ndense a out=1\nsoftmax_xent l\n",
		/* group norm: groups missing, not dividing the channels,
		 * on a flat value, eps out of range */
		"gradpool-model 1\ninput shape=4x2x2\ngroupnorm g\nflatten f\n"
		"dense a out=2\nmse l\n",
		"gradpool-model 1\ninput shape=4x2x2\ngroupnorm g groups=3\n"
		"flatten f\ndense a out=2\nmse l\n",
		"gradpool-model 1\ninput shape=4\ndense a out=4\ngroupnorm g "
		"groups=2\nmse l\n",
		"gradpool-model 1\ninput shape=4x2x2\ngroupnorm g groups=2 "
		"eps=0\nflatten f\ndense a out=2\nmse l\n",
	};
	const char *good =
		"# a small CNN\n"
		"gradpool-model 1\n"
		"input shape=1x28x28\n"
		"conv2d conv1 out=8 kernel=3 padding=1   # 8 x 28 x 28\n"
		"relu relu1\n"
		"maxpool2d pool1 kernel=2\n"
		"conv2d conv2 out=16 kernel=3 stride=1 padding=1\n"
		"relu relu2\n"
		"avgpool2d pool2 kernel=2\n"
		"flatten flat\n"
		"dropout drop p=0.25\n"
		"dense fc1 out=32\n"
		"gelu act\n"
		"layernorm ln\n"
		"dense fc2 out=32\n"
		"add res in=ln,fc2\n"
		"dense fc3 out=10\n"
		"softmax_xent loss\n";
	struct gp_model_spec spec, again;
	char err[256], buf[2048], path[] = "/tmp/test-layers-XXXXXX";
	int fd, len;

	ASSERT_OK(gp_model_spec_parse(good, &spec, err, sizeof(err)));
	ASSERT_UINT_EQ(spec.version, 1);
	ASSERT_UINT_EQ(spec.n_nodes, 16);
	ASSERT_UINT_EQ(spec.n_layers, 1);
	ASSERT_EQ(spec.dims[0], 784);
	ASSERT_EQ(spec.dims[1], 10);
	ASSERT_EQ(spec.layers[3].c, 8);
	ASSERT_EQ(spec.layers[3].h, 14);
	ASSERT_EQ(spec.layers[4].stride, 1);
	ASSERT_EQ(spec.layers[6].w, 7);
	ASSERT_EQ(spec.layers[7].w, 16 * 7 * 7);
	ASSERT_EQ(spec.layers[13].in[0], 11);
	ASSERT_EQ(spec.layers[13].in[1], 12);
	/* conv1 8 x (9 + 1), conv2 16 x (72 + 1), fc1 32 x (784 + 1),
	 * ln 2 x 32, fc2 32 x 33, fc3 10 x 33 */
	ASSERT_UINT_EQ(gp_model_spec_param_count(&spec),
		       80 + 1168 + 25120 + 64 + 1056 + 330);
	ASSERT_NEAR(gp_model_spec_flops(&spec),
		    2.0 * (8 * 784 * 9 + 16 * 196 * 72 + 32 * 784 +
			   32 * 32 + 10 * 32),
		    1e-6);
	/* The canonical one-line form parses back to the same layers. */
	len = gp_model_spec_format(&spec, buf, sizeof(buf));
	ASSERT_GT(len, 0);
	printf("canonical: %s\n", buf);
	ASSERT(strchr(buf, '\n') == NULL);
	ASSERT_OK(gp_model_spec_parse(buf, &again, err, sizeof(err)));
	ASSERT_UINT_EQ(again.n_nodes, spec.n_nodes);
	ASSERT_MEM_EQ(again.layers, spec.layers,
		      spec.n_nodes * sizeof(spec.layers[0]));
	ASSERT_EQ(gp_model_spec_format(&spec, buf, 40), -ENOSPC);
	/* From a file. */
	fd = mkstemp(path);
	ASSERT_GE(fd, 0);
	ASSERT_EQ(write(fd, good, strlen(good)), (int64_t)strlen(good));
	close(fd);
	ASSERT_OK(gp_model_spec_load(path, &again, err, sizeof(err)));
	ASSERT_UINT_EQ(again.n_nodes, 16);
	unlink(path);
	ASSERT_EQ(gp_model_spec_load(path, &again, err, sizeof(err)),
		  -ENOENT);
	ASSERT(strstr(err, path) != NULL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		memset(&again, 0x55, sizeof(again));
		ASSERT_EQ(gp_model_spec_parse(bad[i], &again, err, sizeof(err)),
			  -EINVAL);
		printf("bad %zu: %s\n", i, err);
		ASSERT(strstr(err, "model description") != NULL);
		ASSERT_EQ(again.n_layers, (size_t)0x5555555555555555ull);
	}
	/* Group norm: its shape, parameters and canonical form. */
	ASSERT_OK(gp_model_spec_parse(HDR "input shape=1x6x6\n"
				      "conv2d c out=6 kernel=3\n"
				      "groupnorm gn groups=3 eps=1e-3\n"
				      "flatten f\ndense d out=2\nmse l\n",
				      &spec, err, sizeof(err)));
	ASSERT_EQ(spec.layers[2].groups, 3);
	ASSERT_EQ(spec.layers[2].c, 6);
	ASSERT_EQ(spec.layers[2].h, 4);
	ASSERT_UINT_EQ(gp_model_spec_param_count(&spec),
		       6 * 10 + 2 * 6 + 2 * 97);
	len = gp_model_spec_format(&spec, buf, sizeof(buf));
	ASSERT_GT(len, 0);
	ASSERT(strstr(buf, "groupnorm gn groups=3 eps=0.001") != NULL);
	ASSERT_OK(gp_model_spec_parse(buf, &again, err, sizeof(err)));
	ASSERT_MEM_EQ(again.layers, spec.layers,
		      spec.n_nodes * sizeof(spec.layers[0]));
}

/* ---- steps ------------------------------------------------------------- */

static const char *const cnn =
	HDR "input shape=1x28x28\n"
	    "conv2d conv1 out=4 kernel=3 padding=1\nrelu r1\n"
	    "maxpool2d p1 kernel=2\n"
	    "conv2d conv2 out=8 kernel=3 padding=1\nrelu r2\n"
	    "maxpool2d p2 kernel=2\nflatten f\n"
	    "dense fc1 out=32\nrelu r3\ndense fc2 out=10\nsoftmax_xent loss\n";

/* The fused step against compute + apply, and the tensor table. */
static void test_fused(struct gp_backend *be)
{
	struct gp_model_spec spec;
	struct gp_model *a = make(be, cnn, 8, &spec);
	struct gp_model *b = make(be, cnn, 8, &spec);
	float x[8 * 784], *pa, *pb;
	int32_t labels[8];
	struct gp_tensor_info ti;
	size_t np = gp_model_param_count(a);

	ASSERT_UINT_EQ(gp_model_tensor_count(a), 8);
	ASSERT_OK(gp_model_tensor_info(a, 0, &ti));
	ASSERT_STR_EQ(ti.name, "conv1.weight");
	ASSERT_UINT_EQ(ti.rows, 4);
	ASSERT_UINT_EQ(ti.cols, 9);
	ASSERT_UINT_EQ(ti.layer, 1);
	ASSERT_OK(gp_model_tensor_info(a, 7, &ti));
	ASSERT_STR_EQ(ti.name, "fc2.bias");
	ASSERT_UINT_EQ(ti.layer, 4);
	ASSERT_EQ(gp_model_tensor_find(a, "conv2.bias"), 3);
	for (size_t i = 0; i < 8 * 784; i++)
		x[i] = uni(0.0f, 1.0f);
	for (size_t i = 0; i < 8; i++)
		labels[i] = (int32_t)i;
	for (int step = 0; step < 3; step++) {
		ASSERT_OK(gp_model_set_batch(a, x, labels, 8));
		ASSERT_OK(gp_model_set_batch(b, x, labels, 8));
		ASSERT_OK(gp_model_train_step(a, 8, 0.05f, 0.9f, NULL));
		ASSERT_OK(gp_model_compute_grads(b, 8, NULL));
		ASSERT_OK(gp_model_apply_grads(b, 0.05f, 0.9f));
	}
	pa = malloc(np * sizeof(float));
	pb = malloc(np * sizeof(float));
	ASSERT(pa && pb);
	for (size_t i = 0, off = 0; i < 8; i++) {
		ASSERT_OK(gp_model_tensor_info(a, i, &ti));
		ASSERT_OK(gp_model_read(a, GP_MODEL_PARAM, i, 0, ti.rows,
					pa + off));
		ASSERT_OK(gp_model_read(b, GP_MODEL_PARAM, i, 0, ti.rows,
					pb + off));
		off += ti.rows * ti.cols;
	}
	for (size_t i = 0; i < np; i++)
		ASSERT_NEAR(pa[i], pb[i], 1e-5 + 1e-4 * fabs(pb[i]));
	free(pa);
	free(pb);
	gp_model_destroy(a);
	gp_model_destroy(b);
}

/* The same seed drops the same units, another seed others. */
static void test_dropout_seed(struct gp_backend *be)
{
	struct gp_model_spec spec;
	struct gp_model *m = make(be,
				  HDR "input shape=16\ndense fc1 out=32\n"
				      "dropout d p=0.5\ndense fc2 out=4\n"
				      "softmax_xent loss\n",
				  4, &spec);
	float x[64], g1[32 * 16], g2[32 * 16], g3[32 * 16];
	int32_t labels[4] = { 0, 1, 2, 3 };
	struct gp_model_stats e1, e2;

	for (size_t i = 0; i < 64; i++)
		x[i] = uni(0.0f, 1.0f);
	ASSERT_OK(gp_model_set_batch(m, x, labels, 4));
	gp_model_set_seed(m, 42);
	ASSERT_OK(gp_model_compute_grads(m, 4, NULL));
	ASSERT_OK(gp_model_read(m, GP_MODEL_GRAD, 0, 0, 32, g1));
	gp_model_set_seed(m, 43);
	ASSERT_OK(gp_model_compute_grads(m, 4, NULL));
	ASSERT_OK(gp_model_read(m, GP_MODEL_GRAD, 0, 0, 32, g2));
	gp_model_set_seed(m, 42);
	ASSERT_OK(gp_model_compute_grads(m, 4, NULL));
	ASSERT_OK(gp_model_read(m, GP_MODEL_GRAD, 0, 0, 32, g3));
	ASSERT_MEM_EQ(g1, g3, sizeof(g1));
	ASSERT(memcmp(g1, g2, sizeof(g1)) != 0);
	/* Evaluation never drops: twice the same. */
	ASSERT_OK(gp_model_evaluate(m, x, labels, 4, &e1));
	gp_model_set_seed(m, 7);
	ASSERT_OK(gp_model_evaluate(m, x, labels, 4, &e2));
	ASSERT(e1.loss == e2.loss);
	gp_model_destroy(m);
}

/* A tiny CNN on 1024 Fashion-MNIST images: the loss of the last pass is
 * well below the first's, and better than chance on 1000 test images. */
static void test_cnn_trains(struct gp_backend *be)
{
	struct gp_dataset *train, *test;
	struct gp_model_spec spec;
	struct gp_model *m;
	char err[GP_DATA_ERR_MAX];
	const size_t n = 1024, nb = 32, nt = 1000;
	float *x = malloc(n * GP_DATA_PIXELS * sizeof(float));
	float *tx = malloc(nt * GP_DATA_PIXELS * sizeof(float));
	int32_t *y = malloc(n * sizeof(int32_t)), *ty = malloc(nt * sizeof(int32_t));
	double first = 0, last = 0;
	struct gp_model_stats ev;

	ASSERT(x && tx && y && ty);
	if (gp_data_load_fashion_mnist(NULL, true, &train, err, sizeof(err)) < 0)
		GP_TEST_FAIL("%s", err);
	ASSERT_OK(gp_data_load_fashion_mnist(NULL, false, &test, err,
					     sizeof(err)));
	ASSERT_OK(gp_data_gather(train, NULL, n, x, y));
	ASSERT_OK(gp_data_gather(test, NULL, nt, tx, ty));
	m = make(be, cnn, nb, &spec);
	for (int epoch = 0; epoch < 3; epoch++) {
		double loss = 0;

		for (size_t off = 0; off < n; off += nb) {
			struct gp_model_stats st;

			ASSERT_OK(gp_model_set_batch(m, x + off * GP_DATA_PIXELS,
						     y + off, nb));
			ASSERT_OK(gp_model_train_step(m, nb, 0.05f, 0.9f, &st));
			ASSERT(isfinite(st.loss));
			loss += st.loss / (double)(n / nb);
		}
		printf("cnn epoch %d: train loss %.4f\n", epoch + 1, loss);
		if (epoch == 0)
			first = loss;
		last = loss;
	}
	ASSERT_OK(gp_model_evaluate(m, tx, ty, nt, &ev));
	printf("cnn: test accuracy %.1f %% on %zu images\n",
	       100.0 * (double)ev.correct / (double)nt, nt);
	ASSERT(last < 0.7 * first);
	ASSERT_GT(ev.correct, nt / 2);
	gp_model_destroy(m);
	gp_data_destroy(train);
	gp_data_destroy(test);
	free(x);
	free(tx);
	free(y);
	free(ty);
}

int main(void)
{
	struct gp_backend *be;
	const char *env = getenv("GP_TEST_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0)
			    : (uint64_t)time(NULL) ^ (uint64_t)clock();

	/* On stderr: a failure aborts, and stdout's buffer would be lost. */
	fprintf(stderr, "seed %llu (GP_TEST_SEED=%llu replays it)\n",
		(unsigned long long)seed, (unsigned long long)seed);
	rng = seed;
	ASSERT_OK(gp_backend_create_cpu(1, &be));
	for (int f = GP_FEATURE_CONV2D; f <= GP_FEATURE_MSE; f++)
		ASSERT(gp_backend_has(be, (enum gp_backend_feature)f));
	test_format();
	test_gradients(be);
	test_fused(be);
	test_dropout_seed(be);
	test_cnn_trains(be);
	gp_backend_destroy(be);
	printf("ok\n");
	return 0;
}
