/* The coordinator's state directory: coordinator.key (identity, 0600) and
 * ledger.db (SQLite, WAL). Shared by the CLI commands and serve. */
#ifndef GP_COORD_STATE_H
#define GP_COORD_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "identity.h"
#include "ledger.h"

/* Meta keys in the ledger. */
#define GP_META_ENDPOINTS "endpoints" /* comma-separated host:port list */
#define GP_META_LISTEN "listen"       /* default listen address */

struct gp_coord_state {
	char dir[512];
	char key_path[600];
	char ledger_path[600];
	struct gp_identity *id;
	struct gp_ledger *ledger;
	uint8_t token_hash_key[GP_KEY_SIZE]; /* derived from the identity */
};

/* Opens DIR (which init created). flags are gp_ledger_flags. On failure an
 * error naming the file and the problem has been logged. Returns 0 or a
 * negative errno. st is filled; close with gp_coord_state_close. */
int gp_coord_state_open(struct gp_coord_state *st, const char *dir,
			unsigned flags);
void gp_coord_state_close(struct gp_coord_state *st);

/* Meta keys: when the running serve started (Unix ms), for status's
 * rate, and its pid. */
#define GP_META_SERVE_STARTED "serve_started_at"
#define GP_META_SERVE_PID "serve_pid"

/* Takes the serve lock of DIR: an exclusive flock(2) on the directory
 * itself, held until the returned descriptor is closed or the process
 * ends, however it ends. One serve runs per state directory. Returns the
 * descriptor (owned by the caller), -EBUSY when another process holds the
 * lock (after retrying for a second: a CLI probe holds it a moment), or
 * another negative errno; logged. */
int gp_coord_state_lock(const char *dir);

/* Whether a serve holds DIR's lock: 1, 0, or a negative errno. */
int gp_coord_state_serve_running(const char *dir);

#endif
