/* Small helpers both programs share: time, durations, JSON string output. */
#ifndef GP_UTIL_H
#define GP_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Wall-clock time in unix seconds / milliseconds, and a monotonic clock in
 * microseconds. */
int64_t gp_now_s(void);
int64_t gp_now_ms(void);
uint64_t gp_mono_us(void);

/* Parses a duration such as "90s", "30m", "24h", "7d", "1500ms" or a bare
 * number of seconds into milliseconds. Returns 0, or -EINVAL for anything
 * else (also for overflow). */
int gp_parse_duration_ms(const char *s, uint64_t *ret_ms);

/* Makes room for element n in the array *v of *cap elements of size bytes,
 * doubling it (16 at first). Returns 0, or -ENOMEM with *v and *cap
 * unchanged. */
int gp_array_grow(void **v, size_t *cap, size_t n, size_t size);

/* Writes s as a JSON string literal (quotes included) to f; bytes that are
 * not valid UTF-8 become U+FFFD, control characters are escaped. */
void gp_json_string(FILE *f, const char *s);

/* Formats a unix time as "YYYY-MM-DD HH:MM:SS" UTC into buf (at least 20
 * bytes); 0 gives "-". Returns buf. */
char *gp_format_time(int64_t t, char *buf, size_t cap);

#endif
