#!/usr/bin/env python3
"""An agent's start-up as the volunteer sees it (issue 16, item 5).

A member agent is started with its device benchmark (every device it
finds: the CPU path and PoCL's OpenCL device, with kernel compilation),
and `gradpool-agent status` is asked every 0.1 s from the moment the
process starts:

- the first answer comes within START_BOUND_S of the start, and it is
  "starting" (benchmarking devices), not "stopped: no agent answers";
- once an agent answered, no later answer is "stopped" (the socket goes
  from the start-up thread to the loop without a gap a client sees);
- it connects; then it is stopped and started again (a member's restart):
  neither its log nor any status answer says "not a member of any pool".
"""
import json
import os
import subprocess
import time

import gppool
from gppool import check, log

START_BOUND_S = 1.0


def status(agent):
    r = subprocess.run([agent.pool.agent_bin, "status", "--json", "--state",
                        agent.state], capture_output=True, text=True,
                       timeout=30)
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {"state": "?", "reason": r.stdout + r.stderr}


def start(pool, agent, tag):
    argv = [pool.agent_bin, "run", "--state", agent.state, "--name",
            agent.name, "--threads", "1", "--beacon-port", "0"]
    base = os.path.join(pool.dir, "agent-%s.%s" % (agent.name, tag))
    proc = gppool.Proc(argv, base + ".out", base + ".err")
    pool.procs.append(proc)
    agent.proc = proc
    return proc


def watch(pool, agent, tag):
    """Starts the agent and polls status until it is connected; returns
    the states seen in order, with the time of the first answer."""
    t0 = time.monotonic()
    proc = start(pool, agent, tag)
    seen, first = [], None
    deadline = t0 + 180
    while time.monotonic() < deadline:
        st = status(agent)
        now = time.monotonic() - t0
        if st["state"] != "stopped" and first is None:
            first = now
        if first is not None:
            seen.append((round(now, 2), st["state"], st["reason"]))
        if st["state"] == "connected":
            break
        check(proc.running(), "the agent exited: %s" % proc.tails())
        time.sleep(0.1)
    return proc, seen, first


def test():
    with gppool.Pool("startup", train={"epochs": 50}) as pool:
        pool.serve()
        agent, = pool.agents(1)
        proc, seen, first = watch(pool, agent, "1")
        log("first answer after %.2f s: %r" % (first, seen[:1]))
        log("states: %r" % sorted({s[1] for s in seen}))
        check(first is not None and first <= START_BOUND_S,
              "status answered only after %r s" % first)
        check(seen[0][1] == "starting" and "benchmarking" in seen[0][2],
              "first answer %r" % (seen[0],))
        check(not any(s[1] == "stopped" for s in seen),
              "stopped after the agent answered: %r" % seen)
        check(seen[-1][1] == "connected", "never connected: %r" % seen[-5:])

        proc.end()
        proc, seen, first = watch(pool, agent, "2")
        check(first is not None and first <= START_BOUND_S,
              "after a restart, status answered only after %r s" % first)
        bad = [s for s in seen if "not a member" in s[2]]
        check(not bad, "a member's restart said %r" % bad)
        check(seen[-1][1] == "connected", "never connected: %r" % seen[-5:])
        proc.end()
        err = proc.stderr()
        check("not a member" not in err,
              "a member's restart logged:\n%s" % err[-1500:])
        log("restart: %r" % [s[1:] for s in seen[:3]])


if __name__ == "__main__":
    gppool.main(test)
