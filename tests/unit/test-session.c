/* The agent session's state machine (agent/machine.c), driven through a
 * fake world: every effect the machine asks for is recorded in struct
 * world, messages go through the real encoder and decoder, and time,
 * sockets and the compute thread do not exist. Each test stands for a
 * behaviour the real-process tests (tests/integration, tests/fault) see
 * from outside, in milliseconds. */
#include <errno.h>
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "gp-endian.h"
#include "machine.h"
#include "test.h"

#define SENT_MAX 64
#define COMPUTED_MAX 64

/* What one sent message was, read back from its encoding. */
struct sent {
	uint8_t type;
	uint16_t reason;          /* PAUSE, BYE */
	uint32_t caps;            /* JOIN */
	uint64_t data_fingerprint; /* JOIN */
	size_t token_id_len;      /* JOIN */
	uint64_t minibatch;       /* UPDATE */
	uint8_t form;             /* UPDATE */
	size_t n_blocks;          /* UPDATE */
	uint8_t dtype;            /* UPDATE, first block */
	size_t n_items;           /* UPDATE */
	uint64_t compute_us, held_us; /* UPDATE */
	char public_name[GP_MSG_PUBLIC_NAME_MAX + 1]; /* JOIN, PROFILE */
	uint32_t shard;           /* DATA_REQUEST */
	uint64_t task;            /* VERIFY_RESULT */
	uint64_t seq;             /* HEARTBEAT */
	uint8_t status;           /* VERIFY_RESULT */
	uint32_t tensors[4];      /* VERIFY_RESULT, UPDATE: the first 4 */
};

struct computed {
	uint64_t minibatch;
	uint32_t n;
	uint32_t group;
	float lr;
	uint8_t pixel0, label0;
};

struct world {
	struct gp_machine m;
	struct gp_session_config cfg;
	float mu;                 /* the momentum of each MINIBATCH */
	/* The channel. */
	int connect_result;       /* what the next connect returns */
	unsigned connects;
	char endpoints[32][GP_MACHINE_ENDPOINT_MAX]; /* of each connect */
	bool established;
	struct sent sent[SENT_MAX];
	size_t n_sent;
	unsigned closes;
	uint16_t close_code;
	char close_text[256];
	uint32_t heartbeat_ms;
	/* Timers, beacons, the end. */
	uint64_t retry_ms;        /* the retry set, 0: none */
	unsigned retries;
	bool beacon_on;
	unsigned beacon_starts;
	bool stopped;
	unsigned statuses;
	struct gp_stats_membership remembered;
	unsigned remembers;
	struct gp_stats_delta recorded;
	unsigned records;
	/* The compute thread. */
	unsigned worker_starts;
	unsigned fail_step;       /* given to the last worker_start */
	char worker_spec[256];    /* given to the last worker_start */
	uint64_t worker_seed;
	int worker_start_result;
	uint64_t gen;
	unsigned drops;
	struct gp_tensor_info tensors[2];
	unsigned params_set;
	float last_params[16];  /* the values of the last set_params */
	struct computed computed[COMPUTED_MAX];
	size_t n_computed;
	/* The last verification handed to the worker (its arrays kept). */
	struct gp_worker_verify verify;
	unsigned verifies;
	int verify_result;        /* what worker_verify returns */
	/* GP_CAP_OVERLAP (overlap_ops): the last inner settings' overlap,
	 * and the runs each rebased block was taken against. */
	bool inner_overlap;
	unsigned inner_sets;
	uint64_t rebase_refs[16];
	size_t n_rebases;
};

static int w_connect(void *ctx, const char *ep)
{
	struct world *w = ctx;

	snprintf(w->endpoints[w->connects % 32], GP_MACHINE_ENDPOINT_MAX, "%s", ep);
	w->connects++;
	w->established = false;
	return w->connect_result;
}

static bool w_established(void *ctx)
{
	return ((struct world *)ctx)->established;
}

static int w_send(void *ctx, struct gp_msg *msg)
{
	struct world *w = ctx;
	struct gp_msg d;
	struct sent *s;
	uint8_t *buf;
	size_t len;

	if (!w->established)
		return -ENOTCONN;
	ASSERT_OK(gp_msg_encode_alloc(msg, &buf, &len));
	ASSERT_OK(gp_msg_decode(buf, len, &d));
	ASSERT(w->n_sent < SENT_MAX);
	s = &w->sent[w->n_sent++];
	memset(s, 0, sizeof(*s));
	s->type = d.type;
	switch (d.type) {
	case GP_MSG_PAUSE:
		s->reason = d.u.pause.reason;
		break;
	case GP_MSG_BYE:
		s->reason = d.u.bye.reason;
		break;
	case GP_MSG_JOIN:
		s->caps = d.u.join.caps;
		s->data_fingerprint = d.u.join.data_fingerprint;
		s->token_id_len = d.u.join.token_id_len;
		memcpy(s->public_name, d.u.join.public_name,
		       sizeof(s->public_name));
		break;
	case GP_MSG_PROFILE:
		memcpy(s->public_name, d.u.profile.public_name,
		       sizeof(s->public_name));
		break;
	case GP_MSG_DATA_REQUEST:
		s->shard = d.u.data_request.shard;
		break;
	case GP_MSG_HEARTBEAT:
		s->seq = d.u.heartbeat.seq;
		break;
	case GP_MSG_VERIFY_RESULT:
		s->task = d.u.verify_result.task;
		s->status = d.u.verify_result.status;
		s->n_blocks = d.u.verify_result.n_blocks;
		s->dtype = s->n_blocks ? d.u.verify_result.blocks[0].dtype : 0;
		for (size_t i = 0; i < s->n_blocks && i < 4; i++)
			s->tensors[i] = d.u.verify_result.blocks[i].tensor;
		break;
	case GP_MSG_UPDATE:
		for (size_t i = 0; i < d.u.update.n_blocks && i < 4; i++)
			s->tensors[i] = d.u.update.blocks[i].tensor;
		s->minibatch = d.u.update.minibatch;
		s->form = d.u.update.form;
		s->n_blocks = d.u.update.n_blocks;
		s->dtype = d.u.update.n_blocks ? d.u.update.blocks[0].dtype : 0;
		s->n_items = d.u.update.items_len / GP_MSG_ITEM_SIZE;
		s->compute_us = d.u.update.compute_us;
		s->held_us = d.u.update.held_us;
		break;
	default:
		break;
	}
	gp_msg_finish(&d);
	free(buf);
	return 0;
}

static void w_close(void *ctx, uint16_t code, const char *text)
{
	struct world *w = ctx;

	w->closes++;
	w->close_code = code;
	w->established = false;
	snprintf(w->close_text, sizeof(w->close_text), "%s", text);
}

static void w_set_heartbeat(void *ctx, uint32_t ms)
{
	((struct world *)ctx)->heartbeat_ms = ms;
}

static void w_retry(void *ctx, uint64_t ms)
{
	struct world *w = ctx;

	w->retry_ms = ms;
	if (ms)
		w->retries++;
}

static int w_beacon(void *ctx, bool on)
{
	struct world *w = ctx;

	w->beacon_on = on;
	if (on)
		w->beacon_starts++;
	return 0;
}

static void w_stopped(void *ctx)
{
	((struct world *)ctx)->stopped = true;
}

static void w_status(void *ctx)
{
	((struct world *)ctx)->statuses++;
}

static void w_remember(void *ctx, const struct gp_stats_membership *m)
{
	struct world *w = ctx;

	w->remembered = *m;
	w->remembers++;
}

static void w_record(void *ctx, const struct gp_stats_delta *d)
{
	struct world *w = ctx;

	w->recorded = *d;
	w->records++;
}

static int w_worker_start(void *ctx, const char *spec, uint64_t seed,
			  uint32_t batch, unsigned fail_step)
{
	struct world *w = ctx;

	snprintf(w->worker_spec, sizeof(w->worker_spec), "%s", spec);
	w->worker_seed = seed;
	(void)batch;
	w->worker_starts++;
	w->fail_step = fail_step;
	w->gen = 0;
	return w->worker_start_result;
}

static size_t w_tensor_count(void *ctx)
{
	(void)ctx;
	return 2;
}

static const struct gp_tensor_info *w_tensor(void *ctx, size_t i)
{
	struct world *w = ctx;

	return i < 2 ? &w->tensors[i] : NULL;
}

static int w_set_params(void *ctx, enum gp_model_slot slot, size_t tensor,
			size_t row0, size_t rows, float *values)
{
	struct world *w = ctx;

	(void)slot;
	(void)row0;
	if (tensor < 2 && rows * w->tensors[tensor].cols <= 16)
		memcpy(w->last_params, values,
		       rows * w->tensors[tensor].cols * sizeof(float));
	free(values);
	w->params_set++;
	return 0;
}

static int w_compute(void *ctx, uint32_t epoch, uint64_t minibatch,
		     uint64_t clock, uint32_t n, uint8_t *pixels,
		     uint8_t dtype, uint8_t *labels, float lr, float mu,
		     uint32_t group)
{
	struct world *w = ctx;
	struct computed *c;

	(void)epoch;
	ASSERT_EQ(dtype, GP_DATA_U8);
	(void)clock;
	(void)mu;
	ASSERT(w->n_computed < COMPUTED_MAX);
	c = &w->computed[w->n_computed++];
	c->minibatch = minibatch;
	c->n = n;
	c->group = group;
	c->lr = lr;
	c->pixel0 = pixels[0];
	c->label0 = labels[0];
	free(pixels);
	free(labels);
	return 0;
}

static void verify_release(struct gp_worker_verify *t)
{
	free(t->items);
	free(t->idx);
	free(t->w0);
	free(t->v0);
	memset(t, 0, sizeof(*t));
}

static int w_verify(void *ctx, struct gp_worker_verify *t)
{
	struct world *w = ctx;

	verify_release(&w->verify);
	if (w->verify_result < 0) {
		verify_release(t);
		return w->verify_result;
	}
	w->verify = *t;
	w->verifies++;
	return 0;
}

static void w_drop_queued(void *ctx)
{
	struct world *w = ctx;

	w->drops++;
	w->gen++;
}

static uint64_t w_generation(void *ctx)
{
	return ((struct world *)ctx)->gen;
}

static double w_flops(void *ctx)
{
	(void)ctx;
	return 1e6;
}

static int w_set_inner(void *ctx, const struct gp_worker_inner *in)
{
	struct world *w = ctx;

	w->inner_overlap = in->overlap;
	w->inner_sets++;
	return 0;
}

static int w_rebase_params(void *ctx, size_t tensor, size_t row0,
			   size_t rows, float *values, uint64_t ref)
{
	struct world *w = ctx;

	(void)tensor;
	(void)row0;
	(void)rows;
	free(values);
	ASSERT(w->n_rebases < 16);
	w->rebase_refs[w->n_rebases++] = ref;
	return 0;
}

static const struct gp_machine_ops world_ops = {
	.connect = w_connect,
	.established = w_established,
	.send = w_send,
	.close = w_close,
	.set_heartbeat = w_set_heartbeat,
	.retry = w_retry,
	.beacon = w_beacon,
	.stopped = w_stopped,
	.status = w_status,
	.remember = w_remember,
	.record = w_record,
	.worker_start = w_worker_start,
	.worker_tensor_count = w_tensor_count,
	.worker_tensor = w_tensor,
	.worker_set_params = w_set_params,
	.worker_compute = w_compute,
	.worker_drop_queued = w_drop_queued,
	.worker_generation = w_generation,
	.worker_flops_per_sample = w_flops,
};

static const uint8_t pool_key[GP_STATS_KEY_SIZE] = { 1, 2, 3 };

static struct world *world_new(enum gp_machine_mode mode,
			       const struct gp_token *token)
{
	struct world *w = calloc(1, sizeof(*w));

	ASSERT_NOT_NULL(w);
	snprintf(w->cfg.name, sizeof(w->cfg.name), "test");
	snprintf(w->cfg.device_name, sizeof(w->cfg.device_name), "cpu");
	w->cfg.stats = (struct gp_stats *)w; /* only tested for NULL */
	w->tensors[0] = (struct gp_tensor_info){ .rows = 3, .cols = 2 };
	w->tensors[1] = (struct gp_tensor_info){ .rows = 1, .cols = 3 };
	gp_machine_init(&w->m, &w->cfg, token, mode, NULL, 0, &world_ops, w);
	return w;
}

static struct gp_stats_membership membership(const char *pool,
					     const char *endpoints)
{
	struct gp_stats_membership m = { 0 };

	snprintf(m.pool, sizeof(m.pool), "%s", pool);
	snprintf(m.endpoints, sizeof(m.endpoints), "%s", endpoints);
	memcpy(m.coordinator_key, pool_key, sizeof(pool_key));
	return m;
}

/* A run-mode world that is a member of pool "p" at endpoints and has
 * started its first connection. */
static struct world *member(const char *endpoints)
{
	struct world *w = world_new(GP_MACHINE_RUN, NULL);
	struct gp_stats_membership m = membership("p", endpoints);
	struct gp_agent_status st;

	gp_machine_start(&w->m);
	ASSERT_EQ(w->connects, 0); /* no pool yet: waits */
	/* A member's restart says nothing of "not a member" before the
	 * memberships were read. */
	gp_machine_status(&w->m, &st);
	ASSERT_STR_EQ(st.state, "starting");
	ASSERT(!strstr(st.reason, "not a member"));
	gp_machine_on_members(&w->m, true, &m);
	ASSERT_EQ(w->connects, 1);
	return w;
}

static void deliver(struct world *w, const struct gp_msg *msg)
{
	uint8_t *buf;
	size_t len;

	ASSERT_OK(gp_msg_encode_alloc(msg, &buf, &len));
	gp_machine_on_message(&w->m, buf, len);
	free(buf);
}

static void establish(struct world *w)
{
	w->established = true;
	gp_machine_on_established(&w->m);
}

/* The WELCOME of the tests: agent 7, job 1, mlp:2-3-1, batch 4. */
static void welcome_msg(struct gp_msg *msg, uint32_t caps,
			uint32_t heartbeat_ms)
{
	gp_msg_init(msg, GP_MSG_WELCOME);
	msg->u.welcome.agent_id = 7;
	msg->u.welcome.job_id = 1;
	snprintf(msg->u.welcome.model, sizeof(msg->u.welcome.model),
		 "mlp:2-3-1");
	msg->u.welcome.batch_size = 4;
	msg->u.welcome.heartbeat_ms = heartbeat_ms;
	msg->u.welcome.caps = caps;
}

static void welcome_with(struct world *w, uint32_t caps, uint32_t heartbeat_ms)
{
	struct gp_msg msg;

	welcome_msg(&msg, caps, heartbeat_ms);
	deliver(w, &msg);
}

static void welcome(struct world *w)
{
	establish(w);
	welcome_with(w, GP_CAP_F16 | GP_CAP_LOCAL_STEP | GP_CAP_SUMS, 0);
}

static void minibatch(struct world *w, uint64_t id, uint32_t samples,
		      uint32_t group)
{
	uint8_t px[4 * GP_DATA_PIXELS], lb[4];
	struct gp_msg msg;

	memset(px, (int)id, sizeof(px));
	memset(lb, (int)id % 10, sizeof(lb));
	gp_msg_init(&msg, GP_MSG_MINIBATCH);
	msg.u.minibatch.minibatch = id;
	msg.u.minibatch.samples = samples;
	msg.u.minibatch.features = GP_DATA_PIXELS;
	msg.u.minibatch.pixels = px;
	msg.u.minibatch.pixels_len = (size_t)samples * GP_DATA_PIXELS;
	msg.u.minibatch.labels = lb;
	msg.u.minibatch.labels_len = samples;
	msg.u.minibatch.lr = 0.1f;
	msg.u.minibatch.momentum = w->mu;
	msg.u.minibatch.group = group;
	deliver(w, &msg);
}

static void bye(struct world *w, uint16_t reason)
{
	struct gp_msg msg;

	gp_msg_init(&msg, GP_MSG_BYE);
	msg.u.bye.reason = reason;
	snprintf(msg.u.bye.text, sizeof(msg.u.bye.text), "bye");
	deliver(w, &msg);
}

/* The worker's answer for minibatch id: n_items > 0 for a group. */
static void result(struct world *w, uint64_t id, uint64_t gen, int error,
		   size_t n_items)
{
	float grads[9] = { 0 }, sums_b[9] = { 0 };
	struct gp_worker_item items[GP_WORKER_GROUP_MAX] = { 0 };
	struct gp_worker_result res = {
		.error = error,
		.gen = gen,
		.minibatch = id,
		.samples = 4,
		.grads = grads,
		.n_grads = 9,
		.sums_b = n_items ? sums_b : NULL,
		.items = n_items ? items : NULL,
		.n_items = n_items,
		.compute_us = 1000,
	};

	for (size_t i = 0; i < n_items; i++)
		items[i].minibatch = id + i;
	gp_machine_on_result(&w->m, &res);
}

static const struct sent *last_sent(const struct world *w)
{
	ASSERT(w->n_sent > 0);
	return &w->sent[w->n_sent - 1];
}

static size_t count_sent(const struct world *w, uint8_t type)
{
	size_t n = 0;

	for (size_t i = 0; i < w->n_sent; i++)
		n += w->sent[i].type == type;
	return n;
}

static void fail_connect(struct world *w, enum gp_close_reason reason)
{
	w->established = false;
	gp_machine_on_close(&w->m, reason, 0, "failed");
}

/* ---- connecting --------------------------------------------------------- */

/* Reconnects with exponential backoff and jitter: each retry waits in
 * [base/2, base], base doubling from 250 ms up to 30 s; endpoints are
 * tried in turn; after two failures the agent listens for beacons. */
static void test_backoff_jitter(void)
{
	struct world *w = member("a:1,b:2");
	uint64_t base = GP_MACHINE_BACKOFF_MIN_MS;

	w->cfg.beacon_port = 7100;
	ASSERT_STR_EQ(w->endpoints[0], "a:1");
	for (unsigned i = 1; i <= 12; i++) {
		fail_connect(w, GP_CLOSE_CONNECT_FAILED);
		ASSERT_EQ(w->m.attempts, i);
		ASSERT_EQ(w->retries, i);
		ASSERT_GE(w->retry_ms, base / 2);
		ASSERT_LE(w->retry_ms, base);
		ASSERT_EQ(w->beacon_on, i >= GP_MACHINE_BEACON_AFTER);
		gp_machine_connect(&w->m); /* the retry timer fires */
		ASSERT_EQ(w->connects, i + 1);
		ASSERT_STR_EQ(w->endpoints[i], i % 2 ? "b:2" : "a:1");
		base = base * 2 > GP_MACHINE_BACKOFF_MAX_MS ?
			       GP_MACHINE_BACKOFF_MAX_MS : base * 2;
	}
	ASSERT_EQ(w->m.backoff_ms, GP_MACHINE_BACKOFF_MAX_MS);
	ASSERT_EQ(w->beacon_starts, 1);
	{
		struct gp_agent_status st;

		gp_machine_status(&w->m, &st);
		ASSERT_STR_EQ(st.state, "waiting");
		ASSERT(strstr(st.reason, "12 failed attempts, last: "));
		ASSERT(strstr(st.reason, "listening for beacons"));
	}
	ASSERT(!w->stopped);
	free(w);
}

/* A name that does not resolve counts as a failed attempt and retries. */
static void test_unresolvable(void)
{
	struct world *w = world_new(GP_MACHINE_RUN, NULL);
	struct gp_stats_membership m = membership("p", "nowhere:1");

	w->connect_result = -EHOSTUNREACH;
	gp_machine_on_members(&w->m, true, &m);
	ASSERT_EQ(w->connects, 1);
	ASSERT(!w->m.connected);
	ASSERT_EQ(w->m.attempts, 1);
	ASSERT_STR_EQ(w->m.last_error, "cannot resolve");
	ASSERT_GT(w->retry_ms, 0);
	free(w);
}

/* After a WELCOME the attempts and the backoff start over: a coordinator
 * that restarts is found again at once (test_crash, test_churn). JOIN
 * carries the capabilities; a WORK_REQUEST follows the WELCOME. */
static void test_reconnect(void)
{
	struct world *w = member("a:1");

	for (int i = 0; i < 4; i++) {
		fail_connect(w, GP_CLOSE_CONNECT_FAILED);
		gp_machine_connect(&w->m);
	}
	ASSERT_EQ(w->m.backoff_ms, 2000);
	establish(w);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_JOIN);
	ASSERT_EQ(last_sent(w)->caps, GP_CAP_F16 | GP_CAP_LOCAL_STEP |
				      GP_CAP_SUMS | GP_CAP_MOMENTUM | GP_CAP_Q8 |
				      GP_CAP_MODEL_TEXT | GP_CAP_PROGRESS |
				      GP_CAP_JOBS | GP_CAP_PARAM_DELTA |
				      GP_CAP_Q4 | GP_CAP_Q4_DELTA |
				      GP_CAP_ZERO_MIRROR);
	ASSERT_EQ(last_sent(w)->token_id_len, 0);
	welcome_with(w, GP_CAP_SUMS, 0);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_WORK_REQUEST);
	ASSERT_EQ(w->m.attempts, 0);
	ASSERT_EQ(w->m.backoff_ms, 0);
	ASSERT_EQ(w->worker_starts, 1);
	/* The coordinator goes away: the next try is soon again. */
	fail_connect(w, GP_CLOSE_PEER_CLOSED);
	ASSERT_EQ(w->drops, 1);
	ASSERT_LE(w->retry_ms, GP_MACHINE_BACKOFF_MIN_MS);
	gp_machine_connect(&w->m);
	welcome(w);
	ASSERT_EQ(w->worker_starts, 1); /* same model: the worker stays */
	free(w);
}

/* The model comes from WELCOME.model_text when it is there (a model
 * description), else from the shorthand of tag 3; the job's seed goes to
 * the worker with it, and a different text or seed restarts the worker. */
static void test_welcome_model_text(void)
{
	static const char desc[] = "gradpool-model 1; input shape=1x28x28; "
				   "flatten flat; dense fc1 out=10; "
				   "softmax_xent loss";
	struct world *w = member("a:1");
	struct gp_msg msg;

	welcome(w);
	ASSERT_EQ(w->worker_starts, 1);
	ASSERT_STR_EQ(w->worker_spec, "mlp:2-3-1");
	ASSERT_UINT_EQ(w->worker_seed, 0);

	gp_msg_init(&msg, GP_MSG_WELCOME);
	msg.u.welcome.agent_id = 7;
	msg.u.welcome.job_id = 2;
	msg.u.welcome.batch_size = 4;
	msg.u.welcome.model_text = desc;
	msg.u.welcome.model_text_len = strlen(desc);
	msg.u.welcome.seed = 99;
	fail_connect(w, GP_CLOSE_PEER_CLOSED);
	gp_machine_connect(&w->m);
	establish(w);
	deliver(w, &msg);
	ASSERT_EQ(w->worker_starts, 2);
	ASSERT_STR_EQ(w->worker_spec, desc);
	ASSERT_UINT_EQ(w->worker_seed, 99);

	/* The same model and seed again: the worker stays. */
	fail_connect(w, GP_CLOSE_PEER_CLOSED);
	gp_machine_connect(&w->m);
	establish(w);
	deliver(w, &msg);
	ASSERT_EQ(w->worker_starts, 2);
	/* Another seed: a new worker. */
	fail_connect(w, GP_CLOSE_PEER_CLOSED);
	gp_machine_connect(&w->m);
	establish(w);
	msg.u.welcome.seed = 100;
	deliver(w, &msg);
	ASSERT_EQ(w->worker_starts, 3);
	ASSERT_UINT_EQ(w->worker_seed, 100);
	free(w);
}

/* The coordinator's heartbeat interval from WELCOME reaches the channel
 * (a paused agent sends only heartbeats: test_pause). */
static void test_heartbeat_from_welcome(void)
{
	struct world *w = member("a:1");

	establish(w);
	welcome_with(w, 0, 400);
	ASSERT_EQ(w->heartbeat_ms, 400);
	free(w);
}

/* ---- work ------------------------------------------------------------- */

/* Minibatches go to the worker with the local step and the group when the
 * WELCOME's caps allow; a result goes out as one UPDATE (f16 with
 * GP_CAP_F16) and is counted. */
static void test_minibatch_and_update(void)
{
	struct world *w = member("a:1");
	struct gp_agent_status st;

	welcome(w);
	minibatch(w, 5, 4, 0);
	ASSERT_EQ(w->n_computed, 1);
	ASSERT_EQ(w->computed[0].minibatch, 5);
	ASSERT_EQ(w->computed[0].n, 4);
	ASSERT_NEAR(w->computed[0].lr, 0.1, 1e-6);
	ASSERT_EQ(w->computed[0].pixel0, 5);
	ASSERT_EQ(w->computed[0].label0, 5);
	result(w, 5, w->gen, 0, 0);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_UPDATE);
	ASSERT_EQ(last_sent(w)->minibatch, 5);
	ASSERT_EQ(last_sent(w)->n_blocks, 2);
	ASSERT_EQ(last_sent(w)->dtype, GP_DTYPE_F16);
	ASSERT_EQ(w->records, 1);
	ASSERT_EQ(w->recorded.minibatches, 1);
	ASSERT_EQ(w->recorded.samples, 4);
	ASSERT_STR_EQ(w->recorded.pool, "p");
	ASSERT_EQ(w->m.minibatches, 1);
	gp_machine_status(&w->m, &st);
	ASSERT_STR_EQ(st.state, "connected");
	ASSERT_EQ(st.minibatches, 1);
	free(w);
}

/* Minibatch mb, alone (sums_b NULL) or opening a group of two with
 * mb + 1, is handed to the machine and answered with res: its gradient,
 * or the group's sums with sums_b as B. */
static void answer(struct world *w, struct gp_worker_result *res,
		   uint64_t mb, float *sums_b)
{
	minibatch(w, mb, 4, sums_b ? 2 : 0);
	if (sums_b)
		minibatch(w, mb + 1, 4, 0);
	res->minibatch = mb;
	res->sums_b = sums_b;
	res->n_items = sums_b ? 2 : 0;
	gp_machine_on_result(&w->m, res);
}

/* With GP_CAP_Q8 the update goes as q8 blocks, and what they lose is kept
 * (error feedback) until the next WELCOME; an update with a non-finite
 * value goes as f16, so the coordinator sees and refuses it. */
static void test_q8_update(void)
{
	struct world *w = member("a:1");
	float grads[9], sums_b[9];
	struct gp_worker_item items[2] = { { .minibatch = 5 }, { .minibatch = 6 } };
	struct gp_worker_result res = {
		.minibatch = 5, .samples = 8, .grads = grads, .n_grads = 9,
		.sums_b = sums_b, .items = items, .n_items = 2,
		.compute_us = 1000,
	};

	for (int i = 0; i < 9; i++) {
		grads[i] = i == 0 ? 1.0f : 0.001f * (float)i;
		sums_b[i] = -grads[i];
	}
	establish(w);
	welcome_with(w, GP_CAP_F16 | GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
			GP_CAP_Q8, 0);
	minibatch(w, 5, 4, 2);
	minibatch(w, 6, 4, 0);
	res.gen = w->gen;
	gp_machine_on_result(&w->m, &res);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_UPDATE);
	ASSERT_EQ(last_sent(w)->n_blocks, 4);
	ASSERT_EQ(last_sent(w)->dtype, GP_DTYPE_Q8);
	/* Both sums, 9 values each; 0.001 is below a step of 1/127. */
	ASSERT_EQ(w->m.feedback.n, 18);
	ASSERT_NEAR(w->m.feedback.err[1], 0.001, 1e-7);
	ASSERT_NEAR(w->m.feedback.err[10], -0.001, 1e-7);
	ASSERT_NEAR(w->m.feedback.err[0], 0, 1e-7);
	/* Not finite: f16, and the error stays for the next. */
	grads[3] = NAN;
	answer(w, &res, 7, sums_b);
	ASSERT_EQ(last_sent(w)->dtype, GP_DTYPE_F16);
	ASSERT_NEAR(w->m.feedback.err[1], 0.001, 1e-7);
	/* One minibatch's gradient (form 0, 9 values) between groups: A's
	 * error goes on into it as mu e (machine.h), the gradient's into
	 * the next A whole, B's waits for the next group. Before 2026-12-07
	 * each switch dropped them all. */
	grads[3] = 0.003f;
	w->mu = 0.5f;
	answer(w, &res, 9, NULL);
	ASSERT_EQ(last_sent(w)->n_blocks, 2);
	ASSERT_EQ(last_sent(w)->dtype, GP_DTYPE_Q8);
	ASSERT_EQ(w->m.feedback.n, 18);
	ASSERT_NEAR(w->m.feedback.err[1], 0.0015, 1e-7);
	ASSERT_NEAR(w->m.feedback.err[10], -0.001, 1e-7);
	answer(w, &res, 10, sums_b);
	ASSERT_EQ(last_sent(w)->n_blocks, 4);
	ASSERT_NEAR(w->m.feedback.err[1], 0.0025, 1e-7);
	ASSERT_NEAR(w->m.feedback.err[10], -0.002, 1e-7);
	/* Without momentum A moves no parameter: its error is not owed to
	 * a gradient. */
	w->mu = 0;
	answer(w, &res, 12, NULL);
	ASSERT_NEAR(w->m.feedback.err[1], 0.001, 1e-7);
	ASSERT_NEAR(w->m.feedback.err[10], -0.002, 1e-7);
	/* A new session starts with nothing owed. */
	welcome_with(w, GP_CAP_F16 | GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
			GP_CAP_Q8, 0);
	ASSERT_NEAR(w->m.feedback.err[1], 0, 0);
	gp_machine_finish(&w->m);
	free(w);
}

/* With GP_CAP_Q4 as well the update goes as 4-bit blocks with the same
 * error feedback; GP_CAP_Q4 without GP_CAP_Q8 changes nothing. */
static void test_q4_update(void)
{
	const uint32_t caps = GP_CAP_F16 | GP_CAP_LOCAL_STEP | GP_CAP_SUMS;
	struct world *w = member("a:1");
	float grads[9], sums_b[9];
	struct gp_worker_item items[2] = { { .minibatch = 5 }, { .minibatch = 6 } };
	struct gp_worker_result res = {
		.minibatch = 5, .samples = 8, .grads = grads, .n_grads = 9,
		.sums_b = sums_b, .items = items, .n_items = 2,
		.compute_us = 1000,
	};

	for (int i = 0; i < 9; i++) {
		grads[i] = i == 0 ? 1.0f : 0.01f * (float)i;
		sums_b[i] = -grads[i];
	}
	establish(w);
	welcome_with(w, caps | GP_CAP_Q8 | GP_CAP_Q4, 0);
	minibatch(w, 5, 4, 2);
	minibatch(w, 6, 4, 0);
	res.gen = w->gen;
	gp_machine_on_result(&w->m, &res);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_UPDATE);
	ASSERT_EQ(last_sent(w)->n_blocks, 4);
	ASSERT_EQ(last_sent(w)->dtype, GP_DTYPE_Q4);
	/* Tensor 0's 0.03 is below half its step of 1/7 (q8 would have
	 * sent it: 0.03 * 127 = 3.8 steps); tensor 1's 0.06 is 5.25 steps
	 * of 0.08/7 and goes as 5. */
	ASSERT_EQ(w->m.feedback.n, 18);
	ASSERT_NEAR(w->m.feedback.err[3], 0.03, 1e-7);
	ASSERT_NEAR(w->m.feedback.err[12], -0.03, 1e-7);
	ASSERT_NEAR(w->m.feedback.err[6], 0.06 - 5 * 0.08 / 7, 1e-7);
	ASSERT_NEAR(w->m.feedback.err[0], 0, 1e-7);
	/* Without GP_CAP_Q8, f16 as before. */
	welcome_with(w, caps | GP_CAP_Q4, 0);
	minibatch(w, 7, 4, 2);
	minibatch(w, 8, 4, 0);
	res.minibatch = 7;
	res.gen = w->gen;
	gp_machine_on_result(&w->m, &res);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_UPDATE);
	ASSERT_EQ(last_sent(w)->dtype, GP_DTYPE_F16);
	gp_machine_finish(&w->m);
	free(w);
}

/* A group of minibatches is answered by one UPDATE of sums, two blocks a
 * tensor and one item a minibatch; without GP_CAP_SUMS (or GP_CAP_LOCAL_STEP)
 * the group (or the local step) is not asked of the worker. */
static void test_group(void)
{
	struct world *w = member("a:1");

	welcome(w);
	for (uint64_t i = 0; i < 4; i++)
		minibatch(w, 10 + i, 2, i == 0 ? 4 : 0);
	ASSERT_EQ(w->n_computed, 4);
	ASSERT_EQ(w->computed[0].group, 4);
	result(w, 10, w->gen, 0, 4);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_UPDATE);
	ASSERT_EQ(last_sent(w)->form, GP_UPDATE_SUMS);
	ASSERT_EQ(last_sent(w)->n_blocks, 4);
	ASSERT_EQ(last_sent(w)->n_items, 4);
	ASSERT_EQ(w->recorded.minibatches, 4);
	ASSERT_EQ(w->m.minibatches, 4);
	free(w);

	w = member("a:1");
	establish(w);
	welcome_with(w, 0, 0);
	minibatch(w, 1, 2, 4);
	ASSERT_EQ(w->computed[0].group, 0);
	ASSERT_NEAR(w->computed[0].lr, 0, 0);
	result(w, 1, w->gen, 0, 0);
	ASSERT_EQ(last_sent(w)->dtype, GP_DTYPE_F32);
	free(w);
}

/* UPDATE.held_us: from the arrival of the run's first minibatch (a
 * group's first) to the update, at least its compute_us; 0 for a run
 * whose start the agent does not know, as after a reconnection. */
static void test_held(void)
{
	struct timespec pause = { .tv_nsec = 20 * 1000 * 1000 };
	struct world *w = member("a:1");
	uint64_t gen;

	welcome(w);
	minibatch(w, 30, 2, 2);
	nanosleep(&pause, NULL);
	minibatch(w, 31, 2, 0);
	result(w, 30, w->gen, 0, 2);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_UPDATE);
	ASSERT_UINT_EQ(last_sent(w)->compute_us, 1000);
	ASSERT(last_sent(w)->held_us >= 20000);
	ASSERT(last_sent(w)->held_us < 10 * 1000 * 1000);
	/* At least compute_us, which a clock's granularity could undercut. */
	minibatch(w, 40, 2, 2);
	minibatch(w, 41, 2, 0);
	result(w, 40, w->gen, 0, 2);
	ASSERT(last_sent(w)->held_us >= 1000);
	/* A minibatch that never came here, and one that is not a run's
	 * first. */
	result(w, 50, w->gen, 0, 2);
	ASSERT_EQ(last_sent(w)->minibatch, 50);
	ASSERT_UINT_EQ(last_sent(w)->held_us, 0);
	result(w, 41, w->gen, 0, 2);
	ASSERT_UINT_EQ(last_sent(w)->held_us, 0);
	/* A minibatch handed out again: its newest arrival counts. */
	minibatch(w, 30, 2, 2);
	result(w, 30, w->gen, 0, 2);
	ASSERT(last_sent(w)->held_us >= 1000);
	ASSERT(last_sent(w)->held_us < 20000);
	/* The runs in hand at a disconnection are forgotten with it. */
	minibatch(w, 60, 2, 2);
	gen = w->gen;
	fail_connect(w, GP_CLOSE_IO_ERROR);
	gp_machine_connect(&w->m);
	welcome(w);
	ASSERT(w->gen != gen);
	result(w, 60, w->gen, 0, 2);
	ASSERT_EQ(last_sent(w)->minibatch, 60);
	ASSERT_UINT_EQ(last_sent(w)->held_us, 0);
	free(w);

	/* Without groups (form 0) each minibatch is a run, and of a clock
	 * of 40, more than the ring keeps, the first, which came to an
	 * idle worker, is known; the rest came to a busy one. */
	w = member("a:1");
	establish(w);
	welcome_with(w, GP_CAP_F16, 0);
	minibatch(w, 100, 2, 0);
	nanosleep(&pause, NULL);
	for (uint64_t i = 1; i < 40; i++)
		minibatch(w, 100 + i, 2, 0);
	result(w, 100, w->gen, 0, 0);
	ASSERT(last_sent(w)->held_us >= 20000);
	result(w, 101, w->gen, 0, 0);
	ASSERT_UINT_EQ(last_sent(w)->held_us, 0);
	free(w);
}

/* A group cut short by the end of its connection: the worker's queue is
 * dropped (a new generation), work still arriving on the closing channel
 * is not taken, and what the worker reports for the old generation is
 * never sent on the next connection (test_stale_result). */
static void test_group_cut_short(void)
{
	struct world *w = member("a:1");
	uint64_t gen;

	welcome(w);
	minibatch(w, 20, 2, 4);
	minibatch(w, 21, 2, 0);
	gen = w->gen;
	fail_connect(w, GP_CLOSE_IO_ERROR);
	ASSERT_EQ(w->drops, 1);
	ASSERT_EQ(w->n_computed, 2);
	gp_machine_connect(&w->m);
	welcome(w);
	result(w, 20, gen, 0, 2);
	ASSERT_EQ(count_sent(w, GP_MSG_UPDATE), 0);
	ASSERT_EQ(w->m.stale_results, 1);
	ASSERT_EQ(w->records, 0);
	ASSERT_EQ(w->m.minibatches, 0);
	free(w);
}

/* Results of an earlier connection's work are dropped, also a failed one:
 * it does not drop the new connection. */
static void test_stale_results_dropped(void)
{
	struct world *w = member("a:1");
	size_t sent;

	welcome(w);
	minibatch(w, 1, 4, 0);
	minibatch(w, 2, 4, 0);
	gp_machine_on_close(&w->m, GP_CLOSE_IDLE_TIMEOUT, 0, "idle");
	gp_machine_connect(&w->m);
	welcome(w);
	sent = w->n_sent;
	result(w, 1, 0, 0, 0);
	result(w, 2, 0, -EIO, 0);
	ASSERT_EQ(w->n_sent, sent);
	ASSERT_EQ(w->m.stale_results, 2);
	ASSERT_EQ(w->closes, 0);
	ASSERT(!w->m.worker_failed);
	/* This connection's own result goes out. */
	minibatch(w, 3, 4, 0);
	result(w, 3, w->gen, 0, 0);
	ASSERT_EQ(last_sent(w)->minibatch, 3);
	free(w);
}

/* A step that fails drops the connection (so the coordinator hands the
 * work out again at once), the worker is made anew at the next WELCOME
 * without the test failure, and the backoff keeps growing across such
 * drops until a result goes out (test_compute_error). */
static void test_compute_error_drops_connection(void)
{
	struct world *w;

	w = world_new(GP_MACHINE_RUN, NULL);
	w->cfg.test.fail_step = 20;
	{
		struct gp_stats_membership m = membership("p", "a:1");

		gp_machine_on_members(&w->m, true, &m);
	}
	welcome(w);
	ASSERT_EQ(w->fail_step, 20);
	minibatch(w, 1, 4, 0);
	minibatch(w, 2, 4, 0);
	result(w, 1, w->gen, -EIO, 0);
	ASSERT_EQ(w->closes, 1);
	ASSERT_EQ(w->close_code, GP_BYE_RESTART);
	ASSERT(strstr(w->close_text, "minibatch 1"));
	ASSERT_EQ(w->drops, 1);
	ASSERT_EQ(w->m.work_failures, 1);
	ASSERT_EQ(count_sent(w, GP_MSG_UPDATE), 0);
	/* Work still arriving on the closing channel is not taken. */
	minibatch(w, 5, 4, 0);
	ASSERT_EQ(w->n_computed, 2);
	/* The queued minibatch 2 reports in the old generation: dropped. */
	result(w, 2, w->gen - 1, 0, 0);
	ASSERT_EQ(count_sent(w, GP_MSG_UPDATE), 0);
	gp_machine_on_close(&w->m, GP_CLOSE_LOCAL, GP_BYE_RESTART, "dropped");
	ASSERT_EQ(w->m.backoff_ms, GP_MACHINE_BACKOFF_MIN_MS);
	gp_machine_connect(&w->m);
	welcome(w);
	ASSERT_EQ(w->worker_starts, 2);
	ASSERT_EQ(w->fail_step, 0); /* once per process */
	ASSERT_EQ(w->m.backoff_ms, GP_MACHINE_BACKOFF_MIN_MS); /* kept */
	/* Failing again: the backoff grows on. */
	minibatch(w, 3, 4, 0);
	result(w, 3, w->gen, -EIO, 0);
	gp_machine_on_close(&w->m, GP_CLOSE_LOCAL, GP_BYE_RESTART, "dropped");
	ASSERT_EQ(w->m.backoff_ms, 2 * GP_MACHINE_BACKOFF_MIN_MS);
	ASSERT_EQ(w->m.work_failures, 2);
	gp_machine_connect(&w->m);
	welcome(w);
	ASSERT_EQ(w->worker_starts, 3);
	minibatch(w, 4, 4, 0);
	result(w, 4, w->gen, 0, 0);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_UPDATE);
	ASSERT_EQ(w->m.work_failures, 0);
	ASSERT_EQ(w->m.backoff_ms, 0);
	free(w);
}

/* A minibatch of the wrong shape drops the connection with PROTOCOL. */
static void test_bad_minibatch(void)
{
	struct world *w = member("a:1");

	welcome(w);
	minibatch(w, 1, 4, 0);
	ASSERT_EQ(w->n_computed, 1);
	w->m.batch = 2; /* now 4 samples are too many */
	minibatch(w, 2, 4, 0);
	ASSERT_EQ(w->n_computed, 1);
	ASSERT_EQ(w->closes, 1);
	ASSERT_EQ(w->close_code, GP_BYE_PROTOCOL);
	free(w);
}

/* Minibatches as indices into the local copy of the training set. */
static void test_local_data(void)
{
	struct world *w = world_new(GP_MACHINE_RUN, NULL);
	struct gp_stats_membership m = membership("p", "a:1");
	uint8_t images[3 * GP_DATA_PIXELS], labels[3] = { 4, 5, 6 };
	struct gp_dataset data = { .count = 3, .features = GP_DATA_PIXELS,
				   .dtype = GP_DATA_U8, .images = images,
				   .labels = labels };
	uint8_t idx[8] = { 2, 0, 0, 0, 1, 0, 0, 0 };
	struct gp_msg msg;

	for (size_t i = 0; i < 3; i++)
		memset(images + i * GP_DATA_PIXELS, (int)(100 + i), GP_DATA_PIXELS);
	w->m.data = &data;
	w->m.data_fingerprint = 0x1234;
	gp_machine_on_members(&w->m, true, &m);
	establish(w);
	ASSERT(last_sent(w)->caps & GP_CAP_LOCAL_DATA);
	ASSERT_EQ(last_sent(w)->data_fingerprint, 0x1234);
	welcome_with(w, GP_CAP_LOCAL_DATA, 0);
	gp_msg_init(&msg, GP_MSG_MINIBATCH);
	msg.u.minibatch.minibatch = 9;
	msg.u.minibatch.samples = 2;
	msg.u.minibatch.indices = idx;
	msg.u.minibatch.indices_len = sizeof(idx);
	deliver(w, &msg);
	ASSERT_EQ(w->n_computed, 1);
	ASSERT_EQ(w->computed[0].pixel0, 102);
	ASSERT_EQ(w->computed[0].label0, 6);
	idx[0] = 3; /* beyond the data set */
	deliver(w, &msg);
	ASSERT_EQ(w->n_computed, 1);
	ASSERT_EQ(w->close_code, GP_BYE_PROTOCOL);
	free(w);
}


/* ---- checks of other members' updates (GP_CAP_VERIFY) ------------------- */

/* A VERIFY_TASK of the world's model (tensors 3x2 and 1x3): sums (two
 * items of two samples, indices 2, 0 and 1, 2) or one gradient (the first
 * item), each block's values its tensor number * 10 + element. */
static void verify_task(struct world *w, uint64_t task, bool sums,
			uint32_t samples0, uint32_t index0, int twist)
{
	uint8_t items[2 * GP_MSG_VERIFY_ITEM_SIZE], idx[4 * 8];
	const uint32_t ids[8] = { index0, 0, 1, 2, 0, 0, 0, 0 };
	float vals[4][6];
	struct gp_msg_block blocks[4];
	size_t nb = sums ? 4 : 2;
	struct gp_msg msg;

	gp_msg_verify_item_put(items, 0, 3, 11, twist == 5 ? 20.0f : 0.05f,
			       samples0);
	gp_msg_verify_item_put(items, 1, 3, 12, 0.04f, 2);
	for (size_t i = 0; i < 8; i++)
		gp_put_le32(idx + 4 * i, ids[i]);
	for (uint32_t t = 0; t < nb; t++) {
		const struct gp_tensor_info *ti = &w->tensors[t % 2];

		for (size_t i = 0; i < 6; i++)
			vals[t][i] = (float)(t * 10 + i);
		blocks[t] = (struct gp_msg_block){
			.tensor = t,
			.rows = (uint32_t)ti->rows,
			.count = (uint32_t)(ti->rows * ti->cols),
			.dtype = GP_DTYPE_F32,
			.values = vals[t],
		};
	}
	if (twist == 1)
		blocks[1].tensor = 0;          /* tensor 0 twice, 1 missing */
	else if (twist == 2)
		blocks[0].rows = 2, blocks[0].count = 4; /* two rows of three */
	else if (twist == 3)
		blocks[1].row_start = 1, blocks[1].rows = 0; /* not at row 0 */
	gp_msg_init(&msg, GP_MSG_VERIFY_TASK);
	msg.u.verify_task.task = task;
	msg.u.verify_task.form = sums ? GP_UPDATE_SUMS : GP_UPDATE_GRADIENT;
	msg.u.verify_task.momentum = 0.9f;
	msg.u.verify_task.items = items;
	msg.u.verify_task.items_len = (sums ? 2 : 1) * GP_MSG_VERIFY_ITEM_SIZE;
	msg.u.verify_task.indices = idx;
	msg.u.verify_task.indices_len = 4 * ((size_t)samples0 + (sums ? 2 : 0));
	msg.u.verify_task.blocks = blocks;
	msg.u.verify_task.n_blocks = twist == 4 ? nb - 1 : nb;
	deliver(w, &msg);
}

/* The worker's answer to verification task: sums or one gradient. */
static void verify_result(struct world *w, uint64_t task, uint64_t gen,
			  int error, bool sums)
{
	float a[9] = { 0 }, b[9] = { 0 };
	struct gp_worker_result res = {
		.verify = true,
		.task = task,
		.gen = gen,
		.error = error,
		.grads = error ? NULL : a,
		.sums_b = error || !sums ? NULL : b,
		.n_grads = error ? 0 : 9,
		.compute_us = 500,
	};

	gp_machine_on_result(&w->m, &res);
}

/* A member with the data set in hand, and the worker op, asks for
 * GP_CAP_VERIFY (not without the op or with a token file instead); a
 * granted task goes to the worker as its items, indices and whole
 * tensors (parameters, then momentum), and its result back as a
 * VERIFY_RESULT of whole tensors in f16 (A as 0..n-1, B as n..2n-1) that
 * is not training work (no minibatch in hand answered, nothing recorded);
 * a worker's failure, a sample beyond the data set, a pause, a rate no
 * worker takes and a worker without memory decline it; a result of an earlier connection is
 * dropped. A task not granted, of a minibatch over the batch, or whose
 * blocks are not each tensor whole and once drops the session
 * (BYE 4). */
static void test_verify_task(void)
{
	struct gp_machine_ops ops = world_ops;
	struct world *w;
	struct gp_stats_membership m = membership("p", "a:1");
	uint8_t images[3 * GP_DATA_PIXELS] = { 0 }, labels[3] = { 0 };
	struct gp_dataset data = { .count = 3, .features = GP_DATA_PIXELS,
				   .dtype = GP_DATA_U8, .images = images,
				   .labels = labels };
	const uint32_t granted = GP_CAP_F16 | GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
				 GP_CAP_LOCAL_DATA | GP_CAP_VERIFY;

	/* Not asked for without the worker's op, nor with a token file. */
	w = world_new(GP_MACHINE_RUN, NULL);
	w->m.data = &data;
	gp_machine_on_members(&w->m, true, &m);
	establish(w);
	ASSERT(last_sent(w)->caps & GP_CAP_LOCAL_DATA);
	ASSERT(!(last_sent(w)->caps & GP_CAP_VERIFY));
	/* Granted anyway: a protocol error. */
	welcome_with(w, granted, 0);
	verify_task(w, 1, true, 2, 2, 0);
	ASSERT_EQ(w->closes, 1);
	ASSERT_EQ(w->close_code, GP_BYE_PROTOCOL);
	free(w);

	ops.worker_verify = w_verify;
	w = world_new(GP_MACHINE_RUN, NULL);
	gp_machine_init(&w->m, &w->cfg, NULL, GP_MACHINE_RUN, NULL, 0, &ops,
			w);
	w->m.data = &data;
	gp_machine_on_members(&w->m, true, &m);
	establish(w);
	ASSERT(last_sent(w)->caps & GP_CAP_VERIFY);

	/* Not granted in this session: BYE 4. */
	welcome_with(w, GP_CAP_F16 | GP_CAP_LOCAL_DATA, 0);
	verify_task(w, 1, true, 2, 2, 0);
	ASSERT_EQ(w->verifies, 0);
	ASSERT_EQ(w->closes, 1);
	ASSERT_EQ(w->close_code, GP_BYE_PROTOCOL);
	gp_machine_on_close(&w->m, GP_CLOSE_LOCAL, GP_BYE_PROTOCOL, "x");
	gp_machine_connect(&w->m);
	establish(w);
	welcome_with(w, granted, 0);

	/* A group's sums: items, indices, w0 and v0 in tensor order (the
	 * indices: index0 2, then 0 for the first item; 1, 2 for the
	 * second). */
	minibatch(w, 5, 4, 0);
	ASSERT_EQ(w->m.in_hand, 1);
	verify_task(w, 41, true, 2, 2, 0);
	ASSERT_EQ(w->verifies, 1);
	ASSERT_EQ(w->verify.task, 41);
	ASSERT(w->verify.sums);
	ASSERT_NEAR(w->verify.mu, 0.9f, 0);
	ASSERT_EQ(w->verify.k, 2);
	ASSERT(w->verify.data == &data);
	ASSERT_EQ(w->verify.items[0].epoch, 3);
	ASSERT_EQ(w->verify.items[1].minibatch, 12);
	ASSERT_NEAR(w->verify.items[1].lr, 0.04f, 0);
	ASSERT_EQ(w->verify.items[0].samples, 2);
	ASSERT_EQ(w->verify.items[0].idx[0], 2);
	ASSERT_EQ(w->verify.items[1].idx[0], 1);
	ASSERT_EQ(w->verify.items[1].idx[1], 2);
	ASSERT_NEAR(w->verify.w0[5], 5, 0);     /* tensor 0, element 5 */
	ASSERT_NEAR(w->verify.w0[6], 10, 0);    /* tensor 1, element 0 */
	ASSERT_NEAR(w->verify.v0[0], 20, 0);    /* tensor 2: momentum of 0 */
	ASSERT_NEAR(w->verify.v0[8], 32, 0);    /* tensor 3: momentum of 1 */
	w->n_sent = 0;
	verify_result(w, 41, w->gen, 0, true);
	ASSERT_EQ(w->n_sent, 1);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_VERIFY_RESULT);
	ASSERT_EQ(last_sent(w)->task, 41);
	ASSERT_EQ(last_sent(w)->status, GP_VERIFY_COMPUTED);
	ASSERT_EQ(last_sent(w)->n_blocks, 4);
	ASSERT_EQ(last_sent(w)->dtype, GP_DTYPE_F16);
	for (uint32_t t = 0; t < 4; t++)
		ASSERT_EQ(last_sent(w)->tensors[t], t);
	/* Not training work. */
	ASSERT_EQ(w->m.in_hand, 1);
	ASSERT_EQ(w->m.minibatches, 0);
	ASSERT_EQ(w->records, 0);
	ASSERT_EQ(w->m.verifications, 1);
	/* An UPDATE's sums still number both halves 0..n-1. */
	result(w, 5, w->gen, 0, 2);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_UPDATE);
	ASSERT_EQ(last_sent(w)->n_blocks, 4);
	ASSERT_EQ(last_sent(w)->tensors[2], 0);
	ASSERT_EQ(last_sent(w)->tensors[3], 1);

	/* A gradient; the worker failed it: declined, no blocks. */
	verify_task(w, 42, false, 2, 2, 0);
	ASSERT_EQ(w->verifies, 2);
	ASSERT(!w->verify.sums);
	ASSERT(w->verify.v0 == NULL);
	ASSERT_EQ(w->verify.k, 1);
	verify_result(w, 42, w->gen, -ENOMEM, false);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_VERIFY_RESULT);
	ASSERT_EQ(last_sent(w)->status, GP_VERIFY_DECLINED);
	ASSERT_EQ(last_sent(w)->n_blocks, 0);
	/* Declined before the worker: a sample beyond the data set, the
	 * worker without memory, a pause. */
	verify_task(w, 43, true, 2, 3, 0);
	ASSERT_EQ(w->verifies, 2);
	ASSERT_EQ(last_sent(w)->task, 43);
	ASSERT_EQ(last_sent(w)->status, GP_VERIFY_DECLINED);
	w->verify_result = -ENOMEM;
	verify_task(w, 44, true, 2, 2, 0);
	ASSERT_EQ(last_sent(w)->task, 44);
	ASSERT_EQ(last_sent(w)->status, GP_VERIFY_DECLINED);
	w->verify_result = 0;
	gp_machine_set_user_paused(&w->m, true);
	verify_task(w, 45, true, 2, 2, 0);
	ASSERT_EQ(last_sent(w)->task, 45);
	ASSERT_EQ(last_sent(w)->status, GP_VERIFY_DECLINED);
	gp_machine_set_user_paused(&w->m, false);
	verify_task(w, 47, true, 2, 2, 5); /* a rate no worker takes */
	ASSERT_EQ(last_sent(w)->task, 47);
	ASSERT_EQ(last_sent(w)->status, GP_VERIFY_DECLINED);
	ASSERT_EQ(w->verifies, 2);
	ASSERT_EQ(w->closes, 1);
	/* A result of an earlier connection's task is not sent. */
	w->n_sent = 0;
	verify_result(w, 46, w->gen + 1, 0, true);
	ASSERT_EQ(w->n_sent, 0);

	/* What no session may be sent: BYE 4 each time. */
	for (int twist = 0; twist <= 4; twist++) {
		unsigned closes = w->closes;

		verify_task(w, 50, true, twist ? 2 : 5 /* > batch 4 */, 2,
			    twist);
		ASSERT_EQ(w->closes, closes + 1);
		ASSERT_EQ(w->close_code, GP_BYE_PROTOCOL);
		ASSERT_EQ(w->verifies, 2);
		gp_machine_on_close(&w->m, GP_CLOSE_LOCAL, GP_BYE_PROTOCOL,
				    "x");
		gp_machine_connect(&w->m);
		establish(w);
		welcome_with(w, granted, 0);
	}
	verify_release(&w->verify);
	gp_machine_finish(&w->m);
	free(w);
}

/* ---- a data set fetched as shards ---------------------------------------- */

/* A fake shard cache of three shards (agent/datacache.c is tested on its
 * own): a shard whose first byte is 0xff fails its digest. */
static struct {
	uint8_t state[3];         /* 0 missing, 1 asked, 2 in */
	unsigned opens;
	uint8_t images[2 * GP_DATA_PIXELS], labels[2];
	struct gp_dataset ds;
} fake;

static int f_data_open(void *ctx, const uint8_t *manifest, size_t len)
{
	int missing = 0;

	(void)ctx;
	ASSERT_EQ(len, 4);
	ASSERT_MEM_EQ(manifest, "GPDM", 4);
	fake.opens++;
	for (int i = 0; i < 3; i++) {
		if (fake.state[i] == 1)
			fake.state[i] = 0;
		missing += fake.state[i] != 2;
	}
	return missing;
}

static int64_t f_data_next(void *ctx)
{
	(void)ctx;
	for (int i = 0; i < 3; i++)
		if (fake.state[i] == 0) {
			fake.state[i] = 1;
			return i;
		}
	return -1;
}

static int f_data_put(void *ctx, uint32_t shard, const uint8_t *data,
		      size_t len)
{
	(void)ctx;
	if (shard >= 3 || fake.state[shard] != 1 || len != 1)
		return -EINVAL;
	if (data[0] == 0xff) {
		fake.state[shard] = 0;
		return -EBADMSG;
	}
	fake.state[shard] = 2;
	return fake.state[0] == 2 && fake.state[1] == 2 && fake.state[2] == 2;
}

static const struct gp_dataset *f_data_set(void *ctx, char *err,
					   size_t err_len)
{
	(void)ctx;
	(void)err;
	(void)err_len;
	fake.ds.count = 2;
	fake.ds.features = GP_DATA_PIXELS;
	fake.ds.dtype = GP_DATA_U8;
	fake.ds.images = fake.images;
	fake.ds.labels = fake.labels;
	return &fake.ds;
}

static void data_shard(struct world *w, uint32_t i, uint8_t byte)
{
	struct gp_msg msg;

	gp_msg_init(&msg, GP_MSG_DATA_SHARD);
	msg.u.data_shard.shard = i;
	msg.u.data_shard.data = &byte;
	msg.u.data_shard.data_len = 1;
	deliver(w, &msg);
}

/* GP_CAP_DATA_SHARDS: asked for in JOIN when the agent can fetch; the
 * missing shards are asked for before any work, a shard that fails its
 * digest is asked for again, and once the set is in the agent asks for
 * work and takes indices into it. A grant without a manifest, or a
 * shard nobody asked for, drops the session. */
static void test_data_shards(void)
{
	struct gp_machine_ops ops = world_ops;
	struct world *w = world_new(GP_MACHINE_RUN, NULL);
	struct gp_stats_membership m = membership("p", "a:1");
	uint8_t idx[4] = { 1, 0, 0, 0 };
	struct gp_msg msg;

	memset(&fake, 0, sizeof(fake));
	memset(fake.images + GP_DATA_PIXELS, 77, GP_DATA_PIXELS);
	fake.labels[1] = 3;
	ops.data_open = f_data_open;
	ops.data_next = f_data_next;
	ops.data_put = f_data_put;
	ops.data_set = f_data_set;
	w->m.ops = &ops;
	gp_machine_on_members(&w->m, true, &m);
	establish(w);
	ASSERT(last_sent(w)->caps & GP_CAP_DATA_SHARDS);
	gp_msg_init(&msg, GP_MSG_WELCOME);
	msg.u.welcome.batch_size = 4;
	snprintf(msg.u.welcome.model, sizeof(msg.u.welcome.model), "mlp:2-3-1");
	msg.u.welcome.caps = GP_CAP_DATA_SHARDS;
	msg.u.welcome.data_manifest = (const uint8_t *)"GPDM";
	msg.u.welcome.data_manifest_len = 4;
	deliver(w, &msg);
	ASSERT_EQ(count_sent(w, GP_MSG_DATA_REQUEST), 3);
	ASSERT_EQ(count_sent(w, GP_MSG_WORK_REQUEST), 0);
	data_shard(w, 0, 1);
	data_shard(w, 1, 0xff);     /* fails its digest: asked again */
	ASSERT_EQ(count_sent(w, GP_MSG_DATA_REQUEST), 4);
	ASSERT_EQ(last_sent(w)->shard, 1);
	data_shard(w, 2, 1);
	ASSERT_EQ(count_sent(w, GP_MSG_WORK_REQUEST), 0);
	data_shard(w, 1, 1);
	ASSERT_EQ(count_sent(w, GP_MSG_WORK_REQUEST), 1);
	ASSERT_EQ(w->closes, 0);
	gp_msg_init(&msg, GP_MSG_MINIBATCH);
	msg.u.minibatch.minibatch = 5;
	msg.u.minibatch.samples = 1;
	msg.u.minibatch.indices = idx;
	msg.u.minibatch.indices_len = sizeof(idx);
	deliver(w, &msg);
	ASSERT_EQ(w->n_computed, 1);
	ASSERT_EQ(w->computed[0].pixel0, 77);
	ASSERT_EQ(w->computed[0].label0, 3);
	/* A shard that was not asked for now: dropped. */
	data_shard(w, 0, 1);
	ASSERT_EQ(w->closes, 0); /* not fetching: ignored */
	gp_machine_on_close(&w->m, GP_CLOSE_PEER_CLOSED, 0, "gone");
	free(w);

	/* A grant without a manifest. */
	w = world_new(GP_MACHINE_RUN, NULL);
	w->m.ops = &ops;
	gp_machine_on_members(&w->m, true, &m);
	establish(w);
	welcome_with(w, GP_CAP_DATA_SHARDS, 0);
	ASSERT_EQ(w->closes, 1);
	ASSERT_EQ(w->close_code, GP_BYE_PROTOCOL);
	ASSERT_EQ(count_sent(w, GP_MSG_WORK_REQUEST), 0);
	free(w);
}

/* Parameter blocks that fit the model reach the worker; others do not. */
static void test_param_shards(void)
{
	struct world *w = member("a:1");
	float v[6] = { 1, 2, 3, 4, 5, 6 };
	struct gp_msg_block blocks[3] = {
		{ .tensor = 0, .rows = 3, .count = 6, .dtype = GP_DTYPE_F32, .values = v },
		{ .tensor = 2, .rows = 3, .count = 6, .dtype = GP_DTYPE_F32, .values = v },
		{ .tensor = 1, .rows = 2, .count = 6, .dtype = GP_DTYPE_F32, .values = v },
	};
	struct gp_msg msg;

	welcome(w);
	gp_msg_init(&msg, GP_MSG_PARAM_SHARDS);
	msg.u.param_shards.blocks = blocks;
	msg.u.param_shards.n_blocks = 3;
	deliver(w, &msg);
	ASSERT_EQ(w->params_set, 2); /* tensor 0 and its momentum */
	free(w);
}

/* GP_CAP_PARAM_DELTA: a whole block sets the mirror, a q8 change adds
 * to it and the sum reaches the worker; a change that was not granted,
 * comes before its parameters, is for the momentum or does not sum to
 * finite values drops the session (the mirror would no longer be the
 * coordinator's). */
static void shards_one(struct world *w, uint32_t tensor, uint8_t dtype,
		       const float *v)
{
	struct gp_msg_block b = { .tensor = tensor, .rows = 3, .count = 6,
				  .dtype = dtype, .values = v };
	struct gp_msg msg;

	gp_msg_init(&msg, GP_MSG_PARAM_SHARDS);
	msg.u.param_shards.blocks = &b;
	msg.u.param_shards.n_blocks = 1;
	deliver(w, &msg);
}

static void test_param_delta(void)
{
	const uint32_t caps = GP_CAP_F16 | GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
			      GP_CAP_MOMENTUM | GP_CAP_Q8 | GP_CAP_PARAM_DELTA;
	float v[6] = { 1, 2, 3, 4, 5, 6 };
	float d[6] = { 0.5f, -0.25f, 0, 1, -1, 0.125f };
	float q[6], huge[6];
	struct world *w = member("a:1");

	establish(w);
	welcome_with(w, caps, 0);
	shards_one(w, 0, GP_DTYPE_F32, v);
	ASSERT_EQ(w->params_set, 1);
	shards_one(w, 0, GP_DTYPE_Q8_DELTA, d);
	ASSERT_EQ(w->params_set, 2);
	gp_msg_q8_round(d, q, 6);
	for (size_t i = 0; i < 6; i++)
		ASSERT_NEAR(w->last_params[i], v[i] + q[i], 0);
	/* A second change adds to the first. */
	shards_one(w, 0, GP_DTYPE_Q8_DELTA, d);
	for (size_t i = 0; i < 6; i++)
		ASSERT_NEAR(w->last_params[i], v[i] + q[i] + q[i], 0);
	/* A whole block sets the mirror again. */
	shards_one(w, 0, GP_DTYPE_F32, v);
	shards_one(w, 0, GP_DTYPE_Q8_DELTA, d);
	for (size_t i = 0; i < 6; i++)
		ASSERT_NEAR(w->last_params[i], v[i] + q[i], 0);
	ASSERT_EQ(w->closes, 0);
	/* Not finite once added. */
	for (size_t i = 0; i < 6; i++)
		huge[i] = FLT_MAX;
	shards_one(w, 0, GP_DTYPE_F32, huge);
	shards_one(w, 0, GP_DTYPE_Q8_DELTA, huge);
	ASSERT_EQ(w->params_set, 6);
	ASSERT_EQ(w->closes, 1);
	ASSERT_EQ(w->close_code, GP_BYE_PROTOCOL);
	gp_machine_finish(&w->m);
	free(w);

	/* A change for the momentum (tensor 2: tensor 0's). */
	w = member("a:1");
	establish(w);
	welcome_with(w, caps, 0);
	shards_one(w, 0, GP_DTYPE_F32, v);
	shards_one(w, 2, GP_DTYPE_Q8_DELTA, d);
	ASSERT_EQ(w->params_set, 1);
	ASSERT_EQ(w->closes, 1);
	gp_machine_finish(&w->m);
	free(w);

	/* Before any whole block of its tensor. */
	w = member("a:1");
	establish(w);
	welcome_with(w, caps, 0);
	shards_one(w, 0, GP_DTYPE_Q8_DELTA, d);
	ASSERT_EQ(w->params_set, 0);
	ASSERT_EQ(w->closes, 1);
	gp_machine_finish(&w->m);
	free(w);

	/* Not granted. */
	w = member("a:1");
	establish(w);
	welcome_with(w, caps & ~(uint32_t)GP_CAP_PARAM_DELTA, 0);
	shards_one(w, 0, GP_DTYPE_F32, v);
	shards_one(w, 0, GP_DTYPE_Q8_DELTA, d);
	ASSERT_EQ(w->params_set, 1);
	ASSERT_EQ(w->closes, 1);
	gp_machine_finish(&w->m);
	free(w);
}

/* GP_CAP_Q4_DELTA: a 4-bit change adds to the mirror as the coordinator's
 * gp_msg_q4_round() says, bit for bit; one without the grant drops the
 * session, as does a q4 change for the momentum. */
static void test_param_delta_q4(void)
{
	const uint32_t caps = GP_CAP_F16 | GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
			      GP_CAP_MOMENTUM | GP_CAP_Q8 | GP_CAP_PARAM_DELTA |
			      GP_CAP_Q4_DELTA;
	float v[6] = { 1, 2, 3, 4, 5, 6 };
	float d[6] = { 0.5f, -0.25f, 0, 1, -1, 0.125f };
	float q[6];
	struct world *w = member("a:1");

	establish(w);
	welcome_with(w, caps, 0);
	shards_one(w, 0, GP_DTYPE_F32, v);
	shards_one(w, 0, GP_DTYPE_Q4_DELTA, d);
	ASSERT_EQ(w->params_set, 2);
	gp_msg_q4_round(d, q, 6);
	for (size_t i = 0; i < 6; i++)
		ASSERT_NEAR(w->last_params[i], v[i] + q[i], 0);
	/* A second change adds to the first. */
	shards_one(w, 0, GP_DTYPE_Q4_DELTA, d);
	for (size_t i = 0; i < 6; i++)
		ASSERT_NEAR(w->last_params[i], v[i] + q[i] + q[i], 0);
	ASSERT_EQ(w->closes, 0);
	shards_one(w, 2, GP_DTYPE_Q4_DELTA, d);
	ASSERT_EQ(w->closes, 1);
	gp_machine_finish(&w->m);
	free(w);

	/* GP_CAP_ZERO_MIRROR: the mirror starts at zeros, so the first
	 * block of a tensor may be a change: the values are the change
	 * alone, and the next adds to it; the momentum takes none still. */
	w = member("a:1");
	establish(w);
	welcome_with(w, caps | GP_CAP_ZERO_MIRROR, 0);
	shards_one(w, 0, GP_DTYPE_Q4_DELTA, d);
	ASSERT_EQ(w->params_set, 1);
	ASSERT_EQ(w->closes, 0);
	for (size_t i = 0; i < 6; i++)
		ASSERT_NEAR(w->last_params[i], 0.0f + q[i], 0);
	shards_one(w, 0, GP_DTYPE_Q4_DELTA, d);
	for (size_t i = 0; i < 6; i++)
		ASSERT_NEAR(w->last_params[i], (0.0f + q[i]) + q[i], 0);
	shards_one(w, 2, GP_DTYPE_Q4_DELTA, d);
	ASSERT_EQ(w->closes, 1);
	gp_machine_finish(&w->m);
	free(w);

	/* PARAM_DELTA without Q4_DELTA: a q4 change was not granted. */
	w = member("a:1");
	establish(w);
	welcome_with(w, caps & ~(uint32_t)GP_CAP_Q4_DELTA, 0);
	shards_one(w, 0, GP_DTYPE_F32, v);
	shards_one(w, 0, GP_DTYPE_Q4_DELTA, d);
	ASSERT_EQ(w->params_set, 1);
	ASSERT_EQ(w->closes, 1);
	gp_machine_finish(&w->m);
	free(w);
}

/* GP_CAP_OVERLAP: an agent with local AdamW steps and rebased parameters
 * asks for it; granted, each parameter block of PARAM_SHARDS goes to
 * the worker against the run of the UPDATE numbered updates_read (0:
 * none yet; one not sent or too old: UINT64_MAX, the rows replace the
 * copy), momentum blocks as before; not granted, as plain parameters. */
static void shards_read(struct world *w, uint64_t updates_read)
{
	float v[6] = { 1, 2, 3, 4, 5, 6 };
	struct gp_msg_block b = { .tensor = 0, .rows = 3, .count = 6,
				  .dtype = GP_DTYPE_F32, .values = v };
	struct gp_msg msg;

	gp_msg_init(&msg, GP_MSG_PARAM_SHARDS);
	msg.u.param_shards.blocks = &b;
	msg.u.param_shards.n_blocks = 1;
	msg.u.param_shards.updates_read = updates_read;
	deliver(w, &msg);
}

static void welcome_inner(struct world *w, uint32_t caps)
{
	struct gp_msg_inner_adamw in = { .beta1 = 0.9f, .beta2 = 0.95f,
					 .eps = 1e-8f };
	struct gp_msg msg;

	welcome_msg(&msg, caps, 0);
	msg.u.welcome.inner_adamw = &in;
	msg.u.welcome.n_inner_adamw = 1;
	deliver(w, &msg);
}

/* A delta's result for minibatch id, of the worker's run `run`. */
static void delta_result(struct world *w, uint64_t id, uint64_t run)
{
	float grads[9] = { 0 };
	struct gp_worker_item item = { .minibatch = id };
	struct gp_worker_result res = {
		.gen = w->gen,
		.minibatch = id,
		.samples = 4,
		.grads = grads,
		.n_grads = 9,
		.delta = true,
		.run = run,
		.items = &item,
		.n_items = 1,
		.compute_us = 1000,
	};

	gp_machine_on_result(&w->m, &res);
}

static void test_overlap(void)
{
	static struct gp_machine_ops ops;
	const uint32_t caps = GP_CAP_F16 | GP_CAP_LOCAL_STEP |
			      GP_CAP_INNER_ADAMW | GP_CAP_OVERLAP;
	struct world *w = member("a:1");

	ops = world_ops;
	ops.worker_set_inner = w_set_inner;
	ops.worker_rebase_params = w_rebase_params;
	w->m.ops = &ops;
	establish(w);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_JOIN);
	ASSERT(last_sent(w)->caps & GP_CAP_OVERLAP);
	ASSERT(last_sent(w)->caps & GP_CAP_INNER_ADAMW);
	welcome_inner(w, caps);
	ASSERT_EQ(w->inner_sets, 1);
	ASSERT(w->inner_overlap);
	shards_read(w, 0);
	ASSERT_EQ(w->n_rebases, 1);
	ASSERT_UINT_EQ(w->rebase_refs[0], 0);
	ASSERT_EQ(w->params_set, 0);
	minibatch(w, 1, 4, 1);
	minibatch(w, 2, 4, 1);
	delta_result(w, 1, 5);
	delta_result(w, 2, 6);
	ASSERT_EQ(count_sent(w, GP_MSG_UPDATE), 2);
	shards_read(w, 1);
	shards_read(w, 2);
	shards_read(w, 3); /* not sent yet: its run is unknown */
	ASSERT_EQ(w->n_rebases, 4);
	ASSERT_UINT_EQ(w->rebase_refs[1], 5);
	ASSERT_UINT_EQ(w->rebase_refs[2], 6);
	ASSERT_UINT_EQ(w->rebase_refs[3], UINT64_MAX);
	ASSERT_EQ(w->closes, 0);
	/* Older than the agent remembers: unknown too. */
	for (uint64_t i = 3; i < 3 + GP_MACHINE_SENT_RUNS; i++) {
		minibatch(w, i, 4, 1);
		delta_result(w, i, 4 + i);
	}
	w->n_rebases = 0;
	shards_read(w, 2);
	shards_read(w, 3);
	ASSERT_UINT_EQ(w->rebase_refs[0], UINT64_MAX);
	ASSERT_UINT_EQ(w->rebase_refs[1], 7);
	gp_machine_finish(&w->m);
	free(w);

	/* Not granted: plain parameters, the worker told no overlap. */
	w = member("a:1");
	w->m.ops = &ops;
	establish(w);
	welcome_inner(w, caps & ~(uint32_t)GP_CAP_OVERLAP);
	ASSERT(!w->inner_overlap);
	shards_read(w, 0);
	ASSERT_EQ(w->n_rebases, 0);
	ASSERT_EQ(w->params_set, 1);
	gp_machine_finish(&w->m);
	free(w);
}

/* ---- pausing ---------------------------------------------------------- */

/* Pause keeps the connection: PAUSE (user) goes out, nothing is closed;
 * resume sends RESUME and asks for work again. Paused before the WELCOME,
 * the agent sends PAUSE instead of a work request (test_pause). */
static void test_pause_keeps_connection(void)
{
	struct world *w = member("a:1");
	struct gp_agent_status st;

	welcome(w);
	gp_machine_set_user_paused(&w->m, true);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_PAUSE);
	ASSERT_EQ(last_sent(w)->reason, GP_PAUSE_USER);
	ASSERT_EQ(w->closes, 0);
	ASSERT(w->m.connected);
	gp_machine_status(&w->m, &st);
	ASSERT_STR_EQ(st.state, "paused");
	ASSERT(strstr(st.reason, "by the user"));
	gp_machine_set_user_paused(&w->m, true); /* no second PAUSE */
	ASSERT_EQ(count_sent(w, GP_MSG_PAUSE), 1);
	gp_machine_set_user_paused(&w->m, false);
	ASSERT_EQ(w->sent[w->n_sent - 2].type, GP_MSG_RESUME);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_WORK_REQUEST);
	free(w);

	w = member("a:1");
	gp_machine_set_user_paused(&w->m, true);
	ASSERT_EQ(w->n_sent, 0);
	welcome(w);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_PAUSE);
	ASSERT_EQ(count_sent(w, GP_MSG_WORK_REQUEST), 0);
	free(w);
}

/* The upload cap (and every policy) pauses with its own reason and the
 * policy's text in the status; the policy allowing again resumes. */
/* A timed pause says until when; resume clears it. */
static void test_pause_until(void)
{
	struct world *w = member("a:1");
	struct gp_agent_status st;

	welcome(w);
	w->m.pause_until = 1795651200; /* 2026-11-26 */
	gp_machine_set_user_paused(&w->m, true);
	gp_machine_status(&w->m, &st);
	ASSERT_STR_EQ(st.state, "paused");
	ASSERT(strstr(st.reason, "until 2026-11-2"));
	gp_machine_set_user_paused(&w->m, false);
	ASSERT_EQ(w->m.pause_until, 0);
	free(w);
}

/* The coordinator's answer to the HEARTBEAT with this seq. */
static void heartbeat_answer(struct world *w, uint64_t seq)
{
	struct gp_msg msg;

	gp_msg_init(&msg, GP_MSG_HEARTBEAT);
	msg.u.heartbeat.seq = seq;
	msg.u.heartbeat.time_us = 1000;
	msg.u.heartbeat.echo_time_us = 500;
	deliver(w, &msg);
}

/* finish: PAUSE (no new work), then a HEARTBEAT whose answer says that
 * nothing the coordinator sent before it read the PAUSE is still on its
 * way; the minibatches in hand, and any that come before that answer,
 * are computed and answered, then the agent stops with 0; not connected,
 * at once. */
static void test_finish(void)
{
	struct world *w = member("a:1");
	struct gp_agent_status st;
	uint64_t seq;

	welcome(w);
	minibatch(w, 5, 4, 0);
	minibatch(w, 6, 4, 0);
	ASSERT_EQ(w->m.in_hand, 2);
	gp_machine_drain(&w->m);
	ASSERT_EQ(w->sent[w->n_sent - 2].type, GP_MSG_PAUSE);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_HEARTBEAT);
	seq = last_sent(w)->seq;
	ASSERT(!w->stopped);
	gp_machine_status(&w->m, &st);
	ASSERT_STR_EQ(st.state, "finishing");
	ASSERT(strstr(st.reason, "2 minibatch"));
	result(w, 5, w->gen, 0, 0);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_UPDATE);
	ASSERT(!w->stopped);
	/* One sent before the coordinator read the PAUSE. */
	minibatch(w, 7, 4, 0);
	result(w, 6, w->gen, 0, 0);
	ASSERT_EQ(w->sent[w->n_sent - 1].type, GP_MSG_UPDATE);
	heartbeat_answer(w, seq - 1); /* sent before the PAUSE */
	ASSERT(!w->m.finish_heard);
	heartbeat_answer(w, seq);
	ASSERT(!w->stopped);
	result(w, 7, w->gen, 0, 0);
	ASSERT_EQ(w->sent[w->n_sent - 1].type, GP_MSG_UPDATE);
	ASSERT_EQ(w->m.minibatches, 3);
	ASSERT(w->stopped);
	ASSERT_EQ(w->m.result, 0);
	ASSERT_EQ(count_sent(w, GP_MSG_WORK_REQUEST), 1); /* the first only */
	free(w);

	/* Nothing in hand: it stops at the answer, and the code before
	 * stopped at once, while work could still be on its way (CI,
	 * 2026-12-07: 12 minibatches put back at the close). */
	w = member("a:1");
	welcome(w);
	gp_machine_drain(&w->m);
	ASSERT(!w->stopped);
	heartbeat_answer(w, last_sent(w)->seq);
	ASSERT(w->stopped);
	free(w);

	/* No answer (a coordinator over its rate limit drops HEARTBEATs):
	 * the next call sends another, and an answer to either will do. */
	w = member("a:1");
	welcome(w);
	gp_machine_drain(&w->m);
	seq = last_sent(w)->seq;
	gp_machine_drain(&w->m);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_HEARTBEAT);
	ASSERT_EQ(last_sent(w)->seq, seq + 1);
	ASSERT_EQ(count_sent(w, GP_MSG_PAUSE), 1);
	ASSERT(!w->stopped);
	heartbeat_answer(w, seq + 1);
	ASSERT(w->stopped);
	free(w);

	/* The connection goes while finishing: its work is handed out
	 * again, nothing is left to answer. */
	w = member("a:1");
	welcome(w);
	minibatch(w, 5, 4, 0);
	gp_machine_drain(&w->m);
	ASSERT(!w->stopped);
	gp_machine_on_close(&w->m, GP_CLOSE_IO_ERROR, 0, "gone");
	ASSERT(w->stopped);
	ASSERT_EQ(w->connects, 1);
	free(w);
}

static void test_upload_cap_pause(void)
{
	struct world *w = member("a:1");
	struct gp_agent_status st;

	welcome(w);
	gp_machine_on_policy(&w->m, GP_POLICY_UPLOAD_CAP,
			     "max_upload_mib_per_day reached");
	ASSERT_EQ(last_sent(w)->type, GP_MSG_PAUSE);
	ASSERT_EQ(last_sent(w)->reason, GP_PAUSE_LIMIT);
	ASSERT_EQ(w->closes, 0);
	gp_machine_status(&w->m, &st);
	ASSERT_STR_EQ(st.state, "paused");
	ASSERT_STR_EQ(st.reason, "max_upload_mib_per_day reached");
	gp_machine_on_policy(&w->m, GP_POLICY_ON_BATTERY, "on battery");
	ASSERT_EQ(count_sent(w, GP_MSG_PAUSE), 1); /* still paused */
	gp_machine_on_policy(&w->m, GP_POLICY_RUN, "");
	ASSERT_EQ(w->sent[w->n_sent - 2].type, GP_MSG_RESUME);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_WORK_REQUEST);
	gp_machine_on_policy(&w->m, GP_POLICY_ON_BATTERY, "on battery");
	ASSERT_EQ(last_sent(w)->reason, GP_PAUSE_ON_BATTERY);
	/* A new connection while paused starts paused. */
	gp_machine_on_close(&w->m, GP_CLOSE_PEER_CLOSED, 0, "gone");
	gp_machine_connect(&w->m);
	welcome(w);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_PAUSE);
	ASSERT_EQ(last_sent(w)->reason, GP_PAUSE_ON_BATTERY);
	free(w);
}

/* ---- the end of a session --------------------------------------------- */

static void test_rejected_and_revoked(void)
{
	struct world *w = member("a:1");
	struct gp_msg msg;

	/* A busy coordinator is tried again; a revoked agent stops. */
	gp_machine_on_close(&w->m, GP_CLOSE_REJECTED, GP_REJECT_BUSY, "busy");
	ASSERT(!w->stopped);
	ASSERT_GT(w->retry_ms, 0);
	gp_machine_connect(&w->m);
	gp_machine_on_close(&w->m, GP_CLOSE_REJECTED, GP_REJECT_AGENT_REVOKED,
			    "revoked");
	ASSERT(w->stopped);
	ASSERT_EQ(w->m.result, -EKEYREJECTED);
	free(w);

	w = member("a:1");
	establish(w);
	gp_msg_init(&msg, GP_MSG_REJECT);
	msg.u.reject.code = GP_REJECT_UNKNOWN_AGENT;
	deliver(w, &msg);
	ASSERT(w->stopped);
	ASSERT_EQ(w->m.result, -EKEYREJECTED);
	free(w);

	w = member("a:1");
	welcome(w);
	bye(w, GP_BYE_REVOKED);
	ASSERT(w->stopped);
	ASSERT_EQ(w->m.result, -EKEYREJECTED);
	ASSERT_EQ(w->close_code, GP_BYE_SHUTDOWN);
	free(w);
}

/* The job done: the agent waits for the next one, or (exit_when_done)
 * stops with success. */
static void test_job_done(void)
{
	struct world *w = member("a:1");
	struct gp_agent_status st;

	welcome(w);
	bye(w, GP_BYE_JOB_DONE);
	ASSERT(!w->stopped);
	gp_machine_status(&w->m, &st);
	ASSERT_STR_EQ(st.state, "waiting");
	ASSERT(strstr(st.reason, "job is done"));
	/* The coordinator exits: the failing reconnects still say why. */
	gp_machine_on_close(&w->m, GP_CLOSE_PEER_CLOSED, 0, "bye");
	gp_machine_on_close(&w->m, GP_CLOSE_CONNECT_FAILED, 0, "refused");
	gp_machine_status(&w->m, &st);
	ASSERT_STR_EQ(st.state, "waiting");
	ASSERT(strstr(st.reason, "job is done"));
	ASSERT(strstr(st.reason, "next one"));
	ASSERT(!strstr(st.reason, "failed attempts"));
	free(w);

	w = member("a:1");
	w->cfg.exit_when_done = true;
	welcome(w);
	bye(w, GP_BYE_JOB_DONE);
	ASSERT(w->stopped);
	ASSERT_EQ(w->m.result, 0);
	free(w);
}

/* Jobs that come and go (GP_CAP_JOBS): after BYE 2 from a coordinator
 * that keeps its agents, the agent reconnects at once (no backoff); a
 * WELCOME of job 0 leaves it connected and idle, asking for no work; BYE 7
 * (a job started) reconnects it at once again, and the job's WELCOME puts
 * it to work. */
static void test_jobs_come_and_go(void)
{
	struct world *w = member("a:1");
	struct gp_agent_status st;
	struct gp_msg msg;
	unsigned connects;

	establish(w);
	welcome_with(w, GP_CAP_F16 | GP_CAP_LOCAL_STEP | GP_CAP_JOBS, 0);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_WORK_REQUEST);
	bye(w, GP_BYE_JOB_DONE);
	ASSERT(!w->stopped);
	connects = w->connects;
	gp_machine_on_close(&w->m, GP_CLOSE_PEER_CLOSED, GP_BYE_JOB_DONE, "bye");
	ASSERT_EQ(w->connects, connects + 1); /* at once, no retry timer */
	ASSERT_EQ(w->m.backoff_ms, 0);

	establish(w);
	gp_msg_init(&msg, GP_MSG_WELCOME);
	msg.u.welcome.agent_id = 7;
	msg.u.welcome.job_id = 0;
	msg.u.welcome.caps = GP_CAP_JOBS;
	deliver(w, &msg);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_JOIN); /* no work asked for */
	gp_machine_status(&w->m, &st);
	ASSERT_STR_EQ(st.state, "idle");
	ASSERT(strstr(st.reason, "the pool has no job"));

	bye(w, GP_BYE_JOB_CHANGED);
	connects = w->connects;
	gp_machine_on_close(&w->m, GP_CLOSE_PEER_CLOSED, GP_BYE_JOB_CHANGED,
			    "bye");
	ASSERT_EQ(w->connects, connects + 1);
	establish(w);
	welcome_with(w, GP_CAP_F16 | GP_CAP_LOCAL_STEP | GP_CAP_JOBS, 0);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_WORK_REQUEST);
	gp_machine_status(&w->m, &st);
	ASSERT_STR_EQ(st.state, "connected");
	free(w);
}

/* ---- memberships and beacons ------------------------------------------ */

/* The first membership not left is the pool; switching pools says bye to
 * the old one and connects to the new at once when the old channel has
 * closed; leaving the last pool says bye and waits, with no retry. */
static void test_membership(void)
{
	struct world *w = member("a:1");
	struct gp_stats_membership q = membership("q", "b:2");
	struct gp_agent_status st;

	welcome(w);
	gp_machine_on_members(&w->m, true, &q);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_BYE);
	ASSERT_EQ(last_sent(w)->reason, GP_BYE_NORMAL);
	ASSERT_EQ(w->closes, 1);
	ASSERT_EQ(w->connects, 1); /* not while the old one closes */
	gp_machine_on_close(&w->m, GP_CLOSE_LOCAL, 0, "bye");
	ASSERT_EQ(w->connects, 2);
	ASSERT_STR_EQ(w->endpoints[1], "b:2");
	ASSERT_STR_EQ(w->m.pool.pool, "q");
	welcome(w);
	gp_machine_on_members(&w->m, false, NULL);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_BYE);
	ASSERT(!w->m.have_pool);
	w->retry_ms = 0;
	gp_machine_on_close(&w->m, GP_CLOSE_LOCAL, 0, "bye");
	ASSERT_EQ(w->retry_ms, 0);
	ASSERT_EQ(w->connects, 2);
	gp_machine_status(&w->m, &st);
	ASSERT_STR_EQ(st.state, "waiting");
	ASSERT(strstr(st.reason, "not a member"));
	ASSERT(!w->stopped);
	free(w);
}

/* A beacon with the pool's key gives an address that is tried at once
 * (at most one beacon per gap); once it worked it goes first in the
 * membership. Beacons with another key are noise. */
static void test_beacon(void)
{
	struct world *w = member("a:1");
	uint8_t other[GP_STATS_KEY_SIZE] = { 9 };

	w->cfg.beacon_port = 7100;
	fail_connect(w, GP_CLOSE_CONNECT_FAILED);
	gp_machine_connect(&w->m);
	fail_connect(w, GP_CLOSE_CONNECT_FAILED);
	ASSERT(w->beacon_on);
	gp_machine_on_beacon(&w->m, other, "10.0.0.9:7000", 1000000);
	ASSERT_EQ(w->connects, 2);
	gp_machine_on_beacon(&w->m, pool_key, "10.0.0.5:7000", 1000000);
	ASSERT_EQ(w->connects, 3);
	ASSERT_STR_EQ(w->endpoints[2], "10.0.0.5:7000");
	ASSERT_EQ(w->retry_ms, 0); /* the pending retry was cancelled */
	/* Too soon for another. */
	gp_machine_on_beacon(&w->m, pool_key, "10.0.0.6:7000", 1500000);
	ASSERT_STR_EQ(w->m.beacon_ep, "10.0.0.5:7000");
	welcome(w);
	ASSERT(!w->beacon_on);
	ASSERT_EQ(w->remembers, 1);
	ASSERT_STR_EQ(w->remembered.endpoints, "10.0.0.5:7000,a:1");
	free(w);
}

/* ---- join and leave --------------------------------------------------- */

static void test_join(void)
{
	struct gp_token token = { .n_endpoints = 2 };
	struct world *w;

	snprintf(token.endpoints[0], sizeof(token.endpoints[0]), "a:1");
	snprintf(token.endpoints[1], sizeof(token.endpoints[1]), "b:2");
	/* No endpoint answers: gives up after GP_MACHINE_JOIN_ATTEMPTS. */
	w = world_new(GP_MACHINE_JOIN, &token);
	gp_machine_start(&w->m);
	for (unsigned i = 1; !w->stopped; i++) {
		ASSERT_LE(i, GP_MACHINE_JOIN_ATTEMPTS);
		ASSERT_STR_EQ(w->endpoints[(i - 1) % 32], (i % 2) ? "a:1" : "b:2");
		fail_connect(w, GP_CLOSE_CONNECT_FAILED);
		gp_machine_connect(&w->m);
	}
	ASSERT_EQ(w->m.result, -ETIMEDOUT);
	ASSERT_EQ(w->statuses, 0); /* only a running agent publishes */
	free(w);

	/* The wrong coordinator key. */
	w = world_new(GP_MACHINE_JOIN, &token);
	gp_machine_start(&w->m);
	fail_connect(w, GP_CLOSE_KEY_MISMATCH);
	ASSERT(w->stopped);
	ASSERT_EQ(w->m.result, -EKEYREVOKED);
	free(w);

	/* WELCOME: joined; JOIN carried the token id. */
	w = world_new(GP_MACHINE_JOIN, &token);
	gp_machine_start(&w->m);
	establish(w);
	ASSERT_EQ(last_sent(w)->token_id_len, GP_TOKEN_ID_SIZE);
	welcome_with(w, 0, 0);
	ASSERT(w->stopped);
	ASSERT(w->m.joined);
	ASSERT_EQ(w->m.agent_id, 7);
	ASSERT_EQ(w->m.result, 0);
	ASSERT_EQ(w->worker_starts, 0);
	free(w);
}

static void test_leave(void)
{
	struct world *w = world_new(GP_MACHINE_LEAVE, NULL);

	w->cfg.pool = membership("p", "a:1");
	gp_machine_start(&w->m);
	ASSERT_EQ(w->connects, 1);
	establish(w);
	welcome_with(w, 0, 0);
	ASSERT(w->stopped);
	ASSERT(w->m.joined);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_BYE);
	ASSERT_EQ(w->closes, 1);
	free(w);
}

/* STATS after WELCOME becomes the published status (job, progress, ETA,
 * accuracy, credit); before WELCOME it is ignored. The public name goes
 * with JOIN, and a change goes at once as PROFILE to a coordinator that
 * takes it (GP_CAP_PROGRESS), later to one that does not. */
static void test_progress(void)
{
	struct world *w = world_new(GP_MACHINE_RUN, NULL);
	struct gp_stats_membership mem = membership("p", "a:1");
	struct gp_agent_status st = { 0 };
	struct gp_msg msg;

	snprintf(w->cfg.public_name, sizeof(w->cfg.public_name), "Ada");
	gp_machine_init(&w->m, &w->cfg, NULL, GP_MACHINE_RUN, NULL, 0,
			&world_ops, w);
	gp_machine_start(&w->m);
	gp_machine_on_members(&w->m, true, &mem);
	establish(w);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_JOIN);
	ASSERT_STR_EQ(last_sent(w)->public_name, "Ada");

	gp_msg_init(&msg, GP_MSG_STATS);
	snprintf(msg.u.stats.job_name, sizeof(msg.u.stats.job_name), "cnn");
	msg.u.stats.job_id = 3;
	msg.u.stats.epoch = 1;
	msg.u.stats.epochs = 12;
	msg.u.stats.progress = 0.25f;
	msg.u.stats.eta_s = 90;
	msg.u.stats.eval_epochs = 1;
	msg.u.stats.accuracy = 0.875f;
	msg.u.stats.test_loss = 0.375f;
	msg.u.stats.credit_mflop = 12345678;
	msg.u.stats.updates_accepted = 40;
	msg.u.stats.samples_credited = 2560;
	msg.u.stats.agents_live = 2;
	deliver(w, &msg);               /* before WELCOME: ignored */
	gp_machine_status(&w->m, &st);
	ASSERT(!st.have_job);
	welcome_with(w, GP_CAP_F16 | GP_CAP_PROGRESS, 0);
	deliver(w, &msg);
	gp_machine_status(&w->m, &st);
	ASSERT(st.have_job);
	ASSERT_STR_EQ(st.job, "cnn");
	ASSERT_STR_EQ(st.job_state, "training");
	ASSERT_EQ(st.epoch, 2);          /* shown from 1 */
	ASSERT_EQ(st.epochs, 12);
	ASSERT_NEAR(st.progress, 0.25, 1e-9);
	ASSERT_EQ(st.eta_s, 90);
	ASSERT_NEAR(st.accuracy, 0.875, 1e-9);
	ASSERT_NEAR(st.credit_gflop, 12345.678, 1e-9);
	ASSERT_EQ(st.credit_updates, 40);
	ASSERT_STR_EQ(st.public_name, "Ada");
	/* An unknown ETA and a done job. */
	msg.u.stats.eta_s = GP_MSG_ETA_UNKNOWN;
	msg.u.stats.state = GP_JOB_STATE_DONE;
	deliver(w, &msg);
	gp_machine_status(&w->m, &st);
	ASSERT_EQ(st.eta_s, -1);
	ASSERT_STR_EQ(st.job_state, "done");
	/* The status travels as text and back. */
	{
		char buf[GP_AGENT_STATUS_TEXT_MAX * 8];
		struct gp_agent_status back;

		snprintf(st.state, sizeof(st.state), "connected");
		ASSERT_GT(gp_agent_status_format(&st, buf, sizeof(buf)), 0);
		ASSERT_OK(gp_agent_status_parse(buf, &back));
		ASSERT(back.have_job);
		ASSERT_STR_EQ(back.job, "cnn");
		ASSERT_EQ(back.eta_s, -1);
		ASSERT_NEAR(back.credit_gflop, 12345.678, 1e-3);
		ASSERT_NEAR(back.accuracy, 0.875, 1e-6);
		ASSERT_STR_EQ(back.public_name, "Ada");
	}

	/* A name change goes at once as PROFILE; withdrawn: empty. */
	gp_machine_set_public_name(&w->m, "Ada L.");
	ASSERT_EQ(last_sent(w)->type, GP_MSG_PROFILE);
	ASSERT_STR_EQ(last_sent(w)->public_name, "Ada L.");
	gp_machine_set_public_name(&w->m, "");
	ASSERT_EQ(last_sent(w)->type, GP_MSG_PROFILE);
	ASSERT_STR_EQ(last_sent(w)->public_name, "");
	/* A coordinator without GP_CAP_PROGRESS gets it with the next
	 * JOIN only. */
	welcome_with(w, GP_CAP_F16, 0);
	{
		size_t n = w->n_sent;

		gp_machine_set_public_name(&w->m, "Bo");
		ASSERT_EQ(w->n_sent, n);
	}
	fail_connect(w, GP_CLOSE_PEER_CLOSED);
	gp_machine_connect(&w->m);
	establish(w);
	ASSERT_EQ(last_sent(w)->type, GP_MSG_JOIN);
	ASSERT_STR_EQ(last_sent(w)->public_name, "Bo");
	gp_machine_finish(&w->m);
	free(w);
}

static void test_split_endpoints(void)
{
	char eps[3][GP_MACHINE_ENDPOINT_MAX];

	ASSERT_EQ(gp_machine_split_endpoints("", eps, 3), 0);
	ASSERT_EQ(gp_machine_split_endpoints("a:1,,b:2", eps, 3), 2);
	ASSERT_STR_EQ(eps[1], "b:2");
	ASSERT_EQ(gp_machine_split_endpoints("a:1,b:2,c:3,d:4", eps, 3), 3);
	ASSERT_STR_EQ(eps[2], "c:3");
}

int main(void)
{
	srand(1);
	test_backoff_jitter();
	test_unresolvable();
	test_reconnect();
	test_welcome_model_text();
	test_heartbeat_from_welcome();
	test_minibatch_and_update();
	test_group();
	test_q8_update();
	test_q4_update();
	test_group_cut_short();
	test_held();
	test_stale_results_dropped();
	test_compute_error_drops_connection();
	test_bad_minibatch();
	test_local_data();
	test_verify_task();
	test_data_shards();
	test_param_shards();
	test_param_delta();
	test_param_delta_q4();
	test_overlap();
	test_pause_keeps_connection();
	test_pause_until();
	test_finish();
	test_upload_cap_pause();
	test_rejected_and_revoked();
	test_job_done();
	test_jobs_come_and_go();
	test_membership();
	test_beacon();
	test_join();
	test_leave();
	test_progress();
	test_split_endpoints();
	return 0;
}
