/* The coordinator's local-network beacons (proto/beacon.h): every interval
 * a datagram with the agents' TCP port and the coordinator's public key,
 * broadcast on each IPv4 interface that is up (its directed broadcast
 * address, so that it leaves by that interface even without a default
 * route). Runs on the serve loop; no reply is ever read. */
#ifndef GP_COORD_ANNOUNCE_H
#define GP_COORD_ANNOUNCE_H

#include <stdint.h>
#include <uv.h>

struct gp_announce;

/* Starts announcing tcp_port and key (borrowed, 32 bytes, copied) to UDP
 * port udp_port every interval_ms (at least 1000: beacons are hints, and a
 * busy network owes them nothing). The first beacon goes at once. *ret is
 * owned by the caller (gp_announce_destroy). Returns 0 or a negative
 * errno. */
int gp_announce_start(uv_loop_t *loop, const uint8_t *key, uint16_t tcp_port,
		      uint16_t udp_port, uint64_t interval_ms,
		      struct gp_announce **ret);

/* Stops, closes the handles and frees a once the loop has run their close
 * callbacks. NULL is a no-op. */
void gp_announce_destroy(struct gp_announce *a);

#endif
