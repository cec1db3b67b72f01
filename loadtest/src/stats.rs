//! What a thread measures and how measurements from threads and processes are merged.
//!
//! Owns: `Hist` (an HdrHistogram of microseconds that crosses process boundaries as base64 of its
//! V2 serialisation), `Counters`, `Stats`, `SeqTracker` (loss, duplicate and order accounting) and
//! `slope` (least-squares fit for bytes per connection). Pure data: no I/O, no clock.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency kept exactly: one minute in microseconds. Anything slower saturates here,
/// which keeps a histogram at ~100 KiB instead of growing with every outlier.
pub const MAX_US: u64 = 60_000_000;

/// A latency histogram in microseconds (1 us to 60 s, 3 significant digits).
#[derive(Debug, Clone)]
pub struct Hist(pub Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist(Histogram::new_with_bounds(1, MAX_US, 3).expect("static bounds are valid"))
    }
}

impl Hist {
    pub fn record(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, MAX_US));
    }

    /// A copy corrected for coordinated omission: every value above `interval_us` also counts
    /// the samples a sender on that fixed schedule would have measured had it not been held up
    /// (HdrHistogram's `clone_correct`, the after-the-fact form of `record_correct`).
    ///
    /// Applied once to the merged histogram rather than per sample: `record_correct` costs one
    /// record per missed interval, so when latency reaches seconds at thousands of messages per
    /// second it made the generator slower, hence the latency higher, hence the correction
    /// costlier. Here the cost is per recorded bucket and paid once, after the run.
    pub fn corrected(&self, interval_us: u64) -> Hist {
        if interval_us == 0 {
            return self.clone();
        }
        Hist(self.0.clone_correct(interval_us))
    }

    pub fn add(&mut self, other: &Hist) {
        // Same bounds everywhere, so addition cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn reset(&mut self) {
        self.0.reset();
    }

    /// Value at quantile `q` (0..=1), 0 when empty.
    pub fn q(&self, q: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(q)
        }
    }

    pub fn summary(&self) -> Percentiles {
        Percentiles {
            count: self.0.len(),
            min: if self.0.is_empty() { 0 } else { self.0.min() },
            mean: if self.0.is_empty() { 0.0 } else { self.0.mean() },
            p50: self.q(0.5),
            p90: self.q(0.9),
            p95: self.q(0.95),
            p99: self.q(0.99),
            p999: self.q(0.999),
            max: if self.0.is_empty() { 0 } else { self.0.max() },
        }
    }

    pub fn to_base64(&self) -> String {
        let mut buf = Vec::new();
        V2Serializer::new().serialize(&self.0, &mut buf).expect("serialising into a Vec cannot fail");
        BASE64.encode(buf)
    }

    pub fn from_base64(text: &str) -> Result<Hist, String> {
        let raw = BASE64.decode(text).map_err(|e| format!("histogram: {e}"))?;
        let h: Histogram<u64> =
            Deserializer::new().deserialize(&mut &raw[..]).map_err(|e| format!("histogram: {e:?}"))?;
        // Re-home into our bounds so later additions always succeed.
        let mut out = Hist::default();
        let _ = out.0.add(&h);
        Ok(out)
    }
}

impl Serialize for Hist {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hist, D::Error> {
        let text = String::deserialize(d)?;
        Hist::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// Percentiles of a latency histogram, all in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// Plain counters, cheap to bump on the hot path and summed on merge.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Upgrades completed.
    pub opened: u64,
    /// Connections that never completed their upgrade.
    pub failed: u64,
    /// Open connections that ended (closed by the server, reset, protocol error).
    pub closed: u64,
    /// Data messages sent.
    pub sent: u64,
    /// Data messages received (deliveries).
    pub received: u64,
    /// Payload bytes sent and received.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Replies that did not match what was expected (wrong echo, error op, bad JSON).
    pub errors: u64,
    /// Messages received more than once or out of order (see `SeqTracker`).
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Publisher side: messages acknowledged by the server (`ack` op or HTTP 200).
    pub acked: u64,
    /// n2: iterations completed.
    pub iterations: u64,
}

impl Counters {
    /// One data message of `payload` bytes sent.
    pub fn count_sent(&mut self, payload: usize) {
        self.sent += 1;
        self.bytes_sent += payload as u64;
    }

    /// Field-wise `self - earlier` (a delta between two readings of the same counters).
    pub fn minus(&self, earlier: &Counters) -> Counters {
        let mut d = *self;
        d.combine(earlier, |a, b| a - b);
        d
    }

    pub fn add(&mut self, o: &Counters) {
        self.combine(o, |a, b| a + b);
    }

    /// Applies `f` to every field of `self` and the same field of `o`: the one list of fields,
    /// so a new counter cannot be added to one operation and forgotten in the other.
    fn combine(&mut self, o: &Counters, f: impl Fn(u64, u64) -> u64) {
        let fields = [
            (&mut self.opened, o.opened),
            (&mut self.failed, o.failed),
            (&mut self.closed, o.closed),
            (&mut self.sent, o.sent),
            (&mut self.received, o.received),
            (&mut self.bytes_sent, o.bytes_sent),
            (&mut self.bytes_received, o.bytes_received),
            (&mut self.errors, o.errors),
            (&mut self.duplicated, o.duplicated),
            (&mut self.out_of_order, o.out_of_order),
            (&mut self.acked, o.acked),
            (&mut self.iterations, o.iterations),
        ];
        for (mine, theirs) in fields {
            *mine = f(*mine, theirs);
        }
    }
}

/// Loss accounting inputs that only make sense once merged: each subscriber knows how many
/// distinct messages it got and from which sequence number it started; only the publisher's
/// process knows how many were published.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Delivery {
    /// Subscribers counted (healthy ones still open at the end).
    pub subscribers: u64,
    /// Sum over those subscribers of the last sequence number before they subscribed.
    pub sum_base: u64,
    /// Sum over those subscribers of distinct messages received after subscribing.
    pub unique: u64,
    /// Publisher: the last sequence number it saw acknowledged (or, in raw mode, its count).
    pub last_seq: u64,
    /// Slow subscribers the server closed, and those still open at the end.
    pub slow_closed: u64,
    pub slow_open: u64,
}

impl Delivery {
    pub fn add(&mut self, o: &Delivery) {
        self.subscribers += o.subscribers;
        self.sum_base += o.sum_base;
        self.unique += o.unique;
        self.last_seq = self.last_seq.max(o.last_seq);
        self.slow_closed += o.slow_closed;
        self.slow_open += o.slow_open;
    }

    /// Messages some subscriber should have received and did not.
    pub fn lost(&self) -> u64 {
        (self.subscribers * self.last_seq).saturating_sub(self.sum_base + self.unique)
    }
}

/// One step of the `shootout` ramp.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub clients: u64,
    pub rtt: Percentiles,
    /// Broadcast messages all clients received during the step.
    pub deliveries: u64,
}

/// Everything one thread measured; merged across threads, then across processes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub counters: Counters,
    /// Failed connects and closed connections by reason ("refused", "status 503", ...).
    pub failures: BTreeMap<String, u64>,
    /// The scenario's main latency: round trip, publish-to-delivery, handshake or iteration time.
    pub latency: Hist,
    /// Secondary latency: publish-to-ack for the broadcast publisher.
    pub ack_latency: Hist,
    /// shootout: from a broadcast's send to each client's receipt of it (what a coalescing
    /// window holds shows here; the round trip in `latency` ends at the direct reply).
    pub delivery_latency: Hist,
    pub delivery: Delivery,
    pub steps: Vec<Step>,
    /// Nanoseconds from the run phase's start to the last message sent or received.
    pub active_ns: u64,
    /// CPU this process used during the run phase (set per process, summed across processes).
    pub cpu_ns: u64,
    /// Remarks for the report (a publisher that fell behind its schedule, a stalled iteration).
    pub notes: Vec<String>,
    /// The publisher's schedule (microseconds between messages) when it had one: `latency` is
    /// corrected for coordinated omission with it when the run is summarised.
    pub co_interval_us: u64,
}

impl Stats {
    pub fn fail(&mut self, reason: impl Into<String>) {
        *self.failures.entry(reason.into()).or_default() += 1;
    }

    pub fn merge(&mut self, o: &Stats) {
        self.counters.add(&o.counters);
        for (k, v) in &o.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
        self.latency.add(&o.latency);
        self.ack_latency.add(&o.ack_latency);
        self.delivery_latency.add(&o.delivery_latency);
        self.delivery.add(&o.delivery);
        self.steps.extend(o.steps.iter().cloned());
        self.active_ns = self.active_ns.max(o.active_ns);
        self.cpu_ns += o.cpu_ns;
        self.co_interval_us = self.co_interval_us.max(o.co_interval_us);
        for n in &o.notes {
            if !self.notes.contains(n) {
                self.notes.push(n.clone());
            }
        }
    }
}

/// What a `SeqTracker` made of one sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqOutcome {
    /// The next one, or a later one (a gap that may still fill).
    Fresh,
    /// Fills an earlier gap: arrived out of order.
    Late,
    /// Seen before.
    Duplicate,
    /// At or below the subscription's starting point: history, not counted.
    Old,
}

/// Loss, duplicate and order accounting for one subscriber's stream of sequence numbers.
///
/// Remembers the last `WINDOW` numbers below the highest seen in a bitmap, so a duplicate or a
/// late arrival within that window is told apart exactly. One further back is counted as late
/// (it cannot be told from a duplicate any more); with in-order delivery, the normal case, that
/// never happens. Loss is not counted here: it is what is missing once the publisher's final
/// count is known (`Delivery::lost`).
#[derive(Debug, Clone)]
pub struct SeqTracker {
    base: u64,
    max: u64,
    /// Bit i set: `max - i` was seen.
    seen: [u64; WINDOW / 64],
    pub unique: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

const WINDOW: usize = 1024;

impl SeqTracker {
    /// A tracker for a subscription whose last sequence number before subscribing was `base`.
    pub fn new(base: u64) -> SeqTracker {
        SeqTracker { base, max: base, seen: [0; WINDOW / 64], unique: 0, duplicated: 0, out_of_order: 0 }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn record(&mut self, seq: u64) -> SeqOutcome {
        if seq <= self.base {
            return SeqOutcome::Old;
        }
        if seq > self.max {
            self.shift(seq - self.max);
            self.max = seq;
            self.set(0);
            self.unique += 1;
            return SeqOutcome::Fresh;
        }
        let back = (self.max - seq) as usize;
        if back >= WINDOW {
            self.out_of_order += 1;
            self.unique += 1;
            return SeqOutcome::Late;
        }
        if self.get(back) {
            self.duplicated += 1;
            SeqOutcome::Duplicate
        } else {
            self.set(back);
            self.out_of_order += 1;
            self.unique += 1;
            SeqOutcome::Late
        }
    }

    fn get(&self, i: usize) -> bool {
        self.seen[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize) {
        self.seen[i / 64] |= 1 << (i % 64);
    }

    /// Moves every bit `by` places further back (older), dropping what falls off the window.
    fn shift(&mut self, by: u64) {
        if by >= WINDOW as u64 {
            self.seen = [0; WINDOW / 64];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        let n = self.seen.len();
        for i in (0..n).rev() {
            let lo = if i >= words { self.seen[i - words] } else { 0 };
            let carry = if bits > 0 && i > words { self.seen[i - words - 1] >> (64 - bits) } else { 0 };
            self.seen[i] = if bits > 0 { (lo << bits) | carry } else { lo };
        }
    }
}

/// Least-squares fit of y = slope * x + intercept; returns (slope, intercept, r²).
///
/// Used for bytes per idle connection: the RSS before connecting includes the server's fixed
/// costs (code, buffers, allocator arenas), so total/N overstates the per-connection figure for
/// small N; the slope of RSS against connection count is what each extra connection costs.
pub fn slope(points: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let b = sxy / sxx;
    let r2 = if syy == 0.0 { 1.0 } else { (sxy * sxy) / (sxx * syy) };
    Some((b, my - b * mx, r2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_round_trips_through_base64_and_merges() {
        let mut a = Hist::default();
        let mut b = Hist::default();
        for v in 1..=1000 {
            a.record(v);
        }
        for v in 1001..=2000 {
            b.record(v);
        }
        b.record(MAX_US * 10); // saturates, never fails
        let text = b.to_base64();
        let b2 = Hist::from_base64(&text).unwrap();
        assert_eq!(b2.0.len(), 1001);
        a.add(&b2);
        assert_eq!(a.0.len(), 2001);
        let s = a.summary();
        assert!((995..=1005).contains(&s.p50), "{s:?}");
        assert!(s.max >= MAX_US * 99 / 100);
        let json = serde_json::to_string(&a).unwrap();
        let back: Hist = serde_json::from_str(&json).unwrap();
        assert_eq!(back.summary(), s);
    }

    #[test]
    fn coordinated_omission_correction_adds_the_missing_samples() {
        let mut h = Hist::default();
        h.record(10_000);
        h.record(500);
        // 10 ms with a 1 ms schedule: 10000, 9000, ..., 1000; 500 needs no correction.
        let c = h.corrected(1_000);
        assert_eq!(c.0.len(), 11);
        assert_eq!(c.q(0.0), 500);
        let mut direct = Hist::default();
        let _ = direct.0.record_correct(10_000, 1_000);
        let _ = direct.0.record_correct(500, 1_000);
        // The same samples up to the histogram's precision (it corrects from bucket values).
        let (a, b) = (c.summary(), direct.summary());
        assert_eq!((a.count, a.min, a.p90, a.max), (b.count, b.min, b.p90, b.max));
        assert!(a.p50.abs_diff(b.p50) <= b.p50 / 500, "{a:?} vs {b:?}");
        assert_eq!(h.corrected(0).0.len(), 2);
    }

    #[test]
    fn stats_merge_sums_counters_failures_and_histograms() {
        let mut a = Stats::default();
        a.counters.sent = 5;
        a.fail("refused");
        a.latency.record(100);
        a.active_ns = 10;
        a.delivery.last_seq = 3;
        let mut b = Stats::default();
        b.counters.sent = 7;
        b.fail("refused");
        b.fail("status 503");
        b.latency.record(200);
        b.active_ns = 20;
        b.cpu_ns = 4;
        let b: Stats = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        a.merge(&b);
        assert_eq!(a.counters.sent, 12);
        assert_eq!(a.failures["refused"], 2);
        assert_eq!(a.failures["status 503"], 1);
        assert_eq!(a.latency.0.len(), 2);
        assert_eq!((a.active_ns, a.cpu_ns, a.delivery.last_seq), (20, 4, 3));
    }

    #[test]
    fn seq_tracker_in_order() {
        let mut t = SeqTracker::new(10);
        assert_eq!(t.record(5), SeqOutcome::Old);
        for s in 11..=2100 {
            assert_eq!(t.record(s), SeqOutcome::Fresh);
        }
        assert_eq!((t.unique, t.duplicated, t.out_of_order), (2090, 0, 0));
    }

    #[test]
    fn seq_tracker_duplicates_reordering_and_gaps() {
        let mut t = SeqTracker::new(0);
        let script = [
            (1, SeqOutcome::Fresh),
            (2, SeqOutcome::Fresh),
            (2, SeqOutcome::Duplicate),
            (5, SeqOutcome::Fresh), // 3 and 4 missing for now
            (4, SeqOutcome::Late),
            (4, SeqOutcome::Duplicate),
            (1, SeqOutcome::Duplicate),
            (70, SeqOutcome::Fresh), // shifts by 65: crosses a word boundary
            (5, SeqOutcome::Duplicate),
            (6, SeqOutcome::Late),
            (200, SeqOutcome::Fresh),
            (70, SeqOutcome::Duplicate),
            (3, SeqOutcome::Late),
            (5000, SeqOutcome::Fresh), // clears the window
            (200, SeqOutcome::Late),   // too far back to tell: counted late
        ];
        for (i, (seq, want)) in script.iter().enumerate() {
            assert_eq!(t.record(*seq), *want, "step {i}: seq {seq}");
        }
        assert_eq!(t.duplicated, 5);
        assert_eq!(t.out_of_order, 4);
        assert_eq!(t.unique, 10);
    }

    #[test]
    fn loss_is_what_subscribers_miss_of_the_publishers_count() {
        let mut d = Delivery {
            subscribers: 2,
            sum_base: 10, // each subscribed after seq 5
            unique: 9,    // one of the 10 messages (6..=10) missed once
            last_seq: 10,
            ..Delivery::default()
        };
        assert_eq!(d.lost(), 1);
        let mut t1 = SeqTracker::new(5);
        let mut t2 = SeqTracker::new(5);
        for s in 6..=10 {
            t1.record(s);
            if s != 8 {
                t2.record(s);
            }
        }
        t2.record(9); // a duplicate is not a delivery
        let sum = Delivery {
            subscribers: 2,
            sum_base: t1.base() + t2.base(),
            unique: t1.unique + t2.unique,
            last_seq: 10,
            ..Delivery::default()
        };
        assert_eq!(sum.lost(), 1);
        d.add(&sum);
        assert_eq!(d.subscribers, 4);
        assert_eq!(d.lost(), 2);
    }

    #[test]
    fn slope_fit() {
        // RSS = 5 MB + 300 B per connection, with a little noise.
        let pts: Vec<(f64, f64)> = (0..=10)
            .map(|i| {
                let x = i as f64 * 1000.0;
                let noise = if i % 2 == 0 { 2000.0 } else { -2000.0 };
                (x, 5e6 + 300.0 * x + noise)
            })
            .collect();
        let (b, a, r2) = slope(&pts).unwrap();
        assert!((b - 300.0).abs() < 1.0, "{b}");
        assert!((a - 5e6).abs() < 5000.0, "{a}");
        assert!(r2 > 0.999);
        assert_eq!(slope(&[(1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }
}
