#!/usr/bin/env python3
"""The accuracy target with real processes: three CPU agents train the
job (SSP s = 3, tools/demo's settings) for gppool.TRAIN_EPOCHS epochs over
the full training set; every minibatch is applied exactly once, every
update is within the staleness bound, and the final test accuracy in the
ledger's evals table reaches 85 %."""
import gppool


def test():
    with gppool.Pool("accuracy", train={"staleness": 3,
                                        "epochs": gppool.TRAIN_EPOCHS}) as pool:
        pool.serve()
        pool.train(pool.agents(3), timeout=500)
        pool.check_trained(0.85)


if __name__ == "__main__":
    gppool.main(test)
