/* The agent's session with its coordinator.
 *
 * The loop thread does all I/O: the channel, message decoding and encoding,
 * statistics. The compute thread (worker.c) holds the model. Minibatches
 * and parameter shards go to the worker as they arrive, so the next
 * minibatch is already queued while one computes, and each gradient is
 * encoded and sent while the worker computes the next. */
#include "session.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "channel.h"
#include "data.h"
#include "gp-config.h"
#include "log.h"
#include "util.h"
#include "worker.h"

#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 30000
#define STATS_FLUSH_MS 10000

struct session {
	const struct gp_session_config *cfg;
	uv_loop_t loop;
	uv_timer_t retry, stats_timer;
	uv_signal_t sigint, sigterm;
	struct gp_noise_keypair *kp;
	struct gp_channel *ch;
	struct gp_worker *worker;
	char spec[GP_MSG_MODEL_MAX + 1];
	uint32_t batch;
	uint32_t caps;
	size_t endpoint;          /* next endpoint to try */
	unsigned attempts;        /* failed connects in a row */
	uint64_t backoff_ms;
	bool stopping;
	bool done;
	int result;
	uint64_t sent_base, recv_base; /* channel byte counters already counted */
	bool stats_busy;
	/* join only */
	const struct gp_token *token;
	bool joined;
	int64_t agent_id;
};

static int resolve(const char *hostport, struct sockaddr_storage *ss)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	size_t hl;
	int r;

	if (!colon)
		return -EINVAL;
	hl = (size_t)(colon - hostport);
	if (hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, hostport, hl);
	host[hl] = '\0';
	if (host[0] == '[' && hl > 1 && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	/* A blocking lookup: it happens once per connection attempt, never
	 * while a step is in flight on this loop. */
	r = getaddrinfo(host, colon + 1, &hints, &res);
	if (r != 0 || !res)
		return -EHOSTUNREACH;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

static size_t split_endpoints(const char *list, char out[][256], size_t max)
{
	size_t n = 0;
	const char *p = list;

	while (*p && n < max) {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);

		if (len && len < 256) {
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

static int send_msg(struct session *s, struct gp_msg *m)
{
	uint8_t *buf;
	size_t len;
	int r;

	if (!s->ch || !gp_channel_is_established(s->ch))
		return -ENOTCONN;
	r = gp_msg_encode_alloc(m, &buf, &len);
	if (r < 0)
		return r;
	r = gp_channel_send(s->ch, buf, len);
	free(buf);
	return r;
}

static void send_join(struct session *s)
{
	struct gp_msg m;
	const struct gp_session_config *cfg = s->cfg;

	gp_msg_init(&m, GP_MSG_JOIN);
	snprintf(m.u.join.name, sizeof(m.u.join.name), "%s", cfg->name);
	snprintf(m.u.join.release, sizeof(m.u.join.release), "%s", GP_VERSION);
	if (s->token) {
		m.u.join.token_id = s->token->id;
		m.u.join.token_id_len = GP_TOKEN_ID_SIZE;
	}
	m.u.join.caps = (getenv("GP_NO_F16") ? 0 : GP_CAP_F16) |
			GP_CAP_LOCAL_STEP;
	m.u.join.devices = (struct gp_msg_device *)cfg->devices;
	m.u.join.n_devices = cfg->n_devices;
	send_msg(s, &m);
}

/* ---- statistics ------------------------------------------------------- */

static void account_traffic(struct session *s)
{
	struct gp_stats_delta d = { .at = gp_now_s() };
	uint64_t sent, recv;

	if (!s->cfg->stats || !s->ch)
		return;
	sent = gp_channel_bytes_sent(s->ch);
	recv = gp_channel_bytes_received(s->ch);
	snprintf(d.pool, sizeof(d.pool), "%s", s->cfg->pool.pool);
	d.bytes_up = (int64_t)(sent - s->sent_base);
	d.bytes_down = (int64_t)(recv - s->recv_base);
	s->sent_base = sent;
	s->recv_base = recv;
	if (d.bytes_up || d.bytes_down)
		gp_stats_add(s->cfg->stats, &d);
}

static void stats_flush_run(uv_work_t *req)
{
	struct session *s = req->data;

	if (gp_stats_flush(s->cfg->stats) < 0)
		gp_warn("%s", gp_stats_error(s->cfg->stats));
}

static void stats_flush_done(uv_work_t *req, int status)
{
	struct session *s = req->data;

	(void)status;
	s->stats_busy = false;
	free(req);
}

static void on_stats_timer(uv_timer_t *t)
{
	struct session *s = t->data;
	uv_work_t *req;

	account_traffic(s);
	if (s->stats_busy || !s->cfg->stats)
		return;
	req = calloc(1, sizeof(*req));
	if (!req)
		return;
	req->data = s;
	s->stats_busy = true;
	if (uv_queue_work(&s->loop, req, stats_flush_run, stats_flush_done) < 0) {
		s->stats_busy = false;
		free(req);
	}
}

/* ---- compute results -------------------------------------------------- */

static void on_result(struct gp_worker *w, struct gp_worker_result *res,
		      void *data)
{
	struct session *s = data;
	struct gp_msg_block blocks[2 * GP_MODEL_MAX_LAYERS];
	size_t n = gp_worker_tensor_count(w), off = 0;
	struct gp_msg m;

	if (res->error < 0) {
		gp_error("minibatch %" PRIu64 " of epoch %u failed: %s",
			 res->minibatch, res->epoch + 1, strerror(-res->error));
		gp_worker_result_free(res);
		return;
	}
	gp_msg_init(&m, GP_MSG_UPDATE);
	m.u.update.epoch = res->epoch;
	m.u.update.minibatch = res->minibatch;
	m.u.update.clock = res->clock;
	m.u.update.samples = res->samples;
	m.u.update.loss = (float)res->loss;
	m.u.update.grad_norm = (float)res->grad_norm;
	m.u.update.compute_us = res->compute_us;
	for (size_t i = 0; i < n; i++) {
		const struct gp_tensor_info *ti = gp_worker_tensor(w, i);

		blocks[i] = (struct gp_msg_block){
			.tensor = (uint32_t)i,
			.row_start = 0,
			.rows = (uint32_t)ti->rows,
			.count = (uint32_t)(ti->rows * ti->cols),
			.dtype = (s->caps & GP_CAP_F16) ? GP_DTYPE_F16 : GP_DTYPE_F32,
			.values = res->grads + off,
		};
		off += ti->rows * ti->cols;
	}
	m.u.update.blocks = blocks;
	m.u.update.n_blocks = n;
	if (send_msg(s, &m) < 0)
		gp_debug("update for minibatch %" PRIu64 " not sent (disconnected)",
			 res->minibatch);
	if (s->cfg->stats) {
		struct gp_stats_delta d = {
			.at = gp_now_s(),
			.minibatches = 1,
			.samples = res->samples,
			.gflop = gp_worker_flops_per_sample(w) * res->samples / 1e9,
			.compute_seconds = (double)res->compute_us / 1e6,
		};

		snprintf(d.pool, sizeof(d.pool), "%s", s->cfg->pool.pool);
		snprintf(d.device, sizeof(d.device), "%s", s->cfg->device_name);
		gp_stats_add(s->cfg->stats, &d);
	}
	gp_worker_result_free(res);
}

/* ---- messages --------------------------------------------------------- */

static int start_worker(struct session *s, const struct gp_msg_welcome *w)
{
	struct gp_worker_config wc = {
		.backend = s->cfg->backend,
		.device_index = s->cfg->device_index,
		.threads = s->cfg->threads,
		.max_batch = w->batch_size,
		.step_delay_ms = s->cfg->step_delay_ms,
	};
	char err[512];
	int r;

	if (s->worker && strcmp(s->spec, w->model) == 0 && s->batch == w->batch_size)
		return 0;
	gp_worker_stop(s->worker);
	s->worker = NULL;
	snprintf(wc.spec, sizeof(wc.spec), "%.*s", (int)sizeof(wc.spec) - 1, w->model);
	r = gp_worker_start(&s->loop, &wc, on_result, s, &s->worker, err,
			    sizeof(err));
	if (r < 0) {
		gp_error("%s", err);
		return r;
	}
	snprintf(s->spec, sizeof(s->spec), "%.*s", (int)sizeof(s->spec) - 1,
		 w->model);
	s->batch = w->batch_size;
	return 0;
}

static void handle_shards(struct session *s, const struct gp_msg_param_shards *ps)
{
	for (size_t i = 0; i < ps->n_blocks; i++) {
		const struct gp_msg_block *b = &ps->blocks[i];
		const struct gp_tensor_info *ti = gp_worker_tensor(s->worker, b->tensor);
		size_t rows = b->rows ? b->rows : (ti ? ti->rows : 0);
		float *v;

		if (!ti || b->row_start + rows > ti->rows ||
		    (uint64_t)rows * ti->cols != b->count) {
			gp_warn("parameter block for tensor %u does not fit the model",
				b->tensor);
			continue;
		}
		v = malloc((size_t)b->count * sizeof(float));
		if (!v || gp_msg_block_read(b, v, b->count) < 0) {
			free(v);
			continue;
		}
		gp_worker_set_params(s->worker, b->tensor, b->row_start, rows, v);
	}
}

static void handle_minibatch(struct session *s, const struct gp_msg_minibatch *mb)
{
	uint8_t *px, *lb;

	if (mb->features != GP_DATA_PIXELS || mb->pixels_len != (size_t)mb->samples * GP_DATA_PIXELS ||
	    mb->labels_len != mb->samples || mb->samples == 0 || mb->samples > s->batch) {
		gp_warn("minibatch %" PRIu64 " has an unexpected shape; skipped",
			mb->minibatch);
		return;
	}
	px = malloc(mb->pixels_len);
	lb = malloc(mb->labels_len);
	if (!px || !lb) {
		free(px);
		free(lb);
		return;
	}
	memcpy(px, mb->pixels, mb->pixels_len);
	memcpy(lb, mb->labels, mb->labels_len);
	gp_worker_compute(s->worker, mb->epoch, mb->minibatch, mb->clock,
			  mb->samples, px, lb,
			  (s->caps & GP_CAP_LOCAL_STEP) ? mb->lr : 0.0f,
			  mb->momentum);
}

static void stop(struct session *s, int result)
{
	if (s->stopping)
		return;
	s->stopping = true;
	s->result = result;
	if (s->ch)
		gp_channel_close(s->ch, GP_BYE_SHUTDOWN, "agent stopping");
	uv_timer_stop(&s->retry);
	uv_close((uv_handle_t *)&s->retry, NULL);
	uv_close((uv_handle_t *)&s->stats_timer, NULL);
	uv_close((uv_handle_t *)&s->sigint, NULL);
	uv_close((uv_handle_t *)&s->sigterm, NULL);
}

static void on_message(struct gp_channel *ch, uint8_t *data, size_t len)
{
	struct session *s = gp_channel_data(ch);
	struct gp_msg m;
	int r = gp_msg_decode(data, len, &m);

	if (r == GP_MSG_UNKNOWN_TYPE) {
		gp_debug("skipped a message of unknown type %u", m.type);
		gp_msg_finish(&m);
		return;
	}
	if (r < 0) {
		gp_warn("undecodable message from the coordinator: %s", strerror(-r));
		gp_channel_close(ch, GP_BYE_PROTOCOL, "undecodable message");
		return;
	}
	switch (m.type) {
	case GP_MSG_WELCOME:
		s->attempts = 0;
		s->backoff_ms = 0;
		s->agent_id = (int64_t)m.u.welcome.agent_id;
		s->caps = m.u.welcome.caps;
		if (s->token) { /* join: that is all we came for */
			s->joined = true;
			stop(s, 0);
			break;
		}
		gp_info("connected: agent %" PRId64 ", job %" PRIu64 ", model %s, "
			"batch %u, staleness %u", s->agent_id, m.u.welcome.job_id,
			m.u.welcome.model, m.u.welcome.batch_size,
			m.u.welcome.staleness);
		if (start_worker(s, &m.u.welcome) < 0) {
			stop(s, -EIO);
			break;
		}
		{
			struct gp_msg req;

			gp_msg_init(&req, GP_MSG_WORK_REQUEST);
			req.u.work_request.count = 1;
			send_msg(s, &req);
		}
		break;
	case GP_MSG_REJECT:
		gp_error("the coordinator refused: %s (%s)", m.u.reject.text,
			 gp_msg_reject_str(m.u.reject.code));
		if (s->token || m.u.reject.code == GP_REJECT_AGENT_REVOKED ||
		    m.u.reject.code == GP_REJECT_UNKNOWN_AGENT)
			stop(s, -EKEYREJECTED);
		break;
	case GP_MSG_PARAM_SHARDS:
		if (s->worker)
			handle_shards(s, &m.u.param_shards);
		break;
	case GP_MSG_MINIBATCH:
		if (s->worker)
			handle_minibatch(s, &m.u.minibatch);
		break;
	case GP_MSG_HEARTBEAT:
	case GP_MSG_CLOCK:
	case GP_MSG_STATS:
		break;
	case GP_MSG_BYE:
		gp_info("the coordinator says bye: %s (%s)", m.u.bye.text,
			gp_msg_bye_str(m.u.bye.reason));
		if (m.u.bye.reason == GP_BYE_REVOKED)
			stop(s, -EKEYREJECTED);
		else if (m.u.bye.reason == GP_BYE_JOB_DONE) {
			s->done = true;
			if (s->cfg->exit_when_done)
				stop(s, 0);
		}
		break;
	default:
		break;
	}
	gp_msg_finish(&m);
}

static void try_connect(struct session *s);

static void on_retry(uv_timer_t *t)
{
	try_connect(t->data);
}

static void schedule_retry(struct session *s)
{
	uint64_t base, jitter;

	if (s->stopping)
		return;
	/* Exponential backoff with full jitter in [base/2, base]. */
	s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (s->backoff_ms > BACKOFF_MAX_MS)
		s->backoff_ms = BACKOFF_MAX_MS;
	base = s->backoff_ms;
	jitter = base / 2 + (uint64_t)rand() % (base / 2 + 1);
	uv_timer_start(&s->retry, on_retry, jitter, 0);
}

static void on_established(struct gp_channel *ch, const uint8_t *remote,
			   const uint8_t *payload, size_t len)
{
	struct session *s = gp_channel_data(ch);

	(void)remote;
	(void)payload;
	(void)len;
	s->sent_base = 0;
	s->recv_base = 0;
	send_join(s);
}

static void on_close(struct gp_channel *ch, enum gp_close_reason reason,
		     uint16_t code, const char *text)
{
	struct session *s = gp_channel_data(ch);

	account_traffic(s);
	s->ch = NULL;
	if (s->worker)
		gp_worker_drop_queued(s->worker);
	if (s->stopping)
		return;
	if (reason == GP_CLOSE_KEY_MISMATCH) {
		gp_error("the coordinator's key does not match the %s: %s",
			 s->token ? "token" : "pinned key", text);
		if (s->token) {
			stop(s, -EKEYREVOKED);
			return;
		}
	} else if (reason == GP_CLOSE_REJECTED) {
		gp_error("the coordinator refused: %s (%s)", text,
			 gp_msg_reject_str(code));
		if (s->token || code == GP_REJECT_AGENT_REVOKED ||
		    code == GP_REJECT_UNKNOWN_AGENT) {
			stop(s, -EKEYREJECTED);
			return;
		}
	} else if (reason == GP_CLOSE_PEER_CLOSED && s->done &&
		   s->cfg->exit_when_done) {
		stop(s, 0);
		return;
	} else {
		gp_info("disconnected: %s: %s", gp_channel_close_reason_name(reason),
			text);
	}
	s->attempts++;
	if (s->token && s->attempts >= 3 * 4) {
		gp_error("no endpoint of the token answered");
		stop(s, -ETIMEDOUT);
		return;
	}
	schedule_retry(s);
}

static void try_connect(struct session *s)
{
	const struct gp_session_config *cfg = s->cfg;
	char eps[8][256];
	size_t n;
	struct sockaddr_storage ss;
	struct gp_channel_config cc;
	struct gp_channel_callbacks cb = {
		.on_established = on_established,
		.on_message = on_message,
		.on_close = on_close,
	};
	uint8_t psk[GP_TOKEN_PSK_SIZE];
	struct gp_channel_peer peer = { 0 };
	int r;

	if (s->stopping)
		return;
	if (s->token) {
		n = s->token->n_endpoints;
		for (size_t i = 0; i < n; i++)
			snprintf(eps[i], sizeof(eps[i]), "%s", s->token->endpoints[i]);
	} else {
		n = split_endpoints(cfg->pool.endpoints, eps, 8);
	}
	if (n == 0) {
		gp_error("no endpoint to connect to");
		stop(s, -EINVAL);
		return;
	}
	r = resolve(eps[s->endpoint % n], &ss);
	s->endpoint++;
	if (r < 0) {
		gp_warn("%s: cannot resolve", eps[(s->endpoint - 1) % n]);
		s->attempts++;
		schedule_retry(s);
		return;
	}
	gp_channel_config_default(&cc);
	peer.addr = (struct sockaddr *)&ss;
	peer.local = s->kp;
	if (s->token) {
		gp_token_psk(s->token->secret, psk);
		peer.remote_static = s->token->coordinator_pub;
		peer.psk = psk;
		peer.payload = s->token->id;
		peer.payload_len = GP_TOKEN_ID_SIZE;
	} else {
		peer.remote_static = cfg->pool.coordinator_key;
	}
	r = gp_channel_connect(&s->loop, &peer, &cc, &cb, s, &s->ch);
	explicit_bzero(psk, sizeof(psk));
	if (r < 0) {
		s->ch = NULL;
		s->attempts++;
		schedule_retry(s);
	}
}

static void on_signal(uv_signal_t *sig, int signum)
{
	struct session *s = sig->data;

	gp_info("%s: stopping", strsignal(signum));
	stop(s, 0);
}

static int session_run(const struct gp_session_config *cfg,
		       const struct gp_token *token, struct session *s)
{
	int r;

	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	s->token = token;
	srand((unsigned)gp_mono_us());
	r = gp_noise_keypair_create(cfg->id->private_key, &s->kp);
	if (r < 0)
		return r;
	uv_loop_init(&s->loop);
	uv_timer_init(&s->loop, &s->retry);
	uv_timer_init(&s->loop, &s->stats_timer);
	uv_signal_init(&s->loop, &s->sigint);
	uv_signal_init(&s->loop, &s->sigterm);
	s->retry.data = s->stats_timer.data = s->sigint.data = s->sigterm.data = s;
	uv_signal_start(&s->sigint, on_signal, SIGINT);
	uv_signal_start(&s->sigterm, on_signal, SIGTERM);
	signal(SIGPIPE, SIG_IGN);
	if (!token)
		uv_timer_start(&s->stats_timer, on_stats_timer, STATS_FLUSH_MS,
			       STATS_FLUSH_MS);
	try_connect(s);
	uv_run(&s->loop, UV_RUN_DEFAULT);
	/* The worker's async handle closes with it; run the loop once more
	 * so that its close callback frees it. */
	gp_worker_stop(s->worker);
	s->worker = NULL;
	uv_run(&s->loop, UV_RUN_DEFAULT);
	uv_loop_close(&s->loop);
	gp_noise_keypair_destroy(s->kp);
	if (cfg->stats && !token)
		gp_stats_flush(cfg->stats);
	return s->result;
}

int gp_session_join(const struct gp_session_config *cfg,
		    const struct gp_token *token)
{
	struct session s;
	struct gp_stats_membership m;
	char fp[GP_FINGERPRINT_LEN + 1];
	int r;

	r = session_run(cfg, token, &s);
	if (r < 0)
		return r;
	if (!s.joined)
		return -ECONNABORTED;
	memset(&m, 0, sizeof(m));
	gp_identity_fingerprint(token->coordinator_pub, fp);
	snprintf(m.pool, sizeof(m.pool), "%s", fp);
	memcpy(m.coordinator_key, token->coordinator_pub, GP_STATS_KEY_SIZE);
	for (size_t i = 0; i < token->n_endpoints; i++) {
		size_t o = strlen(m.endpoints);

		snprintf(m.endpoints + o, sizeof(m.endpoints) - o, "%s%s",
			 i ? "," : "", token->endpoints[i]);
	}
	m.agent_id = s.agent_id;
	m.joined_at = gp_now_s();
	r = gp_stats_membership_set(cfg->stats, &m);
	if (r < 0) {
		gp_error("cannot record the membership: %s",
			 gp_stats_error(cfg->stats));
		return r;
	}
	printf("joined pool %s as agent %" PRId64 "\n", fp, s.agent_id);
	return 0;
}

int gp_session_run(const struct gp_session_config *cfg)
{
	struct session s;

	return session_run(cfg, NULL, &s);
}
