/* The encrypted channel over real TCP on 127.0.0.1 (ephemeral ports), with
 * server and clients on one uv loop: IK and IKpsk2 handshakes, messages up to
 * the maximum, wrong keys and secrets, token verdicts, tampering, replay,
 * oversized and truncated frames, silent peers, idle timeouts, a peer that
 * never reads, and the rekey schedule.
 *
 * The responder side keeps a small in-memory token table and member list,
 * the way the coordinator does, to show that the callbacks allow consuming a
 * token use only once the join is proven. */
#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "channel.h"
#include "frame.h"
#include "log.h"
#include "msg.h"
#include "noise.h"
#include "test.h"
#include "token.h"

/* Message 1 payload of this test: [u8 kind][token id, join only]. */
#define HELLO_MEMBER 0
#define HELLO_JOIN 1
#define MAX_MSG (4u * 1024 * 1024)

static uv_loop_t *loop;
static struct gp_noise_keypair *coord_key, *agent_key, *other_key;

/* ---- the responder: token table, members, echo ------------------------- */

#define N_TOKENS 32
#define N_MEMBERS 8

struct server {
	struct gp_channel_listener *l;
	int port;
	uint8_t token_key[GP_TOKEN_KEY_SIZE];
	uint8_t hash_key[GP_TOKEN_KEY_SIZE];
	struct gp_token_record records[N_TOKENS];
	size_t n_records;
	uint8_t members[N_MEMBERS][GP_NOISE_KEY_SIZE];
	size_t n_members;
	int verify_calls;
	int established;
	int closes;
	enum gp_close_reason last_reason;
	uint16_t last_code;
	char last_text[300];
	struct gp_channel *last_ch;
	bool echo;
	bool echo_take;  /* echo with gp_channel_send_take (a copy) */
	int messages;
	size_t last_len;
	/* What on_message does to the channel besides echoing: closes it,
	 * or pauses and resumes its reading. */
	bool close_in_message;
	bool pause_in_message;
};

static struct server srv;

static struct gp_token_record *find_record(const uint8_t *id)
{
	for (size_t i = 0; i < srv.n_records; i++)
		if (memcmp(srv.records[i].id, id, GP_TOKEN_ID_SIZE) == 0)
			return &srv.records[i];
	return NULL;
}

static bool is_member(const uint8_t *key)
{
	for (size_t i = 0; i < srv.n_members; i++)
		if (memcmp(srv.members[i], key, GP_NOISE_KEY_SIZE) == 0)
			return true;
	return false;
}

static uint16_t reject_code(enum gp_token_verdict v)
{
	switch (v) {
	case GP_TOKEN_EXPIRED:
		return GP_REJECT_TOKEN_EXPIRED;
	case GP_TOKEN_USED_UP:
		return GP_REJECT_TOKEN_USED_UP;
	case GP_TOKEN_REVOKED:
		return GP_REJECT_TOKEN_REVOKED;
	default:
		return GP_REJECT_BAD_TOKEN;
	}
}

/* Judges a join without changing anything: message 1 may be a replay. */
static int srv_verify(struct gp_channel *ch, const struct gp_channel_hello *h,
		      struct gp_channel_verdict *v)
{
	srv.verify_calls++;
	if (h->payload_len < 1)
		return -EINVAL;
	if (h->payload[0] == HELLO_JOIN) {
		uint8_t secret[GP_TOKEN_SECRET_SIZE], psk[GP_TOKEN_PSK_SIZE];
		struct gp_token_record *rec;
		enum gp_token_verdict verdict;

		ASSERT_EQ(h->pattern, GP_NOISE_IKPSK2);
		if (h->payload_len != 1 + GP_TOKEN_ID_SIZE)
			return -EINVAL;
		/* The psk of whatever id was presented, so that even a
		 * refusal reaches a holder of the right secret. */
		ASSERT_OK(gp_token_secret_derive(srv.token_key, h->payload + 1,
						 secret));
		ASSERT_OK(gp_token_psk(secret, psk));
		ASSERT_OK(gp_channel_set_psk(ch, psk));
		rec = find_record(h->payload + 1);
		verdict = rec ? gp_token_record_check(rec, srv.hash_key, secret,
						      (uint64_t)time(NULL)) :
				GP_TOKEN_BAD_SECRET;
		if (verdict != GP_TOKEN_OK) {
			v->reject = true;
			v->code = reject_code(verdict);
			snprintf(v->text, sizeof(v->text), "%s",
				 gp_token_verdict_str(verdict));
		}
		return 0;
	}
	ASSERT_EQ(h->pattern, GP_NOISE_IK);
	/* set_psk makes no sense for IK. */
	ASSERT_EQ(gp_channel_set_psk(ch, srv.token_key), -EINVAL);
	if (!is_member(h->remote_static)) {
		v->reject = true;
		v->code = GP_REJECT_UNKNOWN_AGENT;
		snprintf(v->text, sizeof(v->text), "not a member");
	}
	return 0;
}

/* The join is proven (the initiator's first transport message arrived and
 * authenticated): only now consume a token use and register the member. */
static void srv_established(struct gp_channel *ch, const uint8_t *rs,
			    const uint8_t *payload, size_t len)
{
	srv.established++;
	srv.last_ch = ch;
	ASSERT(gp_channel_is_established(ch));
	ASSERT(!gp_channel_is_initiator(ch));
	ASSERT_MEM_EQ(gp_channel_remote_static(ch), rs, GP_NOISE_KEY_SIZE);
	if (len == 1 + GP_TOKEN_ID_SIZE && payload[0] == HELLO_JOIN) {
		struct gp_token_record *rec = find_record(payload + 1);

		ASSERT_NOT_NULL(rec);
		rec->uses++;
		if (!is_member(rs)) {
			ASSERT_LT(srv.n_members, N_MEMBERS);
			memcpy(srv.members[srv.n_members++], rs,
			       GP_NOISE_KEY_SIZE);
		}
	}
}

static void srv_message(struct gp_channel *ch, uint8_t *data, size_t len)
{
	srv.messages++;
	srv.last_len = len;
	if (srv.close_in_message) {
		gp_channel_close(ch, 7, "enough");
		return;
	}
	if (srv.pause_in_message) {
		gp_channel_pause_reading(ch, true);
		gp_channel_pause_reading(ch, false);
	}
	if (srv.echo && srv.echo_take) {
		uint8_t *copy = malloc(len ? len : 1);

		ASSERT_NOT_NULL(copy);
		memcpy(copy, data, len);
		ASSERT_OK(gp_channel_send_take(ch, copy, len));
	} else if (srv.echo) {
		ASSERT_OK(gp_channel_send(ch, data, len));
	}
}

static void srv_close(struct gp_channel *ch, enum gp_close_reason reason,
		      uint16_t code, const char *text)
{
	srv.closes++;
	srv.last_reason = reason;
	srv.last_code = code;
	snprintf(srv.last_text, sizeof(srv.last_text), "%s", text);
	if (srv.last_ch == ch)
		srv.last_ch = NULL;
}

static const struct gp_channel_callbacks srv_cb = {
	.on_verify = srv_verify,
	.on_established = srv_established,
	.on_message = srv_message,
	.on_close = srv_close,
};

/* Whether the responder's handshakes run on the thread pool (serve's
 * setting); main runs the handshake tests both ways. */
static bool hs_offload;

static void test_config(struct gp_channel_config *cfg)
{
	gp_channel_config_default(cfg);
	cfg->handshake_offload = hs_offload;
	cfg->handshake_timeout_ms = 2000;
	cfg->heartbeat_ms = 100;
	cfg->idle_timeout_ms = 2000;
	cfg->close_linger_ms = 500;
	cfg->max_message = MAX_MSG;
	cfg->max_write_queue = 4 * MAX_MSG;
	cfg->write_low_water = MAX_MSG;
}

static void server_start(const struct gp_channel_config *cfg)
{
	struct sockaddr_in addr;

	srv.verify_calls = srv.established = srv.closes = 0;
	srv.messages = 0;
	srv.last_len = 0;
	srv.last_reason = 0;
	srv.last_text[0] = '\0';
	srv.echo = true;
	srv.echo_take = false;
	srv.close_in_message = srv.pause_in_message = false;
	ASSERT_OK(uv_ip4_addr("127.0.0.1", 0, &addr));
	ASSERT_OK(gp_channel_listen(loop, (struct sockaddr *)&addr, coord_key,
				    cfg, &srv_cb, &srv, &srv.l));
	srv.port = gp_channel_listener_port(srv.l);
	ASSERT_GT(srv.port, 0);
}

static void server_stop(void)
{
	gp_channel_listener_destroy(srv.l);
	srv.l = NULL;
}

/* Adds a token to the table and returns it parsed back from its string, as
 * an agent would get it. */
static struct gp_token *new_token(uint64_t expires_at, uint32_t max_uses,
				  char *ret_str)
{
	const char *ep[] = { "127.0.0.1:1" };
	struct gp_token *t, *parsed;
	enum gp_token_error err;

	ASSERT_OK(gp_token_create(&t));
	ASSERT_OK(gp_token_create(&parsed));
	ASSERT_OK(gp_token_generate(srv.token_key, coord_key->pub, ep, 1,
				    expires_at, t));
	ASSERT_LT(srv.n_records, N_TOKENS);
	ASSERT_OK(gp_token_record_init(&srv.records[srv.n_records++],
				       srv.hash_key, t, max_uses));
	ASSERT_GT(gp_token_format(t, ret_str, GP_TOKEN_STRING_MAX), 0);
	ASSERT_OK(gp_token_parse(ret_str, parsed, &err));
	gp_token_destroy(t);
	return parsed;
}

/* ---- the initiator ---------------------------------------------------- */

struct client {
	struct gp_channel *ch;
	bool established;
	bool closed;
	enum gp_close_reason reason;
	uint16_t code;
	char text[300];
	int messages;
	int drains;
	uint8_t *last;
	size_t last_len;
	/* What arrived, in order: each message's length and FNV-1a hash. */
	size_t got_len[32];
	uint32_t got_hash[32];
	bool send_on_established; /* one 100-byte message */
	size_t send_len;          /* or this many bytes */
	unsigned stall_ms;        /* then block the loop this long */
};

static void cl_established(struct gp_channel *ch, const uint8_t *rs,
			   const uint8_t *payload, size_t len)
{
	struct client *c = gp_channel_data(ch);

	ASSERT(gp_channel_is_initiator(ch));
	ASSERT_MEM_EQ(rs, coord_key->pub, GP_NOISE_KEY_SIZE);
	ASSERT_EQ(len, 0);
	(void)payload;
	c->established = true;
	if (c->send_on_established) {
		uint8_t m[100];

		memset(m, 0x5a, sizeof(m));
		ASSERT_OK(gp_channel_send(ch, m, sizeof(m)));
	}
	if (c->send_len) {
		uint8_t *m = calloc(1, c->send_len);

		ASSERT_NOT_NULL(m);
		ASSERT_OK(gp_channel_send(ch, m, c->send_len));
		free(m);
	}
	if (c->stall_ms)
		usleep(c->stall_ms * 1000u);
}

static uint32_t fnv1a(const uint8_t *p, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static void cl_message(struct gp_channel *ch, uint8_t *data, size_t len)
{
	struct client *c = gp_channel_data(ch);

	if ((size_t)c->messages < sizeof(c->got_len) / sizeof(c->got_len[0])) {
		c->got_len[c->messages] = len;
		c->got_hash[c->messages] = fnv1a(data, len);
	}
	free(c->last);
	c->last = malloc(len ? len : 1);
	ASSERT_NOT_NULL(c->last);
	memcpy(c->last, data, len);
	c->last_len = len;
	c->messages++;
}

static void cl_close(struct gp_channel *ch, enum gp_close_reason reason,
		     uint16_t code, const char *text)
{
	struct client *c = gp_channel_data(ch);

	c->closed = true;
	c->reason = reason;
	c->code = code;
	snprintf(c->text, sizeof(c->text), "%s", text);
	c->ch = NULL;
}

static void cl_drain(struct gp_channel *ch)
{
	struct client *c = gp_channel_data(ch);

	c->drains++;
}

static const struct gp_channel_callbacks cl_cb = {
	.on_established = cl_established,
	.on_message = cl_message,
	.on_drain = cl_drain,
	.on_close = cl_close,
};

static void client_connect(struct client *c, const struct gp_channel_config *cfg,
			   const uint8_t *pinned, const uint8_t *psk,
			   const uint8_t *payload, size_t payload_len, int port)
{
	struct sockaddr_in addr;
	struct gp_channel_peer peer = {
		.addr = (struct sockaddr *)&addr,
		.local = agent_key,
		.remote_static = pinned,
		.psk = psk,
		.payload = payload,
		.payload_len = payload_len,
	};

	ASSERT_OK(uv_ip4_addr("127.0.0.1", port, &addr));
	ASSERT_OK(gp_channel_connect(loop, &peer, cfg, &cl_cb, c, &c->ch));
}

static void client_join(struct client *c, const struct gp_channel_config *cfg,
			const struct gp_token *t, int port)
{
	uint8_t hello[1 + GP_TOKEN_ID_SIZE], psk[GP_TOKEN_PSK_SIZE];

	hello[0] = HELLO_JOIN;
	memcpy(hello + 1, t->id, GP_TOKEN_ID_SIZE);
	ASSERT_OK(gp_token_psk(t->secret, psk));
	client_connect(c, cfg, t->coordinator_pub, psk, hello, sizeof(hello),
		       port);
}

static void client_finish(struct client *c)
{
	free(c->last);
	memset(c, 0, sizeof(*c));
}

/* ---- running the loop ------------------------------------------------- */

static void wake(uv_timer_t *t)
{
	(void)t;
}

/* Runs the loop until *flag is true, failing after timeout_ms. */
#define RUN_UNTIL(cond, timeout_ms)                                            \
	do {                                                                   \
		uint64_t end_ = uv_now(loop) + (timeout_ms);                   \
		uv_timer_t t_;                                                 \
		uv_timer_init(loop, &t_);                                      \
		uv_timer_start(&t_, wake, 5, 5);                               \
		while (!(cond) && uv_now(loop) < end_)                         \
			uv_run(loop, UV_RUN_ONCE);                             \
		uv_close((uv_handle_t *)&t_, NULL);                            \
		uv_run(loop, UV_RUN_NOWAIT);                                   \
		if (!(cond))                                                   \
			GP_TEST_FAIL("timed out waiting for %s", #cond);       \
	} while (0)

/* Runs the loop for ms milliseconds. */
static void run_for(uint64_t ms)
{
	uint64_t end = uv_now(loop) + ms;
	uv_timer_t t;

	uv_timer_init(loop, &t);
	uv_timer_start(&t, wake, 5, 5);
	while (uv_now(loop) < end)
		uv_run(loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&t, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
}

/* ---- a raw TCP peer that speaks no Noise ------------------------------ */

struct raw {
	uv_tcp_t tcp;
	uv_connect_t creq;
	uv_write_t wreq;
	uv_shutdown_t sreq;
	uint8_t *data;
	size_t len;
	bool shutdown_after;
	bool keep_open; /* do not hang up at the server's EOF */
	bool connected;
	bool eof;
	bool closed;
	size_t received;
};

static void raw_closed(uv_handle_t *h)
{
	((struct raw *)h->data)->closed = true;
}

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *buf)
{
	static char scratch[65536];

	(void)h;
	(void)s;
	*buf = uv_buf_init(scratch, sizeof(scratch));
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct raw *r = s->data;

	(void)buf;
	if (n > 0)
		r->received += (size_t)n;
	if (n < 0 && !r->eof) {
		r->eof = true;
		if (!r->keep_open)
			uv_close((uv_handle_t *)&r->tcp, raw_closed);
	}
}

static void raw_written(uv_write_t *req, int status)
{
	struct raw *r = req->data;

	(void)status;
	if (r->shutdown_after && !r->eof)
		uv_shutdown(&r->sreq, (uv_stream_t *)&r->tcp, NULL);
}

static void raw_connected(uv_connect_t *req, int status)
{
	struct raw *r = req->data;

	ASSERT_OK(status);
	r->connected = true;
	ASSERT_OK(uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read));
	if (r->len) {
		uv_buf_t b = uv_buf_init((char *)r->data, (unsigned)r->len);

		r->wreq.data = r;
		ASSERT_OK(uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &b, 1,
				   raw_written));
	}
}

/* Connects to port and sends data (borrowed until written). */
static void raw_start(struct raw *r, int port, uint8_t *data, size_t len,
		      bool shutdown_after)
{
	struct sockaddr_in addr;

	memset(r, 0, sizeof(*r));
	r->data = data;
	r->len = len;
	r->shutdown_after = shutdown_after;
	ASSERT_OK(uv_ip4_addr("127.0.0.1", port, &addr));
	ASSERT_OK(uv_tcp_init(loop, &r->tcp));
	r->tcp.data = r;
	r->creq.data = r;
	ASSERT_OK(uv_tcp_connect(&r->creq, &r->tcp, (struct sockaddr *)&addr,
				 raw_connected));
}

static void raw_finish(struct raw *r)
{
	r->eof = true;
	if (!uv_is_closing((uv_handle_t *)&r->tcp))
		uv_close((uv_handle_t *)&r->tcp, raw_closed);
	RUN_UNTIL(r->closed, 2000);
}

/* ---- a proxy that records (and may tamper with) client bytes ----------- */

struct proxy {
	uv_tcp_t listen;
	uv_tcp_t down; /* to the client */
	uv_tcp_t up;   /* to the server */
	uv_connect_t creq;
	int port;
	int up_port;
	uint8_t *rec; /* client -> server bytes */
	size_t rec_len, rec_cap;
	long tamper_at; /* offset in the client stream to flip, or -1 */
	bool reset_after_up; /* reset the client right after the first
			      * server bytes (message 2) */
	bool up_ok;
	int closed;
};

struct fwd {
	uv_write_t req;
	uv_buf_t buf;
};

static void fwd_done(uv_write_t *req, int status)
{
	struct fwd *f = (struct fwd *)req;

	(void)status;
	free(f->buf.base);
	free(f);
}

static void forward(uv_tcp_t *to, const char *data, size_t n)
{
	struct fwd *f = malloc(sizeof(*f));

	ASSERT_NOT_NULL(f);
	f->buf = uv_buf_init(malloc(n), (unsigned)n);
	ASSERT_NOT_NULL(f->buf.base);
	memcpy(f->buf.base, data, n);
	if (uv_write(&f->req, (uv_stream_t *)to, &f->buf, 1, fwd_done) < 0) {
		free(f->buf.base);
		free(f);
	}
}

static void proxy_closed(uv_handle_t *h)
{
	struct proxy *p = h->data;

	p->closed++;
}

static void proxy_shut(struct proxy *p)
{
	if (!uv_is_closing((uv_handle_t *)&p->down))
		uv_close((uv_handle_t *)&p->down, proxy_closed);
	if (!uv_is_closing((uv_handle_t *)&p->up))
		uv_close((uv_handle_t *)&p->up, proxy_closed);
}

static void proxy_alloc(uv_handle_t *h, size_t s, uv_buf_t *buf)
{
	(void)h;
	*buf = uv_buf_init(malloc(s), (unsigned)s);
}

static void proxy_read_down(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct proxy *p = s->data;

	if (n > 0) {
		if (p->rec_len + (size_t)n > p->rec_cap) {
			p->rec_cap = (p->rec_len + (size_t)n) * 2;
			p->rec = realloc(p->rec, p->rec_cap);
			ASSERT_NOT_NULL(p->rec);
		}
		if (p->tamper_at >= (long)p->rec_len &&
		    p->tamper_at < (long)(p->rec_len + (size_t)n))
			buf->base[p->tamper_at - (long)p->rec_len] ^= 0x01;
		memcpy(p->rec + p->rec_len, buf->base, (size_t)n);
		p->rec_len += (size_t)n;
		forward(&p->up, buf->base, (size_t)n);
	} else if (n < 0) {
		proxy_shut(p);
	}
	free(buf->base);
}

static void proxy_read_up(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct proxy *p = s->data;

	if (n > 0) {
		forward(&p->down, buf->base, (size_t)n);
		if (p->reset_after_up) {
			struct linger lg = { 1, 0 };
			uv_os_fd_t fd;

			/* uv_write wrote it at once (nothing was queued):
			 * the reset follows the bytes. */
			ASSERT_EQ(p->down.write_queue_size, 0);
			ASSERT_OK(uv_fileno((uv_handle_t *)&p->down, &fd));
			ASSERT_OK(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg,
					     sizeof(lg)));
			proxy_shut(p);
		}
	} else if (n < 0) {
		proxy_shut(p);
	}
	free(buf->base);
}

static void proxy_up_connected(uv_connect_t *req, int status)
{
	struct proxy *p = req->data;

	ASSERT_OK(status);
	p->up_ok = true;
	ASSERT_OK(uv_read_start((uv_stream_t *)&p->up, proxy_alloc,
				proxy_read_up));
	ASSERT_OK(uv_read_start((uv_stream_t *)&p->down, proxy_alloc,
				proxy_read_down));
}

static void proxy_accept(uv_stream_t *server, int status)
{
	struct proxy *p = server->data;
	struct sockaddr_in addr;

	ASSERT_OK(status);
	ASSERT_OK(uv_tcp_init(loop, &p->down));
	ASSERT_OK(uv_tcp_init(loop, &p->up));
	p->down.data = p->up.data = p;
	ASSERT_OK(uv_accept(server, (uv_stream_t *)&p->down));
	ASSERT_OK(uv_ip4_addr("127.0.0.1", p->up_port, &addr));
	p->creq.data = p;
	ASSERT_OK(uv_tcp_connect(&p->creq, &p->up, (struct sockaddr *)&addr,
				 proxy_up_connected));
}

static void proxy_start(struct proxy *p, int up_port, long tamper_at)
{
	struct sockaddr_in addr;
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	memset(p, 0, sizeof(*p));
	p->up_port = up_port;
	p->tamper_at = tamper_at;
	ASSERT_OK(uv_tcp_init(loop, &p->listen));
	p->listen.data = p;
	ASSERT_OK(uv_ip4_addr("127.0.0.1", 0, &addr));
	ASSERT_OK(uv_tcp_bind(&p->listen, (struct sockaddr *)&addr, 0));
	ASSERT_OK(uv_listen((uv_stream_t *)&p->listen, 4, proxy_accept));
	ASSERT_OK(uv_tcp_getsockname(&p->listen, (struct sockaddr *)&ss, &len));
	p->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void proxy_finish(struct proxy *p)
{
	uv_close((uv_handle_t *)&p->listen, proxy_closed);
	RUN_UNTIL(p->closed == 3, 2000);
	free(p->rec);
}

/* Stream sizes of a join: message 1 frame, then the confirming PING. */
#define JOIN_MSG1_FRAME \
	(GP_FRAME_HEADER_SIZE + 1 + GP_NOISE_IK_MSG1_OVERHEAD + 1 + GP_TOKEN_ID_SIZE)
#define PING_FRAME (GP_FRAME_HEADER_SIZE + 1 + GP_NOISE_TAG_SIZE)

/* ---- the tests -------------------------------------------------------- */

static void fill(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1664525u + 1013904223u;
		p[i] = (uint8_t)(seed >> 24);
	}
}

/* Sends len bytes and waits for the echo, which must be identical. */
static void echo_roundtrip(struct client *c, size_t len, uint32_t seed)
{
	uint8_t *m = malloc(len ? len : 1);
	int before = c->messages;

	ASSERT_NOT_NULL(m);
	fill(m, len, seed);
	ASSERT_OK(gp_channel_send(c->ch, m, len));
	RUN_UNTIL(c->messages == before + 1, 10000);
	ASSERT_EQ(c->last_len, len);
	ASSERT(len == 0 || memcmp(c->last, m, len) == 0);
	free(m);
}

static void test_join_and_member(void)
{
	struct gp_channel_config cfg;
	struct client c = { 0 };
	char str[GP_TOKEN_STRING_MAX];
	struct gp_token *t;
	struct gp_token_record *rec;
	uint8_t *big;

	test_config(&cfg);
	server_start(&cfg);
	t = new_token(0, 3, str);
	rec = &srv.records[srv.n_records - 1];

	/* First join: IKpsk2 with the token. */
	client_join(&c, &cfg, t, srv.port);
	RUN_UNTIL(c.established && srv.established == 1, 5000);
	ASSERT_EQ(rec->uses, 1);
	ASSERT_EQ(srv.n_members, 1);
	ASSERT_EQ(gp_channel_pattern(c.ch), GP_NOISE_IKPSK2);
	{
		char name[80];

		ASSERT_OK(gp_channel_peer_name(c.ch, name, sizeof(name)));
		ASSERT(strncmp(name, "127.0.0.1:", 10) == 0);
	}

	/* Small, empty, over one Noise message, many pieces, the maximum. */
	echo_roundtrip(&c, 100, 1);
	echo_roundtrip(&c, 0, 2);
	echo_roundtrip(&c, 65518, 3); /* the largest single record */
	echo_roundtrip(&c, 65519, 4); /* the smallest split one */
	echo_roundtrip(&c, 70000, 5);
	echo_roundtrip(&c, MAX_MSG - 1, 6);
	echo_roundtrip(&c, MAX_MSG, 7);
	big = malloc(MAX_MSG + 1);
	ASSERT_NOT_NULL(big);
	ASSERT_EQ(gp_channel_send(c.ch, big, MAX_MSG + 1), -EMSGSIZE);
	free(big);
	ASSERT_GT(gp_channel_bytes_sent(c.ch), 2 * MAX_MSG);
	ASSERT_GT(gp_channel_bytes_received(c.ch), 2 * MAX_MSG);

	/* Close with a reason: the peer sees it. */
	gp_channel_close(c.ch, 42, "bye for now");
	gp_channel_close(c.ch, 43, "twice is harmless");
	ASSERT_EQ(gp_channel_send(c.ch, "x", 1), -ENOTCONN);
	RUN_UNTIL(c.closed && srv.closes == 1, 3000);
	ASSERT_EQ(c.reason, GP_CLOSE_LOCAL);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_PEER_CLOSED);
	ASSERT_EQ(srv.last_code, 42);
	ASSERT_STR_EQ(srv.last_text, "bye for now");
	client_finish(&c);

	/* The member comes back with IK and its pinned key; no token. */
	{
		uint8_t hello = HELLO_MEMBER;

		client_connect(&c, &cfg, coord_key->pub, NULL, &hello, 1,
			       srv.port);
		RUN_UNTIL(c.established && srv.established == 2, 5000);
		ASSERT_EQ(gp_channel_pattern(c.ch), GP_NOISE_IK);
		echo_roundtrip(&c, 200000, 8);
		ASSERT_EQ(rec->uses, 1);
		/* The server closes this time. */
		ASSERT_NOT_NULL(srv.last_ch);
		gp_channel_close(srv.last_ch, GP_BYE_SHUTDOWN, "shutting down");
		RUN_UNTIL(c.closed && srv.closes == 2, 3000);
		ASSERT_EQ(c.reason, GP_CLOSE_PEER_CLOSED);
		ASSERT_EQ(c.code, GP_BYE_SHUTDOWN);
		ASSERT_STR_EQ(c.text, "shutting down");
		ASSERT_EQ(srv.last_reason, GP_CLOSE_LOCAL);
		client_finish(&c);
	}

	/* IK from a key that is not a member: rejected, with the reason. */
	{
		uint8_t hello = HELLO_MEMBER;
		struct gp_noise_keypair *saved = agent_key;

		agent_key = other_key;
		client_connect(&c, &cfg, coord_key->pub, NULL, &hello, 1,
			       srv.port);
		agent_key = saved;
		RUN_UNTIL(c.closed && srv.closes == 3, 3000);
		ASSERT(!c.established);
		ASSERT_EQ(c.reason, GP_CLOSE_REJECTED);
		ASSERT_EQ(c.code, GP_REJECT_UNKNOWN_AGENT);
		ASSERT_STR_EQ(c.text, "not a member");
		ASSERT_EQ(srv.last_reason, GP_CLOSE_REJECTED);
		ASSERT_EQ(srv.established, 2);
		client_finish(&c);
	}
	gp_token_destroy(t);
	server_stop();
}

/* The agent pinned another coordinator key: the coordinator cannot read
 * message 1 and says so; the agent reports a key mismatch. */
static void test_wrong_coordinator_key(void)
{
	struct gp_channel_config cfg;
	struct client c = { 0 };
	char str[GP_TOKEN_STRING_MAX];
	struct gp_token *t;

	test_config(&cfg);
	server_start(&cfg);
	t = new_token(0, 3, str);
	memcpy(t->coordinator_pub, other_key->pub, GP_NOISE_KEY_SIZE);
	client_join(&c, &cfg, t, srv.port);
	RUN_UNTIL(c.closed && srv.closes == 1, 3000);
	ASSERT(!c.established);
	ASSERT_EQ(c.reason, GP_CLOSE_KEY_MISMATCH);
	ASSERT(strstr(c.text, "does not match the one in the token"));
	ASSERT_EQ(srv.last_reason, GP_CLOSE_HANDSHAKE_FAILED);
	ASSERT_EQ(srv.verify_calls, 0);
	ASSERT_EQ(srv.records[srv.n_records - 1].uses, 0);
	client_finish(&c);

	/* Right key, wrong secret (a forged token with a valid id): the
	 * coordinator's message 2 does not authenticate for the agent. */
	memcpy(t->coordinator_pub, coord_key->pub, GP_NOISE_KEY_SIZE);
	t->secret[0] ^= 1;
	client_join(&c, &cfg, t, srv.port);
	RUN_UNTIL(c.closed && srv.closes == 2, 3000);
	ASSERT_EQ(c.reason, GP_CLOSE_KEY_MISMATCH);
	ASSERT(strstr(c.text, "token secret"));
	ASSERT_EQ(srv.established, 0);
	ASSERT_EQ(srv.records[srv.n_records - 1].uses, 0);
	client_finish(&c);
	gp_token_destroy(t);
	server_stop();
}

static void expect_rejected(const struct gp_channel_config *cfg,
			    const struct gp_token *t, uint16_t code,
			    const char *text)
{
	struct client c = { 0 };
	int closes = srv.closes;

	client_join(&c, cfg, t, srv.port);
	RUN_UNTIL(c.closed && srv.closes == closes + 1, 3000);
	ASSERT(!c.established);
	ASSERT_EQ(c.reason, GP_CLOSE_REJECTED);
	ASSERT_EQ(c.code, code);
	ASSERT_STR_EQ(c.text, text);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_REJECTED);
	ASSERT_EQ(srv.last_code, code);
	client_finish(&c);
}

static void test_token_verdicts(void)
{
	struct gp_channel_config cfg;
	char str[GP_TOKEN_STRING_MAX];
	struct gp_token *expired, *used, *revoked, *parsed;
	struct client c = { 0 };
	enum gp_token_error err = GP_TOKEN_ERR_NONE;
	char *dash;

	test_config(&cfg);
	server_start(&cfg);

	expired = new_token((uint64_t)time(NULL) - 60, 0, str);
	expect_rejected(&cfg, expired, GP_REJECT_TOKEN_EXPIRED,
			"token expired");

	revoked = new_token(0, 0, str);
	srv.records[srv.n_records - 1].revoked = true;
	expect_rejected(&cfg, revoked, GP_REJECT_TOKEN_REVOKED,
			"token revoked");

	/* One use: the first join takes it, the second is refused. */
	used = new_token(0, 1, str);
	client_join(&c, &cfg, used, srv.port);
	RUN_UNTIL(c.established && srv.established == 1, 3000);
	ASSERT_EQ(srv.records[srv.n_records - 1].uses, 1);
	gp_channel_close(c.ch, 0, NULL);
	RUN_UNTIL(c.closed, 3000);
	client_finish(&c);
	expect_rejected(&cfg, used, GP_REJECT_TOKEN_USED_UP, "token used up");
	ASSERT_EQ(srv.records[srv.n_records - 1].uses, 1);

	/* A mistyped token never reaches the network: parse says typo. */
	dash = strchr(str + 4, '-');
	ASSERT_NOT_NULL(dash);
	dash[1] = dash[1] == 'a' ? 'b' : 'a';
	ASSERT_OK(gp_token_create(&parsed));
	ASSERT_EQ(gp_token_parse(str, parsed, &err), -EINVAL);
	ASSERT(err == GP_TOKEN_ERR_CHECKSUM || err == GP_TOKEN_ERR_CHARACTER);
	ASSERT(strstr(gp_token_error_str(err), "typo"));
	gp_token_destroy(parsed);

	gp_token_destroy(expired);
	gp_token_destroy(revoked);
	gp_token_destroy(used);
	server_stop();
}

/* One flipped bit in an application message: the server drops the
 * connection with a decrypt failure. */
static void test_tampered(void)
{
	struct gp_channel_config cfg;
	char str[GP_TOKEN_STRING_MAX];
	struct client c = { 0 };
	struct proxy p;
	struct gp_token *t;

	test_config(&cfg);
	server_start(&cfg);
	t = new_token(0, 5, str);
	/* Inside the ciphertext of the 100-byte message after the PING. */
	proxy_start(&p, srv.port, JOIN_MSG1_FRAME + PING_FRAME + 40);
	c.send_on_established = true;
	srv.echo = false;
	client_join(&c, &cfg, t, p.port);
	RUN_UNTIL(srv.closes == 1 && c.closed, 3000);
	ASSERT_EQ(srv.established, 1);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_DECRYPT_FAILED);
	ASSERT_EQ(c.reason, GP_CLOSE_PEER_CLOSED);
	proxy_finish(&p);
	client_finish(&c);
	gp_token_destroy(t);
	server_stop();
}

/* A recorded join replayed on new connections: message 1 reaches on_verify
 * and nothing else; no token use, no member. */
static void test_replay(void)
{
	struct gp_channel_config cfg;
	char str[GP_TOKEN_STRING_MAX];
	struct client c = { 0 };
	struct gp_token_record *rec;
	struct proxy p;
	struct raw r;
	struct gp_token *t;
	size_t members;

	test_config(&cfg);
	cfg.handshake_timeout_ms = 1000;
	server_start(&cfg);
	t = new_token(0, 5, str);
	rec = &srv.records[srv.n_records - 1];
	proxy_start(&p, srv.port, -1);
	c.send_on_established = true;
	srv.echo = false;
	client_join(&c, &cfg, t, p.port);
	RUN_UNTIL(c.established && srv.established == 1, 3000);
	run_for(50);
	gp_channel_close(c.ch, 0, NULL);
	RUN_UNTIL(c.closed && srv.closes == 1, 3000);
	ASSERT_EQ(rec->uses, 1);
	members = srv.n_members;
	ASSERT_GE(p.rec_len, JOIN_MSG1_FRAME + PING_FRAME);

	/* Message 1 alone: verified (it is a valid message), answered, then
	 * the connection dies at the handshake deadline. */
	raw_start(&r, srv.port, p.rec, JOIN_MSG1_FRAME, false);
	RUN_UNTIL(srv.closes == 2, 3000);
	ASSERT_EQ(srv.verify_calls, 2);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_HANDSHAKE_TIMEOUT);
	ASSERT_GT(r.received, 0); /* message 2, useless to the replayer */
	raw_finish(&r);

	/* The whole recorded stream: the transport keys differ now. With
	 * the handshake on the pool, what arrives while message 1 is being
	 * read (in the same read) ends it before message 2. */
	raw_start(&r, srv.port, p.rec, p.rec_len, false);
	RUN_UNTIL(srv.closes == 3, 3000);
	if (!hs_offload || srv.last_reason != GP_CLOSE_PROTOCOL_ERROR)
		ASSERT_EQ(srv.last_reason, GP_CLOSE_DECRYPT_FAILED);
	raw_finish(&r);

	ASSERT_EQ(srv.established, 1);
	ASSERT_EQ(rec->uses, 1);
	ASSERT_EQ(srv.n_members, members);
	proxy_finish(&p);
	client_finish(&c);
	gp_token_destroy(t);
	server_stop();
}

/* Bad bytes from a peer without keys: oversized, truncated, silent. */
static void test_bad_streams(void)
{
	struct gp_channel_config cfg;
	uint8_t huge[GP_FRAME_HEADER_SIZE] = { 0xf0, 0xff, 0xff, 0xff,
					       GP_FRAME_HANDSHAKE };
	uint8_t half[GP_FRAME_HEADER_SIZE + 50];
	uint8_t junk[GP_FRAME_HEADER_SIZE + 120];
	uint64_t start;
	struct raw r;

	test_config(&cfg);
	cfg.handshake_timeout_ms = 300;
	server_start(&cfg);

	/* A 4 GiB length: dropped on the header, not at the deadline (the
	 * frame unit test shows that nothing is allocated for it). */
	raw_start(&r, srv.port, huge, sizeof(huge), false);
	RUN_UNTIL(srv.closes == 1, 3000);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_OVERSIZED_FRAME);
	raw_finish(&r);

	/* Half a frame, then EOF. */
	ASSERT_OK(gp_frame_header_write(half, GP_FRAME_HANDSHAKE, 100));
	memset(half + GP_FRAME_HEADER_SIZE, 7, 50);
	raw_start(&r, srv.port, half, sizeof(half), true);
	RUN_UNTIL(srv.closes == 2, 3000);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_TRUNCATED);
	raw_finish(&r);

	/* Half a frame, then silence: the handshake deadline. */
	start = uv_now(loop);
	raw_start(&r, srv.port, half, sizeof(half), false);
	RUN_UNTIL(srv.closes == 3, 3000);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_HANDSHAKE_TIMEOUT);
	ASSERT_GE(uv_now(loop) - start, 250);
	raw_finish(&r);

	/* Connect and send nothing. */
	raw_start(&r, srv.port, NULL, 0, false);
	RUN_UNTIL(srv.closes == 4, 3000);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_HANDSHAKE_TIMEOUT);
	RUN_UNTIL(r.eof, 1000); /* the server really hung up */
	raw_finish(&r);

	/* A whole frame of garbage as message 1: refused, with a REFUSE. */
	ASSERT_OK(gp_frame_header_write(junk, GP_FRAME_HANDSHAKE, 120));
	fill(junk + GP_FRAME_HEADER_SIZE, 120, 9);
	junk[GP_FRAME_HEADER_SIZE] = 1; /* IK */
	raw_start(&r, srv.port, junk, sizeof(junk), false);
	RUN_UNTIL(srv.closes == 5 && r.eof, 3000);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_HANDSHAKE_FAILED);
	ASSERT_EQ(r.received, GP_FRAME_HEADER_SIZE); /* the REFUSE frame */
	raw_finish(&r);

	/* An unknown frame kind. */
	junk[4] = 0x77;
	raw_start(&r, srv.port, junk, sizeof(junk), false);
	RUN_UNTIL(srv.closes == 6, 3000);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_PROTOCOL_ERROR);
	raw_finish(&r);

	ASSERT_EQ(srv.verify_calls, 0);
	server_stop();
}

/* Heartbeats keep a quiet channel alive; a peer that sends nothing at all
 * is closed at the idle timeout. */
static void test_idle(void)
{
	struct gp_channel_config scfg, ccfg;
	char str[GP_TOKEN_STRING_MAX];
	struct client c = { 0 };
	struct gp_token *t;

	test_config(&scfg);
	scfg.heartbeat_ms = 50;
	scfg.idle_timeout_ms = 400;
	server_start(&scfg);
	t = new_token(0, 0, str);

	ccfg = scfg;
	client_join(&c, &ccfg, t, srv.port);
	RUN_UNTIL(c.established && srv.established == 1, 3000);
	run_for(1000);
	ASSERT(!c.closed);
	ASSERT_EQ(srv.closes, 0);
	gp_channel_close(c.ch, 0, NULL);
	RUN_UNTIL(c.closed && srv.closes == 1, 3000);
	client_finish(&c);

	/* This client never sends heartbeats (and never times out). */
	ccfg.heartbeat_ms = 0;
	ccfg.idle_timeout_ms = 0;
	client_join(&c, &ccfg, t, srv.port);
	RUN_UNTIL(c.established && srv.established == 2, 3000);
	RUN_UNTIL(srv.closes == 2 && c.closed, 2000);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_IDLE_TIMEOUT);
	ASSERT_EQ(c.reason, GP_CLOSE_PEER_CLOSED);
	client_finish(&c);
	gp_token_destroy(t);
	server_stop();
}

/* A client that stops reading: the server's write queue hits its bound and
 * the server closes instead of buffering without end. */
static struct {
	uint8_t *msg;
	int sent;
	int result;
	size_t max_queued;
} flood;

static void flood_tick(uv_timer_t *t)
{
	struct gp_channel *ch = srv.last_ch;
	int r;

	if (!ch || flood.result) {
		uv_timer_stop(t);
		return;
	}
	r = gp_channel_send(ch, flood.msg, 1024 * 1024);
	if (r < 0) {
		flood.result = r;
		uv_timer_stop(t);
		return;
	}
	flood.sent++;
	if (gp_channel_queued_bytes(ch) > flood.max_queued)
		flood.max_queued = gp_channel_queued_bytes(ch);
}

static void test_never_reads(void)
{
	struct gp_channel_config cfg;
	char str[GP_TOKEN_STRING_MAX];
	struct client c = { 0 };
	struct gp_token *t;
	uv_timer_t tick;

	test_config(&cfg);
	cfg.max_write_queue = 4 * 1024 * 1024;
	cfg.idle_timeout_ms = 0;
	server_start(&cfg);
	t = new_token(0, 0, str);
	client_join(&c, &cfg, t, srv.port);
	RUN_UNTIL(c.established && srv.established == 1, 3000);
	gp_channel_pause_reading(c.ch, true);

	flood.msg = calloc(1, 1024 * 1024);
	ASSERT_NOT_NULL(flood.msg);
	uv_timer_init(loop, &tick);
	uv_timer_start(&tick, flood_tick, 1, 1);
	RUN_UNTIL(flood.result != 0 && srv.closes == 1, 20000);
	uv_close((uv_handle_t *)&tick, NULL);
	ASSERT_EQ(flood.result, -ENOBUFS);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_WRITE_QUEUE_FULL);
	ASSERT_LE(flood.max_queued, cfg.max_write_queue);
	ASSERT_GT(flood.sent, 3);
	free(flood.msg);

	gp_channel_pause_reading(c.ch, false);
	RUN_UNTIL(c.closed, 5000);
	client_finish(&c);
	gp_token_destroy(t);
	server_stop();
}

/* With a short rekey interval both sides rekey in step over many messages;
 * with different intervals the first message after a rekey fails. */
static void test_rekey(void)
{
	struct gp_channel_config cfg, ccfg;
	char str[GP_TOKEN_STRING_MAX];
	struct client c = { 0 };
	struct gp_token *t;

	test_config(&cfg);
	cfg.rekey_interval = 3;
	cfg.heartbeat_ms = 0;
	server_start(&cfg);
	t = new_token(0, 0, str);
	client_join(&c, &cfg, t, srv.port);
	RUN_UNTIL(c.established && srv.established == 1, 3000);
	for (int i = 0; i < 10; i++)
		echo_roundtrip(&c, 150000, 100 + (uint32_t)i); /* 3 pieces */
	gp_channel_close(c.ch, 0, NULL);
	RUN_UNTIL(c.closed && srv.closes == 1, 3000);
	client_finish(&c);

	ccfg = cfg;
	ccfg.rekey_interval = 4;
	client_join(&c, &ccfg, t, srv.port);
	RUN_UNTIL(c.established && srv.established == 2, 3000);
	for (int i = 0; i < 4; i++) {
		uint8_t m[10] = { 0 };

		if (gp_channel_send(c.ch, m, sizeof(m)) < 0)
			break;
	}
	RUN_UNTIL(srv.closes == 2 && c.closed, 3000);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_DECRYPT_FAILED);
	client_finish(&c);
	gp_token_destroy(t);
	server_stop();
}

/* Messages sealed on the thread pool (gp_channel_send_take) leave in the
 * order they were sent, mixed with messages sealed on the loop, both ways,
 * across many rekeys (runs that would cross one are sealed on the loop);
 * both ends open large messages on the thread pool too (open_offload_min),
 * and what follows one in the same read waits for it; a close right after
 * a large send lets the message arrive first. */
static void test_offload(void)
{
	static const size_t sizes[] = {
		40000, 10, 65518, 65519, 70000, 3 * 1024 * 1024 + 17, 5,
		16384, 16383, 1024 * 1024, 0, 200000, 2 * 1024 * 1024,
	};
	const size_t n = sizeof(sizes) / sizeof(sizes[0]);
	struct gp_channel_config cfg;
	char str[GP_TOKEN_STRING_MAX];
	struct gp_token *t = NULL;
	uint32_t want[sizeof(sizes) / sizeof(sizes[0])];

	test_config(&cfg);
	cfg.heartbeat_ms = 0;
	ASSERT_EQ(cfg.seal_offload_min, 0); /* the default: on the loop */
	ASSERT_EQ(cfg.open_offload_min, 0);
	cfg.seal_offload_min = 16 * 1024;
	cfg.open_offload_min = 16 * 1024;
	for (int round = 0; round < 2; round++) {
		struct client c = { 0 };
		uint64_t sent0, opened0 = gp_channel_opened_off_loop();

		/* Round 1: a rekey every 7 records, inside most runs. */
		cfg.rekey_interval = round == 0 ? GP_CHANNEL_REKEY_INTERVAL : 7;
		server_start(&cfg);
		srv.echo_take = true;
		if (!t)
			t = new_token(0, 0, str);
		client_join(&c, &cfg, t, srv.port);
		RUN_UNTIL(c.established && srv.established == 1, 3000);
		sent0 = gp_channel_bytes_sent(c.ch);
		for (size_t i = 0; i < n; i++) {
			uint8_t *m = malloc(sizes[i] ? sizes[i] : 1);

			ASSERT_NOT_NULL(m);
			fill(m, sizes[i], 7000 + (uint32_t)(i + 100 * round));
			want[i] = fnv1a(m, sizes[i]);
			if (i % 3 == 1) {
				ASSERT_OK(gp_channel_send(c.ch, m, sizes[i]));
				free(m);
			} else {
				ASSERT_OK(gp_channel_send_take(c.ch, m,
							       sizes[i]));
			}
		}
		/* Everything counts as queued at once, sealed or not. */
		ASSERT_GE(gp_channel_queued_bytes(c.ch) +
				  (gp_channel_bytes_sent(c.ch) - sent0),
			  (size_t)(6 * 1024 * 1024));
		RUN_UNTIL(c.messages == (int)n, 20000);
		for (size_t i = 0; i < n; i++) {
			ASSERT_EQ(c.got_len[i], sizes[i]);
			ASSERT_EQ(c.got_hash[i], want[i]);
		}
		/* Without rekeys in the way every message sent in pieces
		 * (from 65,519 bytes) was opened off the loop, at both
		 * ends (six such). */
		if (round == 0)
			ASSERT_EQ(gp_channel_opened_off_loop() - opened0, 12);
		else
			ASSERT_GE(gp_channel_opened_off_loop() - opened0, 1);
		ASSERT_EQ(srv.closes, 0);
		gp_channel_close(c.ch, 0, NULL);
		RUN_UNTIL(c.closed && srv.closes == 1, 3000);
		client_finish(&c);
		server_stop();
	}

	/* A close right behind a large message still being sealed. */
	{
		struct client c = { 0 };
		uint8_t *m = malloc(2 * 1024 * 1024);

		cfg.rekey_interval = GP_CHANNEL_REKEY_INTERVAL;
		server_start(&cfg);
		srv.echo = false;
		client_join(&c, &cfg, t, srv.port);
		RUN_UNTIL(c.established && srv.established == 1, 3000);
		ASSERT_NOT_NULL(m);
		fill(m, 2 * 1024 * 1024, 99);
		ASSERT_OK(gp_channel_send_take(c.ch, m, 2 * 1024 * 1024));
		gp_channel_close(c.ch, 42, "bye");
		RUN_UNTIL(c.closed && srv.closes == 1, 5000);
		ASSERT_EQ(srv.messages, 1);
		ASSERT_EQ(srv.last_len, (size_t)(2 * 1024 * 1024));
		ASSERT_EQ(srv.last_reason, GP_CLOSE_PEER_CLOSED);
		ASSERT_EQ(srv.last_code, 42);
		client_finish(&c);
		server_stop();
	}
	gp_token_destroy(t);
}

/* A piece of a message opened on the thread pool that does not
 * authenticate closes the connection as it does on the loop, and nothing
 * of the message is delivered; the same message untouched arrives whole. */
static void test_open_tampered(void)
{
	struct gp_channel_config cfg;
	char str[GP_TOKEN_STRING_MAX];
	struct gp_token *t;

	test_config(&cfg);
	cfg.heartbeat_ms = 0;
	cfg.open_offload_min = 16 * 1024;
	server_start(&cfg);
	t = new_token(0, 5, str);
	for (int tamper = 0; tamper < 2; tamper++) {
		struct client c = { 0 };
		struct proxy p;
		uint64_t opened0 = gp_channel_opened_off_loop();

		/* Inside the third piece of 200,000 bytes: after the
		 * confirmation, the BEGIN record and two full pieces. */
		proxy_start(&p, srv.port,
			    !tamper ? -1 :
			    JOIN_MSG1_FRAME + PING_FRAME +
				    (GP_FRAME_HEADER_SIZE + 5 +
				     GP_NOISE_TAG_SIZE) +
				    2 * (GP_FRAME_HEADER_SIZE +
					 GP_NOISE_MAX_PLAINTEXT +
					 GP_NOISE_TAG_SIZE) + 1000);
		c.send_len = 200000;
		srv.echo = false;
		srv.messages = 0;
		client_join(&c, &cfg, t, p.port);
		if (tamper) {
			RUN_UNTIL(srv.closes == 1 && c.closed, 3000);
			ASSERT_EQ(srv.last_reason, GP_CLOSE_DECRYPT_FAILED);
			ASSERT_EQ(srv.messages, 0);
		} else {
			RUN_UNTIL(srv.messages == 1, 3000);
			ASSERT_EQ(srv.last_len, (size_t)200000);
			gp_channel_close(c.ch, 0, NULL);
			RUN_UNTIL(c.closed && srv.closes == 1, 3000);
		}
		ASSERT_EQ(gp_channel_opened_off_loop() - opened0, 1);
		proxy_finish(&p);
		client_finish(&c);
		srv.closes = 0;
	}
	gp_token_destroy(t);
	server_stop();
}

/* What the application does inside on_message for a message opened on
 * the thread pool holds as for one opened on the loop: a graceful close
 * sees the peer's EOF at once (not at the end of the linger), and pausing
 * and resuming reading leaves the channel reading (the message after it
 * arrives). */
static void test_open_callbacks(void)
{
	struct gp_channel_config cfg;
	char str[GP_TOKEN_STRING_MAX];
	struct gp_token *t;

	test_config(&cfg);
	cfg.heartbeat_ms = 0;
	cfg.close_linger_ms = 3000;
	cfg.open_offload_min = 16 * 1024;
	server_start(&cfg);
	t = new_token(0, 5, str);
	for (int pause = 0; pause < 2; pause++) {
		struct client c = { 0 };
		uint8_t *big = calloc(1, 200000), small[10] = { 1 };
		uint64_t opened0 = gp_channel_opened_off_loop(), t0;

		ASSERT_NOT_NULL(big);
		srv.echo = false;
		srv.messages = 0;
		srv.close_in_message = !pause;
		srv.pause_in_message = pause;
		client_join(&c, &cfg, t, srv.port);
		RUN_UNTIL(c.established && srv.established == pause + 1, 3000);
		ASSERT_OK(gp_channel_send(c.ch, big, 200000));
		ASSERT_OK(gp_channel_send(c.ch, small, sizeof(small)));
		free(big);
		t0 = uv_now(loop);
		if (!pause) {
			/* Well within the 3 s linger. */
			RUN_UNTIL(srv.closes == 1 && c.closed, 1500);
			ASSERT_LT(uv_now(loop) - t0, 1500);
			ASSERT_EQ(srv.messages, 1);
			ASSERT_EQ(c.reason, GP_CLOSE_PEER_CLOSED);
		} else {
			RUN_UNTIL(srv.messages == 2, 3000);
			ASSERT_EQ(srv.last_len, sizeof(small));
			ASSERT_EQ(srv.closes, 1); /* the first round's */
			srv.pause_in_message = false;
			gp_channel_close(c.ch, 0, NULL);
			RUN_UNTIL(c.closed && srv.closes == 2, 3000);
		}
		ASSERT_EQ(gp_channel_opened_off_loop() - opened0, 1);
		client_finish(&c);
	}
	gp_token_destroy(t);
	server_stop();
}

/* Many small messages sent at once leave together, and on_drain reports
 * when the queue has gone down, also when the socket took it all at once. */
static void test_drain(void)
{
	struct gp_channel_config cfg;
	char str[GP_TOKEN_STRING_MAX];
	struct client c = { 0 };
	struct gp_token *t;
	static uint8_t m[60000];
	uint64_t sent0;

	test_config(&cfg);
	cfg.write_low_water = 1024 * 1024;
	server_start(&cfg);
	srv.echo = false;
	t = new_token(0, 0, str);
	client_join(&c, &cfg, t, srv.port);
	RUN_UNTIL(c.established && srv.established == 1, 3000);
	run_for(20);
	sent0 = gp_channel_bytes_sent(c.ch);
	for (int i = 0; i < 30; i++)
		ASSERT_OK(gp_channel_send(c.ch, m, sizeof(m)));
	/* Small messages wait for the end of the loop iteration. */
	ASSERT_EQ(gp_channel_bytes_sent(c.ch), sent0);
	ASSERT_GT(gp_channel_queued_bytes(c.ch), 30 * sizeof(m));
	RUN_UNTIL(c.drains > 0 && gp_channel_queued_bytes(c.ch) == 0, 3000);
	ASSERT_GE(gp_channel_bytes_sent(c.ch), sent0 + 30 * sizeof(m));
	gp_channel_close(c.ch, 0, NULL);
	RUN_UNTIL(c.closed && srv.closes == 1, 3000);
	client_finish(&c);
	gp_token_destroy(t);
	server_stop();
}

/* A connection flood: beyond max_handshakes, new connections are closed at
 * once; those already in the handshake still get their deadline. */
static void test_flood(void)
{
	struct gp_channel_config cfg;
	struct raw r[3];

	test_config(&cfg);
	cfg.max_handshakes = 2;
	cfg.handshake_timeout_ms = 1000;
	server_start(&cfg);
	raw_start(&r[0], srv.port, NULL, 0, false);
	raw_start(&r[1], srv.port, NULL, 0, false);
	RUN_UNTIL(r[0].connected && r[1].connected, 2000);
	run_for(50); /* the listener has accepted both */
	raw_start(&r[2], srv.port, NULL, 0, false);
	RUN_UNTIL(srv.closes == 1 && r[2].eof, 900);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_TOO_MANY_HANDSHAKES);
	ASSERT(!r[0].eof && !r[1].eof);
	RUN_UNTIL(srv.closes == 3, 3000);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_HANDSHAKE_TIMEOUT);
	for (int i = 0; i < 3; i++)
		raw_finish(&r[i]);
	server_stop();
}

/* The coordinator's message 2 arrives and the connection is reset right
 * behind it (a peer that hangs up, or an injected RST): the initiator's
 * confirming PING fails, and the channel must close without ever being
 * established (it once came back to life and was used after being freed). */
static void test_reset_after_accept(void)
{
	struct gp_channel_config cfg;
	char str[GP_TOKEN_STRING_MAX];
	struct client c = { 0 };
	struct gp_token *t;
	struct proxy px;

	test_config(&cfg);
	server_start(&cfg);
	t = new_token(0, 0, str);
	proxy_start(&px, srv.port, -1);
	px.reset_after_up = true;
	c.send_on_established = true;
	client_join(&c, &cfg, t, px.port);
	RUN_UNTIL(c.closed, 3000);
	ASSERT(!c.established);
	ASSERT_EQ(c.reason, GP_CLOSE_IO_ERROR);
	RUN_UNTIL(srv.closes == 1, 3000);
	ASSERT_EQ(srv.established, 0);
	run_for(50); /* no callback after on_close, nothing used after free */
	proxy_finish(&px);
	client_finish(&c);
	gp_token_destroy(t);
	server_stop();
}

/* A message larger than the write queue bound, sent on an empty queue, is
 * accepted; while it waits for a peer that paused reading, heartbeats fall
 * due, and they must not trip the bound (they once closed the channel with
 * "write queue full"). */
static void test_heartbeat_behind_message(void)
{
	struct gp_channel_config cfg;
	char str[GP_TOKEN_STRING_MAX];
	struct client c = { 0 };
	struct gp_token *t;
	/* More than both kernel buffers hold (4 MiB receive buffer here). */
	const size_t big = 24u * 1024 * 1024;
	uint8_t *m;

	test_config(&cfg);
	cfg.max_message = 32u * 1024 * 1024;
	cfg.max_write_queue = 1024 * 1024;
	cfg.write_low_water = 512 * 1024;
	cfg.heartbeat_ms = 50;
	server_start(&cfg);
	srv.echo = false;
	t = new_token(0, 0, str);
	client_join(&c, &cfg, t, srv.port);
	RUN_UNTIL(c.established && srv.established == 1 && srv.last_ch, 3000);
	gp_channel_pause_reading(srv.last_ch, true);
	m = malloc(big);
	ASSERT_NOT_NULL(m);
	fill(m, big, 77);
	ASSERT_OK(gp_channel_send(c.ch, m, big));
	free(m);
	run_for(400); /* eight heartbeat periods */
	ASSERT(!c.closed);
	ASSERT_EQ(srv.closes, 0);
	ASSERT_GT(gp_channel_queued_bytes(c.ch), cfg.max_write_queue);
	gp_channel_pause_reading(srv.last_ch, false);
	RUN_UNTIL(srv.messages == 1, 10000);
	ASSERT_EQ(srv.last_len, big);
	RUN_UNTIL(gp_channel_queued_bytes(c.ch) == 0, 3000);
	/* Heartbeats go on once the queue is empty. */
	{
		uint64_t sent = gp_channel_bytes_sent(c.ch);

		run_for(200);
		ASSERT_GT(gp_channel_bytes_sent(c.ch), sent);
	}
	ASSERT(!c.closed);
	gp_channel_close(c.ch, 0, NULL);
	RUN_UNTIL(c.closed && srv.closes == 1, 3000);
	client_finish(&c);
	gp_token_destroy(t);
	server_stop();
}

/* A message a little over one write buffer is queued from a callback that
 * then blocks the loop past a heartbeat: the heartbeat runs before the
 * queued message is flushed, and must neither drop it (its nonce is spent:
 * the peer would fail to decrypt what follows) nor reorder it. */
static void test_heartbeat_before_flush(void)
{
	struct gp_channel_config cfg;
	char str[GP_TOKEN_STRING_MAX];
	struct client c = { 0 };
	struct gp_token *t;

	test_config(&cfg);
	server_start(&cfg);
	srv.echo = false;
	t = new_token(0, 0, str);
	for (size_t len = 65510; len <= 65518; len += 4) {
		c.send_len = len; /* 65540 bytes queued at most: one MSG */
		c.stall_ms = 2 * cfg.heartbeat_ms;
		client_join(&c, &cfg, t, srv.port);
		RUN_UNTIL(srv.messages == 1, 3000);
		ASSERT_EQ(srv.last_len, len);
		run_for(250);
		ASSERT(!c.closed);
		ASSERT_EQ(srv.closes, 0);
		gp_channel_close(c.ch, 0, NULL);
		RUN_UNTIL(c.closed && srv.closes == 1, 3000);
		ASSERT_EQ(srv.last_reason, GP_CLOSE_PEER_CLOSED);
		client_finish(&c);
		srv.closes = 0;
		srv.messages = 0;
	}
	gp_token_destroy(t);
	server_stop();
}

/* max_message holds for small messages too (one record), not only for
 * those that announce their size. */
static void test_inline_over_max(void)
{
	struct gp_channel_config scfg, ccfg;
	char str[GP_TOKEN_STRING_MAX];
	struct client c = { 0 };
	struct gp_token *t;
	uint8_t m[2000] = { 0 };

	test_config(&scfg);
	scfg.max_message = 1000;
	server_start(&scfg);
	srv.echo = false;
	t = new_token(0, 0, str);
	test_config(&ccfg);
	client_join(&c, &ccfg, t, srv.port);
	RUN_UNTIL(c.established && srv.established == 1, 3000);
	ASSERT_OK(gp_channel_send(c.ch, m, 1000));
	RUN_UNTIL(srv.messages == 1, 3000);
	ASSERT_OK(gp_channel_send(c.ch, m, sizeof(m)));
	RUN_UNTIL(srv.closes == 1 && c.closed, 3000);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_OVERSIZED_MESSAGE);
	ASSERT_EQ(srv.messages, 1);
	client_finish(&c);
	gp_token_destroy(t);
	server_stop();
}

/* Connections whose message 1 was refused linger (so that the REFUSE gets
 * out) and keep their handshake slot meanwhile: a flood of bad message 1s
 * stays within max_handshakes. */
static void test_flood_refused(void)
{
	struct gp_channel_config cfg;
	uint8_t junk[GP_FRAME_HEADER_SIZE + 120];
	struct raw r[3];

	test_config(&cfg);
	cfg.max_handshakes = 2;
	cfg.close_linger_ms = 1000;
	server_start(&cfg);
	ASSERT_OK(gp_frame_header_write(junk, GP_FRAME_HANDSHAKE, 120));
	fill(junk + GP_FRAME_HEADER_SIZE, 120, 5);
	junk[GP_FRAME_HEADER_SIZE] = 1; /* IK */
	raw_start(&r[0], srv.port, junk, sizeof(junk), false);
	raw_start(&r[1], srv.port, junk, sizeof(junk), false);
	r[0].keep_open = r[1].keep_open = true;
	/* Both refused (the REFUSE frame arrived), both lingering: the
	 * clients do not hang up. */
	RUN_UNTIL(r[0].received == GP_FRAME_HEADER_SIZE &&
			  r[1].received == GP_FRAME_HEADER_SIZE,
		  900);
	ASSERT_EQ(srv.closes, 0);
	raw_start(&r[2], srv.port, NULL, 0, false);
	RUN_UNTIL(srv.closes == 1 && r[2].eof, 900);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_TOO_MANY_HANDSHAKES);
	/* The linger time ends it. */
	RUN_UNTIL(srv.closes == 3, 3000);
	ASSERT_EQ(srv.last_reason, GP_CLOSE_HANDSHAKE_FAILED);
	for (int i = 0; i < 3; i++)
		raw_finish(&r[i]);
	server_stop();
}

/* Connecting to a port nobody listens on. */
static void test_connect_failed(void)
{
	struct gp_channel_config cfg;
	struct client c = { 0 };
	struct gp_channel_listener *l;
	struct sockaddr_in addr;
	uint8_t hello = HELLO_MEMBER;
	int port;

	/* Take an ephemeral port and free it again. */
	test_config(&cfg);
	ASSERT_OK(uv_ip4_addr("127.0.0.1", 0, &addr));
	ASSERT_OK(gp_channel_listen(loop, (struct sockaddr *)&addr, coord_key,
				    &cfg, &srv_cb, NULL, &l));
	port = gp_channel_listener_port(l);
	gp_channel_listener_destroy(l);
	run_for(20);
	client_connect(&c, &cfg, coord_key->pub, NULL, &hello, 1, port);
	RUN_UNTIL(c.closed, 3000);
	ASSERT_EQ(c.reason, GP_CLOSE_CONNECT_FAILED);
	client_finish(&c);
}

int main(void)
{
	uint8_t scratch[GP_NOISE_KEY_SIZE];

	gp_log_init("test-channel");
	loop = uv_default_loop();
	ASSERT_OK(gp_noise_init());
	ASSERT_OK(gp_noise_keypair_create(NULL, &coord_key));
	ASSERT_OK(gp_noise_keypair_create(NULL, &agent_key));
	ASSERT_OK(gp_noise_keypair_create(NULL, &other_key));
	/* Random token and hash keys for the token table (the public half
	 * of a fresh key pair is as random as anything). */
	ASSERT_OK(gp_noise_keypair_generate(srv.token_key, scratch));
	ASSERT_OK(gp_noise_keypair_generate(srv.hash_key, scratch));

	ASSERT_STR_EQ(gp_channel_close_reason_name(GP_CLOSE_HANDSHAKE_TIMEOUT),
		      "handshake timeout");
	ASSERT_STR_EQ(gp_channel_close_reason_name(0), "unknown");

	for (int k = 0; k < 2; k++) {
		/* First as serve runs them, then all on the loop. */
		hs_offload = k == 0;
		test_join_and_member();
		test_wrong_coordinator_key();
		test_token_verdicts();
		test_tampered();
		test_replay();
		test_bad_streams();
		test_flood();
	}
	hs_offload = true;
	test_idle();
	test_never_reads();
	test_rekey();
	test_offload();
	test_open_tampered();
	test_open_callbacks();
	test_drain();
	test_flood_refused();
	test_reset_after_accept();
	test_heartbeat_behind_message();
	test_heartbeat_before_flush();
	test_inline_over_max();
	test_connect_failed();

	run_for(20);
	ASSERT_EQ(uv_loop_close(loop), 0);
	gp_noise_keypair_destroy(coord_key);
	gp_noise_keypair_destroy(agent_key);
	gp_noise_keypair_destroy(other_key);
	return 0;
}
