#!/usr/bin/env bash
# cluster.sh MEASURE: fanout as a cluster on Redis (--redis-url), measured from outside, each
# side of a comparison in turn (A B A B ...) for ROUNDS rounds.
#
#   loadtest/scripts/cluster.sh publish   publishes/s through one fanout node's HTTP API, pipelined
#                                         (HTTP_CONNS keep-alive connections, IN_FLIGHT requests
#                                         in flight, as fast as answers allow; PUB_VIA=ws: IN_FLIGHT
#                                         publish ops on one WebSocket) to PUB_CONNS subscribers:
#                                         the node with --redis-url ("redis") and without ("local")
#   loadtest/scripts/cluster.sh latency   publish-to-delivery latency at LAT_RATE msg/s to
#                                         LAT_CONNS subscribers: subscribers on node B and the
#                                         publisher on node A of a 2-node cluster ("cluster")
#                                         against both on one node without Redis ("single")
#   loadtest/scripts/cluster.sh pusher    deliveries per server CPU second, Pusher protocol:
#                                         2 fanout nodes on one Redis ("fanout") against 2 sockudo
#                                         nodes with its Redis adapter ("sockudo"); PSH_CONNS
#                                         subscribers split evenly over the two nodes, PSH_RATE
#                                         publishes/s through node A's HTTP API; the CPU of both
#                                         nodes counted together
#   loadtest/scripts/cluster.sh all       the three, one after the other
#
#   ROUNDS=3 DURATION=15s loadtest/scripts/cluster.sh pusher
#   PUB_VIA=ws loadtest/scripts/cluster.sh publish
#   SKIP_BUILD=1 LOAD_MAX=1.0 ROUNDS=2 loadtest/scripts/cluster.sh latency
#
# Every run: waits until the 1-minute load average (/proc/loadavg) is below LOAD_MAX, for at most
# LOAD_WAIT seconds (then runs anyway, and the load it started at is in the record); starts its
# own redis-server on a free port, without persistence (no RDB, no AOF); starts the nodes (fanout
# on port 0, its port read from its "listening on" line on stderr, then /healthz polled until
# the node is linked to Redis; sockudo on a free port, since it cannot tell which it bound, with
# config-redis.toml); runs fanout-load with every node's pid as --server-pid (their CPU summed
# over the measured phase) and redis-server's as --watch-pid (its CPU reported apart); reads each
# process's CPU ticks from /proc before and after the generator (setup included, as common.sh
# does); and stops everything (the EXIT trap too, whatever ends the script). Nothing is pinned
# unless SERVER_CPUS / LOAD_CPUS say so: two nodes, Redis and the generator share the machine.
#
# Variables ([default]): ROUNDS [3], DURATION [15s], WORKERS [1] (each node: fanout --workers,
# sockudo's tokio worker threads), THREADS [1] (generator), LOAD_MAX [0.7], LOAD_WAIT [600];
# publish: PUB_CONNS [10], PUB_VIA http|ws [http], HTTP_CONNS [16], IN_FLIGHT [128];
# latency: LAT_CONNS [1000],
# LAT_RATE [1000], LAT_VIA ws|http [ws]; pusher: PSH_CONNS [1000], PSH_RATE [100],
# PSH_HTTP_CONNS [1]; PAYLOAD [64]; REDIS_SERVER [redis-server]; SOCKUDO_BIN
# [loadtest/peers/sockudo/target/redis/bin/sockudo, built by
# `SOCKUDO_FEATURES=local,redis loadtest/peers/sockudo/build.sh` when missing, 15+ minutes];
# and those of common.sh (OUT, SKIP_BUILD, SLACK, API_KEY, PUSHER_APP_*, SERVER_CPUS, LOAD_CPUS,
# EXTRA, LOAD_BIN). Every run is bounded by `timeout` at DURATION + SLACK. Loopback only.
# Results in $OUT: runs.jsonl (one record a run: command, date, load average, exit status, every
# process's pid and /proc CPU ticks), the generator's JSON and table per run, every process's
# log, machine.txt and report.txt (each run, then medians per side).
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"

lt_scenario_arg "$0" "${1:-}"
measure=$scenario
case $measure in
    publish | latency | pusher) measures=("$measure") ;;
    all) measures=(publish latency pusher) ;;
    *) lt_die "unknown measure $measure (publish | latency | pusher | all)" ;;
esac
: "${ROUNDS:=3}" "${DURATION:=15s}" "${LOAD_MAX:=0.7}" "${LOAD_WAIT:=600}" "${PAYLOAD:=64}"
: "${PUB_CONNS:=10}" "${PUB_VIA:=http}" "${HTTP_CONNS:=16}" "${IN_FLIGHT:=128}"
: "${LAT_CONNS:=1000}" "${LAT_RATE:=1000}" "${LAT_VIA:=ws}"
: "${PSH_CONNS:=1000}" "${PSH_RATE:=100}" "${PSH_HTTP_CONNS:=1}"
: "${REDIS_SERVER:=redis-server}"
SOCKUDO_BIN=${SOCKUDO_BIN:-"$LT_ROOT/loadtest/peers/sockudo/target/redis/bin/sockudo"}
((ROUNDS >= 1)) || lt_die "ROUNDS must be at least 1"
[[ $LAT_VIA == ws || $LAT_VIA == http ]] || lt_die "LAT_VIA must be ws or http"
[[ $PUB_VIA == ws || $PUB_VIA == http ]] || lt_die "PUB_VIA must be ws or http"
command -v "$REDIS_SERVER" >/dev/null || lt_die "no $REDIS_SERVER (Debian: apt-get install redis-server)"

lt_init "cluster-$measure"

if [[ $SKIP_BUILD != 1 ]]; then
    lt_log "building fanout and fanout-load (release)"
    (cd "$LT_ROOT" && cargo build --release --quiet -p fanout-gateway -p fanout-load) ||
        lt_die "cannot build fanout and fanout-load"
fi
if [[ " ${measures[*]} " == *" pusher "* && ! -x $SOCKUDO_BIN ]]; then
    lt_log "no $SOCKUDO_BIN: building sockudo with its Redis adapter (15+ minutes)"
    SOCKUDO_FEATURES=local,redis "$LT_SOCKUDO_DIR/build.sh" || lt_die "cannot build sockudo"
fi

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git -C "$LT_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$LT_ROOT" diff --quiet 2>/dev/null || echo ' (with local changes)')"
    echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
    echo "redis: $("$REDIS_SERVER" --version)"
    echo "measures: ${measures[*]}; rounds: $ROUNDS; duration: $DURATION; node workers: $WORKERS; generator threads: $THREADS"
    echo "pinning: servers ${SERVER_CPUS:-unpinned}, generator ${LOAD_CPUS:-unpinned}; runs start below a load average of $LOAD_MAX (waiting up to ${LOAD_WAIT}s)"
    echo "settings: publish PUB_CONNS=$PUB_CONNS PUB_VIA=$PUB_VIA HTTP_CONNS=$HTTP_CONNS IN_FLIGHT=$IN_FLIGHT; latency LAT_CONNS=$LAT_CONNS LAT_RATE=$LAT_RATE LAT_VIA=$LAT_VIA; pusher PSH_CONNS=$PSH_CONNS PSH_RATE=$PSH_RATE PSH_HTTP_CONNS=$PSH_HTTP_CONNS; PAYLOAD=$PAYLOAD${EXTRA:+ EXTRA=$EXTRA}"
} | tee "$OUT/machine.txt"

# The processes of the current run, "name:pid" each; REDIS_PORT when it has a Redis.
PROCS=()
REDIS_PORT=

# wait_load: until the 1-minute load average is below LOAD_MAX, or LOAD_WAIT seconds passed.
# Sets RUN_LOAD to the load average the run starts at.
wait_load() {
    local deadline=$((SECONDS + LOAD_WAIT)) load said=0
    while :; do
        read -r load _ </proc/loadavg
        awk -v l="$load" -v m="$LOAD_MAX" 'BEGIN { exit !(l < m) }' && break
        if ((SECONDS >= deadline)); then
            lt_log "the load average is still $load after ${LOAD_WAIT}s: running anyway (it is in the record)"
            break
        fi
        ((said)) || lt_log "waiting for the 1-minute load average ($load) to fall below $LOAD_MAX"
        said=1
        sleep 5
    done
    RUN_LOAD=$load
}

# start_redis TAG: a redis-server of its own on a free port, nothing saved to disk.
start_redis() {
    REDIS_PORT=$(lt_free_port)
    LT_SERVER_PORT=$REDIS_PORT LT_SERVER_CHECK=''
    lt_start_server "$1-redis" "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --daemonize no --logfile ''
    LT_SERVER_PORT=''
    PROCS+=("redis:$SERVER_PID")
}

# start_fanout TAG NAME [FLAG...]: a fanout node on port 0 (with --redis-url when a Redis runs,
# then /healthz polled until it answers 200, i.e. the node is linked). Sets NODE_URL.
start_fanout() {
    local tag=$1 name=$2 port code deadline
    shift 2
    local cmd=("$LT_ROOT/target/release/fanout" serve --listen 127.0.0.1:0 --workers "$WORKERS"
        --api-key "$API_KEY" --log-level warn "$@")
    [[ -n $REDIS_PORT ]] && cmd+=(--redis-url "redis://127.0.0.1:$REDIS_PORT")
    LT_SERVER_PORT='' LT_SERVER_CHECK=''
    lt_start_server "$tag-$name" env -u FANOUT_REDIS_URL "${cmd[@]}"
    PROCS+=("$name:$SERVER_PID")
    NODE_URL=$SERVER_URL
    port=${NODE_URL##*:}
    port=${port%/}
    deadline=$((SECONDS + 20))
    while :; do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz" || true)
        [[ $code == 200 ]] && break
        ((SECONDS < deadline)) || lt_die "fanout node $name: /healthz answers $code after 20 s (see $OUT/$tag-$name.server.log)"
        sleep 0.1
    done
}

# start_sockudo TAG NAME: a sockudo node with the Redis adapter on a free port. Sets NODE_URL.
start_sockudo() {
    local tag=$1 name=$2
    LT_SERVER_PORT=$(lt_free_port)
    LT_SERVER_CHECK="registered app app_id=$PUSHER_APP_ID "
    lt_start_server "$tag-$name" env -u HOST -u PORT -u REDIS_URL SOCKUDO_PORT="$LT_SERVER_PORT" \
        SOCKUDO_REDIS_PORT="$REDIS_PORT" TOKIO_WORKER_THREADS="$WORKERS" PUSHER_APP_ID="$PUSHER_APP_ID" \
        PUSHER_APP_KEY="$PUSHER_APP_KEY" PUSHER_APP_SECRET="$PUSHER_APP_SECRET" \
        "$SOCKUDO_BIN" --config "$LT_SOCKUDO_DIR/config-redis.toml"
    LT_SERVER_PORT='' LT_SERVER_CHECK=''
    grep -q 'adapter initialized adapter=Redis' "$OUT/$tag-$name.server.log" ||
        lt_die "sockudo node $name did not start its Redis adapter (see $OUT/$tag-$name.server.log)"
    PROCS+=("$name:$SERVER_PID")
    NODE_URL=$SERVER_URL
}

# pids_of NAME...: the pids of the named processes of this run.
pids_of() {
    local p name
    for name in "$@"; do
        for p in "${PROCS[@]}"; do
            [[ ${p%%:*} == "$name" ]] && echo "${p#*:}"
        done
    done
}

# setup MEASURE SIDE TAG: starts the side's processes and sets GEN, the generator's arguments.
setup() {
    local measure=$1 side=$2 tag=$3 a b pid
    REDIS_PORT=
    PROCS=()
    GEN=(broadcast --payload "$PAYLOAD" --duration "$DURATION" --threads "$THREADS")
    case $measure/$side in
        publish/redis | publish/local)
            [[ $side == redis ]] && start_redis "$tag"
            start_fanout "$tag" a
            GEN+=(--url "$NODE_URL" --conns "$PUB_CONNS" --protocol fanout --via "$PUB_VIA" --in-flight "$IN_FLIGHT"
                --rate 0)
            [[ $PUB_VIA == http ]] && GEN+=(--api-key "$API_KEY" --http-conns "$HTTP_CONNS")
            ;;
        latency/cluster)
            start_redis "$tag"
            start_fanout "$tag" a
            a=$NODE_URL
            start_fanout "$tag" b
            b=$NODE_URL
            GEN+=(--url "$b" --publish-url "$a" --conns "$LAT_CONNS" --rate "$LAT_RATE" --protocol fanout
                --via "$LAT_VIA")
            [[ $LAT_VIA == http ]] && GEN+=(--api-key "$API_KEY")
            ;;
        latency/single)
            start_fanout "$tag" a
            GEN+=(--url "$NODE_URL" --conns "$LAT_CONNS" --rate "$LAT_RATE" --protocol fanout --via "$LAT_VIA")
            [[ $LAT_VIA == http ]] && GEN+=(--api-key "$API_KEY")
            ;;
        pusher/fanout | pusher/sockudo)
            start_redis "$tag"
            local app=(--pusher-app-id "$PUSHER_APP_ID" --pusher-app-key "$PUSHER_APP_KEY"
                --pusher-app-secret "$PUSHER_APP_SECRET")
            if [[ $side == fanout ]]; then
                start_fanout "$tag" a "${app[@]}"
                a=$NODE_URL
                start_fanout "$tag" b "${app[@]}"
                b=$NODE_URL
            else
                start_sockudo "$tag" a
                a=$NODE_URL
                start_sockudo "$tag" b
                b=$NODE_URL
            fi
            GEN+=(--url "$a" --url "$b" --publish-url "${a/ws:/http:}" --conns "$PSH_CONNS" --rate "$PSH_RATE"
                --protocol pusher --http-conns "$PSH_HTTP_CONNS" --app-id "$PUSHER_APP_ID"
                --app-key "$PUSHER_APP_KEY" --app-secret "$PUSHER_APP_SECRET")
            ;;
        *) lt_die "no side $side in $measure" ;;
    esac
    for pid in $(pids_of a b); do GEN+=(--server-pid "$pid"); done
    for pid in $(pids_of redis); do GEN+=(--watch-pid "$pid"); done
    # shellcheck disable=SC2206
    [[ -n $EXTRA ]] && GEN+=($EXTRA)
    GEN+=(--json "$OUT/$tag.json" --quiet)
}

# run MEASURE SIDE ROUND: one measured run, its record appended to runs.jsonl.
run() {
    local measure=$1 side=$2 round=$3 tag="$1-r$3-$2" rc=0 t0 t1 p name pid when
    wait_load
    when=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    setup "$measure" "$side" "$tag"
    local limit=$(($(lt_secs "$DURATION") + SLACK))
    local pin=()
    [[ -n $LOAD_CPUS ]] && pin=(taskset -c "$LOAD_CPUS")
    lt_log "$tag: $when, load average $RUN_LOAD; processes ${PROCS[*]}"
    lt_log "fanout-load ${GEN[*]}"
    local before=() after=()
    for p in "${PROCS[@]}"; do before+=("$(lt_ticks "${p#*:}")"); done
    t0=$(date +%s.%N)
    # In the background so that a signal reaches this script at once (see common.sh's lt_run).
    timeout --kill-after=5 "$limit" "${pin[@]}" "$LOAD_BIN" "${GEN[@]}" >"$OUT/$tag.txt" &
    LT_LOAD_PID=$!
    wait "$LT_LOAD_PID" || rc=$?
    LT_LOAD_PID=
    t1=$(date +%s.%N)
    for p in "${PROCS[@]}"; do after+=("$(lt_ticks "${p#*:}")"); done
    cat "$OUT/$tag.txt"
    for p in "${PROCS[@]}"; do
        kill -0 "${p#*:}" 2>/dev/null && continue
        lt_log "$tag: ${p%%:*} (pid ${p#*:}) died during the run; its log:"
        tail -n 20 "$OUT/$tag-${p%%:*}.server.log" >&2
        ((rc != 0)) || rc=99
    done
    lt_cleanup
    ((rc != 124)) || lt_log "$tag: fanout-load did not finish within ${limit}s (timeout)"
    local procs='' i=0
    for p in "${PROCS[@]}"; do
        name=${p%%:*} pid=${p#*:}
        procs+="${procs:+,}{\"name\":\"$name\",\"pid\":$pid,\"cpu_ticks\":$((after[i] - before[i]))}"
        i=$((i + 1))
    done
    python3 -c 'import json, sys; print(json.dumps({"tag": sys.argv[1], "measure": sys.argv[2], "side": sys.argv[3],
        "round": int(sys.argv[4]), "date": sys.argv[5], "load_avg": float(sys.argv[6]), "exit": int(sys.argv[7]),
        "json": sys.argv[8], "t0": float(sys.argv[9]), "t1": float(sys.argv[10]), "clk_tck": int(sys.argv[11]),
        "procs": json.loads(sys.argv[12]), "command": ["fanout-load"] + sys.argv[13:]}))' \
        "$tag" "$measure" "$side" "$round" "$when" "$RUN_LOAD" "$rc" "$OUT/$tag.json" "$t0" "$t1" \
        "$LT_CLK_TCK" "[$procs]" "${GEN[@]}" >>"$OUT/runs.jsonl"
    return "$rc"
}

sides_of() {
    case $1 in
        publish) echo "redis local" ;;
        latency) echo "cluster single" ;;
        pusher) echo "fanout sockudo" ;;
    esac
}

failed=0
for m in "${measures[@]}"; do
    read -ra sides <<<"$(sides_of "$m")"
    for round in $(seq "$ROUNDS"); do
        for side in "${sides[@]}"; do
            run "$m" "$side" "$round" || {
                lt_log "run $m-r$round-$side failed (status $?)"
                failed=$((failed + 1))
            }
        done
    done
done

report() {
    python3 - "$OUT/runs.jsonl" <<'EOF'
import json, statistics, sys

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for r in runs:
    try:
        r["doc"] = json.load(open(r["json"]))
    except (OSError, ValueError):
        r["doc"] = None


def get(doc, path):
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def proc_pct(r, name):
    """CPU % of the named process(es) over the whole generator run, from /proc (setup included)."""
    wall = r["t1"] - r["t0"]
    ticks = [p["cpu_ticks"] for p in r["procs"] if p["name"] in name]
    return 100.0 * sum(ticks) / r["clk_tck"] / wall if ticks and wall > 0 else None


def fig(r):
    d = r["doc"] or {}
    server_s = get(d, "server.cpu.cpu_s")
    watched = d.get("watched") or []
    redis = watched[0]["cpu"] if watched and "cpu" in watched[0] else None
    delivered = get(d, "delivery.delivered")
    published = get(d, "delivery.published")
    return {
        "published/s": get(d, "throughput.published_per_s"),
        "deliveries/s": get(d, "throughput.deliveries_per_s"),
        "published": published,
        "delivered": delivered,
        "expected": get(d, "delivery.expected"),
        "lost": get(d, "delivery.lost"),
        "out of order": get(d, "delivery.out_of_order"),
        "errors": get(d, "counters.errors"),
        "p50 ms": (get(d, "latency_us.p50") or 0) / 1000 if d else None,
        "p99 ms": (get(d, "latency_us.p99") or 0) / 1000 if d else None,
        "ack p99 ms": (get(d, "ack_latency_us.p99") or 0) / 1000 if get(d, "ack_latency_us") else None,
        "server CPU %": get(d, "server.cpu.pct"),
        "nodes CPU %": " + ".join(f"{p['cpu']['pct']:.0f}" for p in get(d, "server.processes") or [] if "cpu" in p) or None,
        "redis CPU %": redis["pct"] if redis else None,
        "generator CPU %": get(d, "generator.pct"),
        "publishes per server CPU s": published / server_s if published and server_s else None,
        "deliveries per server CPU s": get(d, "server.deliveries_per_cpu_s"),
        "server CPU % (/proc, whole run)": proc_pct(r, ("a", "b")),
        "redis CPU % (/proc, whole run)": proc_pct(r, ("redis",)),
    }


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and abs(v) < 100 and not v.is_integer():
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
    return f"{v:,.0f}"


COLUMNS = {
    "publish": ["published/s", "deliveries/s", "ack p99 ms", "errors", "server CPU %", "publishes per server CPU s",
                "redis CPU %", "generator CPU %"],
    "latency": ["published/s", "delivered", "expected", "lost", "p50 ms", "p99 ms", "server CPU %", "nodes CPU %",
                "redis CPU %", "generator CPU %"],
    "pusher": ["published/s", "deliveries/s", "delivered", "expected", "lost", "p99 ms", "server CPU %", "nodes CPU %",
               "deliveries per server CPU s", "redis CPU %", "generator CPU %"],
}
for measure in ("publish", "latency", "pusher"):
    mine = [r for r in runs if r["measure"] == measure]
    if not mine:
        continue
    cols = COLUMNS[measure]
    print(f"\n{measure}: every run (measured phase, from the generator; CPU in % of one core)")
    print("| run | date | load | exit | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 4))
    for r in mine:
        f = fig(r)
        print(f"| {r['tag']} | {r['date']} | {r['load_avg']:.2f} | {r['exit']} | "
              + " | ".join(fmt(f[c]) for c in cols) + " |")
    print(f"\n{measure}: medians per side")
    print("| side | runs | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 2))
    for side in dict.fromkeys(r["side"] for r in mine):
        rs = [fig(r) for r in mine if r["side"] == side and r["exit"] == 0]
        def med(c):
            vals = [x[c] for x in rs if isinstance(x[c], (int, float))]
            return statistics.median(vals) if vals else None
        print(f"| {side} | {len(rs)} | " + " | ".join(fmt(med(c)) for c in cols) + " |")
    warn = [r["tag"] for r in mine if (r["doc"] or {}).get("generator_bottleneck")]
    if warn:
        print(f"\nthe generator was saturated in: {', '.join(warn)}")
EOF
}

echo
cat "$OUT/machine.txt"
report | tee "$OUT/report.txt" || failed=$((failed + 1))
lt_log "results in $OUT"
((failed == 0)) || lt_die "$failed run(s) failed"
