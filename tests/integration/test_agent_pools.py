#!/usr/bin/env python3
"""Every membership shown, each pool named by its job (issue 16), with real
processes: three coordinators serving jobs "beta", "alpha" and "gamma"
(named by their job files), one volunteer's agent that joined all three
(beta first, then alpha, then gamma).

- While it serves beta: `gradpool-agent status` lists the three
  memberships, beta served, alpha and gamma standing by; --json says the
  same ("pools", "served").
- `gradpool-agent leave BETA` while it runs: it moves to alpha (the first
  pool not left) and computes there; status lists beta as left, with the
  job beta's coordinator last told, alpha served with its job, gamma
  standing by and never told.
- `stats --by pool` names each pool by its job and address, the
  fingerprint's first 8 characters after it; --json has "pool_name".
- The agent's page (--web) in headless Chromium: the "Your pools" table
  has the three rows with their roles and job names, the per-pool table
  names the pools; screenshot meson-logs/agent-pools-page.png.
- With the agent stopped, status (exit 3) still lists every membership.
"""
import json
import os
import re
import socket
import subprocess
import time
import urllib.request

import gppool
import gpweb
from gppool import check, log


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(pool, agent, *args):
    return subprocess.run([pool.agent_bin] + list(args) +
                          ["--state", agent.state], capture_output=True,
                          text=True, timeout=30)


def status(pool, agent):
    r = cli(pool, agent, "status", "--json")
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {}


def named_pool(name, **job):
    """A pool whose job file is NAME.ini: the coordinator names the job
    after it."""
    pool = gppool.Pool("pools-" + name, **job)
    pool.job_path = os.path.join(pool.dir, name + ".ini")
    pool.write_job()
    return pool


def by_name(st):
    return {(p["job"] or {}).get("name", "(none)"): p
            for p in st.get("pools") or []}


def test():
    # Long jobs: the agent is slowed and the test ends them.
    long_job = {"train": {"epochs": 50}}
    with named_pool("beta", **long_job) as pb, \
            named_pool("alpha", **long_job) as pa, \
            named_pool("gamma", **long_job) as pc:
        for p in (pb, pa, pc):
            p.serve()
        vol = pa.agent("vol")
        # joined_at orders the memberships (seconds): one second apart.
        for p in (pb, pa, pc):
            vol.join(p.invite())
            time.sleep(1.1)
        port = free_port()
        vol.run(delay_ms=20, extra=["--web=127.0.0.1:%d" % port])

        st = pa.wait_for("the agent computing for beta", lambda: (
            lambda s: s if s.get("state") == "connected" and
            (s.get("job") or {}).get("name") == "beta" else None)(
                status(pa, vol)), timeout=90, poll=0.5)
        beta_key = st["pool"]
        pools = st["pools"]
        check(len(pools) == 3, "three memberships: %r" % pools)
        check([p["served"] for p in pools] == [True, False, False] and
              pools[0]["pool"] == beta_key and
              all(p["left_at"] is None for p in pools),
              "beta served, alpha and gamma standing by: %r" % pools)
        check(pools[0]["job"]["name"] == "beta" and
              pools[0]["name"] == "beta at 127.0.0.1:%d" % pb.port,
              "the served pool's job, as the running agent knows it: %r"
              % pools[0])
        text = cli(pa, vol, "status").stdout
        log("status while serving beta:\n" + text)
        check("memberships: 3" in text and text.count("standing by") == 2
              and "* beta at 127.0.0.1:%d (key %s)" % (pb.port, beta_key)
              in text, "status text lists the three:\n" + text)
        for p, port_ in ((pa, pa.port), (pc, pc.port)):
            check("at 127.0.0.1:%d (key" % port_ in text,
                  "status lacks the pool at port %d:\n%s" % (port_, text))

        # Leaving beta while running: the agent moves to alpha.
        r = cli(pa, vol, "leave", beta_key)
        check(r.returncode == 0 and "left pool " + beta_key in r.stdout,
              "leave: %s %s" % (r.stdout, r.stderr))
        st = pa.wait_for("the agent computing for alpha", lambda: (
            lambda s: s if s.get("state") == "connected" and
            (s.get("job") or {}).get("name") == "alpha" and
            s.get("minibatches", 0) > 0 else None)(status(pa, vol)),
            timeout=90, poll=0.5)
        # What beta's coordinator told reaches the database with the next
        # flush (10 s); alpha's comes from the running agent at once.
        st = pa.wait_for("beta's job in the memberships", lambda: (
            lambda s: s if {"alpha", "beta"} <= set(by_name(s)) else None)(
                status(pa, vol)), timeout=40, poll=0.5)
        log("status --json: %r" % st)
        named = by_name(st)
        check(set(named) == {"alpha", "beta", "(none)"},
              "memberships by job: %r" % st["pools"])
        a, b, c = named["alpha"], named["beta"], named["(none)"]
        check(a["served"] and a["left_at"] is None and
              a["endpoints"] == "127.0.0.1:%d" % pa.port and
              a["job"]["id"] == pa.job_id() and
              a["job"]["epochs"] == 50 and a["job"]["state"] == "training",
              "alpha: %r" % a)
        check(not b["served"] and b["left_at"] and b["pool"] == beta_key and
              b["job"]["state"] == "training" and
              b["name"] == "beta at 127.0.0.1:%d" % pb.port, "beta: %r" % b)
        check(not c["served"] and c["left_at"] is None and
              c["name"] == "pool at 127.0.0.1:%d" % pc.port, "gamma: %r" % c)
        text = cli(pa, vol, "status").stdout
        log("status after leaving beta:\n" + text)
        for want in ("* alpha at 127.0.0.1:%d" % pa.port,
                     "- beta at 127.0.0.1:%d" % pb.port,
                     "- (no job told yet) at 127.0.0.1:%d" % pc.port,
                     "served now", ", left ", "standing by",
                     "job %d, training, epoch " % pa.job_id()):
            check(want in text, "status lacks %r:\n%s" % (want, text))

        # stats --by pool: names, the fingerprint after.
        out = cli(pa, vol, "stats", "--by", "pool").stdout
        log("stats --by pool:\n" + out)
        for p, name in ((pa, "alpha"), (pb, "beta")):
            key = [x["pool"] for x in st["pools"]
                   if x["endpoints"] == "127.0.0.1:%d" % p.port][0]
            check(re.search(r"^%s at 127\.0\.0\.1:%d \(%s\) +\d+" %
                            (name, p.port, key[:9]), out, re.M),
                  "stats --by pool lacks %s:\n%s" % (name, out))
        js = json.loads(cli(pa, vol, "stats", "--by", "pool",
                            "--json").stdout)
        names = {r["pool_name"] for r in js["rows"]}
        check({"alpha at 127.0.0.1:%d" % pa.port,
               "beta at 127.0.0.1:%d" % pb.port} <= names,
              "stats --json pool_name: %r" % js["rows"])
        check(all(r["pool"] and len(r["pool"]) >= 16 for r in js["rows"]
                  if r["pool_name"]), "fingerprints kept: %r" % js["rows"])

        # The page.
        url = "http://127.0.0.1:%d/" % port
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        browser = gpweb.chromium()
        if browser:
            page = gpweb.dump_dom(browser, url, pa.dir)
        rows = re.findall(r'<tr data-pool="([0-9a-f-]+)" data-role="(\w+)">'
                          r'(.*?)</tr>', page)
        roles = {key: (role, body) for key, role, body in rows}
        check(len(rows) == 3, "three membership rows: %r" % rows)
        check(roles[beta_key][0] == "left" and
              "beta (job " in roles[beta_key][1], "beta's row: %r" %
              (roles[beta_key],))
        check(roles[a["pool"]][0] == "served" and
              "alpha (job " in roles[a["pool"]][1], "alpha's row")
        check(roles[c["pool"]][0] == "standby" and
              "not told yet" in roles[c["pool"]][1], "gamma's row")
        check(re.search(r'<table id="by-pool">.*alpha at 127\.0\.0\.1:%d '
                        r'\(%s\)' % (pa.port, a["pool"][:9]), page, re.S),
              "the per-pool table names alpha")
        if browser:
            gpweb.shot(browser, url, pa.dir, os.path.join(
                gpweb.shots_dir(pa.agent_bin), "agent-pools-page.png"))
        else:
            log("no chromium: the page was read without it, no screenshot")

        # Stopped: status still lists every membership.
        vol.proc.end()
        r = cli(pa, vol, "status")
        check(r.returncode == 3 and "memberships: 3" in r.stdout and
              "served when the agent runs" in r.stdout,
              "status of a stopped agent (%d):\n%s" % (r.returncode,
                                                      r.stdout))
        st = json.loads(cli(pa, vol, "status", "--json").stdout)
        check(st["state"] == "stopped" and len(st["pools"]) == 3 and
              [p["served"] for p in st["pools"]] == [False, True, False],
              "stopped: %r" % st)


if __name__ == "__main__":
    gppool.main(test)
