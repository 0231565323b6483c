/* Who is in the pool: see members.h. */
#include "members.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "downlink.h"
#include "util.h"
#include "work.h"

void gp_members_add(struct gp_pool *pool, struct gp_member *m)
{
	m->prev = NULL;
	m->next = pool->members;
	if (m->next)
		m->next->prev = m;
	pool->members = m;
	pool->n_members++;
}

struct gp_member *gp_members_step(struct gp_pool *pool, enum gp_walk w)
{
	struct gp_member *m = pool->cursors[w] ? pool->cursors[w] :
						 pool->members;

	if (m)
		pool->cursors[w] = m->next;
	return m;
}

uint32_t gp_members_slice(uint32_t n, uint32_t slices)
{
	uint32_t k = slices ? n / slices + (n % slices != 0) : n;

	if (k < GP_WALK_SLICE_MIN)
		k = GP_WALK_SLICE_MIN;
	return k < n ? k : n;
}

static size_t id_bucket(const struct gp_pool *pool, uint64_t agent_id)
{
	/* Ids come from the ledger in sequence: a multiplicative hash
	 * spreads them (Knuth's golden ratio). */
	return (size_t)((agent_id * 0x9e3779b97f4a7c15ull) >> 32) &
	       pool->by_id_mask;
}

/* Makes the index at the first join. Returns 0 or -ENOMEM. */
static int index_ready(struct gp_pool *pool)
{
	/* Two chains per member the pool may hold, a power of two. */
	size_t n = 64;

	if (pool->by_id)
		return 0;
	while (n < 2 * (size_t)pool->job->max_agents)
		n *= 2;
	pool->by_id = calloc(n, sizeof(*pool->by_id));
	if (!pool->by_id)
		return -ENOMEM;
	pool->by_id_mask = n - 1;
	return 0;
}

/* Lists joined member m under its agent id (index_ready first). */
static void index_add(struct gp_pool *pool, struct gp_member *m)
{
	size_t b = id_bucket(pool, (uint64_t)m->agent_id);

	m->id_next = pool->by_id[b];
	pool->by_id[b] = m;
	pool->n_joined++;
}

/* m is joined no longer: takes it out of the index. */
static void index_remove(struct gp_pool *pool, struct gp_member *m)
{
	struct gp_member **pp;

	if (!m->joined || !pool->by_id)
		return;
	for (pp = &pool->by_id[id_bucket(pool, (uint64_t)m->agent_id)]; *pp;
	     pp = &(*pp)->id_next)
		if (*pp == m) {
			*pp = m->id_next;
			m->id_next = NULL;
			pool->n_joined--;
			return;
		}
}

void gp_members_remove(struct gp_pool *pool, struct gp_member *m)
{
	gp_downlink_finish(pool, m);
	index_remove(pool, m);
	for (size_t w = 0; w < GP_WALKS; w++)
		if (pool->cursors[w] == m)
			pool->cursors[w] = m->next;
	if (m->prev)
		m->prev->next = m->next;
	else if (pool->members == m)
		pool->members = m->next;
	else
		return; /* not listed */
	if (m->next)
		m->next->prev = m->prev;
	m->next = m->prev = NULL;
	pool->n_members--;
	/* Its queued parameter send is gone with the connection. */
	gp_work_pull_written(pool, m);
	m->pull_waiting = m->pull_turn = false;
	gp_robust_agent_finish(&m->robust);
	gp_robust_forget(&pool->robust, (uint64_t)m->agent_id);
	gp_verify_member_finish(pool, m);
}

void gp_members_finish(struct gp_pool *pool)
{
	free(pool->by_id);
	pool->by_id = NULL;
	pool->by_id_mask = 0;
	pool->n_joined = 0;
}

struct gp_member *gp_members_find(const struct gp_pool *pool, uint64_t agent_id)
{
	if (!pool->by_id)
		return NULL;
	for (struct gp_member *m = pool->by_id[id_bucket(pool, agent_id)]; m;
	     m = m->id_next)
		if ((uint64_t)m->agent_id == agent_id)
			return m;
	return NULL;
}

bool gp_members_full(const struct gp_pool *pool, const struct gp_member *m,
		     uint32_t *ret_live)
{
	uint32_t live = pool->n_joined - (m->joined ? 1 : 0);

	if (ret_live)
		*ret_live = live;
	if (live < pool->job->max_agents)
		return false;
	/* At the limit: an agent replacing its own connection is not a new
	 * one (a scan, only when the pool is full). */
	for (const struct gp_member *o = pool->members; o; o = o->next)
		if (o != m && o->joined &&
		    memcmp(o->key, m->key, GP_POOL_KEY_SIZE) == 0)
			return false;
	return true;
}

/* What the agent and the job agree on, from what the agent offers. */
static uint32_t agree_caps(const struct gp_pool *pool,
			   const struct gp_msg_join *j)
{
	uint32_t caps = j->caps & (GP_CAP_F16 | GP_CAP_LOCAL_STEP |
				   GP_CAP_MODEL_TEXT | GP_CAP_PROGRESS);

	/* AdamW's step is the coordinator's (optim.h): an agent's copy
	 * cannot follow it locally, so it takes no local step (and sends
	 * no sums, which stand for local steps), unless the job lets agents
	 * that can take their own AdamW steps and send each run's change
	 * (inner_optimizer = adamw). */
	if (pool->job->optimizer == GP_OPT_ADAMW) {
		if (pool->job->inner_optimizer == GP_INNER_ADAMW &&
		    (j->caps & GP_CAP_INNER_ADAMW) &&
		    (caps & GP_CAP_LOCAL_STEP))
			caps |= GP_CAP_INNER_ADAMW;
		else
			caps &= ~(uint32_t)GP_CAP_LOCAL_STEP;
	}

	/* Sums stand for steps only when the step is linear in the gradient
	 * (no weight decay) and the agent takes them locally with SGD. */
	if ((j->caps & GP_CAP_SUMS) && (caps & GP_CAP_LOCAL_STEP) &&
	    !(caps & GP_CAP_INNER_ADAMW) && pool->job->group_updates &&
	    pool->job->weight_decay == 0)
		caps |= GP_CAP_SUMS;
	if ((j->caps & GP_CAP_MOMENTUM) && (caps & GP_CAP_SUMS))
		caps |= GP_CAP_MOMENTUM;
	/* A group computed from the agent's own velocity (SUMS without
	 * MOMENTUM, in a job with momentum) cannot be recomputed
	 * (verify.c checkable()): with verification on, such an agent gets
	 * no groups, and its single updates are checked like anyone's.
	 * Else a member could opt out of every check by what it asks. */
	if ((caps & GP_CAP_SUMS) && !(caps & GP_CAP_MOMENTUM) &&
	    pool->job->verify_rate > 0 &&
	    pool->job->optimizer == GP_OPT_SGD_MOMENTUM &&
	    pool->job->momentum > 0)
		caps &= ~(uint32_t)GP_CAP_SUMS;
	/* An agent with the same training set gets indices, not pixels. */
	if ((j->caps & GP_CAP_LOCAL_DATA) &&
	    j->data_fingerprint == pool->train_fingerprint)
		caps |= GP_CAP_LOCAL_DATA;
	/* Else one that can fetch it gets the shards, then indices (not
	 * for token files: their windows travel as bytes). */
	else if ((j->caps & GP_CAP_DATA_SHARDS) &&
		 strcmp(pool->job->data_set, "tokens") != 0)
		caps |= GP_CAP_DATA_SHARDS;
	/* Checks of other members' updates, by sample index: only with the
	 * training set, and only where the coordinator could recompute
	 * them itself (verification on). Not a language model's: the
	 * coordinator checks those itself (an agent recomputes images). */
	if ((j->caps & GP_CAP_VERIFY) && (caps & GP_CAP_LOCAL_DATA) &&
	    pool->verify && pool->job->verify_delegate &&
	    strcmp(pool->job->data_set, "tokens") != 0)
		caps |= GP_CAP_VERIFY;
	/* int8 updates with error feedback, momentum down as int8 (the
	 * parameters stay f16). */
	if ((j->caps & GP_CAP_Q8) && (caps & GP_CAP_F16) && pool->job->int8)
		caps |= GP_CAP_Q8;
	/* The updates in 4 bits instead (the momentum stays int8), only
	 * when the job asks for it. */
	if ((j->caps & GP_CAP_Q4) && (caps & GP_CAP_Q8) &&
	    pool->job->update_bits == 4)
		caps |= GP_CAP_Q4;
	/* Parameters down as q8 changes against a mirror of the agent's
	 * copy (downlink.h), under the same switch. */
	if ((j->caps & GP_CAP_PARAM_DELTA) && (caps & GP_CAP_Q8) &&
	    pool->job->param_delta)
		caps |= GP_CAP_PARAM_DELTA;
	/* Those changes in 4 bits instead, only when the job asks for it. */
	if ((j->caps & GP_CAP_Q4_DELTA) && (caps & GP_CAP_PARAM_DELTA) &&
	    pool->job->param_bits == 4)
		caps |= GP_CAP_Q4_DELTA;
	/* The next run while the last is on the wire: only for runs that
	 * answer with their own change (a delta does not depend on where
	 * the copy started, so the agent can move its copy under it), which
	 * verification never picks (verify.c checkable()). */
	if ((j->caps & GP_CAP_OVERLAP) && (caps & GP_CAP_INNER_ADAMW) &&
	    pool->job->overlap)
		caps |= GP_CAP_OVERLAP;
	/* Mirrors that start at zero: the first pull may be changes, in
	 * four bits only (downlink.c), so not granted with q8 changes,
	 * where it would only take the agent's check that no change comes
	 * before a whole block. */
	if ((j->caps & GP_CAP_ZERO_MIRROR) && (caps & GP_CAP_Q4_DELTA) &&
	    pool->job->first_pull_changes)
		caps |= GP_CAP_ZERO_MIRROR;
	return caps;
}

int gp_members_join(struct gp_pool *pool, struct gp_member *m,
		    int64_t agent_id, const struct gp_msg_join *j,
		    int64_t *ret_clock)
{
	struct gp_ssp_agent_info info;
	uint64_t id = (uint64_t)agent_id;
	double speed = 0;
	int64_t clock = 0;
	struct gp_member *o;
	int r;

	if (index_ready(pool) < 0)
		return -ENOMEM;
	/* One connection per agent: a newer one replaces an older one. */
	o = gp_members_find(pool, id);
	if (o && o != m) {
		index_remove(pool, o);
		o->joined = false;
		gp_sched_release_agent(pool->sched, id);
		pool->fx->close(pool->fx_data, o, GP_BYE_RESTART,
				"replaced by a newer connection");
	}
	for (size_t i = 0; i < j->n_devices; i++)
		if (j->devices[i].samples_per_s > speed)
			speed = j->devices[i].samples_per_s;
	speed /= pool->job->batch_size; /* minibatches per second */
	if (gp_ssp_get(pool->ssp, id, &info) == 0)
		r = gp_ssp_revive(pool->ssp, id, &clock);
	else
		r = gp_ssp_add(pool->ssp, id, speed, &clock);
	if (r != 0)
		return -EBUSY;
	if (speed > 0)
		gp_ssp_seed_speed(pool->ssp, id, speed);
	if (m->joined && m->agent_id != agent_id)
		index_remove(pool, m);
	if (!m->joined || m->agent_id != agent_id) {
		m->agent_id = agent_id;
		index_add(pool, m);
	}
	m->joined = true;
	m->joined_ms = gp_now_ms();
	m->pulled_version = 0;
	m->pulled_once = m->pull_as_changes = false;
	m->clock = clock;
	m->caps = agree_caps(pool, j);
	*ret_clock = clock;
	return 0;
}

size_t gp_members_leave(struct gp_pool *pool, struct gp_member *m)
{
	size_t back;

	if (!m->joined)
		return 0;
	back = gp_sched_release_agent(pool->sched, (uint64_t)m->agent_id);
	gp_ssp_mark_dead(pool->ssp, (uint64_t)m->agent_id);
	return back;
}

enum gp_overdue gp_members_overdue(const struct gp_pool *pool,
				   const struct gp_member *m, int64_t now,
				   int64_t *ret_since)
{
	int64_t limit = (int64_t)pool->job->work_timeout_ms;

	if (m->joined && m->clock_open + m->next_open > 0 &&
	    now - m->work_since_ms > limit) {
		*ret_since = now - m->work_since_ms;
		return GP_OVERDUE_UPDATE;
	}
	if (!m->joined && now - m->connected_ms > limit) {
		*ret_since = now - m->connected_ms;
		return GP_OVERDUE_JOIN;
	}
	if (m->joined && !m->wants_work && !m->paused &&
	    now - m->joined_ms > limit) {
		*ret_since = now - m->joined_ms;
		return GP_OVERDUE_REQUEST;
	}
	*ret_since = 0;
	return GP_OVERDUE_NONE;
}
