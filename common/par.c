/* The fork-join pool: see par.h. */
#include "par.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

struct gp_par {
	pthread_mutex_t mu;
	pthread_cond_t go;    /* a new job, or stop */
	pthread_cond_t idle;  /* the last helper left the job */
	pthread_t th[GP_PAR_THREADS_MAX];
	unsigned threads;
	bool stop;
	/* The job, under mu (fn NULL: none, or it ended); `next` is the
	 * shared task counter. */
	uint64_t gen;
	void (*fn)(void *arg, size_t i);
	void *arg;
	size_t n;
	atomic_size_t next;
	unsigned busy;        /* helpers inside the job, under mu */
};

static void run_tasks(struct gp_par *p, void (*fn)(void *, size_t), void *arg,
		      size_t n)
{
	size_t i;

	while ((i = atomic_fetch_add(&p->next, 1)) < n)
		fn(arg, i);
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
		/* Woken late: that job ended (its caller returned), and its
		 * counter may be the next job's already. */
		if (!p->fn)
			continue;
		fn = p->fn;
		arg = p->arg;
		n = p->n;
		/* Counted before the lock goes: the caller returns only once
		 * every helper that may take a task of this job is out. */
		p->busy++;
		pthread_mutex_unlock(&p->mu);
		run_tasks(p, fn, arg, n);
		pthread_mutex_lock(&p->mu);
		if (--p->busy == 0)
			pthread_cond_signal(&p->idle);
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
	if (!p || n <= 1) {
		for (size_t i = 0; i < n; i++)
			fn(arg, i);
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->arg = arg;
	p->n = n;
	atomic_store(&p->next, 0);
	p->gen++;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	run_tasks(p, fn, arg, n);
	/* Every task is taken; those the helpers took are done once they
	 * have all left the job. */
	pthread_mutex_lock(&p->mu);
	while (p->busy > 0)
		pthread_cond_wait(&p->idle, &p->mu);
	p->fn = NULL; /* ended: a helper woken only now takes nothing */
	pthread_mutex_unlock(&p->mu);
}

unsigned gp_par_default_threads(long cores)
{
	if (cores <= 1)
		return 0;
	return cores - 1 > GP_PAR_THREADS_MAX ? GP_PAR_THREADS_MAX :
						(unsigned)(cores - 1);
}
