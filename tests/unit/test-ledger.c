/* The coordinator's ledger on real SQLite files in a temporary directory:
 * schema creation and reopening, invite-token accounting, the batched
 * update log, checkpoints, a second reader while the writer works, and
 * damaged or foreign files refused without being touched. */
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "ledger.h"
#include "pool.h"
#include "test.h"
#include "verify.h"

/* The schema version a ledger of this release has (migrations[]). */
#define LEDGER_VERSION 9

static char dir[64];

static void path_in(char *buf, size_t size, const char *name)
{
	snprintf(buf, size, "%s/%s", dir, name);
}

static uint8_t *read_all(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long len;

	ASSERT_NOT_NULL(f);
	ASSERT_OK(fseek(f, 0, SEEK_END));
	len = ftell(f);
	ASSERT_GE(len, 0);
	rewind(f);
	buf = malloc((size_t)len + 1);
	ASSERT_NOT_NULL(buf);
	ASSERT_EQ(fread(buf, 1, (size_t)len, f), len);
	fclose(f);
	*ret_len = (size_t)len;
	return buf;
}

static void write_all(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "wb");

	ASSERT_NOT_NULL(f);
	ASSERT_EQ(fwrite(data, 1, len, f), len);
	ASSERT_OK(fclose(f));
}

static int exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static void sql(const char *path, const char *statements)
{
	sqlite3 *db = NULL;

	ASSERT_EQ(sqlite3_open(path, &db), SQLITE_OK);
	if (sqlite3_exec(db, statements, NULL, NULL, NULL) != SQLITE_OK)
		GP_TEST_FAIL("%s: %s", statements, sqlite3_errmsg(db));
	sqlite3_close(db);
}

static int64_t sql_int(const char *path, const char *query)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int64_t v;

	ASSERT_EQ(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
		  SQLITE_OK);
	ASSERT_EQ(sqlite3_prepare_v2(db, query, -1, &st, NULL), SQLITE_OK);
	ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* update_totals (step 9) says what a count over the update log says:
 * every (job, member) the log has, with the same figures, and no other
 * row with a figure in it. */
static void assert_totals(const char *path)
{
#define RECOUNT								\
	"SELECT job_id, agent_id,"					\
	"  sum(outcome = 'applied' AND rolled_back = 0),"		\
	"  coalesce(sum(CASE WHEN outcome = 'applied' AND rolled_back = 0" \
	"    THEN samples END), 0),"					\
	"  sum(outcome IN ('duplicate', 'late')), sum(outcome = 'rejected')," \
	"  sum(outcome = 'applied' AND rolled_back != 0) "		\
	"FROM updates GROUP BY job_id, agent_id"
#define TOTALS								\
	"SELECT job_id, agent_id, applied, samples, discarded, rejected,"	\
	"  rolled_back FROM update_totals WHERE applied OR samples OR"	\
	"  discarded OR rejected OR rolled_back"
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM (" RECOUNT " EXCEPT "
			  TOTALS ")"), 0);
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM (" TOTALS " EXCEPT "
			  RECOUNT ")"), 0);
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM update_totals t WHERE"
			  "  last_clock != (SELECT max(clock) FROM updates u"
			  "    WHERE u.job_id = t.job_id"
			  "    AND u.agent_id = t.agent_id)"),
		  0);
#undef RECOUNT
#undef TOTALS
}

static struct gp_ledger *open_new(const char *name, char *path, size_t size)
{
	struct gp_ledger *l = NULL;
	char err[512] = "";

	path_in(path, size, name);
	if (gp_ledger_open(path, GP_LEDGER_CREATE, &l, err, sizeof(err)) < 0)
		GP_TEST_FAIL("open %s: %s", path, err);
	return l;
}

static void make_agent(struct gp_ledger_agent *a, uint8_t key_byte,
		       const char *name)
{
	memset(a, 0, sizeof(*a));
	snprintf(a->name, sizeof(a->name), "%s", name);
	memset(a->public_key, key_byte, sizeof(a->public_key));
	snprintf(a->fingerprint, sizeof(a->fingerprint), "%02x%02x-fp",
		 key_byte, key_byte);
}

static int64_t make_token(struct gp_ledger *l, int64_t max_uses,
			  int64_t expires_at)
{
	struct gp_ledger_token t;
	int64_t id = 0;

	memset(&t, 0, sizeof(t));
	snprintf(t.label, sizeof(t.label), "test");
	memset(t.secret_hash, 0xab, sizeof(t.secret_hash));
	t.created_at = 1000;
	t.expires_at = expires_at;
	t.max_uses = max_uses;
	ASSERT_OK(gp_ledger_token_insert(l, &t, &id));
	ASSERT_GT(id, 0);
	return id;
}

static uint8_t *make_blob(uint8_t fill, size_t *ret_len)
{
	uint8_t params[100], clocks[12];
	struct gp_checkpoint_section s[2] = {
		{GP_CKPT_PARAMS, params, sizeof(params)},
		{GP_CKPT_CLOCKS, clocks, sizeof(clocks)},
	};
	uint8_t *blob = NULL;

	memset(params, fill, sizeof(params));
	memset(clocks, fill ^ 0x55, sizeof(clocks));
	ASSERT_OK(gp_checkpoint_encode(s, 2, &blob, ret_len));
	return blob;
}

static void test_create_reopen(void)
{
	struct gp_ledger *l;
	struct gp_ledger_job job;
	char path[256], buf[64], err[512] = "";
	int64_t job_id = 0;

	l = open_new("reopen.db", path, sizeof(path));
	ASSERT_OK(gp_ledger_check(l));
	assert_totals(path);
	ASSERT_OK(gp_ledger_job_create(l, "[model]\nspec = 784-10\n", 5, &job_id));
	ASSERT_OK(gp_ledger_meta_set(l, "token_key_id", "k1"));
	ASSERT_OK(gp_ledger_meta_set(l, "token_key_id", "k2"));
	gp_ledger_close(l);

	ASSERT_EQ(sql_int(path, "PRAGMA user_version"), LEDGER_VERSION);
	ASSERT_EQ(sql_int(path, "PRAGMA application_id"), 0x47504c47);
	/* File format bytes 18 and 19 are 2 in WAL mode. */
	{
		size_t len;
		uint8_t *bytes = read_all(path, &len);

		ASSERT_GT(len, 20);
		ASSERT_EQ(bytes[18], 2);
		ASSERT_EQ(bytes[19], 2);
		free(bytes);
	}

	/* Reopening without CREATE finds everything. */
	l = NULL;
	ASSERT_OK(gp_ledger_open(path, 0, &l, err, sizeof(err)));
	ASSERT_EQ(gp_ledger_meta_get(l, "token_key_id", buf, sizeof(buf)), 2);
	ASSERT_STR_EQ(buf, "k2");
	ASSERT_EQ(gp_ledger_meta_get(l, "missing", buf, sizeof(buf)), -ENOENT);
	ASSERT_EQ(gp_ledger_meta_get(l, "token_key_id", buf, 2), -ERANGE);
	ASSERT_OK(gp_ledger_job_get(l, 0, &job));
	ASSERT_EQ(job.id, job_id);
	ASSERT_STR_EQ(job.spec, "[model]\nspec = 784-10\n");
	ASSERT_EQ(job.state, GP_JOB_CREATED);
	gp_ledger_job_finish(&job);
	ASSERT_OK(gp_ledger_job_set_state(l, job_id, GP_JOB_RUNNING, 9));
	ASSERT_OK(gp_ledger_job_get(l, job_id, &job));
	ASSERT_EQ(job.state, GP_JOB_RUNNING);
	ASSERT_EQ(job.updated_at, 9);
	gp_ledger_job_finish(&job);
	ASSERT_EQ(gp_ledger_job_set_state(l, 999, GP_JOB_DONE, 9), -ENOENT);

	/* The job's model: none for a row from before the ledger kept
	 * models, then the canonical text the coordinator records. */
	{
		static const char cnn[] =
			"gradpool-model 1; input shape=1x28x28; dense fc1 "
			"out=10; softmax_xent loss";
		char *model = (char *)"unchanged";

		ASSERT_OK(gp_ledger_job_get(l, job_id, &job));
		ASSERT_STR_EQ(job.model, "");
		gp_ledger_job_finish(&job);
		ASSERT_EQ(gp_ledger_job_model(l, job_id, &model), -ENODATA);
		ASSERT_STR_EQ(model, "unchanged");
		ASSERT_NOT_NULL(strstr(gp_ledger_error(l), "before the ledger"));
		ASSERT_EQ(gp_ledger_job_model(l, 999, &model), -ENOENT);
		ASSERT_EQ(gp_ledger_job_set_model(l, 999, cnn), -ENOENT);
		ASSERT_OK(gp_ledger_job_set_model(l, job_id, cnn));
		ASSERT_OK(gp_ledger_job_model(l, job_id, &model));
		ASSERT_STR_EQ(model, cnn);
		free(model);
		ASSERT_OK(gp_ledger_job_model(l, 0, &model));
		ASSERT_STR_EQ(model, cnn);
		free(model);
		ASSERT_OK(gp_ledger_job_get(l, 0, &job));
		ASSERT_STR_EQ(job.model, cnn);
		gp_ledger_job_finish(&job);
	}
	gp_ledger_close(l);

	/* A missing file is not created without GP_LEDGER_CREATE. */
	path_in(path, sizeof(path), "never.db");
	l = NULL;
	ASSERT_EQ(gp_ledger_open(path, 0, &l, err, sizeof(err)), -ENOENT);
	ASSERT(l == NULL);
	ASSERT(!exists(path));
	ASSERT_NOT_NULL(strstr(err, path));
	ASSERT_EQ(gp_ledger_open(path, GP_LEDGER_READONLY, &l, err, sizeof(err)),
		  -ENOENT);
	ASSERT(!exists(path));

	/* An empty file (as mktemp leaves it) may be initialised. */
	path_in(path, sizeof(path), "empty.db");
	write_all(path, "", 0);
	ASSERT_EQ(gp_ledger_open(path, 0, &l, err, sizeof(err)), -ENOENT);
	ASSERT_OK(gp_ledger_open(path, GP_LEDGER_CREATE, &l, err, sizeof(err)));
	gp_ledger_close(l);
	ASSERT_EQ(sql_int(path, "PRAGMA user_version"), LEDGER_VERSION);
}

static void test_tokens_and_join(void)
{
	struct gp_ledger *l;
	struct gp_ledger_agent a, got;
	struct gp_ledger_token t, *list = NULL;
	char path[256];
	int64_t tok, tok_exp, tok_rev, id1 = 0, id2 = 0, id = 0;
	size_t n = 0;

	l = open_new("tokens.db", path, sizeof(path));
	tok = make_token(l, 2, 0);
	tok_exp = make_token(l, 0, 5000);
	tok_rev = make_token(l, 0, 0);
	ASSERT_OK(gp_ledger_token_revoke(l, tok_rev, 1500));
	ASSERT_EQ(gp_ledger_token_revoke(l, 4242, 1500), -ENOENT);

	make_agent(&a, 1, "alpha");
	a.n_devices = 2;
	snprintf(a.devices[0].kind, sizeof(a.devices[0].kind), "cpu");
	snprintf(a.devices[0].name, sizeof(a.devices[0].name), "openblas");
	a.devices[0].gflops = 12.5;
	a.devices[0].samples_per_s = 900;
	snprintf(a.devices[1].kind, sizeof(a.devices[1].kind), "opencl");
	snprintf(a.devices[1].name, sizeof(a.devices[1].name), "pocl");
	a.devices[1].gflops = 30;
	ASSERT_EQ(gp_ledger_join(l, tok, &a, 2000, &id1), 0);
	ASSERT_GT(id1, 0);

	/* The same key again is the same member and costs no use. */
	ASSERT_EQ(gp_ledger_join(l, tok, &a, 2001, &id), 1);
	ASSERT_EQ(id, id1);
	ASSERT_OK(gp_ledger_token_get(l, tok, &t));
	ASSERT_EQ(t.uses, 1);

	make_agent(&a, 2, "beta");
	ASSERT_EQ(gp_ledger_join(l, tok, &a, 2002, &id2), 0);
	ASSERT_NE(id2, id1);

	/* Used up: the third agent is refused and not inserted. */
	make_agent(&a, 3, "gamma");
	id = 0;
	ASSERT_EQ(gp_ledger_join(l, tok, &a, 2003, &id), -EKEYREJECTED);
	ASSERT_EQ(id, 0);
	ASSERT_NOT_NULL(strstr(gp_ledger_error(l), "used 2 of 2"));
	{
		/* The copy for another thread: whole, or cut to fit. */
		char msg[512], small[8];

		gp_ledger_error_copy(l, msg, sizeof(msg));
		ASSERT_STR_EQ(msg, gp_ledger_error(l));
		gp_ledger_error_copy(l, small, sizeof(small));
		ASSERT_EQ(strlen(small), sizeof(small) - 1);
		ASSERT_MEM_EQ(small, msg, sizeof(small) - 1);
	}
	ASSERT_EQ(gp_ledger_agent_by_key(l, a.public_key, &got), -ENOENT);
	ASSERT_OK(gp_ledger_token_get(l, tok, &t));
	ASSERT_EQ(t.uses, 2);

	/* Expired, revoked and unknown tokens. */
	ASSERT_EQ(gp_ledger_join(l, tok_exp, &a, 5000, &id), -EKEYEXPIRED);
	ASSERT_EQ(gp_ledger_join(l, tok_rev, &a, 2003, &id), -EKEYREVOKED);
	ASSERT_EQ(gp_ledger_join(l, 777, &a, 2003, &id), -ENOENT);
	ASSERT_OK(gp_ledger_token_get(l, tok_exp, &t));
	ASSERT_EQ(t.uses, 0);
	/* Before its expiry the token works. */
	ASSERT_EQ(gp_ledger_join(l, tok_exp, &a, 4999, &id), 0);

	/* All or nothing: a join whose agent row cannot be written (too many
	 * devices) leaves the token's counter where it was. */
	make_agent(&a, 4, "delta");
	a.n_devices = GP_LEDGER_DEVICES_MAX + 1;
	ASSERT_EQ(gp_ledger_join(l, tok_exp, &a, 4000, &id), -E2BIG);
	ASSERT_OK(gp_ledger_token_get(l, tok_exp, &t));
	ASSERT_EQ(t.uses, 1);
	ASSERT_EQ(gp_ledger_agent_by_key(l, a.public_key, &got), -ENOENT);

	/* Lookup, devices, touch, revoke. */
	memset(a.public_key, 1, sizeof(a.public_key));
	ASSERT_OK(gp_ledger_agent_by_key(l, a.public_key, &got));
	ASSERT_EQ(got.id, id1);
	ASSERT_STR_EQ(got.name, "alpha");
	ASSERT_STR_EQ(got.fingerprint, "0101-fp");
	ASSERT_EQ(got.token_id, tok);
	ASSERT_EQ(got.joined_at, 2000);
	ASSERT_EQ(got.n_devices, 2);
	ASSERT_STR_EQ(got.devices[1].kind, "opencl");
	ASSERT_NEAR(got.devices[0].gflops, 12.5, 0);
	ASSERT(gp_ledger_agent_connected_append(l, id1, 1, 3000) >= 0);
	/* never backwards */
	ASSERT(gp_ledger_agent_connected_append(l, id1, -1, 2500) >= 0);
	ASSERT_EQ(gp_ledger_flush(l), 2);
	ASSERT_OK(gp_ledger_agent_set_devices(l, id1, got.devices, 1));
	ASSERT_OK(gp_ledger_agent_get(l, id1, &got));
	ASSERT_EQ(got.last_seen, 3000);
	ASSERT_EQ(got.n_devices, 1);
	ASSERT_EQ(got.revoked_at, 0);
	ASSERT_EQ(gp_ledger_agent_set_devices(l, 999, got.devices, 1), -ENOENT);

	ASSERT_OK(gp_ledger_agent_revoke(l, id1, 3100));
	ASSERT_OK(gp_ledger_agent_revoke(l, id1, 3200));
	ASSERT_OK(gp_ledger_agent_get(l, id1, &got));
	ASSERT_EQ(got.revoked_at, 3100);
	ASSERT_EQ(gp_ledger_agent_revoke(l, 999, 1), -ENOENT);
	/* A revoked agent cannot rejoin, even with a fresh token. */
	make_agent(&a, 1, "alpha");
	ASSERT_EQ(gp_ledger_join(l, make_token(l, 0, 0), &a, 4000, &id),
		  -EKEYREVOKED);

	/* A wire token id (8 random bytes) may spell a negative int64. */
	{
		static const uint8_t wire[8] = {1, 2, 3, 4, 5, 6, 7, 0xf0};
		uint8_t back[8];

		memset(&t, 0, sizeof(t));
		t.id = gp_ledger_token_id_from_bytes(wire);
		ASSERT_LT(t.id, 0);
		t.created_at = 1;
		ASSERT_OK(gp_ledger_token_insert(l, &t, &id));
		ASSERT_EQ(id, t.id);
		ASSERT_EQ(gp_ledger_token_insert(l, &t, &id), -EEXIST);
		gp_ledger_token_id_to_bytes(id, back);
		ASSERT_MEM_EQ(back, wire, 8);
		ASSERT_OK(gp_ledger_token_revoke(l, id, 5));
	}
	ASSERT_OK(gp_ledger_token_list(l, &list, &n));
	ASSERT_EQ(n, 5);
	ASSERT_LT(list[0].id, 0); /* ORDER BY id */
	ASSERT_EQ(list[1].id, tok);
	ASSERT_EQ(list[1].max_uses, 2);
	ASSERT_EQ(list[3].revoked_at, 1500);
	ASSERT_EQ(list[2].expires_at, 5000);
	free(list);
	gp_ledger_close(l);

	/* The secret itself is nowhere: only the 32-byte keyed hash. */
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM tokens "
				"WHERE length(secret_hash) = 32"),
		  5);
}

/* Two racing joins for the last use of a token: exactly one wins. */
struct race {
	const char *path;
	int64_t token;
	uint8_t key;
	int result;
};

static void *race_join(void *arg)
{
	struct race *r = arg;
	struct gp_ledger *l = NULL;
	struct gp_ledger_agent a;
	char err[512];
	int64_t id;

	ASSERT_OK(gp_ledger_open(r->path, 0, &l, err, sizeof(err)));
	make_agent(&a, r->key, "racer");
	r->result = gp_ledger_join(l, r->token, &a, 100, &id);
	gp_ledger_close(l);
	return NULL;
}

static void test_token_race(void)
{
	struct race races[4];
	pthread_t th[4];
	struct gp_ledger *l;
	char path[256];
	int64_t tok;
	int wins = 0;

	l = open_new("race.db", path, sizeof(path));
	tok = make_token(l, 1, 0);
	gp_ledger_close(l);
	for (int i = 0; i < 4; i++) {
		races[i] = (struct race){path, tok, (uint8_t)(10 + i), 99};
		ASSERT_OK(pthread_create(&th[i], NULL, race_join, &races[i]));
	}
	for (int i = 0; i < 4; i++) {
		ASSERT_OK(pthread_join(th[i], NULL));
		if (races[i].result == 0)
			wins++;
		else
			ASSERT_EQ(races[i].result, -EKEYREJECTED);
	}
	ASSERT_EQ(wins, 1);
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM agents"), 1);
	ASSERT_EQ(sql_int(path, "SELECT uses FROM tokens"), 1);
}

static struct gp_ledger_update upd(int64_t job, int64_t agent, int64_t clock,
				   int64_t minibatch,
				   enum gp_ledger_outcome outcome)
{
	struct gp_ledger_update u;

	memset(&u, 0, sizeof(u));
	u.job_id = job;
	u.agent_id = agent;
	u.clock = clock;
	u.epoch = 1;
	u.minibatch = minibatch;
	u.samples = 64;
	u.loss = 0.5;
	u.grad_norm = 2.0;
	u.staleness = 1;
	u.received_at = 10000 + clock;
	u.applied_at = outcome == GP_UPDATE_APPLIED ? u.received_at + 1 : 0;
	u.outcome = outcome;
	if (outcome != GP_UPDATE_APPLIED)
		snprintf(u.reason, sizeof(u.reason), "because");
	return u;
}

static void test_update_log(void)
{
	struct gp_ledger *l;
	struct gp_ledger_agent a;
	struct gp_ledger_agent_row *rows = NULL;
	struct gp_ledger_rejection rj;
	struct gp_ledger_status s;
	struct gp_ledger_eval e, *evals = NULL;
	struct gp_ledger_update u;
	char path[256];
	int64_t job = 0, a1 = 0, a2 = 0, tok;
	size_t n = 0;

	l = open_new("updates.db", path, sizeof(path));
	ASSERT_OK(gp_ledger_job_create(l, "spec", 1, &job));
	tok = make_token(l, 0, 0);
	make_agent(&a, 1, "one");
	ASSERT_OK(gp_ledger_join(l, tok, &a, 1, &a1));
	make_agent(&a, 2, "two");
	ASSERT_OK(gp_ledger_join(l, tok, &a, 1, &a2));

	gp_ledger_set_batching(l, 10, 1000);
	for (int i = 0; i < 9; i++) {
		u = upd(job, i % 2 ? a2 : a1, i, i, GP_UPDATE_APPLIED);
		ASSERT_EQ(gp_ledger_update_append(l, &u), 0);
	}
	/* Nothing reaches the file before a flush. */
	ASSERT_EQ(gp_ledger_update_count(l, job), 0);
	ASSERT_EQ(gp_ledger_pending(l), 9);
	/* Room counts what waits: the buffer's last rows, and no more. */
	ASSERT(gp_ledger_update_room(l, GP_LEDGER_BUFFER_MAX - 9));
	ASSERT(!gp_ledger_update_room(l, GP_LEDGER_BUFFER_MAX - 8));
	ASSERT(!gp_ledger_update_room(l, SIZE_MAX));
	ASSERT(!gp_ledger_flush_due(l, 10000));
	ASSERT(gp_ledger_flush_due(l, 10000 + 1000));
	u = upd(job, a1, 9, 3, GP_UPDATE_DUPLICATE);
	ASSERT_EQ(gp_ledger_update_append(l, &u), 1); /* 10 rows: due */
	ASSERT_EQ(gp_ledger_flush(l), 10);
	ASSERT_EQ(gp_ledger_pending(l), 0);
	ASSERT_EQ(gp_ledger_update_count(l, job), 10);
	ASSERT_EQ(gp_ledger_flush(l), 0);

	/* A row naming an unknown agent is dropped, not wedging the rest. */
	u = upd(job, 999, 10, 10, GP_UPDATE_APPLIED);
	ASSERT_EQ(gp_ledger_update_append(l, &u), 0);
	u = upd(job, a2, 11, 11, GP_UPDATE_REJECTED);
	u.loss = NAN;
	ASSERT_EQ(gp_ledger_update_append(l, &u), 0);
	memset(&rj, 0, sizeof(rj));
	rj.agent_id = a2;
	snprintf(rj.kind, sizeof(rj.kind), "nan");
	snprintf(rj.reason, sizeof(rj.reason), "NaN in layer 2");
	rj.at = 10011;
	ASSERT_EQ(gp_ledger_rejection_append(l, &rj), 0);
	rj.agent_id = 0; /* before the handshake finished */
	snprintf(rj.kind, sizeof(rj.kind), "handshake");
	ASSERT_EQ(gp_ledger_rejection_append(l, &rj), 0);
	ASSERT_EQ(gp_ledger_flush(l), 3);
	ASSERT_EQ(gp_ledger_update_count(l, job), 11);
	ASSERT_EQ(gp_ledger_update_count(l, 0), 11);

	ASSERT_OK(gp_ledger_agent_list(l, job, &rows, &n));
	ASSERT_EQ(n, 2);
	ASSERT_EQ(rows[0].agent.id, a1);
	ASSERT_EQ(rows[0].updates_applied, 5); /* clocks 0 2 4 6 8 */
	ASSERT_EQ(rows[0].samples_applied, 5 * 64);
	ASSERT_EQ(rows[0].updates_discarded, 1);
	ASSERT_EQ(rows[0].last_clock, 9);
	ASSERT_EQ(rows[1].updates_applied, 4);
	ASSERT_EQ(rows[1].updates_rejected, 1);
	ASSERT_EQ(rows[1].rejections, 1);
	ASSERT_EQ(rows[1].last_clock, 11);
	ASSERT_EQ(rows[0].link_at, 0);
	free(rows);
	/* The link as last measured, replaced by the next. */
	ASSERT_OK(gp_ledger_agent_link_append(l, a2, 2.5e6, 900, 20001));
	ASSERT_OK(gp_ledger_agent_link_append(l, a2, 1.25e6, 1500, 20002));
	ASSERT_EQ(gp_ledger_agent_link_append(l, a2, NAN, 1500, 20003),
		  -EINVAL);
	/* Buffered: nothing is written before the flush. */
	ASSERT_OK(gp_ledger_agent_list(l, job, &rows, &n));
	ASSERT_EQ(rows[1].link_at, 0);
	free(rows);
	ASSERT_EQ(gp_ledger_flush(l), 2);
	ASSERT_OK(gp_ledger_agent_list(l, job, &rows, &n));
	ASSERT_EQ(n, 2);
	ASSERT_EQ(rows[0].link_at, 0);
	ASSERT_NEAR(rows[1].link_bps, 1.25e6, 0);
	ASSERT_NEAR(rows[1].sync_ms, 1500, 0);
	ASSERT_EQ(rows[1].link_at, 20002);
	ASSERT_EQ(rows[1].updates_applied, 4);
	free(rows);

	e = (struct gp_ledger_eval){job, 1, 0.45, 0.84, 20000};
	ASSERT_OK(gp_ledger_eval_add(l, &e));
	e.test_accuracy = 0.85; /* re-evaluated after a resume */
	ASSERT_OK(gp_ledger_eval_add(l, &e));
	e = (struct gp_ledger_eval){job, 2, 0.40, 0.87, 30000};
	ASSERT_OK(gp_ledger_eval_add(l, &e));
	ASSERT_OK(gp_ledger_eval_list(l, job, &evals, &n));
	ASSERT_EQ(n, 2);
	ASSERT_NEAR(evals[0].test_accuracy, 0.85, 1e-12);
	ASSERT_EQ(evals[1].epoch, 2);
	free(evals);

	ASSERT_OK(gp_ledger_status(l, 0, &s));
	ASSERT_EQ(s.job_id, job);
	ASSERT_EQ(s.epoch, 1);
	ASSERT_EQ(s.minibatches_in_epoch, 9);
	ASSERT_EQ(s.updates_applied, 9);
	ASSERT_EQ(s.samples_applied, 9 * 64);
	ASSERT_EQ(s.updates_discarded, 1);
	ASSERT_EQ(s.updates_rejected, 1);
	ASSERT_EQ(s.live_agents, 2);
	ASSERT(s.have_eval);
	ASSERT_EQ(s.last_eval.epoch, 2);
	ASSERT_EQ(gp_ledger_status(l, 77, &s), -ENOENT);

	/* Rows still buffered at close are written by close. */
	u = upd(job, a1, 12, 12, GP_UPDATE_LATE);
	ASSERT_EQ(gp_ledger_update_append(l, &u), 0);
	gp_ledger_close(l);
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM updates"), 12);
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM rejections "
				"WHERE agent_id IS NULL"),
		  1);
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM updates WHERE loss "
				"IS NULL AND outcome = 'rejected'"),
		  1);
}

/* The loop thread appends while a worker flushes: every row lands once. */
struct appender {
	struct gp_ledger *l;
	int64_t job, agent;
};

static void *append_many(void *arg)
{
	struct appender *ap = arg;

	for (int i = 0; i < 2000; i++) {
		struct gp_ledger_update u =
			upd(ap->job, ap->agent, i, i, GP_UPDATE_APPLIED);

		ASSERT_GE(gp_ledger_update_append(ap->l, &u), 0);
	}
	return NULL;
}

static void test_threads(void)
{
	struct appender ap;
	struct gp_ledger *l;
	struct gp_ledger_agent a;
	pthread_t th;
	char path[256];
	int64_t written = 0;

	l = open_new("threads.db", path, sizeof(path));
	ap.l = l;
	ASSERT_OK(gp_ledger_job_create(l, "spec", 1, &ap.job));
	make_agent(&a, 7, "seven");
	ASSERT_OK(gp_ledger_join(l, make_token(l, 0, 0), &a, 1, &ap.agent));
	ASSERT_OK(pthread_create(&th, NULL, append_many, &ap));
	for (int i = 0; i < 50; i++) {
		int n = gp_ledger_flush(l);

		ASSERT_GE(n, 0);
		written += n;
	}
	ASSERT_OK(pthread_join(th, NULL));
	written += gp_ledger_flush(l);
	ASSERT_EQ(written, 2000);
	ASSERT_EQ(gp_ledger_update_count(l, ap.job), 2000);
	gp_ledger_close(l);
}

static void test_checkpoints(void)
{
	struct gp_ledger *l;
	struct gp_ledger_checkpoint c;
	struct gp_ledger_update u;
	struct gp_ledger_agent a;
	char path[256], err[512];
	uint8_t *blob;
	size_t len;
	int64_t job = 0, agent = 0, seq = 0;
	unsigned skipped = 99;

	l = open_new("ckpt.db", path, sizeof(path));
	ASSERT_OK(gp_ledger_job_create(l, "spec", 1, &job));
	make_agent(&a, 1, "one");
	ASSERT_OK(gp_ledger_join(l, make_token(l, 0, 0), &a, 1, &agent));
	ASSERT_EQ(gp_ledger_checkpoint_load_latest(l, job, &c, NULL), -ENOENT);

	for (int i = 1; i <= 5; i++) {
		/* Buffered rows go into the checkpoint's transaction. */
		u = upd(job, agent, i, i, GP_UPDATE_APPLIED);
		ASSERT_EQ(gp_ledger_update_append(l, &u), 0);
		blob = make_blob((uint8_t)i, &len);
		ASSERT_OK(gp_ledger_checkpoint_write(l, job, i / 2, i * 10,
						     100 + i, blob, len, 3,
						     &seq));
		ASSERT_EQ(seq, i);
		ASSERT_EQ(gp_ledger_pending(l), 0);
		ASSERT_EQ(gp_ledger_update_count(l, job), i);
		free(blob);
	}
	ASSERT_EQ(gp_ledger_checkpoint_count(l, job), 3);

	/* Not a container: refused before it reaches the file. */
	ASSERT_EQ(gp_ledger_checkpoint_write(l, job, 0, 0, 0,
					     (const uint8_t *)"junk", 4, 3,
					     NULL),
		  -EINVAL);
	ASSERT_EQ(gp_ledger_checkpoint_count(l, job), 3);

	ASSERT_OK(gp_ledger_checkpoint_load_latest(l, job, &c, &skipped));
	ASSERT_EQ(skipped, 0);
	ASSERT_EQ(c.seq, 5);
	ASSERT_EQ(c.epoch, 2);
	ASSERT_EQ(c.clock, 50);
	ASSERT_EQ(c.created_at, 105);
	blob = make_blob(5, &len);
	ASSERT_EQ(c.len, len);
	ASSERT_MEM_EQ(c.blob, blob, len);
	free(blob);
	gp_ledger_checkpoint_finish(&c);
	gp_ledger_close(l);

	/* Damage the newest blob on disk: loading falls back to seq 4. */
	sql(path, "UPDATE checkpoints SET blob = zeroblob(64) WHERE seq = 5");
	ASSERT_OK(gp_ledger_open(path, 0, &l, err, sizeof(err)));
	ASSERT_OK(gp_ledger_checkpoint_load_latest(l, job, &c, &skipped));
	ASSERT_EQ(skipped, 1);
	ASSERT_EQ(c.seq, 4);
	gp_ledger_checkpoint_finish(&c);

	/* The export's view: every kept row, newest first, and one by seq
	 * as stored, damaged or not. */
	{
		struct gp_ledger_checkpoint_info *info = NULL;
		size_t n = 0;

		ASSERT_OK(gp_ledger_checkpoint_list(l, job, &info, &n));
		ASSERT_EQ(n, 3);
		for (size_t i = 0; i < n; i++) {
			ASSERT_EQ(info[i].seq, 5 - (int64_t)i);
			ASSERT_EQ(info[i].clock, info[i].seq * 10);
			ASSERT_EQ(info[i].created_at, 100 + info[i].seq);
		}
		ASSERT_EQ(info[0].size, 64);
		blob = make_blob(4, &len);
		ASSERT_EQ(info[1].size, len);
		free(info);
		ASSERT_OK(gp_ledger_checkpoint_load(l, job, 4, &c));
		ASSERT_EQ(c.seq, 4);
		ASSERT_EQ(c.epoch, 2);
		ASSERT_EQ(c.len, len);
		ASSERT_MEM_EQ(c.blob, blob, len);
		free(blob);
		gp_ledger_checkpoint_finish(&c);
		ASSERT_OK(gp_ledger_checkpoint_load(l, job, 5, &c));
		ASSERT_EQ(c.len, 64);
		gp_ledger_checkpoint_finish(&c);
		ASSERT_EQ(gp_ledger_checkpoint_load(l, job, 2, &c), -ENOENT);
		ASSERT_EQ(gp_ledger_checkpoint_load(l, job + 1, 4, &c), -ENOENT);
		ASSERT_OK(gp_ledger_checkpoint_list(l, job + 1, &info, &n));
		ASSERT_EQ(n, 0);
		ASSERT(info == NULL);
	}
	gp_ledger_close(l);
}

/* A restore from a checkpoint marks the applied updates after it rolled
 * back; only the counted ones (rolled_back = 0) define "the first keep". */
static void test_rollback(void)
{
	struct gp_ledger *l;
	struct gp_ledger_agent a;
	struct gp_ledger_update u;
	char path[256];
	int64_t job = 0, other = 0, agent = 0;

	l = open_new("rollback.db", path, sizeof(path));
	ASSERT_OK(gp_ledger_job_create(l, "spec", 1, &job));
	ASSERT_OK(gp_ledger_job_create(l, "other", 1, &other));
	make_agent(&a, 1, "one");
	ASSERT_OK(gp_ledger_join(l, make_token(l, 0, 0), &a, 1, &agent));
	gp_ledger_set_batching(l, 1000, 100000);
	/* Ten applied updates (minibatches 0..9), a duplicate after the
	 * fourth, and one applied row of another job. */
	for (int i = 0; i < 10; i++) {
		u = upd(job, agent, i, i, GP_UPDATE_APPLIED);
		gp_ledger_update_append(l, &u);
		if (i == 3) {
			u = upd(job, agent, i, 2, GP_UPDATE_DUPLICATE);
			gp_ledger_update_append(l, &u);
		}
		if (i == 5) /* some rows flushed, the rest still buffered */
			ASSERT_EQ(gp_ledger_flush(l), 7);
	}
	u = upd(other, agent, 1, 1, GP_UPDATE_APPLIED);
	gp_ledger_update_append(l, &u);
	ASSERT_EQ(gp_ledger_rollback_after(l, job, 0, 1), -EINVAL);
	/* Checkpoint 1 held six updates: 6..9 are undone (buffered rows are
	 * flushed first). */
	ASSERT_EQ(gp_ledger_rollback_after(l, job, 1, 6), 4);
	ASSERT_EQ(gp_ledger_pending(l), 0);
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM updates WHERE "
			  "rolled_back = 1 AND minibatch >= 6"), 4);
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM updates WHERE "
			  "rolled_back != 0"), 4);
	/* Idempotent: restoring the same checkpoint again marks nothing. */
	ASSERT_EQ(gp_ledger_rollback_after(l, job, 1, 6), 0);
	/* Redone: 6 and 7 applied again, then a crash back to checkpoint 2,
	 * which held seven (0..5 and the new 6): the new 7 is undone. */
	for (int i = 6; i < 8; i++) {
		u = upd(job, agent, 20 + i, i, GP_UPDATE_APPLIED);
		gp_ledger_update_append(l, &u);
	}
	ASSERT_EQ(gp_ledger_rollback_after(l, job, 2, 7), 1);
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM updates WHERE "
			  "rolled_back = 2 AND minibatch = 7 AND clock = 27"), 1);
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM updates WHERE job_id = 1 "
			  "AND outcome = 'applied' AND rolled_back = 0"), 7);
	/* Exactly once again among the counted rows. */
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM (SELECT minibatch FROM "
			  "updates WHERE outcome = 'applied' AND rolled_back = 0 "
			  "AND job_id = 1 GROUP BY minibatch HAVING count(*) > 1)"),
		  0);
	/* A checkpoint with more than the log holds marks nothing; keep 0
	 * (a checkpoint before any update) marks every counted row. */
	ASSERT_EQ(gp_ledger_rollback_after(l, job, 3, 100), 0);
	ASSERT_EQ(gp_ledger_rollback_after(l, job, 3, 0), 7);
	/* Status and the agents' totals count only the rows that count:
	 * minibatches 0..5 (six), with the three rolled-back ones apart. */
	{
		struct gp_ledger_status st;
		struct gp_ledger_agent_row *rows = NULL;
		size_t n = 0;

		ASSERT_OK(gp_ledger_status(l, job, &st));
		ASSERT_EQ(st.updates_applied, 0);
		ASSERT_EQ(st.updates_rolled_back, 12);
		ASSERT_OK(gp_ledger_agent_list(l, job, &rows, &n));
		ASSERT_EQ(n, 1);
		ASSERT_EQ(rows[0].updates_applied, 0);
		ASSERT_EQ(rows[0].samples_applied, 0);
		ASSERT_EQ(rows[0].updates_rolled_back, 12);
		free(rows);
		ASSERT_OK(gp_ledger_status(l, other, &st));
		ASSERT_EQ(st.updates_applied, 1);
		ASSERT_EQ(st.updates_rolled_back, 0);
	}
	/* The other job and the duplicate are untouched. */
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM updates WHERE "
			  "rolled_back != 0 AND (job_id != 1 OR "
			  "outcome != 'applied')"), 0);
	ASSERT_OK(gp_ledger_check(l));
	assert_totals(path);
	gp_ledger_close(l);

	/* The totals follow edits gradpool itself never makes, by hand in
	 * sqlite3 on a copy: a roll-back undone (totals_roll's other
	 * direction) and rows deleted (totals_delete), of every outcome. */
	{
		char copy[256], q[300];

		path_in(copy, sizeof(copy), "edited.db");
		unlink(copy);
		snprintf(q, sizeof(q), "VACUUM INTO '%s'", copy);
		sql(path, q);
		ASSERT(sql_int(copy, "SELECT count(*) FROM updates WHERE"
			       " rolled_back != 0") >= 5);
		/* Rows of every outcome (inserted: the triggers count them). */
		sql(copy, "INSERT INTO updates (job_id, agent_id, clock, epoch,"
			  " minibatch, samples, staleness, received_at,"
			  " outcome) SELECT job_id, agent_id, clock + 1, epoch,"
			  " minibatch, samples, 0, received_at, o.v FROM"
			  " (SELECT * FROM updates LIMIT 4),"
			  " (SELECT 'rejected' AS v UNION SELECT 'late'"
			  "  UNION SELECT 'duplicate') AS o");
		assert_totals(copy);
		ASSERT_EQ(sql_int(copy, "SELECT count(DISTINCT outcome) FROM"
				  " updates"), 4);
		sql(copy, "UPDATE updates SET rolled_back = 0 WHERE id IN"
			  " (SELECT id FROM updates WHERE rolled_back != 0"
			  " LIMIT 5)");
		assert_totals(copy);
		sql(copy, "DELETE FROM updates WHERE id % 3 = 0");
		assert_totals(copy);
		sql(copy, "DELETE FROM updates WHERE outcome != 'applied'");
		assert_totals(copy);
	}

	/* A version 1 ledger (before the column and agent_links) is
	 * migrated: its rows count, its agents' links are unknown. */
	sql(path, "DROP TRIGGER totals_add; DROP TRIGGER totals_roll; "
		  "DROP TRIGGER totals_delete; DROP TABLE update_totals; "
		  "DROP INDEX updates_applied_at; "
		  "DROP TRIGGER credit_add; DROP TRIGGER credit_undo; "
		  "DROP TABLE credit; ALTER TABLE agents DROP COLUMN public_name; "
		  "ALTER TABLE updates DROP COLUMN rolled_back; "
		  "ALTER TABLE jobs DROP COLUMN model; "
		  "ALTER TABLE agents DROP COLUMN left_at; "
		  "ALTER TABLE agents DROP COLUMN connections; "
		  "ALTER TABLE jobs DROP COLUMN epochs; "
		  "ALTER TABLE jobs DROP COLUMN minibatches_per_epoch; "
		  "ALTER TABLE jobs DROP COLUMN samples_per_epoch; "
		  "ALTER TABLE jobs DROP COLUMN source; "
		  "DROP INDEX jobs_by_state; "
		  "DROP TABLE agent_links; DROP TABLE agent_trust; "
		  "PRAGMA user_version = 1");
	{
		char err[512] = "";

		if (gp_ledger_open(path, 0, &l, err, sizeof(err)) < 0)
			GP_TEST_FAIL("migrating: %s", err);
	}
	ASSERT_EQ(sql_int(path, "PRAGMA user_version"), LEDGER_VERSION);
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM updates WHERE "
			  "rolled_back = 0"), 14);
	assert_totals(path); /* step 9 filled them from the log */
	/* Its jobs have no model yet (gp_ledger_job_model: -ENODATA). */
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM jobs WHERE model = ''"),
		  sql_int(path, "SELECT count(*) FROM jobs"));
	{
		char *model = NULL;

		ASSERT_EQ(gp_ledger_job_model(l, job, &model), -ENODATA);
		ASSERT(model == NULL);
	}
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM agents WHERE "
			  "connections = 0 AND left_at IS NULL"), 1);
	gp_ledger_close(l);
}

/* The job queue (schema step 6): queued jobs in order, one left running
 * first, cancel from the states that allow it, the owner's list; and the
 * rebuilt jobs table keeps its rows and the references to them. */
static void test_job_queue(void)
{
	struct gp_ledger *l;
	struct gp_ledger_job_row *rows = NULL;
	struct gp_ledger_job j = { 0 };
	enum gp_ledger_job_state was = GP_JOB_DONE;
	char path[256];
	int64_t a = 0, b = 0, c = 0, next = 0, found = 0;
	size_t n = 0;

	l = open_new("queue.db", path, sizeof(path));
	ASSERT_EQ(gp_ledger_job_next(l, &next), -ENOENT);
	ASSERT_OK(gp_ledger_job_queue(l, "[a]", "784-10", "/x/a.ini", 10, &a));
	ASSERT_OK(gp_ledger_job_queue(l, "[b]", "784-20-10", "/x/b.ini", 11, &b));
	ASSERT_OK(gp_ledger_job_queue(l, "[c]", "784-30-10", "/x/c.ini", 12, &c));
	ASSERT_OK(gp_ledger_job_next(l, &next));
	ASSERT_EQ(next, a);
	ASSERT_OK(gp_ledger_job_find(l, "[b]", "784-20-10", &found));
	ASSERT_EQ(found, b);
	ASSERT_EQ(gp_ledger_job_find(l, "[b]", "784-10", &found), -ENOENT);
	/* b was left running by a serve that stopped: it goes on first. */
	ASSERT_OK(gp_ledger_job_set_state(l, b, GP_JOB_RUNNING, 20));
	ASSERT_OK(gp_ledger_job_next(l, &next));
	ASSERT_EQ(next, b);
	ASSERT_OK(gp_ledger_job_set_state(l, b, GP_JOB_DONE, 21));
	ASSERT_EQ(gp_ledger_job_cancel(l, b, 22, &was), -EALREADY);
	ASSERT_EQ(was, GP_JOB_DONE);
	ASSERT_OK(gp_ledger_job_cancel(l, a, 23, &was));
	ASSERT_EQ(was, GP_JOB_QUEUED);
	ASSERT_EQ(gp_ledger_job_cancel(l, a, 24, NULL), -EALREADY);
	ASSERT_EQ(gp_ledger_job_cancel(l, 99, 24, NULL), -ENOENT);
	ASSERT_OK(gp_ledger_job_next(l, &next));
	ASSERT_EQ(next, c);
	/* A serve that was setting a up when it was cancelled does not mark
	 * it running again, nor a done job cancelled. */
	ASSERT_EQ(gp_ledger_job_set_state(l, a, GP_JOB_RUNNING, 25), -EALREADY);
	ASSERT_EQ(gp_ledger_job_set_state(l, b, GP_JOB_FAILED, 25), -EALREADY);
	ASSERT_OK(gp_ledger_job_get(l, a, &j));
	ASSERT_EQ(j.state, GP_JOB_CANCELLED);
	ASSERT_EQ(j.updated_at, 23);
	ASSERT_STR_EQ(j.source, "/x/a.ini");
	gp_ledger_job_finish(&j);
	ASSERT_OK(gp_ledger_job_get(l, b, &j));
	ASSERT_EQ(j.state, GP_JOB_DONE);
	gp_ledger_job_finish(&j);
	/* "The newest job" is the newest that ran, not the queued c. */
	ASSERT_OK(gp_ledger_job_set_size(l, b, 2, 10, 100));
	ASSERT_OK(gp_ledger_job_get(l, 0, &j));
	ASSERT_EQ(j.id, b);
	gp_ledger_job_finish(&j);

	ASSERT_OK(gp_ledger_job_list(l, &rows, &n));
	ASSERT_EQ(n, 3);
	ASSERT_EQ(rows[0].id, a);
	ASSERT_EQ(rows[0].state, GP_JOB_CANCELLED);
	ASSERT_EQ(rows[1].state, GP_JOB_DONE);
	ASSERT_EQ(rows[1].epochs, 2);
	ASSERT_STR_EQ(rows[1].model, "784-20-10");
	ASSERT_EQ(rows[2].state, GP_JOB_QUEUED);
	ASSERT_STR_EQ(rows[2].source, "/x/c.ini");
	ASSERT(isnan(rows[2].test_accuracy));
	free(rows);
	ASSERT_OK(gp_ledger_check(l));
	assert_totals(path);
	gp_ledger_close(l);

	/* A version 6 ledger: step 7 rebuilds jobs, with a CHECK that now
	 * takes 'queued', and keeps its rows, their evaluations and the
	 * foreign keys to them. */
	sql(path, "DELETE FROM jobs WHERE state <> 'done';"
		  "INSERT INTO evals VALUES (2, 0, 0.5, 0.75, 30);"
		  /* what steps 8 (credit) and 9 (totals) added, gone too */
		  "DROP TRIGGER totals_add; DROP TRIGGER totals_roll; "
		  "DROP TRIGGER totals_delete; DROP TABLE update_totals; "
		  "DROP INDEX updates_applied_at; "
		  "DROP TRIGGER credit_add; DROP TRIGGER credit_undo;"
		  "DROP TABLE credit; ALTER TABLE agents DROP COLUMN public_name;"
		  "CREATE TABLE old_jobs AS SELECT * FROM jobs;"
		  "DROP TABLE jobs;"
		  "CREATE TABLE jobs (id INTEGER PRIMARY KEY, spec TEXT NOT NULL,"
		  "  state TEXT NOT NULL"
		  "    CHECK (state IN ('created', 'running', 'done', 'failed')),"
		  "  created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
		  "  epochs INTEGER, minibatches_per_epoch INTEGER,"
		  "  samples_per_epoch INTEGER, model TEXT NOT NULL DEFAULT '');"
		  "INSERT INTO jobs SELECT id, spec, state, created_at, updated_at,"
		  "  epochs, minibatches_per_epoch, samples_per_epoch, model"
		  "  FROM old_jobs;"
		  "DROP TABLE old_jobs; PRAGMA user_version = 6");
	{
		char err[512] = "";

		if (gp_ledger_open(path, 0, &l, err, sizeof(err)) < 0)
			GP_TEST_FAIL("migrating: %s", err);
	}
	ASSERT_EQ(sql_int(path, "PRAGMA user_version"), LEDGER_VERSION);
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM evals WHERE job_id = 2"), 1);
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
	ASSERT_OK(gp_ledger_job_get(l, b, &j));
	ASSERT_EQ(j.state, GP_JOB_DONE);
	ASSERT_EQ(j.epochs, 2);
	ASSERT_STR_EQ(j.model, "784-20-10");
	ASSERT_STR_EQ(j.source, "");
	gp_ledger_job_finish(&j);
	ASSERT_OK(gp_ledger_job_queue(l, "[d]", "784-10", "/x/d.ini", 40, &a));
	ASSERT_OK(gp_ledger_check(l));
	assert_totals(path);
	gp_ledger_close(l);
}

/* The owner's view: members that left, connections counted, the job's
 * size, and the applied updates of a time window. */
/* Verification's record: trust counts add up per member, and a rollback
 * marks exactly the agent's applied rows of the minibatches named (with
 * the first one's row id), buffered or not, leaving them out of the
 * applied counts. */
/* What verification starts from: the members with mismatches on record
 * and not revoked (two: one mismatch; one: none; three: revoked); a
 * verifier created with the ledger counts two's next mismatch as its
 * second (verify_bans 2 revokes it, however often the coordinator
 * restarted in between) and picks all of two's clocks, not one's. */
static void trust_restored(struct gp_ledger *l, int64_t one, int64_t two)
{
	struct gp_job job = { .optimizer = GP_OPT_SGD_MOMENTUM,
			      .momentum = 0.9, .verify_rate = 0 };
	struct gp_pool pool = { .job = &job, .n_params = 4 };
	struct gp_member m1 = { .agent_id = (uint64_t)one, .clock = 1 };
	struct gp_member m2 = { .agent_id = (uint64_t)two, .clock = 1 };
	struct gp_verify_env env = { .ledger = l };
	struct gp_ledger_mismatches *rows = NULL;
	struct gp_ledger_agent a;
	struct gp_verify *v;
	int64_t three = 0;
	size_t n = 0;

	make_agent(&a, 3, "three");
	ASSERT_OK(gp_ledger_join(l, make_token(l, 0, 0), &a, 1, &three));
	ASSERT_OK(gp_ledger_trust_add(l, three, 0, 2, 0, 400));
	ASSERT_OK(gp_ledger_agent_revoke(l, three, 401));
	ASSERT_OK(gp_ledger_trust_mismatches(l, &rows, &n));
	ASSERT_EQ(n, 1);
	ASSERT_EQ(rows[0].agent_id, two);
	ASSERT_EQ(rows[0].mismatched, 1);
	free(rows);

	ASSERT_OK(gp_verify_create(&pool, &env, 1, &v));
	pool.verify = v;
	ASSERT(gp_verify_suspect(v, two));
	ASSERT(!gp_verify_suspect(v, one));
	ASSERT(!gp_verify_suspect(v, three));
	ASSERT(gp_verify_pick(&pool, &m2, 1, 32));
	ASSERT(!gp_verify_pick(&pool, &m1, 1, 32));
	ASSERT_EQ(gp_verify_note_mismatch(v, two), 2);
	ASSERT_EQ(gp_verify_note_mismatch(v, one), 1);
	gp_verify_destroy(v);
}

static void test_trust(void)
{
	struct gp_ledger *l;
	struct gp_ledger_agent a;
	struct gp_ledger_agent_row *rows = NULL;
	struct gp_ledger_update u;
	char path[256];
	int64_t job = 0, one = 0, two = 0, first = 0;
	const int64_t pairs[] = { 1, 4, 1, 2, 1, 9 };
	size_t n = 0;

	l = open_new("trust.db", path, sizeof(path));
	ASSERT_OK(gp_ledger_job_create(l, "spec", 1, &job));
	make_agent(&a, 1, "one");
	ASSERT_OK(gp_ledger_join(l, make_token(l, 0, 0), &a, 1, &one));
	make_agent(&a, 2, "two");
	ASSERT_OK(gp_ledger_join(l, make_token(l, 0, 0), &a, 1, &two));
	for (int i = 0; i < 6; i++) {
		u = upd(job, i < 3 ? one : two, i, i, GP_UPDATE_APPLIED);
		ASSERT_GE(gp_ledger_update_append(l, &u), 0);
		if (i == 1)
			ASSERT_EQ(gp_ledger_flush(l), 2);
	}
	/* two's minibatches 4 and 2 (one's), 9 (none): only 4 is two's. */
	ASSERT_EQ(gp_ledger_rollback_minibatches(l, job, two, pairs, 3), 1);
	ASSERT_EQ(gp_ledger_rollback_minibatches(l, job, two, pairs, 3), 0);
	first = sql_int(path, "SELECT id FROM updates WHERE minibatch = 4");
	ASSERT_EQ(sql_int(path, "SELECT rolled_back FROM updates WHERE "
			  "minibatch = 4"), first);
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM updates WHERE "
			  "rolled_back != 0"), 1);
	ASSERT_OK(gp_ledger_trust_add(l, two, 3, 0, 0, 100));
	ASSERT_OK(gp_ledger_trust_add(l, two, 0, 1, 1, 200));
	ASSERT_OK(gp_ledger_trust_add(l, one, 2, 0, 0, 300));
	ASSERT_EQ(gp_ledger_trust_add(l, one, -1, 0, 0, 300), -EINVAL);
	ASSERT_OK(gp_ledger_agent_list(l, job, &rows, &n));
	ASSERT_EQ(n, 2);
	ASSERT_EQ(rows[0].verified, 2);
	ASSERT_EQ(rows[0].mismatched, 0);
	ASSERT_EQ(rows[0].updates_applied, 3);
	ASSERT_EQ(rows[1].verified, 3);
	ASSERT_EQ(rows[1].mismatched, 1);
	ASSERT_EQ(rows[1].trust_rolled_back, 1);
	ASSERT_EQ(rows[1].updates_applied, 2);
	ASSERT_EQ(rows[1].updates_rolled_back, 1);
	free(rows);
	ASSERT_EQ(sql_int(path, "SELECT last_mismatch_at FROM agent_trust "
			  "WHERE agent_id = 2"), 200);
	ASSERT_EQ(sql_int(path, "SELECT last_verified_at FROM agent_trust "
			  "WHERE agent_id = 2"), 100);
	trust_restored(l, one, two);
	gp_ledger_close(l);
}

static void test_owner_view(void)
{
	struct gp_ledger *l;
	struct gp_ledger_agent a, got;
	struct gp_ledger_status st;
	struct gp_ledger_update u;
	char path[256];
	int64_t job = 0, one = 0, two = 0, samples = -1, mbs = -1;

	l = open_new("owner.db", path, sizeof(path));
	ASSERT_OK(gp_ledger_job_create(l, "spec", 1, &job));
	make_agent(&a, 1, "one");
	ASSERT_OK(gp_ledger_join(l, make_token(l, 0, 0), &a, 1, &one));
	make_agent(&a, 2, "two");
	ASSERT_OK(gp_ledger_join(l, make_token(l, 0, 0), &a, 1, &two));

	/* A replacing connection is counted before the old one's close. */
	ASSERT_EQ(gp_ledger_agent_connected_append(l, one, 1, 10), 0);
	ASSERT_EQ(gp_ledger_agent_connected_append(l, one, 1, 20), 0);
	ASSERT_EQ(gp_ledger_agent_connected_append(l, one, -1, 30), 0);
	ASSERT_EQ(gp_ledger_agent_connected_append(l, two, 1, 30), 0);
	ASSERT_EQ(gp_ledger_pending(l), 4);
	ASSERT_OK(gp_ledger_agent_get(l, one, &got));
	ASSERT_EQ(got.connections, 0); /* not before the flush */
	ASSERT_EQ(gp_ledger_flush(l), 4);
	ASSERT_OK(gp_ledger_agent_get(l, one, &got));
	ASSERT_EQ(got.connections, 1);
	ASSERT_EQ(got.last_seen, 30);
	ASSERT_OK(gp_ledger_status(l, job, &st));
	ASSERT_EQ(st.connected_agents, 2);
	ASSERT_EQ(st.live_agents, 2);
	/* Two leaves: it says so, then its connection closes; then it is
	 * back with a new connection, a member again, all in one flush, in
	 * the order they came. */
	ASSERT_OK(gp_ledger_agent_left_append(l, two, 40));
	ASSERT_OK(gp_ledger_agent_connected_append(l, two, -1, 41));
	ASSERT_OK(gp_ledger_agent_connected_append(l, two, -1, 42));
	ASSERT_EQ(gp_ledger_flush(l), 3);
	ASSERT_OK(gp_ledger_agent_get(l, two, &got));
	ASSERT_EQ(got.left_at, 40);
	ASSERT_EQ(got.connections, 0); /* not below 0 */
	ASSERT_OK(gp_ledger_status(l, job, &st));
	ASSERT_EQ(st.connected_agents, 1);
	ASSERT_EQ(st.live_agents, 1);
	ASSERT_OK(gp_ledger_agent_connected_append(l, two, 1, 50));
	ASSERT_OK(gp_ledger_agent_left_append(l, one, 51));
	ASSERT(gp_ledger_agent_left_append(l, one, 0) >= 0); /* cleared */
	/* An agent that is not there: nothing changes, nothing fails. */
	ASSERT_OK(gp_ledger_agent_left_append(l, 99, 1));
	ASSERT_OK(gp_ledger_agent_connected_append(l, 99, 1, 1));
	ASSERT_EQ(gp_ledger_flush(l), 5);
	ASSERT_OK(gp_ledger_agent_get(l, two, &got));
	ASSERT_EQ(got.left_at, 0);
	ASSERT_EQ(got.connections, 1);
	ASSERT_OK(gp_ledger_agent_get(l, one, &got));
	ASSERT_EQ(got.left_at, 0);
	/* A serve that starts counts nobody. */
	ASSERT_OK(gp_ledger_agents_disconnected(l));
	ASSERT_OK(gp_ledger_status(l, job, &st));
	ASSERT_EQ(st.connected_agents, 0);
	ASSERT_EQ(st.live_agents, 2);

	/* The size, once serve knows it. */
	ASSERT_EQ(st.epochs, 0);
	ASSERT_EQ(gp_ledger_job_set_size(l, job, 0, 469, 60000), -EINVAL);
	ASSERT_EQ(gp_ledger_job_set_size(l, 99, 2, 469, 60000), -ENOENT);
	ASSERT_OK(gp_ledger_job_set_size(l, job, 2, 469, 60000));
	ASSERT_OK(gp_ledger_status(l, job, &st));
	ASSERT_EQ(st.epochs, 2);
	ASSERT_EQ(st.minibatches_per_epoch, 469);
	ASSERT_EQ(st.samples_per_epoch, 60000);

	/* A window: applied rows with applied_at in [from, to), rolled-back
	 * and refused ones left out. */
	for (int i = 0; i < 6; i++) {
		u = upd(job, one, i, i, i == 5 ? GP_UPDATE_LATE :
						 GP_UPDATE_APPLIED);
		u.applied_at = 1000 + 100 * i;
		gp_ledger_update_append(l, &u);
	}
	ASSERT_EQ(gp_ledger_flush(l), 6);
	ASSERT_OK(gp_ledger_applied_between(l, job, 1100, 1400, &samples,
					    &mbs));
	ASSERT_EQ(mbs, 3);
	ASSERT_EQ(samples, 3 * 64);
	ASSERT_EQ(gp_ledger_rollback_after(l, job, 1, 3), 2); /* 3 and 4 */
	ASSERT_OK(gp_ledger_applied_between(l, job, 0, 10000, &samples, &mbs));
	ASSERT_EQ(mbs, 3);
	ASSERT_OK(gp_ledger_status(l, job, &st));
	ASSERT_EQ(st.updates_applied, 3);
	ASSERT_EQ(st.samples_applied, 3 * 64);
	ASSERT_EQ(st.updates_rolled_back, 2);
	ASSERT_EQ(st.minibatches_in_epoch, 3);
	ASSERT_OK(gp_ledger_check(l));
	assert_totals(path);
	gp_ledger_close(l);
}

static void test_second_reader(void)
{
	struct gp_ledger *w, *r = NULL;
	struct gp_ledger_agent a;
	struct gp_ledger_status s;
	struct gp_ledger_update u;
	sqlite3 *raw = NULL;
	char path[256], err[512] = "";
	int64_t job = 0, agent = 0;

	w = open_new("wal.db", path, sizeof(path));
	ASSERT_OK(gp_ledger_job_create(w, "spec", 1, &job));
	make_agent(&a, 1, "one");
	ASSERT_OK(gp_ledger_join(w, make_token(w, 0, 0), &a, 1, &agent));
	u = upd(job, agent, 1, 1, GP_UPDATE_APPLIED);
	gp_ledger_update_append(w, &u);
	ASSERT_EQ(gp_ledger_flush(w), 1);

	if (gp_ledger_open(path, GP_LEDGER_READONLY, &r, err, sizeof(err)) < 0)
		GP_TEST_FAIL("read-only open: %s", err);
	ASSERT_OK(gp_ledger_status(r, job, &s));
	ASSERT_EQ(s.updates_applied, 1);

	/* A writer in the middle of a transaction does not block readers. */
	ASSERT_EQ(sqlite3_open(path, &raw), SQLITE_OK);
	ASSERT_EQ(sqlite3_exec(raw, "BEGIN IMMEDIATE; DELETE FROM updates;",
			       NULL, NULL, NULL),
		  SQLITE_OK);
	ASSERT_OK(gp_ledger_status(r, job, &s));
	ASSERT_EQ(s.updates_applied, 1);
	ASSERT_EQ(sqlite3_exec(raw, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(raw);

	/* ... and sees what the writer commits. */
	u = upd(job, agent, 2, 2, GP_UPDATE_APPLIED);
	gp_ledger_update_append(w, &u);
	ASSERT_EQ(gp_ledger_flush(w), 1);
	ASSERT_OK(gp_ledger_status(r, job, &s));
	ASSERT_EQ(s.updates_applied, 2);

	/* The reader cannot write. */
	ASSERT_EQ(gp_ledger_update_append(r, &u), -EROFS);
	ASSERT_LT(gp_ledger_job_create(r, "x", 1, &job), 0);
	gp_ledger_close(r);
	gp_ledger_close(w);
}

/* Opens path expecting err_expected, and checks that the file is byte for
 * byte what it was and that no journal appeared next to it. */
static void expect_refused(const char *path, unsigned flags, int expected,
			   const char *words)
{
	struct gp_ledger *l = NULL;
	char err[512] = "", side[300];
	uint8_t *before, *after;
	size_t n_before, n_after;
	int r;

	before = read_all(path, &n_before);
	r = gp_ledger_open(path, flags, &l, err, sizeof(err));
	if (r != expected)
		GP_TEST_FAIL("%s: got %d (%s), want %d", path, r, err, expected);
	ASSERT(l == NULL);
	ASSERT_NOT_NULL(strstr(err, path));
	if (!strstr(err, words))
		GP_TEST_FAIL("error '%s' lacks '%s'", err, words);
	after = read_all(path, &n_after);
	ASSERT_EQ(n_before, n_after);
	ASSERT_MEM_EQ(before, after, n_before);
	snprintf(side, sizeof(side), "%s-wal", path);
	ASSERT(!exists(side));
	snprintf(side, sizeof(side), "%s-journal", path);
	ASSERT(!exists(side));
	free(before);
	free(after);
}

static void test_bad_files(void)
{
	struct gp_ledger *l;
	char path[256], good[256], err[512];
	uint8_t garbage[4096], *bytes;
	size_t len;
	int64_t job;

	for (size_t i = 0; i < sizeof(garbage); i++)
		garbage[i] = (uint8_t)(i * 131 + 7);
	path_in(path, sizeof(path), "garbage.db");
	write_all(path, garbage, sizeof(garbage));
	expect_refused(path, GP_LEDGER_CREATE, -EBADMSG, "not SQLite");
	expect_refused(path, GP_LEDGER_READONLY, -EBADMSG, "not SQLite");

	path_in(path, sizeof(path), "text.db");
	write_all(path, "hello\n", 6);
	expect_refused(path, GP_LEDGER_CREATE, -EBADMSG, "too short");

	/* Another program's SQLite database is left alone. */
	path_in(path, sizeof(path), "foreign.db");
	sql(path, "CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT);"
		  "INSERT INTO photos (name) VALUES ('cat');");
	expect_refused(path, GP_LEDGER_CREATE, -EBADMSG, "another program");

	/* A healthy ledger with enough pages to cut. */
	l = open_new("cut.db", good, sizeof(good));
	ASSERT_OK(gp_ledger_job_create(l, "spec", 1, &job));
	for (int i = 0; i < 50; i++) {
		char spec[2000];

		memset(spec, 'a' + i % 26, sizeof(spec) - 1);
		spec[sizeof(spec) - 1] = '\0';
		ASSERT_OK(gp_ledger_job_create(l, spec, 1, &job));
	}
	gp_ledger_close(l);
	bytes = read_all(good, &len);
	ASSERT_GT(len, 8192);

	path_in(path, sizeof(path), "truncated-page.db");
	write_all(path, bytes, len - 4096);
	expect_refused(path, GP_LEDGER_CREATE, -EBADMSG, "truncated");
	path_in(path, sizeof(path), "truncated-odd.db");
	write_all(path, bytes, len - 100);
	expect_refused(path, 0, -EBADMSG, "truncated");
	path_in(path, sizeof(path), "truncated-header.db");
	write_all(path, bytes, 60);
	expect_refused(path, GP_LEDGER_CREATE, -EBADMSG, "too short");

	/* Pages of garbage inside: found by the check at open. */
	path_in(path, sizeof(path), "rotten.db");
	memcpy(bytes + len / 2, garbage, 4096);
	write_all(path, bytes, len);
	expect_refused(path, GP_LEDGER_CHECK, -EBADMSG, path);
	free(bytes);

	/* A read-only open's check leaves the update log out (its pages
	 * cost the owner's commands a scan); read-write opens check it. */
	{
		struct gp_ledger_agent a;
		struct gp_ledger_update u;
		int64_t tok, agent, root, page;

		l = open_new("log.db", good, sizeof(good));
		ASSERT_OK(gp_ledger_job_create(l, "spec", 1, &job));
		tok = make_token(l, 0, 0);
		make_agent(&a, 1, "one");
		ASSERT_OK(gp_ledger_join(l, tok, &a, 1, &agent));
		for (int i = 0; i < 40; i++) {
			u = upd(job, agent, i, i, GP_UPDATE_APPLIED);
			ASSERT_GE(gp_ledger_update_append(l, &u), 0);
		}
		ASSERT_EQ(gp_ledger_flush(l), 40);
		gp_ledger_close(l);
		page = sql_int(good, "PRAGMA page_size");
		bytes = read_all(good, &len);
		/* The log's root page, its type byte made invalid. */
		root = sql_int(good, "SELECT rootpage FROM sqlite_schema "
				     "WHERE name = 'updates'");
		ASSERT_GT(root, 1);
		bytes[(root - 1) * page] = 0x55;
		path_in(path, sizeof(path), "rotten-log.db");
		write_all(path, bytes, len);
		ASSERT_OK(gp_ledger_open(path, GP_LEDGER_READONLY |
					 GP_LEDGER_CHECK, &l, err, sizeof(err)));
		gp_ledger_close(l);
		expect_refused(path, 0, -EBADMSG, path);
		free(bytes);
		/* Any other table's damage stops the read-only open too. */
		bytes = read_all(good, &len);
		root = sql_int(good, "SELECT rootpage FROM sqlite_schema "
				     "WHERE name = 'update_totals'");
		ASSERT_GT(root, 1);
		bytes[(root - 1) * page] = 0x55;
		path_in(path, sizeof(path), "rotten-totals.db");
		write_all(path, bytes, len);
		/* (Not expect_refused: a read-only reader of a WAL file
		 * makes its -shm, as SQLite's readers do.) */
		err[0] = '\0';
		ASSERT_EQ(gp_ledger_open(path, GP_LEDGER_READONLY |
					 GP_LEDGER_CHECK, &l, err, sizeof(err)),
			  -EBADMSG);
		ASSERT_NOT_NULL(strstr(err, "damaged"));
		free(bytes);
	}

	/* A newer schema is refused, not downgraded. */
	path_in(path, sizeof(path), "newer.db");
	l = open_new("newer.db", path, sizeof(path));
	gp_ledger_close(l);
	sql(path, "PRAGMA user_version = 99");
	l = NULL;
	ASSERT_EQ(gp_ledger_open(path, 0, &l, err, sizeof(err)), -ENOTSUP);
	ASSERT_NOT_NULL(strstr(err, "newer"));
	/* Read-only too: newer is -ENOTSUP (nothing can open it), not
	 * -EROFS (an older one, which a read-write open upgrades). */
	ASSERT_EQ(gp_ledger_open(path, GP_LEDGER_READONLY, &l, err, sizeof(err)),
		  -ENOTSUP);
	ASSERT_EQ(sql_int(path, "PRAGMA user_version"), 99);
	sql(path, "PRAGMA user_version = 1");
	ASSERT_EQ(gp_ledger_open(path, GP_LEDGER_READONLY, &l, err, sizeof(err)),
		  -EROFS);
	ASSERT_NOT_NULL(strstr(err, "older"));
	ASSERT_EQ(sql_int(path, "PRAGMA user_version"), 1);

	/* A symbolic link in the ledger's place, dangling or to a real
	 * file, is not followed: root must not be led to create or
	 * overwrite a file elsewhere. */
	{
		char target[256];

		path_in(target, sizeof(target), "elsewhere");
		path_in(path, sizeof(path), "dangling.db");
		ASSERT_OK(symlink(target, path));
		l = NULL;
		ASSERT_EQ(gp_ledger_open(path, GP_LEDGER_CREATE, &l, err,
					 sizeof(err)),
			  -ELOOP);
		ASSERT_NOT_NULL(strstr(err, "symbolic link"));
		ASSERT(!exists(target));
		write_all(target, "", 0);
		path_in(path, sizeof(path), "link.db");
		ASSERT_OK(symlink(target, path));
		ASSERT_EQ(gp_ledger_open(path, GP_LEDGER_CREATE, &l, err,
					 sizeof(err)),
			  -ELOOP);
		ASSERT(l == NULL);
		{
			size_t n;
			uint8_t *b = read_all(target, &n);

			ASSERT_EQ(n, 0); /* left as it was: empty */
			free(b);
		}
	}

	/* The healthy original still opens, with the check. */
	ASSERT_OK(gp_ledger_open(good, GP_LEDGER_CHECK, &l, err, sizeof(err)));
	ASSERT_OK(gp_ledger_check(l));
	gp_ledger_close(l);
}

/* The credit table against the update log: what the triggers keep equals
 * the log's totals under GP_LEDGER_CREDIT_RULE through buffered flushes,
 * checkpoint writes, rollbacks and several jobs; a damaged table is found
 * and rebuilt; a ledger of schema step 7 is filled from its log. */
static void credit_of(struct gp_ledger *l, int64_t agent, int64_t job,
		      int64_t *ret_updates, int64_t *ret_samples)
{
	struct gp_ledger_credit_row *rows = NULL;
	size_t n = 0;

	*ret_updates = *ret_samples = 0;
	ASSERT_OK(gp_ledger_credit_list(l, agent, &rows, &n));
	for (size_t i = 0; i < n; i++) {
		ASSERT_EQ(rows[i].agent_id, agent);
		if (rows[i].job_id == job) {
			*ret_updates = rows[i].updates;
			*ret_samples = rows[i].samples;
		}
	}
	free(rows);
}

static void test_credit(void)
{
	struct gp_ledger *l;
	struct gp_ledger_agent a;
	struct gp_ledger_update u;
	struct gp_ledger_credit_row *rows = NULL;
	char path[256];
	int64_t job = 0, other = 0, ann = 0, bob = 0, nu, ns, bad = -1;
	uint8_t *blob;
	size_t n = 0, blen;

	l = open_new("credit.db", path, sizeof(path));
	ASSERT_OK(gp_ledger_job_create(l, "spec", 1, &job));
	ASSERT_OK(gp_ledger_job_create(l, "other", 1, &other));
	make_agent(&a, 1, "ann-laptop");
	ASSERT_OK(gp_ledger_join(l, make_token(l, 0, 0), &a, 1, &ann));
	make_agent(&a, 2, "bob-desktop");
	ASSERT_OK(gp_ledger_join(l, make_token(l, 0, 0), &a, 2, &bob));
	gp_ledger_set_batching(l, 1000, 100000);

	/* Nothing yet: one row per member, without a job. */
	ASSERT_OK(gp_ledger_credit_list(l, 0, &rows, &n));
	ASSERT_EQ(n, 2);
	ASSERT_EQ(rows[0].job_id, 0);
	ASSERT_EQ(rows[0].updates, 0);
	ASSERT_STR_EQ(rows[0].public_name, "");
	ASSERT_STR_EQ(rows[1].name, "bob-desktop");
	free(rows);

	/* ann: 10 applied of 64 samples, one of 17; a duplicate, a late and
	 * a rejected row, which earn nothing. bob: 3 applied in the other
	 * job. Half flushed, half written by a checkpoint. */
	for (int i = 0; i < 10; i++) {
		u = upd(job, ann, i, i, GP_UPDATE_APPLIED);
		gp_ledger_update_append(l, &u);
		if (i == 4)
			ASSERT_EQ(gp_ledger_flush(l), 5);
	}
	u = upd(job, ann, 10, 10, GP_UPDATE_APPLIED);
	u.samples = 17;
	gp_ledger_update_append(l, &u);
	u = upd(job, ann, 11, 3, GP_UPDATE_DUPLICATE);
	gp_ledger_update_append(l, &u);
	u = upd(job, ann, 11, 11, GP_UPDATE_LATE);
	gp_ledger_update_append(l, &u);
	u = upd(job, ann, 11, 12, GP_UPDATE_REJECTED);
	gp_ledger_update_append(l, &u);
	for (int i = 0; i < 3; i++) {
		u = upd(other, bob, i, i, GP_UPDATE_APPLIED);
		gp_ledger_update_append(l, &u);
	}
	blob = make_blob(1, &blen);
	ASSERT_OK(gp_ledger_checkpoint_write(l, job, 1, 11, 5000, blob, blen,
					     3, NULL));
	free(blob);
	credit_of(l, ann, job, &nu, &ns);
	ASSERT_EQ(nu, 11);
	ASSERT_EQ(ns, 10 * 64 + 17);
	credit_of(l, bob, other, &nu, &ns);
	ASSERT_EQ(nu, 3);
	ASSERT_EQ(ns, 3 * 64);
	credit_of(l, bob, job, &nu, &ns);
	ASSERT_EQ(nu, 0);
	ASSERT_OK(gp_ledger_credit_check(l, false, &bad));
	ASSERT_EQ(bad, 0);

	/* A restore to a checkpoint of 8 updates undoes ann's last three
	 * (minibatches 8, 9, 10: 64 + 64 + 17 samples); redoing them with
	 * bob earns bob the credit. */
	ASSERT_EQ(gp_ledger_rollback_after(l, job, 1, 8), 3);
	credit_of(l, ann, job, &nu, &ns);
	ASSERT_EQ(nu, 8);
	ASSERT_EQ(ns, 8 * 64);
	for (int i = 8; i < 11; i++) {
		u = upd(job, bob, 20 + i, i, GP_UPDATE_APPLIED);
		gp_ledger_update_append(l, &u);
	}
	ASSERT_EQ(gp_ledger_flush(l), 3);
	credit_of(l, bob, job, &nu, &ns);
	ASSERT_EQ(nu, 3);
	ASSERT_OK(gp_ledger_credit_check(l, false, &bad));
	ASSERT_EQ(bad, 0);
	/* The table equals the log's totals, pair by pair. */
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM credit c WHERE "
			  "c.samples != (SELECT coalesce(sum(samples), 0) FROM "
			  "updates u WHERE u.agent_id = c.agent_id AND u.job_id "
			  "= c.job_id AND outcome = 'applied' AND rolled_back "
			  "= 0)"), 0);

	/* Public names: set, listed, cleared; an unknown member. */
	ASSERT_OK(gp_ledger_agent_set_public_name(l, ann, "Ann Z."));
	ASSERT_EQ(gp_ledger_agent_set_public_name(l, 999, "x"), -ENOENT);
	ASSERT_OK(gp_ledger_credit_list(l, ann, &rows, &n));
	ASSERT_EQ(n, 1);
	ASSERT_STR_EQ(rows[0].public_name, "Ann Z.");
	ASSERT_STR_EQ(rows[0].name, "ann-laptop");
	free(rows);
	ASSERT_OK(gp_ledger_agent_set_public_name(l, ann, ""));
	ASSERT_EQ(sql_int(path, "SELECT count(*) FROM agents WHERE "
			  "public_name IS NOT NULL"), 0);
	ASSERT_OK(gp_ledger_agent_set_public_name(l, bob, "Bob"));
	gp_ledger_close(l);

	/* Damage found and mended. */
	sql(path, "UPDATE credit SET samples = samples + 1 WHERE agent_id = 1;"
		  "DELETE FROM credit WHERE agent_id = 2 AND job_id = 2;");
	ASSERT_OK(gp_ledger_open(path, 0, &l, NULL, 0));
	ASSERT_OK(gp_ledger_credit_check(l, false, &bad));
	ASSERT_EQ(bad, 2);
	ASSERT_OK(gp_ledger_credit_check(l, true, &bad));
	ASSERT_EQ(bad, 2);
	ASSERT_OK(gp_ledger_credit_check(l, false, &bad));
	ASSERT_EQ(bad, 0);
	credit_of(l, bob, other, &nu, &ns);
	ASSERT_EQ(nu, 3);
	gp_ledger_close(l);

	/* A ledger of step 7 (before credit) gets its table from the log. */
	sql(path, "DROP TRIGGER totals_add; DROP TRIGGER totals_roll; "
		  "DROP TRIGGER totals_delete; DROP TABLE update_totals; "
		  "DROP INDEX updates_applied_at; "
		  "DROP TRIGGER credit_add; DROP TRIGGER credit_undo;"
		  "DROP TABLE credit; ALTER TABLE agents DROP COLUMN "
		  "public_name; PRAGMA user_version = 7;");
	ASSERT_OK(gp_ledger_open(path, 0, &l, NULL, 0));
	credit_of(l, ann, job, &nu, &ns);
	ASSERT_EQ(nu, 8);
	ASSERT_EQ(ns, 8 * 64);
	credit_of(l, bob, job, &nu, &ns);
	ASSERT_EQ(nu, 3);
	ASSERT_EQ(ns, 3 * 64);
	ASSERT_OK(gp_ledger_credit_check(l, false, &bad));
	ASSERT_EQ(bad, 0);
	gp_ledger_close(l);
}

int main(void)
{
	char cmd[128];

	snprintf(dir, sizeof(dir), "/tmp/gp-test-ledger-XXXXXX");
	ASSERT_NOT_NULL(mkdtemp(dir));
	test_create_reopen();
	test_tokens_and_join();
	test_token_race();
	test_update_log();
	test_threads();
	test_checkpoints();
	test_rollback();
	test_owner_view();
	test_job_queue();
	test_credit();
	test_trust();
	test_second_reader();
	test_bad_files();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("ledger: all tests passed\n");
	return 0;
}
