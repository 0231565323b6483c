/* Unit tests for coordinator/progress (what STATS tells an agent) and the
 * pure parts of coordinator/credit: the job's name, the rate and ETA over
 * the last minute, progress, the round's timing (evaluations at once, else
 * every GP_PROGRESS_INTERVAL_MS), a member's credit (the ledger's at JOIN
 * plus this connection's), the capability agreed, and the published
 * page's escaping and anonymity. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "credit.h"
#include "members.h"
#include "pool-fixture.h"
#include "progress.h"

static const float ones[FX_N] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 };

/* One member's STATS, as serve builds it. */
static void fill(const struct gp_progress *pr, const struct gp_pool *pool,
		 const struct gp_member *m, bool done, int64_t now,
		 struct gp_msg_stats *s)
{
	gp_progress_fill(pr, pool, done, now, s);
	gp_progress_member(pr, m, s);
}

static void test_job_name(void)
{
	char b[GP_MSG_JOB_NAME_MAX + 1];

	gp_progress_job_name("/etc/gradpool/cnn.ini", "fashion-mnist",
			     "gradpool-model 1; input shape=1x28x28", b, sizeof(b));
	ASSERT_STR_EQ(b, "cnn");
	gp_progress_job_name("/etc/gradpool/job.ini", "fashion-mnist",
			     "784-256-128-10", b, sizeof(b));
	ASSERT_STR_EQ(b, "fashion-mnist 784-256-128-10");
	gp_progress_job_name("job.ini", "fashion-mnist",
			     "gradpool-model 1; dense fc out=10", b, sizeof(b));
	ASSERT_STR_EQ(b, "fashion-mnist model");
	gp_progress_job_name(NULL, "fashion-mnist", "784-10", b, sizeof(b));
	ASSERT_STR_EQ(b, "fashion-mnist 784-10");
	gp_progress_job_name("x/.hidden", "d", "1-2", b, sizeof(b));
	ASSERT_STR_EQ(b, ".hidden");
	/* A file name that is not a well-formed name keeps its printable
	 * ASCII; one cut inside a UTF-8 character is mended. */
	gp_progress_job_name("/j/ bad\tname .ini", "d", "1-2", b, sizeof(b));
	ASSERT_STR_EQ(b, "badname");
	ASSERT_OK(gp_msg_public_name_check(b));
	{
		char path[200] = "/j/";

		for (int i = 0; i < 40; i++)
			strcat(path, "é");
		strcat(path, ".ini");
		gp_progress_job_name(path, "d", "1-2", b, sizeof(b));
		ASSERT_EQ(strlen(b), 64);
		ASSERT_OK(gp_msg_public_name_check(b));
	}
}

/* Applies member m's assigned minibatches from..to - 1 of its clock. */
static void apply_n(struct fixture *f, struct gp_member *m, size_t from,
		    size_t n, int64_t at)
{
	uint64_t ids[GP_WORK_BASE];
	struct fx_update x;
	size_t got = fx_work_of(f, m->agent_id, m->clock, ids, GP_WORK_BASE);

	ASSERT_GE(got, n);
	for (size_t i = from; i < n; i++)
		ASSERT_OK(gp_apply_update(&f->pool, m, fx_plain(&x, ids[i],
								m->clock, ones),
					  at));
}

static void test_stats(void)
{
	struct fixture f;
	struct gp_progress pr = { 0 };
	struct gp_msg_stats s;
	struct gp_member *m;
	double mb, rate;

	fx_setup(&f, 1);
	snprintf(pr.job_name, sizeof(pr.job_name), "tiny");
	pr.flops_per_sample = 2.5e6;
	m = fx_join(&f, 0, GP_CAP_PROGRESS | GP_CAP_F16);
	ASSERT(m->caps & GP_CAP_PROGRESS);
	m->credit_updates = 10;
	m->credit_samples = 40;
	m->credit_other_gflop = 1.5;

	/* Nothing applied: no rate, an unknown ETA, progress 0. */
	gp_progress_record(&pr, &f.pool, 1000);
	fill(&pr, &f.pool, m, false, 1000, &s);
	ASSERT_STR_EQ(s.job_name, "tiny");
	ASSERT_EQ(s.job_id, 1);
	ASSERT_EQ(s.epochs, 2);
	ASSERT_EQ(s.epoch, 0);
	ASSERT_EQ(s.state, GP_JOB_STATE_TRAINING);
	ASSERT_EQ(s.eta_s, GP_MSG_ETA_UNKNOWN);
	ASSERT_NEAR(s.progress, 0, 0);
	ASSERT_EQ(s.agents_live, 1);
	ASSERT_EQ(s.eval_epochs, 0);
	/* Credit: 1.5 GFLOP elsewhere + 40 samples x 2.5 MFLOP here. */
	ASSERT_EQ(s.updates_accepted, 10);
	ASSERT_EQ(s.samples_credited, 40);
	ASSERT_UINT_EQ(s.credit_mflop, 1500 + 100);

	/* Two minibatches (8 samples) applied in 2 s: 1 minibatch/s, 18
	 * left of 20, ETA 18 s. A point a second at most. */
	gp_work_request(&f.pool, m, 1);
	apply_n(&f, m, 0, 1, 1500);
	gp_progress_record(&pr, &f.pool, 1500);
	ASSERT_EQ(pr.n, 1);
	gp_progress_record(&pr, &f.pool, 2000);
	apply_n(&f, m, 1, 2, 2500);
	gp_progress_record(&pr, &f.pool, 3000);
	gp_progress_rate(&pr, 3000, &mb, &rate);
	ASSERT_NEAR(mb, 1.0, 1e-9);
	ASSERT_NEAR(rate, 4.0, 1e-9);
	fill(&pr, &f.pool, m, false, 3000, &s);
	ASSERT_EQ(s.eta_s, 18);
	ASSERT_NEAR(s.progress, 0.1, 1e-6);
	ASSERT_NEAR(s.samples_per_s, 4.0, 1e-6);
	ASSERT_EQ(s.updates_accepted, 12);
	ASSERT_EQ(s.samples_credited, 48);
	ASSERT_UINT_EQ(s.credit_mflop, 1500 + 120);
	ASSERT(s.loss > 0);
	/* Nothing new for long: the rate stops (not a lifetime average). */
	gp_progress_rate(&pr, 9000, &mb, &rate);
	ASSERT_NEAR(mb, 0, 0);
	fill(&pr, &f.pool, m, false, 9000, &s);
	ASSERT_EQ(s.eta_s, GP_MSG_ETA_UNKNOWN);
	/* The window is the last minute: points older fall out. */
	for (int64_t t = 4000; t <= 130000; t += 1000)
		gp_progress_record(&pr, &f.pool, t);
	ASSERT_EQ(pr.n, GP_PROGRESS_POINTS);
	gp_progress_rate(&pr, 130000, &mb, &rate);
	ASSERT_NEAR(mb, 0, 0);

	/* Evaluations: refused when not a share; due at once. */
	ASSERT(gp_progress_due(&pr, 200000));
	ASSERT(!gp_progress_due(&pr, 200000 + GP_PROGRESS_INTERVAL_MS - 1));
	gp_progress_eval(&pr, 1, 1.5, 0.3);
	ASSERT(!pr.eval_news);
	gp_progress_eval(&pr, 1, 0.8125, 0.5);
	ASSERT(gp_progress_due(&pr, 200001));
	ASSERT(!gp_progress_due(&pr, 200002));
	ASSERT(gp_progress_due(&pr, 200001 + GP_PROGRESS_INTERVAL_MS));
	fill(&pr, &f.pool, m, true, 200001, &s);
	ASSERT_EQ(s.eval_epochs, 1);
	ASSERT_NEAR(s.accuracy, 0.8125, 0);
	ASSERT_NEAR(s.test_loss, 0.5, 0);
	ASSERT_EQ(s.state, GP_JOB_STATE_DONE);
	ASSERT_EQ(s.eta_s, 0);
	ASSERT_NEAR(s.progress, 1, 0);

	/* What it fills always encodes and decodes (the decoder's checks). */
	{
		struct gp_msg msg, d;
		uint8_t *buf;
		size_t len;

		gp_msg_init(&msg, GP_MSG_STATS);
		msg.u.stats = s;
		ASSERT_OK(gp_msg_encode_alloc(&msg, &buf, &len));
		ASSERT_OK(gp_msg_decode(buf, len, &d));
		free(buf);
	}
	/* An agent without the bit does not get it agreed. */
	m = fx_join(&f, 1, GP_CAP_F16);
	ASSERT(!(m->caps & GP_CAP_PROGRESS));
	fx_teardown(&f);
}

static void test_credit_page(void)
{
	struct gp_credit_member m[3];
	struct gp_credit_page page = { .title = "A <b> & c", .generated_at = 1 };
	char *text = NULL, g[32];
	size_t len = 0;
	FILE *f;

	memset(m, 0, sizeof(m));
	m[0] = (struct gp_credit_member){ .agent_id = 1, .updates = 5,
					  .samples = 320, .gflop = 1234.5 };
	snprintf(m[0].public_name, sizeof(m[0].public_name), "<Zoë & \"co\">");
	snprintf(m[0].name, sizeof(m[0].name), "zoe-laptop");
	snprintf(m[0].fingerprint, sizeof(m[0].fingerprint), "aaaa-bbbb");
	m[1] = (struct gp_credit_member){ .agent_id = 2, .updates = 3,
					  .samples = 192, .gflop = 2.5 };
	snprintf(m[1].name, sizeof(m[1].name), "secret-host");
	snprintf(m[1].fingerprint, sizeof(m[1].fingerprint), "cccc-dddd");
	m[2] = (struct gp_credit_member){ .agent_id = 3, .updates = 9,
					  .samples = 900, .gflop = 99,
					  .revoked_at = 5 };
	snprintf(m[2].public_name, sizeof(m[2].public_name), "Cheater");

	f = open_memstream(&text, &len);
	ASSERT_NOT_NULL(f);
	ASSERT_OK(gp_credit_write_html(f, m, 3, &page));
	fclose(f);
	ASSERT(strstr(text, "&lt;Zoë &amp; &quot;co&quot;&gt;"));
	ASSERT(!strstr(text, "<Zoë"));
	ASSERT(strstr(text, "A &lt;b&gt; &amp; c"));
	ASSERT(strstr(text, ">anonymous<"));
	ASSERT(strstr(text, "1.23 TFLOP"));
	ASSERT(!strstr(text, "secret-host") && !strstr(text, "zoe-laptop"));
	ASSERT(!strstr(text, "aaaa-bbbb") && !strstr(text, "cccc-dddd"));
	ASSERT(!strstr(text, "Cheater"));       /* revoked: not shown */
	ASSERT(!strstr(text, "<script"));
	free(text);

	page.omit_anonymous = true;
	page.fingerprints = true;
	f = open_memstream(&text, &len);
	ASSERT_OK(gp_credit_write_html(f, m, 3, &page));
	fclose(f);
	ASSERT(!strstr(text, ">anonymous<"));
	ASSERT(strstr(text, "aaaa-bbbb") && !strstr(text, "cccc-dddd"));
	ASSERT(strstr(text, "not listed"));
	free(text);

	ASSERT_STR_EQ(gp_credit_format_gflop(0.5, g, sizeof(g)), "0.50 GFLOP");
	ASSERT_STR_EQ(gp_credit_format_gflop(45.44, g, sizeof(g)), "45.4 GFLOP");
	ASSERT_STR_EQ(gp_credit_format_gflop(2.5e6, g, sizeof(g)), "2.50 PFLOP");

	/* JSON: public_name null when not public, every key. */
	f = open_memstream(&text, &len);
	gp_credit_write_json(f, m, 2);
	fclose(f);
	ASSERT(strstr(text, "\"public_name\":null"));
	ASSERT(strstr(text, "\"public_name\":\"<Zoë & \\\"co\\\">\""));
	ASSERT(strstr(text, "\"total_gflop\":1237.000000"));
	free(text);
}

/* A STATS round reaches n members in GP_WALK_STATS_SLICES ticks, all of
 * a small pool at once, all that is left once the job is done, and never
 * more than the members there are. */
static void test_round(void)
{
	uint32_t left = 10000, sent = 0, ticks = 0;

	while (left > 0 && ticks < 100) {
		uint32_t k = gp_progress_round_take(&left, 10000, false);

		ASSERT_EQ(k, 10000 / GP_WALK_STATS_SLICES);
		sent += k;
		ticks++;
	}
	ASSERT_EQ(sent, 10000);
	ASSERT_EQ(ticks, GP_WALK_STATS_SLICES);
	ASSERT_EQ(gp_progress_round_take(&left, 10000, false), 0);
	/* 300: a slice of at least GP_WALK_SLICE_MIN, then the rest. */
	left = 300;
	ASSERT_EQ(gp_progress_round_take(&left, 300, false), GP_WALK_SLICE_MIN);
	ASSERT_EQ(gp_progress_round_take(&left, 300, false),
		  300 - GP_WALK_SLICE_MIN);
	ASSERT_EQ(left, 0);
	/* 40 and fewer: at once. */
	left = 40;
	ASSERT_EQ(gp_progress_round_take(&left, 40, false), 40);
	ASSERT_EQ(left, 0);
	/* The job done: everyone still to visit, now. */
	left = 9000;
	ASSERT_EQ(gp_progress_round_take(&left, 10000, true), 9000);
	ASSERT_EQ(left, 0);
	/* Members left during the round: no more visits than members. */
	left = 5000;
	ASSERT_EQ(gp_progress_round_take(&left, 100, true), 100);
	ASSERT_EQ(left, 0);
	left = 0;
	ASSERT_EQ(gp_progress_round_take(&left, 0, true), 0);
	/* The upkeep's slice: a tenth, at least the minimum, at most n. */
	ASSERT_EQ(gp_members_slice(10001, GP_WALK_UPKEEP_SLICES), 1001);
	ASSERT_EQ(gp_members_slice(1000, GP_WALK_UPKEEP_SLICES),
		  GP_WALK_SLICE_MIN);
	ASSERT_EQ(gp_members_slice(7, GP_WALK_UPKEEP_SLICES), 7);
}

/* A complete epoch's minibatch taken back (a failed verification) counts
 * as not applied until it is redone: the job is not at 100 %. */
static void test_redo(void)
{
	struct fixture f;
	struct gp_progress pr = { 0 };
	struct gp_msg_stats s;
	struct gp_member *m;
	uint64_t ids[16];
	size_t got = 0;
	uint32_t per;

	fx_setup(&f, 1);
	m = fx_join(&f, 0, GP_CAP_PROGRESS | GP_CAP_F16);
	per = gp_sched_minibatches(f.pool.sched);
	ASSERT(per <= 16);
	ASSERT_OK(gp_sched_assign(f.pool.sched, 99, 0, per, ids, &got));
	ASSERT_EQ(got, per);
	for (size_t i = 0; i < got; i++)
		ASSERT_OK(gp_sched_complete(f.pool.sched, 99, ids[i], NULL));
	ASSERT_EQ(gp_sched_epoch(f.pool.sched), 1);
	fill(&pr, &f.pool, m, false, 1000, &s);
	ASSERT_NEAR(s.progress, 0.5, 1e-6);
	ASSERT_OK(gp_sched_reopen(f.pool.sched, ids[3]));
	fill(&pr, &f.pool, m, false, 1000, &s);
	ASSERT_NEAR(s.progress, (double)(per - 1) / (2.0 * per), 1e-6);
	fx_teardown(&f);
}

int main(void)
{
	test_round();
	test_job_name();
	test_stats();
	test_redo();
	test_credit_page();
	printf("progress: all tests passed\n");
	return 0;
}
