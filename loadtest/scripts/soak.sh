#!/usr/bin/env bash
# soak.sh: a long mixed run against `fanout serve` that fails if the server leaks or a healthy
# subscriber misses a message.
#
#   loadtest/scripts/soak.sh [DURATION]        DURATION: 10m (default), 30m, 90s, 1h
#
# Starts the gateway (release build) on 127.0.0.1 port 0 with an API key, then runs
# `fanout-load soak` against it for DURATION: steady subscribers and flappers (unsubscribe, then
# resubscribe with `since`) on CHANNELS channels that must see every seq exactly once and in
# order; churn connections (subscribe, read, close clean or with a reset); SLOW_PERCENT% slow
# readers that stop reading (the server closes them with 1008: expected and counted); malformed
# frames and handshakes (unmasked frame -> 1002, bad UTF-8 -> 1007, oversize -> 1009, garbage and
# a missing Sec-WebSocket-Key -> HTTP 400, anything else is a failure); HTTP publishes at RATE/s.
# Every SAMPLE_EVERY it samples the server's RSS and open fds (/proc/PID) and its connection
# count (/metrics) into a CSV. After the warm-up (the first 20%), the largest RSS of the steady
# phase's last third may exceed that of its first third by at most 10% or 8 MiB (the larger),
# and the server's fds beyond the connections the mix holds open by at most 64. It exits 0 on
# PASS and 1 on FAIL, with the reasons.
#
# Variables ([default]): CONNS steady subscribers [400], FLAPPERS [100], CHANNELS [4],
# RATE publishes/s [100], PAYLOAD bytes of data per publish [1024], CHURN_RATE connections/s
# [10], SLOW_PERCENT [1], SLOW_HOLD [100s], MALFORMED_RATE cases/s [2], SAMPLE_EVERY [5s],
# HISTORY_SIZE of the server [1000], WORKERS server threads [2], THREADS generator threads [1],
# plus OUT, SKIP_BUILD, API_KEY, SLACK, EXTRA of common.sh.
# Output in $OUT: soak.server.log, soak-samples.csv, soak.txt (the summary).
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"

case ${1:-} in
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
esac
DURATION=${1:-10m}
[[ $# -le 1 ]] || lt_die "usage: soak.sh [DURATION] (see --help)"
: "${WORKERS:=2}" "${CONNS:=400}" "${FLAPPERS:=100}" "${CHANNELS:=4}" "${RATE:=100}" "${PAYLOAD:=1024}"
: "${CHURN_RATE:=10}" "${SLOW_PERCENT:=1}" "${SLOW_HOLD:=100s}" "${MALFORMED_RATE:=2}"
: "${SAMPLE_EVERY:=5s}" "${HISTORY_SIZE:=1000}"
secs=$(lt_secs "$DURATION")
lt_init soak

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    lt_log "building fanout and fanout-load (release)"
    (cd "$LT_ROOT" && cargo build --release --quiet -p fanout-gateway -p fanout-load) || lt_die "build failed"
fi

# A resume must find what a flapper missed while away: the history holds HISTORY_SIZE per channel.
lt_start_server soak "$LT_ROOT/target/release/fanout" serve --listen 127.0.0.1:0 --workers "$WORKERS" \
    --api-key "$API_KEY" --history-size "$HISTORY_SIZE" --log-level warn
csv="$OUT/soak-samples.csv"
LT_GEN=(soak --url "$SERVER_URL" --server-pid "$SERVER_PID" --api-key "$API_KEY" --duration "${secs}s"
    --conns "$CONNS" --flappers "$FLAPPERS" --channels "$CHANNELS" --rate "$RATE" --payload "$PAYLOAD"
    --churn-rate "$CHURN_RATE" --slow-percent "$SLOW_PERCENT" --slow-hold "$SLOW_HOLD"
    --malformed-rate "$MALFORMED_RATE" --sample-every "$SAMPLE_EVERY" --threads "$THREADS"
    --handshake-timeout 10s --csv "$csv")
# shellcheck disable=SC2206
[[ -n $EXTRA ]] && LT_GEN+=($EXTRA)
# The mix's drain (up to 10 s) and the slow readers' last read come after DURATION.
limit=$((secs + 30 + SLACK))
lt_log "soak: fanout at $SERVER_URL, pid $SERVER_PID, $DURATION (limit ${limit}s)"
lt_log "fanout-load ${LT_GEN[*]}"
rc=0
# In the background so that a signal reaches the trap at once (see lt_run).
timeout --kill-after=5 "$limit" "$LOAD_BIN" "${LT_GEN[@]}" > >(tee "$OUT/soak.txt") &
LT_LOAD_PID=$!
wait "$LT_LOAD_PID" || rc=$?
LT_LOAD_PID=
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    lt_log "the server died during the soak; its log:"
    tail -n 20 "$OUT/soak.server.log" >&2
    rc=99
fi
lt_stop_server "$SERVER_PID"
((rc != 124)) || lt_log "fanout-load did not finish within ${limit}s (timeout)"
lt_log "samples: $csv; summary: $OUT/soak.txt"
exit "$rc"
