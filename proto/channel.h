/* The encrypted connection: TCP (libuv) + frames + Noise IK / IKpsk2.
 *
 * A channel is one TCP connection that carries whole application messages
 * (up to config.max_message bytes) encrypted with Noise. The agent is the
 * initiator (gp_channel_connect), the coordinator the responder (a
 * listener). No plaintext mode exists.
 *
 * Only the thread that runs the uv loop may call these functions, and every
 * callback runs on that thread.
 *
 * Lifecycle of a channel:
 *
 *   initiator:  connect -> msg 1 -> msg 2 read -> on_established -> ...
 *   responder:  accept -> msg 1 read -> on_verify -> msg 2 written ->
 *               first authenticated transport message -> on_established
 *
 * then on_message for each message received, and finally on_close exactly
 * once (also when the handshake never completed). on_close is the last
 * callback: the channel is freed when it returns. A responder fires
 * on_established only after the initiator's first transport message has
 * been authenticated (the initiator sends one right away), so a replayed
 * message 1 gets as far as on_verify and no further: applications must not
 * change state in on_verify (consume a token use, register a member) but
 * in on_established. docs/protocol.md "Framing and the connection" has the
 * byte layouts. */
#ifndef GP_CHANNEL_H
#define GP_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "noise.h"

/* Longest close / reject text carried on the wire, in bytes. */
#define GP_CHANNEL_TEXT_MAX 255

/* The rekey schedule of the protocol: each direction runs Noise Rekey()
 * after every 2^20 transport messages (about 64 GiB of full frames), both
 * sides counting the same messages, so nothing is signalled. */
#define GP_CHANNEL_REKEY_INTERVAL (UINT64_C(1) << 20)

/* The coordinator's seal_offload_min (unless GP_SERVE_OFFLOAD=0;
 * GP_SEAL_OFFLOAD_MIN in its environment overrides
 * it): parameter pulls of models from about 100,000 parameters up. Smaller messages stay on the loop: on the 2-core
 * development machine offloading everything from 16 KiB up raised the
 * updates per second of 1,000 simulated agents but also the heartbeat
 * round trips and serve's memory (docs/performance.md "Scale"). */
#define GP_CHANNEL_SEAL_OFFLOAD_MIN (256u * 1024)

/* The coordinator's open_offload_min (unless GP_SERVE_OFFLOAD=0;
 * GP_OPEN_OFFLOAD_MIN in its environment overrides it): the updates of
 * models from about 100,000 parameters up are decrypted off the loop. */
#define GP_CHANNEL_OPEN_OFFLOAD_MIN (256u * 1024)

/* Why a channel closed. Names: gp_channel_close_reason_name(). */
enum gp_close_reason {
	GP_CLOSE_LOCAL = 1,          /* gp_channel_close() or listener gone */
	GP_CLOSE_PEER_CLOSED,        /* the peer said goodbye or hung up */
	GP_CLOSE_CONNECT_FAILED,     /* TCP connect failed */
	GP_CLOSE_IO_ERROR,           /* read/write error, connection reset */
	GP_CLOSE_HANDSHAKE_TIMEOUT,  /* no complete handshake in time */
	GP_CLOSE_HANDSHAKE_FAILED,   /* a handshake message was bad */
	GP_CLOSE_KEY_MISMATCH,       /* initiator: the responder's key or the
				      * token secret is not the expected one */
	GP_CLOSE_REJECTED,           /* the responder's application said no */
	GP_CLOSE_IDLE_TIMEOUT,       /* nothing received for idle_timeout_ms */
	GP_CLOSE_DECRYPT_FAILED,     /* a transport message did not authenticate */
	GP_CLOSE_OVERSIZED_FRAME,    /* frame length above the maximum */
	GP_CLOSE_OVERSIZED_MESSAGE,  /* message length above max_message */
	GP_CLOSE_TRUNCATED,          /* connection ended inside a frame/message */
	GP_CLOSE_PROTOCOL_ERROR,     /* a frame or record out of place */
	GP_CLOSE_WRITE_QUEUE_FULL,   /* the peer does not read fast enough */
	GP_CLOSE_TOO_MANY_HANDSHAKES,/* responder: handshake limit reached */
	GP_CLOSE_NO_MEMORY,
};

/* Static name of a close reason, e.g. "handshake timeout". */
const char *gp_channel_close_reason_name(enum gp_close_reason reason);

/* Tunables. Fill with gp_channel_config_default() and change what you
 * need. Times are in milliseconds. */
struct gp_channel_config {
	/* From accept/connect to on_established (both sides). */
	uint32_t handshake_timeout_ms;
	/* Send a heartbeat when nothing was sent for this long and nothing
	 * is queued (queued bytes are the heartbeat); 0: never. */
	uint32_t heartbeat_ms;
	/* Close when nothing was received for this long; 0: never. While
	 * reading is paused the clock stops. */
	uint32_t idle_timeout_ms;
	/* How long a graceful close may wait for queued bytes to leave. */
	uint32_t close_linger_ms;
	/* Largest application message sent or accepted (at most 1 GiB). */
	size_t max_message;
	/* Bytes queued for writing above which a send fails with -ENOBUFS
	 * and the channel closes (GP_CLOSE_WRITE_QUEUE_FULL). A message sent
	 * while the queue is empty is always accepted. */
	size_t max_write_queue;
	/* on_drain fires after a write completes and at most this many bytes
	 * remain queued. */
	size_t write_low_water;
	/* Transport messages per rekey; must equal the peer's. Tests lower
	 * it; the protocol value is GP_CHANNEL_REKEY_INTERVAL. */
	uint64_t rekey_interval;
	/* Listener only: connections in the handshake at once; more are
	 * closed at once (GP_CLOSE_TOO_MANY_HANDSHAKES). */
	uint32_t max_handshakes;
	/* Listener only: the handshakes' Diffie-Hellman work (reading
	 * message 1, writing message 2) runs on libuv's thread pool, the
	 * application's on_verify on the loop between them. Reading is
	 * paused meanwhile and resumed once message 2 is queued, so
	 * gp_channel_pause_reading() inside on_verify does not last. */
	bool handshake_offload;
	/* Messages of at least this many bytes that gp_channel_send_take()
	 * or gp_channel_send_msg() send are encrypted on libuv's thread pool
	 * (about 1 MiB per job, several jobs at once), not on the loop; their
	 * bytes keep their place in the stream. 0: everything on the loop. */
	size_t seal_offload_min;
	/* Messages of at least this many bytes that the peer sends in pieces
	 * (a BEGIN record, docs/protocol.md) are decrypted on libuv's thread
	 * pool (about 1 MiB per job, several jobs at once), not on the loop:
	 * their pieces' ciphertext is kept until the last one is in, and
	 * reading pauses until the message is delivered, so that messages
	 * still arrive in order. 0: everything on the loop. */
	size_t open_offload_min;
};

/* Fills *cfg with the defaults: handshake 10 s, heartbeat 5 s, idle 30 s,
 * linger 2 s, max_message GP_MSG_MAX_SIZE, write queue 32 MiB (low water
 * 8 MiB), rekey GP_CHANNEL_REKEY_INTERVAL, 256 handshakes, every handshake
 * and record on the loop (handshake_offload false, seal_offload_min and
 * open_offload_min 0). */
void gp_channel_config_default(struct gp_channel_config *cfg);

/* What a responder learns from message 1. All pointers are borrowed for the
 * duration of the on_verify call. */
struct gp_channel_hello {
	enum gp_noise_pattern pattern;  /* GP_NOISE_IK or GP_NOISE_IKPSK2 */
	const uint8_t *remote_static;   /* GP_NOISE_KEY_SIZE bytes */
	const uint8_t *payload;         /* message 1 payload (e.g. token id) */
	size_t payload_len;
};

/* The responder's answer, zero-initialised (= accept) by the channel. */
struct gp_channel_verdict {
	bool reject;
	uint16_t code;                  /* application code, e.g. a
					 * gp_msg_reject_code */
	char text[GP_CHANNEL_TEXT_MAX + 1];
};

struct gp_channel;
struct gp_channel_listener;

/* Every callback is optional except on_close, and on_verify for a
 * listener. */
struct gp_channel_callbacks {
	/* Responder only: message 1 was read and its sender holds the
	 * private key of hello->remote_static. For IKpsk2 call
	 * gp_channel_set_psk() here, also when rejecting, so that the
	 * initiator can read the verdict (without the right psk it sees
	 * GP_CLOSE_KEY_MISMATCH instead). Fill *verdict to reject: the
	 * initiator then gets GP_CLOSE_REJECTED with code and text, and this
	 * side too. Do not change application state here: message 1 can be
	 * replayed. Return 0, or a negative errno to drop the connection
	 * without an answer. */
	int (*on_verify)(struct gp_channel *ch,
			 const struct gp_channel_hello *hello,
			 struct gp_channel_verdict *verdict);
	/* The handshake is complete (responder: and the initiator proved it
	 * by a first transport message). remote_static is the peer's key;
	 * payload is message 1's payload on the responder, and the
	 * responder's accept payload (none so far: len 0) on the initiator.
	 * Both borrowed for the call. */
	void (*on_established)(struct gp_channel *ch,
			       const uint8_t *remote_static,
			       const uint8_t *payload, size_t len);
	/* One whole application message. data is borrowed and valid only
	 * during the call; the callee may modify it in place. */
	void (*on_message)(struct gp_channel *ch, uint8_t *data, size_t len);
	/* The loop wrote queued bytes to the socket and at most
	 * write_low_water bytes remain queued: room to send more. Never
	 * called from inside gp_channel_send(); after a send, look at
	 * gp_channel_queued_bytes() (the socket may have taken everything at
	 * once, and then no on_drain follows). */
	void (*on_drain)(struct gp_channel *ch);
	/* The channel is closed (the socket is gone); last callback, the
	 * channel is freed after it returns (or, when a job of the thread
	 * pool still uses it, once that job is back: do not use the pointer
	 * after this call either way). code is the peer's code for
	 * GP_CLOSE_REJECTED and GP_CLOSE_PEER_CLOSED, else 0. text is a
	 * sentence for logs (borrowed for the call, never NULL). */
	void (*on_close)(struct gp_channel *ch, enum gp_close_reason reason,
			 uint16_t code, const char *text);
};

/* Where and as whom an initiator connects. Everything is borrowed for the
 * gp_channel_connect() call only. */
struct gp_channel_peer {
	const struct sockaddr *addr;          /* IPv4 or IPv6 */
	const struct gp_noise_keypair *local; /* this agent's static key */
	const uint8_t *remote_static;         /* pinned responder key, 32 B */
	const uint8_t *psk;                   /* 32 B: IKpsk2; NULL: IK */
	const uint8_t *payload;               /* message 1 payload */
	size_t payload_len;
	/* The local address to connect from (port 0: any), or NULL: the
	 * system's choice. tools/gp-simagent spreads thousands of agents over
	 * 127.0.0.0/8 this way, so that they do not run out of ports. */
	const struct sockaddr *bind_addr;
};

/* Starts listening on addr (borrowed; port 0 picks an ephemeral port, see
 * gp_channel_listener_port). static_key (borrowed, copied into guarded
 * memory), cfg and cb (copied) apply to every accepted channel, whose user
 * data starts as data. On success *ret is owned by the caller. Returns 0,
 * -EINVAL (no on_verify/on_close), -ENOMEM, or a negative errno from
 * bind/listen (e.g. -EADDRINUSE). */
int gp_channel_listen(uv_loop_t *loop, const struct sockaddr *addr,
		      const struct gp_noise_keypair *static_key,
		      const struct gp_channel_config *cfg,
		      const struct gp_channel_callbacks *cb, void *data,
		      struct gp_channel_listener **ret);

/* The bound TCP port, or a negative errno. */
int gp_channel_listener_port(const struct gp_channel_listener *l);

/* Stops accepting and releases the listener. Channels already accepted
 * carry on and close on their own. NULL is a no-op. */
void gp_channel_listener_destroy(struct gp_channel_listener *l);

/* Connects to peer->addr and runs the handshake: IK, or IKpsk2 when
 * peer->psk is set. cfg and cb are copied. On success *ret is the new
 * channel, owned by the library (it is freed after on_close); keep the
 * pointer only until on_close. Failures after this returns are reported
 * through on_close (e.g. GP_CLOSE_CONNECT_FAILED). Returns 0, -EINVAL
 * (missing key or on_close, payload too large), -ENOMEM, or a negative
 * errno from libuv. */
int gp_channel_connect(uv_loop_t *loop, const struct gp_channel_peer *peer,
		       const struct gp_channel_config *cfg,
		       const struct gp_channel_callbacks *cb, void *data,
		       struct gp_channel **ret);

/* Sends one application message of len bytes (data borrowed: encrypted into
 * the write queue before this returns). Messages larger than a Noise
 * message are split and reassembled on the other side. Returns 0;
 * -ENOTCONN before on_established or once closing; -EMSGSIZE when len
 * exceeds max_message; -ENOBUFS when the write queue would exceed
 * max_write_queue (the channel is then closing with
 * GP_CLOSE_WRITE_QUEUE_FULL); -ENOMEM. */
int gp_channel_send(struct gp_channel *ch, const void *data, size_t len);

/* Like gp_channel_send(), but takes buf (malloc'd, len bytes): the channel
 * frees it, whatever the result. A message of at least seal_offload_min
 * bytes is encrypted on libuv's thread pool from buf (no copy), so that
 * the loop goes on meanwhile; its bytes, and what is sent after it, leave
 * in order once sealed. */
int gp_channel_send_take(struct gp_channel *ch, void *buf, size_t len);

/* Encodes msg (msg.h) and sends it as one message (gp_channel_send_take):
 * gp_channel_send's results, or gp_msg_encode's. */
struct gp_msg;
int gp_channel_send_msg(struct gp_channel *ch, const struct gp_msg *msg);

/* How many messages this process opened on libuv's thread pool
 * (open_offload_min), over all channels. */
uint64_t gp_channel_opened_off_loop(void);

/* Closes the channel: after the handshake, a close record with code and
 * text (borrowed, may be NULL; cut at GP_CHANNEL_TEXT_MAX bytes) is sent
 * after what is queued, within close_linger_ms; the peer sees
 * GP_CLOSE_PEER_CLOSED with them. on_close (GP_CLOSE_LOCAL) follows on a
 * later loop iteration. Safe from any callback and more than once. */
void gp_channel_close(struct gp_channel *ch, uint16_t code, const char *text);

/* Responder, inside on_verify of an IKpsk2 handshake: the psk to use
 * (borrowed, copied, GP_NOISE_PSK_SIZE bytes). Returns 0, or -EINVAL when
 * not in on_verify or the pattern has no psk. */
int gp_channel_set_psk(struct gp_channel *ch, const uint8_t *psk);

/* Stops (pause true) or restarts reading from the socket, for flow control
 * towards the peer. The idle clock stops while paused. */
void gp_channel_pause_reading(struct gp_channel *ch, bool pause);

/* Changes the heartbeat interval (config.heartbeat_ms; 0: none) from now
 * on, e.g. to the one the peer announced: its idle timeout is set to
 * match. */
void gp_channel_set_heartbeat(struct gp_channel *ch, uint32_t heartbeat_ms);

/* Bytes accepted by gp_channel_send() and not yet written to the socket. */
size_t gp_channel_queued_bytes(const struct gp_channel *ch);

/* Bytes written to / read from the socket so far (frames included). */
uint64_t gp_channel_bytes_sent(const struct gp_channel *ch);
uint64_t gp_channel_bytes_received(const struct gp_channel *ch);

/* True between on_established and the start of closing. */
bool gp_channel_is_established(const struct gp_channel *ch);

/* The peer's static key once known (responder: from on_verify on), else
 * NULL. Borrowed from ch. */
const uint8_t *gp_channel_remote_static(const struct gp_channel *ch);

/* The pattern in use (IK or IKpsk2). */
enum gp_noise_pattern gp_channel_pattern(const struct gp_channel *ch);

/* True for the side that connected. */
bool gp_channel_is_initiator(const struct gp_channel *ch);

/* User data: set freely, e.g. in on_verify or on_established. */
void gp_channel_set_data(struct gp_channel *ch, void *data);
void *gp_channel_data(const struct gp_channel *ch);

/* The peer's address as "ip:port" into buf (cap bytes). Returns 0 or a
 * negative errno. */
int gp_channel_peer_name(const struct gp_channel *ch, char *buf, size_t cap);

#endif
