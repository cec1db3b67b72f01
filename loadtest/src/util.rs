//! Small pure helpers every other module uses: the run's clock, the mask-key RNG, duration parsing
//! and number formatting.
//!
//! Owns: `Clock` (nanoseconds since the run's epoch, comparable across the child processes of one
//! run), `XorShift`, `parse_duration` and the human formatters. Must not do I/O.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the run's epoch, the same in every process of a run.
///
/// Latency in `broadcast` is "receive time minus the timestamp the publisher wrote", and the
/// publisher may live in another process, so `Instant` (opaque per process) cannot be sent. The
/// parent picks the epoch from the wall clock once and passes it to its children; each process
/// maps the wall clock to its monotonic clock once at start, so readings never jump afterwards.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor: Instant,
    /// Nanoseconds between the epoch and `anchor`.
    offset_ns: u64,
}

impl Clock {
    /// A clock whose zero is `epoch_unix_ns` (wall-clock nanoseconds since 1970).
    pub fn new(epoch_unix_ns: u64) -> Clock {
        let anchor = Instant::now();
        Clock { anchor, offset_ns: unix_now_ns().saturating_sub(epoch_unix_ns) }
    }

    /// Nanoseconds since the epoch at `t` (an instant before the clock was made counts as its start).
    pub fn ns_at(&self, t: Instant) -> u64 {
        self.offset_ns + t.saturating_duration_since(self.anchor).as_nanos() as u64
    }

    /// The instant at which the clock reads `ns` (clamped to the clock's anchor).
    pub fn instant_at(&self, ns: u64) -> Instant {
        self.anchor + Duration::from_nanos(ns.saturating_sub(self.offset_ns))
    }
}

/// Wall-clock nanoseconds since 1970; used once per process to pick or align the epoch.
pub fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// xorshift64*: mask keys and handshake nonces. RFC 6455 asks for unpredictable keys to protect
/// proxies from cache poisoning; a benchmark talking to its own loopback server needs only cheap
/// keys that vary, and this costs a few instructions per frame.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // Zero is the one state xorshift never leaves.
        XorShift(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A value in `0..n` (n > 0); the modulo bias is irrelevant for picking clients.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Parses `10s`, `500ms`, `2m`, `1h`, `250us` or a bare number of seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration (try 10s, 500ms, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (use ns, us, ms, s, m, h)")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{text:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate with a sensible number of digits: `1,234,567/s`, `12.3/s`.
pub fn rate(per_sec: f64) -> String {
    if per_sec >= 1000.0 {
        thousands(per_sec.round() as u64)
    } else if per_sec >= 10.0 {
        format!("{per_sec:.1}")
    } else {
        format!("{per_sec:.2}")
    }
}

/// Microseconds as `850 us`, `1.25 ms` or `2.500 s`.
pub fn micros(us: u64) -> String {
    if us < 1_000 {
        format!("{us} us")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{:.3} s", us as f64 / 1e6)
    }
}

/// Bytes as `512 B`, `3.4 KiB`, `12.0 MiB`, `1.50 GiB`.
pub fn bytes(n: f64) -> String {
    const K: f64 = 1024.0;
    if n.abs() < K {
        format!("{n:.0} B")
    } else if n.abs() < K * K {
        format!("{:.1} KiB", n / K)
    } else if n.abs() < K * K * K {
        format!("{:.1} MiB", n / (K * K))
    } else {
        format!("{:.2} GiB", n / (K * K * K))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, Duration)] = &[
            ("10s", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("250us", Duration::from_micros(250)),
            ("1.5", Duration::from_millis(1500)),
            ("0.25s", Duration::from_millis(250)),
            (" 3 s", Duration::from_secs(3)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).as_ref(), Ok(want), "{text}");
        }
        for bad in ["", "s", "10 parsecs", "-1s", "1..2s", "ms10"] {
            assert!(parse_duration(bad).is_err(), "{bad} must not parse");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(micros(850), "850 us");
        assert_eq!(micros(1250), "1.25 ms");
        assert_eq!(micros(2_500_000), "2.500 s");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0), "3.0 MiB");
    }

    #[test]
    fn clock_is_shared_across_instances_with_the_same_epoch() {
        let epoch = unix_now_ns() - 5_000_000_000;
        let a = Clock::new(epoch);
        let b = Clock::new(epoch);
        let now = Instant::now();
        let (x, y) = (a.ns_at(now), b.ns_at(now));
        assert!((5_000_000_000..6_000_000_000).contains(&x), "{x}");
        assert!(x.abs_diff(y) < 50_000_000, "{x} vs {y}");
        let later = a.instant_at(x + 1_000_000);
        assert!(a.ns_at(later).abs_diff(x + 1_000_000) < 1_000);
    }

    #[test]
    fn xorshift_varies_and_never_sticks_at_zero() {
        let mut r = XorShift::new(0);
        let a = r.next_u64();
        let b = r.next_u64();
        assert_ne!(a, b);
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
