#include "web.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "httpd.h"
#include "log.h"
#include "util.h"

/* Days shown in the charts, the latest last. */
#define CHART_DAYS 30
#define CHART_W 720
#define CHART_H 200

struct gp_web {
	struct gp_httpd *httpd;
	struct gp_stats *stats;
	gp_web_state_cb *state;
	void *data;
};

#define MIB (1024.0 * 1024.0)

/* A traffic cell in MiB; a few bytes show as "< 0.1", not as a 0.0 that
 * reads as nothing. */
static void put_mib(struct gp_html *b, int64_t bytes)
{
	double v = (double)bytes / MIB;

	if (bytes > 0 && v < 0.05)
		gp_html_put(b, "<td class=\"num\" data-value=\"%" PRId64 "\">&lt; 0.1</td>",
		    bytes);
	else
		gp_html_put(b, "<td class=\"num\" data-value=\"%" PRId64 "\">%.1f</td>",
		    bytes, v);
}

/* The cells of one row: raw values in data-value (what tests and scripts
 * read), human forms in the text. MiB, like the CLI. */
static void put_row_cells(struct gp_html *b, const struct gp_stats_row *r)
{
	char t[GP_STATS_HUMAN_MAX];

	gp_html_put(b, "<td class=\"num\" data-value=\"%" PRId64 "\">%" PRId64 "</td>"
	       "<td class=\"num\" data-value=\"%" PRId64 "\">%" PRId64 "</td>"
	       "<td class=\"num\" data-value=\"%.3f\">%.1f</td>",
	    r->samples, r->samples, r->minibatches, r->minibatches, r->gflop,
	    r->gflop);
	gp_html_put(b, "<td class=\"num\" data-value=\"%.1f\">%s</td>",
	    r->compute_seconds,
	    gp_stats_human_duration(r->compute_seconds, t, sizeof(t)));
	put_mib(b, r->bytes_up);
	put_mib(b, r->bytes_down);
}

static const char row_head[] =
	"<th>samples</th><th>minibatches</th><th>GFLOP</th>"
	"<th>compute time</th><th>MiB up</th><th>MiB down</th>";

static bool row_empty(const struct gp_stats_row *r)
{
	return !r->samples && !r->minibatches && !(r->gflop > 0) &&
	       !(r->compute_seconds > 0) && !r->bytes_up && !r->bytes_down;
}

/* A bar chart of one value per day: the last CHART_DAYS days, zero-filled,
 * scaled to the largest. */
static void put_chart(struct gp_html *b, const char *id, const char *title,
		      const struct gp_stats_row *days, size_t n, bool gflop)
{
	double v[CHART_DAYS] = { 0 }, max = 0;
	char labels[CHART_DAYS][GP_STATS_DAY_LEN + 1];
	int64_t now = (int64_t)time(NULL);
	const double left = 60, bottom = 30, top = 20;
	const double plot_w = CHART_W - left - 10, plot_h = CHART_H - bottom - top;
	const double bw = plot_w / CHART_DAYS;
	char t[GP_STATS_HUMAN_MAX];

	for (int i = 0; i < CHART_DAYS; i++) {
		gp_stats_day(now - (int64_t)(CHART_DAYS - 1 - i) * 86400, labels[i]);
		for (size_t k = 0; k < n; k++)
			if (strcmp(days[k].day, labels[i]) == 0)
				v[i] += gflop ? days[k].gflop : (double)days[k].samples;
		if (v[i] > max)
			max = v[i];
	}
	gp_html_put(b, "<figure><figcaption>%s per day</figcaption>"
	       "<svg id=\"%s\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" "
	       "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" "
	       "aria-label=\"%s per day\" data-max=\"%.3f\">",
	    title, id, CHART_W, CHART_H, CHART_W, CHART_H, title, max);
	gp_html_put(b, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" "
	       "stroke=\"#888\"/>",
	    left, top + plot_h, left + plot_w, top + plot_h);
	/* The axis: 0, half and the largest value, in human units (a
	 * number such as 1.248e+06 does not fit the margin). */
	for (int k = 1; k <= 2 && max > 0; k++) {
		double y = top + plot_h - plot_h * k / 2.0;

		gp_html_put(b, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" "
		       "stroke=\"#ddd\"/>",
		    left, y, left + plot_w, y);
		gp_html_put(b, "<text class=\"tick\" x=\"%.0f\" y=\"%.1f\" "
		       "text-anchor=\"end\" font-size=\"11\">%s</text>",
		    left - 4, y + 4,
		    gp_stats_human_count(max * k / 2.0, t, sizeof(t)));
	}
	gp_html_put(b, "<text class=\"tick\" x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\" "
	       "font-size=\"11\">0</text>",
	    left - 4, top + plot_h);
	for (int i = 0; i < CHART_DAYS; i++) {
		double h = max > 0 ? v[i] / max * plot_h : 0;

		gp_html_put(b, "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
		       "height=\"%.1f\" fill=\"#3b7dd8\" data-day=\"%s\" "
		       "data-value=\"%.3f\"><title>%s: %s</title></rect>",
		    left + i * bw + 1, top + plot_h - h, bw - 2, h, labels[i], v[i],
		    labels[i], gp_stats_human_count(v[i], t, sizeof(t)));
		if (i % 7 == 1 || i == CHART_DAYS - 1)
			gp_html_put(b, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\" "
			       "font-size=\"10\">%s</text>",
			    left + i * bw + bw / 2, top + plot_h + 16, labels[i] + 5);
	}
	gp_html_put(b, "</svg></figure>");
}

/* A table of rows keyed by column col (0 day, 1 pool, 2 device). Rows of
 * nothing are left out; a key left empty (traffic of an older release,
 * or of joining and leaving, which use no device) gets a label that says
 * so. */
static void put_table(struct gp_html *b, const char *id, const char *first,
		      const struct gp_stats_row *rows, size_t n, int col)
{
	size_t shown = 0;

	gp_html_put(b, "<table id=\"%s\"><thead><tr><th>%s</th>%s</tr></thead><tbody>",
	    id, first, row_head);
	for (size_t i = 0; i < n; i++) {
		const char *key = col == 0 ? rows[i].day :
				  col == 1 ? rows[i].pool : rows[i].device;

		if (row_empty(&rows[i]))
			continue;
		gp_html_put(b, "<tr><td>");
		gp_html_text(b, key[0] ? key : col == 1 ? "(no pool)" :
				   "(no device: joining, leaving)");
		gp_html_put(b, "</td>");
		put_row_cells(b, &rows[i]);
		gp_html_put(b, "</tr>");
		shown++;
	}
	if (shown == 0)
		gp_html_put(b, "<tr><td colspan=\"7\">nothing yet</td></tr>");
	gp_html_put(b, "</tbody></table>");
}

/* The pool's job and the volunteer's credit, as the coordinator last told
 * (STATS): name, a progress bar, ETA, the latest test accuracy, credit
 * and public name. Nothing when no coordinator told (an older one). */
static void put_job(struct gp_html *b, const struct gp_agent_status *st)
{
	char eta[32], g[32];
	double pct = 100.0 * st->progress;

	if (!st->have_job) {
		if (st->public_name[0]) {
			gp_html_put(b, "<p>Public name: <span id=\"public-name\">");
			gp_html_text(b, st->public_name);
			gp_html_put(b, "</span></p>");
		}
		return;
	}
	gp_html_put(b, "<h2>The pool's job</h2><div id=\"job\" data-job-id=\"%" PRIu64
	       "\" data-progress=\"%.6f\" data-eta=\"%" PRId64 "\" "
	       "data-eval-epochs=\"%" PRIu32 "\" data-accuracy=\"%.6f\" "
	       "data-credit-gflop=\"%.3f\" data-credit-updates=\"%" PRIu64
	       "\">", st->job_id, st->progress, st->eta_s, st->eval_epochs,
	    st->accuracy, st->credit_gflop, st->credit_updates);
	gp_html_put(b, "<p><strong id=\"job-name\">");
	gp_html_text(b, st->job);
	gp_html_put(b, "</strong> (job %" PRIu64 ") at <span id=\"pool-endpoint\">",
	    st->job_id);
	gp_html_text(b, st->endpoint[0] ? st->endpoint : st->pool);
	gp_html_put(b, "</span>: <span id=\"job-state\">");
	gp_html_text(b, st->job_state);
	gp_html_put(b, "</span>");
	if (st->epochs)
		gp_html_put(b, ", epoch %" PRIu32 " of %" PRIu32, st->epoch, st->epochs);
	gp_html_put(b, "</p><svg id=\"job-bar\" width=\"400\" height=\"18\" "
	       "role=\"img\" aria-label=\"%.1f %% done\"><rect width=\"400\" "
	       "height=\"18\" fill=\"#e4e4f4\"/><rect class=\"done\" width=\"%.1f\" "
	       "height=\"18\" fill=\"#4a7bd0\"/></svg> <span id=\"job-progress\">"
	       "%.1f %%</span> done, ETA <span id=\"job-eta\">%s</span>",
	    pct, 4.0 * pct, pct,
	    strcmp(st->job_state, "done") == 0 ? "-" :
		    gp_agent_status_eta(st->eta_s, eta, sizeof(eta)));
	if (st->eval_epochs)
		gp_html_put(b, "<p>Test accuracy <strong id=\"job-accuracy\">%.2f %%"
		       "</strong> after epoch %" PRIu32 " (test loss %.4f)",
		    100.0 * st->accuracy, st->eval_epochs, st->test_loss);
	else
		gp_html_put(b, "<p>Test accuracy: <span id=\"job-accuracy\">not "
		       "evaluated yet</span>");
	gp_html_put(b, "; the pool: %" PRIu32 " agent(s), %.0f samples/s.</p>",
	    st->agents_live, st->pool_samples_per_s);
	gp_html_put(b, "<p>Your credit: <strong id=\"credit\">%s</strong> in this "
	       "pool (%" PRIu64 " updates, %" PRIu64 " samples in this job); ",
	    gp_agent_status_gflop(st->credit_gflop, g, sizeof(g)),
	    st->credit_updates, st->credit_samples);
	if (st->public_name[0]) {
		gp_html_put(b, "shown as <span id=\"public-name\">");
		gp_html_text(b, st->public_name);
		gp_html_put(b, "</span>.</p>");
	} else {
		gp_html_put(b, "shown as <span id=\"public-name\">anonymous</span> "
		       "(gradpool-agent name NAME).</p>");
	}
	gp_html_put(b, "</div>");
}

/* Every membership: the pool served, those standing by (an agent serves
 * one pool at a time) and those left, each with what its coordinator last
 * told of its job. Rows carry the fingerprint (data-pool) and the role
 * (data-role: served, standby, left) for scripts and tests. */
static void put_members(struct gp_html *b, const struct gp_agent_status *st,
			const struct gp_stats_membership *m, size_t n)
{
	int served = gp_agent_status_served(st, m, n);
	char t[32], name[GP_STATS_JOB_NAME_MAX + 80];

	gp_html_put(b, "<h2>Your pools</h2><table id=\"memberships\"><thead><tr>"
	       "<th>pool</th><th>key</th><th>joined</th><th>this agent</th>"
	       "<th>the pool's job, as last told</th></tr></thead><tbody>");
	for (size_t i = 0; i < n; i++) {
		const struct gp_stats_job *j = &m[i].job;
		const char *role = m[i].left_at ? "left" :
				   (int)i == served ? "served" : "standby";

		gp_html_put(b, "<tr data-pool=\"");
		gp_html_text(b, m[i].pool);
		gp_html_put(b, "\" data-role=\"%s\"><td>", role);
		gp_stats_pool_name(m[i].pool, m, n, name, sizeof(name));
		gp_html_text(b, name[0] ? name : m[i].pool);
		gp_html_put(b, "</td><td class=\"key\"><code>");
		gp_html_text(b, m[i].pool);
		gp_html_put(b, "</code></td><td>");
		gp_html_text(b, gp_format_time(m[i].joined_at, t, sizeof(t)));
		gp_html_put(b, "</td><td>");
		if (m[i].left_at) {
			gp_html_put(b, "left ");
			gp_html_text(b, gp_format_time(m[i].left_at, t, sizeof(t)));
		} else if ((int)i == served) {
			gp_html_put(b, "<strong>serves it</strong> (");
			gp_html_text(b, st->state);
			gp_html_put(b, ")");
		} else {
			gp_html_put(b, "standing by: an agent serves one pool at a "
			       "time");
		}
		gp_html_put(b, "</td><td>");
		if (!j->name[0]) {
			gp_html_put(b, "not told yet");
		} else {
			gp_html_text(b, j->name);
			gp_html_put(b, " (job %" PRId64 "), ", j->id);
			gp_html_text(b, j->state);
			if (j->epochs)
				gp_html_put(b, ", epoch %" PRIu32 " of %" PRIu32,
				    j->epoch, j->epochs);
			gp_html_put(b, ", <span class=\"member-progress\" "
			       "data-value=\"%.6f\">%.1f %%</span> done",
			    j->progress, 100.0 * j->progress);
			if (j->accuracy >= 0)
				gp_html_put(b, ", test accuracy %.2f %%",
				    100.0 * j->accuracy);
			gp_html_put(b, " <small>(");
			gp_html_text(b, gp_format_time(j->told_at, t, sizeof(t)));
			gp_html_put(b, ")</small>");
		}
		gp_html_put(b, "</td></tr>");
	}
	if (n == 0)
		gp_html_put(b, "<tr><td colspan=\"5\">none yet: gradpool-agent join "
		       "TOKEN</td></tr>");
	gp_html_put(b, "</tbody></table>");
}

int gp_web_render(const struct gp_stats_row *days, size_t n_days,
		  const struct gp_stats_row *pools, size_t n_pools,
		  const struct gp_stats_row *devices, size_t n_devices,
		  const struct gp_stats_row *total,
		  const struct gp_agent_status *st,
		  const struct gp_stats_membership *members, size_t n_members,
		  char **ret)
{
	struct gp_html b = { 0 };
	static const struct gp_stats_row zero;

	if (!total)
		total = &zero;
	gp_html_put(&b, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
		"<meta http-equiv=\"refresh\" content=\"10\">"
		"<title>gradpool agent</title><style>"
		"body{font-family:sans-serif;margin:2em;max-width:60em}"
		"table{border-collapse:collapse;margin:1em 0}"
		"td,th{border:1px solid #ccc;padding:.2em .6em}"
		".num{text-align:right}.key{white-space:nowrap}"
		".state{font-size:1.3em;padding:.4em;border-radius:.3em}"
		".state-connected{background:#d4f4d4}.state-paused{background:#fbe7b5}"
		".state-waiting{background:#e4e4f4}.state-stopped{background:#eee}"
		".state-starting{background:#e4f0f8}.state-finishing{background:#fbe7b5}"
		"</style></head><body><h1>gradpool agent</h1>");
	gp_html_put(&b, "<p id=\"state\" class=\"state state-");
	gp_html_text(&b, st->state);
	gp_html_put(&b, "\" data-state=\"");
	gp_html_text(&b, st->state);
	gp_html_put(&b, "\"><strong>");
	gp_html_text(&b, st->state);
	gp_html_put(&b, "</strong>: ");
	gp_html_text(&b, st->reason);
	gp_html_put(&b, "</p>");
	if (st->device[0]) {
		gp_html_put(&b, "<p>device: <span id=\"device\">");
		gp_html_text(&b, st->device);
		gp_html_put(&b, "</span>, <span id=\"run-minibatches\">%" PRIu64
			"</span> minibatches since the agent started</p>",
		    st->minibatches);
	}
	put_job(&b, st);
	put_members(&b, st, members, n_members);
	gp_html_put(&b, "<h2>Total</h2><table id=\"totals\"><thead><tr>%s</tr></thead>"
		"<tbody><tr>", row_head);
	put_row_cells(&b, total);
	gp_html_put(&b, "</tr></tbody></table>");
	{
		char t[GP_STATS_HUMAN_MAX];

		gp_html_put(&b, "<p id=\"total-samples\" data-value=\"%" PRId64 "\">%" PRId64
			" samples, %.1f GFLOP, <span id=\"total-compute\" "
			"data-value=\"%.1f\">%s</span> of compute in all</p>",
		    total->samples, total->samples, total->gflop,
		    total->compute_seconds,
		    gp_stats_human_duration(total->compute_seconds, t, sizeof(t)));
	}
	gp_html_put(&b, "<h2>Contribution over time</h2>");
	put_chart(&b, "chart-samples", "Samples", days, n_days, false);
	put_chart(&b, "chart-gflop", "GFLOP", days, n_days, true);
	gp_html_put(&b, "<h2>Per day</h2>");
	put_table(&b, "by-day", "day", days, n_days, 0);
	gp_html_put(&b, "<h2>Per pool</h2>");
	put_table(&b, "by-pool", "pool", pools, n_pools, 1);
	gp_html_put(&b, "<h2>Per device</h2>");
	put_table(&b, "by-device", "device", devices, n_devices, 2);
	gp_html_put(&b, "<p><small>From this machine's own database; no coordinator "
		"was asked.</small></p></body></html>\n");
	return gp_html_take(&b, ret);
}

/* A pool is its key's fingerprint in the database; the page names it as
 * the volunteer knows it (gp_stats_pool_name: the job its coordinator
 * told, the address it was joined at), with the fingerprint's first two
 * groups after ("7e38-6615"). */
static void name_pools(struct gp_stats_row *rows, size_t n,
		       const struct gp_stats_membership *mem, size_t nm)
{
	for (size_t i = 0; i < n; i++) {
		char name[GP_STATS_JOB_NAME_MAX + 80], key[10];

		gp_stats_pool_name(rows[i].pool, mem, nm, name, sizeof(name));
		snprintf(key, sizeof(key), "%.9s", rows[i].pool);
		if (name[0])
			snprintf(rows[i].pool, sizeof(rows[i].pool),
				 "%.*s (%s)", (int)sizeof(rows[i].pool) - 13,
				 name, key);
	}
}

static int render_page(struct gp_web *w, char **ret)
{
	struct gp_stats_row *days = NULL, *pools = NULL, *devs = NULL, *tot = NULL;
	struct gp_stats_membership *mem = NULL;
	size_t nd = 0, np = 0, nv = 0, nt = 0, nm = 0;
	struct gp_agent_status st;
	int r;

	w->state(&st, w->data);
	r = gp_stats_query(w->stats, GP_STATS_BY_DAY, NULL, &days, &nd);
	if (r >= 0)
		r = gp_stats_query(w->stats, GP_STATS_BY_POOL, NULL, &pools, &np);
	if (r >= 0)
		r = gp_stats_query(w->stats, GP_STATS_BY_DEVICE, NULL, &devs, &nv);
	if (r >= 0)
		r = gp_stats_query(w->stats, 0, NULL, &tot, &nt);
	if (r >= 0)
		r = gp_stats_membership_list(w->stats, &mem, &nm);
	if (r >= 0) {
		gp_agent_status_overlay(&st, mem, nm);
		name_pools(pools, np, mem, nm);
		r = gp_web_render(days, nd, pools, np, devs, nv, nt ? tot : NULL, &st,
				  mem, nm, ret);
	}
	free(mem);
	free(days);
	free(pools);
	free(devs);
	free(tot);
	return r;
}

static int render_json(struct gp_web *w, char **ret)
{
	struct gp_stats_row *rows = NULL, *tot = NULL;
	struct gp_stats_membership *pools = NULL;
	size_t n = 0, nt = 0, np = 0, len = 0;
	char *text = NULL;
	FILE *f;
	int r;

	r = gp_stats_query(w->stats, GP_STATS_BY_DAY, NULL, &rows, &n);
	if (r >= 0)
		r = gp_stats_query(w->stats, 0, NULL, &tot, &nt);
	if (r >= 0)
		r = gp_stats_membership_list(w->stats, &pools, &np);
	if (r >= 0) {
		f = open_memstream(&text, &len);
		if (!f) {
			r = -errno;
		} else {
			r = gp_stats_format_json(f, GP_STATS_BY_DAY, rows, n,
						 nt ? tot : NULL, pools, np);
			if (fclose(f) != 0 && r >= 0)
				r = -EIO;
		}
	}
	free(rows);
	free(tot);
	free(pools);
	if (r < 0) {
		free(text);
		return r;
	}
	*ret = text;
	return 0;
}

/* The page, its data as JSON ("/stats.json") and the state as the control
 * socket gives it ("/status"); a body is NULL only when out of memory. */
static unsigned on_get(void *data, const char *url, const char **ret_type,
		       char **ret_body)
{
	struct gp_web *w = data;
	int r;

	if (strcmp(url, "/") == 0) {
		r = render_page(w, ret_body);
		*ret_type = "text/html; charset=utf-8";
	} else if (strcmp(url, "/stats.json") == 0) {
		r = render_json(w, ret_body);
		*ret_type = "application/json";
	} else if (strcmp(url, "/status") == 0) {
		struct gp_agent_status st;
		char text[2048];

		w->state(&st, w->data);
		r = gp_agent_status_format(&st, text, sizeof(text));
		*ret_type = "text/plain; charset=utf-8";
		if (r >= 0) {
			*ret_body = strdup(text);
			return 200;
		}
	} else {
		*ret_body = strdup("not found\n");
		return 404;
	}
	if (r >= 0)
		return 200;
	gp_warn("web page: %s", gp_stats_error(w->stats));
	*ret_type = "text/plain";
	*ret_body = strdup("cannot read the statistics\n");
	return 500;
}

int gp_web_start(const char *listen, struct gp_stats *stats,
		 gp_web_state_cb *state, void *data, struct gp_web **ret)
{
	struct gp_web *w;
	int r;

	if (!listen || !stats || !state || !ret)
		return -EINVAL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->stats = stats;
	w->state = state;
	w->data = data;
	r = gp_httpd_start(listen, on_get, w, &w->httpd);
	if (r < 0) {
		free(w);
		return r;
	}
	*ret = w;
	return 0;
}

uint16_t gp_web_port(const struct gp_web *w)
{
	return gp_httpd_port(w->httpd);
}

void gp_web_stop(struct gp_web *w)
{
	if (!w)
		return;
	gp_httpd_stop(w->httpd);
	free(w);
}
