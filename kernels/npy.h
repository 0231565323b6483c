/* NumPy .npy arrays, read by their published format
 * (numpy.lib.format, format versions 1.0, 2.0 and 3.0):
 *
 *   6 bytes   magic "\x93NUMPY"
 *   1 byte    major version (1, 2 or 3), 1 byte minor version (0)
 *   u16 LE    header length (version 1), u32 LE (versions 2 and 3)
 *   header    a Python dict literal, ASCII (version 3: UTF-8), padded with
 *             spaces and ended by '\n':
 *             {'descr': '<f4', 'fortran_order': False, 'shape': (60000, 28, 28), }
 *   data      the product of the shape's elements, C order, no padding
 *
 * Accepted descr: '|u1' '|i1' '<u2' '<i2' '<u4' '<i4' '<u8' '<i8' '<f4'
 * '<f8' ('=' and, for one-byte types, '<' are taken as well; 'b1' bool
 * too). Refused, each with its own message naming the file: big-endian
 * types, structured or object dtypes, fortran_order True, more than
 * GP_NPY_DIMS_MAX dimensions, a data part shorter or longer than the
 * shape says.
 *
 * Files are untrusted input: errors are negative errno values with a
 * message (err) that names the file and the problem:
 *   -EPROTO     not .npy (magic), an unsupported version
 *   -EBADMSG    a header that does not parse (missing key, bad literal)
 *   -ENOTSUP    fortran_order True, a dtype not in the list above
 *   -ERANGE     too many dimensions, or sizes that overflow / exceed
 *               GP_NPY_DATA_MAX
 *   -ENODATA    fewer data bytes than the shape needs
 *   -E2BIG      more data bytes than the shape needs */
#ifndef GP_NPY_H
#define GP_NPY_H

#include <stddef.h>
#include <stdint.h>

#define GP_NPY_DIMS_MAX 4
#define GP_NPY_HEADER_MAX 65536          /* bytes of the header dict */
#define GP_NPY_DATA_MAX ((uint64_t)1 << 32) /* bytes of the data part */

enum gp_npy_kind {
	GP_NPY_BOOL = 'b',
	GP_NPY_UINT = 'u',
	GP_NPY_INT = 'i',
	GP_NPY_FLOAT = 'f',
};

/* A decoded array. data borrows from the buffer given to
 * gp_npy_decode(): the buffer must outlive it. */
struct gp_npy {
	char kind;           /* enum gp_npy_kind */
	unsigned elsize;     /* bytes of one element: 1, 2, 4 or 8 */
	char descr[8];       /* as in the file, e.g. "<f4" */
	unsigned ndims;      /* 0 (a scalar) .. GP_NPY_DIMS_MAX */
	uint64_t shape[GP_NPY_DIMS_MAX];
	uint64_t count;      /* product of the shape (1 for a scalar) */
	const uint8_t *data; /* count * elsize bytes, little-endian */
};

/* Decodes buf[0..len) (borrowed; ret->data points into it). name is used
 * in messages only. Returns 0 and fills *ret, or a negative errno (above)
 * with the reason in err (err_len bytes; may be NULL); *ret is then
 * untouched. */
int gp_npy_decode(const void *buf, size_t len, const char *name,
		  struct gp_npy *ret, char *err, size_t err_len);

/* Element i of a, an integer array (kind 'b', 'u' or 'i'), as int64 (a u8
 * value above INT64_MAX reads as INT64_MAX). a is borrowed. */
int64_t gp_npy_int(const struct gp_npy *a, uint64_t i);

/* Element i of a, any kind, as a double. */
double gp_npy_double(const struct gp_npy *a, uint64_t i);

#endif
