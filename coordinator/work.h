/* What a member gets when it asks for work, and how its clocks move.
 *
 * A clock of an agent is a handful of minibatches sized to its measured
 * speed (gp_work_per_clock). Serving an agent its next clock means: if the
 * SSP rule lets it compute, send the parameter shards that changed since
 * its last pull (the read clock becomes the min clock), then its
 * minibatches. Once every minibatch of its clock is resolved (applied,
 * discarded or refused), its clock advances, which may release agents
 * parked at the bound. The clock after the current one may be handed out
 * ahead while the current one's updates are on their way (pipelining).
 * A paused member leaves the SSP bound once its work is resolved.
 *
 * Pure decisions over struct gp_pool; what they send goes through the
 * pool's effects. docs/architecture.md tells the whole story. */
#ifndef GP_WORK_H
#define GP_WORK_H

#include <stdbool.h>
#include <stdint.h>

#include "pool.h"

/* Minibatches per clock of an agent whose speed is not measured yet, and
 * the most any agent gets (the job's clock_duration and the links size the
 * others; a clock longer than GP_MSG_GROUP_MAX goes out as several
 * groups, and only the links make one that long). */
#define GP_WORK_BASE 2
#define GP_WORK_MAX 2048
/* The most members one gp_work_serve_all() pass visits beyond those SSP
 * released (work.c). */
#define GP_WORK_SERVE_SCAN 256
/* The most local steps (minibatches) a link-sized clock holds when other
 * agents' work is merged with it: beyond, the merged runs cost accuracy. */
#define GP_WORK_LINK_STEPS 48

/* GP_CAP_OVERLAP: a member's pull follows every this many of its updates
 * read (when others' work landed meanwhile), on its own, while it
 * computes its next run. A pull costs about what an update does; after
 * every update, two agents on 20 Mbit/s links sent 85 bytes a sample
 * against 70-76 after every second, and reached 85 % no sooner
 * (docs/performance.md "Local AdamW steps on slow links, and overlap");
 * the staleness scale counts what the copy lacks meanwhile. */
#define GP_WORK_OVERLAP_RUNS 2

/* Above this many live agents, the pool-wide figures that size clocks
 * (the slowest speed, the links' clock, the runs of the others: each a
 * scan of every live agent) are computed at most every GP_WORK_MEMO_US
 * and reused meanwhile, so that handing out work stays O(1) per event in
 * a pool of thousands; smaller pools compute them every time. */
#define GP_WORK_MEMO_MIN 64
#define GP_WORK_MEMO_US 100000
/* One gp_work_serve_all call hands out work for at most this long (µs):
 * each member served may get a parameter pull and a clock of
 * minibatches, and a clock edge that frees 500 members parked by the
 * SSP bound held serve's loop for 200 ms at 10,000 members; the rest
 * waits for the next call (fx->serve_later). At least one member is
 * served per call. */
#define GP_WORK_SERVE_BUDGET_US 5000
/* The clock of an agent computing alone: it reads only its own writes (no
 * pull needed), so a long clock costs nothing in quality and saves round
 * trips. */
#define GP_WORK_SOLO_CLOCK_MS 25
/* The clock of a pool of more than two agents, at most. */
#define GP_WORK_POOL_CLOCK_MS 1

/* Pacing by serve's own load. In a pool of more than GP_WORK_MEMO_MIN
 * live agents the coordinator's loop, not the agents, can be what sets
 * the pace: every update costs it a read, an apply, a ledger row batch and
 * usually a pull, whatever it holds, and 10,000 agents handed 3-8
 * minibatches an update stalled the loop 40-270 ms a turn (heartbeats
 * 179-473 ms at p99) where 9-11 an update kept them under 62 ms. (Most of
 * those small updates were first clocks, which first_clock in work.c now
 * sizes; alone, this floor left the tail in 4 of 8 runs: it is the guard
 * for a loop that does stall, as in the join storm.) So the
 * loop's stalls (how late its 100 ms tick fires) are watched over windows
 * of GP_WORK_PACE_WINDOW_US: a window with a stall beyond
 * GP_WORK_STALL_HIGH_US raises the fewest minibatches a clock and a run
 * hold (pool->group_floor: to GP_WORK_PACE_START, then by a quarter), up
 * to GP_WORK_PACE_MAX (with 48, the join storm's stalls took it there and
 * the steady work ran 672 rows/s against 1,200-1,860: the schedule holds
 * two epochs' minibatches at most, and large groups gave them to fewer
 * agents, each epoch's tail waiting longer for the last ones);
 * GP_WORK_PACE_QUIET windows in a row with every
 * stall under GP_WORK_STALL_LOW_US lower it by an eighth. Larger groups
 * cost the agents nothing when they wait for the coordinator anyway, and
 * a smaller pool is never paced (its agents' speeds and links size it). */
#define GP_WORK_PACE_WINDOW_US 1000000
#define GP_WORK_STALL_HIGH_US 40000
#define GP_WORK_STALL_LOW_US 15000
#define GP_WORK_PACE_START 4
#define GP_WORK_PACE_MAX 12
#define GP_WORK_PACE_QUIET 3
/* An agent's first clock in such a pool: what its announced speed
 * computes in this long at most (work.c first_clock), and the updates
 * the mean group size follows (an exponential mean over about this
 * many). */
#define GP_WORK_FIRST_CLOCK_S 0.5
#define GP_WORK_GROUP_MEAN_N 64

/* Serve's loop was stall_us late at now_us (gp_mono_us): counts it in the
 * pacing window, and at the window's end moves pool->group_floor. */
void gp_work_pace(struct gp_pool *pool, uint64_t stall_us, uint64_t now_us);

/* Minibatches for the clock of the agent described by info (borrowed),
 * sized from the job's clock_duration and the slowest live agent's speed
 * (gp_ssp_slowest_speed). */
uint32_t gp_work_per_clock(const struct gp_pool *pool,
			   const struct gp_ssp_agent_info *info);

/* The clock length in seconds the measured links ask for (comm_share,
 * max_sync_interval; see work.c), 0 when none does. */
double gp_work_sync_interval(const struct gp_pool *pool);

/* An UPDATE of m (both borrowed) answering k minibatches was applied: k
 * goes into the pool's mean group (pool->group_mean); if it answers the
 * clock that probes m's link, the round trip is a sample of it
 * (gp_ssp_link_answered). */
void gp_work_answered(struct gp_pool *pool, struct gp_member *m,
		      const struct gp_msg_update *u, size_t k);

/* An UPDATE of m was read (gp_apply_update, applied or not): with
 * GP_CAP_OVERLAP, the pull that follows it goes out now if m's copy
 * lacks others' updates, while m computes its next run (work.c
 * overlap_pull). */
void gp_work_update_read(struct gp_pool *pool, struct gp_member *m);

/* A WORK_REQUEST: m (borrowed) wants work when count > 0; served now if
 * SSP allows. */
void gp_work_request(struct gp_pool *pool, struct gp_member *m, uint32_t count);

/* Hands m its next clock of work when SSP allows (or the clock after,
 * ahead, when all of the current one is out). */
void gp_work_serve(struct gp_pool *pool, struct gp_member *m);

/* After anything that may let agents proceed: parked agents whose bound
 * is now met, then every member that wants work and has none. */
void gp_work_serve_all(struct gp_pool *pool);

/* The pull budget (job pull_budget_mib): serve counts the bytes a
 * parameter send left unwritten on its connection (gp_work_pull_queued)
 * until the connection drains (gp_work_pull_written) or closes
 * (gp_members_remove), and then, while work is handed out, gives the room
 * to the pulls that waited for it, oldest first (gp_work_pull_serve). */
void gp_work_pull_queued(struct gp_pool *pool, struct gp_member *m,
			 uint64_t bytes);
void gp_work_pull_written(struct gp_pool *pool, struct gp_member *m);
void gp_work_pull_serve(struct gp_pool *pool);

/* Empties the queue of waiting pulls and what was counted or memoised
 * for the job (the job's end; the next job starts afresh). */
void gp_work_finish(struct gp_pool *pool);

/* One of m's minibatches of `clock` was applied or discarded as its own. */
void gp_work_resolved(struct gp_pool *pool, struct gp_member *m, int64_t clock);

/* One of m's minibatches was refused and released, whatever clock the
 * update claimed. */
void gp_work_refused(struct gp_pool *pool, struct gp_member *m);

/* PAUSE: m stops counting toward the SSP bound once the work it holds is
 * resolved. Returns true when it was parked now. */
bool gp_work_pause(struct gp_pool *pool, struct gp_member *m);

/* RESUME: back in the bound like a returning agent, and served. */
void gp_work_resume(struct gp_pool *pool, struct gp_member *m);

#endif
