/* The channel's receiving side: bytes from the socket into frames
 * (frame.c), frames to the handshake (channel-handshake.c) or, once it is
 * done, into records and messages.
 *
 * Reads of established channels go into one 256 KiB buffer that every
 * channel of the thread shares (a read is handled whole before the next
 * read of any channel starts, and nothing points into it afterwards);
 * whole frames are decrypted in place, and the pieces of a large message
 * straight into the reassembly buffer. An idle channel holds no read
 * buffer, so 10,000 connections cost 10,000 x 256 KiB less.
 *
 * Offloaded opening (messages of open_offload_min bytes and more): the
 * pieces' ciphertext is copied aside as it comes; with the last piece the
 * loop takes the message's run of receive nonces at once
 * (gp_noise_transport_take_recv) and jobs on libuv's thread pool open the
 * pieces into the reassembly buffer, about 1 MiB each, several at once.
 * Reading stops meanwhile, and what came after the last piece in the same
 * read is kept: once every job is back the message is delivered, then
 * what was kept is read, then the socket again, so that messages arrive
 * in the order they were sent. A run that would cross a rekey, and any
 * job beyond OPEN_JOBS_MAX in flight in the process, is opened on the
 * loop. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "channel-internal.h"
#include "gp-endian.h"
#include "log.h"
#include "secmem.h"

/* Reads go into a small buffer per channel during the handshake (a
 * connection flood costs little), into the thread's large shared one once
 * established (few syscalls). */
#define READ_BUF_HANDSHAKE 4096
#define READ_BUF_ESTABLISHED (256 * 1024)

/* The shared buffer of this thread's established channels, and how many
 * hold a reference to it (channel_release_read_buffer frees it at 0). */
static _Thread_local uint8_t *shared_rbuf;
static _Thread_local size_t shared_refs;
/* Reassembly buffers above this are freed after delivery. */
#define REASM_KEEP_MAX (16u * 1024 * 1024)

static void deliver(struct gp_channel *ch, uint8_t *data, size_t len)
{
	if (ch->cb.on_message)
		ch->cb.on_message(ch, data, len);
}

static void decrypt_failed(struct gp_channel *ch, int r)
{
	if (r == -ENOMEM) {
		channel_teardown(ch, GP_CLOSE_NO_MEMORY, 0, "opening a message",
				 false);
		return;
	}
	channel_teardown(ch, GP_CLOSE_DECRYPT_FAILED, 0,
			 r == -EOVERFLOW ?
				 "transport nonce exhausted" :
				 "a transport message did not authenticate",
			 false);
}

void channel_drop_reassembly(struct gp_channel *ch)
{
	if (ch->in_msg)
		return;
	free(ch->msg);
	ch->msg = NULL;
	ch->msg_cap = 0;
}

/* The reassembled message is whole: to the application. */
static void deliver_whole(struct gp_channel *ch)
{
	ch->in_msg = false;
	deliver(ch, ch->msg, ch->msg_total);
	if (ch->msg_cap > REASM_KEEP_MAX) {
		free(ch->msg);
		ch->msg = NULL;
		ch->msg_cap = 0;
	}
}

/* ---- offloaded opening ------------------------------------------------ */

/* Opening jobs queued and not yet back, in the whole process; beyond this
 * the loop opens the next message itself (the pool is busy; the sealing's
 * SEAL_JOBS_MAX, channel-send.c, likewise). */
#define OPEN_JOBS_MAX 8
/* Pieces per job: about 1 MiB, as a seal job's. */
#define OPEN_JOB_PIECES 16
/* A piece's ciphertext in `cipher`: every piece but the last is full. */
#define PIECE_STRIDE (PLAIN_MAX + GP_NOISE_TAG_SIZE)

static atomic_uint open_jobs;
/* Messages opened by jobs, in the whole process. */
static atomic_ullong opened_off_loop;

uint64_t gp_channel_opened_off_loop(void)
{
	return atomic_load(&opened_off_loop);
}

/* One job: pieces [first, end) of the channel's staged message. Touches
 * the staged ciphertext, its pieces' room in the reassembly buffer and
 * the span (read-only) only. */
struct open_job {
	uv_work_t req;
	struct gp_channel *ch;
	const struct gp_noise_span *span;
	const uint8_t *cipher;
	uint8_t *msg;
	size_t total;
	size_t first, end;
	int result;
};

static int open_pieces(const struct gp_noise_span *span, const uint8_t *cipher,
		       uint8_t *msg, size_t total, size_t first, size_t end)
{
	for (size_t i = first; i < end; i++) {
		size_t off = i * PLAIN_MAX;
		size_t n = total - off < PLAIN_MAX ? total - off : PLAIN_MAX;
		int r = gp_noise_span_decrypt(span, i, cipher + i * PIECE_STRIDE,
					      n + GP_NOISE_TAG_SIZE, msg + off);

		if (r < 0)
			return r;
	}
	return 0;
}

static void open_run(uv_work_t *req)
{
	struct open_job *j = req->data;

	j->result = open_pieces(j->span, j->cipher, j->msg, j->total,
				j->first, j->end);
}

static void consume(struct gp_channel *ch, uint8_t *data, size_t len);

/* The message's jobs are all back and it opened: delivered, then what
 * came after it, then the socket. */
static void opened(struct gp_channel *ch)
{
	uint8_t *held = ch->held;
	size_t held_len = ch->held_len;

	ch->open_hold = false;
	ch->held = NULL;
	ch->held_len = 0;
	deliver_whole(ch);
	if (held && ch->state != S_CLOSING)
		consume(ch, held, held_len);
	free(held);
	/* Reading again, unless the application paused it or a message
	 * kept holds it; a channel that began a graceful close meanwhile
	 * reads to see the peer's EOF. */
	if (ch->open_hold || ch->handles_closing ||
	    (ch->paused && ch->state != S_CLOSING))
		return;
	ch->last_recv = uv_now(ch->loop);
	if (channel_read_on(ch) < 0) {
		channel_teardown(ch, GP_CLOSE_IO_ERROR, 0, "read start", false);
		channel_close_handles(ch);
		return;
	}
	if (ch->state == S_ESTABLISHED)
		channel_arm_timer(ch);
}

static void open_done(uv_work_t *req, int status)
{
	struct open_job *j = req->data;
	struct gp_channel *ch = j->ch;
	int result = status < 0 ? status : j->result;

	free(j);
	atomic_fetch_sub(&open_jobs, 1);
	if (result < 0 && ch->open_result == 0)
		ch->open_result = result;
	if (--ch->open_jobs == 0) {
		gp_secmem_free(ch->open_span);
		ch->open_span = NULL;
		free(ch->cipher);
		ch->cipher = NULL;
	}
	if (channel_job_done(ch) || ch->open_jobs > 0)
		return;
	result = ch->open_result;
	ch->open_result = 0;
	if (ch->state == S_CLOSING) {
		/* Closed meanwhile: what came after is dropped, as
		 * channel_on_read drops what comes once closing. */
		free(ch->held);
		ch->held = NULL;
		ch->held_len = 0;
		return;
	}
	if (result < 0) {
		decrypt_failed(ch, result);
		return;
	}
	opened(ch);
}

/* The staged message's last piece is in: its nonces taken, its pieces
 * opened by jobs (or here, when they cannot be: a run that would cross a
 * rekey, a busy pool). */
static void open_staged(struct gp_channel *ch)
{
	size_t n = ch->pieces;
	int r;

	ch->open_staged = false;
	ch->open_span = gp_secmem_alloc(sizeof(*ch->open_span));
	r = !ch->open_span ? -ENOMEM :
	    atomic_load(&open_jobs) >= OPEN_JOBS_MAX ? 1 :
	    gp_noise_transport_take_recv(ch->tx, n, ch->open_span);
	if (r != 0) {
		gp_secmem_free(ch->open_span);
		ch->open_span = NULL;
	}
	if (r == -EOVERFLOW) {
		free(ch->cipher);
		ch->cipher = NULL;
		decrypt_failed(ch, r);
		return;
	}
	if (r != 0) {
		/* One by one on the loop, as they would have been. */
		for (size_t i = 0; i < n; i++) {
			size_t off = i * PLAIN_MAX, plen;
			size_t want = ch->msg_total - off < PLAIN_MAX ?
					      ch->msg_total - off : PLAIN_MAX;

			r = gp_noise_transport_decrypt(
				ch->tx, NULL, 0, ch->cipher + i * PIECE_STRIDE,
				want + GP_NOISE_TAG_SIZE, ch->msg + off, want,
				&plen);
			if (r < 0) {
				free(ch->cipher);
				ch->cipher = NULL;
				decrypt_failed(ch, r);
				return;
			}
		}
		free(ch->cipher);
		ch->cipher = NULL;
		deliver_whole(ch);
		return;
	}
	ch->open_hold = true;
	channel_read_off(ch);
	for (size_t first = 0; first < n; first += OPEN_JOB_PIECES) {
		size_t end = first + OPEN_JOB_PIECES < n ? first + OPEN_JOB_PIECES :
							    n;
		struct open_job *j = atomic_load(&open_jobs) < OPEN_JOBS_MAX ?
					     calloc(1, sizeof(*j)) :
					     NULL;

		if (j) {
			*j = (struct open_job){
				.ch = ch, .span = ch->open_span,
				.cipher = ch->cipher, .msg = ch->msg,
				.total = ch->msg_total, .first = first,
				.end = end,
			};
			j->req.data = j;
		}
		if (!j || uv_queue_work(ch->loop, &j->req, open_run,
					open_done) < 0) {
			/* The pool is busy (OPEN_JOBS_MAX), or no memory or
			 * no thread pool: opened here, in its place; its
			 * result counts like a job's. */
			int rj = open_pieces(ch->open_span, ch->cipher,
					     ch->msg, ch->msg_total, first, end);

			free(j);
			if (rj < 0 && ch->open_result == 0)
				ch->open_result = rj;
			continue;
		}
		ch->jobs++;
		ch->open_jobs++;
		atomic_fetch_add(&open_jobs, 1);
	}
	if (ch->open_jobs > 0)
		atomic_fetch_add(&opened_off_loop, 1);
	if (ch->open_jobs == 0) {
		/* Every piece was opened here. */
		gp_secmem_free(ch->open_span);
		ch->open_span = NULL;
		free(ch->cipher);
		ch->cipher = NULL;
		r = ch->open_result;
		ch->open_result = 0;
		if (r < 0) {
			ch->open_hold = false;
			decrypt_failed(ch, r);
			return;
		}
		opened(ch);
	}
}

/* A piece of a large message: decrypted straight into place, or staged
 * for the jobs. */
static void read_piece(struct gp_channel *ch, const struct gp_frame *f)
{
	size_t want = ch->msg_total - ch->msg_have, plen;
	int r;

	if (want > PLAIN_MAX)
		want = PLAIN_MAX;
	if (f->len != want + GP_NOISE_TAG_SIZE) {
		channel_teardown(ch, GP_CLOSE_PROTOCOL_ERROR, 0,
				 "message piece of the wrong size", false);
		return;
	}
	if (ch->open_staged) {
		memcpy(ch->cipher + ch->pieces++ * PIECE_STRIDE, f->body,
		       f->len);
		ch->msg_have += want;
		if (ch->msg_have == ch->msg_total)
			open_staged(ch);
		return;
	}
	r = gp_noise_transport_decrypt(ch->tx, NULL, 0, f->body, f->len,
				       ch->msg + ch->msg_have, want, &plen);
	if (r < 0) {
		decrypt_failed(ch, r);
		return;
	}
	ch->msg_have += plen;
	if (ch->msg_have < ch->msg_total)
		return;
	deliver_whole(ch);
}

/* A BEGIN record (p, plen bytes with the record byte): a large message of
 * the announced size follows in pieces. */
static void read_begin(struct gp_channel *ch, uint8_t *p, size_t plen)
{
	uint32_t total;

	if (plen != 5) {
		channel_teardown(ch, GP_CLOSE_PROTOCOL_ERROR, 0,
				 "malformed message start", false);
		return;
	}
	total = gp_get_le32(p + 1);
	if (total > ch->cfg.max_message) {
		channel_teardown(ch, GP_CLOSE_OVERSIZED_MESSAGE, 0,
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
			channel_teardown(ch, GP_CLOSE_NO_MEMORY, 0,
					 "reassembly buffer", false);
			return;
		}
		ch->msg_cap = total;
	}
	ch->in_msg = true;
	ch->msg_total = total;
	ch->msg_have = 0;
	ch->pieces = 0;
	ch->open_staged = false;
	if (ch->cfg.open_offload_min && total >= ch->cfg.open_offload_min &&
	    ch->state == S_ESTABLISHED) {
		size_t n = (total + PLAIN_MAX - 1) / PLAIN_MAX;

		/* No memory for the copy: opened on the loop as it comes. */
		free(ch->cipher);
		ch->cipher = malloc(n * PIECE_STRIDE);
		ch->open_staged = ch->cipher != NULL;
	}
}

/* One decrypted record (p, plen bytes, plen >= 1). */
static void handle_record(struct gp_channel *ch, uint8_t *p, size_t plen)
{
	switch (p[0]) {
	case REC_MSG:
		if (plen - 1 > ch->cfg.max_message) {
			channel_teardown(ch, GP_CLOSE_OVERSIZED_MESSAGE, 0,
					 "message larger than the maximum",
					 false);
			return;
		}
		deliver(ch, p + 1, plen - 1);
		return;
	case REC_BEGIN:
		read_begin(ch, p, plen);
		return;
	case REC_PING:
		return;
	case REC_CLOSE: {
		char text[GP_CHANNEL_TEXT_MAX + 1];
		uint16_t code = 0;

		if (plen >= 3)
			code = gp_get_le16(p + 1);
		channel_copy_text(text, sizeof(text), p + 3,
				  plen >= 3 ? plen - 3 : 0);
		channel_teardown(ch, GP_CLOSE_PEER_CLOSED, code,
				 text[0] ? text : "closed by peer", false);
		return;
	}
	default:
		/* A record type of a later version: skip it. */
		gp_debug("channel %p: skipping record type %u", (void *)ch,
			 p[0]);
		return;
	}
}

/* A transport frame, in S_WAIT_CONFIRM or S_ESTABLISHED. */
static void read_transport(struct gp_channel *ch, const struct gp_frame *f)
{
	size_t plen;
	uint8_t *p = f->body;
	int r;

	if (f->kind != GP_FRAME_TRANSPORT) {
		channel_teardown(ch, GP_CLOSE_PROTOCOL_ERROR, 0,
				 "handshake frame after the handshake", false);
		return;
	}
	if (ch->in_msg) {
		read_piece(ch, f);
		return;
	}
	r = gp_noise_transport_decrypt(ch->tx, NULL, 0, f->body, f->len, p,
				       f->len, &plen);
	if (r < 0) {
		decrypt_failed(ch, r);
		return;
	}
	if (ch->state == S_WAIT_CONFIRM) {
		/* The initiator proved it completed the handshake: only now
		 * is the connection real (a replayed message 1 stops before
		 * this point). */
		channel_established(ch, ch->hello, ch->hello_len);
		free(ch->hello);
		ch->hello = NULL;
		ch->hello_len = 0;
		if (ch->state != S_ESTABLISHED)
			return;
	}
	if (plen < 1) {
		channel_teardown(ch, GP_CLOSE_PROTOCOL_ERROR, 0,
				 "empty record", false);
		return;
	}
	handle_record(ch, p, plen);
}

static void handle_frame(struct gp_channel *ch, const struct gp_frame *f)
{
	switch (ch->state) {
	case S_WAIT_MSG1:
		channel_read_msg1(ch, f);
		break;
	case S_WAIT_MSG2:
		channel_read_msg2(ch, f);
		break;
	case S_WAIT_CONFIRM:
	case S_ESTABLISHED:
		read_transport(ch, f);
		break;
	case S_CONNECTING:
	case S_CLOSING:
		break;
	}
}

void channel_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct gp_channel *ch = h->data;
	/* S_WAIT_CONFIRM is not proof of anything yet (message 1 may be a
	 * replay): it reads in the small buffer too. */
	size_t want = ch->state == S_ESTABLISHED ? READ_BUF_ESTABLISHED :
						   READ_BUF_HANDSHAKE;

	(void)suggested;
	if (ch->state == S_ESTABLISHED) {
		if (!ch->shared_rbuf) {
			free(ch->rbuf); /* the handshake's */
			ch->rbuf = NULL;
			ch->rbuf_cap = 0;
			ch->shared_rbuf = true;
			shared_refs++;
		}
		if (!shared_rbuf)
			shared_rbuf = malloc(READ_BUF_ESTABLISHED);
		/* On failure libuv reports UV_ENOBUFS to on_read. */
		*buf = uv_buf_init((char *)shared_rbuf,
				   shared_rbuf ? READ_BUF_ESTABLISHED : 0);
		return;
	}
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

void channel_release_read_buffer(struct gp_channel *ch)
{
	free(ch->rbuf);
	ch->rbuf = NULL;
	ch->rbuf_cap = 0;
	if (!ch->shared_rbuf)
		return;
	ch->shared_rbuf = false;
	if (--shared_refs == 0) {
		free(shared_rbuf);
		shared_rbuf = NULL;
	}
}

static void on_eof(struct gp_channel *ch)
{
	if (gp_frame_decoder_pending(&ch->dec) || ch->in_msg) {
		channel_teardown(ch, GP_CLOSE_TRUNCATED, 0,
				 "connection closed inside a frame or message",
				 false);
		return;
	}
	switch (ch->state) {
	case S_WAIT_MSG2:
		channel_teardown(ch, GP_CLOSE_PEER_CLOSED, 0,
				 "the coordinator closed the connection during "
				 "the handshake",
				 false);
		break;
	case S_WAIT_MSG1:
	case S_WAIT_CONFIRM:
		channel_teardown(ch, GP_CLOSE_PEER_CLOSED, 0,
				 "connection closed during the handshake",
				 false);
		break;
	default:
		channel_teardown(ch, GP_CLOSE_PEER_CLOSED, 0,
				 "connection closed by peer", false);
		break;
	}
}

void channel_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct gp_channel *ch = s->data;

	if (ch->state == S_CLOSING) {
		/* Graceful close: discard until EOF or the linger timer. */
		if (nread < 0)
			channel_close_handles(ch);
		return;
	}
	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread == UV_EOF)
			on_eof(ch);
		else if (nread == UV_ENOBUFS)
			channel_teardown(ch, GP_CLOSE_NO_MEMORY, 0,
					 "read buffer", false);
		else
			channel_teardown(ch, GP_CLOSE_IO_ERROR, 0,
					 uv_strerror((int)nread), false);
		return;
	}
	ch->bytes_received += (uint64_t)nread;
	ch->last_recv = uv_now(ch->loop);
	consume(ch, (uint8_t *)buf->base, (size_t)nread);
}

/* Bytes read (or kept while a message was opened off the loop) into
 * frames, and each handled; once a message's opening jobs are out, the
 * rest is kept for when they are back. */
static void consume(struct gp_channel *ch, uint8_t *data, size_t len)
{
	size_t off = 0;

	while (off < len && ch->state != S_CLOSING) {
		struct gp_frame f;
		size_t used;
		int r;

		if (ch->open_hold) {
			ch->held = malloc(len - off);
			if (!ch->held) {
				channel_teardown(ch, GP_CLOSE_NO_MEMORY, 0,
						 "read buffer", false);
				return;
			}
			memcpy(ch->held, data + off, len - off);
			ch->held_len = len - off;
			return;
		}
		r = gp_frame_decode(&ch->dec, data + off, len - off, &used, &f);
		if (r < 0) {
			if (r == -EMSGSIZE)
				channel_teardown(ch, GP_CLOSE_OVERSIZED_FRAME,
						 0, "frame length above the "
						 "maximum", false);
			else if (r == -EPROTO)
				channel_teardown(ch, GP_CLOSE_PROTOCOL_ERROR,
						 0, "unknown frame kind",
						 false);
			else
				channel_teardown(ch, GP_CLOSE_NO_MEMORY, 0,
						 "frame buffer", false);
			return;
		}
		off += used;
		if (r == 1)
			handle_frame(ch, &f);
	}
	/* A frame that came in pieces was copied into the decoder's buffer:
	 * given back once whole, so that an idle channel holds none. */
	gp_frame_decoder_trim(&ch->dec);
}
