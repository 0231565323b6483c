/* The IDX reader: every kind of bad file gets its own error code and a
 * message that names the file, from small files written into a temporary
 * directory; then the real Fashion-MNIST files load. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "data.h"
#include "npy.h"
#include "test.h"

static char dir[4096];

struct blob {
	uint8_t *p;
	size_t len;
};

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* An IDX file: magic, dims, then payload_len bytes of a pattern. */
static struct blob idx(uint32_t magic, unsigned ndims, const uint32_t *dims,
		       size_t payload_len, uint8_t mod)
{
	struct blob b;

	b.len = 4 + 4 * ndims + payload_len;
	b.p = malloc(b.len);
	ASSERT_NOT_NULL(b.p);
	put32(b.p, magic);
	for (unsigned i = 0; i < ndims; i++)
		put32(b.p + 4 + 4 * i, dims[i]);
	for (size_t i = 0; i < payload_len; i++)
		b.p[4 + 4 * ndims + i] = (uint8_t)(i * 7 % mod);
	return b;
}

static struct blob gz(struct blob in)
{
	struct blob out;
	z_stream zs = { 0 };

	out.len = compressBound(in.len) + 64;
	out.p = malloc(out.len);
	ASSERT_NOT_NULL(out.p);
	ASSERT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8,
			       Z_DEFAULT_STRATEGY),
		  Z_OK);
	zs.next_in = in.p;
	zs.avail_in = (uInt)in.len;
	zs.next_out = out.p;
	zs.avail_out = (uInt)out.len;
	ASSERT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
	out.len = zs.total_out;
	deflateEnd(&zs);
	free(in.p);
	return out;
}

static const char *write_blob(const char *name, struct blob b)
{
	static char paths[32][4200];
	static int next;
	char *path = paths[next++ % 32];
	FILE *f;

	snprintf(path, sizeof(paths[0]), "%s/%s", dir, name);
	f = fopen(path, "wb");
	ASSERT_NOT_NULL(f);
	ASSERT_EQ(fwrite(b.p, 1, b.len, f), b.len);
	ASSERT_OK(fclose(f));
	free(b.p);
	return path;
}

static struct blob images(uint32_t n)
{
	uint32_t d[3] = { n, 28, 28 };

	return idx(0x803, 3, d, (size_t)n * 784, 251);
}

static struct blob labels(uint32_t n)
{
	uint32_t d[1] = { n };

	return idx(0x801, 1, d, n, 10);
}

/* Loads the pair, expects code, and checks the message names culprit. */
static int expect(const char *im, const char *lb, int code,
		  const char *culprit, const char *words)
{
	struct gp_dataset *ds = (struct gp_dataset *)(uintptr_t)1;
	char err[GP_DATA_ERR_MAX] = "";
	int r = gp_data_load(im, lb, &ds, err, sizeof(err));

	printf("%d: %s\n", r, err);
	ASSERT_EQ(r, code);
	ASSERT(ds == (struct gp_dataset *)(uintptr_t)1);
	ASSERT(strstr(err, culprit) != NULL);
	ASSERT(strstr(err, words) != NULL);
	return r;
}

static void unlink_all(void)
{
	static const char *const names[] = {
		"im", "lb", "im.gz", "lb.gz", "magic", "lbmagic", "dims",
		"zero", "short", "shortgz", "huge", "lb3", "cut.gz", "crc.gz",
		"method.gz", "trail", "trail.gz", "label10", "empty", "hdr",
	};
	char path[4200];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		unlink(path);
	}
	rmdir(dir);
}

static void test_errors(void)
{
	const char *im = write_blob("im", images(3));
	const char *lb = write_blob("lb", labels(3));
	const char *img = write_blob("im.gz", gz(images(3)));
	const char *lbg = write_blob("lb.gz", gz(labels(3)));
	struct gp_dataset *ds;
	char err[GP_DATA_ERR_MAX];
	int codes[16], n = 0;
	uint32_t d3[3];
	struct blob b;

	/* The good ones, plain and compressed. */
	ASSERT_OK(gp_data_load(im, lb, &ds, err, sizeof(err)));
	ASSERT_UINT_EQ(ds->count, 3);
	ASSERT_EQ(ds->images[784 + 1], 784 * 7 % 251 + 7);
	ASSERT_EQ(ds->labels[2], 4);
	gp_data_destroy(ds);
	ASSERT_OK(gp_data_load(img, lbg, &ds, err, sizeof(err)));
	ASSERT_UINT_EQ(ds->count, 3);
	ASSERT_EQ(ds->labels[1], 7);
	{
		float x[2 * GP_DATA_PIXELS];
		int32_t l[2];
		uint32_t pick[2] = { 2, 0 };

		ASSERT_OK(gp_data_gather(ds, pick, 2, x, l));
		ASSERT_EQ(l[0], 4);
		ASSERT_EQ(l[1], 0);
		ASSERT_NEAR(x[GP_DATA_PIXELS + 1], 7.0 / 255.0, 1e-7);
		ASSERT_NEAR(x[5], ds->images[2 * 784 + 5] / 255.0, 1e-7);
		pick[1] = 3;
		ASSERT_EQ(gp_data_gather(ds, pick, 2, x, l), -EINVAL);
	}
	gp_data_destroy(ds);
	gp_data_destroy(NULL);

	codes[n++] = expect("/nonexistent/im", lb, -ENOENT, "/nonexistent/im",
			    "cannot open");
	codes[n++] = expect(write_blob("magic", idx(0x801, 3, (uint32_t[]){
				 3, 28, 28 }, 3 * 784, 251)),
			    lb, -EPROTO, "/magic", "wrong magic number");
	expect(im, write_blob("lbmagic", images(3)), -EPROTO, "/lbmagic",
	       "wrong magic number");
	codes[n++] = expect(write_blob("dims", idx(0x803, 3, (uint32_t[]){
				 3, 32, 32 }, 3 * 1024, 251)),
			    lb, -ERANGE, "/dims", "32x32, expected 28x28");
	expect(write_blob("zero", images(0)), lb, -ERANGE, "/zero",
	       "dimension 1 is zero");
	/* A header claiming far more than the data: refused without
	 * allocating what it claims. */
	d3[0] = 0x7fffffff;
	d3[1] = d3[2] = 28;
	expect(write_blob("huge", idx(0x803, 3, d3, 100, 3)), lb, -ERANGE,
	       "/huge", "more than");
	d3[0] = 1000000;
	codes[n++] = expect(write_blob("short", idx(0x803, 3, d3, 2 * 784,
						    251)),
			    lb, -ENODATA, "/short", "truncated");
	expect(write_blob("shortgz", gz(idx(0x803, 3, d3, 2 * 784, 251))), lb,
	       -ENODATA, "/shortgz", "truncated");
	expect(write_blob("hdr", idx(0x803, 1, (uint32_t[]){ 3 }, 0, 1)), lb,
	       -ENODATA, "/hdr", "header ends");
	expect(write_blob("empty", (struct blob){ malloc(1), 0 }), lb,
	       -ENODATA, "/empty", "truncated");
	codes[n++] = expect(im, write_blob("lb3", labels(2)), -EINVAL, "/lb3",
			    "holds 2 labels but");
	b = gz(images(3));
	b.len = b.len / 2;
	expect(write_blob("cut.gz", b), lb, -ENODATA, "/cut.gz",
	       "truncated");
	b = gz(images(3));
	b.p[b.len - 6] ^= 0x40; /* in the CRC-32 trailer */
	codes[n++] = expect(write_blob("crc.gz", b), lb, -EBADMSG, "/crc.gz",
			    "corrupt gzip data");
	b = gz(images(3));
	b.p[2] = 7; /* compression method */
	expect(write_blob("method.gz", b), lb, -EBADMSG, "/method.gz",
	       "corrupt gzip data");
	b = images(3);
	b.p = realloc(b.p, b.len + 1);
	b.p[b.len++] = 0;
	codes[n++] = expect(write_blob("trail", b), lb, -E2BIG, "/trail",
			    "trailing data");
	b = gz(labels(3));
	b.p = realloc(b.p, b.len + 2);
	b.p[b.len++] = 'x';
	b.p[b.len++] = 'y';
	expect(im, write_blob("trail.gz", b), -E2BIG, "/trail.gz",
	       "trailing data");
	b = labels(3);
	b.p[8 + 1] = 10;
	codes[n++] = expect(im, write_blob("label10", b), -EDOM, "/label10",
			    "label 10 at index 1 is outside 0..9");
	/* Every kind of problem has its own code. */
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			ASSERT_NE(codes[i], codes[j]);
}

static void test_shuffle(void)
{
	uint32_t a[1000], b[1000];
	uint64_t s1 = 9, s2 = 9;
	int seen[1000] = { 0 }, moved = 0;

	gp_data_shuffle(a, 1000, &s1);
	gp_data_shuffle(b, 1000, &s2);
	ASSERT_MEM_EQ(a, b, sizeof(a));
	for (int i = 0; i < 1000; i++) {
		ASSERT_LT(a[i], 1000);
		ASSERT_EQ(seen[a[i]]++, 0);
		moved += a[i] != (uint32_t)i;
	}
	ASSERT_GT(moved, 900);
	gp_data_shuffle(b, 1000, &s1);
	ASSERT(memcmp(a, b, sizeof(a)) != 0);
}

static void test_real(void)
{
	struct gp_dataset *train, *test;
	char err[GP_DATA_ERR_MAX];
	size_t hist[GP_DATA_CLASSES] = { 0 };

	if (gp_data_load_fashion_mnist(NULL, true, &train, err, sizeof(err)))
		GP_TEST_FAIL("%s", err);
	if (gp_data_load_fashion_mnist(NULL, false, &test, err, sizeof(err)))
		GP_TEST_FAIL("%s", err);
	ASSERT_UINT_EQ(train->count, 60000);
	ASSERT_UINT_EQ(test->count, 10000);
	/* Fashion-MNIST is balanced: 6000 / 1000 of each class. */
	for (size_t i = 0; i < train->count; i++)
		hist[train->labels[i]]++;
	for (int c = 0; c < GP_DATA_CLASSES; c++)
		ASSERT_UINT_EQ(hist[c], 6000);
	ASSERT_EQ(test->labels[0], 9); /* the first test image: a boot */
	/* The fingerprint matches copies and tells sets apart: one pixel or
	 * one label changed changes it. */
	{
		uint64_t f = gp_data_fingerprint(train);

		ASSERT_UINT_EQ(gp_data_fingerprint(train), f);
		ASSERT(gp_data_fingerprint(test) != f);
		train->images[12345] ^= 1;
		ASSERT(gp_data_fingerprint(train) != f);
		train->images[12345] ^= 1;
		train->labels[59999] = (uint8_t)((train->labels[59999] + 1) % 10);
		ASSERT(gp_data_fingerprint(train) != f);
	}
	gp_data_destroy(train);
	gp_data_destroy(test);
	ASSERT_EQ(gp_data_load_fashion_mnist("/nonexistent", true, &train, err,
					     sizeof(err)),
		  -ENOENT);
	ASSERT(strstr(err, "/nonexistent/train-images-idx3-ubyte.gz") != NULL);
}

/* A .npy file in memory: version major, the header dict text, then
 * data_len bytes of data (copied). Owned by the caller. */
static struct blob npy(unsigned major, const char *dict, const void *data,
		       size_t data_len)
{
	size_t pre = major == 1 ? 10 : 12, hl = strlen(dict) + 1;
	struct blob b;

	/* Padded so that the data starts at a multiple of 64, as numpy does. */
	while ((pre + hl) % 64)
		hl++;
	b.len = pre + hl + data_len;
	b.p = malloc(b.len);
	ASSERT_NOT_NULL(b.p);
	memcpy(b.p, "\x93NUMPY", 6);
	b.p[6] = (uint8_t)major;
	b.p[7] = 0;
	if (major == 1) {
		b.p[8] = (uint8_t)hl;
		b.p[9] = (uint8_t)(hl >> 8);
	} else {
		b.p[8] = (uint8_t)hl;
		b.p[9] = (uint8_t)(hl >> 8);
		b.p[10] = b.p[11] = 0;
	}
	memset(b.p + pre, ' ', hl);
	memcpy(b.p + pre, dict, strlen(dict));
	b.p[pre + hl - 1] = '\n';
	if (data_len)
		memcpy(b.p + pre + hl, data, data_len);
	return b;
}

/* Decodes images + labels and expects code, and (for an error) text in
 * the message. */
static void expect_npy(struct blob im, struct blob lb, int code,
		       const char *text)
{
	struct gp_dataset *ds = NULL;
	char err[GP_DATA_ERR_MAX] = "";
	int r = gp_data_decode_npy(im.p, im.len, "x.npy", lb.p, lb.len,
				   "y.npy", &ds, err, sizeof(err));

	if (r != code)
		GP_TEST_FAIL("expected %d, got %d (%s)", code, r, err);
	if (code < 0 && !strstr(err, text))
		GP_TEST_FAIL("'%s' not in '%s'", text, err);
	gp_data_destroy(ds);
	free(im.p);
	free(lb.p);
}

static void test_npy(void)
{
	static const uint8_t px[2 * 3 * 4] = { 0, 255, 2, 3, 4, 5, 6, 7, 8, 9,
					       10, 11, 12, 13, 14, 15, 16, 17,
					       18, 19, 20, 21, 22, 23 };
	static const int64_t lb64[2] = { 1, 4 };
	static const int16_t lb16[2] = { 1, 300 };
	const char *u8 = "{'descr': '|u1', 'fortran_order': False, "
			 "'shape': (2, 3, 4), }";
	const char *lb = "{'descr': '<i8', 'fortran_order': False, "
			 "'shape': (2,), }";
	struct gp_dataset *ds = NULL, *tr = NULL, *te = NULL;
	char err[GP_DATA_ERR_MAX];
	float fx[2 * 12], f32[2 * 12];
	int32_t y[2];
	struct gp_npy a;
	struct blob b;

	/* uint8 N x H x W, int64 labels: C = 1, classes = max + 1. */
	{
		struct blob im = npy(1, u8, px, sizeof(px));
		struct blob l = npy(1, lb, lb64, sizeof(lb64));

		if (gp_data_decode_npy(im.p, im.len, "x", l.p, l.len, "y", &ds,
				       err, sizeof(err)))
			GP_TEST_FAIL("%s", err);
		free(im.p);
		free(l.p);
	}
	ASSERT_UINT_EQ(ds->count, 2);
	ASSERT_UINT_EQ(ds->features, 12);
	ASSERT_UINT_EQ(ds->shape[0], 1);
	ASSERT_UINT_EQ(ds->shape[1], 3);
	ASSERT_UINT_EQ(ds->shape[2], 4);
	ASSERT_UINT_EQ(ds->classes, 5);
	ASSERT_EQ(ds->dtype, GP_DATA_U8);
	ASSERT_OK(gp_data_gather(ds, NULL, 2, fx, y));
	ASSERT(fx[1] == 1.0f && fx[0] == 0.0f);
	ASSERT_EQ(y[1], 4);
	{
		size_t len;
		const uint8_t *st = gp_data_stream(ds, &len);

		ASSERT_UINT_EQ(len, 2 * 12 + 2);
		ASSERT_EQ(st[24], 1);
		ASSERT_EQ(st[25], 4);
		ASSERT_OK(gp_data_check_stream(st, len, 2, GP_DATA_U8,
					       ds->shape, 5, "s", err,
					       sizeof(err)));
		ASSERT_EQ(gp_data_check_stream(st, len, 2, GP_DATA_U8,
					       ds->shape, 4, "s", err,
					       sizeof(err)), -EDOM);
		ASSERT_EQ(gp_data_check_stream(st, len - 1, 2, GP_DATA_U8,
					       ds->shape, 5, "s", err,
					       sizeof(err)), -EINVAL);
	}
	/* A held-out share: one of two, each part in file order. */
	ASSERT_OK(gp_data_split(ds, 0.5, 7, &tr, &te));
	ASSERT_UINT_EQ(tr->count, 1);
	ASSERT_UINT_EQ(te->count, 1);
	ASSERT(tr->labels[0] != te->labels[0]);
	ASSERT_EQ(gp_data_split(ds, 0, 7, &tr, &te), -EINVAL);
	gp_data_destroy(tr);
	gp_data_destroy(te);
	gp_data_destroy(ds);

	/* float32 N x C x H x W (format 2.0) taken as is; float64 converted. */
	for (size_t i = 0; i < 24; i++)
		f32[i] = (float)i * 0.25f - 1.0f;
	{
		struct blob im = npy(2, "{'descr': '<f4', 'fortran_order': "
				     "False, 'shape': (2, 3, 2, 2), }", f32,
				     sizeof(f32));
		struct blob l = npy(1, lb, lb64, sizeof(lb64));

		ASSERT_OK(gp_data_decode_npy(im.p, im.len, "x", l.p, l.len, "y",
					     &ds, err, sizeof(err)));
		free(im.p);
		free(l.p);
	}
	ASSERT_EQ(ds->dtype, GP_DATA_F32);
	ASSERT_UINT_EQ(ds->shape[0], 3);
	ASSERT_OK(gp_data_gather(ds, NULL, 2, fx, y));
	ASSERT_MEM_EQ(fx, f32, sizeof(f32));
	gp_data_destroy(ds);

	/* Header forms numpy writes: double quotes, any key order, 'L'. */
	b = npy(1, "{\"shape\": (3L,), \"fortran_order\": False, "
		"\"descr\": \"<u2\"}", "\1\0\2\0\3\0", 6);
	ASSERT_OK(gp_npy_decode(b.p, b.len, "h", &a, err, sizeof(err)));
	ASSERT_UINT_EQ(a.count, 3);
	ASSERT_EQ(gp_npy_int(&a, 2), 3);
	free(b.p);

	/* Every refusal names the file and the problem. */
	b = npy(1, u8, px, sizeof(px));
	b.p[0] = 'x';
	expect_npy(b, npy(1, lb, lb64, sizeof(lb64)), -EPROTO,
		   "x.npy: not a NumPy .npy file");
	b = npy(1, u8, px, sizeof(px));
	b.p[6] = 4;
	expect_npy(b, npy(1, lb, lb64, sizeof(lb64)), -EPROTO,
		   "version 4.0 is not supported");
	expect_npy(npy(1, "{'descr': '|u1', 'fortran_order': True, "
		       "'shape': (2, 3, 4), }", px, sizeof(px)),
		   npy(1, lb, lb64, sizeof(lb64)), -ENOTSUP,
		   "x.npy: fortran_order is True");
	expect_npy(npy(1, "{'descr': '>f4', 'fortran_order': False, "
		       "'shape': (2, 3), }", px, sizeof(px)),
		   npy(1, lb, lb64, sizeof(lb64)), -ENOTSUP,
		   "x.npy: dtype '>f4' is not supported");
	expect_npy(npy(1, "{'descr': [('a', '<f4')], 'fortran_order': "
		       "False, 'shape': (2,), }", px, 8),
		   npy(1, lb, lb64, sizeof(lb64)), -ENOTSUP,
		   "structured dtypes");
	expect_npy(npy(1, "{'descr': '<i4', 'fortran_order': False, "
		       "'shape': (2, 3), }", px, sizeof(px)),
		   npy(1, lb, lb64, sizeof(lb64)), -ENOTSUP,
		   "images of dtype '<i4'");
	expect_npy(npy(1, "{'descr': '|u1', 'fortran_order': False, "
		       "'shape': (2, 3, 4), }", px, sizeof(px) - 1),
		   npy(1, lb, lb64, sizeof(lb64)), -ENODATA,
		   "x.npy: truncated");
	expect_npy(npy(1, "{'descr': '|u1', 'fortran_order': False, "
		       "'shape': (2, 3, 3), }", px, sizeof(px)),
		   npy(1, lb, lb64, sizeof(lb64)), -E2BIG, "after the data");
	expect_npy(npy(1, "{'descr': '|u1', 'fortran_order': False}", px,
		       sizeof(px)),
		   npy(1, lb, lb64, sizeof(lb64)), -EBADMSG, "lacks 'shape'");
	expect_npy(npy(1, "{'descr': '|u1', 'fortran_order': False, "
		       "'shape': (2, 3, 4), 'x': 1}", px, sizeof(px)),
		   npy(1, lb, lb64, sizeof(lb64)), -EBADMSG,
		   "unexpected or repeated key 'x'");
	expect_npy(npy(1, "{'descr': '|u1', 'fortran_order': False, "
		       "'shape': (24,), }", px, sizeof(px)),
		   npy(1, lb, lb64, sizeof(lb64)), -ERANGE,
		   "images have 1 dimensions");
	expect_npy(npy(1, u8, px, sizeof(px)),
		   npy(1, "{'descr': '<i8', 'fortran_order': False, "
		       "'shape': (1,), }", lb64, 8), -EINVAL,
		   "y.npy: holds 1 labels but x.npy holds 2 samples");
	expect_npy(npy(1, u8, px, sizeof(px)),
		   npy(1, "{'descr': '<i2', 'fortran_order': False, "
		       "'shape': (2,), }", lb16, sizeof(lb16)), -EDOM,
		   "y.npy: label 300 at index 1");
	expect_npy(npy(1, u8, px, sizeof(px)),
		   npy(1, "{'descr': '<f4', 'fortran_order': False, "
		       "'shape': (2,), }", f32, 8), -ENOTSUP,
		   "labels must be integers");
	{
		float bad[24];

		memcpy(bad, f32, sizeof(bad));
		bad[13] = 1.0f / 0.0f;
		expect_npy(npy(1, "{'descr': '<f4', 'fortran_order': False, "
			       "'shape': (2, 12), }", bad, sizeof(bad)),
			   npy(1, lb, lb64, sizeof(lb64)), -EDOM,
			   "x.npy: sample 1 holds a value that is not a "
			   "finite float32");
	}
	/* Files: a missing one is named. */
	ASSERT_EQ(gp_data_load_npy("/nonexistent/x.npy", "/nonexistent/y.npy",
				   &ds, err, sizeof(err)), -ENOENT);
	ASSERT(strstr(err, "/nonexistent/x.npy") != NULL);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(dir, sizeof(dir), "%s/gp-test-data-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	ASSERT_NOT_NULL(mkdtemp(dir));
	test_errors();
	test_shuffle();
	test_npy();
	test_real();
	unlink_all();
	printf("ok\n");
	return 0;
}
