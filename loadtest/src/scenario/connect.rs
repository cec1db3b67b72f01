//! `connect`: opens connections at `--rate` per second or flat out (at most `--max-pending`
//! connecting at once) and closes each once upgraded, keeping the first `--keep`.
//!
//! Owns: feeding the connect queue and timing each handshake from the start of its TCP connect
//! to the parsed 101. Failures are counted by `Net` under their reason (refused, reset, timeout,
//! status N). Closing uses an RST unless `--graceful`, so our side keeps no TIME_WAIT ports.

use std::ops::Range;
use std::time::{Duration, Instant};

use super::phase::{micros_between, Window};
use crate::config::{Config, ConnectArgs};
use crate::net::{Driver, Ended, Kind, Net};
use crate::plan::{split, Share};

pub struct Connect {
    next: Range<u64>,
    keep: u64,
    kept: u64,
    abort: bool,
    rate: f64,
    duration: Duration,
    drain: Duration,
    window: Window,
    /// Every connection of the range has been queued (`--conns` reached).
    exhausted: bool,
    reported: bool,
    finished: bool,
}

impl Connect {
    pub fn new(cfg: &Config, args: &ConnectArgs, share: Share) -> Connect {
        let c = &cfg.common;
        let workers = c.processes * c.threads;
        let keep = split(args.keep, workers)[share.index].clone();
        Connect {
            next: share.conns.clone(),
            keep: keep.end - keep.start,
            kept: 0,
            abort: !args.graceful,
            rate: share.ramp,
            duration: c.duration,
            // Connects already started may take up to the handshake timeout.
            drain: c.drain.max(c.handshake_timeout),
            window: Window::default(),
            exhausted: false,
            reported: false,
            finished: false,
        }
    }
}

impl Driver for Connect {
    fn start(&mut self, _net: &mut Net) {}

    fn on_phase(&mut self, net: &mut Net, phase: u32) {
        if phase == 1 {
            self.window.begin(net.now, self.duration);
        }
    }

    fn on_open(&mut self, net: &mut Net, id: usize) {
        let now = Instant::now();
        if let Some(started) = net.started(id) {
            net.record(micros_between(started, now));
        }
        self.window.touch(now);
        if self.kept < self.keep {
            self.kept += 1;
        } else {
            net.close(id, self.abort);
        }
    }

    fn on_message(&mut self, _: &mut Net, _: usize, _: bool, _: &[u8], _: Instant) {}

    fn on_end(&mut self, _net: &mut Net, _end: &Ended) {}

    fn on_turn(&mut self, net: &mut Net) -> Option<Instant> {
        if !self.reported {
            self.reported = true;
            net.reached(0);
        }
        self.window.go?;
        let now = net.now;
        if self.window.tick(now) && !self.exhausted {
            // Keep the queue ahead of the ramp (a tenth of a second of it) or of the pending cap,
            // without queueing the whole range.
            let ahead = (self.rate / 10.0).max(64.0) as usize + 2000;
            while net.opening() < ahead {
                let Some(i) = self.next.next() else {
                    self.exhausted = true;
                    break;
                };
                net.open(i, Kind::Ws);
            }
        }
        if self.exhausted && net.opening() == 0 {
            self.window.stop(now);
        }
        if self.window.stopped.is_some() {
            // The deadline passed: what has not started yet is not attempted.
            net.cancel_queued();
        }
        if self.window.stopped.is_some() && (net.opening() == 0 || self.window.drained(now, self.drain)) {
            self.finished = true;
        }
        self.window.wake(self.drain).map(|w| w.min(now + Duration::from_millis(50)))
    }

    fn finished(&self) -> bool {
        self.finished
    }

    fn finish(&mut self, net: &mut Net) {
        net.stats.active_ns = self.window.active_ns();
    }
}
