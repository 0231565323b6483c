/* Verification's state, shared by verify.c (the checks, the kept effects,
 * the coordinator's own recomputation), verify-delegate.c (checks handed
 * to other members) and verify-takeback.c (taking updates back).
 * Internal to those files. */
#ifndef GP_VERIFY_IMPL_H
#define GP_VERIFY_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "verify.h"

/* q8's allowance per unit of norm: a chunk of at most 64 values of
 * largest magnitude A rounds each by at most A / 254 (half of A / 127),
 * so by at most 8 A / 254 in norm, and A is at most the chunk's norm. */
#define Q8_BOUND (8.0 / 254.0)
/* q4's the same way: the step is A / 7, so each value rounds by at most
 * A / 14 and a chunk by at most 8 A / 14 in norm. As with q8 the sent
 * chunk holds A itself (q = 7), so A is at most the sent chunk's norm,
 * and summed over chunks the error of a sum is at most Q4_BOUND times its
 * norm: once for the error it leaves, once for the error it carries in
 * from the previous sum. That is over half the norm: a sum sent in four
 * bits is checked far more loosely than in eight (a sign flip, zeros,
 * noise or a stale sum still fail; a sum scaled by 1.2 passes). */
#define Q4_BOUND (8.0 / 14.0)
/* f16 rounds to nearest with an 11-bit significand. */
#define F16_BOUND (1.0 / 2048.0)
/* Recomputations waiting beyond this are dropped (counted skipped): the
 * coordinator's CPU is not given up to a backlog. */
#define MAX_QUEUED 8
/* A take-back's shares tried (verify-takeback.c), the samples each is judged
 * on at most, and how far above the lowest loss the whole effect (or
 * half) still comes out: a 5 % rise in training loss is what taking out
 * all of an attacker's effect may cost before less is taken out. */
#define GP_VERIFY_SHARES 3
#define GP_VERIFY_SHARE_SAMPLES 512
#define GP_VERIFY_SHARE_MARGIN 0.05
extern const double gp_verify_shares[GP_VERIFY_SHARES];
/* The momentum's scale M is renormalised below this (see verify.h). */
#define REBASE_BELOW 1e-9
/* A stretch whose base (M0) the renormalisations have raised past this is
 * moved to the present (one pass over it) before M0 could overflow: it
 * was untouched for hundreds of steps, and its momentum part is gone. */
#define SEG_BASE_MAX 1e150
/* A member's kept effects are dropped once the pool applied this many
 * updates since its last (as robust.c drops its momentum): it is gone or
 * idle, and its updates can no longer be taken back. */
#define IDLE_STEPS 2048
/* After a mismatch, a member's clocks are all picked (whatever
 * verify_rate) until this many of its checks passed: a member that
 * cheats on every clock meets its second mismatch, and its ban
 * (verify_bans), at its next checked clock instead of after about
 * 1 / verify_rate more clocks of rolled-back work (tools/bench-attack:
 * the collude run kept 2 of 4 members attacking for 7-9 more clocks
 * each). Honest members never mismatch, so this costs them nothing. */
#define SUSPECT_CHECKS 2

/* An update kept as it came, its blocks' bytes, instead of added to its
 * stretch's sums: one applied as decoded (not damped by the robust
 * filter) by a linear step, so that decoding it again gives what the
 * step was given. Its effect is a stretch's of ka x on the momentum and
 * kb y on the parameters added at the pool's (C0, M0) (verify.h); y is
 * x for a gradient (!sums). Keeping it copies its wire bytes (about a
 * quarter of the floats' for q8) where adding it is a pass over the
 * stretch's two sums; a take-back decodes it again. */
struct raw {
	struct raw *next;
	double C0, M0;
	float ka, kb;
	bool sums;              /* blocks hold x, then y */
	size_t n_blocks;
	struct gp_msg_block *blocks; /* raw pointing into bytes */
	size_t *offs;           /* each block's first value in x (or y) */
	uint8_t *bytes;
	size_t cap;             /* bytes' size (a spare one may be larger) */
	uint64_t size;          /* all of it, for the budget (kept_max) */
};
/* Byte buffers of kept updates held for reuse (struct gp_verify.spare). */
#define RAW_SPARES 8
/* ... holding at most this many bytes in all (a large model's buffers
 * are freed, not kept). */
#define RAW_SPARES_BYTES (UINT64_C(64) << 20)
/* A stretch of a member's applied updates: their effect, as two sums
 * relative to the pool's (C0, M0) when it was last added to (verify.h:
 * the parameters' part is a - (C - C0) / M0 b, the momentum's M / M0 b),
 * and their minibatches. tag != 0: closed by the checked update `tag`. */
struct seg {
	struct seg *next;
	float *a, *b;
	double C0, M0;
	struct raw *raws;       /* and those kept as they came */
	uint64_t *ids;
	size_t n_ids, cap_ids;
	uint64_t tag;
	/* Its check has not ended: checks handed to members end in any
	 * order, and a later one's pass must not release it. */
	bool checking;
};

/* A member's unverified updates, kept by agent id so that a check that
 * ends after it left still finds them. */
struct record {
	struct record *next;
	int64_t agent_id;
	struct seg *head, *tail;
	unsigned checks;        /* queued or running */
	uint64_t last_step;     /* gp_verify.steps at its last update */
	/* This run's mismatches; kept when the member leaves, so that
	 * reconnecting after each mismatch does not escape verify_bans
	 * (the record then holds no stretch: record_retire). */
	uint32_t mismatches;
	uint32_t suspect;       /* checks at rate 1 left (SUSPECT_CHECKS) */
	bool gone;              /* left the pool */
	bool revoked;           /* by this run, at verify_bans mismatches */
	bool revoke_written;    /* and that in the ledger */
};

struct check {
	uv_work_t req;
	struct check *next;
	struct gp_verify *v;
	int64_t agent_id;
	uint64_t tag;
	int64_t clock;
	uint32_t caps;          /* the checked member's (what it was sent) */
	bool sums;
	uint32_t k;
	uint64_t ids[GP_MSG_GROUP_MAX];
	float lrs[GP_MSG_GROUP_MAX];
	uint32_t n_samples[GP_MSG_GROUP_MAX];
	uint32_t *idx;          /* the samples, item after item */
	float mu;
	float *w0, *v0;         /* the copy sent (taken from the member) */
	float *a, *b;           /* as received */
	double q_a, q_b;        /* the wire's allowances */
	/* Handed to another member (verify-delegate.c): the task's id, the
	 * member, when it is given up; its answer (da, db), kept for the
	 * coordinator's own recomputation when that follows (an audit, a
	 * disagreement), with its f16 rounding's allowance per unit. */
	uint64_t task;
	int64_t delegate_id;
	int64_t deadline_ms;    /* the checker's, or the wait's (waiting) */
	bool waiting;           /* for a free checker (gp_verify_wait) */
	float *da, *db;
	double d_round;
	bool d_pass;            /* the coordinator's recomputation agreed */
	double d_res, d_x;
	/* Results. */
	int err;
	double res_a, res_b, x_a, x_b;
	bool pass;
	uint64_t ns;
};

struct gp_verify {
	struct gp_pool *pool;
	struct gp_verify_env env;
	uint64_t rng;
	double C, M;
	float *w_old, *v_old;   /* before the step being applied */
	bool stepping;
	bool copied;            /* w_old, v_old hold that step's start */
	struct gp_member *received; /* whose update is decoded now */
	struct check *pending;  /* its check, until it is applied */
	struct record *records;
	size_t suspects;        /* records with suspect > 0 */
	struct check *queue, *queue_tail;
	size_t queued;
	/* Checks out with other members, oldest first (verify-delegate.c). */
	struct check *delegated;
	size_t n_delegated;
	/* Checks waiting for a free checker, oldest first. */
	struct check *waiting;
	size_t n_waiting;
	/* Members granted GP_CAP_VERIFY with a verified update on their
	 * connection (verify.h gp_verify_member.verified > 0): those that
	 * may check any member. */
	uint32_t qualified;
	uint64_t next_task;
	bool running;
	uint64_t next_tag;
	uint64_t steps;         /* updates applied */
	size_t segs;            /* stretches kept, all members */
	uint64_t raw_bytes;     /* updates kept as they came, all members */
	uint64_t kept_max;      /* their bytes' limit (env.kept_bytes) */
	float *rx, *ry;         /* a kept update decoded (n floats each) */
	/* Kept updates' byte buffers and checks' copies given back, for
	 * the next ones: a fresh buffer of that size is pages the kernel
	 * zeroes on first touch, which cost more than the copy into it. */
	struct {
		uint8_t *p;
		size_t cap;
	} spare[RAW_SPARES];
	bool full_logged;
	struct gp_backend *be;  /* the thread pool's, created there */
	struct gp_model *model;
	float *x;
	int32_t *y;
	/* The take-back's share (verify-takeback.c): the loop thread's own
	 * model, its samples, the parameters tried, each share's loss at
	 * the last take-back. */
	struct gp_backend *share_be;
	struct gp_model *share_model;
	float *share_x, *share_w;
	int32_t *share_y;
	uint32_t *share_idx;
	double share_loss[GP_VERIFY_SHARES];
	struct gp_verify_stats st;
};


/* verify.c */
uint64_t gp_verify_thread_ns(void);
/* One splitmix64 step of *state: the generator behind gp_verify_draw. */
uint64_t gp_verify_next(uint64_t *state);
/* m's verified work no longer counts (a mismatch, or it left). */
void gp_verify_unqualify(struct gp_verify *v, struct gp_member *m);
/* Frees rec's stretches of kept effects. */
void gp_verify_drop_segs(struct gp_verify *v, struct record *rec);
/* Stretch s's effect at the pool's (C, M) (verify.h): a - k1 b on the
 * parameters, k2 b on the momentum. */
void gp_verify_seg_k(const struct seg *s, double C, double M, double *k1,
		     double *k2);
/* Adds the effect at the pool's (C, M) of the updates s kept as they
 * came (struct raw) to dw (parameters) and dv (momentum). Returns 0, or
 * -ENOMEM / -EINVAL where one could not be decoded again (then not
 * added). */
int gp_verify_raws_effect(struct gp_verify *v, const struct seg *s,
			  double *dw, double *dv, size_t n);
/* n_params floats from v's spare buffers, else malloc'd (NULL: none);
 * gp_verify_floats_put() gives one back (NULL-safe), to the spares or
 * free(). On the loop's thread only. */
float *gp_verify_floats(struct gp_verify *v);
void gp_verify_floats_put(struct gp_verify *v, float *p);
struct record *gp_verify_record(struct gp_verify *v, int64_t agent_id);
/* A new record of agent_id's (NULL: no memory). */
struct record *gp_verify_record_add(struct gp_verify *v, int64_t agent_id);

/* verify-kept.c */
/* Frees r and its stretches. */
void gp_verify_record_free(struct gp_verify *v, struct record *r);
/* Frees rec's stretches up to and including the one the check `tag`
 * closed (verified), unless an earlier one's check is under way. */
void gp_verify_release_upto(struct gp_verify *v, struct record *rec,
			    uint64_t tag);
void gp_verify_check_free(struct check *c);
/* Queues c for the coordinator's own recomputation. A new check is
 * queued only while there is room (gp_verify_room(), MAX_QUEUED); one
 * that went to a member first (a disagreement, an audit, a checker gone)
 * always is: MAX_OUT bounds those. */
void gp_verify_run_here(struct gp_verify *v, struct check *c);
bool gp_verify_room(const struct gp_verify *v);
/* Whether a check's sums a (and b; NULL for a gradient) are within
 * q_a (q_b) + rel |x| + tol |x| of xa (xb), each over the whole model;
 * res[] gets the residuals |a - xa|, |b - xb| and x[] the norms |xa|,
 * |xb| (0 without b). The coordinator's recomputation against a member's
 * update or a checker's answer, and a member's answer against an
 * update. */
bool gp_verify_compare(const float *a, const float *b, const float *xa,
		       const float *xb, size_t n, double q_a, double q_b,
		       double rel, double tol, double res[2], double x[2]);
/* c's update matched: its record's stretches up to c's are verified. */
void gp_verify_passed(struct gp_verify *v, struct check *c, double res,
		      double allowed);
/* What the coordinator's check of c decided, c done: the record's count of
 * checks under way, a gone member's retirement, the next check, idle. */
void gp_verify_check_ended(struct gp_verify *v, struct check *c);
/* The member that gave c's answer (c->delegate_id) recomputed it wrong:
 * a mismatch of its own, as mismatch() of a member's update. */
void gp_verify_checker_mismatch(struct gp_verify *v, const struct check *c,
				double res, double norm_x);

/* verify-takeback.c */
/* A mismatch of rec's member: counted and struck, every update of its
 * kept since its last verified one taken back (first: the checked
 * update's first minibatch, whose row marks the others), revoked at
 * verify_bans. what: the log's reason; brief: the ledger's. */
void gp_verify_mismatch(struct gp_verify *v, struct record *rec,
			uint64_t first, const char *what, const char *brief);
/* The share of the effect dw (n_params doubles, subtracted from the
 * parameters) a take-back applies: of gp_verify_shares (1, 0.5, 0), the
 * largest whose training loss is within GP_VERIFY_SHARE_MARGIN of the
 * lowest, on samples drawn afresh from v->rng (4 minibatches' worth of
 * images, 1 of windows, at most GP_VERIFY_SHARE_SAMPLES); 1 when the
 * loss cannot be computed (logged). Each share's loss is left in
 * v->share_loss, in gp_verify_shares' order (NaN when not computed). */
double gp_verify_take_share(struct gp_verify *v, const double *dw);
void gp_verify_share_free(struct gp_verify *v);

/* verify-delegate.c */
/* Hands c to another member when one can take it; false: it stays the
 * coordinator's. */
bool gp_verify_delegate(struct gp_verify *v, struct check *c);
/* Lists c to wait for a free checker (gp_verify_tick tries again, and
 * after WAIT_MS hands it to the coordinator) when a member that could
 * check it exists; false: it stays the coordinator's now. */
bool gp_verify_wait(struct gp_verify *v, struct check *c);
/* m leaves: the check it holds, if any, goes back to the coordinator. */
void gp_verify_member_left(struct gp_verify *v, struct gp_member *m);
/* Frees the checks out with other members and those waiting for one
 * (the verifier's end). */
void gp_verify_delegated_free(struct gp_verify *v);

#endif
