//! What the soak's threads share: the stop flag, each channel's last acknowledged seq, the
//! counters of every part of the mix, and the failures with their first few descriptions.
//!
//! A leaf: the driver, the probes and the sampler all import it and it imports none of them.
//! Must not: act on sockets or decide the verdict; it only holds what the parts report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Descriptions kept for the report; further failures are only counted.
const KEEP_FAILURES: usize = 20;

/// The name of channel `i`.
pub fn channel_name(i: usize) -> String {
    format!("soak-{i}")
}

/// `soak-N` -> N.
pub fn channel_index(name: &[u8]) -> Option<usize> {
    std::str::from_utf8(name.strip_prefix(b"soak-")?).ok()?.parse().ok()
}

/// Counters, each written by whichever thread sees the event (relaxed: they are totals).
#[derive(Default)]
pub struct Counters {
    /// Messages healthy subscribers received in order.
    pub delivered: AtomicU64,
    /// Seqs a healthy subscriber skipped, and seqs it saw twice or backwards.
    pub gaps: AtomicU64,
    pub dups: AtomicU64,
    pub published: AtomicU64,
    pub subscribes: AtomicU64,
    pub resumes: AtomicU64,
    pub unsubscribes: AtomicU64,
    pub churn_opened: AtomicU64,
    pub churn_clean: AtomicU64,
    pub churn_reset: AtomicU64,
    pub slow_opened: AtomicU64,
    /// Slow readers whose end showed the server's 1008 close frame.
    pub slow_1008: AtomicU64,
    /// Slow readers the server had closed without its close frame reaching them (EOF or a reset):
    /// it was dropped with the queue after the server's close timeout, before the reader read
    /// again.
    pub slow_eof: AtomicU64,
    /// Slow readers still open when they read again (the server had not closed them yet).
    pub slow_open: AtomicU64,
    pub malformed: AtomicU64,
    /// Connections the generator holds to the server right now (WebSocket and HTTP).
    pub client_open: AtomicU64,
}

/// Everything the soak's threads share.
pub struct SoakState {
    pub stop: AtomicBool,
    /// Per channel, the highest seq an HTTP publish was answered with.
    pub acked: Vec<AtomicU64>,
    /// The server's `fanout_slow_consumers_total`, read every second by the watcher.
    pub server_slow: AtomicU64,
    pub n: Counters,
    failures: AtomicU64,
    described: Mutex<Vec<String>>,
    /// Malformed case -> answer -> count.
    answers: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
}

impl SoakState {
    pub fn new(channels: usize) -> SoakState {
        SoakState {
            stop: AtomicBool::new(false),
            acked: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            server_slow: AtomicU64::new(0),
            n: Counters::default(),
            failures: AtomicU64::new(0),
            described: Mutex::new(Vec::new()),
            answers: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Something the soak forbids happened.
    pub fn fail(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut d = self.described.lock().unwrap_or_else(|e| e.into_inner());
        if d.len() < KEEP_FAILURES {
            d.push(what);
        }
    }

    pub fn failures(&self) -> (u64, Vec<String>) {
        let d = self.described.lock().unwrap_or_else(|e| e.into_inner());
        (self.failures.load(Ordering::Relaxed), d.clone())
    }

    /// Records the server's answer to a malformed case.
    pub fn answer(&self, case: &str, answer: &str) {
        let mut a = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        *a.entry(case.to_owned()).or_default().entry(answer.to_owned()).or_default() += 1;
    }

    pub fn answers(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Shorthand for the relaxed counters.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip_and_failures_keep_the_first_few() {
        assert_eq!(channel_index(channel_name(12).as_bytes()), Some(12));
        assert_eq!(channel_index(b"other-1"), None);
        assert_eq!(channel_index(b"soak-x"), None);
        let s = SoakState::new(2);
        for i in 0..30 {
            s.fail(format!("f{i}"));
        }
        let (n, d) = s.failures();
        assert_eq!((n, d.len(), d[0].as_str()), (30, KEEP_FAILURES, "f0"));
        s.answer("unmasked", "close 1002");
        s.answer("unmasked", "close 1002");
        assert_eq!(s.answers()["unmasked"]["close 1002"], 2);
    }
}
