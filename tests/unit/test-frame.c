/* Frame decoder and header writer: layout, split inputs, several frames
 * per input, and refusal of oversized or unknown frames before anything is
 * allocated. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "test.h"

static size_t put_frame(uint8_t *out, enum gp_frame_kind kind,
			const uint8_t *body, size_t len)
{
	ASSERT_OK(gp_frame_header_write(out, kind, len));
	if (len)
		memcpy(out + GP_FRAME_HEADER_SIZE, body, len);
	return GP_FRAME_HEADER_SIZE + len;
}

static void test_header_layout(void)
{
	uint8_t h[GP_FRAME_HEADER_SIZE];

	ASSERT_OK(gp_frame_header_write(h, GP_FRAME_TRANSPORT, 0x1234));
	ASSERT_EQ(h[0], 0x34);
	ASSERT_EQ(h[1], 0x12);
	ASSERT_EQ(h[2], 0);
	ASSERT_EQ(h[3], 0);
	ASSERT_EQ(h[4], GP_FRAME_TRANSPORT);
	ASSERT_EQ(gp_frame_header_write(h, GP_FRAME_TRANSPORT,
					GP_FRAME_MAX_BODY + 1),
		  -EMSGSIZE);
	ASSERT_EQ(gp_frame_header_write(h, (enum gp_frame_kind)7, 1), -EINVAL);
}

/* Several frames in one input come out one by one, in place. */
static void test_several_per_input(void)
{
	uint8_t buf[256], a[10], b[3];
	struct gp_frame_decoder d;
	struct gp_frame f;
	size_t n = 0, used, off = 0;

	memset(a, 'a', sizeof(a));
	memset(b, 'b', sizeof(b));
	n += put_frame(buf + n, GP_FRAME_HANDSHAKE, a, sizeof(a));
	n += put_frame(buf + n, GP_FRAME_TRANSPORT, b, sizeof(b));
	n += put_frame(buf + n, GP_FRAME_REFUSE, NULL, 0);

	gp_frame_decoder_init(&d, 0);
	ASSERT_EQ(gp_frame_decode(&d, buf, n, &used, &f), 1);
	ASSERT_EQ(f.kind, GP_FRAME_HANDSHAKE);
	ASSERT_EQ(f.len, sizeof(a));
	ASSERT(f.body == buf + GP_FRAME_HEADER_SIZE); /* no copy */
	ASSERT_MEM_EQ(f.body, a, sizeof(a));
	off += used;
	ASSERT_EQ(gp_frame_decode(&d, buf + off, n - off, &used, &f), 1);
	ASSERT_EQ(f.kind, GP_FRAME_TRANSPORT);
	ASSERT_EQ(f.len, sizeof(b));
	ASSERT_MEM_EQ(f.body, b, sizeof(b));
	off += used;
	ASSERT_EQ(gp_frame_decode(&d, buf + off, n - off, &used, &f), 1);
	ASSERT_EQ(f.kind, GP_FRAME_REFUSE);
	ASSERT_EQ(f.len, 0);
	off += used;
	ASSERT_EQ(off, n);
	ASSERT_EQ(gp_frame_decoder_pending(&d), 0);
	ASSERT_EQ(d.buf_cap, 0); /* nothing was ever buffered */
	gp_frame_decoder_finish(&d);
}

/* Every way of cutting a stream of three frames gives the same frames. */
static void test_every_split(void)
{
	uint8_t stream[2000], body[700];
	size_t n = 0;

	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(i * 31 + 7);
	n += put_frame(stream + n, GP_FRAME_TRANSPORT, body, 700);
	n += put_frame(stream + n, GP_FRAME_HANDSHAKE, body + 1, 1);
	n += put_frame(stream + n, GP_FRAME_TRANSPORT, body + 5, 600);

	for (size_t step = 1; step <= n; step = step < 20 ? step + 1 : step * 2) {
		struct gp_frame_decoder d;
		size_t pos = 0, got = 0;
		uint8_t copy[2000];

		memcpy(copy, stream, n);
		gp_frame_decoder_init(&d, 1000);
		while (pos < n) {
			size_t piece = step < n - pos ? step : n - pos;
			size_t off = 0;

			while (off < piece) {
				struct gp_frame f;
				size_t used;
				int r = gp_frame_decode(&d, copy + pos + off,
							piece - off, &used, &f);

				ASSERT_GE(r, 0);
				off += used;
				if (r == 0)
					continue;
				if (got == 0) {
					ASSERT_EQ(f.len, 700);
					ASSERT_MEM_EQ(f.body, body, 700);
				} else if (got == 1) {
					ASSERT_EQ(f.kind, GP_FRAME_HANDSHAKE);
					ASSERT_EQ(f.len, 1);
					ASSERT_EQ(f.body[0], body[1]);
				} else {
					ASSERT_EQ(f.len, 600);
					ASSERT_MEM_EQ(f.body, body + 5, 600);
				}
				got++;
			}
			pos += piece;
		}
		ASSERT_EQ(got, 3);
		ASSERT_EQ(gp_frame_decoder_pending(&d), 0);
		/* Split bodies are buffered in at most the largest length. */
		ASSERT_LE(d.buf_cap, 700);
		gp_frame_decoder_finish(&d);
	}
}

/* An oversized length is refused from the header alone: nothing of the body
 * is needed, nothing is allocated, and the error sticks. */
static void test_oversized(void)
{
	uint8_t hdr[GP_FRAME_HEADER_SIZE] = { 0xff, 0xff, 0xff, 0x7f,
					       GP_FRAME_TRANSPORT };
	uint8_t more[16] = { 0 };
	struct gp_frame_decoder d;
	struct gp_frame f;
	size_t used = 99;

	gp_frame_decoder_init(&d, 0);
	ASSERT_EQ(gp_frame_decode(&d, hdr, 3, &used, &f), 0);
	ASSERT_EQ(used, 3);
	ASSERT_EQ(gp_frame_decode(&d, hdr + 3, 2, &used, &f), -EMSGSIZE);
	ASSERT_EQ(d.buf_cap, 0);
	ASSERT(d.buf == NULL);
	ASSERT_EQ(gp_frame_decode(&d, more, sizeof(more), &used, &f),
		  -EMSGSIZE);
	gp_frame_decoder_finish(&d);

	/* One byte over a configured maximum. */
	gp_frame_decoder_init(&d, 100);
	ASSERT_OK(gp_frame_header_write(hdr, GP_FRAME_TRANSPORT, 101));
	ASSERT_EQ(gp_frame_decode(&d, hdr, sizeof(hdr), &used, &f), -EMSGSIZE);
	gp_frame_decoder_finish(&d);

	/* Exactly the maximum is fine. */
	gp_frame_decoder_init(&d, 100);
	ASSERT_OK(gp_frame_header_write(hdr, GP_FRAME_TRANSPORT, 100));
	ASSERT_EQ(gp_frame_decode(&d, hdr, sizeof(hdr), &used, &f), 0);
	ASSERT_EQ(gp_frame_decoder_pending(&d), GP_FRAME_HEADER_SIZE);
	gp_frame_decoder_finish(&d);
}

static void test_bad_kind_and_truncation(void)
{
	uint8_t buf[32] = { 3, 0, 0, 0, 0x42, 'a', 'b', 'c' };
	struct gp_frame_decoder d;
	struct gp_frame f;
	size_t used;

	gp_frame_decoder_init(&d, 0);
	ASSERT_EQ(gp_frame_decode(&d, buf, 8, &used, &f), -EPROTO);
	gp_frame_decoder_finish(&d);

	/* Half a frame: nothing comes out and the decoder says it holds a
	 * partial frame, which the connection turns into an error at EOF. */
	gp_frame_decoder_init(&d, 0);
	ASSERT_OK(gp_frame_header_write(buf, GP_FRAME_TRANSPORT, 20));
	ASSERT_EQ(gp_frame_decode(&d, buf, 15, &used, &f), 0);
	ASSERT_EQ(used, 15);
	ASSERT_EQ(gp_frame_decoder_pending(&d), 15);
	gp_frame_decoder_finish(&d);
	gp_frame_decoder_finish(&d); /* twice is harmless */
	gp_frame_decoder_finish(NULL);
}

int main(void)
{
	test_header_layout();
	test_several_per_input();
	test_every_split();
	test_oversized();
	test_bad_kind_and_truncation();
	return 0;
}
