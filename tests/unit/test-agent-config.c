/* The agent's configuration file: defaults, every key, errors with lines. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "httpd.h"
#include "test.h"

static int parse(const char *text, struct gp_agent_config *cfg, char *err)
{
	err[0] = '\0';
	return gp_agent_config_parse("agent.conf", text, strlen(text), cfg, err,
				     256);
}

int main(void)
{
	struct gp_agent_config cfg;
	char err[256];

	ASSERT_OK(parse("", &cfg, err));
	ASSERT_STR_EQ(cfg.state_dir, GP_AGENT_STATE_DIR_DEFAULT);
	ASSERT_EQ(cfg.device, GP_AGENT_DEVICE_AUTO);
	ASSERT(cfg.on_ac_only);
	ASSERT(!cfg.idle_only);
	ASSERT_NEAR(cfg.cpu_share, 0.5, 0);

	ASSERT_OK(parse("[agent]\nstate_dir = /tmp/gp\nname = my laptop\n"
			"device = opencl:1\n[limits]\nidle_only = yes\n"
			"on_ac_only = off\ncpu_share = 0.25\ngpu_share = 1\n"
			"max_upload_mib_per_day = 500\n",
			&cfg, err));
	ASSERT_STR_EQ(cfg.state_dir, "/tmp/gp");
	ASSERT_STR_EQ(cfg.name, "my laptop");
	ASSERT_EQ(cfg.device, GP_AGENT_DEVICE_OPENCL);
	ASSERT_EQ(cfg.opencl_index, 1);
	ASSERT(cfg.idle_only);
	ASSERT(!cfg.on_ac_only);
	ASSERT_NEAR(cfg.cpu_share, 0.25, 0);
	ASSERT_EQ(cfg.max_upload_mib_per_day, 500);

	ASSERT_OK(parse("[agent]\ndevice = cpu\n", &cfg, err));
	ASSERT_EQ(cfg.device, GP_AGENT_DEVICE_CPU);

	ASSERT_EQ(parse("[agent]\ndevice = gpu\n", &cfg, err), -EINVAL);
	ASSERT_STR_EQ(err, "agent.conf:2: bad value for 'device' in [agent]: "
			   "'gpu' is not a device (auto, cpu, opencl or "
			   "opencl:N)");
	ASSERT_EQ(parse("[agent]\nstate_dir = var/lib\n", &cfg, err), -EINVAL);
	ASSERT_STR_EQ(err, "agent.conf:2: bad value for 'state_dir' in "
			   "[agent]: 'var/lib' is not an absolute path");
	ASSERT_EQ(parse("[limits]\n\ncpu_share = 0\n", &cfg, err), -EINVAL);
	ASSERT_STR_EQ(err, "agent.conf:3: value 0 out of range for "
			   "'cpu_share' in [limits] (0.01 to 1)");
	ASSERT_EQ(parse("[limits]\nidle = true\n", &cfg, err), -EINVAL);
	ASSERT_STR_EQ(err, "agent.conf:2: unknown key 'idle' in [limits]");

	/* Hours, beacons, the web page. */
	ASSERT_OK(parse("", &cfg, err));
	ASSERT_EQ(cfg.hours.n, 0);
	ASSERT_EQ(cfg.beacon_port, GP_AGENT_BEACON_PORT_DEFAULT);
	ASSERT(!cfg.web);
	ASSERT_STR_EQ(cfg.web_listen, "127.0.0.1:7180");
	ASSERT_OK(parse("[limits]\nhours = 08:00-12:00,13:00-18:00\n"
			"[network]\nbeacon_port = 0\n"
			"[stats]\nweb = true\nlisten = [::1]:8080\n",
			&cfg, err));
	ASSERT_EQ(cfg.hours.n, 2);
	ASSERT_EQ(cfg.hours.start[1], 13 * 60);
	ASSERT_EQ(cfg.beacon_port, 0);
	ASSERT(cfg.web);
	ASSERT_STR_EQ(cfg.web_listen, "[::1]:8080");
	ASSERT_EQ(parse("[limits]\nhours = 8-18\n", &cfg, err), -EINVAL);
	ASSERT_STR_EQ(err, "agent.conf:2: bad value for 'hours' in [limits]: "
			   "'8-18' is not a list of HH:MM-HH:MM windows");
	/* The page never leaves this machine. */
	ASSERT_EQ(parse("[stats]\nlisten = 0.0.0.0:7180\n", &cfg, err),
		  -EINVAL);
	ASSERT_EQ(parse("[stats]\nlisten = 192.168.1.2:7180\n", &cfg, err),
		  -EINVAL);
	ASSERT_EQ(parse("[stats]\nlisten = 127.0.0.1:70000\n", &cfg, err),
		  -EINVAL);
	ASSERT_EQ(parse("[stats]\nlisten = 127.0.0.1:\n", &cfg, err),
		  -EINVAL);
	{
		uint16_t port = 1;
		bool v6 = true;

		ASSERT_OK(gp_httpd_listen_parse("localhost:0", &v6, &port));
		ASSERT(!v6);
		ASSERT_EQ(port, 0);
		ASSERT_OK(gp_httpd_listen_parse("[::1]:7180", &v6, &port));
		ASSERT(v6);
		ASSERT_EQ(port, 7180);
	}
	gp_agent_config_unlimited(&cfg);
	ASSERT(!cfg.on_ac_only);
	ASSERT_NEAR(cfg.cpu_share, 1.0, 0);
	printf("agent-config: all tests passed\n");
	return 0;
}
