/* The agent's configuration file (/etc/gradpool/agent.conf), INI read with
 * inih through common/conf.h, with the same strictness as the job file:
 * unknown keys, bad values and duplicates are errors naming FILE:LINE.
 *
 *   [agent]
 *   state_dir = /var/lib/gradpool-agent   identity key and stats database
 *   name =                                shown to the pool owner (default:
 *                                         empty, the host name is used)
 *   device = auto                         auto | cpu | opencl | opencl:N
 *   [limits]
 *   idle_only = false                     compute only when the user is idle
 *   on_ac_only = true                     compute only on mains power
 *   cpu_share = 0.5                       share of CPU cores, (0, 1]
 *   gpu_share = 1.0                       share of GPU time, (0, 1]
 *   max_upload_mib_per_day = 0            0 is no limit
 */
#ifndef GP_AGENT_CONFIG_H
#define GP_AGENT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GP_AGENT_STATE_DIR_DEFAULT "/var/lib/gradpool-agent"

enum gp_agent_device_kind {
	GP_AGENT_DEVICE_AUTO = 0, /* the fastest device the benchmark finds */
	GP_AGENT_DEVICE_CPU = 1,
	GP_AGENT_DEVICE_OPENCL = 2, /* opencl_index; -1: the fastest one */
};

struct gp_agent_config {
	char state_dir[256];
	char name[64];
	enum gp_agent_device_kind device;
	int opencl_index;
	bool idle_only;
	bool on_ac_only;
	double cpu_share;
	double gpu_share;
	uint64_t max_upload_mib_per_day;
};

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
