/* When the volunteer lets the agent compute: on mains power, while the user
 * is idle, within given hours. Each source is a small function over files
 * so that tests can point it at a fake tree:
 *
 *   power: GP_POWER_SUPPLY_DIR (default /sys/class/power_supply), the
 *          kernel's power-supply class (type, online, status files)
 *   idle:  GP_IDLE_HINT_FILE when set (a file holding 1: idle, 0: in use),
 *          otherwise logind's IdleHint (org.freedesktop.login1.Manager),
 *          and without logind the keyboard and touchpad interrupts of
 *          /proc/interrupts (GP_INTERRUPTS_FILE), still for 5 minutes
 *   hours: local time (TZ) against windows such as "08:00-18:00,22:00-06:00"
 *   upload: the bytes sent today (the caller's count: the stats database's,
 *          per UTC day) against max_upload_mib_per_day
 *
 * The checks read files and may ask logind over D-Bus: they block briefly
 * and belong on a worker thread (uv_queue_work), not the loop thread. */
#ifndef GP_AGENT_POLICY_H
#define GP_AGENT_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define GP_POLICY_WINDOWS_MAX 8

/* Daily windows in minutes since local midnight; start > end wraps past
 * midnight, start == end is the whole day. */
struct gp_hours {
	size_t n; /* 0: every hour */
	uint16_t start[GP_POLICY_WINDOWS_MAX], end[GP_POLICY_WINDOWS_MAX];
};

struct gp_policy {
	bool idle_only;
	bool on_ac_only;
	struct gp_hours hours;
	/* Bytes the agent may send per UTC day, the days of its statistics
	 * (max_upload_mib_per_day); 0: no cap. */
	uint64_t max_upload_bytes;
};

enum gp_policy_verdict {
	GP_POLICY_RUN = 0,
	GP_POLICY_ON_BATTERY = 1,
	GP_POLICY_NOT_IDLE = 2,
	GP_POLICY_OUTSIDE_HOURS = 3,
	GP_POLICY_UPLOAD_CAP = 4,    /* today's bytes sent reached the cap */
};

/* Parses "HH:MM-HH:MM[,HH:MM-HH:MM...]" (text borrowed) into *ret (written
 * only on success); "" is every hour. Returns 0 or -EINVAL. */
int gp_hours_parse(const char *text, struct gp_hours *ret);

/* Formats *h back into buf (len bytes) as parse reads it. */
void gp_hours_format(const struct gp_hours *h, char *buf, size_t len);

/* Whether minute-of-day m (0..1439) falls in a window of *h. */
bool gp_hours_contains(const struct gp_hours *h, unsigned m);

/* 1 on mains power, 0 on battery, from the power-supply tree at dir
 * (borrowed; NULL: $GP_POWER_SUPPLY_DIR or /sys/class/power_supply). A
 * machine with no Mains supply and no discharging battery (a desktop, a
 * server, a container) counts as on mains power. */
int gp_policy_on_ac(const char *dir);

/* 1 when the user is idle, 0 when not, negative errno when no source can
 * tell. */
int gp_policy_user_idle(void);

/* The fallback's memory: the input interrupt count last seen and when it
 * last moved. Zero-initialise. */
struct gp_input_watch {
	uint64_t count;
	int64_t changed_at;
	bool seen;
};

#define GP_POLICY_INPUT_IDLE_S 300

/* Reads the i8042 (PS/2 keyboard and touchpad) lines of the interrupts
 * file at path (borrowed) and updates *w: returns 1 when their count has
 * not moved for idle_after_s seconds before now, 0 when it has (or on the
 * first look), -ENOENT when the file has no such line (USB keyboards share
 * their controller's interrupt with every USB transfer, so they cannot be
 * told apart), or the errno of reading it. */
int gp_policy_input_idle(const char *path, int64_t now, int64_t idle_after_s,
			 struct gp_input_watch *w);

/* Evaluates *p now (t: unix time, for the hours); sent_today is the
 * bytes sent so far on t's UTC day (ignored without max_upload_bytes);
 * why (borrowed, len bytes) gets one sentence for the status line when the
 * verdict is not GP_POLICY_RUN. */
enum gp_policy_verdict gp_policy_check(const struct gp_policy *p, time_t t,
				       uint64_t sent_today, char *why,
				       size_t len);

#endif
