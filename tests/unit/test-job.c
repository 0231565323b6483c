/* The job file parser: defaults, every key, and errors that name the file
 * and the line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "job.h"
#include "model.h"
#include "test.h"

static int parse(const char *text, struct gp_job *job, char *err,
		 size_t errlen)
{
	err[0] = '\0';
	return gp_job_parse("t.job", text, strlen(text), job, err, errlen);
}

/* The text must fail with exactly this message. */
static void expect_error(const char *text, const char *message)
{
	struct gp_job job;
	char err[256];

	memset(&job, 0x5a, sizeof(job));
	ASSERT_EQ(parse(text, &job, err, sizeof(err)), -EINVAL);
	ASSERT_STR_EQ(err, message);
	/* ret is not written on failure */
	ASSERT_EQ(((unsigned char *)&job)[0], 0x5a);
}

static void test_full(void)
{
	static const char text[] =
		"# the main job\n"
		"[model]\n"
		"spec = 784-256-128-10\n"
		"seed = 42\n"
		"\n"
		"[data]\n"
		"set = fashion-mnist\n"
		"dir = /data/fm ; where the IDX files are\n"
		"[train]\n"
		"epochs = 7\n"
		"batch_size = 128\n"
		"staleness = 0\n"
		"optimizer = sgd\n"
		"learning_rate = 0.1\n"
		"momentum = 0\n"
		"weight_decay = 0.0001\n"
		"group_updates = false\n"
		"checkpoint_interval = 2m\n"
		"checkpoint_keep = 5\n"
		"eval = no\n"
		"[pool]\n"
		"listen = [::1]:7200\n"
		"heartbeat_interval = 500ms\n"
		"heartbeat_timeout = 3s\n"
		"max_agents = 8\n"
		"max_grad_norm = 50\n"
		"clip_grad_norm = 5\n"
		"robust_clip = 3.5\n"
		"update_bits = 4\n"
		"param_bits = 4\n"
		"robust_momentum = 0.5\n"
		"max_strikes = 3\n"
		"work_timeout = 45s\n"
		"rate_messages = 100\n"
		"rate_bytes = 0\n";
	struct gp_job job;
	char err[256];

	ASSERT_OK(parse(text, &job, err, sizeof(err)));
	ASSERT_STR_EQ(job.spec, "784-256-128-10");
	ASSERT_EQ(job.n_layers, 4);
	ASSERT_EQ(job.layers[0], 784);
	ASSERT_EQ(job.layers[3], 10);
	ASSERT_EQ(job.seed, 42);
	ASSERT_STR_EQ(job.data_set, "fashion-mnist");
	ASSERT_STR_EQ(job.data_dir, "/data/fm");
	ASSERT_EQ(job.epochs, 7);
	ASSERT_EQ(job.batch_size, 128);
	ASSERT_EQ(job.staleness, 0);
	ASSERT_EQ(job.optimizer, GP_OPT_SGD);
	ASSERT_NEAR(job.learning_rate, 0.1, 0);
	ASSERT_NEAR(job.weight_decay, 0.0001, 0);
	ASSERT(!job.group_updates);
	ASSERT_EQ(job.checkpoint_interval_ms, 120000);
	ASSERT_EQ(job.checkpoint_interval_minibatches, 0);
	ASSERT_EQ(job.checkpoint_keep, 5);
	ASSERT(!job.eval);
	ASSERT_STR_EQ(job.listen, "[::1]:7200");
	ASSERT_EQ(job.heartbeat_interval_ms, 500);
	ASSERT_EQ(job.heartbeat_timeout_ms, 3000);
	ASSERT_EQ(job.max_agents, 8);
	ASSERT_NEAR(job.max_grad_norm, 50, 0);
	ASSERT_NEAR(job.clip_grad_norm, 5, 0);
	ASSERT_NEAR(job.robust_clip, 3.5, 0);
	ASSERT_EQ(job.update_bits, 4);
	ASSERT_EQ(job.param_bits, 4);
	ASSERT_NEAR(job.robust_momentum, 0.5, 0);
	ASSERT_EQ(job.max_strikes, 3);
	ASSERT_EQ(job.work_timeout_ms, 45000);
	ASSERT_EQ(job.rate_messages, 100);
	ASSERT_EQ(job.rate_bytes, 0);
}

static void test_defaults(void)
{
	struct gp_job job;
	char err[256];

	ASSERT_OK(parse("[model]\nspec=784-10\n", &job, err, sizeof(err)));
	ASSERT_EQ(job.n_layers, 2);
	ASSERT_EQ(job.seed, 1);
	ASSERT_STR_EQ(job.data_set, "fashion-mnist");
	ASSERT_EQ(job.epochs, 5);
	ASSERT_EQ(job.batch_size, 64);
	ASSERT_EQ(job.staleness, 3);
	ASSERT_EQ(job.optimizer, GP_OPT_SGD_MOMENTUM);
	ASSERT_NEAR(job.learning_rate, 0.05, 0);
	ASSERT_NEAR(job.momentum, 0.9, 0);
	ASSERT(job.group_updates);
	ASSERT_EQ(job.clock_duration_ms, 16);
	ASSERT_EQ(job.checkpoint_interval_ms, 30000);
	ASSERT(job.eval);
	ASSERT_STR_EQ(job.listen, "127.0.0.1:7100");
	ASSERT_EQ(job.max_strikes, 8);
	ASSERT_NEAR(job.robust_clip, 2, 0);
	ASSERT_NEAR(job.robust_momentum, 0.9, 0);
	ASSERT_EQ(job.work_timeout_ms, 120000);
	ASSERT_EQ(job.rate_messages, 5000);
	ASSERT_EQ(job.rate_bytes, 1u << 30);
	ASSERT(job.int8);
	ASSERT_EQ(job.update_bits, 8);
	ASSERT_EQ(job.param_bits, 8);
	ASSERT_STR_EQ(gp_job_optimizer_name(job.optimizer), "sgd-momentum");
	ASSERT_NEAR(job.beta1, 0.9, 0);
	ASSERT_NEAR(job.beta2, 0.999, 0);
	ASSERT_NEAR(job.eps, 1e-8, 0);
	ASSERT_OK(parse("[model]\nspec=784-10\n[train]\noptimizer = adamw\n"
			"beta1 = 0.8\nbeta2 = 0.95\neps = 1e-6\n"
			"weight_decay = 0.1\n",
			&job, err, sizeof(err)));
	ASSERT_EQ(job.optimizer, GP_OPT_ADAMW);
	ASSERT_STR_EQ(gp_job_optimizer_name(job.optimizer), "adamw");
	ASSERT_NEAR(job.beta1, 0.8, 1e-12);
	ASSERT_NEAR(job.beta2, 0.95, 1e-12);
	ASSERT_NEAR(job.eps, 1e-6, 1e-18);
	ASSERT_NEAR(job.weight_decay, 0.1, 1e-12);
	ASSERT_EQ(job.outer_optimizer, GP_OUTER_NONE);
	ASSERT_NEAR(job.outer_lr, 1.0, 0);
	ASSERT_NEAR(job.outer_momentum, 0.3, 0);
	ASSERT_EQ(job.run_steps, 48);
	ASSERT_OK(parse("[model]\nspec=784-10\n[train]\n"
			"outer_optimizer = nesterov\nouter_lr = 0.5\n"
			"outer_momentum = 0.8\n[pool]\nverify_rate = 0\n"
			"run_steps = 192\n",
			&job, err, sizeof(err)));
	ASSERT_EQ(job.outer_optimizer, GP_OUTER_NESTEROV);
	ASSERT_EQ(job.inner_optimizer, GP_INNER_NONE);
	ASSERT_NEAR(job.outer_lr, 0.5, 1e-12);
	ASSERT_NEAR(job.outer_momentum, 0.8, 1e-12);
	ASSERT_EQ(job.run_steps, 192);
	/* Local AdamW steps, alone and under an outer Nesterov. */
	ASSERT_OK(parse("[model]\nspec=784-10\n[train]\noptimizer = adamw\n"
			"inner_optimizer = adamw\n",
			&job, err, sizeof(err)));
	ASSERT_EQ(job.inner_optimizer, GP_INNER_ADAMW);
	ASSERT_EQ(job.outer_optimizer, GP_OUTER_NONE);
	ASSERT_OK(parse("[model]\nspec=784-10\n[train]\noptimizer = adamw\n"
			"inner_optimizer = adamw\nouter_optimizer = nesterov\n"
			"[pool]\nverify_rate = 0\n",
			&job, err, sizeof(err)));
	ASSERT_EQ(job.inner_optimizer, GP_INNER_ADAMW);
	ASSERT_EQ(job.outer_optimizer, GP_OUTER_NESTEROV);

	/* CRLF line ends, a BOM and a count for the checkpoint interval. */
	ASSERT_OK(parse("\xef\xbb\xbf[model]\r\nspec = 10-5-2\r\n[train]\r\n"
			"checkpoint_interval = 250 minibatches\r\n",
			&job, err, sizeof(err)));
	ASSERT_EQ(job.n_layers, 3);
	ASSERT_EQ(job.checkpoint_interval_minibatches, 250);
	ASSERT_EQ(job.checkpoint_interval_ms, 0);
}

static void test_errors(void)
{
	char long_line[400];

	expect_error("[model]\nspec = 784-10\n[train]\nepochs = 3\nx = 1\n",
		     "t.job:5: unknown key 'x' in [train]");
	expect_error("[model]\nseed = 2\n",
		     "t.job: [model] needs spec = (layer widths, as in "
		     "784-256-128-10) or file = (a gradpool-model 1 "
		     "description)");
	expect_error("[model]\nspec = 784-10\nfile = cnn.model\n",
		     "t.job: [model] has both spec and file; give one");
	expect_error("[model]\nspec = 784-10\n[train]\nepochs = 0\n",
		     "t.job:4: value 0 out of range for 'epochs' in [train] "
		     "(1 to 100000)");
	expect_error("[model]\nspec = 784-10\n[train]\nepochs = -1\n",
		     "t.job:4: bad value for 'epochs' in [train]: '-1' is "
		     "not a non-negative integer");
	expect_error("[model]\nspec = 784-10\n[train]\nlearning_rate = fast\n",
		     "t.job:4: bad value for 'learning_rate' in [train]: "
		     "'fast' is not a number");
	expect_error("[model]\nspec = 784-10\n[train]\nlearning_rate = nan\n",
		     "t.job:4: bad value for 'learning_rate' in [train]: "
		     "value 'nan' is not a finite number");
	expect_error("[model]\nspec = 784-10\n[train]\n"
		     "outer_optimizer = adam\n",
		     "t.job:4: bad value for 'outer_optimizer' in [train]: "
		     "unknown outer_optimizer 'adam' (none or nesterov)");
	expect_error("[model]\nspec = 784-10\n[train]\nouter_lr = 0\n",
		     "t.job:4: value 0 out of range for 'outer_lr' in [train] "
		     "(1e-06 to 10)");
	expect_error("[model]\nspec = 784-10\n[train]\n"
		     "outer_momentum = 1\n",
		     "t.job:4: value 1 out of range for 'outer_momentum' in "
		     "[train] (0 to 0.999)");
	expect_error("[model]\nspec = 784-10\n[pool]\nrun_steps = 1\n",
		     "t.job:4: value 1 out of range for 'run_steps' in [pool] "
		     "(2 to 2048)");
	expect_error("[model]\nspec = 784-10\n[train]\n"
		     "outer_optimizer = nesterov\n",
		     "t.job: outer_optimizer = nesterov needs verify_rate = 0 "
		     "in [pool] (verification cannot take back an update "
		     "through the outer momentum yet)");
	expect_error("[model]\nspec = 784-10\n[train]\noptimizer = adamw\n"
		     "outer_optimizer = nesterov\n[pool]\nverify_rate = 0\n",
		     "t.job: outer_optimizer = nesterov needs optimizer = sgd "
		     "or sgd-momentum, or inner_optimizer = adamw, in "
		     "[train] (AdamW on the coordinator takes no local "
		     "steps)");
	expect_error("[model]\nspec = 784-10\n[train]\n"
		     "inner_optimizer = adamw\n",
		     "t.job: inner_optimizer = adamw needs optimizer = adamw "
		     "in [train] (its settings are the job's AdamW's)");
	/* Betas under which an AdamW step has no small bound: an honest
	 * delta could pass the coordinator's sanity bound. */
	expect_error("[model]\nspec = 784-10\n[train]\noptimizer = adamw\n"
		     "beta2 = 0.999999\ninner_optimizer = adamw\n",
		     "t.job: inner_optimizer = adamw needs betas that bound "
		     "a step: beta1^2 < beta2 and (1 - beta1) / sqrt((1 - "
		     "beta2) (1 - beta1^2 / beta2)) at most 50 in [train] "
		     "(beta1 0.9 and beta2 0.999999 give 229.416)");
	expect_error("[model]\nspec = 784-10\n[train]\noptimizer = adamw\n"
		     "beta1 = 0.99\nbeta2 = 0.95\ninner_optimizer = adamw\n",
		     "t.job: inner_optimizer = adamw needs betas that bound "
		     "a step: beta1^2 < beta2 and (1 - beta1) / sqrt((1 - "
		     "beta2) (1 - beta1^2 / beta2)) at most 50 in [train] "
		     "(beta1 0.99 and beta2 0.95 give inf)");
	expect_error("[model]\nspec = 784-10\n[train]\n"
		     "inner_optimizer = lion\n",
		     "t.job:4: bad value for 'inner_optimizer' in [train]: "
		     "unknown inner_optimizer 'lion' (none or adamw)");
	expect_error("[model]\nspec = 784-10\n[tran]\nepochs = 3\n",
		     "t.job:4: unknown section [tran]");
	expect_error("spec = 784-10\n",
		     "t.job:1: key 'spec' outside any [section]");
	expect_error("[model]\nspec = 784-10\nspec = 1-1\n",
		     "t.job:3: duplicate key 'spec' in [model]");
	expect_error("[model]\nspec = 784-10\n  -5\n",
		     "t.job:3: continuation lines are not supported (value "
		     "of 'spec' in [model])");
	expect_error("[model]\nspec = 784-10\n[train\n",
		     "t.job:3: syntax error (expected '[section]' or 'key = "
		     "value')");
	expect_error("[model]\nspec = 784-10\njunk\n[train]\nfoo = 1\n",
		     "t.job:3: syntax error (expected '[section]' or 'key = "
		     "value')");
	expect_error("[model]\nspec = 784\n",
		     "t.job:2: bad value for 'spec' in [model]: needs at least "
		     "an input and an output width, as in 784-10");
	expect_error("[model]\nspec = 784-0\n",
		     "t.job:2: bad value for 'spec' in [model]: layer width 0 "
		     "out of range (1 to 65536)");
	expect_error("[model]\nspec = 784--10\n",
		     "t.job:2: bad value for 'spec' in [model]: '784--10' is "
		     "not a list of layer widths such as 784-256-128-10");
	/* Robust aggregation: off (0) or a factor of at least 1. */
	expect_error("[model]\nspec = 784-10\n[pool]\nrobust_clip = 0.5\n",
		     "t.job: robust_clip (0.5) must be 0 (off) or at least 1 "
		     "in [pool]");
	/* 4-bit updates: 8 or 4, and 4 only with int8. */
	expect_error("[model]\nspec = 784-10\n[pool]\nupdate_bits = 2\n",
		     "t.job:4: bad value for 'update_bits' in [pool]: '2' is "
		     "neither 8 nor 4");
	expect_error("[model]\nspec = 784-10\n[pool]\nint8 = false\n"
		     "update_bits = 4\n",
		     "t.job: update_bits = 4 needs int8 = true in [pool] "
		     "(int8 = false sends updates as f16)");
	/* 4-bit parameter changes: 8 or 4, and 4 only with param_delta
	 * and int8 (without either there are no q8 changes to halve). */
	expect_error("[model]\nspec = 784-10\n[pool]\nparam_bits = 16\n",
		     "t.job:4: bad value for 'param_bits' in [pool]: '16' is "
		     "neither 8 nor 4");
	expect_error("[model]\nspec = 784-10\n[pool]\nparam_delta = false\n"
		     "param_bits = 4\n",
		     "t.job: param_bits = 4 needs param_delta = true and "
		     "int8 = true in [pool] (4-bit parameter changes go only "
		     "where int8 changes would)");
	expect_error("[model]\nspec = 784-10\n[pool]\nint8 = false\n"
		     "param_bits = 4\n",
		     "t.job: param_bits = 4 needs param_delta = true and "
		     "int8 = true in [pool] (4-bit parameter changes go only "
		     "where int8 changes would)");
	expect_error("[model]\nspec = 784-10\n[pool]\nrobust_momentum = 1\n",
		     "t.job:4: value 1 out of range for 'robust_momentum' in "
		     "[pool] (0 to 0.999)");
	expect_error("[model]\nspec = 784-10\n[train]\noptimizer = adam\n",
		     "t.job:4: bad value for 'optimizer' in [train]: unknown "
		     "optimizer 'adam' (sgd, sgd-momentum or adamw)");
	expect_error("[model]\nspec = 784-10\n[train]\nbeta2 = 1\n",
		     "t.job:4: value 1 out of range for 'beta2' in [train] "
		     "(0 to 0.999999)");
	expect_error("[model]\nspec = 784-10\n[train]\neval = maybe\n",
		     "t.job:4: bad value for 'eval' in [train]: 'maybe' is "
		     "not a boolean (true or false)");
	expect_error("[model]\nspec = 784-10\n[train]\ncheckpoint_interval = 30"
		     "\n",
		     "t.job:4: bad value for 'checkpoint_interval' in [train]: "
		     "'30' is neither a duration (30s, 5m) nor a count (500 "
		     "minibatches)");
	expect_error("[model]\nspec = 784-10\n[pool]\nheartbeat_interval = 5\n",
		     "t.job:4: bad value for 'heartbeat_interval' in [pool]: "
		     "'5' needs a unit: ms, s, m or h (as in '30s')");
	expect_error("[model]\nspec = 784-10\n[pool]\nlisten = localhost\n",
		     "t.job:4: bad value for 'listen' in [pool]: 'localhost' "
		     "is not host:port (as in 127.0.0.1:7100 or [::1]:7100)");
	expect_error("[model]\nspec = 784-10\n[pool]\nlisten = h:70000\n",
		     "t.job:4: bad value for 'listen' in [pool]: 'h:70000' "
		     "is not host:port (as in 127.0.0.1:7100 or [::1]:7100)");
	expect_error("[model]\nspec = 784-10\n[pool]\nheartbeat_interval = 10s"
		     "\nheartbeat_timeout = 5s\n",
		     "t.job: heartbeat_timeout (5000 ms) must be longer than "
		     "heartbeat_interval (10000 ms) in [pool]");
	expect_error("[model]\nspec = 784-10\n[data]\nset = Fashion MNIST\n",
		     "t.job:4: bad value for 'set' in [data]: 'Fashion MNIST' "
		     "is not a data set name (a-z, 0-9 and '-', at most 31 "
		     "characters)");

	/* Over-long lines and NUL bytes are refused, not mangled. */
	memset(long_line, 'x', sizeof(long_line));
	memcpy(long_line, "[data]\ndir = ", 13);
	long_line[sizeof(long_line) - 1] = '\0';
	expect_error(long_line,
		     "t.job:2: line too long (at most 197 characters)");
	{
		static const char nul[] = "[model]\nspec = 7\0-10\n";
		struct gp_job job;
		char err[256];

		ASSERT_EQ(gp_job_parse("t.job", nul, sizeof(nul) - 1, &job, err,
				       sizeof(err)),
			  -EINVAL);
		ASSERT_STR_EQ(err, "t.job:2: NUL byte in a text file");
	}
}

static void test_file(void)
{
	char dir[] = "/tmp/gp-test-job-XXXXXX", path[128], err[256];
	struct gp_job job;
	FILE *f;

	ASSERT_NOT_NULL(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/main.job", dir);
	ASSERT_EQ(gp_job_parse_file(path, &job, err, sizeof(err)), -ENOENT);
	ASSERT_NOT_NULL(strstr(err, path));
	f = fopen(path, "w");
	ASSERT_NOT_NULL(f);
	fputs("[model]\nspec = 784-256-128-10\n[train]\nepochs = 2\nbad\n", f);
	fclose(f);
	ASSERT_EQ(gp_job_parse_file(path, &job, err, sizeof(err)), -EINVAL);
	ASSERT_NOT_NULL(strstr(err, ":5: syntax error"));
	ASSERT(strncmp(err, path, strlen(path)) == 0);
	f = fopen(path, "w");
	ASSERT_NOT_NULL(f);
	fputs("[model]\nspec = 784-256-128-10\n[train]\nepochs = 2\n", f);
	fclose(f);
	ASSERT_OK(gp_job_parse_file(path, &job, err, sizeof(err)));
	ASSERT_EQ(job.epochs, 2);
	unlink(path);
	rmdir(dir);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	ASSERT_NOT_NULL(f);
	fputs(text, f);
	fclose(f);
}

/* [model] file =: a description beside the job file, its errors named
 * with file and line, and the shorthand path unchanged. */
static void test_model_file(void)
{
	char dir[] = "/tmp/gp-test-model-XXXXXX", job_path[128], model[128],
	     buf[256], err[2048];
	struct gp_model_spec spec;
	struct gp_job job;

	ASSERT_NOT_NULL(mkdtemp(dir));
	snprintf(job_path, sizeof(job_path), "%s/cnn.job", dir);
	snprintf(model, sizeof(model), "%s/cnn.model", dir);

	ASSERT_OK(parse("[model]\nfile = cnn.model\nseed = 3\n", &job, err,
			sizeof(err)));
	ASSERT_STR_EQ(job.model_file, "cnn.model");
	ASSERT_STR_EQ(job.spec, "");
	ASSERT_EQ(gp_job_model_path(&job, job_path, buf, sizeof(buf)),
		  (int)strlen(model));
	ASSERT_STR_EQ(buf, model);
	/* A job file named without a directory: the name as it is. */
	ASSERT_OK(gp_job_model_path(&job, "cnn.job", buf, sizeof(buf)) > 0 ? 0 : -1);
	ASSERT_STR_EQ(buf, "cnn.model");
	ASSERT_EQ(gp_job_model_path(&job, job_path, buf, 8), -ENAMETOOLONG);

	/* Missing file: its path and the job that names it. */
	ASSERT_EQ(gp_job_load_model(&job, job_path, &spec, err, sizeof(err)),
		  -ENOENT);
	ASSERT_NOT_NULL(strstr(err, model));
	ASSERT_NOT_NULL(strstr(err, "No such file"));
	ASSERT_NOT_NULL(strstr(err, "the [model] file of"));

	write_text(model, "gradpool-model 1\n"
			  "input shape=1x28x28\n"
			  "conv2d conv1 out=4 kernel=3 padding=1\n"
			  "relu relu1\n"
			  "maxpool2d pool1 kernel=2\n"
			  "flatten flat\n"
			  "dense fc1 out=10\n"
			  "softmax_xent loss\n");
	ASSERT_OK(gp_job_load_model(&job, job_path, &spec, err, sizeof(err)));
	ASSERT_EQ(spec.version, 1);
	ASSERT_EQ(spec.n_nodes, 7);
	ASSERT_EQ(spec.dims[0], 784);
	ASSERT_EQ(spec.dims[spec.n_layers], 10);

	/* A bad line: file, line, layer and problem. */
	write_text(model, "gradpool-model 1\n"
			  "input shape=1x28x28\n"
			  "conv2d conv1 out=4 kernel=0\n"
			  "flatten flat\n"
			  "dense fc1 out=10\n"
			  "softmax_xent loss\n");
	ASSERT_EQ(gp_job_load_model(&job, job_path, &spec, err, sizeof(err)),
		  -EINVAL);
	ASSERT(strncmp(err, model, strlen(model)) == 0);
	ASSERT_NOT_NULL(strstr(err, "line 3"));
	ASSERT_NOT_NULL(strstr(err, "conv1"));

	/* The shorthand is no description. */
	write_text(model, "784-10");
	ASSERT_EQ(gp_job_load_model(&job, job_path, &spec, err, sizeof(err)),
		  -EINVAL);
	ASSERT_NOT_NULL(strstr(err, "not a model description"));

	/* spec = goes through the same call. */
	ASSERT_OK(parse("[model]\nspec = 784-32-10\n", &job, err, sizeof(err)));
	ASSERT_EQ(gp_job_model_path(&job, job_path, buf, sizeof(buf)), -ENOENT);
	ASSERT_OK(gp_job_load_model(&job, job_path, &spec, err, sizeof(err)));
	ASSERT_EQ(spec.version, 0);
	ASSERT_EQ(spec.dims[1], 32);

	unlink(model);
	rmdir(dir);
}

/* [data] format = npy: the four files or a held-out share, and paths
 * relative to the job file's directory. */
static void test_npy_data(void)
{
	struct gp_job job;
	char err[256], path[64];

	ASSERT_OK(parse("[model]\nspec = 784-10\n[data]\nformat = npy\n"
			"train_images = x.npy\ntrain_labels = /d/y.npy\n"
			"test_share = 0.1\n", &job, err, sizeof(err)));
	ASSERT(job.data_npy);
	ASSERT_STR_EQ(job.train_images, "x.npy");
	ASSERT(job.test_share == 0.1);
	ASSERT_EQ(gp_job_data_path(job.train_images, "/etc/gp/job.ini", path,
				   sizeof(path)), 13);
	ASSERT_STR_EQ(path, "/etc/gp/x.npy");
	gp_job_data_path(job.train_labels, "/etc/gp/job.ini", path,
			 sizeof(path));
	ASSERT_STR_EQ(path, "/d/y.npy");
	ASSERT_OK(parse("[model]\nspec = 784-10\n[data]\nformat = npy\n"
			"train_images = a\ntrain_labels = b\n"
			"test_images = c\ntest_labels = d\n", &job, err,
			sizeof(err)));
	ASSERT(job.test_share == 0);
	expect_error("[model]\nspec = 784-10\n[data]\nformat = csv\n",
		     "t.job:4: bad value for 'format' in [data]: 'csv' is not "
		     "a data format (idx or npy)");
	expect_error("[model]\nspec = 784-10\n[data]\nformat = npy\n"
		     "train_images = a\n",
		     "t.job: [data] format = npy needs train_images and "
		     "train_labels");
	expect_error("[model]\nspec = 784-10\n[data]\nformat = npy\n"
		     "train_images = a\ntrain_labels = b\n",
		     "t.job: [data] format = npy needs a test set: test_images "
		     "and test_labels, or test_share (not both)");
	expect_error("[model]\nspec = 784-10\n[data]\nformat = npy\n"
		     "train_images = a\ntrain_labels = b\ntest_images = c\n"
		     "test_share = 0.2\n",
		     "t.job: [data] format = npy needs a test set: test_images "
		     "and test_labels, or test_share (not both)");
	expect_error("[model]\nspec = 784-10\n[data]\ntest_share = 0.2\n",
		     "t.job: [data] train_images, train_labels, test_images, "
		     "test_labels and test_share need format = npy");
	expect_error("[model]\nspec = 784-10\n[data]\nformat = npy\n"
		     "train_images = a\ntrain_labels = b\ntest_share = 0.6\n",
		     "t.job:7: value 0.6 out of range for 'test_share' in "
		     "[data] (0 to 0.5)");
}

int main(void)
{
	test_npy_data();
	test_full();
	test_defaults();
	test_errors();
	test_file();
	test_model_file();
	printf("job: all tests passed\n");
	return 0;
}
