#!/usr/bin/env bash
# The volunteer's life with a real coordinator and a real agent on
# 127.0.0.1 (issue 6, items 2, 4 and 6):
#   - an agent started before joining waits ("waiting", READY=1 sent), and
#     picks up the membership `join` writes (control socket "reload");
#   - join as root into a state directory owned by another user creates
#     its files as that user, and follows no link that user planted there
#     (it cannot make root create or overwrite a file elsewhere);
#   - a second agent on the same state directory is refused;
#   - the control socket is 0660 and refuses a peer that is neither root
#     nor the agent's user (SO_PEERCRED), even one that may open it;
#   - pause / resume: the coordinator stops sending work (the agent's step
#     count stops) and starts again;
#   - on_ac_only with a fake power supply: unplugged -> paused "on
#     battery", plugged -> computing again;
#   - sd_notify: READY=1, STATUS= lines and WATCHDOG=1 reach $NOTIFY_SOCKET;
#   - leave: the membership is marked left, the agent says bye and waits.
. "$(dirname "$0")/lib-volunteer.sh"

PORT=$(free_port)
write_job "$T/job.ini"
"$COORD" init --state "$T/coord" --endpoint "127.0.0.1:$PORT" >/dev/null
TOKEN=$("$COORD" invite --state "$T/coord" --uses 2 | tail -n 1)
"$COORD" serve --state "$T/coord" --job "$T/job.ini" \
	--listen "127.0.0.1:$PORT" > "$T/serve.log" 2>&1 &
PIDS+=($!)
wait_for 30 grep -q "listening on" "$T/serve.log" || fail "serve did not start"

# A fake sd_notify socket that logs every datagram, one per line.
cat > "$T/notify.py" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a") as f:
    while True:
        d = s.recv(4096).decode(errors="replace").replace("\n", " | ")
        f.write(d + "\n")
        f.flush()
PY
/usr/bin/python3 "$T/notify.py" "$T/notify.sock" "$T/notify.txt" &
PIDS+=($!)
wait_for 10 test -S "$T/notify.sock" || fail "no notify socket"

# A fake power supply, plugged in.
mkdir -p "$T/ps/AC" "$T/ps/BAT0"
echo Mains > "$T/ps/AC/type"
echo 1 > "$T/ps/AC/online"
echo Battery > "$T/ps/BAT0/type"
echo Charging > "$T/ps/BAT0/status"

# The state directory belongs to the service's user (here nobody), as
# tmpfiles.d makes it; root runs the agent and the CLI.
mkdir -m 0700 "$T/agent"
chown nobody:nogroup "$T/agent"
# Root acts on the state files as their owner, who must reach them (as
# under /var/lib).
chmod 0755 "$T"

NOTIFY_SOCKET="$T/notify.sock" WATCHDOG_USEC=1000000 \
GP_POWER_SUPPLY_DIR="$T/ps" \
	"$AGENT" run --state "$T/agent" --device cpu --no-bench --beacon-port 0 \
	--on-ac-only --test-step-delay-ms 30 > "$T/agent.log" 2>&1 &
APID=$!
PIDS+=($APID)

# Before joining: waiting, and why.
wait_for 20 state_is "$T/agent" waiting || fail "agent not waiting"
[ "$(status_field "$T/agent" reason)" = \
	"not a member of any pool (gradpool-agent join TOKEN)" ] ||
	fail "waiting reason: $(status_field "$T/agent" reason)"
wait_for 10 grep -q "READY=1" "$T/notify.txt" || fail "no READY=1"
grep -q "STATUS=waiting: not a member" "$T/notify.txt" || fail "no STATUS= line"
wait_for 10 grep -q "WATCHDOG=1" "$T/notify.txt" || fail "no WATCHDOG=1"

# The control socket: 0660, and a peer that may open it (group nogroup)
# but is neither root nor the agent's user is refused.
mode=$(stat -c %a "$T/agent/control")
[ "$mode" = 660 ] || fail "control socket mode $mode"
chgrp nogroup "$T/agent/control"
chmod 0755 "$T"
chmod 0711 "$T/agent" 2>/dev/null || true
cp "$AGENT" "$T/agent-copy"
chmod 0755 "$T/agent-copy"
if out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups \
	"$T/agent-copy" pause --control "$T/agent/control" --state /nonexistent 2>&1); then
	fail "nobody could pause the agent: $out"
fi
echo "$out" | grep -q "permission denied" || fail "nobody: $out"
chmod 0700 "$T/agent"
state_is "$T/agent" waiting || fail "the refused pause changed the state"

# Links planted by the directory's owner (the service's user) in place of
# the key, the database or its journal: join as root follows none of them.
mkdir -m 0700 "$T/evil"
chown nobody:nogroup "$T/evil"
for f in agent.key agent.db agent.db-wal agent.db-journal; do
	ln -s "$T/victim-$f" "$T/evil/$f"
done
chown -h nobody:nogroup "$T/evil"/*
if "$AGENT" join "$TOKEN" --state "$T/evil" > "$T/evil.log" 2>&1; then
	fail "join through planted links succeeded"
fi
for f in agent.key agent.db agent.db-wal agent.db-journal; do
	[ ! -e "$T/victim-$f" ] || fail "join created $T/victim-$f through a link"
done
rm "$T/evil/agent.key"
if "$AGENT" join "$TOKEN" --state "$T/evil" > "$T/evil.log" 2>&1; then
	fail "join through a planted database link succeeded"
fi
grep -q "symbolic link" "$T/evil.log" || fail "evil join: $(cat "$T/evil.log")"
for f in agent.db agent.db-wal agent.db-journal; do
	[ ! -e "$T/victim-$f" ] || fail "join created $T/victim-$f through a link"
done

# Join as root: the running agent picks the pool up.
"$AGENT" join "$TOKEN" --state "$T/agent" --name vol-test > "$T/join.log" 2>&1 ||
	fail "join failed"
grep -q "the running agent picks the pool up now" "$T/join.log" ||
	fail "join did not reach the agent"
for f in agent.key agent.db; do
	owner=$(stat -c %U "$T/agent/$f")
	[ "$owner" = nobody ] || fail "$f belongs to $owner, not nobody"
done
wait_for 30 state_is "$T/agent" connected || fail "agent did not connect"
wait_for 30 minibatches_gt "$T/agent" 4 ||
	fail "no minibatches computed"

# A second agent on the same state directory is refused, and the first
# keeps its control socket.
if timeout 20 "$AGENT" run --state "$T/agent" --device cpu --no-bench \
	--beacon-port 0 > "$T/second.log" 2>&1; then
	fail "a second agent ran on the same state directory"
fi
grep -q "another agent already runs on $T/agent" "$T/second.log" ||
	fail "second agent: $(cat "$T/second.log")"
state_is "$T/agent" connected || fail "the first agent lost its control socket"

# Pause: the coordinator stops sending work, so the count stops.
"$AGENT" pause --state "$T/agent" | grep -q "ok: paused" || fail "pause"
state_is "$T/agent" paused || fail "not paused"
[ "$(status_field "$T/agent" reason)" = "paused by the user (gradpool-agent resume)" ] ||
	fail "pause reason"
sleep 1.5 # the steps already queued finish
n1=$(status_field "$T/agent" minibatches)
sleep 2
n2=$(status_field "$T/agent" minibatches)
[ "$n1" = "$n2" ] || fail "paused agent still computing ($n1 -> $n2)"
wait_for 10 grep -q "STATUS=paused: paused by the user" "$T/notify.txt" ||
	fail "no paused STATUS="
"$AGENT" resume --state "$T/agent" | grep -q "ok: resumed" || fail "resume"
wait_for 10 minibatches_gt "$T/agent" "$n2" ||
	fail "resumed agent does not compute"
state_is "$T/agent" connected || fail "not connected after resume"

# Unplugged: paused on battery; plugged again: computing.
echo 0 > "$T/ps/AC/online"
echo Discharging > "$T/ps/BAT0/status"
wait_for 10 state_is "$T/agent" paused || fail "not paused on battery"
[ "$(status_field "$T/agent" reason)" = "on battery power (on_ac_only)" ] ||
	fail "battery reason: $(status_field "$T/agent" reason)"
sleep 1.5
n1=$(status_field "$T/agent" minibatches)
sleep 2
n2=$(status_field "$T/agent" minibatches)
[ "$n1" = "$n2" ] || fail "agent on battery still computing ($n1 -> $n2)"
echo 1 > "$T/ps/AC/online"
echo Charging > "$T/ps/BAT0/status"
wait_for 10 state_is "$T/agent" connected || fail "not resumed on AC"
wait_for 10 minibatches_gt "$T/agent" "$n2" ||
	fail "agent on AC does not compute"

# Leave: marked left in the database, bye to the coordinator, waiting.
"$AGENT" leave --state "$T/agent" > "$T/leave.log" 2>&1 || fail "leave"
grep -q "the running agent said bye" "$T/leave.log" || fail "leave: no bye"
wait_for 10 state_is "$T/agent" waiting || fail "not waiting after leave"
"$AGENT" stats --state "$T/agent" --json > "$T/stats.json"
/usr/bin/python3 - "$T/stats.json" <<'PY' || fail "stats after leave"
import json, sys
d = json.load(open(sys.argv[1]))
assert len(d["pools"]) == 1 and d["pools"][0]["left_at"] is not None, d["pools"]
PY
wait_for 10 grep -q "says bye" "$T/serve.log" || fail "the coordinator heard no bye"

# Stopping: the agent exits 0, and status says nothing runs (exit 3).
kill -TERM "$APID"
wait "$APID" || fail "agent exited with $?"
set +e
"$AGENT" status --state "$T/agent" > "$T/status.txt"
rc=$?
set -e
[ $rc = 3 ] || fail "status of a stopped agent exits $rc"
grep -q "^stopped:" "$T/status.txt" || fail "status: $(cat "$T/status.txt")"

# Join again and leave with no agent running: leave says bye itself.
"$AGENT" join "$TOKEN" --state "$T/agent" > "$T/join2.log" 2>&1 || fail "second join"
grep -q "start the agent" "$T/join2.log" || fail "join without agent: $(cat "$T/join2.log")"
byes=$(grep -c "says bye" "$T/serve.log")
"$AGENT" leave --state "$T/agent" > "$T/leave2.log" 2>&1 || fail "leave without agent"
grep -q "told the coordinator bye" "$T/leave2.log" || fail "leave2: $(cat "$T/leave2.log")"
more_byes() {
	[ "$(grep -c "says bye" "$T/serve.log")" -gt "$byes" ]
}
wait_for 10 more_byes ||
	fail "the coordinator heard no second bye"
if "$AGENT" leave --state "$T/agent" > "$T/leave3.log" 2>&1; then
	fail "left a pool twice"
fi
grep -q "not a member of any pool" "$T/leave3.log" || fail "leave3: $(cat "$T/leave3.log")"
echo "volunteer: all checks passed"
