/* IDX decoding (gzip or plain) and the Fashion-MNIST data set. One decoder
 * serves files and the fuzz target: files are read whole (they are at most
 * a few tens of MB compressed) and decoded from memory. The payload buffer
 * grows with the bytes actually inflated, never to the size a header
 * merely claims. */
#include "data.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "gp-endian.h"
#include "gp-config.h"
#include "npy.h"

/* First allocation for a gzip payload; doubled as data arrives. */
#define GROW_START ((size_t)1 << 20)

static int fail(char *err, size_t err_len, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t err_len, int code, const char *fmt, ...)
{
	va_list ap;

	if (err && err_len > 0) {
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
	}
	return code;
}

/* A byte source over a memory buffer, inflating when it holds gzip. */
struct src {
	const uint8_t *buf;
	size_t len, pos;
	bool gz, zinit, zend;
	z_stream zs;
};

/* Reads up to n bytes into dst. Returns the number read (fewer only at
 * the end of the data) or -EBADMSG / -ENOMEM for a zlib failure, whose
 * text is left in *ret_msg. */
static int64_t src_read(struct src *s, uint8_t *dst, size_t n,
			const char **ret_msg)
{
	size_t got = 0;

	if (!s->gz) {
		size_t avail = s->len - s->pos;

		got = n < avail ? n : avail;
		memcpy(dst, s->buf + s->pos, got);
		s->pos += got;
		return (int64_t)got;
	}
	while (got < n && !s->zend) {
		size_t want = n - got;
		int zr;

		if (s->zs.avail_in == 0 && s->pos < s->len) {
			size_t chunk = s->len - s->pos;

			if (chunk > UINT_MAX)
				chunk = UINT_MAX;
			s->zs.next_in = (Bytef *)(uintptr_t)(s->buf + s->pos);
			s->zs.avail_in = (uInt)chunk;
			s->pos += chunk;
		}
		if (want > UINT_MAX)
			want = UINT_MAX;
		s->zs.next_out = dst + got;
		s->zs.avail_out = (uInt)want;
		zr = inflate(&s->zs, Z_NO_FLUSH);
		got += want - s->zs.avail_out;
		if (zr == Z_STREAM_END) {
			s->zend = true;
		} else if (zr == Z_BUF_ERROR) {
			/* No progress: only possible here when the input
			 * is used up, i.e. the stream is cut short. */
			if (s->zs.avail_in == 0 && s->pos == s->len)
				break;
		} else if (zr == Z_MEM_ERROR) {
			*ret_msg = "out of memory";
			return -ENOMEM;
		} else if (zr != Z_OK) {
			*ret_msg = s->zs.msg ? s->zs.msg : zError(zr);
			return -EBADMSG;
		}
	}
	return (int64_t)got;
}

int gp_data_idx_decode(const void *buf, size_t len, const char *name,
		       unsigned ndims, struct gp_idx *ret, char *err,
		       size_t err_len)
{
	struct src s = { .buf = buf, .len = len };
	struct gp_idx idx = { .ndims = ndims };
	uint8_t head[16], extra;
	const char *zmsg = "";
	size_t total = 1, cap = 0, have = 0;
	uint32_t magic;
	int64_t got;
	int r;

	if (!buf || !ret || ndims < 1 || ndims > 3)
		return fail(err, err_len, -EINVAL, "%s: bad arguments",
			    name ? name : "(null)");
	if (!name)
		name = "(memory)";
	if (len >= 2 && s.buf[0] == 0x1f && s.buf[1] == 0x8b) {
		s.gz = true;
		/* 16 + MAX_WBITS: a gzip wrapper, CRC checked at the end. */
		if (inflateInit2(&s.zs, 16 + MAX_WBITS) != Z_OK)
			return fail(err, err_len, -ENOMEM,
				    "%s: cannot start zlib", name);
		s.zinit = true;
	}
	got = src_read(&s, head, 4 + 4 * (size_t)ndims, &zmsg);
	if (got < 0) {
		r = fail(err, err_len, (int)got, "%s: corrupt gzip data (%s)",
			 name, zmsg);
		goto out;
	}
	if (got < 4) {
		r = fail(err, err_len, -ENODATA,
			 "%s: truncated: %lld bytes, too short for an IDX "
			 "header",
			 name, (long long)got);
		goto out;
	}
	magic = gp_get_be32(head);
	if (magic != (0x0800u | ndims)) {
		r = fail(err, err_len, -EPROTO,
			 "%s: wrong magic number 0x%08x (expected 0x%08x: IDX "
			 "of unsigned bytes with %u dimension%s)",
			 name, (unsigned)magic, 0x0800u | ndims, ndims,
			 ndims == 1 ? "" : "s");
		goto out;
	}
	if ((size_t)got < 4 + 4 * (size_t)ndims) {
		r = fail(err, err_len, -ENODATA,
			 "%s: truncated: the header ends after %lld bytes",
			 name, (long long)got);
		goto out;
	}
	for (unsigned i = 0; i < ndims; i++) {
		idx.dims[i] = gp_get_be32(head + 4 + 4 * i);
		if (idx.dims[i] == 0) {
			r = fail(err, err_len, -ERANGE,
				 "%s: wrong dimensions: dimension %u is zero",
				 name, i + 1);
			goto out;
		}
		/* Both factors are below 2^32 and total stays below
		 * GP_DATA_IDX_MAX, so this cannot overflow 64 bits. */
		total *= idx.dims[i];
		if (total > GP_DATA_IDX_MAX) {
			r = fail(err, err_len, -ERANGE,
				 "%s: wrong dimensions: the header declares "
				 "more than %zu bytes",
				 name, (size_t)GP_DATA_IDX_MAX);
			goto out;
		}
	}
	if (!s.gz && len - s.pos < total) {
		r = fail(err, err_len, -ENODATA,
			 "%s: truncated: the header declares %zu bytes of "
			 "data, %zu present",
			 name, total, len - s.pos);
		goto out;
	}
	/* Plain input is checked above; gzip input grows the buffer with
	 * the data actually inflated. */
	cap = s.gz && total > GROW_START ? GROW_START : total;
	idx.data = malloc(cap);
	if (!idx.data) {
		r = fail(err, err_len, -ENOMEM, "%s: out of memory", name);
		goto out;
	}
	while (have < total) {
		if (have == cap) {
			size_t ncap = cap * 2 < total ? cap * 2 : total;
			uint8_t *p = realloc(idx.data, ncap);

			if (!p) {
				r = fail(err, err_len, -ENOMEM,
					 "%s: out of memory", name);
				goto out;
			}
			idx.data = p;
			cap = ncap;
		}
		size_t want = cap - have;

		got = src_read(&s, idx.data + have, want, &zmsg);
		if (got < 0) {
			r = fail(err, err_len, (int)got,
				 "%s: corrupt gzip data (%s)", name, zmsg);
			goto out;
		}
		have += (size_t)got;
		if ((size_t)got < want)
			break;
	}
	if (have < total) {
		r = fail(err, err_len, -ENODATA,
			 "%s: truncated: the header declares %zu bytes of "
			 "data, %zu present",
			 name, total, have);
		goto out;
	}
	/* The data must end here: one more byte is trailing garbage, and a
	 * gzip stream must reach its end (which checks the CRC). */
	got = src_read(&s, &extra, 1, &zmsg);
	if (got < 0) {
		r = fail(err, err_len, (int)got, "%s: corrupt gzip data (%s)",
			 name, zmsg);
		goto out;
	}
	if (got > 0 || (s.gz && s.zend && (s.zs.avail_in > 0 ||
					    s.pos < s.len))) {
		r = fail(err, err_len, -E2BIG,
			 "%s: trailing data after the %zu bytes the header "
			 "declares",
			 name, total);
		goto out;
	}
	if (s.gz && !s.zend) {
		r = fail(err, err_len, -ENODATA,
			 "%s: truncated: the gzip stream ends early", name);
		goto out;
	}
	idx.len = total;
	*ret = idx;
	idx.data = NULL;
	r = 0;
out:
	if (s.zinit)
		inflateEnd(&s.zs);
	free(idx.data);
	return r;
}

void gp_data_idx_finish(struct gp_idx *idx)
{
	if (!idx)
		return;
	free(idx->data);
	idx->data = NULL;
	idx->len = 0;
}

uint64_t gp_data_fingerprint(const struct gp_dataset *ds)
{
	uLong ci = crc32(0L, Z_NULL, 0), cl = crc32(0L, Z_NULL, 0);
	size_t n = ds->count * ds->features * gp_data_elsize(ds->dtype);

	/* crc32() takes a uInt length: feed large buffers in pieces. */
	for (size_t off = 0; off < n; off += 1u << 30)
		ci = crc32(ci, ds->images + off,
			   (uInt)(n - off < (1u << 30) ? n - off : (1u << 30)));
	cl = crc32(cl, ds->labels, (uInt)ds->count);
	return (uint64_t)(uint32_t)ci << 32 | (uint32_t)(cl ^ (uint32_t)ds->count);
}

void gp_data_destroy(struct gp_dataset *ds)
{
	if (!ds)
		return;
	/* labels lives in the images allocation. */
	free(ds->images);
	free(ds);
}

int gp_data_create(size_t count, uint8_t dtype, uint32_t c, uint32_t h,
		   uint32_t w, uint32_t classes, struct gp_dataset **ret)
{
	size_t es = gp_data_elsize(dtype), features, bytes;
	struct gp_dataset *ds;

	if (!ret || !count || !es || !c || !h || !w || !classes ||
	    classes > GP_DATA_LABEL_MAX + 1)
		return -EINVAL;
	features = (size_t)c * h;
	if (features > GP_DATA_FILE_MAX / w)
		return -E2BIG;
	features *= w;
	if (count > GP_DATA_FILE_MAX / features / es)
		return -E2BIG;
	bytes = count * features * es;
	ds = calloc(1, sizeof(*ds));
	if (!ds)
		return -ENOMEM;
	ds->images = calloc(bytes + count, 1);
	if (!ds->images) {
		free(ds);
		return -ENOMEM;
	}
	ds->labels = ds->images + bytes;
	ds->count = count;
	ds->features = features;
	ds->shape[0] = c;
	ds->shape[1] = h;
	ds->shape[2] = w;
	ds->dtype = dtype;
	ds->classes = classes;
	*ret = ds;
	return 0;
}

const uint8_t *gp_data_stream(const struct gp_dataset *ds, size_t *ret_len)
{
	*ret_len = ds->count * ds->features * gp_data_elsize(ds->dtype) +
		   ds->count;
	return ds->images;
}

int gp_data_check_stream(const uint8_t *buf, size_t len, size_t count,
			 uint8_t dtype, const uint32_t shape[3],
			 uint32_t classes, const char *name, char *err,
			 size_t err_len)
{
	size_t es = gp_data_elsize(dtype), n;

	if (!es || !count || !shape[0] || !shape[1] || !shape[2] ||
	    !classes || classes > GP_DATA_LABEL_MAX + 1)
		return fail(err, err_len, -EINVAL, "%s: bad data set shape",
			    name);
	n = (size_t)shape[0] * shape[1] * shape[2];
	if (n > GP_DATA_FILE_MAX || count > GP_DATA_FILE_MAX / n / es ||
	    len != count * n * es + count)
		return fail(err, err_len, -EINVAL,
			    "%s: %zu bytes do not hold %zu samples of %zu "
			    "elements", name, len, count, n);
	n *= count;
	for (size_t i = 0; dtype == GP_DATA_F32 && i < n; i++) {
		if (!isfinite(gp_get_lef32(buf + 4 * i)))
			return fail(err, err_len, -EDOM,
				    "%s: sample %zu holds a value that is "
				    "not finite", name, i / (n / count));
	}
	for (size_t i = 0; i < count; i++) {
		if (buf[n * es + i] >= classes)
			return fail(err, err_len, -EDOM,
				    "%s: label %u at index %zu is outside "
				    "0..%u", name, buf[n * es + i], i,
				    classes - 1);
	}
	return 0;
}

int gp_data_decode_pair(const void *images, size_t images_len,
			const char *images_name, const void *labels,
			size_t labels_len, const char *labels_name,
			struct gp_dataset **ret, char *err, size_t err_len)
{
	struct gp_idx im = { 0 }, lb = { 0 };
	struct gp_dataset *ds = NULL;
	int r;

	if (!ret)
		return fail(err, err_len, -EINVAL, "bad arguments");
	if (!images_name)
		images_name = "(images)";
	if (!labels_name)
		labels_name = "(labels)";
	r = gp_data_idx_decode(images, images_len, images_name, 3, &im, err,
			       err_len);
	if (r < 0)
		goto out;
	if (im.dims[1] != GP_DATA_SIDE || im.dims[2] != GP_DATA_SIDE) {
		r = fail(err, err_len, -ERANGE,
			 "%s: wrong dimensions: images are %ux%u, expected "
			 "%dx%d",
			 images_name, (unsigned)im.dims[1],
			 (unsigned)im.dims[2], GP_DATA_SIDE, GP_DATA_SIDE);
		goto out;
	}
	r = gp_data_idx_decode(labels, labels_len, labels_name, 1, &lb, err,
			       err_len);
	if (r < 0)
		goto out;
	if (lb.dims[0] != im.dims[0]) {
		r = fail(err, err_len, -EINVAL,
			 "%s: holds %u labels but %s holds %u images",
			 labels_name, (unsigned)lb.dims[0], images_name,
			 (unsigned)im.dims[0]);
		goto out;
	}
	for (size_t i = 0; i < lb.len; i++) {
		if (lb.data[i] >= GP_DATA_CLASSES) {
			r = fail(err, err_len, -EDOM,
				 "%s: label %u at index %zu is outside 0..%d",
				 labels_name, (unsigned)lb.data[i], i,
				 GP_DATA_CLASSES - 1);
			goto out;
		}
	}
	r = gp_data_create(lb.len, GP_DATA_U8, 1, GP_DATA_SIDE, GP_DATA_SIDE,
			   GP_DATA_CLASSES, &ds);
	if (r < 0) {
		r = fail(err, err_len, r, "%s: %s", images_name,
			 r == -ENOMEM ? "out of memory" : "too many images");
		goto out;
	}
	memcpy(ds->images, im.data, lb.len * GP_DATA_PIXELS);
	memcpy(ds->labels, lb.data, lb.len);
	*ret = ds;
	r = 0;
out:
	gp_data_idx_finish(&im);
	gp_data_idx_finish(&lb);
	return r;
}

/* Reads a whole file into *ret_buf (owned by the caller). */
static int read_file(const char *path, uint8_t **ret_buf, size_t *ret_len,
		     char *err, size_t err_len)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t have = 0, size;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail(err, err_len, -errno, "%s: cannot open: %s", path,
			    strerror(errno));
	if (fstat(fd, &st) < 0) {
		r = fail(err, err_len, -errno, "%s: cannot stat: %s", path,
			 strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		r = fail(err, err_len, -EINVAL, "%s: not a regular file",
			 path);
		goto out;
	}
	if ((uint64_t)st.st_size > GP_DATA_FILE_MAX) {
		r = fail(err, err_len, -E2BIG,
			 "%s: %lld bytes, larger than the %zu allowed", path,
			 (long long)st.st_size, (size_t)GP_DATA_FILE_MAX);
		goto out;
	}
	size = (size_t)st.st_size;
	buf = malloc(size ? size : 1);
	if (!buf) {
		r = fail(err, err_len, -ENOMEM, "%s: out of memory", path);
		goto out;
	}
	while (have < size) {
		ssize_t n = read(fd, buf + have, size - have);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = fail(err, err_len, -errno, "%s: cannot read: %s",
				 path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break; /* shrank under us: decode what is there */
		have += (size_t)n;
	}
	*ret_buf = buf;
	*ret_len = have;
	buf = NULL;
	r = 0;
out:
	free(buf);
	close(fd);
	return r;
}

int gp_data_load(const char *images_path, const char *labels_path,
		 struct gp_dataset **ret, char *err, size_t err_len)
{
	uint8_t *im = NULL, *lb = NULL;
	size_t im_len = 0, lb_len = 0;
	int r;

	if (!images_path || !labels_path || !ret)
		return fail(err, err_len, -EINVAL, "bad arguments");
	if ((r = read_file(images_path, &im, &im_len, err, err_len)) < 0 ||
	    (r = read_file(labels_path, &lb, &lb_len, err, err_len)) < 0)
		goto out;
	r = gp_data_decode_pair(im, im_len, images_path, lb, lb_len,
				labels_path, ret, err, err_len);
out:
	free(im);
	free(lb);
	return r;
}

int gp_data_load_npy(const char *images_path, const char *labels_path,
		     struct gp_dataset **ret, char *err, size_t err_len)
{
	uint8_t *im = NULL, *lb = NULL;
	size_t im_len = 0, lb_len = 0;
	int r;

	if (!images_path || !labels_path || !ret)
		return fail(err, err_len, -EINVAL, "bad arguments");
	if ((r = read_file(images_path, &im, &im_len, err, err_len)) < 0 ||
	    (r = read_file(labels_path, &lb, &lb_len, err, err_len)) < 0)
		goto out;
	r = gp_data_decode_npy(im, im_len, images_path, lb, lb_len,
			       labels_path, ret, err, err_len);
out:
	free(im);
	free(lb);
	return r;
}

int gp_data_load_fashion_mnist(const char *dir, bool train,
			       struct gp_dataset **ret, char *err,
			       size_t err_len)
{
	const char *prefix = train ? "train" : "t10k";
	char im[4096], lb[4096];

	if (!dir)
		dir = getenv("GP_DATA_DIR");
	if (!dir || !*dir)
		dir = GP_DATA_DIR_DEFAULT;
	if (snprintf(im, sizeof(im), "%s/%s-images-idx3-ubyte.gz", dir,
		     prefix) >= (int)sizeof(im) ||
	    snprintf(lb, sizeof(lb), "%s/%s-labels-idx1-ubyte.gz", dir,
		     prefix) >= (int)sizeof(lb))
		return fail(err, err_len, -ENAMETOOLONG,
			    "%s: path too long", dir);
	return gp_data_load(im, lb, ret, err, err_len);
}

/* GCC's default -O2 cost model leaves loops of unknown length scalar; the
 * pixel conversion is 100 000 floats a minibatch. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("tree-vectorize", "vect-cost-model=dynamic")))
#endif
static void u8_to_floats(float *restrict dst, const uint8_t *restrict src,
			 size_t n)
{
	for (size_t i = 0; i < n; i++)
		dst[i] = (float)src[i] * (1.0f / 255.0f);
}

void gp_data_to_floats(float *dst, const uint8_t *src, size_t n,
		       uint8_t dtype)
{
	if (dtype == GP_DATA_U8) {
		u8_to_floats(dst, src, n);
		return;
	}
	for (size_t i = 0; i < n; i++)
		dst[i] = gp_get_lef32(src + 4 * i);
}

int gp_data_gather(const struct gp_dataset *ds, const uint32_t *idx,
		   size_t n, float *x, int32_t *labels)
{
	size_t f, row_bytes;

	if (!ds || !x || !labels)
		return -EINVAL;
	f = ds->features;
	row_bytes = f * gp_data_elsize(ds->dtype);
	for (size_t i = 0; i < n; i++) {
		size_t j = idx ? idx[i] : i;

		if (j >= ds->count)
			return -EINVAL;
		gp_data_to_floats(x + i * f, ds->images + j * row_bytes, f,
				  ds->dtype);
		labels[i] = ds->labels[j];
	}
	return 0;
}

int gp_data_split(const struct gp_dataset *ds, double share, uint64_t seed,
		  struct gp_dataset **ret_train, struct gp_dataset **ret_test)
{
	struct gp_dataset *parts[2] = { NULL, NULL };
	size_t n_test, got[2] = { 0, 0 }, row;
	uint32_t *perm = NULL;
	uint8_t *is_test = NULL;
	int r;

	if (!ds || !ret_train || !ret_test || !(share > 0 && share < 1) ||
	    ds->count < 2 || ds->count > UINT32_MAX)
		return -EINVAL;
	n_test = (size_t)(share * (double)ds->count + 0.5);
	if (n_test < 1)
		n_test = 1;
	if (n_test >= ds->count)
		n_test = ds->count - 1;
	perm = malloc(ds->count * sizeof(*perm));
	is_test = calloc(ds->count, 1);
	if (!perm || !is_test) {
		r = -ENOMEM;
		goto out;
	}
	gp_data_shuffle(perm, ds->count, &seed);
	for (size_t i = 0; i < n_test; i++)
		is_test[perm[i]] = 1;
	r = gp_data_create(ds->count - n_test, ds->dtype, ds->shape[0],
			   ds->shape[1], ds->shape[2], ds->classes, &parts[0]);
	if (r >= 0)
		r = gp_data_create(n_test, ds->dtype, ds->shape[0],
				   ds->shape[1], ds->shape[2], ds->classes,
				   &parts[1]);
	if (r < 0)
		goto out;
	row = ds->features * gp_data_elsize(ds->dtype);
	for (size_t i = 0; i < ds->count; i++) {
		struct gp_dataset *p = parts[is_test[i]];
		size_t k = got[is_test[i]]++;

		memcpy(p->images + k * row, ds->images + i * row, row);
		p->labels[k] = ds->labels[i];
	}
	*ret_train = parts[0];
	*ret_test = parts[1];
	parts[0] = parts[1] = NULL;
	r = 0;
out:
	gp_data_destroy(parts[0]);
	gp_data_destroy(parts[1]);
	free(perm);
	free(is_test);
	return r;
}

int gp_data_decode_npy(const void *images, size_t images_len,
		       const char *images_name, const void *labels,
		       size_t labels_len, const char *labels_name,
		       struct gp_dataset **ret, char *err, size_t err_len)
{
	struct gp_npy im, lb;
	struct gp_dataset *ds = NULL;
	uint32_t shape[3];
	uint64_t n, features;
	int64_t max = 0;
	uint8_t dtype;
	int r;

	if (!ret)
		return fail(err, err_len, -EINVAL, "bad arguments");
	if (!images_name)
		images_name = "(images)";
	if (!labels_name)
		labels_name = "(labels)";
	r = gp_npy_decode(images, images_len, images_name, &im, err, err_len);
	if (r < 0)
		return r;
	r = gp_npy_decode(labels, labels_len, labels_name, &lb, err, err_len);
	if (r < 0)
		return r;
	if (im.ndims < 2 || im.ndims > 4)
		return fail(err, err_len, -ERANGE,
			    "%s: images have %u dimensions; expected N x C x H "
			    "x W, N x H x W or N x F", images_name, im.ndims);
	for (unsigned i = 0; i < im.ndims; i++) {
		if (im.shape[i] == 0 || im.shape[i] > UINT32_MAX)
			return fail(err, err_len, -ERANGE,
				    "%s: dimension %u of the images is %llu",
				    images_name, i,
				    (unsigned long long)im.shape[i]);
	}
	n = im.shape[0];
	shape[0] = im.ndims == 4 ? (uint32_t)im.shape[1] : 1;
	shape[1] = im.ndims == 2 ? 1 : (uint32_t)im.shape[im.ndims - 2];
	shape[2] = (uint32_t)im.shape[im.ndims - 1];
	features = im.count / n;
	if (im.kind == GP_NPY_UINT && im.elsize == 1)
		dtype = GP_DATA_U8;
	else if (im.kind == GP_NPY_FLOAT)
		dtype = GP_DATA_F32;
	else
		return fail(err, err_len, -ENOTSUP,
			    "%s: images of dtype '%s' are not supported "
			    "(uint8 or float32 are; float64 is converted)",
			    images_name, im.descr);
	if (!((lb.ndims == 1 || (lb.ndims == 2 && lb.shape[1] == 1)) &&
	      (lb.kind == GP_NPY_UINT || lb.kind == GP_NPY_INT)))
		return fail(err, err_len, lb.ndims == 1 || lb.ndims == 2 ?
					      -ENOTSUP : -ERANGE,
			    "%s: labels must be integers of shape N or N x 1 "
			    "(dtype '%s', %u dimensions)", labels_name,
			    lb.descr, lb.ndims);
	if (lb.shape[0] != n)
		return fail(err, err_len, -EINVAL,
			    "%s: holds %llu labels but %s holds %llu samples",
			    labels_name, (unsigned long long)lb.shape[0],
			    images_name, (unsigned long long)n);
	for (uint64_t i = 0; i < n; i++) {
		int64_t v = gp_npy_int(&lb, i);

		if (v < 0 || v > GP_DATA_LABEL_MAX)
			return fail(err, err_len, -EDOM,
				    "%s: label %lld at index %llu is outside "
				    "0..%d", labels_name, (long long)v,
				    (unsigned long long)i, GP_DATA_LABEL_MAX);
		if (v > max)
			max = v;
	}
	r = gp_data_create((size_t)n, dtype, shape[0], shape[1], shape[2],
			   (uint32_t)max + 1, &ds);
	if (r < 0)
		return fail(err, err_len, r, "%s: %s", images_name,
			    r == -ENOMEM ? "out of memory" : "too large");
	if (dtype == GP_DATA_U8) {
		memcpy(ds->images, im.data, (size_t)im.count);
	} else {
		for (uint64_t i = 0; i < im.count; i++) {
			double v = gp_npy_double(&im, i);

			if (!isfinite(v) || fabs(v) > (double)FLT_MAX) {
				gp_data_destroy(ds);
				return fail(err, err_len, -EDOM,
					    "%s: sample %llu holds a value "
					    "that is not a finite float32",
					    images_name,
					    (unsigned long long)(i / features));
			}
			gp_put_lef32(ds->images + 4 * i, (float)v);
		}
	}
	for (uint64_t i = 0; i < n; i++)
		ds->labels[i] = (uint8_t)gp_npy_int(&lb, i);
	*ret = ds;
	return 0;
}

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

void gp_data_shuffle(uint32_t *perm, size_t n, uint64_t *state)
{
	for (size_t i = 0; i < n; i++)
		perm[i] = (uint32_t)i;
	for (size_t i = n; i > 1; i--) {
		/* The modulo bias is below 2^-40 for any n here. */
		size_t j = (size_t)(splitmix64(state) % i);
		uint32_t t = perm[i - 1];

		perm[i - 1] = perm[j];
		perm[j] = t;
	}
}
