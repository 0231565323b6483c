#!/usr/bin/env python3
"""4-bit updates (issue 11, [pool] update_bits = 4) with real processes:
three CPU agents train the job as test_accuracy does, each is granted
GP_CAP_Q4 (its log says its updates go as 4-bit values), every minibatch
is applied exactly once within the staleness bound, and the final test
accuracy in the ledger's evals table reaches 85 %."""
import time

import gppool
from gppool import check, log

GRANTED = "updates go as 4-bit values with error feedback"


def test():
    with gppool.Pool("q4", train={"staleness": 3,
                                  "epochs": gppool.TRAIN_EPOCHS},
                     pool={"update_bits": 4}) as pool:
        pool.serve()
        agents = pool.agents(3)
        t0 = time.monotonic()
        for a in agents:
            a.run()
        pool.wait_serve(timeout=500, agents_exit=True)
        log("%d epochs in %.1fs" % (pool.epochs, time.monotonic() - t0))
        for a in agents:
            check(GRANTED in a.proc.stderr() + a.proc.stdout(),
                  "agent %s was not granted 4-bit updates:\n%s" %
                  (a.name, a.proc.tails()))
        rows = pool.check_exactly_once()
        pool.check_staleness(rows)
        log("evals: %s" % ", ".join("%.2f%%" % (100 * a)
                                    for _, a in pool.evals()))
        pool.check_accuracy(0.85)


if __name__ == "__main__":
    gppool.main(test)
