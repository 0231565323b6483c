#include "ledger.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "db.h"
#include "util.h"

/* "GPLG" */
#define LEDGER_APPLICATION_ID 0x47504c47

/* Schema steps, oldest first; never edit a step that has shipped, append a
 * new one. docs/architecture.md describes the tables. */
static const char *const migrations[] = {
	/* 1: the initial schema */
	"CREATE TABLE meta ("
	"  key TEXT PRIMARY KEY,"
	"  value TEXT NOT NULL);"
	"CREATE TABLE tokens ("
	"  id INTEGER PRIMARY KEY,"
	"  label TEXT NOT NULL DEFAULT '',"
	"  secret_hash BLOB NOT NULL CHECK (length(secret_hash) = 32),"
	"  created_at INTEGER NOT NULL,"
	"  expires_at INTEGER,"
	"  max_uses INTEGER NOT NULL DEFAULT 0 CHECK (max_uses >= 0),"
	"  uses INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0),"
	"  revoked_at INTEGER);"
	"CREATE TABLE agents ("
	"  id INTEGER PRIMARY KEY,"
	"  name TEXT NOT NULL DEFAULT '',"
	"  public_key BLOB NOT NULL UNIQUE CHECK (length(public_key) = 32),"
	"  fingerprint TEXT NOT NULL DEFAULT '',"
	"  token_id INTEGER REFERENCES tokens(id),"
	"  joined_at INTEGER NOT NULL,"
	"  last_seen INTEGER,"
	"  revoked_at INTEGER);"
	"CREATE TABLE agent_devices ("
	"  agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,"
	"  idx INTEGER NOT NULL,"
	"  kind TEXT NOT NULL,"
	"  name TEXT NOT NULL,"
	"  gflops REAL NOT NULL,"
	"  samples_per_s REAL NOT NULL,"
	"  PRIMARY KEY (agent_id, idx));"
	"CREATE TABLE jobs ("
	"  id INTEGER PRIMARY KEY,"
	"  spec TEXT NOT NULL,"
	"  state TEXT NOT NULL"
	"    CHECK (state IN ('created', 'running', 'done', 'failed')),"
	"  created_at INTEGER NOT NULL,"
	"  updated_at INTEGER NOT NULL);"
	"CREATE TABLE updates ("
	"  id INTEGER PRIMARY KEY,"
	"  job_id INTEGER NOT NULL REFERENCES jobs(id),"
	"  agent_id INTEGER NOT NULL REFERENCES agents(id),"
	"  clock INTEGER NOT NULL,"
	"  epoch INTEGER NOT NULL,"
	"  minibatch INTEGER NOT NULL,"
	"  samples INTEGER NOT NULL,"
	"  loss REAL,"
	"  grad_norm REAL,"
	"  staleness INTEGER NOT NULL,"
	"  received_at INTEGER NOT NULL,"
	"  applied_at INTEGER,"
	"  outcome TEXT NOT NULL"
	"    CHECK (outcome IN ('applied', 'duplicate', 'late', 'rejected')),"
	"  reason TEXT NOT NULL DEFAULT '');"
	"CREATE INDEX updates_by_agent ON updates (agent_id, job_id);"
	"CREATE INDEX updates_by_job ON updates (job_id, epoch, minibatch);"
	"CREATE TABLE rejections ("
	"  id INTEGER PRIMARY KEY,"
	"  agent_id INTEGER REFERENCES agents(id),"
	"  kind TEXT NOT NULL,"
	"  reason TEXT NOT NULL DEFAULT '',"
	"  at INTEGER NOT NULL);"
	"CREATE INDEX rejections_by_agent ON rejections (agent_id);"
	"CREATE TABLE evals ("
	"  job_id INTEGER NOT NULL REFERENCES jobs(id),"
	"  epoch INTEGER NOT NULL,"
	"  test_loss REAL,"
	"  test_accuracy REAL,"
	"  at INTEGER NOT NULL,"
	"  PRIMARY KEY (job_id, epoch));"
	"CREATE TABLE checkpoints ("
	"  job_id INTEGER NOT NULL REFERENCES jobs(id),"
	"  seq INTEGER NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  epoch INTEGER NOT NULL,"
	"  clock INTEGER NOT NULL,"
	"  format INTEGER NOT NULL,"
	"  size INTEGER NOT NULL,"
	"  blob BLOB NOT NULL,"
	"  PRIMARY KEY (job_id, seq));",
	/* 2: applied updates that a restore from a checkpoint undid (their
	 * minibatches are redone): the seq of that checkpoint, 0 while the
	 * update counts (gp_ledger_rollback_after) */
	"ALTER TABLE updates ADD COLUMN rolled_back INTEGER NOT NULL DEFAULT 0"
	"  CHECK (rolled_back >= 0);",
};

static const struct gp_db_schema ledger_schema = {
	.what = "gradpool ledger",
	.application_id = LEDGER_APPLICATION_ID,
	.migrations = migrations,
	.n_migrations = sizeof(migrations) / sizeof(migrations[0]),
};

static const char *const outcome_names[] = {
	[GP_UPDATE_APPLIED] = "applied",
	[GP_UPDATE_DUPLICATE] = "duplicate",
	[GP_UPDATE_LATE] = "late",
	[GP_UPDATE_REJECTED] = "rejected",
};

static const char *const state_names[] = {
	[GP_JOB_CREATED] = "created",
	[GP_JOB_RUNNING] = "running",
	[GP_JOB_DONE] = "done",
	[GP_JOB_FAILED] = "failed",
};

/* Rows waiting for gp_ledger_flush(). */
struct batch {
	struct gp_ledger_update *ups;
	size_t n_ups, cap_ups;
	struct gp_ledger_rejection *rejs;
	size_t n_rejs, cap_rejs;
};

struct gp_ledger {
	sqlite3 *db;
	pthread_mutex_t lock; /* the connection and err */
	bool readonly;

	pthread_mutex_t buf_lock; /* pending, oldest_at, thresholds */
	struct batch pending;
	int64_t oldest_at;
	size_t flush_rows;
	int64_t flush_ms;
	uint64_t dropped; /* rows the database refused (constraint) */

	char err[512];
};

static void set_err(struct gp_ledger *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void set_err(struct gp_ledger *l, const char *fmt, ...)
{
	char msg[sizeof(l->err)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	gp_db_set_err(l->db, l->err, sizeof(l->err), "%s", msg);
}

static int fail(struct gp_ledger *l, int rc, const char *context)
{
	return gp_db_fail(l->db, rc, context, l->err, sizeof(l->err));
}

static int prepare(struct gp_ledger *l, const char *sql, sqlite3_stmt **st)
{
	return gp_db_prepare(l->db, sql, st, l->err, sizeof(l->err));
}

/* Steps a statement that returns no row. */
static int step_done(struct gp_ledger *l, sqlite3_stmt *st, const char *ctx)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE)
		return fail(l, rc == SQLITE_ROW ? SQLITE_MISUSE : rc, ctx);
	return 0;
}

static int exec(struct gp_ledger *l, const char *sql)
{
	return gp_db_exec(l->db, sql, l->err, sizeof(l->err));
}

static void rollback(struct gp_ledger *l)
{
	/* Fails harmlessly when SQLite already rolled back on its own. */
	sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Binds a time, with 0 meaning NULL ("never"). */
static void bind_time(sqlite3_stmt *st, int i, int64_t t)
{
	if (t)
		sqlite3_bind_int64(st, i, t);
	else
		sqlite3_bind_null(st, i);
}

static double column_real(sqlite3_stmt *st, int i)
{
	if (sqlite3_column_type(st, i) == SQLITE_NULL)
		return NAN;
	return sqlite3_column_double(st, i);
}

static void bind_real(sqlite3_stmt *st, int i, double v)
{
	if (isfinite(v))
		sqlite3_bind_double(st, i, v);
	else
		sqlite3_bind_null(st, i);
}

int gp_ledger_open(const char *path, unsigned flags, struct gp_ledger **ret,
		   char *err, size_t errlen)
{
	struct gp_ledger *l;
	unsigned dbflags = 0;
	int r;

	if (!path || !ret)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	if (flags & GP_LEDGER_CREATE)
		dbflags |= GP_DB_CREATE;
	if (flags & GP_LEDGER_READONLY)
		dbflags |= GP_DB_READONLY;
	if (flags & GP_LEDGER_CHECK)
		dbflags |= GP_DB_CHECK;
	r = gp_db_open(path, dbflags, &ledger_schema, &l->db, err, errlen);
	if (r < 0) {
		free(l);
		return r;
	}
	l->readonly = !!(flags & GP_LEDGER_READONLY);
	l->flush_rows = 256;
	l->flush_ms = 1000;
	pthread_mutex_init(&l->lock, NULL);
	pthread_mutex_init(&l->buf_lock, NULL);
	*ret = l;
	return 0;
}

static void batch_free(struct batch *b)
{
	free(b->ups);
	free(b->rejs);
	memset(b, 0, sizeof(*b));
}

void gp_ledger_close(struct gp_ledger *l)
{
	if (!l)
		return;
	if (!l->readonly && gp_ledger_pending(l) > 0)
		(void)gp_ledger_flush(l);
	sqlite3_close(l->db);
	batch_free(&l->pending);
	pthread_mutex_destroy(&l->lock);
	pthread_mutex_destroy(&l->buf_lock);
	free(l);
}

const char *gp_ledger_error(struct gp_ledger *l)
{
	return l->err;
}

void gp_ledger_error_copy(struct gp_ledger *l, char *buf, size_t size)
{
	if (!size)
		return;
	pthread_mutex_lock(&l->lock);
	snprintf(buf, size, "%s", l->err);
	pthread_mutex_unlock(&l->lock);
}

int gp_ledger_check(struct gp_ledger *l)
{
	int r;

	pthread_mutex_lock(&l->lock);
	r = gp_db_check(l->db, 0, l->err, sizeof(l->err));
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* ---- meta -------------------------------------------------------------- */

int gp_ledger_meta_set(struct gp_ledger *l, const char *key,
		       const char *value)
{
	sqlite3_stmt *st = NULL;
	int r;

	pthread_mutex_lock(&l->lock);
	r = prepare(l, "INSERT INTO meta (key, value) VALUES (?1, ?2) "
		       "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
		    &st);
	if (r < 0)
		goto out;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
	r = step_done(l, st, "cannot write meta");
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
}

int gp_ledger_meta_get(struct gp_ledger *l, const char *key, char *buf,
		       size_t size)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	pthread_mutex_lock(&l->lock);
	r = prepare(l, "SELECT value FROM meta WHERE key = ?1", &st);
	if (r < 0)
		goto out;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const unsigned char *v = sqlite3_column_text(st, 0);
		size_t n = (size_t)sqlite3_column_bytes(st, 0);

		if (n >= size || n > INT32_MAX) {
			r = -ERANGE;
		} else {
			memcpy(buf, v ? (const char *)v : "", n);
			buf[n] = '\0';
			r = (int)n;
		}
	} else if (rc == SQLITE_DONE) {
		set_err(l, "no meta key '%s'", key);
		r = -ENOENT;
	} else {
		r = fail(l, rc, "cannot read meta");
	}
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* ---- agents ------------------------------------------------------------ */

#define AGENT_COLUMNS                                                          \
	"a.id, a.name, a.public_key, a.fingerprint, a.token_id, a.joined_at, " \
	"a.last_seen, a.revoked_at"
#define AGENT_NCOLUMNS 8

static void read_agent(sqlite3_stmt *st, struct gp_ledger_agent *a)
{
	const void *key = sqlite3_column_blob(st, 2);

	memset(a, 0, sizeof(*a));
	a->id = sqlite3_column_int64(st, 0);
	gp_db_column_text(st, 1, a->name, sizeof(a->name));
	/* The CHECK constraint guarantees 32 bytes, but a damaged file
	 * guarantees nothing. */
	if (key && sqlite3_column_bytes(st, 2) == GP_LEDGER_KEY_SIZE)
		memcpy(a->public_key, key, GP_LEDGER_KEY_SIZE);
	gp_db_column_text(st, 3, a->fingerprint, sizeof(a->fingerprint));
	a->token_id = sqlite3_column_int64(st, 4);
	a->joined_at = sqlite3_column_int64(st, 5);
	a->last_seen = sqlite3_column_int64(st, 6);
	a->revoked_at = sqlite3_column_int64(st, 7);
}

static int load_devices(struct gp_ledger *l, struct gp_ledger_agent *a)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	r = prepare(l, "SELECT kind, name, gflops, samples_per_s "
		       "FROM agent_devices WHERE agent_id = ?1 ORDER BY idx",
		    &st);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, a->id);
	a->n_devices = 0;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct gp_ledger_device *d;

		if (a->n_devices == GP_LEDGER_DEVICES_MAX)
			continue;
		d = &a->devices[a->n_devices++];
		gp_db_column_text(st, 0, d->kind, sizeof(d->kind));
		gp_db_column_text(st, 1, d->name, sizeof(d->name));
		d->gflops = sqlite3_column_double(st, 2);
		d->samples_per_s = sqlite3_column_double(st, 3);
	}
	if (rc != SQLITE_DONE)
		r = fail(l, rc, "cannot read devices");
	sqlite3_finalize(st);
	return r;
}

/* Replaces the devices of an agent; the caller holds the lock and is
 * inside a transaction. */
static int write_devices(struct gp_ledger *l, int64_t id,
			 const struct gp_ledger_device *devices, size_t n)
{
	sqlite3_stmt *st = NULL;
	int r;

	if (n > GP_LEDGER_DEVICES_MAX) {
		set_err(l, "too many devices (%zu)", n);
		return -E2BIG;
	}
	r = prepare(l, "DELETE FROM agent_devices WHERE agent_id = ?1", &st);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, id);
	r = step_done(l, st, "cannot clear devices");
	sqlite3_finalize(st);
	st = NULL;
	if (r < 0 || n == 0)
		return r;
	r = prepare(l, "INSERT INTO agent_devices (agent_id, idx, kind, name, "
		       "gflops, samples_per_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
		    &st);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r >= 0; i++) {
		sqlite3_reset(st);
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_int64(st, 2, (int64_t)i);
		sqlite3_bind_text(st, 3, devices[i].kind, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 4, devices[i].name, -1, SQLITE_STATIC);
		sqlite3_bind_double(st, 5, isfinite(devices[i].gflops) ?
						   devices[i].gflops : 0);
		sqlite3_bind_double(st, 6, isfinite(devices[i].samples_per_s) ?
						   devices[i].samples_per_s : 0);
		r = step_done(l, st, "cannot write a device");
	}
	sqlite3_finalize(st);
	return r;
}

/* Explains why the token's use counter did not move. */
static int token_refusal(struct gp_ledger *l, int64_t token_id, int64_t now)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	r = prepare(l, "SELECT revoked_at, expires_at, max_uses, uses "
		       "FROM tokens WHERE id = ?1",
		    &st);
	if (r < 0)
		return r;
	sqlite3_bind_int64(st, 1, token_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		set_err(l, "token %lld does not exist", (long long)token_id);
		r = -ENOENT;
	} else if (rc != SQLITE_ROW) {
		r = fail(l, rc, "cannot read a token");
	} else if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
		set_err(l, "token %lld has been revoked", (long long)token_id);
		r = -EKEYREVOKED;
	} else if (sqlite3_column_type(st, 1) != SQLITE_NULL &&
		   sqlite3_column_int64(st, 1) <= now) {
		set_err(l, "token %lld has expired", (long long)token_id);
		r = -EKEYEXPIRED;
	} else {
		set_err(l, "token %lld has been used %lld of %lld times",
			(long long)token_id,
			(long long)sqlite3_column_int64(st, 3),
			(long long)sqlite3_column_int64(st, 2));
		r = -EKEYREJECTED;
	}
	sqlite3_finalize(st);
	return r;
}

int gp_ledger_join(struct gp_ledger *l, int64_t token_id,
		   const struct gp_ledger_agent *agent, int64_t now,
		   int64_t *ret_id)
{
	sqlite3_stmt *st = NULL;
	int64_t id = 0;
	int r, rc, existing = 0;

	if (!agent || !ret_id)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	/* IMMEDIATE: take the write lock before reading, so that two joins
	 * racing for the last use of a token cannot both see it free. */
	r = exec(l, "BEGIN IMMEDIATE");
	if (r < 0)
		goto out_unlocked_txn;

	r = prepare(l, "SELECT id, revoked_at FROM agents WHERE public_key = ?1",
		    &st);
	if (r < 0)
		goto fail;
	sqlite3_bind_blob(st, 1, agent->public_key, GP_LEDGER_KEY_SIZE,
			  SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		if (sqlite3_column_type(st, 1) != SQLITE_NULL) {
			set_err(l, "agent %lld has been revoked",
				(long long)sqlite3_column_int64(st, 0));
			r = -EKEYREVOKED;
			goto fail;
		}
		id = sqlite3_column_int64(st, 0);
		existing = 1;
	} else if (rc != SQLITE_DONE) {
		r = fail(l, rc, "cannot look up an agent");
		goto fail;
	}
	sqlite3_finalize(st);
	st = NULL;
	if (existing)
		goto commit;

	r = prepare(l, "UPDATE tokens SET uses = uses + 1 "
		       "WHERE id = ?1 AND revoked_at IS NULL "
		       "AND (expires_at IS NULL OR expires_at > ?2) "
		       "AND (max_uses = 0 OR uses < max_uses)",
		    &st);
	if (r < 0)
		goto fail;
	sqlite3_bind_int64(st, 1, token_id);
	sqlite3_bind_int64(st, 2, now);
	r = step_done(l, st, "cannot consume a token use");
	if (r < 0)
		goto fail;
	if (sqlite3_changes(l->db) != 1) {
		r = token_refusal(l, token_id, now);
		if (r >= 0)
			r = -EIO;
		goto fail;
	}
	sqlite3_finalize(st);
	st = NULL;

	r = prepare(l, "INSERT INTO agents (name, public_key, fingerprint, "
		       "token_id, joined_at, last_seen) "
		       "VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
		    &st);
	if (r < 0)
		goto fail;
	sqlite3_bind_text(st, 1, agent->name, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 2, agent->public_key, GP_LEDGER_KEY_SIZE,
			  SQLITE_STATIC);
	sqlite3_bind_text(st, 3, agent->fingerprint, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, token_id);
	sqlite3_bind_int64(st, 5, now);
	r = step_done(l, st, "cannot insert an agent");
	if (r < 0)
		goto fail;
	id = sqlite3_last_insert_rowid(l->db);
	r = write_devices(l, id, agent->devices, agent->n_devices);
	if (r < 0)
		goto fail;
commit:
	sqlite3_finalize(st);
	st = NULL;
	r = exec(l, "COMMIT");
	if (r < 0)
		goto fail;
	*ret_id = id;
	r = existing;
	goto out;
fail:
	sqlite3_finalize(st);
	rollback(l);
out_unlocked_txn:
out:
	pthread_mutex_unlock(&l->lock);
	return r;
}

static int agent_lookup(struct gp_ledger *l, const char *where,
			const void *key, int64_t id,
			struct gp_ledger_agent *ret)
{
	struct gp_ledger_agent a;
	sqlite3_stmt *st = NULL;
	char sql[256];
	int r, rc;

	snprintf(sql, sizeof(sql), "SELECT " AGENT_COLUMNS
		 " FROM agents a WHERE %s", where);
	pthread_mutex_lock(&l->lock);
	r = prepare(l, sql, &st);
	if (r < 0)
		goto out;
	if (key)
		sqlite3_bind_blob(st, 1, key, GP_LEDGER_KEY_SIZE, SQLITE_STATIC);
	else
		sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_DONE) {
		set_err(l, "no such agent");
		r = -ENOENT;
		goto out;
	}
	if (rc != SQLITE_ROW) {
		r = fail(l, rc, "cannot read an agent");
		goto out;
	}
	read_agent(st, &a);
	r = load_devices(l, &a);
	if (r < 0)
		goto out;
	*ret = a;
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
}

int gp_ledger_agent_by_key(struct gp_ledger *l, const uint8_t *public_key,
			   struct gp_ledger_agent *ret)
{
	if (!public_key || !ret)
		return -EINVAL;
	return agent_lookup(l, "a.public_key = ?1", public_key, 0, ret);
}

int gp_ledger_agent_get(struct gp_ledger *l, int64_t id,
			struct gp_ledger_agent *ret)
{
	if (!ret)
		return -EINVAL;
	return agent_lookup(l, "a.id = ?1", NULL, id, ret);
}

/* Runs one UPDATE with two integer parameters and checks it hit a row. */
static int update_one(struct gp_ledger *l, const char *sql, int64_t a,
		      int64_t b, const char *what)
{
	sqlite3_stmt *st = NULL;
	int r;

	pthread_mutex_lock(&l->lock);
	r = prepare(l, sql, &st);
	if (r < 0)
		goto out;
	sqlite3_bind_int64(st, 1, a);
	sqlite3_bind_int64(st, 2, b);
	r = step_done(l, st, "cannot update");
	if (r == 0 && sqlite3_changes(l->db) == 0) {
		set_err(l, "no such %s: %lld", what, (long long)a);
		r = -ENOENT;
	}
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
}

int gp_ledger_agent_revoke(struct gp_ledger *l, int64_t id, int64_t at)
{
	return update_one(l, "UPDATE agents SET revoked_at = "
			     "coalesce(revoked_at, ?2) WHERE id = ?1",
			  id, at, "agent");
}

int gp_ledger_agent_touch(struct gp_ledger *l, int64_t id, int64_t at)
{
	return update_one(l, "UPDATE agents SET last_seen = "
			     "max(coalesce(last_seen, 0), ?2) WHERE id = ?1",
			  id, at, "agent");
}

int gp_ledger_agent_set_devices(struct gp_ledger *l, int64_t id,
				const struct gp_ledger_device *devices,
				size_t n)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	if (!devices && n)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = exec(l, "BEGIN IMMEDIATE");
	if (r < 0)
		goto out;
	r = prepare(l, "SELECT 1 FROM agents WHERE id = ?1", &st);
	if (r < 0)
		goto fail;
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		if (rc == SQLITE_DONE) {
			set_err(l, "no such agent: %lld", (long long)id);
			r = -ENOENT;
		} else {
			r = fail(l, rc, "cannot read an agent");
		}
		goto fail;
	}
	r = write_devices(l, id, devices, n);
	if (r < 0)
		goto fail;
	r = exec(l, "COMMIT");
	if (r < 0)
		goto fail;
	goto out;
fail:
	rollback(l);
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
}

int gp_ledger_agent_list(struct gp_ledger *l, int64_t job_id,
			 struct gp_ledger_agent_row **ret_rows, size_t *ret_n)
{
	struct gp_ledger_agent_row *rows = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *st = NULL;
	int r, rc;

	if (!ret_rows || !ret_n)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = prepare(l,
		    "SELECT " AGENT_COLUMNS ", "
		    "  coalesce(sum(u.outcome = 'applied'), 0),"
		    "  coalesce(sum(CASE WHEN u.outcome = 'applied'"
		    "               THEN u.samples END), 0),"
		    "  coalesce(sum(u.outcome IN ('duplicate', 'late')), 0),"
		    "  coalesce(sum(u.outcome = 'rejected'), 0),"
		    "  (SELECT count(*) FROM rejections r"
		    "   WHERE r.agent_id = a.id),"
		    "  coalesce(max(u.clock), -1),"
		    "  coalesce(max(u.received_at), 0) "
		    "FROM agents a LEFT JOIN updates u ON u.agent_id = a.id "
		    "  AND (?1 = 0 OR u.job_id = ?1) "
		    "GROUP BY a.id ORDER BY a.id",
		    &st);
	if (r < 0)
		goto out;
	sqlite3_bind_int64(st, 1, job_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct gp_ledger_agent_row *row;
		int c = AGENT_NCOLUMNS;

		if (gp_array_grow((void **)&rows, &cap, n, sizeof(*rows)) < 0) {
			r = -ENOMEM;
			goto out;
		}
		row = &rows[n++];
		read_agent(st, &row->agent);
		row->updates_applied = sqlite3_column_int64(st, c++);
		row->samples_applied = sqlite3_column_int64(st, c++);
		row->updates_discarded = sqlite3_column_int64(st, c++);
		row->updates_rejected = sqlite3_column_int64(st, c++);
		row->rejections = sqlite3_column_int64(st, c++);
		row->last_clock = sqlite3_column_int64(st, c++);
		row->last_update_at = sqlite3_column_int64(st, c++);
	}
	if (rc != SQLITE_DONE) {
		r = fail(l, rc, "cannot list agents");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		r = load_devices(l, &rows[i].agent);
		if (r < 0)
			goto out;
	}
	*ret_rows = rows;
	*ret_n = n;
	rows = NULL;
	r = 0;
out:
	free(rows);
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* ---- tokens ------------------------------------------------------------ */

int64_t gp_ledger_token_id_from_bytes(const uint8_t id[GP_LEDGER_TOKEN_ID_SIZE])
{
	uint64_t v = 0;

	for (int i = GP_LEDGER_TOKEN_ID_SIZE - 1; i >= 0; i--)
		v = v << 8 | id[i];
	return (int64_t)v;
}

void gp_ledger_token_id_to_bytes(int64_t id,
				 uint8_t ret[GP_LEDGER_TOKEN_ID_SIZE])
{
	uint64_t v = (uint64_t)id;

	for (int i = 0; i < GP_LEDGER_TOKEN_ID_SIZE; i++)
		ret[i] = (uint8_t)(v >> (8 * i));
}

int gp_ledger_token_insert(struct gp_ledger *l,
			   const struct gp_ledger_token *t, int64_t *ret_id)
{
	sqlite3_stmt *st = NULL;
	int r;

	if (!t || !ret_id || t->max_uses < 0 || t->uses < 0)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = prepare(l, "INSERT INTO tokens (id, label, secret_hash, created_at, "
		       "expires_at, max_uses, uses, revoked_at) "
		       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
		    &st);
	if (r < 0)
		goto out;
	if (t->id)
		sqlite3_bind_int64(st, 1, t->id);
	else
		sqlite3_bind_null(st, 1);
	sqlite3_bind_text(st, 2, t->label, -1, SQLITE_STATIC);
	sqlite3_bind_blob(st, 3, t->secret_hash, GP_LEDGER_HASH_SIZE,
			  SQLITE_STATIC);
	sqlite3_bind_int64(st, 4, t->created_at);
	bind_time(st, 5, t->expires_at);
	sqlite3_bind_int64(st, 6, t->max_uses);
	sqlite3_bind_int64(st, 7, t->uses);
	bind_time(st, 8, t->revoked_at);
	r = step_done(l, st, "cannot insert a token");
	if (r == 0)
		*ret_id = sqlite3_last_insert_rowid(l->db);
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
}

#define TOKEN_COLUMNS                                                          \
	"id, label, secret_hash, created_at, expires_at, max_uses, uses, "     \
	"revoked_at"

static void read_token(sqlite3_stmt *st, struct gp_ledger_token *t)
{
	const void *h = sqlite3_column_blob(st, 2);

	memset(t, 0, sizeof(*t));
	t->id = sqlite3_column_int64(st, 0);
	gp_db_column_text(st, 1, t->label, sizeof(t->label));
	if (h && sqlite3_column_bytes(st, 2) == GP_LEDGER_HASH_SIZE)
		memcpy(t->secret_hash, h, GP_LEDGER_HASH_SIZE);
	t->created_at = sqlite3_column_int64(st, 3);
	t->expires_at = sqlite3_column_int64(st, 4);
	t->max_uses = sqlite3_column_int64(st, 5);
	t->uses = sqlite3_column_int64(st, 6);
	t->revoked_at = sqlite3_column_int64(st, 7);
}

int gp_ledger_token_get(struct gp_ledger *l, int64_t id,
			struct gp_ledger_token *ret)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	if (!ret)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = prepare(l, "SELECT " TOKEN_COLUMNS " FROM tokens WHERE id = ?1",
		    &st);
	if (r < 0)
		goto out;
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		read_token(st, ret);
	} else if (rc == SQLITE_DONE) {
		set_err(l, "token %lld does not exist", (long long)id);
		r = -ENOENT;
	} else {
		r = fail(l, rc, "cannot read a token");
	}
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
}

int gp_ledger_token_revoke(struct gp_ledger *l, int64_t id, int64_t at)
{
	return update_one(l, "UPDATE tokens SET revoked_at = "
			     "coalesce(revoked_at, ?2) WHERE id = ?1",
			  id, at, "token");
}

int gp_ledger_token_list(struct gp_ledger *l,
			 struct gp_ledger_token **ret_tokens, size_t *ret_n)
{
	struct gp_ledger_token *v = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *st = NULL;
	int r, rc;

	if (!ret_tokens || !ret_n)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = prepare(l, "SELECT " TOKEN_COLUMNS " FROM tokens ORDER BY id", &st);
	if (r < 0)
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (gp_array_grow((void **)&v, &cap, n, sizeof(*v)) < 0) {
			r = -ENOMEM;
			goto out;
		}
		read_token(st, &v[n++]);
	}
	if (rc != SQLITE_DONE) {
		r = fail(l, rc, "cannot list tokens");
		goto out;
	}
	*ret_tokens = v;
	*ret_n = n;
	v = NULL;
out:
	free(v);
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* ---- jobs -------------------------------------------------------------- */

const char *gp_ledger_job_state_name(enum gp_ledger_job_state state)
{
	if ((unsigned)state < sizeof(state_names) / sizeof(state_names[0]))
		return state_names[state];
	return "unknown";
}

static enum gp_ledger_job_state parse_state(const unsigned char *s)
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
	sqlite3_stmt *st = NULL;
	int r;

	if (!spec || !ret_id)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = prepare(l, "INSERT INTO jobs (spec, state, created_at, updated_at) "
		       "VALUES (?1, 'created', ?2, ?2)",
		    &st);
	if (r < 0)
		goto out;
	sqlite3_bind_text(st, 1, spec, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, now);
	r = step_done(l, st, "cannot create a job");
	if (r == 0)
		*ret_id = sqlite3_last_insert_rowid(l->db);
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
}

int gp_ledger_job_get(struct gp_ledger *l, int64_t id,
		      struct gp_ledger_job *ret)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	if (!ret)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = prepare(l, "SELECT id, spec, state, created_at, updated_at "
		       "FROM jobs WHERE ?1 = 0 OR id = ?1 ORDER BY id DESC "
		       "LIMIT 1",
		    &st);
	if (r < 0)
		goto out;
	sqlite3_bind_int64(st, 1, id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const unsigned char *spec = sqlite3_column_text(st, 1);
		char *copy = strdup(spec ? (const char *)spec : "");

		if (!copy) {
			r = -ENOMEM;
			goto out;
		}
		ret->id = sqlite3_column_int64(st, 0);
		ret->spec = copy;
		ret->state = parse_state(sqlite3_column_text(st, 2));
		ret->created_at = sqlite3_column_int64(st, 3);
		ret->updated_at = sqlite3_column_int64(st, 4);
	} else if (rc == SQLITE_DONE) {
		set_err(l, "no such job: %lld", (long long)id);
		r = -ENOENT;
	} else {
		r = fail(l, rc, "cannot read a job");
	}
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
}

void gp_ledger_job_finish(struct gp_ledger_job *job)
{
	if (!job)
		return;
	free(job->spec);
	job->spec = NULL;
}

int gp_ledger_job_set_state(struct gp_ledger *l, int64_t id,
			    enum gp_ledger_job_state state, int64_t now)
{
	sqlite3_stmt *st = NULL;
	int r;

	if ((unsigned)state >= sizeof(state_names) / sizeof(state_names[0]))
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = prepare(l, "UPDATE jobs SET state = ?2, updated_at = ?3 "
		       "WHERE id = ?1",
		    &st);
	if (r < 0)
		goto out;
	sqlite3_bind_int64(st, 1, id);
	sqlite3_bind_text(st, 2, state_names[state], -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, now);
	r = step_done(l, st, "cannot update a job");
	if (r == 0 && sqlite3_changes(l->db) == 0) {
		set_err(l, "no such job: %lld", (long long)id);
		r = -ENOENT;
	}
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
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

static size_t batch_rows(const struct batch *b)
{
	return b->n_ups + b->n_rejs;
}

/* With buf_lock held. */
static bool due_locked(const struct gp_ledger *l, int64_t now)
{
	size_t n = batch_rows(&l->pending);

	return n > 0 && (n >= l->flush_rows || now - l->oldest_at >= l->flush_ms);
}

/* Adds one row to the pending batch; `at` is its time for the age test. */
static int append(struct gp_ledger *l, const struct gp_ledger_update *u,
		  const struct gp_ledger_rejection *rj, int64_t at)
{
	struct batch *b = &l->pending;
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
	return append(l, u, NULL, u->received_at);
}

int gp_ledger_rejection_append(struct gp_ledger *l,
			       const struct gp_ledger_rejection *rj)
{
	if (!rj)
		return -EINVAL;
	return append(l, NULL, rj, rj->at);
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
static void take_pending(struct gp_ledger *l, struct batch *out)
{
	pthread_mutex_lock(&l->buf_lock);
	*out = l->pending;
	memset(&l->pending, 0, sizeof(l->pending));
	pthread_mutex_unlock(&l->buf_lock);
}

/* Puts rows that failed to be written back in front of those appended since,
 * keeping their order. If memory runs out the rows are lost, and said so. */
static void give_back(struct gp_ledger *l, struct batch *b)
{
	struct batch *p = &l->pending;
	struct gp_ledger_update *ups = NULL;
	struct gp_ledger_rejection *rejs = NULL;

	if (batch_rows(b) == 0) {
		batch_free(b);
		return;
	}
	pthread_mutex_lock(&l->buf_lock);
	if (p->n_ups) {
		ups = malloc((b->n_ups + p->n_ups) * sizeof(*ups));
		if (!ups)
			goto lost;
		memcpy(ups, b->ups, b->n_ups * sizeof(*ups));
		memcpy(ups + b->n_ups, p->ups, p->n_ups * sizeof(*ups));
		free(b->ups);
		free(p->ups);
		b->ups = ups;
		b->n_ups += p->n_ups;
		b->cap_ups = b->n_ups;
		ups = NULL;
	} else {
		free(p->ups);
	}
	if (p->n_rejs) {
		rejs = malloc((b->n_rejs + p->n_rejs) * sizeof(*rejs));
		if (!rejs)
			goto lost;
		memcpy(rejs, b->rejs, b->n_rejs * sizeof(*rejs));
		memcpy(rejs + b->n_rejs, p->rejs, p->n_rejs * sizeof(*rejs));
		free(b->rejs);
		free(p->rejs);
		b->rejs = rejs;
		b->n_rejs += p->n_rejs;
		b->cap_rejs = b->n_rejs;
	} else {
		free(p->rejs);
	}
	*p = *b;
	memset(b, 0, sizeof(*b));
	pthread_mutex_unlock(&l->buf_lock);
	return;
lost:
	/* Keep the newer rows; the older ones cannot be requeued. */
	l->dropped += batch_rows(b);
	pthread_mutex_unlock(&l->buf_lock);
	batch_free(b);
}

/* Writes a batch inside the caller's transaction (lock held). A row the
 * database refuses by a constraint (an unknown agent or job id: a caller's
 * bug) is dropped and counted, so that one bad row cannot wedge the log;
 * any other error aborts. Returns rows written or a negative errno. */
static int write_batch(struct gp_ledger *l, const struct batch *b)
{
	sqlite3_stmt *st = NULL;
	int written = 0, r, rc;

	if (b->n_ups) {
		r = prepare(l, "INSERT INTO updates (job_id, agent_id, clock, "
			       "epoch, minibatch, samples, loss, grad_norm, "
			       "staleness, received_at, applied_at, outcome, "
			       "reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
			       "?9, ?10, ?11, ?12, ?13)",
			    &st);
		if (r < 0)
			return r;
		for (size_t i = 0; i < b->n_ups; i++) {
			const struct gp_ledger_update *u = &b->ups[i];

			sqlite3_reset(st);
			sqlite3_bind_int64(st, 1, u->job_id);
			sqlite3_bind_int64(st, 2, u->agent_id);
			sqlite3_bind_int64(st, 3, u->clock);
			sqlite3_bind_int64(st, 4, u->epoch);
			sqlite3_bind_int64(st, 5, u->minibatch);
			sqlite3_bind_int64(st, 6, u->samples);
			bind_real(st, 7, u->loss);
			bind_real(st, 8, u->grad_norm);
			sqlite3_bind_int64(st, 9, u->staleness);
			sqlite3_bind_int64(st, 10, u->received_at);
			bind_time(st, 11, u->applied_at);
			sqlite3_bind_text(st, 12, outcome_names[u->outcome], -1,
					  SQLITE_STATIC);
			sqlite3_bind_text(st, 13, u->reason, -1, SQLITE_STATIC);
			rc = sqlite3_step(st);
			if (rc == SQLITE_DONE) {
				written++;
			} else if ((rc & 0xff) == SQLITE_CONSTRAINT) {
				l->dropped++;
			} else {
				r = fail(l, rc, "cannot write the update log");
				sqlite3_finalize(st);
				return r;
			}
		}
		sqlite3_finalize(st);
		st = NULL;
	}
	if (b->n_rejs) {
		r = prepare(l, "INSERT INTO rejections (agent_id, kind, reason, "
			       "at) VALUES (?1, ?2, ?3, ?4)",
			    &st);
		if (r < 0)
			return r;
		for (size_t i = 0; i < b->n_rejs; i++) {
			const struct gp_ledger_rejection *rj = &b->rejs[i];

			sqlite3_reset(st);
			if (rj->agent_id)
				sqlite3_bind_int64(st, 1, rj->agent_id);
			else
				sqlite3_bind_null(st, 1);
			sqlite3_bind_text(st, 2, rj->kind, -1, SQLITE_STATIC);
			sqlite3_bind_text(st, 3, rj->reason, -1, SQLITE_STATIC);
			sqlite3_bind_int64(st, 4, rj->at);
			rc = sqlite3_step(st);
			if (rc == SQLITE_DONE) {
				written++;
			} else if ((rc & 0xff) == SQLITE_CONSTRAINT) {
				l->dropped++;
			} else {
				r = fail(l, rc, "cannot write rejections");
				sqlite3_finalize(st);
				return r;
			}
		}
		sqlite3_finalize(st);
	}
	return written;
}

int gp_ledger_flush(struct gp_ledger *l)
{
	struct batch b;
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
	r = exec(l, "BEGIN IMMEDIATE");
	if (r < 0)
		goto requeue;
	n = write_batch(l, &b);
	if (n < 0) {
		r = n;
		rollback(l);
		goto requeue;
	}
	r = exec(l, "COMMIT");
	if (r < 0) {
		rollback(l);
		goto requeue;
	}
	r = n;
	batch_free(&b);
	goto out;
requeue:
	give_back(l, &b);
out:
	pthread_mutex_unlock(&l->lock);
	return r;
}

int64_t gp_ledger_update_count(struct gp_ledger *l, int64_t job_id)
{
	sqlite3_stmt *st = NULL;
	int64_t n;
	int rc;

	pthread_mutex_lock(&l->lock);
	n = prepare(l, "SELECT count(*) FROM updates "
		       "WHERE ?1 = 0 OR job_id = ?1",
		    &st);
	if (n < 0)
		goto out;
	sqlite3_bind_int64(st, 1, job_id);
	rc = sqlite3_step(st);
	n = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0)
			     : fail(l, rc, "cannot count updates");
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return n;
}

int64_t gp_ledger_rollback_after(struct gp_ledger *l, int64_t job_id,
				 int64_t seq, uint64_t keep)
{
	sqlite3_stmt *st = NULL;
	int64_t cutoff = 0, n;
	int r, rc;

	if (seq <= 0 || keep > INT64_MAX)
		return -EINVAL;
	/* Rows still buffered belong to the log before the restore. */
	r = gp_ledger_flush(l);
	if (r < 0)
		return r;
	pthread_mutex_lock(&l->lock);
	r = exec(l, "BEGIN IMMEDIATE");
	if (r < 0)
		goto out;
	if (keep > 0) {
		/* The keep-th counted applied update: the checkpoint's last. */
		r = prepare(l, "SELECT id FROM updates WHERE job_id = ?1 AND "
			       "outcome = 'applied' AND rolled_back = 0 "
			       "ORDER BY id LIMIT 1 OFFSET ?2",
			    &st);
		if (r < 0)
			goto fail;
		sqlite3_bind_int64(st, 1, job_id);
		sqlite3_bind_int64(st, 2, (int64_t)keep - 1);
		rc = sqlite3_step(st);
		if (rc == SQLITE_DONE) {
			/* The log holds fewer: nothing came after. */
			sqlite3_finalize(st);
			st = NULL;
			r = exec(l, "COMMIT");
			goto out;
		}
		if (rc != SQLITE_ROW) {
			r = fail(l, rc, "cannot find the checkpoint's last update");
			goto fail;
		}
		cutoff = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
		st = NULL;
	}
	r = prepare(l, "UPDATE updates SET rolled_back = ?3 WHERE job_id = ?1 "
		       "AND outcome = 'applied' AND rolled_back = 0 AND id > ?2",
		    &st);
	if (r < 0)
		goto fail;
	sqlite3_bind_int64(st, 1, job_id);
	sqlite3_bind_int64(st, 2, cutoff);
	sqlite3_bind_int64(st, 3, seq);
	r = step_done(l, st, "cannot mark updates rolled back");
	if (r < 0)
		goto fail;
	n = sqlite3_changes(l->db);
	r = exec(l, "COMMIT");
	if (r < 0)
		goto fail;
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return n;
fail:
	rollback(l);
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* ---- evaluations ------------------------------------------------------- */

int gp_ledger_eval_add(struct gp_ledger *l, const struct gp_ledger_eval *e)
{
	sqlite3_stmt *st = NULL;
	int r;

	if (!e)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	/* An epoch evaluated again (after a resume) replaces the old row. */
	r = prepare(l, "INSERT OR REPLACE INTO evals (job_id, epoch, "
		       "test_loss, test_accuracy, at) VALUES (?1, ?2, ?3, ?4, "
		       "?5)",
		    &st);
	if (r < 0)
		goto out;
	sqlite3_bind_int64(st, 1, e->job_id);
	sqlite3_bind_int64(st, 2, e->epoch);
	bind_real(st, 3, e->test_loss);
	bind_real(st, 4, e->test_accuracy);
	sqlite3_bind_int64(st, 5, e->at);
	r = step_done(l, st, "cannot write an evaluation");
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
}

static void read_eval(sqlite3_stmt *st, struct gp_ledger_eval *e)
{
	e->job_id = sqlite3_column_int64(st, 0);
	e->epoch = sqlite3_column_int64(st, 1);
	e->test_loss = column_real(st, 2);
	e->test_accuracy = column_real(st, 3);
	e->at = sqlite3_column_int64(st, 4);
}

int gp_ledger_eval_list(struct gp_ledger *l, int64_t job_id,
			struct gp_ledger_eval **ret, size_t *ret_n)
{
	struct gp_ledger_eval *v = NULL;
	size_t n = 0, cap = 0;
	sqlite3_stmt *st = NULL;
	int r, rc;

	if (!ret || !ret_n)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = prepare(l, "SELECT job_id, epoch, test_loss, test_accuracy, at "
		       "FROM evals WHERE job_id = ?1 ORDER BY epoch",
		    &st);
	if (r < 0)
		goto out;
	sqlite3_bind_int64(st, 1, job_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (gp_array_grow((void **)&v, &cap, n, sizeof(*v)) < 0) {
			r = -ENOMEM;
			goto out;
		}
		read_eval(st, &v[n++]);
	}
	if (rc != SQLITE_DONE) {
		r = fail(l, rc, "cannot list evaluations");
		goto out;
	}
	*ret = v;
	*ret_n = n;
	v = NULL;
out:
	free(v);
	sqlite3_finalize(st);
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
	sqlite3_stmt *st = NULL;
	struct batch b;
	int64_t seq = 0;
	size_t n_sections;
	int r, rc;

	if (!blob || keep == 0 || len > INT32_MAX)
		return -EINVAL;
	/* Refuse to store what could not be loaded back. */
	r = gp_checkpoint_decode(blob, len, sections, &n_sections);
	if (r < 0)
		return -EINVAL;

	pthread_mutex_lock(&l->lock);
	take_pending(l, &b);
	r = exec(l, "BEGIN IMMEDIATE");
	if (r < 0)
		goto requeue;
	r = write_batch(l, &b);
	if (r < 0)
		goto fail;

	r = prepare(l, "SELECT coalesce(max(seq), 0) + 1 FROM checkpoints "
		       "WHERE job_id = ?1",
		    &st);
	if (r < 0)
		goto fail;
	sqlite3_bind_int64(st, 1, job_id);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		r = fail(l, rc, "cannot number a checkpoint");
		goto fail;
	}
	seq = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	st = NULL;

	r = prepare(l, "INSERT INTO checkpoints (job_id, seq, created_at, "
		       "epoch, clock, format, size, blob) "
		       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
		    &st);
	if (r < 0)
		goto fail;
	sqlite3_bind_int64(st, 1, job_id);
	sqlite3_bind_int64(st, 2, seq);
	sqlite3_bind_int64(st, 3, now);
	sqlite3_bind_int64(st, 4, epoch);
	sqlite3_bind_int64(st, 5, clock);
	sqlite3_bind_int(st, 6, GP_CHECKPOINT_VERSION);
	sqlite3_bind_int64(st, 7, (int64_t)len);
	sqlite3_bind_blob(st, 8, blob, (int)len, SQLITE_STATIC);
	r = step_done(l, st, "cannot write a checkpoint");
	if (r < 0)
		goto fail;
	sqlite3_finalize(st);
	st = NULL;

	r = prepare(l, "DELETE FROM checkpoints WHERE job_id = ?1 "
		       "AND seq <= ?2",
		    &st);
	if (r < 0)
		goto fail;
	sqlite3_bind_int64(st, 1, job_id);
	sqlite3_bind_int64(st, 2, seq - (int64_t)keep);
	r = step_done(l, st, "cannot delete old checkpoints");
	if (r < 0)
		goto fail;
	sqlite3_finalize(st);
	st = NULL;

	r = exec(l, "COMMIT");
	if (r < 0)
		goto fail;
	batch_free(&b);
	if (ret_seq)
		*ret_seq = seq;
	r = 0;
	goto out;
fail:
	sqlite3_finalize(st);
	rollback(l);
requeue:
	give_back(l, &b);
out:
	pthread_mutex_unlock(&l->lock);
	return r;
}

int gp_ledger_checkpoint_load_latest(struct gp_ledger *l, int64_t job_id,
				     struct gp_ledger_checkpoint *ret,
				     unsigned *ret_skipped)
{
	struct gp_checkpoint_section sections[GP_CHECKPOINT_MAX_SECTIONS];
	sqlite3_stmt *st = NULL;
	unsigned skipped = 0;
	int r, rc;

	if (!ret)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = prepare(l, "SELECT seq, created_at, epoch, clock, blob "
		       "FROM checkpoints WHERE job_id = ?1 ORDER BY seq DESC",
		    &st);
	if (r < 0)
		goto out;
	sqlite3_bind_int64(st, 1, job_id);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const void *blob = sqlite3_column_blob(st, 4);
		size_t len = (size_t)sqlite3_column_bytes(st, 4), n;
		uint8_t *copy;

		if (!blob || gp_checkpoint_decode(blob, len, sections, &n) < 0) {
			skipped++;
			continue;
		}
		copy = malloc(len);
		if (!copy) {
			r = -ENOMEM;
			goto out;
		}
		memcpy(copy, blob, len);
		ret->job_id = job_id;
		ret->seq = sqlite3_column_int64(st, 0);
		ret->created_at = sqlite3_column_int64(st, 1);
		ret->epoch = sqlite3_column_int64(st, 2);
		ret->clock = sqlite3_column_int64(st, 3);
		ret->blob = copy;
		ret->len = len;
		if (ret_skipped)
			*ret_skipped = skipped;
		r = 0;
		goto out;
	}
	if (rc != SQLITE_DONE) {
		r = fail(l, rc, "cannot read checkpoints");
		goto out;
	}
	if (skipped)
		set_err(l, "all %u checkpoints of job %lld are damaged",
			skipped, (long long)job_id);
	else
		set_err(l, "no checkpoint for job %lld", (long long)job_id);
	r = -ENOENT;
out:
	sqlite3_finalize(st);
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
	sqlite3_stmt *st = NULL;
	int r, rc;

	pthread_mutex_lock(&l->lock);
	r = prepare(l, "SELECT count(*) FROM checkpoints WHERE job_id = ?1",
		    &st);
	if (r < 0)
		goto out;
	sqlite3_bind_int64(st, 1, job_id);
	rc = sqlite3_step(st);
	r = rc == SQLITE_ROW ? sqlite3_column_int(st, 0)
			     : fail(l, rc, "cannot count checkpoints");
out:
	sqlite3_finalize(st);
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* ---- status ------------------------------------------------------------ */

int gp_ledger_status(struct gp_ledger *l, int64_t job_id,
		     struct gp_ledger_status *ret)
{
	struct gp_ledger_status s;
	sqlite3_stmt *st = NULL;
	int r, rc;

	if (!ret)
		return -EINVAL;
	memset(&s, 0, sizeof(s));
	pthread_mutex_lock(&l->lock);
	/* One read transaction, so that the numbers agree with each other
	 * while serve keeps writing. */
	r = exec(l, "BEGIN");
	if (r < 0)
		goto out;

	r = prepare(l, "SELECT id, state FROM jobs WHERE ?1 = 0 OR id = ?1 "
		       "ORDER BY id DESC LIMIT 1",
		    &st);
	if (r < 0)
		goto done;
	sqlite3_bind_int64(st, 1, job_id);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		if (rc == SQLITE_DONE) {
			set_err(l, "no such job: %lld", (long long)job_id);
			r = -ENOENT;
		} else {
			r = fail(l, rc, "cannot read a job");
		}
		goto done;
	}
	s.job_id = sqlite3_column_int64(st, 0);
	s.state = parse_state(sqlite3_column_text(st, 1));
	sqlite3_finalize(st);
	st = NULL;

	r = prepare(l,
		    "SELECT coalesce(sum(outcome = 'applied'), 0),"
		    "  coalesce(sum(CASE WHEN outcome = 'applied'"
		    "               THEN samples END), 0),"
		    "  coalesce(sum(outcome IN ('duplicate', 'late')), 0),"
		    "  coalesce(sum(outcome = 'rejected'), 0),"
		    "  coalesce(max(CASE WHEN outcome = 'applied'"
		    "               THEN epoch END), 0) "
		    "FROM updates WHERE job_id = ?1",
		    &st);
	if (r < 0)
		goto done;
	sqlite3_bind_int64(st, 1, s.job_id);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		r = fail(l, rc, "cannot sum updates");
		goto done;
	}
	s.updates_applied = sqlite3_column_int64(st, 0);
	s.samples_applied = sqlite3_column_int64(st, 1);
	s.updates_discarded = sqlite3_column_int64(st, 2);
	s.updates_rejected = sqlite3_column_int64(st, 3);
	s.epoch = sqlite3_column_int64(st, 4);
	sqlite3_finalize(st);
	st = NULL;

	r = prepare(l,
		    "SELECT count(DISTINCT minibatch) FROM updates "
		    "WHERE job_id = ?1 AND epoch = ?2 AND outcome = 'applied'",
		    &st);
	if (r < 0)
		goto done;
	sqlite3_bind_int64(st, 1, s.job_id);
	sqlite3_bind_int64(st, 2, s.epoch);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		r = fail(l, rc, "cannot count minibatches");
		goto done;
	}
	s.minibatches_in_epoch = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	st = NULL;

	r = prepare(l,
		    "SELECT (SELECT count(*) FROM agents WHERE revoked_at IS NULL),"
		    "  coalesce((SELECT max(seq) FROM checkpoints"
		    "            WHERE job_id = ?1), 0),"
		    "  coalesce((SELECT created_at FROM checkpoints"
		    "            WHERE job_id = ?1 ORDER BY seq DESC LIMIT 1), 0)",
		    &st);
	if (r < 0)
		goto done;
	sqlite3_bind_int64(st, 1, s.job_id);
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		r = fail(l, rc, "cannot read status");
		goto done;
	}
	s.live_agents = sqlite3_column_int64(st, 0);
	s.last_checkpoint_seq = sqlite3_column_int64(st, 1);
	s.last_checkpoint_at = sqlite3_column_int64(st, 2);
	sqlite3_finalize(st);
	st = NULL;

	r = prepare(l, "SELECT job_id, epoch, test_loss, test_accuracy, at "
		       "FROM evals WHERE job_id = ?1 ORDER BY epoch DESC "
		       "LIMIT 1",
		    &st);
	if (r < 0)
		goto done;
	sqlite3_bind_int64(st, 1, s.job_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		s.have_eval = true;
		read_eval(st, &s.last_eval);
	} else if (rc != SQLITE_DONE) {
		r = fail(l, rc, "cannot read evaluations");
		goto done;
	}
	r = 0;
done:
	sqlite3_finalize(st);
	rollback(l); /* ends the read transaction */
	if (r == 0)
		*ret = s;
out:
	pthread_mutex_unlock(&l->lock);
	return r;
}
