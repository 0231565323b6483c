/* Verification by recomputation (docs/security.md "Verification").
 *
 * The coordinator picks a random fraction (`[pool] verify_rate`) of each
 * member's clocks when it hands the work out. A picked clock always pulls
 * every shard, and the coordinator keeps exactly what it sent (parameters
 * and momentum, rounded as the wire rounds them). The member's first
 * update of that clock was computed from that copy, and so was every
 * update of the clock of a member without local steps: the one checked is
 * drawn among those (gp_verify_received; a member with local steps but no
 * groups gets one minibatch a clock, work.c). Minibatches, learning
 * rates, momentum and dropout seeds (gp_model_minibatch_seed) are known,
 * so the coordinator recomputes it on its own CPU backend, off the loop
 * thread, and compares:
 *
 *     |sent - recomputed| <= q + tolerance * |recomputed|
 *
 * per sum (L2 norms over the whole model). q covers the wire's rounding:
 * 0 for f32; 2^-11 |sent| for f16; for q8 with error feedback
 * (agent/feedback.c), sent = Q(x + e_prev) and both the error carried in
 * (e_prev) and the one left (e_new) are at most half a chunk's step, so
 * |e| <= (8 / 254) |that update| chunk by chunk: q = 8/254 (|previous
 * update| + |sent|), for B the previous group's (a gradient between
 * groups carries A's error, at most mu times it, and leaves B's). `[pool] verify_tolerance` (0.05) covers the float
 * differences of two backends. Most checks are recomputed by another
 * member instead (verify-delegate.c, `[pool] verify_delegate`): the
 * coordinator then recomputes only an audited fraction and every
 * disagreement, whose result also judges that member.
 *
 * A mismatch strikes the member (a rejection row "mismatch"), and every
 * update of its that was applied since its last verified one is taken
 * back: the parameters and momentum lose their effect (below), the ledger
 * marks their rows rolled back, and their minibatches go back to the
 * queue (a complete epoch's on the schedule's redo list; only once the
 * job is done are they not redone: counted, and logged).
 * `[pool] verify_bans` (2) mismatches revoke the member. The count is the
 * member's on record (agent_trust.mismatched): a verifier created with a
 * ledger starts from it, and such a member's clocks are all picked until
 * it passes SUSPECT_CHECKS (2) checks, so that a restart of the
 * coordinator (or the next job) gives a member that mismatched neither a
 * fresh count nor an unwatched start.
 *
 * Taking an update back. SGD with momentum without weight decay is linear:
 * what an applied update added, dw to the parameters and dv to the
 * momentum, becomes after later steps (anyone's) dw - (sum c_t beta_(t-1))
 * dv and beta_N dv, where each step t multiplies the momentum by mk_t
 * and moves the parameters by c_t times it (mu^K and sum_j lr_j mu^j; a
 * group's: params.h gp_params_sums_coefficients()). So the pool
 * keeps two scalars, C (the sum of c_t M_t) and M (the product of the
 * mk_t), and each member two sums a, b of n floats per stretch of
 * unverified updates, with the (C0, M0) of the last update added: the
 * stretch's effect is a - (C - C0) / M0 b on the parameters and M / M0 b
 * on the momentum. Adding an update moves the stretch to the present
 * (a -= (C - C0) / M0 b, b *= M / M0, then + dw, + dv) in the same pass,
 * so the sums stay of the size of the effect they hold and floats keep
 * their precision (test-verify: 5e-7 relative after 300 steps); undoing
 * is one pass. An update applied as it was decoded (not damped by the
 * robust filter, a linear step) is not added to the sums but kept as its
 * blocks' bytes with its own (C0, M0) and coefficients (verify-impl.h
 * struct raw): a copy of a quarter of the floats' bytes for q8 instead
 * of a pass over both sums, and most stretches end verified and are
 * dropped unread; a take-back decodes it again. When M falls below 1e-9
 * the pool's (C, M) go back to (0, 1) and the stretches' bases with
 * them, a pass over the stretches, not their sums. With weight decay or
 * a changed clip the result is exact only to first order. */
#ifndef GP_VERIFY_H
#define GP_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"

struct gp_pool;
struct gp_member;
struct gp_verify;
struct gp_dataset;
struct gp_ledger;
struct gp_model_spec;
typedef struct uv_loop_s uv_loop_t;

/* Per-member state, embedded in struct gp_member (all zero at start). */
struct gp_verify_member {
	/* What a picked clock's pull sent: its clock (-1: none), the
	 * parameters and momentum as the agent decoded them. Up to two: the
	 * clock being computed and the one handed out ahead. */
	struct {
		int64_t clock;
		float *w, *v;
	} snap[2];
	/* Norms of the last decoded update's sums (error feedback's bound);
	 * *_max: the largest so far, used when one was not decoded. */
	double prev_a, prev_b, max_a, max_b;
	bool prev_unknown;
	/* The check of another member's update it holds (VERIFY_TASK's
	 * id; 0: none): one at a time, also after the coordinator stopped
	 * waiting for it (until its answer comes). Not drawn again before
	 * rest_until_ms (gp_now_ms()) after it declined one. */
	uint64_t task;
	int64_t rest_until_ms;
	/* Its updates verified on this connection since its last mismatch
	 * (by the coordinator, or by a member that had some itself). A
	 * member with none is checked only by members with some, so that
	 * members that cheat together never check each other
	 * (verify-delegate.c). */
	uint32_t verified;
	/* A pick drawn for the clock handed out ahead while the member's
	 * own work was still on its way (gp_verify_defer()): that clock
	 * goes out with its whole pull once nothing is in flight. */
	bool deferred;
	int64_t deferred_clock;
};

/* Counters of this run (gradpool-coordinator status, tools/bench-attack). */
struct gp_verify_stats {
	uint64_t picked;      /* clocks picked */
	uint64_t checked;     /* updates recomputed, here or by a member */
	uint64_t verified;
	uint64_t mismatched;  /* members' updates (checkers': below) */
	uint64_t skipped;     /* picked but not checkable (see verify.c) */
	uint64_t rolled_back; /* minibatches taken back */
	uint64_t taken_in_part; /* take-backs of under 100 % of the effect */
	uint64_t lost;        /* of which not redone: the job was done */
	uint64_t banned;
	/* Checks handed to other members (verify-delegate.c): sent; given
	 * back to the coordinator (declined, left, late, malformed); agreed
	 * with and recomputed here too (audits); disagreed with (then
	 * recomputed here); and checkers whose answer was wrong. */
	uint64_t delegated;
	uint64_t delegate_failed;
	uint64_t audited;
	uint64_t disagreed;
	uint64_t checker_mismatched;
	uint64_t cpu_ns;      /* recomputation and bookkeeping */
	uint64_t recompute_ns; /* of which recomputation */
	double worst_honest;  /* largest residual / allowance that passed */
};

/* What the recomputation needs besides the pool; every pointer borrowed
 * and outliving the verifier. */
struct gp_verify_env {
	uv_loop_t *loop;                   /* the pool's loop thread's */
	const struct gp_dataset *train;
	/* A language model's: its token stream (then train is NULL), each
	 * sample a window of the spec's dims[0] tokens. */
	const struct gp_tokens *train_tok;
	const struct gp_model_spec *spec;
	uint32_t batch_size;
	uint64_t job_seed;                 /* gp_model_minibatch_seed() */
	struct gp_ledger *ledger;          /* NULL: nothing recorded */
	/* Called on the loop thread when the last check has ended (serve
	 * waits for it to finish); may be NULL. */
	void (*idle)(void *ctx);
	void *ctx;
	/* The members' kept effects (two floats per parameter per stretch
	 * of unverified updates) stay within this many bytes; 0:
	 * GP_VERIFY_KEPT_BYTES. Beyond it a member's updates are applied
	 * without a way back (logged once). */
	uint64_t kept_bytes;
};

/* 256 MiB, as robust aggregation's momenta (robust.h): within the
 * coordinator's memory target (docs/performance.md "Scale": at 1,000
 * simulated agents the effects were 345 MiB of serve's 625). */
#define GP_VERIFY_KEPT_BYTES (UINT64_C(256) << 20)

/* Creates the verifier of pool (borrowed; its params, sched and n_params
 * set; must outlive it), with the job's settings, seeded from seed (the
 * picks must not be predictable by members); with env->ledger, the
 * members' mismatches on record (gp_ledger_trust_mismatches). *ret is
 * owned by the caller. Returns 0, -ENOMEM, or the ledger's negative errno
 * (gp_ledger_error says why). */
int gp_verify_create(struct gp_pool *pool, const struct gp_verify_env *env,
		     uint64_t seed, struct gp_verify **ret);

/* Frees it; checks still running must have finished (gp_verify_busy()).
 * NULL is a no-op. */
void gp_verify_destroy(struct gp_verify *v);

/* Whether a recomputation is queued or running. */
bool gp_verify_busy(const struct gp_verify *v);

void gp_verify_get_stats(const struct gp_verify *v,
			 struct gp_verify_stats *ret);

/* A clock whose run holds fewer minibatches than this is picked with
 * probability verify_rate x GP_VERIFY_CLOCK_STEPS / steps (at most 1),
 * not verify_rate: its check costs the coordinator that many
 * minibatches' recomputation at most, the same as or less than a
 * longer clock's at verify_rate, and a member sending one-minibatch
 * updates (no local steps: GP_WORK_BASE, 2, a clock, so 0.2 at the
 * default rate) is found in about 5 of its clocks instead of 10, before
 * much of its work has to be taken back (tools/bench-attack: 8-30 minibatches taken back per attacker,
 * 22 of them not redone, and the stale run fell from 85 % to 56 %). */
#define GP_VERIFY_CLOCK_STEPS 4

/* A member none of whose updates verified yet (on this connection, since
 * its last mismatch: gp_verify_member.verified) is on probation: its
 * short clocks (under GP_VERIFY_CLOCK_STEPS minibatches, whose checks are
 * cheap) are picked with probability at least verify_rate x
 * GP_VERIFY_PROBATION (0.5 at the default rate). Until one of its
 * updates verified, nothing bounds its say but robust aggregation, which
 * cannot hold half a pool: two colluders of four, found at 0.2 a clock,
 * broke the model at their seventh clock in one of three 8-epoch
 * tools/bench-attack pools (neither picked in six clocks: 0.8^12, 7 %;
 * at 0.5: 0.02 %). An honest member leaves probation at its first check,
 * which is usually its first clock (two minibatches, GP_WORK_BASE), so
 * the cost is about one cheap check a member. */
#define GP_VERIFY_PROBATION 5

/* work.c, before a pull of m for `clock` whose run holds at most `steps`
 * minibatches: true when the clock is picked; the pull must then send
 * every shard (pulled_version 0) and call gp_verify_sent() after
 * sending. False with pool->verify NULL, and while any of m's work is on
 * its way: a picked pull replaces the agent's copy, and its own updates
 * still on their way would be lost from it (their next run, computed
 * without them, lands on top of them: with one agent and nothing else,
 * test accuracy fell 20-30 points for a moment at each such pick). A
 * clock deferred for it (gp_verify_defer()) is picked here. */
bool gp_verify_pick(struct gp_pool *pool, struct gp_member *m,
		    int64_t clock, uint32_t steps);

/* work.c, before m's `clock` is handed out ahead (pipelined, its copy
 * good as it is) while its own work is on its way: draws the pick as
 * gp_verify_pick() would; true when it is picked (or was already), and
 * the clock must then wait until nothing is in flight, to go out with
 * its whole pull (gp_verify_pick() then picks it). */
bool gp_verify_defer(struct gp_pool *pool, struct gp_member *m,
		     int64_t clock, uint32_t steps);

/* The probability that gp_verify_pick() draws for a run of `steps`
 * minibatches at `rate` (GP_VERIFY_CLOCK_STEPS), for a member on
 * probation or not (GP_VERIFY_PROBATION). */
double gp_verify_pick_rate(double rate, uint32_t steps, bool probation);

/* work.c: a picked pull could not go now (the pull budget): it is not
 * counted as picked, and the pull draws again when it goes. */
void gp_verify_unpick(struct gp_pool *pool);

/* work.c: the picked pull for `clock` was sent: keeps the copy. */
void gp_verify_sent(struct gp_pool *pool, struct gp_member *m,
		    int64_t clock);

/* apply.c, an update of m whose blocks are read (pool->grad, grad_b) and
 * not yet filtered: notes its norms and, when it is the first of a picked
 * clock, copies it for the check. ids/k: its minibatches. Returns true
 * with |grad|^2 and |grad_b|^2 (0 for form 0) in ret_sq, which the robust
 * filter then need not take again; false when verification is off. */
bool gp_verify_received(struct gp_pool *pool, struct gp_member *m,
			const struct gp_msg_update *u, const uint64_t *ids,
			size_t k, double ret_sq[2]);

/* apply.c, just before the optimiser step of that update. linear: the
 * step will report its own effect (gp_params_apply_info.linear), so the
 * parameters and momentum before it are not copied. */
void gp_verify_before_step(struct gp_pool *pool, bool linear);

/* What a linear step did besides carrying the momentum there: the
 * momentum moved by ka x[i], the parameters by kb y[i] (params.h
 * gp_params_apply_info; x the gradient or a group's sum a, y the
 * gradient or the sum b). u: the update x and y were decoded from, as
 * they were (not damped), else NULL: then it is kept as its blocks'
 * bytes rather than added to the member's sums (verify-impl.h struct
 * raw), where the budget allows. */
struct gp_verify_effect {
	float ka, kb;
	const float *x, *y;
	const struct gp_msg_update *u;
};

/* apply.c, after the step applied it: c = sum_j lr_j mu^j and mk = mu^K
 * (a group's: gp_params_sums_coefficients())
 * of the step (what it did to the momentum already there); e: its own
 * effect, when it reported one (a linear step), else NULL, the effect then
 * measured against the copy gp_verify_before_step() made. */
void gp_verify_applied(struct gp_pool *pool, struct gp_member *m,
		       const uint64_t *ids, size_t k, double c, double mk,
		       const struct gp_verify_effect *e);

/* apply.c, an update of m that was not applied (decoded or not); own:
 * whether it held work of the member's open clock (a minibatch of its
 * that was valid or late), which its copy then moved past. */
void gp_verify_refused(struct gp_pool *pool, struct gp_member *m,
		       const struct gp_msg_update *u, bool own);

/* serve.c: m (a member) answered a VERIFY_TASK. Judges the answer against
 * the checked member's update (verify-delegate.c); an answer to a task m
 * does not hold is ignored. */
void gp_verify_result(struct gp_pool *pool, struct gp_member *m,
		      const struct gp_msg_verify_result *r);

/* serve.c's tick: checks whose checker is past its time go back to the
 * coordinator's own recomputation. */
void gp_verify_tick(struct gp_pool *pool, int64_t now_ms);

/* members.c: m leaves the pool; frees its copies, and a check it held for
 * another member goes back to the coordinator. */
void gp_verify_member_finish(struct gp_pool *pool, struct gp_member *m);

/* Logs the counters of this run (info), at the job's end. NULL: no-op. */
void gp_verify_log_summary(const struct gp_verify *v);

/* Takes back every kept update of the agent's, as a mismatch does (the
 * parameters, the ledger, the queue), without striking it. Returns the
 * minibatches taken back. */
size_t gp_verify_take_back(struct gp_verify *v, int64_t agent_id);

/* Counts a mismatch of the agent's (verify.c mismatch() calls it): the
 * count, kept while the agent leaves and comes back, is what verify_bans
 * is compared with, and the agent's next clocks are all picked until it
 * passes SUSPECT_CHECKS (2) checks. Returns the agent's mismatches this
 * run (0: out of memory). */
uint32_t gp_verify_note_mismatch(struct gp_verify *v, int64_t agent_id);

/* Whether the agent's clocks are all picked now (a recent mismatch). */
bool gp_verify_suspect(const struct gp_verify *v, int64_t agent_id);

/* The pure parts, for tests. */

/* Whether a sum passes: residual |sent - x|, |x|, the wire's allowance q
 * and the tolerance. */
bool gp_verify_pass(double residual, double norm_x, double q,
		    double tolerance);

/* The wire's allowance q for a sum sent as dtype (GP_DTYPE_*), of norm
 * `sent`, the member's previous one of norm `prev`. */
double gp_verify_allowance(uint8_t dtype, double sent, double prev);

/* The picking draw: true with probability rate, from *state (splitmix64,
 * advanced). */
bool gp_verify_draw(uint64_t *state, double rate);

#endif
