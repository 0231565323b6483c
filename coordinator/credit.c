/* Credit in GFLOP from the ledger's per member and job counts, and the
 * listings: the owner's table and JSON, and the page the owner publishes.
 * credit.h says what counts and why. */
#include "credit.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "job.h"
#include "model.h"
#include "util.h"

void gp_credit_cache_finish(struct gp_credit_cache *c)
{
	if (!c)
		return;
	free(c->v);
	memset(c, 0, sizeof(*c));
}

/* The model of a job: the ledger's canonical text, else (jobs recorded
 * before the ledger kept models) the shorthand of the job file. */
static double lookup_flops(struct gp_ledger *l, int64_t job_id)
{
	struct gp_model_spec spec;
	struct gp_ledger_job job = { 0 };
	struct gp_job parsed;
	char *model = NULL;
	double flops = 0;

	if (gp_ledger_job_model(l, job_id, &model) >= 0) {
		if (gp_model_spec_parse(model, &spec, NULL, 0) == 0)
			flops = gp_model_spec_train_flops(&spec);
		free(model);
		return flops;
	}
	if (gp_ledger_job_get(l, job_id, &job) < 0)
		return 0;
	if (gp_job_parse("job", job.spec, strlen(job.spec), &parsed, NULL, 0) ==
		    0 &&
	    parsed.spec[0] && gp_model_spec_parse(parsed.spec, &spec, NULL, 0) == 0)
		flops = gp_model_spec_train_flops(&spec);
	gp_ledger_job_finish(&job);
	return flops;
}

double gp_credit_job_flops(struct gp_credit_cache *c, struct gp_ledger *l,
			   int64_t job_id)
{
	double flops;

	for (size_t i = 0; c && i < c->n; i++)
		if (c->v[i].job_id == job_id)
			return c->v[i].flops;
	flops = lookup_flops(l, job_id);
	/* An unknown job is asked again next time: it may be recorded by
	 * then. Out of memory only costs the cache. */
	if (c && flops > 0 &&
	    gp_array_grow((void **)&c->v, &c->cap, c->n, sizeof(*c->v)) == 0)
		c->v[c->n++] = (struct gp_credit_job_flops){ job_id, flops };
	return flops;
}

void gp_credit_members_free(struct gp_credit_member *m, size_t n)
{
	for (size_t i = 0; m && i < n; i++)
		free(m[i].jobs);
	free(m);
}

static int by_credit(const void *a, const void *b)
{
	const struct gp_credit_member *x = a, *y = b;

	if (x->gflop != y->gflop)
		return x->gflop < y->gflop ? 1 : -1;
	return (x->agent_id > y->agent_id) - (x->agent_id < y->agent_id);
}

/* Adds one (member, job) row to the member it belongs to: rows come by
 * member, so that is the last one or a new one. */
static int add_row(struct gp_credit_member **v, size_t *n, size_t *cap,
		   const struct gp_ledger_credit_row *row,
		   struct gp_credit_cache *cache, struct gp_ledger *l)
{
	struct gp_credit_member *m;
	struct gp_credit_job *j;
	int r;

	if (*n == 0 || (*v)[*n - 1].agent_id != row->agent_id) {
		r = gp_array_grow((void **)v, cap, *n, sizeof(**v));
		if (r < 0)
			return r;
		m = &(*v)[(*n)++];
		memset(m, 0, sizeof(*m));
		m->agent_id = row->agent_id;
		memcpy(m->name, row->name, sizeof(m->name));
		memcpy(m->public_name, row->public_name,
		       sizeof(m->public_name));
		memcpy(m->fingerprint, row->fingerprint,
		       sizeof(m->fingerprint));
		m->joined_at = row->joined_at;
		m->revoked_at = row->revoked_at;
	}
	m = &(*v)[*n - 1];
	if (row->job_id == 0 || (row->updates == 0 && row->samples == 0))
		return 0;
	j = realloc(m->jobs, (m->n_jobs + 1) * sizeof(*j));
	if (!j)
		return -ENOMEM;
	m->jobs = j;
	j = &m->jobs[m->n_jobs++];
	j->job_id = row->job_id;
	j->updates = row->updates;
	j->samples = row->samples;
	j->flops_per_sample = gp_credit_job_flops(cache, l, row->job_id);
	j->gflop = (double)row->samples * j->flops_per_sample / 1e9;
	m->updates += j->updates;
	m->samples += j->samples;
	m->gflop += j->gflop;
	if (j->flops_per_sample <= 0)
		m->flops_unknown = true;
	return 0;
}

int gp_credit_members(struct gp_ledger *l, struct gp_credit_cache *cache,
		      int64_t agent_id, struct gp_credit_member **ret,
		      size_t *ret_n)
{
	struct gp_credit_cache local = { 0 };
	struct gp_ledger_credit_row *rows = NULL;
	struct gp_credit_member *v = NULL;
	size_t n_rows = 0, n = 0, cap = 0;
	int r;

	if (!cache)
		cache = &local;
	r = gp_ledger_credit_list(l, agent_id, &rows, &n_rows);
	for (size_t i = 0; r >= 0 && i < n_rows; i++)
		r = add_row(&v, &n, &cap, &rows[i], cache, l);
	free(rows);
	gp_credit_cache_finish(&local);
	if (r < 0) {
		gp_credit_members_free(v, n);
		return r;
	}
	if (n > 1)
		qsort(v, n, sizeof(*v), by_credit);
	*ret = v;
	*ret_n = n;
	return 0;
}

const char *gp_credit_format_gflop(double gflop, char *buf, size_t size)
{
	static const char *const units[] = { "GFLOP", "TFLOP", "PFLOP",
					     "EFLOP", "ZFLOP" };
	size_t u = 0;

	while (gflop >= 1000 && u + 1 < sizeof(units) / sizeof(units[0])) {
		gflop /= 1000;
		u++;
	}
	snprintf(buf, size, "%.*f %s", gflop < 10 ? 2 : gflop < 100 ? 1 : 0,
		 gflop, units[u]);
	return buf;
}

void gp_credit_write_text(FILE *out, const struct gp_credit_member *m,
			  size_t n)
{
	double total = 0;
	char g[32];

	fprintf(out, "%-5s %-20s %-20s %14s %10s %12s\n", "ID", "NAME",
		"PUBLIC NAME", "CREDIT", "UPDATES", "SAMPLES");
	for (size_t i = 0; i < n; i++) {
		fprintf(out, "%-5" PRId64 " %-20.20s %-20.20s %14s %10" PRId64
			" %12" PRId64 "%s%s\n",
			m[i].agent_id, m[i].name,
			m[i].public_name[0] ? m[i].public_name : "-",
			gp_credit_format_gflop(m[i].gflop, g, sizeof(g)),
			m[i].updates, m[i].samples,
			m[i].revoked_at ? "  (revoked)" : "",
			m[i].flops_unknown ? "  (a job's FLOPs unknown)" : "");
		total += m[i].gflop;
	}
	fprintf(out, "%zu members, %s in all\n", n,
		gp_credit_format_gflop(total, g, sizeof(g)));
}

void gp_credit_write_json(FILE *out, const struct gp_credit_member *m,
			  size_t n)
{
	double total = 0;

	fprintf(out, "{\"members\":[");
	for (size_t i = 0; i < n; i++) {
		fprintf(out, "%s{\"id\":%" PRId64 ",\"name\":", i ? "," : "",
			m[i].agent_id);
		gp_json_string(out, m[i].name);
		fprintf(out, ",\"public_name\":");
		if (m[i].public_name[0])
			gp_json_string(out, m[i].public_name);
		else
			fprintf(out, "null");
		fprintf(out, ",\"fingerprint\":");
		gp_json_string(out, m[i].fingerprint);
		fprintf(out, ",\"joined_at\":%" PRId64 ",\"revoked\":%s"
			",\"updates\":%" PRId64 ",\"samples\":%" PRId64
			",\"gflop\":%.6f,\"jobs\":[",
			m[i].joined_at, m[i].revoked_at ? "true" : "false",
			m[i].updates, m[i].samples, m[i].gflop);
		for (size_t j = 0; j < m[i].n_jobs; j++) {
			const struct gp_credit_job *cj = &m[i].jobs[j];

			fprintf(out, "%s{\"job\":%" PRId64 ",\"updates\":%" PRId64
				",\"samples\":%" PRId64
				",\"flops_per_sample\":%.0f,\"gflop\":%.6f}",
				j ? "," : "", cj->job_id, cj->updates,
				cj->samples, cj->flops_per_sample, cj->gflop);
		}
		fprintf(out, "]}");
		total += m[i].gflop;
	}
	fprintf(out, "],\"total_gflop\":%.6f}\n", total);
}

/* Text for an HTML element or attribute: the five characters that could
 * end either are escaped; the names were checked as UTF-8 at the wire. */
static void html_text(FILE *out, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&':
			fputs("&amp;", out);
			break;
		case '<':
			fputs("&lt;", out);
			break;
		case '>':
			fputs("&gt;", out);
			break;
		case '"':
			fputs("&quot;", out);
			break;
		case '\'':
			fputs("&#39;", out);
			break;
		default:
			fputc(*s, out);
		}
	}
}

static const char page_style[] =
	"body{font-family:system-ui,sans-serif;margin:2em auto;max-width:"
	"52em;padding:0 1em;color:#222}h1{font-size:1.6em;margin-bottom:.2em}"
	".sub{color:#666;margin-top:0}table{border-collapse:collapse;width:"
	"100%}th,td{padding:.4em .6em;border-bottom:1px solid #ddd;text-align:"
	"left}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}"
	"tr.anon td.who{color:#888;font-style:italic}tfoot td{font-weight:"
	"bold;border-bottom:none}.note{color:#666;font-size:.9em}";

int gp_credit_write_html(FILE *out, const struct gp_credit_member *m,
			 size_t n, const struct gp_credit_page *page)
{
	const char *title = page && page->title ? page->title :
						  "gradpool leaderboard";
	char g[32], when[32];
	double total = 0;
	size_t rank = 0, anon = 0;

	fprintf(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta "
		"charset=\"utf-8\"><meta name=\"viewport\" content=\"width="
		"device-width\"><title>");
	html_text(out, title);
	fprintf(out, "</title><style>%s</style></head><body><h1>", page_style);
	html_text(out, title);
	fprintf(out, "</h1><p class=\"sub\">Credit for applied work: GFLOP "
		"of the training steps the pool applied, as of %s UTC.</p>\n",
		gp_format_time(page ? page->generated_at : time(NULL), when,
			       sizeof(when)));
	fprintf(out, "<table><thead><tr><th class=\"n\">#</th><th>Volunteer"
		"</th>%s<th class=\"n\">Credit</th><th class=\"n\">Updates</th>"
		"<th class=\"n\">Samples</th></tr></thead><tbody>\n",
		page && page->fingerprints ? "<th>Key</th>" : "");
	for (size_t i = 0; i < n; i++) {
		bool named = m[i].public_name[0] != '\0';

		if (m[i].revoked_at || m[i].updates == 0)
			continue;
		total += m[i].gflop;
		if (!named) {
			anon++;
			if (page && page->omit_anonymous)
				continue;
		}
		fprintf(out, "<tr%s><td class=\"n\">%zu</td><td class=\"who\">",
			named ? "" : " class=\"anon\"", ++rank);
		html_text(out, named ? m[i].public_name : "anonymous");
		fprintf(out, "</td>");
		if (page && page->fingerprints) {
			fprintf(out, "<td><code>");
			html_text(out, m[i].fingerprint);
			fprintf(out, "</code></td>");
		}
		fprintf(out, "<td class=\"n\">%s</td><td class=\"n\">%" PRId64
			"</td><td class=\"n\">%" PRId64 "</td></tr>\n",
			gp_credit_format_gflop(m[i].gflop, g, sizeof(g)),
			m[i].updates, m[i].samples);
	}
	fprintf(out, "</tbody><tfoot><tr><td></td><td>The whole pool</td>%s"
		"<td class=\"n\">%s</td><td></td><td></td></tr></tfoot></table>\n",
		page && page->fingerprints ? "<td></td>" : "",
		gp_credit_format_gflop(total, g, sizeof(g)));
	fprintf(out, "<p class=\"note\">Volunteers choose whether their name "
		"appears (gradpool-agent name NAME); the others are counted as "
		"anonymous%s.</p></body></html>\n",
		page && page->omit_anonymous && anon ?
			" in the total and not listed" : "");
	return ferror(out) ? -EIO : 0;
}
