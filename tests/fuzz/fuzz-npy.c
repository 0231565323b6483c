/* Fuzz target for the .npy reader and the .npy data-set checks. Input: two
 * little-endian bytes giving the split point, then an images file and a
 * labels file. The rest of the input is also decoded on its own. */
#include <stdint.h>
#include <stdio.h>

#include "data.h"
#include "npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gp_dataset *ds = NULL;
	char err[GP_DATA_ERR_MAX];
	const uint8_t *rest;
	size_t split, rest_len;
	struct gp_npy a;

	if (size < 2)
		return 0;
	rest = data + 2;
	rest_len = size - 2;
	split = ((size_t)data[0] | (size_t)data[1] << 8) % (rest_len + 1);
	if (gp_npy_decode(rest, rest_len, "fuzz", &a, err, sizeof(err)) == 0) {
		if (a.data < rest || a.data + a.count * a.elsize != rest + rest_len)
			__builtin_trap();
		for (uint64_t i = 0; i < a.count && i < 64; i++)
			(void)gp_npy_double(&a, i);
	}
	if (gp_data_decode_npy(rest, split, "images", rest + split,
			       rest_len - split, "labels", &ds, err,
			       sizeof(err)) == 0) {
		size_t len;
		const uint8_t *s = gp_data_stream(ds, &len);

		if (gp_data_check_stream(s, len, ds->count, ds->dtype,
					 ds->shape, ds->classes, "fuzz", err,
					 sizeof(err)) != 0)
			__builtin_trap();
		gp_data_destroy(ds);
	}
	return 0;
}
