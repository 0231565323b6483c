/* common/db.c's statement helpers on a real file: parameters of every type
 * bound and read back, SQLite errors mapped to errno values with a message
 * naming the file, empty results, many rows, callbacks that stop or fail,
 * and statements that cannot be prepared or bound. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "db.h"
#include "test.h"

static char dir[64];

static const char *const migrations[] = {
	"CREATE TABLE t ("
	"  id INTEGER PRIMARY KEY,"
	"  name TEXT NOT NULL,"
	"  n INTEGER,"
	"  x REAL,"
	"  key BLOB);",
};

static const struct gp_db_schema schema = {
	.what = "test",
	.application_id = 0x47505454, /* "GPTT" */
	.migrations = migrations,
	.n_migrations = 1,
};

struct row {
	int64_t id;
	char name[16];
	int64_t n;
	bool n_null;
	double x;
	uint8_t key[4];
	bool have_key;
};

static int read_row(sqlite3_stmt *st, void *arg)
{
	struct row *r = arg;

	r->id = sqlite3_column_int64(st, 0);
	gp_db_column_text(st, 1, r->name, sizeof(r->name));
	r->n = sqlite3_column_int64(st, 2);
	r->n_null = sqlite3_column_type(st, 2) == SQLITE_NULL;
	r->x = gp_db_column_real(st, 3);
	r->have_key = gp_db_column_blob(st, 4, r->key, sizeof(r->key));
	return 0;
}

#define SELECT_ALL "SELECT id, name, n, x, key FROM t ORDER BY id"

static void open_db(struct gp_db_conn *c, const char *name)
{
	char path[128], err[256];

	memset(c, 0, sizeof(*c));
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	ASSERT_OK(gp_db_open(path, GP_DB_CREATE, &schema, &c->db, err,
			     sizeof(err)));
}

static void test_errno(void)
{
	ASSERT_EQ(gp_db_errno(SQLITE_OK), 0);
	ASSERT_EQ(gp_db_errno(SQLITE_DONE), 0);
	ASSERT_EQ(gp_db_errno(SQLITE_BUSY), -EBUSY);
	ASSERT_EQ(gp_db_errno(SQLITE_BUSY_SNAPSHOT), -EBUSY);
	ASSERT_EQ(gp_db_errno(SQLITE_LOCKED), -EBUSY);
	ASSERT_EQ(gp_db_errno(SQLITE_CORRUPT), -EBADMSG);
	ASSERT_EQ(gp_db_errno(SQLITE_NOTADB), -EBADMSG);
	ASSERT_EQ(gp_db_errno(SQLITE_NOMEM), -ENOMEM);
	ASSERT_EQ(gp_db_errno(SQLITE_READONLY), -EROFS);
	ASSERT_EQ(gp_db_errno(SQLITE_FULL), -ENOSPC);
	ASSERT_EQ(gp_db_errno(SQLITE_CANTOPEN), -ENOENT);
	ASSERT_EQ(gp_db_errno(SQLITE_CONSTRAINT_UNIQUE), -EEXIST);
	ASSERT_EQ(gp_db_errno(SQLITE_TOOBIG), -E2BIG);
	ASSERT_EQ(gp_db_errno(SQLITE_RANGE), -EINVAL);
	ASSERT_EQ(gp_db_errno(SQLITE_ERROR), -EIO);
}

/* Every parameter type, and its NULL forms, read back as written. */
static void test_bind_types(void)
{
	static const uint8_t key[4] = { 1, 2, 3, 4 };
	struct gp_db_conn c;
	struct row *rows = (struct row *)&c; /* overwritten on success only */
	size_t n = 99;

	open_db(&c, "types.db");
	ASSERT_EQ(gp_db_run(&c, "insert", "INSERT INTO t VALUES (?1, ?2, ?3, "
			    "?4, ?5)", "itifb", (int64_t)7, "seven",
			    (int64_t)-3, 2.5, key, sizeof(key)), 1);
	/* 'I' 0, 'F' NaN and 't' NULL bind NULL; an omitted ?5 stays NULL. */
	ASSERT_EQ(gp_db_run(&c, "insert", "INSERT INTO t VALUES (?1, ?2, ?3, "
			    "?4, ?5)", "itIF", (int64_t)8, "eight", (int64_t)0,
			    NAN), 1);
	ASSERT_EQ(gp_db_run(&c, "insert", "INSERT INTO t VALUES (?1, ?2, ?3, "
			    "?4, ?5)", "itiFb", (int64_t)9, "nine", (int64_t)5,
			    INFINITY, key, (size_t)3), 1);
	ASSERT_OK(gp_db_list(&c, "list", sizeof(*rows), read_row,
			     (void **)&rows, &n, SELECT_ALL, ""));
	ASSERT_EQ(n, 3);
	ASSERT_EQ(rows[0].id, 7);
	ASSERT_STR_EQ(rows[0].name, "seven");
	ASSERT_EQ(rows[0].n, -3);
	ASSERT_NEAR(rows[0].x, 2.5, 0);
	ASSERT(rows[0].have_key);
	ASSERT_MEM_EQ(rows[0].key, key, sizeof(key));
	ASSERT(rows[1].n_null);
	ASSERT(isnan(rows[1].x));
	ASSERT(!rows[1].have_key);
	ASSERT(isnan(rows[2].x));
	/* A 3-byte blob is not a 4-byte key: dst untouched. */
	ASSERT(!rows[2].have_key);
	ASSERT_EQ(rows[2].key[0], 0);
	free(rows);
	sqlite3_close(c.db);
}

static void test_empty(void)
{
	struct gp_db_conn c;
	struct row *rows = (struct row *)&c, one;
	size_t n = 99;

	open_db(&c, "empty.db");
	ASSERT_OK(gp_db_list(&c, "list", sizeof(*rows), read_row,
			     (void **)&rows, &n, SELECT_ALL, ""));
	ASSERT(rows == NULL);
	ASSERT_EQ(n, 0);
	ASSERT_EQ(gp_db_row(&c, "row", read_row, &one, SELECT_ALL, ""), 0);
	ASSERT_EQ(gp_db_each(&c, "each", read_row, &one, SELECT_ALL, ""), 0);
	/* An UPDATE that hits nothing changes 0 rows. */
	ASSERT_EQ(gp_db_run(&c, "update", "UPDATE t SET n = 1 WHERE id = ?1",
			    "i", (int64_t)1), 0);
	sqlite3_close(c.db);
}

struct stop {
	int seen, stop_at, fail_at;
};

static int count_row(sqlite3_stmt *st, void *arg)
{
	struct stop *s = arg;

	(void)st;
	s->seen++;
	if (s->seen == s->fail_at)
		return -ENOMEM;
	return s->seen == s->stop_at ? 42 : 0;
}

static int fail_third(sqlite3_stmt *st, void *arg)
{
	static int calls;

	read_row(st, arg);
	return ++calls % 3 == 0 ? -ENOMEM : 0;
}

static void test_many(void)
{
	const int many = 2500; /* past several doublings of the list */
	struct gp_db_conn c;
	struct row *rows = NULL, *keep = (struct row *)&c;
	struct stop s = { 0 };
	size_t n = 0;
	int64_t count = 0;

	open_db(&c, "many.db");
	ASSERT_OK(gp_db_exec(&c, "BEGIN"));
	for (int i = 0; i < many; i++) {
		char name[16];

		snprintf(name, sizeof(name), "r%d", i);
		ASSERT_EQ(gp_db_run(&c, "insert", "INSERT INTO t (name, n) "
				    "VALUES (?1, ?2)", "ti", name,
				    (int64_t)i * 3), 1);
	}
	ASSERT_OK(gp_db_exec(&c, "COMMIT"));
	ASSERT_EQ(gp_db_row(&c, "count", gp_db_int64, &count,
			    "SELECT count(*) FROM t", ""), 1);
	ASSERT_EQ(count, many);
	ASSERT_OK(gp_db_list(&c, "list", sizeof(*rows), read_row,
			     (void **)&rows, &n, SELECT_ALL, ""));
	ASSERT_EQ(n, many);
	for (int i = 0; i < many; i++) {
		char name[16];

		snprintf(name, sizeof(name), "r%d", i);
		ASSERT_STR_EQ(rows[i].name, name);
		ASSERT_EQ(rows[i].n, (int64_t)i * 3);
	}
	free(rows);

	/* gp_db_each stops where the callback says, with its value. */
	s.stop_at = 10;
	ASSERT_EQ(gp_db_each(&c, "each", count_row, &s, SELECT_ALL, ""), 42);
	ASSERT_EQ(s.seen, 10);
	/* gp_db_row reads one row only. */
	s = (struct stop){ 0 };
	ASSERT_EQ(gp_db_row(&c, "row", count_row, &s, SELECT_ALL, ""), 1);
	ASSERT_EQ(s.seen, 1);
	/* A callback's error ends the query with it; a list gives nothing
	 * back (and leaks nothing: the sanitizer build checks). */
	s = (struct stop){ .fail_at = 5 };
	ASSERT_EQ(gp_db_each(&c, "each", count_row, &s, SELECT_ALL, ""),
		  -ENOMEM);
	n = 7;
	ASSERT_EQ(gp_db_list(&c, "list", sizeof(*keep), fail_third,
			     (void **)&keep, &n, SELECT_ALL, ""),
		  -ENOMEM);
	ASSERT(keep == (struct row *)&c);
	ASSERT_EQ(n, 7);
	sqlite3_close(c.db);
}

static void test_errors(void)
{
	struct gp_db_conn c, other;
	struct row *rows = (struct row *)&c, one;
	size_t n = 5;
	char path[128];

	open_db(&c, "errors.db");
	snprintf(path, sizeof(path), "%s/errors.db", dir);

	/* A statement that does not compile: -EIO, the file and the cause. */
	ASSERT_EQ(gp_db_run(&c, "insert", "INSERT INTO nosuch VALUES (1)", ""),
		  -EIO);
	ASSERT(strstr(c.err, path) != NULL);
	ASSERT(strstr(c.err, "cannot prepare") != NULL);
	ASSERT(strstr(c.err, "nosuch") != NULL);
	ASSERT_EQ(gp_db_list(&c, "list", sizeof(*rows), read_row,
			     (void **)&rows, &n, "SELEC id FROM t", ""),
		  -EIO);
	ASSERT(rows == (struct row *)&c);
	ASSERT_EQ(n, 5);
	ASSERT_EQ(gp_db_row(&c, "row", read_row, &one, "SELECT nosuch FROM t",
			    ""), -EIO);

	/* Constraints: -EEXIST, with the caller's context. */
	ASSERT_EQ(gp_db_run(&c, "first", "INSERT INTO t (id, name) "
			    "VALUES (?1, ?2)", "it", (int64_t)1, "a"), 1);
	ASSERT_EQ(gp_db_run(&c, "cannot insert twice", "INSERT INTO t (id, "
			    "name) VALUES (?1, ?2)", "it", (int64_t)1, "b"),
		  -EEXIST);
	ASSERT(strstr(c.err, "cannot insert twice") != NULL);
	ASSERT_EQ(gp_db_run(&c, "null name", "INSERT INTO t (name) "
			    "VALUES (?1)", "t", (const char *)NULL), -EEXIST);

	/* Binding: more parameters than the statement has, a letter that
	 * means nothing, a statement that returns rows where none may. */
	ASSERT_EQ(gp_db_run(&c, "range", "UPDATE t SET n = ?1", "ii",
			    (int64_t)1, (int64_t)2), -EINVAL);
	ASSERT(strstr(c.err, "cannot bind") != NULL);
	ASSERT_EQ(gp_db_run(&c, "letter", "UPDATE t SET n = ?1", "q", 1),
		  -EINVAL);
	ASSERT(strstr(c.err, "'q'") != NULL);
	ASSERT_EQ(gp_db_run(&c, "rows", "SELECT id FROM t", ""), -EINVAL);

	/* Another connection holding the write lock: -EBUSY. */
	open_db(&other, "errors.db");
	ASSERT_OK(gp_db_exec(&other, "BEGIN IMMEDIATE"));
	sqlite3_busy_timeout(c.db, 0);
	ASSERT_EQ(gp_db_exec(&c, "BEGIN IMMEDIATE"), -EBUSY);
	gp_db_rollback(&other);
	ASSERT_OK(gp_db_exec(&c, "BEGIN IMMEDIATE"));
	gp_db_rollback(&c);
	sqlite3_close(other.db);

	gp_db_set_err(&c, "custom %d", 3);
	ASSERT(strstr(c.err, path) == c.err);
	ASSERT(strstr(c.err, ": custom 3") != NULL);
	sqlite3_close(c.db);
}

/* Whether another process sees a lock on path (a child asks F_GETLK for
 * a write lock over the whole file and beyond: SQLite's lock bytes lie at
 * 1 GiB). */
static bool locked_elsewhere(const char *path)
{
	int status = 0;
	pid_t pid = fork();

	ASSERT(pid >= 0);
	if (pid == 0) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		int fd = open(path, O_RDWR | O_CLOEXEC);

		_exit(fd >= 0 && fcntl(fd, F_GETLK, &fl) == 0 &&
		      fl.l_type != F_UNLCK ? 0 : 1);
	}
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static int read_count(sqlite3_stmt *st, void *arg)
{
	*(int64_t *)arg = sqlite3_column_int64(st, 0);
	return 0;
}

/* A second connection opened, used and closed in this process leaves the
 * first one's fcntl locks in place, so that another process cannot take
 * itself for the file's last connection and delete the WAL index under
 * it. gp_db_open once read the header with a descriptor of its own, whose
 * close(2) dropped every lock of the process on the file (serve and its
 * owner's page lost the ledger's WAL index that way). */
static void test_locks_kept(void)
{
	struct gp_db_conn c, ro;
	char path[128], err[256];
	int64_t n = 0;

	open_db(&c, "locks.db");
	snprintf(path, sizeof(path), "%s/locks.db", dir);
	ASSERT_EQ(gp_db_run(&c, "insert", "INSERT INTO t (name) VALUES (?1)",
			    "t", "a"), 1);
	ASSERT(locked_elsewhere(path));
	for (int i = 0; i < 2; i++) {
		memset(&ro, 0, sizeof(ro));
		ASSERT_OK(gp_db_open(path, i ? 0 : GP_DB_READONLY, &schema,
				     &ro.db, err, sizeof(err)));
		ASSERT_EQ(gp_db_row(&ro, "count", read_count, &n,
				    "SELECT count(*) FROM t", ""), 1);
		ASSERT_EQ(n, 1);
		sqlite3_close(ro.db);
		ASSERT(locked_elsewhere(path));
	}
	ASSERT_EQ(gp_db_run(&c, "insert", "INSERT INTO t (name) VALUES (?1)",
			    "t", "b"), 1);
	snprintf(path, sizeof(path), "%s/locks.db-shm", dir);
	ASSERT_EQ(access(path, F_OK), 0);
	sqlite3_close(c.db);
}

int main(void)
{
	char cmd[128];

	snprintf(dir, sizeof(dir), "/tmp/gp-test-db-XXXXXX");
	ASSERT_NOT_NULL(mkdtemp(dir));
	test_errno();
	test_bind_types();
	test_empty();
	test_many();
	test_errors();
	test_locks_kept();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("db: all tests passed\n");
	return 0;
}
