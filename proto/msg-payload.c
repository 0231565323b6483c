/* Block payloads: the dtypes' bytes (f32, f16, i8, and q8 and q4 in
 * chunks with a scale each), their sizes and checks, the quantisation the
 * encoder applies, and reading them back (values, or changes added to a
 * mirror). msg.c's schemas call in here for a block's data field; msg.h has
 * the layouts and docs/protocol.md the tables. */
#include "msg.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "gp-endian.h"
#include "gp-vectorize.h"
#include "msg-internal.h"

/* ---- float bits (little-endian loads and stores: common/gp-endian.h) ---- */

static uint32_t f32_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

static float bits_f32(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

static bool host_is_le(void)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return true;
#else
	return false;
#endif
}

/* ---- f16 ---- */

/* Both conversions are written without branches (selects only), so that
 * the loops over whole tensors in write_payload() and gp_msg_block_read()
 * vectorise: a parameter pull or a gradient is a quarter of a million of
 * them, and the scalar branchy versions cost more than the training step. */
/* pick(c, a, b) is c ? a : b for c in {0, 1}, as arithmetic, which
 * GCC's if-conversion does not have to prove safe. */
static inline uint32_t pick(uint32_t c, uint32_t a, uint32_t b)
{
	uint32_t mask = 0u - c;

	return (a & mask) | (b & ~mask);
}

static inline uint16_t to_f16(float f)
{
	uint32_t x = f32_bits(f);
	uint32_t sign = (x >> 16) & 0x8000u;
	uint32_t a = x & 0x7fffffffu;
	/* Normal halves: rebias the exponent, round to nearest even on the 13
	 * bits dropped; a carry out of the significand bumps the exponent,
	 * up to Inf. */
	uint32_t normal = (a - ((127u - 15u) << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13;
	/* Subnormal halves (|f| < 2^-14): in |f| + 0.5 the unit in the last
	 * place is 2^-24, a half subnormal's, so the FPU's own rounding to
	 * nearest even leaves the half's bits in the low significand. */
	uint32_t sub = f32_bits(bits_f32(a) + 0.5f) - 0x3f000000u;
	/* Inf stays Inf; NaN stays a (quiet) NaN. */
	uint32_t special = pick(a > 0x7f800000u, 0x7e00u | ((a >> 13) & 0x3ffu),
				0x7c00u);
	uint32_t h = pick(a >= 0x47800000u, special,
			  pick(a < 0x38800000u, sub, normal));

	return (uint16_t)(sign | h);
}

static inline float to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t a = h & 0x7fffu;
	uint32_t exp = a >> 10;
	uint32_t normal = (a << 13) + ((127u - 15u) << 23);
	uint32_t special = 0x7f800000u | ((a & 0x3ffu) << 13);
	/* A subnormal half is an integer times 2^-24, exact in f32. */
	uint32_t sub = f32_bits((float)a * 0x1p-24f);

	return bits_f32(sign | pick(exp == 31, special,
				    pick(exp == 0, sub, normal)));
}

uint16_t gp_msg_f32_to_f16(float f)
{
	return to_f16(f);
}

float gp_msg_f16_to_f32(uint16_t h)
{
	return to_f32(h);
}

/* The whole-tensor loops: GP_VECTORIZE (gp-vectorize.h); those with
 * selects on floats GP_VECTORIZE_SELECT (not for the f16 loops: with
 * no-trapping-math, GCC 12 leaves them scalar). */

/* Payloads sit at any byte offset in a message: memcpy is the aligned-safe
 * load and store, and compiles to plain moves. */
GP_VECTORIZE static void f32_to_f16_le(uint8_t *restrict dst,
				    const float *restrict src, size_t n)
{
	if (host_is_le()) {
		for (size_t i = 0; i < n; i++) {
			uint16_t h = to_f16(src[i]);

			memcpy(dst + 2 * i, &h, 2);
		}
	} else {
		for (size_t i = 0; i < n; i++)
			gp_put_le16(dst + 2 * i, to_f16(src[i]));
	}
}

GP_VECTORIZE static void f16_le_to_f32(float *restrict dst,
				    const uint8_t *restrict src, size_t n)
{
	if (host_is_le()) {
		for (size_t i = 0; i < n; i++) {
			uint16_t h;

			memcpy(&h, src + 2 * i, 2);
			dst[i] = to_f32(h);
		}
	} else {
		for (size_t i = 0; i < n; i++)
			dst[i] = to_f32(gp_get_le16(src + 2 * i));
	}
}

size_t gp_msg_dtype_size(uint8_t dtype)
{
	switch (dtype) {
	case GP_DTYPE_F32:
		return 4;
	case GP_DTYPE_F16:
		return 2;
	case GP_DTYPE_I8:
	case GP_DTYPE_Q8:
	case GP_DTYPE_Q8_DELTA:
	case GP_DTYPE_Q4:
	case GP_DTYPE_Q4_DELTA:
		return 1;
	default:
		return 0;
	}
}

uint64_t gp_msg_payload_size(uint8_t dtype, uint64_t count)
{
	uint64_t chunks = (count + GP_MSG_Q8_CHUNK - 1) / GP_MSG_Q8_CHUNK;

	if (dtype == GP_DTYPE_Q8 || dtype == GP_DTYPE_Q8_DELTA)
		return count + 4 * chunks;
	/* GP_MSG_Q4_CHUNK is even: only the last chunk ends in half a byte. */
	if (dtype == GP_DTYPE_Q4 || dtype == GP_DTYPE_Q4_DELTA)
		return (count + 1) / 2 + 4 * chunks;
	return count * gp_msg_dtype_size(dtype);
}

/* Whether every chunk scale of a Q8 payload (raw_len checked) is finite
 * and not negative. */
static bool q8_scales_ok(const uint8_t *raw, uint64_t count)
{
	for (uint64_t at = 0; at < count; at += GP_MSG_Q8_CHUNK) {
		float scale = gp_get_lef32(raw);

		if (!isfinite(scale) || scale < 0)
			return false;
		raw += 4 + (count - at < GP_MSG_Q8_CHUNK ? count - at :
							   GP_MSG_Q8_CHUNK);
	}
	return true;
}

/* Whether a Q4 payload (raw_len checked) holds what the encoder writes:
 * every chunk scale finite and not negative, no nibble 0x8 (-8), and the
 * spare high nibble of an odd last chunk 0. */
static bool q4_ok(const uint8_t *raw, uint64_t count)
{
	for (uint64_t at = 0; at < count; at += GP_MSG_Q4_CHUNK) {
		uint64_t c = count - at < GP_MSG_Q4_CHUNK ? count - at :
							    GP_MSG_Q4_CHUNK;
		float scale = gp_get_lef32(raw);

		if (!isfinite(scale) || scale < 0)
			return false;
		raw += 4;
		for (uint64_t k = 0; k < (c + 1) / 2; k++) {
			if ((raw[k] & 0x0f) == 0x08 || (raw[k] & 0xf0) == 0x80)
				return false;
			if (c % 2 && k == c / 2 && (raw[k] & 0xf0))
				return false;
		}
		raw += (c + 1) / 2;
	}
	return true;
}

/* Value i of a Q4 chunk's bytes q: its nibble, sign-extended. */
static int q4_get(const uint8_t *q, size_t i)
{
	unsigned nib = (q[i / 2] >> (4 * (i % 2))) & 0x0f;

	return (int)(nib ^ 0x08) - 0x08;
}

/* Value i of a chunk's bytes q, q8 or q4. */
static int chunk_q(bool q4, const uint8_t *q, size_t i)
{
	return q4 ? q4_get(q, i) : (int8_t)q[i];
}

/* The bytes of a chunk of c values after its scale. */
static size_t chunk_bytes(bool q4, size_t c)
{
	return q4 ? (c + 1) / 2 : c;
}

bool gp_msg_payload_ok(uint8_t dtype, const uint8_t *raw, uint64_t count)
{
	switch (dtype) {
	case GP_DTYPE_Q8:
	case GP_DTYPE_Q8_DELTA:
		return q8_scales_ok(raw, count);
	case GP_DTYPE_Q4:
	case GP_DTYPE_Q4_DELTA:
		return q4_ok(raw, count);
	default:
		return true;
	}
}

/* The scale of values v[0..n) quantised to -top..top: the largest finite
 * magnitude over top. */
static float chunk_scale(const float *v, size_t n, int top)
{
	float m = 0;

	for (size_t i = 0; i < n; i++) {
		float a = fabsf(v[i]);

		if (isfinite(a) && a > m)
			m = a;
	}
	return m / (float)top;
}

float gp_msg_i8_scale(const float *v, size_t n)
{
	return chunk_scale(v, n, 127);
}

/* v / scale rounded to the nearest integer in -top..top (NaN: 0). */
static int quant(float v, float scale, int top)
{
	float r = scale > 0 ? v / scale : 0;

	if (isnan(r))
		r = 0;
	if (r > (float)top)
		r = (float)top;
	if (r < -(float)top)
		r = -(float)top;
	return (int)(r + (r >= 0 ? 0.5f : -0.5f));
}

static int8_t i8_quant(float v, float scale)
{
	return (int8_t)quant(v, scale, 127);
}

GP_VECTORIZE void gp_msg_f16_round(const float *in, float *out, size_t n)
{
	for (size_t i = 0; i < n; i++)
		out[i] = to_f32(to_f16(in[i]));
}

/* The q8 loops, which every update and every parameter change goes
 * through (the coordinator's largest CPU items at 1,000 simulated agents,
 * docs/performance.md "Scale"): the arithmetic of chunk_scale() and
 * quant(), written so that GCC vectorises it (selects, no early exits,
 * no calls), so bit for bit the same results (test-msg
 * test_q8_vectorised). The largest finite |v| is taken on the bits of
 * |v|: for non-negative floats their order (as int32) is the numbers';
 * NaN and the infinities (0x7f800000 and above) count 0. */
#define Q8_ABSMAX(v, c, ret)						\
	do {								\
		int32_t m_ = 0;						\
		for (size_t i_ = 0; i_ < (c); i_++) {			\
			int32_t b_;					\
			memcpy(&b_, &(v)[i_], 4);			\
			b_ &= 0x7fffffff;				\
			b_ = b_ < 0x7f800000 ? b_ : 0;			\
			m_ = b_ > m_ ? b_ : m_;				\
		}							\
		memcpy(&(ret), &m_, 4);					\
	} while (0)
/* quant(x, scale, 127) for a scale > 0. */
#define Q8_QUANT(x, scale, ret)						\
	do {								\
		float r_ = (x) / (scale);				\
		r_ = r_ == r_ ? r_ : 0.0f;				\
		r_ = r_ > 127.0f ? 127.0f : r_;				\
		r_ = r_ < -127.0f ? -127.0f : r_;			\
		(ret) = (int)(r_ + (r_ >= 0 ? 0.5f : -0.5f));		\
	} while (0)

GP_VECTORIZE_SELECT void gp_msg_q8_round(const float *in, float *out, size_t n)
{
	for (size_t at = 0; at < n; at += GP_MSG_Q8_CHUNK) {
		size_t c = n - at < GP_MSG_Q8_CHUNK ? n - at : GP_MSG_Q8_CHUNK;
		const float *x = in + at;
		float *y = out + at, scale;
		int8_t qb[GP_MSG_Q8_CHUNK];

		Q8_ABSMAX(x, c, scale);
		scale /= 127.0f;
		if (!(scale > 0)) {
			memset(y, 0, c * sizeof(*y));
			continue;
		}
		/* Through bytes, as write_q8 (one loop does not vectorise
		 * for AVX2 and AVX-512), which also lets out be in. */
		for (size_t i = 0; i < c; i++) {
			int q;

			Q8_QUANT(x[i], scale, q);
			qb[i] = (int8_t)q;
		}
		for (size_t i = 0; i < c; i++)
			y[i] = (float)qb[i] * scale;
	}
}

/* write_q4() for q8. */
GP_VECTORIZE_SELECT static void write_q8(const float *restrict v, size_t n,
				      uint8_t *restrict p)
{
	for (size_t at = 0; at < n; at += GP_MSG_Q8_CHUNK) {
		size_t c = n - at < GP_MSG_Q8_CHUNK ? n - at : GP_MSG_Q8_CHUNK;
		const float *x = v + at;
		float scale;

		Q8_ABSMAX(x, c, scale);
		scale /= 127.0f;
		gp_put_lef32(p, scale);
		p += 4;
		if (!(scale > 0)) {
			memset(p, 0, c);
		} else {
			for (size_t i = 0; i < c; i++) {
				int q;

				Q8_QUANT(x[i], scale, q);
				p[i] = (uint8_t)(int8_t)q;
			}
		}
		p += c;
	}
}

/* read_q4() for q8. */
GP_VECTORIZE static void read_q8(const uint8_t *restrict p, size_t n,
			      float *restrict out)
{
	for (size_t at = 0; at < n; at += GP_MSG_Q8_CHUNK) {
		size_t c = n - at < GP_MSG_Q8_CHUNK ? n - at : GP_MSG_Q8_CHUNK;
		float scale = gp_get_lef32(p);

		p += 4;
		for (size_t i = 0; i < c; i++)
			out[at + i] = (float)(int8_t)p[i] * scale;
		p += c;
	}
}

void gp_msg_q4_round(const float *in, float *out, size_t n)
{
	for (size_t at = 0; at < n; at += GP_MSG_Q4_CHUNK) {
		size_t c = n - at < GP_MSG_Q4_CHUNK ? n - at : GP_MSG_Q4_CHUNK;
		float scale = chunk_scale(in + at, c, 7);

		for (size_t i = at; i < at + c; i++)
			out[i] = (float)quant(in[i], scale, 7) * scale;
	}
}

/* n values as q4 chunks (docs/protocol.md: a scale, then the chunk's
 * nibbles) at p (write_q8() for q8); read_q4() reads them back. */
_Static_assert(GP_MSG_Q4_CHUNK == GP_MSG_Q8_CHUNK, "q4 and q8 chunks differ");

static void write_q4(const float *v, size_t n, uint8_t *p)
{
	for (size_t at = 0; at < n; at += GP_MSG_Q4_CHUNK) {
		size_t c = n - at < GP_MSG_Q4_CHUNK ? n - at : GP_MSG_Q4_CHUNK;
		float scale = chunk_scale(v + at, c, 7);

		gp_put_lef32(p, scale);
		p += 4;
		memset(p, 0, (c + 1) / 2);
		for (size_t i = 0; i < c; i++) {
			unsigned q = (unsigned)quant(v[at + i], scale, 7) & 0x0f;

			p[i / 2] |= (uint8_t)(q << (4 * (i % 2)));
		}
		p += (c + 1) / 2;
	}
}

void gp_msg_payload_write(const struct gp_msg_block *b, uint8_t *p)
{
	size_t n = b->count;

	switch (b->dtype) {
	case GP_DTYPE_F32:
		if (host_is_le()) {
			memcpy(p, b->values, n * 4);
		} else {
			for (size_t i = 0; i < n; i++)
				gp_put_lef32(p + 4 * i, b->values[i]);
		}
		break;
	case GP_DTYPE_F16:
		f32_to_f16_le(p, b->values, n);
		break;
	case GP_DTYPE_I8: {
		float scale = gp_msg_i8_scale(b->values, n);

		for (size_t i = 0; i < n; i++)
			p[i] = (uint8_t)i8_quant(b->values[i], scale);
		break;
	}
	case GP_DTYPE_Q8:
	case GP_DTYPE_Q8_DELTA:
		write_q8(b->values, n, p);
		break;
	case GP_DTYPE_Q4:
	case GP_DTYPE_Q4_DELTA:
		write_q4(b->values, n, p);
		break;
	}
}

/* The values of a q4 payload of n values (checked) into out (read_q8()
 * for q8). */
static void read_q4(const uint8_t *p, size_t n, float *out)
{
	for (size_t at = 0; at < n; at += GP_MSG_Q4_CHUNK) {
		size_t c = n - at < GP_MSG_Q4_CHUNK ? n - at : GP_MSG_Q4_CHUNK;
		float scale = gp_get_lef32(p);

		p += 4;
		for (size_t i = 0; i < c; i++)
			out[at + i] = (float)chunk_q(true, p, i) * scale;
		p += chunk_bytes(true, c);
	}
}

/* A chunk's integers squared and summed (q8: vectorised). */
GP_VECTORIZE static int32_t q8_chunk_sq(const uint8_t *restrict p, size_t c)
{
	int32_t sq = 0; /* at most 64 * 127^2 */

	for (size_t i = 0; i < c; i++)
		sq += (int8_t)p[i] * (int8_t)p[i];
	return sq;
}

double gp_msg_block_sum_squares(const struct gp_msg_block *b)
{
	bool q4 = b->dtype == GP_DTYPE_Q4 || b->dtype == GP_DTYPE_Q4_DELTA;
	const uint8_t *p = b->raw;
	size_t n = b->count;
	double total = 0;

	if ((!q4 && b->dtype != GP_DTYPE_Q8 && b->dtype != GP_DTYPE_Q8_DELTA) ||
	    (n && !p) || b->raw_len != gp_msg_payload_size(b->dtype, n))
		return -1;
	for (size_t at = 0; at < n; at += GP_MSG_Q8_CHUNK) {
		size_t c = n - at < GP_MSG_Q8_CHUNK ? n - at : GP_MSG_Q8_CHUNK;
		double scale = gp_get_lef32(p);
		int32_t sq = 0;

		p += 4;
		if (q4) {
			for (size_t i = 0; i < c; i++)
				sq += chunk_q(true, p, i) * chunk_q(true, p, i);
		} else {
			sq = q8_chunk_sq(p, c);
		}
		total += scale * scale * sq;
		p += chunk_bytes(q4, c);
	}
	return total;
}

int gp_msg_block_read(const struct gp_msg_block *b, float *out, size_t n)
{
	size_t es = gp_msg_dtype_size(b->dtype);

	if (!es)
		return -EPROTONOSUPPORT;
	if (n != b->count || (n && !b->raw) ||
	    b->raw_len != gp_msg_payload_size(b->dtype, n))
		return -EINVAL;
	if (n == 0)
		return 0;
	switch (b->dtype) {
	case GP_DTYPE_F32:
		if (host_is_le()) {
			memcpy(out, b->raw, n * 4);
		} else {
			for (size_t i = 0; i < n; i++)
				out[i] = gp_get_lef32(b->raw + 4 * i);
		}
		break;
	case GP_DTYPE_F16:
		f16_le_to_f32(out, b->raw, n);
		break;
	case GP_DTYPE_I8:
		for (size_t i = 0; i < n; i++)
			out[i] = (float)(int8_t)b->raw[i] * b->scale;
		break;
	case GP_DTYPE_Q8:
	case GP_DTYPE_Q8_DELTA:
		read_q8(b->raw, n, out);
		break;
	case GP_DTYPE_Q4:
	case GP_DTYPE_Q4_DELTA:
		read_q4(b->raw, n, out);
		break;
	}
	return 0;
}

int gp_msg_block_add(const struct gp_msg_block *b, float *mirror, size_t n)
{
	bool q4 = b->dtype == GP_DTYPE_Q4_DELTA;

	/* A block of no values carries no data field: raw stays NULL. */
	if ((!b->raw && n) || (b->dtype != GP_DTYPE_Q8_DELTA && !q4) ||
	    n != b->count || b->raw_len != gp_msg_payload_size(b->dtype, n))
		return -EINVAL;
	/* Checked whole first: a refused block leaves the mirror as it was. */
	for (int pass = 0; pass < 2; pass++) {
		const uint8_t *p = b->raw;

		for (size_t at = 0; at < n; at += GP_MSG_Q8_CHUNK) {
			size_t c = n - at < GP_MSG_Q8_CHUNK ? n - at :
							      GP_MSG_Q8_CHUNK;
			float scale = gp_get_lef32(p);

			p += 4;
			for (size_t i = 0; i < c; i++) {
				int q = chunk_q(q4, p, i);
				float d = (float)q * scale;
				float v = mirror[at + i] + d;

				if (pass == 0 && !isfinite(v))
					return -ERANGE;
				if (pass == 1)
					mirror[at + i] = v;
			}
			p += chunk_bytes(q4, c);
		}
	}
	return 0;
}
