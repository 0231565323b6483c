/* gradpool-agent: the volunteer's daemon and command line.
 *
 *   join TOKEN [--name NAME]     join the pool the invite token names
 *   run [--device auto|cpu|opencl:N] [--threads N] [policy overrides]
 *                                compute for the pool until stopped
 *   status [--json]              connected, paused or waiting, and why
 *   pause | resume               stop and restart computing (control socket)
 *   name [NAME | --clear | --default]
 *                                the public name shown with this machine's
 *                                credit (default: none, not public)
 *   leave [POOL]                 leave a pool (the coordinator is told)
 *   stats [--json] [--by day|pool|device]
 *                                what this machine contributed
 *   web [--listen ADDR:PORT]     the local statistics page
 *
 * Every command takes --state DIR (default $GRADPOOL_AGENT_STATE, the
 * configuration's state_dir, or /var/lib/gradpool-agent): agent.key
 * (identity, 0600) and agent.db; --config FILE (default
 * $GRADPOOL_AGENT_CONFIG or /etc/gradpool/agent.conf, optional);
 * --control PATH (the control socket: default /run/gradpool-agent/control
 * with the default state directory, STATE/control otherwise). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench.h"
#include "config.h"
#include "control.h"
#include "gp-config.h"
#include "identity.h"
#include "log.h"
#include "notify.h"
#include "session.h"
#include "stats.h"
#include "status.h"
#include "token.h"
#include "util.h"
#include "web.h"

#define DEFAULT_STATE "/var/lib/gradpool-agent"

struct options {
	const char *state;
	const char *config;
	const char *control;
	const char *name;
	const char *device;
	const char *by;
	const char *web_listen;
	int threads;
	struct gp_testhooks test;            /* the hidden --test-* flags */
	bool json;
	bool exit_when_done;
	bool no_bench;
	/* Per-run overrides of the configuration's [limits] and [stats]. */
	int idle_only, on_ac_only, web;      /* -1: from the configuration */
	double cpu_share, gpu_share;         /* 0: from the configuration */
	const char *hours;
	long beacon_port;                    /* -1: from the configuration */
	const char *data_dir;                /* NULL: from the configuration */
	const char *pause_for;               /* pause --for DURATION */
	int name_mode;                       /* name: 'c' --clear, 'd' --default */
	char control_buf[300];
	struct gp_agent_config cfg;
};

static void usage(FILE *f)
{
	fputs("usage: gradpool-agent COMMAND [OPTIONS]\n"
	      "\n"
	      "commands:\n"
	      "  join TOKEN [--name NAME]   join the pool an invite token names\n"
	      "  run [--device auto|cpu|opencl:N] [--threads N] [--exit-when-done]\n"
	      "                             compute for the pool until stopped\n"
	      "      [--idle-only|--no-idle-only] [--on-ac-only|--no-on-ac-only]\n"
	      "      [--cpu-share X] [--gpu-share X] [--hours HH:MM-HH:MM,...]\n"
	      "      [--beacon-port N] [--web[=ADDR:PORT]|--no-web]\n"
	      "      [--data-dir DIR|none] (a local copy of the training set)\n"
	      "                             (overrides of agent.conf for this run)\n"
	      "  status [--json]            connected, paused or waiting, and why\n"
	      "  pause [--for DURATION]     stop computing (until resume, or for\n"
	      "                             e.g. 30m, 2h; kept across restarts)\n"
	      "  resume                     compute again\n"
	      "  finish                     answer the work in hand, then stop\n"
	      "  leave [POOL]               leave a pool; the coordinator is told\n"
	      "  name [NAME|--clear|--default]\n"
	      "                             the public name the pool may show with\n"
	      "                             your credit (--clear: not public;\n"
	      "                             --default: agent.conf's public_name)\n"
	      "  stats [--json] [--by day|pool|device]\n"
	      "                             this machine's contribution, from its "
	      "own database\n"
	      "  web [--listen ADDR:PORT]   serve the statistics page on loopback\n"
	      "\n"
	      "every command: --state DIR (default $GRADPOOL_AGENT_STATE or "
	      DEFAULT_STATE "),\n"
	      "  --config FILE (default $GRADPOOL_AGENT_CONFIG or "
	      GP_AGENT_CONFIG_DEFAULT "),\n"
	      "  --control PATH (the running agent's control socket)\n",
	      f);
}

/* The overrides of agent.conf for one run (option code c, argument arg).
 * Returns 0, 1 when c is not one of them, or -EINVAL (logged). */
static int parse_run_option(int c, const char *arg, struct options *o)
{
	switch (c) {
	case 'I':
	case 'i':
		o->idle_only = c == 'I';
		break;
	case 'A':
	case 'a':
		o->on_ac_only = c == 'A';
		break;
	case 'U':
	case 'G': {
		char *end;
		double v = strtod(arg, &end);

		if (*end || !(v >= 0.01 && v <= 1)) {
			gp_error("--%s: '%s' is not a share in [0.01, 1]",
				 c == 'U' ? "cpu-share" : "gpu-share", arg);
			return -EINVAL;
		}
		if (c == 'U')
			o->cpu_share = v;
		else
			o->gpu_share = v;
		break;
	}
	case 'H':
		o->hours = arg;
		break;
	case 'R':
		if (strlen(arg) >= sizeof(o->cfg.data_dir)) {
			gp_error("--data-dir: too long");
			return -EINVAL;
		}
		o->data_dir = arg;
		break;
	case 'P': {
		char *end;

		o->beacon_port = strtol(arg, &end, 10);
		if (*end || o->beacon_port < 0 || o->beacon_port > 65535) {
			gp_error("--beacon-port: '%s' is not a port", arg);
			return -EINVAL;
		}
		break;
	}
	case 'W':
		o->web = 1;
		if (arg)
			o->web_listen = arg;
		break;
	case 'w':
		o->web = 0;
		break;
	default:
		return 1;
	}
	return 0;
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
		/* Test only: the Nth minibatch fails once, as a transient
		 * device error would, for the tests of what the agent does
		 * then (drop the connection so its work is handed out again). */
		{ "test-fail-step", required_argument, NULL, 'F' },
		{ "config", required_argument, NULL, 'c' },
		{ "control", required_argument, NULL, 'C' },
		{ "idle-only", no_argument, NULL, 'I' },
		{ "no-idle-only", no_argument, NULL, 'i' },
		{ "on-ac-only", no_argument, NULL, 'A' },
		{ "no-on-ac-only", no_argument, NULL, 'a' },
		{ "cpu-share", required_argument, NULL, 'U' },
		{ "gpu-share", required_argument, NULL, 'G' },
		{ "hours", required_argument, NULL, 'H' },
		{ "beacon-port", required_argument, NULL, 'P' },
		{ "web", optional_argument, NULL, 'W' },
		{ "no-web", no_argument, NULL, 'w' },
		{ "listen", required_argument, NULL, 'l' },
		{ "data-dir", required_argument, NULL, 'R' },
		{ "for", required_argument, NULL, 'f' },
		{ "clear", no_argument, NULL, 1001 },
		{ "default", no_argument, NULL, 1002 },
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
			o->test.step_delay_ms = (unsigned)atoi(optarg);
			break;
		case 'F':
			o->test.fail_step = (unsigned)atoi(optarg);
			break;
		case 'c':
			o->config = optarg;
			break;
		case 'C':
			o->control = optarg;
			break;
		case 'l':
			o->web_listen = optarg;
			break;
		case 'f':
			o->pause_for = optarg;
			break;
		case 1001:
		case 1002:
			o->name_mode = c == 1001 ? 'c' : 'd';
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default: {
			int r = parse_run_option(c, optarg, o);

			if (r == 1)
				usage(stderr);
			if (r != 0)
				return r == 1 ? -EINVAL : r;
			break;
		}
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

/* The ids a command had before as_owner. */
struct saved_ids {
	bool switched;
	gid_t egid;
	gid_t groups[64];
	int n_groups;
};

static void as_root(struct saved_ids *s);

/* Root running a command on a state directory that belongs to another user
 * (sudo gradpool-agent join on the service's directory) acts on the files
 * there as that user, with its effective ids: a link that user planted in
 * place of agent.db, its journal or agent.key then cannot make root create
 * or overwrite a file elsewhere, and what is created belongs to the
 * service's user. as_root switches back (for the control socket, which may
 * be root's). Returns 0 (nothing to do, or switched) or a negative errno. */
static int as_owner(const char *dir, struct saved_ids *s)
{
	struct stat st;
	int r;

	memset(s, 0, sizeof(*s));
	if (geteuid() != 0 || stat(dir, &st) < 0 || !S_ISDIR(st.st_mode) ||
	    st.st_uid == 0)
		return 0;
	s->egid = getegid();
	s->n_groups = getgroups((int)(sizeof(s->groups) / sizeof(s->groups[0])),
				s->groups);
	if (s->n_groups < 0)
		return gp_log_errno(GP_LOG_ERROR, -errno, "getgroups");
	if (setgroups(1, &st.st_gid) < 0 || setegid(st.st_gid) < 0 ||
	    seteuid(st.st_uid) < 0) {
		r = -errno;
		s->switched = true;
		as_root(s);
		return gp_log_errno(GP_LOG_ERROR, r,
				    "%s: cannot act as its owner (uid %u)", dir,
				    (unsigned)st.st_uid);
	}
	s->switched = true;
	if (access(dir, R_OK | W_OK | X_OK) < 0) {
		r = -errno;
		as_root(s);
		return gp_log_errno(GP_LOG_ERROR, r,
				    "%s belongs to uid %u, who cannot use it "
				    "(the directories above it must let that "
				    "user through)", dir, (unsigned)st.st_uid);
	}
	return 0;
}

static void as_root(struct saved_ids *s)
{
	if (!s->switched)
		return;
	s->switched = false;
	if (seteuid(0) < 0 || setegid(s->egid) < 0 ||
	    setgroups((size_t)s->n_groups, s->groups) < 0) {
		/* Half switched is no state to go on in. */
		gp_error("cannot switch back to root: %s", strerror(errno));
		exit(1);
	}
	/* Changing the effective uid made the process undumpable (so that
	 * the other user could not trace it meanwhile); all root again, it
	 * may be as before (LeakSanitizer's exit check needs it). */
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

/* Asks a running agent to re-read its memberships. Returns 0 when one
 * answered. */
static int tell_reload(const struct options *o)
{
	char reply[GP_CONTROL_REPLY_MAX];

	return gp_control_request(o->control, "reload", reply, sizeof(reply),
				  5000) < 0 ? -ESRCH : 0;
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
	struct saved_ids ids = { 0 };
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
	r = as_owner(o->state, &ids);
	if (r < 0)
		goto out;
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
	as_root(&ids);
	if (r >= 0) {
		if (tell_reload(o) == 0)
			printf("the running agent picks the pool up now\n");
		else
			printf("start the agent to compute for the pool "
			       "(systemctl enable --now gradpool-agent, or "
			       "gradpool-agent run)\n");
	}
	return r;
}

/* Publishes the state of an agent that is starting, for the start-up
 * control socket and the page. */
static void starting_status(const char *why)
{
	struct gp_agent_status st = { 0 };

	snprintf(st.state, sizeof(st.state), "starting");
	snprintf(st.reason, sizeof(st.reason), "%s", why);
	st.since = gp_now_s();
	st.pid = (uint64_t)getpid();
	gp_agent_status_publish(&st);
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
		/* An OpenCL device of type CPU (PoCL) computes on the cores
		 * the CPU path uses, slower (docs/performance.md), and its
		 * first benchmark compiles every kernel: tens of seconds
		 * before a newcomer's agent could connect. auto leaves it
		 * out; --device opencl:N still takes it. */
		bool cl_cpu = is_cl && strcmp(list[i].kind, "cpu") == 0;
		bool wanted = want_cpu ? !is_cl :
			      want_cl ? is_cl && (want_index < 0 ||
						  list[i].index == want_index) :
					!cl_cpu;

		/* Benchmark what may be used; list the rest unmeasured. */
		if (wanted && !o->no_bench) {
			char why[GP_AGENT_STATUS_TEXT_MAX];

			snprintf(why, sizeof(why), "benchmarking devices: %zu of "
				 "%zu, %.*s", i + 1, n, 160, list[i].name);
			starting_status(why);
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
		else if (cl_cpu && !want_cl)
			gp_info("device %s: an OpenCL CPU device, left to the CPU "
				"path (--device opencl:%d to use it)", d->name,
				list[i].index);
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

/* The web page's view of the state, in the agent that serves it. */
static void own_state(struct gp_agent_status *ret, void *data)
{
	(void)data;
	gp_agent_status_get(ret);
}

/* The web command's view: ask the running agent, if any. */
static void remote_state(struct gp_agent_status *ret, void *data)
{
	const struct options *o = data;
	char reply[GP_CONTROL_REPLY_MAX];

	if (gp_control_request(o->control, "status", reply, sizeof(reply),
			       2000) < 0 ||
	    gp_agent_status_parse(reply, ret) < 0) {
		memset(ret, 0, sizeof(*ret));
		snprintf(ret->state, sizeof(ret->state), "stopped");
		snprintf(ret->reason, sizeof(ret->reason),
			 "no agent is running (systemctl start gradpool-agent)");
	}
}

static int start_web(struct options *o, struct gp_stats *stats,
		     gp_web_state_cb *cb, struct gp_web **ret)
{
	const char *listen = o->web_listen ? o->web_listen : o->cfg.web_listen;
	int r;

	r = gp_web_start(listen, stats, cb, o, ret);
	if (r == -EINVAL)
		gp_error("--listen '%s': the statistics page is served on "
			 "127.0.0.1, localhost or [::1] only", listen);
	else if (r < 0)
		gp_error("cannot serve the statistics page on %s: %s", listen,
			 strerror(-r));
	else {
		printf("statistics page at http://%.*s:%u/\n",
		       (int)(strrchr(listen, ':') - listen), listen,
		       gp_web_port(*ret));
		fflush(stdout);
	}
	return r;
}

/* One agent per state directory: two would share an identity and a
 * database, and the second would take the control socket over. Takes an
 * exclusive lock on the directory itself (no file of its own in it), held
 * (the descriptor left open) until the process ends. Returns 0, -EBUSY
 * (the error says so) or a negative errno. */
static int lock_state(const char *dir)
{
	int fd, r;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return gp_log_errno(GP_LOG_ERROR, -errno, "%s", dir);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		r = -errno;
		close(fd);
		if (r == -EWOULDBLOCK) {
			gp_error("another agent already runs on %s (gradpool-agent "
				 "status; systemctl status gradpool-agent)", dir);
			return -EBUSY;
		}
		return gp_log_errno(GP_LOG_ERROR, r, "%s: lock", dir);
	}
	return 0;
}

/* The public name in force: `gradpool-agent name`'s in the database, else
 * agent.conf's; "" when none (or the stored one is damaged). */
static void public_name(const struct options *o, struct gp_stats *stats,
			char *buf, size_t size)
{
	if (gp_stats_public_name_get(stats, buf, size) <= 0)
		snprintf(buf, size, "%s", o->cfg.public_name);
	if (buf[0] && gp_msg_public_name_check(buf) < 0) {
		gp_warn("the stored public name is not valid: not public "
			"(gradpool-agent name NAME)");
		buf[0] = '\0';
	}
}

/* name [NAME | --clear | --default]: records the choice in the database
 * (as its owner), tells the running agent, which tells its pool. */
static int cmd_name(struct options *o, const char *name)
{
	char reply[GP_CONTROL_REPLY_MAX], line[GP_CONTROL_LINE_MAX];
	char now[GP_MSG_PUBLIC_NAME_MAX + 1];
	struct gp_stats *stats = NULL;
	struct saved_ids ids;
	int r;

	if ((name != NULL) + (o->name_mode != 0) > 1) {
		gp_error("name: give a NAME, --clear or --default");
		return -EINVAL;
	}
	if (name && gp_msg_public_name_check(name) < 0) {
		gp_error("name: '%s' is not a public name: 1 to %d bytes of "
			 "UTF-8, no control characters, no spaces at either "
			 "end", name, GP_MSG_PUBLIC_NAME_MAX);
		return -EINVAL;
	}
	r = as_owner(o->state, &ids);
	if (r < 0)
		return r;
	r = open_state(o->state, NULL, &stats,
		       name || o->name_mode ? GP_STATS_CREATE : GP_STATS_READONLY);
	if (r >= 0 && (name || o->name_mode))
		r = gp_stats_public_name_set(stats, o->name_mode == 'd' ? NULL :
						    name ? name : "");
	if (r < 0)
		gp_error("%s", stats ? gp_stats_error(stats) : o->state);
	if (r >= 0)
		public_name(o, stats, now, sizeof(now));
	gp_stats_close(stats);
	as_root(&ids);
	if (r < 0)
		return r;
	if (name || o->name_mode) {
		snprintf(line, sizeof(line), "name %s", now);
		if (gp_control_request(o->control, line, reply, sizeof(reply),
				       5000) < 0 || strncmp(reply, "ok", 2) != 0)
			printf("recorded; the agent tells the pool when it "
			       "next starts\n");
	}
	if (now[0])
		printf("public name: %s (the pool owner may show it with your "
		       "credit)\n", now);
	else
		printf("no public name: the pool shows your credit as "
		       "anonymous\n");
	return 0;
}

static int cmd_run(struct options *o)
{
	struct gp_session_config cfg = { 0 };
	struct gp_identity *id = NULL;
	struct gp_stats *stats = NULL;
	struct gp_web *web = NULL;
	struct gp_control_starting *early = NULL;
	char cache_dir[512];
	int r;

	/* The state files as their owner's (see as_owner); the rest of the
	 * run keeps the ids it was started with (devices, sockets). */
	{
		struct saved_ids ids;

		r = as_owner(o->state, &ids);
		if (r < 0)
			return r;
		r = open_state(o->state, &id, &stats, GP_STATS_CREATE);
		if (r >= 0) {
			r = lock_state(o->state);
			if (r < 0) {
				gp_stats_close(stats);
				gp_identity_destroy(id);
			}
		}
		as_root(&ids);
	}
	if (r < 0)
		return r;
	cfg.id = id;
	cfg.stats = stats;
	cfg.threads = o->threads;
	cfg.test = o->test;
	cfg.exit_when_done = o->exit_when_done;
	cfg.control_path = o->control;
	{
		/* systemd makes /run/gradpool-agent (RuntimeDirectory=); an agent
		 * started by hand makes it itself, as the unit would. */
		char dir[sizeof(o->control_buf)];
		char *slash;

		snprintf(dir, sizeof(dir), "%s", o->control);
		slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = '\0';
			if (mkdir(dir, 0750) < 0 && errno != EEXIST)
				gp_debug("%s: %s", dir, strerror(errno));
		}
	}
	cfg.policy.idle_only = o->cfg.idle_only;
	cfg.policy.on_ac_only = o->cfg.on_ac_only;
	cfg.policy.hours = o->cfg.hours;
	cfg.policy.max_upload_bytes = o->cfg.max_upload_mib_per_day * 1024 * 1024;
	cfg.beacon_port = (uint16_t)o->cfg.beacon_port;
	cfg.data_dir = o->cfg.data_dir;
	if (o->cfg.cache_dir[0])
		snprintf(cache_dir, sizeof(cache_dir), "%s", o->cfg.cache_dir);
	else
		snprintf(cache_dir, sizeof(cache_dir), "%s/data-cache", o->state);
	cfg.cache_dir = cache_dir;
	cfg.cache_max_bytes = o->cfg.cache_max_mib * 1024 * 1024;
	if (o->name)
		snprintf(cfg.name, sizeof(cfg.name), "%s", o->name);
	else if (o->cfg.name[0])
		snprintf(cfg.name, sizeof(cfg.name), "%s", o->cfg.name);
	else
		default_name(cfg.name, sizeof(cfg.name));
	/* The benchmark takes seconds (minutes with a cold kernel cache):
	 * status, the page and systemctl say so meanwhile. */
	starting_status("benchmarking devices");
	gp_notify_status("starting: benchmarking devices");
	if (gp_control_starting_start(o->control, &early) < 0)
		gp_debug("no control socket while starting");
	if (o->cfg.web) {
		r = start_web(o, stats, own_state, &web);
		if (r < 0)
			goto out;
	}
	r = pick_device(o, &cfg);
	if (r < 0)
		goto out;
	starting_status("loading the training set and the memberships");
	cfg.starting_control = early;
	/* Read after the benchmark: a pause or a name given while it ran
	 * is recorded by the CLI. */
	public_name(o, stats, cfg.public_name, sizeof(cfg.public_name));
	if (gp_stats_pause_get(stats, &cfg.paused_until) < 0)
		gp_warn("cannot read the pause: %s", gp_stats_error(stats));
	else if (cfg.paused_until == GP_STATS_PAUSE_FOREVER)
		gp_info("paused by the user before the last stop: starting "
			"paused (gradpool-agent resume)");
	else if (cfg.paused_until > gp_now_s())
		gp_info("paused by the user until %" PRId64 " (unix time): "
			"starting paused", cfg.paused_until);
	/* The share of the device that computes: a duty cycle on its thread. */
	cfg.duty = cfg.backend == GP_BACKEND_OPENCL ? o->cfg.gpu_share :
						      o->cfg.cpu_share;
	if (cfg.duty < 1)
		gp_info("computing at most %.0f %% of the time (%s_share)",
			cfg.duty * 100, cfg.backend == GP_BACKEND_OPENCL ? "gpu" : "cpu");
	r = gp_session_run(&cfg);
out:
	gp_control_starting_destroy(early);
	gp_web_stop(web);
	gp_stats_close(stats);
	gp_identity_destroy(id);
	return r;
}

/* Every membership in the state directory's database, for status, which
 * shows them all (the running agent reports only the pool it serves).
 * Returns the list (malloc'd, owned by the caller; an empty one when the
 * agent never joined) and writes *ret_n, or NULL when the database
 * cannot be read. */
static struct gp_stats_membership *status_pools(const struct options *o,
						size_t *ret_n)
{
	struct gp_stats_membership *pools = NULL;
	struct gp_stats *stats = NULL;
	struct saved_ids ids;
	char path[600], err[512];
	int r;

	*ret_n = 0;
	if (as_owner(o->state, &ids) < 0)
		return NULL;
	snprintf(path, sizeof(path), "%s/agent.db", o->state);
	r = gp_stats_open(path, GP_STATS_READONLY, &stats, err, sizeof(err));
	if (r == -ENOENT)
		pools = calloc(1, sizeof(*pools));
	else if (r >= 0 && gp_stats_membership_list(stats, &pools, ret_n) >= 0 &&
		 !pools)
		pools = calloc(1, sizeof(*pools));
	gp_stats_close(stats);
	as_root(&ids);
	return pools;
}

static int cmd_status(struct options *o)
{
	char reply[GP_CONTROL_REPLY_MAX];
	struct gp_agent_status st;
	struct gp_stats_membership *pools;
	size_t n_pools;
	int r;

	r = gp_control_request(o->control, "status", reply, sizeof(reply), 5000);
	/* A starting agent hands the socket from its start-up thread to its
	 * loop: a moment without one, and a request caught in the old one's
	 * backlog is cut (no reply). On a loaded machine the moment can
	 * last over a second: ask again a few times. */
	for (int i = 0; i < (r == -ENOENT ? 1 : 5) && r != -EACCES &&
			r != -ETIMEDOUT &&
			(r < 0 || strncmp(reply, "state=", 6) != 0);
	     i++) {
		usleep(300 * 1000);
		r = gp_control_request(o->control, "status", reply,
				       sizeof(reply), 5000);
	}
	if (r == -EACCES) {
		gp_error("%s: permission denied (run as root or as the agent's "
			 "user: sudo gradpool-agent status)", o->control);
		return r;
	}
	if (r < 0 || gp_agent_status_parse(reply, &st) < 0) {
		memset(&st, 0, sizeof(st));
		snprintf(st.state, sizeof(st.state), "stopped");
		snprintf(st.reason, sizeof(st.reason),
			 "no agent answers on %s (systemctl start gradpool-agent)",
			 o->control);
	}
	pools = status_pools(o, &n_pools);
	gp_agent_status_print(stdout, &st, pools, n_pools, o->json);
	free(pools);
	/* Like systemctl status: 3 when nothing runs. */
	return strcmp(st.state, "stopped") == 0 ? 3 : 0;
}

/* Records the volunteer's pause (until: unix seconds, GP_STATS_PAUSE_FOREVER
 * or 0 for none) in the database, as the state's owner, so that it
 * outlives a restart of the agent. Returns 0 or a negative errno (logged). */
static int record_pause(struct options *o, int64_t until)
{
	struct gp_stats *stats = NULL;
	struct saved_ids ids;
	int r;

	r = as_owner(o->state, &ids);
	if (r < 0)
		return r;
	r = open_state(o->state, NULL, &stats, GP_STATS_CREATE);
	if (r >= 0) {
		r = gp_stats_pause_set(stats, until);
		if (r < 0)
			gp_error("%s", gp_stats_error(stats));
	}
	gp_stats_close(stats);
	as_root(&ids);
	return r;
}

/* pause [--for DURATION], resume, finish: recorded (pause, resume), then
 * told to the running agent over the control socket. */
static int cmd_pause(struct options *o, const char *what)
{
	char reply[GP_CONTROL_REPLY_MAX], line[64], t[32];
	int64_t until = 0;
	uint64_t ms = 0;
	bool starting;
	int r;

	snprintf(line, sizeof(line), "%s", what);
	if (o->pause_for && strcmp(what, "pause") != 0) {
		gp_error("--for goes with pause only");
		return -EINVAL;
	}
	if (strcmp(what, "pause") == 0) {
		if (o->pause_for && (gp_parse_duration_ms(o->pause_for, &ms) < 0 ||
				     ms < 1000)) {
			gp_error("--for: '%s' is not a duration of a second or more "
				 "(e.g. 90s, 30m, 2h, 1d)", o->pause_for);
			return -EINVAL;
		}
		until = o->pause_for ? gp_now_s() + (int64_t)((ms + 999) / 1000) :
				       GP_STATS_PAUSE_FOREVER;
		if (o->pause_for)
			snprintf(line, sizeof(line), "pause %" PRId64, until);
	}
	/* The running agent applies and records it; with none running, it
	 * is recorded here for the next start. */
	r = gp_control_request(o->control, line, reply, sizeof(reply), 5000);
	if (r == -EACCES) {
		gp_error("%s: permission denied (run as root or as the agent's "
			 "user)", o->control);
		return r;
	}
	starting = r >= 0 && strncmp(reply, "error: the agent is starting",
				      28) == 0;
	if ((r == -ENOENT || r == -ECONNREFUSED || starting) &&
	    strcmp(what, "finish") != 0) {
		r = record_pause(o, until);
		if (r < 0)
			return r;
		if (!until)
			printf("resumed: %s; it will compute when it starts\n",
			       starting ? "the agent is starting" :
					  "no agent runs now");
		else if (until == GP_STATS_PAUSE_FOREVER)
			printf("paused: %s; it will start paused, until "
			       "'gradpool-agent resume'\n",
			       starting ? "the agent is starting" :
					  "no agent runs now");
		else
			printf("paused until %s: %s\n",
			       gp_format_time(until, t, sizeof(t)),
			       starting ? "the agent is starting" :
					  "no agent runs now");
		return 0;
	}
	if (r < 0) {
		gp_error("no agent answers on %s: %s", o->control, strerror(-r));
		return r;
	}
	if (until && until != GP_STATS_PAUSE_FOREVER &&
	    strncmp(reply, "ok", 2) == 0)
		printf("ok: paused until %s\n", gp_format_time(until, t, sizeof(t)));
	else
		fputs(reply, stdout);
	return strncmp(reply, "ok", 2) == 0 ? 0 : -EINVAL;
}

static int cmd_leave(struct options *o, const char *which)
{
	struct gp_session_config cfg = { 0 };
	struct gp_identity *id = NULL;
	struct gp_stats *stats = NULL;
	struct gp_stats_membership *pools = NULL;
	struct saved_ids ids;
	size_t n = 0;
	int r, found = -1;

	r = as_owner(o->state, &ids);
	if (r < 0)
		return r;
	r = open_state(o->state, &id, &stats, 0);
	if (r < 0) {
		as_root(&ids);
		return r;
	}
	r = gp_stats_membership_list(stats, &pools, &n);
	if (r < 0) {
		gp_error("%s", gp_stats_error(stats));
		goto out;
	}
	for (size_t i = 0; i < n && found < 0; i++)
		if (!pools[i].left_at &&
		    (!which || strncmp(pools[i].pool, which, strlen(which)) == 0))
			found = (int)i;
	if (found < 0) {
		gp_error(which ? "not a member of a pool '%s'" :
				 "not a member of any pool%s", which ? which : "");
		r = -ENOENT;
		goto out;
	}
	r = gp_stats_membership_leave(stats, pools[found].pool, gp_now_s());
	if (r < 0) {
		gp_error("%s", gp_stats_error(stats));
		goto out;
	}
	gp_stats_close(stats);
	stats = NULL;
	as_root(&ids);
	printf("left pool %s\n", pools[found].pool);
	/* The running agent holds the connection: it says bye itself. */
	if (tell_reload(o) == 0) {
		printf("the running agent said bye to the coordinator\n");
		goto out;
	}
	cfg.id = id;
	cfg.pool = pools[found];
	if (o->name)
		snprintf(cfg.name, sizeof(cfg.name), "%s", o->name);
	else
		default_name(cfg.name, sizeof(cfg.name));
	if (gp_session_leave(&cfg) < 0)
		gp_warn("could not tell the coordinator (it forgets this agent "
			"when it stops hearing from it)");
	else
		printf("told the coordinator bye\n");
	r = 0;
out:
	free(pools);
	gp_stats_close(stats);
	gp_identity_destroy(id);
	as_root(&ids);
	return r;
}

static int cmd_web(struct options *o)
{
	struct gp_stats *stats = NULL;
	struct gp_web *web = NULL;
	sigset_t set;
	int r, sig;

	r = open_state(o->state, NULL, &stats, GP_STATS_READONLY);
	if (r < 0)
		return r;
	/* Block the stop signals before the server's thread starts, so that
	 * they wait for sigwait here. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	r = start_web(o, stats, remote_state, &web);
	if (r >= 0) {
		sigwait(&set, &sig);
		gp_info("%s: stopping", strsignal(sig));
	}
	gp_web_stop(web);
	gp_stats_close(stats);
	return r < 0 ? r : 0;
}

static int cmd_stats(struct options *o)
{
	struct gp_stats *stats = NULL;
	struct gp_stats_row *rows = NULL, *tot = NULL;
	struct gp_stats_membership *pools = NULL;
	size_t n = 0, nt = 0, np = 0;
	unsigned group = GP_STATS_BY_DAY;
	struct saved_ids ids;
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
	/* Read only, but SQLite may still create the -shm file: as the
	 * directory's owner, like join. */
	r = as_owner(o->state, &ids);
	if (r < 0)
		return r;
	r = open_state(o->state, NULL, &stats, GP_STATS_READONLY | GP_STATS_CHECK);
	if (r < 0) {
		as_root(&ids);
		return r;
	}
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
		r = gp_stats_format_table(stdout, group, rows, n, nt ? tot : NULL,
					  pools, np);
out:
	free(rows);
	free(tot);
	free(pools);
	gp_stats_close(stats);
	as_root(&ids);
	return r;
}

/* The configuration file, then the command line's overrides. A missing
 * default file means no limits (a development checkout); a missing file
 * named with --config or $GRADPOOL_AGENT_CONFIG is an error. */
static int load_config(struct options *o)
{
	const char *path = o->config ? o->config : getenv("GRADPOOL_AGENT_CONFIG");
	bool named = path != NULL;
	char err[512];
	int r;

	if (!path)
		path = GP_AGENT_CONFIG_DEFAULT;
	r = gp_agent_config_parse_file(path, &o->cfg, err, sizeof(err));
	if (r == -ENOENT && !named) {
		gp_agent_config_unlimited(&o->cfg);
	} else if (r < 0) {
		gp_error("%s", err);
		return r;
	}
	if (o->idle_only >= 0)
		o->cfg.idle_only = o->idle_only;
	if (o->on_ac_only >= 0)
		o->cfg.on_ac_only = o->on_ac_only;
	if (o->cpu_share > 0)
		o->cfg.cpu_share = o->cpu_share;
	if (o->gpu_share > 0)
		o->cfg.gpu_share = o->gpu_share;
	if (o->hours && gp_hours_parse(o->hours, &o->cfg.hours) < 0) {
		gp_error("--hours: '%s' is not a list of HH:MM-HH:MM windows",
			 o->hours);
		return -EINVAL;
	}
	if (o->beacon_port >= 0)
		o->cfg.beacon_port = (uint32_t)o->beacon_port;
	if (o->data_dir)
		snprintf(o->cfg.data_dir, sizeof(o->cfg.data_dir), "%s", o->data_dir);
	if (o->web >= 0)
		o->cfg.web = o->web;
	if (!o->device) {
		static char dev[24];

		if (o->cfg.device == GP_AGENT_DEVICE_CPU)
			o->device = "cpu";
		else if (o->cfg.device == GP_AGENT_DEVICE_OPENCL) {
			if (o->cfg.opencl_index >= 0)
				snprintf(dev, sizeof(dev), "opencl:%d",
					 o->cfg.opencl_index);
			else
				snprintf(dev, sizeof(dev), "opencl");
			o->device = dev;
		}
	}
	if (!o->state)
		o->state = getenv("GRADPOOL_AGENT_STATE");
	if (!o->state)
		o->state = o->cfg.state_dir;
	if (!o->control)
		o->control = getenv("GRADPOOL_AGENT_CONTROL");
	if (!o->control) {
		snprintf(o->control_buf, sizeof(o->control_buf), "%s/control",
			 strcmp(o->state, DEFAULT_STATE) == 0 ? "/run/gradpool-agent" :
								 o->state);
		o->control = o->control_buf;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct options o = { .idle_only = -1, .on_ac_only = -1,
				    .web = -1, .beacon_port = -1 };
	const char *cmd, *arg;
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
	if (load_config(&o) < 0)
		return 1;
	arg = optind < argc ? argv[optind] : NULL;
	if (strcmp(cmd, "join") == 0)
		r = cmd_join(&o, arg);
	else if (strcmp(cmd, "run") == 0)
		r = cmd_run(&o);
	else if (strcmp(cmd, "status") == 0) {
		r = cmd_status(&o);
		if (r == 3)
			return 3;
	}
	else if (strcmp(cmd, "pause") == 0 || strcmp(cmd, "resume") == 0 ||
		 strcmp(cmd, "finish") == 0)
		r = cmd_pause(&o, cmd);
	else if (strcmp(cmd, "leave") == 0)
		r = cmd_leave(&o, arg);
	else if (strcmp(cmd, "name") == 0) {
		r = cmd_name(&o, arg);
		if (r == -EINVAL)
			return 2;
	}
	else if (strcmp(cmd, "stats") == 0)
		r = cmd_stats(&o);
	else if (strcmp(cmd, "web") == 0)
		r = cmd_web(&o);
	else {
		gp_error("unknown command '%s'", cmd);
		usage(stderr);
		return 2;
	}
	return r < 0 ? 1 : 0;
}
