/* The agent's local statistics page, served on a loopback address only
 * (config.h, [stats]; common/httpd.h, which the owner's page shares): the
 * agent's current state, the pool's job, every membership, contribution
 * per day as inline SVG charts, totals, per-pool and per-device tables. One self-contained HTML page (no script, no
 * external asset; it reloads itself every 10 s) at "/", and the same data
 * as JSON at "/stats.json" (gp_stats_format_json) and "/status" (the
 * control socket's key=value lines).
 *
 * The server answers on its own thread: the statistics handle must be
 * the thread-safe gp_stats, and the state comes from a callback that may
 * run on that thread. */
#ifndef GP_AGENT_WEB_H
#define GP_AGENT_WEB_H

#include <stdint.h>

#include "stats.h"
#include "status.h"

struct gp_web;

/* Fills *ret with the agent's current state; runs on the server thread. */
typedef void gp_web_state_cb(struct gp_agent_status *ret, void *data);

/* Serves on listen ("127.0.0.1:PORT", "localhost:PORT" or "[::1]:PORT";
 * port 0 picks a free one). stats and data are borrowed for the server's
 * life. *ret is owned by the caller (gp_web_stop). Returns 0, -EINVAL for
 * an address that is not loopback, or another negative errno. */
int gp_web_start(const char *listen, struct gp_stats *stats,
		 gp_web_state_cb *state, void *data, struct gp_web **ret);

/* The port the server listens on. */
uint16_t gp_web_port(const struct gp_web *w);

/* Stops the server and frees w. NULL is a no-op. */
void gp_web_stop(struct gp_web *w);

/* Writes the page for rows (by day, n_days), per pool and per device,
 * total, the state and every membership (members, n_members; each pool
 * named by its job, gp_stats_pool_name), all borrowed, into a malloc'd
 * string (*ret, owned by the caller). Exposed for the tests. Returns 0 or
 * -ENOMEM. */
int gp_web_render(const struct gp_stats_row *days, size_t n_days,
		  const struct gp_stats_row *pools, size_t n_pools,
		  const struct gp_stats_row *devices, size_t n_devices,
		  const struct gp_stats_row *total,
		  const struct gp_agent_status *st,
		  const struct gp_stats_membership *members, size_t n_members,
		  char **ret);

#endif
