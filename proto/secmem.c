/* Slabs of secrets; see secmem.h. */
#include "secmem.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

/* Each slot: a header naming its slab, then the object. */
struct slot_header {
	struct slab *slab;
	uint64_t index;
};

struct slab {
	struct slab *next;
	size_t slot_size;  /* header + object, a multiple of 16 */
	uint64_t free_mask; /* bit i: slot i is free */
	unsigned used;
	uint8_t *mem;      /* sodium_malloc(GP_SECMEM_SLAB * slot_size) */
};

_Static_assert(GP_SECMEM_SLAB == 64, "free_mask holds 64 slots");
_Static_assert(sizeof(struct slot_header) == 16, "objects aligned to 16");

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct slab *slabs;
static size_t n_slabs;

static struct slab *slab_new(size_t slot_size)
{
	struct slab *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	/* sodium_malloc places the region against its end guard page: a
	 * multiple of 16 keeps every slot aligned to 16. */
	s->mem = sodium_malloc(GP_SECMEM_SLAB * slot_size);
	if (!s->mem) {
		free(s);
		return NULL;
	}
	s->slot_size = slot_size;
	s->free_mask = UINT64_MAX;
	s->next = slabs;
	slabs = s;
	n_slabs++;
	return s;
}

void *gp_secmem_alloc(size_t size)
{
	size_t slot_size;
	struct slab *s;
	struct slot_header *h;
	unsigned i;

	if (size == 0 || size > GP_SECMEM_MAX || sodium_init() < 0)
		return NULL;
	slot_size = sizeof(*h) + ((size + 15) & ~(size_t)15);
	pthread_mutex_lock(&lock);
	for (s = slabs; s; s = s->next)
		if (s->slot_size == slot_size && s->free_mask)
			break;
	if (!s)
		s = slab_new(slot_size);
	if (!s) {
		pthread_mutex_unlock(&lock);
		return NULL;
	}
	i = (unsigned)__builtin_ctzll(s->free_mask);
	s->free_mask &= ~(UINT64_C(1) << i);
	s->used++;
	pthread_mutex_unlock(&lock);
	h = (struct slot_header *)(s->mem + (size_t)i * slot_size);
	h->slab = s;
	h->index = i;
	memset(h + 1, 0, slot_size - sizeof(*h));
	return h + 1;
}

void gp_secmem_free(void *p)
{
	struct slot_header *h;
	struct slab *s, **pp, *other;

	if (!p)
		return;
	h = (struct slot_header *)p - 1;
	s = h->slab;
	sodium_memzero(p, s->slot_size - sizeof(*h));
	pthread_mutex_lock(&lock);
	s->free_mask |= UINT64_C(1) << h->index;
	s->used--;
	if (s->used == 0) {
		/* Released unless it is the last slab of its size. */
		for (other = slabs; other; other = other->next)
			if (other != s && other->slot_size == s->slot_size)
				break;
		if (other) {
			for (pp = &slabs; *pp != s; pp = &(*pp)->next)
				;
			*pp = s->next;
			n_slabs--;
			sodium_free(s->mem); /* wipes before unmapping */
			free(s);
		}
	}
	pthread_mutex_unlock(&lock);
}

size_t gp_secmem_slabs(void)
{
	size_t n;

	pthread_mutex_lock(&lock);
	n = n_slabs;
	pthread_mutex_unlock(&lock);
	return n;
}
