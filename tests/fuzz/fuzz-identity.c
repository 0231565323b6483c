/* Fuzzes the identity key file decoder (proto/identity.c,
 * gp_identity_parse) from memory: anything but a 48-byte file with the
 * magic and a matching checksum must be refused with a message; a key
 * that loads must derive subkeys and a fingerprint. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gp_identity *id = NULL;
	char err[256] = "", fp[GP_FINGERPRINT_LEN + 1];
	uint8_t sub[GP_KEY_SIZE];

	if (gp_identity_parse(data, size, "fuzz.key", &id, err,
			      sizeof(err)) == 0) {
		if (size != GP_IDENTITY_FILE_SIZE || !id ||
		    gp_identity_derive_key(id, "gp-fuzz", sub) != 0)
			abort();
		gp_identity_fingerprint(id->public_key, fp);
		if (strlen(fp) != GP_FINGERPRINT_LEN)
			abort();
		gp_identity_destroy(id);
	} else if (err[0] == '\0' || id) {
		abort();
	}
	return 0;
}
