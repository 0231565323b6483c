#!/usr/bin/env python3
"""The pool owner's page (issue 16) in headless Chromium, against a real
pool: `serve --web 127.0.0.1:0` and two real agents.

- While the job runs: the page says job 1 is running, its accuracy points
  are the ledger's evaluations, epoch for epoch; screenshot
  meson-logs/owner-page-running.png.
- After it is done (serve stays up with --keep-serving): the page says
  done; the accuracy and loss charts have one point per epoch with the
  ledger's values; the throughput bars add up to the ledger's applied
  samples; the agents table gives each agent's samples as the ledger
  counts them, shares that add up to 100 %; the page has no script and
  loads nothing from elsewhere; screenshot meson-logs/owner-page-done.png.
- A second job added and cancelled at once (serve may have begun to set
  it up): the ledger and the page's jobs table say job 1 done, job 2
  cancelled.
- A request whose Host names another site gets 421 (DNS rebinding); a
  --web address that is not loopback is refused.
Skips (77) only when Chromium is missing and cannot be installed.
"""
import http.client
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser

import gppool
from gppool import check, log


def chromium():
    path = shutil.which("chromium")
    if not path and os.geteuid() == 0:
        subprocess.run("flock /tmp/gp-apt.lock env DEBIAN_FRONTEND="
                       "noninteractive apt-get install -y -qq "
                       "--no-install-recommends chromium >/dev/null 2>&1",
                       shell=True)
        path = shutil.which("chromium")
    return path


# Next to the test logs of the build that runs the test.
SHOTS = os.path.join(os.path.dirname(os.path.dirname(
    os.environ.get("GP_COORDINATOR", "build/coordinator/x"))), "meson-logs")


class Page(HTMLParser):
    """The parts of the page the test reads: elements by id, chart points
    and bars, table rows with their cells' text and data-value."""

    def __init__(self):
        super().__init__()
        self.ids = {}
        self.points = {}
        self.bars = {}
        self.rows = {}
        self.tags = set()
        self.srcs = []
        self.svg = None
        self.table = None
        self.cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        for k in ("src", "href"):
            if k in a and tag not in ("svg",):
                self.srcs.append(a[k])
        if "id" in a:
            self.ids[a["id"]] = a
        if tag == "svg" and a.get("id"):
            self.svg = a["id"]
            self.points[self.svg] = []
            self.bars[self.svg] = []
        if tag == "circle" and a.get("class") == "point" and self.svg:
            self.points[self.svg].append(a)
        if tag == "rect" and a.get("class") == "bar" and self.svg:
            self.bars[self.svg].append(a)
        if tag == "table":
            self.table = a.get("id")
            self.rows[self.table] = []
        if tag == "tr" and self.table:
            self.rows[self.table].append({"attrs": a, "cells": []})
        if tag == "td" and self.table:
            self.cell = [a.get("data-value"), ""]

    def handle_endtag(self, tag):
        if tag == "svg":
            self.svg = None
        if tag == "table":
            self.table = None
        if tag == "td" and self.cell is not None and self.table:
            self.rows[self.table][-1]["cells"].append(tuple(self.cell))
            self.cell = None

    def handle_data(self, d):
        if self.cell is not None:
            self.cell[1] += d


def load(browser, url, tmp):
    r = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox",
                        "--no-first-run", "--user-data-dir=" +
                        os.path.join(tmp, "chromium"), "--dump-dom", url],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0 and "<html" in r.stdout,
          "chromium could not load %s: %s" % (url, r.stderr[-2000:]))
    p = Page()
    p.feed(r.stdout)
    return p, r.stdout


def shot(browser, url, tmp, name):
    os.makedirs(SHOTS, exist_ok=True)
    out = os.path.join(SHOTS, name)
    r = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox",
                        "--no-first-run", "--user-data-dir=" +
                        os.path.join(tmp, "chromium"), "--hide-scrollbars",
                        "--window-size=1100,1650", "--screenshot=" + out, url],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0 and os.path.getsize(out) > 10000,
          "no screenshot %s: %s" % (out, r.stderr[-2000:]))
    log("screenshot %s" % out)


def test():
    browser = chromium()
    if not browser:
        print("skip: chromium cannot be installed")
        sys.exit(77)
    with gppool.Pool("owner-web", train={"epochs": 3}) as pool:
        r = subprocess.run([pool.coord_bin, "serve", "--state", pool.state,
                            "--job", pool.job_path, "--web", "0.0.0.0:0"],
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 2 and "loopback" in r.stderr,
              "a public --web address: rc %d, %r" % (r.returncode, r.stderr))

        proc = gppool.Proc([pool.coord_bin, "serve", "--state", pool.state,
                            "--job", pool.job_path, "--keep-serving",
                            "--listen", "127.0.0.1:0", "--web",
                            "127.0.0.1:0"],
                           os.path.join(pool.dir, "serve.out"),
                           os.path.join(pool.dir, "serve.err"))
        pool.procs.append(proc)
        pool.serve_proc = proc
        pool.wait_for("the page's address", lambda: re.search(
            r"^owner's page: (http://127\.0\.0\.1:(\d+)/)$", proc.stdout(),
            re.M), 60)
        m = re.search(r"^owner's page: (http://127\.0\.0\.1:(\d+)/)$",
                      proc.stdout(), re.M)
        url, web_port = m.group(1), int(m.group(2))
        pool.port = int(re.search(r"^listening on [^\n]*:(\d+)$",
                                  proc.stdout(), re.M).group(1))
        agents = pool.agents(2)
        for a in agents:
            argv = [pool.agent_bin, "run", "--state", a.state, "--name",
                    a.name, "--device", "cpu", "--threads", "1",
                    "--no-bench", "--test-step-delay-ms", "2"]
            a.proc = gppool.Proc(argv, os.path.join(pool.dir, a.name + ".out"),
                                 os.path.join(pool.dir, a.name + ".err"))
            pool.procs.append(a.proc)

        # Running, one epoch evaluated.
        pool.wait_for("an evaluation", lambda: pool.query(
            "SELECT count(*) FROM evals WHERE job_id = 1")[0][0] >= 1, 300)
        page, _ = load(browser, url, pool.dir)
        evals = pool.query("SELECT epoch, test_accuracy FROM evals WHERE"
                           " job_id = 1 ORDER BY epoch")
        state = pool.query("SELECT state FROM jobs WHERE id = 1")[0][0]
        log("running: page says %s, ledger %s; %d evaluation(s)" %
            (page.ids["job"].get("data-state"), state, len(evals)))
        if state == "running":
            check(page.ids["job"].get("data-state") == "running",
                  "page state %r" % page.ids["job"])
            shot(browser, url, pool.dir, "owner-page-running.png")
        pts = [(int(p["data-epoch"]), float(p["data-value"]))
               for p in page.points["chart-accuracy"]]
        check(len(pts) >= 1 and all(
            (e + 1, a) in [(pe, round(pv, 6)) for pe, pv in pts] or
            any(pe == e + 1 and abs(pv - a) < 1e-5 for pe, pv in pts)
            for e, a in evals[:len(pts)]),
            "accuracy points %r against the ledger's %r" % (pts, evals))

        # Done; serve stays up.
        pool.wait_for("job 1 done", lambda: pool.query(
            "SELECT state FROM jobs WHERE id = 1")[0][0] == "done", 300)
        r = pool.coord("job", "cancel", "1", expect_ok=False)
        check(r.returncode == 1 and "done already" in r.stderr,
              "cancelling a done job: %r" % r.stderr)
        check(proc.running(), "serve exited after its job:\n%s" % proc.tails())

        page, html = load(browser, url, pool.dir)
        check(page.ids["job"].get("data-state") == "done" and
              page.ids["job"].get("data-job-id") == "1",
              "page headline %r" % page.ids["job"])
        evals = pool.query("SELECT epoch, test_accuracy, test_loss FROM evals"
                           " WHERE job_id = 1 ORDER BY epoch")
        acc = [(int(p["data-epoch"]), float(p["data-value"]))
               for p in page.points["chart-accuracy"]]
        loss = [(int(p["data-epoch"]), float(p["data-value"]))
                for p in page.points["chart-loss"]]
        check(len(evals) == 3 and [e for e, _ in acc] == [1, 2, 3] and
              all(abs(a - e[1]) < 1e-5 for (_, a), e in zip(acc, evals)) and
              all(abs(lv - e[2]) < 1e-5 for (_, lv), e in zip(loss, evals)),
              "charts %r / %r against the ledger's %r" % (acc, loss, evals))
        total = pool.query("SELECT coalesce(sum(samples), 0) FROM updates"
                           " WHERE job_id = 1 AND outcome = 'applied' AND"
                           " rolled_back = 0")[0][0]
        bars = sum(int(b["data-samples"]) for b in page.bars["chart-rate"])
        check(total > 0 and bars == total,
              "throughput bars add up to %d samples, the ledger %d" %
              (bars, total))
        check(int(page.ids["samples"]["data-value"]) == total and
              float(page.ids["progress"]["data-value"]) == 1.0,
              "headline samples/progress: %r %r" % (page.ids["samples"],
                                                    page.ids["progress"]))
        by = dict(pool.query("SELECT a.name, sum(u.samples) FROM updates u"
                             " JOIN agents a ON a.id = u.agent_id WHERE"
                             " u.job_id = 1 AND u.outcome = 'applied' AND"
                             " u.rolled_back = 0 GROUP BY a.name"))
        rows = {r["cells"][1][1]: r["cells"] for r in page.rows["agents"]
                if r["attrs"].get("data-agent-id")}
        check(set(rows) == set(by) == {a.name for a in agents},
              "agents on the page %r, in the ledger %r" % (list(rows), by))
        shares = 0.0
        for name, cells in rows.items():
            check(int(cells[4][0]) == by[name],
                  "%s: page %s samples, ledger %d" % (name, cells[4][0],
                                                      by[name]))
            check(abs(float(cells[3][0]) - by[name] / total) < 1e-5,
                  "%s: share %s" % (name, cells[3][0]))
            shares += float(cells[3][0])
        check(abs(shares - 1.0) < 1e-4, "shares add up to %r" % shares)
        check("script" not in page.tags and not [s for s in page.srcs
                                                 if "://" in s],
              "the page loads scripts or remote resources: %r" % page.srcs)
        shot(browser, url, pool.dir, "owner-page-done.png")

        # A second job, cancelled at once: serve may have begun to set it
        # up meanwhile (it looks at the queue twice a second), and the
        # cancel stands either way.
        b_job = os.path.join(pool.dir, "b.ini")
        with open(pool.job_path) as f, open(b_job, "w") as g:
            g.write(f.read().replace("epochs = 3", "epochs = 1"))
        pool.coord("job", "add", b_job)
        pool.coord("job", "cancel", "2")
        time.sleep(1.5)
        check(proc.running(), "serve exited:\n%s" % proc.tails())
        page, html = load(browser, url, pool.dir)
        ledger_jobs = dict(pool.query("SELECT id, state FROM jobs"))
        page_jobs = {int(r["attrs"]["data-job-id"]): r["attrs"]["data-state"]
                     for r in page.rows["queue"]
                     if r["attrs"].get("data-job-id")}
        check(page_jobs == ledger_jobs == {1: "done", 2: "cancelled"},
              "jobs table %r, ledger %r" % (page_jobs, ledger_jobs))

        # DNS rebinding: another site's name in Host.
        c = http.client.HTTPConnection("127.0.0.1", web_port, timeout=10)
        c.request("GET", "/", headers={"Host": "evil.example:%d" % web_port})
        res = c.getresponse()
        check(res.status == 421, "Host evil.example got %d" % res.status)
        c.close()
        log("page checked: %d samples, %d evaluations, agents %r" %
            (total, len(evals), by))
        pool.end_agents(grace=0)


if __name__ == "__main__":
    gppool.main(test)
