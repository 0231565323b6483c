/* proto/secmem.c: objects of a size share slabs, come zeroed and aligned,
 * are wiped when given back, and a slab whose objects are all free is
 * released unless it is the last of its size; the same from several
 * threads at once. */
#include <pthread.h>
#include <stdint.h>

#include "secmem.h"
#include "test.h"

#define N 200 /* more than three slabs of one size */

static void test_slabs(void)
{
	static uint8_t *a[N], *b[3];
	size_t base = gp_secmem_slabs();

	ASSERT(gp_secmem_alloc(0) == NULL);
	ASSERT(gp_secmem_alloc(GP_SECMEM_MAX + 1) == NULL);
	for (int i = 0; i < N; i++) {
		a[i] = gp_secmem_alloc(100);
		ASSERT_NOT_NULL(a[i]);
		ASSERT_EQ((uintptr_t)a[i] % 16, 0);
		for (int k = 0; k < 100; k++)
			ASSERT_EQ(a[i][k], 0);
		memset(a[i], 0xa5, 100);
	}
	/* ceil(200 / 64) slabs of this size, the objects apart. */
	ASSERT_EQ(gp_secmem_slabs(), base + (N + GP_SECMEM_SLAB - 1) /
						   GP_SECMEM_SLAB);
	for (int i = 1; i < N; i++)
		ASSERT(a[i] + 100 <= a[i - 1] || a[i - 1] + 100 <= a[i]);
	/* Another size: its own slab. */
	for (int i = 0; i < 3; i++)
		ASSERT_NOT_NULL(b[i] = gp_secmem_alloc(700));
	ASSERT_EQ(gp_secmem_slabs(), base + 5);

	/* Wiped when given back (its slab still holds others: still
	 * mapped); taking one again needs no new slab. */
	gp_secmem_free(a[1]);
	for (int k = 0; k < 100; k++)
		ASSERT_EQ(a[1][k], 0);
	ASSERT_NOT_NULL(a[1] = gp_secmem_alloc(100));
	ASSERT_EQ(gp_secmem_slabs(), base + 5);

	/* All given back: one slab of each size stays. */
	for (int i = 0; i < N; i++)
		gp_secmem_free(a[i]);
	ASSERT_EQ(gp_secmem_slabs(), base + 2);
	for (int i = 0; i < 3; i++)
		gp_secmem_free(b[i]);
	ASSERT_EQ(gp_secmem_slabs(), base + 2);
	gp_secmem_free(NULL);
}

static void *churn(void *arg)
{
	uint8_t *mine[100];
	uint8_t tag = (uint8_t)(uintptr_t)arg;

	for (int round = 0; round < 200; round++) {
		for (int i = 0; i < 100; i++) {
			mine[i] = gp_secmem_alloc(48);
			ASSERT_NOT_NULL(mine[i]);
			ASSERT_EQ(mine[i][0], 0);
			memset(mine[i], tag, 48);
		}
		for (int i = 0; i < 100; i++) {
			/* Nobody else wrote into it. */
			ASSERT_EQ(mine[i][0], tag);
			ASSERT_EQ(mine[i][47], tag);
			gp_secmem_free(mine[i]);
		}
	}
	return NULL;
}

static void test_threads(void)
{
	pthread_t t[4];

	for (uintptr_t i = 0; i < 4; i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, churn, (void *)(i + 1)), 0);
	for (int i = 0; i < 4; i++)
		ASSERT_EQ(pthread_join(t[i], NULL), 0);
}

int main(void)
{
	test_slabs();
	test_threads();
	return 0;
}
