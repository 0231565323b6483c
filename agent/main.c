/* gradpool-agent: the volunteer's daemon and command line.
 *
 *   join TOKEN [--name NAME]     join the pool the invite token names
 *   run [--device auto|cpu|opencl:N] [--threads N]
 *                                compute for the pool until stopped
 *   stats [--json] [--by day|pool|device]
 *                                what this machine contributed
 *
 * Every command takes --state DIR (default $GRADPOOL_AGENT_STATE or
 * /var/lib/gradpool-agent): agent.key (identity, 0600) and agent.db. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "gp-config.h"
#include "identity.h"
#include "log.h"
#include "session.h"
#include "stats.h"
#include "token.h"
#include "util.h"

#define DEFAULT_STATE "/var/lib/gradpool-agent"

struct options {
	const char *state;
	const char *name;
	const char *device;
	const char *by;
	int threads;
	unsigned step_delay_ms;
	bool json;
	bool exit_when_done;
	bool no_bench;
};

static void usage(FILE *f)
{
	fputs("usage: gradpool-agent COMMAND [OPTIONS]\n"
	      "\n"
	      "commands:\n"
	      "  join TOKEN [--name NAME]   join the pool an invite token names\n"
	      "  run [--device auto|cpu|opencl:N] [--threads N] [--exit-when-done]\n"
	      "                             compute for the pool until stopped\n"
	      "  stats [--json] [--by day|pool|device]\n"
	      "                             this machine's contribution, from its "
	      "own database\n"
	      "\n"
	      "every command: --state DIR (default $GRADPOOL_AGENT_STATE or "
	      DEFAULT_STATE ")\n",
	      f);
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "state", required_argument, NULL, 's' },
		{ "name", required_argument, NULL, 'n' },
		{ "device", required_argument, NULL, 'd' },
		{ "threads", required_argument, NULL, 't' },
		{ "by", required_argument, NULL, 'b' },
		{ "json", no_argument, NULL, 'J' },
		{ "exit-when-done", no_argument, NULL, 'x' },
		{ "no-bench", no_argument, NULL, 'B' },
		/* Test only: sleep this long after each step, to play a slow
		 * laptop in the straggler tests and benchmarks. */
		{ "test-step-delay-ms", required_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "s:h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			o->state = optarg;
			break;
		case 'n':
			o->name = optarg;
			break;
		case 'd':
			o->device = optarg;
			break;
		case 't':
			o->threads = atoi(optarg);
			break;
		case 'b':
			o->by = optarg;
			break;
		case 'J':
			o->json = true;
			break;
		case 'x':
			o->exit_when_done = true;
			break;
		case 'B':
			o->no_bench = true;
			break;
		case 'D':
			o->step_delay_ms = (unsigned)atoi(optarg);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	return 0;
}

static int open_state(const char *dir, struct gp_identity **ret_id,
		      struct gp_stats **ret_stats, unsigned stats_flags)
{
	char path[600], err[512];
	int r;

	if (ret_id) {
		if (mkdir(dir, 0700) < 0 && errno != EEXIST)
			return gp_log_errno(GP_LOG_ERROR, -errno, "%s: cannot create",
					    dir);
		snprintf(path, sizeof(path), "%s/agent.key", dir);
		r = gp_identity_load_or_create(path, ret_id, err, sizeof(err));
		if (r < 0) {
			gp_error("%s", err);
			return r;
		}
	}
	snprintf(path, sizeof(path), "%s/agent.db", dir);
	r = gp_stats_open(path, stats_flags, ret_stats, err, sizeof(err));
	if (r < 0) {
		gp_error("%s%s", err, r == -ENOENT ?
			 " (join a pool first: gradpool-agent join TOKEN)" : "");
		if (ret_id) {
			gp_identity_destroy(*ret_id);
			*ret_id = NULL;
		}
		return r;
	}
	return 0;
}

static void default_name(char *buf, size_t len)
{
	if (gethostname(buf, len) < 0 || !buf[0])
		snprintf(buf, len, "agent");
	buf[len - 1] = '\0';
}

static int cmd_join(struct options *o, const char *text)
{
	struct gp_session_config cfg = { 0 };
	struct gp_token *tok = NULL;
	enum gp_token_error te;
	struct gp_identity *id = NULL;
	struct gp_stats *stats = NULL;
	int r;

	if (!text) {
		gp_error("join needs the invite token");
		return -EINVAL;
	}
	r = gp_token_create(&tok);
	if (r < 0)
		return r;
	r = gp_token_parse(text, tok, &te);
	if (r < 0) {
		gp_error("the invite token is not valid: %s", gp_token_error_str(te));
		goto out;
	}
	if (tok->expires_at && tok->expires_at < (uint64_t)gp_now_s()) {
		gp_error("the invite token has expired");
		r = -EKEYEXPIRED;
		goto out;
	}
	r = open_state(o->state, &id, &stats, GP_STATS_CREATE);
	if (r < 0)
		goto out;
	cfg.id = id;
	cfg.stats = stats;
	if (o->name)
		snprintf(cfg.name, sizeof(cfg.name), "%s", o->name);
	else
		default_name(cfg.name, sizeof(cfg.name));
	r = gp_session_join(&cfg, tok);
out:
	gp_stats_close(stats);
	gp_identity_destroy(id);
	gp_token_destroy(tok);
	return r;
}

/* Benchmarks every device (CPU path first, then each OpenCL device) and
 * fills cfg's device list; picks the device to use from --device. */
static int pick_device(struct options *o, struct gp_session_config *cfg)
{
	struct gp_device_info *list = NULL;
	size_t n = 0, best = 0;
	double best_speed = -1;
	bool want_cl = false, want_cpu = false;
	int want_index = -1;
	int r;

	if (!o->device || strcmp(o->device, "auto") == 0)
		;
	else if (strcmp(o->device, "cpu") == 0)
		want_cpu = true;
	else if (strncmp(o->device, "opencl", 6) == 0) {
		want_cl = true;
		if (o->device[6] == ':')
			want_index = atoi(o->device + 7);
	} else {
		gp_error("--device: '%s' is not auto, cpu or opencl:N", o->device);
		return -EINVAL;
	}
	r = gp_backend_list_devices(&list, &n);
	if (r < 0)
		return gp_log_errno(GP_LOG_ERROR, r, "cannot list devices");
	for (size_t i = 0; i < n && cfg->n_devices < GP_MSG_DEVICES_MAX; i++) {
		struct gp_msg_device *d = &cfg->devices[cfg->n_devices];
		struct gp_bench_result res = { 0 };
		struct gp_backend *be = NULL;
		bool is_cl = list[i].type == GP_BACKEND_OPENCL;
		bool wanted = want_cpu ? !is_cl :
			      want_cl ? is_cl && (want_index < 0 ||
						  list[i].index == want_index) :
					true;

		/* Benchmark what may be used; list the rest unmeasured. */
		if (wanted && !o->no_bench) {
			r = is_cl ? gp_backend_create_opencl(list[i].index, &be) :
				    gp_backend_create_cpu(o->threads, &be);
			if (r >= 0)
				gp_bench_run(be, 0.3, &res);
			else
				gp_warn("%s: cannot open: %s", list[i].name,
					be ? gp_backend_error(be) : strerror(-r));
			gp_backend_destroy(be);
			if (r < 0)
				continue;
		}
		d->kind = strcmp(list[i].kind, "gpu") == 0 ? GP_DEVICE_GPU :
			  strcmp(list[i].kind, "cpu") == 0 ? GP_DEVICE_CPU :
			  strcmp(list[i].kind, "accelerator") == 0 ? GP_DEVICE_ACCELERATOR :
								     GP_DEVICE_OTHER;
		snprintf(d->name, sizeof(d->name), "%s%.*s",
			 is_cl ? "opencl: " : "cpu: ", (int)sizeof(d->name) - 9,
			 list[i].name);
		d->gflops = (float)res.gemm_gflops;
		d->samples_per_s = (float)res.step_samples_per_s;
		d->memory = list[i].global_mem;
		if (res.gemm_gflops > 0)
			gp_info("device %s: %.1f GFLOP/s SGEMM, %.0f samples/s", d->name,
				res.gemm_gflops, res.step_samples_per_s);
		if (wanted && res.step_samples_per_s >= best_speed) {
			best_speed = res.step_samples_per_s;
			best = i;
			cfg->backend = list[i].type;
			cfg->device_index = list[i].index;
			snprintf(cfg->device_name, sizeof(cfg->device_name), "%.*s",
				 (int)sizeof(cfg->device_name) - 1, d->name);
		}
		cfg->n_devices++;
	}
	free(list);
	if (best_speed < 0) {
		gp_error("no usable device matches --device %s", o->device);
		return -ENODEV;
	}
	(void)best;
	gp_info("computing on %s", cfg->device_name);
	return 0;
}

static int cmd_run(struct options *o)
{
	struct gp_session_config cfg = { 0 };
	struct gp_identity *id = NULL;
	struct gp_stats *stats = NULL;
	struct gp_stats_membership *pools = NULL;
	size_t n = 0;
	int r;

	r = open_state(o->state, &id, &stats, 0);
	if (r < 0)
		return r;
	r = gp_stats_membership_list(stats, &pools, &n);
	if (r < 0) {
		gp_error("%s", gp_stats_error(stats));
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if (!pools[i].left_at) {
			cfg.pool = pools[i];
			break;
		}
	if (!cfg.pool.pool[0]) {
		gp_error("not a member of any pool (gradpool-agent join TOKEN)");
		r = -ENOENT;
		goto out;
	}
	cfg.id = id;
	cfg.stats = stats;
	cfg.threads = o->threads;
	cfg.step_delay_ms = o->step_delay_ms;
	cfg.exit_when_done = o->exit_when_done;
	if (o->name)
		snprintf(cfg.name, sizeof(cfg.name), "%s", o->name);
	else
		default_name(cfg.name, sizeof(cfg.name));
	r = pick_device(o, &cfg);
	if (r < 0)
		goto out;
	gp_info("working for pool %s at %s", cfg.pool.pool, cfg.pool.endpoints);
	r = gp_session_run(&cfg);
out:
	free(pools);
	gp_stats_close(stats);
	gp_identity_destroy(id);
	return r;
}

static int cmd_stats(struct options *o)
{
	struct gp_stats *stats = NULL;
	struct gp_stats_row *rows = NULL, *tot = NULL;
	struct gp_stats_membership *pools = NULL;
	size_t n = 0, nt = 0, np = 0;
	unsigned group = GP_STATS_BY_DAY;
	int r;

	if (o->by) {
		group = 0;
		if (strstr(o->by, "day"))
			group |= GP_STATS_BY_DAY;
		if (strstr(o->by, "pool"))
			group |= GP_STATS_BY_POOL;
		if (strstr(o->by, "device"))
			group |= GP_STATS_BY_DEVICE;
		if (!group) {
			gp_error("--by: '%s' is not day, pool or device", o->by);
			return -EINVAL;
		}
	}
	r = open_state(o->state, NULL, &stats, GP_STATS_READONLY | GP_STATS_CHECK);
	if (r < 0)
		return r;
	r = gp_stats_query(stats, group, NULL, &rows, &n);
	if (r >= 0)
		r = gp_stats_query(stats, 0, NULL, &tot, &nt);
	if (r >= 0)
		r = gp_stats_membership_list(stats, &pools, &np);
	if (r < 0) {
		gp_error("%s", gp_stats_error(stats));
		goto out;
	}
	if (o->json)
		r = gp_stats_format_json(stdout, group, rows, n, nt ? tot : NULL,
					 pools, np);
	else
		r = gp_stats_format_table(stdout, group, rows, n, nt ? tot : NULL);
out:
	free(rows);
	free(tot);
	free(pools);
	gp_stats_close(stats);
	return r;
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	const char *cmd;
	int r;

	gp_log_init("gradpool-agent");
	umask(077);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "--version") == 0) {
		printf("gradpool-agent %s\n", GP_VERSION);
		return 0;
	}
	argc--;
	argv++;
	if (parse_options(argc, argv, &o) < 0)
		return 2;
	if (!o.state)
		o.state = getenv("GRADPOOL_AGENT_STATE") ?
				  getenv("GRADPOOL_AGENT_STATE") : DEFAULT_STATE;
	if (strcmp(cmd, "join") == 0)
		r = cmd_join(&o, optind < argc ? argv[optind] : NULL);
	else if (strcmp(cmd, "run") == 0)
		r = cmd_run(&o);
	else if (strcmp(cmd, "stats") == 0)
		r = cmd_stats(&o);
	else {
		gp_error("unknown command '%s'", cmd);
		usage(stderr);
		return 2;
	}
	return r < 0 ? 1 : 0;
}
