#include "announce.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "beacon.h"
#include "log.h"
#include "util.h"

struct gp_announce {
	uv_udp_t udp;
	uv_timer_t timer;
	struct gp_beacon beacon;
	uint16_t udp_port;
	int open_handles;
	bool warned;
};

static void send_all(struct gp_announce *a)
{
	uv_interface_address_t *ifs = NULL;
	uint8_t buf[GP_BEACON_SIZE];
	int n = 0, sent = 0;

	a->beacon.sent_at = (uint64_t)gp_now_s();
	if (gp_beacon_encode(&a->beacon, buf) < 0)
		return;
	if (uv_interface_addresses(&ifs, &n) < 0)
		return;
	for (int i = 0; i < n; i++) {
		struct sockaddr_in to;
		uv_buf_t b = uv_buf_init((char *)buf, sizeof(buf));
		uint32_t addr, mask;

		if (ifs[i].is_internal || ifs[i].address.address4.sin_family != AF_INET)
			continue;
		addr = ifs[i].address.address4.sin_addr.s_addr;
		mask = ifs[i].netmask.netmask4.sin_addr.s_addr;
		if (mask == 0xffffffffu)
			continue; /* a point-to-point /32 has no broadcast */
		memset(&to, 0, sizeof(to));
		to.sin_family = AF_INET;
		to.sin_port = htons(a->udp_port);
		to.sin_addr.s_addr = addr | ~mask;
		/* try_send: a beacon that does not fit the socket buffer now is
		 * simply skipped; the next one comes in a few seconds. */
		if (uv_udp_try_send(&a->udp, &b, 1, (struct sockaddr *)&to) >= 0)
			sent++;
	}
	uv_free_interface_addresses(ifs, n);
	if (!sent && !a->warned) {
		gp_debug("beacon: no broadcast-capable interface");
		a->warned = true;
	}
}

static void on_timer(uv_timer_t *t)
{
	send_all(t->data);
}

static void on_closed(uv_handle_t *h)
{
	struct gp_announce *a = h->data;

	if (--a->open_handles == 0)
		free(a);
}

int gp_announce_start(uv_loop_t *loop, const uint8_t *key, uint16_t tcp_port,
		      uint16_t udp_port, uint64_t interval_ms,
		      struct gp_announce **ret)
{
	struct gp_announce *a;
	struct sockaddr_in any;
	int r;

	if (!loop || !key || !tcp_port || !udp_port || !ret)
		return -EINVAL;
	if (interval_ms < 1000)
		interval_ms = 1000;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	a->beacon.port = tcp_port;
	memcpy(a->beacon.key, key, GP_BEACON_KEY_SIZE);
	a->udp_port = udp_port;
	r = uv_udp_init(loop, &a->udp);
	if (r < 0) {
		free(a);
		return r;
	}
	a->udp.data = a;
	a->open_handles = 1;
	uv_timer_init(loop, &a->timer);
	a->timer.data = a;
	a->open_handles++;
	uv_ip4_addr("0.0.0.0", 0, &any);
	r = uv_udp_bind(&a->udp, (struct sockaddr *)&any, 0);
	if (r >= 0)
		r = uv_udp_set_broadcast(&a->udp, 1);
	if (r < 0) {
		gp_announce_destroy(a);
		return r;
	}
	uv_timer_start(&a->timer, on_timer, 0, interval_ms);
	*ret = a;
	return 0;
}

void gp_announce_destroy(struct gp_announce *a)
{
	if (!a)
		return;
	if (!uv_is_closing((uv_handle_t *)&a->timer))
		uv_close((uv_handle_t *)&a->timer, on_closed);
	if (!uv_is_closing((uv_handle_t *)&a->udp))
		uv_close((uv_handle_t *)&a->udp, on_closed);
}
