"""tools/bench-attack: the pool with one member of four attacking, per
attack mode of tests/fault/hostile-agent.c, and the clean pool, in one run
(see tools/bench-attack)."""
import argparse
import json
import os
import re
import time

import gppool
from gppool import log
from test_hostile_members import hostile_bin, start_hostile

MODES = ["sign-flip", "scaled", "little", "noise", "stale", "label-flip",
         "zeros", "collude"]
TARGET = 85.0  # --target


def cpu_seconds(pid):
    """utime + stime of a running process, or None."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def time_to_target(out, target):
    """Seconds of the first "eval at T s ... X%" at >= target, or None."""
    for line in out.splitlines():
        m = re.match(r"^eval at ([0-9.]+) s.* ([0-9.]+)%$", line)
        if m and float(m.group(2)) >= target:
            return float(m.group(1))
    return None


def samples_to_target(out, target):
    """Samples applied at the first evaluation at >= target, or None: what
    the pool computed to get there, whatever the machine's load did to
    the wall time (one run per mode on a shared machine)."""
    for line in out.splitlines():
        m = re.match(r"^eval at [0-9.]+ s\s+(\d+) samples.* ([0-9.]+)%$",
                     line)
        if m and float(m.group(2)) >= target:
            return int(m.group(1))
    return None


VERIFY_RE = (r"verification: (\d+) clock\(s\) picked, (\d+) update\(s\) "
             r"(?:recomputed|checked): (\d+) verified, (\d+) mismatched, "
             r"(\d+) skipped; "
             r"(\d+) minibatch\(es\) rolled back \((\d+) not redone\), "
             r"(\d+) member\(s\) revoked; largest passing residual "
             r"([0-9.]+) of its allowance; ([0-9.]+) s CPU"
             r"(?: \(([0-9.]+) s recomputing\))?")

# The end of that line: checks handed to members (verify-delegate.c).
DELEGATE_RE = (r"(\d+) handed to members: (\d+) given back, (\d+) "
               r"audited, (\d+) disagreed, (\d+) answered wrong")


def verify_detection(err, first_clock, ids):
    """Clocks of the attacker (agent ids `ids`), counted from its first
    one (1 = its first), until its first update found wrong by
    verification (serve's "does not match" warning); None if none was."""
    for line in err.splitlines():
        m = re.search(r"agent (\d+): update of clock (\d+) does not match",
                      line)
        if m and int(m.group(1)) in ids and first_clock is not None:
            return int(m.group(2)) - first_clock + 1
    return None


def damping_clocks(rows):
    """rows: the attacker's applied updates (clock, reason) in log order.
    The clocks, counted from its first, until the rest of its updates are
    at least 90 % damped; None when they never are."""
    if not rows:
        return None
    damped = [r.startswith("damped") for _, r in rows]
    left = sum(damped)
    for i, (clock, _) in enumerate(rows):
        if left >= 0.9 * (len(rows) - i):
            return clock - rows[0][0]
        left -= damped[i]
    return None


def run(mode, args, robust=True):
    """One pool: 4 members, `mode` in one of them (two for collude), or
    none for mode None. Returns a dict of figures."""
    attackers = 0 if mode is None else 2 if mode == "collude" else 1
    pool_keys = {"robust_clip": args.robust_clip if robust else 0,
                 "verify_rate": args.verify_rate,
                 "verify_delegate": "false" if args.no_delegate else "true"}
    train = {"epochs": args.epochs, "eval_every": args.eval_every,
             "checkpoint_interval": "1m"}
    name = "attack-%s%s" % (mode or "clean", "" if robust else "-off")
    with gppool.Pool(name, keep=args.keep, train=train,
                     pool=pool_keys) as pool:
        serve = pool.serve()
        honest = pool.agents(4 - attackers, prefix="honest")
        hostile = []
        token = pool.invite(uses=attackers) if attackers else None
        for a in honest:
            a.run()
        if attackers:
            # The attackers join a pool at work, as a minority: alone at
            # the start they would be the whole pool (robust.h).
            pool.wait_for("honest updates", lambda: pool.query(
                "SELECT count(*) FROM updates WHERE outcome = 'applied'")
                [0][0] >= 8, 120)
            for i in range(attackers):
                hostile.append(start_hostile(
                    pool, mode, token, "--timeout-ms", "3600000",
                    "--seed", "7"))
        cpu = None
        deadline = time.monotonic() + args.timeout
        while serve.running() and time.monotonic() < deadline:
            c = cpu_seconds(serve.pid)
            cpu = c if c is not None else cpu
            time.sleep(0.2)
        pool.wait_serve(max(1, deadline - time.monotonic()))
        for p in hostile:
            p.wait(10)
        out = serve.stdout()
        err = serve.stderr()
        res = {"mode": mode or "clean", "robust": robust,
               "time_to_85_s": time_to_target(out, args.target),
               "time_to_80_s": time_to_target(out, 80.0),
               "samples_to_85": samples_to_target(out, args.target),
               "final_accuracy": round(pool.final_accuracy(), 4)}
        m = re.search(r"robust aggregation: (\d+) of (\d+) update\(s\) "
                      r"damped, ([0-9.]+) s CPU", err)
        res["robust_cpu_s"] = float(m.group(3)) if m else 0.0
        res["damped"] = int(m.group(1)) if m else 0
        m = re.search(VERIFY_RE, err)
        res["verify_cpu_s"] = float(m.group(10)) if m else 0.0
        res["verified"] = int(m.group(3)) if m else 0
        res["mismatched"] = int(m.group(4)) if m else 0
        res["verify_skipped"] = int(m.group(5)) if m else 0
        res["rolled_back"] = int(m.group(6)) if m else 0
        res["worst_honest_residual"] = float(m.group(9)) if m else None
        res["verify_recompute_s"] = (float(m.group(11)) if m and
                                     m.group(11) else 0.0)
        m = re.search(DELEGATE_RE, err)
        for i, k in enumerate(("delegated", "delegate_given_back",
                               "audited", "disagreed", "checker_wrong")):
            res[k] = int(m.group(i + 1)) if m else 0
        m = re.search(r"(\d+) take-back\(s\) of part of the effect", err)
        res["taken_in_part"] = int(m.group(1)) if m else 0
        # serve's own count at the job's end (every thread, to the last
        # evaluation) over the samples above, which stop up to 0.2 s
        # before it exits.
        m = re.search(r"coordinator: ([0-9.]+) s CPU since it started", err)
        res["serve_cpu_s"] = float(m.group(1)) if m else cpu
        cpu = res["serve_cpu_s"]
        res["robust_cpu_share"] = (round(res["robust_cpu_s"] / cpu, 4)
                                   if cpu else None)
        res["verify_cpu_share"] = (round(res["verify_cpu_s"] / cpu, 4)
                                   if cpu else None)
        ids = {a.agent_id() for a in honest}
        qs = ",".join("?" * len(ids))
        # Struck (any rejection, mismatches included) or revoked.
        res["honest_struck"] = pool.query(
            "SELECT count(*) FROM rejections WHERE agent_id IN (%s)" % qs,
            tuple(ids))[0][0] + pool.query(
            "SELECT count(*) FROM agents WHERE revoked_at AND id IN (%s)" %
            qs, tuple(ids))[0][0]
        rows = pool.query(
            "SELECT count(*), sum(reason LIKE 'damped%%') FROM updates WHERE"
            " outcome = 'applied' AND agent_id IN (%s)" % qs, tuple(ids))[0]
        res["honest_damped_share"] = round((rows[1] or 0) / max(rows[0], 1),
                                           4)
        if attackers:
            bad = pool.query(
                "SELECT clock, reason FROM updates WHERE outcome = 'applied'"
                " AND agent_id IN (SELECT id FROM agents WHERE name LIKE"
                " 'hostile-%%') ORDER BY id")
            res["attacker_updates"] = len(bad)
            res["attacker_damped_share"] = round(
                sum(r.startswith("damped") for _, r in bad) /
                max(len(bad), 1), 4)
            res["damping_clocks"] = damping_clocks(bad)
            hid = {r[0] for r in pool.query(
                "SELECT id FROM agents WHERE name LIKE 'hostile-%'")}
            first = pool.query(
                "SELECT min(clock) FROM updates WHERE agent_id IN (SELECT id"
                " FROM agents WHERE name LIKE 'hostile-%%')")[0][0]
            res["detection_clocks"] = verify_detection(err, first, hid)
        log("%s: %r" % (name, res))
        return res


def median(values):
    """The median of values, None (never reached) counting as the
    largest; None when the median itself is None or there are none."""
    if not values:
        return None
    big = float("inf")
    v = sorted(big if x is None else x for x in values)
    n = len(v)
    m = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return None if m == big else m


def per_run(runs, key):
    """key of every run by mode ("-off": robust aggregation off): the
    value, or with several rounds the list of them, round by round."""
    out = {}
    for r in runs:
        out.setdefault(r["mode"] + ("" if r["robust"] else "-off"),
                       []).append(r.get(key))
    return {m: v if len(v) > 1 else v[0] for m, v in out.items()}


def worst(values, ref):
    """The largest of values over ref, None when one of them (or ref) is
    missing: a mode that never got there."""
    ratios = [None if v is None or not ref else v / ref for v in values]
    return None if None in ratios or not ratios else round(max(ratios), 3)


def round_worst(runs, k):
    """Round k's worst time to the target over its own clean pool's, as
    one round alone would report it (None: a mode never got there)."""
    mine = [r for r in runs if r["round"] == k and r["robust"]]
    clean = next((r["time_to_85_s"] for r in mine if r["mode"] == "clean"),
                 None)
    return worst([r["time_to_85_s"] for r in mine if r["mode"] != "clean"],
                 clean)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", default=",".join(MODES))
    # 8: the clean pool of 6 epochs ends within half a point of 85 % and
    # below it in about a quarter of the runs (docs/performance.md
    # "Probation"), which leaves the reference time itself to chance.
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--target", type=float, default=TARGET,
                    help="test accuracy (%%) for time_to_85_s")
    ap.add_argument("--eval-every", type=int, default=60)
    ap.add_argument("--robust-clip", type=float, default=2)
    ap.add_argument("--verify-rate", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--keep", action="store_true",
                    help="keep each pool's directory (ledger, logs)")
    ap.add_argument("--no-delegate", action="store_true",
                    help="[pool] verify_delegate = false: the coordinator "
                    "recomputes every check itself")
    ap.add_argument("--no-off", action="store_true",
                    help="skip the runs with robust aggregation off")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of the clean pool and every mode, "
                    "interleaved; times compared as medians")
    a = ap.parse_args()
    modes = [m for m in a.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            raise gppool.Failure("unknown mode %r (modes: %s)" %
                                 (m, ", ".join(MODES)))
    hostile_bin()
    rounds = max(1, a.repeat)
    runs = []
    for k in range(rounds):
        batch = [run(None, a)]
        if not a.no_off:
            batch.append(run(None, a, robust=False))
        for m in modes:
            batch.append(run(m, a))
        if not a.no_off:
            for m in ("sign-flip", "label-flip"):
                if m in modes:
                    batch.append(run(m, a, robust=False))
        for r in batch:
            r["round"] = k
        runs += batch
    # With several rounds the slowdown of a mode is the median of its
    # times over the median of the clean pool's (a run that never got
    # there counts as the slowest): one round's clean pool was 2.3 s
    # where the others' were 3.2-4.0 s, and every mode of that round
    # looked 1.24-1.57x slower.
    clean_runs = [r for r in runs if r["mode"] == "clean" and r["robust"]]
    clean = median([r["time_to_85_s"] for r in clean_runs])
    clean_samples = median([r["samples_to_85"] for r in clean_runs])
    print("%-5s %-12s %-6s %9s %8s %9s %8s %8s %9s %9s" %
          ("round", "mode", "robust", "t85 (s)", "x clean", "t80 (s)",
           "final", "damped", "detected", "rolled"))
    for r in runs:
        t = r["time_to_85_s"]
        t80 = r["time_to_80_s"]
        print("%-5d %-12s %-6s %9s %8s %9s %8.4f %8s %9s %9s" %
              (r["round"], r["mode"], "on" if r["robust"] else "off",
               "never" if t is None else "%.1f" % t,
               "-" if t is None or not clean else "%.2f" % (t / clean),
               "never" if t80 is None else "%.1f" % t80,
               r["final_accuracy"], r.get("attacker_damped_share", "-"),
               r.get("detection_clocks", "-"), r["rolled_back"]))
    on = [r for r in runs if r["robust"]]
    attacks = [r for r in on if r["mode"] != "clean"]
    by_mode = {}
    for r in attacks:
        by_mode.setdefault(r["mode"], []).append(r)
    med_t = {m: median([r["time_to_85_s"] for r in rs])
             for m, rs in by_mode.items()}
    med_s = {m: median([r["samples_to_85"] for r in rs])
             for m, rs in by_mode.items()}
    cpu = sum(r["robust_cpu_s"] + r["verify_cpu_s"] for r in on)
    serve_cpu = sum(r["serve_cpu_s"] or 0 for r in on)
    summary = {
        "clean_time_to_85_s": clean,
        "clean_robust_off_time_to_85_s": next(
            (r["time_to_85_s"] for r in runs
             if r["mode"] == "clean" and not r["robust"]), None),
        "time_to_85_s": med_t,
        "repeat": rounds,
        "time_to_85_s_runs": {m: [r["time_to_85_s"] for r in rs]
                              for m, rs in dict(
                                  by_mode, clean=clean_runs).items()},
        "worst_slowdown_per_round": [
            round_worst(runs, k) for k in range(rounds)],
        "time_to_85_s_robust_off": {r["mode"]: r["time_to_85_s"]
                                    for r in runs if not r["robust"]},
        "time_to_80_s": per_run(runs, "time_to_80_s"),
        "final_accuracy": per_run(runs, "final_accuracy"),
        "target": a.target,
        "worst_slowdown": worst(med_t.values(), clean),
        "samples_to_85": dict(med_s, clean=clean_samples),
        "worst_samples_slowdown": worst(med_s.values(), clean_samples),
        "never_reached": [r["mode"] for r in attacks
                          if r["time_to_85_s"] is None],
        "detection_clocks": per_run(attacks, "detection_clocks"),
        "attacker_damped_share": per_run(attacks, "attacker_damped_share"),
        "honest_banned": sum(r["honest_struck"] for r in on),
        "damping_clocks": per_run(attacks, "damping_clocks"),
        "verify_rate": a.verify_rate,
        "verify_delegate": not a.no_delegate,
        "checks_delegated": sum(r["delegated"] for r in runs),
        "checks_audited": sum(r["audited"] for r in runs),
        "checks_disagreed": sum(r["disagreed"] for r in runs),
        "checks_given_back": sum(r["delegate_given_back"] for r in runs),
        "take_backs_in_part": sum(r["taken_in_part"] for r in runs),
        "verify_recompute_share": round(
            sum(r["verify_recompute_s"] for r in on) / serve_cpu, 4)
        if serve_cpu else None,
        "verify_cpu_share": round(sum(r["verify_cpu_s"] for r in on) /
                                  serve_cpu, 4) if serve_cpu else None,
        "robust_cpu_share": round(sum(r["robust_cpu_s"] for r in on) /
                                  serve_cpu, 4) if serve_cpu else None,
        "worst_honest_residual": max((r["worst_honest_residual"] or 0)
                                     for r in runs),
        "verified": sum(r["verified"] for r in runs),
        "honest_banned_robust_off": sum(r["honest_struck"] for r in runs
                                        if not r["robust"]),
        "honest_damped_share": max(r["honest_damped_share"] for r in on),
        "coordinator_cpu_share": round(cpu / serve_cpu, 4) if serve_cpu
        else None,
        "epochs": a.epochs, "robust_clip": a.robust_clip,
    }
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    gppool.main(main)
