/* Unit tests of proto/msg: round trips of every type, tolerance of unknown
 * types and fields, strictness about lengths, versions and limits, and the
 * f16/int8 tensor encodings.
 *
 * With `--write-corpus DIR` it instead writes one encoded sample of every
 * type into DIR (how tests/fuzz/corpus/msg/ was made). */
#include "msg.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gp-endian.h"
#include "test.h"

static float vals_a[300];
static float vals_b[7];
static uint8_t pixels[3 * 784];
static uint8_t labels[3] = { 1, 9, 0 };
static uint8_t indices[4 * 3] = { 1, 0, 0, 0, 2, 0, 0, 0, 0xff, 0xff, 0, 0 };
static const uint8_t token_id[GP_MSG_TOKEN_ID_SIZE] = { 1, 2, 3, 4, 5, 6, 7, 8 };
static struct gp_msg_device devices[2];
static struct gp_msg_shard_version have[3];
static struct gp_msg_block blocks[3];
/* VERIFY_TASK's two items: samples 1 and 2, the three of indices[]. */
static uint8_t verify_items[2 * GP_MSG_VERIFY_ITEM_SIZE];

static void init_data(void)
{
	for (size_t i = 0; i < 300; i++)
		vals_a[i] = (float)((int)i - 150) * 0.0625f;
	for (size_t i = 0; i < 7; i++)
		vals_b[i] = 1.0f / (float)(i + 1);
	for (size_t i = 0; i < sizeof(pixels); i++)
		pixels[i] = (uint8_t)(i * 7);
	devices[0] = (struct gp_msg_device){ GP_DEVICE_GPU, "Intel(R) UHD 620",
					     812.5f, 9100.0f, 1u << 30 };
	devices[1] = (struct gp_msg_device){ GP_DEVICE_CPU, "cpu (4 threads)",
					     55.25f, 1200.0f, 0 };
	have[0] = (struct gp_msg_shard_version){ 0, 0, 17 };
	have[1] = (struct gp_msg_shard_version){ 0, 64, 18 };
	have[2] = (struct gp_msg_shard_version){ 5, 0, UINT64_MAX };
	memset(blocks, 0, sizeof(blocks));
	blocks[0].tensor = 0;
	blocks[0].row_start = 64;
	blocks[0].rows = 1;
	blocks[0].version = 99;
	blocks[0].count = 300;
	blocks[0].dtype = GP_DTYPE_F32;
	blocks[0].values = vals_a;
	blocks[1].tensor = 3;
	blocks[1].count = 7;
	blocks[1].dtype = GP_DTYPE_F16;
	blocks[1].values = vals_b;
	blocks[2].tensor = 5; /* an empty block: metadata only */
	blocks[2].dtype = GP_DTYPE_F32;
	gp_msg_verify_item_put(verify_items, 0, 2, 933, 0.05f, 1);
	gp_msg_verify_item_put(verify_items, 1, 2, 934, 0.025f, 2);
}

/* A sample of each type with every field set to something non-zero. */
static void sample(struct gp_msg *m, uint8_t type)
{
	gp_msg_init(m, type);
	switch (type) {
	case GP_MSG_JOIN:
		strcpy(m->u.join.name, "alice's laptop");
		strcpy(m->u.join.release, "0.1.0");
		m->u.join.token_id = token_id;
		m->u.join.token_id_len = sizeof(token_id);
		m->u.join.caps = GP_CAP_F16 | (1u << 1);
		m->u.join.devices = devices;
		m->u.join.n_devices = 2;
		strcpy(m->u.join.public_name, "alice");
		break;
	case GP_MSG_WELCOME:
		m->u.welcome.agent_id = 42;
		m->u.welcome.job_id = 7;
		strcpy(m->u.welcome.model, "784-256-128-10");
		m->u.welcome.batch_size = 64;
		m->u.welcome.staleness = 3;
		m->u.welcome.heartbeat_ms = 5000;
		m->u.welcome.caps = GP_CAP_F16 | GP_CAP_MODEL_TEXT;
		m->u.welcome.epoch = 2;
		m->u.welcome.model_text = "784-256-128-10";
		m->u.welcome.model_text_len = 14;
		m->u.welcome.seed = 0x0123456789abcdefull;
		break;
	case GP_MSG_REJECT:
		m->u.reject.code = GP_REJECT_TOKEN_EXPIRED;
		strcpy(m->u.reject.text, "token expired at 2024-01-01");
		m->u.reject.retry_after_ms = 1500;
		m->u.reject.version_min = 1;
		m->u.reject.version_max = 3;
		break;
	case GP_MSG_HEARTBEAT:
		m->u.heartbeat.seq = 12;
		m->u.heartbeat.time_us = 123456789012ull;
		m->u.heartbeat.echo_time_us = 123456000000ull;
		m->u.heartbeat.echo_delay_us = 250;
		break;
	case GP_MSG_WORK_REQUEST:
		m->u.work_request.count = 2;
		break;
	case GP_MSG_MINIBATCH:
		m->u.minibatch.epoch = 1;
		m->u.minibatch.minibatch = 933;
		m->u.minibatch.clock = 40;
		m->u.minibatch.samples = 3;
		m->u.minibatch.features = 784;
		m->u.minibatch.pixels = pixels;
		m->u.minibatch.pixels_len = sizeof(pixels);
		m->u.minibatch.labels = labels;
		m->u.minibatch.labels_len = sizeof(labels);
		m->u.minibatch.indices = indices;
		m->u.minibatch.indices_len = sizeof(indices);
		break;
	case GP_MSG_PARAM_PULL:
		m->u.param_pull.clock = 40;
		m->u.param_pull.min_version = 16;
		m->u.param_pull.have = have;
		m->u.param_pull.n_have = 3;
		break;
	case GP_MSG_PARAM_SHARDS:
		m->u.param_shards.clock = 38;
		m->u.param_shards.blocks = blocks;
		m->u.param_shards.n_blocks = 3;
		break;
	case GP_MSG_UPDATE:
		m->u.update.epoch = 1;
		m->u.update.minibatch = 933;
		m->u.update.clock = 40;
		m->u.update.samples = 64;
		m->u.update.loss = 0.4375f;
		m->u.update.grad_norm = 3.5f;
		m->u.update.compute_us = 18000;
		m->u.update.held_us = 25000;
		m->u.update.part = 1;
		m->u.update.parts = 2;
		m->u.update.blocks = blocks;
		m->u.update.n_blocks = 2;
		break;
	case GP_MSG_CLOCK:
		m->u.clock.clock = 41;
		m->u.clock.min_clock = 38;
		break;
	case GP_MSG_STATS:
		m->u.stats.epoch = 3;
		m->u.stats.updates_accepted = 1000;
		m->u.stats.samples_credited = 64000;
		m->u.stats.loss = 0.3f;
		m->u.stats.accuracy = 0.875f;
		m->u.stats.agents_live = 4;
		strcpy(m->u.stats.job_name, "fashion-mlp");
		m->u.stats.epochs = 5;
		m->u.stats.progress = 0.625f;
		m->u.stats.eta_s = 95;
		m->u.stats.test_loss = 0.375f;
		m->u.stats.eval_epochs = 3;
		m->u.stats.credit_mflop = UINT64_C(123456789012);
		m->u.stats.job_id = 2;
		m->u.stats.state = GP_JOB_STATE_TRAINING;
		m->u.stats.samples_per_s = 5120.5f;
		break;
	case GP_MSG_PROFILE:
		strcpy(m->u.profile.public_name, "Zoë's rig");
		break;
	case GP_MSG_PAUSE:
		m->u.pause.reason = GP_PAUSE_ON_BATTERY;
		m->u.pause.duration_ms = 60000;
		break;
	case GP_MSG_RESUME:
		break;
	case GP_MSG_BYE:
		m->u.bye.reason = GP_BYE_SHUTDOWN;
		strcpy(m->u.bye.text, "bye");
		break;
	case GP_MSG_DATA_REQUEST:
		m->u.data_request.shard = 44;
		break;
	case GP_MSG_DATA_SHARD:
		m->u.data_shard.shard = 44;
		m->u.data_shard.data = (const uint8_t *)"shard bytes";
		m->u.data_shard.data_len = 11;
		break;
	case GP_MSG_VERIFY_TASK:
		m->u.verify_task.task = UINT64_C(0x1122334455667788);
		m->u.verify_task.form = GP_UPDATE_SUMS;
		m->u.verify_task.momentum = 0.9f;
		m->u.verify_task.items = verify_items;
		m->u.verify_task.items_len = sizeof(verify_items);
		m->u.verify_task.indices = indices;
		m->u.verify_task.indices_len = sizeof(indices);
		m->u.verify_task.blocks = blocks;
		m->u.verify_task.n_blocks = 3;
		break;
	case GP_MSG_VERIFY_RESULT:
		m->u.verify_result.task = UINT64_C(0x1122334455667788);
		m->u.verify_result.status = GP_VERIFY_COMPUTED;
		m->u.verify_result.compute_us = 18000;
		m->u.verify_result.blocks = blocks;
		m->u.verify_result.n_blocks = 2;
		break;
	}
}

/* The blocks of a decoded message of a type that has them, else NULL. */
static struct gp_msg_block *msg_blocks(struct gp_msg *d, size_t *ret_n)
{
	switch (d->type) {
	case GP_MSG_PARAM_SHARDS:
		*ret_n = d->u.param_shards.n_blocks;
		return d->u.param_shards.blocks;
	case GP_MSG_UPDATE:
		*ret_n = d->u.update.n_blocks;
		return d->u.update.blocks;
	case GP_MSG_VERIFY_TASK:
		*ret_n = d->u.verify_task.n_blocks;
		return d->u.verify_task.blocks;
	case GP_MSG_VERIFY_RESULT:
		*ret_n = d->u.verify_result.n_blocks;
		return d->u.verify_result.blocks;
	default:
		*ret_n = 0;
		return NULL;
	}
}

/* A type number left free between known ones (another release line's). */
static bool type_hole(uint8_t t)
{
	return strcmp(gp_msg_type_name(t), "unknown") == 0;
}

static uint8_t *encode(const struct gp_msg *m, size_t *len)
{
	uint8_t *buf = NULL;

	ASSERT_OK(gp_msg_encode_alloc(m, &buf, len));
	ASSERT_NOT_NULL(buf);
	return buf;
}

/* Decoded blocks carry raw bytes; give them host values again so that the
 * message can be re-encoded. out holds enough floats for all blocks. */
static void blocks_to_values(struct gp_msg_block *b, size_t n, float *out)
{
	for (size_t i = 0; i < n; i++) {
		ASSERT_OK(gp_msg_block_read(&b[i], out, b[i].count));
		b[i].values = out;
		out += b[i].count;
	}
}

/* Decoding then re-encoding gives the same bytes: every field survived. */
/* m as an UPDATE of the one block b, encoded. */
static uint8_t *encode_block(struct gp_msg *m, struct gp_msg_block *b,
			     size_t *len)
{
	gp_msg_init(m, GP_MSG_UPDATE);
	m->u.update.blocks = b;
	m->u.update.n_blocks = 1;
	return encode(m, len);
}

static void check_reencode(const uint8_t *buf, size_t len)
{
	static float scratch[4096];
	struct gp_msg_block *b;
	struct gp_msg d;
	uint8_t *again;
	size_t len2, n;

	ASSERT_OK(gp_msg_decode(buf, len, &d));
	b = msg_blocks(&d, &n);
	blocks_to_values(b, n, scratch);
	again = encode(&d, &len2);
	ASSERT_EQ(len2, len);
	ASSERT_MEM_EQ(again, buf, len);
	free(again);
	gp_msg_finish(&d);
}

static void test_round_trip(void)
{
	for (uint8_t t = 1; t <= GP_MSG_TYPE_MAX; t++) {
		struct gp_msg m, d;
		uint8_t *buf;
		size_t len, size;

		if (type_hole(t))
			continue;
		sample(&m, t);
		ASSERT_OK(gp_msg_size(&m, &size));
		buf = encode(&m, &len);
		ASSERT_EQ(len, size);
		ASSERT_EQ(buf[0], GP_MSG_VERSION);
		ASSERT_EQ(buf[1], t);
		ASSERT_OK(gp_msg_decode(buf, len, &d));
		ASSERT_EQ(d.type, t);
		ASSERT_EQ(d.version, GP_MSG_VERSION);
		gp_msg_finish(&d);
		check_reencode(buf, len);
		free(buf);
	}
}

/* Explicit checks of a few fields, so that a symmetric encoder/decoder bug
 * (both sides wrong the same way) cannot hide behind the re-encode test. */
static void test_fields(void)
{
	struct gp_msg m, d;
	uint8_t *buf;
	size_t len;
	float out[300];

	sample(&m, GP_MSG_JOIN);
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_STR_EQ(d.u.join.name, "alice's laptop");
	ASSERT_STR_EQ(d.u.join.release, "0.1.0");
	ASSERT_EQ(d.u.join.token_id_len, GP_MSG_TOKEN_ID_SIZE);
	ASSERT_MEM_EQ(d.u.join.token_id, token_id, sizeof(token_id));
	ASSERT_EQ(d.u.join.n_devices, 2);
	ASSERT_EQ(d.u.join.devices[0].kind, GP_DEVICE_GPU);
	ASSERT_STR_EQ(d.u.join.devices[0].name, "Intel(R) UHD 620");
	ASSERT_NEAR(d.u.join.devices[0].gflops, 812.5, 0);
	ASSERT_UINT_EQ(d.u.join.devices[0].memory, 1u << 30);
	ASSERT_STR_EQ(d.u.join.devices[1].name, "cpu (4 threads)");
	gp_msg_finish(&d);
	free(buf);

	/* A known byte layout: WORK_REQUEST count 2. */
	sample(&m, GP_MSG_WORK_REQUEST);
	buf = encode(&m, &len);
	{
		const uint8_t want[] = { 1, 5, 0, 0, 10, 0, 0, 0, /* header */
					 1, 0, 4, 0, 0, 0, 2, 0, 0, 0 };

		ASSERT_EQ(len, sizeof(want));
		ASSERT_MEM_EQ(buf, want, len);
	}
	free(buf);

	/* REJECT carries the versions its sender speaks as tags 4 and 5,
	 * one byte each, after code, text and retry_after_ms. */
	sample(&m, GP_MSG_REJECT);
	buf = encode(&m, &len);
	ASSERT(len > 14);
	{
		const uint8_t want[] = { 4, 0, 1, 0, 0, 0, 1,
					 5, 0, 1, 0, 0, 0, 3 };

		ASSERT_MEM_EQ(buf + len - sizeof(want), want, sizeof(want));
	}
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.reject.version_min, 1);
	ASSERT_EQ(d.u.reject.version_max, 3);
	gp_msg_finish(&d);
	free(buf);

	sample(&m, GP_MSG_MINIBATCH);
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	/* Zero-copy: the pixels point into the input. */
	ASSERT(d.u.minibatch.pixels > buf && d.u.minibatch.pixels < buf + len);
	ASSERT_EQ(d.u.minibatch.pixels_len, sizeof(pixels));
	ASSERT_MEM_EQ(d.u.minibatch.pixels, pixels, sizeof(pixels));
	ASSERT_MEM_EQ(d.u.minibatch.labels, labels, sizeof(labels));
	ASSERT_EQ(gp_msg_minibatch_index(&d.u.minibatch, 0), 1);
	ASSERT_EQ(gp_msg_minibatch_index(&d.u.minibatch, 2), 65535);
	ASSERT_EQ(gp_msg_minibatch_index(&d.u.minibatch, 3), 0);
	ASSERT_UINT_EQ(d.u.minibatch.minibatch, 933);
	gp_msg_finish(&d);
	free(buf);

	sample(&m, GP_MSG_PARAM_SHARDS);
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.param_shards.n_blocks, 3);
	ASSERT_EQ(d.u.param_shards.blocks[0].row_start, 64);
	ASSERT_UINT_EQ(d.u.param_shards.blocks[0].version, 99);
	ASSERT_EQ(d.u.param_shards.blocks[0].raw_len, 300 * 4);
	ASSERT_OK(gp_msg_block_read(&d.u.param_shards.blocks[0], out, 300));
	ASSERT_MEM_EQ(out, vals_a, sizeof(vals_a)); /* f32 is byte-exact */
	/* The f32 payload is LE on the wire whatever the host. */
	{
		const uint8_t *raw = d.u.param_shards.blocks[0].raw;
		uint32_t u = (uint32_t)raw[0] | (uint32_t)raw[1] << 8 |
			     (uint32_t)raw[2] << 16 | (uint32_t)raw[3] << 24;
		float f;

		memcpy(&f, &u, 4);
		ASSERT_NEAR(f, vals_a[0], 0);
	}
	ASSERT_EQ(d.u.param_shards.blocks[1].dtype, GP_DTYPE_F16);
	ASSERT_EQ(d.u.param_shards.blocks[1].raw_len, 7 * 2);
	ASSERT_OK(gp_msg_block_read(&d.u.param_shards.blocks[1], out, 7));
	for (int i = 0; i < 7; i++)
		ASSERT_NEAR(out[i], vals_b[i], vals_b[i] / 1024);
	ASSERT_EQ(gp_msg_block_read(&d.u.param_shards.blocks[1], out, 6),
		  -EINVAL);
	ASSERT_EQ(d.u.param_shards.blocks[2].count, 0);
	ASSERT(d.u.param_shards.blocks[2].raw == NULL);
	ASSERT_UINT_EQ(d.u.param_shards.updates_read, 0);
	gp_msg_finish(&d);
	free(buf);

	/* updates_read (GP_CAP_OVERLAP): written only when not 0, so that
	 * a message without it is byte for byte what it was before; 14
	 * bytes more when set, and it round-trips. */
	{
		size_t plain;

		sample(&m, GP_MSG_PARAM_SHARDS);
		buf = encode(&m, &plain);
		free(buf);
		m.u.param_shards.updates_read = 0x0102030405060708ull;
		buf = encode(&m, &len);
		ASSERT_EQ(len, plain + 6 + 8);
		ASSERT_OK(gp_msg_decode(buf, len, &d));
		ASSERT_UINT_EQ(d.u.param_shards.updates_read,
			       0x0102030405060708ull);
		ASSERT_EQ(d.u.param_shards.n_blocks, 3);
		gp_msg_finish(&d);
		/* The tag-3 field is the last one written: its length is 4
		 * bytes before its 8 bytes of value. A length other than 8
		 * is refused. */
		ASSERT_EQ(buf[len - 8 - 6], 3);
		ASSERT_EQ(buf[len - 8 - 4], 8);
		buf[len - 8 - 4] = 7;
		ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
		free(buf);
	}

	sample(&m, GP_MSG_UPDATE);
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_NEAR(d.u.update.loss, 0.4375, 0);
	ASSERT_EQ(d.u.update.part, 1);
	ASSERT_EQ(d.u.update.parts, 2);
	ASSERT_UINT_EQ(d.u.update.compute_us, 18000);
	ASSERT_UINT_EQ(d.u.update.held_us, 25000);
	gp_msg_finish(&d);
	free(buf);
	/* held_us 0 is not written (its 6-byte field header and 8 bytes),
	 * and absent reads as 0. */
	{
		size_t with = len;

		sample(&m, GP_MSG_UPDATE);
		m.u.update.held_us = 0;
		buf = encode(&m, &len);
		ASSERT_EQ(with - len, 14);
		ASSERT_OK(gp_msg_decode(buf, len, &d));
		ASSERT_UINT_EQ(d.u.update.held_us, 0);
		gp_msg_finish(&d);
		free(buf);
	}

	/* A group's update: its items round-trip, form and items go
	 * together, and a form from a newer release is refused. */
	{
		uint8_t items[3 * GP_MSG_ITEM_SIZE];
		uint32_t e;
		uint64_t mb;
		float loss;

		gp_msg_update_item_put(items, 0, 2, 933, 0.5f);
		gp_msg_update_item_put(items, 1, 2, 934, 0.25f);
		gp_msg_update_item_put(items, 2, 3, UINT64_MAX, -1.0f);
		sample(&m, GP_MSG_UPDATE);
		m.u.update.form = GP_UPDATE_SUMS;
		m.u.update.items = items;
		m.u.update.items_len = sizeof(items);
		buf = encode(&m, &len);
		ASSERT_OK(gp_msg_decode(buf, len, &d));
		ASSERT_EQ(d.u.update.form, GP_UPDATE_SUMS);
		ASSERT_EQ(d.u.update.items_len, sizeof(items));
		gp_msg_update_item(&d.u.update, 1, &e, &mb, &loss);
		ASSERT_EQ(e, 2);
		ASSERT_UINT_EQ(mb, 934);
		ASSERT_NEAR(loss, 0.25, 0);
		gp_msg_update_item(&d.u.update, 2, &e, &mb, &loss);
		ASSERT_EQ(e, 3);
		ASSERT_UINT_EQ(mb, UINT64_MAX);
		ASSERT_NEAR(loss, -1.0, 0);
		gp_msg_finish(&d);
		free(buf);

		m.u.update.items_len = sizeof(items) - 1; /* not whole items */
		buf = encode(&m, &len);
		ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
		free(buf);
		m.u.update.items_len = 0;                  /* sums, no items */
		buf = encode(&m, &len);
		ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
		free(buf);
		m.u.update.form = GP_UPDATE_DELTA + 1;
		buf = encode(&m, &len);
		ASSERT_EQ(gp_msg_decode(buf, len, &d), -EPROTONOSUPPORT);
		free(buf);
	}

	/* JOIN's data fingerprint and MINIBATCH's group. */
	sample(&m, GP_MSG_JOIN);
	m.u.join.data_fingerprint = UINT64_C(0xae65dccd2ed60e0a);
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_UINT_EQ(d.u.join.data_fingerprint, UINT64_C(0xae65dccd2ed60e0a));
	gp_msg_finish(&d);
	free(buf);
	sample(&m, GP_MSG_MINIBATCH);
	m.u.minibatch.group = 29;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.minibatch.group, 29);
	gp_msg_finish(&d);
	free(buf);

	/* RESUME: a header and nothing else. */
	sample(&m, GP_MSG_RESUME);
	buf = encode(&m, &len);
	ASSERT_EQ(len, GP_MSG_HEADER_SIZE);
	free(buf);
}

static void set_body_len(uint8_t *buf, size_t len)
{
	uint32_t b = (uint32_t)(len - GP_MSG_HEADER_SIZE);

	for (int i = 0; i < 4; i++)
		buf[4 + i] = (uint8_t)(b >> (8 * i));
}

/* Writes one TLV at p; returns its size. */
static size_t put_field(uint8_t *p, uint16_t tag, const void *v, uint32_t vlen)
{
	p[0] = (uint8_t)tag;
	p[1] = (uint8_t)(tag >> 8);
	for (int i = 0; i < 4; i++)
		p[2 + i] = (uint8_t)(vlen >> (8 * i));
	memcpy(p + 6, v, vlen);
	return 6 + vlen;
}

/* buf gets a field appended after len bytes and its header's body length
 * fixed up. Returns the new length. */
static size_t append_field(uint8_t *buf, size_t len, uint16_t tag,
			   const void *v, uint32_t vlen)
{
	len += put_field(buf + len, tag, v, vlen);
	set_body_len(buf, len);
	return len;
}

/* DATA_REQUEST, DATA_SHARD and WELCOME.data_manifest: the fields, and
 * the bounds on the shard and the manifest. */
static void test_data_shards(void)
{
	static uint8_t big[GP_MSG_SHARD_MAX + 1];
	uint8_t manifest[100];
	struct gp_msg m, d;
	uint8_t *buf;
	size_t len;

	memset(manifest, 0x5a, sizeof(manifest));
	sample(&m, GP_MSG_WELCOME);
	m.u.welcome.caps |= GP_CAP_DATA_SHARDS;
	m.u.welcome.data_manifest = manifest;
	m.u.welcome.data_manifest_len = sizeof(manifest);
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.welcome.caps & GP_CAP_DATA_SHARDS, GP_CAP_DATA_SHARDS);
	ASSERT_EQ(d.u.welcome.data_manifest_len, sizeof(manifest));
	ASSERT_MEM_EQ(d.u.welcome.data_manifest, manifest, sizeof(manifest));
	gp_msg_finish(&d);
	free(buf);

	sample(&m, GP_MSG_DATA_SHARD);
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.type, GP_MSG_DATA_SHARD);
	ASSERT_EQ(d.u.data_shard.shard, 44);
	ASSERT_EQ(d.u.data_shard.data_len, 11);
	ASSERT_MEM_EQ(d.u.data_shard.data, "shard bytes", 11);
	ASSERT_STR_EQ(gp_msg_type_name(GP_MSG_DATA_SHARD), "DATA_SHARD");
	gp_msg_finish(&d);
	free(buf);

	/* One byte over the largest shard: malformed. */
	m.u.data_shard.data = big;
	m.u.data_shard.data_len = sizeof(big);
	buf = encode(&m, &len);
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
	free(buf);
	m.u.data_shard.data_len = GP_MSG_SHARD_MAX;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	gp_msg_finish(&d);
	free(buf);

	/* A DATA_REQUEST whose shard field is two bytes: malformed. */
	{
		uint8_t raw[] = { GP_MSG_VERSION, GP_MSG_DATA_REQUEST, 0, 0,
				  8, 0, 0, 0, 1, 0, 2, 0, 0, 0, 7, 0 };

		ASSERT_EQ(gp_msg_decode(raw, sizeof(raw), &d), -EBADMSG);
		raw[4] = 10;
		raw[10] = 4;
		ASSERT_EQ(gp_msg_decode(raw, 14, &d), -EBADMSG);
	}
}

/* An inner-AdamW session: WELCOME's settings block and UPDATE's delta
 * form round-trip; a WELCOME without the block encodes as before (no tag
 * 12), and one with a value out of range is refused whole. */
static void test_inner_adamw(void)
{
	struct gp_msg_inner_adamw ia = {
		.beta1 = 0.9f,
		.beta2 = 0.95f,
		.eps = 1e-8f,
		.weight_decay = 0.1f,
		.clip_norm = 1.0f,
	};
	uint8_t items[2 * GP_MSG_ITEM_SIZE];
	struct gp_msg m, d;
	uint8_t *buf, *plain, *capped;
	size_t len, plain_len;
	uint32_t e;
	uint64_t mb;
	float loss;

	sample(&m, GP_MSG_WELCOME);
	plain = encode(&m, &plain_len);
	m.u.welcome.caps |= GP_CAP_INNER_ADAMW;
	capped = encode(&m, &len);
	/* Only the caps' value differs: nothing else is written. */
	ASSERT_EQ(len, plain_len);
	m.u.welcome.inner_adamw = &ia;
	m.u.welcome.n_inner_adamw = 1;
	buf = encode(&m, &len);
	/* The block comes last: one nested field (header) of five f32
	 * fields (header + 4) after the bytes a WELCOME had before. */
	ASSERT_EQ(len, plain_len + GP_MSG_FIELD_HEADER_SIZE +
			       5 * (GP_MSG_FIELD_HEADER_SIZE + 4));
	ASSERT_MEM_EQ(buf + GP_MSG_HEADER_SIZE, capped + GP_MSG_HEADER_SIZE,
		      plain_len - GP_MSG_HEADER_SIZE);
	ASSERT_EQ(gp_get_le16(buf + plain_len), 12);
	free(capped);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.welcome.caps & GP_CAP_INNER_ADAMW, GP_CAP_INNER_ADAMW);
	ASSERT_EQ(d.u.welcome.n_inner_adamw, 1);
	ASSERT_NEAR(d.u.welcome.inner_adamw->beta1, 0.9f, 0);
	ASSERT_NEAR(d.u.welcome.inner_adamw->beta2, 0.95f, 0);
	ASSERT_NEAR(d.u.welcome.inner_adamw->eps, 1e-8f, 0);
	ASSERT_NEAR(d.u.welcome.inner_adamw->weight_decay, 0.1f, 0);
	ASSERT_NEAR(d.u.welcome.inner_adamw->clip_norm, 1.0f, 0);
	ASSERT_UINT_EQ(d.u.welcome.seed, m.u.welcome.seed);
	gp_msg_finish(&d);
	free(buf);
	/* The plain WELCOME decodes without the block. */
	ASSERT_OK(gp_msg_decode(plain, plain_len, &d));
	ASSERT(d.u.welcome.inner_adamw == NULL);
	ASSERT_EQ(d.u.welcome.n_inner_adamw, 0);
	gp_msg_finish(&d);
	free(plain);

	ia.beta2 = 1.0f;                 /* out of range: malformed */
	buf = encode(&m, &len);
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
	free(buf);
	ia.beta2 = 0.95f;
	ia.eps = 0;
	buf = encode(&m, &len);
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
	free(buf);
	ia.eps = 1e-8f;
	ia.clip_norm = NAN;
	buf = encode(&m, &len);
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
	free(buf);
	ia.clip_norm = 1.0f;

	/* A delta: items like a group's, one set of blocks. */
	gp_msg_update_item_put(items, 0, 1, 17, 2.5f);
	gp_msg_update_item_put(items, 1, 1, 18, 2.25f);
	sample(&m, GP_MSG_UPDATE);
	m.u.update.form = GP_UPDATE_DELTA;
	m.u.update.items = items;
	m.u.update.items_len = sizeof(items);
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.update.form, GP_UPDATE_DELTA);
	ASSERT_EQ(d.u.update.items_len, sizeof(items));
	ASSERT_EQ(d.u.update.n_blocks, m.u.update.n_blocks);
	gp_msg_update_item(&d.u.update, 1, &e, &mb, &loss);
	ASSERT_EQ(e, 1);
	ASSERT_UINT_EQ(mb, 18);
	ASSERT_NEAR(loss, 2.25, 0);
	gp_msg_finish(&d);
	free(buf);
	m.u.update.items_len = 0;        /* a delta names its minibatches */
	buf = encode(&m, &len);
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
	free(buf);
}

/* Encodes m and returns what decoding it gives (a decoded message is
 * released again). */
static int decode_rc(const struct gp_msg *m)
{
	struct gp_msg d;
	uint8_t *buf;
	size_t len;
	int r;

	buf = encode(m, &len);
	r = gp_msg_decode(buf, len, &d);
	if (r >= 0)
		gp_msg_finish(&d);
	free(buf);
	return r;
}

/* VERIFY_TASK and VERIFY_RESULT (GP_CAP_VERIFY): the item layout, both
 * round trips field by field with f32 and f16 blocks, and every task a
 * member could not recompute as asked, or a result that contradicts its
 * status, refused. */
static void test_verify(void)
{
	uint8_t items[GP_MSG_GROUP_MAX + 1][GP_MSG_VERIFY_ITEM_SIZE];
	struct gp_msg_block qb = { .count = 7, .dtype = GP_DTYPE_Q8,
				   .values = vals_b };
	struct gp_msg_block one[1];
	struct gp_msg m, d;
	float out[300];
	uint8_t *buf;
	size_t len;
	uint32_t e, n;
	uint64_t mb;
	float lr;

	/* An item's bytes: u32 epoch, u64 minibatch, f32 lr, u32 samples,
	 * little-endian. */
	{
		static const uint8_t want[GP_MSG_VERIFY_ITEM_SIZE] = {
			3, 0, 0, 0,                          /* epoch 3 */
			0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
			0, 0, 0x80, 0x3e,                    /* lr 0.25 */
			64, 0, 0, 0,                         /* samples 64 */
		};
		struct gp_msg_verify_task t = { .items = items[0],
						.items_len = sizeof(items) };

		memset(items, 0xee, sizeof(items));
		gp_msg_verify_item_put(items[0], 1, 3,
				       UINT64_C(0x1122334455667788), 0.25f, 64);
		ASSERT_MEM_EQ(items[1], want, sizeof(want));
		ASSERT_EQ(items[0][GP_MSG_VERIFY_ITEM_SIZE - 1], 0xee);
		ASSERT_EQ(items[2][0], 0xee);
		gp_msg_verify_item(&t, 1, &e, &mb, &lr, &n);
		ASSERT_EQ(e, 3);
		ASSERT_UINT_EQ(mb, UINT64_C(0x1122334455667788));
		ASSERT_NEAR(lr, 0.25, 0);
		ASSERT_EQ(n, 64);
	}

	/* A task of form SUMS, field by field (f32, f16 and an empty block). */
	sample(&m, GP_MSG_VERIFY_TASK);
	buf = encode(&m, &len);
	ASSERT_EQ(buf[1], 18);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.type, GP_MSG_VERIFY_TASK);
	ASSERT_UINT_EQ(d.u.verify_task.task, UINT64_C(0x1122334455667788));
	ASSERT_EQ(d.u.verify_task.form, GP_UPDATE_SUMS);
	ASSERT_NEAR(d.u.verify_task.momentum, 0.9f, 0);
	ASSERT_EQ(d.u.verify_task.items_len, 2 * GP_MSG_VERIFY_ITEM_SIZE);
	gp_msg_verify_item(&d.u.verify_task, 0, &e, &mb, &lr, &n);
	ASSERT_EQ(e, 2);
	ASSERT_UINT_EQ(mb, 933);
	ASSERT_NEAR(lr, 0.05f, 0);
	ASSERT_EQ(n, 1);
	gp_msg_verify_item(&d.u.verify_task, 1, &e, &mb, &lr, &n);
	ASSERT_EQ(e, 2);
	ASSERT_UINT_EQ(mb, 934);
	ASSERT_NEAR(lr, 0.025f, 0);
	ASSERT_EQ(n, 2);
	/* Zero-copy, as MINIBATCH's. */
	ASSERT(d.u.verify_task.indices > buf &&
	       d.u.verify_task.indices < buf + len);
	ASSERT_EQ(d.u.verify_task.indices_len, sizeof(indices));
	ASSERT_MEM_EQ(d.u.verify_task.indices, indices, sizeof(indices));
	ASSERT_EQ(d.u.verify_task.n_blocks, 3);
	ASSERT_EQ(d.u.verify_task.blocks[0].dtype, GP_DTYPE_F32);
	ASSERT_EQ(d.u.verify_task.blocks[0].row_start, 64);
	ASSERT_OK(gp_msg_block_read(&d.u.verify_task.blocks[0], out, 300));
	ASSERT_MEM_EQ(out, vals_a, sizeof(vals_a));
	ASSERT_EQ(d.u.verify_task.blocks[1].dtype, GP_DTYPE_F16);
	ASSERT_EQ(d.u.verify_task.blocks[1].tensor, 3);
	ASSERT_EQ(d.u.verify_task.blocks[1].raw_len, 7 * 2);
	ASSERT_OK(gp_msg_block_read(&d.u.verify_task.blocks[1], out, 7));
	for (int i = 0; i < 7; i++)
		ASSERT_NEAR(out[i], vals_b[i], vals_b[i] / 1024);
	ASSERT_EQ(d.u.verify_task.blocks[2].tensor, 5);
	ASSERT_EQ(d.u.verify_task.blocks[2].count, 0);
	gp_msg_finish(&d);
	free(buf);

	/* A gradient's task: one item, f16 blocks only, momentum 0. */
	one[0] = blocks[1];
	m.u.verify_task.form = GP_UPDATE_GRADIENT;
	m.u.verify_task.momentum = 0;
	m.u.verify_task.items = verify_items + GP_MSG_VERIFY_ITEM_SIZE;
	m.u.verify_task.items_len = GP_MSG_VERIFY_ITEM_SIZE;
	m.u.verify_task.indices_len = 8;
	m.u.verify_task.blocks = one;
	m.u.verify_task.n_blocks = 1;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.verify_task.form, GP_UPDATE_GRADIENT);
	ASSERT_NEAR(d.u.verify_task.momentum, 0, 0);
	gp_msg_verify_item(&d.u.verify_task, 0, &e, &mb, &lr, &n);
	ASSERT_UINT_EQ(mb, 934);
	ASSERT_EQ(n, 2);
	ASSERT_EQ(d.u.verify_task.indices_len, 8);
	ASSERT_EQ(d.u.verify_task.n_blocks, 1);
	ASSERT_EQ(d.u.verify_task.blocks[0].dtype, GP_DTYPE_F16);
	gp_msg_finish(&d);
	free(buf);

	/* Refused: what a member could not recompute as asked. */
	sample(&m, GP_MSG_VERIFY_TASK);
	ASSERT_OK(decode_rc(&m));
	m.u.verify_task.items_len = sizeof(verify_items) - 1; /* not whole */
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	m.u.verify_task.items_len = GP_MSG_VERIFY_ITEM_SIZE + 1;
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	m.u.verify_task.items_len = 0;                       /* no item */
	m.u.verify_task.indices_len = 0;
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	sample(&m, GP_MSG_VERIFY_TASK);
	m.u.verify_task.form = GP_UPDATE_GRADIENT;        /* two items */
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	/* A form this release's task does not carry: not supported, as in
	 * UPDATE. */
	m.u.verify_task.form = GP_UPDATE_DELTA;
	ASSERT_EQ(decode_rc(&m), -EPROTONOSUPPORT);
	m.u.verify_task.form = 200;
	ASSERT_EQ(decode_rc(&m), -EPROTONOSUPPORT);
	sample(&m, GP_MSG_VERIFY_TASK);
	m.u.verify_task.indices_len = 8;        /* 3 samples, 2 indices */
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	m.u.verify_task.indices_len = 0;
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	{
		uint8_t more[16] = { 0 };

		m.u.verify_task.indices = more;              /* 4 indices */
		m.u.verify_task.indices_len = sizeof(more);
		ASSERT_EQ(decode_rc(&m), -EBADMSG);
	}
	/* Samples: none in an item, and a count whose 4 bytes each wrap
	 * around 32 bits (4 * 0x40000001 = 4 mod 2^32). */
	memcpy(items, verify_items, sizeof(verify_items));
	sample(&m, GP_MSG_VERIFY_TASK);
	m.u.verify_task.items = items[0];
	gp_msg_verify_item_put(items[0], 0, 2, 933, 0.05f, 0);
	gp_msg_verify_item_put(items[0], 1, 2, 934, 0.025f, 3);
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	gp_msg_verify_item_put(items[0], 0, 2, 933, 0.05f, 1);
	gp_msg_verify_item_put(items[0], 1, 2, 934, 0.025f, 2);
	ASSERT_OK(decode_rc(&m));
	m.u.verify_task.form = GP_UPDATE_GRADIENT;
	m.u.verify_task.items_len = GP_MSG_VERIFY_ITEM_SIZE;
	m.u.verify_task.indices_len = 4;
	gp_msg_verify_item_put(items[0], 0, 2, 933, 0.05f, 1);
	ASSERT_OK(decode_rc(&m));
	gp_msg_verify_item_put(items[0], 0, 2, 933, 0.05f, 0x40000001u);
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	/* A rate that is not finite. */
	sample(&m, GP_MSG_VERIFY_TASK);
	m.u.verify_task.items = items[0];
	gp_msg_verify_item_put(items[0], 0, 2, 933, 0.05f, 1);
	gp_msg_verify_item_put(items[0], 1, 2, 934, NAN, 2);
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	gp_msg_verify_item_put(items[0], 1, 2, 934, INFINITY, 2);
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	gp_msg_verify_item_put(items[0], 1, 2, 934, -INFINITY, 2);
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	gp_msg_verify_item_put(items[0], 1, 2, 934, 0, 2); /* 0 is a rate */
	ASSERT_OK(decode_rc(&m));
	/* The momentum: [0, 1), finite. */
	sample(&m, GP_MSG_VERIFY_TASK);
	m.u.verify_task.momentum = 1.0f;
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	m.u.verify_task.momentum = -0.125f;
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	m.u.verify_task.momentum = NAN;
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	m.u.verify_task.momentum = INFINITY;
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	m.u.verify_task.momentum = nextafterf(1.0f, 0.0f);
	ASSERT_OK(decode_rc(&m));
	/* At most GP_MSG_GROUP_MAX items. */
	sample(&m, GP_MSG_VERIFY_TASK);
	{
		static uint8_t idx[4 * (GP_MSG_GROUP_MAX + 1)];

		for (size_t i = 0; i <= GP_MSG_GROUP_MAX; i++)
			gp_msg_verify_item_put(items[0], i, 0, i, 0.1f, 1);
		m.u.verify_task.items = items[0];
		m.u.verify_task.indices = idx;
		m.u.verify_task.items_len =
			GP_MSG_GROUP_MAX * GP_MSG_VERIFY_ITEM_SIZE;
		m.u.verify_task.indices_len = 4 * GP_MSG_GROUP_MAX;
		ASSERT_OK(decode_rc(&m));
		m.u.verify_task.items_len += GP_MSG_VERIFY_ITEM_SIZE;
		m.u.verify_task.indices_len += 4;
		ASSERT_EQ(decode_rc(&m), -EBADMSG);
	}
	/* Tensors: at least one, f32 or f16 only. */
	sample(&m, GP_MSG_VERIFY_TASK);
	m.u.verify_task.n_blocks = 0;
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	m.u.verify_task.blocks = &qb;
	m.u.verify_task.n_blocks = 1;
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	{
		static const uint8_t dtypes[] = {
			GP_DTYPE_I8, GP_DTYPE_Q8, GP_DTYPE_Q8_DELTA,
			GP_DTYPE_Q4, GP_DTYPE_Q4_DELTA,
		};
		struct gp_msg_block two[2] = { blocks[0], qb };

		m.u.verify_task.blocks = two;
		m.u.verify_task.n_blocks = 2;
		for (size_t i = 0; i < sizeof(dtypes); i++) {
			two[1].dtype = dtypes[i];
			ASSERT_EQ(decode_rc(&m), -EBADMSG);
		}
		two[1].dtype = GP_DTYPE_F16;
		ASSERT_OK(decode_rc(&m));
	}

	/* A computed result, field by field. */
	sample(&m, GP_MSG_VERIFY_RESULT);
	buf = encode(&m, &len);
	ASSERT_EQ(buf[1], 19);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.type, GP_MSG_VERIFY_RESULT);
	ASSERT_UINT_EQ(d.u.verify_result.task, UINT64_C(0x1122334455667788));
	ASSERT_EQ(d.u.verify_result.status, GP_VERIFY_COMPUTED);
	ASSERT_UINT_EQ(d.u.verify_result.compute_us, 18000);
	ASSERT_EQ(d.u.verify_result.n_blocks, 2);
	ASSERT_EQ(d.u.verify_result.blocks[0].dtype, GP_DTYPE_F32);
	ASSERT_OK(gp_msg_block_read(&d.u.verify_result.blocks[0], out, 300));
	ASSERT_MEM_EQ(out, vals_a, sizeof(vals_a));
	ASSERT_EQ(d.u.verify_result.blocks[1].dtype, GP_DTYPE_F16);
	ASSERT_OK(gp_msg_block_read(&d.u.verify_result.blocks[1], out, 7));
	for (int i = 0; i < 7; i++)
		ASSERT_NEAR(out[i], vals_b[i], vals_b[i] / 1024);
	gp_msg_finish(&d);
	free(buf);

	/* Declined: no blocks; a status this release does not know is
	 * kept (receivers take it as declined), also without blocks. */
	m.u.verify_result.status = GP_VERIFY_DECLINED;
	m.u.verify_result.n_blocks = 0;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.verify_result.status, GP_VERIFY_DECLINED);
	ASSERT_EQ(d.u.verify_result.n_blocks, 0);
	ASSERT(d.u.verify_result.blocks == NULL);
	gp_msg_finish(&d);
	free(buf);
	m.u.verify_result.status = 7;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.verify_result.status, 7);
	gp_msg_finish(&d);
	free(buf);

	/* Refused: blocks that contradict the status, quantised blocks. */
	m.u.verify_result.status = GP_VERIFY_COMPUTED;     /* no blocks */
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	m.u.verify_result.n_blocks = 2;
	ASSERT_OK(decode_rc(&m));
	m.u.verify_result.status = GP_VERIFY_DECLINED;   /* with blocks */
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	m.u.verify_result.status = 7;
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	m.u.verify_result.status = GP_VERIFY_COMPUTED;
	m.u.verify_result.blocks = &qb;
	m.u.verify_result.n_blocks = 1;
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	qb.dtype = GP_DTYPE_Q4;
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	qb.dtype = GP_DTYPE_I8;
	ASSERT_EQ(decode_rc(&m), -EBADMSG);
	qb.dtype = GP_DTYPE_F32;
	ASSERT_OK(decode_rc(&m));

	ASSERT_STR_EQ(gp_msg_type_name(GP_MSG_VERIFY_TASK), "VERIFY_TASK");
	ASSERT_STR_EQ(gp_msg_type_name(GP_MSG_VERIFY_RESULT), "VERIFY_RESULT");
	ASSERT_EQ(GP_CAP_VERIFY, 1u << 15);
}

static void test_unknown_type(void)
{
	uint8_t buf[32] = { GP_MSG_VERSION, 200, 0x34, 0x12, 6, 0, 0, 0,
			    99, 0, 0, 0, 0, 0 };
	struct gp_msg d;
	struct gp_msg_header h;

	memset(&d, 0xaa, sizeof(d));
	ASSERT_EQ(gp_msg_decode(buf, 14, &d), GP_MSG_UNKNOWN_TYPE);
	ASSERT_EQ(d.type, 200);
	ASSERT_EQ(d.flags, 0x1234);
	ASSERT(d.owned_ == NULL);
	gp_msg_finish(&d);
	ASSERT_STR_EQ(gp_msg_type_name(200), "unknown");
	ASSERT_OK(gp_msg_peek(buf, 14, &h));
	ASSERT_EQ(h.type, 200);
	ASSERT_EQ(h.body_len, 6);

	/* Type 0 is not a type either; its body need not even parse. */
	buf[1] = 0;
	set_body_len(buf, 9);
	ASSERT_EQ(gp_msg_decode(buf, 9, &d), GP_MSG_UNKNOWN_TYPE);
	ASSERT_EQ(d.type, 0);
}

/* An older decoder reading a newer message: extra fields are skipped, at
 * the top level and inside repeated elements. */
static void test_unknown_fields(void)
{
	for (uint8_t t = 1; t <= GP_MSG_TYPE_MAX; t++) {
		struct gp_msg m, d;
		uint8_t *buf, *big;
		size_t len, len2;
		const char extra[] = "from the future";
		const uint8_t crit = 1;

		if (type_hole(t))
			continue;
		sample(&m, t);
		buf = encode(&m, &len);
		big = malloc(len + 64);
		ASSERT_NOT_NULL(big);
		memcpy(big, buf, len);
		len2 = append_field(big, len, 77, extra, sizeof(extra));
		ASSERT_OK(gp_msg_decode(big, len2, &d));
		gp_msg_finish(&d);
		/* The content is unchanged: it re-encodes to the original. */
		{
			static float scratch[4096];
			struct gp_msg_block *b;
			uint8_t *again;
			size_t alen, n;

			ASSERT_OK(gp_msg_decode(big, len2, &d));
			b = msg_blocks(&d, &n);
			blocks_to_values(b, n, scratch);
			again = encode(&d, &alen);
			ASSERT_EQ(alen, len);
			ASSERT_MEM_EQ(again, buf, len);
			free(again);
			gp_msg_finish(&d);
		}
		/* An empty unknown field is fine too. */
		len2 = append_field(big, len, 0x7fff, "", 0);
		ASSERT_OK(gp_msg_decode(big, len2, &d));
		gp_msg_finish(&d);
		/* A critical one is not. */
		len2 = append_field(big, len, GP_MSG_TAG_CRITICAL | 77, &crit, 1);
		ASSERT_EQ(gp_msg_decode(big, len2, &d), -EPROTONOSUPPORT);
		free(big);
		free(buf);
	}

	/* Inside a device element of a JOIN: tag 9 is unknown there. */
	{
		uint8_t buf[256] = { GP_MSG_VERSION, GP_MSG_JOIN };
		uint8_t dev[64];
		size_t len, dlen;
		struct gp_msg d;

		dlen = put_field(dev, 2, "gpu0", 4); /* name */
		dlen += put_field(dev + dlen, 9, "xyz", 3);
		len = append_field(buf, 8, 5, dev, (uint32_t)dlen);
		ASSERT_OK(gp_msg_decode(buf, len, &d));
		ASSERT_EQ(d.u.join.n_devices, 1);
		ASSERT_STR_EQ(d.u.join.devices[0].name, "gpu0");
		gp_msg_finish(&d);
	}
}

/* Offsets of the top-level field boundaries of an encoded message. */
static bool is_boundary(const uint8_t *buf, size_t len, size_t at)
{
	size_t off = GP_MSG_HEADER_SIZE;

	while (off < len) {
		if (off == at)
			return true;
		off += 6 + ((size_t)buf[off + 2] | (size_t)buf[off + 3] << 8 |
			    (size_t)buf[off + 4] << 16 |
			    (size_t)buf[off + 5] << 24);
	}
	return off == at;
}

static void test_truncation(void)
{
	for (uint8_t t = 1; t <= GP_MSG_TYPE_MAX; t++) {
		struct gp_msg m, d;
		uint8_t *buf, *cut;
		size_t len;

		if (type_hole(t))
			continue;
		sample(&m, t);
		buf = encode(&m, &len);
		for (size_t n = 0; n < len; n++) {
			int r;

			/* As received: the header disagrees with the length. */
			cut = malloc(n ? n : 1);
			ASSERT_NOT_NULL(cut);
			memcpy(cut, buf, n);
			ASSERT_EQ(gp_msg_decode(cut, n, &d), -EBADMSG);
			/* With the header fixed up, a cut inside a field
			 * fails; a cut between fields is a shorter valid
			 * message (absent fields are zero), unless a check
			 * across fields fails. */
			if (n >= GP_MSG_HEADER_SIZE) {
				set_body_len(cut, n);
				r = gp_msg_decode(cut, n, &d);
				if (is_boundary(buf, len, n)) {
					ASSERT(r == 0 || r == -EBADMSG);
					if (r == 0)
						gp_msg_finish(&d);
				} else {
					ASSERT_EQ(r, -EBADMSG);
				}
			}
			free(cut);
		}
		free(buf);
	}
}

static void test_limits(void)
{
	struct gp_msg m, d;
	uint8_t buf[512] = { 0 };
	size_t len;
	struct gp_msg_header h;

	/* Longer than the maximum: refused before the buffer is read. */
	ASSERT_EQ(gp_msg_decode(buf, (size_t)GP_MSG_MAX_SIZE + 1, &d), -EMSGSIZE);
	ASSERT_EQ(gp_msg_peek(buf, (size_t)GP_MSG_MAX_SIZE + 1, &h), -EMSGSIZE);
	ASSERT_EQ(gp_msg_decode(buf, 7, &d), -EBADMSG);
	ASSERT_EQ(gp_msg_decode(NULL, 0, &d), -EBADMSG);

	/* A field length larger than what is left. */
	sample(&m, GP_MSG_CLOCK);
	ASSERT_OK(gp_msg_encode(&m, buf, sizeof(buf), &len));
	buf[GP_MSG_HEADER_SIZE + 2] = 0xff;
	buf[GP_MSG_HEADER_SIZE + 5] = 0xff;
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);

	/* Too small an output buffer. */
	ASSERT_EQ(gp_msg_encode(&m, buf, 10, &len), -ENOBUFS);

	/* The encoder refuses what would exceed the maximum, without reading
	 * the values (there are not that many). */
	{
		struct gp_msg_block b = { 0 };

		b.count = GP_MSG_MAX_SIZE / 4;
		b.dtype = GP_DTYPE_F32;
		b.values = vals_a;
		gp_msg_init(&m, GP_MSG_UPDATE);
		m.u.update.blocks = &b;
		m.u.update.n_blocks = 1;
		ASSERT_EQ(gp_msg_size(&m, &len), -EMSGSIZE);
		ASSERT_EQ(gp_msg_encode(&m, buf, sizeof(buf), &len), -EMSGSIZE);
		b.count = 4;
		b.values = NULL;
		ASSERT_EQ(gp_msg_size(&m, &len), -EINVAL);
		b.values = vals_a;
		b.dtype = 7;
		ASSERT_EQ(gp_msg_size(&m, &len), -EINVAL);
	}

	/* Strings too long for the encoder, unknown types. */
	gp_msg_init(&m, GP_MSG_BYE);
	memset(m.u.bye.text, 'x', sizeof(m.u.bye.text));
	ASSERT_EQ(gp_msg_size(&m, &len), -EINVAL);
	m.u.bye.text[GP_MSG_TEXT_MAX] = '\0';
	ASSERT_OK(gp_msg_size(&m, &len));
	gp_msg_init(&m, GP_MSG_BYE);
	m.type = 0;
	ASSERT_EQ(gp_msg_size(&m, &len), -EINVAL);
	m.type = GP_MSG_TYPE_MAX + 1;
	ASSERT_EQ(gp_msg_size(&m, &len), -EINVAL);

	/* Too many repeated elements. */
	{
		struct gp_msg_device many[GP_MSG_DEVICES_MAX + 1];
		uint8_t *big;
		size_t blen = GP_MSG_HEADER_SIZE;
		uint8_t el[16];

		memset(many, 0, sizeof(many));
		gp_msg_init(&m, GP_MSG_JOIN);
		m.u.join.devices = many;
		m.u.join.n_devices = GP_MSG_DEVICES_MAX + 1;
		ASSERT_EQ(gp_msg_size(&m, &len), -EINVAL);
		m.u.join.n_devices = GP_MSG_DEVICES_MAX;
		ASSERT_OK(gp_msg_size(&m, &len));

		big = calloc(1, 8 + 13 * (GP_MSG_DEVICES_MAX + 1));
		ASSERT_NOT_NULL(big);
		big[0] = GP_MSG_VERSION;
		big[1] = GP_MSG_JOIN;
		memset(el, 0, sizeof(el));
		el[0] = 1; /* kind u8 = 1 */
		el[2] = 1;
		el[6] = GP_DEVICE_GPU;
		for (int i = 0; i < GP_MSG_DEVICES_MAX; i++)
			blen = append_field(big, blen, 5, el, 7);
		ASSERT_OK(gp_msg_decode(big, blen, &d));
		ASSERT_EQ(d.u.join.n_devices, GP_MSG_DEVICES_MAX);
		ASSERT_EQ(d.u.join.devices[GP_MSG_DEVICES_MAX - 1].kind,
			  GP_DEVICE_GPU);
		gp_msg_finish(&d);
		blen = append_field(big, blen, 5, el, 7);
		ASSERT_EQ(gp_msg_decode(big, blen, &d), -EBADMSG);
		free(big);
	}
}

/* WELCOME.model_text (tag 9): a str of up to 64 KiB, zero-copy on
 * decode, strict UTF-8 like every str; the shorthand stays in tag 3 for
 * agents that know only that. */
static void test_model_text(void)
{
	static const char desc[] = "gradpool-model 1; input shape=1x28x28; "
				   "conv2d conv1 out=8 kernel=5 stride=1 "
				   "padding=2; flatten flat; dense fc1 out=10; "
				   "softmax_xent loss";
	struct gp_msg m, d;
	uint8_t *buf, *big;
	char *text;
	size_t len, blen;

	gp_msg_init(&m, GP_MSG_WELCOME);
	m.u.welcome.agent_id = 3;
	m.u.welcome.model_text = desc;
	m.u.welcome.model_text_len = strlen(desc);
	m.u.welcome.seed = 77;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_STR_EQ(d.u.welcome.model, "");
	ASSERT_EQ(d.u.welcome.model_text_len, strlen(desc));
	ASSERT_MEM_EQ(d.u.welcome.model_text, desc, strlen(desc));
	/* Zero-copy: the text lies in the message. */
	ASSERT((const uint8_t *)d.u.welcome.model_text > buf &&
	       (const uint8_t *)d.u.welcome.model_text < buf + len);
	ASSERT_UINT_EQ(d.u.welcome.seed, 77);
	gp_msg_finish(&d);
	/* The byte layout: tag 9, u32 length, the text, after tag 8. */
	{
		size_t at = len - (6 + 8) - (6 + strlen(desc));

		ASSERT_EQ(buf[at], 9);
		ASSERT_EQ(buf[at + 1], 0);
		ASSERT_EQ(buf[at + 2], strlen(desc));
		ASSERT_MEM_EQ(buf + at + 6, desc, strlen(desc));
		ASSERT_EQ(buf[at + 6 + strlen(desc)], 10);
	}
	free(buf);

	/* Absent: NULL and 0, and the encoder leaves an empty one out. */
	m.u.welcome.model_text_len = 0;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT(d.u.welcome.model_text == NULL);
	ASSERT_EQ(d.u.welcome.model_text_len, 0);
	gp_msg_finish(&d);
	free(buf);

	/* 64 KiB exactly is fine, one byte more is not, either way. */
	text = malloc(GP_MSG_MODEL_TEXT_MAX + 1);
	ASSERT_NOT_NULL(text);
	memset(text, 'a', GP_MSG_MODEL_TEXT_MAX + 1);
	m.u.welcome.model_text = text;
	m.u.welcome.model_text_len = GP_MSG_MODEL_TEXT_MAX;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.welcome.model_text_len, GP_MSG_MODEL_TEXT_MAX);
	gp_msg_finish(&d);
	free(buf);
	m.u.welcome.model_text_len = GP_MSG_MODEL_TEXT_MAX + 1;
	ASSERT_EQ(gp_msg_size(&m, &len), -EINVAL);
	m.u.welcome.model_text = NULL;
	m.u.welcome.model_text_len = 5;
	ASSERT_EQ(gp_msg_size(&m, &len), -EINVAL);

	big = calloc(1, GP_MSG_HEADER_SIZE + 6 + GP_MSG_MODEL_TEXT_MAX + 1);
	ASSERT_NOT_NULL(big);
	big[0] = GP_MSG_VERSION;
	big[1] = GP_MSG_WELCOME;
	blen = append_field(big, GP_MSG_HEADER_SIZE, 9, text,
			    GP_MSG_MODEL_TEXT_MAX + 1);
	ASSERT_EQ(gp_msg_decode(big, blen, &d), -EBADMSG);
	/* A control character is malformed on the wire ... */
	blen = append_field(big, GP_MSG_HEADER_SIZE, 9, "dense\nfc1", 9);
	ASSERT_EQ(gp_msg_decode(big, blen, &d), -EBADMSG);
	/* ... and becomes '?' from the encoder. */
	m.u.welcome.model_text = "a\x01" "b";
	m.u.welcome.model_text_len = 3;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_MEM_EQ(d.u.welcome.model_text, "a?b", 3);
	gp_msg_finish(&d);
	free(buf);
	free(big);
	free(text);
}

static void test_strict(void)
{
	uint8_t buf[512];
	size_t len;
	struct gp_msg d;
	const uint8_t u64[8] = { 1 };
	const uint8_t u32[4] = { 1 };

	/* A known field of the wrong size. */
	buf[0] = GP_MSG_VERSION;
	buf[1] = GP_MSG_WORK_REQUEST;
	buf[2] = buf[3] = 0;
	len = append_field(buf, 8, 1, u64, 8);
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
	len = append_field(buf, 8, 1, u32, 4);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.work_request.count, 1);
	/* The same field twice. */
	len = append_field(buf, len, 1, u32, 4);
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
	/* Half a field header. */
	len = append_field(buf, 8, 1, u32, 4);
	buf[len++] = 3;
	buf[len++] = 0;
	set_body_len(buf, len);
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);

	/* Strings: control characters, too long. */
	buf[1] = GP_MSG_BYE;
	len = append_field(buf, 8, 2, "line\nforged", 11);
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
	len = append_field(buf, 8, 2, "nul\0byte", 8);
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
	{
		char longtext[GP_MSG_TEXT_MAX + 1];

		memset(longtext, 'a', sizeof(longtext));
		ASSERT(GP_MSG_TEXT_MAX + 1 + 20 < 512);
		len = append_field(buf, 8, 2, longtext, GP_MSG_TEXT_MAX + 1);
		ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
		len = append_field(buf, 8, 2, longtext, GP_MSG_TEXT_MAX);
		ASSERT_OK(gp_msg_decode(buf, len, &d));
		ASSERT_EQ(strlen(d.u.bye.text), GP_MSG_TEXT_MAX);
	}
	len = append_field(buf, 8, 2, "caf\xc3\xa9", 5); /* UTF-8 is fine */
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_STR_EQ(d.u.bye.text, "caf\xc3\xa9");
	/* 2, 3 and 4 bytes: e-acute, the euro sign, an emoji. */
	len = append_field(buf, 8, 2, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	/* Not UTF-8, or characters a str may not carry. */
	{
		static const struct {
			const char *s;
			size_t len;
		} bad[] = {
			{ "caf\xe9", 4 },              /* Latin-1 */
			{ "cut \xc3", 5 },             /* cut inside a character */
			{ "\xe2\x82", 2 },             /* cut, 3-byte */
			{ "\x80", 1 },                 /* lone continuation */
			{ "\xc0\xaf", 2 },             /* overlong '/' */
			{ "\xe0\x80\xaf", 3 },         /* overlong, 3 bytes */
			{ "\xf0\x80\x80\xaf", 4 },     /* overlong, 4 bytes */
			{ "\xed\xa0\x80", 3 },         /* surrogate D800 */
			{ "\xf4\x90\x80\x80", 4 },     /* above U+10FFFF */
			{ "\xf8\x88\x80\x80\x80", 5 }, /* 5-byte form */
			{ "\xc2\x9b[2J", 5 },          /* C1 CSI: a terminal */
			{ "\xc2\x85", 2 },             /* C1 NEL: a new line */
			{ "del\x7f", 4 },
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			len = append_field(buf, 8, 2, bad[i].s, bad[i].len);
			ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
		}
	}
	/* The encoder never writes what the decoder refuses: each byte
	 * that is not part of an allowed character becomes '?'. */
	{
		struct gp_msg m;
		uint8_t *enc;

		gp_msg_init(&m, GP_MSG_BYE);
		snprintf(m.u.bye.text, sizeof(m.u.bye.text), "%s",
			 "caf\xe9 \xc3\xa9 \xc2\x9b\tend \xe2\x82");
		enc = encode(&m, &len);
		ASSERT_OK(gp_msg_decode(enc, len, &d));
		ASSERT_STR_EQ(d.u.bye.text, "caf? \xc3\xa9 ???end ??");
		free(enc);
	}

	/* A token id must be exactly 8 bytes. */
	buf[1] = GP_MSG_JOIN;
	len = append_field(buf, 8, 3, token_id, 7);
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);

	/* Minibatch payload sizes must agree with samples and features. */
	{
		struct gp_msg m;
		uint8_t *enc;

		sample(&m, GP_MSG_MINIBATCH);
		m.u.minibatch.samples = 2;
		m.u.minibatch.labels_len = 2;
		m.u.minibatch.indices_len = 8;
		enc = encode(&m, &len);
		ASSERT_EQ(gp_msg_decode(enc, len, &d), -EBADMSG);
		free(enc);
		m.u.minibatch.pixels_len = 2 * 784;
		enc = encode(&m, &len);
		ASSERT_OK(gp_msg_decode(enc, len, &d));
		gp_msg_finish(&d);
		free(enc);
	}

	/* Block payloads: size must match count and dtype; unknown dtypes
	 * are not something an old agent can use. */
	{
		struct gp_msg m;
		uint8_t *enc;
		size_t at;

		sample(&m, GP_MSG_PARAM_SHARDS);
		m.u.param_shards.n_blocks = 1;
		blocks[0].count = 2;
		enc = encode(&m, &len);
		blocks[0].count = 300;
		ASSERT_OK(gp_msg_decode(enc, len, &d));
		gp_msg_finish(&d);
		/* Find the dtype field (tag 6, len 1) in the block. */
		at = 0;
		for (size_t i = 8; i + 7 <= len; i++)
			if (enc[i] == 6 && enc[i + 1] == 0 && enc[i + 2] == 1 &&
			    enc[i + 3] == 0 && enc[i + 4] == 0 && enc[i + 5] == 0)
				at = i + 6;
		ASSERT_GT(at, 0);
		enc[at] = 9;
		ASSERT_EQ(gp_msg_decode(enc, len, &d), -EPROTONOSUPPORT);
		enc[at] = GP_DTYPE_F16; /* 2 elements of f16 are 4 bytes */
		ASSERT_EQ(gp_msg_decode(enc, len, &d), -EBADMSG);
		free(enc);
	}

	/* An UPDATE part beyond its parts. */
	{
		struct gp_msg m;
		uint8_t *enc;

		sample(&m, GP_MSG_UPDATE);
		m.u.update.part = 2;
		enc = encode(&m, &len);
		ASSERT_EQ(gp_msg_decode(enc, len, &d), -EBADMSG);
		free(enc);
		m.u.update.part = 0;
		m.u.update.parts = 0; /* taken as 1 */
		enc = encode(&m, &len);
		ASSERT_OK(gp_msg_decode(enc, len, &d));
		ASSERT_EQ(d.u.update.parts, 1);
		gp_msg_finish(&d);
		free(enc);
	}
}

static void test_version(void)
{
	struct gp_msg m, d;
	struct gp_msg_header h;
	uint8_t *buf;
	size_t len;

	sample(&m, GP_MSG_HEARTBEAT);
	buf = encode(&m, &len);
	/* A newer major version: refused, but its header still reads, so a
	 * coordinator can answer with a REJECT (GP_REJECT_VERSION). */
	buf[0] = GP_MSG_VERSION + 1;
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EPROTONOSUPPORT);
	ASSERT_OK(gp_msg_peek(buf, len, &h));
	ASSERT_EQ(h.version, GP_MSG_VERSION + 1);
	ASSERT_EQ(h.type, GP_MSG_HEARTBEAT);
	buf[0] = 0;
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EPROTONOSUPPORT);
	buf[0] = 0xff;
	buf[1] = 0xee; /* unknown type in an unknown version: version wins */
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EPROTONOSUPPORT);
	free(buf);

	/* The encoder writes only versions it speaks. */
	m.version = GP_MSG_VERSION + 1;
	ASSERT_EQ(gp_msg_size(&m, &len), -EINVAL);
	m.version = GP_MSG_VERSION;
	ASSERT_OK(gp_msg_size(&m, &len));

	/* Flags are reserved: carried, not judged. */
	m.flags = 0x8001;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.flags, 0x8001);
	free(buf);
}

static float f16_round(float f)
{
	return gp_msg_f16_to_f32(gp_msg_f32_to_f16(f));
}

static void test_f16(void)
{
	ASSERT_EQ(gp_msg_f32_to_f16(1.0f), 0x3c00);
	ASSERT_EQ(gp_msg_f32_to_f16(-2.0f), 0xc000);
	ASSERT_EQ(gp_msg_f32_to_f16(0.0f), 0);
	ASSERT_EQ(gp_msg_f32_to_f16(-0.0f), 0x8000);
	ASSERT_EQ(gp_msg_f32_to_f16(65504.0f), 0x7bff);
	ASSERT_EQ(gp_msg_f32_to_f16(65519.0f), 0x7bff);
	ASSERT_EQ(gp_msg_f32_to_f16(65520.0f), 0x7c00); /* ties to Inf */
	ASSERT_EQ(gp_msg_f32_to_f16(1e10f), 0x7c00);
	ASSERT_EQ(gp_msg_f32_to_f16(-INFINITY), 0xfc00);
	ASSERT_EQ(gp_msg_f32_to_f16(ldexpf(1, -14)), 0x0400);
	ASSERT_EQ(gp_msg_f32_to_f16(ldexpf(1, -24)), 0x0001);
	ASSERT_EQ(gp_msg_f32_to_f16(ldexpf(1, -25)), 0);      /* tie to even */
	ASSERT_EQ(gp_msg_f32_to_f16(ldexpf(1.5f, -25)), 1);
	ASSERT_EQ(gp_msg_f32_to_f16(ldexpf(3, -25)), 2);      /* tie to even */
	ASSERT_EQ(gp_msg_f32_to_f16(ldexpf(1, -30)), 0);
	ASSERT_EQ(gp_msg_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00); /* tie */
	ASSERT_EQ(gp_msg_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02);
	ASSERT_EQ(gp_msg_f32_to_f16(1.0f + ldexpf(1.5f, -11)), 0x3c01);
	ASSERT(isnan(f16_round(NAN)));
	ASSERT_EQ(gp_msg_f32_to_f16(NAN) & 0x7c00, 0x7c00);
	ASSERT_NE(gp_msg_f32_to_f16(NAN) & 0x3ff, 0);
	ASSERT_NEAR(gp_msg_f16_to_f32(0x3555), 0.333251953125, 0);
	ASSERT_NEAR(gp_msg_f16_to_f32(0x0001), ldexp(1, -24), 0);
	ASSERT_NEAR(gp_msg_f16_to_f32(0x03ff), ldexp(1023, -24), 0);
	/* Every half converts to float and back exactly. */
	for (uint32_t h = 0; h < 0x10000; h++) {
		float f = gp_msg_f16_to_f32((uint16_t)h);

		if (isnan(f))
			continue;
		ASSERT_EQ(gp_msg_f32_to_f16(f), h);
	}
	/* Relative error of normal numbers is at most 2^-11. */
	for (float f = 1e-4f; f < 60000; f *= 1.37f)
		ASSERT_NEAR(f16_round(f), f, f * ldexpf(1, -11));
	/* The bulk rounding is the scalar one, bit for bit, over every
	 * exponent and both signs (subnormal, Inf, NaN included). */
	{
		static float in[2 * 4 * 300], out[2 * 4 * 300];
		size_t n = 0;

		for (int e = -150; e < 150; e++)
			for (int k = 0; k < 4; k++) {
				float f = ldexpf(1.0f + 0.2371f * (float)k, e);

				in[n++] = f;
				in[n++] = -f;
			}
		in[0] = NAN;
		in[1] = INFINITY;
		gp_msg_f16_round(in, out, n);
		for (size_t i = 0; i < n; i++) {
			float want = f16_round(in[i]);

			if (isnan(want))
				ASSERT(isnan(out[i]));
			else
				ASSERT_EQ(memcmp(&out[i], &want, 4), 0);
		}
	}
}

static void test_i8(void)
{
	float v[5] = { -1.0f, 0.5f, 0.25f, 2.0f, NAN };
	float out[5];
	struct gp_msg_block b = { 0 };
	struct gp_msg m, d;
	uint8_t *buf;
	size_t len;

	b.count = 5;
	b.dtype = GP_DTYPE_I8;
	b.values = v;
	buf = encode_block(&m, &b, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.update.blocks[0].raw_len, 5);
	ASSERT_NEAR(d.u.update.blocks[0].scale, 2.0 / 127, 1e-9);
	ASSERT_OK(gp_msg_block_read(&d.u.update.blocks[0], out, 5));
	for (int i = 0; i < 4; i++)
		ASSERT_NEAR(out[i], v[i], 1.0 / 127);
	ASSERT_NEAR(out[3], 2.0, 1e-6);
	ASSERT_NEAR(out[4], 0, 0); /* NaN is sent as 0 */
	/* Only q8 and q4 give their sum of squares from the bytes. */
	ASSERT(gp_msg_block_sum_squares(&d.u.update.blocks[0]) == -1);
	gp_msg_finish(&d);
	free(buf);

	/* All zeros: scale 0, values 0. */
	memset(v, 0, sizeof(v));
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_OK(gp_msg_block_read(&d.u.update.blocks[0], out, 5));
	for (int i = 0; i < 5; i++)
		ASSERT_NEAR(out[i], 0, 0);
	gp_msg_finish(&d);
	free(buf);
}

/* q8 as written before the loops were vectorised (proto/msg-payload.c):
 * a chunk's scale is its largest finite |v| / 127, each value v / scale
 * clamped to -127..127 (NaN: 0) and rounded half away from zero. */
static int ref_q8(float v, float scale)
{
	float r = scale > 0 ? v / scale : 0;

	if (isnan(r))
		r = 0;
	if (r > 127.0f)
		r = 127.0f;
	if (r < -127.0f)
		r = -127.0f;
	return (int)(r + (r >= 0 ? 0.5f : -0.5f));
}

static float ref_q8_scale(const float *v, size_t n)
{
	float m = 0;

	for (size_t i = 0; i < n; i++)
		if (isfinite(v[i]) && fabsf(v[i]) > m)
			m = fabsf(v[i]);
	return m / 127.0f;
}

/* The vectorised q8 loops give bit for bit what the scalar ones gave:
 * gp_msg_q8_round, and a Q8 block written and read back, against the
 * reference above, over lengths 1-200 (every chunk remainder), values of
 * every magnitude and sign, ties, zeros, subnormals, NaN and infinities. */
static void test_q8_vectorised(void)
{
	enum { N = 200 };
	float v[N], out[N], rounded[N];
	uint64_t x = 0x9e3779b97f4a7c15u;

	for (int round = 0; round < 400; round++) {
		size_t n = 1 + (size_t)round % N;
		struct gp_msg_block b = { 0 };
		struct gp_msg m, d;
		const uint8_t *raw;
		uint8_t *buf;
		size_t len;

		for (size_t i = 0; i < n; i++) {
			uint32_t bits;

			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			bits = (uint32_t)x;
			switch ((x >> 40) % 16) {
			case 0: v[i] = NAN; break;
			case 1: v[i] = (x >> 50) & 1 ? INFINITY : -INFINITY; break;
			case 2: v[i] = (x >> 50) & 1 ? 0.0f : -0.0f; break;
			case 3: /* a tie: k + 0.5 times a power of two */
				v[i] = ((float)((x >> 44) % 255) - 127.0f + 0.5f) *
				       ldexpf(1.0f, (int)((x >> 52) % 20) - 10);
				break;
			case 4: /* any bits, subnormals included */
				memcpy(&v[i], &bits, 4);
				break;
			default:
				v[i] = ((float)(bits % 2000001u) - 1e6f) *
				       ldexpf(1.0f, (int)((x >> 52) % 40) - 30);
			}
		}
		if (round % 7 == 0) /* a chunk of nothing but zeros and NaN */
			for (size_t i = 0; i < n && i < 64; i++)
				v[i] = i % 2 ? 0.0f : NAN;
		gp_msg_q8_round(v, rounded, n);
		b.count = (uint32_t)n;
		b.dtype = GP_DTYPE_Q8;
		b.values = v;
		buf = encode_block(&m, &b, &len);
		ASSERT_OK(gp_msg_decode(buf, len, &d));
		raw = d.u.update.blocks[0].raw;
		ASSERT_OK(gp_msg_block_read(&d.u.update.blocks[0], out, n));
		for (size_t at = 0; at < n; at += 64) {
			size_t c = n - at < 64 ? n - at : 64;
			float scale = ref_q8_scale(v + at, c), got;
			const uint8_t *p = raw + (at / 64) * 68;

			got = gp_get_lef32(p);
			ASSERT_EQ(memcmp(&got, &scale, 4), 0);
			for (size_t i = 0; i < c; i++) {
				int q = ref_q8(v[at + i], scale);
				float want = (float)q * scale;

				ASSERT_EQ((int8_t)p[4 + i], q);
				ASSERT_EQ(memcmp(&out[at + i], &want, 4), 0);
				ASSERT_EQ(memcmp(&rounded[at + i], &want, 4), 0);
			}
		}
		gp_msg_q8_round(v, v, n); /* in place */
		ASSERT_EQ(memcmp(v, rounded, n * sizeof(float)), 0);
		gp_msg_finish(&d);
		free(buf);
	}
}

/* Q8: int8 in chunks of 64, each led by its own f32 scale. */
static void test_q8(void)
{
	float v[130], out[130], want[130];
	struct gp_msg_block b = { 0 };
	struct gp_msg m, d;
	const uint8_t *raw;
	uint8_t *buf;
	size_t len, at;

	for (size_t i = 0; i < 130; i++)
		v[i] = (float)((i % 64 == 5 ? 3.0 : 0.01) * ((double)i - 65));
	v[128] = -0.5f;
	v[129] = 0.25f;
	b.count = 130;
	b.dtype = GP_DTYPE_Q8;
	b.values = v;
	buf = encode_block(&m, &b, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	/* Three chunks: 64, 64 and 2 values, 4 + n bytes each. */
	ASSERT_EQ(d.u.update.blocks[0].raw_len, 130 + 3 * 4);
	raw = d.u.update.blocks[0].raw;
	ASSERT_NEAR(gp_get_lef32(raw), 3.0 * 60 / 127, 1e-6);
	ASSERT_NEAR(gp_get_lef32(raw + 68), 0.01 * 62 / 127 > 3.0 * 4 / 127 ?
		    0.01 * 62 / 127 : 3.0 * 4 / 127, 1e-6);
	ASSERT_NEAR(gp_get_lef32(raw + 136), 0.5 / 127, 1e-9);
	ASSERT_EQ((int8_t)raw[140], -127);
	ASSERT_EQ((int8_t)raw[141], 64); /* 0.25 / (0.5 / 127) = 63.5 */
	ASSERT_OK(gp_msg_block_read(&d.u.update.blocks[0], out, 130));
	/* What the sender computes it will decode to is what was decoded,
	 * bit for bit (error feedback rests on it). */
	gp_msg_q8_round(v, want, 130);
	{
		double sq = 0;

		for (size_t i = 0; i < 130; i++) {
			float scale = gp_get_lef32(raw + 68 * (i / 64));

			ASSERT_EQ(memcmp(&out[i], &want[i], sizeof(float)), 0);
			ASSERT_NEAR(out[i], v[i], scale / 2 + 1e-7);
			sq += (double)out[i] * out[i];
		}
		/* Its sum of squares from the bytes: the values read's. */
		ASSERT_NEAR(gp_msg_block_sum_squares(&d.u.update.blocks[0]),
			    sq, 1e-6 * sq);
	}
	at = (size_t)(raw - buf);
	gp_msg_finish(&d);

	/* A chunk's scale must be finite and not negative. */
	{
		const float bad[3] = { NAN, INFINITY, -1.0f };

		for (size_t k = 0; k < 3; k++) {
			uint8_t *copy = malloc(len);

			ASSERT_NOT_NULL(copy);
			memcpy(copy, buf, len);
			gp_put_lef32(copy + at + 68, bad[k]);
			ASSERT_EQ(gp_msg_decode(copy, len, &d), -EBADMSG);
			free(copy);
		}
	}
	free(buf);

	/* A payload of any other length is refused: an f16 block of 71
	 * values (142 bytes) relabelled Q8 (which needs 79). */
	b.count = 71;
	b.dtype = GP_DTYPE_F16;
	buf = encode(&m, &len);
	{
		static const uint8_t dtype_field[6] = { 6, 0, 1, 0, 0, 0 };
		uint8_t *p = memmem(buf, len, dtype_field, sizeof(dtype_field));

		ASSERT_NOT_NULL(p);
		ASSERT_EQ(p[6], GP_DTYPE_F16);
		p[6] = GP_DTYPE_Q8;
		ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
		p[6] = GP_DTYPE_MAX + 1;
		ASSERT_EQ(gp_msg_decode(buf, len, &d), -EPROTONOSUPPORT);
	}
	free(buf);
}

/* Q8_DELTA (GP_CAP_PARAM_DELTA): q8's bytes, a change the receiver adds
 * to its mirror bit for bit as the sender's mirror moves; finite sums
 * only; never in an UPDATE. */
static void test_q8_delta(void)
{
	float d[130], mirror[130], sender[130], q[130], got[130];
	struct gp_msg_block b = { 0 };
	const struct gp_msg_block *db;
	struct gp_msg m, dm;
	uint8_t *buf;
	size_t len;

	for (size_t i = 0; i < 130; i++) {
		d[i] = (float)(0.001 * ((double)i - 60) * (i % 7 == 0 ? 40 : 1));
		mirror[i] = sender[i] = (float)(0.05 * sin((double)i));
	}
	b.tensor = 1;
	b.rows = 0;
	b.count = 130;
	b.dtype = GP_DTYPE_Q8_DELTA;
	b.values = d;
	gp_msg_init(&m, GP_MSG_PARAM_SHARDS);
	m.u.param_shards.blocks = &b;
	m.u.param_shards.n_blocks = 1;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &dm));
	db = &dm.u.param_shards.blocks[0];
	ASSERT_EQ(db->dtype, GP_DTYPE_Q8_DELTA);
	/* q8's layout: three chunks of 64, 64 and 2 values. */
	ASSERT_EQ(db->raw_len, 130 + 3 * 4);
	ASSERT_OK(gp_msg_block_read(db, got, 130));
	gp_msg_q8_round(d, q, 130);
	ASSERT_MEM_EQ(got, q, sizeof(q));
	/* The receiver's mirror moves exactly as the sender's. */
	ASSERT_OK(gp_msg_block_add(db, mirror, 130));
	for (size_t i = 0; i < 130; i++) {
		sender[i] += q[i];
		ASSERT_EQ(memcmp(&mirror[i], &sender[i], sizeof(float)), 0);
	}
	ASSERT_EQ(gp_msg_block_add(db, mirror, 129), -EINVAL);
	gp_msg_finish(&dm);
	/* A sum that is not finite is refused whole. */
	{
		float huge[64], mir[64] = { 0 }, keep[64] = { 0 };
		struct gp_msg_block hb = { .count = 64,
					   .dtype = GP_DTYPE_Q8_DELTA,
					   .values = huge };

		for (size_t i = 0; i < 64; i++) {
			huge[i] = FLT_MAX * (i % 2 ? 1.0f : -0.5f);
			mir[i] = keep[i] = FLT_MAX * 0.75f;
		}
		m.u.param_shards.blocks = &hb;
		free(buf);
		buf = encode(&m, &len);
		ASSERT_OK(gp_msg_decode(buf, len, &dm));
		ASSERT_EQ(gp_msg_block_add(&dm.u.param_shards.blocks[0], mir, 64),
			  -ERANGE);
		ASSERT_MEM_EQ(mir, keep, sizeof(mir));
		gp_msg_finish(&dm);
		/* A block of another dtype is not a change. */
		hb.dtype = GP_DTYPE_Q8;
		free(buf);
		buf = encode(&m, &len);
		ASSERT_OK(gp_msg_decode(buf, len, &dm));
		ASSERT_EQ(gp_msg_block_add(&dm.u.param_shards.blocks[0], mir, 64),
			  -EINVAL);
		gp_msg_finish(&dm);
		/* A chunk scale that is not finite fails the message. */
		hb.dtype = GP_DTYPE_Q8_DELTA;
		free(buf);
		buf = encode(&m, &len);
		{
			uint8_t *p = buf + len - (64 + 4);

			ASSERT_NEAR(gp_get_lef32(p), FLT_MAX / 127, FLT_MAX / 1e6);
			gp_put_lef32(p, NAN);
			ASSERT_EQ(gp_msg_decode(buf, len, &dm), -EBADMSG);
			gp_put_lef32(p, -1.0f);
			ASSERT_EQ(gp_msg_decode(buf, len, &dm), -EBADMSG);
		}
	}
	free(buf);
	/* A change only travels down: an UPDATE holding one is malformed. */
	b.dtype = GP_DTYPE_Q8_DELTA;
	buf = encode_block(&m, &b, &len);
	ASSERT_EQ(gp_msg_decode(buf, len, &dm), -EBADMSG);
	free(buf);
}

/* Q4 (GP_CAP_Q4): two 4-bit values a byte, low nibble first, in chunks of
 * 64 each led by its f32 scale; what the sender rounds to is what the
 * receiver decodes; every byte that the encoder would not write is
 * refused; never in a PARAM_SHARDS. */
static void test_q4(void)
{
	/* Scale 1: q 7, -7, 3, -1, 0, 3 (2.5 rounds away from 0), -7. */
	static const float small[7] = { 7, -7, 3, -1, 0.49f, 2.5f, -6.6f };
	static const uint8_t small_raw[8] = { 0, 0, 0x80, 0x3f,
					      0x97, 0xf3, 0x30, 0x09 };
	float v[131], out[131], want[131];
	struct gp_msg_block b = { 0 };
	const uint8_t *raw;
	struct gp_msg m, d;
	uint8_t *buf;
	size_t len, at;

	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q4, 0), 0);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q4, 1), 5);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q4, 2), 5);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q4, 3), 6);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q4, 64), 36);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q4, 65), 41);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q4, 131), 66 + 3 * 4);

	/* The documented bytes. */
	b.count = 7;
	b.dtype = GP_DTYPE_Q4;
	b.values = small;
	buf = encode_block(&m, &b, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.update.blocks[0].dtype, GP_DTYPE_Q4);
	ASSERT_EQ(d.u.update.blocks[0].raw_len, sizeof(small_raw));
	ASSERT_MEM_EQ(d.u.update.blocks[0].raw, small_raw, sizeof(small_raw));
	ASSERT_OK(gp_msg_block_read(&d.u.update.blocks[0], out, 7));
	{
		static const float q[7] = { 7, -7, 3, -1, 0, 3, -7 };

		ASSERT_MEM_EQ(out, q, sizeof(q));
		/* 49 + 49 + 9 + 1 + 0 + 9 + 49, scale 1. */
		ASSERT(gp_msg_block_sum_squares(&d.u.update.blocks[0]) == 166);
	}
	at = (size_t)(d.u.update.blocks[0].raw - buf);
	gp_msg_finish(&d);
	/* Bytes the encoder never writes: a nibble -8, low or high; the
	 * spare nibble of an odd chunk not 0; a bad scale. */
	{
		static const struct {
			size_t off;
			uint8_t byte;
		} bad[] = {
			{ 4, 0x98 }, { 4, 0x87 }, { 7, 0x19 }, { 7, 0x89 },
			{ 3, 0x7f }, /* 0x7f800000: +Inf */
			{ 3, 0xbf }, /* -1 */
			{ 3, 0xff }, /* 0xff800000: -Inf */
		};

		for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
			uint8_t keep = buf[at + bad[k].off];

			buf[at + bad[k].off] = bad[k].byte;
			if (bad[k].byte == 0x7f || bad[k].byte == 0xff)
				buf[at + 2] = 0x80;
			ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
			buf[at + bad[k].off] = keep;
		}
		/* NaN */
		gp_put_lef32(buf + at, NAN);
		ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
		gp_put_lef32(buf + at, 1.0f);
		ASSERT_OK(gp_msg_decode(buf, len, &d));
		gp_msg_finish(&d);
	}
	free(buf);

	/* Three chunks of 64, 64 and 3 values: what gp_msg_q4_round says,
	 * bit for bit, within half a step of what was meant. */
	for (size_t i = 0; i < 131; i++)
		v[i] = (float)((i % 64 == 5 ? 3.0 : 0.01) * ((double)i - 65));
	v[128] = -0.5f;
	v[129] = 0.3f;
	v[130] = NAN;
	b.count = 131;
	b.values = v;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.update.blocks[0].raw_len, 66 + 3 * 4);
	raw = d.u.update.blocks[0].raw;
	ASSERT_NEAR(gp_get_lef32(raw), 3.0 * 60 / 7, 1e-6);
	ASSERT_NEAR(gp_get_lef32(raw + 72), 0.5 / 7, 1e-8);
	/* -0.5 / (0.5 / 7) = -7, 0.3 / (0.5 / 7) = 4.2 -> 4, NaN -> 0. */
	ASSERT_EQ(raw[76], 0x49);
	ASSERT_EQ(raw[77], 0x00);
	ASSERT_OK(gp_msg_block_read(&d.u.update.blocks[0], out, 131));
	gp_msg_q4_round(v, want, 131);
	for (size_t i = 0; i < 131; i++) {
		float scale = gp_get_lef32(raw + 36 * (i / 64));

		ASSERT_EQ(memcmp(&out[i], &want[i], sizeof(float)), 0);
		if (i != 130)
			ASSERT_NEAR(out[i], v[i], scale / 2 + 1e-7);
	}
	ASSERT_NEAR(out[130], 0, 0);
	gp_msg_finish(&d);
	free(buf);

	/* A payload of any other length is refused: an f16 block of 71
	 * values (142 bytes), a Q8 one of 7 (11), relabelled Q4. */
	for (int k = 0; k < 2; k++) {
		static const uint8_t dtype_field[6] = { 6, 0, 1, 0, 0, 0 };
		uint8_t *p;

		b.count = k ? 7 : 71;
		b.dtype = k ? GP_DTYPE_Q8 : GP_DTYPE_F16;
		buf = encode(&m, &len);
		p = memmem(buf, len, dtype_field, sizeof(dtype_field));
		ASSERT_NOT_NULL(p);
		ASSERT_EQ(p[6], b.dtype);
		p[6] = GP_DTYPE_Q4;
		ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
		free(buf);
	}

	/* 4-bit values only travel up: a PARAM_SHARDS holding a Q4 block
	 * is malformed. */
	b.count = 7;
	b.dtype = GP_DTYPE_Q4;
	b.values = small;
	gp_msg_init(&m, GP_MSG_PARAM_SHARDS);
	m.u.param_shards.blocks = &b;
	m.u.param_shards.n_blocks = 1;
	buf = encode(&m, &len);
	ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
	free(buf);
}

/* Q4_DELTA (GP_CAP_Q4_DELTA): q4's bytes, a change the receiver adds to
 * its mirror bit for bit as the sender's mirror moves (the sender's
 * mirror takes gp_msg_q4_round() of the change, coordinator/downlink.c);
 * the checks of q4's bytes; finite sums only; never in an UPDATE. */
static void test_q4_delta(void)
{
	/* q4's documented bytes (test_q4), as a change. */
	static const float small[7] = { 7, -7, 3, -1, 0.49f, 2.5f, -6.6f };
	static const uint8_t small_raw[8] = { 0, 0, 0x80, 0x3f,
					      0x97, 0xf3, 0x30, 0x09 };
	float d[131], mirror[131], sender[131], q[131], got[131];
	struct gp_msg_block b = { 0 };
	const struct gp_msg_block *db;
	struct gp_msg m, dm;
	uint8_t *buf;
	size_t len, at;

	ASSERT_EQ(gp_msg_dtype_size(GP_DTYPE_Q4_DELTA), 1);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q4_DELTA, 1), 5);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q4_DELTA, 64), 36);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q4_DELTA, 65), 41);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q4_DELTA, 131), 66 + 3 * 4);

	b.tensor = 1;
	b.count = 7;
	b.dtype = GP_DTYPE_Q4_DELTA;
	b.values = small;
	gp_msg_init(&m, GP_MSG_PARAM_SHARDS);
	m.u.param_shards.blocks = &b;
	m.u.param_shards.n_blocks = 1;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &dm));
	db = &dm.u.param_shards.blocks[0];
	ASSERT_EQ(db->dtype, GP_DTYPE_Q4_DELTA);
	ASSERT_EQ(db->raw_len, sizeof(small_raw));
	ASSERT_MEM_EQ(db->raw, small_raw, sizeof(small_raw));
	{
		static const float want[7] = { 17, 3, 13, 9, 10, 13, 3 };
		float mir[7];

		for (size_t i = 0; i < 7; i++)
			mir[i] = 10;
		ASSERT_OK(gp_msg_block_add(db, mir, 7));
		ASSERT_MEM_EQ(mir, want, sizeof(want));
	}
	at = (size_t)(db->raw - buf);
	gp_msg_finish(&dm);
	/* q4's refusals hold for a change: a nibble -8, a spare nibble not
	 * 0, a scale that is not finite or negative. */
	{
		static const struct {
			size_t off;
			uint8_t byte;
		} bad[] = {
			{ 4, 0x98 }, { 4, 0x87 }, { 7, 0x19 }, { 3, 0xbf },
		};

		for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
			uint8_t keep = buf[at + bad[k].off];

			buf[at + bad[k].off] = bad[k].byte;
			ASSERT_EQ(gp_msg_decode(buf, len, &dm), -EBADMSG);
			buf[at + bad[k].off] = keep;
		}
		gp_put_lef32(buf + at, NAN);
		ASSERT_EQ(gp_msg_decode(buf, len, &dm), -EBADMSG);
		gp_put_lef32(buf + at, 1.0f);
		ASSERT_OK(gp_msg_decode(buf, len, &dm));
		gp_msg_finish(&dm);
	}
	free(buf);

	/* docs/protocol.md's example: 0.7, -0.3, 0.2 as a change to 1, 1, 1. */
	{
		static const float ex[3] = { 0.7f, -0.3f, 0.2f };
		static const uint8_t ex_raw[6] = { 0xcd, 0xcc, 0xcc, 0x3d,
						   0xd7, 0x02 };
		float mir[3] = { 1, 1, 1 };

		b.count = 3;
		b.values = ex;
		buf = encode(&m, &len);
		ASSERT_OK(gp_msg_decode(buf, len, &dm));
		db = &dm.u.param_shards.blocks[0];
		ASSERT_MEM_EQ(db->raw, ex_raw, sizeof(ex_raw));
		ASSERT_OK(gp_msg_block_add(db, mir, 3));
		ASSERT_NEAR(mir[0], 1.70000005f, 0);
		ASSERT_NEAR(mir[1], 0.699999988f, 0);
		ASSERT_NEAR(mir[2], 1.20000005f, 0);
		gp_msg_finish(&dm);
		free(buf);
	}
	/* Three chunks of 64, 64 and 3: the receiver's mirror moves exactly
	 * as the sender's. */
	for (size_t i = 0; i < 131; i++) {
		d[i] = (float)(0.001 * ((double)i - 60) * (i % 7 == 0 ? 40 : 1));
		mirror[i] = sender[i] = (float)(0.05 * sin((double)i));
	}
	b.count = 131;
	b.values = d;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &dm));
	db = &dm.u.param_shards.blocks[0];
	ASSERT_EQ(db->raw_len, 66 + 3 * 4);
	ASSERT_OK(gp_msg_block_read(db, got, 131));
	gp_msg_q4_round(d, q, 131);
	ASSERT_MEM_EQ(got, q, sizeof(q));
	ASSERT_OK(gp_msg_block_add(db, mirror, 131));
	for (size_t i = 0; i < 131; i++) {
		sender[i] += q[i];
		ASSERT_EQ(memcmp(&mirror[i], &sender[i], sizeof(float)), 0);
	}
	ASSERT_EQ(gp_msg_block_add(db, mirror, 130), -EINVAL);
	gp_msg_finish(&dm);
	free(buf);
	/* A change of no values (no data field) adds nothing (tools/fuzz
	 * found it refused). */
	b.count = 0;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &dm));
	ASSERT_OK(gp_msg_block_add(&dm.u.param_shards.blocks[0], NULL, 0));
	gp_msg_finish(&dm);
	free(buf);
	/* A sum that is not finite is refused whole. */
	{
		float huge[64], mir[64], keep[64];
		struct gp_msg_block hb = { .count = 64,
					   .dtype = GP_DTYPE_Q4_DELTA,
					   .values = huge };

		for (size_t i = 0; i < 64; i++) {
			huge[i] = FLT_MAX * (i % 2 ? 1.0f : -0.5f);
			mir[i] = keep[i] = FLT_MAX * 0.75f;
		}
		m.u.param_shards.blocks = &hb;
		buf = encode(&m, &len);
		ASSERT_OK(gp_msg_decode(buf, len, &dm));
		ASSERT_EQ(gp_msg_block_add(&dm.u.param_shards.blocks[0], mir, 64),
			  -ERANGE);
		ASSERT_MEM_EQ(mir, keep, sizeof(mir));
		gp_msg_finish(&dm);
		free(buf);
		/* A q4 block (an update's dtype) is not a change; here it
		 * is refused by the decoder already. */
		hb.dtype = GP_DTYPE_Q4;
		buf = encode(&m, &len);
		ASSERT_EQ(gp_msg_decode(buf, len, &dm), -EBADMSG);
		free(buf);
	}
	/* A change only travels down: an UPDATE holding one is malformed. */
	b.count = 7;
	b.values = small;
	b.dtype = GP_DTYPE_Q4_DELTA;
	buf = encode_block(&m, &b, &len);
	ASSERT_EQ(gp_msg_decode(buf, len, &dm), -EBADMSG);
	free(buf);
	/* The same UPDATE as Q4 decodes: only the dtype byte makes it bad. */
	b.dtype = GP_DTYPE_Q4;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &dm));
	gp_msg_finish(&dm);
	free(buf);
}

/* STATS and PROFILE (GP_CAP_PROGRESS): the documented bytes, the public
 * name rules and the refusals of values an agent could not show. */
static void test_progress(void)
{
	struct gp_msg m, d;
	uint8_t *buf;
	size_t len;

	/* The byte layout of docs/protocol.md: tag 7 job_name, then 8 epochs
	 * and 9 progress, ... 13 credit_mflop u64. */
	sample(&m, GP_MSG_STATS);
	buf = encode(&m, &len);
	{
		/* Fields 1-6: 4+8+8+4+4+4 values, six headers. */
		size_t at = GP_MSG_HEADER_SIZE + 6 * 6 + 32;
		const uint8_t want[] = { 7, 0, 11, 0, 0, 0, 'f', 'a', 's', 'h',
					 'i', 'o', 'n', '-', 'm', 'l', 'p',
					 8, 0, 4, 0, 0, 0, 5, 0, 0, 0,
					 9, 0, 4, 0, 0, 0, 0, 0, 0x20, 0x3f };

		ASSERT_MEM_EQ(buf + at, want, sizeof(want));
		at += sizeof(want) + (6 + 4) + (6 + 4) + (6 + 4);
		ASSERT_EQ(buf[at], 13);
		ASSERT_UINT_EQ(gp_get_le64(buf + at + 6),
			       UINT64_C(123456789012));
	}
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_STR_EQ(d.u.stats.job_name, "fashion-mlp");
	ASSERT_EQ(d.u.stats.epochs, 5);
	ASSERT_NEAR(d.u.stats.progress, 0.625, 0);
	ASSERT_EQ(d.u.stats.eta_s, 95);
	ASSERT_NEAR(d.u.stats.test_loss, 0.375, 0);
	ASSERT_EQ(d.u.stats.eval_epochs, 3);
	ASSERT_UINT_EQ(d.u.stats.credit_mflop, UINT64_C(123456789012));
	ASSERT_UINT_EQ(d.u.stats.job_id, 2);
	ASSERT_EQ(d.u.stats.state, GP_JOB_STATE_TRAINING);
	ASSERT_NEAR(d.u.stats.samples_per_s, 5120.5, 0);
	gp_msg_finish(&d);
	free(buf);

	/* The example of docs/protocol.md "11 STATS", byte for byte. */
	{
		static const uint8_t doc[] = {
			0x01, 0x0b, 0x00, 0x00, 0xac, 0x00, 0x00, 0x00, 0x01, 0x00,
			0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00,
			0x08, 0x00, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00, 0x00,
			0x00, 0x00, 0x03, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00, 0x0a,
			0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x04, 0x00,
			0x00, 0x00, 0x00, 0x00, 0x00, 0x3f, 0x05, 0x00, 0x04, 0x00,
			0x00, 0x00, 0x00, 0x00, 0x60, 0x3f, 0x06, 0x00, 0x04, 0x00,
			0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x07, 0x00, 0x03, 0x00,
			0x00, 0x00, 0x63, 0x6e, 0x6e, 0x08, 0x00, 0x04, 0x00, 0x00,
			0x00, 0x0c, 0x00, 0x00, 0x00, 0x09, 0x00, 0x04, 0x00, 0x00,
			0x00, 0x00, 0x00, 0x80, 0x3e, 0x0a, 0x00, 0x04, 0x00, 0x00,
			0x00, 0x5a, 0x00, 0x00, 0x00, 0x0b, 0x00, 0x04, 0x00, 0x00,
			0x00, 0x00, 0x00, 0xc0, 0x3e, 0x0c, 0x00, 0x04, 0x00, 0x00,
			0x00, 0x01, 0x00, 0x00, 0x00, 0x0d, 0x00, 0x08, 0x00, 0x00,
			0x00, 0x4e, 0x61, 0xbc, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0e,
			0x00, 0x08, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00,
			0x00, 0x00, 0x00, 0x0f, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
			0x10, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x45,
		};

		gp_msg_init(&m, GP_MSG_STATS);
		m.u.stats.epoch = 1;
		m.u.stats.updates_accepted = 40;
		m.u.stats.samples_credited = 2560;
		m.u.stats.loss = 0.5f;
		m.u.stats.accuracy = 0.875f;
		m.u.stats.agents_live = 2;
		strcpy(m.u.stats.job_name, "cnn");
		m.u.stats.epochs = 12;
		m.u.stats.progress = 0.25f;
		m.u.stats.eta_s = 90;
		m.u.stats.test_loss = 0.375f;
		m.u.stats.eval_epochs = 1;
		m.u.stats.credit_mflop = 12345678;
		m.u.stats.job_id = 3;
		m.u.stats.samples_per_s = 5120;
		buf = encode(&m, &len);
		ASSERT_EQ(len, sizeof(doc));
		ASSERT_MEM_EQ(buf, doc, len);
		free(buf);
	}

	/* An older coordinator's STATS (fields 1-6 only) decodes with the
	 * rest zero; a newer state value is kept. */
	sample(&m, GP_MSG_STATS);
	buf = encode(&m, &len);
	gp_put_le32(buf + 4, 6 * 6 + 32);
	ASSERT_OK(gp_msg_decode(buf, GP_MSG_HEADER_SIZE + 6 * 6 + 32, &d));
	ASSERT_EQ(d.u.stats.epoch, 3);
	ASSERT_STR_EQ(d.u.stats.job_name, "");
	ASSERT_EQ(d.u.stats.eval_epochs, 0);
	ASSERT_UINT_EQ(d.u.stats.credit_mflop, 0);
	free(buf);
	sample(&m, GP_MSG_STATS);
	m.u.stats.state = 9;
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_EQ(d.u.stats.state, 9);
	free(buf);

	/* Values an agent could not show fail the message. */
	{
		static const struct {
			float progress, accuracy, loss, test_loss, rate;
		} bad[] = {
			{ 1.5f, 0, 0, 0, 0 },   { -0.1f, 0, 0, 0, 0 },
			{ NAN, 0, 0, 0, 0 },    { 0, 1.01f, 0, 0, 0 },
			{ 0, NAN, 0, 0, 0 },    { 0, 0, -1, 0, 0 },
			{ 0, 0, INFINITY, 0, 0 }, { 0, 0, 0, NAN, 0 },
			{ 0, 0, 0, 0, -5 },     { 0, 0, 0, 0, INFINITY },
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			sample(&m, GP_MSG_STATS);
			m.u.stats.progress = bad[i].progress;
			m.u.stats.accuracy = bad[i].accuracy;
			m.u.stats.loss = bad[i].loss;
			m.u.stats.test_loss = bad[i].test_loss;
			m.u.stats.samples_per_s = bad[i].rate;
			buf = encode(&m, &len);
			ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
			free(buf);
		}
	}
	/* PROFILE: one str field, tag 1. */
	sample(&m, GP_MSG_PROFILE);
	buf = encode(&m, &len);
	{
		const uint8_t want[] = { 1, 15, 0, 0, 16, 0, 0, 0,
					 1, 0, 10, 0, 0, 0, 'Z', 'o', 0xc3,
					 0xab, '\'', 's', ' ', 'r', 'i', 'g' };

		ASSERT_EQ(len, sizeof(want));
		ASSERT_MEM_EQ(buf, want, len);
	}
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_STR_EQ(d.u.profile.public_name, "Zoë's rig");
	free(buf);
	/* Empty: withdraw the name. */
	gp_msg_init(&m, GP_MSG_PROFILE);
	buf = encode(&m, &len);
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT_STR_EQ(d.u.profile.public_name, "");
	free(buf);

	/* The name rules, and a bad name fails PROFILE and JOIN alike. */
	{
		static const char *const good[] = {
			"a", "Zoë", "team 42", "東京のGPU", "🚀 rocket",
			"0123456789012345678901234567890123456789012345678901234567890123",
		};
		static const char *const bad_names[] = {
			"", " lead", "trail ", "tab\tname", "new\nline",
			"del\x7f", "c1\xc2\x85", "bidi\xe2\x80\xae", "iso\xe2\x81\xa6x",
			"bad\xff", "over\xc0\xaf", "surr\xed\xa0\x80",
			"01234567890123456789012345678901234567890123456789012345678901234",
		};

		for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
			ASSERT_OK(gp_msg_public_name_check(good[i]));
		for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]);
		     i++) {
			size_t n = strlen(bad_names[i]);
			uint8_t raw[GP_MSG_HEADER_SIZE + 6 + 80];

			ASSERT_EQ(gp_msg_public_name_check(bad_names[i]), -EINVAL);
			if (n == 0 || n > GP_MSG_PUBLIC_NAME_MAX)
				continue;
			/* PROFILE built by hand: the encoder would refuse
			 * some of these (control characters). */
			raw[0] = 1;
			raw[1] = GP_MSG_PROFILE;
			raw[2] = raw[3] = 0;
			gp_put_le32(raw + 4, (uint32_t)(6 + n));
			gp_put_le16(raw + 8, 1);
			gp_put_le32(raw + 10, (uint32_t)n);
			memcpy(raw + 14, bad_names[i], n);
			ASSERT_EQ(gp_msg_decode(raw, 14 + n, &d), -EBADMSG);
		}
		/* A bidi override is a well-formed str: the encoder writes
		 * it, the JOIN's decoder refuses it. */
		sample(&m, GP_MSG_JOIN);
		strcpy(m.u.join.public_name, "evil\xe2\x80\xae");
		buf = encode(&m, &len);
		ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
		free(buf);
		sample(&m, GP_MSG_JOIN);
		strcpy(m.u.join.public_name, " padded");
		buf = encode(&m, &len);
		ASSERT_EQ(gp_msg_decode(buf, len, &d), -EBADMSG);
		free(buf);
		sample(&m, GP_MSG_JOIN);
		buf = encode(&m, &len);
		ASSERT_OK(gp_msg_decode(buf, len, &d));
		ASSERT_STR_EQ(d.u.join.public_name, "alice");
		gp_msg_finish(&d);
		free(buf);
	}
}

/* Payloads left to the caller (gp_msg_encode_alloc_deferred, a pull's
 * encoding on the coordinator's threads): run in any order they make the
 * same bytes as gp_msg_encode_alloc; unrun they are not written. */
static void test_deferred(void)
{
	static float v[3][200];
	struct gp_msg_block b[4] = {
		{ .tensor = 0, .rows = 2, .count = 200, .dtype = GP_DTYPE_F16,
		  .values = v[0] },
		{ .tensor = 1, .rows = 1, .count = 130, .dtype = GP_DTYPE_Q8,
		  .values = v[1] },
		{ .tensor = 2, .rows = 1, .count = 77, .dtype = GP_DTYPE_Q4_DELTA,
		  .values = v[2] },
		{ .tensor = 3, .rows = 1, .count = 5, .dtype = GP_DTYPE_F32,
		  .values = v[2] },
	};
	struct gp_msg_payload_job *jobs;
	struct gp_msg m;
	uint8_t *whole, *parts;
	size_t len, plen, n;

	for (size_t i = 0; i < 200; i++) {
		v[0][i] = 0.003f * (float)((int)i - 90);
		v[1][i] = (float)(i % 7) - 3.0f;
		v[2][i] = 0.01f * (float)(i % 11) - 0.05f;
	}
	gp_msg_init(&m, GP_MSG_PARAM_SHARDS);
	m.u.param_shards.clock = 9;
	m.u.param_shards.blocks = b;
	m.u.param_shards.n_blocks = 4;
	m.u.param_shards.updates_read = 3;
	ASSERT_OK(gp_msg_encode_alloc(&m, &whole, &len));
	ASSERT_OK(gp_msg_encode_alloc_deferred(&m, &parts, &plen, &jobs, &n));
	ASSERT_EQ(plen, len);
	ASSERT_EQ(n, 4);
	for (size_t i = 0; i < n; i++) {
		ASSERT(jobs[i].block == &b[i]);
		ASSERT(jobs[i].at > parts && jobs[i].at < parts + plen);
	}
	/* The first payload is not there yet. */
	memset(jobs[0].at, 0xa5, gp_msg_payload_size(b[0].dtype, b[0].count));
	ASSERT(memcmp(parts, whole, len) != 0);
	for (size_t i = n; i-- > 0;)
		gp_msg_payload_job_run(&jobs[i]);
	ASSERT(memcmp(parts, whole, len) == 0);
	free(jobs);
	free(parts);
	/* A message without blocks has no jobs. */
	sample(&m, GP_MSG_CLOCK);
	ASSERT_OK(gp_msg_encode_alloc_deferred(&m, &parts, &plen, &jobs, &n));
	ASSERT_EQ(n, 0);
	ASSERT(jobs == NULL);
	free(parts);
	free(whole);
}

static void test_names(void)
{
	ASSERT_STR_EQ(gp_msg_type_name(GP_MSG_UPDATE), "UPDATE");
	ASSERT_STR_EQ(gp_msg_type_name(0), "unknown");
	ASSERT_STR_EQ(gp_msg_reject_str(GP_REJECT_TOKEN_USED_UP), "token used up");
	ASSERT_STR_EQ(gp_msg_reject_str(999), "unspecified");
	ASSERT_STR_EQ(gp_msg_bye_str(GP_BYE_JOB_DONE), "job done");
	ASSERT_EQ(gp_msg_dtype_size(GP_DTYPE_F16), 2);
	ASSERT_EQ(gp_msg_dtype_size(GP_DTYPE_Q8), 1);
	ASSERT_EQ(gp_msg_dtype_size(GP_DTYPE_Q8_DELTA), 1);
	ASSERT_EQ(gp_msg_dtype_size(GP_DTYPE_Q4), 1);
	ASSERT_EQ(gp_msg_dtype_size(GP_DTYPE_Q4_DELTA), 1);
	ASSERT_EQ(GP_DTYPE_MAX, GP_DTYPE_Q4_DELTA);
	ASSERT_EQ(gp_msg_dtype_size(GP_DTYPE_MAX + 1), 0);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q8, 0), 0);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q8, 1), 5);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q8, 64), 68);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q8, 65), 73);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_F16, 65), 130);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_Q8_DELTA, 65), 73);
	ASSERT_EQ(gp_msg_payload_size(GP_DTYPE_MAX + 1, 65), 0);
	gp_msg_finish(NULL);
}

static int write_file(const char *dir, const char *name,
		      const struct gp_msg *m)
{
	char path[4096];
	size_t len;
	uint8_t *buf = encode(m, &len);
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		free(buf);
		return 1;
	}
	free(buf);
	return 0;
}

/* The inner-AdamW forms: WELCOME's settings block, UPDATE's delta. */
static int write_inner_adamw(const char *dir)
{
	static struct gp_msg_inner_adamw ia = {
		.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
		.weight_decay = 0.1f, .clip_norm = 1.0f,
	};
	static uint8_t items[2 * GP_MSG_ITEM_SIZE];
	struct gp_msg m;

	sample(&m, GP_MSG_WELCOME);
	m.u.welcome.caps |= GP_CAP_INNER_ADAMW | GP_CAP_LOCAL_STEP;
	m.u.welcome.inner_adamw = &ia;
	m.u.welcome.n_inner_adamw = 1;
	if (write_file(dir, "valid-02-WELCOME-inner-adamw", &m))
		return 1;
	gp_msg_update_item_put(items, 0, 1, 17, 2.5f);
	gp_msg_update_item_put(items, 1, 1, 18, 2.25f);
	sample(&m, GP_MSG_UPDATE);
	m.u.update.form = GP_UPDATE_DELTA;
	m.u.update.items = items;
	m.u.update.items_len = sizeof(items);
	return write_file(dir, "valid-09-UPDATE-delta", &m);
}

/* PARAM_SHARDS with a parameter block as a change (GP_CAP_PARAM_DELTA)
 * and its momentum as q8. */
static int write_param_delta(const char *dir)
{
	static float v[2][64];
	struct gp_msg_block b[2] = {
		{ .tensor = 0, .row_start = 0, .rows = 2, .version = 9,
		  .count = 64, .dtype = GP_DTYPE_Q8_DELTA, .values = v[0] },
		{ .tensor = 6, .row_start = 0, .rows = 2, .version = 9,
		  .count = 64, .dtype = GP_DTYPE_Q8, .values = v[1] },
	};
	struct gp_msg m;

	for (size_t i = 0; i < 64; i++) {
		v[0][i] = 0.001f * (float)((int)i - 32);
		v[1][i] = 0.01f * (float)(i % 5);
	}
	gp_msg_init(&m, GP_MSG_PARAM_SHARDS);
	m.u.param_shards.clock = 12;
	m.u.param_shards.blocks = b;
	m.u.param_shards.n_blocks = 2;
	return write_file(dir, "valid-08-PARAM_SHARDS-delta", &m);
}

/* UPDATE with 4-bit blocks (GP_CAP_Q4): two chunks, the last odd; and a
 * PARAM_SHARDS holding one, which must fail. */
static int write_q4(const char *dir)
{
	static float v[2][67];
	struct gp_msg_block b[2] = {
		{ .tensor = 0, .rows = 1, .count = 67, .dtype = GP_DTYPE_Q4,
		  .values = v[0] },
		{ .tensor = 1, .rows = 1, .count = 3, .dtype = GP_DTYPE_Q4,
		  .values = v[1] },
	};
	struct gp_msg m;

	for (size_t i = 0; i < 67; i++) {
		v[0][i] = 0.01f * (float)((int)i - 33);
		v[1][i] = 0.5f * (float)(i % 3) - 0.5f;
	}
	sample(&m, GP_MSG_UPDATE);
	m.u.update.blocks = b;
	m.u.update.n_blocks = 2;
	if (write_file(dir, "valid-09-UPDATE-q4", &m))
		return 1;
	gp_msg_init(&m, GP_MSG_PARAM_SHARDS);
	m.u.param_shards.clock = 3;
	m.u.param_shards.blocks = b;
	m.u.param_shards.n_blocks = 1;
	return write_file(dir, "junk-param-shards-q4", &m);
}

/* PARAM_SHARDS with 4-bit parameter changes (GP_CAP_Q4_DELTA), one
 * chunk and an odd last one, beside q8 momentum; and an UPDATE holding
 * one, which must fail. */
static int write_q4_delta(const char *dir)
{
	static float v[3][67];
	struct gp_msg_block b[3] = {
		{ .tensor = 0, .row_start = 0, .rows = 1, .version = 9,
		  .count = 67, .dtype = GP_DTYPE_Q4_DELTA, .values = v[0] },
		{ .tensor = 1, .row_start = 0, .rows = 1, .version = 9,
		  .count = 3, .dtype = GP_DTYPE_Q4_DELTA, .values = v[1] },
		{ .tensor = 6, .row_start = 0, .rows = 1, .version = 9,
		  .count = 67, .dtype = GP_DTYPE_Q8, .values = v[2] },
	};
	struct gp_msg m;

	for (size_t i = 0; i < 67; i++) {
		v[0][i] = 0.001f * (float)((int)i - 33);
		v[1][i] = 0.5f * (float)(i % 3) - 0.5f;
		v[2][i] = 0.01f * (float)(i % 5);
	}
	gp_msg_init(&m, GP_MSG_PARAM_SHARDS);
	m.u.param_shards.clock = 12;
	m.u.param_shards.blocks = b;
	m.u.param_shards.n_blocks = 3;
	if (write_file(dir, "valid-08-PARAM_SHARDS-q4-delta", &m))
		return 1;
	/* With updates_read (GP_CAP_OVERLAP), the parameter changes only. */
	m.u.param_shards.n_blocks = 2;
	m.u.param_shards.updates_read = 41;
	if (write_file(dir, "valid-08-PARAM_SHARDS-overlap", &m))
		return 1;
	sample(&m, GP_MSG_UPDATE);
	m.u.update.blocks = b;
	m.u.update.n_blocks = 2;
	return write_file(dir, "junk-update-q4-delta", &m);
}

/* VERIFY_TASK of form GRADIENT (one item, f16 tensors) and a declined
 * VERIFY_RESULT; a task holding a q8 block and a declined result holding
 * blocks, which must fail. */
static int write_verify(const char *dir)
{
	static uint8_t item[GP_MSG_VERIFY_ITEM_SIZE];
	static float v[67];
	struct gp_msg_block b[2] = {
		{ .tensor = 0, .rows = 1, .count = 67, .dtype = GP_DTYPE_F16,
		  .values = v },
		{ .tensor = 1, .rows = 1, .count = 3, .dtype = GP_DTYPE_F16,
		  .values = v },
	};
	struct gp_msg m;

	for (size_t i = 0; i < 67; i++)
		v[i] = 0.01f * (float)((int)i - 33);
	gp_msg_verify_item_put(item, 0, 1, 17, 0.1f, 3);
	sample(&m, GP_MSG_VERIFY_TASK);
	m.u.verify_task.form = GP_UPDATE_GRADIENT;
	m.u.verify_task.momentum = 0;
	m.u.verify_task.items = item;
	m.u.verify_task.items_len = sizeof(item);
	m.u.verify_task.blocks = b;
	m.u.verify_task.n_blocks = 2;
	if (write_file(dir, "valid-18-VERIFY_TASK-gradient", &m))
		return 1;
	b[1].dtype = GP_DTYPE_Q8;
	if (write_file(dir, "junk-verify-task-q8", &m))
		return 1;
	sample(&m, GP_MSG_VERIFY_RESULT);
	m.u.verify_result.status = GP_VERIFY_DECLINED;
	m.u.verify_result.compute_us = 0;
	m.u.verify_result.n_blocks = 0;
	if (write_file(dir, "valid-19-VERIFY_RESULT-declined", &m))
		return 1;
	m.u.verify_result.n_blocks = 2;
	return write_file(dir, "junk-verify-result-declined-blocks", &m);
}

static int write_corpus(const char *dir)
{
	for (uint8_t t = 1; t <= GP_MSG_TYPE_MAX; t++) {
		struct gp_msg m;
		char path[4096];
		uint8_t *buf;
		size_t len;
		FILE *f;

		if (type_hole(t))
			continue;
		sample(&m, t);
		buf = encode(&m, &len);
		snprintf(path, sizeof(path), "%s/valid-%02u-%s", dir, t,
			 gp_msg_type_name(t));
		f = fopen(path, "wb");
		if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
			perror(path);
			return 1;
		}
		free(buf);
	}
	return write_inner_adamw(dir) || write_param_delta(dir) ||
	       write_q4(dir) || write_q4_delta(dir) || write_verify(dir);
}

int main(int argc, char **argv)
{
	init_data();
	if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
		return write_corpus(argv[2]);
	test_round_trip();
	test_fields();
	test_unknown_type();
	test_data_shards();
	test_inner_adamw();
	test_verify();
	test_unknown_fields();
	test_truncation();
	test_limits();
	test_strict();
	test_model_text();
	test_version();
	test_f16();
	test_i8();
	test_q8();
	test_q8_vectorised();
	test_q8_delta();
	test_q4();
	test_q4_delta();
	test_progress();
	test_deferred();
	test_names();
	printf("msg: all tests passed\n");
	return 0;
}
