/* bench-noise [SECONDS]: times complete Noise handshakes with both sides in
 * this process (create, message 1, message 2, split, destroy; static keys
 * made once, as a coordinator and an agent hold them), for IK and IKpsk2,
 * then transport throughput with 65519-byte messages (encrypt + decrypt).
 * One thread; prints one line per measurement. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "noise.h"

static double clock_s(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now(void)
{
	return clock_s(CLOCK_MONOTONIC);
}

/* CPU time of this process: the rate per CPU second does not depend on how
 * many other programs share the cores. */
static double cpu(void)
{
	return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

static int handshake(enum gp_noise_pattern pattern,
		     const struct gp_noise_keypair *is,
		     const struct gp_noise_keypair *rs, const uint8_t *psk)
{
	static const uint8_t prologue[] = "gradpool bench";
	struct gp_noise_handshake *i = NULL, *r = NULL;
	struct gp_noise_transport *ti = NULL, *tr = NULL;
	uint8_t m1[256], m2[256], p[256];
	size_t l1, l2, pl;
	int e;

	if ((e = gp_noise_handshake_create(pattern, true, prologue,
					   sizeof(prologue), is, rs->pub,
					   &i)) < 0 ||
	    (e = gp_noise_handshake_create(pattern, false, prologue,
					   sizeof(prologue), rs, NULL, &r)) < 0)
		goto out;
	if (psk && (e = gp_noise_handshake_set_psk(i, psk)) < 0)
		goto out;
	if ((e = gp_noise_handshake_write_message(i, (const uint8_t *)"hello",
						  5, m1, sizeof(m1), &l1)) < 0 ||
	    (e = gp_noise_handshake_read_message(r, m1, l1, p, sizeof(p),
						 &pl)) < 0)
		goto out;
	if (psk && (e = gp_noise_handshake_set_psk(r, psk)) < 0)
		goto out;
	if ((e = gp_noise_handshake_write_message(r, NULL, 0, m2, sizeof(m2),
						  &l2)) < 0 ||
	    (e = gp_noise_handshake_read_message(i, m2, l2, p, sizeof(p),
						 &pl)) < 0 ||
	    (e = gp_noise_handshake_split(i, &ti)) < 0 ||
	    (e = gp_noise_handshake_split(r, &tr)) < 0)
		goto out;
out:
	gp_noise_transport_destroy(ti);
	gp_noise_transport_destroy(tr);
	gp_noise_handshake_destroy(i);
	gp_noise_handshake_destroy(r);
	return e;
}

int main(int argc, char **argv)
{
	static uint8_t buf[GP_NOISE_MAX_MSG];
	double secs = argc > 1 ? atof(argv[1]) : 2.0;
	struct gp_noise_keypair *is = NULL, *rs = NULL;
	struct gp_noise_handshake *i = NULL, *r = NULL;
	struct gp_noise_transport *ti = NULL, *tr = NULL;
	uint8_t psk[GP_NOISE_PSK_SIZE], m[256], p[256];
	size_t l, pl;
	int e;

	if (secs <= 0)
		secs = 2.0;
	if (gp_noise_keypair_create(NULL, &is) < 0 ||
	    gp_noise_keypair_create(NULL, &rs) < 0) {
		fprintf(stderr, "bench-noise: cannot create keys\n");
		return 1;
	}
	memset(psk, 0x5a, sizeof(psk));
	for (int k = 0; k < 2; k++) {
		enum gp_noise_pattern pat = k ? GP_NOISE_IKPSK2 : GP_NOISE_IK;
		double t0 = now(), c0 = cpu(), t;
		long n = 0;

		do {
			for (int j = 0; j < 50; j++, n++) {
				e = handshake(pat, is, rs, k ? psk : NULL);
				if (e < 0) {
					fprintf(stderr, "bench-noise: %s\n",
						strerror(-e));
					return 1;
				}
			}
			t = now() - t0;
		} while (t < secs);
		printf("%s: %.0f complete handshakes/s, %.0f per CPU second "
		       "(%ld in %.2f s, both sides, one thread)\n",
		       gp_noise_pattern_name(pat), (double)n / t,
		       (double)n / (cpu() - c0), n, t);
	}

	/* Transport throughput over one established session. */
	e = gp_noise_handshake_create(GP_NOISE_IK, true, NULL, 0, is, rs->pub,
				      &i);
	if (e == 0)
		e = gp_noise_handshake_create(GP_NOISE_IK, false, NULL, 0, rs,
					      NULL, &r);
	if (e == 0)
		e = gp_noise_handshake_write_message(i, NULL, 0, m, sizeof(m),
						     &l);
	if (e == 0)
		e = gp_noise_handshake_read_message(r, m, l, p, sizeof(p), &pl);
	if (e == 0)
		e = gp_noise_handshake_write_message(r, NULL, 0, m, sizeof(m),
						     &l);
	if (e == 0)
		e = gp_noise_handshake_read_message(i, m, l, p, sizeof(p), &pl);
	if (e == 0)
		e = gp_noise_handshake_split(i, &ti);
	if (e == 0)
		e = gp_noise_handshake_split(r, &tr);
	if (e == 0) {
		double t0 = now(), c0 = cpu(), t;
		long n = 0;

		do {
			for (int j = 0; j < 100 && e == 0; j++, n++) {
				e = gp_noise_transport_encrypt(
					ti, NULL, 0, buf,
					GP_NOISE_MAX_PLAINTEXT, buf,
					sizeof(buf), &l);
				if (e == 0)
					e = gp_noise_transport_decrypt(
						tr, NULL, 0, buf, l, buf,
						sizeof(buf), &l);
			}
			t = now() - t0;
		} while (e == 0 && t < secs);
		if (e == 0)
			printf("transport: %.0f MB/s encrypt+decrypt, %.0f MB "
			       "per CPU second (%d-byte messages, in place)\n",
			       (double)n * GP_NOISE_MAX_PLAINTEXT / t / 1e6,
			       (double)n * GP_NOISE_MAX_PLAINTEXT /
				       (cpu() - c0) / 1e6,
			       GP_NOISE_MAX_PLAINTEXT);
	}
	gp_noise_transport_destroy(ti);
	gp_noise_transport_destroy(tr);
	gp_noise_handshake_destroy(i);
	gp_noise_handshake_destroy(r);
	gp_noise_keypair_destroy(is);
	gp_noise_keypair_destroy(rs);
	if (e < 0) {
		fprintf(stderr, "bench-noise: %s\n", strerror(-e));
		return 1;
	}
	return 0;
}
