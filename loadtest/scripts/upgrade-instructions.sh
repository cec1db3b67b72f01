#!/usr/bin/env bash
# upgrade-instructions.sh [UPGRADES] [RATE]: the user-space instructions the echo example spends
# per WebSocket upgrade, counted by valgrind's callgrind (repeatable: the same binary and inputs
# give the same count whatever else the machine does), with `fanout-load connect` driving
# UPGRADES [3000] upgrades at RATE [1000] per second. Prints the total, the count per upgrade
# and the heaviest functions; the profile stays in $OUT [target/loadtest/upgrade-instructions-*].
# Kernel time is not counted: it is what `connect.sh` measures. Under valgrind the CPU reports no
# SHA extensions, so sha1 runs in software here and counts more than it costs on such a CPU.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
fi
upgrades=${1:-3000} rate=${2:-1000}
command -v valgrind >/dev/null || lt_die "needs valgrind (apt-get install valgrind)"
lt_init upgrade-instructions
if [[ $SKIP_BUILD != 1 ]]; then
    (cd "$LT_ROOT" && cargo build --release --quiet -p fanout-load && cargo build --release --quiet --example echo)
fi
log="$OUT/echo.log" profile="$OUT/callgrind.out"
setsid valgrind --tool=callgrind --callgrind-out-file="$profile" "$LT_ROOT/target/release/examples/echo" 127.0.0.1:0 \
    2>"$log" &
vpid=$!
LT_PIDS+=("$vpid")
for _ in $(seq 200); do grep -q listening "$log" && break; sleep 0.1; done
port=$(grep -o 'listening on ws://127.0.0.1:[0-9]*' "$log" | grep -o '[0-9]*$') || lt_die "echo did not start: $log"
"$LOAD_BIN" connect --url "ws://127.0.0.1:$port/" --conns "$upgrades" --rate "$rate" --duration 600s --quiet |
    grep -E "^connections"
kill -TERM "$vpid"
wait "$vpid" || true
total=$(callgrind_annotate "$profile" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "instructions: $total in all, $((total / upgrades)) per upgrade"
callgrind_annotate "$profile" | sed -n '/file:function/,$p' | sed -n '3,17p' | cut -c1-150
