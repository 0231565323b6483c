/* The configuration that the packages install in /etc/gradpool must parse
 * with the programs' own parsers and hold what the files say: the example
 * job (packaging/etc/job.ini) is the main job, listening on every
 * interface; the agent's configuration (packaging/etc/agent.conf) spells
 * out the defaults; the CNN job (packaging/etc/cnn.ini) names its model
 * file (cnn.model) beside it, which loads as the two-block CNN for
 * Fashion-MNIST.
 *
 *   check-config JOB_FILE AGENT_CONF [CNN_JOB_FILE] */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "data.h"
#include "gp-config.h"
#include "job.h"
#include "model.h"
#include "test.h"

static void check_job(const char *path)
{
	struct gp_job job;
	char err[256] = "";

	if (gp_job_parse_file(path, &job, err, sizeof(err)) < 0)
		GP_TEST_FAIL("%s does not parse: %s", path, err);
	ASSERT_STR_EQ(job.spec, "784-256-128-10");
	ASSERT_UINT_EQ(job.n_layers, 4);
	ASSERT_STR_EQ(job.data_set, "fashion-mnist");
	ASSERT_STR_EQ(job.data_dir, GP_DATA_DIR_DEFAULT);
	ASSERT_EQ(job.optimizer, GP_OPT_SGD_MOMENTUM);
	ASSERT_UINT_EQ(job.batch_size, 128);
	ASSERT_UINT_EQ(job.staleness, 3);
	ASSERT_UINT_EQ(job.checkpoint_interval_ms, 30000);
	ASSERT_STR_EQ(job.listen, "0.0.0.0:7100");
}

static void check_cnn_job(const char *path)
{
	struct gp_model_spec spec;
	struct gp_job job;
	char err[2048] = "";

	if (gp_job_parse_file(path, &job, err, sizeof(err)) < 0)
		GP_TEST_FAIL("%s does not parse: %s", path, err);
	ASSERT_STR_EQ(job.spec, "");
	ASSERT_STR_EQ(job.model_file, "cnn.model");
	ASSERT_STR_EQ(job.data_set, "fashion-mnist");
	ASSERT_STR_EQ(job.listen, "0.0.0.0:7100");
	if (gp_job_load_model(&job, path, &spec, err, sizeof(err)) < 0)
		GP_TEST_FAIL("%s", err);
	ASSERT_EQ(spec.version, 1);
	ASSERT_EQ(spec.layers[1].type, GP_LAYER_CONV2D);
	ASSERT_UINT_EQ(spec.dims[0], GP_DATA_PIXELS);
	ASSERT_UINT_EQ(spec.dims[spec.n_layers], GP_DATA_CLASSES);
}

static void check_agent_conf(const char *path)
{
	struct gp_agent_config cfg, defaults;
	char err[256] = "";

	if (gp_agent_config_parse_file(path, &cfg, err, sizeof(err)) < 0)
		GP_TEST_FAIL("%s does not parse: %s", path, err);
	gp_agent_config_defaults(&defaults);
	ASSERT_STR_EQ(cfg.state_dir, "/var/lib/gradpool-agent");
	ASSERT_STR_EQ(cfg.state_dir, defaults.state_dir);
	ASSERT_STR_EQ(cfg.name, defaults.name);
	ASSERT_EQ(cfg.device, defaults.device);
	ASSERT_EQ(cfg.opencl_index, defaults.opencl_index);
	ASSERT_EQ(cfg.idle_only, defaults.idle_only);
	ASSERT_EQ(cfg.on_ac_only, defaults.on_ac_only);
	ASSERT_NEAR(cfg.cpu_share, defaults.cpu_share, 0);
	ASSERT_NEAR(cfg.gpu_share, defaults.gpu_share, 0);
	ASSERT_UINT_EQ(cfg.max_upload_mib_per_day,
		       defaults.max_upload_mib_per_day);
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: check-config JOB_FILE AGENT_CONF "
				"[CNN_JOB_FILE]\n");
		return 2;
	}
	check_job(argv[1]);
	check_agent_conf(argv[2]);
	if (argc == 4)
		check_cnn_job(argv[3]);
	return 0;
}
