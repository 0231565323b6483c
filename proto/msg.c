/* The versioned message set: a table-driven TLV encoder and decoder.
 *
 * Every message type is described by a schema, a table of its fields (tag,
 * wire kind, where the value lives in the C struct). One encoder and one
 * decoder walk these tables, so a field added to a type is one table line,
 * and the unknown-field and strict-length rules hold for every type alike.
 * See msg.h for the wire format and docs/protocol.md for the tables. */
#include "msg.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "gp-endian.h"
#include "msg-internal.h"

enum kind {
	K_U8,
	K_U16,
	K_U32,
	K_U64,
	K_U64Z,   /* a u64 written only when not 0 (absent reads as 0) */
	K_F32,
	K_STR,    /* char[cap + 1] at off */
	K_TEXT,   /* a str as const char * at off, size_t length at off2 */
	K_BYTES,  /* const uint8_t * at off, size_t length at off2 */
	K_NESTED, /* element array at off, size_t count at off2, one per TLV */
	K_TSCALE, /* struct gp_msg_block scale: computed on encode for I8 */
	K_TDATA,  /* struct gp_msg_block payload: values in, raw/raw_len out */
};

struct schema;

struct field {
	uint16_t tag;
	uint8_t kind;
	size_t off;
	size_t off2;
	/* K_STR: longest string; K_BYTES: exact length when non-zero;
	 * K_NESTED: most elements. */
	size_t cap;
	const struct schema *sub;
};

struct schema {
	const struct field *fields;
	size_t n_fields;
	size_t size; /* of the C struct, for element arrays */
	int (*validate)(void *obj);
};

#define FNUM(t, k, type, m) { (t), (k), offsetof(type, m), 0, 0, NULL }
#define FSTR(t, type, m, max) { (t), K_STR, offsetof(type, m), 0, (max), NULL }
#define FTEXT(t, type, p, l, max)                                              \
	{ (t), K_TEXT, offsetof(type, p), offsetof(type, l), (max), NULL }
#define FBYTES(t, type, p, l, exact)                                           \
	{ (t), K_BYTES, offsetof(type, p), offsetof(type, l), (exact), NULL }
#define FNEST(t, type, a, n, max, sub)                                         \
	{ (t), K_NESTED, offsetof(type, a), offsetof(type, n), (max), &(sub) }
#define SCHEMA(f, type, v) { (f), sizeof(f) / sizeof((f)[0]), sizeof(type), (v) }

/* ---- schemas ---- */

static int validate_minibatch(void *obj)
{
	const struct gp_msg_minibatch *m = obj;
	uint64_t n = m->samples;

	if (m->pixels_len && m->pixels_len != n * m->features)
		return -EBADMSG;
	if (m->labels_len && m->labels_len != n)
		return -EBADMSG;
	if (m->indices_len && m->indices_len != 4 * n)
		return -EBADMSG;
	return 0;
}

static int validate_block(void *obj)
{
	const struct gp_msg_block *b = obj;
	size_t es = gp_msg_dtype_size(b->dtype);

	if (!es)
		return -EPROTONOSUPPORT;
	if (gp_msg_payload_size(b->dtype, b->count) != b->raw_len)
		return -EBADMSG;
	if (b->dtype == GP_DTYPE_I8 && !isfinite(b->scale))
		return -EBADMSG;
	if (!gp_msg_payload_ok(b->dtype, b->raw, b->count))
		return -EBADMSG;
	return 0;
}

static int validate_update(void *obj)
{
	struct gp_msg_update *u = obj;

	if (u->parts == 0)
		u->parts = 1;
	if (u->part >= u->parts)
		return -EBADMSG;
	if (u->form > GP_UPDATE_DELTA)
		return -EPROTONOSUPPORT;
	/* A group (sums or a delta) lists its minibatches; a gradient is
	 * one minibatch's, named by the header. */
	if (u->items_len % GP_MSG_ITEM_SIZE ||
	    u->items_len > GP_MSG_GROUP_MAX * GP_MSG_ITEM_SIZE ||
	    (u->form != GP_UPDATE_GRADIENT) != (u->items_len > 0))
		return -EBADMSG;
	/* A change against a mirror only travels down (PARAM_SHARDS). */
	for (size_t i = 0; i < u->n_blocks; i++)
		if (u->blocks[i].dtype == GP_DTYPE_Q8_DELTA ||
		    u->blocks[i].dtype == GP_DTYPE_Q4_DELTA)
			return -EBADMSG;
	return 0;
}

/* 4-bit values only travel up (UPDATE, GP_CAP_Q4); 4-bit changes
 * (GP_DTYPE_Q4_DELTA) down. */
static int validate_param_shards(void *obj)
{
	const struct gp_msg_param_shards *ps = obj;

	for (size_t i = 0; i < ps->n_blocks; i++)
		if (ps->blocks[i].dtype == GP_DTYPE_Q4)
			return -EBADMSG;
	return 0;
}

/* A public name is either absent ("") or one gp_msg_public_name_check()
 * takes: a peer's bad name fails the message, not just the name. */
static int validate_join(void *obj)
{
	const struct gp_msg_join *j = obj;

	if (j->public_name[0] && gp_msg_public_name_check(j->public_name) < 0)
		return -EBADMSG;
	return 0;
}

static int validate_profile(void *obj)
{
	const struct gp_msg_profile *p = obj;

	if (p->public_name[0] && gp_msg_public_name_check(p->public_name) < 0)
		return -EBADMSG;
	return 0;
}

/* Shares are 0..1 and the losses finite (non-negative), so that what an
 * agent shows the volunteer is a number; an unknown state is kept (a
 * newer coordinator's) and shown as such. */
static int validate_stats(void *obj)
{
	const struct gp_msg_stats *s = obj;

	if (!(s->progress >= 0.0f && s->progress <= 1.0f) ||
	    !(s->accuracy >= 0.0f && s->accuracy <= 1.0f) ||
	    !(s->loss >= 0.0f && isfinite(s->loss)) ||
	    !(s->test_loss >= 0.0f && isfinite(s->test_loss)) ||
	    !(s->samples_per_s >= 0.0f && isfinite(s->samples_per_s)))
		return -EBADMSG;
	return 0;
}

#define T struct gp_msg_device
static const struct field device_fields[] = {
	FNUM(1, K_U8, T, kind),
	FSTR(2, T, name, GP_MSG_DEVICE_NAME_MAX),
	FNUM(3, K_F32, T, gflops),
	FNUM(4, K_F32, T, samples_per_s),
	FNUM(5, K_U64, T, memory),
};
static const struct schema device_schema = SCHEMA(device_fields, T, NULL);
#undef T

/* Ranges of msg.h's struct gp_msg_inner_adamw. */
static int validate_inner_adamw(void *obj)
{
	const struct gp_msg_inner_adamw *a = obj;

	if (!(a->beta1 >= 0 && a->beta1 < 1) ||
	    !(a->beta2 >= 0 && a->beta2 < 1) ||
	    !(a->eps > 0 && a->eps <= 0.1f) ||
	    !(a->weight_decay >= 0 && a->weight_decay < 1) ||
	    !(a->clip_norm >= 0 && isfinite(a->clip_norm)))
		return -EBADMSG;
	return 0;
}

#define T struct gp_msg_inner_adamw
static const struct field inner_adamw_fields[] = {
	FNUM(1, K_F32, T, beta1),
	FNUM(2, K_F32, T, beta2),
	FNUM(3, K_F32, T, eps),
	FNUM(4, K_F32, T, weight_decay),
	FNUM(5, K_F32, T, clip_norm),
};
static const struct schema inner_adamw_schema =
	SCHEMA(inner_adamw_fields, T, validate_inner_adamw);
#undef T

#define T struct gp_msg_shard_version
static const struct field shard_version_fields[] = {
	FNUM(1, K_U32, T, tensor),
	FNUM(2, K_U32, T, row_start),
	FNUM(3, K_U64, T, version),
};
static const struct schema shard_version_schema =
	SCHEMA(shard_version_fields, T, NULL);
#undef T

#define T struct gp_msg_block
static const struct field block_fields[] = {
	FNUM(1, K_U32, T, tensor),
	FNUM(2, K_U32, T, row_start),
	FNUM(3, K_U32, T, rows),
	FNUM(4, K_U64, T, version),
	FNUM(5, K_U32, T, count),
	FNUM(6, K_U8, T, dtype),
	FNUM(7, K_TSCALE, T, scale),
	{ 8, K_TDATA, offsetof(T, raw), offsetof(T, raw_len), 0, NULL },
};
static const struct schema block_schema = SCHEMA(block_fields, T, validate_block);
#undef T

#define T struct gp_msg_join
static const struct field join_fields[] = {
	FSTR(1, T, name, GP_MSG_NAME_MAX),
	FSTR(2, T, release, GP_MSG_RELEASE_MAX),
	FBYTES(3, T, token_id, token_id_len, GP_MSG_TOKEN_ID_SIZE),
	FNUM(4, K_U32, T, caps),
	FNEST(5, T, devices, n_devices, GP_MSG_DEVICES_MAX, device_schema),
	FNUM(6, K_U64, T, data_fingerprint),
	FSTR(7, T, public_name, GP_MSG_PUBLIC_NAME_MAX),
};
#undef T

#define T struct gp_msg_welcome
static const struct field welcome_fields[] = {
	FNUM(1, K_U64, T, agent_id),
	FNUM(2, K_U64, T, job_id),
	FSTR(3, T, model, GP_MSG_MODEL_MAX),
	FNUM(4, K_U32, T, batch_size),
	FNUM(5, K_U32, T, staleness),
	FNUM(6, K_U32, T, heartbeat_ms),
	FNUM(7, K_U32, T, caps),
	FNUM(8, K_U32, T, epoch),
	FTEXT(9, T, model_text, model_text_len, GP_MSG_MODEL_TEXT_MAX),
	FNUM(10, K_U64, T, seed),
	FBYTES(11, T, data_manifest, data_manifest_len, 0),
	FNEST(12, T, inner_adamw, n_inner_adamw, 1, inner_adamw_schema),
};
#undef T

#define T struct gp_msg_reject
static const struct field reject_fields[] = {
	FNUM(1, K_U16, T, code),
	FSTR(2, T, text, GP_MSG_TEXT_MAX),
	FNUM(3, K_U32, T, retry_after_ms),
	FNUM(4, K_U8, T, version_min),
	FNUM(5, K_U8, T, version_max),
};
#undef T

#define T struct gp_msg_heartbeat
static const struct field heartbeat_fields[] = {
	FNUM(1, K_U64, T, seq),
	FNUM(2, K_U64, T, time_us),
	FNUM(3, K_U64, T, echo_time_us),
	FNUM(4, K_U64, T, echo_delay_us),
};
#undef T

#define T struct gp_msg_work_request
static const struct field work_request_fields[] = {
	FNUM(1, K_U32, T, count),
};
#undef T

#define T struct gp_msg_minibatch
static const struct field minibatch_fields[] = {
	FNUM(1, K_U32, T, epoch),
	FNUM(2, K_U64, T, minibatch),
	FNUM(3, K_U64, T, clock),
	FNUM(4, K_U32, T, samples),
	FNUM(5, K_U32, T, features),
	FBYTES(6, T, pixels, pixels_len, 0),
	FBYTES(7, T, labels, labels_len, 0),
	FBYTES(8, T, indices, indices_len, 0),
	FNUM(9, K_F32, T, lr),
	FNUM(10, K_F32, T, momentum),
	FNUM(11, K_U32, T, group),
};
#undef T

#define T struct gp_msg_param_pull
static const struct field param_pull_fields[] = {
	FNUM(1, K_U64, T, clock),
	FNUM(2, K_U64, T, min_version),
	FNEST(3, T, have, n_have, GP_MSG_ELEMENTS_MAX, shard_version_schema),
};
#undef T

#define T struct gp_msg_param_shards
static const struct field param_shards_fields[] = {
	FNUM(1, K_U64, T, clock),
	FNEST(2, T, blocks, n_blocks, GP_MSG_ELEMENTS_MAX, block_schema),
	FNUM(3, K_U64Z, T, updates_read),
};
#undef T

#define T struct gp_msg_update
static const struct field update_fields[] = {
	FNUM(1, K_U32, T, epoch),
	FNUM(2, K_U64, T, minibatch),
	FNUM(3, K_U64, T, clock),
	FNUM(4, K_U32, T, samples),
	FNUM(5, K_F32, T, loss),
	FNUM(6, K_F32, T, grad_norm),
	FNUM(7, K_U64, T, compute_us),
	FNUM(8, K_U16, T, part),
	FNUM(9, K_U16, T, parts),
	FNEST(10, T, blocks, n_blocks, GP_MSG_ELEMENTS_MAX, block_schema),
	FNUM(11, K_U8, T, form),
	FBYTES(12, T, items, items_len, 0),
	FNUM(13, K_U64Z, T, held_us),
};
#undef T

#define T struct gp_msg_clock
static const struct field clock_fields[] = {
	FNUM(1, K_U64, T, clock),
	FNUM(2, K_U64, T, min_clock),
};
#undef T

#define T struct gp_msg_stats
static const struct field stats_fields[] = {
	FNUM(1, K_U32, T, epoch),
	FNUM(2, K_U64, T, updates_accepted),
	FNUM(3, K_U64, T, samples_credited),
	FNUM(4, K_F32, T, loss),
	FNUM(5, K_F32, T, accuracy),
	FNUM(6, K_U32, T, agents_live),
	FSTR(7, T, job_name, GP_MSG_JOB_NAME_MAX),
	FNUM(8, K_U32, T, epochs),
	FNUM(9, K_F32, T, progress),
	FNUM(10, K_U32, T, eta_s),
	FNUM(11, K_F32, T, test_loss),
	FNUM(12, K_U32, T, eval_epochs),
	FNUM(13, K_U64, T, credit_mflop),
	FNUM(14, K_U64, T, job_id),
	FNUM(15, K_U8, T, state),
	FNUM(16, K_F32, T, samples_per_s),
};
#undef T

#define T struct gp_msg_profile
static const struct field profile_fields[] = {
	FSTR(1, T, public_name, GP_MSG_PUBLIC_NAME_MAX),
};
#undef T

#define T struct gp_msg_pause
static const struct field pause_fields[] = {
	FNUM(1, K_U16, T, reason),
	FNUM(2, K_U32, T, duration_ms),
};
#undef T

#define T struct gp_msg_bye
static const struct field bye_fields[] = {
	FNUM(1, K_U16, T, reason),
	FSTR(2, T, text, GP_MSG_TEXT_MAX),
};
#undef T

#define T struct gp_msg_data_request
static const struct field data_request_fields[] = {
	FNUM(1, K_U32, T, shard),
};
#undef T

#define T struct gp_msg_data_shard
static const struct field data_shard_fields[] = {
	FNUM(1, K_U32, T, shard),
	FBYTES(2, T, data, data_len, 0),
};
#undef T

#define T struct gp_msg_verify_task
static const struct field verify_task_fields[] = {
	FNUM(1, K_U64, T, task),
	FNUM(2, K_U8, T, form),
	FNUM(3, K_F32, T, momentum),
	FBYTES(4, T, items, items_len, 0),
	FBYTES(5, T, indices, indices_len, 0),
	FNEST(6, T, blocks, n_blocks, GP_MSG_ELEMENTS_MAX, block_schema),
};
#undef T

#define T struct gp_msg_verify_result
static const struct field verify_result_fields[] = {
	FNUM(1, K_U64, T, task),
	FNUM(2, K_U8, T, status),
	FNUM(3, K_U64, T, compute_us),
	FNEST(4, T, blocks, n_blocks, GP_MSG_ELEMENTS_MAX, block_schema),
};
#undef T

/* The dtypes a recomputation's tensors travel in: whole values, no
 * quantisation, so that what is compared is what was computed. */
static bool blocks_plain(const struct gp_msg_block *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i].dtype != GP_DTYPE_F32 && b[i].dtype != GP_DTYPE_F16)
			return false;
	return true;
}

/* A form this release's VERIFY_TASK does not carry (a newer release's) is
 * not supported, as in UPDATE; everything else that a member could not
 * recompute as asked is malformed: items that are not whole records, none
 * or over GP_MSG_GROUP_MAX of them, more than one for a gradient, an item
 * without samples or with a rate that is not finite, indices that are not
 * exactly the items' samples, a momentum outside [0, 1), no tensors. */
static int validate_verify_task(void *obj)
{
	const struct gp_msg_verify_task *t = obj;
	size_t k = t->items_len / GP_MSG_VERIFY_ITEM_SIZE;
	uint64_t samples = 0;

	if (t->form != GP_UPDATE_GRADIENT && t->form != GP_UPDATE_SUMS)
		return -EPROTONOSUPPORT;
	if (t->items_len % GP_MSG_VERIFY_ITEM_SIZE || k == 0 ||
	    k > GP_MSG_GROUP_MAX || (t->form == GP_UPDATE_GRADIENT && k != 1))
		return -EBADMSG;
	for (size_t i = 0; i < k; i++) {
		uint32_t epoch, n;
		uint64_t mb;
		float lr;

		gp_msg_verify_item(t, i, &epoch, &mb, &lr, &n);
		if (n == 0 || !isfinite(lr))
			return -EBADMSG;
		samples += n;
	}
	if ((uint64_t)t->indices_len != 4 * samples)
		return -EBADMSG;
	if (!(t->momentum >= 0.0f && t->momentum < 1.0f))
		return -EBADMSG;
	if (t->n_blocks == 0 || !blocks_plain(t->blocks, t->n_blocks))
		return -EBADMSG;
	return 0;
}

/* Computed: at least one block; any other status (declined, or one this
 * release does not know, which receivers take as declined): none. */
static int validate_verify_result(void *obj)
{
	const struct gp_msg_verify_result *r = obj;

	if ((r->status == GP_VERIFY_COMPUTED) != (r->n_blocks > 0))
		return -EBADMSG;
	return blocks_plain(r->blocks, r->n_blocks) ? 0 : -EBADMSG;
}

static int validate_welcome(void *obj)
{
	const struct gp_msg_welcome *w = obj;

	return w->data_manifest_len > GP_MSG_MANIFEST_MAX ? -EBADMSG : 0;
}

static int validate_data_shard(void *obj)
{
	const struct gp_msg_data_shard *d = obj;

	return d->data_len > GP_MSG_SHARD_MAX ? -EBADMSG : 0;
}

/* Indexed by type; a NULL fields pointer with n_fields 0 is a known type
 * without fields (RESUME). */
static const struct schema schemas[GP_MSG_TYPE_MAX + 1] = {
	[GP_MSG_JOIN] = SCHEMA(join_fields, struct gp_msg_join, validate_join),
	[GP_MSG_WELCOME] = SCHEMA(welcome_fields, struct gp_msg_welcome,
				  validate_welcome),
	[GP_MSG_REJECT] = SCHEMA(reject_fields, struct gp_msg_reject, NULL),
	[GP_MSG_HEARTBEAT] =
		SCHEMA(heartbeat_fields, struct gp_msg_heartbeat, NULL),
	[GP_MSG_WORK_REQUEST] =
		SCHEMA(work_request_fields, struct gp_msg_work_request, NULL),
	[GP_MSG_MINIBATCH] = SCHEMA(minibatch_fields, struct gp_msg_minibatch,
				    validate_minibatch),
	[GP_MSG_PARAM_PULL] =
		SCHEMA(param_pull_fields, struct gp_msg_param_pull, NULL),
	[GP_MSG_PARAM_SHARDS] =
		SCHEMA(param_shards_fields, struct gp_msg_param_shards,
		       validate_param_shards),
	[GP_MSG_UPDATE] =
		SCHEMA(update_fields, struct gp_msg_update, validate_update),
	[GP_MSG_CLOCK] = SCHEMA(clock_fields, struct gp_msg_clock, NULL),
	[GP_MSG_STATS] = SCHEMA(stats_fields, struct gp_msg_stats, validate_stats),
	[GP_MSG_PAUSE] = SCHEMA(pause_fields, struct gp_msg_pause, NULL),
	[GP_MSG_RESUME] = { NULL, 0, 0, NULL },
	[GP_MSG_BYE] = SCHEMA(bye_fields, struct gp_msg_bye, NULL),
	[GP_MSG_PROFILE] =
		SCHEMA(profile_fields, struct gp_msg_profile, validate_profile),
	[GP_MSG_DATA_REQUEST] = SCHEMA(data_request_fields,
				       struct gp_msg_data_request, NULL),
	[GP_MSG_DATA_SHARD] = SCHEMA(data_shard_fields,
				     struct gp_msg_data_shard,
				     validate_data_shard),
	[GP_MSG_VERIFY_TASK] = SCHEMA(verify_task_fields,
				      struct gp_msg_verify_task,
				      validate_verify_task),
	[GP_MSG_VERIFY_RESULT] = SCHEMA(verify_result_fields,
					struct gp_msg_verify_result,
					validate_verify_result),
};

static const struct schema *schema_of(uint8_t type)
{
	if (type == 0 || type > GP_MSG_TYPE_MAX)
		return NULL;
	/* A number left free between known types is unknown. */
	if (!schemas[type].fields && type != GP_MSG_RESUME)
		return NULL;
	return &schemas[type];
}

static size_t num_size(uint8_t kind)
{
	switch (kind) {
	case K_U8:
		return 1;
	case K_U16:
		return 2;
	case K_U32:
	case K_F32:
	case K_TSCALE:
		return 4;
	case K_U64:
	case K_U64Z:
		return 8;
	default:
		return 0;
	}
}

#define AT(base, off, type) ((type *)(void *)((char *)(base) + (off)))
#define CAT(base, off, type)                                                   \
	((const type *)(const void *)((const char *)(base) + (off)))

/* ---- encoding ---- */

/* Bytes of a field's value, or -1 when the field is not written, or a
 * negative errno (< -1) when it cannot be encoded. The block's payload and
 * scale are written only when they carry something. */
static int64_t value_size(const struct field *f, const void *obj);

static int64_t body_size(const struct schema *s, const void *obj)
{
	uint64_t total = 0;

	for (size_t i = 0; i < s->n_fields; i++) {
		const struct field *f = &s->fields[i];

		if (f->kind == K_NESTED) {
			const char *arr = *CAT(obj, f->off, char *const);
			size_t n = *CAT(obj, f->off2, size_t);

			if (n > f->cap || (n && !arr))
				return -EINVAL;
			for (size_t k = 0; k < n; k++) {
				int64_t sz = body_size(f->sub,
						       arr + k * f->sub->size);

				if (sz < 0)
					return sz;
				total += GP_MSG_FIELD_HEADER_SIZE +
					 (uint64_t)sz;
				if (total > GP_MSG_MAX_SIZE)
					return -EMSGSIZE;
			}
			continue;
		}
		int64_t sz = value_size(f, obj);

		if (sz < -1)
			return sz;
		if (sz >= 0)
			total += GP_MSG_FIELD_HEADER_SIZE + (uint64_t)sz;
		if (total > GP_MSG_MAX_SIZE)
			return -EMSGSIZE;
	}
	return (int64_t)total;
}

static int64_t value_size(const struct field *f, const void *obj)
{
	switch (f->kind) {
	case K_STR: {
		const char *str = CAT(obj, f->off, char);
		size_t len = strnlen(str, f->cap + 1);

		return len > f->cap ? -EINVAL : (int64_t)len;
	}
	case K_TEXT: {
		const char *p = *CAT(obj, f->off, const char *const);
		size_t len = *CAT(obj, f->off2, size_t);

		if (len == 0)
			return -1;
		return !p || len > f->cap ? -EINVAL : (int64_t)len;
	}
	case K_BYTES: {
		const uint8_t *p = *CAT(obj, f->off, const uint8_t *const);
		size_t len = *CAT(obj, f->off2, size_t);

		if (len == 0)
			return -1;
		if (!p || (f->cap && len != f->cap) || len > GP_MSG_MAX_SIZE)
			return -EINVAL;
		return (int64_t)len;
	}
	case K_TSCALE: {
		const struct gp_msg_block *b = obj;

		return b->dtype == GP_DTYPE_I8 && b->count ? 4 : -1;
	}
	case K_U64Z:
		return *CAT(obj, f->off, uint64_t) ? 8 : -1;
	case K_TDATA: {
		/* The block payload is written from values, in dtype. */
		const struct gp_msg_block *b = obj;
		size_t es = gp_msg_dtype_size(b->dtype);

		if (!es)
			return -EINVAL;
		if (b->count == 0)
			return -1;
		if (!b->values)
			return -EINVAL;
		return (int64_t)gp_msg_payload_size(b->dtype, b->count);
	}
	default:
		return (int64_t)num_size(f->kind);
	}
}

/* Payloads left out of an encoding (gp_msg_encode_alloc_deferred). */
struct deferred {
	struct gp_msg_payload_job *jobs;
	size_t n, cap;
};

/* Notes b's payload at p as a job; false when there is no room. */
static bool defer_payload(struct deferred *d, const struct gp_msg_block *b,
			  uint8_t *p)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? 2 * d->cap : 16;
		struct gp_msg_payload_job *j =
			realloc(d->jobs, cap * sizeof(*j));

		if (!j)
			return false;
		d->jobs = j;
		d->cap = cap;
	}
	d->jobs[d->n++] = (struct gp_msg_payload_job){ .block = b, .at = p };
	return true;
}

/* Writes the fields of obj at p; sizes were checked by body_size(). Block
 * payloads go to d when it is not NULL (and has room). Returns the bytes
 * written. */
static size_t write_body(const struct schema *s, const void *obj, uint8_t *p,
			 struct deferred *d)
{
	uint8_t *start = p;

	for (size_t i = 0; i < s->n_fields; i++) {
		const struct field *f = &s->fields[i];

		if (f->kind == K_NESTED) {
			const char *arr = *CAT(obj, f->off, char *const);
			size_t n = *CAT(obj, f->off2, size_t);

			for (size_t k = 0; k < n; k++) {
				size_t len = write_body(
					f->sub, arr + k * f->sub->size,
					p + GP_MSG_FIELD_HEADER_SIZE, d);

				gp_put_le16(p, f->tag);
				gp_put_le32(p + 2, (uint32_t)len);
				p += GP_MSG_FIELD_HEADER_SIZE + len;
			}
			continue;
		}
		int64_t sz = value_size(f, obj);

		if (sz < 0)
			continue;
		gp_put_le16(p, f->tag);
		gp_put_le32(p + 2, (uint32_t)sz);
		p += GP_MSG_FIELD_HEADER_SIZE;
		switch (f->kind) {
		case K_U8:
			*p = *CAT(obj, f->off, uint8_t);
			break;
		case K_U16:
			gp_put_le16(p, *CAT(obj, f->off, uint16_t));
			break;
		case K_U32:
			gp_put_le32(p, *CAT(obj, f->off, uint32_t));
			break;
		case K_U64:
		case K_U64Z:
			gp_put_le64(p, *CAT(obj, f->off, uint64_t));
			break;
		case K_F32:
			gp_put_lef32(p, *CAT(obj, f->off, float));
			break;
		case K_TSCALE: {
			const struct gp_msg_block *b = obj;

			gp_put_lef32(p, gp_msg_i8_scale(b->values, b->count));
			break;
		}
		case K_STR:
		case K_TEXT: {
			/* What the decoder refuses becomes '?', byte for
			 * byte: a name cut inside a character, or bytes from
			 * a driver, must not cost the connection. */
			const uint8_t *str = f->kind == K_TEXT ?
				*CAT(obj, f->off, const uint8_t *const) :
				CAT(obj, f->off, uint8_t);

			for (size_t at = 0; at < (size_t)sz;) {
				size_t c = gp_msg_str_char(str + at, (size_t)sz - at);

				if (c == 0) {
					p[at++] = '?';
					continue;
				}
				memcpy(p + at, str + at, c);
				at += c;
			}
			break;
		}
		case K_BYTES:
			memcpy(p, *CAT(obj, f->off, const uint8_t *const),
			       (size_t)sz);
			break;
		case K_TDATA:
			if (!d || !defer_payload(d, obj, p))
				gp_msg_payload_write(obj, p);
			break;
		}
		p += sz;
	}
	return (size_t)(p - start);
}

static int encode_version(const struct gp_msg *msg, uint8_t *ret_version)
{
	uint8_t v = msg->version ? msg->version : GP_MSG_VERSION;

	if (v < GP_MSG_VERSION_MIN || v > GP_MSG_VERSION)
		return -EINVAL;
	*ret_version = v;
	return 0;
}

int gp_msg_size(const struct gp_msg *msg, size_t *ret_size)
{
	const struct schema *s = schema_of(msg->type);
	uint8_t v;
	int64_t body;

	if (!s || encode_version(msg, &v) < 0)
		return -EINVAL;
	body = s->n_fields ? body_size(s, &msg->u) : 0;
	if (body < 0)
		return (int)body;
	if ((uint64_t)body + GP_MSG_HEADER_SIZE > GP_MSG_MAX_SIZE)
		return -EMSGSIZE;
	*ret_size = (size_t)body + GP_MSG_HEADER_SIZE;
	return 0;
}

static int encode(const struct gp_msg *msg, uint8_t *buf, size_t cap,
		  size_t *ret_len, struct deferred *d)
{
	const struct schema *s = schema_of(msg->type);
	size_t size, body = 0;
	uint8_t v;
	int r;

	r = gp_msg_size(msg, &size);
	if (r < 0)
		return r;
	if (cap < size)
		return -ENOBUFS;
	(void)encode_version(msg, &v);
	if (s->n_fields)
		body = write_body(s, &msg->u, buf + GP_MSG_HEADER_SIZE, d);
	if (body + GP_MSG_HEADER_SIZE != size)
		return -EINVAL; /* unreachable unless msg changed under us */
	buf[0] = v;
	buf[1] = msg->type;
	gp_put_le16(buf + 2, msg->flags);
	gp_put_le32(buf + 4, (uint32_t)body);
	*ret_len = size;
	return 0;
}

int gp_msg_encode(const struct gp_msg *msg, uint8_t *buf, size_t cap,
		  size_t *ret_len)
{
	return encode(msg, buf, cap, ret_len, NULL);
}

static int encode_alloc(const struct gp_msg *msg, uint8_t **ret_buf,
			size_t *ret_len, struct deferred *d)
{
	uint8_t *buf;
	size_t size, len;
	int r;

	r = gp_msg_size(msg, &size);
	if (r < 0)
		return r;
	buf = malloc(size);
	if (!buf)
		return -ENOMEM;
	r = encode(msg, buf, size, &len, d);
	if (r < 0) {
		free(buf);
		return r;
	}
	*ret_buf = buf;
	*ret_len = len;
	return 0;
}

int gp_msg_encode_alloc(const struct gp_msg *msg, uint8_t **ret_buf,
			size_t *ret_len)
{
	return encode_alloc(msg, ret_buf, ret_len, NULL);
}

int gp_msg_encode_alloc_deferred(const struct gp_msg *msg, uint8_t **ret_buf,
				 size_t *ret_len,
				 struct gp_msg_payload_job **ret_jobs,
				 size_t *ret_n)
{
	struct deferred d = {0};
	int r = encode_alloc(msg, ret_buf, ret_len, &d);

	if (r < 0) {
		free(d.jobs);
		return r;
	}
	*ret_jobs = d.jobs;
	*ret_n = d.n;
	return 0;
}

void gp_msg_payload_job_run(const struct gp_msg_payload_job *job)
{
	gp_msg_payload_write(job->block, job->at);
}

/* ---- decoding ---- */

static const struct field *find_field(const struct schema *s, uint16_t tag)
{
	for (size_t i = 0; i < s->n_fields; i++)
		if (s->fields[i].tag == tag)
			return &s->fields[i];
	return NULL;
}

/* Checks one field's value and stores it into obj. */
static int decode_value(const struct field *f, void *obj, const uint8_t *v,
			uint32_t len)
{
	size_t want = num_size(f->kind);

	if (want && len != want)
		return -EBADMSG;
	switch (f->kind) {
	case K_U8:
		*AT(obj, f->off, uint8_t) = v[0];
		return 0;
	case K_U16:
		*AT(obj, f->off, uint16_t) = gp_get_le16(v);
		return 0;
	case K_U32:
		*AT(obj, f->off, uint32_t) = gp_get_le32(v);
		return 0;
	case K_U64:
	case K_U64Z:
		*AT(obj, f->off, uint64_t) = gp_get_le64(v);
		return 0;
	case K_F32:
	case K_TSCALE:
		*AT(obj, f->off, float) = gp_get_lef32(v);
		return 0;
	case K_STR:
	case K_TEXT:
		if (len > f->cap)
			return -EBADMSG;
		for (uint32_t i = 0; i < len;) {
			size_t c = gp_msg_str_char(v + i, len - i);

			if (c == 0)
				return -EBADMSG;
			i += (uint32_t)c;
		}
		if (f->kind == K_TEXT) {
			*AT(obj, f->off, const char *) = (const char *)v;
			*AT(obj, f->off2, size_t) = len;
			return 0;
		}
		memcpy(AT(obj, f->off, char), v, len);
		AT(obj, f->off, char)[len] = '\0';
		return 0;
	case K_BYTES:
	case K_TDATA:
		if (f->cap && len != f->cap)
			return -EBADMSG;
		*AT(obj, f->off, const uint8_t *) = v;
		*AT(obj, f->off2, size_t) = len;
		return 0;
	default:
		return -EBADMSG;
	}
}

/* Decodes the TLV list p[0..len) into obj (zeroed by the caller). Nested
 * arrays are allocated here into *owned (only one nested field per schema,
 * and elements have none). */
static int decode_body(const struct schema *s, void *obj, const uint8_t *p,
		       size_t len, void **owned)
{
	const struct field *nest = NULL;
	size_t n_nest = 0, k = 0;
	uint64_t seen = 0;
	char *arr = NULL;
	int r;

	/* Pass 1: framing, unknown critical tags, duplicates, counts. */
	for (size_t off = 0; off < len;) {
		const struct field *f;
		uint16_t tag;
		uint32_t flen;

		if (len - off < GP_MSG_FIELD_HEADER_SIZE)
			return -EBADMSG;
		tag = gp_get_le16(p + off);
		flen = gp_get_le32(p + off + 2);
		off += GP_MSG_FIELD_HEADER_SIZE;
		if (flen > len - off)
			return -EBADMSG;
		off += flen;
		f = find_field(s, tag);
		if (!f) {
			if (tag & GP_MSG_TAG_CRITICAL)
				return -EPROTONOSUPPORT;
			continue;
		}
		if (f->kind == K_NESTED) {
			if (!owned || ++n_nest > f->cap)
				return -EBADMSG;
			nest = f;
			continue;
		}
		/* Known tags are all < 64. */
		if (seen & (UINT64_C(1) << (tag & 63)))
			return -EBADMSG;
		seen |= UINT64_C(1) << (tag & 63);
	}
	if (n_nest) {
		arr = calloc(n_nest, nest->sub->size);
		if (!arr)
			return -ENOMEM;
		*AT(obj, nest->off, char *) = arr;
		*AT(obj, nest->off2, size_t) = n_nest;
		*owned = arr;
	}
	/* Pass 2: values. Lengths were checked above. */
	for (size_t off = 0; off < len;) {
		uint16_t tag = gp_get_le16(p + off);
		uint32_t flen = gp_get_le32(p + off + 2);
		const uint8_t *v = p + off + GP_MSG_FIELD_HEADER_SIZE;
		const struct field *f = find_field(s, tag);

		off += GP_MSG_FIELD_HEADER_SIZE + flen;
		if (!f)
			continue;
		if (f->kind == K_NESTED) {
			r = decode_body(f->sub, arr + k++ * f->sub->size, v,
					flen, NULL);
		} else {
			r = decode_value(f, obj, v, flen);
		}
		if (r < 0)
			return r;
	}
	if (s->validate)
		return s->validate(obj);
	return 0;
}

int gp_msg_peek(const uint8_t *buf, size_t len, struct gp_msg_header *ret_header)
{
	uint32_t body;

	if (len > GP_MSG_MAX_SIZE)
		return -EMSGSIZE;
	if (!buf || len < GP_MSG_HEADER_SIZE)
		return -EBADMSG;
	body = gp_get_le32(buf + 4);
	if (body != len - GP_MSG_HEADER_SIZE)
		return -EBADMSG;
	ret_header->version = buf[0];
	ret_header->type = buf[1];
	ret_header->flags = gp_get_le16(buf + 2);
	ret_header->body_len = body;
	return 0;
}

int gp_msg_decode(const uint8_t *buf, size_t len, struct gp_msg *ret_msg)
{
	struct gp_msg_header h;
	const struct schema *s;
	struct gp_msg msg;
	int r;

	r = gp_msg_peek(buf, len, &h);
	if (r < 0)
		return r;
	if (h.version < GP_MSG_VERSION_MIN || h.version > GP_MSG_VERSION)
		return -EPROTONOSUPPORT;
	memset(&msg, 0, sizeof(msg));
	msg.version = h.version;
	msg.type = h.type;
	msg.flags = h.flags;
	s = schema_of(h.type);
	if (!s) {
		*ret_msg = msg;
		return GP_MSG_UNKNOWN_TYPE;
	}
	r = decode_body(s, &msg.u, buf + GP_MSG_HEADER_SIZE, h.body_len,
			&msg.owned_);
	if (r < 0) {
		free(msg.owned_);
		return r;
	}
	*ret_msg = msg;
	return 0;
}

void gp_msg_init(struct gp_msg *msg, enum gp_msg_type type)
{
	memset(msg, 0, sizeof(*msg));
	msg->type = (uint8_t)type;
}

void gp_msg_finish(struct gp_msg *msg)
{
	if (!msg)
		return;
	free(msg->owned_);
	memset(msg, 0, sizeof(*msg));
}

void gp_msg_update_item_put(uint8_t *items, size_t i, uint32_t epoch,
			    uint64_t minibatch, float loss)
{
	uint8_t *p = items + i * GP_MSG_ITEM_SIZE;

	gp_put_le32(p, epoch);
	gp_put_le64(p + 4, minibatch);
	gp_put_lef32(p + 12, loss);
}

void gp_msg_update_item(const struct gp_msg_update *u, size_t i,
			uint32_t *ret_epoch, uint64_t *ret_minibatch,
			float *ret_loss)
{
	const uint8_t *p = u->items + i * GP_MSG_ITEM_SIZE;

	*ret_epoch = gp_get_le32(p);
	*ret_minibatch = gp_get_le64(p + 4);
	*ret_loss = gp_get_lef32(p + 12);
}

void gp_msg_verify_item_put(uint8_t *items, size_t i, uint32_t epoch,
			    uint64_t minibatch, float lr, uint32_t samples)
{
	uint8_t *p = items + i * GP_MSG_VERIFY_ITEM_SIZE;

	gp_put_le32(p, epoch);
	gp_put_le64(p + 4, minibatch);
	gp_put_lef32(p + 12, lr);
	gp_put_le32(p + 16, samples);
}

void gp_msg_verify_item(const struct gp_msg_verify_task *t, size_t i,
			uint32_t *ret_epoch, uint64_t *ret_minibatch,
			float *ret_lr, uint32_t *ret_samples)
{
	const uint8_t *p = t->items + i * GP_MSG_VERIFY_ITEM_SIZE;

	*ret_epoch = gp_get_le32(p);
	*ret_minibatch = gp_get_le64(p + 4);
	*ret_lr = gp_get_lef32(p + 12);
	*ret_samples = gp_get_le32(p + 16);
}

uint32_t gp_msg_minibatch_index(const struct gp_msg_minibatch *mb, size_t i)
{
	if (!mb->indices || i >= mb->indices_len / 4)
		return 0;
	return gp_get_le32(mb->indices + 4 * i);
}
