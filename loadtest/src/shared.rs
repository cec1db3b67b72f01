//! What the coordinator and the reactor threads both touch: `Shared` (per process: the open
//! phase and the value the coordinator sent with it, the finish and abort flags, the threads'
//! wakers) and `Report` (thread -> monitor and child -> parent messages; a child writes them as
//! JSON lines on stdout).
//!
//! Invariant: every decision that needs more than one thread's view (an n2 iteration is over, a
//! shootout step is over the limit, the publisher's final count) is made by the top-level
//! monitor from merged `Reached` reports and comes back as the next phase and its value, so
//! threads in this process and in other processes hear the same thing; no scenario state is
//! shared between threads through atomics.
//!
//! A leaf below `coord`, `net` and the scenarios, so that none of them has to import another to
//! reach these. Must not: run threads, read sockets or know any scenario's logic; it holds state
//! and the message type, nothing that acts on them.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use mio::Waker;
use serde::{Deserialize, Serialize};

use crate::stats::{Counters, Hist, Stats};

/// What the reactor threads of one process share.
pub struct Shared {
    phase: AtomicU32,
    /// The latest phase opened and the value the coordinator sent with it.
    arg: Mutex<(u32, Option<u64>)>,
    abort: AtomicBool,
    /// The coordinator ended the run: drivers stop sending and finish (not an abort).
    done: AtomicBool,
    wakers: Vec<Waker>,
}

impl Shared {
    pub fn new(wakers: Vec<Waker>) -> Shared {
        Shared {
            phase: AtomicU32::new(0),
            arg: Mutex::new((0, None)),
            abort: AtomicBool::new(false),
            done: AtomicBool::new(false),
            wakers,
        }
    }

    pub fn phase(&self) -> u32 {
        self.phase.load(Ordering::Acquire)
    }

    /// Opens `phase` with the coordinator's `arg` for it (see `phase_arg`).
    pub fn open_phase(&self, phase: u32, arg: Option<u64>) {
        if let Ok(mut a) = self.arg.lock() {
            if phase >= a.0 {
                *a = (phase, arg);
            }
        }
        self.phase.fetch_max(phase, Ordering::AcqRel);
        self.wake_all();
    }

    /// The value sent with `phase`, if it is the latest phase opened. A thread that sees two
    /// phases open at once hears only the later one's value; the scenarios that use values never
    /// let a phase open before every thread has reached the one before it.
    pub fn phase_arg(&self, phase: u32) -> Option<u64> {
        let a = self.arg.lock().ok()?;
        if a.0 == phase {
            a.1
        } else {
            None
        }
    }

    /// Whether the coordinator has ended the run (`finish`).
    pub fn finishing(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Ends the run in order: drivers stop sending, drain what they must and report.
    pub fn finish(&self) {
        self.done.store(true, Ordering::Release);
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
    /// The source finished `phase` with `open` connections open. `value` (summed over the
    /// sources that give one) and `hist` (merged) are what the scenario's central decision needs:
    /// shootout's step round trips and deliveries, broadcast's final published count.
    Reached {
        source: usize,
        phase: u32,
        open: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hist: Option<Box<Hist>>,
    },
    /// The source is finished; its totals.
    Done { source: usize, stats: Box<Stats> },
    /// The source died (a child that exited without a result).
    Failed { source: usize, message: String },
}
