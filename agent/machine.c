/* The agent session's decisions (machine.h). Nothing here touches a
 * socket, a timer or a thread: each event comes in as a call, and what is
 * to be done goes out through m->ops. */
#include "machine.h"
#include "machine-impl.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gp-config.h"
#include "log.h"
#include "util.h"

_Static_assert(GP_WORKER_GROUP_MAX == GP_MSG_GROUP_MAX,
	       "a worker's group is one UPDATE's items");


size_t gp_machine_split_endpoints(const char *list,
				  char out[][GP_MACHINE_ENDPOINT_MAX],
				  size_t max)
{
	size_t n = 0;
	const char *p = list;

	while (*p && n < max) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);

		if (len && len < GP_MACHINE_ENDPOINT_MAX) {
			memcpy(out[n], p, len);
			out[n][len] = '\0';
			n++;
		}
		if (!e)
			break;
		p = e + 1;
	}
	return n;
}

void gp_machine_init(struct gp_machine *m, const struct gp_session_config *cfg,
		     const struct gp_token *token, enum gp_machine_mode mode,
		     const struct gp_dataset *data, uint64_t data_fingerprint,
		     const struct gp_machine_ops *ops, void *ctx)
{
	memset(m, 0, sizeof(*m));
	m->cfg = cfg;
	m->token = token;
	m->mode = mode;
	m->data = data;
	m->data_fingerprint = data_fingerprint;
	m->ops = ops;
	m->ctx = ctx;
	snprintf(m->public_name, sizeof(m->public_name), "%s",
		 cfg->public_name);
}

/* Forgets the parameters received (GP_CAP_PARAM_DELTA's mirror). */
static void mirror_drop(struct gp_machine *m)
{
	for (size_t t = 0; t < m->n_mirror; t++)
		free(m->mirror[t]);
	free(m->mirror);
	m->mirror = NULL;
	m->n_mirror = 0;
}

void gp_machine_finish(struct gp_machine *m)
{
	gp_feedback_finish(&m->feedback);
	mirror_drop(m);
}

static void status_changed(struct gp_machine *m)
{
	if (m->mode == GP_MACHINE_RUN)
		m->ops->status(m->ctx);
}

int gp_machine_send(struct gp_machine *m, struct gp_msg *msg)
{
	if (!m->connected)
		return -ENOTCONN;
	return m->ops->send(m->ctx, msg);
}

static void send_work_request(struct gp_machine *m)
{
	struct gp_msg msg;

	/* No work before the data set is in (its WORK_REQUEST follows). */
	if (m->fetching)
		return;
	gp_msg_init(&msg, GP_MSG_WORK_REQUEST);
	msg.u.work_request.count = 1;
	gp_machine_send(m, &msg);
}

void gp_machine_set_public_name(struct gp_machine *m, const char *name)
{
	struct gp_msg msg;

	snprintf(m->public_name, sizeof(m->public_name), "%s", name);
	if (!m->welcomed || !(m->caps & GP_CAP_PROGRESS) ||
	    !m->ops->established(m->ctx))
		return;
	gp_msg_init(&msg, GP_MSG_PROFILE);
	snprintf(msg.u.profile.public_name, sizeof(msg.u.profile.public_name),
		 "%s", m->public_name);
	gp_machine_send(m, &msg);
}

bool gp_machine_paused(const struct gp_machine *m)
{
	return m->user_paused || m->finishing || m->verdict != GP_POLICY_RUN;
}

/* ---- the end, bye, dropping a connection ------------------------------ */

static void beacon_stop(struct gp_machine *m)
{
	if (!m->beacon_on)
		return;
	m->beacon_on = false;
	m->ops->beacon(m->ctx, false);
}

static void beacon_start(struct gp_machine *m)
{
	if (m->beacon_on || !m->cfg->beacon_port || m->mode != GP_MACHINE_RUN)
		return;
	if (m->ops->beacon(m->ctx, true) >= 0)
		m->beacon_on = true;
}

static void say_bye(struct gp_machine *m, uint16_t reason, const char *text)
{
	struct gp_msg msg;

	if (!m->connected)
		return;
	gp_msg_init(&msg, GP_MSG_BYE);
	msg.u.bye.reason = reason;
	snprintf(msg.u.bye.text, sizeof(msg.u.bye.text), "%s", text);
	gp_machine_send(m, &msg);
	m->ops->close(m->ctx, reason, text);
}

void gp_machine_stop(struct gp_machine *m, int result)
{
	if (m->stopping)
		return;
	m->stopping = true;
	m->result = result;
	if (m->mode == GP_MACHINE_LEAVE)
		say_bye(m, GP_BYE_NORMAL, "the volunteer left the pool");
	else if (m->connected)
		m->ops->close(m->ctx, GP_BYE_SHUTDOWN, "agent stopping");
	beacon_stop(m);
	m->ops->retry(m->ctx, 0);
	m->ops->stopped(m->ctx);
}

/* Ends the current connection because of work this agent cannot do (a
 * step failed, a minibatch it cannot take): the coordinator's on_close
 * puts every minibatch it handed this agent back in the queue at once,
 * where staying connected and silent would hold its SSP clock (and every
 * other agent with it) until the work timeout. The queued work is dropped
 * and the next connection follows with the usual backoff. why is logged
 * and sent as the close text. */
void gp_machine_drop_session(struct gp_machine *m, uint16_t code,
			     const char *fmt, ...)
{
	char why[GP_CHANNEL_TEXT_MAX + 1];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	/* A new generation now, not at on_close: results of this
	 * connection's work already on their way are stale from here on. */
	if (m->have_worker)
		m->ops->worker_drop_queued(m->ctx);
	if (!m->connected || m->stopping || !m->ops->established(m->ctx))
		return; /* closing already */
	gp_warn("%s; dropping the connection so that the coordinator hands "
		"this agent's work out again", why);
	m->work_failures++;
	m->ops->close(m->ctx, code, why);
}

/* ---- pausing ---------------------------------------------------------- */

/* Tells the coordinator whether to send work, when that changed. PAUSE
 * goes before any work request of a new connection, so that a paused agent
 * gets no minibatch at all; the ones already queued are finished. */
static void sync_pause(struct gp_machine *m)
{
	struct gp_msg msg;
	bool want = gp_machine_paused(m);

	if (!m->welcomed || want == m->told_paused)
		return;
	if (want) {
		gp_msg_init(&msg, GP_MSG_PAUSE);
		msg.u.pause.reason =
			m->user_paused ? GP_PAUSE_USER :
			m->verdict == GP_POLICY_ON_BATTERY ? GP_PAUSE_ON_BATTERY :
			m->verdict == GP_POLICY_NOT_IDLE ? GP_PAUSE_NOT_IDLE :
							   GP_PAUSE_LIMIT;
		msg.u.pause.duration_ms = 0;
	} else {
		gp_msg_init(&msg, GP_MSG_RESUME);
	}
	if (gp_machine_send(m, &msg) < 0)
		return;
	m->told_paused = want;
	if (!want)
		send_work_request(m);
}

void gp_machine_set_user_paused(struct gp_machine *m, bool paused)
{
	m->user_paused = paused;
	if (!paused)
		m->pause_until = 0;
	sync_pause(m);
	status_changed(m);
}

/* Stops a finishing agent once nothing it holds is unanswered, nor can be
 * on its way: the coordinator answers messages in order and hands out no
 * work once it read PAUSE, so when the HEARTBEAT sent after the PAUSE is
 * answered, every MINIBATCH sent before has arrived (and is in hand). */
static void maybe_finished(struct gp_machine *m)
{
	if (!m->finishing || m->stopping)
		return;
	if (m->connected && m->welcomed &&
	    (m->in_hand > 0 || (m->finish_seq && !m->finish_heard)))
		return;
	gp_info("finished the work in hand: stopping");
	gp_machine_stop(m, 0);
}

void gp_machine_drain(struct gp_machine *m)
{
	if (m->stopping)
		return;
	if (!m->finishing)
		gp_info("finishing: %" PRIu64 " minibatch(es) in hand, no new work",
			m->in_hand);
	m->finishing = true;
	sync_pause(m);
	/* Called again while finishing (GP_MACHINE_FINISH_RESEND_MS): one
	 * more HEARTBEAT while none was answered; any answer will do. */
	if (m->connected && m->welcomed && m->told_paused && !m->finish_heard) {
		struct gp_msg msg;

		gp_msg_init(&msg, GP_MSG_HEARTBEAT);
		msg.u.heartbeat.seq = ++m->heartbeat_seq;
		msg.u.heartbeat.time_us = gp_mono_us();
		if (gp_machine_send(m, &msg) == 0 && !m->finish_seq)
			m->finish_seq = msg.u.heartbeat.seq;
	}
	status_changed(m);
	maybe_finished(m);
}

void gp_machine_on_policy(struct gp_machine *m, enum gp_policy_verdict verdict,
			  const char *why)
{
	bool was = gp_machine_paused(m);

	if (m->stopping)
		return;
	m->verdict = verdict;
	snprintf(m->policy_why, sizeof(m->policy_why), "%s", why);
	if (was != gp_machine_paused(m))
		gp_info("%s", gp_machine_paused(m) ? m->policy_why :
			"policy allows computing again");
	sync_pause(m);
	status_changed(m);
}

/* ---- connecting ------------------------------------------------------- */

static void schedule_retry(struct gp_machine *m)
{
	uint64_t base, jitter;

	if (m->stopping || (m->mode == GP_MACHINE_RUN && !m->have_pool))
		return;
	/* Exponential backoff with full jitter in [base/2, base]. */
	m->backoff_ms = m->backoff_ms ? m->backoff_ms * 2 : GP_MACHINE_BACKOFF_MIN_MS;
	if (m->backoff_ms > GP_MACHINE_BACKOFF_MAX_MS)
		m->backoff_ms = GP_MACHINE_BACKOFF_MAX_MS;
	base = m->backoff_ms;
	jitter = base / 2 + (uint64_t)rand() % (base / 2 + 1);
	m->ops->retry(m->ctx, jitter);
}

void gp_machine_connect(struct gp_machine *m)
{
	char eps[GP_MACHINE_ENDPOINTS_MAX][GP_MACHINE_ENDPOINT_MAX];
	const char *ep;
	size_t n;
	int r;

	if (m->stopping || m->connected)
		return;
	if (m->mode == GP_MACHINE_RUN && !m->have_pool)
		return;
	if (m->token) {
		n = m->token->n_endpoints;
		for (size_t i = 0; i < n && i < GP_MACHINE_ENDPOINTS_MAX; i++)
			snprintf(eps[i], sizeof(eps[i]), "%s", m->token->endpoints[i]);
	} else {
		n = gp_machine_split_endpoints(m->pool.endpoints, eps,
					       GP_MACHINE_ENDPOINTS_MAX);
	}
	if (n == 0 && !m->beacon_ep[0]) {
		gp_error("no endpoint to connect to");
		gp_machine_stop(m, -EINVAL);
		return;
	}
	if (m->beacon_ep[0]) {
		ep = m->beacon_ep;
	} else {
		ep = eps[m->endpoint % n];
		m->endpoint++;
	}
	snprintf(m->endpoint_now, sizeof(m->endpoint_now), "%s", ep);
	status_changed(m);
	r = m->ops->connect(m->ctx, ep);
	if (r == -EHOSTUNREACH) {
		gp_warn("%s: cannot resolve", ep);
		snprintf(m->last_error, sizeof(m->last_error), "cannot resolve");
		m->attempts++;
		if (m->attempts >= GP_MACHINE_BEACON_AFTER)
			beacon_start(m);
		schedule_retry(m);
	} else if (r < 0) {
		m->attempts++;
		schedule_retry(m);
	} else {
		m->connected = true;
	}
}

void gp_machine_start(struct gp_machine *m)
{
	if (m->mode == GP_MACHINE_LEAVE) {
		m->pool = m->cfg->pool;
		m->have_pool = true;
	}
	if (m->mode != GP_MACHINE_RUN)
		gp_machine_connect(m);
	else
		status_changed(m);
}

void gp_machine_on_established(struct gp_machine *m)
{
	struct gp_msg msg;
	const struct gp_session_config *cfg = m->cfg;

	gp_msg_init(&msg, GP_MSG_JOIN);
	snprintf(msg.u.join.name, sizeof(msg.u.join.name), "%s", cfg->name);
	snprintf(msg.u.join.release, sizeof(msg.u.join.release), "%s", GP_VERSION);
	if (m->token) {
		msg.u.join.token_id = m->token->id;
		msg.u.join.token_id_len = GP_TOKEN_ID_SIZE;
	}
	msg.u.join.caps = GP_CAP_F16 | GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
			  GP_CAP_MOMENTUM | GP_CAP_Q8 | GP_CAP_MODEL_TEXT |
			  GP_CAP_PROGRESS | GP_CAP_JOBS | GP_CAP_PARAM_DELTA |
			  GP_CAP_Q4 | GP_CAP_Q4_DELTA | GP_CAP_ZERO_MIRROR;
	if (m->ops->worker_set_inner)
		msg.u.join.caps |= GP_CAP_INNER_ADAMW;
	if (m->ops->worker_set_inner && m->ops->worker_rebase_params)
		msg.u.join.caps |= GP_CAP_OVERLAP;
	snprintf(msg.u.join.public_name, sizeof(msg.u.join.public_name), "%s",
		 m->public_name);
	if (m->data || m->tokens) {
		msg.u.join.caps |= GP_CAP_LOCAL_DATA;
		msg.u.join.data_fingerprint = m->data_fingerprint;
	}
	if (gp_machine_can_verify(m))
		msg.u.join.caps |= GP_CAP_VERIFY;
	if (m->ops->data_open)
		msg.u.join.caps |= GP_CAP_DATA_SHARDS;
	msg.u.join.devices = (struct gp_msg_device *)cfg->devices;
	msg.u.join.n_devices = cfg->n_devices;
	gp_machine_send(m, &msg);
}

/* Whether a close ends the session: a key that does not match a token, a
 * refusal the agent cannot get past, the end of the job it was to wait
 * for. Logs why the connection ended. */
static bool close_is_final(struct gp_machine *m, enum gp_close_reason reason,
			   uint16_t code, const char *text)
{
	if (reason == GP_CLOSE_KEY_MISMATCH) {
		gp_error("the coordinator's key does not match the %s: %s",
			 m->token ? "token" : "pinned key", text);
		if (m->token) {
			gp_machine_stop(m, -EKEYREVOKED);
			return true;
		}
	} else if (reason == GP_CLOSE_REJECTED) {
		gp_error("the coordinator refused: %s (%s)", text,
			 gp_msg_reject_str(code));
		if (m->mode != GP_MACHINE_RUN || code == GP_REJECT_AGENT_REVOKED ||
		    code == GP_REJECT_UNKNOWN_AGENT) {
			gp_machine_stop(m, -EKEYREJECTED);
			return true;
		}
	} else if (reason == GP_CLOSE_PEER_CLOSED && m->done &&
		   m->cfg->exit_when_done) {
		gp_machine_stop(m, 0);
		return true;
	} else {
		gp_info("disconnected: %s: %s", gp_channel_close_reason_name(reason),
			text);
	}
	return false;
}

void gp_machine_on_close(struct gp_machine *m, enum gp_close_reason reason,
			 uint16_t code, const char *text)
{
	bool was_welcomed = m->welcomed;

	m->connected = false;
	m->welcomed = false;
	m->idle = false;
	m->fetching = false;
	m->told_paused = false;
	m->in_hand = 0; /* handed out again by the coordinator */
	memset(m->arrivals, 0, sizeof(m->arrivals));
	m->finish_seq = 0;
	m->finish_heard = false;
	if (m->have_worker)
		m->ops->worker_drop_queued(m->ctx);
	if (m->stopping)
		return;
	if (m->finishing) {
		maybe_finished(m);
		return;
	}
	if (m->mode == GP_MACHINE_RUN && !m->have_pool) {
		status_changed(m); /* left the pool: wait for another */
		return;
	}
	if (m->connect_now) {
		m->connect_now = false;
		gp_machine_connect(m);
		return;
	}
	if (close_is_final(m, reason, code, text))
		return;
	snprintf(m->last_error, sizeof(m->last_error), "%s",
		 gp_channel_close_reason_name(reason));
	/* An address from a beacon that failed is forgotten; the next beacon
	 * brings it back if it is still right. */
	if (!was_welcomed && m->beacon_ep[0] &&
	    strcmp(m->beacon_ep, m->endpoint_now) == 0)
		m->beacon_ep[0] = '\0';
	m->attempts++;
	if ((m->mode == GP_MACHINE_JOIN && m->attempts >= GP_MACHINE_JOIN_ATTEMPTS) ||
	    (m->mode == GP_MACHINE_LEAVE && m->attempts >= GP_MACHINE_LEAVE_ATTEMPTS)) {
		gp_error("no endpoint of the %s answered",
			 m->token ? "token" : "membership");
		gp_machine_stop(m, -ETIMEDOUT);
		return;
	}
	if (m->attempts >= GP_MACHINE_BEACON_AFTER)
		beacon_start(m);
	status_changed(m);
	schedule_retry(m);
}

/* ---- memberships and beacons ------------------------------------------ */

void gp_machine_on_members(struct gp_machine *m, bool found,
			   const struct gp_stats_membership *mem)
{
	if (m->stopping)
		return;
	m->members_read = true;
	if (m->have_pool && (!found || strcmp(mem->pool, m->pool.pool) != 0)) {
		/* The volunteer left (or switched pools): say bye and wait. */
		gp_info("no longer a member of pool %.16s", m->pool.pool);
		m->have_pool = false;
		m->ops->retry(m->ctx, 0);
		beacon_stop(m);
		say_bye(m, GP_BYE_NORMAL, "the volunteer left the pool");
		m->beacon_ep[0] = '\0';
		status_changed(m);
	}
	if (!m->have_pool && found) {
		m->pool = *mem;
		m->have_pool = true;
		m->attempts = 0;
		m->backoff_ms = 0;
		m->endpoint = 0;
		gp_info("working for pool %.16s at %s", m->pool.pool,
			m->pool.endpoints);
		if (!m->connected)
			gp_machine_connect(m);
		else
			m->connect_now = true; /* the old pool's channel is closing */
	}
	status_changed(m);
}

/* The address a beacon gave worked: put it first in the membership's
 * endpoints, so that the next start tries it at once. */
static void remember_endpoint(struct gp_machine *m)
{
	struct gp_stats_membership mem;
	char eps[GP_MACHINE_ENDPOINTS_MAX][GP_MACHINE_ENDPOINT_MAX];
	size_t n, off;

	if (!m->cfg->stats)
		return;
	mem = m->pool;
	n = gp_machine_split_endpoints(m->pool.endpoints, eps,
				       GP_MACHINE_ENDPOINTS_MAX);
	off = (size_t)snprintf(mem.endpoints, sizeof(mem.endpoints), "%s",
			       m->beacon_ep);
	for (size_t i = 0; i < n && off < sizeof(mem.endpoints); i++)
		if (strcmp(eps[i], m->beacon_ep) != 0 &&
		    off + 1 + strlen(eps[i]) < sizeof(mem.endpoints))
			off += (size_t)snprintf(mem.endpoints + off,
						sizeof(mem.endpoints) - off, ",%s",
						eps[i]);
	m->pool = mem;
	m->ops->remember(m->ctx, &mem);
}

void gp_machine_on_beacon(struct gp_machine *m, const uint8_t *key,
			  const char *ep, uint64_t now_us)
{
	/* Only our pool's key; everything else on the network is noise. */
	if (!m->have_pool ||
	    memcmp(key, m->pool.coordinator_key, GP_STATS_KEY_SIZE) != 0)
		return;
	if (m->beacon_last_us && now_us - m->beacon_last_us < GP_MACHINE_BEACON_GAP_US)
		return;
	m->beacon_last_us = now_us;
	if (m->welcomed || (m->connected && strcmp(ep, m->endpoint_now) == 0))
		return; /* connected, or already trying that address */
	gp_info("beacon: pool %.16s announces itself at %s", m->pool.pool, ep);
	snprintf(m->beacon_ep, sizeof(m->beacon_ep), "%s", ep);
	/* Try it now, abandoning an attempt that may hang on a dead address;
	 * the handshake against the pinned key decides whether it is ours. */
	m->ops->retry(m->ctx, 0);
	if (m->connected) {
		m->connect_now = true;
		m->ops->close(m->ctx, GP_BYE_NORMAL, "trying another address");
	} else {
		gp_machine_connect(m);
	}
}

/* ---- messages --------------------------------------------------------- */

/* The WELCOME's model as text: model_text when the coordinator sent it
 * (a description, or the shorthand again), else the shorthand of an older
 * coordinator. Written into m->welcome_spec, NUL-terminated (the decoder
 * checked the length and that it is text). */
static const char *welcome_model(struct gp_machine *m,
				 const struct gp_msg_welcome *w)
{
	size_t n = w->model_text_len;

	if (!w->model_text || n == 0)
		return w->model;
	if (n >= sizeof(m->welcome_spec))
		n = sizeof(m->welcome_spec) - 1;
	memcpy(m->welcome_spec, w->model_text, n);
	m->welcome_spec[n] = '\0';
	return m->welcome_spec;
}

static int start_worker(struct gp_machine *m, const char *spec,
			const struct gp_msg_welcome *w)
{
	/* The failure a test asks for happens once per process. */
	unsigned fail_step = m->test_fail_used ? 0 : m->cfg->test.fail_step;
	int r;

	if (m->have_worker && !m->worker_failed && strcmp(m->spec, spec) == 0 &&
	    m->batch == w->batch_size && m->seed == w->seed)
		return 0;
	if (m->worker_failed)
		gp_info("starting the compute device again after its failure");
	m->have_worker = false;
	m->worker_failed = false;
	m->test_fail_used = true;
	r = m->ops->worker_start(m->ctx, spec, w->seed, w->batch_size,
				 fail_step);
	if (r < 0)
		return r;
	m->have_worker = true;
	m->window = m->vocab = 0;
	{
		struct gp_model_spec ms;

		if (gp_model_spec_parse(spec, &ms, NULL, 0) == 0 &&
		    gp_model_spec_labels(&ms) > 1) {
			m->window = ms.dims[0];
			m->vocab = ms.dims[ms.n_layers];
		}
	}
	snprintf(m->spec, sizeof(m->spec), "%s", spec);
	m->batch = w->batch_size;
	m->seed = w->seed;
	return 0;
}

/* The session's local steps: AdamW from zero moments when WELCOME
 * granted GP_CAP_INNER_ADAMW with its settings (a worker kept from an
 * earlier session starts them afresh too, as a DiLoCo worker joining
 * does), else the SGD steps. Returns 0 or a negative errno. */
static int set_inner(struct gp_machine *m, const struct gp_msg_welcome *w)
{
	struct gp_worker_inner in = { 0 };
	int r;

	if (!m->ops->worker_set_inner)
		return 0;
	if ((w->caps & GP_CAP_INNER_ADAMW) && w->n_inner_adamw == 1) {
		const struct gp_msg_inner_adamw *a = w->inner_adamw;

		in.on = true;
		in.adamw = (struct gp_adamw_config){
			.beta1 = a->beta1,
			.beta2 = a->beta2,
			.eps = a->eps,
			.weight_decay = a->weight_decay,
		};
		in.clip_norm = a->clip_norm;
		in.overlap = (w->caps & GP_CAP_OVERLAP) != 0;
	} else if (w->caps & GP_CAP_INNER_ADAMW) {
		gp_error("WELCOME grants local AdamW steps without their "
			 "settings");
		return -EBADMSG;
	}
	r = m->ops->worker_set_inner(m->ctx, &in);
	if (r < 0)
		gp_error("cannot set the local steps up: %s", strerror(-r));
	return r;
}

/* Asks for missing shards while fewer than GP_MACHINE_DATA_WINDOW are in
 * flight. */
static void fetch_more(struct gp_machine *m)
{
	while (m->data_inflight < GP_MACHINE_DATA_WINDOW) {
		int64_t i = m->ops->data_next(m->ctx);
		struct gp_msg msg;

		if (i < 0)
			break;
		gp_msg_init(&msg, GP_MSG_DATA_REQUEST);
		msg.u.data_request.shard = (uint32_t)i;
		if (gp_machine_send(m, &msg) < 0)
			break;
		m->data_inflight++;
	}
}

/* The data set is in: checks it and asks for work. */
static void data_ready(struct gp_machine *m)
{
	char err[GP_DATA_ERR_MAX];

	m->pool_data = m->ops->data_set(m->ctx, err, sizeof(err));
	if (!m->pool_data) {
		gp_machine_drop_session(m, GP_BYE_PROTOCOL, "%s", err);
		return;
	}
	if (m->fetching)
		gp_info("the data set is complete: %zu samples", m->pool_data->count);
	m->fetching = false;
	status_changed(m);
}

/* WELCOME granted GP_CAP_DATA_SHARDS: opens its manifest and fetches what
 * the cache lacks. Returns true when the data set is ready (or not
 * needed), false when the session waits for shards or was dropped. */
static bool start_data(struct gp_machine *m, const struct gp_msg_welcome *w)
{
	int r;

	m->pool_data = NULL;
	m->fetching = false;
	m->data_inflight = 0;
	m->data_bad = 0;
	if (!(m->caps & GP_CAP_DATA_SHARDS))
		return true;
	if (!m->ops->data_open || !w->data_manifest) {
		gp_machine_drop_session(m, GP_BYE_PROTOCOL,
					"WELCOME grants data shards without a "
					"manifest");
		return false;
	}
	r = m->ops->data_open(m->ctx, w->data_manifest, w->data_manifest_len);
	if (r < 0) {
		gp_machine_drop_session(m, GP_BYE_PROTOCOL,
					"cannot take the data set: %s",
					r == -EFBIG ?
						"too large for this agent" :
						strerror(-r));
		return false;
	}
	if (r == 0) {
		data_ready(m);
		return m->pool_data != NULL;
	}
	m->fetching = true;
	gp_info("fetching the data set: %d shard(s) missing", r);
	fetch_more(m);
	status_changed(m);
	return false;
}

static void handle_data_shard(struct gp_machine *m,
			      const struct gp_msg_data_shard *d)
{
	int r;

	if (!m->fetching)
		return;
	if (m->data_inflight)
		m->data_inflight--;
	r = m->ops->data_put(m->ctx, d->shard, d->data, d->data_len);
	if (r == -EBADMSG) {
		gp_warn("data shard %u does not match its digest: asking again",
			d->shard);
		if (++m->data_bad > GP_MACHINE_DATA_BAD_MAX) {
			gp_machine_drop_session(m, GP_BYE_PROTOCOL,
						"%u data shards did not match "
						"their digests", m->data_bad);
			return;
		}
	} else if (r < 0) {
		gp_machine_drop_session(m, GP_BYE_PROTOCOL,
					"unexpected data shard %u", d->shard);
		return;
	}
	if (r == 1) {
		data_ready(m);
		if (!m->pool_data)
			return;
		if (gp_machine_paused(m))
			sync_pause(m);
		else
			send_work_request(m);
		return;
	}
	fetch_more(m);
	status_changed(m);
}

static void on_welcome(struct gp_machine *m, const struct gp_msg_welcome *w)
{
	const char *spec;

	m->attempts = 0;
	/* After sessions dropped for failed work, the backoff is kept until a
	 * result goes out (gp_machine_on_result). */
	if (!m->work_failures)
		m->backoff_ms = 0;
	m->agent_id = (int64_t)w->agent_id;
	m->caps = w->caps;
	m->have_progress = false;
	/* A new session pulls the coordinator's parameters: what earlier
	 * updates did not send is not owed to them. */
	gp_feedback_reset(&m->feedback);
	m->feedback_group = false;
	mirror_drop(m);
	/* Keep the coordinator's pace: its heartbeat_timeout may be as short
	 * as 1 s, and a paused or idle agent sends nothing but heartbeats; at
	 * the channel's default 5 s it would be closed for idleness again and
	 * again. */
	if (w->heartbeat_ms)
		m->ops->set_heartbeat(m->ctx, w->heartbeat_ms);
	if (m->mode != GP_MACHINE_RUN) { /* join, leave: that is all we came for */
		m->joined = true;
		gp_machine_stop(m, 0);
		return;
	}
	if (w->job_id == 0 && (w->caps & GP_CAP_JOBS)) {
		/* A member, with nothing to do until a job starts (BYE 7). */
		gp_info("connected to %s: agent %" PRId64 "; the pool has no job, "
			"waiting for one", m->endpoint_now, m->agent_id);
		m->welcomed = true;
		m->idle = true;
		m->done = false;
		m->last_error[0] = '\0';
		beacon_stop(m);
		status_changed(m);
		return;
	}
	spec = welcome_model(m, w);
	gp_info("connected to %s: agent %" PRId64 ", job %" PRIu64
		", model %.*s%s, batch %u, staleness %u", m->endpoint_now,
		m->agent_id, w->job_id, 72, spec, strlen(spec) > 72 ? "..." : "",
		w->batch_size, w->staleness);
	if ((w->caps & GP_CAP_Q8) && (w->caps & GP_CAP_Q4))
		gp_info("updates go as 4-bit values with error feedback "
			"(the job's update_bits = 4)");
	if ((w->caps & GP_CAP_PARAM_DELTA) && (w->caps & GP_CAP_Q4_DELTA))
		gp_info("parameter changes come as 4-bit values (the job's "
			"param_bits = 4)");
	if (w->caps & GP_CAP_OVERLAP)
		gp_info("the next run is computed while the last one's update "
			"and the parameters after it are on the wire (overlap)");
	m->updates_sent = 0;
	if (start_worker(m, spec, w) < 0 || set_inner(m, w) < 0) {
		gp_machine_stop(m, -EIO);
		return;
	}
	m->welcomed = true;
	m->done = false;
	m->told_paused = false;
	m->last_error[0] = '\0';
	if (m->beacon_ep[0] && strcmp(m->beacon_ep, m->endpoint_now) == 0)
		remember_endpoint(m);
	beacon_stop(m);
	if (!start_data(m, w))
		return;
	if (gp_machine_paused(m))
		sync_pause(m);
	else
		send_work_request(m);
	status_changed(m);
}

/* The mirror's rows of tensor t (nt tensors, ti its shape) for a
 * parameter block of GP_CAP_PARAM_DELTA, allocated at its first whole
 * block (create), or, with GP_CAP_ZERO_MIRROR, at its first block of
 * any kind (as zeros); NULL without memory, or for a change (!create)
 * to a tensor that no whole block set yet. */
static float *mirror_rows(struct gp_machine *m, size_t nt, size_t t,
			  const struct gp_tensor_info *ti, uint32_t row_start,
			  bool create)
{
	if (!create && (!m->mirror || t >= m->n_mirror || !m->mirror[t]))
		return NULL;
	if (!m->mirror) {
		if (!(m->mirror = calloc(nt, sizeof(*m->mirror))))
			return NULL;
		m->n_mirror = nt;
	}
	if (t >= m->n_mirror)
		return NULL;
	if (!m->mirror[t] &&
	    !(m->mirror[t] = calloc((size_t)ti->rows * ti->cols, sizeof(float))))
		return NULL;
	return m->mirror[t] + (size_t)row_start * ti->cols;
}

/* Takes one block of PARAM_SHARDS into v (count floats): a change is
 * added to the mirror, whose rows then are the values; a whole block of
 * parameters sets the mirror's rows (GP_CAP_PARAM_DELTA). false: the
 * session must be dropped (why says why), since the mirror no longer
 * matches the coordinator's. */
static bool take_block(struct gp_machine *m, const struct gp_msg_block *b,
		       size_t nt, size_t t, enum gp_model_slot slot,
		       const struct gp_tensor_info *ti, float *v,
		       const char **why)
{
	bool q4 = b->dtype == GP_DTYPE_Q4_DELTA;
	bool delta = b->dtype == GP_DTYPE_Q8_DELTA || q4;
	float *mir = NULL;

	if (delta && (slot != GP_MODEL_PARAM ||
		      !(m->caps & GP_CAP_PARAM_DELTA) ||
		      (q4 && !(m->caps & GP_CAP_Q4_DELTA)))) {
		*why = "a change that was not granted";
		return false;
	}
	if (slot == GP_MODEL_PARAM && (m->caps & GP_CAP_PARAM_DELTA) &&
	    !(mir = mirror_rows(m, nt, t, ti, b->row_start,
				!delta || (m->caps & GP_CAP_ZERO_MIRROR)))) {
		*why = delta ? "a change before the parameters" :
			       "no memory for the mirror";
		return false;
	}
	if (delta) {
		if (gp_msg_block_add(b, mir, b->count) < 0) {
			*why = "a change whose sum is not finite";
			return false;
		}
		memcpy(v, mir, (size_t)b->count * sizeof(float));
		if (!m->deltas++)
			gp_info("parameters now come as %s changes against "
				"the last ones received", q4 ? "q4" : "q8");
		return true;
	}
	if (gp_msg_block_read(b, v, b->count) < 0) {
		*why = "undecodable";
		return false;
	}
	if (mir)
		memcpy(mir, v, (size_t)b->count * sizeof(float));
	return true;
}

/* GP_CAP_OVERLAP: the worker's run whose cut the parameters of ps hold
 * (PARAM_SHARDS.updates_read: the UPDATEs the coordinator had read),
 * 0 for none yet (the session's start); UINT64_MAX when that UPDATE is
 * not known (more than the coordinator was sent, or too old to be
 * remembered): the blocks then replace the copy, local work and all. */
static uint64_t rebase_ref(struct gp_machine *m,
			   const struct gp_msg_param_shards *ps)
{
	uint64_t h = ps->updates_read;

	if (h == 0)
		return 0;
	if (h > m->updates_sent || m->updates_sent - h >= GP_MACHINE_SENT_RUNS)
		return UINT64_MAX;
	return m->sent_runs[h % GP_MACHINE_SENT_RUNS];
}

static void handle_shards(struct gp_machine *m, const struct gp_msg_param_shards *ps)
{
	size_t nt = m->ops->worker_tensor_count(m->ctx);
	bool rebase = (m->caps & GP_CAP_OVERLAP) && m->ops->worker_rebase_params;
	uint64_t ref = rebase ? rebase_ref(m, ps) : UINT64_MAX;

	if (rebase) {
		m->rebases++;
		if (ref != UINT64_MAX && ref != 0 && ++m->rebases_kept == 1)
			gp_info("parameters came under the work in hand: they "
				"hold update %" PRIu64 " of %" PRIu64 " sent, and "
				"the local steps since go on on top of them",
				ps->updates_read, m->updates_sent);
		if (ref == UINT64_MAX && m->rebases_lost++ % 100 == 0)
			gp_warn("parameters that hold update %" PRIu64 " of %"
				PRIu64 " sent: they replace the copy, with the "
				"local steps since (%" PRIu64 " of %" PRIu64
				" pulls so far)", ps->updates_read,
				m->updates_sent, m->rebases_lost, m->rebases);
	}

	for (size_t i = 0; i < ps->n_blocks; i++) {
		const struct gp_msg_block *b = &ps->blocks[i];
		/* Tensors n..2n-1: the server's momentum of tensors 0..n-1. */
		enum gp_model_slot slot = b->tensor >= nt ? GP_MODEL_MOMENTUM :
							    GP_MODEL_PARAM;
		size_t t = b->tensor >= nt ? b->tensor - nt : b->tensor;
		const struct gp_tensor_info *ti = m->ops->worker_tensor(m->ctx, t);
		size_t rows = b->rows ? b->rows : (ti ? ti->rows : 0);
		const char *why = NULL;
		float *v;

		if (!ti || b->row_start + rows > ti->rows ||
		    (uint64_t)rows * ti->cols != b->count) {
			/* A change that misses its rows leaves the mirror
			 * behind the coordinator's: start again. */
			if (b->dtype == GP_DTYPE_Q8_DELTA ||
			    b->dtype == GP_DTYPE_Q4_DELTA) {
				gp_machine_drop_session(m, GP_BYE_PROTOCOL,
							"parameter change for "
							"tensor %u does not "
							"fit the model",
							b->tensor);
				return;
			}
			gp_warn("parameter block for tensor %u does not fit the model",
				b->tensor);
			continue;
		}
		v = malloc((size_t)b->count * sizeof(float));
		if (!v) {
			gp_machine_drop_session(m, GP_BYE_RESTART,
						"no memory for a parameter "
						"block of tensor %u",
						b->tensor);
			return;
		}
		if (!take_block(m, b, nt, t, slot, ti, v, &why)) {
			free(v);
			gp_machine_drop_session(m, GP_BYE_PROTOCOL,
						"parameter block of tensor "
						"%u: %s", b->tensor, why);
			return;
		}
		if (rebase && slot == GP_MODEL_PARAM)
			m->ops->worker_rebase_params(m->ctx, t, b->row_start,
						     rows, v, ref);
		else
			m->ops->worker_set_params(m->ctx, slot, t, b->row_start,
						  rows, v);
	}
}

/* A language model's windows given as indices into the local token
 * file, packed into px as the coordinator would send them (tokens.h).
 * Returns false for an index out of range. */
static bool gather_tokens(const struct gp_machine *m,
			  const struct gp_msg_minibatch *mb, uint8_t *px)
{
	size_t wb = gp_tokens_window_bytes(m->window, m->vocab);

	for (size_t i = 0; i < mb->samples; i++) {
		uint32_t k = gp_msg_minibatch_index(mb, i);

		if (gp_tokens_pack(m->tokens, m->window, m->vocab, &k, 1,
				   px + i * wb) < 0)
			return false;
	}
	return true;
}

/* A minibatch given as indices into data (borrowed): its samples' bytes
 * and labels gathered into px and lb (samples * the row size and samples
 * bytes). Returns false for an index out of range. */
static bool gather_local(const struct gp_dataset *data,
			 const struct gp_msg_minibatch *mb, uint8_t *px,
			 uint8_t *lb)
{
	size_t row = data->features * gp_data_elsize(data->dtype);

	for (size_t i = 0; i < mb->samples; i++) {
		uint32_t k = gp_msg_minibatch_index(mb, i);

		if (k >= data->count)
			return false;
		memcpy(px + i * row, data->images + (size_t)k * row, row);
		lb[i] = data->labels[k];
	}
	return true;
}

static void handle_minibatch(struct gp_machine *m, const struct gp_msg_minibatch *mb)
{
	const struct gp_dataset *data =
		(m->caps & GP_CAP_DATA_SHARDS) ? m->pool_data : m->data;
	/* A language model's sample is a window of token ids, its labels
	 * within it (tokens.h). */
	bool lm = m->window > 0;
	bool local = (lm ? m->tokens != NULL : data != NULL) &&
		     mb->indices_len && !mb->pixels_len;
	size_t inputs = lm ? gp_tokens_window_bytes(m->window, m->vocab) :
			m->ops->worker_inputs ?
				m->ops->worker_inputs(m->ctx) : GP_DATA_PIXELS;
	uint8_t dtype = local && !lm ? data->dtype : GP_DATA_U8;
	size_t row = inputs * gp_data_elsize(dtype);
	uint64_t arrived_us = gp_mono_us();
	uint8_t *px, *lb;

	if (mb->samples == 0 || mb->samples > m->batch ||
	    (local ? mb->indices_len != (size_t)mb->samples * 4 ||
			     (!lm && data->features != inputs) :
		     mb->features != inputs ||
		     mb->pixels_len != (size_t)mb->samples * inputs ||
		     mb->labels_len != (lm ? 0 : mb->samples))) {
		gp_machine_drop_session(m, GP_BYE_PROTOCOL,
					"minibatch %" PRIu64 " has an "
					"unexpected shape", mb->minibatch);
		return;
	}
	px = malloc((size_t)mb->samples * row);
	lb = malloc(mb->samples);
	if (!px || !lb) {
		free(px);
		free(lb);
		gp_machine_drop_session(m, GP_BYE_RESTART,
					"no memory for minibatch %" PRIu64,
					mb->minibatch);
		return;
	}
	if (!local) {
		memcpy(px, mb->pixels, mb->pixels_len);
		if (mb->labels_len)
			memcpy(lb, mb->labels, mb->labels_len);
	} else if (lm ? !gather_tokens(m, mb, px)
		      : !gather_local(data, mb, px, lb)) {
		free(px);
		free(lb);
		gp_machine_drop_session(m, GP_BYE_PROTOCOL,
					"minibatch %" PRIu64 " names a sample "
					"beyond the local data set",
					mb->minibatch);
		return;
	}
	m->momentum = isfinite(mb->momentum) && mb->momentum >= 0 &&
		      mb->momentum < 1 ? mb->momentum : 0;
	if (m->ops->worker_compute(m->ctx, mb->epoch, mb->minibatch, mb->clock,
				   mb->samples, px, dtype, lb,
				   (m->caps & GP_CAP_LOCAL_STEP) ? mb->lr : 0.0f,
				   mb->momentum,
				   (m->caps & (GP_CAP_SUMS | GP_CAP_INNER_ADAMW)) ?
					   mb->group : 0) < 0)
		gp_machine_drop_session(m, GP_BYE_RESTART,
					"no memory for minibatch %" PRIu64,
					mb->minibatch);
	else {
		/* A run starts with a group's first minibatch; without
		 * groups each minibatch is one, and only the first of what
		 * comes to an idle worker is noted: the coordinator measures
		 * the link from a clock handed out to an agent that held no
		 * work (docs/protocol.md, UPDATE.held_us), and a clock's
		 * many minibatches would wrap the ring before the first one's
		 * UPDATE. */
		if ((m->caps & (GP_CAP_SUMS | GP_CAP_INNER_ADAMW)) ?
			    mb->group >= 1 : m->in_hand == 0)
			m->arrivals[m->arrival_next++ % GP_MACHINE_ARRIVALS] =
				(struct gp_machine_arrival){
					.epoch = mb->epoch,
					.minibatch = mb->minibatch,
					.at_us = arrived_us,
				};
		m->in_hand++;
	}
}

static void on_bye(struct gp_machine *m, const struct gp_msg_bye *bye)
{
	gp_info("the coordinator says bye: %s (%s)", bye->text,
		gp_msg_bye_str(bye->reason));
	if (bye->reason == GP_BYE_REVOKED) {
		gp_machine_stop(m, -EKEYREJECTED);
	} else if (bye->reason == GP_BYE_JOB_DONE) {
		m->done = true;
		status_changed(m);
		if (m->cfg->exit_when_done)
			gp_machine_stop(m, 0);
		else if (m->caps & GP_CAP_JOBS)
			m->connect_now = true; /* to wait in the pool for the next */
	} else if (bye->reason == GP_BYE_JOB_CHANGED) {
		m->connect_now = true;
	}
}

void gp_machine_on_message(struct gp_machine *m, const uint8_t *data,
			   size_t len)
{
	struct gp_msg msg;
	int r = gp_msg_decode(data, len, &msg);

	if (r == GP_MSG_UNKNOWN_TYPE) {
		gp_debug("skipped a message of unknown type %u", msg.type);
		gp_msg_finish(&msg);
		return;
	}
	if (r < 0) {
		gp_warn("undecodable message from the coordinator: %s", strerror(-r));
		m->ops->close(m->ctx, GP_BYE_PROTOCOL, "undecodable message");
		return;
	}
	switch (msg.type) {
	case GP_MSG_WELCOME:
		on_welcome(m, &msg.u.welcome);
		break;
	case GP_MSG_REJECT:
		gp_error("the coordinator refused: %s (%s)", msg.u.reject.text,
			 gp_msg_reject_str(msg.u.reject.code));
		if (m->token || msg.u.reject.code == GP_REJECT_AGENT_REVOKED ||
		    msg.u.reject.code == GP_REJECT_UNKNOWN_AGENT)
			gp_machine_stop(m, -EKEYREJECTED);
		break;
	/* Work still arriving on a connection that is closing (drop_session)
	 * is handed out again by the coordinator: not taken. */
	case GP_MSG_PARAM_SHARDS:
		if (m->have_worker && m->ops->established(m->ctx))
			handle_shards(m, &msg.u.param_shards);
		break;
	case GP_MSG_MINIBATCH:
		if (m->have_worker && m->ops->established(m->ctx))
			handle_minibatch(m, &msg.u.minibatch);
		break;
	case GP_MSG_VERIFY_TASK:
		if (m->have_worker && m->ops->established(m->ctx))
			gp_machine_verify_task(m, &msg.u.verify_task);
		break;
	case GP_MSG_DATA_SHARD:
		if (m->welcomed && m->ops->established(m->ctx))
			handle_data_shard(m, &msg.u.data_shard);
		break;
	case GP_MSG_BYE:
		on_bye(m, &msg.u.bye);
		break;
	case GP_MSG_STATS:
		if (m->welcomed) {
			m->progress = msg.u.stats;
			m->have_progress = true;
			m->progress_at = gp_now_s();
			status_changed(m);
		}
		break;
	case GP_MSG_HEARTBEAT: /* an answer: the one finishing waits for? */
		if (m->finish_seq && !m->finish_heard &&
		    msg.u.heartbeat.seq >= m->finish_seq) {
			m->finish_heard = true;
			maybe_finished(m);
		}
		break;
	default: /* CLOCK: nothing to do */
		break;
	}
	gp_msg_finish(&msg);
}

/* ---- results ---------------------------------------------------------- */

void gp_machine_on_result(struct gp_machine *m,
			  const struct gp_worker_result *res)
{
	int r;

	if (res->verify) {
		gp_machine_verify_result(m, res);
		return;
	}
	if (res->gen != m->ops->worker_generation(m->ctx)) {
		/* Work of a connection that is gone (the job in hand when it
		 * closed): its minibatches were handed out again, and its
		 * clock and parameters are not this connection's. */
		m->stale_results++;
		gp_debug("dropped the result for minibatch %" PRIu64 " of an "
			 "earlier connection (%" PRIu64 " so far)", res->minibatch,
			 m->stale_results);
		return;
	}
	if (res->error < 0) {
		m->worker_failed = true;
		gp_machine_drop_session(m, GP_BYE_RESTART,
					"computing minibatch %" PRIu64 " of "
					"epoch %u failed: %s", res->minibatch,
					res->epoch + 1, strerror(-res->error));
		return;
	}
	r = gp_machine_send_update(m, res);
	if (r == -ENOMEM)
		return;
	if (r < 0) {
		gp_debug("update for minibatch %" PRIu64 " not sent (disconnected)",
			 res->minibatch);
	} else if (m->work_failures) {
		m->work_failures = 0;
		m->backoff_ms = 0;
	}
	if (m->cfg->stats) {
		struct gp_stats_delta d = {
			.at = gp_now_s(),
			.minibatches = res->n_items ? res->n_items : 1,
			.samples = res->samples,
			.gflop = m->ops->worker_flops_per_sample(m->ctx) *
				 res->samples / 1e9,
			.compute_seconds = (double)res->compute_us / 1e6,
		};

		snprintf(d.pool, sizeof(d.pool), "%s", m->pool.pool);
		snprintf(d.device, sizeof(d.device), "%s", m->cfg->device_name);
		m->ops->record(m->ctx, &d);
	}
	m->minibatches += res->n_items ? res->n_items : 1;
	{
		uint64_t k = res->n_items ? res->n_items : 1;

		m->in_hand = m->in_hand > k ? m->in_hand - k : 0;
	}
	status_changed(m);
	maybe_finished(m);
}
