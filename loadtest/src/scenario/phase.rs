//! The phase helpers the scenarios share: setting up, measuring, winding down.
//!
//! Owns: `Setup` (phase 0: report once every connection of the thread is set up or has failed),
//! `open_all` (queue every connection of the thread's share), `Window` (the measured phase: start,
//! deadline, stop, drain, last activity), and the small `filler` and `micros_between`. Must not:
//! know any scenario or its message format; scenarios import this module, never the reverse.

use std::time::{Duration, Instant};

use crate::net::Net;
use crate::plan::Share;

/// Phase 0 of one thread: `pending` connections still to be set up. Reports phase 0 reached
/// once none is left, or at the setup deadline (late ones are then simply not waited for).
#[derive(Debug)]
pub struct Setup {
    pending: u64,
    reported: bool,
    timeout: Duration,
    deadline: Option<Instant>,
}

impl Setup {
    pub fn new(pending: u64, timeout: Duration) -> Setup {
        Setup { pending, reported: false, timeout, deadline: None }
    }

    /// Whether phase 0 has been reported.
    pub fn reported(&self) -> bool {
        self.reported
    }

    /// One connection is set up or gave up.
    pub fn done_one(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// Reports phase 0 if it is time; returns the deadline to wake for otherwise.
    pub fn check(&mut self, net: &mut Net) -> Option<Instant> {
        if self.reported {
            return None;
        }
        let deadline = *self.deadline.get_or_insert(net.now + self.timeout);
        if self.pending == 0 || net.now >= deadline {
            self.reported = true;
            net.reached(0);
            return None;
        }
        Some(deadline)
    }
}

/// The measured phase of one thread.
#[derive(Debug, Default)]
pub struct Window {
    pub go: Option<Instant>,
    pub deadline: Option<Instant>,
    /// When sending stopped (deadline or message budget); replies are awaited until `+ drain`.
    pub stopped: Option<Instant>,
    pub last: Option<Instant>,
}

impl Window {
    pub fn begin(&mut self, now: Instant, duration: Duration) {
        self.go = Some(now);
        self.deadline = Some(now + duration);
    }

    pub fn running(&self) -> bool {
        self.go.is_some() && self.stopped.is_none()
    }

    /// Stops sending if the deadline passed; returns true while sending may go on.
    pub fn tick(&mut self, now: Instant) -> bool {
        if let (Some(d), None) = (self.deadline, self.stopped) {
            if now >= d {
                self.stopped = Some(d);
            }
        }
        self.running()
    }

    pub fn stop(&mut self, now: Instant) {
        if self.go.is_some() && self.stopped.is_none() {
            self.stopped = Some(now);
        }
    }

    pub fn touch(&mut self, at: Instant) {
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
    }

    /// Whether the drain after stopping is over.
    pub fn drained(&self, now: Instant, drain: Duration) -> bool {
        self.stopped.is_some_and(|s| now >= s + drain)
    }

    /// Nanoseconds from the start to the last activity.
    pub fn active_ns(&self) -> u64 {
        match (self.go, self.last) {
            (Some(g), Some(l)) => l.saturating_duration_since(g).as_nanos() as u64,
            _ => 0,
        }
    }

    /// The next instant the driver must wake for: the deadline or the end of the drain.
    pub fn wake(&self, drain: Duration) -> Option<Instant> {
        match (self.deadline, self.stopped) {
            (Some(d), None) => Some(d),
            (_, Some(s)) => Some(s + drain),
            _ => None,
        }
    }
}

/// `len` bytes of filler text.
pub fn filler(len: usize) -> String {
    use std::fmt::Write as _;
    // Fields and numbers that deflate about as well as JSON events do (to a third or so), not
    // a run of one byte, which would flatter permessage-deflate. No quote or backslash: the
    // filler sits inside a JSON string.
    let mut out = String::with_capacity(len + 64);
    let mut x: u32 = 0x9E37_79B9;
    let mut k = 0u32;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let _ = write!(
            out,
            "sym:SYM{:03},bid:{}.{:02},ask:{}.{:02},vol:{};",
            k % 50,
            100 + x % 50,
            x % 100,
            100 + (x >> 8) % 50,
            (x >> 4) % 100,
            x % 100_000
        );
        k += 1;
    }
    out.truncate(len);
    out
}

/// Microseconds between two instants (0 if `later` is earlier).
pub fn micros_between(earlier: Instant, later: Instant) -> u64 {
    later.saturating_duration_since(earlier).as_micros() as u64
}

/// Opens every WebSocket connection of this thread's share.
pub fn open_all(net: &mut Net, share: &Share) {
    for i in share.conns.clone() {
        net.open(i, crate::net::Kind::Ws);
    }
}
