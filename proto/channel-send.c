/* The channel's sending side: records sealed into the write queue
 * (wqueue.c), and the write queue handed to the socket.
 *
 * Data path, chosen so that a byte is touched as few times as possible: a
 * large message is encrypted straight from the caller's buffer into frames
 * in the write queue, about 1 MiB at a time, each step handed to the socket
 * at once (uv_try_write) so that the kernel copies it while it is still
 * cached and the next step can reuse the same buffer space. Small messages
 * are copied next to their record byte and encrypted in place, and wait for
 * the end of the loop iteration, so that several leave in one write. What
 * the socket does not take goes out through one uv_write with several bufs;
 * buffers queued meanwhile go together in the next.
 *
 * Offloaded sealing (gp_channel_send_take, messages of seal_offload_min
 * bytes and more): the loop takes the message's run of send nonces at once
 * (gp_noise_transport_take_send) and holds its frames' room in the write
 * queue (gp_wqueue_reserve_held), about 1 MiB per job; jobs on libuv's
 * thread pool encrypt from the caller's buffer into that room, several at
 * once; the loop releases each held span when its job is back and the
 * writer goes on. What is sent meanwhile gets the later nonces and queues
 * behind, so bytes leave in nonce order; a run that would cross a rekey is
 * sealed on the loop instead. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "channel-internal.h"
#include "gp-endian.h"
#include "secmem.h"

/* A large message is handed to the socket every this many pieces (about
 * 1 MiB) while it is encrypted: few enough syscalls, and the step still
 * sits in a core's L2 cache when the kernel copies it. On the 2-core
 * development machine (2 MiB L2) 16 pieces needed less CPU per byte than
 * 8 or 32 (docs/performance.md "Channel"). */
#define SEND_STEP_PIECES 16

/* Tells the application that there is room to send more, when there is. */
static void maybe_drain(struct gp_channel *ch)
{
	if (ch->state == S_ESTABLISHED && ch->cb.on_drain &&
	    gp_wqueue_drained(&ch->wq, ch->cfg.write_low_water))
		ch->cb.on_drain(ch);
}

static void write_done(uv_write_t *req, int status)
{
	struct gp_channel *ch = req->data;
	size_t done = gp_wqueue_write_done(&ch->wq);

	if (status < 0) {
		if (ch->state == S_CLOSING)
			channel_close_handles(ch);
		else
			channel_teardown(ch, GP_CLOSE_IO_ERROR, 0,
					 uv_strerror(status), false);
		return;
	}
	ch->bytes_sent += done;
	channel_flush(ch);
	maybe_drain(ch);
}

/* Writes what the socket takes right now, without blocking, while no
 * uv_write is in flight (bytes must leave in order). Returns 0 or a
 * negative errno (the channel is then closing). */
static int try_write(struct gp_channel *ch)
{
	struct iovec span;

	while (gp_wqueue_peek(&ch->wq, &span)) {
		uv_buf_t b = uv_buf_init(span.iov_base, (unsigned)span.iov_len);
		int n = uv_try_write((uv_stream_t *)&ch->tcp, &b, 1);

		if (n == UV_EAGAIN || n == UV_ENOSYS)
			return 0;
		if (n < 0) {
			channel_teardown(ch, GP_CLOSE_IO_ERROR, 0,
					 uv_strerror(n), false);
			return n;
		}
		gp_wqueue_consume(&ch->wq, (size_t)n);
		ch->bytes_sent += (uint64_t)n;
		ch->last_send = uv_now(ch->loop);
		if ((size_t)n < span.iov_len)
			return 0; /* the socket is full */
	}
	return 0;
}

/* Sends the pending buffers: first what the socket takes at once, then the
 * rest through one uv_write with several bufs. While that write is in
 * flight, new buffers wait and go out together when it completes (write
 * batching). */
void channel_flush(struct gp_channel *ch)
{
	struct iovec iov[WRITE_BATCH];
	unsigned n;
	int r;

	if (gp_wqueue_writing(&ch->wq) || !ch->connected ||
	    ch->handles_closing)
		return;
	if (try_write(ch) < 0)
		return;
	n = gp_wqueue_start_write(&ch->wq, iov, WRITE_BATCH);
	if (n == 0) {
		if (gp_wqueue_queued(&ch->wq) > 0)
			return; /* behind a span still being sealed */
		if (ch->state == S_CLOSING && ch->closing_graceful)
			channel_start_shutdown(ch);
		else if (ch->state == S_ESTABLISHED && !ch->drained_at) {
			/* Everything is written: the buffers go back if
			 * nothing follows for a while (channel.c). */
			ch->drained_at = uv_now(ch->loop);
			channel_arm_timer(ch);
		}
		return;
	}
	for (unsigned i = 0; i < n; i++)
		ch->bufs[i] = uv_buf_init(iov[i].iov_base,
					  (unsigned)iov[i].iov_len);
	ch->write_req.data = ch;
	r = uv_write(&ch->write_req, (uv_stream_t *)&ch->tcp, ch->bufs, n,
		     write_done);
	if (r < 0) {
		/* Put the buffers back where gp_wqueue_finish finds them. */
		gp_wqueue_cancel_write(&ch->wq);
		channel_teardown(ch, GP_CLOSE_IO_ERROR, 0, uv_strerror(r),
				 false);
		return;
	}
	ch->last_send = uv_now(ch->loop);
}

/* Flushes, and tells the application when bytes left without a write
 * callback, as write_done would have (never from inside gp_channel_send). */
static void flush_and_drain(struct gp_channel *ch)
{
	uint64_t before = ch->bytes_sent;

	channel_flush(ch);
	if (ch->bytes_sent != before)
		maybe_drain(ch);
}

static void flush_now(uv_prepare_t *p)
{
	uv_prepare_stop(p);
	flush_and_drain(p->data);
}

/* Small messages are written just before the loop next waits for events,
 * so that several sent from one callback leave in one write. */
static void schedule_flush(struct gp_channel *ch)
{
	if (ch->handles_closing)
		return;
	if (!gp_wqueue_writing(&ch->wq) &&
	    !uv_is_active((uv_handle_t *)&ch->flusher))
		uv_prepare_start(&ch->flusher, flush_now);
}

/* Encrypts plain (len <= PLAIN_MAX; may lie at frame + header, then it is
 * encrypted in place) into a transport frame at frame. Returns the frame
 * size or a negative errno (-EOVERFLOW: nonce exhausted). */
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

int channel_send_record(struct gp_channel *ch, const uint8_t *rec, size_t len)
{
	uint8_t *p = gp_wqueue_reserve(&ch->wq, TRANSPORT_FRAME_OVERHEAD + len);
	int r;

	if (!p)
		return -ENOMEM;
	r = seal(ch, p, rec, len);
	if (r < 0)
		return r;
	gp_wqueue_commit(&ch->wq, (size_t)r);
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
/* Seals one step of a large message on the loop: len bytes at src as
 * pieces, after the BEGIN record (total) when first. */
static int seal_step(struct gp_channel *ch, bool first, uint32_t total,
		     const uint8_t *src, size_t len)
{
	uint8_t begin[5] = { REC_BEGIN };
	size_t pieces = (len + PLAIN_MAX - 1) / PLAIN_MAX, wire;
	uint8_t *p, *start;
	int r;

	gp_put_le32(begin + 1, total);
	wire = pieces * TRANSPORT_FRAME_OVERHEAD + len +
	       (first ? TRANSPORT_FRAME_OVERHEAD + sizeof(begin) : 0);
	start = p = gp_wqueue_reserve(&ch->wq, wire);
	if (!p)
		return -ENOMEM;
	if (first) {
		r = seal(ch, p, begin, sizeof(begin));
		if (r < 0)
			return r;
		p += r;
	}
	for (size_t done = 0; done < len;) {
		size_t n = len - done < PLAIN_MAX ? len - done : PLAIN_MAX;

		r = seal(ch, p, src + done, n);
		if (r < 0)
			return r;
		p += r;
		done += n;
	}
	gp_wqueue_commit(&ch->wq, (size_t)(p - start));
	return 0;
}

static int send_large(struct gp_channel *ch, const uint8_t *src, size_t len)
{
	size_t off = 0;
	int r;

	while (off < len) {
		size_t step = SEND_STEP_PIECES * PLAIN_MAX;

		if (step > len - off)
			step = len - off;
		r = seal_step(ch, off == 0, (uint32_t)len, src + off, step);
		if (r < 0)
			return r;
		off += step;
		r = try_write(ch);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- offloaded sealing ------------------------------------------------ */

/* Seal jobs queued and not yet back, in the whole process. Beyond
 * SEAL_JOBS_MAX the loop seals the next ones itself: the pool is busy
 * (libuv's 4 threads by default, shared with the ledger's work), and more
 * jobs would only wait there, holding their messages' memory and delaying
 * the bytes queued behind them. */
#define SEAL_JOBS_MAX 8
static atomic_uint seal_jobs;

/* The caller's buffer, shared by the jobs of one message (a count touched
 * on the loop only). */
struct seal_src {
	uint8_t *buf;
	unsigned refs;
};

/* One job: a run of records sealed into held room of the write queue. */
struct seal_job {
	uv_work_t req;
	struct gp_channel *ch;
	struct seal_src *src;
	struct gp_wqueue_buf *hold;
	uint8_t *out;          /* the frames' room */
	const uint8_t *plain;  /* this job's bytes of the message */
	size_t len;
	/* REC_MSG: one inline record; REC_BEGIN: the BEGIN record (the
	 * message's total), then pieces; 0: pieces only. */
	uint8_t lead;
	uint32_t total;
	struct gp_noise_span *span; /* secret memory */
	int result;
};

static void src_unref(struct seal_src *src)
{
	if (--src->refs > 0)
		return;
	free(src->buf);
	free(src);
}

/* The frames of a job, as seal() would have written them one by one. Runs
 * on a worker: touches the job, its held room and the caller's buffer
 * (read-only) only. */
static int seal_span(struct seal_job *j)
{
	uint8_t *p = j->out;
	uint64_t i = 0;
	size_t done = 0;
	int r;

	if (j->lead == REC_MSG) {
		/* [1][payload], sealed in place: the copy is the job's too. */
		p[GP_FRAME_HEADER_SIZE] = REC_MSG;
		memcpy(p + GP_FRAME_HEADER_SIZE + 1, j->plain, j->len);
		r = gp_noise_span_encrypt(j->span, 0, p + GP_FRAME_HEADER_SIZE,
					  1 + j->len, p + GP_FRAME_HEADER_SIZE);
		if (r < 0)
			return r;
		gp_frame_header_write(p, GP_FRAME_TRANSPORT,
				      1 + j->len + GP_NOISE_TAG_SIZE);
		return 0;
	}
	if (j->lead == REC_BEGIN) {
		uint8_t begin[5] = { REC_BEGIN };

		gp_put_le32(begin + 1, j->total);
		r = gp_noise_span_encrypt(j->span, i++, begin, sizeof(begin),
					  p + GP_FRAME_HEADER_SIZE);
		if (r < 0)
			return r;
		gp_frame_header_write(p, GP_FRAME_TRANSPORT,
				      sizeof(begin) + GP_NOISE_TAG_SIZE);
		p += TRANSPORT_FRAME_OVERHEAD + sizeof(begin);
	}
	while (done < j->len) {
		size_t n = j->len - done < PLAIN_MAX ? j->len - done : PLAIN_MAX;

		r = gp_noise_span_encrypt(j->span, i++, j->plain + done, n,
					  p + GP_FRAME_HEADER_SIZE);
		if (r < 0)
			return r;
		gp_frame_header_write(p, GP_FRAME_TRANSPORT,
				      n + GP_NOISE_TAG_SIZE);
		p += TRANSPORT_FRAME_OVERHEAD + n;
		done += n;
	}
	return 0;
}

static void seal_run(uv_work_t *req)
{
	struct seal_job *j = req->data;

	j->result = seal_span(j);
}

static void seal_done(uv_work_t *req, int status)
{
	struct seal_job *j = req->data;
	struct gp_channel *ch = j->ch;
	int result = status < 0 ? status : j->result;

	gp_secmem_free(j->span);
	gp_wqueue_release(&ch->wq, j->hold);
	src_unref(j->src);
	free(j);
	atomic_fetch_sub(&seal_jobs, 1);
	if (channel_job_done(ch))
		return;
	if (result < 0) {
		/* Not with the sizes checked when it was queued; the held
		 * bytes are not records, so nothing more may be written,
		 * not even during a graceful close's linger. */
		channel_teardown(ch, GP_CLOSE_PROTOCOL_ERROR, 0,
				 "sealing failed", false);
		channel_close_handles(ch);
		return;
	}
	flush_and_drain(ch);
}

/* Records in a job of len bytes: one inline record, or the pieces (and the
 * BEGIN record before the first). */
static uint64_t job_records(uint8_t lead, size_t len)
{
	if (lead == REC_MSG)
		return 1;
	return (len + PLAIN_MAX - 1) / PLAIN_MAX + (lead == REC_BEGIN);
}

/* Queues one job for len bytes at plain (in src), its nonces taken now.
 * Returns 0, 1 when the loop should seal those bytes itself (the run would
 * cross a rekey, or the pool is busy; nothing was taken) or a negative
 * errno. */
static int seal_job_queue(struct gp_channel *ch, struct seal_src *src,
			  uint8_t lead, uint32_t total, const uint8_t *plain,
			  size_t len)
{
	uint64_t records = job_records(lead, len);
	size_t wire = records * TRANSPORT_FRAME_OVERHEAD + len +
		      (lead == REC_MSG ? 1 : lead == REC_BEGIN ? 5 : 0);
	struct seal_job *j;
	int r;

	if (atomic_load(&seal_jobs) >= SEAL_JOBS_MAX)
		return 1;
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->span = gp_secmem_alloc(sizeof(*j->span));
	if (!j->span) {
		free(j);
		return -ENOMEM;
	}
	r = gp_noise_transport_take_send(ch->tx, records, j->span);
	if (r < 0) {
		gp_secmem_free(j->span);
		free(j);
		return r == -EAGAIN ? 1 : r;
	}
	j->out = gp_wqueue_reserve_held(&ch->wq, wire, &j->hold);
	if (!j->out) {
		/* The nonces are gone: the caller breaks the stream. */
		gp_secmem_free(j->span);
		free(j);
		return -ENOMEM;
	}
	j->ch = ch;
	j->src = src;
	j->plain = plain;
	j->len = len;
	j->lead = lead;
	j->total = total;
	j->req.data = j;
	r = uv_queue_work(ch->loop, &j->req, seal_run, seal_done);
	if (r < 0) {
		/* No thread pool: sealed here, in its place. */
		r = seal_span(j);
		gp_wqueue_release(&ch->wq, j->hold);
		gp_secmem_free(j->span);
		free(j);
		return r;
	}
	src->refs++;
	ch->jobs++;
	atomic_fetch_add(&seal_jobs, 1);
	return 0;
}

/* Seals an inline message on the loop, as gp_channel_send() does. */
static int seal_inline(struct gp_channel *ch, const uint8_t *src, size_t len)
{
	uint8_t *p = gp_wqueue_reserve(&ch->wq, wire_size(len));
	int r;

	if (!p)
		return -ENOMEM;
	p[GP_FRAME_HEADER_SIZE] = REC_MSG;
	if (len)
		memcpy(p + GP_FRAME_HEADER_SIZE + 1, src, len);
	r = seal(ch, p, p + GP_FRAME_HEADER_SIZE, 1 + len);
	if (r < 0)
		return r;
	gp_wqueue_commit(&ch->wq, (size_t)r);
	return 0;
}

/* Queues a message (buf taken) as jobs of SEND_STEP_PIECES pieces each,
 * or one job for an inline message; what would cross a rekey is sealed
 * here. Returns 0 or a negative errno (the stream is then broken). */
static int send_offloaded(struct gp_channel *ch, uint8_t *buf, size_t len)
{
	struct seal_src *src = malloc(sizeof(*src));
	size_t off = 0;
	int r = 0;

	if (!src) {
		free(buf);
		return -ENOMEM;
	}
	src->buf = buf;
	src->refs = 1; /* ours, until every job is queued */
	if (len <= MSG_INLINE_MAX) {
		r = seal_job_queue(ch, src, REC_MSG, 0, buf, len);
		if (r == 1)
			r = seal_inline(ch, buf, len);
	}
	while (len > MSG_INLINE_MAX && off < len && r >= 0) {
		size_t step = SEND_STEP_PIECES * PLAIN_MAX;
		uint8_t lead = off == 0 ? REC_BEGIN : 0;

		if (step > len - off)
			step = len - off;
		r = seal_job_queue(ch, src, lead, (uint32_t)len, buf + off,
				   step);
		if (r == 1)
			r = seal_step(ch, off == 0, (uint32_t)len, buf + off,
				      step);
		off += step;
	}
	src_unref(src);
	return r;
}

static int send_checks(struct gp_channel *ch, size_t len)
{
	if (ch->state != S_ESTABLISHED)
		return -ENOTCONN;
	if (len > ch->cfg.max_message)
		return -EMSGSIZE;
	if (!gp_wqueue_admits(&ch->wq, wire_size(len),
			      ch->cfg.max_write_queue)) {
		channel_teardown(ch, GP_CLOSE_WRITE_QUEUE_FULL, 0,
				 "the peer does not read fast enough", false);
		return -ENOBUFS;
	}
	return 0;
}

/* The stream now holds part of a message: it cannot go on. Only nonce
 * exhaustion, a lack of memory or a write error get here. */
static int send_failed(struct gp_channel *ch, int r)
{
	channel_teardown(ch, r == -ENOMEM ? GP_CLOSE_NO_MEMORY :
					    GP_CLOSE_PROTOCOL_ERROR,
			 0, r == -EOVERFLOW ? "transport nonce exhausted" : NULL,
			 false);
	return r;
}

int gp_channel_send_take(struct gp_channel *ch, void *buf, size_t len)
{
	int r;

	if (!ch->cfg.seal_offload_min || len < ch->cfg.seal_offload_min) {
		r = gp_channel_send(ch, buf, len);
		free(buf);
		return r;
	}
	r = send_checks(ch, len);
	if (r < 0) {
		free(buf);
		return r;
	}
	r = send_offloaded(ch, buf, len);
	if (r < 0)
		return send_failed(ch, r);
	schedule_flush(ch);
	return 0;
}

int gp_channel_send(struct gp_channel *ch, const void *data, size_t len)
{
	const uint8_t *src = data;
	int r;

	r = send_checks(ch, len);
	if (r < 0)
		return r;
	if (len > MSG_INLINE_MAX) {
		r = send_large(ch, src, len);
		if (r < 0)
			goto fail;
		channel_flush(ch);
		return 0;
	}
	r = seal_inline(ch, src, len);
	if (r == -ENOMEM)
		return r; /* nothing was queued: the stream is whole */
	if (r < 0)
		goto fail;
	schedule_flush(ch);
	return 0;

fail:
	return send_failed(ch, r);
}
