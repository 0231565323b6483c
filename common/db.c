#include "db.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gp-endian.h"

/* The first 100 bytes of every SQLite file (https://sqlite.org/fileformat.html):
 *   offset  0 16  "SQLite format 3\0"
 *   offset 16  2  page size, big-endian (1 means 65536)
 *   offset 24  4  file change counter
 *   offset 28  4  size of the database in pages
 *   offset 92  4  version-valid-for: the size is valid when it equals 24..27 */
#define SQLITE_HEADER_SIZE 100
static const char sqlite_magic[16] = "SQLite format 3";

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int gp_db_errno(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
	case SQLITE_FORMAT:
		return -EBADMSG;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_CANTOPEN:
		return -ENOENT;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_CONSTRAINT:
		return -EEXIST;
	case SQLITE_TOOBIG:
		return -E2BIG;
	case SQLITE_MISUSE:
	case SQLITE_RANGE:
	case SQLITE_MISMATCH:
		return -EINVAL;
	default:
		return -EIO;
	}
}

/* The failure report into any buffer: gp_db_open has no connection struct
 * yet, only its caller's err. */
static int fail_to(sqlite3 *db, int rc, const char *context, char *err,
		   size_t errlen)
{
	const char *path = db ? sqlite3_db_filename(db, "main") : NULL;
	/* The extended code tells apart what one message covers (a "disk
	 * I/O error" is one of some thirty). */
	int ext = db ? sqlite3_extended_errcode(db) : rc;

	set_err(err, errlen, "%s: %s: %s (SQLite code %d)",
		path && *path ? path : "(database)", context,
		db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), ext);
	return gp_db_errno(rc);
}

static int exec_to(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

	if (rc != SQLITE_OK)
		return fail_to(db, rc, "statement failed", err, errlen);
	return 0;
}

/* Reads one integer from a statement such as "PRAGMA user_version". */
static int query_int(sqlite3 *db, const char *sql, int64_t *ret)
{
	sqlite3_stmt *st = NULL;
	int rc;

	rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		goto out;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*ret = sqlite3_column_int64(st, 0);
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE) {
		*ret = 0;
		rc = SQLITE_OK;
	}
out:
	sqlite3_finalize(st);
	return rc;
}

/* Checks the file's type and size before SQLite opens it, so that a
 * garbage or truncated file is refused with a precise reason instead of
 * whatever SQLite happens to notice first (or not at all: SQLite reads past
 * the end of a truncated file as zeroes and may only fail much later).
 * check_header does the rest once SQLite has the file open. */
static int check_file(const char *path, const struct stat *st,
		      const char *what, char *err, size_t errlen)
{
	if (!S_ISREG(st->st_mode)) {
		set_err(err, errlen, "%s: not a regular file", path);
		return -EINVAL;
	}
	if (st->st_size > 0 && st->st_size < SQLITE_HEADER_SIZE) {
		set_err(err, errlen,
			"%s: not a %s database: only %lld bytes, too short for "
			"an SQLite header (truncated?)",
			path, what, (long long)st->st_size);
		return -EBADMSG;
	}
	return 0;
}

/* The file's first bytes, read through SQLite's own descriptor, before
 * any query. Not through one of our own: fcntl locks belong to the
 * process, and close(2) of any descriptor of the file drops every one of
 * them, those of the process's other connections included ("How To
 * Corrupt An SQLite Database File", 2.2). The owner's page opens the
 * ledger inside serve once a page; when this read had its own descriptor,
 * serve's locks went with its close, and the next CLI command took itself
 * for the ledger's last connection and deleted the WAL index under serve
 * (seen in the owner-web test: every later page failed with
 * SQLITE_IOERR_SHORT_READ). */
static int check_header(sqlite3 *db, const char *path, const struct stat *st,
			const char *what, char *err, size_t errlen)
{
	unsigned char h[SQLITE_HEADER_SIZE];
	char wal_path[4096];
	struct stat wst;
	sqlite3_file *f = NULL;
	uint32_t page_size, pages;
	int have_wal;

	if (st->st_size == 0)
		return 0; /* SQLite's own representation of an empty database */
	if (sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &f) !=
		    SQLITE_OK || !f || !f->pMethods ||
	    f->pMethods->xRead(f, h, (int)sizeof(h), 0) != SQLITE_OK) {
		set_err(err, errlen, "%s: cannot read the header", path);
		return -EIO;
	}
	if (memcmp(h, sqlite_magic, sizeof(sqlite_magic)) != 0) {
		set_err(err, errlen,
			"%s: not a %s database: the file is not SQLite (bad "
			"magic)",
			path, what);
		return -EBADMSG;
	}
	page_size = gp_get_be16(h + 16);
	if (page_size == 1)
		page_size = 65536;
	if (page_size < 512 || (page_size & (page_size - 1)) != 0) {
		set_err(err, errlen, "%s: corrupt SQLite header (page size %u)",
			path, page_size);
		return -EBADMSG;
	}
	if ((uint64_t)st->st_size % page_size != 0) {
		set_err(err, errlen,
			"%s: truncated: %lld bytes is not a whole number of "
			"%u-byte pages",
			path, (long long)st->st_size, page_size);
		return -EBADMSG;
	}
	/* With a live write-ahead log the main file may legitimately lag
	 * behind its header; only judge the size when there is none. */
	snprintf(wal_path, sizeof(wal_path), "%s-wal", path);
	have_wal = stat(wal_path, &wst) == 0 && wst.st_size > 0;
	pages = gp_get_be32(h + 28);
	if (!have_wal && pages != 0 &&
	    gp_get_be32(h + 24) == gp_get_be32(h + 92) &&
	    (uint64_t)st->st_size < (uint64_t)pages * page_size) {
		set_err(err, errlen,
			"%s: truncated: %lld bytes, but the header says %u "
			"pages of %u bytes",
			path, (long long)st->st_size, pages, page_size);
		return -EBADMSG;
	}
	return 0;
}

static int check_to(sqlite3 *db, int quick, char *err, size_t errlen);
static int check_tables_to(sqlite3 *db, const char *const *skip, char *err,
			   size_t errlen);

static int migrate(sqlite3 *db, const char *path,
		   const struct gp_db_schema *schema, char *err, size_t errlen)
{
	for (;;) {
		int64_t version = 0, dangling = 0;
		char sql[64];
		int rc;

		/* IMMEDIATE takes the write lock first, so that two processes
		 * opening the same old file cannot both run a step. */
		rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			return fail_to(db, rc, "cannot start migration",
					  err, errlen);
		rc = query_int(db, "PRAGMA user_version", &version);
		if (rc != SQLITE_OK)
			goto fail;
		if (version >= (int64_t)schema->n_migrations) {
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			return 0;
		}
		rc = sqlite3_exec(db, schema->migrations[version], NULL, NULL,
				  NULL);
		if (rc != SQLITE_OK)
			goto fail;
		/* A step may rebuild a table that others reference (SQLite's
		 * "other kinds of table schema changes": the caller runs the
		 * steps with foreign keys off); nothing may dangle after it. */
		rc = query_int(db, "SELECT count(*) FROM pragma_foreign_key_check",
			       &dangling);
		if (rc == SQLITE_OK && dangling > 0)
			rc = SQLITE_CONSTRAINT_FOREIGNKEY;
		if (rc != SQLITE_OK)
			goto fail;
		if (version == 0) {
			snprintf(sql, sizeof(sql), "PRAGMA application_id = %d",
				 (int)schema->application_id);
			rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
			if (rc != SQLITE_OK)
				goto fail;
		}
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %lld",
			 (long long)version + 1);
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto fail;
		rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			goto fail;
		continue;
	fail:
		set_err(err, errlen, "%s: %s schema migration to version %lld "
			"failed: %s", path, schema->what, (long long)version + 1,
			sqlite3_errmsg(db));
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return gp_db_errno(rc);
	}
}

/* Looks at path before SQLite does: missing (and may it be created?), a
 * symbolic link, not a regular file, or a header that is not SQLite's.
 * Returns 1 when the file exists, 0 when it is to be created, or a negative
 * errno with err set. */
static int check_path(const char *path, unsigned flags,
		      const struct gp_db_schema *schema, struct stat *ret_st,
		      char *err, size_t errlen)
{
	const int readonly = !!(flags & GP_DB_READONLY);
	struct stat st;
	int r;

	/* lstat, and no symbolic link: root runs some commands on a state
	 * directory its service user can write, and must not be led to
	 * create or overwrite a file elsewhere. */
	if (lstat(path, &st) != 0) {
		if (errno != ENOENT) {
			r = -errno;
			set_err(err, errlen, "%s: %s", path, strerror(errno));
			return r;
		}
		if (readonly || !(flags & GP_DB_CREATE)) {
			set_err(err, errlen, "%s: no such %s database", path,
				schema->what);
			return -ENOENT;
		}
		return 0;
	}
	if (S_ISLNK(st.st_mode)) {
		set_err(err, errlen, "%s: a symbolic link, not a %s database: "
			"refusing to follow it", path, schema->what);
		return -ELOOP;
	}
	r = check_file(path, &st, schema->what, err, errlen);
	*ret_st = st;
	return r < 0 ? r : 1;
}

/* Reads, and writes nothing: is this our database, and of a schema version
 * this program can use? A foreign or damaged file must leave here exactly
 * as it came. Returns 0 or a negative errno with err set. */
static int check_identity(sqlite3 *db, const char *path, unsigned flags,
			  const struct gp_db_schema *schema, char *err,
			  size_t errlen)
{
	const int readonly = !!(flags & GP_DB_READONLY);
	int64_t app_id = 0, version = 0, objects = 0;
	int rc;

	rc = query_int(db, "PRAGMA application_id", &app_id);
	if (rc == SQLITE_OK)
		rc = query_int(db, "PRAGMA user_version", &version);
	if (rc == SQLITE_OK)
		rc = query_int(db, "SELECT count(*) FROM sqlite_master",
			       &objects);
	if (rc != SQLITE_OK) {
		set_err(err, errlen, "%s: cannot read the %s database: %s",
			path, schema->what, sqlite3_errmsg(db));
		return gp_db_errno(rc);
	}
	if (app_id != schema->application_id) {
		if (app_id != 0 || version != 0 || objects != 0) {
			set_err(err, errlen,
				"%s: not a %s database (it belongs to another "
				"program: application_id 0x%08x, %lld schema "
				"objects); refusing to touch it",
				path, schema->what, (unsigned)app_id,
				(long long)objects);
			return -EBADMSG;
		}
		if (readonly || !(flags & GP_DB_CREATE)) {
			set_err(err, errlen, "%s: empty file, no %s in it",
				path, schema->what);
			return -ENOENT;
		}
	}
	if (version > (int64_t)schema->n_migrations) {
		set_err(err, errlen,
			"%s: %s schema version %lld is newer than this "
			"program's %zu; use a newer gradpool",
			path, schema->what, (long long)version,
			schema->n_migrations);
		return -ENOTSUP;
	}
	if (readonly && version < (int64_t)schema->n_migrations) {
		set_err(err, errlen,
			"%s: %s schema version %lld is older than this "
			"program's %zu; open it read-write once to upgrade",
			path, schema->what, (long long)version,
			schema->n_migrations);
		return -EROFS;
	}
	return 0;
}

/* WAL lets the CLI read while serve writes; NORMAL is durable across
 * process crashes, which is what we need (an OS crash may lose the last
 * commits, never corrupt). */
static int set_journal(sqlite3 *db, const char *path, char *err,
		       size_t errlen)
{
	sqlite3_stmt *st = NULL;
	const unsigned char *mode = NULL;
	int is_wal = 0, rc;

	rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1, &st,
				NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		mode = sqlite3_column_text(st, 0);
		is_wal = mode && strcmp((const char *)mode, "wal") == 0;
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_OK)
		return fail_to(db, rc, "cannot enable WAL", err, errlen);
	if (!is_wal) {
		set_err(err, errlen, "%s: cannot switch to WAL journal mode",
			path);
		return -EIO;
	}
	return exec_to(db, "PRAGMA synchronous = NORMAL", err, errlen);
}

int gp_db_open(const char *path, unsigned flags,
	       const struct gp_db_schema *schema, sqlite3 **ret, char *err,
	       size_t errlen)
{
	const int readonly = !!(flags & GP_DB_READONLY);
	sqlite3 *db = NULL;
	struct stat st;
	int oflags, rc, r, exists;

	if (!path || !schema || !ret)
		return -EINVAL;
	exists = check_path(path, flags, schema, &st, err, errlen);
	if (exists < 0)
		return exists;

	oflags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
	if (!exists)
		oflags |= SQLITE_OPEN_CREATE;
	/* Each connection is used under the owner's own mutex; FULLMUTEX
	 * keeps SQLite safe even if a caller forgets. */
	oflags |= SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW;
	rc = sqlite3_open_v2(path, &db, oflags, NULL);
	if (rc != SQLITE_OK) {
		r = gp_db_errno(rc);
		set_err(err, errlen, "%s: cannot open: %s", path,
			db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, GP_DB_BUSY_TIMEOUT_MS);
	if (exists) {
		r = check_header(db, path, &st, schema->what, err, errlen);
		if (r < 0)
			goto fail;
	}

	r = check_identity(db, path, flags, schema, err, errlen);
	if (r < 0)
		goto fail;
	/* A damaged file must not be written to either (the WAL switch, a
	 * migration or the first insert would touch it): every read-write
	 * open checks first, read-only ones when asked. */
	if (readonly && (flags & GP_DB_CHECK) && schema->check_skip) {
		r = check_tables_to(db, schema->check_skip, err, errlen);
		if (r < 0)
			goto fail;
	} else if ((flags & GP_DB_CHECK) || !readonly) {
		r = check_to(db, 1, err, errlen);
		if (r < 0)
			goto fail;
	}
	if (!readonly) {
		r = set_journal(db, path, err, errlen);
		if (r < 0)
			goto fail;
	}
	/* Off while the schema steps run (the pragma is a no-op inside
	 * their transactions): a step that rebuilds a referenced table
	 * would otherwise cascade or fail on its DROP. */
	if (!readonly) {
		r = migrate(db, path, schema, err, errlen);
		if (r < 0)
			goto fail;
	}
	r = exec_to(db, "PRAGMA foreign_keys = ON", err, errlen);
	if (r < 0)
		goto fail;
	*ret = db;
	return 0;

fail:
	sqlite3_close(db);
	return r;
}

/* PRAGMA quick_check or integrity_check, of the whole file or (table not
 * NULL) of one table and its indexes. */
static int run_check(sqlite3 *db, int quick, const char *table, char *err,
		     size_t errlen)
{
	sqlite3_stmt *st = NULL;
	const char *path = sqlite3_db_filename(db, "main");
	char *sql;
	int rc, r = 0;

	if (table)
		sql = sqlite3_mprintf("PRAGMA %s(\"%w\")",
				      quick ? "quick_check" : "integrity_check",
				      table);
	else
		sql = sqlite3_mprintf("PRAGMA %s(1)",
				      quick ? "quick_check" : "integrity_check");
	if (!sql) {
		set_err(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	sqlite3_free(sql);
	if (rc != SQLITE_OK)
		return fail_to(db, rc, "integrity check failed to run", err,
				  errlen);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const unsigned char *msg = sqlite3_column_text(st, 0);

		if (!msg || strcmp((const char *)msg, "ok") != 0) {
			set_err(err, errlen, "%s: damaged: %s", path,
				msg ? (const char *)msg : "(no answer)");
			r = -EBADMSG;
		}
	} else {
		r = fail_to(db, rc, "integrity check failed", err, errlen);
	}
	sqlite3_finalize(st);
	return r;
}

static int check_to(sqlite3 *db, int quick, char *err, size_t errlen)
{
	return run_check(db, quick, NULL, err, errlen);
}

/* quick_check of every table but those in skip (and their indexes). */
static int check_tables_to(sqlite3 *db, const char *const *skip, char *err,
			   size_t errlen)
{
	sqlite3_stmt *st = NULL;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc, r = 0;

	rc = sqlite3_prepare_v2(db, "SELECT name FROM sqlite_schema "
				    "WHERE type = 'table' ORDER BY name",
				-1, &st, NULL);
	while (rc == SQLITE_OK || rc == SQLITE_ROW) {
		const char *name;
		bool skipped = false;

		rc = sqlite3_step(st);
		if (rc != SQLITE_ROW)
			break;
		name = (const char *)sqlite3_column_text(st, 0);
		for (size_t i = 0; name && skip[i]; i++)
			skipped |= strcmp(name, skip[i]) == 0;
		if (!name || skipped)
			continue;
		if (n == cap) {
			char **more = realloc(names, (cap ? 2 * cap : 16) *
						     sizeof(*names));

			if (!more) {
				r = -ENOMEM;
				break;
			}
			names = more;
			cap = cap ? 2 * cap : 16;
		}
		if (!(names[n] = strdup(name))) {
			r = -ENOMEM;
			break;
		}
		n++;
	}
	sqlite3_finalize(st);
	if (r == 0 && rc != SQLITE_DONE)
		r = fail_to(db, rc, "integrity check failed to run", err,
			    errlen);
	else if (r < 0)
		set_err(err, errlen, "%s: out of memory",
			sqlite3_db_filename(db, "main"));
	for (size_t i = 0; r == 0 && i < n; i++)
		r = run_check(db, 1, names[i], err, errlen);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return r;
}

void gp_db_column_text(sqlite3_stmt *st, int i, char *buf, size_t size)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	snprintf(buf, size, "%s", t ? (const char *)t : "");
}

int gp_db_int64(sqlite3_stmt *st, void *arg)
{
	*(int64_t *)arg = sqlite3_column_int64(st, 0);
	return 0;
}

double gp_db_column_real(sqlite3_stmt *st, int i)
{
	if (sqlite3_column_type(st, i) == SQLITE_NULL)
		return NAN;
	return sqlite3_column_double(st, i);
}

bool gp_db_column_blob(sqlite3_stmt *st, int i, void *dst, size_t size)
{
	const void *p = sqlite3_column_blob(st, i);

	if (!p || (size_t)sqlite3_column_bytes(st, i) != size)
		return false;
	memcpy(dst, p, size);
	return true;
}

/* ---- through a connection --------------------------------------------- */

int gp_db_fail(struct gp_db_conn *c, int rc, const char *context)
{
	return fail_to(c->db, rc, context, c->err, sizeof(c->err));
}

int gp_db_exec(struct gp_db_conn *c, const char *sql)
{
	return exec_to(c->db, sql, c->err, sizeof(c->err));
}

int gp_db_check(struct gp_db_conn *c, int quick)
{
	return check_to(c->db, quick, c->err, sizeof(c->err));
}

void gp_db_rollback(struct gp_db_conn *c)
{
	sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

void gp_db_set_err(struct gp_db_conn *c, const char *fmt, ...)
{
	const char *path = sqlite3_db_filename(c->db, "main");
	va_list ap;
	int n;

	n = snprintf(c->err, sizeof(c->err), "%s: ", path ? path : "");
	if (n < 0 || (size_t)n >= sizeof(c->err))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(c->err + n, sizeof(c->err) - (size_t)n, fmt, ap);
	va_end(ap);
}

int gp_db_prepare(struct gp_db_conn *c, const char *sql, sqlite3_stmt **ret)
{
	int rc = sqlite3_prepare_v2(c->db, sql, -1, ret, NULL);

	if (rc != SQLITE_OK) {
		sqlite3_finalize(*ret);
		*ret = NULL;
		return gp_db_fail(c, rc, "cannot prepare a statement");
	}
	return 0;
}

int gp_db_vbind(struct gp_db_conn *c, sqlite3_stmt *st, const char *types,
		va_list ap)
{
	int rc = SQLITE_OK;

	for (int i = 1; types && types[i - 1] && rc == SQLITE_OK; i++) {
		switch (types[i - 1]) {
		case 'i':
			rc = sqlite3_bind_int64(st, i, va_arg(ap, int64_t));
			break;
		case 'I': {
			int64_t v = va_arg(ap, int64_t);

			rc = v ? sqlite3_bind_int64(st, i, v)
			       : sqlite3_bind_null(st, i);
			break;
		}
		case 'f':
			rc = sqlite3_bind_double(st, i, va_arg(ap, double));
			break;
		case 'F': {
			double v = va_arg(ap, double);

			rc = isfinite(v) ? sqlite3_bind_double(st, i, v)
					 : sqlite3_bind_null(st, i);
			break;
		}
		case 't':
			rc = sqlite3_bind_text(st, i, va_arg(ap, const char *),
					       -1, SQLITE_STATIC);
			break;
		case 'b': {
			const void *p = va_arg(ap, const void *);
			size_t n = va_arg(ap, size_t);

			if (n > INT_MAX) {
				gp_db_set_err(c, "a %zu-byte blob is too big",
					      n);
				return -E2BIG;
			}
			rc = sqlite3_bind_blob(st, i, p, (int)n, SQLITE_STATIC);
			break;
		}
		default:
			gp_db_set_err(c, "bad parameter type '%c'",
				      types[i - 1]);
			return -EINVAL;
		}
	}
	if (rc != SQLITE_OK)
		return gp_db_fail(c, rc, "cannot bind a parameter");
	return 0;
}

int gp_db_bind(struct gp_db_conn *c, sqlite3_stmt *st, const char *types,
	       ...)
{
	va_list ap;
	int r;

	va_start(ap, types);
	r = gp_db_vbind(c, st, types, ap);
	va_end(ap);
	return r;
}

int gp_db_step_done(struct gp_db_conn *c, sqlite3_stmt *st,
		    const char *context)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE)
		return gp_db_fail(c, rc == SQLITE_ROW ? SQLITE_MISUSE : rc,
				  context);
	return 0;
}

/* Prepares and binds: the first half of every helper below. */
static int vstart(struct gp_db_conn *c, const char *sql, const char *types,
		  va_list ap, sqlite3_stmt **ret)
{
	int r = gp_db_prepare(c, sql, ret);

	if (r < 0)
		return r;
	r = gp_db_vbind(c, *ret, types, ap);
	if (r < 0) {
		sqlite3_finalize(*ret);
		*ret = NULL;
	}
	return r;
}

int gp_db_run(struct gp_db_conn *c, const char *context, const char *sql,
	      const char *types, ...)
{
	sqlite3_stmt *st = NULL;
	va_list ap;
	int r;

	va_start(ap, types);
	r = vstart(c, sql, types, ap, &st);
	va_end(ap);
	if (r < 0)
		return r;
	r = gp_db_step_done(c, st, context);
	if (r == 0)
		r = sqlite3_changes(c->db);
	sqlite3_finalize(st);
	return r;
}

/* The loop under gp_db_each, gp_db_row and gp_db_list; once stops after
 * the first row and returns 1 for it. */
static int vquery(struct gp_db_conn *c, const char *context, gp_db_row_fn *fn,
		  void *arg, bool once, const char *sql, const char *types,
		  va_list ap)
{
	sqlite3_stmt *st = NULL;
	int r, rc;

	r = vstart(c, sql, types, ap, &st);
	if (r < 0)
		return r;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		r = fn ? fn(st, arg) : 0;
		if (r < 0)
			goto out;
		if (once) {
			r = 1;
			goto out;
		}
		if (r > 0)
			goto out;
	}
	r = rc == SQLITE_DONE ? 0 : gp_db_fail(c, rc, context);
out:
	sqlite3_finalize(st);
	return r;
}

int gp_db_each(struct gp_db_conn *c, const char *context, gp_db_row_fn *fn,
	       void *arg, const char *sql, const char *types, ...)
{
	va_list ap;
	int r;

	va_start(ap, types);
	r = vquery(c, context, fn, arg, false, sql, types, ap);
	va_end(ap);
	return r;
}

int gp_db_row(struct gp_db_conn *c, const char *context, gp_db_row_fn *fn,
	      void *arg, const char *sql, const char *types, ...)
{
	va_list ap;
	int r;

	va_start(ap, types);
	r = vquery(c, context, fn, arg, true, sql, types, ap);
	va_end(ap);
	return r;
}

struct list {
	gp_db_row_fn *fn;
	size_t size;
	uint8_t *v;
	size_t n, cap;
};

static int list_row(sqlite3_stmt *st, void *arg)
{
	struct list *l = arg;
	uint8_t *elem;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		uint8_t *v;

		if (cap > SIZE_MAX / l->size)
			return -ENOMEM;
		v = realloc(l->v, cap * l->size);
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	elem = l->v + l->n * l->size;
	memset(elem, 0, l->size);
	l->n++;
	return l->fn(st, elem);
}

int gp_db_list(struct gp_db_conn *c, const char *context, size_t size,
	       gp_db_row_fn *fn, void **ret, size_t *ret_n, const char *sql,
	       const char *types, ...)
{
	struct list l = { .fn = fn, .size = size };
	va_list ap;
	int r;

	if (!fn || !size || !ret || !ret_n)
		return -EINVAL;
	va_start(ap, types);
	r = vquery(c, context, list_row, &l, false, sql, types, ap);
	va_end(ap);
	if (r < 0) {
		free(l.v);
		return r;
	}
	/* A callback that stops early ends the list there. */
	*ret = l.v;
	*ret_n = l.n;
	return 0;
}
