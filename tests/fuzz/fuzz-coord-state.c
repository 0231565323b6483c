/* Fuzz target for the coordinator's checkpoint decoders (ssp, params,
 * sched, the outer momentum). The first byte picks the decoder (3: the
 * outer momentum, into a store of 44 floats; else its value mod 3); the
 * rest is the blob. Each blob
 * is decoded twice: as given (so the CRC check itself is exercised) and with
 * its trailing CRC recomputed (so mutations reach the payload checks). A
 * blob that decodes must re-encode to the same bytes and survive a few
 * operations. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "params.h"
#include "gp-endian.h"
#include "scheduler.h"
#include "ssp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_same(const uint8_t *a, size_t alen, uint8_t *b, size_t blen)
{
	if (alen != blen || memcmp(a, b, alen) != 0)
		abort();
	free(b);
}

static void try_ssp(const uint8_t *d, size_t n)
{
	struct gp_ssp *ssp = NULL;
	uint8_t *out = NULL;
	size_t out_len = 0;
	uint64_t id;

	if (gp_ssp_load(d, n, &ssp) < 0)
		return;
	if (gp_ssp_save(ssp, &out, &out_len) == 0)
		check_same(d, n, out, out_len);
	if (gp_ssp_count(ssp) > 0) {
		struct gp_ssp_agent_info a;

		if (gp_ssp_get_at(ssp, 0, &a) != 0 || a.live)
			abort();
		if (gp_ssp_revive(ssp, a.id, NULL) != 0 ||
		    !gp_ssp_may_compute(ssp, a.id))
			abort();
		(void)gp_ssp_wait(ssp, a.id, NULL);
		(void)gp_ssp_pop_ready(ssp, &id);
	}
	gp_ssp_destroy(ssp);
}

static void try_params(const uint8_t *d, size_t n)
{
	struct gp_params *p = NULL;
	uint8_t *out = NULL;
	size_t out_len = 0;
	float *g;

	if (gp_params_load(d, n, &p) < 0)
		return;
	if (gp_params_save(p, &out, &out_len) == 0)
		check_same(d, n, out, out_len);
	g = calloc(gp_params_size(p), sizeof(float));
	if (g) {
		if (gp_params_apply(p, g, gp_params_size(p), NULL) < 0)
			abort();
		free(g);
	}
	(void)gp_params_changed_since(p, 0, NULL, 0);
	gp_params_destroy(p);
}

static void try_outer(const uint8_t *d, size_t n)
{
	static const struct gp_tensor_shape shapes[] = {
		{ "w", 10, 4 },
		{ "b", 1, 4 },
	};
	struct gp_params_config cfg = { .lr = 0.1f, .momentum = 0.9f };
	struct gp_params *p = NULL;
	uint8_t *out = NULL;
	size_t out_len = 0;
	float g[44] = { 0 };

	if (gp_params_create(&cfg, shapes, 2, &p) < 0 ||
	    gp_params_set_outer(p, 0.7f, 0.9f) < 0)
		abort();
	if (gp_params_load_outer(p, d, n) == 0) {
		if (gp_params_save_outer(p, &out, &out_len) == 0)
			check_same(d, n, out, out_len);
		g[0] = 1;
		if (gp_params_apply(p, g, 44, NULL) != 0)
			abort();
	}
	gp_params_destroy(p);
}

static void try_sched(const uint8_t *d, size_t n)
{
	struct gp_sched *s = NULL;
	uint8_t *out = NULL;
	size_t out_len = 0, got = 0;
	uint64_t ids[4];
	uint32_t idx[8];

	if (gp_sched_load(d, n, &s) < 0)
		return;
	/* Versions 1 (no redo list) and 2 (its entries without a rate
	 * position) are read and written as version 3. */
	if (gp_sched_save(s, &out, &out_len) == 0) {
		if (n >= 6 && gp_get_le16(d + 4) < 3)
			free(out);
		else
			check_same(d, n, out, out_len);
	}
	if (gp_sched_assign(s, 1, 0, 4, ids, &got) == 0 && got > 0) {
		size_t n_idx;

		/* Building the permutation of a large set is slow; the fuzzer
		 * gains nothing from it. */
		if (gp_sched_config(s)->n_samples <= 65536)
			(void)gp_sched_samples(s, ids[0], idx, 8, &n_idx);
		for (size_t i = 0; i < got; i++)
			if (gp_sched_complete(s, 1, ids[i], NULL) != 0)
				abort();
		/* Taken back and handed out again (a redo when its epoch has
		 * completed meanwhile). */
		if (gp_sched_reopen(s, ids[0]) == 0 &&
		    (gp_sched_assign(s, 2, 0, 1, ids, &got) != 0 || got != 1 ||
		     gp_sched_complete(s, 2, ids[0], NULL) != 0))
			abort();
	}
	(void)gp_sched_release_agent(s, 1);
	gp_sched_destroy(s);
}

static void try_all(uint8_t which, const uint8_t *d, size_t n)
{
	if (which == 3) {
		try_outer(d, n);
		return;
	}
	switch (which % 3) {
	case 0:
		try_ssp(d, n);
		break;
	case 1:
		try_params(d, n);
		break;
	default:
		try_sched(d, n);
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy;
	uint32_t crc;

	if (size < 1)
		return 0;
	try_all(data[0], data + 1, size - 1);
	if (size < 1 + GP_BLOB_HEADER_SIZE + GP_BLOB_TRAILER_SIZE)
		return 0;
	copy = malloc(size - 1);
	if (!copy)
		return 0;
	memcpy(copy, data + 1, size - 1);
	crc = gp_crc32(copy, size - 1 - 4);
	for (int i = 0; i < 4; i++)
		copy[size - 1 - 4 + i] = (uint8_t)(crc >> (8 * i));
	try_all(data[0], copy, size - 1);
	free(copy);
	return 0;
}
