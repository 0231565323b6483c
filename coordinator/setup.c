/* Setting the coordinator up: the job file, the data sets, the job's row
 * in the ledger, its state restored from the newest checkpoint that fits
 * or built fresh (with a first checkpoint), the listen address, the
 * process's limits. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <unistd.h>

#include "checkpoint.h"
#include "log.h"
#include "server.h"
#include "util.h"
#include "work.h"

#define META_CURRENT_JOB "current_job"

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

/* The job's AdamW state (optimizer = adamw): restored from a
 * checkpoint's section o when there is one, else fresh, and attached to
 * the parameter store. Nothing for the SGD optimizers. Returns 0 or a
 * negative errno. */
static int setup_optim(struct server *srv,
		       const struct gp_checkpoint_section *o)
{
	struct gp_optim_config oc = {
		.beta1 = (float)srv->job.beta1,
		.beta2 = (float)srv->job.beta2,
		.eps = (float)srv->job.eps,
		.weight_decay = (float)srv->job.weight_decay,
	};
	size_t n = gp_params_size(srv->pool.params);
	int r;

	if (srv->job.optimizer != GP_OPT_ADAMW)
		return 0;
	if (o) {
		r = gp_optim_load(o->data, o->len, n, &srv->optim);
		if (r < 0)
			return r;
	} else {
		if (gp_params_updates(srv->pool.params) > 0)
			gp_warn("the checkpoint holds no AdamW state: its "
				"moments start again from zero");
		if ((r = gp_optim_create(&oc, n, &srv->optim)) < 0)
			return r;
	}
	return gp_optim_attach(srv->optim, srv->pool.params);
}

/* The job's outer optimiser (outer_optimizer = nesterov), set on the
 * parameter store with its momentum restored from a checkpoint's section
 * o when there is one. Nothing without. Returns 0 or a negative errno. */
static int setup_outer(struct server *srv,
		       const struct gp_checkpoint_section *o)
{
	int r;

	if (srv->job.outer_optimizer == GP_OUTER_NONE)
		return 0;
	r = gp_params_set_outer(srv->pool.params, (float)srv->job.outer_lr,
				(float)srv->job.outer_momentum);
	if (r < 0)
		return r;
	if (o)
		return gp_params_load_outer(srv->pool.params, o->data, o->len);
	if (gp_params_updates(srv->pool.params) > 0)
		gp_warn("the checkpoint holds no outer momentum: it starts "
			"again from zero");
	return 0;
}

/* [data] set = tokens: DIR/train.tok and DIR/test.tok (tokens.h), for a
 * language model (a seq_xent loss) whose vocabulary covers theirs. The
 * samples are the training file's windows of the model's context. */
static int load_tokens(struct server *srv, const char *job_path)
{
	const struct gp_model_spec *s = &srv->spec;
	char path[sizeof(srv->job.data_dir) + 16], err[GP_DATA_ERR_MAX];
	uint32_t vocab = s->dims[s->n_layers];
	int r;

	if (gp_model_spec_labels(s) < 2 ||
	    s->layers[1].type != GP_LAYER_EMBEDDING) {
		gp_error("%s: [data] set = tokens needs a language model (an "
			 "embedding after the input, a seq_xent loss; "
			 "docs/models.md)", job_path);
		return -EINVAL;
	}
	snprintf(path, sizeof(path), "%s/train.tok", srv->job.data_dir);
	r = gp_tokens_load(path, &srv->train_tok, err, sizeof(err));
	if (r >= 0) {
		snprintf(path, sizeof(path), "%s/test.tok", srv->job.data_dir);
		r = gp_tokens_load(path, &srv->test_tok, err, sizeof(err));
	}
	if (r < 0) {
		gp_error("%s (make the token files with gp-tokens)", err);
		return r;
	}
	if (srv->train_tok->vocab > vocab || srv->test_tok->vocab > vocab ||
	    srv->train_tok->vocab > s->layers[1].vocab) {
		gp_error("%s: the token files' vocabulary (%u) is larger than "
			 "the model's (%u)", job_path, srv->train_tok->vocab,
			 vocab);
		return -EINVAL;
	}
	srv->n_train = gp_tokens_windows(srv->train_tok, s->dims[0]);
	if (srv->n_train == 0 || srv->n_train > UINT32_MAX ||
	    gp_tokens_windows(srv->test_tok, s->dims[0]) == 0) {
		gp_error("%s: the token files hold no window of the model's "
			 "%u tokens", job_path, s->dims[0]);
		return -EINVAL;
	}
	srv->pool.train_fingerprint = gp_tokens_fingerprint(srv->train_tok);
	gp_info("token data: %zu training windows of %u tokens, %zu held "
		"out", srv->n_train, s->dims[0],
		gp_tokens_windows(srv->test_tok, s->dims[0]));
	return 0;
}

static int build_fresh(struct server *srv)
{
	struct gp_tensor_shape shapes[2 * GP_MODEL_MAX_NODES];
	char names[2 * GP_MODEL_MAX_NODES][GP_MODEL_TENSOR_NAME_MAX];
	struct gp_params_config pc = {
		.lr = (float)srv->job.learning_rate,
		.momentum = srv->job.optimizer == GP_OPT_SGD_MOMENTUM ?
				    (float)srv->job.momentum : 0.0f,
		/* AdamW decays in its own step (optim.h). */
		.weight_decay = srv->job.optimizer == GP_OPT_ADAMW ?
					0.0f : (float)srv->job.weight_decay,
		.clip_norm = (float)srv->job.clip_grad_norm,
		.reject_norm = (float)srv->job.max_grad_norm,
	};
	struct gp_sched_config sc = {
		.n_samples = (uint32_t)srv->n_train,
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
	r = gp_params_create(&pc, shapes, n, &srv->pool.params);
	if (r < 0)
		return r;
	init = malloc(gp_params_size(srv->pool.params) * sizeof(float));
	if (!init)
		return -ENOMEM;
	for (size_t i = 0; r >= 0 && i < n; i++) {
		r = gp_model_read(srv->eval_model, GP_MODEL_PARAM, i, 0,
				  shapes[i].rows, init + off);
		if (r >= 0)
			r = gp_params_set_tensor(srv->pool.params, i, init + off,
						 (size_t)shapes[i].rows * shapes[i].cols);
		off += (size_t)shapes[i].rows * shapes[i].cols;
	}
	free(init);
	if (r < 0 || (r = setup_optim(srv, NULL)) < 0 ||
	    (r = setup_outer(srv, NULL)) < 0)
		return r;
	r = gp_ssp_create(srv->job.staleness, &srv->pool.ssp);
	if (r < 0)
		return r;
	return gp_sched_create(&sc, &srv->pool.sched);
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
	uint8_t *blob = gp_bg_checkpoint(srv, &len);
	int64_t seq = 0, undone;
	int r;

	if (!blob)
		return -ENOMEM;
	r = gp_ledger_checkpoint_write(l, srv->pool.job_id, gp_sched_epoch(srv->pool.sched),
				       gp_ssp_min_clock(srv->pool.ssp), gp_now_ms(),
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
	undone = gp_ledger_rollback_after(l, srv->pool.job_id, seq, 0);
	if (undone < 0) {
		gp_error("%s: cannot roll back the updates of the run before: %s",
			 srv->st.ledger_path, gp_ledger_error(l));
		return (int)undone;
	}
	gp_info("job %" PRId64 " had no intact checkpoint: starting it over, %"
		PRId64 " update(s) applied before rolled back to checkpoint %"
		PRId64, srv->pool.job_id, undone, seq);
	return 0;
}

/* Whether a restored checkpoint fits this job: the model's tensors, shape
 * for shape, and the data set and batch size its progress counts in. A
 * checkpoint is only checksummed, not authenticated, and the evaluation
 * reads the parameters with the model's shapes. Returns 0 or -EBADMSG
 * (said why). */
static int check_restored(struct server *srv, int64_t seq)
{
	const struct gp_sched_config *sc = gp_sched_config(srv->pool.sched);
	size_t n = gp_model_tensor_count(srv->eval_model);

	if (gp_params_tensor_count(srv->pool.params) != n) {
		gp_error("checkpoint %" PRId64 " holds %zu tensors, the model "
			 "%.80s has %zu", seq,
			 gp_params_tensor_count(srv->pool.params),
			 srv->spec_text, n);
		return -EBADMSG;
	}
	for (size_t i = 0; i < n; i++) {
		struct gp_tensor_info ti;
		struct gp_tensor_shape sh;

		gp_model_tensor_info(srv->eval_model, i, &ti);
		if (gp_params_tensor(srv->pool.params, i, &sh, NULL) < 0 ||
		    sh.rows != ti.rows || sh.cols != ti.cols) {
			gp_error("checkpoint %" PRId64 ": tensor %zu is %ux%u, the "
				 "model %.80s's %s %zux%zu", seq, i, sh.rows,
				 sh.cols, srv->spec_text, ti.name, ti.rows,
				 ti.cols);
			return -EBADMSG;
		}
	}
	if (sc->n_samples != srv->n_train ||
	    sc->batch_size != srv->job.batch_size) {
		gp_error("checkpoint %" PRId64 " counts %u samples in batches of "
			 "%u, the job %zu in batches of %u", seq, sc->n_samples,
			 sc->batch_size, srv->n_train,
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
	const struct gp_checkpoint_section *p, *c, *s, *m;
	unsigned skipped = 0;
	size_t n;
	int r;

	r = gp_ledger_checkpoint_load_latest(srv->st.ledger, srv->pool.job_id, &ck,
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
	m = gp_checkpoint_find(sec, n, GP_CKPT_MODEL);
	r = -EBADMSG;
	if (!p || !c || !s)
		goto out;

	r = gp_params_load(p->data, p->len, &srv->pool.params);
	if (r >= 0)
		r = gp_ssp_load(c->data, c->len, &srv->pool.ssp);
	if (r >= 0)
		r = gp_sched_load(s->data, s->len, &srv->pool.sched);
	if (r >= 0)
		r = check_restored(srv, ck.seq);
	/* Same shapes are not the same model (a relu for a gelu): a
	 * checkpoint that names its model must name this one. */
	if (r >= 0 && m && (m->len != strlen(srv->spec_text) ||
			    memcmp(m->data, srv->spec_text, m->len) != 0)) {
		gp_error("checkpoint %" PRId64 " holds the parameters of "
			 "another model (%.*s%s) than the job's", ck.seq,
			 (int)(m->len > 80 ? 80 : m->len), (const char *)m->data,
			 m->len > 80 ? "..." : "");
		r = -EBADMSG;
	}
	if (r >= 0)
		r = setup_optim(srv, gp_checkpoint_find(sec, n, GP_CKPT_OPTIM));
	if (r >= 0)
		r = setup_outer(srv, gp_checkpoint_find(sec, n, GP_CKPT_OUTER));
	if (r < 0)
		goto out;
	/* Nobody is connected yet: every agent is dead until it returns. */
	for (size_t i = 0; i < gp_ssp_count(srv->pool.ssp); i++) {
		struct gp_ssp_agent_info info;

		if (gp_ssp_get_at(srv->pool.ssp, i, &info) == 0)
			gp_ssp_mark_dead(srv->pool.ssp, info.id);
	}
	/* The updates logged after the checkpoint are lost with the crash;
	 * their minibatches are redone, and the log says so. */
	{
		int64_t undone = gp_ledger_rollback_after(
			srv->st.ledger, srv->pool.job_id, ck.seq,
			gp_params_updates(srv->pool.params));

		if (undone < 0)
			gp_warn("%s", gp_ledger_error(srv->st.ledger));
		else if (undone > 0)
			gp_info("%" PRId64 " update(s) applied after checkpoint %"
				PRId64 " rolled back; their minibatches are redone",
				undone, ck.seq);
	}
	gp_info("resumed job %" PRId64 " from checkpoint %" PRId64
		" (epoch %u, %" PRIu64 " updates applied)",
		srv->pool.job_id, ck.seq, gp_sched_epoch(srv->pool.sched),
		gp_params_updates(srv->pool.params));
	r = 1;
out:
	gp_ledger_checkpoint_finish(&ck);
	return r;
}

/* Picks the job this run continues, or records a new one. A queued or
 * resumed job of the ledger (srv->pool.job_id set) is that job. For a job
 * file: the newest job of the same text and model (the canonical text: a
 * [model] file may change under the same job text) goes on unless it
 * ended; one that ended is not started again from scratch under a new
 * number without a word: that is -EALREADY, said here, and `job add` is
 * how the owner trains it anew. The model is recorded with the job
 * (jobs.model), and filled in for a job recorded before the ledger kept
 * models. Returns 1 when an existing job goes on, 0 for a new one, or a
 * negative errno. */
static int pick_job(struct server *srv, bool from_ledger)
{
	char buf[32];
	struct gp_ledger_job j = { 0 };
	int64_t id = srv->pool.job_id;
	int r;

	if (!from_ledger &&
	    gp_ledger_job_find(srv->st.ledger, srv->job_text, srv->spec_text,
			       &id) < 0)
		id = 0;
	if (id > 0 && gp_ledger_job_get(srv->st.ledger, id, &j) == 0) {
		enum gp_ledger_job_state state = j.state;
		bool old_row = j.model && !j.model[0];

		gp_ledger_job_finish(&j);
		if (!from_ledger && (state == GP_JOB_DONE ||
				     state == GP_JOB_FAILED ||
				     state == GP_JOB_CANCELLED)) {
			/* With the queue to serve (the service's restart)
			 * this is the expected case, not an error. */
			gp_log(srv->take_queue ? GP_LOG_INFO : GP_LOG_ERROR,
			       "%s: job %" PRId64 " trained this job file "
			       "already and is %s: serve does not start it "
			       "again as a new job. Export its model with "
			       "'gradpool-coordinator export --job %" PRId64
			       "', or train it anew with 'gradpool-coordinator "
			       "job add %s'", srv->job_source, id,
			       gp_ledger_job_state_name(state), id,
			       srv->job_source);
			srv->pool.job_id = id;
			return -EALREADY;
		}
		srv->pool.job_id = id;
		if (old_row &&
		    gp_ledger_job_set_model(srv->st.ledger, id, srv->spec_text) < 0)
			return -EIO;
		if (!from_ledger)
			gp_ledger_job_set_source(srv->st.ledger, id, srv->job_source);
		return state == GP_JOB_QUEUED ? 0 : 1;
	}
	if (from_ledger)
		return -ENOENT;
	r = gp_ledger_job_create(srv->st.ledger, srv->job_text, gp_now_ms(),
				 &srv->pool.job_id);
	if (r >= 0)
		r = gp_ledger_job_set_model(srv->st.ledger, srv->pool.job_id,
					    srv->spec_text);
	if (r >= 0)
		r = gp_ledger_job_set_source(srv->st.ledger, srv->pool.job_id,
					     srv->job_source);
	if (r < 0)
		return r;
	snprintf(buf, sizeof(buf), "%" PRId64, srv->pool.job_id);
	r = gp_ledger_meta_set(srv->st.ledger, META_CURRENT_JOB, buf);
	return r < 0 ? r : 0;
}

int gp_setup_listen_addr(const char *s, struct sockaddr_storage *ss)
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


/* Called from inside the verifier: the finish (which may tear the job,
 * the verifier included, down) runs on serve's next tick instead. */
static void verify_idle(void *ctx)
{
	struct server *srv = ctx;

	srv->finish_soon = true;
}

/* The job's training and test sets ([data]), checked against the model,
 * and the training set's shard manifest for agents that fetch it. */
static int load_data(struct server *srv, const char *job_path)
{
	const struct gp_job *job = &srv->job;
	char err[GP_DATA_ERR_MAX + GP_JOB_PATH_MAX];
	char p[4][GP_JOB_PATH_MAX];
	const char *names[4] = { job->train_images, job->train_labels,
				 job->test_images, job->test_labels };
	const struct gp_dataset *tr;
	struct gp_dataset *all = NULL;
	const uint8_t *stream;
	size_t stream_len;
	uint32_t classes;
	int r;

	if (!job->data_npy) {
		r = gp_data_load_fashion_mnist(job->data_dir, true, &srv->train,
					       err, sizeof(err));
		if (r >= 0)
			r = gp_data_load_fashion_mnist(job->data_dir, false,
						       &srv->test, err,
						       sizeof(err));
	} else {
		for (int i = 0; i < 4; i++)
			if (names[i][0] &&
			    gp_job_data_path(names[i], job_path, p[i],
					     sizeof(p[i])) < 0) {
				gp_error("%s: [data] %s: path too long",
					 job_path, names[i]);
				return -ENAMETOOLONG;
			}
		r = gp_data_load_npy(p[0], p[1], &all, err, sizeof(err));
		if (r >= 0 && job->test_share > 0) {
			r = gp_data_split(all, job->test_share, job->seed,
					  &srv->train, &srv->test);
			if (r < 0)
				snprintf(err, sizeof(err), "%s: cannot hold out "
					 "a test share of %g: %s", p[0],
					 job->test_share, strerror(-r));
		} else if (r >= 0) {
			srv->train = all;
			all = NULL;
			r = gp_data_load_npy(p[2], p[3], &srv->test, err,
					     sizeof(err));
		}
		gp_data_destroy(all);
	}
	if (r < 0) {
		gp_error("%s", err);
		return r;
	}
	tr = srv->train;
	if (srv->test->features != tr->features ||
	    srv->test->dtype != tr->dtype) {
		gp_error("%s: the test set's samples (%zu %s elements) differ "
			 "from the training set's (%zu %s)", job_path,
			 srv->test->features,
			 srv->test->dtype == GP_DATA_U8 ? "uint8" : "float32",
			 tr->features, tr->dtype == GP_DATA_U8 ? "uint8" :
								  "float32");
		return -EINVAL;
	}
	classes = tr->classes > srv->test->classes ? tr->classes :
						      srv->test->classes;
	if (srv->spec.dims[0] != tr->features ||
	    srv->spec.dims[srv->spec.n_layers] < classes) {
		gp_error("%s: the model takes %u inputs and gives %u classes; "
			 "the data set has %zu inputs (%ux%ux%u) and labels "
			 "up to %u", job_path, srv->spec.dims[0],
			 srv->spec.dims[srv->spec.n_layers], tr->features,
			 tr->shape[0], tr->shape[1], tr->shape[2],
			 classes - 1);
		return -EINVAL;
	}
	if (tr->count > UINT32_MAX) {
		gp_error("%s: %zu training samples; at most %u", job_path,
			 tr->count, UINT32_MAX);
		return -E2BIG;
	}
	srv->pool.train_fingerprint = gp_data_fingerprint(tr);
	stream = gp_data_stream(tr, &stream_len);
	r = gp_shard_manifest_build(stream, stream_len, tr->dtype,
				    (uint32_t)tr->count, tr->shape,
				    tr->classes, GP_SHARD_SIZE_DEFAULT,
				    &srv->manifest);
	if (r == -EINVAL) /* beyond GP_SHARD_COUNT_MAX of the default */
		r = gp_shard_manifest_build(stream, stream_len, tr->dtype,
					    (uint32_t)tr->count, tr->shape,
					    tr->classes, GP_SHARD_SIZE_MAX,
					    &srv->manifest);
	if (r < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "%s: cannot describe the training "
			     "set as shards", job_path);
		return r;
	}
	gp_info("training set: %zu samples of %ux%ux%u %s, %u classes; "
		"test set: %zu samples; %u shards of %u KiB", tr->count,
		tr->shape[0], tr->shape[1], tr->shape[2],
		tr->dtype == GP_DATA_U8 ? "uint8" : "float32", tr->classes,
		srv->test->count, srv->manifest.n_shards,
		srv->manifest.shard_size / 1024);
	return 0;
}

/* The job's text and model from the ledger (a queued job, or one a
 * stopped serve left running): the text as queued, the model as recorded
 * then (its [model] file may have changed since). */
static int load_ledger_job(struct server *srv, int64_t id)
{
	struct gp_ledger_job j = { 0 };
	char err[GP_DATA_ERR_MAX];
	int r;

	r = gp_ledger_job_get(srv->st.ledger, id, &j);
	if (r < 0 || j.id != id) {
		gp_error("%s: no job %" PRId64, srv->st.ledger_path, id);
		gp_ledger_job_finish(&j);
		return r < 0 ? r : -ENOENT;
	}
	snprintf(srv->job_source, sizeof(srv->job_source), "%s",
		 j.source[0] ? j.source : "(job text in the ledger)");
	srv->job_text = j.spec;
	j.spec = NULL;
	r = gp_job_parse(srv->job_source, srv->job_text, strlen(srv->job_text),
			 &srv->job, err, sizeof(err));
	if (r >= 0 && j.model && j.model[0])
		r = gp_model_spec_parse(j.model, &srv->spec, err, sizeof(err));
	else if (r >= 0)
		r = gp_job_load_model(&srv->job, srv->job_source, &srv->spec, err,
				      sizeof(err));
	gp_ledger_job_finish(&j);
	if (r < 0)
		gp_error("job %" PRId64 ": %s", id, err);
	srv->pool.job_id = id;
	return r;
}

int gp_setup_job(struct server *srv, const char *job_path, int64_t job_id)
{
	char err[GP_DATA_ERR_MAX];
	size_t job_len = 0;
	bool rerun;
	int r;

	if (job_id > 0) {
		r = load_ledger_job(srv, job_id);
		if (r < 0)
			return r;
		goto parsed;
	}
	/* Read once: the text parsed is the text the ledger and the
	 * checkpoints keep, even if the file changes meanwhile. */
	r = read_file(job_path, &srv->job_text, &job_len);
	if (r < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "%s", job_path);
		return r;
	}
	gp_setup_source_path(job_path, srv->job_source, sizeof(srv->job_source));
	r = gp_job_parse(job_path, srv->job_text, job_len, &srv->job, err,
			 sizeof(err));
	if (r < 0) {
		gp_error("%s", err);
		return r;
	}
	r = gp_job_load_model(&srv->job, job_path, &srv->spec, err, sizeof(err));
	if (r < 0) {
		gp_error("%s", err);
		return r;
	}
parsed:
	/* The canonical text is what the ledger, the checkpoints and the
	 * agents get: it parses back to this very graph. */
	r = gp_model_spec_format(&srv->spec, srv->spec_text, sizeof(srv->spec_text));
	if (r < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "%s: cannot write the model's text",
			     srv->job_source);
		return r;
	}
	if (strcmp(srv->job.data_set, "tokens") == 0) {
		r = load_tokens(srv, srv->job_source);
	} else {
		r = load_data(srv, srv->job_source);
		if (r >= 0)
			srv->n_train = srv->train->count;
	}
	if (r < 0)
		return r;
	/* A language model's activations are sequences: its evaluation
	 * runs in smaller batches (attention keeps T x T a head). */
	srv->eval_batch = srv->train_tok ? 32 : EVAL_BATCH;
	r = gp_backend_create_cpu(1, &srv->eval_be);
	if (r >= 0)
		r = gp_model_create(srv->eval_be, &srv->spec, srv->eval_batch,
				    &srv->eval_model);
	if (r < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "cannot create the evaluation model");
		return r;
	}
	r = pick_job(srv, job_id > 0);
	if (r == -EALREADY)
		return r;
	if (r < 0) {
		gp_error("%s: cannot record the job: %s", srv->st.ledger_path,
			 gp_ledger_error(srv->st.ledger));
		return r;
	}
	rerun = r == 1;
	r = rerun ? restore(srv) : 0;
	if (r < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "cannot restore the checkpoint");
		return r;
	}
	if (r == 0) {
		r = build_fresh(srv);
		if (r < 0) {
			gp_log_errno(GP_LOG_ERROR, r, "cannot set up the job");
			return r;
		}
		r = first_checkpoint(srv, rerun);
		if (r < 0)
			return r;
	}
	/* Cancelled while it was set up: the ledger keeps it so, and serve's
	 * next look at the ledger (check_cancelled) stops it. */
	if (gp_ledger_job_set_state(srv->st.ledger, srv->pool.job_id,
				    GP_JOB_RUNNING, gp_now_ms()) == -EALREADY)
		gp_info("job %" PRId64 " was cancelled while it was set up",
			srv->pool.job_id);
	srv->pool.n_params = gp_params_size(srv->pool.params);
	gp_params_set_par(srv->pool.params, srv->pool.par);
	srv->pool.minibatches_total = (uint64_t)gp_sched_minibatches(srv->pool.sched) *
				 srv->job.epochs;
	srv->pool.grad = malloc(srv->pool.n_params * sizeof(float));
	srv->pool.grad_b = malloc(srv->pool.n_params * sizeof(float));
	if (!srv->pool.grad || !srv->pool.grad_b) {
		r = -ENOMEM;
		return r;
	}
	/* Verification recomputes images' and a language model's windows'
	 * gradients (the latter on the coordinator only). */
	if (srv->job.verify_rate > 0) {
		uint64_t seed = 0;

		/* Which clocks are checked must not be predictable by
		 * members. */
		if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed))
			seed = (uint64_t)gp_now_ms() ^ (uint64_t)getpid() << 32;
		struct gp_verify_env env = {
			.loop = &srv->loop,
			.train = srv->train,
			.train_tok = srv->train_tok,
			.spec = &srv->spec,
			.batch_size = srv->job.batch_size,
			.job_seed = srv->job.seed,
			.ledger = srv->st.ledger,
			.idle = verify_idle,
			.ctx = srv,
		};

		r = gp_verify_create(&srv->pool, &env, seed, &srv->pool.verify);
		if (r == -ENOMEM) {
			gp_log_errno(GP_LOG_ERROR, r,
				     "cannot set up verification");
			return r;
		}
		if (r < 0) {
			gp_error("cannot set up verification: %s",
				 gp_ledger_error(srv->st.ledger));
			return r;
		}
	}
	return 0;
}

void gp_setup_source_path(const char *path, char *buf, size_t size)
{
	char *abs = realpath(path, NULL);

	snprintf(buf, size, "%s", abs ? abs : path);
	free(abs);
}

/* The process's CPU time so far, every thread's: what the summaries
 * above (robust aggregation's, verification's) are a share of. */
static void log_cpu(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return;
	gp_info("coordinator: %.3f s CPU since it started (all threads: "
		"%.3f s user, %.3f s system)",
		(double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
			(double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6,
		(double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
		(double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
}

void gp_setup_teardown(struct server *srv)
{
	struct gp_pool *pool = &srv->pool;

	gp_model_destroy(srv->eval_model);
	srv->eval_model = NULL;
	gp_backend_destroy(srv->eval_be);
	srv->eval_be = NULL;
	gp_params_destroy(pool->params);
	gp_ssp_destroy(pool->ssp);
	gp_sched_destroy(pool->sched);
	gp_data_destroy(srv->train);
	gp_data_destroy(srv->test);
	srv->train = srv->test = NULL;
	gp_tokens_destroy(srv->train_tok);
	gp_tokens_destroy(srv->test_tok);
	srv->train_tok = srv->test_tok = NULL;
	gp_optim_destroy(srv->optim);
	srv->optim = NULL;
	free(pool->grad);
	free(pool->grad_b);
	gp_robust_finish(&pool->robust);
	memset(&pool->robust, 0, sizeof(pool->robust));
	/* After the job's last check ended (serve waits for them): the
	 * verdicts that came after the last update are in it. */
	gp_verify_log_summary(pool->verify);
	log_cpu();
	gp_verify_destroy(pool->verify);
	pool->verify = NULL;
	gp_work_finish(pool);
	gp_shard_manifest_finish(&srv->manifest);
	free(srv->job_text);
	srv->job_text = NULL;
	memset(&srv->spec, 0, sizeof(srv->spec));
	srv->spec_text[0] = '\0';
	srv->job_source[0] = '\0';
	/* What the pool counted for this job; members, the listener and
	 * the job's [pool] settings (srv->job) stay for the next. */
	pool->params = NULL;
	pool->ssp = NULL;
	pool->sched = NULL;
	pool->grad = pool->grad_b = NULL;
	pool->job_id = 0;
	pool->n_params = 0;
	pool->minibatches_total = 0;
	pool->train_fingerprint = 0;
	pool->first_work_us = 0;
	pool->sync_interval_logged = 0;
	pool->applied_run = pool->samples_run = pool->unlogged = 0;
	pool->group_floor = pool->pace_quiet = 0;
	pool->pace_at_us = pool->pace_stall_us = 0;
	pool->group_mean = 0;
	pool->applied_since_checkpoint = 0;
	pool->checkpoint_wanted = false;
	pool->epoch_samples = 0;
	pool->epoch_loss_sum = 0;
	pool->epoch_updates = 0;
	srv->eval_pending = 0;
	srv->done = srv->final_reported = false;
	srv->last_accuracy = 0;
}

void gp_setup_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}
