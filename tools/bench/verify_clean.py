"""tools/verify-clean: the integration test's pool (tests/integration/
test_accuracy.py: three CPU agents, staleness 3) run again and again with
verification on, counting false positives (see tools/verify-clean)."""
import argparse
import json
import re

import gppool
from gppool import log
from bench_attack import DELEGATE_RE, VERIFY_RE


def run(i, args):
    train = {"staleness": 3, "epochs": args.epochs}
    with gppool.Pool("verify-clean-%d" % i, keep=args.keep, train=train,
                     pool={"verify_rate": args.verify_rate}) as pool:
        serve = pool.serve()
        agents = pool.agents(args.agents)
        for a in agents:
            a.run()
        pool.wait_serve(timeout=args.timeout, agents_exit=True)
        err = serve.stderr()
        m = re.search(VERIFY_RE, err)
        d = re.search(DELEGATE_RE, err)
        ids = tuple(a.agent_id() for a in agents)
        qs = ",".join("?" * len(ids))
        res = {
            "run": i,
            "picked": int(m.group(1)) if m else 0,
            "verified": int(m.group(3)) if m else 0,
            "mismatched": int(m.group(4)) if m else 0,
            "skipped": int(m.group(5)) if m else 0,
            "worst_residual": float(m.group(9)) if m else None,
            "verify_cpu_s": float(m.group(10)) if m else 0.0,
            "delegated": int(d.group(1)) if d else 0,
            "disagreed": int(d.group(4)) if d else 0,
            "checker_wrong": int(d.group(5)) if d else 0,
            "struck": pool.query("SELECT count(*) FROM rejections WHERE"
                                 " agent_id IN (%s)" % qs, ids)[0][0],
            "revoked": pool.query("SELECT count(*) FROM agents WHERE"
                                  " revoked_at AND id IN (%s)" % qs,
                                  ids)[0][0],
            "final_accuracy": round(pool.final_accuracy(), 4),
        }
        log("run %d: %r" % (i, res))
        return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=gppool.TRAIN_EPOCHS)
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--verify-rate", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    runs = [run(i, a) for i in range(a.runs)]
    print(json.dumps({
        "runs": len(runs), "epochs": a.epochs, "agents": a.agents,
        "verify_rate": a.verify_rate,
        "picked": sum(r["picked"] for r in runs),
        "verified": sum(r["verified"] for r in runs),
        "skipped": sum(r["skipped"] for r in runs),
        "delegated": sum(r["delegated"] for r in runs),
        "disagreed": sum(r["disagreed"] for r in runs),
        "checker_wrong": sum(r["checker_wrong"] for r in runs),
        "honest_mismatched": sum(r["mismatched"] for r in runs),
        "honest_struck": sum(r["struck"] for r in runs),
        "honest_revoked": sum(r["revoked"] for r in runs),
        "runs_with_false_positive": sum(
            1 for r in runs if r["mismatched"] or r["struck"] or
            r["revoked"] or r["checker_wrong"]),
        "worst_residual": max((r["worst_residual"] or 0) for r in runs),
        "min_final_accuracy": min(r["final_accuracy"] for r in runs),
    }, sort_keys=True))


if __name__ == "__main__":
    gppool.main(main)
