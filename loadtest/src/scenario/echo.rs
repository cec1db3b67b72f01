//! `echo`: N connections with K messages in flight each; every echo is timed and answered by the
//! next message on the same connection.
//!
//! Owns: the per-connection queue of send times. An echo server answers in order on each
//! connection, so the oldest send time is the one an echo belongs to, and the payload can be
//! anything (no timestamp in it, so any size works, even 0).

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
}

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
            share,
        }
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
                self.send_one(net, id, now);
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
            self.send_one(net, id, at);
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
        if self.window.stopped.is_some() && (self.outstanding == 0 || self.window.drained(net.now, self.drain)) {
            self.finished = true;
        }
        self.window.wake(self.drain)
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn finish(&mut self, net: &mut Net) {
        net.stats.active_ns = self.window.active_ns();
    }
}
