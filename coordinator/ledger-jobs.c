/* The ledger's jobs: a job's row and state, the owner's queue (queued,
 * cancelled, the next to run), its size, model and rates for status and
 * the owner's page. Split from ledger.c, which keeps the schema, members,
 * tokens, evaluations and status. */
#include "ledger.h"
#include "ledger-impl.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "util.h"

static const char *const state_names[] = {
	[GP_JOB_CREATED] = "created",
	[GP_JOB_RUNNING] = "running",
	[GP_JOB_DONE] = "done",
	[GP_JOB_FAILED] = "failed",
	[GP_JOB_QUEUED] = "queued",
	[GP_JOB_CANCELLED] = "cancelled",
};

/* ---- jobs -------------------------------------------------------------- */

const char *gp_ledger_job_state_name(enum gp_ledger_job_state state)
{
	if ((unsigned)state < sizeof(state_names) / sizeof(state_names[0]))
		return state_names[state];
	return "unknown";
}

enum gp_ledger_job_state gp_ledger_parse_state(const unsigned char *s)
{
	for (size_t i = 0; i < sizeof(state_names) / sizeof(state_names[0]);
	     i++)
		if (s && strcmp((const char *)s, state_names[i]) == 0)
			return (enum gp_ledger_job_state)i;
	return GP_JOB_FAILED;
}

int gp_ledger_job_create(struct gp_ledger *l, const char *spec, int64_t now,
			 int64_t *ret_id)
{
	int r;

	if (!spec || !ret_id)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_run(&l->c, "cannot create a job",
		      "INSERT INTO jobs (spec, state, created_at, updated_at) "
		      "VALUES (?1, 'created', ?2, ?2)",
		      "ti", spec, now);
	if (r >= 0) {
		*ret_id = sqlite3_last_insert_rowid(l->c.db);
		r = 0;
	}
	pthread_mutex_unlock(&l->lock);
	return r;
}

static int read_job(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_job *job = arg;
	const unsigned char *spec = sqlite3_column_text(st, 1);
	const unsigned char *model = sqlite3_column_text(st, 5);
	char *copy = strdup(spec ? (const char *)spec : "");
	char *mcopy = strdup(model ? (const char *)model : "");

	if (!copy || !mcopy) {
		free(copy);
		free(mcopy);
		return -ENOMEM;
	}
	gp_db_column_text(st, 6, job->source, sizeof(job->source));
	job->epochs = sqlite3_column_int64(st, 7);
	job->id = sqlite3_column_int64(st, 0);
	job->spec = copy;
	job->model = mcopy;
	job->state = gp_ledger_parse_state(sqlite3_column_text(st, 2));
	job->created_at = sqlite3_column_int64(st, 3);
	job->updated_at = sqlite3_column_int64(st, 4);
	return 0;
}

int gp_ledger_job_get(struct gp_ledger *l, int64_t id,
		      struct gp_ledger_job *ret)
{
	int r;

	if (!ret)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_row(&l->c, "cannot read a job", read_job, ret,
		      "SELECT id, spec, state, created_at, updated_at, model,"
		      "  source, coalesce(epochs, 0) "
		      "FROM jobs WHERE ?1 = 0 OR id = ?1 " NEWEST_JOB_ORDER
		      "LIMIT 1",
		      "i", id);
	if (r == 0) {
		gp_db_set_err(&l->c, "no such job: %lld", (long long)id);
		r = -ENOENT;
	}
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : 0;
}

int gp_ledger_job_queue(struct gp_ledger *l, const char *spec,
			const char *model, const char *source, int64_t now,
			int64_t *ret_id)
{
	int r;

	if (!spec || !model || !source || !ret_id)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_run(&l->c, "cannot queue a job",
		      "INSERT INTO jobs (spec, state, created_at, updated_at, "
		      "model, source) VALUES (?1, 'queued', ?2, ?2, ?3, ?4)",
		      "titt", spec, now, model, source);
	if (r >= 0) {
		*ret_id = sqlite3_last_insert_rowid(l->c.db);
		r = 0;
	}
	pthread_mutex_unlock(&l->lock);
	return r;
}

int gp_ledger_job_set_source(struct gp_ledger *l, int64_t id,
			     const char *source)
{
	int r;

	if (!source)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_run(&l->c, "cannot record a job's file",
		      "UPDATE jobs SET source = ?2 WHERE id = ?1", "it", id,
		      source);
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : 0;
}

int gp_ledger_job_next(struct gp_ledger *l, int64_t *ret_id)
{
	int64_t id = 0;
	int r;

	if (!ret_id)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	/* A job left running by a serve that was killed goes on first. */
	r = gp_db_row(&l->c, "cannot read the job queue", gp_db_int64, &id,
		      "SELECT id FROM jobs WHERE state IN ('running', 'queued') "
		      "ORDER BY state = 'queued', id LIMIT 1", "");
	pthread_mutex_unlock(&l->lock);
	if (r < 0)
		return r;
	if (r == 0)
		return -ENOENT;
	*ret_id = id;
	return 0;
}

int gp_ledger_job_find(struct gp_ledger *l, const char *spec,
		       const char *model, int64_t *ret_id)
{
	int64_t id = 0;
	int r;

	if (!spec || !model || !ret_id)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	/* '' is a row written before the ledger kept models. */
	r = gp_db_row(&l->c, "cannot look for a job", gp_db_int64, &id,
		      "SELECT id FROM jobs WHERE spec = ?1 AND "
		      "(model = ?2 OR model = '') ORDER BY id DESC LIMIT 1",
		      "tt", spec, model);
	pthread_mutex_unlock(&l->lock);
	if (r < 0)
		return r;
	if (r == 0)
		return -ENOENT;
	*ret_id = id;
	return 0;
}

int gp_ledger_job_cancel(struct gp_ledger *l, int64_t id, int64_t now,
			 enum gp_ledger_job_state *ret_was)
{
	struct gp_ledger_job j = { 0 };
	int r;

	r = gp_ledger_job_get(l, id, &j);
	if (r < 0)
		return r;
	gp_ledger_job_finish(&j);
	if (j.id != id) {
		pthread_mutex_lock(&l->lock);
		gp_db_set_err(&l->c, "no such job: %lld", (long long)id);
		pthread_mutex_unlock(&l->lock);
		return -ENOENT;
	}
	if (ret_was)
		*ret_was = j.state;
	if (j.state == GP_JOB_DONE || j.state == GP_JOB_FAILED ||
	    j.state == GP_JOB_CANCELLED) {
		pthread_mutex_lock(&l->lock);
		gp_db_set_err(&l->c, "job %lld is %s already", (long long)id,
			      state_names[j.state]);
		pthread_mutex_unlock(&l->lock);
		return -EALREADY;
	}
	pthread_mutex_lock(&l->lock);
	/* Only from the state just read: serve may have finished it since. */
	r = gp_db_run(&l->c, "cannot cancel a job",
		      "UPDATE jobs SET state = 'cancelled', updated_at = ?2 "
		      "WHERE id = ?1 AND state = ?3", "iit", id, now,
		      state_names[j.state]);
	if (r == 0) {
		gp_db_set_err(&l->c, "job %lld changed state meanwhile",
			      (long long)id);
		r = -EAGAIN;
	}
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : 0;
}

static int read_job_row(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_job_row *j = arg;

	j->id = sqlite3_column_int64(st, 0);
	j->state = gp_ledger_parse_state(sqlite3_column_text(st, 1));
	j->created_at = sqlite3_column_int64(st, 2);
	j->updated_at = sqlite3_column_int64(st, 3);
	j->epochs = sqlite3_column_int64(st, 4);
	gp_db_column_text(st, 5, j->source, sizeof(j->source));
	gp_db_column_text(st, 6, j->model, sizeof(j->model));
	j->minibatches_per_epoch = sqlite3_column_int64(st, 7);
	j->updates_applied = sqlite3_column_int64(st, 8);
	j->samples_applied = sqlite3_column_int64(st, 9);
	j->eval_epochs = sqlite3_column_int64(st, 10);
	j->test_accuracy = gp_db_column_real(st, 11);
	j->test_loss = gp_db_column_real(st, 12);
	j->checkpoints = sqlite3_column_int64(st, 13);
	return 0;
}

int gp_ledger_job_list(struct gp_ledger *l, struct gp_ledger_job_row **ret,
		       size_t *ret_n)
{
	int r;

	if (!ret || !ret_n)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_list(&l->c, "cannot list jobs", sizeof(**ret), read_job_row,
		       (void **)ret, ret_n,
		       "SELECT j.id, j.state, j.created_at, j.updated_at,"
		       "  coalesce(j.epochs, 0), j.source, j.model,"
		       "  coalesce(j.minibatches_per_epoch, 0),"
		       "  (SELECT coalesce(sum(applied), 0) FROM update_totals u"
		       "     WHERE u.job_id = j.id),"
		       "  (SELECT coalesce(sum(samples), 0) FROM update_totals u"
		       "     WHERE u.job_id = j.id),"
		       "  (SELECT count(*) FROM evals e WHERE e.job_id = j.id),"
		       "  (SELECT test_accuracy FROM evals e WHERE e.job_id = j.id"
		       "     ORDER BY epoch DESC LIMIT 1),"
		       "  (SELECT test_loss FROM evals e WHERE e.job_id = j.id"
		       "     ORDER BY epoch DESC LIMIT 1),"
		       "  (SELECT count(*) FROM checkpoints c WHERE c.job_id = j.id) "
		       "FROM jobs j ORDER BY j.id", "");
	pthread_mutex_unlock(&l->lock);
	return r;
}

static int read_rate_bucket(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_rate *r = arg;

	r->at = sqlite3_column_int64(st, 0);
	r->samples = sqlite3_column_int64(st, 1);
	r->updates = sqlite3_column_int64(st, 2);
	return 0;
}

static int read_span(sqlite3_stmt *st, void *arg)
{
	int64_t *span = arg;

	span[0] = sqlite3_column_int64(st, 0);
	span[1] = sqlite3_column_int64(st, 1);
	span[2] = sqlite3_column_int64(st, 2);
	return 0;
}

int gp_ledger_job_rate(struct gp_ledger *l, int64_t job_id,
		       size_t max_buckets, struct gp_ledger_rate **ret,
		       size_t *ret_n, int64_t *ret_bucket_ms)
{
	struct gp_ledger_rate *got = NULL, *out = NULL;
	int64_t span[3] = { 0 }, bucket;
	size_t n = 0, nb;
	int r;

	if (!ret || !ret_n || !ret_bucket_ms || max_buckets == 0)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_row(&l->c, "cannot read the job's rate", read_span, span,
		      "SELECT coalesce(min(applied_at), 0),"
		      "  coalesce(max(applied_at), 0), count(*) FROM updates"
		      " WHERE job_id = ?1 AND outcome = 'applied'"
		      " AND rolled_back = 0 AND applied_at IS NOT NULL", "i",
		      job_id);
	if (r < 0 || span[2] == 0) {
		pthread_mutex_unlock(&l->lock);
		if (r >= 0) {
			*ret = NULL;
			*ret_n = 0;
			*ret_bucket_ms = 1000;
		}
		return r < 0 ? r : 0;
	}
	bucket = (span[1] - span[0]) / (int64_t)max_buckets + 1;
	if (bucket < 1000)
		bucket = 1000;
	r = gp_db_list(&l->c, "cannot read the job's rate", sizeof(*got),
		       read_rate_bucket, (void **)&got, &n,
		       "SELECT (applied_at - ?2) / ?3, sum(samples), count(*)"
		       " FROM updates WHERE job_id = ?1 AND outcome = 'applied'"
		       " AND rolled_back = 0 AND applied_at IS NOT NULL"
		       " GROUP BY 1 ORDER BY 1", "iii", job_id, span[0], bucket);
	pthread_mutex_unlock(&l->lock);
	if (r < 0)
		return r;
	/* Every bucket, the empty ones too: a pause shows as a gap. */
	nb = (size_t)((span[1] - span[0]) / bucket) + 1;
	out = calloc(nb, sizeof(*out));
	if (!out) {
		free(got);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nb; i++)
		out[i].at = span[0] + (int64_t)i * bucket;
	for (size_t i = 0; i < n; i++) {
		if (got[i].at < 0 || (size_t)got[i].at >= nb)
			continue;
		out[got[i].at].samples = got[i].samples;
		out[got[i].at].updates = got[i].updates;
	}
	free(got);
	*ret = out;
	*ret_n = nb;
	*ret_bucket_ms = bucket;
	return 0;
}

static int read_damped(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_damped *d = arg;

	d->agent_id = sqlite3_column_int64(st, 0);
	d->damped = sqlite3_column_int64(st, 1);
	return 0;
}

int gp_ledger_job_damped(struct gp_ledger *l, int64_t job_id,
			 struct gp_ledger_damped **ret, size_t *ret_n)
{
	int r;

	if (!ret || !ret_n)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_list(&l->c, "cannot count damped updates", sizeof(**ret),
		       read_damped, (void **)ret, ret_n,
		       "SELECT agent_id, count(*) FROM updates WHERE job_id = ?1"
		       " AND outcome = 'applied' AND rolled_back = 0"
		       " AND reason LIKE 'damped%' GROUP BY agent_id", "i",
		       job_id);
	pthread_mutex_unlock(&l->lock);
	return r;
}

int gp_ledger_job_set_size(struct gp_ledger *l, int64_t id, int64_t epochs,
			   int64_t minibatches_per_epoch,
			   int64_t samples_per_epoch)
{
	int r;

	if (epochs <= 0 || minibatches_per_epoch <= 0 || samples_per_epoch <= 0)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_run(&l->c, "cannot record the job's size",
		      "UPDATE jobs SET epochs = ?2, minibatches_per_epoch = ?3, "
		      "samples_per_epoch = ?4 WHERE id = ?1",
		      "iiii", id, epochs, minibatches_per_epoch,
		      samples_per_epoch);
	if (r == 0) {
		gp_db_set_err(&l->c, "no such job: %lld", (long long)id);
		r = -ENOENT;
	}
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : 0;
}

void gp_ledger_job_finish(struct gp_ledger_job *job)
{
	if (!job)
		return;
	free(job->spec);
	job->spec = NULL;
	free(job->model);
	job->model = NULL;
}

int gp_ledger_job_set_model(struct gp_ledger *l, int64_t id,
			    const char *model)
{
	int r;

	if (!model)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_run(&l->c, "cannot record a job's model",
		      "UPDATE jobs SET model = ?2 WHERE id = ?1", "it", id,
		      model);
	if (r == 0) {
		gp_db_set_err(&l->c, "no such job: %lld", (long long)id);
		r = -ENOENT;
	}
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : 0;
}

int gp_ledger_job_model(struct gp_ledger *l, int64_t id, char **ret_model)
{
	struct gp_ledger_job job = { 0 };
	int r;

	if (!ret_model)
		return -EINVAL;
	r = gp_ledger_job_get(l, id, &job);
	if (r < 0)
		return r;
	if (!job.model[0]) {
		pthread_mutex_lock(&l->lock);
		gp_db_set_err(&l->c, "job %lld was recorded before the ledger "
			      "kept models: its model is the [model] spec of "
			      "its job text", (long long)job.id);
		pthread_mutex_unlock(&l->lock);
		gp_ledger_job_finish(&job);
		return -ENODATA;
	}
	*ret_model = job.model;
	job.model = NULL;
	gp_ledger_job_finish(&job);
	return 0;
}

int gp_ledger_job_set_state(struct gp_ledger *l, int64_t id,
			    enum gp_ledger_job_state state, int64_t now)
{
	int r;

	if ((unsigned)state >= sizeof(state_names) / sizeof(state_names[0]))
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	/* Only out of a state that is not final: `job cancel` writes from
	 * another process, and serve must not write over it (a job being
	 * set up would be marked running again and never stop). */
	r = gp_db_run(&l->c, "cannot update a job",
		      "UPDATE jobs SET state = ?2, updated_at = ?3 "
		      "WHERE id = ?1 AND state NOT IN "
		      "('done', 'failed', 'cancelled')",
		      "iti", id, state_names[state], now);
	if (r == 0) {
		int64_t n = 0;

		r = gp_db_row(&l->c, "cannot read a job", gp_db_int64, &n,
			      "SELECT count(*) FROM jobs WHERE id = ?1", "i",
			      id);
		if (r >= 0 && n > 0) {
			gp_db_set_err(&l->c, "job %lld has ended already",
				      (long long)id);
			r = -EALREADY;
		} else if (r >= 0) {
			gp_db_set_err(&l->c, "no such job: %lld",
				      (long long)id);
			r = -ENOENT;
		}
	}
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : 0;
}

