/* Logging shared by both programs.
 *
 * One line per event on stderr: "<program>: <level>: <message>". Libraries
 * below the programs log only at debug level; an error is logged once, where
 * it is handled. Never pass keys, token secrets or raw frames to these
 * functions. */
#ifndef GP_LOG_H
#define GP_LOG_H

#include <stdarg.h>

enum gp_log_level {
	GP_LOG_DEBUG = 0,
	GP_LOG_INFO = 1,
	GP_LOG_WARN = 2,
	GP_LOG_ERROR = 3,
	GP_LOG_QUIET = 4,
};

/* Sets the program name printed before each line. name is borrowed and must
 * outlive all logging (a string literal or argv[0]). */
void gp_log_set_program(const char *name);

/* Sets the lowest level that is printed. The GP_LOG environment variable
 * (debug, info, warn, error, quiet) is read by gp_log_init(). */
void gp_log_set_level(enum gp_log_level level);
enum gp_log_level gp_log_get_level(void);

/* Reads GP_LOG from the environment; call once at program start. */
void gp_log_init(const char *program);

/* Logs one line at the given level. Returns err unchanged so that callers can
 * write `return gp_log_errno(GP_LOG_ERROR, r, "...")`. err is a negative
 * errno (or 0); when non-zero its strerror text is appended. */
int gp_log_errno(enum gp_log_level level, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

void gp_logv(enum gp_log_level level, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

#define gp_log(level, ...) ((void)gp_log_errno((level), 0, __VA_ARGS__))
#define gp_debug(...) gp_log(GP_LOG_DEBUG, __VA_ARGS__)
#define gp_info(...) gp_log(GP_LOG_INFO, __VA_ARGS__)
#define gp_warn(...) gp_log(GP_LOG_WARN, __VA_ARGS__)
#define gp_error(...) gp_log(GP_LOG_ERROR, __VA_ARGS__)

#endif
