/* The coordinator's ledger: one SQLite database (WAL) holding the agents,
 * invite tokens, jobs, the update log, hostile-input rejections, epoch
 * evaluations and checkpoints. docs/architecture.md ("Ledger") describes the
 * schema table by table.
 *
 * Threads. Every function is safe to call from any thread: a mutex guards
 * the connection. All of them may block on the disk (and wait for a flush
 * or a checkpoint that holds the connection), so the coordinator calls them
 * from a worker thread, except the few a handshake or a JOIN must answer
 * from (serve.c on_verify, serve-join.c) and these, which never touch
 * SQLite and only take a short in-memory lock:
 * gp_ledger_update_append(), gp_ledger_rejection_append(), the agent
 * notes (gp_ledger_agent_connected_append(),
 * gp_ledger_agent_link_append()) and gp_ledger_flush_due(). Those buffer
 * rows that gp_ledger_flush() later writes in one transaction, so that the
 * update log costs one commit per batch rather than one fsync per
 * gradient.
 *
 * Times are Unix times in milliseconds (UTC), given by the caller so that
 * tests are deterministic; 0 means "never" or "none" where a time may be
 * absent (expiry, revocation). Ids are positive. */
#ifndef GP_LEDGER_H
#define GP_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gp_ledger;

#define GP_LEDGER_KEY_SIZE 32	     /* X25519 public key */
#define GP_LEDGER_HASH_SIZE 32	     /* keyed hash of a token secret */
#define GP_LEDGER_NAME_MAX 64	     /* agent names, token labels, with NUL */
#define GP_LEDGER_FINGERPRINT_MAX 32 /* with NUL */
#define GP_LEDGER_REASON_MAX 96	     /* update/rejection reasons, with NUL */
#define GP_LEDGER_DEVICES_MAX 16
/* Rows buffered by the append functions before they refuse (-ENOBUFS): a
 * writer that far behind has a problem that more memory will not fix. */
#define GP_LEDGER_BUFFER_MAX (1u << 20)

enum gp_ledger_flags {
	GP_LEDGER_CREATE = 1u << 0,   /* create or initialise if absent */
	GP_LEDGER_READONLY = 1u << 1, /* a second process (the CLI) reading */
	GP_LEDGER_CHECK = 1u << 2,    /* PRAGMA quick_check when opening */
	/* gp_coord_state_open only: no message when a read-only open finds
	 * an older schema (-EROFS), for a caller that then opens it
	 * read-write to upgrade it. */
	GP_LEDGER_QUIET_OLD = 1u << 3,
};

/* Opens (and creates or migrates) the ledger at path. A file that is not a
 * gradpool ledger, is truncated or corrupt, or has a newer schema is refused
 * without a single byte written to it. On success *ret is owned by the
 * caller (gp_ledger_close). On failure err (borrowed, errlen bytes, may be
 * NULL) holds one sentence naming the file and the problem. Returns 0,
 * -ENOENT, -EBADMSG, -ENOTSUP (newer schema), -EROFS (read-only and an
 * older schema), -EBUSY or another negative errno. */
int gp_ledger_open(const char *path, unsigned flags, struct gp_ledger **ret,
		   char *err, size_t errlen);

/* Flushes buffered rows (a failure is lost: call gp_ledger_flush first when
 * it matters), closes and frees. NULL is a no-op. */
void gp_ledger_close(struct gp_ledger *l);

/* The message of the last failure on this ledger (owned by l, valid until
 * the next call on l from any thread). Never NULL. */
const char *gp_ledger_error(struct gp_ledger *l);

/* Copies the message of the last failure into buf (borrowed, size bytes,
 * NUL-terminated, cut to fit), under the lock that guards it: for a thread
 * other than the one that may make the next call on l, where the pointer
 * gp_ledger_error() returns could be rewritten while it is read. */
void gp_ledger_error_copy(struct gp_ledger *l, char *buf, size_t size);

/* Runs PRAGMA integrity_check. Returns 0 when healthy, -EBADMSG with SQLite's
 * first complaint in gp_ledger_error() otherwise. */
int gp_ledger_check(struct gp_ledger *l);

/* Meta: small key/value strings (e.g. "token_key_id"). get copies the value
 * into buf (size bytes) and returns its length, -ENOENT when absent or
 * -ERANGE when buf is too small. */
int gp_ledger_meta_set(struct gp_ledger *l, const char *key,
		       const char *value);
int gp_ledger_meta_get(struct gp_ledger *l, const char *key, char *buf,
		       size_t size);

/* ---- agents ------------------------------------------------------------ */

struct gp_ledger_device {
	char kind[16];	/* "cpu", "opencl" */
	char name[GP_LEDGER_NAME_MAX];
	double gflops;	/* measured by the agent's start-up benchmark */
	double samples_per_s;
};

struct gp_ledger_agent {
	int64_t id;
	char name[GP_LEDGER_NAME_MAX];
	uint8_t public_key[GP_LEDGER_KEY_SIZE];
	char fingerprint[GP_LEDGER_FINGERPRINT_MAX];
	int64_t token_id; /* the token it joined with; 0 if none */
	int64_t joined_at, last_seen, revoked_at;
	int64_t left_at;     /* it said it leaves (BYE 0); 0: a member */
	int64_t connections; /* serve's connections to it now (see below) */
	size_t n_devices;
	struct gp_ledger_device devices[GP_LEDGER_DEVICES_MAX];
};

/* Joins an agent with an invite token, all or nothing, in one transaction:
 * the token's use counter goes up only if the token exists, is not revoked,
 * not expired at now and has uses left, and the agent row (agent->name,
 * public_key, fingerprint, devices; borrowed) is inserted in the same
 * transaction. The caller has already checked the token secret (the Noise
 * psk handshake does). An agent whose key is already a live member is not
 * inserted again and consumes no use: it gets its id back and return 1
 * (its join reply was probably lost). Returns 0 (new member) or 1, with
 * *ret_id set, or: -ENOENT (no such token), -EKEYREVOKED (token or agent
 * revoked), -EKEYEXPIRED (token expired), -EKEYREJECTED (no uses left),
 * -EBUSY, or another negative errno; gp_ledger_error() says which. */
int gp_ledger_join(struct gp_ledger *l, int64_t token_id,
		   const struct gp_ledger_agent *agent, int64_t now,
		   int64_t *ret_id);

/* Looks an agent up by public key (borrowed, GP_LEDGER_KEY_SIZE bytes) or by
 * id and copies it into *ret (caller's storage). Returns 0 or -ENOENT. A
 * revoked agent is found (check revoked_at). */
int gp_ledger_agent_by_key(struct gp_ledger *l, const uint8_t *public_key,
			   struct gp_ledger_agent *ret);
int gp_ledger_agent_get(struct gp_ledger *l, int64_t id,
			struct gp_ledger_agent *ret);

/* Marks an agent revoked at `at`. Returns 0, or -ENOENT. Revoking twice
 * keeps the first time. */
int gp_ledger_agent_revoke(struct gp_ledger *l, int64_t id, int64_t at);

/* Every revoked agent's id, ascending, into *ret_ids (malloc'd, the
 * caller frees; NULL when none) and *ret_n: one query, for serve's check
 * of its members (not filtered by the connection count: between jobs the
 * update log's notes wait unflushed). Returns 0 or a negative errno. */
int gp_ledger_agents_revoked(struct gp_ledger *l, int64_t **ret_ids,
			     size_t *ret_n);

/* Sets every agent's connection count to 0: serve calls it when it starts,
 * since a serve that was killed could not count its connections down. */
int gp_ledger_agents_disconnected(struct gp_ledger *l);

/* Replaces the agent's device list (n entries, borrowed). */
int gp_ledger_agent_set_devices(struct gp_ledger *l, int64_t id,
				const struct gp_ledger_device *devices,
				size_t n);

/* An agent with its contribution totals, for the CLI's "agents" command. */
struct gp_ledger_agent_row {
	struct gp_ledger_agent agent;
	int64_t updates_applied;
	int64_t samples_applied;
	int64_t updates_discarded; /* duplicate or late */
	int64_t updates_rejected;
	int64_t rejections; /* rows in the rejections table */
	int64_t last_clock; /* highest clock logged; -1 if none */
	int64_t last_update_at;
	int64_t updates_rolled_back; /* applied, then undone by a restore */
	/* The link as last measured (gp_ledger_agent_link_append): bytes per
	 * second, the pool's sync interval then, and when; 0: never. */
	double link_bps;
	double sync_ms;
	int64_t link_at;
	/* Verification by recomputation (agent_trust): updates found right,
	 * found wrong, and applied updates taken back for it. */
	int64_t verified;
	int64_t mismatched;
	int64_t trust_rolled_back;
};

/* Lists every agent (job_id 0) or the totals within one job. Applied
 * counts leave out the rows a restore rolled back (their minibatches were
 * redone). On success
 * *ret_rows is a malloc'd array owned by the caller (free()) and *ret_n its
 * length (possibly 0, with *ret_rows NULL). */
int gp_ledger_agent_list(struct gp_ledger *l, int64_t job_id,
			 struct gp_ledger_agent_row **ret_rows, size_t *ret_n);

/* ---- credit (ledger-credit.c) ------------------------------------------ */

/* A public name with its NUL (GP_MSG_PUBLIC_NAME_MAX + 1). */
#define GP_LEDGER_PUBLIC_NAME_MAX 65

/* The one rule of what earns credit, as an SQL condition on a row of the
 * update log: an update the pool applied and nothing took back (neither a
 * restore nor verification after a mismatch, gp_ledger_rollback_minibatches:
 * both set rolled_back). The triggers of schema step 7 (credit_add, credit_undo) keep the credit
 * table equal to the log's totals under this rule, in the transaction
 * that writes or rolls back the rows; gp_ledger_credit_check() compares
 * (and rebuilds) with it. Changing it, e.g. to count only updates that
 * verification by recomputation confirmed rather than those it did not
 * refute, means changing
 * this condition AND adding a schema step that recreates the triggers to
 * match (with a trigger on the verdict's column), then calling
 * gp_ledger_credit_check(l, true, ...) once. */
#define GP_LEDGER_CREDIT_RULE "outcome = 'applied' AND rolled_back = 0"

/* Sets (name a valid public name, borrowed) or clears (name NULL or "")
 * the name agent id lets the pool publish with its credit. The caller
 * checks the name (gp_msg_public_name_check()). Returns 0 or -ENOENT. */
int gp_ledger_agent_set_public_name(struct gp_ledger *l, int64_t id,
				    const char *name);

/* One member's credited work in one job (job_id 0, updates and samples 0:
 * a member without any). */
struct gp_ledger_credit_row {
	int64_t agent_id;
	char name[GP_LEDGER_NAME_MAX];
	char public_name[GP_LEDGER_PUBLIC_NAME_MAX]; /* "": not public */
	char fingerprint[GP_LEDGER_FINGERPRINT_MAX];
	int64_t joined_at, revoked_at;
	int64_t job_id;
	int64_t updates; /* applied minibatches that count */
	int64_t samples;
};

/* Lists the credit of every member (agent_id 0) or of one, a row per
 * member and job, by member then job; an indexed read of the credit
 * table, never of the update log. On success *ret_rows is malloc'd and
 * owned by the caller (free()), *ret_n its length. Returns 0 or a negative
 * errno. */
int gp_ledger_credit_list(struct gp_ledger *l, int64_t agent_id,
			  struct gp_ledger_credit_row **ret_rows,
			  size_t *ret_n);

/* Compares the credit table with the update log's totals under
 * GP_LEDGER_CREDIT_RULE (a full scan: for checks, not for requests) and
 * writes the (member, job) pairs that differ into *ret_mismatched; with
 * fix, rebuilds the table from the log in one transaction. Returns 0 or a
 * negative errno. */
int gp_ledger_credit_check(struct gp_ledger *l, bool fix,
			   int64_t *ret_mismatched);

/* ---- trust (coordinator/verify.c) -------------------------------------- */

/* Adds to the member's verification record (agent_trust): updates
 * recomputed and found right (verified) or wrong (mismatched), and
 * applied updates taken back (rolled_back), at `at` (ms). Returns 0 or a
 * negative errno. Thread-safe. */
int gp_ledger_trust_add(struct gp_ledger *l, int64_t agent_id,
			int64_t verified, int64_t mismatched,
			int64_t rolled_back, int64_t at);

/* A member's mismatches on record (agent_trust.mismatched). */
struct gp_ledger_mismatches {
	int64_t agent_id;
	int64_t mismatched;
};

/* Every member not revoked with at least one mismatch on record, in id
 * order: what verification starts from (gp_verify_restore), so that a
 * restart of the coordinator does not give a member that mismatched a
 * fresh count against verify_bans. On success *ret_rows is a malloc'd
 * array owned by the caller (free()), NULL when there is none, and *ret_n
 * its length. Returns 0 or a negative errno. */
int gp_ledger_trust_mismatches(struct gp_ledger *l,
			       struct gp_ledger_mismatches **ret_rows,
			       size_t *ret_n);

/* Marks the agent's applied rows for the minibatches pairs[2i] (epoch),
 * pairs[2i + 1] (index in the epoch), i < n (borrowed), as rolled back:
 * rolled_back is set to the row id of the first pair's (the mismatched
 * update's first minibatch). Flushes the buffer first. Returns the rows
 * marked, or a negative errno. */
int64_t gp_ledger_rollback_minibatches(struct gp_ledger *l, int64_t job_id,
				       int64_t agent_id,
				       const int64_t *pairs, size_t n);

/* ---- invite tokens ----------------------------------------------------- */

/* Token ids on the wire are 8 random bytes (proto/token.h); the ledger keys
 * them as the int64 those bytes spell little-endian (negative values
 * included). These two convert. */
#define GP_LEDGER_TOKEN_ID_SIZE 8
int64_t gp_ledger_token_id_from_bytes(const uint8_t id[GP_LEDGER_TOKEN_ID_SIZE]);
void gp_ledger_token_id_to_bytes(int64_t id,
				 uint8_t ret[GP_LEDGER_TOKEN_ID_SIZE]);

struct gp_ledger_token {
	int64_t id; /* 0 when inserting: the ledger picks one */
	char label[GP_LEDGER_NAME_MAX];
	uint8_t secret_hash[GP_LEDGER_HASH_SIZE]; /* keyed hash, never the secret */
	int64_t created_at;
	int64_t expires_at; /* 0: never */
	int64_t max_uses;   /* 0: unlimited */
	int64_t uses;
	int64_t revoked_at; /* 0: live */
};

/* Stores a token (borrowed). token->id 0 lets the ledger choose (a small
 * positive id); any other id is used as given, and one that exists is
 * -EEXIST. uses is stored as given (normally 0). Returns 0
 * with *ret_id set. */
int gp_ledger_token_insert(struct gp_ledger *l,
			   const struct gp_ledger_token *token,
			   int64_t *ret_id);

/* Copies token id into *ret. Returns 0 or -ENOENT. */
int gp_ledger_token_get(struct gp_ledger *l, int64_t id,
			struct gp_ledger_token *ret);

/* Revokes a token at `at`. Returns 0 or -ENOENT. */
int gp_ledger_token_revoke(struct gp_ledger *l, int64_t id, int64_t at);

/* All tokens, oldest first: *ret_tokens malloc'd, owned by the caller. */
int gp_ledger_token_list(struct gp_ledger *l,
			 struct gp_ledger_token **ret_tokens, size_t *ret_n);

/* ---- jobs -------------------------------------------------------------- */

enum gp_ledger_job_state {
	GP_JOB_CREATED = 0,
	GP_JOB_RUNNING = 1,
	GP_JOB_DONE = 2,
	GP_JOB_FAILED = 3,
	GP_JOB_QUEUED = 4,    /* waiting its turn (job add) */
	GP_JOB_CANCELLED = 5, /* by the owner (job cancel); its model stays */
};

/* The longest job file path the ledger keeps for the owner's lists. */
#define GP_LEDGER_SOURCE_MAX 512

struct gp_ledger_job {
	int64_t id;
	char *spec; /* the job file text; owned by the struct */
	/* The model it trains in canonical text (gp_model_spec_format():
	 * the shorthand, or a one-line "gradpool-model 1" description);
	 * "" for a job recorded before the ledger kept models. Owned by the
	 * struct. */
	char *model;
	enum gp_ledger_job_state state;
	int64_t created_at;
	int64_t updated_at;
	char source[GP_LEDGER_SOURCE_MAX]; /* its job file; "" if unknown */
	int64_t epochs;                    /* 0 until serve recorded it */
};

/* Creates a job from its job-file text (borrowed). Returns 0, *ret_id set. */
int gp_ledger_job_create(struct gp_ledger *l, const char *spec, int64_t now,
			 int64_t *ret_id);

/* Fills *ret; ret->spec and ret->model are malloc'd (gp_ledger_job_finish
 * frees them). id 0 means the most recently created job. Returns 0 or
 * -ENOENT. */
int gp_ledger_job_get(struct gp_ledger *l, int64_t id,
		      struct gp_ledger_job *ret);
void gp_ledger_job_finish(struct gp_ledger_job *job);

/* Queues a job (state 'queued'): its job-file text, its model in
 * canonical text and the file it came from (all borrowed). serve starts
 * queued jobs in id order. Returns 0, *ret_id set. */
int gp_ledger_job_queue(struct gp_ledger *l, const char *spec,
			const char *model, const char *source, int64_t now,
			int64_t *ret_id);

/* Records the job file job id came from (borrowed). Returns 0. */
int gp_ledger_job_set_source(struct gp_ledger *l, int64_t id,
			     const char *source);

/* The job serve takes next: one left 'running' (its serve was stopped or
 * killed), else the oldest 'queued'. Returns 0 with *ret_id, -ENOENT when
 * there is none, or a negative errno. */
int gp_ledger_job_next(struct gp_ledger *l, int64_t *ret_id);

/* The newest job of this job-file text and model (both borrowed), in any
 * state. Returns 0 with *ret_id, or -ENOENT. */
int gp_ledger_job_find(struct gp_ledger *l, const char *spec,
		       const char *model, int64_t *ret_id);

/* Cancels job id if it is queued, created or running (a running job is
 * stopped by its serve within a second: serve reads the state on its
 * tick). *ret_was (may be NULL) gets the state it had. Returns 0,
 * -ENOENT, -EALREADY (done, failed or cancelled already) or -EAGAIN (it
 * changed state meanwhile). */
int gp_ledger_job_cancel(struct gp_ledger *l, int64_t id, int64_t now,
			 enum gp_ledger_job_state *ret_was);

/* One job for the owner's lists (job list, the owner's page). */
struct gp_ledger_job_row {
	int64_t id;
	enum gp_ledger_job_state state;
	int64_t created_at, updated_at;
	int64_t epochs, minibatches_per_epoch; /* 0 until recorded */
	char source[GP_LEDGER_SOURCE_MAX];
	char model[256];        /* canonical model text, truncated */
	int64_t updates_applied, samples_applied; /* that count */
	int64_t eval_epochs;    /* evaluations recorded */
	double test_accuracy, test_loss; /* the newest; NaN if none */
	int64_t checkpoints;
};

/* Every job, in id order: *ret malloc'd, owned by the caller. Returns 0
 * or a negative errno. */
int gp_ledger_job_list(struct gp_ledger *l, struct gp_ledger_job_row **ret,
		       size_t *ret_n);

/* Throughput over time: the applied updates that count of one job in
 * time buckets from its first applied update to its last. */
struct gp_ledger_rate {
	int64_t at;          /* the bucket's start, Unix ms */
	int64_t samples, updates;
};

/* Fills *ret (malloc'd, owned by the caller; NULL and 0 when nothing was
 * applied) with at most max_buckets (> 0) buckets of equal length, at
 * least 1 s (*ret_bucket_ms), empty ones included. Returns 0 or a
 * negative errno. */
int gp_ledger_job_rate(struct gp_ledger *l, int64_t job_id,
		       size_t max_buckets, struct gp_ledger_rate **ret,
		       size_t *ret_n, int64_t *ret_bucket_ms);

/* What robust aggregation did to each agent's applied updates in one
 * job: those it damped (reason "damped W"), by agent. */
struct gp_ledger_damped {
	int64_t agent_id;
	int64_t damped;
};

/* *ret malloc'd, owned by the caller; agents with none are left out.
 * Returns 0 or a negative errno. */
int gp_ledger_job_damped(struct gp_ledger *l, int64_t job_id,
			 struct gp_ledger_damped **ret, size_t *ret_n);

/* Records the job's size once serve has built its schedule: epochs,
 * minibatches in an epoch and samples in an epoch (all > 0), for status's
 * progress and ETA. Returns 0, -EINVAL or -ENOENT. */
int gp_ledger_job_set_size(struct gp_ledger *l, int64_t id, int64_t epochs,
			   int64_t minibatches_per_epoch,
			   int64_t samples_per_epoch);

/* Records the model job id trains, in canonical text (borrowed, as
 * gp_model_spec_format() writes it). The coordinator sets it when it
 * creates or resumes the job. Returns 0 or -ENOENT. */
int gp_ledger_job_set_model(struct gp_ledger *l, int64_t id,
			    const char *model);

/* The model job id (0: the newest job) trains, in canonical text: what
 * gp_model_spec_parse() turns back into the exact graph, the shorthand
 * ("784-256-128-10") or a one-line "gradpool-model 1" description. On
 * success *ret_model is malloc'd, owned by the caller. Returns 0, -ENOENT
 * for no such job, or -ENODATA for a job recorded before the ledger kept
 * models (its job text's [model] spec is then the model; the coordinator
 * fills the column in when it resumes such a job). Checkpoints carry the
 * same text (GP_CKPT_MODEL), for the parameters they hold. */
int gp_ledger_job_model(struct gp_ledger *l, int64_t id, char **ret_model);

/* Moves job id to state, unless it is in a final state (done, failed,
 * cancelled: say by `job cancel` meanwhile), which it keeps: -EALREADY.
 * Returns 0, -EALREADY, -ENOENT for no such job, or a negative errno. */
int gp_ledger_job_set_state(struct gp_ledger *l, int64_t id,
			    enum gp_ledger_job_state state, int64_t now);

/* Returns the state's name ("created", "queued", "running", "done",
 * "failed", "cancelled"). */
const char *gp_ledger_job_state_name(enum gp_ledger_job_state state);

/* ---- update log (buffered) --------------------------------------------- */

enum gp_ledger_outcome {
	GP_UPDATE_APPLIED = 0,
	GP_UPDATE_DUPLICATE = 1, /* minibatch already applied this epoch */
	GP_UPDATE_LATE = 2,	 /* beyond the staleness bound, or job moved on */
	GP_UPDATE_REJECTED = 3,	 /* bad shape, NaN/Inf, absurd norm ... */
};

struct gp_ledger_update {
	int64_t job_id, agent_id;
	int64_t clock, epoch, minibatch, samples;
	double loss, grad_norm;
	int64_t staleness; /* server clock minus the clock computed against */
	int64_t received_at, applied_at; /* applied_at 0 if not applied */
	enum gp_ledger_outcome outcome;
	char reason[GP_LEDGER_REASON_MAX]; /* applied: empty, or "damped W" */
};

/* Hostile or broken input from an agent, for accounting and penalties. */
struct gp_ledger_rejection {
	int64_t agent_id; /* 0: not yet identified */
	char kind[24];	  /* "nan", "shape", "norm", "frame", "handshake" ... */
	char reason[GP_LEDGER_REASON_MAX];
	int64_t at;
};

/* Copies a row (borrowed) into the in-memory buffer; no SQLite, safe on the
 * loop thread. Returns 1 when a flush is due (the buffer holds flush_rows
 * rows, or its oldest row is older than flush_ms at the row's time), 0
 * otherwise, -ENOBUFS when GP_LEDGER_BUFFER_MAX rows are already waiting,
 * -EROFS on a read-only ledger. */
int gp_ledger_update_append(struct gp_ledger *l,
			    const struct gp_ledger_update *u);
int gp_ledger_rejection_append(struct gp_ledger *l,
			       const struct gp_ledger_rejection *r);

/* Changes to an agent's row, made by serve's loop thread: buffered with the
 * update log and written by the same flush, in the order they were made,
 * so that 10,000 members' joins, closes and link figures never wait on
 * SQLite (or on a flush or checkpoint holding the connection) on the loop.
 * The owner's `agents` sees them within a flush interval; a serve that is
 * killed loses what was not flushed (it counts every connection down when
 * it starts again). A change to an agent that does not exist changes
 * nothing. Each returns as gp_ledger_update_append.
 *
 * connected: counts a connection of the agent that serve accepted
 * (delta > 0: it joined; clears left_at) or closed (delta <= 0), and
 * records last_seen = at. A count, not a flag, because a new connection
 * may replace an old one before the old one's close is seen.
 *
 * left: marks the agent as having left the pool at `at` (it said BYE with
 * reason 0, "the volunteer left the pool"); at 0 clears the mark. A member
 * that left stays a member: its key may connect again, which clears the
 * mark.
 *
 * link: the agent's link as the coordinator measured it at `at` (link_bps:
 * bytes per second of its waiting on the wire) and the pool's sync
 * interval then (ms), replacing what was recorded; -EINVAL for a
 * non-finite value. */
int gp_ledger_agent_connected_append(struct gp_ledger *l, int64_t id,
				     int delta, int64_t at);
int gp_ledger_agent_left_append(struct gp_ledger *l, int64_t id, int64_t at);
int gp_ledger_agent_link_append(struct gp_ledger *l, int64_t id,
				double link_bps, double sync_ms, int64_t at);

/* Sets the flush thresholds (defaults: 256 rows, 1000 ms). */
void gp_ledger_set_batching(struct gp_ledger *l, size_t flush_rows,
			    int64_t flush_ms);

/* Returns true when buffered rows should be flushed at time now. */
bool gp_ledger_flush_due(struct gp_ledger *l, int64_t now);

/* Writes every buffered row in one transaction. On failure the rows stay
 * buffered (ahead of newer ones) for the next try. Returns the number of
 * rows written, or a negative errno. */
int gp_ledger_flush(struct gp_ledger *l);

/* Rows buffered and not yet written. */
size_t gp_ledger_pending(struct gp_ledger *l);

/* Returns true when n more rows fit in the buffer (GP_LEDGER_BUFFER_MAX),
 * so that the caller can refuse work whose row would be refused rather
 * than do it unlogged. Only a flush failing for long fills the buffer. */
bool gp_ledger_update_room(struct gp_ledger *l, size_t n);

/* ---- evaluations ------------------------------------------------------- */

struct gp_ledger_eval {
	int64_t job_id, epoch;
	double test_loss, test_accuracy;
	int64_t at;
};

int gp_ledger_eval_add(struct gp_ledger *l, const struct gp_ledger_eval *e);

/* Evaluations of one job by epoch: *ret malloc'd, owned by the caller. */
int gp_ledger_eval_list(struct gp_ledger *l, int64_t job_id,
			struct gp_ledger_eval **ret, size_t *ret_n);

/* ---- checkpoints ------------------------------------------------------- */

struct gp_ledger_checkpoint {
	int64_t job_id;
	int64_t seq; /* 1, 2, ... per job; set by the ledger */
	int64_t created_at;
	int64_t epoch;
	int64_t clock; /* the server clock it captures */
	uint8_t *blob; /* a coordinator/checkpoint.h container */
	size_t len;
};

/* Writes a checkpoint (blob borrowed: a checkpoint.h container, checked
 * before it is stored) in one transaction that also writes every buffered
 * update-log row, so that the log holds at least what the checkpoint
 * includes, and deletes all but the newest keep (>= 1) checkpoints of the
 * job. Returns 0 with *ret_seq (may be NULL) set. */
int gp_ledger_checkpoint_write(struct gp_ledger *l, int64_t job_id,
			       int64_t epoch, int64_t clock, int64_t now,
			       const uint8_t *blob, size_t len, unsigned keep,
			       int64_t *ret_seq);

/* Loads the newest checkpoint of a job whose blob decodes; a damaged newer
 * one is skipped (and counted in *ret_skipped, may be NULL). ret->blob is
 * malloc'd, owned by the caller (gp_ledger_checkpoint_finish). Returns 0,
 * -ENOENT (none, or none intact), or another negative errno. */
int gp_ledger_checkpoint_load_latest(struct gp_ledger *l, int64_t job_id,
				     struct gp_ledger_checkpoint *ret,
				     unsigned *ret_skipped);
void gp_ledger_checkpoint_finish(struct gp_ledger_checkpoint *c);

/* A stored checkpoint's row without its blob, for listings. */
struct gp_ledger_checkpoint_info {
	int64_t seq, created_at, epoch, clock;
	int64_t size; /* bytes of the blob */
};

/* Lists the checkpoints of a job, newest first: *ret malloc'd, owned by the
 * caller (free()), NULL when there is none; *ret_n its length. Blobs are
 * neither read nor checked. Returns 0 or a negative errno. */
int gp_ledger_checkpoint_list(struct gp_ledger *l, int64_t job_id,
			      struct gp_ledger_checkpoint_info **ret,
			      size_t *ret_n);

/* Loads checkpoint seq of a job as stored, damaged or not (the caller
 * decodes it, so that it can say what is wrong): ret->blob is malloc'd,
 * owned by the caller (gp_ledger_checkpoint_finish). Returns 0, -ENOENT
 * (no such checkpoint) or another negative errno. */
int gp_ledger_checkpoint_load(struct gp_ledger *l, int64_t job_id,
			      int64_t seq, struct gp_ledger_checkpoint *ret);

/* Number of checkpoints stored for a job. */
int gp_ledger_checkpoint_count(struct gp_ledger *l, int64_t job_id);

/* ---- status ------------------------------------------------------------ */

/* Applied counts are of the updates that count: a restore's rolled-back
 * rows are left out (and counted in updates_rolled_back). */
struct gp_ledger_status {
	int64_t job_id;
	enum gp_ledger_job_state state;
	int64_t created_at;
	/* The job's size (gp_ledger_job_set_size); 0 when not recorded. */
	int64_t epochs, minibatches_per_epoch, samples_per_epoch;
	int64_t epoch;		   /* highest epoch with an applied update, 0-based */
	int64_t minibatches_in_epoch; /* distinct minibatches applied in it */
	int64_t updates_applied;   /* whole job */
	int64_t samples_applied;
	int64_t updates_discarded; /* duplicate + late */
	int64_t updates_rejected;
	int64_t updates_rolled_back;
	int64_t live_agents; /* members: neither revoked nor left */
	int64_t connected_agents; /* with a connection counted (see above) */
	int64_t last_checkpoint_seq, last_checkpoint_at; /* 0 if none */
	bool have_eval;
	struct gp_ledger_eval last_eval;
};

/* Job progress for "status" (job_id 0: the newest job). Returns 0 or
 * -ENOENT. Per-agent last clocks come from gp_ledger_agent_list(). */
int gp_ledger_status(struct gp_ledger *l, int64_t job_id,
		     struct gp_ledger_status *ret);

/* The applied updates that count (not rolled back) of a job whose
 * applied_at lies in [from, to): their number and their samples. */
int gp_ledger_applied_between(struct gp_ledger *l, int64_t job_id,
			      int64_t from, int64_t to, int64_t *ret_samples,
			      int64_t *ret_minibatches);

/* After a restore from checkpoint seq (> 0) of job_id whose parameters
 * hold `keep` applied updates: marks every applied update of the job past
 * the first `keep` in log order (rows already rolled back not counted) as
 * rolled back to seq (column rolled_back), since their minibatches are
 * redone. Flushes buffered rows first. The update log is written in the
 * order updates are applied, and a checkpoint is written together with
 * every row logged before it, so the first `keep` rows are exactly the
 * checkpoint's. Returns the number of rows marked, or a negative errno. */
int64_t gp_ledger_rollback_after(struct gp_ledger *l, int64_t job_id,
				 int64_t seq, uint64_t keep);

/* Number of rows in the update log of a job (0: all jobs). */
int64_t gp_ledger_update_count(struct gp_ledger *l, int64_t job_id);

#endif
