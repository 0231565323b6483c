/* What coordinator/work.c and work-size.c share (not for other files):
 * what a member's pulls, updates and minibatches cost in bytes, and how
 * its clocks and runs are sized from its speed and link. */
#ifndef GP_WORK_IMPL_H
#define GP_WORK_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool.h"
#include "ssp.h"

/* The pool's link-sized clock as every agent's sizing sees it: its
 * length, the live agents, and the sum of their link_work (0 while one
 * is not measured). */
struct link_clock {
	double cycle, work;
	size_t live;
};

/* The bytes of the values a pull of m sends now (every shard changed
 * since its last pull, with its momentum when agreed), and of a whole
 * one (verification's). */
uint64_t work_pulled_bytes(const struct gp_pool *pool,
			   const struct gp_member *m);
uint64_t work_full_pull_bytes(const struct gp_pool *pool,
			      const struct gp_member *m);
/* The bytes each minibatch of m adds: its sample indices, or its pixels
 * and labels. */
uint64_t work_minibatch_bytes(const struct gp_pool *pool,
			      const struct gp_member *m);
/* The pool's link-sized clock (work-size.c). */
void work_link_clock(const struct gp_pool *pool, struct link_clock *ret);
/* The local steps agent a computes between two merges (a run). */
double work_run_length(const struct gp_pool *pool,
		       const struct gp_ssp_agent_info *a,
		       const struct link_clock *lc);
/* Minibatches for agent info's next clock; *ret_runs: it goes out as
 * runs. */
uint32_t work_per_clock(const struct gp_pool *pool,
			const struct gp_ssp_agent_info *info, bool *ret_runs);

#endif
