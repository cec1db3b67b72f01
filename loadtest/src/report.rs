//! The result of a run: the summary object (`--json`), the human table on stdout, and the CPU
//! verdict.
//!
//! Owns: `Row` (one second of the series), `TopData` (what the top-level monitor collected),
//! `Summary` and `summarize` (merged stats -> figures per scenario, and the bottleneck verdict of
//! `bound`), `table`. Must not measure anything itself; it only turns numbers into figures and
//! text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bound::{self, Bound};
use crate::config::{Config, Scenario};
use crate::stats::{slope, Counters, Percentiles, Stats, Step};
use crate::util::{bytes, micros, rate, thousands};

/// One second of the run, merged over every thread and process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Seconds since the measured phase began (negative while setting up), at the second's end.
    pub t: f64,
    pub open: u64,
    /// Per-second counts.
    pub opened: u64,
    pub sent: u64,
    pub received: u64,
    pub failed: u64,
    /// That second's latency percentiles, microseconds.
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Generator CPU in percent of one core (all threads and processes).
    pub gen_cpu_pct: f64,
    pub server_cpu_pct: Option<f64>,
    pub server_rss: Option<u64>,
}

/// What the top-level monitor collected besides the merged stats.
#[derive(Debug, Default)]
pub struct TopData {
    pub series: Vec<Row>,
    /// (open connections, server RSS bytes), for `idle`.
    pub rss_points: Vec<(u64, u64)>,
    pub server_rss_start: Option<u64>,
    pub server_rss_end: Option<u64>,
    pub server_cpu_at_go: Option<u64>,
    pub server_cpu_at_end: Option<u64>,
    /// Each `--server-pid`, then each `--watch-pid`: CPU at the start of the measured phase, and
    /// CPU and RSS at the end.
    pub procs_at_go: Vec<Option<u64>>,
    pub procs_at_end: Vec<(Option<u64>, Option<u64>)>,
    pub own_cpu_at_go: Option<u64>,
    pub go_at: Option<Instant>,
    /// From the start of the measured phase to the end of the run.
    pub wall: Duration,
    /// Most connections open at a phase boundary.
    pub held: u64,
    /// Cores the generator may use (its affinity) and the server's (`--server-cores`, or its
    /// affinity), for the verdict.
    pub gen_cores: usize,
    pub server_cores: Option<f64>,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connections {
    /// Connections asked for (absent when unbounded, as for `connect` without --conns).
    pub target: Option<u64>,
    pub opened: u64,
    pub failed: u64,
    /// Open connections that the server closed or that broke.
    pub closed: u64,
    /// Most open at once at a phase boundary.
    pub held: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Throughput {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_per_s: Option<f64>,
    /// Payload megabytes (10^6) per second received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mb_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrades_per_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliverySummary {
    pub published: u64,
    pub subscribers: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_subscribers_closed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_subscribers_open: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Memory {
    /// Least-squares slope of server RSS against open connections.
    pub bytes_per_conn: f64,
    /// RSS the fit gives for zero connections.
    pub intercept_bytes: f64,
    pub r2: f64,
    /// (connections, RSS bytes) as sampled.
    pub points: Vec<(u64, u64)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cpu {
    pub cpu_s: f64,
    /// Percent of one core over the measured phase.
    pub pct: f64,
    /// Generator only: `pct` divided by its threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_thread_pct: Option<f64>,
}

/// One process's share: a server node of several, or a watched process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proc {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_end: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Server {
    /// The first `--server-pid`.
    pub pid: u32,
    /// Every `--server-pid`, when there are several: `cpu` and the RSS are their sums.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub pids: Vec<u32>,
    /// Each of them, when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub processes: Vec<Proc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_start: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_end: Option<u64>,
    /// Deliveries (messages received by clients) per second of server CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_per_cpu_s: Option<f64>,
}

/// The result object of a run, as written by `--json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    /// The first `--url`.
    pub url: String,
    /// Every `--url`, when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub publish_url: Option<String>,
    pub args: Vec<String>,
    pub threads: usize,
    pub processes: usize,
    pub payload: usize,
    pub connections: Connections,
    pub failures: BTreeMap<String, u64>,
    /// Seconds from the start of the measured phase to the last message (or its planned end).
    pub duration_s: f64,
    pub counters: Counters,
    pub throughput: Throughput,
    /// What `latency_us` measures (round trip, publish to delivery, handshake, iteration).
    pub latency_kind: String,
    pub latency_us: Percentiles,
    /// With a publish schedule (--rate), `latency_us` is corrected for coordinated omission
    /// with this interval, and these are the percentiles as measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub co_interval_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_uncorrected_us: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_latency_us: Option<Percentiles>,
    /// shootout: a broadcast's send to each receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_latency_us: Option<Percentiles>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_clients: Option<u64>,
    pub generator: Cpu,
    /// True when the generator was saturated (see `bound`): the figures may be its own limit.
    pub generator_bottleneck: bool,
    /// Which side limited the run, and the loads the verdict was made from.
    pub bound: Bound,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Server>,
    /// `--watch-pid`: processes whose CPU is reported but not counted as the server's.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub watched: Vec<Proc>,
    pub notes: Vec<String>,
    pub errors: Vec<String>,
    pub series: Vec<Row>,
}

/// Turns the merged stats into the figures of the configured scenario.
pub fn summarize(cfg: &Config, stats: Stats, data: TopData) -> Summary {
    let c = &cfg.common;
    let k = stats.counters;
    let wall = data.wall.as_secs_f64();
    let duration_s = if stats.active_ns > 0 { stats.active_ns as f64 / 1e9 } else { wall };
    let per_s = |n: u64| {
        if duration_s > 0.0 {
            n as f64 / duration_s
        } else {
            0.0
        }
    };
    let name = cfg.scenario_name();
    let mut t = Throughput::default();
    let mut delivery = None;
    let mut max_clients = None;
    let latency_kind = match &cfg.scenario {
        Scenario::Echo(_) => {
            t.messages_per_s = Some(per_s(k.received));
            t.mb_per_s = Some(per_s(k.bytes_received) / 1e6);
            "round trip"
        }
        Scenario::Broadcast(_) | Scenario::Slow(_) => {
            t.published_per_s = Some(per_s(k.sent));
            t.deliveries_per_s = Some(per_s(k.received));
            t.mb_per_s = Some(per_s(k.bytes_received) / 1e6);
            let d = stats.delivery;
            let slow = matches!(cfg.scenario, Scenario::Slow(_));
            delivery = Some(DeliverySummary {
                published: k.sent,
                subscribers: d.subscribers,
                expected: (d.subscribers * d.last_seq).saturating_sub(d.sum_base),
                delivered: d.unique,
                lost: d.lost(),
                duplicated: k.duplicated,
                out_of_order: k.out_of_order,
                slow_subscribers_closed: slow.then_some(d.slow_closed),
                slow_subscribers_open: slow.then_some(d.slow_open),
            });
            "publish to delivery"
        }
        Scenario::N2(_) => {
            t.iterations_per_s = Some(per_s(k.iterations));
            t.deliveries_per_s = Some(per_s(k.received));
            "iteration"
        }
        Scenario::Connect(_) => {
            t.upgrades_per_s = Some(per_s(k.opened));
            "handshake (connect start to 101)"
        }
        // soak reports itself (scenario::soak) and never reaches here.
        Scenario::Idle(_) | Scenario::Soak(_) => "none",
        Scenario::Shootout(a) => {
            let limit_us = (a.limit_ms * 1000.0) as u64;
            let q = a.percentile / 100.0;
            max_clients = Some(
                stats
                    .steps
                    .iter()
                    .filter(|s| {
                        let p = if q >= 0.99 {
                            s.rtt.p99
                        } else if q >= 0.95 {
                            s.rtt.p95
                        } else {
                            s.rtt.p50
                        };
                        p <= limit_us
                    })
                    .map(|s| s.clients)
                    .max()
                    .unwrap_or(0),
            );
            if a.command == crate::config::ShootCmd::Echo {
                t.messages_per_s = Some(per_s(k.received));
            } else {
                t.deliveries_per_s = Some(per_s(k.received));
            }
            "round trip (send to broadcastResult)"
        }
    };
    let memory = (name == "idle")
        .then(|| {
            let pts: Vec<(f64, f64)> = data.rss_points.iter().map(|&(x, y)| (x as f64, y as f64)).collect();
            slope(&pts).map(|(b, a, r2)| Memory {
                bytes_per_conn: b,
                intercept_bytes: a,
                r2,
                points: data.rss_points.clone(),
            })
        })
        .flatten();
    let workers = (c.threads * c.processes) as f64;
    let gen_cpu_s = stats.cpu_ns as f64 / 1e9;
    let gen_pct = if wall > 0.0 { gen_cpu_s / wall * 100.0 } else { 0.0 };
    let per_thread = gen_pct / workers;
    let generator = Cpu { cpu_s: gen_cpu_s, pct: gen_pct, per_thread_pct: Some(per_thread) };
    let cpu_of = |ns: u64| {
        let s = ns as f64 / 1e9;
        Cpu { cpu_s: s, pct: if wall > 0.0 { s / wall * 100.0 } else { 0.0 }, per_thread_pct: None }
    };
    let mut procs: Vec<Proc> = c
        .server_pids
        .iter()
        .chain(&c.watch_pids)
        .enumerate()
        .map(|(i, &pid)| {
            let go = data.procs_at_go.get(i).copied().flatten();
            let (end, rss_end) = data.procs_at_end.get(i).copied().unwrap_or((None, None));
            let cpu = match (go, end) {
                (Some(a), Some(b)) if wall > 0.0 => Some(cpu_of(b.saturating_sub(a))),
                _ => None,
            };
            Proc { pid, cpu, rss_end }
        })
        .collect();
    let watched = procs.split_off(c.server_pids.len());
    let several = c.server_pids.len() > 1;
    let server = c.server_pids.first().map(|&pid| {
        let cpu = match (data.server_cpu_at_go, data.server_cpu_at_end) {
            (Some(a), Some(b)) if wall > 0.0 => {
                let s = b.saturating_sub(a) as f64 / 1e9;
                Some(Cpu { cpu_s: s, pct: s / wall * 100.0, per_thread_pct: None })
            }
            _ => None,
        };
        let deliveries_per_cpu_s =
            cpu.as_ref().filter(|c| c.cpu_s > 0.0 && k.received > 0).map(|c| k.received as f64 / c.cpu_s);
        Server {
            pid,
            pids: if several { c.server_pids.clone() } else { Vec::new() },
            processes: if several { procs } else { Vec::new() },
            cpu,
            rss_start: data.server_rss_start,
            rss_end: data.server_rss_end,
            deliveries_per_cpu_s,
        }
    });
    let server_load = match (server.as_ref().and_then(|s| s.cpu.as_ref()), data.server_cores) {
        (Some(cpu), Some(cores)) => Some((cpu.pct, cores)),
        _ => None,
    };
    let verdict = bound::verdict(c.bound_pct, gen_pct, c.threads * c.processes, data.gen_cores.max(1), server_load);
    let mut notes = cfg.warnings.clone();
    notes.extend(data.notes);
    notes.extend(stats.notes.iter().cloned());
    let held = data.held.max(data.series.iter().map(|r| r.open).max().unwrap_or(0));
    Summary {
        scenario: name.to_owned(),
        url: c.urls.first().cloned().unwrap_or_default(),
        urls: if c.urls.len() > 1 { c.urls.clone() } else { Vec::new() },
        publish_url: match &cfg.scenario {
            Scenario::Broadcast(b) | Scenario::Slow(crate::config::SlowArgs { broadcast: b, .. }) => {
                b.publish_url.clone()
            }
            _ => None,
        },
        args: cfg.args.clone(),
        threads: c.threads,
        processes: c.processes,
        payload: c.payload,
        connections: Connections {
            target: (cfg.conns < u64::MAX / 8).then_some(cfg.conns),
            opened: k.opened,
            failed: k.failed,
            closed: k.closed,
            held,
        },
        failures: stats.failures.clone(),
        duration_s,
        counters: k,
        throughput: t,
        latency_kind: latency_kind.to_owned(),
        latency_us: stats.latency.corrected(stats.co_interval_us).summary(),
        co_interval_us: (stats.co_interval_us > 0).then_some(stats.co_interval_us),
        latency_uncorrected_us: (stats.co_interval_us > 0).then(|| stats.latency.summary()),
        ack_latency_us: (!stats.ack_latency.is_empty()).then(|| stats.ack_latency.summary()),
        delivery_latency_us: (!stats.delivery_latency.is_empty()).then(|| stats.delivery_latency.summary()),
        delivery,
        memory,
        steps: stats.steps.clone(),
        max_clients,
        generator,
        generator_bottleneck: verdict.generator_bound(),
        bound: verdict,
        server,
        watched,
        notes,
        errors: data.errors,
        series: data.series,
    }
}

/// The warning printed when the generator itself may be the bottleneck.
pub fn cpu_warning(s: &Summary) -> Option<String> {
    if !s.generator_bottleneck {
        return None;
    }
    let workers = s.threads * s.processes;
    Some(format!(
        "WARNING: the load generator used {:.0}% of a core per thread ({} thread{}), {:.0}% of its capacity; \
         it may be the bottleneck, not the server (bound by: {}). Add --threads/--processes or give the \
         generator cores the server does not use.",
        s.generator.per_thread_pct.unwrap_or(0.0),
        workers,
        if workers == 1 { "" } else { "s" },
        s.bound.generator_load_pct,
        s.bound.by
    ))
}

/// One process's CPU and memory for the table.
fn proc_text(p: &Proc) -> String {
    let mut text = match &p.cpu {
        Some(c) => format!("{:.2} s, {:.0}% of a core", c.cpu_s, c.pct),
        None => "CPU unreadable".to_owned(),
    };
    if let Some(r) = p.rss_end {
        let _ = write!(text, "; RSS {}", bytes(r as f64));
    }
    text
}

/// The human table.
pub fn table(s: &Summary) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
    row(
        "scenario",
        format!(
            "{} {}  ({} thread{} x {} process{})",
            s.scenario,
            if s.urls.is_empty() { s.url.clone() } else { s.urls.join(" ") },
            s.threads,
            if s.threads == 1 { "" } else { "s" },
            s.processes,
            if s.processes == 1 { "" } else { "es" }
        ),
    );
    let cn = &s.connections;
    let mut conns = format!(
        "{} opened, {} failed, {} closed by the server or broken",
        thousands(cn.opened),
        thousands(cn.failed),
        thousands(cn.closed)
    );
    if let Some(t) = cn.target {
        conns = format!("{} asked: {conns}", thousands(t));
    }
    row("connections", conns);
    if !s.failures.is_empty() {
        let list: Vec<String> = s.failures.iter().map(|(k, v)| format!("{k}: {}", thousands(*v))).collect();
        row("failures", list.join(", "));
    }
    row("duration", format!("{:.2} s measured", s.duration_s));
    let k = &s.counters;
    if k.sent + k.received + k.errors > 0 {
        row(
            "messages",
            format!("{} sent, {} received, {} errors", thousands(k.sent), thousands(k.received), thousands(k.errors)),
        );
    }
    let t = &s.throughput;
    let mut tp = Vec::new();
    if let Some(v) = t.messages_per_s {
        tp.push(format!("{} msg/s", rate(v)));
    }
    if let Some(v) = t.published_per_s {
        tp.push(format!("{} published/s", rate(v)));
    }
    if let Some(v) = t.deliveries_per_s {
        tp.push(format!("{} deliveries/s", rate(v)));
    }
    if let Some(v) = t.iterations_per_s {
        tp.push(format!("{} iterations/s", rate(v)));
    }
    if let Some(v) = t.upgrades_per_s {
        tp.push(format!("{} upgrades/s", rate(v)));
    }
    if let Some(v) = t.mb_per_s {
        tp.push(format!("{v:.2} MB/s received"));
    }
    if !tp.is_empty() {
        row("throughput", tp.join(", "));
    }
    let l = &s.latency_us;
    if l.count > 0 {
        row(
            "latency",
            format!(
                "{}: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
                s.latency_kind,
                micros(l.p50),
                micros(l.p90),
                micros(l.p99),
                micros(l.p999),
                micros(l.max),
                thousands(l.count)
            ),
        );
    }
    if let (Some(u), Some(i)) = (&s.latency_uncorrected_us, s.co_interval_us) {
        row(
            "",
            format!(
                "(corrected for coordinated omission at a {} schedule; as measured: p50 {}  p99 {}  max {})",
                micros(i),
                micros(u.p50),
                micros(u.p99),
                micros(u.max)
            ),
        );
    }
    for (name, p) in [("publish ack", &s.ack_latency_us), ("broadcast delivery", &s.delivery_latency_us)] {
        if let Some(p) = p {
            row(name, format!("p50 {}  p99 {}  max {}", micros(p.p50), micros(p.p99), micros(p.max)));
        }
    }
    if let Some(d) = &s.delivery {
        row(
            "delivery",
            format!(
                "{} published to {} subscribers: {} of {} expected delivered, {} lost, {} duplicated, {} out of order",
                thousands(d.published),
                thousands(d.subscribers),
                thousands(d.delivered),
                thousands(d.expected),
                thousands(d.lost),
                thousands(d.duplicated),
                thousands(d.out_of_order)
            ),
        );
        if let (Some(closed), Some(open)) = (d.slow_subscribers_closed, d.slow_subscribers_open) {
            row("slow subscribers", format!("{closed} closed by the server, {open} still open"));
        }
    }
    for step in &s.steps {
        row(
            "step",
            format!(
                "clients {:>6}  p50 {}  p95 {}  max {}  ({} broadcast deliveries)",
                thousands(step.clients),
                micros(step.rtt.p50),
                micros(step.rtt.p95),
                micros(step.rtt.max),
                thousands(step.deliveries)
            ),
        );
    }
    if let Some(m) = s.max_clients {
        row("max clients", thousands(m));
    }
    if let Some(m) = &s.memory {
        row(
            "server memory",
            format!(
                "{:.0} B per connection (slope of RSS over {} samples, r² {:.3}; {} at zero)",
                m.bytes_per_conn,
                m.points.len(),
                m.r2,
                bytes(m.intercept_bytes)
            ),
        );
    }
    let g = &s.generator;
    row(
        "generator CPU",
        format!("{:.2} s, {:.0}% of a core ({:.0}% per thread)", g.cpu_s, g.pct, g.per_thread_pct.unwrap_or(0.0)),
    );
    row("bound by", s.bound.text());
    if let Some(sv) = &s.server {
        let mut text = match &sv.cpu {
            Some(c) => format!("{:.2} s, {:.0}% of a core", c.cpu_s, c.pct),
            None => "CPU unreadable".to_owned(),
        };
        if let Some(d) = sv.deliveries_per_cpu_s {
            let _ = write!(text, ", {} deliveries per CPU second", rate(d));
        }
        if let (Some(a), Some(b)) = (sv.rss_start, sv.rss_end) {
            let _ = write!(text, "; RSS {} -> {}", bytes(a as f64), bytes(b as f64));
        }
        if sv.pids.is_empty() {
            row(&format!("server {} CPU", sv.pid), text);
        } else {
            let pids: Vec<String> = sv.pids.iter().map(u32::to_string).collect();
            row(&format!("servers {} CPU", pids.join("+")), text);
            for p in &sv.processes {
                row(&format!("  server {} CPU", p.pid), proc_text(p));
            }
        }
    }
    for p in &s.watched {
        row(&format!("watched {} CPU", p.pid), proc_text(p));
    }
    for n in &s.notes {
        row("note", n.clone());
    }
    for e in &s.errors {
        row("error", e.clone());
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<width$}  {v}");
    }
    if let Some(w) = cpu_warning(s) {
        let _ = writeln!(out, "\n{w}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        Summary {
            scenario: "echo".into(),
            url: "ws://127.0.0.1:9001/".into(),
            urls: vec![],
            publish_url: None,
            args: vec![],
            threads: 1,
            processes: 2,
            payload: 64,
            connections: Connections { target: Some(10), opened: 10, failed: 0, closed: 0, held: 10 },
            failures: BTreeMap::new(),
            duration_s: 1.0,
            counters: Counters::default(),
            throughput: Throughput::default(),
            latency_kind: "round trip".into(),
            latency_us: Percentiles::default(),
            co_interval_us: None,
            latency_uncorrected_us: None,
            ack_latency_us: None,
            delivery_latency_us: None,
            delivery: None,
            memory: None,
            steps: vec![],
            max_clients: None,
            generator: Cpu { cpu_s: 1.9, pct: 190.0, per_thread_pct: Some(95.0) },
            generator_bottleneck: true,
            bound: bound::verdict(85.0, 190.0, 2, 4, None),
            server: None,
            watched: vec![],
            notes: vec![],
            errors: vec![],
            series: vec![],
        }
    }

    #[test]
    fn warns_loudly_when_the_generator_is_saturated() {
        let s = sample();
        let w = cpu_warning(&s).unwrap();
        assert!(w.starts_with("WARNING: the load generator used 95% of a core"), "{w}");
        assert!(w.contains("may be the bottleneck"));
        assert!(table(&s).contains("WARNING"));
        assert!(table(&s).contains("generator-bound: not a server figure"), "{}", table(&s));
        let calm = Summary { generator_bottleneck: false, ..s };
        assert!(cpu_warning(&calm).is_none());
        assert!(!table(&calm).contains("WARNING"));
    }

    #[test]
    fn summary_round_trips_through_json() {
        let s = sample();
        let text = serde_json::to_string(&s).unwrap();
        let back: Summary = serde_json::from_str(&text).unwrap();
        assert_eq!(back.connections.opened, 10);
        assert!(!text.contains("delivery"), "absent parts are left out: {text}");
        assert!(!text.contains("urls") && !text.contains("watched"), "{text}");
    }

    #[test]
    fn several_servers_and_watched_processes_are_each_shown() {
        let cpu = |s: f64| Some(Cpu { cpu_s: s, pct: s * 10.0, per_thread_pct: None });
        let s = Summary {
            urls: vec!["ws://127.0.0.1:1/".into(), "ws://127.0.0.1:2/".into()],
            server: Some(Server {
                pid: 10,
                pids: vec![10, 11],
                processes: vec![
                    Proc { pid: 10, cpu: cpu(1.0), rss_end: Some(1 << 20) },
                    Proc { pid: 11, cpu: cpu(2.0), rss_end: None },
                ],
                cpu: cpu(3.0),
                rss_start: None,
                rss_end: None,
                deliveries_per_cpu_s: None,
            }),
            watched: vec![Proc { pid: 12, cpu: cpu(0.5), rss_end: None }],
            ..sample()
        };
        let t = table(&s);
        assert!(t.contains("ws://127.0.0.1:1/ ws://127.0.0.1:2/"), "{t}");
        assert!(t.contains("servers 10+11 CPU") && t.contains("3.00 s, 30% of a core"), "{t}");
        assert!(t.contains("server 11 CPU") && t.contains("2.00 s"), "{t}");
        assert!(t.contains("watched 12 CPU") && t.contains("0.50 s, 5% of a core"), "{t}");
        let back: Summary = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!((back.urls.len(), back.watched.len()), (2, 1));
        assert_eq!(back.server.unwrap().processes.len(), 2);
    }
}
