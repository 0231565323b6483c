/* What the running agent is doing, for `gradpool-agent status`, the
 * service manager's STATUS= line and the local web page.
 *
 * The loop thread publishes a snapshot (gp_agent_status_publish); any
 * thread reads the latest one (gp_agent_status_get). On the control socket
 * the snapshot travels as "key=value" lines (gp_agent_status_format /
 * gp_agent_status_parse). */
#ifndef GP_AGENT_STATUS_H
#define GP_AGENT_STATUS_H

#include <stddef.h>
#include <stdint.h>

#define GP_AGENT_STATUS_TEXT_MAX 256

struct gp_agent_status {
	/* "starting": benchmarking devices, reading the memberships;
	 * "connected": computing for a pool; "paused": by the user or a
	 * policy (reason says which); "waiting": for a membership, the
	 * coordinator or the next job; "finishing": answering the work
	 * in hand before it stops; "stopped": no agent runs. */
	char state[16];
	char reason[GP_AGENT_STATUS_TEXT_MAX];
	char pool[64];
	char endpoint[GP_AGENT_STATUS_TEXT_MAX];
	char device[64];
	int64_t since;          /* unix seconds of the last state change */
	uint64_t minibatches;   /* computed since the agent started */
	uint64_t pid;
};

/* Stores a copy of *st (borrowed) as the latest snapshot. */
void gp_agent_status_publish(const struct gp_agent_status *st);

/* Copies the latest snapshot into *ret ("stopped" before any publish). */
void gp_agent_status_get(struct gp_agent_status *ret);

/* Writes *st as "key=value\n" lines into buf (len bytes). Returns the
 * length or -ENOSPC. */
int gp_agent_status_format(const struct gp_agent_status *st, char *buf,
			   size_t len);

/* Reads "key=value" lines from text (borrowed, untrusted); unknown keys
 * are skipped, missing ones stay empty. *ret is written only on success.
 * Returns 0, or -EBADMSG when there is no state line. */
int gp_agent_status_parse(const char *text, struct gp_agent_status *ret);

#endif
