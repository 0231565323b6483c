/* The kernels of the layers beyond the MLP's: GELU, the dropout mask's
 * product, layer normalisation, mean squared error, token embedding and the
 * softmax step of causal attention (whose GEMMs are CLBlast's). The same
 * rules as ops.cl: OpenCL C 1.1, no doubles, uint sizes checked by the host,
 * every sum in a fixed order (Kahan-compensated in the norms and the
 * losses; plain in the causal softmax, whose rows are at most the context
 * long), never atomics, so a result does not depend on scheduling. */

/* s += v with Kahan compensation in *comp. */
static void kahan_add(float *s, float *comp, float v)
{
	float y = v - *comp;
	float t = *s + y;

	*comp = (t - *s) - y;
	*s = t;
}

/* y = x Phi(x), the exact erf form (PyTorch's nn.GELU()). */
__kernel void gp_gelu_forward(__global const float *x, __global float *y,
			      uint n)
{
	uint i = get_global_id(0);

	if (i < n)
		y[i] = 0.5f * x[i] * (1.0f + erf(x[i] * M_SQRT1_2_F));
}

/* dx = dy (Phi(x) + x phi(x)); dx may be dy. */
__kernel void gp_gelu_backward(__global const float *x,
			       __global const float *dy, __global float *dx,
			       uint n)
{
	uint i = get_global_id(0);
	float v, cdf, pdf;

	if (i >= n)
		return;
	v = x[i];
	cdf = 0.5f * (1.0f + erf(v * M_SQRT1_2_F));
	pdf = 0.3989422804014327f * exp(-0.5f * v * v);
	dx[i] = dy[i] * (cdf + v * pdf);
}

/* y = a b elementwise; y may be a or b. */
__kernel void gp_mul(__global const float *a, __global const float *b,
		     __global float *y, uint n)
{
	uint i = get_global_id(0);

	if (i < n)
		y[i] = a[i] * b[i];
}

/* One work-item per row: the mean, then the biased variance around it
 * (two passes, as the CPU), stats[2 r] = mean, stats[2 r + 1] = 1 / std,
 * y = (x - mean) rstd gamma + beta_p. */
__kernel void gp_layernorm_forward(__global const float *x,
				   __global const float *gamma,
				   __global const float *beta_p,
				   __global float *y, __global float *stats,
				   uint rows, uint cols, float eps)
{
	uint r = get_global_id(0);
	__global const float *row;
	__global float *out;
	float s = 0.0f, comp = 0.0f, m, rstd;

	if (r >= rows)
		return;
	row = x + (size_t)r * cols;
	out = y + (size_t)r * cols;
	for (uint c = 0; c < cols; c++)
		kahan_add(&s, &comp, row[c]);
	m = s / (float)cols;
	s = comp = 0.0f;
	for (uint c = 0; c < cols; c++)
		kahan_add(&s, &comp, (row[c] - m) * (row[c] - m));
	rstd = rsqrt(s / (float)cols + eps);
	stats[2 * r] = m;
	stats[2 * r + 1] = rstd;
	for (uint c = 0; c < cols; c++)
		out[c] = (row[c] - m) * rstd * gamma[c] + beta_p[c];
}

/* One work-item per row: with xhat = (x - mean) rstd and g = dy gamma,
 * dx = rstd (g - mean(g) - xhat mean(g xhat)). */
__kernel void gp_layernorm_backward_x(__global const float *x,
				      __global const float *gamma,
				      __global const float *stats,
				      __global const float *dy,
				      __global float *dx, uint rows,
				      uint cols)
{
	uint r = get_global_id(0);
	__global const float *row, *g;
	__global float *out;
	float m, rstd, sg = 0.0f, cg = 0.0f, sgx = 0.0f, cgx = 0.0f, mg, mgx;

	if (r >= rows)
		return;
	row = x + (size_t)r * cols;
	g = dy + (size_t)r * cols;
	out = dx + (size_t)r * cols;
	m = stats[2 * r];
	rstd = stats[2 * r + 1];
	for (uint c = 0; c < cols; c++) {
		float gg = g[c] * gamma[c];

		kahan_add(&sg, &cg, gg);
		kahan_add(&sgx, &cgx, gg * ((row[c] - m) * rstd));
	}
	mg = sg / (float)cols;
	mgx = sgx / (float)cols;
	for (uint c = 0; c < cols; c++)
		out[c] = rstd * (g[c] * gamma[c] - mg -
				 (row[c] - m) * rstd * mgx);
}

/* One work-item per column: dgamma = beta dgamma + sum_r dy xhat, dbeta_p
 * likewise with sum_r dy (beta == 0 overwrites without reading). */
__kernel void gp_layernorm_backward_p(__global const float *x,
				      __global const float *stats,
				      __global const float *dy,
				      __global float *dgamma,
				      __global float *dbeta_p, float beta,
				      uint rows, uint cols)
{
	uint c = get_global_id(0);
	float sg = 0.0f, cg = 0.0f, sb = 0.0f, cb = 0.0f;

	if (c >= cols)
		return;
	for (uint r = 0; r < rows; r++) {
		size_t i = (size_t)r * cols + c;
		float xhat = (x[i] - stats[2 * r]) * stats[2 * r + 1];

		kahan_add(&sg, &cg, dy[i] * xhat);
		kahan_add(&sb, &cb, dy[i]);
	}
	dgamma[c] = beta == 0.0f ? sg : beta * dgamma[c] + sg;
	dbeta_p[c] = beta == 0.0f ? sb : beta * dbeta_p[c] + sb;
}

/* One work-item per row: loss[r] = sum_c (pred - target)^2 (the host adds
 * the rows in double), and when want_grad dpred = scale (pred - target);
 * dpred may be pred. */
__kernel void gp_mse(__global const float *pred,
		     __global const float *target, __global float *dpred,
		     int want_grad, float scale, uint rows, uint cols,
		     __global float *loss)
{
	uint r = get_global_id(0);
	float s = 0.0f, comp = 0.0f;

	if (r >= rows)
		return;
	for (uint c = 0; c < cols; c++) {
		size_t i = (size_t)r * cols + c;
		float d = pred[i] - target[i];

		kahan_add(&s, &comp, d * d);
		if (want_grad)
			dpred[i] = scale * d;
	}
	loss[r] = s;
}

/* One work-item per element of y (rows x dim): y[r] = weight[tokens[r]].
 * A token that is not a whole number in [0, vocab) (NaN included) gives a
 * zero row and status[r] = -1, which the host turns into -EINVAL; else
 * status[r] = 0. */
__kernel void gp_embedding_forward(__global const float *tokens,
				   __global const float *weight,
				   __global float *y, __global int *status,
				   uint rows, uint vocab, uint dim)
{
	uint i = get_global_id(0);
	uint r, d;
	float v;
	int ok;

	if (i >= rows * dim)
		return;
	r = i / dim;
	d = i % dim;
	v = tokens[r];
	ok = v >= 0.0f && v < (float)vocab && v == floor(v);
	y[i] = ok ? weight[(size_t)v * dim + d] : 0.0f;
	if (d == 0)
		status[r] = ok ? 0 : -1;
}

/* One work-item per column d of the table: dweight = beta dweight, then
 * each row r in order adds dy[r] into row tokens[r], so repeated tokens sum
 * in the same order as on the CPU and no two work-items touch one
 * element. A token the forward pass refused (not a whole number in
 * [0, vocab)) adds nothing: the host never gets here with one, and the
 * kernel does not write outside the table if it did. */
__kernel void gp_embedding_backward(__global const float *tokens,
				    __global const float *dy,
				    __global float *dweight, float beta,
				    uint rows, uint vocab, uint dim)
{
	uint d = get_global_id(0);

	if (d >= dim)
		return;
	for (uint v = 0; v < vocab; v++) {
		size_t i = (size_t)v * dim + d;

		dweight[i] = beta == 0.0f ? 0.0f : beta * dweight[i];
	}
	for (uint r = 0; r < rows; r++) {
		float v = tokens[r];

		if (v >= 0.0f && v < (float)vocab && v == floor(v))
			dweight[(size_t)v * dim + d] += dy[(size_t)r * dim + d];
	}
}

/* One work-item per row of the n heads t x t score matrices: row i (its
 * position in its matrix) keeps a softmax over columns 0..i and zeroes the
 * future ones. */
__kernel void gp_causal_softmax(__global float *p, uint nrows, uint t)
{
	uint g = get_global_id(0);
	__global float *row;
	uint len;
	float mx, sum = 0.0f, inv;

	if (g >= nrows)
		return;
	row = p + (size_t)g * t;
	len = g % t + 1;
	mx = row[0];
	for (uint j = 1; j < len; j++)
		mx = fmax(mx, row[j]);
	for (uint j = 0; j < len; j++) {
		row[j] = exp(row[j] - mx);
		sum += row[j];
	}
	inv = 1.0f / sum;
	for (uint j = 0; j < len; j++)
		row[j] *= inv;
	for (uint j = len; j < t; j++)
		row[j] = 0.0f;
}

/* The softmax's backward pass in place, row by row as above: from
 * dP, dS = P (dP - rowsum(P dP)), zero above the diagonal. */
__kernel void gp_causal_softmax_backward(__global const float *p,
					 __global float *ds, uint nrows,
					 uint t)
{
	uint g = get_global_id(0);
	__global const float *prow;
	__global float *row;
	uint len;
	float dot = 0.0f;

	if (g >= nrows)
		return;
	prow = p + (size_t)g * t;
	row = ds + (size_t)g * t;
	len = g % t + 1;
	for (uint j = 0; j < len; j++)
		dot += prow[j] * row[j];
	for (uint j = 0; j < len; j++)
		row[j] = prow[j] * (row[j] - dot);
	for (uint j = len; j < t; j++)
		row[j] = 0.0f;
}

/* Group norm (nn.GroupNorm) of rows = n * groups rows, each a sample's
 * group of cpg channels of hw values, consecutive in NCHW. One work-item
 * per row: mean, then the biased variance around it (Kahan sums), stats
 * as layer norm's, and y = xhat gamma[channel] + beta_p[channel]. */
__kernel void gp_groupnorm_forward(__global const float *x,
				   __global const float *gamma,
				   __global const float *beta_p,
				   __global float *y, __global float *stats,
				   uint rows, uint cpg, uint hw, uint groups,
				   float eps)
{
	uint r = get_global_id(0);
	uint len = cpg * hw, ch0;
	__global const float *row;
	__global float *out;
	float s = 0.0f, comp = 0.0f, m, rstd;

	if (r >= rows)
		return;
	row = x + (size_t)r * len;
	out = y + (size_t)r * len;
	ch0 = (r % groups) * cpg;
	for (uint i = 0; i < len; i++)
		kahan_add(&s, &comp, row[i]);
	m = s / (float)len;
	s = comp = 0.0f;
	for (uint i = 0; i < len; i++)
		kahan_add(&s, &comp, (row[i] - m) * (row[i] - m));
	rstd = rsqrt(s / (float)len + eps);
	stats[2 * r] = m;
	stats[2 * r + 1] = rstd;
	for (uint i = 0; i < len; i++) {
		uint ch = ch0 + i / hw;

		out[i] = (row[i] - m) * rstd * gamma[ch] + beta_p[ch];
	}
}

/* One work-item per row, g = dy gamma[channel]:
 * dx = rstd (g - mean(g) - xhat mean(g xhat)). */
__kernel void gp_groupnorm_backward_x(__global const float *x,
				      __global const float *gamma,
				      __global const float *stats,
				      __global const float *dy,
				      __global float *dx, uint rows, uint cpg,
				      uint hw, uint groups)
{
	uint r = get_global_id(0);
	uint len = cpg * hw, ch0;
	__global const float *row, *g;
	__global float *out;
	float m, rstd, sg = 0.0f, cg = 0.0f, sgx = 0.0f, cgx = 0.0f, mg, mgx;

	if (r >= rows)
		return;
	row = x + (size_t)r * len;
	g = dy + (size_t)r * len;
	out = dx + (size_t)r * len;
	ch0 = (r % groups) * cpg;
	m = stats[2 * r];
	rstd = stats[2 * r + 1];
	for (uint i = 0; i < len; i++) {
		float gg = g[i] * gamma[ch0 + i / hw];

		kahan_add(&sg, &cg, gg);
		kahan_add(&sgx, &cgx, gg * ((row[i] - m) * rstd));
	}
	mg = sg / (float)len;
	mgx = sgx / (float)len;
	for (uint i = 0; i < len; i++)
		out[i] = rstd * (g[i] * gamma[ch0 + i / hw] - mg -
				 (row[i] - m) * rstd * mgx);
}

/* One work-item per channel k of c: over every sample's hw values of
 * channel k in order, dgamma[k] = beta dgamma[k] + sum dy xhat and
 * dbeta_p[k] likewise with sum dy (beta == 0 overwrites). */
__kernel void gp_groupnorm_backward_p(__global const float *x,
				      __global const float *stats,
				      __global const float *dy,
				      __global float *dgamma,
				      __global float *dbeta_p, float beta,
				      uint n, uint c, uint hw, uint groups)
{
	uint k = get_global_id(0);
	float sg = 0.0f, cg = 0.0f, sb = 0.0f, cb = 0.0f;
	uint cpg;

	if (k >= c)
		return;
	cpg = c / groups;
	for (uint b = 0; b < n; b++) {
		uint r = b * groups + k / cpg;
		float m = stats[2 * r], rstd = stats[2 * r + 1];
		size_t base = ((size_t)b * c + k) * hw;

		for (uint i = 0; i < hw; i++) {
			float v = dy[base + i];

			kahan_add(&sg, &cg, v * ((x[base + i] - m) * rstd));
			kahan_add(&sb, &cb, v);
		}
	}
	dgamma[k] = beta == 0.0f ? sg : beta * dgamma[k] + sg;
	dbeta_p[k] = beta == 0.0f ? sb : beta * dbeta_p[k] + sb;
}
