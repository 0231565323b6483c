/* gradpool-coordinator: the pool owner's command line.
 *
 *   init --state DIR [--listen ADDR:PORT] [--endpoint HOST:PORT]...
 *   invite [--uses N] [--expires DURATION] [--label TEXT]
 *   invite list [--json] | invite revoke ID
 *   serve [--job FILE [--keep-serving]] [--exit-when-done] [--listen ADDR:PORT]
 *   job add FILE | job list [--json] | job cancel ID
 *   agents [--json] | agents revoke ID
 *   status [--json]
 *   export [--job ID] [--checkpoint N] [--format safetensors|onnx]
 *          [--optimizer-state] OUT
 *   sample [--job ID] [--checkpoint N] [--prompt TEXT] [--length N]
 *          [--temperature X] [--top-k N] [--seed N]
 *   credits [--json] | credits --check [--fix] | leaderboard OUT.html
 *
 * Every command takes --state DIR (default $GRADPOOL_STATE or
 * /var/lib/gradpool-coordinator). The listing commands read the ledger and
 * work while serve runs (SQLite WAL). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "credit-cmd.h"
#include "export.h"
#include "gp-config.h"
#include "httpd.h"
#include "job-cmd.h"
#include "log.h"
#include "model.h"
#include "sample.h"
#include "serve.h"
#include "state.h"
#include "token.h"
#include "util.h"
#include "web.h"

#define DEFAULT_STATE "/var/lib/gradpool-coordinator"
#define DEFAULT_LISTEN "0.0.0.0:7100"

struct options {
	const char *state;
	const char *listen;
	const char *job;
	const char *label;
	const char *expires;
	const char *format;
	const char *checkpoint;
	const char *web;
	const char *endpoints[8];
	size_t n_endpoints;
	long uses;
	bool json;
	bool keep_serving;
	bool exit_when_done;
	unsigned max_epochs_override;
	struct gp_sample_request sample; /* sample's own options */
	bool optimizer_state;            /* export --optimizer-state */
};

static void usage(FILE *f)
{
	fputs("usage: gradpool-coordinator COMMAND [OPTIONS]\n"
	      "\n"
	      "commands:\n"
	      "  init [--listen ADDR:PORT] [--endpoint HOST:PORT]...\n"
	      "                         create the identity key and the ledger\n"
	      "  invite [--uses N] [--expires DURATION] [--label TEXT]\n"
	      "                         print a new invite token\n"
	      "  invite list [--json]   list tokens\n"
	      "  invite revoke ID       revoke a token\n"
	      "  serve [--listen ADDR:PORT]\n"
	      "                         serve the pool and its job queue; stays up\n"
	      "                         between jobs (--exit-when-done: until the\n"
	      "                         queue is empty)\n"
	      "  serve ... [--web ADDR:PORT|off]\n"
	      "                         the owner's page (loopback only; default\n"
	      "                         " GP_COORD_WEB_DEFAULT ")\n"
	      "  serve --job FILE [--keep-serving] [--listen ADDR:PORT]\n"
	      "                         run (or resume) that job, then exit; with\n"
	      "                         --keep-serving go on with the queue\n"
	      "  job add FILE           queue a job (serve takes it when free)\n"
	      "  job list [--json]      the jobs: queued, running, done, failed,\n"
	      "                         cancelled, with progress and accuracy\n"
	      "  job cancel ID          take a queued job off, or stop a running one\n"
	      "  agents [--json]        list member agents\n"
	      "  agents revoke ID       revoke an agent's membership\n"
	      "  status [--json]        job progress, clocks, throughput\n"
	      "  export [--job ID] [--checkpoint N] --format safetensors|onnx OUT\n"
	      "                         write the trained model (the newest intact\n"
	      "                         checkpoint of the newest job unless told);\n"
	      "                         --optimizer-state adds AdamW's moments\n"
	      "  sample [--job ID] [--checkpoint N] [--prompt TEXT] [--length N]\n"
	      "         [--temperature X] [--top-k N] [--seed N]\n"
	      "                         text from a trained language model\n"
	      "  credits [--json]       each member's credit (GFLOP of applied work)\n"
	      "  credits --check [--fix] compare credit with the update log\n"
	      "  leaderboard OUT.html [--title TEXT] [--omit-anonymous]\n"
	      "                         write the page to publish: public names only\n"
	      "\n"
	      "every command: --state DIR (default $GRADPOOL_STATE or "
	      DEFAULT_STATE ")\n",
	      f);
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "state", required_argument, NULL, 's' },
		{ "listen", required_argument, NULL, 'l' },
		{ "endpoint", required_argument, NULL, 'e' },
		{ "job", required_argument, NULL, 'j' },
		{ "label", required_argument, NULL, 'L' },
		{ "expires", required_argument, NULL, 'x' },
		{ "uses", required_argument, NULL, 'u' },
		{ "json", no_argument, NULL, 'J' },
		{ "format", required_argument, NULL, 'f' },
		{ "checkpoint", required_argument, NULL, 'c' },
		{ "keep-serving", no_argument, NULL, 'K' },
		{ "web", required_argument, NULL, 'W' },
		{ "exit-when-done", no_argument, NULL, 'X' },
		{ "prompt", required_argument, NULL, 1001 },
		{ "length", required_argument, NULL, 1002 },
		{ "temperature", required_argument, NULL, 1003 },
		{ "top-k", required_argument, NULL, 1004 },
		{ "seed", required_argument, NULL, 1005 },
		{ "optimizer-state", no_argument, NULL, 1006 },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "s:h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			o->state = optarg;
			break;
		case 'l':
			o->listen = optarg;
			break;
		case 'e':
			if (o->n_endpoints == 8) {
				gp_error("at most 8 --endpoint options");
				return -EINVAL;
			}
			o->endpoints[o->n_endpoints++] = optarg;
			break;
		case 'j':
			o->job = optarg;
			break;
		case 'L':
			o->label = optarg;
			break;
		case 'x':
			o->expires = optarg;
			break;
		case 'u': {
			char *end;

			errno = 0;
			o->uses = strtol(optarg, &end, 10);
			if (errno || *end || o->uses < 0) {
				gp_error("--uses: '%s' is not a count", optarg);
				return -EINVAL;
			}
			break;
		}
		case 'J':
			o->json = true;
			break;
		case 'f':
			o->format = optarg;
			break;
		case 'c':
			o->checkpoint = optarg;
			break;
		case 'K':
			o->keep_serving = true;
			break;
		case 'W':
			o->web = optarg;
			break;
		case 'X':
			o->exit_when_done = true;
			break;
		case 1001:
			o->sample.prompt = optarg;
			break;
		case 1002:
			o->sample.length = optarg;
			break;
		case 1003:
			o->sample.temperature = optarg;
			break;
		case 1004:
			o->sample.top_k = optarg;
			break;
		case 1005:
			o->sample.seed = optarg;
			break;
		case 1006:
			o->optimizer_state = true;
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

static int cmd_init(struct options *o)
{
	struct gp_coord_state st;
	struct gp_identity *id = NULL;
	char err[512], path[600], endpoints[1024] = "", fp[GP_FINGERPRINT_LEN + 1];
	const char *listen = o->listen ? o->listen : DEFAULT_LISTEN;
	int r;

	if (mkdir(o->state, 0700) < 0 && errno != EEXIST)
		return gp_log_errno(GP_LOG_ERROR, -errno, "%s: cannot create",
				    o->state);
	snprintf(path, sizeof(path), "%s/coordinator.key", o->state);
	r = gp_identity_load_or_create(path, &id, err, sizeof(err));
	if (r < 0) {
		gp_error("%s", err);
		return r;
	}
	gp_identity_destroy(id);
	r = gp_coord_state_open(&st, o->state, GP_LEDGER_CREATE);
	if (r < 0)
		return r;
	for (size_t i = 0; i < o->n_endpoints; i++) {
		if (i)
			strncat(endpoints, ",", sizeof(endpoints) - strlen(endpoints) - 1);
		strncat(endpoints, o->endpoints[i],
			sizeof(endpoints) - strlen(endpoints) - 1);
	}
	if (!o->n_endpoints)
		snprintf(endpoints, sizeof(endpoints), "%s", listen);
	r = gp_ledger_meta_set(st.ledger, GP_META_LISTEN, listen);
	if (r >= 0)
		r = gp_ledger_meta_set(st.ledger, GP_META_ENDPOINTS, endpoints);
	if (r < 0) {
		gp_error("%s: %s", st.ledger_path, gp_ledger_error(st.ledger));
		goto out;
	}
	gp_identity_fingerprint(st.id->public_key, fp);
	printf("state:       %s\n", o->state);
	printf("fingerprint: %s\n", fp);
	printf("listen:      %s\n", listen);
	printf("endpoints:   %s\n", endpoints);
out:
	gp_coord_state_close(&st);
	return r;
}

static int cmd_invite(struct options *o)
{
	struct gp_coord_state st;
	struct gp_token *tok = NULL;
	struct gp_ledger_token row = { 0 };
	char endpoints[1024], *save = NULL, *ep;
	const char *eps[GP_TOKEN_ENDPOINTS_MAX];
	char *str = NULL;
	uint64_t expires_ms = 0;
	uint8_t token_key[GP_KEY_SIZE];
	size_t n = 0;
	int64_t id;
	int r;

	if (o->expires && strcmp(o->expires, "never") != 0 &&
	    gp_parse_duration_ms(o->expires, &expires_ms) < 0) {
		gp_error("--expires: '%s' is not a duration (e.g. 30m, 24h, 7d, never)",
			 o->expires);
		return -EINVAL;
	}
	if (!o->expires)
		expires_ms = 7 * 86400000ull; /* a week unless told otherwise */
	r = gp_coord_state_open(&st, o->state, 0);
	if (r < 0)
		return r;
	if (o->n_endpoints) {
		for (n = 0; n < o->n_endpoints && n < GP_TOKEN_ENDPOINTS_MAX; n++)
			eps[n] = o->endpoints[n];
	} else {
		r = gp_ledger_meta_get(st.ledger, GP_META_ENDPOINTS, endpoints,
				       sizeof(endpoints));
		if (r < 0) {
			gp_error("%s: no endpoints recorded; pass --endpoint HOST:PORT",
				 st.ledger_path);
			goto out;
		}
		for (ep = strtok_r(endpoints, ",", &save);
		     ep && n < GP_TOKEN_ENDPOINTS_MAX;
		     ep = strtok_r(NULL, ",", &save))
			eps[n++] = ep;
	}
	r = gp_token_create(&tok);
	if (r < 0)
		goto out;
	/* The secret is derived from this key and the token id, so serve can
	 * key the join handshake without ever storing the secret. */
	r = gp_identity_derive_key(st.id, "gp-token-secret", token_key);
	if (r < 0)
		goto out;
	do {
		uint64_t exp = expires_ms ? (uint64_t)gp_now_s() + expires_ms / 1000 : 0;

		r = gp_token_generate(token_key, st.id->public_key, eps, n, exp,
				      tok);
		if (r < 0) {
			gp_log_errno(GP_LOG_ERROR, r, "cannot make a token for endpoints");
			goto out;
		}
		/* Positive ids read better in 'invite list' and 'revoke'. */
		tok->id[7] &= 0x7f;
		r = gp_token_secret_derive(token_key, tok->id, tok->secret);
		if (r < 0)
			goto out;
		id = gp_ledger_token_id_from_bytes(tok->id);
	} while (id == 0);
	row.id = id;
	snprintf(row.label, sizeof(row.label), "%s", o->label ? o->label : "");
	r = gp_token_hash_secret(st.token_hash_key, tok->secret, row.secret_hash);
	if (r < 0)
		goto out;
	row.created_at = gp_now_ms();
	row.expires_at = (int64_t)tok->expires_at * 1000;
	row.max_uses = o->uses ? o->uses : 1;
	r = gp_ledger_token_insert(st.ledger, &row, &id);
	if (r < 0) {
		gp_error("%s: cannot store the token: %s", st.ledger_path,
			 gp_ledger_error(st.ledger));
		goto out;
	}
	str = malloc(GP_TOKEN_STRING_MAX);
	if (!str) {
		r = -ENOMEM;
		goto out;
	}
	r = gp_token_format(tok, str, GP_TOKEN_STRING_MAX);
	if (r < 0)
		goto out;
	printf("%s\n", str);
	gp_info("token %" PRId64 ": %" PRId64 " use(s), expires %s", id,
		row.max_uses, row.expires_at ? o->expires ? o->expires : "in 7d" : "never");
	r = 0;
out:
	if (str) {
		explicit_bzero(str, GP_TOKEN_STRING_MAX);
		free(str);
	}
	explicit_bzero(token_key, sizeof(token_key));
	gp_token_destroy(tok);
	gp_coord_state_close(&st);
	return r;
}

static const char *token_state(const struct gp_ledger_token *t, int64_t now)
{
	if (t->revoked_at)
		return "revoked";
	if (t->expires_at && t->expires_at <= now)
		return "expired";
	if (t->max_uses && t->uses >= t->max_uses)
		return "used-up";
	return "live";
}

static int cmd_invite_list(struct options *o)
{
	struct gp_coord_state st;
	struct gp_ledger_token *t = NULL;
	size_t n = 0;
	int64_t now = gp_now_ms();
	char a[32], b[32];
	int r;

	r = gp_coord_state_open(&st, o->state,
				 GP_LEDGER_READONLY | GP_LEDGER_CHECK);
	if (r < 0)
		return r;
	r = gp_ledger_token_list(st.ledger, &t, &n);
	if (r < 0) {
		gp_error("%s: %s", st.ledger_path, gp_ledger_error(st.ledger));
		goto out;
	}
	if (o->json) {
		printf("[");
		for (size_t i = 0; i < n; i++) {
			printf("%s{\"id\":%" PRId64 ",\"label\":", i ? "," : "",
			       t[i].id);
			gp_json_string(stdout, t[i].label);
			printf(",\"created_at\":%" PRId64 ",\"expires_at\":%" PRId64
			       ",\"max_uses\":%" PRId64 ",\"uses\":%" PRId64
			       ",\"revoked_at\":%" PRId64 ",\"state\":\"%s\"}",
			       t[i].created_at, t[i].expires_at, t[i].max_uses,
			       t[i].uses, t[i].revoked_at, token_state(&t[i], now));
		}
		printf("]\n");
	} else {
		printf("%-20s %-8s %-9s %-20s %-20s %s\n", "ID", "STATE", "USES",
		       "CREATED", "EXPIRES", "LABEL");
		for (size_t i = 0; i < n; i++) {
			char uses[32];

			snprintf(uses, sizeof(uses), "%" PRId64 "/%" PRId64,
				 t[i].uses, t[i].max_uses);
			printf("%-20" PRId64 " %-8s %-9s %-20s %-20s %s\n", t[i].id,
			       token_state(&t[i], now), uses,
			       gp_format_time(t[i].created_at / 1000, a, sizeof(a)),
			       gp_format_time(t[i].expires_at / 1000, b, sizeof(b)),
			       t[i].label);
		}
	}
out:
	free(t);
	gp_coord_state_close(&st);
	return r;
}

static int parse_id(const char *s, int64_t *ret)
{
	char *end;
	long long v;

	if (!s)
		return -EINVAL;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || v <= 0)
		return -EINVAL;
	*ret = v;
	return 0;
}

static int cmd_revoke(struct options *o, const char *what, const char *arg)
{
	struct gp_coord_state st;
	int64_t id;
	int r;

	if (parse_id(arg, &id) < 0) {
		gp_error("%s revoke: '%s' is not an id (see '%s list')", what,
			 arg ? arg : "", what);
		return -EINVAL;
	}
	r = gp_coord_state_open(&st, o->state, 0);
	if (r < 0)
		return r;
	if (strcmp(what, "invite") == 0)
		r = gp_ledger_token_revoke(st.ledger, id, gp_now_ms());
	else
		r = gp_ledger_agent_revoke(st.ledger, id, gp_now_ms());
	if (r == -ENOENT)
		gp_error("no %s with id %" PRId64, strcmp(what, "invite") == 0 ?
			 "token" : "agent", id);
	else if (r < 0)
		gp_error("%s: %s", st.ledger_path, gp_ledger_error(st.ledger));
	else
		printf("revoked %s %" PRId64 "\n",
		       strcmp(what, "invite") == 0 ? "token" : "agent", id);
	gp_coord_state_close(&st);
	return r;
}

/* A member's state for the owner: revoked, left (it said BYE 0), connected
 * (serve runs and counts a connection to it) or member (not connected). */
static const char *agent_state(const struct gp_ledger_agent *a, bool serving)
{
	if (a->revoked_at)
		return "revoked";
	if (a->left_at)
		return "left";
	return serving && a->connections > 0 ? "connected" : "member";
}

/* The compute path of a device as the reference agent names it ("cpu: ..."
 * is the BLAS path, "opencl: ..." an OpenCL device of any type, PoCL's CPU
 * device included); another client's device gets its type. */
static const char *device_api(const struct gp_ledger_device *d)
{
	if (strncmp(d->name, "opencl:", 7) == 0)
		return "opencl";
	if (strncmp(d->name, "cpu:", 4) == 0)
		return "cpu";
	return d->kind;
}

/* Whether serve runs on the state (its lock is held); a state directory
 * that cannot be probed counts as not running, with a warning. */
static bool serve_running(const struct options *o)
{
	int r = gp_coord_state_serve_running(o->state);

	if (r < 0)
		gp_log_errno(GP_LOG_WARN, r, "%s: cannot tell whether serve runs",
			     o->state);
	return r > 0;
}

static int cmd_agents(struct options *o)
{
	struct gp_coord_state st;
	struct gp_ledger_agent_row *rows = NULL;
	size_t n = 0;
	char t[32];
	int r;
	bool serving = serve_running(o);

	r = gp_coord_state_open(&st, o->state,
				 GP_LEDGER_READONLY | GP_LEDGER_CHECK);
	if (r < 0)
		return r;
	r = gp_ledger_agent_list(st.ledger, 0, &rows, &n);
	if (r < 0) {
		gp_error("%s: %s", st.ledger_path, gp_ledger_error(st.ledger));
		goto out;
	}
	if (o->json)
		printf("[");
	else
		printf("%-5s %-16s %-19s %-9s %-20s %9s %10s %10s %7s %-14s %s\n",
		       "ID", "NAME", "FINGERPRINT", "STATE", "LAST SEEN",
		       "UPDATES", "SAMPLES", "LINK", "SYNC", "TRUST V/M/R",
		       "DEVICES");
	for (size_t i = 0; i < n; i++) {
		const struct gp_ledger_agent *a = &rows[i].agent;

		if (o->json) {
			printf("%s{\"id\":%" PRId64 ",\"name\":", i ? "," : "", a->id);
			gp_json_string(stdout, a->name);
			printf(",\"fingerprint\":");
			gp_json_string(stdout, a->fingerprint);
			printf(",\"state\":\"%s\",\"connected\":%s,\"joined_at\":%" PRId64
			       ",\"last_seen\":%" PRId64
			       ",\"revoked_at\":%" PRId64 ",\"left_at\":%" PRId64
			       ",\"updates_applied\":%" PRId64
			       ",\"samples_applied\":%" PRId64
			       ",\"updates_discarded\":%" PRId64
			       ",\"updates_rejected\":%" PRId64
			       ",\"updates_rolled_back\":%" PRId64
			       ",\"last_clock\":%" PRId64,
			       agent_state(a, serving),
			       serving && a->connections > 0 ? "true" : "false",
			       a->joined_at, a->last_seen, a->revoked_at, a->left_at,
			       rows[i].updates_applied, rows[i].samples_applied,
			       rows[i].updates_discarded, rows[i].updates_rejected,
			       rows[i].updates_rolled_back, rows[i].last_clock);
			printf(",\"verified\":%" PRId64 ",\"mismatched\":%" PRId64
			       ",\"trust_rolled_back\":%" PRId64,
			       rows[i].verified, rows[i].mismatched,
			       rows[i].trust_rolled_back);
			/* null: never measured. */
			if (rows[i].link_at)
				printf(",\"link_mbit_s\":%.3f,\"sync_interval_ms\":%.1f,"
				       "\"link_measured_at\":%" PRId64,
				       rows[i].link_bps * 8e-6, rows[i].sync_ms,
				       rows[i].link_at);
			else
				printf(",\"link_mbit_s\":null,\"sync_interval_ms\":null,"
				       "\"link_measured_at\":null");
			printf(",\"devices\":[");
			for (size_t d = 0; d < a->n_devices; d++) {
				printf("%s{\"api\":\"%s\",\"kind\":", d ? "," : "",
				       device_api(&a->devices[d]));
				gp_json_string(stdout, a->devices[d].kind);
				printf(",\"name\":");
				gp_json_string(stdout, a->devices[d].name);
				printf(",\"gflops\":%.3f,\"samples_per_s\":%.1f}",
				       a->devices[d].gflops,
				       a->devices[d].samples_per_s);
			}
			printf("]}");
		} else {
			char dev[256] = "", link[16] = "-", sync[16] = "-";
			char trust[64];

			for (size_t d = 0; d < a->n_devices; d++) {
				const struct gp_ledger_device *x = &a->devices[d];
				const char *api = device_api(x);
				char one[128];

				if (strcmp(api, "opencl") == 0)
					snprintf(one, sizeof(one), "%sopencl (%s) %.0f "
						 "GFLOP/s %.0f samples/s", d ? "; " : "",
						 x->kind, x->gflops, x->samples_per_s);
				else
					snprintf(one, sizeof(one), "%s%s %.0f GFLOP/s "
						 "%.0f samples/s", d ? "; " : "", api,
						 x->gflops, x->samples_per_s);
				strncat(dev, one, sizeof(dev) - strlen(dev) - 1);
			}
			if (rows[i].link_at) {
				snprintf(link, sizeof(link), "%.1f Mb/s",
					 rows[i].link_bps * 8e-6);
				snprintf(sync, sizeof(sync), "%.0f ms",
					 rows[i].sync_ms);
			}
			/* Verified / mismatched / rolled back. */
			snprintf(trust, sizeof(trust), "%" PRId64 "/%" PRId64
				 "/%" PRId64, rows[i].verified,
				 rows[i].mismatched, rows[i].trust_rolled_back);
			printf("%-5" PRId64 " %-16s %-19s %-9s %-20s %9" PRId64
			       " %10" PRId64 " %10s %7s %-14s %s\n",
			       a->id, a->name, a->fingerprint, agent_state(a, serving),
			       gp_format_time(a->last_seen / 1000, t, sizeof(t)),
			       rows[i].updates_applied, rows[i].samples_applied,
			       link, sync, trust, dev);
		}
	}
	if (o->json)
		printf("]\n");
out:
	free(rows);
	gp_coord_state_close(&st);
	return r;
}

/* "1h 02m", "3m 20s", "45s". */
static const char *format_eta(double s, char *buf, size_t size)
{
	long long t = (long long)(s + 0.5);

	if (t >= 86400)
		snprintf(buf, size, "%lldd %02lldh", t / 86400, t % 86400 / 3600);
	else if (t >= 3600)
		snprintf(buf, size, "%lldh %02lldm", t / 3600, t % 3600 / 60);
	else if (t >= 60)
		snprintf(buf, size, "%lldm %02llds", t / 60, t % 60);
	else
		snprintf(buf, size, "%llds", t);
	return buf;
}

/* The rate window: the last minute, ending a second ago (serve writes the
 * update log in batches of up to a second), and not before serve started. */
#define RATE_WINDOW_MS 60000
#define RATE_LAG_MS 1000

/* A language model's vocabulary (its evaluations are in bits a token,
 * bits per byte for bytes), or 0 for another model or none known. */
static uint32_t job_lm_vocab(struct gp_ledger *l, int64_t job)
{
	struct gp_model_spec *spec = malloc(sizeof(*spec));
	char *text = NULL;
	uint32_t vocab = 0;

	if (spec && gp_ledger_job_model(l, job, &text) >= 0 && text &&
	    gp_model_spec_parse(text, spec, NULL, 0) == 0 &&
	    gp_model_spec_labels(spec) > 1)
		vocab = spec->dims[spec->n_layers];
	free(text);
	free(spec);
	return vocab;
}

static int cmd_status(struct options *o)
{
	struct gp_coord_state st;
	struct gp_ledger_status s;
	struct gp_ledger_agent_row *rows = NULL;
	size_t n = 0;
	int64_t now = gp_now_ms(), to = now - RATE_LAG_MS, from;
	int64_t started = 0, win_samples = 0, win_mb = 0, total = 0;
	double rate = 0, mb_rate = 0, eta = -1, progress = -1;
	char buf[32], eta_text[32];
	long pid = 0;
	int64_t queued = 0;
	bool active;
	int r;
	uint32_t lm_vocab = 0;
	bool serving = serve_running(o);

	r = gp_coord_state_open(&st, o->state,
				 GP_LEDGER_READONLY | GP_LEDGER_CHECK);
	if (r < 0)
		return r;
	r = gp_ledger_status(st.ledger, 0, &s);
	if (r == -ENOENT) {
		printf(o->json ? "{\"job\":null,\"serve_running\":%s}\n" :
				 "no job yet (serve %s)\n",
		       o->json ? serving ? "true" : "false" :
				 serving ? "runs" : "does not run");
		r = 0;
		goto out;
	}
	if (r >= 0)
		r = gp_ledger_agent_list(st.ledger, s.job_id, &rows, &n);
	if (r >= 0)
		lm_vocab = job_lm_vocab(st.ledger, s.job_id);
	if (r >= 0 && serving &&
	    gp_ledger_meta_get(st.ledger, GP_META_SERVE_STARTED, buf,
			       sizeof(buf)) > 0)
		started = strtoll(buf, NULL, 10);
	if (r >= 0 && serving &&
	    gp_ledger_meta_get(st.ledger, GP_META_SERVE_PID, buf,
			       sizeof(buf)) > 0)
		pid = strtol(buf, NULL, 10);
	from = to - RATE_WINDOW_MS > started ? to - RATE_WINDOW_MS : started;
	/* Only while serve runs with an agent connected: a figure that stays
	 * after everyone left reads as work that is not happening. */
	if (r >= 0 && serving && s.connected_agents > 0 && to - from >= 1000)
		r = gp_ledger_applied_between(st.ledger, s.job_id, from, to,
					      &win_samples, &win_mb);
	if (r < 0) {
		gp_error("%s: %s", st.ledger_path, gp_ledger_error(st.ledger));
		goto out;
	}
	if (win_mb > 0) {
		rate = (double)win_samples * 1000.0 / (double)(to - from);
		mb_rate = (double)win_mb * 1000.0 / (double)(to - from);
	}
	{
		struct gp_ledger_job_row *jobs = NULL;
		size_t nj = 0;

		if (gp_ledger_job_list(st.ledger, &jobs, &nj) >= 0)
			for (size_t i = 0; i < nj; i++)
				queued += jobs[i].state == GP_JOB_QUEUED;
		free(jobs);
	}
	/* The job is trained now, or would be by a serve (not ended). */
	active = s.state == GP_JOB_RUNNING || s.state == GP_JOB_CREATED;
	total = s.epochs * s.minibatches_per_epoch;
	if (total > 0) {
		progress = (double)s.updates_applied / (double)total;
		if (progress > 1)
			progress = 1;
		if (s.state == GP_JOB_DONE)
			eta = 0;
		else if (mb_rate > 0)
			eta = (double)(total - s.updates_applied) / mb_rate;
	}
	if (o->json) {
		printf("{\"job\":%" PRId64 ",\"state\":\"%s\",\"serve_running\":%s"
		       ",\"serve_pid\":%ld,\"epoch\":%" PRId64 ",\"epochs\":%" PRId64
		       ",\"minibatches_in_epoch\":%" PRId64
		       ",\"minibatches_per_epoch\":%" PRId64
		       ",\"minibatches_total\":%" PRId64,
		       s.job_id, gp_ledger_job_state_name(s.state),
		       serving ? "true" : "false", pid, s.epoch + 1, s.epochs,
		       s.minibatches_in_epoch, s.minibatches_per_epoch, total);
		if (progress >= 0)
			printf(",\"progress\":%.5f", progress);
		else
			printf(",\"progress\":null");
		if (eta >= 0)
			printf(",\"eta_s\":%.0f", eta);
		else
			printf(",\"eta_s\":null");
		printf(",\"updates_applied\":%" PRId64 ",\"samples_applied\":%" PRId64
		       ",\"updates_discarded\":%" PRId64
		       ",\"updates_rejected\":%" PRId64
		       ",\"updates_rolled_back\":%" PRId64
		       ",\"samples_per_s\":%.1f,\"rate_window_s\":%.1f"
		       ",\"agents_connected\":%" PRId64 ",\"members\":%" PRId64
		       ",\"last_checkpoint\":%" PRId64 ",\"jobs_queued\":%" PRId64,
		       s.updates_applied, s.samples_applied, s.updates_discarded,
		       s.updates_rejected, s.updates_rolled_back, rate,
		       to > from ? (double)(to - from) / 1000.0 : 0.0,
		       serving ? s.connected_agents : 0, s.live_agents,
		       s.last_checkpoint_seq, queued);
		if (s.have_eval) {
			printf(",\"last_eval\":{\"epoch\":%" PRId64
			       ",\"test_loss\":%.5f,\"test_accuracy\":%.5f",
			       s.last_eval.epoch + 1, s.last_eval.test_loss,
			       s.last_eval.test_accuracy);
			if (lm_vocab)
				printf(",\"test_bits_per_token\":%.5f",
				       s.last_eval.test_loss / M_LN2);
			if (lm_vocab && lm_vocab <= 256)
				printf(",\"test_bits_per_byte\":%.5f",
				       s.last_eval.test_loss / M_LN2);
			printf("}");
		}
		printf(",\"agents\":[");
		for (size_t i = 0; i < n; i++) {
			printf("%s{\"id\":%" PRId64 ",\"name\":", i ? "," : "",
			       rows[i].agent.id);
			gp_json_string(stdout, rows[i].agent.name);
			printf(",\"state\":\"%s\",\"last_clock\":%" PRId64
			       ",\"updates_applied\":%" PRId64
			       ",\"samples_applied\":%" PRId64 "}",
			       agent_state(&rows[i].agent, serving),
			       rows[i].last_clock, rows[i].updates_applied,
			       rows[i].samples_applied);
		}
		printf("]}\n");
		goto out;
	}
	printf("job %" PRId64 " (%s): epoch %" PRId64, s.job_id,
	       gp_ledger_job_state_name(s.state), s.epoch + 1);
	if (s.epochs)
		printf(" of %" PRId64, s.epochs);
	printf(", %" PRId64, s.minibatches_in_epoch);
	if (s.minibatches_per_epoch)
		printf(" of %" PRId64, s.minibatches_per_epoch);
	printf(" minibatches applied in it\n");
	if (progress >= 0 && !active && s.state != GP_JOB_DONE)
		printf("progress: %.1f%% (%" PRId64 " of %" PRId64 " minibatches) "
		       "when it was %s\n", 100.0 * progress, s.updates_applied,
		       total, gp_ledger_job_state_name(s.state));
	else if (progress >= 0)
		printf("progress: %.1f%% (%" PRId64 " of %" PRId64 " minibatches), "
		       "ETA %s\n", 100.0 * progress, s.updates_applied, total,
		       eta >= 0 ? format_eta(eta, eta_text, sizeof(eta_text)) :
				  "unknown (nothing applied in the last minute)");
	if (serving)
		printf("serve: running (pid %ld), %" PRId64 " of %" PRId64
		       " members connected, %.0f samples/s over the last "
		       "%.0f s\n", pid, s.connected_agents, s.live_agents, rate,
		       to > from ? (double)(to - from) / 1000.0 : 0.0);
	else
		printf("serve: not running\n");
	printf("updates: %" PRId64 " applied (%" PRId64 " samples), %" PRId64
	       " discarded, %" PRId64 " rejected", s.updates_applied,
	       s.samples_applied, s.updates_discarded, s.updates_rejected);
	if (s.updates_rolled_back)
		printf(", %" PRId64 " rolled back by a restore",
		       s.updates_rolled_back);
	printf("\n");
	if (s.have_eval && lm_vocab)
		printf("last evaluation: epoch %" PRId64 ", held-out %.4f "
		       "%s (test loss %.4f), next-token accuracy %.2f%%\n",
		       s.last_eval.epoch + 1, s.last_eval.test_loss / M_LN2,
		       lm_vocab <= 256 ? "bits/byte" : "bits/token",
		       s.last_eval.test_loss, 100.0 * s.last_eval.test_accuracy);
	else if (s.have_eval)
		printf("last evaluation: epoch %" PRId64 ", test accuracy "
		       "%.2f%%, test loss %.4f\n",
		       s.last_eval.epoch + 1, 100.0 * s.last_eval.test_accuracy,
		       s.last_eval.test_loss);
	if (!active)
		printf("the pool has no job now: %" PRId64 " queued (job list; "
		       "job add FILE)\n", queued);
	else if (queued)
		printf("queue: %" PRId64 " job(s) after this one (job list)\n",
		       queued);
	if (!serving && (active || queued))
		printf("warning: serve is not running: the job is not being "
		       "trained ('serve' resumes it)\n");
	else if (s.connected_agents == 0 && active)
		printf("warning: no agent is connected: nothing is being "
		       "computed (see 'agents'; invite volunteers with "
		       "'invite')\n");
	printf("%-5s %-16s %-9s %10s %10s %10s\n", "ID", "NAME", "STATE", "CLOCK",
	       "UPDATES", "SAMPLES");
	for (size_t i = 0; i < n; i++)
		printf("%-5" PRId64 " %-16s %-9s %10" PRId64 " %10" PRId64
		       " %10" PRId64 "\n",
		       rows[i].agent.id, rows[i].agent.name,
		       agent_state(&rows[i].agent, serving), rows[i].last_clock,
		       rows[i].updates_applied, rows[i].samples_applied);
out:
	free(rows);
	gp_coord_state_close(&st);
	return r;
}

static int cmd_export(struct options *o, int argc, char **argv)
{
	struct gp_export_request req = {
		.format = o->format,
		.optimizer_state = o->optimizer_state,
	};

	if (o->job && parse_id(o->job, &req.job_id) < 0) {
		gp_error("export --job: '%s' is not a job id", o->job);
		return -EINVAL;
	}
	if (o->checkpoint && parse_id(o->checkpoint, &req.checkpoint) < 0) {
		gp_error("export --checkpoint: '%s' is not a checkpoint number",
			 o->checkpoint);
		return -EINVAL;
	}
	if (optind + 1 != argc) {
		gp_error("export: give one file to write (export [--checkpoint "
			 "N] --format safetensors|onnx OUT)");
		return -EINVAL;
	}
	req.out = argv[optind];
	return gp_export_command(o->state, &req);
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	const char *cmd, *sub = NULL;
	int r;

	gp_log_init("gradpool-coordinator");
	umask(077);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 ||
	    strcmp(cmd, "help") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(cmd, "--version") == 0) {
		printf("gradpool-coordinator %s\n", GP_VERSION);
		return 0;
	}
	argc--;
	argv++;
	if (strcmp(cmd, "credits") == 0 || strcmp(cmd, "leaderboard") == 0) {
		const char *st = getenv("GRADPOOL_STATE");

		r = gp_credit_command(st ? st : DEFAULT_STATE,
				      strcmp(cmd, "leaderboard") == 0, argc,
				      argv);
		return r == -EINVAL ? 2 : r < 0 ? 1 : 0;
	}
	if (parse_options(argc, argv, &o) < 0)
		return 2;
	if (optind < argc)
		sub = argv[optind];
	if (!o.state)
		o.state = getenv("GRADPOOL_STATE") ? getenv("GRADPOOL_STATE") :
						     DEFAULT_STATE;

	if (strcmp(cmd, "init") == 0)
		r = cmd_init(&o);
	else if (strcmp(cmd, "invite") == 0 && !sub)
		r = cmd_invite(&o);
	else if (strcmp(cmd, "invite") == 0 && strcmp(sub, "list") == 0)
		r = cmd_invite_list(&o);
	else if (strcmp(cmd, "invite") == 0 && strcmp(sub, "revoke") == 0)
		r = cmd_revoke(&o, "invite",
			       optind + 1 < argc ? argv[optind + 1] : NULL);
	else if (strcmp(cmd, "agents") == 0 && !sub)
		r = cmd_agents(&o);
	else if (strcmp(cmd, "agents") == 0 && strcmp(sub, "revoke") == 0)
		r = cmd_revoke(&o, "agents",
			       optind + 1 < argc ? argv[optind + 1] : NULL);
	else if (strcmp(cmd, "status") == 0 && !sub)
		r = cmd_status(&o);
	else if (strcmp(cmd, "export") == 0) {
		r = cmd_export(&o, argc, argv);
		if (r == -EINVAL)
			return 2;
	} else if (strcmp(cmd, "sample") == 0 && !sub) {
		o.sample.job = o.job;
		o.sample.checkpoint = o.checkpoint;
		r = gp_sample_command(o.state, &o.sample);
		if (r == -EINVAL)
			return 2;
	} else if (strcmp(cmd, "job") == 0) {
		r = gp_job_command(o.state, sub,
				   optind + 1 < argc ? argv[optind + 1] : NULL,
				   o.json);
		if (r == -EINVAL)
			return 2;
	} else if (strcmp(cmd, "serve") == 0 && !sub) {
		unsigned flags = 0;

		if (o.keep_serving && !o.job) {
			gp_error("serve --keep-serving goes with --job FILE (serve "
				 "without a job file keeps serving anyway)");
			return 2;
		}
		/* With a job file: that job, then exit (as before queues);
		 * without: the service, up between jobs. */
		if (!o.job || o.keep_serving)
			flags |= GP_SERVE_QUEUE;
		if ((o.job && !o.keep_serving) || o.exit_when_done)
			flags |= GP_SERVE_EXIT_WHEN_DONE;
		if (!o.web)
			o.web = GP_COORD_WEB_DEFAULT;
		else if (strcmp(o.web, "off") == 0)
			o.web = NULL;
		else if (gp_httpd_listen_parse(o.web, NULL, NULL) < 0) {
			gp_error("--web: '%s' is not a loopback ADDR:PORT "
				 "(127.0.0.1:PORT, localhost:PORT, [::1]:PORT) "
				 "or off: the owner's page is for this machine "
				 "only", o.web);
			return 2;
		}
		r = gp_serve_run(o.state, o.job, o.listen, o.web, flags);
	} else {
		gp_error("unknown command '%s%s%s'", cmd, sub ? " " : "",
			 sub ? sub : "");
		usage(stderr);
		return 2;
	}
	return r < 0 ? 1 : 0;
}
