/* gradpool-coordinator job add | list | cancel: the owner's job queue,
 * kept in the ledger. They work whether serve runs or not: serve reads
 * the queue and its job's state from the ledger (twice a second). */
#ifndef GP_JOB_CMD_H
#define GP_JOB_CMD_H

#include <stdbool.h>

/* Runs `job SUB ARG` on the state in state_dir (borrowed): "add" FILE,
 * "list" (json: one JSON object), "cancel" ID. Says what it did on
 * stdout, errors on stderr. Returns 0, -EINVAL for a usage error (the
 * caller exits 2), or another negative errno. */
int gp_job_command(const char *state_dir, const char *sub, const char *arg,
		   bool json);

#endif
