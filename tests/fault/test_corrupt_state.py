"""Corrupt local state: every CLI command that reads a damaged file says
which file and what is wrong, exits 1 (never a crash, never a signal) and
leaves every file of the state directory byte for byte as it was.

Damage tried: ledger.db and agent.db truncated (not a whole page), garbage,
empty, and with garbage pages inside a valid file; coordinator.key and
agent.key too short, too long and mode 0644; job files with a syntax error,
a NUL byte, a bad value, a missing [model] spec and an unknown key."""
import os
import shutil
import subprocess

import gppool
from gppool import check, log

SANITIZER_WORDS = ("AddressSanitizer", "runtime error:", "LeakSanitizer")


def snapshot(d):
    out = {}
    for root, _dirs, files in os.walk(d):
        for f in files:
            if f.endswith(("-wal", "-shm")):
                continue  # SQLite's side files of a WAL database
            p = os.path.join(root, f)
            st = os.stat(p)
            with open(p, "rb") as fh:
                out[p] = (fh.read(), st.st_mode & 0o7777)
    return out


def run(argv, timeout=60):
    return subprocess.run(argv, capture_output=True, text=True,
                          errors="replace",
                          env=gppool._env(), timeout=timeout)


def expect_error(what, argv, state_dir, words):
    """Runs argv; it must exit 1 with a message naming every word, and
    change nothing under state_dir."""
    before = snapshot(state_dir)
    r = run(argv)
    after = snapshot(state_dir)
    err = r.stderr.strip()
    log("%s: %s -> %d: %s" % (what, os.path.basename(argv[0]) + " " +
                              argv[1], r.returncode, err.splitlines()[0]
                              if err else ""))
    check(r.returncode == 1, "%s: %s exited %d (want 1): %s" %
          (what, " ".join(argv[:2]), r.returncode, err))
    check(not any(w in err for w in SANITIZER_WORDS),
          "%s: sanitizer report: %s" % (what, err))
    for w in words:
        check(w in err, "%s: message does not say %r: %s" % (what, w, err))
    check(before.keys() == after.keys(),
          "%s: files added or removed: %r -> %r" %
          (what, sorted(before), sorted(after)))
    changed = [p for p in before if before[p] != after[p]]
    check(not changed, "%s: files changed: %r" % (what, changed))
    return 1


def damage_db(path, kind, good):
    with open(good, "rb") as f:
        data = f.read()
    if kind == "truncated":
        data = data[:1000]
    elif kind == "garbage":
        data = os.urandom(8192)
    elif kind == "empty":
        data = b""
    elif kind == "bad-pages":
        # A valid header and schema page, garbage in the pages after.
        data = data[:4096] + os.urandom(len(data) - 4096)
    with open(path, "wb") as f:
        f.write(data)


def test():
    tried = 0
    with gppool.Pool("corrupt-state") as pool:
        coord, agent = gppool.binaries()
        st = pool.state
        ledger = os.path.join(st, "ledger.db")
        key = os.path.join(st, "coordinator.key")
        # A ledger with content: a few tokens and a job row.
        token = None
        for _ in range(3):
            r = pool.coord("invite", "--endpoint", "127.0.0.1:9")
            token = r.stdout.strip()
        good_ledger = os.path.join(pool.dir, "ledger.good")
        good_key = os.path.join(pool.dir, "coordinator.key.good")
        shutil.copy(ledger, good_ledger)
        shutil.copy(key, good_key)

        cmds = [[coord, "status", "--state", st],
                [coord, "agents", "--state", st],
                [coord, "invite", "--state", st, "--endpoint", "127.0.0.1:9"],
                [coord, "invite", "list", "--state", st],
                [coord, "serve", "--state", st, "--job", pool.job_path],
                [coord, "init", "--state", st]]
        for kind, words in (("truncated", ["ledger.db", "truncated"]),
                            ("garbage", ["ledger.db", "not SQLite"]),
                            ("empty", ["ledger.db", "empty"]),
                            ("bad-pages", ["ledger.db"])):
            damage_db(ledger, kind, good_ledger)
            for argv in cmds:
                if kind == "empty" and argv[1] == "init":
                    continue  # nothing to lose: init may set it up
                tried += expect_error("ledger %s" % kind, argv, st, words)
        shutil.copy(good_ledger, ledger)

        for kind in ("short", "long", "mode"):
            with open(good_key, "rb") as f:
                data = f.read()
            if kind == "short":
                data = data[:47]
            elif kind == "long":
                data = data + b"\n"
            with open(key, "wb") as f:
                f.write(data)
            os.chmod(key, 0o644 if kind == "mode" else 0o600)
            words = ["coordinator.key",
                     "0644" if kind == "mode" else "bytes"]
            for argv in cmds:
                if argv[1] in ("agents", "status") or argv[2] == "list":
                    continue  # they do not need the key
                tried += expect_error("coordinator.key %s" % kind, argv,
                                      st, words)
        shutil.copy(good_key, key)
        os.chmod(key, 0o600)

        jobs = {
            "syntax": ("[model\nspec = 784-10\n", ["job-bad.ini:1"]),
            "nul": ("[model]\nspec = 784-10\x00\n", ["job-bad.ini:2", "NUL"]),
            "value": ("[model]\nspec = 784-10\n[train]\nepochs = -3\n",
                      ["job-bad.ini:4", "epochs"]),
            "no-spec": ("[train]\nepochs = 1\n", ["job-bad.ini", "spec"]),
            "unknown-key": ("[model]\nspec = 784-10\nspeck = 1\n",
                            ["job-bad.ini:3", "speck"]),
            "binary": (os.urandom(256).decode("latin-1"), ["job-bad.ini"]),
        }
        bad_job = os.path.join(pool.dir, "job-bad.ini")
        for kind, (text, words) in jobs.items():
            with open(bad_job, "w", encoding="latin-1") as f:
                f.write(text)
            tried += expect_error("job %s" % kind,
                                  [coord, "serve", "--state", st, "--job",
                                   bad_job], pool.dir, words)

        # The agent: a state from a real join.
        pool.serve()
        a = pool.agents(1)[0]
        token = pool.invite(uses=1)
        pool.serve_proc.end()
        ast = a.state
        akey = os.path.join(ast, "agent.key")
        adb = os.path.join(ast, "agent.db")
        check(os.path.exists(akey) and os.path.exists(adb),
              "join did not create agent.key and agent.db: %r" %
              os.listdir(ast))
        good_adb = os.path.join(pool.dir, "agent.db.good")
        good_akey = os.path.join(pool.dir, "agent.key.good")
        shutil.copy(adb, good_adb)
        shutil.copy(akey, good_akey)
        acmds = [[agent, "stats", "--state", ast],
                 [agent, "join", token, "--state", ast],
                 [agent, "run", "--state", ast, "--device", "cpu",
                  "--no-bench"]]
        for kind, words in (("truncated", ["agent.db", "truncated"]),
                            ("garbage", ["agent.db", "not SQLite"]),
                            ("empty", ["agent.db", "empty"])):
            damage_db(adb, kind, good_adb)
            for argv in acmds:
                if kind == "empty" and argv[1] in ("join", "run"):
                    continue  # nothing to lose: they may set it up
                tried += expect_error("agent.db %s" % kind, argv, ast, words)
        shutil.copy(good_adb, adb)
        for kind in ("short", "long", "mode"):
            with open(good_akey, "rb") as f:
                data = f.read()
            data = data[:40] if kind == "short" else (
                data + b"x" if kind == "long" else data)
            with open(akey, "wb") as f:
                f.write(data)
            os.chmod(akey, 0o644 if kind == "mode" else 0o600)
            for argv in acmds[1:]:
                tried += expect_error(
                    "agent.key %s" % kind, argv, ast,
                    ["agent.key", "0644" if kind == "mode" else "bytes"])
        log("%d damaged-state cases: each a clear error, nothing written"
            % tried)


if __name__ == "__main__":
    gppool.main(test)
