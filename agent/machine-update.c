/* What the agent sends up: a worker's result as an UPDATE, its blocks
 * quantised with error feedback (GP_CAP_Q8, GP_CAP_Q4; docs/protocol.md
 * "Error feedback"). Split from machine.c, which calls it through
 * machine-impl.h. */
#include "machine.h"
#include "machine-impl.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "log.h"
#include "util.h"

/* With GP_CAP_Q8, turns the n_blocks blocks of res (n_values values in
 * all) into GP_DTYPE_Q8 blocks (GP_DTYPE_Q4 with GP_CAP_Q4 too) of the
 * values plus the error carried from earlier updates (agent/feedback.h).
 * An update with a non-finite value, or no memory for the feedback, goes
 * as it is (f16), so that the coordinator sees what it holds. */
static void quantise(struct gp_machine *m, struct gp_msg_block *blocks,
		     size_t n_blocks, size_t n_values,
		     const struct gp_worker_result *res)
{
	uint8_t dtype = (m->caps & GP_CAP_Q4) ? GP_DTYPE_Q4 : GP_DTYPE_Q8;
	size_t off = 0;

	if (!(m->caps & GP_CAP_Q8) ||
	    !gp_feedback_finite(res->grads, res->n_grads) ||
	    (res->sums_b && !gp_feedback_finite(res->sums_b, res->n_grads)))
		return;
	/* Another model (a new job) or another kind of value: what is
	 * carried is owed to nothing now. A group's sums after gradients
	 * (or the other way) keep it (machine.h). */
	if (m->feedback.n &&
	    (m->feedback_values != res->n_grads ||
	     m->feedback_delta != res->delta))
		gp_feedback_finish(&m->feedback);
	if (gp_feedback_grow(&m->feedback, n_values) < 0)
		return;
	if (m->feedback_group && !res->sums_b && !res->delta)
		for (size_t i = 0; i < res->n_grads; i++)
			m->feedback.err[i] *= m->momentum;
	m->feedback_values = res->n_grads;
	m->feedback_delta = res->delta;
	m->feedback_group = res->sums_b != NULL;
	for (size_t i = 0; i < n_blocks; i++) {
		const float *send;

		if (gp_feedback_block(&m->feedback, off, blocks[i].values,
				      blocks[i].count, dtype, &send) < 0)
			return; /* cannot happen: the blocks fill n_values */
		blocks[i].values = send;
		blocks[i].dtype = dtype;
		off += blocks[i].count;
	}
}

/* res's values as whole tensors into blocks (BLOCKS_MAX), as an UPDATE
 * and a VERIFY_RESULT carry them: grads as tensors 0..n-1, then a group's
 * second sum, sums_b (a delta has none), tensor by tensor, numbered
 * 0..n-1 again in an UPDATE and n..2n-1 in a VERIFY_RESULT (b_apart);
 * f16 when the session takes it, else f32. Returns the number of blocks;
 * *ret_values gets the values they hold in all. */
size_t gp_machine_tensor_blocks(struct gp_machine *m,
			    const struct gp_worker_result *res, bool b_apart,
			    struct gp_msg_block *blocks, size_t *ret_values)
{
	size_t n = m->ops->worker_tensor_count(m->ctx), off = 0;

	assert(n <= TENSORS_MAX);
	for (size_t i = 0; i < n; i++) {
		const struct gp_tensor_info *ti = m->ops->worker_tensor(m->ctx, i);

		blocks[i] = (struct gp_msg_block){
			.tensor = (uint32_t)i,
			.row_start = 0,
			.rows = (uint32_t)ti->rows,
			.count = (uint32_t)(ti->rows * ti->cols),
			.dtype = (m->caps & GP_CAP_F16) ? GP_DTYPE_F16 : GP_DTYPE_F32,
			.values = res->grads + off,
		};
		if (res->sums_b) {
			blocks[n + i] = blocks[i];
			blocks[n + i].tensor = (uint32_t)(b_apart ? n + i : i);
			blocks[n + i].values = res->sums_b + off;
		}
		off += ti->rows * ti->cols;
	}
	*ret_values = res->sums_b ? 2 * off : off;
	return res->sums_b ? 2 * n : n;
}

/* UPDATE.held_us for res: the time since its run's first minibatch came,
 * at least its compute_us; 0 when the machine did not note that
 * minibatch (a run that began while the worker held others, form 0) or
 * no longer has it. The newest entry wins: a minibatch handed out again
 * comes again. */
_Static_assert((GP_MACHINE_ARRIVALS & (GP_MACHINE_ARRIVALS - 1)) == 0,
	       "the arrivals ring wraps with size_t");

static uint64_t held_us(const struct gp_machine *m,
			const struct gp_worker_result *res)
{
	uint64_t now = gp_mono_us();

	for (size_t i = 1; i <= GP_MACHINE_ARRIVALS; i++) {
		const struct gp_machine_arrival *a =
			&m->arrivals[(m->arrival_next - i) % GP_MACHINE_ARRIVALS];

		if (a->at_us && a->epoch == res->epoch &&
		    a->minibatch == res->minibatch)
			return now - a->at_us > res->compute_us ?
				       now - a->at_us : res->compute_us;
	}
	return 0;
}

/* Sends res as an UPDATE. Returns 0 when it went out, or a negative errno
 * (-ENOTCONN: disconnected; -ENOMEM). */
int gp_machine_send_update(struct gp_machine *m,
			   const struct gp_worker_result *res)
{
	struct gp_msg_block blocks[BLOCKS_MAX];
	size_t values;
	uint8_t *items = NULL;
	struct gp_msg msg;
	int r;

	gp_msg_init(&msg, GP_MSG_UPDATE);
	msg.u.update.epoch = res->epoch;
	msg.u.update.minibatch = res->minibatch;
	msg.u.update.clock = res->clock;
	msg.u.update.samples = res->samples;
	msg.u.update.loss = (float)res->loss;
	msg.u.update.grad_norm = (float)res->grad_norm;
	msg.u.update.compute_us = res->compute_us;
	msg.u.update.blocks = blocks;
	msg.u.update.n_blocks = gp_machine_tensor_blocks(m, res, false, blocks,
							 &values);
	quantise(m, blocks, msg.u.update.n_blocks, values, res);
	if (res->n_items) {
		items = malloc(res->n_items * GP_MSG_ITEM_SIZE);
		if (!items) {
			gp_error("no memory for an update of %zu minibatches",
				 res->n_items);
			return -ENOMEM;
		}
		for (size_t i = 0; i < res->n_items; i++)
			gp_msg_update_item_put(items, i, res->items[i].epoch,
					       res->items[i].minibatch,
					       res->items[i].loss);
		msg.u.update.form = res->delta ? GP_UPDATE_DELTA :
						 GP_UPDATE_SUMS;
		msg.u.update.items = items;
		msg.u.update.items_len = res->n_items * GP_MSG_ITEM_SIZE;
	}
	/* Its quantisation done: what is left, encoding and sealing, the
	 * coordinator counts as the link's. */
	msg.u.update.held_us = held_us(m, res);
	r = gp_machine_send(m, &msg);
	free(items);
	/* GP_CAP_OVERLAP: which run this UPDATE answers, for the pulls
	 * that will say they hold it. */
	if (r == 0) {
		m->updates_sent++;
		m->sent_runs[m->updates_sent % GP_MACHINE_SENT_RUNS] = res->run;
	}
	return r;
}
