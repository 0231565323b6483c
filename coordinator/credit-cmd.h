/* The `credits` and `leaderboard` commands of gradpool-coordinator. */
#ifndef GP_CREDIT_CMD_H
#define GP_CREDIT_CMD_H

#include <stdbool.h>

/* Runs `credits` (leaderboard false) or `leaderboard OUT` with argv[0] the
 * command's name and its options after (argv borrowed); default_state is
 * the state directory without --state. Returns 0, -EINVAL for bad usage
 * (said on stderr), -EUCLEAN when --check found differences, or another
 * negative errno (logged). */
int gp_credit_command(const char *default_state, bool leaderboard, int argc,
		      char **argv);

#endif
