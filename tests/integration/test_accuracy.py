#!/usr/bin/env python3
"""The accuracy target with real processes: three CPU agents train the
job (SSP s = 3, tools/demo's settings) for gppool.TRAIN_EPOCHS epochs over
the full training set; every minibatch is applied exactly once, every
update is within the staleness bound, and the final test accuracy in the
ledger's evals table reaches 85 %."""
import time

import gppool
from gppool import log


def test():
    with gppool.Pool("accuracy", train={"staleness": 3,
                                        "epochs": gppool.TRAIN_EPOCHS}) as pool:
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
