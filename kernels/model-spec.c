/* Model specs: the shorthand ("784-256-128-10") and the model description
 * format ("gradpool-model 1", docs/models.md), parsed into one layer graph,
 * shapes inferred and checked, and written back in canonical form. Plain
 * C, no allocation: the text may come from a file, a job or the wire. */
#include "model.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void set_err(char *err, size_t err_len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
	va_list ap;

	if (!err || err_len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

static const char *const type_names[] = {
	[GP_LAYER_INPUT] = "input",
	[GP_LAYER_DENSE] = "dense",
	[GP_LAYER_CONV2D] = "conv2d",
	[GP_LAYER_MAXPOOL2D] = "maxpool2d",
	[GP_LAYER_AVGPOOL2D] = "avgpool2d",
	[GP_LAYER_FLATTEN] = "flatten",
	[GP_LAYER_RELU] = "relu",
	[GP_LAYER_GELU] = "gelu",
	[GP_LAYER_DROPOUT] = "dropout",
	[GP_LAYER_LAYERNORM] = "layernorm",
	[GP_LAYER_ADD] = "add",
	[GP_LAYER_SOFTMAX_XENT] = "softmax_xent",
	[GP_LAYER_MSE] = "mse",
	[GP_LAYER_EMBEDDING] = "embedding",
	[GP_LAYER_POSEMBED] = "posembed",
	[GP_LAYER_LINEAR] = "linear",
	[GP_LAYER_ATTENTION] = "attention",
	[GP_LAYER_SEQ_XENT] = "seq_xent",
	[GP_LAYER_GROUPNORM] = "groupnorm",
};

#define N_TYPES (sizeof(type_names) / sizeof(type_names[0]))

const char *gp_model_layer_type_name(enum gp_layer_type t)
{
	return (size_t)t < N_TYPES ? type_names[t] : "unknown";
}

static bool is_loss(enum gp_layer_type t)
{
	return t == GP_LAYER_SOFTMAX_XENT || t == GP_LAYER_MSE ||
	       t == GP_LAYER_SEQ_XENT;
}

/* Whether a layer type has parameters. */
static bool has_params(enum gp_layer_type t)
{
	return t == GP_LAYER_DENSE || t == GP_LAYER_CONV2D ||
	       t == GP_LAYER_LAYERNORM || t == GP_LAYER_GROUPNORM ||
	       t == GP_LAYER_EMBEDDING ||
	       t == GP_LAYER_POSEMBED || t == GP_LAYER_LINEAR;
}

static uint64_t layer_size(const struct gp_model_layer *l)
{
	return (uint64_t)l->c * l->h * l->w;
}

/* Parses the shorthand into dims, then expands it into the graph. */
static int parse_shorthand(const char *text, struct gp_model_spec *spec,
			   char *err, size_t err_len)
{
	const char *p = text;
	size_t n = 0;

	for (;;) {
		uint64_t v = 0;
		const char *start = p;

		while (*p >= '0' && *p <= '9') {
			v = v * 10 + (uint64_t)(*p - '0');
			if (v > GP_MODEL_MAX_WIDTH)
				break;
			p++;
		}
		if (*p >= '0' && *p <= '9') {
			set_err(err, err_len,
				"model spec \"%.64s\": width %zu is larger than "
				"%d",
				text, n + 1, GP_MODEL_MAX_WIDTH);
			return -EINVAL;
		}
		if (p == start) {
			set_err(err, err_len,
				"model spec \"%.64s\": expected a width at "
				"offset %zu",
				text, (size_t)(p - text));
			return -EINVAL;
		}
		if (v == 0) {
			set_err(err, err_len,
				"model spec \"%.64s\": width %zu is zero", text,
				n + 1);
			return -EINVAL;
		}
		if (n > GP_MODEL_MAX_LAYERS) {
			set_err(err, err_len,
				"model spec \"%.64s\": more than %d layers",
				text, GP_MODEL_MAX_LAYERS);
			return -EINVAL;
		}
		spec->dims[n++] = (uint32_t)v;
		if (*p == '\0')
			break;
		if (*p != '-') {
			set_err(err, err_len,
				"model spec \"%.64s\": unexpected character "
				"'%c' at offset %zu",
				text, *p, (size_t)(p - text));
			return -EINVAL;
		}
		p++;
	}
	if (n < 2) {
		set_err(err, err_len,
			"model spec \"%.64s\": needs inputs and classes "
			"(at least two widths)",
			text);
		return -EINVAL;
	}
	if (spec->dims[n - 1] < 2) {
		set_err(err, err_len,
			"model spec \"%.64s\": needs at least two classes",
			text);
		return -EINVAL;
	}
	spec->n_layers = n - 1;
	spec->version = 0;
	/* input, (dense, relu) per hidden layer, dense, softmax_xent */
	{
		struct gp_model_layer *ls = spec->layers;
		size_t k = 0;

		ls[k].type = GP_LAYER_INPUT;
		snprintf(ls[k].name, sizeof(ls[k].name), "input");
		ls[k].c = ls[k].h = 1;
		ls[k].w = spec->dims[0];
		k++;
		for (size_t l = 1; l <= spec->n_layers; l++) {
			ls[k].type = GP_LAYER_DENSE;
			snprintf(ls[k].name, sizeof(ls[k].name), "fc%zu", l);
			ls[k].n_in = 1;
			ls[k].in[0] = (uint32_t)(k - 1);
			ls[k].out = spec->dims[l];
			ls[k].c = ls[k].h = 1;
			ls[k].w = spec->dims[l];
			k++;
			if (l == spec->n_layers)
				break;
			ls[k].type = GP_LAYER_RELU;
			snprintf(ls[k].name, sizeof(ls[k].name), "relu%zu", l);
			ls[k].n_in = 1;
			ls[k].in[0] = (uint32_t)(k - 1);
			ls[k].c = ls[k].h = 1;
			ls[k].w = spec->dims[l];
			k++;
		}
		ls[k].type = GP_LAYER_SOFTMAX_XENT;
		snprintf(ls[k].name, sizeof(ls[k].name), "loss");
		ls[k].n_in = 1;
		ls[k].in[0] = (uint32_t)(k - 1);
		ls[k].c = ls[k].h = ls[k].w = 1;
		k++;
		spec->n_nodes = k;
	}
	return 0;
}

/* Parses a decimal uint32 in [lo, hi]. */
static bool parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *ret)
{
	char *end;
	unsigned long v;

	if (!isdigit((unsigned char)*s))
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return false;
	*ret = (uint32_t)v;
	return true;
}

static int find_layer(const struct gp_model_spec *spec, size_t upto,
		      const char *name)
{
	for (size_t i = 0; i < upto; i++)
		if (strcmp(spec->layers[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* Splits s in place into blank-separated words. */
static size_t split_words(char *s, char **words, size_t max)
{
	size_t n = 0;

	for (;;) {
		while (*s == ' ' || *s == '\t' || *s == '\r')
			s++;
		if (!*s)
			return n;
		if (n == max)
			return max + 1;
		words[n++] = s;
		while (*s && *s != ' ' && *s != '\t' && *s != '\r')
			s++;
		if (*s)
			*s++ = '\0';
	}
}

#define MAX_WORDS 12

/* The shapes of the language model's layers: a sequence is 1 x T x W, T
 * positions of W features each. */
static int infer_seq_shape(struct gp_model_layer *l,
			   const struct gp_model_layer *a, char *why,
			   size_t why_len)
{
	switch (l->type) {
	case GP_LAYER_EMBEDDING:
		if (a->c != 1 || a->h != 1) {
			set_err(why, why_len,
				"takes a flat sequence of token ids (shape=T), "
				"not %ux%ux%u",
				a->c, a->h, a->w);
			return -EINVAL;
		}
		l->c = 1;
		l->h = a->w;
		l->w = l->out;
		return 0;
	case GP_LAYER_LINEAR:
		l->c = a->c;
		l->h = a->h;
		l->w = l->out;
		return 0;
	case GP_LAYER_POSEMBED:
		if (a->c != 1) {
			set_err(why, why_len,
				"takes a sequence (1xTxW), not %ux%ux%u", a->c,
				a->h, a->w);
			return -EINVAL;
		}
		l->c = 1;
		l->h = a->h;
		l->w = a->w;
		return 0;
	case GP_LAYER_ATTENTION:
		if (a->c != 1 || a->w % 3 != 0 || (a->w / 3) % l->heads != 0) {
			set_err(why, why_len,
				"takes q, k and v side by side (1xTx(3 D), D a "
				"multiple of heads=%u), not %ux%ux%u",
				l->heads, a->c, a->h, a->w);
			return -EINVAL;
		}
		if ((uint64_t)a->h * a->h > GP_MODEL_MAX_SIZE) {
			set_err(why, why_len, "sequence of %u is too long",
				a->h);
			return -EINVAL;
		}
		l->c = 1;
		l->h = a->h;
		l->w = a->w / 3;
		return 0;
	case GP_LAYER_SEQ_XENT:
		if (a->c != 1 || a->w < 2) {
			set_err(why, why_len,
				"takes logits 1xTxV with V at least 2, not "
				"%ux%ux%u",
				a->c, a->h, a->w);
			return -EINVAL;
		}
		l->c = l->h = l->w = 1;
		return 0;
	default:
		return -EINVAL;
	}
}

/* Fills in the output shape of layer i from its inputs, and checks them. */
static int infer_shape(struct gp_model_spec *spec, size_t i, char *why,
		       size_t why_len)
{
	struct gp_model_layer *l = &spec->layers[i];
	const struct gp_model_layer *a = &spec->layers[l->in[0]];
	const struct gp_model_layer *b =
		l->n_in > 1 ? &spec->layers[l->in[1]] : NULL;

	if (is_loss(a->type)) {
		set_err(why, why_len, "takes the loss \"%s\" as input",
			a->name);
		return -EINVAL;
	}
	if (b && is_loss(b->type)) {
		set_err(why, why_len, "takes the loss \"%s\" as input",
			b->name);
		return -EINVAL;
	}
	switch (l->type) {
	case GP_LAYER_INPUT:
		return 0;
	case GP_LAYER_DENSE:
		l->c = l->h = 1;
		l->w = l->out;
		if (layer_size(a) > GP_MODEL_MAX_WIDTH * 16u) {
			set_err(why, why_len, "input of %llu units is too wide",
				(unsigned long long)layer_size(a));
			return -EINVAL;
		}
		return 0;
	case GP_LAYER_CONV2D: {
		uint32_t hp = a->h + 2 * l->pad, wp = a->w + 2 * l->pad;

		if (hp < l->kernel || wp < l->kernel) {
			set_err(why, why_len,
				"kernel %u is larger than the padded input "
				"%ux%u",
				l->kernel, hp, wp);
			return -EINVAL;
		}
		l->c = l->out;
		l->h = (hp - l->kernel) / l->stride + 1;
		l->w = (wp - l->kernel) / l->stride + 1;
		return 0;
	}
	case GP_LAYER_MAXPOOL2D:
	case GP_LAYER_AVGPOOL2D:
		if (a->h < l->kernel || a->w < l->kernel) {
			set_err(why, why_len,
				"kernel %u is larger than the input %ux%u",
				l->kernel, a->h, a->w);
			return -EINVAL;
		}
		l->c = a->c;
		l->h = (a->h - l->kernel) / l->stride + 1;
		l->w = (a->w - l->kernel) / l->stride + 1;
		return 0;
	case GP_LAYER_FLATTEN:
		l->c = l->h = 1;
		l->w = (uint32_t)layer_size(a);
		return 0;
	case GP_LAYER_ADD:
		if (a->c != b->c || a->h != b->h || a->w != b->w) {
			set_err(why, why_len,
				"inputs \"%s\" (%ux%ux%u) and \"%s\" (%ux%ux%u) "
				"differ in shape",
				a->name, a->c, a->h, a->w, b->name, b->c, b->h,
				b->w);
			return -EINVAL;
		}
		/* fall through */
	case GP_LAYER_RELU:
	case GP_LAYER_GELU:
	case GP_LAYER_DROPOUT:
	case GP_LAYER_LAYERNORM:
		l->c = a->c;
		l->h = a->h;
		l->w = a->w;
		return 0;
	case GP_LAYER_GROUPNORM:
		/* Channels are C of C x H x W; a flat value is 1 x 1 x W,
		 * whose one channel would make the norm a layer norm with a
		 * single weight, which nn.GroupNorm on (N, W) is not. */
		if (a->c == 1 && a->h == 1) {
			set_err(why, why_len,
				"takes a CxHxW value (after conv2d or "
				"pooling), not the flat %u; use layernorm",
				a->w);
			return -EINVAL;
		}
		if (a->c % l->groups != 0) {
			set_err(why, why_len,
				"groups=%u does not divide the %u channels",
				l->groups, a->c);
			return -EINVAL;
		}
		l->c = a->c;
		l->h = a->h;
		l->w = a->w;
		return 0;
	case GP_LAYER_SOFTMAX_XENT:
		if (layer_size(a) < 2) {
			set_err(why, why_len, "needs at least two classes");
			return -EINVAL;
		}
		/* fall through */
	case GP_LAYER_MSE:
		l->c = l->h = l->w = 1;
		return 0;
	default:
		return infer_seq_shape(l, a, why, why_len);
	}
	return -EINVAL;
}

/* Parses one layer line (already split into words) as layer i. */
static int parse_layer(struct gp_model_spec *spec, size_t i, char **words,
		       size_t n, char *why, size_t why_len)
{
	struct gp_model_layer *l = &spec->layers[i];
	size_t t, first = 2;
	bool has_out = false, has_kernel = false, has_shape = false;

	memset(l, 0, sizeof(*l));
	for (t = 0; t < N_TYPES; t++)
		if (strcmp(words[0], type_names[t]) == 0)
			break;
	if (t == N_TYPES) {
		set_err(why, why_len, "unknown layer type \"%s\"", words[0]);
		return -EINVAL;
	}
	l->type = (enum gp_layer_type)t;
	if ((i == 0) != (l->type == GP_LAYER_INPUT)) {
		set_err(why, why_len, i == 0 ? "the first layer must be input"
					     : "only the first layer is input");
		return -EINVAL;
	}
	if (l->type == GP_LAYER_INPUT) {
		snprintf(l->name, sizeof(l->name), "input");
		first = 1;
	} else {
		const char *nm = words[1];
		size_t len;

		if (n < 2) {
			set_err(why, why_len, "%s needs a name", words[0]);
			return -EINVAL;
		}
		len = strlen(nm);
		if (len == 0 || len >= GP_MODEL_NAME_MAX ||
		    strchr(nm, '=') || !isalpha((unsigned char)nm[0])) {
			set_err(why, why_len,
				"bad layer name \"%.32s\" (a letter, then "
				"letters, digits, '_' or '-', at most %d)",
				nm, GP_MODEL_NAME_MAX - 1);
			return -EINVAL;
		}
		for (size_t k = 0; k < len; k++) {
			if (!isalnum((unsigned char)nm[k]) && nm[k] != '_' &&
			    nm[k] != '-') {
				set_err(why, why_len,
					"bad character '%c' in layer name "
					"\"%s\"",
					nm[k], nm);
				return -EINVAL;
			}
		}
		if (strcmp(nm, "input") == 0 || find_layer(spec, i, nm) >= 0) {
			set_err(why, why_len, "layer name \"%s\" is taken",
				nm);
			return -EINVAL;
		}
		memcpy(l->name, nm, len + 1);
		l->n_in = 1;
		l->in[0] = (uint32_t)(i - 1);
	}
	l->stride = 0;
	l->eps = 1e-5f;
	for (size_t k = first; k < n; k++) {
		char *key = words[k], *val = strchr(words[k], '=');
		bool ok = true;

		if (!val) {
			set_err(why, why_len, "expected key=value, got \"%s\"",
				key);
			return -EINVAL;
		}
		*val++ = '\0';
		if (strcmp(key, "in") == 0 && l->type != GP_LAYER_INPUT) {
			char *comma = strchr(val, ',');
			size_t want = l->type == GP_LAYER_ADD ? 2 : 1;
			char *names[2] = { val, NULL };
			size_t got = 1;

			if (comma) {
				*comma = '\0';
				names[1] = comma + 1;
				got = 2;
			}
			if (got != want) {
				set_err(why, why_len, "%s takes %zu input%s",
					type_names[t], want,
					want > 1 ? "s" : "");
				return -EINVAL;
			}
			for (size_t j = 0; j < got; j++) {
				int at = find_layer(spec, i, names[j]);

				if (at < 0) {
					set_err(why, why_len,
						"input \"%s\" is not an earlier "
						"layer",
						names[j]);
					return -EINVAL;
				}
				l->in[j] = (uint32_t)at;
			}
			l->n_in = (uint32_t)got;
		} else if (strcmp(key, "shape") == 0 &&
			   l->type == GP_LAYER_INPUT) {
			uint32_t d[3];
			size_t nd = 0;
			char *p = val;

			while (nd < 3) {
				char *x = strchr(p, 'x');

				if (x)
					*x = '\0';
				if (!parse_u32(p, 1, GP_MODEL_MAX_WIDTH, &d[nd]))
					ok = false;
				nd++;
				if (!x)
					break;
				p = x + 1;
				if (nd == 3)
					ok = false;
			}
			if (nd == 2)
				ok = false;
			if (!ok) {
				set_err(why, why_len,
					"shape is W or CxHxW, each 1 to %d",
					GP_MODEL_MAX_WIDTH);
				return -EINVAL;
			}
			if (nd == 1) {
				l->c = l->h = 1;
				l->w = d[0];
			} else {
				l->c = d[0];
				l->h = d[1];
				l->w = d[2];
			}
			has_shape = true;
		} else if (strcmp(key, "out") == 0 &&
			   (l->type == GP_LAYER_DENSE ||
			    l->type == GP_LAYER_CONV2D ||
			    l->type == GP_LAYER_LINEAR)) {
			ok = parse_u32(val, 1, GP_MODEL_MAX_WIDTH, &l->out);
			has_out = true;
		} else if (strcmp(key, "kernel") == 0 &&
			   (l->type == GP_LAYER_CONV2D ||
			    l->type == GP_LAYER_MAXPOOL2D ||
			    l->type == GP_LAYER_AVGPOOL2D)) {
			ok = parse_u32(val, 1, 64, &l->kernel);
			has_kernel = true;
		} else if (strcmp(key, "stride") == 0 &&
			   (l->type == GP_LAYER_CONV2D ||
			    l->type == GP_LAYER_MAXPOOL2D ||
			    l->type == GP_LAYER_AVGPOOL2D)) {
			ok = parse_u32(val, 1, 64, &l->stride);
		} else if (strcmp(key, "padding") == 0 &&
			   l->type == GP_LAYER_CONV2D) {
			ok = parse_u32(val, 0, 64, &l->pad);
		} else if (strcmp(key, "dim") == 0 &&
			   l->type == GP_LAYER_EMBEDDING) {
			ok = parse_u32(val, 1, GP_MODEL_MAX_WIDTH, &l->out);
			has_out = true;
		} else if (strcmp(key, "vocab") == 0 &&
			   l->type == GP_LAYER_EMBEDDING) {
			ok = parse_u32(val, 2, GP_MODEL_MAX_WIDTH, &l->vocab);
		} else if (strcmp(key, "heads") == 0 &&
			   l->type == GP_LAYER_ATTENTION) {
			ok = parse_u32(val, 1, 1024, &l->heads);
		} else if (strcmp(key, "p") == 0 &&
			   l->type == GP_LAYER_DROPOUT) {
			char *end;

			l->p = strtof(val, &end);
			ok = end != val && !*end && l->p >= 0.0f && l->p < 1.0f;
		} else if (strcmp(key, "groups") == 0 &&
			   l->type == GP_LAYER_GROUPNORM) {
			ok = parse_u32(val, 1, GP_MODEL_MAX_WIDTH, &l->groups);
		} else if (strcmp(key, "eps") == 0 &&
			   (l->type == GP_LAYER_LAYERNORM ||
			    l->type == GP_LAYER_GROUPNORM)) {
			char *end;

			l->eps = strtof(val, &end);
			ok = end != val && !*end && l->eps > 0.0f &&
			     l->eps < 1.0f;
		} else {
			set_err(why, why_len, "%s has no parameter \"%s\"",
				type_names[t], key);
			return -EINVAL;
		}
		if (!ok) {
			set_err(why, why_len, "bad value \"%s\" for %s", val,
				key);
			return -EINVAL;
		}
	}
	if (l->type == GP_LAYER_INPUT && !has_shape) {
		set_err(why, why_len, "input needs shape=W or shape=CxHxW");
		return -EINVAL;
	}
	if ((l->type == GP_LAYER_DENSE || l->type == GP_LAYER_CONV2D ||
	     l->type == GP_LAYER_LINEAR) &&
	    !has_out) {
		set_err(why, why_len, "%s needs out=N", type_names[t]);
		return -EINVAL;
	}
	if (l->type == GP_LAYER_EMBEDDING && (!has_out || !l->vocab)) {
		set_err(why, why_len, "embedding needs vocab=V and dim=D");
		return -EINVAL;
	}
	if (l->type == GP_LAYER_GROUPNORM && !l->groups) {
		set_err(why, why_len, "groupnorm needs groups=G");
		return -EINVAL;
	}
	if (l->type == GP_LAYER_ATTENTION && !l->heads) {
		set_err(why, why_len, "attention needs heads=H");
		return -EINVAL;
	}
	if ((l->type == GP_LAYER_CONV2D || l->type == GP_LAYER_MAXPOOL2D ||
	     l->type == GP_LAYER_AVGPOOL2D) &&
	    !has_kernel) {
		set_err(why, why_len, "%s needs kernel=K", type_names[t]);
		return -EINVAL;
	}
	if (l->type == GP_LAYER_ADD && l->n_in != 2) {
		set_err(why, why_len, "add needs in=A,B");
		return -EINVAL;
	}
	if (l->stride == 0)
		l->stride = l->type == GP_LAYER_CONV2D ? 1 : l->kernel;
	if (l->type == GP_LAYER_INPUT)
		return 0;
	if (infer_shape(spec, i, why, why_len) < 0)
		return -EINVAL;
	if (layer_size(l) > GP_MODEL_MAX_SIZE) {
		set_err(why, why_len, "output of %llu elements is too large",
			(unsigned long long)layer_size(l));
		return -EINVAL;
	}
	return 0;
}

static int parse_description(const char *text, struct gp_model_spec *spec,
			     char *err, size_t err_len)
{
	char line[512], why[160];
	const char *p = text;
	size_t lineno = 0, n = 0;
	bool header = false;

	while (*p) {
		size_t len = strcspn(p, "\n;");
		char *words[MAX_WORDS + 1];
		size_t nw;
		char *hash;

		lineno += 1;
		if (len >= sizeof(line)) {
			set_err(err, err_len,
				"model description, line %zu: longer than %zu "
				"bytes",
				lineno, sizeof(line) - 1);
			return -EINVAL;
		}
		memcpy(line, p, len);
		line[len] = '\0';
		p += len;
		if (*p)
			p++;
		if ((hash = strchr(line, '#')))
			*hash = '\0';
		nw = split_words(line, words, MAX_WORDS);
		if (nw == 0)
			continue;
		if (nw > MAX_WORDS) {
			set_err(err, err_len,
				"model description, line %zu: too many words",
				lineno);
			return -EINVAL;
		}
		if (!header) {
			uint32_t v;

			if (nw != 2 || strcmp(words[0], "gradpool-model") != 0 ||
			    !parse_u32(words[1], 1, UINT32_MAX, &v)) {
				set_err(err, err_len,
					"model description, line %zu: expected "
					"\"gradpool-model %d\"",
					lineno, GP_MODEL_FORMAT_VERSION);
				return -EINVAL;
			}
			if (v != GP_MODEL_FORMAT_VERSION) {
				set_err(err, err_len,
					"model description: version %u is not "
					"supported (this build reads %d)",
					v, GP_MODEL_FORMAT_VERSION);
				return -EINVAL;
			}
			spec->version = v;
			header = true;
			continue;
		}
		if (n == GP_MODEL_MAX_NODES) {
			set_err(err, err_len,
				"model description, line %zu: more than %d "
				"layers",
				lineno, GP_MODEL_MAX_NODES);
			return -EINVAL;
		}
		if (n > 0 && is_loss(spec->layers[n - 1].type)) {
			set_err(err, err_len,
				"model description, line %zu: the loss must be "
				"the last layer",
				lineno);
			return -EINVAL;
		}
		if (parse_layer(spec, n, words, nw, why, sizeof(why)) < 0) {
			set_err(err, err_len,
				"model description, line %zu (%s): %s", lineno,
				n > 0 ? spec->layers[n].name : "input", why);
			return -EINVAL;
		}
		n++;
	}
	if (!header || n == 0) {
		set_err(err, err_len, "model description: no layers");
		return -EINVAL;
	}
	if (!is_loss(spec->layers[n - 1].type)) {
		set_err(err, err_len,
			"model description: the last layer must be a loss "
			"(softmax_xent, seq_xent or mse)");
		return -EINVAL;
	}
	for (size_t i = 0; i + 1 < n; i++) {
		bool used = false;

		for (size_t j = i + 1; j < n && !used; j++)
			for (size_t k = 0; k < spec->layers[j].n_in; k++)
				used |= spec->layers[j].in[k] == i;
		if (!used) {
			set_err(err, err_len,
				"model description: the output of \"%s\" is "
				"never used",
				spec->layers[i].name);
			return -EINVAL;
		}
	}
	{
		size_t params = 0;

		for (size_t i = 0; i < n; i++)
			params += has_params(spec->layers[i].type);
		if (params == 0) {
			set_err(err, err_len,
				"model description: no layer with parameters");
			return -EINVAL;
		}
	}
	spec->n_nodes = n;
	spec->n_layers = 1;
	spec->dims[0] = (uint32_t)layer_size(&spec->layers[0]);
	spec->dims[1] =
		(uint32_t)layer_size(&spec->layers[spec->layers[n - 1].in[0]]);
	/* A language model's classes are its vocabulary. */
	if (spec->layers[n - 1].type == GP_LAYER_SEQ_XENT)
		spec->dims[1] = spec->layers[spec->layers[n - 1].in[0]].w;
	if (spec->dims[0] > GP_MODEL_MAX_SIZE) {
		set_err(err, err_len, "model description: input too large");
		return -EINVAL;
	}
	return 0;
}

int gp_model_spec_parse(const char *text, struct gp_model_spec *ret,
			char *err, size_t err_len)
{
	struct gp_model_spec *spec;
	const char *p = text;
	int r;

	if (!text || !ret) {
		set_err(err, err_len, "no model spec");
		return -EINVAL;
	}
	/* The spec is some kilobytes: built on the heap, copied on success,
	 * so *ret is untouched on failure. */
	spec = calloc(1, sizeof(*spec));
	if (!spec) {
		set_err(err, err_len, "out of memory");
		return -ENOMEM;
	}
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	/* A description starts with its header or a comment; anything
	 * else is read as the shorthand (whose errors say "model spec"). */
	if (*p == '#' || strncmp(p, "gradpool-model", 14) == 0)
		r = parse_description(text, spec, err, err_len);
	else
		r = parse_shorthand(text, spec, err, err_len);
	if (r == 0)
		*ret = *spec;
	free(spec);
	return r;
}

int gp_model_spec_load(const char *path, struct gp_model_spec *ret,
		       char *err, size_t err_len)
{
	char *buf = NULL;
	size_t len = 0;
	int fd, r = 0;

	if (!path || !ret)
		return -EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		set_err(err, err_len, "%s: %s", path, strerror(-r));
		return r;
	}
	buf = malloc(GP_MODEL_DESC_MAX + 1);
	if (!buf) {
		r = -ENOMEM;
		set_err(err, err_len, "%s: out of memory", path);
		goto out;
	}
	for (;;) {
		ssize_t got = read(fd, buf + len, GP_MODEL_DESC_MAX + 1 - len);

		if (got < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			set_err(err, err_len, "%s: %s", path, strerror(-r));
			goto out;
		}
		if (got == 0)
			break;
		len += (size_t)got;
		if (len > GP_MODEL_DESC_MAX) {
			r = -EFBIG;
			set_err(err, err_len, "%s: larger than %d bytes", path,
				GP_MODEL_DESC_MAX);
			goto out;
		}
	}
	buf[len] = '\0';
	if (memchr(buf, '\0', len)) {
		r = -EINVAL;
		set_err(err, err_len, "%s: not a text file", path);
		goto out;
	}
	{
		char why[256];

		r = gp_model_spec_parse(buf, ret, why, sizeof(why));
		if (r < 0)
			set_err(err, err_len, "%s: %s", path, why);
	}
out:
	free(buf);
	close(fd);
	return r;
}

bool gp_model_spec_valid(const struct gp_model_spec *spec)
{
	if (!spec || spec->n_layers < 1 ||
	    spec->n_layers > GP_MODEL_MAX_LAYERS)
		return false;
	if (spec->n_nodes < 2 || spec->n_nodes > GP_MODEL_MAX_NODES)
		return false;
	if (spec->version == 0) {
		for (size_t i = 0; i <= spec->n_layers; i++)
			if (spec->dims[i] == 0 ||
			    spec->dims[i] > GP_MODEL_MAX_WIDTH)
				return false;
		return spec->dims[spec->n_layers] >= 2 &&
		       spec->n_nodes == 2 * spec->n_layers + 1;
	}
	return spec->version == GP_MODEL_FORMAT_VERSION;
}

static int append(char *buf, size_t len, size_t *used, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int append(char *buf, size_t len, size_t *used, const char *fmt, ...)
{
	va_list ap;
	int w;

	va_start(ap, fmt);
	w = vsnprintf(buf + *used, len - *used, fmt, ap);
	va_end(ap);
	if (w < 0 || (size_t)w >= len - *used)
		return -ENOSPC;
	*used += (size_t)w;
	return 0;
}

int gp_model_spec_format(const struct gp_model_spec *spec, char *buf,
			 size_t len)
{
	size_t used = 0;
	int r = 0;

	if (!gp_model_spec_valid(spec) || !buf || len == 0)
		return -EINVAL;
	buf[0] = '\0';
	if (spec->version == 0) {
		for (size_t i = 0; i <= spec->n_layers && r == 0; i++)
			r = append(buf, len, &used, "%s%u", i ? "-" : "",
				   (unsigned)spec->dims[i]);
		return r < 0 ? r : (int)used;
	}
	r = append(buf, len, &used, "gradpool-model %u", spec->version);
	for (size_t i = 0; i < spec->n_nodes && r == 0; i++) {
		const struct gp_model_layer *l = &spec->layers[i];

		r = append(buf, len, &used, "; %s", type_names[l->type]);
		if (r == 0 && l->type == GP_LAYER_INPUT) {
			r = l->c == 1 && l->h == 1
				    ? append(buf, len, &used, " shape=%u", l->w)
				    : append(buf, len, &used, " shape=%ux%ux%u",
					     l->c, l->h, l->w);
			continue;
		}
		if (r == 0)
			r = append(buf, len, &used, " %s", l->name);
		if (r == 0 && (l->n_in == 2 || l->in[0] != i - 1))
			r = l->n_in == 2
				    ? append(buf, len, &used, " in=%s,%s",
					     spec->layers[l->in[0]].name,
					     spec->layers[l->in[1]].name)
				    : append(buf, len, &used, " in=%s",
					     spec->layers[l->in[0]].name);
		if (r)
			break;
		switch (l->type) {
		case GP_LAYER_DENSE:
			r = append(buf, len, &used, " out=%u", l->out);
			break;
		case GP_LAYER_CONV2D:
			r = append(buf, len, &used,
				   " out=%u kernel=%u stride=%u padding=%u",
				   l->out, l->kernel, l->stride, l->pad);
			break;
		case GP_LAYER_MAXPOOL2D:
		case GP_LAYER_AVGPOOL2D:
			r = append(buf, len, &used, " kernel=%u stride=%u",
				   l->kernel, l->stride);
			break;
		case GP_LAYER_DROPOUT:
			r = append(buf, len, &used, " p=%.9g", (double)l->p);
			break;
		case GP_LAYER_LAYERNORM:
			r = append(buf, len, &used, " eps=%.9g", (double)l->eps);
			break;
		case GP_LAYER_GROUPNORM:
			r = append(buf, len, &used, " groups=%u eps=%.9g",
				   l->groups, (double)l->eps);
			break;
		case GP_LAYER_LINEAR:
			r = append(buf, len, &used, " out=%u", l->out);
			break;
		case GP_LAYER_EMBEDDING:
			r = append(buf, len, &used, " vocab=%u dim=%u", l->vocab,
				   l->out);
			break;
		case GP_LAYER_ATTENTION:
			r = append(buf, len, &used, " heads=%u", l->heads);
			break;
		default:
			break;
		}
	}
	return r < 0 ? r : (int)used;
}

size_t gp_model_spec_param_count(const struct gp_model_spec *spec)
{
	size_t n = 0;

	if (!gp_model_spec_valid(spec))
		return 0;
	for (size_t i = 0; i < spec->n_nodes; i++) {
		const struct gp_model_layer *l = &spec->layers[i];
		const struct gp_model_layer *a = &spec->layers[l->in[0]];

		if (l->type == GP_LAYER_DENSE)
			n += (size_t)l->out * ((size_t)layer_size(a) + 1);
		else if (l->type == GP_LAYER_CONV2D)
			n += (size_t)l->out *
			     ((size_t)a->c * l->kernel * l->kernel + 1);
		else if (l->type == GP_LAYER_LAYERNORM)
			n += 2 * (size_t)l->w;
		else if (l->type == GP_LAYER_GROUPNORM)
			n += 2 * (size_t)l->c;
		else if (l->type == GP_LAYER_LINEAR)
			n += (size_t)l->out * ((size_t)a->w + 1);
		else if (l->type == GP_LAYER_EMBEDDING)
			n += (size_t)l->vocab * l->out;
		else if (l->type == GP_LAYER_POSEMBED)
			n += (size_t)l->h * l->w;
	}
	return n;
}

size_t gp_model_spec_labels(const struct gp_model_spec *spec)
{
	const struct gp_model_layer *loss;

	if (!gp_model_spec_valid(spec))
		return 0;
	loss = &spec->layers[spec->n_nodes - 1];
	if (loss->type == GP_LAYER_SEQ_XENT)
		return spec->layers[loss->in[0]].h;
	return 1;
}

/* Forward FLOPs of one sample through a linear or attention layer: the
 * projections' GEMMs, and for attention q k^T and P v over all t x t
 * pairs (the masked half is computed too). */
static double seq_flops(const struct gp_model_layer *l,
			const struct gp_model_layer *a)
{
	if (l->type == GP_LAYER_LINEAR)
		return 2.0 * (double)l->out * a->w * a->c * a->h;
	if (l->type == GP_LAYER_ATTENTION)
		return 4.0 * (double)l->h * l->h * l->w;
	return 0.0;
}

double gp_model_spec_flops(const struct gp_model_spec *spec)
{
	double f = 0.0;

	if (!gp_model_spec_valid(spec))
		return 0.0;
	for (size_t i = 0; i < spec->n_nodes; i++) {
		const struct gp_model_layer *l = &spec->layers[i];
		const struct gp_model_layer *a = &spec->layers[l->in[0]];

		if (l->type == GP_LAYER_DENSE)
			f += 2.0 * (double)l->out * (double)layer_size(a);
		else if (l->type == GP_LAYER_CONV2D)
			f += 2.0 * (double)layer_size(l) * a->c * l->kernel *
			     l->kernel;
		else
			f += seq_flops(l, a);
	}
	return f;
}

double gp_model_spec_train_flops(const struct gp_model_spec *spec)
{
	bool needs[GP_MODEL_MAX_NODES] = { false };
	double f = 3.0 * gp_model_spec_flops(spec);

	if (f == 0.0)
		return 0.0;
	/* A layer's input gradient is computed only when something before
	 * it has parameters (model.c's needs_grad). */
	for (size_t i = 0; i < spec->n_nodes; i++) {
		const struct gp_model_layer *l = &spec->layers[i];
		const struct gp_model_layer *a = &spec->layers[l->in[0]];
		bool params = has_params(l->type);

		for (uint32_t k = 0; k < l->n_in && i > 0; k++)
			needs[i] |= needs[l->in[k]];
		if (i > 0 && !needs[l->in[0]]) {
			if (l->type == GP_LAYER_DENSE)
				f -= 2.0 * (double)l->out * (double)layer_size(a);
			else if (l->type == GP_LAYER_CONV2D)
				f -= 2.0 * (double)layer_size(l) * a->c *
				     l->kernel * l->kernel;
			else if (l->type == GP_LAYER_LINEAR)
				f -= seq_flops(l, a);
		}
		needs[i] |= params;
	}
	return f;
}
