/* Error feedback for quantised updates.
 *
 * An update sent as GP_DTYPE_Q8 or GP_DTYPE_Q4 (proto/msg.h) reaches the
 * coordinator as slightly different values. The agent keeps the
 * difference, what it meant minus what the coordinator decodes, and adds
 * it to its next update, so nothing is lost over the rounds: after any
 * number of updates, the sum of what the coordinator decoded equals the
 * sum of what the agent meant minus the error still carried (one update's
 * rounding at most), within float rounding (tests/unit/test-feedback.c).
 *
 * The state is n floats laid out like the update's values (an update of
 * form GP_UPDATE_SUMS: both sums, one after the other). Not thread-safe:
 * the agent's loop thread owns it. */
#ifndef GP_AGENT_FEEDBACK_H
#define GP_AGENT_FEEDBACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gp_feedback {
	float *err;     /* carried error, n floats */
	float *send;    /* the values of the update being encoded, n floats */
	size_t n;
};

/* Sets fb up for updates of n values with no error carried. fb is the
 * caller's storage. Returns 0 or -ENOMEM (fb is then empty; finish is
 * still safe). */
int gp_feedback_init(struct gp_feedback *fb, size_t n);

/* Makes room for n values, keeping the error carried for the first fb->n
 * (the new ones carry none); a no-op when fb already holds n or more. An
 * empty fb is set up as by init. Returns 0 or -ENOMEM (fb is then as it
 * was). */
int gp_feedback_grow(struct gp_feedback *fb, size_t n);

/* Frees what init allocated and empties fb; a no-op on an empty fb. */
void gp_feedback_finish(struct gp_feedback *fb);

/* Forgets the carried error (a new session: its parameters are the
 * coordinator's again). */
void gp_feedback_reset(struct gp_feedback *fb);

/* True when v[0..n) holds no NaN or infinity: only then may an update be
 * quantised (Q8 cannot carry them, and the coordinator must see them to
 * refuse the update). */
bool gp_feedback_finite(const float *v, size_t n);

/* One block of an update: values v[0..count) (borrowed) meant for
 * positions off..off + count of the state, to be sent as dtype
 * (GP_DTYPE_Q8 or GP_DTYPE_Q4). Adds the carried error, keeps what a
 * block of that dtype of the result loses (gp_msg_q8_round,
 * gp_msg_q4_round) as the new error, and returns the values to encode as
 * that block in *ret_send (borrowed from fb, valid until the next call
 * for the same positions). Returns 0, or -EINVAL when the block is
 * outside the state or dtype is neither. */
int gp_feedback_block(struct gp_feedback *fb, size_t off, const float *v,
		      size_t count, uint8_t dtype, const float **ret_send);

#endif
