/* What a member gets when it asks for work, and how its clocks move: see
 * work.h. */
#include "work.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "log.h"
#include "members.h"
#include "reason.h"
#include "util.h"

double gp_pool_lr_at(const struct gp_pool *pool, uint64_t id)
{
	return gp_job_lr_at(pool->job, id, pool->minibatches_total,
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
static bool copy_good(const struct gp_pool *pool, const struct gp_member *m,
		      int64_t clock, uint32_t k, bool *ret_current)
{
	struct gp_ssp_agent_info info;
	uint64_t lag = gp_params_updates(pool->params) - m->view.base;

	*ret_current = false;
	if (!(m->caps & GP_CAP_LOCAL_STEP) || !m->pulled_version ||
	    lag < m->view.own)
		return false;
	lag -= m->view.own;
	if (lag == 0) {
		*ret_current = true;
		return true;
	}
	return lag < k &&
	       (4 * lag < k || lag <= GP_WORK_BASE ||
		!(gp_work_sync_interval(pool) > 0)) &&
	       gp_ssp_get(pool->ssp, (uint64_t)m->agent_id, &info) == 0 &&
	       info.read_clock != INT64_MIN &&
	       info.read_clock >= clock - (int64_t)gp_ssp_bound(pool->ssp);
}

/* Bytes of n values as m's pulls carry parameters (f16 or f32). */
static uint64_t value_bytes(const struct gp_member *m, uint64_t n)
{
	return n * ((m->caps & GP_CAP_F16) ? 2 : 4);
}

/* Bytes of n values as m's updates and pulled momentum carry them. */
static uint64_t sum_bytes(const struct gp_member *m, uint64_t n)
{
	if (m->caps & GP_CAP_Q8)
		return gp_msg_payload_size(GP_DTYPE_Q8, n);
	return value_bytes(m, n);
}

/* The bytes of the values a pull of m sends now: every shard changed
 * since its last pull, with its momentum when agreed. */
static uint64_t pulled_bytes(const struct gp_pool *pool,
			     const struct gp_member *m)
{
	uint64_t v = gp_params_changed_values(pool->params, m->pulled_version);

	return value_bytes(m, v) +
	       ((m->caps & GP_CAP_MOMENTUM) ? sum_bytes(m, v) : 0);
}

/* Brings the agent's copy up to date for its work at `clock` (ahead: the
 * clock after the one it is computing): sends the shards changed since
 * its last pull, unless its copy is good as it is. */
static int pull(struct gp_pool *pool, struct gp_member *m, int64_t clock,
		uint32_t k, bool ahead, uint64_t *ret_bytes)
{
	size_t n = gp_params_changed_since(pool->params, m->pulled_version,
					   NULL, 0);
	uint64_t updates = gp_params_updates(pool->params);
	struct gp_view *target = ahead ? &m->view_next : &m->view;
	bool current = false;
	/* A clock picked for verification pulls every shard (verify.h). */
	bool check = gp_verify_pick(pool, m, clock);
	int r;

	if (check) {
		m->pulled_version = 0;
		n = gp_params_shard_count(pool->params);
	}
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
	r = pool->fx->send_params(pool->fx_data, m);
	if (r < 0)
		return r;
	if (check)
		gp_verify_sent(pool, m, clock);
	*ret_bytes = pulled_bytes(pool, m);
	m->pulled_version = gp_params_version(pool->params);
	*target = (struct gp_view){ .base = updates, .own_from = clock };
	return gp_ssp_pulled(pool->ssp, (uint64_t)m->agent_id, m->pulled_version);
}

/* The bytes of a clock of m that do not grow with its work: its update
 * (two sums with GP_CAP_SUMS) and, when other agents' work will have made
 * its copy stale, the pull (parameters, and momentum with
 * GP_CAP_MOMENTUM). An agent alone reads its own writes and pulls
 * nothing. */
static uint64_t clock_fixed_bytes(const struct gp_pool *pool,
				  const struct gp_member *m, size_t live)
{
	uint64_t n = pool->n_params;
	uint64_t up = sum_bytes(m, n) * ((m->caps & GP_CAP_SUMS) ? 2 : 1);
	uint64_t down = value_bytes(m, n) +
			((m->caps & GP_CAP_MOMENTUM) ? sum_bytes(m, n) : 0);

	return up + (live > 1 ? down : 0);
}

/* The bytes a minibatch without local data carries per sample: a 28 x 28
 * u8 image and its label (MINIBATCH, docs/protocol.md). */
#define SAMPLE_BYTES (28 * 28 + 1)

/* The bytes each minibatch of m adds: its sample indices, or its pixels
 * and labels. */
static uint64_t minibatch_bytes(const struct gp_pool *pool,
				const struct gp_member *m)
{
	uint64_t b = pool->job->batch_size;

	return (m->caps & (GP_CAP_LOCAL_DATA | GP_CAP_DATA_SHARDS)) ?
		       4 * b : SAMPLE_BYTES * b;
}

/* The clock length (seconds) the links ask for: long enough that the
 * slowest measured link waits for its clock's fixed bytes at most
 * comm_share of the clock, but computing at most max_sync_interval beyond
 * that wait (longer local runs cost more samples than the bytes they
 * save). Every agent's clock lasts that long (clocks of equal time: SSP's
 * bound in clocks then parks nobody), each computing what it can in it
 * beside its own wait, so a fast agent next to a slow link computes for
 * the slow one's whole wait. 0 when comm_share is off or no live link is
 * measured. */
static double link_clock_s(const struct gp_pool *pool, size_t live)
{
	double share = pool->job->comm_share, wait_max = 0, cycle;

	if (!(share > 0))
		return 0;
	for (const struct gp_member *m = pool->members; m; m = m->next) {
		struct gp_ssp_agent_info a;
		double wait;

		if (!m->joined || gp_ssp_get(pool->ssp, (uint64_t)m->agent_id,
					     &a) < 0 ||
		    !a.live || !(a.link_bps > 0))
			continue;
		wait = (double)clock_fixed_bytes(pool, m, live) / a.link_bps;
		if (wait > wait_max)
			wait_max = wait;
	}
	cycle = wait_max / share;
	if (cycle > wait_max + (double)pool->job->max_sync_interval_ms / 1000.0)
		cycle = wait_max + (double)pool->job->max_sync_interval_ms / 1000.0;
	return cycle;
}

/* Minibatches that fill agent a's share of a clock of cycle seconds: what
 * is left of the clock after the wait for its fixed bytes, over the time
 * one minibatch costs (its compute and its own bytes). 0 when its link or
 * speed is not measured. */
static double link_work(const struct gp_pool *pool,
			const struct gp_ssp_agent_info *a, double cycle,
			size_t live)
{
	const struct gp_member *m = gp_members_find(pool, a->id);
	double left, per;

	if (!m || !(cycle > 0) || !(a->link_bps > 0) || !(a->speed > 0))
		return 0;
	left = cycle - (double)clock_fixed_bytes(pool, m, live) / a->link_bps;
	per = 1.0 / a->speed + (double)minibatch_bytes(pool, m) / a->link_bps;
	return left > 0 ? left / per : 1;
}

double gp_work_sync_interval(const struct gp_pool *pool)
{
	return link_clock_s(pool, gp_ssp_live_count(pool->ssp));
}

/* A clock lasts the job's clock_duration or one minibatch of the slowest
 * live agent, whichever is longer (GP_WORK_SOLO_CLOCK_MS at least for an
 * agent alone), and every agent gets what it computes in that time at its
 * measured speed: a slow device does less per clock instead of holding
 * the fast ones back, and agents of equal speed get one minibatch each
 * (with several agents, longer clocks trained worse: see
 * docs/architecture.md "Pool"). When the links ask for longer clocks
 * (link_clock_s), the clock is that long instead, and each agent gets
 * what it computes in it beside its wait. */
uint32_t gp_work_per_clock(const struct gp_pool *pool,
			   const struct gp_ssp_agent_info *info)
{
	double slowest = gp_ssp_slowest_speed(pool->ssp), base, ms, k;
	uint32_t old;
	size_t live;

	/* Until its speed is measured, an agent gets a short first clock: an
	 * announced speed is a benchmark's, and a throttled or busy machine
	 * would hold the others for a whole long clock. The same first clock
	 * measures its link. */
	if (!(info->speed > 0) || slowest == 0 || !info->speed_measured)
		return GP_WORK_BASE;
	live = gp_ssp_live_count(pool->ssp);
	ms = (double)pool->job->clock_duration_ms;
	if (live == 1 && ms < GP_WORK_SOLO_CLOCK_MS)
		ms = GP_WORK_SOLO_CLOCK_MS;
	/* What an agent computes without seeing the others' work, and so
	 * the staleness of its updates in minibatches, grows with the clock
	 * and with the number of others. Two agents trained better with long
	 * clocks, three or more on this 2-core machine worse (they drift up
	 * to s clocks apart): beyond two, a clock is one minibatch of the
	 * slowest agent (docs/architecture.md "Pool"). */
	if (live > 2 && ms > GP_WORK_POOL_CLOCK_MS)
		ms = GP_WORK_POOL_CLOCK_MS;
	base = slowest * ms / 1000.0;
	if (base < 1)
		base = 1;
	old = gp_ssp_work_per_clock(pool->ssp, info->id, (uint32_t)(base + 0.5),
				    GP_MSG_GROUP_MAX);
	k = round(link_work(pool, info, link_clock_s(pool, live), live));
	/* Local runs grow with the training done: early on the model moves
	 * fast and long runs from one point, merged, cost accuracy (two
	 * agents on 20 Mbit/s links ended 2 epochs at 80 % against 84 %), as
	 * post-local SGD found (Lin et al., 2020: synchronous first, local
	 * steps later). So an agent's clock holds at most as many minibatches
	 * as the pool applied so far per live agent. */
	if (live > 1 && k > (double)pool->applied_run / (double)live)
		k = (double)pool->applied_run / (double)live;
	/* And at most GP_WORK_LINK_STEPS with others to merge with: what
	 * the statistics bear depends on the local steps, not on the time
	 * they take (250 ms on a less loaded machine, 100-150 steps, ended 2
	 * epochs at 20 Mbit/s at 72-82 %). */
	if (live > 1 && k > GP_WORK_LINK_STEPS)
		k = GP_WORK_LINK_STEPS;
	if (k <= (double)old)
		return old;
	return k > GP_WORK_MAX ? GP_WORK_MAX : (uint32_t)k;
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

/* Pipelining: hands out the agent's clock c + 1 while its updates of clock
 * c are still on their way, once all of c's work is out and c + 1 <= m + s,
 * so the agent never idles for a round trip at a clock boundary. Its copy
 * must then need no pull (read-my-writes, nobody else's update since): it
 * already holds its own updates of c. TCP keeps the order, so c's updates
 * all arrive (and c is advanced) before any of c + 1's. */
static void serve_ahead(struct gp_pool *pool, struct gp_member *m,
			const struct gp_ssp_agent_info *info)
{
	uint64_t ids[GP_WORK_MAX];
	uint64_t down = 0;
	size_t n = 0;
	bool current;
	uint32_t k;
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
	k = gp_work_per_clock(pool, info);
	if (!copy_good(pool, m, info->clock + 1, k, &current))
		return;
	r = gp_sched_assign(pool->sched, (uint64_t)m->agent_id,
			    (uint64_t)gp_now_ms(), k, ids, &n);
	if (r != 0 || n == 0)
		return;
	r = pull(pool, m, info->clock + 1, k, true, &down);
	for (size_t i = 0; i < n; i++) {
		if (r >= 0 && pool->fx->send_minibatch(pool->fx_data, m, ids[i],
						       info->clock + 1,
						       group_at(i, n)) >= 0) {
			m->next_work++;
			m->next_open++;
		} else {
			gp_sched_release(pool->sched, (uint64_t)m->agent_id, ids[i]);
		}
	}
}

void gp_work_serve(struct gp_pool *pool, struct gp_member *m)
{
	uint64_t ids[GP_WORK_MAX];
	struct gp_ssp_agent_info info;
	uint64_t agent = (uint64_t)m->agent_id;
	uint64_t down = 0;
	uint32_t k;
	size_t n = 0;
	bool parked;
	int r;

	if (!m->joined || !m->wants_work || m->paused || pool->stopping ||
	    !pool->fx->can_send(pool->fx_data, m) || !pool->minibatches_total)
		return;
	if (gp_ssp_get(pool->ssp, agent, &info) < 0)
		return;
	if (m->clock_open > 0) {
		serve_ahead(pool, m, &info);
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
	k = gp_work_per_clock(pool, &info);
	/* An agent without local steps computes every minibatch of a clock on
	 * the same parameters, and applied one after the other they are
	 * steps from a point the model has left (a capability-less client
	 * given 10-35 a clock took the test loss from 2.3 to 62): at most
	 * GP_WORK_BASE a clock keeps its updates within one minibatch of
	 * staleness, which the staleness scale counts. */
	if (!(m->caps & GP_CAP_LOCAL_STEP) && k > GP_WORK_BASE)
		k = GP_WORK_BASE;
	m->clock_target = k;
	k = k > info.work_this_clock ? k - info.work_this_clock : 0;
	if (k == 0)
		return;
	r = gp_sched_assign(pool->sched, agent, (uint64_t)gp_now_ms(), k, ids, &n);
	if (r != 0 || n == 0)
		return; /* everything open is out; retried on the next event */
	r = pull(pool, m, info.clock, m->clock_target, false, &down);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			gp_sched_release(pool->sched, agent, ids[i]);
		gp_warn("agent %" PRId64 ": cannot send parameters: %s",
			m->agent_id, strerror(-r));
		return;
	}
	m->clock = info.clock;
	if (!pool->first_work_us)
		pool->first_work_us = gp_mono_us();
	for (size_t i = 0; i < n; i++) {
		r = pool->fx->send_minibatch(pool->fx_data, m, ids[i], info.clock,
					     group_at(i, n));
		if (r < 0) {
			gp_sched_release(pool->sched, agent, ids[i]);
			continue;
		}
		m->clock_work++;
		m->clock_open++;
	}
	m->work_since_ms = gp_now_ms();
	gp_ssp_note_work(pool->ssp, agent, (uint32_t)n);
	/* The agent held no other work: this clock's round trip measures its
	 * link (gp_work_answered). */
	gp_ssp_link_sent(pool->ssp, agent, info.clock, gp_mono_us(),
			 down + m->clock_work * minibatch_bytes(pool, m));
	/* All of this clock is out: the next one can follow at once. */
	if (m->clock_open > 0 && gp_ssp_get(pool->ssp, agent, &info) == 0)
		serve_ahead(pool, m, &info);
}

void gp_work_answered(struct gp_pool *pool, struct gp_member *m,
		       const struct gp_msg_update *u)
{
	struct gp_ssp_agent_info info;
	uint64_t bytes = 0;
	double sync;

	/* Headers and items are small against the values. */
	for (size_t i = 0; i < u->n_blocks; i++)
		bytes += gp_msg_payload_size(u->blocks[i].dtype,
					     u->blocks[i].count);
	if (gp_ssp_link_answered(pool->ssp, (uint64_t)m->agent_id,
				 (int64_t)u->clock, gp_mono_us(), u->compute_us,
				 bytes) != 1 ||
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

void gp_work_request(struct gp_pool *pool, struct gp_member *m, uint32_t count)
{
	m->wants_work = count > 0;
	gp_work_serve(pool, m);
}

void gp_work_serve_all(struct gp_pool *pool)
{
	uint64_t id;

	while (gp_ssp_pop_ready(pool->ssp, &id) == 1) {
		struct gp_member *m = gp_members_find(pool, id);

		if (m)
			gp_work_serve(pool, m);
	}
	for (struct gp_member *m = pool->members; m; m = m->next)
		gp_work_serve(pool, m);
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

/* One minibatch of the agent's clock is resolved; when the whole clock is,
 * the agent moves to the next. */
static void clock_resolved(struct gp_pool *pool, struct gp_member *m)
{
	uint64_t agent = (uint64_t)m->agent_id;
	int r;

	if (m->clock_open == 0)
		return;
	if (--m->clock_open > 0)
		return;
	if (gp_sched_outstanding(pool->sched, agent) > m->next_open)
		return;
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
		m->clock_target = m->next_work;
		m->view = m->view_next;
		gp_ssp_note_work(pool->ssp, agent, m->next_work);
	}
	m->next_work = 0;
	m->next_open = 0;
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
