/* What a member gets when it asks for work, and how its clocks move: see
 * work.h. */
#include "work.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "members.h"
#include "reason.h"
#include "util.h"
#include "work-impl.h"

double gp_pool_lr_at(const struct gp_pool *pool, uint64_t id)
{
	return gp_job_lr_at(pool->job, gp_sched_lr_index(pool->sched, id),
			    pool->minibatches_total,
			    gp_sched_minibatches(pool->sched));
}

double gp_pool_lr_now(const struct gp_pool *pool)
{
	return gp_job_lr_at(pool->job, gp_sched_position(pool->sched),
			    pool->minibatches_total,
			    gp_sched_minibatches(pool->sched));
}

/* Whether the agent's copy may serve its work at `clock` (k minibatches)
 * without a pull. A copy is current when every update applied since its
 * view is the agent's own (read-my-writes). A copy that lacks a few
 * updates of others is still good while they are fewer than k (a
 * straggler's occasional update, scaled down by its staleness anyway) and
 * SSP's bound holds (read clock >= clock - s); the fast agent then keeps
 * its pipeline instead of a pull per clock. With clocks sized for the
 * links, only while they are also under a quarter of k or at most
 * GP_WORK_BASE: two agents with clocks of equal time and about equal work
 * would otherwise each skip the other's whole clock for up to s clocks
 * and drift apart. *ret_current says whether it lacks nothing. */
/* The updates applied since m's copy that its copy lacks: all of them
 * but its own, or through an outer optimiser its own too (the
 * coordinator applies them otherwise than its copy took them, params.h,
 * so a copy is current only while nothing landed). false when the view
 * counts more of its own than were applied (it holds no usable view). */
static bool copy_lacks(const struct gp_pool *pool, const struct gp_member *m,
		       uint64_t *ret_lag)
{
	uint64_t lag = gp_params_updates(pool->params) - m->view.base;

	if (lag < m->view.own)
		return false;
	if (pool->job->outer_optimizer == GP_OUTER_NONE)
		lag -= m->view.own;
	*ret_lag = lag;
	return true;
}

static bool copy_good(const struct gp_pool *pool, const struct gp_member *m,
		      int64_t clock, uint32_t k, bool *ret_current)
{
	struct gp_ssp_agent_info info;
	uint64_t lag;
	bool overlap;

	*ret_current = false;
	if (!(m->caps & GP_CAP_LOCAL_STEP) || !m->pulled_version ||
	    !copy_lacks(pool, m, &lag))
		return false;
	if (lag == 0) {
		*ret_current = true;
		return true;
	}
	/* GP_CAP_OVERLAP: while the agent computes, it moves its copy under
	 * its work when the pull comes (overlap_pull), so the next run need
	 * not wait for one; SSP's bound on how old the copy may be still
	 * holds. An agent with nothing in hand gets its pull first. */
	overlap = (m->caps & GP_CAP_OVERLAP) &&
		  m->clock_open + m->next_open > 0;
	return (lag < k || overlap) &&
	       (4 * lag < k || lag <= GP_WORK_BASE || overlap ||
		!(gp_work_sync_interval(pool) > 0)) &&
	       gp_ssp_get(pool->ssp, (uint64_t)m->agent_id, &info) == 0 &&
	       info.read_clock != INT64_MIN &&
	       info.read_clock >= clock - (int64_t)gp_ssp_bound(pool->ssp);
}

/* Whether a pull of `bytes` fits the pull budget now: always when no
 * other send is queued (one always goes out, however large); otherwise
 * only within the budget and, while pulls wait for room, only for the
 * one whose turn it is (gp_work_pull_written): a newcomer does not take
 * the room of those that waited. */
static bool pull_fits(const struct gp_pool *pool, const struct gp_member *m,
		      uint64_t bytes)
{
	uint64_t budget = (uint64_t)pool->job->pull_budget_mib << 20;

	if (pool->pull_bytes == 0 || pool->pull_bytes == m->pull_bytes)
		return true;
	if (pool->pull_wait_n > 0 && !m->pull_turn)
		return false;
	return pool->pull_bytes + bytes <= budget;
}

/* m waits for room in the pull budget (once in the queue). */
static void pull_wait(struct gp_pool *pool, struct gp_member *m)
{
	if (m->pull_waiting)
		return;
	if (!pool->pulls_waited++)
		gp_info("pull budget full (%.1f MiB of parameter sends queued, "
			"[pool] pull_budget_mib = %u): pulls wait their turn",
			(double)pool->pull_bytes / (1 << 20),
			pool->job->pull_budget_mib);
	if (pool->pull_wait_n == pool->pull_wait_cap) {
		size_t cap = pool->pull_wait_cap ? 2 * pool->pull_wait_cap : 64;
		uint64_t *ring = malloc(cap * sizeof(*ring));

		if (!ring)
			return; /* served by the next serve_all instead */
		for (size_t i = 0; i < pool->pull_wait_n; i++)
			ring[i] = pool->pull_wait[(pool->pull_wait_head + i) %
						  pool->pull_wait_cap];
		free(pool->pull_wait);
		pool->pull_wait = ring;
		pool->pull_wait_cap = cap;
		pool->pull_wait_head = 0;
	}
	pool->pull_wait[(pool->pull_wait_head + pool->pull_wait_n) %
			pool->pull_wait_cap] = (uint64_t)m->agent_id;
	pool->pull_wait_n++;
	m->pull_waiting = true;
}

void gp_work_pull_queued(struct gp_pool *pool, struct gp_member *m,
			 uint64_t bytes)
{
	m->pull_bytes += bytes;
	pool->pull_bytes += bytes;
}

void gp_work_pull_written(struct gp_pool *pool, struct gp_member *m)
{
	if (!m->pull_bytes)
		return;
	pool->pull_bytes -= m->pull_bytes < pool->pull_bytes ?
				    m->pull_bytes : pool->pull_bytes;
	m->pull_bytes = 0;
}

void gp_work_pull_serve(struct gp_pool *pool)
{
	/* Oldest first: the head goes when its pull fits, and the rest wait
	 * behind it (one whose pull still does not fit when served, the
	 * rare verification pull that sends every shard, goes to the back;
	 * a member that left or was served otherwise is skipped). */
	while (pool->pull_wait_n > 0) {
		uint64_t id = pool->pull_wait[pool->pull_wait_head];
		struct gp_member *w = gp_members_find(pool, id);

		if (w && w->pull_waiting) {
			bool fits;

			w->pull_turn = true;
			fits = pull_fits(pool, w, work_pulled_bytes(pool, w));
			w->pull_turn = false;
			if (!fits)
				break;
		}
		pool->pull_wait_head = (pool->pull_wait_head + 1) %
				       pool->pull_wait_cap;
		pool->pull_wait_n--;
		if (!w || !w->pull_waiting)
			continue;
		w->pull_waiting = false;
		w->pull_turn = true;
		gp_work_serve(pool, w);
		w->pull_turn = false;
	}
}

void gp_work_finish(struct gp_pool *pool)
{
	/* Members' sends still queued stay counted (pull_bytes): they
	 * leave the budget with their connections. */
	for (struct gp_member *m = pool->members; m; m = m->next)
		m->pull_waiting = m->pull_turn = false;
	free(pool->pull_wait);
	pool->pull_wait = NULL;
	pool->pull_wait_head = pool->pull_wait_n = pool->pull_wait_cap = 0;
	pool->pulls_waited = 0;
	memset(&pool->memo, 0, sizeof(pool->memo));
}

static int send_pull(struct gp_pool *pool, struct gp_member *m, int64_t clock,
		     bool check, struct gp_view *target, uint64_t *ret_bytes);

/* Brings the agent's copy up to date for its work at `clock` (ahead: the
 * clock after the one it is computing): sends the shards changed since
 * its last pull, unless its copy is good as it is; -EAGAIN when the pull
 * must wait for room in the pull budget (m then waits in its queue). */
static int pull(struct gp_pool *pool, struct gp_member *m, int64_t clock,
		uint32_t k, bool ahead, uint64_t *ret_bytes)
{
	size_t n = gp_params_changed_since(pool->params, m->pulled_version,
					   NULL, 0);
	struct gp_view *target = ahead ? &m->view_next : &m->view;
	bool current = false;
	/* A clock picked for verification pulls every shard (verify.h). */
	bool check = gp_verify_pick(pool, m, clock, k);

	if (check)
		n = gp_params_shard_count(pool->params);
	/* An agent that reads its own writes already holds every update
	 * applied since its pull when they are all its own: nothing to send
	 * (one agent alone then trains exactly like a local loop). Its copy
	 * goes on as it was; its read clock moves only if it lacks nothing. */
	if (!check && (n == 0 || copy_good(pool, m, clock, k, &current))) {
		*target = m->view;
		if (n == 0 || current)
			return gp_ssp_pulled(pool->ssp, (uint64_t)m->agent_id,
					     m->pulled_version);
		return 0;
	}
	return send_pull(pool, m, clock, check, target, ret_bytes);
}

/* Sends m's pull (a whole one when check) for its work at `clock`, and
 * records it: its version, the view of target, the SSP read clock;
 * -EAGAIN when it must wait for room in the pull budget. */
static int send_pull(struct gp_pool *pool, struct gp_member *m, int64_t clock,
		     bool check, struct gp_view *target, uint64_t *ret_bytes)
{
	uint64_t updates = gp_params_updates(pool->params);
	int r;

	if (!pull_fits(pool, m, check ? work_full_pull_bytes(pool, m) :
					work_pulled_bytes(pool, m))) {
		/* Not sent: the pick is drawn again when it goes. */
		if (check)
			gp_verify_unpick(pool);
		pull_wait(pool, m);
		return -EAGAIN;
	}
	m->pull_waiting = false; /* its entry in the queue is skipped */
	if (check)
		m->pulled_version = 0;
	m->pull_check = check; /* whole, for the verifier (downlink.c) */
	r = pool->fx->send_params(pool->fx_data, m);
	m->pull_check = false;
	if (r < 0)
		return r;
	if (check)
		gp_verify_sent(pool, m, clock);
	*ret_bytes = work_pulled_bytes(pool, m);
	m->pulled_version = gp_params_version(pool->params);
	m->pull_read = m->updates_read;
	*target = (struct gp_view){ .base = updates, .own_from = clock };
	return gp_ssp_pulled(pool->ssp, (uint64_t)m->agent_id, m->pulled_version);
}

/* GP_CAP_OVERLAP (protocol.md "Overlap"): the pull that follows m's
 * runs, sent on its own once GP_WORK_OVERLAP_RUNS updates of m were
 * read since its last pull and others' updates landed since (its own it
 * holds), while m computes its next run, which went out before (copy_good
 * does not hold it back); m moves its copy under that run when the pull
 * comes. The views of the work it holds start from this pull: its
 * updates from now on are its own, the rest lag. */
static void overlap_pull(struct gp_pool *pool, struct gp_member *m)
{
	uint64_t lag = 0, down = 0;
	struct gp_view v;
	int r;

	if (!(m->caps & GP_CAP_OVERLAP) || !m->pulled_version ||
	    m->updates_read < m->pull_read + GP_WORK_OVERLAP_RUNS ||
	    m->pull_waiting ||
	    m->clock_open + m->next_open == 0)
		return;
	/* A view that counts more of its own than landed lacks something
	 * unknown: pulled too. */
	if ((copy_lacks(pool, m, &lag) && lag == 0) ||
	    gp_params_changed_since(pool->params, m->pulled_version, NULL,
				    0) == 0)
		return;
	r = send_pull(pool, m, m->clock, false, &v, &down);
	if (r < 0) {
		if (r != -EAGAIN)
			gp_warn("agent %" PRId64 ": cannot send parameters: %s",
				m->agent_id, strerror(-r));
		return;
	}
	m->view = v;
	if (m->next_work)
		m->view_next = v;
	/* The run in flight began before this pull: the next one handed
	 * out counts from here (the staleness scale's k, apply.c). */
	m->run_work = 0;
}

/* The MINIBATCH.group of the i-th of a clock's n minibatches: a clock
 * goes out as groups of at most GP_MSG_GROUP_MAX, each answered by one
 * UPDATE (a long clock of an agent on a fast link is several). */
static uint32_t group_at(size_t i, size_t n)
{
	if (i % GP_MSG_GROUP_MAX != 0)
		return 0;
	return (uint32_t)(n - i < GP_MSG_GROUP_MAX ? n - i : GP_MSG_GROUP_MAX);
}

/* Local steps without groups: each minibatch's gradient comes from the
 * copy its predecessors stepped with the agent's own velocity, which the
 * coordinator never sees, so only a clock's first update could be
 * recomputed and a member could cheat on the others unchecked. Where
 * updates are checked such a member gets one minibatch a clock, ahead or
 * not, and no probe's extension (ask GP_CAP_SUMS and GP_CAP_MOMENTUM for
 * long clocks). */
static bool one_a_clock(const struct gp_pool *pool, const struct gp_member *m)
{
	return pool->verify && (m->caps & GP_CAP_LOCAL_STEP) &&
	       !(m->caps & (GP_CAP_SUMS | GP_CAP_INNER_ADAMW));
}

/* The most minibatches m's next run holds (work_run_length, as it stands
 * now: runs grow within a clock) when its clock goes out as runs
 * (`runs`), else a whole clock. */
static uint32_t run_steps(const struct gp_pool *pool,
			  const struct gp_member *m, bool runs)
{
	struct gp_ssp_agent_info info;
	struct link_clock lc;

	if (!runs)
		return GP_WORK_MAX;
	work_link_clock(pool, &lc);
	if (lc.live < 2 || !(lc.cycle > 0) ||
	    gp_ssp_get(pool->ssp, (uint64_t)m->agent_id, &info) < 0)
		return GP_WORK_MAX;
	return (uint32_t)work_run_length(pool, &info, &lc);
}

/* Hands m the minibatches ids[0..n) for `clock` (ahead: the clock after
 * the one it computes), after the pull its copy needs (none when ahead:
 * the caller checked copy_good). Returns how many went out. */
static size_t hand_out(struct gp_pool *pool, struct gp_member *m,
		       int64_t clock, uint32_t run, bool ahead,
		       const uint64_t *ids, size_t n, uint64_t *ret_down)
{
	uint64_t agent = (uint64_t)m->agent_id;
	size_t sent = 0;
	int r;

	r = pull(pool, m, clock, run, ahead, ret_down);
	if (r < 0) {
		if (r != -EAGAIN)
			gp_warn("agent %" PRId64 ": cannot send parameters: %s",
				m->agent_id, strerror(-r));
		for (size_t i = 0; i < n; i++)
			gp_sched_release(pool->sched, agent, ids[i]);
		return 0;
	}
	if (*ret_down)
		m->run_work = 0;
	for (size_t i = 0; i < n; i++) {
		if (pool->fx->send_minibatch(pool->fx_data, m, ids[i], clock,
					     group_at(i, n)) < 0) {
			gp_sched_release(pool->sched, agent, ids[i]);
			continue;
		}
		sent++;
		if (ahead) {
			m->next_work++;
			m->next_open++;
		} else {
			m->clock_work++;
			m->clock_open++;
		}
	}
	m->run_work += (uint32_t)sent;
	return sent;
}

/* Pipelining: hands out the agent's clock c + 1 while its updates of clock
 * c are still on their way, once all of c's work is out and c + 1 <= m + s,
 * so the agent never idles for a round trip at a clock boundary. Its copy
 * must then need no pull (read-my-writes, nobody else's update since): it
 * already holds its own updates of c. TCP keeps the order, so c's updates
 * all arrive (and c is advanced) before any of c + 1's. A clock of runs
 * gets its first run ahead, the rest once it is the current one
 * (serve_run). */
static void serve_ahead(struct gp_pool *pool, struct gp_member *m,
			const struct gp_ssp_agent_info *info)
{
	uint64_t ids[GP_WORK_MAX];
	uint64_t down = 0;
	size_t n = 0;
	bool current, runs;
	uint32_t k, run;
	int r;

	if (m->next_work || info->work_this_clock < m->clock_target ||
	    info->clock + 1 > gp_ssp_min_clock(pool->ssp) +
				      (int64_t)gp_ssp_bound(pool->ssp))
		return;
	if (gp_sched_queued(pool->sched) == 0)
		return;
	/* Only while the agent's copy needs no pull: a pull now would
	 * overwrite its own updates still on their way, and two agents
	 * measured 3-6 points lower after three epochs with that. */
	k = work_per_clock(pool, info, &runs);
	if (one_a_clock(pool, m)) {
		k = 1;
		runs = false;
	}
	run = run_steps(pool, m, runs);
	if (!copy_good(pool, m, info->clock + 1, k < run ? k : run, &current))
		return;
	/* A clock picked for verification goes out with a whole pull, which
	 * would replace the copy that holds the agent's own updates still
	 * on their way: it waits for them instead (verify.h). */
	if (m->clock_open > 0 &&
	    gp_verify_defer(pool, m, info->clock + 1, k < run ? k : run))
		return;
	r = gp_sched_assign(pool->sched, (uint64_t)m->agent_id,
			    (uint64_t)gp_now_ms(), k < run ? k : run, ids, &n);
	if (r != 0 || n == 0)
		return;
	n = hand_out(pool, m, info->clock + 1, run, true, ids, n, &down);
	m->next_target = k > run ? k : (uint32_t)n;
	m->next_runs = runs;
}

/* The next run of a clock of runs, while the agent computes the one
 * before (pipelined, as serve_ahead): only while its copy needs no pull
 * (copy_good against one run: what it lacks of others' runs is under a
 * quarter of one), and at most two runs open. Otherwise the run waits for
 * the agent's work to be resolved and goes out with a pull
 * (clock_resolved). */
static void serve_run(struct gp_pool *pool, struct gp_member *m,
		      const struct gp_ssp_agent_info *info, uint32_t run)
{
	uint64_t ids[GP_WORK_MAX];
	uint64_t down = 0;
	size_t n = 0;
	bool current;
	uint32_t k = m->clock_target - info->work_this_clock;

	if (k > run)
		k = run;
	if (!copy_good(pool, m, info->clock, run, &current) ||
	    gp_sched_assign(pool->sched, (uint64_t)m->agent_id,
			    (uint64_t)gp_now_ms(), k, ids, &n) != 0 || n == 0)
		return;
	n = hand_out(pool, m, info->clock, run, false, ids, n, &down);
	gp_ssp_note_work(pool->ssp, (uint64_t)m->agent_id, (uint32_t)n);
	m->work_since_ms = gp_now_ms();
}

/* What follows work in hand: the clock's next run, or the next clock's
 * first, while at most one run is open. */
static void serve_next(struct gp_pool *pool, struct gp_member *m)
{
	struct gp_ssp_agent_info info;
	uint32_t run = run_steps(pool, m, m->clock_runs);

	/* gp_work_serve's own conditions, for clock_resolved calls it
	 * directly: a paused member gets nothing new, not even the rest of
	 * a clock of runs (a finishing agent stops once its PAUSE is read:
	 * protocol.md "Pausing and leaving"). */
	if (m->paused || !m->wants_work || pool->stopping ||
	    !pool->fx->can_send(pool->fx_data, m))
		return;
	overlap_pull(pool, m);
	if (m->clock_open + m->next_open > run ||
	    gp_ssp_get(pool->ssp, (uint64_t)m->agent_id, &info) < 0)
		return;
	/* A clock that is not all out: only a clock of runs gets more
	 * (a clock the schedule could not fill waits to be resolved). */
	if (info.work_this_clock < m->clock_target) {
		if (m->clock_runs)
			serve_run(pool, m, &info, run);
		return;
	}
	serve_ahead(pool, m, &info);
}

void gp_work_serve(struct gp_pool *pool, struct gp_member *m)
{
	uint64_t ids[GP_WORK_MAX];
	struct gp_ssp_agent_info info;
	uint64_t agent = (uint64_t)m->agent_id;
	uint64_t down = 0, sent_us;
	uint32_t k, run;
	size_t n = 0;
	bool parked;
	int r;

	if (!m->joined || !m->wants_work || m->paused || pool->stopping ||
	    !pool->fx->can_send(pool->fx_data, m) || !pool->minibatches_total)
		return;
	if (gp_ssp_get(pool->ssp, agent, &info) < 0)
		return;
	if (m->clock_open > 0) {
		serve_next(pool, m);
		return;
	}
	if (!gp_ssp_may_compute(pool->ssp, agent)) {
		gp_ssp_wait(pool->ssp, agent, &parked);
		return;
	}
	/* Nothing to hand out (with thousands of agents, the usual case):
	 * no sizing, which looks at every agent (gp_work_serve_all calls
	 * this for each). */
	if (gp_sched_queued(pool->sched) == 0)
		return;
	/* A clock of runs keeps its size from run to run. */
	if (info.work_this_clock == 0) {
		k = work_per_clock(pool, &info, &m->clock_runs);
		/* An agent without local steps computes every minibatch of
		 * a clock on the same parameters, and applied one after the
		 * other they are steps from a point the model has left (a
		 * capability-less client given 10-35 a clock took the test
		 * loss from 2.3 to 62): at most GP_WORK_BASE a clock keeps
		 * its updates within one minibatch of staleness, which the
		 * staleness scale counts. */
		if (!(m->caps & GP_CAP_LOCAL_STEP) && k > GP_WORK_BASE) {
			k = GP_WORK_BASE;
			m->clock_runs = false;
		}
		/* Under AdamW every minibatch is a full-size step whatever
		 * its gradient's scale, so a second one on the same
		 * parameters is a step from a point already left: one a
		 * clock (tools/bench/gpt.py: 2 agents at 2 a clock ended
		 * 6.6 % above single-process AdamW, at 1 about 2-4 %). */
		if (!(m->caps & GP_CAP_LOCAL_STEP) &&
		    pool->job->optimizer == GP_OPT_ADAMW)
			k = 1;
		if (one_a_clock(pool, m)) {
			k = 1;
			m->clock_runs = false;
		}
		m->clock_target = k;
	}
	k = m->clock_target > info.work_this_clock ?
		    m->clock_target - info.work_this_clock : 0;
	run = run_steps(pool, m, m->clock_runs);
	if (k > run)
		k = run;
	if (k == 0)
		return;
	r = gp_sched_assign(pool->sched, agent, (uint64_t)gp_now_ms(), k, ids, &n);
	if (r != 0 || n == 0)
		return; /* everything open is out; retried on the next event */
	m->clock = info.clock;
	/* The probe's start (below): before the pull's encoding, so that
	 * the first minibatch cannot reach the agent before it. */
	sent_us = gp_mono_us();
	if (!pool->first_work_us)
		pool->first_work_us = sent_us;
	n = hand_out(pool, m, info.clock, m->clock_target < run ?
					      m->clock_target : run,
		     false, ids, n, &down);
	if (n == 0)
		return;
	m->work_since_ms = gp_now_ms();
	gp_ssp_note_work(pool->ssp, agent, (uint32_t)n);
	/* The agent held no other work: this run's round trip measures its
	 * link (gp_work_answered). */
	gp_ssp_link_sent(pool->ssp, agent, info.clock, sent_us,
			 down + n * work_minibatch_bytes(pool, m));
	/* The next run, or the next clock, can follow at once. */
	serve_next(pool, m);
}

void gp_work_answered(struct gp_pool *pool, struct gp_member *m,
		       const struct gp_msg_update *u, size_t k)
{
	struct gp_ssp_agent_info info;
	uint64_t bytes = 0;
	double sync;

	pool->group_mean = pool->group_mean > 0 ?
		pool->group_mean + ((double)k - pool->group_mean) /
					   GP_WORK_GROUP_MEAN_N :
		(double)k;

	/* Headers and items are small against the values. */
	for (size_t i = 0; i < u->n_blocks; i++)
		bytes += gp_msg_payload_size(u->blocks[i].dtype,
					     u->blocks[i].count);
	/* What the agent held the work, where it says (held_us): its
	 * compute, its update's quantisation, a busy machine's waits,
	 * which are not the link's. From compute_us alone
	 * a 1 Gbit/s link measured 73-95 Mbit/s here: the first run's 250
	 * KB took 2 ms on the wire and the agent 22 ms beside its compute. */
	if (gp_ssp_link_answered(pool->ssp, (uint64_t)m->agent_id,
				 (int64_t)u->clock, pool->msg_read_us ?
				 pool->msg_read_us : gp_mono_us(),
				 u->compute_us, u->held_us, bytes) != 1 ||
	    gp_ssp_get(pool->ssp, (uint64_t)m->agent_id, &info) < 0)
		return;
	sync = gp_work_sync_interval(pool);
	gp_debug("agent %" PRId64 ": link %.1f Mbit/s, sync interval %.0f ms",
		 m->agent_id, info.link_bps * 8e-6, sync * 1e3);
	/* The owner sees the pool's pace change, not every sample. */
	if (fabs(sync - pool->sync_interval_logged) >
	    0.25 * pool->sync_interval_logged + 0.005) {
		gp_info("sync interval %.0f ms (agent %" PRId64 "'s link %.1f "
			"Mbit/s)", sync * 1e3, m->agent_id,
			info.link_bps * 8e-6);
		pool->sync_interval_logged = sync;
	}
}

void gp_work_update_read(struct gp_pool *pool, struct gp_member *m)
{
	/* serve_next's conditions: a pausing member finishes its work on
	 * the copy it has. */
	if (m->joined && !m->paused && m->wants_work && !pool->stopping &&
	    pool->fx->can_send(pool->fx_data, m))
		overlap_pull(pool, m);
}

void gp_work_request(struct gp_pool *pool, struct gp_member *m, uint32_t count)
{
	m->wants_work = count > 0;
	gp_work_serve(pool, m);
}

void gp_work_serve_all(struct gp_pool *pool)
{
	uint64_t until = gp_mono_us() + (pool->serve_budget_us ?
					 pool->serve_budget_us :
					 GP_WORK_SERVE_BUDGET_US);
	size_t queued = gp_sched_queued(pool->sched);
	struct gp_member *m;
	uint32_t visits;
	uint64_t id;

	/* Those the SSP bound held, in the order they waited. */
	while (gp_ssp_pop_ready(pool->ssp, &id) == 1) {
		m = gp_members_find(pool, id);
		if (m)
			gp_work_serve(pool, m);
		if (gp_mono_us() >= until)
			goto later;
	}
	/* Every member could use only queued minibatches (a member held
	 * back by SSP waits in its queue, popped above): with none left,
	 * the rest is a scan of thousands for nothing. While some are
	 * queued, a pass visits at most GP_WORK_SERVE_SCAN members, going on
	 * from where the last one stopped: with 10,000 members joining, a
	 * pass over all of them after every JOIN and update was 13 % of
	 * serve (perf; the members' SSP lookups and channel checks), and
	 * each member is still visited within n / GP_WORK_SERVE_SCAN passes
	 * (the tick makes one every 100 ms). */
	visits = pool->serve_scan ? pool->serve_scan : GP_WORK_SERVE_SCAN;
	if (visits > pool->n_members)
		visits = pool->n_members;
	while (visits-- > 0 && gp_sched_queued(pool->sched) > 0 &&
	       (m = gp_members_step(pool, GP_WALK_SERVE))) {
		gp_work_serve(pool, m);
		/* Again soon only if this pass handed work out: a pass
		 * that is slow for nothing (a loaded machine) must not
		 * chain for ever. */
		if (gp_mono_us() >= until && visits > 0 &&
		    gp_sched_queued(pool->sched) < queued)
			goto later;
	}
	return;
later:
	if (pool->fx->serve_later)
		pool->fx->serve_later(pool->fx_data);
}

/* A paused agent (on battery, not idle, paused by its owner) stops counting
 * toward the SSP bound once the work it holds is resolved, so that the
 * others do not wait for it; RESUME brings it back like a returning agent.
 * Returns true when it was parked (m may have risen: serve_all()). */
static bool park_if_paused(struct gp_pool *pool, struct gp_member *m)
{
	if (!m->paused || m->ssp_parked || !m->joined || m->clock_open ||
	    m->next_open ||
	    gp_sched_outstanding(pool->sched, (uint64_t)m->agent_id) > 0)
		return false;
	gp_ssp_mark_dead(pool->ssp, (uint64_t)m->agent_id);
	m->ssp_parked = true;
	gp_info("agent %" PRId64 " paused: out of the SSP bound until it resumes",
		m->agent_id);
	return true;
}

/* Whether m, all of its clock resolved, would be parked at the bound by
 * an agent whose link is not measured yet while its own is: that agent's
 * first clock is a probe with a full pull and lasts its link's whole wait
 * (2 s at 5 Mbit/s), and the clocks around it are compute-sized until it
 * is answered, so m would run s clocks ahead at once and wait (15 % of a
 * 9 s run next to a 5 Mbit/s link). m's clock then goes on by one more
 * run instead: it computes through the probe. */
static bool extend_for_probe(const struct gp_pool *pool,
			     const struct gp_member *m)
{
	struct gp_ssp_agent_info self, o;
	int64_t min = gp_ssp_min_clock(pool->ssp);

	if (m->next_work || !(pool->job->comm_share > 0) ||
	    !(m->caps & GP_CAP_LOCAL_STEP) || one_a_clock(pool, m) ||
	    gp_ssp_get(pool->ssp, (uint64_t)m->agent_id, &self) < 0 ||
	    !(self.link_bps > 0) || !self.speed_measured ||
	    self.clock + 1 <= min + (int64_t)gp_ssp_bound(pool->ssp))
		return false;
	for (size_t i = 0; gp_ssp_get_at(pool->ssp, i, &o) == 0; i++)
		if (o.live && o.id != self.id && o.clock == min &&
		    !(o.link_bps > 0))
			return true;
	return false;
}

/* One minibatch of the agent's clock is resolved; when the whole clock is,
 * the agent moves to the next. */
static void clock_resolved(struct gp_pool *pool, struct gp_member *m)
{
	uint64_t agent = (uint64_t)m->agent_id;
	int r;

	if (m->clock_open == 0)
		return;
	if (--m->clock_open > 0) {
		/* A run ended: the clock's next may follow. */
		if (m->clock_work < m->clock_target)
			serve_next(pool, m);
		return;
	}
	if (gp_sched_outstanding(pool->sched, agent) > m->next_open)
		return;
	/* A clock of runs goes on with its next run, with a pull when the
	 * copy needs one, unless none can be had now (the last minibatches
	 * of the job are out, a stopping pool, a closing connection). */
	if (gp_sched_queued(pool->sched) > 0 &&
	    m->clock_work >= m->clock_target && extend_for_probe(pool, m)) {
		struct gp_ssp_agent_info info;
		struct link_clock lc;

		work_link_clock(pool, &lc);
		if (gp_ssp_get(pool->ssp, agent, &info) == 0) {
			m->clock_target = m->clock_work +
					  (uint32_t)work_run_length(pool, &info, &lc);
			m->clock_runs = true;
		}
	}
	if (m->clock_work < m->clock_target &&
	    m->clock_runs &&
	    gp_sched_queued(pool->sched) > 0) {
		gp_work_serve(pool, m);
		if (m->clock_open > 0)
			return;
	}
	r = gp_ssp_advance(pool->ssp, agent, m->clock + 1);
	if (r != 0)
		gp_debug("agent %" PRId64 ": clock not advanced: %s", m->agent_id,
			 r > 0 ? gp_reason_str(r) : strerror(-r));
	m->clock_work = 0;
	if (r == 0 && m->next_work) {
		/* The work handed out ahead becomes this clock's. */
		m->clock++;
		m->clock_work = m->next_work;
		m->clock_open = m->next_open;
		m->clock_target = m->next_target > m->next_work ?
					  m->next_target : m->next_work;
		m->clock_runs = m->next_runs;
		m->view = m->view_next;
		gp_ssp_note_work(pool->ssp, agent, m->next_work);
	}
	m->next_work = 0;
	m->next_open = 0;
	m->next_target = 0;
	m->next_runs = false;
	park_if_paused(pool, m);
	gp_work_serve_all(pool);
}

void gp_work_resolved(struct gp_pool *pool, struct gp_member *m, int64_t clock)
{
	if (clock == m->clock)
		clock_resolved(pool, m);
	else if (clock == m->clock + 1 && m->next_open > 0)
		m->next_open--;
}

/* It was this agent's, whatever clock the update claims: resolve it (the
 * current clock's first, as TCP keeps the order), or a lying clock would
 * hold the agent, and the SSP bound, for ever. */
void gp_work_refused(struct gp_pool *pool, struct gp_member *m)
{
	if (m->clock_open > 0)
		clock_resolved(pool, m);
	else if (m->next_open > 0)
		m->next_open--;
}

bool gp_work_pause(struct gp_pool *pool, struct gp_member *m)
{
	m->paused = true;
	if (!park_if_paused(pool, m))
		return false;
	gp_work_serve_all(pool);
	return true;
}

void gp_work_resume(struct gp_pool *pool, struct gp_member *m)
{
	int64_t clock;

	m->paused = false;
	if (m->ssp_parked) {
		m->ssp_parked = false;
		/* Revived agents hold no parameters as far as SSP knows: a
		 * full pull, as for a returning agent. */
		if (gp_ssp_revive(pool->ssp, (uint64_t)m->agent_id, &clock) == 0) {
			m->clock = clock;
			m->pulled_version = 0;
			memset(&m->view, 0, sizeof(m->view));
			memset(&m->view_next, 0, sizeof(m->view_next));
			m->clock_work = 0;
			m->clock_target = 0;
		}
	}
	gp_work_serve(pool, m);
}
