#include "scheduler.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"

/* Checkpoint payload (inside the envelope of bytes.h, magic "GPSC",
 * version 1):
 *
 *   u32  n_samples, batch_size, epochs
 *   u64  seed
 *   u32  epoch                 current epoch (== epochs: job done)
 *   u8   open                  open epochs: 0 (done), 1 (epoch), 2 (+ next)
 *   8 x  u64 counters          (struct gp_sched_counters order)
 *   open x {
 *     u32  next_fresh          minibatches [0, next_fresh) were handed out
 *     u32  applied             count, == popcount(bitmap), < N for epoch
 *     ceil(N / 8) bytes        applied bitmap, bit i = minibatch i
 *                              (LSB first); bits >= next_fresh are 0
 *   }
 *
 * Assignments are not saved: on load, every handed-out minibatch that is not
 * applied is queued again, in index order. */
#define SCHED_MAGIC "GPSC"
#define SCHED_FORMAT 1

enum {
	ST_QUEUED = 0,   /* never handed out (>= next_fresh) or given back */
	ST_ASSIGNED = 1,
	ST_APPLIED = 2,
	ST_MASK = 3,
	ST_HAS_PREV = 4, /* prev[] names the agent it was last taken from */
};

struct slot {
	bool open;
	bool have_perm;
	uint32_t epoch;
	uint32_t next_fresh;
	uint32_t n_applied;
	uint32_t n_queue;
	uint8_t *state;    /* N */
	uint64_t *owner;   /* N, valid while ST_ASSIGNED */
	uint64_t *prev;    /* N, valid with ST_HAS_PREV */
	uint64_t *at;      /* N, assignment time */
	uint32_t *queue;   /* N, given-back minibatches (a stack) */
	uint32_t *perm;    /* n_samples, built on first use */
};

struct gp_sched {
	struct gp_sched_config cfg;
	uint32_t n;        /* minibatches per epoch */
	uint32_t epoch;    /* lowest incomplete epoch */
	struct slot slot[2]; /* slot[0]: epoch, slot[1]: epoch + 1 if open */
	struct gp_sched_counters counters;
};

static bool config_ok(const struct gp_sched_config *c)
{
	return c->n_samples >= 1 && c->n_samples <= GP_SCHED_MAX_SAMPLES &&
	       c->batch_size >= 1 && c->epochs >= 1 &&
	       c->epochs <= GP_SCHED_MAX_EPOCHS;
}

static void slot_free(struct slot *sl)
{
	free(sl->state);
	free(sl->owner);
	free(sl->prev);
	free(sl->at);
	free(sl->queue);
	free(sl->perm);
}

static int slot_alloc(struct slot *sl, uint32_t n)
{
	sl->state = calloc(n, sizeof(*sl->state));
	sl->owner = calloc(n, sizeof(*sl->owner));
	sl->prev = calloc(n, sizeof(*sl->prev));
	sl->at = calloc(n, sizeof(*sl->at));
	sl->queue = calloc(n, sizeof(*sl->queue));
	if (!sl->state || !sl->owner || !sl->prev || !sl->at || !sl->queue)
		return -ENOMEM;
	return 0;
}

static void slot_open(struct gp_sched *s, struct slot *sl, uint32_t epoch)
{
	memset(sl->state, 0, s->n * sizeof(*sl->state));
	sl->open = true;
	sl->have_perm = false;
	sl->epoch = epoch;
	sl->next_fresh = 0;
	sl->n_applied = 0;
	sl->n_queue = 0;
}

void gp_sched_destroy(struct gp_sched *s)
{
	if (!s)
		return;
	slot_free(&s->slot[0]);
	slot_free(&s->slot[1]);
	free(s);
}

/* Allocates a schedule with no epoch open. */
static int alloc_sched(const struct gp_sched_config *cfg,
		       struct gp_sched **ret)
{
	struct gp_sched *s;

	if (!cfg || !config_ok(cfg))
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->cfg = *cfg;
	s->n = (uint32_t)(((uint64_t)cfg->n_samples + cfg->batch_size - 1) /
			  cfg->batch_size);
	if (slot_alloc(&s->slot[0], s->n) < 0 ||
	    slot_alloc(&s->slot[1], s->n) < 0) {
		gp_sched_destroy(s);
		return -ENOMEM;
	}
	*ret = s;
	return 0;
}

int gp_sched_create(const struct gp_sched_config *cfg, struct gp_sched **ret)
{
	struct gp_sched *s = NULL;
	int r = alloc_sched(cfg, &s);

	if (r < 0)
		return r;
	slot_open(s, &s->slot[0], 0);
	*ret = s;
	return 0;
}

const struct gp_sched_config *gp_sched_config(const struct gp_sched *s)
{
	return &s->cfg;
}

uint32_t gp_sched_minibatches(const struct gp_sched *s)
{
	return s->n;
}

uint32_t gp_sched_epoch(const struct gp_sched *s)
{
	return s->epoch;
}

bool gp_sched_done(const struct gp_sched *s)
{
	return s->epoch >= s->cfg.epochs;
}

uint32_t gp_sched_applied_in_epoch(const struct gp_sched *s)
{
	return s->slot[0].open ? s->slot[0].n_applied : 0;
}

/* Takes one queued minibatch of the slot: given-back ones first. */
static bool slot_take(struct gp_sched *s, struct slot *sl, uint32_t *ret_i)
{
	if (!sl->open)
		return false;
	if (sl->n_queue > 0) {
		*ret_i = sl->queue[--sl->n_queue];
		return true;
	}
	if (sl->next_fresh < s->n) {
		*ret_i = sl->next_fresh++;
		return true;
	}
	return false;
}

int gp_sched_assign(struct gp_sched *s, uint64_t agent, uint64_t now_ms,
		    size_t k, uint64_t *ret_ids, size_t *ret_n)
{
	size_t n = 0;

	if (gp_sched_done(s))
		return GP_REASON_JOB_DONE;
	while (n < k) {
		struct slot *sl = &s->slot[0];
		uint32_t i;

		if (!slot_take(s, sl, &i)) {
			sl = &s->slot[1];
			/* Epoch e+1 opens once e is entirely handed out. */
			if (!sl->open && s->epoch + 1 < s->cfg.epochs)
				slot_open(s, sl, s->epoch + 1);
			if (!slot_take(s, sl, &i))
				break;
		}
		sl->state[i] = (uint8_t)((sl->state[i] & ~ST_MASK) | ST_ASSIGNED);
		sl->owner[i] = agent;
		sl->at[i] = now_ms;
		ret_ids[n++] = (uint64_t)sl->epoch * s->n + i;
	}
	s->counters.assigned += n;
	*ret_n = n;
	return 0;
}

/* Finds the open slot and index of id, or returns the reason it has none. */
static int locate(const struct gp_sched *s, uint64_t id, int *ret_slot,
		  uint32_t *ret_i)
{
	uint64_t epoch = id / s->n;

	if (epoch >= s->cfg.epochs)
		return GP_REASON_UNKNOWN_MINIBATCH;
	if (epoch < s->epoch)
		return GP_REASON_DUPLICATE; /* every minibatch of it is applied */
	for (int k = 0; k < 2; k++) {
		if (s->slot[k].open && s->slot[k].epoch == epoch) {
			*ret_slot = k;
			*ret_i = (uint32_t)(id % s->n);
			return 0;
		}
	}
	return GP_REASON_UNKNOWN_MINIBATCH;
}

static int classify(const struct gp_sched *s, uint64_t agent, uint64_t id,
		    int *ret_slot, uint32_t *ret_i)
{
	const struct slot *sl;
	uint8_t st;
	int k = 0;
	uint32_t i = 0;
	int r = locate(s, id, &k, &i);

	if (r)
		return r;
	sl = &s->slot[k];
	st = sl->state[i];
	if ((st & ST_MASK) == ST_APPLIED)
		return GP_REASON_DUPLICATE;
	if ((st & ST_MASK) == ST_ASSIGNED && sl->owner[i] == agent) {
		*ret_slot = k;
		*ret_i = i;
		return 0;
	}
	if ((st & ST_HAS_PREV) && sl->prev[i] == agent)
		return GP_REASON_LATE;
	return GP_REASON_NOT_ASSIGNED;
}

int gp_sched_check(const struct gp_sched *s, uint64_t agent, uint64_t id)
{
	int k;
	uint32_t i;

	return classify(s, agent, id, &k, &i);
}

static void count_discard(struct gp_sched *s, int reason)
{
	switch (reason) {
	case GP_REASON_DUPLICATE:
		s->counters.duplicate++;
		break;
	case GP_REASON_LATE:
		s->counters.late++;
		break;
	case GP_REASON_NOT_ASSIGNED:
		s->counters.not_assigned++;
		break;
	default:
		s->counters.unknown++;
		break;
	}
}

/* Closes complete epochs at the front of the window. Epoch e+1 can be
 * complete before e when e's last straggler is slow, hence the loop. */
static uint32_t advance_epochs(struct gp_sched *s)
{
	uint32_t done = 0;

	while (s->slot[0].open && s->slot[0].n_applied == s->n) {
		struct slot tmp = s->slot[0];

		s->slot[0] = s->slot[1];
		s->slot[1] = tmp;
		s->slot[1].open = false;
		s->epoch++;
		done++;
		if (!s->slot[0].open && s->epoch < s->cfg.epochs)
			slot_open(s, &s->slot[0], s->epoch);
	}
	return done;
}

int gp_sched_complete(struct gp_sched *s, uint64_t agent, uint64_t id,
		      struct gp_sched_completion *ret)
{
	struct gp_sched_completion c = {0};
	struct slot *sl;
	int k = 0;
	uint32_t i = 0, done;
	int r = classify(s, agent, id, &k, &i);

	if (r) {
		count_discard(s, r);
		return r;
	}
	sl = &s->slot[k];
	sl->state[i] = (uint8_t)((sl->state[i] & ~ST_MASK) | ST_APPLIED);
	sl->n_applied++;
	s->counters.applied++;
	c.epoch = sl->epoch;
	c.index = i;
	c.samples = gp_sched_minibatch_samples(s, id);
	done = advance_epochs(s);
	c.epochs_completed = done;
	c.job_done = gp_sched_done(s);
	if (ret)
		*ret = c;
	return 0;
}

static void give_back(struct gp_sched *s, struct slot *sl, uint32_t i)
{
	sl->prev[i] = sl->owner[i];
	sl->state[i] = ST_QUEUED | ST_HAS_PREV;
	sl->queue[sl->n_queue++] = i;
	s->counters.returned++;
}

int gp_sched_release(struct gp_sched *s, uint64_t agent, uint64_t id)
{
	int k = 0;
	uint32_t i = 0;
	int r = classify(s, agent, id, &k, &i);

	if (r)
		return r;
	give_back(s, &s->slot[k], i);
	return 0;
}

int gp_sched_reopen(struct gp_sched *s, uint64_t id)
{
	for (int k = 0; k < 2; k++) {
		struct slot *sl = &s->slot[k];
		uint32_t i;

		if (!sl->open || id / s->n != sl->epoch)
			continue;
		i = (uint32_t)(id % s->n);
		if ((sl->state[i] & ST_MASK) != ST_APPLIED)
			return -EINVAL;
		sl->state[i] = ST_QUEUED;
		sl->queue[sl->n_queue++] = i;
		sl->n_applied--;
		s->counters.applied--;
		s->counters.returned++;
		return 0;
	}
	return -ESTALE;
}

size_t gp_sched_release_agent(struct gp_sched *s, uint64_t agent)
{
	size_t n = 0;

	for (int k = 0; k < 2; k++) {
		struct slot *sl = &s->slot[k];

		/* Highest index first, so the stack hands them out again in
		 * ascending order. */
		for (uint32_t i = sl->open ? s->n : 0; i-- > 0;) {
			if ((sl->state[i] & ST_MASK) == ST_ASSIGNED &&
			    sl->owner[i] == agent) {
				give_back(s, sl, i);
				n++;
			}
		}
	}
	return n;
}

size_t gp_sched_expire(struct gp_sched *s, uint64_t now_ms,
		       uint64_t timeout_ms)
{
	size_t n = 0;

	for (int k = 0; k < 2; k++) {
		struct slot *sl = &s->slot[k];

		for (uint32_t i = sl->open ? s->n : 0; i-- > 0;) {
			if ((sl->state[i] & ST_MASK) == ST_ASSIGNED &&
			    now_ms >= sl->at[i] &&
			    now_ms - sl->at[i] >= timeout_ms) {
				give_back(s, sl, i);
				n++;
			}
		}
	}
	s->counters.expired += n;
	return n;
}

size_t gp_sched_outstanding(const struct gp_sched *s, uint64_t agent)
{
	size_t n = 0;

	for (int k = 0; k < 2; k++) {
		const struct slot *sl = &s->slot[k];

		for (uint32_t i = 0; sl->open && i < s->n; i++)
			n += (sl->state[i] & ST_MASK) == ST_ASSIGNED &&
			     sl->owner[i] == agent;
	}
	return n;
}

size_t gp_sched_queued(const struct gp_sched *s)
{
	size_t n = 0;

	if (gp_sched_done(s))
		return 0;
	for (int k = 0; k < 2; k++)
		if (s->slot[k].open)
			n += s->slot[k].n_queue + (s->n - s->slot[k].next_fresh);
	/* The next epoch is not open yet but would open on demand. */
	if (!s->slot[1].open && s->epoch + 1 < s->cfg.epochs &&
	    s->slot[0].n_queue == 0 && s->slot[0].next_fresh == s->n)
		n += s->n;
	return n;
}

void gp_sched_counters(const struct gp_sched *s,
		       struct gp_sched_counters *ret)
{
	*ret = s->counters;
}

int gp_sched_id(const struct gp_sched *s, uint32_t epoch, uint64_t index,
		uint64_t *ret_id)
{
	if (epoch >= s->cfg.epochs || index >= s->n)
		return -EINVAL;
	*ret_id = (uint64_t)epoch * s->n + index;
	return 0;
}

uint32_t gp_sched_minibatch_samples(const struct gp_sched *s, uint64_t id)
{
	uint64_t i, begin;

	if (id / s->n >= s->cfg.epochs)
		return 0;
	i = id % s->n;
	begin = i * s->cfg.batch_size;
	return (uint32_t)(s->cfg.n_samples - begin < s->cfg.batch_size ?
			  s->cfg.n_samples - begin : s->cfg.batch_size);
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));

	z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
	return z ^ (z >> 31);
}

/* Fisher-Yates with splitmix64 seeded from (seed, epoch): the same order on
 * every run and after every restart. The multiply-shift range reduction has
 * a bias below 2^-8 for 2^24 samples, irrelevant for shuffling. */
static void build_perm(const struct gp_sched *s, struct slot *sl)
{
	uint64_t x = s->cfg.seed ^ ((uint64_t)sl->epoch * UINT64_C(0xd1b54a32d192ed03));
	uint32_t n = s->cfg.n_samples;

	for (uint32_t i = 0; i < n; i++)
		sl->perm[i] = i;
	for (uint32_t i = n; i-- > 1;) {
		uint32_t j = (uint32_t)(((splitmix64(&x) >> 32) * (uint64_t)(i + 1)) >> 32);
		uint32_t t = sl->perm[i];

		sl->perm[i] = sl->perm[j];
		sl->perm[j] = t;
	}
	sl->have_perm = true;
}

int gp_sched_samples(struct gp_sched *s, uint64_t id, uint32_t *ret_idx,
		     size_t cap, size_t *ret_n)
{
	struct slot *sl;
	uint32_t i = 0, count;
	int k = 0;

	if (locate(s, id, &k, &i) != 0)
		return -ENOENT;
	sl = &s->slot[k];
	count = gp_sched_minibatch_samples(s, id);
	if (cap < count)
		return -ENOBUFS;
	if (!sl->have_perm) {
		if (!sl->perm) {
			sl->perm = malloc((size_t)s->cfg.n_samples * sizeof(uint32_t));
			if (!sl->perm)
				return -ENOMEM;
		}
		build_perm(s, sl);
	}
	memcpy(ret_idx, sl->perm + (size_t)i * s->cfg.batch_size,
	       count * sizeof(uint32_t));
	*ret_n = count;
	return 0;
}

int gp_sched_save(const struct gp_sched *s, uint8_t **ret_data,
		  size_t *ret_len)
{
	const struct gp_sched_counters *c = &s->counters;
	struct gp_wbuf w = {0};
	uint8_t open = (uint8_t)(s->slot[0].open + s->slot[1].open);

	gp_wbuf_begin_blob(&w, SCHED_MAGIC, SCHED_FORMAT);
	gp_wbuf_put_u32(&w, s->cfg.n_samples);
	gp_wbuf_put_u32(&w, s->cfg.batch_size);
	gp_wbuf_put_u32(&w, s->cfg.epochs);
	gp_wbuf_put_u64(&w, s->cfg.seed);
	gp_wbuf_put_u32(&w, s->epoch);
	gp_wbuf_put_u8(&w, open);
	gp_wbuf_put_u64(&w, c->assigned);
	gp_wbuf_put_u64(&w, c->applied);
	gp_wbuf_put_u64(&w, c->returned);
	gp_wbuf_put_u64(&w, c->expired);
	gp_wbuf_put_u64(&w, c->duplicate);
	gp_wbuf_put_u64(&w, c->late);
	gp_wbuf_put_u64(&w, c->not_assigned);
	gp_wbuf_put_u64(&w, c->unknown);
	for (int k = 0; k < open; k++) {
		const struct slot *sl = &s->slot[k];

		gp_wbuf_put_u32(&w, sl->next_fresh);
		gp_wbuf_put_u32(&w, sl->n_applied);
		for (uint32_t i = 0; i < s->n; i += 8) {
			uint8_t b = 0;

			for (uint32_t j = 0; j < 8 && i + j < s->n; j++)
				if ((sl->state[i + j] & ST_MASK) == ST_APPLIED)
					b |= (uint8_t)(1u << j);
			gp_wbuf_put_u8(&w, b);
		}
	}
	return gp_wbuf_finish_blob(&w, ret_data, ret_len);
}

static int load_slot(struct gp_sched *s, struct slot *sl, uint32_t epoch,
		     struct gp_rbuf *r)
{
	uint32_t next_fresh, applied, count = 0;

	if (!gp_rbuf_get_u32(r, &next_fresh) || !gp_rbuf_get_u32(r, &applied) ||
	    next_fresh > s->n || applied > next_fresh ||
	    r->left < (s->n + 7u) / 8)
		return -EBADMSG;
	slot_open(s, sl, epoch);
	sl->next_fresh = next_fresh;
	for (uint32_t i = 0; i < s->n; i += 8) {
		uint8_t b = 0;

		gp_rbuf_get_u8(r, &b);
		for (uint32_t j = 0; j < 8; j++) {
			if (!(b & (1u << j)))
				continue;
			if (i + j >= next_fresh)
				return -EBADMSG;
			sl->state[i + j] = ST_APPLIED;
			count++;
		}
	}
	if (count != applied)
		return -EBADMSG;
	sl->n_applied = applied;
	/* Handed out but not applied: queued again, lowest index on top. */
	for (uint32_t i = next_fresh; i-- > 0;)
		if (sl->state[i] != ST_APPLIED)
			sl->queue[sl->n_queue++] = i;
	return 0;
}

int gp_sched_load(const uint8_t *data, size_t len, struct gp_sched **ret)
{
	struct gp_sched_config cfg = {0};
	struct gp_sched_counters c = {0};
	struct gp_sched *s = NULL;
	struct gp_rbuf r;
	uint32_t epoch;
	uint64_t n;
	uint8_t open;
	int err;

	err = gp_rbuf_open_blob(data, len, SCHED_MAGIC, SCHED_FORMAT, &r);
	if (err < 0)
		return err;
	if (!gp_rbuf_get_u32(&r, &cfg.n_samples) ||
	    !gp_rbuf_get_u32(&r, &cfg.batch_size) ||
	    !gp_rbuf_get_u32(&r, &cfg.epochs) || !gp_rbuf_get_u64(&r, &cfg.seed) ||
	    !gp_rbuf_get_u32(&r, &epoch) || !gp_rbuf_get_u8(&r, &open) ||
	    !gp_rbuf_get_u64(&r, &c.assigned) || !gp_rbuf_get_u64(&r, &c.applied) ||
	    !gp_rbuf_get_u64(&r, &c.returned) || !gp_rbuf_get_u64(&r, &c.expired) ||
	    !gp_rbuf_get_u64(&r, &c.duplicate) || !gp_rbuf_get_u64(&r, &c.late) ||
	    !gp_rbuf_get_u64(&r, &c.not_assigned) ||
	    !gp_rbuf_get_u64(&r, &c.unknown))
		return -EBADMSG;
	if (!config_ok(&cfg) || epoch > cfg.epochs)
		return -EBADMSG;
	/* The open epochs must be exactly what a running schedule can have,
	 * and their bitmaps present, before the arrays are allocated. */
	n = ((uint64_t)cfg.n_samples + cfg.batch_size - 1) / cfg.batch_size;
	if (open != (epoch == cfg.epochs ? 0 : 1) &&
	    !(open == 2 && epoch + 1 < cfg.epochs))
		return -EBADMSG;
	if (r.left != open * (8 + (n + 7) / 8))
		return -EBADMSG;
	err = alloc_sched(&cfg, &s);
	if (err < 0)
		return err;
	s->epoch = epoch;
	s->counters = c;
	err = -EBADMSG;
	for (uint8_t k = 0; k < open; k++)
		if (load_slot(s, &s->slot[k], epoch + k, &r) < 0)
			goto fail;
	/* A complete epoch would have been closed; epoch+1 opens only once
	 * epoch is entirely handed out. */
	if (open >= 1 && s->slot[0].n_applied == s->n)
		goto fail;
	if (open == 2 && s->slot[0].next_fresh != s->n)
		goto fail;
	*ret = s;
	return 0;
fail:
	gp_sched_destroy(s);
	return err;
}
