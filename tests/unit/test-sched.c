/* Unit tests for coordinator/sched: shuffled minibatches, pull-based
 * assignment, exactly-once completion with discard reasons, give-back on
 * disconnect and timeout, the two-epoch window, job done, checkpoints. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "scheduler.h"
#include "test.h"

static struct gp_sched *make(uint32_t n_samples, uint32_t batch,
			     uint32_t epochs)
{
	struct gp_sched_config cfg = {
		.n_samples = n_samples, .batch_size = batch, .epochs = epochs,
		.seed = 42,
	};
	struct gp_sched *s = NULL;

	ASSERT_OK(gp_sched_create(&cfg, &s));
	return s;
}

static void test_config(void)
{
	struct gp_sched_config cfg = { .n_samples = 10, .batch_size = 0,
				       .epochs = 1 };
	struct gp_sched *s = (struct gp_sched *)&cfg;

	ASSERT_EQ(gp_sched_create(&cfg, &s), -EINVAL);
	cfg.batch_size = 3;
	cfg.epochs = 0;
	ASSERT_EQ(gp_sched_create(&cfg, &s), -EINVAL);
	cfg.epochs = 1;
	cfg.n_samples = 0;
	ASSERT_EQ(gp_sched_create(&cfg, &s), -EINVAL);
	ASSERT(s == (struct gp_sched *)&cfg);
	gp_sched_destroy(NULL);
}

static void test_samples(void)
{
	struct gp_sched *s = make(10, 3, 2), *t = make(10, 3, 2);
	uint32_t idx[3], seen[10] = {0}, order0[10], order1[10];
	uint64_t ids[8];
	size_t n, got;
	int same = 1;

	ASSERT_EQ(gp_sched_minibatches(s), 4);
	ASSERT_EQ(gp_sched_minibatch_samples(s, 3), 1);
	ASSERT_EQ(gp_sched_minibatch_samples(s, 2), 3);
	ASSERT_EQ(gp_sched_minibatch_samples(s, 8), 0); /* epoch 2 of 2 */
	{
		uint64_t id = 0;

		ASSERT_OK(gp_sched_id(s, 1, 3, &id));
		ASSERT_UINT_EQ(id, 7);
		ASSERT_EQ(gp_sched_id(s, 2, 0, &id), -EINVAL);
		ASSERT_EQ(gp_sched_id(s, 0, 4, &id), -EINVAL);
		ASSERT_UINT_EQ(id, 7);
	}
	for (uint64_t id = 0; id < 4; id++) {
		ASSERT_OK(gp_sched_samples(s, id, idx, 3, &n));
		for (size_t i = 0; i < n; i++) {
			seen[idx[i]]++;
			order0[id * 3 + i] = idx[i];
		}
	}
	for (int i = 0; i < 10; i++)
		ASSERT_EQ(seen[i], 1); /* a permutation */
	ASSERT_EQ(gp_sched_samples(s, 0, idx, 2, &n), -ENOBUFS);
	ASSERT_EQ(gp_sched_samples(s, 4, idx, 3, &n), -ENOENT); /* not open */
	/* Same seed, same order (restart safety). */
	ASSERT_OK(gp_sched_samples(t, 1, idx, 3, &n));
	ASSERT_MEM_EQ(idx, order0 + 3, 3 * sizeof(uint32_t));
	/* Epoch 1 opens once epoch 0 is handed out; its order differs. */
	ASSERT_OK(gp_sched_assign(s, 1, 0, 8, ids, &got));
	ASSERT_EQ(got, 8);
	for (uint64_t id = 4; id < 8; id++) {
		ASSERT_OK(gp_sched_samples(s, id, idx, 3, &n));
		for (size_t i = 0; i < n; i++)
			order1[(id - 4) * 3 + i] = idx[i];
	}
	for (int i = 0; i < 10; i++)
		same &= order0[i] == order1[i];
	ASSERT(!same);
	gp_sched_destroy(s);
	gp_sched_destroy(t);
}

static void test_exactly_once(void)
{
	struct gp_sched *s = make(8, 2, 2); /* N = 4 */
	struct gp_sched_counters c;
	struct gp_sched_completion done;
	uint64_t ids[8];
	size_t got;

	ASSERT_EQ(gp_sched_queued(s), 4);
	ASSERT_OK(gp_sched_assign(s, 7, 100, 2, ids, &got));
	ASSERT_EQ(got, 2);
	ASSERT_UINT_EQ(ids[0], 0);
	ASSERT_UINT_EQ(ids[1], 1);
	ASSERT_EQ(gp_sched_outstanding(s, 7), 2);
	ASSERT_EQ(gp_sched_outstanding(s, 8), 0);

	ASSERT_EQ(gp_sched_check(s, 8, 0), GP_REASON_NOT_ASSIGNED);
	ASSERT_EQ(gp_sched_complete(s, 8, 0, NULL), GP_REASON_NOT_ASSIGNED);
	ASSERT_EQ(gp_sched_complete(s, 7, 3, NULL), GP_REASON_NOT_ASSIGNED);
	ASSERT_OK(gp_sched_check(s, 7, 0));
	ASSERT_OK(gp_sched_complete(s, 7, 0, &done));
	ASSERT_EQ(done.epoch, 0);
	ASSERT_EQ(done.index, 0);
	ASSERT_EQ(done.samples, 2);
	ASSERT_EQ(done.epochs_completed, 0);
	ASSERT_EQ(gp_sched_complete(s, 7, 0, NULL), GP_REASON_DUPLICATE);
	ASSERT_EQ(gp_sched_complete(s, 7, 99, NULL),
		  GP_REASON_UNKNOWN_MINIBATCH);
	ASSERT_EQ(gp_sched_complete(s, 7, 5, NULL),
		  GP_REASON_UNKNOWN_MINIBATCH); /* epoch 1 not open yet */

	/* Agent 7 disconnects: minibatch 1 goes back and out again first. */
	ASSERT_EQ(gp_sched_release_agent(s, 7), 1);
	ASSERT_EQ(gp_sched_outstanding(s, 7), 0);
	ASSERT_OK(gp_sched_assign(s, 8, 200, 1, ids, &got));
	ASSERT_UINT_EQ(ids[0], 1);
	ASSERT_EQ(gp_sched_complete(s, 7, 1, NULL), GP_REASON_LATE);
	ASSERT_OK(gp_sched_complete(s, 8, 1, NULL));
	ASSERT_EQ(gp_sched_complete(s, 7, 1, NULL), GP_REASON_DUPLICATE);

	/* Timeout: only the old assignment expires. */
	ASSERT_OK(gp_sched_assign(s, 8, 300, 1, ids, &got));
	ASSERT_UINT_EQ(ids[0], 2);
	ASSERT_OK(gp_sched_assign(s, 9, 900, 1, ids, &got));
	ASSERT_UINT_EQ(ids[0], 3);
	ASSERT_EQ(gp_sched_expire(s, 1000, 500), 1);
	ASSERT_EQ(gp_sched_outstanding(s, 9), 1);
	ASSERT_EQ(gp_sched_complete(s, 8, 2, NULL), GP_REASON_LATE);

	/* Epoch 0 is handed out except the expired 2, which goes first; then
	 * epoch 1 opens while 3 is still running. */
	ASSERT_OK(gp_sched_assign(s, 8, 1000, 3, ids, &got));
	ASSERT_EQ(got, 3);
	ASSERT_UINT_EQ(ids[0], 2);
	ASSERT_UINT_EQ(ids[1], 4);
	ASSERT_UINT_EQ(ids[2], 5);
	ASSERT_OK(gp_sched_release(s, 8, 5)); /* e.g. its gradient was NaN */
	ASSERT_EQ(gp_sched_release(s, 8, 5), GP_REASON_LATE);
	ASSERT_OK(gp_sched_complete(s, 8, 2, &done));
	ASSERT_EQ(done.epochs_completed, 0);
	ASSERT_EQ(gp_sched_epoch(s), 0);
	ASSERT_EQ(gp_sched_applied_in_epoch(s), 3);
	ASSERT_OK(gp_sched_complete(s, 9, 3, &done));
	ASSERT_EQ(done.epochs_completed, 1);
	ASSERT(!done.job_done);
	ASSERT_EQ(gp_sched_epoch(s), 1);
	ASSERT_EQ(gp_sched_complete(s, 9, 3, NULL), GP_REASON_DUPLICATE);

	/* Finish epoch 1 (the last). */
	ASSERT_OK(gp_sched_complete(s, 8, 4, NULL));
	ASSERT_OK(gp_sched_assign(s, 8, 1100, 8, ids, &got));
	ASSERT_EQ(got, 3); /* 5 (given back), 6, 7 */
	ASSERT_UINT_EQ(ids[0], 5);
	for (size_t i = 0; i < got; i++)
		ASSERT_OK(gp_sched_complete(s, 8, ids[i], &done));
	ASSERT_EQ(done.epochs_completed, 1);
	ASSERT(done.job_done);
	ASSERT(gp_sched_done(s));
	ASSERT_EQ(gp_sched_queued(s), 0);
	ASSERT_EQ(gp_sched_assign(s, 8, 1200, 1, ids, &got), GP_REASON_JOB_DONE);

	gp_sched_counters(s, &c);
	ASSERT_UINT_EQ(c.applied, 8);
	ASSERT_UINT_EQ(c.duplicate, 3);
	ASSERT_UINT_EQ(c.late, 2);
	ASSERT_UINT_EQ(c.not_assigned, 2);
	ASSERT_UINT_EQ(c.unknown, 2);
	ASSERT_UINT_EQ(c.returned, 3);
	ASSERT_UINT_EQ(c.expired, 1);
	ASSERT_UINT_EQ(c.assigned, 11);
	gp_sched_destroy(s);
}

/* Epoch e+1 can finish before e's last straggler; the straggler's completion
 * then closes both. At most two epochs are open. */
static void test_window(void)
{
	struct gp_sched *s = make(4, 2, 3); /* N = 2 */
	struct gp_sched_completion done;
	uint64_t ids[8];
	size_t got;

	ASSERT_OK(gp_sched_assign(s, 1, 0, 1, ids, &got)); /* slow: 0 */
	ASSERT_OK(gp_sched_assign(s, 2, 0, 8, ids, &got));
	ASSERT_EQ(got, 3); /* 1, 2, 3: epoch 2 may not open yet */
	ASSERT_EQ(gp_sched_queued(s), 0);
	for (size_t i = 0; i < got; i++)
		ASSERT_OK(gp_sched_complete(s, 2, ids[i], NULL));
	ASSERT_OK(gp_sched_assign(s, 2, 0, 8, ids, &got));
	ASSERT_EQ(got, 0); /* a normal empty answer */
	ASSERT_EQ(gp_sched_epoch(s), 0);
	ASSERT_OK(gp_sched_complete(s, 1, 0, &done));
	ASSERT_EQ(done.epochs_completed, 2);
	ASSERT_EQ(gp_sched_epoch(s), 2);
	ASSERT_EQ(gp_sched_queued(s), 2);
	ASSERT_OK(gp_sched_assign(s, 2, 0, 8, ids, &got));
	ASSERT_EQ(got, 2);
	ASSERT_UINT_EQ(ids[0], 4);
	gp_sched_destroy(s);
}

static void test_checkpoint(void)
{
	struct gp_sched *s = make(20, 2, 3), *t = NULL; /* N = 10 */
	struct gp_sched_counters c;
	uint8_t *blob = NULL, *blob2 = NULL;
	size_t len, len2, got, total = 0;
	uint64_t ids[16];
	int applied[30] = {0};

	/* Epoch 0: all handed out, 0..7 applied; 8, 9 in flight; epoch 1:
	 * 10, 11 in flight. */
	ASSERT_OK(gp_sched_assign(s, 1, 0, 12, ids, &got));
	ASSERT_EQ(got, 12);
	for (uint64_t id = 0; id < 8; id++) {
		ASSERT_OK(gp_sched_complete(s, 1, id, NULL));
		applied[id]++;
	}
	ASSERT_OK(gp_sched_save(s, &blob, &len));
	/* Work after the checkpoint is lost in the crash. */
	ASSERT_OK(gp_sched_complete(s, 1, 8, NULL));
	gp_sched_destroy(s);

	ASSERT_EQ(gp_sched_load(blob, len - 1, &t), -EBADMSG);
	blob[20] ^= 0x10;
	ASSERT_EQ(gp_sched_load(blob, len, &t), -EBADMSG);
	blob[20] ^= 0x10;
	ASSERT_OK(gp_sched_load(blob, len, &t));
	ASSERT_OK(gp_sched_save(t, &blob2, &len2));
	ASSERT_EQ(len2, len);
	ASSERT_MEM_EQ(blob2, blob, len);
	gp_sched_counters(t, &c);
	ASSERT_UINT_EQ(c.applied, 8);
	ASSERT_EQ(gp_sched_outstanding(t, 1), 0);
	ASSERT_EQ(gp_sched_complete(t, 1, 3, NULL), GP_REASON_DUPLICATE);
	ASSERT_EQ(gp_sched_complete(t, 1, 8, NULL), GP_REASON_NOT_ASSIGNED);
	/* The in-flight ones come back first, in order, then fresh work. */
	ASSERT_OK(gp_sched_assign(t, 2, 0, 4, ids, &got));
	ASSERT_EQ(got, 4);
	ASSERT_UINT_EQ(ids[0], 8);
	ASSERT_UINT_EQ(ids[1], 9);
	ASSERT_UINT_EQ(ids[2], 10);
	ASSERT_UINT_EQ(ids[3], 11);
	for (size_t i = 0; i < got; i++) {
		ASSERT_OK(gp_sched_complete(t, 2, ids[i], NULL));
		applied[ids[i]]++;
	}
	while (gp_sched_assign(t, 3, 0, 5, ids, &got) == 0 && got > 0)
		for (size_t i = 0; i < got; i++) {
			ASSERT_OK(gp_sched_complete(t, 3, ids[i], NULL));
			applied[ids[i]]++;
		}
	ASSERT(gp_sched_done(t));
	for (int i = 0; i < 30; i++) {
		ASSERT_EQ(applied[i], 1);
		total++;
	}
	ASSERT_EQ(total, 30);
	free(blob);
	free(blob2);
	gp_sched_destroy(t);
}

/* A minibatch taken back after its epoch completed goes on the redo list:
 * handed out before anything else, at the learning rate of where the
 * schedule stood when it was taken back, applied exactly once more, kept
 * in a checkpoint, and the last epoch (so the job) waits for it. */
static void test_redo(void)
{
	struct gp_sched *s = make(8, 2, 3), *t = NULL; /* N = 4 */
	struct gp_sched_completion done;
	struct gp_sched_counters c;
	uint32_t before[2], after[2];
	uint8_t *blob = NULL;
	uint64_t ids[16];
	size_t got, len, n;
	int applied[12] = {0};

	ASSERT_OK(gp_sched_samples(s, 1, before, 2, &n));
	ASSERT_OK(gp_sched_assign(s, 7, 0, 4, ids, &got));
	for (size_t i = 0; i < got; i++)
		ASSERT_OK(gp_sched_complete(s, 7, ids[i], NULL));
	ASSERT_EQ(gp_sched_epoch(s), 1);

	/* Epoch 0 is complete: 1 goes on the redo list, once. */
	ASSERT_OK(gp_sched_reopen(s, 1));
	ASSERT_EQ(gp_sched_reopen(s, 1), -EINVAL);
	ASSERT_EQ(gp_sched_reopen(s, 9), -EINVAL); /* epoch 2: not yet */
	ASSERT_EQ(gp_sched_redo_count(s), 1);
	ASSERT_EQ(gp_sched_queued(s), 5);
	/* Epoch 1, nothing of it applied: position 4. */
	ASSERT_UINT_EQ(gp_sched_lr_index(s, 1), 4);
	ASSERT_UINT_EQ(gp_sched_lr_index(s, 0), 0);
	ASSERT_UINT_EQ(gp_sched_lr_index(s, 6), 6);
	gp_sched_counters(s, &c);
	ASSERT_UINT_EQ(c.applied, 3);
	/* Its samples are its epoch's, as when the epoch was open. */
	ASSERT_OK(gp_sched_samples(s, 1, after, 2, &n));
	ASSERT_EQ(n, 2);
	ASSERT_MEM_EQ(after, before, sizeof(before));

	/* Out first, before epoch 1's fresh work. */
	ASSERT_OK(gp_sched_assign(s, 8, 10, 2, ids, &got));
	ASSERT_EQ(got, 2);
	ASSERT_UINT_EQ(ids[0], 1);
	ASSERT_UINT_EQ(ids[1], 4);
	ASSERT_EQ(gp_sched_outstanding(s, 8), 2);
	ASSERT_EQ(gp_sched_check(s, 7, 1), GP_REASON_NOT_ASSIGNED);
	/* Given back by a disconnect, then late for its first agent. */
	ASSERT_EQ(gp_sched_release_agent(s, 8), 2);
	ASSERT_OK(gp_sched_assign(s, 9, 20, 1, ids, &got));
	ASSERT_UINT_EQ(ids[0], 1);
	ASSERT_EQ(gp_sched_complete(s, 8, 1, NULL), GP_REASON_LATE);
	/* And by a timeout. */
	ASSERT_EQ(gp_sched_expire(s, 1000, 500), 1);
	ASSERT_EQ(gp_sched_complete(s, 9, 1, NULL), GP_REASON_LATE);
	ASSERT_OK(gp_sched_assign(s, 9, 1000, 1, ids, &got));
	ASSERT_UINT_EQ(ids[0], 1);
	ASSERT_OK(gp_sched_complete(s, 9, 1, &done));
	ASSERT_EQ(done.epoch, 0);
	ASSERT_EQ(done.index, 1);
	ASSERT_EQ(done.samples, 2);
	ASSERT_EQ(done.epochs_completed, 0);
	ASSERT_EQ(gp_sched_redo_count(s), 0);
	ASSERT_UINT_EQ(gp_sched_lr_index(s, 1), 1);
	ASSERT_EQ(gp_sched_complete(s, 9, 1, NULL), GP_REASON_DUPLICATE);
	applied[1]++;

	/* Epoch 1 complete, then 5 of it taken back: the last epoch runs
	 * out, but the job is not done until 5 is applied again. */
	while (gp_sched_epoch(s) < 2) {
		ASSERT_OK(gp_sched_assign(s, 3, 2000, 1, ids, &got));
		ASSERT_EQ(got, 1);
		ASSERT_OK(gp_sched_complete(s, 3, ids[0], NULL));
	}
	ASSERT_OK(gp_sched_reopen(s, 5));
	ASSERT_EQ(gp_sched_redo_count(s), 1);
	ASSERT_UINT_EQ(gp_sched_lr_index(s, 5), 8);
	ASSERT_OK(gp_sched_save(s, &blob, &len));
	ASSERT_OK(gp_sched_assign(s, 4, 3000, 1, ids, &got));
	ASSERT_UINT_EQ(ids[0], 5); /* held by agent 4 meanwhile */
	while (gp_sched_assign(s, 3, 3000, 1, ids, &got) == 0 && got) {
		ASSERT(ids[0] >= 8);
		ASSERT_OK(gp_sched_complete(s, 3, ids[0], &done));
		ASSERT_EQ(done.epochs_completed, 0);
		ASSERT(!done.job_done);
	}
	ASSERT_EQ(gp_sched_epoch(s), 2);
	ASSERT_EQ(gp_sched_applied_in_epoch(s), 4);
	ASSERT(!gp_sched_done(s));
	ASSERT_OK(gp_sched_complete(s, 4, 5, &done));
	ASSERT_EQ(done.epoch, 1);
	ASSERT_EQ(done.epochs_completed, 1);
	ASSERT(done.job_done);
	ASSERT(gp_sched_done(s));
	ASSERT_EQ(gp_sched_reopen(s, 5), -ESTALE);
	gp_sched_counters(s, &c);
	ASSERT_UINT_EQ(c.applied, 12);
	gp_sched_destroy(s);

	/* The checkpoint taken with 5 on the list: it comes back queued,
	 * first out, and the job ends with every minibatch applied once. */
	ASSERT_OK(gp_sched_load(blob, len, &t));
	ASSERT_EQ(gp_sched_redo_count(t), 1);
	ASSERT_UINT_EQ(gp_sched_lr_index(t, 5), 8);
	ASSERT_OK(gp_sched_assign(t, 4, 0, 1, ids, &got));
	ASSERT_UINT_EQ(ids[0], 5);
	ASSERT_OK(gp_sched_release(t, 4, 5));
	memset(applied, 0, sizeof(applied));
	while (gp_sched_assign(t, 4, 0, 2, ids, &got) == 0 && got)
		for (size_t i = 0; i < got; i++) {
			ASSERT_OK(gp_sched_complete(t, 4, ids[i], NULL));
			applied[ids[i]]++;
		}
	ASSERT(gp_sched_done(t));
	ASSERT_EQ(applied[5], 1);
	for (int i = 8; i < 12; i++)
		ASSERT_EQ(applied[i], 1);
	for (int i = 0; i < 5; i++)
		ASSERT_EQ(applied[i], 0);
	gp_sched_destroy(t);
	free(blob);
}

/* Taken back while the last epoch, all of it applied, waits for an
 * earlier redo: the rate is the last minibatch's (a cosine schedule's 0
 * lies one past it), and the checkpoint of that state loads. */
static void test_redo_at_end(void)
{
	struct gp_sched *s = make(8, 2, 2), *t = NULL; /* N = 4 */
	uint8_t *blob = NULL;
	uint64_t ids[4];
	size_t got, len;

	while (gp_sched_epoch(s) < 1) {
		ASSERT_OK(gp_sched_assign(s, 1, 0, 1, ids, &got));
		ASSERT_OK(gp_sched_complete(s, 1, ids[0], NULL));
	}
	ASSERT_OK(gp_sched_reopen(s, 0));
	ASSERT_UINT_EQ(gp_sched_lr_index(s, 0), 4);
	ASSERT_OK(gp_sched_assign(s, 2, 0, 1, ids, &got));
	ASSERT_UINT_EQ(ids[0], 0); /* held meanwhile */
	while (gp_sched_assign(s, 1, 0, 1, ids, &got) == 0 && got)
		ASSERT_OK(gp_sched_complete(s, 1, ids[0], NULL));
	ASSERT_EQ(gp_sched_applied_in_epoch(s), 4);
	ASSERT(!gp_sched_done(s));
	ASSERT_OK(gp_sched_reopen(s, 1));
	ASSERT_UINT_EQ(gp_sched_lr_index(s, 1), 7);
	ASSERT_OK(gp_sched_save(s, &blob, &len));
	ASSERT_OK(gp_sched_load(blob, len, &t));
	ASSERT_UINT_EQ(gp_sched_lr_index(t, 1), 7);
	ASSERT_UINT_EQ(gp_sched_lr_index(t, 0), 4);
	gp_sched_destroy(t);
	gp_sched_destroy(s);
	free(blob);
}

/* A schedule of N = 4, 2 epochs, at `epoch` with minibatch 0 of it
 * applied and 1 handed out. */
static void put_fresh_at(struct gp_wbuf *w, uint16_t version, uint32_t epoch)
{
	gp_wbuf_begin_blob(w, "GPSC", version);
	gp_wbuf_put_u32(w, 8);   /* n_samples */
	gp_wbuf_put_u32(w, 2);   /* batch_size: N = 4 */
	gp_wbuf_put_u32(w, 2);   /* epochs */
	gp_wbuf_put_u64(w, 42);  /* seed */
	gp_wbuf_put_u32(w, epoch);
	gp_wbuf_put_u8(w, 1);    /* open */
	for (int i = 0; i < 8; i++)
		gp_wbuf_put_u64(w, i == 1 ? 1 : 0); /* counters: 1 applied */
	gp_wbuf_put_u32(w, 2);   /* next_fresh */
	gp_wbuf_put_u32(w, 1);   /* applied */
	gp_wbuf_put_u8(w, 0x01); /* minibatch 0 */
}

static void put_fresh(struct gp_wbuf *w, uint16_t version)
{
	put_fresh_at(w, version, 0);
}

/* Version 1 checkpoints (no redo list) still load; a redo entry must be
 * of a complete epoch; version 2's entries (ids alone) take the rate of
 * where the loaded schedule stands, version 3's carry theirs, within the
 * job. */
static void test_checkpoint_versions(void)
{
	struct gp_wbuf w = {0};
	struct gp_sched *t = NULL;
	uint8_t *blob = NULL;
	size_t len;
	uint64_t ids[4];
	size_t got;

	put_fresh(&w, 1);
	ASSERT_OK(gp_wbuf_finish_blob(&w, &blob, &len));
	ASSERT_OK(gp_sched_load(blob, len, &t));
	ASSERT_EQ(gp_sched_redo_count(t), 0);
	ASSERT_EQ(gp_sched_applied_in_epoch(t), 1);
	ASSERT_OK(gp_sched_assign(t, 1, 0, 3, ids, &got));
	ASSERT_EQ(got, 3); /* 1 queued again, then fresh 2, 3 */
	ASSERT_UINT_EQ(ids[0], 1);
	ASSERT_UINT_EQ(ids[2], 3);
	gp_sched_destroy(t);
	free(blob);

	put_fresh(&w, 2);
	gp_wbuf_put_u32(&w, 1);   /* n_redo */
	gp_wbuf_put_u64(&w, 0);   /* epoch 0 is not complete */
	ASSERT_OK(gp_wbuf_finish_blob(&w, &blob, &len));
	ASSERT_EQ(gp_sched_load(blob, len, &t), -EBADMSG);
	free(blob);
	put_fresh(&w, 2);
	gp_wbuf_put_u32(&w, 0);
	ASSERT_OK(gp_wbuf_finish_blob(&w, &blob, &len));
	ASSERT_OK(gp_sched_load(blob, len, &t));
	gp_sched_destroy(t);
	free(blob);
	/* At epoch 1: epoch 0's minibatches may wait for a redo, once each. */
	put_fresh_at(&w, 2, 1);
	gp_wbuf_put_u32(&w, 2);
	gp_wbuf_put_u64(&w, 3);
	gp_wbuf_put_u64(&w, 3);
	ASSERT_OK(gp_wbuf_finish_blob(&w, &blob, &len));
	ASSERT_EQ(gp_sched_load(blob, len, &t), -EBADMSG);
	free(blob);
	put_fresh_at(&w, 2, 1);
	gp_wbuf_put_u32(&w, 2);
	gp_wbuf_put_u64(&w, 3);
	gp_wbuf_put_u64(&w, 0);
	ASSERT_OK(gp_wbuf_finish_blob(&w, &blob, &len));
	ASSERT_OK(gp_sched_load(blob, len, &t));
	ASSERT_EQ(gp_sched_redo_count(t), 2);
	ASSERT_UINT_EQ(gp_sched_lr_index(t, 3), 5); /* epoch 1, 1 applied */
	ASSERT_UINT_EQ(gp_sched_lr_index(t, 0), 5);
	gp_sched_destroy(t);
	free(blob);
	put_fresh_at(&w, 3, 1);
	gp_wbuf_put_u32(&w, 1);
	gp_wbuf_put_u64(&w, 3);
	gp_wbuf_put_u64(&w, 4);  /* lr_at */
	ASSERT_OK(gp_wbuf_finish_blob(&w, &blob, &len));
	ASSERT_OK(gp_sched_load(blob, len, &t));
	ASSERT_UINT_EQ(gp_sched_lr_index(t, 3), 4);
	gp_sched_destroy(t);
	free(blob);
	put_fresh_at(&w, 3, 1);
	gp_wbuf_put_u32(&w, 1);
	gp_wbuf_put_u64(&w, 3);
	gp_wbuf_put_u64(&w, 8);  /* 2 epochs of 4: beyond the job */
	ASSERT_OK(gp_wbuf_finish_blob(&w, &blob, &len));
	ASSERT_EQ(gp_sched_load(blob, len, &t), -EBADMSG);
	free(blob);
	put_fresh_at(&w, 3, 1);  /* version 3 with version 2's entries */
	gp_wbuf_put_u32(&w, 1);
	gp_wbuf_put_u64(&w, 3);
	ASSERT_OK(gp_wbuf_finish_blob(&w, &blob, &len));
	ASSERT_EQ(gp_sched_load(blob, len, &t), -EBADMSG);
	free(blob);
}

int main(void)
{
	test_config();
	test_samples();
	test_exactly_once();
	test_window();
	test_checkpoint();
	test_redo();
	test_redo_at_end();
	test_checkpoint_versions();
	printf("sched: ok\n");
	return 0;
}
