/* Verification's state, shared by verify.c (the checks, the kept effects,
 * the coordinator's own recomputation) and verify-delegate.c (checks
 * handed to other members). Internal to those two files. */
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
/* The momentum's scale M is rebased below this (see verify.h). */
#define REBASE_BELOW 1e-9
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

/* A stretch of a member's applied updates: their effect, as two sums
 * (verify.h: the parameters' part is a - C b, the momentum's M b), and
 * their minibatches. tag != 0: closed by the checked update `tag`. */
struct seg {
	struct seg *next;
	double *a, *b;
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
	int64_t deadline_ms;
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
	uint64_t next_task;
	bool running;
	uint64_t next_tag;
	uint64_t steps;         /* updates applied */
	size_t segs;            /* stretches kept, all members */
	uint64_t kept_max;      /* their bytes' limit (env.kept_bytes) */
	bool full_logged;
	struct gp_backend *be;  /* the thread pool's, created there */
	struct gp_model *model;
	float *x;
	int32_t *y;
	struct gp_verify_stats st;
};


/* verify.c */
uint64_t gp_verify_thread_ns(void);
struct record *gp_verify_record(struct gp_verify *v, int64_t agent_id);
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

/* verify-delegate.c */
/* Hands c to another member when one can take it; false: it stays the
 * coordinator's. */
bool gp_verify_delegate(struct gp_verify *v, struct check *c);
/* m leaves: the check it holds, if any, goes back to the coordinator. */
void gp_verify_member_left(struct gp_verify *v, struct gp_member *m);
/* Frees the checks out with other members (the verifier's end). */
void gp_verify_delegated_free(struct gp_verify *v);

#endif
