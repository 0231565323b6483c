/* The agent's connection to its pool: join (the first, token-keyed
 * handshake) and run (the member session: compute under SSP, reconnect with
 * backoff). Both run their own libuv loop on the calling thread. */
#ifndef GP_AGENT_SESSION_H
#define GP_AGENT_SESSION_H

#include <stdbool.h>
#include <stddef.h>

#include "backend.h"
#include "identity.h"
#include "msg.h"
#include "stats.h"
#include "token.h"

struct gp_session_config {
	struct gp_identity *id;             /* borrowed */
	struct gp_stats *stats;             /* borrowed; NULL: no accounting */
	struct gp_stats_membership pool;    /* run: the pool to work for */
	char name[GP_MSG_NAME_MAX + 1];
	struct gp_msg_device devices[GP_MSG_DEVICES_MAX];
	size_t n_devices;
	enum gp_backend_type backend;       /* the device that computes */
	int device_index;
	int threads;
	char device_name[64];               /* for the statistics */
	unsigned step_delay_ms;             /* test only: a slow laptop */
	bool exit_when_done;                /* run: exit once the job is done */
	unsigned connect_timeout_ms;        /* join: give up after this long */
};

/* Joins the pool the token names. On success the membership is written to
 * cfg->stats and 0 is returned; otherwise a clear error has been logged and
 * a negative errno is returned (-EKEYREJECTED: the coordinator refused;
 * -EKEYREVOKED: its key does not match the token; -ETIMEDOUT: no endpoint
 * answered). token is borrowed. */
int gp_session_join(const struct gp_session_config *cfg,
		    const struct gp_token *token);

/* Works for cfg->pool until SIGINT/SIGTERM, a revocation, or (with
 * exit_when_done) the end of the job. Returns 0 or a negative errno. */
int gp_session_run(const struct gp_session_config *cfg);

#endif
