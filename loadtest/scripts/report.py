#!/usr/bin/env python3
"""Summaries of load-test runs, for the scripts in this directory (standard library only).

    report.py summary RUNS.jsonl TAG       one run: its main figures
    report.py compare RUNS.jsonl SCENARIO  per server: medians, ratio fanout/peer, CPU, bound by
    report.py headline RUNS.jsonl          every case against every peer: one markdown table

RUNS.jsonl has one line per run, written by common.sh's lt_run: tag, scenario, case (the
variant, e.g. echo-1000; the scenario when absent), server, exit status, the path of the
generator's --json file, the wall-clock start and end, and the server's CPU ticks over the run
read from /proc (used when the generator's JSON has no server CPU).

A run whose generator was saturated (its JSON's bound.by is "generator" or "both", or
generator_bottleneck in older files) measured the generator, not the server: no ratio that uses
it is printed without "(generator-bound: not a server figure)".
"""

import json
import math
import statistics
import sys

# scenario -> (label, path in the generator's JSON, True if higher is better)
MAIN = {
    "echo": ("messages/s", "throughput.messages_per_s", True),
    "n2": ("deliveries/s", "throughput.deliveries_per_s", True),
    "broadcast": ("p99 publish-to-delivery us", "latency_us.p99", False),
    "slow": ("healthy p99 latency us", "latency_us.p99", False),
    "connect": ("upgrades/s", "throughput.upgrades_per_s", True),
    "idle": ("server bytes/conn", "memory.bytes_per_conn", False),
    "shootout": ("max clients", "max_clients", True),
}

# In SECONDARY: the main figure per second of server CPU (for throughputs). The figure that
# compares servers when both sides have headroom, as in a paced run (echo --rate, connect --rate;
# n2 has its own deliveries per server CPU second).
PER_SERVER_CPU_S = "per server CPU s"

# scenario -> further medians compare prints: (label, path)
SECONDARY = {
    "echo": [("p99 us", "latency_us.p99"), ("msgs/server CPU s", PER_SERVER_CPU_S)],
    "n2": [("iterations/s", "throughput.iterations_per_s"), ("deliv/server CPU s", "server.deliveries_per_cpu_s")],
    "broadcast": [("deliveries/s", "throughput.deliveries_per_s"), ("lost", "delivery.lost")],
    "slow": [("slow closed", "delivery.slow_subscribers_closed"), ("lost", "delivery.lost")],
    "connect": [("p99 us", "latency_us.p99"), ("failed", "connections.failed"),
                ("upgr/server CPU s", PER_SERVER_CPU_S)],
    "idle": [("held", "connections.held")],
    "shootout": [],
}

GENERATOR_BOUND = "(generator-bound: not a server figure)"

# Printed when present, in this order.
FIGURES = [
    ("messages/s", "throughput.messages_per_s"),
    ("published/s", "throughput.published_per_s"),
    ("deliveries/s", "throughput.deliveries_per_s"),
    ("iterations/s", "throughput.iterations_per_s"),
    ("upgrades/s", "throughput.upgrades_per_s"),
    ("MB/s", "throughput.mb_per_s"),
    ("opened", "connections.opened"),
    ("failed", "connections.failed"),
    ("closed", "connections.closed"),
    ("lost", "delivery.lost"),
    ("duplicated", "delivery.duplicated"),
    ("out of order", "delivery.out_of_order"),
    ("slow closed", "delivery.slow_subscribers_closed"),
    ("bytes/conn", "memory.bytes_per_conn"),
    ("max clients", "max_clients"),
    ("deliveries per server CPU s", "server.deliveries_per_cpu_s"),
]


def lookup(doc, path):
    """The number at a dotted path of the generator's JSON, or None."""
    node = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return node
    return None


def load_runs(path):
    with open(path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    for run in runs:
        try:
            with open(run["json"]) as f:
                run["doc"] = json.load(f)
        except (OSError, ValueError) as e:
            run["doc"] = None
            run["doc_error"] = str(e)
        wall = run.get("t1", 0) - run.get("t0", 0)
        run["wall_s"] = wall
        proc_cpu = None
        if wall > 0 and run.get("clk_tck"):
            proc_cpu = 100.0 * run["server_cpu_ticks"] / run["clk_tck"] / wall
        run["server_cpu"] = lookup(run["doc"], "server.cpu.pct")
        run["server_cpu_source"] = "generator, measured phase"
        if run["server_cpu"] is None:
            run["server_cpu"] = proc_cpu
            run["server_cpu_source"] = "/proc, whole run incl. setup"
        run["client_cpu"] = lookup(run["doc"], "generator.pct")
        run["case"] = run.get("case") or run["scenario"]
        run["bound"] = bound_of(run["doc"])
    return runs


def bound_of(doc):
    """The run's bound-by verdict: generator, server, both, neither, unknown, or None."""
    if not isinstance(doc, dict):
        return None
    b = doc.get("bound")
    if isinstance(b, dict) and isinstance(b.get("by"), str):
        return b["by"]
    if doc.get("generator_bottleneck"):
        return "generator"
    return None


def generator_bound(run):
    return run.get("bound") in ("generator", "both")


def verdicts(runs):
    """The verdicts of runs, most frequent first: 'server 3/3', 'generator 1/3, server 2/3'."""
    counts = {}
    for r in runs:
        counts[r["bound"] or "?"] = counts.get(r["bound"] or "?", 0) + 1
    n = len(runs)
    return ", ".join(f"{k} {v}/{n}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])) or "-"


def fmt(x):
    if x is None:
        return "-"
    if isinstance(x, float) and not x.is_integer():
        return f"{x:,.1f}" if abs(x) < 1e5 else f"{x:,.0f}"
    return f"{int(x):,}"


def summary(runs, tag):
    run = next((r for r in runs if r["tag"] == tag), None)
    if run is None:
        sys.exit(f"no run {tag}")
    doc = run["doc"]
    print(f"-- {tag}: {run['server']} ({run['role']}), exit {run['exit']}, {run['wall_s']:.1f} s")
    if doc is None:
        print(f"   no JSON from the generator ({run.get('doc_error')})")
    else:
        parts = []
        for label, path in FIGURES:
            v = lookup(doc, path)
            if v is not None:
                parts.append(f"{label} {fmt(v)}")
        if parts:
            print("   " + ", ".join(parts))
        lat = [(q, lookup(doc, f"latency_us.{q}")) for q in ("p50", "p90", "p99", "p999", "max")]
        if lookup(doc, "latency_us.count"):
            print("   latency us: " + " ".join(f"{q} {fmt(v)}" for q, v in lat))
        if run["bound"]:
            print(f"   bound by: {run['bound']}")
        if generator_bound(run):
            print("   WARNING: the generator was saturated; the figures may be its own limit "
                  + GENERATOR_BOUND)
        for e in doc.get("errors") or []:
            print(f"   error: {e}")
    print(
        f"   CPU: server {fmt(run['server_cpu'])}% ({run['server_cpu_source']}),"
        f" generator {fmt(run['client_cpu'])}%; server RSS at the end {fmt(run['server_rss_kb'])} KiB"
    )


def median(values):
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else None


def secondary(run, path, main_path):
    """One run's value of a SECONDARY column."""
    if path != PER_SERVER_CPU_S:
        return lookup(run["doc"], path)
    main, cpu = lookup(run["doc"], main_path), run["server_cpu"]
    return main / (cpu / 100.0) if main is not None and cpu else None


def compare(runs, scenario):
    label, path, higher = MAIN[scenario]
    extra = SECONDARY[scenario]
    runs = [r for r in runs if r["case"] == scenario]
    servers = list(dict.fromkeys(r["server"] for r in runs))
    rows = {}
    for s in servers:
        mine = [r for r in runs if r["server"] == s]
        ok = [r for r in mine if r["exit"] == 0 and r["doc"] is not None]
        rows[s] = {
            "runs": len(mine),
            "ok": len(ok),
            "values": [lookup(r["doc"], path) for r in ok],
            "main": median(lookup(r["doc"], path) for r in ok),
            "extra": [median(secondary(r, p, path) for r in ok) for _, p in extra],
            "server_cpu": median(r["server_cpu"] for r in mine),
            "client_cpu": median(r["client_cpu"] for r in mine),
            "bottleneck": sum(1 for r in ok if generator_bound(r)),
            "verdicts": verdicts(ok),
        }
    base = rows.get("fanout", {}).get("main")
    better = "higher is better" if higher else "lower is better"
    print(f"== {scenario}: median {label} ({better}); ratio = fanout / server")
    head = f"{'server':<18} {'ok':>5} {'median':>12} {'ratio':>6} {'srv CPU%':>8} {'gen CPU%':>8}"
    head += "".join(f" {l:>{max(10, len(l))}}" for l, _ in extra)
    print(head + "  bound by; each run")
    fanout_bound = rows.get("fanout", {}).get("bottleneck", 0)
    for s in servers:
        row = rows[s]
        ratio = base / row["main"] if base is not None and row["main"] else None
        line = (
            f"{s:<18} {row['ok']:>2}/{row['runs']:<2} {fmt(row['main']):>12}"
            f" {('-' if ratio is None else f'{ratio:.2f}'):>6}"
            f" {fmt(row['server_cpu']):>8} {fmt(row['client_cpu']):>8}"
        )
        line += "".join(f" {fmt(v):>{max(10, len(l))}}" for (l, _), v in zip(extra, row["extra"]))
        line += f"  {row['verdicts']}; " + " ".join(fmt(v) for v in row["values"])
        if ratio is not None and s != "fanout" and (row["bottleneck"] or fanout_bound):
            line += "  ratio " + GENERATOR_BOUND
        print(line)
    sources = {r["server_cpu_source"] for r in runs}
    print(f"(CPU in % of one core, medians; server CPU from: {', '.join(sorted(sources))})")
    status = 0
    for s, row in rows.items():
        if row["bottleneck"]:
            print(f"WARNING: the generator was saturated in {row['bottleneck']} run(s) against {s}: "
                  "those figures may be the generator's limit")
        if row["ok"] < row["runs"]:
            print(f"{row['runs'] - row['ok']} run(s) against {s} failed: see the log above and {s}'s server log")
            status = 1
    return status


def side(runs, path):
    """Medians and verdicts of one server's successful runs of one case."""
    ok = [r for r in runs if r["exit"] == 0 and r["doc"] is not None]
    return {
        "runs": len(runs),
        "ok": ok,
        "main": median(lookup(r["doc"], path) for r in ok),
        "server_cpu": median(r["server_cpu"] for r in ok),
        "client_cpu": median(r["client_cpu"] for r in ok),
        "bound": any(generator_bound(r) for r in ok),
        "verdicts": verdicts(ok),
    }


def case_label(case, runs):
    """`echo-1000` -> `echo, 1,000 conns`; broadcast with its rate."""
    scenario = runs[0]["scenario"]
    doc = next((r["doc"] for r in runs if r["doc"]), None) or {}
    target = lookup(doc, "connections.target")
    label = scenario
    if target is not None and scenario != "connect":
        label += f", {fmt(target)} {'subscribers' if scenario == 'broadcast' else 'conns'}"
    args = doc.get("args") or []
    if scenario == "broadcast" and "--rate" in args:
        label += f" at {fmt(float(args[args.index('--rate') + 1]))} msg/s"
    if scenario in ("connect", "n2") and doc.get("processes", 1) * doc.get("threads", 1) > 1:
        label += f" ({doc.get('processes')} x {doc.get('threads')} generator threads)"
    return label


def headline(runs):
    """One markdown table: each case, fanout against each peer."""
    cases = list(dict.fromkeys(r["case"] for r in runs))
    servers = list(dict.fromkeys(r["server"] for r in runs))
    peers = [s for s in servers if s != "fanout"] or ["-"]
    print("| peer | scenario | figure | fanout | peer | ratio fanout/peer "
          "| server CPU % fanout / peer | generator CPU % fanout / peer | bound by: fanout; peer |")
    print("|---|---|---|---:|---:|---|---|---|---|")
    status = 0
    for case in cases:
        mine = [r for r in runs if r["case"] == case]
        label, path, higher = MAIN[mine[0]["scenario"]]
        figure = label + ("" if higher else " (lower is better)")
        f = side([r for r in mine if r["server"] == "fanout"], path)
        for peer in peers:
            p = side([r for r in mine if r["server"] == peer], path)
            if peer != "-" and p["runs"] == 0:
                print(f"| {peer} | {case_label(case, mine)} | {figure} | {fmt(f['main'])} | not run "
                      f"(cannot serve it) | - | - | - | - |")
                continue
            ratio = f["main"] / p["main"] if f["main"] is not None and p["main"] else None
            ratio_text = "-" if ratio is None else f"{ratio:.2f}"
            if ratio is not None and (f["bound"] or p["bound"]):
                ratio_text += " " + GENERATOR_BOUND
            print(
                f"| {peer} | {case_label(case, mine)} | {figure} | {fmt(f['main'])} | {fmt(p['main'])} "
                f"| {ratio_text} | {fmt(f['server_cpu'])} / {fmt(p['server_cpu'])} "
                f"| {fmt(f['client_cpu'])} / {fmt(p['client_cpu'])} | {f['verdicts']}; {p['verdicts']} |"
            )
            for name, s in (("fanout", f), (peer, p)):
                if s["runs"] and len(s["ok"]) < s["runs"]:
                    status = 1
    print()
    print("Medians of the successful runs; CPU in % of one core over the measured phase. "
          "Bound by: the generator's verdict per run (server = the server's CPU was the limit).")
    if status:
        print("Some runs failed: see the log above and the servers' logs.")
    return status


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "headline":
        return headline(load_runs(sys.argv[2]))
    if len(sys.argv) != 4 or sys.argv[1] not in ("summary", "compare"):
        sys.exit(__doc__)
    runs = load_runs(sys.argv[2])
    if sys.argv[1] == "summary":
        summary(runs, sys.argv[3])
        return 0
    if sys.argv[3] not in MAIN:
        sys.exit(f"unknown scenario {sys.argv[3]}")
    return compare(runs, sys.argv[3])


if __name__ == "__main__":
    sys.exit(main())
