"""A pool of 200 simulated agents (tools/gp-simagent: 200 real agent state
machines over 200 real encrypted channels from their own addresses on
127.0.0.0/8, each with its own key pair, joined with one invite; a fake
training step of the model's exact shape) works for a real coordinator and
ledger. Every agent is welcomed as a member, none gives up, work spreads
over many of them, and the ledger holds: no minibatch applied twice, every
epoch before the two open ones fully applied, every update within the staleness
bound. This is the coordinator's bookkeeping (members, SSP's counts and
wait queue, the scheduler) at a size the process-per-agent tests do not
reach. The job is long (it is stopped once three epochs are applied), so
that it cannot end before the last agent of the storm joined.

serve runs with GP_SERVE_OFFLOAD=1, GP_SEAL_OFFLOAD_MIN=16384 and
GP_OPEN_OFFLOAD_MIN=16384: its 400 handshakes, its pulls and minibatches
(tens of KiB here) and the updates (150 KiB, sent in pieces) go through
libuv's thread pool (docs/architecture.md "Threads"), which the other
tests, with serve as shipped, do not use. The model (784-96-10, 76,330
parameters) is over GP_PAR_MIN, and GP_SERVE_THREADS=1: each
update's blocks, robust filter and step are shared with a helper thread
(coordinator/apply.h). And with
GP_SERVE_DEFER_BUDGET_US=1: the deferred queue of updates (server.h)
handles one message a turn of the loop, so that 200 connections' updates
wait behind each other, with their reading paused and what else they
sent queued behind them, as far as they ever do; the bookkeeping above
must hold all the same."""
import json
import os
import re
import signal
import time

import gppool
from gppool import check, log

AGENTS = 200


def progress(proc):
    last = ""
    for line in proc.stdout().splitlines():
        if line.startswith("progress:"):
            last = line
    m = re.search(r"welcomed (\d+)", last)
    return int(m.group(1)) if m else 0


def test():
    sim_bin = os.environ.get("GP_SIMAGENT")
    check(sim_bin and os.access(sim_bin, os.X_OK),
          "GP_SIMAGENT (tools/gp-simagent) is not set or not executable")
    job = {"model": {"spec": "784-96-10", "seed": 1},
           "train": {"epochs": 1000, "staleness": 3, "eval": "false"},
           # The simulated gradients are made up: verification by
           # recomputation would find them wrong and revoke the agents.
           "pool": {"max_agents": AGENTS + 16, "verify_rate": 0}}
    with gppool.Pool("simagents", **job) as pool:
        env = {"GP_SERVE_OFFLOAD": "1", "GP_SEAL_OFFLOAD_MIN": "16384",
               "GP_OPEN_OFFLOAD_MIN": "16384", "GP_SERVE_THREADS": "1",
               "GP_SERVE_DEFER_BUDGET_US": "1"}
        os.environ.update(env)
        try:
            serve = pool.serve()
        finally:
            for k in env:
                del os.environ[k]
        token = pool.invite(uses=AGENTS)
        report = os.path.join(pool.dir, "sim.json")
        base = os.path.join(pool.dir, "sim")
        sim = gppool.Proc([sim_bin, "--token", token, "--agents",
                           str(AGENTS), "--from", "127.9.0.0", "--storm",
                           "3", "--compute-ms", "5", "--report", report],
                          base + ".out", base + ".err")
        pool.procs.append(sim)
        pool.wait_for("all %d simulated agents welcomed" % AGENTS,
                      lambda: progress(sim) >= AGENTS, timeout=120)
        log("%d agents welcomed" % AGENTS)
        per = pool.minibatches_per_epoch
        pool.wait_for("three epochs applied",
                      lambda: len(pool.applied()) >= 3 * per, timeout=180)
        check(serve.running(), "serve exited during the job:\n" +
              serve.tails())
        sim.signal(signal.SIGTERM)
        check(sim.wait(30) == 0, "gp-simagent did not exit cleanly:\n" +
              sim.tails())
        serve.end()
        # The queue was used, and more than one message waited at once.
        m = re.search(r"deferred queue: (\d+) messages, at most (\d+) "
                      r"waiting at once", serve.stderr())
        check(m and int(m.group(1)) > 0 and int(m.group(2)) > 1,
              "serve did not report its deferred queue, or nothing waited "
              "in it: %r" % (m.group(0) if m else serve.tails()))
        log(m.group(0))
        # The updates were opened off the loop, and applied with a helper.
        m = re.search(r"(\d+) messages opened on the thread pool",
                      serve.stderr())
        check(m and int(m.group(1)) > 0,
              "serve opened no message on the thread pool: %s" %
              serve.tails())
        log(m.group(0))
        check("1 thread(s) share the updates' numeric passes" in
              serve.stderr(), "serve started no apply thread: %s" %
              serve.tails())
        with open(report) as f:
            r = json.load(f)
        log("simulator: %s" % json.dumps({k: v for k, v in r.items()
                                          if k not in ("rtt_ms", "up_ms")}))
        check(r["joined"] == AGENTS and r["welcomed"] == AGENTS,
              "joined %d, welcomed %d of %d" % (r["joined"], r["welcomed"],
                                                AGENTS))
        check(r["gave_up"] == 0, "%d agents gave up joining" % r["gave_up"])
        check(r["heartbeats"] > 0, "no heartbeat round trip measured")
        # The way up (send to serve's echo) is part of each round trip:
        # order statistic by order statistic, never longer.
        check(len(r["up_ms"]) == len(r["rtt_ms"]) and
              all(0 <= u <= t for u, t in zip(r["up_ms"], r["rtt_ms"])),
              "way up %r against round trips %r" % (r["up_ms"][:5],
                                                    r["rtt_ms"][:5]))
        rows = pool.applied()
        seen = {}
        for (_id, _agent, _clock, epoch, mb, _n, _st) in rows:
            seen[(epoch, mb)] = seen.get((epoch, mb), 0) + 1
        dup = [k for k, v in seen.items() if v != 1]
        check(not dup, "%d minibatches applied more than once, e.g. %r" %
              (len(dup), dup[:5]))
        # Two epochs are open at a time (the next opens once the last is
        # handed out): every one before those is complete.
        last = max(e for e, _ in seen)
        for e in range(last - 1):
            done = sum(1 for m in range(per) if (e, m) in seen)
            check(done == per, "epoch %d: %d of %d minibatches applied"
                  % (e + 1, done, per))
        log("no minibatch applied twice; epochs 1-%d complete (%d rows)" %
            (last - 1, len(rows)))
        pool.check_staleness(rows)
        workers = len({row[1] for row in rows})
        check(workers >= AGENTS // 4,
              "only %d of %d agents had work applied" % (workers, AGENTS))
        members = pool.query("SELECT count(*) FROM agents")[0][0]
        check(members == AGENTS, "%d members in the ledger, want %d" %
              (members, AGENTS))
        log("%d of %d agents had updates applied" % (workers, AGENTS))


if __name__ == "__main__":
    gppool.main(test)
