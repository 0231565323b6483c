#!/usr/bin/env python3
"""Overlap (issue 11, item 4; [pool] overlap, on by default): two CPU agents
take local AdamW steps (`[train] optimizer = adamw`, `inner_optimizer =
adamw`), each is granted GP_CAP_OVERLAP (its log says so) and computes its
next run while the last one's update and the pull after it are on the
wire: at least one pull comes under work in hand and holds a run of its
(its log says so), none names a run whose copy it no longer keeps, every minibatch is applied exactly once within the
staleness bound, and the final test accuracy in the ledger's evals table
reaches 85 %."""
import gppool
from gppool import check

GRANTED = "the next run is computed while the last one's update"
UNDER = "parameters came under the work in hand"
LOST = "whose copy is no longer kept"


def test():
    with gppool.Pool("overlap", train={"staleness": 3, "epochs": 6,
                                       "optimizer": "adamw",
                                       "inner_optimizer": "adamw",
                                       "learning_rate": 0.002}) as pool:
        pool.serve()
        agents = pool.agents(2)
        pool.train(agents, timeout=500)
        for a in agents:
            out = a.proc.stderr() + a.proc.stdout()
            check(GRANTED in out, "agent %s was not granted overlap:\n%s" %
                  (a.name, a.proc.tails()))
            check(UNDER in out,
                  "agent %s took no parameters under its work:\n%s" %
                  (a.name, a.proc.tails()))
            check(LOST not in out,
                  "agent %s got parameters for a run it no longer "
                  "kept:\n%s" % (a.name, a.proc.tails()))
        pool.check_trained(0.85)


if __name__ == "__main__":
    gppool.main(test)
