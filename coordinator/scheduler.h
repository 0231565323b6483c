/* Work scheduling: the epochs' minibatches, handed out on request (agents
 * pull work, so faster devices do more), tracked until applied exactly once.
 * Pure logic, no I/O; time is passed in by the caller.
 *
 * Minibatches. The training set of n_samples is shuffled once per epoch
 * (a permutation seeded by (seed, epoch), so it is the same after a restart)
 * and cut into N = ceil(n_samples / batch_size) minibatches; minibatch i of
 * epoch e holds samples perm_e[i*B .. min((i+1)*B, n_samples)) (only the last
 * is short) and has the stable id e * N + i.
 *
 * Exactly once. A minibatch is queued, assigned to one agent, or applied.
 * gp_sched_complete() applies it only when it is assigned to the agent that
 * completes it; anything else is discarded and counted with a reason:
 * DUPLICATE (already applied), LATE (it was this agent's but was taken back:
 * timeout, disconnect), NOT_ASSIGNED (someone else's or queued),
 * UNKNOWN_MINIBATCH (no such id in an open epoch). Work taken back from an
 * agent (gp_sched_release_agent on disconnect, gp_sched_expire on an
 * assignment timeout) goes to the front of its epoch's queue.
 *
 * Epoch boundary. Epoch e+1 opens as soon as every minibatch of e has been
 * handed out, so agents keep busy while e's stragglers finish; e's
 * minibatches that come back to the queue always go out before e+1's. At most
 * two epochs are open: e+2 waits until e is complete. Epoch e is complete
 * when all N of its minibatches are applied (gp_sched_complete reports it, so
 * the coordinator can evaluate); the job is done when the last epoch is
 * complete. Consequence: the parameters evaluated at the end of epoch e may
 * already include some updates from epoch e+1.
 *
 * Redone. A minibatch taken back after it was applied (gp_sched_reopen: a
 * failed verification rolled its update back) is queued again: in its
 * epoch's slot while that is open, else on a redo list handed out before
 * anything else. The last epoch does not complete while the list holds
 * any, so the job is done only when every minibatch of every epoch is
 * applied. */
#ifndef GP_SCHEDULER_H
#define GP_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reason.h"

#define GP_SCHED_MAX_SAMPLES (1u << 24)
#define GP_SCHED_MAX_EPOCHS (1u << 20)

struct gp_sched_config {
	uint32_t n_samples;   /* 1..GP_SCHED_MAX_SAMPLES */
	uint32_t batch_size;  /* >= 1 */
	uint32_t epochs;      /* 1..GP_SCHED_MAX_EPOCHS */
	uint64_t seed;        /* shuffling seed */
};

struct gp_sched_counters {
	uint64_t assigned;      /* hand-outs (a minibatch may be handed out again) */
	uint64_t applied;
	uint64_t returned;      /* taken back to the queue, all causes */
	uint64_t expired;       /* of which: assignment timeouts */
	uint64_t duplicate;     /* discarded completions, by reason */
	uint64_t late;
	uint64_t not_assigned;
	uint64_t unknown;
};

/* What an accepted completion did. */
struct gp_sched_completion {
	uint32_t epoch;
	uint32_t index;         /* within the epoch */
	uint32_t samples;       /* samples in the minibatch */
	/* Epochs this completion finished: 0, 1, or 2 when epoch e+1 was
	 * already fully applied while e's last straggler ran. They are
	 * [gp_sched_epoch() - epochs_completed, gp_sched_epoch()). */
	uint32_t epochs_completed;
	bool job_done;          /* the last epoch is complete */
};

struct gp_sched;

/* Creates the schedule at epoch 0 with nothing handed out. cfg is borrowed.
 * *ret is returned-and-owned-by-caller (gp_sched_destroy()). Returns 0,
 * -EINVAL (a config value out of range), -ENOMEM. */
int gp_sched_create(const struct gp_sched_config *cfg, struct gp_sched **ret);

/* Frees the schedule; NULL is a no-op. */
void gp_sched_destroy(struct gp_sched *s);

const struct gp_sched_config *gp_sched_config(const struct gp_sched *s);

/* Minibatches per epoch (N). */
uint32_t gp_sched_minibatches(const struct gp_sched *s);

/* The lowest incomplete epoch; equals cfg.epochs once the job is done. */
uint32_t gp_sched_epoch(const struct gp_sched *s);

/* True when every minibatch of every epoch has been applied. */
bool gp_sched_done(const struct gp_sched *s);

/* Minibatches of the current epoch applied so far. */
uint32_t gp_sched_applied_in_epoch(const struct gp_sched *s);

/* Hands up to k queued minibatches to agent, writing their ids to ret_ids
 * (room for k) and the count to *ret_n; now_ms is the caller's clock, used
 * by gp_sched_expire. Zero minibatches is a normal answer when everything
 * open is handed out (stragglers are being computed): ask again later.
 * Returns 0, GP_REASON_JOB_DONE when nothing is left at all, -ENOMEM. */
int gp_sched_assign(struct gp_sched *s, uint64_t agent, uint64_t now_ms,
		    size_t k, uint64_t *ret_ids, size_t *ret_n);

/* Says whether gp_sched_complete(agent, id) would be accepted, changing
 * nothing (no counter either). Returns 0 or a reason. */
int gp_sched_check(const struct gp_sched *s, uint64_t agent, uint64_t id);

/* Marks minibatch id, completed by agent, applied. Call it after the update
 * was applied to the parameters. Returns 0 with *ret (optional) filled, or a
 * reason with the discard counted and nothing else changed. */
int gp_sched_complete(struct gp_sched *s, uint64_t agent, uint64_t id,
		      struct gp_sched_completion *ret);

/* Puts one minibatch assigned to agent back at the front of the queue (the
 * agent's update for it was refused). Returns 0 or a reason (NOT_ASSIGNED,
 * DUPLICATE, UNKNOWN_MINIBATCH, LATE). */
int gp_sched_release(struct gp_sched *s, uint64_t agent, uint64_t id);

/* Puts applied minibatch `id` back in the queue, to be handed out and
 * applied again (its update was rolled back: coordinator/verify.c); one
 * of a complete epoch goes on the redo list. Returns 0, -ESTALE when the
 * job is done (nothing is handed out any more), -EINVAL when it is not
 * applied, -ENOMEM. */
int gp_sched_reopen(struct gp_sched *s, uint64_t id);

/* Where the schedule stands (the job's progress), as a schedule index:
 * the lowest incomplete epoch's first minibatch plus what of it is
 * applied; within the job (the last epoch stays open, all of it applied,
 * while redo entries wait: its last minibatch, not one past the end,
 * whose rate a cosine schedule makes 0). */
uint64_t gp_sched_position(const struct gp_sched *s);

/* The position in the schedule whose learning rate minibatch id takes
 * (gp_job_lr_at's index): a redo entry's, the position where the
 * schedule stood when it was taken back (a minibatch of the first epoch
 * redone near the end of a cosine schedule takes the small rate in force
 * then, not its own large one); any other minibatch's is id itself. The
 * entry lives until the minibatch is applied again, so hand-out, step
 * and verification (which copies the rate at receipt) all read the same
 * rate. */
uint64_t gp_sched_lr_index(const struct gp_sched *s, uint64_t id);

/* Minibatches on the redo list (queued or handed out). */
size_t gp_sched_redo_count(const struct gp_sched *s);

/* Puts every minibatch assigned to agent back in the queue (the agent
 * disconnected or was declared dead). Returns how many. */
size_t gp_sched_release_agent(struct gp_sched *s, uint64_t agent);

/* Takes back every assignment older than timeout_ms at now_ms. Returns how
 * many. */
size_t gp_sched_expire(struct gp_sched *s, uint64_t now_ms,
		       uint64_t timeout_ms);

/* Minibatches currently assigned to agent. */
size_t gp_sched_outstanding(const struct gp_sched *s, uint64_t agent);

/* Minibatches that could be handed out right now. */
size_t gp_sched_queued(const struct gp_sched *s);

void gp_sched_counters(const struct gp_sched *s,
		       struct gp_sched_counters *ret);

/* The id of minibatch `index` of `epoch` (the wire carries both), in
 * *ret_id. Returns 0 or -EINVAL when either is out of range. */
int gp_sched_id(const struct gp_sched *s, uint32_t epoch, uint64_t index,
		uint64_t *ret_id);

/* Number of samples in minibatch id, or 0 for an id outside the job. */
uint32_t gp_sched_minibatch_samples(const struct gp_sched *s, uint64_t id);

/* Writes the sample indices of minibatch id (an open or complete epoch's)
 * to ret_idx (room for cap) and their count to *ret_n. Returns 0, -ENOENT
 * (an epoch not open yet, or beyond the job), -ENOBUFS (cap too small),
 * -ENOMEM (the epoch's permutation is built on first use). */
int gp_sched_samples(struct gp_sched *s, uint64_t id, uint32_t *ret_idx,
		     size_t cap, size_t *ret_n);

/* Encodes the schedule for a checkpoint: *ret_data (owned by caller,
 * free()), *ret_len. Assignments are not saved: on restore, whatever was
 * handed out but not applied is queued again (the redo list too) (work done after the
 * checkpoint is redone, and its parameters were not saved either). Layout
 * in sched.c. Returns 0 or -ENOMEM. */
int gp_sched_save(const struct gp_sched *s, uint8_t **ret_data,
		  size_t *ret_len);

/* Decodes a checkpoint into a new schedule (*ret, owned by caller). data is
 * borrowed. Returns 0, -EBADMSG for malformed bytes, -ENOMEM. */
int gp_sched_load(const uint8_t *data, size_t len, struct gp_sched **ret);

#endif
