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
 * buffers queued meanwhile go together in the next. */
#include <errno.h>
#include <string.h>

#include "channel-internal.h"
#include "gp-endian.h"

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

static void flush_now(uv_prepare_t *p)
{
	struct gp_channel *ch = p->data;
	uint64_t before = ch->bytes_sent;

	uv_prepare_stop(p);
	channel_flush(ch);
	/* Bytes left without a write callback: tell the application here,
	 * as write_done would have (never from inside gp_channel_send). */
	if (ch->bytes_sent != before)
		maybe_drain(ch);
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
static int send_large(struct gp_channel *ch, const uint8_t *src, size_t len)
{
	uint8_t begin[5] = { REC_BEGIN };
	size_t off = 0;
	bool first = true;
	int r;

	gp_put_le32(begin + 1, (uint32_t)len);
	while (off < len) {
		size_t left = len - off, step = SEND_STEP_PIECES * PLAIN_MAX;
		size_t pieces, wire;
		uint8_t *p, *start;

		if (step > left)
			step = left;
		pieces = (step + PLAIN_MAX - 1) / PLAIN_MAX;
		wire = pieces * TRANSPORT_FRAME_OVERHEAD + step +
		       (first ? TRANSPORT_FRAME_OVERHEAD + sizeof(begin) : 0);
		start = p = gp_wqueue_reserve(&ch->wq, wire);
		if (!p)
			return -ENOMEM;
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
		gp_wqueue_commit(&ch->wq, (size_t)(p - start));
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
	if (!gp_wqueue_admits(&ch->wq, wire, ch->cfg.max_write_queue)) {
		channel_teardown(ch, GP_CLOSE_WRITE_QUEUE_FULL, 0,
				 "the peer does not read fast enough", false);
		return -ENOBUFS;
	}

	if (len > MSG_INLINE_MAX) {
		r = send_large(ch, src, len);
		if (r < 0)
			goto fail;
		channel_flush(ch);
		return 0;
	}
	p = gp_wqueue_reserve(&ch->wq, wire);
	if (!p)
		return -ENOMEM;
	p[GP_FRAME_HEADER_SIZE] = REC_MSG;
	if (len)
		memcpy(p + GP_FRAME_HEADER_SIZE + 1, src, len);
	r = seal(ch, p, p + GP_FRAME_HEADER_SIZE, 1 + len);
	if (r < 0)
		goto fail;
	gp_wqueue_commit(&ch->wq, (size_t)r);
	schedule_flush(ch);
	return 0;

fail:
	/* The stream now holds part of a message: it cannot go on. Only
	 * nonce exhaustion, a lack of memory or a write error get here. */
	channel_teardown(ch, r == -ENOMEM ? GP_CLOSE_NO_MEMORY :
					    GP_CLOSE_PROTOCOL_ERROR,
			 0, r == -EOVERFLOW ? "transport nonce exhausted" : NULL,
			 false);
	return r;
}
