#!/usr/bin/env python3
"""Membership with real processes (issue 4, item 7).

- `agents revoke ID` while serve runs cuts a running agent off within
  REVOKE_BOUND_S (serve checks the ledger every second and says BYE
  revoked): the agent exits with an error that says so, serve logs it, and
  no update of it is applied after the bound; run again, the agent is
  refused at the handshake; a fresh invite does not let its key back in.
  The other agent finishes the job and every minibatch is applied exactly
  once (the revoked agent's open work is handed out again).
- An expired invite cannot join, nor can a used-up one, with distinct
  errors: `invite --expires 1s` then wait; `--uses 1` then a second agent.
"""
import re
import time

import gppool
from gppool import check, log

REVOKE_BOUND_S = 5.0


def test_revoke():
    # A slowed pair keeps the job running long enough to revoke mid-way.
    with gppool.Pool("revoke", train={"epochs": 1}) as pool:
        pool.serve()
        victim, other = pool.agents(2)
        victim.run(delay_ms=15)
        other.run(delay_ms=15)
        vid = victim.agent_id()
        pool.wait_for("updates of the victim in the ledger", lambda: pool.query(
            "SELECT count(*) FROM updates WHERE agent_id = ? AND"
            " outcome = 'applied'", (vid,))[0][0] >= 20, timeout=120)
        t0 = time.monotonic()
        revoked_ms = int(time.time() * 1000)
        pool.coord("agents", "revoke", str(vid))
        rc = victim.proc.wait(REVOKE_BOUND_S + 5)
        took = time.monotonic() - t0
        check(rc is not None, "the revoked agent still runs %.0fs after "
              "`agents revoke`" % took)
        check(took <= REVOKE_BOUND_S, "the revoked agent took %.1fs to be "
              "cut off (bound %.0fs)" % (took, REVOKE_BOUND_S))
        check(rc != 0, "the revoked agent exited 0")
        err = victim.proc.stderr()
        check(re.search(r"revoked", err), "the revoked agent does not say "
              "why it stopped:\n%s" % err[-800:])
        log("revoked agent cut off in %.1fs (exit %d)" % (took, rc))
        # It cannot come back: not with its membership ...
        again = victim.run()
        rc = again.wait(20)
        check(rc is not None and rc != 0, "the revoked agent ran again "
              "(exit %r)" % rc)
        check(re.search(r"revoked", again.stderr()), "the refusal does not "
              "say revoked:\n%s" % again.stderr()[-800:])
        # ... nor with a fresh invite.
        r = victim.join(pool.invite(uses=1), expect_ok=False)
        check(r.returncode != 0, "a revoked agent joined again with a new "
              "invite")
        log("revoked agent refused on reconnect and on a new invite")
        pool.wait_serve(timeout=240, agents_exit=True)
        rows = pool.check_exactly_once()
        late = pool.query("SELECT count(*) FROM updates WHERE agent_id = ?"
                          " AND outcome = 'applied' AND applied_at > ?",
                          (vid, revoked_ms + int(REVOKE_BOUND_S * 1000)))[0][0]
        check(late == 0, "%d updates of the revoked agent applied after the "
              "bound" % late)
        n_other = sum(1 for r in rows if r[1] == other.agent_id())
        log("the other agent applied %d of %d" % (n_other, len(rows)))
        check(pool.query("SELECT revoked_at IS NOT NULL FROM agents WHERE"
                         " id = ?", (vid,))[0][0] == 1, "no revoked_at")
        check("membership revoked" in pool.serve_proc.stderr(),
              "serve did not log the revocation")


def test_tokens():
    with gppool.Pool("tokens", train={"epochs": 1}) as pool:
        pool.serve()
        expiring = pool.invite(uses=5, expires="1s")
        once = pool.invite(uses=1)
        time.sleep(2.2)
        r = pool.agent("late").join(expiring, expect_ok=False)
        check(r.returncode != 0, "an expired invite joined")
        expired_msg = r.stderr.strip()
        check(re.search(r"expired", expired_msg, re.I),
              "the expired invite's error does not say expired: %r"
              % expired_msg)
        pool.agent("first").join(once)
        r = pool.agent("second").join(once, expect_ok=False)
        check(r.returncode != 0, "a used-up invite joined a second agent")
        used_msg = r.stderr.strip()
        check(re.search(r"used up", used_msg, re.I) and
              not re.search(r"expired", used_msg, re.I),
              "the used-up invite's error does not say used up: %r" % used_msg)
        log("expired: %r" % expired_msg.splitlines()[-1])
        log("used up: %r" % used_msg.splitlines()[-1])
        members = pool.query("SELECT name FROM agents ORDER BY id")
        check(members == [("first",)], "members %r, want only 'first'"
              % (members,))
        uses = sorted(u for (u,) in pool.query("SELECT uses FROM tokens"))
        check(uses == [0, 1], "token uses %r, want 0 (expired) and 1" % uses)


def test():
    test_tokens()
    test_revoke()


if __name__ == "__main__":
    gppool.main(test)
