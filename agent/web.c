#include "web.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "util.h"

/* Days shown in the charts, the latest last. */
#define CHART_DAYS 30
#define CHART_W 720
#define CHART_H 200

struct gp_web {
	struct MHD_Daemon *daemon;
	struct gp_stats *stats;
	gp_web_state_cb *state;
	void *data;
	uint16_t port;
};

/* A growing string; on allocation failure it stays failed and is freed. */
struct buf {
	char *p;
	size_t len, cap;
	bool failed;
};

static void put(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void put(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->failed)
		return;
	for (;;) {
		size_t room = b->cap - b->len;

		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = true;
			return;
		}
		if (b->p && (size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap * 2 : 8192;
		while (cap < b->len + (size_t)n + 1)
			cap *= 2;
		char *np = realloc(b->p, cap);
		if (!np) {
			b->failed = true;
			return;
		}
		b->p = np;
		b->cap = cap;
	}
}

/* Text from the database or a peer, escaped for HTML. */
static void put_text(struct buf *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<':
			put(b, "&lt;");
			break;
		case '>':
			put(b, "&gt;");
			break;
		case '&':
			put(b, "&amp;");
			break;
		case '"':
			put(b, "&quot;");
			break;
		case '\'':
			put(b, "&#39;");
			break;
		default:
			put(b, "%c", *s);
		}
	}
}

#define MIB (1024.0 * 1024.0)

/* A traffic cell in MiB; a few bytes show as "< 0.1", not as a 0.0 that
 * reads as nothing. */
static void put_mib(struct buf *b, int64_t bytes)
{
	double v = (double)bytes / MIB;

	if (bytes > 0 && v < 0.05)
		put(b, "<td class=\"num\" data-value=\"%" PRId64 "\">&lt; 0.1</td>",
		    bytes);
	else
		put(b, "<td class=\"num\" data-value=\"%" PRId64 "\">%.1f</td>",
		    bytes, v);
}

/* The cells of one row: raw values in data-value (what tests and scripts
 * read), human forms in the text. MiB, like the CLI. */
static void put_row_cells(struct buf *b, const struct gp_stats_row *r)
{
	char t[GP_STATS_HUMAN_MAX];

	put(b, "<td class=\"num\" data-value=\"%" PRId64 "\">%" PRId64 "</td>"
	       "<td class=\"num\" data-value=\"%" PRId64 "\">%" PRId64 "</td>"
	       "<td class=\"num\" data-value=\"%.3f\">%.1f</td>",
	    r->samples, r->samples, r->minibatches, r->minibatches, r->gflop,
	    r->gflop);
	put(b, "<td class=\"num\" data-value=\"%.1f\">%s</td>",
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
static void put_chart(struct buf *b, const char *id, const char *title,
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
	put(b, "<figure><figcaption>%s per day</figcaption>"
	       "<svg id=\"%s\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" "
	       "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" role=\"img\" "
	       "aria-label=\"%s per day\" data-max=\"%.3f\">",
	    title, id, CHART_W, CHART_H, CHART_W, CHART_H, title, max);
	put(b, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" "
	       "stroke=\"#888\"/>",
	    left, top + plot_h, left + plot_w, top + plot_h);
	/* The axis: 0, half and the largest value, in human units (a
	 * number such as 1.248e+06 does not fit the margin). */
	for (int k = 1; k <= 2 && max > 0; k++) {
		double y = top + plot_h - plot_h * k / 2.0;

		put(b, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" "
		       "stroke=\"#ddd\"/>",
		    left, y, left + plot_w, y);
		put(b, "<text class=\"tick\" x=\"%.0f\" y=\"%.1f\" "
		       "text-anchor=\"end\" font-size=\"11\">%s</text>",
		    left - 4, y + 4,
		    gp_stats_human_count(max * k / 2.0, t, sizeof(t)));
	}
	put(b, "<text class=\"tick\" x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\" "
	       "font-size=\"11\">0</text>",
	    left - 4, top + plot_h);
	for (int i = 0; i < CHART_DAYS; i++) {
		double h = max > 0 ? v[i] / max * plot_h : 0;

		put(b, "<rect class=\"bar\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
		       "height=\"%.1f\" fill=\"#3b7dd8\" data-day=\"%s\" "
		       "data-value=\"%.3f\"><title>%s: %s</title></rect>",
		    left + i * bw + 1, top + plot_h - h, bw - 2, h, labels[i], v[i],
		    labels[i], gp_stats_human_count(v[i], t, sizeof(t)));
		if (i % 7 == 1 || i == CHART_DAYS - 1)
			put(b, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\" "
			       "font-size=\"10\">%s</text>",
			    left + i * bw + bw / 2, top + plot_h + 16, labels[i] + 5);
	}
	put(b, "</svg></figure>");
}

/* A table of rows keyed by column col (0 day, 1 pool, 2 device). Rows of
 * nothing are left out; a key left empty (traffic of an older release,
 * or of joining and leaving, which use no device) gets a label that says
 * so. */
static void put_table(struct buf *b, const char *id, const char *first,
		      const struct gp_stats_row *rows, size_t n, int col)
{
	size_t shown = 0;

	put(b, "<table id=\"%s\"><thead><tr><th>%s</th>%s</tr></thead><tbody>",
	    id, first, row_head);
	for (size_t i = 0; i < n; i++) {
		const char *key = col == 0 ? rows[i].day :
				  col == 1 ? rows[i].pool : rows[i].device;

		if (row_empty(&rows[i]))
			continue;
		put(b, "<tr><td>");
		put_text(b, key[0] ? key : col == 1 ? "(no pool)" :
				   "(no device: joining, leaving)");
		put(b, "</td>");
		put_row_cells(b, &rows[i]);
		put(b, "</tr>");
		shown++;
	}
	if (shown == 0)
		put(b, "<tr><td colspan=\"7\">nothing yet</td></tr>");
	put(b, "</tbody></table>");
}

/* The pool's job and the volunteer's credit, as the coordinator last told
 * (STATS): name, a progress bar, ETA, the latest test accuracy, credit
 * and public name. Nothing when no coordinator told (an older one). */
static void put_job(struct buf *b, const struct gp_agent_status *st)
{
	char eta[32], g[32];
	double pct = 100.0 * st->progress;

	if (!st->have_job) {
		if (st->public_name[0]) {
			put(b, "<p>Public name: <span id=\"public-name\">");
			put_text(b, st->public_name);
			put(b, "</span></p>");
		}
		return;
	}
	put(b, "<h2>The pool's job</h2><div id=\"job\" data-job-id=\"%" PRIu64
	       "\" data-progress=\"%.6f\" data-eta=\"%" PRId64 "\" "
	       "data-eval-epochs=\"%" PRIu32 "\" data-accuracy=\"%.6f\" "
	       "data-credit-gflop=\"%.3f\" data-credit-updates=\"%" PRIu64
	       "\">", st->job_id, st->progress, st->eta_s, st->eval_epochs,
	    st->accuracy, st->credit_gflop, st->credit_updates);
	put(b, "<p><strong id=\"job-name\">");
	put_text(b, st->job);
	put(b, "</strong> (job %" PRIu64 ") at <span id=\"pool-endpoint\">",
	    st->job_id);
	put_text(b, st->endpoint[0] ? st->endpoint : st->pool);
	put(b, "</span>: <span id=\"job-state\">");
	put_text(b, st->job_state);
	put(b, "</span>");
	if (st->epochs)
		put(b, ", epoch %" PRIu32 " of %" PRIu32, st->epoch, st->epochs);
	put(b, "</p><svg id=\"job-bar\" width=\"400\" height=\"18\" "
	       "role=\"img\" aria-label=\"%.1f %% done\"><rect width=\"400\" "
	       "height=\"18\" fill=\"#e4e4f4\"/><rect class=\"done\" width=\"%.1f\" "
	       "height=\"18\" fill=\"#4a7bd0\"/></svg> <span id=\"job-progress\">"
	       "%.1f %%</span> done, ETA <span id=\"job-eta\">%s</span>",
	    pct, 4.0 * pct, pct,
	    strcmp(st->job_state, "done") == 0 ? "-" :
		    gp_agent_status_eta(st->eta_s, eta, sizeof(eta)));
	if (st->eval_epochs)
		put(b, "<p>Test accuracy <strong id=\"job-accuracy\">%.2f %%"
		       "</strong> after epoch %" PRIu32 " (test loss %.4f)",
		    100.0 * st->accuracy, st->eval_epochs, st->test_loss);
	else
		put(b, "<p>Test accuracy: <span id=\"job-accuracy\">not "
		       "evaluated yet</span>");
	put(b, "; the pool: %" PRIu32 " agent(s), %.0f samples/s.</p>",
	    st->agents_live, st->pool_samples_per_s);
	put(b, "<p>Your credit: <strong id=\"credit\">%s</strong> in this "
	       "pool (%" PRIu64 " updates, %" PRIu64 " samples in this job); ",
	    gp_agent_status_gflop(st->credit_gflop, g, sizeof(g)),
	    st->credit_updates, st->credit_samples);
	if (st->public_name[0]) {
		put(b, "shown as <span id=\"public-name\">");
		put_text(b, st->public_name);
		put(b, "</span>.</p>");
	} else {
		put(b, "shown as <span id=\"public-name\">anonymous</span> "
		       "(gradpool-agent name NAME).</p>");
	}
	put(b, "</div>");
}

/* Every membership: the pool served, those standing by (an agent serves
 * one pool at a time) and those left, each with what its coordinator last
 * told of its job. Rows carry the fingerprint (data-pool) and the role
 * (data-role: served, standby, left) for scripts and tests. */
static void put_members(struct buf *b, const struct gp_agent_status *st,
			const struct gp_stats_membership *m, size_t n)
{
	int served = gp_agent_status_served(st, m, n);
	char t[32], name[GP_STATS_JOB_NAME_MAX + 80];

	put(b, "<h2>Your pools</h2><table id=\"memberships\"><thead><tr>"
	       "<th>pool</th><th>key</th><th>joined</th><th>this agent</th>"
	       "<th>the pool's job, as last told</th></tr></thead><tbody>");
	for (size_t i = 0; i < n; i++) {
		const struct gp_stats_job *j = &m[i].job;
		const char *role = m[i].left_at ? "left" :
				   (int)i == served ? "served" : "standby";

		put(b, "<tr data-pool=\"");
		put_text(b, m[i].pool);
		put(b, "\" data-role=\"%s\"><td>", role);
		gp_stats_pool_name(m[i].pool, m, n, name, sizeof(name));
		put_text(b, name[0] ? name : m[i].pool);
		put(b, "</td><td class=\"key\"><code>");
		put_text(b, m[i].pool);
		put(b, "</code></td><td>");
		put_text(b, gp_format_time(m[i].joined_at, t, sizeof(t)));
		put(b, "</td><td>");
		if (m[i].left_at) {
			put(b, "left ");
			put_text(b, gp_format_time(m[i].left_at, t, sizeof(t)));
		} else if ((int)i == served) {
			put(b, "<strong>serves it</strong> (");
			put_text(b, st->state);
			put(b, ")");
		} else {
			put(b, "standing by: an agent serves one pool at a "
			       "time");
		}
		put(b, "</td><td>");
		if (!j->name[0]) {
			put(b, "not told yet");
		} else {
			put_text(b, j->name);
			put(b, " (job %" PRId64 "), ", j->id);
			put_text(b, j->state);
			if (j->epochs)
				put(b, ", epoch %" PRIu32 " of %" PRIu32,
				    j->epoch, j->epochs);
			put(b, ", <span class=\"member-progress\" "
			       "data-value=\"%.6f\">%.1f %%</span> done",
			    j->progress, 100.0 * j->progress);
			if (j->accuracy >= 0)
				put(b, ", test accuracy %.2f %%",
				    100.0 * j->accuracy);
			put(b, " <small>(");
			put_text(b, gp_format_time(j->told_at, t, sizeof(t)));
			put(b, ")</small>");
		}
		put(b, "</td></tr>");
	}
	if (n == 0)
		put(b, "<tr><td colspan=\"5\">none yet: gradpool-agent join "
		       "TOKEN</td></tr>");
	put(b, "</tbody></table>");
}

int gp_web_render(const struct gp_stats_row *days, size_t n_days,
		  const struct gp_stats_row *pools, size_t n_pools,
		  const struct gp_stats_row *devices, size_t n_devices,
		  const struct gp_stats_row *total,
		  const struct gp_agent_status *st,
		  const struct gp_stats_membership *members, size_t n_members,
		  char **ret)
{
	struct buf b = { 0 };
	static const struct gp_stats_row zero;

	if (!total)
		total = &zero;
	put(&b, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
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
	put(&b, "<p id=\"state\" class=\"state state-");
	put_text(&b, st->state);
	put(&b, "\" data-state=\"");
	put_text(&b, st->state);
	put(&b, "\"><strong>");
	put_text(&b, st->state);
	put(&b, "</strong>: ");
	put_text(&b, st->reason);
	put(&b, "</p>");
	if (st->device[0]) {
		put(&b, "<p>device: <span id=\"device\">");
		put_text(&b, st->device);
		put(&b, "</span>, <span id=\"run-minibatches\">%" PRIu64
			"</span> minibatches since the agent started</p>",
		    st->minibatches);
	}
	put_job(&b, st);
	put_members(&b, st, members, n_members);
	put(&b, "<h2>Total</h2><table id=\"totals\"><thead><tr>%s</tr></thead>"
		"<tbody><tr>", row_head);
	put_row_cells(&b, total);
	put(&b, "</tr></tbody></table>");
	{
		char t[GP_STATS_HUMAN_MAX];

		put(&b, "<p id=\"total-samples\" data-value=\"%" PRId64 "\">%" PRId64
			" samples, %.1f GFLOP, <span id=\"total-compute\" "
			"data-value=\"%.1f\">%s</span> of compute in all</p>",
		    total->samples, total->samples, total->gflop,
		    total->compute_seconds,
		    gp_stats_human_duration(total->compute_seconds, t, sizeof(t)));
	}
	put(&b, "<h2>Contribution over time</h2>");
	put_chart(&b, "chart-samples", "Samples", days, n_days, false);
	put_chart(&b, "chart-gflop", "GFLOP", days, n_days, true);
	put(&b, "<h2>Per day</h2>");
	put_table(&b, "by-day", "day", days, n_days, 0);
	put(&b, "<h2>Per pool</h2>");
	put_table(&b, "by-pool", "pool", pools, n_pools, 1);
	put(&b, "<h2>Per device</h2>");
	put_table(&b, "by-device", "device", devices, n_devices, 2);
	put(&b, "<p><small>From this machine's own database; no coordinator "
		"was asked.</small></p></body></html>\n");
	if (b.failed) {
		free(b.p);
		return -ENOMEM;
	}
	*ret = b.p;
	return 0;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code,
			     const char *type, char *body)
{
	struct MHD_Response *resp;
	enum MHD_Result r;

	if (!body)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(strlen(body), body,
					       MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", type);
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	/* Nothing on this page needs anything from elsewhere. */
	MHD_add_response_header(resp, "Content-Security-Policy",
				"default-src 'none'; style-src 'unsafe-inline'; "
				"img-src 'self'");
	r = MHD_queue_response(c, code, resp);
	MHD_destroy_response(resp);
	return r;
}

/* Bodies are freed by libmicrohttpd (MHD_RESPMEM_MUST_FREE). */
static char *dup_text(const char *s)
{
	return strdup(s);
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

/* True when a request's Host header names this machine's loopback (or is
 * absent, as in HTTP/1.0): a web page the volunteer visits could otherwise
 * read the statistics through DNS rebinding, its own name pointed at
 * 127.0.0.1 (the browser then sends that name). A port, when present,
 * must be ours. */
static bool host_allowed(const struct gp_web *w, const char *host)
{
	static const char *const names[] = { "127.0.0.1", "localhost",
					      "[::1]" };
	const char *colon;
	size_t len;

	if (!host)
		return true;
	colon = strrchr(host, ':');
	if (colon && strchr(colon, ']'))
		colon = NULL; /* the colon of "[::1]" itself */
	len = colon ? (size_t)(colon - host) : strlen(host);
	if (colon) {
		char *end;
		unsigned long port;

		errno = 0;
		port = strtoul(colon + 1, &end, 10);
		if (errno || end == colon + 1 || *end || port != w->port)
			return false;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == len &&
		    strncasecmp(host, names[i], len) == 0)
			return true;
	return false;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
				  const char *url, const char *method,
				  const char *version, const char *upload,
				  size_t *upload_size, void **con_cls)
{
	struct gp_web *w = cls;
	char *body = NULL;
	int r;

	(void)version;
	(void)upload;
	(void)con_cls;
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
			     dup_text("only GET\n"));
	if (*upload_size)
		return MHD_NO;
	if (!host_allowed(w, MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							 MHD_HTTP_HEADER_HOST)))
		return reply(c, MHD_HTTP_MISDIRECTED_REQUEST, "text/plain",
			     dup_text("this page answers to 127.0.0.1, localhost "
				      "and [::1] only\n"));
	if (strcmp(url, "/") == 0) {
		r = render_page(w, &body);
		if (r >= 0)
			return reply(c, MHD_HTTP_OK, "text/html; charset=utf-8", body);
	} else if (strcmp(url, "/stats.json") == 0) {
		r = render_json(w, &body);
		if (r >= 0)
			return reply(c, MHD_HTTP_OK, "application/json", body);
	} else if (strcmp(url, "/status") == 0) {
		struct gp_agent_status st;
		char text[2048];

		w->state(&st, w->data);
		r = gp_agent_status_format(&st, text, sizeof(text));
		if (r >= 0)
			return reply(c, MHD_HTTP_OK, "text/plain; charset=utf-8",
				     dup_text(text));
	} else {
		return reply(c, MHD_HTTP_NOT_FOUND, "text/plain",
			     dup_text("not found\n"));
	}
	gp_warn("web page: %s", gp_stats_error(w->stats));
	return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain",
		     dup_text("cannot read the statistics\n"));
}

int gp_web_start(const char *listen, struct gp_stats *stats,
		 gp_web_state_cb *state, void *data, struct gp_web **ret)
{
	struct sockaddr_storage ss;
	char host[64];
	uint16_t port;
	struct gp_web *w;
	const union MHD_DaemonInfo *info;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;

	if (!listen || !stats || !state || !ret)
		return -EINVAL;
	if (gp_agent_config_web_listen(listen, host, sizeof(host), &port) < 0)
		return -EINVAL;
	memset(&ss, 0, sizeof(ss));
	if (strcmp(host, "::1") == 0) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		a->sin6_addr = in6addr_loopback;
		flags |= MHD_USE_IPv6;
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->stats = stats;
	w->state = state;
	w->data = data;
	w->daemon = MHD_start_daemon(flags, port, NULL, NULL, on_request, w,
				     MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
				     MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
				     MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
				     MHD_OPTION_END);
	if (!w->daemon) {
		free(w);
		return -EADDRINUSE;
	}
	info = MHD_get_daemon_info(w->daemon, MHD_DAEMON_INFO_BIND_PORT);
	w->port = info ? info->port : port;
	*ret = w;
	return 0;
}

uint16_t gp_web_port(const struct gp_web *w)
{
	return w->port;
}

void gp_web_stop(struct gp_web *w)
{
	if (!w)
		return;
	MHD_stop_daemon(w->daemon);
	free(w);
}
