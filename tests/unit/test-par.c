/* Unit tests for common/par (the fork-join pool) and the passes that use
 * it: every task runs exactly once, on any number of helpers, over many
 * jobs in a row; a NULL pool runs them on the caller; and the parameter
 * store's three steps (params.c) and the robust filter (robust.c) give the
 * same bits, parameters, momentum, centre and results, with no pool and
 * with 1 and 3 helpers, on a model large enough for them to use it
 * (GP_PAR_MIN), with shards that a step leaves alone and updates
 * that the filter shrinks; the sums of squares the filter takes itself
 * range by range are gp_robust_sum_squares' to the bit. */
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "apply.h"
#include "msg.h"
#include "par.h"
#include "params.h"
#include "robust.h"
#include "test.h"

static uint64_t rng = 0x2545f4914f6cdd1dull;

/* Uniform in [-1, 1) (test.h). */
static double noise(void)
{
	return test_uniform(&rng);
}

/* 1e3, 1e-3, 1e1, 1e-1, ... by runs of 5,000 values. */
static double range_scale(size_t x)
{
	static const double s[] = { 1e3, 1e-3, 1e1, 1e-1, 3e2, 3e-2, 1 };

	return s[(x / 5000) % 7];
}

/* ---- the pool ---- */

#define TASKS 1000

struct count_job {
	atomic_uint runs[TASKS];
	size_t n;
};

static void count_task(void *arg, size_t i)
{
	struct count_job *j = arg;

	ASSERT(i < j->n);
	atomic_fetch_add(&j->runs[i], 1);
}

static void test_pool(void)
{
	static struct count_job j;
	struct gp_par *par;

	ASSERT_EQ(gp_par_create(0, &par), -EINVAL);
	ASSERT(par == NULL);
	ASSERT_EQ(gp_par_create(GP_PAR_THREADS_MAX + 1, &par), -EINVAL);
	ASSERT_EQ(gp_par_default_threads(1), 0);
	ASSERT_EQ(gp_par_default_threads(2), 1);
	ASSERT_EQ(gp_par_default_threads(64), GP_PAR_THREADS_MAX);
	ASSERT_EQ(gp_par_threads(NULL), 0);
	for (unsigned threads = 0; threads <= 3; threads++) {
		par = NULL;
		if (threads)
			ASSERT_OK(gp_par_create(threads, &par));
		ASSERT_EQ(gp_par_threads(par), threads);
		/* Jobs of every size back to back: a helper late for one
		 * must take nothing of the next but its own tasks. */
		for (unsigned round = 0; round < 400; round++) {
			j.n = round % 7 == 0 ? 0 : 1 + (round * 37) % TASKS;
			for (size_t i = 0; i < TASKS; i++)
				atomic_store(&j.runs[i], 0);
			gp_par_for(par, j.n, count_task, &j);
			for (size_t i = 0; i < TASKS; i++)
				ASSERT_EQ(atomic_load(&j.runs[i]),
					  i < j.n ? 1u : 0u);
		}
		gp_par_destroy(par);
	}
	gp_par_destroy(NULL);
}

/* ---- the parameter store's steps ---- */

#define ROWS 600
#define COLS 128
#define TOTAL (ROWS * COLS + COLS)

static const struct gp_tensor_shape big[] = {
	{ "w", ROWS, COLS },
	{ "b", 1, COLS },
};

static struct gp_params *make_params(struct gp_par *par, float clip)
{
	struct gp_params_config cfg = {
		.rows_per_shard = 32, .lr = 0.05f, .momentum = 0.9f,
		.clip_norm = clip,
	};
	struct gp_params *p = NULL;
	static float init[ROWS * COLS];

	ASSERT_OK(gp_params_create(&cfg, big, 2, &p));
	rng = 77;
	for (size_t i = 0; i < ROWS * COLS; i++)
		init[i] = (float)(0.1 * noise());
	ASSERT_OK(gp_params_set_tensor(p, 0, init, ROWS * COLS));
	gp_params_set_par(p, par);
	return p;
}

/* A gradient whose rows [zero_from, zero_to) are 0: their shards are
 * left alone by a step without momentum there. */
static void gradient(float *g, size_t zero_from, size_t zero_to, double amp)
{
	for (size_t i = 0; i < TOTAL; i++) {
		size_t row = i / COLS;

		/* Shards at scales 1e-3 to 1e3 apart: the order of their
		 * sums shows in the bits. */
		g[i] = row >= zero_from && row < zero_to && i < ROWS * COLS ?
			       0 :
			       (float)(amp * noise() * range_scale(row * 40));
	}
}

static void same_params(struct gp_params *a, struct gp_params *b)
{
	uint8_t *da, *db;
	size_t la, lb;

	ASSERT_MEM_EQ(gp_params_values(a), gp_params_values(b),
		      TOTAL * sizeof(float));
	ASSERT_OK(gp_params_save(a, &da, &la));
	ASSERT_OK(gp_params_save(b, &db, &lb));
	ASSERT_EQ(la, lb);
	ASSERT_MEM_EQ(da, db, la); /* the momentum too */
	free(da);
	free(db);
	ASSERT_UINT_EQ(gp_params_version(a), gp_params_version(b));
}

static void same_info(const struct gp_params_apply_info *a,
		      const struct gp_params_apply_info *b)
{
	ASSERT(a->norm == b->norm);
	ASSERT_EQ(a->clipped, b->clipped);
	ASSERT_EQ(a->shards_changed, b->shards_changed);
	ASSERT_UINT_EQ(a->version, b->version);
}

static void test_params(void)
{
	static float g[TOTAL], g2[TOTAL];
	struct gp_par *par[3] = { NULL };
	struct gp_params *p[3];
	unsigned clipped = 0, partial = 0;

	ASSERT(TOTAL >= GP_PAR_MIN);
	ASSERT_OK(gp_par_create(1, &par[1]));
	ASSERT_OK(gp_par_create(3, &par[2]));
	for (int k = 0; k < 3; k++)
		p[k] = make_params(par[k], 8);
	for (unsigned t = 0; t < 30; t++) {
		struct gp_params_apply_info info[3];
		float lrs[3] = { 0.05f, 0.04f, 0.03f };
		struct gp_params_sums sums = {
			.a = g, .b = g2, .lrs = lrs, .carry_lrs = lrs,
			.carry_time = 1, .count = 3, .scale = 0.75f,
		};
		struct gp_params_delta dl = {
			.d = g, .count = 2, .scale = 0.5f, .lr_sum = 1,
		};

		/* Rows 100-299 silent for the first steps: their shards
		 * keep their version until momentum reaches them. */
		gradient(g, t < 2 ? 100 : 0, t < 2 ? 300 : 0,
			 t % 5 == 4 ? 0.5 : 0.01);
		gradient(g2, 0, 0, 0.01);
		for (int k = 0; k < 3; k++) {
			switch (t % 3) {
			case 0:
				ASSERT_OK(gp_params_apply_scaled(
					p[k], g, TOTAL, 0.8f, &info[k]));
				break;
			case 1:
				ASSERT_OK(gp_params_apply_sums(p[k], &sums,
							       TOTAL,
							       &info[k]));
				break;
			default:
				ASSERT_OK(gp_params_apply_delta(p[k], &dl,
								TOTAL,
								&info[k]));
				break;
			}
		}
		for (int k = 1; k < 3; k++) {
			same_info(&info[0], &info[k]);
			same_params(p[0], p[k]);
		}
		clipped += info[0].clipped;
		partial += info[0].shards_changed < (ROWS + 31) / 32 + 1;
	}
	ASSERT_GT(clipped, 0);
	ASSERT_GT(partial, 0);
	for (int k = 0; k < 3; k++) {
		gp_params_destroy(p[k]);
		gp_par_destroy(par[k]);
	}
}

/* ---- the robust filter ---- */

#define RN 100000 /* six ranges and a part */

static void test_robust(void)
{
	static float g[4][RN];
	struct gp_par *par[3] = { NULL };
	struct gp_robust r[4];
	struct gp_robust_agent ag[4][4];
	unsigned damped = 0;

	ASSERT(RN >= GP_PAR_MIN);
	ASSERT_OK(gp_par_create(1, &par[1]));
	ASSERT_OK(gp_par_create(3, &par[2]));
	memset(r, 0, sizeof(r));
	memset(ag, 0, sizeof(ag));
	for (int k = 0; k < 4; k++) {
		r[k].clip = 2;
		r[k].beta = 0.9;
		r[k].par = par[k < 3 ? k : 2];
	}
	for (unsigned t = 0; t < 48; t++) {
		uint64_t who = t % 4;
		struct gp_robust_result res[4];

		/* Three honest members; the fourth flips its sign. Each
		 * range of values at its own scale, so that the order in
		 * which their sums are added shows in the bits. */
		for (size_t x = 0; x < RN; x++)
			g[0][x] = (float)((who == 3 ? -3 : 1) *
					  (1 + 0.5 * noise()) *
					  range_scale(x));
		for (int k = 1; k < 4; k++)
			memcpy(g[k], g[0], sizeof(g[0]));
		for (int k = 0; k < 4; k++) {
			struct gp_robust_update u = {
				.a = g[k], .n = RN, .k = 1, .who = who,
				.members = 4, .reject_norm = 1e6,
			};

			/* The fourth takes its norms from the caller, as
			 * apply.c hands verification's in. */
			if (k == 3) {
				u.sq_known = true;
				u.sq_a = gp_robust_sum_squares(g[k], RN);
			}
			ASSERT_OK(gp_robust_filter(&r[k], &ag[k][who], &u,
						   &res[k]));
		}
		for (int k = 1; k < 4; k++) {
			ASSERT(res[k].weight == res[0].weight);
			ASSERT(res[k].dev_g == res[0].dev_g);
			ASSERT(res[k].dev_m == res[0].dev_m);
			ASSERT_MEM_EQ(g[k], g[0], sizeof(g[0]));
			ASSERT_MEM_EQ(r[k].centre, r[0].centre,
				      RN * sizeof(float));
			ASSERT_MEM_EQ(ag[k][who].momentum, ag[0][who].momentum,
				      RN * sizeof(float));
		}
		damped += res[0].weight < 1;
	}
	ASSERT_GT(damped, 3);
	for (int k = 0; k < 4; k++) {
		for (int a = 0; a < 4; a++)
			gp_robust_agent_finish(&ag[k][a]);
		gp_robust_finish(&r[k]);
	}
	for (int k = 0; k < 3; k++)
		gp_par_destroy(par[k]);
}

static void payload_task(void *arg, size_t i)
{
	gp_msg_payload_job_run((const struct gp_msg_payload_job *)arg + i);
}

/* A parameter send's payloads written by the pool's threads
 * (gp_serve_send_blocks): every dtype gives the bytes of the plain
 * encoder, on 0, 1 and 3 helpers. */
static void test_payloads(void)
{
	enum { N = 70000 };
	static const uint8_t dtypes[] = {
		GP_DTYPE_F32, GP_DTYPE_F16, GP_DTYPE_I8, GP_DTYPE_Q8,
		GP_DTYPE_Q8_DELTA, GP_DTYPE_Q4, GP_DTYPE_Q4_DELTA,
	};
	enum { NB = sizeof(dtypes) };
	struct gp_msg_block b[NB];
	float *v = malloc(N * sizeof(*v));
	static const unsigned threads[] = { 0, 1, 3 };
	struct gp_msg m;
	uint8_t *whole;
	size_t len;

	ASSERT_NOT_NULL(v);
	for (size_t i = 0; i < N; i++)
		v[i] = (float)sin((double)i * 0.37) * (float)(1 + i % 13);
	for (size_t k = 0; k < NB; k++)
		b[k] = (struct gp_msg_block){
			.tensor = (uint32_t)k, .rows = 1,
			.count = (uint32_t)(N - 1000 * k),
			.dtype = dtypes[k], .values = v + 100 * k,
		};
	gp_msg_init(&m, GP_MSG_PARAM_SHARDS);
	m.u.param_shards.clock = 5;
	m.u.param_shards.blocks = b;
	m.u.param_shards.n_blocks = NB;
	ASSERT_OK(gp_msg_encode_alloc(&m, &whole, &len));
	for (size_t t = 0; t < sizeof(threads) / sizeof(*threads); t++) {
		struct gp_msg_payload_job *jobs;
		struct gp_par *par = NULL;
		uint8_t *parts;
		size_t plen, n;

		if (threads[t])
			ASSERT_OK(gp_par_create(threads[t], &par));
		ASSERT_OK(gp_msg_encode_alloc_deferred(&m, &parts, &plen,
						       &jobs, &n));
		ASSERT_EQ(plen, len);
		ASSERT_EQ(n, NB);
		gp_par_for(par, n, payload_task, jobs);
		ASSERT(memcmp(parts, whole, len) == 0);
		free(jobs);
		free(parts);
		gp_par_destroy(par);
	}
	free(whole);
	free(v);
}

int main(void)
{
	test_pool();
	test_params();
	test_robust();
	test_payloads();
	return 0;
}
