#!/usr/bin/env bash
# LAN discovery (issue 6, item 3), between two network namespaces joined by
# a veth pair that the test creates and removes:
#   - an agent joins a coordinator at 10.X.1; the coordinator moves to
#     10.X.3 (its token endpoint no longer answers);
#   - forged beacons carrying the pool's key but pointing at a listener that
#     is not the coordinator are tried and dropped: the Noise handshake
#     against the pinned key fails, the agent never reports "connected";
#   - the real coordinator's beacons lead the agent to 10.X.3: it connects,
#     computes, and remembers the new address first in its membership.
# Skips (77) when not root or without network namespaces.
. "$(dirname "$0")/lib-volunteer.sh"

[ "$(id -u)" = 0 ] || { echo "skip: needs root for network namespaces"; exit 77; }
command -v ip >/dev/null || { echo "skip: no ip (iproute2)"; exit 77; }
NS_C=gp-c$$
NS_A=gp-a$$
ip netns add "$NS_C" 2>/dev/null || { echo "skip: no network namespaces"; exit 77; }
ip netns add "$NS_A" || { ip netns del "$NS_C"; echo "skip: no network namespaces"; exit 77; }
netns_cleanup() {
	cleanup
	ip netns del "$NS_C" 2>/dev/null || true
	ip netns del "$NS_A" 2>/dev/null || true
}
trap netns_cleanup EXIT

NET=10.$((100 + $$ % 100)).$(($$ / 100 % 250))
ip link add "vc$$" netns "$NS_C" type veth peer name "va$$" netns "$NS_A"
ip -n "$NS_C" link set lo up
ip -n "$NS_A" link set lo up
ip -n "$NS_C" addr add "$NET.1/24" dev "vc$$"
ip -n "$NS_A" addr add "$NET.2/24" dev "va$$"
ip -n "$NS_C" link set "vc$$" up
ip -n "$NS_A" link set "va$$" up
IN_C=(ip netns exec "$NS_C")
IN_A=(ip netns exec "$NS_A")

write_job "$T/job.ini" "beacon = on" "beacon_port = 7101" "beacon_interval = 1s"
sed -i 's/^listen = .*/listen = 0.0.0.0:7100/' "$T/job.ini"
"$COORD" init --state "$T/coord" --endpoint "$NET.1:7100" >/dev/null
TOKEN=$("$COORD" invite --state "$T/coord" | tail -n 1)

serve() {
	"${IN_C[@]}" "$COORD" serve --state "$T/coord" --job "$T/job.ini" \
		>> "$T/serve.log" 2>&1 &
	SERVE=$!
	PIDS+=($SERVE)
	wait_for 30 grep -q "listening on" "$T/serve.log" || fail "serve did not start"
}
serve
"${IN_A[@]}" "$AGENT" join "$TOKEN" --state "$T/agent" > "$T/join.log" 2>&1 ||
	fail "join over the veth pair failed"
KEY=$("$AGENT" stats --state "$T/agent" --json |
	/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["pools"][0]["coordinator_key"])')

# The coordinator moves: stop it, change its address.
kill -TERM "$SERVE"
wait "$SERVE" || true
: > "$T/serve.log"
ip -n "$NS_C" addr del "$NET.1/24" dev "vc$$"
ip -n "$NS_C" addr add "$NET.3/24" dev "vc$$"

"${IN_A[@]}" "$AGENT" run --state "$T/agent" --device cpu --no-bench \
	--beacon-port 7101 --test-step-delay-ms 20 > "$T/agent.log" 2>&1 &
PIDS+=($!)
wait_for 30 grep -q "listening for the pool's beacons" "$T/agent.log" ||
	fail "the agent does not listen for beacons"

# A forger on the coordinator's side: beacons with the pool's key that
# point at a TCP listener which answers with garbage.
cat > "$T/forge.py" <<'PY'
import socket, struct, sys, threading, time
net, key = sys.argv[1], bytes.fromhex(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 7200))
srv.listen(8)
def answer():
    while True:
        c, _ = srv.accept()
        try:
            c.recv(4096)
            c.sendall(b"\x00\x30" + b"\xff" * 48)
        finally:
            c.close()
threading.Thread(target=answer, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
end = time.time() + float(sys.argv[3])
while time.time() < end:
    b = b"GPbc" + bytes([1, 0]) + struct.pack(">HQ", 7200, int(time.time())) + key
    u.sendto(b, (net + ".255", 7101))
    time.sleep(0.5)
PY
"${IN_C[@]}" /usr/bin/python3 "$T/forge.py" "$NET" "$KEY" 6 > "$T/forge.log" 2>&1 ||
	fail "forger failed"
grep -q "announces itself at $NET.3:7200" "$T/agent.log" ||
	fail "the forged beacon was not even tried"
state_is "$T/agent" connected && fail "a forged beacon got the agent connected"
grep -q "connected to $NET.3:7200" "$T/agent.log" && fail "connected to the forger"

# The real coordinator at its new address.
serve
wait_for 40 state_is "$T/agent" connected || fail "the agent did not find the coordinator"
[ "$(status_field "$T/agent" endpoint)" = "$NET.3:7100" ] ||
	fail "connected to $(status_field "$T/agent" endpoint)"
wait_for 30 minibatches_gt "$T/agent" 3 || fail "no work after discovery"
grep -q "announces itself at $NET.3:7100" "$T/agent.log" || fail "no beacon in the log"
endpoints() {
	"$AGENT" stats --state "$T/agent" --json |
		/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["pools"][0]["endpoints"])'
}
remembered() {
	[ "$(endpoints)" = "$NET.3:7100,$NET.1:7100" ]
}
wait_for 10 remembered || fail "the new address was not remembered: $(endpoints)"
echo "beacon-netns: all checks passed"
