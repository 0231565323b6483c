#!/usr/bin/env python3
"""The volunteer's pause and finish with real processes (issue 16, item 7).

- `pause` outlives a restart: the agent started again stays paused (no
  update of it reaches the ledger) until `resume`;
- `pause` with no agent running is recorded, and the next start is paused;
- `pause --for 3s` says until when, and the agent computes again by itself
  after it;
- `finish`: the agent answers the work in hand, then exits 0 by itself;
  none of its minibatches is left to the coordinator's work timeout.
"""
import json
import subprocess
import time

import gppool
from gppool import check, log


def cli(agent, *args):
    r = subprocess.run([agent.pool.agent_bin] + list(args) +
                       ["--state", agent.state], capture_output=True,
                       text=True, timeout=30)
    return r


def status(agent):
    r = cli(agent, "status", "--json")
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {"state": "?", "reason": r.stdout + r.stderr}


def updates_of(pool, agent, since_ms):
    return pool.query("SELECT count(*) FROM updates WHERE agent_id = ? AND"
                      " received_at > ?", (agent.agent_id(), since_ms))[0][0]


def wait_state(pool, agent, state, timeout=60):
    return pool.wait_for("%s %s" % (agent.name, state),
                         lambda: status(agent)["state"] == state and
                         status(agent), timeout, poll=0.2)


def test():
    with gppool.Pool("pause-persist", train={"epochs": 50}) as pool:
        pool.serve()
        a, = pool.agents(1)
        a.run(delay_ms=10)
        wait_state(pool, a, "connected")
        pool.wait_for("work", lambda: status(a)["minibatches"] > 5, 60)

        # Paused, then restarted: still paused.
        r = cli(a, "pause")
        check(r.returncode == 0, "pause: %s %s" % (r.stdout, r.stderr))
        wait_state(pool, a, "paused")
        a.proc.end()
        a.run(delay_ms=10)
        st = wait_state(pool, a, "paused")
        check("by the user" in st["reason"], "reason %r" % st["reason"])
        t0 = int(time.time() * 1000) + 1000
        time.sleep(4)
        check(status(a)["state"] == "paused", "not paused: %r" % status(a))
        n = updates_of(pool, a, t0)
        check(n == 0, "%d updates from the agent started paused" % n)
        r = cli(a, "resume")
        check(r.returncode == 0, "resume: %s %s" % (r.stdout, r.stderr))
        wait_state(pool, a, "connected")
        pool.wait_for("updates after resume", lambda: updates_of(
            pool, a, t0) > 0, 60)
        log("a pause outlived a restart; resume computes again")

        # Recorded with no agent running.
        a.proc.end()
        r = cli(a, "pause")
        check(r.returncode == 0 and "will start paused" in r.stdout,
              "pause with no agent: %d %s %s" % (r.returncode, r.stdout,
                                                 r.stderr))
        a.run(delay_ms=10)
        wait_state(pool, a, "paused")
        cli(a, "resume")
        wait_state(pool, a, "connected")
        log("pause with no agent running: started paused")

        # A timed pause ends by itself.
        r = cli(a, "pause", "--for", "3s")
        check(r.returncode == 0 and "until" in r.stdout,
              "pause --for: %s %s" % (r.stdout, r.stderr))
        st = wait_state(pool, a, "paused", 10)
        check("until" in st["reason"], "reason %r" % st["reason"])
        t1 = time.monotonic()
        wait_state(pool, a, "connected", 30)
        took = time.monotonic() - t1
        check(took < 10, "the 3 s pause lasted %.1f s" % took)
        r = cli(a, "pause", "--for", "soon")
        check(r.returncode != 0 and "duration" in r.stderr, "bad --for")
        log("pause --for 3s: computing again %.1f s later" % took)

        # finish: the work in hand, then exit 0.
        pool.wait_for("work", lambda: status(a)["minibatches"] > 5, 60)
        r = cli(a, "finish")
        check(r.returncode == 0 and "finishing" in r.stdout,
              "finish: %s %s" % (r.stdout, r.stderr))
        rc = a.proc.wait(60)
        check(rc == 0, "finish: the agent exited %r" % rc)
        check("finished the work in hand" in a.proc.stderr(),
              "no finish in the log:\n%s" % a.proc.stderr()[-1000:])
        check(status(a)["state"] == "stopped", "status after finish")
        # Everything it was handed is answered: the coordinator put back
        # nothing of it (no "minibatch(es) back" beyond 0 at its close).
        time.sleep(1.5)
        err = pool.serve_proc.stderr()
        lines = [ln for ln in err.splitlines() if "agent %d " %
                 a.agent_id() in ln and "back in the queue" in ln]
        check(lines and " 0 minibatch(es) back" in lines[-1],
              "the finished agent left work behind: %r" % lines[-1:])
        log("finish: exit 0, %s" % lines[-1].split(": ", 1)[-1])


if __name__ == "__main__":
    gppool.main(test)
