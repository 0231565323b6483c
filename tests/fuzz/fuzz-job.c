/* Fuzzes the job-file parser (coordinator/job.c over common/conf.c and
 * inih) from memory. A file that parses must satisfy the documented
 * invariants, and every error must come with a message. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gp_job job;
	char err[256] = "";

	if (size > 1 << 16)
		return 0;
	if (gp_job_parse("fuzz.job", (const char *)data, size, &job, err,
			 sizeof(err)) == 0) {
		/* Exactly one of spec (with its widths) and file. */
		bool spec = job.spec[0] != '\0';

		if (spec == (job.model_file[0] != '\0') ||
		    memchr(job.model_file, '\0', sizeof(job.model_file)) ==
			    NULL ||
		    (spec && (job.n_layers < 2 ||
			      job.n_layers > GP_JOB_MAX_LAYERS)) ||
		    job.epochs < 1 || job.batch_size < 1 ||
		    (job.checkpoint_interval_ms == 0) ==
			    (job.checkpoint_interval_minibatches == 0) ||
		    job.heartbeat_timeout_ms <= job.heartbeat_interval_ms ||
		    memchr(job.spec, '\0', sizeof(job.spec)) == NULL ||
		    memchr(job.listen, '\0', sizeof(job.listen)) == NULL)
			abort();
	} else if (err[0] == '\0') {
		abort();
	}
	return 0;
}
