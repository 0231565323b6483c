/* hostile-agent: a pool member that misbehaves on purpose, for the fault
 * suite, tools/bench-flood and tools/bench-attack.
 *
 *   hostile-agent MODE TOKEN [--count N] [--timeout-ms MS] [--norm-limit X]
 *                 [--z X] [--seed N]
 *                 [--interval-ms MS] [--duration-ms MS] [--burst N]
 *                 [--data DIR]
 *
 * It joins with an invite token like gradpool-agent (a fresh identity,
 * Noise IKpsk2, JOIN), asks for work, and answers every minibatch it gets
 * the way MODE says:
 *
 *   nan, inf       the right shapes, one NaN / +Inf element
 *   shape          the first tensor one element short
 *   unassigned     an update for a minibatch of this epoch it was not given
 *   unknown        an update for a minibatch of an epoch that does not exist
 *   duplicate      a valid (zero) update, then the same update again
 *   clock-ahead    the right minibatch, a clock 3 ahead of the one given
 *   clock-behind   valid updates at clock 0, then clock - 1
 *   norm           every element 1e6 (a finite, absurd gradient norm)
 *   flood          heartbeats as fast as the socket takes them
 *   noread         asks for work and never reads again
 *   group-twin     a group's update (GP_UPDATE_SUMS) listing one
 *                  minibatch twice
 *   parts          the first of two parts of a split update (parts = 2):
 *                  the coordinator does not reassemble them, so each is
 *                  refused (shape) and its minibatch must go back to the
 *                  queue at once
 *   burst          valid (zero) updates, the first right after --burst
 *                  heartbeats sent at once: more than the rate limit lets
 *                  through, yet the updates must be handled
 *   probe          does not JOIN (so it never counts toward SSP): sends an
 *                  application HEARTBEAT every --interval-ms for
 *                  --duration-ms and prints the round-trip percentiles
 *
 * Attacks: plausible updates that pass every check of their form. The
 * member asks for no capability, computes each minibatch's real gradient
 * g on the parameters it was sent (hostile-train.c, the CPU backend) and
 * sends, until the job is done:
 *
 *   honest         g itself (the control)
 *   sign-flip      -g
 *   scaled         g scaled to 0.95 x --norm-limit (default 1000, the
 *                  default max_grad_norm): just under the limit
 *   little         "a little is enough" (Baruch et al. 2019): mu - z sigma
 *                  per element, mu and sigma the running mean and standard
 *                  deviation of its own gradients, z = --z (default 1)
 *   noise          Gaussian noise of g's norm
 *   stale          the first gradient it computed, for every minibatch
 *   label-flip     the gradient on labels 9 - label
 *   zeros          nothing: a free-rider
 *   collude        g - |g| u, u a unit direction drawn from --seed: every
 *                  member run with the same seed pushes the same way
 *
 * A checker that lies (delegated verification, proto/msg.h
 * GP_CAP_VERIFY):
 *
 *   verify-lie     trains as honest, but asks for GP_CAP_VERIFY and
 *                  GP_CAP_LOCAL_DATA (it needs --data DIR, the
 *                  Fashion-MNIST directory gradpool-agent would be given
 *                  with --data-dir, whose gp_data_fingerprint() goes in
 *                  JOIN; minibatches then come as indices into it) and
 *                  answers every VERIFY_TASK with status COMPUTED and
 *                  plausible-looking but wrong values: the task's shapes
 *                  (the gradient, or the sums A and B), f32, every
 *                  element 0.01
 *
 * It prints one "result:" line (verifies= counts the VERIFY_RESULTs
 * sent) and exits 0 when the coordinator closed the
 * connection (or, for duplicate, norm, burst, probe, after --count updates
 * / --duration-ms), 1 on timeout, 2 on a usage error or when no channel
 * was established. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "channel.h"
#include "data.h"
#include "hostile-train.h"
#include "log.h"
#include "msg.h"
#include "noise.h"
#include "token.h"
#include "util.h"

#define MAX_TENSORS 32
#define MAX_SEEN 4096
#define MAX_SAMPLES 100000

enum mode {
	M_NAN, M_INF, M_SHAPE, M_UNASSIGNED, M_UNKNOWN, M_DUPLICATE,
	M_CLOCK_AHEAD, M_CLOCK_BEHIND, M_NORM, M_FLOOD, M_NOREAD, M_PROBE,
	M_GROUP_TWIN, M_PARTS, M_BURST,
	/* Attacks from the real gradient (attack()). */
	M_HONEST, M_SIGN_FLIP, M_SCALED, M_LITTLE, M_NOISE, M_STALE,
	M_LABEL_FLIP, M_ZEROS, M_COLLUDE,
	/* Trains as honest, lies as a checker (send_lie()). */
	M_VERIFY_LIE,
};

static const char *const mode_names[] = {
	"nan", "inf", "shape", "unassigned", "unknown", "duplicate",
	"clock-ahead", "clock-behind", "norm", "flood", "noread", "probe",
	"group-twin", "parts", "burst",
	"honest", "sign-flip", "scaled", "little", "noise", "stale",
	"label-flip", "zeros", "collude",
	"verify-lie",
};

static bool attacking(int mode)
{
	return mode >= M_HONEST;
}

struct hostile {
	enum mode mode;
	uv_loop_t loop;
	uv_timer_t timer, deadline;
	uv_idle_t idle;
	struct gp_channel *ch;
	struct gp_token token;
	struct gp_noise_keypair *kp;
	uint32_t n_tensors;
	uint32_t caps;         /* WELCOME's */
	uint32_t rows[MAX_TENSORS], cols[MAX_TENSORS];
	float *zeros, *bad;
	size_t max_count;
	uint32_t batch;
	uint64_t seen[MAX_SEEN];
	size_t n_seen;
	unsigned long count, sent, sent_bytes, updates, burst;
	unsigned long interval_ms, duration_ms, timeout_ms;
	uint64_t start_us, seq;
	uint64_t *rtt;
	size_t n_rtt;
	bool closed_by_peer, finished, timed_out, established;
	char close_text[300];
	/* Attacks. */
	struct htrain *train;
	float *g, *out, *mean, *var;
	bool have_first;
	double norm_limit, z;
	uint64_t seed, rng;
	/* verify-lie: the training set (--data), a minibatch gathered from
	 * it, the lie's values. */
	struct gp_dataset *data;
	uint8_t *px, *lb;
	float *lie;
	size_t lie_n;
	unsigned long verifies;
};

static int send_msg(struct hostile *h, struct gp_msg *m)
{
	uint8_t *buf = NULL;
	size_t len;
	int r;

	if (!h->ch || !gp_channel_is_established(h->ch))
		return -ENOTCONN;
	r = gp_msg_encode_alloc(m, &buf, &len);
	if (r < 0)
		return r;
	r = gp_channel_send(h->ch, buf, len);
	free(buf);
	if (r == 0)
		h->sent_bytes += len;
	return r;
}

static void finish(struct hostile *h)
{
	if (h->finished)
		return;
	h->finished = true;
	uv_timer_stop(&h->timer);
	uv_timer_stop(&h->deadline);
	uv_idle_stop(&h->idle);
	if (h->ch)
		gp_channel_close(h->ch, GP_BYE_SHUTDOWN, "hostile-agent done");
}

/* Makes sure the value buffers hold every tensor's elements. */
static int ensure_buffers(struct hostile *h)
{
	size_t need = 0;

	for (uint32_t i = 0; i < h->n_tensors; i++)
		if ((size_t)h->rows[i] * h->cols[i] > need)
			need = (size_t)h->rows[i] * h->cols[i];
	if (need <= h->max_count)
		return 0;
	free(h->zeros);
	free(h->bad);
	h->zeros = calloc(need, sizeof(float));
	h->bad = malloc(need * sizeof(float));
	if (!h->zeros || !h->bad)
		return -ENOMEM;
	h->max_count = need;
	for (size_t i = 0; i < need; i++)
		h->bad[i] = h->mode == M_NORM ? 1e6f : 0.0f;
	if (h->mode == M_NAN)
		h->bad[need / 2] = NAN;
	if (h->mode == M_INF)
		h->bad[need / 2] = INFINITY;
	return 0;
}

static void note_shards(struct hostile *h, const struct gp_msg_param_shards *ps)
{
	uint32_t limit = MAX_TENSORS;

	/* With GP_CAP_MOMENTUM, tensor n + i is tensor i's momentum; the
	 * first pull sends every shard, so its blocks number 2n. */
	if (h->caps & GP_CAP_MOMENTUM) {
		uint32_t top = 0;

		for (size_t i = 0; i < ps->n_blocks; i++)
			if (ps->blocks[i].tensor + 1 > top)
				top = ps->blocks[i].tensor + 1;
		limit = h->n_tensors ? h->n_tensors : top / 2;
	}
	for (size_t i = 0; i < ps->n_blocks; i++) {
		const struct gp_msg_block *b = &ps->blocks[i];
		uint32_t rows = b->rows ? b->rows : 1;

		if (b->tensor >= MAX_TENSORS || b->tensor >= limit ||
		    b->count % rows)
			continue;
		if (b->tensor >= h->n_tensors)
			h->n_tensors = b->tensor + 1;
		h->cols[b->tensor] = b->count / rows;
		if (b->row_start + rows > h->rows[b->tensor])
			h->rows[b->tensor] = b->row_start + rows;
	}
	ensure_buffers(h);
}

static bool seen(const struct hostile *h, uint64_t id)
{
	for (size_t i = 0; i < h->n_seen; i++)
		if (h->seen[i] == id)
			return true;
	return false;
}

/* One update for (epoch, minibatch, clock), every tensor whole; the values
 * are bad (h->bad) or zero, and the first tensor is one short for shape. */
static int send_update(struct hostile *h, uint32_t epoch, uint64_t minibatch,
		       uint64_t clock, uint32_t samples, bool bad)
{
	struct gp_msg_block blocks[MAX_TENSORS];
	struct gp_msg m;

	gp_msg_init(&m, GP_MSG_UPDATE);
	m.u.update.epoch = epoch;
	m.u.update.minibatch = minibatch;
	m.u.update.clock = clock;
	m.u.update.samples = samples;
	m.u.update.loss = 2.3f;
	m.u.update.grad_norm = 0;
	m.u.update.compute_us = 1000;
	for (uint32_t i = 0; i < h->n_tensors; i++) {
		uint32_t count = h->rows[i] * h->cols[i];

		if (bad && h->mode == M_SHAPE && i == 0)
			count--;
		blocks[i] = (struct gp_msg_block){
			.tensor = i,
			.row_start = 0,
			.rows = h->rows[i],
			.count = count,
			.dtype = GP_DTYPE_F32,
			.values = bad ? h->bad : h->zeros,
		};
	}
	m.u.update.blocks = blocks;
	m.u.update.n_blocks = h->n_tensors;
	if (bad && h->mode == M_PARTS) {
		/* The first part of two: the first half of the tensors. */
		m.u.update.part = 0;
		m.u.update.parts = 2;
		m.u.update.n_blocks = (h->n_tensors + 1) / 2;
	}
	h->sent++;
	h->updates++;
	return send_msg(h, &m);
}

static void send_heartbeat(struct hostile *h);

/* A group's update (GP_UPDATE_SUMS, zero sums) that lists minibatch twice:
 * applied, it would count one minibatch's work twice. */
static int send_group_twin(struct hostile *h, uint32_t epoch,
			   uint64_t minibatch, uint64_t clock)
{
	struct gp_msg_block blocks[2 * MAX_TENSORS];
	uint8_t items[2 * GP_MSG_ITEM_SIZE];
	struct gp_msg m;

	gp_msg_init(&m, GP_MSG_UPDATE);
	m.u.update.epoch = epoch;
	m.u.update.minibatch = minibatch;
	m.u.update.clock = clock;
	m.u.update.compute_us = 1000;
	for (uint32_t i = 0; i < 2 * h->n_tensors; i++) {
		uint32_t t = i % h->n_tensors;

		blocks[i] = (struct gp_msg_block){
			.tensor = t,
			.rows = h->rows[t],
			.count = h->rows[t] * h->cols[t],
			.dtype = GP_DTYPE_F32,
			.values = h->zeros,
		};
	}
	gp_msg_update_item_put(items, 0, epoch, minibatch, 2.3f);
	gp_msg_update_item_put(items, 1, epoch, minibatch, 2.3f);
	m.u.update.blocks = blocks;
	m.u.update.n_blocks = 2 * h->n_tensors;
	m.u.update.form = GP_UPDATE_SUMS;
	m.u.update.items = items;
	m.u.update.items_len = sizeof(items);
	h->sent++;
	h->updates++;
	return send_msg(h, &m);
}

static double uniform(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return ((double)(*s >> 11) + 0.5) / (double)(1ull << 53);
}

static double gauss(uint64_t *s)
{
	return sqrt(-2 * log(uniform(s))) * cos(2 * M_PI * uniform(s));
}

static double norm_of(const float *v, size_t n)
{
	double sq = 0;

	for (size_t i = 0; i < n; i++)
		sq += (double)v[i] * v[i];
	return sqrt(sq);
}

/* Builds h->out from the minibatch's real gradient as the mode says. */
static int attack(struct hostile *h, const struct gp_msg_minibatch *mb,
		  float *ret_loss)
{
	size_t n = htrain_size(h->train);
	double gn, f;
	int r = 0;

	*ret_loss = 2.3f;
	if (h->mode == M_ZEROS) {
		memset(h->out, 0, n * sizeof(float));
		return 0;
	}
	if (h->mode != M_STALE || !h->have_first)
		r = htrain_grad(h->train, mb, h->mode == M_LABEL_FLIP, h->g,
				ret_loss);
	if (r < 0)
		return r;
	gn = norm_of(h->g, n);
	switch (h->mode) {
	case M_SIGN_FLIP:
		for (size_t i = 0; i < n; i++)
			h->out[i] = -h->g[i];
		break;
	case M_SCALED:
		f = gn > 0 ? 0.95 * h->norm_limit / gn : 0;
		for (size_t i = 0; i < n; i++)
			h->out[i] = (float)(f * h->g[i]);
		break;
	case M_LITTLE:
		for (size_t i = 0; i < n; i++) {
			double d = h->g[i] - h->mean[i];

			/* Running moments, as the attackers of the paper
			 * estimate the honest members' (here from its own
			 * honest gradients). */
			h->mean[i] += (float)(0.1 * d);
			h->var[i] = (float)(0.9 * (h->var[i] + 0.1 * d * d));
			h->out[i] = (float)(h->mean[i] -
					    h->z * sqrt(h->var[i]));
		}
		break;
	case M_NOISE:
		for (size_t i = 0; i < n; i++)
			h->out[i] = (float)gauss(&h->rng);
		f = norm_of(h->out, n);
		for (size_t i = 0; i < n; i++)
			h->out[i] = (float)(h->out[i] * gn / f);
		break;
	case M_STALE:
		if (!h->have_first)
			memcpy(h->out, h->g, n * sizeof(float));
		break;
	case M_COLLUDE: {
		uint64_t s = h->seed * 0x9e3779b97f4a7c15ull + 1;

		/* The same unit direction u in every colluder. */
		for (size_t i = 0; i < n; i++)
			h->out[i] = (float)gauss(&s);
		f = gn / norm_of(h->out, n);
		for (size_t i = 0; i < n; i++)
			h->out[i] = (float)(h->g[i] - f * h->out[i]);
		break;
	}
	default: /* honest, label-flip */
		memcpy(h->out, h->g, n * sizeof(float));
		break;
	}
	h->have_first = true;
	return 0;
}

/* One form-0 UPDATE carrying h->out. */
static int send_attack(struct hostile *h, const struct gp_msg_minibatch *mb)
{
	struct gp_msg_block blocks[MAX_TENSORS];
	struct gp_msg m;
	uint64_t t0 = gp_mono_us();
	size_t off = 0;
	float loss;
	int r = attack(h, mb, &loss);

	if (r < 0) {
		fprintf(stderr, "hostile-agent: cannot compute minibatch %" PRIu64
			": %s\n", mb->minibatch, strerror(-r));
		return r;
	}
	gp_msg_init(&m, GP_MSG_UPDATE);
	m.u.update.epoch = mb->epoch;
	m.u.update.minibatch = mb->minibatch;
	m.u.update.clock = mb->clock;
	m.u.update.samples = mb->samples;
	m.u.update.loss = loss;
	m.u.update.compute_us = gp_mono_us() - t0 + 1;
	for (size_t i = 0; i < htrain_tensors(h->train); i++) {
		uint32_t rows, cols;

		htrain_shape(h->train, i, &rows, &cols);
		blocks[i] = (struct gp_msg_block){
			.tensor = (uint32_t)i,
			.rows = rows,
			.count = rows * cols,
			.dtype = GP_DTYPE_F32,
			.values = h->out + off,
		};
		off += (size_t)rows * cols;
	}
	m.u.update.blocks = blocks;
	m.u.update.n_blocks = htrain_tensors(h->train);
	h->sent++;
	h->updates++;
	return send_msg(h, &m);
}

/* The attack modes' model, from WELCOME. */
static int start_attack(struct hostile *h, const struct gp_msg_welcome *w)
{
	size_t n;
	int r = htrain_create(w->model, w->batch_size, &h->train);

	if (r < 0 || htrain_tensors(h->train) > MAX_TENSORS) {
		fprintf(stderr, "hostile-agent: cannot build model '%s'\n",
			w->model);
		return r < 0 ? r : -EINVAL;
	}
	n = htrain_size(h->train);
	h->g = calloc(n, sizeof(float));
	h->out = calloc(n, sizeof(float));
	h->mean = calloc(n, sizeof(float));
	h->var = calloc(n, sizeof(float));
	h->rng = h->seed * 0xbf58476d1ce4e5b9ull + 7;
	if (h->data) {
		/* A batch of samples gathered from the local copy. */
		h->px = malloc((size_t)w->batch_size * h->data->features);
		h->lb = malloc(w->batch_size ? w->batch_size : 1);
		if (!h->px || !h->lb)
			return -ENOMEM;
	}
	return h->g && h->out && h->mean && h->var ? 0 : -ENOMEM;
}

/* A minibatch of indices into h->data (GP_CAP_LOCAL_DATA) as the pixels
 * and labels it names, into *full (pointing into h->px, h->lb). Returns
 * 0, or -EINVAL for an index beyond the data set. */
static int gather(struct hostile *h, const struct gp_msg_minibatch *mb,
		  struct gp_msg_minibatch *full)
{
	size_t f = h->data->features;

	if (mb->indices_len != (size_t)mb->samples * 4 ||
	    mb->samples > h->batch)
		return -EINVAL;
	for (uint32_t i = 0; i < mb->samples; i++) {
		uint32_t k = gp_msg_minibatch_index(mb, i);

		if (k >= h->data->count)
			return -EINVAL;
		memcpy(h->px + (size_t)i * f, h->data->images + (size_t)k * f,
		       f);
		h->lb[i] = h->data->labels[k];
	}
	*full = *mb;
	full->features = (uint32_t)f;
	full->pixels = h->px;
	full->pixels_len = (size_t)mb->samples * f;
	full->labels = h->lb;
	full->labels_len = mb->samples;
	return 0;
}

/* verify-lie: answers a recomputation with values that look like an
 * update but are not this one: every element 0.01, in the task's own
 * blocks' shapes (its parameters' for the gradient or the sum A, its
 * momentum's for the sum B, which VERIFY_RESULT numbers alike). */
static int send_lie(struct hostile *h, const struct gp_msg_verify_task *t)
{
	struct gp_msg_block *blocks = calloc(t->n_blocks, sizeof(*blocks));
	size_t most = 0;
	struct gp_msg m;
	int r;

	if (!blocks)
		return -ENOMEM;
	for (size_t i = 0; i < t->n_blocks; i++)
		if (t->blocks[i].count > most)
			most = t->blocks[i].count;
	if (most > h->lie_n) {
		free(h->lie);
		h->lie = malloc(most * sizeof(float));
		h->lie_n = h->lie ? most : 0;
		if (!h->lie) {
			free(blocks);
			return -ENOMEM;
		}
		for (size_t i = 0; i < most; i++)
			h->lie[i] = 0.01f;
	}
	for (size_t i = 0; i < t->n_blocks; i++)
		blocks[i] = (struct gp_msg_block){
			.tensor = t->blocks[i].tensor,
			.row_start = t->blocks[i].row_start,
			.rows = t->blocks[i].rows,
			.count = t->blocks[i].count,
			.dtype = GP_DTYPE_F32,
			.values = h->lie,
		};
	gp_msg_init(&m, GP_MSG_VERIFY_RESULT);
	m.u.verify_result.task = t->task;
	m.u.verify_result.status = GP_VERIFY_COMPUTED;
	m.u.verify_result.compute_us = 1000;
	m.u.verify_result.blocks = blocks;
	m.u.verify_result.n_blocks = t->n_blocks;
	r = send_msg(h, &m);
	free(blocks);
	if (r == 0) {
		h->sent++;
		h->verifies++;
	}
	return r;
}

static void on_minibatch(struct hostile *h, const struct gp_msg_minibatch *mb)
{
	uint64_t per = (60000 + h->batch - 1) / (h->batch ? h->batch : 1);
	uint64_t other;

	if (h->n_seen < MAX_SEEN)
		h->seen[h->n_seen++] = mb->minibatch;
	if (h->n_tensors == 0 || h->finished)
		return;
	if (attacking(h->mode)) {
		struct gp_msg_minibatch full;

		if (h->data && !mb->pixels_len) {
			if (gather(h, mb, &full) < 0) {
				fprintf(stderr, "hostile-agent: minibatch %"
					PRIu64 " does not fit the data set\n",
					mb->minibatch);
				finish(h);
				return;
			}
			mb = &full;
		}
		if (!h->train || send_attack(h, mb) < 0)
			finish(h);
		return;
	}
	switch (h->mode) {
	case M_NAN:
	case M_INF:
	case M_SHAPE:
	case M_NORM:
	case M_PARTS:
		send_update(h, mb->epoch, mb->minibatch, mb->clock, mb->samples,
			    true);
		break;
	case M_UNASSIGNED:
		/* These resolve nothing, so no more work comes: send a few. */
		other = (mb->minibatch + 50) % per;
		for (int i = 0; i < 4; i++, other = (other + 1) % per) {
			while (seen(h, other))
				other = (other + 1) % per;
			send_update(h, mb->epoch, other, mb->clock, mb->samples,
				    false);
		}
		break;
	case M_UNKNOWN:
		for (int i = 0; i < 4; i++)
			send_update(h, mb->epoch + 1000 + (uint32_t)i, mb->minibatch,
				    mb->clock, mb->samples, false);
		break;
	case M_DUPLICATE:
		send_update(h, mb->epoch, mb->minibatch, mb->clock, mb->samples,
			    false);
		send_update(h, mb->epoch, mb->minibatch, mb->clock, mb->samples,
			    false);
		break;
	case M_CLOCK_AHEAD:
		send_update(h, mb->epoch, mb->minibatch, mb->clock + 3,
			    mb->samples, false);
		break;
	case M_CLOCK_BEHIND:
		send_update(h, mb->epoch, mb->minibatch,
			    mb->clock ? mb->clock - 1 : 0, mb->samples, false);
		break;
	case M_GROUP_TWIN:
		send_group_twin(h, mb->epoch, mb->minibatch, mb->clock);
		break;
	case M_BURST:
		/* Heartbeats first, in one go: the update comes over the
		 * limit. Once only, so that the connection stays below the
		 * flood cut-off. */
		if (h->updates == 0)
			for (unsigned long i = 0; i < h->burst; i++)
				send_heartbeat(h);
		send_update(h, mb->epoch, mb->minibatch, mb->clock, mb->samples,
			    false);
		break;
	case M_NOREAD:
		/* Stop reading: the coordinator's queue towards us grows. */
		gp_channel_pause_reading(h->ch, true);
		break;
	default:
		break;
	}
	if ((h->mode == M_DUPLICATE || h->mode == M_NORM ||
	     h->mode == M_BURST) && h->count && h->updates >= h->count)
		finish(h);
}

static void send_heartbeat(struct hostile *h)
{
	struct gp_msg m;

	gp_msg_init(&m, GP_MSG_HEARTBEAT);
	m.u.heartbeat.seq = ++h->seq;
	m.u.heartbeat.time_us = gp_mono_us();
	if (send_msg(h, &m) == 0)
		h->sent++;
}

static void on_flood(uv_idle_t *idle)
{
	struct hostile *h = idle->data;

	/* A burst per loop turn, as long as the socket keeps up. */
	for (int i = 0; i < 64 && h->ch &&
			gp_channel_queued_bytes(h->ch) < (1u << 20); i++)
		send_heartbeat(h);
}

static void on_probe_timer(uv_timer_t *t)
{
	struct hostile *h = t->data;

	if (gp_mono_us() - h->start_us >= (uint64_t)h->duration_ms * 1000) {
		finish(h);
		return;
	}
	send_heartbeat(h);
}

static void on_deadline(uv_timer_t *t)
{
	struct hostile *h = t->data;

	h->timed_out = true;
	finish(h);
}

static void on_message(struct gp_channel *ch, uint8_t *data, size_t len)
{
	struct hostile *h = gp_channel_data(ch);
	struct gp_msg m;

	if (gp_msg_decode(data, len, &m) != 0)
		return;
	switch (m.type) {
	case GP_MSG_WELCOME: {
		struct gp_msg req;

		h->batch = m.u.welcome.batch_size;
		h->caps = m.u.welcome.caps;
		/* The coordinator's pace, as the agent keeps it: its idle
		 * timeout is set to match (tests run it at 5 s, which the
		 * default 5 s heartbeat only just met). */
		if (m.u.welcome.heartbeat_ms)
			gp_channel_set_heartbeat(ch, m.u.welcome.heartbeat_ms);
		if (attacking(h->mode) && start_attack(h, &m.u.welcome) < 0) {
			finish(h);
			break;
		}
		if (h->mode == M_FLOOD) {
			uv_idle_start(&h->idle, on_flood);
			break;
		}
		gp_msg_init(&req, GP_MSG_WORK_REQUEST);
		req.u.work_request.count = 1;
		send_msg(h, &req);
		break;
	}
	case GP_MSG_PARAM_SHARDS:
		note_shards(h, &m.u.param_shards);
		if (h->train && htrain_load(h->train, &m.u.param_shards) < 0)
			fprintf(stderr, "hostile-agent: a parameter block that "
				"does not fit\n");
		break;
	case GP_MSG_MINIBATCH:
		on_minibatch(h, &m.u.minibatch);
		break;
	case GP_MSG_VERIFY_TASK:
		if (h->mode == M_VERIFY_LIE && send_lie(h, &m.u.verify_task) < 0)
			fprintf(stderr, "hostile-agent: verification task %"
				PRIu64 " not answered\n", m.u.verify_task.task);
		break;
	case GP_MSG_HEARTBEAT:
		if (h->mode == M_PROBE && m.u.heartbeat.echo_time_us &&
		    h->n_rtt < MAX_SAMPLES)
			h->rtt[h->n_rtt++] = gp_mono_us() - m.u.heartbeat.echo_time_us;
		break;
	case GP_MSG_REJECT:
		snprintf(h->close_text, sizeof(h->close_text), "reject: %s",
			 m.u.reject.text);
		break;
	case GP_MSG_BYE:
		snprintf(h->close_text, sizeof(h->close_text), "bye: %s",
			 m.u.bye.text);
		break;
	default:
		break;
	}
	gp_msg_finish(&m);
}

static void on_established(struct gp_channel *ch, const uint8_t *remote,
			   const uint8_t *payload, size_t len)
{
	struct hostile *h = gp_channel_data(ch);
	struct gp_msg m;

	(void)remote;
	(void)payload;
	(void)len;
	h->established = true;
	if (h->mode == M_PROBE) {
		h->start_us = gp_mono_us();
		uv_timer_start(&h->timer, on_probe_timer, 0, h->interval_ms);
		return;
	}
	gp_msg_init(&m, GP_MSG_JOIN);
	snprintf(m.u.join.name, sizeof(m.u.join.name), "hostile-%s",
		 mode_names[h->mode]);
	snprintf(m.u.join.release, sizeof(m.u.join.release), "hostile");
	m.u.join.token_id = h->token.id;
	m.u.join.token_id_len = GP_TOKEN_ID_SIZE;
	/* Groups need the coordinator's momentum too where updates are
	 * checked (docs/protocol.md, GP_CAP_SUMS). */
	if (h->mode == M_GROUP_TWIN)
		m.u.join.caps = GP_CAP_LOCAL_STEP | GP_CAP_SUMS |
				GP_CAP_MOMENTUM;
	if (h->mode == M_VERIFY_LIE) {
		m.u.join.caps = GP_CAP_VERIFY | GP_CAP_LOCAL_DATA;
		m.u.join.data_fingerprint = gp_data_fingerprint(h->data);
	}
	send_msg(h, &m);
}

static void on_close(struct gp_channel *ch, enum gp_close_reason reason,
		     uint16_t code, const char *text)
{
	struct hostile *h = gp_channel_data(ch);

	h->ch = NULL;
	if (!h->finished) {
		h->closed_by_peer = reason != GP_CLOSE_LOCAL;
		if (!h->close_text[0])
			snprintf(h->close_text, sizeof(h->close_text), "%s (%u): %s",
				 gp_channel_close_reason_name(reason), code, text);
	}
	finish(h);
	uv_close((uv_handle_t *)&h->timer, NULL);
	uv_close((uv_handle_t *)&h->deadline, NULL);
	uv_close((uv_handle_t *)&h->idle, NULL);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *v, size_t n, double q)
{
	size_t i;

	if (!n)
		return 0;
	i = (size_t)ceil(q * (double)n) - 1;
	return v[i < n ? i : n - 1];
}

static int resolve(const char *hostport, struct sockaddr_storage *ss)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	size_t hl = colon ? (size_t)(colon - hostport) : 0;

	if (!colon || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, hostport, hl);
	host[hl] = '\0';
	return uv_ip4_addr(host, atoi(colon + 1), (struct sockaddr_in *)ss);
}

static void usage(void)
{
	fputs("usage: hostile-agent MODE TOKEN [--count N] [--timeout-ms MS] "
	      "[--interval-ms MS] [--duration-ms MS] [--burst N]\n"
	      "       [--norm-limit X] [--z X] [--seed N] [--data DIR]\n"
	      "modes:", stderr);
	for (size_t i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++)
		fprintf(stderr, " %s", mode_names[i]);
	fputc('\n', stderr);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "count", required_argument, NULL, 'c' },
		{ "timeout-ms", required_argument, NULL, 't' },
		{ "interval-ms", required_argument, NULL, 'i' },
		{ "duration-ms", required_argument, NULL, 'd' },
		{ "burst", required_argument, NULL, 'b' },
		{ "norm-limit", required_argument, NULL, 'n' },
		{ "z", required_argument, NULL, 'z' },
		{ "seed", required_argument, NULL, 's' },
		{ "data", required_argument, NULL, 'D' },
		{ 0 },
	};
	struct hostile *h = calloc(1, sizeof(*h));
	struct gp_channel_config cc;
	struct gp_channel_callbacks cb = {
		.on_established = on_established,
		.on_message = on_message,
		.on_close = on_close,
	};
	struct gp_channel_peer peer = { 0 };
	struct sockaddr_storage ss;
	uint8_t psk[GP_TOKEN_PSK_SIZE] = { 0 };
	enum gp_token_error terr;
	const char *data_dir = NULL;
	char err[GP_DATA_ERR_MAX];
	size_t i;
	int c, rc = 2;

	if (!h)
		return 2;
	gp_log_init("hostile-agent");
	h->timeout_ms = 60000;
	h->interval_ms = 20;
	h->duration_ms = 5000;
	h->norm_limit = 1000;
	h->z = 1;
	h->seed = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			h->count = strtoul(optarg, NULL, 10);
			break;
		case 't':
			h->timeout_ms = strtoul(optarg, NULL, 10);
			break;
		case 'i':
			h->interval_ms = strtoul(optarg, NULL, 10);
			break;
		case 'd':
			h->duration_ms = strtoul(optarg, NULL, 10);
			break;
		case 'b':
			h->burst = strtoul(optarg, NULL, 10);
			break;
		case 'n':
			h->norm_limit = strtod(optarg, NULL);
			break;
		case 'z':
			h->z = strtod(optarg, NULL);
			break;
		case 's':
			h->seed = strtoull(optarg, NULL, 10);
			break;
		case 'D':
			data_dir = optarg;
			break;
		default:
			usage();
			goto out;
		}
	}
	if (argc - optind != 2) {
		usage();
		goto out;
	}
	for (i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++)
		if (strcmp(argv[optind], mode_names[i]) == 0)
			break;
	if (i == sizeof(mode_names) / sizeof(mode_names[0])) {
		usage();
		goto out;
	}
	h->mode = (enum mode)i;
	if (h->mode == M_VERIFY_LIE) {
		if (!data_dir) {
			fprintf(stderr, "hostile-agent: verify-lie needs "
				"--data DIR\n");
			goto out;
		}
		if (gp_data_load_fashion_mnist(data_dir, true, &h->data, err,
					       sizeof(err)) < 0) {
			fprintf(stderr, "hostile-agent: %s\n", err);
			goto out;
		}
	}
	if (gp_token_parse(argv[optind + 1], &h->token, &terr) < 0) {
		fprintf(stderr, "hostile-agent: bad token: %s\n",
			gp_token_error_str(terr));
		goto out;
	}
	if (resolve(h->token.endpoints[0], &ss) < 0 ||
	    gp_noise_keypair_create(NULL, &h->kp) < 0)
		goto out;
	h->rtt = calloc(MAX_SAMPLES, sizeof(*h->rtt));
	if (!h->rtt)
		goto out;
	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&h->loop);
	uv_timer_init(&h->loop, &h->timer);
	uv_timer_init(&h->loop, &h->deadline);
	uv_idle_init(&h->loop, &h->idle);
	h->timer.data = h->deadline.data = h->idle.data = h;
	uv_timer_start(&h->deadline, on_deadline, h->timeout_ms, 0);
	gp_channel_config_default(&cc);
	gp_token_psk(h->token.secret, psk);
	peer.addr = (struct sockaddr *)&ss;
	peer.local = h->kp;
	peer.remote_static = h->token.coordinator_pub;
	peer.psk = psk;
	peer.payload = h->token.id;
	peer.payload_len = GP_TOKEN_ID_SIZE;
	if (gp_channel_connect(&h->loop, &peer, &cc, &cb, h, &h->ch) < 0) {
		fprintf(stderr, "hostile-agent: cannot connect\n");
		uv_close((uv_handle_t *)&h->timer, NULL);
		uv_close((uv_handle_t *)&h->deadline, NULL);
		uv_close((uv_handle_t *)&h->idle, NULL);
		uv_run(&h->loop, UV_RUN_DEFAULT);
		goto out_loop;
	}
	uv_run(&h->loop, UV_RUN_DEFAULT);
	if (h->mode == M_PROBE) {
		qsort(h->rtt, h->n_rtt, sizeof(*h->rtt), cmp_u64);
		printf("probe: samples=%zu sent=%lu p50_us=%" PRIu64 " p99_us=%" PRIu64
		       " max_us=%" PRIu64 "\n",
		       h->n_rtt, h->sent, pct(h->rtt, h->n_rtt, 0.5),
		       pct(h->rtt, h->n_rtt, 0.99), pct(h->rtt, h->n_rtt, 1.0));
	}
	printf("result: mode=%s sent=%lu updates=%lu verifies=%lu bytes=%lu "
	       "established=%d closed_by_peer=%d timed_out=%d why=%s\n",
	       mode_names[h->mode], h->sent, h->updates, h->verifies,
	       h->sent_bytes,
	       h->established,
	       h->closed_by_peer, h->timed_out, h->close_text);
	fflush(stdout);
	if (!h->established)
		rc = 2;
	else if (h->mode == M_PROBE)
		rc = h->n_rtt > 0 && !h->closed_by_peer ? 0 : 1;
	else
		rc = h->timed_out ? 1 : 0;
out_loop:
	uv_loop_close(&h->loop);
out:
	explicit_bzero(psk, sizeof(psk));
	gp_noise_keypair_destroy(h->kp);
	free(h->zeros);
	free(h->bad);
	free(h->rtt);
	htrain_destroy(h->train);
	free(h->g);
	free(h->out);
	free(h->mean);
	free(h->var);
	gp_data_destroy(h->data);
	free(h->px);
	free(h->lb);
	free(h->lie);
	free(h);
	return rc;
}
