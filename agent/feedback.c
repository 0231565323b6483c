/* Error feedback for quantised updates: see feedback.h. */
#include "feedback.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"

int gp_feedback_init(struct gp_feedback *fb, size_t n)
{
	memset(fb, 0, sizeof(*fb));
	if (n == 0)
		return 0;
	fb->err = calloc(n, sizeof(float));
	fb->send = calloc(n, sizeof(float));
	if (!fb->err || !fb->send) {
		gp_feedback_finish(fb);
		return -ENOMEM;
	}
	fb->n = n;
	return 0;
}

int gp_feedback_grow(struct gp_feedback *fb, size_t n)
{
	float *err, *send;

	if (n <= fb->n)
		return 0;
	if (fb->n == 0) {
		gp_feedback_finish(fb);
		return gp_feedback_init(fb, n);
	}
	/* send holds nothing between updates: no copy needed. */
	send = calloc(n, sizeof(float));
	err = send ? realloc(fb->err, n * sizeof(float)) : NULL;
	if (!err) {
		free(send);
		return -ENOMEM;
	}
	memset(err + fb->n, 0, (n - fb->n) * sizeof(float));
	free(fb->send);
	fb->err = err;
	fb->send = send;
	fb->n = n;
	return 0;
}

void gp_feedback_finish(struct gp_feedback *fb)
{
	if (!fb)
		return;
	free(fb->err);
	free(fb->send);
	memset(fb, 0, sizeof(*fb));
}

void gp_feedback_reset(struct gp_feedback *fb)
{
	if (fb->err)
		memset(fb->err, 0, fb->n * sizeof(float));
}

bool gp_feedback_finite(const float *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(v[i]))
			return false;
	return true;
}

int gp_feedback_block(struct gp_feedback *fb, size_t off, const float *v,
		      size_t count, uint8_t dtype, const float **ret_send)
{
	float *x, *e;

	if (off > fb->n || count > fb->n - off ||
	    (dtype != GP_DTYPE_Q8 && dtype != GP_DTYPE_Q4))
		return -EINVAL;
	x = fb->send + off;
	e = fb->err + off;
	for (size_t i = 0; i < count; i++)
		x[i] = v[i] + e[i];
	/* e becomes what the coordinator will decode, then what it misses. */
	if (dtype == GP_DTYPE_Q4)
		gp_msg_q4_round(x, e, count);
	else
		gp_msg_q8_round(x, e, count);
	for (size_t i = 0; i < count; i++)
		e[i] = x[i] - e[i];
	*ret_send = x;
	return 0;
}
