/* The coordinator program's state, shared by its three files and no one
 * else: serve.c (the libuv loop, the channels, the pool's effects, the
 * lifecycle), background.c (the jobs on the thread pool: ledger writes and
 * checkpoints, evaluations, revocation checks) and setup.c (reading the
 * job, building or restoring its state, the listen address). What the pool
 * decides lives in the pure modules (pool.h). */
#ifndef GP_SERVER_H
#define GP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "announce.h"
#include "backend.h"
#include "channel.h"
#include "data.h"
#include "identity.h"
#include "job.h"
#include "model.h"
#include "credit.h"
#include "optim.h"
#include "tokens.h"
#include "pool.h"
#include "progress.h"
#include "shard.h"
#include "state.h"
#include "web.h"

/* Messages over the rate limit after which a connection is closed: at
 * least this many, else one second's worth. */
#define FLOOD_DROPS_MIN 64
#define TICK_MS 100
/* How often connected members are checked for revocation. */
#define REVOKE_CHECK_MS 1000
#define EVAL_BATCH 1000

struct server;
struct gp_deferred;

/* A connection past on_verify: the member the pool decides about, plus
 * what only the socket side needs. */
struct peer {
	struct gp_member m;
	struct server *srv;
	struct gp_channel *ch;
	bool psk_join;
	int64_t token_id;       /* IKpsk2: the token row presented */
	/* Token buckets of the job's rate limits, refilled as time passes. */
	double msg_tokens, byte_tokens;
	uint64_t rate_at_us;
	uint64_t over;          /* messages over the limit */
	bool flooded;           /* disconnected for it */
	/* The listener's user data: a channel closed before on_verify (the
	 * handshake limit, a timeout, garbage) still carries it in on_close. */
	bool listener_data;
	/* The link and sync interval last written to the ledger. */
	double link_saved_bps, sync_saved_ms;
	/* A member (GP_CAP_JOBS) that joined while the pool had no job: it
	 * got WELCOME job 0 and waits, connected, for BYE 7 when one
	 * starts. Not in the pool's decisions (m.joined stays false). */
	bool idle;
	/* DATA_SHARD messages sent on this connection: a fetch needs each
	 * shard once, a retry after a bad shard a few more. */
	uint32_t shards_sent;
	/* Its messages in the server's deferred queue (serve-defer.c);
	 * its reading is paused while there are any. */
	uint32_t deferred;
	/* serve closed it (gp_serve_close): what of it waits in the
	 * deferred queue is dropped, not handled. */
	bool closed_here;
};

struct server {
	struct peer listen_data; /* what every new channel starts with */
	uv_loop_t loop;
	uv_timer_t tick;
	uint64_t tick_us;             /* when it last fired (gp_mono_us) */
	uv_idle_t serve_idle;    /* fx->serve_later (serve-effects.c) */
	/* Messages read and waiting to be handled (serve-defer.c), oldest
	 * first, and their bytes; the handle that works through them. */
	struct gp_deferred *defer_head, *defer_tail;
	size_t defer_bytes, defer_n;
	uint64_t defer_budget_us;
	/* Since serve started: messages queued, the most waiting at once,
	 * the longest wait (logged at exit). */
	uint64_t defer_total, defer_wait_max_us;
	size_t defer_peak;
	uv_idle_t defer_idle;
	uv_signal_t sigint, sigterm;
	struct gp_coord_state st;
	/* The job being served; its [pool] settings stay after it ended,
	 * for the listener and the connections until the next one. */
	struct gp_job job;
	char *job_text;
	char job_source[GP_LEDGER_SOURCE_MAX]; /* its file, for messages */
	/* The job's state below (spec, data sets, the pool's params, clocks
	 * and schedule, the evaluation model) exists: set by start_job(),
	 * cleared by end_job() (serve.c). */
	bool has_job;
	/* The job ended (done and reported, or cancelled): its members were
	 * told BYE 2; it is torn down once they are gone and the ledger has
	 * the last of it. No work is handed out meanwhile. */
	bool job_ending;
	bool cancelled;          /* by the owner (job cancel) */
	/* The verifier went idle: gp_serve_maybe_finish() on the next tick
	 * (not from inside its callback, which a teardown would free). */
	bool finish_soon;
	/* GP_SERVE_EXIT_WHEN_DONE: stop once a job ended and no other
	 * follows; GP_SERVE_QUEUE: take the ledger's queued jobs. */
	bool exit_when_done;
	bool take_queue;
	int64_t queue_checked_ms; /* the ledger's queue or state last read */
	struct gp_model_spec spec;
	/* The model in canonical text (gp_model_spec_format()): the ledger's
	 * jobs.model, the checkpoints' GP_CKPT_MODEL, WELCOME's model_text. */
	char spec_text[GP_MODEL_DESC_MAX + 1];

	struct gp_dataset *train, *test;
	/* [data] set = tokens: the language model's token files
	 * (tokens.h) in place of train and test. */
	struct gp_tokens *train_tok, *test_tok;
	size_t n_train;         /* training samples (images or windows) */
	size_t eval_batch;      /* rows of the evaluation model */
	/* The training set as content-addressed shards (proto/shard.h), for
	 * agents granted GP_CAP_DATA_SHARDS. */
	struct gp_shard_manifest manifest;
	/* The members, the parameter store, the clocks, the schedule and the
	 * run's counters: what the pure modules decide about. */
	struct gp_pool pool;
	uint8_t token_key[GP_KEY_SIZE];

	struct gp_channel_listener *listener;
	struct gp_coord_web *web;  /* the owner's page; NULL when off */
	struct gp_announce *announce; /* [pool] beacon = on */
	struct gp_channel_config chcfg;

	/* Background work: at most one ledger job and one evaluation. */
	bool db_busy;
	bool eval_busy;
	bool revoke_busy;       /* a revocation check (check_revoked) */
	bool cancel_busy;       /* a job state read (gp_bg_check_cancelled) */
	int64_t last_revoke_check_ms;
	uint32_t eval_pending;  /* epochs completed, waiting for evaluation */
	struct gp_backend *eval_be;
	struct gp_model *eval_model;
	struct gp_optim *optim;  /* optimizer = adamw, else NULL */

	int64_t last_checkpoint_ms;
	bool done;
	bool final_reported;

	uint64_t epoch_start_us;
	uint64_t run_start_us;
	double last_accuracy;

	/* What the agents are told of the job (serve-progress.c). */
	struct gp_progress progress;
	/* Members the STATS round under way has still to visit
	 * (gp_serve_progress_tick). */
	uint32_t stats_left;
	/* The pool's sync interval for the ledger's link notes, ms, and
	 * when it was taken (on_tick). */
	double sync_ms;
	int64_t sync_ms_at;
};

/* The connection a member of the pool is. */
static inline struct peer *peer_of(struct gp_member *m)
{
	return (struct peer *)(void *)((char *)m - offsetof(struct peer, m));
}

/* Every connection past on_verify, as for (p = first_peer(srv); p;
 * p = next_peer(p)). */
static inline struct peer *first_peer(const struct server *srv)
{
	return srv->pool.members ? peer_of(srv->pool.members) : NULL;
}

static inline struct peer *next_peer(const struct peer *p)
{
	return p->m.next ? peer_of(p->m.next) : NULL;
}

/* Whether work is handed out now: a job runs and is not ending. */
static inline bool gp_serve_serving_work(const struct server *srv)
{
	return srv->has_job && !srv->job_ending && !srv->pool.stopping;
}

/* serve.c: BYE with a reason (GP_BYE_*), then close p's channel (p
 * borrowed). */
void gp_serve_bye(struct peer *p, uint16_t reason, const char *text);
/* serve.c: once stopping or done, and the background work is finished,
 * closes the listener and the loop's handles so that uv_run returns. */
void gp_serve_maybe_finish(struct server *srv);

/* serve.c: decodes and handles one message of p's (data borrowed), as
 * read (read_us 0) or out of the deferred queue (read_us: when it was
 * read, gp_mono_us, which the ledger's received_at and the link's round
 * trip take). */
void gp_serve_dispatch(struct peer *p, const uint8_t *data, size_t len,
		       uint64_t read_us);

/* The deferred queue (serve-defer.c). An UPDATE read from a member is not
 * applied in the read's callback: it waits in the server's queue, and the
 * loop's idle phase works through the queue for up to
 * GP_SERVE_DEFER_BUDGET_US (GP_SERVE_DEFER_BUDGET_US in the environment
 * sets another; 0 turns the queue off), then polls again. A turn of the
 * loop then reads and decrypts what the sockets hold, heartbeats
 * answered at once, instead of applying a burst of updates (a clock
 * edge's herd: 100-270 at 10,000 agents) before the next socket is read.
 * While a connection has messages waiting its reading is paused, and
 * what else it already sent queues behind them, so each connection's
 * messages are handled in the order they came. A connection that closes
 * by itself (its close frame may come in the same read as its last
 * update) has its waiting messages handled before the member leaves,
 * as they would have been without the queue; one that serve closed
 * (BYE for strikes, revocation, the job's end, shutdown) has them
 * dropped, as its channel drops what comes after the close. A turn
 * handles at least one message, so one large update can take longer
 * than the budget. From GP_SERVE_DEFER_MAX_BYTES queued, a member's
 * next update is applied as it is read, unless others of it wait. */
#define GP_SERVE_DEFER_BUDGET_US 5000
#define GP_SERVE_DEFER_MAX_BYTES (256u * 1024 * 1024)
void gp_serve_defer_init(struct server *srv);
/* Queues p's message (data borrowed, copied) when it is an UPDATE
 * (`update`) or others of p's wait: true when queued, false when it is
 * to be handled now. */
bool gp_serve_defer(struct peer *p, const uint8_t *data, size_t len,
		    bool update);
/* Handles p's waiting messages now, in order: its connection closed
 * (on_close, before the member leaves), and they came before that. */
void gp_serve_defer_flush(struct peer *p);
/* Drops every waiting message (the loop is gone). */
void gp_serve_defer_finish(struct server *srv);

/* serve.c: encodes m (borrowed) and sends it on p's channel. Returns 0 or
 * a negative errno. */
int gp_serve_send(struct peer *p, struct gp_msg *m);

/* The same for a message of blocks of a model of `model_params`
 * parameters: from GP_PAR_MIN (par.h) on, the blocks' payloads (f32,
 * f16, q8, q4) are written by the pool's threads and the loop together
 * (gp_msg_encode_alloc_deferred), the message then handed to the channel
 * whole, in its place among the others. */
int gp_serve_send_blocks(struct peer *p, struct gp_msg *m,
			 uint64_t model_params);

/* A parameter send counts in the pull budget (work.h) while more than
 * this is queued on its connection: the channels' on_drain low water. */
#define GP_SERVE_PULL_LOW_WATER (64u * 1024)

/* What the pool's decisions send and write (serve-effects.c); pool.fx,
 * with the server as fx_data. */
extern const struct gp_pool_effects gp_serve_effects;
/* Closes p's channel with code and text (borrowed). */
void gp_serve_close(struct peer *p, uint16_t code, const char *text);
/* serve-join.c: REJECT code with text (borrowed), then close. */
void gp_serve_reject(struct peer *p, uint16_t code, const char *text);
/* serve-join.c: p's JOIN (j borrowed). */
void gp_serve_handle_join(struct peer *p, struct gp_msg_join *j);

/* serve-progress.c: names the job for the agents (job_path borrowed) once
 * it is set up. */
void gp_serve_progress_start(struct server *srv, const char *job_path);
/* serve-progress.c: records the pool's counters and, every few seconds
 * or when forced (an evaluation), starts a round that sends each member
 * that takes it (GP_CAP_PROGRESS) a STATS: a slice of the members each
 * tick (GP_WALK_STATS_SLICES), all at once when the job is done. */
void gp_serve_progress_tick(struct server *srv, int64_t now, bool force);
/* serve-progress.c: after WELCOME: on the thread pool, records j's public
 * name (borrowed) and reads the member's credit; then sends it its first
 * STATS. */
void gp_serve_progress_join(struct peer *p, const struct gp_msg_join *j);
/* serve-progress.c: a PROFILE (borrowed): the member's public name. */
void gp_serve_progress_profile(struct peer *p,
			       const struct gp_msg_profile *pr);

/* background.c: encodes the checkpoint of the pool's state, returned and
 * owned by the caller (free()), or NULL. */
uint8_t *gp_bg_checkpoint(struct server *srv, size_t *ret_len);
/* background.c: starts a ledger job if none is running: a checkpoint when
 * one is wanted, else a flush of the buffered update log when one is due
 * (or force_flush). */
void gp_bg_kick_db(struct server *srv, bool force_flush);
/* background.c: evaluates a snapshot of the parameters on the test set,
 * for the next completed epoch, or (interim) for eval_every. */
void gp_bg_start_eval(struct server *srv, bool interim);
/* background.c: every REVOKE_CHECK_MS, lists the revoked agents from the
 * ledger and says BYE to the members among them. */
void gp_bg_check_revoked(struct server *srv, int64_t now);
/* background.c: reads the job's state on the thread pool and, when the
 * owner cancelled it (`job cancel`), checkpoints it and tells the
 * members (gp_serve_maybe_finish). One read at a time. */
void gp_bg_check_cancelled(struct server *srv);

/* setup.c: reads and parses the job file (job_path, borrowed), or the
 * ledger's job job_id (> 0: a queued job, or one a stopped serve left
 * running), loads the data sets, records the job in the ledger and
 * restores its newest checkpoint or builds it fresh, and sizes the pool's
 * buffers. Logs what failed. Returns 0, -EALREADY when job_path's job
 * ended already (said why; srv->pool.job_id names it), or a negative
 * errno. What it built is freed by gp_setup_teardown(), also on failure. */
int gp_setup_job(struct server *srv, const char *job_path, int64_t job_id);
/* setup.c: frees what gp_setup_job() built and zeroes the pool's counts
 * of the job, keeping the members, the listener and srv->job. */
void gp_setup_teardown(struct server *srv);
/* setup.c: path made absolute (realpath, else as given) into buf. */
void gp_setup_source_path(const char *path, char *buf, size_t size);
/* setup.c: parses "ADDR:PORT" (IPv4, IPv6, [IPv6]) into *ss. Returns 0 or
 * a negative errno. */
int gp_setup_listen_addr(const char *s, struct sockaddr_storage *ss);
/* setup.c: raises the soft limit of open files to the hard one: every
 * connection is a descriptor, and a flood of half-open ones must hit the
 * handshake limit, not the 1024 soft limit. */
void gp_setup_raise_nofile(void);

#endif
