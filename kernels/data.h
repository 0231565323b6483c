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

/* Sample element types. */
enum gp_data_dtype {
	GP_DATA_U8 = 0,  /* bytes, scaled by 1/255 to [0, 1] when gathered */
	GP_DATA_F32 = 1, /* IEEE binary32 little-endian, finite, taken as is */
};
#define GP_DATA_DTYPE_MAX GP_DATA_F32
#define GP_DATA_LABEL_MAX 255 /* labels are bytes: at most 256 classes */

/* A labelled image set. Data sets made by this module hold their bytes in
 * one allocation, images then labels: the "stream" that content-addressed
 * shards cut up (gp_data_stream()). */
struct gp_dataset {
	size_t count;
	size_t features;     /* elements of one sample: c * h * w */
	uint32_t shape[3];   /* c, h, w */
	uint8_t dtype;       /* enum gp_data_dtype */
	uint32_t classes;    /* every label is below it (1..256) */
	uint8_t *images;     /* owned; count x features elements, row-major */
	uint8_t *labels;     /* count bytes; inside the images allocation
				(gp_data_create) or owned apart (a caller's
				struct on the stack, never destroyed) */
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

/* Converts n elements of dtype (u8 scaled by 1/255, f32 LE as is) from src
 * to floats in dst; both borrowed. */
void gp_data_to_floats(float *dst, const uint8_t *src, size_t n,
		       uint8_t dtype);

/* A fingerprint of the data set's bytes (CRC-32 of the images and of the
 * labels, and the count), so that two copies can be matched: equal copies
 * give equal values; different ones differ but for a 1 in 2^32 chance.
 * Not a security check: the coordinator is trusted with the data anyway. */
uint64_t gp_data_fingerprint(const struct gp_dataset *ds); /* ds borrowed */

/* Bytes of one element of dtype: 1 or 4, 0 when unknown. */
static inline size_t gp_data_elsize(uint8_t dtype)
{
	return dtype == GP_DATA_U8 ? 1 : dtype == GP_DATA_F32 ? 4 : 0;
}

/* Allocates an empty data set of count samples of c x h x w elements of
 * dtype with classes classes (labels zero): images and labels in one
 * allocation. Returns 0 and *ret (owned by the caller), -EINVAL for a
 * zero or unknown size or dtype, -E2BIG beyond GP_DATA_FILE_MAX bytes of
 * images, -ENOMEM. */
int gp_data_create(size_t count, uint8_t dtype, uint32_t c, uint32_t h,
		   uint32_t w, uint32_t classes, struct gp_dataset **ret);

/* The data set's bytes as one stream: count x features elements of its
 * dtype (f32 little-endian), then count label bytes. Sets *ret_len and
 * returns a pointer borrowed from ds (made by gp_data_create() or a
 * loader of this module). */
const uint8_t *gp_data_stream(const struct gp_dataset *ds, size_t *ret_len);

/* Checks a data set's stream (borrowed, len bytes) against the shape:
 * its length, finite f32 values and labels below classes. Returns 0 or a
 * negative errno with the reason in err (name names the source). */
int gp_data_check_stream(const uint8_t *buf, size_t len, size_t count,
			 uint8_t dtype, const uint32_t shape[3],
			 uint32_t classes, const char *name, char *err,
			 size_t err_len);

/* Loads a data set from NumPy .npy files (kernels/npy.h): images of shape
 * N x C x H x W, N x H x W (C = 1) or N x F (1 x 1 x F), uint8 (scaled
 * by 1/255 when gathered) or float32 (taken as is; float64 is converted,
 * non-finite values are refused), and labels of shape N or N x 1 of any
 * integer dtype with values 0..GP_DATA_LABEL_MAX. classes is the largest
 * label + 1. Errors name the file and the problem: those of
 * gp_npy_decode(), -ENOTSUP for an images dtype other than uint8 and
 * float32/64 or a labels dtype that is not an integer, -ERANGE for a
 * shape of the wrong rank or with a zero dimension, -EINVAL when the
 * counts disagree, -EDOM for a label outside 0..255 or a non-finite
 * value. */
int gp_data_load_npy(const char *images_path, const char *labels_path,
		     struct gp_dataset **ret, char *err, size_t err_len);

/* The same from two .npy files held in memory (borrowed). */
int gp_data_decode_npy(const void *images, size_t images_len,
		       const char *images_name, const void *labels,
		       size_t labels_len, const char *labels_name,
		       struct gp_dataset **ret, char *err, size_t err_len);

/* Splits ds (borrowed) into a training part and a test part of
 * round(share x count) samples (at least 1, at most count - 1), drawn with
 * gp_data_shuffle() from seed; each part keeps file order. share is in
 * (0, 1). Returns 0 and two new data sets (owned by the caller), -EINVAL
 * when a part would be empty, -ENOMEM. */
int gp_data_split(const struct gp_dataset *ds, double share, uint64_t seed,
		  struct gp_dataset **ret_train, struct gp_dataset **ret_test);

/* Frees a data set; NULL is a no-op. */
void gp_data_destroy(struct gp_dataset *ds);

/* Gathers samples idx[0..n) (each < ds->count; idx NULL means 0..n-1) into
 * x (n x ds->features floats: u8 scaled to [0, 1], f32 as is) and labels
 * (n), both
 * caller-owned. -EINVAL for an index out of range (nothing is written
 * past it). */
int gp_data_gather(const struct gp_dataset *ds, const uint32_t *idx,
		   size_t n, float *x, int32_t *labels);

/* Fills perm with a permutation of 0..n-1 drawn from *state (Fisher-Yates
 * with splitmix64), so a seed gives the same epoch order everywhere. */
void gp_data_shuffle(uint32_t *perm, size_t n, uint64_t *state);

#endif
