/* Unit tests for coordinator/ssp, and a deterministic simulation of the
 * coordinator's loop (ssp + params + sched together) with virtual agents of
 * different speeds and churn, for s = 0 and s = 3, checking the invariants
 * the integration tests later check in the ledger. */
#include <errno.h>
#include <stdlib.h>

#include "params.h"
#include "scheduler.h"
#include "ssp.h"
#include "test.h"

static void test_rule(void)
{
	struct gp_ssp *ssp = NULL;
	struct gp_ssp_agent_info a;
	int64_t clock = -1;
	uint64_t id;
	bool parked;

	ASSERT_EQ(gp_ssp_create(GP_SSP_MAX_BOUND + 1, &ssp), -EINVAL);
	ASSERT_OK(gp_ssp_create(1, &ssp));
	ASSERT_EQ(gp_ssp_bound(ssp), 1);
	ASSERT_OK(gp_ssp_add(ssp, 10, 5.0, &clock));
	ASSERT_EQ(clock, 0);
	ASSERT_OK(gp_ssp_add(ssp, 20, 0, NULL));
	ASSERT_EQ(gp_ssp_add(ssp, 10, 1.0, NULL), -EEXIST);
	ASSERT_EQ(gp_ssp_count(ssp), 2);

	/* Agent 10 runs ahead: clock 1 is within s = 1 of m = 0, clock 2 not. */
	ASSERT(gp_ssp_may_compute(ssp, 10));
	ASSERT_OK(gp_ssp_advance(ssp, 10, 1));
	ASSERT(gp_ssp_may_compute(ssp, 10));
	ASSERT_OK(gp_ssp_advance(ssp, 10, 2));
	ASSERT(!gp_ssp_may_compute(ssp, 10));
	/* It cannot have finished a clock it may not compute at. */
	ASSERT_EQ(gp_ssp_advance(ssp, 10, 3), GP_REASON_CLOCK_BOUND);
	ASSERT_EQ(gp_ssp_advance(ssp, 10, 5), GP_REASON_CLOCK_AHEAD);
	ASSERT_EQ(gp_ssp_advance(ssp, 10, 2), GP_REASON_CLOCK_BEHIND);
	ASSERT_EQ(gp_ssp_advance(ssp, 10, -7), GP_REASON_CLOCK_BEHIND);
	ASSERT_EQ(gp_ssp_advance(ssp, 99, 1), GP_REASON_UNKNOWN_AGENT);
	ASSERT_EQ(gp_ssp_check_clock(ssp, 10, 2), 0);
	ASSERT_EQ(gp_ssp_check_clock(ssp, 10, 3), GP_REASON_CLOCK_AHEAD);
	ASSERT_EQ(gp_ssp_check_clock(ssp, 10, 1), GP_REASON_CLOCK_BEHIND);
	ASSERT_EQ(gp_ssp_min_clock(ssp), 0);

	/* It waits; 20 advancing to 1 wakes it. */
	ASSERT_OK(gp_ssp_wait(ssp, 10, &parked));
	ASSERT(parked);
	ASSERT_OK(gp_ssp_wait(ssp, 20, &parked));
	ASSERT(!parked);
	ASSERT_EQ(gp_ssp_pop_ready(ssp, &id), 0);
	ASSERT_OK(gp_ssp_advance(ssp, 20, 1));
	ASSERT_EQ(gp_ssp_min_clock(ssp), 1);
	ASSERT_EQ(gp_ssp_pop_ready(ssp, &id), 1);
	ASSERT_UINT_EQ(id, 10);
	ASSERT_EQ(gp_ssp_pop_ready(ssp, &id), 0);

	/* 10 at clock 3 waits again; 20 vanishes: 10 stops waiting for it. */
	ASSERT_OK(gp_ssp_advance(ssp, 10, 3));
	ASSERT_OK(gp_ssp_wait(ssp, 10, &parked));
	ASSERT(parked);
	ASSERT_OK(gp_ssp_mark_dead(ssp, 20));
	ASSERT_EQ(gp_ssp_live_count(ssp), 1);
	ASSERT_EQ(gp_ssp_min_clock(ssp), 3);
	ASSERT_EQ(gp_ssp_pop_ready(ssp, &id), 1);
	ASSERT_UINT_EQ(id, 10);
	ASSERT_EQ(gp_ssp_advance(ssp, 20, 2), GP_REASON_AGENT_DEAD);
	ASSERT_EQ(gp_ssp_check_update(ssp, 20, 1, NULL), GP_REASON_AGENT_DEAD);
	ASSERT_EQ(gp_ssp_wait(ssp, 20, NULL), GP_REASON_AGENT_DEAD);
	ASSERT(!gp_ssp_may_compute(ssp, 20));

	/* 20 returns at a valid clock (m = 3), a newcomer joins at m too. */
	ASSERT_OK(gp_ssp_revive(ssp, 20, &clock));
	ASSERT_EQ(clock, 3);
	ASSERT_OK(gp_ssp_add(ssp, 30, 0, &clock));
	ASSERT_EQ(clock, 3);
	ASSERT_OK(gp_ssp_get(ssp, 20, &a));
	ASSERT(a.live);
	ASSERT_EQ(a.read_clock, INT64_MIN);
	ASSERT_EQ(gp_ssp_get(ssp, 21, &a), -ENOENT);

	/* Removing the slowest raises m. */
	ASSERT_OK(gp_ssp_advance(ssp, 10, 4));
	ASSERT_OK(gp_ssp_advance(ssp, 30, 4));
	ASSERT_OK(gp_ssp_remove(ssp, 20));
	ASSERT_EQ(gp_ssp_remove(ssp, 20), -ENOENT);
	ASSERT_EQ(gp_ssp_min_clock(ssp), 4);
	ASSERT_OK(gp_ssp_get_at(ssp, 1, &a));
	ASSERT_UINT_EQ(a.id, 30);
	ASSERT_EQ(gp_ssp_get_at(ssp, 2, &a), -ENOENT);

	/* Nobody live: m stays; a returning agent cannot go below it. */
	ASSERT_OK(gp_ssp_mark_dead(ssp, 10));
	ASSERT_OK(gp_ssp_mark_dead(ssp, 30));
	ASSERT_EQ(gp_ssp_min_clock(ssp), 4);
	ASSERT_OK(gp_ssp_revive(ssp, 30, &clock));
	ASSERT_EQ(clock, 4);
	gp_ssp_destroy(ssp);
	gp_ssp_destroy(NULL);
}

static void test_staleness(void)
{
	struct gp_ssp *ssp = NULL;
	struct gp_ssp_agent_info a;
	int64_t st = -1;

	ASSERT_OK(gp_ssp_create(2, &ssp));
	ASSERT_OK(gp_ssp_add(ssp, 1, 0, NULL));
	ASSERT_OK(gp_ssp_add(ssp, 2, 0, NULL));
	/* Never pulled: any update is refused. */
	ASSERT(gp_ssp_needs_pull(ssp, 1));
	ASSERT_EQ(gp_ssp_check_update(ssp, 1, 0, &st), GP_REASON_STALE);
	ASSERT_OK(gp_ssp_pulled(ssp, 1, 7));
	ASSERT(!gp_ssp_needs_pull(ssp, 1));
	ASSERT_OK(gp_ssp_check_update(ssp, 1, 0, &st));
	ASSERT_EQ(st, 0);
	ASSERT_EQ(gp_ssp_check_update(ssp, 1, 1, &st), GP_REASON_CLOCK_AHEAD);
	ASSERT_EQ(gp_ssp_check_update(ssp, 9, 0, &st),
		  GP_REASON_UNKNOWN_AGENT);
	/* Clocks 1 and 2 on the same parameters: staleness 1, 2. */
	ASSERT_OK(gp_ssp_advance(ssp, 1, 1));
	ASSERT_OK(gp_ssp_check_update(ssp, 1, 1, &st));
	ASSERT_EQ(st, 1);
	ASSERT_EQ(gp_ssp_check_update(ssp, 1, 0, &st), GP_REASON_CLOCK_BEHIND);
	ASSERT_OK(gp_ssp_advance(ssp, 1, 2));
	ASSERT(!gp_ssp_needs_pull(ssp, 1));
	ASSERT_OK(gp_ssp_check_update(ssp, 1, 2, &st));
	ASSERT_EQ(st, 2);
	/* Clock 3 is past the bound (m = 0): no pull served, must wait. */
	ASSERT_OK(gp_ssp_advance(ssp, 1, 3));
	ASSERT(gp_ssp_needs_pull(ssp, 1));
	ASSERT_EQ(gp_ssp_check_update(ssp, 1, 3, &st), GP_REASON_STALE);
	ASSERT_EQ(gp_ssp_pulled(ssp, 1, 9), GP_REASON_CLOCK_BOUND);
	ASSERT_OK(gp_ssp_get(ssp, 1, &a));
	ASSERT_UINT_EQ(a.pulled_version, 7);
	/* 2 reaches clock 1: 1 may pull and reads clock 1 -> staleness 2. */
	ASSERT_OK(gp_ssp_advance(ssp, 2, 1));
	ASSERT_OK(gp_ssp_pulled(ssp, 1, 9));
	ASSERT_OK(gp_ssp_check_update(ssp, 1, 3, &st));
	ASSERT_EQ(st, 2);
	ASSERT_OK(gp_ssp_get(ssp, 1, &a));
	ASSERT_EQ(a.read_clock, 1);
	ASSERT_UINT_EQ(a.pulled_version, 9);
	ASSERT_EQ(st, 2);
	gp_ssp_destroy(ssp);
}

static void test_speed(void)
{
	struct gp_ssp *ssp = NULL;
	struct gp_ssp_agent_info a;

	ASSERT_OK(gp_ssp_create(0, &ssp));
	ASSERT_OK(gp_ssp_add(ssp, 1, 10.0, NULL));
	ASSERT_OK(gp_ssp_add(ssp, 2, 100.0, NULL));
	ASSERT_OK(gp_ssp_add(ssp, 3, 0, NULL)); /* unknown yet */
	ASSERT_EQ(gp_ssp_work_per_clock(ssp, 1, 2, 64), 2);
	ASSERT_EQ(gp_ssp_work_per_clock(ssp, 2, 2, 64), 20);
	ASSERT_EQ(gp_ssp_work_per_clock(ssp, 2, 2, 8), 8);
	ASSERT_EQ(gp_ssp_work_per_clock(ssp, 3, 2, 64), 2);
	ASSERT_EQ(gp_ssp_work_per_clock(ssp, 2, 0, 0), 10);
	ASSERT_OK(gp_ssp_observe_speed(ssp, 3, 40.0));
	ASSERT_OK(gp_ssp_observe_speed(ssp, 3, NAN));
	ASSERT_OK(gp_ssp_observe_speed(ssp, 3, -1));
	ASSERT_OK(gp_ssp_get(ssp, 3, &a));
	ASSERT_NEAR(a.speed, 40.0, 0);
	ASSERT_OK(gp_ssp_observe_speed(ssp, 3, 50.0));
	ASSERT_OK(gp_ssp_get(ssp, 3, &a));
	ASSERT_NEAR(a.speed, 43.0, 1e-12);
	ASSERT_EQ(gp_ssp_observe_speed(ssp, 4, 1.0), -ENOENT);
	/* An announced speed is a seed: the first observation replaces it
	 * (a throttled laptop's benchmark says nothing of its real pace), the
	 * next ones are averaged. */
	ASSERT_OK(gp_ssp_observe_speed(ssp, 1, 2.0));
	ASSERT_OK(gp_ssp_get(ssp, 1, &a));
	ASSERT_NEAR(a.speed, 2.0, 0);
	ASSERT_OK(gp_ssp_observe_speed(ssp, 1, 12.0));
	ASSERT_OK(gp_ssp_get(ssp, 1, &a));
	ASSERT_NEAR(a.speed, 5.0, 1e-12);
	ASSERT_OK(gp_ssp_seed_speed(ssp, 1, 10.0));
	ASSERT_OK(gp_ssp_observe_speed(ssp, 1, 2.0));
	ASSERT_OK(gp_ssp_get(ssp, 1, &a));
	ASSERT_NEAR(a.speed, 2.0, 0);
	ASSERT_OK(gp_ssp_seed_speed(ssp, 1, 10.0));
	ASSERT_EQ(gp_ssp_seed_speed(ssp, 9, 1.0), -ENOENT);
	/* The slowest dies: the others are sized against the next slowest. */
	ASSERT_OK(gp_ssp_mark_dead(ssp, 1));
	ASSERT_EQ(gp_ssp_work_per_clock(ssp, 2, 1, 0), 2);
	ASSERT_OK(gp_ssp_note_work(ssp, 2, 3));
	ASSERT_OK(gp_ssp_get(ssp, 2, &a));
	ASSERT_EQ(a.work_this_clock, 3);
	ASSERT_OK(gp_ssp_advance(ssp, 2, 1));
	ASSERT_OK(gp_ssp_get(ssp, 2, &a));
	ASSERT_EQ(a.work_this_clock, 0);
	gp_ssp_destroy(ssp);
}

static void test_checkpoint(void)
{
	struct gp_ssp *ssp = NULL, *back = NULL;
	struct gp_ssp_agent_info a;
	uint8_t *blob = NULL, *blob2 = NULL;
	size_t len = 0, len2 = 0;
	int64_t clock;

	ASSERT_OK(gp_ssp_create(3, &ssp));
	ASSERT_OK(gp_ssp_add(ssp, 5, 2.5, NULL));
	ASSERT_OK(gp_ssp_add(ssp, 2, 1.0, NULL));
	ASSERT_OK(gp_ssp_advance(ssp, 5, 1));
	ASSERT_OK(gp_ssp_advance(ssp, 5, 2));
	ASSERT_OK(gp_ssp_advance(ssp, 2, 1));
	ASSERT_OK(gp_ssp_save(ssp, &blob, &len));
	ASSERT_OK(gp_ssp_load(blob, len, &back));
	ASSERT_EQ(gp_ssp_bound(back), 3);
	ASSERT_EQ(gp_ssp_min_clock(back), 1);
	ASSERT_EQ(gp_ssp_count(back), 2);
	ASSERT_EQ(gp_ssp_live_count(back), 0);
	ASSERT_OK(gp_ssp_get(back, 5, &a));
	ASSERT_EQ(a.clock, 2);
	ASSERT_NEAR(a.speed, 2.5, 0);
	ASSERT(!a.live);
	ASSERT_OK(gp_ssp_save(back, &blob2, &len2));
	ASSERT_EQ(len2, len);
	ASSERT_MEM_EQ(blob2, blob, len);
	ASSERT_OK(gp_ssp_revive(back, 5, &clock));
	ASSERT_EQ(clock, 2);
	ASSERT(gp_ssp_needs_pull(back, 5));
	gp_ssp_destroy(back);
	back = NULL;
	blob[len - 1] ^= 1;
	ASSERT_EQ(gp_ssp_load(blob, len, &back), -EBADMSG);
	ASSERT_EQ(gp_ssp_load(blob, 3, &back), -EBADMSG);
	ASSERT(back == NULL);
	free(blob);
	free(blob2);
	gp_ssp_destroy(ssp);
}

/* ---- simulation ------------------------------------------------------ */

#define SIM_AGENTS 6
#define SIM_NEVER UINT64_MAX
#define SIM_SAMPLES 3000
#define SIM_BATCH 25   /* N = 120 */
#define SIM_EPOCHS 3
#define SIM_TOTAL (SIM_SAMPLES / SIM_BATCH * SIM_EPOCHS)
#define SIM_HEARTBEAT_MS 40
#define SIM_POLL_MS 5
#define SIM_BASE 1
#define SIM_MAX_PER_CLOCK 16

enum sim_state { OFFLINE, REQUEST, COMPUTE, PARKED, FINISHED };

struct sim_agent {
	uint64_t id;
	uint64_t ms_per_batch;
	uint64_t join_at;     /* first join */
	uint64_t vanish_at;   /* SIM_NEVER: stays */
	uint64_t return_at;
	enum sim_state state;
	uint64_t next;        /* time of its next action */
	int64_t clock;        /* the agent's own idea of its clock */
	bool live;            /* as the coordinator sees it */
	uint64_t dead_at;     /* when the coordinator declares it dead */
	bool joined;
	uint64_t work[SIM_MAX_PER_CLOCK];
	size_t n_work, done_work;
	uint64_t clock_started;
	uint64_t zombie;      /* a minibatch it held when it vanished */
	bool has_zombie;
	uint64_t applied;
};

struct sim {
	uint32_t s;
	struct gp_ssp *ssp;
	struct gp_params *params;
	struct gp_sched *sched;
	struct sim_agent ag[SIM_AGENTS];
	uint64_t now;
	int applied[SIM_TOTAL];
	uint64_t updates, max_staleness, zombies_rejected;
	int64_t max_lead;
	/* checkpoint taken at ck_at, crash at crash_at (SIM_NEVER: none) */
	uint64_t ck_at, crash_at;
	uint8_t *ck[3];
	size_t ck_len[3];
	int ck_applied[SIM_TOTAL];
	bool crashed;
};

static const struct gp_tensor_shape sim_shapes[] = {
	{ "w", 16, 8 },
	{ "b", 1, 8 },
};

static void sim_wake(struct sim *sm)
{
	uint64_t id;

	while (gp_ssp_pop_ready(sm->ssp, &id) == 1) {
		for (int i = 0; i < SIM_AGENTS; i++) {
			if (sm->ag[i].id == id) {
				ASSERT_EQ(sm->ag[i].state, PARKED);
				sm->ag[i].state = REQUEST;
				sm->ag[i].next = sm->now;
			}
		}
	}
}

/* The slowest live clock, from the simulation's own bookkeeping. */
static int64_t sim_min_live(const struct sim *sm)
{
	int64_t m = INT64_MAX;

	for (int i = 0; i < SIM_AGENTS; i++)
		if (sm->ag[i].live && sm->ag[i].clock < m)
			m = sm->ag[i].clock;
	return m;
}

static void sim_join(struct sim *sm, struct sim_agent *a)
{
	int64_t clock;
	struct gp_ssp_agent_info info;

	if (gp_ssp_get(sm->ssp, a->id, &info) == 0)
		ASSERT_OK(gp_ssp_revive(sm->ssp, a->id, &clock));
	else
		ASSERT_OK(gp_ssp_add(sm->ssp, a->id, 1000.0 / (double)a->ms_per_batch,
				     &clock));
	/* A valid clock: where the slowest live agent is, or ahead of it
	 * within the bound. */
	ASSERT_EQ(clock, gp_ssp_min_clock(sm->ssp) > clock ?
		  gp_ssp_min_clock(sm->ssp) : clock);
	ASSERT_LE(clock, gp_ssp_min_clock(sm->ssp) + sm->s + 1);
	if (sim_min_live(sm) != INT64_MAX)
		ASSERT_GE(clock, sim_min_live(sm));
	a->clock = clock;
	a->live = true;
	a->joined = true;
	a->state = REQUEST;
	a->next = sm->now;
}

/* The coordinator declares the agent dead (heartbeat timeout). */
static void sim_declare_dead(struct sim *sm, struct sim_agent *a)
{
	ASSERT_OK(gp_ssp_mark_dead(sm->ssp, a->id));
	gp_sched_release_agent(sm->sched, a->id);
	a->live = false;
	a->dead_at = SIM_NEVER;
	sim_wake(sm);
}

static void sim_request(struct sim *sm, struct sim_agent *a)
{
	struct gp_ssp_agent_info info;
	uint32_t want;
	size_t got = 0;
	bool parked;
	int r;

	if (!gp_ssp_may_compute(sm->ssp, a->id)) {
		ASSERT_OK(gp_ssp_wait(sm->ssp, a->id, &parked));
		ASSERT(parked);
		a->state = PARKED;
		a->next = SIM_NEVER;
		return;
	}
	/* Pull every clock (only changed shards would travel). */
	ASSERT_OK(gp_ssp_pulled(sm->ssp, a->id, gp_params_version(sm->params)));
	ASSERT(!gp_ssp_needs_pull(sm->ssp, a->id));
	ASSERT_OK(gp_ssp_get(sm->ssp, a->id, &info));
	want = gp_ssp_work_per_clock(sm->ssp, a->id, SIM_BASE,
				     SIM_MAX_PER_CLOCK);
	ASSERT_GE(want, info.work_this_clock);
	r = gp_sched_assign(sm->sched, a->id, sm->now, want - info.work_this_clock,
			    a->work, &got);
	if (r == GP_REASON_JOB_DONE) {
		a->state = FINISHED;
		a->next = SIM_NEVER;
		return;
	}
	ASSERT_OK(r);
	if (got == 0) { /* stragglers are running: ask again soon */
		a->next = sm->now + SIM_POLL_MS;
		return;
	}
	ASSERT_OK(gp_ssp_note_work(sm->ssp, a->id, (uint32_t)got));
	a->n_work = got;
	a->done_work = 0;
	a->clock_started = sm->now;
	a->state = COMPUTE;
	a->next = sm->now + a->ms_per_batch;
}

static void sim_gradient(uint64_t mb, float *g, size_t n)
{
	for (size_t i = 0; i < n; i++)
		g[i] = (float)((double)((mb * 31 + i * 17) % 23) - 11.0) * 1e-3f;
}

static void sim_update(struct sim *sm, struct sim_agent *a)
{
	uint64_t mb = a->work[a->done_work];
	float g[136];
	int64_t staleness = -1;
	int r;

	/* The coordinator's checks, then apply, then mark applied. */
	r = gp_ssp_check_update(sm->ssp, a->id, a->clock, &staleness);
	ASSERT_OK(r);
	ASSERT_GE(staleness, 0);
	ASSERT_LE(staleness, sm->s);
	ASSERT_OK(gp_sched_check(sm->sched, a->id, mb));
	/* Never more than s clocks ahead of the slowest live agent. */
	ASSERT_LE(a->clock - sim_min_live(sm), sm->s);
	if (a->clock - sim_min_live(sm) > sm->max_lead)
		sm->max_lead = a->clock - sim_min_live(sm);
	if ((uint64_t)staleness > sm->max_staleness)
		sm->max_staleness = (uint64_t)staleness;
	sim_gradient(mb, g, 136);
	ASSERT_OK(gp_params_apply(sm->params, g, 136, NULL));
	ASSERT_OK(gp_sched_complete(sm->sched, a->id, mb, NULL));
	ASSERT_LT(mb, SIM_TOTAL);
	sm->applied[mb]++;
	sm->updates++;
	a->applied++;
}

static void sim_vanish(struct sim *sm, struct sim_agent *a)
{
	/* It dies silently mid-clock; the coordinator notices after the
	 * heartbeat timeout. It keeps one minibatch to send when back. */
	a->has_zombie = a->state == COMPUTE && a->done_work < a->n_work;
	if (a->has_zombie)
		a->zombie = a->work[a->done_work];
	a->state = OFFLINE;
	a->next = a->return_at;
	a->dead_at = sm->now + SIM_HEARTBEAT_MS;
	a->vanish_at = SIM_NEVER;
}

static void sim_crash_restore(struct sim *sm)
{
	ASSERT(sm->ck[0] && sm->ck[1] && sm->ck[2]);
	gp_ssp_destroy(sm->ssp);
	gp_params_destroy(sm->params);
	gp_sched_destroy(sm->sched);
	sm->ssp = NULL;
	sm->params = NULL;
	sm->sched = NULL;
	ASSERT_OK(gp_ssp_load(sm->ck[0], sm->ck_len[0], &sm->ssp));
	ASSERT_OK(gp_params_load(sm->ck[1], sm->ck_len[1], &sm->params));
	ASSERT_OK(gp_sched_load(sm->ck[2], sm->ck_len[2], &sm->sched));
	/* What was applied after the checkpoint is gone with the crash. */
	memcpy(sm->applied, sm->ck_applied, sizeof(sm->applied));
	for (int i = 0; i < SIM_AGENTS; i++) {
		struct sim_agent *a = &sm->ag[i];

		a->live = false;
		a->dead_at = SIM_NEVER;
		a->has_zombie = false;
		if (a->state == FINISHED || a->state == OFFLINE)
			continue;
		/* Connected agents lose their session and reconnect. */
		a->state = OFFLINE;
		a->next = sm->now + 20 + (uint64_t)i;
	}
	sm->crashed = true;
}

static void sim_step(struct sim *sm, struct sim_agent *a)
{
	switch (a->state) {
	case OFFLINE:
		if (a->joined && a->has_zombie) {
			int r;

			/* Back after being declared dead: its late update for the
			 * minibatch it held is refused. */
			sim_join(sm, a);
			r = gp_ssp_check_update(sm->ssp, a->id, a->clock, NULL);
			if (r == 0)
				r = gp_sched_check(sm->sched, a->id, a->zombie);
			ASSERT_NE(r, 0);
			ASSERT_NE(gp_sched_complete(sm->sched, a->id, a->zombie,
						    NULL), 0);
			sm->zombies_rejected++;
			a->has_zombie = false;
		} else {
			sim_join(sm, a);
		}
		break;
	case REQUEST:
		sim_request(sm, a);
		break;
	case COMPUTE:
		sim_update(sm, a);
		if (++a->done_work < a->n_work) {
			a->next = sm->now + a->ms_per_batch;
			break;
		}
		/* All work of the clock applied: advance. */
		ASSERT_EQ(gp_sched_outstanding(sm->sched, a->id), 0);
		ASSERT_OK(gp_ssp_observe_speed(sm->ssp, a->id,
			(double)a->n_work * 1000.0 /
			(double)(sm->now - a->clock_started)));
		ASSERT_OK(gp_ssp_advance(sm->ssp, a->id, a->clock + 1));
		a->clock++;
		a->state = REQUEST;
		a->next = sm->now;
		sim_wake(sm);
		break;
	case PARKED:
	case FINISHED:
		GP_TEST_FAIL("agent %" PRIu64 " stepped while idle", a->id);
	}
}

static void sim_run(uint32_t s, bool crash, struct sim *sm)
{
	struct gp_params_config pc = { .rows_per_shard = 4, .lr = 0.01f,
				       .momentum = 0.9f };
	struct gp_sched_config sc = { .n_samples = SIM_SAMPLES,
				      .batch_size = SIM_BATCH,
				      .epochs = SIM_EPOCHS, .seed = 7 };
	/* id, ms per minibatch, join, vanish, return */
	static const uint64_t plan[SIM_AGENTS][5] = {
		{ 1, 10, 0, SIM_NEVER, 0 },
		{ 2, 12, 0, SIM_NEVER, 0 },
		{ 3, 9, 1, SIM_NEVER, 0 },
		{ 4, 100, 2, SIM_NEVER, 0 },  /* the very slow one */
		{ 5, 15, 0, 230, 700 },         /* vanishes mid-epoch, returns */
		{ 6, 11, 550, SIM_NEVER, 0 },   /* joins halfway */
	};
	uint64_t steps = 0, fast = 0;

	memset(sm, 0, sizeof(*sm));
	sm->s = s;
	ASSERT_OK(gp_ssp_create(s, &sm->ssp));
	ASSERT_OK(gp_params_create(&pc, sim_shapes, 2, &sm->params));
	ASSERT_OK(gp_sched_create(&sc, &sm->sched));
	ASSERT_EQ(gp_sched_minibatches(sm->sched) * SIM_EPOCHS, SIM_TOTAL);
	sm->ck_at = crash ? 500 : SIM_NEVER;
	sm->crash_at = crash ? 850 : SIM_NEVER;
	for (int i = 0; i < SIM_AGENTS; i++) {
		struct sim_agent *a = &sm->ag[i];

		a->id = plan[i][0];
		a->ms_per_batch = plan[i][1];
		a->join_at = plan[i][2];
		a->vanish_at = plan[i][3];
		a->return_at = plan[i][4];
		a->state = OFFLINE;
		a->next = a->join_at;
		a->dead_at = SIM_NEVER;
	}

	while (!gp_sched_done(sm->sched)) {
		struct sim_agent *next = NULL;
		uint64_t t = SIM_NEVER;
		int kind = 0; /* 0 step, 1 vanish, 2 declare dead, 3 ck, 4 crash */

		ASSERT_LT(++steps, 1000000);
		for (int i = 0; i < SIM_AGENTS; i++) {
			struct sim_agent *a = &sm->ag[i];

			if (a->dead_at < t) {
				t = a->dead_at;
				next = a;
				kind = 2;
			}
			if (a->vanish_at < t && a->joined) {
				t = a->vanish_at;
				next = a;
				kind = 1;
			}
			if (a->next < t) {
				t = a->next;
				next = a;
				kind = 0;
			}
		}
		if (sm->ck_at <= t) {
			t = sm->ck_at;
			kind = 3;
		}
		if (sm->crash_at <= t) {
			t = sm->crash_at;
			kind = 4;
		}
		/* Nothing can happen: a deadlock. */
		ASSERT(t != SIM_NEVER);
		ASSERT_GE(t, sm->now);
		sm->now = t;
		switch (kind) {
		case 0:
			sim_step(sm, next);
			break;
		case 1:
			sim_vanish(sm, next);
			break;
		case 2:
			sim_declare_dead(sm, next);
			break;
		case 3:
			ASSERT_OK(gp_ssp_save(sm->ssp, &sm->ck[0], &sm->ck_len[0]));
			ASSERT_OK(gp_params_save(sm->params, &sm->ck[1],
						 &sm->ck_len[1]));
			ASSERT_OK(gp_sched_save(sm->sched, &sm->ck[2],
						&sm->ck_len[2]));
			memcpy(sm->ck_applied, sm->applied, sizeof(sm->applied));
			sm->ck_at = SIM_NEVER;
			break;
		default:
			sim_crash_restore(sm);
			sm->crash_at = SIM_NEVER;
			break;
		}
	}

	/* Every minibatch of every epoch applied exactly once. */
	for (int i = 0; i < SIM_TOTAL; i++)
		ASSERT_EQ(sm->applied[i], 1);
	ASSERT_LE(sm->max_staleness, s);
	ASSERT_LE(sm->max_lead, s);
	if (s > 0)
		ASSERT_GT(sm->max_lead, 0); /* the slack was actually used */
	ASSERT_EQ(sm->zombies_rejected, 1);
	if (crash)
		ASSERT(sm->crashed);
	/* The fast agents (1, 2, 3, 6) did most of the work; the slow one at
	 * most about a tenth of what the fastest did. */
	fast = sm->ag[0].applied + sm->ag[1].applied + sm->ag[2].applied +
	       sm->ag[5].applied;
	ASSERT_GT(fast * 2, SIM_TOTAL);
	ASSERT_GT(sm->ag[5].applied, 0);
	ASSERT_GT(sm->ag[3].applied, 0);
	ASSERT_LT(sm->ag[3].applied * 4, sm->ag[2].applied);
	printf("sim s=%u crash=%d: %" PRIu64 " updates, t=%" PRIu64
	       " ms, max lead %" PRId64 ", max staleness %" PRIu64
	       ", applied by agent: %" PRIu64 " %" PRIu64 " %" PRIu64
	       " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
	       s, crash, sm->updates, sm->now, sm->max_lead, sm->max_staleness,
	       sm->ag[0].applied, sm->ag[1].applied, sm->ag[2].applied,
	       sm->ag[3].applied, sm->ag[4].applied, sm->ag[5].applied);
	for (int i = 0; i < 3; i++)
		free(sm->ck[i]);
	gp_ssp_destroy(sm->ssp);
	gp_params_destroy(sm->params);
	gp_sched_destroy(sm->sched);
}

static void test_simulation(void)
{
	static struct sim sm;

	sim_run(0, false, &sm);
	sim_run(3, false, &sm);
	sim_run(0, true, &sm);
	sim_run(3, true, &sm);
}

/* The link from round trips: (bytes down + up) over the time beyond the
 * agent's compute, averaged; only the probed clock's first answer counts,
 * and a dead agent's probe is forgotten. */
static void test_link(void)
{
	struct gp_ssp *ssp = NULL;
	struct gp_ssp_agent_info a;

	ASSERT_OK(gp_ssp_create(3, &ssp));
	ASSERT_OK(gp_ssp_add(ssp, 1, 10.0, NULL));
	ASSERT_OK(gp_ssp_get(ssp, 1, &a));
	ASSERT_NEAR(a.link_bps, 0, 0);
	/* No probe open: nothing learnt. */
	ASSERT_EQ(gp_ssp_link_answered(ssp, 1, 0, 5000000, 0, 0, 100), 0);
	/* 1 MB down at t = 1 s; the answer at 1.6 s after 0.1 s of compute,
	 * with 1 MB up: 2 MB in 0.5 s. */
	ASSERT_OK(gp_ssp_link_sent(ssp, 1, 0, 1000000, 1000000));
	ASSERT_EQ(gp_ssp_link_answered(ssp, 1, 1, 1600000, 100000, 0,
				       1000000), 0);
	ASSERT_EQ(gp_ssp_link_answered(ssp, 1, 0, 1600000, 100000, 0,
				       1000000), 1);
	ASSERT_OK(gp_ssp_get(ssp, 1, &a));
	ASSERT_NEAR(a.link_bps, 4e6, 1e-6);
	/* The clock's second answer is no sample. */
	ASSERT_EQ(gp_ssp_link_answered(ssp, 1, 0, 1700000, 100000, 0,
				       1000000), 0);
	/* The next sample, 2 MB in 0.25 s (8e6), is averaged (weight 0.3). */
	ASSERT_OK(gp_ssp_link_sent(ssp, 1, 1, 2000000, 1000000));
	ASSERT_EQ(gp_ssp_link_answered(ssp, 1, 1, 2350000, 100000, 0,
				       1000000), 1);
	ASSERT_OK(gp_ssp_get(ssp, 1, &a));
	ASSERT_NEAR(a.link_bps, 4e6 + 0.3 * 4e6, 1e-6);
	/* A round trip no longer than the compute counts 0.1 ms of wait. */
	ASSERT_OK(gp_ssp_link_sent(ssp, 1, 2, 3000000, 50));
	ASSERT_EQ(gp_ssp_link_answered(ssp, 1, 2, 3100000, 200000, 0, 50), 1);
	ASSERT_OK(gp_ssp_get(ssp, 1, &a));
	ASSERT_NEAR(a.link_bps, 5.2e6 + 0.3 * (1e6 - 5.2e6), 1e-6);
	/* Death forgets the open probe, not the rate. */
	ASSERT_OK(gp_ssp_link_sent(ssp, 1, 3, 4000000, 1000));
	ASSERT_OK(gp_ssp_mark_dead(ssp, 1));
	ASSERT_OK(gp_ssp_revive(ssp, 1, NULL));
	ASSERT_EQ(gp_ssp_link_answered(ssp, 1, 3, 4100000, 0, 0, 1000), 0);
	ASSERT_OK(gp_ssp_get(ssp, 1, &a));
	ASSERT_NEAR(a.link_bps, 3.94e6, 1e-6);
	/* held_us (from 4.2 s): 2 MB in a round trip of 0.5 s of which the
	 * agent held the work 0.3 s, computing 0.1 s: 2 MB in 0.2 s. */
	ASSERT_OK(gp_ssp_link_sent(ssp, 1, 4, 4200000, 1000000));
	ASSERT_EQ(gp_ssp_link_answered(ssp, 1, 4, 4700000, 100000, 300000,
				       1000000), 1);
	ASSERT_OK(gp_ssp_get(ssp, 1, &a));
	ASSERT_NEAR(a.link_bps, 3.94e6 + 0.3 * (1e7 - 3.94e6), 1e-6);
	/* A held_us under compute_us, or of the whole round trip or more
	 * (which would make the link infinitely fast), counts compute_us:
	 * 2 MB in 0.4 s. */
	for (int k = 0; k < 2; k++) {
		double before;

		ASSERT_OK(gp_ssp_get(ssp, 1, &a));
		before = a.link_bps;
		ASSERT_OK(gp_ssp_link_sent(ssp, 1, 5 + k, 5000000, 1000000));
		ASSERT_EQ(gp_ssp_link_answered(ssp, 1, 5 + k, 5500000, 100000,
					       k ? 500000 : 50000, 1000000),
			  1);
		ASSERT_OK(gp_ssp_get(ssp, 1, &a));
		ASSERT_NEAR(a.link_bps, before + 0.3 * (5e6 - before), 1e-6);
	}
	ASSERT_EQ(gp_ssp_link_sent(ssp, 9, 0, 0, 0), -ENOENT);
	ASSERT_EQ(gp_ssp_link_answered(ssp, 9, 0, 0, 0, 0, 0), -ENOENT);
	gp_ssp_destroy(ssp);
}

/* The minimum clock and the ready list are kept without scans (a count
 * of live agents per clock, a queue of waits): random joins, deaths,
 * revivals, removals, advances and waits, for bounds 0, 1 and 3, each
 * checked against a scan of every agent: m is the least live clock, and
 * after the ready agents are popped none is left waiting within the
 * bound. */
static uint64_t prop_rng = 88172645463325252ull;

static uint64_t prop_next(void)
{
	prop_rng ^= prop_rng << 13;
	prop_rng ^= prop_rng >> 7;
	prop_rng ^= prop_rng << 17;
	return prop_rng;
}

static size_t live_scan(const struct gp_ssp *ssp)
{
	struct gp_ssp_agent_info a;
	size_t l = 0;

	for (size_t i = 0; gp_ssp_get_at(ssp, i, &a) == 0; i++)
		l += a.live;
	return l;
}

static void test_min_and_ready_property(void)
{
	for (uint32_t s = 0; s <= 3; s += s ? 2 : 1) {
		struct gp_ssp *ssp = NULL;
		size_t pops = 0, waits = 0;

		ASSERT_OK(gp_ssp_create(s, &ssp));
		for (int step = 0; step < 20000; step++) {
			uint64_t id = 1 + prop_next() % 24, got;
			struct gp_ssp_agent_info a;
			bool have = gp_ssp_get(ssp, id, &a) == 0, parked;
			unsigned op = (unsigned)(prop_next() % 100);
			int64_t min = INT64_MAX;

			if (!have)
				ASSERT_OK(gp_ssp_add(ssp, id, 1.0, NULL));
			else if (op < 3)
				ASSERT_OK(gp_ssp_remove(ssp, id));
			else if (op < 8)
				ASSERT_OK(gp_ssp_mark_dead(ssp, id));
			else if (op < 13 && !a.live)
				ASSERT_OK(gp_ssp_revive(ssp, id, NULL));
			else if (a.live && gp_ssp_may_compute(ssp, id))
				ASSERT_OK(gp_ssp_advance(ssp, id, a.clock + 1));
			else if (a.live) {
				ASSERT_OK(gp_ssp_wait(ssp, id, &parked));
				waits += parked;
			}
			while (gp_ssp_pop_ready(ssp, &got) == 1) {
				ASSERT_OK(gp_ssp_get(ssp, got, &a));
				ASSERT(a.live && !a.waiting);
				ASSERT(a.clock <= gp_ssp_min_clock(ssp) + (int64_t)s);
				pops++;
			}
			for (size_t i = 0; gp_ssp_get_at(ssp, i, &a) == 0; i++) {
				if (a.live && a.clock < min)
					min = a.clock;
				/* Nobody left waiting who may go. */
				ASSERT(!(a.live && a.waiting &&
					 a.clock <= gp_ssp_min_clock(ssp) +
							    (int64_t)s));
			}
			if (min != INT64_MAX)
				ASSERT_EQ(gp_ssp_min_clock(ssp), min);
			ASSERT_EQ(gp_ssp_live_count(ssp), live_scan(ssp));
		}
		/* The walk did park agents and wake them. */
		ASSERT(waits > 100);
		ASSERT(pops > 100);
		gp_ssp_destroy(ssp);
	}
}

int main(void)
{
	setvbuf(stdout, NULL, _IONBF, 0);
	test_min_and_ready_property();
	test_rule();
	test_staleness();
	test_speed();
	test_link();
	test_checkpoint();
	test_simulation();
	printf("ssp: ok\n");
	return 0;
}
