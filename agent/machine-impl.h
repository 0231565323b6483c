/* What machine.c shares with machine-verify.c and machine-update.c:
 * internal to the agent's state machine. */
#ifndef GP_AGENT_MACHINE_IMPL_H
#define GP_AGENT_MACHINE_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "machine.h"

/* Most tensors of a model (kernels/model.c), and most blocks of an UPDATE
 * or VERIFY_RESULT (two sums a tensor) or of a VERIFY_TASK (parameters and
 * momentum). */
#define TENSORS_MAX (2 * GP_MODEL_MAX_NODES)
#define BLOCKS_MAX (2 * TENSORS_MAX)

/* Sends msg (borrowed) on the connection: 0, or -ENOTCONN when there is
 * none, or the op's negative errno. */
int gp_machine_send(struct gp_machine *m, struct gp_msg *msg);

/* Ends the session because of work this agent could not do or a message
 * it cannot have been sent: the coordinator hands its work out again
 * (machine.c has why). The text is logged and sent as the close text. */
void gp_machine_drop_session(struct gp_machine *m, uint16_t code,
			     const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* res's values as whole tensors into blocks (BLOCKS_MAX), as an UPDATE
 * and a VERIFY_RESULT carry them; b_apart: a second sum numbered n..2n-1
 * (VERIFY_RESULT) instead of 0..n-1 (UPDATE). Returns the number of
 * blocks; *ret_values gets the values they hold in all. */
size_t gp_machine_tensor_blocks(struct gp_machine *m,
				const struct gp_worker_result *res,
				bool b_apart, struct gp_msg_block *blocks,
				size_t *ret_values);

/* machine-update.c: sends res as an UPDATE, quantised with error
 * feedback where the session takes q8. Returns 0 when it went out, or a
 * negative errno (-ENOTCONN: disconnected; -ENOMEM). */
int gp_machine_send_update(struct gp_machine *m,
			   const struct gp_worker_result *res);

/* machine-verify.c */
bool gp_machine_can_verify(const struct gp_machine *m);
void gp_machine_verify_task(struct gp_machine *m,
			    const struct gp_msg_verify_task *t);
void gp_machine_verify_result(struct gp_machine *m,
			      const struct gp_worker_result *res);

#endif
