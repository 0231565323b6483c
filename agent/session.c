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
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "beacon.h"
#include "channel.h"
#include "control.h"
#include "data.h"
#include "gp-config.h"
#include "log.h"
#include "notify.h"
#include "status.h"
#include "util.h"
#include "worker.h"

_Static_assert(GP_WORKER_GROUP_MAX == GP_MSG_GROUP_MAX,
	       "a worker's group is one UPDATE's items");

#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 30000
#define STATS_FLUSH_MS 10000
#define MEMBER_POLL_MS 5000
#define POLICY_POLL_MS 2000
/* Listen for beacons after this many failed connects in a row, and act on
 * at most one beacon per BEACON_MIN_GAP_US: anyone may send them. */
#define BEACON_AFTER_ATTEMPTS 2
#define BEACON_MIN_GAP_US 2000000

enum mode { MODE_RUN, MODE_JOIN, MODE_LEAVE };

struct session {
	const struct gp_session_config *cfg;
	struct gp_dataset *data;  /* the local training set, or NULL */
	uint64_t data_fingerprint;
	enum mode mode;
	uv_loop_t loop;
	uv_timer_t retry, stats_timer, member_timer, policy_timer, watchdog;
	uv_signal_t sigint, sigterm;
	uv_udp_t beacon;
	bool beacon_on;
	uint64_t beacon_last_us;
	char beacon_ep[64];       /* an address a beacon gave; tried first */
	char endpoint_now[256];   /* the endpoint of the current attempt */
	bool connect_now;         /* on_close: try again at once */
	struct gp_control *control;
	struct gp_stats_membership pool;
	bool have_pool;
	bool members_busy, members_again;
	bool policy_busy;
	enum gp_policy_verdict verdict;
	char policy_why[GP_AGENT_STATUS_TEXT_MAX];
	bool user_paused;
	bool told_paused;         /* the coordinator was sent PAUSE */
	bool welcomed;            /* WELCOME on the current channel */
	char last_error[128];
	uint64_t minibatches;
	struct gp_agent_status st;
	bool ready_sent;
	struct gp_noise_keypair *kp;
	struct gp_channel *ch;
	struct gp_worker *worker;
	/* The worker failed a step: made anew at the next WELCOME, since a
	 * device that failed once (an OpenCL queue after CL_OUT_OF_RESOURCES)
	 * may not be trusted to go on. */
	bool worker_failed;
	bool test_fail_used;      /* cfg->test_fail_step given to a worker */
	/* Sessions dropped in a row because of work this agent could not do:
	 * the backoff goes on growing across them, so that a device that
	 * always fails does not churn the pool. 0 after a result is sent. */
	unsigned work_failures;
	/* Results of an earlier connection's work, dropped (their generation
	 * is not the worker's current one). */
	uint64_t stale_results;
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
	m.u.join.caps = GP_CAP_F16 | GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
			GP_CAP_MOMENTUM;
	if (s->data) {
		m.u.join.caps |= GP_CAP_LOCAL_DATA;
		m.u.join.data_fingerprint = s->data_fingerprint;
	}
	m.u.join.devices = (struct gp_msg_device *)cfg->devices;
	m.u.join.n_devices = cfg->n_devices;
	send_msg(s, &m);
}

/* ---- state ------------------------------------------------------------ */

static bool paused(const struct session *s)
{
	return s->user_paused || s->verdict != GP_POLICY_RUN;
}

/* Recomputes the published state from the session's flags; tells systemd
 * when the text changed. */
static void update_status(struct session *s)
{
	struct gp_agent_status st = s->st;
	char line[2 * GP_AGENT_STATUS_TEXT_MAX + 16];

	if (s->mode != MODE_RUN)
		return;
	memset(st.reason, 0, sizeof(st.reason));
	snprintf(st.pool, sizeof(st.pool), "%s", s->have_pool ? s->pool.pool : "");
	snprintf(st.endpoint, sizeof(st.endpoint), "%s",
		 s->have_pool ? s->endpoint_now : "");
	snprintf(st.device, sizeof(st.device), "%s", s->cfg->device_name);
	st.minibatches = s->minibatches;
	st.pid = (uint64_t)getpid();
	if (!s->have_pool) {
		snprintf(st.state, sizeof(st.state), "waiting");
		snprintf(st.reason, sizeof(st.reason),
			 "not a member of any pool (gradpool-agent join TOKEN)");
	} else if (paused(s)) {
		snprintf(st.state, sizeof(st.state), "paused");
		if (s->user_paused)
			snprintf(st.reason, sizeof(st.reason),
				 "paused by the user (gradpool-agent resume)");
		else
			snprintf(st.reason, sizeof(st.reason), "%s", s->policy_why);
	} else if (s->welcomed && s->done) {
		snprintf(st.state, sizeof(st.state), "waiting");
		snprintf(st.reason, sizeof(st.reason),
			 "the job is done; waiting for the next one");
	} else if (s->welcomed) {
		snprintf(st.state, sizeof(st.state), "connected");
		snprintf(st.reason, sizeof(st.reason), "computing for pool %.16s at %.200s",
			 s->pool.pool, s->endpoint_now);
	} else {
		snprintf(st.state, sizeof(st.state), "waiting");
		snprintf(st.reason, sizeof(st.reason),
			 "connecting to %.120s (%u failed attempts%s%.60s)%s",
			 s->endpoint_now[0] ? s->endpoint_now : "the coordinator",
			 s->attempts, s->last_error[0] ? ", last: " : "",
			 s->last_error,
			 s->beacon_on ? "; listening for beacons" : "");
	}
	if (strcmp(st.state, s->st.state) != 0)
		st.since = gp_now_s();
	if (strcmp(st.state, s->st.state) != 0 ||
	    strcmp(st.reason, s->st.reason) != 0) {
		snprintf(line, sizeof(line), "%s: %s", st.state, st.reason);
		if (s->ready_sent)
			gp_notify_status(line);
		if (strcmp(st.state, s->st.state) != 0)
			gp_info("%s", line);
	}
	s->st = st;
	gp_agent_status_publish(&st);
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
	snprintf(d.pool, sizeof(d.pool), "%s", s->pool.pool);
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

/* Ends the current connection because of work this agent cannot do (a
 * step failed, a minibatch it cannot take): the coordinator's on_close
 * puts every minibatch it handed this agent back in the queue at once,
 * where staying connected and silent would hold its SSP clock (and every
 * other agent with it) until the work timeout. The queued work is dropped
 * and the next connection follows with the usual backoff. why is logged
 * and sent as the close text. */
static void drop_session(struct session *s, uint16_t code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void drop_session(struct session *s, uint16_t code, const char *fmt, ...)
{
	char why[GP_CHANNEL_TEXT_MAX + 1];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	/* A new generation now, not at on_close: results of this
	 * connection's work already on their way are stale from here on. */
	if (s->worker)
		gp_worker_drop_queued(s->worker);
	if (!s->ch || s->stopping || !gp_channel_is_established(s->ch))
		return; /* closing already */
	gp_warn("%s; dropping the connection so that the coordinator hands "
		"this agent's work out again", why);
	s->work_failures++;
	gp_channel_close(s->ch, code, why);
}

static void on_result(struct gp_worker *w, struct gp_worker_result *res,
		      void *data)
{
	struct session *s = data;
	struct gp_msg_block blocks[4 * GP_MODEL_MAX_LAYERS];
	size_t n = gp_worker_tensor_count(w), off = 0;
	uint8_t *items = NULL;
	struct gp_msg m;

	if (res->gen != gp_worker_generation(w)) {
		/* Work of a connection that is gone (the job in hand when it
		 * closed): its minibatches were handed out again, and its
		 * clock and parameters are not this connection's. */
		s->stale_results++;
		gp_debug("dropped the result for minibatch %" PRIu64 " of an "
			 "earlier connection (%" PRIu64 " so far)", res->minibatch,
			 s->stale_results);
		gp_worker_result_free(res);
		return;
	}
	if (res->error < 0) {
		s->worker_failed = true;
		drop_session(s, GP_BYE_RESTART,
			     "computing minibatch %" PRIu64 " of epoch %u failed: %s",
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
		/* A group's second sum follows the first, tensor by tensor. */
		if (res->n_items) {
			blocks[n + i] = blocks[i];
			blocks[n + i].values = res->sums_b + off;
		}
		off += ti->rows * ti->cols;
	}
	m.u.update.blocks = blocks;
	m.u.update.n_blocks = res->n_items ? 2 * n : n;
	if (res->n_items) {
		items = malloc(res->n_items * GP_MSG_ITEM_SIZE);
		if (!items) {
			gp_error("no memory for an update of %zu minibatches",
				 res->n_items);
			gp_worker_result_free(res);
			return;
		}
		for (size_t i = 0; i < res->n_items; i++)
			gp_msg_update_item_put(items, i, res->items[i].epoch,
					       res->items[i].minibatch,
					       res->items[i].loss);
		m.u.update.form = GP_UPDATE_SUMS;
		m.u.update.items = items;
		m.u.update.items_len = res->n_items * GP_MSG_ITEM_SIZE;
	}
	if (send_msg(s, &m) < 0) {
		gp_debug("update for minibatch %" PRIu64 " not sent (disconnected)",
			 res->minibatch);
	} else if (s->work_failures) {
		s->work_failures = 0;
		s->backoff_ms = 0;
	}
	free(items);
	if (s->cfg->stats) {
		struct gp_stats_delta d = {
			.at = gp_now_s(),
			.minibatches = res->n_items ? res->n_items : 1,
			.samples = res->samples,
			.gflop = gp_worker_flops_per_sample(w) * res->samples / 1e9,
			.compute_seconds = (double)res->compute_us / 1e6,
		};

		snprintf(d.pool, sizeof(d.pool), "%s", s->pool.pool);
		snprintf(d.device, sizeof(d.device), "%s", s->cfg->device_name);
		gp_stats_add(s->cfg->stats, &d);
	}
	s->minibatches += res->n_items ? res->n_items : 1;
	update_status(s);
	gp_worker_result_free(res);
}

/* Tells the coordinator whether to send work, when that changed. PAUSE
 * goes before any work request of a new connection, so that a paused agent
 * gets no minibatch at all; the ones already queued are finished. */
static void sync_pause(struct session *s)
{
	struct gp_msg m;
	bool want = paused(s);

	if (!s->welcomed || want == s->told_paused)
		return;
	if (want) {
		gp_msg_init(&m, GP_MSG_PAUSE);
		m.u.pause.reason = s->user_paused ? GP_PAUSE_USER :
				   s->verdict == GP_POLICY_ON_BATTERY ? GP_PAUSE_ON_BATTERY :
				   s->verdict == GP_POLICY_NOT_IDLE ? GP_PAUSE_NOT_IDLE :
								     GP_PAUSE_LIMIT;
		m.u.pause.duration_ms = 0;
	} else {
		gp_msg_init(&m, GP_MSG_RESUME);
	}
	if (send_msg(s, &m) < 0)
		return;
	s->told_paused = want;
	if (!want) {
		gp_msg_init(&m, GP_MSG_WORK_REQUEST);
		m.u.work_request.count = 1;
		send_msg(s, &m);
	}
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
		/* The failure a test asks for happens once per process. */
		.test_fail_step = s->test_fail_used ? 0 : s->cfg->test_fail_step,
		.duty = s->cfg->duty,
	};
	char err[512];
	int r;

	if (s->worker && !s->worker_failed && strcmp(s->spec, w->model) == 0 &&
	    s->batch == w->batch_size)
		return 0;
	if (s->worker_failed)
		gp_info("starting the compute device again after its failure");
	gp_worker_stop(s->worker);
	s->worker = NULL;
	s->worker_failed = false;
	s->test_fail_used = true;
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
	size_t nt = gp_worker_tensor_count(s->worker);

	for (size_t i = 0; i < ps->n_blocks; i++) {
		const struct gp_msg_block *b = &ps->blocks[i];
		/* Tensors n..2n-1: the server's momentum of tensors 0..n-1. */
		enum gp_model_slot slot = b->tensor >= nt ? GP_MODEL_MOMENTUM :
							    GP_MODEL_PARAM;
		size_t t = b->tensor >= nt ? b->tensor - nt : b->tensor;
		const struct gp_tensor_info *ti = gp_worker_tensor(s->worker, t);
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
		gp_worker_set_params(s->worker, slot, t, b->row_start, rows, v);
	}
}

/* A minibatch given as indices into the local training set: its pixels
 * and labels gathered into px and lb (samples * GP_DATA_PIXELS and
 * samples bytes). Returns false for an index out of range. */
static bool gather_local(struct session *s, const struct gp_msg_minibatch *mb,
			 uint8_t *px, uint8_t *lb)
{
	for (size_t i = 0; i < mb->samples; i++) {
		uint32_t k = gp_msg_minibatch_index(mb, i);

		if (k >= s->data->count)
			return false;
		memcpy(px + i * GP_DATA_PIXELS,
		       s->data->images + (size_t)k * GP_DATA_PIXELS, GP_DATA_PIXELS);
		lb[i] = s->data->labels[k];
	}
	return true;
}

static void handle_minibatch(struct session *s, const struct gp_msg_minibatch *mb)
{
	bool local = s->data && mb->indices_len && !mb->pixels_len;
	uint8_t *px, *lb;

	if (mb->samples == 0 || mb->samples > s->batch ||
	    (local ? mb->indices_len != (size_t)mb->samples * 4 :
		     mb->features != GP_DATA_PIXELS ||
		     mb->pixels_len != (size_t)mb->samples * GP_DATA_PIXELS ||
		     mb->labels_len != mb->samples)) {
		drop_session(s, GP_BYE_PROTOCOL,
			     "minibatch %" PRIu64 " has an unexpected shape",
			     mb->minibatch);
		return;
	}
	px = malloc((size_t)mb->samples * GP_DATA_PIXELS);
	lb = malloc(mb->samples);
	if (!px || !lb) {
		free(px);
		free(lb);
		drop_session(s, GP_BYE_RESTART, "no memory for minibatch %" PRIu64,
			     mb->minibatch);
		return;
	}
	if (!local) {
		memcpy(px, mb->pixels, mb->pixels_len);
		memcpy(lb, mb->labels, mb->labels_len);
	} else if (!gather_local(s, mb, px, lb)) {
		free(px);
		free(lb);
		drop_session(s, GP_BYE_PROTOCOL, "minibatch %" PRIu64 " names a "
			     "sample beyond the local data set", mb->minibatch);
		return;
	}
	if (gp_worker_compute(s->worker, mb->epoch, mb->minibatch, mb->clock,
			      mb->samples, px, lb,
			      (s->caps & GP_CAP_LOCAL_STEP) ? mb->lr : 0.0f,
			      mb->momentum,
			      (s->caps & GP_CAP_SUMS) ? mb->group : 0) < 0)
		drop_session(s, GP_BYE_RESTART, "no memory for minibatch %" PRIu64,
			     mb->minibatch);
}

static void beacon_stop(struct session *s);

static void say_bye(struct session *s, uint16_t reason, const char *text)
{
	struct gp_msg m;

	if (!s->ch)
		return;
	gp_msg_init(&m, GP_MSG_BYE);
	m.u.bye.reason = reason;
	snprintf(m.u.bye.text, sizeof(m.u.bye.text), "%s", text);
	send_msg(s, &m);
	gp_channel_close(s->ch, reason, text);
}

static void stop(struct session *s, int result)
{
	if (s->stopping)
		return;
	s->stopping = true;
	s->result = result;
	if (s->mode == MODE_LEAVE)
		say_bye(s, GP_BYE_NORMAL, "the volunteer left the pool");
	else if (s->ch)
		gp_channel_close(s->ch, GP_BYE_SHUTDOWN, "agent stopping");
	if (s->mode == MODE_RUN) {
		gp_notify_stopping();
		snprintf(s->st.state, sizeof(s->st.state), "stopped");
		gp_agent_status_publish(&s->st);
	}
	beacon_stop(s);
	gp_control_destroy(s->control);
	s->control = NULL;
	uv_timer_stop(&s->retry);
	uv_close((uv_handle_t *)&s->retry, NULL);
	uv_close((uv_handle_t *)&s->stats_timer, NULL);
	uv_close((uv_handle_t *)&s->member_timer, NULL);
	uv_close((uv_handle_t *)&s->policy_timer, NULL);
	uv_close((uv_handle_t *)&s->watchdog, NULL);
	uv_close((uv_handle_t *)&s->sigint, NULL);
	uv_close((uv_handle_t *)&s->sigterm, NULL);
}

static void remember_endpoint(struct session *s);

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
		/* After sessions dropped for failed work, the backoff is kept
		 * until a result goes out (on_result). */
		if (!s->work_failures)
			s->backoff_ms = 0;
		s->agent_id = (int64_t)m.u.welcome.agent_id;
		s->caps = m.u.welcome.caps;
		/* Keep the coordinator's pace: its heartbeat_timeout may be as
		 * short as 1 s, and a paused or idle agent sends nothing but
		 * heartbeats; at the channel's default 5 s it would be closed
		 * for idleness again and again. */
		if (m.u.welcome.heartbeat_ms)
			gp_channel_set_heartbeat(ch, m.u.welcome.heartbeat_ms);
		if (s->mode != MODE_RUN) { /* join, leave: that is all we came for */
			s->joined = true;
			stop(s, 0);
			break;
		}
		gp_info("connected to %s: agent %" PRId64 ", job %" PRIu64
			", model %s, batch %u, staleness %u", s->endpoint_now,
			s->agent_id, m.u.welcome.job_id, m.u.welcome.model,
			m.u.welcome.batch_size, m.u.welcome.staleness);
		if (start_worker(s, &m.u.welcome) < 0) {
			stop(s, -EIO);
			break;
		}
		s->welcomed = true;
		s->done = false;
		s->told_paused = false;
		s->last_error[0] = '\0';
		if (s->beacon_ep[0] && strcmp(s->beacon_ep, s->endpoint_now) == 0)
			remember_endpoint(s);
		beacon_stop(s);
		if (paused(s)) {
			sync_pause(s);
		} else {
			struct gp_msg req;

			gp_msg_init(&req, GP_MSG_WORK_REQUEST);
			req.u.work_request.count = 1;
			send_msg(s, &req);
		}
		update_status(s);
		break;
	case GP_MSG_REJECT:
		gp_error("the coordinator refused: %s (%s)", m.u.reject.text,
			 gp_msg_reject_str(m.u.reject.code));
		if (s->token || m.u.reject.code == GP_REJECT_AGENT_REVOKED ||
		    m.u.reject.code == GP_REJECT_UNKNOWN_AGENT)
			stop(s, -EKEYREJECTED);
		break;
	/* Work still arriving on a channel that is closing (drop_session)
	 * is handed out again by the coordinator: not taken. */
	case GP_MSG_PARAM_SHARDS:
		if (s->worker && gp_channel_is_established(ch))
			handle_shards(s, &m.u.param_shards);
		break;
	case GP_MSG_MINIBATCH:
		if (s->worker && gp_channel_is_established(ch))
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
			update_status(s);
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

	if (s->stopping || (s->mode == MODE_RUN && !s->have_pool))
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

/* ---- beacons ------------------------------------------------------------ */

static void on_beacon_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char slab[GP_BEACON_MAX + 1];

	(void)h;
	(void)suggested;
	/* One datagram at a time on the loop thread: a static slab serves. */
	*buf = uv_buf_init(slab, sizeof(slab));
}

static void on_beacon(uv_udp_t *h, ssize_t n, const uv_buf_t *buf,
		      const struct sockaddr *addr, unsigned flags)
{
	struct session *s = h->data;
	struct gp_beacon b;
	char ip[INET_ADDRSTRLEN], ep[sizeof(s->beacon_ep)];
	uint64_t now = gp_mono_us();

	if (n <= 0 || !addr || (flags & UV_UDP_PARTIAL) || addr->sa_family != AF_INET)
		return;
	if (gp_beacon_decode((const uint8_t *)buf->base, (size_t)n, &b) < 0)
		return;
	/* Only our pool's key; everything else on the network is noise. */
	if (!s->have_pool ||
	    memcmp(b.key, s->pool.coordinator_key, GP_BEACON_KEY_SIZE) != 0)
		return;
	if (s->beacon_last_us && now - s->beacon_last_us < BEACON_MIN_GAP_US)
		return;
	s->beacon_last_us = now;
	if (uv_ip4_name((const struct sockaddr_in *)addr, ip, sizeof(ip)) < 0)
		return;
	snprintf(ep, sizeof(ep), "%s:%u", ip, b.port);
	if (s->welcomed || (s->ch && strcmp(ep, s->endpoint_now) == 0))
		return; /* connected, or already trying that address */
	gp_info("beacon: pool %.16s announces itself at %s", s->pool.pool, ep);
	snprintf(s->beacon_ep, sizeof(s->beacon_ep), "%s", ep);
	/* Try it now, abandoning an attempt that may hang on a dead address;
	 * the handshake against the pinned key decides whether it is ours. */
	uv_timer_stop(&s->retry);
	if (s->ch) {
		s->connect_now = true;
		gp_channel_close(s->ch, GP_BYE_NORMAL, "trying another address");
	} else {
		try_connect(s);
	}
}

static void beacon_start(struct session *s)
{
	struct sockaddr_in any;
	int r;

	if (s->beacon_on || !s->cfg->beacon_port || s->mode != MODE_RUN)
		return;
	r = uv_udp_init(&s->loop, &s->beacon);
	if (r < 0)
		return;
	s->beacon.data = s;
	s->beacon_on = true;
	uv_ip4_addr("0.0.0.0", s->cfg->beacon_port, &any);
	r = uv_udp_bind(&s->beacon, (const struct sockaddr *)&any,
			UV_UDP_REUSEADDR);
	if (r >= 0)
		r = uv_udp_recv_start(&s->beacon, on_beacon_alloc, on_beacon);
	if (r < 0) {
		gp_warn("cannot listen for beacons on UDP port %u: %s",
			s->cfg->beacon_port, uv_strerror(r));
		beacon_stop(s);
		return;
	}
	gp_info("listening for the pool's beacons on UDP port %u",
		s->cfg->beacon_port);
}

static void beacon_stop(struct session *s)
{
	if (!s->beacon_on)
		return;
	s->beacon_on = false;
	uv_close((uv_handle_t *)&s->beacon, NULL);
}

static void remember_run(uv_work_t *req)
{
	struct session *s = req->data;
	struct gp_stats_membership *m = (struct gp_stats_membership *)(req + 1);

	if (gp_stats_membership_set(s->cfg->stats, m) < 0)
		gp_warn("cannot record the pool's new address: %s",
			gp_stats_error(s->cfg->stats));
}

static void remember_done(uv_work_t *req, int status)
{
	(void)status;
	free(req);
}

/* The address a beacon gave worked: put it first in the membership's
 * endpoints, so that the next start tries it at once. */
static void remember_endpoint(struct session *s)
{
	uv_work_t *req;
	struct gp_stats_membership *m;
	char eps[8][256];
	size_t n, off;

	if (!s->cfg->stats)
		return;
	req = calloc(1, sizeof(*req) + sizeof(*m));
	if (!req)
		return;
	m = (struct gp_stats_membership *)(req + 1);
	*m = s->pool;
	n = split_endpoints(s->pool.endpoints, eps, 8);
	off = (size_t)snprintf(m->endpoints, sizeof(m->endpoints), "%s",
			       s->beacon_ep);
	for (size_t i = 0; i < n && off < sizeof(m->endpoints); i++)
		if (strcmp(eps[i], s->beacon_ep) != 0 &&
		    off + 1 + strlen(eps[i]) < sizeof(m->endpoints))
			off += (size_t)snprintf(m->endpoints + off,
						sizeof(m->endpoints) - off, ",%s",
						eps[i]);
	s->pool = *m;
	req->data = s;
	if (uv_queue_work(&s->loop, req, remember_run, remember_done) < 0)
		free(req);
}

/* ---- connection ----------------------------------------------------------- */

static void on_close(struct gp_channel *ch, enum gp_close_reason reason,
		     uint16_t code, const char *text)
{
	struct session *s = gp_channel_data(ch);
	bool was_welcomed = s->welcomed;

	account_traffic(s);
	s->ch = NULL;
	s->welcomed = false;
	s->told_paused = false;
	if (s->worker)
		gp_worker_drop_queued(s->worker);
	if (s->stopping)
		return;
	if (s->mode == MODE_RUN && !s->have_pool) {
		update_status(s); /* left the pool: wait for another */
		return;
	}
	if (s->connect_now) {
		s->connect_now = false;
		try_connect(s);
		return;
	}
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
		if (s->mode != MODE_RUN || code == GP_REJECT_AGENT_REVOKED ||
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
	snprintf(s->last_error, sizeof(s->last_error), "%s",
		 gp_channel_close_reason_name(reason));
	/* An address from a beacon that failed is forgotten; the next beacon
	 * brings it back if it is still right. */
	if (!was_welcomed && s->beacon_ep[0] &&
	    strcmp(s->beacon_ep, s->endpoint_now) == 0)
		s->beacon_ep[0] = '\0';
	s->attempts++;
	if ((s->mode == MODE_JOIN && s->attempts >= 3 * 4) ||
	    (s->mode == MODE_LEAVE && s->attempts >= 3)) {
		gp_error("no endpoint of the %s answered",
			 s->token ? "token" : "membership");
		stop(s, -ETIMEDOUT);
		return;
	}
	if (s->attempts >= BEACON_AFTER_ATTEMPTS)
		beacon_start(s);
	update_status(s);
	schedule_retry(s);
}

static void try_connect(struct session *s)
{
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
	const char *ep;
	int r;

	if (s->stopping || s->ch)
		return;
	if (s->mode == MODE_RUN && !s->have_pool)
		return;
	if (s->token) {
		n = s->token->n_endpoints;
		for (size_t i = 0; i < n && i < 8; i++)
			snprintf(eps[i], sizeof(eps[i]), "%s", s->token->endpoints[i]);
	} else {
		n = split_endpoints(s->pool.endpoints, eps, 8);
	}
	if (n == 0 && !s->beacon_ep[0]) {
		gp_error("no endpoint to connect to");
		stop(s, -EINVAL);
		return;
	}
	if (s->beacon_ep[0]) {
		ep = s->beacon_ep;
	} else {
		ep = eps[s->endpoint % n];
		s->endpoint++;
	}
	snprintf(s->endpoint_now, sizeof(s->endpoint_now), "%s", ep);
	update_status(s);
	r = resolve(ep, &ss);
	if (r < 0) {
		gp_warn("%s: cannot resolve", ep);
		snprintf(s->last_error, sizeof(s->last_error), "cannot resolve");
		s->attempts++;
		if (s->attempts >= BEACON_AFTER_ATTEMPTS)
			beacon_start(s);
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
		peer.remote_static = s->pool.coordinator_key;
	}
	r = gp_channel_connect(&s->loop, &peer, &cc, &cb, s, &s->ch);
	explicit_bzero(psk, sizeof(psk));
	if (r < 0) {
		s->ch = NULL;
		s->attempts++;
		schedule_retry(s);
	}
}

/* ---- memberships ---------------------------------------------------------- */

struct member_req {
	uv_work_t req;
	struct session *s;
	struct gp_stats_membership m;
	bool found;
	int error;
};

static void members_run(uv_work_t *req)
{
	struct member_req *mr = (struct member_req *)req;
	struct gp_stats_membership *list = NULL;
	size_t n = 0;

	mr->error = gp_stats_membership_list(mr->s->cfg->stats, &list, &n);
	for (size_t i = 0; mr->error >= 0 && i < n; i++)
		if (!list[i].left_at) {
			mr->m = list[i];
			mr->found = true;
			break;
		}
	free(list);
}

static void check_members(struct session *s);

static void members_done(uv_work_t *req, int status)
{
	struct member_req *mr = (struct member_req *)req;
	struct session *s = mr->s;

	s->members_busy = false;
	if (status < 0 || s->stopping || mr->error < 0) {
		if (mr->error < 0 && !s->stopping)
			gp_warn("cannot read the memberships: %s",
				gp_stats_error(s->cfg->stats));
		free(mr);
		return;
	}
	if (s->have_pool && (!mr->found || strcmp(mr->m.pool, s->pool.pool) != 0)) {
		/* The volunteer left (or switched pools): say bye and wait. */
		gp_info("no longer a member of pool %.16s", s->pool.pool);
		s->have_pool = false;
		uv_timer_stop(&s->retry);
		beacon_stop(s);
		if (s->ch)
			say_bye(s, GP_BYE_NORMAL, "the volunteer left the pool");
		s->beacon_ep[0] = '\0';
		update_status(s);
	}
	if (!s->have_pool && mr->found) {
		s->pool = mr->m;
		s->have_pool = true;
		s->attempts = 0;
		s->backoff_ms = 0;
		s->endpoint = 0;
		gp_info("working for pool %.16s at %s", s->pool.pool,
			s->pool.endpoints);
		if (!s->ch)
			try_connect(s);
		else
			s->connect_now = true; /* the old pool's channel is closing */
	}
	update_status(s);
	free(mr);
	if (s->members_again) {
		s->members_again = false;
		check_members(s);
	}
}

static void check_members(struct session *s)
{
	struct member_req *mr;

	if (s->stopping || !s->cfg->stats)
		return;
	if (s->members_busy) {
		s->members_again = true;
		return;
	}
	mr = calloc(1, sizeof(*mr));
	if (!mr)
		return;
	mr->s = s;
	mr->req.data = mr;
	s->members_busy = true;
	if (uv_queue_work(&s->loop, &mr->req, members_run, members_done) < 0) {
		s->members_busy = false;
		free(mr);
	}
}

static void on_member_timer(uv_timer_t *t)
{
	check_members(t->data);
}

/* ---- policy ---------------------------------------------------------------- */

struct policy_req {
	uv_work_t req;
	struct session *s;
	enum gp_policy_verdict verdict;
	char why[GP_AGENT_STATUS_TEXT_MAX];
};

/* The bytes sent today (UTC, as the statistics count days), from the
 * statistics database: what max_upload_mib_per_day caps. Blocks on the
 * database: a worker thread's, or once before the loop runs. */
static uint64_t sent_today(const struct gp_session_config *cfg, time_t now)
{
	int64_t up = 0;
	int r;

	if (!cfg->policy.max_upload_bytes || !cfg->stats)
		return 0;
	r = gp_stats_day_bytes_up(cfg->stats, (int64_t)now, &up);
	if (r < 0) {
		/* Not knowing is no reason to stop: the next check tries again. */
		gp_warn("cannot read today's bytes sent for max_upload_mib_per_day: "
			"%s", gp_stats_error(cfg->stats));
		return 0;
	}
	return up > 0 ? (uint64_t)up : 0;
}

static void policy_run(uv_work_t *req)
{
	struct policy_req *pr = (struct policy_req *)req;
	const struct gp_session_config *cfg = pr->s->cfg;
	time_t now = time(NULL);

	pr->verdict = gp_policy_check(&cfg->policy, now, sent_today(cfg, now),
				      pr->why, sizeof(pr->why));
}

static void policy_done(uv_work_t *req, int status)
{
	struct policy_req *pr = (struct policy_req *)req;
	struct session *s = pr->s;

	s->policy_busy = false;
	if (status >= 0 && !s->stopping) {
		bool was = paused(s);

		s->verdict = pr->verdict;
		snprintf(s->policy_why, sizeof(s->policy_why), "%s", pr->why);
		if (was != paused(s))
			gp_info("%s", paused(s) ? s->policy_why : "policy allows computing again");
		sync_pause(s);
		update_status(s);
	}
	free(pr);
}

static void on_policy_timer(uv_timer_t *t)
{
	struct session *s = t->data;
	struct policy_req *pr;

	if (s->policy_busy || s->stopping)
		return;
	/* The channel's bytes since the last count go into the statistics
	 * now, so that the upload cap sees them. */
	if (s->cfg->policy.max_upload_bytes)
		account_traffic(s);
	pr = calloc(1, sizeof(*pr));
	if (!pr)
		return;
	pr->s = s;
	pr->req.data = pr;
	s->policy_busy = true;
	if (uv_queue_work(&s->loop, &pr->req, policy_run, policy_done) < 0) {
		s->policy_busy = false;
		free(pr);
	}
}

static bool policy_active(const struct gp_policy *p)
{
	return p->idle_only || p->on_ac_only || p->hours.n ||
	       p->max_upload_bytes;
}

/* ---- control socket ------------------------------------------------------ */

static void on_control(const char *line, char *reply, size_t len, void *data)
{
	struct session *s = data;

	if (strcmp(line, "status") == 0) {
		if (gp_agent_status_format(&s->st, reply, len) < 0)
			snprintf(reply, len, "error: status too long\n");
	} else if (strcmp(line, "pause") == 0) {
		s->user_paused = true;
		sync_pause(s);
		update_status(s);
		snprintf(reply, len, "ok: paused\n");
	} else if (strcmp(line, "resume") == 0) {
		s->user_paused = false;
		sync_pause(s);
		update_status(s);
		snprintf(reply, len, "ok: %s\n", paused(s) ? s->policy_why : "resumed");
	} else if (strcmp(line, "reload") == 0) {
		check_members(s);
		snprintf(reply, len, "ok: reloading the memberships\n");
	} else {
		snprintf(reply, len, "error: unknown command (status, pause, "
			 "resume, reload)\n");
	}
}

static void on_watchdog(uv_timer_t *t)
{
	(void)t;
	gp_notify_watchdog();
}

static void on_signal(uv_signal_t *sig, int signum)
{
	struct session *s = sig->data;

	gp_info("%s: stopping", strsignal(signum));
	stop(s, 0);
}

/* The local copy of the training set, when there is one: minibatches then
 * come as indices. Its absence is no error (they come with pixels). */
static void load_data(struct session *s)
{
	const char *dir = s->cfg->data_dir;
	char err[GP_DATA_ERR_MAX];
	int r;

	if (dir && strcmp(dir, "none") == 0)
		return;
	r = gp_data_load_fashion_mnist(dir && dir[0] ? dir : NULL, true,
				       &s->data, err, sizeof(err));
	if (r < 0) {
		gp_info("no local copy of the training set (%s): minibatches "
			"will come with their pixels", err);
		return;
	}
	s->data_fingerprint = gp_data_fingerprint(s->data);
	gp_info("local training set: %zu samples, fingerprint %016" PRIx64,
		s->data->count, s->data_fingerprint);
}

static int session_run(const struct gp_session_config *cfg,
		       const struct gp_token *token, enum mode mode,
		       struct session *s)
{
	uint64_t wd;
	int r;

	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	s->token = token;
	s->mode = mode;
	srand((unsigned)gp_mono_us());
	r = gp_noise_keypair_create(cfg->id->private_key, &s->kp);
	if (r < 0)
		return r;
	uv_loop_init(&s->loop);
	uv_timer_init(&s->loop, &s->retry);
	uv_timer_init(&s->loop, &s->stats_timer);
	uv_timer_init(&s->loop, &s->member_timer);
	uv_timer_init(&s->loop, &s->policy_timer);
	uv_timer_init(&s->loop, &s->watchdog);
	uv_signal_init(&s->loop, &s->sigint);
	uv_signal_init(&s->loop, &s->sigterm);
	s->retry.data = s->stats_timer.data = s->sigint.data = s->sigterm.data = s;
	s->member_timer.data = s->policy_timer.data = s->watchdog.data = s;
	uv_signal_start(&s->sigint, on_signal, SIGINT);
	uv_signal_start(&s->sigterm, on_signal, SIGTERM);
	signal(SIGPIPE, SIG_IGN);
	if (mode == MODE_RUN) {
		load_data(s);
		snprintf(s->st.state, sizeof(s->st.state), "starting");
		uv_timer_start(&s->stats_timer, on_stats_timer, STATS_FLUSH_MS,
			       STATS_FLUSH_MS);
		uv_timer_start(&s->member_timer, on_member_timer, 0,
			       cfg->member_poll_ms ? cfg->member_poll_ms : MEMBER_POLL_MS);
		if (policy_active(&cfg->policy)) {
			/* Check before the first connection, so that an agent
			 * started on battery never takes work. */
			time_t now = time(NULL);

			s->verdict = gp_policy_check(&cfg->policy, now,
						     sent_today(cfg, now),
						     s->policy_why,
						     sizeof(s->policy_why));
			uv_timer_start(&s->policy_timer, on_policy_timer,
				       cfg->policy_poll_ms ? cfg->policy_poll_ms :
							     POLICY_POLL_MS,
				       cfg->policy_poll_ms ? cfg->policy_poll_ms :
							     POLICY_POLL_MS);
		}
		if (cfg->control_path) {
			r = gp_control_create(&s->loop, cfg->control_path, on_control,
					      s, &s->control);
			if (r < 0)
				gp_warn("no control socket at %s: %s (status, pause "
					"and resume will not reach this agent)",
					cfg->control_path, strerror(-r));
		}
		wd = gp_notify_watchdog_usec();
		if (wd)
			uv_timer_start(&s->watchdog, on_watchdog, 0,
				       wd / 2000 ? wd / 2000 : 1);
		update_status(s);
		{
			char line[2 * GP_AGENT_STATUS_TEXT_MAX + 16];

			snprintf(line, sizeof(line), "%s: %s", s->st.state,
				 s->st.reason);
			gp_notify_ready(line);
		}
		s->ready_sent = true;
	} else if (mode == MODE_LEAVE) {
		s->pool = cfg->pool;
		s->have_pool = true;
		try_connect(s);
	} else {
		try_connect(s);
	}
	uv_run(&s->loop, UV_RUN_DEFAULT);
	/* The worker's async handle closes with it; run the loop once more
	 * so that its close callback frees it. */
	gp_worker_stop(s->worker);
	gp_data_destroy(s->data);
	s->worker = NULL;
	uv_run(&s->loop, UV_RUN_DEFAULT);
	uv_loop_close(&s->loop);
	gp_noise_keypair_destroy(s->kp);
	if (cfg->stats && mode == MODE_RUN)
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

	r = session_run(cfg, token, MODE_JOIN, &s);
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

	return session_run(cfg, NULL, MODE_RUN, &s);
}

int gp_session_leave(const struct gp_session_config *cfg)
{
	struct session s;
	int r;

	r = session_run(cfg, NULL, MODE_LEAVE, &s);
	if (r < 0)
		return r;
	return s.joined ? 0 : -ECONNABORTED;
}
