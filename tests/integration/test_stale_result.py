#!/usr/bin/env python3
"""Work of a lost connection never goes out on the next one.

The agent's compute thread cannot stop the minibatch in hand when the
connection drops. If the agent reconnects before that step ends, the
result answers work of the old connection: its minibatch was handed out
again and its clock is the old one. Sent on the new channel, the
coordinator refuses it ("not-assigned", a strike) or, worse, applies
an update computed on parameters from before the disconnect. The agent
must drop it (its generation is not the current connection's).

One agent with 4 s steps (so a step is in hand at almost any moment): the
coordinator is killed (-9) mid-step and started again on the same port;
the agent reconnects within about a second, long before the step ends.
Then the agent must have dropped a result of the earlier connection (the
debug log says so: this proves the case happened), the new coordinator
must have refused nothing from it, and it must go on to apply updates.
"""
import os
import time

import gppool
from gppool import check, log


def test():
    with gppool.Pool("stale-result",
                     train={"staleness": 0, "epochs": 1}) as pool:
        pool.serve()
        (a,) = pool.agents(1)
        os.environ["GP_LOG"] = "debug"
        try:
            pa = a.run(delay_ms=4000)
        finally:
            del os.environ["GP_LOG"]
        pool.wait_for("agent a applies an update",
                      lambda: len(pool.applied()) >= 1, 60)
        # The ledger writes in batches: the step after the applied one is
        # well under way 1.5 s later.
        time.sleep(1.5)
        pool.serve_proc.kill9()
        restart_ms = int(time.time() * 1000)
        serve2 = pool.serve()
        pool.wait_for("agent a connects again",
                      lambda: pa.stderr().count("connected to ") >= 2, 30)
        pool.wait_for("agent a applies an update after the restart",
                      lambda: pool.query(
                          "SELECT COUNT(*) FROM updates WHERE outcome ="
                          " 'applied' AND received_at > ?",
                          (restart_ms,))[0][0] >= 1, 60)
        err2 = serve2.stderr()
        check("update rejected" not in err2,
              "the restarted coordinator refused an update:\n%s" %
              "\n".join(l for l in err2.splitlines() if "rejected" in l))
        refused = pool.query("SELECT outcome, COUNT(*) FROM updates WHERE"
                             " outcome != 'applied' AND received_at > ?"
                             " GROUP BY outcome", (restart_ms,))
        check(not refused, "updates not applied after the restart: %r"
              % (refused,))
        # The worker computes in order: the step in hand at the kill ended
        # before the one applied above.
        check("of an earlier connection" in pa.stderr(),
              "agent a dropped no result of its earlier connection: the "
              "kill did not catch a step in hand")
        log("the result of the lost connection was dropped by the agent")


if __name__ == "__main__":
    gppool.main(test)
