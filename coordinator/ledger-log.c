/* The ledger's update log: rows buffered in memory by the append functions
 * (no SQLite, safe on the loop thread), written in one transaction per
 * batch; the rollback marks after a restore; and the checkpoints, which are
 * written in the same transaction as every row buffered before them.
 * ledger.h documents the functions. */
#include "ledger.h"
#include "ledger-impl.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "util.h"

static const char *const outcome_names[] = {
	[GP_UPDATE_APPLIED] = "applied",
	[GP_UPDATE_DUPLICATE] = "duplicate",
	[GP_UPDATE_LATE] = "late",
	[GP_UPDATE_REJECTED] = "rejected",
};

void gp_ledger_batch_free(struct gp_ledger_batch *b)
{
	free(b->ups);
	free(b->rejs);
	free(b->notes);
	memset(b, 0, sizeof(*b));
}

/* ---- the buffered update log ------------------------------------------- */

void gp_ledger_set_batching(struct gp_ledger *l, size_t flush_rows,
			    int64_t flush_ms)
{
	pthread_mutex_lock(&l->buf_lock);
	l->flush_rows = flush_rows ? flush_rows : 1;
	l->flush_ms = flush_ms;
	pthread_mutex_unlock(&l->buf_lock);
}

static size_t batch_rows(const struct gp_ledger_batch *b)
{
	return b->n_ups + b->n_rejs + b->n_notes;
}

/* With buf_lock held. */
static bool due_locked(const struct gp_ledger *l, int64_t now)
{
	size_t n = batch_rows(&l->pending);

	return n > 0 && (n >= l->flush_rows || now - l->oldest_at >= l->flush_ms);
}

/* Adds one row (u, rj or note: the one that is not NULL) to the pending
 * batch; `at` is its time for the age test. */
static int append(struct gp_ledger *l, const struct gp_ledger_update *u,
		  const struct gp_ledger_rejection *rj,
		  const struct gp_ledger_agent_note *note, int64_t at)
{
	struct gp_ledger_batch *b = &l->pending;
	int r;

	if (l->readonly)
		return -EROFS;
	pthread_mutex_lock(&l->buf_lock);
	if (batch_rows(b) >= GP_LEDGER_BUFFER_MAX) {
		r = -ENOBUFS;
		goto out;
	}
	if (u) {
		r = gp_array_grow((void **)&b->ups, &b->cap_ups, b->n_ups, sizeof(*u));
		if (r < 0)
			goto out;
		b->ups[b->n_ups++] = *u;
	} else if (note) {
		r = gp_array_grow((void **)&b->notes, &b->cap_notes, b->n_notes,
				  sizeof(*note));
		if (r < 0)
			goto out;
		b->notes[b->n_notes++] = *note;
	} else {
		r = gp_array_grow((void **)&b->rejs, &b->cap_rejs, b->n_rejs,
			 sizeof(*rj));
		if (r < 0)
			goto out;
		b->rejs[b->n_rejs++] = *rj;
	}
	if (batch_rows(b) == 1)
		l->oldest_at = at;
	r = due_locked(l, at) ? 1 : 0;
out:
	pthread_mutex_unlock(&l->buf_lock);
	return r;
}

int gp_ledger_update_append(struct gp_ledger *l,
			    const struct gp_ledger_update *u)
{
	if (!u || (unsigned)u->outcome >= sizeof(outcome_names) /
						  sizeof(outcome_names[0]))
		return -EINVAL;
	return append(l, u, NULL, NULL, u->received_at);
}

int gp_ledger_rejection_append(struct gp_ledger *l,
			       const struct gp_ledger_rejection *rj)
{
	if (!rj)
		return -EINVAL;
	return append(l, NULL, rj, NULL, rj->at);
}

int gp_ledger_agent_connected_append(struct gp_ledger *l, int64_t id,
				     int delta, int64_t at)
{
	struct gp_ledger_agent_note n = {
		.kind = delta > 0 ? GP_NOTE_CONNECTED : GP_NOTE_DISCONNECTED,
		.agent_id = id, .at = at };

	return append(l, NULL, NULL, &n, at);
}

int gp_ledger_agent_left_append(struct gp_ledger *l, int64_t id, int64_t at)
{
	struct gp_ledger_agent_note n = { .kind = GP_NOTE_LEFT, .agent_id = id,
					  .at = at };

	return append(l, NULL, NULL, &n, at ? at : gp_now_ms());
}

int gp_ledger_agent_link_append(struct gp_ledger *l, int64_t id,
				double link_bps, double sync_ms, int64_t at)
{
	struct gp_ledger_agent_note n = { .kind = GP_NOTE_LINK, .agent_id = id,
					  .at = at, .link_bps = link_bps,
					  .sync_ms = sync_ms };

	if (!isfinite(link_bps) || !isfinite(sync_ms))
		return -EINVAL;
	return append(l, NULL, NULL, &n, at);
}

bool gp_ledger_flush_due(struct gp_ledger *l, int64_t now)
{
	bool due;

	pthread_mutex_lock(&l->buf_lock);
	due = due_locked(l, now);
	pthread_mutex_unlock(&l->buf_lock);
	return due;
}

size_t gp_ledger_pending(struct gp_ledger *l)
{
	size_t n;

	pthread_mutex_lock(&l->buf_lock);
	n = batch_rows(&l->pending);
	pthread_mutex_unlock(&l->buf_lock);
	return n;
}

bool gp_ledger_update_room(struct gp_ledger *l, size_t n)
{
	bool room;

	pthread_mutex_lock(&l->buf_lock);
	room = n <= GP_LEDGER_BUFFER_MAX &&
	       batch_rows(&l->pending) <= GP_LEDGER_BUFFER_MAX - n;
	pthread_mutex_unlock(&l->buf_lock);
	return room;
}

/* Takes the pending rows, leaving an empty buffer for the appenders. */
static void take_pending(struct gp_ledger *l, struct gp_ledger_batch *out)
{
	pthread_mutex_lock(&l->buf_lock);
	*out = l->pending;
	memset(&l->pending, 0, sizeof(l->pending));
	pthread_mutex_unlock(&l->buf_lock);
}

/* Returns a malloc'd array of a's na elements followed by b's nb (each size
 * bytes), NULL when both are empty or memory runs out (*ret_failed set). */
static void *concat(const void *a, size_t na, const void *b, size_t nb,
		    size_t size, bool *ret_failed)
{
	uint8_t *v;

	if (na + nb == 0)
		return NULL;
	v = malloc((na + nb) * size);
	if (!v) {
		*ret_failed = true;
		return NULL;
	}
	if (na)
		memcpy(v, a, na * size);
	if (nb)
		memcpy(v + na * size, b, nb * size);
	return v;
}

/* Puts rows that failed to be written back in front of those appended since,
 * keeping their order. If memory runs out the rows are lost, and said so. */
static void give_back(struct gp_ledger *l, struct gp_ledger_batch *b)
{
	struct gp_ledger_batch *p = &l->pending, joined = { 0 };
	bool failed = false;

	if (batch_rows(b) == 0) {
		gp_ledger_batch_free(b);
		return;
	}
	pthread_mutex_lock(&l->buf_lock);
	joined.n_ups = joined.cap_ups = b->n_ups + p->n_ups;
	joined.ups = concat(b->ups, b->n_ups, p->ups, p->n_ups,
			    sizeof(*joined.ups), &failed);
	joined.n_rejs = joined.cap_rejs = b->n_rejs + p->n_rejs;
	joined.rejs = concat(b->rejs, b->n_rejs, p->rejs, p->n_rejs,
			     sizeof(*joined.rejs), &failed);
	joined.n_notes = joined.cap_notes = b->n_notes + p->n_notes;
	joined.notes = concat(b->notes, b->n_notes, p->notes, p->n_notes,
			      sizeof(*joined.notes), &failed);
	if (failed) {
		/* Keep the newer rows; the older ones cannot be requeued. */
		l->dropped += batch_rows(b);
		gp_ledger_batch_free(&joined);
	} else {
		gp_ledger_batch_free(p);
		*p = joined;
	}
	pthread_mutex_unlock(&l->buf_lock);
	gp_ledger_batch_free(b);
}

/* Steps one row of a batch: 1 when written, 0 when the database refused it
 * by a constraint (dropped and counted), or a negative errno. */
static int step_row(struct gp_ledger *l, sqlite3_stmt *st, const char *ctx)
{
	int rc = sqlite3_step(st);

	if (rc == SQLITE_DONE)
		return 1;
	if ((rc & 0xff) == SQLITE_CONSTRAINT) {
		l->dropped++;
		return 0;
	}
	return gp_db_fail(&l->c, rc, ctx);
}

/* One prepared INSERT for the whole batch: a flush writes hundreds of rows.
 * Returns rows written or a negative errno. */
static int write_updates(struct gp_ledger *l,
			 const struct gp_ledger_update *ups, size_t n)
{
	sqlite3_stmt *st = NULL;
	int written = 0, r;

	if (n == 0)
		return 0;
	r = gp_db_prepare(&l->c,
			  "INSERT INTO updates (job_id, agent_id, clock, "
			  "epoch, minibatch, samples, loss, grad_norm, "
			  "staleness, received_at, applied_at, outcome, "
			  "reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
			  "?9, ?10, ?11, ?12, ?13)",
			  &st);
	for (size_t i = 0; i < n && r >= 0; i++) {
		const struct gp_ledger_update *u = &ups[i];

		sqlite3_reset(st);
		r = gp_db_bind(&l->c, st, "iiiiiiFFiiItt", u->job_id,
			       u->agent_id, u->clock, u->epoch, u->minibatch,
			       u->samples, u->loss, u->grad_norm, u->staleness,
			       u->received_at, u->applied_at,
			       outcome_names[u->outcome], u->reason);
		if (r == 0)
			r = step_row(l, st, "cannot write the update log");
		written += r > 0;
	}
	sqlite3_finalize(st);
	return r < 0 ? r : written;
}

static int write_rejections(struct gp_ledger *l,
			    const struct gp_ledger_rejection *rejs, size_t n)
{
	sqlite3_stmt *st = NULL;
	int written = 0, r;

	if (n == 0)
		return 0;
	r = gp_db_prepare(&l->c,
			  "INSERT INTO rejections (agent_id, kind, reason, at) "
			  "VALUES (?1, ?2, ?3, ?4)",
			  &st);
	for (size_t i = 0; i < n && r >= 0; i++) {
		const struct gp_ledger_rejection *rj = &rejs[i];

		sqlite3_reset(st);
		r = gp_db_bind(&l->c, st, "Itti", rj->agent_id, rj->kind,
			       rj->reason, rj->at);
		if (r == 0)
			r = step_row(l, st, "cannot write rejections");
		written += r > 0;
	}
	sqlite3_finalize(st);
	return r < 0 ? r : written;
}

/* The agents' notes, in the order they were made (a connection's +1
 * before its -1). A note about an agent that is not there changes
 * nothing. Returns notes written or a negative errno. */
static int write_notes(struct gp_ledger *l,
		       const struct gp_ledger_agent_note *notes, size_t n)
{
	static const char *const sql[GP_NOTE_KINDS] = {
		[GP_NOTE_CONNECTED] = GP_SQL_AGENT_CONNECTED,
		[GP_NOTE_DISCONNECTED] = GP_SQL_AGENT_DISCONNECTED,
		[GP_NOTE_LEFT] = GP_SQL_AGENT_LEFT,
		[GP_NOTE_LINK] = GP_SQL_AGENT_LINK,
	};
	sqlite3_stmt *st[GP_NOTE_KINDS] = { NULL };
	int written = 0, r = 0;

	for (size_t i = 0; i < n && r >= 0; i++) {
		const struct gp_ledger_agent_note *nt = &notes[i];
		unsigned k = nt->kind;

		if (!st[k])
			r = gp_db_prepare(&l->c, sql[k], &st[k]);
		if (r < 0)
			break;
		sqlite3_reset(st[k]);
		r = k == GP_NOTE_LINK ?
			    gp_db_bind(&l->c, st[k], "iiff", nt->agent_id,
				       nt->at, nt->link_bps, nt->sync_ms) :
			    gp_db_bind(&l->c, st[k], "ii", nt->agent_id, nt->at);
		if (r == 0)
			r = step_row(l, st[k], "cannot write an agent's state");
		written += r > 0;
	}
	for (unsigned k = 0; k < GP_NOTE_KINDS; k++)
		sqlite3_finalize(st[k]);
	return r < 0 ? r : written;
}

/* Writes a batch inside the caller's transaction (lock held). A row the
 * database refuses by a constraint (an unknown agent or job id: a caller's
 * bug) is dropped and counted, so that one bad row cannot wedge the log;
 * any other error aborts. Returns rows written or a negative errno. */
static int write_batch(struct gp_ledger *l, const struct gp_ledger_batch *b)
{
	int ups, rejs, notes;

	ups = write_updates(l, b->ups, b->n_ups);
	if (ups < 0)
		return ups;
	rejs = write_rejections(l, b->rejs, b->n_rejs);
	if (rejs < 0)
		return rejs;
	notes = write_notes(l, b->notes, b->n_notes);
	return notes < 0 ? notes : ups + rejs + notes;
}

int gp_ledger_flush(struct gp_ledger *l)
{
	struct gp_ledger_batch b;
	int r, n;

	if (l->readonly)
		return 0;
	pthread_mutex_lock(&l->lock);
	/* Taken under the connection lock so that two flushing threads
	 * cannot write their batches out of order. */
	take_pending(l, &b);
	if (batch_rows(&b) == 0) {
		r = 0;
		goto out;
	}
	r = gp_db_exec(&l->c, "BEGIN IMMEDIATE");
	if (r < 0)
		goto requeue;
	n = write_batch(l, &b);
	r = n < 0 ? n : gp_db_exec(&l->c, "COMMIT");
	if (r < 0) {
		gp_db_rollback(&l->c);
		goto requeue;
	}
	r = n;
	gp_ledger_batch_free(&b);
	goto out;
requeue:
	give_back(l, &b);
out:
	pthread_mutex_unlock(&l->lock);
	return r;
}

int64_t gp_ledger_update_count(struct gp_ledger *l, int64_t job_id)
{
	int64_t n = 0;
	int r;

	pthread_mutex_lock(&l->lock);
	r = gp_db_row(&l->c, "cannot count updates", gp_db_int64, &n,
		      "SELECT count(*) FROM updates "
		      "WHERE ?1 = 0 OR job_id = ?1",
		      "i", job_id);
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : n;
}

int64_t gp_ledger_rollback_after(struct gp_ledger *l, int64_t job_id,
				 int64_t seq, uint64_t keep)
{
	int64_t cutoff = 0;
	int r, n = 0;

	if (seq <= 0 || keep > INT64_MAX)
		return -EINVAL;
	/* Rows still buffered belong to the log before the restore. */
	r = gp_ledger_flush(l);
	if (r < 0)
		return r;
	pthread_mutex_lock(&l->lock);
	r = gp_db_exec(&l->c, "BEGIN IMMEDIATE");
	if (r < 0)
		goto out;
	if (keep > 0) {
		/* The keep-th counted applied update: the checkpoint's last.
		 * When the log holds fewer, nothing came after (r 0). */
		r = gp_db_row(&l->c, "cannot find the checkpoint's last update",
			      gp_db_int64, &cutoff,
			      "SELECT id FROM updates WHERE job_id = ?1 AND "
			      "outcome = 'applied' AND rolled_back = 0 "
			      "ORDER BY id LIMIT 1 OFFSET ?2",
			      "ii", job_id, (int64_t)keep - 1);
		if (r < 0)
			goto fail;
	}
	if (keep == 0 || r > 0) {
		n = gp_db_run(&l->c, "cannot mark updates rolled back",
			      "UPDATE updates SET rolled_back = ?3 "
			      "WHERE job_id = ?1 AND outcome = 'applied' "
			      "AND rolled_back = 0 AND id > ?2",
			      "iii", job_id, cutoff, seq);
		if (n < 0) {
			r = n;
			goto fail;
		}
	}
	r = gp_db_exec(&l->c, "COMMIT");
	if (r < 0)
		goto fail;
	r = n;
	goto out;
fail:
	gp_db_rollback(&l->c);
out:
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* ---- checkpoints ------------------------------------------------------- */

int gp_ledger_checkpoint_write(struct gp_ledger *l, int64_t job_id,
			       int64_t epoch, int64_t clock, int64_t now,
			       const uint8_t *blob, size_t len, unsigned keep,
			       int64_t *ret_seq)
{
	struct gp_checkpoint_section sections[GP_CHECKPOINT_MAX_SECTIONS];
	struct gp_ledger_batch b;
	int64_t seq = 0;
	size_t n_sections;
	int r;

	if (!blob || keep == 0 || len > INT32_MAX)
		return -EINVAL;
	/* Refuse to store what could not be loaded back. */
	r = gp_checkpoint_decode(blob, len, sections, &n_sections);
	if (r < 0)
		return -EINVAL;

	pthread_mutex_lock(&l->lock);
	take_pending(l, &b);
	r = gp_db_exec(&l->c, "BEGIN IMMEDIATE");
	if (r < 0)
		goto requeue;
	r = write_batch(l, &b);
	if (r < 0)
		goto fail;
	r = gp_db_row(&l->c, "cannot number a checkpoint", gp_db_int64, &seq,
		      "SELECT coalesce(max(seq), 0) + 1 FROM checkpoints "
		      "WHERE job_id = ?1",
		      "i", job_id);
	if (r < 0)
		goto fail;
	r = gp_db_run(&l->c, "cannot write a checkpoint",
		      "INSERT INTO checkpoints (job_id, seq, created_at, "
		      "epoch, clock, format, size, blob) "
		      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
		      "iiiiiiib", job_id, seq, now, epoch, clock,
		      (int64_t)GP_CHECKPOINT_VERSION, (int64_t)len, blob, len);
	if (r < 0)
		goto fail;
	r = gp_db_run(&l->c, "cannot delete old checkpoints",
		      "DELETE FROM checkpoints WHERE job_id = ?1 AND seq <= ?2",
		      "ii", job_id, seq - (int64_t)keep);
	if (r < 0)
		goto fail;
	r = gp_db_exec(&l->c, "COMMIT");
	if (r < 0)
		goto fail;
	gp_ledger_batch_free(&b);
	if (ret_seq)
		*ret_seq = seq;
	r = 0;
	goto out;
fail:
	gp_db_rollback(&l->c);
requeue:
	give_back(l, &b);
out:
	pthread_mutex_unlock(&l->lock);
	return r;
}

struct latest {
	int64_t job_id;
	struct gp_ledger_checkpoint *ret;
	unsigned skipped;
};

/* Takes the first checkpoint row whose blob decodes (stops: 1); counts
 * damaged ones and goes on. */
static int read_checkpoint(sqlite3_stmt *st, void *arg)
{
	struct gp_checkpoint_section sections[GP_CHECKPOINT_MAX_SECTIONS];
	struct latest *x = arg;
	const void *blob = sqlite3_column_blob(st, 4);
	size_t len = (size_t)sqlite3_column_bytes(st, 4), n;
	uint8_t *copy;

	if (!blob || gp_checkpoint_decode(blob, len, sections, &n) < 0) {
		x->skipped++;
		return 0;
	}
	copy = malloc(len);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, blob, len);
	x->ret->job_id = x->job_id;
	x->ret->seq = sqlite3_column_int64(st, 0);
	x->ret->created_at = sqlite3_column_int64(st, 1);
	x->ret->epoch = sqlite3_column_int64(st, 2);
	x->ret->clock = sqlite3_column_int64(st, 3);
	x->ret->blob = copy;
	x->ret->len = len;
	return 1;
}

int gp_ledger_checkpoint_load_latest(struct gp_ledger *l, int64_t job_id,
				     struct gp_ledger_checkpoint *ret,
				     unsigned *ret_skipped)
{
	struct latest x = { .job_id = job_id, .ret = ret };
	int r;

	if (!ret)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_each(&l->c, "cannot read checkpoints", read_checkpoint, &x,
		       "SELECT seq, created_at, epoch, clock, blob "
		       "FROM checkpoints WHERE job_id = ?1 ORDER BY seq DESC",
		       "i", job_id);
	if (r > 0) {
		if (ret_skipped)
			*ret_skipped = x.skipped;
		r = 0;
	} else if (r == 0 && x.skipped) {
		gp_db_set_err(&l->c, "all %u checkpoints of job %lld are "
			      "damaged", x.skipped, (long long)job_id);
		r = -ENOENT;
	} else if (r == 0) {
		gp_db_set_err(&l->c, "no checkpoint for job %lld",
			      (long long)job_id);
		r = -ENOENT;
	}
	pthread_mutex_unlock(&l->lock);
	return r;
}

static int read_checkpoint_info(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_checkpoint_info *c = arg;

	c->seq = sqlite3_column_int64(st, 0);
	c->created_at = sqlite3_column_int64(st, 1);
	c->epoch = sqlite3_column_int64(st, 2);
	c->clock = sqlite3_column_int64(st, 3);
	c->size = sqlite3_column_int64(st, 4);
	return 0;
}

int gp_ledger_checkpoint_list(struct gp_ledger *l, int64_t job_id,
			      struct gp_ledger_checkpoint_info **ret,
			      size_t *ret_n)
{
	int r;

	if (!ret || !ret_n)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_list(&l->c, "cannot list checkpoints", sizeof(**ret),
		       read_checkpoint_info, (void **)ret, ret_n,
		       "SELECT seq, created_at, epoch, clock, length(blob) "
		       "FROM checkpoints WHERE job_id = ?1 ORDER BY seq DESC",
		       "i", job_id);
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* Copies the row whatever its blob holds (stops: 1). */
static int read_checkpoint_raw(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_checkpoint *c = arg;
	const void *blob = sqlite3_column_blob(st, 4);
	size_t len = (size_t)sqlite3_column_bytes(st, 4);

	c->blob = malloc(len ? len : 1);
	if (!c->blob)
		return -ENOMEM;
	if (len)
		memcpy(c->blob, blob, len);
	c->len = len;
	c->seq = sqlite3_column_int64(st, 0);
	c->created_at = sqlite3_column_int64(st, 1);
	c->epoch = sqlite3_column_int64(st, 2);
	c->clock = sqlite3_column_int64(st, 3);
	return 1;
}

int gp_ledger_checkpoint_load(struct gp_ledger *l, int64_t job_id,
			      int64_t seq, struct gp_ledger_checkpoint *ret)
{
	struct gp_ledger_checkpoint c = { .job_id = job_id };
	int r;

	if (!ret)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_row(&l->c, "cannot read a checkpoint", read_checkpoint_raw,
		      &c,
		      "SELECT seq, created_at, epoch, clock, blob "
		      "FROM checkpoints WHERE job_id = ?1 AND seq = ?2",
		      "ii", job_id, seq);
	if (r == 0) {
		gp_db_set_err(&l->c, "job %lld has no checkpoint %lld",
			      (long long)job_id, (long long)seq);
		r = -ENOENT;
	} else if (r > 0) {
		*ret = c;
		r = 0;
	}
	pthread_mutex_unlock(&l->lock);
	return r;
}

void gp_ledger_checkpoint_finish(struct gp_ledger_checkpoint *c)
{
	if (!c)
		return;
	free(c->blob);
	c->blob = NULL;
	c->len = 0;
}

int gp_ledger_checkpoint_count(struct gp_ledger *l, int64_t job_id)
{
	int64_t n = 0;
	int r;

	pthread_mutex_lock(&l->lock);
	r = gp_db_row(&l->c, "cannot count checkpoints", gp_db_int64, &n,
		      "SELECT count(*) FROM checkpoints WHERE job_id = ?1", "i",
		      job_id);
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : (int)n;
}

