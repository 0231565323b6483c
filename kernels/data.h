/* Fashion-MNIST as Debian's dataset-fashion-mnist installs it: IDX files,
 * gzip-compressed, in GP_DATA_DIR_DEFAULT (gp-config.h).
 *
 * IDX layout (big-endian): a magic number 00 00 <type> <ndims> (type 0x08 is
 * unsigned bytes), ndims 32-bit dimensions, then the product of the
 * dimensions in bytes. Images are count x 28 x 28 (0x00000803), labels are
 * count (0x00000801).
 *
 * Files are untrusted input: every failure is a negative errno plus a
 * message that names the file and the problem, and no allocation is larger
 * than the data actually present, whatever the header claims:
 *   -ENOENT etc.  the file cannot be read (the open/read errno)
 *   -EBADMSG      corrupt gzip data (bad header, bad deflate data, CRC)
 *   -ENODATA      truncated: fewer bytes than the header declares
 *   -E2BIG        more bytes than the header declares, or a file over
 *                 GP_DATA_FILE_MAX
 *   -EPROTO       wrong magic number (not IDX, not bytes, wrong ndims)
 *   -ERANGE       wrong dimensions (zero, images not 28 x 28, over
 *                 GP_DATA_IDX_MAX)
 *   -EINVAL       images and labels disagree on the count
 *   -EDOM         a label outside 0..GP_DATA_CLASSES - 1 */
#ifndef GP_DATA_H
#define GP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GP_DATA_CLASSES 10
#define GP_DATA_SIDE 28
#define GP_DATA_PIXELS (GP_DATA_SIDE * GP_DATA_SIDE)
#define GP_DATA_IDX_MAX ((size_t)1 << 30) /* bytes of IDX payload */
#define GP_DATA_FILE_MAX ((size_t)1 << 30) /* bytes of a file on disk */
#define GP_DATA_ERR_MAX 512 /* a message buffer that is always enough */

/* One decoded IDX file of unsigned bytes. */
struct gp_idx {
	unsigned ndims;
	uint32_t dims[3];
	uint8_t *data; /* owned; the product of dims bytes */
	size_t len;
};

/* A labelled image set. */
struct gp_dataset {
	size_t count;
	uint8_t *images; /* owned; count x GP_DATA_PIXELS, row-major */
	uint8_t *labels; /* owned; count, each < GP_DATA_CLASSES */
};

/* Decodes an IDX file held in memory, gzip-compressed (starting 1f 8b) or
 * not, that must have ndims dimensions (1 to 3). buf is borrowed; name is
 * used in messages only. On success *ret holds owned data (release with
 * gp_data_idx_finish()); on failure *ret is untouched and err (err_len
 * bytes; may be NULL) says why. */
int gp_data_idx_decode(const void *buf, size_t len, const char *name,
		       unsigned ndims, struct gp_idx *ret, char *err,
		       size_t err_len);

/* Frees idx's data; safe on a zeroed or finished gp_idx. */
void gp_data_idx_finish(struct gp_idx *idx);

/* Decodes an images file and a labels file held in memory (both borrowed)
 * into a data set, checking 28 x 28 images, equal counts and labels below
 * GP_DATA_CLASSES. *ret is owned by the caller (gp_data_destroy()). */
int gp_data_decode_pair(const void *images, size_t images_len,
			const char *images_name, const void *labels,
			size_t labels_len, const char *labels_name,
			struct gp_dataset **ret, char *err, size_t err_len);

/* The same from two files. */
int gp_data_load(const char *images_path, const char *labels_path,
		 struct gp_dataset **ret, char *err, size_t err_len);

/* Loads the Fashion-MNIST training set (train: 60000 images) or test set
 * (10000) from dir, or when dir is NULL from $GP_DATA_DIR or else
 * GP_DATA_DIR_DEFAULT. */
int gp_data_load_fashion_mnist(const char *dir, bool train,
			       struct gp_dataset **ret, char *err,
			       size_t err_len);

/* A fingerprint of the data set's bytes (CRC-32 of the images and of the
 * labels, and the count), so that two copies can be matched: equal copies
 * give equal values; different ones differ but for a 1 in 2^32 chance.
 * Not a security check: the coordinator is trusted with the data anyway. */
uint64_t gp_data_fingerprint(const struct gp_dataset *ds); /* ds borrowed */

/* Frees a data set; NULL is a no-op. */
void gp_data_destroy(struct gp_dataset *ds);

/* Gathers samples idx[0..n) (each < ds->count; idx NULL means 0..n-1) into
 * x (n x GP_DATA_PIXELS floats scaled to [0, 1]) and labels (n), both
 * caller-owned. -EINVAL for an index out of range (nothing is written
 * past it). */
int gp_data_gather(const struct gp_dataset *ds, const uint32_t *idx,
		   size_t n, float *x, int32_t *labels);

/* Fills perm with a permutation of 0..n-1 drawn from *state (Fisher-Yates
 * with splitmix64), so a seed gives the same epoch order everywhere. */
void gp_data_shuffle(uint32_t *perm, size_t n, uint64_t *state);

#endif
