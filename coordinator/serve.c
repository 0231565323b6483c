/* The coordinator's serve loop.
 *
 * One libuv loop thread owns the network, the SSP clocks, the parameter
 * store and the schedule. SQLite writes (update-log batches, checkpoints,
 * job state) and test-set evaluations run on the libuv thread pool
 * (uv_queue_work) and report back on the loop thread; the few ledger reads a
 * handshake needs (is this key a member, is this token live) are indexed
 * lookups done in place.
 *
 * A clock of an agent is a handful of minibatches sized to its measured
 * speed (gp_ssp_work_per_clock). Serving an agent its next clock means: if
 * the SSP rule lets it compute, send the parameter shards that changed
 * since its last pull (the read clock becomes the min clock), then its
 * minibatches. Its updates are applied as they arrive; once every minibatch
 * of its clock is resolved, its clock advances, which may release agents
 * parked at the bound. docs/architecture.md tells the whole story. */
#include "serve.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#include "announce.h"
#include "backend.h"
#include "channel.h"
#include "checkpoint.h"
#include "data.h"
#include "gp-config.h"
#include "job.h"
#include "log.h"
#include "model.h"
#include "msg.h"
#include "notify.h"
#include "params.h"
#include "reason.h"
#include "scheduler.h"
#include "ssp.h"
#include "state.h"
#include "token.h"
#include "util.h"

#define META_CURRENT_JOB "current_job"
/* Minibatches per clock of an agent whose speed is not measured yet, and
 * the most any agent gets (the job's clock_duration sizes the others). */
#define WORK_BASE 2
#define WORK_MAX 256
/* The clock of an agent computing alone: it reads only its own writes (no
 * pull needed), so a long clock costs nothing in quality and saves round
 * trips. */
#define SOLO_CLOCK_MS 25
/* The clock of a pool of more than two agents, at most. */
#define POOL_CLOCK_MS 1
/* Messages over the rate limit after which a connection is closed: at
 * least this many, else one second's worth. */
#define FLOOD_DROPS_MIN 64
#define TICK_MS 100
/* How often connected members are checked for revocation. */
#define REVOKE_CHECK_MS 1000
#define EVAL_BATCH 1000

struct server;

/* An agent's parameter copy: the server's state when `base` updates were
 * applied, plus (read-my-writes) its own updates of clocks >= own_from;
 * `own` counts those applied here since. The updates its copy lacks are
 * gp_params_updates() - base - own. */
struct view {
	uint64_t base;
	int64_t own_from;
	uint64_t own;
};

struct peer {
	struct server *srv;
	struct gp_channel *ch;
	struct peer *next;
	char addr[64];
	bool psk_join;
	int64_t token_id;       /* IKpsk2: the token row presented */
	int64_t agent_id;       /* 0 until JOIN is accepted */
	bool joined;
	bool wants_work;
	bool paused;
	bool ssp_parked;        /* paused and out of the SSP bound */
	uint32_t caps;          /* GP_CAP_* agreed */
	uint64_t pulled_version;/* parameter version the agent holds */
	/* What the agent's copy of the parameters holds, for its current
	 * clock and for the clock handed out ahead (see struct view). */
	struct view view, view_next;
	int64_t clock;          /* the clock its current work is for */
	uint32_t clock_work;    /* minibatches handed out at that clock */
	uint32_t clock_open;    /* of which not yet resolved */
	uint32_t clock_target;  /* minibatches meant for that clock */
	uint32_t next_work;     /* handed out ahead for clock + 1 */
	uint32_t next_open;     /* of which not yet resolved */
	unsigned strikes;
	int64_t work_since_ms;  /* work handed out or last applied update */
	int64_t joined_ms;
	int64_t connected_ms;   /* on_verify */
	/* Token buckets of the job's rate limits, refilled as time passes. */
	double msg_tokens, byte_tokens;
	uint64_t rate_at_us;
	uint64_t over;          /* messages over the limit */
	bool flooded;           /* disconnected for it */
	uint64_t applied, samples; /* this run */
	uint64_t epoch_samples;    /* this epoch, for the share column */
	char name[GP_MSG_NAME_MAX + 1];
	/* The listener's user data: a channel closed before on_verify (the
	 * handshake limit, a timeout, garbage) still carries it in on_close. */
	bool listener_data;
};

struct server {
	struct peer listen_data; /* what every new channel starts with */
	uv_loop_t loop;
	uv_timer_t tick;
	uv_signal_t sigint, sigterm;
	struct gp_coord_state st;
	struct gp_job job;
	char *job_text;
	int64_t job_id;
	struct gp_model_spec spec;
	char spec_text[GP_MODEL_SPEC_MAX];

	struct gp_dataset *train, *test;
	uint64_t train_fingerprint;  /* gp_data_fingerprint(train) */
	struct gp_params *params;
	struct gp_ssp *ssp;
	struct gp_sched *sched;
	float *grad;            /* one full gradient, decode buffer */
	float *grad_b;          /* a group's second sum (GP_UPDATE_SUMS) */
	size_t n_params;
	uint8_t token_key[GP_KEY_SIZE];

	struct gp_channel_listener *listener;
	struct gp_announce *announce; /* [pool] beacon = on */
	struct gp_channel_config chcfg;
	struct peer *peers;
	uint32_t n_peers;       /* connections past on_verify */

	/* Background work: at most one ledger job and one evaluation. */
	bool db_busy;
	bool eval_busy;
	bool revoke_busy;       /* a revocation check (check_revoked) */
	int64_t last_revoke_check_ms;
	uint32_t eval_pending;  /* epochs completed, waiting for evaluation */
	struct gp_backend *eval_be;
	struct gp_model *eval_model;

	int64_t last_checkpoint_ms;
	uint64_t applied_since_checkpoint;
	bool checkpoint_wanted;
	bool stopping;
	bool done;
	bool final_reported;
	int exit_code;

	/* Progress of the current epoch, for the per-epoch line. */
	uint64_t epoch_start_us;
	uint64_t epoch_samples;
	double epoch_loss_sum;
	uint64_t epoch_updates;
	uint64_t run_start_us;
	uint64_t first_work_us;  /* first minibatch handed out in this run */
	double last_accuracy;
	uint64_t minibatches_total; /* of the whole job */
	uint64_t applied_run;    /* minibatches applied in this run */
	uint64_t unlogged;       /* updates refused for a full ledger buffer */
	uint64_t samples_run;
};

static void serve_work(struct peer *p);
static bool park_if_paused(struct peer *p);
static void maybe_finish(struct server *srv);

/* ---- helpers ---------------------------------------------------------- */

static int send_msg(struct peer *p, struct gp_msg *m)
{
	uint8_t *buf = NULL;
	size_t len;
	int r;

	if (!p->ch)
		return -ENOTCONN;
	r = gp_msg_encode_alloc(m, &buf, &len);
	if (r < 0)
		return r;
	r = gp_channel_send(p->ch, buf, len);
	free(buf);
	return r;
}

static void peer_close(struct peer *p, uint16_t code, const char *text)
{
	if (p->ch)
		gp_channel_close(p->ch, code, text);
}

static void send_bye(struct peer *p, uint16_t reason, const char *text)
{
	struct gp_msg m;

	gp_msg_init(&m, GP_MSG_BYE);
	m.u.bye.reason = reason;
	snprintf(m.u.bye.text, sizeof(m.u.bye.text), "%s", text);
	send_msg(p, &m);
	peer_close(p, reason, text);
}

/* Logs a refused or discarded update; a rejection counts a strike when
 * `strike` (one per UPDATE message, however many minibatches it held). */
static void reject_update(struct peer *p, const struct gp_msg_update *u,
			  enum gp_ledger_outcome outcome, int reason,
			  int64_t staleness, int64_t received, bool strike)
{
	struct server *srv = p->srv;
	struct gp_ledger_update row = {
		.job_id = srv->job_id,
		.agent_id = p->agent_id,
		.clock = (int64_t)u->clock,
		.epoch = u->epoch,
		.minibatch = (int64_t)u->minibatch,
		.samples = u->samples,
		.loss = u->loss,
		.grad_norm = u->grad_norm,
		.staleness = staleness,
		.received_at = received,
		.outcome = outcome,
	};

	snprintf(row.reason, sizeof(row.reason), "%s", gp_reason_str(reason));
	gp_ledger_update_append(srv->st.ledger, &row);
	if (outcome == GP_UPDATE_REJECTED) {
		struct gp_ledger_rejection rej = {
			.agent_id = p->agent_id,
			.at = received,
		};

		snprintf(rej.kind, sizeof(rej.kind), "%s", gp_reason_str(reason));
		snprintf(rej.reason, sizeof(rej.reason),
			 "update for minibatch %" PRIu64 " of epoch %u at clock %"
			 PRIu64, u->minibatch, u->epoch, u->clock);
		gp_ledger_rejection_append(srv->st.ledger, &rej);
		gp_warn("agent %" PRId64 " (%s): update rejected: %s", p->agent_id,
			p->addr, gp_reason_str(reason));
		if (strike && ++p->strikes >= srv->job.max_strikes) {
			gp_warn("agent %" PRId64 ": %u rejected updates, disconnecting",
				p->agent_id, p->strikes);
			send_bye(p, GP_BYE_PROTOCOL, "too many rejected updates");
		}
	} else {
		gp_debug("agent %" PRId64 ": update discarded: %s", p->agent_id,
			 gp_reason_str(reason));
	}
}

/* ---- background work: ledger and evaluation --------------------------- */

struct db_work {
	uv_work_t req;
	struct server *srv;
	uint8_t *blob;          /* checkpoint to write, or NULL */
	size_t blob_len;
	int64_t epoch, clock, now;
	bool job_done;
	int result;
	char err[256];
};

static void db_work_run(uv_work_t *req)
{
	struct db_work *w = req->data;
	struct gp_ledger *l = w->srv->st.ledger;

	w->result = 0;
	if (w->blob) {
		w->result = gp_ledger_checkpoint_write(
			l, w->srv->job_id, w->epoch, w->clock, w->now, w->blob,
			w->blob_len, w->srv->job.checkpoint_keep ?
				w->srv->job.checkpoint_keep : 2, NULL);
	} else {
		w->result = gp_ledger_flush(l);
	}
	if (w->result >= 0 && w->job_done)
		w->result = gp_ledger_job_set_state(l, w->srv->job_id, GP_JOB_DONE,
						    w->now);
	/* Copied under the ledger's lock: the loop thread may make the next
	 * call on l (and rewrite its message) while this thread reads it. */
	if (w->result < 0)
		gp_ledger_error_copy(l, w->err, sizeof(w->err));
}

static void db_work_done(uv_work_t *req, int status)
{
	struct db_work *w = req->data;
	struct server *srv = w->srv;

	(void)status;
	srv->db_busy = false;
	if (w->result < 0)
		gp_error("%s: %s", srv->st.ledger_path, w->err);
	else if (w->blob)
		gp_debug("checkpoint written (epoch %" PRId64 ")", w->epoch);
	free(w->blob);
	free(w);
	maybe_finish(srv);
}

static uint8_t *make_checkpoint(struct server *srv, size_t *ret_len)
{
	struct gp_checkpoint_section sec[4];
	uint8_t *p = NULL, *s = NULL, *c = NULL, *out = NULL;
	size_t pl, sl, cl;

	if (gp_params_save(srv->params, &p, &pl) < 0 ||
	    gp_ssp_save(srv->ssp, &c, &cl) < 0 ||
	    gp_sched_save(srv->sched, &s, &sl) < 0)
		goto out;
	sec[0] = (struct gp_checkpoint_section){ GP_CKPT_PARAMS, p, pl };
	sec[1] = (struct gp_checkpoint_section){ GP_CKPT_CLOCKS, c, cl };
	sec[2] = (struct gp_checkpoint_section){ GP_CKPT_PROGRESS, s, sl };
	sec[3] = (struct gp_checkpoint_section){
		GP_CKPT_JOB, (const uint8_t *)srv->job_text, strlen(srv->job_text)
	};
	if (gp_checkpoint_encode(sec, 4, &out, ret_len) < 0)
		out = NULL;
out:
	free(p);
	free(s);
	free(c);
	return out;
}

/* Starts a ledger job if none is running: a checkpoint when one is wanted,
 * else a flush of the buffered update log when one is due. */
static void kick_db(struct server *srv, bool force_flush)
{
	struct db_work *w;
	int64_t now = gp_now_ms();

	if (srv->db_busy)
		return;
	if (!srv->checkpoint_wanted && !force_flush &&
	    !gp_ledger_flush_due(srv->st.ledger, now))
		return;
	w = calloc(1, sizeof(*w));
	if (!w)
		return;
	w->srv = srv;
	w->now = now;
	w->req.data = w;
	if (srv->checkpoint_wanted) {
		w->blob = make_checkpoint(srv, &w->blob_len);
		if (!w->blob) {
			gp_error("cannot encode a checkpoint");
			free(w);
			return;
		}
		w->epoch = gp_sched_epoch(srv->sched);
		w->clock = gp_ssp_min_clock(srv->ssp);
		srv->checkpoint_wanted = false;
		srv->last_checkpoint_ms = now;
		srv->applied_since_checkpoint = 0;
	}
	w->job_done = srv->done && srv->final_reported;
	srv->db_busy = true;
	if (uv_queue_work(&srv->loop, &w->req, db_work_run, db_work_done) < 0) {
		srv->db_busy = false;
		free(w->blob);
		free(w);
	}
}

struct eval_work {
	uv_work_t req;
	struct server *srv;
	float *values;          /* parameter snapshot */
	uint32_t epoch;
	bool interim;           /* eval_every, not an epoch's evaluation */
	double at_s;            /* snapshot time, s since the first minibatch */
	uint64_t samples;       /* samples applied in this run at the snapshot */
	struct gp_model_stats stats;
	int result;
};

static void eval_run(uv_work_t *req)
{
	struct eval_work *w = req->data;
	struct server *srv = w->srv;
	float *x = NULL;
	int32_t *y = NULL;
	size_t off = 0, n = srv->test->count;
	double loss = 0;
	size_t correct = 0;
	int r = 0;

	for (size_t i = 0; r >= 0 && i < gp_model_tensor_count(srv->eval_model); i++) {
		struct gp_tensor_info ti;

		gp_model_tensor_info(srv->eval_model, i, &ti);
		r = gp_model_write(srv->eval_model, GP_MODEL_PARAM, i, 0, ti.rows,
				   w->values + off);
		off += ti.rows * ti.cols;
	}
	x = malloc(EVAL_BATCH * GP_DATA_PIXELS * sizeof(float));
	y = malloc(EVAL_BATCH * sizeof(int32_t));
	if (!x || !y)
		r = -ENOMEM;
	for (size_t b = 0; r >= 0 && b < n; b += EVAL_BATCH) {
		size_t m = n - b < EVAL_BATCH ? n - b : EVAL_BATCH;
		struct gp_model_stats st;

		for (size_t i = 0; i < m * GP_DATA_PIXELS; i++)
			x[i] = srv->test->images[b * GP_DATA_PIXELS + i] *
			       (1.0f / 255.0f);
		for (size_t i = 0; i < m; i++)
			y[i] = srv->test->labels[b + i];
		r = gp_model_evaluate(srv->eval_model, x, y, m, &st);
		loss += st.loss * (double)m;
		correct += st.correct;
	}
	free(x);
	free(y);
	w->result = r;
	w->stats.samples = n;
	w->stats.loss = n ? loss / (double)n : 0;
	w->stats.correct = correct;
}

static void print_progress(struct server *srv, uint32_t epoch,
			   const struct gp_model_stats *st)
{
	uint64_t now = gp_mono_us();
	double secs = (double)(now - srv->epoch_start_us) / 1e6;
	double acc = st->samples ? (double)st->correct / (double)st->samples : 0;
	char shares[512] = "";
	size_t o = 0;

	for (struct peer *p = srv->peers; p; p = p->next) {
		if (!p->agent_id || o >= sizeof(shares) - 1)
			continue;
		o += (size_t)snprintf(shares + o, sizeof(shares) - o, " %s:%.0f%%",
				      p->name[0] ? p->name : "?",
				      srv->epoch_samples ?
					      100.0 * (double)p->epoch_samples /
						      (double)srv->epoch_samples :
					      0.0);
		p->epoch_samples = 0;
	}
	printf("epoch %u/%u  %8.0f samples/s  train loss %.4f  test loss %.4f  "
	       "test accuracy %.2f%%  work:%s\n",
	       epoch + 1, srv->job.epochs,
	       secs > 0 ? (double)srv->epoch_samples / secs : 0.0,
	       srv->epoch_updates ? srv->epoch_loss_sum / (double)srv->epoch_updates : 0.0,
	       st->loss, 100.0 * acc, shares);
	fflush(stdout);
	srv->epoch_start_us = now;
	srv->epoch_samples = 0;
	srv->epoch_loss_sum = 0;
	srv->epoch_updates = 0;
}

static void start_eval(struct server *srv);

static void eval_done(uv_work_t *req, int status)
{
	struct eval_work *w = req->data;
	struct server *srv = w->srv;
	double acc;

	(void)status;
	srv->eval_busy = false;
	if (w->result >= 0 && w->interim) {
		/* The parameters' time, not the evaluation's: what a
		 * time-to-accuracy measurement needs. */
		printf("eval at %.3f s  %" PRIu64 " samples  test loss %.4f  "
		       "test accuracy %.2f%%\n", w->at_s, w->samples,
		       w->stats.loss,
		       100.0 * (double)w->stats.correct /
			       (double)w->stats.samples);
		fflush(stdout);
	} else if (w->result < 0) {
		gp_error("evaluation of epoch %u failed: %s", w->epoch + 1,
			 gp_backend_error(srv->eval_be));
	} else {
		struct gp_ledger_eval e = {
			.job_id = srv->job_id,
			.epoch = w->epoch,
			.test_loss = w->stats.loss,
			.at = gp_now_ms(),
		};

		acc = (double)w->stats.correct / (double)w->stats.samples;
		e.test_accuracy = acc;
		srv->last_accuracy = acc;
		/* One short insert per epoch; done here to keep the order of
		 * events simple. */
		gp_ledger_eval_add(srv->st.ledger, &e);
		print_progress(srv, w->epoch, &w->stats);
	}
	free(w->values);
	free(w);
	if (srv->eval_pending)
		start_eval(srv);
	else if (srv->done && !srv->final_reported) {
		srv->final_reported = true;
		printf("final test accuracy: %.2f%%\n", 100.0 * srv->last_accuracy);
		fflush(stdout);
		srv->checkpoint_wanted = true;
		kick_db(srv, true);
	}
	maybe_finish(srv);
}

static void start_eval_of(struct server *srv, bool interim)
{
	struct eval_work *w;
	uint32_t done_epochs = gp_sched_epoch(srv->sched);

	if (srv->eval_busy || (!interim && !srv->eval_pending))
		return;
	w = calloc(1, sizeof(*w));
	if (!w)
		return;
	w->values = malloc(srv->n_params * sizeof(float));
	if (!w->values) {
		free(w);
		return;
	}
	memcpy(w->values, gp_params_values(srv->params),
	       srv->n_params * sizeof(float));
	w->srv = srv;
	w->interim = interim;
	w->at_s = srv->first_work_us ?
		(double)(gp_mono_us() - srv->first_work_us) / 1e6 : 0;
	w->samples = srv->samples_run;
	if (!interim) {
		w->epoch = done_epochs - srv->eval_pending;
		srv->eval_pending--;
	}
	w->req.data = w;
	srv->eval_busy = true;
	if (uv_queue_work(&srv->loop, &w->req, eval_run, eval_done) < 0) {
		srv->eval_busy = false;
		free(w->values);
		free(w);
	}
}

static void start_eval(struct server *srv)
{
	start_eval_of(srv, false);
}

/* ---- the SSP work loop ------------------------------------------------ */

/* Sends the agent the shards changed since its last pull, for its work at
 * `clock` (ahead: the clock after the one it is computing). */
/* Whether the agent's copy may serve its work at `clock` (k minibatches)
 * without a pull. A copy is current when every update applied since its
 * view is the agent's own (read-my-writes). A copy that lacks a few
 * updates of others is still good while they are fewer than k (a
 * straggler's occasional update, scaled down by its staleness anyway)
 * and SSP's bound holds (read clock >= clock - s); the fast agent then
 * keeps its pipeline instead of a pull per clock. *ret_current says
 * whether it lacks nothing. */
static bool copy_good(struct peer *p, int64_t clock, uint32_t k,
		      bool *ret_current)
{
	struct server *srv = p->srv;
	struct gp_ssp_agent_info info;
	uint64_t lag = gp_params_updates(srv->params) - p->view.base;

	*ret_current = false;
	if (!(p->caps & GP_CAP_LOCAL_STEP) || !p->pulled_version ||
	    lag < p->view.own)
		return false;
	lag -= p->view.own;
	if (lag == 0) {
		*ret_current = true;
		return true;
	}
	return lag < k &&
	       gp_ssp_get(srv->ssp, (uint64_t)p->agent_id, &info) == 0 &&
	       info.read_clock != INT64_MIN &&
	       info.read_clock >= clock - (int64_t)gp_ssp_bound(srv->ssp);
}

static int send_params(struct peer *p, int64_t clock, uint32_t k, bool ahead)
{
	struct server *srv = p->srv;
	size_t n = gp_params_changed_since(srv->params, p->pulled_version, NULL, 0);
	uint64_t updates = gp_params_updates(srv->params);
	struct view *target = ahead ? &p->view_next : &p->view;
	uint32_t *idx = NULL;
	struct gp_msg m;
	int r = 0;

	bool current;

	/* An agent that reads its own writes already holds every update
	 * applied since its pull when they are all its own: nothing to send
	 * (one agent alone then trains exactly like a local loop). Its copy
	 * goes on as it was; its read clock moves only if it lacks nothing. */
	if (n == 0 || copy_good(p, clock, k, &current)) {
		*target = p->view;
		if (n == 0 || current)
			return gp_ssp_pulled(srv->ssp, (uint64_t)p->agent_id,
					     p->pulled_version);
		return 0;
	}
	idx = malloc(n * sizeof(*idx));
	gp_msg_init(&m, GP_MSG_PARAM_SHARDS);
	m.u.param_shards.blocks = calloc(2 * n, sizeof(struct gp_msg_block));
	if (!idx || !m.u.param_shards.blocks) {
		r = -ENOMEM;
		goto out;
	}
	gp_params_changed_since(srv->params, p->pulled_version, idx, n);
	for (size_t i = 0; i < n; i++) {
		struct gp_params_shard sh;
		struct gp_msg_block *b = &m.u.param_shards.blocks[i];

		gp_params_shard(srv->params, idx[i], &sh);
		b->tensor = sh.tensor;
		b->row_start = sh.row_begin;
		b->rows = sh.rows;
		b->version = sh.version;
		b->count = (uint32_t)sh.count;
		b->dtype = (p->caps & GP_CAP_F16) ? GP_DTYPE_F16 : GP_DTYPE_F32;
		b->values = gp_params_shard_data(srv->params, idx[i]);
	}
	m.u.param_shards.n_blocks = n;
	if (p->caps & GP_CAP_MOMENTUM) {
		for (size_t i = 0; i < n; i++) {
			struct gp_msg_block *b = &m.u.param_shards.blocks[n + i];

			*b = m.u.param_shards.blocks[i];
			b->tensor += (uint32_t)gp_params_tensor_count(srv->params);
			b->values = gp_params_shard_momentum(srv->params, idx[i]);
		}
		m.u.param_shards.n_blocks = 2 * n;
	}
	m.u.param_shards.clock = (uint64_t)gp_ssp_min_clock(srv->ssp);
	r = send_msg(p, &m);
out:
	free(m.u.param_shards.blocks);
	free(idx);
	if (r < 0)
		return r;
	p->pulled_version = gp_params_version(srv->params);
	*target = (struct view){ .base = updates, .own_from = clock };
	return gp_ssp_pulled(srv->ssp, (uint64_t)p->agent_id, p->pulled_version);
}

/* group > 1: this minibatch opens a group of that many, sent next
 * (GP_CAP_SUMS). */
static int send_minibatch(struct peer *p, uint64_t id, int64_t clock,
			  uint32_t group)
{
	struct server *srv = p->srv;
	uint32_t n = gp_sched_minibatch_samples(srv->sched, id);
	uint32_t per = gp_sched_minibatches(srv->sched);
	bool local = p->caps & GP_CAP_LOCAL_DATA;
	uint32_t *idx = malloc(n * sizeof(*idx));
	uint8_t *px = malloc(local ? (size_t)n * 4 : (size_t)n * GP_DATA_PIXELS);
	uint8_t *lb = malloc(n ? n : 1);
	struct gp_msg m;
	size_t got = 0;
	int r;

	if (!idx || !px || !lb) {
		r = -ENOMEM;
		goto out;
	}
	r = gp_sched_samples(srv->sched, id, idx, n, &got);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < got && local; i++) {
		px[4 * i] = (uint8_t)idx[i];
		px[4 * i + 1] = (uint8_t)(idx[i] >> 8);
		px[4 * i + 2] = (uint8_t)(idx[i] >> 16);
		px[4 * i + 3] = (uint8_t)(idx[i] >> 24);
	}
	for (size_t i = 0; i < got && !local; i++) {
		memcpy(px + i * GP_DATA_PIXELS,
		       srv->train->images + (size_t)idx[i] * GP_DATA_PIXELS,
		       GP_DATA_PIXELS);
		lb[i] = srv->train->labels[idx[i]];
	}
	gp_msg_init(&m, GP_MSG_MINIBATCH);
	m.u.minibatch.epoch = (uint32_t)(id / per);
	m.u.minibatch.minibatch = id % per;
	m.u.minibatch.clock = (uint64_t)clock;
	m.u.minibatch.samples = (uint32_t)got;
	m.u.minibatch.features = GP_DATA_PIXELS;
	if (local) {
		m.u.minibatch.indices = px;
		m.u.minibatch.indices_len = got * 4;
	} else {
		m.u.minibatch.pixels = px;
		m.u.minibatch.pixels_len = got * GP_DATA_PIXELS;
		m.u.minibatch.labels = lb;
		m.u.minibatch.labels_len = got;
	}
	if (p->caps & GP_CAP_LOCAL_STEP) {
		m.u.minibatch.lr = (float)gp_job_lr_at(&srv->job, id,
						       srv->minibatches_total, per);
		m.u.minibatch.momentum = srv->job.optimizer == GP_OPT_SGD_MOMENTUM ?
						 (float)srv->job.momentum : 0.0f;
	}
	if (p->caps & GP_CAP_SUMS)
		m.u.minibatch.group = group;
	r = send_msg(p, &m);
out:
	free(idx);
	free(px);
	free(lb);
	return r;
}

/* Minibatches for the agent's next clock. A clock lasts the job's
 * clock_duration or one minibatch of the slowest live agent, whichever is
 * longer (SOLO_CLOCK_MS at least for an agent alone), and every agent
 * gets what it computes in that time at its
 * measured speed: a slow device does less per clock instead of holding the
 * fast ones back, and agents of equal speed get one minibatch each (with
 * several agents, longer clocks trained worse: see docs/architecture.md
 * "Pool"). */
static uint32_t work_per_clock(const struct server *srv,
			       const struct gp_ssp_agent_info *info)
{
	double slowest = 0, base, ms;
	size_t live;

	/* Measured speeds only, while there are any (as in
	 * gp_ssp_work_per_clock()). */
	for (int pass = 0; pass < 2 && slowest == 0; pass++) {
		for (size_t i = 0; i < gp_ssp_count(srv->ssp); i++) {
			struct gp_ssp_agent_info a;

			if (gp_ssp_get_at(srv->ssp, i, &a) == 0 && a.live &&
			    a.speed > 0 && (pass || a.speed_measured) &&
			    (slowest == 0 || a.speed < slowest))
				slowest = a.speed;
		}
	}
	/* Until its speed is measured, an agent gets a short first clock: an
	 * announced speed is a benchmark's, and a throttled or busy machine
	 * would hold the others for a whole long clock. */
	if (!(info->speed > 0) || slowest == 0 || !info->speed_measured)
		return WORK_BASE;
	live = gp_ssp_live_count(srv->ssp);
	ms = (double)srv->job.clock_duration_ms;
	if (live == 1 && ms < SOLO_CLOCK_MS)
		ms = SOLO_CLOCK_MS;
	/* What an agent computes without seeing the others' work, and so
	 * the staleness of its updates in minibatches, grows with the clock
	 * and with the number of others. Two agents trained better with long
	 * clocks, three or more on this 2-core machine worse (they drift up
	 * to s clocks apart): beyond two, a clock is one minibatch of the
	 * slowest agent (docs/architecture.md "Pool"). */
	if (live > 2 && ms > POOL_CLOCK_MS)
		ms = POOL_CLOCK_MS;
	base = slowest * ms / 1000.0;
	if (base < 1)
		base = 1;
	return gp_ssp_work_per_clock(srv->ssp, info->id, (uint32_t)(base + 0.5),
				     WORK_MAX);
}

/* Pipelining: hands out the agent's clock c + 1 while its updates of clock
 * c are still on their way, once all of c's work is out and c + 1 <= m + s,
 * so the agent never idles for a round trip at a clock boundary. Its copy
 * must then need no pull (read-my-writes, nobody else's update since): it
 * already holds its own updates of c. TCP
 * keeps the order, so c's updates all arrive (and c is advanced) before
 * any of c + 1's. */
static void serve_ahead(struct peer *p, const struct gp_ssp_agent_info *info)
{
	struct server *srv = p->srv;
	uint64_t ids[WORK_MAX];
	size_t n = 0;
	bool current;
	uint32_t k;
	int r;

	if (p->next_work || info->work_this_clock < p->clock_target ||
	    info->clock + 1 > gp_ssp_min_clock(srv->ssp) +
				      (int64_t)gp_ssp_bound(srv->ssp))
		return;
	/* Only while the agent's copy needs no pull: a pull now would
	 * overwrite its own updates still on their way, and two agents
	 * measured 3-6 points lower after three epochs with that. */
	k = work_per_clock(srv, info);
	if (!copy_good(p, info->clock + 1, k, &current))
		return;
	r = gp_sched_assign(srv->sched, (uint64_t)p->agent_id,
			    (uint64_t)gp_now_ms(), k, ids, &n);
	if (r != 0 || n == 0)
		return;
	r = send_params(p, info->clock + 1, k, true);
	for (size_t i = 0; i < n; i++) {
		if (r >= 0 && send_minibatch(p, ids[i], info->clock + 1,
					     i == 0 ? (uint32_t)n : 0) >= 0) {
			p->next_work++;
			p->next_open++;
		} else {
			gp_sched_release(srv->sched, (uint64_t)p->agent_id, ids[i]);
		}
	}
}

/* Hands the agent its next clock of work when SSP allows. */
static void serve_work(struct peer *p)
{
	struct server *srv = p->srv;
	uint64_t ids[WORK_MAX];
	struct gp_ssp_agent_info info;
	uint32_t k;
	size_t n = 0;
	bool parked;
	int r;

	if (!p->joined || !p->wants_work || p->paused || srv->stopping ||
	    !p->ch || !gp_channel_is_established(p->ch) ||
	    !srv->minibatches_total)
		return;
	if (gp_ssp_get(srv->ssp, (uint64_t)p->agent_id, &info) < 0)
		return;
	if (p->clock_open > 0) {
		serve_ahead(p, &info);
		return;
	}
	if (!gp_ssp_may_compute(srv->ssp, (uint64_t)p->agent_id)) {
		gp_ssp_wait(srv->ssp, (uint64_t)p->agent_id, &parked);
		return;
	}
	k = work_per_clock(srv, &info);
	p->clock_target = k;
	if (k > info.work_this_clock)
		k -= info.work_this_clock;
	else
		k = 0;
	if (k == 0)
		return;
	r = gp_sched_assign(srv->sched, (uint64_t)p->agent_id,
			    (uint64_t)gp_now_ms(), k, ids, &n);
	if (r != 0 || n == 0)
		return; /* everything open is out; retried on the next event */
	r = send_params(p, info.clock, p->clock_target, false);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			gp_sched_release(srv->sched, (uint64_t)p->agent_id, ids[i]);
		gp_warn("agent %" PRId64 ": cannot send parameters: %s",
			p->agent_id, r > 0 ? gp_reason_str(r) : strerror(-r));
		return;
	}
	p->clock = info.clock;
	if (!srv->first_work_us)
		srv->first_work_us = gp_mono_us();
	for (size_t i = 0; i < n; i++) {
		r = send_minibatch(p, ids[i], info.clock, i == 0 ? (uint32_t)n : 0);
		if (r < 0) {
			gp_sched_release(srv->sched, (uint64_t)p->agent_id, ids[i]);
			continue;
		}
		p->clock_work++;
		p->clock_open++;
	}
	p->work_since_ms = gp_now_ms();
	gp_ssp_note_work(srv->ssp, (uint64_t)p->agent_id, (uint32_t)n);
	/* All of this clock is out: the next one can follow at once. */
	if (p->clock_open > 0 && gp_ssp_get(srv->ssp, (uint64_t)p->agent_id,
					    &info) == 0)
		serve_ahead(p, &info);
}

static struct peer *peer_by_agent(struct server *srv, uint64_t id)
{
	for (struct peer *p = srv->peers; p; p = p->next)
		if (p->joined && (uint64_t)p->agent_id == id)
			return p;
	return NULL;
}

/* After anything that may let agents proceed: parked agents whose bound
 * is now met, then everyone who wants work and has none. */
static void serve_all(struct server *srv)
{
	uint64_t id;

	while (gp_ssp_pop_ready(srv->ssp, &id) == 1) {
		struct peer *p = peer_by_agent(srv, id);

		if (p)
			serve_work(p);
	}
	for (struct peer *p = srv->peers; p; p = p->next)
		serve_work(p);
}

/* One minibatch of the agent's clock is resolved (applied, discarded or
 * rejected); when the whole clock is, the agent moves to the next. */
static void clock_resolved(struct peer *p)
{
	struct server *srv = p->srv;
	int r;

	if (p->clock_open == 0)
		return;
	if (--p->clock_open > 0)
		return;
	if (gp_sched_outstanding(srv->sched, (uint64_t)p->agent_id) > p->next_open)
		return;
	r = gp_ssp_advance(srv->ssp, (uint64_t)p->agent_id, p->clock + 1);
	if (r != 0)
		gp_debug("agent %" PRId64 ": clock not advanced: %s", p->agent_id,
			 r > 0 ? gp_reason_str(r) : strerror(-r));
	p->clock_work = 0;
	if (r == 0 && p->next_work) {
		/* The work handed out ahead becomes this clock's. */
		p->clock++;
		p->clock_work = p->next_work;
		p->clock_open = p->next_open;
		p->clock_target = p->next_work;
		p->view = p->view_next;
		gp_ssp_note_work(srv->ssp, (uint64_t)p->agent_id, p->next_work);
	}
	p->next_work = 0;
	p->next_open = 0;
	park_if_paused(p);
	serve_all(srv);
}

/* A paused agent (on battery, not idle, paused by its owner) stops counting
 * toward the SSP bound once the work it holds is resolved, so that the
 * others do not wait for it; RESUME brings it back like a returning agent.
 * Returns true when it was parked (m may have risen: serve_all()). */
static bool park_if_paused(struct peer *p)
{
	struct server *srv = p->srv;

	if (!p->paused || p->ssp_parked || !p->joined || p->clock_open ||
	    p->next_open ||
	    gp_sched_outstanding(srv->sched, (uint64_t)p->agent_id) > 0)
		return false;
	gp_ssp_mark_dead(srv->ssp, (uint64_t)p->agent_id);
	p->ssp_parked = true;
	gp_info("agent %" PRId64 " paused: out of the SSP bound until it resumes",
		p->agent_id);
	return true;
}

static void unpark(struct peer *p)
{
	struct server *srv = p->srv;
	int64_t clock;

	p->paused = false;
	if (!p->ssp_parked)
		return;
	p->ssp_parked = false;
	if (gp_ssp_revive(srv->ssp, (uint64_t)p->agent_id, &clock) != 0)
		return;
	/* Revived agents hold no parameters as far as SSP knows: a full
	 * pull, as for a returning agent. */
	p->clock = clock;
	p->pulled_version = 0;
	memset(&p->view, 0, sizeof(p->view));
	memset(&p->view_next, 0, sizeof(p->view_next));
	p->clock_work = 0;
	p->clock_target = 0;
}

static void on_epochs_completed(struct server *srv, uint32_t n, bool job_done)
{
	srv->eval_pending += n;
	if (job_done) {
		double secs = srv->first_work_us ?
			(double)(gp_mono_us() - srv->first_work_us) / 1e6 : 0;

		srv->done = true;
		gp_info("all %u epochs applied", srv->job.epochs);
		/* From the first minibatch handed out to the last applied:
		 * start-up and the final evaluation are not in it. */
		printf("trained %" PRIu64 " samples in %.3f s: %.0f samples/s\n",
		       srv->samples_run, secs,
		       secs > 0 ? (double)srv->samples_run / secs : 0.0);
		fflush(stdout);
	}
	if (srv->job.eval)
		start_eval(srv);
	else if (job_done) {
		srv->final_reported = true;
		srv->checkpoint_wanted = true;
		kick_db(srv, true);
	}
}

/* Staleness-aware scaling: an update computed on parameters that lack u
 * updates of other agents is scaled by k / (k + u), k the agent's
 * minibatches at this clock. u counts what the agent's copy lacks: with
 * read-my-writes only the others' updates, else its own too. Without it,
 * several gradients computed at the same point land one after the other
 * and momentum turns that into overshoot (two agents at lr 0.05 and
 * momentum 0.9 diverged). Returns the factor, 1 when none applies. */
static double staleness_scale(const struct peer *p)
{
	const struct server *srv = p->srv;
	uint64_t lag = gp_params_updates(srv->params) - p->view.base;
	double k = p->clock_work ? p->clock_work : 1;

	if (!srv->job.staleness_scaling)
		return 1;
	if ((p->caps & GP_CAP_LOCAL_STEP) && lag >= p->view.own)
		lag -= p->view.own;
	return lag ? k / (k + (double)lag) : 1;
}

/* Scales the gradient in srv->grad by staleness_scale(). The norm check
 * runs on the gradient as received (*ret_norm, or -1 when not scaled).
 * Returns 0 or GP_REASON_NONFINITE / GP_REASON_NORM. */
static int scale_for_staleness(struct peer *p, double *ret_norm)
{
	struct server *srv = p->srv;
	const struct gp_params_config *pc = gp_params_config(srv->params);
	double scale = staleness_scale(p), norm;
	int r;

	if (scale == 1)
		return 0;
	r = gp_params_grad_norm(srv->grad, srv->n_params, &norm);
	if (r != 0)
		return r;
	if (pc->reject_norm > 0 && norm > pc->reject_norm)
		return GP_REASON_NORM;
	for (size_t i = 0; i < srv->n_params; i++)
		srv->grad[i] *= (float)scale;
	*ret_norm = norm;
	return 0;
}

/* Reads `sets` whole-model tensor sets from the update's blocks (one block
 * per tensor, in order, each whole) into srv->grad, then srv->grad_b.
 * Returns 0 or GP_REASON_SHAPE. */
static int read_blocks(struct server *srv, const struct gp_msg_update *u,
		       size_t sets)
{
	size_t n_tensors = gp_params_tensor_count(srv->params);

	if (u->n_blocks != sets * n_tensors)
		return GP_REASON_SHAPE;
	for (size_t k = 0; k < u->n_blocks; k++) {
		const struct gp_msg_block *b = &u->blocks[k];
		size_t i = k % n_tensors, off;
		float *dst = k < n_tensors ? srv->grad : srv->grad_b;
		struct gp_tensor_shape sh;

		if (b->tensor != i || b->row_start != 0 ||
		    gp_params_check_block(srv->params, b->tensor, b->row_start,
					  b->rows, b->count, &off) != 0)
			return GP_REASON_SHAPE;
		gp_params_tensor(srv->params, i, &sh, NULL);
		if (b->count != (uint64_t)sh.rows * sh.cols ||
		    gp_msg_block_read(b, dst + off, b->count) < 0)
			return GP_REASON_SHAPE;
	}
	return 0;
}

/* A minibatch of the agent's, applied: the schedule, the ledger row and
 * the counters. */
static void record_applied(struct peer *p, uint64_t id,
			   const struct gp_msg_update *u, uint32_t epoch,
			   uint64_t minibatch, float loss, double norm,
			   int64_t staleness, int64_t received)
{
	struct server *srv = p->srv;
	struct gp_sched_completion comp = {0};
	int r = gp_sched_complete(srv->sched, (uint64_t)p->agent_id, id, &comp);
	struct gp_ledger_update row = {
		.job_id = srv->job_id,
		.agent_id = p->agent_id,
		.clock = (int64_t)u->clock,
		.epoch = epoch,
		.minibatch = (int64_t)minibatch,
		.samples = comp.samples,
		.loss = loss,
		.grad_norm = norm,
		.staleness = staleness,
		.received_at = received,
		.applied_at = gp_now_ms(),
		.outcome = GP_UPDATE_APPLIED,
	};

	if (r != 0) /* checked before; cannot happen on one thread */
		gp_warn("minibatch %" PRIu64 ": %s", id, gp_reason_str(r));
	/* Only applied work counts as an answer for the work timeout: a
	 * member resending a refused update must not hold its clock. */
	p->work_since_ms = received;
	/* Room was checked before applying (ledger_full); only a failed
	 * flush putting its rows back, or no memory, can refuse it now. */
	r = gp_ledger_update_append(srv->st.ledger, &row);
	if (r < 0)
		gp_error("minibatch %" PRIu64 " applied but not logged: %s; a "
			 "restore would roll back the wrong updates", id,
			 strerror(-r));
	p->applied++;
	srv->applied_run++;
	srv->samples_run += comp.samples;
	if (srv->job.eval_every && srv->applied_run % srv->job.eval_every == 0 &&
	    !comp.job_done)
		start_eval_of(srv, true);
	p->samples += comp.samples;
	p->epoch_samples += comp.samples;
	srv->epoch_samples += comp.samples;
	srv->epoch_loss_sum += loss;
	srv->epoch_updates++;
	srv->applied_since_checkpoint++;
	if (srv->job.checkpoint_interval_minibatches &&
	    srv->applied_since_checkpoint >= srv->job.checkpoint_interval_minibatches)
		srv->checkpoint_wanted = true;
	if (comp.epochs_completed)
		on_epochs_completed(srv, comp.epochs_completed, comp.job_done);
}

/* One of the agent's minibatches at `clock` is resolved. */
static void resolve_at(struct peer *p, int64_t clock)
{
	if (clock == p->clock)
		clock_resolved(p);
	else if (clock == p->clock + 1 && p->next_open > 0)
		p->next_open--;
}

/* One of the agent's minibatches was refused and released: someone else
 * redoes it. It was this agent's, whatever clock the update claims:
 * resolve it (the current clock's first, as TCP keeps the order), or a
 * lying clock would hold the agent, and the SSP bound, for ever. */
static void resolve_refused(struct peer *p)
{
	if (p->clock_open > 0)
		clock_resolved(p);
	else if (p->next_open > 0)
		p->next_open--;
}

/* Returns true, after putting the agent's minibatches ids[0..n) back in
 * the queue, when the ledger's buffer cannot take their n applied rows:
 * its writes have failed for long. Applied without their rows, they would
 * be missing from the log, and a restore, which rolls back by counting the
 * log's applied rows (gp_ledger_rollback_after), would undo the wrong
 * ones. No strike: nothing is applied until the ledger catches up. */
static bool ledger_full(struct peer *p, const uint64_t *ids, size_t n)
{
	struct server *srv = p->srv;

	if (gp_ledger_update_room(srv->st.ledger, n))
		return false;
	if (srv->unlogged++ % 1000 == 0)
		gp_error("%s: the update log is not being written (%" PRIu64
			 " update(s) refused so far): updates are put back until"
			 " it is", srv->st.ledger_path, srv->unlogged);
	for (size_t i = 0; i < n; i++) {
		gp_sched_release(srv->sched, (uint64_t)p->agent_id, ids[i]);
		resolve_refused(p);
	}
	return true;
}

/* A minibatch whose own check failed (not assigned, duplicate, late):
 * counted as a discard; a late answer for a minibatch taken back from this
 * clock resolves it, a second answer for one already resolved (the agent
 * counts it open, the schedule does not) must not. */
static void discard_checked(struct peer *p, uint64_t id, int reason,
			    int64_t clock)
{
	struct server *srv = p->srv;
	bool ours = reason == GP_REASON_DUPLICATE || reason == GP_REASON_LATE;

	gp_sched_complete(srv->sched, (uint64_t)p->agent_id, id, NULL);
	if (ours && p->clock_open + p->next_open >
		    gp_sched_outstanding(srv->sched, (uint64_t)p->agent_id))
		resolve_at(p, clock);
}

static enum gp_ledger_outcome discard_outcome(int reason)
{
	return reason == GP_REASON_LATE ? GP_UPDATE_LATE :
	       reason == GP_REASON_DUPLICATE ? GP_UPDATE_DUPLICATE :
					       GP_UPDATE_REJECTED;
}

static void handle_update_sums(struct peer *p, struct gp_msg_update *u);

static void handle_update(struct peer *p, struct gp_msg_update *u)
{
	struct server *srv = p->srv;
	int64_t received = gp_now_ms(), staleness = -1;
	struct gp_params_apply_info info;
	double norm = -1;
	uint64_t id;
	int r;

	if (u->form == GP_UPDATE_SUMS) {
		handle_update_sums(p, u);
		goto flush;
	}
	if (gp_sched_id(srv->sched, u->epoch, u->minibatch, &id) < 0) {
		reject_update(p, u, GP_UPDATE_REJECTED, GP_REASON_UNKNOWN_MINIBATCH,
			      -1, received, true);
		return; /* not one of this clock's: nothing to resolve */
	}
	r = gp_sched_check(srv->sched, (uint64_t)p->agent_id, id);
	if (r != 0) {
		reject_update(p, u, discard_outcome(r), r, -1, received, true);
		discard_checked(p, id, r, (int64_t)u->clock);
		return;
	}
	/* Split updates (parts > 1) are not reassembled here: refused like
	 * any other wrong shape, below, so that the minibatch goes back to
	 * the queue at once. Resolving it without releasing it would leave
	 * the schedule counting it as the agent's while its clock counts
	 * it resolved, and the clock, with the whole pool's SSP bound,
	 * would never advance again. */
	r = u->parts > 1 ? GP_REASON_SHAPE : 0;
	if (r == 0 && ledger_full(p, &id, 1))
		goto flush;
	if (r == 0)
		r = gp_ssp_check_update(srv->ssp, (uint64_t)p->agent_id,
					(int64_t)u->clock, &staleness);
	if (r == 0)
		r = read_blocks(srv, u, 1);
	if (r == 0)
		r = scale_for_staleness(p, &norm);
	if (r == 0) {
		gp_params_set_lr(srv->params,
				 (float)gp_job_lr_at(&srv->job, id,
						     srv->minibatches_total,
						     gp_sched_minibatches(srv->sched)));
		r = gp_params_apply(srv->params, srv->grad, srv->n_params, &info);
	}
	if (r != 0) {
		reject_update(p, u,
			      r == GP_REASON_STALE ? GP_UPDATE_LATE : GP_UPDATE_REJECTED,
			      r, staleness, received, true);
		gp_sched_release(srv->sched, (uint64_t)p->agent_id, id);
		resolve_refused(p);
		goto flush;
	}
	if (norm >= 0)
		info.norm = norm;
	if ((int64_t)u->clock >= p->view.own_from)
		p->view.own++;
	if (p->next_work && (int64_t)u->clock >= p->view_next.own_from)
		p->view_next.own++;
	if (u->compute_us > 0)
		gp_ssp_observe_speed(srv->ssp, (uint64_t)p->agent_id,
				     1e6 / (double)u->compute_us);
	record_applied(p, id, u, u->epoch, u->minibatch, u->loss, info.norm,
		       staleness, received);
	resolve_at(p, (int64_t)u->clock);
flush:
	if (gp_ledger_flush_due(srv->st.ledger, gp_now_ms()))
		kick_db(srv, false);
}

/* An update of form GP_UPDATE_SUMS: a group of minibatches of one clock,
 * applied at once as the steps they were (gp_params_apply_sums), or
 * refused as a whole. A minibatch of the group that fails its own check
 * (late, duplicate, not this agent's) refuses the group; the others go
 * back to the queue as discards ("group"), without a strike. One strike
 * per refused message. */
static void handle_update_sums(struct peer *p, struct gp_msg_update *u)
{
	struct server *srv = p->srv;
	size_t k = u->items_len / GP_MSG_ITEM_SIZE;
	int64_t received = gp_now_ms(), staleness = -1;
	uint32_t per = gp_sched_minibatches(srv->sched);
	struct gp_params_apply_info info;
	struct gp_params_sums sums;
	uint64_t ids[GP_MSG_GROUP_MAX];
	float lrs[GP_MSG_GROUP_MAX];
	int why[GP_MSG_GROUP_MAX];     /* the minibatch's own check */
	bool twin[GP_MSG_GROUP_MAX];   /* listed twice in the group */
	bool strike = true, items_refused = false;
	int r = 0;

	for (size_t i = 0; i < k; i++) {
		uint32_t epoch;
		uint64_t mb;
		float loss;

		gp_msg_update_item(u, i, &epoch, &mb, &loss);
		twin[i] = false;
		if (gp_sched_id(srv->sched, epoch, mb, &ids[i]) < 0) {
			why[i] = GP_REASON_UNKNOWN_MINIBATCH;
		} else {
			why[i] = gp_sched_check(srv->sched, (uint64_t)p->agent_id,
						ids[i]);
			for (size_t j = 0; j < i && !why[i]; j++)
				twin[i] |= why[j] != GP_REASON_UNKNOWN_MINIBATCH &&
					   ids[j] == ids[i];
		}
		if ((why[i] || twin[i]) && !r) {
			r = twin[i] ? GP_REASON_DUPLICATE : why[i];
			items_refused = true;
		}
	}
	if (r == 0 && (!(p->caps & GP_CAP_SUMS) || u->parts > 1))
		r = GP_REASON_SHAPE;
	if (r == 0)
		r = gp_ssp_check_update(srv->ssp, (uint64_t)p->agent_id,
					(int64_t)u->clock, &staleness);
	/* A group answers minibatches of one clock, the current one: no more
	 * of them than it has open (each applied one resolves one there). */
	if (r == 0 && ((int64_t)u->clock != p->clock || k > p->clock_open))
		r = GP_REASON_SHAPE;
	if (r == 0 && ledger_full(p, ids, k))
		return;
	if (r == 0)
		r = read_blocks(srv, u, 2);
	if (r == 0) {
		for (size_t i = 0; i < k; i++)
			lrs[i] = (float)gp_job_lr_at(&srv->job, ids[i],
						     srv->minibatches_total, per);
		sums = (struct gp_params_sums){
			.a = srv->grad,
			.b = srv->grad_b,
			.lrs = lrs,
			.count = (uint32_t)k,
			.scale = (float)staleness_scale(p),
		};
		r = gp_params_apply_sums(srv->params, &sums, srv->n_params, &info);
		if (r < 0)
			r = GP_REASON_SHAPE;
	}
	if (r != 0) {
		/* The valid minibatches of a group refused because another
		 * came late (or the whole came too stale) are discards, not
		 * the agent's fault. */
		bool blameless = r == GP_REASON_STALE ||
				 (items_refused && (r == GP_REASON_LATE ||
						    r == GP_REASON_DUPLICATE));

		for (size_t i = 0; i < k; i++) {
			struct gp_msg_update one = *u;
			int reason = twin[i] ? GP_REASON_DUPLICATE :
				     why[i] ? why[i] :
				     items_refused ? GP_REASON_GROUP : r;
			enum gp_ledger_outcome out =
				twin[i] ? GP_UPDATE_REJECTED :
				why[i] ? discard_outcome(why[i]) :
				blameless ? GP_UPDATE_LATE : GP_UPDATE_REJECTED;

			gp_msg_update_item(u, i, &one.epoch, &one.minibatch,
					   &one.loss);
			one.samples = why[i] == GP_REASON_UNKNOWN_MINIBATCH ? 0 :
				      gp_sched_minibatch_samples(srv->sched, ids[i]);
			reject_update(p, &one, out, reason, staleness, received,
				      strike);
			if (out == GP_UPDATE_REJECTED)
				strike = false;
			if (twin[i] || why[i] == GP_REASON_UNKNOWN_MINIBATCH)
				continue; /* nothing of the agent's to resolve */
			if (why[i]) {
				discard_checked(p, ids[i], why[i], (int64_t)u->clock);
				continue;
			}
			gp_sched_release(srv->sched, (uint64_t)p->agent_id, ids[i]);
			resolve_refused(p);
		}
		return;
	}
	if ((int64_t)u->clock >= p->view.own_from)
		p->view.own += k;
	if (p->next_work && (int64_t)u->clock >= p->view_next.own_from)
		p->view_next.own += k;
	if (u->compute_us > 0)
		gp_ssp_observe_speed(srv->ssp, (uint64_t)p->agent_id,
				     1e6 * (double)k / (double)u->compute_us);
	for (size_t i = 0; i < k; i++) {
		uint32_t epoch;
		uint64_t mb;
		float loss;

		gp_msg_update_item(u, i, &epoch, &mb, &loss);
		record_applied(p, ids[i], u, epoch, mb, loss, info.norm,
			       staleness, received);
		resolve_at(p, (int64_t)u->clock);
	}
}

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

static void send_reject(struct peer *p, uint16_t code, const char *text)
{
	struct gp_msg m;

	gp_msg_init(&m, GP_MSG_REJECT);
	m.u.reject.code = code;
	snprintf(m.u.reject.text, sizeof(m.u.reject.text), "%s", text);
	send_msg(p, &m);
	peer_close(p, code, text);
}

static void handle_join(struct peer *p, struct gp_msg_join *j)
{
	struct server *srv = p->srv;
	struct gp_ledger_agent a = { 0 };
	const uint8_t *key = gp_channel_remote_static(p->ch);
	double speed = 0;
	int64_t id = 0, clock = 0;
	struct gp_msg m;
	int r;

	if (p->joined) {
		send_reject(p, GP_REJECT_MALFORMED, "JOIN sent twice");
		return;
	}
	{
		/* [pool] max_agents, counted before a token use is spent; an
		 * agent replacing its own older connection is not a new one. */
		uint32_t live = 0;
		bool again = false;

		for (struct peer *o = srv->peers; o; o = o->next) {
			if (o == p || !o->joined || !o->ch)
				continue;
			live++;
			if (memcmp(gp_channel_remote_static(o->ch), key,
				   GP_KEY_SIZE) == 0)
				again = true;
		}
		if (live >= srv->job.max_agents && !again) {
			gp_warn("join from %s refused: the pool is full (%u agents)",
				p->addr, live);
			send_reject(p, GP_REJECT_BUSY, "the pool is full");
			return;
		}
	}
	snprintf(a.name, sizeof(a.name), "%.*s", (int)sizeof(a.name) - 1,
		 j->name[0] ? j->name : "agent");
	memcpy(a.public_key, key, GP_KEY_SIZE);
	gp_identity_fingerprint(key, a.fingerprint);
	fill_devices(&a, j);
	if (p->psk_join) {
		/* The token's use is consumed here, after the handshake
		 * completed and the agent proved it by this message. */
		r = gp_ledger_join(srv->st.ledger, p->token_id, &a, gp_now_ms(), &id);
		if (r < 0) {
			uint16_t code = r == -EKEYEXPIRED ? GP_REJECT_TOKEN_EXPIRED :
					r == -EKEYREJECTED ? GP_REJECT_TOKEN_USED_UP :
					r == -EKEYREVOKED ? GP_REJECT_TOKEN_REVOKED :
							    GP_REJECT_BAD_TOKEN;

			gp_warn("join from %s refused: %s", p->addr,
				gp_ledger_error(srv->st.ledger));
			send_reject(p, code, gp_msg_reject_str(code));
			return;
		}
		gp_info("agent %" PRId64 " '%s' (%s) joined with token %" PRId64,
			id, a.name, a.fingerprint, p->token_id);
	} else {
		struct gp_ledger_agent known;

		r = gp_ledger_agent_by_key(srv->st.ledger, key, &known);
		if (r < 0 || known.revoked_at) {
			send_reject(p, r < 0 ? GP_REJECT_UNKNOWN_AGENT :
					       GP_REJECT_AGENT_REVOKED,
				    r < 0 ? "not a member of this pool" :
					    "this agent's membership was revoked");
			return;
		}
		id = known.id;
		gp_ledger_agent_set_devices(srv->st.ledger, id, a.devices,
					    a.n_devices);
		gp_ledger_agent_touch(srv->st.ledger, id, gp_now_ms());
	}
	/* One connection per agent: a newer one replaces an older one. */
	for (struct peer *o = srv->peers; o; o = o->next)
		if (o != p && o->joined && o->agent_id == id) {
			o->joined = false;
			gp_sched_release_agent(srv->sched, (uint64_t)id);
			peer_close(o, GP_BYE_RESTART, "replaced by a newer connection");
		}
	for (size_t i = 0; i < j->n_devices; i++)
		if (j->devices[i].samples_per_s > speed)
			speed = j->devices[i].samples_per_s;
	speed /= srv->job.batch_size; /* minibatches per second */
	if (gp_ssp_get(srv->ssp, (uint64_t)id, &(struct gp_ssp_agent_info){ 0 }) == 0)
		r = gp_ssp_revive(srv->ssp, (uint64_t)id, &clock);
	else
		r = gp_ssp_add(srv->ssp, (uint64_t)id, speed, &clock);
	if (r != 0) {
		send_reject(p, GP_REJECT_BUSY, "cannot add the agent to the pool");
		return;
	}
	if (speed > 0)
		gp_ssp_seed_speed(srv->ssp, (uint64_t)id, speed);
	p->agent_id = id;
	p->joined = true;
	p->joined_ms = gp_now_ms();
	p->pulled_version = 0;
	p->clock = clock;
	p->caps = j->caps & (GP_CAP_F16 | GP_CAP_LOCAL_STEP);
	/* Sums stand for steps only when the step is linear in the gradient
	 * (no weight decay) and the agent takes them locally. */
	if ((j->caps & GP_CAP_SUMS) && (p->caps & GP_CAP_LOCAL_STEP) &&
	    srv->job.group_updates && srv->job.weight_decay == 0)
		p->caps |= GP_CAP_SUMS;
	if ((j->caps & GP_CAP_MOMENTUM) && (p->caps & GP_CAP_SUMS))
		p->caps |= GP_CAP_MOMENTUM;
	/* An agent with the same training set gets indices, not pixels. */
	if ((j->caps & GP_CAP_LOCAL_DATA) &&
	    j->data_fingerprint == srv->train_fingerprint)
		p->caps |= GP_CAP_LOCAL_DATA;
	snprintf(p->name, sizeof(p->name), "%s", a.name);

	gp_msg_init(&m, GP_MSG_WELCOME);
	m.u.welcome.agent_id = (uint64_t)id;
	m.u.welcome.job_id = (uint64_t)srv->job_id;
	snprintf(m.u.welcome.model, sizeof(m.u.welcome.model), "%s", srv->spec_text);
	m.u.welcome.batch_size = srv->job.batch_size;
	m.u.welcome.staleness = srv->job.staleness;
	m.u.welcome.heartbeat_ms = (uint32_t)srv->job.heartbeat_interval_ms;
	m.u.welcome.caps = p->caps;
	m.u.welcome.epoch = gp_sched_epoch(srv->sched);
	send_msg(p, &m);
	gp_msg_init(&m, GP_MSG_CLOCK);
	m.u.clock.clock = (uint64_t)clock;
	m.u.clock.min_clock = (uint64_t)gp_ssp_min_clock(srv->ssp);
	send_msg(p, &m);
	if (srv->done) {
		send_bye(p, GP_BYE_JOB_DONE, "the job is done");
		return;
	}
	serve_all(srv);
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

	if (!srv || srv->stopping)
		return -ECANCELED;
	/* Room for every member to reconnect while its old connection is
	 * still closing, and a few more; beyond that, drop unanswered (the
	 * initiator retries with backoff). */
	if (srv->n_peers >= 2 * srv->job.max_agents + 16) {
		gp_debug("too many connections (%u): dropping one", srv->n_peers);
		return -EBUSY;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	srv->n_peers++;
	p->connected_ms = gp_now_ms();
	p->srv = srv;
	p->ch = ch;
	gp_channel_peer_name(ch, p->addr, sizeof(p->addr));
	gp_channel_set_data(ch, p);
	p->next = srv->peers;
	srv->peers = p;

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
			gp_info("join from %s refused: %s", p->addr,
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
			gp_info("connection from %s refused: %s", p->addr,
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
	struct gp_ledger_rejection rej = { .agent_id = p->agent_id,
					   .at = gp_now_ms() };
	va_list ap;

	snprintf(rej.kind, sizeof(rej.kind), "%s", kind);
	va_start(ap, fmt);
	vsnprintf(rej.reason, sizeof(rej.reason), fmt, ap);
	va_end(ap);
	gp_ledger_rejection_append(p->srv->st.ledger, &rej);
	gp_warn("%s (agent %" PRId64 "): %s", p->addr, p->agent_id, rej.reason);
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
		send_bye(p, GP_BYE_PROTOCOL, "message flood");
		return false;
	}
	if (!update)
		return false;
	p->msg_tokens -= 1.0;
	p->byte_tokens -= (double)len;
	return true;
}

static void on_message(struct gp_channel *ch, uint8_t *data, size_t len)
{
	struct peer *p = gp_channel_data(ch);
	struct gp_msg m;
	int r;

	if (!p || p->listener_data || !rate_admit(p, data, len))
		return;
	r = gp_msg_decode(data, len, &m);
	if (r == GP_MSG_UNKNOWN_TYPE) {
		gp_debug("%s: skipped a message of unknown type %u", p->addr, m.type);
		gp_msg_finish(&m);
		return;
	}
	if (r < 0) {
		struct gp_ledger_rejection rej = { .agent_id = p->agent_id,
						   .at = gp_now_ms() };

		snprintf(rej.kind, sizeof(rej.kind), "message");
		snprintf(rej.reason, sizeof(rej.reason), "undecodable message: %s",
			 strerror(-r));
		gp_ledger_rejection_append(p->srv->st.ledger, &rej);
		gp_warn("%s: undecodable message (%s), closing", p->addr,
			strerror(-r));
		send_bye(p, GP_BYE_PROTOCOL, "undecodable message");
		return;
	}
	if (!p->joined && m.type != GP_MSG_JOIN && m.type != GP_MSG_HEARTBEAT &&
	    m.type != GP_MSG_BYE) {
		send_reject(p, GP_REJECT_MALFORMED, "JOIN must come first");
		gp_msg_finish(&m);
		return;
	}
	switch (m.type) {
	case GP_MSG_JOIN:
		handle_join(p, &m.u.join);
		break;
	case GP_MSG_HEARTBEAT:
		handle_heartbeat(p, &m.u.heartbeat);
		break;
	case GP_MSG_WORK_REQUEST:
		p->wants_work = m.u.work_request.count > 0;
		serve_work(p);
		break;
	case GP_MSG_UPDATE:
		handle_update(p, &m.u.update);
		break;
	case GP_MSG_PAUSE:
		p->paused = true;
		if (park_if_paused(p))
			serve_all(p->srv);
		break;
	case GP_MSG_RESUME:
		unpark(p);
		serve_work(p);
		break;
	case GP_MSG_BYE:
		gp_info("agent %" PRId64 " (%s) says bye: %s", p->agent_id, p->addr,
			m.u.bye.text);
		peer_close(p, GP_BYE_NORMAL, "bye");
		break;
	default:
		gp_debug("%s: ignored %s", p->addr, gp_msg_type_name(m.type));
		break;
	}
	gp_msg_finish(&m);
}

static void on_close(struct gp_channel *ch, enum gp_close_reason reason,
		     uint16_t code, const char *text)
{
	struct peer *p = gp_channel_data(ch);
	struct server *srv;
	struct peer **pp;

	(void)code;
	if (!p || p->listener_data)
		return;
	srv = p->srv;
	if (p->joined) {
		size_t back = gp_sched_release_agent(srv->sched, (uint64_t)p->agent_id);

		gp_ssp_mark_dead(srv->ssp, (uint64_t)p->agent_id);
		gp_ledger_agent_touch(srv->st.ledger, p->agent_id, gp_now_ms());
		gp_info("agent %" PRId64 " (%s) left: %s: %s; %zu minibatch(es) back "
			"in the queue", p->agent_id, p->addr,
			gp_channel_close_reason_name(reason), text, back);
	} else if (reason != GP_CLOSE_LOCAL) {
		gp_debug("%s: closed before joining: %s: %s", p->addr,
			 gp_channel_close_reason_name(reason), text);
	}
	for (pp = &srv->peers; *pp; pp = &(*pp)->next)
		if (*pp == p) {
			*pp = p->next;
			break;
		}
	srv->n_peers--;
	p->ch = NULL;
	free(p);
	if (!srv->stopping)
		serve_all(srv);
	maybe_finish(srv);
}

/* ---- lifecycle -------------------------------------------------------- */

static void close_cb_noop(uv_handle_t *h)
{
	(void)h;
}

static void maybe_finish(struct server *srv)
{
	if (!srv->stopping && !(srv->done && srv->final_reported))
		return;
	if (srv->done && srv->final_reported && !srv->stopping) {
		srv->stopping = true;
		for (struct peer *p = srv->peers; p; p = p->next)
			send_bye(p, GP_BYE_JOB_DONE, "the job is done");
	}
	if (srv->db_busy || srv->eval_busy)
		return;
	if (gp_ledger_pending(srv->st.ledger) > 0 || srv->checkpoint_wanted) {
		kick_db(srv, true);
		if (srv->db_busy)
			return;
	}
	if (srv->listener) {
		gp_channel_listener_destroy(srv->listener);
		srv->listener = NULL;
	}
	gp_announce_destroy(srv->announce);
	srv->announce = NULL;
	if (!uv_is_closing((uv_handle_t *)&srv->tick)) {
		uv_close((uv_handle_t *)&srv->tick, close_cb_noop);
		uv_close((uv_handle_t *)&srv->sigint, close_cb_noop);
		uv_close((uv_handle_t *)&srv->sigterm, close_cb_noop);
	}
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct server *srv = s->data;

	if (srv->stopping)
		return;
	gp_info("%s: checkpointing and stopping", strsignal(signum));
	srv->stopping = true;
	srv->checkpoint_wanted = !srv->done;
	for (struct peer *p = srv->peers; p; p = p->next)
		send_bye(p, GP_BYE_RESTART, "the coordinator is stopping");
	maybe_finish(srv);
}

/* `gradpool-coordinator agents revoke` writes the ledger from another
 * process: every REVOKE_CHECK_MS the connected members are looked up on the
 * thread pool (the ledger may be busy with a checkpoint) and the revoked
 * ones get BYE revoked; their work goes back to the queue as on any
 * disconnect, and the handshake refuses them from then on. */
struct revoke_work {
	uv_work_t req;
	struct server *srv;
	size_t n;
	int64_t *ids;   /* connected members; set to 0 unless revoked */
};

static void revoke_run(uv_work_t *req)
{
	struct revoke_work *w = req->data;

	for (size_t i = 0; i < w->n; i++) {
		struct gp_ledger_agent a;

		if (gp_ledger_agent_get(w->srv->st.ledger, w->ids[i], &a) < 0 ||
		    !a.revoked_at)
			w->ids[i] = 0;
	}
}

static void revoke_done(uv_work_t *req, int status)
{
	struct revoke_work *w = req->data;
	struct server *srv = w->srv;

	(void)status;
	srv->revoke_busy = false;
	for (size_t i = 0; i < w->n && !srv->stopping; i++) {
		struct peer *p = w->ids[i] ? peer_by_agent(srv, (uint64_t)w->ids[i]) :
					     NULL;

		if (!p)
			continue;
		gp_info("agent %" PRId64 " (%s): membership revoked, disconnecting",
			p->agent_id, p->addr);
		send_bye(p, GP_BYE_REVOKED, "this agent's membership was revoked");
	}
	free(w->ids);
	free(w);
}

static void check_revoked(struct server *srv, int64_t now)
{
	struct revoke_work *w;
	size_t n = 0;

	if (srv->revoke_busy || now - srv->last_revoke_check_ms < REVOKE_CHECK_MS)
		return;
	srv->last_revoke_check_ms = now;
	for (struct peer *p = srv->peers; p; p = p->next)
		n += p->joined;
	if (n == 0)
		return;
	w = calloc(1, sizeof(*w));
	if (!w || !(w->ids = calloc(n, sizeof(*w->ids)))) {
		free(w);
		return;
	}
	for (struct peer *p = srv->peers; p; p = p->next)
		if (p->joined)
			w->ids[w->n++] = p->agent_id;
	w->srv = srv;
	w->req.data = w;
	srv->revoke_busy = true;
	if (uv_queue_work(&srv->loop, &w->req, revoke_run, revoke_done) < 0) {
		srv->revoke_busy = false;
		free(w->ids);
		free(w);
	}
}

static void on_tick(uv_timer_t *t)
{
	struct server *srv = t->data;
	int64_t now = gp_now_ms();

	if (srv->stopping)
		return;
	if (gp_sched_expire(srv->sched, (uint64_t)now, srv->job.work_timeout_ms) > 0)
		gp_warn("assignments timed out and went back to the queue");
	/* A member that takes work and never answers would hold the SSP
	 * bound, and everyone with it, for ever: drop it. */
	for (struct peer *p = srv->peers; p; p = p->next)
		if (p->joined && p->clock_open + p->next_open > 0 && p->ch &&
		    gp_channel_is_established(p->ch) &&
		    now - p->work_since_ms > (int64_t)srv->job.work_timeout_ms) {
			log_rejection(p, "work-timeout", "no update for %" PRId64
				      " ms with %u minibatch(es) out: disconnecting",
				      now - p->work_since_ms, p->clock_open);
			send_bye(p, GP_BYE_TIMEOUT, "no update in time");
		} else if (!p->joined && p->ch && gp_channel_is_established(p->ch) &&
			   now - p->connected_ms > (int64_t)srv->job.work_timeout_ms) {
			/* Past the handshake (a token or a membership) but no
			 * JOIN: it would hold a connection for ever. */
			log_rejection(p, "no-join", "connected %" PRId64 " ms ago "
				      "and sent no JOIN: disconnecting",
				      now - p->connected_ms);
			send_bye(p, GP_BYE_TIMEOUT, "no JOIN in time");
		} else if (p->joined && !p->wants_work && !p->paused && p->ch &&
			   gp_channel_is_established(p->ch) &&
			   now - p->joined_ms > (int64_t)srv->job.work_timeout_ms) {
			/* A member counts toward the SSP bound from its JOIN:
			 * one that never asks for work would stall the pool. */
			log_rejection(p, "work-timeout", "joined %" PRId64 " ms ago "
				      "and asked for no work: disconnecting",
				      now - p->joined_ms);
			send_bye(p, GP_BYE_TIMEOUT, "no work request in time");
		}
	check_revoked(srv, now);
	if (srv->job.checkpoint_interval_ms &&
	    now - srv->last_checkpoint_ms >= (int64_t)srv->job.checkpoint_interval_ms &&
	    srv->applied_since_checkpoint > 0)
		srv->checkpoint_wanted = true;
	kick_db(srv, false);
	serve_all(srv);
}

/* ---- set-up ----------------------------------------------------------- */

/* Reads a small text file (at most 1 MiB) into *ret (owned by the caller,
 * NUL-terminated) and its length into *ret_len. */
static int read_file(const char *path, char **ret, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	long n;

	if (!f)
		return -errno;
	if (fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) < 0 || n > (1 << 20) ||
	    fseek(f, 0, SEEK_SET) < 0) {
		fclose(f);
		return -EFBIG;
	}
	buf = malloc((size_t)n + 1);
	if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		fclose(f);
		return -EIO;
	}
	buf[n] = '\0';
	fclose(f);
	*ret = buf;
	*ret_len = (size_t)n;
	return 0;
}

static int build_fresh(struct server *srv)
{
	struct gp_tensor_shape shapes[2 * GP_MODEL_MAX_LAYERS];
	char names[2 * GP_MODEL_MAX_LAYERS][GP_MODEL_TENSOR_NAME_MAX];
	struct gp_params_config pc = {
		.lr = (float)srv->job.learning_rate,
		.momentum = srv->job.optimizer == GP_OPT_SGD_MOMENTUM ?
				    (float)srv->job.momentum : 0.0f,
		.weight_decay = (float)srv->job.weight_decay,
		.clip_norm = (float)srv->job.clip_grad_norm,
		.reject_norm = (float)srv->job.max_grad_norm,
	};
	struct gp_sched_config sc = {
		.n_samples = (uint32_t)srv->train->count,
		.batch_size = srv->job.batch_size,
		.epochs = srv->job.epochs,
		.seed = srv->job.seed,
	};
	size_t n = gp_model_tensor_count(srv->eval_model), off = 0;
	float *init = NULL;
	int r;

	r = gp_model_init_params(srv->eval_model, srv->job.seed);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		struct gp_tensor_info ti;

		gp_model_tensor_info(srv->eval_model, i, &ti);
		snprintf(names[i], sizeof(names[i]), "%s", ti.name);
		shapes[i] = (struct gp_tensor_shape){ names[i], (uint32_t)ti.rows,
						      (uint32_t)ti.cols };
	}
	r = gp_params_create(&pc, shapes, n, &srv->params);
	if (r < 0)
		return r;
	init = malloc(gp_params_size(srv->params) * sizeof(float));
	if (!init)
		return -ENOMEM;
	for (size_t i = 0; r >= 0 && i < n; i++) {
		r = gp_model_read(srv->eval_model, GP_MODEL_PARAM, i, 0,
				  shapes[i].rows, init + off);
		if (r >= 0)
			r = gp_params_set_tensor(srv->params, i, init + off,
						 (size_t)shapes[i].rows * shapes[i].cols);
		off += (size_t)shapes[i].rows * shapes[i].cols;
	}
	free(init);
	if (r < 0)
		return r;
	r = gp_ssp_create(srv->job.staleness, &srv->ssp);
	if (r < 0)
		return r;
	return gp_sched_create(&sc, &srv->sched);
}

/* Writes the checkpoint of a fresh start, synchronously, before anyone
 * connects: a coordinator killed before its first periodic checkpoint
 * then has one to resume from, and the updates it logged are rolled back
 * like any others logged after a checkpoint. Without it a restart built
 * the job afresh while those updates still counted, and every minibatch
 * they covered was applied twice in the log. `rerun`: the job ran before
 * but left no intact checkpoint (none written, or all damaged): every
 * update it logged is rolled back to this one. Returns 0 or a negative
 * errno. */
static int first_checkpoint(struct server *srv, bool rerun)
{
	struct gp_ledger *l = srv->st.ledger;
	size_t len = 0;
	uint8_t *blob = make_checkpoint(srv, &len);
	int64_t seq = 0, undone;
	int r;

	if (!blob)
		return -ENOMEM;
	r = gp_ledger_checkpoint_write(l, srv->job_id, gp_sched_epoch(srv->sched),
				       gp_ssp_min_clock(srv->ssp), gp_now_ms(),
				       blob, len, srv->job.checkpoint_keep ?
						  srv->job.checkpoint_keep : 2,
				       &seq);
	free(blob);
	if (r < 0) {
		gp_error("%s: cannot write the first checkpoint: %s",
			 srv->st.ledger_path, gp_ledger_error(l));
		return r;
	}
	if (!rerun)
		return 0;
	undone = gp_ledger_rollback_after(l, srv->job_id, seq, 0);
	if (undone < 0) {
		gp_error("%s: cannot roll back the updates of the run before: %s",
			 srv->st.ledger_path, gp_ledger_error(l));
		return (int)undone;
	}
	gp_info("job %" PRId64 " had no intact checkpoint: starting it over, %"
		PRId64 " update(s) applied before rolled back to checkpoint %"
		PRId64, srv->job_id, undone, seq);
	return 0;
}

/* Whether a restored checkpoint fits this job: the model's tensors, shape
 * for shape, and the data set and batch size its progress counts in. A
 * checkpoint is only checksummed, not authenticated, and the evaluation
 * reads the parameters with the model's shapes. Returns 0 or -EBADMSG
 * (said why). */
static int check_restored(struct server *srv, int64_t seq)
{
	const struct gp_sched_config *sc = gp_sched_config(srv->sched);
	size_t n = gp_model_tensor_count(srv->eval_model);

	if (gp_params_tensor_count(srv->params) != n) {
		gp_error("checkpoint %" PRId64 " holds %zu tensors, the model %s "
			 "has %zu", seq, gp_params_tensor_count(srv->params),
			 srv->job.spec, n);
		return -EBADMSG;
	}
	for (size_t i = 0; i < n; i++) {
		struct gp_tensor_info ti;
		struct gp_tensor_shape sh;

		gp_model_tensor_info(srv->eval_model, i, &ti);
		if (gp_params_tensor(srv->params, i, &sh, NULL) < 0 ||
		    sh.rows != ti.rows || sh.cols != ti.cols) {
			gp_error("checkpoint %" PRId64 ": tensor %zu is %ux%u, the "
				 "model %s's %zux%zu", seq, i, sh.rows, sh.cols,
				 srv->job.spec, ti.rows, ti.cols);
			return -EBADMSG;
		}
	}
	if (sc->n_samples != srv->train->count ||
	    sc->batch_size != srv->job.batch_size) {
		gp_error("checkpoint %" PRId64 " counts %u samples in batches of "
			 "%u, the job %zu in batches of %u", seq, sc->n_samples,
			 sc->batch_size, (size_t)srv->train->count,
			 srv->job.batch_size);
		return -EBADMSG;
	}
	return 0;
}

/* Restores params, clocks and progress from the job's newest intact
 * checkpoint. Returns 1 when restored, 0 when there is none. */
static int restore(struct server *srv)
{
	struct gp_ledger_checkpoint ck = { 0 };
	struct gp_checkpoint_section sec[GP_CHECKPOINT_MAX_SECTIONS];
	const struct gp_checkpoint_section *p, *c, *s;
	unsigned skipped = 0;
	size_t n;
	int r;

	r = gp_ledger_checkpoint_load_latest(srv->st.ledger, srv->job_id, &ck,
					     &skipped);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	if (skipped)
		gp_warn("%u damaged checkpoint(s) skipped", skipped);
	r = gp_checkpoint_decode(ck.blob, ck.len, sec, &n);
	if (r < 0)
		goto out;
	p = gp_checkpoint_find(sec, n, GP_CKPT_PARAMS);
	c = gp_checkpoint_find(sec, n, GP_CKPT_CLOCKS);
	s = gp_checkpoint_find(sec, n, GP_CKPT_PROGRESS);
	r = -EBADMSG;
	if (!p || !c || !s)
		goto out;
	r = gp_params_load(p->data, p->len, &srv->params);
	if (r >= 0)
		r = gp_ssp_load(c->data, c->len, &srv->ssp);
	if (r >= 0)
		r = gp_sched_load(s->data, s->len, &srv->sched);
	if (r >= 0)
		r = check_restored(srv, ck.seq);
	if (r < 0)
		goto out;
	/* Nobody is connected yet: every agent is dead until it returns. */
	for (size_t i = 0; i < gp_ssp_count(srv->ssp); i++) {
		struct gp_ssp_agent_info info;

		if (gp_ssp_get_at(srv->ssp, i, &info) == 0)
			gp_ssp_mark_dead(srv->ssp, info.id);
	}
	/* The updates logged after the checkpoint are lost with the crash;
	 * their minibatches are redone, and the log says so. */
	{
		int64_t undone = gp_ledger_rollback_after(
			srv->st.ledger, srv->job_id, ck.seq,
			gp_params_updates(srv->params));

		if (undone < 0)
			gp_warn("%s", gp_ledger_error(srv->st.ledger));
		else if (undone > 0)
			gp_info("%" PRId64 " update(s) applied after checkpoint %"
				PRId64 " rolled back; their minibatches are redone",
				undone, ck.seq);
	}
	gp_info("resumed job %" PRId64 " from checkpoint %" PRId64
		" (epoch %u, %" PRIu64 " updates applied)",
		srv->job_id, ck.seq, gp_sched_epoch(srv->sched),
		gp_params_updates(srv->params));
	r = 1;
out:
	gp_ledger_checkpoint_finish(&ck);
	return r;
}

static int pick_job(struct server *srv)
{
	char buf[32];
	struct gp_ledger_job j = { 0 };
	int r;

	r = gp_ledger_meta_get(srv->st.ledger, META_CURRENT_JOB, buf, sizeof(buf));
	if (r >= 0 && gp_ledger_job_get(srv->st.ledger, strtoll(buf, NULL, 10),
					&j) == 0) {
		bool same = j.spec && strcmp(j.spec, srv->job_text) == 0 &&
			    j.state != GP_JOB_DONE;
		int64_t id = j.id;

		gp_ledger_job_finish(&j);
		if (same) {
			srv->job_id = id;
			return 1;
		}
	}
	r = gp_ledger_job_create(srv->st.ledger, srv->job_text, gp_now_ms(),
				 &srv->job_id);
	if (r < 0)
		return r;
	snprintf(buf, sizeof(buf), "%" PRId64, srv->job_id);
	return gp_ledger_meta_set(srv->st.ledger, META_CURRENT_JOB, buf);
}

static int parse_listen(const char *s, struct sockaddr_storage *ss)
{
	char host[128];
	const char *colon = strrchr(s, ':');
	long port;
	char *end;

	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (*end || port < 0 || port > 65535)
		return -EINVAL;
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
		return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss);
	}
	if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0)
		return 0;
	return uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss);
}

static void walk_close(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

int gp_serve_run(const char *state_dir, const char *job_path,
		 const char *listen)
{
	struct server *srv = calloc(1, sizeof(*srv));
	struct gp_channel_callbacks cb = {
		.on_verify = on_verify,
		.on_message = on_message,
		.on_close = on_close,
	};
	struct gp_noise_keypair *kp = NULL;
	struct sockaddr_storage addr;
	char err[GP_DATA_ERR_MAX];
	size_t job_len = 0;
	bool rerun;
	int r;

	if (!srv)
		return -ENOMEM;
	srv->exit_code = 0;
	r = uv_loop_init(&srv->loop);
	if (r < 0)
		goto out_free;
	r = gp_coord_state_open(&srv->st, state_dir, 0);
	if (r < 0)
		goto out;
	/* Read once: the text parsed is the text the ledger and the
	 * checkpoints keep, even if the file changes meanwhile. */
	r = read_file(job_path, &srv->job_text, &job_len);
	if (r < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "%s", job_path);
		goto out;
	}
	r = gp_job_parse(job_path, srv->job_text, job_len, &srv->job, err,
			 sizeof(err));
	if (r < 0) {
		gp_error("%s", err);
		goto out;
	}
	r = gp_model_spec_parse(srv->job.spec, &srv->spec, err, sizeof(err));
	if (r < 0) {
		gp_error("%s: [model] spec: %s", job_path, err);
		goto out;
	}
	gp_model_spec_format(&srv->spec, srv->spec_text, sizeof(srv->spec_text));
	if (srv->spec.dims[0] != GP_DATA_PIXELS ||
	    srv->spec.dims[srv->spec.n_layers] != GP_DATA_CLASSES) {
		gp_error("%s: model %s does not fit Fashion-MNIST (%d inputs, %d "
			 "classes)", job_path, srv->spec_text, GP_DATA_PIXELS,
			 GP_DATA_CLASSES);
		r = -EINVAL;
		goto out;
	}
	r = gp_data_load_fashion_mnist(srv->job.data_dir, true, &srv->train, err,
				       sizeof(err));
	if (r >= 0)
		r = gp_data_load_fashion_mnist(srv->job.data_dir, false, &srv->test,
					       err, sizeof(err));
	if (r < 0) {
		gp_error("%s", err);
		goto out;
	}
	srv->train_fingerprint = gp_data_fingerprint(srv->train);
	r = gp_backend_create_cpu(1, &srv->eval_be);
	if (r >= 0)
		r = gp_model_create(srv->eval_be, &srv->spec, EVAL_BATCH,
				    &srv->eval_model);
	if (r < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "cannot create the evaluation model");
		goto out;
	}
	r = gp_identity_derive_key(srv->st.id, "gp-token-secret", srv->token_key);
	if (r < 0)
		goto out;
	r = pick_job(srv);
	if (r < 0) {
		gp_error("%s: cannot record the job: %s", srv->st.ledger_path,
			 gp_ledger_error(srv->st.ledger));
		goto out;
	}
	rerun = r == 1;
	r = rerun ? restore(srv) : 0;
	if (r < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "cannot restore the checkpoint");
		goto out;
	}
	if (r == 0) {
		r = build_fresh(srv);
		if (r < 0) {
			gp_log_errno(GP_LOG_ERROR, r, "cannot set up the job");
			goto out;
		}
		r = first_checkpoint(srv, rerun);
		if (r < 0)
			goto out;
	}
	gp_ledger_job_set_state(srv->st.ledger, srv->job_id, GP_JOB_RUNNING,
				gp_now_ms());
	srv->n_params = gp_params_size(srv->params);
	srv->minibatches_total = (uint64_t)gp_sched_minibatches(srv->sched) *
				 srv->job.epochs;
	srv->grad = malloc(srv->n_params * sizeof(float));
	srv->grad_b = malloc(srv->n_params * sizeof(float));
	if (!srv->grad || !srv->grad_b) {
		r = -ENOMEM;
		goto out;
	}
	if (gp_sched_done(srv->sched)) {
		gp_info("job %" PRId64 " is already complete", srv->job_id);
		srv->done = true;
		srv->eval_pending = 1;
		start_eval(srv);
	}

	if (!listen)
		listen = srv->job.listen;
	r = parse_listen(listen, &addr);
	if (r < 0) {
		gp_error("listen address '%s' is not ADDR:PORT", listen);
		goto out;
	}
	r = gp_noise_keypair_create(srv->st.id->private_key, &kp);
	if (r < 0)
		goto out;
	{
		/* Every connection is a descriptor: a flood of half-open ones
		 * must hit the handshake limit, not the 1024 soft limit. */
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
			rl.rlim_cur = rl.rlim_max;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	gp_channel_config_default(&srv->chcfg);
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
		goto out;
	}
	{
		/* The bound port on one line, for scripts and tests that ask
		 * for port 0. */
		printf("listening on %.*s:%d\n", (int)(strrchr(listen, ':') - listen),
		       listen, gp_channel_listener_port(srv->listener));
		printf("job %" PRId64 ": model %s, %u epochs, batch %u, staleness %u\n",
		       srv->job_id, srv->spec_text, srv->job.epochs,
		       srv->job.batch_size, srv->job.staleness);
		fflush(stdout);
	}
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
	gp_notify_ready("serving");
	uv_timer_init(&srv->loop, &srv->tick);
	srv->tick.data = srv;
	uv_timer_start(&srv->tick, on_tick, TICK_MS, TICK_MS);
	uv_signal_init(&srv->loop, &srv->sigint);
	uv_signal_init(&srv->loop, &srv->sigterm);
	srv->sigint.data = srv->sigterm.data = srv;
	uv_signal_start(&srv->sigint, on_signal, SIGINT);
	uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
	signal(SIGPIPE, SIG_IGN);
	srv->last_checkpoint_ms = gp_now_ms();
	srv->run_start_us = srv->epoch_start_us = gp_mono_us();

	uv_run(&srv->loop, UV_RUN_DEFAULT);
	r = 0;
out:
	if (srv->listener)
		gp_channel_listener_destroy(srv->listener);
	gp_announce_destroy(srv->announce);
	uv_walk(&srv->loop, walk_close, NULL);
	uv_run(&srv->loop, UV_RUN_DEFAULT);
	uv_loop_close(&srv->loop);
	if (srv->st.ledger)
		gp_ledger_flush(srv->st.ledger);
	gp_model_destroy(srv->eval_model);
	gp_backend_destroy(srv->eval_be);
	gp_params_destroy(srv->params);
	gp_ssp_destroy(srv->ssp);
	gp_sched_destroy(srv->sched);
	gp_data_destroy(srv->train);
	gp_data_destroy(srv->test);
	free(srv->grad);
	free(srv->grad_b);
	free(srv->job_text);
	explicit_bzero(srv->token_key, sizeof(srv->token_key));
	gp_coord_state_close(&srv->st);
out_free:
	free(srv);
	return r;
}
