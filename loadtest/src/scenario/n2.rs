//! `n2`: uWebSockets' broadcast_test. Every client sends one message per iteration to a server
//! that sends each message to every connection (the sender included); the iteration ends when
//! every client has received all N messages, N² deliveries in all, and the next one begins.
//!
//! Owns: the iteration protocol across the threads of one process. Each thread adds its
//! deliveries to a shared counter once per loop turn (not per message, to keep the cache line
//! quiet); the thread whose addition completes N² starts the next iteration and wakes the others.
//! A thread that sees no progress for `STALL` ends the run: a lost message would otherwise hang it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fanout::proto::OpCode;

use super::phase::{filler, open_all, Setup, Window};
use crate::config::Config;
use crate::net::{Driver, Ended, Net};
use crate::plan::Share;

const STALL: Duration = Duration::from_secs(5);

pub struct N2 {
    share: Share,
    payload: Vec<u8>,
    duration: Duration,
    /// Total messages allowed (iterations × N), from --messages.
    budget: Option<u64>,
    setup: Setup,
    window: Window,
    open: Vec<usize>,
    iteration: u64,
    local: u64,
    last_progress: Option<Instant>,
    /// The shared delivery count last seen: progress made by any thread.
    seen_delivered: u64,
    finished: bool,
}

impl N2 {
    pub fn new(cfg: &Config, share: Share) -> N2 {
        let c = &cfg.common;
        N2 {
            payload: filler(c.payload).into_bytes(),
            duration: c.duration,
            budget: c.messages,
            setup: Setup::new(share.conns.end - share.conns.start, c.setup_timeout + cfg.ramp_time()),
            window: Window::default(),
            open: Vec::new(),
            iteration: 0,
            local: 0,
            last_progress: None,
            seen_delivered: 0,
            finished: false,
            share,
        }
    }

    fn send_all(&mut self, net: &mut Net) {
        for &id in &self.open {
            if net.send(id, OpCode::Text, &self.payload) {
                net.stats.counters.count_sent(self.payload.len());
            }
        }
    }
}

impl Driver for N2 {
    fn start(&mut self, net: &mut Net) {
        open_all(net, &self.share);
        self.setup.check(net);
    }

    fn on_phase(&mut self, net: &mut Net, phase: u32) {
        if phase != 1 {
            return;
        }
        self.window.begin(net.now, self.duration);
        let go_ns = net.clock.ns_at(net.now);
        let _ = net.shared.iteration_start_ns.compare_exchange(0, go_ns, Ordering::AcqRel, Ordering::Acquire);
        self.iteration = 1;
        self.last_progress = Some(net.now);
        self.send_all(net);
    }

    fn on_open(&mut self, net: &mut Net, id: usize) {
        self.open.push(id);
        net.shared.members.fetch_add(1, Ordering::AcqRel);
        self.setup.done_one();
    }

    fn on_message(&mut self, net: &mut Net, _id: usize, _text: bool, payload: &[u8], at: Instant) {
        // Counted even before this thread has seen the start: nothing is sent before it, and
        // another thread may start first, so its clients' first messages can arrive here early.
        self.local += 1;
        net.stats.counters.received += 1;
        net.stats.counters.bytes_received += payload.len() as u64;
        self.window.touch(at);
    }

    fn on_end(&mut self, net: &mut Net, end: &Ended) {
        if !end.was_open {
            self.setup.done_one();
            return;
        }
        if let Some(id) = end.id {
            self.open.retain(|&o| o != id);
        }
        if self.window.go.is_some() {
            // A client gone mid-run: no iteration can complete any more.
            net.stats.notes.push("a client closed during the run; iterations stopped".into());
            net.shared.done.store(true, Ordering::Release);
            net.shared.wake_all();
        } else {
            net.shared.members.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn on_turn(&mut self, net: &mut Net) -> Option<Instant> {
        let setup_wake = self.setup.check(net);
        if self.window.go.is_none() {
            return setup_wake;
        }
        let shared = net.shared.clone();
        let now = net.now;
        if self.local > 0 {
            let n = shared.members.load(Ordering::Acquire);
            let total = shared.delivered.fetch_add(self.local, Ordering::AcqRel) + self.local;
            self.local = 0;
            self.last_progress = Some(now);
            if total == n * n {
                // This thread completed the iteration: time it, then start the next or stop.
                let now_ns = net.clock.ns_at(now);
                let began = shared.iteration_start_ns.swap(now_ns, Ordering::AcqRel);
                net.record(now_ns.saturating_sub(began) / 1000);
                net.stats.counters.iterations += 1;
                shared.delivered.store(0, Ordering::Release);
                let done_iterations = shared.iteration.load(Ordering::Acquire);
                let over_budget = self.budget.is_some_and(|m| (done_iterations + 1) * n > m);
                if !self.window.tick(now) || over_budget {
                    shared.done.store(true, Ordering::Release);
                } else {
                    shared.iteration.fetch_add(1, Ordering::AcqRel);
                }
                shared.wake_all();
            }
        }
        if shared.done.load(Ordering::Acquire) {
            self.finished = true;
            return None;
        }
        let delivered = shared.delivered.load(Ordering::Acquire);
        if delivered != self.seen_delivered {
            self.seen_delivered = delivered;
            self.last_progress = Some(now);
        }
        let it = shared.iteration.load(Ordering::Acquire);
        if it > self.iteration {
            self.iteration = it;
            self.last_progress = Some(now);
            self.send_all(net);
        }
        let stall_at = self.last_progress.unwrap_or(now) + STALL;
        if now >= stall_at {
            net.stats.notes.push(format!("iteration {it} stalled: no delivery for {} s", STALL.as_secs()));
            shared.done.store(true, Ordering::Release);
            shared.wake_all();
            self.finished = true;
            return None;
        }
        Some(stall_at)
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn finish(&mut self, net: &mut Net) {
        net.stats.active_ns = self.window.active_ns();
    }
}
