/* Placeholder, replaced by the CPU backend (kcpu owns this file): only here
 * so that backend.c links before the CPU backend lands. */
#include "backend-impl.h"

#include <errno.h>

int gp_cpu_create(int threads, struct gp_backend **ret)
{
	(void)threads;
	(void)ret;
	return -ENOSYS;
}
