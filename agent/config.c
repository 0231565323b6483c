#include "config.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "httpd.h"

void gp_agent_config_defaults(struct gp_agent_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->state_dir, sizeof(cfg->state_dir), "%s",
		 GP_AGENT_STATE_DIR_DEFAULT);
	cfg->device = GP_AGENT_DEVICE_AUTO;
	cfg->opencl_index = -1;
	cfg->on_ac_only = true;
	cfg->cpu_share = 0.5;
	cfg->gpu_share = 1.0;
	cfg->beacon_port = GP_AGENT_BEACON_PORT_DEFAULT;
	cfg->cache_max_mib = 2048;
	snprintf(cfg->web_listen, sizeof(cfg->web_listen), "%s",
		 GP_AGENT_WEB_LISTEN_DEFAULT);
}

void gp_agent_config_unlimited(struct gp_agent_config *cfg)
{
	gp_agent_config_defaults(cfg);
	cfg->on_ac_only = false;
	cfg->cpu_share = 1.0;
}

static int parse_hours(void *target, const char *value, char *why,
		       size_t whylen)
{
	struct gp_agent_config *cfg = target;

	if (gp_hours_parse(value, &cfg->hours) < 0) {
		snprintf(why, whylen,
			 "'%s' is not a list of HH:MM-HH:MM windows", value);
		return -EINVAL;
	}
	return 0;
}

static int parse_web_listen(void *target, const char *value, char *why,
			    size_t whylen)
{
	struct gp_agent_config *cfg = target;

	if (strlen(value) >= sizeof(cfg->web_listen) ||
	    gp_httpd_listen_parse(value, NULL, NULL) < 0) {
		snprintf(why, whylen,
			 "'%s' is not 127.0.0.1:PORT, localhost:PORT or "
			 "[::1]:PORT (the page is for this machine only)",
			 value);
		return -EINVAL;
	}
	snprintf(cfg->web_listen, sizeof(cfg->web_listen), "%s", value);
	return 0;
}

/* auto | cpu | opencl | opencl:N */
static int parse_device(void *target, const char *value, char *why,
			size_t whylen)
{
	struct gp_agent_config *cfg = target;
	uint64_t index;

	if (strcmp(value, "auto") == 0) {
		cfg->device = GP_AGENT_DEVICE_AUTO;
		cfg->opencl_index = -1;
	} else if (strcmp(value, "cpu") == 0) {
		cfg->device = GP_AGENT_DEVICE_CPU;
		cfg->opencl_index = -1;
	} else if (strcmp(value, "opencl") == 0) {
		cfg->device = GP_AGENT_DEVICE_OPENCL;
		cfg->opencl_index = -1;
	} else if (strncmp(value, "opencl:", 7) == 0 &&
		   gp_conf_parse_u64(value + 7, &index, NULL, 0) == 0 &&
		   index < 1024) {
		cfg->device = GP_AGENT_DEVICE_OPENCL;
		cfg->opencl_index = (int)index;
	} else {
		snprintf(why, whylen,
			 "'%s' is not a device (auto, cpu, opencl or "
			 "opencl:N)",
			 value);
		return -EINVAL;
	}
	return 0;
}

/* The name the pool may publish with the volunteer's credit: off unless
 * given, and held to the wire's rules for it. */
static int parse_public_name(void *target, const char *value, char *why,
			     size_t whylen)
{
	struct gp_agent_config *cfg = target;

	if (value[0] && gp_msg_public_name_check(value) < 0) {
		snprintf(why, whylen,
			 "not a public name: 1 to %d bytes of UTF-8, without "
			 "control characters or spaces at either end",
			 GP_MSG_PUBLIC_NAME_MAX);
		return -EINVAL;
	}
	snprintf(cfg->public_name, sizeof(cfg->public_name), "%s", value);
	return 0;
}

/* An absolute path, so that a service started from / finds the same place. */
static int parse_state_dir(void *target, const char *value, char *why,
			   size_t whylen)
{
	struct gp_agent_config *cfg = target;
	size_t len = strlen(value);

	if (value[0] != '/') {
		snprintf(why, whylen, "'%s' is not an absolute path", value);
		return -EINVAL;
	}
	if (len >= sizeof(cfg->state_dir)) {
		snprintf(why, whylen, "path longer than %zu characters",
			 sizeof(cfg->state_dir) - 1);
		return -ERANGE;
	}
	memcpy(cfg->state_dir, value, len + 1);
	return 0;
}

#define F(field) offsetof(struct gp_agent_config, field)

static const struct gp_conf_key keys[] = {
	{"agent", "state_dir", GP_CONF_CUSTOM, 0, 0, 0, 0, 0, parse_state_dir},
	{"agent", "name", GP_CONF_STRING, F(name),
	 sizeof(((struct gp_agent_config *)0)->name), 0, 0, 0, NULL},
	{"agent", "public_name", GP_CONF_CUSTOM, 0, 0, 0, 0, 0,
	 parse_public_name},
	{"agent", "device", GP_CONF_CUSTOM, 0, 0, 0, 0, 0, parse_device},
	{"agent", "data_dir", GP_CONF_STRING, F(data_dir),
	 sizeof(((struct gp_agent_config *)0)->data_dir), 0, 0, 0, NULL},
	{"agent", "cache_dir", GP_CONF_STRING, F(cache_dir),
	 sizeof(((struct gp_agent_config *)0)->cache_dir), 0, 0, 0, NULL},
	{"agent", "cache_max_mib", GP_CONF_U64, F(cache_max_mib), 0, 0, 1e9, 0,
	 NULL},
	{"limits", "idle_only", GP_CONF_BOOL, F(idle_only), 0, 0, 0, 0, NULL},
	{"limits", "on_ac_only", GP_CONF_BOOL, F(on_ac_only), 0, 0, 0, 0, NULL},
	{"limits", "cpu_share", GP_CONF_DOUBLE, F(cpu_share), 0, 0.01, 1, 0,
	 NULL},
	{"limits", "gpu_share", GP_CONF_DOUBLE, F(gpu_share), 0, 0.01, 1, 0,
	 NULL},
	{"limits", "max_upload_mib_per_day", GP_CONF_U64,
	 F(max_upload_mib_per_day), 0, 0, 1e9, 0, NULL},
	{"limits", "hours", GP_CONF_CUSTOM, 0, 0, 0, 0, 0, parse_hours},
	{"network", "beacon_port", GP_CONF_U32, F(beacon_port), 0, 0, 65535, 0,
	 NULL},
	{"stats", "web", GP_CONF_BOOL, F(web), 0, 0, 0, 0, NULL},
	{"stats", "listen", GP_CONF_CUSTOM, 0, 0, 0, 0, 0, parse_web_listen},
};

#undef F

int gp_agent_config_parse(const char *name, const char *data, size_t len,
			  struct gp_agent_config *ret, char *err,
			  size_t errlen)
{
	struct gp_agent_config cfg;
	int r;

	if (!ret)
		return -EINVAL;
	gp_agent_config_defaults(&cfg);
	r = gp_conf_parse(name, data, len, keys, sizeof(keys) / sizeof(keys[0]),
			  &cfg, err, errlen);
	if (r < 0)
		return r;
	*ret = cfg;
	return 0;
}

int gp_agent_config_parse_file(const char *path, struct gp_agent_config *ret,
			       char *err, size_t errlen)
{
	struct gp_agent_config cfg;
	int r;

	if (!ret)
		return -EINVAL;
	gp_agent_config_defaults(&cfg);
	r = gp_conf_parse_file(path, keys, sizeof(keys) / sizeof(keys[0]), &cfg,
			       err, errlen);
	if (r < 0)
		return r;
	*ret = cfg;
	return 0;
}
