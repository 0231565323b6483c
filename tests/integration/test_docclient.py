#!/usr/bin/env python3
"""A client written from the documents alone (tests/integration/docclient.py,
from docs/protocol.md and docs/client.md) trains a real coordinator as its
only agent: the Noise IK/IKpsk2 initiator passes the cacophony vectors; bad
tokens are refused the way protocol.md "Refusals" says; a first run joins
with the token (IKpsk2), sends two spoiled updates (a NaN, a missing block)
that the ledger refuses as `nonfinite` and `shape` with no harm, and leaves
with BYE after a few updates; a second run reconnects as a member (IK) and
trains to the end of a one-epoch job. Every minibatch is applied exactly
once, all by this client, nothing else is refused, and the test accuracy
rises well above chance."""
import os
import subprocess
import sys
import time

import gppool
from gppool import check, log

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "docclient.py")
VECTORS = os.environ.get(
    "GP_NOISE_VECTORS",
    os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "data",
                 "noise-cacophony-25519-chachapoly-blake2b.json"))

sys.path.insert(0, HERE)
import docclient  # noqa: E402


def client(pool, name, *args, timeout=60):
    """Runs docclient.py in its own state directory under the pool; returns
    the CompletedProcess."""
    argv = [sys.executable, CLIENT] + [args[0], "--state",
                                       os.path.join(pool.dir, "dc-" + name),
                                       "--name", name] + list(args[1:])
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       env=env)
    out = os.path.join(pool.dir, "dc-%s.log" % name)
    with open(out, "a") as f:
        f.write("$ %s\n%s%s\n" % (" ".join(argv[2:]), r.stdout, r.stderr))
    return r


def expect(pool, name, token, rc, line):
    r = client(pool, name, "handshake", "--token", token)
    check(r.returncode == rc and line in r.stdout,
          "%s: want exit %d and %r, got %d:\n%s%s" %
          (name, rc, line, r.returncode, r.stdout, r.stderr))
    log("%s: %s" % (name, r.stdout.strip().splitlines()[-1]
                    if r.stdout.strip() else "exit %d" % rc))


def bad_tokens(pool):
    """protocol.md "Refusals" as a client sees them."""
    good = pool.invite(uses=1)
    tok = docclient.parse_token(good)
    check(tok["endpoints"] == ["127.0.0.1:%d" % pool.port],
          "token endpoints %r" % tok["endpoints"])
    # A wrong secret: message 2 does not authenticate ("key mismatch").
    wrong = dict(tok, secret=bytes(b ^ 0x5a for b in tok["secret"]))
    expect(pool, "wrong-secret", docclient.make_token(wrong), 3,
           "REFUSED key-mismatch")
    # A token id the ledger does not know, with the secret the holder has:
    # the verdict (code 1) is written under the psk of the secret the
    # coordinator derives for that id, so it too reads as a key mismatch.
    unknown = dict(tok, id=os.urandom(8))
    expect(pool, "unknown-id", docclient.make_token(unknown), 3,
           "REFUSED key-mismatch")
    # Another coordinator's key: message 1 does not decrypt: refuse frame.
    other = dict(tok, key=docclient._pub(
        docclient.X25519PrivateKey.generate()))
    expect(pool, "other-key", docclient.make_token(other), 4,
           "REFUSED refuse-frame")
    # A typo is caught by the checksum before any connection.
    typo = good[:-3] + ("0" if good[-3] != "0" else "1") + good[-2:]
    try:
        docclient.parse_token(typo)
        check(False, "a token with a typo parsed")
    except docclient.TokenError as e:
        check("checksum" in str(e), "typo: %s" % e)
    # A JOIN of message version 2: REJECT 6 naming the versions spoken
    # (1 to 1), then CLOSE 6, and no token use is counted (first-use
    # below still joins with this token).
    r = client(pool, "version-2", "handshake", "--token", good,
               "--join-version", "2")
    check(r.returncode == 0 and "MSG 3 6 " in r.stdout
          and "VERSIONS 1 1" in r.stdout and "CLOSE 6" in r.stdout,
          "version-2 JOIN: want REJECT 6, versions 1 1 and CLOSE 6, got "
          "%d:\n%s%s" % (r.returncode, r.stdout, r.stderr))
    log("version-2 JOIN: REJECT 6 (versions 1 to 1), CLOSE 6")
    # Used up: the first key joins (a JOIN counts the use), a second key
    # with the same token gets the readable verdict 3.
    r = client(pool, "first-use", "run", "--token", good, "--max-updates",
               "1", timeout=120)
    check(r.returncode == 0, "first-use: exit %d\n%s%s" %
          (r.returncode, r.stdout, r.stderr))
    expect(pool, "used-up", good, 2, "REFUSED verdict 3")
    # Revoked: verdict 4.
    rev = pool.invite(uses=5)
    # The CLI names a token by its id read as a u64 LE, in decimal.
    pool.coord("invite", "revoke", str(int.from_bytes(
        docclient.parse_token(rev)["id"], "little")))
    expect(pool, "revoked", rev, 2, "REFUSED verdict 4")


def test():
    docclient.selftest(VECTORS)
    with gppool.Pool("docclient", train={"epochs": 1, "staleness": 3}) \
            as pool:
        pool.serve()
        bad_tokens(pool)
        token = pool.invite(uses=1)
        t0 = time.monotonic()
        # First run: IKpsk2, two spoiled updates, leave after 20.
        r = client(pool, "dc", "run", "--token", token, "--max-updates",
                   "20", "--poison", "nan,shape", timeout=180)
        check(r.returncode == 0, "run 1: exit %d\n%s%s" %
              (r.returncode, r.stdout, r.stderr))
        check("IKpsk2" in r.stdout, "run 1 did not join with IKpsk2")
        # Second run: a member reconnects with IK and trains to the end.
        r = client(pool, "dc", "run", timeout=480)
        check(r.returncode == 0 and "BYE 2" in r.stdout,
              "run 2: want BYE 2 and exit 0, got %d\n%s%s" %
              (r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
        check("with IK\n" in r.stdout, "run 2 did not reconnect with IK")
        pool.wait_serve(timeout=60)
        log("job done in %.1fs" % (time.monotonic() - t0))

        dc = pool.query("SELECT id FROM agents WHERE name = 'dc'")
        check(len(dc) == 1, "agents named dc: %r" % (dc,))
        dc = dc[0][0]
        rows = pool.check_exactly_once()
        first = pool.query("SELECT id FROM agents WHERE name = 'first-use'")
        others = [r for r in rows if r[1] != dc and
                  (not first or r[1] != first[0][0])]
        mine = [r for r in rows if r[1] == dc]
        check(not others, "%d applied rows of unknown agents" % len(others))
        check(len(mine) >= pool.minibatches_per_epoch - 5,
              "client dc applied only %d rows" % len(mine))
        log("client dc: %d applied rows" % len(mine))
        # The two spoiled updates, and nothing else, were refused.
        # (The version-2 JOIN left a row of kind "version" and no agent.)
        refused = pool.query(
            "SELECT agent_id, kind FROM rejections ORDER BY id")
        log("rejections: %r" % (refused,))
        check(refused == [(None, "version"), (dc, "nonfinite"),
                          (dc, "shape")],
              "want the version-2 JOIN's row, then exactly nonfinite and"
              " shape from dc, got %r" % (refused,))
        outcomes = pool.outcomes()
        check(outcomes == {"applied": pool.minibatches_per_epoch,
                           "rejected": 2},
              "update outcomes %r" % (outcomes,))
        # The member is the client's static key.
        key = pool.query("SELECT public_key FROM agents WHERE id = ?",
                         (dc,))[0][0]
        ident = docclient.load_identity(os.path.join(pool.dir, "dc-dc"))
        check(bytes(key) == docclient._pub(ident),
              "the ledger's key for dc is not the client's static key")
        acc = pool.final_accuracy()
        log("test accuracy after 1 epoch: %.2f%%" % (100 * acc))
        check(acc >= 0.75, "accuracy %.2f%% < 75%%" % (100 * acc))


if __name__ == "__main__":
    gppool.main(test)
