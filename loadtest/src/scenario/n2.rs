//! `n2`: uWebSockets' broadcast_test. Every client sends one message per iteration to a server
//! that sends each message to every connection (the sender included); the iteration ends when
//! every client has received all N messages, N² deliveries in all, and the next one begins.
//!
//! Owns: one thread's part of an iteration. Iteration k is phase k of the run (see `steer`), its
//! value N the clients open in all: on phase k the thread sends one message from each of its
//! clients, and reports k reached once its own clients have received k × N messages each in all
//! (counted cumulatively, so messages of iteration k + 1 that arrive before this thread has heard
//! of it are counted and not lost). The top-level monitor starts the next iteration once every
//! thread of every process has reported, times it, and decides when to stop; so clients spread
//! over any number of threads and processes, and no thread waits on another's atomics.
//! The clients are the ones open when the thread reports phase 0 (N is their sum over every
//! thread): one that connects later (after `--setup-timeout`) neither sends nor is counted, so
//! the iterations stay N x N.
//! A thread that has deliveries outstanding and sees none for `STALL` ends (a lost message would
//! otherwise hang the run); one that waits for the others does not time out, since the slowest
//! thread's own stall ends it.

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
    setup: Setup,
    window: Window,
    open: Vec<usize>,
    /// Slots of the clients taking part (frozen when phase 0 is reported).
    member: Vec<bool>,
    frozen: bool,
    /// Clients in all (the value of the iteration's phase).
    all: u64,
    /// This thread's clients when the run began.
    mine: u64,
    /// The iteration running (the phase) and the last one reported complete.
    iteration: u64,
    reported: u64,
    /// Deliveries to this thread's clients since the run began.
    received: u64,
    last_progress: Option<Instant>,
    finished: bool,
}

impl N2 {
    pub fn new(cfg: &Config, share: Share) -> N2 {
        let c = &cfg.common;
        N2 {
            payload: filler(c.payload).into_bytes(),
            setup: Setup::new(share.conns.end - share.conns.start, c.setup_timeout + cfg.ramp_time()),
            window: Window::default(),
            open: Vec::new(),
            member: Vec::new(),
            frozen: false,
            all: 0,
            mine: 0,
            iteration: 0,
            reported: 0,
            received: 0,
            last_progress: None,
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

    fn stop(&mut self, net: &mut Net, note: String) {
        net.stats.notes.push(note);
        self.finished = true;
    }
}

impl Driver for N2 {
    fn start(&mut self, net: &mut Net) {
        open_all(net, &self.share);
        self.setup.check(net);
    }

    fn on_phase(&mut self, net: &mut Net, phase: u32) {
        if phase == 1 {
            // No deadline here: the monitor decides when the last iteration has run.
            self.window.go = Some(net.now);
            self.mine = self.open.len() as u64;
        }
        if let Some(n) = net.shared.phase_arg(phase) {
            self.all = n;
        }
        self.iteration = u64::from(phase);
        self.last_progress = Some(net.now);
        self.send_all(net);
    }

    fn on_open(&mut self, _net: &mut Net, id: usize) {
        if self.frozen {
            // Too late for the run: it neither sends nor counts.
            return;
        }
        self.open.push(id);
        self.setup.done_one();
    }

    fn on_message(&mut self, net: &mut Net, id: usize, _text: bool, payload: &[u8], at: Instant) {
        if !self.member.get(id).copied().unwrap_or(false) {
            return;
        }
        // Counted even before this thread has heard of the iteration: another thread or process
        // may start first, so its clients' messages can arrive here early.
        self.received += 1;
        net.stats.counters.received += 1;
        net.stats.counters.bytes_received += payload.len() as u64;
        self.window.touch(at);
    }

    fn on_end(&mut self, net: &mut Net, end: &Ended) {
        if !end.was_open {
            self.setup.done_one();
            return;
        }
        let Some(id) = end.id else { return };
        self.open.retain(|&o| o != id);
        let was_member = self.member.get(id).copied().unwrap_or(false);
        if let Some(m) = self.member.get_mut(id) {
            *m = false;
        }
        if self.window.go.is_some() && was_member {
            // A client gone mid-run: no iteration can complete any more.
            self.stop(net, "a client closed during the run; iterations stopped".into());
        }
    }

    fn on_turn(&mut self, net: &mut Net) -> Option<Instant> {
        let setup_wake = self.setup.check(net);
        if self.setup.reported() && !self.frozen {
            // The clients counted in phase 0's report are the ones that take part.
            self.frozen = true;
            for &id in &self.open {
                if self.member.len() <= id {
                    self.member.resize(id + 1, false);
                }
                self.member[id] = true;
            }
        }
        if self.window.go.is_none() || self.finished {
            return setup_wake;
        }
        if net.shared.finishing() {
            self.finished = true;
            return None;
        }
        let now = net.now;
        let due = self.iteration * self.mine * self.all;
        if self.iteration > self.reported && self.received >= due {
            self.reported = self.iteration;
            net.reached(self.iteration as u32);
        }
        if self.reported == self.iteration {
            // Waiting for the other threads: the slowest one times out on its own.
            return None;
        }
        if self.window.last.is_some_and(|l| self.last_progress.is_none_or(|p| l > p)) {
            self.last_progress = self.window.last;
        }
        let stall_at = self.last_progress.unwrap_or(now) + STALL;
        if now >= stall_at {
            let missing = due - self.received;
            self.stop(
                net,
                format!(
                    "iteration {} stalled: {missing} deliveries missing after {} s",
                    self.iteration,
                    STALL.as_secs()
                ),
            );
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
