/* A small fork-join pool: the numeric loops of one update spread over the
 * machine's cores, the calling thread taking its share.
 *
 * gp_par_for(par, n, fn, arg) runs fn(arg, i) for every task i in [0, n)
 * and returns once all have run. Tasks are taken in order from a shared
 * counter by the caller and the pool's threads, so a helper that is not
 * scheduled costs nothing but the tasks it did not take; a task runs
 * whole on one thread, and the join waits for the tasks taken, not for
 * helpers that woke too late to take one (a helper preempted inside a
 * task holds the join until it runs again). Tasks must not share what
 * they write: each writes its own range or its own result slot, and the
 * caller combines the
 * results in task order afterwards, so that what it computes does not
 * depend on how many threads ran it (or whether any did).
 *
 * One caller at a time (the coordinator's loop thread); a NULL pool runs
 * everything on the caller. */
#ifndef GP_PAR_H
#define GP_PAR_H

#include <stddef.h>

struct gp_par;

/* From this many values on, the coordinator's per-update passes
 * (apply.c's blocks, robust.c's ranges, params.c's shards) and its
 * parameter sends' payloads (serve.c gp_serve_send_blocks) go to the
 * pool; below it the fork and the join cost about what they save. One
 * figure for all four, so a model is split everywhere or nowhere. */
#define GP_PAR_MIN 65536

/* At most this many helper threads. */
#define GP_PAR_THREADS_MAX 15

/* Starts `threads` helper threads (1 to GP_PAR_THREADS_MAX). Returns 0,
 * -EINVAL or a negative errno from thread creation (none are left). */
int gp_par_create(unsigned threads, struct gp_par **ret);

/* Stops and joins the helpers. NULL is a no-op. */
void gp_par_destroy(struct gp_par *par);

/* Helper threads (0 for NULL). */
unsigned gp_par_threads(const struct gp_par *par);

/* Runs fn(arg, i) for i in [0, n), on the caller and the helpers; returns
 * once every task has run. */
void gp_par_for(struct gp_par *par, size_t n,
		void (*fn)(void *arg, size_t i), void *arg);

/* The CPUs this process may run on (its affinity mask; else the online
 * ones). */
long gp_par_cores(void);

/* How many helpers a process with `cores` CPUs gets by default:
 * one fewer than the cores, at most GP_PAR_THREADS_MAX, 0 for one core. */
unsigned gp_par_default_threads(long cores);

#endif
