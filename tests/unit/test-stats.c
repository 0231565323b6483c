/* The agent's statistics database on real files: memberships, batched
 * contribution upserts, the per-day/pool/device views, the table and JSON
 * output, and damaged files refused without being touched. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stats.h"
#include "test.h"

static char dir[64];

/* 2026-11-26 00:00:00 UTC and the day after. */
#define DAY1 1795651200LL
#define DAY2 (DAY1 + 86400)

static struct gp_stats_delta delta(int64_t at, const char *pool,
				   const char *device, int64_t minibatches)
{
	struct gp_stats_delta d;

	memset(&d, 0, sizeof(d));
	d.at = at;
	snprintf(d.pool, sizeof(d.pool), "%s", pool);
	snprintf(d.device, sizeof(d.device), "%s", device);
	d.minibatches = minibatches;
	d.samples = minibatches * 64;
	d.gflop = (double)minibatches * 1.5;
	d.compute_seconds = (double)minibatches * 0.25;
	d.bytes_up = minibatches * 1000;
	d.bytes_down = minibatches * 2000;
	return d;
}

static char *render(int json, unsigned group, const struct gp_stats_row *rows,
		    size_t n, const struct gp_stats_row *total,
		    const struct gp_stats_membership *pools, size_t n_pools)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	ASSERT_NOT_NULL(f);
	if (json)
		ASSERT_OK(gp_stats_format_json(f, group, rows, n, total, pools,
					       n_pools));
	else
		ASSERT_OK(gp_stats_format_table(f, group, rows, n, total, pools,
						n_pools));
	fclose(f);
	return buf;
}

static void test_day(void)
{
	char day[GP_STATS_DAY_LEN + 1];

	gp_stats_day(DAY1, day);
	ASSERT_STR_EQ(day, "2026-11-26");
	gp_stats_day(DAY2 - 1, day);
	ASSERT_STR_EQ(day, "2026-11-26");
	gp_stats_day(DAY2, day);
	ASSERT_STR_EQ(day, "2026-11-27");
	gp_stats_day(0, day);
	ASSERT_STR_EQ(day, "1970-01-01");
}

static void test_human(void)
{
	char b[GP_STATS_HUMAN_MAX];

	ASSERT_STR_EQ(gp_stats_human_count(0, b, sizeof(b)), "0");
	ASSERT_STR_EQ(gp_stats_human_count(950, b, sizeof(b)), "950");
	ASSERT_STR_EQ(gp_stats_human_count(0.458, b, sizeof(b)), "0.458");
	ASSERT_STR_EQ(gp_stats_human_count(999.6, b, sizeof(b)), "1k");
	ASSERT_STR_EQ(gp_stats_human_count(12480, b, sizeof(b)), "12.5k");
	/* The axis label that was clipped to ".248e+06". */
	ASSERT_STR_EQ(gp_stats_human_count(1248000, b, sizeof(b)), "1.25M");
	ASSERT_STR_EQ(gp_stats_human_count(3.1e9, b, sizeof(b)), "3.1G");
	ASSERT_STR_EQ(gp_stats_human_count(-2500, b, sizeof(b)), "-2.5k");
	ASSERT_STR_EQ(gp_stats_human_duration(0, b, sizeof(b)), "0.0 s");
	/* A short job's compute time, which "%.2f" hours showed as 0.00. */
	ASSERT_STR_EQ(gp_stats_human_duration(5.04, b, sizeof(b)), "5.0 s");
	ASSERT_STR_EQ(gp_stats_human_duration(192, b, sizeof(b)), "3.2 min");
	ASSERT_STR_EQ(gp_stats_human_duration(4500, b, sizeof(b)), "1.25 h");
	ASSERT_STR_EQ(gp_stats_human_duration(468000, b, sizeof(b)), "130 h");
	ASSERT_STR_EQ(gp_stats_human_duration(-1, b, sizeof(b)), "-");
}

static void test_contributions(void)
{
	struct gp_stats *s = NULL, *r = NULL;
	struct gp_stats_row *rows = NULL, *total = NULL;
	struct gp_stats_membership m, *pools = NULL;
	struct gp_stats_delta d;
	char path[128], err[512] = "", *out;
	size_t n = 0, n_total = 0, n_pools = 0;

	snprintf(path, sizeof(path), "%s/stats.db", dir);
	ASSERT_EQ(gp_stats_open(path, 0, &s, err, sizeof(err)), -ENOENT);
	ASSERT_OK(gp_stats_open(path, GP_STATS_CREATE, &s, err, sizeof(err)));

	memset(&m, 0, sizeof(m));
	snprintf(m.pool, sizeof(m.pool), "lab");
	memset(m.coordinator_key, 0xc0, sizeof(m.coordinator_key));
	snprintf(m.endpoints, sizeof(m.endpoints), "10.0.0.1:7100");
	m.agent_id = 3;
	m.joined_at = DAY1;
	ASSERT_OK(gp_stats_membership_set(s, &m));
	snprintf(m.pool, sizeof(m.pool), "club \"x\"\n\xff");
	m.agent_id = 0;
	m.joined_at = DAY1 + 5;
	ASSERT_OK(gp_stats_membership_set(s, &m));
	ASSERT_OK(gp_stats_membership_leave(s, "lab", DAY2));
	ASSERT_EQ(gp_stats_membership_leave(s, "nowhere", DAY2), -ENOENT);

	/* Many small deltas collapse into one pending sum per key. */
	gp_stats_set_flush_interval(s, 60);
	for (int i = 0; i < 10; i++) {
		d = delta(DAY1 + i, "lab", "cpu", 1);
		ASSERT_EQ(gp_stats_add(s, &d), 0);
	}
	d = delta(DAY1 + 100, "lab", "pocl", 4);
	ASSERT_EQ(gp_stats_add(s, &d), 1); /* the cpu sum is 100 s old */
	d = delta(DAY2 + 10, "lab", "cpu", 5);
	gp_stats_add(s, &d);
	d = delta(DAY2 + 20, "club", "cpu", 7);
	gp_stats_add(s, &d);
	d = delta(DAY2 + 30, "club", "", 0); /* traffic only */
	d.bytes_down = 5000;
	gp_stats_add(s, &d);
	d.gflop = -1;
	ASSERT_EQ(gp_stats_add(s, &d), -EINVAL);

	/* Nothing is visible before the flush. */
	ASSERT_OK(gp_stats_query(s, 0, NULL, &total, &n_total));
	ASSERT_EQ(n_total, 1);
	ASSERT_EQ(total[0].minibatches, 0);
	free(total);
	ASSERT_EQ(gp_stats_flush(s), 5);
	ASSERT_EQ(gp_stats_flush(s), 0);
	/* A second flush of the same key adds, not replaces. */
	d = delta(DAY1 + 500, "lab", "cpu", 2);
	gp_stats_add(s, &d);
	ASSERT_EQ(gp_stats_flush(s), 1);

	/* A second, read-only connection sees it (as `stats` does while the
	 * daemon runs). */
	ASSERT_OK(gp_stats_open(path, GP_STATS_READONLY, &r, err, sizeof(err)));
	ASSERT_EQ(gp_stats_add(r, &d), -EROFS);

	ASSERT_OK(gp_stats_query(r, GP_STATS_BY_DAY, NULL, &rows, &n));
	ASSERT_EQ(n, 2);
	ASSERT_STR_EQ(rows[0].day, "2026-11-26");
	ASSERT_STR_EQ(rows[0].pool, "");
	ASSERT_EQ(rows[0].minibatches, 10 + 4 + 2);
	ASSERT_EQ(rows[0].samples, 16 * 64);
	ASSERT_NEAR(rows[0].gflop, 16 * 1.5, 1e-9);
	ASSERT_NEAR(rows[0].compute_seconds, 16 * 0.25, 1e-9);
	ASSERT_STR_EQ(rows[1].day, "2026-11-27");
	ASSERT_EQ(rows[1].minibatches, 12);
	ASSERT_EQ(rows[1].bytes_down, 12 * 2000 + 5000);
	free(rows);

	ASSERT_OK(gp_stats_query(r, GP_STATS_BY_POOL, NULL, &rows, &n));
	ASSERT_EQ(n, 2);
	ASSERT_STR_EQ(rows[0].pool, "club");
	ASSERT_EQ(rows[0].minibatches, 7);
	ASSERT_STR_EQ(rows[1].pool, "lab");
	ASSERT_EQ(rows[1].minibatches, 21);
	free(rows);

	ASSERT_OK(gp_stats_query(r, GP_STATS_BY_DAY | GP_STATS_BY_POOL |
					    GP_STATS_BY_DEVICE,
				 "2026-11-27", &rows, &n));
	ASSERT_EQ(n, 3);
	ASSERT_STR_EQ(rows[0].device, "");
	ASSERT_STR_EQ(rows[1].pool, "club");
	ASSERT_STR_EQ(rows[1].device, "cpu");
	ASSERT_STR_EQ(rows[2].pool, "lab");
	free(rows);
	ASSERT_EQ(gp_stats_query(r, 8, NULL, &rows, &n), -EINVAL);

	ASSERT_OK(gp_stats_query(r, GP_STATS_BY_DEVICE, NULL, &rows, &n));
	ASSERT_EQ(n, 3);
	ASSERT_OK(gp_stats_query(r, 0, NULL, &total, &n_total));
	ASSERT_EQ(total[0].minibatches, 28);
	ASSERT_OK(gp_stats_membership_list(r, &pools, &n_pools));
	ASSERT_EQ(n_pools, 2);
	ASSERT_STR_EQ(pools[0].pool, "lab");
	ASSERT_EQ(pools[0].left_at, DAY2);
	ASSERT_EQ(pools[0].agent_id, 3);
	ASSERT_EQ(pools[1].left_at, 0);

	out = render(1, GP_STATS_BY_DEVICE, rows, n, total, pools, n_pools);
	ASSERT_STR_EQ(
		out,
		"{\"total\": {\"minibatches\": 28, \"samples\": 1792, \"gflop\": "
		"42.000000, \"compute_seconds\": 7.000000, \"bytes_up\": 28000, "
		"\"bytes_down\": 61000},\n"
		" \"rows\": [\n"
		"  {\"device\": \"\", \"minibatches\": 0, \"samples\": 0, "
		"\"gflop\": 0.000000, \"compute_seconds\": 0.000000, "
		"\"bytes_up\": 0, \"bytes_down\": 5000},\n"
		"  {\"device\": \"cpu\", \"minibatches\": 24, \"samples\": 1536, "
		"\"gflop\": 36.000000, \"compute_seconds\": 6.000000, "
		"\"bytes_up\": 24000, \"bytes_down\": 48000},\n"
		"  {\"device\": \"pocl\", \"minibatches\": 4, \"samples\": 256, "
		"\"gflop\": 6.000000, \"compute_seconds\": 1.000000, "
		"\"bytes_up\": 4000, \"bytes_down\": 8000}],\n"
		" \"pools\": [\n"
		"  {\"pool\": \"lab\", \"name\": \"pool at 10.0.0.1:7100\", "
		"\"coordinator_key\": "
		"\"c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0\", "
		"\"endpoints\": \"10.0.0.1:7100\", \"agent_id\": 3, "
		"\"joined_at\": 1795651200, \"left_at\": 1795737600, "
		"\"job\": null},\n"
		"  {\"pool\": \"club \\\"x\\\"\\u000a\\ufffd\", \"name\": "
		"\"pool at 10.0.0.1:7100\", \"coordinator_key\": "
		"\"c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0\", "
		"\"endpoints\": \"10.0.0.1:7100\", \"agent_id\": 0, "
		"\"joined_at\": 1795651205, \"left_at\": null, "
		"\"job\": null}]}\n");
	free(out);

	out = render(0, GP_STATS_BY_DEVICE, rows, n, total, NULL, 0);
	ASSERT_NOT_NULL(strstr(out, "device"));
	ASSERT_NOT_NULL(strstr(out, "\ncpu "));
	ASSERT_NOT_NULL(strstr(out, "\ntotal "));
	ASSERT_NOT_NULL(strstr(out, "         28 "));
	/* Compute time in a unit that shows it, traffic of no device says
	 * so. */
	ASSERT_NOT_NULL(strstr(out, "    6.0 s "));
	ASSERT_NOT_NULL(strstr(out, "\n(no device) "));
	ASSERT_NOT_NULL(strstr(out, " MiB up "));
	free(out);
	free(rows);
	free(total);
	free(pools);
	gp_stats_close(r);

	/* Pending sums are written at close; reopening keeps everything. */
	d = delta(DAY2 + 40, "club", "cpu", 1);
	gp_stats_add(s, &d);
	gp_stats_close(s);
	s = NULL;
	ASSERT_OK(gp_stats_open(path, GP_STATS_CHECK, &s, err, sizeof(err)));
	ASSERT_OK(gp_stats_query(s, 0, NULL, &total, &n_total));
	ASSERT_EQ(total[0].minibatches, 29);
	free(total);
	gp_stats_close(s);
}

/* What a pool's coordinator told of its job names the pool: noted in
 * memory, listed at once by the connection that noted it, written by the
 * flush, and then seen by another connection; stats --by pool shows the
 * name with the fingerprint after. */
static void test_job_note(void)
{
	struct gp_stats *s = NULL, *r = NULL;
	struct gp_stats_membership m, *pools = NULL;
	struct gp_stats_row *rows = NULL;
	struct gp_stats_job job = { .id = 2, .epoch = 3, .epochs = 8,
				    .progress = 0.375, .accuracy = -1,
				    .told_at = DAY2 };
	struct gp_stats_delta d;
	char path[128], err[512] = "", name[160], *out;
	size_t n = 0, n_pools = 0;

	snprintf(path, sizeof(path), "%s/jobs.db", dir);
	ASSERT_OK(gp_stats_open(path, GP_STATS_CREATE, &s, err, sizeof(err)));
	memset(&m, 0, sizeof(m));
	snprintf(m.pool, sizeof(m.pool), "3f2a9c0d11223344");
	snprintf(m.endpoints, sizeof(m.endpoints), "10.0.0.1:7100,[::1]:7100");
	m.joined_at = DAY1;
	ASSERT_OK(gp_stats_membership_set(s, &m));
	snprintf(m.pool, sizeof(m.pool), "77aa000000000000");
	m.endpoints[0] = '\0';
	m.joined_at = DAY1 + 1;
	ASSERT_OK(gp_stats_membership_set(s, &m));
	ASSERT_OK(gp_stats_open(path, GP_STATS_READONLY, &r, err, sizeof(err)));
	ASSERT_EQ(gp_stats_job_note(r, "3f2a9c0d11223344", &job), -EROFS);

	snprintf(job.name, sizeof(job.name), "fashion-mlp");
	snprintf(job.state, sizeof(job.state), "training");
	ASSERT_EQ(gp_stats_job_note(s, "", &job), -EINVAL);
	ASSERT_OK(gp_stats_job_note(s, "3f2a9c0d11223344", &job));
	job.epoch = 4; /* a later STATS replaces the note */
	ASSERT_OK(gp_stats_job_note(s, "3f2a9c0d11223344", &job));
	ASSERT_OK(gp_stats_membership_list(s, &pools, &n_pools));
	ASSERT_EQ(n_pools, 2);
	ASSERT_STR_EQ(pools[0].job.name, "fashion-mlp");
	ASSERT_EQ(pools[0].job.epoch, 4);
	ASSERT_STR_EQ(pools[1].job.name, "");
	free(pools);
	/* Not written yet: the other connection does not see it. */
	ASSERT_OK(gp_stats_membership_list(r, &pools, &n_pools));
	ASSERT_STR_EQ(pools[0].job.name, "");
	free(pools);
	/* A flush with no sums pending still writes the note. */
	ASSERT_EQ(gp_stats_flush(s), 0);
	ASSERT_OK(gp_stats_membership_list(r, &pools, &n_pools));
	ASSERT_STR_EQ(pools[0].job.name, "fashion-mlp");
	ASSERT_STR_EQ(pools[0].job.state, "training");
	ASSERT_EQ(pools[0].job.id, 2);
	ASSERT_EQ(pools[0].job.epoch, 4);
	ASSERT_EQ(pools[0].job.epochs, 8);
	ASSERT_NEAR(pools[0].job.progress, 0.375, 1e-9);
	ASSERT(pools[0].job.accuracy < 0); /* none yet: NULL in the file */
	ASSERT_EQ(pools[0].job.told_at, DAY2);
	ASSERT_STR_EQ(gp_stats_pool_name("3f2a9c0d11223344", pools, n_pools,
					 name, sizeof(name)),
		      "fashion-mlp at 10.0.0.1:7100");
	ASSERT_STR_EQ(gp_stats_pool_name("77aa000000000000", pools, n_pools,
					 name, sizeof(name)), "");
	ASSERT_STR_EQ(gp_stats_pool_name("nowhere", pools, n_pools, name,
					 sizeof(name)), "");

	d = delta(DAY2, "3f2a9c0d11223344", "cpu", 3);
	gp_stats_add(s, &d);
	d = delta(DAY2, "77aa000000000000", "cpu", 1);
	gp_stats_add(s, &d);
	ASSERT_EQ(gp_stats_flush(s), 2);
	ASSERT_OK(gp_stats_query(r, GP_STATS_BY_POOL, NULL, &rows, &n));
	ASSERT_EQ(n, 2);
	out = render(0, GP_STATS_BY_POOL, rows, n, NULL, pools, n_pools);
	ASSERT_NOT_NULL(strstr(out, "\nfashion-mlp at 10.0.0.1:7100 (3f2a9c0d1) "));
	/* A pool never named keeps its fingerprint. */
	ASSERT_NOT_NULL(strstr(out, "\n77aa000000000000 "));
	free(out);
	out = render(1, GP_STATS_BY_POOL, rows, n, NULL, pools, n_pools);
	ASSERT_NOT_NULL(strstr(out, "{\"pool\": \"3f2a9c0d11223344\", "
				    "\"pool_name\": \"fashion-mlp at "
				    "10.0.0.1:7100\", \"minibatches\": 3"));
	ASSERT_NOT_NULL(strstr(out, "\"job\": {\"name\": \"fashion-mlp\", "
				    "\"id\": 2, \"state\": \"training\", "
				    "\"epoch\": 4, \"epochs\": 8, \"progress\": "
				    "0.375000, \"test_accuracy\": null, "
				    "\"told_at\": 1795737600}"));
	free(out);
	free(rows);
	free(pools);

	/* An evaluated job; a note left at close is written then; joining
	 * again keeps it. */
	job.accuracy = 0.8125;
	snprintf(job.state, sizeof(job.state), "done");
	ASSERT_OK(gp_stats_job_note(s, "3f2a9c0d11223344", &job));
	gp_stats_close(s);
	ASSERT_OK(gp_stats_open(path, 0, &s, err, sizeof(err)));
	snprintf(m.pool, sizeof(m.pool), "3f2a9c0d11223344");
	ASSERT_OK(gp_stats_membership_set(s, &m));
	ASSERT_OK(gp_stats_membership_list(r, &pools, &n_pools));
	ASSERT_STR_EQ(pools[0].job.state, "done");
	ASSERT_NEAR(pools[0].job.accuracy, 0.8125, 1e-9);
	free(pools);
	gp_stats_close(s);
	gp_stats_close(r);
}

/* The volunteer's pause outlives a reopen. */
static void test_pause(void)
{
	struct gp_stats *s = NULL;
	char path[128], err[512] = "";
	int64_t until = -1;

	snprintf(path, sizeof(path), "%s/pause.db", dir);
	ASSERT_OK(gp_stats_open(path, GP_STATS_CREATE, &s, err, sizeof(err)));
	ASSERT_OK(gp_stats_pause_get(s, &until));
	ASSERT_EQ(until, 0);
	ASSERT_EQ(gp_stats_pause_set(s, -5), -EINVAL);
	ASSERT_OK(gp_stats_pause_set(s, GP_STATS_PAUSE_FOREVER));
	ASSERT_OK(gp_stats_pause_set(s, 1795651200));
	gp_stats_close(s);
	ASSERT_OK(gp_stats_open(path, GP_STATS_READONLY, &s, err, sizeof(err)));
	ASSERT_OK(gp_stats_pause_get(s, &until));
	ASSERT_EQ(until, 1795651200);
	gp_stats_close(s);
}

static void test_bad_file(void)
{
	struct gp_stats *s = NULL;
	char path[128], err[512] = "";
	static const char junk[] = "this is not a database, it is a poem\n";
	char back[sizeof(junk)];
	FILE *f;

	snprintf(path, sizeof(path), "%s/junk.db", dir);
	f = fopen(path, "wb");
	ASSERT_NOT_NULL(f);
	for (int i = 0; i < 100; i++)
		fwrite(junk, 1, sizeof(junk) - 1, f);
	fclose(f);
	ASSERT_EQ(gp_stats_open(path, GP_STATS_CREATE, &s, err, sizeof(err)),
		  -EBADMSG);
	ASSERT(s == NULL);
	ASSERT_NOT_NULL(strstr(err, path));
	ASSERT_NOT_NULL(strstr(err, "not SQLite"));
	f = fopen(path, "rb");
	ASSERT_NOT_NULL(f);
	ASSERT_EQ(fread(back, 1, sizeof(back) - 1, f), sizeof(back) - 1);
	fclose(f);
	ASSERT_MEM_EQ(back, junk, sizeof(junk) - 1);
}

int main(void)
{
	char cmd[128];

	snprintf(dir, sizeof(dir), "/tmp/gp-test-stats-XXXXXX");
	ASSERT_NOT_NULL(mkdtemp(dir));
	test_day();
	test_human();
	test_contributions();
	test_job_note();
	test_pause();
	test_bad_file();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	printf("stats: all tests passed\n");
	return 0;
}
