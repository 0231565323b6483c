"""gppool: a harness for integration and fault tests with real processes.

A Pool is one coordinator state directory, one job file and the processes a
test starts against it: `gradpool-coordinator serve` on 127.0.0.1 with an
ephemeral port, and `gradpool-agent` processes, each with its own state
directory. Everything goes through the real programs, the real encrypted
protocol and the real SQLite files; the ledger is read through a read-only
connection.

Binaries: $GP_COORDINATOR and $GP_AGENT (meson sets them to the build
directory that runs the test, so a sanitizer build tests its own binaries),
else $GP_BUILD_DIR/{coordinator,agent}/..., else the `build` folder next to
tests/.

Processes: only the ones started here are ever signalled, by PID, and every
one of them is ended on the way out (Pool.close, atexit, SIGTERM from meson's
timeout). On failure the pool's folder is kept and the tail of each log is
printed.

Typical use:

    with gppool.Pool("bsp", train={"staleness": 0, "epochs": 2}) as pool:
        pool.serve()
        agents = pool.agents(3)          # join with one invite of 3 uses
        for a in agents:
            a.run()
        pool.wait_serve(timeout=120)
        pool.check_exactly_once()
        pool.check(pool.final_accuracy() >= 0.85, "accuracy")
"""

import atexit
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))

# Every process any Pool started and has not seen exit: ended at exit.
_live = {}

TRAIN_SAMPLES = 60000
# Epochs of the runs that must reach the accuracy target.
# (5 epochs end at 84.9 %, 8 at 85.7-86.9 %: 10 leave a margin.)
TRAIN_EPOCHS = 10

# The job every test starts from; tests override keys per section.
DEFAULT_JOB = {
    "model": {"spec": "784-256-128-10", "seed": 1},
    "data": {"set": "fashion-mnist",
             "dir": os.environ.get("GP_DATA_DIR",
                                   "/usr/share/datasets/fashion-mnist")},
    "train": {"epochs": 2, "batch_size": 128, "staleness": 3,
              # The settings of tools/demo (the "pool" helper's).
              "optimizer": "sgd-momentum", "learning_rate": 0.05,
              "momentum": 0.9, "lr_schedule": "cosine",
              "warmup_epochs": 0.1, "checkpoint_interval": "30s",
              "eval": "true"},
    "pool": {"listen": "127.0.0.1:0", "heartbeat_interval": "1s",
             "heartbeat_timeout": "5s"},
}


def sanitized():
    """Whether the binaries under test are an ASan build (tools/test
    --sanitize): they compute several times slower, which changes how far
    a job of a given length trains in the fault tests' pools."""
    global _SANITIZED
    if _SANITIZED is None:
        try:
            out = subprocess.run(["ldd", binaries()[0]], capture_output=True,
                                 text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError, Failure):
            out = ""
        _SANITIZED = "libasan" in out
    return _SANITIZED


_SANITIZED = None


class Failure(Exception):
    """A test assertion that did not hold."""


def _end_all():
    for pid, proc in list(_live.items()):
        _end(proc, grace=2.0)


def _end(proc, grace=5.0):
    """Ends one process we started: SIGCONT (it may be stopped), SIGTERM,
    then SIGKILL after grace seconds. Returns its exit status."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _live.pop(proc.pid, None)
    return proc.returncode


def _on_sigterm(signum, frame):
    _end_all()
    sys.stderr.write("gppool: terminated (signal %d)\n" % signum)
    os._exit(124)


atexit.register(_end_all)
signal.signal(signal.SIGTERM, _on_sigterm)


def log(msg):
    sys.stdout.write("[%7.2f] %s\n" % (time.monotonic() - _T0, msg))
    sys.stdout.flush()


_T0 = time.monotonic()


def binaries():
    """Returns (coordinator, agent) paths."""
    coord = os.environ.get("GP_COORDINATOR")
    agent = os.environ.get("GP_AGENT")
    build = os.environ.get("GP_BUILD_DIR", os.path.join(_ROOT, "build"))
    coord = coord or os.path.join(build, "coordinator", "gradpool-coordinator")
    agent = agent or os.path.join(build, "agent", "gradpool-agent")
    for p in (coord, agent):
        if not os.access(p, os.X_OK):
            raise Failure("binary %s not found (set GP_BUILD_DIR)" % p)
    return coord, agent


def _env():
    env = dict(os.environ)
    # One BLAS thread per process: the agents share a small machine.
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        env[k] = "1"
    env.pop("GRADPOOL_STATE", None)
    env.pop("GRADPOOL_AGENT_STATE", None)
    return env


def _tail(path, n=25):
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return "(no %s)" % path
    return "".join(lines[-n:])


def leak_tracer_crashed(proc):
    """Whether proc (ended) aborted only because LeakSanitizer's own
    tracer thread crashed at its exit ("Tracer caught signal 11", a known
    intermittent fault of the sanitizer runtime, seen once in CI with an
    OpenCL agent under ASan): no leak, no error of the program's. Said in
    the test's log; a leak report or any sanitizer error still fails."""
    if proc.p.returncode != -signal.SIGABRT:
        return False
    err = proc.stderr()
    if ("Tracer caught signal" not in err or
            "LeakSanitizer has encountered a fatal error" not in err or
            "ERROR: " in err or "runtime error" in err):
        return False
    log("note: %s's leak check crashed in the sanitizer's tracer at exit "
        "(not the program)" % proc.argv[0])
    return True


class Proc:
    """A process started by a Pool, with stdout and stderr in files."""

    def __init__(self, argv, out, err, env=None, cwd=None):
        self.argv = argv
        self.out = out
        self.err = err
        fo = open(out, "wb")
        fe = open(err, "wb")
        try:
            self.p = subprocess.Popen(argv, stdout=fo, stderr=fe,
                                      stdin=subprocess.DEVNULL,
                                      env=env or _env(), cwd=cwd)
        finally:
            fo.close()
            fe.close()
        _live[self.p.pid] = self.p

    @property
    def pid(self):
        return self.p.pid

    def running(self):
        return self.p.poll() is None

    def wait(self, timeout):
        """Waits for the exit; returns the status or None on timeout."""
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        _live.pop(self.p.pid, None)
        return rc

    def end(self, grace=5.0):
        return _end(self.p, grace)

    def signal(self, sig):
        if self.p.poll() is None:
            self.p.send_signal(sig)

    def kill9(self):
        """SIGKILL: a crash with no chance to clean up."""
        self.signal(signal.SIGKILL)
        self.p.wait()
        _live.pop(self.p.pid, None)

    def stop(self):
        self.signal(signal.SIGSTOP)

    def cont(self):
        self.signal(signal.SIGCONT)

    def stdout(self):
        with open(self.out, errors="replace") as f:
            return f.read()

    def stderr(self):
        with open(self.err, errors="replace") as f:
            return f.read()

    def tails(self, n=25):
        return "--- %s (pid %d) stdout:\n%s--- stderr:\n%s" % (
            " ".join(os.path.basename(a) for a in self.argv[:2]), self.pid,
            _tail(self.out, n), _tail(self.err, n))


class Agent:
    """One volunteer: its own state directory and name."""

    def __init__(self, pool, name):
        self.pool = pool
        self.name = name
        self.state = os.path.join(pool.dir, "agent-" + name)
        self.proc = None
        self.runs = 0

    def join(self, token, expect_ok=True, timeout=30):
        """Runs `gradpool-agent join`. Returns the CompletedProcess;
        with expect_ok, fails the test unless it exits 0."""
        r = subprocess.run([self.pool.agent_bin, "join", token, "--state",
                            self.state, "--name", self.name],
                           capture_output=True, text=True, env=_env(),
                           timeout=timeout)
        if expect_ok and r.returncode != 0:
            raise Failure("agent %s: join failed (%d): %s" %
                          (self.name, r.returncode, r.stderr.strip()))
        return r

    def run(self, delay_ms=0, extra=()):
        """Starts `gradpool-agent run` on the CPU with one thread, until
        the job is done. Returns the Proc."""
        argv = [self.pool.agent_bin, "run", "--state", self.state, "--name",
                self.name, "--device", "cpu", "--threads", "1",
                "--exit-when-done", "--no-bench"]
        if delay_ms:
            argv += ["--test-step-delay-ms", str(delay_ms)]
        argv += list(extra)
        self.runs += 1
        base = os.path.join(self.pool.dir, "agent-%s.%d" % (self.name,
                                                            self.runs))
        self.proc = Proc(argv, base + ".out", base + ".err")
        self.pool.procs.append(self.proc)
        return self.proc

    def agent_id(self):
        """The coordinator's id for this agent, from the ledger."""
        rows = self.pool.query("SELECT id FROM agents WHERE name = ?",
                               (self.name,))
        if len(rows) != 1:
            raise Failure("agent %s: %d ledger rows" % (self.name, len(rows)))
        return rows[0][0]


class Pool:
    """A coordinator state, a job file and the processes of one test."""

    def __init__(self, name, keep=False, **job):
        self.name = name
        self.coord_bin, self.agent_bin = binaries()
        self.dir = tempfile.mkdtemp(prefix="gp-%s-" % name)
        self.state = os.path.join(self.dir, "coord")
        self.job_path = os.path.join(self.dir, "job.ini")
        self.job = {s: dict(v) for s, v in DEFAULT_JOB.items()}
        for section, keys in job.items():
            self.job.setdefault(section, {}).update(keys)
        self.keep = keep
        # Training samples an epoch: Fashion-MNIST's, unless a test's
        # data set has another count (a language model's windows).
        self.train_samples = TRAIN_SAMPLES
        self.procs = []
        self.serve_proc = None
        self.serves = 0
        self.port = None
        self._agents = []
        self.write_job()
        self.coord("init", "--listen", "127.0.0.1:0")
        log("pool %s in %s" % (name, self.dir))

    # -- set-up ----------------------------------------------------------
    def write_job(self):
        with open(self.job_path, "w") as f:
            for section, keys in self.job.items():
                f.write("[%s]\n" % section)
                for k, v in keys.items():
                    if v is not None:  # None: a default key left out
                        f.write("%s = %s\n" % (k, v))

    @property
    def epochs(self):
        return int(self.job["train"]["epochs"])

    @property
    def staleness(self):
        return int(self.job["train"]["staleness"])

    @property
    def minibatches_per_epoch(self):
        b = int(self.job["train"]["batch_size"])
        return (self.samples_per_epoch + b - 1) // b

    @property
    def samples_per_epoch(self):
        # A pool made without __init__ (the wan test's ledger checks)
        # has Fashion-MNIST's.
        return getattr(self, "train_samples", TRAIN_SAMPLES)

    def coord(self, *args, expect_ok=True, timeout=30):
        """Runs a coordinator CLI command on this state; returns the
        CompletedProcess."""
        r = subprocess.run([self.coord_bin] + list(args) +
                           ["--state", self.state], capture_output=True,
                           text=True, env=_env(), timeout=timeout)
        if expect_ok and r.returncode != 0:
            raise Failure("gradpool-coordinator %s failed (%d): %s" %
                          (" ".join(args), r.returncode, r.stderr.strip()))
        return r

    def serve(self, timeout=60):
        """Starts `serve` and waits for its "listening on" line. A restart
        keeps the port of the first start, so that tokens and agents find
        it again. Returns the Proc."""
        argv = [self.coord_bin, "serve", "--state", self.state, "--job",
                self.job_path]
        if self.port:
            argv += ["--listen", "127.0.0.1:%d" % self.port]
        self.serves += 1
        base = os.path.join(self.dir, "serve.%d" % self.serves)
        proc = Proc(argv, base + ".out", base + ".err")
        self.procs.append(proc)
        self.serve_proc = proc
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(r"^listening on [^\n]*:(\d+)$", proc.stdout(), re.M)
            if m:
                self.port = int(m.group(1))
                break
            if not proc.running():
                raise Failure("serve exited (%s) before listening:\n%s" %
                              (proc.p.returncode, proc.tails()))
            if time.monotonic() > deadline:
                raise Failure("serve did not listen within %ds" % timeout)
            time.sleep(0.05)
        log("serve #%d (pid %d) listening on port %d" %
            (self.serves, proc.pid, self.port))
        return proc

    def invite(self, uses=1, expires=None):
        """Creates an invite for 127.0.0.1:PORT; returns the token text."""
        if not self.port:
            raise Failure("invite before serve: no port yet")
        args = ["invite", "--uses", str(uses), "--endpoint",
                "127.0.0.1:%d" % self.port]
        if expires:
            args += ["--expires", expires]
        tok = self.coord(*args).stdout.strip()
        if not tok.startswith("gp1-"):
            raise Failure("invite printed %r" % tok)
        return tok

    def agent(self, name):
        a = Agent(self, name)
        self._agents.append(a)
        return a

    def agents(self, n, prefix="a", token=None):
        """n new agents joined with one invite of n uses."""
        token = token or self.invite(uses=n)
        out = []
        for i in range(n):
            a = self.agent("%s%d" % (prefix, len(self._agents) + 1))
            a.join(token)
            out.append(a)
        return out

    # -- waiting ---------------------------------------------------------
    def wait_serve(self, timeout, agents_exit=False):
        """Waits for serve to finish the job and exit; fails unless it
        exits 0 in time. Then waits a little for the agents to leave
        (they exit on the job-done BYE) and ends those that did not; with
        agents_exit, every agent still running must exit 0 by itself (an
        agent refused for a full pool retries and never hears the BYE)."""
        rc = self.serve_proc.wait(timeout)
        if rc is None:
            raise Failure("serve did not finish within %ds:\n%s" %
                          (timeout, self.serve_proc.tails()))
        if rc != 0:
            raise Failure("serve exited with %d:\n%s" %
                          (rc, self.serve_proc.tails()))
        log("serve #%d finished" % self.serves)
        # Agents run with --exit-when-done: the job-done BYE ends them.
        running = [a for a in self._agents if a.proc and a.proc.running()]
        ended = self.end_agents(grace=15 if agents_exit else 5)
        if not agents_exit:
            return rc
        check(not ended, "agents %r still ran 15 s after the job was done"
              % ended)
        bad = [(a.name, a.proc.p.returncode) for a in running
               if a.proc.p.returncode != 0 and
               not leak_tracer_crashed(a.proc)]
        check(not bad, "agents exited with an error after the job was done:"
              " %r" % bad)
        return rc

    def end_agents(self, grace=5.0):
        """Gives the running agents grace seconds in all to exit, then
        ends the rest. Returns the names of those that had to be ended."""
        deadline = time.monotonic() + grace
        ended = []
        for a in self._agents:
            if a.proc and a.proc.running():
                if a.proc.wait(max(0.0, deadline - time.monotonic())) is None:
                    a.proc.end()
                    ended.append(a.name)
        return ended

    def wait_for(self, what, cond, timeout, poll=0.1):
        """Polls cond() until it is true; fails after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            v = cond()
            if v:
                return v
            if self.serve_proc and not self.serve_proc.running():
                raise Failure("serve exited while waiting for %s:\n%s" %
                              (what, self.serve_proc.tails()))
            if time.monotonic() > deadline:
                raise Failure("timed out after %ds waiting for %s" %
                              (timeout, what))
            time.sleep(poll)

    # -- the ledger ------------------------------------------------------
    @property
    def ledger_path(self):
        return os.path.join(self.state, "ledger.db")

    def query(self, sql, args=()):
        """Runs one read-only query on the ledger; returns every row."""
        try:
            con = sqlite3.connect("file:%s?mode=ro" % self.ledger_path,
                                  uri=True, timeout=10)
            con.execute("SELECT 1 FROM sqlite_master LIMIT 1")
        except sqlite3.OperationalError:
            # A read-only connection cannot create the WAL index (-shm):
            # between a kill -9 and the next serve it may be missing. A
            # plain connection that only reads makes it.
            con = sqlite3.connect(self.ledger_path, timeout=10)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def job_id(self):
        rows = self.query("SELECT value FROM meta WHERE key = 'current_job'")
        return int(rows[0][0])

    def has_column(self, table, column):
        return any(r[1] == column for r in
                   self.query("PRAGMA table_info(%s)" % table))

    def applied_filter(self):
        """SQL that keeps the applied rows that count: with a rollback
        column, rows a restore rolled back do not."""
        if self.has_column("updates", "rolled_back"):
            return "outcome = 'applied' AND rolled_back = 0"
        return "outcome = 'applied'"

    def applied(self):
        """Applied update rows that count, in the order they were logged:
        (id, agent_id, clock, epoch, minibatch, samples, staleness)."""
        return self.query(
            "SELECT id, agent_id, clock, epoch, minibatch, samples, staleness"
            " FROM updates WHERE job_id = ? AND %s ORDER BY id" %
            self.applied_filter(), (self.job_id(),))

    def outcomes(self):
        return dict(self.query(
            "SELECT outcome, count(*) FROM updates WHERE job_id = ?"
            " GROUP BY outcome", (self.job_id(),)))

    def evals(self):
        """[(epoch, test_accuracy)] in epoch order."""
        return self.query("SELECT epoch, test_accuracy FROM evals WHERE"
                          " job_id = ? ORDER BY epoch", (self.job_id(),))

    def final_accuracy(self):
        ev = self.evals()
        if not ev:
            raise Failure("no evaluation in the ledger")
        return ev[-1][1]

    def checkpoints(self):
        return self.query("SELECT seq, epoch, clock, created_at FROM"
                          " checkpoints WHERE job_id = ? ORDER BY seq",
                          (self.job_id(),))

    def integrity_check(self):
        rows = self.query("PRAGMA integrity_check")
        check(rows == [("ok",)], "ledger integrity_check: %r" % (rows,))

    # -- common checks ---------------------------------------------------
    def check_exactly_once(self):
        """Every minibatch of every epoch applied exactly once: one counted
        applied row per (epoch, minibatch), none outside the job, and the
        samples of each epoch add up to the training set."""
        rows = self.applied()
        per, epochs = self.minibatches_per_epoch, self.epochs
        seen = {}
        samples = [0] * epochs
        for (_id, _agent, _clock, epoch, mb, n, _st) in rows:
            check(0 <= epoch < epochs and 0 <= mb < per,
                  "applied row for (epoch %d, minibatch %d) outside the job"
                  % (epoch, mb))
            seen[(epoch, mb)] = seen.get((epoch, mb), 0) + 1
            samples[epoch] += n
        dup = [k for k, v in seen.items() if v != 1]
        check(not dup, "%d minibatches applied more than once, e.g. %r" %
              (len(dup), dup[:5]))
        check(len(seen) == per * epochs,
              "%d (epoch, minibatch) applied, want %d x %d = %d (missing "
              "e.g. %r)" % (len(seen), epochs, per, per * epochs,
                            [(e, m) for e in range(epochs) for m in range(per)
                             if (e, m) not in seen][:5]))
        check(all(s == self.samples_per_epoch for s in samples),
              "samples per epoch %r, want %d each" % (samples,
                                                      self.samples_per_epoch))
        log("exactly once: %d applied rows = %d epochs x %d minibatches" %
            (len(rows), epochs, per))
        return rows

    def check_staleness(self, rows=None):
        """Every applied update's staleness is within the job's bound."""
        rows = rows if rows is not None else self.applied()
        s = self.staleness
        worst = max((r[6] for r in rows), default=0)
        bad = [r for r in rows if not 0 <= r[6] <= s]
        check(not bad, "%d applied updates beyond staleness %d, e.g. %r" %
              (len(bad), s, bad[:3]))
        log("staleness: max %d <= %d over %d updates" % (worst, s, len(rows)))
        return worst

    def train(self, agents, timeout):
        """Runs the joined agents and waits for serve to finish the job,
        every agent exiting by itself (wait_serve with agents_exit)."""
        t0 = time.monotonic()
        for a in agents:
            a.run()
        self.wait_serve(timeout=timeout, agents_exit=True)
        log("%d epochs in %.1fs" % (self.epochs, time.monotonic() - t0))

    def check_trained(self, target):
        """The ledger of a finished job: every minibatch applied exactly
        once within the staleness bound, and the final test accuracy at
        least target (the evals logged)."""
        rows = self.check_exactly_once()
        self.check_staleness(rows)
        return self.check_accuracy(target)

    def run_summary(self):
        """What shapes a run's accuracy, logged with every accuracy check
        (in a failure's message: the end of a CI log is often all that is
        seen): the updates' outcomes,
        minibatches per clock of an agent (its updates' size), staleness,
        and serve's own summaries (verification, robust aggregation) as
        far as they were logged."""
        job = self.job_id()
        sizes = sorted(k for (k,) in self.query(
            "SELECT count(*) FROM updates WHERE job_id = ? AND outcome ="
            " 'applied' GROUP BY agent_id, clock", (job,)))
        stale = self.query(
            "SELECT avg(staleness), sum(rolled_back != 0) FROM updates"
            " WHERE job_id = ? AND outcome = 'applied'", (job,))[0]
        lines = ["outcomes %r" % self.outcomes()]
        if sizes:
            lines.append("minibatches per agent clock: min %d, median %d, max"
                         " %d over %d clocks; mean staleness %.2f; %d rolled"
                         " back" % (sizes[0], sizes[len(sizes) // 2],
                                    sizes[-1], len(sizes), stale[0] or 0,
                                    stale[1] or 0))
        serve = getattr(self, "serve_proc", None)  # None: not served here
        if serve:
            lines += [ln for ln in serve.stderr().splitlines()
                      if "verification:" in ln or "robust aggregation:" in ln
                      or "mismatch" in ln or "revoked" in ln][-6:]
        return "\n".join(lines)

    def check_accuracy(self, target=0.85):
        acc = self.final_accuracy()
        if acc < target:
            check(False, "final test accuracy %.2f%% < %.1f%% (evals %r)\n%s"
                  % (100 * acc, 100 * target, self.evals(),
                     self.run_summary()))
        log("accuracy %.2f%% >= %.1f%% (evals %s)\n%s" % (
            100 * acc, 100 * target, ", ".join(
                "%.2f%%" % (100 * a) if a is not None else "none"
                for _, a in self.evals()),
            self.run_summary()))
        return acc

    # -- teardown --------------------------------------------------------
    def close(self, failed=False):
        for p in self.procs:
            p.end()
        if failed or self.keep:
            for p in self.procs:
                sys.stderr.write(p.tails() + "\n")
            sys.stderr.write("gppool: kept %s\n" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, etype, evalue, tb):
        self.close(failed=etype is not None)
        return False


def check(cond, msg):
    """Fails the test with msg unless cond holds."""
    if not cond:
        raise Failure(msg)


def main(test):
    """Runs test() and exits 0, or 1 with the failure's message."""
    start = time.monotonic()
    try:
        test()
    except Failure as e:
        sys.stderr.write("FAIL: %s\n" % e)
        _end_all()
        sys.exit(1)
    log("PASS in %.1fs" % (time.monotonic() - start))
