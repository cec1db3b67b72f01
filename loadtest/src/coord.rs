//! Running a scenario: reactor threads in this process, child processes under a parent, and the
//! monitor that merges what they report.
//!
//! Owns: `Monitor` (merges per-second samples, phase arrivals and final stats from any number of
//! sources), `Top` (the top-level monitor: phases, the series, CPU, progress) and the three ways to
//! run: `run_single`, `run_child`, `run_parent`. What the threads share with it (`Shared`) and
//! what they report to it (`Report`) live in `shared`, below both.
//!
//! Phases keep every thread and process in step: all start in phase 0 (connect, subscribe); each
//! reports when it has finished a phase; once all have, the top-level monitor does what the
//! scenario needs between phases (sample the server's memory for `idle`, note the start time,
//! and whatever `steer` decides: the next n2 iteration, the next shootout step, the publisher's
//! final count) and opens the next phase with its value, or ends the run. A child merges its
//! threads' arrivals (values summed, histograms merged) before forwarding them to the parent and
//! hears the next phase on stdin (`phase P [VALUE]`, `finish`, `abort`), so processes move
//! together as threads do. A phase is a barrier across the whole run: it costs a round trip
//! through the parent (tens of microseconds), which is why n2 and shootout, whose rounds are
//! phases, add it to their iteration and step times whatever the number of processes.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::Poll;

use crate::config::Config;
use crate::net::{waker, Link, Net};
use crate::plan;
use crate::report::{self, Row, TopData};
use crate::shared::{Report, Shared};
use crate::stats::{Counters, Hist, Stats};
use crate::steer::{Next, Steer};
use crate::sys;
use crate::util::{self, Clock};

/// What the monitor made of the reports so far.
#[derive(Debug)]
pub enum Event {
    /// Every source has reported up to second `sec`: its merged figures.
    Second { sec: u64, open: u64, delta: Counters, hist: Box<Hist>, cpu_ns: u64 },
    /// Every source still running has finished `phase`; `open` connections in all, the sum of
    /// the values given and the merged histograms.
    Reached { phase: u32, open: u64, value: Option<u64>, hist: Option<Box<Hist>> },
    /// Every source is done.
    AllDone,
}

/// The sources that reached one phase and what they said.
struct Arrivals {
    seen: Vec<bool>,
    open: Vec<u64>,
    value: Option<u64>,
    hist: Option<Box<Hist>>,
}

/// Merges reports from `sources` sources.
pub struct Monitor {
    done: Vec<bool>,
    latest: Vec<Option<u64>>,
    open: Vec<u64>,
    buckets: BTreeMap<u64, (Counters, Hist, u64)>,
    reached: BTreeMap<u32, Arrivals>,
    announced: u32,
    pub stats: Stats,
    pub errors: Vec<String>,
}

impl Monitor {
    pub fn new(sources: usize) -> Monitor {
        Monitor {
            done: vec![false; sources],
            latest: vec![None; sources],
            open: vec![0; sources],
            buckets: BTreeMap::new(),
            reached: BTreeMap::new(),
            announced: 0,
            stats: Stats::default(),
            errors: Vec::new(),
        }
    }

    pub fn all_done(&self) -> bool {
        self.done.iter().all(|&d| d)
    }

    pub fn handle(&mut self, report: Report) -> Vec<Event> {
        let mut events = Vec::new();
        match report {
            Report::Sample { source, sec, open, delta, hist, cpu_ns } => {
                let b = self.buckets.entry(sec).or_insert_with(|| (Counters::default(), Hist::default(), 0));
                b.0.add(&delta);
                b.1.add(&hist);
                b.2 += cpu_ns;
                self.latest[source] = Some(self.latest[source].map_or(sec, |s| s.max(sec)));
                self.open[source] = open;
            }
            Report::Reached { source, phase, open, value, hist } => {
                let n = self.done.len();
                let entry = self.reached.entry(phase).or_insert_with(|| Arrivals {
                    seen: vec![false; n],
                    open: vec![0; n],
                    value: None,
                    hist: None,
                });
                entry.seen[source] = true;
                entry.open[source] = open;
                if let Some(v) = value {
                    entry.value = Some(entry.value.unwrap_or(0) + v);
                }
                match (&mut entry.hist, hist) {
                    (Some(mine), Some(h)) => mine.add(&h),
                    (mine @ None, h) => *mine = h,
                    _ => {}
                }
            }
            Report::Done { source, stats } => {
                self.stats.merge(&stats);
                self.done[source] = true;
                self.open[source] = 0;
            }
            Report::Failed { source, message } => {
                self.errors.push(message);
                self.done[source] = true;
                self.open[source] = 0;
            }
        }
        self.complete_seconds(&mut events);
        self.complete_phases(&mut events);
        if self.all_done() {
            events.push(Event::AllDone);
        }
        events
    }

    fn complete_seconds(&mut self, events: &mut Vec<Event>) {
        // A second is complete once every running source has reported it or a later one.
        let horizon = self
            .latest
            .iter()
            .zip(&self.done)
            .filter(|(_, &done)| !done)
            .map(|(l, _)| l.unwrap_or(0))
            .min()
            .unwrap_or(u64::MAX);
        while let Some((&sec, _)) = self.buckets.first_key_value() {
            if sec > horizon {
                break;
            }
            let (delta, hist, cpu_ns) = self.buckets.remove(&sec).unwrap_or_default();
            events.push(Event::Second { sec, open: self.open.iter().sum(), delta, hist: Box::new(hist), cpu_ns });
        }
    }

    fn complete_phases(&mut self, events: &mut Vec<Event>) {
        loop {
            let phase = self.announced;
            let Some(a) = self.reached.get(&phase) else {
                return;
            };
            let all = a.seen.iter().zip(&self.done).all(|(&s, &d)| s || d);
            if !all || self.all_done() {
                return;
            }
            // Announced phases are forgotten: n2 runs one per iteration.
            let Some(a) = self.reached.remove(&phase) else { return };
            events.push(Event::Reached { phase, open: a.open.iter().sum(), value: a.value, hist: a.hist });
            self.announced += 1;
        }
    }
}

/// The reactor threads of one process, started in phase 0.
struct Threads {
    shared: Arc<Shared>,
    rx: Receiver<Report>,
    handles: Vec<JoinHandle<()>>,
}

fn start_threads(cfg: &Arc<Config>, process: usize, clock: Clock) -> Result<Threads, String> {
    let c = &cfg.common;
    let shares = plan::shares(cfg.conns, c.messages, cfg.ramp(), c.max_pending, c.processes, c.threads, process);
    let mut polls = Vec::new();
    let mut wakers = Vec::new();
    for _ in &shares {
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        wakers.push(waker(&poll).map_err(|e| format!("waker: {e}"))?);
        polls.push(poll);
    }
    let shared = Arc::new(Shared::new(wakers));
    let (tx, rx) = channel();
    let mut handles = Vec::new();
    for (t, (share, poll)) in shares.into_iter().zip(polls).enumerate() {
        let registry = poll.registry().try_clone().map_err(|e| format!("epoll: {e}"))?;
        let net = Net::new(
            registry,
            cfg.target.clone(),
            share.ramp,
            share.max_pending,
            Link { clock, shared: shared.clone(), source: t, tx: tx.clone() },
        );
        let cfg = cfg.clone();
        let tx = tx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("load-{t}"))
            .spawn(move || {
                // A panicking thread still reports, so the monitor never waits for it.
                let run = std::panic::AssertUnwindSafe(|| crate::scenario::run_thread(&cfg, share, poll, net));
                let report = match std::panic::catch_unwind(run) {
                    Ok(stats) => Report::Done { source: t, stats: Box::new(stats) },
                    Err(_) => Report::Failed { source: t, message: format!("thread {t} panicked") },
                };
                let _ = tx.send(report);
            })
            .map_err(|e| format!("spawn: {e}"))?;
        handles.push(handle);
    }
    Ok(Threads { shared, rx, handles })
}

/// The longest a run may take before the monitor aborts it, whatever happens.
fn hard_limit(cfg: &Config) -> Duration {
    let c = &cfg.common;
    c.setup_timeout * 2 + cfg.ramp_time() + c.duration + c.drain + Duration::from_secs(30)
}

/// Runs the scenario with this process's threads only.
pub fn run_single(cfg: Arc<Config>) -> Result<report::Summary, String> {
    let epoch = util::unix_now_ns();
    let clock = Clock::new(epoch);
    let mut top = Top::new(&cfg, clock);
    let threads = start_threads(&cfg, 0, clock)?;
    let shared = threads.shared.clone();
    let monitor = Monitor::new(threads.handles.len());
    let stats = top.drive(
        monitor,
        &threads.rx,
        |phase, arg| shared.open_phase(phase, arg),
        || shared.finish(),
        || shared.abort(),
    )?;
    for h in threads.handles {
        let _ = h.join();
    }
    Ok(top.finish(stats))
}

/// Runs as child `index` of a parent: threads as in `run_single`, reports as JSON lines on
/// stdout, phases from stdin.
pub fn run_child(cfg: Arc<Config>, index: usize, epoch: u64) -> Result<(), String> {
    let clock = Clock::new(epoch);
    let threads = start_threads(&cfg, index, clock)?;
    let shared = threads.shared.clone();
    let run_phase = cfg.run_phase();
    let cpu_at_go = Arc::new(AtomicU64::new(u64::MAX));
    {
        let shared = shared.clone();
        let cpu_at_go = cpu_at_go.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let mut words = line.split_whitespace();
                match (words.next(), words.next().and_then(|w| w.parse::<u32>().ok())) {
                    (Some("phase"), Some(p)) => {
                        if p == run_phase {
                            cpu_at_go.store(sys::cpu_ns(None).unwrap_or(0), Ordering::Relaxed);
                        }
                        shared.open_phase(p, words.next().and_then(|w| w.parse::<u64>().ok()));
                    }
                    (Some("finish"), _) => shared.finish(),
                    (Some("abort"), _) => shared.abort(),
                    _ => {}
                }
            }
            // The parent is gone: stop rather than run unobserved.
            shared.abort();
        });
    }
    let mut monitor = Monitor::new(threads.handles.len());
    let mut out = std::io::stdout().lock();
    let mut emit = |r: &Report| -> Result<(), String> {
        let line = serde_json::to_string(r).map_err(|e| e.to_string())?;
        writeln!(out, "{line}").and_then(|_| out.flush()).map_err(|e| format!("stdout: {e}"))
    };
    let mut last_cpu = sys::cpu_ns(None).unwrap_or(0);
    let deadline = Instant::now() + hard_limit(&cfg);
    loop {
        let report = match threads.rx.recv_timeout(Duration::from_millis(200)) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                if Instant::now() > deadline {
                    shared.abort();
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        for event in monitor.handle(report) {
            match event {
                Event::Second { sec, open, delta, hist, .. } => {
                    let cpu = sys::cpu_ns(None).unwrap_or(0);
                    emit(&Report::Sample {
                        source: index,
                        sec,
                        open,
                        delta,
                        hist: *hist,
                        cpu_ns: cpu.saturating_sub(last_cpu),
                    })?;
                    last_cpu = cpu;
                }
                Event::Reached { phase, open, value, hist } => {
                    emit(&Report::Reached { source: index, phase, open, value, hist })?
                }
                Event::AllDone => {
                    let mut stats = std::mem::take(&mut monitor.stats);
                    let at_go = cpu_at_go.load(Ordering::Relaxed);
                    if at_go != u64::MAX {
                        stats.cpu_ns = sys::cpu_ns(None).unwrap_or(0).saturating_sub(at_go);
                    }
                    emit(&Report::Done { source: index, stats: Box::new(stats) })?;
                    for h in threads.handles {
                        let _ = h.join();
                    }
                    return Ok(());
                }
            }
        }
    }
    Err("threads ended without a result".into())
}

/// Runs the scenario over `--processes` children of this executable and merges their results.
pub fn run_parent(cfg: Arc<Config>, args: &[String]) -> Result<report::Summary, String> {
    let epoch = util::unix_now_ns();
    let clock = Clock::new(epoch);
    let mut top = Top::new(&cfg, clock);
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let (tx, rx) = channel::<Report>();
    let mut children: Vec<Child> = Vec::new();
    let mut stdins: Vec<ChildStdin> = Vec::new();
    for i in 0..cfg.common.processes {
        let mut child = Command::new(&exe)
            .args(args)
            .arg("--child-index")
            .arg(i.to_string())
            .arg("--epoch-ns")
            .arg(epoch.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawning child {i}: {e}"))?;
        let stdout = child.stdout.take().ok_or("child stdout")?;
        stdins.push(child.stdin.take().ok_or("child stdin")?);
        spawn_child_reader(i, stdout, tx.clone());
        children.push(child);
    }
    drop(tx);
    let monitor = Monitor::new(children.len());
    let stdins = std::cell::RefCell::new(stdins);
    let send_all = |line: &str| {
        for s in stdins.borrow_mut().iter_mut() {
            let _ = writeln!(s, "{line}").and_then(|_| s.flush());
        }
    };
    let result = top.drive(
        monitor,
        &rx,
        |phase, arg| match arg {
            Some(v) => send_all(&format!("phase {phase} {v}")),
            None => send_all(&format!("phase {phase}")),
        },
        || send_all("finish"),
        || send_all("abort"),
    );
    drop(stdins);
    for mut c in children {
        // Children exit once they have printed their result; wait a little, then make sure.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(None) = c.try_wait() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    Ok(top.finish(result?))
}

fn spawn_child_reader(i: usize, stdout: std::process::ChildStdout, tx: Sender<Report>) {
    std::thread::spawn(move || {
        let mut got_result = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Report>(&line) {
                Ok(mut r) => {
                    // Children number their own threads; here each child is one source.
                    match &mut r {
                        Report::Sample { source, .. }
                        | Report::Reached { source, .. }
                        | Report::Done { source, .. }
                        | Report::Failed { source, .. } => *source = i,
                    }
                    got_result |= matches!(r, Report::Done { .. });
                    let _ = tx.send(r);
                }
                Err(e) => eprintln!("fanout-load: child {i}: unreadable line ({e})"),
            }
        }
        if !got_result {
            let _ = tx.send(Report::Failed { source: i, message: format!("child {i} exited without a result") });
        }
    });
}

/// The top-level monitor: phases, the per-second series, server and generator CPU, progress.
pub struct Top {
    cfg: Arc<Config>,
    clock: Clock,
    started: Instant,
    go: Option<(Instant, u64)>,
    data: TopData,
    steer: Option<Steer>,
    server_cpu_last: Option<(Instant, u64)>,
    own_cpu_last: (Instant, u64),
    total: Counters,
    progress: bool,
    last_line_len: usize,
}

impl Top {
    fn new(cfg: &Arc<Config>, clock: Clock) -> Top {
        let pids = &cfg.common.server_pids;
        let mut data = TopData::default();
        // Before the first connection: the intercept of the memory fit.
        if let Some(rss) = sys::rss_bytes_sum(pids) {
            data.rss_points.push((0, rss));
        }
        data.server_rss_start = sys::rss_bytes_sum(pids);
        let now = Instant::now();
        Top {
            cfg: cfg.clone(),
            clock,
            started: now,
            go: None,
            data,
            steer: Some(Steer::new(cfg)),
            server_cpu_last: sys::cpu_ns_sum(pids).map(|c| (now, c)),
            own_cpu_last: (now, sys::cpu_ns(None).unwrap_or(0)),
            total: Counters::default(),
            progress: std::io::stderr().is_terminal() && !cfg.common.quiet,
            last_line_len: 0,
        }
    }

    /// Feeds reports to `monitor` until every source is done; returns the merged stats.
    fn drive(
        &mut self,
        mut monitor: Monitor,
        rx: &Receiver<Report>,
        open_phase: impl Fn(u32, Option<u64>),
        finish: impl Fn(),
        abort: impl Fn(),
    ) -> Result<Stats, String> {
        let deadline = self.started + hard_limit(&self.cfg);
        let mut aborted = false;
        // A phase to open at a set instant (a paced n2 iteration).
        let mut scheduled: Option<(Instant, u32, Option<u64>)> = None;
        loop {
            let mut wait = Duration::from_millis(200);
            if let Some((at, next, arg)) = scheduled {
                let now = Instant::now();
                if now >= at {
                    scheduled = None;
                    self.open(next, arg, &open_phase);
                } else {
                    wait = wait.min(at - now);
                }
            }
            let report = match rx.recv_timeout(wait) {
                Ok(r) => r,
                Err(RecvTimeoutError::Timeout) => {
                    if Instant::now() > deadline && !aborted {
                        eprintln!("fanout-load: the run overran its time bound; stopping it");
                        self.data.notes.push("aborted: the run overran its time bound".into());
                        abort();
                        aborted = true;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return Err("every source ended without a result".into()),
            };
            for event in monitor.handle(report) {
                match event {
                    Event::Second { sec, open, delta, hist, cpu_ns } => self.second(sec, open, &delta, &hist, cpu_ns),
                    Event::Reached { phase, open, value, hist } => {
                        self.reached(phase, open);
                        let now = Instant::now();
                        let decision = match self.steer.as_mut() {
                            Some(s) => s.reached(phase, open, value, hist.as_deref(), now),
                            None => Next::Open(phase + 1, None),
                        };
                        match decision {
                            Next::Open(next, arg) => self.open(next, arg, &open_phase),
                            Next::OpenAt(at, next, arg) => scheduled = Some((at, next, arg)),
                            Next::Finish => finish(),
                        }
                    }
                    Event::AllDone => {
                        self.clear_progress();
                        self.data.errors.append(&mut monitor.errors);
                        return Ok(std::mem::take(&mut monitor.stats));
                    }
                }
            }
        }
    }

    fn open(&mut self, phase: u32, arg: Option<u64>, open_phase: &impl Fn(u32, Option<u64>)) {
        if phase == self.cfg.run_phase() {
            self.begin_run();
        }
        open_phase(phase, arg);
    }

    fn begin_run(&mut self) {
        let now = Instant::now();
        self.go = Some((now, self.clock.ns_at(now)));
        let c = &self.cfg.common;
        self.data.server_cpu_at_go = sys::cpu_ns_sum(&c.server_pids);
        self.data.procs_at_go = c.server_pids.iter().chain(&c.watch_pids).map(|&p| sys::cpu_ns(Some(p))).collect();
        self.data.own_cpu_at_go = sys::cpu_ns(None);
        self.data.go_at = Some(now);
    }

    fn reached(&mut self, phase: u32, open: u64) {
        let c = &self.cfg.common;
        if self.cfg.scenario_name() == "idle" && phase < self.cfg.run_phase() + 1 && !c.server_pids.is_empty() {
            // Let the server finish what the last handshakes started before reading RSS.
            std::thread::sleep(Duration::from_millis(100));
            if let Some(rss) = sys::rss_bytes_sum(&c.server_pids) {
                self.data.rss_points.push((open, rss));
            }
        }
        self.data.held = self.data.held.max(open);
    }

    fn second(&mut self, sec: u64, open: u64, delta: &Counters, hist: &Hist, child_cpu_ns: u64) {
        self.total.add(delta);
        // n2's iteration times are measured here, not by the threads.
        let merged;
        let hist = match self.steer.as_mut().and_then(Steer::take_second) {
            Some(mut mine) => {
                mine.add(hist);
                merged = mine;
                &merged
            }
            None => hist,
        };
        let now = Instant::now();
        let t = match self.go {
            Some((_, go_ns)) => (sec as f64 + 1.0) - go_ns as f64 / 1e9,
            None => (sec as f64 + 1.0) - self.clock.ns_at(self.started) as f64 / 1e9,
        };
        // Generator CPU: this process, plus what children said they used in that second.
        let own = sys::cpu_ns(None).unwrap_or(0);
        let (last_t, last_own) = self.own_cpu_last;
        let wall = now.duration_since(last_t).as_secs_f64().max(1e-3);
        let own_pct = (own.saturating_sub(last_own) as f64 / 1e9) / wall * 100.0;
        self.own_cpu_last = (now, own);
        let gen_cpu_pct =
            if self.cfg.common.processes > 1 { own_pct + child_cpu_ns as f64 / 1e9 * 100.0 } else { own_pct };
        let pids = &self.cfg.common.server_pids;
        let server_cpu_pct = match (sys::cpu_ns_sum(pids), self.server_cpu_last) {
            (Some(c), Some((lt, lc))) => {
                let w = now.duration_since(lt).as_secs_f64().max(1e-3);
                self.server_cpu_last = Some((now, c));
                Some((c.saturating_sub(lc) as f64 / 1e9) / w * 100.0)
            }
            _ => None,
        };
        let server_rss = sys::rss_bytes_sum(pids);
        let row = Row {
            t,
            open,
            opened: delta.opened,
            sent: delta.sent,
            received: delta.received,
            failed: delta.failed,
            p50_us: hist.q(0.5),
            p99_us: hist.q(0.99),
            p999_us: hist.q(0.999),
            max_us: hist.q(1.0),
            gen_cpu_pct,
            server_cpu_pct,
            server_rss,
        };
        if self.progress {
            self.print_progress(&row);
        }
        self.data.series.push(row);
    }

    fn print_progress(&mut self, row: &Row) {
        let (what, n) = match self.cfg.scenario_name() {
            "connect" => ("upgrades/s", row.opened),
            "idle" => ("opened/s", row.opened),
            _ => ("msg/s", row.received),
        };
        let line = format!(
            "[{:>5.0}s] open {} | {} {} | p99 {} | failed {} | errors {}",
            row.t,
            util::thousands(row.open),
            util::thousands(n),
            what,
            util::micros(row.p99_us),
            util::thousands(self.total.failed),
            util::thousands(self.total.errors),
        );
        let pad = self.last_line_len.saturating_sub(line.len());
        eprint!("\r{line}{}", " ".repeat(pad));
        self.last_line_len = line.len();
    }

    fn clear_progress(&mut self) {
        if self.progress && self.last_line_len > 0 {
            eprint!("\r{}\r", " ".repeat(self.last_line_len));
        }
    }

    fn finish(mut self, mut stats: Stats) -> report::Summary {
        let end = Instant::now();
        if let Some(steer) = self.steer.take() {
            steer.finish(&mut stats);
        }
        let c = &self.cfg.common;
        if !c.server_pids.is_empty() {
            if self.data.rss_points.len() > 1 || self.cfg.scenario_name() != "idle" {
                self.data.server_rss_end = sys::rss_bytes_sum(&c.server_pids);
            }
            self.data.server_cpu_at_end = sys::cpu_ns_sum(&c.server_pids);
        }
        self.data.procs_at_end = c
            .server_pids
            .iter()
            .chain(&c.watch_pids)
            .map(|&p| (sys::cpu_ns(Some(p)), sys::rss_bytes(Some(p))))
            .collect();
        if self.cfg.common.processes <= 1 {
            if let Some(at_go) = self.data.own_cpu_at_go {
                stats.cpu_ns = sys::cpu_ns(None).unwrap_or(0).saturating_sub(at_go);
            }
        } else if let Some(at_go) = self.data.own_cpu_at_go {
            stats.cpu_ns += sys::cpu_ns(None).unwrap_or(0).saturating_sub(at_go);
        }
        self.data.wall = self.data.go_at.map_or(Duration::ZERO, |go| end.duration_since(go));
        self.data.gen_cores = crate::bound::allowed_cpus(None).unwrap_or(1);
        self.data.notes.extend(crate::bound::busy_machine_note());
        self.data.server_cores = c.server_cores.or_else(|| {
            let cpus: Option<usize> = c.server_pids.iter().map(|&p| crate::bound::allowed_cpus(Some(p))).sum();
            cpus.map(|n| n as f64)
        });
        report::summarize(&self.cfg, stats, self.data)
    }
}
