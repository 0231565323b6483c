/* Cacophony test vector runner. A vector gives both sides' keys, fixed
 * ephemerals, the prologue, optional psks and a list of messages; message i is
 * sent by the initiator when i is even. The handshake messages come first,
 * then transport messages (empty associated data) alternate the same way.
 * Every ciphertext must match byte for byte, every payload must come back, and
 * both sides must end with the same handshake hash: the vector's, when it
 * gives one ("handshake_hash" is optional: snow's files, for one, omit it). */
#include "noise-vectors.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "noise.h"

#define MAX_BYTES GP_NOISE_MAX_MSG

struct side {
	struct gp_noise_keypair *s;
	struct gp_noise_handshake *hs;
	struct gp_noise_transport *t;
	uint8_t psk[GP_NOISE_PSK_SIZE];
	bool has_psk;
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes hex into out (cap bytes). Returns the length or -EINVAL. */
static long unhex(const char *hex, uint8_t *out, size_t cap)
{
	size_t len = strlen(hex);

	if (len % 2 || len / 2 > cap)
		return -EINVAL;
	for (size_t i = 0; i < len / 2; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return (long)(len / 2);
}

static const char *get_str(json_object *o, const char *key)
{
	json_object *v;

	if (!json_object_object_get_ex(o, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/* Reads a hex field of exactly len bytes (len 0: any length up to cap).
 * Returns the length, -ENOENT if absent, -EINVAL if malformed. */
static long get_hex(json_object *o, const char *key, uint8_t *out, size_t cap,
		    size_t len)
{
	const char *s = get_str(o, key);
	long n;

	if (!s)
		return -ENOENT;
	n = unhex(s, out, cap);
	if (n >= 0 && len && (size_t)n != len)
		return -EINVAL;
	return n;
}

/* Reads "<prefix>_psks": at most one psk is supported. Returns 0 (none),
 * 1 (one, in out), or -ENOTSUP. */
static int get_psk(json_object *v, const char *key, uint8_t *out)
{
	json_object *arr, *e;
	size_t n;

	if (!json_object_object_get_ex(v, key, &arr))
		return 0;
	if (!json_object_is_type(arr, json_type_array))
		return -EINVAL;
	n = json_object_array_length(arr);
	if (n == 0)
		return 0;
	if (n > 1)
		return -ENOTSUP;
	e = json_object_array_get_idx(arr, 0);
	if (!json_object_is_type(e, json_type_string) ||
	    unhex(json_object_get_string(e), out, GP_NOISE_PSK_SIZE) !=
		    GP_NOISE_PSK_SIZE)
		return -EINVAL;
	return 1;
}

static void side_finish(struct side *sd)
{
	gp_noise_transport_destroy(sd->t);
	gp_noise_handshake_destroy(sd->hs);
	gp_noise_keypair_destroy(sd->s);
	memset(sd, 0, sizeof(*sd));
}

/* Sets up one side from the "init_" or "resp_" fields. */
static int side_init(struct side *sd, json_object *v, const char *prefix,
		     enum gp_noise_pattern pattern, bool initiator,
		     char *why, size_t whylen)
{
	uint8_t key[32], rs[32], prologue[1024];
	char name[64];
	long plen, r;
	bool has_rs;

	snprintf(name, sizeof(name), "%s_prologue", prefix);
	plen = get_hex(v, name, prologue, sizeof(prologue), 0);
	if (plen == -ENOENT)
		plen = 0;
	if (plen < 0)
		goto bad;

	snprintf(name, sizeof(name), "%s_static", prefix);
	r = get_hex(v, name, key, 32, 32);
	if (r >= 0) {
		if (gp_noise_keypair_create(key, &sd->s) < 0)
			goto bad;
	} else if (r != -ENOENT) {
		goto bad;
	}

	snprintf(name, sizeof(name), "%s_remote_static", prefix);
	r = get_hex(v, name, rs, 32, 32);
	if (r < 0 && r != -ENOENT)
		goto bad;
	has_rs = r >= 0;

	snprintf(name, sizeof(name), "%s_psks", prefix);
	r = get_psk(v, name, sd->psk);
	if (r < 0)
		return (int)r;
	sd->has_psk = r == 1;

	if (gp_noise_handshake_create(pattern, initiator, prologue,
				      (size_t)plen, sd->s,
				      has_rs ? rs : NULL, &sd->hs) < 0) {
		snprintf(why, whylen, "%s: create failed", prefix);
		return -EINVAL;
	}
	snprintf(name, sizeof(name), "%s_ephemeral", prefix);
	r = get_hex(v, name, key, 32, 32);
	if (r >= 0 && gp_noise_handshake_set_ephemeral(sd->hs, key) < 0)
		goto bad;
	/* The initiator sets its psk up front; the responder only when a
	 * message first needs it (see side_read), as an IKpsk2 responder that
	 * learns the token id from message 1 does. */
	if (initiator && sd->has_psk &&
	    gp_noise_handshake_set_psk(sd->hs, sd->psk) < 0)
		goto bad;
	return 0;
bad:
	snprintf(why, whylen, "%s: bad or unusable key fields", prefix);
	return -EINVAL;
}

/* Write and read retry once after setting the psk when the state asks for it
 * (-ENOKEY, which must have left the state untouched). */
static int side_write(struct side *sd, const uint8_t *payload, size_t len,
		      uint8_t *out, size_t cap, size_t *ret_len)
{
	int r = gp_noise_handshake_write_message(sd->hs, payload, len, out,
						 cap, ret_len);

	if (r == -ENOKEY && sd->has_psk &&
	    gp_noise_handshake_set_psk(sd->hs, sd->psk) == 0)
		r = gp_noise_handshake_write_message(sd->hs, payload, len, out,
						     cap, ret_len);
	return r;
}

static int side_read(struct side *sd, const uint8_t *msg, size_t len,
		     uint8_t *out, size_t cap, size_t *ret_len)
{
	int r = gp_noise_handshake_read_message(sd->hs, msg, len, out, cap,
						ret_len);

	if (r == -ENOKEY && sd->has_psk &&
	    gp_noise_handshake_set_psk(sd->hs, sd->psk) == 0)
		r = gp_noise_handshake_read_message(sd->hs, msg, len, out, cap,
						    ret_len);
	return r;
}

/* Runs message i of a vector: tx writes it (a handshake message, or a
 * transport message once its handshake is done), the ciphertext must match
 * the vector's byte for byte, and rx must read the payload back. */
static int run_message(json_object *m, size_t i, struct side *tx,
		       struct side *rx, char *why, size_t whylen)
{
	static uint8_t payload[MAX_BYTES], expect[MAX_BYTES], buf[MAX_BYTES],
		got[MAX_BYTES];
	long plen = get_hex(m, "payload", payload, MAX_BYTES, 0);
	long clen = get_hex(m, "ciphertext", expect, MAX_BYTES, 0);
	size_t wlen, glen;
	int e;

	if (plen < 0 || clen < 0) {
		snprintf(why, whylen, "message %zu: bad hex", i);
		return -EINVAL;
	}
	if (!gp_noise_handshake_is_done(tx->hs)) {
		e = side_write(tx, payload, (size_t)plen, buf, sizeof(buf),
			       &wlen);
	} else {
		e = 0;
		if (!tx->t)
			e = gp_noise_handshake_split(tx->hs, &tx->t);
		if (e == 0)
			e = gp_noise_transport_encrypt(tx->t, NULL, 0, payload,
						       (size_t)plen, buf,
						       sizeof(buf), &wlen);
	}
	if (e < 0) {
		snprintf(why, whylen, "message %zu: write failed (%s)", i,
			 strerror(-e));
		return -EINVAL;
	}
	if (wlen != (size_t)clen || memcmp(buf, expect, wlen) != 0) {
		snprintf(why, whylen,
			 "message %zu: ciphertext differs (%zu vs %ld bytes)",
			 i, wlen, clen);
		return -EINVAL;
	}
	if (!gp_noise_handshake_is_done(rx->hs)) {
		e = side_read(rx, buf, wlen, got, sizeof(got), &glen);
	} else {
		e = 0;
		if (!rx->t)
			e = gp_noise_handshake_split(rx->hs, &rx->t);
		if (e == 0)
			e = gp_noise_transport_decrypt(rx->t, NULL, 0, buf,
						       wlen, got, sizeof(got),
						       &glen);
	}
	if (e < 0) {
		snprintf(why, whylen, "message %zu: read failed (%s)", i,
			 strerror(-e));
		return -EINVAL;
	}
	if (glen != (size_t)plen || memcmp(got, payload, glen) != 0) {
		snprintf(why, whylen, "message %zu: payload differs", i);
		return -EINVAL;
	}
	return 0;
}

/* Both sides must end with the same handshake hash, and with the vector's
 * "handshake_hash" when it has one. Some published files (snow's) carry
 * none: then the messages, byte for byte, are the whole check, and
 * *ret_hashed is false. Returns 0 or -EINVAL. */
static int check_hash(json_object *v, const struct side *init,
		      const struct side *resp, bool *ret_hashed, char *why,
		      size_t whylen)
{
	uint8_t hash[GP_NOISE_HASH_SIZE], h1[GP_NOISE_HASH_SIZE],
		h2[GP_NOISE_HASH_SIZE];
	long r = get_hex(v, "handshake_hash", hash, sizeof(hash),
			 GP_NOISE_HASH_SIZE);

	if (r < 0 && r != -ENOENT) {
		snprintf(why, whylen, "malformed handshake_hash");
		return -EINVAL;
	}
	if (gp_noise_handshake_hash(init->hs, h1) < 0 ||
	    gp_noise_handshake_hash(resp->hs, h2) < 0 ||
	    memcmp(h1, h2, sizeof(h1)) != 0) {
		snprintf(why, whylen, "the sides' handshake hashes differ");
		return -EINVAL;
	}
	if (r >= 0 && memcmp(h1, hash, sizeof(hash)) != 0) {
		snprintf(why, whylen, "handshake hash differs");
		return -EINVAL;
	}
	*ret_hashed = r >= 0;
	return 0;
}

/* Runs one vector. Returns 0 (passed; *ret_hashed: its handshake_hash was
 * checked too), -ENOTSUP (a protocol variant not offered) or -EINVAL with
 * the reason in why. */
static int run_vector(json_object *v, enum gp_noise_pattern pattern,
		      bool *ret_hashed, char *why, size_t whylen)
{
	struct side init = { 0 }, resp = { 0 };
	json_object *msgs;
	size_t n_msgs;
	int r = -EINVAL;

	why[0] = '\0';
	if (!json_object_object_get_ex(v, "messages", &msgs) ||
	    !json_object_is_type(msgs, json_type_array)) {
		snprintf(why, whylen, "no messages");
		goto out;
	}
	r = side_init(&init, v, "init", pattern, true, why, whylen);
	if (r < 0)
		goto out;
	r = side_init(&resp, v, "resp", pattern, false, why, whylen);
	if (r < 0)
		goto out;

	n_msgs = json_object_array_length(msgs);
	for (size_t i = 0; i < n_msgs; i++) {
		/* Message i is the initiator's when i is even. */
		r = run_message(json_object_array_get_idx(msgs, i), i,
				i % 2 == 0 ? &init : &resp,
				i % 2 == 0 ? &resp : &init, why, whylen);
		if (r < 0)
			goto out;
	}
	r = -EINVAL;
	if (!gp_noise_handshake_is_done(init.hs) ||
	    !gp_noise_handshake_is_done(resp.hs)) {
		snprintf(why, whylen, "handshake not finished");
		goto out;
	}
	r = check_hash(v, &init, &resp, ret_hashed, why, whylen);
out:
	side_finish(&init);
	side_finish(&resp);
	return r;
}

int gp_noise_vectors_run(const char *path, FILE *log, int verbose,
			 struct gp_noise_vectors_result *ret)
{
	struct gp_noise_vectors_result res = { 0 };
	json_object *root, *vectors;
	size_t n;
	int r = 0;

	if (gp_noise_init() < 0)
		return -EIO;
	root = json_object_from_file(path);
	if (!root)
		return -EINVAL;
	if (!json_object_object_get_ex(root, "vectors", &vectors) ||
	    !json_object_is_type(vectors, json_type_array)) {
		r = -EINVAL;
		goto out;
	}
	n = json_object_array_length(vectors);
	for (size_t i = 0; i < n; i++) {
		json_object *v = json_object_array_get_idx(vectors, i);
		const char *name = get_str(v, "protocol_name");
		enum gp_noise_pattern pattern;
		char why[160];
		bool hashed = false;
		int e;

		if (!name)
			name = get_str(v, "name");
		if (!name || gp_noise_pattern_from_name(name, &pattern) < 0) {
			res.skipped++;
			if (log && verbose)
				fprintf(log, "skip %s\n",
					name ? name : "(unnamed)");
			continue;
		}
		e = run_vector(v, pattern, &hashed, why, sizeof(why));
		if (e == -ENOTSUP) {
			res.skipped++;
			if (log && verbose)
				fprintf(log, "skip %s (several psks)\n", name);
		} else if (e < 0) {
			res.failed++;
			if (log)
				fprintf(log, "FAIL %s: %s\n", name, why);
		} else {
			res.passed++;
			if (!hashed)
				res.unhashed++;
			if (log && verbose)
				fprintf(log, "pass %s%s\n", name,
					hashed ? "" :
						 " (no handshake_hash: messages "
						 "only)");
		}
	}
	*ret = res;
out:
	json_object_put(root);
	return r;
}
