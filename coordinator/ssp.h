/* Stale synchronous parallel (SSP) clocks: who may compute, who must wait,
 * and how stale each update is. Pure logic, no I/O; the coordinator feeds it
 * events and acts on the answers.
 *
 * Clocks. Each agent has an integer clock c: "the agent is working on clock
 * c, and every update it made at clocks < c has been applied". An agent
 * leaves clock c (gp_ssp_advance, c -> c+1) only after its work for c was
 * applied (the coordinator checks that it has no outstanding minibatch).
 *
 * Min clock m. The minimum clock over live agents. Because of the rule
 * above, every update from clocks < m that will ever be applied has been
 * applied. m never decreases: agents that join or come back start at
 * max(their clock, m), and when no agent is live m keeps its last value.
 *
 * The SSP rule (bound s). An agent at clock c may compute iff c <= m + s,
 * so that the parameters it can read include every update from clocks
 * <= c - s - 1. s = 0 is bulk-synchronous; a large s is asynchronous. An
 * agent past the bound waits (gp_ssp_wait) and is woken
 * (gp_ssp_pop_ready) when m rises.
 *
 * Read clock and staleness. When the coordinator sends an agent parameters
 * (a pull) it records the agent's read clock r = m at that moment: the
 * copy includes every update from clocks < r. The staleness of an update the
 * agent computes at clock c is
 *
 *     staleness = c - r            (0 <= staleness <= s)
 *
 * i.e. how many clocks of other agents' updates its parameters may be
 * missing. It is bounded by s because a pull happens only while the agent
 * may compute (c <= m + s = r + s at the pull) and a pull is required as soon
 * as r < c - s (gp_ssp_needs_pull). gp_ssp_check_update() rejects an update
 * that would break the bound, so "every logged update has staleness <= s"
 * is an invariant the ledger can check.
 *
 * Liveness. A dead agent (heartbeat timeout, disconnect) stops counting
 * toward m at once; its updates are refused until it is revived. */
#ifndef GP_SSP_H
#define GP_SSP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reason.h"

/* Hard limits (checked on create/add and when decoding a checkpoint). */
#define GP_SSP_MAX_AGENTS (1u << 20)
#define GP_SSP_MAX_BOUND (1u << 30)
/* Clocks stay below this so that clock + s never overflows. */
#define GP_SSP_MAX_CLOCK (INT64_C(1) << 60)

struct gp_ssp;

struct gp_ssp_agent_info {
	uint64_t id;
	int64_t clock;          /* the clock the agent is working on */
	int64_t read_clock;     /* m at its last pull; INT64_MIN: never pulled */
	uint64_t pulled_version; /* params version of its last pull (0: none) */
	uint32_t work_this_clock; /* minibatches given to it at this clock */
	double speed;           /* estimated minibatches per second; 0: unknown */
	bool speed_measured;    /* observed, not only announced */
	bool live;
	bool waiting;           /* parked by gp_ssp_wait(), not yet popped */
	/* Measured link: bytes moved per second of the agent's waiting on
	 * them (gp_ssp_link_answered); 0: not measured yet. */
	double link_bps;
};

/* Creates an empty SSP state with staleness bound s. The first agent starts
 * at clock 0. *ret is returned-and-owned-by-caller (gp_ssp_destroy()).
 * Returns 0, -EINVAL if s > GP_SSP_MAX_BOUND, -ENOMEM. */
int gp_ssp_create(uint32_t s, struct gp_ssp **ret);

/* Frees the state; NULL is a no-op. */
void gp_ssp_destroy(struct gp_ssp *ssp);

/* The staleness bound s. */
uint32_t gp_ssp_bound(const struct gp_ssp *ssp);

/* The min clock m (see above). */
int64_t gp_ssp_min_clock(const struct gp_ssp *ssp);

/* Number of agents known (live or dead) and live. */
size_t gp_ssp_count(const struct gp_ssp *ssp);
size_t gp_ssp_live_count(const struct gp_ssp *ssp);

/* Adds a live agent at clock m (an agent joining halfway through training
 * starts where the slowest live agent is, so it holds nobody back and is
 * bounded like everyone else). speed is its announced speed (minibatches
 * per second, 0 if unknown). *ret_clock (optional) gets its clock.
 * Returns 0, -EEXIST if the id is known, -ENOSPC past GP_SSP_MAX_AGENTS,
 * -ENOMEM. */
int gp_ssp_add(struct gp_ssp *ssp, uint64_t id, double speed,
	       int64_t *ret_clock);

/* Forgets an agent (revoked, or the coordinator prunes it). Returns 0 or
 * -ENOENT. m may rise: call gp_ssp_pop_ready() afterwards. */
int gp_ssp_remove(struct gp_ssp *ssp, uint64_t id);

/* Marks an agent dead: it stops counting toward m (m may rise: call
 * gp_ssp_pop_ready()), its wait is cancelled. Idempotent. Returns 0 or
 * -ENOENT. */
int gp_ssp_mark_dead(struct gp_ssp *ssp, uint64_t id);

/* Makes a dead (or live) agent live again at clock max(its clock, m), with
 * no parameters (read clock reset, pulled version 0: it must pull before
 * computing). *ret_clock (optional) gets the clock. Returns 0 or -ENOENT. */
int gp_ssp_revive(struct gp_ssp *ssp, uint64_t id, int64_t *ret_clock);

/* Copies an agent's state into *ret. Returns 0 or -ENOENT. */
int gp_ssp_get(const struct gp_ssp *ssp, uint64_t id,
	       struct gp_ssp_agent_info *ret);

/* Copies the i-th agent (0 <= i < gp_ssp_count(), in id order) into *ret.
 * Returns 0 or -ENOENT. */
int gp_ssp_get_at(const struct gp_ssp *ssp, size_t i,
		  struct gp_ssp_agent_info *ret);

/* The SSP rule: true iff the agent is live and its clock <= m + s. */
bool gp_ssp_may_compute(const struct gp_ssp *ssp, uint64_t id);

/* True iff the agent's parameters are too old for its clock (read clock <
 * clock - s, or never pulled): it must pull before it is given work. The
 * coordinator may pull more often (every clock keeps the model freshest);
 * only the shards changed since the agent's pulled_version are sent. */
bool gp_ssp_needs_pull(const struct gp_ssp *ssp, uint64_t id);

/* Records that the agent was just sent parameters at params version
 * `version` (read clock := m). Returns 0, or a reason (UNKNOWN_AGENT,
 * AGENT_DEAD, CLOCK_BOUND when it may not compute now: a pull must not be
 * served to a waiting agent, or its staleness would exceed s). */
int gp_ssp_pulled(struct gp_ssp *ssp, uint64_t id, uint64_t version);

/* Classifies a clock an agent reports, without changing anything. Returns 0
 * if it equals the agent's clock, else a reason: UNKNOWN_AGENT, AGENT_DEAD,
 * CLOCK_AHEAD (greater), CLOCK_BEHIND (smaller). */
int gp_ssp_check_clock(const struct gp_ssp *ssp, uint64_t id, int64_t clock);

/* Moves the agent from clock c to new_clock, which must be c + 1. Returns
 * 0, or a reason with nothing changed: UNKNOWN_AGENT, AGENT_DEAD,
 * CLOCK_AHEAD (new_clock > c + 1), CLOCK_BEHIND (new_clock <= c),
 * CLOCK_BOUND (the agent may not compute at c, so it cannot have finished
 * it). The coordinator checks beforehand that the agent's work for c was
 * applied (GP_REASON_WORK_PENDING otherwise). m may rise: call
 * gp_ssp_pop_ready() afterwards. */
int gp_ssp_advance(struct gp_ssp *ssp, uint64_t id, int64_t new_clock);

/* Validates an update the agent computed at `clock` and gives its
 * staleness (clock - read clock, see above) in *ret_staleness. Returns 0,
 * or a reason: UNKNOWN_AGENT, AGENT_DEAD, CLOCK_AHEAD/CLOCK_BEHIND (clock is
 * not the agent's clock), STALE (never pulled, or staleness > s). Changes
 * nothing. */
int gp_ssp_check_update(const struct gp_ssp *ssp, uint64_t id, int64_t clock,
			int64_t *ret_staleness);

/* Parks an agent that asked for work but may not compute; it is returned by
 * gp_ssp_pop_ready() once m has risen enough. *ret_parked (optional) says
 * whether it was parked: false when it may compute already (serve it now).
 * Returns 0, or a reason: UNKNOWN_AGENT, AGENT_DEAD. */
int gp_ssp_wait(struct gp_ssp *ssp, uint64_t id, bool *ret_parked);

/* Pops one parked agent that may now compute (after an advance, death or
 * removal raised m). Returns 1 with *ret_id set, or 0 when none is ready.
 * Agents pop in id order. */
int gp_ssp_pop_ready(struct gp_ssp *ssp, uint64_t *ret_id);

/* Feeds a measured speed (minibatches per second over the last clock, or
 * any consistent unit) into the agent's estimate (exponential moving average,
 * weight 0.3 on the new sample; the first sample replaces an unknown or
 * seeded speed). Non-finite or non-positive samples are ignored. Returns 0
 * or -ENOENT. */
int gp_ssp_observe_speed(struct gp_ssp *ssp, uint64_t id, double speed);

/* The agent's link, measured from its own traffic. A clock handed out
 * while the agent held no other work is a probe: the coordinator notes
 * when it sent it and how many bytes (parameters and minibatches) went
 * down (gp_ssp_link_sent), and when the first update of that clock comes
 * back, the bytes up and the time the agent reports it held the work
 * (gp_ssp_link_answered: UPDATE.held_us when it is at least compute_us
 * and under the round trip, else compute_us; a held_us of the whole
 * round trip or more would make any link infinitely fast). The rest
 * of the round trip is what the agent waited on the wire (both
 * transfers, the latency, the coordinator's own encoding and reading),
 * and (bytes down + up) / wait is one sample of the link's rate, fed into
 * an exponential moving average (weight 0.3; the first sample replaces
 * nothing). A round trip that waited under 0.1 ms counts as 0.1 ms.
 * The probe is forgotten when the agent dies or is revived; the rate is
 * kept (the same agent, most likely the same link). Not checkpointed.
 * Both return -ENOENT for an unknown agent; gp_ssp_link_answered returns
 * 1 when it took a sample, 0 when the update answered no open probe. */
int gp_ssp_link_sent(struct gp_ssp *ssp, uint64_t id, int64_t clock,
		     uint64_t now_us, uint64_t bytes);
int gp_ssp_link_answered(struct gp_ssp *ssp, uint64_t id, int64_t clock,
			 uint64_t now_us, uint64_t compute_us,
			 uint64_t held_us, uint64_t bytes);

/* Sets the agent's speed from what it announced (its start-up benchmark,
 * which knows nothing of throttling or a busy machine): used until the
 * first observation, which replaces it. The speed given to gp_ssp_add()
 * is such a seed too. Non-finite or non-positive values are ignored.
 * Returns 0 or -ENOENT. */
int gp_ssp_seed_speed(struct gp_ssp *ssp, uint64_t id, double speed);

/* The speed of the slowest live agent whose speed is measured, or, while
 * none is, of the slowest live one with an announced speed; 0 when no live
 * agent has a speed. */
double gp_ssp_slowest_speed(const struct gp_ssp *ssp);

/* Minibatches the agent should do per clock: clamp(round(base * speed /
 * slowest live speed), 1, max). The slowest live agent does `base` per
 * clock and the others proportionally more, so clocks take about the same
 * wall time for everyone and a persistently slow agent does less work per
 * clock instead of making the fast ones wait; the SSP slack absorbs the
 * transient delays. Agents of unknown speed (0) are left out of "slowest"
 * and are themselves given base. base == 0 counts as 1; max == 0 means no
 * cap. */
uint32_t gp_ssp_work_per_clock(const struct gp_ssp *ssp, uint64_t id,
			       uint32_t base, uint32_t max);
/* The same with the slowest speed given (gp_ssp_slowest_speed, perhaps
 * as the caller remembered it). */
uint32_t gp_ssp_work_per_clock_at(const struct gp_ssp *ssp, uint64_t id,
				  uint32_t base, uint32_t max, double slowest);

/* Counts minibatches given to the agent at its current clock (reset by
 * gp_ssp_advance), so the coordinator can give at most work_per_clock.
 * Returns 0 or -ENOENT. */
int gp_ssp_note_work(struct gp_ssp *ssp, uint64_t id, uint32_t n);

/* Encodes the state for a checkpoint: *ret_data (owned by caller, free())
 * and *ret_len. Layout in ssp.c. Returns 0 or -ENOMEM. */
int gp_ssp_save(const struct gp_ssp *ssp, uint8_t **ret_data,
		size_t *ret_len);

/* Decodes a checkpoint into a new state (*ret, owned by caller). Every
 * agent comes back dead (its connection is gone): it is revived when it
 * reconnects and then pulls. data is borrowed. Returns 0, -EBADMSG for
 * malformed bytes, -ENOMEM. */
int gp_ssp_load(const uint8_t *data, size_t len, struct gp_ssp **ret);

#endif
