/* The agent's shard cache (agent/datacache.c) and the manifest it reads
 * (proto/shard.c): a data set fetched shard by shard, each checked against
 * its digest; cached files found again by the next session; a damaged one
 * removed and fetched again; the least recently used shards of another
 * data set evicted to stay under the cap, the current set's never. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "data.h"
#include "datacache.h"
#include "shard.h"
#include "test.h"

#define SHARD 4096u

static char dir[4096];

/* A u8 data set of count samples of 1 x 8 x 8, labels i % 10, pixels
 * from seed: its stream and manifest. */
static uint8_t *make_set(uint32_t count, uint8_t seed, size_t *ret_len,
			 struct gp_shard_manifest *mf)
{
	static const uint32_t shape[3] = { 1, 8, 8 };
	size_t len = (size_t)count * 64 + count;
	uint8_t *s = malloc(len);
	uint32_t x = 0x9e3779b9u * (seed + 1u);

	ASSERT_NOT_NULL(s);
	/* Not periodic: shards of equal bytes would share one file. */
	for (size_t i = 0; i < (size_t)count * 64; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		s[i] = (uint8_t)x;
	}
	for (uint32_t i = 0; i < count; i++)
		s[(size_t)count * 64 + i] = (uint8_t)(i % 10);
	ASSERT_OK(gp_shard_manifest_build(s, len, GP_SHARD_DTYPE_U8, count,
					  shape, 10, SHARD, mf));
	*ret_len = len;
	return s;
}

static size_t count_files(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	ASSERT_NOT_NULL(d);
	while ((e = readdir(d)))
		if (strstr(e->d_name, ".shard"))
			n++;
	closedir(d);
	return n;
}

static void shard_file(const struct gp_shard_manifest *mf, uint32_t i,
		       char *path, size_t len)
{
	char hex[65];

	gp_shard_hex(mf->hashes + (size_t)i * GP_SHARD_HASH_SIZE, hex);
	snprintf(path, len, "%s/%s.shard", dir, hex);
}

/* Fetches every missing shard from stream, as the machine would. */
static void fetch_all(struct gp_datacache *c,
		      const struct gp_shard_manifest *mf,
		      const uint8_t *stream)
{
	int64_t i;
	int r = 0;

	while ((i = gp_datacache_next(c)) >= 0)
		r = gp_datacache_put(c, (uint32_t)i,
				     stream + (size_t)i * mf->shard_size,
				     gp_shard_len(mf, (uint32_t)i));
	ASSERT_EQ(r, 1);
	ASSERT_EQ(gp_datacache_missing(c), 0);
}

static void test_manifest(void)
{
	struct gp_shard_manifest mf, d;
	uint8_t *s, *raw;
	size_t len;

	s = make_set(200, 1, &len, &mf);
	ASSERT_UINT_EQ(mf.n_shards, (len + SHARD - 1) / SHARD);
	ASSERT_UINT_EQ(gp_shard_len(&mf, mf.n_shards - 1), len % SHARD);
	ASSERT_OK(gp_shard_manifest_decode(mf.raw, mf.raw_len, &d));
	ASSERT_MEM_EQ(d.id, mf.id, sizeof(d.id));
	ASSERT_OK(gp_shard_check(&d, 1, s + SHARD, SHARD));
	s[SHARD + 5] ^= 1;
	ASSERT_EQ(gp_shard_check(&d, 1, s + SHARD, SHARD), -EBADMSG);
	ASSERT_EQ(gp_shard_check(&d, 1, s + SHARD, SHARD - 1), -EINVAL);
	ASSERT_EQ(gp_shard_check(&d, mf.n_shards, s, 1), -EINVAL);
	gp_shard_manifest_finish(&d);
	/* Fields that disagree: refused. */
	raw = malloc(mf.raw_len);
	ASSERT_NOT_NULL(raw);
	memcpy(raw, mf.raw, mf.raw_len);
	raw[32] ^= 1; /* total */
	ASSERT_EQ(gp_shard_manifest_decode(raw, mf.raw_len, &d), -EBADMSG);
	memcpy(raw, mf.raw, mf.raw_len);
	raw[4] = 2; /* version */
	ASSERT_EQ(gp_shard_manifest_decode(raw, mf.raw_len, &d),
		  -EPROTONOSUPPORT);
	memcpy(raw, mf.raw, mf.raw_len);
	ASSERT_EQ(gp_shard_manifest_decode(raw, mf.raw_len - 1, &d), -EBADMSG);
	raw[24] = 0; /* classes 0 */
	ASSERT_EQ(gp_shard_manifest_decode(raw, mf.raw_len, &d), -EBADMSG);
	free(raw);
	gp_shard_manifest_finish(&mf);
	free(s);
}

static void test_fetch_and_cache(void)
{
	struct gp_shard_manifest mf, mf2;
	struct gp_datacache *c;
	const struct gp_dataset *ds;
	char path[8192], err[GP_DATA_ERR_MAX];
	uint8_t *s, *s2;
	size_t len, len2;
	int64_t i;
	FILE *f;

	s = make_set(300, 1, &len, &mf);       /* 19,500 bytes: 5 shards */
	ASSERT_OK(gp_datacache_create(dir, 1 << 20, &c));
	ASSERT_EQ(gp_datacache_open(c, mf.raw, mf.raw_len), (int)mf.n_shards);
	ASSERT(gp_datacache_dataset(c, err, sizeof(err)) == NULL);
	/* A shard not asked for, or damaged, is refused; the damaged one is
	 * asked for again. */
	ASSERT_EQ(gp_datacache_put(c, 0, s, SHARD), -EINVAL);
	i = gp_datacache_next(c);
	ASSERT_EQ(i, 0);
	s[10] ^= 1;
	ASSERT_EQ(gp_datacache_put(c, 0, s, SHARD), -EBADMSG);
	s[10] ^= 1;
	ASSERT_EQ(gp_datacache_put(c, 0, s, SHARD - 1), -EINVAL);
	fetch_all(c, &mf, s);
	ds = gp_datacache_dataset(c, err, sizeof(err));
	ASSERT_NOT_NULL(ds);
	ASSERT_UINT_EQ(ds->count, 300);
	ASSERT_UINT_EQ(ds->features, 64);
	ASSERT_EQ(ds->labels[123], 3);
	ASSERT_MEM_EQ(ds->images, s, 300 * 64);
	ASSERT_UINT_EQ(count_files(), mf.n_shards);
	/* The same set again: nothing missing, in memory. */
	ASSERT_EQ(gp_datacache_open(c, mf.raw, mf.raw_len), 0);
	gp_datacache_destroy(c);

	/* A new session finds the files; a flipped byte and a cut file are
	 * removed and only those two asked for. */
	shard_file(&mf, 1, path, sizeof(path));
	f = fopen(path, "r+b");
	ASSERT_NOT_NULL(f);
	fseek(f, 100, SEEK_SET);
	fputc(0xee, f);
	fclose(f);
	shard_file(&mf, 4, path, sizeof(path));
	ASSERT_OK(truncate(path, 10));
	ASSERT_OK(gp_datacache_create(dir, 1 << 20, &c));
	ASSERT_EQ(gp_datacache_open(c, mf.raw, mf.raw_len), 2);
	ASSERT_UINT_EQ(count_files(), mf.n_shards - 2);
	ASSERT_EQ(gp_datacache_next(c), 1);
	ASSERT_EQ(gp_datacache_next(c), 4);
	ASSERT_EQ(gp_datacache_next(c), -1);
	/* A reconnection forgets what was asked for. */
	ASSERT_EQ(gp_datacache_open(c, mf.raw, mf.raw_len), 2);
	fetch_all(c, &mf, s);
	ds = gp_datacache_dataset(c, err, sizeof(err));
	ASSERT_NOT_NULL(ds);
	ASSERT_MEM_EQ(ds->images, s, len);

	/* Another data set under a cap of 6 shards: the first set's least
	 * recently used files go, never the current set's. Shard 0 of the
	 * first set is made the oldest. */
	shard_file(&mf, 0, path, sizeof(path));
	{
		struct timespec old[2] = { { 1000, 0 }, { 1000, 0 } };

		ASSERT_OK(utimensat(AT_FDCWD, path, old, 0));
	}
	gp_datacache_destroy(c);
	ASSERT_OK(gp_datacache_create(dir, 6 * SHARD, &c));
	s2 = make_set(300, 9, &len2, &mf2);
	ASSERT_EQ(gp_datacache_open(c, mf2.raw, mf2.raw_len),
		  (int)mf2.n_shards);
	fetch_all(c, &mf2, s2);
	ASSERT_LE(count_files(), 6);
	for (uint32_t k = 0; k < mf2.n_shards; k++) {
		shard_file(&mf2, k, path, sizeof(path));
		ASSERT_OK(access(path, F_OK));
	}
	shard_file(&mf, 0, path, sizeof(path));
	ASSERT_EQ(access(path, F_OK), -1);
	/* Labels beyond the manifest's classes: the set is refused. */
	gp_datacache_destroy(c);
	gp_shard_manifest_finish(&mf2);
	free(s2);
	{
		static const uint32_t shape[3] = { 1, 8, 8 };

		s2 = make_set(300, 3, &len2, &mf2);
		gp_shard_manifest_finish(&mf2);
		ASSERT_OK(gp_shard_manifest_build(s2, len2, GP_SHARD_DTYPE_U8,
						  300, shape, 5, SHARD, &mf2));
	}
	ASSERT_OK(gp_datacache_create(NULL, 0, &c)); /* memory only */
	ASSERT_EQ(gp_datacache_open(c, mf2.raw, mf2.raw_len),
		  (int)mf2.n_shards);
	fetch_all(c, &mf2, s2);
	ASSERT(gp_datacache_dataset(c, err, sizeof(err)) == NULL);
	ASSERT(strstr(err, "label 5 at index 5") != NULL);
	gp_datacache_destroy(c);
	gp_shard_manifest_finish(&mf2);
	gp_shard_manifest_finish(&mf);
	free(s);
	free(s2);
}

static void cleanup(void)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[8192];

	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	if (d)
		closedir(d);
	rmdir(dir);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(dir, sizeof(dir), "%s/gp-test-datacache-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	ASSERT_NOT_NULL(mkdtemp(dir));
	test_manifest();
	test_fetch_and_cache();
	cleanup();
	printf("ok\n");
	return 0;
}
