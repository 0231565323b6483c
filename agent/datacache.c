/* The agent's shard cache: see datacache.h. */
#include "datacache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "shard.h"

_Static_assert(GP_SHARD_DTYPE_U8 == GP_DATA_U8 && GP_SHARD_DTYPE_F32 == GP_DATA_F32,
	       "manifest dtypes are the data set's");

enum { MISSING = 0, REQUESTED = 1, PRESENT = 2 };

struct gp_datacache {
	char *dir;               /* NULL: memory only */
	uint64_t cap;
	struct gp_shard_manifest mf;
	bool have_mf;
	uint8_t *buf;            /* mf.total bytes: the stream */
	uint8_t *state;          /* per shard: MISSING, REQUESTED, PRESENT */
	uint32_t missing;
	struct gp_dataset ds;
	bool checked, valid;
	char why[GP_DATA_ERR_MAX];
	bool told_full;          /* "the cache is full" logged */
};

int gp_datacache_create(const char *dir, uint64_t cap_bytes,
			struct gp_datacache **ret)
{
	struct gp_datacache *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->cap = cap_bytes;
	if (dir && dir[0] && cap_bytes) {
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			gp_warn("%s: cannot create the data cache (%s): data "
				"sets are kept in memory only", dir,
				strerror(errno));
		else if (!(c->dir = strdup(dir))) {
			free(c);
			return -ENOMEM;
		}
	}
	*ret = c;
	return 0;
}

static void drop_set(struct gp_datacache *c)
{
	gp_shard_manifest_finish(&c->mf);
	free(c->buf);
	free(c->state);
	c->buf = c->state = NULL;
	c->have_mf = false;
	c->missing = 0;
	c->checked = c->valid = false;
	memset(&c->ds, 0, sizeof(c->ds));
}

void gp_datacache_destroy(struct gp_datacache *c)
{
	if (!c)
		return;
	drop_set(c);
	free(c->dir);
	free(c);
}

static int shard_path(const struct gp_datacache *c, const uint8_t *hash,
		      const char *ext, char *buf, size_t len)
{
	char hex[65];
	int n;

	gp_shard_hex(hash, hex);
	n = snprintf(buf, len, "%s/%s%s", c->dir, hex, ext);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Reads shard i from its file when there is one and it is intact (then
 * touched: its last use is now). A corrupt one is removed. */
static bool load_cached(struct gp_datacache *c, uint32_t i)
{
	const uint8_t *h = c->mf.hashes + (size_t)i * GP_SHARD_HASH_SIZE;
	size_t want = gp_shard_len(&c->mf, i), have = 0;
	uint8_t *dst = c->buf + (size_t)i * c->mf.shard_size;
	char path[4096];
	struct stat st;
	int fd;

	if (!c->dir || shard_path(c, h, ".shard", path, sizeof(path)) < 0)
		return false;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
	    (uint64_t)st.st_size == want) {
		while (have < want) {
			ssize_t n = read(fd, dst + have, want - have);

			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				break;
			have += (size_t)n;
		}
	}
	close(fd);
	if (have == want && gp_shard_check(&c->mf, i, dst, want) == 0) {
		utimensat(AT_FDCWD, path, NULL, 0);
		return true;
	}
	gp_warn("cached data shard %s is corrupt: removed, fetching it again",
		path);
	unlink(path);
	return false;
}

int gp_datacache_open(struct gp_datacache *c, const uint8_t *manifest,
		      size_t len)
{
	struct gp_shard_manifest mf;
	uint32_t found = 0;
	int r;

	r = gp_shard_manifest_decode(manifest, len, &mf);
	if (r < 0)
		return r;
	if (c->have_mf && memcmp(mf.id, c->mf.id, sizeof(mf.id)) == 0) {
		gp_shard_manifest_finish(&mf);
		for (uint32_t i = 0; i < c->mf.n_shards; i++)
			if (c->state[i] == REQUESTED)
				c->state[i] = MISSING;
		return (int)c->missing;
	}
	if (mf.total > GP_DATACACHE_TOTAL_MAX) {
		gp_shard_manifest_finish(&mf);
		return -EFBIG;
	}
	drop_set(c);
	c->mf = mf;
	c->have_mf = true;
	c->buf = malloc((size_t)mf.total);
	c->state = calloc(mf.n_shards, 1);
	if (!c->buf || !c->state) {
		drop_set(c);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < mf.n_shards; i++) {
		if (load_cached(c, i)) {
			c->state[i] = PRESENT;
			found++;
		}
	}
	c->missing = mf.n_shards - found;
	gp_info("data set %02x%02x%02x%02x: %" PRIu32 " samples, %" PRIu64
		" bytes in %" PRIu32 " shards, %" PRIu32 " of them cached",
		mf.id[0], mf.id[1], mf.id[2], mf.id[3], mf.count, mf.total,
		mf.n_shards, found);
	return (int)c->missing;
}

int64_t gp_datacache_next(struct gp_datacache *c)
{
	for (uint32_t i = 0; c->have_mf && i < c->mf.n_shards; i++) {
		if (c->state[i] == MISSING) {
			c->state[i] = REQUESTED;
			return i;
		}
	}
	return -1;
}

/* A shard file named by its hex digest: the digest, or false. */
static bool parse_name(const char *name, uint8_t *hash)
{
	size_t n = strlen(name);

	if (n != 2 * GP_SHARD_HASH_SIZE + 6 ||
	    strcmp(name + 2 * GP_SHARD_HASH_SIZE, ".shard") != 0)
		return false;
	for (size_t i = 0; i < GP_SHARD_HASH_SIZE; i++) {
		unsigned v;

		if (sscanf(name + 2 * i, "%2x", &v) != 1)
			return false;
		hash[i] = (uint8_t)v;
	}
	return true;
}

static bool in_manifest(const struct gp_shard_manifest *mf,
			const uint8_t *hash)
{
	for (uint32_t i = 0; i < mf->n_shards; i++)
		if (memcmp(mf->hashes + (size_t)i * GP_SHARD_HASH_SIZE, hash,
			   GP_SHARD_HASH_SIZE) == 0)
			return true;
	return false;
}

struct entry {
	char name[2 * GP_SHARD_HASH_SIZE + 8];
	uint64_t size;
	struct timespec mtime;
};

static int by_age(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;

	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	if (x->mtime.tv_nsec != y->mtime.tv_nsec)
		return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
	return 0;
}

/* Removes the least recently used shard files of other data sets until
 * need more bytes fit under the cap. Returns whether they do. */
static bool make_room(struct gp_datacache *c, uint64_t need)
{
	struct entry *e = NULL;
	size_t n = 0, cap = 0;
	uint64_t total = 0;
	struct dirent *d;
	DIR *dir = opendir(c->dir);
	bool ok;

	if (!dir)
		return false;
	while ((d = readdir(dir))) {
		uint8_t h[GP_SHARD_HASH_SIZE];
		struct stat st;
		char path[4096];

		if (!parse_name(d->d_name, h))
			continue;
		snprintf(path, sizeof(path), "%s/%s", c->dir, d->d_name);
		if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		total += (uint64_t)st.st_size;
		if (in_manifest(&c->mf, h))
			continue;
		if (n == cap) {
			struct entry *ne;

			cap = cap ? 2 * cap : 64;
			ne = realloc(e, cap * sizeof(*e));
			if (!ne)
				break;
			e = ne;
		}
		snprintf(e[n].name, sizeof(e[n].name), "%s", d->d_name);
		e[n].size = (uint64_t)st.st_size;
		e[n].mtime = st.st_mtim;
		n++;
	}
	closedir(dir);
	if (n > 1)
		qsort(e, n, sizeof(*e), by_age);
	for (size_t i = 0; i < n && total + need > c->cap; i++) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/%s", c->dir, e[i].name);
		if (unlink(path) == 0) {
			total -= e[i].size;
			gp_debug("data cache: evicted %s", e[i].name);
		}
	}
	ok = total + need <= c->cap;
	free(e);
	return ok;
}

static void store(struct gp_datacache *c, uint32_t i, const uint8_t *data,
		  size_t len)
{
	const uint8_t *h = c->mf.hashes + (size_t)i * GP_SHARD_HASH_SIZE;
	char tmp[4096], path[4096];
	size_t off = 0;
	int fd;

	if (!c->dir || shard_path(c, h, ".tmp", tmp, sizeof(tmp)) < 0 ||
	    shard_path(c, h, ".shard", path, sizeof(path)) < 0)
		return;
	if (!make_room(c, len)) {
		if (!c->told_full)
			gp_info("%s: the data cache is full (cache_max_mib): "
				"shards are kept in memory only", c->dir);
		c->told_full = true;
		return;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return;
	while (off < len) {
		ssize_t n = write(fd, data + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	if (close(fd) < 0 || off < len || rename(tmp, path) < 0)
		unlink(tmp);
}

int gp_datacache_put(struct gp_datacache *c, uint32_t i, const uint8_t *data,
		     size_t len)
{
	int r;

	if (!c->have_mf || i >= c->mf.n_shards || c->state[i] != REQUESTED)
		return -EINVAL;
	r = gp_shard_check(&c->mf, i, data, len);
	if (r == -EBADMSG)
		c->state[i] = MISSING;
	if (r < 0)
		return r;
	memcpy(c->buf + (size_t)i * c->mf.shard_size, data, len);
	c->state[i] = PRESENT;
	c->missing--;
	store(c, i, data, len);
	return c->missing == 0;
}

uint32_t gp_datacache_shards(const struct gp_datacache *c)
{
	return c->have_mf ? c->mf.n_shards : 0;
}

uint32_t gp_datacache_missing(const struct gp_datacache *c)
{
	return c->missing;
}

const struct gp_dataset *gp_datacache_dataset(struct gp_datacache *c,
					      char *err, size_t err_len)
{
	const struct gp_shard_manifest *mf = &c->mf;

	if (!c->have_mf || c->missing)
		return NULL;
	if (!c->checked) {
		c->checked = true;
		c->valid = gp_data_check_stream(c->buf, (size_t)mf->total,
						mf->count, mf->dtype,
						mf->shape, mf->classes,
						"the fetched data set", c->why,
						sizeof(c->why)) == 0;
		c->ds.count = mf->count;
		memcpy(c->ds.shape, mf->shape, sizeof(c->ds.shape));
		c->ds.features = (size_t)mf->shape[0] * mf->shape[1] *
				 mf->shape[2];
		c->ds.dtype = mf->dtype;
		c->ds.classes = mf->classes;
		c->ds.images = c->buf;
		c->ds.labels = c->buf + c->ds.count * c->ds.features *
						gp_data_elsize(mf->dtype);
	}
	if (!c->valid) {
		if (err && err_len)
			snprintf(err, err_len, "%s", c->why);
		return NULL;
	}
	return &c->ds;
}
