#!/usr/bin/env python3
"""The pool owner's view with real processes (issue 16, item 3).

`test_owner.py live`: a pool of two slowed agents.
- Before any agent: `status` gives the job's size (epochs, minibatches per
  epoch), 0 agents connected, 0 samples/s, and warns that no agent is
  connected; a second `serve` on the same state is refused.
- While both compute: `status --json` counts 2 connected agents, a
  samples/s figure over the last minute, progress and an ETA; the text
  and JSON give the same epoch (counted from 1), and it is the ledger's
  highest applied epoch + 1; `agents` lists both as connected.
- One runs `gradpool-agent leave`: `agents` and `agents --json` show it as
  left (not member), and status counts one member.
- Both stop: 0 connected, 0 samples/s (not the job's lifetime average) and
  the warning again.
- Devices: an agent that lists an OpenCL device (PoCL's CPU device is of
  type cpu) shows it as opencl, with its type, not as cpu.

`test_owner.py crash`: serve is killed with SIGKILL past a checkpoint and
started again; status says serve is not running in between, and at the
end `status --json` and `agents --json` count exactly the ledger's applied
rows that count (not the rolled-back ones), which add up to the job.
"""
import json
import re
import subprocess
import sys
import time

import gppool
from gppool import check, log


def status(pool, *extra):
    return pool.coord("status", *extra).stdout


def status_json(pool):
    return json.loads(status(pool, "--json"))


def agents_json(pool):
    return {a["name"]: a for a in
            json.loads(pool.coord("agents", "--json").stdout)}


def ledger_counted(pool):
    return pool.query("SELECT count(*), coalesce(sum(samples), 0) FROM"
                      " updates WHERE job_id = ? AND outcome = 'applied'"
                      " AND rolled_back = 0", (pool.job_id(),))[0]


def test_live():
    with gppool.Pool("owner", train={"epochs": 3}) as pool:
        pool.serve()
        r = subprocess.run([pool.coord_bin, "serve", "--state", pool.state,
                            "--job", pool.job_path, "--listen",
                            "127.0.0.1:0"], capture_output=True, text=True,
                           timeout=60)
        check(r.returncode != 0 and "another serve runs" in r.stderr,
              "a second serve on the same state: %d %s" %
              (r.returncode, r.stderr[-400:]))
        st = status_json(pool)
        check(st["serve_running"] and st["serve_pid"] == pool.serve_proc.pid,
              "serve not seen running: %r" % st)
        check(st["epochs"] == 3 and
              st["minibatches_per_epoch"] == pool.minibatches_per_epoch and
              st["minibatches_total"] == 3 * pool.minibatches_per_epoch,
              "job size: %r" % st)
        check(st["agents_connected"] == 0 and st["samples_per_s"] == 0 and
              st["epoch"] == 1 and st["eta_s"] is None, "idle pool: %r" % st)
        text = status(pool)
        check("warning: no agent is connected" in text,
              "no warning with 0 agents:\n%s" % text)
        check(re.search(r"epoch 1 of 3\b", text), "text: %s" % text)

        a, b = pool.agents(2)
        a.run(delay_ms=10)
        b.run(delay_ms=10)
        st = pool.wait_for("2 agents connected and a rate", lambda: (
            lambda s: s if s["agents_connected"] == 2 and
            s["samples_per_s"] > 0 and s["eta_s"] is not None else None)(
                status_json(pool)), 120, poll=0.5)
        check(0 < st["progress"] < 1, "progress %r" % st["progress"])
        log("live: %.0f samples/s, progress %.3f, ETA %s s, epoch %d of %d"
            % (st["samples_per_s"], st["progress"], st["eta_s"], st["epoch"],
               st["epochs"]))
        # The same epoch in text and JSON, and the ledger's (0-based) + 1;
        # retried in case an epoch ends between the reads.
        for _ in range(5):
            st = status_json(pool)
            text = status(pool)
            top = pool.query("SELECT max(epoch) FROM updates WHERE outcome ="
                             " 'applied' AND rolled_back = 0")[0][0]
            again = status_json(pool)
            if st["epoch"] == again["epoch"]:
                break
        m = re.search(r"epoch (\d+) of 3", text)
        check(m and int(m.group(1)) == st["epoch"] == top + 1,
              "epoch: text %r, json %d, ledger %d" %
              (m and m.group(0), st["epoch"], top))
        check("warning" not in text, "a warning while computing:\n%s" % text)
        log("status:\n" + text)
        check(re.search(r"2 of 2 members connected, \d+ samples/s", text),
              "text: %s" % text)
        ag = agents_json(pool)
        check(ag[a.name]["state"] == "connected" and
              ag[b.name]["state"] == "connected", "agents: %r" % ag)

        # Devices: what the agent listed (the CPU path, and any OpenCL
        # device unmeasured) keeps its compute path.
        text = pool.coord("agents").stdout
        devs = ag[a.name]["devices"]
        check(devs and devs[0]["api"] == "cpu", "devices %r" % devs)
        for d in devs:
            if d["name"].startswith("opencl:"):
                check(d["api"] == "opencl", "OpenCL device %r" % d)
                check("opencl (%s)" % d["kind"] in text,
                      "agents shows no 'opencl (%s)':\n%s" % (d["kind"], text))
                log("OpenCL device %r listed as opencl (%s)" %
                    (d["name"], d["kind"]))

        r = subprocess.run([pool.agent_bin, "leave", "--state", b.state],
                           capture_output=True, text=True, timeout=30)
        check(r.returncode == 0, "leave: %s %s" % (r.stdout, r.stderr))
        pool.wait_for("b shown as left", lambda: agents_json(pool)[b.name]
                      ["state"] == "left", 30)
        text = pool.coord("agents").stdout
        line = [ln for ln in text.splitlines() if " %s " % b.name in ln]
        check(line and re.search(r"\bleft\b", line[0]) and
              "member" not in line[0], "agents after leave:\n%s" % text)
        check(agents_json(pool)[b.name]["left_at"] > 0, "no left_at")
        check(status_json(pool)["members"] == 1, "members after leave")
        log("left: %s" % line[0])

        a.proc.end()
        b.proc.end()
        st = pool.wait_for("0 agents connected", lambda: (
            lambda s: s if s["agents_connected"] == 0 else None)(
                status_json(pool)), 30)
        check(st["samples_per_s"] == 0 and st["eta_s"] is None,
              "rate after every agent left: %r" % st)
        check(st["samples_applied"] > 0, "nothing applied")
        text = status(pool)
        check("warning: no agent is connected" in text and
              re.search(r"0 of 1 members connected, 0 samples/s", text),
              "after every agent left:\n%s" % text)
        check(agents_json(pool)[a.name]["state"] == "member", "a not member")
        log("no agent: rate 0, warned")


def snapshot(pool):
    """The latest checkpoint's seq and the applied rows that count, read in
    one statement (one snapshot of the ledger)."""
    return pool.query(
        "SELECT (SELECT coalesce(max(seq), 0) FROM checkpoints WHERE"
        " job_id = ?1), (SELECT count(*) FROM updates WHERE job_id = ?1"
        " AND outcome = 'applied' AND rolled_back = 0)",
        (pool.job_id(),))[0]


def kill_past_checkpoint(pool, timeout=240):
    """Kills serve (SIGKILL) at a moment when the ledger holds applied
    updates that its latest checkpoint does not: a checkpoint commits the
    rows applied before it in its own transaction, so the count seen in
    the snapshot that first shows checkpoint s is at least what s keeps;
    serve is then stopped (SIGSTOP: no checkpoint can be written) while
    the ledger still shows s and more rows than that, and killed. Without
    this the test depended on timing: a checkpoint taken just before the
    kill left nothing to roll back (it failed so once under load)."""
    first = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seq, n = snapshot(pool)
        if seq >= 2 and seq not in first:
            first[seq] = n
        elif seq >= 2 and n >= first[seq] + 20:
            pool.serve_proc.stop()
            seq2, n2 = snapshot(pool)
            if seq2 == seq and n2 > first[seq]:
                pool.serve_proc.kill9()
                log("killed past checkpoint %d: %d rows counted, at least "
                    "%d after it" % (seq, n2, n2 - first[seq]))
                return
            pool.serve_proc.cont()
        time.sleep(0.05)
    raise gppool.Failure("no moment with updates past a checkpoint within "
                         "%d s" % timeout)


def test_crash():
    with gppool.Pool("owner-crash", train={
            "epochs": 2, "checkpoint_interval": "300 minibatches"},
            pool={"heartbeat_interval": "500ms",
                  "heartbeat_timeout": "2s"}) as pool:
        pool.serve()
        agents = pool.agents(2)
        for a in agents:
            a.run(delay_ms=2)
        kill_past_checkpoint(pool)
        st = status_json(pool)
        check(not st["serve_running"] and st["agents_connected"] == 0 and
              st["samples_per_s"] == 0, "after the kill: %r" % st)
        text = status(pool)
        check("serve: not running" in text and
              "warning: serve is not running" in text, "text:\n%s" % text)
        pool.serve()
        pool.wait_serve(timeout=300)
        pool.check_exactly_once()
        n, samples = ledger_counted(pool)
        rolled = pool.query("SELECT count(*) FROM updates WHERE"
                            " rolled_back != 0")[0][0]
        check(rolled > 0, "nothing was rolled back: the test proves nothing")
        st = status_json(pool)
        check(st["updates_applied"] == n == st["minibatches_total"] and
              st["samples_applied"] == samples == 2 * gppool.TRAIN_SAMPLES,
              "status counts %d/%d, ledger %d/%d" %
              (st["updates_applied"], st["samples_applied"], n, samples))
        check(st["updates_rolled_back"] == rolled, "rolled back %d vs %d" %
              (st["updates_rolled_back"], rolled))
        check(st["state"] == "done" and st["progress"] == 1 and
              st["eta_s"] == 0, "done: %r" % st)
        ag = agents_json(pool)
        check(sum(x["updates_applied"] for x in ag.values()) == n and
              sum(x["samples_applied"] for x in ag.values()) == samples and
              sum(x["updates_rolled_back"] for x in ag.values()) == rolled,
              "agents --json sums differ from the ledger: %r" % ag)
        log("after a crash: %d applied, %d rolled back, status and agents "
            "agree with the ledger" % (n, rolled))


def test():
    which = sys.argv[1:] or ["live", "crash"]
    for w in which:
        {"live": test_live, "crash": test_crash}[w]()


if __name__ == "__main__":
    gppool.main(test)
