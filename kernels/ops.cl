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
