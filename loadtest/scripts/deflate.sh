#!/usr/bin/env bash
# deflate.sh: broadcast of 1 KiB JSON with permessage-deflate against without, for fanout and each
# peer in SERVERS, alternately: deliveries per server CPU second, and the bytes the loopback
# interface carried (all traffic, TCP/IP headers included) per delivery.
#
#   loadtest/scripts/deflate.sh
#   SERVERS="fanout uws-node" SIZES="1000:100" ROUNDS=3 loadtest/scripts/deflate.sh
#
# Variables ([default]): SERVERS ["fanout ws-node uws-node"] (servers with permessage-deflate:
# fanout's broadcast example, Node.js `ws` compressing per connection, uWebSockets.js with its
# shared compressor), SIZES, pairs SUBSCRIBERS:PUBLISHES_PER_S ["1000:100 10000:10"], PAYLOAD
# [1024], ROUNDS [1], DURATION [10s], SERVER_CPUS [0], LOAD_CPUS [1], plus those of common.sh.
# The rates are ones the slowest server sustains, so every server does the same work; the
# generator inflates every compressed delivery and checks its order and latency.
# Results: $OUT/runs.jsonl, $OUT/bytes.jsonl, and one markdown table on stdout.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 2
fi
: "${SERVERS:=fanout ws-node uws-node}" "${SIZES:=1000:100 10000:10}" "${PAYLOAD:=1024}" "${ROUNDS:=1}"
SERVER_CPUS=${SERVER_CPUS-0}
LOAD_CPUS=${LOAD_CPUS-1}
PROTOCOL=raw
read -ra servers <<<"$SERVERS"
lt_init deflate
SERVER=fanout lt_defaults broadcast
lt_build broadcast "${servers[@]}"
lo_bytes() { cat /sys/class/net/lo/statistics/tx_bytes; }

echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit $(git -C "$LT_ROOT" rev-parse --short HEAD); $(nproc) CPUs; server on ${SERVER_CPUS:-any}, generator on ${LOAD_CPUS:-any}" |
    tee "$OUT/machine.txt"
failed=0
extra=$EXTRA
for round in $(seq "$ROUNDS"); do
    for size in $SIZES; do
        CONNS=${size%%:*} RATE=${size##*:}
        for kind in "${servers[@]}"; do
            for COMPRESSION in 0 1; do
                tag="deflate-r$round-$kind-$CONNS-c$COMPRESSION"
                EXTRA="--payload $PAYLOAD $extra"
                b0=$(lo_bytes)
                lt_run broadcast "$kind" "$tag" || failed=$((failed + 1))
                b1=$(lo_bytes)
                printf '{"tag":"%s","server":"%s","conns":%d,"rate":%d,"compression":%d,"lo_bytes":%d}\n' \
                    "$tag" "$kind" "$CONNS" "$RATE" "$COMPRESSION" "$((b1 - b0))" >>"$OUT/bytes.jsonl"
            done
        done
    done
done

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
runs = {}
for line in open(f"{out}/runs.jsonl"):
    r = json.loads(line)
    runs[r["tag"]] = r
print()
print("| server | subscribers, publishes/s | compression | deliveries/s | deliveries per server CPU second | loopback bytes per delivery | p99 publish to delivery | server CPU | generator CPU | lost |")
print("|---|---|---|---|---|---|---|---|---|---|")
for line in open(f"{out}/bytes.jsonl"):
    b = json.loads(line)
    run = runs.get(b["tag"])
    try:
        g = json.load(open(run["json"]))
    except Exception:
        print(f"| {b['server']} | {b['conns']:,}, {b['rate']}/s | {'on' if b['compression'] else 'off'} | failed | | | | | | |")
        continue
    wall = run["t1"] - run["t0"]
    cpu = run["server_cpu_ticks"] / run["clk_tck"]
    delivered = g["counters"]["received"]
    per_s = g["throughput"].get("deliveries_per_s") or g["throughput"].get("messages_per_s") or 0
    per_cpu = delivered / cpu if cpu else 0
    p99 = g.get("latency_us", {}).get("p99", 0) / 1000
    gen = f"{g['generator']['pct']:.0f}%" + (" (the limit)" if g.get("generator_bottleneck") else "")
    lost = g.get("delivery", {}).get("lost", "?")
    print(f"| {b['server']} | {b['conns']:,}, {b['rate']}/s | {'on' if b['compression'] else 'off'} | {per_s:,.0f} | "
          f"{per_cpu:,.0f} | {b['lo_bytes'] / max(delivered, 1):,.0f} B | {p99:.1f} ms | {100 * cpu / wall:.0f}% | {gen} | {lost} |")
PY
lt_log "results in $OUT"
((failed == 0)) || lt_die "$failed run(s) failed"
