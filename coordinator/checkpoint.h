/* The checkpoint container: a few tagged, opaque sections (parameters,
 * optimizer state, SSP clocks, scheduler progress) in one checksummed blob.
 * The ledger stores the blob; the modules that own each section serialise
 * and restore its bytes. A blob read back from SQLite is untrusted input
 * (disk rot, a hand-edited database): gp_checkpoint_decode checks every
 * length and both checksums and is fuzzed (tests/fuzz/fuzz-checkpoint.c).
 *
 * Layout, all integers little-endian:
 *   header, GP_CHECKPOINT_HEADER_SIZE (32) bytes:
 *     offset  0  4  magic "GPCK"
 *     offset  4  2  format version, GP_CHECKPOINT_VERSION (1)
 *     offset  6  2  flags, 0 (anything else is refused)
 *     offset  8  4  number of sections, at most GP_CHECKPOINT_MAX_SECTIONS
 *     offset 12  4  CRC-32 (zlib) of the section area
 *     offset 16  8  length of the section area (everything after the header)
 *     offset 24  4  reserved, 0
 *     offset 28  4  CRC-32 of header bytes 0..27
 *   then each section:
 *     offset  0  4  tag (non-zero, unique within the blob)
 *     offset  4  4  reserved, 0
 *     offset  8  8  payload length
 *     offset 16  .  payload, then zero padding to a multiple of 8 bytes
 * Unknown tags are kept and ignored by readers, so that a newer coordinator
 * may add sections. */
#ifndef GP_CHECKPOINT_H
#define GP_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#define GP_CHECKPOINT_MAGIC "GPCK"
#define GP_CHECKPOINT_VERSION 1
#define GP_CHECKPOINT_HEADER_SIZE 32
#define GP_CHECKPOINT_SECTION_HEADER_SIZE 16
#define GP_CHECKPOINT_MAX_SECTIONS 32
/* A blob larger than this is refused before any allocation (1 GiB). */
#define GP_CHECKPOINT_MAX_SIZE ((uint64_t)1 << 30)

/* Section tags in use. */
enum gp_checkpoint_tag {
	GP_CKPT_PARAMS = 1,    /* parameter store and momentum (params) */
	/* 2: reserved, never written (the momentum is in GP_CKPT_PARAMS) */
	GP_CKPT_CLOCKS = 3,    /* SSP clocks (coordinator/ssp) */
	GP_CKPT_PROGRESS = 4,  /* epoch and minibatch progress (coordinator/sched) */
	GP_CKPT_JOB = 5,       /* the job file text the run started from */
	/* The model the parameters belong to, in canonical text
	 * (gp_model_spec_format(), no NUL), as the ledger's jobs.model holds
	 * it: a job's [model] file = names a file outside the job text.
	 * Absent in checkpoints written before it existed, whose model is
	 * the GP_CKPT_JOB text's [model] spec. */
	GP_CKPT_MODEL = 6,
	/* The adaptive optimiser's state (optim.h: AdamW's moments and
	 * steps), in jobs with optimizer = adamw. */
	GP_CKPT_OPTIM = 7,
	/* The outer optimiser's momentum (params.h gp_params_save_outer()),
	 * in jobs with an outer_optimizer. */
	GP_CKPT_OUTER = 8,
};

struct gp_checkpoint_section {
	uint32_t tag;
	const uint8_t *data; /* borrowed */
	size_t len;
};

/* Builds a blob from n sections (borrowed; tags non-zero and unique).
 * On success *ret is a malloc'd buffer owned by the caller and *ret_len its
 * size. Returns 0, -EINVAL (bad tag, too many sections), -E2BIG (beyond
 * GP_CHECKPOINT_MAX_SIZE) or -ENOMEM. */
int gp_checkpoint_encode(const struct gp_checkpoint_section *sections,
			 size_t n, uint8_t **ret, size_t *ret_len);

/* Checks a blob (borrowed, len bytes) and fills sections[0..*ret_n) with
 * pointers into it (valid as long as buf is). sections must have room for
 * GP_CHECKPOINT_MAX_SECTIONS entries. Returns 0, -EBADMSG for anything
 * malformed (bad magic, checksum, lengths, padding, duplicate tag),
 * -ENOTSUP for an unknown version or flag. */
int gp_checkpoint_decode(const uint8_t *buf, size_t len,
			 struct gp_checkpoint_section *sections,
			 size_t *ret_n);

/* Returns the section with the given tag, or NULL. */
const struct gp_checkpoint_section *
gp_checkpoint_find(const struct gp_checkpoint_section *sections, size_t n,
		   uint32_t tag);

#endif
