"""Plausible but wrong updates from the real hostile member
(tests/fault/hostile-agent.c attack modes), against robust aggregation:
three honest agents train while a fourth member, joining a pool at work,
sends its real gradients sign-flipped (argv[1] picks another mode).
Asserted: the attacker's updates are applied but mostly damped ("damped W"
in the ledger's reason), the honest agents' rarely, no honest agent is
struck, every minibatch is applied exactly once, and the run reaches the
fault suite's accuracy target."""
import sys

import gppool
from gppool import check, log
from test_hostile_members import ACCURACY, join_at_work


def test(mode="sign-flip"):
    # Robust aggregation alone: verification would revoke the attacker
    # (test_hostile_verify.py). 5 epochs: with 3, 3 of 38 runs ended
    # at 79.0-80.0 % after a first epoch wrecked early (one such job
    # went in 26 agent clocks of some 50 minibatches each); 5: 22 of 22
    # ended at 85.2-85.9 % (docs/performance.md).
    with gppool.Pool("hostile-%s" % mode, train={"epochs": 5},
                     pool={"verify_rate": 0}) as pool:
        honest, hostile = join_at_work(pool, mode)
        pool.wait_serve(900)
        rc = hostile.wait(30)
        log("hostile %s: rc %s: %s" % (mode, rc, hostile.stdout().strip()))
        check(rc == 0, "hostile %s exited %s" % (mode, rc))
        pool.check_exactly_once()
        ids = tuple(a.agent_id() for a in honest)
        rows = pool.query(
            "SELECT agent_id IN (?, ?, ?), count(*), sum(reason LIKE"
            " 'damped%') FROM updates WHERE outcome = 'applied' GROUP BY 1",
            ids)
        got = {bool(h): (n, d) for h, n, d in rows}
        log("applied, damped: honest %r, hostile %r" %
            (got.get(True), got.get(False)))
        n, d = got.get(False, (0, 0))
        check(n >= 10, "the hostile member applied %d updates" % n)
        check(d >= 0.5 * n, "only %d of the hostile member's %d updates "
              "were damped" % (d, n))
        n, d = got[True]
        check(d <= 0.25 * n, "%d of the honest agents' %d updates were "
              "damped" % (d, n))
        struck = pool.query("SELECT count(*) FROM rejections WHERE agent_id"
                            " IN (?, ?, ?)", ids)[0][0]
        check(struck == 0, "%d rejections of honest agents" % struck)
        pool.check_accuracy(ACCURACY)


if __name__ == "__main__":
    gppool.main(lambda: test(*sys.argv[1:]))
