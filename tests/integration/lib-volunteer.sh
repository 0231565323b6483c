# Shared helpers of the volunteer tests (sourced): a coordinator serving a
# small job on 127.0.0.1 and the agent's CLI, each in the test's own
# temporary directory. Needs AGENT, COORD (the programs) in the environment.
# shellcheck shell=bash
set -euo pipefail

T=$(mktemp -d /tmp/gp-vol.XXXXXX)
PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	if [ -n "${KEEP:-}" ]; then
		echo "kept $T" >&2
	else
		rm -rf "$T"
	fi
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	for f in "$T"/*.log; do
		[ -f "$f" ] || continue
		echo "--- $f" >&2
		tail -n 30 "$f" >&2
	done
	exit 1
}

# A free TCP port on 127.0.0.1 (bind to port 0 and read it back).
free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# write_job FILE [EXTRA [pool] LINES...]: a job long enough to watch (a slow
# agent computes a few steps a second).
write_job() {
	local f=$1
	shift
	{
		printf '[model]\nspec = 784-32-10\n[train]\nepochs = 20\n'
		printf 'batch_size = 32\ncheckpoint_interval = 5s\neval = false\n'
		printf '[pool]\nlisten = 127.0.0.1:0\nheartbeat_interval = 1s\n'
		printf 'heartbeat_timeout = 5s\n'
		local l
		for l in "$@"; do
			printf '%s\n' "$l"
		done
	} > "$f"
}

# wait_for SECONDS CMD...: retries CMD every 0.2 s until it succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.2
	done
}

# status_field STATE_DIR KEY: one field of `gradpool-agent status --json`.
status_field() {
	"$AGENT" status --state "$1" --json 2>/dev/null |
		/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

state_is() {
	[ "$(status_field "$1" state)" = "$2" ]
}

# minibatches_gt STATE_DIR N: the running agent computed more than N.
minibatches_gt() {
	[ "$(status_field "$1" minibatches)" -gt "$2" ]
}
