/* check-noise-vectors FILE...: runs Noise test vectors in the cacophony JSON
 * format against proto/noise.c and prints "N passed, M failed" (plus the
 * skipped count, and how many passed vectors had no handshake_hash: those,
 * as in snow's files, are checked by their messages, byte for byte). Exits
 * 0 only if every vector it could run passed and at least one ran. -v lists
 * every vector. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "noise-vectors.h"

int main(int argc, char **argv)
{
	struct gp_noise_vectors_result total = { 0 };
	int verbose = 0, files = 0;

	for (int i = 1; i < argc; i++) {
		struct gp_noise_vectors_result res;
		int r;

		if (strcmp(argv[i], "-v") == 0) {
			verbose = 1;
			continue;
		}
		files++;
		r = gp_noise_vectors_run(argv[i], stderr, verbose, &res);
		if (r < 0) {
			fprintf(stderr, "%s: cannot read vectors: %s\n",
				argv[i], strerror(-r));
			return 2;
		}
		total.passed += res.passed;
		total.failed += res.failed;
		total.skipped += res.skipped;
		total.unhashed += res.unhashed;
	}
	if (files == 0) {
		fprintf(stderr, "usage: %s [-v] VECTORS.json...\n", argv[0]);
		return 2;
	}
	printf("%d passed, %d failed", total.passed, total.failed);
	if (total.unhashed)
		printf(" (%d passed without handshake_hash: messages only)",
		       total.unhashed);
	if (total.skipped)
		printf(" (%d skipped: unsupported protocols)", total.skipped);
	printf("\n");
	return total.failed == 0 && total.passed > 0 ? 0 : 1;
}
