#!/usr/bin/env python3
"""A paused agent does not hold the pool back (issue 6 policies + SSP).

Under BSP (s = 0) every agent waits for the slowest live one, so a paused
agent that still counted toward the bound would stop the pool for as long
as the laptop is on battery. Two agents train; one is paused through its
control socket once both have applied updates. The coordinator must take
it out of the bound once its handed-out work is resolved: the other agent
finishes the job alone, every minibatch exactly once, and the paused one
applies nothing while paused.
"""
import subprocess
import time

import gppool
from gppool import check, log


def test():
    with gppool.Pool("pause", train={"staleness": 0, "epochs": 2}) as pool:
        pool.serve()
        a, b = pool.agents(2)
        a.run()
        b.run()
        pool.wait_for("both agents applying",
                      lambda: len({r[1] for r in pool.applied()}) == 2, 120)
        r = subprocess.run([pool.agent_bin, "pause", "--state", b.state],
                           capture_output=True, text=True, timeout=30)
        check(r.returncode == 0, "pause failed: %s %s" % (r.stdout, r.stderr))
        b_id = b.agent_id()
        # The coordinator says when it took the agent out of the bound;
        # without that line the test goes on and fails on the stall below.
        deadline = time.monotonic() + 20
        while ("paused: out of the SSP bound" not in
               pool.serve_proc.stderr() and time.monotonic() < deadline):
            time.sleep(0.1)
        # The update log is written in batches: compare receive times, not
        # what the ledger held at this moment.
        parked_ms = int(time.time() * 1000)
        pool.wait_serve(timeout=120)
        rows = pool.applied()
        later_b = pool.query(
            "SELECT COUNT(*) FROM updates WHERE job_id = ? AND agent_id = ?"
            " AND received_at > ?", (pool.job_id(), b_id, parked_ms))[0][0]
        check(later_b == 0, "the paused agent sent %d updates after it was "
              "taken out of the bound" % later_b)
        keys = [(row[3], row[4]) for row in rows]
        check(len(keys) == len(set(keys)), "a minibatch was applied twice")
        check(len(keys) == pool.epochs * pool.minibatches_per_epoch,
              "applied %d of %d minibatches" %
              (len(keys), pool.epochs * pool.minibatches_per_epoch))
        after = pool.query(
            "SELECT COUNT(*) FROM updates WHERE job_id = ? AND agent_id != ?"
            " AND received_at > ?", (pool.job_id(), b_id, parked_ms))[0][0]
        check(after > 0, "nothing was applied after the pause")
        log("%d updates after the pause, all from agent a" % after)


if __name__ == "__main__":
    gppool.main(test)
