/* The SQLite boundary shared by the coordinator's ledger (coordinator/ledger.c)
 * and the agent's statistics database (agent/stats.c). Nothing else in the
 * tree includes this header: SQLite stays behind those two modules.
 *
 * What it does for both: refuses files that are not SQLite databases, are
 * truncated, or belong to another program *before* anything is written to
 * them; sets WAL, synchronous=NORMAL, a busy timeout and foreign keys; runs
 * an ordered list of schema migrations tracked in PRAGMA user_version; and
 * turns SQLite result codes into negative errno values with a sentence that
 * names the file. */
#ifndef GP_DB_H
#define GP_DB_H

#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How long a connection waits on another process's lock before -EBUSY. */
#define GP_DB_BUSY_TIMEOUT_MS 5000

enum gp_db_open_flags {
	/* Create the file (or initialise an empty one) when it has no schema. */
	GP_DB_CREATE = 1u << 0,
	/* Open read-only: no migration, no pragma that writes. */
	GP_DB_READONLY = 1u << 1,
	/* Run PRAGMA quick_check before anything else (reads the whole file);
	 * read-write opens always do, so that a damaged file is never written. */
	GP_DB_CHECK = 1u << 2,
};

/* What a database is: the name used in messages ("ledger"), the
 * PRAGMA application_id that marks a file as ours, and the migration steps.
 * Step i (0-based) moves the schema from version i to version i + 1; the
 * current version is n_migrations. Each step runs in its own transaction. */
struct gp_db_schema {
	const char *what;
	int32_t application_id;
	const char *const *migrations;
	size_t n_migrations;
	/* NULL, or a NULL-terminated list of large log tables that a
	 * read-only open's check (GP_DB_CHECK) leaves out, so that the
	 * listing commands cost what they read, not the file's size: they
	 * read those tables only through totals and indexes, and SQLite
	 * still reports any damaged page they touch. Read-write opens and
	 * gp_db_check check everything. */
	const char *const *check_skip;
};

/* Maps an SQLite result code (primary or extended) to a negative errno:
 * BUSY/LOCKED -> -EBUSY, CORRUPT/NOTADB -> -EBADMSG, NOMEM -> -ENOMEM,
 * READONLY -> -EROFS, FULL -> -ENOSPC, CANTOPEN -> -ENOENT, PERM/AUTH ->
 * -EACCES, CONSTRAINT -> -EEXIST, TOOBIG -> -E2BIG, anything else -> -EIO.
 * SQLITE_OK, ROW and DONE map to 0. */
int gp_db_errno(int sqlite_rc);

/* Opens path as the database described by schema (borrowed; must outlive
 * the connection). On success *ret is a connection owned by the caller
 * (close it with sqlite3_close). On failure nothing is written to the file,
 * *ret is untouched and err (borrowed, errlen bytes, may be NULL) holds one
 * sentence naming the file and the problem. Returns 0 or:
 * -ENOENT (missing and no GP_DB_CREATE), -EBADMSG (not SQLite, truncated,
 * corrupt, or another program's database), -ENOTSUP (schema newer than this
 * program), -EROFS (GP_DB_READONLY and a schema older than this program's:
 * a read-write open upgrades it), -EBUSY, or another negative errno. */
int gp_db_open(const char *path, unsigned flags,
	       const struct gp_db_schema *schema, sqlite3 **ret, char *err,
	       size_t errlen);

/* The longest message a connection keeps. */
#define GP_DB_ERR_MAX 512

/* An open connection and the message of its last failure: what the ledger
 * and the statistics each embed, under their own mutex. The functions below
 * that take one write their sentence into err on failure, as
 * "FILE: context: SQLite's message", and return a negative errno. */
struct gp_db_conn {
	sqlite3 *db;
	char err[GP_DB_ERR_MAX];
};

/* Runs PRAGMA integrity_check (quick = 0) or quick_check (quick = 1). Returns
 * 0 when SQLite answers "ok", -EBADMSG with its first complaint in c->err
 * otherwise, or another negative errno when the check itself fails. */
int gp_db_check(struct gp_db_conn *c, int quick);

/* Executes one or more statements with no result rows and no parameters
 * (BEGIN IMMEDIATE, COMMIT). Returns 0 or a negative errno. */
int gp_db_exec(struct gp_db_conn *c, const char *sql);

/* Ends the open transaction, if any; SQLite may already have rolled it back
 * on its own, which is fine. c->err is left alone. */
void gp_db_rollback(struct gp_db_conn *c);

/* Writes "FILE: <context>: <sqlite message>" into c->err and returns
 * gp_db_errno(rc). For use at the point an SQLite call failed. */
int gp_db_fail(struct gp_db_conn *c, int rc, const char *context);

/* Writes "FILE: " and the formatted sentence into c->err. */
void gp_db_set_err(struct gp_db_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Prepares sql on c into *ret (owned by the caller: sqlite3_finalize).
 * Returns 0, or a negative errno with *ret NULL. */
int gp_db_prepare(struct gp_db_conn *c, const char *sql, sqlite3_stmt **ret);

/* Parameters. types has one letter per parameter, ?1 first, and the
 * variable arguments follow it with exactly these C types (cast literals):
 *   'i' int64_t              'I' int64_t, 0 binds NULL ("none", "never")
 *   'f' double               'F' double, NaN or infinity binds NULL
 *   't' const char *, NUL-terminated; NULL binds NULL
 *   'b' const void *, size_t: a blob of that many bytes
 * Pointers are borrowed and must stay valid until the statement is reset or
 * finalized. Parameters beyond types stay NULL. An unknown letter is a
 * programmer's error (-EINVAL). */
int gp_db_bind(struct gp_db_conn *c, sqlite3_stmt *st, const char *types,
	       ...);
int gp_db_vbind(struct gp_db_conn *c, sqlite3_stmt *st, const char *types,
		va_list ap);

/* Steps a statement that returns no row (a row is SQLITE_MISUSE). Returns 0
 * or a negative errno with context in c->err. */
int gp_db_step_done(struct gp_db_conn *c, sqlite3_stmt *st,
		    const char *context);

/* Prepares sql, binds the arguments as gp_db_bind does, steps it once
 * (it must return no row), finalizes it. Returns the number of rows it
 * changed (sqlite3_changes, >= 0) or a negative errno with context in
 * c->err. */
int gp_db_run(struct gp_db_conn *c, const char *context, const char *sql,
	      const char *types, ...);

/* Reads the current row of st (borrowed) into arg. Returns 0 to go on,
 * > 0 to stop early (gp_db_each returns that value), or a negative errno to
 * fail (c->err is then the callback's to set, or left as it was). */
typedef int gp_db_row_fn(sqlite3_stmt *st, void *arg);

/* The query loop: prepares sql, binds the arguments (as gp_db_bind), calls
 * fn(st, arg) on each result row, finalizes. Returns 0 when every row was
 * read, fn's positive value when it stopped early, or a negative errno
 * (fn's, or SQLite's mapped with context in c->err). */
int gp_db_each(struct gp_db_conn *c, const char *context, gp_db_row_fn *fn,
	       void *arg, const char *sql, const char *types, ...);

/* As gp_db_each, for at most one row: returns 1 when there was a row (fn,
 * which may be NULL, has read it), 0 when there was none, or a negative
 * errno. */
int gp_db_row(struct gp_db_conn *c, const char *context, gp_db_row_fn *fn,
	      void *arg, const char *sql, const char *types, ...);

/* As gp_db_each, collecting the rows into an array: each element (size
 * bytes) is zeroed, then fn(st, element) fills it. On success *ret is a
 * malloc'd array owned by the caller (free()), NULL when there was no row,
 * and *ret_n its length. On failure neither is written. Returns 0 or a
 * negative errno (-ENOMEM, fn's, or SQLite's with context in c->err). */
int gp_db_list(struct gp_db_conn *c, const char *context, size_t size,
	       gp_db_row_fn *fn, void **ret, size_t *ret_n, const char *sql,
	       const char *types, ...);

/* A gp_db_row_fn for the common one-number query (count(*), max(seq)):
 * reads column 0 into the int64_t arg points to. */
int gp_db_int64(sqlite3_stmt *st, void *arg);

/* Copies text column i of the current row into buf (size bytes),
 * truncating; NULL reads as "". */
void gp_db_column_text(sqlite3_stmt *st, int i, char *buf, size_t size);

/* Reads real column i; NULL reads as NaN (the 'F' parameter in reverse). */
double gp_db_column_real(sqlite3_stmt *st, int i);

/* Copies blob column i into dst when it holds exactly size bytes and
 * returns true; leaves dst alone and returns false otherwise (a CHECK
 * constraint promises the size, a damaged file promises nothing). */
bool gp_db_column_blob(sqlite3_stmt *st, int i, void *dst, size_t size);

#endif
