#include "status.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct gp_agent_status latest = { .state = "stopped" };

void gp_agent_status_publish(const struct gp_agent_status *st)
{
	pthread_mutex_lock(&lock);
	latest = *st;
	pthread_mutex_unlock(&lock);
}

void gp_agent_status_get(struct gp_agent_status *ret)
{
	pthread_mutex_lock(&lock);
	*ret = latest;
	pthread_mutex_unlock(&lock);
}

/* Values are single lines: a newline in a reason (from a peer's BYE text,
 * say) would start a forged key. */
static void one_line(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src);
	for (char *p = dst; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
}

int gp_agent_status_format(const struct gp_agent_status *st, char *buf,
			   size_t len)
{
	char reason[sizeof(st->reason)], endpoint[sizeof(st->endpoint)];
	int n, m;

	one_line(reason, sizeof(reason), st->reason);
	one_line(endpoint, sizeof(endpoint), st->endpoint);
	n = snprintf(buf, len,
		     "state=%s\nreason=%s\npool=%s\nendpoint=%s\ndevice=%s\n"
		     "since=%" PRId64 "\nminibatches=%" PRIu64 "\npid=%" PRIu64
		     "\n",
		     st->state, reason, st->pool, endpoint, st->device, st->since,
		     st->minibatches, st->pid);
	if (n < 0 || (size_t)n >= len)
		return -ENOSPC;
	if (st->public_name[0]) {
		char name[sizeof(st->public_name)];

		one_line(name, sizeof(name), st->public_name);
		m = snprintf(buf + n, len - (size_t)n, "public_name=%s\n", name);
		if (m < 0 || (size_t)m >= len - (size_t)n)
			return -ENOSPC;
		n += m;
	}
	if (!st->have_job)
		return n;
	{
		char job[sizeof(st->job)];

		one_line(job, sizeof(job), st->job);
		m = snprintf(buf + n, len - (size_t)n,
			     "job=%s\njob_id=%" PRIu64 "\njob_state=%s\n"
			     "epoch=%" PRIu32 "\nepochs=%" PRIu32
			     "\nprogress=%.6f\neta_s=%" PRId64
			     "\neval_epochs=%" PRIu32 "\naccuracy=%.6f"
			     "\ntest_loss=%.6f\ntrain_loss=%.6f"
			     "\npool_samples_per_s=%.1f\nagents_live=%" PRIu32
			     "\ncredit_gflop=%.3f\ncredit_updates=%" PRIu64
			     "\ncredit_samples=%" PRIu64 "\nprogress_at=%" PRId64
			     "\n",
			     job, st->job_id, st->job_state, st->epoch,
			     st->epochs, st->progress, st->eta_s,
			     st->eval_epochs, st->accuracy, st->test_loss,
			     st->train_loss, st->pool_samples_per_s,
			     st->agents_live, st->credit_gflop,
			     st->credit_updates, st->credit_samples,
			     st->progress_at);
	}
	if (m < 0 || (size_t)m >= len - (size_t)n)
		return -ENOSPC;
	return n + m;
}

/* A finite number in [lo, hi], else lo: the text comes from a socket. */
static double number(const char *v, double lo, double hi)
{
	char *end;
	double d = strtod(v, &end);

	return end != v && isfinite(d) && d >= lo && d <= hi ? d : lo;
}

/* The job and credit keys (key k of kl bytes, value v). */
static void parse_progress(struct gp_agent_status *st, const char *k,
			   size_t kl, const char *v)
{
#define IS(name) (kl == sizeof(name) - 1 && memcmp(k, name, kl) == 0)
	if (IS("public_name"))
		snprintf(st->public_name, sizeof(st->public_name), "%.*s",
			 (int)sizeof(st->public_name) - 1, v);
	else if (IS("job")) {
		snprintf(st->job, sizeof(st->job), "%.*s",
			 (int)sizeof(st->job) - 1, v);
		st->have_job = true;
	} else if (IS("job_id"))
		st->job_id = strtoull(v, NULL, 10);
	else if (IS("job_state"))
		snprintf(st->job_state, sizeof(st->job_state), "%.*s",
			 (int)sizeof(st->job_state) - 1, v);
	else if (IS("epoch"))
		st->epoch = (uint32_t)number(v, 0, UINT32_MAX);
	else if (IS("epochs"))
		st->epochs = (uint32_t)number(v, 0, UINT32_MAX);
	else if (IS("progress"))
		st->progress = number(v, 0, 1);
	else if (IS("eta_s"))
		st->eta_s = (int64_t)number(v, -1, 1e12);
	else if (IS("eval_epochs"))
		st->eval_epochs = (uint32_t)number(v, 0, UINT32_MAX);
	else if (IS("accuracy"))
		st->accuracy = number(v, 0, 1);
	else if (IS("test_loss"))
		st->test_loss = number(v, 0, 1e30);
	else if (IS("train_loss"))
		st->train_loss = number(v, 0, 1e30);
	else if (IS("pool_samples_per_s"))
		st->pool_samples_per_s = number(v, 0, 1e30);
	else if (IS("agents_live"))
		st->agents_live = (uint32_t)number(v, 0, UINT32_MAX);
	else if (IS("credit_gflop"))
		st->credit_gflop = number(v, 0, 1e300);
	else if (IS("credit_updates"))
		st->credit_updates = strtoull(v, NULL, 10);
	else if (IS("credit_samples"))
		st->credit_samples = strtoull(v, NULL, 10);
	else if (IS("progress_at"))
		st->progress_at = strtoll(v, NULL, 10);
#undef IS
}

int gp_agent_status_parse(const char *text, struct gp_agent_status *ret)
{
	struct gp_agent_status st;
	const char *p = text;
	int have_state = 0;

	memset(&st, 0, sizeof(st));
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		size_t ll = nl ? (size_t)(nl - p) : strlen(p);
		const char *eq = memchr(p, '=', ll);

		if (eq) {
			size_t kl = (size_t)(eq - p), vl = ll - kl - 1;
			char v[GP_AGENT_STATUS_TEXT_MAX];

			if (vl >= sizeof(v))
				vl = sizeof(v) - 1;
			memcpy(v, eq + 1, vl);
			v[vl] = '\0';
#define KEY(k) (kl == sizeof(k) - 1 && memcmp(p, k, kl) == 0)
			if (KEY("state")) {
				snprintf(st.state, sizeof(st.state), "%.*s",
					 (int)sizeof(st.state) - 1, v);
				have_state = 1;
			} else if (KEY("reason"))
				snprintf(st.reason, sizeof(st.reason), "%s", v);
			else if (KEY("pool"))
				snprintf(st.pool, sizeof(st.pool), "%.*s",
					 (int)sizeof(st.pool) - 1, v);
			else if (KEY("endpoint"))
				snprintf(st.endpoint, sizeof(st.endpoint), "%s", v);
			else if (KEY("device"))
				snprintf(st.device, sizeof(st.device), "%.*s",
					 (int)sizeof(st.device) - 1, v);
			else if (KEY("since"))
				st.since = strtoll(v, NULL, 10);
			else if (KEY("minibatches"))
				st.minibatches = strtoull(v, NULL, 10);
			else if (KEY("pid"))
				st.pid = strtoull(v, NULL, 10);
			else
				parse_progress(&st, p, kl, v);
#undef KEY
		}
		p = nl ? nl + 1 : NULL;
	}
	if (!have_state || !st.state[0])
		return -EBADMSG;
	*ret = st;
	return 0;
}

const char *gp_agent_status_eta(int64_t s, char *buf, size_t size)
{
	if (s < 0)
		snprintf(buf, size, "unknown");
	else if (s >= 86400)
		snprintf(buf, size, "%" PRId64 "d %02" PRId64 "h", s / 86400,
			 s % 86400 / 3600);
	else if (s >= 3600)
		snprintf(buf, size, "%" PRId64 "h %02" PRId64 "m", s / 3600,
			 s % 3600 / 60);
	else if (s >= 60)
		snprintf(buf, size, "%" PRId64 "m %02" PRId64 "s", s / 60, s % 60);
	else
		snprintf(buf, size, "%" PRId64 "s", s);
	return buf;
}

const char *gp_agent_status_gflop(double gflop, char *buf, size_t size)
{
	static const char *const units[] = { "GFLOP", "TFLOP", "PFLOP",
					     "EFLOP" };
	size_t u = 0;

	while (gflop >= 1000 && u + 1 < sizeof(units) / sizeof(units[0])) {
		gflop /= 1000;
		u++;
	}
	snprintf(buf, size, "%.*f %s", gflop < 10 ? 2 : gflop < 100 ? 1 : 0,
		 gflop, units[u]);
	return buf;
}

static void json_key_str(FILE *out, const char *key, const char *v, bool first)
{
	fprintf(out, "%s\"%s\": ", first ? "" : ", ", key);
	gp_json_string(out, v);
}

int gp_agent_status_served(const struct gp_agent_status *st,
			   const struct gp_stats_membership *pools,
			   size_t n_pools)
{
	for (size_t i = 0; st->pool[0] && i < n_pools; i++)
		if (strcmp(pools[i].pool, st->pool) == 0)
			return (int)i;
	/* Not running, or between pools: the agent takes the first pool
	 * not left (gp_session_run). */
	for (size_t i = 0; !st->pool[0] && i < n_pools; i++)
		if (!pools[i].left_at)
			return (int)i;
	return -1;
}

void gp_agent_status_overlay(const struct gp_agent_status *st,
			     struct gp_stats_membership *pools,
			     size_t n_pools)
{
	struct gp_stats_job *j;

	if (!st->have_job || !st->pool[0])
		return;
	for (size_t i = 0; i < n_pools; i++) {
		if (strcmp(pools[i].pool, st->pool) != 0)
			continue;
		j = &pools[i].job;
		snprintf(j->name, sizeof(j->name), "%s", st->job);
		j->id = (int64_t)st->job_id;
		snprintf(j->state, sizeof(j->state), "%s", st->job_state);
		j->epoch = st->epoch;
		j->epochs = st->epochs;
		j->progress = st->progress;
		j->accuracy = st->eval_epochs ? st->accuracy : -1;
		j->told_at = st->progress_at;
	}
}

static void print_pools_json(FILE *out, const struct gp_agent_status *st,
			     const struct gp_stats_membership *pools,
			     size_t n_pools)
{
	int served = gp_agent_status_served(st, pools, n_pools);

	fputs(", \"pools\": ", out);
	if (!pools) {
		fputs("null", out);
		return;
	}
	fputc('[', out);
	for (size_t i = 0; i < n_pools; i++) {
		const struct gp_stats_membership *m = &pools[i];
		char name[GP_STATS_JOB_NAME_MAX + 80];

		fputs(i ? ", {" : "{", out);
		json_key_str(out, "pool", m->pool, true);
		json_key_str(out, "name",
			     gp_stats_pool_name(m->pool, pools, n_pools, name,
						sizeof(name)), false);
		json_key_str(out, "endpoints", m->endpoints, false);
		fprintf(out, ", \"agent_id\": %" PRId64 ", \"joined_at\": %"
			PRId64 ", \"left_at\": ", m->agent_id, m->joined_at);
		if (m->left_at)
			fprintf(out, "%" PRId64, m->left_at);
		else
			fputs("null", out);
		fprintf(out, ", \"served\": %s, \"job\": ",
			(int)i == served ? "true" : "false");
		gp_stats_job_json(out, &m->job);
		fputc('}', out);
	}
	fputc(']', out);
}

static void print_json(FILE *out, const struct gp_agent_status *st,
		       const struct gp_stats_membership *pools,
		       size_t n_pools)
{
	fputc('{', out);
	json_key_str(out, "state", st->state, true);
	json_key_str(out, "reason", st->reason, false);
	json_key_str(out, "pool", st->pool, false);
	json_key_str(out, "endpoint", st->endpoint, false);
	json_key_str(out, "device", st->device, false);
	fprintf(out, ", \"since\": %" PRId64 ", \"minibatches\": %" PRIu64
		", \"pid\": %" PRIu64 ", \"public_name\": ",
		st->since, st->minibatches, st->pid);
	if (st->public_name[0])
		gp_json_string(out, st->public_name);
	else
		fputs("null", out);
	print_pools_json(out, st, pools, n_pools);
	fputs(", \"job\": ", out);
	if (!st->have_job) {
		fputs("null}\n", out);
		return;
	}
	fputc('{', out);
	json_key_str(out, "name", st->job, true);
	fprintf(out, ", \"id\": %" PRIu64, st->job_id);
	json_key_str(out, "state", st->job_state, false);
	fprintf(out, ", \"epoch\": %" PRIu32 ", \"epochs\": %" PRIu32
		", \"progress\": %.6f, \"eta_s\": ",
		st->epoch, st->epochs, st->progress);
	if (st->eta_s >= 0)
		fprintf(out, "%" PRId64, st->eta_s);
	else
		fputs("null", out);
	fprintf(out, ", \"train_loss\": %.6f, \"last_eval\": ", st->train_loss);
	if (st->eval_epochs)
		fprintf(out, "{\"epoch\": %" PRIu32 ", \"test_accuracy\": %.6f"
			", \"test_loss\": %.6f}", st->eval_epochs, st->accuracy,
			st->test_loss);
	else
		fputs("null", out);
	fprintf(out, ", \"pool_samples_per_s\": %.1f, \"agents_live\": %" PRIu32
		", \"updated_at\": %" PRId64 "}, \"credit\": {\"gflop\": %.3f"
		", \"job_updates\": %" PRIu64 ", \"job_samples\": %" PRIu64
		"}}\n",
		st->pool_samples_per_s, st->agents_live, st->progress_at,
		st->credit_gflop, st->credit_updates, st->credit_samples);
}

/* One line per membership: its name, key and address, what the agent
 * does for it, and what its coordinator last told of its job. */
static void print_pools(FILE *out, const struct gp_agent_status *st,
			const struct gp_stats_membership *pools,
			size_t n_pools)
{
	int served = gp_agent_status_served(st, pools, n_pools);
	char t[32];

	if (!pools) {
		fprintf(out, "memberships: the agent's database cannot be read "
			"(run as root or as the agent's user)\n");
		return;
	}
	fprintf(out, "memberships: %zu\n", n_pools);
	for (size_t i = 0; i < n_pools; i++) {
		const struct gp_stats_membership *m = &pools[i];
		const struct gp_stats_job *j = &m->job;
		int ep = (int)strcspn(m->endpoints, ",");

		fprintf(out, "  %s %s", (int)i == served ? "*" : "-",
			j->name[0] ? j->name : "(no job told yet)");
		fprintf(out, " at %.*s (key %s), joined %s", ep,
			m->endpoints, m->pool,
			gp_format_time(m->joined_at, t, sizeof(t)));
		if (m->left_at)
			fprintf(out, ", left %s\n",
				gp_format_time(m->left_at, t, sizeof(t)));
		else if ((int)i == served)
			fprintf(out, ", %s\n", st->pool[0] ?
				"served now" : "served when the agent runs");
		else
			fprintf(out, ", standing by (an agent serves one pool "
				"at a time; gradpool-agent leave the one "
				"above to serve this one)\n");
		if (!j->name[0])
			continue;
		fprintf(out, "      job %" PRId64 ", %s", j->id, j->state);
		if (j->epochs)
			fprintf(out, ", epoch %" PRIu32 " of %" PRIu32,
				j->epoch, j->epochs);
		fprintf(out, ", %.1f %% done", 100.0 * j->progress);
		if (j->accuracy >= 0)
			fprintf(out, ", test accuracy %.2f %%",
				100.0 * j->accuracy);
		fprintf(out, " (as of %s)\n",
			gp_format_time(j->told_at, t, sizeof(t)));
	}
}

void gp_agent_status_print(FILE *out, const struct gp_agent_status *st,
			   const struct gp_stats_membership *pools_in,
			   size_t n_pools, bool json)
{
	struct gp_stats_membership *pools = NULL;
	char eta[32], g[32];

	/* The served pool's job as the running agent knows it now. */
	if (pools_in) {
		pools = malloc((n_pools ? n_pools : 1) * sizeof(*pools));
		if (!pools) {
			n_pools = 0;
		} else {
			memcpy(pools, pools_in, n_pools * sizeof(*pools));
			gp_agent_status_overlay(st, pools, n_pools);
		}
	}
	if (json) {
		print_json(out, st, pools, n_pools);
		free(pools);
		return;
	}
	fprintf(out, "%s: %s\n", st->state, st->reason);
	if (st->endpoint[0] || st->pool[0])
		fprintf(out, "  pool:        %s%s(key %s)\n", st->endpoint,
			st->endpoint[0] ? " " : "", st->pool);
	if (st->device[0])
		fprintf(out, "  device:      %s\n", st->device);
	if (st->pid)
		fprintf(out, "  minibatches: %" PRIu64 " since start (pid %" PRIu64
			")\n", st->minibatches, st->pid);
	if (st->have_job) {
		fprintf(out, "  job:         %s (job %" PRIu64 "), %s", st->job,
			st->job_id, st->job_state);
		if (st->epochs)
			fprintf(out, ", epoch %" PRIu32 " of %" PRIu32, st->epoch,
				st->epochs);
		fprintf(out, ", %.1f %% done, ETA %s\n", 100.0 * st->progress,
			strcmp(st->job_state, "done") == 0 ? "-" :
			gp_agent_status_eta(st->eta_s, eta, sizeof(eta)));
		if (st->eval_epochs)
			fprintf(out, "  accuracy:    %.2f %% on the test set after "
				"epoch %" PRIu32 " (test loss %.4f)\n",
				100.0 * st->accuracy, st->eval_epochs,
				st->test_loss);
		else
			fprintf(out, "  accuracy:    not evaluated yet\n");
		fprintf(out, "  the pool:    %" PRIu32 " agent(s), %.0f samples/s "
			"over the last minute\n", st->agents_live,
			st->pool_samples_per_s);
		fprintf(out, "  your credit: %s in this pool (%" PRIu64
			" updates, %" PRIu64 " samples in this job)\n",
			gp_agent_status_gflop(st->credit_gflop, g, sizeof(g)),
			st->credit_updates, st->credit_samples);
	}
	if (st->public_name[0])
		fprintf(out, "  public name: %s\n", st->public_name);
	else if (st->pid)
		fprintf(out, "  public name: none, credit is anonymous "
			"(gradpool-agent name NAME)\n");
	print_pools(out, st, pools, n_pools);
	free(pools);
}
