#!/usr/bin/env bash
# tools/demo, the main command, as a newcomer runs it (issue 16, item 10):
# it ends by itself, with exit status 0, within LIMIT_S; it leaves no
# process behind (it runs in a session of its own, and none of that
# session's processes is left once it returned); its last line is the
# final test accuracy, at least 80 %; and every agent did a visible share
# of the work (at least 2 % of the samples the ledger applied; two of
# them compute on PoCL's OpenCL device where one exists, which starts
# slowly). Needs the build the test suite made (GP_ROOT's build/).
set -euo pipefail

root=${GP_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
if [ -n "${GP_BUILD_ROOT:-}" ] &&
	[ "$(realpath "$GP_BUILD_ROOT")" != "$(realpath "$root/build")" ]; then
	echo "skip: tools/demo runs $root/build, not $GP_BUILD_ROOT"
	exit 77
fi
limit_s=${LIMIT_S:-480}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gp-test-demo.XXXXXX")
kept=
cleanup() {
	rm -rf "$tmp"
	[ -n "$kept" ] && rm -rf "$kept"
	return 0
}
trap cleanup EXIT
fail() {
	echo "FAIL: $*" >&2
	tail -n 40 "$tmp/demo.out" >&2 || true
	exit 1
}

start=$SECONDS
rc=0
# A session of its own: its id is the PID of the shell that execs the
# demo under timeout.
setsid bash -c 'echo $$ > "$1/sid"; exec timeout -k 10 "$2" "$3" --epochs 3 --keep' \
	demo "$tmp" "$limit_s" "$root/tools/demo" >"$tmp/demo.out" 2>&1 || rc=$?
took=$((SECONDS - start))
sid=$(cat "$tmp/sid")
kept=$(sed -n 's/.*kept \(\/[^ ]*gradpool-demo\.[A-Za-z0-9]*\).*/\1/p' "$tmp/demo.out" | tail -n 1)
echo "tools/demo --epochs 3: exit status $rc after $took s"
[ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || fail "tools/demo did not end within $limit_s s"
[ "$rc" -eq 0 ] || fail "tools/demo exited with $rc"

# Nothing of its session is left.
sleep 1
left=$(ps -e -o sid=,pid=,args= | awk -v s="$sid" '$1 == s')
[ -z "$left" ] || fail "processes of the demo's session still run: $left"
echo "ok: no process of the demo's session is left"

# (--keep adds its "kept DIR" note after it.)
last=$(grep -v '^==> kept ' "$tmp/demo.out" | tail -n 1)
acc=$(sed -n 's/^final test accuracy: \([0-9.]*\) *%.*/\1/p' <<<"$last")
[ -n "$acc" ] || fail "the last line is not the final accuracy: '$last'"
/usr/bin/python3 -c "import sys; sys.exit(not float(sys.argv[1]) >= 80)" "$acc" ||
	fail "final test accuracy $acc % (at least 80 % after 3 epochs)"
echo "ok: $last"

# Every agent's share, from the ledger the demo kept.
[ -n "$kept" ] && [ -f "$kept/coord/ledger.db" ] || fail "the demo kept no ledger"
/usr/bin/python3 - "$kept/coord/ledger.db" <<'EOF' || fail "an agent did no visible share"
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
rows = db.execute("SELECT a.name, coalesce(sum(u.samples), 0) FROM agents a"
                  " LEFT JOIN updates u ON u.agent_id = a.id AND"
                  " u.outcome = 'applied' AND u.rolled_back = 0"
                  " GROUP BY a.id ORDER BY a.id").fetchall()
total = sum(n for _, n in rows)
for name, n in rows:
    print("  %-10s %6.1f %% of %d samples" % (name, 100.0 * n / total, total))
sys.exit(not (len(rows) == 3 and all(n >= 0.02 * total for _, n in rows)))
EOF
grep '^epoch ' "$tmp/demo.out" | sed 's/^/  /'
echo "ok: every agent did a visible share of the work"
