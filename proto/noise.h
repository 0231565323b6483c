/* The Noise Protocol Framework (revision 34) with 25519, ChaChaPoly and
 * BLAKE2b, built from libsodium primitives: handshake and transport state
 * machines that do no I/O. Bytes go in, bytes come out; proto/channel.c puts
 * them on a socket, the tests and the fuzz targets drive them directly.
 *
 * Supported handshake patterns (Noise spec section 7, psk modifiers 9.3):
 *
 *   NK      <- s  ...  -> e, es                    <- e, ee
 *   NKpsk2  <- s  ...  -> e, es                    <- e, ee, psk
 *   IK      <- s  ...  -> e, es, s, ss             <- e, ee, se
 *   IKpsk1  <- s  ...  -> e, es, s, ss, psk        <- e, ee, se
 *   IKpsk2  <- s  ...  -> e, es, s, ss             <- e, ee, se, psk
 *   XX                 -> e    <- e, ee, s, es     -> s, se
 *   XXpsk3             -> e    <- e, ee, s, es     -> s, se, psk
 *
 * gradpool uses IK (member reconnects: the coordinator key is pinned from the
 * invite token) and IKpsk2 (first join: the psk is derived from the token
 * secret). The others exist because the published test vectors cover them
 * and they cost one table row each.
 *
 * gp_noise_init() (or any create function, which calls it) must succeed
 * before anything else is used. All secrets (static and ephemeral private
 * keys, psk, chaining key, cipher keys) live in sodium_malloc'd memory and are
 * wiped with sodium_memzero before it is freed. Nothing here logs. */
#ifndef GP_NOISE_H
#define GP_NOISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Sizes, in bytes.
 *
 * DH public/private key (X25519):      32
 * AEAD key (ChaCha20-Poly1305 IETF):   32
 * AEAD tag (Poly1305):                 16
 * AEAD nonce (12 bytes):               4 zero bytes || 64-bit counter, LE
 * Hash output (BLAKE2b-512), HASHLEN:  64
 * Hash block (BLAKE2b), BLOCKLEN:      128
 * Pre-shared key:                      32 */
#define GP_NOISE_KEY_SIZE 32
#define GP_NOISE_PSK_SIZE 32
#define GP_NOISE_TAG_SIZE 16
#define GP_NOISE_HASH_SIZE 64

/* Largest Noise message, handshake or transport, tag included (spec 3). */
#define GP_NOISE_MAX_MSG 65535
/* Largest transport plaintext: GP_NOISE_MAX_MSG minus the tag. */
#define GP_NOISE_MAX_PLAINTEXT (GP_NOISE_MAX_MSG - GP_NOISE_TAG_SIZE)

/* IK and IKpsk2 message layouts (p = payload length):
 *
 * message 1, initiator -> responder, 96 + p bytes:
 *   e        32  initiator ephemeral public key, clear
 *   enc(s)   48  initiator static public key (32) + tag (16)
 *   enc(pl)  p+16 payload + tag
 * message 2, responder -> initiator, 48 + p bytes:
 *   e        32  responder ephemeral public key, clear
 *   enc(pl)  p+16 payload + tag
 *
 * In IKpsk2 the psk is mixed in at the end of message 2, so message 1's
 * payload is encrypted (with keys from es and ss) but not yet bound to the
 * psk: the responder may read a token id from it and only then pick the psk
 * (gp_noise_handshake_set_psk). */
#define GP_NOISE_IK_MSG1_OVERHEAD (32 + 48 + GP_NOISE_TAG_SIZE)
#define GP_NOISE_IK_MSG2_OVERHEAD (32 + GP_NOISE_TAG_SIZE)

/* Transport message layout (p = plaintext length, p <= 65519):
 *   ciphertext p   ChaCha20 of the plaintext
 *   tag        16  Poly1305 over ad and ciphertext
 * The nonce is not sent: both sides count messages. */
#define GP_NOISE_TRANSPORT_OVERHEAD GP_NOISE_TAG_SIZE

enum gp_noise_pattern {
	GP_NOISE_NK,
	GP_NOISE_NKPSK2,
	GP_NOISE_IK,
	GP_NOISE_IKPSK1,
	GP_NOISE_IKPSK2,
	GP_NOISE_XX,
	GP_NOISE_XXPSK3,
};

/* A static key pair; pub is what peers pin. Create it with
 * gp_noise_keypair_create so that priv lives in sodium_malloc'd memory. */
struct gp_noise_keypair {
	uint8_t pub[GP_NOISE_KEY_SIZE];
	uint8_t priv[GP_NOISE_KEY_SIZE];
};

struct gp_noise_handshake;
struct gp_noise_transport;

/* Initialises libsodium (idempotent, thread-safe). Returns 0, or -EIO if
 * sodium_init() fails. */
int gp_noise_init(void);

/* Full protocol name, e.g. "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b".
 * Returns a static string, or NULL for an unknown pattern. */
const char *gp_noise_pattern_name(enum gp_noise_pattern pattern);

/* Parses a full protocol name (as written by gp_noise_pattern_name) into
 * *ret_pattern. Returns 0, or -ENOENT if the name is not supported. name is
 * borrowed. */
int gp_noise_pattern_from_name(const char *name,
			       enum gp_noise_pattern *ret_pattern);

/* Fills pub/priv with a fresh X25519 key pair from the system CSPRNG. Both
 * buffers are caller-owned; the caller decides where priv lives. Returns 0 or
 * -EIO (libsodium not initialised). */
int gp_noise_keypair_generate(uint8_t pub[GP_NOISE_KEY_SIZE],
			      uint8_t priv[GP_NOISE_KEY_SIZE]);

/* Computes the X25519 public key of priv into pub. Returns 0, or -EINVAL if
 * the result is unusable (libsodium rejects it). Buffers caller-owned. */
int gp_noise_public_from_private(const uint8_t priv[GP_NOISE_KEY_SIZE],
				 uint8_t pub[GP_NOISE_KEY_SIZE]);

/* Creates a key pair in sodium_malloc'd memory: from priv (borrowed, copied;
 * the public key is computed) or, with priv == NULL, freshly generated. On
 * success *ret is owned by the caller (gp_noise_keypair_destroy). Returns 0,
 * -EIO (sodium_init failed), -ENOMEM or -EINVAL. */
int gp_noise_keypair_create(const uint8_t *priv, struct gp_noise_keypair **ret);

/* Wipes and frees a key pair from gp_noise_keypair_create. NULL is a no-op. */
void gp_noise_keypair_destroy(struct gp_noise_keypair *kp);

/* Creates a handshake state (Noise Initialize()).
 *   pattern    one of enum gp_noise_pattern;
 *   initiator  true for the side that writes message 1;
 *   prologue   bytes both sides must agree on (borrowed; may be NULL when
 *              prologue_len is 0); hashed immediately;
 *   s          this side's static key pair (borrowed, copied into the state),
 *              required when the pattern has an s for this side (IK, XX:
 *              both; NK: responder only), otherwise ignored and may be NULL;
 *   rs         the peer's static public key (borrowed, copied), required when
 *              the pattern pre-shares it (NK, IK initiator), otherwise NULL.
 * On success *ret is owned by the caller (gp_noise_handshake_destroy).
 * Returns 0, -EINVAL (bad pattern or a required key missing), -ENOMEM or
 * -EIO (sodium_init failed). */
int gp_noise_handshake_create(enum gp_noise_pattern pattern, bool initiator,
			      const uint8_t *prologue, size_t prologue_len,
			      const struct gp_noise_keypair *s,
			      const uint8_t *rs,
			      struct gp_noise_handshake **ret);

/* Wipes and frees a handshake state. NULL is a no-op. */
void gp_noise_handshake_destroy(struct gp_noise_handshake *hs);

/* Sets the pre-shared key (borrowed, copied) for a psk pattern. It may be set
 * at any time before the message holding the psk token is written or read;
 * an IKpsk2 responder sets it after reading message 1, whose payload tells
 * it which psk to use. Returns 0, -EINVAL if the pattern has no psk or the
 * psk token was already processed, or -EBADMSG if the handshake failed. */
int gp_noise_handshake_set_psk(struct gp_noise_handshake *hs,
			       const uint8_t psk[GP_NOISE_PSK_SIZE]);

/* Fixes this side's ephemeral private key (borrowed, copied) instead of
 * drawing a random one. For test vectors only: reusing an ephemeral key
 * destroys the handshake's security. Must be called before the message that
 * sends e. Returns 0 or -EINVAL (e already sent or result unusable). */
int gp_noise_handshake_set_ephemeral(struct gp_noise_handshake *hs,
				     const uint8_t priv[GP_NOISE_KEY_SIZE]);

/* True when it is this side's turn to write the next handshake message. */
bool gp_noise_handshake_is_my_turn(const struct gp_noise_handshake *hs);

/* True once all handshake messages have been written and read. */
bool gp_noise_handshake_is_done(const struct gp_noise_handshake *hs);

/* True once a read failed (or a message was read out of turn); such a state
 * refuses every further operation. */
bool gp_noise_handshake_is_failed(const struct gp_noise_handshake *hs);

/* Size of the next handshake message when it carries payload_len payload
 * bytes (what write needs as cap, or what read expects at least, minus the
 * payload). Returns the size (> 0), -EINVAL when the handshake is done or
 * failed, or -EMSGSIZE when the message would exceed GP_NOISE_MAX_MSG. */
int gp_noise_handshake_message_size(const struct gp_noise_handshake *hs,
				    size_t payload_len);

/* Writes the next handshake message (Noise WriteMessage()) carrying payload
 * (borrowed; may be NULL if payload_len is 0) into out (caller-owned, cap
 * bytes; must not overlap payload). On success *ret_len is the message
 * length. Returns 0, -EINVAL (not
 * this side's turn, handshake done/failed), -ENOKEY (the message holds the
 * psk token and no psk was set), -EMSGSIZE (message would exceed
 * GP_NOISE_MAX_MSG), -ENOBUFS (cap too small). Those errors leave the state
 * untouched. -EBADMSG (a DH gave the all-zero output) leaves it failed. */
int gp_noise_handshake_write_message(struct gp_noise_handshake *hs,
				     const uint8_t *payload, size_t payload_len,
				     uint8_t *out, size_t cap,
				     size_t *ret_len);

/* Reads the next handshake message (Noise ReadMessage()) msg (borrowed, len
 * bytes), writing its payload into payload_out (caller-owned, cap bytes,
 * not overlapping msg; may be NULL if cap is 0). On success *ret_len is the payload length. Returns
 * 0; -ENOBUFS (cap too small for the payload this message carries) or
 * -ENOKEY (psk needed and not set), both leaving the state untouched; or
 * -EBADMSG for anything the peer got wrong (message out of turn, too short,
 * too long, bad tag, all-zero DH), after which the state is failed for good,
 * so a replayed or spliced message cannot move it anywhere. */
int gp_noise_handshake_read_message(struct gp_noise_handshake *hs,
				    const uint8_t *msg, size_t len,
				    uint8_t *payload_out, size_t cap,
				    size_t *ret_len);

/* The peer's static public key: known from the start (NK/IK initiator), or
 * once the message carrying it was read. Returns a pointer borrowed from hs
 * (valid until destroy), or NULL if not known (yet). */
const uint8_t *gp_noise_handshake_remote_static(
	const struct gp_noise_handshake *hs);

/* Copies the handshake hash h (GP_NOISE_HASH_SIZE bytes) into ret_hash; a
 * value both sides share once the handshake is done, usable for channel
 * binding. Returns 0, or -EINVAL if the handshake is not done. */
int gp_noise_handshake_hash(const struct gp_noise_handshake *hs,
			    uint8_t ret_hash[GP_NOISE_HASH_SIZE]);

/* Derives the transport (Noise Split()): a send and a receive CipherState,
 * oriented for this side. Only once, and only when the handshake is done.
 * On success *ret is owned by the caller (gp_noise_transport_destroy) and the
 * handshake's chaining key is wiped; hs must still be destroyed. Returns 0,
 * -EINVAL (not done, failed, or already split) or -ENOMEM. */
int gp_noise_handshake_split(struct gp_noise_handshake *hs,
			     struct gp_noise_transport **ret);

/* Wipes and frees a transport. NULL is a no-op. */
void gp_noise_transport_destroy(struct gp_noise_transport *t);

/* Encrypts one transport message: plaintext (borrowed, len bytes; NULL if
 * len is 0) with associated data ad (borrowed, adlen bytes; NULL if 0) into
 * out (caller-owned, cap >= len + GP_NOISE_TAG_SIZE; out may equal
 * plaintext). On success *ret_len = len + GP_NOISE_TAG_SIZE and the send
 * nonce advances. Returns 0, -EMSGSIZE (len > GP_NOISE_MAX_PLAINTEXT),
 * -ENOBUFS (cap too small) or -EOVERFLOW (send nonce exhausted: 2^64-1 is
 * reserved for rekey; the channel must be closed). */
int gp_noise_transport_encrypt(struct gp_noise_transport *t,
			       const uint8_t *ad, size_t adlen,
			       const uint8_t *plaintext, size_t len,
			       uint8_t *out, size_t cap, size_t *ret_len);

/* A run of nonces of one direction taken now and used later, on another
 * thread: the key as it is for those nonces and the first of them. Keep it
 * in secret memory (gp_secmem_alloc) and wipe it when done
 * (gp_secmem_free). */
struct gp_noise_span {
	uint8_t key[GP_NOISE_KEY_SIZE];
	uint64_t nonce;
	uint64_t count;
};

/* Takes the next count send nonces for messages that
 * gp_noise_span_encrypt() seals later, in any order and on any thread, as
 * if gp_noise_transport_encrypt() had sealed them now: later messages get
 * the nonces after them, and a rekey due right after the last one is done
 * now. Returns 0, -EAGAIN (the run would cross a rekey: seal those
 * messages one by one) or -EOVERFLOW (count is 0, or not that many nonces
 * are left). */
int gp_noise_transport_take_send(struct gp_noise_transport *t, uint64_t count,
				 struct gp_noise_span *ret);

/* Seals the message with the span's nonce number i (i < count) like
 * gp_noise_transport_encrypt() (out may equal plaintext; out has room for
 * len + GP_NOISE_TAG_SIZE bytes). Touches nothing but its arguments:
 * callable from any thread. Returns 0 or -EMSGSIZE (len >
 * GP_NOISE_MAX_PLAINTEXT), -EINVAL (i out of the span). */
int gp_noise_span_encrypt(const struct gp_noise_span *span, uint64_t i,
			  const uint8_t *plaintext, size_t len, uint8_t *out);

/* Takes the next count receive nonces for messages that
 * gp_noise_span_decrypt() opens later, in any order and on any thread, as
 * if gp_noise_transport_decrypt() had opened them now (the receiver's side
 * of gp_noise_transport_take_send). The nonces are gone even if a message
 * then fails to open: the caller closes the connection. Returns 0,
 * -EAGAIN (the run would cross a rekey: open them one by one) or
 * -EOVERFLOW. */
int gp_noise_transport_take_recv(struct gp_noise_transport *t, uint64_t count,
				 struct gp_noise_span *ret);

/* Opens the message msg (len bytes) with the span's nonce number i into
 * out (room for len - GP_NOISE_TAG_SIZE bytes; out may equal msg), like
 * gp_noise_transport_decrypt() without associated data. Touches nothing
 * but its arguments: callable from any thread. Returns 0, -EBADMSG
 * (shorter than a tag, or it did not authenticate), -EMSGSIZE (len >
 * GP_NOISE_MAX_MSG) or -EINVAL (i out of the span). */
int gp_noise_span_decrypt(const struct gp_noise_span *span, uint64_t i,
			  const uint8_t *msg, size_t len, uint8_t *out);

/* Decrypts one transport message msg (borrowed, len bytes) with associated
 * data ad into out (caller-owned, cap >= len - GP_NOISE_TAG_SIZE; out may
 * equal msg). On success *ret_len is the plaintext length and the receive
 * nonce advances. Returns 0, -EBADMSG (shorter than a tag, or authentication
 * failed: the nonce does not advance, as the spec says, but a stream
 * transport should treat this as fatal and close), -EMSGSIZE (len >
 * GP_NOISE_MAX_MSG), -ENOBUFS or -EOVERFLOW (receive nonce exhausted). */
int gp_noise_transport_decrypt(struct gp_noise_transport *t,
			       const uint8_t *ad, size_t adlen,
			       const uint8_t *msg, size_t len,
			       uint8_t *out, size_t cap, size_t *ret_len);

/* Noise Rekey() of the send or the receive key: k = the first 32 bytes of
 * ENCRYPT(k, 2^64-1, empty ad, 32 zero bytes). The nonce counter is kept.
 * Both sides must rekey at the same message boundary. */
void gp_noise_transport_rekey_send(struct gp_noise_transport *t);
void gp_noise_transport_rekey_recv(struct gp_noise_transport *t);

/* A deterministic rekey schedule that needs no signalling: with interval
 * n > 0, each direction rekeys right after its message with nonce
 * k * n - 1 (that is, after every n messages), on both sides, because both
 * sides count the same messages. 0 (the default) turns it off. Both peers
 * must use the same interval. */
void gp_noise_transport_set_rekey_interval(struct gp_noise_transport *t,
					   uint64_t interval);

/* Nonce counters: how many messages were sent / received successfully. */
uint64_t gp_noise_transport_send_nonce(const struct gp_noise_transport *t);
uint64_t gp_noise_transport_recv_nonce(const struct gp_noise_transport *t);

/* For tests of nonce exhaustion only: sets the send or receive counter. */
void gp_noise_transport_set_nonces(struct gp_noise_transport *t,
				   uint64_t send_nonce, uint64_t recv_nonce);

/* Copies the handshake hash the transport was split from into ret_hash. */
void gp_noise_transport_handshake_hash(const struct gp_noise_transport *t,
				       uint8_t ret_hash[GP_NOISE_HASH_SIZE]);

#endif
