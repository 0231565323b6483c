/* The training set of a pool, fetched as content-addressed shards
 * (proto/shard.h, GP_CAP_DATA_SHARDS) and kept in the agent's cache
 * directory for the next session.
 *
 * Each verified shard is one file, <cache_dir>/<BLAKE2b-256 hex>.shard,
 * written to a temporary name and renamed. A file's mtime is its last
 * use: opening a manifest touches the files it finds, and before a new
 * shard is written the least recently used files of other data sets are
 * removed until the directory's shards fit under the cap (the agent.conf
 * [agent] cache_max_mib). A shard that does not fit even so is kept in
 * memory only. Every cached file is checked against its digest when it is
 * read: a corrupt or truncated one is removed and fetched again.
 *
 * The whole set is held in memory as one stream, the data set the
 * minibatches' indices point into. Not thread-safe: the session's loop
 * thread uses it. */
#ifndef GP_AGENT_DATACACHE_H
#define GP_AGENT_DATACACHE_H

#include <stddef.h>
#include <stdint.h>

#include "data.h"

/* The largest data set an agent takes into memory. */
#define GP_DATACACHE_TOTAL_MAX ((uint64_t)4 << 30)

struct gp_datacache;

/* Creates a cache over dir (borrowed; created with mode 0700 when
 * missing; NULL or "": no files, memory only) holding at most cap_bytes of
 * shard files (0: no files). Returns 0 and *ret (owned by the caller),
 * -ENOMEM. A directory that cannot be created is not an error: the cache
 * then works from memory, and says so in the log. */
int gp_datacache_create(const char *dir, uint64_t cap_bytes,
			struct gp_datacache **ret);

/* Frees c; NULL is a no-op. */
void gp_datacache_destroy(struct gp_datacache *c);

/* Takes the manifest manifest[0..len) (borrowed) of a session's WELCOME.
 * The same data set as before keeps what is already in memory; another
 * one is read from the cache files. Forgets which shards were requested.
 * Returns the number of shards still missing (0: the data set is ready),
 * or -EBADMSG / -EPROTONOSUPPORT for a manifest that does not decode,
 * -EFBIG for a set over GP_DATACACHE_TOTAL_MAX, -ENOMEM. */
int gp_datacache_open(struct gp_datacache *c, const uint8_t *manifest,
		      size_t len);

/* The next missing shard not yet requested, now marked requested; -1 when
 * none is left to request. */
int64_t gp_datacache_next(struct gp_datacache *c);

/* Shard i arrived (data borrowed, len bytes): checked against its digest,
 * copied into the set and written to the cache. Returns 1 when it was the
 * last missing shard, 0 when more are missing, -EBADMSG when it does not
 * match its digest (it is then requested again by gp_datacache_next()),
 * -EINVAL for a shard not requested or of the wrong length. */
int gp_datacache_put(struct gp_datacache *c, uint32_t i, const uint8_t *data,
		     size_t len);

/* Shards of the current manifest, and how many are still missing. */
uint32_t gp_datacache_shards(const struct gp_datacache *c);
uint32_t gp_datacache_missing(const struct gp_datacache *c);

/* The data set once every shard is in: its contents checked (labels below
 * the classes, finite floats) on the first call. Returns NULL while shards
 * are missing or when the contents are invalid (the reason in err, which
 * may be NULL). Borrowed from c, valid until the next open. */
const struct gp_dataset *gp_datacache_dataset(struct gp_datacache *c,
					      char *err, size_t err_len);

#endif
