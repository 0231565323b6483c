/* The agent session's state machine: what the agent decides on each event
 * of its connection to a pool (connect, WELCOME, REJECT, parameters,
 * minibatches and groups, results, pause and resume, backoff and retry,
 * memberships, beacons, close), as plain code over one struct.
 *
 * It does no I/O. Everything it wants done goes through struct
 * gp_machine_ops (send a message, close the channel, start the retry
 * timer, hand work to the compute thread, ...), which session.c implements
 * over libuv, the channel and worker.c, and which the unit test
 * (tests/unit/test-session.c) implements with a few arrays, so that every
 * decision runs in milliseconds without sockets or threads.
 *
 * Every gp_machine_* function runs on one thread (the loop thread) and may
 * call back into ops before it returns. */
#ifndef GP_AGENT_MACHINE_H
#define GP_AGENT_MACHINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "channel.h"
#include "data.h"
#include "feedback.h"
#include "model.h"
#include "msg.h"
#include "session.h"
#include "stats.h"
#include "status.h"
#include "token.h"
#include "tokens.h"
#include "worker.h"

#define GP_MACHINE_BACKOFF_MIN_MS 250
#define GP_MACHINE_BACKOFF_MAX_MS 30000
/* gp_machine_drain is called again this often while finishing (agent/
 * session.c), which sends another HEARTBEAT while none was answered: a
 * coordinator over its rate limit drops every message but updates. */
#define GP_MACHINE_FINISH_RESEND_MS 2000
/* Listen for beacons after this many failed connects in a row, and act on
 * at most one beacon per GP_MACHINE_BEACON_GAP_US: anyone may send them. */
#define GP_MACHINE_BEACON_AFTER 2
#define GP_MACHINE_BEACON_GAP_US 2000000
/* A join gives up after this many failed connects, a leave after this. */
#define GP_MACHINE_JOIN_ATTEMPTS (3 * 4)
#define GP_MACHINE_LEAVE_ATTEMPTS 3
#define GP_MACHINE_ENDPOINTS_MAX 8
#define GP_MACHINE_ENDPOINT_MAX 256
/* GP_CAP_OVERLAP: the runs (gp_worker_result.run) of this many of the
 * last UPDATEs sent are remembered, for PARAM_SHARDS.updates_read. */
#define GP_MACHINE_SENT_RUNS 16

enum gp_machine_mode {
	GP_MACHINE_RUN,   /* work for the pool of the memberships */
	GP_MACHINE_JOIN,  /* the first handshake, keyed from a token */
	GP_MACHINE_LEAVE, /* say bye to cfg->pool */
};

/* What the machine asks of the world. ctx is gp_machine.ctx. */
struct gp_machine_ops {
	/* Starts a connection to endpoint ("host:port", borrowed) with the
	 * token's keys (gp_machine.token) or the pinned key of
	 * gp_machine.pool. Returns 0 when a connection is under way (it ends
	 * in on_close, after on_established or not), -EHOSTUNREACH when the
	 * name does not resolve, another negative errno otherwise. */
	int (*connect)(void *ctx, const char *endpoint);
	/* Whether the connection is established (not connecting, not
	 * closing). */
	bool (*established)(void *ctx);
	/* Sends msg (borrowed) on the connection. Returns 0 or a negative
	 * errno (-ENOTCONN: not established). */
	int (*send)(void *ctx, struct gp_msg *msg);
	/* Closes the connection; on_close follows. text is borrowed. */
	void (*close)(void *ctx, uint16_t code, const char *text);
	/* The heartbeat interval the coordinator asked for, in ms. */
	void (*set_heartbeat)(void *ctx, uint32_t ms);
	/* Calls gp_machine_connect() in ms milliseconds, replacing a retry
	 * already set; ms == 0: cancels the retry. */
	void (*retry)(void *ctx, uint64_t ms);
	/* Starts (on) or stops listening for the pool's beacons. Returns 0 or
	 * a negative errno (on only). */
	int (*beacon)(void *ctx, bool on);
	/* The session stops (gp_machine.result holds why): release timers,
	 * sockets and signals, so that the loop ends. */
	void (*stopped)(void *ctx);
	/* Something gp_machine_status() shows may have changed. */
	void (*status)(void *ctx);
	/* Writes m (borrowed) to the membership database. */
	void (*remember)(void *ctx, const struct gp_stats_membership *m);
	/* Adds d (borrowed) to the contribution statistics. */
	void (*record)(void *ctx, const struct gp_stats_delta *d);

	/* The compute thread (worker.h has what each does). worker_start
	 * stops the thread there is, if any, and starts one for spec (the
	 * model's text, borrowed), the job's seed and batch with the test
	 * hook fail_step; on failure it logs why. */
	int (*worker_start)(void *ctx, const char *spec, uint64_t seed,
			    uint32_t batch, unsigned fail_step);
	size_t (*worker_tensor_count)(void *ctx);
	const struct gp_tensor_info *(*worker_tensor)(void *ctx, size_t i);
	/* values taken */
	int (*worker_set_params)(void *ctx, enum gp_model_slot slot,
				 size_t tensor, size_t row0, size_t rows,
				 float *values);
	/* pixels (n x the model's inputs, elements of dtype, enum
	 * gp_data_dtype) and labels taken */
	int (*worker_compute)(void *ctx, uint32_t epoch, uint64_t minibatch,
			      uint64_t clock, uint32_t n, uint8_t *pixels,
			      uint8_t dtype, uint8_t *labels, float lr,
			      float mu, uint32_t group);
	/* Local AdamW steps for this session (worker.h
	 * gp_worker_set_inner; in borrowed); NULL: the agent does not ask
	 * for GP_CAP_INNER_ADAMW. */
	int (*worker_set_inner)(void *ctx, const struct gp_worker_inner *in);
	/* Parameter rows (values taken) under the work in hand (worker.h
	 * gp_worker_rebase_params): the copy keeps what its local steps did
	 * since the run numbered `ref` was cut. NULL: the agent does not
	 * ask for GP_CAP_OVERLAP. */
	int (*worker_rebase_params)(void *ctx, size_t tensor, size_t row0,
				    size_t rows, float *values, uint64_t ref);
	/* Recomputes another member's update on a scratch model (worker.h
	 * gp_worker_verify; t's arrays taken, also on failure, t
	 * borrowed); its result comes to gp_machine_on_result with verify
	 * set. NULL: the agent does not ask for GP_CAP_VERIFY. */
	int (*worker_verify)(void *ctx, struct gp_worker_verify *t);
	void (*worker_drop_queued)(void *ctx);
	uint64_t (*worker_generation)(void *ctx);
	double (*worker_flops_per_sample)(void *ctx);
	/* The model's input width (elements of a sample); NULL: 784. */
	size_t (*worker_inputs)(void *ctx);

	/* The pool's data set as shards (datacache.h has what each does);
	 * data_open NULL: the agent does not ask for GP_CAP_DATA_SHARDS.
	 * data_open returns the shards missing or a negative errno;
	 * data_put 1 when the set is complete; data_set NULL while it is
	 * not, or when its contents are invalid (why in err). */
	int (*data_open)(void *ctx, const uint8_t *manifest, size_t len);
	int64_t (*data_next)(void *ctx);
	int (*data_put)(void *ctx, uint32_t shard, const uint8_t *data,
			size_t len);
	const struct gp_dataset *(*data_set)(void *ctx, char *err,
					     size_t err_len);
	/* Shards of the set being fetched, and how many are missing. */
	void (*data_progress)(void *ctx, uint32_t *ret_shards,
			      uint32_t *ret_missing);
};

/* DATA_REQUESTs in flight at once while fetching a data set: enough to
 * keep a link busy (4 MiB with the default shards), little enough that
 * the coordinator never queues a whole data set for one agent. */
#define GP_MACHINE_DATA_WINDOW 4
/* Shards that fail their digest in one session before it is dropped. */
#define GP_MACHINE_DATA_BAD_MAX 8

/* Runs whose arrival times the machine keeps (UPDATE.held_us): more
 * than the groups a worker holds at once (two runs, each at most
 * GP_WORK_MAX minibatches in groups of up to 256; without groups only
 * the first minibatch to an idle worker is noted). A power of two: the
 * ring's index wraps with size_t. */
#define GP_MACHINE_ARRIVALS 32

struct gp_machine {
	/* Set by gp_machine_init, all borrowed. */
	const struct gp_session_config *cfg;
	const struct gp_token *token;       /* join only */
	const struct gp_dataset *data;      /* the local training set, or NULL */
	/* Or the local token file (tokens.h), for language models: set
	 * after init, borrowed. */
	const struct gp_tokens *tokens;
	/* The worker's model's samples: a language model's window of
	 * `window` token ids of a vocabulary of `vocab` (0: images). */
	uint32_t window, vocab;
	uint64_t data_fingerprint;
	enum gp_machine_mode mode;
	const struct gp_machine_ops *ops;
	void *ctx;

	/* The pool this agent works for (run: from the memberships). */
	struct gp_stats_membership pool;
	bool have_pool;
	bool members_read;        /* the memberships were read once */
	/* The connection. */
	bool connected;           /* a connection exists (until on_close) */
	bool welcomed;            /* WELCOME on the current connection */
	bool connect_now;         /* on_close: connect again at once */
	char endpoint_now[GP_MACHINE_ENDPOINT_MAX]; /* of the current attempt */
	size_t endpoint;          /* next endpoint to try */
	unsigned attempts;        /* failed connects in a row */
	uint64_t backoff_ms;      /* the last backoff base, 0: none yet */
	char last_error[128];
	/* Sessions dropped in a row because of work this agent could not do:
	 * the backoff goes on growing across them, so that a device that
	 * always fails does not churn the pool. 0 after a result is sent. */
	unsigned work_failures;
	/* Beacons. */
	bool beacon_on;
	uint64_t beacon_last_us;
	char beacon_ep[64];       /* an address a beacon gave; tried first */
	/* Pausing. */
	bool user_paused;
	int64_t pause_until;      /* unix s the user's pause ends; 0: resume */
	/* `finish`: no new work; stop once the work in hand is answered. */
	bool finishing;
	/* Finishing on a connection: the seq of the first HEARTBEAT sent
	 * after PAUSE (0: none sent); until an answer to it or a later one
	 * was heard, a MINIBATCH the coordinator sent before it read PAUSE
	 * may still be on its way (machine.c). */
	uint64_t finish_seq;
	bool finish_heard;
	uint64_t heartbeat_seq;   /* the last HEARTBEAT's seq */
	uint64_t in_hand;         /* minibatches given to the worker, unanswered */
	/* When the last GP_MACHINE_ARRIVALS runs (a group's first minibatch,
	 * or a minibatch alone) came, for UPDATE.held_us: a ring, the
	 * newest at arrival_next - 1. */
	struct gp_machine_arrival {
		uint32_t epoch;
		uint64_t minibatch;
		uint64_t at_us;       /* gp_mono_us(); 0: unused */
	} arrivals[GP_MACHINE_ARRIVALS];
	size_t arrival_next;
	enum gp_policy_verdict verdict;
	char policy_why[GP_AGENT_STATUS_TEXT_MAX];
	bool told_paused;         /* the coordinator was sent PAUSE */
	/* The job. */
	bool done;                /* BYE job-done on this connection */
	/* WELCOME job 0 (GP_CAP_JOBS): a member, connected, while the pool
	 * has no job; BYE 7 says one started. */
	bool idle;
	char spec[GP_MSG_MODEL_TEXT_MAX + 1];  /* the worker's model */
	char welcome_spec[GP_MSG_MODEL_TEXT_MAX + 1]; /* the last WELCOME's */
	uint64_t seed;            /* the worker's job seed */
	uint32_t batch;
	uint32_t caps;            /* the WELCOME's */
	/* GP_CAP_DATA_SHARDS: the data set fetched (borrowed from the
	 * ops' cache; NULL while fetching), the requests in flight and the
	 * shards refused for their digest in this session. */
	const struct gp_dataset *pool_data;
	bool fetching;
	unsigned data_inflight;
	unsigned data_bad;
	/* What the quantisation of the updates has not sent yet (GP_CAP_Q8),
	 * allocated at the first such update: for a gradient (form 0) the
	 * first feedback_values floats, for a group's sums (form 1) those
	 * (A) and the next as many (B), so that the error carried into a
	 * momentum (a gradient, A) goes on from one form to the other. A
	 * change of local AdamW steps (form 2, feedback_delta) is in other
	 * units: the error is dropped when the kind changes. A's error left
	 * in the coordinator's velocity would have moved the parameters by
	 * lr mu / (1 - mu) e; carried in a gradient it moves them by lr /
	 * (1 - mu) e, so at a group's switch to a gradient it goes on as mu e
	 * (feedback_group; momentum: the last MINIBATCH's, 0 when not in
	 * [0, 1)). */
	struct gp_feedback feedback;
	size_t feedback_values;
	bool feedback_delta;
	bool feedback_group;
	float momentum;
	/* GP_CAP_PARAM_DELTA: the parameters as last received, per tensor
	 * (rows x cols floats each, allocated at its first block; n_mirror
	 * tensors), to which a GP_DTYPE_Q8_DELTA block adds its change.
	 * Emptied at each WELCOME: a session starts with whole blocks. */
	float **mirror;
	size_t n_mirror;
	uint64_t deltas;          /* delta blocks taken, for the log */
	/* GP_CAP_OVERLAP: UPDATEs sent in this session, and the worker's
	 * run each of the last GP_MACHINE_SENT_RUNS answered (index: the
	 * UPDATE's number, counted from 1, modulo the size); pulls taken,
	 * those against a run of this session's and those that could not
	 * keep the local work, for the log. */
	uint64_t updates_sent;
	uint64_t sent_runs[GP_MACHINE_SENT_RUNS];
	uint64_t rebases, rebases_kept, rebases_lost;
	/* The compute thread. */
	bool have_worker;
	/* The worker failed a step: made anew at the next WELCOME, since a
	 * device that failed once (an OpenCL queue after CL_OUT_OF_RESOURCES)
	 * may not be trusted to go on. */
	bool worker_failed;
	bool test_fail_used;      /* cfg->test.fail_step given to a worker */
	/* Results of an earlier connection's work, dropped. */
	uint64_t stale_results;
	uint64_t minibatches;     /* computed and sent, for the status */
	/* Other members' updates recomputed and sent (VERIFY_RESULT
	 * computed): checks, not training work, so neither in minibatches
	 * nor in the contribution statistics. */
	uint64_t verifications;
	/* The job's progress and this member's credit, as the last STATS
	 * said (GP_CAP_PROGRESS); progress_at: unix s it came. */
	struct gp_msg_stats progress;
	bool have_progress;
	int64_t progress_at;
	/* The public name sent with JOIN (from cfg, then
	 * gp_machine_set_public_name). */
	char public_name[GP_MSG_PUBLIC_NAME_MAX + 1];
	/* The end. */
	bool stopping;
	int result;
	bool joined;              /* join, leave: WELCOME came */
	int64_t agent_id;
};

/* Frees what m holds (the quantisation's error feedback); m may be set up
 * again with gp_machine_init(). */
void gp_machine_finish(struct gp_machine *m);

/* Sets m up (nothing happens yet). cfg, token (join only, else NULL), data
 * (may be NULL), ops and ctx are borrowed for m's lifetime. */
void gp_machine_init(struct gp_machine *m, const struct gp_session_config *cfg,
		     const struct gp_token *token, enum gp_machine_mode mode,
		     const struct gp_dataset *data, uint64_t data_fingerprint,
		     const struct gp_machine_ops *ops, void *ctx);

/* Starts: join and leave connect at once; run waits for a membership
 * (gp_machine_on_members). */
void gp_machine_start(struct gp_machine *m);

/* Connects to the next endpoint, unless connected, stopping or without a
 * pool (the retry timer calls this). */
void gp_machine_connect(struct gp_machine *m);

/* The handshake completed: sends JOIN. */
void gp_machine_on_established(struct gp_machine *m);

/* A message (data, len borrowed) arrived on the connection. */
void gp_machine_on_message(struct gp_machine *m, const uint8_t *data,
			   size_t len);

/* The connection ended (text borrowed): decides whether to retry, and
 * when, or to stop. */
void gp_machine_on_close(struct gp_machine *m, enum gp_close_reason reason,
			 uint16_t code, const char *text);

/* The compute thread reported res (borrowed; the caller frees it). */
void gp_machine_on_result(struct gp_machine *m,
			  const struct gp_worker_result *res);

/* The memberships were read: found says whether one not left exists, mem
 * (borrowed) is the first such. */
void gp_machine_on_members(struct gp_machine *m, bool found,
			   const struct gp_stats_membership *mem);

/* The policy's verdict (why borrowed: the reason when not GP_POLICY_RUN). */
void gp_machine_on_policy(struct gp_machine *m, enum gp_policy_verdict verdict,
			  const char *why);

/* The volunteer paused (true) or resumed (false). */
void gp_machine_set_user_paused(struct gp_machine *m, bool paused);

/* The volunteer's `finish`: no new work (PAUSE), and the agent stops
 * (result 0) once every minibatch it holds is answered: at once when it
 * holds none or is not connected. */
void gp_machine_drain(struct gp_machine *m);

/* A beacon with the pool key key (32 bytes, borrowed) named endpoint ep
 * (borrowed) at monotonic time now_us. */
void gp_machine_on_beacon(struct gp_machine *m, const uint8_t *key,
			  const char *ep, uint64_t now_us);

/* Stops the session with result (0 or a negative errno). */
void gp_machine_stop(struct gp_machine *m, int result);

/* The volunteer set (name, borrowed, checked by the caller) or withdrew
 * ("") the public name: kept for the next JOIN and sent at once as a
 * PROFILE when the coordinator takes it (GP_CAP_PROGRESS). */
void gp_machine_set_public_name(struct gp_machine *m, const char *name);

/* Whether computing is paused (by the volunteer or the policy). */
bool gp_machine_paused(const struct gp_machine *m);

/* The state to publish: fills st's state, reason, pool, endpoint, device
 * and minibatches; leaves since and pid alone. */
void gp_machine_status(const struct gp_machine *m, struct gp_agent_status *st);

/* Splits a comma-separated endpoint list into out (max entries); returns
 * how many. Entries longer than GP_MACHINE_ENDPOINT_MAX - 1 are skipped. */
size_t gp_machine_split_endpoints(const char *list,
				  char out[][GP_MACHINE_ENDPOINT_MAX],
				  size_t max);

#endif
