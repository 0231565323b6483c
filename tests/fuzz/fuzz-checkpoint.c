/* Fuzzes the checkpoint container decoder (coordinator/checkpoint.c): blobs
 * read back from the ledger are untrusted. The first input byte chooses
 * whether the checksums are fixed up before decoding, so that the fuzzer
 * reaches the section walk instead of stopping at the CRC; whatever decodes
 * must re-encode to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gp_checkpoint_section s[GP_CHECKPOINT_MAX_SECTIONS];
	uint8_t *buf, *again = NULL;
	size_t n = 0, len, again_len = 0;

	if (size < 1)
		return 0;
	len = size - 1;
	buf = malloc(len ? len : 1);
	if (!buf)
		return 0;
	memcpy(buf, data + 1, len);
	if ((data[0] & 1) && len >= GP_CHECKPOINT_HEADER_SIZE) {
		put32(buf + 12,
		      (uint32_t)crc32(0, buf + GP_CHECKPOINT_HEADER_SIZE,
				      (uInt)(len - GP_CHECKPOINT_HEADER_SIZE)));
		put32(buf + 28, (uint32_t)crc32(0, buf, 28));
	}
	if (gp_checkpoint_decode(buf, len, s, &n) == 0) {
		if (n > GP_CHECKPOINT_MAX_SECTIONS)
			abort();
		for (size_t i = 0; i < n; i++)
			if (s[i].data < buf || s[i].len > len ||
			    s[i].data + s[i].len > buf + len)
				abort();
		if (gp_checkpoint_encode(s, n, &again, &again_len) == 0 &&
		    (again_len != len || memcmp(again, buf, len) != 0))
			abort();
		free(again);
	}
	free(buf);
	return 0;
}
