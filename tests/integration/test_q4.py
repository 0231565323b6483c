#!/usr/bin/env python3
"""4-bit updates and parameter changes (issue 11, [pool] update_bits = 4,
param_bits = 4) with real processes: three CPU agents train the job as
test_accuracy does, each is granted GP_CAP_Q4 (its log says its updates go
as 4-bit values) and GP_CAP_Q4_DELTA (its log says parameter changes come
as 4-bit values), every minibatch is applied exactly once within the
staleness bound, and the final test accuracy in the ledger's evals table
reaches 85 %. On loopback the links are measured fast, so the parameters
come whole (downlink.h), but for the first pull: with first_pull_changes
(on by default; set here all the same) each agent (GP_CAP_ZERO_MIRROR)
gets its first parameters as 4-bit changes against zeros, which its log
says, and trains from them all the same (verification off: a pick goes
whole). The 4-bit changes of later pulls cross shaped links in
wan-netns-q4 (test-wan-netns.sh with GP_WAN_BITS=4)."""
import gppool
from gppool import check

GRANTED = "updates go as 4-bit values with error feedback"
GRANTED_DOWN = "parameter changes come as 4-bit values"
FIRST_CHANGES = "parameters now come as q4 changes"


def test():
    with gppool.Pool("q4", train={"staleness": 3,
                                  "epochs": gppool.TRAIN_EPOCHS},
                     pool={"update_bits": 4, "param_bits": 4,
                           "first_pull_changes": "true",
                           # A clock picked for verification goes with a
                           # whole f16 pull, a newcomer's first most
                           # likely (probation): seen to take one agent's
                           # first pull here.
                           "verify_rate": 0}) as pool:
        pool.serve()
        agents = pool.agents(3)
        pool.train(agents, timeout=500)
        for a in agents:
            out = a.proc.stderr() + a.proc.stdout()
            check(GRANTED in out,
                  "agent %s was not granted 4-bit updates:\n%s" %
                  (a.name, a.proc.tails()))
            check(GRANTED_DOWN in out,
                  "agent %s was not granted 4-bit parameter changes:\n%s" %
                  (a.name, a.proc.tails()))
            check(FIRST_CHANGES in out,
                  "agent %s did not get its first pull as changes:\n%s" %
                  (a.name, a.proc.tails()))
        pool.check_trained(0.85)


if __name__ == "__main__":
    gppool.main(test)
