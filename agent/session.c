/* The agent's session with its coordinator: the loop side.
 *
 * What the agent decides on each event lives in machine.c; this file owns
 * the libuv loop and everything on it (the channel, the retry and poll
 * timers, the beacon socket, signals, the control socket, the watchdog),
 * the compute thread (worker.c) and the database work queued off the loop
 * (memberships, policy, statistics), and implements the machine's effects
 * over them. Minibatches and parameter shards go to the worker as they
 * arrive, so the next minibatch is already queued while one computes, and
 * each gradient is encoded and sent while the worker computes the next. */
#include "session.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <signal.h>
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
#include "identity.h"
#include "datacache.h"
#include "log.h"
#include "machine.h"
#include "notify.h"
#include "status.h"
#include "util.h"
#include "worker.h"

#define STATS_FLUSH_MS 10000
#define MEMBER_POLL_MS 5000
#define POLICY_POLL_MS 2000

struct session {
	const struct gp_session_config *cfg;
	struct gp_machine m;      /* the decisions */
	struct gp_dataset *data;  /* the local training set, or NULL */
	struct gp_tokens *tokens; /* or the local token file */
	struct gp_datacache *cache; /* the pool's data set as shards */
	uv_loop_t loop;
	uv_timer_t retry, stats_timer, member_timer, policy_timer, watchdog;
	uv_timer_t pause_timer;   /* the end of a `pause --for` */
	uv_timer_t finish_timer;  /* `finish`, after its reply is written */
	uv_signal_t sigint, sigterm;
	uv_udp_t beacon;
	struct gp_control *control;
	bool members_busy, members_again;
	bool policy_busy;
	struct gp_agent_status st; /* as last published */
	bool ready_sent;
	struct gp_noise_keypair *kp;
	struct gp_channel *ch;
	struct gp_worker *worker;
	uint64_t sent_base, recv_base; /* channel byte counters already counted */
	bool stats_busy;
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

/* ---- statistics ------------------------------------------------------- */

static void account_traffic(struct session *s)
{
	struct gp_stats_delta d = { .at = gp_now_s() };
	uint64_t sent, recv;

	if (!s->cfg->stats || !s->ch)
		return;
	sent = gp_channel_bytes_sent(s->ch);
	recv = gp_channel_bytes_received(s->ch);
	/* Booked where the work is: the pool (while joining, the one the
	 * token names) and the compute device (none while joining or
	 * leaving). */
	if (s->m.pool.pool[0])
		snprintf(d.pool, sizeof(d.pool), "%s", s->m.pool.pool);
	else if (s->m.token)
		gp_identity_fingerprint(s->m.token->coordinator_pub, d.pool);
	snprintf(d.device, sizeof(d.device), "%s", s->cfg->device_name);
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

/* ---- the published state ---------------------------------------------- */

/* Recomputes the published state from the machine; tells systemd when the
 * text changed. */
static void publish_status(struct session *s)
{
	struct gp_agent_status st = s->st;
	char line[2 * GP_AGENT_STATUS_TEXT_MAX + 16];

	gp_machine_status(&s->m, &st);
	st.pid = (uint64_t)getpid();
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
	/* What the pool told of its job names it wherever memberships are
	 * shown (status, stats --by pool, the page): noted on each new
	 * STATS, written with the next flush. */
	if (s->cfg->stats && st.have_job && st.pool[0] &&
	    st.progress_at != s->st.progress_at) {
		struct gp_stats_job job = {
			.id = (int64_t)st.job_id,
			.epoch = st.epoch,
			.epochs = st.epochs,
			.progress = st.progress,
			.accuracy = st.eval_epochs ? st.accuracy : -1,
			.told_at = st.progress_at,
		};

		snprintf(job.name, sizeof(job.name), "%s", st.job);
		snprintf(job.state, sizeof(job.state), "%s", st.job_state);
		(void)gp_stats_job_note(s->cfg->stats, st.pool, &job);
	}
	s->st = st;
	gp_agent_status_publish(&st);
}

/* ---- the channel -------------------------------------------------------- */

static void on_established(struct gp_channel *ch, const uint8_t *remote,
			   const uint8_t *payload, size_t len)
{
	struct session *s = gp_channel_data(ch);

	(void)remote;
	(void)payload;
	(void)len;
	s->sent_base = 0;
	s->recv_base = 0;
	gp_machine_on_established(&s->m);
}

static void on_message(struct gp_channel *ch, uint8_t *data, size_t len)
{
	struct session *s = gp_channel_data(ch);

	gp_machine_on_message(&s->m, data, len);
}

static void on_close(struct gp_channel *ch, enum gp_close_reason reason,
		     uint16_t code, const char *text)
{
	struct session *s = gp_channel_data(ch);

	account_traffic(s);
	s->ch = NULL;
	gp_machine_on_close(&s->m, reason, code, text);
}

static int op_connect(void *ctx, const char *ep)
{
	struct session *s = ctx;
	struct sockaddr_storage ss;
	struct gp_channel_config cc;
	struct gp_channel_callbacks cb = {
		.on_established = on_established,
		.on_message = on_message,
		.on_close = on_close,
	};
	uint8_t psk[GP_TOKEN_PSK_SIZE];
	struct gp_channel_peer peer = { 0 };
	const struct gp_token *token = s->m.token;
	int r;

	r = resolve(ep, &ss);
	if (r < 0)
		return -EHOSTUNREACH;
	gp_channel_config_default(&cc);
	peer.addr = (struct sockaddr *)&ss;
	peer.local = s->kp;
	if (token) {
		gp_token_psk(token->secret, psk);
		peer.remote_static = token->coordinator_pub;
		peer.psk = psk;
		peer.payload = token->id;
		peer.payload_len = GP_TOKEN_ID_SIZE;
	} else {
		peer.remote_static = s->m.pool.coordinator_key;
	}
	r = gp_channel_connect(&s->loop, &peer, &cc, &cb, s, &s->ch);
	explicit_bzero(psk, sizeof(psk));
	if (r < 0) {
		s->ch = NULL;
		/* Not the machine's "cannot resolve". */
		return r == -EHOSTUNREACH ? -ECONNREFUSED : r;
	}
	return 0;
}

static bool op_established(void *ctx)
{
	struct session *s = ctx;

	return s->ch && gp_channel_is_established(s->ch);
}

static int op_send(void *ctx, struct gp_msg *msg)
{
	struct session *s = ctx;

	if (!s->ch || !gp_channel_is_established(s->ch))
		return -ENOTCONN;
	return gp_channel_send_msg(s->ch, msg);
}

static void op_close(void *ctx, uint16_t code, const char *text)
{
	struct session *s = ctx;

	if (s->ch)
		gp_channel_close(s->ch, code, text);
}

static void op_set_heartbeat(void *ctx, uint32_t ms)
{
	struct session *s = ctx;

	if (s->ch)
		gp_channel_set_heartbeat(s->ch, ms);
}

static void on_retry(uv_timer_t *t)
{
	struct session *s = t->data;

	gp_machine_connect(&s->m);
}

static void op_retry(void *ctx, uint64_t ms)
{
	struct session *s = ctx;

	if (ms)
		uv_timer_start(&s->retry, on_retry, ms, 0);
	else
		uv_timer_stop(&s->retry);
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
	char ip[INET_ADDRSTRLEN], ep[sizeof(s->m.beacon_ep)];

	if (n <= 0 || !addr || (flags & UV_UDP_PARTIAL) || addr->sa_family != AF_INET)
		return;
	if (gp_beacon_decode((const uint8_t *)buf->base, (size_t)n, &b) < 0)
		return;
	if (uv_ip4_name((const struct sockaddr_in *)addr, ip, sizeof(ip)) < 0)
		return;
	snprintf(ep, sizeof(ep), "%s:%u", ip, b.port);
	gp_machine_on_beacon(&s->m, b.key, ep, gp_mono_us());
}

static int op_beacon(void *ctx, bool on)
{
	struct session *s = ctx;
	uint16_t port = s->cfg->beacon_port;
	struct sockaddr_in any;
	int r;

	if (!on) {
		uv_close((uv_handle_t *)&s->beacon, NULL);
		return 0;
	}
	r = uv_udp_init(&s->loop, &s->beacon);
	if (r < 0)
		return r;
	s->beacon.data = s;
	uv_ip4_addr("0.0.0.0", port, &any);
	r = uv_udp_bind(&s->beacon, (const struct sockaddr *)&any,
			UV_UDP_REUSEADDR);
	if (r >= 0)
		r = uv_udp_recv_start(&s->beacon, on_beacon_alloc, on_beacon);
	if (r < 0) {
		gp_warn("cannot listen for beacons on UDP port %u: %s", port,
			uv_strerror(r));
		uv_close((uv_handle_t *)&s->beacon, NULL);
		return r;
	}
	gp_info("listening for the pool's beacons on UDP port %u", port);
	return 0;
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

static void op_remember(void *ctx, const struct gp_stats_membership *mem)
{
	struct session *s = ctx;
	uv_work_t *req;

	if (!s->cfg->stats)
		return;
	req = calloc(1, sizeof(*req) + sizeof(*mem));
	if (!req)
		return;
	*(struct gp_stats_membership *)(req + 1) = *mem;
	req->data = s;
	if (uv_queue_work(&s->loop, req, remember_run, remember_done) < 0)
		free(req);
}

/* ---- the rest of the effects -------------------------------------------- */

static void op_stopped(void *ctx)
{
	struct session *s = ctx;

	if (s->m.mode == GP_MACHINE_RUN) {
		gp_notify_stopping();
		snprintf(s->st.state, sizeof(s->st.state), "stopped");
		gp_agent_status_publish(&s->st);
	}
	gp_control_destroy(s->control);
	s->control = NULL;
	uv_close((uv_handle_t *)&s->retry, NULL);
	uv_close((uv_handle_t *)&s->stats_timer, NULL);
	uv_close((uv_handle_t *)&s->member_timer, NULL);
	uv_close((uv_handle_t *)&s->policy_timer, NULL);
	uv_close((uv_handle_t *)&s->watchdog, NULL);
	uv_close((uv_handle_t *)&s->pause_timer, NULL);
	uv_close((uv_handle_t *)&s->finish_timer, NULL);
	uv_close((uv_handle_t *)&s->sigint, NULL);
	uv_close((uv_handle_t *)&s->sigterm, NULL);
}

static void op_status(void *ctx)
{
	publish_status(ctx);
}

static void op_record(void *ctx, const struct gp_stats_delta *d)
{
	struct session *s = ctx;

	if (s->cfg->stats)
		gp_stats_add(s->cfg->stats, d);
}

/* ---- the compute thread --------------------------------------------------- */

static void on_result(struct gp_worker *w, struct gp_worker_result *res,
		      void *data)
{
	struct session *s = data;

	(void)w;
	gp_machine_on_result(&s->m, res);
	gp_worker_result_free(res);
}

static int op_worker_start(void *ctx, const char *spec, uint64_t seed,
			   uint32_t batch, unsigned fail_step)
{
	struct session *s = ctx;
	struct gp_worker_config *wc;
	char err[512];
	int r;

	/* 64 KiB of model text: not on the loop's stack. */
	wc = calloc(1, sizeof(*wc));
	if (!wc)
		return -ENOMEM;
	wc->backend = s->cfg->backend;
	wc->device_index = s->cfg->device_index;
	wc->threads = s->cfg->threads;
	wc->max_batch = batch;
	wc->test = s->cfg->test;
	wc->duty = s->cfg->duty;
	wc->seed = seed;
	wc->test.fail_step = fail_step;
	gp_worker_stop(s->worker);
	s->worker = NULL;
	snprintf(wc->spec, sizeof(wc->spec), "%.*s", (int)sizeof(wc->spec) - 1,
		 spec);
	r = gp_worker_start(&s->loop, wc, on_result, s, &s->worker, err,
			    sizeof(err));
	free(wc);
	if (r < 0)
		gp_error("%s", err);
	return r;
}

static size_t op_worker_tensor_count(void *ctx)
{
	return gp_worker_tensor_count(((struct session *)ctx)->worker);
}

static const struct gp_tensor_info *op_worker_tensor(void *ctx, size_t i)
{
	return gp_worker_tensor(((struct session *)ctx)->worker, i);
}

static int op_worker_set_params(void *ctx, enum gp_model_slot slot,
				size_t tensor, size_t row0, size_t rows,
				float *values)
{
	return gp_worker_set_params(((struct session *)ctx)->worker, slot,
				    tensor, row0, rows, values);
}

static int op_worker_compute(void *ctx, uint32_t epoch, uint64_t minibatch,
			     uint64_t clock, uint32_t n, uint8_t *pixels,
			     uint8_t dtype, uint8_t *labels, float lr, float mu,
			     uint32_t group)
{
	return gp_worker_compute(((struct session *)ctx)->worker, epoch,
				 minibatch, clock, n, pixels, dtype, labels,
				 lr, mu, group);
}

static size_t op_worker_inputs(void *ctx)
{
	return gp_worker_inputs(((struct session *)ctx)->worker);
}

/* The data cache is made at the first manifest: most pools' agents hold
 * the data set and never need one. Reading the cached shards happens
 * here, on the loop thread: at most a few hundred MB once a session,
 * while the connection waits for them anyway. */
static int op_data_open(void *ctx, const uint8_t *manifest, size_t len)
{
	struct session *s = ctx;
	int r;

	if (!s->cache) {
		r = gp_datacache_create(s->cfg->cache_dir,
					s->cfg->cache_max_bytes, &s->cache);
		if (r < 0)
			return r;
	}
	return gp_datacache_open(s->cache, manifest, len);
}

static int64_t op_data_next(void *ctx)
{
	return gp_datacache_next(((struct session *)ctx)->cache);
}

static int op_data_put(void *ctx, uint32_t shard, const uint8_t *data,
		       size_t len)
{
	return gp_datacache_put(((struct session *)ctx)->cache, shard, data,
				len);
}

static const struct gp_dataset *op_data_set(void *ctx, char *err,
					    size_t err_len)
{
	return gp_datacache_dataset(((struct session *)ctx)->cache, err,
				    err_len);
}

static void op_data_progress(void *ctx, uint32_t *ret_shards,
			     uint32_t *ret_missing)
{
	struct session *s = ctx;

	*ret_shards = s->cache ? gp_datacache_shards(s->cache) : 0;
	*ret_missing = s->cache ? gp_datacache_missing(s->cache) : 0;
}

static int op_worker_rebase_params(void *ctx, size_t tensor, size_t row0,
				   size_t rows, float *values, uint64_t ref)
{
	return gp_worker_rebase_params(((struct session *)ctx)->worker, tensor,
				       row0, rows, values, ref);
}

static int op_worker_set_inner(void *ctx, const struct gp_worker_inner *in)
{
	return gp_worker_set_inner(((struct session *)ctx)->worker, in);
}

static int op_worker_verify(void *ctx, struct gp_worker_verify *t)
{
	return gp_worker_verify(((struct session *)ctx)->worker, t);
}

static void op_worker_drop_queued(void *ctx)
{
	gp_worker_drop_queued(((struct session *)ctx)->worker);
}

static uint64_t op_worker_generation(void *ctx)
{
	return gp_worker_generation(((struct session *)ctx)->worker);
}

static double op_worker_flops_per_sample(void *ctx)
{
	return gp_worker_flops_per_sample(((struct session *)ctx)->worker);
}

static const struct gp_machine_ops session_ops = {
	.connect = op_connect,
	.established = op_established,
	.send = op_send,
	.close = op_close,
	.set_heartbeat = op_set_heartbeat,
	.retry = op_retry,
	.beacon = op_beacon,
	.stopped = op_stopped,
	.status = op_status,
	.remember = op_remember,
	.record = op_record,
	.worker_start = op_worker_start,
	.worker_tensor_count = op_worker_tensor_count,
	.worker_tensor = op_worker_tensor,
	.worker_set_params = op_worker_set_params,
	.worker_compute = op_worker_compute,
	.worker_set_inner = op_worker_set_inner,
	.worker_rebase_params = op_worker_rebase_params,
	.worker_verify = op_worker_verify,
	.worker_drop_queued = op_worker_drop_queued,
	.worker_generation = op_worker_generation,
	.worker_flops_per_sample = op_worker_flops_per_sample,
	.worker_inputs = op_worker_inputs,
	.data_open = op_data_open,
	.data_next = op_data_next,
	.data_put = op_data_put,
	.data_set = op_data_set,
	.data_progress = op_data_progress,
};

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
	if (status < 0 || s->m.stopping || mr->error < 0) {
		if (mr->error < 0 && !s->m.stopping)
			gp_warn("cannot read the memberships: %s",
				gp_stats_error(s->cfg->stats));
		free(mr);
		return;
	}
	gp_machine_on_members(&s->m, mr->found, &mr->m);
	free(mr);
	if (s->members_again) {
		s->members_again = false;
		check_members(s);
	}
}

static void check_members(struct session *s)
{
	struct member_req *mr;

	if (s->m.stopping || !s->cfg->stats)
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
	if (status >= 0 && !s->m.stopping)
		gp_machine_on_policy(&s->m, pr->verdict, pr->why);
	free(pr);
}

static void on_policy_timer(uv_timer_t *t)
{
	struct session *s = t->data;
	struct policy_req *pr;

	if (s->policy_busy || s->m.stopping)
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

static void on_pause_timer(uv_timer_t *t)
{
	struct session *s = t->data;

	if (s->m.user_paused && s->m.pause_until &&
	    s->m.pause_until <= gp_now_s()) {
		gp_info("the pause ended: resuming");
		gp_machine_set_user_paused(&s->m, false);
	}
}

static void on_finish_timer(uv_timer_t *t)
{
	struct session *s = t->data;

	gp_machine_drain(&s->m);
}

/* The pause recorded in the database on the thread pool, so that it
 * outlives a restart. */
struct pause_req {
	uv_work_t req;
	struct gp_stats *stats;
	int64_t until;
	int error;
};

static void pause_record_run(uv_work_t *req)
{
	struct pause_req *pr = (struct pause_req *)req;

	pr->error = gp_stats_pause_set(pr->stats, pr->until);
}

static void pause_record_done(uv_work_t *req, int status)
{
	struct pause_req *pr = (struct pause_req *)req;

	(void)status;
	if (pr->error < 0)
		gp_warn("cannot record the pause (it will not outlive a restart): "
			"%s", gp_stats_error(pr->stats));
	free(pr);
}

static void record_pause(struct session *s, int64_t until)
{
	struct pause_req *pr;

	if (!s->cfg->stats)
		return;
	pr = calloc(1, sizeof(*pr));
	if (!pr)
		return;
	pr->stats = s->cfg->stats;
	pr->until = until;
	if (uv_queue_work(&s->loop, &pr->req, pause_record_run,
			  pause_record_done) < 0)
		free(pr);
}

/* Pauses until the unix second `until` (GP_STATS_PAUSE_FOREVER: until
 * resume), with a timer for its end. */
static void pause_until(struct session *s, int64_t until)
{
	int64_t now = gp_now_s();

	uv_timer_stop(&s->pause_timer);
	if (until != GP_STATS_PAUSE_FOREVER && until <= now)
		return;
	s->m.pause_until = until;
	gp_machine_set_user_paused(&s->m, true);
	if (until != GP_STATS_PAUSE_FOREVER)
		uv_timer_start(&s->pause_timer, on_pause_timer,
			       (uint64_t)(until - now) * 1000, 0);
}

/* The control socket's commands: status, pause [UNTIL], resume, finish,
 * reload, name [PUBLIC-NAME]. A pause or resume is applied and recorded in the database (the
 * CLI records it itself only when no agent runs). */
static void on_control(const char *line, char *reply, size_t len, void *data)
{
	struct session *s = data;

	if (strcmp(line, "status") == 0) {
		if (gp_agent_status_format(&s->st, reply, len) < 0)
			snprintf(reply, len, "error: status too long\n");
	} else if (strcmp(line, "pause") == 0 ||
		   strncmp(line, "pause ", 6) == 0) {
		char *end;
		long long until = line[5] ? strtoll(line + 6, &end, 10) : 0;

		if (line[5] && (*end || until <= 0)) {
			snprintf(reply, len, "error: pause UNIX-SECONDS\n");
			return;
		}
		pause_until(s, line[5] ? (int64_t)until : GP_STATS_PAUSE_FOREVER);
		record_pause(s, line[5] ? (int64_t)until : GP_STATS_PAUSE_FOREVER);
		snprintf(reply, len, "ok: %s\n", s->m.user_paused ? "paused" :
			 "the pause is already over");
	} else if (strcmp(line, "resume") == 0) {
		uv_timer_stop(&s->pause_timer);
		record_pause(s, 0);
		gp_machine_set_user_paused(&s->m, false);
		snprintf(reply, len, "ok: %s\n",
			 gp_machine_paused(&s->m) ? s->m.policy_why : "resumed");
	} else if (strcmp(line, "finish") == 0) {
		snprintf(reply, len, "ok: finishing %" PRIu64 " minibatch(es) in "
			 "hand, then stopping\n", s->m.in_hand);
		/* Not from here: stopping closes this socket before the reply
		 * is written. Again while it finishes (machine.h). */
		uv_timer_start(&s->finish_timer, on_finish_timer, 0,
			       GP_MACHINE_FINISH_RESEND_MS);
	} else if (strcmp(line, "reload") == 0) {
		check_members(s);
		snprintf(reply, len, "ok: reloading the memberships\n");
	} else if (strcmp(line, "name") == 0 || strncmp(line, "name ", 5) == 0) {
		const char *name = line[4] ? line + 5 : "";

		if (name[0] && gp_msg_public_name_check(name) < 0) {
			snprintf(reply, len, "error: not a public name\n");
			return;
		}
		gp_machine_set_public_name(&s->m, name);
		publish_status(s);
		snprintf(reply, len, "ok: %s\n", name[0] ? "public" : "not public");
	} else {
		snprintf(reply, len, "error: unknown command (status, pause, "
			 "resume, finish, reload, name)\n");
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
	gp_machine_stop(&s->m, 0);
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
	/* A language model's token file (gp-tokens) in the directory is
	 * the local data set in place of Fashion-MNIST. */
	if (dir && dir[0]) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/train.tok", dir);
		if (access(path, F_OK) == 0) {
			r = gp_tokens_load(path, &s->tokens, err, sizeof(err));
			if (r < 0) {
				gp_warn("%s: windows will come with their "
					"tokens", err);
				return;
			}
			s->m.tokens = s->tokens;
			s->m.data_fingerprint =
				gp_tokens_fingerprint(s->tokens);
			gp_info("local token file: %zu tokens, fingerprint "
				"%016" PRIx64, s->tokens->count,
				s->m.data_fingerprint);
			return;
		}
	}
	r = gp_data_load_fashion_mnist(dir && dir[0] ? dir : NULL, true,
				       &s->data, err, sizeof(err));
	if (r < 0) {
		gp_info("no local copy of the training set (%s): minibatches "
			"will come with their pixels", err);
		return;
	}
	s->m.data = s->data;
	s->m.data_fingerprint = gp_data_fingerprint(s->data);
	gp_info("local training set: %zu samples, fingerprint %016" PRIx64,
		s->data->count, s->m.data_fingerprint);
}

/* The member session's timers, control socket and first state; READY=1. */
static void start_run(struct session *s)
{
	const struct gp_session_config *cfg = s->cfg;
	char line[2 * GP_AGENT_STATUS_TEXT_MAX + 16];
	uint64_t wd;
	int r;

	load_data(s);
	snprintf(s->st.state, sizeof(s->st.state), "starting");
	/* A pause that outlived the restart. */
	if (cfg->paused_until)
		pause_until(s, cfg->paused_until);
	uv_timer_start(&s->stats_timer, on_stats_timer, STATS_FLUSH_MS,
		       STATS_FLUSH_MS);
	uv_timer_start(&s->member_timer, on_member_timer, 0,
		       cfg->member_poll_ms ? cfg->member_poll_ms : MEMBER_POLL_MS);
	if (policy_active(&cfg->policy)) {
		/* Check before the first connection, so that an agent
		 * started on battery never takes work. */
		time_t now = time(NULL);
		uint64_t every = cfg->policy_poll_ms ? cfg->policy_poll_ms :
						       POLICY_POLL_MS;

		s->m.verdict = gp_policy_check(&cfg->policy, now,
					       sent_today(cfg, now),
					       s->m.policy_why,
					       sizeof(s->m.policy_why));
		uv_timer_start(&s->policy_timer, on_policy_timer, every, every);
	}
	if (cfg->control_path) {
		gp_control_starting_stop(cfg->starting_control);
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
	gp_machine_start(&s->m);
	snprintf(line, sizeof(line), "%s: %s", s->st.state, s->st.reason);
	gp_notify_ready(line);
	s->ready_sent = true;
}

static int session_run(const struct gp_session_config *cfg,
		       const struct gp_token *token, enum gp_machine_mode mode,
		       struct session *s)
{
	int r;

	memset(s, 0, sizeof(*s));
	s->cfg = cfg;
	gp_machine_init(&s->m, cfg, token, mode, NULL, 0, &session_ops, s);
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
	uv_timer_init(&s->loop, &s->pause_timer);
	uv_timer_init(&s->loop, &s->finish_timer);
	uv_signal_init(&s->loop, &s->sigint);
	uv_signal_init(&s->loop, &s->sigterm);
	s->retry.data = s->stats_timer.data = s->sigint.data = s->sigterm.data = s;
	s->member_timer.data = s->policy_timer.data = s->watchdog.data = s;
	s->pause_timer.data = s->finish_timer.data = s;
	uv_signal_start(&s->sigint, on_signal, SIGINT);
	uv_signal_start(&s->sigterm, on_signal, SIGTERM);
	signal(SIGPIPE, SIG_IGN);
	if (mode == GP_MACHINE_RUN)
		start_run(s);
	else
		gp_machine_start(&s->m);
	uv_run(&s->loop, UV_RUN_DEFAULT);
	/* The worker's async handle closes with it; run the loop once more
	 * so that its close callback frees it. */
	gp_worker_stop(s->worker);
	gp_data_destroy(s->data);
	gp_tokens_destroy(s->tokens);
	gp_datacache_destroy(s->cache);
	s->worker = NULL;
	uv_run(&s->loop, UV_RUN_DEFAULT);
	uv_loop_close(&s->loop);
	gp_machine_finish(&s->m);
	gp_noise_keypair_destroy(s->kp);
	if (cfg->stats && mode == GP_MACHINE_RUN)
		gp_stats_flush(cfg->stats);
	return s->m.result;
}

int gp_session_join(const struct gp_session_config *cfg,
		    const struct gp_token *token)
{
	struct session s;
	struct gp_stats_membership m;
	char fp[GP_FINGERPRINT_LEN + 1];
	int r;

	r = session_run(cfg, token, GP_MACHINE_JOIN, &s);
	if (r < 0)
		return r;
	if (!s.m.joined)
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
	m.agent_id = s.m.agent_id;
	m.joined_at = gp_now_s();
	r = gp_stats_membership_set(cfg->stats, &m);
	if (r < 0) {
		gp_error("cannot record the membership: %s",
			 gp_stats_error(cfg->stats));
		return r;
	}
	printf("joined pool %s as agent %" PRId64 "\n", fp, s.m.agent_id);
	return 0;
}

int gp_session_run(const struct gp_session_config *cfg)
{
	struct session s;

	return session_run(cfg, NULL, GP_MACHINE_RUN, &s);
}

int gp_session_leave(const struct gp_session_config *cfg)
{
	struct session s;
	int r;

	r = session_run(cfg, NULL, GP_MACHINE_LEAVE, &s);
	if (r < 0)
		return r;
	return s.m.joined ? 0 : -ECONNABORTED;
}
