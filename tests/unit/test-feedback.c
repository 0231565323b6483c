/* Error feedback of quantised updates (agent/feedback.c), q8 and q4: over
 * many rounds the coordinator decodes, in sum, what the agent meant, less
 * the error still carried; the carried error stays within one rounding. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "feedback.h"
#include "msg.h"
#include "test.h"

#define N 1000   /* two blocks: 700 and 300 values, chunks cut mid-block */
#define ROUNDS 2000

static uint64_t rng = 0x9e3779b97f4a7c15ull;

/* Uniform in [-1, 1), from splitmix64. */
static double uniform(void)
{
	return test_uniform(&rng);
}

/* Encodes the block as an UPDATE's block of dtype and decodes it, as the
 * coordinator does. */
static void wire(const float *send, size_t n, uint8_t dtype, float *out)
{
	struct gp_msg_block b = { .count = (uint32_t)n, .dtype = dtype,
				  .values = send };
	struct gp_msg m, d;
	uint8_t *buf;
	size_t len;

	gp_msg_init(&m, GP_MSG_UPDATE);
	m.u.update.blocks = &b;
	m.u.update.n_blocks = 1;
	ASSERT_OK(gp_msg_encode_alloc(&m, &buf, &len));
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.update.blocks[0].dtype, dtype);
	ASSERT_EQ(d.u.update.blocks[0].raw_len, gp_msg_payload_size(dtype, n));
	ASSERT_OK(gp_msg_block_read(&d.u.update.blocks[0], out, n));
	gp_msg_finish(&d);
	free(buf);
}

/* top: the largest q of dtype (127 or 7). */
static void test_nothing_lost(uint8_t dtype, int top)
{
	static float v[N], got[N];
	static double meant[N], decoded[N];
	const size_t blocks[2][2] = { { 0, 700 }, { 700, 300 } };
	struct gp_feedback fb;
	double worst = 0, max_err = 0;

	memset(meant, 0, sizeof(meant));
	memset(decoded, 0, sizeof(decoded));
	ASSERT_OK(gp_feedback_init(&fb, N));
	for (int r = 0; r < ROUNDS; r++) {
		/* Values over many magnitudes, a few large ones per chunk,
		 * as gradients have: rounding them alone per chunk
		 * flushes the small ones to 0 round after round. */
		for (size_t i = 0; i < N; i++) {
			double mag = (i % 97 == 0) ? 1.0 : 1e-3 * (1 + (double)(i % 7));

			v[i] = (float)(mag * uniform());
			meant[i] += v[i];
		}
		for (size_t b = 0; b < 2; b++) {
			const float *send;

			ASSERT_OK(gp_feedback_block(&fb, blocks[b][0],
						    v + blocks[b][0],
						    blocks[b][1], dtype, &send));
			wire(send, blocks[b][1], dtype, got + blocks[b][0]);
		}
		for (size_t i = 0; i < N; i++)
			decoded[i] += got[i];
	}
	/* sum decoded + carried error == sum meant, within float rounding
	 * (each round's x = v + e and x - q(x) are rounded to float: about
	 * 2 * ROUNDS half-ulps of values below 1). */
	for (size_t i = 0; i < N; i++) {
		double diff = fabs(decoded[i] + fb.err[i] - meant[i]);

		if (diff > worst)
			worst = diff;
		if (fabs(fb.err[i]) > max_err)
			max_err = fabs(fb.err[i]);
	}
	printf("dtype %u: worst drift %.3g, largest carried error %.3g\n",
	       dtype, worst, max_err);
	ASSERT(worst < 2.0 * ROUNDS * 6e-8);
	/* The error carried is at most one rounding of a chunk (max 1 / top
	 * / 2), never an accumulation. */
	ASSERT(max_err <= 0.5 / top + 1e-6);
	/* Without feedback, the small values would be lost: their rounding
	 * to the chunk's grid is 0 (1e-3 against a step of 1 / top). */
	{
		float small[GP_MSG_Q8_CHUNK], q[GP_MSG_Q8_CHUNK];

		for (size_t i = 0; i < GP_MSG_Q8_CHUNK; i++)
			small[i] = i == 0 ? 1.0f : 1e-3f;
		if (dtype == GP_DTYPE_Q4)
			gp_msg_q4_round(small, q, GP_MSG_Q8_CHUNK);
		else
			gp_msg_q8_round(small, q, GP_MSG_Q8_CHUNK);
		ASSERT_NEAR(q[1], 0, 0);
		ASSERT_NEAR(q[0], 1.0, 1e-6);
	}
	/* What the agent did not yet send is what reset forgets. */
	gp_feedback_reset(&fb);
	for (size_t i = 0; i < N; i++)
		ASSERT_NEAR(fb.err[i], 0, 0);
	gp_feedback_finish(&fb);
	gp_feedback_finish(&fb);
}

static void test_bounds(void)
{
	struct gp_feedback fb;
	float v[4] = { 1, 2, 3, 4 };
	const float *send = NULL;

	ASSERT_OK(gp_feedback_init(&fb, 4));
	ASSERT_EQ(gp_feedback_block(&fb, 2, v, 3, GP_DTYPE_Q8, &send), -EINVAL);
	ASSERT_EQ(gp_feedback_block(&fb, 5, v, 0, GP_DTYPE_Q8, &send), -EINVAL);
	ASSERT_EQ(gp_feedback_block(&fb, 0, v, 4, GP_DTYPE_F16, &send), -EINVAL);
	ASSERT_OK(gp_feedback_block(&fb, 0, v, 4, GP_DTYPE_Q4, &send));
	ASSERT(send == fb.send);
	ASSERT_OK(gp_feedback_block(&fb, 0, v, 4, GP_DTYPE_Q8, &send));
	ASSERT(send == fb.send);
	ASSERT(gp_feedback_finite(v, 4));
	v[2] = NAN;
	ASSERT(!gp_feedback_finite(v, 4));
	v[2] = -INFINITY;
	ASSERT(!gp_feedback_finite(v, 4));
	gp_feedback_finish(&fb);
	ASSERT_OK(gp_feedback_init(&fb, 0));
	gp_feedback_finish(&fb);
}

/* An agent's updates switch between one minibatch's gradient (H values:
 * a momentum's increment) and a group's sums (A, the same kind, then B):
 * the state grows from H to 2H keeping what A's values carry
 * (agent/machine.c quantise()), so each stream loses nothing across the
 * switches. Before 2026-12-07 every switch dropped the error. */
static void test_forms_mixed(void)
{
	enum { H = 500 };
	static float v[2 * H], got[2 * H];
	static double meant[2 * H], decoded[2 * H];
	struct gp_feedback fb = { 0 };
	double worst = 0;
	int groups = 0;

	memset(meant, 0, sizeof(meant));
	memset(decoded, 0, sizeof(decoded));
	for (int r = 0; r < ROUNDS; r++) {
		/* The first a gradient: the growth to 2H keeps its error. */
		size_t n = r == 0 || uniform() < 0 ? H : 2 * H;
		const float *send;

		ASSERT_OK(gp_feedback_grow(&fb, n));
		ASSERT(fb.n >= n);
		groups += n == 2 * H;
		for (size_t i = 0; i < n; i++) {
			v[i] = (float)((i % 89 == 0 ? 1.0 : 2e-3) * uniform());
			meant[i] += v[i];
		}
		ASSERT_OK(gp_feedback_block(&fb, 0, v, n, GP_DTYPE_Q8, &send));
		wire(send, n, GP_DTYPE_Q8, got);
		for (size_t i = 0; i < n; i++)
			decoded[i] += got[i];
	}
	ASSERT_EQ(fb.n, 2 * H);
	for (size_t i = 0; i < 2 * H; i++) {
		double diff = fabs(decoded[i] + fb.err[i] - meant[i]);

		worst = diff > worst ? diff : worst;
	}
	printf("mixed forms (%d groups of %d rounds): worst drift %.3g\n",
	       groups, ROUNDS, worst);
	ASSERT(groups > ROUNDS / 4 && groups < 3 * ROUNDS / 4);
	ASSERT(worst < 2.0 * ROUNDS * 6e-8);
	/* Growing keeps the error of the values there, the new ones carry
	 * none, and a smaller size is a no-op. */
	{
		struct gp_feedback g;
		const float *send;
		float one[3] = { 1.0f, 1e-3f, 1e-3f }, kept;

		ASSERT_OK(gp_feedback_init(&g, 3));
		ASSERT_OK(gp_feedback_block(&g, 0, one, 3, GP_DTYPE_Q8, &send));
		kept = g.err[1];
		ASSERT(kept != 0);

		ASSERT_OK(gp_feedback_grow(&g, 2));
		ASSERT_EQ(g.n, 3);
		ASSERT_OK(gp_feedback_grow(&g, 1000));
		ASSERT_EQ(g.n, 1000);
		ASSERT_NEAR(g.err[1], kept, 0);
		for (size_t i = 3; i < 1000; i++)
			ASSERT_NEAR(g.err[i], 0, 0);
		gp_feedback_finish(&g);
	}
	gp_feedback_finish(&fb);
}

int main(void)
{
	test_nothing_lost(GP_DTYPE_Q8, 127);
	test_nothing_lost(GP_DTYPE_Q4, 7);
	test_bounds();
	test_forms_mixed();
	return 0;
}
