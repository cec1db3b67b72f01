//! `shootout`: the websocket-shootout benchmark. Clients are added in steps; after each step a
//! sample of round trips is measured (`--concurrent` at a time, from random clients); the run
//! stops when the chosen percentile exceeds `--limit-ms`, and the answer is the largest client
//! count that stayed under it.
//!
//! Spread over threads and processes: each step is two phases of the run (see `steer`). On the
//! odd one, whose value is the clients the run should have, each thread opens its even share of
//! them and reports once they are connected; on the even one, the threads among the first
//! `--concurrent` (each with its share of `--concurrent` and of `--sample`) time round trips
//! from their own clients, and every thread reports its histogram and the broadcast deliveries
//! it counted. The monitor merges them, records the step and decides the next one, so the
//! decision is the one a single thread would make from all the samples. A thread without a
//! client in a step measures nothing in it.
//!
//! Owns: the shootout protocol. A client sends `{"type":"broadcast","payload":{"t":..}}`; the
//! server sends `{"type":"broadcast","payload":..}` to every client and then
//! `{"type":"broadcastResult","payload":..}` to the sender, whose arrival ends the round trip
//! (as in the original tool). `--command echo` sends `{"type":"echo",...}` and times the echo.
//! Every client also times each broadcast it receives from the sender's `t` (the clock is shared
//! by every thread and process of the run): the delivery latency, reported beside the round trip.

use std::io::Write;
use std::time::{Duration, Instant};

use fanout::proto::OpCode;

use super::phase::{filler, Window};
use crate::config::{Config, ShootCmd, ShootoutArgs};
use crate::net::{Driver, Ended, Kind, Net};
use crate::plan::{split, Share};
use crate::stats::Hist;
use crate::wire::{json_str, json_u64};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Between phases, or before the first.
    Idle,
    Connecting(u32),
    Sampling(u32),
    Done,
}

pub struct Shootout {
    share: Share,
    /// Threads in the run, and this one's index among them.
    workers: usize,
    next: u64,
    limit_us: u64,
    concurrent: usize,
    sample: usize,
    command: ShootCmd,
    pad: String,
    window: Window,
    stage: Stage,
    clients: Vec<usize>,
    in_progress: usize,
    measured: usize,
    step_hist: Hist,
    step_deliveries: u64,
    sample_started: Option<Instant>,
    reported: bool,
    budget: u64,
}

/// This thread's part of `total` split over `workers` threads, or over the first `among` of
/// them when there are fewer things than threads.
fn part(total: u64, workers: usize, among: usize, index: usize) -> u64 {
    let among = among.clamp(1, workers.max(1));
    if index >= among {
        return 0;
    }
    let r = &split(total, among)[index];
    r.end - r.start
}

impl Shootout {
    pub fn new(cfg: &Config, args: &ShootoutArgs, share: Share) -> Shootout {
        let c = &cfg.common;
        let workers = c.threads.max(1) * c.processes.max(1);
        let concurrent = args.concurrent.max(1);
        // The threads that sample: one in flight at least each.
        let among = concurrent.min(workers);
        Shootout {
            workers,
            next: share.conns.start,
            limit_us: (args.limit_ms * 1000.0) as u64,
            concurrent: part(concurrent as u64, workers, among, share.index) as usize,
            sample: part(args.sample.max(1) as u64, workers, among, share.index) as usize,
            command: args.command,
            pad: filler(c.payload.saturating_sub(30)),
            window: Window::default(),
            stage: Stage::Idle,
            clients: Vec::new(),
            in_progress: 0,
            measured: 0,
            step_hist: Hist::default(),
            step_deliveries: 0,
            sample_started: None,
            reported: false,
            budget: share.messages,
            share,
        }
    }

    fn send_random(&mut self, net: &mut Net) {
        if self.clients.is_empty() || self.budget == 0 {
            return;
        }
        let id = self.clients[net.rng.below(self.clients.len() as u64) as usize];
        let t = net.clock.ns_at(net.now);
        let kind = match self.command {
            ShootCmd::Broadcast => "broadcast",
            ShootCmd::Echo => "echo",
        };
        let pad = &self.pad;
        let sent = net.send_with(id, OpCode::Text, |b| {
            let _ = write!(b, r#"{{"type":"{kind}","payload":{{"t":{t},"padding":"{pad}"}}}}"#);
        });
        if let Some(len) = sent {
            self.budget -= 1;
            self.in_progress += 1;
            net.stats.counters.count_sent(len);
        }
    }

    /// Opens this thread's share of the `target` clients the run should have.
    fn start_step(&mut self, net: &mut Net, phase: u32, target: u64) {
        let mine = part(target, self.workers, self.workers, self.share.index);
        let end = self.share.conns.end.min(self.share.conns.start + mine);
        while self.next < end {
            net.open(self.next, Kind::Ws);
            self.next += 1;
        }
        self.stage = Stage::Connecting(phase);
    }

    fn start_sampling(&mut self, net: &mut Net, phase: u32) {
        self.stage = Stage::Sampling(phase);
        self.sample_started = Some(net.now);
        self.in_progress = 0;
        self.measured = 0;
        self.step_hist.reset();
        for _ in 0..self.concurrent.min(self.sample) {
            self.send_random(net);
        }
    }

    /// This thread's part of the step is measured: hand it to the monitor.
    fn finish_step(&mut self, net: &mut Net, phase: u32) {
        let hist = std::mem::take(&mut self.step_hist);
        net.reached_with(phase, Some(self.step_deliveries), Some(hist));
        self.step_deliveries = 0;
        self.measured = 0;
        self.stage = Stage::Idle;
    }
}

impl Driver for Shootout {
    fn start(&mut self, _net: &mut Net) {}

    fn on_phase(&mut self, net: &mut Net, phase: u32) {
        if phase == 1 {
            // No deadline here: the monitor decides when the last step has run.
            self.window.go = Some(net.now);
        }
        if phase % 2 == 1 {
            let target = net.shared.phase_arg(phase).unwrap_or(0);
            self.start_step(net, phase, target);
        } else {
            self.start_sampling(net, phase);
        }
    }

    fn on_open(&mut self, _net: &mut Net, id: usize) {
        self.clients.push(id);
    }

    fn on_message(&mut self, net: &mut Net, _id: usize, _text: bool, payload: &[u8], at: Instant) {
        let kind = json_str(payload, "type").unwrap_or_default();
        let rtt = match (kind, self.command) {
            (b"broadcast", _) => {
                self.step_deliveries += 1;
                net.stats.counters.received += 1;
                net.stats.counters.bytes_received += payload.len() as u64;
                if let Some(t) = json_u64(payload, "t") {
                    net.stats.delivery_latency.record(net.clock.ns_at(at).saturating_sub(t) / 1000);
                }
                return;
            }
            (b"broadcastResult", ShootCmd::Broadcast) | (b"echo", ShootCmd::Echo) => {
                json_u64(payload, "t").map(|t| net.clock.ns_at(at).saturating_sub(t) / 1000)
            }
            _ => None,
        };
        let Some(us) = rtt else {
            net.stats.counters.errors += 1;
            return;
        };
        if self.command == ShootCmd::Echo {
            net.stats.counters.received += 1;
        }
        self.window.touch(at);
        self.in_progress = self.in_progress.saturating_sub(1);
        if !matches!(self.stage, Stage::Sampling(_)) {
            return;
        }
        self.step_hist.record(us);
        self.measured += 1;
        if self.measured + self.in_progress < self.sample {
            self.send_random(net);
        }
    }

    fn on_end(&mut self, _net: &mut Net, end: &Ended) {
        if let (true, Some(id)) = (end.was_open, end.id) {
            self.clients.retain(|&c| c != id);
        }
    }

    fn on_turn(&mut self, net: &mut Net) -> Option<Instant> {
        if !self.reported {
            self.reported = true;
            net.reached(0);
        }
        self.window.go?;
        if net.shared.finishing() {
            self.stage = Stage::Done;
            return None;
        }
        let now = net.now;
        match self.stage {
            Stage::Connecting(phase) if net.opening() == 0 => {
                self.stage = Stage::Idle;
                net.reached(phase);
            }
            // Nothing to measure here (no client, or no share of the sample, or no budget).
            Stage::Sampling(phase) if self.clients.is_empty() || self.measured + self.in_progress == 0 => {
                self.finish_step(net, phase)
            }
            Stage::Sampling(phase) if self.measured >= self.sample => self.finish_step(net, phase),
            Stage::Sampling(phase) => {
                // Round trips that never come back count as over the limit.
                let give_up = Duration::from_micros(self.limit_us * 20).max(Duration::from_secs(10));
                if self.sample_started.is_some_and(|s| now >= s + give_up) {
                    net.stats.notes.push(format!(
                        "step with {} clients on thread {}: {} of {} round trips came back in time",
                        self.clients.len(),
                        self.share.index,
                        self.measured,
                        self.sample
                    ));
                    self.step_hist.record(crate::stats::MAX_US);
                    self.finish_step(net, phase);
                }
            }
            _ => {}
        }
        Some(now + Duration::from_millis(50))
    }

    fn finished(&self) -> bool {
        self.stage == Stage::Done
    }

    fn finish(&mut self, net: &mut Net) {
        net.stats.active_ns = self.window.active_ns();
    }
}
