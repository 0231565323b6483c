#!/usr/bin/env python3
"""Jobs that come and go (issue 16): a real coordinator serving a queue,
real agents staying with the pool between jobs.

- `job add` queues three jobs before serve runs (the second with another
  model); adding a queued job again is refused; `job cancel` takes the
  third off the queue; `job list --json` says so.
- `serve` without a job file takes the queue and stays up. Two agents run
  without --exit-when-done: they finish the first job, then the second
  (another model), without a restart (same PIDs; each applied updates in
  both jobs, as the ledger says).
- Between jobs the agents stay connected and `gradpool-agent status`
  says "idle: the pool has no job".
- A fourth job added while serve runs is cancelled while running: serve
  stops it, its members go back to idle, its last checkpoint stays and
  exports.
- `export --job 1` writes the first (finished) job's model, with the first
  model's shapes; `job list --json` matches the ledger (states, progress,
  accuracy).
- A member revoked while it waits between jobs is disconnected (and its
  agent stops).
- `serve --job FILE` with the finished first job's file refuses to start
  it again and records no new job.
"""
import json
import os
import re
import signal
import struct
import subprocess
import time

import gppool
from gppool import check, log


def write_job(pool, path, **over):
    job = {s: dict(v) for s, v in pool.job.items()}
    for section, keys in over.items():
        job.setdefault(section, {}).update(keys)
    with open(path, "w") as f:
        for section, keys in job.items():
            f.write("[%s]\n" % section)
            for k, v in keys.items():
                if v is not None:
                    f.write("%s = %s\n" % (k, v))
    return path


def jobs_json(pool):
    return {j["id"]: j for j in
            json.loads(pool.coord("job", "list", "--json").stdout)["jobs"]}


def job_state(pool, jid):
    rows = pool.query("SELECT state FROM jobs WHERE id = ?", (jid,))
    return rows[0][0] if rows else None


def agent_status(pool, agent):
    r = subprocess.run([pool.agent_bin, "status", "--state", agent.state],
                       capture_output=True, text=True, timeout=30)
    return r.stdout + r.stderr


def applied_by(pool, jid):
    return dict(pool.query(
        "SELECT a.name, count(*) FROM updates u JOIN agents a ON"
        " a.id = u.agent_id WHERE u.job_id = ? AND u.outcome = 'applied'"
        " AND u.rolled_back = 0 GROUP BY a.name", (jid,)))


def safetensors_shapes(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
    return sorted(tuple(v["shape"]) for k, v in head.items()
                  if k != "__metadata__")


def test():
    with gppool.Pool("jobs", train={"epochs": 1}) as pool:
        a_path = write_job(pool, os.path.join(pool.dir, "a.ini"))
        b_path = write_job(pool, os.path.join(pool.dir, "b.ini"),
                           model={"spec": "784-64-10"})
        c_path = write_job(pool, os.path.join(pool.dir, "c.ini"),
                           model={"spec": "784-32-10"})
        d_path = write_job(pool, os.path.join(pool.dir, "d.ini"),
                           model={"spec": "784-48-10"},
                           train={"epochs": 50})

        out = pool.coord("job", "list").stdout
        check("no jobs" in out, "job list on an empty ledger: %r" % out)
        for p in (a_path, b_path, c_path):
            out = pool.coord("job", "add", p).stdout
            check(re.search(r"^job \d+ queued: ", out, re.M),
                  "job add printed %r" % out)
        r = pool.coord("job", "add", a_path, expect_ok=False)
        check(r.returncode != 0 and "queued already" in r.stderr,
              "adding a queued job again: rc %d, %r" % (r.returncode,
                                                       r.stderr))
        pool.coord("job", "cancel", "3")
        jobs = jobs_json(pool)
        check([jobs[i]["state"] for i in (1, 2, 3)] ==
              ["queued", "queued", "cancelled"], "states: %r" % jobs)
        check(jobs[1]["file"] == os.path.realpath(a_path) and
              jobs[2]["model"] == "784-64-10", "rows: %r" % jobs)
        r = pool.coord("job", "cancel", "3", expect_ok=False)
        check(r.returncode != 0 and "already" in r.stderr,
              "cancelling twice: %r" % r.stderr)

        # The service: serve without a job file.
        proc = gppool.Proc([pool.coord_bin, "serve", "--state", pool.state],
                           os.path.join(pool.dir, "serve.out"),
                           os.path.join(pool.dir, "serve.err"))
        pool.procs.append(proc)
        pool.serve_proc = proc
        pool.wait_for("listening", lambda: re.search(
            r"^listening on [^\n]*:(\d+)$", proc.stdout(), re.M), 60)
        pool.port = int(re.search(r"^listening on [^\n]*:(\d+)$",
                                  proc.stdout(), re.M).group(1))
        agents = pool.agents(2)
        procs = []
        for a in agents:
            argv = [pool.agent_bin, "run", "--state", a.state, "--name",
                    a.name, "--device", "cpu", "--threads", "1",
                    "--no-bench"]
            p = gppool.Proc(argv, os.path.join(pool.dir, a.name + ".out"),
                            os.path.join(pool.dir, a.name + ".err"))
            pool.procs.append(p)
            a.proc = p
            procs.append(p)
        pids = [p.pid for p in procs]

        pool.wait_for("job 1 done", lambda: job_state(pool, 1) == "done", 240)
        pool.wait_for("job 2 done", lambda: job_state(pool, 2) == "done", 240)
        check(job_state(pool, 3) == "cancelled", "job 3 ran")
        check(all(p.running() for p in procs) and
              [p.pid for p in procs] == pids,
              "an agent exited or restarted:\n%s" %
              "\n".join(p.tails() for p in procs))
        for jid in (1, 2):
            by = applied_by(pool, jid)
            log("job %d applied by %r" % (jid, by))
            check(set(by) == {a.name for a in agents} and
                  all(v > 0 for v in by.values()),
                  "job %d: not every agent computed: %r" % (jid, by))
        models = dict(pool.query("SELECT id, model FROM jobs"))
        check(models[1] == "784-256-128-10" and models[2] == "784-64-10",
              "models: %r" % models)

        # Between jobs: connected, idle.
        for a in agents:
            pool.wait_for("%s idle" % a.name, lambda a=a: "idle: the pool "
                          "has no job" in agent_status(pool, a), 30)
        st = json.loads(pool.coord("status", "--json").stdout)
        log("status between jobs: %r" % {k: st.get(k) for k in
                                         ("job", "connected_agents")})

        # A long job, cancelled while it runs.
        out = pool.coord("job", "add", d_path).stdout
        did = int(re.search(r"^job (\d+) queued", out, re.M).group(1))
        pool.wait_for("job %d computing" % did, lambda: pool.query(
            "SELECT count(*) FROM updates WHERE job_id = ? AND outcome ="
            " 'applied'", (did,))[0][0] > 20, 120)
        out = pool.coord("job", "cancel", str(did)).stdout
        check("cancelled" in out, "cancel said %r" % out)
        pool.wait_for("agents idle after the cancel", lambda: all(
            "idle: the pool has no job" in agent_status(pool, a)
            for a in agents), 60)
        check(job_state(pool, did) == "cancelled",
              "job %d is %s" % (did, job_state(pool, did)))
        check(all(p.running() for p in procs) and
              [p.pid for p in procs] == pids, "an agent exited or restarted")
        d_out = os.path.join(pool.dir, "d.safetensors")
        pool.coord("export", "--job", str(did), "--format", "safetensors",
                   d_out)
        check(safetensors_shapes(d_out) == sorted([(48, 784), (48,), (10, 48),
                                                   (10,)]),
              "cancelled job's export: %r" % safetensors_shapes(d_out))

        # The finished first job exports, with the first model.
        a_out = os.path.join(pool.dir, "a.safetensors")
        pool.coord("export", "--job", "1", "--format", "safetensors", a_out)
        shapes = safetensors_shapes(a_out)
        check(shapes == sorted([(256, 784), (256,), (128, 256), (128,),
                                (10, 128), (10,)]),
              "job 1's export has shapes %r" % shapes)

        jobs = jobs_json(pool)
        for jid in (1, 2):
            acc = pool.query("SELECT test_accuracy FROM evals WHERE job_id"
                             " = ? ORDER BY epoch DESC LIMIT 1", (jid,))[0][0]
            j = jobs[jid]
            check(j["state"] == "done" and j["progress"] == 1.0 and
                  abs(j["test_accuracy"] - acc) < 1e-5 and j["exportable"],
                  "job list --json for job %d: %r (ledger accuracy %r)" %
                  (jid, j, acc))
        # One epoch of a two-agent pool: far from trained, but well
        # above chance (10 %) when the job really trained.
        check(jobs[1]["test_accuracy"] > 0.3,
              "job 1 reached %r" % jobs[1]["test_accuracy"])
        check(jobs[did]["state"] == "cancelled" and
              0 < jobs[did]["progress"] < 1, "job %d: %r" % (did, jobs[did]))

        # A member revoked while it waits between jobs is told so.
        pool.coord("agents", "revoke", str(agents[1].agent_id()))
        check(procs[1].wait(30) is not None,
              "a revoked idle agent is still running:\n%s" % procs[1].tails())
        check(procs[0].running(), "the other agent stopped")

        # The first job's file again, as a job of its own serve: refused.
        n_jobs = len(jobs)
        proc.signal(signal.SIGTERM)
        check(proc.wait(60) == 0, "serve did not stop cleanly:\n%s" %
              proc.tails())
        r = subprocess.run([pool.coord_bin, "serve", "--state", pool.state,
                            "--job", a_path, "--listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode != 0 and "already" in r.stderr and
              "job add" in r.stderr,
              "serve of a finished job: rc %d\n%s" % (r.returncode, r.stderr))
        check(len(jobs_json(pool)) == n_jobs, "serve recorded a new job")
        pool.end_agents(grace=0)


if __name__ == "__main__":
    gppool.main(test)
