/* What the agent session tells `gradpool-agent status` (machine.h
 * gp_machine_status): its state and why, and the job and credit from the
 * coordinator's last STATS. Read-only over the machine; split from
 * machine.c, which makes the decisions. */
#include "machine.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

/* The job and credit part of the status, from the last STATS. */
static void progress_status(const struct gp_machine *m,
			    struct gp_agent_status *st)
{
	const struct gp_msg_stats *p = &m->progress;

	snprintf(st->public_name, sizeof(st->public_name), "%s",
		 m->public_name);
	/* Kept through a reconnection (the last known), not once the pool
	 * is left. */
	if (!m->have_pool)
		st->have_job = false;
	if (!m->have_progress)
		return;
	st->have_job = true;
	snprintf(st->job, sizeof(st->job), "%s", p->job_name);
	st->job_id = p->job_id;
	snprintf(st->job_state, sizeof(st->job_state), "%s",
		 p->state == GP_JOB_STATE_TRAINING ? "training" :
		 p->state == GP_JOB_STATE_DONE ? "done" :
		 p->state == GP_JOB_STATE_NONE ? "none" : "unknown");
	st->epoch = p->epoch + 1;
	st->epochs = p->epochs;
	st->progress = p->progress;
	st->eta_s = p->eta_s == GP_MSG_ETA_UNKNOWN ? -1 : (int64_t)p->eta_s;
	st->eval_epochs = p->eval_epochs;
	st->accuracy = p->accuracy;
	st->test_loss = p->test_loss;
	st->train_loss = p->loss;
	st->pool_samples_per_s = p->samples_per_s;
	st->agents_live = p->agents_live;
	st->credit_gflop = (double)p->credit_mflop / 1000.0;
	st->credit_updates = p->updates_accepted;
	st->credit_samples = p->samples_credited;
	st->progress_at = m->progress_at;
}

void gp_machine_status(const struct gp_machine *m, struct gp_agent_status *st)
{
	memset(st->state, 0, sizeof(st->state));
	memset(st->reason, 0, sizeof(st->reason));
	snprintf(st->pool, sizeof(st->pool), "%s", m->have_pool ? m->pool.pool : "");
	snprintf(st->endpoint, sizeof(st->endpoint), "%s",
		 m->have_pool ? m->endpoint_now : "");
	snprintf(st->device, sizeof(st->device), "%s", m->cfg->device_name);
	st->minibatches = m->minibatches;
	progress_status(m, st);
	if (!m->have_pool && !m->members_read && m->mode == GP_MACHINE_RUN) {
		/* Not "not a member" before the memberships were read: a
		 * member's restart would say so for a moment. */
		snprintf(st->state, sizeof(st->state), "starting");
		snprintf(st->reason, sizeof(st->reason),
			 "reading the memberships");
	} else if (!m->have_pool) {
		snprintf(st->state, sizeof(st->state), "waiting");
		snprintf(st->reason, sizeof(st->reason),
			 "not a member of any pool (gradpool-agent join TOKEN)");
	} else if (m->finishing) {
		snprintf(st->state, sizeof(st->state), "finishing");
		snprintf(st->reason, sizeof(st->reason),
			 "%" PRIu64 " minibatch(es) in hand, then the agent stops",
			 m->in_hand);
	} else if (gp_machine_paused(m)) {
		snprintf(st->state, sizeof(st->state), "paused");
		if (m->user_paused && m->pause_until > 0 &&
		    m->pause_until != INT64_MAX) {
			char t[32];

			snprintf(st->reason, sizeof(st->reason),
				 "paused by the user until %s (gradpool-agent "
				 "resume)", gp_format_time(m->pause_until, t,
							   sizeof(t)));
		} else if (m->user_paused)
			snprintf(st->reason, sizeof(st->reason),
				 "paused by the user (gradpool-agent resume)");
		else
			snprintf(st->reason, sizeof(st->reason), "%s", m->policy_why);
	} else if (m->welcomed && m->idle) {
		snprintf(st->state, sizeof(st->state), "idle");
		snprintf(st->reason, sizeof(st->reason),
			 "the pool has no job; connected to pool %.16s at %.120s, "
			 "ready for the next one", m->pool.pool, m->endpoint_now);
	} else if (m->welcomed && m->done) {
		snprintf(st->state, sizeof(st->state), "waiting");
		snprintf(st->reason, sizeof(st->reason),
			 "the job is done; waiting for the next one");
	} else if (m->done) {
		/* The coordinator ended its job and closed: the attempts that
		 * fail now are expected, not a fault. */
		snprintf(st->state, sizeof(st->state), "waiting");
		snprintf(st->reason, sizeof(st->reason),
			 "the job is done; waiting for the coordinator at %.120s "
			 "to serve the next one (%u attempts so far)",
			 m->endpoint_now[0] ? m->endpoint_now : "its address",
			 m->attempts);
	} else if (m->welcomed && m->fetching) {
		uint32_t n = 0, missing = 0;

		if (m->ops->data_progress)
			m->ops->data_progress(m->ctx, &n, &missing);
		snprintf(st->state, sizeof(st->state), "connected");
		snprintf(st->reason, sizeof(st->reason),
			 "fetching the data set of pool %.16s: %" PRIu32
			 " of %" PRIu32 " shards", m->pool.pool, n - missing, n);
	} else if (m->welcomed && m->have_progress) {
		snprintf(st->state, sizeof(st->state), "connected");
		snprintf(st->reason, sizeof(st->reason),
			 "computing for job %.64s at %.160s",
			 m->progress.job_name, m->endpoint_now);
	} else if (m->welcomed) {
		snprintf(st->state, sizeof(st->state), "connected");
		snprintf(st->reason, sizeof(st->reason),
			 "computing for pool %.16s at %.200s", m->pool.pool,
			 m->endpoint_now);
	} else {
		snprintf(st->state, sizeof(st->state), "waiting");
		snprintf(st->reason, sizeof(st->reason),
			 "connecting to %.120s (%u failed attempts%s%.60s)%s",
			 m->endpoint_now[0] ? m->endpoint_now : "the coordinator",
			 m->attempts, m->last_error[0] ? ", last: " : "",
			 m->last_error,
			 m->beacon_on ? "; listening for beacons" : "");
	}
}
