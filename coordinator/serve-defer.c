/* UPDATE messages wait in a queue and are handled a budget at a time in
 * the loop's idle phase: see server.h. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "server.h"
#include "util.h"

struct gp_deferred {
	struct gp_deferred *next;
	struct peer *p;
	uint64_t at_us;         /* when it was read */
	size_t len;
	uint8_t data[];
};

/* Takes the queue's head off, giving its connection's reading back when
 * it was that connection's last message waiting. */
static struct gp_deferred *pop(struct server *srv)
{
	struct gp_deferred *d = srv->defer_head;

	srv->defer_head = d->next;
	if (!srv->defer_head)
		srv->defer_tail = NULL;
	srv->defer_bytes -= d->len;
	srv->defer_n--;
	if (--d->p->deferred == 0 && d->p->ch)
		gp_channel_pause_reading(d->p->ch, false);
	return d;
}

/* The loop's idle phase: queued messages in arrival order for up to
 * GP_SERVE_DEFER_BUDGET_US, then a poll for I/O (uv_idle makes it not
 * wait) and the rest in the next turn. */
static void on_defer(uv_idle_t *h)
{
	struct server *srv = h->data;
	uint64_t t0 = gp_mono_us();

	while (srv->defer_head) {
		struct gp_deferred *d = pop(srv);
		uint64_t waited = gp_mono_us() - d->at_us;

		if (waited > srv->defer_wait_max_us)
			srv->defer_wait_max_us = waited;

		/* Reading resumed in pop() begins at the next poll, after
		 * this message: a connection's messages keep their order.
		 * Handling may close the connection; d holds what it needs. */
		gp_serve_dispatch(d->p, d->data, d->len, d->at_us);
		free(d);
		if (gp_mono_us() - t0 >= srv->defer_budget_us)
			break;
	}
	if (!srv->defer_head)
		uv_idle_stop(h);
}

void gp_serve_defer_init(struct server *srv)
{
	const char *b = getenv("GP_SERVE_DEFER_BUDGET_US");

	uv_idle_init(&srv->loop, &srv->defer_idle);
	srv->defer_idle.data = srv;
	srv->defer_budget_us = GP_SERVE_DEFER_BUDGET_US;
	/* 0 turns the queue off: every message is handled as it is read. */
	if (b && *b)
		srv->defer_budget_us = strtoull(b, NULL, 10);
}

bool gp_serve_defer(struct peer *p, const uint8_t *data, size_t len,
		    bool update)
{
	struct server *srv = p->srv;
	struct gp_deferred *d;

	if (!p->deferred && (!update || !srv->defer_budget_us ||
			     srv->defer_bytes >= GP_SERVE_DEFER_MAX_BYTES))
		return false;
	if (!srv->defer_idle.data ||
	    uv_is_closing((uv_handle_t *)&srv->defer_idle) || !p->ch)
		return false;
	d = malloc(sizeof(*d) + len);
	if (!d)
		return false; /* out of memory: handled now */
	d->next = NULL;
	d->p = p;
	d->at_us = gp_mono_us();
	d->len = len;
	memcpy(d->data, data, len);
	if (srv->defer_tail)
		srv->defer_tail->next = d;
	else
		srv->defer_head = d;
	srv->defer_tail = d;
	srv->defer_bytes += len;
	if (++srv->defer_n > srv->defer_peak)
		srv->defer_peak = srv->defer_n;
	srv->defer_total++;
	if (p->deferred++ == 0)
		gp_channel_pause_reading(p->ch, true);
	uv_idle_start(&srv->defer_idle, on_defer);
	return true;
}

void gp_serve_defer_forget(struct peer *p)
{
	struct server *srv = p->srv;
	struct gp_deferred **link = &srv->defer_head, *prev = NULL;

	while (p->deferred && *link) {
		struct gp_deferred *d = *link;

		if (d->p != p) {
			prev = d;
			link = &d->next;
			continue;
		}
		*link = d->next;
		if (srv->defer_tail == d)
			srv->defer_tail = prev;
		srv->defer_bytes -= d->len;
		srv->defer_n--;
		p->deferred--;
		free(d);
	}
}

void gp_serve_defer_finish(struct server *srv)
{
	if (srv->defer_total)
		gp_info("deferred queue: %" PRIu64 " messages, at most %zu "
			"waiting at once, the longest wait %.1f ms",
			srv->defer_total, srv->defer_peak,
			(double)srv->defer_wait_max_us / 1000.0);
	while (srv->defer_head) {
		struct gp_deferred *d = srv->defer_head;

		srv->defer_head = d->next;
		d->p->deferred--;
		free(d);
	}
	srv->defer_tail = NULL;
	srv->defer_bytes = 0;
	srv->defer_n = 0;
}
