/* Data-set manifests and shard digests (libsodium's BLAKE2b). */
#include "shard.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "gp-endian.h"

static const uint8_t magic[4] = { 'G', 'P', 'D', 'M' };

static size_t elsize(uint8_t dtype)
{
	return dtype == GP_SHARD_DTYPE_U8 ? 1 : dtype == GP_SHARD_DTYPE_F32 ? 4 : 0;
}

/* Checks the header fields against each other; 0 or -EBADMSG. */
static int check_fields(const struct gp_shard_manifest *m)
{
	uint64_t per;

	if (!m->count || !m->shape[0] || !m->shape[1] || !m->shape[2] ||
	    !m->classes || m->classes > 256 ||
	    m->shard_size < GP_SHARD_SIZE_MIN ||
	    m->shard_size > GP_SHARD_SIZE_MAX)
		return -EBADMSG;
	/* Each factor is below 2^32 and the stream at most
	 * GP_SHARD_COUNT_MAX x GP_SHARD_SIZE_MAX (2^37): check step by step
	 * so that nothing overflows. */
	per = (uint64_t)m->shape[0] * m->shape[1];
	if (per > (UINT64_C(1) << 40) / m->shape[2])
		return -EBADMSG;
	per = per * m->shape[2] * elsize(m->dtype) + 1;
	if (per > (UINT64_C(1) << 40) / m->count)
		return -EBADMSG;
	if (m->total != per * m->count || !m->n_shards ||
	    m->n_shards > GP_SHARD_COUNT_MAX ||
	    m->n_shards != (m->total + m->shard_size - 1) / m->shard_size)
		return -EBADMSG;
	return 0;
}

size_t gp_shard_len(const struct gp_shard_manifest *m, uint32_t i)
{
	uint64_t off = (uint64_t)i * m->shard_size;

	if (i >= m->n_shards)
		return 0;
	return (size_t)(m->total - off < m->shard_size ? m->total - off :
							   m->shard_size);
}

int gp_shard_check(const struct gp_shard_manifest *m, uint32_t i,
		   const uint8_t *data, size_t len)
{
	uint8_t h[GP_SHARD_HASH_SIZE];

	if (i >= m->n_shards || len != gp_shard_len(m, i))
		return -EINVAL;
	crypto_generichash(h, sizeof(h), data, len, NULL, 0);
	if (sodium_memcmp(h, m->hashes + (size_t)i * GP_SHARD_HASH_SIZE,
			  sizeof(h)) != 0)
		return -EBADMSG;
	return 0;
}

void gp_shard_hex(const uint8_t hash[GP_SHARD_HASH_SIZE], char out[65])
{
	sodium_bin2hex(out, 65, hash, GP_SHARD_HASH_SIZE);
}

void gp_shard_manifest_finish(struct gp_shard_manifest *m)
{
	if (!m)
		return;
	free(m->hashes);
	free(m->raw);
	memset(m, 0, sizeof(*m));
}

int gp_shard_manifest_build(const uint8_t *stream, size_t len, uint8_t dtype,
			    uint32_t count, const uint32_t shape[3],
			    uint32_t classes, uint32_t shard_size,
			    struct gp_shard_manifest *ret)
{
	struct gp_shard_manifest m = { 0 };
	uint8_t *p;

	if (!stream || !shape || !ret || !elsize(dtype))
		return -EINVAL;
	m.dtype = dtype;
	m.count = count;
	memcpy(m.shape, shape, sizeof(m.shape));
	m.classes = classes;
	m.shard_size = shard_size;
	m.total = len;
	m.n_shards = shard_size ? (uint32_t)((len + shard_size - 1) /
					     shard_size) : 0;
	if ((len + (uint64_t)shard_size - 1) / (shard_size ? shard_size : 1) >
	    GP_SHARD_COUNT_MAX || check_fields(&m) < 0)
		return -EINVAL;
	m.raw_len = GP_SHARD_HEAD_SIZE + (size_t)m.n_shards * GP_SHARD_HASH_SIZE;
	m.raw = calloc(1, m.raw_len);
	m.hashes = malloc((size_t)m.n_shards * GP_SHARD_HASH_SIZE);
	if (!m.raw || !m.hashes) {
		gp_shard_manifest_finish(&m);
		return -ENOMEM;
	}
	p = m.raw;
	memcpy(p, magic, 4);
	p[4] = 1;
	p[5] = dtype;
	gp_put_le32(p + 8, count);
	gp_put_le32(p + 12, shape[0]);
	gp_put_le32(p + 16, shape[1]);
	gp_put_le32(p + 20, shape[2]);
	gp_put_le32(p + 24, classes);
	gp_put_le32(p + 28, shard_size);
	gp_put_le64(p + 32, m.total);
	gp_put_le32(p + 40, m.n_shards);
	for (uint32_t i = 0; i < m.n_shards; i++) {
		uint8_t *h = m.hashes + (size_t)i * GP_SHARD_HASH_SIZE;

		crypto_generichash(h, GP_SHARD_HASH_SIZE,
				   stream + (size_t)i * shard_size,
				   gp_shard_len(&m, i), NULL, 0);
		memcpy(p + GP_SHARD_HEAD_SIZE + (size_t)i * GP_SHARD_HASH_SIZE,
		       h, GP_SHARD_HASH_SIZE);
	}
	crypto_generichash(m.id, sizeof(m.id), m.raw, m.raw_len, NULL, 0);
	*ret = m;
	return 0;
}

int gp_shard_manifest_decode(const uint8_t *buf, size_t len,
			     struct gp_shard_manifest *ret)
{
	struct gp_shard_manifest m = { 0 };

	if (!buf || !ret || len < GP_SHARD_HEAD_SIZE || len > GP_SHARD_MANIFEST_MAX ||
	    memcmp(buf, magic, 4) != 0)
		return -EBADMSG;
	if (buf[4] != 1 || !elsize(buf[5]))
		return -EPROTONOSUPPORT;
	if (gp_get_le16(buf + 6) != 0)
		return -EBADMSG;
	m.dtype = buf[5];
	m.count = gp_get_le32(buf + 8);
	m.shape[0] = gp_get_le32(buf + 12);
	m.shape[1] = gp_get_le32(buf + 16);
	m.shape[2] = gp_get_le32(buf + 20);
	m.classes = gp_get_le32(buf + 24);
	m.shard_size = gp_get_le32(buf + 28);
	m.total = gp_get_le64(buf + 32);
	m.n_shards = gp_get_le32(buf + 40);
	if (check_fields(&m) < 0 ||
	    len != GP_SHARD_HEAD_SIZE + (size_t)m.n_shards * GP_SHARD_HASH_SIZE)
		return -EBADMSG;
	m.raw_len = len;
	m.raw = malloc(len);
	m.hashes = malloc(len - GP_SHARD_HEAD_SIZE);
	if (!m.raw || !m.hashes) {
		gp_shard_manifest_finish(&m);
		return -ENOMEM;
	}
	memcpy(m.raw, buf, len);
	memcpy(m.hashes, buf + GP_SHARD_HEAD_SIZE, len - GP_SHARD_HEAD_SIZE);
	crypto_generichash(m.id, sizeof(m.id), m.raw, m.raw_len, NULL, 0);
	*ret = m;
	return 0;
}
