/* Invite tokens: one copy-pasteable string that lets a volunteer's agent join
 * a pool.
 *
 *   gp1-xxxxx-xxxxx-...-xxx
 *
 * "gp" + format version + "-", then the Crockford base32 (lower case on
 * output; parse is case-insensitive and reads i/l as 1 and o as 0) of a
 * binary blob, in groups of 5 symbols separated by '-'. Parsing ignores
 * dashes and white space, so a token broken over lines still reads.
 *
 * Blob (v1), all integers little-endian:
 *   u8  version (1)
 *   u8  id[8]               token id, random, what the coordinator looks up
 *   u8  secret[32]          256-bit secret, keys the Noise psk
 *   u8  coordinator_pub[32] X25519 static key the agent pins
 *   u64 expires_at          unix seconds, 0 = never
 *   u8  n_endpoints (1..8), then per endpoint u8 len (1..255) + "host:port"
 *   u8  check[5]            BLAKE2b-128("gradpool token check v1" || blob
 *                           before check), first 5 bytes
 * The checksum is verified before anything else in the blob is read, so a
 * typo anywhere in the body is reported as a typo (probability of a missed
 * typo 2^-40), not as a malformed token.
 *
 * The coordinator keeps a struct gp_token_record per token: the id, a keyed
 * BLAKE2b hash of the secret (never the secret), expiry, max uses, uses and
 * revocation. With a coordinator token key, secrets are derived from the id
 * (gp_token_secret_derive()), so the coordinator can recompute the secret -
 * and the Noise psk - when an agent presents a token id during the
 * handshake, while its database holds only hashes. */
#ifndef GP_PROTO_TOKEN_H
#define GP_PROTO_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GP_TOKEN_VERSION 1
#define GP_TOKEN_ID_SIZE 8
#define GP_TOKEN_SECRET_SIZE 32
#define GP_TOKEN_KEY_SIZE 32      /* X25519 public key, hash and token keys */
#define GP_TOKEN_HASH_SIZE 32
#define GP_TOKEN_PSK_SIZE 32
#define GP_TOKEN_CHECK_SIZE 5
#define GP_TOKEN_ENDPOINTS_MAX 8
#define GP_TOKEN_ENDPOINT_MAX 255 /* bytes of one "host:port" */
#define GP_TOKEN_GROUP 5          /* base32 symbols per dash-separated group */
/* Enough for the longest token string (8 endpoints of 255 bytes) and its
 * terminator. */
#define GP_TOKEN_STRING_MAX 4352

struct gp_token {
	uint8_t id[GP_TOKEN_ID_SIZE];
	uint8_t secret[GP_TOKEN_SECRET_SIZE];
	uint8_t coordinator_pub[GP_TOKEN_KEY_SIZE];
	uint64_t expires_at;                  /* unix seconds, 0 = never */
	size_t n_endpoints;
	char endpoints[GP_TOKEN_ENDPOINTS_MAX][GP_TOKEN_ENDPOINT_MAX + 1];
};

/* Why a token string did not parse. */
enum gp_token_error {
	GP_TOKEN_ERR_NONE = 0,
	GP_TOKEN_ERR_PREFIX,    /* does not start with "gp<N>-": not a token */
	GP_TOKEN_ERR_VERSION,   /* a gradpool token of an unsupported version */
	GP_TOKEN_ERR_CHARACTER, /* a character outside the alphabet: a typo */
	GP_TOKEN_ERR_CHECKSUM,  /* checksum mismatch: a typo */
	GP_TOKEN_ERR_MALFORMED, /* too short/long or fields that do not parse */
};

/* The coordinator's verdict on a presented secret. */
enum gp_token_verdict {
	GP_TOKEN_OK = 0,
	GP_TOKEN_BAD_SECRET,
	GP_TOKEN_REVOKED,
	GP_TOKEN_EXPIRED,
	GP_TOKEN_USED_UP,
};

/* What the coordinator stores per token (e.g. one ledger row). */
struct gp_token_record {
	uint8_t id[GP_TOKEN_ID_SIZE];
	uint8_t hash[GP_TOKEN_HASH_SIZE];     /* gp_token_hash_secret() */
	uint64_t expires_at;                  /* unix seconds, 0 = never */
	uint32_t max_uses;                    /* 0 = unlimited */
	uint32_t uses;
	bool revoked;
};

/* Allocates a zeroed token in sodium_malloc'd (guarded, locked) memory.
 * Returns 0 and *ret_token (owned by the caller, release with
 * gp_token_destroy()), -ENOMEM, or -EIO when libsodium cannot initialise. */
int gp_token_create(struct gp_token **ret_token);

/* Wipes and frees a token from gp_token_create(). NULL is a no-op. */
void gp_token_destroy(struct gp_token *token);

/* Wipes a token held elsewhere (stack, plain heap) with sodium_memzero. */
void gp_token_wipe(struct gp_token *token);

/* Creates a new token: a random id; the secret derived from token_key and
 * the id (gp_token_secret_derive()) when token_key is non-NULL, else random;
 * coordinator_pub[32] and the n endpoints ("host:port", 1..255 bytes of
 * printable ASCII without spaces, 1 <= n <= GP_TOKEN_ENDPOINTS_MAX) copied
 * in. All parameters are borrowed. Returns 0 and fills *ret_token, -EINVAL
 * for bad endpoints, -EIO when libsodium cannot initialise. */
int gp_token_generate(const uint8_t *token_key,
		      const uint8_t coordinator_pub[GP_TOKEN_KEY_SIZE],
		      const char *const *endpoints, size_t n,
		      uint64_t expires_at, struct gp_token *ret_token);

/* Writes the token string, NUL-terminated, into buf[0..cap). Returns the
 * string length (>= 0), -ENOBUFS when cap is too small (GP_TOKEN_STRING_MAX
 * is always enough), -EINVAL for a token whose endpoints cannot be encoded.
 * The string contains the secret: wipe buf after use. */
int gp_token_format(const struct gp_token *token, char *buf, size_t cap);

/* Parses a token string (NUL-terminated, borrowed). Returns 0 and fills
 * *ret_token, or -EINVAL with the reason in *error (error may be NULL; it is
 * set to GP_TOKEN_ERR_NONE on success). */
int gp_token_parse(const char *str, struct gp_token *ret_token,
		   enum gp_token_error *error);

/* A sentence for the user, e.g. "the token has a typo (checksum mismatch)". */
const char *gp_token_error_str(enum gp_token_error error);

/* The secret of token id under the coordinator's token key:
 * BLAKE2b-256(key = token_key, personal "gp-tsecret-v1", id). Returns 0, -EIO
 * when libsodium cannot initialise. */
int gp_token_secret_derive(const uint8_t token_key[GP_TOKEN_KEY_SIZE],
			   const uint8_t id[GP_TOKEN_ID_SIZE],
			   uint8_t ret_secret[GP_TOKEN_SECRET_SIZE]);

/* The keyed hash the coordinator stores instead of the secret:
 * BLAKE2b-256(key = hash_key, personal "gp-thash-v1", secret). Returns 0 or
 * -EIO. */
int gp_token_hash_secret(const uint8_t hash_key[GP_TOKEN_KEY_SIZE],
			 const uint8_t secret[GP_TOKEN_SECRET_SIZE],
			 uint8_t ret_hash[GP_TOKEN_HASH_SIZE]);

/* The Noise IKpsk2 pre-shared key of a token:
 * BLAKE2b-256(key = secret, personal "gp-psk-v1", empty message). Returns 0
 * or -EIO. */
int gp_token_psk(const uint8_t secret[GP_TOKEN_SECRET_SIZE],
		 uint8_t ret_psk[GP_TOKEN_PSK_SIZE]);

/* Fills a new record for token (uses 0, not revoked). Returns 0 or -EIO. */
int gp_token_record_init(struct gp_token_record *ret_record,
			 const uint8_t hash_key[GP_TOKEN_KEY_SIZE],
			 const struct gp_token *token, uint32_t max_uses);

/* Judges a presented secret against a record at time now (unix seconds):
 * GP_TOKEN_BAD_SECRET first (constant-time compare; nothing about the
 * token's state is told to someone without the secret), then REVOKED,
 * EXPIRED (now >= expires_at, when set), USED_UP (max_uses set and uses >=
 * max_uses), else GP_TOKEN_OK. The caller increments uses on OK. A libsodium
 * failure counts as BAD_SECRET. Nothing is modified. */
enum gp_token_verdict gp_token_record_check(
	const struct gp_token_record *record,
	const uint8_t hash_key[GP_TOKEN_KEY_SIZE],
	const uint8_t secret[GP_TOKEN_SECRET_SIZE], uint64_t now);

/* Static text for a verdict: "ok", "wrong secret", "token revoked"... */
const char *gp_token_verdict_str(enum gp_token_verdict verdict);

#endif
