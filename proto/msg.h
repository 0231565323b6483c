/* The versioned message set carried inside Noise transport frames.
 *
 * Every message is an 8-byte header followed by a body of TLV fields:
 *
 *   header:  u8 version | u8 type | u16 flags | u32 body_len      (LE)
 *   field:   u16 tag    | u32 len | len bytes of value             (LE)
 *
 * The header layout is frozen across all versions, so that any release can
 * read the version and type of any message (gp_msg_peek()). Field tags are
 * scoped per message type. A decoder skips fields whose tag it does not
 * know, unless the tag has GP_MSG_TAG_CRITICAL set ("must understand"), and
 * reports a message type it does not know as GP_MSG_UNKNOWN_TYPE, a
 * non-error result: this is what lets an agent of an older release keep
 * working with a newer coordinator. Integers are fixed-width little-endian,
 * floats are IEEE-754 binary32 little-endian, strings are UTF-8 without a
 * terminator, tensors are raw little-endian element arrays (f32, f16 or int8
 * with one f32 scale), never text. docs/protocol.md "Messages" has the byte
 * layouts and the table of every type and field.
 *
 * Ownership of decoded messages: gp_msg_decode() fills a struct gp_msg whose
 * byte and tensor pointers (minibatch pixels, token id, tensor data ...)
 * point INTO the input buffer (zero-copy): the input must outlive the
 * decoded message and must not be modified while it is used. Strings are
 * copied into fixed arrays and NUL-terminated. Repeated elements (devices,
 * shard versions, tensor blocks) live in one array allocated by the decoder
 * and freed by gp_msg_finish().
 *
 * For encoding, the caller fills a struct gp_msg (zero-initialised, then the
 * type and fields); all pointers in it are borrowed for the duration of the
 * gp_msg_encode*() call. */
#ifndef GP_PROTO_MSG_H
#define GP_PROTO_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The message format version this release writes. Decoders accept
 * GP_MSG_VERSION_MIN..GP_MSG_VERSION (inclusive). The version is bumped only
 * for changes that old decoders cannot skip; new types and new fields do not
 * bump it. */
#define GP_MSG_VERSION 1
#define GP_MSG_VERSION_MIN 1

#define GP_MSG_HEADER_SIZE 8  /* u8 version, u8 type, u16 flags, u32 body_len */
#define GP_MSG_FIELD_HEADER_SIZE 6 /* u16 tag, u32 len */
/* Hard maximum size of one encoded message, header included. The framing
 * layer uses the same bound for a frame's plaintext; nothing larger is ever
 * allocated or accepted. */
#define GP_MSG_MAX_SIZE (64u * 1024u * 1024u)
/* A field tag with this bit set must be understood: a decoder that does not
 * know it fails with -EPROTONOSUPPORT instead of skipping it. */
#define GP_MSG_TAG_CRITICAL 0x8000u

/* gp_msg_decode() result for a well-formed header of a type this release
 * does not know: not an error, the caller skips the message. */
#define GP_MSG_UNKNOWN_TYPE 1

/* String capacities (bytes, without the terminator). Longer strings on the
 * wire are malformed; longer strings given to the encoder are -EINVAL. */
#define GP_MSG_NAME_MAX 64      /* agent name */
#define GP_MSG_RELEASE_MAX 32   /* release string, e.g. "0.1.0" */
#define GP_MSG_DEVICE_NAME_MAX 128
#define GP_MSG_MODEL_MAX 256    /* model spec, e.g. "784-256-128-10" */
/* WELCOME.model_text: a model in canonical text, the shorthand or a
 * "gradpool-model 1" description (== GP_MODEL_DESC_MAX). */
#define GP_MSG_MODEL_TEXT_MAX 65536
#define GP_MSG_TEXT_MAX 256     /* human-readable reason text */
#define GP_MSG_TOKEN_ID_SIZE 8  /* == GP_TOKEN_ID_SIZE */
/* A volunteer's public name (JOIN.public_name, PROFILE.public_name) and a
 * job's name (STATS.job_name): at most 64 bytes of UTF-8. */
#define GP_MSG_PUBLIC_NAME_MAX 64
#define GP_MSG_JOB_NAME_MAX 64
/* WELCOME.data_manifest (== GP_SHARD_MANIFEST_MAX) and DATA_SHARD.data
 * (== GP_SHARD_SIZE_MAX). */
#define GP_MSG_MANIFEST_MAX (44u + 32u * 8192u)
#define GP_MSG_SHARD_MAX (16u << 20)

/* Most repeated elements one message may carry. The decoder allocates one
 * struct per element, so these bound what a hostile peer can make it
 * allocate beyond the message itself. */
#define GP_MSG_DEVICES_MAX 32
#define GP_MSG_ELEMENTS_MAX 65536 /* shard versions or tensor blocks */

enum gp_msg_type {
	GP_MSG_JOIN = 1,         /* agent -> coordinator, first message */
	GP_MSG_WELCOME = 2,      /* coordinator -> agent: accepted + job */
	GP_MSG_REJECT = 3,       /* coordinator -> agent: refused, then close */
	GP_MSG_HEARTBEAT = 4,    /* both ways */
	GP_MSG_WORK_REQUEST = 5, /* agent -> coordinator: give me minibatches */
	GP_MSG_MINIBATCH = 6,    /* coordinator -> agent: one unit of work */
	GP_MSG_PARAM_PULL = 7,   /* agent -> coordinator: what I hold */
	GP_MSG_PARAM_SHARDS = 8, /* coordinator -> agent: fresher shards */
	GP_MSG_UPDATE = 9,       /* agent -> coordinator: gradients */
	GP_MSG_CLOCK = 10,       /* both ways: SSP clocks */
	GP_MSG_STATS = 11,       /* coordinator -> agent: progress, credit */
	GP_MSG_PAUSE = 12,       /* agent -> coordinator: stop sending work */
	GP_MSG_RESUME = 13,      /* agent -> coordinator: work again */
	GP_MSG_BYE = 14,         /* both ways: closing, and why */
	GP_MSG_PROFILE = 15,     /* agent -> coordinator: public name */
	GP_MSG_DATA_REQUEST = 16, /* agent -> coordinator: send me shard i */
	GP_MSG_DATA_SHARD = 17,  /* coordinator -> agent: shard i's bytes */
	GP_MSG_VERIFY_TASK = 18, /* coordinator -> agent: recompute this */
	GP_MSG_VERIFY_RESULT = 19, /* agent -> coordinator: what it gave */
};
#define GP_MSG_TYPE_MAX GP_MSG_VERIFY_RESULT

/* Why the coordinator refused a JOIN. Receivers map values they do not know
 * to "unspecified" for display but keep the number. */
enum gp_msg_reject_code {
	GP_REJECT_UNSPECIFIED = 0,
	GP_REJECT_BAD_TOKEN = 1,      /* unknown token id or wrong secret */
	GP_REJECT_TOKEN_EXPIRED = 2,
	GP_REJECT_TOKEN_USED_UP = 3,
	GP_REJECT_TOKEN_REVOKED = 4,
	GP_REJECT_AGENT_REVOKED = 5,
	GP_REJECT_VERSION = 6,        /* message version or release unsupported */
	GP_REJECT_BUSY = 7,           /* try again after retry_after_ms */
	GP_REJECT_UNKNOWN_AGENT = 8,  /* not a member and no token presented */
	GP_REJECT_MALFORMED = 9,
	GP_REJECT_NO_JOB = 10,
};

enum gp_msg_bye_reason {
	GP_BYE_NORMAL = 0,
	GP_BYE_SHUTDOWN = 1,    /* program exiting */
	GP_BYE_JOB_DONE = 2,
	GP_BYE_REVOKED = 3,     /* agent revoked by the pool owner */
	GP_BYE_PROTOCOL = 4,    /* peer sent something unacceptable */
	GP_BYE_TIMEOUT = 5,     /* heartbeats missed */
	GP_BYE_RESTART = 6,     /* reconnect later */
	/* A job started while the agent waited between jobs (GP_CAP_JOBS):
	 * reconnect now, without backoff, for its WELCOME. */
	GP_BYE_JOB_CHANGED = 7,
};

enum gp_msg_pause_reason {
	GP_PAUSE_USER = 0,
	GP_PAUSE_NOT_IDLE = 1,
	GP_PAUSE_ON_BATTERY = 2,
	GP_PAUSE_LIMIT = 3,
};

enum gp_msg_device_kind {
	GP_DEVICE_CPU = 0,
	GP_DEVICE_GPU = 1,
	GP_DEVICE_ACCELERATOR = 2,
	GP_DEVICE_OTHER = 3,
};

/* Element encodings of tensor payloads. */
enum gp_msg_dtype {
	GP_DTYPE_F32 = 0, /* IEEE binary32 LE, 4 bytes */
	GP_DTYPE_F16 = 1, /* IEEE binary16 LE, 2 bytes, round-to-nearest-even */
	GP_DTYPE_I8 = 2,  /* int8, value = q * scale, 1 byte */
	/* int8 in chunks of GP_MSG_Q8_CHUNK values, each chunk led by its
	 * own scale (value = q * scale): finer than I8's one scale per
	 * block, for updates quantised with error feedback. */
	GP_DTYPE_Q8 = 3,
	/* A GP_DTYPE_Q8 payload that is a change, not values: the receiver
	 * adds it to the values it last received for the same rows (its
	 * mirror). Only parameter blocks of PARAM_SHARDS, only with
	 * GP_CAP_PARAM_DELTA; an UPDATE that holds one is malformed. */
	GP_DTYPE_Q8_DELTA = 4,
	/* Signed 4-bit values in chunks of GP_MSG_Q4_CHUNK, each chunk led
	 * by its own scale: half of Q8's bytes, for updates quantised with
	 * error feedback over slow uplinks. Only UPDATE blocks, only with
	 * GP_CAP_Q4; a PARAM_SHARDS that holds one is malformed. */
	GP_DTYPE_Q4 = 5,
	/* A GP_DTYPE_Q4 payload that is a change, not values, as
	 * GP_DTYPE_Q8_DELTA is to GP_DTYPE_Q8: the receiver adds it to its
	 * mirror of those rows. Only parameter blocks of PARAM_SHARDS, only
	 * with GP_CAP_Q4_DELTA; an UPDATE that holds one is malformed. */
	GP_DTYPE_Q4_DELTA = 6,
};
#define GP_DTYPE_MAX GP_DTYPE_Q4_DELTA

/* A GP_DTYPE_Q8 payload of count values is ceil(count / 64) chunks, each
 *
 *   f32 LE  scale      finite, >= 0 (max |v| of the chunk / 127)
 *   n x i8  q          n = 64, the last chunk the rest (1..64)
 *
 * so count + 4 * ceil(count / 64) bytes; value i of a chunk is q[i] *
 * scale. */
#define GP_MSG_Q8_CHUNK 64

/* A GP_DTYPE_Q4 payload of count values is ceil(count / 64) chunks, each
 *
 *   f32 LE  scale      finite, >= 0 (max |v| of the chunk / 7)
 *   ceil(n / 2) bytes  q, two 4-bit two's complement values a byte, the
 *                      chunk's value 2k in the low nibble of byte k,
 *                      value 2k + 1 in its high nibble; n = 64, the last
 *                      chunk the rest (1..64)
 *
 * so ceil(count / 2) + 4 * ceil(count / 64) bytes (64 is even: only the
 * last chunk can end in half a byte). value i of a chunk is q[i] * scale
 * with q in -7..7: the nibble 0x8 (-8), which the encoder never writes,
 * and a last chunk's unused high nibble that is not 0 make the block
 * malformed, so that every payload that decodes is one the encoder
 * writes. */
#define GP_MSG_Q4_CHUNK 64

/* Capability bits (JOIN.caps: what the agent can decode and send;
 * WELCOME.caps: what the coordinator will use for this agent). */
#define GP_CAP_F16 (1u << 0)
/* 1u << 1: reserved (an int8 capability was never agreed to; int8 blocks
 * are decoded and accepted in UPDATE without one). */
/* The agent applies each gradient to its own copy of the parameters (SGD
 * with MINIBATCH.lr and .momentum) before its next minibatch: it reads its
 * own writes between pulls. */
#define GP_CAP_LOCAL_STEP (1u << 2)
/* The agent answers a group of minibatches (MINIBATCH.group) with one
 * UPDATE of form GP_UPDATE_SUMS: the momentum sums of the group's
 * gradients, from which the coordinator applies the group's steps exactly
 * as one by one (docs/architecture.md "Pool"). Needs GP_CAP_LOCAL_STEP. */
#define GP_CAP_SUMS (1u << 3)
/* The agent holds the same training set (JOIN.data_fingerprint matched the
 * coordinator's): MINIBATCH carries sample indices instead of pixels. */
#define GP_CAP_LOCAL_DATA (1u << 4)
/* PARAM_SHARDS also carries the coordinator's momentum of the shards it
 * sends, as blocks of tensor n_tensors + i for tensor i: the agent's local
 * steps go on with the pool's velocity instead of its own. */
#define GP_CAP_MOMENTUM (1u << 5)
/* The agent sends UPDATE blocks as GP_DTYPE_Q8,
 * keeping what the quantisation loses and adding it to its next update
 * (error feedback), and takes the momentum blocks of PARAM_SHARDS as
 * GP_DTYPE_Q8 too (parameters stay f16 or f32). Needs GP_CAP_F16: an
 * update that holds a non-finite value goes as f16 instead, so the
 * coordinator sees it and refuses it. */
#define GP_CAP_Q8 (1u << 6)
/* The agent builds its model from WELCOME.model_text, which may be a
 * model description ("gradpool-model 1", docs/models.md), and seeds its
 * dropout masks from WELCOME.seed. A coordinator whose job's model is a
 * description refuses a JOIN without it (REJECT 6): an older agent only
 * knows the shorthand in WELCOME.model. */
#define GP_CAP_MODEL_TEXT (1u << 7)
/* The agent takes STATS (the job's name, progress, accuracy, ETA and the
 * member's credit, docs/protocol.md "11 STATS"); the coordinator sends it
 * only to agents that offered this bit. */
#define GP_CAP_PROGRESS (1u << 8)
/* The agent fetches a training set it does not hold as content-addressed
 * shards (proto/shard.h): WELCOME carries the data set's manifest, the
 * agent asks for the shards its cache lacks with DATA_REQUEST before its
 * first WORK_REQUEST, and MINIBATCH then carries sample indices, as with
 * GP_CAP_LOCAL_DATA. Granted when asked and LOCAL_DATA is not. A job
 * whose samples are not bytes refuses a JOIN that has neither (REJECT 6). */
#define GP_CAP_DATA_SHARDS (1u << 9)
/* The agent stays with the pool between jobs (docs/protocol.md "Jobs that
 * come and go"): a JOIN while the pool has no job gets WELCOME with
 * job_id 0 and nothing to do, and the connection stays until BYE 7 (a job
 * started: reconnect now); after BYE 2 it reconnects at once. A WELCOME
 * of a job repeats the bit when the coordinator keeps such agents. */
#define GP_CAP_JOBS (1u << 10)
/* The agent's local steps are AdamW's (DiLoCo's inner optimiser): in a
 * job with optimizer = adamw and inner_optimizer = adamw, WELCOME carries
 * the job's AdamW settings (inner_adamw), the agent keeps its own moments
 * and step count for as long as the session lasts (a new WELCOME starts
 * them at zero), takes one AdamW step a minibatch at MINIBATCH.lr and
 * answers each group (MINIBATCH.group, 1 for a minibatch alone) with one
 * UPDATE of form GP_UPDATE_DELTA. Needs GP_CAP_LOCAL_STEP; excludes
 * GP_CAP_SUMS and GP_CAP_MOMENTUM for that session. */
#define GP_CAP_INNER_ADAMW (1u << 11)
/* The parameter blocks of PARAM_SHARDS may come as GP_DTYPE_Q8_DELTA: the
 * change since the values the agent last received for those rows, which
 * both ends keep (the mirror; docs/protocol.md "Parameter deltas"). A
 * block of f16 or f32 sets the mirror's rows; a delta adds to them; the
 * agent's copy of those rows becomes the mirror's. The first pull of a
 * session, and every pull picked for verification, carries every shard
 * as f16. Needs GP_CAP_F16 and GP_CAP_Q8. */
#define GP_CAP_PARAM_DELTA (1u << 12)
/* The agent sends UPDATE blocks as GP_DTYPE_Q4 instead of GP_DTYPE_Q8,
 * with the same error feedback: granted only together with GP_CAP_Q8
 * (whose other uses, momentum down as Q8, stay) and only when the job
 * asks for it ([pool] update_bits = 4). */
#define GP_CAP_Q4 (1u << 13)
/* The parameter changes of PARAM_SHARDS come as GP_DTYPE_Q4_DELTA
 * instead of GP_DTYPE_Q8_DELTA: half the bytes down, the rounding error
 * carried into the next change as with 8 bits. Granted only together
 * with GP_CAP_PARAM_DELTA and only when the job asks for it ([pool]
 * param_bits = 4); momentum blocks stay GP_DTYPE_Q8. */
#define GP_CAP_Q4_DELTA (1u << 14)
/* The agent recomputes another member's update on request (VERIFY_TASK,
 * answered by VERIFY_RESULT; docs/security.md "Checks by other
 * members"), on a scratch copy that leaves its own parameters as they
 * were. Granted only with GP_CAP_LOCAL_DATA (the task names samples by
 * index) and when the job's verification hands checks out. */
#define GP_CAP_VERIFY (1u << 15)
/* Overlap (docs/protocol.md "Overlap"): the coordinator may hand the
 * agent its next run before the run in flight is applied, and sends the
 * pull that follows on its own; each PARAM_SHARDS then carries
 * updates_read, and the agent keeps what its local steps did since the
 * UPDATE of that number on top of the parameters it receives. Granted
 * only with GP_CAP_INNER_ADAMW (its runs answer with their own change,
 * which does not depend on where the copy started) and the job's
 * [pool] overlap on. */
#define GP_CAP_OVERLAP (1u << 16)
/* Mirrors from zero (docs/protocol.md "Parameter deltas"): the agent's
 * mirror starts at WELCOME as zeros in every tensor rather than empty, so
 * a change may come for rows no whole block has set, and the session's
 * first pull may be changes against zeros (a q4 change is a quarter of
 * f16's bytes). Granted only with GP_CAP_PARAM_DELTA. */
#define GP_CAP_ZERO_MIRROR (1u << 17)

struct gp_msg_device {
	uint8_t kind;                               /* enum gp_msg_device_kind */
	char name[GP_MSG_DEVICE_NAME_MAX + 1];
	float gflops;                               /* measured GEMM GFLOP/s */
	float samples_per_s;                        /* measured training rate */
	uint64_t memory;                            /* bytes, 0 if unknown */
};

struct gp_msg_join {
	char name[GP_MSG_NAME_MAX + 1];
	char release[GP_MSG_RELEASE_MAX + 1];
	/* First join only: the token id (the secret never travels, it keys the
	 * Noise psk). NULL/0 when absent; on decode it points into the input. */
	const uint8_t *token_id;
	size_t token_id_len;                        /* 0 or GP_MSG_TOKEN_ID_SIZE */
	uint32_t caps;                              /* GP_CAP_* */
	struct gp_msg_device *devices;
	size_t n_devices;
	/* gp_data_fingerprint() of the training set the agent holds, 0:
	 * none. */
	uint64_t data_fingerprint;
	/* The name the volunteer lets the pool publish with its credit
	 * (gp_msg_public_name_check()); "": not public. */
	char public_name[GP_MSG_PUBLIC_NAME_MAX + 1];
};

/* WELCOME.inner_adamw (GP_CAP_INNER_ADAMW): the job's AdamW settings for
 * the agent's local steps, one nested TLV (tag 12) of
 *   tag 1 f32 beta1          [0, 1)
 *   tag 2 f32 beta2          [0, 1)
 *   tag 3 f32 eps            (0, 0.1]
 *   tag 4 f32 weight_decay   [0, 1), decoupled
 *   tag 5 f32 clip_norm      >= 0: clip each minibatch's gradient to this
 *                            global L2 norm first; 0: off
 * A value out of range fails the message. */
struct gp_msg_inner_adamw {
	float beta1;
	float beta2;
	float eps;
	float weight_decay;
	float clip_norm;
};

struct gp_msg_welcome {
	uint64_t agent_id;
	uint64_t job_id;
	/* The shorthand ("784-256-128-10"); "" when the model is a
	 * description, which only model_text carries. */
	char model[GP_MSG_MODEL_MAX + 1];
	uint32_t batch_size;
	uint32_t staleness;                         /* SSP s */
	uint32_t heartbeat_ms;
	uint32_t caps;                              /* GP_CAP_* to use */
	uint32_t epoch;                             /* current epoch */
	/* The model in canonical text (gp_model_spec_format()), at most
	 * GP_MSG_MODEL_TEXT_MAX bytes of UTF-8, no terminator: on decode it
	 * points into the input; NULL and 0 when absent. */
	const char *model_text;
	size_t model_text_len;
	uint64_t seed;                              /* the job's seed */
	/* With GP_CAP_DATA_SHARDS: the training set's manifest
	 * (proto/shard.h), at most GP_MSG_MANIFEST_MAX bytes; on decode it
	 * points into the input. NULL and 0 when absent. */
	const uint8_t *data_manifest;
	size_t data_manifest_len;
	/* With GP_CAP_INNER_ADAMW: one element; else NULL and 0 (not
	 * written, so that a WELCOME without it is the older bytes). On
	 * decode it is owned by the message (gp_msg_finish). */
	struct gp_msg_inner_adamw *inner_adamw;
	size_t n_inner_adamw;                       /* 0 or 1 */
};

struct gp_msg_reject {
	uint16_t code;                              /* enum gp_msg_reject_code */
	char text[GP_MSG_TEXT_MAX + 1];
	uint32_t retry_after_ms;                    /* 0 = do not retry */
	/* The message versions the sender speaks, GP_MSG_VERSION_MIN..
	 * GP_MSG_VERSION for this release: what a client whose JOIN got
	 * GP_REJECT_VERSION may speak instead. 0 when absent. */
	uint8_t version_min, version_max;
};

/* RTT: the receiver echoes the last time_us it saw in echo_time_us and how
 * long it held it in echo_delay_us; rtt = now - echo_time_us - echo_delay_us
 * on the original sender's clock. */
struct gp_msg_heartbeat {
	uint64_t seq;
	uint64_t time_us;                           /* sender's monotonic clock */
	uint64_t echo_time_us;
	uint64_t echo_delay_us;
};

struct gp_msg_work_request {
	uint32_t count;                             /* minibatches wanted */
};

/* Either pixels + labels (samples * features u8, samples u8) or indices
 * into a data set both sides hold (samples u32 LE), or both. */
struct gp_msg_minibatch {
	uint32_t epoch;
	uint64_t minibatch;                         /* id within the epoch */
	uint64_t clock;                             /* SSP clock it is for */
	uint32_t samples;
	uint32_t features;                          /* bytes per sample */
	const uint8_t *pixels;
	size_t pixels_len;                          /* 0 or samples*features */
	const uint8_t *labels;
	size_t labels_len;                          /* 0 or samples */
	const uint8_t *indices;                     /* u32 LE each */
	size_t indices_len;                         /* 0 or 4*samples */
	float lr;                                   /* local step; 0: none */
	float momentum;                             /* local step's momentum */
	/* With GP_CAP_SUMS: this minibatch opens a group of `group` (itself
	 * and the next group - 1 MINIBATCH messages, all of one clock), which
	 * the agent answers with one UPDATE. 0 or 1: answered alone. */
	uint32_t group;
};

/* One shard the agent holds, and its version. */
struct gp_msg_shard_version {
	uint32_t tensor;
	uint32_t row_start;
	uint64_t version;
};

struct gp_msg_param_pull {
	uint64_t clock;                             /* the agent's clock */
	/* The agent holds every shard at a version >= min_version, except those
	 * listed in have[] with their own versions. */
	uint64_t min_version;
	struct gp_msg_shard_version *have;
	size_t n_have;
};

/* A tensor payload: a whole tensor (row_start 0, rows 0) or a row block of
 * one. count elements of dtype.
 *   Encoding: values (host floats, borrowed) are converted to dtype while
 *   writing; for GP_DTYPE_I8 the encoder picks scale = max|v| / 127, for
 *   GP_DTYPE_Q8 the same per chunk of GP_MSG_Q8_CHUNK values, for
 *   GP_DTYPE_Q4 and GP_DTYPE_Q4_DELTA max|v| / 7 per chunk of
 *   GP_MSG_Q4_CHUNK values.
 *   Decoding: raw points into the input (raw_len ==
 *   gp_msg_payload_size(dtype, count), checked, each Q8 or Q4 chunk's
 *   scale finite and >= 0, and each Q4 nibble in -7..7 with a last odd
 *   chunk's spare nibble 0); read it with gp_msg_block_read(). values is
 *   NULL. */
struct gp_msg_block {
	uint32_t tensor;                            /* index in the model */
	uint32_t row_start;
	uint32_t rows;
	uint64_t version;                           /* shard version clock */
	uint32_t count;
	uint8_t dtype;                              /* enum gp_msg_dtype */
	float scale;                                /* I8 only (decoded) */
	const float *values;                        /* encode input */
	const uint8_t *raw;                         /* decode output */
	size_t raw_len;
};

struct gp_msg_param_shards {
	uint64_t clock;                             /* parameter clock served */
	struct gp_msg_block *blocks;
	size_t n_blocks;
	/* GP_CAP_OVERLAP: the UPDATE messages of this connection the
	 * coordinator had read when it built this message (their effect is
	 * in its values); written only when not 0. */
	uint64_t updates_read;
};

/* What an UPDATE's blocks hold. */
enum gp_msg_update_form {
	/* One block per tensor: the gradient of one minibatch. */
	GP_UPDATE_GRADIENT = 0,
	/* A group of K minibatches (items) computed one after the other, each
	 * applied locally with momentum mu and its MINIBATCH.lr: with g_i the
	 * gradients and a_j = mu a_(j-1) + g_j (a_0 = 0), the first
	 * n_tensors blocks hold A = a_K and the next n_tensors hold
	 * B = sum_j lr_j a_j / sum_j lr_j (0 when the sum is 0). */
	GP_UPDATE_SUMS = 1,
	/* A group of K minibatches (items) computed one after the other on
	 * the agent's copy, each taking a local AdamW step
	 * (GP_CAP_INNER_ADAMW): n_tensors blocks hold the run's change
	 * d = w_start - w_end (a pseudo-gradient: the descent the run took,
	 * in parameter units; the coordinator's w becomes w - d, through
	 * the outer optimiser when the job has one). */
	GP_UPDATE_DELTA = 2,
};
#define GP_MSG_GROUP_MAX 256          /* minibatches in one group */
#define GP_MSG_ITEM_SIZE 16           /* u32 epoch, u64 minibatch, f32 loss */

/* Gradients of one minibatch, or (form GP_UPDATE_SUMS) of a group of them:
 * then items holds one GP_MSG_ITEM_SIZE record per minibatch, in the order
 * computed (gp_msg_update_item); epoch and minibatch are the first's, loss
 * the group's mean per sample and grad_norm that of its weighted mean
 * gradient. A large update may be split into parts (one
 * per layer as soon as it is ready): part 0..parts-1, same minibatch id; the
 * loss/norm/time fields count in the last part. parts 0 is taken as 1. */
struct gp_msg_update {
	uint32_t epoch;
	uint64_t minibatch;
	uint64_t clock;
	uint32_t samples;
	float loss;
	float grad_norm;
	uint64_t compute_us;
	uint16_t part;
	uint16_t parts;
	struct gp_msg_block *blocks;
	size_t n_blocks;
	uint8_t form;                               /* enum gp_msg_update_form */
	const uint8_t *items;                       /* forms SUMS, DELTA */
	size_t items_len;                           /* K * GP_MSG_ITEM_SIZE */
	/* Microseconds from the arrival of the run's first MINIBATCH (a
	 * group's first) to this UPDATE's encoding, compute_us included;
	 * 0: not measured (docs/protocol.md "UPDATE"). */
	uint64_t held_us;
};

/* Agent -> coordinator: clock = the agent's new clock. Coordinator -> agent:
 * min_clock = the slowest live agent's clock (the SSP bound moves). */
struct gp_msg_clock {
	uint64_t clock;
	uint64_t min_clock;
};

/* What STATS.state says of the job. */
enum gp_msg_job_state {
	GP_JOB_STATE_TRAINING = 0,
	GP_JOB_STATE_DONE = 1,
	GP_JOB_STATE_NONE = 2,  /* the pool has no job */
};
/* STATS.eta_s when no estimate exists (nothing applied in the last
 * minute). */
#define GP_MSG_ETA_UNKNOWN UINT32_MAX

/* Coordinator -> agent (GP_CAP_PROGRESS): the job's progress and the
 * member's credit, sent after WELCOME, after each evaluation and every few
 * seconds while the pool trains. The member's counts are those the
 * coordinator has applied, the ledger being the reference. */
struct gp_msg_stats {
	uint32_t epoch;                             /* in progress, from 0 */
	uint64_t updates_accepted;                  /* this member, this job */
	uint64_t samples_credited;                  /* this member, this job */
	float loss;                                 /* pool's training loss */
	float accuracy;                             /* last evaluation, 0..1 */
	uint32_t agents_live;                       /* members connected */
	char job_name[GP_MSG_JOB_NAME_MAX + 1];
	uint32_t epochs;                            /* the job's total */
	float progress;                             /* share done, 0..1 */
	uint32_t eta_s;                             /* GP_MSG_ETA_UNKNOWN */
	float test_loss;                            /* last evaluation */
	uint32_t eval_epochs;                       /* epochs evaluated; 0: none */
	uint64_t credit_mflop;                      /* this member, all jobs */
	uint64_t job_id;
	uint8_t state;                              /* enum gp_msg_job_state */
	float samples_per_s;                        /* pool, last minute */
};

/* Agent -> coordinator: the volunteer set or withdrew its public name. */
struct gp_msg_profile {
	char public_name[GP_MSG_PUBLIC_NAME_MAX + 1]; /* "": not public */
};

struct gp_msg_pause {
	uint16_t reason;                            /* enum gp_msg_pause_reason */
	uint32_t duration_ms;                       /* 0 = until RESUME */
};

/* Agent -> coordinator (GP_CAP_DATA_SHARDS): send shard `shard` of the
 * manifest in this session's WELCOME. */
struct gp_msg_data_request {
	uint32_t shard;
};

/* Coordinator -> agent: shard `shard` of the manifest, its bytes in data
 * (on decode pointing into the input; at most GP_MSG_SHARD_MAX). */
struct gp_msg_data_shard {
	uint32_t shard;
	const uint8_t *data;
	size_t data_len;
};

/* VERIFY_TASK items: one GP_MSG_VERIFY_ITEM_SIZE record per minibatch,
 * in the order computed: u32 epoch, u64 minibatch (id within the epoch),
 * f32 lr (its local step's rate), u32 samples (its count of indices). */
#define GP_MSG_VERIFY_ITEM_SIZE 20

/* Coordinator -> agent (GP_CAP_VERIFY): recompute a group of minibatches
 * from the parameters (and momentum) given, exactly as a member computes
 * an UPDATE of that form from a pull (the dropout seed of each minibatch
 * is gp_model_minibatch_seed(WELCOME.seed, epoch, minibatch)), without
 * touching the agent's own copy, and answer with VERIFY_RESULT. */
struct gp_msg_verify_task {
	uint64_t task;                              /* echoed in the result */
	uint8_t form;        /* GP_UPDATE_GRADIENT (one item) or _SUMS */
	float momentum;                             /* mu of the local steps */
	const uint8_t *items;                       /* K * ITEM_SIZE, K >= 1 */
	size_t items_len;
	/* The items' samples, item after item: u32 LE indices into the
	 * training set (4 * the sum of the items' samples bytes). */
	const uint8_t *indices;
	size_t indices_len;
	/* Whole tensors, F32 or F16: tensor i's parameters (tensor i) and,
	 * for GP_UPDATE_SUMS, its momentum (tensor n_tensors + i). */
	struct gp_msg_block *blocks;
	size_t n_blocks;
};

/* What a VERIFY_RESULT says. Receivers treat a status they do not know
 * as GP_VERIFY_DECLINED. */
enum gp_msg_verify_status {
	GP_VERIFY_COMPUTED = 0,  /* blocks hold the update */
	GP_VERIFY_DECLINED = 1,  /* not computed (no data, no memory, busy) */
};

/* Agent -> coordinator: the answer to VERIFY_TASK `task`. Computed: the
 * blocks an UPDATE of the task's form would carry (whole tensors, F32 or
 * F16): the gradient, or the sums A (tensor i) and B (n_tensors + i). */
struct gp_msg_verify_result {
	uint64_t task;
	uint8_t status;                             /* enum gp_msg_verify_status */
	uint64_t compute_us;
	struct gp_msg_block *blocks;
	size_t n_blocks;
};

/* Reads VERIFY_TASK item i (i < items_len / GP_MSG_VERIFY_ITEM_SIZE). */
void gp_msg_verify_item(const struct gp_msg_verify_task *t, size_t i,
			uint32_t *ret_epoch, uint64_t *ret_minibatch,
			float *ret_lr, uint32_t *ret_samples);
/* Writes item i into items (GP_MSG_VERIFY_ITEM_SIZE bytes each). */
void gp_msg_verify_item_put(uint8_t *items, size_t i, uint32_t epoch,
			    uint64_t minibatch, float lr, uint32_t samples);

struct gp_msg_bye {
	uint16_t reason;                            /* enum gp_msg_bye_reason */
	char text[GP_MSG_TEXT_MAX + 1];
};

struct gp_msg {
	/* decode: the header's; encode: the version to write, 0 meaning
	 * GP_MSG_VERSION (a coordinator answers in the version of the agent's
	 * JOIN). */
	uint8_t version;
	uint8_t type;     /* enum gp_msg_type, or an unknown value on decode */
	uint16_t flags;   /* reserved: written as given, ignored by decoders */
	union {
		struct gp_msg_join join;
		struct gp_msg_welcome welcome;
		struct gp_msg_reject reject;
		struct gp_msg_heartbeat heartbeat;
		struct gp_msg_work_request work_request;
		struct gp_msg_minibatch minibatch;
		struct gp_msg_param_pull param_pull;
		struct gp_msg_param_shards param_shards;
		struct gp_msg_update update;
		struct gp_msg_clock clock;
		struct gp_msg_stats stats;
		struct gp_msg_pause pause;
		struct gp_msg_bye bye;
		struct gp_msg_profile profile;
		struct gp_msg_data_request data_request;
		struct gp_msg_data_shard data_shard;
		struct gp_msg_verify_task verify_task;
		struct gp_msg_verify_result verify_result;
	} u;
	void *owned_;     /* private: the decoder's array, freed by finish */
};

struct gp_msg_header {
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint32_t body_len;
};

/* Zeroes msg and sets its type, ready for the caller to fill in. */
void gp_msg_init(struct gp_msg *msg, enum gp_msg_type type);

/* Frees what gp_msg_decode() allocated in msg (the repeated-element array)
 * and zeroes msg. A no-op on a zeroed or caller-filled msg. */
void gp_msg_finish(struct gp_msg *msg);

/* Reads the frozen 8-byte header of buf[0..len) without looking at the
 * body's fields or judging the version, e.g. to answer a message of an
 * unsupported version with a REJECT. Returns 0 and fills *ret_header, or
 * -EBADMSG when len < 8 or body_len != len - 8, -EMSGSIZE when len exceeds
 * GP_MSG_MAX_SIZE. buf is borrowed. */
int gp_msg_peek(const uint8_t *buf, size_t len, struct gp_msg_header *ret_header);

/* Decodes one whole message buf[0..len) into *ret_msg.
 * Returns 0 on success; GP_MSG_UNKNOWN_TYPE (> 0) when the header is valid
 * but the type is unknown to this release (ret_msg has version, type and
 * flags only; skip the message); -EBADMSG when malformed (truncated,
 * lengths that do not add up, a known field of the wrong size, a bad string,
 * a duplicated field, tensor sizes that disagree); -EMSGSIZE when len >
 * GP_MSG_MAX_SIZE; -EPROTONOSUPPORT for an unsupported version, an unknown
 * critical field or an unknown tensor dtype; -ENOMEM. ret_msg is written only
 * on success (>= 0); its pointers borrow from buf (see the top of this
 * file); release it with gp_msg_finish(). */
int gp_msg_decode(const uint8_t *buf, size_t len, struct gp_msg *ret_msg);

/* Computes the exact encoded size of msg into *ret_size. Returns 0, -EINVAL
 * for an unknown type, a version outside GP_MSG_VERSION_MIN..GP_MSG_VERSION
 * or a field the encoder cannot write (string too long, too many elements,
 * token id of the wrong length, dtype unknown, a block with count > 0 and no
 * values, ...), -EMSGSIZE when the result would exceed GP_MSG_MAX_SIZE. */
int gp_msg_size(const struct gp_msg *msg, size_t *ret_size);

/* Encodes msg into buf[0..cap). Returns 0 and the length in *ret_len, the
 * errors of gp_msg_size(), or -ENOBUFS when cap is too small (buf is then
 * left in an unspecified state). msg and buf are borrowed. */
int gp_msg_encode(const struct gp_msg *msg, uint8_t *buf, size_t cap,
		  size_t *ret_len);

/* Like gp_msg_encode() into a malloc'd buffer of exactly the right size;
 * *ret_buf is owned by the caller (free()). */
int gp_msg_encode_alloc(const struct gp_msg *msg, uint8_t **ret_buf,
			size_t *ret_len);

/* A block's payload that gp_msg_encode_alloc_deferred() left unwritten:
 * gp_msg_payload_job_run() writes it, on any thread, in any order. */
struct gp_msg_payload_job {
	const struct gp_msg_block *block;
	uint8_t *at;
};

/* gp_msg_encode_alloc(), but with the blocks' payloads left to the
 * caller: *ret_jobs (malloc'd, *ret_n of them; NULL and 0 when there are
 * none) says where each goes, and the buffer is the message once every
 * job has run (a large parameter send's f16 and q8 encoding on several
 * threads). A payload the list has no memory for is written here
 * instead. msg and its blocks stay borrowed until the jobs have run. */
int gp_msg_encode_alloc_deferred(const struct gp_msg *msg, uint8_t **ret_buf,
				 size_t *ret_len,
				 struct gp_msg_payload_job **ret_jobs,
				 size_t *ret_n);

/* Writes job's payload. */
void gp_msg_payload_job_run(const struct gp_msg_payload_job *job);

/* Converts a decoded block's payload to host floats: out must hold n ==
 * block->count floats. Returns 0, -EINVAL if n != count or the block has no
 * decoded payload, -EPROTONOSUPPORT for an unknown dtype. Non-finite values
 * are passed through (the coordinator checks gradients itself). */
int gp_msg_block_read(const struct gp_msg_block *block, float *out, size_t n);

/* The sum of the squares of a decoded q8 or q4 block's values, from its
 * payload: each chunk's integers squared and summed exactly, times its
 * scale squared (a pass over a quarter, an eighth, of the bytes the
 * floats take; within float rounding of the read values' own). -1 for
 * any other dtype, or a block gp_msg_block_read() would refuse. */
double gp_msg_block_sum_squares(const struct gp_msg_block *block);

/* Adds a decoded GP_DTYPE_Q8_DELTA or GP_DTYPE_Q4_DELTA block's values
 * to mirror[0..n) (the values last received for its rows), as
 * mirror[i] + (float)q * scale,
 * bit for bit what the sender's mirror becomes (coordinator/downlink.h).
 * Returns 0 (also for a block of no values), -EINVAL if n != count, the
 * block is not a decoded delta, -ERANGE if a sum would not be finite
 * (mirror then unchanged). */
int gp_msg_block_add(const struct gp_msg_block *block, float *mirror,
		     size_t n);

/* Element size in bytes of a dtype, 0 when unknown (GP_DTYPE_Q8: 1, its
 * chunks' scales not counted; GP_DTYPE_Q4: 1 as well, though two values
 * share a byte: non-zero says the dtype is known, and a payload's bytes
 * are gp_msg_payload_size()'s, never count times this). */
size_t gp_msg_dtype_size(uint8_t dtype);

/* The payload bytes of count values of dtype, 0 for an unknown dtype
 * (and for count 0). */
uint64_t gp_msg_payload_size(uint8_t dtype, uint64_t count);

/* What a GP_DTYPE_Q8 block of in[0..n) decodes to, into out[0..n) (the
 * encoder's chunks, scales and rounding; out may be in): the sender of a
 * quantised update keeps in - out for its next one. Non-finite inputs
 * decode as the encoder sends them (NaN as 0, +-Inf as +-127 * scale). */
void gp_msg_q8_round(const float *in, float *out, size_t n);

/* The same for a GP_DTYPE_Q4 block (scale max |v| / 7 per chunk, q in
 * -7..7): what the coordinator decodes, bit for bit. */
void gp_msg_q4_round(const float *in, float *out, size_t n);

/* The same for GP_DTYPE_F16: each value through f16 and back
 * (gp_msg_f16_to_f32(gp_msg_f32_to_f16(x)), bit for bit), vectorised;
 * out may be in. */
void gp_msg_f16_round(const float *in, float *out, size_t n);

/* Item i of an update's group: writes record i into items (borrowed; it
 * holds at least i + 1 records), or reads it from u (borrowed; i <
 * u->items_len / GP_MSG_ITEM_SIZE). */
void gp_msg_update_item_put(uint8_t *items, size_t i, uint32_t epoch,
			    uint64_t minibatch, float loss);
void gp_msg_update_item(const struct gp_msg_update *u, size_t i,
			uint32_t *ret_epoch, uint64_t *ret_minibatch,
			float *ret_loss);

/* The u32 sample index i (< samples) of a decoded minibatch's indices. */
uint32_t gp_msg_minibatch_index(const struct gp_msg_minibatch *mb, size_t i);

/* IEEE-754 binary32 <-> binary16, round to nearest even, with infinities,
 * NaN (kept quiet) and subnormals. */
uint16_t gp_msg_f32_to_f16(float f);
float gp_msg_f16_to_f32(uint16_t h);

/* Whether name (borrowed, NUL-terminated) may be a public name: 1 to
 * GP_MSG_PUBLIC_NAME_MAX bytes of well-formed UTF-8 without control
 * characters (C0, DEL, C1), bidirectional overrides and isolates (U+202A-
 * U+202E, U+2066-U+2069: they would reorder the text around the name on a
 * page), and without leading or trailing spaces. Returns 0 or -EINVAL. */
int gp_msg_public_name_check(const char *name);

/* Static names for logs: "JOIN", "REJECT"... or "unknown". */
const char *gp_msg_type_name(uint8_t type);
/* Human text for a REJECT code ("token expired"...), "unspecified" for
 * unknown codes. */
const char *gp_msg_reject_str(uint16_t code);
const char *gp_msg_bye_str(uint16_t reason);

#endif
