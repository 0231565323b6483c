#!/usr/bin/env python3
"""A stopped agent does not stall the pool (issue 16, item 9), with real
processes: three agents at cpu_share 0.2 (each rests four times as long as
it computes), one of them stopped with SIGSTOP for 4 s inside a compute
step (its worker thread seen running: a task of the process other than
the loop thread in state R), then continued.

Before the fix the stopped seconds counted as computing, so after SIGCONT
the agent rested (1/0.2 - 1) x 4 s = 16 s, and under SSP the whole pool
waited for its clock: 15.9 s without an applied update (2 of 2 trials of
an independent check). Here, from SIGCONT on, the pool's longest time
without an applied update stays under GAP_BOUND_S, and the stopped agent
has updates applied again within the same bound.
"""
import os
import signal
import time

import gppool
from gppool import check, log

STOP_S = 4.0
GAP_BOUND_S = 4.0
SHARE = "0.2"


def now_ms():
    return int(time.time() * 1000)


def running_worker(pid):
    """True when a thread of pid other than its main (loop) thread is
    running: the compute thread inside a step (the libuv pool's threads
    and the loop wait asleep)."""
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return False
    for t in tasks:
        if int(t) == pid:
            continue
        try:
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] == "R":
            return True
    return False


def test():
    # Long steps (batch 1024) so that a step is long enough to stop inside;
    # a long heartbeat timeout so that the stopped agent stays a member.
    with gppool.Pool("share-stop", train={"epochs": 50, "batch_size": 1024,
                                           "staleness": 1},
                     pool={"heartbeat_interval": "1s",
                           "heartbeat_timeout": "15s"}) as pool:
        pool.serve()
        agents = pool.agents(3)
        for a in agents:
            a.run(extra=["--cpu-share", SHARE])
        victim = agents[0]
        pool.wait_for("every agent with updates applied", lambda: all(
            pool.query("SELECT count(*) FROM updates WHERE agent_id = ? AND"
                       " outcome = 'applied'", (a.agent_id(),))[0][0] >= 3
            for a in agents), 120, poll=0.5)

        pid = victim.proc.pid
        deadline = time.monotonic() + 30
        while not running_worker(pid):
            check(time.monotonic() < deadline,
                  "the victim's compute thread was never seen running")
            time.sleep(0.001)
        os.kill(pid, signal.SIGSTOP)
        stopped_at = now_ms()
        log("SIGSTOP agent %s (pid %d) inside a step" % (victim.name, pid))
        time.sleep(STOP_S)
        os.kill(pid, signal.SIGCONT)
        cont_at = now_ms()
        log("SIGCONT after %.1f s" % ((cont_at - stopped_at) / 1000))
        # Watch 20 s after it (the ledger buffers rows: read them after).
        time.sleep(20)
        end_at = now_ms()
        time.sleep(3)
        rows = pool.query("SELECT applied_at, agent_id FROM updates WHERE"
                          " outcome = 'applied' AND applied_at >= ? AND"
                          " applied_at <= ? ORDER BY applied_at",
                          (cont_at, end_at))
        check(rows, "no update applied in the 20 s after SIGCONT")
        times = [cont_at] + [r[0] for r in rows] + [end_at]
        gap = max(b - a for a, b in zip(times, times[1:])) / 1000
        vid = victim.agent_id()
        mine = [r[0] for r in rows if r[1] == vid]
        first = (mine[0] - cont_at) / 1000 if mine else None
        log("after SIGCONT: %d updates applied in 20 s, the longest gap "
            "%.2f s; the stopped agent's first %s s after it" %
            (len(rows), gap, first))
        check(gap < GAP_BOUND_S, "the pool went %.1f s without an applied "
              "update after SIGCONT (bound %.1f s)" % (gap, GAP_BOUND_S))
        check(first is not None and first < GAP_BOUND_S,
              "the stopped agent's next applied update came %s s after "
              "SIGCONT (bound %.1f s)" % (first, GAP_BOUND_S))


if __name__ == "__main__":
    gppool.main(test)
