"""Verification by recomputation (coordinator/verify.c) against the real
hostile member (tests/fault/hostile-agent.c): three honest agents train
while a fourth member, joining a pool at work, sends its real gradients
sign-flipped (argv[1] picks another mode), at the default verify_rate.
Asserted: the coordinator finds its updates wrong (agent_trust.mismatched)
and revokes it after verify_bans mismatches; every one of its applied
updates is marked rolled back with a nonzero mark; the honest agents are
never mismatched, struck or revoked; every minibatch counts
exactly once (the rolled-back ones were redone); the run reaches the fault
suite's accuracy target."""
import sys

import gppool
from gppool import check, log
from test_hostile_members import ACCURACY, start_hostile


def trust(pool, agent_id):
    rows = pool.query("SELECT verified, mismatched, rolled_back FROM"
                      " agent_trust WHERE agent_id = ?", (agent_id,))
    return rows[0] if rows else (0, 0, 0)


def test(mode="sign-flip"):
    with gppool.Pool("verify-%s" % mode, train={"epochs": 3}) as pool:
        pool.serve()
        honest = pool.agents(3, prefix="honest")
        token = pool.invite(uses=1)
        for a in honest:
            a.run()
        pool.wait_for("honest updates", lambda: pool.query(
            "SELECT count(*) FROM updates WHERE outcome = 'applied'")[0][0]
            >= 8, 120)
        hostile = start_hostile(pool, mode, token, "--timeout-ms", "900000")
        pool.wait_serve(900)
        rc = hostile.wait(30)
        log("hostile %s: rc %s: %s" % (mode, rc, hostile.stdout().strip()))
        check(rc == 0, "hostile %s exited %s" % (mode, rc))
        hid = pool.query("SELECT id FROM agents WHERE name LIKE"
                         " 'hostile-%'")[0][0]
        v, mm, rb = trust(pool, hid)
        log("hostile: verified %d, mismatched %d, rolled back %d" %
            (v, mm, rb))
        check(mm >= 2, "the hostile member mismatched %d times" % mm)
        revoked = pool.query("SELECT revoked_at FROM agents WHERE id = ?",
                             (hid,))[0][0]
        check(revoked, "the hostile member was not revoked")
        left = pool.query("SELECT count(*) FROM updates WHERE agent_id = ?"
                          " AND outcome = 'applied' AND rolled_back = 0",
                          (hid,))[0][0]
        check(left == 0, "%d applied updates of the hostile member still"
              " count" % left)
        check(rb >= 1, "nothing of the hostile member's was rolled back")
        verified = 0
        for a in honest:
            v, mm, rb = trust(pool, a.agent_id())
            log("%s: verified %d, mismatched %d" % (a.name, v, mm))
            check(mm == 0 and rb == 0, "honest %s mismatched %d" %
                  (a.name, mm))
            verified += v
        # A three-epoch job has few clocks: at 10 %, a few each.
        check(verified >= 1, "no honest update was verified")
        ids = tuple(a.agent_id() for a in honest)
        struck = pool.query("SELECT count(*) FROM rejections WHERE agent_id"
                            " IN (?, ?, ?)", ids)[0][0]
        check(struck == 0, "%d rejections of honest agents" % struck)
        pool.check_exactly_once()
        pool.check_accuracy(ACCURACY)


if __name__ == "__main__":
    gppool.main(lambda: test(*sys.argv[1:]))
