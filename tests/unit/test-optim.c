/* The coordinator's AdamW (coordinator/optim.h) through the parameter
 * store: every step against a double-precision AdamW written here from
 * PyTorch's definition, with clipping, staleness weights, decoupled
 * weight decay and bias correction; groups refused; the state through a
 * checkpoint and back; bad state refused; an outer Nesterov around it,
 * and a delta of local AdamW steps leaving its state alone. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim.h"
#include "params.h"
#include "test.h"

#define N 37 /* two tensors: 5 x 5 and 12 x 1 */

struct ref {
	double w[N], m[N], v[N];
	unsigned t;
};

static void ref_step(struct ref *r, const float *g, double gscale, double lr,
		     const struct gp_optim_config *c)
{
	r->t++;
	for (size_t i = 0; i < N; i++) {
		double gi = gscale * g[i];

		r->w[i] *= 1 - lr * c->weight_decay;
		r->m[i] = c->beta1 * r->m[i] + (1 - c->beta1) * gi;
		r->v[i] = c->beta2 * r->v[i] + (1 - c->beta2) * gi * gi;
		r->w[i] -= lr * (r->m[i] / (1 - pow(c->beta1, r->t))) /
			   (sqrt(r->v[i] / (1 - pow(c->beta2, r->t))) + c->eps);
	}
}

static struct gp_params *store(float clip)
{
	struct gp_tensor_shape sh[2] = { { "a.weight", 5, 5 },
					 { "a.bias", 12, 1 } };
	struct gp_params_config pc = {
		.rows_per_shard = 2, .lr = 0.01f, .clip_norm = clip,
	};
	struct gp_params *p;

	ASSERT_OK(gp_params_create(&pc, sh, 2, &p));
	return p;
}

static void check_close(const struct gp_params *p, const struct ref *r)
{
	const float *w = gp_params_values(p);

	for (size_t i = 0; i < N; i++)
		ASSERT_NEAR(w[i], r->w[i], 2e-6 * (1 + fabs(r->w[i])));
}

static void random_grad(float *g, unsigned seed)
{
	for (size_t i = 0; i < N; i++)
		g[i] = (float)sin(seed * 7.1 + i * 1.3) * (float)(1 + i % 3);
}

static void test_steps(void)
{
	struct gp_optim_config c = { 0.9f, 0.95f, 1e-8f, 0.1f };
	struct gp_params *p = store(4.0f);
	struct gp_optim *o;
	struct ref r = { 0 };
	struct gp_params_apply_info info;
	float g[N], init[N];
	const float lrs[] = { 0.01f, 0.02f, 0.005f, 0.01f, 0.03f, 0.01f };
	const float weights[] = { 1, 1, 0.5f, 1, 0.25f, 1 };

	for (size_t i = 0; i < N; i++)
		r.w[i] = init[i] = (float)cos(i * 0.7);
	ASSERT_OK(gp_params_set_tensor(p, 0, init, 25));
	ASSERT_OK(gp_params_set_tensor(p, 1, init + 25, 12));
	ASSERT_OK(gp_optim_create(&c, N, &o));
	ASSERT_OK(gp_optim_attach(o, p));
	for (unsigned s = 0; s < 6; s++) {
		double sq = 0, gscale = 1;
		uint64_t before = gp_params_version(p);

		random_grad(g, s);
		for (size_t i = 0; i < N; i++)
			sq += (double)g[i] * g[i];
		if (sqrt(sq) > 4.0)
			gscale = 4.0 / sqrt(sq);
		ASSERT_OK(gp_params_set_lr(p, lrs[s]));
		ASSERT_OK(gp_params_apply_scaled(p, g, N, weights[s], &info));
		ASSERT_EQ(info.clipped, gscale < 1);
		ASSERT_EQ(info.shards_changed, gp_params_shard_count(p));
		ASSERT_EQ(gp_params_changed_since(p, before, NULL, 0),
			  gp_params_shard_count(p));
		/* The weight scales the rate, not the gradient. */
		ref_step(&r, g, gscale, (double)lrs[s] * weights[s], &c);
		check_close(p, &r);
	}
	ASSERT_EQ(gp_optim_steps(o), 6);
	ASSERT_EQ(gp_params_updates(p), 6);
	/* A NaN is refused with nothing changed, the step count too. */
	g[3] = NAN;
	ASSERT_EQ(gp_params_apply(p, g, N, NULL), GP_REASON_NONFINITE);
	ASSERT_EQ(gp_optim_steps(o), 6);
	check_close(p, &r);
	/* Groups of sums stand for SGD steps: refused. */
	{
		float lr1 = 0.01f;
		struct gp_params_sums sums = {
			.a = init, .b = init, .lrs = &lr1, .count = 1,
			.scale = 1,
		};

		ASSERT_EQ(gp_params_apply_sums(p, &sums, N, NULL), -EINVAL);
	}
	ASSERT_OK(gp_optim_attach(NULL, p));
	gp_params_destroy(p);
	gp_optim_destroy(o);
}

/* With an outer Nesterov (gp_params_set_outer) the AdamW step is its
 * inner step: w = w0 - lr_o (d + mu_o M), d the AdamW step's descent. A
 * delta of an agent's local AdamW steps (gp_params_apply_delta) goes
 * through the outer step too and leaves the coordinator's AdamW state
 * (moments, step count) as it was. */
static void test_outer(void)
{
	struct gp_optim_config c = { 0.9f, 0.95f, 1e-8f, 0.1f };
	struct gp_params *p = store(0);
	struct gp_optim *o;
	struct ref r = { 0 };
	float g[N], init[N], d[N];
	double mo[N] = { 0 };
	const double lr_o = 0.7, mu_o = 0.5;

	for (size_t i = 0; i < N; i++)
		r.w[i] = init[i] = (float)cos(i * 0.7);
	ASSERT_OK(gp_params_set_tensor(p, 0, init, 25));
	ASSERT_OK(gp_params_set_tensor(p, 1, init + 25, 12));
	ASSERT_OK(gp_optim_create(&c, N, &o));
	ASSERT_OK(gp_optim_attach(o, p));
	ASSERT_OK(gp_params_set_outer(p, (float)lr_o, (float)mu_o));
	for (unsigned s = 0; s < 3; s++) {
		double w0[N];

		random_grad(g, s);
		memcpy(w0, r.w, sizeof(w0));
		ref_step(&r, g, 1, 0.01, &c);
		for (size_t i = 0; i < N; i++) {
			double di = w0[i] - r.w[i];

			mo[i] = mu_o * mo[i] + di;
			r.w[i] = w0[i] - lr_o * (di + mu_o * mo[i]);
		}
		ASSERT_OK(gp_params_apply(p, g, N, NULL));
		check_close(p, &r);
	}
	ASSERT_EQ(gp_optim_steps(o), 3);
	/* A delta: the outer step's descent; AdamW's state untouched. */
	{
		struct gp_params_delta dl = {
			.d = d, .lr_sum = 0.02, .count = 2, .scale = 1,
		};
		float m0 = gp_optim_m(o)[5], v0 = gp_optim_v(o)[5];

		for (size_t i = 0; i < N; i++) {
			double w0 = r.w[i];

			d[i] = 0.001f * (float)(1 + i % 4);
			mo[i] = mu_o * mo[i] + d[i];
			r.w[i] = w0 - lr_o * (d[i] + mu_o * mo[i]);
		}
		ASSERT_OK(gp_params_apply_delta(p, &dl, N, NULL));
		check_close(p, &r);
		ASSERT_EQ(gp_optim_steps(o), 3);
		ASSERT(gp_optim_m(o)[5] == m0 && gp_optim_v(o)[5] == v0);
		ASSERT_EQ(gp_params_updates(p), 5);
	}
	ASSERT_OK(gp_optim_attach(NULL, p));
	gp_params_destroy(p);
	gp_optim_destroy(o);
}

static void test_checkpoint(void)
{
	struct gp_optim_config c = { 0.8f, 0.99f, 1e-6f, 0 };
	struct gp_params *p = store(0), *q = store(0);
	struct gp_optim *o, *o2 = NULL;
	uint8_t *blob;
	size_t len;
	float g[N];

	ASSERT_OK(gp_optim_create(&c, N, &o));
	ASSERT_OK(gp_optim_attach(o, p));
	for (unsigned s = 0; s < 3; s++) {
		random_grad(g, s);
		ASSERT_OK(gp_params_apply(p, g, N, NULL));
	}
	ASSERT_OK(gp_optim_save(o, &blob, &len));
	/* Another count, a damaged byte, a truncation: refused. */
	ASSERT_EQ(gp_optim_load(blob, len, N + 1, &o2), -EBADMSG);
	blob[20] ^= 1;
	ASSERT_EQ(gp_optim_load(blob, len, N, &o2), -EBADMSG);
	blob[20] ^= 1;
	ASSERT_EQ(gp_optim_load(blob, len - 1, N, &o2), -EBADMSG);
	ASSERT_OK(gp_optim_load(blob, len, N, &o2));
	free(blob);
	ASSERT_EQ(gp_optim_steps(o2), 3);
	ASSERT_MEM_EQ(gp_optim_m(o2), gp_optim_m(o), N * sizeof(float));
	ASSERT_MEM_EQ(gp_optim_v(o2), gp_optim_v(o), N * sizeof(float));
	/* The restored state goes on exactly as the original. */
	{
		const float *w = gp_params_values(p);
		float copy[N];

		memcpy(copy, w, sizeof(copy));
		ASSERT_OK(gp_params_set_tensor(q, 0, copy, 25));
		ASSERT_OK(gp_params_set_tensor(q, 1, copy + 25, 12));
	}
	ASSERT_OK(gp_optim_attach(o2, q));
	random_grad(g, 9);
	ASSERT_OK(gp_params_apply(p, g, N, NULL));
	ASSERT_OK(gp_params_apply(q, g, N, NULL));
	ASSERT_MEM_EQ(gp_params_values(p), gp_params_values(q),
		      N * sizeof(float));
	gp_params_destroy(p);
	gp_params_destroy(q);
	gp_optim_destroy(o);
	gp_optim_destroy(o2);
}

static void test_refusals(void)
{
	struct gp_optim_config c = { 0.9f, 0.999f, 1e-8f, 0.01f };
	struct gp_optim_config bad = c;
	struct gp_tensor_shape sh[1] = { { "w", 4, 1 } };
	struct gp_params_config pc = { .lr = 0.1f, .momentum = 0.9f };
	struct gp_params *p;
	struct gp_optim *o;

	bad.beta1 = 1;
	ASSERT_EQ(gp_optim_create(&bad, 4, &o), -EINVAL);
	bad = c;
	bad.eps = 0;
	ASSERT_EQ(gp_optim_create(&bad, 4, &o), -EINVAL);
	ASSERT_EQ(gp_optim_create(&c, 0, &o), -EINVAL);
	ASSERT_OK(gp_optim_create(&c, 4, &o));
	/* A store with momentum of its own would step twice. */
	ASSERT_OK(gp_params_create(&pc, sh, 1, &p));
	ASSERT_EQ(gp_optim_attach(o, p), -EINVAL);
	gp_params_destroy(p);
	gp_optim_destroy(o);
}

int main(void)
{
	test_steps();
	test_outer();
	test_checkpoint();
	test_refusals();
	printf("optim: ok\n");
	return 0;
}
