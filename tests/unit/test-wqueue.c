/* Unit tests of proto/wqueue.c, the channel's write queue, without sockets:
 * the test plays the socket (it takes iovecs and says how many bytes went
 * out) and the peer (it decodes the bytes with the real frame decoder and
 * decrypts them with the real Noise transport, so a record lost, written
 * twice or out of nonce order fails to decrypt).
 *
 * Invariants: records leave in nonce order; the queue bound and the low
 * water mark; no heartbeat PING behind queued bytes; nothing lost and no
 * nonce skipped when an empty head buffer is dropped (the bug of c680fc5 /
 * d4279d4, found then only by tests/integration/test-channel.c); buffer
 * recycling within the cache bounds; partial writes; batches. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "noise.h"
#include "test.h"
#include "wqueue.h"

#define PLAIN_MAX GP_NOISE_MAX_PLAINTEXT
#define OVERHEAD (GP_FRAME_HEADER_SIZE + GP_NOISE_TAG_SIZE)
/* A record's plaintext starts with its sequence number (u64, host order:
 * it never leaves the test), and the rest is a pattern derived from it. */
#define SEQ_SIZE 8

/* The sending side: the queue and the transport that seals into it. */
struct sender {
	struct gp_wqueue q;
	struct gp_noise_transport *tx;
	uint64_t seq;        /* next record's number */
	uint64_t committed;  /* bytes committed so far */
	uint64_t written;    /* bytes the "socket" took */
};

/* The peer: everything the socket took, in order. */
struct peer {
	struct gp_noise_transport *rx;
	uint8_t *stream;
	size_t len, cap;
	uint64_t next;       /* next record's number expected */
};

static uint64_t rng_state;

static uint64_t rnd(void)
{
	/* xorshift64: deterministic per seed, so a failure reproduces. */
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static size_t rnd_range(size_t lo, size_t hi)
{
	return lo + (size_t)(rnd() % (hi - lo + 1));
}

static uint8_t pattern(uint64_t seq, size_t i)
{
	return (uint8_t)(seq * 131 + i * 7 + 1);
}

static void pair_create(struct sender *s, struct peer *p)
{
	static const uint8_t prologue[] = "test-wqueue";
	struct gp_noise_keypair *is, *rs;
	struct gp_noise_handshake *i, *r;
	uint8_t m[256], out[256];
	size_t len, olen;

	memset(s, 0, sizeof(*s));
	memset(p, 0, sizeof(*p));
	ASSERT_OK(gp_noise_keypair_create(NULL, &is));
	ASSERT_OK(gp_noise_keypair_create(NULL, &rs));
	ASSERT_OK(gp_noise_handshake_create(GP_NOISE_IK, true, prologue,
					    sizeof(prologue), is, rs->pub, &i));
	ASSERT_OK(gp_noise_handshake_create(GP_NOISE_IK, false, prologue,
					    sizeof(prologue), rs, NULL, &r));
	ASSERT_OK(gp_noise_handshake_write_message(i, NULL, 0, m, sizeof(m),
						   &len));
	ASSERT_OK(gp_noise_handshake_read_message(r, m, len, out, sizeof(out),
						  &olen));
	ASSERT_OK(gp_noise_handshake_write_message(r, NULL, 0, m, sizeof(m),
						   &len));
	ASSERT_OK(gp_noise_handshake_read_message(i, m, len, out, sizeof(out),
						  &olen));
	ASSERT_OK(gp_noise_handshake_split(i, &s->tx));
	ASSERT_OK(gp_noise_handshake_split(r, &p->rx));
	gp_noise_handshake_destroy(i);
	gp_noise_handshake_destroy(r);
	gp_noise_keypair_destroy(is);
	gp_noise_keypair_destroy(rs);
	gp_wqueue_init(&s->q);
}

static void pair_destroy(struct sender *s, struct peer *p)
{
	gp_wqueue_finish(&s->q);
	gp_noise_transport_destroy(s->tx);
	gp_noise_transport_destroy(p->rx);
	free(p->stream);
}

/* Seals the next record, of plain bytes (SEQ_SIZE <= plain <= PLAIN_MAX),
 * as a transport frame at p. Returns its wire size. */
static size_t seal_at(struct sender *s, uint8_t *p, size_t plain)
{
	static uint8_t pt[PLAIN_MAX];
	size_t clen;

	ASSERT(plain >= SEQ_SIZE && plain <= PLAIN_MAX);
	memcpy(pt, &s->seq, SEQ_SIZE);
	for (size_t i = SEQ_SIZE; i < plain; i++)
		pt[i] = pattern(s->seq, i);
	ASSERT_OK(gp_noise_transport_encrypt(s->tx, NULL, 0, pt, plain,
					     p + GP_FRAME_HEADER_SIZE,
					     plain + GP_NOISE_TAG_SIZE, &clen));
	ASSERT_OK(gp_frame_header_write(p, GP_FRAME_TRANSPORT, clen));
	s->seq++;
	return OVERHEAD + plain;
}

static void committed(struct sender *s, size_t n)
{
	gp_wqueue_commit(&s->q, n);
	s->committed += n;
	ASSERT_UINT_EQ(gp_wqueue_queued(&s->q), s->committed - s->written);
}

/* Queues one record as the channel queues a small one: reserve, seal into
 * the room, commit. Returns its wire size. */
static size_t seal(struct sender *s, size_t plain)
{
	uint8_t *p = gp_wqueue_reserve(&s->q, OVERHEAD + plain);
	size_t n;

	ASSERT_NOT_NULL(p);
	n = seal_at(s, p, plain);
	committed(s, n);
	return n;
}

/* Queues pieces full records as the channel queues a step of a large
 * message: one reservation for all, sealed one after the other, one
 * commit. */
static void seal_step(struct sender *s, int pieces)
{
	uint8_t *p = gp_wqueue_reserve(&s->q, (size_t)pieces *
						      (OVERHEAD + PLAIN_MAX));
	size_t n = 0;

	ASSERT_NOT_NULL(p);
	for (int i = 0; i < pieces; i++)
		n += seal_at(s, p + n, PLAIN_MAX);
	committed(s, n);
}

/* Held room, as the channel queues a message sealed on a worker: the
 * records' nonces and sequence numbers are taken now, the room is held,
 * and the records are sealed into it later (hold_fill). */
struct hold {
	struct gp_wqueue_buf *b;
	uint8_t *out;
	struct gp_noise_span span;
	uint64_t seq;     /* the first record's number */
	size_t plain;     /* bytes per record */
	unsigned records;
};

static void hold_take(struct sender *s, struct hold *h, unsigned records,
		      size_t plain)
{
	size_t wire = records * (OVERHEAD + plain);

	ASSERT_OK(gp_noise_transport_take_send(s->tx, records, &h->span));
	h->out = gp_wqueue_reserve_held(&s->q, wire, &h->b);
	ASSERT_NOT_NULL(h->out);
	h->seq = s->seq;
	h->plain = plain;
	h->records = records;
	s->seq += records;
	s->committed += wire;
	ASSERT_UINT_EQ(gp_wqueue_queued(&s->q), s->committed - s->written);
}

static void hold_fill(struct sender *s, struct hold *h)
{
	static uint8_t pt[PLAIN_MAX];
	uint8_t *p = h->out;

	for (unsigned r = 0; r < h->records; r++) {
		uint64_t seq = h->seq + r;

		memcpy(pt, &seq, SEQ_SIZE);
		for (size_t i = SEQ_SIZE; i < h->plain; i++)
			pt[i] = pattern(seq, i);
		ASSERT_OK(gp_noise_span_encrypt(&h->span, r, pt, h->plain,
						p + GP_FRAME_HEADER_SIZE));
		ASSERT_OK(gp_frame_header_write(p, GP_FRAME_TRANSPORT,
						h->plain + GP_NOISE_TAG_SIZE));
		p += OVERHEAD + h->plain;
	}
	gp_wqueue_release(&s->q, h->b);
}

static void peer_take(struct peer *p, const void *data, size_t len)
{
	if (p->len + len > p->cap) {
		size_t cap = p->cap ? p->cap : 1 << 16;

		while (cap < p->len + len)
			cap *= 2;
		p->stream = realloc(p->stream, cap);
		ASSERT_NOT_NULL(p->stream);
		p->cap = cap;
	}
	memcpy(p->stream + p->len, data, len);
	p->len += len;
}

/* The socket takes at most max bytes of the head (a partial write when
 * fewer than there are). Returns the count, 0 when nothing can go. */
static size_t write_sync(struct sender *s, struct peer *p, size_t max)
{
	struct iovec span;
	size_t n;

	if (!gp_wqueue_peek(&s->q, &span))
		return 0;
	ASSERT_GT(span.iov_len, 0);
	n = span.iov_len < max ? span.iov_len : max;
	peer_take(p, span.iov_base, n);
	gp_wqueue_consume(&s->q, n);
	s->written += n;
	ASSERT_UINT_EQ(gp_wqueue_queued(&s->q), s->committed - s->written);
	return n;
}

/* Starts an asynchronous write of at most max buffers: the bytes are the
 * peer's from now on (a write, once started, writes all of them). */
static unsigned write_start(struct sender *s, struct peer *p, unsigned max,
			    size_t *ret_bytes)
{
	struct iovec iov[128];
	size_t bytes = 0;
	unsigned n;

	ASSERT_LE(max, 128);
	n = gp_wqueue_start_write(&s->q, iov, max);
	ASSERT_LE(n, max);
	for (unsigned i = 0; i < n; i++) {
		peer_take(p, iov[i].iov_base, iov[i].iov_len);
		bytes += iov[i].iov_len;
	}
	if (n)
		ASSERT(gp_wqueue_writing(&s->q));
	*ret_bytes = bytes;
	return n;
}

static void write_finish(struct sender *s, size_t bytes)
{
	ASSERT_UINT_EQ(gp_wqueue_write_done(&s->q), bytes);
	s->written += bytes;
	ASSERT(!gp_wqueue_writing(&s->q));
	ASSERT_UINT_EQ(gp_wqueue_queued(&s->q), s->committed - s->written);
}

static void drain(struct sender *s, struct peer *p)
{
	while (write_sync(s, p, SIZE_MAX) > 0)
		;
	ASSERT_EQ(gp_wqueue_queued(&s->q), 0);
	ASSERT_UINT_EQ(s->written, s->committed);
}

/* Decodes and decrypts what the peer got since the last check: every
 * record must open (the nonces come in order, none skipped), carry the next
 * sequence number and its pattern, and nothing may be left over. Returns
 * the number of records. */
static uint64_t peer_check(struct peer *p)
{
	static uint8_t pt[GP_NOISE_MAX_MSG];
	struct gp_frame_decoder d;
	size_t off = 0;
	uint64_t seq = p->next, first = p->next;

	gp_frame_decoder_init(&d, 0);
	while (off < p->len) {
		struct gp_frame f;
		size_t used, plen;
		uint64_t got;
		int r = gp_frame_decode(&d, p->stream + off, p->len - off,
					&used, &f);

		ASSERT_EQ(r, 1);
		off += used;
		ASSERT_EQ(f.kind, GP_FRAME_TRANSPORT);
		r = gp_noise_transport_decrypt(p->rx, NULL, 0, f.body, f.len,
					       pt, sizeof(pt), &plen);
		if (r < 0)
			GP_TEST_FAIL("record %" PRIu64 " does not open (%d): "
				     "lost, repeated or out of nonce order",
				     seq, r);
		ASSERT_GE(plen, SEQ_SIZE);
		memcpy(&got, pt, SEQ_SIZE);
		ASSERT_UINT_EQ(got, seq);
		for (size_t i = SEQ_SIZE; i < plen; i++)
			if (pt[i] != pattern(seq, i))
				GP_TEST_FAIL("record %" PRIu64 " byte %zu "
					     "differs", seq, i);
		seq++;
	}
	ASSERT_EQ(gp_frame_decoder_pending(&d), 0);
	gp_frame_decoder_finish(&d);
	/* Checked: a later check sees only what follows. */
	p->len = 0;
	p->next = seq;
	return seq - first;
}

/* Random mixes of sealing (small, full-size and step-sized records, and
 * held room filled later, in any order),
 * partial synchronous writes, batched asynchronous writes with more
 * records sealed while they are in flight, cache drops and heartbeat
 * decisions: every record arrives once, in nonce order. */
static void test_order(void)
{
	for (uint64_t seed = 1; seed <= 24; seed++) {
		struct sender s;
		struct peer p;
		struct hold holds[4];
		unsigned n_holds = 0;
		size_t inflight = 0;
		bool writing = false;

		rng_state = seed * 0x9e3779b97f4a7c15u;
		pair_create(&s, &p);
		for (int op = 0; op < 600; op++) {
			unsigned k = (unsigned)(rnd() % 110);
			struct iovec span;

			if (k >= 100) {
				/* Held room taken, or one filled (any of
				 * them: workers finish in any order). */
				if (k < 105 && n_holds < 4) {
					hold_take(&s, &holds[n_holds++],
						  (unsigned)rnd_range(1, 4),
						  rnd_range(SEQ_SIZE,
							    PLAIN_MAX));
				} else if (n_holds > 0) {
					unsigned h = (unsigned)(rnd() %
								n_holds);

					hold_fill(&s, &holds[h]);
					holds[h] = holds[--n_holds];
				}
			} else if (k < 35) {
				seal(&s, rnd_range(SEQ_SIZE, 300));
			} else if (k < 42) {
				seal(&s, rnd_range(PLAIN_MAX - 40, PLAIN_MAX));
			} else if (k < 45) {
				seal_step(&s, (int)rnd_range(1, 16));
			} else if (k < 70) {
				if (writing) {
					ASSERT(!gp_wqueue_peek(&s.q, &span));
					continue;
				}
				write_sync(&s, &p, rnd_range(1, 100000));
			} else if (k < 82) {
				if (writing) {
					size_t b;

					ASSERT_EQ(write_start(&s, &p, 64, &b),
						  0);
					continue;
				}
				writing = write_start(&s, &p,
						      (unsigned)rnd_range(1, 8),
						      &inflight) > 0;
			} else if (k < 92) {
				if (writing)
					write_finish(&s, inflight);
				writing = false;
			} else if (k < 96) {
				gp_wqueue_drop_caches(&s.q);
			} else if (gp_wqueue_queued(&s.q) > 0) {
				ASSERT(!gp_wqueue_ping_due(&s.q));
			} else {
				ASSERT(gp_wqueue_ping_due(&s.q));
				ASSERT_EQ(s.q.n_cache, 0);
				seal(&s, SEQ_SIZE); /* the PING */
			}
			ASSERT_UINT_EQ(gp_wqueue_queued(&s.q),
				       s.committed - s.written);
		}
		if (writing)
			write_finish(&s, inflight);
		/* Nothing goes past held room. */
		if (n_holds > 0) {
			while (write_sync(&s, &p, SIZE_MAX) > 0)
				;
			ASSERT_GT(gp_wqueue_queued(&s.q), 0);
		}
		while (n_holds > 0)
			hold_fill(&s, &holds[--n_holds]);
		drain(&s, &p);
		ASSERT_UINT_EQ(peer_check(&p), s.seq);
		ASSERT(s.seq > 100);
		pair_destroy(&s, &p);
	}
}

/* The bound: a record on an empty queue always fits, however large (a
 * message larger than max_write_queue can be sent); behind queued bytes
 * it fits only within max. Low water: drained once at most that many
 * bytes remain, partial writes included. */
static void test_bound(void)
{
	const size_t max = 300000, low = 100000;
	struct sender s;
	struct peer p;
	size_t rec;

	pair_create(&s, &p);
	ASSERT(gp_wqueue_admits(&s.q, 10 * max, max));
	ASSERT(gp_wqueue_drained(&s.q, low));
	rec = seal(&s, PLAIN_MAX);
	ASSERT_EQ(rec, GP_NOISE_MAX_MSG + GP_FRAME_HEADER_SIZE);
	/* Behind queued bytes: exactly up to the bound. */
	ASSERT(gp_wqueue_admits(&s.q, max - rec, max));
	ASSERT(!gp_wqueue_admits(&s.q, max - rec + 1, max));
	while (gp_wqueue_admits(&s.q, rec, max))
		seal(&s, PLAIN_MAX);
	ASSERT_LE(gp_wqueue_queued(&s.q), max);
	ASSERT_GT(gp_wqueue_queued(&s.q) + rec, max);
	ASSERT(!gp_wqueue_drained(&s.q, low));
	/* The socket takes a little at a time; drained comes exactly when
	 * the queue falls to low water. */
	while (gp_wqueue_queued(&s.q) > low + 1) {
		size_t left = gp_wqueue_queued(&s.q) - low - 1;

		ASSERT(!gp_wqueue_drained(&s.q, low));
		write_sync(&s, &p, left < 7777 ? left : 7777);
	}
	ASSERT(!gp_wqueue_drained(&s.q, low));
	ASSERT_EQ(write_sync(&s, &p, 1), 1);
	ASSERT_EQ(gp_wqueue_queued(&s.q), low);
	ASSERT(gp_wqueue_drained(&s.q, low));
	ASSERT(gp_wqueue_admits(&s.q, max - gp_wqueue_queued(&s.q), max));
	drain(&s, &p);
	ASSERT(gp_wqueue_admits(&s.q, 10 * max, max));
	ASSERT_UINT_EQ(peer_check(&p), s.seq);
	pair_destroy(&s, &p);
}

/* The heartbeat decision: no PING behind queued bytes, whether they wait
 * unflushed (test_heartbeat_before_flush), wait behind a partial write or
 * are in flight (test_heartbeat_behind_message); the decision then leaves
 * the queue and its cache as they were. A quiet queue says yes and drops
 * its caches. */
static void test_ping_rule(void)
{
	struct sender s;
	struct peer p;
	size_t bytes;
	unsigned n_cache;

	pair_create(&s, &p);
	/* Buffers in the cache, to see that a "no" keeps them. */
	seal(&s, 1000);
	seal(&s, PLAIN_MAX);
	ASSERT_EQ(write_start(&s, &p, 8, &bytes), 2);
	write_finish(&s, bytes);
	ASSERT_EQ(s.q.n_cache, 2);

	/* Queued, not yet flushed. */
	seal(&s, 500);
	n_cache = s.q.n_cache;
	ASSERT_GT(n_cache, 0);
	ASSERT(!gp_wqueue_ping_due(&s.q));
	ASSERT_EQ(s.q.n_cache, n_cache);
	ASSERT_UINT_EQ(gp_wqueue_queued(&s.q), s.committed - s.written);
	/* Partly written. */
	write_sync(&s, &p, 10);
	ASSERT(!gp_wqueue_ping_due(&s.q));
	/* In flight. */
	ASSERT_EQ(write_start(&s, &p, 8, &bytes), 1);
	ASSERT(!gp_wqueue_ping_due(&s.q));
	ASSERT_EQ(s.q.n_cache, n_cache);
	write_finish(&s, bytes);
	/* Quiet: yes, and the caches go. */
	ASSERT_EQ(gp_wqueue_queued(&s.q), 0);
	ASSERT(gp_wqueue_ping_due(&s.q));
	ASSERT_EQ(s.q.n_cache, 0);
	ASSERT_EQ(s.q.cache_bytes, 0);
	seal(&s, SEQ_SIZE);
	ASSERT(!gp_wqueue_ping_due(&s.q)); /* the PING itself is queued */
	drain(&s, &p);
	ASSERT_UINT_EQ(peer_check(&p), s.seq);
	pair_destroy(&s, &p);
}

/* The tail, once written out, starts over empty; a record too large for it
 * goes behind it. Dropping the caches then must keep that record (it once
 * freed the empty head and the record behind it with it: a message lost,
 * its nonce spent, and the peer failed to decrypt everything after). */
static void test_drop_empty_head(void)
{
	/* A MSG record of 65518 bytes is 65540 on the wire: more than the
	 * smallest buffer, as in test_heartbeat_before_flush. */
	const size_t big = PLAIN_MAX;
	struct sender s;
	struct peer p;
	struct iovec span;
	unsigned n_cache;

	pair_create(&s, &p);
	seal(&s, 100);
	drain(&s, &p);
	/* The written-out tail is kept, empty, as head and tail. */
	ASSERT_NOT_NULL(s.q.head);
	ASSERT(s.q.head == s.q.tail);
	ASSERT(OVERHEAD + big > GP_WQUEUE_BUF_MIN);
	seal(&s, big);
	ASSERT(s.q.head != s.q.tail); /* behind the empty head */
	gp_wqueue_drop_caches(&s.q);
	ASSERT_NOT_NULL(s.q.head);
	ASSERT_UINT_EQ(gp_wqueue_queued(&s.q), s.committed - s.written);
	seal(&s, SEQ_SIZE); /* a heartbeat after it */
	/* The empty head is recycled when the writer gets there. */
	n_cache = s.q.n_cache;
	ASSERT(gp_wqueue_peek(&s.q, &span));
	ASSERT_EQ(s.q.n_cache, n_cache + 1);
	drain(&s, &p);
	ASSERT_UINT_EQ(peer_check(&p), s.seq);

	/* Alone, the empty tail is freed, and sealing goes on after it. */
	ASSERT(s.q.head == s.q.tail);
	gp_wqueue_drop_caches(&s.q);
	ASSERT(s.q.head == NULL && s.q.tail == NULL);
	ASSERT_EQ(s.q.n_cache, 0);
	seal(&s, 200);
	drain(&s, &p);
	ASSERT_UINT_EQ(peer_check(&p), 1);

	/* The same with the head emptied by an asynchronous write, and the
	 * drop while the large record waits behind a partial write. */
	{
		size_t bytes;

		seal(&s, 100);
		drain(&s, &p);
		seal(&s, big);
		write_sync(&s, &p, 3);
		gp_wqueue_drop_caches(&s.q);
		ASSERT_EQ(write_start(&s, &p, 8, &bytes), 1);
		gp_wqueue_drop_caches(&s.q);
		write_finish(&s, bytes);
		seal(&s, SEQ_SIZE);
		drain(&s, &p);
		ASSERT_UINT_EQ(peer_check(&p), 3);
	}
	pair_destroy(&s, &p);
}

/* Buffers come back: a written-out tail is reused in place, a written
 * buffer from the cache (the most recent first, the warmest), and the
 * cache keeps at most GP_WQUEUE_CACHE_MAX buffers and
 * GP_WQUEUE_CACHE_MAX_BYTES bytes. */
static void test_recycling(void)
{
	const size_t step = 16 * (size_t)(OVERHEAD + PLAIN_MAX);
	struct gp_wqueue q;
	struct iovec iov[128], span;
	uint8_t *a, *b;
	unsigned n;

	gp_wqueue_init(&q);
	/* The tail starts over where it was. */
	a = gp_wqueue_reserve(&q, 100);
	ASSERT_NOT_NULL(a);
	memset(a, 1, 100);
	gp_wqueue_commit(&q, 100);
	ASSERT(gp_wqueue_peek(&q, &span));
	ASSERT(span.iov_base == a && span.iov_len == 100);
	gp_wqueue_consume(&q, 100);
	ASSERT(gp_wqueue_reserve(&q, 100) == a);
	ASSERT_EQ(q.n_cache, 0);

	/* A large step, written asynchronously, is cached and reused. */
	a = gp_wqueue_reserve(&q, step);
	ASSERT_NOT_NULL(a);
	gp_wqueue_commit(&q, step);
	/* The empty tail before it is recycled on the way. */
	ASSERT_EQ(gp_wqueue_start_write(&q, iov, 128), 1);
	ASSERT_EQ(q.n_cache, 1);
	ASSERT_EQ(gp_wqueue_write_done(&q), step);
	ASSERT_EQ(q.n_cache, 2);
	ASSERT(q.head == NULL && q.tail == NULL);
	b = gp_wqueue_reserve(&q, step);
	ASSERT(b == a);
	ASSERT_EQ(q.n_cache, 1);
	gp_wqueue_commit(&q, step);
	while (gp_wqueue_peek(&q, &span))
		gp_wqueue_consume(&q, span.iov_len);
	gp_wqueue_finish(&q);

	/* At most GP_WQUEUE_CACHE_MAX buffers... */
	gp_wqueue_init(&q);
	for (int i = 0; i < GP_WQUEUE_CACHE_MAX + 10; i++) {
		ASSERT_NOT_NULL(gp_wqueue_reserve(&q, GP_WQUEUE_BUF_MIN));
		gp_wqueue_commit(&q, GP_WQUEUE_BUF_MIN);
	}
	n = gp_wqueue_start_write(&q, iov, 128);
	ASSERT_EQ(n, GP_WQUEUE_CACHE_MAX + 10);
	ASSERT_UINT_EQ(gp_wqueue_write_done(&q),
		       (uint64_t)n * GP_WQUEUE_BUF_MIN);
	ASSERT_EQ(q.n_cache, GP_WQUEUE_CACHE_MAX);
	gp_wqueue_drop_caches(&q);
	ASSERT_EQ(q.n_cache, 0);
	ASSERT_EQ(q.cache_bytes, 0);

	/* ... and at most GP_WQUEUE_CACHE_MAX_BYTES bytes. */
	for (int i = 0; i < 50; i++) {
		ASSERT_NOT_NULL(gp_wqueue_reserve(&q, step));
		gp_wqueue_commit(&q, step);
	}
	n = gp_wqueue_start_write(&q, iov, 128);
	ASSERT_EQ(n, 50);
	gp_wqueue_write_done(&q);
	ASSERT_LE(q.cache_bytes, GP_WQUEUE_CACHE_MAX_BYTES);
	ASSERT_EQ(q.n_cache, GP_WQUEUE_CACHE_MAX_BYTES / step);
	gp_wqueue_finish(&q);
	ASSERT_EQ(q.n_cache, 0);
}

/* Partial writes: the socket takes any count, the next span starts where
 * it stopped, queued counts down byte for byte, and an asynchronous write
 * started after a partial one starts at the same place; a cancelled write
 * gives its buffers back as they were. */
static void test_partial(void)
{
	struct sender s;
	struct peer p;
	struct iovec span, iov[8];
	size_t before, bytes;
	uint8_t *base;

	pair_create(&s, &p);
	/* Both in the first, small buffer. */
	seal(&s, 2000);
	seal(&s, 1500);
	ASSERT(gp_wqueue_peek(&s.q, &span));
	base = span.iov_base;
	ASSERT_EQ(span.iov_len, 2 * OVERHEAD + 3500);
	for (size_t i = 0; i < 100; i++) {
		ASSERT_EQ(write_sync(&s, &p, 1), 1);
		ASSERT(gp_wqueue_peek(&s.q, &span));
		ASSERT(span.iov_base == base + i + 1);
	}
	/* Nothing taken: nothing changes. */
	before = gp_wqueue_queued(&s.q);
	gp_wqueue_consume(&s.q, 0);
	ASSERT_EQ(gp_wqueue_queued(&s.q), before);

	/* Two more buffers behind the partly written one. */
	seal(&s, PLAIN_MAX);
	seal(&s, PLAIN_MAX);
	ASSERT_EQ(gp_wqueue_start_write(&s.q, iov, 2), 2);
	ASSERT(iov[0].iov_base == base + 100);
	gp_wqueue_cancel_write(&s.q); /* one buffer was still pending */
	ASSERT(!gp_wqueue_writing(&s.q));
	ASSERT_EQ(gp_wqueue_queued(&s.q), before + 2 * (OVERHEAD + PLAIN_MAX));
	ASSERT(gp_wqueue_peek(&s.q, &span));
	ASSERT(span.iov_base == base + 100);
	write_sync(&s, &p, 1234);
	ASSERT_EQ(write_start(&s, &p, 8, &bytes), 3);
	/* Sealed while the write is in flight: waits, then follows. */
	seal(&s, 77);
	ASSERT(!gp_wqueue_peek(&s.q, &span));
	write_finish(&s, bytes);
	drain(&s, &p);
	ASSERT_UINT_EQ(peer_check(&p), s.seq);
	pair_destroy(&s, &p);
}

/* A batch takes at most max buffers; the rest, and what is sealed while
 * the write is in flight, go in the next one, in order. */
static void test_batches(void)
{
	struct sender s;
	struct peer p;
	size_t bytes;

	pair_create(&s, &p);
	for (int i = 0; i < 5; i++)
		seal(&s, PLAIN_MAX); /* one buffer each */
	ASSERT_EQ(write_start(&s, &p, 2, &bytes), 2);
	ASSERT_EQ(bytes, 2 * (OVERHEAD + PLAIN_MAX));
	seal(&s, 10);
	ASSERT_EQ(write_start(&s, &p, 8, &bytes), 0); /* one at a time */
	write_finish(&s, 2 * (OVERHEAD + PLAIN_MAX));
	ASSERT_EQ(write_start(&s, &p, 8, &bytes), 4);
	ASSERT_EQ(bytes, 3 * (OVERHEAD + PLAIN_MAX) + OVERHEAD + 10);
	write_finish(&s, bytes);
	ASSERT_EQ(gp_wqueue_queued(&s.q), 0);
	ASSERT_EQ(write_start(&s, &p, 8, &bytes), 0); /* nothing pending */
	ASSERT(!gp_wqueue_writing(&s.q));
	ASSERT_UINT_EQ(peer_check(&p), s.seq);
	pair_destroy(&s, &p);
}

/* Buffer sizes: a record queued while nothing is pending takes a small
 * buffer (an idle connection's heartbeat echo holds 4 KiB, not 64), one
 * that does not fit behind it during a burst a GP_WQUEUE_BUF_MIN one, a
 * larger record a buffer of its size; and each goes back to the cache at
 * its size. */
static void test_sizes(void)
{
	struct gp_wqueue q;
	struct iovec iov[4];

	gp_wqueue_init(&q);
	ASSERT_NOT_NULL(gp_wqueue_reserve(&q, 100));
	gp_wqueue_commit(&q, 100);
	ASSERT_NOT_NULL(gp_wqueue_reserve(&q, GP_WQUEUE_BUF_SMALL));
	gp_wqueue_commit(&q, GP_WQUEUE_BUF_SMALL);
	ASSERT_NOT_NULL(gp_wqueue_reserve(&q, GP_WQUEUE_BUF_MIN + 1));
	gp_wqueue_commit(&q, GP_WQUEUE_BUF_MIN + 1);
	ASSERT_EQ(gp_wqueue_start_write(&q, iov, 4), 3);
	ASSERT_EQ(iov[0].iov_len, 100);
	ASSERT_EQ(iov[1].iov_len, GP_WQUEUE_BUF_SMALL);
	gp_wqueue_write_done(&q);
	ASSERT_EQ(q.n_cache, 3);
	ASSERT_UINT_EQ(q.cache_bytes, GP_WQUEUE_BUF_SMALL + GP_WQUEUE_BUF_MIN +
					      GP_WQUEUE_BUF_MIN + 1);
	gp_wqueue_finish(&q);

	/* Quiet again, without a cache: small. */
	ASSERT_NOT_NULL(gp_wqueue_reserve(&q, 50));
	gp_wqueue_commit(&q, 50);
	ASSERT_EQ(gp_wqueue_start_write(&q, iov, 4), 1);
	gp_wqueue_write_done(&q);
	ASSERT_UINT_EQ(q.cache_bytes, GP_WQUEUE_BUF_SMALL);
	gp_wqueue_finish(&q);
}

int main(void)
{
	ASSERT_OK(gp_noise_init());
	test_order();
	test_bound();
	test_ping_rule();
	test_drop_empty_head();
	test_recycling();
	test_partial();
	test_batches();
	test_sizes();
	return 0;
}
