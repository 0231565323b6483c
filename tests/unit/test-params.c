/* Unit tests for coordinator/params: shard layout, versions and pulls, the
 * momentum SGD optimizer against hand-computed values, clipping, rejection
 * of bad gradients, checkpoint round trip. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "params.h"
#include "test.h"

static const struct gp_tensor_shape shapes[] = {
	{ "w1", 10, 4 },
	{ "b1", 1, 4 },
};

static struct gp_params *make(float lr, float mu, float wd, uint32_t rps)
{
	struct gp_params_config cfg = {
		.rows_per_shard = rps, .lr = lr, .momentum = mu,
		.weight_decay = wd,
	};
	struct gp_params *p = NULL;

	ASSERT_OK(gp_params_create(&cfg, shapes, 2, &p));
	return p;
}

static void test_create_invalid(void)
{
	struct gp_params_config cfg = { .lr = 0.1f };
	struct gp_params *p = (struct gp_params *)&cfg;
	struct gp_tensor_shape bad[2] = { { "a", 2, 2 }, { "a", 1, 1 } };

	ASSERT_EQ(gp_params_create(&cfg, shapes, 0, &p), -EINVAL);
	ASSERT_EQ(gp_params_create(&cfg, bad, 2, &p), -EINVAL); /* repeated */
	bad[1] = (struct gp_tensor_shape){ "b", 0, 1 };
	ASSERT_EQ(gp_params_create(&cfg, bad, 2, &p), -EINVAL);
	bad[1] = (struct gp_tensor_shape){ "", 1, 1 };
	ASSERT_EQ(gp_params_create(&cfg, bad, 2, &p), -EINVAL);
	bad[1] = (struct gp_tensor_shape){ "b", 1u << 20, 1u << 10 };
	ASSERT_EQ(gp_params_create(&cfg, bad, 2, &p), -EINVAL); /* too big */
	cfg.momentum = 1.0f;
	ASSERT_EQ(gp_params_create(&cfg, shapes, 2, &p), -EINVAL);
	cfg.momentum = 0;
	cfg.lr = NAN;
	ASSERT_EQ(gp_params_create(&cfg, shapes, 2, &p), -EINVAL);
	/* ret_* untouched on failure */
	ASSERT(p == (struct gp_params *)&cfg);
	gp_params_destroy(NULL);
}

static void test_layout(void)
{
	struct gp_params *p = make(0.1f, 0, 0, 3);
	struct gp_params_config cfg = { .shard_bytes = 48, .lr = 0.1f };
	struct gp_params *q = NULL;
	struct gp_params_shard sh;
	struct gp_tensor_shape t;
	size_t off;

	ASSERT_UINT_EQ(gp_params_size(p), 44);
	ASSERT_UINT_EQ(gp_params_tensor_count(p), 2);
	ASSERT_OK(gp_params_tensor(p, 1, &t, &off));
	ASSERT_STR_EQ(t.name, "b1");
	ASSERT_EQ(off, 40);
	ASSERT_EQ(gp_params_find(p, "b1"), 1);
	ASSERT_EQ(gp_params_find(p, "nope"), -ENOENT);
	ASSERT_EQ(gp_params_tensor(p, 2, &t, &off), -ENOENT);
	/* w1: rows 0-2, 3-5, 6-8, 9; b1: one shard */
	ASSERT_UINT_EQ(gp_params_shard_count(p), 5);
	ASSERT_OK(gp_params_shard(p, 3, &sh));
	ASSERT_EQ(sh.tensor, 0);
	ASSERT_EQ(sh.row_begin, 9);
	ASSERT_EQ(sh.rows, 1);
	ASSERT_EQ(sh.cols, 4);
	ASSERT_EQ(sh.offset, 36);
	ASSERT_EQ(sh.count, 4);
	ASSERT_EQ(sh.version, 1);
	ASSERT_OK(gp_params_shard(p, 4, &sh));
	ASSERT_EQ(sh.tensor, 1);
	ASSERT_EQ(sh.offset, 40);
	ASSERT_EQ(gp_params_shard(p, 5, &sh), -ENOENT);
	ASSERT_OK(gp_params_check_tensor(p, 0, 10, 4));
	ASSERT_EQ(gp_params_check_tensor(p, 0, 4, 10), GP_REASON_SHAPE);
	ASSERT_EQ(gp_params_check_tensor(p, 7, 10, 4), GP_REASON_SHAPE);
	{
		size_t at = 0;

		ASSERT_OK(gp_params_check_block(p, 0, 3, 2, 8, &at));
		ASSERT_EQ(at, 12);
		ASSERT_OK(gp_params_check_block(p, 1, 0, 0, 4, &at));
		ASSERT_EQ(at, 40);
		ASSERT_EQ(gp_params_check_block(p, 0, 9, 2, 8, &at),
			  GP_REASON_SHAPE);
		ASSERT_EQ(gp_params_check_block(p, 0, 3, 2, 9, &at),
			  GP_REASON_SHAPE);
		ASSERT_EQ(gp_params_check_block(p, 0, 1, 0, 40, &at),
			  GP_REASON_SHAPE);
		ASSERT_EQ(gp_params_check_block(p, 2, 0, 0, 4, &at),
			  GP_REASON_SHAPE);
		ASSERT_EQ(gp_params_check_block(p, 0, 0xffffffffu, 2, 8, &at),
			  GP_REASON_SHAPE);
	}
	ASSERT_EQ(gp_params_find_shard(p, 0, 6), 2);
	ASSERT_EQ(gp_params_find_shard(p, 1, 0), 4);
	ASSERT_EQ(gp_params_find_shard(p, 0, 5), -ENOENT);
	ASSERT_EQ(gp_params_find_shard(p, 2, 0), -ENOENT);
	/* 48 bytes / (4 cols * 4 bytes) = 3 rows per shard as well */
	ASSERT_OK(gp_params_create(&cfg, shapes, 2, &q));
	ASSERT_UINT_EQ(gp_params_shard_count(q), 5);
	gp_params_destroy(q);
	gp_params_destroy(p);
}

/* One element through three steps of SGD with momentum 0.9, weight decay
 * 0.01, lr 0.1, worked by hand:
 *   w0 = 1
 *   g1 = 0.5:  d = 0.5 + 0.01*1 = 0.51;          v = 0.51
 *              w = 1 - 0.1*0.51 = 0.949
 *   g2 = -0.2: d = -0.2 + 0.01*0.949 = -0.19051; v = 0.9*0.51 - 0.19051
 *              = 0.26849;  w = 0.949 - 0.026849 = 0.922151
 *   g3 = 0:    d = 0.00922151;  v = 0.9*0.26849 + 0.00922151 = 0.25086251
 *              w = 0.922151 - 0.025086251 = 0.897064749 */
static void test_momentum_reference(void)
{
	struct gp_params *p = make(0.1f, 0.9f, 0.01f, 3);
	size_t n = gp_params_size(p);
	float *w0 = calloc(n, sizeof(float)), *g = calloc(n, sizeof(float));
	double *rw = calloc(n, sizeof(double)), *rv = calloc(n, sizeof(double));
	const float steps[3] = { 0.5f, -0.2f, 0.0f };
	const double expect[3] = { 0.949, 0.922151, 0.897064749 };
	struct gp_params_apply_info info;

	ASSERT_NOT_NULL(w0);
	ASSERT_NOT_NULL(g);
	ASSERT_NOT_NULL(rw);
	ASSERT_NOT_NULL(rv);
	for (size_t i = 0; i < n; i++)
		rw[i] = w0[i] = (float)(0.01 * (double)i - 0.2);
	w0[0] = 1.0f;
	rw[0] = 1.0;
	ASSERT_OK(gp_params_set_tensor(p, 0, w0, 40));
	ASSERT_OK(gp_params_set_tensor(p, 1, w0 + 40, 4));
	for (int step = 0; step < 3; step++) {
		for (size_t i = 0; i < n; i++)
			g[i] = i == 0 ? steps[step] :
				(float)(0.05 * (double)((i * 7 + (size_t)step) % 11) - 0.25);
		ASSERT_OK(gp_params_apply(p, g, n, &info));
		ASSERT(!info.clipped);
		for (size_t i = 0; i < n; i++) {
			double d = (double)g[i] + 0.01 * rw[i];

			rv[i] = 0.9 * rv[i] + d;
			rw[i] -= 0.1 * rv[i];
			ASSERT_NEAR(gp_params_values(p)[i], rw[i], 1e-5);
		}
		ASSERT_NEAR(gp_params_values(p)[0], expect[step], 1e-6);
	}
	ASSERT_UINT_EQ(gp_params_updates(p), 3);
	free(w0);
	free(g);
	free(rw);
	free(rv);
	gp_params_destroy(p);
}

/* A group's momentum sums applied at once land where the same gradients
 * applied one by one do, for momentum and plain SGD, with a varying rate
 * and from a non-zero velocity; a staleness scale scales the group's
 * steps; bad input changes nothing. */
static void test_sums_match_steps(void)
{
	for (int plain = 0; plain < 2; plain++) {
		float mu = plain ? 0.0f : 0.9f;
		struct gp_params *one = make(0.05f, mu, 0, 3);
		struct gp_params *grp = make(0.05f, mu, 0, 3);
		size_t n = gp_params_size(one);
		float *g = calloc(n, sizeof(float)), *a = calloc(n, sizeof(float));
		double *acc = calloc(n, sizeof(double)), *bsum = calloc(n, sizeof(double));
		float *b = calloc(n, sizeof(float)), *w0 = calloc(n, sizeof(float));
		const float lrs[5] = { 0.05f, 0.04f, 0.03f, 0.02f, 0.01f };
		struct gp_params_sums sums = { .a = a, .b = b, .lrs = lrs,
					       .count = 5, .scale = 1 };
		struct gp_params_apply_info info;
		double lsum = 0;

		ASSERT_NOT_NULL(g);
		ASSERT_NOT_NULL(a);
		ASSERT_NOT_NULL(acc);
		ASSERT_NOT_NULL(bsum);
		ASSERT_NOT_NULL(b);
		ASSERT_NOT_NULL(w0);
		for (size_t i = 0; i < n; i++)
			w0[i] = (float)(0.02 * (double)i - 0.3);
		ASSERT_OK(gp_params_set_tensor(one, 0, w0, 40));
		ASSERT_OK(gp_params_set_tensor(one, 1, w0 + 40, 4));
		ASSERT_OK(gp_params_set_tensor(grp, 0, w0, 40));
		ASSERT_OK(gp_params_set_tensor(grp, 1, w0 + 40, 4));
		/* A first step on both, so the group starts from a velocity. */
		for (size_t i = 0; i < n; i++)
			g[i] = (float)(0.1 * (double)(i % 5) - 0.2);
		ASSERT_OK(gp_params_apply(one, g, n, NULL));
		ASSERT_OK(gp_params_apply(grp, g, n, NULL));
		for (uint32_t j = 0; j < 5; j++) {
			for (size_t i = 0; i < n; i++) {
				g[i] = (float)(0.03 * (double)((i * 3 + j) % 7) - 0.09);
				acc[i] = mu * acc[i] + g[i];
				bsum[i] += lrs[j] * acc[i];
			}
			lsum += lrs[j];
			ASSERT_OK(gp_params_set_lr(one, lrs[j]));
			ASSERT_OK(gp_params_apply(one, g, n, NULL));
		}
		for (size_t i = 0; i < n; i++) {
			a[i] = (float)acc[i];
			b[i] = (float)(bsum[i] / lsum);
		}
		ASSERT_OK(gp_params_apply_sums(grp, &sums, n, &info));
		ASSERT(!info.clipped);
		ASSERT_UINT_EQ(gp_params_updates(grp), gp_params_updates(one));
		for (size_t i = 0; i < n; i++)
			ASSERT_NEAR(gp_params_values(grp)[i],
				    gp_params_values(one)[i], 1e-6);
		/* The velocity carries on alike: one more step on each. */
		for (size_t i = 0; i < n; i++)
			g[i] = (float)(0.01 * (double)(i % 3));
		ASSERT_OK(gp_params_apply(one, g, n, NULL));
		ASSERT_OK(gp_params_set_lr(grp, 0.01f));
		ASSERT_OK(gp_params_apply(grp, g, n, NULL));
		for (size_t i = 0; i < n; i++)
			ASSERT_NEAR(gp_params_values(grp)[i],
				    gp_params_values(one)[i], 1e-6);

		/* Scale 0.5 moves w half as far when starting from v = 0. */
		{
			struct gp_params *h = make(0.05f, mu, 0, 3);
			struct gp_params *f = make(0.05f, mu, 0, 3);

			ASSERT_OK(gp_params_apply_sums(f, &sums, n, NULL));
			sums.scale = 0.5f;
			ASSERT_OK(gp_params_apply_sums(h, &sums, n, NULL));
			for (size_t i = 0; i < n; i++)
				ASSERT_NEAR(gp_params_values(h)[i],
					    0.5 * gp_params_values(f)[i], 1e-7);
			/* Refusals change nothing. */
			sums.scale = 0;
			ASSERT_EQ(gp_params_apply_sums(h, &sums, n, NULL), -EINVAL);
			sums.scale = 1;
			sums.count = 0;
			ASSERT_EQ(gp_params_apply_sums(h, &sums, n, NULL), -EINVAL);
			sums.count = 5;
			ASSERT_EQ(gp_params_apply_sums(h, &sums, n - 1, NULL),
				  GP_REASON_SHAPE);
			b[3] = NAN;
			ASSERT_EQ(gp_params_apply_sums(h, &sums, n, NULL),
				  GP_REASON_NONFINITE);
			ASSERT_UINT_EQ(gp_params_updates(h), 5);
			for (size_t i = 0; i < n; i++)
				ASSERT_NEAR(gp_params_values(h)[i],
					    0.5 * gp_params_values(f)[i], 1e-7);
			gp_params_destroy(h);
			gp_params_destroy(f);
		}
		free(g);
		free(a);
		free(acc);
		free(bsum);
		free(b);
		free(w0);
		gp_params_destroy(one);
		gp_params_destroy(grp);
	}
	/* A large b is caught by the norm check even when a is small. */
	{
		struct gp_params_config cfg = { .rows_per_shard = 3, .lr = 0.05f,
						.momentum = 0.9f, .reject_norm = 10 };
		struct gp_params *p = NULL;
		float a[44] = { 0 }, b[44] = { 0 };
		const float lr = 0.05f;
		struct gp_params_sums s = { .a = a, .b = b, .lrs = &lr,
					    .count = 1, .scale = 1 };

		ASSERT_OK(gp_params_create(&cfg, shapes, 2, &p));
		a[0] = 1;
		b[5] = 100;
		ASSERT_EQ(gp_params_apply_sums(p, &s, 44, NULL), GP_REASON_NORM);
		b[5] = 1;
		ASSERT_OK(gp_params_apply_sums(p, &s, 44, NULL));
		gp_params_destroy(p);
	}
	/* Weight decay is not a linear step: refused. */
	{
		struct gp_params *p = make(0.05f, 0.9f, 0.01f, 3);
		float z[44] = { 0 };
		const float lr = 0.05f;
		struct gp_params_sums s = { .a = z, .b = z, .lrs = &lr,
					    .count = 1, .scale = 1 };

		ASSERT_EQ(gp_params_apply_sums(p, &s, 44, NULL), -EINVAL);
		gp_params_destroy(p);
	}
}

static void test_clip_and_reject(void)
{
	struct gp_params_config cfg = {
		.rows_per_shard = 3, .lr = 1.0f, .clip_norm = 1.0f,
		.reject_norm = 100.0f,
	};
	struct gp_params *p = NULL;
	struct gp_params_apply_info info;
	float g[44] = {0};
	uint64_t v;
	double norm;

	ASSERT_OK(gp_params_create(&cfg, shapes, 2, &p));
	g[0] = 3;
	g[43] = 4; /* norm 5 -> scaled by 1/5 */
	ASSERT_OK(gp_params_grad_norm(g, 44, &norm));
	ASSERT_NEAR(norm, 5.0, 1e-12);
	ASSERT_OK(gp_params_apply(p, g, 44, &info));
	ASSERT(info.clipped);
	ASSERT_NEAR(info.norm, 5.0, 1e-9);
	ASSERT_NEAR(gp_params_values(p)[0], -0.6, 1e-6);
	ASSERT_NEAR(gp_params_values(p)[43], -0.8, 1e-6);
	ASSERT_NEAR(gp_params_values(p)[1], 0.0, 0);

	/* Refusals leave everything as it was. */
	v = gp_params_version(p);
	ASSERT_EQ(gp_params_apply(p, g, 43, NULL), GP_REASON_SHAPE);
	ASSERT_EQ(gp_params_apply(p, NULL, 44, NULL), GP_REASON_SHAPE);
	g[5] = NAN;
	ASSERT_EQ(gp_params_apply(p, g, 44, NULL), GP_REASON_NONFINITE);
	ASSERT_EQ(gp_params_grad_norm(g, 44, &norm), GP_REASON_NONFINITE);
	g[5] = -INFINITY;
	ASSERT_EQ(gp_params_apply(p, g, 44, NULL), GP_REASON_NONFINITE);
	g[5] = 1e3f;
	ASSERT_EQ(gp_params_apply(p, g, 44, NULL), GP_REASON_NORM);
	g[5] = 3e38f; /* finite, but its square overflows a float */
	ASSERT_EQ(gp_params_apply(p, g, 44, NULL), GP_REASON_NORM);
	ASSERT_UINT_EQ(gp_params_version(p), v);
	ASSERT_UINT_EQ(gp_params_updates(p), 1);
	ASSERT_NEAR(gp_params_values(p)[0], -0.6, 1e-6);
	ASSERT_NEAR(gp_params_values(p)[5], 0.0, 0);
	ASSERT_EQ(gp_params_set_lr(p, -1), -EINVAL);
	ASSERT_OK(gp_params_set_lr(p, 0.5f));
	gp_params_destroy(p);
}

/* The blocked float sums agree with a double reference on a large,
 * odd-sized vector. */
static void test_norm_accuracy(void)
{
	size_t n = 100003;
	float *g = malloc(n * sizeof(float));
	double ref = 0, norm = 0;

	ASSERT_NOT_NULL(g);
	for (size_t i = 0; i < n; i++) {
		g[i] = (float)((double)((i * 7919) % 2003) - 1001.0) * 1e-3f;
		ref += (double)g[i] * g[i];
	}
	ASSERT_OK(gp_params_grad_norm(g, n, &norm));
	ASSERT_NEAR(norm / sqrt(ref), 1.0, 1e-6);
	g[n - 1] = 2e19f; /* its float square overflows; still finite input */
	ASSERT_OK(gp_params_grad_norm(g, n, &norm));
	ASSERT_NEAR(norm / 2e19, 1.0, 1e-6);
	g[n - 1] = NAN;
	ASSERT_EQ(gp_params_grad_norm(g, n, &norm), GP_REASON_NONFINITE);
	free(g);
}

static void test_changed_shards(void)
{
	struct gp_params *p = make(0.1f, 0, 0, 3);
	struct gp_params *m = make(0.1f, 0.5f, 0, 3);
	float g[44] = {0}, buf[12];
	uint32_t idx[8];
	uint64_t v0 = gp_params_version(p), v1;

	/* A fresh agent (version 0) needs everything. */
	ASSERT_UINT_EQ(gp_params_changed_since(p, 0, idx, 8), 5);
	ASSERT_UINT_EQ(gp_params_changed_since(p, v0, idx, 8), 0);
	/* Only w1 rows 3..5 (shard 1) get a gradient. */
	g[4 * 4 + 2] = 1.0f;
	{
		struct gp_params_apply_info info;

		ASSERT_OK(gp_params_apply(p, g, 44, &info));
		ASSERT_EQ(info.shards_changed, 1);
	}
	v1 = gp_params_version(p);
	ASSERT_UINT_EQ(v1, v0 + 1);
	ASSERT_UINT_EQ(gp_params_changed_since(p, v0, idx, 8), 1);
	ASSERT_EQ(idx[0], 1);
	ASSERT_UINT_EQ(gp_params_changed_since(p, v1, idx, 8), 0);
	/* cap smaller than the answer: the count is still complete */
	ASSERT_UINT_EQ(gp_params_changed_since(p, 0, idx, 2), 5);
	ASSERT_EQ(gp_params_copy_shard(p, 1, buf, 12), 12);
	ASSERT_NEAR(buf[1 * 4 + 2], -0.1, 1e-7);
	ASSERT_NEAR(gp_params_shard_data(p, 1)[6], -0.1, 1e-7);
	ASSERT(gp_params_shard_data(p, 9) == NULL);
	ASSERT_EQ(gp_params_copy_shard(p, 1, buf, 11), -ENOBUFS);
	ASSERT_EQ(gp_params_copy_shard(p, 5, buf, 12), -ENOENT);

	/* With momentum, a shard keeps moving after its gradient stops. */
	ASSERT_OK(gp_params_apply(m, g, 44, NULL));
	v1 = gp_params_version(m);
	g[4 * 4 + 2] = 0;
	ASSERT_OK(gp_params_apply(m, g, 44, NULL));
	ASSERT_UINT_EQ(gp_params_changed_since(m, v1, idx, 8), 1);
	ASSERT_EQ(idx[0], 1);
	ASSERT_NEAR(gp_params_values(m)[18], -0.1 - 0.05, 1e-7);

	/* set_tensor bumps the tensor's shards only */
	v1 = gp_params_version(p);
	ASSERT_OK(gp_params_set_tensor(p, 1, g, 4));
	ASSERT_EQ(gp_params_set_tensor(p, 1, g, 5), -EINVAL);
	ASSERT_UINT_EQ(gp_params_changed_since(p, v1, idx, 8), 1);
	ASSERT_EQ(idx[0], 4);
	gp_params_destroy(p);
	gp_params_destroy(m);
}

static void test_checkpoint(void)
{
	struct gp_params *p = make(0.05f, 0.9f, 0.001f, 4);
	struct gp_params *q = NULL;
	uint8_t *blob = NULL, *blob2 = NULL;
	size_t len = 0, len2 = 0;
	float g[44];
	uint32_t idx[8];

	for (int step = 0; step < 3; step++) {
		for (int i = 0; i < 44; i++)
			g[i] = (float)((i * 13 + step * 5) % 9) * 0.1f - 0.4f;
		ASSERT_OK(gp_params_apply(p, g, 44, NULL));
	}
	ASSERT_OK(gp_params_save(p, &blob, &len));
	ASSERT_OK(gp_params_load(blob, len, &q));
	ASSERT_UINT_EQ(gp_params_version(q), gp_params_version(p));
	ASSERT_UINT_EQ(gp_params_updates(q), 3);
	ASSERT_MEM_EQ(gp_params_values(q), gp_params_values(p), 44 * 4);
	ASSERT_UINT_EQ(gp_params_changed_since(q, 0, idx, 8),
		       gp_params_shard_count(p));
	/* Momentum came back too: the next step is bit-identical. */
	ASSERT_OK(gp_params_apply(p, g, 44, NULL));
	ASSERT_OK(gp_params_apply(q, g, 44, NULL));
	ASSERT_MEM_EQ(gp_params_values(q), gp_params_values(p), 44 * 4);
	ASSERT_OK(gp_params_save(q, &blob2, &len2));
	free(blob2);
	gp_params_destroy(q);
	q = NULL;

	/* Damage: truncation, a flipped payload byte, a bad magic. */
	ASSERT_EQ(gp_params_load(blob, len - 1, &q), -EBADMSG);
	ASSERT_EQ(gp_params_load(blob, 10, &q), -EBADMSG);
	blob[40] ^= 1;
	ASSERT_EQ(gp_params_load(blob, len, &q), -EBADMSG);
	blob[40] ^= 1;
	blob[0] = 'X';
	ASSERT_EQ(gp_params_load(blob, len, &q), -EBADMSG);
	ASSERT(q == NULL);
	free(blob);
	gp_params_destroy(p);
}

/* The outer optimiser against a straightforward reference: an agent's
 * run of K momentum-SGD steps from the pool's (w, v) with its gradients
 * scaled for staleness, its descent d = w_start - w_end taken through
 * Nesterov momentum (m = mu_o m + d; w = w_start - lr_o (d + mu_o m)),
 * over three runs so that m carries; the inner velocity goes on as the
 * run left it. Then lr_o = 1, mu_o = 0 is the plain rule, a checkpoint
 * of m restores it bit for bit, and bad values and bytes are refused. */
static void test_outer_reference(void)
{
	const double lr_o = 0.7, mu_o = 0.9, mu = 0.9, scale = 0.6;
	const float lrs[4] = { 0.05f, 0.045f, 0.04f, 0.035f };
	struct gp_params *p = make(0.05f, (float)mu, 0, 3);
	struct gp_params *plain = make(0.05f, (float)mu, 0, 3);
	struct gp_params *unit = make(0.05f, (float)mu, 0, 3);
	struct gp_params *q = make(0.05f, (float)mu, 0, 3);
	size_t n = gp_params_size(p);
	double *rw = calloc(n, sizeof(double)), *rv = calloc(n, sizeof(double));
	double *rm = calloc(n, sizeof(double)), *lw = calloc(n, sizeof(double));
	double *lv = calloc(n, sizeof(double)), *acc = calloc(n, sizeof(double));
	double *bsum = calloc(n, sizeof(double));
	float *a = calloc(n, sizeof(float)), *b = calloc(n, sizeof(float));
	float *w0 = calloc(n, sizeof(float));
	struct gp_params_sums sums = { .a = a, .b = b, .lrs = lrs, .count = 4,
				       .scale = (float)scale };
	uint8_t *blob = NULL;
	size_t len = 0;

	ASSERT_NOT_NULL(rw);
	ASSERT_NOT_NULL(rv);
	ASSERT_NOT_NULL(rm);
	ASSERT_NOT_NULL(lw);
	ASSERT_NOT_NULL(lv);
	ASSERT_NOT_NULL(acc);
	ASSERT_NOT_NULL(bsum);
	ASSERT_NOT_NULL(a);
	ASSERT_NOT_NULL(b);
	ASSERT_NOT_NULL(w0);
	ASSERT(gp_params_outer_momentum(p) == NULL);
	ASSERT_EQ(gp_params_set_outer(p, 0, 0.9f), -EINVAL);
	ASSERT_EQ(gp_params_set_outer(p, 11, 0.9f), -EINVAL);
	ASSERT_EQ(gp_params_set_outer(p, 0.7f, 1), -EINVAL);
	ASSERT_EQ(gp_params_set_outer(p, NAN, 0.5f), -EINVAL);
	ASSERT_EQ(gp_params_save_outer(p, &blob, &len), -EINVAL);
	ASSERT_OK(gp_params_set_outer(p, (float)lr_o, (float)mu_o));
	ASSERT_EQ(gp_params_set_outer(p, (float)lr_o, (float)mu_o), -EINVAL);
	ASSERT_OK(gp_params_set_outer(unit, 1, 0));
	ASSERT_OK(gp_params_set_outer(q, (float)lr_o, (float)mu_o));
	for (size_t i = 0; i < n; i++)
		rw[i] = w0[i] = (float)(0.02 * (double)i - 0.3);
	ASSERT_OK(gp_params_set_tensor(p, 0, w0, 40));
	ASSERT_OK(gp_params_set_tensor(p, 1, w0 + 40, 4));
	ASSERT_OK(gp_params_set_tensor(plain, 0, w0, 40));
	ASSERT_OK(gp_params_set_tensor(plain, 1, w0 + 40, 4));
	ASSERT_OK(gp_params_set_tensor(unit, 0, w0, 40));
	ASSERT_OK(gp_params_set_tensor(unit, 1, w0 + 40, 4));
	for (uint32_t run = 0; run < 3; run++) {
		double lsum = 0;

		/* The agent's run, from the pool's (w, v). */
		for (size_t i = 0; i < n; i++) {
			lw[i] = rw[i];
			lv[i] = rv[i];
			acc[i] = bsum[i] = 0;
		}
		for (uint32_t j = 0; j < 4; j++) {
			for (size_t i = 0; i < n; i++) {
				double g = 0.03 * (double)((i * 3 + j + run) % 7) -
					   0.09 + 0.01 * run;

				lv[i] = mu * lv[i] + scale * g;
				lw[i] -= lrs[j] * lv[i];
				acc[i] = mu * acc[i] + g;
				bsum[i] += lrs[j] * acc[i];
			}
			lsum += lrs[j];
		}
		for (size_t i = 0; i < n; i++) {
			double d = rw[i] - lw[i];

			a[i] = (float)acc[i];
			b[i] = (float)(bsum[i] / lsum);
			rm[i] = mu_o * rm[i] + d;
			rw[i] -= lr_o * (d + mu_o * rm[i]);
			rv[i] = lv[i];
		}
		ASSERT_OK(gp_params_apply_sums(p, &sums, n, NULL));
		ASSERT_OK(gp_params_apply_sums(plain, &sums, n, NULL));
		ASSERT_OK(gp_params_apply_sums(unit, &sums, n, NULL));
		for (size_t i = 0; i < n; i++) {
			ASSERT_NEAR(gp_params_values(p)[i], rw[i], 2e-6);
			ASSERT_NEAR(gp_params_momentum(p)[i], rv[i], 2e-6);
			ASSERT_NEAR(gp_params_outer_momentum(p)[i], rm[i], 2e-6);
			ASSERT_NEAR(gp_params_values(unit)[i],
				    gp_params_values(plain)[i], 1e-6);
		}
	}
	/* The outer step moved farther than the plain rule: it is not the
	 * plain rule in disguise. */
	ASSERT(fabs(gp_params_values(p)[5] - gp_params_values(plain)[5]) > 1e-3);

	/* The checkpoint, as a restart takes it (coordinator/setup.c): the
	 * store's bytes, then the outer momentum's; the next update lands
	 * bit for bit where it does on p. */
	ASSERT_OK(gp_params_save_outer(p, &blob, &len));
	ASSERT_EQ(gp_params_load_outer(q, blob, len - 1), -EBADMSG);
	blob[len - 1] ^= 0x40;
	ASSERT_EQ(gp_params_load_outer(q, blob, len), -EBADMSG);
	blob[len - 1] ^= 0x40;
	ASSERT_EQ(gp_params_load_outer(plain, blob, len), -EINVAL);
	gp_params_destroy(q);
	q = NULL;
	{
		uint8_t *pb = NULL;
		size_t pl = 0;

		ASSERT_OK(gp_params_save(p, &pb, &pl));
		ASSERT_OK(gp_params_load(pb, pl, &q));
		free(pb);
	}
	ASSERT_OK(gp_params_set_outer(q, (float)lr_o, (float)mu_o));
	ASSERT_OK(gp_params_load_outer(q, blob, len));
	ASSERT_MEM_EQ(gp_params_outer_momentum(q), gp_params_outer_momentum(p),
		      n * sizeof(float));
	ASSERT_OK(gp_params_apply_sums(p, &sums, n, NULL));
	ASSERT_OK(gp_params_apply_sums(q, &sums, n, NULL));
	ASSERT_MEM_EQ(gp_params_values(q), gp_params_values(p),
		      n * sizeof(float));
	ASSERT_MEM_EQ(gp_params_outer_momentum(q), gp_params_outer_momentum(p),
		      n * sizeof(float));
	free(blob);
	free(rw);
	free(rv);
	free(rm);
	free(lw);
	free(lv);
	free(acc);
	free(bsum);
	free(a);
	free(b);
	free(w0);
	gp_params_destroy(p);
	gp_params_destroy(plain);
	gp_params_destroy(unit);
	gp_params_destroy(q);
}

/* What a group does to the momentum already there (c and mk): K steps'
 * worth at carry_time 1 (or 0), at the carry rates when given; a stale
 * group's share t of them decays it by mu^(tK) and coasts it (1 - mu^(tK))
 * / (1 - mu^K) as far; bad times and rates refused. */
static void test_sums_coefficients(void)
{
	const float lrs[3] = { 0.1f, 0.1f, 0.05f }, carry[3] = { 0.05f, 0.05f,
								0.05f };
	struct gp_params_sums s = { .lrs = lrs, .count = 3 };
	double c, mk, c1 = 0.1f * 0.9 + 0.1f * 0.81 + 0.05f * 0.729;

	ASSERT_OK(gp_params_sums_coefficients(0.9, &s, &c, &mk));
	ASSERT_NEAR(c, c1, 1e-12);
	ASSERT_NEAR(mk, 0.729, 1e-12);
	s.carry_time = 1;
	ASSERT_OK(gp_params_sums_coefficients(0.9, &s, &c, &mk));
	ASSERT_NEAR(c, c1, 1e-12);
	s.carry_lrs = carry;
	ASSERT_OK(gp_params_sums_coefficients(0.9, &s, &c, &mk));
	ASSERT_NEAR(c, 0.05f * (0.9 + 0.81 + 0.729), 1e-12);
	s.carry_lrs = NULL;
	s.carry_time = 0.5f;
	ASSERT_OK(gp_params_sums_coefficients(0.9, &s, &c, &mk));
	ASSERT_NEAR(mk, pow(0.9, 1.5), 1e-12);
	ASSERT_NEAR(c, c1 * (1 - pow(0.9, 1.5)) / (1 - 0.729), 1e-12);
	/* No momentum: nothing to carry, whatever the time. */
	ASSERT_OK(gp_params_sums_coefficients(0, &s, &c, &mk));
	ASSERT_NEAR(c, 0, 0);
	ASSERT_NEAR(mk, 0, 0);
	s.carry_time = 1.5f;
	ASSERT_EQ(gp_params_sums_coefficients(0.9, &s, &c, &mk), -EINVAL);
	s.carry_time = -0.5f;
	ASSERT_EQ(gp_params_sums_coefficients(0.9, &s, &c, &mk), -EINVAL);
	s.carry_time = NAN;
	ASSERT_EQ(gp_params_sums_coefficients(0.9, &s, &c, &mk), -EINVAL);
	s.carry_time = 0.5f;
	s.carry_lrs = carry;
	s.count = 0;
	ASSERT_EQ(gp_params_sums_coefficients(0.9, &s, &c, &mk), -EINVAL);
}

int main(void)
{
	test_create_invalid();
	test_layout();
	test_momentum_reference();
	test_sums_match_steps();
	test_clip_and_reject();
	test_norm_accuracy();
	test_changed_shards();
	test_checkpoint();
	test_outer_reference();
	printf("params: ok\n");
	test_sums_coefficients();
	return 0;
}
