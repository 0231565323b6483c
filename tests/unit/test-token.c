/* Unit tests of proto/token: format/parse round trips, typo detection,
 * tolerance of case, look-alikes, dashes and white space, every parse error,
 * and the coordinator's record checks.
 *
 * With `--write-corpus DIR` it writes sample token strings into DIR (how
 * tests/fuzz/corpus/token/ was made). */
#include "token.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

static const uint8_t coord_pub[32] = {
	0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
	13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
};
static const uint8_t token_key[32] = { 7, 7, 7 };
static const uint8_t hash_key[32] = { 9, 9, 9 };

static void make(struct gp_token *t, char *str, size_t cap)
{
	const char *eps[] = { "coord.example.org:7465", "192.168.1.20:7465" };

	ASSERT_OK(gp_token_generate(token_key, coord_pub, eps, 2, 1900000000u,
				    t));
	ASSERT_GT(gp_token_format(t, str, cap), 0);
}

static enum gp_token_error parse_err(const char *s)
{
	struct gp_token t;
	enum gp_token_error e = GP_TOKEN_ERR_NONE;
	int r = gp_token_parse(s, &t, &e);

	if (r == 0)
		ASSERT_EQ(e, GP_TOKEN_ERR_NONE);
	else
		ASSERT_EQ(r, -EINVAL);
	return e;
}

static void assert_same(const struct gp_token *a, const struct gp_token *b)
{
	ASSERT_MEM_EQ(a->id, b->id, GP_TOKEN_ID_SIZE);
	ASSERT_MEM_EQ(a->secret, b->secret, GP_TOKEN_SECRET_SIZE);
	ASSERT_MEM_EQ(a->coordinator_pub, b->coordinator_pub, GP_TOKEN_KEY_SIZE);
	ASSERT_UINT_EQ(a->expires_at, b->expires_at);
	ASSERT_EQ(a->n_endpoints, b->n_endpoints);
	for (size_t i = 0; i < a->n_endpoints; i++)
		ASSERT_STR_EQ(a->endpoints[i], b->endpoints[i]);
}

static void test_round_trip(void)
{
	struct gp_token t, p, *heap = NULL;
	char s[GP_TOKEN_STRING_MAX];
	enum gp_token_error e = GP_TOKEN_ERR_CHECKSUM;
	uint8_t secret[32];

	make(&t, s, sizeof(s));
	ASSERT(strncmp(s, "gp1-", 4) == 0);
	/* Groups of 5 separated by single dashes, lower case. */
	for (size_t i = 4, n = 0; s[i]; i++) {
		if (s[i] == '-') {
			ASSERT_EQ(n, GP_TOKEN_GROUP);
			n = 0;
		} else {
			ASSERT(islower((unsigned char)s[i]) ||
			       isdigit((unsigned char)s[i]));
			n++;
			ASSERT_LE(n, GP_TOKEN_GROUP);
		}
	}
	ASSERT_OK(gp_token_parse(s, &p, &e));
	ASSERT_EQ(e, GP_TOKEN_ERR_NONE);
	assert_same(&t, &p);
	ASSERT_STR_EQ(p.endpoints[0], "coord.example.org:7465");
	ASSERT_UINT_EQ(p.expires_at, 1900000000u);

	/* With a token key the secret is re-derivable from the id. */
	ASSERT_OK(gp_token_secret_derive(token_key, p.id, secret));
	ASSERT_MEM_EQ(secret, p.secret, 32);

	/* Without one it is random, and ids are random. */
	{
		const char *ep[] = { "h:1" };
		struct gp_token a, b;

		ASSERT_OK(gp_token_generate(NULL, coord_pub, ep, 1, 0, &a));
		ASSERT_OK(gp_token_generate(NULL, coord_pub, ep, 1, 0, &b));
		ASSERT(memcmp(a.id, b.id, GP_TOKEN_ID_SIZE) != 0);
		ASSERT(memcmp(a.secret, b.secret, 32) != 0);
		ASSERT_OK(gp_token_secret_derive(token_key, a.id, secret));
		ASSERT(memcmp(secret, a.secret, 32) != 0);
		ASSERT_GT(gp_token_format(&a, s, sizeof(s)), 0);
		ASSERT_OK(gp_token_parse(s, &p, NULL));
		assert_same(&a, &p);
		gp_token_wipe(&a);
		ASSERT_EQ(a.n_endpoints, 0);
	}

	/* Eight endpoints of the longest length fit GP_TOKEN_STRING_MAX. */
	{
		static char longep[8][256];
		const char *eps[8];
		int len;

		for (int i = 0; i < 8; i++) {
			memset(longep[i], 'a' + i, 255);
			longep[i][255] = '\0';
			eps[i] = longep[i];
		}
		ASSERT_OK(gp_token_create(&heap));
		ASSERT_OK(gp_token_generate(token_key, coord_pub, eps, 8,
					    UINT64_MAX, heap));
		len = gp_token_format(heap, s, sizeof(s));
		ASSERT_GT(len, 3000);
		ASSERT_LT(len, GP_TOKEN_STRING_MAX);
		ASSERT_EQ(gp_token_format(heap, s, (size_t)len), -ENOBUFS);
		ASSERT_EQ(gp_token_format(heap, s, (size_t)len + 1), len);
		ASSERT_OK(gp_token_parse(s, &p, NULL));
		assert_same(heap, &p);
		gp_token_destroy(heap);
		gp_token_destroy(NULL);
	}
}

static void test_generate_errors(void)
{
	struct gp_token t;
	const char *bad_space[] = { "host name:1" };
	const char *empty[] = { "" };
	const char *nine[9] = { "a:1", "a:1", "a:1", "a:1", "a:1",
				"a:1", "a:1", "a:1", "a:1" };
	char toolong[300];
	const char *tl[] = { toolong };

	memset(toolong, 'x', sizeof(toolong) - 1);
	toolong[sizeof(toolong) - 1] = '\0';
	ASSERT_EQ(gp_token_generate(NULL, coord_pub, bad_space, 1, 0, &t), -EINVAL);
	ASSERT_EQ(gp_token_generate(NULL, coord_pub, empty, 1, 0, &t), -EINVAL);
	ASSERT_EQ(gp_token_generate(NULL, coord_pub, nine, 9, 0, &t), -EINVAL);
	ASSERT_EQ(gp_token_generate(NULL, coord_pub, nine, 0, 0, &t), -EINVAL);
	ASSERT_EQ(gp_token_generate(NULL, coord_pub, tl, 1, 0, &t), -EINVAL);
}

/* Every single-symbol substitution in the body is reported as a typo. */
static void test_typos(void)
{
	static const char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
	struct gp_token t;
	char s[GP_TOKEN_STRING_MAX], m[GP_TOKEN_STRING_MAX];
	size_t len;
	int checked = 0;

	make(&t, s, sizeof(s));
	len = strlen(s);
	for (size_t i = 4; i < len; i++) {
		if (s[i] == '-')
			continue;
		for (int k = 0; k < 32; k++) {
			enum gp_token_error e;

			if (alphabet[k] == s[i])
				continue;
			/* Every position, a third of the substitutions
			 * (all of them for the last symbol, whose padding
			 * bits are special). */
			if (i != len - 1 && (k + (int)i) % 3 != 0)
				continue;
			memcpy(m, s, len + 1);
			m[i] = alphabet[k];
			e = parse_err(m);
			ASSERT_EQ(e, GP_TOKEN_ERR_CHECKSUM);
			checked++;
		}
		/* A character outside the alphabet. */
		memcpy(m, s, len + 1);
		m[i] = 'u';
		ASSERT_EQ(parse_err(m), GP_TOKEN_ERR_CHARACTER);
	}
	ASSERT_GT(checked, 1500);

	/* A symbol dropped, doubled or two swapped: a typo, never accepted. */
	for (size_t i = 4; i < len; i++) {
		enum gp_token_error e;

		if (s[i] == '-')
			continue;
		memcpy(m, s, i);
		memcpy(m + i, s + i + 1, len - i);
		e = parse_err(m);
		ASSERT(e == GP_TOKEN_ERR_CHECKSUM || e == GP_TOKEN_ERR_MALFORMED);
		if (i + 1 < len && s[i + 1] != '-' && s[i] != s[i + 1]) {
			memcpy(m, s, len + 1);
			m[i] = s[i + 1];
			m[i + 1] = s[i];
			ASSERT_EQ(parse_err(m), GP_TOKEN_ERR_CHECKSUM);
		}
	}
	memcpy(m, s, len + 1);
	strcat(m, "a");
	ASSERT_EQ(parse_err(m), GP_TOKEN_ERR_CHECKSUM);
}

static void test_tolerance(void)
{
	struct gp_token t, p;
	char s[GP_TOKEN_STRING_MAX], m[2 * GP_TOKEN_STRING_MAX];
	size_t len, o = 0;

	make(&t, s, sizeof(s));
	len = strlen(s);

	/* Upper case, and the prefix too. */
	for (size_t i = 0; i <= len; i++)
		m[i] = (char)toupper((unsigned char)s[i]);
	ASSERT_OK(gp_token_parse(m, &p, NULL));
	assert_same(&t, &p);

	/* No dashes in the body, white space and line breaks around and
	 * inside, extra dashes. */
	o = (size_t)sprintf(m, "  \n\tgp1-");
	for (size_t i = 4; i < len; i++) {
		if (s[i] == '-')
			continue;
		m[o++] = s[i];
		if (i % 17 == 0)
			m[o++] = '\n';
		if (i % 23 == 0) {
			m[o++] = '-';
			m[o++] = '-';
		}
		if (i % 29 == 0)
			m[o++] = ' ';
	}
	strcpy(m + o, " \r\n");
	ASSERT_OK(gp_token_parse(m, &p, NULL));
	assert_same(&t, &p);

	/* Look-alikes: 1 may be typed i/I/l/L, 0 may be typed o/O. */
	memcpy(m, s, len + 1);
	for (size_t i = 4, n = 0; i < len; i++) {
		if (m[i] == '1')
			m[i] = "iIlL"[n++ % 4];
		else if (m[i] == '0')
			m[i] = "oO"[n++ % 2];
	}
	ASSERT_OK(gp_token_parse(m, &p, NULL));
	assert_same(&t, &p);
}

static void test_errors(void)
{
	struct gp_token t;
	char s[GP_TOKEN_STRING_MAX], m[GP_TOKEN_STRING_MAX];
	enum gp_token_error e = GP_TOKEN_ERR_NONE;

	make(&t, s, sizeof(s));
	ASSERT_EQ(parse_err(""), GP_TOKEN_ERR_PREFIX);
	ASSERT_EQ(parse_err("hello world"), GP_TOKEN_ERR_PREFIX);
	ASSERT_EQ(parse_err("gp-abcde"), GP_TOKEN_ERR_PREFIX);
	ASSERT_EQ(parse_err("gp1abcde"), GP_TOKEN_ERR_PREFIX);
	ASSERT_EQ(parse_err("g"), GP_TOKEN_ERR_PREFIX);
	ASSERT_EQ(gp_token_parse(NULL, &t, &e), -EINVAL);
	ASSERT_EQ(e, GP_TOKEN_ERR_PREFIX);
	/* Another version, even with a perfect body. */
	memcpy(m, s, strlen(s) + 1);
	m[2] = '2';
	ASSERT_EQ(parse_err(m), GP_TOKEN_ERR_VERSION);
	ASSERT_EQ(parse_err("gp0-abc"), GP_TOKEN_ERR_VERSION);
	ASSERT_EQ(parse_err("GP12-abc"), GP_TOKEN_ERR_VERSION);
	/* Cut short: too few bytes for any token. */
	memcpy(m, s, 40);
	m[40] = '\0';
	ASSERT_EQ(parse_err(m), GP_TOKEN_ERR_MALFORMED);
	ASSERT_EQ(parse_err("gp1-"), GP_TOKEN_ERR_MALFORMED);
	/* Cut at the end: the checksum no longer matches. */
	memcpy(m, s, strlen(s) - 6);
	m[strlen(s) - 6] = '\0';
	ASSERT_EQ(parse_err(m), GP_TOKEN_ERR_CHECKSUM);
	/* Far too long. */
	{
		char *big = malloc(20000);

		ASSERT_NOT_NULL(big);
		strcpy(big, "gp1-");
		memset(big + 4, 'a', 19000);
		big[19004] = '\0';
		ASSERT_EQ(parse_err(big), GP_TOKEN_ERR_MALFORMED);
		free(big);
	}
	ASSERT_EQ(parse_err("gp1-abc!e"), GP_TOKEN_ERR_CHARACTER);
	ASSERT_STR_EQ(gp_token_error_str(GP_TOKEN_ERR_CHECKSUM),
		      "the token has a typo (checksum mismatch)");
	ASSERT(strstr(gp_token_error_str(GP_TOKEN_ERR_PREFIX), "gp1-"));
	ASSERT(strstr(gp_token_error_str(GP_TOKEN_ERR_CHARACTER), "typo"));
	ASSERT(strstr(gp_token_error_str(GP_TOKEN_ERR_VERSION), "version"));
	ASSERT(strstr(gp_token_error_str(GP_TOKEN_ERR_MALFORMED), "malformed"));
	/* The output is not written on failure. */
	memset(&t, 0x5a, sizeof(t));
	ASSERT_EQ(gp_token_parse("gp1-zzzzz", &t, NULL), -EINVAL);
	ASSERT_EQ(t.id[0], 0x5a);
}

static void test_records(void)
{
	struct gp_token t;
	struct gp_token_record rec;
	char s[GP_TOKEN_STRING_MAX];
	uint8_t other[32], h1[32], h2[32], psk1[32], psk2[32];
	uint8_t key2[32] = { 1 };
	uint64_t now = 1800000000u;

	make(&t, s, sizeof(s));
	ASSERT_OK(gp_token_record_init(&rec, hash_key, &t, 3));
	ASSERT_MEM_EQ(rec.id, t.id, GP_TOKEN_ID_SIZE);
	ASSERT_UINT_EQ(rec.expires_at, t.expires_at);
	ASSERT_EQ(rec.uses, 0);
	ASSERT(!rec.revoked);
	/* The record holds a hash, not the secret. */
	ASSERT(memcmp(rec.hash, t.secret, 32) != 0);

	ASSERT_EQ(gp_token_record_check(&rec, hash_key, t.secret, now),
		  GP_TOKEN_OK);
	memcpy(other, t.secret, 32);
	other[31] ^= 1;
	ASSERT_EQ(gp_token_record_check(&rec, hash_key, other, now),
		  GP_TOKEN_BAD_SECRET);
	/* The right secret under the wrong key does not match either. */
	ASSERT_EQ(gp_token_record_check(&rec, key2, t.secret, now),
		  GP_TOKEN_BAD_SECRET);

	ASSERT_EQ(gp_token_record_check(&rec, hash_key, t.secret, 1900000000u),
		  GP_TOKEN_EXPIRED);
	ASSERT_EQ(gp_token_record_check(&rec, hash_key, t.secret, 1899999999u),
		  GP_TOKEN_OK);
	rec.expires_at = 0; /* never */
	ASSERT_EQ(gp_token_record_check(&rec, hash_key, t.secret, UINT64_MAX),
		  GP_TOKEN_OK);

	rec.uses = 2;
	ASSERT_EQ(gp_token_record_check(&rec, hash_key, t.secret, now),
		  GP_TOKEN_OK);
	rec.uses = 3;
	ASSERT_EQ(gp_token_record_check(&rec, hash_key, t.secret, now),
		  GP_TOKEN_USED_UP);
	rec.max_uses = 0; /* unlimited */
	ASSERT_EQ(gp_token_record_check(&rec, hash_key, t.secret, now),
		  GP_TOKEN_OK);

	rec.revoked = true;
	ASSERT_EQ(gp_token_record_check(&rec, hash_key, t.secret, now),
		  GP_TOKEN_REVOKED);
	/* Someone without the secret learns nothing of the state. */
	ASSERT_EQ(gp_token_record_check(&rec, hash_key, other, now),
		  GP_TOKEN_BAD_SECRET);
	ASSERT_STR_EQ(gp_token_verdict_str(GP_TOKEN_USED_UP), "token used up");

	/* The hash is keyed and depends on the secret. */
	ASSERT_OK(gp_token_hash_secret(hash_key, t.secret, h1));
	ASSERT_MEM_EQ(h1, rec.hash, 32);
	ASSERT_OK(gp_token_hash_secret(key2, t.secret, h2));
	ASSERT(memcmp(h1, h2, 32) != 0);
	ASSERT_OK(gp_token_hash_secret(hash_key, other, h2));
	ASSERT(memcmp(h1, h2, 32) != 0);

	/* The psk is deterministic, differs from the secret, the hash and
	 * the derivation (domain separation), and from other secrets'. */
	ASSERT_OK(gp_token_psk(t.secret, psk1));
	ASSERT_OK(gp_token_psk(t.secret, psk2));
	ASSERT_MEM_EQ(psk1, psk2, 32);
	ASSERT(memcmp(psk1, t.secret, 32) != 0);
	ASSERT(memcmp(psk1, h1, 32) != 0);
	ASSERT_OK(gp_token_psk(other, psk2));
	ASSERT(memcmp(psk1, psk2, 32) != 0);
	ASSERT_OK(gp_token_hash_secret(t.secret, t.secret, h2));
	ASSERT(memcmp(psk1, h2, 32) != 0);
}

static int write_corpus(const char *dir)
{
	const char *ep1[] = { "127.0.0.1:7465" };
	const char *ep3[] = { "a.example:1", "[::1]:7465", "10.0.0.2:9" };
	struct gp_token t;
	char s[GP_TOKEN_STRING_MAX], path[4096];
	FILE *f;

	for (int i = 0; i < 2; i++) {
		ASSERT_OK(gp_token_generate(token_key, coord_pub,
					    i ? ep3 : ep1, i ? 3 : 1,
					    i ? 0 : 1900000000u, &t));
		ASSERT_GT(gp_token_format(&t, s, sizeof(s)), 0);
		snprintf(path, sizeof(path), "%s/valid-%d", dir, i);
		f = fopen(path, "w");
		if (!f || fputs(s, f) < 0 || fclose(f) != 0) {
			perror(path);
			return 1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
		return write_corpus(argv[2]);
	test_round_trip();
	test_generate_errors();
	test_typos();
	test_tolerance();
	test_errors();
	test_records();
	printf("token: all tests passed\n");
	return 0;
}
