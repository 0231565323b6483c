/* The job file: what `gradpool-coordinator serve` trains, an INI file read
 * with inih. Every key, its default and its range:
 *
 *   [model]                   exactly one of spec and file:
 *   spec = 784-256-128-10     layer widths, input first (2..16 layers of
 *                             1..65536 units; the coordinator builds
 *                             dense+ReLU layers and a softmax loss)
 *   file = cnn.model          a "gradpool-model 1" description
 *                             (docs/models.md), relative to the job
 *                             file's directory; read when the job starts
 *   seed = 1                  parameter initialisation seed
 *   [data]
 *   set = fashion-mnist       data set name ([a-z0-9-], at most 31 chars)
 *   format = idx              idx (Fashion-MNIST's IDX files in dir) or
 *                             npy (the four files below)
 *   dir = GP_DATA_DIR_DEFAULT  where the IDX files are
 *   train_images =            npy: the training images (N x C x H x W,
 *                             N x H x W or N x F; uint8 or float32), a
 *                             path relative to the job file's directory
 *   train_labels =            npy: their labels (N integers, 0..255)
 *   test_images =             npy: the test set, with test_labels; or
 *   test_labels =             instead
 *   test_share = 0            npy: hold out this share of the training
 *                             files as the test set, drawn with [model]
 *                             seed (0: off; else 0.001..0.5)
 *   [train]
 *   epochs = 5                1..100000
 *   batch_size = 64           1..65536
 *   staleness = 3             SSP bound s: 0 is BSP; 0..1000000
 *   optimizer = sgd-momentum  sgd | sgd-momentum | adamw (optim.h: one
 *                             AdamW step a minibatch on the coordinator;
 *                             agents take no local steps and send no
 *                             groups, unless inner_optimizer = adamw)
 *   learning_rate = 0.05      (0, 10]; the peak of the schedule
 *   lr_schedule = cosine      cosine | constant: cosine decays the rate to
 *                             0 over the job's minibatches (by minibatch
 *                             id, so agent and coordinator agree)
 *   warmup_epochs = 0.1       linear ramp from 0 over this many epochs
 *                             (0..epochs, fractions allowed)
 *   staleness_scaling = true  scale each gradient by k / (k + u), k the
 *                             agent's minibatches in its clock and u the
 *                             other agents' updates applied since its pull
 *   momentum = 0.9            [0, 1)
 *   weight_decay = 0          [0, 1); with adamw its decoupled decay
 *   beta1 = 0.9               adamw: [0, 1)
 *   beta2 = 0.999             adamw: [0, 1)
 *   eps = 1e-8                adamw: (0, 0.1]
 *   group_updates = true      an agent answers a clock's minibatches with
 *                             one update of their momentum sums (agents
 *                             that can; not with weight_decay)
 *   inner_optimizer = none    none | adamw (optimizer = adamw only):
 *                             agents that can (GP_CAP_INNER_ADAMW) take
 *                             their local steps with their own AdamW
 *                             (the job's betas, eps, weight_decay and
 *                             clip_grad_norm; moments from zero each
 *                             session) and send each run's parameter
 *                             change, which the coordinator subtracts
 *                             (DiLoCo's inner optimiser; params.h
 *                             gp_params_apply_delta); the others keep the
 *                             coordinator's AdamW step a minibatch
 *   outer_optimizer = none    none | nesterov: the coordinator applies
 *                             each run's change (the k local steps an
 *                             update's sums replay, or a delta) through
 *                             an outer Nesterov momentum, as DiLoCo does
 *                             (params.h); sgd, sgd-momentum or adamw with
 *                             inner_optimizer = adamw, and with
 *                             verify_rate = 0 (verification's rollback
 *                             does not model the outer momentum)
 *   outer_lr = 1              nesterov: the outer rate, (0, 10]
 *   outer_momentum = 0.3      nesterov: the outer momentum, 0..0.999
 *                             (DiLoCo's 0.7 and 0.9 diverged here)
 *   checkpoint_interval = 30s a duration (ms, s, m, h: 1s..1d) or a
 *                             count such as "500 minibatches"
 *   checkpoint_keep = 3       checkpoints kept in the ledger, 1..1000
 *   eval = true               evaluate on the test set after each epoch
 *   eval_every = 0            also every N applied minibatches (0: off),
 *                             printing the time the parameters were taken
 *   [pool]
 *   listen = 127.0.0.1:7100   host:port (IPv6 as [addr]:port)
 *   heartbeat_interval = 5s   100ms..10m
 *   heartbeat_timeout = 20s   1s..1h; must exceed heartbeat_interval
 *   max_agents = 64           1..65536
 *   pull_budget_mib = 256     parameter sends (pulls) queued on the
 *                             connections at once, in MiB of their
 *                             messages (1..65536): a pull beyond it waits
 *                             for room, oldest first (work.c), so that a
 *                             herd of pulls at a clock edge does not
 *                             queue N copies of the model; one pull always
 *                             goes out, however large
 *   clock_duration = 16ms     a clock lasts this long or one minibatch of
 *                             the slowest live agent, whichever is longer;
 *                             each agent computes what it can in that time
 *                             (1ms..10s); with more than two live agents
 *                             a clock lasts at most 1 ms, unless the
 *                             links ask for longer (comm_share)
 *   comm_share = 10%          an agent's link may take at most this share
 *                             of its time: each clock is made long enough
 *                             (the same length for every agent, each
 *                             computing what it can in it) that the
 *                             slowest measured link waits at most this
 *                             share of it (0 to 90 %, 0 turns it off)
 *   max_sync_interval = 250ms but a clock grows for the links to at most
 *                             this much computing beyond the slowest
 *                             link's wait (1ms..10m)
 *   int8 = true               agents that can (GP_CAP_Q8) send updates as
 *                             int8 with error feedback and get the
 *                             momentum as int8 (parameters stay f16)
 *   update_bits = 8           4: agents that can (GP_CAP_Q4, with
 *                             GP_CAP_Q8) send their updates as 4-bit
 *                             values with error feedback, half of int8's
 *                             bytes; needs int8 = true
 *   param_delta = true        agents that can (GP_CAP_PARAM_DELTA, with
 *                             GP_CAP_Q8) get the parameters as int8
 *                             changes against a mirror of their copy
 *                             (downlink.h); false: as f16
 *   param_bits = 8            4: agents that can (GP_CAP_Q4_DELTA, with
 *                             GP_CAP_PARAM_DELTA) get those changes as
 *                             4-bit values, half of int8's bytes down;
 *                             needs param_delta = true and int8 = true
 *   overlap = true            agents taking local AdamW steps
 *                             (GP_CAP_INNER_ADAMW) that can
 *                             (GP_CAP_OVERLAP) compute their next run
 *                             while the last one's update and the pull
 *                             after it are on the wire; false: each run
 *                             waits for its pull
 *   first_pull_changes = true
 *                             with param_bits = 4: agents that
 *                             can (GP_CAP_ZERO_MIRROR) get their
 *                             session's first pull as 4-bit changes
 *                             against zeros, a quarter of f16's bytes;
 *                             false: whole f16
 *   max_grad_norm = 1000      updates with a larger L2 norm are rejected;
 *                             0 turns the check off
 *   clip_grad_norm = 0        clip updates to this L2 norm; 0 is off
 *   robust_clip = 2           centred clipping (robust.h): an update's
 *                             deviation from the pool's direction, and its
 *                             member's momentum's, at most this times the
 *                             typical honest one; 0 is off, else 1..100
 *   robust_momentum = 0.9     weight of the past in that direction and in
 *                             each member's momentum, [0, 0.999]
 *   verify_rate = 0.1         fraction of each member's clocks whose first
 *                             update is recomputed (verify.h); 0 is off
 *   verify_tolerance = 0.05   relative difference a recomputed update may
 *                             show beyond the wire's rounding, 1e-6..10
 *   verify_bans = 2           mismatches after which a member is revoked
 *   verify_delegate = true    hand a check to another member that offers
 *                             GP_CAP_VERIFY (docs/security.md "Checks by
 *                             other members"); false: the coordinator
 *                             recomputes every check itself
 *   verify_audit = 0.1        fraction of the checks another member
 *                             passed that the coordinator recomputes too,
 *                             0..1 (a lying checker is found at these)
 *   max_strikes = 8           rejected updates after which an agent is
 *                             disconnected, 1..1000000
 *   work_timeout = 2m         an agent holding work with no update applied
 *                             for this long is disconnected; 1s..1d
 *   rate_messages = 5000      messages per second one connection may send
 *                             (a burst of 2 s is allowed); 0 is no limit
 *   rate_bytes = 1073741824   bytes per second, likewise; 0 is no limit
 *   beacon = off              announce the pool on the local network
 *                             (UDP broadcast, see proto/beacon.h)
 *   beacon_port = 7101        1..65535, the agents' [network] beacon_port
 *   beacon_interval = 5s      1s..1h between beacons
 */
#ifndef GP_JOB_H
#define GP_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GP_JOB_MAX_LAYERS 16
#define GP_JOB_PATH_MAX 1024 /* bytes of a path in a job file, NUL included */

struct gp_model_spec;

enum gp_job_lr_schedule {
	GP_LR_CONSTANT = 0,
	GP_LR_COSINE = 1,
};

/* The outer optimiser a run's change goes through (params.h). */
enum gp_job_outer {
	GP_OUTER_NONE = 0,
	GP_OUTER_NESTEROV = 1,
};

/* The optimiser of an agent's local steps (GP_CAP_INNER_ADAMW). */
enum gp_job_inner {
	GP_INNER_NONE = 0,
	GP_INNER_ADAMW = 1,
};

enum gp_job_optimizer {
	GP_OPT_SGD = 0,
	GP_OPT_SGD_MOMENTUM = 1,
	GP_OPT_ADAMW = 2,
};

struct gp_job {
	/* [model] */
	char spec[128];  /* "" when file is given */
	size_t n_layers; /* widths parsed from spec */
	uint32_t layers[GP_JOB_MAX_LAYERS];
	char model_file[GP_JOB_PATH_MAX]; /* "" when spec is given */
	uint64_t seed;
	/* [data] */
	char data_set[32];
	char data_dir[256];
	bool data_npy;   /* format = npy */
	char train_images[GP_JOB_PATH_MAX], train_labels[GP_JOB_PATH_MAX];
	char test_images[GP_JOB_PATH_MAX], test_labels[GP_JOB_PATH_MAX];
	double test_share;
	/* [train] */
	uint32_t epochs;
	uint32_t batch_size;
	uint32_t staleness;
	enum gp_job_optimizer optimizer;
	double learning_rate;
	enum gp_job_lr_schedule lr_schedule;
	double warmup_epochs;
	bool staleness_scaling;
	double momentum;
	double weight_decay;
	double beta1, beta2, eps; /* adamw */
	bool group_updates;
	enum gp_job_outer outer_optimizer;
	double outer_lr, outer_momentum;
	enum gp_job_inner inner_optimizer;
	/* Exactly one of the two is non-zero. */
	uint64_t checkpoint_interval_ms;
	uint64_t checkpoint_interval_minibatches;
	uint32_t checkpoint_keep;
	bool eval;
	uint32_t eval_every;
	/* [pool] */
	char listen[128];
	uint64_t heartbeat_interval_ms;
	uint64_t heartbeat_timeout_ms;
	uint32_t max_agents;
	uint32_t pull_budget_mib;
	uint64_t clock_duration_ms;
	double comm_share;            /* 0..0.9, 0: clocks from compute only */
	uint64_t max_sync_interval_ms;
	uint32_t run_steps;
	bool int8;
	uint32_t update_bits;         /* 8 or 4 (GP_CAP_Q4), with int8 */
	bool param_delta;
	uint32_t param_bits;          /* 8 or 4 (GP_CAP_Q4_DELTA) */
	bool overlap;                 /* GP_CAP_OVERLAP for INNER_ADAMW */
	bool first_pull_changes;      /* GP_CAP_ZERO_MIRROR */
	double max_grad_norm;
	double clip_grad_norm;
	double robust_clip;
	double robust_momentum;
	double verify_rate;
	double verify_tolerance;
	uint32_t verify_bans;
	bool verify_delegate;
	double verify_audit;
	uint32_t max_strikes;
	uint64_t work_timeout_ms;
	uint64_t rate_messages;  /* per second, 0: unlimited */
	uint64_t rate_bytes;     /* per second, 0: unlimited */
	bool beacon;
	uint32_t beacon_port;
	uint64_t beacon_interval_ms;
};

/* A [data] file name (one of job's train_images ... test_labels, borrowed)
 * as a path: relative names are taken from job_path's directory. Writes
 * buf (len bytes); returns its length or -ENAMETOOLONG. */
int gp_job_data_path(const char *name, const char *job_path, char *buf,
		     size_t len);

/* Fills *job with every default (spec empty). */
void gp_job_defaults(struct gp_job *job);

/* Parses a job file from memory: data (borrowed, len bytes, no NUL needed),
 * named name in messages. On success *ret (caller's storage) holds the
 * job; on failure it is untouched and err (borrowed, errlen bytes) says
 * "NAME:LINE: what is wrong". Returns 0 or -EINVAL. */
int gp_job_parse(const char *name, const char *data, size_t len,
		 struct gp_job *ret, char *err, size_t errlen);

/* Reads and parses the job file at path, as gp_job_parse. Returns 0, -EINVAL,
 * or the errno of reading the file. */
int gp_job_parse_file(const char *path, struct gp_job *ret, char *err,
		      size_t errlen);

/* A bound on |m^| / sqrt(v^) of AdamW at these betas (Cauchy-Schwarz
 * over the moments' weights: (1 - b1) / sqrt((1 - b2) (1 - b1^2 / b2))),
 * about 1.2 for 0.9 / 0.95 and 7.3 for 0.9 / 0.999; infinity when
 * beta1^2 >= beta2, where no bound holds. inner_optimizer = adamw needs
 * it at most GP_JOB_INNER_RATIO_MAX, half the per-step allowance of a
 * delta (GP_PARAMS_DELTA_STEP_MAX), so that the bias correction's first
 * steps stay inside it. */
#define GP_JOB_INNER_RATIO_MAX 50.0
double gp_job_adamw_ratio(const struct gp_job *job);

/* The learning rate for minibatch `index` (0-based, counted over the whole
 * job: epoch * minibatches_per_epoch + i) of a job with `total` minibatches
 * of `per_epoch` each: warm-up ramp, then the schedule. */
double gp_job_lr_at(const struct gp_job *job, uint64_t index, uint64_t total,
		    uint64_t per_epoch);

/* The path of job's [model] file as the coordinator opens it: relative
 * names are taken from the directory of job_path (borrowed; the job
 * file's path as given). Writes it into buf (len bytes). Returns its
 * length, -ENOENT when the job names no file, or -ENAMETOOLONG. */
int gp_job_model_path(const struct gp_job *job, const char *job_path,
		      char *buf, size_t len);

/* Builds the job's model: parses [model] spec, or reads and parses the
 * [model] file (gp_job_model_path(); it must be a "gradpool-model 1"
 * description). On failure err says which file, which line and what is
 * wrong. *ret is the caller's. Returns 0, -EINVAL for bad text, or the
 * errno of reading the file. */
int gp_job_load_model(const struct gp_job *job, const char *job_path,
		      struct gp_model_spec *ret, char *err, size_t errlen);

/* Returns the optimizer's name in the job file ("sgd", "sgd-momentum",
 * "adamw"). */
const char *gp_job_optimizer_name(enum gp_job_optimizer opt);

#endif
