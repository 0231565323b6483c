/* Table-driven INI configuration files on top of inih, shared by the
 * coordinator's job file (coordinator/job.c) and the agent's configuration
 * (agent/config.c).
 *
 * A caller describes its keys in a table (section, name, type, where in the
 * target struct, range) and gets either a filled struct or one sentence of
 * the form "FILE:LINE: unknown key 'x' in [train]". Unknown sections and
 * keys, duplicate keys, continuation lines, over-long lines, NUL bytes and
 * values out of range are all errors: a typo in a config file should stop
 * the program, not silently fall back to a default. */
#ifndef GP_CONF_H
#define GP_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most keys one table may hold. */
#define GP_CONF_MAX_KEYS 64
/* Largest configuration file accepted, in bytes. */
#define GP_CONF_MAX_FILE (1u << 20)

enum gp_conf_type {
	GP_CONF_STRING, /* char[size], NUL-terminated; longer is an error */
	GP_CONF_U32,	/* uint32_t in [min, max] */
	GP_CONF_U64,	/* uint64_t in [min, max] (max limited to 2^53) */
	GP_CONF_DOUBLE, /* finite double in [min, max] */
	GP_CONF_BOOL,	/* bool: true/false, yes/no, on/off, 1/0 */
	GP_CONF_DURATION_MS, /* uint64_t milliseconds: "250ms", "30s", "5m", "1h" */
	GP_CONF_CUSTOM, /* parse() decides */
};

struct gp_conf_key {
	const char *section;
	const char *name;
	enum gp_conf_type type;
	size_t offset; /* of the field in the target struct */
	size_t size;   /* GP_CONF_STRING: size of the char array */
	double min, max; /* inclusive range for numbers and durations (ms) */
	int required;
	/* GP_CONF_CUSTOM: parses value (borrowed) into the target struct
	 * (the whole struct, so that one key may fill several fields; offset
	 * is unused). Returns 0, or a negative errno with a reason (no file
	 * or line: the caller adds them) in why (borrowed, whylen bytes). */
	int (*parse)(void *target, const char *value, char *why, size_t whylen);
};

/* Parses len bytes of data (borrowed; need not be NUL-terminated) named name
 * (used in messages) into target, which the caller has filled with the
 * defaults. keys (borrowed) has n_keys entries, at most GP_CONF_MAX_KEYS.
 * Returns 0, or -EINVAL with "NAME:LINE: reason" (or "NAME: missing required
 * key 'k' in [s]") in err (borrowed, errlen bytes). target may be partly
 * written on failure. */
int gp_conf_parse(const char *name, const char *data, size_t len,
		  const struct gp_conf_key *keys, size_t n_keys, void *target,
		  char *err, size_t errlen);

/* Reads path (at most GP_CONF_MAX_FILE bytes) and parses it as above. A file
 * that cannot be read gives its errno and "PATH: reason" in err. */
int gp_conf_parse_file(const char *path, const struct gp_conf_key *keys,
		       size_t n_keys, void *target, char *err, size_t errlen);

/* Value parsers, also for custom keys. Each returns 0 and writes *ret, or
 * -EINVAL/-ERANGE with a reason in why and *ret untouched. */
int gp_conf_parse_u64(const char *value, uint64_t *ret, char *why,
		      size_t whylen);
int gp_conf_parse_double(const char *value, double *ret, char *why,
			 size_t whylen);
int gp_conf_parse_bool(const char *value, bool *ret, char *why, size_t whylen);
int gp_conf_parse_duration_ms(const char *value, uint64_t *ret, char *why,
			      size_t whylen);

#endif
