#!/usr/bin/env python3
"""Progress to the agents and credit, with real processes (issue 16).

A pool of two slowed agents: "ada" set a public name before it started
(`gradpool-agent name`), "bob" has none.
- While they compute, `gradpool-agent status --json` of each shows the
  job's name, epochs, progress, an ETA and the member's credit (the
  coordinator's STATS), and the text form says the same; the agent's page
  (--web) shows them too, and headless Chromium draws it (a screenshot in
  meson-logs/credit-agent-page.png, when Chromium is there).
- bob sets a public name while running (PROFILE): the ledger has it at
  once; `name --clear` withdraws it.
- Once the job is done: `credits --json` gives each member's applied
  updates and samples exactly as the ledger's update log counts them, and
  GFLOP = samples x the model's training FLOPs per sample (784-256-128-10:
  4*784*256 + 6*256*128 + 6*128*10); `credits --check` agrees; the
  leaderboard shows ada's public name (HTML-escaped) and bob as
  "anonymous", and neither bob's agent name nor any key fingerprint;
  --omit-anonymous leaves bob out; headless Chromium draws the
  leaderboard file with both members (meson-logs/leaderboard-page.png).
"""
import html
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import gppool
import gpweb
from gppool import check, log

FLOPS = 4 * 784 * 256 + 6 * 256 * 128 + 6 * 128 * 10
ADA = 'Ada "<L>" & Co'


def agent_cmd(pool, agent, *args):
    return subprocess.run([pool.agent_bin] + list(args) +
                          ["--state", agent.state], capture_output=True,
                          text=True, timeout=30)


def status(pool, agent):
    r = agent_cmd(pool, agent, "status", "--json")
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shot(url, path):
    chromium = shutil.which("chromium")
    if not chromium:
        log("no chromium: no screenshot of the agent page")
        return
    d = os.path.dirname(path)
    r = subprocess.run([chromium, "--headless", "--disable-gpu",
                        "--no-sandbox", "--no-first-run",
                        "--user-data-dir=" + os.path.join(d, ".chromium-credit"),
                        "--hide-scrollbars", "--window-size=1000,1400",
                        "--screenshot=" + path, url],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0 and os.path.getsize(path) > 0,
          "chromium could not draw %s: %s" % (url, r.stderr[-400:]))
    log("screenshot: %s" % path)


def live_checks(pool, ada, bob, port):
    st = pool.wait_for("both agents with the job's progress and credit",
                       lambda: (lambda a, b: (a, b) if (
                           a.get("job") and b.get("job") and
                           a["job"]["progress"] > 0 and
                           a["credit"]["gflop"] > 0 and
                           b["credit"]["gflop"] > 0) else None)(
                           status(pool, ada), status(pool, bob)),
                       timeout=90, poll=0.5)
    a, b = st
    log("ada's status: %r" % a)
    job = a["job"]
    check(job["name"] == "fashion-mnist 784-256-128-10",
          "job name: %r" % job["name"])
    check(job["id"] == pool.job_id() and job["epochs"] == pool.epochs and
          1 <= job["epoch"] <= pool.epochs and job["state"] == "training",
          "job: %r" % job)
    check(0 < job["progress"] <= 1, "progress: %r" % job)
    check(a["public_name"] == ADA and b["public_name"] is None,
          "public names: %r %r" % (a["public_name"], b["public_name"]))
    check(a["state"] == "connected" and
          "computing for job fashion-mnist" in a["reason"],
          "reason: %r" % a["reason"])
    # An ETA once the pool has a minute's rate (a few seconds of points).
    a = pool.wait_for("an ETA", lambda: (lambda s: s if s.get("job") and
                                         s["job"]["eta_s"] is not None
                                         else None)(status(pool, ada)),
                      timeout=30, poll=0.5)
    check(a["job"]["eta_s"] >= 0 and a["job"]["pool_samples_per_s"] > 0 and
          a["job"]["agents_live"] == 2, "rate and ETA: %r" % a["job"])
    # The credit the coordinator sent is this member's applied work.
    ledger = pool.query("SELECT count(*), coalesce(sum(samples), 0) FROM "
                        "updates WHERE agent_id = ? AND outcome = 'applied'"
                        " AND rolled_back = 0", (ada.agent_id(),))[0]
    check(0 < a["credit"]["job_updates"] <= ledger[0] + 200,
          "ada's credit %r against the ledger's %r" % (a["credit"], ledger))
    text = agent_cmd(pool, ada, "status").stdout
    for want in ("job:         fashion-mnist 784-256-128-10",
                 "of %d" % pool.epochs, "your credit:", "GFLOP",
                 "public name: " + ADA):
        check(want in text, "status text lacks %r:\n%s" % (want, text))

    # The page (agent ada runs with --web) shows the same.
    page = pool.wait_for("the job on the page", lambda: (lambda p: p if
                         'id="job-name"' in p and 'id="job-accuracy"' in p
                         else None)(urllib.request.urlopen(
                             "http://127.0.0.1:%d/" % port,
                             timeout=10).read().decode()),
                         timeout=30, poll=0.5)
    check(">fashion-mnist 784-256-128-10<" in page, "page: job name")
    check('id="credit"' in page and "GFLOP" in page, "page: credit")
    check(html.escape(ADA) in page, "page: public name")
    check('id="job-bar"' in page and 'id="job-eta"' in page,
          "page: progress bar and ETA")
    # The screenshot once an evaluation is in (the first epoch's).
    pool.wait_for("an evaluation on ada's status", lambda: (
        status(pool, ada).get("job") or {}).get("last_eval"), timeout=120,
        poll=0.5)
    shots = os.environ.get("GP_SHOTS") or os.path.join(
        os.path.dirname(os.path.dirname(pool.agent_bin)), "meson-logs")
    os.makedirs(shots, exist_ok=True)
    shot("http://127.0.0.1:%d/" % port,
         os.path.join(shots, "credit-agent-page.png"))

    # bob sets a name while running: PROFILE reaches the ledger; then
    # withdraws it.
    r = agent_cmd(pool, bob, "name", "Bob B")
    check(r.returncode == 0 and "public name: Bob B" in r.stdout,
          "name: %s %s" % (r.stdout, r.stderr))
    pool.wait_for("bob's name in the ledger", lambda: pool.query(
        "SELECT public_name FROM agents WHERE id = ?",
        (bob.agent_id(),))[0][0] == "Bob B", timeout=15, poll=0.2)
    r = agent_cmd(pool, bob, "name", "--clear")
    check(r.returncode == 0 and "no public name" in r.stdout,
          "name --clear: %s %s" % (r.stdout, r.stderr))
    pool.wait_for("bob's name withdrawn", lambda: pool.query(
        "SELECT public_name FROM agents WHERE id = ?",
        (bob.agent_id(),))[0][0] is None, timeout=15, poll=0.2)
    # A bad name is refused by the CLI.
    r = agent_cmd(pool, bob, "name", " padded")
    check(r.returncode == 2, "a bad name was taken: %d" % r.returncode)


def after_checks(pool, ada, bob):
    credits = json.loads(pool.coord("credits", "--json").stdout)
    log("credits: %r" % credits)
    members = {m["id"]: m for m in credits["members"]}
    total = 0.0
    for ag in (ada, bob):
        aid = ag.agent_id()
        n, s = pool.query("SELECT count(*), coalesce(sum(samples), 0) FROM "
                          "updates WHERE agent_id = ? AND outcome = "
                          "'applied' AND rolled_back = 0", (aid,))[0]
        m = members[aid]
        check(n > 0 and m["updates"] == n and m["samples"] == s,
              "%s: credits %r, ledger %d updates %d samples" %
              (ag.name, m, n, s))
        check(abs(m["gflop"] - s * FLOPS / 1e9) < 1e-3,
              "%s: %.6f GFLOP, want %.6f" % (ag.name, m["gflop"],
                                               s * FLOPS / 1e9))
        check(m["jobs"][0]["flops_per_sample"] == FLOPS,
              "FLOPs per sample: %r" % m["jobs"])
        total += m["gflop"]
    check(members[ada.agent_id()]["public_name"] == ADA and
          members[bob.agent_id()]["public_name"] is None,
          "public names: %r" % credits)
    check(abs(credits["total_gflop"] - total) < 1e-3, "total")
    applied = pool.query("SELECT coalesce(sum(samples), 0) FROM updates "
                         "WHERE outcome = 'applied' AND rolled_back = 0")[0][0]
    check(sum(m["samples"] for m in members.values()) == applied,
          "all applied samples are credited")
    r = pool.coord("credits", "--check")
    check("agrees" in r.stdout, "credits --check: %s" % r.stdout)
    text = pool.coord("credits").stdout
    check(ADA in text and "2 members" in text, "credits:\n%s" % text)

    out = os.path.join(pool.dir, "board.html")
    pool.coord("leaderboard", out, "--title", "Our <pool>")
    page = open(out, encoding="utf-8").read()
    # As a visitor's browser draws the published file.
    browser = gpweb.chromium()
    if browser:
        dom = gpweb.dump_dom(browser, "file://" + out, pool.dir)
        check(ADA in html.unescape(dom) and "anonymous" in dom,
              "Chromium's leaderboard lacks the members")
        gpweb.shot(browser, "file://" + out, pool.dir, os.path.join(
            gpweb.shots_dir(pool.coord_bin), "leaderboard-page.png"),
            size="1000,700")
    else:
        log("no chromium: the leaderboard was read without it")
    check(os.stat(out).st_mode & 0o777 == 0o644, "the page is not 0644")
    check(html.escape(ADA) in page and ADA not in page,
          "ada's name (escaped) on the page")
    check("anonymous" in page and "Our &lt;pool&gt;" in page,
          "anonymous row and title")
    check(bob.name not in page and ada.name not in page,
          "an agent name on the page")
    fps = [r[0] for r in pool.query("SELECT fingerprint FROM agents")]
    check(not any(fp and fp in page for fp in fps),
          "a key fingerprint on the page")
    pool.coord("credits", "--html", out, "--omit-anonymous")
    page = open(out, encoding="utf-8").read()
    check("anonymous</td>" not in page and html.escape(ADA) in page,
          "--omit-anonymous")
    pool.coord("leaderboard", out, "--fingerprints")
    page = open(out, encoding="utf-8").read()
    check(all(fp in page for fp in fps if fp), "--fingerprints")


def test():
    with gppool.Pool("credit", train={"epochs": 3}) as pool:
        pool.serve()
        ada, bob = pool.agents(2, prefix="machine-of-volunteer-")
        r = agent_cmd(pool, ada, "name", ADA)
        check(r.returncode == 0 and "recorded" in r.stdout,
              "name before run: %s %s" % (r.stdout, r.stderr))
        port = free_port()
        ada.run(delay_ms=15, extra=["--web=127.0.0.1:%d" % port])
        bob.run(delay_ms=15)
        live_checks(pool, ada, bob, port)
        pool.wait_serve(timeout=300)
        after_checks(pool, ada, bob)


if __name__ == "__main__":
    gppool.main(test)
