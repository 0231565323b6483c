/* Local-network beacons: a coordinator announces, by UDP broadcast, the
 * port it listens on and its static public key, so that an agent whose
 * token endpoints stopped answering (the coordinator's address changed)
 * can find it again by the key it pinned when joining.
 *
 * A beacon is a hint and nothing more: anyone on the network can send one,
 * so it is never trusted. The agent only learns an address to try, and the
 * Noise IK handshake against the pinned key decides whether that address
 * is the pool. Receivers rate-limit what they act on.
 *
 * Byte layout (GP_BEACON_SIZE bytes, integers big-endian):
 *
 *    0   4  magic "GPbc"
 *    4   1  version, GP_BEACON_VERSION
 *    5   1  flags, 0 (unknown bits are ignored)
 *    6   2  TCP port the coordinator accepts agents on, non-zero
 *    8   8  the sender's clock, unix seconds (informational)
 *   16  32  the coordinator's static public key (X25519)
 *
 * A longer datagram decodes the same (the tail is for later fields); a
 * shorter one, another magic or version, or port 0 is rejected. */
#ifndef GP_PROTO_BEACON_H
#define GP_PROTO_BEACON_H

#include <stddef.h>
#include <stdint.h>

#define GP_BEACON_MAGIC "GPbc"
#define GP_BEACON_VERSION 1
#define GP_BEACON_KEY_SIZE 32
#define GP_BEACON_SIZE 48
/* Datagrams larger than this are not beacons of any version. */
#define GP_BEACON_MAX 512

struct gp_beacon {
	uint16_t port;
	uint64_t sent_at;
	uint8_t key[GP_BEACON_KEY_SIZE];
};

/* Writes *b (borrowed) into out (GP_BEACON_SIZE bytes). Returns
 * GP_BEACON_SIZE, or -EINVAL for port 0. */
int gp_beacon_encode(const struct gp_beacon *b, uint8_t out[GP_BEACON_SIZE]);

/* Decodes len bytes of buf (borrowed, untrusted). *ret is written only on
 * success. Returns 0, or -EBADMSG for anything that is not a beacon. */
int gp_beacon_decode(const uint8_t *buf, size_t len, struct gp_beacon *ret);

#endif
