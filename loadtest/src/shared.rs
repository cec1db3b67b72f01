//! What the coordinator and the reactor threads both touch: `Shared` (per process: the open
//! phase, the abort flag, the threads' wakers and a few scenario atomics) and `Report` (thread ->
//! monitor and child -> parent messages; a child writes them as JSON lines on stdout).
//!
//! A leaf below `coord`, `net` and the scenarios, so that none of them has to import another to
//! reach these. Must not: run threads, read sockets or know any scenario's logic; it holds state
//! and the message type, nothing that acts on them.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use mio::Waker;
use serde::{Deserialize, Serialize};

use crate::stats::{Counters, Hist, Stats};

/// What the reactor threads of one process share.
pub struct Shared {
    phase: AtomicU32,
    abort: AtomicBool,
    wakers: Vec<Waker>,
    /// broadcast: the publisher's final count (raw) or last acknowledged seq (fanout) once it has
    /// stopped; `u64::MAX` while it runs. Lets subscribers in its process stop draining early.
    pub published: AtomicU64,
    /// n2: the iteration every client is in, deliveries counted in it so far, and the stop flag.
    pub iteration: AtomicU64,
    pub delivered: AtomicU64,
    pub done: AtomicBool,
    /// n2: clients open in this process after setup, and when the current iteration began.
    pub members: AtomicU64,
    pub iteration_start_ns: AtomicU64,
}

impl Shared {
    pub fn new(wakers: Vec<Waker>) -> Shared {
        Shared {
            phase: AtomicU32::new(0),
            abort: AtomicBool::new(false),
            wakers,
            published: AtomicU64::new(u64::MAX),
            iteration: AtomicU64::new(1),
            delivered: AtomicU64::new(0),
            done: AtomicBool::new(false),
            members: AtomicU64::new(0),
            iteration_start_ns: AtomicU64::new(0),
        }
    }

    pub fn phase(&self) -> u32 {
        self.phase.load(Ordering::Acquire)
    }

    pub fn open_phase(&self, phase: u32) {
        self.phase.fetch_max(phase, Ordering::AcqRel);
        self.wake_all();
    }

    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    pub fn abort(&self) {
        self.abort.store(true, Ordering::Relaxed);
        self.wake_all();
    }

    pub fn wake_all(&self) {
        for w in &self.wakers {
            let _ = w.wake();
        }
    }
}

/// A message to a monitor: from a reactor thread (source = thread) or a child (source = child).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    /// One second (since the run's epoch) of one source: counter deltas and that second's
    /// latencies; `cpu_ns` is the process CPU used in it (children only).
    Sample { source: usize, sec: u64, open: u64, delta: Counters, hist: Hist, cpu_ns: u64 },
    /// The source finished `phase` with `open` connections open.
    Reached { source: usize, phase: u32, open: u64 },
    /// The source is finished; its totals.
    Done { source: usize, stats: Box<Stats> },
    /// The source died (a child that exited without a result).
    Failed { source: usize, message: String },
}
