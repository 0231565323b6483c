/* Robust aggregation: what an update may do to the model when its sender
 * cannot be trusted.
 *
 * Centred clipping after Karimireddy, He and Jaggi (2021, "Learning from
 * History for Byzantine Robust Optimization"), in the asynchronous form a
 * parameter server that applies updates one at a time needs:
 *
 * - The centre c is the pool's recent update direction: an exponential
 *   average of the mean gradients applied, after this filter, with weight
 *   beta^(1/members) per update, so that it spans as many of the pool's
 *   updates as a member's momentum spans of the pool's when the members
 *   take turns (else an honest member's momentum, four times older with
 *   four members, lags the centre by the training's own drift).
 * - Each member i has its own momentum m_i, the same average of the mean
 *   gradients it sent. Honest members' momenta sit near c (their noise
 *   averages out); a member that keeps pushing one way (sign flip, label
 *   flipping, "a little is enough", a stale or zero update) drifts away
 *   from it however small each push is.
 * - An update's mean gradient g (a group's: its momentum sum a divided by
 *   the weights' sum) is replaced by c + lambda (g - c), lambda =
 *   min(1, tau_g / |g - c|, (tau_m / |m_i - c|)^2): the member's drift is
 *   squared, a departure from the paper's clip (which bounds the
 *   momentum it applies, where this applies the gradient): a drifting
 *   average is no noise, and a sign-flipped update kept at half still
 *   undoes an honest one. For a group of K gradients
 *   every one of them is so replaced, which is an affine map of its two
 *   sums (see robust.c).
 * - tau_g and tau_m are `clip` times a low quantile (GP_ROBUST_QUANTILE)
 *   of the last GP_ROBUST_WINDOW deviations |g - c| (in single-gradient
 *   units: a mean of K has sqrt(K) times less noise) and |m_i - c|, each
 *   member's entries weighing 1 in all, and the centre's average weighs
 *   an update by its member's share of the window too: a member that
 *   answers at once (stale, zeros: it computes nothing) has most of the
 *   updates but no more say than another. A minority of members cannot
 *   move a quantile below their share, so the radius follows the honest
 *   members' noise, whatever the others send.
 *
 * One update's deviation from the pool's direction is therefore at most
 * tau_g, and a member whose momentum is away from the pool's moves the
 * model by its share of tau_m only. Nothing is shrunk until the window
 * holds GP_ROBUST_WARMUP deviations from at least GP_ROBUST_MEMBERS
 * different members, the update's sender counted: with fewer there is
 * no majority to follow (a pool of one or two trains as without the
 * filter; the norm limit still holds). apply.c calls it from two joined
 * members on, so that it has measured them when a third member's first
 * update comes (a pass over the update, the centre and the member's
 * momentum, a second one over the update and the centre only for an
 * update it shrinks; a momentum per member, in a pool of two too), and
 * does not call it for a member alone. Pure: no
 * I/O, no allocation but the buffers (the
 * centre and the next one, and one momentum per member that sent an
 * update). */
#ifndef GP_ROBUST_H
#define GP_ROBUST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GP_ROBUST_WINDOW 64   /* deviations the radii are taken from */
#define GP_ROBUST_WARMUP 8    /* updates before anything is shrunk */
#define GP_ROBUST_MEMBERS 3   /* members in the window, likewise */
#define GP_ROBUST_QUANTILE 0.3 /* below 1/2: two colluders of four */

struct gp_par;

/* The pool's side. Zero it, then set clip and beta; free with
 * gp_robust_finish(). */
struct gp_robust {
	double clip;           /* radius factor; 0: off */
	double beta;           /* weight of the past in c and m_i, [0, 1) */
	float *centre;         /* n floats, owned; NULL until the first update */
	float *centre_next;    /* n floats, owned: the next centre (robust.c) */
	double *part;          /* owned: two sums per range (robust.c) */
	size_t n;
	/* Borrowed, may be NULL: the pool the passes over the parameters
	 * run on, a range of 16,384 each, from 65,536 parameters on; the
	 * results are the same bits without it. */
	struct gp_par *par;
	double ring_g[GP_ROBUST_WINDOW], ring_m[GP_ROBUST_WINDOW];
	uint64_t ring_who[GP_ROBUST_WINDOW];
	uint32_t ring_len, ring_pos;
	/* Counters of this run. */
	uint64_t updates, damped;
	uint64_t cpu_ns;       /* thread CPU time spent here */
};

/* A member's side: zeroed when it joins, freed with
 * gp_robust_agent_finish(). */
struct gp_robust_agent {
	float *momentum;       /* n floats, owned; NULL before its first update */
	uint64_t updates, damped;
	double weight_sum;     /* sum of lambda over its updates */
	/* Updates since momentum was (re)started, and the pool's update
	 * count (gp_robust.updates) at its last one. */
	uint64_t run;
	uint64_t last_at;
};

/* A member's momentum is given back once the pool applied this many
 * updates since the member's last (gp_robust_agent_trim): with thousands
 * of members, n floats each is most of the coordinator's memory, and a
 * momentum that old averages gradients of a model the pool has left. The
 * next update starts it again, as a member's first does (and is clipped
 * against tau_g all the same). */
#define GP_ROBUST_IDLE_UPDATES 2048
/* ... and sooner for a large model: at most this many bytes of momenta in
 * all. A momentum is made by an update, so the members' momenta number at
 * most the idle limit (plus the updates between two trims of a member:
 * serve's upkeep visits each once a second), and the limit
 * is this budget over one momentum's size, but never below
 * GP_ROBUST_WINDOW (the members the radii follow). 256 MiB: 2,048 members
 * of a 32k-parameter model, 285 of the 235k-parameter MLP. */
#define GP_ROBUST_MOMENTA_BYTES (UINT64_C(256) << 20)

/* One update as it will be applied: a, the gradient (form 0) or momentum
 * sum a_K of a group; b, a group's second sum (NULL for form 0); both
 * borrowed and shrunk in place. */
struct gp_robust_update {
	float *a, *b;
	size_t n;
	uint32_t k;            /* minibatches, >= 1 */
	uint64_t who;          /* the member's id */
	uint32_t members;      /* members sending updates now, >= 1 */
	const float *lrs;      /* k learning rates (groups only) */
	double mu;             /* the optimiser's momentum (groups only) */
	double reject_norm;    /* max_grad_norm, 0: none */
	/* |a|^2 and |b|^2 as sent, when the caller has them (sq_known;
	 * gp_robust_sum_squares), else the filter takes them. */
	bool sq_known;
	double sq_a, sq_b;
};

/* What gp_robust_filter() did. */
struct gp_robust_result {
	double weight;         /* lambda; 1 when nothing was shrunk */
	double dev_g, dev_m;   /* |g - c|, |m_i - c| */
	double tau_g, tau_m;   /* the radii; 0 while warming up */
	/* beta_k: the centre became beta_k c + (1 - beta_k) g', g' the mean
	 * gradient as applied (1: left alone) */
	double centre_weight;
	bool skipped;          /* left for the optimiser to refuse, or off */
};

/* Filters update u from member `agent` (both borrowed): shrinks u's
 * deviation from the centre as described above and records it (the
 * centre, the member's momentum, the radii), in that order, as applied.
 * An update that is not finite or whose norm the optimiser will refuse
 * (the norm of gp_params_apply_scaled() or _sums(), over reject_norm) is
 * left untouched and unrecorded (ret->skipped). Returns 0 or -ENOMEM (a
 * buffer could not be allocated: the update is left as it came and
 * skipped). */
int gp_robust_filter(struct gp_robust *r, struct gp_robust_agent *agent,
		     const struct gp_robust_update *u,
		     struct gp_robust_result *ret);

/* The sum of squares of x[0..n): float sums in lanes over runs of 256
 * values, each run's added in double (as params.c's sum_squares), in
 * double throughout where a float square overflows. */
double gp_robust_sum_squares(const float *x, size_t n);

/* Frees agent's momentum (NULL-safe as to it) and starts its run anew. */
void gp_robust_agent_finish(struct gp_robust_agent *agent);

/* Drops the member `who`'s deviations from r's window: it left the pool,
 * and the radii follow the noise of the members still in it (members
 * that sent a few updates and left would else set them until the window
 * turns over, which takes long when updates are large groups). */
void gp_robust_forget(struct gp_robust *r, uint64_t who);

/* The pool updates after which an idle member's momentum is given back:
 * GP_ROBUST_IDLE_UPDATES, or fewer when r's momenta would otherwise
 * exceed GP_ROBUST_MOMENTA_BYTES, at least GP_ROBUST_WINDOW. */
uint64_t gp_robust_idle_limit(const struct gp_robust *r);

/* Frees agent's momentum when r applied more than gp_robust_idle_limit()
 * updates since the agent's last (its counters stay). Cheap; serve's
 * tick calls it for each member once a second (its upkeep walk). */
void gp_robust_agent_trim(const struct gp_robust *r,
			  struct gp_robust_agent *agent);
void gp_robust_finish(struct gp_robust *r);

#endif
