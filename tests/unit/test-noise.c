/* Unit tests of proto/noise.c: the published cacophony vectors (argv[1]),
 * the vector runner on vectors without handshake_hash (argv[2], argv[3]),
 * then what vectors do not cover: tampering, replays, wrong keys, low-order
 * points, rekeying, the 65535-byte limit and nonce exhaustion. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "noise-vectors.h"
#include "noise.h"
#include "test.h"

static const uint8_t prologue[] = "gradpool test";

struct pair {
	struct gp_noise_keypair *is, *rs;
	struct gp_noise_handshake *i, *r;
	struct gp_noise_transport *ti, *tr;
};

static void pair_create(struct pair *p, enum gp_noise_pattern pattern)
{
	memset(p, 0, sizeof(*p));
	ASSERT_OK(gp_noise_keypair_create(NULL, &p->is));
	ASSERT_OK(gp_noise_keypair_create(NULL, &p->rs));
	ASSERT_OK(gp_noise_handshake_create(pattern, true, prologue,
					    sizeof(prologue), p->is,
					    p->rs->pub, &p->i));
	ASSERT_OK(gp_noise_handshake_create(pattern, false, prologue,
					    sizeof(prologue), p->rs, NULL,
					    &p->r));
}

static void pair_destroy(struct pair *p)
{
	gp_noise_transport_destroy(p->ti);
	gp_noise_transport_destroy(p->tr);
	gp_noise_handshake_destroy(p->i);
	gp_noise_handshake_destroy(p->r);
	gp_noise_keypair_destroy(p->is);
	gp_noise_keypair_destroy(p->rs);
}

/* Writes on from, reads on to; the payload must come through. */
static void step(struct gp_noise_handshake *from, struct gp_noise_handshake *to,
		 const char *payload)
{
	uint8_t msg[512], got[512];
	size_t len, glen, plen = strlen(payload);

	ASSERT_OK(gp_noise_handshake_write_message(
		from, (const uint8_t *)payload, plen, msg, sizeof(msg), &len));
	ASSERT_EQ(len, gp_noise_handshake_message_size(to, plen));
	ASSERT_OK(gp_noise_handshake_read_message(to, msg, len, got,
						  sizeof(got), &glen));
	ASSERT_EQ(glen, plen);
	ASSERT_MEM_EQ(got, payload, plen);
}

static void pair_split(struct pair *p)
{
	uint8_t h1[GP_NOISE_HASH_SIZE], h2[GP_NOISE_HASH_SIZE];

	ASSERT(gp_noise_handshake_is_done(p->i));
	ASSERT(gp_noise_handshake_is_done(p->r));
	ASSERT_OK(gp_noise_handshake_hash(p->i, h1));
	ASSERT_OK(gp_noise_handshake_hash(p->r, h2));
	ASSERT_MEM_EQ(h1, h2, sizeof(h1));
	ASSERT_OK(gp_noise_handshake_split(p->i, &p->ti));
	ASSERT_OK(gp_noise_handshake_split(p->r, &p->tr));
	ASSERT_EQ(gp_noise_handshake_split(p->r, &p->tr), -EINVAL);
}

/* Sends len bytes from a to b; returns decrypt's result. */
static int transfer(struct gp_noise_transport *a, struct gp_noise_transport *b,
		    size_t len)
{
	static uint8_t pt[GP_NOISE_MAX_MSG], ct[GP_NOISE_MAX_MSG],
		out[GP_NOISE_MAX_MSG];
	size_t clen, olen;
	int r;

	for (size_t k = 0; k < len; k++)
		pt[k] = (uint8_t)(k * 7 + len);
	ASSERT_OK(gp_noise_transport_encrypt(a, (const uint8_t *)"ad", 2, pt,
					     len, ct, sizeof(ct), &clen));
	ASSERT_EQ(clen, len + GP_NOISE_TAG_SIZE);
	r = gp_noise_transport_decrypt(b, (const uint8_t *)"ad", 2, ct, clen,
				       out, sizeof(out), &olen);
	if (r == 0) {
		ASSERT_EQ(olen, len);
		ASSERT_MEM_EQ(out, pt, len);
	}
	return r;
}

static void test_vectors(const char *path)
{
	struct gp_noise_vectors_result res;

	ASSERT_OK(gp_noise_vectors_run(path, stderr, 1, &res));
	fprintf(stderr, "vectors: %d passed, %d failed, %d skipped\n",
		res.passed, res.failed, res.skipped);
	ASSERT_EQ(res.failed, 0);
	/* The file holds NK, NKpsk2, IK, IKpsk1, IKpsk2, XX, XXpsk3. */
	ASSERT_GE(res.passed, 7);
	ASSERT_EQ(res.unhashed, 0);
}

/* Vectors without "handshake_hash" (as snow's files are) pass when every
 * message matches byte for byte (tests/data/noise-no-hash.json: IK and
 * IKpsk2), and still fail on one wrong message byte, in a handshake or a
 * transport message; a wrong hash, where there is one, fails too
 * (tests/data/noise-bad.json). */
static void test_vectors_without_hash(const char *good, const char *bad)
{
	struct gp_noise_vectors_result res;

	ASSERT_OK(gp_noise_vectors_run(good, stderr, 1, &res));
	ASSERT_EQ(res.failed, 0);
	ASSERT_EQ(res.passed, 2);
	ASSERT_EQ(res.unhashed, 2);
	ASSERT_EQ(res.skipped, 0);

	ASSERT_OK(gp_noise_vectors_run(bad, NULL, 0, &res));
	ASSERT_EQ(res.failed, 3);
	ASSERT_EQ(res.passed, 0);
}

static void test_names(void)
{
	enum gp_noise_pattern p;

	ASSERT_OK(gp_noise_pattern_from_name(
		"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2b", &p));
	ASSERT_EQ(p, GP_NOISE_IKPSK2);
	ASSERT_STR_EQ(gp_noise_pattern_name(GP_NOISE_IK),
		      "Noise_IK_25519_ChaChaPoly_BLAKE2b");
	ASSERT_EQ(gp_noise_pattern_from_name(
			  "Noise_IK_448_ChaChaPoly_BLAKE2b", &p),
		  -ENOENT);
	ASSERT(gp_noise_pattern_name((enum gp_noise_pattern)99) == NULL);
}

static void test_create_errors(void)
{
	struct gp_noise_keypair *kp;
	struct gp_noise_handshake *hs = NULL;

	ASSERT_OK(gp_noise_keypair_create(NULL, &kp));
	/* IK initiator without the responder's key, responder without s. */
	ASSERT_EQ(gp_noise_handshake_create(GP_NOISE_IK, true, NULL, 0, kp,
					    NULL, &hs),
		  -EINVAL);
	ASSERT_EQ(gp_noise_handshake_create(GP_NOISE_IK, false, NULL, 0, NULL,
					    NULL, &hs),
		  -EINVAL);
	ASSERT(hs == NULL);
	ASSERT_OK(gp_noise_handshake_create(GP_NOISE_IK, false, NULL, 0, kp,
					    NULL, &hs));
	/* No psk in IK; no writing on the responder's turn to read. */
	ASSERT_EQ(gp_noise_handshake_set_psk(hs, kp->pub), -EINVAL);
	ASSERT(!gp_noise_handshake_is_my_turn(hs));
	gp_noise_handshake_destroy(hs);
	gp_noise_handshake_destroy(NULL);
	gp_noise_keypair_destroy(kp);
	gp_noise_keypair_destroy(NULL);
	gp_noise_transport_destroy(NULL);
}

static void test_ik_roundtrip(void)
{
	struct pair p;
	uint8_t h[GP_NOISE_HASH_SIZE], th[GP_NOISE_HASH_SIZE];

	pair_create(&p, GP_NOISE_IK);
	ASSERT(gp_noise_handshake_remote_static(p.r) == NULL);
	ASSERT_EQ(gp_noise_handshake_message_size(p.i, 10),
		  GP_NOISE_IK_MSG1_OVERHEAD + 10);
	ASSERT_EQ(gp_noise_handshake_hash(p.i, h), -EINVAL);
	step(p.i, p.r, "hello, coordinator");
	ASSERT_MEM_EQ(gp_noise_handshake_remote_static(p.r), p.is->pub, 32);
	ASSERT_EQ(gp_noise_handshake_message_size(p.r, 0),
		  GP_NOISE_IK_MSG2_OVERHEAD);
	step(p.r, p.i, "welcome");
	pair_split(&p);
	ASSERT_OK(gp_noise_handshake_hash(p.i, h));
	gp_noise_transport_handshake_hash(p.ti, th);
	ASSERT_MEM_EQ(h, th, sizeof(h));
	for (int k = 0; k < 5; k++) {
		ASSERT_OK(transfer(p.ti, p.tr, 100 + k));
		ASSERT_OK(transfer(p.tr, p.ti, 0));
	}
	ASSERT_UINT_EQ(gp_noise_transport_send_nonce(p.ti), 5);
	ASSERT_UINT_EQ(gp_noise_transport_recv_nonce(p.ti), 5);
	{
		/* In place, as the header allows. */
		uint8_t buf[64], orig[48];
		size_t len;

		for (size_t k = 0; k < sizeof(orig); k++)
			orig[k] = (uint8_t)(k ^ 0x5a);
		memcpy(buf, orig, sizeof(orig));
		ASSERT_OK(gp_noise_transport_encrypt(p.tr, NULL, 0, buf,
						     sizeof(orig), buf,
						     sizeof(buf), &len));
		ASSERT(memcmp(buf, orig, sizeof(orig)) != 0);
		ASSERT_OK(gp_noise_transport_decrypt(p.ti, NULL, 0, buf, len,
						     buf, sizeof(buf), &len));
		ASSERT_EQ(len, sizeof(orig));
		ASSERT_MEM_EQ(buf, orig, sizeof(orig));
	}
	pair_destroy(&p);
}

static void test_xx_learns_keys(void)
{
	struct pair p;

	memset(&p, 0, sizeof(p));
	ASSERT_OK(gp_noise_keypair_create(NULL, &p.is));
	ASSERT_OK(gp_noise_keypair_create(NULL, &p.rs));
	ASSERT_OK(gp_noise_handshake_create(GP_NOISE_XX, true, NULL, 0, p.is,
					    NULL, &p.i));
	ASSERT_OK(gp_noise_handshake_create(GP_NOISE_XX, false, NULL, 0, p.rs,
					    NULL, &p.r));
	step(p.i, p.r, "");
	step(p.r, p.i, "two");
	ASSERT_MEM_EQ(gp_noise_handshake_remote_static(p.i), p.rs->pub, 32);
	step(p.i, p.r, "three");
	ASSERT_MEM_EQ(gp_noise_handshake_remote_static(p.r), p.is->pub, 32);
	pair_split(&p);
	ASSERT_OK(transfer(p.tr, p.ti, 33));
	pair_destroy(&p);
}

/* Flipping any bit of message 1 or 2 kills the reader. */
static void test_tamper(void)
{
	uint8_t msg1[256], msg2[256], got[256];
	size_t len1, len2, glen;
	struct pair p;

	pair_create(&p, GP_NOISE_IK);
	ASSERT_OK(gp_noise_handshake_write_message(
		p.i, (const uint8_t *)"id", 2, msg1, sizeof(msg1), &len1));
	for (size_t pos = 0; pos < len1; pos++) {
		struct gp_noise_handshake *r;

		ASSERT_OK(gp_noise_handshake_create(GP_NOISE_IK, false,
						    prologue, sizeof(prologue),
						    p.rs, NULL, &r));
		msg1[pos] ^= 0x01;
		ASSERT_EQ(gp_noise_handshake_read_message(
				  r, msg1, len1, got, sizeof(got), &glen),
			  -EBADMSG);
		msg1[pos] ^= 0x01;
		ASSERT(gp_noise_handshake_is_failed(r));
		ASSERT(!gp_noise_handshake_is_my_turn(r));
		/* Dead for good, even for the genuine message. */
		ASSERT_EQ(gp_noise_handshake_read_message(
				  r, msg1, len1, got, sizeof(got), &glen),
			  -EBADMSG);
		ASSERT_EQ(gp_noise_handshake_write_message(
				  r, NULL, 0, msg2, sizeof(msg2), &len2),
			  -EINVAL);
		gp_noise_handshake_destroy(r);
	}
	ASSERT_OK(gp_noise_handshake_read_message(p.r, msg1, len1, got,
						  sizeof(got), &glen));
	ASSERT_OK(gp_noise_handshake_write_message(p.r, NULL, 0, msg2,
						   sizeof(msg2), &len2));
	msg2[len2 - 1] ^= 0x80;
	ASSERT_EQ(gp_noise_handshake_read_message(p.i, msg2, len2, got,
						  sizeof(got), &glen),
		  -EBADMSG);
	ASSERT(gp_noise_handshake_is_failed(p.i));
	ASSERT_EQ(gp_noise_handshake_split(p.i, &p.ti), -EINVAL);
	pair_destroy(&p);

	/* A tampered transport message fails and does not move the nonce;
	 * the genuine one still decrypts afterwards. */
	pair_create(&p, GP_NOISE_IK);
	step(p.i, p.r, "");
	step(p.r, p.i, "");
	pair_split(&p);
	{
		uint8_t ct[64], out[64];
		size_t clen, olen;

		ASSERT_OK(gp_noise_transport_encrypt(p.ti, NULL, 0,
						     (const uint8_t *)"x", 1,
						     ct, sizeof(ct), &clen));
		ct[0] ^= 1;
		ASSERT_EQ(gp_noise_transport_decrypt(p.tr, NULL, 0, ct, clen,
						     out, sizeof(out), &olen),
			  -EBADMSG);
		ct[0] ^= 1;
		/* Different associated data fails too. */
		ASSERT_EQ(gp_noise_transport_decrypt(p.tr,
						     (const uint8_t *)"a", 1,
						     ct, clen, out,
						     sizeof(out), &olen),
			  -EBADMSG);
		ASSERT_UINT_EQ(gp_noise_transport_recv_nonce(p.tr), 0);
		ASSERT_OK(gp_noise_transport_decrypt(p.tr, NULL, 0, ct, clen,
						     out, sizeof(out), &olen));
		/* Replaying a transport message fails: the nonce moved. */
		ASSERT_EQ(gp_noise_transport_decrypt(p.tr, NULL, 0, ct, clen,
						     out, sizeof(out), &olen),
			  -EBADMSG);
	}
	pair_destroy(&p);
}

/* The same responder state reading message 1 twice, or any message after
 * the handshake, fails and stays failed. */
static void test_replay(void)
{
	uint8_t msg1[256], msg2[256], got[256];
	size_t len1, len2, glen;
	struct pair p;

	pair_create(&p, GP_NOISE_IK);
	ASSERT_OK(gp_noise_handshake_write_message(
		p.i, (const uint8_t *)"id", 2, msg1, sizeof(msg1), &len1));
	ASSERT_OK(gp_noise_handshake_read_message(p.r, msg1, len1, got,
						  sizeof(got), &glen));
	ASSERT(gp_noise_handshake_is_my_turn(p.r));
	ASSERT_EQ(gp_noise_handshake_read_message(p.r, msg1, len1, got,
						  sizeof(got), &glen),
		  -EBADMSG);
	ASSERT(gp_noise_handshake_is_failed(p.r));
	ASSERT_EQ(gp_noise_handshake_write_message(p.r, NULL, 0, msg2,
						   sizeof(msg2), &len2),
		  -EINVAL);
	pair_destroy(&p);

	/* After completion: message 2 again to the initiator fails. */
	pair_create(&p, GP_NOISE_IK);
	ASSERT_OK(gp_noise_handshake_write_message(p.i, NULL, 0, msg1,
						   sizeof(msg1), &len1));
	ASSERT_OK(gp_noise_handshake_read_message(p.r, msg1, len1, got,
						  sizeof(got), &glen));
	ASSERT_OK(gp_noise_handshake_write_message(p.r, NULL, 0, msg2,
						   sizeof(msg2), &len2));
	ASSERT_OK(gp_noise_handshake_read_message(p.i, msg2, len2, got,
						  sizeof(got), &glen));
	ASSERT(gp_noise_handshake_is_done(p.i));
	ASSERT_EQ(gp_noise_handshake_read_message(p.i, msg2, len2, got,
						  sizeof(got), &glen),
		  -EBADMSG);
	ASSERT(!gp_noise_handshake_is_done(p.i));
	pair_destroy(&p);
}

static void test_wrong_keys(void)
{
	struct gp_noise_keypair *other;
	struct gp_noise_handshake *i, *r;
	uint8_t msg[256], got[256], psk[32], psk2[32];
	size_t len, glen;
	struct pair p;

	/* The initiator pinned another responder key. */
	pair_create(&p, GP_NOISE_IK);
	ASSERT_OK(gp_noise_keypair_create(NULL, &other));
	ASSERT_OK(gp_noise_handshake_create(GP_NOISE_IK, true, prologue,
					    sizeof(prologue), p.is, other->pub,
					    &i));
	ASSERT_OK(gp_noise_handshake_write_message(i, NULL, 0, msg,
						   sizeof(msg), &len));
	ASSERT_EQ(gp_noise_handshake_read_message(p.r, msg, len, got,
						  sizeof(got), &glen),
		  -EBADMSG);
	gp_noise_handshake_destroy(i);
	gp_noise_keypair_destroy(other);
	pair_destroy(&p);

	/* A different prologue. */
	pair_create(&p, GP_NOISE_IK);
	ASSERT_OK(gp_noise_handshake_create(GP_NOISE_IK, false, NULL, 0, p.rs,
					    NULL, &r));
	ASSERT_OK(gp_noise_handshake_write_message(p.i, NULL, 0, msg,
						   sizeof(msg), &len));
	ASSERT_EQ(gp_noise_handshake_read_message(r, msg, len, got,
						  sizeof(got), &glen),
		  -EBADMSG);
	gp_noise_handshake_destroy(r);
	pair_destroy(&p);

	/* IKpsk2 with the responder picking the psk after message 1: a wrong
	 * psk fails at the initiator, the right one completes. */
	memset(psk, 0x11, sizeof(psk));
	memset(psk2, 0x22, sizeof(psk2));
	for (int right = 0; right < 2; right++) {
		pair_create(&p, GP_NOISE_IKPSK2);
		ASSERT_OK(gp_noise_handshake_set_psk(p.i, psk));
		ASSERT_OK(gp_noise_handshake_write_message(
			p.i, (const uint8_t *)"token-id", 8, msg, sizeof(msg),
			&len));
		ASSERT_OK(gp_noise_handshake_read_message(
			p.r, msg, len, got, sizeof(got), &glen));
		ASSERT_EQ(glen, 8);
		ASSERT_MEM_EQ(got, "token-id", 8);
		/* Without a psk the write is refused and changes nothing. */
		ASSERT_EQ(gp_noise_handshake_write_message(
				  p.r, NULL, 0, msg, sizeof(msg), &len),
			  -ENOKEY);
		ASSERT_OK(gp_noise_handshake_set_psk(p.r, right ? psk : psk2));
		ASSERT_OK(gp_noise_handshake_write_message(
			p.r, NULL, 0, msg, sizeof(msg), &len));
		ASSERT_EQ(gp_noise_handshake_set_psk(p.r, psk), -EINVAL);
		ASSERT_EQ(gp_noise_handshake_read_message(
				  p.i, msg, len, got, sizeof(got), &glen),
			  right ? 0 : -EBADMSG);
		pair_destroy(&p);
	}
}

/* An all-zero (low-order) ephemeral key makes the DH output zero. */
static void test_low_order(void)
{
	uint8_t msg[256], got[256];
	size_t len, glen;
	struct pair p;

	pair_create(&p, GP_NOISE_IK);
	ASSERT_OK(gp_noise_handshake_write_message(p.i, NULL, 0, msg,
						   sizeof(msg), &len));
	memset(msg, 0, 32);
	ASSERT_EQ(gp_noise_handshake_read_message(p.r, msg, len, got,
						  sizeof(got), &glen),
		  -EBADMSG);
	pair_destroy(&p);
}

/* Short, long and undersized-buffer cases. */
static void test_sizes(void)
{
	static uint8_t big[GP_NOISE_MAX_MSG + 64], out[GP_NOISE_MAX_MSG + 64];
	uint8_t got[256];
	size_t len, glen;
	struct pair p;

	pair_create(&p, GP_NOISE_IK);
	/* Handshake payload that would exceed 65535 bytes. */
	ASSERT_EQ(gp_noise_handshake_message_size(
			  p.i, GP_NOISE_MAX_MSG - GP_NOISE_IK_MSG1_OVERHEAD + 1),
		  -EMSGSIZE);
	ASSERT_EQ(gp_noise_handshake_write_message(
			  p.i, big,
			  GP_NOISE_MAX_MSG - GP_NOISE_IK_MSG1_OVERHEAD + 1, out,
			  sizeof(out), &len),
		  -EMSGSIZE);
	/* Too small an output buffer leaves the state usable. */
	ASSERT_EQ(gp_noise_handshake_write_message(p.i, big, 10, out, 100,
						   &len),
		  -ENOBUFS);
	ASSERT_OK(gp_noise_handshake_write_message(
		p.i, big, GP_NOISE_MAX_MSG - GP_NOISE_IK_MSG1_OVERHEAD, out,
		sizeof(out), &len));
	ASSERT_EQ(len, GP_NOISE_MAX_MSG);
	/* Too small a payload buffer: refused, state untouched. */
	ASSERT_EQ(gp_noise_handshake_read_message(p.r, out, len, got,
						  sizeof(got), &glen),
		  -ENOBUFS);
	ASSERT(!gp_noise_handshake_is_failed(p.r));
	ASSERT_OK(gp_noise_handshake_read_message(p.r, out, len, big,
						  sizeof(big), &glen));
	ASSERT_EQ(glen, GP_NOISE_MAX_MSG - GP_NOISE_IK_MSG1_OVERHEAD);
	pair_destroy(&p);

	/* A message shorter than its fixed part, or longer than 65535. */
	pair_create(&p, GP_NOISE_IK);
	ASSERT_OK(gp_noise_handshake_write_message(p.i, NULL, 0, out,
						   sizeof(out), &len));
	ASSERT_EQ(gp_noise_handshake_read_message(p.r, out, len - 1, got,
						  sizeof(got), &glen),
		  -EBADMSG);
	pair_destroy(&p);
	pair_create(&p, GP_NOISE_IK);
	ASSERT_EQ(gp_noise_handshake_read_message(p.r, big,
						  GP_NOISE_MAX_MSG + 1, out,
						  sizeof(out), &glen),
		  -EBADMSG);
	pair_destroy(&p);

	/* Transport: 65519 plaintext bytes fill a 65535-byte message. */
	pair_create(&p, GP_NOISE_IK);
	step(p.i, p.r, "");
	step(p.r, p.i, "");
	pair_split(&p);
	ASSERT_OK(transfer(p.ti, p.tr, GP_NOISE_MAX_PLAINTEXT));
	ASSERT_EQ(gp_noise_transport_encrypt(p.ti, NULL, 0, big,
					     GP_NOISE_MAX_PLAINTEXT + 1, out,
					     sizeof(out), &len),
		  -EMSGSIZE);
	ASSERT_EQ(gp_noise_transport_encrypt(p.ti, NULL, 0, big, 10, out, 25,
					     &len),
		  -ENOBUFS);
	ASSERT_EQ(gp_noise_transport_decrypt(p.tr, NULL, 0, big,
					     GP_NOISE_MAX_MSG + 1, out,
					     sizeof(out), &len),
		  -EMSGSIZE);
	ASSERT_EQ(gp_noise_transport_decrypt(p.tr, NULL, 0, big,
					     GP_NOISE_TAG_SIZE - 1, out,
					     sizeof(out), &len),
		  -EBADMSG);
	/* Nothing above moved a nonce: the channel still works. */
	ASSERT_OK(transfer(p.ti, p.tr, 1));
	pair_destroy(&p);
}

static void test_rekey(void)
{
	struct pair p;

	pair_create(&p, GP_NOISE_IK);
	step(p.i, p.r, "");
	step(p.r, p.i, "");
	pair_split(&p);
	ASSERT_OK(transfer(p.ti, p.tr, 20));
	/* Only the sender rekeyed: the key changed, so decryption fails
	 * (without consuming the nonce). */
	gp_noise_transport_rekey_send(p.ti);
	ASSERT_EQ(transfer(p.ti, p.tr, 20), -EBADMSG);
	gp_noise_transport_rekey_recv(p.tr);
	/* The receiver's nonce is one behind now; resynchronise both. */
	gp_noise_transport_set_nonces(p.tr, gp_noise_transport_send_nonce(p.tr),
				      gp_noise_transport_send_nonce(p.ti));
	ASSERT_OK(transfer(p.ti, p.tr, 20));
	/* The other direction is unaffected. */
	ASSERT_OK(transfer(p.tr, p.ti, 20));
	pair_destroy(&p);

	/* The automatic schedule: same interval on both sides works across
	 * several rekeys, a side without it falls out after interval. */
	pair_create(&p, GP_NOISE_IK);
	step(p.i, p.r, "");
	step(p.r, p.i, "");
	pair_split(&p);
	gp_noise_transport_set_rekey_interval(p.ti, 3);
	gp_noise_transport_set_rekey_interval(p.tr, 3);
	for (int k = 0; k < 10; k++) {
		ASSERT_OK(transfer(p.ti, p.tr, 5));
		ASSERT_OK(transfer(p.tr, p.ti, 5));
	}
	gp_noise_transport_set_rekey_interval(p.tr, 0);
	/* Nonces 10 and 11 still use the shared key; the sender rekeys after
	 * nonce 11 (its 12th message), the receiver no longer does. */
	ASSERT_OK(transfer(p.ti, p.tr, 5));
	ASSERT_OK(transfer(p.ti, p.tr, 5));
	ASSERT_EQ(transfer(p.ti, p.tr, 5), -EBADMSG);
	pair_destroy(&p);
}

/* Runs of nonces taken at once and sealed later, in any order
 * (gp_noise_transport_take_send, gp_noise_span_encrypt): the receiver
 * opens them in order as if they had been sealed one by one, across the
 * rekey schedule; a run that would cross a rekey is refused, one that ends
 * on it rekeys; exhaustion and an index out of the run are refused. */
static void test_send_span(void)
{
	static uint8_t ct[8][64];
	uint8_t pt[40], out[64];
	struct gp_noise_span span;
	struct pair p;
	unsigned taken = 0, refused = 0, ends_on_rekey = 0;
	size_t olen;

	pair_create(&p, GP_NOISE_IK);
	step(p.i, p.r, "");
	step(p.r, p.i, "");
	pair_split(&p);
	gp_noise_transport_set_rekey_interval(p.ti, 5);
	gp_noise_transport_set_rekey_interval(p.tr, 5);
	for (unsigned k = 0; k < 60; k++) {
		uint64_t count = 1 + (k * 7) % 6, n0 =
			gp_noise_transport_send_nonce(p.ti);
		int r = gp_noise_transport_take_send(p.ti, count, &span);

		if ((n0 + count - 1) / 5 != n0 / 5) {
			ASSERT_EQ(r, -EAGAIN);
			ASSERT_UINT_EQ(gp_noise_transport_send_nonce(p.ti), n0);
			refused++;
			ASSERT_OK(transfer(p.ti, p.tr, 20));
			continue;
		}
		ASSERT_OK(r);
		taken++;
		ends_on_rekey += (n0 + count) % 5 == 0;
		ASSERT_UINT_EQ(span.nonce, n0);
		ASSERT_UINT_EQ(gp_noise_transport_send_nonce(p.ti), n0 + count);
		ASSERT_EQ(gp_noise_span_encrypt(&span, count, pt, 8, ct[0]),
			  -EINVAL);
		/* Sealed last to first: the order of sealing is free. */
		for (uint64_t i = count; i-- > 0;) {
			memset(pt, (int)(n0 + i), sizeof(pt));
			ASSERT_OK(gp_noise_span_encrypt(&span, i, pt, sizeof(pt),
							ct[i]));
		}
		for (uint64_t i = 0; i < count; i++) {
			ASSERT_OK(gp_noise_transport_decrypt(
				p.tr, NULL, 0, ct[i],
				sizeof(pt) + GP_NOISE_TAG_SIZE, out,
				sizeof(out), &olen));
			ASSERT_EQ(olen, sizeof(pt));
			memset(pt, (int)(n0 + i), sizeof(pt));
			ASSERT_MEM_EQ(out, pt, sizeof(pt));
		}
		/* And single messages after the run still open. */
		ASSERT_OK(transfer(p.ti, p.tr, 12));
	}
	ASSERT_GT(taken, 10);
	ASSERT_GT(refused, 5);
	ASSERT_GT(ends_on_rekey, 2);
	memset(&span, 0, sizeof(span));
	pair_destroy(&p);

	pair_create(&p, GP_NOISE_IK);
	step(p.i, p.r, "");
	step(p.r, p.i, "");
	pair_split(&p);
	gp_noise_transport_set_nonces(p.ti, UINT64_MAX - 3, 0);
	ASSERT_EQ(gp_noise_transport_take_send(p.ti, 4, &span), -EOVERFLOW);
	ASSERT_EQ(gp_noise_transport_take_send(p.ti, 0, &span), -EOVERFLOW);
	ASSERT_OK(gp_noise_transport_take_send(p.ti, 3, &span));
	ASSERT_UINT_EQ(gp_noise_transport_send_nonce(p.ti), UINT64_MAX);
	ASSERT_EQ(gp_noise_transport_take_send(p.ti, 1, &span), -EOVERFLOW);
	ASSERT_EQ(gp_noise_span_encrypt(&span, 0, pt,
					GP_NOISE_MAX_PLAINTEXT + 1, ct[0]),
		  -EMSGSIZE);
	memset(&span, 0, sizeof(span));
	pair_destroy(&p);
}

/* Runs of receive nonces taken at once and opened later, in any order
 * (gp_noise_transport_take_recv, gp_noise_span_decrypt): messages sealed
 * one by one open as they would have in order, across the rekey schedule;
 * a run that would cross a rekey is refused and the messages open one by
 * one; a changed byte does not authenticate; exhaustion, an index out of
 * the run and sizes out of range are refused. */
static void test_recv_span(void)
{
	static uint8_t ct[8][64];
	uint8_t pt[40], out[64];
	struct gp_noise_span span;
	struct pair p;
	unsigned taken = 0, refused = 0;
	size_t clen, olen;

	pair_create(&p, GP_NOISE_IK);
	step(p.i, p.r, "");
	step(p.r, p.i, "");
	pair_split(&p);
	gp_noise_transport_set_rekey_interval(p.ti, 5);
	gp_noise_transport_set_rekey_interval(p.tr, 5);
	for (unsigned k = 0; k < 60; k++) {
		uint64_t count = 1 + (k * 5) % 7, n0 =
			gp_noise_transport_recv_nonce(p.tr);
		int r;

		for (uint64_t i = 0; i < count; i++) {
			memset(pt, (int)(n0 + i), sizeof(pt));
			ASSERT_OK(gp_noise_transport_encrypt(
				p.ti, NULL, 0, pt, sizeof(pt), ct[i],
				sizeof(ct[i]), &clen));
		}
		r = gp_noise_transport_take_recv(p.tr, count, &span);
		if ((n0 + count - 1) / 5 != n0 / 5) {
			ASSERT_EQ(r, -EAGAIN);
			ASSERT_UINT_EQ(gp_noise_transport_recv_nonce(p.tr), n0);
			refused++;
			for (uint64_t i = 0; i < count; i++)
				ASSERT_OK(gp_noise_transport_decrypt(
					p.tr, NULL, 0, ct[i], clen, out,
					sizeof(out), &olen));
			continue;
		}
		ASSERT_OK(r);
		taken++;
		ASSERT_UINT_EQ(span.nonce, n0);
		ASSERT_UINT_EQ(gp_noise_transport_recv_nonce(p.tr), n0 + count);
		ASSERT_EQ(gp_noise_span_decrypt(&span, count, ct[0], clen, out),
			  -EINVAL);
		/* Opened last to first, one of them with a byte changed
		 * first (it does not open, and opens once mended). */
		for (uint64_t i = count; i-- > 0;) {
			if (i == count / 2) {
				ct[i][3] ^= 0x40;
				ASSERT_EQ(gp_noise_span_decrypt(&span, i, ct[i],
								clen, out),
					  -EBADMSG);
				ct[i][3] ^= 0x40;
			}
			ASSERT_OK(gp_noise_span_decrypt(&span, i, ct[i], clen,
							out));
			memset(pt, (int)(n0 + i), sizeof(pt));
			ASSERT_MEM_EQ(out, pt, sizeof(pt));
			/* Its own nonce only. */
			if (count > 1)
				ASSERT_EQ(gp_noise_span_decrypt(
						  &span, (i + 1) % count, ct[i],
						  clen, out),
					  -EBADMSG);
		}
		/* And single messages after the run still open. */
		ASSERT_OK(transfer(p.ti, p.tr, 12));
	}
	ASSERT_GT(taken, 10);
	ASSERT_GT(refused, 5);
	ASSERT_EQ(gp_noise_span_decrypt(&span, 0, ct[0], GP_NOISE_TAG_SIZE - 1,
					out),
		  -EBADMSG);
	ASSERT_EQ(gp_noise_span_decrypt(&span, 0, ct[0], GP_NOISE_MAX_MSG + 1,
					out),
		  -EMSGSIZE);
	memset(&span, 0, sizeof(span));
	pair_destroy(&p);

	pair_create(&p, GP_NOISE_IK);
	step(p.i, p.r, "");
	step(p.r, p.i, "");
	pair_split(&p);
	gp_noise_transport_set_nonces(p.tr, 0, UINT64_MAX - 3);
	ASSERT_EQ(gp_noise_transport_take_recv(p.tr, 4, &span), -EOVERFLOW);
	ASSERT_EQ(gp_noise_transport_take_recv(p.tr, 0, &span), -EOVERFLOW);
	ASSERT_OK(gp_noise_transport_take_recv(p.tr, 3, &span));
	ASSERT_UINT_EQ(gp_noise_transport_recv_nonce(p.tr), UINT64_MAX);
	ASSERT_EQ(gp_noise_transport_take_recv(p.tr, 1, &span), -EOVERFLOW);
	memset(&span, 0, sizeof(span));
	pair_destroy(&p);
}

static void test_nonce_exhaustion(void)
{
	struct pair p;
	uint8_t ct[64], out[64];
	size_t clen, olen;

	pair_create(&p, GP_NOISE_IK);
	step(p.i, p.r, "");
	step(p.r, p.i, "");
	pair_split(&p);
	gp_noise_transport_set_nonces(p.ti, UINT64_MAX - 1, 0);
	gp_noise_transport_set_nonces(p.tr, 0, UINT64_MAX - 1);
	ASSERT_OK(transfer(p.ti, p.tr, 8));
	ASSERT_UINT_EQ(gp_noise_transport_send_nonce(p.ti), UINT64_MAX);
	ASSERT_EQ(gp_noise_transport_encrypt(p.ti, NULL, 0, ct, 8, ct,
					     sizeof(ct), &clen),
		  -EOVERFLOW);
	ASSERT_EQ(gp_noise_transport_decrypt(p.tr, NULL, 0, ct, 24, out,
					     sizeof(out), &olen),
		  -EOVERFLOW);
	pair_destroy(&p);
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s VECTORS.json NO-HASH.json BAD.json\n",
			argv[0]);
		return 2;
	}
	ASSERT_OK(gp_noise_init());
	test_vectors(argv[1]);
	test_vectors_without_hash(argv[2], argv[3]);
	test_names();
	test_create_errors();
	test_ik_roundtrip();
	test_xx_learns_keys();
	test_tamper();
	test_replay();
	test_wrong_keys();
	test_low_order();
	test_sizes();
	test_rekey();
	test_send_span();
	test_recv_span();
	test_nonce_exhaustion();
	fprintf(stderr, "noise: all tests passed\n");
	return 0;
}
