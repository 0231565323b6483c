#!/usr/bin/python3
"""tools/bench-wan's harness: the pool and PyTorch DDP over shaped links.

Every run gets a little network of its own, made here and removed here:

    namespace gpwan-PID-hub    bridge "br0" 10.213.0.1/24, the coordinator
                               (or DDP's TCPStore), one veth end per agent
    namespace gpwan-PID-aI     "eth0" 10.213.0.(10+I)/24, agent I (or DDP
                               worker I-1)

Agent I's veth pair is shaped with tc tbf at its rate on both ends: the
agent's end limits what it sends (its uplink), the hub's end what it
receives (its downlink). Agents reach each other (DDP's all-reduce) through
the hub's bridge, so such traffic crosses both agents' links. There is no
route out of these namespaces: nothing leaves them. No latency is added
(netem is not available in this kernel, and no delay relay is used): the
links are bandwidth-limited, not far away.

Bytes: the agents' "eth0" counters (rx + tx, Ethernet frames, so TCP/IP
headers and retransmissions included), summed over the agents, from just
before the agents (DDP workers) start to the stop (the first evaluation at
the target, the job's end, or the time limit). Bytes per sample divides them
by the samples trained in the same window: for the pool the samples of the
updates applied (ledger rows received before the stop), for DDP the samples
of the steps run (global batch x steps).

Shares of an agent's time (pool only), over the window from the agents'
start to the stop:
  computed: the agent's own compute_seconds (gradpool-agent stats --json:
            the time its worker spent in training steps) over the window;
  parked:   time at which the agent had returned all the work of its clock
            c - 1 but the SSP bound (c <= min clock + s) did not yet let it
            have clock c. Nothing reports this directly; it is rebuilt from
            the ledger's per-update timestamps: an agent leaves clock k when
            its last update of k is resolved (applied_at, else received_at),
            and clock c is allowed once every other agent has left clock
            c - s - 1. So parked = sum over c of
            max(0, allowed(c) - left(c - 1)), clipped to the window, plus
            the tail when the bound holds it at the stop.
The rest of an agent's time went to the wire, start-up and waiting on its
own updates' round trips.

Pool time to 85 %: serve's "eval at T s ... test accuracy X%" lines (T from
the first minibatch handed out; the evaluation runs beside the training).
DDP time to 85 %: ddp.py's training time (evaluation left out). Both are
null when the target is not reached within the time limit (or the job's
epochs).
"""
import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PY = "/usr/bin/python3"
DDP = os.path.join(ROOT, "tools", "bench", "ddp.py")
PREFIX = "gpwan-"
NET = "10.213.0"
HUB_ADDR = NET + ".1"
STORE_PORT = 29500
TARGET = 85.0

# The pools of a full run: name -> per-agent rates in Mbit/s.
UNIFORM_RATES = [1000, 100, 20, 5]
MIXED = [[100, 5], [1000, 1000, 20, 5]]

# Every process started here and not yet seen to exit: pid -> Popen.
_live = {}
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
PR_SET_PDEATHSIG = 1


def log(msg):
    sys.stderr.write("==> %s\n" % msg)
    sys.stderr.flush()


def sh(*argv, check=True):
    """Runs a short command; returns its stdout."""
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(argv),
                                                    r.returncode,
                                                    r.stderr.strip()))
    return r.stdout


def _child_setup():
    # Should this harness die without cleaning up (SIGKILL), its children
    # get SIGTERM instead of training on in a namespace nobody removes.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start(ns, argv, out, err, env=None):
    """Starts argv in namespace ns (None: this one), stdout and stderr to
    files. `ip netns exec` execs the program itself, so the pid is the
    program's. Returns the Popen."""
    full = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    e = dict(os.environ)
    e.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    e.update(env or {})
    with open(out, "wb") as fo, open(err, "wb") as fe:
        p = subprocess.Popen(full, stdout=fo, stderr=fe,
                             stdin=subprocess.DEVNULL, env=e,
                             preexec_fn=_child_setup)
    _live[p.pid] = p
    return p


def end(p, grace=10.0):
    """SIGTERM, then SIGKILL after grace seconds, for one process started
    here. Returns its exit status."""
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    _live.pop(p.pid, None)
    return p.returncode


def end_all():
    for p in list(_live.values()):
        end(p, grace=3.0)


class Lab:
    """The hub's namespace and one namespace per agent, with shaped veth
    links (see the module's comment). Removed by close(), which is safe to
    call on a half-built lab."""

    def __init__(self, rates, queue_ms):
        self.rates = list(rates)
        self.queue_ms = queue_ms
        self.hub = "%s%d-hub" % (PREFIX, os.getpid())
        self.agents = ["%s%d-a%d" % (PREFIX, os.getpid(), i + 1)
                       for i in range(len(rates))]
        self.made = []

    def addr(self, i):
        """Agent i's address (0-based)."""
        return "%s.%d" % (NET, 11 + i)

    def _add_ns(self, name):
        sh("ip", "netns", "add", name)
        self.made.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _shape(self, ns, dev, mbit):
        # tbf: the rate, a bucket of 10 ms at that rate (32 KiB at least,
        # above the largest segment tbf lets through unsplit), and a queue
        # of queue_ms before it drops.
        burst = max(32768, int(mbit * 1e6 / 8 * 0.01))
        sh("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf",
           "rate", "%dmbit" % mbit, "burst", str(burst),
           "latency", "%dms" % self.queue_ms)

    def up(self):
        self._add_ns(self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "addr", "add", HUB_ADDR + "/24", "dev", "br0")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i, (ns, mbit) in enumerate(zip(self.agents, self.rates)):
            self._add_ns(ns)
            port = "h%d" % (i + 1)
            sh("ip", "link", "add", port, "netns", self.hub, "type", "veth",
               "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", self.hub, "link", "set", port, "master", "br0")
            sh("ip", "-n", self.hub, "link", "set", port, "up")
            sh("ip", "-n", ns, "addr", "add", self.addr(i) + "/24", "dev",
               "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            self._shape(ns, "eth0", mbit)
            self._shape(self.hub, port, mbit)
        return self

    def counters(self):
        """[(rx_bytes, tx_bytes)] of each agent's eth0."""
        out = []
        for ns in self.agents:
            j = json.loads(sh("ip", "-n", ns, "-s", "-j", "link", "show",
                              "dev", "eth0"))
            st = j[0]["stats64"]
            out.append((st["rx"]["bytes"], st["tx"]["bytes"]))
        return out

    def close(self):
        # Deleting a namespace takes its veth ends (and so the pairs) and
        # the bridge with it.
        for ns in reversed(self.made):
            sh("ip", "netns", "del", ns, check=False)
        self.made = []


def harness_alive(pid):
    """Whether pid is a running instance of this harness."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"wan.py" in f.read()
    except OSError:
        return False


def remove_leftovers():
    """Removes what an earlier run of this harness left when it died
    without cleaning up (SIGKILL): namespaces gpwan-PID-... and work
    folders gradpool-bench-wan.PID.* whose PID no longer runs this harness.
    The processes in such namespaces got SIGTERM when it died
    (PR_SET_PDEATHSIG) and are left alone here."""
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        m = re.match(r"^gradpool-bench-wan\.(\d+)\.", name)
        if (m and not harness_alive(int(m.group(1))) and
                not os.path.exists(os.path.join(tmp, name, "KEPT"))):
            log("removing %s left by an earlier run" % os.path.join(tmp, name))
            shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
    for line in sh("ip", "netns", "list").splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(r"^%s(\d+)-(hub|a\d+)$" % re.escape(PREFIX), name)
        if not m or harness_alive(int(m.group(1))):
            continue
        pids = sh("ip", "netns", "pids", name, check=False).split()
        log("removing namespace %s left by an earlier run%s" %
            (name, " (processes still in it: %s)" % " ".join(pids)
             if pids else ""))
        sh("ip", "netns", "del", name, check=False)


# ---- the pool -----------------------------------------------------------

JOB = """[model]
spec = 784-256-128-10
seed = 1
[train]
epochs = {epochs}
batch_size = 128
staleness = {staleness}
learning_rate = 0.05
momentum = 0.9
eval = true
eval_every = {eval_every}
checkpoint_interval = 1m
[pool]
listen = {hub}:0
"""


def eval_lines(path):
    """[(T seconds, samples, accuracy %)] of serve's "eval at" lines."""
    out = []
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = re.match(r"^eval at ([0-9.]+) s\s+(\d+) samples .*"
                             r"test accuracy ([0-9.]+)%", line)
                if m:
                    out.append((float(m.group(1)), int(m.group(2)),
                                float(m.group(3))))
    except OSError:
        pass
    return out


def in_file(path, text):
    try:
        with open(path, errors="replace") as f:
            return text in f.read()
    except OSError:
        return False


def parked_ms(rows, s, t_start, t_stop):
    """Per agent id: milliseconds it was parked by the SSP bound, rebuilt
    from ledger rows (agent, clock, resolved_at ms); see the module's
    comment. Only the window [t_start, t_stop] counts."""
    left = {}                  # agent -> {clock: ms its last row resolved}
    for agent, clock, at in rows:
        d = left.setdefault(agent, {})
        d[clock] = max(d.get(clock, 0), at)
    out = {}
    for a, mine in left.items():
        others = [b for b in left if b != a]
        total = 0

        def allowed(c):
            # When every other agent had left clock c - s - 1 (None: one
            # of them had not by the stop).
            k = c - s - 1
            t = 0
            for b in others:
                theirs = left[b]
                if k in theirs:
                    t = max(t, theirs[k])
                elif min(theirs) <= k:
                    # b reached k but has no row of it: it left k with
                    # its next clock's first resolution at the latest.
                    later = [theirs[x] for x in theirs if x > k]
                    if not later:
                        return None
                    t = max(t, min(later))
            return t

        clocks = sorted(mine)
        for c in clocks[1:] + [clocks[-1] + 1]:
            if c - 1 not in mine:
                continue
            free = max(mine[c - 1], t_start)
            t = allowed(c)
            if t is None:
                # Still held by the bound at the stop, if it was done with
                # c - 1 by then and has no later clock.
                if c not in mine:
                    t = t_stop
                else:
                    continue
            total += max(0, min(t, t_stop) - free)
        out[a] = total
    return out


def read_ledger(state, t_stop_ms):
    con = sqlite3.connect("file:%s?mode=ro" % os.path.join(state,
                                                          "ledger.db"),
                          uri=True, timeout=10)
    try:
        job = int(con.execute("SELECT value FROM meta WHERE key ="
                              " 'current_job'").fetchone()[0])
        cols = [r[1] for r in con.execute("PRAGMA table_info(updates)")]
        applied = "outcome = 'applied'"
        if "rolled_back" in cols:
            applied += " AND rolled_back = 0"
        samples = con.execute(
            "SELECT coalesce(sum(samples), 0) FROM updates WHERE job_id = ?"
            " AND %s AND received_at <= ?" % applied,
            (job, t_stop_ms)).fetchone()[0]
        rows = con.execute(
            "SELECT agent_id, clock, coalesce(applied_at, received_at)"
            " FROM updates WHERE job_id = ? AND received_at <= ?",
            (job, t_stop_ms)).fetchall()
        per_agent = dict(con.execute(
            "SELECT agent_id, coalesce(sum(samples), 0) FROM updates WHERE"
            " job_id = ? AND %s AND received_at <= ? GROUP BY agent_id"
            % applied, (job, t_stop_ms)).fetchall())
        names = dict(con.execute("SELECT id, name FROM agents").fetchall())
        staleness = con.execute(
            "SELECT avg(staleness) FROM updates WHERE job_id = ? AND %s"
            " AND received_at <= ?" % applied, (job, t_stop_ms)).fetchone()[0]
    finally:
        con.close()
    return samples, rows, per_agent, names, staleness


def run_pool(args, bins, lab, work):
    coord, agent = bins
    n = len(lab.agents)
    d = os.path.join(work, "pool")
    os.makedirs(d)
    state = os.path.join(d, "coord")
    text = JOB.format(epochs=args.epochs, staleness=args.staleness,
                      eval_every=args.eval_every, hub=HUB_ADDR)
    # --set SECTION.KEY=VALUE: the key's value in its section, replaced
    # where the job above has it, else added at the section's end.
    for kv in args.set:
        key, value = kv.split("=", 1)
        section, key = key.split(".", 1)
        head = "[%s]\n" % section
        if head not in text:
            text += head
        at = text.index(head) + len(head)
        nxt = text.find("\n[", at)
        stop = len(text) if nxt < 0 else nxt + 1
        body = re.sub(r"(?m)^%s = .*\n" % re.escape(key), "",
                      text[at:stop])
        text = text[:at] + body + "%s = %s\n" % (key, value) + text[stop:]
    with open(os.path.join(d, "job.ini"), "w") as f:
        f.write(text)
    sh(coord, "init", "--state", state, "--listen", HUB_ADDR + ":0")
    serve_out = os.path.join(d, "serve.out")
    serve = start(lab.hub, [coord, "serve", "--state", state, "--job",
                            os.path.join(d, "job.ini")],
                  serve_out, os.path.join(d, "serve.log"))
    port = None
    deadline = time.monotonic() + 30
    while port is None:
        with open(serve_out, errors="replace") as f:
            m = re.search(r"^listening on .*:(\d+)$", f.read(), re.M)
        if m:
            port = int(m.group(1))
        elif serve.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("serve did not start; see %s/serve.log" % d)
        else:
            time.sleep(0.05)
    token = sh(coord, "invite", "--state", state, "--uses", str(n),
               "--endpoint", "%s:%d" % (HUB_ADDR, port)).strip()
    for i, ns in enumerate(lab.agents):
        sh("ip", "netns", "exec", ns, agent, "join", token, "--state",
           os.path.join(d, "agent%d" % (i + 1)), "--name", "a%d" % (i + 1))
    before = lab.counters()
    t_start = time.time()
    agents = []
    for i, ns in enumerate(lab.agents):
        agents.append(start(ns, [agent, "run", "--state",
                                 os.path.join(d, "agent%d" % (i + 1)),
                                 "--name", "a%d" % (i + 1), "--device", "cpu",
                                 "--threads", "1", "--exit-when-done"],
                            os.path.join(d, "agent%d.out" % (i + 1)),
                            os.path.join(d, "agent%d.log" % (i + 1))))
    reached = None
    last_report = time.monotonic()
    joined = [None] * n
    while True:
        for i in range(n):
            if joined[i] is None and in_file(
                    os.path.join(d, "agent%d.log" % (i + 1)),
                    "working for pool"):
                joined[i] = time.time()
        ev = eval_lines(serve_out)
        hit = [e for e in ev if e[2] >= TARGET]
        if hit:
            reached = hit[0]
            why = "reached %.0f %%" % TARGET
            break
        if serve.poll() is not None:
            why = "the job ended (%d epochs) short of %.0f %%" % (
                args.epochs, TARGET)
            break
        if time.time() - t_start > args.time_limit:
            why = "time limit (%d s)" % args.time_limit
            break
        if time.monotonic() - last_report > 30 and ev:
            log("   ... %.0f s: %.2f %% after %d samples" %
                (time.time() - t_start, ev[-1][2], ev[-1][1]))
            last_report = time.monotonic()
        time.sleep(0.05)
    t_stop = time.time()
    after = lab.counters()
    end(serve, grace=30)
    for p in agents:
        end(p)
    link_bytes = [a[0] + a[1] - b[0] - b[1] for a, b in zip(after, before)]
    samples, rows, per_agent, names, mean_st = read_ledger(
        state, int(t_stop * 1000))
    compute, parked_share, work_share = {}, {}, {}
    by_name = {v: k for k, v in names.items()}
    for i in range(n):
        name = "a%d" % (i + 1)
        # The agent's time in the pool: from its connection (its log's
        # "working for pool" line, seen within 50 ms) to the stop; its
        # start-up (data set, device benchmark) is not in it.
        t_in = joined[i] or t_start
        window = max(t_stop - t_in, 1e-3)
        st = json.loads(sh(agent, "stats", "--state",
                           os.path.join(d, "agent%d" % (i + 1)), "--json"))
        compute[name] = round(st["total"]["compute_seconds"] / window, 4)
        aid = by_name.get(name)
        parked = parked_ms(rows, args.staleness, int(t_in * 1000),
                           int(t_stop * 1000))
        parked_share[name] = round(parked.get(aid, 0) / 1000.0 / window, 4)
        work_share[name] = round(per_agent.get(aid, 0) / samples, 4) \
            if samples else None
    return {
        "time_to_85_s": reached[0] if reached else None,
        "samples_to_85": reached[1] if reached else None,
        # The accuracy the pool stopped at.
        "last_accuracy": reached[2] if reached else ev[-1][2] if ev else None,
        "window_s": round(t_stop - t_start, 3),
        "in_pool_s": [round(t_stop - (t or t_start), 3) for t in joined],
        "samples": samples,
        "bytes": sum(link_bytes),
        "bytes_per_agent": link_bytes,
        "bytes_per_sample": round(sum(link_bytes) / samples, 1)
        if samples else None,
        "compute_share": compute,
        "parked_share": parked_share,
        "work_share": work_share,
        "mean_staleness": round(mean_st, 3) if mean_st is not None else None,
        "stopped_by": why,
    }


# ---- PyTorch DDP --------------------------------------------------------

def ddp_optimizer(args):
    """ddp.py's optimiser arguments: the pool job's optimiser, rate and
    weight decay where --set gives them (AdamW for an adamw job), else
    ddp.py's SGD with momentum at its defaults (the job above's)."""
    keys = dict(kv.split("=", 1) for kv in args.set)
    if keys.get("train.optimizer") != "adamw":
        return []
    return ["--optimizer", "adamw",
            "--lr", keys.get("train.learning_rate", "0.05"),
            "--weight-decay", keys.get("train.weight_decay", "0")]


def run_ddp(args, lab, work, powersgd):
    n = len(lab.agents)
    d = os.path.join(work, "ddp-powersgd" if powersgd else "ddp")
    os.makedirs(d)
    store = "%s:%d" % (HUB_ADDR, STORE_PORT)
    hard = args.time_limit + args.ddp_grace
    server = start(lab.hub, [PY, DDP, "--store-server", store, "--world",
                             str(n), "--store-timeout", str(hard + 60)],
                   os.path.join(d, "store.out"), os.path.join(d, "store.log"))
    before = lab.counters()
    t_start = time.time()
    common = ["--world", str(n), "--store", store, "--batch",
              str(args.ddp_batch * n), "--time-limit", str(args.time_limit),
              "--store-timeout", str(hard + 60)] + ddp_optimizer(args)
    if powersgd:
        common += ["--powersgd", str(args.powersgd_rank), "--powersgd-start",
                   str(args.powersgd_start)]
    workers = []
    for i, ns in enumerate(lab.agents):
        workers.append(start(ns, [PY, DDP, "--rank", str(i)] + common +
                             (["--progress"] if i == 0 else []),
                             os.path.join(d, "rank%d.out" % i),
                             os.path.join(d, "rank%d.log" % i),
                             env={"GLOO_SOCKET_IFNAME": "eth0"}))
    why = None
    last_report = time.monotonic()
    prog = os.path.join(d, "rank0.log")
    while any(p.poll() is None for p in workers):
        if time.time() - t_start > hard:
            why = "killed %d s past the time limit" % args.ddp_grace
            break
        if any(p.poll() not in (None, 0) for p in workers):
            why = "a worker failed"
            break
        if time.monotonic() - last_report > 30:
            ev = eval_lines(prog)
            if ev:
                log("   ... %.0f s: %.2f %% after %d samples" %
                    (time.time() - t_start, ev[-1][2], ev[-1][1]))
            last_report = time.monotonic()
        time.sleep(0.1)
    t_stop = time.time()
    after = lab.counters()
    rcs = [end(p, grace=5) for p in workers]
    end(server, grace=2)
    link_bytes = [a[0] + a[1] - b[0] - b[1] for a, b in zip(after, before)]
    result = None
    try:
        with open(os.path.join(d, "rank0.out")) as f:
            lines = f.read().strip().splitlines()
        result = json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        result = None
    ev = eval_lines(prog)
    if result:
        samples = result["samples"]
        t85 = result["time_to_target_s"]
        t85 = round(t85, 3) if t85 is not None else None
        why = why or ("reached %.0f %%" % TARGET if t85 is not None else
                      "time limit (%d s)" % args.time_limit
                      if result.get("time_limit_hit") else
                      "max epochs short of %.0f %%" % TARGET)
    else:
        samples = ev[-1][1] if ev else 0
        t85 = None
    error = None
    if why == "a worker failed" or (result is None and why is None):
        tail = ""
        for i in range(n):
            with open(os.path.join(d, "rank%d.log" % i), errors="replace") as f:
                lines = [l for l in f.read().splitlines() if l.strip()]
            if lines and "eval at" not in lines[-1]:
                tail = lines[-1]
                break
        error = tail or "exit statuses %r" % rcs
    return {
        "time_to_85_s": t85,
        "last_accuracy": (round(result["test_accuracy"] * 100, 2) if result
                          else ev[-1][2] if ev else None),
        "window_s": round(t_stop - t_start, 3),
        "samples": samples,
        "bytes": sum(link_bytes),
        "bytes_per_agent": link_bytes,
        "bytes_per_sample": round(sum(link_bytes) / samples, 1)
        if samples else None,
        "stopped_by": why,
        "error": error,
    }


# ---- the whole benchmark ------------------------------------------------

# The result of a run that failed before it had figures.
FAILED = {"time_to_85_s": None, "samples_to_85": None, "last_accuracy": None,
          "bytes_per_sample": None, "compute_share": None,
          "parked_share": None, "work_share": None, "stopped_by": "failed"}


def pool_name(rates):
    if len(set(rates)) == 1:
        return "%dx%d" % (len(rates), rates[0])
    return "+".join(str(r) for r in rates)


def select(args):
    rates = ([int(x) for x in args.rates.split(",")] if args.rates
             else UNIFORM_RATES)
    counts = ([int(x) for x in args.agents.split(",")] if args.agents
              else [2, 4])
    pools = []
    if args.pools:
        for p in args.pools.split(","):
            m = re.match(r"^(\d+)x(\d+)$", p)
            pools.append([int(m.group(2))] * int(m.group(1)) if m else
                         [int(x) for x in p.split("+")])
        return pools
    for n in counts:
        for r in rates:
            pools.append([r] * n)
        if not args.no_mixed:
            for mix in MIXED:
                if len(mix) == n and all(r in rates for r in mix):
                    pools.append(mix)
    return pools


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def main():
    p = argparse.ArgumentParser(
        prog="tools/bench-wan",
        description="The pool and PyTorch DDP over tbf-shaped links in "
        "network namespaces (see tools/bench/wan.py).")
    p.add_argument("--rates", help="uniform per-agent rates in Mbit/s "
                   "(default 1000,100,20,5)")
    p.add_argument("--agents", help="agent counts (default 2,4)")
    p.add_argument("--no-mixed", action="store_true",
                   help="leave out the mixed pools (100+5, 1000+1000+20+5;"
                   " otherwise run when all their rates and their agent "
                   "count are selected)")
    p.add_argument("--pools", help="exactly these pools, e.g. 2x20,100+5 "
                   "(overrides --rates, --agents, --no-mixed)")
    p.add_argument("--only", default="pool,ddp,powersgd",
                   help="any of pool, ddp, powersgd (comma-separated)")
    p.add_argument("--time-limit", type=int, default=300,
                   help="seconds per run before it ends as null (300)")
    p.add_argument("--ddp-grace", type=int, default=60,
                   help="seconds past the limit before DDP is killed (60)")
    p.add_argument("--epochs", type=int, default=5,
                   help="the pool job's epochs (5, as tools/bench-pool)")
    p.add_argument("--eval-every", type=int, default=80)
    p.add_argument("--staleness", type=int, default=3)
    p.add_argument("--ddp-batch", type=int, default=128,
                   help="DDP's batch per worker (128, the pool's minibatch)")
    p.add_argument("--powersgd-rank", type=int, default=2)
    p.add_argument("--powersgd-start", type=int, default=20)
    p.add_argument("--queue-ms", type=int, default=100,
                   help="tbf queue (latency) in ms (100)")
    p.add_argument("--set", action="append", default=[],
                   metavar="SECTION.KEY=VALUE",
                   help="a job key for the pool's runs, e.g. "
                   "train.outer_optimizer=nesterov (repeatable)")
    p.add_argument("--build", default=os.path.join(ROOT, "build"))
    p.add_argument("--keep", action="store_true",
                   help="keep the work folder (logs, ledgers)")
    args = p.parse_args()
    if any("=" not in kv or "." not in kv.split("=", 1)[0]
           for kv in args.set):
        p.error("--set takes SECTION.KEY=VALUE")
    only = set(args.only.split(","))
    if not only <= {"pool", "ddp", "powersgd"}:
        p.error("--only takes pool, ddp, powersgd")
    if os.geteuid() != 0:
        p.error("needs root (network namespaces)")
    bins = (os.path.join(args.build, "coordinator", "gradpool-coordinator"),
            os.path.join(args.build, "agent", "gradpool-agent"))
    try:
        pools = select(args)
    except (ValueError, AttributeError):
        p.error("--rates, --agents: numbers; --pools: NxRATE or RATE+RATE...")
    if not pools or any(len(r) < 1 or min(r) <= 0 for r in pools):
        p.error("no pool selected, or a rate of 0")

    remove_leftovers()
    work = tempfile.mkdtemp(prefix="gradpool-bench-wan.%d." % os.getpid())
    results = {}
    lab = None
    try:
        for rates in pools:
            name = pool_name(rates)
            res = results[name] = {"rates_mbit": rates}
            for kind in ("pool", "ddp", "powersgd"):
                if kind not in only:
                    continue
                wd = os.path.join(work, "%s-%s" % (name, kind))
                os.makedirs(wd)
                log("%s: %s (links %s Mbit/s, limit %d s)" % (
                    name, {"pool": "pool", "ddp": "DDP",
                           "powersgd": "DDP + PowerSGD"}[kind],
                    ", ".join(map(str, rates)), args.time_limit))
                try:
                    lab = Lab(rates, args.queue_ms)
                    lab.up()
                    if kind == "pool":
                        r = run_pool(args, bins, lab, wd)
                    else:
                        r = run_ddp(args, lab, wd, kind == "powersgd")
                except (RuntimeError, OSError, ValueError, KeyError,
                        sqlite3.Error) as e:
                    # One broken run is reported (null) and the rest go on.
                    r = dict(FAILED, error=str(e))
                finally:
                    end_all()
                    lab.close()
                    lab = None
                log("   %s: time to %.0f %% %s s, %s bytes/sample, last "
                    "accuracy %s %%%s" % (
                        r["stopped_by"], TARGET, r["time_to_85_s"],
                        r["bytes_per_sample"], r["last_accuracy"],
                        "; computed %s, parked %s" % (
                            r["compute_share"], r["parked_share"])
                        if kind == "pool" else ""))
                if r.get("error") and kind == "pool":
                    r["stopped_by"] = "failed"
                if r.get("error"):
                    log("   error: %s" % r["error"])
                res[kind] = r
    finally:
        if lab:
            lab.close()
        end_all()
        if args.keep:
            open(os.path.join(work, "KEPT"), "w").close()
            log("kept %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)

    summary = {"target_accuracy": TARGET, "time_limit_s": args.time_limit,
               "latency": "none added: tbf bandwidth only (netem is not "
                          "available in this kernel; no delay relay)",
               "tbf_queue_ms": args.queue_ms,
               "ddp_batch_per_worker": args.ddp_batch,
               "powersgd": {"rank": args.powersgd_rank,
                            "start_iter": args.powersgd_start},
               "pools": {}}
    for name, res in results.items():
        pl, dd, ps = res.get("pool"), res.get("ddp"), res.get("powersgd")
        e = {"rates_mbit": res["rates_mbit"],
             "pool_time_to_85_s": pl and pl["time_to_85_s"],
             "ddp_time_to_85_s": dd and dd["time_to_85_s"],
             "ddp_powersgd_time_to_85_s": ps and ps["time_to_85_s"],
             "pool_bytes_per_sample": pl and pl["bytes_per_sample"],
             "ddp_bytes_per_sample": dd and dd["bytes_per_sample"],
             "ddp_powersgd_bytes_per_sample": ps and ps["bytes_per_sample"],
             "bytes_vs_ddp": ratio(dd and dd["bytes_per_sample"],
                                   pl and pl["bytes_per_sample"]),
             "bytes_vs_ddp_powersgd": ratio(ps and ps["bytes_per_sample"],
                                            pl and pl["bytes_per_sample"]),
             "pool_compute_share": pl and pl["compute_share"],
             "pool_parked_share": pl and pl["parked_share"],
             "pool_work_share": pl and pl["work_share"],
             "pool_samples_to_85": pl and pl["samples_to_85"],
             "pool_last_accuracy": pl and pl["last_accuracy"],
             "ddp_last_accuracy": dd and dd["last_accuracy"],
             "ddp_powersgd_last_accuracy": ps and ps["last_accuracy"],
             "ddp_powersgd_error": ps and ps["error"]}
        summary["pools"][name] = e

    def t(name):
        e = summary["pools"].get(name)
        return e and e["pool_time_to_85_s"]

    summary["slowdown_20mbit"] = ratio(t("2x20"), t("2x1000"))
    summary["slowdown_5mbit"] = ratio(t("2x5"), t("2x1000"))
    summary["slowdown_mixed"] = ratio(t("100+5"), t("2x100"))
    summary["slowdown_20mbit_4agents"] = ratio(t("4x20"), t("4x1000"))
    summary["slowdown_5mbit_4agents"] = ratio(t("4x5"), t("4x1000"))
    summary["slowdown_mixed_4agents"] = ratio(t("1000+1000+20+5"),
                                              t("4x1000"))
    shares = [(v, k) for e in summary["pools"].values()
              for k, v in (e["pool_compute_share"] or {}).items()]
    parks = [(v, k) for e in summary["pools"].values()
             for k, v in (e["pool_parked_share"] or {}).items()]
    summary["pool_job_keys"] = args.set
    summary["ddp_optimizer"] = ("adamw" if ddp_optimizer(args)
                                else "sgd-momentum")
    summary["min_compute_share"] = min(shares)[0] if shares else None
    summary["max_parked_share"] = max(parks)[0] if parks else None

    # The table, for people (stderr); the JSON line last, on stdout.
    def f(v, fmt="%.1f"):
        return "-" if v is None else fmt % v

    sys.stderr.write("\n%-16s %9s %9s %9s %11s %11s %8s  %s\n" % (
        "pool", "pool s", "DDP s", "PSGD s", "pool B/smp", "DDP B/smp",
        "DDP/pool", "computed / parked (share of time)"))
    for name, e in summary["pools"].items():
        cp = e["pool_compute_share"] or {}
        pk = e["pool_parked_share"] or {}
        sys.stderr.write("%-16s %9s %9s %9s %11s %11s %8s  %s\n" % (
            name, f(e["pool_time_to_85_s"]), f(e["ddp_time_to_85_s"]),
            f(e["ddp_powersgd_time_to_85_s"]),
            f(e["pool_bytes_per_sample"], "%.0f"),
            f(e["ddp_bytes_per_sample"], "%.0f"), f(e["bytes_vs_ddp"]),
            " ".join("%s %.0f%%/%.0f%%" % (k, 100 * cp[k], 100 * pk[k])
                     for k in cp)))
    sys.stderr.write("(no latency added: tbf-shaped bandwidth only)\n")
    print(json.dumps(summary))
    return 0


def _on_signal(signum, frame):
    # Unwinds through main()'s finally: processes ended, namespaces removed.
    raise KeyboardInterrupt("signal %d" % signum)


if __name__ == "__main__":
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    try:
        sys.exit(main())
    except KeyboardInterrupt as e:
        log("interrupted (%s): cleaned up" % (e or "Ctrl-C"))
        sys.exit(130)
