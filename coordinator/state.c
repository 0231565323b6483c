#include "state.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

int gp_coord_state_open(struct gp_coord_state *st, const char *dir,
			unsigned flags)
{
	char err[512];
	int r;

	memset(st, 0, sizeof(*st));
	snprintf(st->dir, sizeof(st->dir), "%s", dir);
	snprintf(st->key_path, sizeof(st->key_path), "%s/coordinator.key",
		 dir);
	snprintf(st->ledger_path, sizeof(st->ledger_path), "%s/ledger.db",
		 dir);
	r = gp_identity_load(st->key_path, &st->id, err, sizeof(err));
	if (r < 0) {
		if (r == -ENOENT)
			gp_error("%s (run 'gradpool-coordinator init --state %s' "
				 "first)", err, dir);
		else
			gp_error("%s", err);
		return r;
	}
	r = gp_identity_derive_key(st->id, "gp-token-hash", st->token_hash_key);
	if (r < 0)
		goto fail;
	r = gp_ledger_open(st->ledger_path, flags, &st->ledger, err,
			   sizeof(err));
	if (r < 0) {
		gp_error("%s", err);
		goto fail;
	}
	return 0;
fail:
	gp_coord_state_close(st);
	return r;
}

void gp_coord_state_close(struct gp_coord_state *st)
{
	gp_ledger_close(st->ledger);
	st->ledger = NULL;
	gp_identity_destroy(st->id);
	st->id = NULL;
	explicit_bzero(st->token_hash_key, sizeof(st->token_hash_key));
}
