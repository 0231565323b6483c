/* The channel's handshake: Noise IK or IKpsk2 over GP_FRAME_HANDSHAKE
 * frames, the responder's verdict, and the switch to the transport.
 *
 *   initiator: channel_write_msg1 (queued before the connect completes)
 *              -> channel_read_msg2 -> first transport message (PING)
 *              -> established
 *   responder: channel_read_msg1 -> on_verify -> message 2 queued
 *              -> S_WAIT_CONFIRM -> first transport message (channel-recv.c)
 *              -> established
 *
 * With handshake_offload (serve), the responder's Diffie-Hellman work runs
 * on libuv's thread pool: reading message 1 (es, ss) in one job, writing
 * message 2 (a fresh ephemeral key, ee, se) in another, on_verify on the
 * loop between them. Reading stops while a job is out; the channel's state
 * stays S_WAIT_MSG1 and a frame that arrives before message 2 could have
 * been read by the peer ends the connection. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channel-internal.h"
#include "gp-endian.h"
#include "log.h"

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

/* Receive buffer asked for once established, where the kernel grants all of
 * it (net.core.rmem_max; Linux then books twice the size). Autotuning sizes
 * the buffer from the bytes read per round trip; over loopback, where a
 * round trip takes microseconds, it stayed near 740 KiB, and the sender
 * kept stopping for window updates: a fixed buffer took 10-20 % less CPU
 * per byte there. Where rmem_max is lower, setting the size would cap the
 * buffer below what autotuning reaches (and switch autotuning off), so the
 * kernel's default stays. */
#define RCVBUF_WANT (4 * 1024 * 1024)

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

void channel_established(struct gp_channel *ch, const uint8_t *payload,
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
	channel_arm_timer(ch);
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

/* Queues a whole handshake-phase frame (REFUSE). */
static int queue_frame(struct gp_channel *ch, enum gp_frame_kind kind,
		       const uint8_t *body, size_t len)
{
	uint8_t *p = gp_wqueue_reserve(&ch->wq, GP_FRAME_HEADER_SIZE + len);

	if (!p)
		return -ENOMEM;
	gp_frame_header_write(p, kind, len);
	if (len)
		memcpy(p + GP_FRAME_HEADER_SIZE, body, len);
	gp_wqueue_commit(&ch->wq, GP_FRAME_HEADER_SIZE + len);
	return 0;
}

int channel_write_msg1(struct gp_channel *ch,
		       const struct gp_channel_peer *peer)
{
	uint8_t *p;
	size_t mlen;
	int r, size;

	r = gp_noise_handshake_create(ch->pattern, true,
				      (const uint8_t *)prologue,
				      sizeof(prologue) - 1, peer->local,
				      peer->remote_static, &ch->hs);
	if (r < 0)
		return r;
	if (peer->psk) {
		r = gp_noise_handshake_set_psk(ch->hs, peer->psk);
		if (r < 0)
			return r;
	}
	size = gp_noise_handshake_message_size(ch->hs, peer->payload_len);
	if (size < 0 || (size_t)size + 1 > GP_FRAME_MAX_BODY)
		return -EINVAL;
	p = gp_wqueue_reserve(&ch->wq,
			      GP_FRAME_HEADER_SIZE + 1 + (size_t)size);
	if (!p)
		return -ENOMEM;
	p[GP_FRAME_HEADER_SIZE] = peer->psk ? PATTERN_BYTE_IKPSK2 :
					      PATTERN_BYTE_IK;
	r = gp_noise_handshake_write_message(ch->hs, peer->payload,
					     peer->payload_len,
					     p + GP_FRAME_HEADER_SIZE + 1,
					     (size_t)size, &mlen);
	if (r < 0)
		return r;
	gp_frame_header_write(p, GP_FRAME_HANDSHAKE, 1 + mlen);
	gp_wqueue_commit(&ch->wq, GP_FRAME_HEADER_SIZE + 1 + mlen);
	return 0;
}

/* Checks message 1's frame and takes its pattern. Returns 0, or -1 when
 * the channel is closing. */
static int check_msg1(struct gp_channel *ch, const struct gp_frame *f)
{
	if (f->kind != GP_FRAME_HANDSHAKE || f->len < 1) {
		channel_teardown(ch, GP_CLOSE_HANDSHAKE_FAILED, 0,
				 "expected handshake message 1", false);
		return -1;
	}
	if (f->body[0] == PATTERN_BYTE_IK) {
		ch->pattern = GP_NOISE_IK;
	} else if (f->body[0] == PATTERN_BYTE_IKPSK2) {
		ch->pattern = GP_NOISE_IKPSK2;
	} else {
		channel_teardown(ch, GP_CLOSE_HANDSHAKE_FAILED, 0,
				 "unknown handshake pattern", false);
		return -1;
	}
	return 0;
}

/* Reads the Noise message 1 (msg, len bytes) into a new handshake state
 * and its payload. Touches nothing but its arguments (a worker may run
 * it). Returns 0, -ENOMEM, or another negative errno when the message
 * does not authenticate; *ret_hs and *ret_hello are set whenever they were
 * allocated. */
static int open_msg1(enum gp_noise_pattern pattern,
		     const struct gp_noise_keypair *key, const uint8_t *msg,
		     size_t len, struct gp_noise_handshake **ret_hs,
		     uint8_t **ret_hello, size_t *ret_hello_len)
{
	int r = gp_noise_handshake_create(pattern, false,
					  (const uint8_t *)prologue,
					  sizeof(prologue) - 1, key, NULL,
					  ret_hs);

	if (r < 0)
		return -ENOMEM;
	*ret_hello = malloc(len ? len : 1);
	if (!*ret_hello)
		return -ENOMEM;
	r = gp_noise_handshake_read_message(*ret_hs, msg, len, *ret_hello,
					    len, ret_hello_len);
	return r == -ENOMEM ? -EBADMSG : r;
}

/* Message 1 did not open (r): a lack of memory, or most likely an
 * initiator that pinned another key; that one is told in clear (it carries
 * no data), so that it can say so. */
static void msg1_failed(struct gp_channel *ch, int r)
{
	if (r == -ENOMEM) {
		channel_teardown(ch, GP_CLOSE_NO_MEMORY, 0, "handshake state",
				 false);
		return;
	}
	queue_frame(ch, GP_FRAME_REFUSE, NULL, 0);
	channel_teardown(ch, GP_CLOSE_HANDSHAKE_FAILED, 0,
			 "handshake message 1 did not authenticate "
			 "(the initiator expects another key?)",
			 true);
}

/* Message 1 is open (ch->hs, ch->hello): asks the application, and makes
 * sure an IKpsk2 handshake has a psk. Returns 0 with *verdict filled in, or
 * -1 when the channel is closing. */
static int ask(struct gp_channel *ch, struct gp_channel_verdict *verdict)
{
	struct gp_channel_hello hello;
	int r;

	memcpy(ch->remote_static, gp_noise_handshake_remote_static(ch->hs),
	       GP_NOISE_KEY_SIZE);
	ch->have_remote_static = true;

	hello.pattern = ch->pattern;
	hello.remote_static = ch->remote_static;
	hello.payload = ch->hello;
	hello.payload_len = ch->hello_len;
	memset(verdict, 0, sizeof(*verdict));
	ch->in_verify = true;
	r = ch->cb.on_verify(ch, &hello, verdict);
	ch->in_verify = false;
	if (ch->state == S_CLOSING)
		return -1; /* the callback closed it */
	if (r < 0) {
		channel_teardown(ch, GP_CLOSE_REJECTED, 0,
				 "dropped by the application", false);
		return -1;
	}
	if (ch->pattern == GP_NOISE_IKPSK2 && !ch->psk_set) {
		/* Without a psk no message 2 can be written; a zero psk lets
		 * it go out, and the initiator fails to read it. */
		static const uint8_t zero[GP_NOISE_PSK_SIZE];

		gp_noise_handshake_set_psk(ch->hs, zero);
		if (!verdict->reject) {
			verdict->reject = true;
			verdict->code = 0;
			snprintf(verdict->text, sizeof(verdict->text),
				 "no pre-shared key for this token");
		}
	}
	verdict->text[GP_CHANNEL_TEXT_MAX] = '\0';
	return 0;
}

/* Message 2's payload for the verdict, into answer (3 +
 * GP_CHANNEL_TEXT_MAX bytes). Returns its length. */
static size_t answer_of(const struct gp_channel_verdict *verdict,
			uint8_t *answer)
{
	size_t tl;

	if (!verdict->reject) {
		answer[0] = VERDICT_ACCEPT;
		return 1;
	}
	tl = strlen(verdict->text);
	answer[0] = VERDICT_REJECT;
	gp_put_le16(answer + 1, verdict->code);
	memcpy(answer + 3, verdict->text, tl);
	return 3 + tl;
}

/* Message 2 (frame body msg, len bytes) is written: queues it, then ends a
 * rejected handshake or waits for the initiator's confirmation. */
static void msg2_written(struct gp_channel *ch,
			 const struct gp_channel_verdict *verdict,
			 const uint8_t *msg, size_t len)
{
	if (queue_frame(ch, GP_FRAME_HANDSHAKE, msg, len) < 0) {
		channel_teardown(ch, GP_CLOSE_NO_MEMORY, 0, NULL, false);
		return;
	}
	if (verdict->reject) {
		char text[GP_CHANNEL_TEXT_MAX + 1];

		snprintf(text, sizeof(text), "%s", verdict->text);
		channel_teardown(ch, GP_CLOSE_REJECTED, verdict->code, text,
				 true);
		return;
	}
	if (start_transport(ch) < 0) {
		channel_teardown(ch, GP_CLOSE_NO_MEMORY, 0, "transport", false);
		return;
	}
	ch->state = S_WAIT_CONFIRM;
	/* After a handshake job: the confirmation comes next. */
	if (channel_resume_reading(ch) < 0) {
		channel_teardown(ch, GP_CLOSE_IO_ERROR, 0, "read start", false);
		return;
	}
	channel_flush(ch);
}

/* ---- the responder's handshake on the thread pool ---------------------- */

struct hs_job {
	uv_work_t req;
	struct gp_channel *ch;
	bool write;                       /* message 2, else message 1 */
	/* Message 1: the Noise message, copied; what open_msg1 gives. */
	enum gp_noise_pattern pattern;
	const struct gp_noise_keypair *key; /* the listener's (a reference
					     * held through the channel) */
	uint8_t *msg;
	size_t len;
	struct gp_noise_handshake *hs;
	uint8_t *hello;
	size_t hello_len;
	/* Message 2: the verdict, its payload, and the message written. */
	struct gp_channel_verdict verdict;
	uint8_t answer[3 + GP_CHANNEL_TEXT_MAX];
	size_t alen;
	uint8_t *out;
	size_t out_cap, out_len;
	int result;
};

static void hs_run(uv_work_t *req)
{
	struct hs_job *j = req->data;

	if (j->write)
		j->result = gp_noise_handshake_write_message(
			j->hs, j->answer, j->alen, j->out, j->out_cap,
			&j->out_len);
	else
		j->result = open_msg1(j->pattern, j->key, j->msg, j->len,
				      &j->hs, &j->hello, &j->hello_len);
}

static void hs_done(uv_work_t *req, int status);

/* Handshake jobs queued and not yet back, in the whole process. Beyond
 * HS_JOBS_MAX the loop does the next handshakes itself: libuv's threads
 * are shared with the ledger's work and the sealing, and a handshake
 * waiting behind them would only come closer to its deadline. */
#define HS_JOBS_MAX 32
static atomic_uint hs_jobs;

static int hs_queue(struct gp_channel *ch, struct hs_job *j)
{
	if (atomic_load(&hs_jobs) >= HS_JOBS_MAX)
		return -1;
	j->ch = ch;
	j->req.data = j;
	if (uv_queue_work(ch->loop, &j->req, hs_run, hs_done) < 0)
		return -1;
	atomic_fetch_add(&hs_jobs, 1);
	ch->jobs++;
	ch->hs_job = true;
	return 0;
}

static void hs_free(struct hs_job *j)
{
	free(j->msg);
	free(j->out);
	free(j);
}

/* Message 2 was written (j->result): queue it, or end the handshake. */
static void msg2_finish(struct gp_channel *ch, struct hs_job *j)
{
	if (j->result < 0)
		channel_teardown(ch, GP_CLOSE_HANDSHAKE_FAILED, 0,
				 "writing message 2 failed", false);
	else
		msg2_written(ch, &j->verdict, j->out, j->out_len);
}

/* Message 1 opened on a worker: ask the application on the loop, then
 * write message 2 on a worker again. Returns true when the job went back
 * to the pool (it is not the caller's to free any more). */
static bool hs_opened(struct gp_channel *ch, struct hs_job *j)
{
	int size;

	if (j->result < 0) {
		msg1_failed(ch, j->result);
		return false;
	}
	if (ask(ch, &j->verdict) < 0)
		return false;
	j->alen = answer_of(&j->verdict, j->answer);
	size = gp_noise_handshake_message_size(ch->hs, j->alen);
	if (size < 0) {
		channel_teardown(ch, GP_CLOSE_HANDSHAKE_FAILED, 0,
				 "message 2 size", false);
		return false;
	}
	j->out = malloc((size_t)size);
	if (!j->out) {
		channel_teardown(ch, GP_CLOSE_NO_MEMORY, 0, NULL, false);
		return false;
	}
	j->out_cap = (size_t)size;
	j->write = true;
	j->hs = ch->hs;
	if (ch->cfg.handshake_offload && hs_queue(ch, j) == 0)
		return true;
	/* On the loop (as configured, or the pool is busy). */
	j->req.data = j;
	hs_run(&j->req);
	msg2_finish(ch, j);
	return false;
}

static void hs_done(uv_work_t *req, int status)
{
	struct hs_job *j = req->data;
	struct gp_channel *ch = j->ch;

	atomic_fetch_sub(&hs_jobs, 1);
	ch->hs_job = false;
	if (!j->write) {
		/* The channel owns what the job made, whatever comes. */
		ch->hs = j->hs;
		ch->hello = j->hello;
		ch->hello_len = j->hello_len;
		free(j->msg);
		j->msg = NULL;
	}
	if (channel_job_done(ch) || ch->state == S_CLOSING) {
		hs_free(j);
		return;
	}
	if (status < 0 && j->result >= 0)
		j->result = status;
	if (!j->write) {
		if (!hs_opened(ch, j))
			hs_free(j);
		return;
	}
	msg2_finish(ch, j);
	hs_free(j);
}

/* Hands message 1 (f checked) to the thread pool. Returns 0, or -1 when it
 * must be read on the loop (no memory for the job, no pool). */
static int offload_msg1(struct gp_channel *ch, const struct gp_frame *f)
{
	struct hs_job *j = calloc(1, sizeof(*j));

	if (!j)
		return -1;
	j->pattern = ch->pattern;
	j->key = ch->listener->key;
	j->len = f->len - 1;
	j->msg = malloc(j->len ? j->len : 1);
	if (!j->msg) {
		free(j);
		return -1;
	}
	memcpy(j->msg, f->body + 1, j->len);
	if (hs_queue(ch, j) < 0) {
		free(j->msg);
		free(j);
		return -1;
	}
	/* Nothing more is read until message 2 is queued. */
	channel_read_off(ch);
	ch->paused = true;
	return 0;
}

void channel_read_msg1(struct gp_channel *ch, const struct gp_frame *f)
{
	struct hs_job *j;

	if (ch->hs_job || ch->hs) {
		/* An honest initiator waits for message 2. */
		channel_teardown(ch, GP_CLOSE_PROTOCOL_ERROR, 0,
				 "a frame before message 2", false);
		return;
	}
	if (check_msg1(ch, f) < 0)
		return;
	if (ch->cfg.handshake_offload && offload_msg1(ch, f) == 0)
		return;
	/* On the loop: the same steps as the jobs', in place. */
	j = calloc(1, sizeof(*j));
	if (!j) {
		channel_teardown(ch, GP_CLOSE_NO_MEMORY, 0, "handshake state",
				 false);
		return;
	}
	j->result = open_msg1(ch->pattern, ch->listener->key, f->body + 1,
			      f->len - 1, &ch->hs, &ch->hello, &ch->hello_len);
	if (!hs_opened(ch, j))
		hs_free(j);
}

/* Message 2's payload (len >= 0 bytes, borrowed): the verdict. Returns 0 on
 * accept, or -1 when the channel is closing. */
static int read_verdict(struct gp_channel *ch, const uint8_t *payload,
			size_t plen)
{
	if (plen >= 1 && payload[0] == VERDICT_REJECT && plen >= 3) {
		char text[GP_CHANNEL_TEXT_MAX + 1];
		uint16_t code = gp_get_le16(payload + 1);

		channel_copy_text(text, sizeof(text), payload + 3, plen - 3);
		channel_teardown(ch, GP_CLOSE_REJECTED, code,
				 text[0] ? text : "rejected", false);
		return -1;
	}
	if (plen < 1 || payload[0] != VERDICT_ACCEPT) {
		channel_teardown(ch, GP_CLOSE_HANDSHAKE_FAILED, 0,
				 "malformed verdict in message 2", false);
		return -1;
	}
	return 0;
}

void channel_read_msg2(struct gp_channel *ch, const struct gp_frame *f)
{
	uint8_t *payload = NULL, ping = REC_PING;
	size_t plen;
	int r;

	if (f->kind == GP_FRAME_REFUSE) {
		channel_teardown(ch, GP_CLOSE_KEY_MISMATCH, 0,
				 "the coordinator could not read the "
				 "handshake: its key does not match the one "
				 "in the token",
				 false);
		return;
	}
	if (f->kind != GP_FRAME_HANDSHAKE) {
		channel_teardown(ch, GP_CLOSE_HANDSHAKE_FAILED, 0,
				 "expected handshake message 2", false);
		return;
	}
	payload = malloc(f->len ? f->len : 1);
	if (!payload) {
		channel_teardown(ch, GP_CLOSE_NO_MEMORY, 0, NULL, false);
		return;
	}
	r = gp_noise_handshake_read_message(ch->hs, f->body, f->len, payload,
					    f->len, &plen);
	if (r < 0) {
		channel_teardown(ch, GP_CLOSE_KEY_MISMATCH, 0,
				 ch->pattern == GP_NOISE_IKPSK2 ?
					 "handshake message 2 did not "
					 "authenticate: the coordinator key or "
					 "the token secret does not match the "
					 "token" :
					 "handshake message 2 did not "
					 "authenticate: the coordinator key "
					 "does not match",
				 false);
		goto out;
	}
	if (read_verdict(ch, payload, plen) < 0)
		goto out;
	if (start_transport(ch) < 0) {
		channel_teardown(ch, GP_CLOSE_NO_MEMORY, 0, "transport", false);
		goto out;
	}
	/* The first transport message proves to the responder that we hold
	 * the ephemeral key (and the psk): it fires its on_established. */
	if (channel_send_record(ch, &ping, 1) < 0) {
		channel_teardown(ch, GP_CLOSE_NO_MEMORY, 0, NULL, false);
		goto out;
	}
	channel_flush(ch);
	/* The write may have failed (the peer reset the connection right
	 * after message 2): then the channel is closing and must not come
	 * back to life. */
	if (ch->state == S_CLOSING)
		goto out;
	channel_established(ch, payload + 1, plen - 1);
out:
	free(payload);
}
