#include "ledger.h"
#include "ledger-impl.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "gp-endian.h"
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
	/* 3: the owner's view. A member that said it leaves (BYE 0) and
	 * when; how many connections serve holds for it now (reset when serve
	 * starts); the job's size, so that status can give progress and an
	 * ETA without loading the data set. */
	"ALTER TABLE agents ADD COLUMN left_at INTEGER;"
	"ALTER TABLE agents ADD COLUMN connections INTEGER NOT NULL DEFAULT 0"
	"  CHECK (connections >= 0);"
	"ALTER TABLE jobs ADD COLUMN epochs INTEGER;"
	"ALTER TABLE jobs ADD COLUMN minibatches_per_epoch INTEGER;"
	"ALTER TABLE jobs ADD COLUMN samples_per_epoch INTEGER;",
	/* 4: the job's model in canonical text (gp_model_spec_format: the
	 * shorthand, or a one-line "gradpool-model 1" description), so that
	 * a job whose [model] file = names another file keeps the exact
	 * model it trained; '' for jobs recorded before */
	"ALTER TABLE jobs ADD COLUMN model TEXT NOT NULL DEFAULT '';",
	/* 5: each agent's link as the coordinator last measured it, and the
	 * clock length (sync interval) the links asked for then
	 * (gp_ledger_agent_link_append) */
	"CREATE TABLE agent_links ("
	"  agent_id INTEGER PRIMARY KEY REFERENCES agents(id) ON DELETE CASCADE,"
	"  link_bps REAL NOT NULL,"
	"  sync_ms REAL NOT NULL,"
	"  at INTEGER NOT NULL);",
	/* 6: each member's record under verification by recomputation
	 * (coordinator/verify.c): updates recomputed and found right or
	 * wrong, and applied updates taken back after a mismatch (their
	 * rows in updates have rolled_back set to the row id of the
	 * mismatched update; gp_ledger_trust_add) */
	"CREATE TABLE agent_trust ("
	"  agent_id INTEGER PRIMARY KEY REFERENCES agents(id) ON DELETE CASCADE,"
	"  verified INTEGER NOT NULL DEFAULT 0 CHECK (verified >= 0),"
	"  mismatched INTEGER NOT NULL DEFAULT 0 CHECK (mismatched >= 0),"
	"  rolled_back INTEGER NOT NULL DEFAULT 0 CHECK (rolled_back >= 0),"
	"  last_verified_at INTEGER NOT NULL DEFAULT 0,"
	"  last_mismatch_at INTEGER NOT NULL DEFAULT 0);",
	/* 7: the job queue. A job may wait its turn ('queued') or be
	 * cancelled by the owner ('cancelled'); `source` is the job file it
	 * came from, as given to serve or `job add` (made absolute), for the
	 * owner's lists. The CHECK on state is part of the table, so the
	 * table is rebuilt (SQLite's procedure for schema changes ALTER
	 * cannot make; the steps run with foreign keys off and are checked
	 * before they commit). legacy_alter_table keeps the rename from
	 * re-checking triggers and views that name jobs. */
	"CREATE TABLE jobs_new ("
	"  id INTEGER PRIMARY KEY,"
	"  spec TEXT NOT NULL,"
	"  state TEXT NOT NULL"
	"    CHECK (state IN ('created', 'running', 'done', 'failed',"
	"                     'queued', 'cancelled')),"
	"  created_at INTEGER NOT NULL,"
	"  updated_at INTEGER NOT NULL,"
	"  epochs INTEGER,"
	"  minibatches_per_epoch INTEGER,"
	"  samples_per_epoch INTEGER,"
	"  model TEXT NOT NULL DEFAULT '',"
	"  source TEXT NOT NULL DEFAULT '');"
	"INSERT INTO jobs_new (id, spec, state, created_at, updated_at, epochs,"
	"  minibatches_per_epoch, samples_per_epoch, model)"
	"  SELECT id, spec, state, created_at, updated_at, epochs,"
	"  minibatches_per_epoch, samples_per_epoch, model FROM jobs;"
	"DROP TABLE jobs;"
	"PRAGMA legacy_alter_table = ON;"
	"ALTER TABLE jobs_new RENAME TO jobs;"
	"PRAGMA legacy_alter_table = OFF;"
	"CREATE INDEX jobs_by_state ON jobs (state, id);",
	/* 8: credit (ledger-credit.c). The name a volunteer lets the pool
	 * publish (NULL: not public); per member and job, the updates and
	 * samples that earn credit (verification's take-backs of step 6
	 * set rolled_back too: they lose theirs), kept by two triggers in the transaction
	 * that writes or rolls back the update rows, so that no read scans
	 * the update log; filled from the log as it stands. The rule of
	 * what counts is GP_LEDGER_CREDIT_RULE (ledger.h). */
	"ALTER TABLE agents ADD COLUMN public_name TEXT;"
	"CREATE TABLE credit ("
	"  agent_id INTEGER NOT NULL REFERENCES agents(id) ON DELETE CASCADE,"
	"  job_id INTEGER NOT NULL REFERENCES jobs(id),"
	"  updates INTEGER NOT NULL DEFAULT 0,"
	"  samples INTEGER NOT NULL DEFAULT 0,"
	"  PRIMARY KEY (agent_id, job_id)) WITHOUT ROWID;"
	"CREATE TRIGGER credit_add AFTER INSERT ON updates"
	"  WHEN NEW.outcome = 'applied' AND NEW.rolled_back = 0 BEGIN"
	"  INSERT INTO credit (agent_id, job_id, updates, samples)"
	"    VALUES (NEW.agent_id, NEW.job_id, 1, NEW.samples)"
	"    ON CONFLICT (agent_id, job_id) DO UPDATE SET"
	"      updates = updates + 1, samples = samples + excluded.samples;"
	"  END;"
	"CREATE TRIGGER credit_undo AFTER UPDATE OF rolled_back ON updates"
	"  WHEN OLD.outcome = 'applied' AND OLD.rolled_back = 0"
	"    AND NEW.rolled_back != 0 BEGIN"
	"  UPDATE credit SET updates = updates - 1,"
	"    samples = samples - OLD.samples"
	"    WHERE agent_id = OLD.agent_id AND job_id = OLD.job_id;"
	"  END;"
	"INSERT INTO credit (agent_id, job_id, updates, samples)"
	"  SELECT agent_id, job_id, count(*), sum(samples) FROM updates"
	"  WHERE outcome = 'applied' AND rolled_back = 0"
	"  GROUP BY agent_id, job_id;",
	/* 9: the owner's counts without a scan of the update log, so that
	 * status, agents and job list answer in well under a second with
	 * 10,000 members and millions of rows (docs/scale-out.md). Per job
	 * and member: updates applied (and not rolled back) with their
	 * samples, discarded (duplicate or late), rejected, applied but
	 * rolled back, the newest clock and receive time; kept by triggers
	 * in the transaction that writes, rolls back or deletes the rows;
	 * filled from the log as it stands. And an index for the rate over
	 * time (the last minute in status, the owner's chart). */
	"CREATE TABLE update_totals ("
	"  job_id INTEGER NOT NULL REFERENCES jobs(id),"
	"  agent_id INTEGER NOT NULL REFERENCES agents(id),"
	"  applied INTEGER NOT NULL DEFAULT 0,"
	"  samples INTEGER NOT NULL DEFAULT 0,"
	"  discarded INTEGER NOT NULL DEFAULT 0,"
	"  rejected INTEGER NOT NULL DEFAULT 0,"
	"  rolled_back INTEGER NOT NULL DEFAULT 0,"
	"  last_clock INTEGER NOT NULL DEFAULT -1,"
	"  last_received_at INTEGER NOT NULL DEFAULT 0,"
	"  PRIMARY KEY (job_id, agent_id)) WITHOUT ROWID;"
	"CREATE INDEX update_totals_by_agent ON update_totals (agent_id);"
	"CREATE TRIGGER totals_add AFTER INSERT ON updates BEGIN"
	"  INSERT INTO update_totals (job_id, agent_id, applied, samples,"
	"    discarded, rejected, rolled_back, last_clock, last_received_at)"
	"  VALUES (NEW.job_id, NEW.agent_id,"
	"    NEW.outcome = 'applied' AND NEW.rolled_back = 0,"
	"    CASE WHEN NEW.outcome = 'applied' AND NEW.rolled_back = 0"
	"      THEN NEW.samples ELSE 0 END,"
	"    NEW.outcome IN ('duplicate', 'late'), NEW.outcome = 'rejected',"
	"    NEW.outcome = 'applied' AND NEW.rolled_back != 0,"
	"    NEW.clock, NEW.received_at)"
	"  ON CONFLICT (job_id, agent_id) DO UPDATE SET"
	"    applied = applied + excluded.applied,"
	"    samples = samples + excluded.samples,"
	"    discarded = discarded + excluded.discarded,"
	"    rejected = rejected + excluded.rejected,"
	"    rolled_back = rolled_back + excluded.rolled_back,"
	"    last_clock = max(last_clock, excluded.last_clock),"
	"    last_received_at = max(last_received_at,"
	"                           excluded.last_received_at);"
	"  END;"
	"CREATE TRIGGER totals_roll AFTER UPDATE OF rolled_back ON updates"
	"  WHEN OLD.outcome = 'applied'"
	"    AND (OLD.rolled_back = 0) != (NEW.rolled_back = 0) BEGIN"
	"  UPDATE update_totals SET"
	"    applied = applied + (CASE WHEN NEW.rolled_back = 0"
	"                         THEN 1 ELSE -1 END),"
	"    samples = samples + (CASE WHEN NEW.rolled_back = 0"
	"                         THEN OLD.samples ELSE -OLD.samples END),"
	"    rolled_back = rolled_back + (CASE WHEN NEW.rolled_back = 0"
	"                                 THEN -1 ELSE 1 END)"
	"    WHERE job_id = OLD.job_id AND agent_id = OLD.agent_id;"
	"  END;"
	"CREATE TRIGGER totals_delete AFTER DELETE ON updates BEGIN"
	"  UPDATE update_totals SET"
	"    applied = applied - (OLD.outcome = 'applied'"
	"                         AND OLD.rolled_back = 0),"
	"    samples = samples - (CASE WHEN OLD.outcome = 'applied'"
	"      AND OLD.rolled_back = 0 THEN OLD.samples ELSE 0 END),"
	"    discarded = discarded - (OLD.outcome IN ('duplicate', 'late')),"
	"    rejected = rejected - (OLD.outcome = 'rejected'),"
	"    rolled_back = rolled_back - (OLD.outcome = 'applied'"
	"                                 AND OLD.rolled_back != 0)"
	"    WHERE job_id = OLD.job_id AND agent_id = OLD.agent_id;"
	"  END;"
	"INSERT INTO update_totals (job_id, agent_id, applied, samples,"
	"  discarded, rejected, rolled_back, last_clock, last_received_at)"
	"  SELECT job_id, agent_id,"
	"    sum(outcome = 'applied' AND rolled_back = 0),"
	"    coalesce(sum(CASE WHEN outcome = 'applied' AND rolled_back = 0"
	"      THEN samples END), 0),"
	"    sum(outcome IN ('duplicate', 'late')), sum(outcome = 'rejected'),"
	"    sum(outcome = 'applied' AND rolled_back != 0),"
	"    max(clock), max(received_at)"
	"  FROM updates GROUP BY job_id, agent_id;"
	"CREATE INDEX updates_applied_at ON updates (job_id, applied_at, samples)"
	"  WHERE outcome = 'applied' AND rolled_back = 0;",
};

static const struct gp_db_schema ledger_schema = {
	.what = "gradpool ledger",
	.application_id = LEDGER_APPLICATION_ID,
	.migrations = migrations,
	.n_migrations = sizeof(migrations) / sizeof(migrations[0]),
	.check_skip = (const char *const[]){ "updates", NULL },
};

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
	r = gp_db_open(path, dbflags, &ledger_schema, &l->c.db, err, errlen);
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

void gp_ledger_close(struct gp_ledger *l)
{
	if (!l)
		return;
	if (!l->readonly && gp_ledger_pending(l) > 0)
		(void)gp_ledger_flush(l);
	sqlite3_close(l->c.db);
	gp_ledger_batch_free(&l->pending);
	pthread_mutex_destroy(&l->lock);
	pthread_mutex_destroy(&l->buf_lock);
	free(l);
}

const char *gp_ledger_error(struct gp_ledger *l)
{
	return l->c.err;
}

void gp_ledger_error_copy(struct gp_ledger *l, char *buf, size_t size)
{
	if (!size)
		return;
	pthread_mutex_lock(&l->lock);
	snprintf(buf, size, "%s", l->c.err);
	pthread_mutex_unlock(&l->lock);
}

int gp_ledger_check(struct gp_ledger *l)
{
	int r;

	pthread_mutex_lock(&l->lock);
	r = gp_db_check(&l->c, 0);
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* ---- meta -------------------------------------------------------------- */

int gp_ledger_meta_set(struct gp_ledger *l, const char *key,
		       const char *value)
{
	int r;

	pthread_mutex_lock(&l->lock);
	r = gp_db_run(&l->c, "cannot write meta",
		      "INSERT INTO meta (key, value) VALUES (?1, ?2) "
		      "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
		      "tt", key, value);
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : 0;
}

struct meta_value {
	char *buf;
	size_t size;
	int len;
};

static int read_meta(sqlite3_stmt *st, void *arg)
{
	struct meta_value *m = arg;
	const unsigned char *v = sqlite3_column_text(st, 0);
	size_t n = (size_t)sqlite3_column_bytes(st, 0);

	if (n >= m->size || n > INT32_MAX)
		return -ERANGE;
	memcpy(m->buf, v ? (const char *)v : "", n);
	m->buf[n] = '\0';
	m->len = (int)n;
	return 0;
}

int gp_ledger_meta_get(struct gp_ledger *l, const char *key, char *buf,
		       size_t size)
{
	struct meta_value m = { .buf = buf, .size = size };
	int r;

	pthread_mutex_lock(&l->lock);
	r = gp_db_row(&l->c, "cannot read meta", read_meta, &m,
		      "SELECT value FROM meta WHERE key = ?1", "t", key);
	if (r == 0) {
		gp_db_set_err(&l->c, "no meta key '%s'", key);
		r = -ENOENT;
	} else if (r > 0) {
		r = m.len;
	}
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* ---- agents ------------------------------------------------------------ */

#define AGENT_COLUMNS                                                          \
	"a.id, a.name, a.public_key, a.fingerprint, a.token_id, a.joined_at, " \
	"a.last_seen, a.revoked_at, a.left_at, a.connections"
#define AGENT_NCOLUMNS 10

static int read_agent(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_agent *a = arg;

	memset(a, 0, sizeof(*a));
	a->id = sqlite3_column_int64(st, 0);
	gp_db_column_text(st, 1, a->name, sizeof(a->name));
	gp_db_column_blob(st, 2, a->public_key, GP_LEDGER_KEY_SIZE);
	gp_db_column_text(st, 3, a->fingerprint, sizeof(a->fingerprint));
	a->token_id = sqlite3_column_int64(st, 4);
	a->joined_at = sqlite3_column_int64(st, 5);
	a->last_seen = sqlite3_column_int64(st, 6);
	a->revoked_at = sqlite3_column_int64(st, 7);
	a->left_at = sqlite3_column_int64(st, 8);
	a->connections = sqlite3_column_int64(st, 9);
	return 0;
}

/* Appends one device row to the agent, its columns from c on (kind, name,
 * gflops, samples_per_s); beyond GP_LEDGER_DEVICES_MAX the rest are
 * ignored. */
static void add_device(sqlite3_stmt *st, int c, struct gp_ledger_agent *a)
{
	struct gp_ledger_device *d;

	if (a->n_devices == GP_LEDGER_DEVICES_MAX)
		return;
	d = &a->devices[a->n_devices++];
	gp_db_column_text(st, c, d->kind, sizeof(d->kind));
	gp_db_column_text(st, c + 1, d->name, sizeof(d->name));
	d->gflops = sqlite3_column_double(st, c + 2);
	d->samples_per_s = sqlite3_column_double(st, c + 3);
}

static int read_device(sqlite3_stmt *st, void *arg)
{
	add_device(st, 0, arg);
	return 0;
}

static int load_devices(struct gp_ledger *l, struct gp_ledger_agent *a)
{
	a->n_devices = 0;
	return gp_db_each(&l->c, "cannot read devices", read_device, a,
			  "SELECT kind, name, gflops, samples_per_s "
			  "FROM agent_devices WHERE agent_id = ?1 ORDER BY idx",
			  "i", a->id);
}

static double finite_or_zero(double v)
{
	return isfinite(v) ? v : 0;
}

/* Replaces the devices of an agent; the caller holds the lock and is
 * inside a transaction. */
static int write_devices(struct gp_ledger *l, int64_t id,
			 const struct gp_ledger_device *devices, size_t n)
{
	int r;

	if (n > GP_LEDGER_DEVICES_MAX) {
		gp_db_set_err(&l->c, "too many devices (%zu)", n);
		return -E2BIG;
	}
	r = gp_db_run(&l->c, "cannot clear devices",
		      "DELETE FROM agent_devices WHERE agent_id = ?1", "i", id);
	for (size_t i = 0; i < n && r >= 0; i++) {
		const struct gp_ledger_device *d = &devices[i];

		r = gp_db_run(&l->c, "cannot write a device",
			      "INSERT INTO agent_devices (agent_id, idx, kind, "
			      "name, gflops, samples_per_s) "
			      "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
			      "iittff", id, (int64_t)i, d->kind, d->name,
			      finite_or_zero(d->gflops),
			      finite_or_zero(d->samples_per_s));
	}
	return r < 0 ? r : 0;
}

struct refusal {
	struct gp_db_conn *c;
	int64_t token_id, now;
};

/* Reads the token row that refused a join and says why in c->err. */
static int explain_refusal(sqlite3_stmt *st, void *arg)
{
	const struct refusal *f = arg;
	long long id = (long long)f->token_id;

	if (sqlite3_column_type(st, 0) != SQLITE_NULL) {
		gp_db_set_err(f->c, "token %lld has been revoked", id);
		return -EKEYREVOKED;
	}
	if (sqlite3_column_type(st, 1) != SQLITE_NULL &&
	    sqlite3_column_int64(st, 1) <= f->now) {
		gp_db_set_err(f->c, "token %lld has expired", id);
		return -EKEYEXPIRED;
	}
	gp_db_set_err(f->c, "token %lld has been used %lld of %lld times", id,
		      (long long)sqlite3_column_int64(st, 3),
		      (long long)sqlite3_column_int64(st, 2));
	return -EKEYREJECTED;
}

/* Explains why the token's use counter did not move: a negative errno. */
static int token_refusal(struct gp_ledger *l, int64_t token_id, int64_t now)
{
	struct refusal f = { .c = &l->c, .token_id = token_id, .now = now };
	int r;

	r = gp_db_row(&l->c, "cannot read a token", explain_refusal, &f,
		      "SELECT revoked_at, expires_at, max_uses, uses "
		      "FROM tokens WHERE id = ?1",
		      "i", token_id);
	if (r == 0) {
		gp_db_set_err(&l->c, "token %lld does not exist",
			      (long long)token_id);
		return -ENOENT;
	}
	return r < 0 ? r : -EIO;
}

/* Consumes one use of the token and inserts the agent, inside the join's
 * transaction; *ret_id is the new agent's id. */
static int insert_member(struct gp_ledger *l, int64_t token_id,
			 const struct gp_ledger_agent *agent, int64_t now,
			 int64_t *ret_id)
{
	int r;

	r = gp_db_run(&l->c, "cannot consume a token use",
		      "UPDATE tokens SET uses = uses + 1 "
		      "WHERE id = ?1 AND revoked_at IS NULL "
		      "AND (expires_at IS NULL OR expires_at > ?2) "
		      "AND (max_uses = 0 OR uses < max_uses)",
		      "ii", token_id, now);
	if (r < 0)
		return r;
	if (r != 1)
		return token_refusal(l, token_id, now);
	r = gp_db_run(&l->c, "cannot insert an agent",
		      "INSERT INTO agents (name, public_key, fingerprint, "
		      "token_id, joined_at, last_seen) "
		      "VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
		      "tbtii", agent->name, agent->public_key,
		      (size_t)GP_LEDGER_KEY_SIZE, agent->fingerprint, token_id,
		      now);
	if (r < 0)
		return r;
	*ret_id = sqlite3_last_insert_rowid(l->c.db);
	return write_devices(l, *ret_id, agent->devices, agent->n_devices);
}

struct member {
	int64_t id;
	bool revoked;
};

static int read_member(sqlite3_stmt *st, void *arg)
{
	struct member *m = arg;

	m->id = sqlite3_column_int64(st, 0);
	m->revoked = sqlite3_column_type(st, 1) != SQLITE_NULL;
	return 0;
}

int gp_ledger_join(struct gp_ledger *l, int64_t token_id,
		   const struct gp_ledger_agent *agent, int64_t now,
		   int64_t *ret_id)
{
	struct member m = { 0 };
	int r, existing;

	if (!agent || !ret_id)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	/* IMMEDIATE: take the write lock before reading, so that two joins
	 * racing for the last use of a token cannot both see it free. */
	r = gp_db_exec(&l->c, "BEGIN IMMEDIATE");
	if (r < 0)
		goto out;
	r = gp_db_row(&l->c, "cannot look up an agent", read_member, &m,
		      "SELECT id, revoked_at FROM agents WHERE public_key = ?1",
		      "b", agent->public_key, (size_t)GP_LEDGER_KEY_SIZE);
	if (r < 0)
		goto fail;
	existing = r;
	if (existing && m.revoked) {
		gp_db_set_err(&l->c, "agent %lld has been revoked",
			      (long long)m.id);
		r = -EKEYREVOKED;
		goto fail;
	}
	if (!existing) {
		r = insert_member(l, token_id, agent, now, &m.id);
		if (r < 0)
			goto fail;
	}
	r = gp_db_exec(&l->c, "COMMIT");
	if (r < 0)
		goto fail;
	*ret_id = m.id;
	r = existing;
	goto out;
fail:
	gp_db_rollback(&l->c);
out:
	pthread_mutex_unlock(&l->lock);
	return r;
}

static int agent_lookup(struct gp_ledger *l, const char *where,
			const void *key, int64_t id,
			struct gp_ledger_agent *ret)
{
	struct gp_ledger_agent a;
	char sql[256];
	int r;

	snprintf(sql, sizeof(sql), "SELECT " AGENT_COLUMNS
		 " FROM agents a WHERE %s", where);
	pthread_mutex_lock(&l->lock);
	if (key)
		r = gp_db_row(&l->c, "cannot read an agent", read_agent, &a,
			      sql, "b", key, (size_t)GP_LEDGER_KEY_SIZE);
	else
		r = gp_db_row(&l->c, "cannot read an agent", read_agent, &a,
			      sql, "i", id);
	if (r == 0) {
		gp_db_set_err(&l->c, "no such agent");
		r = -ENOENT;
	}
	if (r > 0)
		r = load_devices(l, &a);
	if (r == 0)
		*ret = a;
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
	int r;

	pthread_mutex_lock(&l->lock);
	r = gp_db_run(&l->c, "cannot update", sql, "ii", a, b);
	if (r == 0) {
		gp_db_set_err(&l->c, "no such %s: %lld", what, (long long)a);
		r = -ENOENT;
	}
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : 0;
}

int gp_ledger_agent_revoke(struct gp_ledger *l, int64_t id, int64_t at)
{
	return update_one(l, "UPDATE agents SET revoked_at = "
			     "coalesce(revoked_at, ?2) WHERE id = ?1",
			  id, at, "agent");
}

int gp_ledger_agents_revoked(struct gp_ledger *l, int64_t **ret_ids,
			     size_t *ret_n)
{
	int r;

	pthread_mutex_lock(&l->lock);
	r = gp_db_list(&l->c, "cannot list revoked agents", sizeof(**ret_ids),
		       gp_db_int64, (void **)ret_ids, ret_n,
		       "SELECT id FROM agents WHERE revoked_at IS NOT NULL "
		       "ORDER BY id", "");
	pthread_mutex_unlock(&l->lock);
	return r;
}

int gp_ledger_agents_disconnected(struct gp_ledger *l)
{
	int r;

	pthread_mutex_lock(&l->lock);
	r = gp_db_run(&l->c, "cannot reset connections",
		      "UPDATE agents SET connections = 0 WHERE connections != 0",
		      "");
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : 0;
}

int gp_ledger_agent_set_devices(struct gp_ledger *l, int64_t id,
				const struct gp_ledger_device *devices,
				size_t n)
{
	int r;

	if (!devices && n)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_exec(&l->c, "BEGIN IMMEDIATE");
	if (r < 0)
		goto out;
	r = gp_db_row(&l->c, "cannot read an agent", NULL, NULL,
		      "SELECT 1 FROM agents WHERE id = ?1", "i", id);
	if (r == 0) {
		gp_db_set_err(&l->c, "no such agent: %lld", (long long)id);
		r = -ENOENT;
	}
	if (r >= 0)
		r = write_devices(l, id, devices, n);
	if (r >= 0)
		r = gp_db_exec(&l->c, "COMMIT");
	if (r < 0)
		gp_db_rollback(&l->c);
out:
	pthread_mutex_unlock(&l->lock);
	return r;
}

static int read_agent_row(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_agent_row *row = arg;
	int c = AGENT_NCOLUMNS;

	read_agent(st, &row->agent);
	row->updates_applied = sqlite3_column_int64(st, c++);
	row->samples_applied = sqlite3_column_int64(st, c++);
	row->updates_discarded = sqlite3_column_int64(st, c++);
	row->updates_rejected = sqlite3_column_int64(st, c++);
	row->rejections = sqlite3_column_int64(st, c++);
	row->last_clock = sqlite3_column_int64(st, c++);
	row->last_update_at = sqlite3_column_int64(st, c++);
	row->updates_rolled_back = sqlite3_column_int64(st, c++);
	row->link_bps = sqlite3_column_double(st, c++);
	row->sync_ms = sqlite3_column_double(st, c++);
	row->link_at = sqlite3_column_int64(st, c++);
	row->verified = sqlite3_column_int64(st, c++);
	row->mismatched = sqlite3_column_int64(st, c++);
	row->trust_rolled_back = sqlite3_column_int64(st, c++);
	return 0;
}

struct rows_by_id {
	struct gp_ledger_agent_row *rows;
	size_t n;
};

/* One device row, to its member's row (found by bisection). */
static int read_any_device(sqlite3_stmt *st, void *arg)
{
	const struct rows_by_id *by = arg;
	int64_t id = sqlite3_column_int64(st, 0);
	size_t lo = 0, hi = by->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (by->rows[mid].agent.id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < by->n && by->rows[lo].agent.id == id)
		add_device(st, 1, &by->rows[lo].agent);
	return 0;
}

int gp_ledger_agent_list(struct gp_ledger *l, int64_t job_id,
			 struct gp_ledger_agent_row **ret_rows, size_t *ret_n)
{
	struct gp_ledger_agent_row *rows = NULL;
	size_t n = 0;
	int r;

	if (!ret_rows || !ret_n)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_list(&l->c, "cannot list agents", sizeof(*rows),
		       read_agent_row, (void **)&rows, &n,
		       "SELECT " AGENT_COLUMNS ", "
		       "  coalesce(sum(u.applied), 0), coalesce(sum(u.samples), 0),"
		       "  coalesce(sum(u.discarded), 0),"
		       "  coalesce(sum(u.rejected), 0),"
		       "  (SELECT count(*) FROM rejections r"
		       "   WHERE r.agent_id = a.id),"
		       "  coalesce(max(u.last_clock), -1),"
		       "  coalesce(max(u.last_received_at), 0),"
		       "  coalesce(sum(u.rolled_back), 0),"
		       "  coalesce(k.link_bps, 0), coalesce(k.sync_ms, 0),"
		       "  coalesce(k.at, 0), coalesce(t.verified, 0),"
		       "  coalesce(t.mismatched, 0), coalesce(t.rolled_back, 0) "
		       "FROM agents a LEFT JOIN update_totals u"
		       "  ON u.agent_id = a.id AND (?1 = 0 OR u.job_id = ?1) "
		       "LEFT JOIN agent_links k ON k.agent_id = a.id "
		       "LEFT JOIN agent_trust t ON t.agent_id = a.id "
		       "GROUP BY a.id ORDER BY a.id",
		       "i", job_id);
	/* Every member's devices in one query, not one a member (10,000
	 * members: 10,000 statements); rows are in id order. */
	if (r == 0 && n > 0) {
		struct rows_by_id by = { rows, n };

		r = gp_db_each(&l->c, "cannot read devices", read_any_device,
			       &by, "SELECT agent_id, kind, name, gflops,"
			       "  samples_per_s FROM agent_devices"
			       " ORDER BY agent_id, idx", "");
		if (r > 0)
			r = 0;
	}
	pthread_mutex_unlock(&l->lock);
	if (r < 0) {
		free(rows);
		return r;
	}
	*ret_rows = rows;
	*ret_n = n;
	return 0;
}

/* ---- trust (verification by recomputation) ---------------------------- */

int gp_ledger_trust_add(struct gp_ledger *l, int64_t agent_id,
			int64_t verified, int64_t mismatched,
			int64_t rolled_back, int64_t at)
{
	int r;

	if (verified < 0 || mismatched < 0 || rolled_back < 0)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_run(&l->c, "cannot record a verification",
		      "INSERT INTO agent_trust (agent_id, verified, mismatched,"
		      "  rolled_back, last_verified_at, last_mismatch_at) "
		      "VALUES (?1, ?2, ?3, ?4, CASE WHEN ?2 > 0 THEN ?5 ELSE 0 END,"
		      "  CASE WHEN ?3 > 0 THEN ?5 ELSE 0 END) "
		      "ON CONFLICT (agent_id) DO UPDATE SET"
		      "  verified = verified + ?2, mismatched = mismatched + ?3,"
		      "  rolled_back = rolled_back + ?4,"
		      "  last_verified_at = CASE WHEN ?2 > 0 THEN ?5"
		      "    ELSE last_verified_at END,"
		      "  last_mismatch_at = CASE WHEN ?3 > 0 THEN ?5"
		      "    ELSE last_mismatch_at END",
		      "iiiii", agent_id, verified, mismatched, rolled_back, at);
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : 0;
}

static int read_mismatches(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_mismatches *row = arg;

	row->agent_id = sqlite3_column_int64(st, 0);
	row->mismatched = sqlite3_column_int64(st, 1);
	return 0;
}

int gp_ledger_trust_mismatches(struct gp_ledger *l,
			       struct gp_ledger_mismatches **ret_rows,
			       size_t *ret_n)
{
	int r;

	if (!ret_rows || !ret_n)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_list(&l->c, "cannot read verification records",
		       sizeof(**ret_rows), read_mismatches, (void **)ret_rows,
		       ret_n,
		       "SELECT t.agent_id, t.mismatched FROM agent_trust t"
		       "  JOIN agents a ON a.id = t.agent_id "
		       "WHERE t.mismatched > 0 AND a.revoked_at IS NULL "
		       "ORDER BY t.agent_id", "");
	pthread_mutex_unlock(&l->lock);
	return r;
}

int64_t gp_ledger_rollback_minibatches(struct gp_ledger *l, int64_t job_id,
				       int64_t agent_id,
				       const int64_t *pairs, size_t n)
{
	int64_t mark = 0, done = 0;
	int r;

	if (!pairs || n == 0)
		return n ? -EINVAL : 0;
	/* Rows still in the buffer must be in the table to be marked. */
	r = gp_ledger_flush(l);
	if (r < 0)
		return r;
	pthread_mutex_lock(&l->lock);
	r = gp_db_exec(&l->c, "BEGIN IMMEDIATE");
	if (r < 0)
		goto out;
	r = gp_db_row(&l->c, "cannot find the mismatched update",
		      gp_db_int64, &mark,
		      "SELECT coalesce(max(id), 0) FROM updates WHERE job_id = ?1"
		      " AND agent_id = ?2 AND epoch = ?3 AND minibatch = ?4"
		      " AND outcome = 'applied' AND rolled_back = 0",
		      "iiii", job_id, agent_id, pairs[0], pairs[1]);
	if (r >= 0 && mark <= 0)
		mark = 1;
	for (size_t i = 0; r >= 0 && i < n; i++) {
		r = gp_db_run(&l->c, "cannot roll updates back",
			      "UPDATE updates SET rolled_back = ?5 WHERE"
			      " job_id = ?1 AND agent_id = ?2 AND epoch = ?3"
			      " AND minibatch = ?4 AND outcome = 'applied'"
			      " AND rolled_back = 0",
			      "iiiii", job_id, agent_id, pairs[2 * i],
			      pairs[2 * i + 1], mark);
		if (r >= 0)
			done += sqlite3_changes(l->c.db);
	}
	if (r >= 0)
		r = gp_db_exec(&l->c, "COMMIT");
	if (r < 0)
		gp_db_rollback(&l->c);
out:
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : done;
}

/* ---- tokens ------------------------------------------------------------ */

int64_t gp_ledger_token_id_from_bytes(const uint8_t id[GP_LEDGER_TOKEN_ID_SIZE])
{
	return (int64_t)gp_get_le64(id);
}

void gp_ledger_token_id_to_bytes(int64_t id,
				 uint8_t ret[GP_LEDGER_TOKEN_ID_SIZE])
{
	gp_put_le64(ret, (uint64_t)id);
}

int gp_ledger_token_insert(struct gp_ledger *l,
			   const struct gp_ledger_token *t, int64_t *ret_id)
{
	int r;

	if (!t || !ret_id || t->max_uses < 0 || t->uses < 0)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	/* id 0 binds NULL: SQLite picks the next rowid. */
	r = gp_db_run(&l->c, "cannot insert a token",
		      "INSERT INTO tokens (id, label, secret_hash, created_at, "
		      "expires_at, max_uses, uses, revoked_at) "
		      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
		      "ItbiIiiI", t->id, t->label, t->secret_hash,
		      (size_t)GP_LEDGER_HASH_SIZE, t->created_at, t->expires_at,
		      t->max_uses, t->uses, t->revoked_at);
	if (r >= 0) {
		*ret_id = sqlite3_last_insert_rowid(l->c.db);
		r = 0;
	}
	pthread_mutex_unlock(&l->lock);
	return r;
}

#define TOKEN_COLUMNS                                                          \
	"id, label, secret_hash, created_at, expires_at, max_uses, uses, "     \
	"revoked_at"

static int read_token(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_token *t = arg;

	memset(t, 0, sizeof(*t));
	t->id = sqlite3_column_int64(st, 0);
	gp_db_column_text(st, 1, t->label, sizeof(t->label));
	gp_db_column_blob(st, 2, t->secret_hash, GP_LEDGER_HASH_SIZE);
	t->created_at = sqlite3_column_int64(st, 3);
	t->expires_at = sqlite3_column_int64(st, 4);
	t->max_uses = sqlite3_column_int64(st, 5);
	t->uses = sqlite3_column_int64(st, 6);
	t->revoked_at = sqlite3_column_int64(st, 7);
	return 0;
}

int gp_ledger_token_get(struct gp_ledger *l, int64_t id,
			struct gp_ledger_token *ret)
{
	int r;

	if (!ret)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_row(&l->c, "cannot read a token", read_token, ret,
		      "SELECT " TOKEN_COLUMNS " FROM tokens WHERE id = ?1", "i",
		      id);
	if (r == 0) {
		gp_db_set_err(&l->c, "token %lld does not exist",
			      (long long)id);
		r = -ENOENT;
	}
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : 0;
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
	int r;

	if (!ret_tokens || !ret_n)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_list(&l->c, "cannot list tokens", sizeof(**ret_tokens),
		       read_token, (void **)ret_tokens, ret_n,
		       "SELECT " TOKEN_COLUMNS " FROM tokens ORDER BY id", "");
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* ---- evaluations ------------------------------------------------------- */

int gp_ledger_eval_add(struct gp_ledger *l, const struct gp_ledger_eval *e)
{
	int r;

	if (!e)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	/* An epoch evaluated again (after a resume) replaces the old row. */
	r = gp_db_run(&l->c, "cannot write an evaluation",
		      "INSERT OR REPLACE INTO evals (job_id, epoch, test_loss, "
		      "test_accuracy, at) VALUES (?1, ?2, ?3, ?4, ?5)",
		      "iiFFi", e->job_id, e->epoch, e->test_loss,
		      e->test_accuracy, e->at);
	pthread_mutex_unlock(&l->lock);
	return r < 0 ? r : 0;
}

static int read_eval(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_eval *e = arg;

	e->job_id = sqlite3_column_int64(st, 0);
	e->epoch = sqlite3_column_int64(st, 1);
	e->test_loss = gp_db_column_real(st, 2);
	e->test_accuracy = gp_db_column_real(st, 3);
	e->at = sqlite3_column_int64(st, 4);
	return 0;
}

int gp_ledger_eval_list(struct gp_ledger *l, int64_t job_id,
			struct gp_ledger_eval **ret, size_t *ret_n)
{
	int r;

	if (!ret || !ret_n)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_list(&l->c, "cannot list evaluations", sizeof(**ret),
		       read_eval, (void **)ret, ret_n,
		       "SELECT job_id, epoch, test_loss, test_accuracy, at "
		       "FROM evals WHERE job_id = ?1 ORDER BY epoch",
		       "i", job_id);
	pthread_mutex_unlock(&l->lock);
	return r;
}

/* ---- status ------------------------------------------------------------ */

static int read_status_job(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_status *s = arg;

	s->job_id = sqlite3_column_int64(st, 0);
	s->state = gp_ledger_parse_state(sqlite3_column_text(st, 1));
	s->epochs = sqlite3_column_int64(st, 2);
	s->minibatches_per_epoch = sqlite3_column_int64(st, 3);
	s->samples_per_epoch = sqlite3_column_int64(st, 4);
	s->created_at = sqlite3_column_int64(st, 5);
	return 0;
}

static int read_status_sums(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_status *s = arg;

	s->updates_applied = sqlite3_column_int64(st, 0);
	s->samples_applied = sqlite3_column_int64(st, 1);
	s->updates_discarded = sqlite3_column_int64(st, 2);
	s->updates_rejected = sqlite3_column_int64(st, 3);
	s->epoch = sqlite3_column_int64(st, 4);
	s->updates_rolled_back = sqlite3_column_int64(st, 5);
	return 0;
}

static int read_status_pool(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_status *s = arg;

	s->live_agents = sqlite3_column_int64(st, 0);
	s->last_checkpoint_seq = sqlite3_column_int64(st, 1);
	s->last_checkpoint_at = sqlite3_column_int64(st, 2);
	s->connected_agents = sqlite3_column_int64(st, 3);
	return 0;
}

static int read_status_eval(sqlite3_stmt *st, void *arg)
{
	struct gp_ledger_status *s = arg;

	s->have_eval = true;
	return read_eval(st, &s->last_eval);
}

int gp_ledger_status(struct gp_ledger *l, int64_t job_id,
		     struct gp_ledger_status *ret)
{
	struct gp_ledger_status s;
	int r;

	if (!ret)
		return -EINVAL;
	memset(&s, 0, sizeof(s));
	pthread_mutex_lock(&l->lock);
	/* One read transaction, so that the numbers agree with each other
	 * while serve keeps writing. */
	r = gp_db_exec(&l->c, "BEGIN");
	if (r < 0)
		goto out;
	r = gp_db_row(&l->c, "cannot read a job", read_status_job, &s,
		      "SELECT id, state, coalesce(epochs, 0),"
		      "  coalesce(minibatches_per_epoch, 0),"
		      "  coalesce(samples_per_epoch, 0), created_at "
		      "FROM jobs WHERE ?1 = 0 OR id = ?1 "
		      NEWEST_JOB_ORDER "LIMIT 1",
		      "i", job_id);
	if (r == 0) {
		gp_db_set_err(&l->c, "no such job: %lld", (long long)job_id);
		r = -ENOENT;
	}
	if (r >= 0)
		r = gp_db_row(&l->c, "cannot sum updates", read_status_sums, &s,
			      "SELECT coalesce(sum(applied), 0),"
			      "  coalesce(sum(samples), 0),"
			      "  coalesce(sum(discarded), 0),"
			      "  coalesce(sum(rejected), 0),"
			      "  coalesce((SELECT epoch FROM updates"
			      "    WHERE job_id = ?1 AND outcome = 'applied'"
			      "    AND rolled_back = 0"
			      "    ORDER BY epoch DESC LIMIT 1), 0),"
			      "  coalesce(sum(rolled_back), 0) "
			      "FROM update_totals WHERE job_id = ?1",
			      "i", s.job_id);
	if (r >= 0)
		r = gp_db_row(&l->c, "cannot count minibatches", gp_db_int64,
			      &s.minibatches_in_epoch,
			      "SELECT count(DISTINCT minibatch) FROM updates "
			      "WHERE job_id = ?1 AND epoch = ?2 "
			      "AND outcome = 'applied' AND rolled_back = 0",
			      "ii", s.job_id, s.epoch);
	if (r >= 0)
		r = gp_db_row(&l->c, "cannot read status", read_status_pool, &s,
			      "SELECT (SELECT count(*) FROM agents "
			      "        WHERE revoked_at IS NULL"
			      "        AND left_at IS NULL),"
			      "  coalesce((SELECT max(seq) FROM checkpoints"
			      "            WHERE job_id = ?1), 0),"
			      "  coalesce((SELECT created_at FROM checkpoints"
			      "            WHERE job_id = ?1 ORDER BY seq DESC"
			      "            LIMIT 1), 0),"
			      "  (SELECT count(*) FROM agents WHERE connections > 0"
			      "   AND revoked_at IS NULL)",
			      "i", s.job_id);
	if (r >= 0)
		r = gp_db_row(&l->c, "cannot read evaluations",
			      read_status_eval, &s,
			      "SELECT job_id, epoch, test_loss, test_accuracy, "
			      "  at FROM evals WHERE job_id = ?1 "
			      "ORDER BY epoch DESC LIMIT 1",
			      "i", s.job_id);
	gp_db_rollback(&l->c); /* ends the read transaction */
	if (r >= 0) {
		*ret = s;
		r = 0;
	}
out:
	pthread_mutex_unlock(&l->lock);
	return r;
}

static int read_rate(sqlite3_stmt *st, void *arg)
{
	int64_t *v = arg;

	v[0] = sqlite3_column_int64(st, 0);
	v[1] = sqlite3_column_int64(st, 1);
	return 0;
}

int gp_ledger_applied_between(struct gp_ledger *l, int64_t job_id,
			      int64_t from, int64_t to, int64_t *ret_samples,
			      int64_t *ret_minibatches)
{
	int64_t v[2] = { 0, 0 };
	int r;

	if (!ret_samples || !ret_minibatches)
		return -EINVAL;
	pthread_mutex_lock(&l->lock);
	r = gp_db_row(&l->c, "cannot sum recent updates", read_rate, v,
		      "SELECT count(*), coalesce(sum(samples), 0) FROM updates "
		      "WHERE job_id = ?1 AND outcome = 'applied' "
		      "AND rolled_back = 0 AND applied_at >= ?2 "
		      "AND applied_at < ?3",
		      "iii", job_id, from, to);
	pthread_mutex_unlock(&l->lock);
	if (r < 0)
		return r;
	*ret_minibatches = v[0];
	*ret_samples = v[1];
	return 0;
}
