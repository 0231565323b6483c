#include "params.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "par.h"

/* Checkpoint payload (inside the envelope of bytes.h, magic "GPPR",
 * version 1):
 *
 *   u32  rows_per_shard, shard_bytes
 *   f32  lr, momentum, weight_decay, clip_norm, reject_norm
 *   u64  version, updates
 *   u32  n tensors (1..GP_PARAMS_MAX_TENSORS)
 *   n x  { u8 name_len (1..63); name bytes; u32 rows; u32 cols }
 *   u32  shard count (must equal the count the layout gives)
 *   k x  { u64 version (1..version); u8 momentum_nonzero (0/1) }
 *   F x  f32 parameters    (F = total floats)
 *   F x  f32 momentum
 *
 * The decoder recomputes the shard layout from the shapes and the config and
 * checks the byte count before allocating the arrays. */
#define PARAMS_MAGIC "GPPR"
#define PARAMS_FORMAT 1

struct tensor {
	char name[GP_PARAMS_MAX_NAME + 1];
	uint32_t rows;
	uint32_t cols;
	size_t offset;
};

struct shard {
	uint32_t tensor;
	uint32_t row_begin;
	uint32_t rows;
	size_t offset;
	size_t count;
	uint64_t version;
	bool mom_nonzero;  /* momentum may be non-zero: updates change it */
};

struct gp_params {
	struct gp_params_config cfg;
	struct tensor *tensors;
	size_t n_tensors;
	struct shard *shards;
	size_t n_shards;
	size_t total;
	float *w;
	float *v;
	double *shard_sq;  /* scratch: per-shard sum of squares */
	double *shard_sqb; /* scratch: the second sum's, for sums */
	struct gp_par *par; /* the update's passes over shards; NULL: here */
	struct gp_params_step hook; /* another optimiser, or step NULL */
	/* The outer optimiser (gp_params_set_outer): its momentum, and a
	 * shard's parameters before the inner step; NULL when off. */
	float *outer_m;
	float *before;
	float outer_lr, outer_mu;
	uint64_t version;
	uint64_t updates;
};

static bool config_ok(const struct gp_params_config *c)
{
	return isfinite(c->lr) && c->lr >= 0 && isfinite(c->momentum) &&
	       c->momentum >= 0 && c->momentum < 1 &&
	       isfinite(c->weight_decay) && c->weight_decay >= 0 &&
	       isfinite(c->clip_norm) && c->clip_norm >= 0 &&
	       isfinite(c->reject_norm) && c->reject_norm >= 0;
}

static uint32_t rows_per_shard(const struct gp_params_config *c,
			       uint32_t cols)
{
	uint64_t bytes, rps;

	if (c->rows_per_shard)
		return c->rows_per_shard;
	bytes = c->shard_bytes ? c->shard_bytes : GP_PARAMS_DEFAULT_SHARD_BYTES;
	rps = bytes / ((uint64_t)cols * sizeof(float));
	return rps ? (uint32_t)(rps > UINT32_MAX ? UINT32_MAX : rps) : 1;
}

void gp_params_destroy(struct gp_params *p)
{
	if (!p)
		return;
	free(p->tensors);
	free(p->shards);
	free(p->w);
	free(p->v);
	free(p->shard_sq);
	free(p->shard_sqb);
	free(p->outer_m);
	free(p->before);
	free(p);
}

/* Checks shapes and config and counts floats and shards, without
 * allocating. Returns 0 or -EINVAL. */
static int measure(const struct gp_params_config *cfg,
		   const struct gp_tensor_shape *shapes, size_t n,
		   uint64_t *ret_total, uint64_t *ret_shards)
{
	uint64_t total = 0, n_shards = 0;

	if (!cfg || !shapes || n == 0 || n > GP_PARAMS_MAX_TENSORS ||
	    !config_ok(cfg))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		size_t len = shapes[i].name ? strlen(shapes[i].name) : 0;
		uint32_t rps;

		if (len == 0 || len > GP_PARAMS_MAX_NAME || shapes[i].rows == 0 ||
		    shapes[i].cols == 0)
			return -EINVAL;
		for (size_t j = 0; j < i; j++)
			if (strcmp(shapes[i].name, shapes[j].name) == 0)
				return -EINVAL;
		/* rows * cols fits in 64 bits; compare before adding so the
		 * total never overflows. */
		if ((uint64_t)shapes[i].rows * shapes[i].cols >
		    GP_PARAMS_MAX_FLOATS - total)
			return -EINVAL;
		total += (uint64_t)shapes[i].rows * shapes[i].cols;
		rps = rows_per_shard(cfg, shapes[i].cols);
		n_shards += (shapes[i].rows + (uint64_t)rps - 1) / rps;
		if (n_shards > GP_PARAMS_MAX_SHARDS)
			return -EINVAL;
	}
	*ret_total = total;
	*ret_shards = n_shards;
	return 0;
}

/* Builds everything but the values: tensors, offsets, shard layout. */
static int build(const struct gp_params_config *cfg,
		 const struct gp_tensor_shape *shapes, size_t n,
		 struct gp_params **ret)
{
	struct gp_params *p = NULL;
	uint64_t total = 0, n_shards = 0;
	size_t k = 0;
	int r;

	r = measure(cfg, shapes, n, &total, &n_shards);
	if (r < 0)
		return r;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->cfg = *cfg;
	p->n_tensors = n;
	p->n_shards = (size_t)n_shards;
	p->total = (size_t)total;
	p->version = 1;
	p->tensors = calloc(n, sizeof(*p->tensors));
	p->shards = calloc(p->n_shards, sizeof(*p->shards));
	p->shard_sq = calloc(p->n_shards, sizeof(*p->shard_sq));
	p->shard_sqb = calloc(p->n_shards, sizeof(*p->shard_sqb));
	if (!p->tensors || !p->shards || !p->shard_sq || !p->shard_sqb) {
		gp_params_destroy(p);
		return -ENOMEM;
	}
	total = 0;
	for (size_t i = 0; i < n; i++) {
		struct tensor *t = &p->tensors[i];
		uint32_t rps = rows_per_shard(cfg, shapes[i].cols);

		memcpy(t->name, shapes[i].name, strlen(shapes[i].name) + 1);
		t->rows = shapes[i].rows;
		t->cols = shapes[i].cols;
		t->offset = (size_t)total;
		for (uint32_t row = 0; row < t->rows; row += rps) {
			struct shard *s = &p->shards[k++];

			s->tensor = (uint32_t)i;
			s->row_begin = row;
			s->rows = t->rows - row < rps ? t->rows - row : rps;
			s->offset = t->offset + (size_t)row * t->cols;
			s->count = (size_t)s->rows * t->cols;
			s->version = 1;
			if (t->rows - row <= rps)
				break;
		}
		total += (uint64_t)t->rows * t->cols;
	}
	*ret = p;
	return 0;
}

int gp_params_create(const struct gp_params_config *cfg,
		     const struct gp_tensor_shape *shapes, size_t n,
		     struct gp_params **ret)
{
	struct gp_params *p = NULL;
	int r = build(cfg, shapes, n, &p);

	if (r < 0)
		return r;
	p->w = calloc(p->total, sizeof(float));
	p->v = calloc(p->total, sizeof(float));
	if (!p->w || !p->v) {
		gp_params_destroy(p);
		return -ENOMEM;
	}
	*ret = p;
	return 0;
}

const struct gp_params_config *gp_params_config(const struct gp_params *p)
{
	return &p->cfg;
}

int gp_params_set_lr(struct gp_params *p, float lr)
{
	if (!isfinite(lr) || lr < 0)
		return -EINVAL;
	p->cfg.lr = lr;
	return 0;
}

size_t gp_params_tensor_count(const struct gp_params *p)
{
	return p->n_tensors;
}

int gp_params_tensor(const struct gp_params *p, size_t i,
		     struct gp_tensor_shape *ret_shape, size_t *ret_offset)
{
	if (i >= p->n_tensors)
		return -ENOENT;
	*ret_shape = (struct gp_tensor_shape){
		.name = p->tensors[i].name,
		.rows = p->tensors[i].rows,
		.cols = p->tensors[i].cols,
	};
	if (ret_offset)
		*ret_offset = p->tensors[i].offset;
	return 0;
}

int gp_params_find(const struct gp_params *p, const char *name)
{
	for (size_t i = 0; name && i < p->n_tensors; i++)
		if (strcmp(p->tensors[i].name, name) == 0)
			return (int)i;
	return -ENOENT;
}

size_t gp_params_size(const struct gp_params *p)
{
	return p->total;
}

const float *gp_params_values(const struct gp_params *p)
{
	return p->w;
}

int gp_params_check_tensor(const struct gp_params *p, size_t i, uint32_t rows,
			   uint32_t cols)
{
	if (i >= p->n_tensors || p->tensors[i].rows != rows ||
	    p->tensors[i].cols != cols)
		return GP_REASON_SHAPE;
	return 0;
}

int gp_params_check_block(const struct gp_params *p, uint32_t tensor,
			  uint32_t row_start, uint32_t rows, uint64_t count,
			  size_t *ret_offset)
{
	const struct tensor *t;

	if (tensor >= p->n_tensors)
		return GP_REASON_SHAPE;
	t = &p->tensors[tensor];
	if (rows == 0) {
		if (row_start != 0)
			return GP_REASON_SHAPE;
		rows = t->rows;
	}
	if (row_start >= t->rows || rows > t->rows - row_start ||
	    count != (uint64_t)rows * t->cols)
		return GP_REASON_SHAPE;
	*ret_offset = t->offset + (size_t)row_start * t->cols;
	return 0;
}

int gp_params_find_shard(const struct gp_params *p, uint32_t tensor,
			 uint32_t row_start)
{
	size_t lo = 0, hi = p->n_shards;

	/* Shards are ordered by (tensor, row_begin). */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct shard *s = &p->shards[mid];

		if (s->tensor < tensor ||
		    (s->tensor == tensor && s->row_begin < row_start))
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < p->n_shards && p->shards[lo].tensor == tensor &&
	    p->shards[lo].row_begin == row_start)
		return (int)lo;
	return -ENOENT;
}

int gp_params_set_tensor(struct gp_params *p, size_t i, const float *src,
			 size_t count)
{
	const struct tensor *t;

	if (i >= p->n_tensors || !src)
		return -EINVAL;
	t = &p->tensors[i];
	if (count != (size_t)t->rows * t->cols)
		return -EINVAL;
	memcpy(p->w + t->offset, src, count * sizeof(float));
	p->version++;
	for (size_t k = 0; k < p->n_shards; k++)
		if (p->shards[k].tensor == i)
			p->shards[k].version = p->version;
	return 0;
}

const float *gp_params_momentum(const struct gp_params *p)
{
	return p->v;
}

int gp_params_undo(struct gp_params *p, const double *dw, const double *dv,
		   size_t n)
{
	if (n != p->total || !dw || !dv)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		p->w[i] = (float)((double)p->w[i] - dw[i]);
		p->v[i] = (float)((double)p->v[i] - dv[i]);
	}
	p->version++;
	for (size_t k = 0; k < p->n_shards; k++) {
		p->shards[k].version = p->version;
		p->shards[k].mom_nonzero = true;
	}
	return 0;
}

uint64_t gp_params_version(const struct gp_params *p)
{
	return p->version;
}

uint64_t gp_params_updates(const struct gp_params *p)
{
	return p->updates;
}

size_t gp_params_shard_count(const struct gp_params *p)
{
	return p->n_shards;
}

int gp_params_shard(const struct gp_params *p, size_t i,
		    struct gp_params_shard *ret)
{
	const struct shard *s;

	if (i >= p->n_shards)
		return -ENOENT;
	s = &p->shards[i];
	*ret = (struct gp_params_shard){
		.tensor = s->tensor,
		.row_begin = s->row_begin,
		.rows = s->rows,
		.cols = p->tensors[s->tensor].cols,
		.offset = s->offset,
		.count = s->count,
		.version = s->version,
	};
	return 0;
}

const float *gp_params_shard_data(const struct gp_params *p, size_t i)
{
	return i < p->n_shards ? p->w + p->shards[i].offset : NULL;
}

const float *gp_params_shard_momentum(const struct gp_params *p, size_t i)
{
	return i < p->n_shards ? p->v + p->shards[i].offset : NULL;
}

int gp_params_copy_shard(const struct gp_params *p, size_t i, float *dst,
			 size_t cap)
{
	const struct shard *s;

	if (i >= p->n_shards)
		return -ENOENT;
	s = &p->shards[i];
	if (cap < s->count || s->count > INT32_MAX)
		return -ENOBUFS;
	memcpy(dst, p->w + s->offset, s->count * sizeof(float));
	return (int)s->count;
}

size_t gp_params_changed_since(const struct gp_params *p, uint64_t since,
			       uint32_t *ret_idx, size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < p->n_shards; i++) {
		if (p->shards[i].version <= since)
			continue;
		if (n < cap)
			ret_idx[n] = (uint32_t)i;
		n++;
	}
	return n;
}

uint64_t gp_params_changed_values(const struct gp_params *p, uint64_t since)
{
	uint64_t values = 0;

	for (size_t i = 0; i < p->n_shards; i++)
		if (p->shards[i].version > since)
			values += p->shards[i].count;
	return values;
}

/* The loops over all parameters run in blocks of 8 so that -O2's cheap vectoriser (no
 * epilogue loops) turns each block into SIMD code; the tail is scalar. */
#define SGD_BLOCK 8

/* Exact-ish sum of squares in double, used to classify a non-finite fast
 * sum: finite floats cannot overflow a double sum of at most 2^28 squares, so
 * a non-finite result here means a NaN or Inf in the input. */
static double sum_squares_double(const float *x, size_t n)
{
	double a0 = 0, a1 = 0;
	size_t i = 0;

	for (; i + 2 <= n; i += 2) {
		a0 += (double)x[i] * x[i];
		a1 += (double)x[i + 1] * x[i + 1];
	}
	for (; i < n; i++)
		a0 += (double)x[i] * x[i];
	return a0 + a1;
}

/* Sum of squares: 8 float lanes over runs of 256 values (SIMD at -O2),
 * each run's partial sums added in double, so the rounding error stays
 * around 1e-6 relative. A float square overflows above ~1.8e19; then the
 * double path decides between "huge" and "NaN/Inf". */
static double sum_squares(const float *x, size_t n)
{
	double total = 0;
	size_t i = 0;

	while (i + SGD_BLOCK <= n) {
		float acc[SGD_BLOCK] = {0};
		size_t end = n - i > 256 ? i + 256 : n;

		for (; i + SGD_BLOCK <= end; i += SGD_BLOCK)
			for (size_t j = 0; j < SGD_BLOCK; j++)
				acc[j] += x[i + j] * x[i + j];
		for (size_t j = 0; j < SGD_BLOCK; j++)
			total += acc[j];
	}
	for (; i < n; i++)
		total += (double)x[i] * x[i];
	if (!isfinite(total))
		total = sum_squares_double(x, n);
	return total;
}

int gp_params_grad_norm(const float *grad, size_t n, double *ret_norm)
{
	double sq = n ? sum_squares(grad, n) : 0;

	if (!isfinite(sq))
		return GP_REASON_NONFINITE;
	*ret_norm = sqrt(sq);
	return 0;
}

static void sgd_momentum(float *restrict w, float *restrict v,
			 const float *restrict g, size_t n, float scale,
			 float lr, float mu, float wd)
{
	size_t i = 0;

	for (; i + SGD_BLOCK <= n; i += SGD_BLOCK) {
		for (size_t j = 0; j < SGD_BLOCK; j++) {
			float d = scale * g[i + j] + wd * w[i + j];

			v[i + j] = mu * v[i + j] + d;
			w[i + j] -= lr * v[i + j];
		}
	}
	for (; i < n; i++) {
		float d = scale * g[i] + wd * w[i];

		v[i] = mu * v[i] + d;
		w[i] -= lr * v[i];
	}
}

static void sgd_plain(float *restrict w, const float *restrict g, size_t n,
		      float scale, float lr, float wd)
{
	size_t i = 0;

	for (; i + SGD_BLOCK <= n; i += SGD_BLOCK)
		for (size_t j = 0; j < SGD_BLOCK; j++)
			w[i + j] -= lr * (scale * g[i + j] + wd * w[i + j]);
	for (; i < n; i++)
		w[i] -= lr * (scale * g[i] + wd * w[i]);
}

/* The outer Nesterov step over a shard whose inner step took its
 * parameters from w0 to w: with d = w0 - w (the run's descent),
 * m = mu * m + d and w = w0 - lr * (d + mu * m). */
static void outer_nesterov(float *restrict w, const float *restrict w0,
			   float *restrict m, size_t n, float lr, float mu)
{
	size_t i = 0;

	for (; i + SGD_BLOCK <= n; i += SGD_BLOCK) {
		for (size_t j = 0; j < SGD_BLOCK; j++) {
			float d = w0[i + j] - w[i + j];

			m[i + j] = mu * m[i + j] + d;
			w[i + j] = w0[i + j] - lr * (d + mu * m[i + j]);
		}
	}
	for (; i < n; i++) {
		float d = w0[i] - w[i];

		m[i] = mu * m[i] + d;
		w[i] = w0[i] - lr * (d + mu * m[i]);
	}
}

/* Before the inner step of shard s: keeps its parameters for the outer
 * step, when there is one. */
static void outer_begin(struct gp_params *p, const struct shard *s)
{
	if (p->outer_m)
		memcpy(p->before + s->offset, p->w + s->offset,
		       s->count * sizeof(float));
}

/* After it: the outer step. Its momentum is then non-zero in general, so
 * the shard changes with every later update (the mom_nonzero flag). */
static void outer_end(struct gp_params *p, struct shard *s)
{
	if (!p->outer_m)
		return;
	outer_nesterov(p->w + s->offset, p->before + s->offset,
		       p->outer_m + s->offset, s->count, p->outer_lr,
		       p->outer_mu);
	s->mom_nonzero = true;
}

int gp_params_set_outer(struct gp_params *p, float lr, float mu)
{
	float *m, *before;

	if (!p || p->outer_m || !isfinite(lr) || !(lr > 0) ||
	    lr > 10 || !isfinite(mu) || mu < 0 || !(mu < 1))
		return -EINVAL;
	m = calloc(p->total, sizeof(*m));
	before = malloc(p->total * sizeof(*before));
	if (!m || !before) {
		free(m);
		free(before);
		return -ENOMEM;
	}
	p->outer_m = m;
	p->before = before;
	p->outer_lr = lr;
	p->outer_mu = mu;
	return 0;
}

const float *gp_params_outer_momentum(const struct gp_params *p)
{
	return p->outer_m;
}

static void set_info(const struct gp_params *p, double norm, bool clipped,
		     uint32_t changed, struct gp_params_apply_info *ret_info)
{
	if (ret_info)
		*ret_info = (struct gp_params_apply_info){
			.norm = norm,
			.clipped = clipped,
			.version = p->version,
			.shards_changed = changed,
		};
}

int gp_params_set_step(struct gp_params *p, const struct gp_params_step *s)
{
	if (!p || (s && (!s->begin || !s->step)))
		return -EINVAL;
	if (s)
		p->hook = *s;
	else
		memset(&p->hook, 0, sizeof(p->hook));
	return 0;
}

bool gp_params_linear(const struct gp_params *p)
{
	return p->cfg.weight_decay == 0 && !p->hook.step && !p->outer_m;
}

/* set_info's, and a linear step's effect (gp_params_apply_info). */
static void set_effect(const struct gp_params *p, float ka, float kb,
		       struct gp_params_apply_info *ret_info)
{
	if (ret_info && gp_params_linear(p)) {
		ret_info->linear = true;
		ret_info->ka = ka;
		ret_info->kb = kb;
	}
}

/* ---- an update's passes over the shards --------------------------------
 *
 * Each pass runs one task per shard on the pool (gp_params_set_par): a task
 * writes its own shard's floats and its own slot of shard_sq / shard_sqb
 * only, and whatever is summed over shards is summed afterwards on the
 * caller, in shard order, so the bits are the same on any number of
 * threads. */

void gp_params_set_par(struct gp_params *p, struct gp_par *par)
{
	p->par = par;
}

/* One update's pass: the arrays it reads and the step's coefficients. */
struct pass {
	struct gp_params *p;
	const float *a, *b;
	float scale, cv, cb, mk, sa;
	bool momentum;
};

static void for_shards(struct pass *ps, void (*task)(void *, size_t))
{
	struct gp_params *p = ps->p;

	gp_par_for(p->total >= GP_PAR_MIN ? p->par : NULL, p->n_shards,
		   task, ps);
}

/* |a|^2 (and |b|^2) of shard k. */
static void squares_task(void *arg, size_t k)
{
	struct pass *ps = arg;
	struct gp_params *p = ps->p;
	const struct shard *s = &p->shards[k];

	p->shard_sq[k] = sum_squares(ps->a + s->offset, s->count);
	if (ps->b)
		p->shard_sqb[k] = sum_squares(ps->b + s->offset, s->count);
}

/* The shards the step changed: theirs is the version it set. */
static uint32_t changed_shards(const struct gp_params *p)
{
	uint32_t changed = 0;

	for (size_t k = 0; k < p->n_shards; k++)
		changed += p->shards[k].version == p->version;
	return changed;
}

/* gp_params_apply_scaled's step of shard k. */
static void scaled_task(void *arg, size_t k)
{
	struct pass *ps = arg;
	struct gp_params *p = ps->p;
	const struct gp_params_config *c = &p->cfg;
	struct shard *s = &p->shards[k];
	float *w = p->w + s->offset;

	/* Bytes that cannot change keep their version, so pulls skip them. */
	if (p->shard_sq[k] == 0 && !s->mom_nonzero && c->weight_decay == 0)
		return;
	outer_begin(p, s);
	if (c->momentum > 0) {
		sgd_momentum(w, p->v + s->offset, ps->a + s->offset, s->count,
			     ps->scale, c->lr, c->momentum, c->weight_decay);
		s->mom_nonzero = true;
	} else {
		sgd_plain(w, ps->a + s->offset, s->count, ps->scale, c->lr,
			  c->weight_decay);
	}
	outer_end(p, s);
	s->version = p->version;
}

int gp_params_apply(struct gp_params *p, const float *grad, size_t n,
		    struct gp_params_apply_info *ret_info)
{
	return gp_params_apply_scaled(p, grad, n, 1.0f, ret_info);
}

int gp_params_apply_scaled(struct gp_params *p, const float *grad, size_t n,
			   float weight, struct gp_params_apply_info *ret_info)
{
	const struct gp_params_config *c = &p->cfg;
	double sq = 0, norm;
	float scale = weight;
	bool clipped = false;
	struct pass ps = { .p = p };

	if (!grad || n != p->total)
		return GP_REASON_SHAPE;
	if (!isfinite(weight) || !(weight > 0) || weight > 1)
		return -EINVAL;
	ps.a = grad;
	for_shards(&ps, squares_task);
	for (size_t k = 0; k < p->n_shards; k++)
		sq += p->shard_sq[k];
	if (!isfinite(sq))
		return GP_REASON_NONFINITE;
	norm = sqrt(sq);
	if (c->reject_norm > 0 && norm > c->reject_norm)
		return GP_REASON_NORM;
	if (c->clip_norm > 0 && norm > c->clip_norm) {
		scale = (float)(weight * c->clip_norm / norm);
		clipped = true;
	}
	p->version++;
	p->updates++;
	if (p->hook.step) {
		float gscale = clipped ? (float)(c->clip_norm / norm) : 1.0f;

		p->hook.begin(p->hook.ctx);
		for (size_t k = 0; k < p->n_shards; k++) {
			struct shard *s = &p->shards[k];

			outer_begin(p, s);
			p->hook.step(p->hook.ctx, p->w + s->offset,
				     grad + s->offset, s->offset, s->count,
				     gscale, c->lr * weight);
			outer_end(p, s);
			s->version = p->version;
		}
		set_info(p, norm, clipped, (uint32_t)p->n_shards, ret_info);
		return 0;
	}
	ps.scale = scale;
	for_shards(&ps, scaled_task);
	set_info(p, norm, clipped, changed_shards(p), ret_info);
	/* v = mu v + scale g, w -= lr v; without momentum w -= lr scale g. */
	set_effect(p, c->momentum > 0 ? scale : 0.0f, -c->lr * scale, ret_info);
	return 0;
}

/* w -= cv * v + cb * b; v = mk * v + sa * a, element by element (v read
 * before it is written). */
static void sgd_sums(float *restrict w, float *restrict v,
		     const float *restrict a, const float *restrict b, size_t n,
		     float cv, float cb, float mk, float sa)
{
	size_t i = 0;

	for (; i + SGD_BLOCK <= n; i += SGD_BLOCK) {
		for (size_t j = 0; j < SGD_BLOCK; j++) {
			float vj = v[i + j];

			w[i + j] -= cv * vj + cb * b[i + j];
			v[i + j] = mk * vj + sa * a[i + j];
		}
	}
	for (; i < n; i++) {
		float vj = v[i];

		w[i] -= cv * vj + cb * b[i];
		v[i] = mk * vj + sa * a[i];
	}
}

int gp_params_sums_coefficients(double mu, const struct gp_params_sums *sums,
				double *ret_c, double *ret_mk)
{
	double mk = 1, c = 0, t = sums->carry_time, mt;

	if (sums->count == 0 || !sums->lrs || !isfinite(t) || t < 0 || t > 1)
		return -EINVAL;
	for (uint32_t j = 1; j <= sums->count; j++) {
		float lr = sums->lrs[j - 1];
		float cl = sums->carry_lrs ? sums->carry_lrs[j - 1] : lr;

		if (!isfinite(lr) || lr < 0 || !isfinite(cl) || cl < 0)
			return -EINVAL;
		mk *= mu;
		c += cl * mk;
	}
	if (t > 0 && t < 1 && mu > 0 && mk < 1) {
		mt = pow(mu, t * (double)sums->count);
		c *= (1 - mt) / (1 - mk);
		mk = mt;
	}
	*ret_c = c;
	*ret_mk = mk;
	return 0;
}

/* gp_params_apply_sums' step of shard k (and gp_params_apply_delta's:
 * without momentum, b the delta). */
static void sums_task(void *arg, size_t k)
{
	struct pass *ps = arg;
	struct gp_params *p = ps->p;
	struct shard *s = &p->shards[k];

	if (p->shard_sq[k] == 0 && !s->mom_nonzero)
		return;
	outer_begin(p, s);
	if (ps->momentum) {
		sgd_sums(p->w + s->offset, p->v + s->offset, ps->a + s->offset,
			 ps->b + s->offset, s->count, ps->cv, ps->cb, ps->mk,
			 ps->sa);
		s->mom_nonzero = true;
	} else {
		sgd_plain(p->w + s->offset, ps->b + s->offset, s->count, ps->sa,
			  ps->scale, 0);
	}
	outer_end(p, s);
	s->version = p->version;
}

int gp_params_apply_sums(struct gp_params *p, const struct gp_params_sums *sums,
			 size_t n, struct gp_params_apply_info *ret_info)
{
	const struct gp_params_config *c = &p->cfg;
	double mu = c->momentum, cv = 0, lsum = 0, mk = 1, div = 0;
	double sq = 0, sqb = 0, norm, clip = 1;
	bool clipped = false;
	struct pass ps = { .p = p };

	if (!sums->a || !sums->b || n != p->total)
		return GP_REASON_SHAPE;
	if (sums->count == 0 || !sums->lrs || !isfinite(sums->scale) ||
	    !(sums->scale > 0) || sums->scale > 1 || c->weight_decay != 0 ||
	    p->hook.step)
		return -EINVAL;
	/* mu^j for step j = 1..K; the mean's weights mu^(K-i) sum the same
	 * powers, 0..K-1. */
	for (uint32_t j = 1; j <= sums->count; j++) {
		div += mk;
		mk *= mu;
		lsum += sums->lrs[j - 1];
	}
	if (gp_params_sums_coefficients(mu, sums, &cv, &mk) < 0)
		return -EINVAL;
	/* One pass over each sum: a shard changes when either is non-zero. */
	ps.a = sums->a;
	ps.b = sums->b;
	for_shards(&ps, squares_task);
	for (size_t k = 0; k < p->n_shards; k++) {
		double sa = p->shard_sq[k], sb = p->shard_sqb[k];

		sq += sa;
		sqb += sb;
		p->shard_sq[k] = sa + sb;
	}
	if (!isfinite(sq) || !isfinite(sqb))
		return GP_REASON_NONFINITE;
	/* b is a weighted mean of the a_j, each at most div times the
	 * largest gradient: checking a alone would let a large b through. */
	norm = sqrt(sq > sqb ? sq : sqb) / div;
	if (c->reject_norm > 0 && norm > c->reject_norm)
		return GP_REASON_NORM;
	if (c->clip_norm > 0 && norm > c->clip_norm) {
		clip = c->clip_norm / norm;
		clipped = true;
	}
	p->version++;
	p->updates += sums->count;
	ps.cv = (float)cv;
	ps.cb = (float)(lsum * sums->scale * clip);
	ps.mk = (float)mk;
	ps.sa = (float)(sums->scale * clip);
	ps.scale = (float)lsum; /* without momentum: sgd_plain's rate */
	ps.momentum = mu > 0;
	for_shards(&ps, sums_task);
	set_info(p, norm, clipped, changed_shards(p), ret_info);
	/* sgd_sums' sa and cb; without momentum sgd_plain's lr * scale. */
	set_effect(p, mu > 0 ? (float)(sums->scale * clip) : 0.0f,
		   -(float)(lsum * sums->scale * clip), ret_info);
	return 0;
}

/* Whether some |d_i| is beyond what K AdamW steps at rates summing to
 * lr_sum can move w_i (params.h). */
static bool delta_absurd(const float *restrict w, const float *restrict d,
			 size_t n, double lr_sum)
{
	float lim = (float)(lr_sum * GP_PARAMS_DELTA_STEP_MAX);
	bool bad = false;

	/* No early exit: the loop vectorises, and an honest delta is
	 * read whole anyway. */
	for (size_t i = 0; i < n; i++)
		bad |= fabsf(d[i]) > lim * (1.0f + fabsf(w[i]));
	return bad;
}

int gp_params_apply_delta(struct gp_params *p,
			  const struct gp_params_delta *dl, size_t n,
			  struct gp_params_apply_info *ret_info)
{
	const struct gp_params_config *c = &p->cfg;
	double sq = 0, norm;
	struct pass ps = { .p = p };

	if (!dl->d || n != p->total)
		return GP_REASON_SHAPE;
	if (dl->count == 0 || !isfinite(dl->lr_sum) || dl->lr_sum < 0 ||
	    !isfinite(dl->scale) || !(dl->scale > 0) || dl->scale > 1)
		return -EINVAL;
	ps.a = dl->d;
	for_shards(&ps, squares_task);
	for (size_t k = 0; k < p->n_shards; k++)
		sq += p->shard_sq[k];
	if (!isfinite(sq))
		return GP_REASON_NONFINITE;
	/* The run's mean step per unit of rate: what the ledger's norm
	 * column shows for a delta. */
	norm = dl->lr_sum > 0 ? sqrt(sq) / dl->lr_sum : sqrt(sq);
	if (c->reject_norm > 0 && delta_absurd(p->w, dl->d, n, dl->lr_sum))
		return GP_REASON_NORM;
	p->version++;
	p->updates += dl->count;
	/* sums_task without momentum: w -= 1 * (scale * d). */
	ps.b = dl->d;
	ps.sa = dl->scale;
	ps.scale = 1.0f;
	for_shards(&ps, sums_task);
	set_info(p, norm, false, changed_shards(p), ret_info);
	return 0;
}

int gp_params_save(const struct gp_params *p, uint8_t **ret_data,
		   size_t *ret_len)
{
	struct gp_wbuf w = {0};

	gp_wbuf_begin_blob(&w, PARAMS_MAGIC, PARAMS_FORMAT);
	gp_wbuf_put_u32(&w, p->cfg.rows_per_shard);
	gp_wbuf_put_u32(&w, p->cfg.shard_bytes);
	gp_wbuf_put_f32(&w, p->cfg.lr);
	gp_wbuf_put_f32(&w, p->cfg.momentum);
	gp_wbuf_put_f32(&w, p->cfg.weight_decay);
	gp_wbuf_put_f32(&w, p->cfg.clip_norm);
	gp_wbuf_put_f32(&w, p->cfg.reject_norm);
	gp_wbuf_put_u64(&w, p->version);
	gp_wbuf_put_u64(&w, p->updates);
	gp_wbuf_put_u32(&w, (uint32_t)p->n_tensors);
	for (size_t i = 0; i < p->n_tensors; i++) {
		size_t len = strlen(p->tensors[i].name);

		gp_wbuf_put_u8(&w, (uint8_t)len);
		gp_wbuf_put(&w, p->tensors[i].name, len);
		gp_wbuf_put_u32(&w, p->tensors[i].rows);
		gp_wbuf_put_u32(&w, p->tensors[i].cols);
	}
	gp_wbuf_put_u32(&w, (uint32_t)p->n_shards);
	for (size_t k = 0; k < p->n_shards; k++) {
		gp_wbuf_put_u64(&w, p->shards[k].version);
		gp_wbuf_put_u8(&w, p->shards[k].mom_nonzero);
	}
	gp_wbuf_put_f32s(&w, p->w, p->total);
	gp_wbuf_put_f32s(&w, p->v, p->total);
	return gp_wbuf_finish_blob(&w, ret_data, ret_len);
}

/* The outer momentum's checkpoint payload (envelope of bytes.h, magic
 * "GPOM", version 1): u64 F (the store's floats), F x f32 momentum. The
 * outer rate and momentum coefficient are the job's, not saved. */
#define OUTER_MAGIC "GPOM"
#define OUTER_FORMAT 1

int gp_params_save_outer(const struct gp_params *p, uint8_t **ret_data,
			 size_t *ret_len)
{
	struct gp_wbuf w = {0};

	if (!p->outer_m)
		return -EINVAL;
	gp_wbuf_begin_blob(&w, OUTER_MAGIC, OUTER_FORMAT);
	gp_wbuf_put_u64(&w, p->total);
	gp_wbuf_put_f32s(&w, p->outer_m, p->total);
	return gp_wbuf_finish_blob(&w, ret_data, ret_len);
}

int gp_params_load_outer(struct gp_params *p, const uint8_t *data,
			 size_t len)
{
	struct gp_rbuf r;
	uint64_t total;
	float *m;
	int err;

	if (!p->outer_m)
		return -EINVAL;
	err = gp_rbuf_open_blob(data, len, OUTER_MAGIC, OUTER_FORMAT, &r);
	if (err < 0)
		return err;
	if (!gp_rbuf_get_u64(&r, &total) || total != p->total ||
	    r.left != p->total * sizeof(float))
		return -EBADMSG;
	m = malloc(p->total * sizeof(*m));
	if (!m)
		return -ENOMEM;
	if (!gp_rbuf_get_f32s(&r, m, p->total)) {
		free(m);
		return -EBADMSG;
	}
	for (size_t i = 0; i < p->total; i++) {
		if (!isfinite(m[i])) {
			free(m);
			return -EBADMSG;
		}
	}
	free(p->outer_m);
	p->outer_m = m;
	/* Every shard may now change with any update. */
	for (size_t k = 0; k < p->n_shards; k++)
		p->shards[k].mom_nonzero = true;
	return 0;
}

int gp_params_load(const uint8_t *data, size_t len, struct gp_params **ret)
{
	struct gp_params_config cfg = {0};
	struct gp_tensor_shape *shapes = NULL;
	char (*names)[GP_PARAMS_MAX_NAME + 1] = NULL;
	struct gp_params *p = NULL;
	struct gp_rbuf r;
	uint64_t version, updates, total, n_shards64;
	uint32_t n, n_shards;
	int err;

	err = gp_rbuf_open_blob(data, len, PARAMS_MAGIC, PARAMS_FORMAT, &r);
	if (err < 0)
		return err;
	if (!gp_rbuf_get_u32(&r, &cfg.rows_per_shard) ||
	    !gp_rbuf_get_u32(&r, &cfg.shard_bytes) ||
	    !gp_rbuf_get_f32(&r, &cfg.lr) ||
	    !gp_rbuf_get_f32(&r, &cfg.momentum) ||
	    !gp_rbuf_get_f32(&r, &cfg.weight_decay) ||
	    !gp_rbuf_get_f32(&r, &cfg.clip_norm) ||
	    !gp_rbuf_get_f32(&r, &cfg.reject_norm) ||
	    !gp_rbuf_get_u64(&r, &version) || !gp_rbuf_get_u64(&r, &updates) ||
	    !gp_rbuf_get_u32(&r, &n))
		return -EBADMSG;
	/* Each tensor takes at least 10 bytes, which bounds n by the input
	 * before anything is allocated. */
	if (n == 0 || n > GP_PARAMS_MAX_TENSORS || n > r.left / 10 ||
	    version == 0)
		return -EBADMSG;
	shapes = calloc(n, sizeof(*shapes));
	names = calloc(n, sizeof(*names));
	if (!shapes || !names) {
		err = -ENOMEM;
		goto out;
	}
	err = -EBADMSG;
	for (uint32_t i = 0; i < n; i++) {
		uint8_t nl;

		if (!gp_rbuf_get_u8(&r, &nl) || nl == 0 ||
		    nl > GP_PARAMS_MAX_NAME || !gp_rbuf_get(&r, names[i], nl) ||
		    memchr(names[i], '\0', nl) ||
		    !gp_rbuf_get_u32(&r, &shapes[i].rows) ||
		    !gp_rbuf_get_u32(&r, &shapes[i].cols))
			goto out;
		shapes[i].name = names[i];
	}
	/* measure() checks the shapes and config like gp_params_create; the
	 * arrays they imply must be present in full before any is allocated. */
	if (measure(&cfg, shapes, n, &total, &n_shards64) < 0 ||
	    r.left < 4 + n_shards64 * 9 + total * 2 * sizeof(float))
		goto out;
	err = build(&cfg, shapes, n, &p);
	if (err < 0) {
		err = err == -ENOMEM ? err : -EBADMSG;
		goto out;
	}
	err = -EBADMSG;
	if (!gp_rbuf_get_u32(&r, &n_shards) || n_shards != p->n_shards ||
	    r.left != (size_t)n_shards * 9 + p->total * 2 * sizeof(float))
		goto out;
	for (size_t k = 0; k < p->n_shards; k++) {
		uint8_t nz;

		if (!gp_rbuf_get_u64(&r, &p->shards[k].version) ||
		    !gp_rbuf_get_u8(&r, &nz) || nz > 1 ||
		    p->shards[k].version == 0 || p->shards[k].version > version)
			goto out;
		p->shards[k].mom_nonzero = nz;
	}
	p->version = version;
	p->updates = updates;
	p->w = malloc(p->total * sizeof(float));
	p->v = malloc(p->total * sizeof(float));
	if (!p->w || !p->v) {
		err = -ENOMEM;
		goto out;
	}
	if (!gp_rbuf_get_f32s(&r, p->w, p->total) ||
	    !gp_rbuf_get_f32s(&r, p->v, p->total) || r.left != 0)
		goto out;
	*ret = p;
	p = NULL;
	err = 0;
out:
	gp_params_destroy(p);
	free(shapes);
	free(names);
	return err;
}
