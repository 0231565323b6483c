#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *program = "gradpool";
static enum gp_log_level min_level = GP_LOG_INFO;

static const char *const level_names[] = {
	[GP_LOG_DEBUG] = "debug",
	[GP_LOG_INFO] = "info",
	[GP_LOG_WARN] = "warning",
	[GP_LOG_ERROR] = "error",
};

void gp_log_set_program(const char *name)
{
	if (name) {
		const char *slash = strrchr(name, '/');
		program = slash ? slash + 1 : name;
	}
}

void gp_log_set_level(enum gp_log_level level)
{
	min_level = level;
}

enum gp_log_level gp_log_get_level(void)
{
	return min_level;
}

void gp_log_init(const char *prog)
{
	const char *env = getenv("GP_LOG");

	gp_log_set_program(prog);
	if (!env)
		return;
	for (int l = GP_LOG_DEBUG; l <= GP_LOG_ERROR; l++)
		if (strcasecmp(env, level_names[l]) == 0)
			min_level = (enum gp_log_level)l;
	if (strcasecmp(env, "warn") == 0)
		min_level = GP_LOG_WARN;
	if (strcasecmp(env, "quiet") == 0)
		min_level = GP_LOG_QUIET;
}

void gp_logv(enum gp_log_level level, const char *fmt, va_list ap)
{
	char buf[1024];

	if (level < min_level || level >= GP_LOG_QUIET)
		return;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	/* One fprintf call so that lines of different threads do not interleave. */
	fprintf(stderr, "%s: %s: %s\n", program, level_names[level], buf);
}

int gp_log_errno(enum gp_log_level level, int err, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	if (level < min_level || level >= GP_LOG_QUIET)
		return err;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (err)
		fprintf(stderr, "%s: %s: %s: %s\n", program, level_names[level], buf,
			strerror(err < 0 ? -err : err));
	else
		fprintf(stderr, "%s: %s: %s\n", program, level_names[level], buf);
	return err;
}
