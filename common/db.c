#include "db.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

int gp_db_fail(sqlite3 *db, int rc, const char *context, char *err,
	       size_t errlen)
{
	const char *path = db ? sqlite3_db_filename(db, "main") : NULL;

	set_err(err, errlen, "%s: %s: %s", path && *path ? path : "(database)",
		context, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	return gp_db_errno(rc);
}

int gp_db_exec(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

	if (rc != SQLITE_OK)
		return gp_db_fail(db, rc, "statement failed", err, errlen);
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

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Checks the file header and size before SQLite sees the file, so that a
 * garbage or truncated file is refused with a precise reason instead of
 * whatever SQLite happens to notice first (or not at all: SQLite reads past
 * the end of a truncated file as zeroes and may only fail much later). */
static int check_file(const char *path, const struct stat *st,
		      const char *what, char *err, size_t errlen)
{
	unsigned char h[SQLITE_HEADER_SIZE];
	char wal_path[4096];
	struct stat wst;
	uint32_t page_size, pages;
	ssize_t n;
	int fd, have_wal;

	if (!S_ISREG(st->st_mode)) {
		set_err(err, errlen, "%s: not a regular file", path);
		return -EINVAL;
	}
	if (st->st_size == 0)
		return 0; /* SQLite's own representation of an empty database */
	if (st->st_size < SQLITE_HEADER_SIZE) {
		set_err(err, errlen,
			"%s: not a %s database: only %lld bytes, too short for "
			"an SQLite header (truncated?)",
			path, what, (long long)st->st_size);
		return -EBADMSG;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0) {
		set_err(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	n = pread(fd, h, sizeof(h), 0);
	close(fd);
	if (n != (ssize_t)sizeof(h)) {
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
	page_size = (uint32_t)h[16] << 8 | h[17];
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
	pages = be32(h + 28);
	if (!have_wal && pages != 0 && be32(h + 24) == be32(h + 92) &&
	    (uint64_t)st->st_size < (uint64_t)pages * page_size) {
		set_err(err, errlen,
			"%s: truncated: %lld bytes, but the header says %u "
			"pages of %u bytes",
			path, (long long)st->st_size, pages, page_size);
		return -EBADMSG;
	}
	return 0;
}

static int migrate(sqlite3 *db, const char *path,
		   const struct gp_db_schema *schema, char *err, size_t errlen)
{
	for (;;) {
		int64_t version = 0;
		char sql[64];
		int rc;

		/* IMMEDIATE takes the write lock first, so that two processes
		 * opening the same old file cannot both run a step. */
		rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
		if (rc != SQLITE_OK)
			return gp_db_fail(db, rc, "cannot start migration",
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

int gp_db_open(const char *path, unsigned flags,
	       const struct gp_db_schema *schema, sqlite3 **ret, char *err,
	       size_t errlen)
{
	const int readonly = !!(flags & GP_DB_READONLY);
	sqlite3 *db = NULL;
	struct stat st;
	int64_t app_id = 0, version = 0, objects = 0;
	int oflags, rc, r;
	int exists;

	if (!path || !schema || !ret)
		return -EINVAL;
	/* lstat, and no symbolic link: root runs some commands on a state
	 * directory its service user can write, and must not be led to
	 * create or overwrite a file elsewhere. */
	exists = lstat(path, &st) == 0;
	if (!exists && errno != ENOENT) {
		r = -errno;
		set_err(err, errlen, "%s: %s", path, strerror(errno));
		return r;
	}
	if (!exists && (readonly || !(flags & GP_DB_CREATE))) {
		set_err(err, errlen, "%s: no such %s database", path,
			schema->what);
		return -ENOENT;
	}
	if (exists && S_ISLNK(st.st_mode)) {
		set_err(err, errlen, "%s: a symbolic link, not a %s database: "
			"refusing to follow it", path, schema->what);
		return -ELOOP;
	}
	if (exists) {
		r = check_file(path, &st, schema->what, err, errlen);
		if (r < 0)
			return r;
	}

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

	/* Read only, before anything that writes: a foreign or damaged file
	 * must leave here exactly as it came. */
	rc = query_int(db, "PRAGMA application_id", &app_id);
	if (rc == SQLITE_OK)
		rc = query_int(db, "PRAGMA user_version", &version);
	if (rc == SQLITE_OK)
		rc = query_int(db, "SELECT count(*) FROM sqlite_master",
			       &objects);
	if (rc != SQLITE_OK) {
		r = gp_db_errno(rc);
		set_err(err, errlen, "%s: cannot read the %s database: %s",
			path, schema->what, sqlite3_errmsg(db));
		goto fail;
	}
	if (app_id != schema->application_id) {
		if (app_id != 0 || version != 0 || objects != 0) {
			set_err(err, errlen,
				"%s: not a %s database (it belongs to another "
				"program: application_id 0x%08x, %lld schema "
				"objects); refusing to touch it",
				path, schema->what, (unsigned)app_id,
				(long long)objects);
			r = -EBADMSG;
			goto fail;
		}
		if (readonly || !(flags & GP_DB_CREATE)) {
			set_err(err, errlen, "%s: empty file, no %s in it",
				path, schema->what);
			r = -ENOENT;
			goto fail;
		}
	}
	if (version > (int64_t)schema->n_migrations) {
		set_err(err, errlen,
			"%s: %s schema version %lld is newer than this "
			"program's %zu; use a newer gradpool",
			path, schema->what, (long long)version,
			schema->n_migrations);
		r = -ENOTSUP;
		goto fail;
	}
	if (readonly && version < (int64_t)schema->n_migrations) {
		set_err(err, errlen,
			"%s: %s schema version %lld is older than this "
			"program's %zu; open it read-write once to upgrade",
			path, schema->what, (long long)version,
			schema->n_migrations);
		r = -ENOTSUP;
		goto fail;
	}

	/* A damaged file must not be written to either (the WAL switch, a
	 * migration or the first insert would touch it): every read-write
	 * open checks first, read-only ones when asked. */
	if ((flags & GP_DB_CHECK) || !readonly) {
		r = gp_db_check(db, 1, err, errlen);
		if (r < 0)
			goto fail;
	}
	if (!readonly) {
		sqlite3_stmt *st_wal = NULL;
		const unsigned char *mode = NULL;
		int is_wal = 0;

		/* WAL lets the CLI read while serve writes; NORMAL is
		 * durable across process crashes, which is what we need
		 * (an OS crash may lose the last commits, never corrupt). */
		rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode = WAL", -1,
					&st_wal, NULL);
		if (rc == SQLITE_OK && (rc = sqlite3_step(st_wal)) == SQLITE_ROW) {
			mode = sqlite3_column_text(st_wal, 0);
			is_wal = mode && strcmp((const char *)mode, "wal") == 0;
			rc = SQLITE_OK;
		}
		sqlite3_finalize(st_wal);
		if (rc != SQLITE_OK) {
			r = gp_db_fail(db, rc, "cannot enable WAL", err,
				       errlen);
			goto fail;
		}
		if (!is_wal) {
			set_err(err, errlen,
				"%s: cannot switch to WAL journal mode", path);
			r = -EIO;
			goto fail;
		}
		r = gp_db_exec(db, "PRAGMA synchronous = NORMAL", err, errlen);
		if (r < 0)
			goto fail;
	}
	r = gp_db_exec(db, "PRAGMA foreign_keys = ON", err, errlen);
	if (r < 0)
		goto fail;
	if (!readonly) {
		r = migrate(db, path, schema, err, errlen);
		if (r < 0)
			goto fail;
	}
	*ret = db;
	return 0;

fail:
	sqlite3_close(db);
	return r;
}

int gp_db_check(sqlite3 *db, int quick, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	const char *path = sqlite3_db_filename(db, "main");
	int rc, r = 0;

	rc = sqlite3_prepare_v2(db,
				quick ? "PRAGMA quick_check(1)"
				      : "PRAGMA integrity_check(1)",
				-1, &st, NULL);
	if (rc != SQLITE_OK)
		return gp_db_fail(db, rc, "integrity check failed to run", err,
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
		r = gp_db_fail(db, rc, "integrity check failed", err, errlen);
	}
	sqlite3_finalize(st);
	return r;
}

void gp_db_set_err(sqlite3 *db, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!err || !errlen)
		return;
	n = snprintf(err, errlen, "%s: ", sqlite3_db_filename(db, "main"));
	if (n < 0 || (size_t)n >= errlen)
		n = 0;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

int gp_db_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, char *err,
		  size_t errlen)
{
	int rc = sqlite3_prepare_v2(db, sql, -1, st, NULL);

	if (rc != SQLITE_OK)
		return gp_db_fail(db, rc, "cannot prepare a statement", err,
				  errlen);
	return 0;
}

void gp_db_column_text(sqlite3_stmt *st, int i, char *buf, size_t size)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	snprintf(buf, size, "%s", t ? (const char *)t : "");
}
