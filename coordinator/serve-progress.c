/* serve's side of the job's progress and the members' credit: the STATS
 * rounds (progress.c decides what and when), a member's credit at JOIN,
 * and its public name (JOIN.public_name, PROFILE) into the ledger. */
#include <inttypes.h>
#include <string.h>

#include "credit.h"
#include "log.h"
#include "progress.h"
#include "server.h"
#include "util.h"

void gp_serve_progress_start(struct server *srv, const char *job_path)
{
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
	struct gp_msg_stats common;

	gp_progress_record(&srv->progress, &srv->pool, now);
	if (!gp_progress_due(&srv->progress, now) && !force)
		return;
	gp_progress_fill(&srv->progress, &srv->pool, srv->done, now, &common);
	for (struct peer *p = first_peer(srv); p; p = next_peer(p))
		send_stats(srv, p, &common);
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

void gp_serve_progress_join(struct peer *p, const struct gp_msg_join *j)
{
	struct server *srv = p->srv;
	struct gp_credit_member *cm = NULL;
	size_t n = 0;

	set_public_name(p, j->public_name);
	/* The credit the ledger holds: an indexed read of this member's
	 * rows. Rows of an earlier connection still in the write buffer
	 * (a second at most) are missing until the next JOIN. */
	if (gp_credit_members(srv->st.ledger, &srv->credit_cache,
			      p->m.agent_id, &cm, &n) < 0) {
		gp_warn("agent %" PRId64 ": cannot read its credit: %s",
			p->m.agent_id, gp_ledger_error(srv->st.ledger));
		n = 0;
	}
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < cm[i].n_jobs; k++) {
			const struct gp_credit_job *cj = &cm[i].jobs[k];

			if (cj->job_id == srv->pool.job_id) {
				p->m.credit_updates = (uint64_t)cj->updates;
				p->m.credit_samples = (uint64_t)cj->samples;
			} else {
				p->m.credit_other_gflop += cj->gflop;
			}
		}
	gp_credit_members_free(cm, n);
	{
		struct gp_msg_stats common;

		gp_progress_fill(&srv->progress, &srv->pool, srv->done,
				 gp_now_ms(), &common);
		send_stats(srv, p, &common);
	}
}

void gp_serve_progress_profile(struct peer *p, const struct gp_msg_profile *pr)
{
	gp_info("agent %" PRId64 " (%s) %s its public name", p->m.agent_id,
		p->m.addr, pr->public_name[0] ? "set" : "withdrew");
	set_public_name(p, pr->public_name);
}
