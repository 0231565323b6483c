/* Fuzz target for the token file decoder (kernels/tokens.h): whatever the
 * bytes, a decoded file holds only ids below its vocabulary, and every
 * window gathers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tokens.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gp_tokens *t = NULL;
	char err[256];
	float x[8];
	int32_t y[8];

	if (gp_tokens_decode(data, size, "fuzz", &t, err, sizeof(err)) != 0)
		return 0;
	for (size_t i = 0; i < t->count; i++)
		if (t->ids[i] >= t->vocab)
			__builtin_trap();
	for (uint32_t k = 0; k < gp_tokens_windows(t, 8) && k < 64; k++) {
		if (gp_tokens_gather(t, 8, &k, 1, x, y) != 0)
			__builtin_trap();
		for (size_t j = 0; j < 8; j++)
			if (y[j] < 0 || (uint32_t)y[j] >= t->vocab)
				__builtin_trap();
	}
	(void)gp_tokens_fingerprint(t);
	gp_tokens_destroy(t);
	return 0;
}
