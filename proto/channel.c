/* The encrypted connection: frames (frame.c) and Noise (noise.c) on a libuv
 * TCP stream. See channel.h for the API and docs/protocol.md "Framing and
 * the connection" for the bytes.
 *
 * Data path, chosen so that a byte is touched as few times as possible:
 * sending, a large message is encrypted straight from the caller's buffer
 * into frames in the write queue, about 1 MiB at a time, each step handed
 * to the socket at once (uv_try_write) so that the kernel copies it while
 * it is still cached and the next step can reuse the same buffer space.
 * Small messages are copied next to their record byte and encrypted in
 * place, and wait for the end of the loop iteration, so that several leave
 * in one write. What the socket does not take goes out through one
 * uv_write with several bufs; buffers queued meanwhile go together in the
 * next. Receiving, reads go into one 256 KiB buffer per channel; whole
 * frames are decrypted in place, and the pieces of a large message straight
 * into the reassembly buffer. Established connections ask for a 4 MiB
 * receive buffer where the kernel allows it (see RCVBUF_WANT). */
#include "channel.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "log.h"
#include "msg.h"

/* Both sides hash this into the handshake, so that a peer speaking another
 * channel protocol fails the handshake instead of misreading it. */
static const char prologue[] = "gradpool-channel-1";

/* Handshake message 1 travels as a GP_FRAME_HANDSHAKE frame whose body is
 * one pattern byte followed by the Noise message; the responder needs the
 * byte to initialise the right protocol before it can read the message. A
 * changed byte makes the handshake fail (the protocol name is hashed). */
#define PATTERN_BYTE_IK 1
#define PATTERN_BYTE_IKPSK2 2

/* Message 2's payload starts with the responder's verdict:
 *   u8 status: 0 accept (rest: application payload, empty so far)
 *              1 reject, then u16 LE code, then up to 255 bytes of text */
#define VERDICT_ACCEPT 0
#define VERDICT_REJECT 1

/* Record types: the first plaintext byte of a transport message.
 *   MSG    [1][payload]       one whole message of <= MSG_INLINE_MAX bytes
 *   BEGIN  [2][u32 LE total]  a message of total bytes follows in the next
 *                             ceil(total / 65519) transport messages, raw
 *                             bytes without a record byte, each full
 *                             (65519 bytes) except the last
 *   PING   [3]                heartbeat (and the initiator's confirmation)
 *   CLOSE  [4][u16 LE code][text, <= 255 bytes]   goodbye
 * Unknown record types are skipped, so that a later version may add some. */
#define REC_MSG 1
#define REC_BEGIN 2
#define REC_PING 3
#define REC_CLOSE 4

#define PLAIN_MAX GP_NOISE_MAX_PLAINTEXT          /* 65519 */
#define MSG_INLINE_MAX (PLAIN_MAX - 1)            /* 65518 */
#define TRANSPORT_FRAME_OVERHEAD (GP_FRAME_HEADER_SIZE + GP_NOISE_TAG_SIZE)

/* Reads go into one buffer per channel: small during the handshake (a
 * connection flood costs little), large once established (few syscalls). */
#define READ_BUF_HANDSHAKE 4096
#define READ_BUF_ESTABLISHED (256 * 1024)
/* Smallest write buffer: small messages share one. */
#define WBUF_MIN (64 * 1024)
/* Write buffers kept for reuse: at most this many and this many bytes, so
 * that a stream of large messages, which queues many step-sized buffers
 * when the peer is slower, reuses warm memory instead of faulting fresh
 * pages in (and glibc trimming them again) for every message. Caches are
 * dropped when the channel goes quiet (at a heartbeat). */
#define WBUF_CACHE_MAX 96
#define WBUF_CACHE_MAX_BYTES (36u * 1024 * 1024)
/* Reassembly buffers above this are freed after delivery. */
#define REASM_KEEP_MAX (16u * 1024 * 1024)
/* A large message is handed to the socket every this many pieces (about
 * 1 MiB) while it is encrypted: few enough syscalls, and the step still
 * sits in a core's L2 cache when the kernel copies it. On the 2-core
 * development machine (2 MiB L2) 16 pieces needed less CPU per byte than
 * 8 or 32 (docs/performance.md "Channel"). */
#define SEND_STEP_PIECES 16
/* Receive buffer asked for once established, where the kernel grants all of
 * it (net.core.rmem_max; Linux then books twice the size). Autotuning sizes
 * the buffer from the bytes read per round trip; over loopback, where a
 * round trip takes microseconds, it stayed near 740 KiB, and the sender
 * kept stopping for window updates: a fixed buffer took 10-20 % less CPU
 * per byte there. Where rmem_max is lower, setting the size would cap the
 * buffer below what autotuning reaches (and switch autotuning off), so the
 * kernel's default stays. */
#define RCVBUF_WANT (4 * 1024 * 1024)
/* Upper bound for config.max_message. */
#define MAX_MESSAGE_LIMIT (1u << 30)
/* uv_write bufs per batch. */
#define WRITE_BATCH 64

enum state {
	S_CONNECTING,   /* initiator: TCP connect in progress */
	S_WAIT_MSG1,    /* responder: waiting for handshake message 1 */
	S_WAIT_MSG2,    /* initiator: message 1 sent, waiting for message 2 */
	S_WAIT_CONFIRM, /* responder: message 2 sent, waiting for the first
			 * transport message */
	S_ESTABLISHED,
	S_CLOSING,      /* on the way out; see closing_graceful */
};

struct wbuf {
	struct wbuf *next;
	size_t cap;
	size_t len;
	size_t off; /* bytes already written by try_write */
	uint8_t data[];
};

struct gp_channel_listener {
	uv_tcp_t tcp;
	uv_loop_t *loop;
	struct gp_noise_keypair *key;
	struct gp_channel_config cfg;
	struct gp_channel_callbacks cb;
	void *data;
	/* One for the listener itself, one per channel it accepted. */
	unsigned refs;
	unsigned handshaking;
};

struct gp_channel {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_prepare_t flusher;
	uv_connect_t connect_req;
	uv_write_t write_req;
	uv_shutdown_t shutdown_req;
	uv_loop_t *loop;

	struct gp_channel_config cfg;
	struct gp_channel_callbacks cb;
	struct gp_channel_listener *listener; /* responder: a reference */
	void *data;

	bool initiator;
	bool connected;
	bool in_verify;
	bool psk_set;
	bool paused;
	bool closing_graceful;
	bool grace_used;        /* see grace() */
	bool shutdown_started;
	bool handles_closing;
	bool counted_handshake; /* listener->handshaking includes us */
	bool silent;            /* no on_close (failed connect() call) */
	enum state state;
	int open_handles;

	enum gp_noise_pattern pattern;
	struct gp_noise_handshake *hs;
	struct gp_noise_transport *tx;
	uint8_t remote_static[GP_NOISE_KEY_SIZE];
	bool have_remote_static;
	/* Responder: message 1's payload, kept for on_established. */
	uint8_t *hello;
	size_t hello_len;

	struct gp_frame_decoder dec;
	uint8_t *rbuf;
	size_t rbuf_cap;

	/* The message being reassembled (after a BEGIN record). */
	bool in_msg;
	uint8_t *msg;
	size_t msg_cap;
	size_t msg_total;
	size_t msg_have;

	/* Write queue: pending buffers wait for the write in flight. */
	struct wbuf *pending_head, *pending_tail;
	struct wbuf *inflight;
	struct wbuf *cache;
	unsigned n_cache;
	size_t cache_bytes;
	bool writing;
	size_t queued;
	uv_buf_t bufs[WRITE_BATCH];

	uint64_t deadline;   /* handshake deadline, loop time */
	uint64_t last_recv;
	uint64_t last_send;
	uint64_t bytes_sent;
	uint64_t bytes_received;

	enum gp_close_reason reason;
	uint16_t close_code;
	char close_text[GP_CHANNEL_TEXT_MAX + 64];
};

static const char *const reason_names[] = {
	[GP_CLOSE_LOCAL] = "closed locally",
	[GP_CLOSE_PEER_CLOSED] = "closed by peer",
	[GP_CLOSE_CONNECT_FAILED] = "connect failed",
	[GP_CLOSE_IO_ERROR] = "I/O error",
	[GP_CLOSE_HANDSHAKE_TIMEOUT] = "handshake timeout",
	[GP_CLOSE_HANDSHAKE_FAILED] = "handshake failed",
	[GP_CLOSE_KEY_MISMATCH] = "key mismatch",
	[GP_CLOSE_REJECTED] = "rejected",
	[GP_CLOSE_IDLE_TIMEOUT] = "idle timeout",
	[GP_CLOSE_DECRYPT_FAILED] = "decrypt failure",
	[GP_CLOSE_OVERSIZED_FRAME] = "oversized frame",
	[GP_CLOSE_OVERSIZED_MESSAGE] = "oversized message",
	[GP_CLOSE_TRUNCATED] = "truncated stream",
	[GP_CLOSE_PROTOCOL_ERROR] = "protocol error",
	[GP_CLOSE_WRITE_QUEUE_FULL] = "write queue full",
	[GP_CLOSE_TOO_MANY_HANDSHAKES] = "too many handshakes",
	[GP_CLOSE_NO_MEMORY] = "out of memory",
};

const char *gp_channel_close_reason_name(enum gp_close_reason reason)
{
	if ((size_t)reason < sizeof(reason_names) / sizeof(reason_names[0]) &&
	    reason_names[reason])
		return reason_names[reason];
	return "unknown";
}

void gp_channel_config_default(struct gp_channel_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->handshake_timeout_ms = 10000;
	cfg->heartbeat_ms = 5000;
	cfg->idle_timeout_ms = 30000;
	cfg->close_linger_ms = 2000;
	cfg->max_message = GP_MSG_MAX_SIZE;
	cfg->max_write_queue = 32u * 1024 * 1024;
	cfg->write_low_water = 8u * 1024 * 1024;
	cfg->rekey_interval = GP_CHANNEL_REKEY_INTERVAL;
	cfg->max_handshakes = 256;
}

static void put_u16le(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void put_u32le(uint8_t *p, uint32_t v)
{
	put_u16le(p, (uint16_t)v);
	put_u16le(p + 2, (uint16_t)(v >> 16));
}

static uint32_t get_u32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/* Copies peer-supplied text for logs, replacing what is not printable
 * ASCII, so that a peer cannot write control sequences into our logs. */
static void copy_text(char *dst, size_t cap, const uint8_t *src, size_t len)
{
	size_t i;

	if (len > cap - 1)
		len = cap - 1;
	for (i = 0; i < len; i++)
		dst[i] = (src[i] >= 0x20 && src[i] < 0x7f) ? (char)src[i] : '?';
	dst[i] = '\0';
}

/* ---- teardown --------------------------------------------------------- */

static void listener_unref(struct gp_channel_listener *l)
{
	if (--l->refs > 0)
		return;
	gp_noise_keypair_destroy(l->key);
	free(l);
}

static void free_wbufs(struct wbuf *w)
{
	while (w) {
		struct wbuf *next = w->next;

		free(w);
		w = next;
	}
}

static void channel_free(struct gp_channel *ch)
{
	gp_noise_handshake_destroy(ch->hs);
	gp_noise_transport_destroy(ch->tx);
	gp_frame_decoder_finish(&ch->dec);
	free(ch->hello);
	free(ch->rbuf);
	free(ch->msg);
	free_wbufs(ch->pending_head);
	free_wbufs(ch->inflight);
	free_wbufs(ch->cache);
	if (ch->listener)
		listener_unref(ch->listener);
	free(ch);
}

static void handle_closed(uv_handle_t *h)
{
	struct gp_channel *ch = h->data;

	if (--ch->open_handles > 0)
		return;
	if (!ch->silent)
		ch->cb.on_close(ch, ch->reason, ch->close_code, ch->close_text);
	channel_free(ch);
}

static void close_handles(struct gp_channel *ch)
{
	if (ch->handles_closing)
		return;
	ch->handles_closing = true;
	if (ch->counted_handshake) {
		ch->counted_handshake = false;
		ch->listener->handshaking--;
	}
	uv_close((uv_handle_t *)&ch->tcp, handle_closed);
	uv_close((uv_handle_t *)&ch->timer, handle_closed);
	uv_close((uv_handle_t *)&ch->flusher, handle_closed);
}

static void shutdown_done(uv_shutdown_t *req, int status)
{
	struct gp_channel *ch = req->data;

	/* Our side is finished; the peer's EOF (or the linger timer) ends
	 * the wait, so that unread bytes do not turn the close into a reset
	 * that could destroy our last records before the peer reads them. */
	if (status < 0)
		close_handles(ch);
}

static void start_shutdown(struct gp_channel *ch)
{
	int r;

	if (ch->shutdown_started || ch->handles_closing)
		return;
	ch->shutdown_started = true;
	ch->shutdown_req.data = ch;
	r = uv_shutdown(&ch->shutdown_req, (uv_stream_t *)&ch->tcp,
			shutdown_done);
	if (r < 0)
		close_handles(ch);
}

static void flush(struct gp_channel *ch);
static void timer_fired(uv_timer_t *t);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static uint8_t *queue_reserve(struct gp_channel *ch, size_t n, bool limit);
static void queue_commit(struct gp_channel *ch, size_t n);
static int seal(struct gp_channel *ch, uint8_t *frame, const uint8_t *plain,
		size_t len);

/* Ends the channel once, recording why. graceful: let what is queued (and a
 * close record, when we have a transport and the close is ours) reach the
 * peer first, within close_linger_ms; otherwise the socket closes now. */
static void teardown(struct gp_channel *ch, enum gp_close_reason reason,
		     uint16_t code, const char *text, bool graceful)
{
	if (ch->state == S_CLOSING)
		return;
	ch->state = S_CLOSING;
	ch->reason = reason;
	ch->close_code = code;
	snprintf(ch->close_text, sizeof(ch->close_text), "%s",
		 text ? text : gp_channel_close_reason_name(reason));
	gp_debug("channel %p (%s): closing: %s: %s", (void *)ch,
		 ch->initiator ? "initiator" : "responder",
		 gp_channel_close_reason_name(reason), ch->close_text);
	/* A connection that fails its handshake keeps its slot while it
	 * lingers (close_handles gives it back), so that refused handshakes
	 * too stay within max_handshakes. */
	uv_timer_stop(&ch->timer);

	if (!graceful || !ch->connected) {
		close_handles(ch);
		return;
	}
	if (ch->cfg.close_linger_ms == 0) {
		close_handles(ch);
		return;
	}
	ch->closing_graceful = true;
	/* Keep reading (and discarding) so that we notice the peer's EOF. */
	if (ch->paused) {
		ch->paused = false;
		if (uv_read_start((uv_stream_t *)&ch->tcp, on_alloc,
				  on_read) < 0) {
			close_handles(ch);
			return;
		}
	}
	uv_timer_start(&ch->timer, timer_fired, ch->cfg.close_linger_ms, 0);
	/* flush() starts the shutdown once everything is written. */
	flush(ch);
}

/* ---- write queue ------------------------------------------------------ */

static struct wbuf *wbuf_get(struct gp_channel *ch, size_t need)
{
	struct wbuf **pp, *w;
	size_t cap;

	for (pp = &ch->cache; *pp; pp = &(*pp)->next) {
		if ((*pp)->cap >= need) {
			w = *pp;
			*pp = w->next;
			ch->n_cache--;
			ch->cache_bytes -= w->cap;
			w->next = NULL;
			w->len = 0;
			w->off = 0;
			return w;
		}
	}
	cap = need < WBUF_MIN ? WBUF_MIN : need;
	w = malloc(sizeof(*w) + cap);
	if (!w)
		return NULL;
	w->next = NULL;
	w->cap = cap;
	w->len = 0;
	w->off = 0;
	return w;
}

static void wbuf_put(struct gp_channel *ch, struct wbuf *w)
{
	if (ch->n_cache < WBUF_CACHE_MAX &&
	    ch->cache_bytes + w->cap <= WBUF_CACHE_MAX_BYTES) {
		w->next = ch->cache;
		ch->cache = w;
		ch->n_cache++;
		ch->cache_bytes += w->cap;
		return;
	}
	free(w);
}

/* Gives back the memory kept for reuse; called when the channel is quiet. */
static void drop_caches(struct gp_channel *ch)
{
	if (ch->pending_head && ch->pending_head == ch->pending_tail &&
	    ch->pending_head->len == 0) {
		/* The empty tail try_write kept, when nothing follows it. */
		free(ch->pending_head);
		ch->pending_head = ch->pending_tail = NULL;
	}
	free_wbufs(ch->cache);
	ch->cache = NULL;
	ch->n_cache = 0;
	ch->cache_bytes = 0;
	if (!ch->in_msg) {
		free(ch->msg);
		ch->msg = NULL;
		ch->msg_cap = 0;
	}
}

/* Returns room for n bytes at the end of the write queue (committed with
 * queue_commit), or NULL: -ENOMEM, or, with limit, the write queue bound
 * (then the channel is closing with GP_CLOSE_WRITE_QUEUE_FULL). */
static uint8_t *queue_reserve(struct gp_channel *ch, size_t n, bool limit)
{
	struct wbuf *t = ch->pending_tail;

	if (limit && ch->queued > 0 &&
	    ch->queued + n > ch->cfg.max_write_queue) {
		teardown(ch, GP_CLOSE_WRITE_QUEUE_FULL, 0,
			 "the peer does not read fast enough", false);
		errno = ENOBUFS;
		return NULL;
	}
	if (!t || t->cap - t->len < n) {
		t = wbuf_get(ch, n);
		if (!t) {
			errno = ENOMEM;
			return NULL;
		}
		/* Behind an empty head (the buffer try_write kept) too:
		 * try_write recycles that one when it gets there. */
		if (ch->pending_tail)
			ch->pending_tail->next = t;
		else
			ch->pending_head = t;
		ch->pending_tail = t;
	}
	return t->data + t->len;
}

static void queue_commit(struct gp_channel *ch, size_t n)
{
	ch->pending_tail->len += n;
	ch->queued += n;
}

static void write_done(uv_write_t *req, int status)
{
	struct gp_channel *ch = req->data;
	struct wbuf *w = ch->inflight;
	size_t done = 0;

	ch->writing = false;
	ch->inflight = NULL;
	while (w) {
		struct wbuf *next = w->next;

		done += w->len - w->off;
		wbuf_put(ch, w);
		w = next;
	}
	ch->queued -= done;
	if (status < 0) {
		if (ch->state == S_CLOSING)
			close_handles(ch);
		else
			teardown(ch, GP_CLOSE_IO_ERROR, 0, uv_strerror(status),
				 false);
		return;
	}
	ch->bytes_sent += done;
	flush(ch);
	if (ch->state == S_ESTABLISHED && ch->cb.on_drain &&
	    ch->queued <= ch->cfg.write_low_water)
		ch->cb.on_drain(ch);
}

/* Writes what the socket takes right now, without blocking, while no
 * uv_write is in flight (bytes must leave in order). Fully written buffers
 * are recycled, except the tail, which starts over empty. Returns 0 or a
 * negative errno (the channel is then closing). */
static int try_write(struct gp_channel *ch)
{
	while (ch->pending_head && !ch->writing) {
		struct wbuf *w = ch->pending_head;
		uv_buf_t b;
		int n;

		if (w->off < w->len) {
			b = uv_buf_init((char *)w->data + w->off,
					(unsigned)(w->len - w->off));
			n = uv_try_write((uv_stream_t *)&ch->tcp, &b, 1);
			if (n == UV_EAGAIN || n == UV_ENOSYS)
				return 0;
			if (n < 0) {
				teardown(ch, GP_CLOSE_IO_ERROR, 0,
					 uv_strerror(n), false);
				return n;
			}
			w->off += (size_t)n;
			ch->queued -= (size_t)n;
			ch->bytes_sent += (uint64_t)n;
			ch->last_send = uv_now(ch->loop);
			if (w->off < w->len)
				return 0; /* the socket is full */
		}
		if (w == ch->pending_tail) {
			/* All written: start the buffer over, so that the
			 * next bytes go where the cache still is. */
			w->off = w->len = 0;
			return 0;
		}
		ch->pending_head = w->next;
		wbuf_put(ch, w);
	}
	return 0;
}

/* Sends the pending buffers: first what the socket takes at once, then the
 * rest through one uv_write with several bufs. While that write is in
 * flight, new buffers wait and go out together when it completes (write
 * batching). */
static void flush(struct gp_channel *ch)
{
	unsigned n = 0;
	struct wbuf *w, *last = NULL;
	int r;

	if (ch->writing || !ch->connected || ch->handles_closing)
		return;
	if (try_write(ch) < 0)
		return;
	if (!ch->pending_head || ch->pending_head->len == 0) {
		if (ch->state == S_CLOSING && ch->closing_graceful)
			start_shutdown(ch);
		return;
	}
	for (w = ch->pending_head; w && n < WRITE_BATCH; w = w->next) {
		ch->bufs[n++] = uv_buf_init((char *)w->data + w->off,
					    (unsigned)(w->len - w->off));
		last = w;
	}
	ch->inflight = ch->pending_head;
	ch->pending_head = last->next;
	if (!ch->pending_head)
		ch->pending_tail = NULL;
	last->next = NULL;
	ch->write_req.data = ch;
	r = uv_write(&ch->write_req, (uv_stream_t *)&ch->tcp, ch->bufs, n,
		     write_done);
	if (r < 0) {
		/* Put the buffers where channel_free finds them. */
		last->next = ch->pending_head;
		ch->pending_head = ch->inflight;
		if (!ch->pending_tail)
			ch->pending_tail = last;
		ch->inflight = NULL;
		teardown(ch, GP_CLOSE_IO_ERROR, 0, uv_strerror(r), false);
		return;
	}
	ch->writing = true;
	ch->last_send = uv_now(ch->loop);
}

/* Encrypts plain (len <= PLAIN_MAX; may lie at frame + header, then it is
 * encrypted in place) into a transport frame at frame. Returns the frame
 * size or a negative errno (-EOVERFLOW: nonce exhausted). */
static void flush_now(uv_prepare_t *p)
{
	struct gp_channel *ch = p->data;
	uint64_t before = ch->bytes_sent;

	uv_prepare_stop(p);
	flush(ch);
	/* Bytes left without a write callback: tell the application here,
	 * as write_done would have (never from inside gp_channel_send). */
	if (ch->bytes_sent != before && ch->state == S_ESTABLISHED &&
	    ch->cb.on_drain && ch->queued <= ch->cfg.write_low_water)
		ch->cb.on_drain(ch);
}

/* Small messages are written just before the loop next waits for events,
 * so that several sent from one callback leave in one write. */
static void schedule_flush(struct gp_channel *ch)
{
	if (ch->handles_closing)
		return;
	if (!ch->writing && !uv_is_active((uv_handle_t *)&ch->flusher))
		uv_prepare_start(&ch->flusher, flush_now);
}

static int seal(struct gp_channel *ch, uint8_t *frame, const uint8_t *plain,
		size_t len)
{
	size_t clen;
	int r;

	r = gp_noise_transport_encrypt(ch->tx, NULL, 0, plain, len,
				       frame + GP_FRAME_HEADER_SIZE,
				       len + GP_NOISE_TAG_SIZE, &clen);
	if (r < 0)
		return r;
	gp_frame_header_write(frame, GP_FRAME_TRANSPORT, clen);
	return (int)(GP_FRAME_HEADER_SIZE + clen);
}

/* Queues one short record (PING, CLOSE). limit: apply the queue bound. */
static int send_record(struct gp_channel *ch, const uint8_t *rec, size_t len,
		       bool limit)
{
	uint8_t *p = queue_reserve(ch, TRANSPORT_FRAME_OVERHEAD + len, limit);
	int r;

	if (!p)
		return -errno;
	r = seal(ch, p, rec, len);
	if (r < 0)
		return r;
	queue_commit(ch, (size_t)r);
	return 0;
}

static size_t wire_size(size_t len)
{
	size_t chunks;

	if (len <= MSG_INLINE_MAX)
		return TRANSPORT_FRAME_OVERHEAD + 1 + len;
	chunks = (len + PLAIN_MAX - 1) / PLAIN_MAX;
	return TRANSPORT_FRAME_OVERHEAD + 5 +
	       chunks * TRANSPORT_FRAME_OVERHEAD + len;
}

/* Queues a large message: a BEGIN record, then the pieces, encrypted
 * straight from the caller's buffer into the frames (the encryption is the
 * only pass over the data), SEND_STEP_PIECES pieces at a time. After each
 * step the socket gets what it takes at once; when it took everything, the
 * next step reuses the same, still cached, buffer space. */
static int send_large(struct gp_channel *ch, const uint8_t *src, size_t len)
{
	uint8_t begin[5] = { REC_BEGIN };
	size_t off = 0;
	bool first = true;
	int r;

	put_u32le(begin + 1, (uint32_t)len);
	while (off < len) {
		size_t left = len - off, step = SEND_STEP_PIECES * PLAIN_MAX;
		size_t pieces, wire;
		uint8_t *p, *start;

		if (step > left)
			step = left;
		pieces = (step + PLAIN_MAX - 1) / PLAIN_MAX;
		wire = pieces * TRANSPORT_FRAME_OVERHEAD + step +
		       (first ? TRANSPORT_FRAME_OVERHEAD + sizeof(begin) : 0);
		start = p = queue_reserve(ch, wire, false);
		if (!p)
			return -errno;
		if (first) {
			r = seal(ch, p, begin, sizeof(begin));
			if (r < 0)
				return r;
			p += r;
			first = false;
		}
		for (size_t done = 0; done < step;) {
			size_t n = step - done < PLAIN_MAX ? step - done :
							    PLAIN_MAX;

			r = seal(ch, p, src + off + done, n);
			if (r < 0)
				return r;
			p += r;
			done += n;
		}
		queue_commit(ch, (size_t)(p - start));
		off += step;
		r = try_write(ch);
		if (r < 0)
			return r;
	}
	return 0;
}

int gp_channel_send(struct gp_channel *ch, const void *data, size_t len)
{
	const uint8_t *src = data;
	size_t wire;
	uint8_t *p;
	int r;

	if (ch->state != S_ESTABLISHED)
		return -ENOTCONN;
	if (len > ch->cfg.max_message)
		return -EMSGSIZE;
	wire = wire_size(len);
	if (ch->queued > 0 && ch->queued + wire > ch->cfg.max_write_queue) {
		teardown(ch, GP_CLOSE_WRITE_QUEUE_FULL, 0,
			 "the peer does not read fast enough", false);
		return -ENOBUFS;
	}

	if (len > MSG_INLINE_MAX) {
		r = send_large(ch, src, len);
		if (r < 0)
			goto fail;
		flush(ch);
		return 0;
	}
	p = queue_reserve(ch, wire, false);
	if (!p)
		return -errno;
	p[GP_FRAME_HEADER_SIZE] = REC_MSG;
	if (len)
		memcpy(p + GP_FRAME_HEADER_SIZE + 1, src, len);
	r = seal(ch, p, p + GP_FRAME_HEADER_SIZE, 1 + len);
	if (r < 0)
		goto fail;
	queue_commit(ch, (size_t)r);
	schedule_flush(ch);
	return 0;

fail:
	/* The stream now holds part of a message: it cannot go on. Only
	 * nonce exhaustion, a lack of memory or a write error get here. */
	teardown(ch, r == -ENOMEM ? GP_CLOSE_NO_MEMORY : GP_CLOSE_PROTOCOL_ERROR,
		 0, r == -EOVERFLOW ? "transport nonce exhausted" : NULL, false);
	return r;
}

/* ---- timers ----------------------------------------------------------- */

static void arm_timer(struct gp_channel *ch)
{
	uint64_t now = uv_now(ch->loop), next = UINT64_MAX;

	switch (ch->state) {
	case S_CONNECTING:
	case S_WAIT_MSG1:
	case S_WAIT_MSG2:
	case S_WAIT_CONFIRM:
		next = ch->deadline;
		break;
	case S_ESTABLISHED:
		if (ch->cfg.idle_timeout_ms && !ch->paused)
			next = ch->last_recv + ch->cfg.idle_timeout_ms;
		if (ch->cfg.heartbeat_ms &&
		    ch->last_send + ch->cfg.heartbeat_ms < next)
			next = ch->last_send + ch->cfg.heartbeat_ms;
		break;
	case S_CLOSING:
		return;
	}
	if (next == UINT64_MAX) {
		uv_timer_stop(&ch->timer);
		return;
	}
	uv_timer_start(&ch->timer, timer_fired, next > now ? next - now : 0, 0);
}

/* A deadline has passed. libuv runs timers before it polls for I/O, so
 * after the process was stalled (a suspended laptop, a loaded machine) the
 * bytes that would have met the deadline may be waiting unread. Returns
 * true the first time: the timer fires again after one round of I/O (1 ms:
 * libuv 1.44 would run a 0 ms timer again before polling), and only then
 * does the deadline count. */
static bool grace(struct gp_channel *ch)
{
	if (ch->grace_used)
		return false;
	ch->grace_used = true;
	uv_timer_start(&ch->timer, timer_fired, 1, 0);
	return true;
}

static void timer_fired(uv_timer_t *t)
{
	struct gp_channel *ch = t->data;
	uint64_t now = uv_now(ch->loop);
	bool in_grace = ch->grace_used;

	switch (ch->state) {
	case S_CONNECTING:
	case S_WAIT_MSG1:
	case S_WAIT_MSG2:
	case S_WAIT_CONFIRM:
		if (now >= ch->deadline) {
			if (grace(ch))
				return;
			teardown(ch, GP_CLOSE_HANDSHAKE_TIMEOUT, 0,
				 ch->state == S_CONNECTING ?
					 "handshake timeout (still connecting)" :
					 "handshake timeout",
				 false);
			return;
		}
		break;
	case S_ESTABLISHED:
		if (ch->cfg.idle_timeout_ms && !ch->paused &&
		    now - ch->last_recv >= ch->cfg.idle_timeout_ms) {
			if (grace(ch))
				return;
			teardown(ch, GP_CLOSE_IDLE_TIMEOUT, 0,
				 "nothing received within the idle timeout",
				 false);
			return;
		}
		if (ch->cfg.heartbeat_ms &&
		    now - ch->last_send >= ch->cfg.heartbeat_ms) {
			uint8_t ping = REC_PING;

			ch->last_send = now;
			/* Bytes still queued (a large message on a slow link,
			 * or a peer that paused reading) are the heartbeat: a
			 * PING behind them would arrive no sooner, and could
			 * only trip the queue bound. */
			if (ch->queued > 0)
				goto rearm;
			/* Nothing sent for a heartbeat period: quiet. */
			drop_caches(ch);
			if (send_record(ch, &ping, 1, false) < 0) {
				teardown(ch, GP_CLOSE_NO_MEMORY, 0, NULL, false);
				return;
			}
			flush(ch);
			if (ch->state == S_CLOSING)
				return;
		}
		break;
	case S_CLOSING:
		/* The linger time is over. */
		gp_debug("channel %p: close linger expired", (void *)ch);
		close_handles(ch);
		return;
	}
rearm:
	/* No deadline has passed (any more): the next one gets its grace. */
	if (in_grace)
		ch->grace_used = false;
	arm_timer(ch);
}

/* ---- handshake -------------------------------------------------------- */

static uv_once_t rcvbuf_once = UV_ONCE_INIT;
static bool rcvbuf_granted;

static void rcvbuf_probe(void)
{
	FILE *f = fopen("/proc/sys/net/core/rmem_max", "re");
	unsigned long max;

	if (!f)
		return;
	if (fscanf(f, "%lu", &max) == 1 && max >= RCVBUF_WANT)
		rcvbuf_granted = true;
	fclose(f);
}

static void established(struct gp_channel *ch, const uint8_t *payload,
			size_t len)
{
	uv_once(&rcvbuf_once, rcvbuf_probe);
	if (rcvbuf_granted) {
		int size = RCVBUF_WANT;

		/* A hint: if it fails, autotuning stays, which works too. */
		if (uv_recv_buffer_size((uv_handle_t *)&ch->tcp, &size) < 0)
			gp_debug("channel %p: receive buffer size not set",
				 (void *)ch);
	}
	ch->state = S_ESTABLISHED;
	if (ch->counted_handshake) {
		ch->counted_handshake = false;
		ch->listener->handshaking--;
	}
	ch->last_recv = ch->last_send = uv_now(ch->loop);
	arm_timer(ch);
	if (ch->cb.on_established)
		ch->cb.on_established(ch, ch->remote_static, payload, len);
}

static int start_transport(struct gp_channel *ch)
{
	int r = gp_noise_handshake_split(ch->hs, &ch->tx);

	if (r < 0)
		return r;
	gp_noise_transport_set_rekey_interval(ch->tx, ch->cfg.rekey_interval);
	gp_noise_handshake_destroy(ch->hs);
	ch->hs = NULL;
	return 0;
}

/* Queues a whole handshake-phase frame (REFUSE, message 2). */
static int queue_frame(struct gp_channel *ch, enum gp_frame_kind kind,
		       const uint8_t *body, size_t len)
{
	uint8_t *p = queue_reserve(ch, GP_FRAME_HEADER_SIZE + len, false);

	if (!p)
		return -errno;
	gp_frame_header_write(p, kind, len);
	if (len)
		memcpy(p + GP_FRAME_HEADER_SIZE, body, len);
	queue_commit(ch, GP_FRAME_HEADER_SIZE + len);
	return 0;
}

static void read_msg1(struct gp_channel *ch, const struct gp_frame *f)
{
	struct gp_channel_listener *l = ch->listener;
	struct gp_channel_verdict verdict;
	struct gp_channel_hello hello;
	uint8_t answer[3 + GP_CHANNEL_TEXT_MAX], *p;
	size_t alen, mlen;
	int r, size;

	if (f->kind != GP_FRAME_HANDSHAKE || f->len < 1) {
		teardown(ch, GP_CLOSE_HANDSHAKE_FAILED, 0,
			 "expected handshake message 1", false);
		return;
	}
	if (f->body[0] == PATTERN_BYTE_IK) {
		ch->pattern = GP_NOISE_IK;
	} else if (f->body[0] == PATTERN_BYTE_IKPSK2) {
		ch->pattern = GP_NOISE_IKPSK2;
	} else {
		teardown(ch, GP_CLOSE_HANDSHAKE_FAILED, 0,
			 "unknown handshake pattern", false);
		return;
	}
	r = gp_noise_handshake_create(ch->pattern, false, (const uint8_t *)prologue,
				      sizeof(prologue) - 1, l->key, NULL, &ch->hs);
	if (r < 0) {
		teardown(ch, GP_CLOSE_NO_MEMORY, 0, "handshake state", false);
		return;
	}
	ch->hello = malloc(f->len);
	if (!ch->hello) {
		teardown(ch, GP_CLOSE_NO_MEMORY, 0, "handshake payload", false);
		return;
	}
	r = gp_noise_handshake_read_message(ch->hs, f->body + 1, f->len - 1,
					    ch->hello, f->len, &ch->hello_len);
	if (r < 0) {
		/* Most likely the initiator pinned another key. Tell it in
		 * clear (it carries no data), so that it can say so. */
		queue_frame(ch, GP_FRAME_REFUSE, NULL, 0);
		teardown(ch, GP_CLOSE_HANDSHAKE_FAILED, 0,
			 "handshake message 1 did not authenticate "
			 "(the initiator expects another key?)",
			 true);
		return;
	}
	memcpy(ch->remote_static, gp_noise_handshake_remote_static(ch->hs),
	       GP_NOISE_KEY_SIZE);
	ch->have_remote_static = true;

	hello.pattern = ch->pattern;
	hello.remote_static = ch->remote_static;
	hello.payload = ch->hello;
	hello.payload_len = ch->hello_len;
	memset(&verdict, 0, sizeof(verdict));
	ch->in_verify = true;
	r = ch->cb.on_verify(ch, &hello, &verdict);
	ch->in_verify = false;
	if (ch->state == S_CLOSING)
		return; /* the callback closed it */
	if (r < 0) {
		teardown(ch, GP_CLOSE_REJECTED, 0,
			 "dropped by the application", false);
		return;
	}
	if (ch->pattern == GP_NOISE_IKPSK2 && !ch->psk_set) {
		/* Without a psk no message 2 can be written; a zero psk lets
		 * it go out, and the initiator fails to read it. */
		static const uint8_t zero[GP_NOISE_PSK_SIZE];

		gp_noise_handshake_set_psk(ch->hs, zero);
		if (!verdict.reject) {
			verdict.reject = true;
			verdict.code = 0;
			snprintf(verdict.text, sizeof(verdict.text),
				 "no pre-shared key for this token");
		}
	}

	verdict.text[GP_CHANNEL_TEXT_MAX] = '\0';
	if (verdict.reject) {
		size_t tl = strlen(verdict.text);

		answer[0] = VERDICT_REJECT;
		put_u16le(answer + 1, verdict.code);
		memcpy(answer + 3, verdict.text, tl);
		alen = 3 + tl;
	} else {
		answer[0] = VERDICT_ACCEPT;
		alen = 1;
	}
	size = gp_noise_handshake_message_size(ch->hs, alen);
	if (size < 0) {
		teardown(ch, GP_CLOSE_HANDSHAKE_FAILED, 0, "message 2 size",
			 false);
		return;
	}
	p = queue_reserve(ch, GP_FRAME_HEADER_SIZE + (size_t)size, false);
	if (!p) {
		teardown(ch, GP_CLOSE_NO_MEMORY, 0, NULL, false);
		return;
	}
	r = gp_noise_handshake_write_message(ch->hs, answer, alen,
					     p + GP_FRAME_HEADER_SIZE,
					     (size_t)size, &mlen);
	if (r < 0) {
		teardown(ch, GP_CLOSE_HANDSHAKE_FAILED, 0,
			 "writing message 2 failed", false);
		return;
	}
	gp_frame_header_write(p, GP_FRAME_HANDSHAKE, mlen);
	queue_commit(ch, GP_FRAME_HEADER_SIZE + mlen);

	if (verdict.reject) {
		char text[GP_CHANNEL_TEXT_MAX + 1];

		snprintf(text, sizeof(text), "%s", verdict.text);
		teardown(ch, GP_CLOSE_REJECTED, verdict.code, text, true);
		return;
	}
	if (start_transport(ch) < 0) {
		teardown(ch, GP_CLOSE_NO_MEMORY, 0, "transport", false);
		return;
	}
	ch->state = S_WAIT_CONFIRM;
	flush(ch);
}

static void read_msg2(struct gp_channel *ch, const struct gp_frame *f)
{
	uint8_t *payload = NULL;
	size_t plen;
	int r;

	if (f->kind == GP_FRAME_REFUSE) {
		teardown(ch, GP_CLOSE_KEY_MISMATCH, 0,
			 "the coordinator could not read the handshake: its "
			 "key does not match the one in the token",
			 false);
		return;
	}
	if (f->kind != GP_FRAME_HANDSHAKE) {
		teardown(ch, GP_CLOSE_HANDSHAKE_FAILED, 0,
			 "expected handshake message 2", false);
		return;
	}
	payload = malloc(f->len ? f->len : 1);
	if (!payload) {
		teardown(ch, GP_CLOSE_NO_MEMORY, 0, NULL, false);
		return;
	}
	r = gp_noise_handshake_read_message(ch->hs, f->body, f->len, payload,
					    f->len, &plen);
	if (r < 0) {
		teardown(ch, GP_CLOSE_KEY_MISMATCH, 0,
			 ch->pattern == GP_NOISE_IKPSK2 ?
				 "handshake message 2 did not authenticate: the "
				 "coordinator key or the token secret does not "
				 "match the token" :
				 "handshake message 2 did not authenticate: the "
				 "coordinator key does not match",
			 false);
		goto out;
	}
	if (plen >= 1 && payload[0] == VERDICT_REJECT && plen >= 3) {
		char text[GP_CHANNEL_TEXT_MAX + 1];
		uint16_t code = (uint16_t)(payload[1] | payload[2] << 8);

		copy_text(text, sizeof(text), payload + 3, plen - 3);
		teardown(ch, GP_CLOSE_REJECTED, code,
			 text[0] ? text : "rejected", false);
		goto out;
	}
	if (plen < 1 || payload[0] != VERDICT_ACCEPT) {
		teardown(ch, GP_CLOSE_HANDSHAKE_FAILED, 0,
			 "malformed verdict in message 2", false);
		goto out;
	}
	if (start_transport(ch) < 0) {
		teardown(ch, GP_CLOSE_NO_MEMORY, 0, "transport", false);
		goto out;
	}
	/* The first transport message proves to the responder that we hold
	 * the ephemeral key (and the psk): it fires its on_established. */
	{
		uint8_t ping = REC_PING;

		if (send_record(ch, &ping, 1, false) < 0) {
			teardown(ch, GP_CLOSE_NO_MEMORY, 0, NULL, false);
			goto out;
		}
		flush(ch);
		/* The write may have failed (the peer reset the connection
		 * right after message 2): then the channel is closing and
		 * must not come back to life. */
		if (ch->state == S_CLOSING)
			goto out;
	}
	established(ch, payload + 1, plen - 1);
out:
	free(payload);
}

/* ---- transport -------------------------------------------------------- */

static void deliver(struct gp_channel *ch, uint8_t *data, size_t len)
{
	if (ch->cb.on_message)
		ch->cb.on_message(ch, data, len);
}

static void read_record(struct gp_channel *ch, const struct gp_frame *f)
{
	size_t plen;
	uint8_t *p = f->body;
	int r;

	if (f->kind != GP_FRAME_TRANSPORT) {
		teardown(ch, GP_CLOSE_PROTOCOL_ERROR, 0,
			 "handshake frame after the handshake", false);
		return;
	}

	if (ch->in_msg) {
		/* A piece of a large message: decrypt it straight into place. */
		size_t want = ch->msg_total - ch->msg_have;

		if (want > PLAIN_MAX)
			want = PLAIN_MAX;
		if (f->len != want + GP_NOISE_TAG_SIZE) {
			teardown(ch, GP_CLOSE_PROTOCOL_ERROR, 0,
				 "message piece of the wrong size", false);
			return;
		}
		r = gp_noise_transport_decrypt(ch->tx, NULL, 0, f->body, f->len,
					       ch->msg + ch->msg_have, want,
					       &plen);
		if (r < 0)
			goto decrypt_failed;
		ch->msg_have += plen;
		if (ch->msg_have < ch->msg_total)
			return;
		ch->in_msg = false;
		deliver(ch, ch->msg, ch->msg_total);
		if (ch->msg_cap > REASM_KEEP_MAX) {
			free(ch->msg);
			ch->msg = NULL;
			ch->msg_cap = 0;
		}
		return;
	}

	r = gp_noise_transport_decrypt(ch->tx, NULL, 0, f->body, f->len, p,
				       f->len, &plen);
	if (r < 0)
		goto decrypt_failed;
	if (ch->state == S_WAIT_CONFIRM) {
		/* The initiator proved it completed the handshake: only now
		 * is the connection real (a replayed message 1 stops before
		 * this point). */
		established(ch, ch->hello, ch->hello_len);
		free(ch->hello);
		ch->hello = NULL;
		ch->hello_len = 0;
		if (ch->state != S_ESTABLISHED)
			return;
	}
	if (plen < 1) {
		teardown(ch, GP_CLOSE_PROTOCOL_ERROR, 0, "empty record", false);
		return;
	}
	switch (p[0]) {
	case REC_MSG:
		if (plen - 1 > ch->cfg.max_message) {
			teardown(ch, GP_CLOSE_OVERSIZED_MESSAGE, 0,
				 "message larger than the maximum", false);
			return;
		}
		deliver(ch, p + 1, plen - 1);
		return;
	case REC_BEGIN: {
		uint32_t total;

		if (plen != 5) {
			teardown(ch, GP_CLOSE_PROTOCOL_ERROR, 0,
				 "malformed message start", false);
			return;
		}
		total = get_u32le(p + 1);
		if (total > ch->cfg.max_message) {
			teardown(ch, GP_CLOSE_OVERSIZED_MESSAGE, 0,
				 "message larger than the maximum", false);
			return;
		}
		if (total == 0) {
			deliver(ch, p + 1, 0);
			return;
		}
		if (ch->msg_cap < total) {
			free(ch->msg);
			ch->msg_cap = 0;
			ch->msg = malloc(total);
			if (!ch->msg) {
				teardown(ch, GP_CLOSE_NO_MEMORY, 0,
					 "reassembly buffer", false);
				return;
			}
			ch->msg_cap = total;
		}
		ch->in_msg = true;
		ch->msg_total = total;
		ch->msg_have = 0;
		return;
	}
	case REC_PING:
		return;
	case REC_CLOSE: {
		char text[GP_CHANNEL_TEXT_MAX + 1];
		uint16_t code = 0;

		if (plen >= 3)
			code = (uint16_t)(p[1] | p[2] << 8);
		copy_text(text, sizeof(text), p + 3, plen >= 3 ? plen - 3 : 0);
		teardown(ch, GP_CLOSE_PEER_CLOSED, code,
			 text[0] ? text : "closed by peer", false);
		return;
	}
	default:
		/* A record type of a later version: skip it. */
		gp_debug("channel %p: skipping record type %u", (void *)ch,
			 p[0]);
		return;
	}

decrypt_failed:
	teardown(ch, GP_CLOSE_DECRYPT_FAILED, 0,
		 r == -EOVERFLOW ? "transport nonce exhausted" :
				   "a transport message did not authenticate",
		 false);
}

static void handle_frame(struct gp_channel *ch, const struct gp_frame *f)
{
	switch (ch->state) {
	case S_WAIT_MSG1:
		read_msg1(ch, f);
		break;
	case S_WAIT_MSG2:
		read_msg2(ch, f);
		break;
	case S_WAIT_CONFIRM:
	case S_ESTABLISHED:
		read_record(ch, f);
		break;
	case S_CONNECTING:
	case S_CLOSING:
		break;
	}
}

/* ---- reading ---------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct gp_channel *ch = h->data;
	/* S_WAIT_CONFIRM is not proof of anything yet (message 1 may be a
	 * replay): it reads in the small buffer too. */
	size_t want = ch->state == S_ESTABLISHED ? READ_BUF_ESTABLISHED :
						   READ_BUF_HANDSHAKE;

	(void)suggested;
	if (ch->rbuf_cap < want) {
		uint8_t *nb = realloc(ch->rbuf, want);

		if (nb) {
			ch->rbuf = nb;
			ch->rbuf_cap = want;
		}
	}
	/* On failure libuv reports UV_ENOBUFS to on_read. */
	*buf = uv_buf_init((char *)ch->rbuf, ch->rbuf ? (unsigned)ch->rbuf_cap : 0);
}

static void on_eof(struct gp_channel *ch)
{
	if (gp_frame_decoder_pending(&ch->dec) || ch->in_msg) {
		teardown(ch, GP_CLOSE_TRUNCATED, 0,
			 "connection closed inside a frame or message", false);
		return;
	}
	switch (ch->state) {
	case S_WAIT_MSG2:
		teardown(ch, GP_CLOSE_PEER_CLOSED, 0,
			 "the coordinator closed the connection during the "
			 "handshake",
			 false);
		break;
	case S_WAIT_MSG1:
	case S_WAIT_CONFIRM:
		teardown(ch, GP_CLOSE_PEER_CLOSED, 0,
			 "connection closed during the handshake", false);
		break;
	default:
		teardown(ch, GP_CLOSE_PEER_CLOSED, 0,
			 "connection closed by peer", false);
		break;
	}
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct gp_channel *ch = s->data;
	size_t off = 0;

	if (ch->state == S_CLOSING) {
		/* Graceful close: discard until EOF or the linger timer. */
		if (nread < 0)
			close_handles(ch);
		return;
	}
	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread == UV_EOF)
			on_eof(ch);
		else if (nread == UV_ENOBUFS)
			teardown(ch, GP_CLOSE_NO_MEMORY, 0, "read buffer",
				 false);
		else
			teardown(ch, GP_CLOSE_IO_ERROR, 0,
				 uv_strerror((int)nread), false);
		return;
	}
	ch->bytes_received += (uint64_t)nread;
	ch->last_recv = uv_now(ch->loop);

	while (off < (size_t)nread && ch->state != S_CLOSING) {
		struct gp_frame f;
		size_t used;
		int r = gp_frame_decode(&ch->dec, (uint8_t *)buf->base + off,
					(size_t)nread - off, &used, &f);

		if (r < 0) {
			if (r == -EMSGSIZE)
				teardown(ch, GP_CLOSE_OVERSIZED_FRAME, 0,
					 "frame length above the maximum",
					 false);
			else if (r == -EPROTO)
				teardown(ch, GP_CLOSE_PROTOCOL_ERROR, 0,
					 "unknown frame kind", false);
			else
				teardown(ch, GP_CLOSE_NO_MEMORY, 0,
					 "frame buffer", false);
			return;
		}
		off += used;
		if (r == 1)
			handle_frame(ch, &f);
	}
}

/* ---- setup ------------------------------------------------------------ */

static struct gp_channel *channel_new(uv_loop_t *loop,
				      const struct gp_channel_config *cfg,
				      const struct gp_channel_callbacks *cb,
				      void *data, bool initiator)
{
	struct gp_channel *ch = calloc(1, sizeof(*ch));

	if (!ch)
		return NULL;
	ch->loop = loop;
	if (cfg)
		ch->cfg = *cfg;
	else
		gp_channel_config_default(&ch->cfg);
	/* Sizes stay far from the 32-bit fields of the wire and of uv_buf_t. */
	if (ch->cfg.max_message > MAX_MESSAGE_LIMIT)
		ch->cfg.max_message = MAX_MESSAGE_LIMIT;
	ch->cb = *cb;
	ch->data = data;
	ch->initiator = initiator;
	gp_frame_decoder_init(&ch->dec, GP_FRAME_MAX_BODY);
	ch->deadline = uv_now(loop) + ch->cfg.handshake_timeout_ms;
	/* Both handles are initialised before anything can fail, so that
	 * every later failure takes the one path: close_handles(). */
	uv_tcp_init(loop, &ch->tcp);
	uv_timer_init(loop, &ch->timer);
	uv_prepare_init(loop, &ch->flusher);
	ch->tcp.data = ch;
	ch->timer.data = ch;
	ch->flusher.data = ch;
	ch->open_handles = 3;
	return ch;
}

static void on_connect(uv_connect_t *req, int status)
{
	struct gp_channel *ch = req->data;
	int r;

	if (ch->state == S_CLOSING)
		return;
	if (status < 0) {
		char text[128];

		snprintf(text, sizeof(text), "connect: %s", uv_strerror(status));
		teardown(ch, GP_CLOSE_CONNECT_FAILED, 0, text, false);
		return;
	}
	ch->connected = true;
	ch->state = S_WAIT_MSG2;
	uv_tcp_nodelay(&ch->tcp, 1);
	r = uv_read_start((uv_stream_t *)&ch->tcp, on_alloc, on_read);
	if (r < 0) {
		teardown(ch, GP_CLOSE_IO_ERROR, 0, uv_strerror(r), false);
		return;
	}
	flush(ch); /* message 1 */
}

int gp_channel_connect(uv_loop_t *loop, const struct gp_channel_peer *peer,
		       const struct gp_channel_config *cfg,
		       const struct gp_channel_callbacks *cb, void *data,
		       struct gp_channel **ret)
{
	struct gp_channel *ch;
	uint8_t *p;
	size_t mlen;
	int r, size;

	if (!peer || !peer->addr || !peer->local || !peer->remote_static ||
	    !cb || !cb->on_close || (peer->payload_len && !peer->payload))
		return -EINVAL;
	r = gp_noise_init();
	if (r < 0)
		return r;
	ch = channel_new(loop, cfg, cb, data, true);
	if (!ch)
		return -ENOMEM;
	/* From here on ch has open handles: failures close them and, with
	 * silent set, free ch without calling on_close. */
	ch->silent = true;
	ch->pattern = peer->psk ? GP_NOISE_IKPSK2 : GP_NOISE_IK;
	memcpy(ch->remote_static, peer->remote_static, GP_NOISE_KEY_SIZE);
	ch->have_remote_static = true;
	r = gp_noise_handshake_create(ch->pattern, true,
				      (const uint8_t *)prologue,
				      sizeof(prologue) - 1, peer->local,
				      peer->remote_static, &ch->hs);
	if (r < 0)
		goto fail;
	if (peer->psk) {
		r = gp_noise_handshake_set_psk(ch->hs, peer->psk);
		if (r < 0)
			goto fail;
	}
	size = gp_noise_handshake_message_size(ch->hs, peer->payload_len);
	if (size < 0 || (size_t)size + 1 > GP_FRAME_MAX_BODY) {
		r = -EINVAL;
		goto fail;
	}
	p = queue_reserve(ch, GP_FRAME_HEADER_SIZE + 1 + (size_t)size, false);
	if (!p) {
		r = -ENOMEM;
		goto fail;
	}
	p[GP_FRAME_HEADER_SIZE] = peer->psk ? PATTERN_BYTE_IKPSK2 :
					      PATTERN_BYTE_IK;
	r = gp_noise_handshake_write_message(ch->hs, peer->payload,
					     peer->payload_len,
					     p + GP_FRAME_HEADER_SIZE + 1,
					     (size_t)size, &mlen);
	if (r < 0)
		goto fail;
	gp_frame_header_write(p, GP_FRAME_HANDSHAKE, 1 + mlen);
	queue_commit(ch, GP_FRAME_HEADER_SIZE + 1 + mlen);

	ch->connect_req.data = ch;
	r = uv_tcp_connect(&ch->connect_req, &ch->tcp, peer->addr, on_connect);
	if (r < 0)
		goto fail;
	ch->state = S_CONNECTING;
	ch->silent = false;
	arm_timer(ch);
	*ret = ch;
	return 0;

fail:
	teardown(ch, GP_CLOSE_CONNECT_FAILED, 0, NULL, false);
	return r;
}

static void on_connection(uv_stream_t *server, int status)
{
	struct gp_channel_listener *l = server->data;
	struct gp_channel *ch;
	int r;

	if (status < 0) {
		gp_debug("channel listener: accept: %s", uv_strerror(status));
		return;
	}
	ch = channel_new(l->loop, &l->cfg, &l->cb, l->data, false);
	if (!ch) {
		/* Take the connection off the queue and drop it. */
		uv_tcp_t *tmp = malloc(sizeof(*tmp));

		gp_debug("channel listener: out of memory, dropping a "
			 "connection");
		if (tmp && uv_tcp_init(l->loop, tmp) == 0) {
			if (uv_accept(server, (uv_stream_t *)tmp) < 0)
				gp_debug("channel listener: accept failed");
			uv_close((uv_handle_t *)tmp, (uv_close_cb)free);
		} else {
			free(tmp);
		}
		return;
	}
	ch->listener = l;
	l->refs++;
	ch->state = S_WAIT_MSG1;
	r = uv_accept(server, (uv_stream_t *)&ch->tcp);
	if (r < 0) {
		ch->silent = true;
		teardown(ch, GP_CLOSE_IO_ERROR, 0, uv_strerror(r), false);
		return;
	}
	ch->connected = true;
	if (l->handshaking >= l->cfg.max_handshakes) {
		teardown(ch, GP_CLOSE_TOO_MANY_HANDSHAKES, 0,
			 "too many connections in the handshake", false);
		return;
	}
	l->handshaking++;
	ch->counted_handshake = true;
	uv_tcp_nodelay(&ch->tcp, 1);
	r = uv_read_start((uv_stream_t *)&ch->tcp, on_alloc, on_read);
	if (r < 0) {
		teardown(ch, GP_CLOSE_IO_ERROR, 0, uv_strerror(r), false);
		return;
	}
	arm_timer(ch);
}

static void listener_closed(uv_handle_t *h)
{
	listener_unref(h->data);
}

int gp_channel_listen(uv_loop_t *loop, const struct sockaddr *addr,
		      const struct gp_noise_keypair *static_key,
		      const struct gp_channel_config *cfg,
		      const struct gp_channel_callbacks *cb, void *data,
		      struct gp_channel_listener **ret)
{
	struct gp_channel_listener *l;
	int r;

	if (!addr || !static_key || !cb || !cb->on_verify || !cb->on_close)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	r = gp_noise_keypair_create(static_key->priv, &l->key);
	if (r < 0) {
		free(l);
		return r;
	}
	l->loop = loop;
	if (cfg)
		l->cfg = *cfg;
	else
		gp_channel_config_default(&l->cfg);
	l->cb = *cb;
	l->data = data;
	l->refs = 1;
	uv_tcp_init(loop, &l->tcp);
	l->tcp.data = l;
	r = uv_tcp_bind(&l->tcp, addr, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&l->tcp, 128, on_connection);
	if (r < 0) {
		uv_close((uv_handle_t *)&l->tcp, listener_closed);
		return r;
	}
	*ret = l;
	return 0;
}

int gp_channel_listener_port(const struct gp_channel_listener *l)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss), r;

	r = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len);
	if (r < 0)
		return r;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return -EAFNOSUPPORT;
}

void gp_channel_listener_destroy(struct gp_channel_listener *l)
{
	if (!l)
		return;
	uv_close((uv_handle_t *)&l->tcp, listener_closed);
}

/* ---- small API -------------------------------------------------------- */

void gp_channel_close(struct gp_channel *ch, uint16_t code, const char *text)
{
	char t[GP_CHANNEL_TEXT_MAX + 1];

	if (ch->state == S_CLOSING)
		return;
	snprintf(t, sizeof(t), "%s", text ? text : "");
	if (ch->tx && ch->state == S_ESTABLISHED) {
		uint8_t rec[3 + GP_CHANNEL_TEXT_MAX];
		size_t tl = strlen(t);

		rec[0] = REC_CLOSE;
		put_u16le(rec + 1, code);
		memcpy(rec + 3, t, tl);
		if (send_record(ch, rec, 3 + tl, false) < 0) {
			teardown(ch, GP_CLOSE_LOCAL, code, t, false);
			return;
		}
	}
	teardown(ch, GP_CLOSE_LOCAL, code, t[0] ? t : "closed locally", true);
}

int gp_channel_set_psk(struct gp_channel *ch, const uint8_t *psk)
{
	int r;

	if (!ch->in_verify || ch->pattern != GP_NOISE_IKPSK2 || !psk)
		return -EINVAL;
	r = gp_noise_handshake_set_psk(ch->hs, psk);
	if (r < 0)
		return r;
	ch->psk_set = true;
	return 0;
}

void gp_channel_pause_reading(struct gp_channel *ch, bool pause)
{
	if (ch->state == S_CLOSING || !ch->connected || ch->paused == pause)
		return;
	ch->paused = pause;
	if (pause) {
		uv_read_stop((uv_stream_t *)&ch->tcp);
	} else {
		ch->last_recv = uv_now(ch->loop);
		if (uv_read_start((uv_stream_t *)&ch->tcp, on_alloc, on_read) <
		    0) {
			teardown(ch, GP_CLOSE_IO_ERROR, 0, "read start", false);
			return;
		}
	}
	if (ch->state == S_ESTABLISHED)
		arm_timer(ch);
}

void gp_channel_set_heartbeat(struct gp_channel *ch, uint32_t heartbeat_ms)
{
	ch->cfg.heartbeat_ms = heartbeat_ms;
	if (ch->state == S_ESTABLISHED)
		arm_timer(ch);
}

size_t gp_channel_queued_bytes(const struct gp_channel *ch)
{
	return ch->queued;
}

uint64_t gp_channel_bytes_sent(const struct gp_channel *ch)
{
	return ch->bytes_sent;
}

uint64_t gp_channel_bytes_received(const struct gp_channel *ch)
{
	return ch->bytes_received;
}

bool gp_channel_is_established(const struct gp_channel *ch)
{
	return ch->state == S_ESTABLISHED;
}

const uint8_t *gp_channel_remote_static(const struct gp_channel *ch)
{
	return ch->have_remote_static ? ch->remote_static : NULL;
}

enum gp_noise_pattern gp_channel_pattern(const struct gp_channel *ch)
{
	return ch->pattern;
}

bool gp_channel_is_initiator(const struct gp_channel *ch)
{
	return ch->initiator;
}

void gp_channel_set_data(struct gp_channel *ch, void *data)
{
	ch->data = data;
}

void *gp_channel_data(const struct gp_channel *ch)
{
	return ch->data;
}

int gp_channel_peer_name(const struct gp_channel *ch, char *buf, size_t cap)
{
	struct sockaddr_storage ss;
	char ip[64];
	int len = sizeof(ss), r, port;

	r = uv_tcp_getpeername(&ch->tcp, (struct sockaddr *)&ss, &len);
	if (r < 0)
		return r;
	r = uv_ip_name((struct sockaddr *)&ss, ip, sizeof(ip));
	if (r < 0)
		return r;
	port = ss.ss_family == AF_INET6 ?
		       ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) :
		       ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if ((size_t)snprintf(buf, cap, ss.ss_family == AF_INET6 ? "[%s]:%d" :
								   "%s:%d",
			     ip, port) >= cap)
		return -ENOBUFS;
	return 0;
}
