"""Hostile members: pool members that misbehave on purpose, next to two
honest agents that must still finish the job.

One pool, one training run. tests/fault/hostile-agent joins with a real
invite token and then, per mode: NaN and Inf in an update, a wrong tensor
shape, updates for minibatches it was not given or that do not exist,
clocks ahead and behind, an absurd gradient norm, a duplicate of an applied
update, the first part of a split update (parts = 2, which the coordinator
does not reassemble), a message flood, a burst of heartbeats over the rate
limit right before an update, and taking work without ever answering (nor
reading). Asserted:
  - every rejected update is in the ledger (updates.outcome 'rejected' with
    the reason, and a rejections row of that kind), max_strikes of them per
    hostile before the coordinator says "too many rejected updates"; the
    split update's minibatch goes back to the queue at once, so the member
    keeps getting work (and strikes) and the pool does not freeze;
  - the flooder is cut off ("message flood", two 'flood' rejection rows);
  - an update that comes over the rate limit is handled, not dropped: the
    bursting member's updates are all applied, it stays connected, with
    one 'flood' row (its minibatches would otherwise hold its clock, and
    the pool, until work_timeout);
  - the silent member is dropped by the heartbeat timeout or work_timeout
    ('work-timeout' row);
  - duplicates are discarded ('duplicate' rows), never applied twice;
  - the honest run applies every minibatch exactly once and reaches the
    accuracy target.
"""
import os
import sys
import re

import gppool
from gppool import check, log

STRIKES = 4
# The bar of every hostile test's run: that the attack did not break the
# model. Broken runs end far below it (tools/bench-attack, docs/
# performance.md "Attacks": 56 % and less); honest-only 3-epoch jobs reach
# 82-84 %, the 5-epoch attack tests 83.9-86.1 %. It was 80 % until CI
# failed hostile-verify at 79.37 % (2026-12-07; evals 41.96, 82.95, 80.89,
# 82.13, 79.37 %: its last epoch lost 2.8 points at a learning rate near
# zero, with 14 of the attacker's minibatches taken back): a run of
# 48-step local runs merged from three agents swings by several points
# between evals (churn-kill's went 81, 64, 53, 79 %), so 80 % left a tail.
ACCURACY = 0.75
# mode -> the reason its updates are rejected with
REJECTED = {
    "nan": "nonfinite",
    "inf": "nonfinite",
    "shape": "shape",
    "unassigned": "not-assigned",
    "unknown": "unknown-minibatch",
    "clock-ahead": "clock-ahead",
    "clock-behind": "clock-behind",
    "norm": "norm",
    # A group's update listing one minibatch twice (GP_UPDATE_SUMS).
    "group-twin": "duplicate",
    # The first of two parts of a split update.
    "parts": "shape",
}
RATE = 500
# Updates the bursting member sends, the first right after 2.2 s worth of
# heartbeats at RATE (its bucket holds 2 s): about 100 messages over the
# limit, well below the cut-off (RATE of them).
BURST_UPDATES = 6


def hostile_bin():
    path = os.environ.get("GP_HOSTILE_AGENT")
    if not path:
        path = os.path.join(os.path.dirname(gppool.binaries()[0]), "..",
                            "tests", "fault", "hostile-agent")
    check(os.access(path, os.X_OK), "hostile-agent not found at %s" % path)
    return path


def start_hostile(pool, mode, token, *extra):
    base = os.path.join(pool.dir, "hostile-%s" % mode)
    proc = gppool.Proc([hostile_bin(), mode, token] + list(extra),
                       base + ".out", base + ".err")
    pool.procs.append(proc)
    return proc


def join_at_work(pool, mode, *extra):
    """Serves, starts three honest agents and, once 8 of their updates
    are applied, one hostile member in `mode` (extra: its options): it
    joins a pool at work, as a minority (robust.h). Returns (honest
    agents, hostile Proc)."""
    pool.serve()
    honest = pool.agents(3, prefix="honest")
    token = pool.invite(uses=1)
    for a in honest:
        a.run()
    pool.wait_for("honest updates", lambda: pool.query(
        "SELECT count(*) FROM updates WHERE outcome = 'applied'")[0][0]
        >= 8, 120)
    return honest, start_hostile(pool, mode, token, "--timeout-ms", "900000",
                                 *extra)


def agent_rows(pool, name, sql):
    return pool.query(sql.replace("{agent}",
                                  "(SELECT id FROM agents WHERE name = ?)"),
                      (name,))


def test():
    with gppool.Pool("hostile-members",
                     # 3 epochs once ended at 74-79.5 % in 3 of 5 runs:
                     # the members sending zeros made robust aggregation's
                     # radii 0 and every honest update was replaced by
                     # the centre for an epoch (robust.c, 2026-12-05).
                     train={"epochs": 3, "learning_rate": 0.05},
                     # The refusals asserted here, not verification's
                     # mismatches (test_hostile_verify.py).
                     pool={"max_strikes": STRIKES, "work_timeout": "10s",
                           "rate_messages": RATE, "max_grad_norm": 1000,
                           "verify_rate": 0}) as pool:
        pool.serve()
        token = pool.invite(uses=len(REJECTED) + 4)
        hostiles = {m: start_hostile(pool, m, token, "--timeout-ms", "120000")
                    for m in REJECTED}
        hostiles["duplicate"] = start_hostile(pool, "duplicate", token,
                                              "--count", "6")
        hostiles["flood"] = start_hostile(pool, "flood", token)
        hostiles["burst"] = start_hostile(
            pool, "burst", token, "--burst", str(RATE * 11 // 5), "--count",
            str(BURST_UPDATES), "--timeout-ms", "120000")
        # It stops reading, so it never sees its own disconnection.
        hostiles["noread"] = start_hostile(pool, "noread", token,
                                           "--timeout-ms", "40000")
        honest = pool.agents(2, prefix="honest")
        for a in honest:
            a.run()

        for mode, proc in hostiles.items():
            rc = proc.wait(180)
            out = proc.stdout().strip()
            log("hostile %s: rc %s: %s" % (mode, rc, out))
            if mode == "noread":
                continue
            check(rc == 0, "hostile %s exited %s: %s" % (mode, rc, out))
            if mode in REJECTED:
                check("closed_by_peer=1" in out and
                      "too many rejected updates" in out,
                      "hostile %s not disconnected for its strikes: %s" %
                      (mode, out))
        check("message flood" in hostiles["flood"].stdout(),
              "the flooder was not cut off: %s" % hostiles["flood"].stdout())
        out = hostiles["burst"].stdout()
        check("closed_by_peer=0" in out and "updates=%d " % BURST_UPDATES in
              out, "the bursting member did not get to send its %d updates"
              " connected: %s" % (BURST_UPDATES, out))

        pool.wait_serve(900)
        rows = pool.check_exactly_once()
        pool.check_accuracy(ACCURACY)

        for mode, reason in REJECTED.items():
            name = "hostile-" + mode
            n_upd = agent_rows(pool, name,
                               "SELECT count(*) FROM updates WHERE agent_id ="
                               " {agent} AND outcome = 'rejected' AND reason"
                               " = '%s'" % reason)[0][0]
            n_rej = agent_rows(pool, name,
                               "SELECT count(*) FROM rejections WHERE"
                               " agent_id = {agent} AND kind = '%s'" %
                               reason)[0][0]
            n_app = agent_rows(pool, name,
                               "SELECT count(*) FROM updates WHERE agent_id ="
                               " {agent} AND outcome = 'applied'")[0][0]
            log("%s: %d rejected updates (%s), %d rejection rows, %d "
                "applied" % (name, n_upd, reason, n_rej, n_app))
            check(n_upd >= STRIKES and n_rej == n_upd,
                  "%s: %d rejected '%s' updates, %d rejection rows; want >= "
                  "%d each" % (name, n_upd, reason, n_rej, STRIKES))
            if mode != "clock-behind":  # it answers clock 0 honestly
                check(n_app == 0, "%s: %d updates applied" % (name, n_app))

        burst = dict(agent_rows(pool, "hostile-burst",
                                "SELECT outcome, count(*) FROM updates WHERE"
                                " agent_id = {agent} GROUP BY outcome"))
        burst_rej = agent_rows(pool, "hostile-burst",
                               "SELECT kind, reason FROM rejections WHERE"
                               " agent_id = {agent}")
        log("hostile-burst: %r, rejections %r" % (burst, burst_rej))
        check(burst == {"applied": BURST_UPDATES},
              "updates over the rate limit not all applied: %r" % (burst,))
        check(len(burst_rej) == 1 and burst_rej[0][0] == "flood",
              "hostile-burst rejections: %r" % (burst_rej,))

        dup = agent_rows(pool, "hostile-duplicate",
                         "SELECT outcome, count(*) FROM updates WHERE"
                         " agent_id = {agent} GROUP BY outcome")
        log("hostile-duplicate: %r" % (dup,))
        dup = dict(dup)
        check(dup.get("duplicate", 0) >= 1 and
              dup.get("applied", 0) + dup.get("duplicate", 0) <= 6,
              "duplicates not discarded: %r" % (dup,))

        flood = agent_rows(pool, "hostile-flood",
                           "SELECT reason FROM rejections WHERE agent_id ="
                           " {agent} AND kind = 'flood'")
        log("hostile-flood: %r" % (flood,))
        check(len(flood) == 2 and "disconnecting" in flood[1][0],
              "flood rejections: %r" % (flood,))

        # The silent member goes by the heartbeat timeout (it sends
        # nothing) or by work_timeout, whichever comes first.
        silent = agent_rows(pool, "hostile-noread",
                            "SELECT count(*) FROM rejections WHERE agent_id"
                            " = {agent} AND kind = 'work-timeout'")[0][0]
        sid = agent_rows(pool, "hostile-noread",
                         "SELECT {agent}")[0][0]
        idle = re.search(r"agent %d \([^)]*\) left: idle timeout" % sid,
                         pool.serve_proc.stderr())
        log("silent member: %d work-timeout rows, idle timeout: %s" %
            (silent, bool(idle)))
        check(silent == 1 or idle, "the silent member was not dropped")
        honest_bad = pool.query(
            "SELECT count(*) FROM rejections WHERE agent_id IN (SELECT id"
            " FROM agents WHERE name LIKE 'honest%')")[0][0]
        check(honest_bad == 0, "%d rejections of honest agents" % honest_bad)
        total = pool.query("SELECT count(*) FROM rejections")[0][0]
        log("%d rejections in all, %d applied updates" % (total, len(rows)))


if __name__ == "__main__":
    gppool.main(test)
