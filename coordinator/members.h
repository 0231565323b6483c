/* Who is in the pool: the member table and the join and leave decisions
 * that need no socket (the pool's size limit, one connection per agent,
 * the SSP clock a member starts at, the capabilities agreed). The token
 * and ledger checks of a JOIN stay in serve.c, which owns the database
 * calls of a handshake. */
#ifndef GP_MEMBERS_H
#define GP_MEMBERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool.h"

/* Lists m (borrowed until gp_members_remove) in the pool. */
void gp_members_add(struct gp_pool *pool, struct gp_member *m);

/* Unlists m. */
void gp_members_remove(struct gp_pool *pool, struct gp_member *m);

/* The next member of walk w (borrowed): the one at its cursor (the head when the
 * cursor is past the end), the cursor moved past it; NULL with no
 * members. n calls visit every member once when none joins or leaves
 * meanwhile; one that leaves is skipped, one that joins is visited
 * from the next time round. O(1). */
struct gp_member *gp_members_step(struct gp_pool *pool, enum gp_walk w);

/* How many of n members a walk visits a tick when it covers them in
 * `slices` ticks: n / slices rounded up, at least GP_WALK_SLICE_MIN, at
 * most n. */
uint32_t gp_members_slice(uint32_t n, uint32_t slices);

/* Frees the pool's member index (at the end of the pool, after every
 * member was removed or with none left to use). */
void gp_members_finish(struct gp_pool *pool);

/* The joined member with this agent id, or NULL (borrowed). O(1). */
struct gp_member *gp_members_find(const struct gp_pool *pool, uint64_t agent_id);

/* [pool] max_agents, counted before a token use is spent: true when m
 * (whose key is set) would be one member too many. An agent replacing
 * its own older connection is not a new one. */
bool gp_members_full(const struct gp_pool *pool, const struct gp_member *m,
		     uint32_t *ret_live);

/* Accepts m's JOIN as agent `agent_id` (the ledger said yes): closes an
 * older connection of the same agent (its work goes back to the queue),
 * adds the agent to SSP or revives it there, and agrees the capabilities
 * from what j (borrowed) offers and the job allows. Returns 0 with
 * *ret_clock, the clock it starts at, or -EBUSY (SSP refused it; nothing
 * changed in m). */
int gp_members_join(struct gp_pool *pool, struct gp_member *m,
		    int64_t agent_id, const struct gp_msg_join *j,
		    int64_t *ret_clock);

/* m's connection closed: a member's work goes back to the queue and it
 * stops counting toward the SSP bound. Returns how many minibatches went
 * back. */
size_t gp_members_leave(struct gp_pool *pool, struct gp_member *m);

/* Why an established connection m has waited too long (job.work_timeout),
 * if it has: each would hold the pool, so serve.c closes it. */
enum gp_overdue {
	GP_OVERDUE_NONE = 0,
	/* A member holds work and sent no update: it would hold the SSP
	 * bound, and everyone with it, for ever. */
	GP_OVERDUE_UPDATE,
	/* Past the handshake (a token or a membership) but no JOIN: it
	 * would hold a connection for ever. */
	GP_OVERDUE_JOIN,
	/* A member counts toward the SSP bound from its JOIN: one that
	 * never asks for work (and is not paused) would stall the pool. */
	GP_OVERDUE_REQUEST,
};

/* Whether m (borrowed) is overdue at `now` (ms); *ret_since gets how long
 * it has waited. */
enum gp_overdue gp_members_overdue(const struct gp_pool *pool,
				   const struct gp_member *m, int64_t now,
				   int64_t *ret_since);

#endif
