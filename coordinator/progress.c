/* The job's progress for the agents (STATS): progress.h says what and
 * when. */
#include "progress.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "members.h"
#include "scheduler.h"

void gp_progress_job_name(const char *job_path, const char *data_set,
			  const char *model_text, char *buf, size_t size)
{
	const char *base = job_path ? strrchr(job_path, '/') : NULL;
	const char *dot;
	size_t n;

	base = base ? base + 1 : job_path ? job_path : "";
	dot = strrchr(base, '.');
	n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
	if (n > GP_MSG_JOB_NAME_MAX)
		n = GP_MSG_JOB_NAME_MAX;
	if (n && !(n == 3 && memcmp(base, "job", 3) == 0)) {
		snprintf(buf, size, "%.*s", (int)n, base);
	} else {
		/* A description is long: its first words say little, so a
		 * described model is "model". */
		bool shorthand = model_text && !strchr(model_text, ' ');

		snprintf(buf, size, "%.24s %.39s", data_set ? data_set : "",
			 shorthand ? model_text : "model");
	}
	/* Whatever the file is called, the name goes on the wire as a str
	 * and is shown on pages: one that is not a well-formed name (a
	 * control character, a UTF-8 character cut at the limit, spaces at
	 * the ends) keeps its printable ASCII, trimmed. */
	if (buf[0] && gp_msg_public_name_check(buf) < 0) {
		size_t o = 0;

		for (size_t i = 0; buf[i]; i++)
			if ((unsigned char)buf[i] >= 0x20 &&
			    (unsigned char)buf[i] < 0x7f && (o || buf[i] != ' '))
				buf[o++] = buf[i];
		while (o > 0 && buf[o - 1] == ' ')
			o--;
		buf[o] = '\0';
	}
}

/* The pool's applied minibatches over the job (restored ones included),
 * less those of complete epochs taken back and waiting to be redone: the
 * job is not done while any wait (scheduler.h). */
static uint64_t job_applied(const struct gp_pool *pool)
{
	uint64_t n = (uint64_t)gp_sched_epoch(pool->sched) *
			     gp_sched_minibatches(pool->sched) +
		     gp_sched_applied_in_epoch(pool->sched);
	uint64_t redo = gp_sched_redo_count(pool->sched);

	return n > redo ? n - redo : 0;
}

void gp_progress_record(struct gp_progress *pr, const struct gp_pool *pool,
			int64_t now_ms)
{
	struct gp_progress_point *last;

	if (pool->epoch_updates)
		pr->train_loss = (float)(pool->epoch_loss_sum /
					 (double)pool->epoch_updates);
	last = pr->n ? &pr->ring[(pr->head + pr->n - 1) % GP_PROGRESS_POINTS] :
		       NULL;
	if (last && now_ms - last->ms < 1000)
		return;
	if (pr->n == GP_PROGRESS_POINTS) {
		pr->head = (pr->head + 1) % GP_PROGRESS_POINTS;
		pr->n--;
	}
	pr->ring[(pr->head + pr->n++) % GP_PROGRESS_POINTS] =
		(struct gp_progress_point){ now_ms, job_applied(pool),
					    pool->samples_run };
}

void gp_progress_eval(struct gp_progress *pr, uint32_t eval_epochs,
		      double accuracy, double test_loss)
{
	if (!(accuracy >= 0 && accuracy <= 1) || !(test_loss >= 0) ||
	    !isfinite(test_loss))
		return;
	pr->eval_epochs = eval_epochs;
	pr->accuracy = (float)accuracy;
	pr->test_loss = (float)test_loss;
	pr->eval_news = true;
}

uint32_t gp_progress_round_take(uint32_t *left, uint32_t n, bool done)
{
	uint32_t k = done ? *left : gp_members_slice(n, GP_WALK_STATS_SLICES);

	if (k > *left)
		k = *left;
	*left -= k;
	return k < n ? k : n; /* members left during the round */
}

bool gp_progress_due(struct gp_progress *pr, int64_t now_ms)
{
	if (!pr->eval_news && now_ms - pr->sent_ms < GP_PROGRESS_INTERVAL_MS)
		return false;
	pr->eval_news = false;
	pr->sent_ms = now_ms;
	return true;
}

void gp_progress_rate(const struct gp_progress *pr, int64_t now_ms,
		      double *ret_mb_per_s, double *ret_samples_per_s)
{
	const struct gp_progress_point *first = NULL, *last;
	double secs;

	*ret_mb_per_s = *ret_samples_per_s = 0;
	if (pr->n < 2)
		return;
	last = &pr->ring[(pr->head + pr->n - 1) % GP_PROGRESS_POINTS];
	for (size_t i = 0; i < pr->n; i++) {
		first = &pr->ring[(pr->head + i) % GP_PROGRESS_POINTS];
		if (now_ms - first->ms <= GP_PROGRESS_WINDOW_MS)
			break;
	}
	secs = (double)(last->ms - first->ms) / 1000.0;
	/* A last point long ago: nothing is being applied. */
	if (secs < 1 || now_ms - last->ms > 5000 || last->applied < first->applied)
		return;
	*ret_mb_per_s = (double)(last->applied - first->applied) / secs;
	*ret_samples_per_s = (double)(last->samples - first->samples) / secs;
}

void gp_progress_fill(const struct gp_progress *pr, const struct gp_pool *pool,
		      bool done, int64_t now_ms, struct gp_msg_stats *ret)
{
	uint64_t total = pool->minibatches_total, applied = job_applied(pool);
	uint32_t epochs = gp_sched_config(pool->sched)->epochs;
	uint32_t epoch = gp_sched_epoch(pool->sched);
	double mb_rate, rate;

	memset(ret, 0, sizeof(*ret));
	snprintf(ret->job_name, sizeof(ret->job_name), "%s", pr->job_name);
	ret->job_id = (uint64_t)pool->job_id;
	ret->state = done ? GP_JOB_STATE_DONE : GP_JOB_STATE_TRAINING;
	ret->epochs = epochs;
	ret->epoch = epoch < epochs ? epoch : epochs ? epochs - 1 : 0;
	ret->progress = done ? 1.0f :
			total ? (float)((double)(applied < total ? applied : total) /
					(double)total) : 0.0f;
	gp_progress_rate(pr, now_ms, &mb_rate, &rate);
	ret->samples_per_s = (float)rate;
	if (done)
		ret->eta_s = 0;
	else if (mb_rate > 0 && total > applied)
		ret->eta_s = (uint32_t)fmin(ceil((double)(total - applied) /
						 mb_rate),
					    (double)(GP_MSG_ETA_UNKNOWN - 1));
	else
		ret->eta_s = GP_MSG_ETA_UNKNOWN;
	ret->loss = pr->train_loss >= 0 && isfinite(pr->train_loss) ?
			    pr->train_loss : 0;
	ret->eval_epochs = pr->eval_epochs;
	ret->accuracy = pr->accuracy;
	ret->test_loss = pr->test_loss;
	/* Counted by members.c: a walk here was O(N) per JOIN. */
	ret->agents_live = pool->n_joined;
}

void gp_progress_member(const struct gp_progress *pr,
			const struct gp_member *m, struct gp_msg_stats *stats)
{
	double gflop;

	stats->updates_accepted = m->credit_updates + m->applied;
	stats->samples_credited = m->credit_samples + m->samples;
	gflop = m->credit_other_gflop + (double)stats->samples_credited *
						pr->flops_per_sample / 1e9;
	stats->credit_mflop = (uint64_t)llround(fmax(gflop, 0) * 1000.0);
}
