/* Frames: the length-prefixed units that carry Noise messages over TCP.
 *
 * This module does no I/O and knows nothing about Noise. It turns a byte
 * stream cut at arbitrary places into whole frames, and writes frame
 * headers. The length is checked against a hard maximum as soon as the
 * header is complete, before a single byte of the body is buffered or any
 * memory is allocated for it.
 *
 * Frame layout (all integers little-endian):
 *
 *   offset  size  field
 *   0       4     length  u32, number of body bytes after the header
 *                         (the header itself not included); at most the
 *                         decoder's maximum, never above GP_FRAME_MAX_BODY
 *   4       1     kind    enum gp_frame_kind
 *   5       len   body    one Noise message (handshake or transport), or
 *                         nothing for GP_FRAME_REFUSE
 *
 * The maximum body is the Noise maximum message size, 65535 bytes, so one
 * frame always carries exactly one Noise message. */
#ifndef GP_FRAME_H
#define GP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define GP_FRAME_HEADER_SIZE 5
/* Noise limits every message (ciphertext plus tag) to 65535 bytes. */
#define GP_FRAME_MAX_BODY 65535u

enum gp_frame_kind {
	/* A Noise handshake message (see channel.h for the exchange). */
	GP_FRAME_HANDSHAKE = 1,
	/* A Noise transport message. */
	GP_FRAME_TRANSPORT = 2,
	/* Sent in clear by a responder that could not read handshake
	 * message 1, just before it closes. Unauthenticated: a hint for the
	 * error message, never a reason to trust anything. Empty body. */
	GP_FRAME_REFUSE = 3,
};

/* One decoded frame. body points into memory owned by the decoder or into
 * the caller's input buffer (see gp_frame_decode); it may be modified in
 * place (decrypted) by the caller. */
struct gp_frame {
	enum gp_frame_kind kind;
	uint8_t *body;
	size_t len;
};

/* Incremental decoder state. Embed it and use gp_frame_decoder_init() and
 * gp_frame_decoder_finish(); the fields are private. */
struct gp_frame_decoder {
	uint8_t header[GP_FRAME_HEADER_SIZE];
	size_t header_have;
	uint32_t body_len;
	size_t body_have;
	/* Holds a body that arrives over several inputs; allocated at the
	 * first such body with the checked length, grown up to max_body. */
	uint8_t *buf;
	size_t buf_cap;
	uint32_t max_body;
	/* Sticky: once a stream is bad, it stays bad. */
	int error;
};

/* Prepares a decoder that accepts bodies of at most max_body bytes
 * (clamped to GP_FRAME_MAX_BODY; 0 means GP_FRAME_MAX_BODY). Allocates
 * nothing. */
void gp_frame_decoder_init(struct gp_frame_decoder *d, uint32_t max_body);

/* Frees what the decoder holds. d may be NULL. Safe to call twice. */
void gp_frame_decoder_finish(struct gp_frame_decoder *d);

/* Frees the buffer of a frame that came in pieces once no frame is half
 * read (the frame it held must no longer be in use). */
void gp_frame_decoder_trim(struct gp_frame_decoder *d);

/* Feeds bytes to the decoder.
 *
 * data/len: the next bytes of the stream (borrowed; data may be modified
 * only through the returned frame body, see below).
 *
 * Consumes bytes until one frame is complete or the input is exhausted.
 * *ret_used is set to the number of bytes consumed. Returns 1 when a frame
 * is complete and written to *ret_frame, 0 when every byte was consumed and
 * no frame is complete yet. Call again with data + *ret_used until all
 * input is used: one input may hold several frames.
 *
 * When a whole frame lies inside data, ret_frame->body points into data
 * (no copy); otherwise it points into the decoder's buffer. Either way the
 * body stays valid until the next call on this decoder, and the caller may
 * overwrite it (decrypt in place).
 *
 * Errors (sticky, nothing written to ret_*): -EMSGSIZE when a length
 * exceeds the maximum (detected from the header alone, before any body
 * byte is stored or memory allocated), -EPROTO for an unknown kind, -ENOMEM
 * when the body buffer cannot be allocated. */
int gp_frame_decode(struct gp_frame_decoder *d, uint8_t *data, size_t len,
		    size_t *ret_used, struct gp_frame *ret_frame);

/* Returns the number of bytes of a partly received frame the decoder holds
 * (header and body), so that an end of stream inside a frame can be told
 * apart from a clean one. */
size_t gp_frame_decoder_pending(const struct gp_frame_decoder *d);

/* Writes the header of a frame of the given kind and body length into out
 * (GP_FRAME_HEADER_SIZE bytes). Returns 0, or -EMSGSIZE when len exceeds
 * GP_FRAME_MAX_BODY, -EINVAL for an unknown kind. */
int gp_frame_header_write(uint8_t out[GP_FRAME_HEADER_SIZE],
			  enum gp_frame_kind kind, size_t len);

#endif
