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

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

macro_rules! metrics {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// One worker's counters.
        #[derive(Debug, Default)]
        pub struct WorkerMetrics {
            $($(#[doc = $doc])* pub $name: Counter,)*
        }

        /// The sum over all workers at one moment.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct Snapshot {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl Snapshot {
            /// Adds one worker's counters.
            pub fn add(&mut self, m: &WorkerMetrics) {
                $(self.$name = self.$name.wrapping_add(m.$name.get());)*
            }

            /// Name, help text and value of every counter, in declaration order.
            pub fn fields(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), concat!($($doc),*).trim_ascii(), self.$name),)*]
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
    /// Handshakes refused, for any of the reasons below.
    handshake_failures,
    /// ... because the request was not a valid upgrade (400, 405, 426, 431, 413).
    handshake_bad_requests,
    /// ... because the request did not complete within the handshake timeout (408).
    handshake_timeouts,
    /// ... because `on_open` rejected it.
    rejected_by_application,
    /// ... because `max_connections` were open (503).
    rejected_max_connections,
    /// ... because `max_connections_per_ip` were open from that address (503).
    rejected_per_ip,
    /// ... because the server was draining (503).
    rejected_draining,
    /// ... because the client address went over `handshake_rate_per_ip` (429).
    rejected_handshake_rate,
    /// Accepted sockets closed unread because `max_pending_handshakes` were in progress.
    rejected_pending_handshakes,
    /// Connections from a trusted proxy closed for a missing or malformed PROXY header.
    proxy_header_errors,
    /// Plain HTTP requests answered.
    http_requests,
    /// Plain HTTP requests whose handler deferred its response (`Ctx::defer`).
    http_deferred,
    /// Deferred responses that had not come when the handshake timeout ended the connection.
    http_deferred_timeouts,
    /// Messages received (after reassembly).
    messages_in,
    /// Frames queued for sending.
    frames_out,
    /// Bytes read from sockets.
    bytes_in,
    /// Bytes written to sockets.
    bytes_out,
    /// Socket write calls: `send` for one queued buffer, `writev` for several.
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
    /// Messages compressed (permessage-deflate): once per publish or broadcast per worker that
    /// has compressed receivers for it, whatever their number, and once per direct send.
    compressions,
    /// Compressed messages received and inflated.
    decompressions,
    /// Open connections closed for idleness.
    idle_timeouts,
    /// TLS handshakes completed.
    tls_handshakes,
    /// ... of which resumed a session (a ticket or the session cache).
    tls_resumed,
    /// Connections ended by a TLS error: bytes that are no TLS, a failed handshake, a bad record.
    tls_failures,
    /// Plain HTTP requests on the TLS port, answered 400 in plain text.
    tls_plain_http,
    /// Bytes queued for clients and not yet written (a gauge).
    queued_bytes,
    /// Loop turns.
    loop_turns,
    /// Microseconds spent working (from wake-up to the end of the flush), summed.
    loop_busy_us,
    /// Microseconds the last turn worked: how long a new event could wait (a gauge).
    loop_lag_us,
}

/// Sums the counters of all workers.
pub fn merge<'a>(workers: impl IntoIterator<Item = &'a WorkerMetrics>) -> Snapshot {
    let mut total = Snapshot::default();
    for w in workers {
        total.add(w);
    }
    total
}

/// Counters that are gauges (a level now, not a running total).
const GAUGES: &[&str] = &["connections", "queued_bytes", "loop_lag_us"];

/// Counters reported as `fanout_handshake_failures_total{reason=...}` rather than on their own.
const FAILURE_REASONS: &[(&str, &str)] = &[
    ("handshake_bad_requests", "bad_request"),
    ("handshake_timeouts", "timeout"),
    ("rejected_by_application", "rejected"),
    ("rejected_max_connections", "max_connections"),
    ("rejected_per_ip", "max_connections_per_ip"),
    ("rejected_draining", "draining"),
    ("rejected_handshake_rate", "handshake_rate"),
];

/// The Prometheus text exposition of per-worker counters, labelled `worker="i"`, plus
/// server-wide `extra` values (name, help, type, value). Labels are only workers and fixed
/// reasons: nothing grows with the number of clients or channels.
pub fn prometheus(workers: &[Snapshot], extra: &[(&str, &str, &str, u64)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(4096);
    let Some(first) = workers.first() else { return out };
    let mut reasons_done = false;
    for (index, (name, help, _)) in first.fields().into_iter().enumerate() {
        if name == "handshake_failures" {
            continue; // the sum of the reasons below
        }
        if let Some(&(_, reason)) = FAILURE_REASONS.iter().find(|(n, _)| *n == name) {
            if !reasons_done {
                reasons_done = true;
                let _ = writeln!(out, "# HELP fanout_handshake_failures_total Handshakes refused, by reason.");
                let _ = writeln!(out, "# TYPE fanout_handshake_failures_total counter");
            }
            for (w, snapshot) in workers.iter().enumerate() {
                let value = snapshot.fields()[index].2;
                let _ = writeln!(out, "fanout_handshake_failures_total{{worker=\"{w}\",reason=\"{reason}\"}} {value}");
            }
            continue;
        }
        let gauge = GAUGES.contains(&name);
        let metric = if gauge { format!("fanout_{name}") } else { format!("fanout_{name}_total") };
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} {}", if gauge { "gauge" } else { "counter" });
        for (w, snapshot) in workers.iter().enumerate() {
            let _ = writeln!(out, "{metric}{{worker=\"{w}\"}} {}", snapshot.fields()[index].2);
        }
    }
    for (name, help, kind, value) in extra {
        let _ = writeln!(out, "# HELP fanout_{name} {help}\n# TYPE fanout_{name} {kind}\nfanout_{name} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_help_type_and_one_sample_per_worker() {
        let a = WorkerMetrics::default();
        let b = WorkerMetrics::default();
        a.connections.add(2);
        b.handshake_timeouts.add(4);
        b.bytes_out.add(7);
        let text = prometheus(&[merge([&a]), merge([&b])], &[("topics", "Topics with subscribers.", "gauge", 3)]);
        assert!(text.contains(
            "# TYPE fanout_connections gauge\nfanout_connections{worker=\"0\"} 2\nfanout_connections{worker=\"1\"} 0\n"
        ));
        assert!(text.contains("# TYPE fanout_bytes_out_total counter\n"));
        assert!(text.contains("fanout_bytes_out_total{worker=\"1\"} 7\n"));
        assert!(text.contains("fanout_handshake_failures_total{worker=\"1\",reason=\"timeout\"} 4\n"));
        assert!(text.contains("# HELP fanout_bytes_out_total Bytes written to sockets.\n"));
        assert!(text.ends_with("fanout_topics 3\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<u64>().unwrap_or_else(|_| panic!("{line}"));
        }
    }

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
        assert!(s.fields().iter().any(|f| f.0 == "bytes_in" && f.2 == 10));
    }
}
