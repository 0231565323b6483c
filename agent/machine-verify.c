/* Checks of other members' updates (GP_CAP_VERIFY, docs/protocol.md
 * "18 VERIFY_TASK"): a task from the coordinator checked against the
 * model and handed to the worker, and its answer sent back. Split from
 * machine.c, whose helpers it uses through machine-impl.h. */
#include "machine.h"
#include "machine-impl.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "gp-endian.h"
#include "log.h"

/* Whether the agent can check other members' updates (GP_CAP_VERIFY):
 * a task names its samples by index into the image set in hand
 * (gp_recompute() gathers no language model's windows), and the
 * coordinator grants it only with LOCAL_DATA. */
bool gp_machine_can_verify(const struct gp_machine *m)
{
	return m->data && m->window == 0 && m->ops->worker_verify;
}

/* Answers VERIFY_TASK `task` without the update (GP_VERIFY_DECLINED). */
static void decline_verify(struct gp_machine *m, uint64_t task)
{
	struct gp_msg msg;

	gp_msg_init(&msg, GP_MSG_VERIFY_RESULT);
	msg.u.verify_result.task = task;
	msg.u.verify_result.status = GP_VERIFY_DECLINED;
	gp_machine_send(m, &msg);
}

/* Whether a VERIFY_TASK (t, borrowed) is one this session can have been
 * sent: granted, and its blocks whole tensors of the model, each once
 * (tensor i the parameters, nt + i the momentum of a group's sums;
 * offsets[i] where tensor i starts in the flat arrays, total *ret_n),
 * each item's samples within the job's batch. Returns NULL, or why not
 * (for the log; the session is then dropped). */
static const char *verify_task_fits(struct gp_machine *m,
				    const struct gp_msg_verify_task *t,
				    size_t nt, size_t *offsets, size_t *ret_n)
{
	bool sums = t->form == GP_UPDATE_SUMS;
	size_t k = t->items_len / GP_MSG_VERIFY_ITEM_SIZE, n = 0;
	bool seen[BLOCKS_MAX] = { false };

	if (!m->welcomed || m->idle || !(m->caps & GP_CAP_VERIFY) ||
	    !(m->caps & GP_CAP_LOCAL_DATA) || !gp_machine_can_verify(m))
		return "not granted in this session";
	assert(nt <= TENSORS_MAX);
	for (size_t i = 0; i < nt; i++) {
		const struct gp_tensor_info *ti = m->ops->worker_tensor(m->ctx, i);

		offsets[i] = n;
		n += ti->rows * ti->cols;
	}
	if (t->n_blocks != (sums ? 2 : 1) * nt)
		return "not one block a tensor";
	for (size_t i = 0; i < t->n_blocks; i++) {
		const struct gp_msg_block *b = &t->blocks[i];
		const struct gp_tensor_info *ti;

		if (b->tensor >= t->n_blocks || seen[b->tensor])
			return "a tensor missing or given twice";
		seen[b->tensor] = true;
		ti = m->ops->worker_tensor(m->ctx, b->tensor % nt);
		if (b->row_start != 0 || (b->rows && b->rows != ti->rows) ||
		    (uint64_t)ti->rows * ti->cols != b->count)
			return "a block that is not a whole tensor";
	}
	for (size_t j = 0; j < k; j++) {
		uint32_t epoch, samples;
		uint64_t mb;
		float lr;

		gp_msg_verify_item(t, j, &epoch, &mb, &lr, &samples);
		if (samples > m->batch)
			return "a minibatch larger than the job's batch";
	}
	*ret_n = n;
	return NULL;
}

/* The task's items with their sample indices, and its parameters (and
 * momentum) in tensor order, into v (whose arrays the caller frees).
 * Returns 0, -ENOMEM, -ERANGE for a sample beyond the local data set,
 * -EDOM for a rate outside what gp_worker_compute() takes (a member
 * computed that minibatch without its rate: not what is asked),
 * -EBADMSG for a block that does not read. */
static int verify_task_read(struct gp_machine *m,
			    const struct gp_msg_verify_task *t, size_t nt,
			    const size_t *offsets, size_t n,
			    struct gp_worker_verify *v)
{
	size_t n_idx = t->indices_len / 4, at = 0;

	v->items = calloc(v->k, sizeof(*v->items));
	v->idx = malloc(n_idx * sizeof(*v->idx));
	v->w0 = malloc(n * sizeof(float));
	if (v->sums)
		v->v0 = malloc(n * sizeof(float));
	if (!v->items || !v->idx || !v->w0 || (v->sums && !v->v0))
		return -ENOMEM;
	for (size_t i = 0; i < n_idx; i++) {
		v->idx[i] = gp_get_le32(t->indices + 4 * i);
		if (v->idx[i] >= m->data->count)
			return -ERANGE;
	}
	/* The decoder checked that the indices are the items' samples. */
	for (size_t j = 0; j < v->k; j++) {
		struct gp_recompute_item *it = &v->items[j];

		gp_msg_verify_item(t, j, &it->epoch, &it->minibatch, &it->lr,
				   &it->samples);
		if (!(it->lr >= 0 && it->lr <= 10))
			return -EDOM;
		it->idx = v->idx + at;
		at += it->samples;
	}
	for (size_t i = 0; i < t->n_blocks; i++) {
		const struct gp_msg_block *b = &t->blocks[i];
		float *dst = b->tensor < nt ? v->w0 : v->v0;

		if (gp_msg_block_read(b, dst + offsets[b->tensor % nt],
				      b->count) < 0)
			return -EBADMSG;
	}
	return 0;
}

/* VERIFY_TASK: another member's update to recompute, handed to the
 * worker (its answer comes to gp_machine_verify_result()). A task the session did
 * not grant or that does not fit the model drops the session; one this
 * agent cannot do (paused, a sample it lacks, a rate its own worker
 * would not take, no memory) is declined. */
void gp_machine_verify_task(struct gp_machine *m,
			    const struct gp_msg_verify_task *t)
{
	size_t nt = m->ops->worker_tensor_count(m->ctx), n = 0;
	size_t offsets[TENSORS_MAX];
	struct gp_worker_verify v = {
		.task = t->task,
		.sums = t->form == GP_UPDATE_SUMS,
		.mu = t->momentum,
		.k = t->items_len / GP_MSG_VERIFY_ITEM_SIZE,
		.data = m->data,
	};
	const char *why = verify_task_fits(m, t, nt, offsets, &n);
	int r;

	if (why) {
		gp_machine_drop_session(m, GP_BYE_PROTOCOL,
					"verification task %" PRIu64 ": %s",
					t->task, why);
		return;
	}
	if (gp_machine_paused(m)) {
		gp_debug("declined verification task %" PRIu64 ": paused",
			 t->task);
		decline_verify(m, t->task);
		return;
	}
	r = verify_task_read(m, t, nt, offsets, n, &v);
	if (r >= 0) {
		r = m->ops->worker_verify(m->ctx, &v); /* takes the arrays */
	} else {
		gp_worker_verify_free(&v);
		if (r == -EBADMSG) {
			gp_machine_drop_session(m, GP_BYE_PROTOCOL,
						"verification task %" PRIu64
						": a block that does not read",
						t->task);
			return;
		}
	}
	if (r < 0) {
		gp_warn("verification task %" PRIu64 " declined: %s", t->task,
			r == -ERANGE ? "a sample beyond the local data set" :
			r == -EDOM ? "a rate that no member's worker takes" :
			strerror(-r));
		decline_verify(m, t->task);
		return;
	}
	gp_debug("verification task %" PRIu64 ": %zu minibatch(es) queued",
		 t->task, v.k);
}

/* A verification's answer (gp_worker_result.verify): the recomputed
 * update as VERIFY_RESULT, whole tensors in f16 or f32, never quantised
 * (what is compared must be what was computed); declined when it could
 * not be computed. Not training work: no minibatch answered, no
 * contribution counted. */
void gp_machine_verify_result(struct gp_machine *m,
			      const struct gp_worker_result *res)
{
	struct gp_msg_block blocks[BLOCKS_MAX];
	struct gp_msg msg;
	size_t values;

	if (res->gen != m->ops->worker_generation(m->ctx)) {
		gp_debug("dropped the answer to verification task %" PRIu64
			 " of an earlier connection", res->task);
		return;
	}
	gp_msg_init(&msg, GP_MSG_VERIFY_RESULT);
	msg.u.verify_result.task = res->task;
	msg.u.verify_result.compute_us = res->compute_us;
	if (res->error < 0) {
		gp_warn("verification task %" PRIu64 " not computed (%s): "
			"declined", res->task, strerror(-res->error));
		msg.u.verify_result.status = GP_VERIFY_DECLINED;
	} else {
		msg.u.verify_result.status = GP_VERIFY_COMPUTED;
		msg.u.verify_result.blocks = blocks;
		msg.u.verify_result.n_blocks =
			gp_machine_tensor_blocks(m, res, true, blocks, &values);
	}
	if (gp_machine_send(m, &msg) < 0) {
		gp_debug("answer to verification task %" PRIu64 " not sent "
			 "(disconnected)", res->task);
		return;
	}
	if (res->error < 0)
		return;
	m->verifications++;
	gp_debug("verification task %" PRIu64 " answered after %.1f ms of "
		 "computing (%" PRIu64 " so far)", res->task,
		 (double)res->compute_us / 1e3, m->verifications);
}
