/* Invite tokens: Crockford base32 strings with a BLAKE2b checksum, and the
 * coordinator's keyed-hash records. See token.h for the format. */
#include "token.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "endian.h"

#define PREFIX "gp"
/* u8 version, id, secret, coordinator key, u64 expiry, u8 n_endpoints. */
#define FIXED_SIZE (1 + GP_TOKEN_ID_SIZE + GP_TOKEN_SECRET_SIZE +              \
		    GP_TOKEN_KEY_SIZE + 8 + 1)
/* The smallest blob: one endpoint of one byte, and the checksum. */
#define BLOB_MIN (FIXED_SIZE + 2 + GP_TOKEN_CHECK_SIZE)
#define BLOB_MAX (FIXED_SIZE + GP_TOKEN_ENDPOINTS_MAX *                        \
		  (1 + GP_TOKEN_ENDPOINT_MAX) + GP_TOKEN_CHECK_SIZE)

_Static_assert(4 + (BLOB_MAX * 8 + 4) / 5 * 6 / 5 + 2 < GP_TOKEN_STRING_MAX,
	       "GP_TOKEN_STRING_MAX too small for the longest token");

static const char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
static const char check_domain[] = "gradpool token check v1";

static int sodium_ready(void)
{
	return sodium_init() < 0 ? -EIO : 0;
}

/* Crockford decoding, tolerant of case and of the look-alikes I, L (1) and
 * O (0). Returns the 5-bit value or -1. */
static int symbol_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		c = (unsigned char)(c - 'A' + 'a');
	if (c == 'i' || c == 'l')
		return 1;
	if (c == 'o')
		return 0;
	for (int i = 0; i < 32; i++)
		if (alphabet[i] == c)
			return i;
	return -1;
}

static bool endpoint_ok(const char *s, size_t len)
{
	if (len == 0 || len > GP_TOKEN_ENDPOINT_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

static void checksum(const uint8_t *blob, size_t len,
		     uint8_t out[GP_TOKEN_CHECK_SIZE])
{
	crypto_generichash_state st;
	uint8_t h[crypto_generichash_BYTES_MIN];

	crypto_generichash_init(&st, NULL, 0, sizeof(h));
	crypto_generichash_update(&st, (const uint8_t *)check_domain,
				  sizeof(check_domain) - 1);
	crypto_generichash_update(&st, blob, len);
	crypto_generichash_final(&st, h, sizeof(h));
	memcpy(out, h, GP_TOKEN_CHECK_SIZE);
}

/* BLAKE2b-256 keyed with key, personalised with personal (<= 16 bytes). */
static int keyed_hash(const uint8_t *key, const char *personal,
		      const uint8_t *in, size_t inlen, uint8_t out[32])
{
	uint8_t salt[crypto_generichash_blake2b_SALTBYTES] = { 0 };
	uint8_t pers[crypto_generichash_blake2b_PERSONALBYTES] = { 0 };

	if (sodium_ready() < 0)
		return -EIO;
	memcpy(pers, personal, strnlen(personal, sizeof(pers)));
	if (crypto_generichash_blake2b_salt_personal(out, 32, in, inlen, key,
						     32, salt, pers) != 0)
		return -EIO;
	return 0;
}

int gp_token_create(struct gp_token **ret_token)
{
	struct gp_token *t;

	if (sodium_ready() < 0)
		return -EIO;
	t = sodium_malloc(sizeof(*t));
	if (!t)
		return -ENOMEM;
	sodium_memzero(t, sizeof(*t));
	*ret_token = t;
	return 0;
}

void gp_token_destroy(struct gp_token *token)
{
	if (token)
		sodium_free(token); /* wipes before unmapping */
}

void gp_token_wipe(struct gp_token *token)
{
	if (token)
		sodium_memzero(token, sizeof(*token));
}

int gp_token_secret_derive(const uint8_t token_key[GP_TOKEN_KEY_SIZE],
			   const uint8_t id[GP_TOKEN_ID_SIZE],
			   uint8_t ret_secret[GP_TOKEN_SECRET_SIZE])
{
	return keyed_hash(token_key, "gp-tsecret-v1", id, GP_TOKEN_ID_SIZE,
			  ret_secret);
}

int gp_token_hash_secret(const uint8_t hash_key[GP_TOKEN_KEY_SIZE],
			 const uint8_t secret[GP_TOKEN_SECRET_SIZE],
			 uint8_t ret_hash[GP_TOKEN_HASH_SIZE])
{
	return keyed_hash(hash_key, "gp-thash-v1", secret, GP_TOKEN_SECRET_SIZE,
			  ret_hash);
}

int gp_token_psk(const uint8_t secret[GP_TOKEN_SECRET_SIZE],
		 uint8_t ret_psk[GP_TOKEN_PSK_SIZE])
{
	return keyed_hash(secret, "gp-psk-v1", NULL, 0, ret_psk);
}

int gp_token_generate(const uint8_t *token_key,
		      const uint8_t coordinator_pub[GP_TOKEN_KEY_SIZE],
		      const char *const *endpoints, size_t n,
		      uint64_t expires_at, struct gp_token *ret_token)
{
	struct gp_token *t = NULL;
	int r;

	if (n == 0 || n > GP_TOKEN_ENDPOINTS_MAX || !endpoints)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!endpoints[i] ||
		    !endpoint_ok(endpoints[i],
				 strnlen(endpoints[i], GP_TOKEN_ENDPOINT_MAX + 1)))
			return -EINVAL;
	r = gp_token_create(&t);
	if (r < 0)
		return r;
	randombytes_buf(t->id, sizeof(t->id));
	if (token_key) {
		r = gp_token_secret_derive(token_key, t->id, t->secret);
		if (r < 0)
			goto cleanup;
	} else {
		randombytes_buf(t->secret, sizeof(t->secret));
	}
	memcpy(t->coordinator_pub, coordinator_pub, GP_TOKEN_KEY_SIZE);
	t->expires_at = expires_at;
	t->n_endpoints = n;
	for (size_t i = 0; i < n; i++)
		strcpy(t->endpoints[i], endpoints[i]); /* length checked */
	memcpy(ret_token, t, sizeof(*t));
	r = 0;
cleanup:
	gp_token_destroy(t);
	return r;
}

/* Serialises token into blob (BLOB_MAX bytes), checksum included. Returns
 * the length or -EINVAL. */
static int blob_write(const struct gp_token *t, uint8_t *blob)
{
	size_t o = 0;

	if (t->n_endpoints == 0 || t->n_endpoints > GP_TOKEN_ENDPOINTS_MAX)
		return -EINVAL;
	blob[o++] = GP_TOKEN_VERSION;
	memcpy(blob + o, t->id, GP_TOKEN_ID_SIZE);
	o += GP_TOKEN_ID_SIZE;
	memcpy(blob + o, t->secret, GP_TOKEN_SECRET_SIZE);
	o += GP_TOKEN_SECRET_SIZE;
	memcpy(blob + o, t->coordinator_pub, GP_TOKEN_KEY_SIZE);
	o += GP_TOKEN_KEY_SIZE;
	gp_put_le64(blob + o, t->expires_at);
	o += 8;
	blob[o++] = (uint8_t)t->n_endpoints;
	for (size_t i = 0; i < t->n_endpoints; i++) {
		size_t len = strnlen(t->endpoints[i], GP_TOKEN_ENDPOINT_MAX + 1);

		if (!endpoint_ok(t->endpoints[i], len))
			return -EINVAL;
		blob[o++] = (uint8_t)len;
		memcpy(blob + o, t->endpoints[i], len);
		o += len;
	}
	checksum(blob, o, blob + o);
	return (int)(o + GP_TOKEN_CHECK_SIZE);
}

int gp_token_format(const struct gp_token *token, char *buf, size_t cap)
{
	uint8_t blob[BLOB_MAX];
	size_t nsym, need, o = 0;
	int len, r;

	if (sodium_ready() < 0)
		return -EIO;
	len = blob_write(token, blob);
	if (len < 0) {
		r = len;
		goto cleanup;
	}
	nsym = ((size_t)len * 8 + 4) / 5;
	need = strlen(PREFIX) + 2 + nsym + (nsym - 1) / GP_TOKEN_GROUP + 1;
	if (cap < need) {
		r = -ENOBUFS;
		goto cleanup;
	}
	o = (size_t)snprintf(buf, cap, "%s%d-", PREFIX, GP_TOKEN_VERSION);
	for (size_t s = 0; s < nsym; s++) {
		size_t bit = s * 5;
		unsigned v = 0;

		/* Five bits starting at bit (MSB first), zero past the end. */
		for (int b = 0; b < 5; b++, bit++) {
			unsigned byte = bit / 8 < (size_t)len ? blob[bit / 8] : 0;

			v = (v << 1) | ((byte >> (7 - bit % 8)) & 1);
		}
		if (s && s % GP_TOKEN_GROUP == 0)
			buf[o++] = '-';
		buf[o++] = alphabet[v];
	}
	buf[o] = '\0';
	r = (int)o;
cleanup:
	sodium_memzero(blob, sizeof(blob));
	return r;
}

/* Reads "gp<N>-" at the start of s (after white space). Returns the offset
 * of the body, or -1 with *err set. */
static long parse_prefix(const char *s, enum gp_token_error *err)
{
	size_t i = 0;
	unsigned long version = 0;
	size_t digits = 0;

	while (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')
		i++;
	if ((s[i] != 'g' && s[i] != 'G') || (s[i + 1] != 'p' && s[i + 1] != 'P')) {
		*err = GP_TOKEN_ERR_PREFIX;
		return -1;
	}
	i += 2;
	while (s[i] >= '0' && s[i] <= '9') {
		if (version < 1000)
			version = version * 10 + (unsigned long)(s[i] - '0');
		i++;
		digits++;
	}
	if (digits == 0 || s[i] != '-') {
		*err = GP_TOKEN_ERR_PREFIX;
		return -1;
	}
	if (version != GP_TOKEN_VERSION) {
		*err = GP_TOKEN_ERR_VERSION;
		return -1;
	}
	return (long)(i + 1);
}

/* Parses the checked blob (checksum excluded) into t. */
static int blob_read(const uint8_t *blob, size_t len, struct gp_token *t)
{
	size_t o = 0;

	if (len < FIXED_SIZE || blob[0] != GP_TOKEN_VERSION)
		return -EINVAL;
	o = 1;
	memcpy(t->id, blob + o, GP_TOKEN_ID_SIZE);
	o += GP_TOKEN_ID_SIZE;
	memcpy(t->secret, blob + o, GP_TOKEN_SECRET_SIZE);
	o += GP_TOKEN_SECRET_SIZE;
	memcpy(t->coordinator_pub, blob + o, GP_TOKEN_KEY_SIZE);
	o += GP_TOKEN_KEY_SIZE;
	t->expires_at = gp_get_le64(blob + o);
	o += 8;
	t->n_endpoints = blob[o++];
	if (t->n_endpoints == 0 || t->n_endpoints > GP_TOKEN_ENDPOINTS_MAX)
		return -EINVAL;
	for (size_t i = 0; i < t->n_endpoints; i++) {
		size_t elen;

		if (o >= len)
			return -EINVAL;
		elen = blob[o++];
		if (elen > len - o || !endpoint_ok((const char *)blob + o, elen))
			return -EINVAL;
		memcpy(t->endpoints[i], blob + o, elen);
		t->endpoints[i][elen] = '\0';
		o += elen;
	}
	return o == len ? 0 : -EINVAL;
}

int gp_token_parse(const char *str, struct gp_token *ret_token,
		   enum gp_token_error *error)
{
	enum gp_token_error err = GP_TOKEN_ERR_NONE;
	uint8_t blob[BLOB_MAX + 1];
	uint8_t check[GP_TOKEN_CHECK_SIZE];
	struct gp_token *t = NULL;
	size_t nbits = 0, len;
	uint32_t acc = 0;
	long body;
	int r = -EINVAL;

	memset(blob, 0, sizeof(blob));
	if (!str) {
		err = GP_TOKEN_ERR_PREFIX;
		goto cleanup;
	}
	body = parse_prefix(str, &err);
	if (body < 0)
		goto cleanup;
	len = 0;
	for (const char *c = str + body; *c; c++) {
		int v;

		if (*c == '-' || *c == ' ' || *c == '\t' || *c == '\n' ||
		    *c == '\r')
			continue;
		v = symbol_value((unsigned char)*c);
		if (v < 0) {
			err = GP_TOKEN_ERR_CHARACTER;
			goto cleanup;
		}
		acc = (acc << 5) | (uint32_t)v;
		nbits += 5;
		if (nbits >= 8) {
			if (len == sizeof(blob)) {
				err = GP_TOKEN_ERR_MALFORMED;
				goto cleanup;
			}
			blob[len++] = (uint8_t)(acc >> (nbits - 8));
			nbits -= 8;
		}
		acc &= (1u << nbits) - 1;
	}
	/* An encoder leaves 0..4 zero bits in the last symbol: 5 or more
	 * means a symbol too many or too few, non-zero bits a mistyped last
	 * symbol. Both are typos of a real token. */
	if (len < BLOB_MIN || len > BLOB_MAX) {
		err = GP_TOKEN_ERR_MALFORMED;
		goto cleanup;
	}
	if (nbits >= 5 || acc != 0) {
		err = GP_TOKEN_ERR_CHECKSUM;
		goto cleanup;
	}
	if (sodium_ready() < 0) {
		r = -EIO;
		goto cleanup;
	}
	len -= GP_TOKEN_CHECK_SIZE;
	checksum(blob, len, check);
	if (memcmp(check, blob + len, GP_TOKEN_CHECK_SIZE) != 0) {
		err = GP_TOKEN_ERR_CHECKSUM;
		goto cleanup;
	}
	r = gp_token_create(&t);
	if (r < 0)
		goto cleanup;
	if (blob_read(blob, len, t) < 0) {
		err = GP_TOKEN_ERR_MALFORMED;
		r = -EINVAL;
		goto cleanup;
	}
	memcpy(ret_token, t, sizeof(*t));
	r = 0;
cleanup:
	sodium_memzero(blob, sizeof(blob));
	gp_token_destroy(t);
	if (error)
		*error = err;
	return r;
}

const char *gp_token_error_str(enum gp_token_error error)
{
	switch (error) {
	case GP_TOKEN_ERR_NONE:
		return "no error";
	case GP_TOKEN_ERR_PREFIX:
		return "not a gradpool invite token (it should start with \"gp1-\")";
	case GP_TOKEN_ERR_VERSION:
		return "the token is for another gradpool version (unsupported token version)";
	case GP_TOKEN_ERR_CHARACTER:
		return "the token has a typo (a character that cannot appear in a token)";
	case GP_TOKEN_ERR_CHECKSUM:
		return "the token has a typo (checksum mismatch)";
	case GP_TOKEN_ERR_MALFORMED:
		return "the token is malformed or cut short";
	}
	return "unknown token error";
}

int gp_token_record_init(struct gp_token_record *ret_record,
			 const uint8_t hash_key[GP_TOKEN_KEY_SIZE],
			 const struct gp_token *token, uint32_t max_uses)
{
	struct gp_token_record rec;
	int r;

	memset(&rec, 0, sizeof(rec));
	r = gp_token_hash_secret(hash_key, token->secret, rec.hash);
	if (r < 0)
		return r;
	memcpy(rec.id, token->id, GP_TOKEN_ID_SIZE);
	rec.expires_at = token->expires_at;
	rec.max_uses = max_uses;
	*ret_record = rec;
	return 0;
}

enum gp_token_verdict gp_token_record_check(
	const struct gp_token_record *record,
	const uint8_t hash_key[GP_TOKEN_KEY_SIZE],
	const uint8_t secret[GP_TOKEN_SECRET_SIZE], uint64_t now)
{
	uint8_t h[GP_TOKEN_HASH_SIZE];
	bool match;

	if (gp_token_hash_secret(hash_key, secret, h) < 0)
		return GP_TOKEN_BAD_SECRET;
	match = sodium_memcmp(h, record->hash, sizeof(h)) == 0;
	sodium_memzero(h, sizeof(h));
	if (!match)
		return GP_TOKEN_BAD_SECRET;
	if (record->revoked)
		return GP_TOKEN_REVOKED;
	if (record->expires_at && now >= record->expires_at)
		return GP_TOKEN_EXPIRED;
	if (record->max_uses && record->uses >= record->max_uses)
		return GP_TOKEN_USED_UP;
	return GP_TOKEN_OK;
}

const char *gp_token_verdict_str(enum gp_token_verdict verdict)
{
	switch (verdict) {
	case GP_TOKEN_OK:
		return "ok";
	case GP_TOKEN_BAD_SECRET:
		return "wrong token secret";
	case GP_TOKEN_REVOKED:
		return "token revoked";
	case GP_TOKEN_EXPIRED:
		return "token expired";
	case GP_TOKEN_USED_UP:
		return "token used up";
	}
	return "unknown verdict";
}
