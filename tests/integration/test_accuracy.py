#!/usr/bin/env python3
"""The accuracy target with real processes: three CPU agents train the
job (SSP s = 3, tools/demo's settings) for EPOCHS epochs over the full
training set; every minibatch is applied exactly once, every update is
within the staleness bound, and the final test accuracy in the ledger's
evals table reaches 85 %.

Three CPU agents on a two-core machine are oversubscribed, and with the
default 16 ms clocks (grouped updates) they trade accuracy per sample for
throughput: 10 epochs ended at 85.0-86.2 % in 14 runs on the development
machine, a thin margin for a test, so the job runs longer (in about the
time 10 epochs took with one-minibatch clocks)."""
import time

import gppool
from gppool import log

EPOCHS = 15


def test():
    with gppool.Pool("accuracy", train={"staleness": 3,
                                        "epochs": EPOCHS}) as pool:
        pool.serve()
        agents = pool.agents(3)
        t0 = time.monotonic()
        for a in agents:
            a.run()
        pool.wait_serve(timeout=500, agents_exit=True)
        log("%d epochs in %.1fs" % (pool.epochs, time.monotonic() - t0))
        rows = pool.check_exactly_once()
        pool.check_staleness(rows)
        log("evals: %s" % ", ".join("%.2f%%" % (100 * a)
                                    for _, a in pool.evals()))
        pool.check_accuracy(0.85)


if __name__ == "__main__":
    gppool.main(test)
