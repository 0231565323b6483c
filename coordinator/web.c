/* The pool owner's page. The view is read from the ledger and rendered by
 * plain functions (gp_coord_web_collect, gp_coord_web_render); the daemon
 * part only answers GET / on loopback. Raw figures ride in data-*
 * attributes beside the human text, for tests and scripts. */
#include "web.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "httpd.h"
#include "log.h"
#include "util.h"

#define CHART_W 720
#define CHART_H 220
/* Throughput bars at most: the job's span is cut into this many. */
#define RATE_BUCKETS 60

struct gp_coord_web {
	struct gp_httpd *httpd;
	char ledger_path[1024];
};

/* ---- the view --------------------------------------------------------- */

int gp_coord_web_collect(struct gp_ledger *l, int64_t now,
			 struct gp_coord_web_view *v)
{
	int64_t id = 0;
	int r;

	memset(v, 0, sizeof(*v));
	v->now = now;
	r = gp_ledger_job_list(l, &v->jobs, &v->n_jobs);
	if (r < 0)
		return r;
	for (size_t i = 0; i < v->n_jobs; i++)
		if (v->jobs[i].state == GP_JOB_RUNNING)
			id = v->jobs[i].id;
	r = gp_ledger_status(l, id, &v->status);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	v->have_job = true;
	id = v->status.job_id;
	r = gp_ledger_eval_list(l, id, &v->evals, &v->n_evals);
	if (r >= 0)
		r = gp_ledger_job_rate(l, id, RATE_BUCKETS, &v->rate, &v->n_rate,
				       &v->rate_bucket_ms);
	if (r >= 0)
		r = gp_ledger_agent_list(l, id, &v->agents, &v->n_agents);
	if (r >= 0)
		r = gp_ledger_job_damped(l, id, &v->damped, &v->n_damped);
	return r < 0 ? r : 0;
}

void gp_coord_web_view_finish(struct gp_coord_web_view *v)
{
	free(v->jobs);
	free(v->evals);
	free(v->rate);
	free(v->agents);
	free(v->damped);
	memset(v, 0, sizeof(*v));
}

/* ---- rendering -------------------------------------------------------- */

/* 1234567 -> "1.2M": axis labels that fit the margin. */
static const char *human(double v, char *buf, size_t size)
{
	static const char *const unit[] = { "", "k", "M", "G", "T" };
	int u = 0;

	while (fabs(v) >= 1000 && u < 4) {
		v /= 1000;
		u++;
	}
	if (u == 0 && v == floor(v))
		snprintf(buf, size, "%.0f", v);
	else
		snprintf(buf, size, "%.3g%s", v, unit[u]);
	return buf;
}

static const char *when(int64_t ms, char *buf, size_t size)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (ms <= 0 || !gmtime_r(&t, &tm))
		snprintf(buf, size, "-");
	else
		strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm);
	return buf;
}

static const char *duration(double s, char *buf, size_t size)
{
	if (s < 90)
		snprintf(buf, size, "%.0f s", s);
	else if (s < 5400)
		snprintf(buf, size, "%.0f min", s / 60);
	else
		snprintf(buf, size, "%.1f h", s / 3600);
	return buf;
}

/* The frame of a chart: the SVG element, the axes and the y ticks at 0,
 * half and max (max_text for the top one). */
struct chart {
	double left, top, w, h;
};

static struct chart chart_open(struct gp_html *b, const char *id,
			       const char *title, double max,
			       const char *unit)
{
	struct chart c = { 64, 16, CHART_W - 64 - 16, CHART_H - 16 - 40 };
	char t[32];

	gp_html_put(b, "<figure><figcaption>%s</figcaption>"
	       "<svg id=\"%s\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" "
	       "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" "
	       "aria-label=\"%s\" data-max=\"%.6g\">",
	    title, id, CHART_W, CHART_H, CHART_W, CHART_H, title, max);
	gp_html_put(b, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" "
	       "stroke=\"#888\"/>", c.left, c.top + c.h, c.left + c.w,
	    c.top + c.h);
	gp_html_put(b, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" "
	       "stroke=\"#888\"/>", c.left, c.top, c.left, c.top + c.h);
	for (int k = 0; k <= 2; k++) {
		double y = c.top + c.h - c.h * k / 2.0;
		double val = max * k / 2.0;

		if (k)
			gp_html_put(b, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" "
			       "y2=\"%.1f\" stroke=\"#e4e4e4\"/>", c.left, y,
			    c.left + c.w, y);
		if (strcmp(unit, "%") == 0)
			snprintf(t, sizeof(t), "%.0f %%", val);
		else
			human(val, t, sizeof(t));
		gp_html_put(b, "<text class=\"tick\" x=\"%.0f\" y=\"%.1f\" "
		       "text-anchor=\"end\" font-size=\"11\">%s</text>",
		    c.left - 4, y + 4, t);
	}
	return c;
}

/* A line through one point per evaluated epoch: value(e) of each. */
static void put_epoch_chart(struct gp_html *b, const struct gp_coord_web_view *v,
			    const char *id, const char *title, bool accuracy)
{
	double max = accuracy ? 100 : 0;
	int64_t epochs = v->status.epochs > 0 ? v->status.epochs : 1;
	struct chart c;

	for (size_t i = 0; i < v->n_evals; i++) {
		if (v->evals[i].epoch + 1 > epochs)
			epochs = v->evals[i].epoch + 1;
		if (!accuracy && isfinite(v->evals[i].test_loss) &&
		    v->evals[i].test_loss > max)
			max = v->evals[i].test_loss;
	}
	if (!(max > 0))
		max = 1;
	c = chart_open(b, id, title, max, accuracy ? "%" : "");
	if (v->n_evals == 0)
		gp_html_put(b, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"13\" "
		       "fill=\"#666\">no evaluation yet: one comes at the end "
		       "of each epoch</text>", c.left + 20, c.top + c.h / 2);
	gp_html_put(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
	       "points=\"", accuracy ? "#2a8a3a" : "#c0562a");
	for (size_t i = 0; i < v->n_evals; i++) {
		const struct gp_ledger_eval *e = &v->evals[i];
		double val = accuracy ? 100.0 * e->test_accuracy : e->test_loss;
		double x = c.left + c.w * (double)(e->epoch + 1) / (double)epochs;
		double y = c.top + c.h - c.h * (isfinite(val) ? val : 0) / max;

		gp_html_put(b, "%.1f,%.1f ", x, y);
	}
	gp_html_put(b, "\"/>");
	for (size_t i = 0; i < v->n_evals; i++) {
		const struct gp_ledger_eval *e = &v->evals[i];
		double raw = accuracy ? e->test_accuracy : e->test_loss;
		double val = accuracy ? 100.0 * raw : raw;
		double x = c.left + c.w * (double)(e->epoch + 1) / (double)epochs;
		double y = c.top + c.h - c.h * (isfinite(val) ? val : 0) / max;

		gp_html_put(b, "<circle class=\"point\" cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" "
		       "fill=\"%s\" data-epoch=\"%" PRId64 "\" data-value=\"%.6f\">"
		       "<title>epoch %" PRId64 ": %.4g%s</title></circle>",
		    x, y, accuracy ? "#2a8a3a" : "#c0562a", e->epoch + 1, raw,
		    e->epoch + 1, val, accuracy ? " %" : "");
	}
	/* Epoch ticks on x: at most about ten labels. */
	for (int64_t e = 1; e <= epochs; e++) {
		if (epochs > 10 && e % ((epochs + 9) / 10) != 0 && e != epochs)
			continue;
		gp_html_put(b, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\" "
		       "font-size=\"10\">%" PRId64 "</text>",
		    c.left + c.w * (double)e / (double)epochs, c.top + c.h + 14, e);
	}
	gp_html_put(b, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" "
	       "font-size=\"11\" fill=\"#444\">epoch</text></svg></figure>",
	    c.left + c.w / 2, c.top + c.h + 32);
}

/* Samples per second in each bucket of the job's span. */
static void put_rate_chart(struct gp_html *b, const struct gp_coord_web_view *v)
{
	double max = 0, bucket_s = (double)v->rate_bucket_ms / 1000.0;
	char t[64];
	struct chart c;

	for (size_t i = 0; i < v->n_rate; i++)
		if ((double)v->rate[i].samples / bucket_s > max)
			max = (double)v->rate[i].samples / bucket_s;
	c = chart_open(b, "chart-rate", "Throughput: samples/s applied",
		       max > 0 ? max : 1, "");
	if (v->n_rate == 0)
		gp_html_put(b, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"13\" "
		       "fill=\"#666\">nothing applied yet</text>", c.left + 20,
		    c.top + c.h / 2);
	for (size_t i = 0; i < v->n_rate; i++) {
		double rate = (double)v->rate[i].samples / bucket_s;
		double bw = c.w / (double)v->n_rate;
		double h = max > 0 ? c.h * rate / max : 0;

		gp_html_put(b, "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
		       "height=\"%.1f\" fill=\"#3b7dd8\" data-at=\"%" PRId64 "\" "
		       "data-samples=\"%" PRId64 "\" data-value=\"%.3f\">"
		       "<title>%s: %.0f samples/s</title></rect>",
		    c.left + bw * (double)i + (bw > 3 ? 0.5 : 0), c.top + c.h - h,
		    bw > 3 ? bw - 1 : bw, h, v->rate[i].at, v->rate[i].samples,
		    rate, when(v->rate[i].at, t, sizeof(t)), rate);
	}
	if (v->n_rate) {
		double span = bucket_s * (double)v->n_rate;
		char d[32];

		gp_html_put(b, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"10\">%s</text>"
		       "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\" "
		       "font-size=\"10\">+%s</text>",
		    c.left, c.top + c.h + 14, when(v->rate[0].at, t, sizeof(t)),
		    c.left + c.w, c.top + c.h + 14, duration(span, d, sizeof(d)));
	}
	gp_html_put(b, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\" "
	       "font-size=\"11\" fill=\"#444\">time (bars of %.0f s)</text>"
	       "</svg></figure>", c.left + c.w / 2, c.top + c.h + 32, bucket_s);
}

static const char *agent_state(const struct gp_ledger_agent *a, bool serving)
{
	if (a->revoked_at)
		return "revoked";
	if (a->left_at)
		return "left";
	return serving && a->connections > 0 ? "connected" : "member";
}

static int64_t damped_of(const struct gp_coord_web_view *v, int64_t id)
{
	for (size_t i = 0; i < v->n_damped; i++)
		if (v->damped[i].agent_id == id)
			return v->damped[i].damped;
	return 0;
}

/* Each agent of the job: its share of the applied samples as a bar, its
 * link and what the pool made of its updates (trust). */
static void put_agents(struct gp_html *b, const struct gp_coord_web_view *v)
{
	int64_t total = 0;
	size_t shown = 0;

	for (size_t i = 0; i < v->n_agents; i++)
		total += v->agents[i].samples_applied;
	gp_html_put(b, "<table id=\"agents\"><thead><tr><th>id</th><th>name</th>"
	       "<th>state</th><th>share of the work</th><th>samples</th>"
	       "<th>updates</th><th>link</th><th>trust: damped</th>"
	       "<th>refused</th><th>rejections</th></tr></thead><tbody>");
	for (size_t i = 0; i < v->n_agents; i++) {
		const struct gp_ledger_agent_row *a = &v->agents[i];
		double share = total > 0 ? (double)a->samples_applied /
						   (double)total : 0;
		int64_t damped = damped_of(v, a->agent.id);

		if (!a->updates_applied && !a->updates_rejected &&
		    !a->updates_discarded && !a->agent.connections)
			continue; /* not part of this job */
		shown++;
		gp_html_put(b, "<tr data-agent-id=\"%" PRId64 "\"><td class=\"num\">%"
		       PRId64 "</td><td>", a->agent.id, a->agent.id);
		gp_html_text(b, a->agent.name);
		gp_html_put(b, "</td><td>%s</td>", agent_state(&a->agent, v->serving));
		gp_html_put(b, "<td class=\"share\" data-value=\"%.6f\"><svg width=\"160\" "
		       "height=\"14\" xmlns=\"http://www.w3.org/2000/svg\">"
		       "<rect width=\"160\" height=\"14\" fill=\"#eee\"/>"
		       "<rect class=\"share-bar\" width=\"%.1f\" height=\"14\" "
		       "fill=\"#3b7dd8\"/></svg> %.1f %%</td>",
		    share, 160 * share, 100 * share);
		gp_html_put(b, "<td class=\"num\" data-value=\"%" PRId64 "\">%" PRId64
		       "</td><td class=\"num\" data-value=\"%" PRId64 "\">%" PRId64
		       "</td>", a->samples_applied, a->samples_applied,
		    a->updates_applied, a->updates_applied);
		if (a->link_at > 0)
			gp_html_put(b, "<td class=\"num\" data-value=\"%.3f\">%.1f Mbit/s"
			       "</td>", a->link_bps * 8 / 1e6,
			    a->link_bps * 8 / 1e6);
		else
			gp_html_put(b, "<td class=\"num\">-</td>");
		gp_html_put(b, "<td class=\"num\" data-value=\"%" PRId64 "\">%" PRId64
		       " (%.0f %%)</td><td class=\"num\" data-value=\"%" PRId64
		       "\">%" PRId64 "</td><td class=\"num\" data-value=\"%" PRId64
		       "\">%" PRId64 "</td></tr>",
		    damped, damped, a->updates_applied ? 100.0 * (double)damped /
				  (double)a->updates_applied : 0.0,
		    a->updates_rejected, a->updates_rejected, a->rejections,
		    a->rejections);
	}
	if (!shown)
		gp_html_put(b, "<tr><td colspan=\"10\">no agent has worked on this job "
		       "yet (invite volunteers: gradpool-coordinator invite)"
		       "</td></tr>");
	gp_html_put(b, "</tbody></table><p><small>Share: of the samples applied in "
	       "this job. Damped: applied updates that robust aggregation "
	       "shrank towards the pool's direction; refused: updates refused "
	       "(shape, NaN, norm); rejections: hostile or broken input "
	       "logged against the agent (docs/security.md).</small></p>");
}

static void put_queue(struct gp_html *b, const struct gp_coord_web_view *v)
{
	gp_html_put(b, "<table id=\"queue\"><thead><tr><th>id</th><th>state</th>"
	       "<th>progress</th><th>accuracy</th><th>epochs</th><th>model</th>"
	       "<th>file</th><th>since</th></tr></thead><tbody>");
	for (size_t i = 0; i < v->n_jobs; i++) {
		const struct gp_ledger_job_row *j = &v->jobs[i];
		double total = (double)j->epochs * (double)j->minibatches_per_epoch;
		double p = j->state == GP_JOB_DONE ? 1 :
			   total > 0 ? fmin(1, (double)j->updates_applied / total) :
				       -1;
		char t[64];

		gp_html_put(b, "<tr data-job-id=\"%" PRId64 "\" data-state=\"%s\" "
		       "class=\"job-%s\"><td class=\"num\">%" PRId64 "</td>"
		       "<td>%s</td>", j->id, gp_ledger_job_state_name(j->state),
		    gp_ledger_job_state_name(j->state), j->id,
		    gp_ledger_job_state_name(j->state));
		if (p >= 0)
			gp_html_put(b, "<td class=\"num\" data-value=\"%.6f\">%.1f %%</td>",
			    p, 100 * p);
		else
			gp_html_put(b, "<td class=\"num\">-</td>");
		if (isfinite(j->test_accuracy))
			gp_html_put(b, "<td class=\"num\" data-value=\"%.6f\">%.2f %%</td>",
			    j->test_accuracy, 100 * j->test_accuracy);
		else
			gp_html_put(b, "<td class=\"num\">-</td>");
		if (j->epochs > 0)
			gp_html_put(b, "<td class=\"num\">%" PRId64 "</td>", j->epochs);
		else
			gp_html_put(b, "<td class=\"num\">-</td>");
		gp_html_put(b, "<td class=\"model\">");
		gp_html_text(b, j->model);
		gp_html_put(b, "</td><td>");
		gp_html_text(b, j->source[0] ? j->source : "-");
		gp_html_put(b, "</td><td>%s</td></tr>", when(j->updated_at, t, sizeof(t)));
	}
	if (!v->n_jobs)
		gp_html_put(b, "<tr><td colspan=\"8\">no jobs yet "
		       "(gradpool-coordinator job add FILE)</td></tr>");
	gp_html_put(b, "</tbody></table>");
}

/* The headline: which job, how far, how fast, when it ends. */
static void put_summary(struct gp_html *b, const struct gp_coord_web_view *v)
{
	const struct gp_ledger_status *s = &v->status;
	double total = (double)s->epochs * (double)s->minibatches_per_epoch;
	double p = s->state == GP_JOB_DONE ? 1 :
		   total > 0 ? fmin(1, (double)s->updates_applied / total) : 0;
	char t[64];
	size_t recent = 0;
	double rate = 0, mb_rate = 0;

	/* The rate of the last minute of buckets, for the ETA. */
	for (size_t i = v->n_rate; i > 0 && recent * (size_t)v->rate_bucket_ms <
				     60000; i--, recent++) {
		rate += (double)v->rate[i - 1].samples;
		mb_rate += (double)v->rate[i - 1].updates;
	}
	if (recent) {
		rate /= (double)recent * (double)v->rate_bucket_ms / 1000.0;
		mb_rate /= (double)recent * (double)v->rate_bucket_ms / 1000.0;
	}
	gp_html_put(b, "<p id=\"job\" class=\"state state-%s\" data-job-id=\"%" PRId64
	       "\" data-state=\"%s\"><strong>job %" PRId64 ": %s</strong>",
	    gp_ledger_job_state_name(s->state), s->job_id,
	    gp_ledger_job_state_name(s->state), s->job_id,
	    gp_ledger_job_state_name(s->state));
	if (s->state != GP_JOB_RUNNING)
		gp_html_put(b, " &mdash; the pool has no job running now");
	gp_html_put(b, "</p><p>epoch <span id=\"epoch\">%" PRId64 "</span> of %" PRId64
	       ", <span id=\"progress\" data-value=\"%.6f\">%.1f %%</span> done "
	       "(<span id=\"applied\" data-value=\"%" PRId64 "\">%" PRId64
	       "</span> of %.0f minibatches, <span id=\"samples\" "
	       "data-value=\"%" PRId64 "\">%s</span> samples applied)",
	    s->epoch + 1, s->epochs, p, 100 * p, s->updates_applied,
	    s->updates_applied, total, s->samples_applied,
	    human((double)s->samples_applied, t, sizeof(t)));
	if (s->state == GP_JOB_RUNNING && mb_rate > 0 && total > 0 &&
	    v->now - (v->n_rate ? v->rate[v->n_rate - 1].at : 0) < 120000)
		gp_html_put(b, "; ETA <span id=\"eta\">%s</span> at %.0f samples/s",
		    duration(fmax(0, total - (double)s->updates_applied) / mb_rate,
			     t, sizeof(t)), rate);
	gp_html_put(b, ".</p>");
	if (s->have_eval)
		gp_html_put(b, "<p>latest evaluation: epoch %" PRId64 ", test accuracy "
		       "<span id=\"accuracy\" data-value=\"%.6f\">%.2f %%</span>, "
		       "test loss %.4f</p>", s->last_eval.epoch + 1,
		    s->last_eval.test_accuracy, 100 * s->last_eval.test_accuracy,
		    s->last_eval.test_loss);
	gp_html_put(b, "<p><span id=\"connected\" data-value=\"%" PRId64 "\">%" PRId64
	       "</span> of %" PRId64 " members connected",
	    s->connected_agents, s->connected_agents, s->live_agents);
	if (s->state == GP_JOB_RUNNING && s->connected_agents == 0)
		gp_html_put(b, " &mdash; <strong>no agent is connected: nothing is being "
		       "computed</strong>");
	gp_html_put(b, ".</p>");
}

int gp_coord_web_render(const struct gp_coord_web_view *v, char **ret)
{
	struct gp_html b = { 0 };
	char t[64];

	gp_html_put(&b, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
		"<meta http-equiv=\"refresh\" content=\"10\">"
		"<title>gradpool pool</title><style>"
		"body{font-family:sans-serif;margin:2em;max-width:62em}"
		"table{border-collapse:collapse;margin:1em 0}"
		"td,th{border:1px solid #ccc;padding:.2em .6em}"
		".num{text-align:right}.model{font-family:monospace;"
		"max-width:18em;overflow-wrap:anywhere}"
		".state{font-size:1.3em;padding:.4em;border-radius:.3em}"
		".state-running{background:#d4f4d4}.state-done{background:#e4e4f4}"
		".state-cancelled,.state-failed{background:#fbe7b5}"
		".job-running{background:#eefaee}"
		"figure{margin:1em 0}figcaption{font-weight:bold}"
		"</style></head><body><h1>gradpool pool</h1>");
	if (v->have_job) {
		put_summary(&b, v);
		gp_html_put(&b, "<h2>Accuracy and loss</h2>");
		put_epoch_chart(&b, v, "chart-accuracy",
				"Test accuracy per epoch", true);
		put_epoch_chart(&b, v, "chart-loss", "Test loss per epoch", false);
		gp_html_put(&b, "<h2>Throughput</h2>");
		put_rate_chart(&b, v);
		gp_html_put(&b, "<h2>Agents in job %" PRId64 "</h2>", v->status.job_id);
		put_agents(&b, v);
	} else {
		gp_html_put(&b, "<p id=\"job\" class=\"state\" data-state=\"none\">"
			"<strong>no job yet</strong>: queue one with "
			"<code>gradpool-coordinator job add FILE</code></p>");
	}
	gp_html_put(&b, "<h2>Jobs</h2>");
	put_queue(&b, v);
	gp_html_put(&b, "<p><small>From the pool's ledger at %s; the page reloads "
		"every 10 s.</small></p></body></html>\n",
	    when(v->now, t, sizeof(t)));
	return gp_html_take(&b, ret);
}

/* ---- the daemon ------------------------------------------------------- */

/* One page: its own read-only connection, so that nothing is shared with
 * serve's loop thread (WAL: a consistent snapshot while serve writes). */
static int render_page(struct gp_coord_web *w, char **ret)
{
	struct gp_ledger *l = NULL;
	struct gp_coord_web_view v;
	char err[512];
	int r;

	r = gp_ledger_open(w->ledger_path, GP_LEDGER_READONLY, &l, err,
			   sizeof(err));
	if (r < 0) {
		gp_warn("owner's page: %s", err);
		return r;
	}
	r = gp_coord_web_collect(l, gp_now_ms(), &v);
	v.serving = true;
	if (r >= 0)
		r = gp_coord_web_render(&v, ret);
	else
		gp_warn("owner's page: %s", gp_ledger_error(l));
	gp_coord_web_view_finish(&v);
	gp_ledger_close(l);
	return r;
}

static unsigned on_get(void *data, const char *url, const char **ret_type,
		       char **ret_body)
{
	struct gp_coord_web *w = data;

	if (strcmp(url, "/") != 0) {
		*ret_body = strdup("not found\n");
		return 404;
	}
	if (render_page(w, ret_body) >= 0) {
		*ret_type = "text/html; charset=utf-8";
		return 200;
	}
	*ret_body = strdup("cannot read the ledger\n");
	return 500;
}

int gp_coord_web_start(const char *listen, const char *ledger_path,
		       struct gp_coord_web **ret)
{
	struct gp_coord_web *w;
	int r;

	if (!ledger_path || !ret)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	snprintf(w->ledger_path, sizeof(w->ledger_path), "%s", ledger_path);
	r = gp_httpd_start(listen, on_get, w, &w->httpd);
	if (r < 0) {
		free(w);
		return r;
	}
	*ret = w;
	return 0;
}

uint16_t gp_coord_web_port(const struct gp_coord_web *w)
{
	return gp_httpd_port(w->httpd);
}

void gp_coord_web_stop(struct gp_coord_web *w)
{
	if (!w)
		return;
	gp_httpd_stop(w->httpd);
	free(w);
}
