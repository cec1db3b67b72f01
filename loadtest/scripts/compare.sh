#!/usr/bin/env bash
# compare.sh SCENARIO: the same scenario against fanout and each peer, alternately
# (A B C A B C ...) for ROUNDS rounds, one server worker each, the server pinned to one core and
# the generator to another; then per server the median of the main figure, its ratio
# fanout/server, and the median CPU of the server and of the generator.
#
#   loadtest/scripts/compare.sh echo                 (echo | n2 | broadcast | connect | idle | slow | shootout)
#   ROUNDS=5 CONNS=1000 loadtest/scripts/compare.sh echo
#   CONNS=1000 loadtest/scripts/compare.sh n2
#   CONNS=10000 RATE=1000 loadtest/scripts/compare.sh broadcast
#   SERVERS="fanout sockudo" PROTOCOL=pusher CONNS=1000 RATE=100 loadtest/scripts/compare.sh broadcast
#
# Main figures: echo messages/s, n2 deliveries/s, broadcast p99 publish-to-delivery latency
# (lower is better), connect upgrades/s, idle bytes per connection (lower is better), slow the
# healthy subscribers' p99 (lower is better), shootout the most clients.
#
# Variables ([default]): ROUNDS [3], SERVERS ["fanout tokio-tungstenite fastwebsockets"],
# SERVER_CPUS [0], LOAD_CPUS [1] (set either empty to leave it unpinned), WORKERS [1],
# THREADS [1]; broadcast and slow use PROTOCOL=raw [raw] so that every server does the same work
# (fanout runs its broadcast example), or PROTOCOL=pusher to compare Pusher servers (fanout's
# gateway with a Pusher app, sockudo; the same app for both, PUSHER_APP_* of common.sh, and the
# publisher on HTTP_CONNS [1] connections to the HTTP API); the scenario's own variables as in its
# script (echo.sh, n2.sh, ...); and those of common.sh. Every run is bounded by `timeout`.
# Loopback only.
# Results: $OUT/runs.jsonl, one generator JSON and SVG per run, the servers' logs.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"

lt_scenario_arg "$0" "${1:-}"
: "${ROUNDS:=3}" "${SERVERS:=fanout tokio-tungstenite fastwebsockets}"
SERVER_CPUS=${SERVER_CPUS-0}
LOAD_CPUS=${LOAD_CPUS-1}
if [[ $scenario == broadcast || $scenario == slow ]]; then
    : "${PROTOCOL:=raw}"
fi
read -ra servers <<<"$SERVERS"
((ROUNDS >= 1)) || lt_die "ROUNDS must be at least 1"
((ROUNDS >= 3)) || lt_log "note: ROUNDS=$ROUNDS; figures to publish want at least 3 rounds"

lt_init "compare-$scenario"
SERVER=fanout lt_defaults "$scenario"
lt_build "$scenario" "${servers[@]}"

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git -C "$LT_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$LT_ROOT" diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
    echo "scenario: $scenario; rounds: $ROUNDS; servers: ${servers[*]}"
    echo "pinning: server ${SERVER_CPUS:-unpinned}, generator ${LOAD_CPUS:-unpinned}; server workers $WORKERS, generator threads $THREADS"
    echo "settings: $(for v in CONNS PAYLOAD IN_FLIGHT RATE VIA PROTOCOL HTTP_CONNS SLOW RAMP DURATION STEP LIMIT_MS PROCESSES ADDRS EXTRA; do [[ $v == VIA && ${PROTOCOL:-} == pusher ]] || { [[ -n ${!v:-} ]] && printf '%s=%s ' "$v" "${!v}"; }; done)"
} | tee "$OUT/machine.txt"

failed=0
for round in $(seq "$ROUNDS"); do
    for kind in "${servers[@]}"; do
        lt_run "$scenario" "$kind" "$scenario-r$round-$kind" || {
            lt_log "run $scenario-r$round-$kind failed (status $?)"
            failed=$((failed + 1))
        }
    done
done

echo
cat "$OUT/machine.txt"
python3 "$LT_SCRIPTS/report.py" compare "$OUT/runs.jsonl" "$scenario" | tee "$OUT/compare.txt" || failed=$((failed + 1))
lt_log "results in $OUT"
((failed == 0)) || lt_die "$failed run(s) failed"
