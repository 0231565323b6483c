/* Private to the ledger (ledger.c, ledger-log.c): the handle, shared by
 * the file that owns the tables (ledger.c) and the one that owns the update
 * log's buffer and the checkpoints written together with it
 * (ledger-log.c). */
#ifndef GP_LEDGER_IMPL_H
#define GP_LEDGER_IMPL_H

#include <pthread.h>

#include "db.h"
#include "ledger.h"

/* A change to an agent's row buffered by the loop thread
 * (gp_ledger_agent_connected_append, gp_ledger_agent_link_append). */
enum gp_ledger_note_kind {
	GP_NOTE_CONNECTED,    /* connections + 1, left_at cleared */
	GP_NOTE_DISCONNECTED, /* connections - 1 */
	GP_NOTE_LEFT,         /* left_at = at (0: cleared) */
	GP_NOTE_LINK,         /* link_bps, sync_ms */
	GP_NOTE_KINDS
};

/* Each note's statement, shared with the functions that write one at once
 * (ledger.c): ?1 the agent, ?2 the time, ?3 and ?4 the link's figures. */
#define GP_SQL_AGENT_CONNECTED                                              \
	"UPDATE agents SET connections = connections + 1, left_at = NULL, " \
	"last_seen = max(coalesce(last_seen, 0), ?2) WHERE id = ?1"
#define GP_SQL_AGENT_DISCONNECTED                                           \
	"UPDATE agents SET connections = max(connections - 1, 0), "         \
	"last_seen = max(coalesce(last_seen, 0), ?2) WHERE id = ?1"
#define GP_SQL_AGENT_LEFT "UPDATE agents SET left_at = nullif(?2, 0) WHERE id = ?1"
#define GP_SQL_AGENT_LINK                                                   \
	"INSERT OR REPLACE INTO agent_links (agent_id, link_bps, sync_ms, "  \
	"at) VALUES (?1, ?3, ?4, ?2)"

struct gp_ledger_agent_note {
	enum gp_ledger_note_kind kind;
	int64_t agent_id;
	int64_t at;
	double link_bps, sync_ms;
};

/* Rows waiting for gp_ledger_flush(). */
struct gp_ledger_batch {
	struct gp_ledger_update *ups;
	size_t n_ups, cap_ups;
	struct gp_ledger_rejection *rejs;
	size_t n_rejs, cap_rejs;
	struct gp_ledger_agent_note *notes;
	size_t n_notes, cap_notes;
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
