/* What an UPDATE does: see apply.h. */
#include "apply.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "par.h"
#include "reason.h"
#include "robust.h"
#include "util.h"
#include "work.h"

/* The minibatches an update answers and each one's own check. */
struct group {
	size_t k;
	uint64_t ids[GP_MSG_GROUP_MAX];
	int why[GP_MSG_GROUP_MAX];     /* the minibatch's own check */
	bool twin[GP_MSG_GROUP_MAX];   /* listed twice in the group */
	bool items_refused;            /* some minibatch failed its check */
};

/* Minibatch i of the update: an item of a group, or the plain form's
 * one. */
static void update_item(const struct gp_msg_update *u, size_t i,
			uint32_t *ret_epoch, uint64_t *ret_minibatch,
			float *ret_loss)
{
	if (u->form != GP_UPDATE_GRADIENT) {
		gp_msg_update_item(u, i, ret_epoch, ret_minibatch, ret_loss);
	} else {
		*ret_epoch = u->epoch;
		*ret_minibatch = u->minibatch;
		*ret_loss = u->loss;
	}
}

/* Logs a refused or discarded update of one minibatch (u's epoch,
 * minibatch and loss are that minibatch's); a rejection counts a strike
 * when `strike` (one per UPDATE message, however many minibatches it
 * held). */
static void reject_update(struct gp_pool *pool, struct gp_member *m,
			  const struct gp_msg_update *u, uint32_t samples,
			  enum gp_ledger_outcome outcome, int reason,
			  int64_t staleness, int64_t received, bool strike)
{
	struct gp_ledger_update row = {
		.job_id = pool->job_id,
		.agent_id = m->agent_id,
		.clock = (int64_t)u->clock,
		.epoch = u->epoch,
		.minibatch = (int64_t)u->minibatch,
		.samples = samples,
		.loss = u->loss,
		.grad_norm = u->grad_norm,
		.staleness = staleness,
		.received_at = received,
		.outcome = outcome,
	};
	struct gp_ledger_rejection rej = {
		.agent_id = m->agent_id,
		.at = received,
	};

	snprintf(row.reason, sizeof(row.reason), "%s", gp_reason_str(reason));
	pool->fx->ledger_update(pool->fx_data, &row);
	if (outcome != GP_UPDATE_REJECTED) {
		gp_debug("agent %" PRId64 ": update discarded: %s", m->agent_id,
			 gp_reason_str(reason));
		return;
	}
	snprintf(rej.kind, sizeof(rej.kind), "%s", gp_reason_str(reason));
	snprintf(rej.reason, sizeof(rej.reason),
		 "update for minibatch %" PRIu64 " of epoch %u at clock %" PRIu64,
		 u->minibatch, u->epoch, u->clock);
	pool->fx->ledger_rejection(pool->fx_data, &rej);
	gp_warn("agent %" PRId64 " (%s): update rejected: %s", m->agent_id,
		m->addr, gp_reason_str(reason));
	if (strike && ++m->strikes >= pool->job->max_strikes) {
		gp_warn("agent %" PRId64 ": %u rejected updates, disconnecting",
			m->agent_id, m->strikes);
		pool->fx->send_bye(pool->fx_data, m, GP_BYE_PROTOCOL,
				   "too many rejected updates");
	}
}

static enum gp_ledger_outcome discard_outcome(int reason)
{
	return reason == GP_REASON_LATE ? GP_UPDATE_LATE :
	       reason == GP_REASON_DUPLICATE ? GP_UPDATE_DUPLICATE :
					       GP_UPDATE_REJECTED;
}

/* Each minibatch's own check. Returns the first failure (a duplicate
 * within the group counts as GP_REASON_DUPLICATE), or 0. */
static int check_items(const struct gp_pool *pool, const struct gp_member *m,
		       const struct gp_msg_update *u, struct group *g)
{
	int r = 0;

	g->k = u->form != GP_UPDATE_GRADIENT ? u->items_len / GP_MSG_ITEM_SIZE :
					       1;
	g->items_refused = false;
	for (size_t i = 0; i < g->k; i++) {
		uint32_t epoch;
		uint64_t mb;
		float loss;
		int *why = &g->why[i];

		update_item(u, i, &epoch, &mb, &loss);
		g->twin[i] = false;
		if (gp_sched_id(pool->sched, epoch, mb, &g->ids[i]) < 0) {
			*why = GP_REASON_UNKNOWN_MINIBATCH;
		} else {
			*why = gp_sched_check(pool->sched, (uint64_t)m->agent_id,
					      g->ids[i]);
			for (size_t j = 0; j < i && !*why; j++)
				g->twin[i] |= g->why[j] != GP_REASON_UNKNOWN_MINIBATCH &&
					      g->ids[j] == g->ids[i];
		}
		if ((*why || g->twin[i]) && !r) {
			r = g->twin[i] ? GP_REASON_DUPLICATE : *why;
			g->items_refused = true;
		}
	}
	return r;
}

/* Returns true, after putting the agent's minibatches ids[0..n) back in
 * the queue, when the ledger's buffer cannot take their n applied rows:
 * its writes have failed for long. Applied without their rows, they would
 * be missing from the log, and a restore, which rolls back by counting the
 * log's applied rows (gp_ledger_rollback_after), would undo the wrong
 * ones. No strike: nothing is applied until the ledger catches up. */
static bool ledger_full(struct gp_pool *pool, struct gp_member *m,
			const uint64_t *ids, size_t n)
{
	if (pool->fx->ledger_room(pool->fx_data, n))
		return false;
	if (pool->unlogged++ % 1000 == 0)
		gp_error("the update log is not being written (%" PRIu64
			 " update(s) refused so far): updates are put back until"
			 " it is", pool->unlogged);
	for (size_t i = 0; i < n; i++) {
		gp_sched_release(pool->sched, (uint64_t)m->agent_id, ids[i]);
		gp_work_refused(pool, m);
	}
	return true;
}

/* The blocks' decoding, one task per block on the pool: each writes its
 * own tensor's floats and its own result. */
struct blocks_read {
	const struct gp_msg_update *u;
	float **dst;            /* each block's place */
	int *result;
};

static void block_task(void *arg, size_t k)
{
	struct blocks_read *br = arg;
	const struct gp_msg_block *b = &br->u->blocks[k];

	br->result[k] = gp_msg_block_read(b, br->dst[k], b->count);
}

/* Reads `sets` whole-model tensor sets from the update's blocks (one block
 * per tensor, in order, each whole) into pool->grad, then pool->grad_b.
 * 4-bit blocks only from a member granted GP_CAP_Q4: verification allows
 * their coarser rounding (gp_verify_allowance), which a job that did not
 * ask for them must not grant. The blocks of a model of
 * GP_PAR_MIN parameters and more decode on the pool (pool->par),
 * a block (a tensor) a task. Returns 0 or GP_REASON_SHAPE. */
static int read_blocks(struct gp_pool *pool, const struct gp_member *m,
		       const struct gp_msg_update *u, size_t sets)
{
	size_t n_tensors = gp_params_tensor_count(pool->params);
	struct blocks_read br = { .u = u };
	int r = 0;

	if (u->n_blocks != sets * n_tensors)
		return GP_REASON_SHAPE;
	if (pool->par && pool->n_params >= GP_PAR_MIN &&
	    u->n_blocks > 1) {
		br.dst = malloc(u->n_blocks * sizeof(*br.dst));
		br.result = malloc(u->n_blocks * sizeof(*br.result));
		if (!br.dst || !br.result) { /* then on the loop alone */
			free(br.dst);
			br.dst = NULL;
		}
	}
	for (size_t k = 0; k < u->n_blocks && !r; k++) {
		const struct gp_msg_block *b = &u->blocks[k];
		size_t i = k % n_tensors, off;
		float *dst = k < n_tensors ? pool->grad : pool->grad_b;
		struct gp_tensor_shape sh;

		if (b->tensor != i || b->row_start != 0 ||
		    (b->dtype == GP_DTYPE_Q4 && !(m->caps & GP_CAP_Q4)) ||
		    gp_params_check_block(pool->params, b->tensor, b->row_start,
					  b->rows, b->count, &off) != 0) {
			r = GP_REASON_SHAPE;
			break;
		}
		gp_params_tensor(pool->params, i, &sh, NULL);
		if (b->count != (uint64_t)sh.rows * sh.cols)
			r = GP_REASON_SHAPE;
		else if (br.dst)
			br.dst[k] = dst + off;
		else if (gp_msg_block_read(b, dst + off, b->count) < 0)
			r = GP_REASON_SHAPE;
	}
	if (br.dst && !r) {
		gp_par_for(pool->par, u->n_blocks, block_task, &br);
		for (size_t k = 0; k < u->n_blocks; k++)
			if (br.result[k] < 0)
				r = GP_REASON_SHAPE;
	}
	free(br.dst);
	free(br.result);
	return r;
}

/* Staleness-aware scaling: an update computed on parameters that lack u
 * updates of other agents is scaled by k / (k + u), k the agent's
 * minibatches at this clock. u counts what the agent's copy lacks: with
 * read-my-writes only the others' updates, else its own too. Without it,
 * several gradients computed at the same point land one after the other
 * and momentum turns that into overshoot (two agents at lr 0.05 and
 * momentum 0.9 diverged). */
double gp_apply_staleness_scale(const struct gp_pool *pool,
				const struct gp_member *m)
{
	uint64_t lag = gp_params_updates(pool->params) - m->view.base;
	/* k: the local run the update ends, which a pull within a clock
	 * of runs (work.c) starts anew. */
	uint32_t work = m->run_work && m->run_work < m->clock_work ?
				m->run_work : m->clock_work;
	double k = work ? work : 1;

	/* AdamW divides the gradient's scale out and the weight would
	 * scale its rate instead (optim.h): two agents, each an update
	 * behind the other, then step at half the single process's rate,
	 * which measured worse than no scaling (tools/bench/gpt.py). A
	 * delta of local AdamW steps is in parameter units, though: there
	 * the weight does what it does for SGD's runs, averaging runs that
	 * overlap, as DiLoCo averages its workers' deltas. */
	if (!pool->job->staleness_scaling ||
	    (pool->job->optimizer == GP_OPT_ADAMW &&
	     !(m->caps & GP_CAP_INNER_ADAMW)))
		return 1;
	if ((m->caps & GP_CAP_LOCAL_STEP) && lag >= m->view.own)
		lag -= m->view.own;
	return lag ? k / (k + (double)lag) : 1;
}

/* The most the momentum already there moves the parameters at in m's
 * group (step()): the rate in force now when m's copy lacks others'
 * updates (a straggler's), else no cap. A straggler's minibatches were
 * handed out long before at a higher rate (cosine decay), and a group's
 * c v (params.h) at their rates carried the pool's momentum, the fast
 * agents' last runs, up to twice as far as the schedule then did: three
 * agents' test accuracy fell 5-10 points for a moment late in a job, at
 * a rate near 0. A copy that lacks nothing took the momentum there at
 * the minibatches' own rates, and the coordinator must step as it did:
 * its copy then counts as current (read-my-writes, work.c copy_good) and
 * is not pulled again (one agent alone steps as a local loop, given-back
 * and redone minibatches too). */
static double carry_now(const struct gp_pool *pool, const struct gp_member *m)
{
	uint64_t lag = gp_params_updates(pool->params) - m->view.base;

	return lag > m->view.own ? gp_pool_lr_now(pool) : INFINITY;
}

/* The optimiser step of a checked group whose blocks are read: each
 * minibatch at its own learning rate, the whole scaled for staleness and
 * clipped as received; the momentum already there at most at `now`
 * (carry_now()) for a minibatch behind the job's progress. Returns 0 or
 * a reason, with nothing changed. *ret_c and *ret_mk: what the step did
 * to the momentum already there (verify.h), from the rates it took. */
static int step(struct gp_pool *pool, const struct gp_msg_update *u,
		const struct group *g, double now, double scale,
		struct gp_params_apply_info *ret_info, double *ret_c,
		double *ret_mk)
{
	double mu = pool->job->optimizer == GP_OPT_SGD_MOMENTUM ?
			    (double)(float)pool->job->momentum : 0;
	float lrs[GP_MSG_GROUP_MAX], carry[GP_MSG_GROUP_MAX];
	struct gp_params_sums sums;
	int r;

	for (size_t i = 0; i < g->k; i++)
		lrs[i] = (float)gp_pool_lr_at(pool, g->ids[i]);
	if (u->form != GP_UPDATE_SUMS) {
		/* One gradient: c = lr mu, mk = mu. */
		*ret_c = 0;
		*ret_mk = 1;
		for (size_t i = 0; i < g->k; i++) {
			*ret_mk *= mu;
			*ret_c += (double)lrs[i] * *ret_mk;
		}
	}
	if (u->form == GP_UPDATE_DELTA) {
		struct gp_params_delta dl = {
			.d = pool->grad,
			.count = (uint32_t)g->k,
			.scale = (float)scale,
		};

		/* The rates the agent's steps took (MINIBATCH.lr): they
		 * bound what its delta may hold. */
		for (size_t i = 0; i < g->k; i++)
			dl.lr_sum += lrs[i];
		r = gp_params_apply_delta(pool->params, &dl, pool->n_params,
					  ret_info);
		return r < 0 ? GP_REASON_SHAPE : r;
	}
	if (u->form != GP_UPDATE_SUMS) {
		r = gp_params_set_lr(pool->params, lrs[0]);
		if (r == 0)
			r = gp_params_apply_scaled(pool->params, pool->grad,
						   pool->n_params, (float)scale,
						   ret_info);
		return r < 0 ? GP_REASON_SHAPE : r;
	}
	for (size_t i = 0; i < g->k; i++)
		carry[i] = lrs[i] > now && gp_sched_lr_index(pool->sched,
							   g->ids[i]) <
						   gp_sched_position(pool->sched) ?
				   (float)now :
				   lrs[i];
	sums = (struct gp_params_sums){
		.a = pool->grad,
		.b = pool->grad_b,
		.lrs = lrs,
		.carry_lrs = carry,
		.carry_time = (float)scale,
		.count = (uint32_t)g->k,
		.scale = (float)scale,
	};
	r = gp_params_apply_sums(pool->params, &sums, pool->n_params, ret_info);
	/* The same call and inputs as the step's own, so the same bits. */
	if (r == 0)
		r = gp_params_sums_coefficients(mu, &sums, ret_c, ret_mk);
	return r < 0 ? GP_REASON_SHAPE : r;
}

/* Centred clipping (robust.h) of a checked group whose blocks are read,
 * in place in pool->grad (and grad_b), before the optimiser step; the
 * weight it got is in *ret_weight (1: untouched). sq: |grad|^2 and
 * |grad_b|^2 when known (NULL: the filter takes them). Never refuses:
 * what the optimiser will refuse is left as sent. */
static void filter(struct gp_pool *pool, struct gp_member *m,
		   const struct gp_msg_update *u, const struct group *g,
		   const double *sq, double *ret_weight)
{
	struct gp_robust *rb = &pool->robust;
	float lrs[GP_MSG_GROUP_MAX];
	struct gp_robust_update ru = {
		.a = pool->grad,
		.b = u->form == GP_UPDATE_SUMS ? pool->grad_b : NULL,
		.n = pool->n_params,
		.k = (uint32_t)g->k,
		.who = (uint64_t)m->agent_id,
		.members = 0, /* below */
		.lrs = lrs,
		.mu = pool->job->optimizer == GP_OPT_SGD_MOMENTUM ?
			      pool->job->momentum : 0,
		.reject_norm = pool->job->max_grad_norm,
		.sq_known = sq != NULL,
		.sq_a = sq ? sq[0] : 0,
		.sq_b = sq ? sq[1] : 0,
	};
	struct gp_robust_result res;
	uint32_t joined = pool->n_joined;

	/* A member alone has nothing to follow and pays nothing for it.
	 * From two members on the filter measures (it shrinks nothing
	 * until GP_ROBUST_MEMBERS are in its window, the sender counted),
	 * so that a third member's first update meets radii and a centre
	 * already known. A delta is in parameter units, not a gradient's:
	 * the pool's direction (gradients) and the robust rule's bound do
	 * not apply to it (docs/security.md). */
	*ret_weight = 1;
	if (joined < 2 || u->form == GP_UPDATE_DELTA)
		return;
	ru.members = joined;
	rb->par = pool->par;
	rb->clip = pool->job->robust_clip;
	rb->beta = pool->job->robust_momentum;
	for (size_t i = 0; i < g->k; i++)
		lrs[i] = (float)gp_pool_lr_at(pool, g->ids[i]);
	if (gp_robust_filter(rb, &m->robust, &ru, &res) < 0 &&
	    rb->updates % 1000 == 0)
		gp_error("robust aggregation: out of memory; updates are "
			 "applied unfiltered");
	*ret_weight = res.weight;
	if (res.weight < 1)
		gp_debug("agent %" PRId64 ": update damped to %.3f (|g-c| %.3g"
			 " of %.3g, |m-c| %.3g of %.3g)", m->agent_id,
			 res.weight, res.dev_g, res.tau_g, res.dev_m,
			 res.tau_m);
}

/* Whether group g holds a minibatch of the member's own work: one whose
 * own check passed, or that was its and came late. */
static bool own_work(const struct group *g)
{
	for (size_t i = 0; i < g->k; i++)
		if (!g->twin[i] &&
		    (g->why[i] == 0 || g->why[i] == GP_REASON_LATE))
			return true;
	return false;
}

/* The group was refused for `r`: one row per minibatch, the valid ones
 * back in the queue, one strike at most. */
static void refuse(struct gp_pool *pool, struct gp_member *m,
		   const struct gp_msg_update *u, const struct group *g, int r,
		   int64_t staleness, int64_t received)
{
	/* The valid minibatches of a group refused because another came
	 * late (or the whole came too stale) are discards, not the agent's
	 * fault. */
	bool blameless = r == GP_REASON_STALE ||
			 (g->items_refused && (r == GP_REASON_LATE ||
					       r == GP_REASON_DUPLICATE));
	bool strike = true;

	for (size_t i = 0; i < g->k; i++) {
		struct gp_msg_update one = *u;
		int why = g->why[i];
		int reason = g->twin[i] ? GP_REASON_DUPLICATE :
			     why ? why :
			     g->items_refused ? GP_REASON_GROUP : r;
		enum gp_ledger_outcome out =
			g->twin[i] ? GP_UPDATE_REJECTED :
			why ? discard_outcome(why) :
			blameless ? GP_UPDATE_LATE : GP_UPDATE_REJECTED;
		uint32_t samples = why == GP_REASON_UNKNOWN_MINIBATCH ? 0 :
			gp_sched_minibatch_samples(pool->sched, g->ids[i]);

		update_item(u, i, &one.epoch, &one.minibatch, &one.loss);
		reject_update(pool, m, &one, samples, out, reason, staleness,
			      received, strike);
		if (out == GP_UPDATE_REJECTED)
			strike = false;
		if (g->twin[i] || why == GP_REASON_UNKNOWN_MINIBATCH)
			continue; /* nothing of the agent's to resolve */
		if (why) {
			/* Its own check failed (not assigned, duplicate,
			 * late): a late answer for a minibatch taken back
			 * from this clock resolves it, a second answer for one
			 * already resolved (the agent counts it open, the
			 * schedule does not) must not. */
			bool ours = why == GP_REASON_DUPLICATE ||
				    why == GP_REASON_LATE;

			gp_sched_complete(pool->sched, (uint64_t)m->agent_id,
					  g->ids[i], NULL);
			if (ours && m->clock_open + m->next_open >
				    gp_sched_outstanding(pool->sched,
							 (uint64_t)m->agent_id))
				gp_work_resolved(pool, m, (int64_t)u->clock);
			continue;
		}
		gp_sched_release(pool->sched, (uint64_t)m->agent_id, g->ids[i]);
		gp_work_refused(pool, m);
	}
}

/* A minibatch of the agent's, applied: the schedule, the ledger row and
 * the counters. */
static void record_applied(struct gp_pool *pool, struct gp_member *m,
			   uint64_t id, const struct gp_msg_update *u,
			   size_t i, double norm, double weight,
			   int64_t staleness, int64_t received)
{
	struct gp_sched_completion comp = {0};
	int r = gp_sched_complete(pool->sched, (uint64_t)m->agent_id, id, &comp);
	struct gp_ledger_update row = {
		.job_id = pool->job_id,
		.agent_id = m->agent_id,
		.clock = (int64_t)u->clock,
		.samples = comp.samples,
		.grad_norm = norm,
		.staleness = staleness,
		.received_at = received,
		.applied_at = gp_now_ms(),
		.outcome = GP_UPDATE_APPLIED,
	};
	uint32_t epoch;
	uint64_t mb;
	float loss;

	update_item(u, i, &epoch, &mb, &loss);
	/* An applied row's reason says when robust aggregation shrank it,
	 * and to what weight. */
	if (weight < 1)
		snprintf(row.reason, sizeof(row.reason), "damped %.3f", weight);
	row.epoch = epoch;
	row.minibatch = (int64_t)mb;
	row.loss = loss;
	if (r != 0) /* checked before; cannot happen on one thread */
		gp_warn("minibatch %" PRIu64 ": %s", id, gp_reason_str(r));
	/* Only applied work counts as an answer for the work timeout: a
	 * member resending a refused update must not hold its clock. */
	m->work_since_ms = received;
	/* Room was checked before applying (ledger_full); only a failed
	 * flush putting its rows back, or no memory, can refuse it now. */
	r = pool->fx->ledger_update(pool->fx_data, &row);
	if (r < 0)
		gp_error("minibatch %" PRIu64 " applied but not logged: %s; a "
			 "restore would roll back the wrong updates", id,
			 strerror(-r));
	m->applied++;
	pool->applied_run++;
	pool->samples_run += comp.samples;
	if (pool->job->eval_every &&
	    pool->applied_run % pool->job->eval_every == 0 && !comp.job_done)
		pool->fx->interim_eval(pool->fx_data);
	m->samples += comp.samples;
	m->epoch_samples += comp.samples;
	pool->epoch_samples += comp.samples;
	pool->epoch_loss_sum += loss;
	pool->epoch_updates++;
	pool->applied_since_checkpoint++;
	if (pool->job->checkpoint_interval_minibatches &&
	    pool->applied_since_checkpoint >=
		    pool->job->checkpoint_interval_minibatches)
		pool->checkpoint_wanted = true;
	if (comp.job_done && pool->robust.updates)
		gp_info("robust aggregation: %" PRIu64 " of %" PRIu64
			" update(s) damped, %.3f s CPU", pool->robust.damped,
			pool->robust.updates, (double)pool->robust.cpu_ns / 1e9);
	if (comp.epochs_completed)
		pool->fx->epochs_completed(pool->fx_data, comp.epochs_completed,
					   comp.job_done);
}

int gp_apply_update(struct gp_pool *pool, struct gp_member *m,
		    const struct gp_msg_update *u, int64_t received)
{
	struct group g;
	struct gp_params_apply_info info;
	double weight = 1, c = 0, mk = 1, sq[2];
	bool sq_known = false;
	int64_t staleness = -1;
	int r;

	/* Read, whatever becomes of it: its effect (or none) is in the
	 * parameters of any pull from now on (GP_CAP_OVERLAP). */
	m->updates_read++;
	r = check_items(pool, m, u, &g);
	/* Split updates (parts > 1) are not reassembled: refused like any
	 * other wrong shape, so that the minibatch goes back to the queue at
	 * once. Resolving it without releasing it would leave the schedule
	 * counting it as the agent's while its clock counts it resolved, and
	 * the clock, with the whole pool's SSP bound, would never advance
	 * again. */
	if (r == 0 && ((u->form == GP_UPDATE_SUMS && !(m->caps & GP_CAP_SUMS)) ||
		       (u->form == GP_UPDATE_DELTA &&
			!(m->caps & GP_CAP_INNER_ADAMW)) ||
		       /* A gradient would be the coordinator's AdamW step
			* while the agent's copy took its own: the two
			* copies would part without a pull to mend them. */
		       (u->form != GP_UPDATE_DELTA &&
			(m->caps & GP_CAP_INNER_ADAMW)) ||
		       u->parts > 1))
		r = GP_REASON_SHAPE;
	if (r == 0)
		r = gp_ssp_check_update(pool->ssp, (uint64_t)m->agent_id,
					(int64_t)u->clock, &staleness);
	/* An update answers minibatches of one clock, the current one: no
	 * more of them than it has open (each applied one resolves one
	 * there). */
	if (r == 0 && ((int64_t)u->clock != m->clock || g.k > m->clock_open))
		r = GP_REASON_SHAPE;
	if (r == 0 && ledger_full(pool, m, g.ids, g.k)) {
		gp_verify_refused(pool, m, u, true);
		return -ENOBUFS;
	}
	if (r == 0)
		r = read_blocks(pool, m, u, u->form == GP_UPDATE_SUMS ? 2 : 1);
	/* Verification takes the update as sent, before any filter, and
	 * its norms, which the filter reads too. */
	if (r == 0)
		sq_known = gp_verify_received(pool, m, u, g.ids, g.k, sq);
	if (r == 0)
		filter(pool, m, u, &g, sq_known ? sq : NULL, &weight);
	if (r == 0) {
		gp_verify_before_step(pool, u->form != GP_UPDATE_DELTA &&
					    gp_params_linear(pool->params));
		r = step(pool, u, &g, carry_now(pool, m),
			 gp_apply_staleness_scale(pool, m), &info, &c, &mk);
	}
	if (r != 0) {
		gp_verify_refused(pool, m, u, own_work(&g));
		refuse(pool, m, u, &g, r, staleness, received);
		return r;
	}
	if (pool->verify) {
		/* A delta's step reports no effect (info.linear false). */
		struct gp_verify_effect e = {
			.ka = info.ka, .kb = info.kb, .x = pool->grad,
			.y = u->form == GP_UPDATE_SUMS ? pool->grad_b :
							 pool->grad,
			/* Not damped: the blocks decode to what was
			 * applied. */
			.u = weight == 1 ? u : NULL,
		};
		gp_verify_applied(pool, m, g.ids, g.k, c, mk,
				  info.linear ? &e : NULL);
	}
	if ((int64_t)u->clock >= m->view.own_from)
		m->view.own += g.k;
	if (m->next_work && (int64_t)u->clock >= m->view_next.own_from)
		m->view_next.own += g.k;
	if (u->compute_us > 0)
		gp_ssp_observe_speed(pool->ssp, (uint64_t)m->agent_id,
				     1e6 * (double)g.k / (double)u->compute_us);
	gp_work_answered(pool, m, u, g.k);
	for (size_t i = 0; i < g.k; i++) {
		record_applied(pool, m, g.ids[i], u, i, info.norm, weight,
			       staleness, received);
		gp_work_resolved(pool, m, (int64_t)u->clock);
	}
	return 0;
}
