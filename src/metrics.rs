//! Per-worker counters, written by one thread without locked instructions and merged on read.
//!
//! Owns: `WorkerMetrics` (one per worker) and `Snapshot` (their sum). Must not: depend on any
//! other module of this crate. Invariant: each counter has exactly one writer, its worker, so an
//! increment is a relaxed load and store (two plain moves) rather than an atomic read-modify-write;
//! readers on other threads see a recent value, never a torn one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Subtracts `n` (for gauges). Only the owning worker may call this.
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

macro_rules! metrics {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// One worker's counters.
        #[derive(Debug, Default)]
        pub struct WorkerMetrics {
            $($(#[$doc])* pub $name: Counter,)*
        }

        /// The sum over all workers at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Snapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Snapshot {
            pub fn add(&mut self, m: &WorkerMetrics) {
                $(self.$name = self.$name.wrapping_add(m.$name.get());)*
            }

            /// Name and value of every counter, in declaration order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

metrics! {
    /// TCP connections held now, in any phase (a gauge).
    connections,
    /// Connections accepted since start.
    accepted,
    /// Upgrades completed.
    handshakes,
    /// Handshakes refused (bad request, rejected by the application, timed out).
    handshake_failures,
    /// Plain HTTP requests answered.
    http_requests,
    /// Messages received (after reassembly).
    messages_in,
    /// Frames queued for sending.
    frames_out,
    /// Bytes read from sockets.
    bytes_in,
    /// Bytes written to sockets.
    bytes_out,
    /// `writev` calls.
    writev_calls,
    /// Connections failed for a protocol violation.
    protocol_errors,
    /// Connections closed because their queue passed `max_queued_bytes`.
    slow_consumers,
    /// Frames (or per-turn batches) skipped for a slow consumer under the `drop` policy.
    dropped_frames,
    /// Publishes to a topic and broadcasts.
    publishes,
    /// Subscribers a topic publish reached (one publish to 100 subscribers counts 100).
    deliveries,
    /// Open connections closed for idleness.
    idle_timeouts,
}

/// Sums the counters of all workers.
pub fn merge<'a>(workers: impl IntoIterator<Item = &'a WorkerMetrics>) -> Snapshot {
    let mut total = Snapshot::default();
    for w in workers {
        total.add(w);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sums_workers() {
        let a = WorkerMetrics::default();
        let b = WorkerMetrics::default();
        a.connections.add(3);
        b.connections.add(2);
        b.connections.sub(1);
        a.bytes_in.add(10);
        let s = merge([&a, &b]);
        assert_eq!((s.connections, s.bytes_in), (4, 10));
        assert!(s.fields().contains(&("bytes_in", 10)));
    }
}
