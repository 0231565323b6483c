#include "policy.h"

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gp-config.h"

#if GP_HAVE_SYSTEMD
#include <systemd/sd-bus.h>
#endif

static int parse_hhmm(const char *p, const char **end, uint16_t *ret)
{
	unsigned h, m;

	if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9' || p[2] != ':' ||
	    p[3] < '0' || p[3] > '9' || p[4] < '0' || p[4] > '9')
		return -EINVAL;
	h = (unsigned)(p[0] - '0') * 10 + (unsigned)(p[1] - '0');
	m = (unsigned)(p[3] - '0') * 10 + (unsigned)(p[4] - '0');
	/* 24:00 is the end of the day. */
	if (m > 59 || h > 24 || (h == 24 && m))
		return -EINVAL;
	*ret = (uint16_t)(h * 60 + m);
	*end = p + 5;
	return 0;
}

int gp_hours_parse(const char *text, struct gp_hours *ret)
{
	struct gp_hours h = { 0 };
	const char *p = text;

	if (!text || !ret)
		return -EINVAL;
	while (*p == ' ')
		p++;
	while (*p) {
		uint16_t a, b;

		if (h.n == GP_POLICY_WINDOWS_MAX)
			return -EINVAL;
		if (parse_hhmm(p, &p, &a) < 0)
			return -EINVAL;
		while (*p == ' ')
			p++;
		if (*p++ != '-')
			return -EINVAL;
		while (*p == ' ')
			p++;
		if (parse_hhmm(p, &p, &b) < 0)
			return -EINVAL;
		if (a == 1440)
			return -EINVAL; /* 24:00 only ends a window */
		h.start[h.n] = a;
		h.end[h.n] = b;
		h.n++;
		while (*p == ' ')
			p++;
		if (*p == ',') {
			p++;
			while (*p == ' ')
				p++;
			if (!*p)
				return -EINVAL;
		} else if (*p) {
			return -EINVAL;
		}
	}
	*ret = h;
	return 0;
}

void gp_hours_format(const struct gp_hours *h, char *buf, size_t len)
{
	size_t off = 0;

	if (!len)
		return;
	buf[0] = '\0';
	for (size_t i = 0; i < h->n && off < len; i++) {
		int w = snprintf(buf + off, len - off, "%s%02u:%02u-%02u:%02u",
				 i ? "," : "", h->start[i] / 60, h->start[i] % 60,
				 h->end[i] / 60, h->end[i] % 60);
		if (w < 0)
			break;
		off += (size_t)w;
	}
}

bool gp_hours_contains(const struct gp_hours *h, unsigned m)
{
	if (h->n == 0)
		return true;
	for (size_t i = 0; i < h->n; i++) {
		unsigned a = h->start[i], b = h->end[i];

		if (a == b)
			return true;
		if (a < b ? m >= a && m < b : m >= a || m < b)
			return true;
	}
	return false;
}

/* The first line of dir/name/file into buf, without the newline. */
static int read_line(const char *dir, const char *name, const char *file,
		     char *buf, size_t len)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/%s", dir, name, file);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	if (!fgets(buf, (int)len, f)) {
		fclose(f);
		return -EIO;
	}
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

int gp_policy_on_ac(const char *dir)
{
	bool mains = false, mains_online = false, discharging = false;
	struct dirent *e;
	DIR *d;

	if (!dir)
		dir = getenv("GP_POWER_SUPPLY_DIR");
	if (!dir)
		dir = "/sys/class/power_supply";
	d = opendir(dir);
	if (!d)
		return 1; /* no power-supply class: not a laptop */
	while ((e = readdir(d))) {
		char type[32], v[32];

		if (e->d_name[0] == '.')
			continue;
		if (read_line(dir, e->d_name, "type", type, sizeof(type)) < 0)
			continue;
		if (strcmp(type, "Mains") == 0) {
			mains = true;
			if (read_line(dir, e->d_name, "online", v, sizeof(v)) == 0 &&
			    strcmp(v, "1") == 0)
				mains_online = true;
		} else if (strcmp(type, "Battery") == 0) {
			if (read_line(dir, e->d_name, "status", v, sizeof(v)) == 0 &&
			    strcmp(v, "Discharging") == 0)
				discharging = true;
		}
	}
	closedir(d);
	if (mains)
		return mains_online;
	return !discharging;
}

#if GP_HAVE_SYSTEMD
static int logind_idle(void)
{
	sd_bus *bus = NULL;
	sd_bus_error err = SD_BUS_ERROR_NULL;
	int idle = 0, r;

	r = sd_bus_open_system(&bus);
	if (r < 0)
		return r;
	r = sd_bus_get_property_trivial(bus, "org.freedesktop.login1",
					"/org/freedesktop/login1",
					"org.freedesktop.login1.Manager", "IdleHint",
					&err, 'b', &idle);
	sd_bus_error_free(&err);
	sd_bus_flush_close_unref(bus);
	if (r < 0)
		return r;
	return idle ? 1 : 0;
}
#endif

int gp_policy_input_idle(const char *path, int64_t now, int64_t idle_after_s,
			 struct gp_input_watch *w)
{
	char line[4096];
	uint64_t total = 0;
	bool found = false;
	FILE *f = fopen(path, "re");

	if (!f)
		return -errno;
	/* "  1:   12   34   IO-APIC   1-edge      i8042": the counts per CPU
	 * follow the IRQ number, the device names end the line. */
	while (fgets(line, sizeof(line), f)) {
		char *p = strchr(line, ':');

		if (!p || !strstr(line, "i8042"))
			continue;
		found = true;
		p++;
		for (;;) {
			char *end;
			unsigned long long v = strtoull(p, &end, 10);

			if (end == p)
				break;
			total += v;
			p = end;
		}
	}
	fclose(f);
	if (!found)
		return -ENOENT;
	if (!w->seen || total != w->count) {
		w->seen = true;
		w->count = total;
		w->changed_at = now;
		return 0;
	}
	return now - w->changed_at >= idle_after_s;
}

int gp_policy_user_idle(void)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static struct gp_input_watch watch;
	const char *interrupts;
	int r;

	const char *fake = getenv("GP_IDLE_HINT_FILE");

	if (fake) {
		char buf[8] = "";
		FILE *f = fopen(fake, "re");

		if (!f)
			return -errno;
		if (!fgets(buf, sizeof(buf), f))
			buf[0] = '\0';
		fclose(f);
		if (buf[0] != '0' && buf[0] != '1')
			return -EINVAL;
		return buf[0] == '1';
	}
#if GP_HAVE_SYSTEMD
	r = logind_idle();
	if (r >= 0)
		return r;
#endif
	interrupts = getenv("GP_INTERRUPTS_FILE");
	pthread_mutex_lock(&lock);
	r = gp_policy_input_idle(interrupts ? interrupts : "/proc/interrupts",
				 (int64_t)time(NULL), GP_POLICY_INPUT_IDLE_S, &watch);
	pthread_mutex_unlock(&lock);
	return r == -ENOENT ? -ENOTSUP : r;
}

enum gp_policy_verdict gp_policy_check(const struct gp_policy *p, time_t t,
				       uint64_t sent_today, char *why,
				       size_t len)
{
	if (p->on_ac_only && gp_policy_on_ac(NULL) == 0) {
		snprintf(why, len, "on battery power (on_ac_only)");
		return GP_POLICY_ON_BATTERY;
	}
	if (p->idle_only) {
		int r = gp_policy_user_idle();

		if (r == 0) {
			snprintf(why, len, "the user is active (idle_only)");
			return GP_POLICY_NOT_IDLE;
		}
		if (r < 0) {
			snprintf(why, len, "cannot tell whether the user is idle: "
				 "%s (idle_only)", strerror(-r));
			return GP_POLICY_NOT_IDLE;
		}
	}
	if (p->hours.n) {
		struct tm tm;
		char h[GP_POLICY_WINDOWS_MAX * 12 + 1];

		localtime_r(&t, &tm);
		if (!gp_hours_contains(&p->hours,
				       (unsigned)(tm.tm_hour * 60 + tm.tm_min))) {
			gp_hours_format(&p->hours, h, sizeof(h));
			snprintf(why, len, "outside the hours %s", h);
			return GP_POLICY_OUTSIDE_HOURS;
		}
	}
	if (p->max_upload_bytes && sent_today >= p->max_upload_bytes) {
		/* The statistics count per UTC day: the cap resets at UTC
		 * midnight, whatever the local time. */
		snprintf(why, len, "sent %.1f MiB today, the cap is %.1f MiB "
			 "(max_upload_mib_per_day); computing resumes after "
			 "00:00 UTC", (double)sent_today / (1024.0 * 1024.0),
			 (double)p->max_upload_bytes / (1024.0 * 1024.0));
		return GP_POLICY_UPLOAD_CAP;
	}
	return GP_POLICY_RUN;
}
