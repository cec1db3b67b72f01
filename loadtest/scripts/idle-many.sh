#!/usr/bin/env bash
# idle-many.sh: resident memory per idle connection beyond one process's file limit. Starts
# SERVERS echo example processes on one port (SO_REUSEPORT spreads the connections), opens
# CONNS connections from PROCESSES generator processes over ADDRS source addresses, and divides
# the growth of the servers' summed RSS by the connections opened.
#
#   CONNS=100000 SERVERS=6 PROCESSES=6 ADDRS=5 RAMP=8000 loadtest/scripts/idle-many.sh
#
# A process may hold 20,000 descriptors here: keep CONNS/SERVERS and CONNS/PROCESSES under
# ~19,000, and CONNS/ADDRS under ~28,000 (ephemeral ports per address). Loopback only; bounded.
set -euo pipefail
: "${CONNS:=100000}" "${SERVERS:=6}" "${PROCESSES:=6}" "${ADDRS:=5}" "${RAMP:=8000}" "${HOLD:=5s}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
(cd "$root" && cargo build --release --quiet -p fanout-load && cargo build --release --quiet --example echo)
echo_bin="$root/target/release/examples/echo"
load_bin="$root/target/release/fanout-load"
out="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
"$echo_bin" 127.0.0.1:0 2>"$out/first.log" &
pids+=($!)
port=""
for _ in $(seq 1 100); do
    port="$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\)\/.*/\1/p' "$out/first.log")"
    [[ -n $port ]] && break
    sleep 0.1
done
[[ -n $port ]] || { echo "the first server did not start"; exit 1; }
for _ in $(seq 2 "$SERVERS"); do
    "$echo_bin" "127.0.0.1:$port" 2>/dev/null &
    pids+=($!)
done
sleep 0.5
rss_kb() { local t=0 p; for p in "${pids[@]}"; do t=$((t + $(awk '/VmRSS/{print $2}' "/proc/$p/status"))); done; echo "$t"; }
before=$(rss_kb)
timeout 600 "$load_bin" idle --url "ws://127.0.0.1:$port/" --conns "$CONNS" --processes "$PROCESSES" \
    --addrs "$ADDRS" --ramp "$RAMP" --duration "$HOLD" --handshake-timeout 20s --quiet >"$out/load.txt" 2>&1 &
load=$!
peak=$before
while kill -0 "$load" 2>/dev/null; do
    sleep 0.5
    now=$(rss_kb)
    ((now > peak)) && peak=$now
done
wait "$load" || true
opened=$(sed -n 's/.*asked: \([0-9,]*\) opened.*/\1/p' "$out/load.txt" | tr -d ,)
grep -E "connections|failures" "$out/load.txt" || true
echo "servers: $SERVERS on port $port; RSS ${before} kB -> peak ${peak} kB over $opened connections"
echo "bytes per idle connection: $(((peak - before) * 1024 / opened))"
