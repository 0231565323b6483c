/* What the channel's files share, and nothing outside proto/channel*.c may
 * include. The channel is one object in several rooms, split by what
 * happens to its state:
 *
 *   channel.c            lifetime (create, teardown, free), the listener and
 *                        connect, timers (deadlines, idle, heartbeat), the
 *                        small API
 *   channel-handshake.c  the handshake state machine: messages 1 and 2, the
 *                        verdict, the start of the transport
 *   channel-send.c       records sealed into the write queue, and the write
 *                        queue handed to the socket
 *   channel-recv.c       bytes from the socket into frames, records and
 *                        messages
 *   wqueue.c             the write queue and its buffer cache (no sockets)
 *
 * docs/protocol.md "Framing and the connection" has the bytes. */
#ifndef GP_CHANNEL_INTERNAL_H
#define GP_CHANNEL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "channel.h"
#include "frame.h"
#include "noise.h"
#include "wqueue.h"

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
	bool paused;            /* by the application, or a handshake job */
	bool reading;           /* libuv reads the socket (channel_read_on) */
	bool closing_graceful;
	bool grace_used;        /* see grace() in channel.c */
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
	uint8_t *rbuf;          /* the handshake's reads */
	size_t rbuf_cap;
	bool shared_rbuf;       /* reads into the thread's shared buffer */
	/* When the write queue last drained (uv_now ms), 0: not since the
	 * caches were dropped; CHANNEL_CACHE_IDLE_MS later an established
	 * channel whose queue is still empty gives its buffers back. */
	uint64_t drained_at;

	/* The message being reassembled (after a BEGIN record). */
	bool in_msg;
	uint8_t *msg;
	size_t msg_cap;
	size_t msg_total;
	size_t msg_have;
	/* Offloaded opening (channel-recv.c, open_offload_min): the
	 * message's pieces as they came, each at a stride of a full piece's
	 * ciphertext; the jobs opening them and the nonces they took; and
	 * what came after the last piece in the same read, handled once the
	 * message is delivered. */
	bool open_staged;       /* this message's pieces go to `cipher` */
	bool open_hold;         /* jobs are out: reading stopped */
	uint8_t *cipher;
	size_t pieces;
	unsigned open_jobs;
	int open_result;
	struct gp_noise_span *open_span; /* secret memory */
	uint8_t *held;
	size_t held_len;

	/* Sealed records waiting for the socket. */
	struct gp_wqueue wq;
	/* Jobs on the thread pool, not yet back (seals, channel-send.c; the
	 * responder's handshake, channel-handshake.c; opening,
	 * channel-recv.c); the channel is freed
	 * by the last of them once on_close was called. */
	unsigned jobs;
	bool free_pending;
	bool hs_job;            /* a handshake job is out: reading paused */
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

/* ---- channel.c ---- */

/* Ends the channel once, recording why (text borrowed, NULL: the reason's
 * name). graceful: let what is queued (and a close record, when we have a
 * transport and the close is ours) reach the peer first, within
 * close_linger_ms; otherwise the socket closes now. */
void channel_teardown(struct gp_channel *ch, enum gp_close_reason reason,
		      uint16_t code, const char *text, bool graceful);

/* A job of the channel's came back (on the loop). Returns true when the
 * channel was freed or is closing its handles: the caller must not touch
 * it further. */
bool channel_job_done(struct gp_channel *ch);

/* Closes the handles now; on_close follows once they are closed. */
void channel_close_handles(struct gp_channel *ch);

/* Reads again if reading was paused (by the application or for a
 * handshake job), unless opening jobs hold it (their return reads) and
 * the channel is not closing. Returns 0 or uv_read_start's negative
 * errno. */
int channel_resume_reading(struct gp_channel *ch);

/* libuv's reading of the socket, started or stopped whatever it was:
 * every start and stop of a channel goes through these, so that none is
 * done twice. channel_read_on returns 0 or uv_read_start's errno. */
int channel_read_on(struct gp_channel *ch);
void channel_read_off(struct gp_channel *ch);

/* Half-closes our side once everything queued is written. */
void channel_start_shutdown(struct gp_channel *ch);

/* Starts (or stops) the timer for the state's next deadline. */
void channel_arm_timer(struct gp_channel *ch);

/* Copies peer-supplied text (len bytes, borrowed) into dst (cap bytes,
 * NUL-terminated), replacing what is not printable ASCII. */
void channel_copy_text(char *dst, size_t cap, const uint8_t *src, size_t len);

/* ---- channel-handshake.c ---- */

/* Initiator: queues message 1 for peer (borrowed for the call). Returns 0
 * or a negative errno. */
int channel_write_msg1(struct gp_channel *ch,
		       const struct gp_channel_peer *peer);

/* Handles a frame that arrived in S_WAIT_MSG1 (responder) or S_WAIT_MSG2
 * (initiator). */
void channel_read_msg1(struct gp_channel *ch, const struct gp_frame *f);
void channel_read_msg2(struct gp_channel *ch, const struct gp_frame *f);

/* The handshake is complete: on_established with payload (borrowed). */
void channel_established(struct gp_channel *ch, const uint8_t *payload,
			 size_t len);

/* ---- channel-send.c ---- */

/* Queues one short sealed record (PING, CLOSE; rec borrowed). Returns 0 or
 * a negative errno. */
int channel_send_record(struct gp_channel *ch, const uint8_t *rec, size_t len);

/* Writes what the socket takes now, then starts one uv_write with the rest;
 * once closing gracefully and all is written, starts the shutdown. */
void channel_flush(struct gp_channel *ch);

/* ---- channel-recv.c ---- */

void channel_on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void channel_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Gives back the reassembly buffer when no message is being reassembled
 * (the channel is quiet). */
void channel_drop_reassembly(struct gp_channel *ch);

/* An established channel whose write queue stayed empty this long gives
 * back its write buffers and reassembly buffer (channel.c timer). */
#define CHANNEL_CACHE_IDLE_MS 1000

/* Frees the channel's read buffer, or gives back its reference to the
 * thread's shared one (channel-recv.c). */
void channel_release_read_buffer(struct gp_channel *ch);

#endif
