#include "beacon.h"

#include <errno.h>
#include <string.h>

int gp_beacon_encode(const struct gp_beacon *b, uint8_t out[GP_BEACON_SIZE])
{
	if (!b || !out || b->port == 0)
		return -EINVAL;
	memcpy(out, GP_BEACON_MAGIC, 4);
	out[4] = GP_BEACON_VERSION;
	out[5] = 0;
	out[6] = (uint8_t)(b->port >> 8);
	out[7] = (uint8_t)b->port;
	for (int i = 0; i < 8; i++)
		out[8 + i] = (uint8_t)(b->sent_at >> (56 - 8 * i));
	memcpy(out + 16, b->key, GP_BEACON_KEY_SIZE);
	return GP_BEACON_SIZE;
}

int gp_beacon_decode(const uint8_t *buf, size_t len, struct gp_beacon *ret)
{
	struct gp_beacon b;

	if (!buf || !ret || len < GP_BEACON_SIZE || len > GP_BEACON_MAX)
		return -EBADMSG;
	if (memcmp(buf, GP_BEACON_MAGIC, 4) != 0 || buf[4] != GP_BEACON_VERSION)
		return -EBADMSG;
	b.port = (uint16_t)((unsigned)buf[6] << 8 | buf[7]);
	if (b.port == 0)
		return -EBADMSG;
	b.sent_at = 0;
	for (int i = 0; i < 8; i++)
		b.sent_at = b.sent_at << 8 | buf[8 + i];
	memcpy(b.key, buf + 16, GP_BEACON_KEY_SIZE);
	*ret = b;
	return 0;
}
