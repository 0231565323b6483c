"""A pool of 200 simulated agents (tools/gp-simagent: 200 real agent state
machines over 200 real encrypted channels from their own addresses on
127.0.0.0/8, each with its own key pair, joined with one invite; a fake
training step of the model's exact shape) trains a two-epoch job to its
end against a real coordinator and ledger. Every agent is welcomed as a
member, none gives up, work spreads over many of them, and the ledger's
exactly-once and staleness checks hold: the coordinator's bookkeeping
(members, SSP's counts and wait queue, the scheduler) at a size the
process-per-agent tests do not reach."""
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
    job = {"model": {"spec": "784-32-10", "seed": 1},
           "train": {"epochs": 2, "staleness": 3, "eval": "false"},
           # The simulated gradients are made up: verification by
           # recomputation would find them wrong and revoke the agents.
           "pool": {"max_agents": AGENTS + 16, "verify_rate": 0}}
    with gppool.Pool("simagents", **job) as pool:
        serve = pool.serve()
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
        rc = serve.wait(240)
        check(rc == 0, "serve exited %r before the job ended:\n%s" %
              (rc, serve.tails()))
        sim.signal(signal.SIGTERM)
        check(sim.wait(30) == 0, "gp-simagent did not exit cleanly:\n" +
              sim.tails())
        with open(report) as f:
            r = json.load(f)
        log("simulator: %s" % json.dumps({k: v for k, v in r.items()
                                          if k != "rtt_ms"}))
        check(r["joined"] == AGENTS and r["welcomed"] == AGENTS,
              "joined %d, welcomed %d of %d" % (r["joined"], r["welcomed"],
                                                AGENTS))
        check(r["gave_up"] == 0, "%d agents gave up joining" % r["gave_up"])
        check(r["heartbeats"] > 0, "no heartbeat round trip measured")
        rows = pool.check_exactly_once()
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
