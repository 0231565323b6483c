/* Fuzz target for the IDX decoder and the data-set checks. Input: two
 * little-endian bytes giving the split point, then an images file and a
 * labels file (gzip or plain). The rest of the input is also decoded on its
 * own with every dimension count. */
#include <stdint.h>
#include <stdio.h>

#include "data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gp_dataset *ds = NULL;
	char err[GP_DATA_ERR_MAX];
	const uint8_t *rest;
	size_t split, rest_len;

	if (size < 2)
		return 0;
	rest = data + 2;
	rest_len = size - 2;
	split = ((size_t)data[0] | (size_t)data[1] << 8) % (rest_len + 1);
	for (unsigned nd = 1; nd <= 3; nd++) {
		struct gp_idx idx = { 0 };

		if (gp_data_idx_decode(rest, rest_len, "fuzz", nd, &idx, err,
				       sizeof(err)) == 0) {
			size_t total = 1;

			for (unsigned i = 0; i < idx.ndims; i++)
				total *= idx.dims[i];
			if (total != idx.len)
				__builtin_trap();
			gp_data_idx_finish(&idx);
		}
	}
	if (gp_data_decode_pair(rest, split, "images", rest + split,
				rest_len - split, "labels", &ds, err,
				sizeof(err)) == 0) {
		for (size_t i = 0; i < ds->count; i++)
			if (ds->labels[i] >= GP_DATA_CLASSES)
				__builtin_trap();
		gp_data_destroy(ds);
	}
	return 0;
}
