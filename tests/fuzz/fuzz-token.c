/* Fuzz target for proto/token.
 *
 * An input is parsed as a token string; what parses must format back to a
 * string that parses to the same token.
 *
 * An input starting with '#' is instead taken as a raw token blob (the
 * bytes under the base32): the harness appends the right checksum and
 * encodes it, so that the fuzzer reaches the blob parser behind the
 * checksum, which random strings almost never pass. This needs libsodium's
 * BLAKE2b, like proto/token.c itself. */
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
static const char check_domain[] = "gradpool token check v1";

/* "gp1-" + base32(blob || checksum(blob)), NUL-terminated, malloc'd. */
static char *encode_blob(const uint8_t *blob, size_t len)
{
	crypto_generichash_state st;
	uint8_t h[crypto_generichash_BYTES_MIN];
	uint8_t *full = malloc(len + GP_TOKEN_CHECK_SIZE);
	size_t n = len + GP_TOKEN_CHECK_SIZE, nsym = (n * 8 + 4) / 5, o = 4;
	char *s = malloc(4 + nsym + 1);

	if (!full || !s) {
		free(full);
		free(s);
		return NULL;
	}
	crypto_generichash_init(&st, NULL, 0, sizeof(h));
	crypto_generichash_update(&st, (const uint8_t *)check_domain,
				  sizeof(check_domain) - 1);
	crypto_generichash_update(&st, blob, len);
	crypto_generichash_final(&st, h, sizeof(h));
	memcpy(full, blob, len);
	memcpy(full + len, h, GP_TOKEN_CHECK_SIZE);
	memcpy(s, "gp1-", 4);
	for (size_t i = 0; i < nsym; i++) {
		unsigned v = 0;

		for (size_t b = i * 5; b < i * 5 + 5; b++)
			v = (v << 1) |
			    (b / 8 < n ? (full[b / 8] >> (7 - b % 8)) & 1 : 0);
		s[o++] = alphabet[v];
	}
	s[o] = '\0';
	free(full);
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gp_token t, t2;
	enum gp_token_error e;
	char *s, out[GP_TOKEN_STRING_MAX];

	if (size > 16384 || sodium_init() < 0)
		return 0;
	if (size > 0 && data[0] == '#') {
		s = encode_blob(data + 1, size - 1);
	} else {
		s = malloc(size + 1);
		if (s) {
			memcpy(s, data, size);
			s[size] = '\0';
		}
	}
	if (!s)
		return 0;
	if (gp_token_parse(s, &t, &e) == 0) {
		if (e != GP_TOKEN_ERR_NONE)
			abort();
		if (gp_token_format(&t, out, sizeof(out)) < 0)
			abort();
		if (gp_token_parse(out, &t2, NULL) != 0 ||
		    memcmp(t.id, t2.id, sizeof(t.id)) != 0 ||
		    memcmp(t.secret, t2.secret, sizeof(t.secret)) != 0 ||
		    memcmp(t.coordinator_pub, t2.coordinator_pub,
			   sizeof(t.coordinator_pub)) != 0 ||
		    t.expires_at != t2.expires_at ||
		    t.n_endpoints != t2.n_endpoints)
			abort();
		for (size_t i = 0; i < t.n_endpoints; i++)
			if (strcmp(t.endpoints[i], t2.endpoints[i]) != 0)
				abort();
		gp_token_wipe(&t2);
	} else if (e == GP_TOKEN_ERR_NONE) {
		abort();
	}
	gp_token_wipe(&t);
	free(s);
	return 0;
}
