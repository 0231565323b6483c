/* serve's side of the job's progress and the members' credit: the STATS
 * rounds (progress.c decides what and when), a member's credit at JOIN,
 * and its public name (JOIN.public_name, PROFILE) into the ledger. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "credit.h"
#include "log.h"
#include "members.h"
#include "progress.h"
#include "server.h"
#include "util.h"

void gp_serve_progress_start(struct server *srv, const char *job_path)
{
	/* A job from the queue comes with no path: it is named after the
	 * file it was added from (job add FILE), as one served with --job
	 * is, unless the ledger holds only its text. */
	if (!job_path && srv->job_source[0] == '/')
		job_path = srv->job_source;
	gp_progress_job_name(job_path, srv->job.data_set, srv->spec_text,
			     srv->progress.job_name,
			     sizeof(srv->progress.job_name));
	srv->progress.flops_per_sample = gp_model_spec_train_flops(&srv->spec);
}

/* Sends p its STATS: the round's common part (borrowed) and its own. */
static void send_stats(struct server *srv, struct peer *p,
		       const struct gp_msg_stats *common)
{
	struct gp_msg m;

	if (!(p->m.caps & GP_CAP_PROGRESS) || !p->m.joined || !p->ch ||
	    !gp_channel_is_established(p->ch))
		return;
	gp_msg_init(&m, GP_MSG_STATS);
	m.u.stats = *common;
	gp_progress_member(&srv->progress, &p->m, &m.u.stats);
	gp_serve_send(p, &m);
}

void gp_serve_progress_tick(struct server *srv, int64_t now, bool force)
{
	uint32_t visits;
	struct gp_msg_stats common;

	gp_progress_record(&srv->progress, &srv->pool, now);
	if (gp_progress_due(&srv->progress, now) || force)
		/* A new round, on from where one stopped. */
		srv->stats_left = srv->pool.n_members;
	if (!srv->stats_left)
		return;
	/* 10,000 STATS (each encoded, sealed and written) in one callback
	 * every five seconds held every heartbeat behind them: a slice a
	 * tick. */
	visits = gp_progress_round_take(&srv->stats_left, srv->pool.n_members,
					srv->done);
	gp_progress_fill(&srv->progress, &srv->pool, srv->done, now, &common);
	while (visits-- > 0) {
		struct gp_member *m = gp_members_step(&srv->pool, GP_WALK_STATS);

		if (!m)
			break;
		send_stats(srv, peer_of(m), &common);
	}
}

/* The public name a member's agent sent ("" withdraws it): checked by
 * the decoder already. */
static void set_public_name(struct peer *p, const char *name)
{
	struct server *srv = p->srv;

	if (gp_ledger_agent_set_public_name(srv->st.ledger, p->m.agent_id,
					    name) < 0) {
		gp_warn("agent %" PRId64 ": cannot record its public name: %s",
			p->m.agent_id, gp_ledger_error(srv->st.ledger));
		return;
	}
	gp_debug("agent %" PRId64 " is %s", p->m.agent_id,
		 name[0] ? "public" : "not public");
}

/* A member's JOIN, on the thread pool: its public name into the ledger
 * (when it changed) and its credit out. The loop thread never waits on
 * the ledger's lock for a JOIN (a flush may hold it through an fsync),
 * and members join in floods. */
struct join_work {
	uv_work_t req;
	struct server *srv;
	int64_t agent_id;
	char public_name[GP_MSG_PUBLIC_NAME_MAX + 1];
	uint64_t updates, samples;   /* this job */
	double other_gflop;          /* the pool's other jobs */
	int result;
};

static void join_run(uv_work_t *req)
{
	struct join_work *w = req->data;
	struct gp_ledger *l = w->srv->st.ledger;
	struct gp_credit_member *cm = NULL;
	size_t n = 0;

	/* Rows of an earlier connection still in the write buffer (a second
	 * at most) are missing until the next JOIN. */
	w->result = gp_credit_members(l, NULL, w->agent_id, &cm, &n);
	if (w->result < 0)
		return;
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < cm[i].n_jobs; k++) {
			const struct gp_credit_job *cj = &cm[i].jobs[k];

			if (cj->job_id == w->srv->pool.job_id) {
				w->updates = (uint64_t)cj->updates;
				w->samples = (uint64_t)cj->samples;
			} else {
				w->other_gflop += cj->gflop;
			}
		}
	if (n != 1 || strcmp(cm[0].public_name, w->public_name) != 0)
		w->result = gp_ledger_agent_set_public_name(l, w->agent_id,
							    w->public_name);
	gp_credit_members_free(cm, n);
}

static void join_done(uv_work_t *req, int status)
{
	struct join_work *w = req->data;
	struct server *srv = w->srv;
	struct gp_member *m;
	struct gp_msg_stats common;

	if (status < 0 || w->result < 0) {
		gp_warn("agent %" PRId64 ": cannot read its credit or record "
			"its public name: %s", w->agent_id,
			status < 0 ? uv_strerror(status) :
				     gp_ledger_error(srv->st.ledger));
		goto out;
	}
	/* It may have gone, or reconnected (then a newer work follows). */
	m = gp_members_find(&srv->pool, (uint64_t)w->agent_id);
	if (!m)
		goto out;
	m->credit_updates = w->updates;
	m->credit_samples = w->samples;
	m->credit_other_gflop = w->other_gflop;
	if (!srv->has_job) /* waiting between jobs: nothing to tell */
		goto out;
	gp_progress_fill(&srv->progress, &srv->pool, srv->done, gp_now_ms(),
			 &common);
	send_stats(srv, peer_of(m), &common);
out:
	free(w);
}

void gp_serve_progress_join(struct peer *p, const struct gp_msg_join *j)
{
	struct join_work *w = calloc(1, sizeof(*w));

	if (!w)
		return;
	w->req.data = w;
	w->srv = p->srv;
	w->agent_id = p->m.agent_id;
	snprintf(w->public_name, sizeof(w->public_name), "%s", j->public_name);
	if (uv_queue_work(&p->srv->loop, &w->req, join_run, join_done) < 0) {
		gp_warn("agent %" PRId64 ": cannot queue its credit read",
			p->m.agent_id);
		free(w);
	}
}

void gp_serve_progress_profile(struct peer *p, const struct gp_msg_profile *pr)
{
	gp_info("agent %" PRId64 " (%s) %s its public name", p->m.agent_id,
		p->m.addr, pr->public_name[0] ? "set" : "withdrew");
	set_public_name(p, pr->public_name);
}
