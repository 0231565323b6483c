#!/usr/bin/env bash
# A pool over volunteers' home links (issue 11, item 6): the coordinator in
# one network namespace, two agents each in its own, each agent's veth link
# shaped with tc tbf at 20 Mbit/s in both directions (its end: upload; the
# hub's end: download), all joined by a bridge in the coordinator's
# namespace. The test makes and removes them all. The pool must still:
#   - apply every minibatch of every epoch exactly once, with every update
#     within the staleness bound (tests/lib/gppool.py's ledger checks);
#   - reach a modest test accuracy (80 %) after its 2 epochs;
#   - have sent its traffic through the shaped links (the tbf queues on
#     both ends of both links passed megabytes), and had both agents work;
#   - have measured the links (the rate serve logs with the sync interval
#     is the shaped one). The updates go as int8 (q8, the default);
#   - have sent the parameters down as q8 changes against each agent's
#     mirror (GP_CAP_PARAM_DELTA, the default) to both agents.
# With GP_WAN_BITS=4 (meson test wan-netns-q4) the job sets update_bits = 4
# and param_bits = 4: the updates go up as q4, the changes down as
# Q4_DELTA, and the same checks hold.
# It asserts on results, not on times: the figures are tools/bench-wan's.
# Skips (77) when not root or without network namespaces, veth or tbf.
. "$(dirname "$0")/lib-volunteer.sh"

[ "$(id -u)" = 0 ] || { echo "skip: needs root for network namespaces"; exit 77; }
command -v ip >/dev/null || { echo "skip: no ip (iproute2)"; exit 77; }
command -v tc >/dev/null || { echo "skip: no tc (iproute2)"; exit 77; }
NS_H=gp-wh$$
NS_A=(gp-wa1$$ gp-wa2$$)
made=()
netns_cleanup() {
	local ns
	cleanup
	for ns in "${made[@]}"; do
		ip netns del "$ns" 2>/dev/null || true
	done
}
trap netns_cleanup EXIT
for ns in "$NS_H" "${NS_A[@]}"; do
	ip netns add "$ns" 2>/dev/null || { echo "skip: no network namespaces"; exit 77; }
	made+=("$ns")
	ip -n "$ns" link set lo up
done

NET=10.$((100 + $$ % 100)).$(($$ / 100 % 250))
HUB=$NET.1
RATE=20mbit
ip -n "$NS_H" link add br0 type bridge || { echo "skip: no bridge"; exit 77; }
ip -n "$NS_H" addr add "$HUB/24" dev br0
ip -n "$NS_H" link set br0 up
for i in 1 2; do
	ns=${NS_A[$((i - 1))]}
	ip link add "h$i" netns "$NS_H" type veth peer name eth0 netns "$ns" ||
		{ echo "skip: no veth"; exit 77; }
	ip -n "$NS_H" link set "h$i" master br0
	ip -n "$NS_H" link set "h$i" up
	ip -n "$ns" addr add "$NET.$((10 + i))/24" dev eth0
	ip -n "$ns" link set eth0 up
	tc -n "$ns" qdisc add dev eth0 root tbf rate $RATE burst 32k latency 100ms ||
		{ echo "skip: no tbf qdisc"; exit 77; }
	tc -n "$NS_H" qdisc add dev "h$i" root tbf rate $RATE burst 32k latency 100ms
done

EPOCHS=2
BITS=${GP_WAN_BITS:-8}
case "$BITS" in 8|4) ;; *) echo "GP_WAN_BITS must be 8 or 4"; exit 1 ;; esac
cat > "$T/job.ini" <<EOF
[model]
spec = 784-256-128-10
seed = 1
[train]
epochs = $EPOCHS
batch_size = 128
staleness = 3
optimizer = sgd-momentum
learning_rate = 0.05
momentum = 0.9
lr_schedule = cosine
warmup_epochs = 0.1
checkpoint_interval = 30s
eval = true
[pool]
listen = $HUB:7100
heartbeat_interval = 1s
heartbeat_timeout = 10s
# Less than two pulls (a 20 Mbit/s link holds one for about 0.3 s): a
# pull that meets another still queued waits for room, and the pool must
# still train exactly once.
pull_budget_mib = 1
update_bits = $BITS
param_bits = $BITS
EOF
"$COORD" init --state "$T/coord" --listen "$HUB:7100" >/dev/null
TOKEN=$("$COORD" invite --state "$T/coord" --uses 2 --endpoint "$HUB:7100" | tail -n 1)
ip netns exec "$NS_H" "$COORD" serve --state "$T/coord" --job "$T/job.ini" \
	> "$T/serve.out" 2> "$T/serve.log" &
SERVE=$!
PIDS+=($SERVE)
wait_for 30 grep -q "listening on" "$T/serve.out" || fail "serve did not start"
for i in 1 2; do
	ip netns exec "${NS_A[$((i - 1))]}" "$AGENT" join "$TOKEN" \
		--state "$T/agent$i" --name "a$i" > "$T/join$i.log" 2>&1 ||
		fail "join over the shaped link failed"
done
for i in 1 2; do
	ip netns exec "${NS_A[$((i - 1))]}" env OPENBLAS_NUM_THREADS=1 \
		"$AGENT" run --state "$T/agent$i" --name "a$i" --device cpu \
		--threads 1 --no-bench --exit-when-done > "$T/agent$i.log" 2>&1 &
	PIDS+=($!)
done

# The job's end, however long the shaped links make it (about 30 s on a
# quiet 2-core machine).
wait_for 240 bash -c "! kill -0 $SERVE" || fail "the job did not end within 240 s"
wait "$SERVE" || fail "serve exited with $?"
grep -q "^final test accuracy" "$T/serve.out" || fail "no final evaluation"

# The coordinator measured the links from the agents' own round trips and
# sized the clocks for them: the rate it logs must be the shaped one
# (bytes down and up over the time waited; well under 20 Mbit/s with the
# latency and both ends' encoding counted, never far above it).
link=$(sed -n "s/.*sync interval [0-9]* ms (agent [0-9]*'s link \([0-9.]*\) Mbit\/s).*/\1/p" \
	"$T/serve.log" | tail -n 1)
echo "last logged link: ${link:-none} Mbit/s"
[ -n "$link" ] || fail "no link measured (no 'sync interval' line in serve.log)"
# Whether the two agents' pulls met at the budget depends on timing (2 of
# 3 runs): said, not asserted (tests/unit/test-work.c asserts the waiting).
if grep -q "pull budget full" "$T/serve.log"; then
	echo "pulls waited for the 1 MiB pull budget"
else
	echo "no pull waited for the pull budget this run"
fi
awk -v r="$link" 'BEGIN { exit !(r > 1 && r < 25) }' ||
	fail "measured link $link Mbit/s is not the shaped 20 Mbit/s"
# The traffic went through the shaped links, both ways on both.
sent() { # NS DEV: bytes its tbf queue passed
	tc -n "$1" -s qdisc show dev "$2" | awk '/^ Sent/ { print $2; exit }'
}
for i in 1 2; do
	up=$(sent "${NS_A[$((i - 1))]}" eth0)
	down=$(sent "$NS_H" "h$i")
	echo "agent $i: $up bytes up, $down bytes down through tbf at $RATE"
	[ "${up:-0}" -gt 1000000 ] && [ "${down:-0}" -gt 1000000 ] ||
		fail "agent $i's link carried $up bytes up, $down down: not the pool's traffic"
done

# Parameters came down as changes (after the first, whole pull), and the
# ledger checks below hold with them.
for i in 1 2; do
	grep -q "parameters now come as q$BITS changes" "$T/agent$i.log" ||
		fail "agent $i got no q$BITS parameter change (GP_CAP_PARAM_DELTA)"
done

/usr/bin/python3 - "$T/coord" "$EPOCHS" <<'PY' || fail "ledger checks"
import sys
import gppool

# A view on the ledger this test's coordinator wrote: the Pool's checks
# without a Pool of its own (no processes, no folder).
pool = gppool.Pool.__new__(gppool.Pool)
pool.state = sys.argv[1]
pool.job = {"train": {"epochs": int(sys.argv[2]), "batch_size": 128,
                      "staleness": 3}}
try:
    rows = pool.check_exactly_once()
    pool.check_staleness(rows)
    pool.check_accuracy(0.80)
    work = {}
    for r in rows:
        work[r[1]] = work.get(r[1], 0) + 1
    gppool.log("work per agent: %r" % work)
    gppool.check(len(work) == 2 and min(work.values()) >= 0.1 * len(rows),
                 "both agents should have worked: %r" % work)
except gppool.Failure as e:
    sys.stderr.write("FAIL: %s\n" % e)
    sys.exit(1)
PY
echo "wan-netns: all checks passed"
