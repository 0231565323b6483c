/* Memory for secrets (Noise handshake and transport states, key pairs):
 * locked, guarded, wiped on free, and cheap to take per connection.
 *
 * sodium_malloc gives every allocation its own mapping (guard pages, a
 * canary, mlock): an mmap, three mprotects and an mlock to take one, an
 * munlock and an munmap to give it back, each unmapping a TLB shootdown
 * across the cores. A coordinator that accepts thousands of connections a
 * minute spent more on those system calls than on its X25519 (perf, 5,000
 * simulated agents joining: 6 % of serve in sodium_malloc/sodium_free), and
 * 10,000 connections held 20,000-30,000 mappings of the 65,530 a process
 * may have. Here the objects of one size share a slab of GP_SECMEM_SLAB of
 * them, one sodium_malloc region (guard pages around the slab, not around
 * each object; locked), and an object is zeroed (sodium_memzero) when it
 * is given back. A slab whose objects are all free is released, except the
 * last one of its size.
 *
 * Thread-safe (one mutex). */
#ifndef GP_SECMEM_H
#define GP_SECMEM_H

#include <stddef.h>

/* Objects per slab. */
#define GP_SECMEM_SLAB 64

/* A zeroed object of size bytes (at most GP_SECMEM_MAX), aligned to 16,
 * or NULL when out of memory. */
#define GP_SECMEM_MAX 4096
void *gp_secmem_alloc(size_t size);

/* Wipes the object and gives it back (NULL: nothing). */
void gp_secmem_free(void *p);

/* Slabs held now (tests). */
size_t gp_secmem_slabs(void);

#endif
