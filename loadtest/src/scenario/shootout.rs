//! `shootout`: the websocket-shootout benchmark. Clients are added in steps; after each step a
//! sample of round trips is measured (`--concurrent` at a time, from random clients); the run
//! stops when the chosen percentile exceeds `--limit-ms`, and the answer is the largest client
//! count that stayed under it.
//!
//! Owns: the shootout protocol. A client sends `{"type":"broadcast","payload":{"t":..}}`; the
//! server sends `{"type":"broadcast","payload":..}` to every client and then
//! `{"type":"broadcastResult","payload":..}` to the sender, whose arrival ends the round trip
//! (as in the original tool). `--command echo` sends `{"type":"echo",...}` and times the echo.

use std::io::Write;
use std::time::{Duration, Instant};

use fanout::proto::OpCode;

use super::phase::{filler, Window};
use crate::config::{Config, ShootCmd, ShootoutArgs};
use crate::net::{Driver, Ended, Kind, Net};
use crate::plan::Share;
use crate::stats::{Hist, Step};
use crate::wire::{json_str, json_u64};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Connecting,
    Sampling,
    Done,
}

pub struct Shootout {
    share: Share,
    step: u64,
    target: u64,
    next: u64,
    limit_us: u64,
    quantile: f64,
    concurrent: usize,
    sample: usize,
    command: ShootCmd,
    pad: String,
    duration: Duration,
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

impl Shootout {
    pub fn new(cfg: &Config, args: &ShootoutArgs, share: Share) -> Shootout {
        let c = &cfg.common;
        Shootout {
            step: args.step.max(1),
            target: args.initial.unwrap_or(args.step).max(1),
            next: share.conns.start,
            limit_us: (args.limit_ms * 1000.0) as u64,
            quantile: (args.percentile / 100.0).clamp(0.0, 1.0),
            concurrent: args.concurrent.max(1),
            sample: args.sample.max(1),
            command: args.command,
            pad: filler(c.payload.saturating_sub(30)),
            duration: c.duration,
            window: Window::default(),
            stage: Stage::Connecting,
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

    fn start_step(&mut self, net: &mut Net) {
        let end = self.share.conns.end.min(self.share.conns.start + self.target);
        while self.next < end {
            net.open(self.next, Kind::Ws);
            self.next += 1;
        }
        self.stage = Stage::Connecting;
    }

    fn finish_step(&mut self, net: &mut Net) {
        let rtt = self.step_hist.summary();
        net.stats.steps.push(Step { clients: self.clients.len() as u64, rtt, deliveries: self.step_deliveries });
        net.stats.latency.add(&self.step_hist);
        let over = self.step_hist.q(self.quantile) > self.limit_us;
        let full = self.next >= self.share.conns.end;
        self.step_hist.reset();
        self.step_deliveries = 0;
        self.measured = 0;
        if over || full || !self.window.tick(net.now) || self.budget == 0 {
            self.stage = Stage::Done;
            return;
        }
        self.target += self.step;
        self.start_step(net);
    }
}

impl Driver for Shootout {
    fn start(&mut self, _net: &mut Net) {}

    fn on_phase(&mut self, net: &mut Net, phase: u32) {
        if phase == 1 {
            self.window.begin(net.now, self.duration);
            self.start_step(net);
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
        if self.stage != Stage::Sampling {
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
        let now = net.now;
        match self.stage {
            Stage::Connecting if net.opening() == 0 => {
                if self.clients.is_empty() {
                    self.stage = Stage::Done;
                    return None;
                }
                self.stage = Stage::Sampling;
                self.sample_started = Some(now);
                self.in_progress = 0;
                for _ in 0..self.concurrent.min(self.sample) {
                    self.send_random(net);
                }
            }
            Stage::Sampling if self.measured >= self.sample => self.finish_step(net),
            Stage::Sampling => {
                // Round trips that never come back count as over the limit.
                let give_up = Duration::from_micros(self.limit_us * 20).max(Duration::from_secs(10));
                if self.sample_started.is_some_and(|s| now >= s + give_up) || !self.window.tick(now) {
                    net.stats.notes.push(format!(
                        "step with {} clients: {} of {} round trips came back in time",
                        self.clients.len(),
                        self.measured,
                        self.sample
                    ));
                    self.step_hist.record(crate::stats::MAX_US);
                    self.finish_step(net);
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
