#include "conf.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct parse_ctx {
	const char *name;
	const char *p, *end; /* the rest of the input */
	int lineno;	     /* of the line last handed to inih */
	int indented;	     /* that line starts with blank space */
	const struct gp_conf_key *keys;
	size_t n_keys;
	void *target;
	unsigned char seen[GP_CONF_MAX_KEYS];
	int failed;
	int fail_line;
	char *err;
	size_t errlen;
};

static void fail(struct parse_ctx *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Keeps the first error only: inih goes on after a failing line, and the
 * first complaint is the one worth reading. */
static void fail(struct parse_ctx *c, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if (c->failed)
		return;
	c->failed = 1;
	c->fail_line = c->lineno;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (c->err && c->errlen)
		snprintf(c->err, c->errlen, "%s:%d: %s", c->name, c->lineno,
			 msg);
}

static void set_why(char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_why(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	if (!why || !whylen)
		return;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

int gp_conf_parse_u64(const char *value, uint64_t *ret, char *why,
		      size_t whylen)
{
	unsigned long long v;
	char *endp;

	/* strtoull accepts "-1" and leading blanks; a config value must not. */
	if (*value < '0' || *value > '9') {
		set_why(why, whylen, "'%s' is not a non-negative integer",
			value);
		return -EINVAL;
	}
	errno = 0;
	v = strtoull(value, &endp, 10);
	if (*endp != '\0') {
		set_why(why, whylen, "'%s' is not a non-negative integer",
			value);
		return -EINVAL;
	}
	if (errno == ERANGE) {
		set_why(why, whylen, "value '%s' is too large", value);
		return -ERANGE;
	}
	*ret = v;
	return 0;
}

int gp_conf_parse_double(const char *value, double *ret, char *why,
			 size_t whylen)
{
	char *endp;
	double v;

	errno = 0;
	v = strtod(value, &endp);
	if (endp == value || *endp != '\0' || *value == ' ' || *value == '\t') {
		set_why(why, whylen, "'%s' is not a number", value);
		return -EINVAL;
	}
	if (errno == ERANGE || !isfinite(v)) {
		set_why(why, whylen, "value '%s' is not a finite number",
			value);
		return -ERANGE;
	}
	*ret = v;
	return 0;
}

int gp_conf_parse_bool(const char *value, bool *ret, char *why, size_t whylen)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(value, yes[i]) == 0) {
			*ret = true;
			return 0;
		}
		if (strcasecmp(value, no[i]) == 0) {
			*ret = false;
			return 0;
		}
	}
	set_why(why, whylen, "'%s' is not a boolean (true or false)", value);
	return -EINVAL;
}

int gp_conf_parse_duration_ms(const char *value, uint64_t *ret, char *why,
			      size_t whylen)
{
	static const struct {
		const char *suffix;
		double ms;
	} units[] = {{"ms", 1}, {"s", 1e3}, {"m", 60e3}, {"h", 3600e3}};
	char *endp;
	double v;

	if (*value < '0' || *value > '9')
		goto bad;
	errno = 0;
	v = strtod(value, &endp);
	if (endp == value || errno == ERANGE || !isfinite(v))
		goto bad;
	while (*endp == ' ')
		endp++;
	if (*endp == '\0') {
		set_why(why, whylen,
			"'%s' needs a unit: ms, s, m or h (as in '30s')",
			value);
		return -EINVAL;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(endp, units[i].suffix) == 0) {
			double ms = v * units[i].ms;

			/* 2^53 ms is some 285 000 years; beyond it the
			 * conversion to an integer would be inexact. */
			if (ms > 9007199254740992.0) {
				set_why(why, whylen,
					"duration '%s' is too long", value);
				return -ERANGE;
			}
			*ret = (uint64_t)llround(ms);
			return 0;
		}
	}
bad:
	set_why(why, whylen,
		"'%s' is not a duration (a number and ms, s, m or h)", value);
	return -EINVAL;
}

static int section_known(const struct parse_ctx *c, const char *section)
{
	for (size_t i = 0; i < c->n_keys; i++)
		if (strcmp(c->keys[i].section, section) == 0)
			return 1;
	return 0;
}

static int check_range(struct parse_ctx *c, const struct gp_conf_key *k,
		       double v, const char *value)
{
	if (v < k->min || v > k->max) {
		fail(c, "value %s out of range for '%s' in [%s] (%.15g to %.15g)",
		     value, k->name, k->section, k->min, k->max);
		return -ERANGE;
	}
	return 0;
}

static int set_value(struct parse_ctx *c, const struct gp_conf_key *k,
		     const char *value)
{
	char *field = (char *)c->target + k->offset;
	char why[160] = "";
	uint64_t u = 0;
	double d = 0;
	bool b = false;
	int r;

	switch (k->type) {
	case GP_CONF_STRING:
		if (strlen(value) >= k->size) {
			fail(c, "value for '%s' in [%s] is too long (at most %zu "
				"characters)",
			     k->name, k->section, k->size - 1);
			return -ERANGE;
		}
		memcpy(field, value, strlen(value) + 1);
		return 0;
	case GP_CONF_U32:
	case GP_CONF_U64:
		r = gp_conf_parse_u64(value, &u, why, sizeof(why));
		if (r < 0)
			break;
		r = check_range(c, k, (double)u, value);
		if (r < 0)
			return r;
		if (k->type == GP_CONF_U32) {
			uint32_t v32 = (uint32_t)u;

			memcpy(field, &v32, sizeof(v32));
		} else {
			memcpy(field, &u, sizeof(u));
		}
		return 0;
	case GP_CONF_DOUBLE:
		r = gp_conf_parse_double(value, &d, why, sizeof(why));
		if (r < 0)
			break;
		r = check_range(c, k, d, value);
		if (r < 0)
			return r;
		memcpy(field, &d, sizeof(d));
		return 0;
	case GP_CONF_BOOL:
		r = gp_conf_parse_bool(value, &b, why, sizeof(why));
		if (r < 0)
			break;
		memcpy(field, &b, sizeof(b));
		return 0;
	case GP_CONF_DURATION_MS:
		r = gp_conf_parse_duration_ms(value, &u, why, sizeof(why));
		if (r < 0)
			break;
		r = check_range(c, k, (double)u, value);
		if (r < 0)
			return r;
		memcpy(field, &u, sizeof(u));
		return 0;
	case GP_CONF_CUSTOM:
		r = k->parse(c->target, value, why, sizeof(why));
		break;
	default:
		r = -EINVAL;
		snprintf(why, sizeof(why), "bad key table entry");
		break;
	}
	if (r < 0)
		fail(c, "bad value for '%s' in [%s]: %s", k->name, k->section,
		     why);
	return r;
}

static int handler(void *user, const char *section, const char *name,
		   const char *value)
{
	struct parse_ctx *c = user;

	if (c->failed)
		return 0;
	if (*section == '\0') {
		fail(c, "key '%s' outside any [section]", name);
		return 0;
	}
	if (!section_known(c, section)) {
		fail(c, "unknown section [%s]", section);
		return 0;
	}
	for (size_t i = 0; i < c->n_keys; i++) {
		const struct gp_conf_key *k = &c->keys[i];

		if (strcmp(k->section, section) != 0 ||
		    strcmp(k->name, name) != 0)
			continue;
		if (c->seen[i]) {
			if (c->indented)
				fail(c, "continuation lines are not supported "
					"(value of '%s' in [%s])",
				     name, section);
			else
				fail(c, "duplicate key '%s' in [%s]", name,
				     section);
			return 0;
		}
		c->seen[i] = 1;
		return set_value(c, k, value) < 0 ? 0 : 1;
	}
	fail(c, "unknown key '%s' in [%s]", name, section);
	return 0;
}

/* An fgets for inih over the in-memory input that counts lines, so that the
 * handler can name the line it is given (Debian builds inih without
 * INI_HANDLER_LINENO), and that refuses what inih would silently mangle:
 * lines longer than its buffer (it would split them) and NUL bytes. */
static char *reader(char *str, int num, void *stream)
{
	struct parse_ctx *c = stream;
	const char *nl;
	size_t len;

	if (c->failed || c->p >= c->end)
		return NULL;
	nl = memchr(c->p, '\n', (size_t)(c->end - c->p));
	len = nl ? (size_t)(nl - c->p) : (size_t)(c->end - c->p);
	c->lineno++;
	if (memchr(c->p, '\0', len)) {
		fail(c, "NUL byte in a text file");
		return NULL;
	}
	if (num < 3 || len + 2 > (size_t)num) {
		fail(c, "line too long (at most %d characters)", num - 3);
		return NULL;
	}
	memcpy(str, c->p, len);
	str[len] = '\n';
	str[len + 1] = '\0';
	c->indented = len > 0 && (c->p[0] == ' ' || c->p[0] == '\t');
	c->p += len + (nl ? 1 : 0);
	return str;
}

int gp_conf_parse(const char *name, const char *data, size_t len,
		  const struct gp_conf_key *keys, size_t n_keys, void *target,
		  char *err, size_t errlen)
{
	struct parse_ctx c;
	int line;

	if (!name || (!data && len) || !keys || !target ||
	    n_keys > GP_CONF_MAX_KEYS)
		return -EINVAL;
	memset(&c, 0, sizeof(c));
	c.name = name;
	c.p = data ? data : "";
	c.end = c.p + len;
	c.keys = keys;
	c.n_keys = n_keys;
	c.target = target;
	c.err = err;
	c.errlen = errlen;

	line = ini_parse_stream(reader, &c, handler, &c);
	/* inih reports a syntax error by line number only and carries on;
	 * name it unless an earlier line already failed. */
	if (line > 0 && (!c.failed || line < c.fail_line)) {
		c.failed = 0;
		c.lineno = line;
		fail(&c, "syntax error (expected '[section]' or 'key = "
			 "value')");
		return -EINVAL;
	}
	if (c.failed || line != 0) {
		if (!c.failed && err && errlen)
			snprintf(err, errlen, "%s: cannot parse", name);
		return -EINVAL;
	}
	for (size_t i = 0; i < n_keys; i++) {
		if (keys[i].required && !c.seen[i]) {
			if (err && errlen)
				snprintf(err, errlen,
					 "%s: missing required key '%s' in "
					 "[%s]",
					 name, keys[i].name, keys[i].section);
			return -EINVAL;
		}
	}
	return 0;
}

int gp_conf_parse_file(const char *path, const struct gp_conf_key *keys,
		       size_t n_keys, void *target, char *err, size_t errlen)
{
	FILE *f = NULL;
	char *buf = NULL;
	size_t len;
	int r;

	f = fopen(path, "rbe");
	if (!f) {
		r = -errno;
		if (err && errlen)
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return r;
	}
	buf = malloc(GP_CONF_MAX_FILE + 1);
	if (!buf) {
		r = -ENOMEM;
		goto out;
	}
	len = fread(buf, 1, GP_CONF_MAX_FILE + 1, f);
	if (ferror(f)) {
		r = -EIO;
		if (err && errlen)
			snprintf(err, errlen, "%s: read error", path);
		goto out;
	}
	if (len > GP_CONF_MAX_FILE) {
		r = -EFBIG;
		if (err && errlen)
			snprintf(err, errlen, "%s: larger than %u bytes", path,
				 GP_CONF_MAX_FILE);
		goto out;
	}
	r = gp_conf_parse(path, buf, len, keys, n_keys, target, err, errlen);
out:
	free(buf);
	if (f)
		fclose(f);
	return r;
}
