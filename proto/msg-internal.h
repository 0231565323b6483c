/* Private to proto/msg.c, msg-text.c and msg-payload.c. */
#ifndef GP_PROTO_MSG_INTERNAL_H
#define GP_PROTO_MSG_INTERNAL_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "msg.h"

/* Length of the character that starts at p (n > 0 bytes left) when it is
 * a well-formed UTF-8 character a str may carry, else 0 (msg-text.c). */
size_t gp_msg_str_char(const uint8_t *p, size_t n);

/* msg-payload.c, for msg.c's block schema. */

/* Whether a payload of count values of dtype (raw_len already checked)
 * holds only what the encoder writes: q8's and q4's chunk scales finite
 * and not negative, q4's nibbles in -7..7 and a spare nibble 0. True for
 * the other dtypes. */
bool gp_msg_payload_ok(uint8_t dtype, const uint8_t *raw, uint64_t count);

/* The scale an I8 block of v[0..n) goes with: the largest finite |v| / 127. */
float gp_msg_i8_scale(const float *v, size_t n);

/* Writes b's values at p in b->dtype (gp_msg_payload_size(b->dtype,
 * b->count) bytes). */
void gp_msg_payload_write(const struct gp_msg_block *b, uint8_t *p);

#endif
