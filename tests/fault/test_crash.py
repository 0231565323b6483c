#!/usr/bin/env python3
"""Coordinator crash with real processes (issue 5, item 2).

serve is killed with SIGKILL mid-training, after a checkpoint and after
more updates were applied (and logged) past it; then started again on the
same state and job file. Asserted:

- the ledger passes PRAGMA integrity_check after the crash and at the end;
- the restarted serve resumes the same job from the newest checkpoint
  ("resumed job" line) and marks the updates logged after it rolled back
  (updates.rolled_back = the checkpoint's seq): as many as its log line
  says, and at least those the test saw logged past the checkpoint;
- every rolled-back (epoch, minibatch) is applied again later (redone);
- the agents were never restarted: the same processes reconnect on their
  own (backoff) and apply updates after the restart;
- no minibatch is lost: every minibatch of every epoch applied exactly once
  among the rows that count, and the accuracy target is reached.
"""
import re
import time

import gppool
from gppool import check, log

PAST_CHECKPOINT = 40


def counted(pool):
    return pool.query("SELECT count(*) FROM updates WHERE outcome = 'applied'"
                      " AND rolled_back = 0")[0][0]


def max_seq(pool):
    return pool.query("SELECT coalesce(max(seq), 0) FROM checkpoints")[0][0]


def test():
    with gppool.Pool("crash", train={"epochs": gppool.TRAIN_EPOCHS,
                                     "checkpoint_interval": "600 minibatches",
                                     "checkpoint_keep": 3},
                     pool={"heartbeat_interval": "500ms",
                           "heartbeat_timeout": "2s"}) as pool:
        pool.serve()
        agents = pool.agents(2)
        for a in agents:
            a.run()
        pids = [a.proc.pid for a in agents]
        # Wait for a checkpoint, then for PAST_CHECKPOINT more updates
        # logged with no newer checkpoint: those are the checkpoint's
        # rows' successors, lost with the crash.
        seq, base = 0, 0
        deadline = time.monotonic() + 300
        while True:
            s = max_seq(pool)
            n = counted(pool)
            if s != seq:
                seq, base = s, n
            elif seq and n >= base + PAST_CHECKPOINT:
                break
            check(time.monotonic() < deadline, "no checkpoint and %d "
                  "updates past it in time" % PAST_CHECKPOINT)
            check(pool.serve_proc.running(), "serve exited early")
            time.sleep(0.05)
        pool.serve_proc.kill9()
        seen_past = n - base
        check(max_seq(pool) == seq, "a checkpoint was written at the kill")
        total = pool.epochs * pool.minibatches_per_epoch
        log("kill -9 serve: checkpoint %d, %d updates logged past it, "
            "%d/%d applied" % (seq, seen_past, n, total))
        check(n < total, "the job was done before the crash")
        pool.integrity_check()
        time.sleep(1.0)
        restart_ms = int(time.time() * 1000)
        serve2 = pool.serve()
        err = lambda: serve2.stderr()
        m = pool.wait_for("the resume line", lambda: re.search(
            r"resumed job (\d+) from checkpoint (\d+)", err()), timeout=30)
        check(int(m.group(2)) == seq, "resumed from checkpoint %s, want %d"
              % (m.group(2), seq))
        rb = re.search(r"(\d+) update\(s\) applied after checkpoint (\d+) "
                       r"rolled back", err())
        check(rb, "serve does not say it rolled updates back:\n%s" %
              err()[-1500:])
        undone = int(rb.group(1))
        log("serve #2: resumed from checkpoint %d, %d updates rolled back"
            % (seq, undone))
        pool.wait_serve(timeout=500, agents_exit=True)
        marked = pool.query("SELECT count(*) FROM updates WHERE rolled_back"
                            " = ?", (seq,))[0][0]
        check(marked == undone, "%d rows marked rolled back, serve said %d"
              % (marked, undone))
        check(undone >= seen_past, "%d rolled back, but %d were logged past "
              "the checkpoint" % (undone, seen_past))
        check(pool.query("SELECT count(*) FROM updates WHERE rolled_back"
                         " != 0 AND rolled_back != ?", (seq,))[0][0] == 0,
              "rows rolled back to another checkpoint")
        # Redone: each rolled-back minibatch applied again, later.
        notredone = pool.query(
            "SELECT count(*) FROM updates r WHERE r.rolled_back != 0 AND NOT"
            " EXISTS (SELECT 1 FROM updates a WHERE a.job_id = r.job_id AND"
            " a.epoch = r.epoch AND a.minibatch = r.minibatch AND a.outcome ="
            " 'applied' AND a.rolled_back = 0 AND a.id > r.id)")[0][0]
        check(notredone == 0, "%d rolled-back minibatches not redone"
              % notredone)
        for a, pid in zip(agents, pids):
            check(a.proc.pid == pid and a.runs == 1, "agent %s was restarted"
                  % a.name)
            n_after = pool.query(
                "SELECT count(*) FROM updates WHERE agent_id = ? AND outcome"
                " = 'applied' AND applied_at > ?",
                (a.agent_id(), restart_ms))[0][0]
            check(n_after > 0, "agent %s applied nothing after the restart"
                  % a.name)
        rows = pool.check_exactly_once()
        pool.check_staleness(rows)
        pool.check_accuracy()
        pool.integrity_check()
        log("outcomes %r, rolled back %d" % (pool.outcomes(), undone))


if __name__ == "__main__":
    gppool.main(test)
