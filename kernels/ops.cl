/* The project's own OpenCL kernels: every backend op except GEMM (which is
 * CLBlast's). OpenCL C 1.1 without extensions, so that any device runs them;
 * in particular no doubles (many GPUs have none). Sizes are uint: the host
 * checks that they fit before enqueueing.
 *
 * Reductions are deterministic: each output is summed by one work-item in a
 * fixed order, or in a fixed tree inside a work-group, never with atomics. */

/* x[r][c] += bias[c], then max(x, 0) when relu; one work-item per element. */
__kernel void gp_bias_add(__global float *x, __global const float *bias,
			  uint n, uint cols, int relu)
{
	uint i = get_global_id(0);
	float v;

	if (i >= n)
		return;
	v = x[i] + bias[i % cols];
	x[i] = relu ? fmax(v, 0.0f) : v;
}

/* out[c] = beta * out[c] + sum_r x[r][c]; one work-item per column, so
 * neighbouring work-items read neighbouring addresses. Kahan summation keeps
 * the float sum close to the exact one for tall x. beta == 0 overwrites out
 * without reading it (as BLAS does), so garbage there cannot leak in. */
__kernel void gp_col_sum(__global const float *x, uint rows, uint cols,
			 float beta, __global float *out)
{
	uint c = get_global_id(0);
	float s = 0.0f, comp = 0.0f;

	if (c >= cols)
		return;
	for (uint r = 0; r < rows; r++) {
		float y = x[(size_t)r * cols + c] - comp;
		float t = s + y;

		comp = (t - s) - y;
		s = t;
	}
	out[c] = beta == 0.0f ? s : beta * out[c] + s;
}

__kernel void gp_relu_forward(__global const float *x, __global float *y,
			      uint n)
{
	uint i = get_global_id(0);

	if (i < n)
		y[i] = fmax(x[i], 0.0f);
}

__kernel void gp_relu_backward(__global const float *y,
			       __global const float *dy, __global float *dx,
			       uint n)
{
	uint i = get_global_id(0);

	if (i < n)
		dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

/* One work-item per row of logits. loss[r] = logsumexp(x) - x[label] with
 * the row maximum subtracted first (no overflow for large logits);
 * status[r] = 1 when the first maximum is at the label, 0 when not, -1 when
 * the label is out of range (the host turns that into -EINVAL). When
 * want_grad, dlogits[r][c] = (softmax - onehot) * inv_rows; dlogits may be
 * logits itself: each element is read before it is written. */
__kernel void gp_softmax_xent(__global const float *logits,
			      __global const int *labels, uint rows,
			      uint cols, __global float *dlogits,
			      int want_grad, float inv_rows,
			      __global float *loss, __global int *status)
{
	uint r = get_global_id(0);
	__global const float *x;
	float mx, sum = 0.0f;
	uint best = 0;
	int label;

	if (r >= rows)
		return;
	x = logits + (size_t)r * cols;
	label = labels[r];
	mx = x[0];
	for (uint c = 1; c < cols; c++) {
		if (x[c] > mx) {
			mx = x[c];
			best = c;
		}
	}
	for (uint c = 0; c < cols; c++)
		sum += exp(x[c] - mx);
	if (label < 0 || (uint)label >= cols) {
		loss[r] = 0.0f;
		status[r] = -1;
		label = -1;
	} else {
		loss[r] = log(sum) - (x[label] - mx);
		status[r] = best == (uint)label ? 1 : 0;
	}
	if (want_grad) {
		__global float *d = dlogits + (size_t)r * cols;
		float inv_sum = 1.0f / sum;

		for (uint c = 0; c < cols; c++) {
			float p = exp(x[c] - mx) * inv_sum;

			d[c] = (p - ((int)c == label ? 1.0f : 0.0f)) * inv_rows;
		}
	}
}

/* out[r] = the index of the first maximum of row r. */
__kernel void gp_argmax(__global const float *x, uint rows, uint cols,
			__global int *out)
{
	uint r = get_global_id(0);
	__global const float *row;
	float mx;
	uint best = 0;

	if (r >= rows)
		return;
	row = x + (size_t)r * cols;
	mx = row[0];
	for (uint c = 1; c < cols; c++) {
		if (row[c] > mx) {
			mx = row[c];
			best = c;
		}
	}
	out[r] = (int)best;
}

__kernel void gp_axpy(uint n, float alpha, __global const float *x,
		      __global float *y)
{
	uint i = get_global_id(0);

	if (i < n)
		y[i] += alpha * x[i];
}

__kernel void gp_scale(uint n, float alpha, __global float *x)
{
	uint i = get_global_id(0);

	if (i < n)
		x[i] *= alpha;
}

/* Stage one of sum(x^2): every work-item sums a strided slice (Kahan), then
 * the work-group adds its slices in a fixed tree in local memory and writes
 * one partial sum per group. The host adds the partials in double. The local
 * size is a power of two. */
__kernel void gp_sumsq_partial(__global const float *x, uint n,
			       __global float *partial, __local float *tmp)
{
	uint lid = get_local_id(0);
	uint stride = (uint)get_global_size(0);
	float s = 0.0f, comp = 0.0f;

	for (uint i = (uint)get_global_id(0); i < n; i += stride) {
		float y = x[i] * x[i] - comp;
		float t = s + y;

		comp = (t - s) - y;
		s = t;
	}
	tmp[lid] = s;
	barrier(CLK_LOCAL_MEM_FENCE);
	for (uint off = (uint)get_local_size(0) / 2; off > 0; off >>= 1) {
		if (lid < off)
			tmp[lid] += tmp[lid + off];
		barrier(CLK_LOCAL_MEM_FENCE);
	}
	if (lid == 0)
		partial[get_group_id(0)] = tmp[0];
}

/* v = mu * v + g; p -= lr * v. */
__kernel void gp_sgd_momentum(uint n, float lr, float mu,
			      __global const float *g, __global float *v,
			      __global float *p)
{
	uint i = get_global_id(0);
	float vi;

	if (i >= n)
		return;
	vi = mu * v[i] + g[i];
	v[i] = vi;
	p[i] -= lr * vi;
}

/* ---- convolution and pooling (NCHW, PyTorch's layouts) ----------------
 *
 * Direct kernels, one work-item per element written, so that every sum is
 * taken by one work-item in a fixed order (no atomics): the forward pass
 * per output element, dx per input element (the outputs whose windows
 * cover it), dw per weight (over the batch and the output plane), db per
 * output channel. Shapes as in struct gp_conv2d_shape; the host checks
 * that every count fits in uint. */

/* y[s][o][oy][ox] = b[o] + sum_{ci,ky,kx} x[s][ci][iy][ix] w[o][ci][ky][kx],
 * iy = oy * stride + ky - pad (zero outside). */
__kernel void gp_conv2d_forward(__global const float *x,
				__global const float *w,
				__global const float *b, __global float *y,
				uint n, uint c, uint h, uint wd, uint oc,
				uint kh, uint kw, uint stride, uint pad,
				uint oh, uint ow)
{
	uint i = get_global_id(0), ox, oy, o, s, t;
	float acc;

	if (i >= n * oc * oh * ow)
		return;
	ox = i % ow;
	t = i / ow;
	oy = t % oh;
	t /= oh;
	o = t % oc;
	s = t / oc;
	acc = b[o];
	for (uint ci = 0; ci < c; ci++) {
		__global const float *xp = x + ((size_t)s * c + ci) * h * wd;
		__global const float *wp = w + ((size_t)o * c + ci) * kh * kw;

		for (uint ky = 0; ky < kh; ky++) {
			int iy = (int)(oy * stride + ky) - (int)pad;

			if (iy < 0 || iy >= (int)h)
				continue;
			for (uint kx = 0; kx < kw; kx++) {
				int ix = (int)(ox * stride + kx) - (int)pad;

				if (ix < 0 || ix >= (int)wd)
					continue;
				acc += xp[iy * wd + ix] * wp[ky * kw + kx];
			}
		}
	}
	y[i] = acc;
}

/* dx[s][ci][iy][ix] = sum over the outputs whose window holds (iy, ix). */
__kernel void gp_conv2d_backward_x(__global const float *w,
				   __global const float *dy,
				   __global float *dx, uint n, uint c, uint h,
				   uint wd, uint oc, uint kh, uint kw,
				   uint stride, uint pad, uint oh, uint ow)
{
	uint i = get_global_id(0), ix, iy, ci, s, t;
	float acc = 0.0f;

	if (i >= n * c * h * wd)
		return;
	ix = i % wd;
	t = i / wd;
	iy = t % h;
	t /= h;
	ci = t % c;
	s = t / c;
	for (uint o = 0; o < oc; o++) {
		__global const float *gp = dy + ((size_t)s * oc + o) * oh * ow;
		__global const float *wp = w + ((size_t)o * c + ci) * kh * kw;

		for (uint ky = 0; ky < kh; ky++) {
			int ty = (int)(iy + pad) - (int)ky;
			uint oy;

			if (ty < 0 || ty % (int)stride)
				continue;
			oy = (uint)ty / stride;
			if (oy >= oh)
				continue;
			for (uint kx = 0; kx < kw; kx++) {
				int tx = (int)(ix + pad) - (int)kx;
				uint ox;

				if (tx < 0 || tx % (int)stride)
					continue;
				ox = (uint)tx / stride;
				if (ox >= ow)
					continue;
				acc += gp[oy * ow + ox] * wp[ky * kw + kx];
			}
		}
	}
	dx[i] = acc;
}

/* dw[o][ci][ky][kx] = beta dw + sum_{s,oy,ox} dy[s][o][oy][ox] x[s][ci][iy][ix];
 * beta == 0 overwrites. */
__kernel void gp_conv2d_backward_w(__global const float *x,
				   __global const float *dy,
				   __global float *dw, float beta, uint n,
				   uint c, uint h, uint wd, uint oc, uint kh,
				   uint kw, uint stride, uint pad, uint oh,
				   uint ow)
{
	uint i = get_global_id(0), kx, ky, ci, o, t;
	float acc = 0.0f;

	if (i >= oc * c * kh * kw)
		return;
	kx = i % kw;
	t = i / kw;
	ky = t % kh;
	t /= kh;
	ci = t % c;
	o = t / c;
	for (uint s = 0; s < n; s++) {
		__global const float *xp = x + ((size_t)s * c + ci) * h * wd;
		__global const float *gp = dy + ((size_t)s * oc + o) * oh * ow;

		for (uint oy = 0; oy < oh; oy++) {
			int iy = (int)(oy * stride + ky) - (int)pad;

			if (iy < 0 || iy >= (int)h)
				continue;
			for (uint ox = 0; ox < ow; ox++) {
				int ix = (int)(ox * stride + kx) - (int)pad;

				if (ix < 0 || ix >= (int)wd)
					continue;
				acc += gp[oy * ow + ox] * xp[iy * wd + ix];
			}
		}
	}
	dw[i] = beta == 0.0f ? acc : beta * dw[i] + acc;
}

/* db[o] = beta db + sum_{s,oy,ox} dy[s][o][oy][ox]. */
__kernel void gp_conv2d_backward_b(__global const float *dy,
				   __global float *db, float beta, uint n,
				   uint oc, uint plane)
{
	uint o = get_global_id(0);
	float acc = 0.0f;

	if (o >= oc)
		return;
	for (uint s = 0; s < n; s++) {
		__global const float *gp = dy + ((size_t)s * oc + o) * plane;

		for (uint j = 0; j < plane; j++)
			acc += gp[j];
	}
	db[o] = beta == 0.0f ? acc : beta * db[o] + acc;
}

/* Max (max != 0; idx gets the plane offset of the first maximum) or
 * average pooling over k x k windows, no padding; one work-item per output
 * element. */
__kernel void gp_pool2d_forward(__global const float *x, __global float *y,
				__global int *idx, int max, uint planes,
				uint h, uint wd, uint k, uint stride, uint oh,
				uint ow)
{
	uint i = get_global_id(0), ox, oy, pl, best;
	__global const float *in;
	float acc = 0.0f;

	if (i >= planes * oh * ow)
		return;
	ox = i % ow;
	oy = (i / ow) % oh;
	pl = i / (ow * oh);
	in = x + (size_t)pl * h * wd;
	best = oy * stride * wd + ox * stride;
	for (uint a = 0; a < k; a++) {
		for (uint b = 0; b < k; b++) {
			uint at = (oy * stride + a) * wd + ox * stride + b;

			if (max) {
				if (in[at] > in[best])
					best = at;
			} else {
				acc += in[at];
			}
		}
	}
	if (max) {
		y[i] = in[best];
		idx[i] = (int)best;
	} else {
		y[i] = acc * (1.0f / (float)(k * k));
	}
}

/* dx of pooling: one work-item per input element, summing the outputs whose
 * window holds it (max: those that took it). */
__kernel void gp_pool2d_backward(__global const float *dy,
				 __global const int *idx, __global float *dx,
				 int max, uint planes, uint h, uint wd,
				 uint k, uint stride, uint oh, uint ow)
{
	uint i = get_global_id(0), ix, iy, pl, oy0, ox0, oy1, ox1;
	__global const float *g;
	float acc = 0.0f;

	if (i >= planes * h * wd)
		return;
	ix = i % wd;
	iy = (i / wd) % h;
	pl = i / (wd * h);
	g = dy + (size_t)pl * oh * ow;
	/* Outputs oy with oy * stride <= iy < oy * stride + k. */
	oy0 = iy + 1 > k ? (iy + 1 - k + stride - 1) / stride : 0;
	ox0 = ix + 1 > k ? (ix + 1 - k + stride - 1) / stride : 0;
	oy1 = min(iy / stride, oh - 1);
	ox1 = min(ix / stride, ow - 1);
	for (uint oy = oy0; oy <= oy1 && oy < oh; oy++) {
		for (uint ox = ox0; ox <= ox1 && ox < ow; ox++) {
			uint o = oy * ow + ox;

			if (!max)
				acc += g[o];
			else if (idx[(size_t)pl * oh * ow + o] ==
				 (int)(iy * wd + ix))
				acc += g[o];
		}
	}
	dx[i] = max ? acc : acc * (1.0f / (float)(k * k));
}

/* y[i] += bias[channel of i] over n values of planes of plane values, the
 * channels cycling: a convolution's bias after CLBlast's convgemm. */
__kernel void gp_channel_bias_add(__global float *y,
				  __global const float *bias, uint n,
				  uint plane, uint channels)
{
	uint i = get_global_id(0);

	if (i < n)
		y[i] += bias[(i / plane) % channels];
}
