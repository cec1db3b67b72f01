#!/usr/bin/env bash
# coalesce.sh: the coalescing window for publishes (`Config::coalesce`, `--coalesce-us`) at each
# of WINDOWS µs, against window 0, in one table. Two workloads, each on the library's examples
# (given the window through FANOUT_COALESCE_US, as `--coalesce-us` would):
#
# - shootout, broadcast phase: the shootout example with CLIENTS clients connected in one step,
#   then SAMPLE broadcasts (CONCURRENT in flight) each reaching every client. Server CPU per
#   delivery is that of the broadcast phase alone: each run's server CPU and deliveries minus
#   those of a baseline run that connects the same clients and times one broadcast. p50/p99 are
#   the delivery latency, from a broadcast's send to each client's receipt of it, which is what
#   the window holds; the round trip to the `broadcastResult` (the shootout's own figure, a
#   direct reply the window never holds) is the p99 beside it.
# - publish: RATE messages/s broadcast to SUBSCRIBERS connections (the broadcast example,
#   `fanout-load broadcast --protocol raw`, the generator over PROCESSES processes, since one
#   process may hold at most 20,000 descriptors). p50/p99 are publish to delivery, corrected
#   for coordinated omission; CPU per delivery is over the run phase.
#
#   loadtest/scripts/coalesce.sh
#   SERVER_CPUS=0 LOAD_CPUS=1 loadtest/scripts/coalesce.sh            pinned, as BENCHMARKS.md
#   WINDOWS="0 1000" CLIENTS=200 SAMPLE=50 SUBSCRIBERS=200 RATE=100 DURATION=2s PROCESSES=1 \
#     loadtest/scripts/coalesce.sh                                   a smoke test
#
# Variables ([default]): WINDOWS µs [0 250 1000 5000] (0 first: the others are compared with
# it), PARTS [shootout publish] (either alone to run one workload), CLIENTS [5000], SAMPLE [2000], CONCURRENT [4], SUBSCRIBERS [10000], RATE msg/s [1000],
# DURATION of each publish run [10s], PROCESSES generator processes for the publish runs [2],
# SHOOTOUT_LIMIT the longest a shootout run may take [300s],
# WORKERS, SERVER_CPUS, LOAD_CPUS, OUT, SKIP_BUILD, SLACK as in common.sh. Runs one after the
# other; bounded by `timeout` each. Loopback only. Hold /tmp/fanout-bench.lock around it when
# other work shares the machine.
set -euo pipefail
# shellcheck source=loadtest/scripts/common.sh disable=SC1091
. "$(dirname "$0")/common.sh"

case ${1:-} in
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    '') ;;
    *) lt_die "coalesce.sh takes no argument (see --help)" ;;
esac

: "${WINDOWS:=0 250 1000 5000}" "${CLIENTS:=5000}" "${SAMPLE:=2000}" "${CONCURRENT:=4}"
: "${SUBSCRIBERS:=10000}" "${RATE:=1000}" "${DURATION:=10s}" "${PUBLISH_PROCESSES:=${PROCESSES:-2}}"
: "${SHOOTOUT_LIMIT:=300s}"
: "${PARTS:=shootout publish}"
[[ $PARTS =~ ^(shootout|publish)( (shootout|publish))?$ ]] || lt_die "PARTS: shootout, publish or both, got \"$PARTS\""
# shellcheck disable=SC2034 # the scenario variables here are read by common.sh's functions
SERVER=fanout
for w in $WINDOWS; do
    [[ $w =~ ^[0-9]+$ ]] || lt_die "WINDOWS must be whole microseconds, got \"$w\""
done
((CLIENTS < 19000)) || lt_die "CLIENTS must stay under 19,000: the shootout generator is one process"

lt_init coalesce
PUBLISH_DURATION=$DURATION
# shellcheck disable=SC2034
PROTOCOL=raw
lt_defaults broadcast
lt_build broadcast fanout
lt_build shootout fanout

# coalesce_run SCENARIO TAG WINDOW: one lt_run with the window in the environment, checking that
# the server took it (its listening line names it).
coalesce_run() {
    local scenario=$1 tag=$2 window=$3
    export FANOUT_COALESCE_US=$window
    lt_run "$scenario" fanout "$tag" || lt_die "$tag failed (see $OUT)"
    if ((window > 0)) && ! grep -q "(coalescing $window us)" "$OUT/$tag.server.log"; then
        lt_die "$tag: the server does not say it coalesces $window us (see $OUT/$tag.server.log)"
    fi
}

# The shootout: one step of CLIENTS clients; LIMIT_MS so high the step always completes, and
# DURATION only a bound (the run ends when its one step does).
shootout_vars() {
    # shellcheck disable=SC2034
    CONNS=$CLIENTS STEP=$CLIENTS LIMIT_MS=3600000 PROCESSES='' DURATION=$SHOOTOUT_LIMIT
    EXTRA="--sample $1 --concurrent $CONCURRENT"
}
if [[ $PARTS == *shootout* ]]; then
    shootout_vars 1
    coalesce_run shootout shootout-base 0
    for w in $WINDOWS; do
        shootout_vars "$SAMPLE"
        coalesce_run shootout "shootout-$w" "$w"
    done
fi

if [[ $PARTS == *publish* ]]; then
    # shellcheck disable=SC2034
    CONNS=$SUBSCRIBERS DURATION=$PUBLISH_DURATION EXTRA='' PROCESSES=$PUBLISH_PROCESSES
    ((PROCESSES > 1)) || PROCESSES=
    for w in $WINDOWS; do
        coalesce_run broadcast "publish-$w" "$w"
    done
fi

python3 - "$OUT/runs.jsonl" "$WINDOWS" "$CLIENTS" "$SAMPLE" "$SUBSCRIBERS" "$RATE" <<'EOF'
import json, sys

runs_path, windows, clients, sample, subscribers, rate = sys.argv[1:]
runs = {}
with open(runs_path) as f:
    for line in f:
        if line.strip():
            run = json.loads(line)
            try:
                with open(run["json"]) as j:
                    run["doc"] = json.load(j)
            except (OSError, ValueError):
                run["doc"] = {}
            runs[run["tag"]] = run

def get(doc, path):
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc

def cpu_s(run):
    """The server's CPU seconds: the generator's reading over its measured phase, else the
    script's from /proc over the whole run."""
    s = get(run["doc"], "server.cpu.cpu_s")
    return s if s is not None else run["server_cpu_ticks"] / run["clk_tck"]

def ms(us):
    return "-" if us is None else f"{us / 1000:.2f}"

base = runs.get("shootout-base")
rows = []
for w in windows.split():
    row = {"window": int(w)}
    s, p = runs.get(f"shootout-{w}"), runs.get(f"publish-{w}")
    if s and base:
        deliveries = (get(s["doc"], "counters.received") or 0) - (get(base["doc"], "counters.received") or 0)
        cpu = cpu_s(s) - cpu_s(base)
        # None when the broadcast phase used no measurable CPU (ticks of 10 ms): too short a run.
        row["s_cpu"] = cpu / deliveries * 1e9 if deliveries > 0 and cpu > 0 else None
        row["s_p50"], row["s_p99"] = get(s["doc"], "delivery_latency_us.p50"), get(s["doc"], "delivery_latency_us.p99")
        row["s_rtt99"] = get(s["doc"], "latency_us.p99")
    if p:
        per_s = get(p["doc"], "server.deliveries_per_cpu_s")
        row["p_cpu"] = 1e9 / per_s if per_s else None
        row["p_p50"], row["p_p99"] = get(p["doc"], "latency_us.p50"), get(p["doc"], "latency_us.p99")
        row["lost"] = get(p["doc"], "delivery.lost")
    rows.append(row)

zero = next((r for r in rows if r["window"] == 0), None)

def cpu_cell(row, key):
    v = row.get(key)
    if v is None:
        return "-"
    if zero and zero.get(key) and row is not zero:
        return f"{v:.1f} ({v / zero[key]:.2f}x)"
    return f"{v:.1f}"

def p99_cell(row, key):
    v = row.get(key)
    if v is None:
        return "-"
    if zero and zero.get(key) is not None and row is not zero:
        return f"{ms(v)} ({(v - zero[key]) / 1000:+.2f})"
    return ms(v)

print()
print(f"shootout: {clients} clients, {sample} broadcasts; publish: {rate} msg/s to {subscribers} subscribers")
print("CPU in ns of server CPU per delivery (ratio to window 0); latency in ms (p99: difference to window 0)")
print()
head = ["window us", "shootout CPU/deliv", "shootout delivery p50", "shootout delivery p99", "shootout rtt p99",
        "publish CPU/deliv", "publish p50", "publish p99", "lost"]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for r in rows:
    cells = [str(r["window"]), cpu_cell(r, "s_cpu"), ms(r.get("s_p50")), p99_cell(r, "s_p99"), ms(r.get("s_rtt99")),
             cpu_cell(r, "p_cpu"), ms(r.get("p_p50")), p99_cell(r, "p_p99"),
             "-" if r.get("lost") is None else str(r["lost"])]
    print("| " + " | ".join(cells) + " |")
print()
print("Each run: server CPU s, deliveries, generator CPU (% of its threads' cores)")
for tag, run in runs.items():
    gen = get(run["doc"], "generator.per_thread_pct")
    received = get(run["doc"], "counters.received")
    print(f"  {tag:<16} {cpu_s(run):8.2f} s {received if received is not None else '-':>12} "
          f"{'-' if gen is None else f'{gen:.0f}%':>6}")
print("A '-' for CPU per delivery: the run used too little CPU to measure; raise SAMPLE or DURATION.")
print()
print("Goal (issue 14): at 1000 us, shootout CPU per delivery at most 0.50x window 0's, with p99")
print("latency no more than 1 ms worse. A generator near 100% set the pace, not the server.")
EOF
