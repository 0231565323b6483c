/* What the coordinator tells each agent about the job (STATS, under
 * GP_CAP_PROGRESS): its name, progress, rate and ETA over the last minute,
 * the latest evaluation, and the member's own credit. Pure: serve.c feeds
 * it the clock, the pool's counters and evaluations, and sends the
 * messages it fills; tests/unit/test-progress.c runs it on a fixture.
 *
 * The rate: STATS goes out after WELCOME, after each evaluation, and
 * every GP_PROGRESS_INTERVAL_MS while the pool trains (gp_progress_due),
 * never per update. */
#ifndef GP_PROGRESS_H
#define GP_PROGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"
#include "pool.h"

#define GP_PROGRESS_INTERVAL_MS 5000
/* The rate and ETA window, as `gradpool-coordinator status` has it. */
#define GP_PROGRESS_WINDOW_MS 60000
#define GP_PROGRESS_POINTS 64   /* one a second, over the window */

struct gp_progress {
	char job_name[GP_MSG_JOB_NAME_MAX + 1];
	double flops_per_sample;        /* of the job's training step */
	/* The pool's applied minibatches and samples over the job, one
	 * point a second, oldest first from head. */
	struct gp_progress_point {
		int64_t ms;
		uint64_t applied, samples;
	} ring[GP_PROGRESS_POINTS];
	size_t head, n;
	/* The latest evaluation: after eval_epochs epochs (0: none). */
	uint32_t eval_epochs;
	float accuracy, test_loss;
	float train_loss;               /* the last epoch's mean, or so far */
	int64_t sent_ms;                /* last round of STATS */
	bool eval_news;                 /* an evaluation not yet sent */
};

/* Names the job for the agents: the job file's name without its folder
 * and extension ("cnn" for /etc/gradpool/cnn.ini), except for the generic
 * "job" (and no file), which names the data set and the model
 * ("fashion-mnist 784-256-128-10"). job_path and model_text are borrowed;
 * writes at most GP_MSG_JOB_NAME_MAX bytes and a NUL into buf. */
void gp_progress_job_name(const char *job_path, const char *data_set,
			  const char *model_text, char *buf, size_t size);

/* Records the pool's counters at now_ms (a point a second at most). */
void gp_progress_record(struct gp_progress *pr, const struct gp_pool *pool,
			int64_t now_ms);

/* An evaluation after eval_epochs completed epochs. */
void gp_progress_eval(struct gp_progress *pr, uint32_t eval_epochs,
		      double accuracy, double test_loss);

/* Whether a round of STATS is due at now_ms (an evaluation, or the
 * interval); marks it sent when it is. */
bool gp_progress_due(struct gp_progress *pr, int64_t now_ms);

/* A STATS round's share of this tick: of the *left members the round has
 * still to visit, n members now, the number to send it to (*left goes
 * down by as many): a slice of GP_WALK_STATS_SLICES, all that is left
 * when the job is done (the tick stops with the pool), never more than
 * n. */
uint32_t gp_progress_round_take(uint32_t *left, uint32_t n, bool done);

/* The pool's applied minibatches per second and samples per second over
 * the window ending at now_ms (0 when nothing was applied in it). */
void gp_progress_rate(const struct gp_progress *pr, int64_t now_ms,
		      double *ret_mb_per_s, double *ret_samples_per_s);

/* Fills *ret (zeroed first) with what a round of STATS tells every
 * member of pool (borrowed) at now_ms; done: the job is done. One scan of
 * the members, so call it once per round, not per member. */
void gp_progress_fill(const struct gp_progress *pr, const struct gp_pool *pool,
		      bool done, int64_t now_ms, struct gp_msg_stats *ret);

/* Adds member m's own part (borrowed): its updates, samples and credit,
 * to *stats, filled by gp_progress_fill(). */
void gp_progress_member(const struct gp_progress *pr,
			const struct gp_member *m, struct gp_msg_stats *stats);

#endif
