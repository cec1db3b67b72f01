# shellcheck shell=bash
# common.sh: what the load-test scripts share. Sourced by them, never run on its own.
#
# A script calls `lt_init NAME`, `lt_defaults SCENARIO`, `lt_build SCENARIO KIND...`, then
# `lt_run SCENARIO KIND TAG` once per measured run: start the server on 127.0.0.1 port 0 (its own
# process group, optionally pinned), read the port from its stderr line, run `fanout-load` under
# `timeout`, stop the server, write one line to $OUT/runs.jsonl and print the summary. Servers
# still running when the script exits, for whatever reason, are stopped by the EXIT trap.
#
# Environment understood by every script ([default]):
#   SERVER       fanout | tokio-tungstenite | fastwebsockets | ws-node | uws-node | sockudo, or
#                any NAME with a PEER_NAME command (below), who is measured [fanout] (sockudo, a
#                Pusher server, only for broadcast and slow with PROTOCOL=pusher; ws-node
#                (Node.js with the `ws` package) and uws-node (uWebSockets.js), one process
#                each, not for the gateway's protocols)
#   PEER_NAME    the command line that starts server NAME (any peer built by the user:
#                uWebSockets, Swoole, ...), run by bash with `exec` (so its pid is the server's;
#                a wrapper must exec the server too), in its own process group, pinned like the
#                others. NAME is the server's name with every character other than a letter,
#                digit or _ turned into _ (PEER_uws_cpp for uws-cpp). Placeholders: {addr}
#                (127.0.0.1:PORT), {port}, {host} (127.0.0.1), {mode} (what it must serve: echo,
#                broadcast (every message to every connection, the sender included), shootout,
#                pusher) and {workers} (WORKERS). With {addr} or {port} the script picks a free
#                port and waits until it accepts connections; without, the server must listen
#                where it likes and print a line containing ws://HOST:PORT/ (stdout or stderr).
#                Example: PEER_uws_cpp='/opt/uws/EchoServer {port}' SERVERS="fanout uws-cpp"
#   COMPRESSION  1: the server accepts permessage-deflate (fanout's --compression, ws-node's)
#                and the generator offers it (--compression)                     [0]
#   WORKERS      server worker threads (`fanout serve --workers`, FANOUT_WORKERS for the
#                examples, peers' --threads)                                   [1]
#   THREADS      generator threads (--threads)                                     [1]
#   PROCESSES    generator processes (--processes), for more than ~19k connections  [unset]
#   ADDRS        127.0.0.x addresses the generator spreads over (--addrs)          [unset]
#   SERVER_CPUS  `taskset -c` list for the server; empty: not pinned               [empty]
#   LOAD_CPUS    `taskset -c` list for the generator; empty: not pinned            [empty]
#   OUT          directory for the JSON, SVG and server logs   [target/loadtest/NAME-TIMESTAMP]
#   SKIP_BUILD   1: use the binaries already built                                 [0]
#   SLACK        seconds a run may take beyond its own length before `timeout` ends it [30]
#   API_KEY      the API key of `fanout serve` (HTTP publish)                     [loadtest]
#   PUSHER_APP_ID, PUSHER_APP_KEY, PUSHER_APP_SECRET   PROTOCOL=pusher: the one app that fanout's
#                gateway and sockudo are started with and the generator uses
#                                          [fanout-load, fanout-load-key, fanout-load-secret]
#   TLS          1: fanout serves wss:// (a test CA and certificate made in $OUT/tls by openssl)
#                and the generator trusts that CA; TLS_RESUME=1 resumes sessions   [0]
#   EXTRA        more generator flags, split on spaces                             [empty]
#   LOAD_BIN     the generator                              [target/release/fanout-load]
# Each scenario script documents its own variables (CONNS, DURATION, ...).

LT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LT_SCRIPTS="$LT_ROOT/loadtest/scripts"
LOAD_BIN=${LOAD_BIN:-"$LT_ROOT/target/release/fanout-load"}
LT_PIDS=()
LT_LOAD_PID=
LT_CLK_TCK=$(getconf CLK_TCK)

lt_log() { printf '== %s\n' "$*" >&2; }
lt_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# lt_scenario_arg SCRIPT ARG: sets `scenario` to ARG; with no ARG, or -h / --help, prints the
# script's header comment as its usage and exits 2.
lt_scenario_arg() {
    scenario=${2:-}
    if [[ -z $scenario || $scenario == -h || $scenario == --help ]]; then
        sed -n '2,/^set -euo/p' "$1" | sed '$d; s/^# \{0,1\}//'
        exit 2
    fi
}

# lt_init NAME: output directory, descriptor limit, cleanup trap.
lt_init() {
    local name=$1
    : "${SERVER:=fanout}" "${WORKERS:=1}" "${THREADS:=1}" "${SLACK:=30}" "${API_KEY:=loadtest}"
    : "${SKIP_BUILD:=0}" "${SERVER_CPUS:=}" "${LOAD_CPUS:=}" "${EXTRA:=}" "${TLS:=0}" "${TLS_RESUME:=0}"
    : "${COMPRESSION:=0}"
    : "${PUSHER_APP_ID:=fanout-load}" "${PUSHER_APP_KEY:=fanout-load-key}" "${PUSHER_APP_SECRET:=fanout-load-secret}"
    OUT=${OUT:-"$LT_ROOT/target/loadtest/$name-$(date +%Y%m%d-%H%M%S)"}
    mkdir -p "$OUT"
    # The hard limit here is 20,000 descriptors per process; servers and generator inherit it.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    trap lt_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    lt_log "output in $OUT"
}

# Stops the generator and every server this script started (each is its own process group).
lt_cleanup() {
    local pid
    if [[ -n $LT_LOAD_PID ]]; then
        kill -TERM "$LT_LOAD_PID" 2>/dev/null || true
        wait "$LT_LOAD_PID" 2>/dev/null || true
    fi
    for pid in "${LT_PIDS[@]}"; do
        lt_stop_server "$pid"
    done
    LT_PIDS=()
}

# lt_defaults SCENARIO: the scenario's variables, unless already set.
lt_defaults() {
    case $1 in
        echo) : "${CONNS:=100}" "${PAYLOAD:=64}" "${IN_FLIGHT:=1}" "${DURATION:=10s}" ;;
        n2) : "${CONNS:=100}" "${PAYLOAD:=64}" "${DURATION:=10s}" ;;
        broadcast | slow)
            : "${CONNS:=1000}" "${RATE:=1000}" "${DURATION:=10s}" "${VIA:=ws}" "${CHANNEL:=bench}"
            : "${HTTP_CONNS:=1}"
            if [[ $1 == slow ]]; then : "${SLOW:=10}"; fi
            # fanout speaks its channel protocol, sockudo Pusher's; a peer only broadcasts what it
            # receives.
            if [[ -z ${PROTOCOL:-} ]]; then
                if [[ $SERVER == fanout && $1 == broadcast ]]; then
                    PROTOCOL=fanout
                elif [[ $SERVER == sockudo ]]; then
                    PROTOCOL=pusher
                else
                    PROTOCOL=raw
                fi
            fi
            ;;
        connect) : "${RATE:=}" "${DURATION:=10s}" ;;
        idle) : "${CONNS:=10000}" "${RAMP:=5000}" "${DURATION:=10s}" ;;
        shootout) : "${CONNS:=5000}" "${STEP:=100}" "${LIMIT_MS:=250}" "${DURATION:=30s}" ;;
        *) lt_die "unknown scenario $1 (echo | n2 | broadcast | connect | idle | slow | shootout)" ;;
    esac
}

# lt_peer_var KIND: the name of the variable holding KIND's command line (PEER_NAME).
lt_peer_var() {
    local name=${1//[^A-Za-z0-9_]/_}
    echo "PEER_$name"
}

# lt_custom KIND: true when KIND is started by a PEER_NAME command line.
lt_custom() {
    local var
    var=$(lt_peer_var "$1")
    [[ -n ${!var:-} ]]
}

# lt_serves KIND ROLE: true when KIND can serve ROLE (a custom peer is taken at its word).
lt_serves() {
    local kind=$1 role=$2
    lt_custom "$kind" && return 0
    case $kind in
        fanout) return 0 ;;
        tokio-tungstenite | fastwebsockets | uws-node) [[ $role == echo || $role == broadcast || $role == shootout ]] ;;
        ws-node) [[ $role == echo || $role == broadcast ]] ;;
        sockudo) [[ $role == pusher ]] ;;
        *) return 1 ;;
    esac
}

# lt_role SCENARIO KIND: which behaviour the server needs (echo | broadcast | shootout | gateway
# | pusher).
lt_role() {
    case $1 in
        echo | connect | idle) echo echo ;;
        n2) echo broadcast ;;
        broadcast | slow)
            case $PROTOCOL in
                fanout)
                    [[ $2 == fanout ]] || lt_die "$2 does not speak fanout's channel protocol: use PROTOCOL=raw"
                    echo gateway
                    ;;
                pusher)
                    [[ $2 == fanout || $2 == sockudo ]] || lt_custom "$2" ||
                        lt_die "$2 does not speak the Pusher protocol (fanout and sockudo do): use PROTOCOL=raw"
                    echo pusher
                    ;;
                raw)
                    [[ $VIA == ws ]] || lt_die "VIA=$VIA needs fanout's HTTP API: use PROTOCOL=fanout with SERVER=fanout"
                    echo broadcast
                    ;;
                *) lt_die "unknown PROTOCOL $PROTOCOL (fanout | raw | pusher)" ;;
            esac
            ;;
        shootout) echo shootout ;;
    esac
}

# lt_tls_files: a test CA and a certificate for localhost and 127.0.0.1 signed by it (ECDSA
# P-256), in $OUT/tls, made once per script run.
lt_tls_files() {
    local dir="$OUT/tls"
    [[ -f $dir/cert.pem ]] && return 0
    mkdir -p "$dir"
    (
        cd "$dir" &&
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 7 -subj /CN=fanout-load-ca \
                -keyout ca.key -out ca.pem &&
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
                -keyout key.pem -out cert.csr &&
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n' >ext.cnf &&
            openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 7 -extfile ext.cnf \
                -out cert.pem
    ) >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; lt_die "cannot make the test certificate"; }
}

lt_peer_bin() { echo "$LT_ROOT/loadtest/peers/$1/target/release/peer-$1"; }

LT_SOCKUDO_DIR="$LT_ROOT/loadtest/peers/sockudo"

# lt_free_port: a TCP port free on 127.0.0.1 now (for a server that cannot listen on port 0 and
# tell which port it got).
lt_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# lt_server_cmd KIND ROLE: sets the array LT_SERVER_CMD, and LT_SERVER_PORT and LT_SERVER_CHECK
# when the server is given its port instead of printing it (empty otherwise).
lt_server_cmd() {
    local kind=$1 role=$2 var cmd
    LT_SERVER_PORT='' LT_SERVER_CHECK=''
    if lt_custom "$kind"; then
        var=$(lt_peer_var "$kind")
        cmd=${!var}
        [[ $TLS != 1 ]] || lt_die "TLS=1: only SERVER=fanout serves wss:// here"
        if [[ $cmd == *'{addr}'* || $cmd == *'{port}'* ]]; then
            LT_SERVER_PORT=$(lt_free_port)
        fi
        cmd=${cmd//\{addr\}/127.0.0.1:$LT_SERVER_PORT}
        cmd=${cmd//\{port\}/$LT_SERVER_PORT}
        cmd=${cmd//\{host\}/127.0.0.1}
        cmd=${cmd//\{mode\}/$role}
        cmd=${cmd//\{workers\}/$WORKERS}
        LT_SERVER_CMD=(bash -c "exec $cmd")
        return 0
    fi
    case $kind in
        fanout)
            if [[ $role == gateway || $role == pusher ]]; then
                LT_SERVER_CMD=("$LT_ROOT/target/release/fanout" serve --listen 127.0.0.1:0
                    --workers "$WORKERS" --api-key "$API_KEY" --log-level warn)
                [[ $role == gateway ]] || LT_SERVER_CMD+=(--pusher-app-id "$PUSHER_APP_ID"
                    --pusher-app-key "$PUSHER_APP_KEY" --pusher-app-secret "$PUSHER_APP_SECRET")
            else
                LT_SERVER_CMD=(env FANOUT_WORKERS="$WORKERS" "$LT_ROOT/target/release/examples/$role" 127.0.0.1:0)
            fi
            # The examples take it after their address, the gateway as a flag: the same word.
            if [[ $COMPRESSION == 1 ]]; then LT_SERVER_CMD+=(--compression); fi
            if [[ $TLS == 1 ]]; then
                lt_tls_files
                LT_SERVER_CMD+=(--tls-cert "$OUT/tls/cert.pem" --tls-key "$OUT/tls/key.pem")
            fi
            ;;
        *) [[ $TLS != 1 ]] || lt_die "TLS=1: only SERVER=fanout serves wss:// here" ;;&
        ws-node | uws-node)
            [[ $role == echo || $role == broadcast || ($role == shootout && $kind == uws-node) ]] ||
                lt_die "$kind does not serve $role"
            [[ $WORKERS == 1 ]] || lt_die "$kind is one Node.js process: WORKERS=1"
            LT_SERVER_CMD=(node "$LT_ROOT/loadtest/peers/$kind/server.js" --mode "$role" 127.0.0.1:0)
            if [[ $COMPRESSION == 1 ]]; then LT_SERVER_CMD+=(--compression); fi
            ;;
        tokio-tungstenite | fastwebsockets)
            [[ $COMPRESSION != 1 ]] || lt_die "$kind has no permessage-deflate"
            [[ $role != gateway && $role != pusher ]] || lt_die "$kind has no gateway"
            LT_SERVER_CMD=("$(lt_peer_bin "$kind")" --mode "$role" --threads "$WORKERS" 127.0.0.1:0)
            ;;
        sockudo)
            [[ $role == pusher ]] || lt_die "sockudo speaks only the Pusher protocol: broadcast or slow with PROTOCOL=pusher"
            # It logs the address it was configured with, so it gets a free port; HOST and PORT
            # in the environment would override its config file. Its tokio runtime has WORKERS
            # threads. A config file it cannot load it drops without a word (its logging starts
            # later) and runs with its defaults: the app's registration shows it did not.
            LT_SERVER_PORT=$(lt_free_port)
            LT_SERVER_CHECK="registered app app_id=$PUSHER_APP_ID "
            LT_SERVER_CMD=(env -u HOST -u PORT SOCKUDO_PORT="$LT_SERVER_PORT" TOKIO_WORKER_THREADS="$WORKERS"
                PUSHER_APP_ID="$PUSHER_APP_ID" PUSHER_APP_KEY="$PUSHER_APP_KEY"
                PUSHER_APP_SECRET="$PUSHER_APP_SECRET"
                "$LT_SOCKUDO_DIR/target/bin/sockudo" --config "$LT_SOCKUDO_DIR/config.toml")
            ;;
        *) lt_die "unknown server $kind (fanout | tokio-tungstenite | fastwebsockets | ws-node | uws-node | sockudo, or a PEER_NAME command line)" ;;
    esac
}

# lt_build SCENARIO KIND...: release builds of the generator and of each server's binary.
lt_build() {
    local scenario=$1 kind role
    shift
    [[ $SKIP_BUILD == 1 ]] && return 0
    lt_log "building fanout-load"
    (cd "$LT_ROOT" && cargo build --release --quiet -p fanout-load) || lt_die "cannot build fanout-load"
    for kind in "$@"; do
        # A peer started by its own command line was built by the user.
        lt_custom "$kind" && continue
        role=$(lt_role "$scenario" "$kind")
        lt_serves "$kind" "$role" || continue
        lt_log "building $kind ($role)"
        case $kind in
            fanout)
                if [[ $role == gateway || $role == pusher ]]; then
                    (cd "$LT_ROOT" && cargo build --release --quiet --bin fanout)
                else
                    (cd "$LT_ROOT" && cargo build --release --quiet --example "$role")
                fi
                ;;
            # From crates.io, into peers/sockudo/target (a no-op once built; see its build.sh).
            sockudo) "$LT_SOCKUDO_DIR/build.sh" ;;
            # From the npm registry, by its lockfile (a no-op once installed).
            ws-node | uws-node)
                [[ -d $LT_ROOT/loadtest/peers/$kind/node_modules ]] ||
                    (cd "$LT_ROOT/loadtest/peers/$kind" && npm ci --no-audit --no-fund --silent)
                ;;
            *)
                cargo build --release --quiet --manifest-path "$LT_ROOT/loadtest/peers/$kind/Cargo.toml"
                ;;
        esac || lt_die "cannot build $kind"
    done
}

# lt_start_server LABEL CMD...: starts a server in its own process group and waits for its
# `listening on ws://ADDR/` (or `wss://`) line, or, with LT_SERVER_PORT set (see lt_server_cmd), until that
# port on 127.0.0.1 accepts connections and the log holds LT_SERVER_CHECK. Sets SERVER_PID and
# SERVER_URL.
lt_start_server() {
    local label=$1 line deadline
    shift
    local log="$OUT/$label.server.log"
    local pin=()
    [[ -n $SERVER_CPUS ]] && pin=(taskset -c "$SERVER_CPUS")
    : >"$log"
    setsid "${pin[@]}" "$@" </dev/null >>"$log" 2>&1 &
    SERVER_PID=$!
    LT_PIDS+=("$SERVER_PID")
    deadline=$((SECONDS + 20))
    while :; do
        if [[ -n ${LT_SERVER_PORT:-} ]]; then
            if (: <"/dev/tcp/127.0.0.1/$LT_SERVER_PORT") 2>/dev/null; then
                if [[ -n ${LT_SERVER_CHECK:-} ]] && ! grep -qF "$LT_SERVER_CHECK" "$log"; then
                    cat "$log" >&2
                    lt_die "server $label listens but its log lacks \"$LT_SERVER_CHECK\": $*"
                fi
                SERVER_URL="ws://127.0.0.1:$LT_SERVER_PORT/"
                return 0
            fi
        elif line=$(grep -s -m1 -o 'wss\?://[^/ ]*/' "$log"); then
            SERVER_URL=$line
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            cat "$log" >&2
            lt_die "server $label exited before listening: $*"
        fi
        ((SECONDS < deadline)) || lt_die "server $label was not listening after 20 s (see $log): $*"
        sleep 0.05
    done
}

# lt_stop_server PID: SIGTERM to its process group, SIGKILL after 3 s.
lt_stop_server() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# lt_secs DURATION: whole seconds, rounded up ("10s", "500ms", "2m", "1h", "7").
lt_secs() {
    python3 -c '
import math, re, sys
m = re.fullmatch(r"([0-9.]+)\s*(ms|s|m|h)?", sys.argv[1].strip())
if not m:
    sys.exit("bad duration: " + sys.argv[1])
n = float(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]
print(max(1, math.ceil(n)))' "$1"
}

# CPU ticks (user + system, all threads) a live process has used.
lt_ticks() {
    local stat f
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    read -ra f <<<"${stat##*) }"
    echo $((f[11] + f[12]))
}

lt_rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# lt_publish_args: the dialect and publisher flags of broadcast and slow, appended to LT_GEN.
# PROTOCOL=pusher publishes through the Pusher HTTP API whatever VIA says.
lt_publish_args() {
    LT_GEN+=(--protocol "$PROTOCOL")
    if [[ $PROTOCOL == pusher ]]; then
        LT_GEN+=(--channel "$CHANNEL" --http-conns "$HTTP_CONNS" --app-id "$PUSHER_APP_ID"
            --app-key "$PUSHER_APP_KEY" --app-secret "$PUSHER_APP_SECRET")
        return
    fi
    LT_GEN+=(--via "$VIA")
    [[ $PROTOCOL == fanout ]] && LT_GEN+=(--channel "$CHANNEL")
    [[ $VIA == http ]] && LT_GEN+=(--api-key "$API_KEY" --http-conns "$HTTP_CONNS")
    return 0
}

# lt_gen_args SCENARIO URL PID JSON SVG: sets the array LT_GEN (the generator's arguments) and
# LT_LIMIT (seconds the run may take in all).
lt_gen_args() {
    local scenario=$1 url=$2 pid=$3 json=$4 svg=$5 secs
    LT_GEN=("$scenario" --url "$url")
    case $scenario in
        echo)
            LT_GEN+=(--conns "$CONNS" --payload "$PAYLOAD" --in-flight "$IN_FLIGHT" --duration "$DURATION")
            [[ -n ${RATE:-} ]] && LT_GEN+=(--rate "$RATE")
            ;;
        n2)
            LT_GEN+=(--conns "$CONNS" --payload "$PAYLOAD" --duration "$DURATION")
            [[ -n ${RATE:-} ]] && LT_GEN+=(--rate "$RATE")
            ;;
        broadcast)
            LT_GEN+=(--conns "$CONNS" --rate "$RATE" --duration "$DURATION")
            lt_publish_args
            ;;
        connect)
            LT_GEN+=(--duration "$DURATION")
            [[ -n $RATE ]] && LT_GEN+=(--rate "$RATE")
            ;;
        idle) LT_GEN+=(--conns "$CONNS" --ramp "$RAMP" --duration "$DURATION") ;;
        slow)
            LT_GEN+=(--conns "$CONNS" --slow "$SLOW" --rate "$RATE" --duration "$DURATION")
            lt_publish_args
            ;;
        shootout) LT_GEN+=(--conns "$CONNS" --step "$STEP" --limit-ms "$LIMIT_MS" --duration "$DURATION") ;;
    esac
    LT_GEN+=(--threads "$THREADS" --server-pid "$pid" --json "$json" --svg "$svg")
    # The cores the server can use, for the bottleneck verdict: its workers, at most the CPUs
    # it is pinned to.
    LT_GEN+=(--server-cores "$(lt_server_cores)")
    [[ -n ${PROCESSES:-} ]] && LT_GEN+=(--processes "$PROCESSES")
    [[ -n ${ADDRS:-} ]] && LT_GEN+=(--addrs "$ADDRS")
    if [[ $COMPRESSION == 1 ]]; then LT_GEN+=(--compression); fi
    [[ $TLS == 1 ]] && LT_GEN+=(--tls-ca "$OUT/tls/ca.pem")
    [[ $TLS == 1 && $TLS_RESUME == 1 ]] && LT_GEN+=(--tls-resume)
    # shellcheck disable=SC2206
    [[ -n $EXTRA ]] && LT_GEN+=($EXTRA)
    secs=$(lt_secs "$DURATION")
    # idle ramps up first: CONNS / RAMP seconds more.
    if [[ $scenario == idle ]] && ((RAMP > 0)); then
        secs=$((secs + (CONNS + RAMP - 1) / RAMP))
    fi
    LT_LIMIT=$((secs + SLACK))
}

# lt_server_cores: WORKERS, or the number of CPUs in SERVER_CPUS if that is fewer.
lt_server_cores() {
    local n=$WORKERS pinned
    if [[ -n $SERVER_CPUS ]]; then
        pinned=$(python3 -c '
import sys
n = 0
for part in sys.argv[1].split(","):
    a, _, b = part.partition("-")
    n += int(b or a) - int(a) + 1
print(n)' "$SERVER_CPUS")
        ((pinned < n)) && n=$pinned
    fi
    echo "$n"
}

# lt_run SCENARIO KIND TAG: one measured run against one server. Returns the generator's status.
lt_run() {
    local scenario=$1 kind=$2 tag=$3 role t0 t1 c0 c1 rc rss
    role=$(lt_role "$scenario" "$kind")
    lt_server_cmd "$kind" "$role"
    lt_start_server "$tag" "${LT_SERVER_CMD[@]}"
    local json="$OUT/$tag.json" svg="$OUT/$tag.svg"
    lt_gen_args "$scenario" "$SERVER_URL" "$SERVER_PID" "$json" "$svg"
    local pin=()
    [[ -n $LOAD_CPUS ]] && pin=(taskset -c "$LOAD_CPUS")
    lt_log "$tag: $kind ($role) at $SERVER_URL, pid $SERVER_PID, limit ${LT_LIMIT}s"
    lt_log "fanout-load ${LT_GEN[*]}"
    c0=$(lt_ticks "$SERVER_PID")
    t0=$(date +%s.%N)
    rc=0
    # In the background so that a signal to this script is handled at once (bash runs traps only
    # between foreground commands); `timeout` passes a SIGTERM on to the generator.
    timeout --kill-after=5 "$LT_LIMIT" "${pin[@]}" "$LOAD_BIN" "${LT_GEN[@]}" &
    LT_LOAD_PID=$!
    wait "$LT_LOAD_PID" || rc=$?
    LT_LOAD_PID=
    t1=$(date +%s.%N)
    c1=$(lt_ticks "$SERVER_PID")
    rss=$(lt_rss_kb "$SERVER_PID")
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        lt_log "$tag: the server died during the run; its log:"
        tail -n 20 "$OUT/$tag.server.log" >&2
        ((rc != 0)) || rc=99
    fi
    lt_stop_server "$SERVER_PID"
    ((rc != 124)) || lt_log "$tag: fanout-load did not finish within ${LT_LIMIT}s (timeout)"
    # LT_CASE names the variant of the scenario (compare.sh headline: echo-100, echo-1000).
    printf '{"tag":"%s","scenario":"%s","case":"%s","server":"%s","role":"%s","exit":%d,"json":"%s","t0":%s,"t1":%s,"server_cpu_ticks":%d,"clk_tck":%d,"server_rss_kb":%d}\n' \
        "$tag" "$scenario" "${LT_CASE:-$scenario}" "$kind" "$role" "$rc" "$json" "$t0" "$t1" \
        "$((c1 - c0))" "$LT_CLK_TCK" "${rss:-0}" >>"$OUT/runs.jsonl"
    python3 "$LT_SCRIPTS/report.py" summary "$OUT/runs.jsonl" "$tag" || true
    return "$rc"
}

# lt_single SCENARIO: what echo.sh, n2.sh, ... do: one run against $SERVER.
lt_single() {
    local scenario=$1
    lt_init "$scenario"
    lt_defaults "$scenario"
    lt_build "$scenario" "$SERVER"
    lt_run "$scenario" "$SERVER" "$scenario-$SERVER"
}
