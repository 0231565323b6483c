/* The agent's configuration file (/etc/gradpool/agent.conf), INI read with
 * inih through common/conf.h, with the same strictness as the job file:
 * unknown keys, bad values and duplicates are errors naming FILE:LINE.
 *
 *   [agent]
 *   state_dir = /var/lib/gradpool-agent   identity key and stats database
 *   name =                                shown to the pool owner (default:
 *                                         empty, the host name is used)
 *   public_name =                         the name the pool may publish with
 *                                         this volunteer's credit (default:
 *                                         empty, not public; `gradpool-agent
 *                                         name` overrides it)
 *   device = auto                         auto | cpu | opencl | opencl:N
 *   data_dir =                            a local Fashion-MNIST copy ("":
 *                                         the default directory; "none")
 *   cache_dir =                           where pools' data sets fetched as
 *                                         shards are kept (default:
 *                                         STATE_DIR/data-cache)
 *   cache_max_mib = 2048                  at most this much of them, the
 *                                         least recently used evicted
 *                                         first; 0: memory only
 *   [limits]
 *   idle_only = false                     compute only when the user is idle
 *   on_ac_only = true                     compute only on mains power
 *   cpu_share = 0.5                       share of wall time the CPU path
 *                                         computes (a duty cycle), (0, 1]
 *   gpu_share = 1.0                       the same for OpenCL, (0, 1]
 *   max_upload_mib_per_day = 0            0 is no limit
 *   hours =                               compute only within these local
 *                                         times, e.g. 08:00-18:00,22:00-06:00
 *                                         (default: empty, every hour)
 *   [network]
 *   beacon_port = 7101                    UDP port of the coordinators'
 *                                         local-network beacons; 0: do not
 *                                         listen for them
 *   [stats]
 *   web = false                           serve the local statistics page
 *   listen = 127.0.0.1:7180               where (loopback addresses only)
 */
#ifndef GP_AGENT_CONFIG_H
#define GP_AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"
#include "policy.h"

#define GP_AGENT_STATE_DIR_DEFAULT "/var/lib/gradpool-agent"
#define GP_AGENT_CONFIG_DEFAULT "/etc/gradpool/agent.conf"
#define GP_AGENT_BEACON_PORT_DEFAULT 7101
#define GP_AGENT_WEB_LISTEN_DEFAULT "127.0.0.1:7180"

enum gp_agent_device_kind {
	GP_AGENT_DEVICE_AUTO = 0, /* the fastest device the benchmark finds */
	GP_AGENT_DEVICE_CPU = 1,
	GP_AGENT_DEVICE_OPENCL = 2, /* opencl_index; -1: the fastest one */
};

struct gp_agent_config {
	char state_dir[256];
	char name[64];
	char public_name[GP_MSG_PUBLIC_NAME_MAX + 1]; /* "": not public */
	enum gp_agent_device_kind device;
	int opencl_index;
	bool idle_only;
	bool on_ac_only;
	double cpu_share;
	double gpu_share;
	uint64_t max_upload_mib_per_day;
	struct gp_hours hours;
	uint32_t beacon_port;
	bool web;
	char web_listen[64];
	/* A local copy of the training set ("" : $GP_DATA_DIR or the
	 * default directory; "none": do without). */
	char data_dir[256];
	/* Data sets fetched as shards ("": STATE_DIR/data-cache) and the
	 * cap on their files. */
	char cache_dir[256];
	uint64_t cache_max_mib;
};

/* Fills *cfg with no limits at all (shares 1, no power, idle or hours
 * policy): what `run` uses when no configuration file exists, so that a
 * development checkout computes at full speed. The rest is as in
 * gp_agent_config_defaults. */
void gp_agent_config_unlimited(struct gp_agent_config *cfg);

/* Fills *cfg with the defaults above. */
void gp_agent_config_defaults(struct gp_agent_config *cfg);

/* Parses a configuration from memory (data borrowed, len bytes, named name
 * in messages) or from a file. *ret (caller's storage) is written only on
 * success; err (borrowed, errlen bytes) gets "NAME:LINE: reason". Returns
 * 0, -EINVAL, or the errno of reading the file. */
int gp_agent_config_parse(const char *name, const char *data, size_t len,
			  struct gp_agent_config *ret, char *err,
			  size_t errlen);
int gp_agent_config_parse_file(const char *path, struct gp_agent_config *ret,
			       char *err, size_t errlen);

#endif
