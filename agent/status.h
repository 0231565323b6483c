/* What the running agent is doing, for `gradpool-agent status`, the
 * service manager's STATUS= line and the local web page.
 *
 * The loop thread publishes a snapshot (gp_agent_status_publish); any
 * thread reads the latest one (gp_agent_status_get). On the control socket
 * the snapshot travels as "key=value" lines (gp_agent_status_format /
 * gp_agent_status_parse). */
#ifndef GP_AGENT_STATUS_H
#define GP_AGENT_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "msg.h"
#include "stats.h"

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
	/* The job and this member's credit, as the coordinator last told
	 * (STATS); have_job false: never told (an older coordinator). */
	bool have_job;
	char job[GP_MSG_JOB_NAME_MAX + 1];
	uint64_t job_id;
	char job_state[16];     /* "training", "done", "none", "unknown" */
	uint32_t epoch, epochs; /* epoch from 1 */
	double progress;        /* share of the job done, 0..1 */
	int64_t eta_s;          /* -1: unknown */
	uint32_t eval_epochs;   /* 0: no evaluation yet */
	double accuracy, test_loss, train_loss;
	double pool_samples_per_s;
	uint32_t agents_live;
	double credit_gflop;    /* over every job of the pool */
	uint64_t credit_updates, credit_samples; /* this job */
	int64_t progress_at;    /* unix seconds of that STATS */
	char public_name[GP_MSG_PUBLIC_NAME_MAX + 1]; /* "": not public */
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

/* Prints *st (borrowed) for `gradpool-agent status`: the text a
 * volunteer reads, or (json) one JSON object (docs/operations.md has the
 * keys), followed by every membership in pools (n_pools, borrowed, from
 * gp_stats_membership_list): the one served, those standing by and those
 * left, each named by its job. pools NULL: the database could not be
 * read (said so; "pools": null in JSON). */
void gp_agent_status_print(FILE *out, const struct gp_agent_status *st,
			   const struct gp_stats_membership *pools,
			   size_t n_pools, bool json);

/* Puts the job st (borrowed) tells of into the membership it serves in
 * pools (n_pools, modified): the running agent's word is newer than the
 * database's, which has it only from the last flush. */
void gp_agent_status_overlay(const struct gp_agent_status *st,
			     struct gp_stats_membership *pools,
			     size_t n_pools);

/* The membership of pools (n_pools, borrowed) the agent serves: st's
 * pool while it runs, else the first not left (the one it would serve).
 * Returns its index, or -1 when none. */
int gp_agent_status_served(const struct gp_agent_status *st,
			   const struct gp_stats_membership *pools,
			   size_t n_pools);

/* An ETA in seconds as "1h 02m", "3m 20s", "45s" (the coordinator's
 * status says it so), "unknown" when negative, into buf. */
const char *gp_agent_status_eta(int64_t s, char *buf, size_t size);

/* "12.3 GFLOP", "1.25 TFLOP": a GFLOP figure in human units, into buf
 * (size bytes), which is returned. */
const char *gp_agent_status_gflop(double gflop, char *buf, size_t size);

#endif
