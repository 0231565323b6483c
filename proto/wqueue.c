/* The channel's write queue; see wqueue.h for the invariants. */
#include "wqueue.h"

#include <assert.h>
#include <stdlib.h>

struct gp_wqueue_buf {
	struct gp_wqueue_buf *next;
	size_t cap;
	size_t len; /* committed bytes */
	size_t off; /* bytes already written */
	bool held;  /* reserved with gp_wqueue_reserve_held(), not released */
	uint8_t data[];
};

static void free_bufs(struct gp_wqueue_buf *b)
{
	while (b) {
		struct gp_wqueue_buf *next = b->next;

		free(b);
		b = next;
	}
}

void gp_wqueue_init(struct gp_wqueue *q)
{
	*q = (struct gp_wqueue){ 0 };
}

void gp_wqueue_finish(struct gp_wqueue *q)
{
	free_bufs(q->head);
	free_bufs(q->inflight);
	free_bufs(q->cache);
	gp_wqueue_init(q);
}

bool gp_wqueue_admits(const struct gp_wqueue *q, size_t n, size_t max)
{
	return q->queued == 0 || q->queued + n <= max;
}

bool gp_wqueue_drained(const struct gp_wqueue *q, size_t low_water)
{
	return q->queued <= low_water;
}

size_t gp_wqueue_queued(const struct gp_wqueue *q)
{
	return q->queued;
}

bool gp_wqueue_writing(const struct gp_wqueue *q)
{
	return q->writing;
}

/* A buffer of at least need bytes: the first cached one that is large
 * enough (most recently used first: the warmest), else a new one, of
 * GP_WQUEUE_BUF_SMALL at least when nothing is pending and of
 * GP_WQUEUE_BUF_MIN during a burst. */
static struct gp_wqueue_buf *buf_get(struct gp_wqueue *q, size_t need)
{
	struct gp_wqueue_buf **pp, *b;
	size_t cap;

	for (pp = &q->cache; *pp; pp = &(*pp)->next) {
		if ((*pp)->cap >= need) {
			b = *pp;
			*pp = b->next;
			q->n_cache--;
			q->cache_bytes -= b->cap;
			b->next = NULL;
			b->len = 0;
			b->off = 0;
			b->held = false;
			return b;
		}
	}
	cap = q->head ? GP_WQUEUE_BUF_MIN : GP_WQUEUE_BUF_SMALL;
	if (cap < need)
		cap = need;
	b = malloc(sizeof(*b) + cap);
	if (!b)
		return NULL;
	b->next = NULL;
	b->cap = cap;
	b->len = 0;
	b->off = 0;
	b->held = false;
	return b;
}

/* Recycles a written buffer: into the cache while it stays within its
 * bounds, else back to the allocator. */
static void buf_put(struct gp_wqueue *q, struct gp_wqueue_buf *b)
{
	if (q->n_cache < GP_WQUEUE_CACHE_MAX &&
	    q->cache_bytes + b->cap <= GP_WQUEUE_CACHE_MAX_BYTES) {
		b->next = q->cache;
		q->cache = b;
		q->n_cache++;
		q->cache_bytes += b->cap;
		return;
	}
	free(b);
}

/* Appends a buffer for n bytes at the tail. Behind an empty head (the
 * tail a writer started over) too: the writer recycles that one when it
 * gets there. */
static struct gp_wqueue_buf *append(struct gp_wqueue *q, size_t n)
{
	struct gp_wqueue_buf *t = buf_get(q, n);

	if (!t)
		return NULL;
	if (q->tail)
		q->tail->next = t;
	else
		q->head = t;
	q->tail = t;
	return t;
}

uint8_t *gp_wqueue_reserve(struct gp_wqueue *q, size_t n)
{
	struct gp_wqueue_buf *t = q->tail;

	if (!t || t->held || t->cap - t->len < n) {
		t = append(q, n);
		if (!t)
			return NULL;
	}
	return t->data + t->len;
}

uint8_t *gp_wqueue_reserve_held(struct gp_wqueue *q, size_t n,
				struct gp_wqueue_buf **ret_hold)
{
	struct gp_wqueue_buf *t = append(q, n);

	if (!t)
		return NULL;
	t->held = true;
	t->len = n;
	q->queued += n;
	*ret_hold = t;
	return t->data;
}

void gp_wqueue_release(struct gp_wqueue *q, struct gp_wqueue_buf *hold)
{
	(void)q;
	assert(hold->held);
	hold->held = false;
}

void gp_wqueue_commit(struct gp_wqueue *q, size_t n)
{
	assert(q->tail && q->tail->cap - q->tail->len >= n);
	q->tail->len += n;
	q->queued += n;
}

/* Done with a head buffer whose bytes are all written: the tail starts
 * over, so that the next bytes go where the cache still is; any other is
 * recycled. Returns the new head. */
static struct gp_wqueue_buf *head_written(struct gp_wqueue *q)
{
	struct gp_wqueue_buf *b = q->head;

	if (b == q->tail) {
		b->off = b->len = 0;
		return b;
	}
	q->head = b->next;
	buf_put(q, b);
	return q->head;
}

/* The first pending buffer with bytes to write, recycling written-out ones
 * before it; NULL when there is none. */
static struct gp_wqueue_buf *first_pending(struct gp_wqueue *q)
{
	struct gp_wqueue_buf *b = q->head;

	while (b && b->off == b->len) {
		if (b == q->tail) {
			b->off = b->len = 0;
			return NULL;
		}
		b = head_written(q);
	}
	return b;
}

bool gp_wqueue_peek(struct gp_wqueue *q, struct iovec *ret)
{
	struct gp_wqueue_buf *b;

	if (q->writing || !(b = first_pending(q)) || b->held)
		return false;
	ret->iov_base = b->data + b->off;
	ret->iov_len = b->len - b->off;
	return true;
}

void gp_wqueue_consume(struct gp_wqueue *q, size_t n)
{
	struct gp_wqueue_buf *b = q->head;

	assert(!q->writing && b && b->len - b->off >= n);
	b->off += n;
	q->queued -= n;
	if (b->off == b->len)
		head_written(q);
}

unsigned gp_wqueue_start_write(struct gp_wqueue *q, struct iovec *iov,
			       unsigned max)
{
	struct gp_wqueue_buf *b, *last = NULL;
	unsigned n = 0;

	if (q->writing || max == 0 || !first_pending(q) || q->head->held)
		return 0;
	for (b = q->head; b && n < max && !b->held; b = b->next) {
		iov[n].iov_base = b->data + b->off;
		iov[n].iov_len = b->len - b->off;
		n++;
		last = b;
	}
	q->inflight = q->head;
	q->head = last->next;
	if (!q->head)
		q->tail = NULL;
	last->next = NULL;
	q->writing = true;
	return n;
}

void gp_wqueue_cancel_write(struct gp_wqueue *q)
{
	struct gp_wqueue_buf *last = q->inflight;

	if (!last)
		return;
	while (last->next)
		last = last->next;
	last->next = q->head;
	q->head = q->inflight;
	if (!q->tail)
		q->tail = last;
	q->inflight = NULL;
	q->writing = false;
}

size_t gp_wqueue_write_done(struct gp_wqueue *q)
{
	struct gp_wqueue_buf *b = q->inflight;
	size_t done = 0;

	q->writing = false;
	q->inflight = NULL;
	while (b) {
		struct gp_wqueue_buf *next = b->next;

		done += b->len - b->off;
		buf_put(q, b);
		b = next;
	}
	q->queued -= done;
	return done;
}

void gp_wqueue_drop_caches(struct gp_wqueue *q)
{
	if (q->head && q->head == q->tail && q->head->len == 0) {
		/* The empty tail a writer kept, when nothing follows it. */
		free(q->head);
		q->head = q->tail = NULL;
	}
	free_bufs(q->cache);
	q->cache = NULL;
	q->n_cache = 0;
	q->cache_bytes = 0;
}

bool gp_wqueue_ping_due(struct gp_wqueue *q)
{
	if (q->queued > 0)
		return false;
	gp_wqueue_drop_caches(q);
	return true;
}
