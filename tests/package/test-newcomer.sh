#!/usr/bin/env bash
# A newcomer's first minute (issue 16's target): from `apt-get install
# ./gradpool-agent_*.deb` to "computing" in under 30 s, and the job's
# progress on the agent's page.
#
#   test-newcomer.sh AGENT_DEB COORDINATOR
#
# AGENT_DEB is the package tools/build-deb made; COORDINATOR the
# gradpool-coordinator program that serves the pool (the coordinator
# package's, unpacked). The newcomer's machine is this one seen through a
# mount namespace whose /usr, /etc and /var are overlays (the changes go to
# a scratch directory) and whose /run is empty, as after a boot: the
# package really installs, with apt-get and only the local .deb, and
# nothing outside the test changes. No systemd runs here (as in a
# container), so the newcomer follows docs/operations.md "Without systemd",
# whose commands are taken from the document and run as written (the token
# put in). The clock runs from apt-get to the first "connected: computing"
# of `gradpool-agent status`; the page is the one the packaged agent.conf
# turns on, read over HTTP and drawn by headless Chromium (a screenshot in
# $GP_SHOTS/newcomer-agent-page.png). Every process the test started is
# ended by its PID. Needs root (mount namespaces); skips (77) otherwise.
set -euo pipefail

deb=$(readlink -f "$1")
coord=$2
root_dir=${GP_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
doc=$root_dir/docs/operations.md
limit_s=${GP_NEWCOMER_LIMIT_S:-30}

[ "$(id -u)" = 0 ] || { echo "skip: needs root for a mount namespace"; exit 77; }
for tool in unshare nsenter apt-get curl runuser choom chrt ionice setsid; do
	command -v "$tool" >/dev/null || { echo "skip: no $tool"; exit 77; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gp-newcomer.XXXXXX")
holder=
serve_pid=
fail() {
	echo "FAIL: $*" >&2
	for f in "$tmp"/serve.err "$tmp"/ns/var/u/log/gradpool-agent.log; do
		[ -f "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
	done
	exit 1
}
# Every process in the newcomer's mount namespace (the agent, its restart
# loop), by PID, then the namespace's holder and the coordinator.
cleanup() {
	local p ns sig
	if [ -n "$holder" ] && ns=$(readlink "/proc/$holder/ns/mnt" 2>/dev/null); then
		for sig in TERM KILL; do
			for p in /proc/[0-9]*; do
				p=${p#/proc/}
				[ "$p" != "$holder" ] && [ "$p" != $$ ] &&
					[ "$(readlink "/proc/$p/ns/mnt" 2>/dev/null)" = "$ns" ] &&
					kill -s "$sig" "$p" 2>/dev/null || true
			done
			[ "$sig" = TERM ] && sleep 1
		done
		kill "$holder" 2>/dev/null || true
		wait "$holder" 2>/dev/null || true
	fi
	if [ -n "$serve_pid" ]; then
		kill "$serve_pid" 2>/dev/null || true
		wait "$serve_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- The pool: a job long enough to watch ----------------------------------
port=$(free_port)
cat > "$tmp/newcomer.ini" <<EOF
[model]
spec = 784-256-128-10
[data]
set = fashion-mnist
[train]
epochs = 30
batch_size = 128
eval = true
[pool]
listen = 127.0.0.1:$port
EOF
"$coord" init --state "$tmp/coord" --endpoint "127.0.0.1:$port" >/dev/null ||
	fail "coordinator init"
"$coord" serve --state "$tmp/coord" --job "$tmp/newcomer.ini" \
	--web 127.0.0.1:0 >"$tmp/serve.out" 2>"$tmp/serve.err" &
serve_pid=$!
for _ in $(seq 150); do
	grep -q "^listening on" "$tmp/serve.out" && break
	sleep 0.2
done
grep -q "^listening on" "$tmp/serve.out" || fail "serve did not start"
token=$("$coord" invite --state "$tmp/coord" | tail -n 1)
case $token in gp1-*) ;; *) fail "invite printed '$token'" ;; esac

# --- The newcomer's machine --------------------------------------------------
mkdir -p "$tmp/ns"
unshare --mount --propagation private -- bash -c '
	set -e
	for d in usr etc var; do
		mkdir -p "$1/$d/u" "$1/$d/w"
		mount -t overlay overlay \
			-o "lowerdir=/$d,upperdir=$1/$d/u,workdir=$1/$d/w" "/$d"
	done
	mount -t tmpfs -o mode=0755 tmpfs /run
	mkdir -p /run/lock
	touch "$1/ready"
	exec sleep 3600' newcomer "$tmp/ns" &
holder=$!
for _ in $(seq 50); do
	[ -e "$tmp/ns/ready" ] && break
	sleep 0.1
done
[ -e "$tmp/ns/ready" ] || fail "the newcomer's namespace did not come up"
on_machine() { nsenter --target "$holder" --mount -- "$@"; }
on_machine test ! -e /usr/bin/gradpool-agent ||
	fail "gradpool-agent is installed already: not a newcomer's machine"

# The page's port: the packaged agent.conf's, unless something else (a test
# running beside this one) holds it.
web_port=7180
if ! /usr/bin/python3 -c 'import socket; socket.socket().bind(("127.0.0.1", 7180))' 2>/dev/null; then
	web_port=$(free_port)
	echo "note: 127.0.0.1:7180 is taken here; the page goes to $web_port"
fi

# The documented commands: from the agent's "install -d" to the end of
# its restart loop, without "sudo ", with the token.
steps=$(awk '
	index($0, "sudo install -d -m 0750 -o gradpool-agent") == 1 { on = 1 }
	on { print }
	on && /do sleep 10; done'\''$/ { exit }' "$doc" | sed 's/^sudo //')
[ -n "$steps" ] || fail "no agent commands under \"Without systemd\" in $doc"
steps=${steps//gp1-.../$token}
printf '%s\n' "$steps" > "$tmp/steps.sh"
bash -n "$tmp/steps.sh" || fail "the documented commands do not parse"

start=$(date +%s.%N)
elapsed() { /usr/bin/python3 -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$start" "$(date +%s.%N)"; }
on_machine env DEBIAN_FRONTEND=noninteractive sh -c \
	"cd '${deb%/*}' && apt-get install -y './${deb##*/}'" \
	>"$tmp/apt.out" 2>&1 || { cat "$tmp/apt.out" >&2; fail "apt-get install"; }
# Only the local file: its dependencies are this machine's already (the
# build needed them), and nothing is fetched.
if ! grep -q "0 upgraded, 1 newly installed" "$tmp/apt.out" ||
	! grep -q "^Need to get 0 B/" "$tmp/apt.out"; then
	cat "$tmp/apt.out" >&2
	fail "apt-get installed more than the local package"
fi
t_install=$(elapsed)
echo "installed in $t_install s"
if [ "$web_port" != 7180 ]; then
	on_machine sed -i "s/^listen = 127.0.0.1:7180/listen = 127.0.0.1:$web_port/" \
		/etc/gradpool/agent.conf
fi
on_machine bash "$tmp/steps.sh" >"$tmp/steps.out" 2>&1 ||
	{ cat "$tmp/steps.out" >&2; fail "the documented commands failed"; }
t_started=$(elapsed)
echo "joined and started in $t_started s: $(grep -m1 -i 'joined' "$tmp/steps.out" || true)"

computing=
while :; do
	out=$(on_machine gradpool-agent status 2>&1 || true)
	if grep -q "^connected: computing" <<<"$out"; then
		computing=$(elapsed)
		break
	fi
	t=$(elapsed)
	[ "${t%.*}" -lt $((limit_s + 30)) ] || break
	sleep 0.2
done
echo "$out"
[ -n "$computing" ] || fail "not computing $((limit_s + 30)) s after apt-get install began"
echo "computing $computing s after apt-get install began (install $t_install s, join and start $t_started s)"
[ "${computing%.*}" -lt "$limit_s" ] ||
	fail "computing only after $computing s (the target: under $limit_s s)"

# --- The page: the job and its progress ----------------------------------------
url=http://127.0.0.1:$web_port/
page=
for _ in $(seq 150); do
	page=$(curl -fsS "$url" 2>/dev/null || true)
	grep -q 'id="job-name">newcomer<' <<<"$page" &&
		grep -q 'id="job-progress"' <<<"$page" &&
		grep -q 'data-role="served"' <<<"$page" && break
	sleep 0.2
done
grep -q 'id="job-name">newcomer<' <<<"$page" ||
	fail "the page at $url does not name the job: $(head -c 600 <<<"$page")"
progress=$(sed -n 's/.*id="job" data-job-id="[0-9]*" data-progress="\([0-9.]*\)".*/\1/p' <<<"$page")
echo "the page at $url: job newcomer, progress $progress"
[ -n "$progress" ] || fail "no progress on the page"
chromium=$(command -v chromium || true)
if [ -n "$chromium" ] && [ -n "${GP_SHOTS:-}" ]; then
	mkdir -p "$GP_SHOTS"
	shot=$GP_SHOTS/newcomer-agent-page.png
	# Once the first evaluation is in, the page has everything to show.
	for _ in $(seq 300); do
		curl -fsS "$url" 2>/dev/null | grep -q '<strong id="job-accuracy">' && break
		sleep 0.2
	done
	"$chromium" --headless --disable-gpu --no-sandbox --no-first-run \
		--user-data-dir="$tmp/chromium" --hide-scrollbars \
		--window-size=1100,1300 --screenshot="$shot" "$url" \
		>"$tmp/chromium.out" 2>&1 || fail "chromium: $(tail -n 5 "$tmp/chromium.out")"
	[ "$(stat -c %s "$shot")" -gt 10000 ] || fail "an empty screenshot $shot"
	echo "screenshot $shot"
else
	echo "note: no screenshot (chromium or GP_SHOTS missing)"
fi
# The progress moves on the page, and the work is this machine's.
for _ in $(seq 150); do
	page=$(curl -fsS "$url" 2>/dev/null || true)
	progress=$(sed -n 's/.*id="job" data-job-id="[0-9]*" data-progress="\([0-9.]*\)".*/\1/p' <<<"$page")
	credit=$(sed -n 's/.*data-credit-updates="\([0-9]*\)".*/\1/p' <<<"$page")
	[ -n "$progress" ] && [ "${credit:-0}" -gt 0 ] &&
		/usr/bin/python3 -c "import sys; sys.exit(not float(sys.argv[1]) > 0)" "$progress" &&
		break
	sleep 0.2
done
/usr/bin/python3 -c "import sys; sys.exit(not float(sys.argv[1]) > 0)" "${progress:-0}" ||
	fail "the page's progress stays at ${progress:-nothing}"
[ "${credit:-0}" -gt 0 ] || fail "the page credits this machine with no update"
echo "the page: progress $progress, $credit updates of this machine applied"
echo "ok: a newcomer computes $computing s after apt-get install began, and sees the job's progress on the page"
