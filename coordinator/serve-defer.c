/* UPDATE messages wait in a queue and are handled a budget at a time in
 * the loop's idle phase: see server.h. */
#include <errno.h>
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

/* d, unlinked from the queue (prev: the entry before it, NULL at the
 * head), is handled, unless serve closed its connection meanwhile
 * (dropped, as the channel drops what comes after the close). Its
 * connection's reading comes back with its last waiting message (a
 * closing channel ignores that); the reading itself begins at the next
 * poll, after this message, so a connection's messages keep their
 * order. Handling may close the connection, but on_close comes later,
 * from libuv's close callback. */
static void handle(struct server *srv, struct gp_deferred **link,
		   struct gp_deferred *prev)
{
	struct gp_deferred *d = *link;
	struct peer *p = d->p;

	*link = d->next;
	if (srv->defer_tail == d)
		srv->defer_tail = prev;
	srv->defer_bytes -= d->len;
	srv->defer_n--;
	if (--p->deferred == 0)
		gp_channel_pause_reading(p->ch, false);
	if (!p->closed_here)
		gp_serve_dispatch(p, d->data, d->len, d->at_us);
	free(d);
}

/* The loop's idle phase: queued messages in arrival order for up to
 * defer_budget_us (at least one), then a poll for I/O (uv_idle makes it
 * not wait) and the rest in the next turn. */
static void on_defer(uv_idle_t *h)
{
	struct server *srv = h->data;
	uint64_t t0 = gp_mono_us();

	while (srv->defer_head) {
		uint64_t waited = gp_mono_us() - srv->defer_head->at_us;

		if (waited > srv->defer_wait_max_us)
			srv->defer_wait_max_us = waited;
		handle(srv, &srv->defer_head, NULL);
		if (gp_mono_us() - t0 >= srv->defer_budget_us)
			break;
	}
	if (!srv->defer_head)
		uv_idle_stop(h);
}

void gp_serve_defer_init(struct server *srv)
{
	const char *b = getenv("GP_SERVE_DEFER_BUDGET_US");
	unsigned long long v;
	char *end;

	uv_idle_init(&srv->loop, &srv->defer_idle);
	srv->defer_idle.data = srv;
	srv->defer_budget_us = GP_SERVE_DEFER_BUDGET_US;
	if (!b || !*b)
		return;
	/* 0 turns the queue off: every message is handled as it is read. */
	errno = 0;
	v = strtoull(b, &end, 10);
	if (errno || *end || *b == '-' || v > 1000000)
		gp_warn("GP_SERVE_DEFER_BUDGET_US=%s: not a number of "
			"microseconds from 0 to 1000000; %u it is", b,
			GP_SERVE_DEFER_BUDGET_US);
	else
		srv->defer_budget_us = v;
}

bool gp_serve_defer(struct peer *p, const uint8_t *data, size_t len,
		    bool update)
{
	struct server *srv = p->srv;
	struct gp_deferred *d;

	if (!p->deferred && (!update || !srv->defer_budget_us ||
			     srv->defer_bytes >= GP_SERVE_DEFER_MAX_BYTES))
		return false;
	/* The loop is ending (every connection is told BYE first): handled
	 * now. */
	if (uv_is_closing((uv_handle_t *)&srv->defer_idle))
		return false;
	d = malloc(sizeof(*d) + len);
	if (!d && p->deferred) {
		/* Handled now, it would overtake p's others that wait: the
		 * connection goes instead, and they with it. */
		gp_warn("%s: out of memory for the deferred queue, closing",
			p->m.addr);
		gp_serve_bye(p, GP_BYE_RESTART, "coordinator out of memory");
		return true;
	}
	if (!d)
		return false; /* out of memory, nothing of p's waits: now */
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

void gp_serve_defer_flush(struct peer *p)
{
	struct server *srv = p->srv;
	struct gp_deferred **link = &srv->defer_head, *prev = NULL;

	/* The channel is closing: handlers send nothing on it, and nothing
	 * they do queues or frees anything of the queue's. */
	while (p->deferred && *link) {
		if ((*link)->p != p) {
			prev = *link;
			link = &prev->next;
			continue;
		}
		handle(srv, link, prev);
	}
}

void gp_serve_defer_finish(struct server *srv)
{
	if (srv->defer_total)
		gp_info("deferred queue: %" PRIu64 " messages, at most %zu "
			"waiting at once, the longest wait %.1f ms",
			srv->defer_total, srv->defer_peak,
			(double)srv->defer_wait_max_us / 1000.0);
	if (gp_channel_opened_off_loop())
		gp_info("%" PRIu64 " messages opened on the thread pool",
			gp_channel_opened_off_loop());
	/* Empty: every connection's on_close flushed its own before the
	 * loop ended (their peers are freed, so only the entries go). */
	while (srv->defer_head) {
		struct gp_deferred *d = srv->defer_head;

		srv->defer_head = d->next;
		free(d);
	}
	srv->defer_tail = NULL;
	srv->defer_bytes = 0;
	srv->defer_n = 0;
}
