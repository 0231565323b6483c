/* The fork-join pool: see par.h. */
#include "par.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

struct gp_par {
	pthread_mutex_t mu;
	pthread_cond_t go;    /* a new job, or stop */
	pthread_cond_t idle;  /* the job's last task is done */
	pthread_t th[GP_PAR_THREADS_MAX];
	unsigned threads;
	bool stop;
	/* The job, under mu. */
	uint64_t gen;
	void (*fn)(void *arg, size_t i);
	void *arg;
	size_t n;
	/* The task counter, tagged with the job's generation (high 32 bits:
	 * gen, low 32: the next task), so that a helper that woke for a job
	 * already over takes nothing of the next one; and the tasks done. */
	_Atomic uint64_t next;
	atomic_size_t done;
};

#define TAG(gen) ((uint64_t)(uint32_t)(gen) << 32)

/* Takes and runs tasks of job `gen` until none is left; returns how many
 * it ran. */
static size_t run_tasks(struct gp_par *p, uint64_t gen,
			void (*fn)(void *, size_t), void *arg, size_t n)
{
	uint64_t v = atomic_load(&p->next);
	size_t ran = 0;

	for (;;) {
		size_t i = (size_t)(uint32_t)v;

		if ((v & ~(uint64_t)UINT32_MAX) != TAG(gen) || i >= n)
			return ran;
		if (!atomic_compare_exchange_weak(&p->next, &v, v + 1))
			continue; /* v is the counter as it is now */
		fn(arg, i);
		ran++;
		v = atomic_load(&p->next);
	}
}

/* Counts `ran` tasks of a job of n as done; the last wakes the caller. */
static void tasks_done(struct gp_par *p, size_t ran, size_t n)
{
	if (ran && atomic_fetch_add(&p->done, ran) + ran == n) {
		pthread_mutex_lock(&p->mu);
		pthread_cond_signal(&p->idle);
		pthread_mutex_unlock(&p->mu);
	}
}

static void *helper(void *data)
{
	struct gp_par *p = data;
	uint64_t seen = 0;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		void (*fn)(void *, size_t);
		void *arg;
		size_t n;

		while (!p->stop && p->gen == seen)
			pthread_cond_wait(&p->go, &p->mu);
		if (p->stop)
			break;
		seen = p->gen;
		fn = p->fn;
		arg = p->arg;
		n = p->n;
		pthread_mutex_unlock(&p->mu);
		tasks_done(p, run_tasks(p, seen, fn, arg, n), n);
		pthread_mutex_lock(&p->mu);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int gp_par_create(unsigned threads, struct gp_par **ret)
{
	struct gp_par *p;
	int r = 0;

	*ret = NULL;
	if (threads == 0 || threads > GP_PAR_THREADS_MAX)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->go, NULL);
	pthread_cond_init(&p->idle, NULL);
	atomic_init(&p->next, 0);
	atomic_init(&p->done, 0);
	for (; p->threads < threads; p->threads++) {
		r = pthread_create(&p->th[p->threads], NULL, helper, p);
		if (r != 0)
			break;
	}
	if (r != 0) {
		gp_par_destroy(p);
		return -r;
	}
	*ret = p;
	return 0;
}

void gp_par_destroy(struct gp_par *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = true;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->threads; i++)
		pthread_join(p->th[i], NULL);
	pthread_cond_destroy(&p->idle);
	pthread_cond_destroy(&p->go);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

unsigned gp_par_threads(const struct gp_par *p)
{
	return p ? p->threads : 0;
}

void gp_par_for(struct gp_par *p, size_t n, void (*fn)(void *arg, size_t i),
		void *arg)
{
	uint64_t gen;

	if (!p || n <= 1 || n > UINT32_MAX) {
		for (size_t i = 0; i < n; i++)
			fn(arg, i);
		return;
	}
	pthread_mutex_lock(&p->mu);
	gen = ++p->gen;
	p->fn = fn;
	p->arg = arg;
	p->n = n;
	atomic_store(&p->done, 0);
	atomic_store(&p->next, TAG(gen));
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	tasks_done(p, run_tasks(p, gen, fn, arg, n), n);
	/* Every task is taken; the join waits for those still running, not
	 * for helpers that woke too late to take one. */
	pthread_mutex_lock(&p->mu);
	while (atomic_load(&p->done) < n)
		pthread_cond_wait(&p->idle, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

long gp_par_cores(void)
{
	cpu_set_t set;
	long n;

	/* The CPUs this process may run on (taskset, systemd's
	 * CPUAffinity=), not all the machine's. */
	if (sched_getaffinity(0, sizeof(set), &set) == 0 &&
	    (n = CPU_COUNT(&set)) > 0)
		return n;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? n : 1;
}

unsigned gp_par_default_threads(long cores)
{
	if (cores <= 1)
		return 0;
	return cores - 1 > GP_PAR_THREADS_MAX ? GP_PAR_THREADS_MAX :
						(unsigned)(cores - 1);
}
