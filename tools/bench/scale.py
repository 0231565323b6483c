"""tools/bench-scale: one coordinator against N simulated agents (see
tools/bench-scale)."""
import argparse
import json
import math
import os
import re
import signal
import subprocess
import time

import gppool
from gppool import log

PER_PROCESS = 2500   # simulated agents per gp-simagent process
# The job's [pool] heartbeat_interval, and the simulated agents' HEARTBEAT
# (the probe) by default: the reference agent sends no HEARTBEAT, only a
# PING after this long without sending; a probe every second from each
# of 10,000 agents was 10,000 extra messages a second for serve.
HEARTBEAT_MS = 5000
CLK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid, tid=None):
    """utime + stime of a running process (or of its thread tid), or
    None."""
    path = "/proc/%d/task/%d/stat" % (pid, tid) if tid else \
        "/proc/%d/stat" % pid
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError, ValueError):
        return None


def rss_mib(pid, key="VmRSS"):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def timed(pool, *args):
    """Runs a coordinator command; returns (seconds, CompletedProcess)."""
    t = time.monotonic()
    r = pool.coord(*args, expect_ok=False, timeout=120)
    return time.monotonic() - t, r


def applied_rows(pool):
    return pool.query("SELECT count(*) FROM updates WHERE outcome = "
                      "'applied'")[0][0]


def progress(proc):
    """(joined, welcomed) from the last progress line of a simulator."""
    last = None
    for line in proc.stdout().splitlines():
        if line.startswith("progress:"):
            last = line
    if not last:
        return 0, 0
    m = re.search(r"joined (\d+) of \d+, welcomed (\d+)", last)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def merged_percentile(reports, p, key="rtt_ms"):
    """The p-th percentile of the round trips (key rtt_ms; up_ms: their way
    up, to serve's echo) of all reports (each thinned sample weighs
    rtt_step)."""
    samples = []
    for r in reports:
        for v in r.get(key, []):
            samples.append((v, r.get("rtt_step", 1)))
    if not samples:
        return None
    samples.sort()
    total = sum(w for _, w in samples)
    want = p * total
    acc = 0
    for v, w in samples:
        acc += w
        if acc >= want:
            return v
    return samples[-1][0]


def run(n, args):
    """One coordinator and n simulated agents. Returns the figures."""
    storm = args.storm if args.storm is not None else min(60.0, max(5.0, n / 170.0))
    job = {
        "model": {"spec": args.model, "seed": 1},
        "train": {"epochs": 1000, "staleness": 3, "eval": "false",
                  "checkpoint_interval": "1m"},
        "pool": {"max_agents": max(64, n + 16),
                 "heartbeat_interval": "%dms" % HEARTBEAT_MS,
                 "heartbeat_timeout": "30s", "work_timeout": "2m",
                 # The simulated agents' gradients are made up:
                 # verification by recomputation would revoke them.
                 "verify_rate": "0"},
    }
    for kv in args.set:
        key, _, value = kv.partition("=")
        section, _, name = key.partition(".")
        job.setdefault(section, {})[name] = value
    with gppool.Pool("scale-%d" % n,
                     keep=bool(os.environ.get("GP_BENCH_KEEP")),
                     **job) as pool:
        serve = pool.serve(timeout=120)
        time.sleep(1.0)
        base_rss = rss_mib(serve.pid)
        token = pool.invite(uses=n)
        sims = []
        procs = (n + PER_PROCESS - 1) // PER_PROCESS
        t0 = time.monotonic()
        for k in range(procs):
            count = n // procs + (1 if k < n % procs else 0)
            report = os.path.join(pool.dir, "sim.%d.json" % k)
            # 127.(1 + k).0.1 ... : 65,536 addresses per process.
            argv = [args.sim, "--token", token, "--agents", str(count),
                    "--from", "127.%d.0.0" % (1 + k), "--storm", str(storm),
                    "--compute-ms", str(args.compute_ms),
                    "--heartbeat-ms", str(args.heartbeat_ms),
                    "--report", report, "--name", "sim%d" % k]
            if args.local_data:
                argv += ["--data", pool.job["data"]["dir"]]
            base = os.path.join(pool.dir, "sim.%d" % k)
            sims.append((gppool.Proc(argv, base + ".out", base + ".err"),
                         report))
            pool.procs.append(sims[-1][0])
        log("n=%d: %d simulator processes, storm %.0f s" % (n, procs, storm))
        join_s = None
        last_log = 0
        deadline = t0 + storm + args.join_timeout
        while time.monotonic() < deadline:
            welcomed = sum(progress(p)[1] for p, _ in sims)
            if welcomed >= n:
                join_s = time.monotonic() - t0
                break
            if not serve.running():
                raise gppool.Failure("serve exited:\n" + serve.tails())
            if time.monotonic() - last_log > 10:
                log("n=%d: %d welcomed after %.0f s" %
                    (n, welcomed, time.monotonic() - t0))
                last_log = time.monotonic()
            time.sleep(0.5)
        welcomed = sum(progress(p)[1] for p, _ in sims)
        log("n=%d: %d of %d welcomed in %s s" %
            (n, welcomed, n, "%.1f" % join_s if join_s else "(not all)"))
        joined_rss = rss_mib(serve.pid)
        # Steady work.
        for p, _ in sims:
            p.signal(signal.SIGUSR1)
        cpu0, rows0, t1 = cpu_seconds(serve.pid), applied_rows(pool), \
            time.monotonic()
        # serve's loop is its main thread (tid = pid); the rest is
        # libuv's pool (sealing, the ledger's writes, evaluations).
        loop0 = cpu_seconds(serve.pid, serve.pid)
        # The simulators' own CPU: on this machine they share the cores
        # with serve, and what they take serve cannot have.
        sim0 = sum(cpu_seconds(p.pid) or 0.0 for p, _ in sims)
        perf = None
        if args.perf:
            # Where serve's CPU goes in the steady phase (perf report -i).
            perf = subprocess.Popen(
                ["perf", "record", "-g", "-q", "-o",
                 "%s.%d" % (args.perf, n), "-p", str(serve.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(args.steady / 2)
        status_s, r = timed(pool, "status")
        if r.returncode != 0:
            raise gppool.Failure("status failed: " + r.stderr)
        agents_s, r = timed(pool, "agents", "--json")
        if r.returncode != 0:
            raise gppool.Failure("agents --json failed: " + r.stderr)
        listed = len(json.loads(r.stdout).get("agents", [])) \
            if r.stdout.strip().startswith("{") else len(json.loads(r.stdout))
        time.sleep(max(0.0, args.steady - (time.monotonic() - t1)))
        cpu1, rows1, t2 = cpu_seconds(serve.pid), applied_rows(pool), \
            time.monotonic()
        loop1 = cpu_seconds(serve.pid, serve.pid)
        sim1 = sum(cpu_seconds(p.pid) or 0.0 for p, _ in sims)
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
        rss = rss_mib(serve.pid)
        hwm = rss_mib(serve.pid, "VmHWM")
        for p, _ in sims:
            p.signal(signal.SIGTERM)
        reports = []
        for p, path in sims:
            p.wait(60)
            with open(path) as f:
                reports.append(json.load(f))
        steady = t2 - t1
        applied = rows1 - rows0
        # Serve's pacing (work.h gp_work_pace): the floor on a clock's
        # minibatches at the end and at most, from its log lines.
        floors = [int(m.group(1) or 0) for m in re.finditer(
            r"clocks hold at least (\d+) minibatches|"
            r"clocks sized by the agents again", serve.stderr())]
        updates = sum(r["steady_updates"] for r in reports)
        fig = {
            "agents": n,
            "heartbeat_probe_ms": args.heartbeat_ms,
            "local_data": args.local_data,
            "welcomed": sum(r["welcomed"] for r in reports),
            "join_s": round(join_s, 2) if join_s else None,
            "storm_s": storm,
            "heartbeat_p50_ms": merged_percentile(reports, 0.50),
            "heartbeat_p99_ms": merged_percentile(reports, 0.99),
            # The way up alone: from the simulator's send to serve's
            # echo, so serve's loop delay apart from the simulators'.
            "heartbeat_up_p50_ms": merged_percentile(reports, 0.50, "up_ms"),
            "heartbeat_up_p99_ms": merged_percentile(reports, 0.99, "up_ms"),
            "heartbeats": sum(r["heartbeats"] for r in reports),
            "updates_per_s": round(updates / steady, 1),
            "ledger_rows_per_s": round(applied / steady, 1),
            # The heartbeat tail follows the minibatches per update
            # (docs/performance.md "Scale"). Early in a job a clock's
            # runs are at most the pool's applied minibatches times the
            # agent's share (work.c run_length): the minibatches applied
            # before the steady work show whether that cap set them.
            "applied_before_steady": rows0,
            "minibatches_per_update": round(applied / updates, 2)
            if updates else None,
            "group_floor": floors[-1] if floors else 0,
            "group_floor_max": max(floors) if floors else 0,
            "pace_changes": len(floors),
            "cpu_ms_per_update": round(1e3 * (cpu1 - cpu0) / updates, 3)
            if updates else None,
            "coordinator_cpu_share": round((cpu1 - cpu0) / steady, 3),
            # Of which serve's loop thread: the one that cannot spread.
            "loop_cpu_share": round((loop1 - loop0) / steady, 3),
            # The simulated agents' CPU, all processes, in cores.
            "simulators_cpu_share": round((sim1 - sim0) / steady, 3),
            # What the loop would carry at 100 % of a core, at this mix
            # of work: a capacity derived from the measured share, not
            # a measured rate.
            "loop_bound_updates_per_s":
                round(updates / (loop1 - loop0), 1) if loop1 > loop0 else None,
            "rss_mib": round(rss, 1),
            "rss_hwm_mib": round(hwm, 1),
            "rss_base_mib": round(base_rss, 1),
            "rss_per_agent_kib": round(1024 * (joined_rss - base_rss) / n, 1),
            "status_s": round(status_s, 3),
            "agents_json_s": round(agents_s, 3),
            "agents_listed": listed,
            "refused": sum(r["steady_refused"] for r in reports),
            "join_refused": sum(r["connect_failures"] + r["rejects"]
                                for r in reports),
            "gave_up": sum(r["gave_up"] for r in reports),
        }
        log("n=%d: %s" % (n, json.dumps(fig)))
        serve.end()
        return fig


def compare(fig, n, args, env, name, what):
    """Runs the same N again with env set; fig gets the figures under
    `name` and their ratios over fig's as NAME_KEY_ratio."""
    os.environ.update(env)
    try:
        off = run(int(n), args)
    finally:
        for k in env:
            del os.environ[k]
    fig[name] = {k: off[k] for k in (
        "join_s", "updates_per_s", "ledger_rows_per_s",
        "heartbeat_p50_ms", "heartbeat_p99_ms",
        "heartbeat_up_p99_ms", "coordinator_cpu_share",
        "loop_cpu_share", "loop_bound_updates_per_s",
        "cpu_ms_per_update", "rss_mib")}
    for k in ("join_s", "updates_per_s", "ledger_rows_per_s",
              "heartbeat_p99_ms", "loop_bound_updates_per_s",
              "cpu_ms_per_update", "rss_mib"):
        fig[name + "_" + k + "_ratio"] = \
            round(off[k] / fig[k], 2) if fig[k] and off[k] else None
    log("n=%s: %s: updates/s %.1f / %.1f, rows/s %.1f / %.1f, loop-bound "
        "updates/s %.1f / %.1f, heartbeat p99 %.0f / %.0f ms, join "
        "%s / %s s, RSS %.0f / %.0f MiB" % (
            n, what, off["updates_per_s"], fig["updates_per_s"],
            off["ledger_rows_per_s"], fig["ledger_rows_per_s"],
            off["loop_bound_updates_per_s"] or 0,
            fig["loop_bound_updates_per_s"] or 0,
            off["heartbeat_p99_ms"] or 0, fig["heartbeat_p99_ms"] or 0,
            off["join_s"], fig["join_s"], off["rss_mib"], fig["rss_mib"]))


def main():
    ap = argparse.ArgumentParser(prog="tools/bench-scale")
    ap.add_argument("--agents", default="100,1000,10000",
                    help="comma-separated N (default 100,1000,10000)")
    ap.add_argument("--storm", type=float, default=None,
                    help="seconds over which the N agents start "
                    "(default N/170, 5 to 60)")
    ap.add_argument("--steady", type=float, default=20.0,
                    help="seconds of steady work measured (default 20)")
    ap.add_argument("--join-timeout", type=float, default=120.0,
                    help="seconds after the storm for every agent to join")
    ap.add_argument("--compute-ms", type=int, default=20,
                    help="a simulated minibatch's compute time (default 20)")
    ap.add_argument("--heartbeat-ms", type=int, default=HEARTBEAT_MS,
                    help="each simulated agent's HEARTBEAT probe (default "
                    "%d: the job's heartbeat interval)" % HEARTBEAT_MS)
    ap.add_argument("--model", default="784-32-10")
    ap.add_argument("--local-data", dest="local_data", action="store_true",
                    default=True,
                    help="every simulated agent holds the training set, as "
                    "the reference agent does (its copy or the pool's "
                    "shards), so minibatches carry indices (the default)")
    ap.add_argument("--pixels", dest="local_data", action="store_false",
                    help="the simulated agents hold no training set: "
                    "minibatches carry their pixels (a client without "
                    "GP_CAP_LOCAL_DATA or GP_CAP_DATA_SHARDS)")
    ap.add_argument("--compare-offload", action="store_true",
                    help="run each N twice: serve as shipped (handshakes "
                    "on its loop), then with GP_SERVE_OFFLOAD=1 (on "
                    "libuv's thread pool), and print the ratios")
    ap.add_argument("--compare-cores", action="store_true",
                    help="run each N twice: serve on its loop thread alone "
                    "(GP_SERVE_THREADS=0, GP_SERVE_OFFLOAD=0), then with "
                    "every core (GP_SERVE_OFFLOAD=1 and the default apply "
                    "threads), and print the ratios")
    ap.add_argument("--perf", metavar="FILE",
                    help="record serve with perf during the steady work "
                    "into FILE.N")
    ap.add_argument("--set", action="append", default=[],
                    metavar="SECTION.KEY=VALUE",
                    help="a job key for the coordinator, e.g. "
                    "pool.robust_clip=0 (repeatable)")
    args = ap.parse_args()
    args.sim = os.path.join(os.environ["GP_BUILD_DIR"], "tools",
                            "gp-simagent")
    by_n = []
    for n in args.agents.split(","):
        if args.compare_cores:
            # The loop alone first: no helper threads, nothing offloaded.
            os.environ["GP_SERVE_THREADS"] = "0"
            os.environ["GP_SERVE_OFFLOAD"] = "0"
            try:
                fig = run(int(n), args)
            finally:
                del os.environ["GP_SERVE_THREADS"]
                del os.environ["GP_SERVE_OFFLOAD"]
            compare(fig, n, args, {"GP_SERVE_OFFLOAD": "1"}, "cores",
                    "every core over the loop alone")
        else:
            fig = run(int(n), args)
        if args.compare_offload:
            # Serve as shipped (above: handshakes on its loop), then
            # the same pool with them on libuv's threads.
            compare(fig, n, args, {"GP_SERVE_OFFLOAD": "1"}, "offloaded",
                    "offloaded over on the loop")
        by_n.append(fig)
    print("%-7s %7s %8s %8s %8s %9s %9s %8s %8s %7s" %
          ("agents", "join s", "hb p50", "hb p99", "up p99", "updates/s",
           "rows/s", "RSS MiB", "status s", "refused"))
    for f in by_n:
        print("%-7d %7s %8s %8s %8s %9s %9s %8s %8s %7d" %
              (f["agents"], f["join_s"], f["heartbeat_p50_ms"],
               f["heartbeat_p99_ms"], f["heartbeat_up_p99_ms"],
               f["updates_per_s"],
               f["ledger_rows_per_s"], f["rss_mib"], f["status_s"],
               f["refused"]))
    last = dict(by_n[-1])
    last["by_n"] = by_n
    print(json.dumps(last))


if __name__ == "__main__":
    main()
