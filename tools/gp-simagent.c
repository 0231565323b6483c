/* gp-simagent: many simulated agents in one process, for tools/bench-scale.
 *
 * Each simulated agent is the real agent's state machine (agent/machine.c)
 * over a real channel (Noise IK / IKpsk2 on TCP) with its own key pair: it
 * joins with the invite token (the first, token-keyed handshake), then
 * connects again as a member, asks for work, pulls parameters, answers
 * minibatches and groups with UPDATE messages and heartbeats, exactly as
 * gradpool-agent does. Only the training step is replaced: a cheap,
 * deterministic gradient of the model's exact shape (a fixed pattern times
 * a number that depends on the minibatch), delivered compute_ms after the
 * minibatch arrived, with a group's momentum sums computed as the agent's
 * worker computes them (proto/msg.h GP_UPDATE_SUMS). So the coordinator
 * does for each simulated agent what it does for a real one: handshake,
 * decryption, decoding, checks, SSP, applying, the ledger.
 *
 * All agents share one libuv loop. Agent i connects from 127.a.b.c, the
 * (i + 1)-th address after --from, so that thousands of connections do not
 * run out of ephemeral ports on one source address. Each starts at a
 * random time within --storm seconds (the join storm), then follows the
 * machine's own backoff with jitter on failures.
 *
 * The agents also send an application HEARTBEAT every --heartbeat-ms
 * (jittered); the coordinator echoes its time_us, which gives the round
 * trip through its loop (decrypt, decode, answer, encrypt).
 *
 * Output: a progress line on stdout every second ("progress: joined J of N,
 * welcomed W, updates U"); SIGUSR1 starts the steady phase (resets the
 * round-trip and update counters); SIGTERM or SIGINT stops every agent
 * (BYE), writes the report (JSON, --report FILE or stdout) and exits 0.
 *
 * Usage: gp-simagent --token TOKEN --agents N [--from 127.1.0.0]
 *          [--storm S] [--compute-ms MS] [--heartbeat-ms MS]
 *          [--report FILE] [--name PREFIX]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "backend.h"
#include "channel.h"
#include "data.h"
#include "identity.h"
#include "log.h"
#include "machine.h"
#include "model.h"
#include "msg.h"
#include "noise.h"
#include "session.h"
#include "token.h"
#include "util.h"
#include "worker.h"

/* Round trips kept for the percentiles (a reservoir past this). */
#define RTT_KEEP 200000

struct sim;

/* One queued minibatch of the fake worker. */
struct job {
	uint64_t gen;
	uint32_t epoch;
	uint64_t minibatch;
	uint64_t clock;
	uint32_t samples;
	float lr, mu;
	uint32_t group;      /* > 1: opens a group of this many */
	struct job *next;
};

struct agent {
	struct sim *sim;
	unsigned idx;
	struct gp_session_config cfg;
	struct gp_machine m;
	bool joining;            /* the token handshake; then the member's */
	bool gave_up;
	struct gp_stats_membership mem;
	struct gp_noise_keypair *kp;
	struct gp_channel *ch;
	struct sockaddr_in from;
	uv_timer_t retry, start, hb, work;
	/* The fake worker. */
	bool have_worker;
	const struct shape *shape;
	uint64_t gen;
	struct job *head, *tail;
	bool computing;
	/* The open group: its minibatches so far and its sums' scalars. */
	uint32_t group_want, group_have;
	double g_a, g_b_num, g_b_den, g_mu_pow, g_samples, g_loss;
	struct gp_worker_item items[GP_WORKER_GROUP_MAX];
	struct job group_first;
	/* Measures. */
	uint64_t started_us, welcomed_us, hb_seq;
	bool welcomed_once;
};

/* A model's tensors, made once per distinct model text. */
struct shape {
	char *spec;
	size_t n_tensors, n_values;
	struct gp_tensor_info *tensors;
	float *base;             /* n_values: the fixed gradient pattern */
	double base_norm;
	double flops;
	struct shape *next;
};

struct sim {
	uv_loop_t loop;
	uv_timer_t tick;
	uv_signal_t sigterm, sigint, sigusr1;
	struct gp_token token;
	struct agent *agents;
	unsigned n;
	double storm_s;
	unsigned compute_ms, heartbeat_ms;
	const char *report;
	const char *name;
	struct shape *shapes;
	/* --data: the training set every agent holds (JOIN offers
	 * GP_CAP_LOCAL_DATA, so MINIBATCH carries indices, not pixels). */
	struct gp_dataset *data;
	uint64_t data_fingerprint;
	bool stopping;
	unsigned open_handles;
	/* Counters (since the start, or since SIGUSR1 for the steady ones). */
	uint64_t joined, welcomed, gave_up, connects, connect_failures,
		 rejects, closes_after_welcome;
	uint64_t steady_us, updates, steady_updates, minibatches;
	/* connect_failures + rejects + closes_after_welcome at SIGUSR1 */
	uint64_t steady_base_refused;
	double *rtt;             /* ms */
	/* The same round trips' way up: from the send to serve's echo
	 * (its time_us; CLOCK_MONOTONIC is one clock for every process of
	 * the machine), so serve's own delay apart from this process's. */
	double *up;              /* ms */
	size_t n_rtt, seen_rtt;
	double *join_ms;
	size_t n_join;
};

/* ---- the fake worker -------------------------------------------------- */

static const struct shape *shape_for(struct sim *s, const char *spec)
{
	struct gp_model_spec ms;
	struct gp_backend *be = NULL;
	struct gp_model *model = NULL;
	struct shape *sh;
	char err[256];
	size_t off = 0;

	for (sh = s->shapes; sh; sh = sh->next)
		if (strcmp(sh->spec, spec) == 0)
			return sh;
	if (gp_model_spec_parse(spec, &ms, err, sizeof(err)) < 0) {
		gp_error("the pool's model: %s", err);
		return NULL;
	}
	if (gp_backend_create_cpu(1, &be) < 0 ||
	    gp_model_create(be, &ms, 1, &model) < 0) {
		gp_error("cannot lay out the pool's model");
		gp_backend_destroy(be);
		return NULL;
	}
	sh = calloc(1, sizeof(*sh));
	if (!sh)
		goto fail;
	sh->spec = strdup(spec);
	sh->n_tensors = gp_model_tensor_count(model);
	sh->tensors = calloc(sh->n_tensors, sizeof(*sh->tensors));
	sh->n_values = gp_model_param_count(model);
	sh->base = malloc(sh->n_values * sizeof(float));
	if (!sh->spec || !sh->tensors || !sh->base)
		goto fail;
	for (size_t i = 0; i < sh->n_tensors; i++) {
		gp_model_tensor_info(model, i, &sh->tensors[i]);
		off += sh->tensors[i].rows * sh->tensors[i].cols;
	}
	/* A fixed pattern of small values, deterministic. */
	for (size_t i = 0; i < sh->n_values; i++) {
		uint32_t h = (uint32_t)i * 2654435761u;

		sh->base[i] = ((float)(h >> 16) / 65536.0f - 0.5f) * 2e-3f;
		sh->base_norm += (double)sh->base[i] * sh->base[i];
	}
	sh->base_norm = sqrt(sh->base_norm);
	sh->flops = gp_model_spec_train_flops(&ms);
	(void)off;
	gp_model_destroy(model);
	gp_backend_destroy(be);
	sh->next = s->shapes;
	s->shapes = sh;
	return sh;
fail:
	if (sh) {
		free(sh->spec);
		free(sh->tensors);
		free(sh->base);
		free(sh);
	}
	gp_model_destroy(model);
	gp_backend_destroy(be);
	return NULL;
}

/* The scalar that stands for minibatch mb's gradient: the result is
 * c * base, so that sums over a group are sums of scalars. */
static double grad_scale(uint64_t minibatch)
{
	return 0.5 + (double)(minibatch % 7) / 7.0;
}

static struct gp_worker_result *make_result(struct agent *a, const struct job *first,
					    size_t n_items, double a_sum,
					    double b_sum, double norm_div,
					    double samples)
{
	const struct shape *sh = a->shape;
	struct gp_worker_result *res = calloc(1, sizeof(*res));

	if (!res)
		return NULL;
	res->gen = first->gen;
	res->epoch = first->epoch;
	res->minibatch = first->minibatch;
	res->clock = first->clock;
	res->samples = (uint32_t)samples;
	res->loss = 2.3 - 0.1 * (double)(first->minibatch % 10) / 10.0;
	res->compute_us = (uint64_t)a->sim->compute_ms * 1000 *
			  (n_items ? n_items : 1);
	res->grad_norm = fabs(a_sum) * sh->base_norm / (norm_div > 0 ? norm_div : 1);
	res->n_grads = sh->n_values;
	res->grads = malloc(sh->n_values * sizeof(float));
	if (n_items)
		res->sums_b = malloc(sh->n_values * sizeof(float));
	if (!res->grads || (n_items && !res->sums_b)) {
		gp_worker_result_free(res);
		return NULL;
	}
	for (size_t i = 0; i < sh->n_values; i++)
		res->grads[i] = (float)(a_sum * sh->base[i]);
	if (n_items) {
		for (size_t i = 0; i < sh->n_values; i++)
			res->sums_b[i] = (float)(b_sum * sh->base[i]);
		res->items = malloc(n_items * sizeof(*res->items));
		if (!res->items) {
			gp_worker_result_free(res);
			return NULL;
		}
		memcpy(res->items, a->items, n_items * sizeof(*res->items));
		res->n_items = n_items;
	}
	return res;
}

static void deliver(struct agent *a, struct gp_worker_result *res)
{
	if (!res)
		return;
	a->sim->minibatches += res->n_items ? res->n_items : 1;
	gp_machine_on_result(&a->m, res);
	gp_worker_result_free(res);
}

static void work_next(struct agent *a);

/* One minibatch done: alone, or the next of the open group. */
static void on_work(uv_timer_t *t)
{
	struct agent *a = t->data;
	struct job *j = a->head;
	double c;

	a->computing = false;
	if (!j)
		return;
	a->head = j->next;
	if (!a->head)
		a->tail = NULL;
	if (j->gen != a->gen) { /* dropped while computing: still reported */
		free(j);
		work_next(a);
		return;
	}
	c = grad_scale(j->minibatch);
	if (j->group > 1) { /* a new group opens (an open one is dropped) */
		a->group_want = j->group;
		a->group_have = 0;
		a->g_a = a->g_b_num = a->g_b_den = a->g_samples = a->g_loss = 0;
		a->g_mu_pow = 0;
		a->group_first = *j;
	}
	if (a->group_want) {
		/* a_j = mu a_(j-1) + g_j; B = sum lr_j a_j / sum lr_j. */
		float mu = isfinite(j->mu) && j->mu >= 0 && j->mu < 1 ? j->mu : 0;
		float lr = isfinite(j->lr) && j->lr > 0 ? j->lr : 0;

		a->g_a = mu * a->g_a + c;
		a->g_b_num += lr * a->g_a;
		a->g_b_den += lr;
		a->g_mu_pow = mu * a->g_mu_pow + 1;
		a->g_samples += j->samples;
		a->items[a->group_have++] = (struct gp_worker_item){
			.epoch = j->epoch, .minibatch = j->minibatch,
			.loss = 2.0f,
		};
		if (a->group_have == a->group_want) {
			size_t n = a->group_have;

			a->group_want = 0;
			deliver(a, make_result(a, &a->group_first, n, a->g_a,
					       a->g_b_den > 0 ?
					       a->g_b_num / a->g_b_den : 0,
					       a->g_mu_pow, a->g_samples));
		}
	} else {
		deliver(a, make_result(a, j, 0, c, 0, 1, j->samples));
	}
	free(j);
	work_next(a);
}

static void work_next(struct agent *a)
{
	if (a->computing || !a->head || a->sim->stopping)
		return;
	a->computing = true;
	uv_timer_start(&a->work, on_work, a->sim->compute_ms, 0);
}

static int op_worker_start(void *ctx, const char *spec, uint64_t seed,
			   uint32_t batch, unsigned fail_step)
{
	struct agent *a = ctx;

	(void)seed;
	(void)batch;
	(void)fail_step;
	a->shape = shape_for(a->sim, spec);
	if (!a->shape)
		return -EINVAL;
	a->have_worker = true;
	return 0;
}

static size_t op_worker_tensor_count(void *ctx)
{
	return ((struct agent *)ctx)->shape->n_tensors;
}

static const struct gp_tensor_info *op_worker_tensor(void *ctx, size_t i)
{
	return &((struct agent *)ctx)->shape->tensors[i];
}

static int op_worker_set_params(void *ctx, enum gp_model_slot slot,
				size_t tensor, size_t row0, size_t rows,
				float *values)
{
	(void)ctx;
	(void)slot;
	(void)tensor;
	(void)row0;
	(void)rows;
	free(values);
	return 0;
}

static int op_worker_compute(void *ctx, uint32_t epoch, uint64_t minibatch,
			     uint64_t clock, uint32_t n, uint8_t *pixels,
			     uint8_t dtype, uint8_t *labels, float lr, float mu,
			     uint32_t group)
{
	struct agent *a = ctx;
	struct job *j = calloc(1, sizeof(*j));

	(void)dtype;
	free(pixels);
	free(labels);
	if (!j)
		return -ENOMEM;
	*j = (struct job){ .gen = a->gen, .epoch = epoch, .minibatch = minibatch,
			   .clock = clock, .samples = n, .lr = lr, .mu = mu,
			   .group = group };
	if (a->tail)
		a->tail->next = j;
	else
		a->head = j;
	a->tail = j;
	work_next(a);
	return 0;
}

static void op_worker_drop_queued(void *ctx)
{
	struct agent *a = ctx;
	struct job *j = a->head, *keep = NULL;

	/* The one computing still reports, with the old generation. */
	if (a->computing && j) {
		keep = j;
		j = j->next;
		keep->next = NULL;
	}
	while (j) {
		struct job *next = j->next;

		free(j);
		j = next;
	}
	a->head = a->tail = keep;
	a->group_want = 0;
	a->gen++;
}

static uint64_t op_worker_generation(void *ctx)
{
	return ((struct agent *)ctx)->gen;
}

static double op_worker_flops_per_sample(void *ctx)
{
	struct agent *a = ctx;

	return a->shape ? a->shape->flops : 0;
}

/* ---- the channel ------------------------------------------------------ */

static void rtt_add(struct sim *s, double ms, double up_ms)
{
	s->seen_rtt++;
	if (s->n_rtt < RTT_KEEP) {
		s->up[s->n_rtt] = up_ms;
		s->rtt[s->n_rtt++] = ms;
	} else {
		size_t k = (size_t)rand() % s->seen_rtt;

		if (k < RTT_KEEP) {
			s->rtt[k] = ms;
			s->up[k] = up_ms;
		}
	}
}

static void on_established(struct gp_channel *ch, const uint8_t *remote,
			   const uint8_t *payload, size_t len)
{
	struct agent *a = gp_channel_data(ch);

	(void)remote;
	(void)payload;
	(void)len;
	gp_machine_on_established(&a->m);
}

static void on_message(struct gp_channel *ch, uint8_t *data, size_t len)
{
	struct agent *a = gp_channel_data(ch);
	struct gp_msg_header h;

	if (gp_msg_peek(data, len, &h) == 0 && h.type == GP_MSG_HEARTBEAT) {
		struct gp_msg msg;

		uint64_t now = gp_mono_us();

		if (gp_msg_decode(data, len, &msg) == 0 &&
		    msg.u.heartbeat.echo_time_us &&
		    msg.u.heartbeat.echo_time_us <= now &&
		    msg.u.heartbeat.time_us >= msg.u.heartbeat.echo_time_us &&
		    msg.u.heartbeat.time_us <= now)
			rtt_add(a->sim,
				(double)(now - msg.u.heartbeat.echo_time_us) / 1e3,
				(double)(msg.u.heartbeat.time_us -
					 msg.u.heartbeat.echo_time_us) / 1e3);
		gp_msg_finish(&msg);
		return;
	}
	if (h.type == GP_MSG_WELCOME && !a->joining && !a->welcomed_once) {
		a->welcomed_once = true;
		a->welcomed_us = gp_mono_us();
		a->sim->welcomed++;
		if (a->sim->n_join < a->sim->n)
			a->sim->join_ms[a->sim->n_join++] =
				(double)(a->welcomed_us - a->started_us) / 1e3;
	}
	gp_machine_on_message(&a->m, data, len);
}

static void start_member(struct agent *a);

static void on_close(struct gp_channel *ch, enum gp_close_reason reason,
		     uint16_t code, const char *text)
{
	struct agent *a = gp_channel_data(ch);

	if (ch != a->ch)
		return;
	a->ch = NULL;
	if (reason == GP_CLOSE_REJECTED)
		a->sim->rejects++;
	else if (reason == GP_CLOSE_CONNECT_FAILED ||
		 reason == GP_CLOSE_HANDSHAKE_FAILED)
		a->sim->connect_failures++;
	if (a->m.welcomed && !a->joining && !a->sim->stopping)
		a->sim->closes_after_welcome++;
	gp_machine_on_close(&a->m, reason, code, text);
	if (a->joining && a->m.stopping) {
		if (a->m.joined)
			start_member(a);
		else if (!a->gave_up) {
			a->gave_up = true;
			a->sim->gave_up++;
		}
	}
}

static int op_connect(void *ctx, const char *ep)
{
	struct agent *a = ctx;
	struct sockaddr_storage ss;
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;
	struct gp_channel_config cc;
	struct gp_channel_callbacks cb = {
		.on_established = on_established,
		.on_message = on_message,
		.on_close = on_close,
	};
	uint8_t psk[GP_TOKEN_PSK_SIZE];
	struct gp_channel_peer peer = { 0 };
	char host[256];
	const char *colon = strrchr(ep, ':');
	int r;

	if (!colon || (size_t)(colon - ep) >= sizeof(host))
		return -EHOSTUNREACH;
	memcpy(host, ep, (size_t)(colon - ep));
	host[colon - ep] = '\0';
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || !res)
		return -EHOSTUNREACH;
	memcpy(&ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	a->sim->connects++;
	gp_channel_config_default(&cc);
	peer.addr = (struct sockaddr *)&ss;
	peer.local = a->kp;
	if (ss.ss_family == AF_INET)
		peer.bind_addr = (const struct sockaddr *)&a->from;
	if (a->joining) {
		gp_token_psk(a->sim->token.secret, psk);
		peer.remote_static = a->sim->token.coordinator_pub;
		peer.psk = psk;
		peer.payload = a->sim->token.id;
		peer.payload_len = GP_TOKEN_ID_SIZE;
	} else {
		peer.remote_static = a->mem.coordinator_key;
	}
	r = gp_channel_connect(&a->sim->loop, &peer, &cc, &cb, a, &a->ch);
	explicit_bzero(psk, sizeof(psk));
	if (r < 0) {
		a->ch = NULL;
		a->sim->connect_failures++;
		return r == -EHOSTUNREACH ? -ECONNREFUSED : r;
	}
	return 0;
}

static bool op_established(void *ctx)
{
	struct agent *a = ctx;

	return a->ch && gp_channel_is_established(a->ch);
}

static int op_send(void *ctx, struct gp_msg *msg)
{
	struct agent *a = ctx;
	int r;

	if (!a->ch || !gp_channel_is_established(a->ch))
		return -ENOTCONN;
	r = gp_channel_send_msg(a->ch, msg);
	if (r == 0 && msg->type == GP_MSG_UPDATE) {
		a->sim->updates++;
		if (a->sim->steady_us)
			a->sim->steady_updates++;
	}
	return r;
}

static void op_close(void *ctx, uint16_t code, const char *text)
{
	struct agent *a = ctx;

	if (a->ch)
		gp_channel_close(a->ch, code, text);
}

static void op_set_heartbeat(void *ctx, uint32_t ms)
{
	struct agent *a = ctx;

	if (a->ch)
		gp_channel_set_heartbeat(a->ch, ms);
}

static void on_retry(uv_timer_t *t)
{
	struct agent *a = t->data;

	gp_machine_connect(&a->m);
}

static void op_retry(void *ctx, uint64_t ms)
{
	struct agent *a = ctx;

	if (a->sim->stopping)
		return;
	if (ms)
		uv_timer_start(&a->retry, on_retry, ms, 0);
	else
		uv_timer_stop(&a->retry);
}

static int op_beacon(void *ctx, bool on)
{
	(void)ctx;
	(void)on;
	return 0;
}

static void op_stopped(void *ctx)
{
	(void)ctx;
}

static void op_status(void *ctx)
{
	(void)ctx;
}

static void op_remember(void *ctx, const struct gp_stats_membership *m)
{
	(void)ctx;
	(void)m;
}

static void op_record(void *ctx, const struct gp_stats_delta *d)
{
	(void)ctx;
	(void)d;
}

static const struct gp_machine_ops sim_ops = {
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
	.worker_drop_queued = op_worker_drop_queued,
	.worker_generation = op_worker_generation,
	.worker_flops_per_sample = op_worker_flops_per_sample,
};

/* ---- an agent's life ---------------------------------------------------- */

/* The token handshake is done: become the member the WELCOME made. */
static void start_member(struct agent *a)
{
	struct sim *s = a->sim;

	s->joined++;
	memset(&a->mem, 0, sizeof(a->mem));
	gp_identity_fingerprint(s->token.coordinator_pub, a->mem.pool);
	memcpy(a->mem.coordinator_key, s->token.coordinator_pub,
	       GP_STATS_KEY_SIZE);
	for (size_t i = 0; i < s->token.n_endpoints; i++) {
		size_t o = strlen(a->mem.endpoints);

		snprintf(a->mem.endpoints + o, sizeof(a->mem.endpoints) - o,
			 "%s%s", i ? "," : "", s->token.endpoints[i]);
	}
	a->mem.agent_id = a->m.agent_id;
	a->mem.joined_at = gp_now_s();
	gp_machine_finish(&a->m);
	a->joining = false;
	gp_machine_init(&a->m, &a->cfg, NULL, GP_MACHINE_RUN, s->data,
			s->data_fingerprint, &sim_ops, a);
	gp_machine_start(&a->m);
	gp_machine_on_members(&a->m, true, &a->mem);
}

static void on_start(uv_timer_t *t)
{
	struct agent *a = t->data;

	a->started_us = gp_mono_us();
	gp_machine_start(&a->m);
}

static void on_hb(uv_timer_t *t)
{
	struct agent *a = t->data;
	struct gp_msg msg;

	if (a->joining || !a->m.welcomed || !a->ch)
		return;
	gp_msg_init(&msg, GP_MSG_HEARTBEAT);
	msg.u.heartbeat.seq = ++a->hb_seq;
	msg.u.heartbeat.time_us = gp_mono_us();
	op_send(a, &msg);
}

static void on_handle_closed(uv_handle_t *h)
{
	struct sim *s = h->loop->data;

	s->open_handles--;
}

static void close_handle(struct sim *s, uv_handle_t *h)
{
	if (uv_is_closing(h))
		return;
	s->open_handles++;
	uv_close(h, on_handle_closed);
}

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return a < b ? -1 : a > b;
}

static double pct(double *v, size_t n, double p)
{
	if (!n)
		return -1;
	return v[(size_t)(p * (double)(n - 1) + 0.5)];
}

static void write_report(struct sim *s)
{
	FILE *f = s->report ? fopen(s->report, "w") : stdout;
	double steady_s = s->steady_us ?
			  (double)(gp_mono_us() - s->steady_us) / 1e6 : 0;

	if (!f) {
		gp_error("%s: %s", s->report, strerror(errno));
		return;
	}
	qsort(s->rtt, s->n_rtt, sizeof(double), cmp_double);
	qsort(s->up, s->n_rtt, sizeof(double), cmp_double);
	qsort(s->join_ms, s->n_join, sizeof(double), cmp_double);
	fprintf(f, "{\"agents\": %u, \"joined\": %" PRIu64 ", \"welcomed\": %"
		PRIu64 ", \"gave_up\": %" PRIu64 ", \"connects\": %" PRIu64
		", \"connect_failures\": %" PRIu64 ", \"rejects\": %" PRIu64
		", \"closes_after_welcome\": %" PRIu64 ", \"updates\": %" PRIu64
		", \"minibatches\": %" PRIu64 ", \"steady_s\": %.3f"
		", \"steady_updates\": %" PRIu64 ", \"heartbeats\": %zu"
		", \"heartbeat_p50_ms\": %.3f, \"heartbeat_p99_ms\": %.3f"
		", \"heartbeat_max_ms\": %.3f"
		", \"join_p50_s\": %.3f, \"join_max_s\": %.3f",
		s->n, s->joined, s->welcomed, s->gave_up, s->connects,
		s->connect_failures, s->rejects, s->closes_after_welcome,
		s->updates, s->minibatches, steady_s, s->steady_updates,
		s->n_rtt, pct(s->rtt, s->n_rtt, 0.5), pct(s->rtt, s->n_rtt, 0.99),
		s->n_rtt ? s->rtt[s->n_rtt - 1] : -1,
		pct(s->join_ms, s->n_join, 0.5) / 1e3,
		s->n_join ? s->join_ms[s->n_join - 1] / 1e3 : -1);
	fprintf(f, ", \"steady_refused\": %" PRIu64,
		s->steady_us ? s->connect_failures + s->rejects +
			       s->closes_after_welcome - s->steady_base_refused : 0);
	/* A thinned copy of the sorted round trips, each standing for
	 * rtt_step of them, for merging the reports of several processes. */
	fprintf(f, ", \"rtt_step\": %zu, \"rtt_ms\": [", s->n_rtt / 2000 + 1);
	for (size_t i = 0, step = s->n_rtt / 2000 + 1; i < s->n_rtt; i += step)
		fprintf(f, "%s%.3f", i ? ", " : "", s->rtt[i]);
	/* The way up of the same round trips, sorted on its own. */
	fprintf(f, "], \"up_ms\": [");
	for (size_t i = 0, step = s->n_rtt / 2000 + 1; i < s->n_rtt; i += step)
		fprintf(f, "%s%.3f", i ? ", " : "", s->up[i]);
	fprintf(f, "]}\n");
	if (f != stdout)
		fclose(f);
}

static void stop_all(struct sim *s)
{
	if (s->stopping)
		return;
	s->stopping = true;
	write_report(s);
	for (unsigned i = 0; i < s->n; i++) {
		struct agent *a = &s->agents[i];

		close_handle(s, (uv_handle_t *)&a->retry);
		close_handle(s, (uv_handle_t *)&a->start);
		close_handle(s, (uv_handle_t *)&a->hb);
		close_handle(s, (uv_handle_t *)&a->work);
		gp_machine_stop(&a->m, 0);
	}
	close_handle(s, (uv_handle_t *)&s->tick);
	close_handle(s, (uv_handle_t *)&s->sigterm);
	close_handle(s, (uv_handle_t *)&s->sigint);
	close_handle(s, (uv_handle_t *)&s->sigusr1);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct sim *s = h->data;

	if (signum == SIGUSR1) {
		s->steady_us = gp_mono_us();
		s->steady_updates = 0;
		s->steady_base_refused = s->connect_failures + s->rejects +
					 s->closes_after_welcome;
		s->n_rtt = s->seen_rtt = 0;
		return;
	}
	stop_all(s);
}

static void on_tick(uv_timer_t *t)
{
	struct sim *s = t->data;

	printf("progress: joined %" PRIu64 " of %u, welcomed %" PRIu64
	       ", gave up %" PRIu64 ", updates %" PRIu64 "\n", s->joined, s->n,
	       s->welcomed, s->gave_up, s->updates);
	fflush(stdout);
}

static int parse_from(const char *text, uint32_t *ret)
{
	struct in_addr in;

	if (inet_pton(AF_INET, text, &in) != 1)
		return -EINVAL;
	*ret = ntohl(in.s_addr);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: gp-simagent --token TOKEN --agents N [--from ADDR] "
		"[--storm S] [--compute-ms MS] [--heartbeat-ms MS] "
		"[--report FILE] [--name PREFIX] [--data DIR|default]\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "token", required_argument, NULL, 't' },
		{ "agents", required_argument, NULL, 'n' },
		{ "from", required_argument, NULL, 'f' },
		{ "storm", required_argument, NULL, 's' },
		{ "compute-ms", required_argument, NULL, 'c' },
		{ "heartbeat-ms", required_argument, NULL, 'b' },
		{ "report", required_argument, NULL, 'r' },
		{ "name", required_argument, NULL, 'N' },
		{ "data", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 }
	};
	static struct sim s;
	const char *token = NULL, *data_dir = NULL;
	uint32_t from = 0x7f010000; /* 127.1.0.0 */
	struct rlimit rl;
	enum gp_token_error te;
	int c;

	gp_log_init("gp-simagent");
	if (gp_log_get_level() < GP_LOG_WARN && !getenv("GP_LOG"))
		gp_log_set_level(GP_LOG_WARN);
	s.n = 100;
	s.storm_s = 10;
	s.compute_ms = 20;
	s.heartbeat_ms = 1000;
	s.name = "sim";
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 't': token = optarg; break;
		case 'n': s.n = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'f':
			if (parse_from(optarg, &from) < 0) {
				fprintf(stderr, "gp-simagent: --from %s is not an "
					"IPv4 address\n", optarg);
				return 2;
			}
			break;
		case 's': s.storm_s = strtod(optarg, NULL); break;
		case 'c': s.compute_ms = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'b': s.heartbeat_ms = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'r': s.report = optarg; break;
		case 'N': s.name = optarg; break;
		case 'd': data_dir = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!token || s.n == 0 || s.n > 65536 || !(s.storm_s >= 0) ||
	    s.heartbeat_ms == 0) {
		usage(stderr);
		return 2;
	}
	if (gp_noise_init() < 0)
		return 1;
	if (data_dir) {
		char err[256];

		/* One copy for every agent of the process. */
		if (gp_data_load_fashion_mnist(strcmp(data_dir, "default") ?
						       data_dir : NULL,
					       true, &s.data, err,
					       sizeof(err)) < 0) {
			fprintf(stderr, "gp-simagent: --data: %s\n", err);
			return 1;
		}
		s.data_fingerprint = gp_data_fingerprint(s.data);
	}
	if (gp_token_parse(token, &s.token, &te) < 0) {
		fprintf(stderr, "gp-simagent: bad token: %s\n",
			gp_token_error_str(te));
		return 2;
	}
	/* A socket per agent, and a few to spare. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < s.n + 64) {
		rl.rlim_cur = s.n + 64;
		if (rl.rlim_max < rl.rlim_cur)
			rl.rlim_max = rl.rlim_cur;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
			fprintf(stderr, "gp-simagent: cannot raise the open files "
				"limit to %u: %s\n", s.n + 64, strerror(errno));
			return 1;
		}
	}
	signal(SIGPIPE, SIG_IGN);
	srand((unsigned)gp_mono_us() ^ (unsigned)getpid());
	s.agents = calloc(s.n, sizeof(*s.agents));
	s.rtt = malloc(RTT_KEEP * sizeof(double));
	s.up = malloc(RTT_KEEP * sizeof(double));
	s.join_ms = malloc(s.n * sizeof(double));
	if (!s.agents || !s.rtt || !s.up || !s.join_ms)
		return 1;
	uv_loop_init(&s.loop);
	s.loop.data = &s;
	uv_timer_init(&s.loop, &s.tick);
	s.tick.data = &s;
	uv_timer_start(&s.tick, on_tick, 1000, 1000);
	uv_signal_init(&s.loop, &s.sigterm);
	uv_signal_init(&s.loop, &s.sigint);
	uv_signal_init(&s.loop, &s.sigusr1);
	s.sigterm.data = s.sigint.data = s.sigusr1.data = &s;
	uv_signal_start(&s.sigterm, on_signal, SIGTERM);
	uv_signal_start(&s.sigint, on_signal, SIGINT);
	uv_signal_start(&s.sigusr1, on_signal, SIGUSR1);
	for (unsigned i = 0; i < s.n; i++) {
		struct agent *a = &s.agents[i];
		uint8_t pub[GP_NOISE_KEY_SIZE], priv[GP_NOISE_KEY_SIZE];
		uint64_t at_ms = s.storm_s > 0 ?
				 (uint64_t)((double)rand() / RAND_MAX *
					    s.storm_s * 1000) : 0;

		a->sim = &s;
		a->idx = i;
		a->joining = true;
		snprintf(a->cfg.name, sizeof(a->cfg.name), "%s-%05u", s.name, i);
		a->cfg.n_devices = 1;
		a->cfg.devices[0].kind = GP_DEVICE_CPU;
		snprintf(a->cfg.devices[0].name, sizeof(a->cfg.devices[0].name),
			 "simulated");
		a->cfg.devices[0].gflops = 10;
		a->cfg.devices[0].samples_per_s = 5000;
		snprintf(a->cfg.device_name, sizeof(a->cfg.device_name),
			 "simulated");
		if (gp_noise_keypair_generate(pub, priv) < 0 ||
		    gp_noise_keypair_create(priv, &a->kp) < 0) {
			fprintf(stderr, "gp-simagent: no key pair for agent %u\n", i);
			return 1;
		}
		explicit_bzero(priv, sizeof(priv));
		a->from.sin_family = AF_INET;
		a->from.sin_addr.s_addr = htonl(from + 1 + i);
		gp_machine_init(&a->m, &a->cfg, &s.token, GP_MACHINE_JOIN,
				s.data, s.data_fingerprint, &sim_ops, a);
		uv_timer_init(&s.loop, &a->retry);
		uv_timer_init(&s.loop, &a->start);
		uv_timer_init(&s.loop, &a->hb);
		uv_timer_init(&s.loop, &a->work);
		a->retry.data = a->start.data = a->hb.data = a->work.data = a;
		uv_timer_start(&a->start, on_start, at_ms, 0);
		/* Heartbeats at a jittered phase, so that they do not come
		 * in one burst. */
		uv_timer_start(&a->hb, on_hb,
			       at_ms + (uint64_t)rand() % s.heartbeat_ms,
			       s.heartbeat_ms);
	}
	uv_run(&s.loop, UV_RUN_DEFAULT);
	for (unsigned i = 0; i < s.n; i++) {
		struct job *j = s.agents[i].head;

		while (j) {
			struct job *next = j->next;

			free(j);
			j = next;
		}
		gp_machine_finish(&s.agents[i].m);
		gp_noise_keypair_destroy(s.agents[i].kp);
	}
	while (s.shapes) {
		struct shape *next = s.shapes->next;

		free(s.shapes->spec);
		free(s.shapes->tensors);
		free(s.shapes->base);
		free(s.shapes);
		s.shapes = next;
	}
	free(s.agents);
	free(s.rtt);
	free(s.up);
	free(s.join_ms);
	gp_data_destroy(s.data);
	uv_loop_close(&s.loop);
	return 0;
}
