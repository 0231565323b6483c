#!/usr/bin/env python3
"""A compute error on one agent does not stall the pool.

An agent whose device fails a step (a transient OpenCL error such as
CL_OUT_OF_RESOURCES) cannot answer the minibatches it was given. If it
stayed connected and silent, the coordinator would hold its SSP clock open
until the work timeout, and under BSP every other agent would wait with it.
The agent must drop the connection at once, with the reason as the close
text, so that the coordinator puts its minibatches back in the queue; then
it reconnects (a fresh compute device) and goes on working.

Agent a runs with --test-fail-step (its 20th minibatch fails, once). The
work timeout is 600 s: the coordinator must report a's work back in the
queue within 60 s of the start, which only the agent's own close can do.
Then a must connect again and apply updates, and the job must end with
every minibatch applied exactly once.
"""
import re
import time

import gppool
from gppool import check, log

FAIL_STEP = 20


def test():
    with gppool.Pool("compute-error",
                     train={"staleness": 0, "epochs": 1},
                     pool={"work_timeout": "600s"}) as pool:
        pool.serve()
        a, b = pool.agents(2)
        pa = a.run(extra=["--test-fail-step", str(FAIL_STEP)])
        b.run()
        pool.wait_for("agent a joined", lambda: pool.query(
            "SELECT COUNT(*) FROM agents WHERE name = ?", (a.name,))[0][0]
            == 1, 60)
        a_id = a.agent_id()
        back = re.compile(r"agent %d \([^)]*\) left: [^\n]*computing "
                          r"minibatch \d+ of epoch \d+ failed: [^\n]*"
                          r"back in the queue" % a_id)
        pool.wait_for("the coordinator puts agent a's work back in the "
                      "queue", lambda: back.search(pool.serve_proc.stderr()),
                      60)
        dropped_ms = int(time.time() * 1000)
        err = pa.stderr()
        check("dropping the connection" in err,
              "agent a did not say why it dropped the connection:\n%s" % err)
        log("agent a dropped its connection after the failed step")
        pool.wait_for("agent a connects again",
                      lambda: pa.stderr().count("connected to ") >= 2, 60)
        check("starting the compute device again" in pa.stderr(),
              "agent a did not restart its compute device")
        pool.wait_serve(timeout=300)
        pool.check_exactly_once()
        later_a = pool.query(
            "SELECT COUNT(*) FROM updates WHERE job_id = ? AND agent_id = ?"
            " AND outcome = 'applied' AND received_at > ?",
            (pool.job_id(), a_id, dropped_ms))[0][0]
        check(later_a > 0, "agent a applied nothing after it reconnected")
        log("agent a applied %d updates after it reconnected" % later_a)


if __name__ == "__main__":
    gppool.main(test)
