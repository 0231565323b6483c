/* `gradpool-coordinator export`: picks a job's checkpoint from the ledger,
 * checks it as a restore would (setup.c), and writes its parameters with
 * the writers of export.h to a temporary file beside OUT, renamed over OUT
 * once complete. */
#include "export.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "checkpoint.h"
#include "gp-config.h"
#include "job.h"
#include "log.h"
#include "optim.h"
#include "params.h"
#include "scheduler.h"
#include "ssp.h"
#include "state.h"
#include "util.h"

/* A checkpoint that passed every check, and what was read from it. */
struct loaded {
	struct gp_ledger_checkpoint ck;
	struct gp_params *params;
	struct gp_sched *sched;
	char *job_text;
	struct gp_job job;
	char model_text[GP_MODEL_DESC_MAX];
	struct gp_model_spec spec;
	struct gp_optim *optim; /* the AdamW state, when the job has one */
};

static void loaded_finish(struct loaded *x)
{
	gp_ledger_checkpoint_finish(&x->ck);
	gp_params_destroy(x->params);
	gp_sched_destroy(x->sched);
	gp_optim_destroy(x->optim);
	free(x->job_text);
	memset(x, 0, sizeof(*x));
}

/* The model the parameters belong to, in canonical text (the shorthand
 * or a one-line description): the checkpoint's own model section; for a
 * checkpoint written before that section, the ledger's record of the
 * job's model; for a job recorded before that, its job text's [model]
 * spec. Returns 0, -ENODATA when none of them names a model, or -ENOSPC. */
static int model_text(struct gp_ledger *l, int64_t job_id,
		      const struct gp_checkpoint_section *m,
		      const struct gp_job *job, char *buf, size_t len)
{
	char *recorded = NULL;
	int n;

	if (m) {
		if (m->len >= len)
			return -ENOSPC;
		memcpy(buf, m->data, m->len);
		buf[m->len] = '\0';
		return 0;
	}
	if (gp_ledger_job_model(l, job_id, &recorded) == 0 && recorded[0]) {
		n = snprintf(buf, len, "%s", recorded);
		free(recorded);
		return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
	}
	free(recorded);
	if (!job->spec[0])
		return -ENODATA;
	n = snprintf(buf, len, "%s", job->spec);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

/* Whether the parameters fit the model tensor for tensor: names, rows and
 * columns as the coordinator's own model lays them out (restore's check,
 * plus the names the files are written under). */
static int check_tensors(const struct loaded *x, char *why, size_t why_len)
{
	struct gp_backend *be = NULL;
	struct gp_model *model = NULL;
	size_t n;
	int r;

	r = gp_backend_create_cpu(1, &be);
	if (r >= 0)
		r = gp_model_create(be, &x->spec, 1, &model);
	if (r < 0) {
		snprintf(why, why_len, "cannot build its model: %s",
			 strerror(-r));
		goto out;
	}
	n = gp_model_tensor_count(model);
	r = -EBADMSG;
	if (gp_params_tensor_count(x->params) != n) {
		snprintf(why, why_len, "it holds %zu tensors, the model %zu",
			 gp_params_tensor_count(x->params), n);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		struct gp_tensor_info ti;
		struct gp_tensor_shape sh;

		gp_model_tensor_info(model, i, &ti);
		if (gp_params_tensor(x->params, i, &sh, NULL) < 0 ||
		    strcmp(sh.name, ti.name) != 0 || sh.rows != ti.rows ||
		    sh.cols != ti.cols) {
			snprintf(why, why_len,
				 "its tensor %zu is \"%.32s\" %ux%u, the model's "
				 "\"%s\" %zux%zu",
				 i, sh.name ? sh.name : "?", sh.rows, sh.cols,
				 ti.name, ti.rows, ti.cols);
			goto out;
		}
	}
	r = 0;
out:
	gp_model_destroy(model);
	gp_backend_destroy(be);
	return r;
}

/* Loads checkpoint seq of job and checks it whole. Returns 0 with *x
 * filled, -ENOENT, or -EBADMSG / -ENOTSUP with why set. */
static int load_checked(struct gp_ledger *l, const struct gp_ledger_job *job,
			int64_t seq, struct loaded *x, char *why,
			size_t why_len)
{
	struct gp_checkpoint_section sec[GP_CHECKPOINT_MAX_SECTIONS];
	const struct gp_checkpoint_section *p, *c, *s, *j, *mod, *opt;
	struct gp_ssp *ssp = NULL;
	char err[GP_EXPORT_ERR_MAX], name[64];
	size_t n;
	int r;

	memset(x, 0, sizeof(*x));
	r = gp_ledger_checkpoint_load(l, job->id, seq, &x->ck);
	if (r < 0) {
		snprintf(why, why_len, "%s", gp_ledger_error(l));
		return r;
	}
	r = gp_checkpoint_decode(x->ck.blob, x->ck.len, sec, &n);
	if (r == -ENOTSUP) {
		snprintf(why, why_len, "its format version is not one this "
			 "build reads");
		goto fail;
	}
	if (r < 0) {
		snprintf(why, why_len, "its checksum or layout is wrong");
		r = -EBADMSG;
		goto fail;
	}
	p = gp_checkpoint_find(sec, n, GP_CKPT_PARAMS);
	c = gp_checkpoint_find(sec, n, GP_CKPT_CLOCKS);
	s = gp_checkpoint_find(sec, n, GP_CKPT_PROGRESS);
	j = gp_checkpoint_find(sec, n, GP_CKPT_JOB);
	mod = gp_checkpoint_find(sec, n, GP_CKPT_MODEL);
	opt = gp_checkpoint_find(sec, n, GP_CKPT_OPTIM);
	r = -EBADMSG;
	if (!p || !c || !s) {
		snprintf(why, why_len, "it lacks its %s section",
			 !p ? "parameter" : !c ? "clock" : "progress");
		goto fail;
	}
	if (gp_params_load(p->data, p->len, &x->params) < 0 ||
	    gp_ssp_load(c->data, c->len, &ssp) < 0 ||
	    gp_sched_load(s->data, s->len, &x->sched) < 0) {
		snprintf(why, why_len, "its %s section is malformed",
			 !x->params ? "parameter" : !ssp ? "clock" : "progress");
		goto fail;
	}
	if (opt && gp_optim_load(opt->data, opt->len,
				 gp_params_size(x->params), &x->optim) < 0) {
		snprintf(why, why_len, "its optimizer section is malformed");
		goto fail;
	}
	/* The job text the checkpoint was written under; the ledger's job
	 * row for checkpoints older than that section. */
	if (j) {
		x->job_text = malloc(j->len + 1);
		if (x->job_text) {
			memcpy(x->job_text, j->data, j->len);
			x->job_text[j->len] = '\0';
		}
	} else {
		x->job_text = strdup(job->spec ? job->spec : "");
	}
	if (!x->job_text) {
		r = -ENOMEM;
		snprintf(why, why_len, "out of memory");
		goto fail;
	}
	snprintf(name, sizeof(name), "job %" PRId64, job->id);
	if (gp_job_parse(name, x->job_text, strlen(x->job_text), &x->job, err,
			 sizeof(err)) < 0) {
		snprintf(why, why_len, "its job does not parse: %s", err);
		goto fail;
	}
	if (model_text(l, job->id, mod, &x->job, x->model_text,
		       sizeof(x->model_text)) < 0) {
		snprintf(why, why_len, "it names no model");
		goto fail;
	}
	if (gp_model_spec_parse(x->model_text, &x->spec, err, sizeof(err)) < 0) {
		snprintf(why, why_len, "its model does not parse: %s", err);
		goto fail;
	}
	if (gp_sched_config(x->sched)->batch_size != x->job.batch_size) {
		snprintf(why, why_len, "its progress counts batches of %u, the "
			 "job %u", gp_sched_config(x->sched)->batch_size,
			 x->job.batch_size);
		goto fail;
	}
	r = check_tensors(x, why, why_len);
	if (r < 0)
		goto fail;
	gp_ssp_destroy(ssp);
	return 0;
fail:
	gp_ssp_destroy(ssp);
	loaded_finish(x);
	return r;
}

/* The seqs of a job's checkpoints, "3, 4, 5", for messages. */
static void list_seqs(const struct gp_ledger_checkpoint_info *cks, size_t n,
		      char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = n; i-- > 0 && used < len;) {
		int w = snprintf(buf + used, len - used, "%s%" PRId64,
				 used ? ", " : "", cks[i].seq);

		if (w < 0)
			break;
		used += (size_t)w;
	}
	if (!n)
		snprintf(buf, len, "none");
}

/* Picks and checks the checkpoint req names, or the newest that passes. */
static int pick(struct gp_ledger *l, const struct gp_ledger_job *job,
		int64_t want, struct loaded *x)
{
	struct gp_ledger_checkpoint_info *cks = NULL;
	char why[GP_EXPORT_ERR_MAX + 64], seqs[256];
	size_t n = 0;
	int r;

	r = gp_ledger_checkpoint_list(l, job->id, &cks, &n);
	if (r < 0) {
		gp_error("%s", gp_ledger_error(l));
		return r;
	}
	list_seqs(cks, n, seqs, sizeof(seqs));
	if (want) {
		bool found = false;

		for (size_t i = 0; i < n; i++)
			found |= cks[i].seq == want;
		if (!found) {
			gp_error("job %" PRId64 " has no checkpoint %" PRId64
				 " (it keeps: %s)", job->id, want, seqs);
			r = -ENOENT;
			goto out;
		}
		r = load_checked(l, job, want, x, why, sizeof(why));
		if (r < 0)
			gp_error("checkpoint %" PRId64 " of job %" PRId64
				 " cannot be exported: %s (the job keeps: %s; "
				 "without --checkpoint the newest intact one "
				 "is taken)", want, job->id, why, seqs);
		goto out;
	}
	r = -ENOENT;
	for (size_t i = 0; i < n; i++) {
		r = load_checked(l, job, cks[i].seq, x, why, sizeof(why));
		if (r >= 0)
			break;
		if (r == -ENOMEM)
			goto out;
		gp_warn("checkpoint %" PRId64 " of job %" PRId64 " skipped: %s",
			cks[i].seq, job->id, why);
	}
	if (r < 0) {
		if (n)
			gp_error("job %" PRId64 " has no intact checkpoint (of %zu)",
				 job->id, n);
		else
			gp_error("job %" PRId64 " has no checkpoint yet", job->id);
		r = n ? -EBADMSG : -ENOENT;
	}
out:
	free(cks);
	return r;
}

/* Metadata strings, formatted into one struct that outlives the write. */
struct meta {
	struct gp_export_meta e[32];
	size_t n;
	char vals[24][64];
	size_t n_vals;
	char description[GP_MODEL_DESC_MAX];
};

static void meta_add(struct meta *m, const char *key, const char *value)
{
	if (m->n < sizeof(m->e) / sizeof(m->e[0]))
		m->e[m->n++] = (struct gp_export_meta){ key, value };
}

static void meta_addf(struct meta *m, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void meta_addf(struct meta *m, const char *key, const char *fmt, ...)
{
	va_list ap;
	char *v;

	if (m->n_vals == sizeof(m->vals) / sizeof(m->vals[0]))
		return;
	v = m->vals[m->n_vals++];
	va_start(ap, fmt);
	vsnprintf(v, sizeof(m->vals[0]), fmt, ap);
	va_end(ap);
	meta_add(m, key, v);
}

static void iso_time(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (gmtime_r(&t, &tm))
		strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	else
		snprintf(buf, len, "-");
}

/* The job facts a reader of the file may want (docs/operations.md lists
 * the keys). The test accuracy is the ledger's evaluation of exactly
 * these parameters: given only when every epoch was applied, whose last
 * evaluation is of the parameters the job ended with. */
static void build_meta(struct gp_ledger *l, const struct gp_ledger_job *job,
		       const struct loaded *x, struct meta *m)
{
	struct gp_model_spec desc = x->spec;
	char when[32];

	desc.version = GP_MODEL_FORMAT_VERSION;
	if (gp_model_spec_format(&desc, m->description,
				 sizeof(m->description)) < 0)
		m->description[0] = '\0';
	meta_add(m, "format", "pt");
	meta_add(m, "gradpool.version", GP_VERSION);
	meta_add(m, "gradpool.model", m->description);
	meta_add(m, "gradpool.model_source", x->model_text);
	meta_add(m, "gradpool.job", x->job_text);
	meta_addf(m, "gradpool.job_id", "%" PRId64, job->id);
	meta_addf(m, "gradpool.checkpoint", "%" PRId64, x->ck.seq);
	iso_time(x->ck.created_at, when, sizeof(when));
	meta_addf(m, "gradpool.checkpoint_time", "%s", when);
	meta_addf(m, "gradpool.epochs", "%u", x->job.epochs);
	meta_addf(m, "gradpool.epochs_completed", "%u",
		  gp_sched_epoch(x->sched));
	meta_addf(m, "gradpool.minibatches_in_epoch", "%u",
		  gp_sched_applied_in_epoch(x->sched));
	meta_addf(m, "gradpool.updates_applied", "%" PRIu64,
		  gp_params_updates(x->params));
	meta_addf(m, "gradpool.data_set", "%s", x->job.data_set);
	if (gp_sched_done(x->sched)) {
		struct gp_ledger_eval *ev = NULL;
		size_t n = 0;

		if (gp_ledger_eval_list(l, job->id, &ev, &n) >= 0) {
			for (size_t i = 0; i < n; i++) {
				if (ev[i].epoch + 1 != (int64_t)x->job.epochs)
					continue;
				meta_addf(m, "gradpool.test_accuracy", "%.6f",
					  ev[i].test_accuracy);
				meta_addf(m, "gradpool.test_loss", "%.6f",
					  ev[i].test_loss);
			}
			free(ev);
		}
	}
}

/* The AdamW state after the n parameter tensors: "optimizer.exp_avg.NAME"
 * and "optimizer.exp_avg_sq.NAME" of each (torch.optim.AdamW's state
 * names, the parameter's shape), and the step and hyper-parameters in the
 * metadata. Returns 0, or -ENOENT (logged) when the job keeps no
 * optimizer state. */
static int add_optimizer_state(const struct loaded *x,
			       struct gp_export_tensor *t, size_t n,
			       struct meta *meta)
{
	const struct gp_optim_config *c = gp_optim_config(x->optim);

	if (!x->optim) {
		gp_error("checkpoint %" PRId64 " holds no optimizer state: "
			 "the job's optimizer (%s) keeps none; only optimizer "
			 "= adamw has some", x->ck.seq,
			 gp_job_optimizer_name(x->job.optimizer));
		return -ENOENT;
	}
	for (size_t i = 0; i < n; i++) {
		size_t off = (size_t)(t[i].data - gp_params_values(x->params));

		for (size_t k = 0; k < 2; k++) {
			struct gp_export_tensor *e = &t[n + 2 * i + k];

			*e = t[i];
			/* A parameter's name is under GP_MODEL_TENSOR_NAME_MAX
			 * bytes, so the longest fits in GP_EXPORT_NAME_MAX. */
			snprintf(e->name, sizeof(e->name), "optimizer.%s.%.*s",
				 k ? "exp_avg_sq" : "exp_avg",
				 GP_MODEL_TENSOR_NAME_MAX - 1, t[i].name);
			e->data = (k ? gp_optim_v(x->optim)
				     : gp_optim_m(x->optim)) + off;
		}
	}
	meta_add(meta, "gradpool.optimizer", "adamw");
	meta_addf(meta, "gradpool.adamw.step", "%" PRIu64,
		  gp_optim_steps(x->optim));
	/* Six digits: the f32 values as the job file gave them. */
	meta_addf(meta, "gradpool.adamw.betas", "%.6g,%.6g",
		  (double)c->beta1, (double)c->beta2);
	meta_addf(meta, "gradpool.adamw.eps", "%.6g", (double)c->eps);
	meta_addf(meta, "gradpool.adamw.weight_decay", "%.6g",
		  (double)c->weight_decay);
	return 0;
}

/* Writes the file: a temporary one beside out, flushed to the disk, then
 * renamed over out. Returns 0 or a negative errno (logged). */
static int write_file(const char *out, enum gp_export_format fmt,
		      const struct gp_export_model *model)
{
	char *dir_copy = strdup(out), *base_copy = strdup(out), *tmp = NULL;
	char err[GP_EXPORT_ERR_MAX] = "";
	const char *dir, *base;
	struct stat sb;
	FILE *f = NULL;
	int fd = -1, r;

	if (!dir_copy || !base_copy) {
		r = -ENOMEM;
		goto out;
	}
	dir = dirname(dir_copy);
	base = basename(base_copy);
	if (stat(out, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		r = -EISDIR;
		gp_error("%s: is a folder; give the file to write", out);
		goto out;
	}
	if (asprintf(&tmp, "%s/.%s.XXXXXX", dir, base) < 0) {
		tmp = NULL;
		r = -ENOMEM;
		goto out;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		gp_error("cannot write %s: %s", out, strerror(-r));
		free(tmp);
		tmp = NULL;
		goto out;
	}
	f = fdopen(fd, "wb");
	if (!f) {
		r = -errno;
		gp_error("cannot write %s: %s", out, strerror(-r));
		goto out;
	}
	fd = -1;
	errno = 0;
	r = fmt == GP_EXPORT_ONNX ? gp_export_onnx(model, f, err, sizeof(err))
				  : gp_export_safetensors(model, f);
	if (r >= 0 && (fflush(f) != 0 || fsync(fileno(f)) != 0))
		r = -EIO;
	if (r == -EIO) {
		r = errno ? -errno : -EIO;
		gp_error("cannot write %s: %s", out, strerror(-r));
		goto out;
	}
	if (r < 0) {
		gp_error("cannot write %s: %s", out, err[0] ? err : strerror(-r));
		goto out;
	}
	r = fclose(f) == 0 ? 0 : -errno;
	f = NULL;
	if (r == 0 && rename(tmp, out) < 0)
		r = -errno;
	if (r < 0) {
		gp_error("cannot write %s: %s", out, strerror(-r));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	/* The rename itself, on the disk. */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0)
		fsync(fd);
out:
	if (f)
		fclose(f);
	if (fd >= 0)
		close(fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	free(dir_copy);
	free(base_copy);
	return r;
}

static int parse_format(const struct gp_export_request *req,
			enum gp_export_format *ret)
{
	const char *f = req->format;

	if (!f) {
		size_t len = strlen(req->out);

		if (len > 12 && strcmp(req->out + len - 12, ".safetensors") == 0)
			f = "safetensors";
		else if (len > 5 && strcmp(req->out + len - 5, ".onnx") == 0)
			f = "onnx";
		else {
			gp_error("export: give --format safetensors or --format "
				 "onnx (%s does not end in .safetensors or .onnx)",
				 req->out);
			return -EINVAL;
		}
	}
	if (strcmp(f, "safetensors") == 0) {
		*ret = GP_EXPORT_SAFETENSORS;
	} else if (strcmp(f, "onnx") == 0) {
		if (!gp_export_have_onnx()) {
			gp_error("export: this build has no ONNX support "
				 "(protobuf-c and onnx.proto were missing when "
				 "it was built)");
			return -ENOTSUP;
		}
		*ret = GP_EXPORT_ONNX;
	} else {
		gp_error("export: unknown format '%s' (safetensors or onnx)", f);
		return -EINVAL;
	}
	return 0;
}

int gp_export_command(const char *state_dir,
		      const struct gp_export_request *req)
{
	struct gp_coord_state st;
	struct gp_ledger_job job = { 0 };
	/* The parameters, then with optimizer_state their exp_avg and
	 * exp_avg_sq. */
	struct gp_export_tensor tensors[6 * GP_MODEL_MAX_NODES];
	struct gp_export_model model = { 0 };
	struct loaded x = { 0 };
	struct meta *meta = NULL;
	enum gp_export_format fmt;
	bool opened = false;
	size_t n = 0;
	int r;

	if (!req->out || !req->out[0]) {
		gp_error("export: give the file to write (export [--checkpoint "
			 "N] --format safetensors|onnx OUT)");
		return -EINVAL;
	}
	r = parse_format(req, &fmt);
	if (r < 0)
		return r;
	r = gp_coord_state_open(&st, state_dir,
				 GP_LEDGER_READONLY | GP_LEDGER_CHECK);
	if (r < 0)
		return r;
	opened = true;
	r = gp_ledger_job_get(st.ledger, req->job_id, &job);
	if (r == -ENOENT) {
		if (req->job_id)
			gp_error("%s: no job %" PRId64, st.ledger_path,
				 req->job_id);
		else
			gp_error("%s: no job yet", st.ledger_path);
		goto out;
	}
	if (r < 0) {
		gp_error("%s: %s", st.ledger_path, gp_ledger_error(st.ledger));
		goto out;
	}
	r = pick(st.ledger, &job, req->checkpoint, &x);
	if (r < 0)
		goto out;
	meta = calloc(1, sizeof(*meta));
	if (!meta) {
		r = -ENOMEM;
		goto out;
	}
	build_meta(st.ledger, &job, &x, meta);
	gp_export_layout(&x.spec, tensors, &n);
	for (size_t i = 0; i < n; i++) {
		int k = gp_params_find(x.params, tensors[i].name);
		struct gp_tensor_shape sh;
		size_t off;

		if (k < 0 || gp_params_tensor(x.params, (size_t)k, &sh, &off) < 0 ||
		    (size_t)sh.rows * sh.cols != tensors[i].count) {
			gp_error("checkpoint %" PRId64 ": tensor %s does not fit "
				 "the model", x.ck.seq, tensors[i].name);
			r = -EBADMSG;
			goto out;
		}
		tensors[i].data = gp_params_values(x.params) + off;
	}
	if (req->optimizer_state) {
		r = add_optimizer_state(&x, tensors, n, meta);
		if (r < 0)
			goto out;
		model.n_extra = 2 * n;
	}
	model.spec = &x.spec;
	model.tensors = tensors;
	model.n_tensors = n;
	model.meta = meta->e;
	model.n_meta = meta->n;
	r = write_file(req->out, fmt, &model);
	if (r < 0)
		goto out;
	printf("exported checkpoint %" PRId64 " of job %" PRId64
	       " (epoch %u of %u, %" PRIu64 " updates, %zu parameters in %zu "
	       "tensors) to %s (%s)\n",
	       x.ck.seq, job.id, gp_sched_epoch(x.sched), x.job.epochs,
	       gp_params_updates(x.params), gp_params_size(x.params), n,
	       req->out, fmt == GP_EXPORT_ONNX ? "onnx" : "safetensors");
out:
	free(meta);
	loaded_finish(&x);
	gp_ledger_job_finish(&job);
	if (opened)
		gp_coord_state_close(&st);
	return r;
}

int gp_export_load(const char *state_dir, int64_t job_id, int64_t checkpoint,
		   struct gp_model_spec *ret_spec, struct gp_params **ret_params,
		   int64_t *ret_seq)
{
	struct gp_coord_state st;
	struct gp_ledger_job job = { 0 };
	struct loaded x = { 0 };
	int r;

	if (!state_dir || !ret_spec || !ret_params)
		return -EINVAL;
	r = gp_coord_state_open(&st, state_dir,
				 GP_LEDGER_READONLY | GP_LEDGER_CHECK);
	if (r < 0)
		return r;
	r = gp_ledger_job_get(st.ledger, job_id, &job);
	if (r == -ENOENT) {
		if (job_id)
			gp_error("%s: no job %" PRId64, st.ledger_path, job_id);
		else
			gp_error("%s: no job yet", st.ledger_path);
		goto out;
	}
	if (r < 0) {
		gp_error("%s: %s", st.ledger_path, gp_ledger_error(st.ledger));
		goto out;
	}
	r = pick(st.ledger, &job, checkpoint, &x);
	if (r < 0)
		goto out;
	*ret_spec = x.spec;
	*ret_params = x.params;
	if (ret_seq)
		*ret_seq = x.ck.seq;
	x.params = NULL;
out:
	loaded_finish(&x);
	gp_ledger_job_finish(&job);
	gp_coord_state_close(&st);
	return r;
}
