#include "optim.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "bytes.h"
#include "params.h"

/* Checkpoint payload (inside the envelope of bytes.h, magic "GPOP",
 * version 1):
 *
 *   u8   kind, 1 = AdamW
 *   f32  beta1, beta2, eps, weight_decay
 *   u64  steps
 *   u64  n parameters
 *   n x  f32 m
 *   n x  f32 v   (each >= 0)
 */
#define OPTIM_MAGIC "GPOP"
#define OPTIM_FORMAT 1
#define OPTIM_ADAMW 1

struct gp_optim {
	struct gp_optim_config cfg;
	size_t n;
	uint64_t steps;
	float *m, *v;
};

static bool config_ok(const struct gp_optim_config *c)
{
	return c && c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 &&
	       c->beta2 < 1 && c->eps > 0 && c->eps < 1 &&
	       c->weight_decay >= 0 && c->weight_decay < 1;
}

int gp_optim_create(const struct gp_optim_config *cfg, size_t n,
		    struct gp_optim **ret)
{
	struct gp_optim *o;

	if (!config_ok(cfg) || n == 0 || n > GP_PARAMS_MAX_FLOATS || !ret)
		return -EINVAL;
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	o->cfg = *cfg;
	o->n = n;
	o->m = calloc(n, sizeof(float));
	o->v = calloc(n, sizeof(float));
	if (!o->m || !o->v) {
		gp_optim_destroy(o);
		return -ENOMEM;
	}
	*ret = o;
	return 0;
}

void gp_optim_destroy(struct gp_optim *o)
{
	if (!o)
		return;
	free(o->m);
	free(o->v);
	free(o);
}

uint64_t gp_optim_steps(const struct gp_optim *o)
{
	return o ? o->steps : 0;
}

const struct gp_optim_config *gp_optim_config(const struct gp_optim *o)
{
	return o ? &o->cfg : NULL;
}

const float *gp_optim_m(const struct gp_optim *o)
{
	return o ? o->m : NULL;
}

const float *gp_optim_v(const struct gp_optim *o)
{
	return o ? o->v : NULL;
}

void gp_optim_begin(struct gp_optim *o)
{
	o->steps++;
}

void gp_optim_step_range(struct gp_optim *o, float *w, const float *g,
			 size_t off, size_t n, float gscale, float lr)
{
	/* The formula is kernels/adamw.h's, which agents' local steps take
	 * too (GP_CAP_INNER_ADAMW). */
	struct gp_adamw_config c = {
		.beta1 = o->cfg.beta1,
		.beta2 = o->cfg.beta2,
		.eps = o->cfg.eps,
		.weight_decay = o->cfg.weight_decay,
	};

	gp_adamw_step(&c, w, o->m + off, o->v + off, g, n, gscale, lr,
		      o->steps);
}

static void hook_begin(void *ctx)
{
	gp_optim_begin(ctx);
}

static void hook_step(void *ctx, float *w, const float *g, size_t off,
		      size_t n, float gscale, float lr)
{
	gp_optim_step_range(ctx, w, g, off, n, gscale, lr);
}

int gp_optim_attach(struct gp_optim *o, struct gp_params *p)
{
	const struct gp_params_config *c;
	struct gp_params_step hook = {
		.begin = hook_begin,
		.step = hook_step,
		.ctx = o,
	};

	if (!p)
		return -EINVAL;
	if (!o)
		return gp_params_set_step(p, NULL);
	c = gp_params_config(p);
	if (gp_params_size(p) != o->n || c->momentum != 0 ||
	    c->weight_decay != 0)
		return -EINVAL;
	return gp_params_set_step(p, &hook);
}

int gp_optim_save(const struct gp_optim *o, uint8_t **ret_data,
		  size_t *ret_len)
{
	struct gp_wbuf w = { 0 };

	if (!o || !ret_data || !ret_len)
		return -EINVAL;
	gp_wbuf_begin_blob(&w, OPTIM_MAGIC, OPTIM_FORMAT);
	gp_wbuf_put_u8(&w, OPTIM_ADAMW);
	gp_wbuf_put_f32(&w, o->cfg.beta1);
	gp_wbuf_put_f32(&w, o->cfg.beta2);
	gp_wbuf_put_f32(&w, o->cfg.eps);
	gp_wbuf_put_f32(&w, o->cfg.weight_decay);
	gp_wbuf_put_u64(&w, o->steps);
	gp_wbuf_put_u64(&w, o->n);
	gp_wbuf_put_f32s(&w, o->m, o->n);
	gp_wbuf_put_f32s(&w, o->v, o->n);
	return gp_wbuf_finish_blob(&w, ret_data, ret_len);
}

int gp_optim_load(const uint8_t *data, size_t len, size_t n,
		  struct gp_optim **ret)
{
	struct gp_optim_config cfg;
	struct gp_optim *o = NULL;
	struct gp_rbuf r;
	uint64_t steps, count;
	uint8_t kind;
	int rc;

	if (!data || !ret)
		return -EINVAL;
	if (gp_rbuf_open_blob(data, len, OPTIM_MAGIC, OPTIM_FORMAT, &r) < 0)
		return -EBADMSG;
	if (!gp_rbuf_get_u8(&r, &kind) || kind != OPTIM_ADAMW ||
	    !gp_rbuf_get_f32(&r, &cfg.beta1) ||
	    !gp_rbuf_get_f32(&r, &cfg.beta2) ||
	    !gp_rbuf_get_f32(&r, &cfg.eps) ||
	    !gp_rbuf_get_f32(&r, &cfg.weight_decay) ||
	    !gp_rbuf_get_u64(&r, &steps) || !gp_rbuf_get_u64(&r, &count) ||
	    count != n || !config_ok(&cfg) ||
	    r.left != 2 * (size_t)count * sizeof(float))
		return -EBADMSG;
	if ((rc = gp_optim_create(&cfg, n, &o)) < 0)
		return rc == -EINVAL ? -EBADMSG : rc;
	o->steps = steps;
	if (!gp_rbuf_get_f32s(&r, o->m, n) || !gp_rbuf_get_f32s(&r, o->v, n))
		goto bad;
	for (size_t i = 0; i < n; i++)
		if (!isfinite(o->m[i]) || !isfinite(o->v[i]) || o->v[i] < 0)
			goto bad;
	*ret = o;
	return 0;
bad:
	gp_optim_destroy(o);
	return -EBADMSG;
}
