/* Fuzz target for the data-set manifest decoder (proto/shard.h) and the
 * shard check against it: the input is a manifest; whatever decodes must
 * be self-consistent, and a shard of the right length that is not the
 * one named is refused. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gp_shard_manifest m;
	uint64_t sum = 0;
	uint8_t *zeros;
	size_t len;

	if (gp_shard_manifest_decode(data, size, &m) < 0)
		return 0;
	for (uint32_t i = 0; i < m.n_shards; i++)
		sum += gp_shard_len(&m, i);
	if (sum != m.total || m.raw_len != size ||
	    gp_shard_len(&m, m.n_shards) != 0)
		__builtin_trap();
	len = gp_shard_len(&m, 0);
	zeros = calloc(1, len);
	/* The all-zero shard may be shard 0 only if its digest says so. */
	if (zeros && gp_shard_check(&m, 0, zeros, len) == -EINVAL)
		__builtin_trap();
	free(zeros);
	gp_shard_manifest_finish(&m);
	return 0;
}
