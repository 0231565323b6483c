/* The pool as the pure modules see it: the members, the job's parameter
 * store, SSP clocks and schedule, the run's counters, and the effects the
 * decisions have on the world (send, close, ledger rows, evaluations),
 * reached through a table of callbacks.
 *
 * serve.c fills the callbacks with the libuv channel and the SQLite ledger;
 * the unit tests fill them with recorders. Nothing here touches a socket,
 * the loop or the database, so members.c (who is in the pool), work.c (what
 * a WORK_REQUEST gets, clocks) and apply.c (what an UPDATE does) are
 * unit-tested in milliseconds.
 *
 * Everything runs on the loop thread: no locks. */
#ifndef GP_POOL_H
#define GP_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "ledger.h"
#include "msg.h"
#include "params.h"
#include "robust.h"
#include "scheduler.h"
#include "ssp.h"
#include "verify.h"

#define GP_POOL_KEY_SIZE 32 /* an agent's static public key (GP_KEY_SIZE) */

/* The walks over the members that go a slice at a time, each on from
 * where it stopped (gp_members_step), so that no callback of the loop
 * visits 10,000 members at once. */
enum gp_walk {
	GP_WALK_SERVE,     /* gp_work_serve_all: members waiting for work */
	GP_WALK_UPKEEP,    /* serve's tick: overdue members, idle momenta */
	GP_WALK_STATS,     /* serve's STATS rounds */
	GP_WALK_VERIFY,    /* verify-delegate.c: drawing a checker */
	GP_WALKS
};

/* What a walk visits a tick (gp_members_slice): at least
 * GP_WALK_SLICE_MIN members (all of a small pool at once), else the
 * upkeep (overdue members, idle momenta, links) a tenth, each member
 * once a second, and a STATS round a twentieth, over two seconds of its
 * five. */
#define GP_WALK_SLICE_MIN 256
#define GP_WALK_UPKEEP_SLICES 10
#define GP_WALK_STATS_SLICES 20

/* An agent's parameter copy: the server's state when `base` updates were
 * applied, plus (read-my-writes) its own updates of clocks >= own_from;
 * `own` counts those applied here since. The updates its copy lacks are
 * gp_params_updates() - base - own. */
struct gp_view {
	uint64_t base;
	int64_t own_from;
	uint64_t own;
};

/* One connection past the handshake, a member once its JOIN is accepted.
 * serve.c embeds it in its per-connection struct; the pool lists it. */
struct gp_member {
	struct gp_member *next, *prev; /* gp_pool.members */
	struct gp_member *id_next;     /* gp_pool.by_id's chain */
	char addr[64];          /* for the log */
	char name[GP_MSG_NAME_MAX + 1];
	uint8_t key[GP_POOL_KEY_SIZE]; /* set at JOIN */
	int64_t agent_id;       /* 0 until JOIN is accepted */
	bool joined;
	bool wants_work;
	bool paused;
	bool ssp_parked;        /* paused and out of the SSP bound */
	uint32_t caps;          /* GP_CAP_* agreed */
	uint64_t pulled_version;/* parameter version the agent holds */
	/* What the agent's copy of the parameters holds, for its current
	 * clock and for the clock handed out ahead (see struct gp_view). */
	struct gp_view view, view_next;
	int64_t clock;          /* the clock its current work is for */
	uint32_t clock_work;    /* minibatches handed out at that clock */
	uint32_t clock_open;    /* of which not yet resolved */
	uint32_t clock_target;  /* minibatches meant for that clock */
	uint32_t next_work;     /* handed out ahead for clock + 1 */
	uint32_t next_open;     /* of which not yet resolved */
	uint32_t next_target;   /* minibatches meant for clock + 1 */
	/* Whether the clock (and the one ahead) goes out as runs (work.c). */
	bool clock_runs, next_runs;
	/* Minibatches handed out since its last pull: the local run its
	 * updates end (a clock of runs, work.c, pulls between them). */
	uint32_t run_work;
	unsigned strikes;
	int64_t work_since_ms;  /* work handed out or last applied update */
	int64_t joined_ms;
	int64_t connected_ms;   /* past the handshake */
	uint64_t applied, samples; /* this run */
	uint64_t epoch_samples;    /* this epoch, for the share column */
	/* Credit the ledger held at JOIN (progress.c adds this connection's
	 * applied and samples): this job's counted updates and samples, and
	 * the GFLOP earned in the pool's other jobs. */
	uint64_t credit_updates, credit_samples;
	double credit_other_gflop;
	/* The bytes of its parameter sends still queued on its connection
	 * (counted in gp_pool.pull_bytes until it drains), and whether it is
	 * in gp_pool's queue of pulls waiting for room (work.c); pull_turn:
	 * it is being served from the head of that queue. */
	uint64_t pull_bytes;
	bool pull_waiting, pull_turn;
	struct gp_robust_agent robust; /* its momentum (apply.c, robust.h) */
	struct gp_verify_member verify; /* verify.h */
	/* GP_CAP_PARAM_DELTA: the parameters as the agent last decoded
	 * them (n_params floats, from its first pull), and the pulls sent
	 * as deltas (downlink.h). */
	float *mirror;
	uint64_t deltas_sent;
	/* GP_CAP_ZERO_MIRROR: a pull went out this session (its first may
	 * be changes against zeros, no later one), the pull being sent is
	 * picked for verification (whole), and whether the last pull's
	 * parameters went as changes (work-size.c counts its bytes so). */
	bool pulled_once, pull_check, pull_as_changes;
	/* The UPDATE messages of this connection read (applied or not),
	 * and how many were when its last pull went out (GP_CAP_OVERLAP:
	 * PARAM_SHARDS.updates_read; work.c pulls again after each). */
	uint64_t updates_read, pull_read;
};

/* What the decisions do to the world. ctx is gp_pool.fx_data; a member
 * pointer is borrowed for the call. Every callback is required but send_verify. */
struct gp_pool_effects {
	/* Whether m's connection is established (may be sent work). */
	bool (*can_send)(void *ctx, const struct gp_member *m);
	/* Sends m every parameter shard changed since m->pulled_version
	 * (work.c then records the pull). Returns >= 0 or a negative errno. */
	int (*send_params)(void *ctx, struct gp_member *m);
	/* Sends m minibatch `id` for `clock`; group > 1: it opens a group of
	 * that many. Returns >= 0 or a negative errno. */
	int (*send_minibatch)(void *ctx, struct gp_member *m, uint64_t id,
			      int64_t clock, uint32_t group);
	/* BYE with a reason (GP_BYE_*), then close. */
	void (*send_bye)(void *ctx, struct gp_member *m, uint16_t reason,
			 const char *text);
	/* Close without a message (a replaced connection). */
	void (*close)(void *ctx, struct gp_member *m, uint16_t code,
		      const char *text);
	/* gp_ledger_update_room(), gp_ledger_update_append(),
	 * gp_ledger_rejection_append(). */
	bool (*ledger_room)(void *ctx, size_t n);
	int (*ledger_update)(void *ctx, const struct gp_ledger_update *row);
	void (*ledger_rejection)(void *ctx, const struct gp_ledger_rejection *rej);
	/* job.eval_every minibatches were applied: an interim evaluation. */
	void (*interim_eval)(void *ctx);
	/* Sends m (a member granted GP_CAP_VERIFY) msg, a VERIFY_TASK
	 * (borrowed). Returns >= 0 or a negative errno. NULL: checks are
	 * not handed to members. */
	int (*send_verify)(void *ctx, struct gp_member *m, struct gp_msg *msg);
	/* n epochs were completed by the last applied minibatch; job_done:
	 * the last one. */
	void (*epochs_completed)(void *ctx, uint32_t n, bool job_done);
	/* gp_work_serve_all stopped at its time budget with members left to
	 * serve: call it again in the loop's next idle phase (one more
	 * slice at most before the loop polls for I/O again; NULL: the
	 * owner's next event or tick does). */
	void (*serve_later)(void *ctx);
};

struct gp_pool {
	const struct gp_job *job;      /* borrowed */
	int64_t job_id;
	struct gp_params *params;      /* borrowed, as the next three */
	struct gp_ssp *ssp;
	struct gp_sched *sched;
	/* Decode buffers of n_params floats each: one gradient, and a
	 * group's second sum (GP_UPDATE_SUMS). Borrowed. */
	float *grad, *grad_b;
	size_t n_params;
	/* The fork-join pool of an update's numeric passes (reading its
	 * blocks, the robust filter, the step; par.h); borrowed from serve,
	 * NULL: all on the loop thread. */
	struct gp_par *par;
	uint64_t minibatches_total;    /* of the whole job */
	uint64_t train_fingerprint;    /* gp_data_fingerprint(train) */
	bool stopping;                 /* no more work handed out */

	struct gp_member *members;     /* every connection past on_verify */
	uint32_t n_members;
	/* Where each walk that visits the members a slice at a time goes on
	 * (gp_members_step; NULL: at the head); members.c moves them off a
	 * member that leaves. */
	struct gp_member *cursors[GP_WALKS];
	uint32_t serve_scan;           /* 0: GP_WORK_SERVE_SCAN (tests set less) */
	uint32_t serve_budget_us;      /* 0: GP_WORK_SERVE_BUDGET_US (the same) */
	/* When the message being handled was read from its connection
	 * (gp_mono_us): set by the server for a message that waited in its
	 * deferred queue, so that a link's round trip (gp_work_answered) does
	 * not count the wait; 0: now. */
	uint64_t msg_read_us;
	/* The members' parameter mirrors together (downlink.h), bytes. */
	uint64_t mirror_bytes;
	/* The joined members by agent id (members.c): by_id_mask + 1
	 * chains, made at the first join, so that finding a member costs
	 * the same with 10,000 as with 2 (gp_members_finish frees it). */
	struct gp_member **by_id;
	size_t by_id_mask;
	uint32_t n_joined;

	const struct gp_pool_effects *fx;
	void *fx_data;

	/* Centred clipping's centre and radii (robust.h); owned,
	 * gp_robust_finish() at the end. */
	struct gp_robust robust;
	/* Verification by recomputation (verify.h); owned by serve, NULL
	 * when [pool] verify_rate is 0. */
	struct gp_verify *verify;

	/* Parameter sends queued on the connections, in bytes, at most
	 * job->pull_budget_mib; the agent ids of members whose pull waits
	 * for room, oldest first (a ring; a member that left is skipped). */
	uint64_t pull_bytes;
	uint64_t pulls_waited;         /* this job, logged the first time */
	uint64_t *pull_wait;
	size_t pull_wait_head, pull_wait_n, pull_wait_cap;

	/* The pool-wide figures that size clocks (work.c), each a scan of
	 * every live agent: in a pool of more than GP_WORK_MEMO_MIN live
	 * agents reused for up to GP_WORK_MEMO_US (a field of a const pool
	 * written by work.c's memo()). */
	struct gp_work_memo {
		uint64_t at_us;
		size_t live;
		bool have_cycle, have_clock, have_runs, have_slowest;
		double cycle, clock_work, runs, slowest;
	} memo;

	/* Pacing by serve's own load (gp_work_pace): the fewest
	 * minibatches a clock and a run hold while the loop stalls (0: no
	 * floor), the window's start and its longest stall (µs), and the
	 * quiet windows in a row. */
	uint32_t group_floor;
	uint32_t pace_quiet;
	uint64_t pace_at_us, pace_stall_us;
	/* Minibatches per applied update lately (gp_work_answered; 0: none
	 * yet): a newcomer's first clock in a large pool. */
	double group_mean;

	/* Counters of this run. */
	uint64_t first_work_us;        /* first minibatch handed out */
	double sync_interval_logged;   /* the links' clock last logged, s */
	uint64_t applied_run;          /* minibatches applied */
	uint64_t samples_run;
	uint64_t unlogged;             /* refused for a full ledger buffer */
	uint64_t applied_since_checkpoint;
	bool checkpoint_wanted;
	/* Progress of the current epoch, for the per-epoch line. */
	uint64_t epoch_samples;
	double epoch_loss_sum;
	uint64_t epoch_updates;
};

/* The learning rate of minibatch `id` (counted over the whole job): the
 * one place gp_job_lr_at() is asked, for the rate sent with the work and
 * the rate its update is applied at. */
double gp_pool_lr_at(const struct gp_pool *pool, uint64_t id);

/* The learning rate in force now: the schedule's at the job's progress
 * (gp_sched_position()), what the momentum already there moves the
 * parameters at when an update's minibatches were handed out long before
 * at a higher rate (apply.c). */
double gp_pool_lr_now(const struct gp_pool *pool);

#endif
