/* Checks handed to other members (docs/security.md "Checks by other
 * members"). A check the coordinator would recompute on its own CPU goes,
 * when a member can take it, to a member drawn at random that offered
 * GP_CAP_VERIFY: VERIFY_TASK carries what the checked member was sent (the
 * parameters and momentum of its picked pull) and its group's minibatches,
 * and the checker answers with VERIFY_RESULT, the update it computed. The
 * coordinator compares the two sums as it compares its own recomputation:
 *
 *   - they agree: the update is verified, and a fraction verify_audit of
 *     such checks is recomputed by the coordinator too (a checker that
 *     passes its partner's wrong updates is found there);
 *   - they disagree, or the checker declines, leaves or is late: the
 *     coordinator recomputes the update itself and its result decides;
 *     a checker whose answer differs from it has a mismatch of its own.
 *
 * So a checker can neither frame an honest member (a disagreement is
 * always settled by the coordinator) nor clear a cheating one except
 * where it is not audited, and the coordinator's CPU goes to the audits
 * and the disagreements instead of every check. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gp-endian.h"
#include "log.h"
#include "members.h"
#include "params.h"
#include "pool.h"
#include "scheduler.h"
#include "ssp.h"
#include "util.h"
#include "verify-impl.h"

/* A checker's answer is waited for this long; then the coordinator
 * recomputes the update itself. The checker runs the task after the work
 * it holds (a clock of its own at most). It is not drawn again until its
 * late answer comes: a slow member is not sent task after task. */
#define TIMEOUT_MS 30000
/* A member that declined a task (paused, busy, out of memory) is not
 * drawn for this long. */
#define REST_MS 30000
/* Members looked at to draw a checker from (a walk's next ones). */
#define PROBE 64
/* Checks out with members at once, and the bytes they hold (the copies
 * sent, the update, the answer: about 24 bytes a parameter each); beyond
 * either, the coordinator's own. */
#define MAX_OUT 64
/* A check that finds no free checker (each holds another check, or has a
 * parameter send queued: brief states) waits this long for one before
 * the coordinator recomputes it: in a small pool the few qualified
 * checkers are often busy for a moment, and recomputing here is what
 * the checks by members are there to save. */
#define WAIT_MS 1500
#define MAX_OUT_BYTES (UINT64_C(128) << 20)
/* A checker whose measured link would take longer than this to move the
 * task and its answer is not drawn (nor one whose link is not measured
 * yet): the check would cost a slow volunteer's link what the
 * coordinator's CPU saves. For the MLP's 2.35 MB that leaves out links
 * under about 40 Mbit/s, so the pools of tools/bench-wan at 20 and 5
 * Mbit/s move no task (their bytes per sample are issue 11's). On
 * 127.0.0.1 with the agents sharing two cores a link can measure as
 * slow as that (its wait includes waiting for a core): at 0.25 s
 * tools/bench-attack left a third more checks to the coordinator. */
#define LINK_S 0.5
/* Nor is a task this large sent: on top of what the checker's
 * connection may hold queued (its write queue is 32 MiB) it could close
 * it. The coordinator checks such models itself. */
#define TASK_MAX_BYTES (UINT64_C(16) << 20)
/* The answer agrees with the checked member's sums within the wire's
 * rounding, the answer's own and half of verify_tolerance: a colluding
 * checker can shift its answer toward a cheat by at most that much
 * without being caught at an audit, so a cheat cleared by it is still
 * within 1.5 tolerances of the truth, not 2. Two honest members further
 * apart only cost a recomputation here. */
#define AGREE_SHARE 0.5

static size_t tensor_count(const struct gp_verify *v)
{
	return gp_params_tensor_count(v->pool->params);
}

/* The dtypes of c's task for checker d: the copies hold what the
 * checked member decoded, so its f16 parameters are exact in f16; a
 * momentum that went as q8 is not. */
static uint8_t w_dtype(const struct check *c, const struct gp_member *d)
{
	return (d->caps & GP_CAP_F16) && (c->caps & GP_CAP_F16) ?
		       GP_DTYPE_F16 : GP_DTYPE_F32;
}

static uint8_t v_dtype(const struct check *c, const struct gp_member *d)
{
	return w_dtype(c, d) == GP_DTYPE_F16 && !(c->caps & GP_CAP_Q8) ?
		       GP_DTYPE_F16 : GP_DTYPE_F32;
}

/* Bytes of c's task (its parameters, momentum) and the answer (f16 from
 * a checker that has it) for checker d. */
static double task_bytes(const struct gp_verify *v, const struct check *c,
			 const struct gp_member *d, double *ret_task)
{
	double n = (double)v->pool->n_params;
	double task = n * (w_dtype(c, d) == GP_DTYPE_F16 ? 2 : 4);
	double answer = n * ((d->caps & GP_CAP_F16) ? 2 : 4);

	if (c->sums) {
		task += n * (v_dtype(c, d) == GP_DTYPE_F16 ? 2 : 4);
		answer *= 2;
	}
	*ret_task = task;
	return task + answer;
}

/* Whether the member of agent_id had an update verified on its present
 * connection since its last mismatch. */
static bool trusted(const struct gp_pool *pool, int64_t agent_id)
{
	const struct gp_member *m = gp_members_find(pool, (uint64_t)agent_id);

	return m && m->verify.verified > 0;
}

static bool can_check(struct gp_verify *v, const struct check *c,
		      struct gp_member *d)
{
	struct gp_pool *pool = v->pool;
	struct gp_ssp_agent_info info;
	double task, bytes;

	/* Not one that would decline it (paused), nor one with a parameter
	 * send still queued on its connection. */
	if (!d->joined || d->agent_id == c->agent_id ||
	    !(d->caps & GP_CAP_VERIFY) || (d->caps & GP_CAP_INNER_ADAMW) ||
	    d->verify.task || d->paused || d->pull_bytes ||
	    d->verify.rest_until_ms > gp_now_ms() ||
	    !pool->fx->can_send(pool->fx_data, d))
		return false;
	if (v->suspects && gp_verify_suspect(v, d->agent_id))
		return false;
	/* A member whose own work never verified (a cheat's never does) is
	 * checked only by one whose work did: two that cheat together would
	 * pass each other's checks (the audit catches a tenth of those). */
	if (!d->verify.verified && !trusted(pool, c->agent_id))
		return false;
	bytes = task_bytes(v, c, d, &task);
	return task <= (double)TASK_MAX_BYTES &&
	       gp_ssp_get(pool->ssp, (uint64_t)d->agent_id, &info) == 0 &&
	       info.link_bps > 0 && bytes / info.link_bps <= LINK_S;
}

/* A checker drawn at random among the next PROBE members of the walk. */
static struct gp_member *draw_checker(struct gp_verify *v,
				      const struct check *c)
{
	struct gp_pool *pool = v->pool;
	uint32_t n = pool->n_members < PROBE ? pool->n_members : PROBE;
	struct gp_member *pick = NULL;
	uint32_t seen = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct gp_member *d = gp_members_step(pool, GP_WALK_VERIFY);

		if (!d)
			break;
		if (!can_check(v, c, d))
			continue;
		/* Reservoir sampling: each eligible one with 1 / seen. */
		if (gp_verify_draw(&v->rng, 1.0 / ++seen))
			pick = d;
	}
	return pick;
}

/* Fills blocks[at..at + tensors) with x's tensors, whole, as dtype. */
static void put_blocks(const struct gp_verify *v, struct gp_msg_block *blocks,
		       size_t at, uint32_t tensor0, const float *x,
		       uint8_t dtype)
{
	for (size_t i = 0; i < tensor_count(v); i++) {
		struct gp_tensor_shape sh;
		size_t off = 0;

		gp_params_tensor(v->pool->params, i, &sh, &off);
		blocks[at + i] = (struct gp_msg_block){
			.tensor = tensor0 + (uint32_t)i,
			.rows = sh.rows,
			.count = sh.rows * sh.cols,
			.dtype = dtype,
			.values = x + off,
		};
	}
}

static int send_task(struct gp_verify *v, struct check *c,
		     struct gp_member *d)
{
	struct gp_pool *pool = v->pool;
	uint32_t per = gp_sched_minibatches(pool->sched);
	size_t nt = tensor_count(v), total = 0;
	struct gp_msg_block *blocks;
	uint8_t *items, *idx;
	struct gp_msg msg;
	int r;

	for (uint32_t j = 0; j < c->k; j++)
		total += c->n_samples[j];
	blocks = calloc(2 * nt, sizeof(*blocks));
	items = malloc((size_t)c->k * GP_MSG_VERIFY_ITEM_SIZE);
	idx = malloc(total * 4 + 1);
	if (!blocks || !items || !idx) {
		r = -ENOMEM;
		goto out;
	}
	for (uint32_t j = 0; j < c->k; j++)
		gp_msg_verify_item_put(items, j, (uint32_t)(c->ids[j] / per),
				       c->ids[j] % per, c->lrs[j],
				       c->n_samples[j]);
	for (size_t i = 0; i < total; i++)
		gp_put_le32(idx + 4 * i, c->idx[i]);
	put_blocks(v, blocks, 0, 0, c->w0, w_dtype(c, d));
	if (c->sums)
		put_blocks(v, blocks, nt, (uint32_t)nt, c->v0, v_dtype(c, d));
	gp_msg_init(&msg, GP_MSG_VERIFY_TASK);
	msg.u.verify_task.task = c->task;
	msg.u.verify_task.form = c->sums ? GP_UPDATE_SUMS : GP_UPDATE_GRADIENT;
	msg.u.verify_task.momentum = c->mu;
	msg.u.verify_task.items = items;
	msg.u.verify_task.items_len = (size_t)c->k * GP_MSG_VERIFY_ITEM_SIZE;
	msg.u.verify_task.indices = idx;
	msg.u.verify_task.indices_len = total * 4;
	msg.u.verify_task.blocks = blocks;
	msg.u.verify_task.n_blocks = c->sums ? 2 * nt : nt;
	r = pool->fx->send_verify(pool->fx_data, d, &msg);
out:
	free(blocks);
	free(items);
	free(idx);
	return r;
}

/* Whether `out` checks held outside the coordinator's queue, and one
 * more, stay within MAX_OUT and MAX_OUT_BYTES. */
static bool room_out(const struct gp_verify *v, size_t out)
{
	return out < MAX_OUT &&
	       (out + 1) * 24 * (uint64_t)v->pool->n_params <= MAX_OUT_BYTES;
}

bool gp_verify_delegate(struct gp_verify *v, struct check *c)
{
	struct gp_pool *pool = v->pool;
	struct gp_member *d;

	if (!pool->job->verify_delegate || !pool->fx->send_verify ||
	    !room_out(v, v->n_delegated))
		return false;
	/* A suspect's verdict (and its ban) is the coordinator's at once. */
	if (v->suspects && gp_verify_suspect(v, c->agent_id))
		return false;
	d = draw_checker(v, c);
	if (!d)
		return false;
	{
		int64_t deadline = c->deadline_ms;

		c->task = ++v->next_task;
		c->delegate_id = d->agent_id;
		c->deadline_ms = gp_now_ms() + TIMEOUT_MS;
		if (send_task(v, c, d) < 0) {
			/* A waiting check keeps its wait's end. */
			c->task = 0;
			c->delegate_id = 0;
			c->deadline_ms = deadline;
			return false;
		}
	}
	d->verify.task = c->task;
	c->next = NULL;
	{
		struct check **pp = &v->delegated;

		while (*pp)
			pp = &(*pp)->next;
		*pp = c;
	}
	v->n_delegated++;
	v->st.delegated++;
	return true;
}

bool gp_verify_wait(struct gp_verify *v, struct check *c)
{
	struct gp_pool *pool = v->pool;
	struct check **pp = &v->waiting;

	/* Only while a member that could take it exists (qualified counts
	 * members granted GP_CAP_VERIFY), within the bounds of the checks
	 * out (the waiting ones hold as much), and for a task small enough
	 * for some member (the smallest encoding, f16 both ways). */
	if (!pool->job->verify_delegate || !pool->fx->send_verify ||
	    !v->qualified || !room_out(v, v->n_delegated + v->n_waiting) ||
	    (double)pool->n_params * (c->sums ? 4 : 2) >
		    (double)TASK_MAX_BYTES ||
	    (v->suspects && gp_verify_suspect(v, c->agent_id)))
		return false;
	c->waiting = true;
	c->deadline_ms = gp_now_ms() + WAIT_MS;
	c->next = NULL;
	while (*pp)
		pp = &(*pp)->next;
	*pp = c;
	v->n_waiting++;
	return true;
}

/* Unlists the check out for `task` (NULL when none). */
static struct check *take(struct gp_verify *v, uint64_t task)
{
	for (struct check **pp = &v->delegated; *pp; pp = &(*pp)->next) {
		struct check *c = *pp;

		if (c->task == task) {
			*pp = c->next;
			c->next = NULL;
			v->n_delegated--;
			return c;
		}
	}
	return NULL;
}

/* The checker did not answer c (declined, left, late): the coordinator
 * recomputes it. */
static void fall_back(struct gp_verify *v, struct check *c, const char *why)
{
	gp_debug("verification: agent %" PRId64 " %s the check of agent %"
		 PRId64 "'s clock %" PRId64 "; recomputed here", c->delegate_id,
		 why, c->agent_id, c->clock);
	v->st.delegate_failed++;
	gp_verify_run_here(v, c);
}

/* Reads the answer's blocks into c->da (and c->db): whole tensors in
 * order, as an UPDATE of the check's form. Returns 0, -EBADMSG or
 * -ENOMEM. */
static int read_answer(struct gp_verify *v, struct check *c,
		       const struct gp_msg_verify_result *r)
{
	size_t nt = tensor_count(v);
	size_t want = c->sums ? 2 * nt : nt;
	bool f16 = false;

	if (r->n_blocks != want)
		return -EBADMSG;
	c->da = gp_verify_floats(v);
	c->db = c->sums ? gp_verify_floats(v) : NULL;
	if (!c->da || (c->sums && !c->db))
		return -ENOMEM;
	for (size_t i = 0; i < want; i++) {
		const struct gp_msg_block *b = &r->blocks[i];
		struct gp_tensor_shape sh;
		size_t off = 0;

		if (b->tensor != i ||
		    gp_params_tensor(v->pool->params, i % nt, &sh, &off) < 0 ||
		    b->row_start != 0 || (b->rows != 0 && b->rows != sh.rows) ||
		    b->count != (size_t)sh.rows * sh.cols ||
		    gp_msg_block_read(b, (i < nt ? c->da : c->db) + off,
				      b->count) < 0)
			return -EBADMSG;
		f16 |= b->dtype == GP_DTYPE_F16;
	}
	/* f16 rounds each value by at most 2^-11 of it. */
	c->d_round = f16 ? 1.0 / 2048.0 : 0;
	return 0;
}

void gp_verify_result(struct gp_pool *pool, struct gp_member *m,
		      const struct gp_msg_verify_result *r)
{
	struct gp_verify *v = pool->verify;
	double tol = pool->job->verify_tolerance;
	double res[2], x[2];
	struct check *c;
	bool agree;
	int err;
	uint64_t t0;

	if (!v || !r->task || m->verify.task != r->task) {
		/* Not a task this member holds: one it gave up on a
		 * reconnect, or one of a job gone. */
		gp_debug("verification: agent %" PRId64 " answered task %"
			 PRIu64 ", not out with it", m->agent_id, r->task);
		return;
	}
	m->verify.task = 0;
	/* Late (the coordinator recomputed it meanwhile): the member may be
	 * drawn again now. */
	c = take(v, r->task);
	if (!c)
		return;
	t0 = gp_verify_thread_ns();
	if (r->status != GP_VERIFY_COMPUTED) {
		m->verify.rest_until_ms = gp_now_ms() + REST_MS;
		fall_back(v, c, "declined");
		return;
	}
	err = read_answer(v, c, r);
	if (err < 0) {
		gp_verify_floats_put(v, c->da);
		gp_verify_floats_put(v, c->db);
		c->da = c->db = NULL;
		if (err == -EBADMSG) {
			gp_warn("agent %" PRId64 ": its answer to a check does "
				"not fit the model; the coordinator recomputes "
				"it", m->agent_id);
			pool->fx->send_bye(pool->fx_data, m, GP_BYE_PROTOCOL,
					   "malformed VERIFY_RESULT");
		}
		fall_back(v, c, err == -EBADMSG ? "gave a malformed answer to"
						: "answered (no memory to read)");
		return;
	}
	/* The checked member's rounding (its wire) and the checker's (f16)
	 * both stand between the two, and half the tolerance
	 * (AGREE_SHARE). */
	tol *= AGREE_SHARE;
	agree = gp_verify_compare(c->a, c->sums ? c->b : NULL, c->da, c->db,
				  pool->n_params, c->q_a, c->q_b, c->d_round,
				  tol, res, x);
	v->st.cpu_ns += gp_verify_thread_ns() - t0;
	/* An audit the coordinator has no room for now: the agreement
	 * stands. */
	if (agree && (!gp_verify_draw(&v->rng, pool->job->verify_audit) ||
		      !gp_verify_room(v))) {
		/* Verified by another member. da is no longer needed. */
		gp_verify_floats_put(v, c->da);
		gp_verify_floats_put(v, c->db);
		c->da = c->db = NULL;
		gp_verify_passed(v, c, res[0],
				 c->q_a + (c->d_round + tol) * x[0]);
		gp_verify_check_ended(v, c);
		return;
	}
	if (agree)
		v->st.audited++;
	else
		v->st.disagreed++;
	/* An audit, or a disagreement: the coordinator's recomputation
	 * decides, for the checked member and the checker both. */
	gp_verify_run_here(v, c);
}

void gp_verify_member_left(struct gp_verify *v, struct gp_member *m)
{
	struct check *c;

	if (!m->verify.task)
		return;
	c = take(v, m->verify.task);
	m->verify.task = 0;
	if (c)
		fall_back(v, c, "left before it answered");
}

void gp_verify_tick(struct gp_pool *pool, int64_t now_ms)
{
	struct gp_verify *v = pool->verify;
	struct check *w, **tail;

	if (!v)
		return;
	/* Waiting checks: to a checker now free, else, past their wait, to
	 * the coordinator (never dropped: their stretch is tagged). */
	w = v->waiting;
	v->waiting = NULL;
	tail = &v->waiting;
	while (w) {
		struct check *c = w;

		w = c->next;
		c->next = NULL;
		v->n_waiting--;
		c->waiting = false;
		if (gp_verify_delegate(v, c))
			continue;
		/* Past its wait, or its member became a suspect meanwhile
		 * (whose verdicts are the coordinator's at once). */
		if (c->deadline_ms <= now_ms ||
		    (v->suspects && gp_verify_suspect(v, c->agent_id))) {
			gp_debug("verification: no checker for agent %" PRId64
				 "'s clock %" PRId64 " within %d ms; recomputed "
				 "here", c->agent_id, c->clock, WAIT_MS);
			gp_verify_run_here(v, c);
			continue;
		}
		c->waiting = true;
		*tail = c;
		tail = &c->next;
		v->n_waiting++;
	}
	while (v->delegated && v->delegated->deadline_ms <= now_ms) {
		struct check *c = v->delegated;

		/* The member keeps the task (verify.h): it is not drawn
		 * again before its late answer. */
		take(v, c->task);
		fall_back(v, c, "did not answer in time");
	}
}

void gp_verify_delegated_free(struct gp_verify *v)
{
	while (v->waiting) {
		struct check *c = v->waiting;

		v->waiting = c->next;
		gp_verify_check_free(c);
	}
	v->n_waiting = 0;
	while (v->delegated) {
		struct check *c = v->delegated;

		v->delegated = c->next;
		gp_verify_check_free(c);
	}
	v->n_delegated = 0;
}
