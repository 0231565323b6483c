#include "scheduler.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "gp-endian.h"

/* Checkpoint payload (inside the envelope of bytes.h, magic "GPSC",
 * version 3; versions 1 (without the redo list) and 2 (its entries
 * without lr_at) are still read):
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
 *   u32  n_redo                taken-back minibatches of complete
 *   n_redo x {                 epochs, to be applied again
 *     u64  id
 *     u64  lr_at               the position whose learning rate it takes
 *   }                          (version 2: id alone; lr_at is then the
 *                              schedule's position at load)
 *
 * Assignments are not saved: on load, every handed-out minibatch that is not
 * applied is queued again, in index order. */
#define SCHED_MAGIC "GPSC"
#define SCHED_FORMAT 3
#define SCHED_FORMAT_V2 2
#define SCHED_FORMAT_V1 1

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

/* A minibatch of a complete epoch that was taken back (gp_sched_reopen):
 * its epoch's slot is gone, so it is tracked here until applied again. */
struct redo {
	uint64_t id;
	/* The schedule's position when it was taken back: its learning
	 * rate is that position's (gp_sched_lr_index), the rate in force
	 * then, not its own epoch's. */
	uint64_t lr_at;
	uint64_t owner;    /* valid while ST_ASSIGNED */
	uint64_t prev;     /* valid with ST_HAS_PREV */
	uint64_t at;
	uint8_t state;
};

struct gp_sched {
	struct gp_sched_config cfg;
	uint32_t n;        /* minibatches per epoch */
	uint32_t epoch;    /* lowest incomplete epoch */
	struct slot slot[2]; /* slot[0]: epoch, slot[1]: epoch + 1 if open */
	struct gp_sched_counters counters;
	/* Taken back from complete epochs, handed out before anything else,
	 * in the order taken back. Rare (a failed verification late in an
	 * epoch) and short, so it is an array searched from the front. */
	struct redo *redo;
	size_t n_redo, cap_redo;
	/* The permutation of one complete epoch, for a redo's samples. */
	uint32_t *old_perm;
	uint32_t old_perm_epoch;
	bool have_old_perm;
};

/* Where a minibatch id lives: an open epoch's slot (k 0 or 1, index i)
 * or the redo list (k REDO, entry i). */
#define REDO 2

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
	free(s->redo);
	free(s->old_perm);
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

/* The first queued redo entry, or NULL. */
static struct redo *redo_take(struct gp_sched *s)
{
	for (size_t i = 0; i < s->n_redo; i++)
		if ((s->redo[i].state & ST_MASK) == ST_QUEUED)
			return &s->redo[i];
	return NULL;
}

/* The redo entry of id, or n_redo when it has none. */
static size_t redo_find(const struct gp_sched *s, uint64_t id)
{
	size_t i = 0;

	while (i < s->n_redo && s->redo[i].id != id)
		i++;
	return i;
}

int gp_sched_assign(struct gp_sched *s, uint64_t agent, uint64_t now_ms,
		    size_t k, uint64_t *ret_ids, size_t *ret_n)
{
	size_t n = 0;

	if (gp_sched_done(s))
		return GP_REASON_JOB_DONE;
	while (n < k) {
		struct slot *sl = &s->slot[0];
		struct redo *rd = redo_take(s);
		uint32_t i;

		/* Taken back from a complete epoch: older than anything
		 * open, so first. */
		if (rd) {
			rd->state = (uint8_t)((rd->state & ~ST_MASK) |
					      ST_ASSIGNED);
			rd->owner = agent;
			rd->at = now_ms;
			ret_ids[n++] = rd->id;
			continue;
		}
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

/* Finds where id lives (an open slot, or REDO and its entry), or returns
 * the reason it has no place. */
static int locate(const struct gp_sched *s, uint64_t id, int *ret_slot,
		  uint32_t *ret_i)
{
	uint64_t epoch = id / s->n;

	if (epoch >= s->cfg.epochs)
		return GP_REASON_UNKNOWN_MINIBATCH;
	if (epoch < s->epoch) {
		size_t at = redo_find(s, id);

		if (at == s->n_redo)
			return GP_REASON_DUPLICATE; /* applied, not taken back */
		*ret_slot = REDO;
		*ret_i = (uint32_t)at;
		return 0;
	}
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
	uint64_t owner, prev;
	uint8_t st;
	int k = 0;
	uint32_t i = 0;
	int r = locate(s, id, &k, &i);

	if (r)
		return r;
	if (k == REDO) {
		st = s->redo[i].state;
		owner = s->redo[i].owner;
		prev = s->redo[i].prev;
	} else {
		st = s->slot[k].state[i];
		owner = s->slot[k].owner[i];
		prev = s->slot[k].prev[i];
	}
	if ((st & ST_MASK) == ST_APPLIED)
		return GP_REASON_DUPLICATE;
	if ((st & ST_MASK) == ST_ASSIGNED && owner == agent) {
		*ret_slot = k;
		*ret_i = i;
		return 0;
	}
	if ((st & ST_HAS_PREV) && prev == agent)
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
 * complete before e when e's last straggler is slow, hence the loop. The
 * last epoch stays open while taken-back minibatches of earlier ones wait
 * to be applied again: the job is done when every minibatch is. */
static uint32_t advance_epochs(struct gp_sched *s)
{
	uint32_t done = 0;

	while (s->slot[0].open && s->slot[0].n_applied == s->n &&
	       !(s->epoch + 1 >= s->cfg.epochs && s->n_redo > 0)) {
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
	int k = 0;
	uint32_t i = 0, done;
	int r = classify(s, agent, id, &k, &i);

	if (r) {
		count_discard(s, r);
		return r;
	}
	if (k == REDO) {
		/* Applied again: it leaves the list, the order kept. */
		memmove(s->redo + i, s->redo + i + 1,
			(s->n_redo - i - 1) * sizeof(*s->redo));
		s->n_redo--;
		c.epoch = (uint32_t)(id / s->n);
		c.index = (uint32_t)(id % s->n);
	} else {
		struct slot *sl = &s->slot[k];

		sl->state[i] = (uint8_t)((sl->state[i] & ~ST_MASK) |
					 ST_APPLIED);
		sl->n_applied++;
		c.epoch = sl->epoch;
		c.index = i;
	}
	s->counters.applied++;
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

/* A redo entry stays where it is in the list: still first to go out. */
static void redo_give_back(struct gp_sched *s, struct redo *rd)
{
	rd->prev = rd->owner;
	rd->state = ST_QUEUED | ST_HAS_PREV;
	s->counters.returned++;
}

int gp_sched_release(struct gp_sched *s, uint64_t agent, uint64_t id)
{
	int k = 0;
	uint32_t i = 0;
	int r = classify(s, agent, id, &k, &i);

	if (r)
		return r;
	if (k == REDO)
		redo_give_back(s, &s->redo[i]);
	else
		give_back(s, &s->slot[k], i);
	return 0;
}

uint64_t gp_sched_position(const struct gp_sched *s)
{
	const struct slot *sl = &s->slot[0];
	uint64_t end = (uint64_t)s->cfg.epochs * s->n;
	uint64_t at = (uint64_t)s->epoch * s->n +
		      (sl->open && sl->epoch == s->epoch ? sl->n_applied : 0);

	return at < end ? at : end - 1;
}

uint64_t gp_sched_lr_index(const struct gp_sched *s, uint64_t id)
{
	size_t at = s->n_redo ? redo_find(s, id) : 0;

	return at < s->n_redo ? s->redo[at].lr_at : id;
}

int gp_sched_reopen(struct gp_sched *s, uint64_t id)
{
	uint64_t epoch = id / s->n;
	struct redo *rd;

	for (int k = 0; k < 2; k++) {
		struct slot *sl = &s->slot[k];
		uint32_t i;

		if (!sl->open || epoch != sl->epoch)
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
	if (gp_sched_done(s))
		return -ESTALE;
	/* Not yet handed out (a later epoch), or taken back already. */
	if (epoch >= s->epoch || redo_find(s, id) < s->n_redo)
		return -EINVAL;
	if (s->n_redo == s->cap_redo) {
		size_t cap = s->cap_redo ? s->cap_redo * 2 : 16;
		struct redo *nr = realloc(s->redo, cap * sizeof(*nr));

		if (!nr)
			return -ENOMEM;
		s->redo = nr;
		s->cap_redo = cap;
	}
	rd = &s->redo[s->n_redo++];
	memset(rd, 0, sizeof(*rd));
	rd->id = id;
	rd->lr_at = gp_sched_position(s);
	rd->state = ST_QUEUED;
	s->counters.applied--;
	s->counters.returned++;
	return 0;
}

size_t gp_sched_release_agent(struct gp_sched *s, uint64_t agent)
{
	size_t n = 0;

	for (size_t i = 0; i < s->n_redo; i++) {
		if ((s->redo[i].state & ST_MASK) == ST_ASSIGNED &&
		    s->redo[i].owner == agent) {
			redo_give_back(s, &s->redo[i]);
			n++;
		}
	}
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

	for (size_t i = 0; i < s->n_redo; i++) {
		struct redo *rd = &s->redo[i];

		if ((rd->state & ST_MASK) == ST_ASSIGNED && now_ms >= rd->at &&
		    now_ms - rd->at >= timeout_ms) {
			redo_give_back(s, rd);
			n++;
		}
	}
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

	for (size_t i = 0; i < s->n_redo; i++)
		n += (s->redo[i].state & ST_MASK) == ST_ASSIGNED &&
		     s->redo[i].owner == agent;
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
	for (size_t i = 0; i < s->n_redo; i++)
		n += (s->redo[i].state & ST_MASK) == ST_QUEUED;
	for (int k = 0; k < 2; k++)
		if (s->slot[k].open)
			n += s->slot[k].n_queue + (s->n - s->slot[k].next_fresh);
	/* The next epoch is not open yet but would open on demand. */
	if (!s->slot[1].open && s->epoch + 1 < s->cfg.epochs &&
	    s->slot[0].n_queue == 0 && s->slot[0].next_fresh == s->n)
		n += s->n;
	return n;
}

size_t gp_sched_redo_count(const struct gp_sched *s)
{
	return s->n_redo;
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
static void build_perm(const struct gp_sched *s, uint32_t epoch,
		       uint32_t *perm)
{
	uint64_t x = s->cfg.seed ^ ((uint64_t)epoch * UINT64_C(0xd1b54a32d192ed03));
	uint32_t n = s->cfg.n_samples;

	for (uint32_t i = 0; i < n; i++)
		perm[i] = i;
	for (uint32_t i = n; i-- > 1;) {
		uint32_t j = (uint32_t)(((splitmix64(&x) >> 32) * (uint64_t)(i + 1)) >> 32);
		uint32_t t = perm[i];

		perm[i] = perm[j];
		perm[j] = t;
	}
}

/* The permutation of epoch: an open slot's, or for a complete epoch (a
 * redo) the one kept for the last complete epoch asked for. NULL with
 * *err set when there is none or no memory. */
static const uint32_t *epoch_perm(struct gp_sched *s, uint32_t epoch,
				  int *err)
{
	size_t bytes = (size_t)s->cfg.n_samples * sizeof(uint32_t);

	for (int k = 0; k < 2; k++) {
		struct slot *sl = &s->slot[k];

		if (!sl->open || sl->epoch != epoch)
			continue;
		if (!sl->have_perm) {
			if (!sl->perm && !(sl->perm = malloc(bytes))) {
				*err = -ENOMEM;
				return NULL;
			}
			build_perm(s, epoch, sl->perm);
			sl->have_perm = true;
		}
		return sl->perm;
	}
	if (epoch >= s->epoch) {
		*err = -ENOENT;
		return NULL;
	}
	if (!s->have_old_perm || s->old_perm_epoch != epoch) {
		if (!s->old_perm && !(s->old_perm = malloc(bytes))) {
			*err = -ENOMEM;
			return NULL;
		}
		build_perm(s, epoch, s->old_perm);
		s->old_perm_epoch = epoch;
		s->have_old_perm = true;
	}
	return s->old_perm;
}

int gp_sched_samples(struct gp_sched *s, uint64_t id, uint32_t *ret_idx,
		     size_t cap, size_t *ret_n)
{
	const uint32_t *perm;
	uint32_t count;
	int err = 0;

	if (id / s->n >= s->cfg.epochs)
		return -ENOENT;
	count = gp_sched_minibatch_samples(s, id);
	if (cap < count)
		return -ENOBUFS;
	perm = epoch_perm(s, (uint32_t)(id / s->n), &err);
	if (!perm)
		return err;
	memcpy(ret_idx, perm + (size_t)(id % s->n) * s->cfg.batch_size,
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
	/* Redo entries: every one queued again on load. */
	gp_wbuf_put_u32(&w, (uint32_t)s->n_redo);
	for (size_t i = 0; i < s->n_redo; i++) {
		gp_wbuf_put_u64(&w, s->redo[i].id);
		gp_wbuf_put_u64(&w, s->redo[i].lr_at);
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

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Reads the redo list (version 2: ids alone): ids of complete epochs,
 * each once (checked on a sorted copy: a crafted list of millions must
 * not take n^2), each lr_at within the job. */
static int load_redo(struct gp_sched *s, struct gp_rbuf *r, bool v2)
{
	uint64_t *sorted;
	uint32_t count;
	uint64_t each = v2 ? 8 : 16;

	if (!gp_rbuf_get_u32(r, &count) || r->left != (uint64_t)count * each)
		return -EBADMSG;
	if (count && (s->epoch >= s->cfg.epochs ||
		      count > (uint64_t)s->epoch * s->n))
		return -EBADMSG;
	s->redo = calloc(count ? count : 1, sizeof(*s->redo));
	if (!s->redo)
		return -ENOMEM;
	s->cap_redo = count ? count : 1;
	for (uint32_t i = 0; i < count; i++) {
		uint64_t id;

		uint64_t lr_at = gp_sched_position(s);

		gp_rbuf_get_u64(r, &id);
		if (!v2)
			gp_rbuf_get_u64(r, &lr_at);
		if (id / s->n >= s->epoch ||
		    lr_at >= (uint64_t)s->cfg.epochs * s->n)
			return -EBADMSG;
		s->redo[s->n_redo].id = id;
		s->redo[s->n_redo].lr_at = lr_at;
		s->redo[s->n_redo].state = ST_QUEUED;
		s->n_redo++;
	}
	if (count < 2)
		return 0;
	sorted = malloc((size_t)count * sizeof(*sorted));
	if (!sorted)
		return -ENOMEM;
	for (uint32_t i = 0; i < count; i++)
		sorted[i] = s->redo[i].id;
	qsort(sorted, count, sizeof(*sorted), cmp_u64);
	for (uint32_t i = 1; i < count; i++) {
		if (sorted[i] == sorted[i - 1]) {
			free(sorted);
			return -EBADMSG;
		}
	}
	free(sorted);
	return 0;
}

int gp_sched_load(const uint8_t *data, size_t len, struct gp_sched **ret)
{
	struct gp_sched_config cfg = {0};
	struct gp_sched_counters c = {0};
	struct gp_sched *s = NULL;
	struct gp_rbuf r;
	uint32_t epoch;
	uint64_t n, slots;
	uint16_t version = SCHED_FORMAT;
	uint8_t open;
	int err;

	/* Versions 1 (before the redo list) and 2 are still read. */
	if (data && len >= 6 && (gp_get_le16(data + 4) == SCHED_FORMAT_V1 ||
				 gp_get_le16(data + 4) == SCHED_FORMAT_V2))
		version = gp_get_le16(data + 4);
	err = gp_rbuf_open_blob(data, len, SCHED_MAGIC, version, &r);
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
	slots = open * (8 + (n + 7) / 8);
	if (version == SCHED_FORMAT_V1 ? r.left != slots : r.left < slots + 4)
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
	if (version != SCHED_FORMAT_V1 &&
	    (err = load_redo(s, &r, version == SCHED_FORMAT_V2)) < 0)
		goto fail;
	err = -EBADMSG;
	/* A complete epoch would have been closed (the last one stays open
	 * while redo entries wait); epoch+1 opens only once epoch is
	 * entirely handed out. */
	if (open >= 1 && s->slot[0].n_applied == s->n &&
	    !(epoch + 1 == cfg.epochs && s->n_redo > 0))
		goto fail;
	if (open == 2 && s->slot[0].next_fresh != s->n)
		goto fail;
	*ret = s;
	return 0;
fail:
	gp_sched_destroy(s);
	return err;
}
