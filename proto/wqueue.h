/* The channel's write queue: the bytes sealed for the socket, in the order
 * they were sealed, and a cache of buffers for reuse.
 *
 * No sockets here. The caller reserves room at the tail, seals records into
 * it and commits them; it takes bytes from the head in one of two ways and
 * reports what the socket took:
 *
 *   synchronous:  gp_wqueue_peek() gives the head's unwritten bytes, the
 *                 caller writes what the socket takes at once and reports
 *                 it with gp_wqueue_consume() (any count: partial writes);
 *   asynchronous: gp_wqueue_start_write() hands up to n buffers to one
 *                 write (they leave the queue's pending list), and
 *                 gp_wqueue_write_done() takes them back when it completes.
 *
 * Invariants (tests/unit/test-wqueue.c):
 * - bytes leave exactly once and in commit order, so records leave in the
 *   order of their nonces, whatever mix of reserve, partial writes, batches
 *   and cache drops happens in between;
 * - queued counts committed bytes until written (pending and in flight);
 * - while one write is in flight nothing else is handed out: bytes must
 *   reach the socket in order;
 * - the tail buffer, once written out, starts over empty instead of being
 *   recycled, so that the next small records go where the cache still is;
 *   a later reservation too large for it goes behind it (never in its
 *   place: bytes may be reserved in it already), and the empty buffer is
 *   recycled when the writer gets to it;
 * - dropping the caches frees only an empty head that is also the tail:
 *   nothing committed is ever freed before it is written;
 * - held bytes, and everything committed after them, wait until released;
 *   nothing is reserved in a held buffer.
 *
 * Single-threaded: the loop thread of the owning channel. The one
 * exception is held room (gp_wqueue_reserve_held): another thread may fill
 * its bytes until the owner releases it; the queue itself is only touched
 * by the owner. */
#ifndef GP_WQUEUE_H
#define GP_WQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* Smallest buffer taken while another is pending (a burst): small records
 * share one. */
#define GP_WQUEUE_BUF_MIN (64 * 1024)
/* Smallest buffer taken while nothing is pending: a connection that sends a
 * heartbeat's echo or a minibatch now and then holds this much, not
 * GP_WQUEUE_BUF_MIN (10,000 connections: 40 MiB instead of 640 MiB, and
 * less of the heap churned by 64 KiB blocks). A burst that overflows it
 * goes on in a GP_WQUEUE_BUF_MIN buffer behind it. With the buffer's
 * header, one 4 KiB allocation. */
#define GP_WQUEUE_BUF_SMALL (4096 - 64)
/* Buffers kept for reuse: at most this many and this many bytes, so that a
 * stream of large messages, which queues many step-sized buffers when the
 * peer is slower, reuses warm memory instead of faulting fresh pages in (and
 * glibc trimming them again) for every message. gp_wqueue_drop_caches()
 * gives them back when the channel goes quiet. */
#define GP_WQUEUE_CACHE_MAX 96
#define GP_WQUEUE_CACHE_MAX_BYTES (36u * 1024 * 1024)

struct gp_wqueue_buf;

/* Embedded in its owner; the fields are the queue's, read-only to callers
 * (the tests look at them). */
struct gp_wqueue {
	struct gp_wqueue_buf *head, *tail; /* pending, oldest first */
	struct gp_wqueue_buf *inflight;    /* handed to the write in flight */
	struct gp_wqueue_buf *cache;       /* for reuse, most recent first */
	unsigned n_cache;
	size_t cache_bytes;
	size_t queued;  /* committed and not yet written */
	bool writing;   /* a gp_wqueue_start_write() awaits its done */
};

/* An empty queue. */
void gp_wqueue_init(struct gp_wqueue *q);

/* Frees every buffer, written or not (the connection is gone). */
void gp_wqueue_finish(struct gp_wqueue *q);

/* The queue bound: whether n more bytes fit below max bytes queued. A
 * record queued while nothing is queued always fits, however large, so that
 * a message larger than the bound can be sent at all. */
bool gp_wqueue_admits(const struct gp_wqueue *q, size_t n, size_t max);

/* Whether at most low_water bytes are queued: room for the sender to queue
 * more (the channel's on_drain). */
bool gp_wqueue_drained(const struct gp_wqueue *q, size_t low_water);

/* Bytes committed and not yet written. */
size_t gp_wqueue_queued(const struct gp_wqueue *q);

/* True while a write started by gp_wqueue_start_write() is in flight. */
bool gp_wqueue_writing(const struct gp_wqueue *q);

/* Returns room for n contiguous bytes at the tail (borrowed, valid until
 * the next call on q), or NULL when out of memory. Nothing is queued until
 * gp_wqueue_commit(). */
uint8_t *gp_wqueue_reserve(struct gp_wqueue *q, size_t n);

/* Queues the first n bytes of the room gp_wqueue_reserve() returned last
 * (n at most what it reserved). */
void gp_wqueue_commit(struct gp_wqueue *q, size_t n);

/* Held room: n bytes in a buffer of their own, queued at once (they count
 * as queued and keep their place in the order) but filled later, possibly
 * on another thread. Nothing at or behind held bytes is handed to a writer
 * until gp_wqueue_release(hold); bytes before them are. Returns the room
 * and sets *ret_hold, or NULL when out of memory. The buffer stays where
 * it is until released and written: the filler may write into it while
 * the owner goes on queueing behind it (not while gp_wqueue_finish()). */
uint8_t *gp_wqueue_reserve_held(struct gp_wqueue *q, size_t n,
				struct gp_wqueue_buf **ret_hold);

/* The held room is filled: it may leave, in its place. */
void gp_wqueue_release(struct gp_wqueue *q, struct gp_wqueue_buf *hold);

/* Synchronous writing. While no write is in flight: fills *ret with the
 * head buffer's unwritten bytes (borrowed, valid until the next call on q)
 * and returns true; returns false when nothing is pending or a write is in
 * flight. Buffers written out before it are recycled on the way. */
bool gp_wqueue_peek(struct gp_wqueue *q, struct iovec *ret);

/* The socket took the first n bytes (n at most the length) of what
 * gp_wqueue_peek() returned: they leave the queue. */
void gp_wqueue_consume(struct gp_wqueue *q, size_t n);

/* Asynchronous writing. While no write is in flight: moves the first
 * buffers with pending bytes, at most max, to the write in flight and fills
 * iov[0..n) with their unwritten bytes (borrowed until
 * gp_wqueue_write_done()). Returns n, 0 when nothing is pending (then no
 * write starts) or a write is already in flight. */
unsigned gp_wqueue_start_write(struct gp_wqueue *q, struct iovec *iov,
			       unsigned max);

/* The write could not start after all: its buffers go back to the head of
 * the queue, as before gp_wqueue_start_write(). */
void gp_wqueue_cancel_write(struct gp_wqueue *q);

/* The write in flight completed (or failed: its bytes are gone either way).
 * Recycles its buffers and returns its byte count. */
size_t gp_wqueue_write_done(struct gp_wqueue *q);

/* Gives back the memory kept for reuse: the cache, and the empty tail
 * buffer when it is the only one pending. */
void gp_wqueue_drop_caches(struct gp_wqueue *q);

/* The heartbeat's decision, asked when nothing was sent for a heartbeat
 * period. Bytes still queued (a large message on a slow link, a peer that
 * paused reading, a record not yet flushed) are the heartbeat: a PING behind
 * them would arrive no sooner, and could only trip the queue bound; then
 * the answer is false and nothing changes. Otherwise the channel is quiet:
 * the caches are dropped and the answer is true: queue the PING now. */
bool gp_wqueue_ping_due(struct gp_wqueue *q);

#endif
