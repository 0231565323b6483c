/* Private to proto/msg.c and msg-text.c. */
#ifndef GP_PROTO_MSG_INTERNAL_H
#define GP_PROTO_MSG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Length of the character that starts at p (n > 0 bytes left) when it is
 * a well-formed UTF-8 character a str may carry, else 0 (msg-text.c). */
size_t gp_msg_str_char(const uint8_t *p, size_t n);

#endif
