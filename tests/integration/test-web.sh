#!/usr/bin/env bash
# The local statistics page (issue 6, item 5) in headless Chromium, against
# a real agent's database after a short real training run:
#   - `run --web=127.0.0.1:0` serves it; the page shows the agent's state
#     (connected, then paused with its reason), the totals equal to what
#     `gradpool-agent stats --json` reads from the same database, the two
#     SVG charts with one bar per day and today's bar non-zero, and the
#     per-day, per-pool and per-device tables (issue 16, item 4: axis
#     labels in human units, compute time in a unit that shows it, MiB,
#     no row without a pool, the traffic booked to the device), with a
#     screenshot in meson-logs/web-agent-page.png;
#   - `gradpool-agent web` shows the same numbers from the database and the
#     running agent's state through the control socket, then "stopped";
#   - an address that is not loopback is refused, and so is a request
#     whose Host header names another site (DNS rebinding).
# Skips (77) only when Chromium is missing and cannot be installed.
. "$(dirname "$0")/lib-volunteer.sh"

CHROMIUM=$(command -v chromium || true)
if [ -z "$CHROMIUM" ] && [ "$(id -u)" = 0 ]; then
	flock /tmp/gp-apt.lock env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || true
	CHROMIUM=$(command -v chromium || true)
fi
[ -n "$CHROMIUM" ] || { echo "skip: chromium cannot be installed"; exit 77; }

# Screenshots go next to the test logs (meson-logs of the build that runs
# the test), for a person to look at.
SHOTS=$(dirname "$(dirname "$AGENT")")/meson-logs

# shot URL NAME: a PNG of the page as Chromium draws it.
shot() {
	timeout 90 "$CHROMIUM" --headless --disable-gpu --no-sandbox \
		--no-first-run --user-data-dir="$T/chromium" --hide-scrollbars \
		--window-size=1000,2000 --screenshot="$SHOTS/$2.png" "$1" \
		>> "$T/chromium.log" 2>&1 || fail "chromium could not draw $1"
	[ -s "$SHOTS/$2.png" ] || fail "no screenshot $2"
}

# dump URL FILE: the DOM after Chromium loaded the page.
dump() {
	timeout 90 "$CHROMIUM" --headless --disable-gpu --no-sandbox \
		--no-first-run --user-data-dir="$T/chromium" \
		--dump-dom "$1" > "$2" 2>> "$T/chromium.log" ||
		fail "chromium could not load $1"
}

# check_page DOM STATE: what the page shows against `stats --json`.
check_page() {
	"$AGENT" stats --state "$T/agent" --json --by day > "$T/stats.json"
	/usr/bin/python3 - "$1" "$2" "$T/stats.json" <<'PY'
import json, re, sys, time
from html.parser import HTMLParser

dom, want_state, stats = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))

class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.bars, self.tables, self.cur_svg = {}, {}, {}, None
        self.state_text, self.in_state = "", False
        self.ticks, self.in_tick = {}, False
        self.cur_table, self.cell, self.heads = None, None, {}
        self.compute_text, self.in_compute = "", False
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids[a["id"]] = (tag, a)
        if tag == "svg":
            self.cur_svg = a.get("id")
            self.bars[self.cur_svg] = []
            self.ticks[self.cur_svg] = []
        if tag == "rect" and "bar" in a.get("class", "") and self.cur_svg:
            self.bars[self.cur_svg].append(a)
        if tag == "text" and a.get("class") == "tick" and self.cur_svg:
            self.in_tick = True
            self.ticks[self.cur_svg].append("")
        if a.get("id") == "state":
            self.in_state = True
        if a.get("id") == "total-compute":
            self.in_compute = True
        if tag == "table":
            self.cur_table = a.get("id")
            self.tables[self.cur_table] = []
            self.heads[self.cur_table] = []
        if tag == "tr" and self.cur_table:
            self.tables[self.cur_table].append([])
        if tag in ("td", "th") and self.cur_table:
            self.cell = [tag, "", a.get("data-value")]
    def handle_endtag(self, tag):
        if tag == "svg":
            self.cur_svg = None
        if tag == "p":
            self.in_state = False
        if tag == "text":
            self.in_tick = False
        if tag == "span":
            self.in_compute = False
        if tag == "table":
            self.cur_table = None
        if tag in ("td", "th") and self.cell:
            kind, text, value = self.cell
            if kind == "th":
                self.heads[self.cur_table].append(text)
            else:
                self.tables[self.cur_table][-1].append((text, value))
            self.cell = None
    def handle_data(self, d):
        if self.in_state:
            self.state_text += d
        if self.in_tick:
            self.ticks[self.cur_svg][-1] += d
        if self.in_compute:
            self.compute_text += d
        if self.cell:
            self.cell[1] += d

p = Page()
p.feed(open(dom).read())
def need(c, what):
    if not c:
        sys.exit("page: " + what)

need("state" in p.ids, "no state element")
need(p.ids["state"][1].get("data-state") == want_state,
     "state %r, want %r" % (p.ids["state"][1].get("data-state"), want_state))
print("state line:", p.state_text.strip())
total = stats["total"]
need(total["samples"] > 0, "no samples in the database")
shown = int(p.ids["total-samples"][1]["data-value"])
need(shown == total["samples"], "total samples %d, database %d" % (shown, total["samples"]))
for chart in ("chart-samples", "chart-gflop"):
    need(chart in p.ids and p.ids[chart][0] == "svg", "no %s svg" % chart)
    bars = p.bars[chart]
    need(len(bars) == 30, "%s has %d bars" % (chart, len(bars)))
    today = time.strftime("%Y-%m-%d", time.gmtime())
    need(bars[-1]["data-day"] == today, "last bar is %s" % bars[-1]["data-day"])
    need(float(bars[-1]["data-value"]) > 0, "%s: today's bar is empty" % chart)
    need(float(bars[-1]["height"]) > 0, "%s: today's bar has no height" % chart)
today_samples = sum(r["samples"] for r in stats["rows"] if r["day"] == today)
need(float(p.bars["chart-samples"][-1]["data-value"]) == today_samples,
     "today's bar %s, database %d" % (p.bars["chart-samples"][-1]["data-value"], today_samples))
for t in ("totals", "by-day", "by-pool", "by-device"):
    need(t in p.ids and p.ids[t][0] == "table", "no %s table" % t)
    need("MiB up" in p.heads[t] and not any("MB" in h for h in p.heads[t]),
         "%s: headings %r" % (t, p.heads[t]))
# Axis labels in human units (1.25M), never 1.248e+06.
for chart in ("chart-samples", "chart-gflop"):
    need(len(p.ticks[chart]) == 3, "%s ticks %r" % (chart, p.ticks[chart]))
    for t in p.ticks[chart]:
        need(re.fullmatch(r"-?[0-9.]+[kMGTPE]?", t) and "e" not in t,
             "%s: axis label %r" % (chart, t))
print("axes:", p.ticks["chart-samples"], p.ticks["chart-gflop"])
# Compute time recorded and shown in a unit that shows it.
need(total["compute_seconds"] > 0, "no compute time in the database")
need(abs(float(p.ids["total-compute"][1]["data-value"]) -
         total["compute_seconds"]) < 0.1, "compute time differs")
need(re.fullmatch(r"[0-9.]+ (s|min|h)", p.compute_text) and
     float(p.compute_text.split()[0]) > 0, "compute %r" % p.compute_text)
print("compute:", p.compute_text)
# Per pool: no row without a pool; per device: the traffic is the
# device's (a join's few hundred bytes have no device).
rows = {t: [r for r in p.tables[t] if r] for t in ("by-pool", "by-device")}
need(rows["by-pool"] and all(r[0][0] not in ("(none)", "(no pool)")
                             for r in rows["by-pool"]),
     "by-pool: %r" % rows["by-pool"])
dev = [r for r in rows["by-device"] if r[0][0].startswith("cpu:")]
need(len(dev) == 1, "by-device: %r" % rows["by-device"])
up = int(dev[0][5][1])
need(up >= 0.99 * total["bytes_up"] and up > 0,
     "device's bytes up %d of %d" % (up, total["bytes_up"]))
need(all(r[0][0] != "(none)" for r in rows["by-device"]), "a (none) row")
print("page ok: %d samples" % shown)
PY
}

PORT=$(free_port)
write_job "$T/job.ini"
"$COORD" init --state "$T/coord" --endpoint "127.0.0.1:$PORT" >/dev/null
TOKEN=$("$COORD" invite --state "$T/coord" | tail -n 1)
"$COORD" serve --state "$T/coord" --job "$T/job.ini" \
	--listen "127.0.0.1:$PORT" > "$T/serve.log" 2>&1 &
PIDS+=($!)
wait_for 30 grep -q "listening on" "$T/serve.log" || fail "serve did not start"
"$AGENT" join "$TOKEN" --state "$T/agent" > "$T/join.log" 2>&1 || fail "join"

# Not loopback: refused before anything starts.
if "$AGENT" web --state "$T/agent" --listen 0.0.0.0:7180 > "$T/refused.log" 2>&1; then
	fail "served on 0.0.0.0"
fi
grep -q "127.0.0.1, localhost or \[::1\] only" "$T/refused.log" || fail "refusal: $(cat "$T/refused.log")"

"$AGENT" run --state "$T/agent" --device cpu --no-bench --beacon-port 0 \
	--test-step-delay-ms 10 --web=127.0.0.1:0 > "$T/agent.log" 2>&1 &
APID=$!
PIDS+=($APID)
wait_for 30 grep -q "statistics page at" "$T/agent.log" || fail "no page"
URL=$(sed -n 's/^statistics page at //p' "$T/agent.log")
wait_for 30 state_is "$T/agent" connected || fail "agent did not connect"
wait_for 30 minibatches_gt "$T/agent" 20 || fail "agent does not compute"
# DNS rebinding: a page of another site that had its name point at
# 127.0.0.1 reaches the agent with that name in Host; refused.
/usr/bin/python3 - "$URL" <<'PY' || fail "Host header check"
import http.client, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
def get(host, path="/stats.json"):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.putrequest("GET", path, skip_host=True)
    c.putheader("Host", host)
    c.endheaders()
    r = c.getresponse()
    r.read()
    return r.status
for bad in ("attacker.example:%d" % u.port, "attacker.example",
            "127.0.0.1:1", "localhost.attacker.example:%d" % u.port):
    for path in ("/", "/stats.json", "/status"):
        s = get(bad, path)
        assert s == 421, (bad, path, s)
for good in ("127.0.0.1:%d" % u.port, "localhost:%d" % u.port,
             "LOCALHOST:%d" % u.port, "127.0.0.1"):
    s = get(good)
    assert s == 200, (good, s)
PY
dump "$URL" "$T/dom-connected.html"
grep -q 'data-state="connected"' "$T/dom-connected.html" || fail "page does not say connected"

# Pause, so that the database stops changing, and wait for the flush.
"$AGENT" pause --state "$T/agent" >/dev/null || fail "pause"
sleep 2
n=$(status_field "$T/agent" minibatches)
flushed() {
	"$AGENT" stats --state "$T/agent" --json |
		/usr/bin/python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["total"]["minibatches"] != int(sys.argv[1]))' "$n"
}
wait_for 20 flushed || fail "the database never caught up with $n minibatches"
dump "$URL" "$T/dom-paused.html"
check_page "$T/dom-paused.html" paused || fail "the agent's page"
shot "$URL" web-agent-page
grep -q "paused by the user" "$T/dom-paused.html" || fail "no pause reason"

# The web command: same numbers, the state through the control socket.
"$AGENT" web --state "$T/agent" --listen 127.0.0.1:0 > "$T/web.log" 2>&1 &
WPID=$!
PIDS+=($WPID)
wait_for 10 grep -q "statistics page at" "$T/web.log" || fail "web command"
URL2=$(sed -n 's/^statistics page at //p' "$T/web.log")
dump "$URL2" "$T/dom-web.html"
check_page "$T/dom-web.html" paused || fail "the web command's page"
kill -TERM "$APID"
wait "$APID" || fail "agent exit status"
dump "$URL2" "$T/dom-stopped.html"
check_page "$T/dom-stopped.html" stopped || fail "page of a stopped agent"
kill -TERM "$WPID"
wait "$WPID" || fail "web command exit status"
echo "web: all checks passed"
