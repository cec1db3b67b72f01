//! `soak`: a long mixed run against `fanout serve`, judged rather than measured.
//!
//! Owns: `run` (starts the mix's threads, samples the server every `--sample-every`, stops the
//! mix, prints the summary and the verdict). The parts live in the children: `driver` (the
//! WebSocket connections on `--threads` reactor threads), `probes` (the HTTP publisher, the
//! malformed cases and `/metrics`, each on a blocking thread), `verdict` (samples, CSV, the
//! growth rule) and `state` (what they share). The run passes when no part recorded a failure
//! (a gap, a duplicate, a healthy connection closed, a wrong answer, a failed publish) and
//! neither RSS nor fds grew once the mix was steady. Must not: run through `coord` (a soak has
//! no phases and reports no latency), or start the server (`loadtest/scripts/soak.sh` does).

pub mod driver;
pub mod probes;
pub mod state;
pub mod verdict;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Poll;

use self::driver::{Share, SoakDriver};
use self::probes::{metrics, Server, ServerMetrics};
use self::state::{get, SoakState};
use self::verdict::{csv_line, growth, Limits, Sample, CSV_HEADER};
use crate::config::{Config, SoakArgs};
use crate::net::reactor::Reactor;
use crate::net::{waker, Link, Net};
use crate::plan::split;
use crate::shared::Shared;
use crate::util::{unix_now_ns, Clock};

/// How long subscribers may take, once publishing stops, to receive the last publishes.
const DRAIN: Duration = Duration::from_secs(10);

/// Runs the soak; `Ok(true)` when it passed.
pub fn run(cfg: &Config, args: &SoakArgs) -> Result<bool, String> {
    let c = &cfg.common;
    let pid = c.server_pids[0];
    let endpoint = cfg.target.endpoint(0).clone();
    let server = Server {
        addr: SocketAddr::V4(SocketAddrV4::new(endpoint.addrs.host, endpoint.addrs.port)),
        host: endpoint.host.clone(),
    };
    metrics(&server).map_err(|e| format!("{}: /metrics: {e}", server.host))?;
    let state = Arc::new(SoakState::new(args.channels));
    let long_lived = cfg.conns + args.flappers;
    let slow = (long_lived as f64 * args.slow_percent / 100.0).ceil() as u64;
    let mut csv = BufWriter::new(File::create(&args.csv).map_err(|e| format!("{}: {e}", args.csv.display()))?);
    writeln!(csv, "{CSV_HEADER}").map_err(|e| e.to_string())?;

    let mut threads = Vec::new();
    let mut held = Vec::new();
    let steady = split(cfg.conns, c.threads);
    let flappers = split(args.flappers, c.threads);
    let slows = split(slow, c.threads);
    for t in 0..c.threads {
        let share = Share {
            steady: steady[t].end - steady[t].start,
            flappers: flappers[t].end - flappers[t].start,
            slow: slows[t].end - slows[t].start,
            churn_rate: args.churn_rate / c.threads as f64,
            churn_life: args.churn_life,
            flap_hold: args.flap_hold,
            slow_hold: args.slow_hold,
            channels: args.channels,
            first_index: (t as u64) << 40,
            drain: DRAIN,
        };
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        let shared = Arc::new(Shared::new(vec![waker(&poll).map_err(|e| format!("waker: {e}"))?]));
        let registry = poll.registry().try_clone().map_err(|e| format!("epoll: {e}"))?;
        // The reactor reports each second to a monitor; a soak has none, so the receiver is
        // dropped and the reports go nowhere.
        let (tx, _) = channel();
        let link = Link { clock: Clock::new(unix_now_ns()), shared, source: t, tx };
        let net = Net::new(registry, cfg.target.clone(), 0.0, 256, link);
        let count = Arc::new(AtomicU64::new(0));
        held.push(count.clone());
        let driver = SoakDriver::new(share, state.clone(), count);
        threads.push(std::thread::Builder::new().name(format!("soak-ws-{t}")).spawn(move || {
            Reactor::new(poll, net, driver).run();
        }));
    }
    let mut probes = Vec::new();
    {
        let (srv, key, st) = (server.clone(), args.api_key.clone(), state.clone());
        let (rate, payload) = (args.rate, c.payload);
        probes.push(std::thread::spawn(move || probes::publisher(srv, key, rate, payload, st)));
        let (srv, st) = (server.clone(), state.clone());
        let (rate, oversize) = (args.malformed_rate, args.oversize);
        probes.push(std::thread::spawn(move || probes::malformed(srv, rate, oversize, st)));
        if slow > 0 {
            let (srv, st) = (server.clone(), state.clone());
            probes.push(std::thread::spawn(move || probes::watch_slow(srv, st)));
        }
    }

    println!(
        "soak: {} steady subscribers, {} flappers, {} slow readers on {} channels; {} publishes/s over HTTP; \
         {} churn connections/s; {} malformed/s; {} s, samples every {} s",
        cfg.conns,
        args.flappers,
        slow,
        args.channels,
        args.rate,
        args.churn_rate,
        args.malformed_rate,
        c.duration.as_secs(),
        args.sample_every.as_secs_f64()
    );
    let start = Instant::now();
    let cpu0 = crate::sys::cpu_ns(Some(pid)).unwrap_or(0);
    let own_cpu0 = crate::sys::cpu_ns(None).unwrap_or(0);
    let mut samples = Vec::new();
    let mut last_metrics = ServerMetrics::default();
    let mut next = start + args.sample_every;
    let end = start + c.duration;
    let mut last_print = start;
    loop {
        let now = Instant::now();
        if next > now {
            // The sampling period: the sampler waits on the clock, not on the mix.
            std::thread::sleep(next - now);
        }
        let now = Instant::now();
        let sample = match take_sample(pid, &server, &state, &held, start, cpu0) {
            Ok((s, m)) => {
                last_metrics = m;
                s
            }
            Err(e) => {
                state.fail(format!("sampling: {e}"));
                break;
            }
        };
        writeln!(csv, "{}", csv_line(&sample)).map_err(|e| e.to_string())?;
        let _ = csv.flush();
        if now.duration_since(last_print) >= Duration::from_secs(30) || !c.quiet && now + args.sample_every >= end {
            last_print = now;
            println!(
                "  {:>5.0} s  rss {:>6.1} MiB  fds {:>5}  conns {:>5} (ours {:>5})  delivered {:>10}  failures {}",
                sample.t,
                sample.rss as f64 / 1048576.0,
                sample.fds,
                sample.server_conns,
                sample.client_conns,
                sample.delivered,
                sample.failures
            );
        }
        samples.push(sample);
        next += args.sample_every;
        if next > end {
            break;
        }
    }
    state.stop.store(true, Ordering::Relaxed);
    for p in probes {
        let _ = p.join();
    }
    for t in threads.into_iter().flatten() {
        let _ = t.join();
    }
    let final_metrics = metrics(&server).unwrap_or(last_metrics);
    let cpu = crate::sys::cpu_ns(Some(pid)).map(|n| n.saturating_sub(cpu0) as f64 / 1e9);
    let own_cpu = crate::sys::cpu_ns(None).map(|n| n.saturating_sub(own_cpu0) as f64 / 1e9);
    let limits = Limits {
        warmup: args.warmup.unwrap_or(c.duration / 5).as_secs_f64(),
        rss_percent: args.rss_tolerance,
        rss_slack: args.rss_slack_mib << 20,
        fd_slack: args.fd_slack,
    };
    let g = growth(&samples, &limits);
    Ok(report(&state, &samples, &g, &limits, final_metrics, (cpu, own_cpu), start.elapsed(), &args.csv))
}

fn take_sample(
    pid: u32,
    server: &Server,
    state: &SoakState,
    held: &[Arc<AtomicU64>],
    start: Instant,
    cpu0: u64,
) -> Result<(Sample, ServerMetrics), String> {
    let rss = crate::sys::rss_bytes(Some(pid)).ok_or_else(|| format!("the server (pid {pid}) is gone"))?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| format!("/proc/{pid}/fd: {e}"))?.count() as u64;
    let m = metrics(server).map_err(|e| format!("/metrics: {e}"))?;
    let cpu = crate::sys::cpu_ns(Some(pid)).unwrap_or(cpu0);
    let s = Sample {
        t: start.elapsed().as_secs_f64(),
        rss,
        fds,
        server_conns: m.connections,
        client_conns: held.iter().map(|h| h.load(Ordering::Relaxed)).sum::<u64>() + get(&state.n.client_open),
        cpu_s: cpu.saturating_sub(cpu0) as f64 / 1e9,
        delivered: get(&state.n.delivered),
        published: get(&state.n.published),
        slow_consumers: m.slow_consumers,
        failures: state.failures().0,
    };
    Ok((s, m))
}

/// Prints the summary and the verdict; returns whether the soak passed.
#[allow(clippy::too_many_arguments)]
fn report(
    state: &SoakState,
    samples: &[Sample],
    g: &verdict::Growth,
    limits: &Limits,
    m: ServerMetrics,
    (cpu, own_cpu): (Option<f64>, Option<f64>),
    elapsed: Duration,
    csv: &std::path::Path,
) -> bool {
    let n = &state.n;
    let mib = |b: u64| b as f64 / 1048576.0;
    let secs = elapsed.as_secs_f64();
    println!("\nsoak summary ({secs:.0} s)");
    let steady = samples.iter().find(|s| s.t >= limits.warmup);
    if let (Some(a), Some(b)) = (steady, samples.last()) {
        println!("  {:<28} {:>12} {:>12}", "", format!("at {:.0} s", a.t), format!("at {:.0} s", b.t));
        println!("  {:<28} {:>12.1} {:>12.1}", "server RSS (MiB)", mib(a.rss), mib(b.rss));
        println!("  {:<28} {:>12} {:>12}", "server fds", a.fds, b.fds);
        println!("  {:<28} {:>12} {:>12}", "server connections", a.server_conns, b.server_conns);
        println!("  {:<28} {:>12} {:>12}", "connections the mix held", a.client_conns, b.client_conns);
    }
    if let Some(cpu) = cpu {
        println!("  server CPU: {cpu:.1} s over {secs:.0} s ({:.0}% of one core)", 100.0 * cpu / secs);
    }
    if let Some(own) = own_cpu {
        println!("  generator CPU: {own:.1} s ({:.0}% of one core)", 100.0 * own / secs);
    }
    println!(
        "  publishes: {} ok over HTTP ({:.1}/s); delivered in order to healthy subscribers: {}; gaps {}, duplicates {}",
        get(&n.published),
        get(&n.published) as f64 / secs,
        get(&n.delivered),
        get(&n.gaps),
        get(&n.dups)
    );
    println!(
        "  subscribes {}, of which resumes with since {}; unsubscribes {}",
        get(&n.subscribes),
        get(&n.resumes),
        get(&n.unsubscribes)
    );
    println!(
        "  churn: {} opened, {} closed clean, {} reset",
        get(&n.churn_opened),
        get(&n.churn_clean),
        get(&n.churn_reset)
    );
    println!(
        "  slow readers: {} opened; ended by the server with 1008 seen: {}, without the 1008 (EOF or reset): {}; \
         not closed when read again: {}; the server's slow_consumers: {}",
        get(&n.slow_opened),
        get(&n.slow_1008),
        get(&n.slow_eof),
        get(&n.slow_open),
        m.slow_consumers
    );
    println!("  malformed: {} cases", get(&n.malformed));
    for (case, answers) in state.answers() {
        let list: Vec<String> = answers.iter().map(|(a, k)| format!("{a} x{k}")).collect();
        println!("    {case:<24} {}", list.join(", "));
    }
    for line in &g.lines {
        println!("  {line}");
    }
    println!("  samples: {}", csv.display());
    let (count, described) = state.failures();
    let mut reasons: Vec<String> = g.failures.clone();
    if m.slow_consumers > get(&n.slow_opened) {
        reasons.push(format!(
            "the server closed {} slow consumers but only {} slow readers were opened",
            m.slow_consumers,
            get(&n.slow_opened)
        ));
    }
    if count > 0 {
        reasons.push(format!("{count} failures in the mix"));
    }
    if reasons.is_empty() {
        println!("PASS");
        return true;
    }
    println!("FAIL: {}", reasons.join("; "));
    for d in described {
        println!("  - {d}");
    }
    false
}
