/* The coordinator's serve loop: the libuv loop thread, the encrypted
 * channels, and the wiring between them and the pool's decisions.
 *
 * One loop thread owns the network and the pool (members, SSP clocks,
 * parameter store, schedule). A message is received here, handed to the
 * decision it calls for (members.c for a JOIN, work.c for a WORK_REQUEST,
 * PAUSE and RESUME, apply.c for an UPDATE), and what the decision sends or
 * writes comes back through the pool's effects, implemented on the
 * channels and the ledger in serve-effects.c. SQLite writes, evaluations and revocation checks
 * run on the libuv thread pool (background.c); the few ledger reads a
 * handshake needs (is this key a member, is this token live) are indexed
 * lookups done in place. setup.c reads the job and builds or restores its
 * state. docs/architecture.md tells the whole story. */
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
#include <strings.h>
#include <unistd.h>
#include <uv.h>

#include "announce.h"
#include "apply.h"
#include "channel.h"
#include "gp-config.h"
#include "job.h"
#include "log.h"
#include "members.h"
#include "msg.h"
#include "notify.h"
#include "par.h"
#include "pool.h"
#include "reason.h"
#include "server.h"
#include "ssp.h"
#include "state.h"
#include "token.h"
#include "util.h"
#include "work.h"


/* ---- helpers ---------------------------------------------------------- */

static int send_msg(struct peer *p, struct gp_msg *m);

int gp_serve_send(struct peer *p, struct gp_msg *m)
{
	return send_msg(p, m);
}

static int send_msg(struct peer *p, struct gp_msg *m)
{
	return p->ch ? gp_channel_send_msg(p->ch, m) : -ENOTCONN;
}

static void payload_task(void *arg, size_t i)
{
	gp_msg_payload_job_run((const struct gp_msg_payload_job *)arg + i);
}

int gp_serve_send_blocks(struct peer *p, struct gp_msg *m,
			 uint64_t model_params)
{
	struct gp_msg_payload_job *jobs;
	struct gp_par *par = p->srv->pool.par;
	size_t n, len;
	uint8_t *buf;
	int r;

	if (!p->ch)
		return -ENOTCONN;
	if (model_params < GP_PAR_MIN || !gp_par_threads(par))
		return send_msg(p, m);
	r = gp_msg_encode_alloc_deferred(m, &buf, &len, &jobs, &n);
	if (r < 0)
		return r;
	gp_par_for(par, n, payload_task, jobs);
	free(jobs);
	return gp_channel_send_take(p->ch, buf, len);
}

void gp_serve_close(struct peer *p, uint16_t code, const char *text)
{
	p->closed_here = true;
	if (p->ch)
		gp_channel_close(p->ch, code, text);
}

void gp_serve_bye(struct peer *p, uint16_t reason, const char *text)
{
	struct gp_msg m;

	gp_msg_init(&m, GP_MSG_BYE);
	m.u.bye.reason = reason;
	snprintf(m.u.bye.text, sizeof(m.u.bye.text), "%s", text);
	send_msg(p, &m);
	gp_serve_close(p, reason, text);
}

/* read_us: when it was read (gp_mono_us), 0: now. */
static void handle_update(struct peer *p, const struct gp_msg_update *u,
			  uint64_t read_us)
{
	struct server *srv = p->srv;
	int64_t received = gp_now_ms();

	/* One that waited in the deferred queue was received when read. */
	if (read_us) {
		uint64_t now_us = gp_mono_us();

		if (read_us < now_us)
			received -= (int64_t)((now_us - read_us) / 1000);
	}
	srv->pool.msg_read_us = read_us;
	gp_apply_update(&srv->pool, &p->m, u, received);
	gp_work_update_read(&srv->pool, &p->m);
	srv->pool.msg_read_us = 0;
	if (gp_ledger_flush_due(srv->st.ledger, gp_now_ms()))
		gp_bg_kick_db(srv, false);
}

static void log_rejection(struct peer *p, const char *kind, const char *fmt,
			  ...) __attribute__((format(printf, 3, 4)));

/* DATA_REQUEST: one shard of the training set's stream. An agent fetches
 * each shard once, again only after a shard failed its digest: more than
 * twice the manifest (plus a few) on one connection is a peer looping or
 * hostile, and it is closed rather than served without end. */
static void handle_data_request(struct peer *p,
				const struct gp_msg_data_request *d)
{
	struct server *srv = p->srv;
	const struct gp_shard_manifest *mf = &srv->manifest;
	size_t len, stream_len;
	const uint8_t *stream = gp_data_stream(srv->train, &stream_len);
	struct gp_msg m;

	if (!(p->m.caps & GP_CAP_DATA_SHARDS) || d->shard >= mf->n_shards) {
		log_rejection(p, "message", "DATA_REQUEST for shard %u (%s)",
			      d->shard, (p->m.caps & GP_CAP_DATA_SHARDS) ?
			      "beyond the manifest" : "not granted");
		gp_serve_bye(p, GP_BYE_PROTOCOL, "bad data request");
		return;
	}
	if (p->shards_sent >= 2 * mf->n_shards + 16) {
		log_rejection(p, "flood", "%u data shards requested on one "
			      "connection", p->shards_sent);
		gp_serve_bye(p, GP_BYE_PROTOCOL, "too many data requests");
		return;
	}
	len = gp_shard_len(mf, d->shard);
	gp_msg_init(&m, GP_MSG_DATA_SHARD);
	m.u.data_shard.shard = d->shard;
	m.u.data_shard.data = stream + (size_t)d->shard * mf->shard_size;
	m.u.data_shard.data_len = len;
	p->shards_sent++;
	if (p->shards_sent == 1)
		gp_info("agent %" PRId64 " (%s) fetches the training set "
			"(%u shards)", p->m.agent_id, p->m.addr, mf->n_shards);
	send_msg(p, &m);
}

static void handle_heartbeat(struct peer *p, const struct gp_msg_heartbeat *h)
{
	struct gp_msg m;

	gp_msg_init(&m, GP_MSG_HEARTBEAT);
	m.u.heartbeat.seq = h->seq;
	m.u.heartbeat.time_us = gp_mono_us();
	m.u.heartbeat.echo_time_us = h->time_us;
	send_msg(p, &m);
}

/* ---- channel callbacks ------------------------------------------------ */

static int on_verify(struct gp_channel *ch, const struct gp_channel_hello *hello,
		     struct gp_channel_verdict *verdict)
{
	struct peer *lp = gp_channel_data(ch);
	struct server *srv = lp ? lp->srv : NULL;
	struct peer *p;

	if (!srv || srv->pool.stopping)
		return -ECANCELED;
	/* Room for every member to reconnect while its old connection is
	 * still closing, and a few more; beyond that, drop unanswered (the
	 * initiator retries with backoff). */
	if (srv->pool.n_members >= 2 * srv->job.max_agents + 16) {
		gp_debug("too many connections (%u): dropping one", srv->pool.n_members);
		return -EBUSY;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->m.connected_ms = gp_now_ms();
	p->srv = srv;
	p->ch = ch;
	gp_channel_peer_name(ch, p->m.addr, sizeof(p->m.addr));
	gp_channel_set_data(ch, p);
	gp_members_add(&srv->pool, &p->m);

	if (hello->pattern == GP_NOISE_IKPSK2) {
		uint8_t secret[GP_TOKEN_SECRET_SIZE], psk[GP_TOKEN_PSK_SIZE];
		struct gp_ledger_token row;
		struct gp_token_record rec = { 0 };
		enum gp_token_verdict v;

		if (hello->payload_len != GP_TOKEN_ID_SIZE) {
			verdict->reject = true;
			verdict->code = GP_REJECT_MALFORMED;
			snprintf(verdict->text, sizeof(verdict->text),
				 "first join without a token id");
			return 0;
		}
		/* The secret is derived from the coordinator's key and the
		 * token id, so a psk exists for any id and the agent can read
		 * our verdict; the ledger's keyed hash says if it is real. */
		gp_token_secret_derive(srv->token_key, hello->payload, secret);
		gp_token_psk(secret, psk);
		gp_channel_set_psk(ch, psk);
		p->psk_join = true;
		p->token_id = gp_ledger_token_id_from_bytes(hello->payload);
		if (gp_ledger_token_get(srv->st.ledger, p->token_id, &row) < 0) {
			v = GP_TOKEN_BAD_SECRET;
		} else {
			memcpy(rec.id, hello->payload, GP_TOKEN_ID_SIZE);
			memcpy(rec.hash, row.secret_hash, GP_TOKEN_HASH_SIZE);
			rec.expires_at = row.expires_at > 0 ?
						 (uint64_t)((row.expires_at + 999) / 1000) : 0;
			rec.max_uses = (uint32_t)row.max_uses;
			rec.uses = (uint32_t)row.uses;
			rec.revoked = row.revoked_at != 0;
			v = gp_token_record_check(&rec, srv->st.token_hash_key,
						  secret, (uint64_t)gp_now_s());
		}
		explicit_bzero(secret, sizeof(secret));
		explicit_bzero(psk, sizeof(psk));
		if (v != GP_TOKEN_OK) {
			/* An agent that is already a member may rejoin with a
			 * used-up token (its WELCOME was lost). */
			struct gp_ledger_agent known;

			if (v == GP_TOKEN_USED_UP &&
			    gp_ledger_agent_by_key(srv->st.ledger, hello->remote_static,
						   &known) == 0 &&
			    !known.revoked_at)
				return 0;
			verdict->reject = true;
			verdict->code = v == GP_TOKEN_EXPIRED ? GP_REJECT_TOKEN_EXPIRED :
					v == GP_TOKEN_USED_UP ? GP_REJECT_TOKEN_USED_UP :
					v == GP_TOKEN_REVOKED ? GP_REJECT_TOKEN_REVOKED :
								GP_REJECT_BAD_TOKEN;
			snprintf(verdict->text, sizeof(verdict->text), "%s",
				 gp_token_verdict_str(v));
			gp_info("join from %s refused: %s", p->m.addr,
				gp_token_verdict_str(v));
		}
		return 0;
	}
	{
		struct gp_ledger_agent known;
		int r = gp_ledger_agent_by_key(srv->st.ledger, hello->remote_static,
					       &known);

		if (r < 0 || known.revoked_at) {
			verdict->reject = true;
			verdict->code = r < 0 ? GP_REJECT_UNKNOWN_AGENT :
						GP_REJECT_AGENT_REVOKED;
			snprintf(verdict->text, sizeof(verdict->text), "%s",
				 r < 0 ? "this key is not a member of the pool: join with an invite token" :
					 "this agent's membership was revoked");
			gp_info("connection from %s refused: %s", p->m.addr,
				verdict->text);
		}
	}
	return 0;
}

static void log_rejection(struct peer *p, const char *kind, const char *fmt,
			  ...) __attribute__((format(printf, 3, 4)));

/* A row in the ledger's rejections table and a warning in the log. */
static void log_rejection(struct peer *p, const char *kind, const char *fmt,
			  ...)
{
	struct gp_ledger_rejection rej = { .agent_id = p->m.agent_id,
					   .at = gp_now_ms() };
	va_list ap;

	snprintf(rej.kind, sizeof(rej.kind), "%s", kind);
	va_start(ap, fmt);
	vsnprintf(rej.reason, sizeof(rej.reason), fmt, ap);
	va_end(ap);
	gp_ledger_rejection_append(p->srv->st.ledger, &rej);
	gp_warn("%s (agent %" PRId64 "): %s", p->m.addr, p->m.agent_id, rej.reason);
}

/* The per-connection rate limit: token buckets of rate_messages messages
 * and rate_bytes bytes per second holding two seconds' worth. Returns false
 * for a message to drop unread (before decoding): one over the limit,
 * unless it is an UPDATE. An UPDATE answers minibatches that stay assigned
 * to the agent, and its clock open, until it is handled: dropped, they
 * would hold the pool's SSP bound until the work timeout. So it is handled
 * and only counted, its tokens taken as debt. A connection that keeps
 * going over the limit, updates included, is closed, which puts its work
 * back at once. A message is admitted while the byte bucket is positive,
 * so one larger than the bucket still passes (the debt is paid by
 * waiting). data (borrowed, len bytes) is only peeked at. */
static bool rate_admit(struct peer *p, const uint8_t *data, size_t len)
{
	const struct gp_job *job = &p->srv->job;
	uint64_t now = gp_mono_us(), limit;
	struct gp_msg_header hdr;
	bool update;
	double dt;

	if (!job->rate_messages && !job->rate_bytes)
		return true;
	if (!p->rate_at_us) {
		p->msg_tokens = 2.0 * (double)job->rate_messages;
		p->byte_tokens = 2.0 * (double)job->rate_bytes;
	} else {
		dt = (double)(now - p->rate_at_us) / 1e6;
		p->msg_tokens = fmin(p->msg_tokens + dt * (double)job->rate_messages,
				     2.0 * (double)job->rate_messages);
		p->byte_tokens = fmin(p->byte_tokens + dt * (double)job->rate_bytes,
				      2.0 * (double)job->rate_bytes);
	}
	p->rate_at_us = now;
	if ((!job->rate_messages || p->msg_tokens >= 1.0) &&
	    (!job->rate_bytes || p->byte_tokens > 0)) {
		p->msg_tokens -= 1.0;
		p->byte_tokens -= (double)len;
		return true;
	}
	if (p->flooded)
		return false;
	update = gp_msg_peek(data, len, &hdr) == 0 && hdr.type == GP_MSG_UPDATE;
	if (++p->over == 1)
		log_rejection(p, "flood", "over the rate limit (%" PRIu64
			      " messages/s, %" PRIu64 " bytes/s): dropping "
			      "messages other than updates",
			      job->rate_messages, job->rate_bytes);
	limit = job->rate_messages > FLOOD_DROPS_MIN ? job->rate_messages :
						       FLOOD_DROPS_MIN;
	if (p->over >= limit) {
		p->flooded = true;
		log_rejection(p, "flood", "%" PRIu64 " messages over the rate "
			      "limit: disconnecting", p->over);
		gp_serve_bye(p, GP_BYE_PROTOCOL, "message flood");
		return false;
	}
	if (!update)
		return false;
	p->msg_tokens -= 1.0;
	p->byte_tokens -= (double)len;
	return true;
}

/* A message of a version this coordinator does not speak, before the
 * JOIN is accepted: the client speaks another release of the protocol
 * from its first message, so it gets REJECT 6 with the versions spoken
 * here (send_reject fills them in) instead of BYE 4, and no token use is
 * counted. Returns true when it was refused so; false for anything else
 * (an unknown critical field, a bad dtype, or a member's message), which
 * is an undecodable message. data is borrowed. */
static bool refuse_version(struct peer *p, const uint8_t *data, size_t len)
{
	struct gp_msg_header h;
	struct gp_ledger_rejection rej = { .agent_id = p->m.agent_id,
					   .at = gp_now_ms() };
	char text[GP_MSG_TEXT_MAX + 1];

	if (p->m.joined || gp_msg_peek(data, len, &h) < 0 ||
	    (h.version >= GP_MSG_VERSION_MIN && h.version <= GP_MSG_VERSION))
		return false;
	snprintf(text, sizeof(text), "message version %u is not supported: "
		 "this coordinator speaks versions %u to %u", h.version,
		 GP_MSG_VERSION_MIN, GP_MSG_VERSION);
	snprintf(rej.kind, sizeof(rej.kind), "version");
	snprintf(rej.reason, sizeof(rej.reason), "message version %u, "
		 "speaks %u to %u", h.version, GP_MSG_VERSION_MIN,
		 GP_MSG_VERSION);
	gp_ledger_rejection_append(p->srv->st.ledger, &rej);
	gp_warn("%s: %s", p->m.addr, text);
	gp_serve_reject(p, GP_REJECT_VERSION, text);
	return true;
}

static void on_message(struct gp_channel *ch, uint8_t *data, size_t len)
{
	struct peer *p = gp_channel_data(ch);
	struct gp_msg_header h;

	if (!p || p->listener_data || !rate_admit(p, data, len))
		return;
	if (gp_serve_defer(p, data, len, p->m.joined &&
			   gp_msg_peek(data, len, &h) == 0 &&
			   h.type == GP_MSG_UPDATE))
		return;
	gp_serve_dispatch(p, data, len, 0);
}

void gp_serve_dispatch(struct peer *p, const uint8_t *data, size_t len,
		       uint64_t read_us)
{
	struct gp_msg m;
	int r;

	r = gp_msg_decode(data, len, &m);
	if (r == -EPROTONOSUPPORT && refuse_version(p, data, len))
		return;
	if (r == GP_MSG_UNKNOWN_TYPE) {
		gp_debug("%s: skipped a message of unknown type %u", p->m.addr, m.type);
		gp_msg_finish(&m);
		return;
	}
	if (r < 0) {
		struct gp_ledger_rejection rej = { .agent_id = p->m.agent_id,
						   .at = gp_now_ms() };

		snprintf(rej.kind, sizeof(rej.kind), "message");
		snprintf(rej.reason, sizeof(rej.reason), "undecodable message: %s",
			 strerror(-r));
		gp_ledger_rejection_append(p->srv->st.ledger, &rej);
		gp_warn("%s: undecodable message (%s), closing", p->m.addr,
			strerror(-r));
		gp_serve_bye(p, GP_BYE_PROTOCOL, "undecodable message");
		return;
	}
	if (p->idle && m.type != GP_MSG_JOIN && m.type != GP_MSG_HEARTBEAT &&
	    m.type != GP_MSG_BYE) {
		/* Work, updates, pauses for a job that is not there: a
		 * race with its end. */
		gp_debug("%s: ignored %s between jobs", p->m.addr,
			 gp_msg_type_name(m.type));
		gp_msg_finish(&m);
		return;
	}
	if (!p->m.joined && !p->idle && m.type != GP_MSG_JOIN &&
	    m.type != GP_MSG_HEARTBEAT && m.type != GP_MSG_BYE) {
		gp_serve_reject(p, GP_REJECT_MALFORMED, "JOIN must come first");
		gp_msg_finish(&m);
		return;
	}
	switch (m.type) {
	case GP_MSG_JOIN:
		gp_serve_handle_join(p, &m.u.join);
		break;
	case GP_MSG_HEARTBEAT:
		handle_heartbeat(p, &m.u.heartbeat);
		break;
	case GP_MSG_WORK_REQUEST:
		gp_work_request(&p->srv->pool, &p->m, m.u.work_request.count);
		break;
	case GP_MSG_UPDATE:
		handle_update(p, &m.u.update, read_us);
		break;
	case GP_MSG_DATA_REQUEST:
		handle_data_request(p, &m.u.data_request);
		break;
	case GP_MSG_PAUSE:
		gp_work_pause(&p->srv->pool, &p->m);
		break;
	case GP_MSG_RESUME:
		gp_work_resume(&p->srv->pool, &p->m);
		break;
	case GP_MSG_BYE:
		gp_info("agent %" PRId64 " (%s) says bye: %s", p->m.agent_id, p->m.addr,
			m.u.bye.text);
		/* Reason 0 is the volunteer leaving the pool (protocol.md). */
		if ((p->m.joined || p->idle) && m.u.bye.reason == GP_BYE_NORMAL)
			gp_ledger_agent_left_append(p->srv->st.ledger, p->m.agent_id,
						 gp_now_ms());
		gp_serve_close(p, GP_BYE_NORMAL, "bye");
		break;
	case GP_MSG_PROFILE:
		gp_serve_progress_profile(p, &m.u.profile);
		break;
	case GP_MSG_VERIFY_RESULT:
		if (!(p->m.caps & GP_CAP_VERIFY)) {
			log_rejection(p, "message", "VERIFY_RESULT without "
				      "GP_CAP_VERIFY");
			gp_serve_bye(p, GP_BYE_PROTOCOL, "unexpected "
				     "VERIFY_RESULT");
			break;
		}
		gp_verify_result(&p->srv->pool, &p->m, &m.u.verify_result);
		break;
	default:
		gp_debug("%s: ignored %s", p->m.addr, gp_msg_type_name(m.type));
		break;
	}
	gp_msg_finish(&m);
}

/* The connection wrote down to GP_SERVE_PULL_LOW_WATER: its parameter send
 * leaves the pull budget, and waiting pulls get the room. */
static void on_drain(struct gp_channel *ch)
{
	struct peer *p = gp_channel_data(ch);

	if (!p || p->listener_data || !p->m.pull_bytes)
		return;
	gp_work_pull_written(&p->srv->pool, &p->m);
	if (gp_serve_serving_work(p->srv))
		gp_work_pull_serve(&p->srv->pool);
}

static void on_close(struct gp_channel *ch, enum gp_close_reason reason,
		     uint16_t code, const char *text)
{
	struct peer *p = gp_channel_data(ch);
	struct server *srv;

	(void)code;
	if (!p || p->listener_data)
		return;
	srv = p->srv;
	/* What it sent before closing, still in the deferred queue. */
	gp_serve_defer_flush(p);
	if (p->m.joined) {
		size_t back = gp_members_leave(&srv->pool, &p->m);

		gp_ledger_agent_connected_append(srv->st.ledger, p->m.agent_id,
						 -1, gp_now_ms());
		gp_info("agent %" PRId64 " (%s) left: %s: %s; %zu minibatch(es) back "
			"in the queue", p->m.agent_id, p->m.addr,
			gp_channel_close_reason_name(reason), text, back);
	} else if (p->idle) {
		gp_ledger_agent_connected_append(srv->st.ledger, p->m.agent_id,
						 -1, gp_now_ms());
		gp_debug("agent %" PRId64 " (%s) waiting for a job left: %s: %s",
			 p->m.agent_id, p->m.addr,
			 gp_channel_close_reason_name(reason), text);
	} else if (reason != GP_CLOSE_LOCAL) {
		gp_debug("%s: closed before joining: %s: %s", p->m.addr,
			 gp_channel_close_reason_name(reason), text);
	}
	gp_members_remove(&srv->pool, &p->m);
	p->ch = NULL;
	free(p);
	if (gp_serve_serving_work(srv)) {
		/* Its queued parameter send left the budget with it. */
		gp_work_pull_serve(&srv->pool);
		gp_work_serve_all(&srv->pool);
	}
	gp_serve_maybe_finish(srv);
}

/* ---- lifecycle -------------------------------------------------------- */

static void close_cb_noop(uv_handle_t *h)
{
	(void)h;
}

static void start_next_job(struct server *srv);

/* The job is over and its members are gone: frees its state and takes
 * the next job, if one is queued. */
static void end_job(struct server *srv)
{
	int64_t id = srv->pool.job_id;

	gp_info("job %" PRId64 " %s", id,
		srv->cancelled ? "cancelled" : "done");
	printf("job %" PRId64 " %s\n", id,
	       srv->cancelled ? "cancelled" : "done");
	fflush(stdout);
	gp_setup_teardown(srv);
	srv->has_job = false;
	srv->job_ending = false;
	srv->cancelled = false;
	if (srv->take_queue)
		start_next_job(srv);
	if (!srv->has_job && !srv->exit_when_done) {
		gp_info("the pool has no job: waiting for one "
			"(gradpool-coordinator job add FILE)");
		gp_notify_status("no job: waiting for one");
	}
}

void gp_serve_maybe_finish(struct server *srv)
{
	bool over = srv->has_job &&
		    ((srv->done && srv->final_reported) || srv->cancelled);

	if (!srv->pool.stopping && !over)
		return;
	if (over && !srv->job_ending) {
		srv->job_ending = true;
		for (struct peer *p = first_peer(srv); p; p = next_peer(p))
			if (p->m.joined)
				gp_serve_bye(p, GP_BYE_JOB_DONE, srv->cancelled ?
					     "the job was cancelled" :
					     "the job is done");
	}
	if (srv->db_busy || srv->eval_busy || gp_verify_busy(srv->pool.verify))
		return;
	if (srv->has_job && (gp_ledger_pending(srv->st.ledger) > 0 ||
			     srv->pool.checkpoint_wanted)) {
		gp_bg_kick_db(srv, true);
		if (srv->db_busy)
			return;
	}
	if (!srv->pool.stopping) {
		/* The members' channels close after their BYE; the job's
		 * state goes once the last has (on_close calls back here). */
		for (struct peer *p = first_peer(srv); p; p = next_peer(p))
			if (p->m.joined)
				return;
		end_job(srv);
		if (srv->has_job || !srv->exit_when_done)
			return;
		/* Nothing follows: whoever is still connected (waiting between
		 * jobs, or not joined yet) hears that the job is done. */
		srv->pool.stopping = true;
		for (struct peer *p = first_peer(srv); p; p = next_peer(p))
			gp_serve_bye(p, GP_BYE_JOB_DONE, "the job is done");
	}
	if (srv->listener) {
		gp_channel_listener_destroy(srv->listener);
		srv->listener = NULL;
	}
	gp_announce_destroy(srv->announce);
	srv->announce = NULL;
	if (!uv_is_closing((uv_handle_t *)&srv->tick)) {
		uv_close((uv_handle_t *)&srv->tick, close_cb_noop);
		uv_close((uv_handle_t *)&srv->serve_idle, close_cb_noop);
		uv_close((uv_handle_t *)&srv->defer_idle, close_cb_noop);
		uv_close((uv_handle_t *)&srv->sigint, close_cb_noop);
		uv_close((uv_handle_t *)&srv->sigterm, close_cb_noop);
	}
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct server *srv = s->data;

	if (srv->pool.stopping)
		return;
	gp_info("%s: checkpointing and stopping", strsignal(signum));
	srv->pool.stopping = true;
	srv->pool.checkpoint_wanted = srv->has_job && !srv->done;
	for (struct peer *p = first_peer(srv); p; p = next_peer(p))
		gp_serve_bye(p, GP_BYE_RESTART, "the coordinator is stopping");
	gp_serve_maybe_finish(srv);
}

/* Each member's measured link and the pool's sync interval (sync_ms) go
 * to the ledger (`gradpool-coordinator agents`) when either moved by
 * more than a tenth since last written: a note for the update log's
 * flush, checked as the tick's upkeep visits the member (once a
 * second). */
static bool moved(double now, double then)
{
	return fabs(now - then) > 0.1 * fabs(then) + 1e-9;
}

static void save_link(struct server *srv, struct peer *p, double sync_ms,
		      int64_t now)
{
	struct gp_ssp_agent_info a;

	if (!p->m.joined ||
	    gp_ssp_get(srv->pool.ssp, (uint64_t)p->m.agent_id, &a) < 0 ||
	    !(a.link_bps > 0) ||
	    (!moved(a.link_bps, p->link_saved_bps) &&
	     !moved(sync_ms, p->sync_saved_ms)))
		return;
	if (gp_ledger_agent_link_append(srv->st.ledger, p->m.agent_id,
					a.link_bps, sync_ms, now) < 0) {
		gp_warn("cannot record agent %" PRId64 "'s link: %s",
			p->m.agent_id, gp_ledger_error(srv->st.ledger));
		return;
	}
	p->link_saved_bps = a.link_bps;
	p->sync_saved_ms = sync_ms;
}

/* How often serve reads the ledger for a job to start (while it has
 * none) or for its job's cancellation (job cancel writes the state). */
#define QUEUE_CHECK_MS 500

static void check_cancelled(struct server *srv, int64_t now)
{
	if (srv->job_ending || now - srv->queue_checked_ms < QUEUE_CHECK_MS)
		return;
	srv->queue_checked_ms = now;
	gp_bg_check_cancelled(srv);
}

static void on_tick(uv_timer_t *t)
{
	struct server *srv = t->data;
	int64_t now = gp_now_ms();
	uint64_t now_us = gp_mono_us();

	/* How late this tick fired is how long the loop was held when it
	 * was due: the measure of serve's load that paces the pool. */
	if (srv->tick_us && srv->has_job)
		gp_work_pace(&srv->pool,
			     now_us > srv->tick_us + TICK_MS * 1000u ?
				     now_us - srv->tick_us - TICK_MS * 1000u : 0,
			     now_us);
	srv->tick_us = now_us;
	if (srv->finish_soon) {
		srv->finish_soon = false;
		gp_serve_maybe_finish(srv);
	}
	gp_verify_tick(&srv->pool, now);
	if (srv->pool.stopping)
		return;
	if (!srv->has_job) {
		gp_bg_check_revoked(srv, now);
		if (srv->take_queue && now - srv->queue_checked_ms >= QUEUE_CHECK_MS)
			start_next_job(srv);
		return;
	}
	check_cancelled(srv, now);
	if (gp_sched_expire(srv->pool.sched, (uint64_t)now, srv->job.work_timeout_ms) > 0)
		gp_warn("assignments timed out and went back to the queue");
	/* Each member once a second (GP_WALK_UPKEEP_SLICES ticks apart), a
	 * slice each tick: timeouts are tens of seconds, and a walk of
	 * 10,000 every 100 ms was the loop's own stall. The sync interval
	 * looks at every live agent (within its memo's 100 ms): once a
	 * second is enough for the ledger. */
	if (now - srv->sync_ms_at >= 1000) {
		srv->sync_ms = gp_work_sync_interval(&srv->pool) * 1e3;
		srv->sync_ms_at = now;
	}
	for (uint32_t k = 0, n = gp_members_slice(srv->pool.n_members,
						  GP_WALK_UPKEEP_SLICES);
	     k < n; k++) {
		struct gp_member *m = gp_members_step(&srv->pool, GP_WALK_UPKEEP);
		struct peer *p;
		int64_t since;

		if (!m)
			break;
		p = peer_of(m);
		gp_robust_agent_trim(&srv->pool.robust, &p->m.robust);
		save_link(srv, p, srv->sync_ms, now);
		if (!p->ch || !gp_channel_is_established(p->ch) || p->idle)
			continue;
		switch (gp_members_overdue(&srv->pool, &p->m, now, &since)) {
		case GP_OVERDUE_UPDATE:
			log_rejection(p, "work-timeout", "no update for %" PRId64
				      " ms with %u minibatch(es) out: disconnecting",
				      since, p->m.clock_open);
			gp_serve_bye(p, GP_BYE_TIMEOUT, "no update in time");
			break;
		case GP_OVERDUE_JOIN:
			log_rejection(p, "no-join", "connected %" PRId64 " ms ago "
				      "and sent no JOIN: disconnecting", since);
			gp_serve_bye(p, GP_BYE_TIMEOUT, "no JOIN in time");
			break;
		case GP_OVERDUE_REQUEST:
			log_rejection(p, "work-timeout", "joined %" PRId64 " ms ago "
				      "and asked for no work: disconnecting", since);
			gp_serve_bye(p, GP_BYE_TIMEOUT, "no work request in time");
			break;
		case GP_OVERDUE_NONE:
			break;
		}
	}
	gp_bg_check_revoked(srv, now);
	if (srv->job.checkpoint_interval_ms &&
	    now - srv->last_checkpoint_ms >= (int64_t)srv->job.checkpoint_interval_ms &&
	    srv->pool.applied_since_checkpoint > 0)
		srv->pool.checkpoint_wanted = true;
	gp_bg_kick_db(srv, false);
	if (gp_serve_serving_work(srv))
		gp_work_serve_all(&srv->pool);
	if (srv->has_job)
		gp_serve_progress_tick(srv, now, false);
}

static void walk_close(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/* The job's line on stdout, for the owner and for scripts. */
static void announce_job(struct server *srv)
{
	if (srv->spec.version == 0)
		printf("job %" PRId64 ": model %s, %u epochs, batch %u, "
		       "staleness %u\n", srv->pool.job_id, srv->spec_text,
		       srv->job.epochs, srv->job.batch_size, srv->job.staleness);
	else
		printf("job %" PRId64 ": model %s (%zu layers, %zu parameters), "
		       "%u epochs, batch %u, staleness %u\n", srv->pool.job_id,
		       srv->job.model_file, srv->spec.n_nodes,
		       gp_model_spec_param_count(&srv->spec), srv->job.epochs,
		       srv->job.batch_size, srv->job.staleness);
	fflush(stdout);
}

/* A size from the environment variable `name`, or `dflt` (warned about
 * when it is not a number). */
static size_t env_size(const char *name, size_t dflt)
{
	const char *v = getenv(name);
	char *end;
	unsigned long long n;

	if (!v)
		return dflt;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (!*v || *end || errno || *v == '-') {
		gp_warn("%s=%s: not a size in bytes; %zu is used", name, v,
			dflt);
		return dflt;
	}
	return (size_t)n;
}

/* What the channels do on libuv's pool (docs/architecture.md "Threads"):
 * by default the encryption and the decryption of messages of 256 KiB and
 * more (a large model's pulls and updates; GP_SEAL_OFFLOAD_MIN and
 * GP_OPEN_OFFLOAD_MIN move the sizes; 0 keeps those on the loop);
 * GP_SERVE_OFFLOAD=1 (on, true, yes) adds the handshakes,
 * GP_SERVE_OFFLOAD=0 (off, false, no) keeps everything on the loop.
 * Handshakes are not offloaded by default: on the 2-core machine, where the
 * simulated agents take the other core, that cost more than it saved at
 * 10,000 agents (docs/performance.md "Scale", 2026-12-06). */
static void set_offload(struct server *srv)
{
	const char *mode = getenv("GP_SERVE_OFFLOAD");
	bool off = false, handshakes = false;

	if (mode) {
		off = !strcmp(mode, "0") || !strcasecmp(mode, "off") ||
		      !strcasecmp(mode, "false") || !strcasecmp(mode, "no");
		handshakes = !strcmp(mode, "1") || !strcasecmp(mode, "on") ||
			     !strcasecmp(mode, "true") ||
			     !strcasecmp(mode, "yes");
		if (!off && !handshakes)
			gp_warn("GP_SERVE_OFFLOAD=%s: neither 0 nor 1; as if "
				"unset", mode);
	}
	if (off)
		return;
	srv->chcfg.handshake_offload = handshakes;
	srv->chcfg.seal_offload_min = env_size("GP_SEAL_OFFLOAD_MIN",
					       GP_CHANNEL_SEAL_OFFLOAD_MIN);
	srv->chcfg.open_offload_min = env_size("GP_OPEN_OFFLOAD_MIN",
					       GP_CHANNEL_OPEN_OFFLOAD_MIN);
}

/* The threads that share an update's numeric passes and the pulls'
 * payloads with the loop thread (gp_pool.par, par.h): GP_SERVE_THREADS
 * helpers (0: none), by default one fewer than the CPUs serve may run
 * on (gp_par_cores). Models under GP_PAR_MIN parameters never use them. */
static void start_par(struct server *srv)
{
	const char *env = getenv("GP_SERVE_THREADS");
	unsigned n = gp_par_default_threads(gp_par_cores());
	int r;

	if (env) {
		char *end;
		unsigned long v = strtoul(env, &end, 10);

		if (*env && !*end && v <= GP_PAR_THREADS_MAX)
			n = (unsigned)v;
		else
			gp_warn("GP_SERVE_THREADS=%s: not a number from 0 to %u;"
				" ignored", env, GP_PAR_THREADS_MAX);
	}
	if (n == 0)
		return;
	r = gp_par_create(n, &srv->pool.par);
	if (r < 0) {
		gp_log_errno(GP_LOG_WARN, r, "cannot start the apply threads;"
			     " updates are applied on the loop thread alone");
		return;
	}
	gp_info("%u thread(s) share the updates' numeric passes with the "
		"loop (models from %d parameters)", n, GP_PAR_MIN);
}

/* Listens on `listen` (ADDR:PORT, borrowed) with the coordinator's key,
 * prints the bound address, and starts the beacons if the job wants them.
 * Returns 0 or a negative errno (logged). */
static int start_listening(struct server *srv, const char *listen)
{
	struct gp_channel_callbacks cb = {
		.on_verify = on_verify,
		.on_message = on_message,
		.on_close = on_close,
		.on_drain = on_drain,
	};
	struct gp_noise_keypair *kp = NULL;
	struct sockaddr_storage addr;
	int r;

	r = gp_setup_listen_addr(listen, &addr);
	if (r < 0) {
		gp_error("listen address '%s' is not ADDR:PORT", listen);
		return r;
	}
	r = gp_noise_keypair_create(srv->st.id->private_key, &kp);
	if (r < 0)
		return r;
	gp_setup_raise_nofile();
	gp_channel_config_default(&srv->chcfg);
	srv->chcfg.write_low_water = GP_SERVE_PULL_LOW_WATER;
	set_offload(srv);
	if (srv->job.heartbeat_interval_ms)
		srv->chcfg.heartbeat_ms = (uint32_t)srv->job.heartbeat_interval_ms;
	if (srv->job.heartbeat_timeout_ms)
		srv->chcfg.idle_timeout_ms = (uint32_t)srv->job.heartbeat_timeout_ms;
	srv->listen_data.srv = srv;
	srv->listen_data.listener_data = true;
	r = gp_channel_listen(&srv->loop, (struct sockaddr *)&addr, kp,
			      &srv->chcfg, &cb, &srv->listen_data, &srv->listener);
	gp_noise_keypair_destroy(kp);
	if (r < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "cannot listen on %s", listen);
		return r;
	}
	/* The bound port on one line, for scripts and tests that ask for
	 * port 0. */
	printf("listening on %.*s:%d\n", (int)(strrchr(listen, ':') - listen),
	       listen, gp_channel_listener_port(srv->listener));
	fflush(stdout);
	if (srv->has_job)
		announce_job(srv);
	else if (!srv->exit_when_done)
		printf("no job queued: waiting for one (gradpool-coordinator "
		       "job add FILE)\n");
	fflush(stdout);
	if (srv->job.beacon) {
		/* Beacons are hints for agents whose token endpoints went stale;
		 * a failure here costs discovery, not the job. */
		r = gp_announce_start(&srv->loop, srv->st.id->public_key,
				      (uint16_t)gp_channel_listener_port(srv->listener),
				      (uint16_t)srv->job.beacon_port,
				      srv->job.beacon_interval_ms, &srv->announce);
		if (r < 0)
			gp_log_errno(GP_LOG_WARN, r, "cannot send beacons to port %u",
				     srv->job.beacon_port);
	}
	return 0;
}

/* What the owner's status reads besides the update log: no connection is
 * counted yet (a killed serve could not count its own down), and when
 * this serve started. A failure costs status its figures, not the job. */
static void record_start(struct server *srv)
{
	struct gp_ledger *l = srv->st.ledger;
	char now[32];
	char pid[32];

	snprintf(now, sizeof(now), "%" PRId64, gp_now_ms());
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	if (gp_ledger_agents_disconnected(l) < 0 ||
	    gp_ledger_meta_set(l, GP_META_SERVE_STARTED, now) < 0 ||
	    gp_ledger_meta_set(l, GP_META_SERVE_PID, pid) < 0)
		gp_warn("%s: %s", srv->st.ledger_path, gp_ledger_error(l));
}

/* A resumed job whose last completed epoch has no evaluation row: the
 * evaluation runs in the background after the epoch, so a kill between
 * the epoch's end (or a checkpoint just after it) and the row loses it,
 * and the ledger would miss that epoch's held-out loss for good. It is
 * run now on the restored parameters (the checkpoint's, at most a
 * checkpoint interval past the epoch's end). A finished job is left to
 * start_job's final evaluation. */
static void eval_lost_epoch(struct server *srv)
{
	struct gp_ledger_eval *ev = NULL;
	uint32_t done = gp_sched_epoch(srv->pool.sched);
	bool found = false;
	size_t n = 0;

	if (!srv->job.eval || done == 0 || gp_sched_done(srv->pool.sched) ||
	    gp_ledger_eval_list(srv->st.ledger, srv->pool.job_id, &ev, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++)
		found |= ev[i].epoch == (int64_t)done - 1;
	free(ev);
	if (found)
		return;
	gp_info("epoch %u's evaluation was lost with the last serve: "
		"evaluating the restored parameters for it", done);
	srv->eval_pending = 1;
	gp_bg_start_eval(srv, false);
}

/* Sets a job up (job_path, borrowed, or the ledger's job_id) and starts
 * serving it: its size for status, a job whose schedule is complete
 * goes to its final evaluation, the members waiting between jobs are
 * told to reconnect for it. Returns 0 or a negative errno (logged; a
 * ledger job that cannot be set up is marked failed). */
static int start_job(struct server *srv, const char *job_path, int64_t job_id)
{
	int r;

	r = gp_setup_job(srv, job_path, job_id);
	if (r < 0) {
		if (job_id > 0 && r != -EALREADY) {
			gp_error("job %" PRId64 " cannot start: marked failed",
				 job_id);
			gp_ledger_job_set_state(srv->st.ledger, job_id,
						GP_JOB_FAILED, gp_now_ms());
		}
		gp_setup_teardown(srv);
		return r;
	}
	srv->has_job = true;
	srv->job_ending = srv->cancelled = false;
	/* What the agents are told starts anew with each job. */
	memset(&srv->progress, 0, sizeof(srv->progress));
	gp_serve_progress_start(srv, job_path);
	if (gp_ledger_job_set_size(srv->st.ledger, srv->pool.job_id,
				   srv->job.epochs,
				   gp_sched_minibatches(srv->pool.sched),
				   (int64_t)srv->n_train) < 0)
		gp_warn("%s: %s", srv->st.ledger_path,
			gp_ledger_error(srv->st.ledger));
	srv->last_checkpoint_ms = srv->queue_checked_ms = gp_now_ms();
	srv->run_start_us = srv->epoch_start_us = gp_mono_us();
	gp_notify_status("serving a job");
	if (srv->listener) {
		announce_job(srv);
		for (struct peer *p = first_peer(srv); p; p = next_peer(p))
			if (p->idle)
				gp_serve_bye(p, GP_BYE_JOB_CHANGED,
					     "a job started: reconnect now");
	}
	eval_lost_epoch(srv);
	if (gp_sched_done(srv->pool.sched)) {
		gp_info("job %" PRId64 " is already complete", srv->pool.job_id);
		srv->done = true;
		srv->eval_pending = 1;
		gp_bg_start_eval(srv, false);
	}
	return 0;
}

/* Starts the job the ledger says is next (one left running, else the
 * oldest queued), if any; one that fails to start is skipped. */
static void start_next_job(struct server *srv)
{
	int64_t id;

	srv->queue_checked_ms = gp_now_ms();
	while (!srv->has_job && !srv->pool.stopping &&
	       gp_ledger_job_next(srv->st.ledger, &id) == 0) {
		gp_info("starting job %" PRId64 " from the queue", id);
		if (start_job(srv, NULL, id) < 0 &&
		    gp_ledger_job_next(srv->st.ledger, &id) == 0 &&
		    id == srv->pool.job_id)
			break; /* could not even mark it failed */
	}
}

/* The owner's page, beside the pool: a failure is said and costs the
 * page only. */
static void start_web(struct server *srv, const char *web)
{
	int r;

	if (!web)
		return;
	r = gp_coord_web_start(web, srv->st.ledger_path, &srv->web);
	if (r < 0) {
		gp_log_errno(GP_LOG_WARN, r, "the owner's page on %s is off", web);
		return;
	}
	printf("owner's page: http://%s:%u/\n",
	       strncmp(web, "[::1]", 5) == 0 || strncmp(web, "::1", 3) == 0 ?
		       "[::1]" : "127.0.0.1",
	       gp_coord_web_port(srv->web));
	fflush(stdout);
}

int gp_serve_run(const char *state_dir, const char *job_path,
		 const char *listen, const char *web, unsigned flags)
{
	struct server *srv = calloc(1, sizeof(*srv));
	char meta_listen[128] = "";
	int lock_fd = -1;
	int r;

	if (!srv)
		return -ENOMEM;
	srv->pool.job = &srv->job;
	srv->pool.fx = &gp_serve_effects;
	srv->pool.fx_data = srv;
	srv->exit_when_done = flags & GP_SERVE_EXIT_WHEN_DONE;
	srv->take_queue = flags & GP_SERVE_QUEUE;
	gp_job_defaults(&srv->job);
	r = uv_loop_init(&srv->loop);
	if (r < 0)
		goto out_free;
	start_par(srv);
	r = gp_coord_state_open(&srv->st, state_dir, 0);
	if (r < 0)
		goto out;
	lock_fd = gp_coord_state_lock(state_dir);
	if (lock_fd < 0) {
		r = lock_fd;
		goto out;
	}
	r = gp_identity_derive_key(srv->st.id, "gp-token-secret", srv->token_key);
	if (r < 0)
		goto out;
	if (job_path) {
		r = start_job(srv, job_path, 0);
		if (r < 0 && (r != -EALREADY || !srv->take_queue))
			goto out;
		/* Its [pool] settings are the listener's: kept when it
		 * ended before (gp_setup_teardown leaves srv->job). */
	}
	if (!srv->has_job && srv->take_queue)
		start_next_job(srv);
	if (!srv->has_job && srv->exit_when_done) {
		printf("no job queued: nothing to do\n");
		r = 0;
		goto out;
	}
	if (!listen && !job_path &&
	    gp_ledger_meta_get(srv->st.ledger, GP_META_LISTEN, meta_listen,
			       sizeof(meta_listen)) >= 0 && meta_listen[0])
		listen = meta_listen;

	/* Only now: a job file that does not parse leaves the ledger as it
	 * was. */
	record_start(srv);
	r = start_listening(srv, listen ? listen : srv->job.listen);
	if (r < 0)
		goto out;
	start_web(srv, web);
	gp_notify_ready(srv->has_job ? "serving a job" : "no job: waiting for one");
	uv_timer_init(&srv->loop, &srv->tick);
	srv->tick.data = srv;
	uv_idle_init(&srv->loop, &srv->serve_idle);
	srv->serve_idle.data = srv;
	gp_serve_defer_init(srv);
	uv_timer_start(&srv->tick, on_tick, TICK_MS, TICK_MS);
	uv_signal_init(&srv->loop, &srv->sigint);
	uv_signal_init(&srv->loop, &srv->sigterm);
	srv->sigint.data = srv->sigterm.data = srv;
	uv_signal_start(&srv->sigint, on_signal, SIGINT);
	uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
	signal(SIGPIPE, SIG_IGN);

	uv_run(&srv->loop, UV_RUN_DEFAULT);
	r = 0;
out:
	gp_coord_web_stop(srv->web);
	if (srv->listener)
		gp_channel_listener_destroy(srv->listener);
	gp_announce_destroy(srv->announce);
	uv_walk(&srv->loop, walk_close, NULL);
	uv_run(&srv->loop, UV_RUN_DEFAULT);
	uv_loop_close(&srv->loop);
	gp_serve_defer_finish(srv);
	if (srv->st.ledger)
		gp_ledger_flush(srv->st.ledger);
	gp_setup_teardown(srv);
	gp_members_finish(&srv->pool);
	gp_work_finish(&srv->pool);
	explicit_bzero(srv->token_key, sizeof(srv->token_key));
	gp_coord_state_close(&srv->st);
	gp_par_destroy(srv->pool.par);
	if (lock_fd >= 0)
		close(lock_fd); /* last: the ledger is closed */
out_free:
	free(srv);
	return r;
}
