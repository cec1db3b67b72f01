//! `echo`: N connections with K messages in flight each; every echo is timed and answered by the
//! next message on the same connection.
//!
//! Owns: the per-connection queue of send times. An echo server answers in order on each
//! connection, so the oldest send time is the one an echo belongs to, and the payload can be
//! anything (no timestamp in it, so any size works, even 0).
//!
//! Paced (`--rate`): a connection whose echo is back joins `ready` instead of sending at once,
//! and the thread's schedule (its share of the rate) sends from the front of that queue.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use fanout::proto::OpCode;

use super::phase::{filler, micros_between, open_all, Setup, Window};
use crate::config::{Config, EchoArgs};
use crate::net::{Driver, Ended, Net};
use crate::plan::Share;

pub struct Echo {
    share: Share,
    in_flight: usize,
    opcode: OpCode,
    payload: Vec<u8>,
    duration: Duration,
    drain: Duration,
    setup: Setup,
    window: Window,
    /// Send times of the messages in flight, by connection slot.
    sent_at: Vec<VecDeque<Instant>>,
    open: Vec<usize>,
    budget: u64,
    outstanding: u64,
    finished: bool,
    /// Paced: this thread's time between sends, the next send's due time, and the connections
    /// with a message to send (one entry per free in-flight slot).
    interval: Option<Duration>,
    next_send: Option<Instant>,
    ready: VecDeque<usize>,
}

/// How far a paced schedule may fall behind (a late turn) and still catch up in a burst.
const CATCH_UP: Duration = Duration::from_millis(1);

impl Echo {
    pub fn new(cfg: &Config, args: &EchoArgs, share: Share) -> Echo {
        let c = &cfg.common;
        Echo {
            in_flight: args.in_flight,
            opcode: if args.binary { OpCode::Binary } else { OpCode::Text },
            payload: filler(c.payload).into_bytes(),
            duration: c.duration,
            drain: c.drain,
            setup: Setup::new(share.conns.end - share.conns.start, c.setup_timeout + cfg.ramp_time()),
            window: Window::default(),
            sent_at: Vec::new(),
            open: Vec::new(),
            budget: share.messages,
            outstanding: 0,
            finished: false,
            interval: (args.rate > 0.0).then(|| {
                let threads = (c.threads * c.processes) as f64;
                Duration::from_secs_f64(threads / args.rate)
            }),
            next_send: None,
            ready: VecDeque::new(),
            share,
        }
    }

    /// Sends now, or, paced, queues the connection for its turn in the schedule.
    fn send_or_queue(&mut self, net: &mut Net, id: usize, at: Instant) {
        match self.interval {
            None => self.send_one(net, id, at),
            Some(_) => {
                self.ready.push_back(id);
                self.send_due(net, at);
            }
        }
    }

    /// Paced: sends what the schedule allows by `now`; returns when the next send is due.
    fn send_due(&mut self, net: &mut Net, now: Instant) -> Option<Instant> {
        let interval = self.interval?;
        let mut next = self.next_send.unwrap_or(now).max(now.checked_sub(CATCH_UP).unwrap_or(now));
        while next <= now && self.window.running() {
            let Some(id) = self.ready.pop_front() else { break };
            self.send_one(net, id, now);
            next += interval;
        }
        self.next_send = Some(next);
        (!self.ready.is_empty() && self.window.running()).then_some(next)
    }

    fn send_one(&mut self, net: &mut Net, id: usize, at: Instant) {
        if self.budget == 0 {
            self.window.stop(at);
            return;
        }
        if net.send(id, self.opcode, &self.payload) {
            self.budget -= 1;
            self.outstanding += 1;
            self.sent_at[id].push_back(at);
            net.stats.counters.count_sent(self.payload.len());
        }
    }
}

impl Driver for Echo {
    fn start(&mut self, net: &mut Net) {
        open_all(net, &self.share);
        self.setup.check(net);
    }

    fn on_phase(&mut self, net: &mut Net, phase: u32) {
        if phase != 1 {
            return;
        }
        let now = net.now;
        self.window.begin(now, self.duration);
        if self.open.is_empty() {
            self.window.stop(now);
        }
        for id in self.open.clone() {
            for _ in 0..self.in_flight {
                self.send_or_queue(net, id, now);
            }
        }
    }

    fn on_open(&mut self, _net: &mut Net, id: usize) {
        if self.sent_at.len() <= id {
            self.sent_at.resize_with(id + 1, VecDeque::new);
        }
        self.sent_at[id].clear();
        self.open.push(id);
        self.setup.done_one();
    }

    fn on_message(&mut self, net: &mut Net, id: usize, _text: bool, payload: &[u8], at: Instant) {
        let Some(sent) = self.sent_at.get_mut(id).and_then(VecDeque::pop_front) else {
            // Nothing was in flight: not an echo of ours.
            net.stats.counters.errors += 1;
            return;
        };
        self.outstanding -= 1;
        net.record(micros_between(sent, at));
        let c = &mut net.stats.counters;
        c.received += 1;
        c.bytes_received += payload.len() as u64;
        if payload.len() != self.payload.len() {
            c.errors += 1;
        }
        self.window.touch(at);
        if self.window.tick(at) {
            self.send_or_queue(net, id, at);
        }
    }

    fn on_end(&mut self, net: &mut Net, end: &Ended) {
        if !end.was_open {
            self.setup.done_one();
            return;
        }
        if let Some(id) = end.id {
            self.open.retain(|&o| o != id);
            if let Some(q) = self.sent_at.get_mut(id) {
                self.outstanding -= q.len() as u64;
                q.clear();
            }
            if self.open.is_empty() {
                self.window.stop(net.now);
            }
        }
    }

    fn on_turn(&mut self, net: &mut Net) -> Option<Instant> {
        let setup_wake = self.setup.check(net);
        if self.window.go.is_none() {
            return setup_wake;
        }
        self.window.tick(net.now);
        let paced_wake = self.send_due(net, net.now);
        if self.window.stopped.is_some() && (self.outstanding == 0 || self.window.drained(net.now, self.drain)) {
            self.finished = true;
        }
        match (self.window.wake(self.drain), paced_wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn finish(&mut self, net: &mut Net) {
        net.stats.active_ns = self.window.active_ns();
    }
}
