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

#endif
