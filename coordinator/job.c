#include "job.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "gp-config.h"
#include "model.h"

const char *gp_job_optimizer_name(enum gp_job_optimizer opt)
{
	switch (opt) {
	case GP_OPT_SGD:
		return "sgd";
	case GP_OPT_SGD_MOMENTUM:
		return "sgd-momentum";
	case GP_OPT_ADAMW:
		return "adamw";
	}
	return "unknown";
}

void gp_job_defaults(struct gp_job *job)
{
	memset(job, 0, sizeof(*job));
	job->seed = 1;
	snprintf(job->data_set, sizeof(job->data_set), "fashion-mnist");
	snprintf(job->data_dir, sizeof(job->data_dir), "%s",
		 GP_DATA_DIR_DEFAULT);
	job->epochs = 5;
	job->batch_size = 64;
	job->staleness = 3;
	job->optimizer = GP_OPT_SGD_MOMENTUM;
	job->learning_rate = 0.05;
	job->momentum = 0.9;
	job->beta1 = 0.9;
	job->beta2 = 0.999;
	job->eps = 1e-8;
	job->lr_schedule = GP_LR_COSINE;
	job->warmup_epochs = 0.1;
	job->staleness_scaling = true;
	job->group_updates = true;
	/* DiLoCo's 0.7 and 0.9 diverged on the MLP job; 1.0 and 0.3 were the
	 * best tried (docs/performance.md "Slow links"). */
	job->outer_lr = 1.0;
	job->outer_momentum = 0.3;
	job->run_steps = 48;
	job->clock_duration_ms = 16;
	job->comm_share = 0.10;
	job->max_sync_interval_ms = 250;
	job->int8 = true;
	job->update_bits = 8;
	job->param_bits = 8;
	job->param_delta = true;
	job->overlap = true;
	job->first_pull_changes = true;
	job->checkpoint_interval_ms = 30000;
	job->checkpoint_keep = 3;
	job->eval = true;
	snprintf(job->listen, sizeof(job->listen), "127.0.0.1:7100");
	job->heartbeat_interval_ms = 5000;
	job->heartbeat_timeout_ms = 20000;
	job->max_agents = 64;
	job->pull_budget_mib = 256;
	job->max_grad_norm = 1000;
	job->max_strikes = 8;
	job->robust_clip = 2;
	job->robust_momentum = 0.9;
	job->verify_rate = 0.1;
	job->verify_tolerance = 0.05;
	job->verify_bans = 2;
	job->verify_delegate = true;
	job->verify_audit = 0.1;
	job->work_timeout_ms = 120000;
	job->rate_messages = 5000;
	job->rate_bytes = 1u << 30;
	job->beacon_port = 7101;
	job->beacon_interval_ms = 5000;
}

/* "784-256-128-10": widths joined by '-', input first. */
static int parse_spec(void *target, const char *value, char *why,
		      size_t whylen)
{
	struct gp_job *job = target;
	uint32_t layers[GP_JOB_MAX_LAYERS];
	const char *p = value;
	size_t n = 0;

	if (strlen(value) >= sizeof(job->spec)) {
		snprintf(why, whylen, "too long");
		return -ERANGE;
	}
	for (;;) {
		uint64_t w = 0;
		size_t digits = 0;

		while (*p >= '0' && *p <= '9' && digits < 7) {
			w = w * 10 + (uint64_t)(*p++ - '0');
			digits++;
		}
		if (digits == 0 || (*p >= '0' && *p <= '9')) {
			snprintf(why, whylen,
				 "'%s' is not a list of layer widths such as "
				 "784-256-128-10",
				 value);
			return -EINVAL;
		}
		if (w < 1 || w > 65536) {
			snprintf(why, whylen,
				 "layer width %llu out of range (1 to 65536)",
				 (unsigned long long)w);
			return -ERANGE;
		}
		if (n == GP_JOB_MAX_LAYERS) {
			snprintf(why, whylen, "more than %d layers",
				 GP_JOB_MAX_LAYERS);
			return -ERANGE;
		}
		layers[n++] = (uint32_t)w;
		if (*p == '\0')
			break;
		if (*p++ != '-') {
			snprintf(why, whylen,
				 "'%s' is not a list of layer widths such as "
				 "784-256-128-10",
				 value);
			return -EINVAL;
		}
	}
	if (n < 2) {
		snprintf(why, whylen, "needs at least an input and an output "
				      "width, as in 784-10");
		return -EINVAL;
	}
	memcpy(job->spec, value, strlen(value) + 1);
	memcpy(job->layers, layers, n * sizeof(layers[0]));
	job->n_layers = n;
	return 0;
}

/* A model description file; checked for length here, read by
 * gp_job_load_model(). */
static int parse_model_file(void *target, const char *value, char *why,
			    size_t whylen)
{
	struct gp_job *job = target;
	size_t len = strlen(value);

	if (len == 0 || len >= sizeof(job->model_file)) {
		snprintf(why, whylen, "not a file name (1 to %zu bytes)",
			 sizeof(job->model_file) - 1);
		return -EINVAL;
	}
	memcpy(job->model_file, value, len + 1);
	return 0;
}

static int parse_data_set(void *target, const char *value, char *why,
			  size_t whylen)
{
	struct gp_job *job = target;
	size_t len = strlen(value);

	if (len == 0 || len >= sizeof(job->data_set) ||
	    strspn(value, "abcdefghijklmnopqrstuvwxyz0123456789-") != len) {
		snprintf(why, whylen,
			 "'%s' is not a data set name (a-z, 0-9 and '-', at "
			 "most %zu characters)",
			 value, sizeof(job->data_set) - 1);
		return -EINVAL;
	}
	memcpy(job->data_set, value, len + 1);
	return 0;
}

static int parse_data_format(void *target, const char *value, char *why,
			     size_t whylen)
{
	struct gp_job *job = target;

	if (strcmp(value, "idx") == 0 || strcmp(value, "npy") == 0) {
		job->data_npy = value[0] == 'n';
		return 0;
	}
	snprintf(why, whylen, "'%s' is not a data format (idx or npy)", value);
	return -EINVAL;
}

static int parse_inner(void *target, const char *value, char *why,
		       size_t whylen)
{
	struct gp_job *job = target;

	if (strcmp(value, "none") == 0) {
		job->inner_optimizer = GP_INNER_NONE;
	} else if (strcmp(value, "adamw") == 0) {
		job->inner_optimizer = GP_INNER_ADAMW;
	} else {
		snprintf(why, whylen,
			 "unknown inner_optimizer '%s' (none or adamw)", value);
		return -EINVAL;
	}
	return 0;
}

static int parse_outer(void *target, const char *value, char *why,
		       size_t whylen)
{
	struct gp_job *job = target;

	if (strcmp(value, "none") == 0) {
		job->outer_optimizer = GP_OUTER_NONE;
	} else if (strcmp(value, "nesterov") == 0) {
		job->outer_optimizer = GP_OUTER_NESTEROV;
	} else {
		snprintf(why, whylen,
			 "unknown outer_optimizer '%s' (none or nesterov)",
			 value);
		return -EINVAL;
	}
	return 0;
}

static int parse_optimizer(void *target, const char *value, char *why,
			   size_t whylen)
{
	struct gp_job *job = target;

	if (strcmp(value, "sgd") == 0) {
		job->optimizer = GP_OPT_SGD;
	} else if (strcmp(value, "sgd-momentum") == 0) {
		job->optimizer = GP_OPT_SGD_MOMENTUM;
	} else if (strcmp(value, "adamw") == 0) {
		job->optimizer = GP_OPT_ADAMW;
	} else {
		snprintf(why, whylen,
			 "unknown optimizer '%s' (sgd, sgd-momentum or adamw)",
			 value);
		return -EINVAL;
	}
	return 0;
}

static int parse_lr_schedule(void *target, const char *value, char *why,
			     size_t whylen)
{
	struct gp_job *job = target;

	if (strcmp(value, "cosine") == 0) {
		job->lr_schedule = GP_LR_COSINE;
	} else if (strcmp(value, "constant") == 0) {
		job->lr_schedule = GP_LR_CONSTANT;
	} else {
		snprintf(why, whylen,
			 "unknown schedule '%s' (cosine or constant)", value);
		return -EINVAL;
	}
	return 0;
}

double gp_job_adamw_ratio(const struct gp_job *job)
{
	double b1 = job->beta1, b2 = job->beta2;

	if (b2 <= 0 || b1 * b1 >= b2)
		return INFINITY;
	return (1 - b1) / sqrt((1 - b2) * (1 - b1 * b1 / b2));
}

double gp_job_lr_at(const struct gp_job *job, uint64_t index, uint64_t total,
		    uint64_t per_epoch)
{
	double lr = job->learning_rate;
	double warm = job->warmup_epochs * (double)per_epoch;
	double t = (double)index + 0.5;

	if (total == 0)
		return lr;
	if (t > (double)total)
		t = (double)total;
	/* Cosine decay to zero over the job: large steps early, a settled
	 * model at the end (tools/gp-train's schedule). */
	if (job->lr_schedule == GP_LR_COSINE)
		lr *= 0.5 * (1.0 + cos(M_PI * t / (double)total));
	if (warm > 0 && t < warm)
		lr *= t / warm;
	return lr;
}

/* "10%" or a fraction such as "0.1": at most 90 %, 0 is off. */
static int parse_comm_share(void *target, const char *value, char *why,
			    size_t whylen)
{
	struct gp_job *job = target;
	char num[32];
	size_t len = strlen(value);
	bool percent = len > 0 && value[len - 1] == '%';
	double v = 0;

	if (percent)
		len--;
	if (len == 0 || len >= sizeof(num))
		goto bad;
	memcpy(num, value, len);
	num[len] = '\0';
	if (gp_conf_parse_double(num, &v, NULL, 0) < 0)
		goto bad;
	if (percent)
		v /= 100.0;
	if (!(v >= 0 && v <= 0.9)) {
		snprintf(why, whylen, "'%s' out of range (0 to 90%%)", value);
		return -ERANGE;
	}
	job->comm_share = v;
	return 0;
bad:
	snprintf(why, whylen, "'%s' is not a share (as in 10%% or 0.1)", value);
	return -EINVAL;
}

/* The bits of a quantised value, "8" or "4", into *ret_bits. */
static int parse_bits(const char *value, uint32_t *ret_bits, char *why,
		      size_t whylen)
{
	if (strcmp(value, "8") == 0) {
		*ret_bits = 8;
	} else if (strcmp(value, "4") == 0) {
		*ret_bits = 4;
	} else {
		snprintf(why, whylen, "'%s' is neither 8 nor 4", value);
		return -EINVAL;
	}
	return 0;
}

/* The bits of a quantised update value: 8 (GP_DTYPE_Q8) or 4
 * (GP_DTYPE_Q4). */
static int parse_update_bits(void *target, const char *value, char *why,
			     size_t whylen)
{
	struct gp_job *job = target;

	return parse_bits(value, &job->update_bits, why, whylen);
}

/* The bits of a parameter change down: 8 (GP_DTYPE_Q8_DELTA) or 4
 * (GP_DTYPE_Q4_DELTA). */
static int parse_param_bits(void *target, const char *value, char *why,
			    size_t whylen)
{
	struct gp_job *job = target;

	return parse_bits(value, &job->param_bits, why, whylen);
}

/* "30s" (a duration) or "500 minibatches". */
static int parse_checkpoint_interval(void *target, const char *value,
				     char *why, size_t whylen)
{
	static const char word[] = "minibatches";
	struct gp_job *job = target;
	const char *p = value;
	uint64_t n = 0, ms = 0;
	size_t digits = 0;
	int r;

	while (*p >= '0' && *p <= '9' && digits < 10) {
		n = n * 10 + (uint64_t)(*p++ - '0');
		digits++;
	}
	while (*p == ' ')
		p++;
	if (digits > 0 && strcmp(p, word) == 0) {
		if (n < 1 || n > 100000000) {
			snprintf(why, whylen,
				 "%llu minibatches out of range (1 to "
				 "100000000)",
				 (unsigned long long)n);
			return -ERANGE;
		}
		job->checkpoint_interval_minibatches = n;
		job->checkpoint_interval_ms = 0;
		return 0;
	}
	r = gp_conf_parse_duration_ms(value, &ms, why, whylen);
	if (r < 0) {
		snprintf(why, whylen,
			 "'%s' is neither a duration (30s, 5m) nor a count "
			 "(500 minibatches)",
			 value);
		return r;
	}
	if (ms < 1000 || ms > 86400000) {
		snprintf(why, whylen, "'%s' out of range (1s to 24h)", value);
		return -ERANGE;
	}
	job->checkpoint_interval_ms = ms;
	job->checkpoint_interval_minibatches = 0;
	return 0;
}

/* host:port or [v6 address]:port; the host is resolved later. Port 0 asks
 * the system for a free port (tests), which serve prints when listening. */
static int parse_listen(void *target, const char *value, char *why,
			size_t whylen)
{
	struct gp_job *job = target;
	const char *colon, *host_end;
	uint64_t port = 0;
	size_t len = strlen(value);

	if (len >= sizeof(job->listen))
		goto bad;
	if (value[0] == '[') {
		host_end = strchr(value, ']');
		if (!host_end || host_end == value + 1 || host_end[1] != ':')
			goto bad;
		colon = host_end + 1;
	} else {
		colon = strrchr(value, ':');
		if (!colon || colon == value || memchr(value, ':',
						       (size_t)(colon - value)))
			goto bad;
	}
	if (gp_conf_parse_u64(colon + 1, &port, NULL, 0) < 0 ||
	    port > 65535)
		goto bad;
	memcpy(job->listen, value, len + 1);
	return 0;
bad:
	snprintf(why, whylen,
		 "'%s' is not host:port (as in 127.0.0.1:7100 or [::1]:7100)",
		 value);
	return -EINVAL;
}

#define F(field) offsetof(struct gp_job, field)

static const struct gp_conf_key job_keys[] = {
	{"model", "spec", GP_CONF_CUSTOM, 0, 0, 0, 0, 0, parse_spec},
	{"model", "file", GP_CONF_CUSTOM, 0, 0, 0, 0, 0, parse_model_file},
	{"model", "seed", GP_CONF_U64, F(seed), 0, 0, 9007199254740992.0, 0,
	 NULL},
	{"data", "set", GP_CONF_CUSTOM, 0, 0, 0, 0, 0, parse_data_set},
	{"data", "dir", GP_CONF_STRING, F(data_dir),
	 sizeof(((struct gp_job *)0)->data_dir), 0, 0, 0, NULL},
	{"data", "format", GP_CONF_CUSTOM, 0, 0, 0, 0, 0, parse_data_format},
	{"data", "train_images", GP_CONF_STRING, F(train_images),
	 GP_JOB_PATH_MAX, 0, 0, 0, NULL},
	{"data", "train_labels", GP_CONF_STRING, F(train_labels),
	 GP_JOB_PATH_MAX, 0, 0, 0, NULL},
	{"data", "test_images", GP_CONF_STRING, F(test_images),
	 GP_JOB_PATH_MAX, 0, 0, 0, NULL},
	{"data", "test_labels", GP_CONF_STRING, F(test_labels),
	 GP_JOB_PATH_MAX, 0, 0, 0, NULL},
	{"data", "test_share", GP_CONF_DOUBLE, F(test_share), 0, 0, 0.5, 0,
	 NULL},
	{"train", "epochs", GP_CONF_U32, F(epochs), 0, 1, 100000, 0, NULL},
	{"train", "batch_size", GP_CONF_U32, F(batch_size), 0, 1, 65536, 0,
	 NULL},
	{"train", "staleness", GP_CONF_U32, F(staleness), 0, 0, 1000000, 0,
	 NULL},
	{"train", "optimizer", GP_CONF_CUSTOM, 0, 0, 0, 0, 0, parse_optimizer},
	{"train", "learning_rate", GP_CONF_DOUBLE, F(learning_rate), 0, 1e-12,
	 10, 0, NULL},
	{"train", "lr_schedule", GP_CONF_CUSTOM, 0, 0, 0, 0, 0,
	 parse_lr_schedule},
	{"train", "warmup_epochs", GP_CONF_DOUBLE, F(warmup_epochs), 0, 0,
	 100000, 0, NULL},
	{"train", "staleness_scaling", GP_CONF_BOOL, F(staleness_scaling), 0,
	 0, 0, 0, NULL},
	{"train", "momentum", GP_CONF_DOUBLE, F(momentum), 0, 0, 0.999999, 0,
	 NULL},
	{"train", "weight_decay", GP_CONF_DOUBLE, F(weight_decay), 0, 0,
	 0.999999, 0, NULL},
	{"train", "beta1", GP_CONF_DOUBLE, F(beta1), 0, 0, 0.999999, 0, NULL},
	{"train", "beta2", GP_CONF_DOUBLE, F(beta2), 0, 0, 0.999999, 0, NULL},
	{"train", "eps", GP_CONF_DOUBLE, F(eps), 0, 1e-30, 0.1, 0, NULL},
	{"train", "group_updates", GP_CONF_BOOL, F(group_updates), 0, 0, 0, 0,
	 NULL},
	{"train", "inner_optimizer", GP_CONF_CUSTOM, 0, 0, 0, 0, 0, parse_inner},
	{"train", "outer_optimizer", GP_CONF_CUSTOM, 0, 0, 0, 0, 0, parse_outer},
	{"train", "outer_lr", GP_CONF_DOUBLE, F(outer_lr), 0, 1e-6, 10, 0,
	 NULL},
	{"train", "outer_momentum", GP_CONF_DOUBLE, F(outer_momentum), 0, 0,
	 0.999, 0, NULL},
	{"train", "checkpoint_interval", GP_CONF_CUSTOM, 0, 0, 0, 0, 0,
	 parse_checkpoint_interval},
	{"train", "checkpoint_keep", GP_CONF_U32, F(checkpoint_keep), 0, 1,
	 1000, 0, NULL},
	{"train", "eval", GP_CONF_BOOL, F(eval), 0, 0, 0, 0, NULL},
	{"train", "eval_every", GP_CONF_U32, F(eval_every), 0, 0, 100000000, 0,
	 NULL},
	{"pool", "listen", GP_CONF_CUSTOM, 0, 0, 0, 0, 0, parse_listen},
	{"pool", "heartbeat_interval", GP_CONF_DURATION_MS,
	 F(heartbeat_interval_ms), 0, 100, 600000, 0, NULL},
	{"pool", "heartbeat_timeout", GP_CONF_DURATION_MS,
	 F(heartbeat_timeout_ms), 0, 1000, 3600000, 0, NULL},
	{"pool", "max_agents", GP_CONF_U32, F(max_agents), 0, 1, 65536, 0,
	 NULL},
	{"pool", "pull_budget_mib", GP_CONF_U32, F(pull_budget_mib), 0, 1, 65536,
	 0, NULL},
	{"pool", "clock_duration", GP_CONF_DURATION_MS, F(clock_duration_ms), 0,
	 1, 10000, 0, NULL},
	{"pool", "comm_share", GP_CONF_CUSTOM, 0, 0, 0, 0, 0, parse_comm_share},
	{"pool", "max_sync_interval", GP_CONF_DURATION_MS,
	 F(max_sync_interval_ms), 0, 1, 600000, 0, NULL},
	{"pool", "run_steps", GP_CONF_U32, F(run_steps), 0, 2, 2048, 0, NULL},
	{"pool", "int8", GP_CONF_BOOL, F(int8), 0, 0, 0, 0, NULL},
	{"pool", "update_bits", GP_CONF_CUSTOM, 0, 0, 0, 0, 0,
	 parse_update_bits},
	{"pool", "param_delta", GP_CONF_BOOL, F(param_delta), 0, 0, 0, 0, NULL},
	{"pool", "param_bits", GP_CONF_CUSTOM, 0, 0, 0, 0, 0, parse_param_bits},
	{"pool", "overlap", GP_CONF_BOOL, F(overlap), 0, 0, 0, 0, NULL},
	{"pool", "first_pull_changes", GP_CONF_BOOL, F(first_pull_changes), 0,
	 0, 0, 0, NULL},
	{"pool", "max_grad_norm", GP_CONF_DOUBLE, F(max_grad_norm), 0, 0, 1e12,
	 0, NULL},
	{"pool", "clip_grad_norm", GP_CONF_DOUBLE, F(clip_grad_norm), 0, 0,
	 1e12, 0, NULL},
	{"pool", "robust_clip", GP_CONF_DOUBLE, F(robust_clip), 0, 0, 100, 0,
	 NULL},
	{"pool", "robust_momentum", GP_CONF_DOUBLE, F(robust_momentum), 0, 0,
	 0.999, 0, NULL},
	{"pool", "verify_rate", GP_CONF_DOUBLE, F(verify_rate), 0, 0, 1, 0,
	 NULL},
	{"pool", "verify_tolerance", GP_CONF_DOUBLE, F(verify_tolerance), 0,
	 1e-6, 10, 0, NULL},
	{"pool", "verify_bans", GP_CONF_U32, F(verify_bans), 0, 1, 1000000, 0,
	 NULL},
	{"pool", "verify_delegate", GP_CONF_BOOL, F(verify_delegate), 0, 0, 0,
	 0, NULL},
	{"pool", "verify_audit", GP_CONF_DOUBLE, F(verify_audit), 0, 0, 1, 0,
	 NULL},
	{"pool", "max_strikes", GP_CONF_U32, F(max_strikes), 0, 1, 1000000, 0,
	 NULL},
	{"pool", "work_timeout", GP_CONF_DURATION_MS, F(work_timeout_ms), 0,
	 1000, 86400000, 0, NULL},
	{"pool", "rate_messages", GP_CONF_U64, F(rate_messages), 0, 0, 1e9, 0,
	 NULL},
	{"pool", "rate_bytes", GP_CONF_U64, F(rate_bytes), 0, 0, 1e15, 0, NULL},
	{"pool", "beacon", GP_CONF_BOOL, F(beacon), 0, 0, 0, 0, NULL},
	{"pool", "beacon_port", GP_CONF_U32, F(beacon_port), 0, 1, 65535, 0,
	 NULL},
	{"pool", "beacon_interval", GP_CONF_DURATION_MS, F(beacon_interval_ms), 0,
	 1000, 3600000, 0, NULL},
};

#undef F

/* Checks that need more than one key. */
static int check_job(const char *name, const struct gp_job *job, char *err,
		     size_t errlen)
{
	if (job->spec[0] && job->model_file[0]) {
		snprintf(err, errlen,
			 "%s: [model] has both spec and file; give one", name);
		return -EINVAL;
	}
	if (!job->spec[0] && !job->model_file[0]) {
		snprintf(err, errlen,
			 "%s: [model] needs spec = (layer widths, as in "
			 "784-256-128-10) or file = (a gradpool-model 1 "
			 "description)",
			 name);
		return -EINVAL;
	}
	if (job->data_npy) {
		bool test_files = job->test_images[0] || job->test_labels[0];

		if (!job->train_images[0] || !job->train_labels[0]) {
			snprintf(err, errlen, "%s: [data] format = npy needs "
				 "train_images and train_labels", name);
			return -EINVAL;
		}
		if (test_files == (job->test_share > 0) ||
		    (test_files && (!job->test_images[0] ||
				    !job->test_labels[0]))) {
			snprintf(err, errlen, "%s: [data] format = npy needs "
				 "a test set: test_images and test_labels, or "
				 "test_share (not both)", name);
			return -EINVAL;
		}
		if (job->test_share > 0 && job->test_share < 0.001) {
			snprintf(err, errlen, "%s: [data] test_share (%g) "
				 "must be 0 or 0.001..0.5", name,
				 job->test_share);
			return -EINVAL;
		}
	} else if (job->train_images[0] || job->train_labels[0] ||
		   job->test_images[0] || job->test_labels[0] ||
		   job->test_share > 0) {
		snprintf(err, errlen, "%s: [data] train_images, train_labels, "
			 "test_images, test_labels and test_share need format "
			 "= npy", name);
		return -EINVAL;
	}
	if (job->heartbeat_timeout_ms <= job->heartbeat_interval_ms) {
		snprintf(err, errlen,
			 "%s: heartbeat_timeout (%llu ms) must be longer than "
			 "heartbeat_interval (%llu ms) in [pool]",
			 name, (unsigned long long)job->heartbeat_timeout_ms,
			 (unsigned long long)job->heartbeat_interval_ms);
		return -EINVAL;
	}
	if (job->warmup_epochs > job->epochs) {
		snprintf(err, errlen,
			 "%s: warmup_epochs (%g) longer than the job's %u "
			 "epochs in [train]",
			 name, job->warmup_epochs, job->epochs);
		return -EINVAL;
	}
	if (job->robust_clip > 0 && job->robust_clip < 1) {
		snprintf(err, errlen, "%s: robust_clip (%g) must be 0 (off) or "
			 "at least 1 in [pool]", name, job->robust_clip);
		return -EINVAL;
	}
	if (job->inner_optimizer == GP_INNER_ADAMW &&
	    job->optimizer != GP_OPT_ADAMW) {
		snprintf(err, errlen,
			 "%s: inner_optimizer = adamw needs optimizer = adamw "
			 "in [train] (its settings are the job's AdamW's)",
			 name);
		return -EINVAL;
	}
	if (job->inner_optimizer == GP_INNER_ADAMW &&
	    !(gp_job_adamw_ratio(job) <= GP_JOB_INNER_RATIO_MAX)) {
		snprintf(err, errlen,
			 "%s: inner_optimizer = adamw needs betas that bound "
			 "a step: beta1^2 < beta2 and (1 - beta1) / sqrt((1 - "
			 "beta2) (1 - beta1^2 / beta2)) at most %g in [train] "
			 "(beta1 %g and beta2 %g give %g)", name,
			 GP_JOB_INNER_RATIO_MAX,
			 job->beta1, job->beta2, gp_job_adamw_ratio(job));
		return -EINVAL;
	}
	if (job->outer_optimizer != GP_OUTER_NONE &&
	    job->optimizer == GP_OPT_ADAMW &&
	    job->inner_optimizer != GP_INNER_ADAMW) {
		snprintf(err, errlen,
			 "%s: outer_optimizer = nesterov needs optimizer = sgd "
			 "or sgd-momentum, or inner_optimizer = adamw, in "
			 "[train] (AdamW on the coordinator takes no local "
			 "steps)", name);
		return -EINVAL;
	}
	if (job->outer_optimizer != GP_OUTER_NONE && job->verify_rate > 0) {
		snprintf(err, errlen,
			 "%s: outer_optimizer = nesterov needs verify_rate = 0 "
			 "in [pool] (verification cannot take back an update "
			 "through the outer momentum yet)", name);
		return -EINVAL;
	}
	if (job->update_bits == 4 && !job->int8) {
		snprintf(err, errlen,
			 "%s: update_bits = 4 needs int8 = true in [pool] "
			 "(int8 = false sends updates as f16)", name);
		return -EINVAL;
	}
	if (job->param_bits == 4 && (!job->param_delta || !job->int8)) {
		snprintf(err, errlen,
			 "%s: param_bits = 4 needs param_delta = true and "
			 "int8 = true in [pool] (4-bit parameter changes go "
			 "only where int8 changes would)", name);
		return -EINVAL;
	}
	if (job->max_grad_norm > 0 && job->clip_grad_norm > job->max_grad_norm) {
		snprintf(err, errlen,
			 "%s: clip_grad_norm (%g) above max_grad_norm (%g) in "
			 "[pool] would never clip",
			 name, job->clip_grad_norm, job->max_grad_norm);
		return -EINVAL;
	}
	return 0;
}

int gp_job_parse(const char *name, const char *data, size_t len,
		 struct gp_job *ret, char *err, size_t errlen)
{
	struct gp_job job;
	int r;

	if (!ret)
		return -EINVAL;
	gp_job_defaults(&job);
	r = gp_conf_parse(name, data, len, job_keys,
			  sizeof(job_keys) / sizeof(job_keys[0]), &job, err,
			  errlen);
	if (r < 0)
		return r;
	r = check_job(name, &job, err, errlen);
	if (r < 0)
		return r;
	*ret = job;
	return 0;
}

int gp_job_parse_file(const char *path, struct gp_job *ret, char *err,
		      size_t errlen)
{
	struct gp_job job;
	int r;

	if (!ret)
		return -EINVAL;
	gp_job_defaults(&job);
	r = gp_conf_parse_file(path, job_keys,
			       sizeof(job_keys) / sizeof(job_keys[0]), &job,
			       err, errlen);
	if (r < 0)
		return r;
	r = check_job(path, &job, err, errlen);
	if (r < 0)
		return r;
	*ret = job;
	return 0;
}

int gp_job_data_path(const char *name, const char *job_path, char *buf,
		     size_t len)
{
	const char *slash = job_path ? strrchr(job_path, '/') : NULL;
	int n;

	if (name[0] == '/' || !slash)
		n = snprintf(buf, len, "%s", name);
	else
		n = snprintf(buf, len, "%.*s/%s", (int)(slash - job_path),
			     job_path, name);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : n;
}

int gp_job_model_path(const struct gp_job *job, const char *job_path,
		      char *buf, size_t len)
{
	const char *slash;
	int n;

	if (!job->model_file[0])
		return -ENOENT;
	slash = job_path ? strrchr(job_path, '/') : NULL;
	if (job->model_file[0] == '/' || !slash)
		n = snprintf(buf, len, "%s", job->model_file);
	else
		n = snprintf(buf, len, "%.*s/%s", (int)(slash - job_path),
			     job_path, job->model_file);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : n;
}

int gp_job_load_model(const struct gp_job *job, const char *job_path,
		      struct gp_model_spec *ret, char *err, size_t errlen)
{
	char path[GP_JOB_PATH_MAX], why[GP_JOB_PATH_MAX + 512];
	int r;

	if (!job || !ret)
		return -EINVAL;
	if (!job->model_file[0]) {
		r = gp_model_spec_parse(job->spec, ret, why, sizeof(why));
		if (r < 0)
			snprintf(err, errlen, "%s: [model] spec: %s",
				 job_path ? job_path : "job", why);
		return r;
	}
	r = gp_job_model_path(job, job_path, path, sizeof(path));
	if (r < 0) {
		snprintf(err, errlen, "%s: [model] file: path too long",
			 job_path ? job_path : "job");
		return r;
	}
	r = gp_model_spec_load(path, ret, why, sizeof(why));
	if (r >= 0 && ret->version == 0) {
		/* A file is a description; the shorthand goes in spec =. */
		snprintf(why, sizeof(why), "%s: not a model description "
			 "(the first line must be \"gradpool-model %d\"; "
			 "layer widths go in [model] spec =)", path,
			 GP_MODEL_FORMAT_VERSION);
		r = -EINVAL;
	}
	if (r < 0)
		snprintf(err, errlen, "%s (the [model] file of %s)", why,
			 job_path ? job_path : "the job");
	return r;
}
