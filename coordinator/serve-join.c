/* serve's side of a JOIN: the ledger's verdict on the member (a token's
 * first join, a known key, a revoked one), the pool's limit and
 * capabilities, WELCOME and CLOCK, or a REJECT; a member that joins while
 * the pool has no job waits (GP_CAP_JOBS). Split from serve.c. */
#include "serve.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>
#include "announce.h"
#include "apply.h"
#include "backend.h"
#include "channel.h"
#include "data.h"
#include "gp-endian.h"
#include "gp-config.h"
#include "job.h"
#include "log.h"
#include "members.h"
#include "model.h"
#include "msg.h"
#include "notify.h"
#include "params.h"
#include "pool.h"
#include "reason.h"
#include "server.h"
#include "scheduler.h"
#include "ssp.h"
#include "state.h"
#include "token.h"
#include "util.h"
#include "work.h"

/* ---- membership ------------------------------------------------------- */

static void fill_devices(struct gp_ledger_agent *a, const struct gp_msg_join *j)
{
	a->n_devices = j->n_devices < GP_LEDGER_DEVICES_MAX ? j->n_devices :
							      GP_LEDGER_DEVICES_MAX;
	for (size_t i = 0; i < a->n_devices; i++) {
		static const char *const kinds[] = { "cpu", "gpu", "accelerator",
						     "other" };
		struct gp_ledger_device *d = &a->devices[i];

		snprintf(d->kind, sizeof(d->kind), "%s",
			 kinds[j->devices[i].kind < 4 ? j->devices[i].kind : 3]);
		snprintf(d->name, sizeof(d->name), "%.*s", (int)sizeof(d->name) - 1,
			 j->devices[i].name);
		d->gflops = j->devices[i].gflops;
		d->samples_per_s = j->devices[i].samples_per_s;
	}
}

void gp_serve_reject(struct peer *p, uint16_t code, const char *text)
{
	struct gp_msg m;

	gp_msg_init(&m, GP_MSG_REJECT);
	m.u.reject.code = code;
	snprintf(m.u.reject.text, sizeof(m.u.reject.text), "%s", text);
	m.u.reject.version_min = GP_MSG_VERSION_MIN;
	m.u.reject.version_max = GP_MSG_VERSION;
	gp_serve_send(p, &m);
	gp_serve_close(p, code, text);
}

/* The ledger's answer to a JOIN: a token use spent (first join) or a
 * known, unrevoked key. Returns 0 with *ret_id, or -1 after sending the
 * REJECT. a (borrowed) is the agent's row as it introduces itself. */
static int join_ledger(struct peer *p, struct gp_ledger_agent *a,
		       int64_t *ret_id)
{
	struct server *srv = p->srv;
	struct gp_ledger_agent known;
	int r;

	if (p->psk_join) {
		/* The token's use is consumed here, after the handshake
		 * completed and the agent proved it by this message. */
		r = gp_ledger_join(srv->st.ledger, p->token_id, a, gp_now_ms(),
				   ret_id);
		if (r < 0) {
			uint16_t code = r == -EKEYEXPIRED ? GP_REJECT_TOKEN_EXPIRED :
					r == -EKEYREJECTED ? GP_REJECT_TOKEN_USED_UP :
					r == -EKEYREVOKED ? GP_REJECT_TOKEN_REVOKED :
							    GP_REJECT_BAD_TOKEN;

			gp_warn("join from %s refused: %s", p->m.addr,
				gp_ledger_error(srv->st.ledger));
			gp_serve_reject(p, code, gp_msg_reject_str(code));
			return -1;
		}
		gp_info("agent %" PRId64 " '%s' (%s) joined with token %" PRId64,
			*ret_id, a->name, a->fingerprint, p->token_id);
		return 0;
	}
	r = gp_ledger_agent_by_key(srv->st.ledger, a->public_key, &known);
	if (r < 0 || known.revoked_at) {
		gp_serve_reject(p, r < 0 ? GP_REJECT_UNKNOWN_AGENT :
				       GP_REJECT_AGENT_REVOKED,
			    r < 0 ? "not a member of this pool" :
				    "this agent's membership was revoked");
		return -1;
	}
	*ret_id = known.id;
	/* last_seen comes with the connection's count (the note that
	 * gp_serve_handle_join buffers). */
	gp_ledger_agent_set_devices(srv->st.ledger, known.id, a->devices,
				    a->n_devices);
	return 0;
}

static void join_idle(struct peer *p, const struct gp_msg_join *j);

void gp_serve_handle_join(struct peer *p, struct gp_msg_join *j)
{
	struct server *srv = p->srv;
	struct gp_ledger_agent a = { 0 };
	const uint8_t *key = gp_channel_remote_static(p->ch);
	struct gp_msg_inner_adamw inner;
	int64_t id = 0, clock = 0;
	uint32_t live;
	struct gp_msg m;

	if (p->m.joined || p->idle) {
		gp_serve_reject(p, GP_REJECT_MALFORMED, "JOIN sent twice");
		return;
	}
	memcpy(p->m.key, key, GP_KEY_SIZE);
	/* An agent joining a job that is ending hears so below (BYE 2), as
	 * when serve ended with its job; one that can wait does, when serve
	 * goes on with a queue. */
	if (!srv->has_job || (srv->job_ending && (j->caps & GP_CAP_JOBS) &&
			      srv->take_queue)) {
		join_idle(p, j);
		return;
	}
	/* An agent that knows only the shorthand cannot build a model
	 * description: told so before any token use is counted. */
	if (srv->spec.version != 0 && !(j->caps & GP_CAP_MODEL_TEXT)) {
		gp_warn("join from %s refused: it cannot read model descriptions "
			"(no GP_CAP_MODEL_TEXT; an older agent)", p->m.addr);
		gp_serve_reject(p, GP_REJECT_VERSION,
			    "this pool trains a model description (gradpool-model "
			    "1); upgrade the agent");
		return;
	}
	/* Samples that are not bytes travel only as indices: into the
	 * agent's own copy or into the shards it fetches. */
	if (srv->train && srv->train->dtype != GP_DATA_U8 &&
	    !(j->caps & GP_CAP_DATA_SHARDS) &&
	    !((j->caps & GP_CAP_LOCAL_DATA) &&
	      j->data_fingerprint == srv->pool.train_fingerprint)) {
		gp_warn("join from %s refused: it cannot fetch the data set "
			"(no GP_CAP_DATA_SHARDS; an older agent)", p->m.addr);
		gp_serve_reject(p, GP_REJECT_VERSION,
			    "this pool's data set travels as shards; upgrade "
			    "the agent");
		return;
	}
	if (gp_members_full(&srv->pool, &p->m, &live)) {
		gp_warn("join from %s refused: the pool is full (%u agents)",
			p->m.addr, live);
		gp_serve_reject(p, GP_REJECT_BUSY, "the pool is full");
		return;
	}
	snprintf(a.name, sizeof(a.name), "%.*s", (int)sizeof(a.name) - 1,
		 j->name[0] ? j->name : "agent");
	memcpy(a.public_key, key, GP_KEY_SIZE);
	gp_identity_fingerprint(key, a.fingerprint);
	fill_devices(&a, j);
	if (join_ledger(p, &a, &id) < 0)
		return;
	if (gp_members_join(&srv->pool, &p->m, id, j, &clock) < 0) {
		gp_serve_reject(p, GP_REJECT_BUSY, "cannot add the agent to the pool");
		return;
	}
	snprintf(p->m.name, sizeof(p->m.name), "%s", a.name);
	/* It stays between jobs: the WELCOME says this coordinator keeps
	 * it (BYE 2 then means "reconnect now", protocol.md). */
	p->m.caps |= j->caps & GP_CAP_JOBS;
	/* For the owner's status and agents: connected now, not left. */
	gp_ledger_agent_connected_append(srv->st.ledger, id, 1, gp_now_ms());

	gp_msg_init(&m, GP_MSG_WELCOME);
	m.u.welcome.agent_id = (uint64_t)id;
	m.u.welcome.job_id = (uint64_t)srv->pool.job_id;
	/* The shorthand in both fields, so that an agent that knows only
	 * tag 3 still runs it; a description only in model_text. */
	if (srv->spec.version == 0)
		snprintf(m.u.welcome.model, sizeof(m.u.welcome.model), "%.*s",
			 GP_MSG_MODEL_MAX, srv->spec_text);
	m.u.welcome.model_text = srv->spec_text;
	m.u.welcome.model_text_len = strlen(srv->spec_text);
	m.u.welcome.seed = srv->job.seed;
	m.u.welcome.batch_size = srv->job.batch_size;
	m.u.welcome.staleness = srv->job.staleness;
	m.u.welcome.heartbeat_ms = (uint32_t)srv->job.heartbeat_interval_ms;
	m.u.welcome.caps = p->m.caps;
	m.u.welcome.epoch = gp_sched_epoch(srv->pool.sched);
	if (p->m.caps & GP_CAP_DATA_SHARDS) {
		m.u.welcome.data_manifest = srv->manifest.raw;
		m.u.welcome.data_manifest_len = srv->manifest.raw_len;
	}
	/* Only to an agent granted local AdamW steps: every other WELCOME
	 * keeps the bytes it had before the block existed. */
	if (p->m.caps & GP_CAP_INNER_ADAMW) {
		inner = (struct gp_msg_inner_adamw){
			.beta1 = (float)srv->job.beta1,
			.beta2 = (float)srv->job.beta2,
			.eps = (float)srv->job.eps,
			.weight_decay = (float)srv->job.weight_decay,
			.clip_norm = (float)srv->job.clip_grad_norm,
		};
		m.u.welcome.inner_adamw = &inner;
		m.u.welcome.n_inner_adamw = 1;
	}
	gp_serve_send(p, &m);
	gp_msg_init(&m, GP_MSG_CLOCK);
	m.u.clock.clock = (uint64_t)clock;
	m.u.clock.min_clock = (uint64_t)gp_ssp_min_clock(srv->pool.ssp);
	gp_serve_send(p, &m);
	gp_serve_progress_join(p, j);
	if (srv->done || srv->job_ending) {
		gp_serve_bye(p, GP_BYE_JOB_DONE, srv->cancelled ?
			     "the job was cancelled" : "the job is done");
		return;
	}
	gp_work_serve_all(&srv->pool);
}

/* A JOIN while the pool has no job (none queued, or the last one ending).
 * An agent that waits between jobs (GP_CAP_JOBS) becomes or stays a
 * member, gets WELCOME job 0 and keeps its connection until a job starts
 * (BYE 7); another gets REJECT 10 and retries with its backoff. */
static void join_idle(struct peer *p, const struct gp_msg_join *j)
{
	struct server *srv = p->srv;
	struct gp_ledger_agent a = { 0 };
	int64_t id = 0;
	struct gp_msg m;

	if (!(j->caps & GP_CAP_JOBS)) {
		gp_serve_reject(p, GP_REJECT_NO_JOB, "the pool has no job now; "
			    "try again later");
		return;
	}
	snprintf(a.name, sizeof(a.name), "%.*s", (int)sizeof(a.name) - 1,
		 j->name[0] ? j->name : "agent");
	memcpy(a.public_key, p->m.key, GP_KEY_SIZE);
	gp_identity_fingerprint(p->m.key, a.fingerprint);
	fill_devices(&a, j);
	if (join_ledger(p, &a, &id) < 0)
		return;
	p->idle = true;
	p->m.agent_id = id;
	p->m.caps = GP_CAP_JOBS;
	snprintf(p->m.name, sizeof(p->m.name), "%s", a.name);
	gp_ledger_agent_connected_append(srv->st.ledger, id, 1, gp_now_ms());
	gp_info("agent %" PRId64 " (%s) waits: the pool has no job", id,
		p->m.addr);
	gp_msg_init(&m, GP_MSG_WELCOME);
	m.u.welcome.agent_id = (uint64_t)id;
	m.u.welcome.job_id = 0;
	m.u.welcome.heartbeat_ms = (uint32_t)srv->job.heartbeat_interval_ms;
	m.u.welcome.caps = GP_CAP_JOBS;
	gp_serve_send(p, &m);
}
