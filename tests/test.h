/* Assertion macros for the test executables, in the manner of libuv's
 * ASSERT_EQ: on failure they print both sides, the expression and the place,
 * then abort so that meson records the failure. */
#ifndef GP_TEST_H
#define GP_TEST_H

#include <inttypes.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GP_TEST_FAIL(...)                                                      \
	do {                                                                   \
		fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                \
		fprintf(stderr, __VA_ARGS__);                                  \
		fputc('\n', stderr);                                           \
		abort();                                                       \
	} while (0)

/* 1 unless x is a floating-point value: the ASSERT_EQ family converts to
 * an integer type, so a float compared with it passes whatever its
 * fraction (ASSERT_NEAR, with tolerance 0 for exactness, is for floats). */
#define GP_NOT_FLOAT(x)                                                        \
	_Generic((x), float: 0, double: 0, long double: 0, default: 1)

#define GP_ASSERT_OP(a, op, b, type, fmt)                                      \
	do {                                                                   \
		_Static_assert(GP_NOT_FLOAT(a) && GP_NOT_FLOAT(b),             \
			       "ASSERT_EQ and kin compare integers: "          \
			       "use ASSERT_NEAR for floats");                 \
		type a_ = (type)(a);                                           \
		type b_ = (type)(b);                                           \
		if (!(a_ op b_))                                               \
			GP_TEST_FAIL("assertion failed: %s %s %s (" fmt        \
				     " %s " fmt ")",                           \
				     #a, #op, #b, a_, #op, b_);                \
	} while (0)

#define ASSERT(x)                                                              \
	do {                                                                   \
		if (!(x))                                                      \
			GP_TEST_FAIL("assertion failed: %s", #x);              \
	} while (0)
#define ASSERT_EQ(a, b) GP_ASSERT_OP(a, ==, b, int64_t, "%" PRId64)
#define ASSERT_NE(a, b) GP_ASSERT_OP(a, !=, b, int64_t, "%" PRId64)
#define ASSERT_LT(a, b) GP_ASSERT_OP(a, <, b, int64_t, "%" PRId64)
#define ASSERT_LE(a, b) GP_ASSERT_OP(a, <=, b, int64_t, "%" PRId64)
#define ASSERT_GT(a, b) GP_ASSERT_OP(a, >, b, int64_t, "%" PRId64)
#define ASSERT_GE(a, b) GP_ASSERT_OP(a, >=, b, int64_t, "%" PRId64)
#define ASSERT_UINT_EQ(a, b) GP_ASSERT_OP(a, ==, b, uint64_t, "%" PRIu64)
#define ASSERT_OK(r) ASSERT_EQ(r, 0)

/* Under ASan, LeakSanitizer's check now instead of at exit (it then does
 * not run again). A library's threads still alive at exit (PoCL's) may be
 * tearing down while the check's tracer stops them, and the tracer then
 * crashes ("Tracer caught signal 11 ... LeakSanitizer has encountered a
 * fatal error": opencl-vs-cpu aborted so after printing ok, once in six
 * sanitizer runs); before exit they are parked. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define TEST_LEAK_CHECK() __lsan_do_leak_check()
#else
#define TEST_LEAK_CHECK() ((void)0)
#endif
#define ASSERT_PTR_NE(a, b) GP_ASSERT_OP(a, !=, b, const void *, "%p")
#define ASSERT_NOT_NULL(a) ASSERT_PTR_NE(a, NULL)
#define ASSERT_STR_EQ(a, b)                                                    \
	do {                                                                   \
		const char *a_ = (a), *b_ = (b);                               \
		if (!a_ || !b_ || strcmp(a_, b_) != 0)                         \
			GP_TEST_FAIL("assertion failed: %s == %s (\"%s\" vs "  \
				     "\"%s\")",                                \
				     #a, #b, a_ ? a_ : "(null)",               \
				     b_ ? b_ : "(null)");                      \
	} while (0)
#define ASSERT_MEM_EQ(a, b, n) ASSERT(memcmp((a), (b), (n)) == 0)
/* |a - b| <= tol, printing both values. */
#define ASSERT_NEAR(a, b, tol)                                                 \
	do {                                                                   \
		double a_ = (double)(a), b_ = (double)(b);                     \
		if (!(fabs(a_ - b_) <= (double)(tol)))                         \
			GP_TEST_FAIL("assertion failed: %s ~= %s (%.9g vs "    \
				     "%.9g, tol %g)",                          \
				     #a, #b, a_, b_, (double)(tol));           \
	} while (0)

/* Exit status meson treats as "skipped". */
#define GP_TEST_SKIP 77


/* Uniform in [-1, 1) from splitmix64, advancing *state: reproducible
 * inputs for the numeric tests. */
static inline double test_uniform(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	return (double)(z >> 11) / 9007199254740992.0 * 2 - 1;
}

#endif
