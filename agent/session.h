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
#include "policy.h"
#include "stats.h"
#include "testhooks.h"
#include "token.h"

struct gp_session_config {
	struct gp_identity *id;             /* borrowed */
	struct gp_stats *stats;             /* borrowed; NULL: no accounting */
	struct gp_stats_membership pool;    /* leave: the pool to say bye to */
	char name[GP_MSG_NAME_MAX + 1];
	struct gp_msg_device devices[GP_MSG_DEVICES_MAX];
	size_t n_devices;
	enum gp_backend_type backend;       /* the device that computes */
	int device_index;
	int threads;
	char device_name[64];               /* for the statistics */
	struct gp_testhooks test;           /* test only; all 0 otherwise */
	bool exit_when_done;                /* run: exit once the job is done */
	unsigned connect_timeout_ms;        /* join: give up after this long */
	/* run only: */
	const char *control_path;           /* borrowed; NULL: no control socket */
	/* borrowed; the start-up control socket (control.h) on the same
	 * path, stopped right before the session listens there; NULL: none */
	struct gp_control_starting *starting_control;
	/* the volunteer's pause from the database (unix s it ends at,
	 * GP_STATS_PAUSE_FOREVER, or 0 / past: none) */
	int64_t paused_until;
	/* When computing is allowed; policy.max_upload_bytes is checked
	 * against cfg->stats' bytes sent today. */
	struct gp_policy policy;
	double duty;                        /* share of wall time computing, (0, 1] */
	uint16_t beacon_port;               /* 0: do not listen for beacons */
	unsigned member_poll_ms;            /* re-read the memberships; 0: 5 s */
	unsigned policy_poll_ms;            /* re-check the policy; 0: 2 s */
	/* run only: a local copy of the training set, so that minibatches
	 * come as sample indices (GP_CAP_LOCAL_DATA) when it matches the
	 * coordinator's. NULL or "": $GP_DATA_DIR or the default directory;
	 * "none": no local copy. Borrowed. */
	const char *data_dir;
	/* run only: where data sets fetched as shards are cached (borrowed;
	 * NULL or "": memory only) and the cap on those files in bytes. */
	const char *cache_dir;
	uint64_t cache_max_bytes;
};

/* Joins the pool the token names. On success the membership is written to
 * cfg->stats and 0 is returned; otherwise a clear error has been logged and
 * a negative errno is returned (-EKEYREJECTED: the coordinator refused;
 * -EKEYREVOKED: its key does not match the token; -ETIMEDOUT: no endpoint
 * answered). token is borrowed. */
int gp_session_join(const struct gp_session_config *cfg,
		    const struct gp_token *token);

/* Works for the first pool of cfg->stats' memberships not left, until
 * SIGINT/SIGTERM, a revocation, or (with exit_when_done) the end of the
 * job. Without a membership it waits, re-reading the database every
 * member_poll_ms and on the control socket's "reload" (what `join` and
 * `leave` send), so that a service started before `join` picks the pool
 * up, and one whose pool was left says bye and waits again. While paused
 * (control socket "pause", or cfg->policy) it tells the coordinator PAUSE
 * and RESUME later. Publishes its state (status.h), STATUS= lines,
 * READY=1 once its loop runs, and watchdog pings when systemd asks for
 * them. Returns 0 or a negative errno. */
int gp_session_run(const struct gp_session_config *cfg);

/* Tells the coordinator of cfg->pool (with the agent's pinned key) that
 * this agent leaves: connects, says bye, closes. Returns 0, or -ETIMEDOUT
 * when no endpoint answered. */
int gp_session_leave(const struct gp_session_config *cfg);

#endif
