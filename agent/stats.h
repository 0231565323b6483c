/* The agent's own statistics database (SQLite, WAL): the pools it belongs
 * to and what it contributed, per day, pool and device, so that
 * `gradpool-agent stats` answers without asking any coordinator.
 * docs/architecture.md ("Ledger", agent part) describes the tables.
 *
 * Threads: every function is safe from any thread (a mutex guards the
 * connection). gp_stats_add() only touches memory; the other functions may
 * block on the disk and belong on a worker thread, not the loop thread.
 *
 * Days are UTC calendar days ("2026-11-27") of the time a contribution was
 * recorded. */
#ifndef GP_STATS_H
#define GP_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct gp_stats;

#define GP_STATS_KEY_SIZE 32
#define GP_STATS_POOL_MAX 64	   /* pool id (e.g. key fingerprint), with NUL */
#define GP_STATS_DEVICE_MAX 64	   /* device name, with NUL */
#define GP_STATS_ENDPOINTS_MAX 512 /* "host:port,host:port", with NUL */
#define GP_STATS_DAY_LEN 10	   /* "YYYY-MM-DD" */

enum gp_stats_flags {
	GP_STATS_CREATE = 1u << 0,
	GP_STATS_READONLY = 1u << 1,
	GP_STATS_CHECK = 1u << 2,
};

/* Opens (creating or migrating) the database at path, refusing without a
 * write a file that is not SQLite, is truncated or corrupt, belongs to
 * another program or has a newer schema. *ret is owned by the caller
 * (gp_stats_close). err (borrowed, errlen bytes, may be NULL) receives one
 * sentence naming the file. Returns 0, -ENOENT, -EBADMSG, -ENOTSUP (a newer
 * schema), -EROFS (read-only and an older schema), -EBUSY or another
 * negative errno. */
int gp_stats_open(const char *path, unsigned flags, struct gp_stats **ret,
		  char *err, size_t errlen);

/* Flushes pending contributions, closes and frees. NULL is a no-op. */
void gp_stats_close(struct gp_stats *s);

/* The last failure's message, owned by s. Never NULL. */
const char *gp_stats_error(struct gp_stats *s);

/* ---- memberships ------------------------------------------------------- */

/* What a pool's coordinator last told of its job (STATS): the name the
 * volunteer knows the pool by, where the database has only the key's
 * fingerprint. name[0] == '\0': never told (not connected since the
 * agent learned to keep it, or an older coordinator). */
#define GP_STATS_JOB_NAME_MAX 65   /* the job's name, with NUL */
struct gp_stats_job {
	char name[GP_STATS_JOB_NAME_MAX];
	int64_t id;
	char state[16];       /* "training", "done", "none" */
	uint32_t epoch, epochs; /* epoch from 1; epochs 0: unknown */
	double progress;      /* share done, 0..1 */
	double accuracy;      /* last test accuracy, 0..1; < 0: none yet */
	int64_t told_at;      /* unix seconds */
};

struct gp_stats_membership {
	char pool[GP_STATS_POOL_MAX];
	uint8_t coordinator_key[GP_STATS_KEY_SIZE];
	char endpoints[GP_STATS_ENDPOINTS_MAX];
	int64_t agent_id; /* assigned by the coordinator; 0 if not yet */
	int64_t joined_at, left_at; /* unix seconds; left_at 0: member */
	struct gp_stats_job job;    /* the last told; name "": none */
};

/* Records or updates a membership (borrowed), keyed by pool. Joining again
 * clears left_at. */
int gp_stats_membership_set(struct gp_stats *s,
			    const struct gp_stats_membership *m);

/* Marks a pool left at `at`. Returns 0 or -ENOENT. */
int gp_stats_membership_leave(struct gp_stats *s, const char *pool,
			      int64_t at);

/* Notes what the coordinator of pool (borrowed) told of its job (job,
 * borrowed). Memory only, like gp_stats_add: the next gp_stats_flush
 * writes it to the membership's row, and gp_stats_membership_list returns
 * it meanwhile. Returns 0, -EINVAL or -EROFS (read-only). */
int gp_stats_job_note(struct gp_stats *s, const char *pool,
		      const struct gp_stats_job *job);

/* All memberships by join time, each with its job as last noted (a
 * pending note over the stored one): *ret malloc'd, owned by the
 * caller. */
int gp_stats_membership_list(struct gp_stats *s,
			     struct gp_stats_membership **ret, size_t *ret_n);

/* ---- the pause ---------------------------------------------------------- */

/* The volunteer's pause outlives a restart: `until` is the unix second it
 * ends at, GP_STATS_PAUSE_FOREVER until `resume`, 0 not paused. set
 * returns 0 or a negative errno (-EINVAL for a negative until); get writes
 * *ret_until (0 when none was ever set) and returns 0 or a negative
 * errno. A pause whose end has passed is the caller's to ignore. */
#define GP_STATS_PAUSE_FOREVER INT64_MAX
int gp_stats_pause_set(struct gp_stats *s, int64_t until);
int gp_stats_pause_get(struct gp_stats *s, int64_t *ret_until);

/* ---- the public name ---------------------------------------------------- */

/* The name the volunteer set with `gradpool-agent name`, which overrides
 * agent.conf's public_name: set stores name (borrowed; "" means "not
 * public", whatever agent.conf says), NULL forgets the override. get
 * copies it into buf (size bytes) and returns 1, or 0 when none was set
 * (buf untouched), or a negative errno. The caller checks names
 * (gp_msg_public_name_check()). */
int gp_stats_public_name_set(struct gp_stats *s, const char *name);
int gp_stats_public_name_get(struct gp_stats *s, char *buf, size_t size);

/* ---- contributions ----------------------------------------------------- */

struct gp_stats_delta {
	int64_t at; /* unix seconds; picks the day */
	char pool[GP_STATS_POOL_MAX];
	char device[GP_STATS_DEVICE_MAX]; /* "" for traffic not tied to one */
	int64_t minibatches, samples;
	double gflop, compute_seconds;
	int64_t bytes_up, bytes_down;
};

/* Adds a delta (borrowed) to the in-memory sums; no SQLite. Returns 1 when
 * a flush is due (the oldest pending sum is flush_s old at d->at, or 64
 * distinct day/pool/device keys are pending), 0 otherwise, -EINVAL for a
 * negative or non-finite amount, -EROFS when read-only. */
int gp_stats_add(struct gp_stats *s, const struct gp_stats_delta *d);

/* Sets how old pending sums may grow before gp_stats_add says "flush"
 * (default 10 s). */
void gp_stats_set_flush_interval(struct gp_stats *s, int64_t flush_s);

/* Writes every pending sum in one transaction, as upserts that add to the
 * stored rows, with the pending job notes. On failure the sums and notes
 * stay pending. Returns the number of rows written or a negative errno. */
int gp_stats_flush(struct gp_stats *s);

/* ---- queries ----------------------------------------------------------- */

enum gp_stats_group {
	GP_STATS_BY_DAY = 1u << 0,
	GP_STATS_BY_POOL = 1u << 1,
	GP_STATS_BY_DEVICE = 1u << 2,
};

/* One row of a view; the columns not grouped by are empty strings. */
struct gp_stats_row {
	char day[GP_STATS_DAY_LEN + 1];
	char pool[GP_STATS_POOL_MAX];
	char device[GP_STATS_DEVICE_MAX];
	int64_t minibatches, samples;
	double gflop, compute_seconds;
	int64_t bytes_up, bytes_down;
};

/* Sums grouped by any combination of gp_stats_group bits (0: one row of
 * totals, present even when empty), restricted to days >= since_day
 * ("YYYY-MM-DD", borrowed; NULL for all), ordered by day, pool, device.
 * Pending (unflushed) sums are not included. *ret malloc'd, owned by the
 * caller. */
int gp_stats_query(struct gp_stats *s, unsigned group, const char *since_day,
		   struct gp_stats_row **ret, size_t *ret_n);

/* Bytes sent on the UTC day of unix time t, over every pool: the stored
 * rows plus the pending (unflushed) sums, so that a cap on them (the
 * agent's max_upload_mib_per_day) sees every byte accounted so far. Writes
 * *ret only on success. Returns 0 or a negative errno. */
int gp_stats_day_bytes_up(struct gp_stats *s, int64_t t, int64_t *ret);

/* Writes the UTC day of unix time t as "YYYY-MM-DD" into day. */
void gp_stats_day(int64_t t, char day[GP_STATS_DAY_LEN + 1]);

/* Human forms for tables and charts, written into buf (borrowed, size
 * bytes, at least 16), which is returned. A count with an SI suffix and
 * three significant digits ("950", "12.5k", "1.25M", "3.1G"); a duration
 * in the unit that reads best ("5.0 s", "3.2 min", "1.25 h", "130 h"). */
#define GP_STATS_HUMAN_MAX 24
const char *gp_stats_human_count(double v, char *buf, size_t size);
const char *gp_stats_human_duration(double seconds, char *buf, size_t size);

/* The name a volunteer knows pool (a fingerprint, borrowed) by, from
 * pools (n_pools, borrowed; may be NULL): the job its coordinator last
 * told and the address it was joined at, "fashion-mlp at
 * 127.0.0.1:7170", into buf (size bytes), which is returned; "" when
 * neither is known. */
const char *gp_stats_pool_name(const char *pool,
			       const struct gp_stats_membership *pools,
			       size_t n_pools, char *buf, size_t size);

/* Human table: one line per row with the grouped columns, then a total
 * line; grouped by pool, a pool is named (gp_stats_pool_name) with its
 * fingerprint after. rows (n, borrowed) come from gp_stats_query with the
 * same group; total (borrowed) from gp_stats_query with group 0; pools
 * (n_pools, borrowed, may be NULL) from gp_stats_membership_list. Returns
 * 0 or -EIO. */
int gp_stats_format_table(FILE *out, unsigned group,
			  const struct gp_stats_row *rows, size_t n,
			  const struct gp_stats_row *total,
			  const struct gp_stats_membership *pools,
			  size_t n_pools);

/* JSON, one object:
 *   {"total": {ROW}, "rows": [{ROW}, ...], "pools": [{MEMBERSHIP}, ...]}
 * where ROW holds "day", "pool", "pool_name" (with "pool"), "device" (only
 * those grouped by), then "minibatches", "samples", "gflop",
 * "compute_seconds", "bytes_up", "bytes_down"; MEMBERSHIP holds "pool",
 * "name", "coordinator_key" (hex), "endpoints", "agent_id", "joined_at",
 * "left_at" (null while a member) and "job" (gp_stats_job_json, null when
 * never told).
 * Strings are escaped; invalid UTF-8 becomes U+FFFD. Returns 0 or -EIO. */
int gp_stats_format_json(FILE *out, unsigned group,
			 const struct gp_stats_row *rows, size_t n,
			 const struct gp_stats_row *total,
			 const struct gp_stats_membership *pools,
			 size_t n_pools);

/* A membership's job (borrowed) as one JSON object, or null when never
 * told: {"name", "id", "state", "epoch", "epochs", "progress",
 * "test_accuracy" (null before an evaluation), "told_at"}. */
void gp_stats_job_json(FILE *out, const struct gp_stats_job *job);

#endif
