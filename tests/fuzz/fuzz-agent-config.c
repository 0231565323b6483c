/* Fuzzes the agent's configuration parser (agent/config.c over
 * common/conf.c and inih) from memory. A file that parses must give
 * values inside their documented ranges, NUL-terminated strings; every
 * refusal must come with a message. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gp_agent_config cfg;
	char err[256] = "";

	if (size > 1 << 16)
		return 0;
	if (gp_agent_config_parse("fuzz.conf", (const char *)data, size, &cfg,
				  err, sizeof(err)) == 0) {
		if (!(cfg.cpu_share >= 0 && cfg.cpu_share <= 1) ||
		    !(cfg.gpu_share >= 0 && cfg.gpu_share <= 1) ||
		    cfg.beacon_port > 65535 ||
		    memchr(cfg.state_dir, '\0', sizeof(cfg.state_dir)) == NULL ||
		    memchr(cfg.name, '\0', sizeof(cfg.name)) == NULL ||
		    memchr(cfg.web_listen, '\0', sizeof(cfg.web_listen)) == NULL)
			abort();
	} else if (err[0] == '\0') {
		abort();
	}
	return 0;
}
