#include "stats.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "util.h"

/* "GPAS" */
#define STATS_APPLICATION_ID 0x47504153
/* Distinct pending keys that make a flush due. */
#define STATS_PENDING_KEYS 64

static const char *const migrations[] = {
	/* 1: the initial schema */
	"CREATE TABLE memberships ("
	"  pool TEXT PRIMARY KEY,"
	"  coordinator_key BLOB NOT NULL CHECK (length(coordinator_key) = 32),"
	"  endpoints TEXT NOT NULL DEFAULT '',"
	"  agent_id INTEGER,"
	"  joined_at INTEGER NOT NULL,"
	"  left_at INTEGER);"
	"CREATE TABLE contributions ("
	"  day TEXT NOT NULL,"
	"  pool TEXT NOT NULL,"
	"  device TEXT NOT NULL,"
	"  minibatches INTEGER NOT NULL DEFAULT 0,"
	"  samples INTEGER NOT NULL DEFAULT 0,"
	"  gflop REAL NOT NULL DEFAULT 0,"
	"  compute_seconds REAL NOT NULL DEFAULT 0,"
	"  bytes_up INTEGER NOT NULL DEFAULT 0,"
	"  bytes_down INTEGER NOT NULL DEFAULT 0,"
	"  PRIMARY KEY (day, pool, device)) WITHOUT ROWID;",
	/* 2: the volunteer's settings that outlive a restart (the pause) */
	"CREATE TABLE settings ("
	"  key TEXT PRIMARY KEY,"
	"  value INTEGER NOT NULL) WITHOUT ROWID;",
	/* 3: the volunteer's text settings (the public name; settings'
	 * INTEGER affinity would turn "007" into 7) */
	"CREATE TABLE text_settings ("
	"  key TEXT PRIMARY KEY,"
	"  value TEXT NOT NULL) WITHOUT ROWID;",
	/* 4: what each pool's coordinator last told of its job, so that
	 * every membership can be named and shown, not only the one the
	 * agent serves */
	"ALTER TABLE memberships ADD COLUMN job_name TEXT NOT NULL DEFAULT '';"
	"ALTER TABLE memberships ADD COLUMN job_id INTEGER NOT NULL DEFAULT 0;"
	"ALTER TABLE memberships ADD COLUMN job_state TEXT NOT NULL DEFAULT '';"
	"ALTER TABLE memberships ADD COLUMN job_epoch INTEGER NOT NULL "
	"  DEFAULT 0;"
	"ALTER TABLE memberships ADD COLUMN job_epochs INTEGER NOT NULL "
	"  DEFAULT 0;"
	"ALTER TABLE memberships ADD COLUMN job_progress REAL NOT NULL "
	"  DEFAULT 0;"
	"ALTER TABLE memberships ADD COLUMN job_accuracy REAL;"
	"ALTER TABLE memberships ADD COLUMN job_told_at INTEGER NOT NULL "
	"  DEFAULT 0;",
};

static const struct gp_db_schema stats_schema = {
	.what = "gradpool agent statistics",
	.application_id = STATS_APPLICATION_ID,
	.migrations = migrations,
	.n_migrations = sizeof(migrations) / sizeof(migrations[0]),
};

struct pending {
	struct gp_stats_row row; /* day, pool, device and the sums */
	int64_t first_at;
};

/* A job note not yet written (gp_stats_job_note). */
struct note {
	char pool[GP_STATS_POOL_MAX];
	struct gp_stats_job job;
};

/* Pools with a pending note: an agent serves one pool at a time, so a few
 * are plenty; past them the oldest note gives way. */
#define STATS_NOTES_MAX 8

struct gp_stats {
	struct gp_db_conn c;
	pthread_mutex_t lock; /* c: the connection and its message */
	bool readonly;

	pthread_mutex_t buf_lock;
	struct pending *pending;
	size_t n_pending, cap_pending;
	int64_t flush_s;
	struct note notes[STATS_NOTES_MAX]; /* under buf_lock */
	size_t n_notes;
};

int gp_stats_open(const char *path, unsigned flags, struct gp_stats **ret,
		  char *err, size_t errlen)
{
	struct gp_stats *s;
	unsigned dbflags = 0;
	int r;

	if (!path || !ret)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	if (flags & GP_STATS_CREATE)
		dbflags |= GP_DB_CREATE;
	if (flags & GP_STATS_READONLY)
		dbflags |= GP_DB_READONLY;
	if (flags & GP_STATS_CHECK)
		dbflags |= GP_DB_CHECK;
	r = gp_db_open(path, dbflags, &stats_schema, &s->c.db, err, errlen);
	if (r < 0) {
		free(s);
		return r;
	}
	s->readonly = !!(flags & GP_STATS_READONLY);
	s->flush_s = 10;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->buf_lock, NULL);
	*ret = s;
	return 0;
}

void gp_stats_close(struct gp_stats *s)
{
	if (!s)
		return;
	if (!s->readonly && (s->n_pending || s->n_notes))
		(void)gp_stats_flush(s);
	sqlite3_close(s->c.db);
	free(s->pending);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->buf_lock);
	free(s);
}

const char *gp_stats_error(struct gp_stats *s)
{
	return s->c.err;
}

/* ---- memberships ------------------------------------------------------- */

int gp_stats_membership_set(struct gp_stats *s,
			    const struct gp_stats_membership *m)
{
	int r;

	if (!m)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	r = gp_db_run(&s->c, "cannot write a membership",
		      "INSERT INTO memberships (pool, coordinator_key, "
		      "endpoints, agent_id, joined_at, left_at) "
		      "VALUES (?1, ?2, ?3, ?4, ?5, NULL) "
		      "ON CONFLICT (pool) DO UPDATE SET "
		      "coordinator_key = excluded.coordinator_key, "
		      "endpoints = excluded.endpoints, "
		      "agent_id = excluded.agent_id, "
		      "joined_at = excluded.joined_at, left_at = NULL",
		      "tbtIi", m->pool, m->coordinator_key,
		      (size_t)GP_STATS_KEY_SIZE, m->endpoints, m->agent_id,
		      m->joined_at);
	pthread_mutex_unlock(&s->lock);
	return r < 0 ? r : 0;
}

int gp_stats_membership_leave(struct gp_stats *s, const char *pool,
			      int64_t at)
{
	int r;

	if (!pool)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	r = gp_db_run(&s->c, "cannot update a membership",
		      "UPDATE memberships SET left_at = ?2 WHERE pool = ?1",
		      "ti", pool, at);
	if (r == 0) {
		gp_db_set_err(&s->c, "not a member of pool '%s'", pool);
		r = -ENOENT;
	}
	pthread_mutex_unlock(&s->lock);
	return r < 0 ? r : 0;
}

int gp_stats_pause_set(struct gp_stats *s, int64_t until)
{
	int r;

	if (until < 0)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	r = gp_db_run(&s->c, "cannot record the pause",
		      "INSERT INTO settings (key, value) VALUES ('paused_until', ?1) "
		      "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
		      "i", until);
	pthread_mutex_unlock(&s->lock);
	return r < 0 ? r : 0;
}

int gp_stats_pause_get(struct gp_stats *s, int64_t *ret_until)
{
	int64_t v = 0;
	int r;

	if (!ret_until)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	r = gp_db_row(&s->c, "cannot read the pause", gp_db_int64, &v,
		      "SELECT value FROM settings WHERE key = 'paused_until'", "");
	pthread_mutex_unlock(&s->lock);
	if (r < 0)
		return r;
	*ret_until = v > 0 ? v : 0;
	return 0;
}

int gp_stats_public_name_set(struct gp_stats *s, const char *name)
{
	int r;

	pthread_mutex_lock(&s->lock);
	if (name)
		r = gp_db_run(&s->c, "cannot record the public name",
			      "INSERT INTO text_settings (key, value) VALUES "
			      "('public_name', ?1) ON CONFLICT (key) DO UPDATE "
			      "SET value = excluded.value",
			      "t", name);
	else
		r = gp_db_run(&s->c, "cannot forget the public name",
			      "DELETE FROM text_settings WHERE key = "
			      "'public_name'", "");
	pthread_mutex_unlock(&s->lock);
	return r < 0 ? r : 0;
}

static int read_text(sqlite3_stmt *st, void *arg)
{
	char **buf = arg;

	*buf = strdup((const char *)(sqlite3_column_text(st, 0) ?
					     sqlite3_column_text(st, 0) :
					     (const unsigned char *)""));
	return *buf ? 0 : -ENOMEM;
}

int gp_stats_public_name_get(struct gp_stats *s, char *buf, size_t size)
{
	char *v = NULL;
	int r;

	pthread_mutex_lock(&s->lock);
	r = gp_db_row(&s->c, "cannot read the public name", read_text, &v,
		      "SELECT value FROM text_settings WHERE key = "
		      "'public_name'", "");
	pthread_mutex_unlock(&s->lock);
	if (r > 0)
		snprintf(buf, size, "%s", v);
	free(v);
	return r;
}

/* A share read back from the file: anything but a number in [0, 1] is
 * damage and reads as def. */
static double column_share(sqlite3_stmt *st, int i, double def)
{
	double v;

	if (sqlite3_column_type(st, i) == SQLITE_NULL)
		return def;
	v = sqlite3_column_double(st, i);
	return isfinite(v) && v >= 0 && v <= 1 ? v : def;
}

static uint32_t column_u32(sqlite3_stmt *st, int i)
{
	int64_t v = sqlite3_column_int64(st, i);

	return v > 0 && v <= UINT32_MAX ? (uint32_t)v : 0;
}

static int read_membership(sqlite3_stmt *st, void *arg)
{
	struct gp_stats_membership *m = arg;

	gp_db_column_text(st, 0, m->pool, sizeof(m->pool));
	gp_db_column_blob(st, 1, m->coordinator_key, GP_STATS_KEY_SIZE);
	gp_db_column_text(st, 2, m->endpoints, sizeof(m->endpoints));
	m->agent_id = sqlite3_column_int64(st, 3);
	m->joined_at = sqlite3_column_int64(st, 4);
	m->left_at = sqlite3_column_int64(st, 5);
	gp_db_column_text(st, 6, m->job.name, sizeof(m->job.name));
	m->job.id = sqlite3_column_int64(st, 7);
	gp_db_column_text(st, 8, m->job.state, sizeof(m->job.state));
	m->job.epoch = column_u32(st, 9);
	m->job.epochs = column_u32(st, 10);
	m->job.progress = column_share(st, 11, 0);
	m->job.accuracy = column_share(st, 12, -1);
	m->job.told_at = sqlite3_column_int64(st, 13);
	return 0;
}

int gp_stats_job_note(struct gp_stats *s, const char *pool,
		      const struct gp_stats_job *job)
{
	struct note *n = NULL;

	if (!pool || !pool[0] || !job)
		return -EINVAL;
	if (s->readonly)
		return -EROFS;
	pthread_mutex_lock(&s->buf_lock);
	for (size_t i = 0; i < s->n_notes; i++)
		if (strncmp(s->notes[i].pool, pool, sizeof(s->notes[i].pool)) ==
		    0)
			n = &s->notes[i];
	if (!n) {
		if (s->n_notes == STATS_NOTES_MAX) {
			memmove(&s->notes[0], &s->notes[1],
				(STATS_NOTES_MAX - 1) * sizeof(s->notes[0]));
			s->n_notes--;
		}
		n = &s->notes[s->n_notes++];
		snprintf(n->pool, sizeof(n->pool), "%.*s",
			 (int)sizeof(n->pool) - 1, pool);
	}
	n->job = *job;
	n->job.name[sizeof(n->job.name) - 1] = '\0';
	n->job.state[sizeof(n->job.state) - 1] = '\0';
	pthread_mutex_unlock(&s->buf_lock);
	return 0;
}

int gp_stats_membership_list(struct gp_stats *s,
			     struct gp_stats_membership **ret, size_t *ret_n)
{
	int r;

	if (!ret || !ret_n)
		return -EINVAL;
	pthread_mutex_lock(&s->lock);
	r = gp_db_list(&s->c, "cannot list memberships", sizeof(**ret),
		       read_membership, (void **)ret, ret_n,
		       "SELECT pool, coordinator_key, endpoints, agent_id, "
		       "joined_at, left_at, job_name, job_id, job_state, "
		       "job_epoch, job_epochs, job_progress, job_accuracy, "
		       "job_told_at FROM memberships "
		       "ORDER BY joined_at, pool",
		       "");
	if (r >= 0) {
		pthread_mutex_lock(&s->buf_lock);
		for (size_t i = 0; i < *ret_n; i++)
			for (size_t k = 0; k < s->n_notes; k++)
				if (strcmp((*ret)[i].pool, s->notes[k].pool) == 0)
					(*ret)[i].job = s->notes[k].job;
		pthread_mutex_unlock(&s->buf_lock);
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* ---- contributions ----------------------------------------------------- */

void gp_stats_day(int64_t t, char day[GP_STATS_DAY_LEN + 1])
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || tm.tm_year + 1900 < 0 ||
	    tm.tm_year + 1900 > 9999) {
		snprintf(day, GP_STATS_DAY_LEN + 1, "0000-00-00");
		return;
	}
	/* The modulos only tell the compiler the widths; the range is checked
	 * above. */
	snprintf(day, GP_STATS_DAY_LEN + 1, "%04u-%02u-%02u",
		 (unsigned)(tm.tm_year + 1900) % 10000u,
		 (unsigned)(tm.tm_mon + 1) % 100u, (unsigned)tm.tm_mday % 100u);
}

void gp_stats_set_flush_interval(struct gp_stats *s, int64_t flush_s)
{
	pthread_mutex_lock(&s->buf_lock);
	s->flush_s = flush_s;
	pthread_mutex_unlock(&s->buf_lock);
}

int gp_stats_add(struct gp_stats *s, const struct gp_stats_delta *d)
{
	struct pending *p = NULL;
	char day[GP_STATS_DAY_LEN + 1];
	int r = 0;

	if (!d || d->minibatches < 0 || d->samples < 0 || d->bytes_up < 0 ||
	    d->bytes_down < 0 || !isfinite(d->gflop) || d->gflop < 0 ||
	    !isfinite(d->compute_seconds) || d->compute_seconds < 0)
		return -EINVAL;
	if (s->readonly)
		return -EROFS;
	gp_stats_day(d->at, day);
	pthread_mutex_lock(&s->buf_lock);
	for (size_t i = 0; i < s->n_pending; i++) {
		struct gp_stats_row *row = &s->pending[i].row;

		if (strcmp(row->day, day) == 0 &&
		    strncmp(row->pool, d->pool, sizeof(row->pool)) == 0 &&
		    strncmp(row->device, d->device, sizeof(row->device)) == 0) {
			p = &s->pending[i];
			break;
		}
	}
	if (!p) {
		if (s->n_pending == s->cap_pending) {
			size_t cap = s->cap_pending ? s->cap_pending * 2 : 16;
			struct pending *v = realloc(s->pending,
						    cap * sizeof(*v));

			if (!v) {
				r = -ENOMEM;
				goto out;
			}
			s->pending = v;
			s->cap_pending = cap;
		}
		p = &s->pending[s->n_pending++];
		memset(p, 0, sizeof(*p));
		memcpy(p->row.day, day, sizeof(day));
		snprintf(p->row.pool, sizeof(p->row.pool), "%.*s",
			 (int)sizeof(p->row.pool) - 1, d->pool);
		snprintf(p->row.device, sizeof(p->row.device), "%.*s",
			 (int)sizeof(p->row.device) - 1, d->device);
		p->first_at = d->at;
	}
	p->row.minibatches += d->minibatches;
	p->row.samples += d->samples;
	p->row.gflop += d->gflop;
	p->row.compute_seconds += d->compute_seconds;
	p->row.bytes_up += d->bytes_up;
	p->row.bytes_down += d->bytes_down;
	r = s->n_pending >= STATS_PENDING_KEYS;
	for (size_t i = 0; i < s->n_pending && !r; i++)
		if (d->at - s->pending[i].first_at >= s->flush_s)
			r = 1;
out:
	pthread_mutex_unlock(&s->buf_lock);
	return r;
}

int gp_stats_flush(struct gp_stats *s)
{
	struct pending *batch;
	struct note notes[STATS_NOTES_MAX];
	sqlite3_stmt *st = NULL;
	size_t n, n_notes;
	int r;

	if (s->readonly)
		return 0;
	pthread_mutex_lock(&s->lock);
	pthread_mutex_lock(&s->buf_lock);
	batch = s->pending;
	n = s->n_pending;
	s->pending = NULL;
	s->n_pending = s->cap_pending = 0;
	n_notes = s->n_notes;
	memcpy(notes, s->notes, n_notes * sizeof(notes[0]));
	s->n_notes = 0;
	pthread_mutex_unlock(&s->buf_lock);
	if (n == 0 && n_notes == 0) {
		r = 0;
		goto out;
	}
	r = gp_db_exec(&s->c, "BEGIN IMMEDIATE");
	if (r < 0)
		goto requeue;
	for (size_t i = 0; i < n_notes; i++) {
		const struct gp_stats_job *j = &notes[i].job;

		r = gp_db_run(&s->c, "cannot write a pool's job",
			      "UPDATE memberships SET job_name = ?2, "
			      "job_id = ?3, job_state = ?4, job_epoch = ?5, "
			      "job_epochs = ?6, job_progress = ?7, "
			      "job_accuracy = ?8, job_told_at = ?9 "
			      "WHERE pool = ?1",
			      "ttitiifFi", notes[i].pool, j->name, j->id,
			      j->state, (int64_t)j->epoch, (int64_t)j->epochs,
			      j->progress,
			      j->accuracy >= 0 ? j->accuracy : (double)NAN,
			      j->told_at);
		if (r < 0)
			goto rollback;
	}
	r = gp_db_prepare(&s->c,
			  "INSERT INTO contributions (day, pool, device, "
			  "minibatches, samples, gflop, compute_seconds, "
			  "bytes_up, bytes_down) "
			  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
			  "ON CONFLICT (day, pool, device) DO UPDATE SET "
			  "minibatches = minibatches + excluded.minibatches, "
			  "samples = samples + excluded.samples, "
			  "gflop = gflop + excluded.gflop, "
			  "compute_seconds = compute_seconds + "
			  "excluded.compute_seconds, "
			  "bytes_up = bytes_up + excluded.bytes_up, "
			  "bytes_down = bytes_down + excluded.bytes_down",
			  &st);
	if (r < 0)
		goto rollback;
	for (size_t i = 0; i < n; i++) {
		const struct gp_stats_row *row = &batch[i].row;

		sqlite3_reset(st);
		r = gp_db_bind(&s->c, st, "tttiiffii", row->day, row->pool,
			       row->device, row->minibatches, row->samples,
			       row->gflop, row->compute_seconds, row->bytes_up,
			       row->bytes_down);
		if (r == 0)
			r = gp_db_step_done(&s->c, st,
					    "cannot write contributions");
		if (r < 0)
			goto rollback;
	}
	sqlite3_finalize(st);
	st = NULL;
	r = gp_db_exec(&s->c, "COMMIT");
	if (r < 0)
		goto rollback;
	free(batch);
	r = (int)n;
	goto out;
rollback:
	sqlite3_finalize(st);
	gp_db_rollback(&s->c);
requeue:
	/* The notes back, unless a newer one for the pool came meanwhile. */
	for (size_t i = 0; i < n_notes; i++) {
		bool newer = false;

		pthread_mutex_lock(&s->buf_lock);
		for (size_t k = 0; k < s->n_notes; k++)
			newer |= strcmp(s->notes[k].pool, notes[i].pool) == 0;
		pthread_mutex_unlock(&s->buf_lock);
		if (!newer)
			(void)gp_stats_job_note(s, notes[i].pool, &notes[i].job);
	}
	/* Add the failed sums back onto whatever arrived meanwhile. */
	for (size_t i = 0; i < n; i++) {
		const struct gp_stats_row *row = &batch[i].row;
		struct gp_stats_delta d;

		memset(&d, 0, sizeof(d));
		d.at = batch[i].first_at;
		memcpy(d.pool, row->pool, sizeof(d.pool));
		memcpy(d.device, row->device, sizeof(d.device));
		d.minibatches = row->minibatches;
		d.samples = row->samples;
		d.gflop = row->gflop;
		d.compute_seconds = row->compute_seconds;
		d.bytes_up = row->bytes_up;
		d.bytes_down = row->bytes_down;
		(void)gp_stats_add(s, &d);
	}
	free(batch);
out:
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* ---- queries ----------------------------------------------------------- */

int gp_stats_day_bytes_up(struct gp_stats *s, int64_t t, int64_t *ret)
{
	char day[GP_STATS_DAY_LEN + 1];
	int64_t sum = 0;
	int r;

	if (!ret)
		return -EINVAL;
	gp_stats_day(t, day);
	/* The connection's lock first, as gp_stats_flush takes them: a flush
	 * then cannot move sums from pending to the table in between. */
	pthread_mutex_lock(&s->lock);
	r = gp_db_row(&s->c, "cannot query the bytes sent today", gp_db_int64,
		      &sum,
		      "SELECT coalesce(sum(bytes_up), 0) FROM contributions "
		      "WHERE day = ?1",
		      "t", day);
	if (r >= 0) {
		pthread_mutex_lock(&s->buf_lock);
		for (size_t i = 0; i < s->n_pending; i++)
			if (strcmp(s->pending[i].row.day, day) == 0)
				sum += s->pending[i].row.bytes_up;
		pthread_mutex_unlock(&s->buf_lock);
		*ret = sum;
		r = 0;
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

static int read_row(sqlite3_stmt *st, void *arg)
{
	struct gp_stats_row *row = arg;

	gp_db_column_text(st, 0, row->day, sizeof(row->day));
	gp_db_column_text(st, 1, row->pool, sizeof(row->pool));
	gp_db_column_text(st, 2, row->device, sizeof(row->device));
	row->minibatches = sqlite3_column_int64(st, 3);
	row->samples = sqlite3_column_int64(st, 4);
	row->gflop = sqlite3_column_double(st, 5);
	row->compute_seconds = sqlite3_column_double(st, 6);
	row->bytes_up = sqlite3_column_int64(st, 7);
	row->bytes_down = sqlite3_column_int64(st, 8);
	return 0;
}

int gp_stats_query(struct gp_stats *s, unsigned group, const char *since_day,
		   struct gp_stats_row **ret, size_t *ret_n)
{
	char sql[768], by[64] = "";
	int r;

	if (!ret || !ret_n ||
	    (group & ~(unsigned)(GP_STATS_BY_DAY | GP_STATS_BY_POOL |
				 GP_STATS_BY_DEVICE)))
		return -EINVAL;
	if (group & GP_STATS_BY_DAY)
		strcat(by, "day,");
	if (group & GP_STATS_BY_POOL)
		strcat(by, "pool,");
	if (group & GP_STATS_BY_DEVICE)
		strcat(by, "device,");
	if (*by)
		by[strlen(by) - 1] = '\0';
	/* Only fixed fragments are pasted; the one value is bound. */
	snprintf(sql, sizeof(sql),
		 "SELECT %s, %s, %s, coalesce(sum(minibatches), 0), "
		 "coalesce(sum(samples), 0), coalesce(sum(gflop), 0), "
		 "coalesce(sum(compute_seconds), 0), "
		 "coalesce(sum(bytes_up), 0), coalesce(sum(bytes_down), 0) "
		 "FROM contributions WHERE ?1 IS NULL OR day >= ?1 %s%s "
		 "%s%s",
		 group & GP_STATS_BY_DAY ? "day" : "''",
		 group & GP_STATS_BY_POOL ? "pool" : "''",
		 group & GP_STATS_BY_DEVICE ? "device" : "''",
		 *by ? "GROUP BY " : "", by, *by ? "ORDER BY " : "", by);
	pthread_mutex_lock(&s->lock);
	r = gp_db_list(&s->c, "cannot query contributions", sizeof(**ret),
		       read_row, (void **)ret, ret_n, sql, "t", since_day);
	pthread_mutex_unlock(&s->lock);
	return r;
}

/* ---- output ------------------------------------------------------------ */

const char *gp_stats_human_count(double v, char *buf, size_t size)
{
	static const char suffix[] = " kMGTPE";
	double a = fabs(v);
	int i = 0;

	if (!isfinite(v)) {
		snprintf(buf, size, "-");
		return buf;
	}
	while (a >= 999.5 && i < 6) {
		a /= 1000.0;
		v /= 1000.0;
		i++;
	}
	if (i == 0)
		snprintf(buf, size, v == (double)(int64_t)v ? "%.0f" : "%.3g", v);
	else
		snprintf(buf, size, "%.3g%c", v, suffix[i]);
	return buf;
}

const char *gp_stats_human_duration(double seconds, char *buf, size_t size)
{
	if (!isfinite(seconds) || seconds < 0)
		snprintf(buf, size, "-");
	else if (seconds < 59.95)
		snprintf(buf, size, "%.1f s", seconds);
	else if (seconds < 3597)
		snprintf(buf, size, "%.1f min", seconds / 60.0);
	else if (seconds < 100 * 3600)
		snprintf(buf, size, "%.2f h", seconds / 3600.0);
	else
		snprintf(buf, size, "%.0f h", seconds / 3600.0);
	return buf;
}

static double mib(int64_t bytes)
{
	return (double)bytes / (1024.0 * 1024.0);
}

const char *gp_stats_pool_name(const char *pool,
			       const struct gp_stats_membership *pools,
			       size_t n_pools, char *buf, size_t size)
{
	buf[0] = '\0';
	for (size_t i = 0; pools && i < n_pools; i++) {
		const struct gp_stats_membership *m = &pools[i];
		int ep = (int)strcspn(m->endpoints, ",");

		if (strcmp(m->pool, pool) != 0)
			continue;
		if (m->job.name[0] && ep)
			snprintf(buf, size, "%s at %.*s", m->job.name, ep,
				 m->endpoints);
		else if (m->job.name[0])
			snprintf(buf, size, "%s", m->job.name);
		else if (ep)
			snprintf(buf, size, "pool at %.*s", ep, m->endpoints);
		break;
	}
	return buf;
}

/* Width of the pool column of the table: a name and a short fingerprint. */
#define POOL_COL 44

static void table_line(FILE *out, unsigned group, const char *day,
		       const char *pool, const char *device,
		       const struct gp_stats_row *r)
{
	if (group & GP_STATS_BY_DAY)
		fprintf(out, "%-10.10s  ", day);
	if (group & GP_STATS_BY_POOL)
		fprintf(out, "%-*.*s  ", POOL_COL, POOL_COL, pool);
	if (group & GP_STATS_BY_DEVICE)
		fprintf(out, "%-20.20s  ", device);
	char t[GP_STATS_HUMAN_MAX];

	fprintf(out, "%11" PRId64 " %11" PRId64 " %11.1f %9s %10.1f %10.1f\n",
		r->minibatches, r->samples, r->gflop,
		gp_stats_human_duration(r->compute_seconds, t, sizeof(t)),
		mib(r->bytes_up), mib(r->bytes_down));
}

int gp_stats_format_table(FILE *out, unsigned group,
			  const struct gp_stats_row *rows, size_t n,
			  const struct gp_stats_row *total,
			  const struct gp_stats_membership *pools,
			  size_t n_pools)
{
	const char *label = "total";

	if (group & GP_STATS_BY_DAY)
		fprintf(out, "%-10s  ", "day");
	if (group & GP_STATS_BY_POOL)
		fprintf(out, "%-*s  ", POOL_COL, "pool (key)");
	if (group & GP_STATS_BY_DEVICE)
		fprintf(out, "%-20s  ", "device");
	fprintf(out, "%11s %11s %11s %9s %10s %10s\n", "minibatches",
		"samples", "GFLOP", "compute", "MiB up", "MiB down");
	for (size_t i = 0; i < n; i++) {
		char name[GP_STATS_JOB_NAME_MAX + 80], label_pool[160];
		const char *pool = rows[i].pool;

		/* The name the volunteer knows, the fingerprint's first two
		 * groups after it ("7e38-6615"): enough to tell two pools
		 * apart. */
		gp_stats_pool_name(pool, pools, n_pools, name, sizeof(name));
		if (!pool[0])
			snprintf(label_pool, sizeof(label_pool), "-");
		else if (name[0])
			snprintf(label_pool, sizeof(label_pool), "%.*s (%.9s)",
				 POOL_COL - 12, name, pool);
		else
			snprintf(label_pool, sizeof(label_pool), "%s", pool);
		table_line(out, group, rows[i].day, label_pool,
			   rows[i].device[0] ? rows[i].device : "(no device)",
			   &rows[i]);
	}
	if (total) {
		/* The label goes in the first grouped column. */
		table_line(out, group, label,
			   group & GP_STATS_BY_DAY ? "" : label,
			   group & (GP_STATS_BY_DAY | GP_STATS_BY_POOL) ? ""
									  : label,
			   total);
	}
	return ferror(out) ? -EIO : 0;
}

static void json_number(FILE *out, double v)
{
	if (isfinite(v))
		fprintf(out, "%.6f", v);
	else
		fputs("null", out);
}

static void json_row(FILE *out, unsigned group, const struct gp_stats_row *r,
		     const struct gp_stats_membership *pools, size_t n_pools)
{
	fputc('{', out);
	if (group & GP_STATS_BY_DAY) {
		fputs("\"day\": ", out);
		gp_json_string(out, r->day);
		fputs(", ", out);
	}
	if (group & GP_STATS_BY_POOL) {
		char name[GP_STATS_JOB_NAME_MAX + 80];

		fputs("\"pool\": ", out);
		gp_json_string(out, r->pool);
		fputs(", \"pool_name\": ", out);
		gp_json_string(out, gp_stats_pool_name(r->pool, pools, n_pools,
							name, sizeof(name)));
		fputs(", ", out);
	}
	if (group & GP_STATS_BY_DEVICE) {
		fputs("\"device\": ", out);
		gp_json_string(out, r->device);
		fputs(", ", out);
	}
	fprintf(out, "\"minibatches\": %" PRId64 ", \"samples\": %" PRId64
		     ", \"gflop\": ",
		r->minibatches, r->samples);
	json_number(out, r->gflop);
	fputs(", \"compute_seconds\": ", out);
	json_number(out, r->compute_seconds);
	fprintf(out, ", \"bytes_up\": %" PRId64 ", \"bytes_down\": %" PRId64 "}",
		r->bytes_up, r->bytes_down);
}

int gp_stats_format_json(FILE *out, unsigned group,
			 const struct gp_stats_row *rows, size_t n,
			 const struct gp_stats_row *total,
			 const struct gp_stats_membership *pools,
			 size_t n_pools)
{
	static const struct gp_stats_row zero;

	fputs("{\"total\": ", out);
	json_row(out, 0, total ? total : &zero, NULL, 0);
	fputs(",\n \"rows\": [", out);
	for (size_t i = 0; i < n; i++) {
		fputs(i ? ",\n  " : "\n  ", out);
		json_row(out, group, &rows[i], pools, n_pools);
	}
	fputs("],\n \"pools\": [", out);
	for (size_t i = 0; i < n_pools; i++) {
		const struct gp_stats_membership *m = &pools[i];
		char name[GP_STATS_JOB_NAME_MAX + 80];

		fputs(i ? ",\n  " : "\n  ", out);
		fputs("{\"pool\": ", out);
		gp_json_string(out, m->pool);
		fputs(", \"name\": ", out);
		gp_json_string(out, gp_stats_pool_name(m->pool, pools, n_pools,
							name, sizeof(name)));
		fputs(", \"coordinator_key\": \"", out);
		for (size_t k = 0; k < GP_STATS_KEY_SIZE; k++)
			fprintf(out, "%02x", m->coordinator_key[k]);
		fputs("\", \"endpoints\": ", out);
		gp_json_string(out, m->endpoints);
		fprintf(out, ", \"agent_id\": %" PRId64 ", \"joined_at\": %" PRId64
			     ", \"left_at\": ",
			m->agent_id, m->joined_at);
		if (m->left_at)
			fprintf(out, "%" PRId64, m->left_at);
		else
			fputs("null", out);
		fputs(", \"job\": ", out);
		gp_stats_job_json(out, &m->job);
		fputc('}', out);
	}
	fputs("]}\n", out);
	return ferror(out) ? -EIO : 0;
}

void gp_stats_job_json(FILE *out, const struct gp_stats_job *job)
{
	if (!job->name[0]) {
		fputs("null", out);
		return;
	}
	fputs("{\"name\": ", out);
	gp_json_string(out, job->name);
	fprintf(out, ", \"id\": %" PRId64 ", \"state\": ", job->id);
	gp_json_string(out, job->state);
	fprintf(out, ", \"epoch\": %" PRIu32 ", \"epochs\": %" PRIu32
		", \"progress\": %.6f, \"test_accuracy\": ",
		job->epoch, job->epochs, job->progress);
	if (job->accuracy >= 0)
		fprintf(out, "%.6f", job->accuracy);
	else
		fputs("null", out);
	fprintf(out, ", \"told_at\": %" PRId64 "}", job->told_at);
}
