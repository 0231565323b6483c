/* The message set's text: which characters a str may carry, the rules of
 * a public name, and the names of types, refusals and byes for logs.
 * msg.h documents the public functions. */
#include "msg.h"
#include "msg-internal.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

/* Length of the character that starts at p (n bytes left) when it is a
 * well-formed UTF-8 character a str may carry, else 0. Refused: malformed,
 * overlong and surrogate encodings, code points above U+10FFFF, and the
 * control characters (C0, DEL, C1), which would let a peer forge log
 * lines or drive a terminal. */
size_t gp_msg_str_char(const uint8_t *p, size_t n)
{
	uint32_t cp;
	size_t len;

	if (p[0] < 0x80)
		return p[0] >= 0x20 && p[0] != 0x7f ? 1 : 0;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2;
		cp = p[0] & 0x1fu;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3;
		cp = p[0] & 0x0fu;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4;
		cp = p[0] & 0x07u;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3fu);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ||
	    (cp >= 0x80 && cp <= 0x9f))
		return 0;
	return len;
}

int gp_msg_public_name_check(const char *name)
{
	const uint8_t *p = (const uint8_t *)name;
	size_t n = strnlen(name, GP_MSG_PUBLIC_NAME_MAX + 1);

	if (n == 0 || n > GP_MSG_PUBLIC_NAME_MAX || p[0] == ' ' ||
	    p[n - 1] == ' ')
		return -EINVAL;
	while (n > 0) {
		size_t len = gp_msg_str_char(p, n);

		if (len == 0)
			return -EINVAL;
		/* U+202A..U+202E (E2 80 AA..AE) and U+2066..U+2069
		 * (E2 81 A6..A9). */
		if (len == 3 && p[0] == 0xe2 &&
		    ((p[1] == 0x80 && p[2] >= 0xaa && p[2] <= 0xae) ||
		     (p[1] == 0x81 && p[2] >= 0xa6 && p[2] <= 0xa9)))
			return -EINVAL;
		p += len;
		n -= len;
	}
	return 0;
}

const char *gp_msg_type_name(uint8_t type)
{
	static const char *const names[] = {
		[GP_MSG_JOIN] = "JOIN",
		[GP_MSG_WELCOME] = "WELCOME",
		[GP_MSG_REJECT] = "REJECT",
		[GP_MSG_HEARTBEAT] = "HEARTBEAT",
		[GP_MSG_WORK_REQUEST] = "WORK_REQUEST",
		[GP_MSG_MINIBATCH] = "MINIBATCH",
		[GP_MSG_PARAM_PULL] = "PARAM_PULL",
		[GP_MSG_PARAM_SHARDS] = "PARAM_SHARDS",
		[GP_MSG_UPDATE] = "UPDATE",
		[GP_MSG_CLOCK] = "CLOCK",
		[GP_MSG_STATS] = "STATS",
		[GP_MSG_PAUSE] = "PAUSE",
		[GP_MSG_RESUME] = "RESUME",
		[GP_MSG_BYE] = "BYE",
		[GP_MSG_PROFILE] = "PROFILE",
		[GP_MSG_DATA_REQUEST] = "DATA_REQUEST",
		[GP_MSG_DATA_SHARD] = "DATA_SHARD",
		[GP_MSG_VERIFY_TASK] = "VERIFY_TASK",
		[GP_MSG_VERIFY_RESULT] = "VERIFY_RESULT",
	};

	if (type == 0 || type > GP_MSG_TYPE_MAX || !names[type])
		return "unknown";
	return names[type];
}

const char *gp_msg_reject_str(uint16_t code)
{
	switch (code) {
	case GP_REJECT_BAD_TOKEN:
		return "invalid token";
	case GP_REJECT_TOKEN_EXPIRED:
		return "token expired";
	case GP_REJECT_TOKEN_USED_UP:
		return "token used up";
	case GP_REJECT_TOKEN_REVOKED:
		return "token revoked";
	case GP_REJECT_AGENT_REVOKED:
		return "agent revoked";
	case GP_REJECT_VERSION:
		return "version not supported";
	case GP_REJECT_BUSY:
		return "coordinator busy";
	case GP_REJECT_UNKNOWN_AGENT:
		return "unknown agent (join with a token)";
	case GP_REJECT_MALFORMED:
		return "malformed message";
	case GP_REJECT_NO_JOB:
		return "no job running";
	default:
		return "unspecified";
	}
}

const char *gp_msg_bye_str(uint16_t reason)
{
	switch (reason) {
	case GP_BYE_NORMAL:
		return "normal close";
	case GP_BYE_SHUTDOWN:
		return "shutting down";
	case GP_BYE_JOB_DONE:
		return "job done";
	case GP_BYE_REVOKED:
		return "revoked";
	case GP_BYE_PROTOCOL:
		return "protocol error";
	case GP_BYE_TIMEOUT:
		return "timed out";
	case GP_BYE_RESTART:
		return "restarting";
	case GP_BYE_JOB_CHANGED:
		return "job changed";
	default:
		return "unspecified";
	}
}
