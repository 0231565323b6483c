/* The coordinator's work on the libuv thread pool: ledger writes (the
 * buffered update log, checkpoints, the job's state), evaluations of the
 * parameters on the test set, and revocation checks. Each runs on a worker
 * thread and reports back on the loop thread; at most one of each kind at
 * a time. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "log.h"
#include "members.h"
#include "server.h"
#include "util.h"

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
			l, w->srv->pool.job_id, w->epoch, w->clock, w->now, w->blob,
			w->blob_len, w->srv->job.checkpoint_keep ?
				w->srv->job.checkpoint_keep : 2, NULL);
	} else {
		w->result = gp_ledger_flush(l);
	}
	if (w->result >= 0 && w->job_done) {
		w->result = gp_ledger_job_set_state(l, w->srv->pool.job_id,
						    GP_JOB_DONE, w->now);
		/* A cancel that came in the job's last moments stands. */
		if (w->result == -EALREADY)
			w->result = 0;
	}
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
	gp_serve_maybe_finish(srv);
}

uint8_t *gp_bg_checkpoint(struct server *srv, size_t *ret_len)
{
	struct gp_checkpoint_section sec[7];
	uint8_t *p = NULL, *s = NULL, *c = NULL, *o = NULL, *m = NULL;
	uint8_t *out = NULL;
	size_t pl, sl, cl, ol = 0, ml = 0, n = 5;

	if (gp_params_save(srv->pool.params, &p, &pl) < 0 ||
	    gp_ssp_save(srv->pool.ssp, &c, &cl) < 0 ||
	    gp_sched_save(srv->pool.sched, &s, &sl) < 0 ||
	    (srv->optim && gp_optim_save(srv->optim, &o, &ol) < 0) ||
	    (gp_params_outer_momentum(srv->pool.params) &&
	     gp_params_save_outer(srv->pool.params, &m, &ml) < 0))
		goto out;
	sec[0] = (struct gp_checkpoint_section){ GP_CKPT_PARAMS, p, pl };
	sec[1] = (struct gp_checkpoint_section){ GP_CKPT_CLOCKS, c, cl };
	sec[2] = (struct gp_checkpoint_section){ GP_CKPT_PROGRESS, s, sl };
	sec[3] = (struct gp_checkpoint_section){
		GP_CKPT_JOB, (const uint8_t *)srv->job_text, strlen(srv->job_text)
	};
	sec[4] = (struct gp_checkpoint_section){
		GP_CKPT_MODEL, (const uint8_t *)srv->spec_text,
		strlen(srv->spec_text)
	};
	if (o)
		sec[n++] = (struct gp_checkpoint_section){ GP_CKPT_OPTIM, o, ol };
	if (m)
		sec[n++] = (struct gp_checkpoint_section){ GP_CKPT_OUTER, m, ml };
	if (gp_checkpoint_encode(sec, n, &out, ret_len) < 0)
		out = NULL;
out:
	free(m);
	free(o);
	free(p);
	free(s);
	free(c);
	return out;
}

/* Starts a ledger job if none is running: a checkpoint when one is wanted,
 * else a flush of the buffered update log when one is due. */
void gp_bg_kick_db(struct server *srv, bool force_flush)
{
	struct db_work *w;
	int64_t now = gp_now_ms();

	if (srv->db_busy)
		return;
	if (!srv->pool.checkpoint_wanted && !force_flush &&
	    !gp_ledger_flush_due(srv->st.ledger, now))
		return;
	w = calloc(1, sizeof(*w));
	if (!w)
		return;
	w->srv = srv;
	w->now = now;
	w->req.data = w;
	if (srv->pool.checkpoint_wanted) {
		w->blob = gp_bg_checkpoint(srv, &w->blob_len);
		if (!w->blob) {
			gp_error("cannot encode a checkpoint");
			free(w);
			return;
		}
		w->epoch = gp_sched_epoch(srv->pool.sched);
		w->clock = gp_ssp_min_clock(srv->pool.ssp);
		srv->pool.checkpoint_wanted = false;
		srv->last_checkpoint_ms = now;
		srv->pool.applied_since_checkpoint = 0;
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

/* A language model's evaluation: every held-out window, the loss in nats
 * a token (over ln 2: bits per byte for a byte-level model) and the
 * next-token accuracy over all positions. The parameters are written. */
static void eval_tokens(struct eval_work *w)
{
	struct server *srv = w->srv;
	size_t t = srv->spec.dims[0], nb = srv->eval_batch;
	size_t n = gp_tokens_windows(srv->test_tok, t);
	float *x = malloc(nb * t * sizeof(float));
	int32_t *y = malloc(nb * t * sizeof(int32_t));
	uint32_t *idx = malloc(nb * sizeof(uint32_t));
	double loss = 0;
	size_t correct = 0;
	int r = x && y && idx ? 0 : -ENOMEM;

	for (size_t b = 0; r >= 0 && b < n; b += nb) {
		size_t m = n - b < nb ? n - b : nb;
		struct gp_model_stats st;

		for (size_t i = 0; i < m; i++)
			idx[i] = (uint32_t)(b + i);
		r = gp_tokens_gather(srv->test_tok, t, idx, m, x, y);
		if (r >= 0)
			r = gp_model_evaluate(srv->eval_model, x, y, m, &st);
		if (r < 0)
			break;
		loss += st.loss * (double)m;
		correct += st.correct;
	}
	free(x);
	free(y);
	free(idx);
	w->result = r;
	/* samples counts positions, so correct / samples is the accuracy. */
	w->stats.samples = n * t;
	w->stats.labels = n * t;
	w->stats.loss = n ? loss / (double)n : 0;
	w->stats.correct = correct;
}

static void eval_run(uv_work_t *req)
{
	struct eval_work *w = req->data;
	struct server *srv = w->srv;
	float *x = NULL;
	int32_t *y = NULL;
	size_t n = srv->test ? srv->test->count : 0;
	double loss = 0;
	size_t correct = 0;
	int r = 0;

	r = gp_model_write_all(srv->eval_model, GP_MODEL_PARAM, w->values);
	if (srv->test_tok) {
		if (r >= 0)
			eval_tokens(w);
		else
			w->result = r;
		return;
	}
	x = malloc(EVAL_BATCH * srv->test->features * sizeof(float));
	y = malloc(EVAL_BATCH * sizeof(int32_t));
	if (!x || !y)
		r = -ENOMEM;
	for (size_t b = 0; r >= 0 && b < n; b += EVAL_BATCH) {
		size_t m = n - b < EVAL_BATCH ? n - b : EVAL_BATCH;
		struct gp_model_stats st;

		uint32_t idx[EVAL_BATCH];

		for (size_t i = 0; i < m; i++)
			idx[i] = (uint32_t)(b + i);
		r = gp_data_gather(srv->test, idx, m, x, y);
		if (r < 0)
			break;
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

	for (struct peer *p = first_peer(srv); p; p = next_peer(p)) {
		if (!p->m.agent_id || o >= sizeof(shares) - 1)
			continue;
		o += (size_t)snprintf(shares + o, sizeof(shares) - o, " %s:%.0f%%",
				      p->m.name[0] ? p->m.name : "?",
				      srv->pool.epoch_samples ?
					      100.0 * (double)p->m.epoch_samples /
						      (double)srv->pool.epoch_samples :
					      0.0);
		p->m.epoch_samples = 0;
	}
	if (srv->test_tok)
		/* A language model: the held-out loss in bits a token (bits
		 * per byte for bytes) and the next-token accuracy. */
		printf("epoch %u/%u  %8.0f tokens/s  train loss %.4f  test "
		       "loss %.4f  test bits/token %.4f  next-token accuracy "
		       "%.2f%%  work:%s\n",
		       epoch + 1, srv->job.epochs,
		       secs > 0 ? (double)srv->pool.epoch_samples *
					  srv->spec.dims[0] / secs
				: 0.0,
		       srv->pool.epoch_updates ? srv->pool.epoch_loss_sum /
							 (double)srv->pool.epoch_updates
					       : 0.0,
		       st->loss, st->loss / M_LN2, 100.0 * acc, shares);
	else
		printf("epoch %u/%u  %8.0f samples/s  train loss %.4f  test "
		       "loss %.4f  test accuracy %.2f%%  work:%s\n",
		       epoch + 1, srv->job.epochs,
		       secs > 0 ? (double)srv->pool.epoch_samples / secs : 0.0,
		       srv->pool.epoch_updates ? srv->pool.epoch_loss_sum /
							 (double)srv->pool.epoch_updates
					       : 0.0,
		       st->loss, 100.0 * acc, shares);
	fflush(stdout);
	srv->epoch_start_us = now;
	srv->pool.epoch_samples = 0;
	srv->pool.epoch_loss_sum = 0;
	srv->pool.epoch_updates = 0;
}


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
			.job_id = srv->pool.job_id,
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
		gp_progress_eval(&srv->progress, w->epoch + 1, acc,
				 w->stats.loss);
		gp_serve_progress_tick(srv, gp_now_ms(), true);
	}
	free(w->values);
	free(w);
	if (srv->eval_pending)
		gp_bg_start_eval(srv, false);
	else if (srv->done && !srv->final_reported) {
		srv->final_reported = true;
		printf("final test accuracy: %.2f%%\n", 100.0 * srv->last_accuracy);
		fflush(stdout);
		srv->pool.checkpoint_wanted = true;
		gp_bg_kick_db(srv, true);
	}
	gp_serve_maybe_finish(srv);
}

void gp_bg_start_eval(struct server *srv, bool interim)
{
	struct eval_work *w;
	uint32_t done_epochs = gp_sched_epoch(srv->pool.sched);

	if (srv->eval_busy || (!interim && !srv->eval_pending))
		return;
	w = calloc(1, sizeof(*w));
	if (!w)
		return;
	w->values = malloc(srv->pool.n_params * sizeof(float));
	if (!w->values) {
		free(w);
		return;
	}
	memcpy(w->values, gp_params_values(srv->pool.params),
	       srv->pool.n_params * sizeof(float));
	w->srv = srv;
	w->interim = interim;
	w->at_s = srv->pool.first_work_us ?
		(double)(gp_mono_us() - srv->pool.first_work_us) / 1e6 : 0;
	w->samples = srv->pool.samples_run;
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

/* `gradpool-coordinator agents revoke` writes the ledger from another
 * process: every REVOKE_CHECK_MS the revoked agents are listed on the
 * thread pool (the ledger may be busy with a checkpoint; one query, not
 * one per member: at 10,000 members with little work, serve used 57 %
 * of a core with a lookup each and 30 % with the one query) and the
 * connected members among them get BYE revoked; their work goes back
 * to the queue as on any disconnect, and the handshake refuses them
 * from then on. */
struct revoke_work {
	uv_work_t req;
	struct server *srv;
	int64_t *ids;   /* every revoked agent, ascending */
	size_t n;
	int result;
};

static void revoke_run(uv_work_t *req)
{
	struct revoke_work *w = req->data;

	w->result = gp_ledger_agents_revoked(w->srv->st.ledger, &w->ids, &w->n);
}

static int cmp_id(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static void revoke_done(uv_work_t *req, int status)
{
	struct revoke_work *w = req->data;
	struct server *srv = w->srv;
	struct peer *p, *next;

	srv->revoke_busy = false;
	if (status < 0 || w->result < 0 || !w->n)
		goto out;
	/* Members waiting between jobs (idle) are members too: a walk with
	 * a bsearch each, once a second whenever the ledger holds a revoked
	 * agent. */
	for (p = first_peer(srv); p && !srv->pool.stopping; p = next) {
		next = next_peer(p);
		if (!(p->m.joined || p->idle) ||
		    !bsearch(&p->m.agent_id, w->ids, w->n, sizeof(*w->ids),
			     cmp_id))
			continue;
		gp_info("agent %" PRId64 " (%s): membership revoked, disconnecting",
			p->m.agent_id, p->m.addr);
		gp_serve_bye(p, GP_BYE_REVOKED, "this agent's membership was revoked");
	}
out:
	free(w->ids);
	free(w);
}

void gp_bg_check_revoked(struct server *srv, int64_t now)
{
	struct revoke_work *w;

	if (srv->revoke_busy || now - srv->last_revoke_check_ms < REVOKE_CHECK_MS)
		return;
	srv->last_revoke_check_ms = now;
	if (!srv->pool.members)
		return;
	w = calloc(1, sizeof(*w));
	if (!w)
		return;
	w->srv = srv;
	w->req.data = w;
	srv->revoke_busy = true;
	if (uv_queue_work(&srv->loop, &w->req, revoke_run, revoke_done) < 0) {
		srv->revoke_busy = false;
		free(w);
	}
}

/* `gradpool-coordinator job cancel` writes the job's state from another
 * process. Read on the thread pool, as the revocations are: on the loop
 * the read waited for the ledger's lock behind any flush or checkpoint
 * of the update log, twice a second. */
struct cancel_work {
	uv_work_t req;
	struct server *srv;
	int64_t job_id;
	int state;
	int result;
};

static void cancel_run(uv_work_t *req)
{
	struct cancel_work *w = req->data;
	struct gp_ledger_job j = { 0 };

	w->result = gp_ledger_job_get(w->srv->st.ledger, w->job_id, &j);
	w->state = j.state;
	gp_ledger_job_finish(&j);
}

static void cancel_done(uv_work_t *req, int status)
{
	struct cancel_work *w = req->data;
	struct server *srv = w->srv;

	srv->cancel_busy = false;
	/* The job may have ended meanwhile, or another taken its place. */
	if (status < 0 || w->result < 0 || w->state != GP_JOB_CANCELLED ||
	    !srv->has_job || srv->pool.job_id != w->job_id ||
	    srv->job_ending || srv->cancelled || srv->pool.stopping) {
		free(w);
		return;
	}
	free(w);
	gp_info("job %" PRId64 " was cancelled by the owner: checkpointing "
		"it and telling its members", srv->pool.job_id);
	srv->cancelled = true;
	srv->pool.checkpoint_wanted = true;
	gp_serve_maybe_finish(srv);
}

void gp_bg_check_cancelled(struct server *srv)
{
	struct cancel_work *w;

	if (srv->cancel_busy || !srv->has_job)
		return;
	w = calloc(1, sizeof(*w));
	if (!w)
		return;
	w->srv = srv;
	w->job_id = srv->pool.job_id;
	w->req.data = w;
	srv->cancel_busy = true;
	if (uv_queue_work(&srv->loop, &w->req, cancel_run, cancel_done) < 0) {
		srv->cancel_busy = false;
		free(w);
	}
}
