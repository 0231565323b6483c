"""A hostile network against one coordinator, for test_flood.py and
tools/bench-flood: raw TCP connections on 127.0.0.1 that

  - never finish a handshake (connect and say nothing),
  - stop half-way (half a Noise message 1, then silence: half-open),
  - send random garbage, reconnecting whenever the coordinator hangs up,

while tests/fault/hostile-agent in probe mode, an honest client that never
joins, measures application heartbeat round trips, and a hostile-agent in
noread mode (a member that never reads) sits on the coordinator's queue.
The coordinator's peak memory comes from /proc/PID/status (VmHWM)."""
import os
import re
import resource
import socket
import subprocess
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_status(pid):
    """VmRSS and VmHWM of pid in KiB."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def parse_probe(text):
    m = re.search(r"probe: samples=(\d+) sent=(\d+) p50_us=(\d+) "
                  r"p99_us=(\d+) max_us=(\d+)", text)
    if not m:
        return None
    return {k: int(v) for k, v in zip(
        ("samples", "sent", "p50_us", "p99_us", "max_us"), m.groups())}


def start_probe(hostile, token, duration_ms, interval_ms=20):
    return subprocess.Popen([hostile, "probe", token, "--duration-ms",
                             str(duration_ms), "--interval-ms",
                             str(interval_ms), "--timeout-ms",
                             str(duration_ms + 60000)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)


class Flood:
    """The raw-socket part of the flood. Everything is closed by close()."""

    def __init__(self, port, idle=1000, half_open=0, garbage=20):
        self.port = port
        self.idle_n = idle
        self.half_n = half_open
        self.garbage_n = garbage
        self.socks = []
        self.garbage = []
        self.stats = {"connects": 0, "connect_errors": 0,
                      "closed_by_peer": 0, "garbage_bytes": 0,
                      "garbage_reconnects": 0}

    def _connect(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2.0)
        try:
            s.connect(("127.0.0.1", self.port))
        except OSError:
            self.stats["connect_errors"] += 1
            s.close()
            return None
        s.setblocking(False)
        self.stats["connects"] += 1
        return s

    def open(self):
        """Opens the idle and half-open connections and the garbage
        senders."""
        for i in range(self.idle_n + self.half_n):
            s = self._connect()
            if not s:
                continue
            if i >= self.idle_n:
                # A frame header announcing a 96-byte message 1 and only
                # 40 bytes of it.
                try:
                    s.send(b"\x00\x60" + os.urandom(40))
                except OSError:
                    pass
            self.socks.append(s)
        for _ in range(self.garbage_n):
            s = self._connect()
            if s:
                self.garbage.append(s)

    def pump(self, seconds):
        """Sends garbage for seconds; reconnects the senders the
        coordinator drops. Counts idle connections it closed."""
        end = time.monotonic() + seconds
        chunk = os.urandom(16384)
        while time.monotonic() < end:
            for i, s in enumerate(self.garbage):
                try:
                    n = s.send(chunk)
                    self.stats["garbage_bytes"] += n
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
                    self.stats["garbage_reconnects"] += 1
                    ns = self._connect()
                    if ns:
                        self.garbage[i] = ns
            time.sleep(0.01)

    def count_closed(self):
        n = 0
        for s in self.socks:
            try:
                if s.recv(1) == b"":
                    n += 1
            except BlockingIOError:
                pass
            except OSError:
                n += 1
        self.stats["closed_by_peer"] = n
        return n

    def close(self):
        for s in self.socks + self.garbage:
            s.close()
        self.socks = []
        self.garbage = []


def run_phase(pool, hostile, token, seconds, flood=None, noread=False):
    """One measurement: a probe for seconds, with or without the flood.
    Returns (probe dict, serve status dict, flood stats)."""
    pid = pool.serve_proc.pid
    extra = None
    if noread:
        extra = subprocess.Popen([hostile, "noread", token, "--timeout-ms",
                                  str(int(seconds * 1000) + 5000)],
                                 stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL,
                                 stdin=subprocess.DEVNULL)
    # The probe connects first: during the flood new handshakes may find
    # the coordinator's handshake slots full (an honest agent that is
    # already connected is what the flood must not hurt).
    probe = start_probe(hostile, token, int(seconds * 1000) + 1000)
    time.sleep(1.0)
    stats = None
    try:
        if flood:
            flood.open()
            flood.pump(seconds)
            flood.count_closed()
            stats = dict(flood.stats)
        out, err = probe.communicate(timeout=seconds + 90)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
        if extra:
            if extra.poll() is None:
                extra.terminate()
            extra.wait()
        if flood:
            flood.close()
    return parse_probe(out), proc_status(pid), stats, out + err
