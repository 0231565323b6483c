"""Absurd gradient norms with clipping instead of rejection: with
max_grad_norm = 0 and clip_grad_norm = 2 (honest updates of this job have
norms of 0.05-7, 0.6 on average), a member's updates of norm ~5e8 are
applied scaled down to the clip norm, so the honest run still reaches the
accuracy target. (Clipping bounds the damage of one update to lr * clip;
at clip 20, eight such updates in one direction took the model to 36 %.) Asserted: the hostile's updates are 'applied' with the
norm as received (> 1e6) in the ledger, no rejections at all, exactly-once
and the target (an unclipped update of that norm would wreck the model)."""
import gppool
from gppool import check, log
from test_hostile_members import ACCURACY, start_hostile


def test():
    with gppool.Pool("hostile-clip",
                     train={"epochs": 3, "learning_rate": 0.05},
                     # Clipping alone: with verification on (the
                     # default) a picked clock of the hostile member
                     # mismatches and is rejected, which this test's
                     # "no rejections" would count (fault/hostile-verify
                     # tests that path).
                     pool={"max_grad_norm": 0, "clip_grad_norm": 2,
                           "verify_rate": 0}) as pool:
        pool.serve()
        token = pool.invite(uses=1)
        hostile = start_hostile(pool, "norm", token, "--count", "4")
        for a in pool.agents(2, prefix="honest"):
            a.run()
        rc = hostile.wait(120)
        log("hostile norm: rc %s: %s" % (rc, hostile.stdout().strip()))
        check(rc == 0, "hostile norm exited %s" % rc)
        pool.wait_serve(900)
        pool.check_exactly_once()
        pool.check_accuracy(ACCURACY)
        rows = pool.query("SELECT outcome, grad_norm FROM updates WHERE"
                          " agent_id = (SELECT id FROM agents WHERE name ="
                          " 'hostile-norm')")
        log("hostile-norm updates: %r" % (rows,))
        check(len(rows) >= 1 and all(o == "applied" and g > 1e6
                                     for o, g in rows),
              "hostile updates not applied clipped: %r" % (rows,))
        n = pool.query("SELECT count(*) FROM rejections")[0][0]
        check(n == 0, "%d rejections with clipping on" % n)


if __name__ == "__main__":
    gppool.main(test)
