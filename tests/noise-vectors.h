/* Runs Noise test vectors in the cacophony JSON format (the fields snow's
 * files use too; "handshake_hash" optional) against proto/noise.c.
 * Shared by tests/unit/test-noise.c and tools/check-noise-vectors.c. */
#ifndef GP_NOISE_VECTORS_H
#define GP_NOISE_VECTORS_H

#include <stdio.h>

struct gp_noise_vectors_result {
	int passed;
	int failed;
	/* Of the passed: vectors without "handshake_hash", checked by their
	 * messages alone (byte for byte). */
	int unhashed;
	/* Vectors whose protocol this implementation does not offer (other
	 * DH/cipher/hash, one-way patterns, multiple psks). */
	int skipped;
};

/* Runs every vector of the cacophony file at path (borrowed). Each failure is
 * described on log (borrowed; NULL for silence), one line per vector, and
 * with verbose every vector is listed. Returns 0 with *ret filled in (even if
 * some vectors failed), or a negative errno if the file cannot be read or is
 * not a cacophony vector file. */
int gp_noise_vectors_run(const char *path, FILE *log, int verbose,
			 struct gp_noise_vectors_result *ret);

#endif
