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
 * program), -EBUSY, or another negative errno. */
int gp_db_open(const char *path, unsigned flags,
	       const struct gp_db_schema *schema, sqlite3 **ret, char *err,
	       size_t errlen);

/* Runs PRAGMA integrity_check (quick = 0) or quick_check (quick = 1). Returns
 * 0 when SQLite answers "ok", -EBADMSG with its first complaint in err
 * otherwise, or another negative errno when the check itself fails. */
int gp_db_check(sqlite3 *db, int quick, char *err, size_t errlen);

/* Executes one or more statements with no result rows. Returns 0 or a
 * negative errno; err receives SQLite's message. */
int gp_db_exec(sqlite3 *db, const char *sql, char *err, size_t errlen);

/* Writes "<path>: <context>: <sqlite message>" into err and returns
 * gp_db_errno(rc). For use at the point an SQLite call failed. */
int gp_db_fail(sqlite3 *db, int rc, const char *context, char *err,
	       size_t errlen);

/* Writes "FILE: " and the formatted sentence into err (errlen bytes), FILE
 * being db's main file. */
void gp_db_set_err(sqlite3 *db, char *err, size_t errlen, const char *fmt,
		   ...) __attribute__((format(printf, 4, 5)));

/* Prepares sql on db into *st. Returns 0, or gp_db_fail()'s errno with the
 * message in err. */
int gp_db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, char *err,
		  size_t errlen);

/* Copies text column i of the current row into buf (size bytes),
 * truncating; NULL reads as "". */
void gp_db_column_text(sqlite3_stmt *st, int i, char *buf, size_t size);

#endif
