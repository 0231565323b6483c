/* The owner's job queue on the command line. A job is checked as serve
 * would read it (the job file, its model) before it is queued, so that a
 * typo is said now and not when its turn comes; the ledger keeps the job
 * text and the model's canonical text, so that a later edit of the files
 * does not change a queued job. */
#include "job-cmd.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "job.h"
#include "ledger.h"
#include "log.h"
#include "model.h"
#include "state.h"
#include "util.h"

#define JOB_FILE_MAX (1 << 20)

/* Reads the job file at path into *ret (malloc'd, NUL-terminated). */
static int slurp(const char *path, char **ret)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t n;

	if (!f)
		return -errno;
	buf = malloc(JOB_FILE_MAX + 1);
	if (!buf) {
		fclose(f);
		return -ENOMEM;
	}
	n = fread(buf, 1, JOB_FILE_MAX + 1, f);
	fclose(f);
	if (n > JOB_FILE_MAX) {
		free(buf);
		return -EFBIG;
	}
	buf[n] = '\0';
	*ret = buf;
	return 0;
}

static int job_add(struct gp_coord_state *st, const char *path, bool serving)
{
	char err[GP_DATA_ERR_MAX], model[GP_MODEL_DESC_MAX + 1];
	char *abs = NULL, *text = NULL;
	struct gp_job job;
	struct gp_model_spec spec;
	struct gp_ledger_job_row *rows = NULL;
	size_t n = 0, ahead = 0;
	int64_t id = 0, same = 0;
	int r;

	r = slurp(path, &text);
	if (r < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "%s", path);
		return r;
	}
	r = gp_job_parse(path, text, strlen(text), &job, err, sizeof(err));
	if (r >= 0)
		r = gp_job_load_model(&job, path, &spec, err, sizeof(err));
	if (r < 0) {
		gp_error("%s", err);
		goto out;
	}
	r = gp_model_spec_format(&spec, model, sizeof(model));
	if (r < 0) {
		gp_log_errno(GP_LOG_ERROR, r, "%s: cannot write the model's text",
			     path);
		goto out;
	}
	/* Only Fashion-MNIST's shape is known without reading the data;
	 * an npy or token data set is checked against the model when serve
	 * starts the job, with its files at hand (setup.c: a job that
	 * cannot start is marked failed). Checking those against
	 * Fashion-MNIST here refused the shipped gpt.ini. */
	if (!job.data_npy && strcmp(job.data_set, "tokens") != 0 &&
	    (spec.dims[0] != GP_DATA_PIXELS ||
	     spec.dims[spec.n_layers] != GP_DATA_CLASSES)) {
		gp_error("%s: the model takes %u inputs and gives %u classes; "
			 "Fashion-MNIST has %d inputs (1x28x28) and %d classes",
			 path, spec.dims[0], spec.dims[spec.n_layers],
			 GP_DATA_PIXELS, GP_DATA_CLASSES);
		r = -EINVAL;
		goto out;
	}
	/* The same job waiting or running already is a slip, not a wish to
	 * train it twice at once. */
	if (gp_ledger_job_find(st->ledger, text, model, &same) == 0) {
		struct gp_ledger_job j = { 0 };

		if (gp_ledger_job_get(st->ledger, same, &j) == 0 &&
		    (j.state == GP_JOB_QUEUED || j.state == GP_JOB_RUNNING ||
		     j.state == GP_JOB_CREATED)) {
			gp_error("%s: job %" PRId64 " is this job and is %s "
				 "already (gradpool-coordinator job list)", path,
				 same, gp_ledger_job_state_name(j.state));
			gp_ledger_job_finish(&j);
			r = -EEXIST;
			goto out;
		}
		gp_ledger_job_finish(&j);
	}
	abs = realpath(path, NULL);
	r = gp_ledger_job_queue(st->ledger, text, model, abs ? abs : path,
				gp_now_ms(), &id);
	if (r < 0) {
		gp_error("%s: %s", st->ledger_path, gp_ledger_error(st->ledger));
		goto out;
	}
	if (gp_ledger_job_list(st->ledger, &rows, &n) >= 0)
		for (size_t i = 0; i < n; i++)
			if (rows[i].id != id && (rows[i].state == GP_JOB_QUEUED ||
						 rows[i].state == GP_JOB_RUNNING))
				ahead++;
	printf("job %" PRId64 " queued: %s (model %.60s%s, %u epochs)\n", id,
	       abs ? abs : path, model, strlen(model) > 60 ? "..." : "",
	       job.epochs);
	if (!serving)
		printf("serve does not run: 'gradpool-coordinator serve' (or "
		       "systemctl start gradpool-coordinator) starts it\n");
	else if (ahead)
		printf("%zu job(s) ahead of it; serve starts it when they "
		       "have ended\n", ahead);
	else
		printf("serve starts it now\n");
	r = 0;
out:
	free(rows);
	free(abs);
	free(text);
	return r;
}

/* Share of the job's minibatches applied, or -1 when its size is not
 * known yet (it never ran). */
static double progress_of(const struct gp_ledger_job_row *j)
{
	double total = (double)j->epochs * (double)j->minibatches_per_epoch;

	if (j->state == GP_JOB_DONE)
		return 1.0;
	if (!(total > 0))
		return -1;
	return fmin(1.0, (double)j->updates_applied / total);
}

static int job_list(struct gp_coord_state *st, bool json, bool serving)
{
	struct gp_ledger_job_row *rows = NULL;
	size_t n = 0;
	int r;

	r = gp_ledger_job_list(st->ledger, &rows, &n);
	if (r < 0) {
		gp_error("%s: %s", st->ledger_path, gp_ledger_error(st->ledger));
		return r;
	}
	if (json)
		printf("{\"serve_running\":%s,\"jobs\":[", serving ? "true" : "false");
	else if (n == 0)
		printf("no jobs (gradpool-coordinator job add FILE)\n");
	else
		printf("%-5s %-10s %8s %9s %7s %-24s %s\n", "ID", "STATE",
		       "PROGRESS", "ACCURACY", "EPOCHS", "MODEL", "FILE");
	for (size_t i = 0; i < n; i++) {
		const struct gp_ledger_job_row *j = &rows[i];
		double p = progress_of(j);
		char pt[24] = "-", at[24] = "-", et[24] = "-";

		if (json) {
			printf("%s{\"id\":%" PRId64 ",\"state\":\"%s\",\"file\":",
			       i ? "," : "", j->id, gp_ledger_job_state_name(j->state));
			gp_json_string(stdout, j->source);
			printf(",\"model\":");
			gp_json_string(stdout, j->model);
			if (j->epochs > 0)
				printf(",\"epochs\":%" PRId64, j->epochs);
			else
				printf(",\"epochs\":null");
			if (p >= 0)
				printf(",\"progress\":%.4f", p);
			else
				printf(",\"progress\":null");
			printf(",\"updates_applied\":%" PRId64
			       ",\"samples_applied\":%" PRId64
			       ",\"evaluated_epochs\":%" PRId64, j->updates_applied,
			       j->samples_applied, j->eval_epochs);
			if (isfinite(j->test_accuracy))
				printf(",\"test_accuracy\":%.6f,\"test_loss\":%.6f",
				       j->test_accuracy, isfinite(j->test_loss) ?
							 j->test_loss : 0.0);
			else
				printf(",\"test_accuracy\":null,\"test_loss\":null");
			printf(",\"checkpoints\":%" PRId64 ",\"exportable\":%s"
			       ",\"created_at\":%" PRId64 ",\"updated_at\":%" PRId64
			       "}", j->checkpoints, j->checkpoints > 0 ? "true" : "false",
			       j->created_at, j->updated_at);
			continue;
		}
		if (p >= 0)
			snprintf(pt, sizeof(pt), "%.1f%%", 100.0 * p);
		if (isfinite(j->test_accuracy))
			snprintf(at, sizeof(at), "%.2f%%", 100.0 * j->test_accuracy);
		if (j->epochs > 0)
			snprintf(et, sizeof(et), "%" PRId64, j->epochs);
		printf("%-5" PRId64 " %-10s %8s %9s %7s %-24.24s %s\n", j->id,
		       gp_ledger_job_state_name(j->state), pt, at, et, j->model,
		       j->source[0] ? j->source : "-");
	}
	if (json)
		printf("]}\n");
	else if (n && !serving)
		printf("(serve does not run: queued jobs wait for it)\n");
	free(rows);
	return 0;
}

static int job_cancel(struct gp_coord_state *st, const char *arg, bool serving)
{
	enum gp_ledger_job_state was = GP_JOB_QUEUED;
	int64_t id;
	char *end;
	int r;

	errno = 0;
	id = arg ? strtoll(arg, &end, 10) : 0;
	if (!arg || errno || *end || id <= 0) {
		gp_error("job cancel: '%s' is not a job id (see 'job list')",
			 arg ? arg : "");
		return -EINVAL;
	}
	r = gp_ledger_job_cancel(st->ledger, id, gp_now_ms(), &was);
	if (r < 0) {
		gp_error("%s", gp_ledger_error(st->ledger));
		return r;
	}
	if (was == GP_JOB_RUNNING && serving)
		printf("job %" PRId64 " cancelled: serve stops it within a second, "
		       "keeps its last checkpoint (export --job %" PRId64 ") and "
		       "goes on with the queue\n", id, id);
	else if (was == GP_JOB_RUNNING || was == GP_JOB_CREATED)
		printf("job %" PRId64 " cancelled: serve will not resume it; its "
		       "last checkpoint stays (export --job %" PRId64 ")\n", id, id);
	else
		printf("job %" PRId64 " cancelled: taken off the queue\n", id);
	return 0;
}

int gp_job_command(const char *state_dir, const char *sub, const char *arg,
		   bool json)
{
	struct gp_coord_state st;
	bool serving;
	int r;

	if (!sub || (strcmp(sub, "add") != 0 && strcmp(sub, "list") != 0 &&
		     strcmp(sub, "cancel") != 0)) {
		gp_error("job: say add FILE, list [--json] or cancel ID");
		return -EINVAL;
	}
	if (strcmp(sub, "add") == 0 && !arg) {
		gp_error("job add: give the job file (job add FILE)");
		return -EINVAL;
	}
	r = gp_coord_state_serve_running(state_dir);
	serving = r > 0;
	/* list reads (its check then leaves the update log out, as status's
	 * does: it answers in well under a second on a large ledger); a
	 * ledger of an older release is brought to this schema first, as
	 * add and cancel always open it (WAL: serve may run meanwhile). */
	r = -EROFS;
	if (strcmp(sub, "list") == 0)
		r = gp_coord_state_open(&st, state_dir,
					 GP_LEDGER_READONLY | GP_LEDGER_CHECK |
					 GP_LEDGER_QUIET_OLD);
	if (r == -EROFS)
		r = gp_coord_state_open(&st, state_dir, 0);
	if (r < 0)
		return r;
	if (strcmp(sub, "add") == 0)
		r = job_add(&st, arg, serving);
	else if (strcmp(sub, "list") == 0)
		r = job_list(&st, json, serving);
	else
		r = job_cancel(&st, arg, serving);
	gp_coord_state_close(&st);
	return r;
}
