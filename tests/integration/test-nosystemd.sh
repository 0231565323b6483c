#!/usr/bin/env bash
# Running without systemd (issue 16, item 8): the commands of
# docs/operations.md "Without systemd", taken from the document itself,
# run as written, with only the paths (a temporary directory), the user
# (nobody) and the agent's test options put in:
#   - the agent runs as the user, with umask 0077, nice 19, SCHED_IDLE,
#     oom_score_adj 500 and the drivers' cache variables, as the unit sets
#     them; `status` reaches it;
#   - killed with SIGKILL, it is started again (Restart=on-failure) and
#     connects again; SIGTERM ends it and the loop (exit status 0);
#   - the coordinator's command serves as the user with umask 0077;
#     `status` says "serve: running (pid N)" with that pid; SIGTERM ends
#     it and its loop.
# Needs root (runuser); skips (77) otherwise.
. "$(dirname "$0")/lib-volunteer.sh"

[ "$(id -u)" = 0 ] || { echo "skip: needs root for runuser"; exit 77; }
for tool in runuser choom chrt ionice setsid; do
	command -v "$tool" >/dev/null || { echo "skip: no $tool"; exit 77; }
done
DOC=$(dirname "$0")/../../docs/operations.md
LOOPS=()

# block START: the documented command that starts with START, from that
# line to the loop's end, without "sudo ".
block() {
	awk -v start="$1" '
		index($0, start) == 1 { on = 1 }
		on { print }
		on && /do sleep 10; done'\''$/ { exit }' "$DOC" | sed 's/^sudo //'
}

# pids_of WORD: processes whose command line holds WORD (ours: WORD is in
# this test's temporary directory).
pids_of() {
	local p
	for p in /proc/[0-9]*; do
		{ tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null | grep -qF -- "$1" &&
			echo "${p#/proc/}"
	done
	return 0
}
cleanup_loops() {
	local p
	for p in $(pids_of "$T/"); do
		kill -KILL "$p" 2>/dev/null || true
	done
}
trap 'cleanup_loops; cleanup' EXIT

chmod 0755 "$T"
PORT=$(free_port)
write_job "$T/job.ini"
mkdir -m 0700 "$T/agent" "$T/coord" "$T/cache"
chown nobody:nogroup "$T/agent" "$T/coord" "$T/cache"

# --- The coordinator --------------------------------------------------------
runuser -u nobody -- "$COORD" init --state "$T/coord" \
	--endpoint "127.0.0.1:$PORT" >/dev/null || fail "init as nobody"
cmd=$(block "sudo setsid -f sh -c 'umask 077; ulimit -n 65536 2>/dev/null")
[ -n "$cmd" ] || fail "no coordinator command in $DOC"
cmd=${cmd//\/var\/log\/gradpool-coordinator.log/$T/serve-nosd.log}
cmd=${cmd//\/var\/lib\/gradpool-coordinator/$T/coord}
cmd=${cmd//\/etc\/gradpool\/job.ini/$T/job.ini --listen 127.0.0.1:$PORT}
cmd=${cmd//\/usr\/bin\/gradpool-coordinator/$COORD}
cmd=${cmd//runuser -u gradpool-coordinator/runuser -u nobody}
echo "$cmd" > "$T/coord-cmd.sh"
bash -n "$T/coord-cmd.sh" || fail "coordinator command: $(cat "$T/coord-cmd.sh")"
bash "$T/coord-cmd.sh" || fail "the coordinator command failed"
wait_for 30 grep -q "listening on" "$T/serve-nosd.log" || fail "serve did not start"
spid=$(runuser -u nobody -- "$COORD" status --state "$T/coord" --json |
	sed -n 's/.*"serve_pid":\([0-9]*\).*/\1/p')
[ -n "$spid" ] && [ "$spid" -gt 0 ] || fail "status gives no serve pid"
[ "$(stat -c %U /proc/"$spid")" = nobody ] || fail "serve is not nobody's"
grep -q "^Umask:.*0077" /proc/"$spid"/status || fail "serve's umask"
echo "coordinator: serve pid $spid as nobody"
TOKEN=$(runuser -u nobody -- "$COORD" invite --state "$T/coord" | tail -n 1)

# --- The agent --------------------------------------------------------------
runuser -u nobody -- "$AGENT" join "$TOKEN" --state "$T/agent" \
	> "$T/join.log" 2>&1 || fail "join as nobody"
cmd=$(block "sudo setsid -f sh -c 'umask 077; cd /")
[ -n "$cmd" ] || fail "no agent command in $DOC"
cmd=${cmd//\/var\/log\/gradpool-agent.log/$T/agent-nosd.log}
cmd=${cmd//\/var\/cache\/gradpool-agent/$T/cache}
cmd=${cmd//--state \/var\/lib\/gradpool-agent/--state $T/agent --device cpu --no-bench --beacon-port 0 --test-step-delay-ms 20}
cmd=${cmd//\/usr\/bin\/gradpool-agent/$AGENT}
cmd=${cmd//runuser -u gradpool-agent/runuser -u nobody}
echo "$cmd" > "$T/agent-cmd.sh"
bash -n "$T/agent-cmd.sh" || fail "agent command: $(cat "$T/agent-cmd.sh")"
bash "$T/agent-cmd.sh" || fail "the agent command failed"
wait_for 60 state_is "$T/agent" connected || fail "the agent did not connect"
apid=$(status_field "$T/agent" pid)
[ "$(stat -c %U /proc/"$apid")" = nobody ] || fail "the agent is not nobody's"
grep -q "^Umask:.*0077" /proc/"$apid"/status || fail "the agent's umask"
[ "$(cat /proc/"$apid"/oom_score_adj)" = 500 ] || fail "oom_score_adj"
# ps shows no nice value for SCHED_IDLE: field 19 of stat holds it.
[ "$(sed 's/.*) //' /proc/"$apid"/stat | cut -d' ' -f17)" = 19 ] ||
	fail "nice: $(cat /proc/"$apid"/stat)"
chrt -p "$apid" | grep -q SCHED_IDLE || fail "policy: $(chrt -p "$apid")"
tr '\0' '\n' < /proc/"$apid"/environ | grep -qx "POCL_CACHE_DIR=$T/cache/pocl" ||
	fail "no POCL_CACHE_DIR"
echo "agent: pid $apid as nobody, umask 0077, nice 19, SCHED_IDLE, oom 500"

# Restart=on-failure: a crash brings it back after 10 s.
kill -KILL "$apid"
wait_for 40 sh -c '[ "$("$0" status --state "$1" --json 2>/dev/null |
	sed -n "s/.*\"pid\": \([0-9]*\).*/\1/p")" != "$2" ]' \
	"$AGENT" "$T/agent" "$apid" || fail "the agent was not started again"
wait_for 60 state_is "$T/agent" connected || fail "the restarted agent did not connect"
apid2=$(status_field "$T/agent" pid)
echo "agent: restarted after SIGKILL (pid $apid2)"

# SIGTERM: exit status 0, and the loop ends with it.
kill -TERM "$apid2"
gone() { [ -z "$(pids_of "$T/agent-nosd.log")" ]; }
wait_for 30 gone || fail "the agent's loop still runs: $(pids_of "$T/agent-nosd.log")"
kill -TERM "$spid"
gone() { [ -z "$(pids_of "$T/serve-nosd.log")" ]; }
wait_for 60 gone || fail "the coordinator's loop still runs"
grep -q "stopping" "$T/agent-nosd.log" || fail "agent log: $(tail "$T/agent-nosd.log")"
echo "nosystemd: all checks passed"
