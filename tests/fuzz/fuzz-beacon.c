/* Fuzz target for proto/beacon: whatever decodes must encode back to the
 * same first GP_BEACON_SIZE bytes (flags aside, which encode writes as 0),
 * and nothing may read past the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "beacon.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gp_beacon b;
	uint8_t out[GP_BEACON_SIZE];
	uint8_t *copy;

	/* An exact-size heap copy, so that ASan sees any over-read. */
	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	if (gp_beacon_decode(copy, size, &b) == 0) {
		if (gp_beacon_encode(&b, out) != GP_BEACON_SIZE)
			abort();
		if (memcmp(out, copy, 5) != 0 ||
		    memcmp(out + 6, copy + 6, GP_BEACON_SIZE - 6) != 0)
			abort();
	}
	free(copy);
	return 0;
}
