#!/usr/bin/env bash
# compare.sh SCENARIO: the same scenario against fanout and each peer, alternately
# (A B C A B C ...) for ROUNDS rounds, one server worker each, the server pinned to one core and
# the generator to another; then per server the median of the main figure, its ratio
# fanout/server, the median CPU of the server and of the generator, and which side limited the
# runs (the generator's "bound by" verdict).
#
# compare.sh headline: BENCHMARKS.md's headline table in one run: echo with 100 and with 1,000
# connections, n2, broadcast, connect and idle memory, each against fanout and every peer of
# SERVERS alternately, ROUNDS rounds; prints ONE markdown table (peer, scenario, figure, fanout's
# and the peer's medians, ratio, both sides' CPU, the bound-by verdicts) into $OUT/headline.md.
#
#   loadtest/scripts/compare.sh echo                 (echo | n2 | broadcast | connect | idle | slow | shootout | headline)
#   ROUNDS=5 CONNS=1000 loadtest/scripts/compare.sh echo
#   CONNS=1000 THREADS=2 loadtest/scripts/compare.sh n2
#   CONNS=10000 RATE=1000 loadtest/scripts/compare.sh broadcast
#   SERVERS="fanout sockudo" PROTOCOL=pusher CONNS=1000 RATE=100 loadtest/scripts/compare.sh broadcast
#   PEER_uws_cpp='/opt/uws/build/server --mode {mode} --port {port}' SERVERS="fanout uws-cpp" \
#       loadtest/scripts/compare.sh headline
#
# Any peer joins by its command line: PEER_NAME='command {addr}' and NAME in SERVERS (see
# common.sh for the placeholders {addr} {port} {host} {mode} {workers}, and the rule for names
# with a '-'). The peer must serve what the scenario needs ({mode}): echo (echo, connect, idle),
# broadcast (every message to every connection, the sender included: n2, and broadcast with
# PROTOCOL=raw), shootout; it must print a line with ws://HOST:PORT/ unless given {addr} or
# {port}. A shipped peer that cannot serve a scenario (sockudo outside PROTOCOL=pusher, ws-node
# for shootout) is left out of that scenario, with a note.
#
# Main figures: echo messages/s, n2 deliveries/s, broadcast p99 publish-to-delivery latency
# (lower is better), connect upgrades/s, idle bytes per connection (lower is better), slow the
# healthy subscribers' p99 (lower is better), shootout the most clients. A ratio from a run whose
# generator was saturated (bound by "generator" or "both") is printed with "(generator-bound:
# not a server figure)", never bare.
#
# Variables ([default]): ROUNDS [3], SERVERS ["fanout tokio-tungstenite fastwebsockets"],
# SERVER_CPUS [0], LOAD_CPUS [1] (set either empty to leave it unpinned; with several CPUs in
# LOAD_CPUS, give the generator THREADS or PROCESSES to use them), WORKERS [1], THREADS [1];
# broadcast and slow use PROTOCOL=raw [raw] so that every server does the same work (fanout runs
# its broadcast example), or PROTOCOL=pusher to compare Pusher servers (fanout's gateway with a
# Pusher app, sockudo; the same app for both, PUSHER_APP_* of common.sh, and the publisher on
# HTTP_CONNS [1] connections to the HTTP API); the scenario's own variables as in its script
# (echo.sh, n2.sh, ...); and those of common.sh. Every run is bounded by `timeout`.
# headline takes per case (defaults in brackets; DURATION [10s] for all): ECHO_SMALL_CONNS [100],
# ECHO_LARGE_CONNS [1000], N2_CONNS [1000], BROADCAST_CONNS [10000], BROADCAST_RATE [1000],
# CONNECT_PROCESSES [2] and CONNECT_ADDRS [8] (the generator must open upgrades at least twice
# as fast as the server accepts them: several processes and source addresses), IDLE_CONNS
# [10000], IDLE_RAMP [5000], and HEADLINE_CASES ["echo-100 echo-1000 n2 broadcast connect idle"]
# to run fewer. Loopback only.
# Results: $OUT/runs.jsonl, one generator JSON and SVG per run, the servers' logs.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"

lt_scenario_arg "$0" "${1:-}"
: "${ROUNDS:=3}" "${SERVERS:=fanout tokio-tungstenite fastwebsockets}"
SERVER_CPUS=${SERVER_CPUS-0}
LOAD_CPUS=${LOAD_CPUS-1}
read -ra servers <<<"$SERVERS"
((ROUNDS >= 1)) || lt_die "ROUNDS must be at least 1"
((ROUNDS >= 3)) || lt_log "note: ROUNDS=$ROUNDS; figures to publish want at least 3 rounds"

lt_init "compare-$scenario"

# machine_txt SETTINGS...: what was run where, for the results.
machine_txt() {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git -C "$LT_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$LT_ROOT" diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
    echo "scenario: $scenario; rounds: $ROUNDS; servers: ${servers[*]}"
    echo "pinning: server ${SERVER_CPUS:-unpinned}, generator ${LOAD_CPUS:-unpinned}; server workers $WORKERS, generator threads $THREADS"
    for kind in "${servers[@]}"; do
        if lt_custom "$kind"; then
            local var
            var=$(lt_peer_var "$kind")
            echo "peer $kind: ${!var}"
        fi
    done
    echo "settings: $*"
}

settings() {
    local v
    for v in CONNS PAYLOAD IN_FLIGHT RATE VIA PROTOCOL HTTP_CONNS SLOW RAMP DURATION STEP LIMIT_MS PROCESSES ADDRS EXTRA; do
        [[ $v == VIA && ${PROTOCOL:-} == pusher ]] || { [[ -n ${!v:-} ]] && printf '%s=%s ' "$v" "${!v}"; }
    done
}

failed=0

# run_rounds SCENARIO CASE: ROUNDS rounds of SCENARIO against each server that can serve it.
run_rounds() {
    local scen=$1 case=$2 round kind role
    for round in $(seq "$ROUNDS"); do
        for kind in "${servers[@]}"; do
            role=$(lt_role "$scen" "$kind")
            if ! lt_serves "$kind" "$role"; then
                ((round > 1)) || lt_log "$case: $kind cannot serve $role; left out"
                continue
            fi
            LT_CASE=$case lt_run "$scen" "$kind" "$case-r$round-$kind" || {
                lt_log "run $case-r$round-$kind failed (status $?)"
                failed=$((failed + 1))
            }
        done
    done
}

if [[ $scenario != headline ]]; then
    if [[ $scenario == broadcast || $scenario == slow ]]; then
        : "${PROTOCOL:=raw}"
    fi
    SERVER=fanout lt_defaults "$scenario"
    lt_build "$scenario" "${servers[@]}"
    machine_txt "$(settings)" | tee "$OUT/machine.txt"
    run_rounds "$scenario" "$scenario"
    echo
    cat "$OUT/machine.txt"
    python3 "$LT_SCRIPTS/report.py" compare "$OUT/runs.jsonl" "$scenario" | tee "$OUT/compare.txt" || failed=$((failed + 1))
    lt_log "results in $OUT"
    ((failed == 0)) || lt_die "$failed run(s) failed"
    exit 0
fi

# headline: the cases in turn, each with its own settings (the user's DURATION, THREADS, ...
# apply to all; the case variables above to one).
: "${HEADLINE_CASES:=echo-100 echo-1000 n2 broadcast connect idle}" "${PROTOCOL:=raw}"
user_processes=${PROCESSES:-} user_addrs=${ADDRS:-}
read -ra cases <<<"$HEADLINE_CASES"

# headline_case CASE: sets `scen` and the scenario variables of CASE.
headline_case() {
    unset CONNS RATE RAMP IN_FLIGHT VIA HTTP_CONNS
    PROCESSES=$user_processes ADDRS=$user_addrs
    case $1 in
        echo-100) scen=echo CONNS=${ECHO_SMALL_CONNS:-100} ;;
        echo-1000) scen=echo CONNS=${ECHO_LARGE_CONNS:-1000} ;;
        n2) scen=n2 CONNS=${N2_CONNS:-1000} ;;
        broadcast) scen=broadcast CONNS=${BROADCAST_CONNS:-10000} RATE=${BROADCAST_RATE:-1000} ;;
        connect) scen=connect PROCESSES=${CONNECT_PROCESSES:-2} ADDRS=${CONNECT_ADDRS:-8} ;;
        idle) scen=idle CONNS=${IDLE_CONNS:-10000} RAMP=${IDLE_RAMP:-5000} ;;
        *) lt_die "unknown headline case $1 (echo-100 echo-1000 n2 broadcast connect idle)" ;;
    esac
    SERVER=fanout lt_defaults "$scen"
}

for c in "${cases[@]}"; do
    headline_case "$c"
    lt_build "$scen" "${servers[@]}"
done
{
    machine_txt "DURATION=${DURATION:-10s} cases: ${cases[*]}"
    for c in "${cases[@]}"; do
        headline_case "$c"
        echo "  $c: $scen $(settings)"
    done
} | tee "$OUT/machine.txt"
for c in "${cases[@]}"; do
    headline_case "$c"
    run_rounds "$scen" "$c"
done
echo
cat "$OUT/machine.txt"
python3 "$LT_SCRIPTS/report.py" headline "$OUT/runs.jsonl" | tee "$OUT/headline.md" || failed=$((failed + 1))
lt_log "results in $OUT (the table: $OUT/headline.md)"
((failed == 0)) || lt_die "$failed run(s) failed"
