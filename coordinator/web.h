/* The pool owner's local page: served by `gradpool-coordinator serve` on
 * a loopback address (common/httpd.h, which the agent's page shares), read
 * from the ledger alone (its own read-only connection per request, on the
 * server's thread), plain HTML with inline SVG charts, no JavaScript,
 * nothing from elsewhere. */
#ifndef GP_COORD_WEB_H
#define GP_COORD_WEB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ledger.h"

/* The default address: loopback, one above the agent's page (7180), so
 * that a machine may run both. */
#define GP_COORD_WEB_DEFAULT "127.0.0.1:7181"

struct gp_coord_web;

/* What one page shows, read from the ledger by gp_coord_web_collect();
 * every array is owned by the view (gp_coord_web_view_finish). */
struct gp_coord_web_view {
	int64_t now;                       /* Unix ms */
	bool serving;
	struct gp_ledger_job_row *jobs;    /* every job, in id order */
	size_t n_jobs;
	bool have_job;                     /* status below is of a job */
	struct gp_ledger_status status;    /* the running or newest job */
	struct gp_ledger_eval *evals;
	size_t n_evals;
	struct gp_ledger_rate *rate;
	size_t n_rate;
	int64_t rate_bucket_ms;
	struct gp_ledger_agent_row *agents; /* totals within that job */
	size_t n_agents;
	struct gp_ledger_damped *damped;
	size_t n_damped;
};

/* Reads the view of the ledger l (borrowed) at now. Returns 0 or a
 * negative errno; on failure the view holds what was read (finish it). */
int gp_coord_web_collect(struct gp_ledger *l, int64_t now,
			 struct gp_coord_web_view *v);
void gp_coord_web_view_finish(struct gp_coord_web_view *v);

/* Renders the page of v (borrowed) as HTML into *ret (malloc'd, owned by
 * the caller). Returns 0 or -ENOMEM. */
int gp_coord_web_render(const struct gp_coord_web_view *v, char **ret);

/* Starts the page on listen (borrowed, gp_httpd_listen_parse: loopback
 * only; port 0 picks one),
 * reading the ledger file at ledger_path (borrowed, copied). Returns 0
 * with *ret, -EINVAL for an address that is not loopback, or
 * -EADDRINUSE. */
int gp_coord_web_start(const char *listen, const char *ledger_path,
		       struct gp_coord_web **ret);
/* The port it listens on. */
uint16_t gp_coord_web_port(const struct gp_coord_web *w);
/* Stops and frees it; NULL is a no-op. */
void gp_coord_web_stop(struct gp_coord_web *w);

#endif
