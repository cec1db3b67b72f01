#!/usr/bin/env bash
# profile.sh SCENARIO: one run of SCENARIO against $SERVER, with `perf` on both sides: where the
# server and the generator spend their time, and how many syscalls of each kind they make per
# operation (message, delivery or upgrade). This is how the profiles in BENCHMARKS.md were taken.
#
#   SERVER_CPUS=0 LOAD_CPUS=1 CONNS=1000 loadtest/scripts/profile.sh echo
#   SERVER_CPUS=0 LOAD_CPUS=1 loadtest/scripts/profile.sh connect
#   SERVER=fastwebsockets SERVER_CPUS=0 LOAD_CPUS=1 CONNS=1000 loadtest/scripts/profile.sh echo
#
# After WARMUP seconds [3] it counts syscalls with `perf stat` for PROFILE_SECS [2], then samples
# call graphs with `perf record` for PROFILE_SECS, on the server and on the generator (its first
# process only). DURATION defaults to WARMUP + 2 x PROFILE_SECS + 2 seconds. Needs `perf` (Debian:
# linux-perf) and perf_event_paranoid <= 1 or root. Variables: those of the scenario's script and
# of common.sh. Results: $OUT/{server,generator}.{stat,data,txt}.
#
# Reading it: on loopback a send runs the receiver's TCP input (net_rx_action, a softirq) on the
# sender's CPU, so each side pays part of the other's receive path. Per-operation figures divide by
# the run's average rate, which includes the ramp: treat them as approximate.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"

lt_scenario_arg "$0" "${1:-}"
command -v perf >/dev/null || lt_die "perf is missing (Debian: apt-get install linux-perf)"
: "${WARMUP:=3}" "${PROFILE_SECS:=2}"
: "${DURATION:=$((WARMUP + 2 * PROFILE_SECS + 2))s}"

SYSCALLS=(recvfrom sendto read write readv writev epoll_wait epoll_ctl accept4 socket connect bind
    close shutdown setsockopt getsockopt getpeername fcntl futex)
events=task-clock,raw_syscalls:sys_enter
for s in "${SYSCALLS[@]}"; do events+=",syscalls:sys_enter_$s"; done

lt_init "profile-$scenario"
lt_defaults "$scenario"
lt_build "$scenario" "$SERVER"
role=$(lt_role "$scenario" "$SERVER")
lt_server_cmd "$SERVER" "$role"
lt_start_server "$scenario-$SERVER" "${LT_SERVER_CMD[@]}"
lt_gen_args "$scenario" "$SERVER_URL" "$SERVER_PID" "$OUT/run.json" "$OUT/run.svg"
pin=()
[[ -n $LOAD_CPUS ]] && pin=(taskset -c "$LOAD_CPUS")
lt_log "fanout-load ${LT_GEN[*]}"
timeout --kill-after=5 "$LT_LIMIT" "${pin[@]}" "$LOAD_BIN" "${LT_GEN[@]}" >"$OUT/run.txt" 2>&1 &
LT_LOAD_PID=$!
sleep "$WARMUP"
gen_pid=$(pgrep -o -P "$LT_LOAD_PID" || echo "$LT_LOAD_PID")
kill -0 "$gen_pid" 2>/dev/null || lt_die "the generator ended during the warm-up; see $OUT/run.txt"

lt_log "counting syscalls for ${PROFILE_SECS}s"
perf stat -e "$events" -p "$SERVER_PID" -o "$OUT/server.stat" -- sleep "$PROFILE_SECS" &
p1=$!
perf stat -e "$events" -p "$gen_pid" -o "$OUT/generator.stat" -- sleep "$PROFILE_SECS" &
wait "$p1" $!
lt_log "sampling call graphs for ${PROFILE_SECS}s"
perf record -q -F 2000 -g -p "$SERVER_PID" -o "$OUT/server.data" -- sleep "$PROFILE_SECS" 2>/dev/null &
p1=$!
perf record -q -F 2000 -g -p "$gen_pid" -o "$OUT/generator.data" -- sleep "$PROFILE_SECS" 2>/dev/null &
wait "$p1" $!
rc=0
wait "$LT_LOAD_PID" || rc=$?
LT_LOAD_PID=
lt_stop_server "$SERVER_PID"
((rc == 0)) || lt_die "the generator failed (status $rc); see $OUT/run.txt"

sed -n '/^scenario/,/^server /p' "$OUT/run.txt"
for side in server generator; do
    perf report -i "$OUT/$side.data" --no-children --sort dso --stdio 2>/dev/null | grep -v '^#' >"$OUT/$side.dso.txt" || true
    perf report -i "$OUT/$side.data" --children --sort sym --stdio -g none 2>/dev/null | grep -v '^#' >"$OUT/$side.txt" || true
done
python3 - "$OUT" "$scenario" <<'EOF'
import json, re, sys
out, scenario = sys.argv[1], sys.argv[2]
doc = json.load(open(f"{out}/run.json"))
t = doc.get("throughput", {})
rate = t.get({"connect": "upgrades_per_s", "echo": "messages_per_s"}.get(scenario, "deliveries_per_s")) or t.get("messages_per_s")
unit = {"connect": "upgrade", "echo": "message"}.get(scenario, "delivery")
print(f"\nper {unit}: at {rate:,.0f} per second over the whole run (the sampled seconds are in its middle)")
for side in ("server", "generator"):
    counts, secs = {}, None
    for line in open(f"{out}/{side}.stat"):
        m = re.match(r"\s*([\d,.]+)\s+(?:msec\s+)?(\S+)", line)
        if not m:
            continue
        value = float(m.group(1).replace(",", ""))
        if m.group(2) == "task-clock":
            cpu = value / 1000
        elif m.group(2).startswith("syscalls:sys_enter_") and value:
            counts[m.group(2).removeprefix("syscalls:sys_enter_")] = value
        m2 = re.search(r"([\d.]+) seconds time elapsed", line)
        if m2:
            secs = float(m2.group(1))
    ops = rate * secs
    calls = ", ".join(f"{k} {v / ops:.3g}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    print(f"{side:9} CPU {1e9 * cpu / ops:,.0f} ns per {unit} ({100 * cpu / secs:.0f}% of a core); syscalls per {unit}: {calls}")
    dso = [l.split() for l in open(f"{out}/{side}.dso.txt") if re.match(r"\s+[\d.]+%", l)]
    print("          time by object: " + ", ".join(f"{d[1]} {d[0]}" for d in dso[:4]))
    tops = []
    for l in open(f"{out}/{side}.txt"):
        m = re.match(r"\s+([\d.]+)%\s+([\d.]+)%\s+\[([k.])\]\s+(\S+)", l)
        if m and not m.group(4).startswith("0x") and (m.group(4).startswith("__x64_sys_") or m.group(4) == "net_rx_action" or m.group(3) == "."):
            tops.append((float(m.group(1)), m.group(4)))
    print("          inclusive: " + ", ".join(f"{n} {p:.0f}%" for p, n in tops[:9]))
EOF
lt_log "perf data and reports in $OUT (perf report -i $OUT/server.data)"
