/* Noise (revision 34) for 25519 / ChaChaPoly / BLAKE2b on libsodium. The
 * function names in comments (MixKey, EncryptAndHash, ...) are the spec's,
 * so the code can be read next to sections 5.1-5.3 of the specification. */
#include "noise.h"

#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "gp-endian.h"
#include "secmem.h"

#define DHLEN 32
#define HASHLEN 64
#define BLOCKLEN 128
#define KEYLEN 32
#define TAGLEN 16
#define NONCE_MAX UINT64_MAX

enum token {
	T_END = 0,
	T_E,
	T_S,
	T_EE,
	T_ES,
	T_SE,
	T_SS,
	T_PSK,
};

#define MAX_MESSAGES 3
#define MAX_TOKENS 7

struct pattern {
	const char *name;
	/* "<- s" pre-message: the initiator knows the responder's static. */
	bool pre_responder_s;
	bool psk;
	uint8_t n_messages;
	/* Message i is written by the initiator when i is even. */
	uint8_t tokens[MAX_MESSAGES][MAX_TOKENS];
};

static const struct pattern patterns[] = {
	[GP_NOISE_NK] = {
		"Noise_NK_25519_ChaChaPoly_BLAKE2b", true, false, 2,
		{ { T_E, T_ES }, { T_E, T_EE } },
	},
	[GP_NOISE_NKPSK2] = {
		"Noise_NKpsk2_25519_ChaChaPoly_BLAKE2b", true, true, 2,
		{ { T_E, T_ES }, { T_E, T_EE, T_PSK } },
	},
	[GP_NOISE_IK] = {
		"Noise_IK_25519_ChaChaPoly_BLAKE2b", true, false, 2,
		{ { T_E, T_ES, T_S, T_SS }, { T_E, T_EE, T_SE } },
	},
	[GP_NOISE_IKPSK1] = {
		"Noise_IKpsk1_25519_ChaChaPoly_BLAKE2b", true, true, 2,
		{ { T_E, T_ES, T_S, T_SS, T_PSK }, { T_E, T_EE, T_SE } },
	},
	[GP_NOISE_IKPSK2] = {
		"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b", true, true, 2,
		{ { T_E, T_ES, T_S, T_SS }, { T_E, T_EE, T_SE, T_PSK } },
	},
	[GP_NOISE_XX] = {
		"Noise_XX_25519_ChaChaPoly_BLAKE2b", false, false, 3,
		{ { T_E }, { T_E, T_EE, T_S, T_ES }, { T_S, T_SE } },
	},
	[GP_NOISE_XXPSK3] = {
		"Noise_XXpsk3_25519_ChaChaPoly_BLAKE2b", false, true, 3,
		{ { T_E }, { T_E, T_EE, T_S, T_ES }, { T_S, T_SE, T_PSK } },
	},
};

#define N_PATTERNS (sizeof(patterns) / sizeof(patterns[0]))

/* CipherState (spec 5.1). */
struct cipher {
	uint8_t k[KEYLEN];
	uint64_t n;
	bool has_k;
};

/* HandshakeState (spec 5.3) with its SymmetricState (5.2) inlined. One
 * secure allocation per handshake (secmem.h) holds every secret, so no
 * operation allocates. */
struct gp_noise_handshake {
	const struct pattern *p;
	bool initiator;
	bool failed;
	bool split;
	bool has_s, has_e, has_rs, has_re, has_psk;
	uint8_t msg_index;
	struct cipher cs;
	uint8_t ck[HASHLEN];
	uint8_t h[HASHLEN];
	uint8_t s_pub[DHLEN], s_priv[DHLEN];
	uint8_t e_pub[DHLEN], e_priv[DHLEN];
	uint8_t rs[DHLEN], re[DHLEN];
	uint8_t psk[GP_NOISE_PSK_SIZE];
};

struct gp_noise_transport {
	struct cipher send, recv;
	uint64_t rekey_interval;
	uint8_t h[HASHLEN];
};

int gp_noise_init(void)
{
	return sodium_init() < 0 ? -EIO : 0;
}

const char *gp_noise_pattern_name(enum gp_noise_pattern pattern)
{
	if ((size_t)pattern >= N_PATTERNS)
		return NULL;
	return patterns[pattern].name;
}

int gp_noise_pattern_from_name(const char *name,
			       enum gp_noise_pattern *ret_pattern)
{
	for (size_t i = 0; i < N_PATTERNS; i++) {
		if (strcmp(name, patterns[i].name) == 0) {
			*ret_pattern = (enum gp_noise_pattern)i;
			return 0;
		}
	}
	return -ENOENT;
}

int gp_noise_public_from_private(const uint8_t priv[GP_NOISE_KEY_SIZE],
				 uint8_t pub[GP_NOISE_KEY_SIZE])
{
	return crypto_scalarmult_base(pub, priv) == 0 ? 0 : -EINVAL;
}

int gp_noise_keypair_generate(uint8_t pub[GP_NOISE_KEY_SIZE],
			      uint8_t priv[GP_NOISE_KEY_SIZE])
{
	if (gp_noise_init() < 0)
		return -EIO;
	/* X25519 clamps the scalar itself; any 32 random bytes are a key.
	 * A zero public key is impossible for a clamped scalar, so a failure
	 * here would mean a broken library. */
	randombytes_buf(priv, DHLEN);
	return crypto_scalarmult_base(pub, priv) == 0 ? 0 : -EIO;
}

int gp_noise_keypair_create(const uint8_t *priv, struct gp_noise_keypair **ret)
{
	struct gp_noise_keypair *kp;
	int r;

	if (gp_noise_init() < 0)
		return -EIO;
	kp = gp_secmem_alloc(sizeof(*kp));
	if (!kp)
		return -ENOMEM;
	if (priv) {
		memcpy(kp->priv, priv, DHLEN);
		r = gp_noise_public_from_private(kp->priv, kp->pub);
	} else {
		r = gp_noise_keypair_generate(kp->pub, kp->priv);
	}
	if (r < 0)
		goto fail;
	*ret = kp;
	return 0;
fail:
	gp_noise_keypair_destroy(kp);
	return r;
}

void gp_noise_keypair_destroy(struct gp_noise_keypair *kp)
{
	if (!kp)
		return;
	gp_secmem_free(kp); /* wipes it */
}

/* ---- Hash functions (spec 4.3): BLAKE2b-512, HMAC and HKDF ---- */

/* HMAC-BLAKE2b(key, d1 || d2) per RFC 2104 with BLOCKLEN 128. key is at most
 * HASHLEN bytes here, so it is never hashed first. out may alias key. */
static void hmac(const uint8_t *key, size_t keylen, const uint8_t *d1,
		 size_t l1, const uint8_t *d2, size_t l2,
		 uint8_t out[HASHLEN])
{
	crypto_generichash_state st;
	uint8_t pad[BLOCKLEN];
	uint8_t inner[HASHLEN];

	memset(pad, 0x36, sizeof(pad));
	for (size_t i = 0; i < keylen; i++)
		pad[i] ^= key[i];
	crypto_generichash_init(&st, NULL, 0, HASHLEN);
	crypto_generichash_update(&st, pad, sizeof(pad));
	if (l1)
		crypto_generichash_update(&st, d1, l1);
	if (l2)
		crypto_generichash_update(&st, d2, l2);
	crypto_generichash_final(&st, inner, HASHLEN);

	memset(pad, 0x5c, sizeof(pad));
	for (size_t i = 0; i < keylen; i++)
		pad[i] ^= key[i];
	crypto_generichash_init(&st, NULL, 0, HASHLEN);
	crypto_generichash_update(&st, pad, sizeof(pad));
	crypto_generichash_update(&st, inner, HASHLEN);
	crypto_generichash_final(&st, out, HASHLEN);

	sodium_memzero(pad, sizeof(pad));
	sodium_memzero(inner, sizeof(inner));
	sodium_memzero(&st, sizeof(st));
}

/* HKDF(chaining_key, ikm, num_outputs) with num_outputs 2 (out3 NULL) or 3.
 * Outputs are HASHLEN bytes each; out1 may alias ck. */
static void hkdf(const uint8_t ck[HASHLEN], const uint8_t *ikm, size_t ikmlen,
		 uint8_t out1[HASHLEN], uint8_t out2[HASHLEN],
		 uint8_t *out3)
{
	static const uint8_t one = 1, two = 2, three = 3;
	uint8_t temp_key[HASHLEN];

	hmac(ck, HASHLEN, ikm, ikmlen, NULL, 0, temp_key);
	hmac(temp_key, HASHLEN, &one, 1, NULL, 0, out1);
	hmac(temp_key, HASHLEN, out1, HASHLEN, &two, 1, out2);
	if (out3)
		hmac(temp_key, HASHLEN, out2, HASHLEN, &three, 1, out3);
	sodium_memzero(temp_key, sizeof(temp_key));
}

/* ---- CipherState ---- */

static void nonce_bytes(uint64_t n, uint8_t nonce[12])
{
	memset(nonce, 0, 4);
	gp_put_le64(nonce + 4, n);
}

/* ENCRYPT(k, n, ad, plaintext): out gets len + TAGLEN bytes. */
static void aead_encrypt(const uint8_t k[KEYLEN], uint64_t n,
			 const uint8_t *ad, size_t adlen,
			 const uint8_t *pt, size_t len, uint8_t *out)
{
	uint8_t nonce[12];

	nonce_bytes(n, nonce);
	crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, pt, len, ad,
						  adlen, NULL, nonce, k);
}

static int aead_decrypt(const uint8_t k[KEYLEN], uint64_t n,
			const uint8_t *ad, size_t adlen, const uint8_t *ct,
			size_t len, uint8_t *out)
{
	uint8_t nonce[12];

	nonce_bytes(n, nonce);
	if (crypto_aead_chacha20poly1305_ietf_decrypt(out, NULL, NULL, ct, len,
						      ad, adlen, nonce,
						      k) != 0)
		return -EBADMSG;
	return 0;
}

static void cipher_init_key(struct cipher *c, const uint8_t k[KEYLEN])
{
	memcpy(c->k, k, KEYLEN);
	c->n = 0;
	c->has_k = true;
}

static void cipher_rekey(struct cipher *c)
{
	static const uint8_t zeros[KEYLEN];
	uint8_t out[KEYLEN + TAGLEN];

	aead_encrypt(c->k, NONCE_MAX, NULL, 0, zeros, KEYLEN, out);
	memcpy(c->k, out, KEYLEN);
	sodium_memzero(out, sizeof(out));
}

/* ---- SymmetricState ---- */

static void mix_hash(struct gp_noise_handshake *hs, const uint8_t *data,
		     size_t len)
{
	crypto_generichash_state st;

	crypto_generichash_init(&st, NULL, 0, HASHLEN);
	crypto_generichash_update(&st, hs->h, HASHLEN);
	if (len)
		crypto_generichash_update(&st, data, len);
	crypto_generichash_final(&st, hs->h, HASHLEN);
}

static void mix_key(struct gp_noise_handshake *hs, const uint8_t *ikm,
		    size_t len)
{
	uint8_t temp_k[HASHLEN];

	hkdf(hs->ck, ikm, len, hs->ck, temp_k, NULL);
	cipher_init_key(&hs->cs, temp_k);
	sodium_memzero(temp_k, sizeof(temp_k));
}

static void mix_key_and_hash(struct gp_noise_handshake *hs,
			     const uint8_t *ikm, size_t len)
{
	uint8_t temp_h[HASHLEN], temp_k[HASHLEN];

	hkdf(hs->ck, ikm, len, hs->ck, temp_h, temp_k);
	mix_hash(hs, temp_h, HASHLEN);
	cipher_init_key(&hs->cs, temp_k);
	sodium_memzero(temp_h, sizeof(temp_h));
	sodium_memzero(temp_k, sizeof(temp_k));
}

/* EncryptAndHash: out gets len (+ TAGLEN once a key is set) bytes; out must
 * not overlap pt. Handshake nonces never get near 2^64. */
static size_t encrypt_and_hash(struct gp_noise_handshake *hs,
			       const uint8_t *pt, size_t len, uint8_t *out)
{
	size_t outlen = len;

	if (hs->cs.has_k) {
		aead_encrypt(hs->cs.k, hs->cs.n, hs->h, HASHLEN, pt, len, out);
		hs->cs.n++;
		outlen += TAGLEN;
	} else if (len) {
		memcpy(out, pt, len);
	}
	mix_hash(hs, out, outlen);
	return outlen;
}

/* DecryptAndHash of ct (len bytes, tag included once a key is set) into out,
 * which may alias ct: the new h is computed over the ciphertext first. */
static int decrypt_and_hash(struct gp_noise_handshake *hs, const uint8_t *ct,
			    size_t len, uint8_t *out)
{
	uint8_t h_next[HASHLEN];
	crypto_generichash_state st;
	int r = 0;

	crypto_generichash_init(&st, NULL, 0, HASHLEN);
	crypto_generichash_update(&st, hs->h, HASHLEN);
	if (len)
		crypto_generichash_update(&st, ct, len);
	crypto_generichash_final(&st, h_next, HASHLEN);

	if (hs->cs.has_k) {
		r = aead_decrypt(hs->cs.k, hs->cs.n, hs->h, HASHLEN, ct, len,
				 out);
		if (r < 0)
			return r;
		hs->cs.n++;
	} else if (len && out != ct) {
		memmove(out, ct, len);
	}
	memcpy(hs->h, h_next, HASHLEN);
	return 0;
}

/* ---- HandshakeState ---- */

static bool side_sends_s(const struct pattern *p, bool initiator)
{
	for (unsigned m = initiator ? 0 : 1; m < p->n_messages; m += 2)
		for (unsigned t = 0; t < MAX_TOKENS && p->tokens[m][t]; t++)
			if (p->tokens[m][t] == T_S)
				return true;
	return false;
}

static bool side_uses_s(const struct pattern *p, bool initiator)
{
	if (!initiator && p->pre_responder_s)
		return true;
	return side_sends_s(p, initiator);
}

static bool message_has_psk(const struct pattern *p, unsigned m)
{
	for (unsigned t = 0; t < MAX_TOKENS && p->tokens[m][t]; t++)
		if (p->tokens[m][t] == T_PSK)
			return true;
	return false;
}

static bool is_my_turn(const struct gp_noise_handshake *hs)
{
	return (hs->msg_index % 2 == 0) == hs->initiator;
}

static bool is_done(const struct gp_noise_handshake *hs)
{
	return hs->msg_index >= hs->p->n_messages;
}

/* Wipes what a dead handshake no longer needs and marks it failed. */
static void handshake_fail(struct gp_noise_handshake *hs)
{
	hs->failed = true;
	sodium_memzero(&hs->cs, sizeof(hs->cs));
	sodium_memzero(hs->ck, sizeof(hs->ck));
	sodium_memzero(hs->e_priv, sizeof(hs->e_priv));
	sodium_memzero(hs->psk, sizeof(hs->psk));
}

/* Length of the next message without payload: the overhead of its tokens
 * and the payload tag, following when a key becomes available. */
static size_t message_overhead(const struct gp_noise_handshake *hs)
{
	const uint8_t *tok = hs->p->tokens[hs->msg_index];
	bool has_k = hs->cs.has_k;
	size_t n = 0;

	for (unsigned t = 0; t < MAX_TOKENS && tok[t]; t++) {
		switch (tok[t]) {
		case T_E:
			n += DHLEN;
			if (hs->p->psk)
				has_k = true;
			break;
		case T_S:
			n += DHLEN + (has_k ? TAGLEN : 0);
			break;
		default:
			has_k = true;
			break;
		}
	}
	return n + (has_k ? TAGLEN : 0);
}

int gp_noise_handshake_create(enum gp_noise_pattern pattern, bool initiator,
			      const uint8_t *prologue, size_t prologue_len,
			      const struct gp_noise_keypair *s,
			      const uint8_t *rs,
			      struct gp_noise_handshake **ret)
{
	struct gp_noise_handshake *hs;
	const struct pattern *p;
	size_t name_len;

	if ((size_t)pattern >= N_PATTERNS || (prologue_len && !prologue))
		return -EINVAL;
	p = &patterns[pattern];
	if (side_uses_s(p, initiator) && !s)
		return -EINVAL;
	if (initiator && p->pre_responder_s && !rs)
		return -EINVAL;
	if (gp_noise_init() < 0)
		return -EIO;

	hs = gp_secmem_alloc(sizeof(*hs));
	if (!hs)
		return -ENOMEM;
	hs->p = p;
	hs->initiator = initiator;
	if (side_uses_s(p, initiator)) {
		memcpy(hs->s_pub, s->pub, DHLEN);
		memcpy(hs->s_priv, s->priv, DHLEN);
		hs->has_s = true;
	}
	if (initiator && p->pre_responder_s) {
		memcpy(hs->rs, rs, DHLEN);
		hs->has_rs = true;
	}

	/* InitializeSymmetric(protocol_name): names here are <= HASHLEN, so
	 * h is the zero-padded name. */
	name_len = strlen(p->name);
	memcpy(hs->h, p->name, name_len);
	memcpy(hs->ck, hs->h, HASHLEN);
	mix_hash(hs, prologue, prologue_len);

	/* Pre-message "<- s": both sides hash the responder's static key. */
	if (p->pre_responder_s)
		mix_hash(hs, initiator ? hs->rs : hs->s_pub, DHLEN);

	*ret = hs;
	return 0;
}

void gp_noise_handshake_destroy(struct gp_noise_handshake *hs)
{
	if (!hs)
		return;
	gp_secmem_free(hs); /* wipes it */
}

int gp_noise_handshake_set_psk(struct gp_noise_handshake *hs,
			       const uint8_t psk[GP_NOISE_PSK_SIZE])
{
	if (hs->failed)
		return -EBADMSG;
	if (!hs->p->psk)
		return -EINVAL;
	/* Refuse once the psk token has been processed. */
	for (unsigned m = 0; m < hs->msg_index && m < hs->p->n_messages; m++)
		if (message_has_psk(hs->p, m))
			return -EINVAL;
	memcpy(hs->psk, psk, GP_NOISE_PSK_SIZE);
	hs->has_psk = true;
	return 0;
}

int gp_noise_handshake_set_ephemeral(struct gp_noise_handshake *hs,
				     const uint8_t priv[GP_NOISE_KEY_SIZE])
{
	uint8_t pub[DHLEN];

	if (hs->failed || hs->has_e)
		return -EINVAL;
	if (crypto_scalarmult_base(pub, priv) != 0)
		return -EINVAL;
	memcpy(hs->e_priv, priv, DHLEN);
	memcpy(hs->e_pub, pub, DHLEN);
	hs->has_e = true;
	return 0;
}

bool gp_noise_handshake_is_my_turn(const struct gp_noise_handshake *hs)
{
	return !hs->failed && !is_done(hs) && is_my_turn(hs);
}

bool gp_noise_handshake_is_done(const struct gp_noise_handshake *hs)
{
	return !hs->failed && is_done(hs);
}

bool gp_noise_handshake_is_failed(const struct gp_noise_handshake *hs)
{
	return hs->failed;
}

int gp_noise_handshake_message_size(const struct gp_noise_handshake *hs,
				    size_t payload_len)
{
	size_t n;

	if (hs->failed || is_done(hs))
		return -EINVAL;
	n = message_overhead(hs);
	if (payload_len > GP_NOISE_MAX_MSG || n + payload_len > GP_NOISE_MAX_MSG)
		return -EMSGSIZE;
	return (int)(n + payload_len);
}

/* DH for a token, from this side's point of view; the all-zero output
 * (a low-order peer key) makes crypto_scalarmult fail. */
static int mix_dh(struct gp_noise_handshake *hs, enum token tok)
{
	const uint8_t *priv, *pub;
	uint8_t shared[DHLEN];
	bool local_s, remote_s;
	int r;

	switch (tok) {
	case T_EE:
		local_s = false;
		remote_s = false;
		break;
	case T_ES:
		/* e of the initiator, s of the responder. */
		local_s = !hs->initiator;
		remote_s = hs->initiator;
		break;
	case T_SE:
		local_s = hs->initiator;
		remote_s = !hs->initiator;
		break;
	default:
		local_s = true;
		remote_s = true;
		break;
	}
	if ((local_s ? !hs->has_s : !hs->has_e) ||
	    (remote_s ? !hs->has_rs : !hs->has_re))
		return -EBADMSG;
	priv = local_s ? hs->s_priv : hs->e_priv;
	pub = remote_s ? hs->rs : hs->re;
	r = crypto_scalarmult(shared, priv, pub) == 0 ? 0 : -EBADMSG;
	if (r == 0)
		mix_key(hs, shared, DHLEN);
	sodium_memzero(shared, sizeof(shared));
	return r;
}

int gp_noise_handshake_write_message(struct gp_noise_handshake *hs,
				     const uint8_t *payload, size_t payload_len,
				     uint8_t *out, size_t cap,
				     size_t *ret_len)
{
	const uint8_t *tok;
	size_t off = 0;
	int size, r;

	if (hs->failed || is_done(hs) || !is_my_turn(hs))
		return -EINVAL;
	if (payload_len && !payload)
		return -EINVAL;
	size = gp_noise_handshake_message_size(hs, payload_len);
	if (size < 0)
		return size;
	if (cap < (size_t)size)
		return -ENOBUFS;
	if (message_has_psk(hs->p, hs->msg_index) && !hs->has_psk)
		return -ENOKEY;

	tok = hs->p->tokens[hs->msg_index];
	for (unsigned t = 0; t < MAX_TOKENS && tok[t]; t++) {
		switch (tok[t]) {
		case T_E:
			if (!hs->has_e) {
				randombytes_buf(hs->e_priv, DHLEN);
				if (crypto_scalarmult_base(hs->e_pub,
							   hs->e_priv) != 0) {
					r = -EIO;
					goto fail;
				}
				hs->has_e = true;
			}
			memcpy(out + off, hs->e_pub, DHLEN);
			off += DHLEN;
			mix_hash(hs, hs->e_pub, DHLEN);
			if (hs->p->psk)
				mix_key(hs, hs->e_pub, DHLEN);
			break;
		case T_S:
			off += encrypt_and_hash(hs, hs->s_pub, DHLEN, out + off);
			break;
		case T_PSK:
			mix_key_and_hash(hs, hs->psk, GP_NOISE_PSK_SIZE);
			break;
		default:
			r = mix_dh(hs, (enum token)tok[t]);
			if (r < 0)
				goto fail;
			break;
		}
	}
	off += encrypt_and_hash(hs, payload, payload_len, out + off);
	hs->msg_index++;
	*ret_len = off;
	return 0;
fail:
	handshake_fail(hs);
	return r;
}

int gp_noise_handshake_read_message(struct gp_noise_handshake *hs,
				    const uint8_t *msg, size_t len,
				    uint8_t *payload_out, size_t cap,
				    size_t *ret_len)
{
	const uint8_t *tok;
	size_t overhead, payload_len, off = 0, n;
	int r = -EBADMSG;

	if (hs->failed)
		return -EBADMSG;
	/* A message arriving when none is expected (a replay, a duplicate)
	 * is the peer's doing: it ends the handshake. */
	if (is_done(hs) || is_my_turn(hs))
		goto fail;
	overhead = message_overhead(hs);
	if (len > GP_NOISE_MAX_MSG || len < overhead || (len && !msg))
		goto fail;
	payload_len = len - overhead;
	if (cap < payload_len || (payload_len && !payload_out))
		return -ENOBUFS;
	if (message_has_psk(hs->p, hs->msg_index) && !hs->has_psk)
		return -ENOKEY;

	tok = hs->p->tokens[hs->msg_index];
	for (unsigned t = 0; t < MAX_TOKENS && tok[t]; t++) {
		switch (tok[t]) {
		case T_E:
			memcpy(hs->re, msg + off, DHLEN);
			hs->has_re = true;
			off += DHLEN;
			mix_hash(hs, hs->re, DHLEN);
			if (hs->p->psk)
				mix_key(hs, hs->re, DHLEN);
			break;
		case T_S:
			n = DHLEN + (hs->cs.has_k ? TAGLEN : 0);
			{
				uint8_t tmp[DHLEN + TAGLEN];

				if (decrypt_and_hash(hs, msg + off, n, tmp) < 0)
					goto fail;
				memcpy(hs->rs, tmp, DHLEN);
			}
			hs->has_rs = true;
			off += n;
			break;
		case T_PSK:
			mix_key_and_hash(hs, hs->psk, GP_NOISE_PSK_SIZE);
			break;
		default:
			if (mix_dh(hs, (enum token)tok[t]) < 0)
				goto fail;
			break;
		}
	}
	if (decrypt_and_hash(hs, msg + off, len - off, payload_out) < 0)
		goto fail;
	hs->msg_index++;
	*ret_len = payload_len;
	return 0;
fail:
	handshake_fail(hs);
	return r;
}

const uint8_t *gp_noise_handshake_remote_static(
	const struct gp_noise_handshake *hs)
{
	return hs->has_rs ? hs->rs : NULL;
}

int gp_noise_handshake_hash(const struct gp_noise_handshake *hs,
			    uint8_t ret_hash[GP_NOISE_HASH_SIZE])
{
	if (hs->failed || !is_done(hs))
		return -EINVAL;
	memcpy(ret_hash, hs->h, HASHLEN);
	return 0;
}

int gp_noise_handshake_split(struct gp_noise_handshake *hs,
			     struct gp_noise_transport **ret)
{
	struct gp_noise_transport *t;
	uint8_t k1[HASHLEN], k2[HASHLEN];

	if (hs->failed || !is_done(hs) || hs->split)
		return -EINVAL;
	t = gp_secmem_alloc(sizeof(*t));
	if (!t)
		return -ENOMEM;
	hkdf(hs->ck, NULL, 0, k1, k2, NULL);
	cipher_init_key(hs->initiator ? &t->send : &t->recv, k1);
	cipher_init_key(hs->initiator ? &t->recv : &t->send, k2);
	memcpy(t->h, hs->h, HASHLEN);
	sodium_memzero(k1, sizeof(k1));
	sodium_memzero(k2, sizeof(k2));
	/* The chaining key could rederive both transport keys. */
	sodium_memzero(hs->ck, sizeof(hs->ck));
	sodium_memzero(&hs->cs, sizeof(hs->cs));
	sodium_memzero(hs->e_priv, sizeof(hs->e_priv));
	hs->split = true;
	*ret = t;
	return 0;
}

/* ---- Transport ---- */

void gp_noise_transport_destroy(struct gp_noise_transport *t)
{
	if (!t)
		return;
	gp_secmem_free(t); /* wipes it */
}

int gp_noise_transport_encrypt(struct gp_noise_transport *t,
			       const uint8_t *ad, size_t adlen,
			       const uint8_t *plaintext, size_t len,
			       uint8_t *out, size_t cap, size_t *ret_len)
{
	if (len > GP_NOISE_MAX_PLAINTEXT)
		return -EMSGSIZE;
	if (cap < len + TAGLEN)
		return -ENOBUFS;
	if (t->send.n == NONCE_MAX)
		return -EOVERFLOW;
	aead_encrypt(t->send.k, t->send.n, ad, adlen, plaintext, len, out);
	t->send.n++;
	if (t->rekey_interval && t->send.n % t->rekey_interval == 0)
		cipher_rekey(&t->send);
	*ret_len = len + TAGLEN;
	return 0;
}

/* Takes count nonces of c (a direction of a transport) for a span. */
static int take_span(struct cipher *c, uint64_t interval, uint64_t count,
		     struct gp_noise_span *ret)
{
	uint64_t first = c->n;

	if (count == 0 || count > NONCE_MAX - first)
		return -EOVERFLOW;
	/* The rekey follows the message with nonce k * interval - 1: only
	 * the last nonce of the run may be one, so no multiple of the
	 * interval may lie in (first, first + count - 1]. */
	if (interval && (first + count - 1) / interval != first / interval)
		return -EAGAIN;
	memcpy(ret->key, c->k, KEYLEN);
	ret->nonce = first;
	ret->count = count;
	c->n = first + count;
	if (interval && c->n % interval == 0)
		cipher_rekey(c);
	return 0;
}

int gp_noise_transport_take_send(struct gp_noise_transport *t, uint64_t count,
				 struct gp_noise_span *ret)
{
	return take_span(&t->send, t->rekey_interval, count, ret);
}

int gp_noise_transport_take_recv(struct gp_noise_transport *t, uint64_t count,
				 struct gp_noise_span *ret)
{
	return take_span(&t->recv, t->rekey_interval, count, ret);
}

int gp_noise_span_encrypt(const struct gp_noise_span *span, uint64_t i,
			  const uint8_t *plaintext, size_t len, uint8_t *out)
{
	if (len > GP_NOISE_MAX_PLAINTEXT)
		return -EMSGSIZE;
	if (i >= span->count)
		return -EINVAL;
	aead_encrypt(span->key, span->nonce + i, NULL, 0, plaintext, len, out);
	return 0;
}

int gp_noise_span_decrypt(const struct gp_noise_span *span, uint64_t i,
			  const uint8_t *msg, size_t len, uint8_t *out)
{
	if (len > GP_NOISE_MAX_MSG)
		return -EMSGSIZE;
	if (len < TAGLEN)
		return -EBADMSG;
	if (i >= span->count)
		return -EINVAL;
	return aead_decrypt(span->key, span->nonce + i, NULL, 0, msg, len, out);
}

int gp_noise_transport_decrypt(struct gp_noise_transport *t,
			       const uint8_t *ad, size_t adlen,
			       const uint8_t *msg, size_t len,
			       uint8_t *out, size_t cap, size_t *ret_len)
{
	int r;

	if (len > GP_NOISE_MAX_MSG)
		return -EMSGSIZE;
	if (len < TAGLEN)
		return -EBADMSG;
	if (cap < len - TAGLEN)
		return -ENOBUFS;
	if (t->recv.n == NONCE_MAX)
		return -EOVERFLOW;
	r = aead_decrypt(t->recv.k, t->recv.n, ad, adlen, msg, len, out);
	if (r < 0)
		return r;
	t->recv.n++;
	if (t->rekey_interval && t->recv.n % t->rekey_interval == 0)
		cipher_rekey(&t->recv);
	*ret_len = len - TAGLEN;
	return 0;
}

void gp_noise_transport_rekey_send(struct gp_noise_transport *t)
{
	cipher_rekey(&t->send);
}

void gp_noise_transport_rekey_recv(struct gp_noise_transport *t)
{
	cipher_rekey(&t->recv);
}

void gp_noise_transport_set_rekey_interval(struct gp_noise_transport *t,
					   uint64_t interval)
{
	t->rekey_interval = interval;
}

uint64_t gp_noise_transport_send_nonce(const struct gp_noise_transport *t)
{
	return t->send.n;
}

uint64_t gp_noise_transport_recv_nonce(const struct gp_noise_transport *t)
{
	return t->recv.n;
}

void gp_noise_transport_set_nonces(struct gp_noise_transport *t,
				   uint64_t send_nonce, uint64_t recv_nonce)
{
	t->send.n = send_nonce;
	t->recv.n = recv_nonce;
}

void gp_noise_transport_handshake_hash(const struct gp_noise_transport *t,
				       uint8_t ret_hash[GP_NOISE_HASH_SIZE])
{
	memcpy(ret_hash, t->h, HASHLEN);
}
