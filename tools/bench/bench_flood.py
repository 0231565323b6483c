"""tools/bench-flood: heartbeat round trips and coordinator memory with
and without a connection flood, in one run (see tools/bench-flood)."""
import argparse
import json

import gppool
from flood import Flood, raise_nofile, run_phase
from test_hostile_members import hostile_bin


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--half-open", type=int, default=100)
    ap.add_argument("--garbage", type=int, default=20)
    a = ap.parse_args()
    raise_nofile()
    res = {}
    with gppool.Pool("bench-flood") as pool:
        pool.serve()
        token = pool.invite(uses=4)
        probe, st, _, out = run_phase(pool, hostile_bin(), token, a.seconds)
        if not probe:
            raise gppool.Failure("baseline probe failed: %s" % out)
        res["baseline"] = dict(probe, rss_kib=st["VmRSS"],
                               hwm_kib=st["VmHWM"])
        flood = Flood(pool.port, idle=a.idle, half_open=a.half_open,
                      garbage=a.garbage)
        probe, st, stats, out = run_phase(pool, hostile_bin(), token,
                                          a.seconds, flood=flood,
                                          noread=True)
        if not probe:
            raise gppool.Failure("flood probe failed: %s" % out)
        res["flood"] = dict(probe, rss_kib=st["VmRSS"], hwm_kib=st["VmHWM"],
                            **stats)
    b, f = res["baseline"], res["flood"]
    res["p99_ratio"] = round(f["p99_us"] / max(b["p99_us"], 1), 2)
    res["hwm_ratio"] = round(f["hwm_kib"] / max(b["hwm_kib"], 1), 2)
    for name in ("baseline", "flood"):
        r = res[name]
        print("%-8s heartbeat p50 %6.2f ms  p99 %6.2f ms  max %6.2f ms  "
              "(%d samples)  serve RSS %d MiB, peak %d MiB" %
              (name, r["p50_us"] / 1e3, r["p99_us"] / 1e3, r["max_us"] / 1e3,
               r["samples"], r["rss_kib"] // 1024, r["hwm_kib"] // 1024))
    print("flood: %d connections (%d idle, %d half-open, %d garbage "
          "senders, %d reconnects), %d closed by the coordinator, %.1f MiB "
          "of garbage sent" %
          (f["connects"], a.idle, a.half_open, a.garbage,
           f["garbage_reconnects"], f["closed_by_peer"],
           f["garbage_bytes"] / 2**20))
    print("p99 ratio %.2f, peak memory ratio %.2f" %
          (res["p99_ratio"], res["hwm_ratio"]))
    print(json.dumps(res, sort_keys=True))


if __name__ == "__main__":
    gppool.main(main)
