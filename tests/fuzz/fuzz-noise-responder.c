/* Fuzz target: arbitrary bytes as handshake messages to Noise responders with
 * fixed keys. The whole input is message 1 for an IK, an IKpsk2 and an XX
 * responder; the responders that accept it also write message 2. For XX the
 * input is also split after 32 bytes into message 1 (e, empty payload) and
 * message 3, so that a corpus entry made with the fixed keys below reaches
 * the end of the handshake and the split.
 *
 * Fixed keys (byte i of each key): responder static i + 1, responder
 * ephemeral 0x80 + i, psk 0xc0 + i; prologue "gradpool-fuzz". The corpus in
 * tests/fuzz/corpus/noise-responder/ was written once with proto/noise.c by
 * an initiator with static key 0x40 + i and ephemeral key 0xa0 + i:
 *   ik-msg1, ikpsk2-msg1  valid message 1, payload "token-0001";
 *   xx-msg1-msg3          XX message 1 (32 bytes) then the matching message
 *                         3: reaches split;
 *   xx-msg1-payload       XX message 1 with a cleartext payload;
 *   empty, junk-*         junk. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "noise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t prologue[] = "gradpool-fuzz";

static void fill(uint8_t *k, uint8_t base)
{
	for (int i = 0; i < 32; i++)
		k[i] = (uint8_t)(base + i);
}

/* Runs one responder over msg1 (and msg3 when the pattern has one). */
static void respond(enum gp_noise_pattern pattern,
		    const struct gp_noise_keypair *s, const uint8_t *msg1,
		    size_t len1, const uint8_t *msg3, size_t len3)
{
	static uint8_t payload[GP_NOISE_MAX_MSG], out[GP_NOISE_MAX_MSG];
	struct gp_noise_handshake *hs = NULL;
	struct gp_noise_transport *t = NULL;
	uint8_t key[32];
	size_t n;

	if (gp_noise_handshake_create(pattern, false, prologue,
				      sizeof(prologue) - 1, s, NULL, &hs) < 0)
		abort();
	fill(key, 0x80);
	if (gp_noise_handshake_set_ephemeral(hs, key) < 0)
		abort();
	if (gp_noise_handshake_read_message(hs, msg1, len1, payload,
					    sizeof(payload), &n) < 0)
		goto out;
	if (pattern == GP_NOISE_IKPSK2) {
		fill(key, 0xc0);
		if (gp_noise_handshake_set_psk(hs, key) < 0)
			abort();
	}
	if (gp_noise_handshake_write_message(hs, payload, n, out, sizeof(out),
					     &n) < 0)
		goto out;
	if (!gp_noise_handshake_is_done(hs)) {
		if (!msg3 ||
		    gp_noise_handshake_read_message(hs, msg3, len3, payload,
						    sizeof(payload), &n) < 0)
			goto out;
	}
	if (!gp_noise_handshake_is_done(hs) ||
	    !gp_noise_handshake_remote_static(hs) ||
	    gp_noise_handshake_split(hs, &t) < 0)
		abort();
out:
	gp_noise_transport_destroy(t);
	gp_noise_handshake_destroy(hs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct gp_noise_keypair *s;
	uint8_t priv[32];

	if (!s) {
		fill(priv, 1);
		if (gp_noise_keypair_create(priv, &s) < 0)
			abort();
	}
	respond(GP_NOISE_IK, s, data, size, NULL, 0);
	respond(GP_NOISE_IKPSK2, s, data, size, NULL, 0);
	respond(GP_NOISE_XX, s, data, size, NULL, 0);
	if (size >= 32)
		respond(GP_NOISE_XX, s, data, 32, data + 32, size - 32);
	return 0;
}
