#!/usr/bin/env python3
"""The end of a job as the volunteer sees it (issue 16, item 2), with real
processes: `serve --job FILE` runs one job and exits once it is done; an
agent that runs as the service does (without --exit-when-done) stays.

- Once serve exited, the agent's `status` says "waiting: the job is done;
  waiting for the coordinator at ADDRESS to serve the next one (N attempts
  so far)": not "connecting ... failed", which reads like a fault; the
  count of attempts grows, the agent process is the same.
- The owner then serves the queue (`serve` without a job file, which
  stays up) with a second job added (`job add`): the same agent process picks
  it up by itself (updates of it in job 2 reach the ledger) and its status
  names job 2 after its file ("next").
"""
import json
import os
import re
import subprocess

import gppool
from gppool import check, log


def status(pool, agent):
    r = subprocess.run([pool.agent_bin, "status", "--json", "--state",
                        agent.state], capture_output=True, text=True,
                       timeout=30)
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {}


def test():
    with gppool.Pool("jobs-end", train={"epochs": 1}) as pool:
        pool.serve()
        agent, = pool.agents(1)
        argv = [pool.agent_bin, "run", "--state", agent.state, "--name",
                agent.name, "--device", "cpu", "--threads", "1",
                "--no-bench"]
        proc = gppool.Proc(argv, os.path.join(pool.dir, "agent.out"),
                           os.path.join(pool.dir, "agent.err"))
        pool.procs.append(proc)
        agent.proc = proc
        rc = pool.serve_proc.wait(240)
        check(rc == 0, "serve --job ended with %r" % rc)
        log("job 1 done; serve exited")
        # No serve runs now, by design: wait_for would take that for a
        # failure.
        pool.serve_proc = None

        st = pool.wait_for("the agent waiting for the next job", lambda: (
            lambda s: s if s.get("state") == "waiting" and
            "attempts so far" in s.get("reason", "") else None)(
                status(pool, agent)), 60, poll=0.3)
        reason = st["reason"]
        log("agent: %s: %s" % (st["state"], reason))
        check(reason.startswith("the job is done; waiting for the "
                                "coordinator at 127.0.0.1:%d to serve the "
                                "next one" % pool.port),
              "the reason reads like a fault: %r" % reason)
        check("failed" not in reason and "connect" not in reason,
              "the reason reads like a fault: %r" % reason)
        n0 = int(re.search(r"\((\d+) attempts so far\)", reason).group(1))
        st = pool.wait_for("more attempts", lambda: (
            lambda s: s if int((re.search(r"\((\d+) attempts so far\)",
                                          s.get("reason", "")) or
                                [0, 0])[1]) > n0 else None)(
                status(pool, agent)), 60, poll=0.5)
        check(st["pid"] == proc.pid and proc.running(),
              "the agent process changed: %r" % st)
        text = subprocess.run([pool.agent_bin, "status", "--state",
                               agent.state], capture_output=True, text=True,
                              timeout=30).stdout
        check(text.startswith("waiting: the job is done"), text)

        # The owner serves the queue (serve without a job file stays up)
        # with a next job: the agent picks it up.
        # Another file: the finished job's own is refused (job add and
        # serve say it is done).
        pool.job_path = os.path.join(pool.dir, "next.ini")
        # Long enough that the agent is still computing when polled: one
        # epoch took 1.7 s in CI, over before the first poll.
        pool.job["train"]["epochs"] = 20
        pool.write_job()
        pool.coord("job", "add", pool.job_path)
        serve = gppool.Proc([pool.coord_bin, "serve", "--state", pool.state,
                             "--listen",
                             "127.0.0.1:%d" % pool.port],
                            os.path.join(pool.dir, "serve-queue.out"),
                            os.path.join(pool.dir, "serve-queue.err"))
        pool.procs.append(serve)
        pool.serve_proc = serve
        pool.wait_for("updates of job 2", lambda: pool.query(
            "SELECT count(*) FROM updates WHERE job_id = 2 AND outcome ="
            " 'applied'")[0][0] > 0, 120, poll=0.5)
        st = pool.wait_for("the agent computing for job 2", lambda: (
            lambda s: s if (s.get("job") or {}).get("id") == 2 else None)(
                status(pool, agent)), 60, poll=0.3)
        # A job from the queue is named after its file, as one served
        # with --job is.
        check(st["job"]["name"] == "next" and
              st["reason"].startswith("computing for job next at "),
              "job 2's name: %r" % st)
        check(st["pid"] == proc.pid and proc.running(),
              "the agent was restarted: %r" % st)
        log("the same agent (pid %d) computes for job 2: %s" %
            (proc.pid, st["reason"]))


if __name__ == "__main__":
    gppool.main(test)
