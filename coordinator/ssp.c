#include "ssp.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"

/* Checkpoint payload (inside the envelope of bytes.h, magic "GPSS",
 * version 1):
 *
 *   u32  s                    staleness bound
 *   i64  m                    min clock when saved
 *   u32  n                    agent count (<= GP_SSP_MAX_AGENTS)
 *   n x  { u64 id; i64 clock; f64 speed }   strictly increasing ids
 *
 * Liveness, waits, read clocks and pulled versions are not saved: after a
 * restart no agent is connected, and each must pull again. */
#define SSP_MAGIC "GPSS"
#define SSP_FORMAT 1
#define SSP_AGENT_SIZE 24u

/* Weight of a new speed (or link) sample in the moving average. */
#define SPEED_ALPHA 0.3
/* A link sample is bytes over seconds; a round trip whose wait is below
 * this is counted as this long, so that a loopback link is very fast, not
 * infinitely. */
#define LINK_MIN_WAIT_S 1e-4

struct agent {
	uint64_t id;
	int64_t clock;
	int64_t read_clock;
	uint64_t pulled_version;
	uint32_t work_this_clock;
	double speed;
	bool measured;  /* speed is an observation, not the announced seed */
	bool live;
	bool waiting;
	/* In the wait queue (gp_ssp_pop_ready) as entry wait_seq; false
	 * once it stopped waiting any other way, which makes that entry
	 * stale. */
	bool queued;
	uint64_t wait_seq;
	/* The link: bytes per second moved per second of the agent's waiting,
	 * EMA (0: not measured), and the open round-trip probe (a clock
	 * handed out while the agent held no other work). */
	double link_bps;
	int64_t probe_clock;   /* INT64_MIN: none open */
	uint64_t probe_us, probe_bytes;
};

struct gp_ssp {
	uint32_t s;
	int64_t m;      /* cached min live clock; last value when none live */
	struct agent *agents; /* sorted by id */
	size_t n;
	size_t cap;
	size_t n_live;  /* agents with live set */
	/* Live agents per clock: every live clock lies in [m, m + s + 1]
	 * (an agent starts or revives at m at least, and advances only
	 * within the bound), so cnt[c % w] with w = s + 2 counts the live
	 * agents at clock c, and the minimum is found without a scan.
	 * NULL (w 0) for a bound too large to hold: then a scan. */
	uint32_t *cnt;
	size_t w;
	/* Agents parked by the bound, in the order they waited; an entry
	 * whose agent stopped waiting since (its queued flag off, or another
	 * wait_seq) is stale and dropped when reached. A live entry's agent
	 * is at clock m' + s + 1 for the m' of its wait, and m' grows along
	 * the queue: when the first live entry cannot go, none can. */
	struct wq_entry { uint64_t id, seq; } *wq;
	size_t wq_head, wq_len, wq_cap;
	uint64_t wait_seq;
};

/* Largest bound with a count ring (4 KiB x 4). */
#define SSP_RING_MAX 4096

int gp_ssp_create(uint32_t s, struct gp_ssp **ret)
{
	struct gp_ssp *ssp;

	if (s > GP_SSP_MAX_BOUND)
		return -EINVAL;
	ssp = calloc(1, sizeof(*ssp));
	if (!ssp)
		return -ENOMEM;
	ssp->s = s;
	if ((size_t)s + 2 <= SSP_RING_MAX) {
		ssp->w = (size_t)s + 2;
		ssp->cnt = calloc(ssp->w, sizeof(*ssp->cnt));
		if (!ssp->cnt) {
			free(ssp);
			return -ENOMEM;
		}
	}
	*ret = ssp;
	return 0;
}

void gp_ssp_destroy(struct gp_ssp *ssp)
{
	if (!ssp)
		return;
	free(ssp->agents);
	free(ssp->cnt);
	free(ssp->wq);
	free(ssp);
}

uint32_t gp_ssp_bound(const struct gp_ssp *ssp)
{
	return ssp->s;
}

int64_t gp_ssp_min_clock(const struct gp_ssp *ssp)
{
	return ssp->m;
}

size_t gp_ssp_count(const struct gp_ssp *ssp)
{
	return ssp->n;
}

size_t gp_ssp_live_count(const struct gp_ssp *ssp)
{
	return ssp->n_live;
}

/* Index of id, or of where it would be inserted (*found false). */
static size_t find(const struct gp_ssp *ssp, uint64_t id, bool *found)
{
	size_t lo = 0, hi = ssp->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (ssp->agents[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = lo < ssp->n && ssp->agents[lo].id == id;
	return lo;
}

static struct agent *lookup(const struct gp_ssp *ssp, uint64_t id)
{
	bool found;
	size_t i = find(ssp, id, &found);

	return found ? &ssp->agents[i] : NULL;
}

/* A live agent at clock c comes (d = 1) or goes (d = -1). */
static void count(struct gp_ssp *ssp, int64_t c, int d)
{
	if (ssp->cnt)
		ssp->cnt[(uint64_t)c % ssp->w] += (uint32_t)d;
}

/* m only rises: a live agent's clock is never below it (joins and revivals
 * start at m, advances go up), so the minimum over live agents is >= the old
 * m, and with no live agent m keeps its value. With the count ring, m moves
 * up to the first clock that has live agents: at most s + 1 steps. */
static void refresh_min(struct gp_ssp *ssp)
{
	bool any = false;
	int64_t m = 0;

	if (ssp->n_live == 0)
		return;
	if (ssp->cnt) {
		for (size_t i = 0; i < ssp->w; i++, ssp->m++)
			if (ssp->cnt[(uint64_t)ssp->m % ssp->w])
				return;
		/* Not reached while the invariant holds. */
		ssp->m -= (int64_t)ssp->w;
	}
	for (size_t i = 0; i < ssp->n; i++) {
		const struct agent *a = &ssp->agents[i];

		if (a->live && (!any || a->clock < m)) {
			m = a->clock;
			any = true;
		}
	}
	if (any && m > ssp->m)
		ssp->m = m;
}

static void reset_view(struct agent *a)
{
	a->read_clock = INT64_MIN;
	a->pulled_version = 0;
	a->work_this_clock = 0;
	a->waiting = false;
	a->queued = false;
	a->probe_clock = INT64_MIN;
}

int gp_ssp_add(struct gp_ssp *ssp, uint64_t id, double speed,
	       int64_t *ret_clock)
{
	struct agent *a;
	bool found;
	size_t i = find(ssp, id, &found);

	if (found)
		return -EEXIST;
	if (ssp->n >= GP_SSP_MAX_AGENTS)
		return -ENOSPC;
	if (ssp->n == ssp->cap) {
		size_t cap = ssp->cap ? ssp->cap * 2 : 16;
		struct agent *d = realloc(ssp->agents, cap * sizeof(*d));

		if (!d)
			return -ENOMEM;
		ssp->agents = d;
		ssp->cap = cap;
	}
	memmove(&ssp->agents[i + 1], &ssp->agents[i],
		(ssp->n - i) * sizeof(*ssp->agents));
	ssp->n++;
	a = &ssp->agents[i];
	*a = (struct agent){
		.id = id,
		.clock = ssp->m,
		.speed = (isfinite(speed) && speed > 0) ? speed : 0,
		.live = true,
	};
	ssp->n_live++;
	count(ssp, a->clock, 1);
	reset_view(a);
	if (ret_clock)
		*ret_clock = a->clock;
	return 0;
}

int gp_ssp_remove(struct gp_ssp *ssp, uint64_t id)
{
	bool found;
	size_t i = find(ssp, id, &found);

	if (!found)
		return -ENOENT;
	if (ssp->agents[i].live) {
		ssp->n_live--;
		count(ssp, ssp->agents[i].clock, -1);
	}
	memmove(&ssp->agents[i], &ssp->agents[i + 1],
		(ssp->n - i - 1) * sizeof(*ssp->agents));
	ssp->n--;
	refresh_min(ssp);
	return 0;
}

int gp_ssp_mark_dead(struct gp_ssp *ssp, uint64_t id)
{
	struct agent *a = lookup(ssp, id);

	if (!a)
		return -ENOENT;
	if (a->live) {
		ssp->n_live--;
		count(ssp, a->clock, -1);
	}
	a->live = false;
	a->waiting = false;
	a->queued = false;
	a->probe_clock = INT64_MIN;
	refresh_min(ssp);
	return 0;
}

int gp_ssp_revive(struct gp_ssp *ssp, uint64_t id, int64_t *ret_clock)
{
	struct agent *a = lookup(ssp, id);

	if (!a)
		return -ENOENT;
	if (a->live)
		count(ssp, a->clock, -1);
	else
		ssp->n_live++;
	if (a->clock < ssp->m)
		a->clock = ssp->m;
	count(ssp, a->clock, 1);
	a->live = true;
	reset_view(a);
	/* The agent's clock is >= m, so m cannot fall; with no other agent live
	 * it may become the new (higher) minimum. */
	refresh_min(ssp);
	if (ret_clock)
		*ret_clock = a->clock;
	return 0;
}

static void fill_info(const struct agent *a, struct gp_ssp_agent_info *ret)
{
	*ret = (struct gp_ssp_agent_info){
		.id = a->id,
		.clock = a->clock,
		.read_clock = a->read_clock,
		.pulled_version = a->pulled_version,
		.work_this_clock = a->work_this_clock,
		.speed = a->speed,
		.speed_measured = a->measured,
		.live = a->live,
		.waiting = a->waiting,
		.link_bps = a->link_bps,
	};
}

int gp_ssp_get(const struct gp_ssp *ssp, uint64_t id,
	       struct gp_ssp_agent_info *ret)
{
	const struct agent *a = lookup(ssp, id);

	if (!a)
		return -ENOENT;
	fill_info(a, ret);
	return 0;
}

int gp_ssp_get_at(const struct gp_ssp *ssp, size_t i,
		  struct gp_ssp_agent_info *ret)
{
	if (i >= ssp->n)
		return -ENOENT;
	fill_info(&ssp->agents[i], ret);
	return 0;
}

static bool within_bound(const struct gp_ssp *ssp, const struct agent *a)
{
	return a->live && a->clock <= ssp->m + (int64_t)ssp->s;
}

bool gp_ssp_may_compute(const struct gp_ssp *ssp, uint64_t id)
{
	const struct agent *a = lookup(ssp, id);

	return a && within_bound(ssp, a);
}

bool gp_ssp_needs_pull(const struct gp_ssp *ssp, uint64_t id)
{
	const struct agent *a = lookup(ssp, id);

	if (!a)
		return true;
	return a->read_clock == INT64_MIN ||
	       a->read_clock < a->clock - (int64_t)ssp->s;
}

static int check_agent(const struct agent *a)
{
	if (!a)
		return GP_REASON_UNKNOWN_AGENT;
	if (!a->live)
		return GP_REASON_AGENT_DEAD;
	return 0;
}

int gp_ssp_pulled(struct gp_ssp *ssp, uint64_t id, uint64_t version)
{
	struct agent *a = lookup(ssp, id);
	int r = check_agent(a);

	if (r)
		return r;
	if (!within_bound(ssp, a))
		return GP_REASON_CLOCK_BOUND;
	a->read_clock = ssp->m;
	a->pulled_version = version;
	return 0;
}

static int compare_clock(const struct agent *a, int64_t clock)
{
	int r = check_agent(a);

	if (r)
		return r;
	if (clock > a->clock)
		return GP_REASON_CLOCK_AHEAD;
	if (clock < a->clock)
		return GP_REASON_CLOCK_BEHIND;
	return 0;
}

int gp_ssp_check_clock(const struct gp_ssp *ssp, uint64_t id, int64_t clock)
{
	return compare_clock(lookup(ssp, id), clock);
}

int gp_ssp_advance(struct gp_ssp *ssp, uint64_t id, int64_t new_clock)
{
	struct agent *a = lookup(ssp, id);
	int r = check_agent(a);

	if (r)
		return r;
	if (new_clock <= a->clock)
		return GP_REASON_CLOCK_BEHIND;
	if (new_clock - a->clock > 1)
		return GP_REASON_CLOCK_AHEAD;
	if (!within_bound(ssp, a) || new_clock >= GP_SSP_MAX_CLOCK)
		return GP_REASON_CLOCK_BOUND;
	count(ssp, a->clock, -1);
	count(ssp, new_clock, 1);
	a->clock = new_clock;
	a->work_this_clock = 0;
	a->waiting = false;
	a->queued = false;
	refresh_min(ssp);
	return 0;
}

int gp_ssp_check_update(const struct gp_ssp *ssp, uint64_t id, int64_t clock,
			int64_t *ret_staleness)
{
	const struct agent *a = lookup(ssp, id);
	int64_t staleness;
	int r = compare_clock(a, clock);

	if (r)
		return r;
	if (a->read_clock == INT64_MIN)
		return GP_REASON_STALE;
	staleness = a->clock - a->read_clock;
	if (staleness < 0 || staleness > (int64_t)ssp->s)
		return GP_REASON_STALE;
	if (ret_staleness)
		*ret_staleness = staleness;
	return 0;
}

int gp_ssp_wait(struct gp_ssp *ssp, uint64_t id, bool *ret_parked)
{
	struct agent *a = lookup(ssp, id);
	int r = check_agent(a);

	if (r)
		return r;
	a->waiting = !within_bound(ssp, a);
	if (!a->waiting) {
		a->queued = false;
	} else if (!a->queued) {
		if (ssp->wq_len == ssp->wq_cap) {
			size_t cap = ssp->wq_cap ? 2 * ssp->wq_cap : 16;
			struct wq_entry *q = malloc(cap * sizeof(*q));

			if (!q) {
				a->waiting = false;
				return -ENOMEM;
			}
			for (size_t i = 0; i < ssp->wq_len; i++)
				q[i] = ssp->wq[(ssp->wq_head + i) % ssp->wq_cap];
			free(ssp->wq);
			ssp->wq = q;
			ssp->wq_head = 0;
			ssp->wq_cap = cap;
		}
		a->queued = true;
		a->wait_seq = ++ssp->wait_seq;
		ssp->wq[(ssp->wq_head + ssp->wq_len++) % ssp->wq_cap] =
			(struct wq_entry){ a->id, a->wait_seq };
	}
	if (ret_parked)
		*ret_parked = a->waiting;
	return 0;
}

int gp_ssp_pop_ready(struct gp_ssp *ssp, uint64_t *ret_id)
{
	while (ssp->wq_len > 0) {
		struct wq_entry e = ssp->wq[ssp->wq_head];
		struct agent *a = lookup(ssp, e.id);
		bool live = a && a->queued && a->wait_seq == e.seq;

		if (live && a->waiting && !within_bound(ssp, a))
			return 0;
		ssp->wq_head = (ssp->wq_head + 1) % ssp->wq_cap;
		ssp->wq_len--;
		if (!live)
			continue;
		a->queued = false;
		if (a->waiting) {
			a->waiting = false;
			*ret_id = a->id;
			return 1;
		}
	}
	return 0;
}

int gp_ssp_observe_speed(struct gp_ssp *ssp, uint64_t id, double speed)
{
	struct agent *a = lookup(ssp, id);

	if (!a)
		return -ENOENT;
	if (!isfinite(speed) || speed <= 0)
		return 0;
	if (a->speed <= 0 || !a->measured)
		a->speed = speed;
	else
		a->speed += SPEED_ALPHA * (speed - a->speed);
	a->measured = true;
	return 0;
}

int gp_ssp_link_sent(struct gp_ssp *ssp, uint64_t id, int64_t clock,
		      uint64_t now_us, uint64_t bytes)
{
	struct agent *a = lookup(ssp, id);

	if (!a)
		return -ENOENT;
	a->probe_clock = clock;
	a->probe_us = now_us;
	a->probe_bytes = bytes;
	return 0;
}

int gp_ssp_link_answered(struct gp_ssp *ssp, uint64_t id, int64_t clock,
			 uint64_t now_us, uint64_t compute_us,
			 uint64_t held_us, uint64_t bytes)
{
	struct agent *a = lookup(ssp, id);
	double wait, sample;
	uint64_t held;

	if (!a)
		return -ENOENT;
	if (a->probe_clock == INT64_MIN || clock != a->probe_clock ||
	    now_us < a->probe_us)
		return 0;
	a->probe_clock = INT64_MIN;
	held = held_us >= compute_us && held_us < now_us - a->probe_us ?
		       held_us : compute_us;
	/* What the round trip took beyond the agent's holding the work:
	 * both transfers, the latency, the coordinator's own part. */
	wait = (double)(now_us - a->probe_us) / 1e6 - (double)held / 1e6;
	if (!(wait > LINK_MIN_WAIT_S))
		wait = LINK_MIN_WAIT_S;
	sample = (double)(a->probe_bytes + bytes) / wait;
	if (!(sample > 0) || !isfinite(sample))
		return 0;
	if (a->link_bps <= 0)
		a->link_bps = sample;
	else
		a->link_bps += SPEED_ALPHA * (sample - a->link_bps);
	return 1;
}

int gp_ssp_seed_speed(struct gp_ssp *ssp, uint64_t id, double speed)
{
	struct agent *a = lookup(ssp, id);

	if (!a)
		return -ENOENT;
	if (!isfinite(speed) || speed <= 0)
		return 0;
	a->speed = speed;
	a->measured = false;
	return 0;
}

double gp_ssp_slowest_speed(const struct gp_ssp *ssp)
{
	double slowest = 0;

	/* An announced speed (a benchmark's, or a lie) must not size
	 * everyone's clocks: announced ones count only while none is
	 * measured. */
	for (int pass = 0; pass < 2 && slowest == 0; pass++) {
		for (size_t i = 0; i < ssp->n; i++) {
			const struct agent *b = &ssp->agents[i];

			if (b->live && b->speed > 0 && (pass || b->measured) &&
			    (slowest == 0 || b->speed < slowest))
				slowest = b->speed;
		}
	}
	return slowest;
}

uint32_t gp_ssp_work_per_clock(const struct gp_ssp *ssp, uint64_t id,
			       uint32_t base, uint32_t max)
{
	return gp_ssp_work_per_clock_at(ssp, id, base, max,
					gp_ssp_slowest_speed(ssp));
}

uint32_t gp_ssp_work_per_clock_at(const struct gp_ssp *ssp, uint64_t id,
				  uint32_t base, uint32_t max, double slowest)
{
	const struct agent *a = lookup(ssp, id);
	double k;

	if (base == 0)
		base = 1;
	if (max == 0)
		max = UINT32_MAX;
	if (base > max)
		base = max;
	if (!a || a->speed <= 0)
		return base;
	if (slowest <= 0)
		return base;
	k = round((double)base * a->speed / slowest);
	if (k < 1)
		k = 1;
	if (k > (double)max)
		k = (double)max;
	return (uint32_t)k;
}

int gp_ssp_note_work(struct gp_ssp *ssp, uint64_t id, uint32_t n)
{
	struct agent *a = lookup(ssp, id);

	if (!a)
		return -ENOENT;
	a->work_this_clock = n > UINT32_MAX - a->work_this_clock ?
		UINT32_MAX : a->work_this_clock + n;
	return 0;
}

int gp_ssp_save(const struct gp_ssp *ssp, uint8_t **ret_data,
		size_t *ret_len)
{
	struct gp_wbuf w = {0};

	gp_wbuf_begin_blob(&w, SSP_MAGIC, SSP_FORMAT);
	gp_wbuf_put_u32(&w, ssp->s);
	gp_wbuf_put_i64(&w, ssp->m);
	gp_wbuf_put_u32(&w, (uint32_t)ssp->n);
	for (size_t i = 0; i < ssp->n; i++) {
		gp_wbuf_put_u64(&w, ssp->agents[i].id);
		gp_wbuf_put_i64(&w, ssp->agents[i].clock);
		gp_wbuf_put_f64(&w, ssp->agents[i].speed);
	}
	return gp_wbuf_finish_blob(&w, ret_data, ret_len);
}

int gp_ssp_load(const uint8_t *data, size_t len, struct gp_ssp **ret)
{
	struct gp_ssp *ssp = NULL;
	struct gp_rbuf r;
	uint32_t s, n;
	int64_t m;
	int err;

	err = gp_rbuf_open_blob(data, len, SSP_MAGIC, SSP_FORMAT, &r);
	if (err < 0)
		return err;
	if (!gp_rbuf_get_u32(&r, &s) || !gp_rbuf_get_i64(&r, &m) ||
	    !gp_rbuf_get_u32(&r, &n))
		return -EBADMSG;
	/* The count is checked against the bytes left before allocating. */
	if (s > GP_SSP_MAX_BOUND || m < 0 || m >= GP_SSP_MAX_CLOCK ||
	    n > GP_SSP_MAX_AGENTS || r.left != (size_t)n * SSP_AGENT_SIZE)
		return -EBADMSG;
	err = gp_ssp_create(s, &ssp);
	if (err < 0)
		return err;
	ssp->m = m;
	if (n > 0) {
		ssp->agents = calloc(n, sizeof(*ssp->agents));
		if (!ssp->agents) {
			err = -ENOMEM;
			goto fail;
		}
		ssp->cap = n;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct agent *a = &ssp->agents[i];

		if (!gp_rbuf_get_u64(&r, &a->id) ||
		    !gp_rbuf_get_i64(&r, &a->clock) ||
		    !gp_rbuf_get_f64(&r, &a->speed))
			goto bad;
		/* A dead agent's clock may lag m, but never ran more than s + 1
		 * clocks ahead of it. */
		if ((i > 0 && a->id <= ssp->agents[i - 1].id) || a->clock < 0 ||
		    a->clock > m + (int64_t)s + 1 || !isfinite(a->speed) ||
		    a->speed < 0)
			goto bad;
		a->live = false;
		reset_view(a);
		ssp->n++;
	}
	*ret = ssp;
	return 0;
bad:
	err = -EBADMSG;
fail:
	gp_ssp_destroy(ssp);
	return err;
}
