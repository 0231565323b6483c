/* How a member's clocks and runs are sized (work-impl.h): what its
 * pulls, updates and minibatches cost in bytes, the pool's link-sized
 * clock (comm_share, max_sync_interval), the runs within it, the first
 * clock and the pacing by serve's own load. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "downlink.h"
#include "log.h"
#include "members.h"
#include "util.h"
#include "work.h"
#include "work-impl.h"

/* Bytes of n values as m's pulls carry parameters (f16 or f32). */
static uint64_t value_bytes(const struct gp_member *m, uint64_t n)
{
	return n * ((m->caps & GP_CAP_F16) ? 2 : 4);
}

/* Bytes of n values as m's pulled momentum carries them. */
static uint64_t sum_bytes(const struct gp_member *m, uint64_t n)
{
	if (m->caps & GP_CAP_Q8)
		return gp_msg_payload_size(GP_DTYPE_Q8, n);
	return value_bytes(m, n);
}

/* Bytes of n values as m's updates carry them: in 4 bits with
 * GP_CAP_Q4, else as the momentum. */
static uint64_t update_bytes(const struct gp_member *m, uint64_t n)
{
	if (m->caps & GP_CAP_Q4)
		return gp_msg_payload_size(GP_DTYPE_Q4, n);
	return sum_bytes(m, n);
}

/* The bytes of v parameter values as a pull of m carries them: q8
 * changes against its mirror (GP_CAP_PARAM_DELTA) once it holds a copy,
 * q4 ones with GP_CAP_Q4_DELTA, else f16 or f32. */
static uint64_t param_bytes(const struct gp_member *m, uint64_t v,
			    bool whole)
{
	if ((m->caps & GP_CAP_PARAM_DELTA) && !whole)
		return gp_msg_payload_size((m->caps & GP_CAP_Q4_DELTA) ?
						   GP_DTYPE_Q4_DELTA :
						   GP_DTYPE_Q8_DELTA, v);
	return value_bytes(m, v);
}

/* The bytes of the values a pull of m sends now: every shard changed
 * since its last pull, with its momentum when agreed; whole: as f16 (the
 * session's first pull, or every shard for verification). */
static uint64_t pull_values_bytes(const struct gp_member *m, uint64_t v,
				  bool whole)
{
	return param_bytes(m, v, whole) +
	       ((m->caps & GP_CAP_MOMENTUM) ? sum_bytes(m, v) : 0);
}

uint64_t work_pulled_bytes(const struct gp_pool *pool,
			     const struct gp_member *m)
{
	/* A pull of every shard is whole, unless it is (or, once sent,
	 * was) the session's first as changes (GP_CAP_ZERO_MIRROR). */
	bool changes = m->pulled_once ? m->pull_as_changes :
					gp_downlink_first_change(m);

	return pull_values_bytes(
		m, gp_params_changed_values(pool->params, m->pulled_version),
		m->pulled_version == 0 && !changes);
}

/* The same for a pull of every shard (a clock picked for verification). */
uint64_t work_full_pull_bytes(const struct gp_pool *pool,
				const struct gp_member *m)
{
	return pull_values_bytes(m, pool->n_params, true);
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
	uint64_t up = update_bytes(m, n) * ((m->caps & GP_CAP_SUMS) ? 2 : 1);
	uint64_t down = pull_values_bytes(m, n, false);

	return up + (live > 1 ? down : 0);
}

/* The bytes a minibatch without local data carries per sample: a 28 x 28
 * u8 image and its label (MINIBATCH, docs/protocol.md). */
#define SAMPLE_BYTES (28 * 28 + 1)

/* The bytes each minibatch of m adds: its sample indices, or its pixels
 * and labels. */
uint64_t work_minibatch_bytes(const struct gp_pool *pool,
				const struct gp_member *m)
{
	uint64_t b = pool->job->batch_size;

	return (m->caps & (GP_CAP_LOCAL_DATA | GP_CAP_DATA_SHARDS)) ?
		       4 * b : SAMPLE_BYTES * b;
}

/* The memo of the pool-wide sizing figures (pool.h) for `live` live
 * agents, emptied when older than GP_WORK_MEMO_US or made for another
 * number; NULL in a pool of at most GP_WORK_MEMO_MIN: compute them each
 * time. */
static struct gp_work_memo *memo(const struct gp_pool *pool, size_t live)
{
	/* The pool is not const to its owner: only the memo is written
	 * through this const view. */
	struct gp_work_memo *mo = (struct gp_work_memo *)&pool->memo;
	uint64_t now;

	if (live <= GP_WORK_MEMO_MIN)
		return NULL;
	now = gp_mono_us();
	if (mo->live != live || now >= mo->at_us + GP_WORK_MEMO_US)
		*mo = (struct gp_work_memo){ .at_us = now, .live = live };
	return mo;
}

/* gp_ssp_slowest_speed, through the memo. */
static double slowest_speed(const struct gp_pool *pool)
{
	struct gp_work_memo *mo = memo(pool, gp_ssp_live_count(pool->ssp));

	if (!mo)
		return gp_ssp_slowest_speed(pool->ssp);
	if (!mo->have_slowest) {
		mo->slowest = gp_ssp_slowest_speed(pool->ssp);
		mo->have_slowest = true;
	}
	return mo->slowest;
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
	struct gp_work_memo *mo;

	if (!(share > 0))
		return 0;
	mo = memo(pool, live);
	if (mo && mo->have_cycle)
		return mo->cycle;
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
	if (mo) {
		mo->cycle = cycle;
		mo->have_cycle = true;
	}
	return cycle;
}

/* What a link-sized clock costs agent a: the wait (seconds) for its
 * clock's fixed bytes (update up, pull down), for its update alone, and
 * what one minibatch costs it (its compute and its own bytes). */
struct link_cost {
	double wait, up, per;
};

/* Fills *ret for agent a; false when its link or speed is not measured. */
static bool link_cost(const struct gp_pool *pool,
		      const struct gp_ssp_agent_info *a, size_t live,
		      struct link_cost *ret)
{
	const struct gp_member *m = gp_members_find(pool, a->id);

	if (!m || !(a->link_bps > 0) || !(a->speed > 0))
		return false;
	ret->wait = (double)clock_fixed_bytes(pool, m, live) / a->link_bps;
	ret->up = (double)clock_fixed_bytes(pool, m, 1) / a->link_bps;
	ret->per = 1.0 / a->speed +
		   (double)work_minibatch_bytes(pool, m) / a->link_bps;
	return true;
}

/* Minibatches that fill agent a's share of a clock of cycle seconds: what
 * is left of the clock after the wait for its fixed bytes, over the time
 * one minibatch costs. 0 when its link or speed is not measured. */
static double link_work(const struct gp_pool *pool,
			const struct gp_ssp_agent_info *a, double cycle,
			size_t live)
{
	struct link_cost c;
	double left;

	if (!(cycle > 0) || !link_cost(pool, a, live, &c))
		return 0;
	left = cycle - c.wait;
	return left > 0 ? left / c.per : 1;
}


void work_link_clock(const struct gp_pool *pool, struct link_clock *ret)
{
	struct gp_work_memo *mo;

	ret->live = gp_ssp_live_count(pool->ssp);
	ret->cycle = link_clock_s(pool, ret->live);
	ret->work = 0;
	mo = memo(pool, ret->live);
	if (mo && mo->have_clock) {
		ret->work = mo->clock_work;
		return;
	}
	for (size_t i = 0; ret->cycle > 0; i++) {
		struct gp_ssp_agent_info o;
		double w;

		if (gp_ssp_get_at(pool->ssp, i, &o) < 0)
			break;
		if (!o.live)
			continue;
		w = link_work(pool, &o, ret->cycle, ret->live);
		if (!(w > 0)) {
			ret->work = 0;
			break;
		}
		ret->work += w;
	}
	if (mo) {
		mo->clock_work = ret->work;
		mo->have_clock = true;
	}
}

/* The local steps agent a computes between two merges with the others'
 * work (a run): at most the job's run_steps (GP_WORK_LINK_STEPS, 48, by
 * default), for what the statistics bear is a number of steps, not a time (250 ms on a quiet machine held 100-150
 * steps, and two agents on 20 Mbit/s links ended 2 epochs at 72-82 %
 * against 84 % with 48). And early on at most the pool's applied
 * minibatches times a's share of the pool's work (1 / live while a link
 * is not measured): the model moves fast at first, and long runs from
 * one point, merged, cost accuracy (two agents on 20 Mbit/s links ended 2
 * epochs at 80 % against 84 %), as post-local SGD found (Lin et al.,
 * 2020: synchronous first, local steps later). An agent that does most of
 * the work merges little and so grows its runs at once. */
double work_run_length(const struct gp_pool *pool,
			 const struct gp_ssp_agent_info *a,
			 const struct link_clock *lc)
{
	double share = 1.0 / (double)(lc->live ? lc->live : 1), l;
	double cap = pool->job->run_steps ? pool->job->run_steps :
					    GP_WORK_LINK_STEPS;
	const struct gp_member *m = gp_members_find(pool, a->id);
	struct link_cost c;

	if (lc->work > 0)
		share = link_work(pool, a, lc->cycle, lc->live) / lc->work;
	l = floor((double)pool->applied_run * share);
	if (l < (double)pool->group_floor)
		l = (double)pool->group_floor;
	/* GP_CAP_OVERLAP: a run computes while the update before it goes
	 * up, and one shorter than that transfer leaves the agent waiting
	 * on its link, the ramp's first runs most of all: their updates are
	 * as large as any. So such a member's runs are at least as long as
	 * their update's transfer (its link and speed measured). Two agents
	 * on 5 Mbit/s links then sent 49 bytes a sample against 71 and
	 * reached 85 % in 3.8 s against 4.2; on 20 Mbit/s links 59 against
	 * 78 bytes in the same time (medians of four rounds,
	 * docs/performance.md). */
	if (m && (m->caps & GP_CAP_OVERLAP) && link_cost(pool, a, 1, &c) &&
	    c.per > 0 && l < ceil(c.up / c.per))
		l = ceil(c.up / c.per);
	return l > cap ? cap : l < GP_WORK_BASE ? GP_WORK_BASE : l;
}

/* Runs that agent a fits in a clock when each begins with a pull: at
 * least 1, 0 when its link or speed is not measured. */
static double runs_pulled(const struct gp_pool *pool,
			  const struct gp_ssp_agent_info *a,
			  const struct link_clock *lc)
{
	struct link_cost c;
	double n;

	if (!(lc->cycle > 0) || !link_cost(pool, a, lc->live, &c))
		return 0;
	n = floor(lc->cycle / (work_run_length(pool, a, lc) * c.per + c.wait));
	return n < 1 ? 1 : n;
}

/* The minibatches of agent a's link-sized clock next to other live
 * agents. A clock lasts as long as the slowest link's (a clock capped at
 * one run of a fast agent is shorter, and SSP's bound in clocks parked
 * the fast agent 88 % of the time next to a 5 Mbit/s link), and an agent
 * that computes more than one run in it gets its clock as runs
 * (work_run_length), each merged with what the others applied meanwhile: a
 * pull before the next run when its copy lacks a quarter of a run or
 * more (copy_good), else the next run goes on while the last one's
 * update travels. A pull costs the agent its wait, and it needs one only
 * after another agent's run landed: at most once per run of the others
 * (u, each fitting its runs with a pull before each). So its clock holds
 * the larger of: its runs when each begins with a pull, and the runs that
 * fit beside 1 + u waits when each run costs its compute or its update's
 * upload, whichever is longer; never more than it computes beside one
 * wait. */
static double link_steps(const struct gp_pool *pool,
			 const struct gp_ssp_agent_info *a,
			 const struct link_clock *lc)
{
	double full = link_work(pool, a, lc->cycle, lc->live);
	double l, u = 0, n, nb;
	struct link_cost c;
	struct gp_work_memo *mo;

	if (lc->live < 2 || !link_cost(pool, a, lc->live, &c))
		return full;
	l = work_run_length(pool, a, lc);
	if (full <= l)
		return full;
	n = runs_pulled(pool, a, lc);
	mo = memo(pool, lc->live);
	if (mo && mo->have_runs) {
		u = mo->runs - (a->live ? n : 0);
		if (u < 0)
			u = 0;
	} else {
		double all = 0;

		for (size_t i = 0;; i++) {
			struct gp_ssp_agent_info o;
			double r;

			if (gp_ssp_get_at(pool->ssp, i, &o) < 0)
				break;
			if (!o.live)
				continue;
			r = o.id == a->id ? n : runs_pulled(pool, &o, lc);
			all += r;
			if (o.id != a->id)
				u += r;
		}
		if (mo) {
			mo->runs = all;
			mo->have_runs = true;
		}
	}
	nb = (lc->cycle - (1 + u) * c.wait) /
	     (l * c.per > c.up ? l * c.per : c.up);
	if (nb > n)
		n = nb;
	return n * l > full ? full : n * l < l ? l : n * l;
}

double gp_work_sync_interval(const struct gp_pool *pool)
{
	return link_clock_s(pool, gp_ssp_live_count(pool->ssp));
}

/* The clock of an agent whose speed is not measured yet. It is short
 * (GP_WORK_BASE): an announced speed is a benchmark's (or a lie), and a
 * throttled or busy machine would hold the others for a whole long
 * clock; the same clock measures its link. In a pool of more than
 * GP_WORK_MEMO_MIN live agents it holds what the pool's updates hold
 * lately (pool->group_mean), at most GP_WORK_PACE_MAX and at most what
 * the announced speed computes in GP_WORK_FIRST_CLOCK_S: at 10,000
 * agents the pool hands out 1,400-1,800 minibatches a second, so
 * thousands still had their first clock after the join storm, and their
 * groups of 2 made whole 5 s stretches of the steady work (2,280-2,950
 * updates against 700-900 at 10-11 a group) and the heartbeat tail
 * (docs/performance.md "Scale"). Never less than the pacing floor. */
static uint32_t first_clock(const struct gp_pool *pool,
			    const struct gp_ssp_agent_info *info)
{
	double k = GP_WORK_BASE;

	if (gp_ssp_live_count(pool->ssp) > GP_WORK_MEMO_MIN) {
		double cap = floor(info->speed * GP_WORK_FIRST_CLOCK_S);

		k = round(pool->group_mean);
		if (k > GP_WORK_PACE_MAX)
			k = GP_WORK_PACE_MAX;
		if (k > cap)
			k = cap;
		if (k < GP_WORK_BASE)
			k = GP_WORK_BASE;
	}
	if (k < (double)pool->group_floor)
		k = pool->group_floor;
	return (uint32_t)k;
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
uint32_t work_per_clock(const struct gp_pool *pool,
			  const struct gp_ssp_agent_info *info, bool *ret_runs)
{
	double slowest = slowest_speed(pool), base, ms, k;
	struct link_clock lc;
	uint32_t old;
	size_t live;

	*ret_runs = false;
	if (!(info->speed > 0) || slowest == 0 || !info->speed_measured)
		return first_clock(pool, info);
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
	old = gp_ssp_work_per_clock_at(pool->ssp, info->id,
				       (uint32_t)(base + 0.5), GP_MSG_GROUP_MAX,
				       slowest);
	work_link_clock(pool, &lc);
	k = round(link_steps(pool, info, &lc));
	if (k <= (double)old)
		k = old;
	else
		*ret_runs = lc.live > 1 && k > work_run_length(pool, info, &lc);
	/* While serve's loop sets the pace, fewer and larger updates. */
	if (k < (double)pool->group_floor)
		k = pool->group_floor;
	return k > GP_WORK_MAX ? GP_WORK_MAX : (uint32_t)k;
}

void gp_work_pace(struct gp_pool *pool, uint64_t stall_us, uint64_t now_us)
{
	uint32_t f = pool->group_floor, was = f, cap = GP_WORK_PACE_MAX;
	size_t live = gp_ssp_live_count(pool->ssp);
	uint64_t stall;

	/* A job's shorter runs cap it as they cap the runs (under
	 * GP_WORK_PACE_START: no floor at all, below). */
	if (pool->job->run_steps && pool->job->run_steps < cap)
		cap = pool->job->run_steps;

	if (stall_us > pool->pace_stall_us)
		pool->pace_stall_us = stall_us;
	if (!pool->pace_at_us)
		pool->pace_at_us = now_us;
	if (now_us < pool->pace_at_us + GP_WORK_PACE_WINDOW_US)
		return;
	stall = pool->pace_stall_us;
	pool->pace_at_us = now_us;
	pool->pace_stall_us = 0;
	if (live <= GP_WORK_MEMO_MIN) {
		f = 0;
		pool->pace_quiet = 0;
	} else if (stall > GP_WORK_STALL_HIGH_US) {
		f = f < GP_WORK_PACE_START ? GP_WORK_PACE_START : f + (f + 3) / 4;
		pool->pace_quiet = 0;
	} else if (stall < GP_WORK_STALL_LOW_US) {
		if (f && ++pool->pace_quiet >= GP_WORK_PACE_QUIET) {
			f -= (f + 7) / 8;
			pool->pace_quiet = 0;
		}
	} else {
		pool->pace_quiet = 0;
	}
	if (f > cap)
		f = cap;
	if (f && f < GP_WORK_PACE_START)
		f = 0;
	if (f == was)
		return;
	pool->group_floor = f;
	/* At most once a window, and only while the pool is paced. */
	if (f)
		gp_info("serve's loop stalled at most %.0f ms in %.1f s (%zu "
			"live agents): clocks hold at least %u minibatches",
			(double)stall / 1e3, GP_WORK_PACE_WINDOW_US / 1e6,
			live, f);
	else
		gp_info("serve's loop keeps up (%zu live agents): clocks "
			"sized by the agents again", live);
}

uint32_t gp_work_per_clock(const struct gp_pool *pool,
			   const struct gp_ssp_agent_info *info)
{
	bool runs;

	return work_per_clock(pool, info, &runs);
}
