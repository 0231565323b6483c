/* bench-channel [--size MIB]... [--total MIB] [--runs N] [--seconds S]:
 * throughput of the encrypted channel against its two bounds, in one run:
 *
 *   channel    application messages of --size MiB through gp_channel over
 *              127.0.0.1, sender and receiver in two threads with one uv
 *              loop each (the sender keeps two messages queued);
 *   plain TCP  the same messages over the same kind of connection with the
 *              same frames (5-byte header, <= 65535-byte bodies), copied
 *              instead of encrypted, no crypto, the same socket options
 *              (TCP_NODELAY, the receive buffer size);
 *   cipher     ChaCha20-Poly1305 IETF encryption of 65519-byte plaintexts
 *              (65535-byte messages) on one core, through
 *              gp_noise_transport_encrypt (libsodium's AEAD plus a counter);
 *
 * and the terms of a ceiling, each measured in the same run as CPU time per
 * byte: sealing and opening (gp_noise_transport_encrypt then _decrypt of
 * the same 65535-byte messages, one core, in cache), and TCP alone: the
 * thread CPU of each side of a third transfer like the plain one but
 * without the copies (the sender writes the same framed buffers again, the
 * receiver parses the frames and drops the bytes), which is the kernel's
 * part. With both ends on one machine of C cores, the channel can then
 * reach about
 *
 *   min(C / (seal + open + tcp_tx + tcp_rx),         all cores busy
 *       1 / (seal + tcp_tx), 1 / (open + tcp_rx))    one thread per side
 *
 * bytes per second; bench-channel prints it next to the measured rate,
 * and as a fraction of the cipher's MB per CPU second (its speed when
 * nothing else runs). Each term is the least of the runs; the terms come
 * from separate transfers, so the ceiling is an estimate, not a proof:
 * the channel's own transfer may find the kernel cheaper or dearer.
 *
 * then complete IK handshakes per second: in process (both sides in one
 * thread, no sockets: create, message 1, message 2, split, destroy), and
 * over loopback sockets through gp_channel (connect to on_established on
 * both sides, 8 connections in flight, one thread and one loop for both
 * sides).
 *
 * MB = 10^6 bytes. Each figure is the best of --runs runs (default 3): the
 * machine is shared, and the best run is the one least disturbed. Each
 * transfer also reports MB per CPU second of its busier side (thread CPU
 * time), what it would reach with a core per side. The last line is one
 * JSON object (headline: the largest size; "by_size": all).
 *
 * Environment: GP_BENCH_VERBOSE=1 prints each transfer with the CPU time
 * of both sides; GP_BENCH_CHANNEL_ONLY=1 runs only the channel transfers
 * (for perf); GP_BENCH_TAKE=1 sends with gp_channel_send_take (a copy of
 * each message, sealed on libuv's thread pool: the sender's CPU is then
 * its loop thread's alone). */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "channel.h"
#include "frame.h"
#include "noise.h"

#define MIB (1024u * 1024u)
#define PIECE 65519u /* plaintext per Noise message */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double thread_cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, int r)
{
	fprintf(stderr, "bench-channel: %s: %s\n", what,
		r < 0 ? strerror(-r) : "failed");
	exit(1);
}

static struct gp_noise_keypair *coord_key, *agent_key;
/* GP_BENCH_TAKE: the channel transfers send with gp_channel_send_take. */
static bool send_take;

/* ---- the two threads of a throughput run ------------------------------- */

struct run {
	size_t msg_size;
	size_t count;
	bool plain;
	bool raw; /* plain without the copies: TCP alone */
	/* Receiver -> sender: the port, once listening. */
	uv_mutex_t mu;
	uv_cond_t cv;
	int port;
	/* Results. */
	double seconds;
	double cpu_tx, cpu_rx; /* thread CPU seconds of each side */
	size_t received;
	int error;
};

/* -- encrypted -- */

struct chan_side {
	struct run *run;
	uv_loop_t loop;
	struct gp_channel_listener *l;
	uint8_t *msg;
	size_t sent;
	size_t got;
	double t0;
	bool done;
};

static int rx_verify(struct gp_channel *ch, const struct gp_channel_hello *h,
		     struct gp_channel_verdict *v)
{
	(void)ch;
	(void)h;
	(void)v;
	return 0;
}

static void rx_message(struct gp_channel *ch, uint8_t *data, size_t len)
{
	struct chan_side *s = gp_channel_data(ch);

	(void)data;
	if (len != s->run->msg_size) {
		s->run->error = -EBADMSG;
		gp_channel_close(ch, 1, "bad size");
		return;
	}
	s->run->received += len;
	if (++s->got == s->run->count) {
		uint8_t ack = 1;

		gp_channel_send(ch, &ack, 1);
	}
}

static void rx_close(struct gp_channel *ch, enum gp_close_reason reason,
		     uint16_t code, const char *text)
{
	struct chan_side *s = gp_channel_data(ch);

	(void)code;
	if (s->got != s->run->count) {
		fprintf(stderr, "receiver: %s: %s\n",
			gp_channel_close_reason_name(reason), text);
		s->run->error = -EIO;
	}
	gp_channel_listener_destroy(s->l);
	s->l = NULL;
}

static void chan_config(struct gp_channel_config *cfg, size_t msg_size)
{
	gp_channel_config_default(cfg);
	cfg->max_message = msg_size;
	cfg->max_write_queue = 4 * msg_size + MIB;
	cfg->write_low_water = msg_size + MIB;
	cfg->heartbeat_ms = 1000;
	cfg->idle_timeout_ms = 30000;
	if (send_take)
		cfg->seal_offload_min = GP_CHANNEL_SEAL_OFFLOAD_MIN;
}

static void publish_port(struct run *r, int port)
{
	uv_mutex_lock(&r->mu);
	r->port = port;
	uv_cond_signal(&r->cv);
	uv_mutex_unlock(&r->mu);
}

static int wait_port(struct run *r)
{
	int port;

	uv_mutex_lock(&r->mu);
	while (r->port == 0)
		uv_cond_wait(&r->cv, &r->mu);
	port = r->port;
	uv_mutex_unlock(&r->mu);
	return port;
}

static void chan_receiver(void *arg)
{
	struct run *r = arg;
	struct chan_side s = { .run = r };
	struct gp_channel_callbacks cb = {
		.on_verify = rx_verify,
		.on_message = rx_message,
		.on_close = rx_close,
	};
	struct gp_channel_config cfg;
	struct sockaddr_in addr;
	int e;

	pthread_setname_np(pthread_self(), "chan-rx");
	uv_loop_init(&s.loop);
	chan_config(&cfg, r->msg_size);
	uv_ip4_addr("127.0.0.1", 0, &addr);
	e = gp_channel_listen(&s.loop, (struct sockaddr *)&addr, coord_key,
			      &cfg, &cb, &s, &s.l);
	if (e < 0)
		die("listen", e);
	publish_port(r, gp_channel_listener_port(s.l));
	r->cpu_rx = -thread_cpu_s();
	uv_run(&s.loop, UV_RUN_DEFAULT);
	r->cpu_rx += thread_cpu_s();
	uv_loop_close(&s.loop);
}

/* Keeps two messages queued: enough to keep the socket busy while the next
 * one is encrypted, without buffering the whole run. */
static void tx_fill(struct gp_channel *ch)
{
	struct chan_side *s = gp_channel_data(ch);

	while (s->sent < s->run->count &&
	       gp_channel_queued_bytes(ch) < 2 * s->run->msg_size) {
		int e;

		if (send_take) {
			/* Sealed on libuv's pool: a fresh buffer per
			 * message, as gp_channel_send_msg encodes one. */
			uint8_t *copy = malloc(s->run->msg_size);

			if (!copy)
				die("malloc", -ENOMEM);
			memcpy(copy, s->msg, s->run->msg_size);
			e = gp_channel_send_take(ch, copy, s->run->msg_size);
		} else {
			e = gp_channel_send(ch, s->msg, s->run->msg_size);
		}

		if (e < 0)
			die("send", e);
		s->sent++;
	}
}

static void tx_established(struct gp_channel *ch, const uint8_t *rs,
			   const uint8_t *payload, size_t len)
{
	struct chan_side *s = gp_channel_data(ch);

	(void)rs;
	(void)payload;
	(void)len;
	s->t0 = now_s();
	tx_fill(ch);
}

static void tx_message(struct gp_channel *ch, uint8_t *data, size_t len)
{
	struct chan_side *s = gp_channel_data(ch);

	(void)data;
	(void)len;
	s->run->seconds = now_s() - s->t0;
	s->done = true;
	gp_channel_close(ch, 0, "done");
}

static void tx_close(struct gp_channel *ch, enum gp_close_reason reason,
		     uint16_t code, const char *text)
{
	struct chan_side *s = gp_channel_data(ch);

	(void)code;
	if (!s->done) {
		fprintf(stderr, "sender: %s: %s\n",
			gp_channel_close_reason_name(reason), text);
		s->run->error = -EIO;
	}
}

static void chan_sender(void *arg)
{
	struct run *r = arg;
	struct chan_side s = { .run = r };
	struct gp_channel_callbacks cb = {
		.on_established = tx_established,
		.on_message = tx_message,
		.on_drain = tx_fill,
		.on_close = tx_close,
	};
	struct gp_channel_config cfg;
	struct sockaddr_in addr;
	struct gp_channel_peer peer = {
		.addr = (struct sockaddr *)&addr,
		.local = agent_key,
		.remote_static = coord_key->pub,
	};
	struct gp_channel *ch;
	int e;

	s.msg = malloc(r->msg_size);
	if (!s.msg)
		die("malloc", -ENOMEM);
	for (size_t i = 0; i < r->msg_size; i++)
		s.msg[i] = (uint8_t)(i * 7);
	pthread_setname_np(pthread_self(), "chan-tx");
	uv_loop_init(&s.loop);
	chan_config(&cfg, r->msg_size);
	uv_ip4_addr("127.0.0.1", wait_port(r), &addr);
	r->cpu_tx = -thread_cpu_s();
	e = gp_channel_connect(&s.loop, &peer, &cfg, &cb, &s, &ch);
	if (e < 0)
		die("connect", e);
	uv_run(&s.loop, UV_RUN_DEFAULT);
	r->cpu_tx += thread_cpu_s();
	uv_loop_close(&s.loop);
	free(s.msg);
}

/* -- plain: the same frames, copied, no crypto -- */

struct plain_side {
	struct run *run;
	uv_loop_t loop;
	uv_tcp_t server;
	uv_tcp_t tcp;
	uv_connect_t creq;
	uv_write_t wreq[2];
	uint8_t *wbuf[2];
	bool busy[2];
	size_t wire;
	uint8_t *msg;
	size_t sent;
	size_t got;
	double t0;
	/* receiver */
	struct gp_frame_decoder dec;
	uint8_t *rbuf;
	uint8_t *reasm;
	size_t have;
	bool acked;
};

static void plain_closed(uv_handle_t *h)
{
	(void)h;
}

static void plain_close_all(struct plain_side *s)
{
	if (!uv_is_closing((uv_handle_t *)&s->tcp))
		uv_close((uv_handle_t *)&s->tcp, plain_closed);
	if (s->server.type == UV_TCP &&
	    !uv_is_closing((uv_handle_t *)&s->server))
		uv_close((uv_handle_t *)&s->server, plain_closed);
}

static void plain_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
	struct plain_side *s = h->data;

	(void)sz;
	*buf = uv_buf_init((char *)s->rbuf, 256 * 1024);
}

static void plain_ack_done(uv_write_t *req, int status)
{
	(void)status;
	(void)req;
}

static void plain_rx_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct plain_side *s = st->data;
	size_t off = 0;

	if (n < 0) {
		plain_close_all(s);
		return;
	}
	while (off < (size_t)n) {
		struct gp_frame f;
		size_t used;
		int e = gp_frame_decode(&s->dec, (uint8_t *)buf->base + off,
					(size_t)n - off, &used, &f);

		if (e < 0)
			die("plain decode", e);
		off += used;
		if (e == 0)
			continue;
		/* One pass over the bytes, as the decryption would make. */
		if (!s->run->raw)
			memcpy(s->reasm + s->have, f.body, f.len);
		s->have += f.len;
		if (s->have == s->run->msg_size) {
			s->have = 0;
			s->run->received += s->run->msg_size;
			if (++s->got == s->run->count) {
				static uint8_t ack = 1;
				uv_buf_t b = uv_buf_init((char *)&ack, 1);

				uv_write(&s->wreq[0], st, &b, 1,
					 plain_ack_done);
			}
		}
	}
}

/* The receive buffer the channel asks for (channel.c, RCVBUF_WANT), under
 * the same condition, so that plain TCP runs over the same kind of
 * connection. */
static void plain_rcvbuf(uv_tcp_t *tcp)
{
	FILE *f = fopen("/proc/sys/net/core/rmem_max", "re");
	unsigned long max;
	int size = 4 * 1024 * 1024;

	if (!f)
		return;
	if (fscanf(f, "%lu", &max) == 1 && max >= (unsigned long)size)
		uv_recv_buffer_size((uv_handle_t *)tcp, &size);
	fclose(f);
}

static void plain_accept(uv_stream_t *server, int status)
{
	struct plain_side *s = server->data;

	if (status < 0)
		die("accept", status);
	uv_tcp_init(&s->loop, &s->tcp);
	s->tcp.data = s;
	uv_accept(server, (uv_stream_t *)&s->tcp);
	uv_tcp_nodelay(&s->tcp, 1);
	plain_rcvbuf(&s->tcp);
	uv_read_start((uv_stream_t *)&s->tcp, plain_alloc, plain_rx_read);
	uv_close((uv_handle_t *)&s->server, plain_closed);
}

static void plain_receiver(void *arg)
{
	struct run *r = arg;
	struct plain_side s = { .run = r };
	struct sockaddr_in addr;
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	s.rbuf = malloc(256 * 1024);
	s.reasm = malloc(r->msg_size);
	if (!s.rbuf || !s.reasm)
		die("malloc", -ENOMEM);
	gp_frame_decoder_init(&s.dec, GP_FRAME_MAX_BODY);
	uv_loop_init(&s.loop);
	uv_tcp_init(&s.loop, &s.server);
	s.server.data = &s;
	uv_ip4_addr("127.0.0.1", 0, &addr);
	uv_tcp_bind(&s.server, (struct sockaddr *)&addr, 0);
	uv_listen((uv_stream_t *)&s.server, 1, plain_accept);
	uv_tcp_getsockname(&s.server, (struct sockaddr *)&ss, &len);
	publish_port(r, ntohs(((struct sockaddr_in *)&ss)->sin_port));
	r->cpu_rx = -thread_cpu_s();
	uv_run(&s.loop, UV_RUN_DEFAULT);
	r->cpu_rx += thread_cpu_s();
	uv_loop_close(&s.loop);
	gp_frame_decoder_finish(&s.dec);
	free(s.rbuf);
	free(s.reasm);
}

static void plain_send_more(struct plain_side *s);

static void plain_written(uv_write_t *req, int status)
{
	struct plain_side *s = req->data;

	if (status < 0)
		die("plain write", status);
	s->busy[req == &s->wreq[1]] = false;
	plain_send_more(s);
}

/* Frames msg into p (memcpy where the channel encrypts). */
static void frame_message(uint8_t *p, const uint8_t *msg, size_t size)
{
	for (size_t off = 0; off < size; off += PIECE) {
		size_t n = size - off < PIECE ? size - off : PIECE;

		gp_frame_header_write(p, GP_FRAME_TRANSPORT, n);
		memcpy(p + GP_FRAME_HEADER_SIZE, msg + off, n);
		p += GP_FRAME_HEADER_SIZE + n;
	}
}

/* Frames one message into a free buffer and writes it; two buffers, as
 * the channel keeps two messages queued. */
static void plain_send_more(struct plain_side *s)
{
	for (int i = 0; i < 2 && s->sent < s->run->count; i++) {
		uv_buf_t b;

		if (s->busy[i])
			continue;
		/* TCP alone: framed once in plain_sender. */
		if (!s->run->raw)
			frame_message(s->wbuf[i], s->msg, s->run->msg_size);
		b = uv_buf_init((char *)s->wbuf[i], (unsigned)s->wire);
		s->busy[i] = true;
		s->wreq[i].data = s;
		uv_write(&s->wreq[i], (uv_stream_t *)&s->tcp, &b, 1,
			 plain_written);
		s->sent++;
	}
}

static void plain_tx_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct plain_side *s = st->data;

	(void)buf;
	if (n > 0 && !s->acked) {
		s->acked = true;
		s->run->seconds = now_s() - s->t0;
	}
	if (n != 0)
		plain_close_all(s);
}

static void plain_connected(uv_connect_t *req, int status)
{
	struct plain_side *s = req->data;

	if (status < 0)
		die("plain connect", status);
	uv_tcp_nodelay(&s->tcp, 1);
	plain_rcvbuf(&s->tcp);
	uv_read_start((uv_stream_t *)&s->tcp, plain_alloc, plain_tx_read);
	s->t0 = now_s();
	plain_send_more(s);
}

static void plain_sender(void *arg)
{
	struct run *r = arg;
	struct plain_side s = { .run = r };
	struct sockaddr_in addr;
	size_t pieces = (r->msg_size + PIECE - 1) / PIECE;

	s.wire = r->msg_size + pieces * GP_FRAME_HEADER_SIZE;
	s.msg = malloc(r->msg_size);
	s.wbuf[0] = malloc(s.wire);
	s.wbuf[1] = malloc(s.wire);
	s.rbuf = malloc(256 * 1024);
	if (!s.msg || !s.wbuf[0] || !s.wbuf[1] || !s.rbuf)
		die("malloc", -ENOMEM);
	memset(s.msg, 0x33, r->msg_size);
	for (int i = 0; i < 2 && r->raw; i++)
		frame_message(s.wbuf[i], s.msg, r->msg_size);
	uv_loop_init(&s.loop);
	uv_tcp_init(&s.loop, &s.tcp);
	s.tcp.data = &s;
	s.creq.data = &s;
	uv_ip4_addr("127.0.0.1", wait_port(r), &addr);
	r->cpu_tx = -thread_cpu_s();
	uv_tcp_connect(&s.creq, &s.tcp, (struct sockaddr *)&addr,
		       plain_connected);
	uv_run(&s.loop, UV_RUN_DEFAULT);
	r->cpu_tx += thread_cpu_s();
	uv_loop_close(&s.loop);
	free(s.msg);
	free(s.wbuf[0]);
	free(s.wbuf[1]);
	free(s.rbuf);
}

/* CPU nanoseconds per application byte of one transfer. */
struct cpu_cost {
	double tx, rx; /* thread CPU of each side */
};

/* Returns MB/s of application bytes, or a negative value on failure.
 * *ret_per_core: MB per CPU second of the busier side, which is what the
 * transfer would reach with a core of its own for each side; *ret_cost:
 * the CPU time per byte of each side. */
static double throughput(size_t msg_size, size_t total, bool plain,
			 bool raw, double *ret_per_core,
			 struct cpu_cost *ret_cost)
{
	struct run r = { .msg_size = msg_size, .plain = plain || raw,
			 .raw = raw };
	uv_thread_t rx, tx;

	double c0 = cpu_s();

	r.count = total / msg_size ? total / msg_size : 1;
	uv_mutex_init(&r.mu);
	uv_cond_init(&r.cv);
	uv_thread_create(&rx, r.plain ? plain_receiver : chan_receiver, &r);
	uv_thread_create(&tx, r.plain ? plain_sender : chan_sender, &r);
	uv_thread_join(&tx);
	uv_thread_join(&rx);
	uv_mutex_destroy(&r.mu);
	uv_cond_destroy(&r.cv);
	if (r.error || r.received != r.count * msg_size || r.seconds <= 0)
		return -1;
	*ret_per_core = (double)r.received /
			(r.cpu_tx > r.cpu_rx ? r.cpu_tx : r.cpu_rx) / 1e6;
	ret_cost->tx = r.cpu_tx * 1e9 / (double)r.received;
	ret_cost->rx = r.cpu_rx * 1e9 / (double)r.received;
	if (getenv("GP_BENCH_VERBOSE"))
		fprintf(stderr,
			"%s %zu MiB: %.0f MB/s; MB per CPU second: %.0f both "
			"sides, %.0f sender, %.0f receiver\n",
			raw ? "TCP alone" : plain ? "plain" : "channel",
			msg_size / MIB,
			(double)r.received / r.seconds / 1e6,
			(double)r.received / (cpu_s() - c0) / 1e6,
			(double)r.received / r.cpu_tx / 1e6,
			(double)r.received / r.cpu_rx / 1e6);
	return (double)r.received / r.seconds / 1e6;
}

/* ---- cipher alone, and handshakes in process ---------------------------- */

static int handshake(struct gp_noise_transport **ret_i,
		     struct gp_noise_transport **ret_r)
{
	struct gp_noise_handshake *i = NULL, *r = NULL;
	uint8_t m1[256], m2[256], p[256];
	size_t l1, l2, pl;
	int e;

	if ((e = gp_noise_handshake_create(GP_NOISE_IK, true, NULL, 0,
					   agent_key, coord_key->pub, &i)) < 0 ||
	    (e = gp_noise_handshake_create(GP_NOISE_IK, false, NULL, 0,
					   coord_key, NULL, &r)) < 0 ||
	    (e = gp_noise_handshake_write_message(i, NULL, 0, m1, sizeof(m1),
						  &l1)) < 0 ||
	    (e = gp_noise_handshake_read_message(r, m1, l1, p, sizeof(p),
						 &pl)) < 0 ||
	    (e = gp_noise_handshake_write_message(r, NULL, 0, m2, sizeof(m2),
						  &l2)) < 0 ||
	    (e = gp_noise_handshake_read_message(i, m2, l2, p, sizeof(p),
						 &pl)) < 0 ||
	    (e = gp_noise_handshake_split(i, ret_i)) < 0 ||
	    (e = gp_noise_handshake_split(r, ret_r)) < 0)
		goto out;
out:
	gp_noise_handshake_destroy(i);
	gp_noise_handshake_destroy(r);
	return e;
}

static double cipher_mbps(double seconds, double *ret_per_cpu)
{
	struct gp_noise_transport *ti, *tr;
	static uint8_t in[PIECE], out[GP_NOISE_MAX_MSG];
	double t0, c0, t;
	size_t n = 0, olen;
	int e;

	e = handshake(&ti, &tr);
	if (e < 0)
		die("handshake", e);
	t0 = now_s();
	c0 = cpu_s();
	do {
		for (int k = 0; k < 64; k++, n++) {
			e = gp_noise_transport_encrypt(ti, NULL, 0, in, PIECE,
						       out, sizeof(out), &olen);
			if (e < 0)
				die("encrypt", e);
		}
		t = now_s() - t0;
	} while (t < seconds);
	*ret_per_cpu = (double)n * PIECE / (cpu_s() - c0) / 1e6;
	gp_noise_transport_destroy(ti);
	gp_noise_transport_destroy(tr);
	return (double)n * PIECE / t / 1e6;
}

/* CPU nanoseconds per byte of sealing and then opening the same 65519
 * bytes (one core, buffers in cache): the crypto both ends of a channel
 * need, without sockets. */
static double seal_open_ns(double seconds)
{
	struct gp_noise_transport *ti, *tr;
	static uint8_t in[PIECE], out[GP_NOISE_MAX_MSG], back[PIECE];
	double t0, c0, c;
	size_t n = 0, olen, plen;
	int e;

	e = handshake(&ti, &tr);
	if (e < 0)
		die("handshake", e);
	memset(in, 0x5a, sizeof(in));
	t0 = now_s();
	c0 = thread_cpu_s();
	do {
		for (int k = 0; k < 64; k++, n++) {
			e = gp_noise_transport_encrypt(ti, NULL, 0, in, PIECE,
						       out, sizeof(out), &olen);
			if (e < 0)
				die("encrypt", e);
			e = gp_noise_transport_decrypt(tr, NULL, 0, out, olen,
						       back, sizeof(back),
						       &plen);
			if (e < 0 || plen != PIECE)
				die("decrypt", e);
		}
	} while (now_s() - t0 < seconds);
	c = thread_cpu_s() - c0;
	gp_noise_transport_destroy(ti);
	gp_noise_transport_destroy(tr);
	return c * 1e9 / ((double)n * PIECE);
}

static double handshakes_in_process(double seconds, double *ret_per_cpu)
{
	double t0 = now_s(), c0 = cpu_s(), t;
	size_t n = 0;

	do {
		struct gp_noise_transport *ti, *tr;
		int e = handshake(&ti, &tr);

		if (e < 0)
			die("handshake", e);
		gp_noise_transport_destroy(ti);
		gp_noise_transport_destroy(tr);
		n++;
		t = now_s() - t0;
	} while (t < seconds);
	*ret_per_cpu = (double)n / (cpu_s() - c0);
	return (double)n / t;
}

/* ---- handshakes over sockets ----------------------------------------- */

struct hs_bench {
	uv_loop_t *loop;
	struct gp_channel_listener *l;
	struct sockaddr_in addr;
	struct gp_channel_config cfg;
	double end;
	size_t in_flight;
	size_t completed; /* both sides established */
	size_t failed;
};

static struct hs_bench hb;

static void hs_start_one(void);

static int hs_verify(struct gp_channel *ch, const struct gp_channel_hello *h,
		     struct gp_channel_verdict *v)
{
	(void)ch;
	(void)h;
	(void)v;
	return 0;
}

static void hs_srv_established(struct gp_channel *ch, const uint8_t *rs,
			       const uint8_t *payload, size_t len)
{
	(void)rs;
	(void)payload;
	(void)len;
	hb.completed++;
	gp_channel_close(ch, 0, NULL);
}

static void hs_srv_close(struct gp_channel *ch, enum gp_close_reason reason,
			 uint16_t code, const char *text)
{
	(void)ch;
	(void)code;
	if (reason != GP_CLOSE_LOCAL) {
		hb.failed++;
		fprintf(stderr, "responder: %s: %s\n",
			gp_channel_close_reason_name(reason), text);
	}
}

static void hs_cl_close(struct gp_channel *ch, enum gp_close_reason reason,
			uint16_t code, const char *text)
{
	(void)ch;
	(void)code;
	(void)text;
	(void)reason;
	hb.in_flight--;
	if (now_s() < hb.end)
		hs_start_one();
	else if (hb.in_flight == 0)
		gp_channel_listener_destroy(hb.l);
}

static void hs_start_one(void)
{
	static const struct gp_channel_callbacks cb = {
		.on_close = hs_cl_close,
	};
	struct gp_channel_peer peer = {
		.addr = (struct sockaddr *)&hb.addr,
		.local = agent_key,
		.remote_static = coord_key->pub,
	};
	struct gp_channel *ch;
	int e = gp_channel_connect(hb.loop, &peer, &hb.cfg, &cb, NULL, &ch);

	if (e < 0)
		die("connect", e);
	hb.in_flight++;
}

static double handshakes_sockets(double seconds, double *ret_per_cpu)
{
	static const struct gp_channel_callbacks scb = {
		.on_verify = hs_verify,
		.on_established = hs_srv_established,
		.on_close = hs_srv_close,
	};
	uv_loop_t loop;
	double t0, c0;
	int e;

	memset(&hb, 0, sizeof(hb));
	uv_loop_init(&loop);
	hb.loop = &loop;
	gp_channel_config_default(&hb.cfg);
	hb.cfg.close_linger_ms = 100;
	uv_ip4_addr("127.0.0.1", 0, &hb.addr);
	e = gp_channel_listen(&loop, (struct sockaddr *)&hb.addr, coord_key,
			      &hb.cfg, &scb, NULL, &hb.l);
	if (e < 0)
		die("listen", e);
	hb.addr.sin_port = htons((uint16_t)gp_channel_listener_port(hb.l));
	t0 = now_s();
	c0 = cpu_s();
	hb.end = t0 + seconds;
	for (int i = 0; i < 8; i++)
		hs_start_one();
	uv_run(&loop, UV_RUN_DEFAULT);
	t0 = now_s() - t0;
	*ret_per_cpu = (double)hb.completed / (cpu_s() - c0);
	uv_loop_close(&loop);
	if (hb.failed)
		return -1;
	return (double)hb.completed / t0;
}

/* ---- main ------------------------------------------------------------- */

static double best(double a, double b)
{
	return a > b ? a : b;
}

static double least(double a, double b)
{
	return a < b ? a : b;
}

/* The ceiling of the header comment, in MB/s, for C cores. */
struct ceiling {
	double tcp_tx, tcp_rx;  /* ns/B: TCP alone, each side */
	double all_cores;       /* C / (seal + open + tcp) */
	double per_side;        /* the slower side with a core each */
	double mbps;            /* the lesser of the two */
};

static void ceiling_of(double seal, double open, const struct cpu_cost *tcp,
		       long cores, struct ceiling *c)
{
	c->tcp_tx = tcp->tx;
	c->tcp_rx = tcp->rx;
	c->all_cores = (double)cores * 1e3 /
		       (seal + open + c->tcp_tx + c->tcp_rx);
	c->per_side = least(1e3 / (seal + c->tcp_tx), 1e3 / (open + c->tcp_rx));
	c->mbps = least(c->all_cores, c->per_side);
}

int main(int argc, char **argv)
{
	size_t sizes[8], n_sizes = 0, total = 1024u * MIB;
	double seconds = 1.0;
	int runs = 3, e;
	double chan[8] = { 0 }, plain[8] = { 0 }, cipher = 0, cipher_cpu = 0;
	double chan_core[8] = { 0 }, plain_core[8] = { 0 };
	double hs = 0, hs_cpu = 0, hss = 0, hss_cpu = 0;
	/* Ceiling terms, ns/B: the least of all runs (the least disturbed). */
	double seal_ns = 1e9, pair_ns = 1e9, open_ns;
	struct cpu_cost chan_cost[8], tcp_cost[8];
	struct ceiling ceil[8];
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--size") == 0 && i + 1 < argc &&
		    n_sizes < 8)
			sizes[n_sizes++] = (size_t)atof(argv[++i]) * MIB;
		else if (strcmp(argv[i], "--total") == 0 && i + 1 < argc)
			total = (size_t)atof(argv[++i]) * MIB;
		else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
			runs = atoi(argv[++i]);
		else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			seconds = atof(argv[++i]);
		else {
			fprintf(stderr, "usage: bench-channel [--size MIB]... "
					"[--total MIB] [--runs N] "
					"[--seconds S]\n");
			return 2;
		}
	}
	if (n_sizes == 0) {
		sizes[n_sizes++] = 1 * MIB;
		sizes[n_sizes++] = 16 * MIB;
	}
	for (size_t s = 0; s < n_sizes; s++)
		chan_cost[s].tx = chan_cost[s].rx = tcp_cost[s].tx =
			tcp_cost[s].rx = 1e9;
	if (cores < 1)
		cores = 1;
	if (runs < 1)
		runs = 1;
	e = gp_noise_init();
	if (e < 0)
		die("gp_noise_init", e);
	if ((e = gp_noise_keypair_create(NULL, &coord_key)) < 0 ||
	    (e = gp_noise_keypair_create(NULL, &agent_key)) < 0)
		die("keys", e);

	send_take = getenv("GP_BENCH_TAKE") != NULL;
	if (getenv("GP_BENCH_CHANNEL_ONLY")) {
		/* For profiling: the channel transfers and nothing else. */
		for (int run = 0; run < runs; run++)
			for (size_t s = 0; s < n_sizes; s++)
				printf("%.0f MB/s\n",
				       throughput(sizes[s], total, false, false,
						  &cipher, &chan_cost[s]));
		return 0;
	}
	for (int run = 0; run < runs; run++) {
		double c, per_cpu;

		/* Interleaved, so that a noisy stretch hits all of them. */
		c = cipher_mbps(seconds, &per_cpu);
		if (c > cipher) {
			cipher = c;
			cipher_cpu = per_cpu;
		}
		seal_ns = least(seal_ns, 1e3 / per_cpu);
		pair_ns = least(pair_ns, seal_open_ns(seconds));
		for (size_t s = 0; s < n_sizes; s++) {
			double ch_core, pl_core, tcp_core;
			struct cpu_cost chc, plc, tcpc;
			double ch = throughput(sizes[s], total, false, false,
					       &ch_core, &chc);
			double pl = throughput(sizes[s], total, true, false,
					       &pl_core, &plc);
			double tcp = throughput(sizes[s], total, true, true,
						&tcp_core, &tcpc);

			if (ch < 0 || pl < 0 || tcp < 0) {
				fprintf(stderr, "bench-channel: a transfer "
						"failed\n");
				return 1;
			}
			chan[s] = best(chan[s], ch);
			plain[s] = best(plain[s], pl);
			chan_core[s] = best(chan_core[s], ch_core);
			plain_core[s] = best(plain_core[s], pl_core);
			if (chc.tx + chc.rx < chan_cost[s].tx + chan_cost[s].rx)
				chan_cost[s] = chc;
			tcp_cost[s].tx = least(tcp_cost[s].tx, tcpc.tx);
			tcp_cost[s].rx = least(tcp_cost[s].rx, tcpc.rx);
		}
		c = handshakes_in_process(seconds, &per_cpu);
		if (c > hs) {
			hs = c;
			hs_cpu = per_cpu;
		}
		c = handshakes_sockets(seconds, &per_cpu);
		if (c < 0) {
			fprintf(stderr, "bench-channel: handshakes failed\n");
			return 1;
		}
		if (c > hss) {
			hss = c;
			hss_cpu = per_cpu;
		}
	}

	/* Opening alone: the pair less the sealing (both hot, one core). */
	open_ns = pair_ns - seal_ns > 0 ? pair_ns - seal_ns : 0;
	for (size_t s = 0; s < n_sizes; s++)
		ceiling_of(seal_ns, open_ns, &tcp_cost[s], cores, &ceil[s]);
	printf("cipher (ChaCha20-Poly1305, 65519 B, 1 core): %.0f MB/s "
	       "(%.0f MB per CPU second)\n",
	       cipher, cipher_cpu);
	printf("CPU per byte, 1 core, in cache: seal %.3f ns, seal + open "
	       "%.3f ns; %ld cores\n",
	       seal_ns, pair_ns, cores);
	for (size_t s = 0; s < n_sizes; s++)
		printf("%zu MiB messages: channel %.0f MB/s (%.0f %% of the "
		       "cipher), plain TCP %.0f MB/s; per CPU second of the "
		       "busier side: channel %.0f MB (%.0f %% of the cipher's), "
		       "plain TCP %.0f MB\n",
		       sizes[s] / MIB, chan[s], 100 * chan[s] / cipher,
		       plain[s], chan_core[s], 100 * chan_core[s] / cipher_cpu,
		       plain_core[s]);
	for (size_t s = 0; s < n_sizes; s++)
		printf("%zu MiB ceiling: TCP alone %.3f ns/B "
		       "(sender %.3f, receiver %.3f); with both ends on %ld "
		       "cores at most %.0f MB/s, with a core per side %.0f "
		       "MB/s: %.0f MB/s = %.0f %% of the cipher (channel "
		       "reached %.0f %% of that); channel CPU %.3f ns/B "
		       "(sender %.3f, receiver %.3f) against seal + open + "
		       "TCP %.3f ns/B\n",
		       sizes[s] / MIB, ceil[s].tcp_tx + ceil[s].tcp_rx,
		       ceil[s].tcp_tx, ceil[s].tcp_rx, cores,
		       ceil[s].all_cores, ceil[s].per_side, ceil[s].mbps,
		       100 * ceil[s].mbps / cipher_cpu,
		       100 * chan[s] / ceil[s].mbps,
		       chan_cost[s].tx + chan_cost[s].rx, chan_cost[s].tx,
		       chan_cost[s].rx,
		       pair_ns + ceil[s].tcp_tx + ceil[s].tcp_rx);
	printf("IK handshakes in process: %.0f/s (%.0f per CPU second)\n", hs,
	       hs_cpu);
	printf("IK handshakes over loopback sockets: %.0f/s (%.0f per CPU "
	       "second)\n",
	       hss, hss_cpu);
	/* The headline figures are those of the largest message size. */
	{
		size_t m = 0;

		for (size_t s = 1; s < n_sizes; s++)
			if (sizes[s] > sizes[m])
				m = s;
		printf("{\"msg_MiB\": %zu, \"total_MiB\": %zu, \"runs\": %d, "
		       "\"channel_MBps\": %.1f, \"plain_tcp_MBps\": %.1f, "
		       "\"cipher_MBps\": %.1f, \"channel_vs_cipher\": %.3f, "
		       "\"channel_vs_plain_tcp\": %.3f, "
		       "\"channel_MB_per_cpu_s\": %.1f, "
		       "\"cipher_MB_per_cpu_s\": %.1f, "
		       "\"channel_vs_cipher_per_cpu\": %.3f, "
		       "\"handshakes_per_s\": %.0f, "
		       "\"handshakes_per_cpu_s\": %.0f, "
		       "\"handshake_mode\": \"in-process\", "
		       "\"socket_handshakes_per_s\": %.0f, "
		       "\"cores\": %ld, \"seal_ns_per_B\": %.3f, "
		       "\"open_ns_per_B\": %.3f, \"tcp_ns_per_B\": %.3f, "
		       "\"channel_cpu_ns_per_B\": %.3f, "
		       "\"ceiling_MBps\": %.1f, \"ceiling_vs_cipher\": %.3f, "
		       "\"channel_vs_ceiling\": %.3f, \"by_size\": [",
		       sizes[m] / MIB, total / MIB, runs, chan[m], plain[m],
		       cipher, chan[m] / cipher, chan[m] / plain[m],
		       chan_core[m], cipher_cpu, chan_core[m] / cipher_cpu, hs,
		       hs_cpu, hss, cores, seal_ns, open_ns,
		       ceil[m].tcp_tx + ceil[m].tcp_rx,
		       chan_cost[m].tx + chan_cost[m].rx, ceil[m].mbps,
		       ceil[m].mbps / cipher_cpu, chan[m] / ceil[m].mbps);
		for (size_t s = 0; s < n_sizes; s++)
			printf("%s{\"msg_MiB\": %zu, \"channel_MBps\": %.1f, "
			       "\"plain_tcp_MBps\": %.1f, "
			       "\"channel_vs_cipher\": %.3f, "
			       "\"channel_vs_cipher_per_cpu\": %.3f, "
			       "\"ceiling_MBps\": %.1f, "
			       "\"ceiling_vs_cipher\": %.3f}",
			       s ? ", " : "", sizes[s] / MIB, chan[s], plain[s],
			       chan[s] / cipher, chan_core[s] / cipher_cpu,
			       ceil[s].mbps, ceil[s].mbps / cipher_cpu);
		printf("]}\n");
	}
	gp_noise_keypair_destroy(coord_key);
	gp_noise_keypair_destroy(agent_key);
	return 0;
}
