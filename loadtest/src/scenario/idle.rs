//! `idle`: opens N connections in ten steps and holds them for `--duration`.
//!
//! Owns: the steps. Phase k (0..=9) opens the k-th tenth of this thread's connections and is
//! reported once all of them are open or failed; between steps the top-level monitor reads the
//! server's resident memory, so the memory-per-connection figure is the slope of RSS against
//! connections over eleven points (before connecting, after each tenth). Phase 10 holds them; its
//! end is reported so the monitor reads RSS once more before anything closes (phase 11).

use std::ops::Range;
use std::time::{Duration, Instant};

use super::phase::Window;
use crate::config::{Config, IDLE_STEPS as STEPS};
use crate::net::{Driver, Ended, Kind, Net};
use crate::plan::Share;

pub struct Idle {
    conns: Range<u64>,
    duration: Duration,
    step: u32,
    /// Connections of the current step not yet open or failed.
    pending: u64,
    reported: Option<u32>,
    window: Window,
    held_reported: bool,
    finished: bool,
}

impl Idle {
    pub fn new(cfg: &Config, share: Share) -> Idle {
        Idle {
            conns: share.conns,
            duration: cfg.common.duration,
            step: 0,
            pending: 0,
            reported: None,
            window: Window::default(),
            held_reported: false,
            finished: false,
        }
    }

    /// Global indices of step `k`.
    fn step_range(&self, k: u32) -> Range<u64> {
        let len = self.conns.end - self.conns.start;
        let at = |k: u32| self.conns.start + len * u64::from(k) / u64::from(STEPS);
        at(k)..at(k + 1)
    }

    fn open_step(&mut self, net: &mut Net, k: u32) {
        self.step = k;
        let range = self.step_range(k);
        self.pending = range.end - range.start;
        for i in range {
            net.open(i, Kind::Ws);
        }
    }
}

impl Driver for Idle {
    fn start(&mut self, net: &mut Net) {
        self.open_step(net, 0);
    }

    fn on_phase(&mut self, net: &mut Net, phase: u32) {
        match phase {
            p if p < STEPS => self.open_step(net, p),
            STEPS => self.window.begin(net.now, self.duration),
            _ => self.finished = true,
        }
    }

    fn on_open(&mut self, _net: &mut Net, _id: usize) {
        self.pending = self.pending.saturating_sub(1);
    }

    fn on_message(&mut self, net: &mut Net, _: usize, _: bool, payload: &[u8], _: Instant) {
        // An idle server has nothing to say; count whatever it says anyway.
        net.stats.counters.received += 1;
        net.stats.counters.bytes_received += payload.len() as u64;
    }

    fn on_end(&mut self, _net: &mut Net, end: &Ended) {
        if !end.was_open {
            self.pending = self.pending.saturating_sub(1);
        }
    }

    fn on_turn(&mut self, net: &mut Net) -> Option<Instant> {
        if self.step < STEPS && self.pending == 0 && self.reported != Some(self.step) {
            self.reported = Some(self.step);
            net.reached(self.step);
        }
        if let Some(deadline) = self.window.deadline {
            if net.now >= deadline {
                if !self.held_reported {
                    self.held_reported = true;
                    self.window.touch(deadline);
                    net.reached(STEPS);
                }
                return None;
            }
            return Some(deadline);
        }
        None
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn finish(&mut self, net: &mut Net) {
        net.stats.active_ns = self.window.active_ns();
    }
}
