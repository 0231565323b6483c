/* The encrypted connection: frames (frame.c) and Noise (noise.c) on a libuv
 * TCP stream. See channel.h for the API, channel-internal.h for how the
 * channel's files divide the work, and docs/protocol.md "Framing and the
 * connection" for the bytes. This file holds the channel's lifetime: setup
 * (listen, accept, connect), teardown, the timers, and the small API. */
#include "channel.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channel-internal.h"
#include "gp-endian.h"
#include "log.h"
#include "msg.h"
#include "secmem.h"

/* Upper bound for config.max_message. */
#define MAX_MESSAGE_LIMIT (1u << 30)

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

/* Copies peer-supplied text for logs, replacing what is not printable
 * ASCII, so that a peer cannot write control sequences into our logs. */
void channel_copy_text(char *dst, size_t cap, const uint8_t *src, size_t len)
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

static void channel_free(struct gp_channel *ch)
{
	gp_noise_handshake_destroy(ch->hs);
	gp_noise_transport_destroy(ch->tx);
	gp_frame_decoder_finish(&ch->dec);
	free(ch->hello);
	channel_release_read_buffer(ch);
	free(ch->msg);
	free(ch->cipher);
	free(ch->held);
	gp_secmem_free(ch->open_span);
	gp_wqueue_finish(&ch->wq);
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
	if (ch->jobs > 0) {
		/* Workers still use the channel's write queue or handshake
		 * state: the last of them frees it (channel_job_done). */
		ch->free_pending = true;
		return;
	}
	channel_free(ch);
}

bool channel_job_done(struct gp_channel *ch)
{
	ch->jobs--;
	if (ch->free_pending) {
		if (ch->jobs == 0)
			channel_free(ch);
		return true;
	}
	return ch->handles_closing;
}

void channel_close_handles(struct gp_channel *ch)
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
		channel_close_handles(ch);
}

void channel_start_shutdown(struct gp_channel *ch)
{
	int r;

	if (ch->shutdown_started || ch->handles_closing)
		return;
	ch->shutdown_started = true;
	ch->shutdown_req.data = ch;
	r = uv_shutdown(&ch->shutdown_req, (uv_stream_t *)&ch->tcp,
			shutdown_done);
	if (r < 0)
		channel_close_handles(ch);
}

static void timer_fired(uv_timer_t *t);

int channel_read_on(struct gp_channel *ch)
{
	int r;

	if (ch->reading)
		return 0;
	r = uv_read_start((uv_stream_t *)&ch->tcp, channel_on_alloc,
			  channel_on_read);
	if (r == 0)
		ch->reading = true;
	return r;
}

void channel_read_off(struct gp_channel *ch)
{
	if (!ch->reading)
		return;
	uv_read_stop((uv_stream_t *)&ch->tcp);
	ch->reading = false;
}

int channel_resume_reading(struct gp_channel *ch)
{
	ch->paused = false;
	/* Opening jobs out: their return reads again, unless the channel
	 * closes meanwhile (it then reads to see the peer's EOF). */
	if (ch->open_hold && ch->state != S_CLOSING)
		return 0;
	return channel_read_on(ch);
}

void channel_teardown(struct gp_channel *ch, enum gp_close_reason reason,
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
		channel_close_handles(ch);
		return;
	}
	if (ch->cfg.close_linger_ms == 0) {
		channel_close_handles(ch);
		return;
	}
	ch->closing_graceful = true;
	/* Keep reading (and discarding) so that we notice the peer's EOF. */
	if (channel_resume_reading(ch) < 0) {
		channel_close_handles(ch);
		return;
	}
	uv_timer_start(&ch->timer, timer_fired, ch->cfg.close_linger_ms, 0);
	/* channel_flush() starts the shutdown once everything is written. */
	channel_flush(ch);
}

/* ---- timers ----------------------------------------------------------- */

void channel_arm_timer(struct gp_channel *ch)
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
		if (ch->cfg.idle_timeout_ms && !ch->paused && !ch->open_hold)
			next = ch->last_recv + ch->cfg.idle_timeout_ms;
		if (ch->cfg.heartbeat_ms &&
		    ch->last_send + ch->cfg.heartbeat_ms < next)
			next = ch->last_send + ch->cfg.heartbeat_ms;
		if (ch->drained_at &&
		    ch->drained_at + CHANNEL_CACHE_IDLE_MS < next)
			next = ch->drained_at + CHANNEL_CACHE_IDLE_MS;
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

/* Nothing was sent for a heartbeat period: a PING, unless bytes are still
 * queued (gp_wqueue_ping_due says why they are the heartbeat). Returns
 * false when the channel is closing. */
static bool heartbeat(struct gp_channel *ch)
{
	uint8_t ping = REC_PING;

	if (!gp_wqueue_ping_due(&ch->wq))
		return true;
	/* Quiet: the write queue dropped its caches, and so do we. */
	channel_drop_reassembly(ch);
	if (channel_send_record(ch, &ping, 1) < 0) {
		channel_teardown(ch, GP_CLOSE_NO_MEMORY, 0, NULL, false);
		return false;
	}
	channel_flush(ch);
	return ch->state != S_CLOSING;
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
			channel_teardown(ch, GP_CLOSE_HANDSHAKE_TIMEOUT, 0,
					 ch->state == S_CONNECTING ?
						 "handshake timeout (still "
						 "connecting)" :
						 "handshake timeout",
					 false);
			return;
		}
		break;
	case S_ESTABLISHED:
		if (ch->cfg.idle_timeout_ms && !ch->paused && !ch->open_hold &&
		    now - ch->last_recv >= ch->cfg.idle_timeout_ms) {
			if (grace(ch))
				return;
			channel_teardown(ch, GP_CLOSE_IDLE_TIMEOUT, 0,
					 "nothing received within the idle "
					 "timeout",
					 false);
			return;
		}
		if (ch->cfg.heartbeat_ms &&
		    now - ch->last_send >= ch->cfg.heartbeat_ms) {
			ch->last_send = now;
			if (!heartbeat(ch))
				return;
		}
		if (ch->drained_at &&
		    now - ch->drained_at >= CHANNEL_CACHE_IDLE_MS) {
			/* Written out a while ago: with thousands of mostly
			 * idle connections, their buffers are most of the
			 * memory. A busy one refills its cache at once. */
			ch->drained_at = 0;
			if (gp_wqueue_queued(&ch->wq) == 0 &&
			    !gp_wqueue_writing(&ch->wq)) {
				gp_wqueue_drop_caches(&ch->wq);
				channel_drop_reassembly(ch);
			}
		}
		break;
	case S_CLOSING:
		/* The linger time is over. */
		gp_debug("channel %p: close linger expired", (void *)ch);
		channel_close_handles(ch);
		return;
	}
	/* No deadline has passed (any more): the next one gets its grace. */
	if (in_grace)
		ch->grace_used = false;
	channel_arm_timer(ch);
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
	gp_wqueue_init(&ch->wq);
	ch->deadline = uv_now(loop) + ch->cfg.handshake_timeout_ms;
	/* Both handles are initialised before anything can fail, so that
	 * every later failure takes the one path: channel_close_handles(). */
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
		channel_teardown(ch, GP_CLOSE_CONNECT_FAILED, 0, text, false);
		return;
	}
	ch->connected = true;
	ch->state = S_WAIT_MSG2;
	uv_tcp_nodelay(&ch->tcp, 1);
	r = channel_read_on(ch);
	if (r < 0) {
		channel_teardown(ch, GP_CLOSE_IO_ERROR, 0, uv_strerror(r), false);
		return;
	}
	channel_flush(ch); /* message 1 */
}

int gp_channel_connect(uv_loop_t *loop, const struct gp_channel_peer *peer,
		       const struct gp_channel_config *cfg,
		       const struct gp_channel_callbacks *cb, void *data,
		       struct gp_channel **ret)
{
	struct gp_channel *ch;
	int r;

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
	r = channel_write_msg1(ch, peer);
	if (r < 0)
		goto fail;
	if (peer->bind_addr) {
		r = uv_tcp_bind(&ch->tcp, peer->bind_addr, 0);
		if (r < 0)
			goto fail;
	}
	ch->connect_req.data = ch;
	r = uv_tcp_connect(&ch->connect_req, &ch->tcp, peer->addr, on_connect);
	if (r < 0)
		goto fail;
	ch->state = S_CONNECTING;
	ch->silent = false;
	channel_arm_timer(ch);
	*ret = ch;
	return 0;

fail:
	channel_teardown(ch, GP_CLOSE_CONNECT_FAILED, 0, NULL, false);
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
		channel_teardown(ch, GP_CLOSE_IO_ERROR, 0, uv_strerror(r), false);
		return;
	}
	ch->connected = true;
	if (l->handshaking >= l->cfg.max_handshakes) {
		channel_teardown(ch, GP_CLOSE_TOO_MANY_HANDSHAKES, 0,
			 "too many connections in the handshake", false);
		return;
	}
	l->handshaking++;
	ch->counted_handshake = true;
	uv_tcp_nodelay(&ch->tcp, 1);
	r = channel_read_on(ch);
	if (r < 0) {
		channel_teardown(ch, GP_CLOSE_IO_ERROR, 0, uv_strerror(r), false);
		return;
	}
	channel_arm_timer(ch);
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
		/* A join storm of thousands: the kernel caps the backlog at
		 * net.core.somaxconn (4096 by default since Linux 5.4); a
		 * full backlog drops SYNs, which clients retry after 1, 3,
		 * 7 s. */
		r = uv_listen((uv_stream_t *)&l->tcp, 4096, on_connection);
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
		gp_put_le16(rec + 1, code);
		memcpy(rec + 3, t, tl);
		if (channel_send_record(ch, rec, 3 + tl) < 0) {
			channel_teardown(ch, GP_CLOSE_LOCAL, code, t, false);
			return;
		}
	}
	channel_teardown(ch, GP_CLOSE_LOCAL, code, t[0] ? t : "closed locally", true);
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
		channel_read_off(ch);
	} else if (!ch->open_hold) { /* else the opening's return reads */
		ch->last_recv = uv_now(ch->loop);
		if (channel_read_on(ch) < 0) {
			channel_teardown(ch, GP_CLOSE_IO_ERROR, 0, "read start", false);
			return;
		}
	}
	if (ch->state == S_ESTABLISHED)
		channel_arm_timer(ch);
}

void gp_channel_set_heartbeat(struct gp_channel *ch, uint32_t heartbeat_ms)
{
	ch->cfg.heartbeat_ms = heartbeat_ms;
	if (ch->state == S_ESTABLISHED)
		channel_arm_timer(ch);
}

size_t gp_channel_queued_bytes(const struct gp_channel *ch)
{
	return gp_wqueue_queued(&ch->wq);
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

int gp_channel_send_msg(struct gp_channel *ch, const struct gp_msg *msg)
{
	uint8_t *buf = NULL;
	size_t len;
	int r;

	r = gp_msg_encode_alloc(msg, &buf, &len);
	if (r < 0)
		return r;
	return gp_channel_send_take(ch, buf, len);
}
