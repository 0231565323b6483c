/* agent/policy (hours, power supply, idle hint, upload cap, the verdict),
 * the statistics' bytes sent per day that the cap uses, and
 * agent/status (the control socket's key=value lines). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy.h"
#include "stats.h"
#include "status.h"
#include "test.h"

static char root[] = "/tmp/gp-policy-XXXXXX";

static void put(const char *dir, const char *file, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, dir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/%s/%s", root, dir, file);
	f = fopen(path, "w");
	ASSERT_NOT_NULL(f);
	fprintf(f, "%s\n", text);
	fclose(f);
}

static void test_hours(void)
{
	struct gp_hours h;
	char buf[128];

	ASSERT_OK(gp_hours_parse("", &h));
	ASSERT_EQ(h.n, 0);
	ASSERT(gp_hours_contains(&h, 0) && gp_hours_contains(&h, 1439));

	ASSERT_OK(gp_hours_parse("08:00-18:00", &h));
	ASSERT_EQ(h.n, 1);
	ASSERT(!gp_hours_contains(&h, 7 * 60 + 59));
	ASSERT(gp_hours_contains(&h, 8 * 60));
	ASSERT(gp_hours_contains(&h, 17 * 60 + 59));
	ASSERT(!gp_hours_contains(&h, 18 * 60));

	/* Wrapping past midnight, two windows, spaces. */
	ASSERT_OK(gp_hours_parse("22:00-06:00, 12:00-13:00", &h));
	ASSERT_EQ(h.n, 2);
	ASSERT(gp_hours_contains(&h, 23 * 60));
	ASSERT(gp_hours_contains(&h, 0));
	ASSERT(gp_hours_contains(&h, 5 * 60 + 59));
	ASSERT(!gp_hours_contains(&h, 6 * 60));
	ASSERT(gp_hours_contains(&h, 12 * 60 + 30));
	ASSERT(!gp_hours_contains(&h, 14 * 60));
	gp_hours_format(&h, buf, sizeof(buf));
	ASSERT_STR_EQ(buf, "22:00-06:00,12:00-13:00");

	ASSERT_OK(gp_hours_parse("00:00-24:00", &h));
	ASSERT(gp_hours_contains(&h, 0) && gp_hours_contains(&h, 1439));
	ASSERT_OK(gp_hours_parse("18:00-24:00", &h));
	ASSERT(gp_hours_contains(&h, 1439) && !gp_hours_contains(&h, 0));

	/* Bad input leaves *ret alone. */
	h.n = 7;
	ASSERT_EQ(gp_hours_parse("8:00-18:00", &h), -EINVAL);
	ASSERT_EQ(gp_hours_parse("08:00", &h), -EINVAL);
	ASSERT_EQ(gp_hours_parse("08:60-09:00", &h), -EINVAL);
	ASSERT_EQ(gp_hours_parse("25:00-09:00", &h), -EINVAL);
	ASSERT_EQ(gp_hours_parse("24:00-09:00", &h), -EINVAL);
	ASSERT_EQ(gp_hours_parse("08:00-09:00,", &h), -EINVAL);
	ASSERT_EQ(gp_hours_parse("08:00-09:00 x", &h), -EINVAL);
	ASSERT_EQ(gp_hours_parse("01:00-02:00,01:00-02:00,01:00-02:00,"
				 "01:00-02:00,01:00-02:00,01:00-02:00,"
				 "01:00-02:00,01:00-02:00,01:00-02:00", &h),
		  -EINVAL);
	ASSERT_EQ(h.n, 7);
}

static void test_power(void)
{
	char dir[600];

	/* No power-supply class at all: a desktop. */
	snprintf(dir, sizeof(dir), "%s/none", root);
	ASSERT_EQ(gp_policy_on_ac(dir), 1);

	/* A laptop on mains. */
	put("AC", "type", "Mains");
	put("AC", "online", "1");
	put("BAT0", "type", "Battery");
	put("BAT0", "status", "Charging");
	ASSERT_EQ(gp_policy_on_ac(root), 1);
	/* Unplugged. */
	put("AC", "online", "0");
	put("BAT0", "status", "Discharging");
	ASSERT_EQ(gp_policy_on_ac(root), 0);
	/* A second mains supply online (a dock) counts. */
	put("USB", "type", "Mains");
	put("USB", "online", "1");
	ASSERT_EQ(gp_policy_on_ac(root), 1);
	put("USB", "type", "USB");
	ASSERT_EQ(gp_policy_on_ac(root), 0);

	/* The environment override, used by the verdict. */
	setenv("GP_POWER_SUPPLY_DIR", root, 1);
	ASSERT_EQ(gp_policy_on_ac(NULL), 0);
}

static void test_verdict(void)
{
	struct gp_policy p = { 0 };
	char why[256] = "", path[600];
	FILE *f;

	/* root's AC is offline from test_power. */
	ASSERT_EQ(gp_policy_check(&p, 0, 0, why, sizeof(why)), GP_POLICY_RUN);
	p.on_ac_only = true;
	ASSERT_EQ(gp_policy_check(&p, 0, 0, why, sizeof(why)), GP_POLICY_ON_BATTERY);
	ASSERT_STR_EQ(why, "on battery power (on_ac_only)");
	put("AC", "online", "1");
	ASSERT_EQ(gp_policy_check(&p, 0, 0, why, sizeof(why)), GP_POLICY_RUN);

	snprintf(path, sizeof(path), "%s/idle", root);
	setenv("GP_IDLE_HINT_FILE", path, 1);
	p.idle_only = true;
	/* No such file: cannot tell, so no computing. */
	ASSERT_EQ(gp_policy_user_idle(), -ENOENT);
	ASSERT_EQ(gp_policy_check(&p, 0, 0, why, sizeof(why)), GP_POLICY_NOT_IDLE);
	f = fopen(path, "w");
	fputs("0\n", f);
	fclose(f);
	ASSERT_EQ(gp_policy_user_idle(), 0);
	ASSERT_EQ(gp_policy_check(&p, 0, 0, why, sizeof(why)), GP_POLICY_NOT_IDLE);
	ASSERT_STR_EQ(why, "the user is active (idle_only)");
	f = fopen(path, "w");
	fputs("1\n", f);
	fclose(f);
	ASSERT_EQ(gp_policy_user_idle(), 1);
	ASSERT_EQ(gp_policy_check(&p, 0, 0, why, sizeof(why)), GP_POLICY_RUN);

	/* Hours in UTC: 1970-01-01 00:30 is outside 08:00-18:00. */
	setenv("TZ", "UTC", 1);
	ASSERT_OK(gp_hours_parse("08:00-18:00", &p.hours));
	ASSERT_EQ(gp_policy_check(&p, 30 * 60, 0, why, sizeof(why)),
		  GP_POLICY_OUTSIDE_HOURS);
	ASSERT_STR_EQ(why, "outside the hours 08:00-18:00");
	ASSERT_EQ(gp_policy_check(&p, 9 * 3600, 0, why, sizeof(why)), GP_POLICY_RUN);
}

/* max_upload_mib_per_day: the verdict against the bytes sent today, and
 * those bytes as the statistics count them (stored and pending, today's
 * UTC day only, every pool). */
static void test_upload_cap(void)
{
	struct gp_policy p = { 0 };
	const uint64_t mib = 1024 * 1024;
	const int64_t day = 86400, now = 20000 * day + 3600;
	struct gp_stats *st = NULL;
	struct gp_stats_delta d = { 0 };
	char why[256] = "", path[600], err[256];
	int64_t up = -1;

	/* No cap: any amount runs. */
	ASSERT_EQ(gp_policy_check(&p, (time_t)now, UINT64_MAX, why, sizeof(why)),
		  GP_POLICY_RUN);
	p.max_upload_bytes = 10 * mib;
	ASSERT_EQ(gp_policy_check(&p, (time_t)now, 10 * mib - 1, why,
				  sizeof(why)), GP_POLICY_RUN);
	ASSERT_EQ(gp_policy_check(&p, (time_t)now, 10 * mib, why, sizeof(why)),
		  GP_POLICY_UPLOAD_CAP);
	ASSERT_STR_EQ(why, "sent 10.0 MiB today, the cap is 10.0 MiB "
		      "(max_upload_mib_per_day); computing resumes after 00:00 UTC");
	ASSERT_EQ(gp_policy_check(&p, (time_t)now, 25 * mib, why, sizeof(why)),
		  GP_POLICY_UPLOAD_CAP);

	/* What the session checks: yesterday's bytes do not count, today's
	 * do, stored or still pending, over every pool. */
	snprintf(path, sizeof(path), "%s/agent.db", root);
	ASSERT_OK(gp_stats_open(path, GP_STATS_CREATE, &st, err, sizeof(err)));
	ASSERT_OK(gp_stats_day_bytes_up(st, now, &up));
	ASSERT_EQ(up, 0);
	snprintf(d.pool, sizeof(d.pool), "pool-a");
	d.at = now - day;
	d.bytes_up = (int64_t)(50 * mib);
	ASSERT(gp_stats_add(st, &d) >= 0);
	d.at = now - 600;
	d.bytes_up = (int64_t)(6 * mib);
	d.bytes_down = (int64_t)(40 * mib); /* received: not capped */
	ASSERT(gp_stats_add(st, &d) >= 0);
	ASSERT(gp_stats_flush(st) > 0);
	d.at = now;
	d.bytes_up = (int64_t)(3 * mib);
	ASSERT(gp_stats_add(st, &d) >= 0);
	snprintf(d.pool, sizeof(d.pool), "pool-b");
	d.bytes_up = (int64_t)mib;
	ASSERT(gp_stats_add(st, &d) >= 0);
	ASSERT_OK(gp_stats_day_bytes_up(st, now, &up));
	ASSERT_EQ(up, (int64_t)(10 * mib));
	ASSERT_EQ(gp_policy_check(&p, (time_t)now, (uint64_t)up, why,
				  sizeof(why)), GP_POLICY_UPLOAD_CAP);
	/* The next UTC day starts from nothing: computing resumes. */
	ASSERT_OK(gp_stats_day_bytes_up(st, now + day, &up));
	ASSERT_EQ(up, 0);
	ASSERT_EQ(gp_policy_check(&p, (time_t)(now + day), (uint64_t)up, why,
				  sizeof(why)), GP_POLICY_RUN);
	/* Flushed, the same count. */
	ASSERT(gp_stats_flush(st) > 0);
	ASSERT_OK(gp_stats_day_bytes_up(st, now, &up));
	ASSERT_EQ(up, (int64_t)(10 * mib));
	gp_stats_close(st);
}

static void test_input(void)
{
	struct gp_input_watch w = { 0 };
	char path[600];
	FILE *f;

	snprintf(path, sizeof(path), "%s/interrupts", root);
	f = fopen(path, "w");
	fputs("           CPU0       CPU1\n"
	      "  0:         40          0   IO-APIC   2-edge      timer\n"
	      "  1:        100         20   IO-APIC   1-edge      i8042\n"
	      " 12:          5          7   IO-APIC  12-edge      i8042\n"
	      "NMI:          0          0   Non-maskable interrupts\n", f);
	fclose(f);
	/* First look: not idle yet; the same count for 300 s: idle. */
	ASSERT_EQ(gp_policy_input_idle(path, 1000, 300, &w), 0);
	ASSERT_UINT_EQ(w.count, 132);
	ASSERT_EQ(gp_policy_input_idle(path, 1299, 300, &w), 0);
	ASSERT_EQ(gp_policy_input_idle(path, 1300, 300, &w), 1);
	/* A key press: active again, from now on. */
	f = fopen(path, "w");
	fputs("  1:        101         20   IO-APIC   1-edge      i8042\n", f);
	fclose(f);
	ASSERT_EQ(gp_policy_input_idle(path, 1400, 300, &w), 0);
	ASSERT_EQ(gp_policy_input_idle(path, 1600, 300, &w), 0);
	ASSERT_EQ(gp_policy_input_idle(path, 1700, 300, &w), 1);
	/* No PS/2 controller: cannot tell. */
	f = fopen(path, "w");
	fputs("  0:         40          0   IO-APIC   2-edge      timer\n", f);
	fclose(f);
	ASSERT_EQ(gp_policy_input_idle(path, 1800, 300, &w), -ENOENT);
	snprintf(path, sizeof(path), "%s/missing", root);
	ASSERT_EQ(gp_policy_input_idle(path, 1800, 300, &w), -ENOENT);
}

static void test_status(void)
{
	struct gp_agent_status st = { 0 }, back;
	char buf[2048];

	snprintf(st.state, sizeof(st.state), "paused");
	/* A newline in a reason must not forge a key. */
	snprintf(st.reason, sizeof(st.reason), "on battery\nstate=connected");
	snprintf(st.pool, sizeof(st.pool), "ab12-cd34");
	snprintf(st.endpoint, sizeof(st.endpoint), "10.0.0.1:7100");
	snprintf(st.device, sizeof(st.device), "cpu: x");
	st.since = 1790000000;
	st.minibatches = 42;
	st.pid = 7;
	ASSERT_GT(gp_agent_status_format(&st, buf, sizeof(buf)), 0);
	ASSERT_OK(gp_agent_status_parse(buf, &back));
	ASSERT_STR_EQ(back.state, "paused");
	ASSERT_STR_EQ(back.reason, "on battery state=connected");
	ASSERT_STR_EQ(back.pool, "ab12-cd34");
	ASSERT_STR_EQ(back.endpoint, "10.0.0.1:7100");
	ASSERT_STR_EQ(back.device, "cpu: x");
	ASSERT_EQ(back.since, 1790000000);
	ASSERT_UINT_EQ(back.minibatches, 42);
	ASSERT_UINT_EQ(back.pid, 7);
	ASSERT_EQ(gp_agent_status_format(&st, buf, 16), -ENOSPC);

	/* Unknown keys are skipped; no state line is an error. */
	ASSERT_OK(gp_agent_status_parse("future=1\nstate=waiting\n", &back));
	ASSERT_STR_EQ(back.state, "waiting");
	ASSERT_EQ(back.reason[0], '\0');
	ASSERT_EQ(gp_agent_status_parse("reason=x\n", &back), -EBADMSG);
	ASSERT_EQ(gp_agent_status_parse("error: permission denied\n", &back),
		  -EBADMSG);

	/* The published snapshot. */
	gp_agent_status_get(&back);
	ASSERT_STR_EQ(back.state, "stopped");
	gp_agent_status_publish(&st);
	gp_agent_status_get(&back);
	ASSERT_STR_EQ(back.state, "paused");
}

int main(void)
{
	char cmd[600];

	ASSERT_NOT_NULL(mkdtemp(root));
	test_hours();
	test_power();
	test_verdict();
	test_upload_cap();
	test_input();
	test_status();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	ASSERT_OK(system(cmd));
	printf("policy: all tests passed\n");
	return 0;
}
