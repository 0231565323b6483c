/* Content-addressed data shards: how a training set travels to an agent
 * that does not hold it (GP_CAP_DATA_SHARDS, docs/protocol.md "Data
 * shards").
 *
 * The coordinator's training set is one byte stream: its samples' elements
 * (u8, or f32 little-endian), sample after sample, then one label byte per
 * sample. The stream is cut into shards of shard_size bytes (the last one
 * shorter), each named by its BLAKE2b-256 digest (unkeyed, no
 * personalisation). The manifest describes the set and lists the digests;
 * it travels in WELCOME.data_manifest, and its own BLAKE2b-256 digest is
 * the data set's id. Manifest layout (all little-endian):
 *
 *   off  size  field
 *   0    4     magic "GPDM"
 *   4    1     version, 1
 *   5    1     dtype: 0 u8 (scaled by 1/255), 1 f32
 *   6    2     reserved, 0
 *   8    4     count: samples, >= 1
 *   12   4     channels  \
 *   16   4     height     > each >= 1: a sample is c x h x w elements
 *   20   4     width     /
 *   24   4     classes: 1..256, every label is below it
 *   28   4     shard_size: GP_SHARD_SIZE_MIN..GP_SHARD_SIZE_MAX
 *   32   8     total: bytes of the stream, count x c x h x w x elsize + count
 *   40   4     n_shards: ceil(total / shard_size), <= GP_SHARD_COUNT_MAX
 *   44   32n   the shards' BLAKE2b-256 digests, in stream order
 *
 * A manifest whose fields disagree (total, n_shards, the length) is
 * refused (-EBADMSG). */
#ifndef GP_PROTO_SHARD_H
#define GP_PROTO_SHARD_H

#include <stddef.h>
#include <stdint.h>

#define GP_SHARD_HASH_SIZE 32
#define GP_SHARD_HEAD_SIZE 44
#define GP_SHARD_SIZE_MIN 4096u
#define GP_SHARD_SIZE_MAX (16u << 20)
#define GP_SHARD_SIZE_DEFAULT (1u << 20)
#define GP_SHARD_COUNT_MAX 8192u
#define GP_SHARD_MANIFEST_MAX \
	(GP_SHARD_HEAD_SIZE + GP_SHARD_HASH_SIZE * GP_SHARD_COUNT_MAX)
#define GP_SHARD_DTYPE_U8 0
#define GP_SHARD_DTYPE_F32 1

struct gp_shard_manifest {
	uint8_t dtype;
	uint32_t count;
	uint32_t shape[3];  /* channels, height, width */
	uint32_t classes;
	uint32_t shard_size;
	uint64_t total;
	uint32_t n_shards;
	uint8_t *hashes;    /* owned: n_shards x GP_SHARD_HASH_SIZE */
	uint8_t *raw;       /* owned: the encoded manifest */
	size_t raw_len;
	uint8_t id[GP_SHARD_HASH_SIZE]; /* BLAKE2b-256 of raw */
};

/* Describes stream[0..len) (borrowed: a data set's stream, see above) of
 * count samples of shape (borrowed, 3 values) elements of dtype, cut into
 * shard_size bytes: hashes every shard and encodes the manifest. Returns 0
 * and fills *ret (release with gp_shard_manifest_finish()), -EINVAL when
 * the arguments disagree or exceed the limits, -ENOMEM. */
int gp_shard_manifest_build(const uint8_t *stream, size_t len, uint8_t dtype,
			    uint32_t count, const uint32_t shape[3],
			    uint32_t classes, uint32_t shard_size,
			    struct gp_shard_manifest *ret);

/* Decodes and checks a manifest buf[0..len) (borrowed; copied). Returns 0
 * and fills *ret (release with gp_shard_manifest_finish()), -EBADMSG when
 * malformed or inconsistent, -EPROTONOSUPPORT for another version or an
 * unknown dtype, -ENOMEM. *ret is written only on success. */
int gp_shard_manifest_decode(const uint8_t *buf, size_t len,
			     struct gp_shard_manifest *ret);

/* Frees what m owns and zeroes it; safe on a zeroed manifest. */
void gp_shard_manifest_finish(struct gp_shard_manifest *m);

/* Bytes of shard i of m (i < n_shards), 0 beyond. */
size_t gp_shard_len(const struct gp_shard_manifest *m, uint32_t i);

/* Whether data[0..len) (borrowed) is shard i of m: 0, or -EINVAL (no such
 * shard or the wrong length) or -EBADMSG (the digest differs). */
int gp_shard_check(const struct gp_shard_manifest *m, uint32_t i,
		   const uint8_t *data, size_t len);

/* Writes the lower-case hex of a digest (65 bytes with the NUL) to out. */
void gp_shard_hex(const uint8_t hash[GP_SHARD_HASH_SIZE], char out[65]);

#endif
