/* gradpool-coordinator serve: the parameter server and work scheduler on a
 * libuv loop. */
#ifndef GP_SERVE_H
#define GP_SERVE_H

#include <stdbool.h>

/* Runs the job in job_path (borrowed) with the state in state_dir until it
 * is done or SIGINT/SIGTERM arrives; listen (may be NULL) overrides the job
 * file's [pool] listen. A job interrupted earlier (same job file, not done)
 * resumes from its last checkpoint. Returns 0 when the job completed or was
 * stopped cleanly, else a negative errno (already logged). */
int gp_serve_run(const char *state_dir, const char *job_path,
		 const char *listen);

#endif
