#include "sample.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "export.h"
#include "log.h"
#include "model.h"
#include "params.h"

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

static int parse_num(const char *what, const char *s, double lo, double hi,
		     double *ret)
{
	char *end;
	double v;

	if (!s)
		return 0;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi)) {
		gp_error("sample --%s: '%s' is not a number in %g..%g", what, s,
			 lo, hi);
		return -EINVAL;
	}
	*ret = v;
	return 0;
}

/* Draws a token from logits (vocab of them; scratch holds vocab floats
 * and vocab ints' worth of order): softmax over temperature among the
 * top_k likeliest (0: all). */
static uint32_t draw(const float *logits, uint32_t vocab, double temp,
		     uint32_t top_k, uint64_t *rng, double *p, uint32_t *order)
{
	double max = -INFINITY, sum = 0, u;
	uint32_t keep = top_k && top_k < vocab ? top_k : vocab;

	for (uint32_t i = 0; i < vocab; i++)
		order[i] = i;
	/* Partial selection sort: the keep likeliest first. */
	for (uint32_t i = 0; i < keep; i++) {
		uint32_t best = i;

		for (uint32_t j = i + 1; j < vocab; j++)
			if (logits[order[j]] > logits[order[best]])
				best = j;
		if (best != i) {
			uint32_t t = order[i];

			order[i] = order[best];
			order[best] = t;
		}
	}
	for (uint32_t i = 0; i < keep; i++)
		if (logits[order[i]] > max)
			max = logits[order[i]];
	for (uint32_t i = 0; i < keep; i++) {
		p[i] = exp((logits[order[i]] - max) / temp);
		sum += p[i];
	}
	u = (double)(splitmix64(rng) >> 11) * 0x1p-53 * sum;
	for (uint32_t i = 0; i < keep; i++) {
		if (u < p[i])
			return order[i];
		u -= p[i];
	}
	return order[keep - 1];
}

static void put_token(uint32_t id, uint32_t vocab)
{
	if (vocab <= 256)
		putchar((int)id);
	else
		printf("%" PRIu32 " ", id);
}

int gp_sample_command(const char *state_dir,
		      const struct gp_sample_request *req)
{
	struct gp_model_spec spec;
	struct gp_params *params = NULL;
	struct gp_backend *be = NULL;
	struct gp_model *m = NULL;
	double length = 200, temp = 0.8, top_k = 40, seed = 1, job = 0,
	       ck = 0;
	const char *prompt = req->prompt ? req->prompt : "\n";
	float *x = NULL, *logits = NULL;
	double *p = NULL;
	uint32_t *order = NULL, *ctx = NULL, t, vocab;
	size_t n_ctx = 0, plen = strlen(prompt);
	uint64_t rng;
	int64_t seq = 0;
	int r;

	if ((r = parse_num("length", req->length, 1, 100000, &length)) < 0 ||
	    (r = parse_num("temperature", req->temperature, 1e-3, 100,
			   &temp)) < 0 ||
	    (r = parse_num("top-k", req->top_k, 0, 65536, &top_k)) < 0 ||
	    (r = parse_num("seed", req->seed, 0, 9007199254740992.0,
			   &seed)) < 0 ||
	    (r = parse_num("job", req->job, 1, 9007199254740992.0, &job)) < 0 ||
	    (r = parse_num("checkpoint", req->checkpoint, 1,
			   9007199254740992.0, &ck)) < 0)
		return r;
	r = gp_export_load(state_dir, (int64_t)job, (int64_t)ck, &spec,
			   &params, &seq);
	if (r < 0)
		return r;
	if (gp_model_spec_labels(&spec) < 2) {
		gp_error("sample: the job's model is not a language model (no "
			 "seq_xent loss; docs/models.md)");
		r = -EINVAL;
		goto out;
	}
	t = spec.dims[0];
	vocab = spec.dims[spec.n_layers];
	if (vocab > 256 && plen) {
		gp_error("sample: --prompt is text, and the model's vocabulary "
			 "(%u) is not bytes", vocab);
		r = -EINVAL;
		goto out;
	}
	if ((r = gp_backend_create_cpu(1, &be)) < 0 ||
	    (r = gp_model_create(be, &spec, 1, &m)) < 0) {
		gp_error("sample: cannot build the model: %s",
			 be ? gp_backend_error(be) : strerror(-r));
		goto out;
	}
	for (size_t i = 0; i < gp_model_tensor_count(m); i++) {
		struct gp_tensor_info ti;
		struct gp_tensor_shape sh;
		size_t off;
		int k;

		gp_model_tensor_info(m, i, &ti);
		k = gp_params_find(params, ti.name);
		if (k < 0 || gp_params_tensor(params, (size_t)k, &sh, &off) < 0 ||
		    (size_t)sh.rows * sh.cols != ti.rows * ti.cols ||
		    (r = gp_model_write(m, GP_MODEL_PARAM, i, 0, ti.rows,
					gp_params_values(params) + off)) < 0) {
			gp_error("sample: checkpoint %" PRId64 " lacks %s", seq,
				 ti.name);
			r = -EBADMSG;
			goto out;
		}
	}
	x = calloc(t, sizeof(float));
	logits = malloc((size_t)t * vocab * sizeof(float));
	p = malloc(vocab * sizeof(double));
	order = malloc(vocab * sizeof(uint32_t));
	ctx = malloc((plen + (size_t)length + 1) * sizeof(uint32_t));
	if (!x || !logits || !p || !order || !ctx) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < plen; i++)
		ctx[n_ctx++] = (uint8_t)prompt[i];
	if (n_ctx == 0)
		ctx[n_ctx++] = '\n';
	fwrite(prompt, 1, plen, stdout);
	rng = (uint64_t)seed;
	for (size_t g = 0; g < (size_t)length; g++) {
		/* The last t tokens from position 0; a shorter context is
		 * padded after its end, which the causal mask hides. */
		size_t from = n_ctx > t ? n_ctx - t : 0, used = n_ctx - from;
		uint32_t id;

		memset(x, 0, t * sizeof(float));
		for (size_t i = 0; i < used; i++)
			x[i] = (float)ctx[from + i];
		if ((r = gp_model_logits(m, x, 1, logits)) < 0) {
			gp_error("sample: %s", gp_backend_error(be));
			goto out;
		}
		id = draw(logits + (used - 1) * vocab, vocab, temp,
			  (uint32_t)top_k, &rng, p, order);
		ctx[n_ctx++] = id;
		put_token(id, vocab);
	}
	putchar('\n');
	fflush(stdout);
	r = 0;
out:
	free(x);
	free(logits);
	free(p);
	free(order);
	free(ctx);
	gp_model_destroy(m);
	gp_backend_destroy(be);
	gp_params_destroy(params);
	return r;
}
