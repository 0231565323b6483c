/* The example job that the coordinator package installs as
 * /etc/gradpool/job.ini (packaging/etc/job.ini) must parse with the
 * coordinator's own parser and be the main job: the MLP on Fashion-MNIST,
 * listening on every interface. */
#include <stdio.h>
#include <string.h>

#include "gp-config.h"
#include "job.h"
#include "test.h"

int main(int argc, char **argv)
{
	struct gp_job job;
	char err[256] = "";
	int r;

	if (argc != 2) {
		fprintf(stderr, "usage: check-job FILE\n");
		return 2;
	}
	r = gp_job_parse_file(argv[1], &job, err, sizeof(err));
	if (r < 0)
		GP_TEST_FAIL("%s does not parse: %s", argv[1], err);
	ASSERT_STR_EQ(job.spec, "784-256-128-10");
	ASSERT_UINT_EQ(job.n_layers, 4);
	ASSERT_STR_EQ(job.data_set, "fashion-mnist");
	ASSERT_STR_EQ(job.data_dir, GP_DATA_DIR_DEFAULT);
	ASSERT_EQ(job.optimizer, GP_OPT_SGD_MOMENTUM);
	ASSERT_UINT_EQ(job.batch_size, 128);
	ASSERT_UINT_EQ(job.staleness, 3);
	ASSERT_UINT_EQ(job.checkpoint_interval_ms, 30000);
	ASSERT_STR_EQ(job.listen, "0.0.0.0:7100");
	return 0;
}
