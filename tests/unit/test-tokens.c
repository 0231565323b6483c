/* Token files (kernels/tokens.h): write and load back, windows and their
 * labels, and every refusal of a bad file with its errno. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gp-endian.h"
#include "test.h"
#include "tokens.h"

#include <zlib.h>

static char dir[] = "/tmp/gp-test-tokens-XXXXXX";

static uint8_t *slurp(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = malloc(1 << 16);
	size_t n;

	ASSERT_NOT_NULL(f);
	ASSERT_NOT_NULL(buf);
	n = fread(buf, 1, 1 << 16, f);
	fclose(f);
	*ret_len = n;
	return buf;
}

static void test_roundtrip(void)
{
	char path[256];
	uint16_t ids[11] = { 104, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100 };
	uint16_t wide[5] = { 0, 65535, 300, 7, 65534 };
	struct gp_tokens *t;
	char err[256];
	float x[6];
	int32_t y[6];
	uint32_t idx[2] = { 1, 0 };

	snprintf(path, sizeof(path), "%s/a.tok", dir);
	ASSERT_OK(gp_tokens_write(path, 256, ids, 11));
	ASSERT_OK(gp_tokens_load(path, &t, err, sizeof(err)));
	ASSERT_EQ(t->vocab, 256);
	ASSERT_EQ(t->count, 11);
	ASSERT_MEM_EQ(t->ids, ids, sizeof(ids));
	/* (11 - 1) / 3 = 3 windows of 3 + 1 tokens. */
	ASSERT_EQ(gp_tokens_windows(t, 3), 3);
	ASSERT_EQ(gp_tokens_windows(t, 10), 1);
	ASSERT_EQ(gp_tokens_windows(t, 11), 0);
	ASSERT_OK(gp_tokens_gather(t, 3, idx, 2, x, y));
	ASSERT_EQ((int)x[0], 108);
	ASSERT_EQ((int)x[2], 32);
	ASSERT_EQ(y[0], 111);
	ASSERT_EQ(y[2], 119);
	ASSERT_EQ((int)x[3], 104);
	ASSERT_EQ(y[5], 108);
	idx[1] = 3;
	ASSERT_EQ(gp_tokens_gather(t, 3, idx, 2, x, y), -EINVAL);
	ASSERT(gp_tokens_fingerprint(t) != 0);
	gp_tokens_destroy(t);
	/* Two bytes a token past 256. */
	ASSERT_OK(gp_tokens_write(path, 65536, wide, 5));
	ASSERT_OK(gp_tokens_load(path, &t, err, sizeof(err)));
	ASSERT_EQ(t->vocab, 65536);
	ASSERT_MEM_EQ(t->ids, wide, sizeof(wide));
	gp_tokens_destroy(t);
	ASSERT_EQ(gp_tokens_write(path, 300, wide, 5), -EINVAL);
	ASSERT_EQ(gp_tokens_write(path, 256, ids, 1), -EINVAL);
	unlink(path);
}

/* Each damage of a good file, and the errno it gets. */
static void test_bad(void)
{
	char path[256], err[256];
	uint16_t ids[8] = { 1, 2, 3, 4, 5, 6, 7, 0 };
	uint8_t *good, *b;
	size_t len;
	struct gp_tokens *t = NULL;
	struct {
		const char *what;
		size_t at;
		uint8_t val;
		int len_delta;
		int want;
	} cases[] = {
		{ "magic", 0, 'X', 0, -EPROTO },
		{ "version", 8, 2, 0, -EPROTO },
		{ "vocabulary", 12, 1, 0, -ERANGE },
		{ "width", 16, 3, 0, -ERANGE },
		{ "crc", 20, 0x55, 0, -EBADMSG },
		{ "count", 24, 1, 0, -ERANGE },
		{ "truncated", 0, 'G', -1, -ENODATA },
		{ "extra", 0, 'G', 1, -E2BIG },
		{ "header", 0, 'G', -30, -ENODATA },
		{ "id", 32, 200, 0, -EDOM },
	};

	snprintf(path, sizeof(path), "%s/b.tok", dir);
	/* A vocabulary of 8 in one byte a token. */
	ASSERT_OK(gp_tokens_write(path, 8, ids, 8));
	good = slurp(path, &len);
	ASSERT_EQ(len, GP_TOKENS_HEADER + 8);
	ASSERT_OK(gp_tokens_decode(good, len, "good", &t, err, sizeof(err)));
	gp_tokens_destroy(t);
	b = malloc(len + 1);
	ASSERT_NOT_NULL(b);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r;

		memcpy(b, good, len);
		b[len] = 0;
		b[cases[i].at] = cases[i].val;
		if (cases[i].at == 32) /* the CRC right: only the id is bad */
			gp_put_le32(b + 20, (uint32_t)crc32(crc32(0, NULL, 0),
							    b + 32, 8));
		t = NULL;
		err[0] = '\0';
		r = gp_tokens_decode(b, (size_t)((int)len + cases[i].len_delta),
				     cases[i].what, &t, err, sizeof(err));
		ASSERT_EQ(r, cases[i].want);
		ASSERT(t == NULL);
		ASSERT(err[0]);
		printf("%s: %s\n", cases[i].what, err);
	}
	free(b);
	free(good);
	unlink(path);
	ASSERT_EQ(gp_tokens_load("/nonexistent/x.tok", &t, err, sizeof(err)),
		  -ENOENT);
}

int main(void)
{
	char cmd[512];

	ASSERT_NOT_NULL(mkdtemp(dir));
	test_roundtrip();
	test_bad();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ASSERT_OK(system(cmd));
	printf("tokens: ok\n");
	return 0;
}
