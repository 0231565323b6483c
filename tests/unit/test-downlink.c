/* Parameters down as changes (coordinator/downlink.c, GP_CAP_PARAM_DELTA):
 * the capability's negotiation, the first pull whole as f16, then q8
 * changes whose decoding on the agent's side keeps its mirror equal to
 * the coordinator's bit for bit, so that what one pull's rounding loses
 * the next one sends (the parameters and the mirror never drift further
 * apart than one rounding, over many rounds); a pull with pulled_version
 * 0 (verification) is whole again. The same with 4-bit changes
 * (GP_CAP_Q4_DELTA, [pool] param_bits = 4). With GP_CAP_ZERO_MIRROR and
 * 4-bit changes the session's first pull is changes against zeros (not a
 * verification pick, not a later whole pull), and the link's bytes count
 * it so. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "downlink.h"
#include "pool-fixture.h"
#include "work-impl.h"

#define ROUNDS 500
#define CAPS (GP_CAP_F16 | GP_CAP_LOCAL_STEP | GP_CAP_SUMS | \
	      GP_CAP_MOMENTUM | GP_CAP_Q8 | GP_CAP_PARAM_DELTA)

static uint64_t rng = 0x243f6a8885a308d3ull;

/* Uniform in [-1, 1), from splitmix64. */
static double uniform(void)
{
	return test_uniform(&rng);
}

/* One pull of m as serve.c's send_params builds it, through the wire
 * into the agent's mirror (FX_N floats, laid out as the store). Returns
 * how many blocks came as changes. */
static size_t pull(struct fixture *f, struct gp_member *m, float *agent)
{
	struct gp_params *p = f->params;
	size_t n = gp_params_changed_since(p, m->pulled_version, NULL, 0);
	uint32_t idx[16];
	struct gp_msg_block blocks[16];
	struct gp_msg msg, d;
	float *deltas = NULL;
	size_t changes = 0, len;
	uint8_t *buf;

	ASSERT(n > 0 && n <= 16);
	gp_params_changed_since(p, m->pulled_version, idx, n);
	memset(blocks, 0, sizeof(blocks));
	for (size_t i = 0; i < n; i++) {
		struct gp_params_shard sh;

		ASSERT_OK(gp_params_shard(p, idx[i], &sh));
		blocks[i] = (struct gp_msg_block){
			.tensor = sh.tensor, .row_start = sh.row_begin,
			.rows = sh.rows, .version = sh.version,
			.count = (uint32_t)sh.count, .dtype = GP_DTYPE_F16,
			.values = gp_params_shard_data(p, idx[i]),
		};
	}
	ASSERT_OK(gp_downlink_encode(&f->pool, m, blocks, idx, n, &deltas));
	gp_msg_init(&msg, GP_MSG_PARAM_SHARDS);
	msg.u.param_shards.blocks = blocks;
	msg.u.param_shards.n_blocks = n;
	ASSERT_OK(gp_msg_encode_alloc(&msg, &buf, &len));
	free(deltas);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	for (size_t i = 0; i < n; i++) {
		const struct gp_msg_block *b = &d.u.param_shards.blocks[i];
		struct gp_params_shard sh;

		ASSERT_OK(gp_params_shard(p, idx[i], &sh));
		if (b->dtype == GP_DTYPE_Q8_DELTA ||
		    b->dtype == GP_DTYPE_Q4_DELTA) {
			ASSERT_EQ(b->dtype, (m->caps & GP_CAP_Q4_DELTA) ?
						    GP_DTYPE_Q4_DELTA :
						    GP_DTYPE_Q8_DELTA);
			ASSERT_OK(gp_msg_block_add(b, agent + sh.offset,
						   sh.count));
			changes++;
		} else {
			ASSERT_EQ(b->dtype, GP_DTYPE_F16);
			ASSERT_OK(gp_msg_block_read(b, agent + sh.offset,
						    sh.count));
		}
	}
	gp_msg_finish(&d);
	free(buf);
	m->pulled_version = gp_params_version(p);
	return changes;
}

/* Gives m a measured link of bps bytes per second: one probe of 1 MB
 * down and nothing up, waited on for 1e6 / bps seconds. */
static void link(struct fixture *f, struct gp_member *m, double bps)
{
	uint64_t wait_us = (uint64_t)(1e12 / bps);

	ASSERT_OK(gp_ssp_link_sent(f->ssp, (uint64_t)m->agent_id, m->clock,
				   1000000, 1000000));
	ASSERT_EQ(gp_ssp_link_answered(f->ssp, (uint64_t)m->agent_id,
				       m->clock, 1000000 + wait_us, 0, 0, 0),
		  1);
}

/* Moves every parameter by up to step. */
static void drift(struct fixture *f, double step)
{
	const float *w = gp_params_values(f->params);
	float t0[6], t1[3];

	for (size_t i = 0; i < 6; i++)
		t0[i] = w[i] + (float)(step * uniform());
	for (size_t i = 0; i < 3; i++)
		t1[i] = w[6 + i] + (float)(step * uniform());
	ASSERT_OK(gp_params_set_tensor(f->params, 0, t0, 6));
	ASSERT_OK(gp_params_set_tensor(f->params, 1, t1, 3));
}

static void test_negotiation(void)
{
	struct fixture f;
	struct gp_member *m;

	fx_setup(&f, 3);
	m = fx_join(&f, 0, CAPS);
	ASSERT(m->caps & GP_CAP_PARAM_DELTA);
	/* Only with q8 (which needs f16) and the job's switch on. */
	m = fx_join(&f, 1, CAPS & ~(uint32_t)GP_CAP_Q8);
	ASSERT(!(m->caps & GP_CAP_PARAM_DELTA));
	f.job.param_delta = false;
	m = fx_join(&f, 2, CAPS);
	ASSERT(!(m->caps & GP_CAP_PARAM_DELTA));
	ASSERT(m->caps & GP_CAP_Q8);
	fx_teardown(&f);
}

/* GP_CAP_Q4_DELTA: only when asked, with GP_CAP_PARAM_DELTA granted and
 * the job's param_bits = 4. */
static void test_negotiation_q4(void)
{
	struct fixture f;
	struct gp_member *m;

	fx_setup(&f, 3);
	m = fx_join(&f, 0, CAPS | GP_CAP_Q4_DELTA);
	ASSERT(!(m->caps & GP_CAP_Q4_DELTA)); /* param_bits = 8 */
	f.job.param_bits = 4;
	m = fx_join(&f, 1, CAPS | GP_CAP_Q4_DELTA);
	ASSERT(m->caps & GP_CAP_PARAM_DELTA);
	ASSERT(m->caps & GP_CAP_Q4_DELTA);
	m = fx_join(&f, 2, CAPS);
	ASSERT(m->caps & GP_CAP_PARAM_DELTA);
	ASSERT(!(m->caps & GP_CAP_Q4_DELTA)); /* not asked */
	fx_teardown(&f);
	fx_setup(&f, 3);
	f.job.param_bits = 4;
	m = fx_join(&f, 0, (CAPS & ~(uint32_t)GP_CAP_PARAM_DELTA) |
				   GP_CAP_Q4_DELTA);
	ASSERT(!(m->caps & GP_CAP_Q4_DELTA)); /* no PARAM_DELTA */
	f.job.param_delta = false;
	m = fx_join(&f, 1, CAPS | GP_CAP_Q4_DELTA);
	ASSERT(!(m->caps & GP_CAP_Q4_DELTA));
	fx_teardown(&f);
}

/* bits: 8, or 4 with GP_CAP_Q4_DELTA granted. */
static void test_rounds(int bits)
{
	struct fixture f;
	struct gp_member *m, *plain;
	float agent[FX_N], other[FX_N];
	/* Twice the top quantum: a chunk's largest change over 2 * 127 or
	 * 2 * 7. */
	double steps = bits == 4 ? 14 : 254;
	double owed_max = 0;
	const float *w;

	fx_setup(&f, 3);
	f.job.param_bits = (uint32_t)bits;
	m = fx_join(&f, 0, CAPS | GP_CAP_Q4_DELTA);
	ASSERT_EQ(!!(m->caps & GP_CAP_Q4_DELTA), bits == 4);
	plain = fx_join(&f, 1, CAPS & ~(uint32_t)GP_CAP_PARAM_DELTA);
	drift(&f, 1.0);
	/* Not measured, then a fast link: whole blocks only, the mirror
	 * following them. */
	ASSERT_EQ(pull(&f, m, agent), 0);
	drift(&f, 0.1);
	ASSERT_EQ(pull(&f, m, agent), 0);
	ASSERT_MEM_EQ(agent, m->mirror, sizeof(agent));
	ASSERT_UINT_EQ(f.pool.mirror_bytes, FX_N * sizeof(float));
	link(&f, m, 1e9 / 8);
	drift(&f, 0.1);
	ASSERT_EQ(pull(&f, m, agent), 0);
	/* Measured fast: it gives its mirror back. */
	ASSERT(m->mirror == NULL);
	ASSERT_UINT_EQ(f.pool.mirror_bytes, 0);
	/* A 20 Mbit/s link (the moving average brought below 100 Mbit/s)
	 * gets changes from its next pull on. */
	for (int i = 0; i < 10; i++)
		link(&f, m, 20e6 / 8);
	m->pulled_version = 0;
	/* The first pull is whole, as f16: the mirror is what was decoded. */
	ASSERT_EQ(pull(&f, m, agent), 0);
	ASSERT_NOT_NULL(m->mirror);
	ASSERT_MEM_EQ(agent, m->mirror, sizeof(agent));
	w = gp_params_values(f.params);
	for (size_t i = 0; i < FX_N; i++)
		ASSERT_NEAR(agent[i], gp_msg_f16_to_f32(gp_msg_f32_to_f16(w[i])), 0);
	ASSERT_EQ(pull(&f, plain, other), 0);
	ASSERT(plain->mirror == NULL);
	for (int r = 0; r < ROUNDS; r++) {
		float before[FX_N], meant[FX_N];
		double worst = 0;

		memcpy(before, m->mirror, sizeof(before));
		/* Steps of every size, from far below f16's resolution of
		 * the values to far above it. */
		drift(&f, pow(10, -6 + 5 * ((r * 7) % 11) / 10.0));
		w = gp_params_values(f.params);
		for (size_t i = 0; i < FX_N; i++)
			meant[i] = w[i] - before[i];
		ASSERT(pull(&f, m, agent) > 0);
		ASSERT_MEM_EQ(agent, m->mirror, sizeof(agent));
		/* Within one rounding of the change meant: the largest
		 * change of its chunk (here, each shard is one chunk) over
		 * 254 (14 in 4 bits), and float rounding. */
		for (size_t i = 0; i < FX_N; i++)
			if (fabs(meant[i]) > worst)
				worst = fabs(meant[i]);
		for (size_t i = 0; i < FX_N; i++) {
			double owed = fabs((double)w[i] - agent[i]);

			ASSERT(owed <= worst / steps +
					       1e-6 * (fabs(w[i]) + worst));
			/* The carried error does not grow with the rounds:
			 * it is bounded by the drift, at most 0.1 here. */
			if (owed > owed_max)
				owed_max = owed;
		}
		ASSERT_EQ(pull(&f, plain, other), 0);
	}
	ASSERT_UINT_EQ(m->deltas_sent, ROUNDS);
	ASSERT(owed_max <= 0.1 / steps + 1e-5);
	/* A pull with pulled_version 0 (picked for verification) is whole
	 * again and sets the mirror to it: the f16 values that
	 * verification's copy holds (verify.c gp_verify_sent), whatever
	 * the bits of the changes before. */
	drift(&f, 0.01);
	m->pulled_version = 0;
	ASSERT_EQ(pull(&f, m, agent), 0);
	ASSERT_MEM_EQ(agent, m->mirror, sizeof(agent));
	w = gp_params_values(f.params);
	for (size_t i = 0; i < FX_N; i++)
		ASSERT_NEAR(agent[i], gp_msg_f16_to_f32(gp_msg_f32_to_f16(w[i])), 0);
	/* A slow link's pull that is not whole makes no mirror: m without
	 * one gets f16 until its next whole pull. */
	gp_downlink_finish(&f.pool, m);
	drift(&f, 0.01);
	ASSERT_EQ(pull(&f, m, agent), 0);
	ASSERT(m->mirror == NULL);
	m->pulled_version = 0;
	ASSERT_EQ(pull(&f, m, agent), 0);
	ASSERT_NOT_NULL(m->mirror);
	drift(&f, 0.01);
	ASSERT(pull(&f, m, agent) > 0);
	ASSERT_MEM_EQ(agent, m->mirror, sizeof(agent));
	gp_members_remove(&f.pool, m);
	ASSERT(m->mirror == NULL);
	ASSERT_UINT_EQ(f.pool.mirror_bytes, 0);
	fx_teardown(&f);
}

/* GP_CAP_ZERO_MIRROR: granted with PARAM_DELTA; the session's first pull
 * to a member with 4-bit changes goes as q4 changes against zeros, the
 * agent's mirror (zeros too) then equal to the coordinator's bit for bit,
 * and what the four bits lost is sent by the next pulls; with 8-bit
 * changes, for a verification pick and for a later pull with
 * pulled_version 0 it stays whole. work_pulled_bytes counts the first
 * pull as changes. */
static void test_zero_mirror(void)
{
	struct fixture f;
	struct gp_member *m, *m8, *picked;
	float agent[FX_N], a8[FX_N], ap[FX_N];
	const float *w;
	uint64_t whole_bytes, bytes;

	fx_setup(&f, 3);
	f.job.param_bits = 4;
	ASSERT(f.job.first_pull_changes); /* on by default */
	m = fx_join(&f, 0, CAPS | GP_CAP_Q4_DELTA | GP_CAP_ZERO_MIRROR);
	ASSERT(m->caps & GP_CAP_ZERO_MIRROR);
	/* Not with 8-bit changes (no Q4_DELTA): a first pull in q8 is not
	 * sent, so a mirror of zeros would only lose the agent's check. */
	m8 = fx_join(&f, 1, CAPS | GP_CAP_ZERO_MIRROR);
	ASSERT(!(m8->caps & GP_CAP_ZERO_MIRROR));
	picked = fx_join(&f, 2, CAPS | GP_CAP_Q4_DELTA | GP_CAP_ZERO_MIRROR);
	drift(&f, 1.0);
	whole_bytes = work_pulled_bytes(&f.pool, m8);
	bytes = work_pulled_bytes(&f.pool, m);
	ASSERT_LT(bytes, whole_bytes);
	memset(agent, 0, sizeof(agent));
	ASSERT(pull(&f, m, agent) > 0);
	ASSERT_NOT_NULL(m->mirror);
	ASSERT_MEM_EQ(agent, m->mirror, sizeof(agent));
	ASSERT(m->pull_as_changes);
	/* Counted as changes once sent too (gp_work_answered's bytes). */
	m->pulled_version = 0;
	ASSERT_UINT_EQ(work_pulled_bytes(&f.pool, m), bytes);
	m->pulled_version = gp_params_version(f.params);
	/* Within a 4-bit rounding of the parameters, then closer as the
	 * next pulls send what it owed (a slow link, so changes go). */
	for (int i = 0; i < 10; i++)
		link(&f, m, 20e6 / 8);
	for (int r = 0; r < 4; r++) {
		drift(&f, 1e-4);
		ASSERT(pull(&f, m, agent) > 0);
		ASSERT_MEM_EQ(agent, m->mirror, sizeof(agent));
	}
	w = gp_params_values(f.params);
	for (size_t i = 0; i < FX_N; i++)
		ASSERT(fabs((double)w[i] - agent[i]) < 1e-3);
	/* 8-bit changes: the first pull is whole f16. */
	ASSERT_EQ(pull(&f, m8, a8), 0);
	ASSERT(!m8->pull_as_changes);
	/* A first pull picked for verification stays whole. */
	picked->pull_check = true;
	ASSERT_EQ(pull(&f, picked, ap), 0);
	picked->pull_check = false;
	ASSERT_MEM_EQ(ap, picked->mirror, sizeof(ap));
	/* A later whole pull (pulled_version 0, no mirror: it was given
	 * back) is whole too. */
	gp_downlink_finish(&f.pool, m);
	m->pulled_version = 0;
	ASSERT_EQ(pull(&f, m, agent), 0);
	gp_members_remove(&f.pool, m);
	gp_members_remove(&f.pool, m8);
	gp_members_remove(&f.pool, picked);
	ASSERT_UINT_EQ(f.pool.mirror_bytes, 0);
	fx_teardown(&f);

	/* Not granted with the job's first_pull_changes off, nor without
	 * PARAM_DELTA. */
	fx_setup(&f, 3);
	f.job.param_bits = 4;
	f.job.first_pull_changes = false;
	m = fx_join(&f, 0, CAPS | GP_CAP_Q4_DELTA | GP_CAP_ZERO_MIRROR);
	ASSERT(!(m->caps & GP_CAP_ZERO_MIRROR));
	f.job.first_pull_changes = true;
	m = fx_join(&f, 1, (CAPS & ~(uint32_t)GP_CAP_PARAM_DELTA) |
				   GP_CAP_ZERO_MIRROR);
	ASSERT(!(m->caps & GP_CAP_ZERO_MIRROR));
	fx_teardown(&f);
}

/* All mirrors together stay within GP_DOWNLINK_MIRRORS_BYTES: a member
 * whose mirror would not fit gets whole f16 blocks on a slow link. */
static void test_budget(void)
{
	struct fixture f;
	struct gp_member *m;
	float agent[FX_N];

	fx_setup(&f, 3);
	m = fx_join(&f, 0, CAPS);
	for (int i = 0; i < 10; i++)
		link(&f, m, 20e6 / 8);
	f.pool.mirror_bytes = GP_DOWNLINK_MIRRORS_BYTES - FX_N * sizeof(float) + 1;
	drift(&f, 1.0);
	ASSERT_EQ(pull(&f, m, agent), 0);
	ASSERT(m->mirror == NULL);
	drift(&f, 0.1);
	ASSERT_EQ(pull(&f, m, agent), 0); /* f16 again */
	/* Room again (another member left): its next whole pull makes one. */
	f.pool.mirror_bytes = 0;
	m->pulled_version = 0;
	ASSERT_EQ(pull(&f, m, agent), 0);
	ASSERT_NOT_NULL(m->mirror);
	drift(&f, 0.1);
	ASSERT(pull(&f, m, agent) > 0);
	gp_members_remove(&f.pool, m);
	ASSERT_UINT_EQ(f.pool.mirror_bytes, 0);
	fx_teardown(&f);
}

/* The core on its own: over many rounds the sum of what was decoded is
 * the sum of what was meant less what is still owed, which stays one
 * rounding. */
static void test_core(uint8_t dtype)
{
	double steps = dtype == GP_DTYPE_Q4_DELTA ? 14 : 254;
	enum { N = 1000 };
	static float w[N], mirror[N], delta[N], sum_sent[N], start[N];

	memset(sum_sent, 0, sizeof(sum_sent));
	for (size_t i = 0; i < N; i++)
		w[i] = mirror[i] = start[i] = (float)uniform();
	for (int r = 0; r < 2000; r++) {
		float before[N];

		for (size_t i = 0; i < N; i++)
			w[i] += (float)(0.01 * uniform() * (i % 97 == 0 ? 30 : 1));
		memcpy(before, mirror, sizeof(before));
		/* Two blocks, chunks cut mid-block as on the wire. */
		gp_downlink_delta(w, mirror, delta, 700, dtype);
		gp_downlink_delta(w + 700, mirror + 700, delta + 700, 300,
				  dtype);
		for (size_t i = 0; i < N; i++)
			sum_sent[i] += mirror[i] - before[i];
	}
	for (size_t i = 0; i < N; i++) {
		ASSERT(fabs((double)mirror[i] - start[i] - sum_sent[i]) < 1e-3);
		/* Owed: at most one rounding of the last change (< 0.3 /
		 * 254, or / 14 in 4 bits, + float rounding of values near
		 * 1-30): after 2,000 rounds no more than after one. */
		ASSERT(fabs((double)w[i] - mirror[i]) < 0.3 / steps + 1e-4);
	}
}

int main(void)
{
	test_negotiation();
	test_negotiation_q4();
	test_rounds(8);
	test_rounds(4);
	test_budget();
	test_zero_mirror();
	test_core(GP_DTYPE_Q8_DELTA);
	test_core(GP_DTYPE_Q4_DELTA);
	printf("downlink: all tests passed\n");
	return 0;
}
