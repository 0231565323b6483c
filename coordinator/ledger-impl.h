/* Private to the ledger (ledger.c, ledger-log.c): the handle, shared by
 * the file that owns the tables (ledger.c) and the one that owns the update
 * log's buffer and the checkpoints written together with it
 * (ledger-log.c). */
#ifndef GP_LEDGER_IMPL_H
#define GP_LEDGER_IMPL_H

#include <pthread.h>

#include "db.h"
#include "ledger.h"

/* Rows waiting for gp_ledger_flush(). */
struct gp_ledger_batch {
	struct gp_ledger_update *ups;
	size_t n_ups, cap_ups;
	struct gp_ledger_rejection *rejs;
	size_t n_rejs, cap_rejs;
};

/* flush_rows and flush_ms start at 256 rows and 1000 ms. */
struct gp_ledger {
	struct gp_db_conn c;
	pthread_mutex_t lock; /* c: the connection and its message */
	bool readonly;

	pthread_mutex_t buf_lock; /* pending, oldest_at, thresholds */
	struct gp_ledger_batch pending;
	int64_t oldest_at;
	size_t flush_rows;
	int64_t flush_ms;
	uint64_t dropped; /* rows the database refused (constraint) */
};

/* Frees the rows of b and empties it. */
void gp_ledger_batch_free(struct gp_ledger_batch *b);

/* "The newest job" (id 0) for status and export: the running one, else
 * the newest that ran (its size is recorded when it starts); one that
 * never ran only when nothing else exists. */
#define NEWEST_JOB_ORDER \
	"ORDER BY state <> 'running', epochs IS NULL, id DESC "

/* A jobs.state text as the enum (ledger-jobs.c); unknown text: failed. */
enum gp_ledger_job_state gp_ledger_parse_state(const unsigned char *s);

#endif
