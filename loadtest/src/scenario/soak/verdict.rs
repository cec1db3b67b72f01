//! The soak's samples and its resource verdict: one `Sample` per interval (the server's RSS, fds,
//! connections and CPU, the connections the mix holds, the running totals), their CSV, and the
//! growth rule.
//!
//! The rule: samples in the warm-up are ignored; the rest (the steady phase) is cut in thirds and
//! the largest value of the last third is compared with the largest of the first. RSS may grow by
//! the larger of a percentage and a few MiB: the allocator keeps freed pages for a while, and up
//! to one slow reader's queue (the server's cap, 1 MiB by default) per slow slot comes and goes.
//! fds are judged as the server's fds minus the connections the mix holds open at that moment
//! (a connection explains one fd; what is left is listeners, epoll, wakers, and connections the
//! server has not yet seen end), which may grow only by a fixed slack. Pure: no I/O but the CSV
//! text it returns.

/// One sampling instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the mix started.
    pub t: f64,
    pub rss: u64,
    pub fds: u64,
    /// The server's `fanout_connections`.
    pub server_conns: u64,
    /// Connections the generator held open (or was opening) then.
    pub client_conns: u64,
    /// Server CPU seconds since the start.
    pub cpu_s: f64,
    pub delivered: u64,
    pub published: u64,
    pub slow_consumers: u64,
    pub failures: u64,
}

impl Sample {
    /// fds the mix's open connections do not explain.
    pub fn fd_excess(&self) -> i64 {
        self.fds as i64 - self.client_conns as i64
    }
}

pub const CSV_HEADER: &str =
    "t_s,rss_bytes,fds,server_connections,client_connections,fd_excess,server_cpu_s,delivered,published,slow_consumers,failures";

pub fn csv_line(s: &Sample) -> String {
    format!(
        "{:.1},{},{},{},{},{},{:.2},{},{},{},{}",
        s.t,
        s.rss,
        s.fds,
        s.server_conns,
        s.client_conns,
        s.fd_excess(),
        s.cpu_s,
        s.delivered,
        s.published,
        s.slow_consumers,
        s.failures
    )
}

/// The first and last thirds of the steady phase, by their largest values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thirds {
    pub first: i64,
    pub last: i64,
}

/// Largest `value` in the first and the last third of the samples after `warmup` seconds;
/// `None` with fewer than three such samples.
pub fn thirds(samples: &[Sample], warmup: f64, value: impl Fn(&Sample) -> i64) -> Option<Thirds> {
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.t >= warmup).collect();
    if steady.len() < 3 {
        return None;
    }
    let (t0, t1) = (steady[0].t, steady[steady.len() - 1].t);
    let third = (t1 - t0) / 3.0;
    let max_in = |lo: f64, hi: f64| steady.iter().filter(|s| s.t >= lo && s.t <= hi).map(|s| value(s)).max();
    Some(Thirds { first: max_in(t0, t0 + third)?, last: max_in(t1 - third, t1)? })
}

/// The growth limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub warmup: f64,
    pub rss_percent: f64,
    pub rss_slack: u64,
    pub fd_slack: u64,
}

/// What the growth check found: each line of the table, and the reasons it failed.
#[derive(Debug, Default)]
pub struct Growth {
    pub lines: Vec<String>,
    pub failures: Vec<String>,
}

pub fn growth(samples: &[Sample], limits: &Limits) -> Growth {
    let mut g = Growth::default();
    let Some(rss) = thirds(samples, limits.warmup, |s| s.rss as i64) else {
        g.failures.push("too few samples after the warm-up to judge growth".into());
        return g;
    };
    let allowed = ((rss.first as f64 * limits.rss_percent / 100.0) as i64).max(limits.rss_slack as i64);
    let mib = |b: i64| b as f64 / (1024.0 * 1024.0);
    g.lines.push(format!(
        "RSS: max {:.1} MiB in the steady phase's first third, {:.1} MiB in its last (+{:.1} MiB; allowed +{:.1})",
        mib(rss.first),
        mib(rss.last),
        mib(rss.last - rss.first),
        mib(allowed)
    ));
    if rss.last - rss.first > allowed {
        g.failures.push(format!("RSS grew by {:.1} MiB (allowed {:.1})", mib(rss.last - rss.first), mib(allowed)));
    }
    if let Some(fd) = thirds(samples, limits.warmup, Sample::fd_excess) {
        g.lines.push(format!(
            "fds beyond the mix's connections: max {} in the first third, {} in the last (allowed +{})",
            fd.first, fd.last, limits.fd_slack
        ));
        if fd.last - fd.first > limits.fd_slack as i64 {
            g.failures.push(format!(
                "fds grew by {} beyond the connections held (allowed {})",
                fd.last - fd.first,
                limits.fd_slack
            ));
        }
    }
    if let Some(c) = thirds(samples, limits.warmup, |s| s.server_conns as i64 - s.client_conns as i64) {
        g.lines.push(format!(
            "server connections beyond the mix's: max {} in the first third, {} in the last",
            c.first, c.last
        ));
        if c.last - c.first > limits.fd_slack as i64 {
            g.failures.push(format!("the server's connection count grew by {} beyond the mix's", c.last - c.first));
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(rss: impl Fn(f64) -> u64, fds: impl Fn(f64) -> u64) -> Vec<Sample> {
        (0..=120)
            .map(|i| {
                let t = i as f64 * 5.0;
                Sample { t, rss: rss(t), fds: fds(t), client_conns: 500, server_conns: 498, ..Sample::default() }
            })
            .collect()
    }

    const LIMITS: Limits = Limits { warmup: 120.0, rss_percent: 10.0, rss_slack: 8 << 20, fd_slack: 64 };

    #[test]
    fn a_flat_series_passes_and_a_leak_fails() {
        let flat = series(|t| (40 << 20) + ((t as u64 * 7919) % (3 << 20)), |t| 520 + (t as u64 % 13));
        let g = growth(&flat, &LIMITS);
        assert!(g.failures.is_empty(), "{:?}", g.failures);
        assert_eq!(g.lines.len(), 3);
        // 40 KiB a second leaks 19 MiB over the 480 s of the steady phase: over 8 MiB.
        let leak = series(|t| (40 << 20) + t as u64 * 40 * 1024, |_| 520);
        assert!(growth(&leak, &LIMITS).failures.iter().any(|f| f.starts_with("RSS grew")));
        // One fd a second nobody closes.
        let fd_leak = series(|_| 40 << 20, |t| 520 + t as u64 / 2);
        let g = growth(&fd_leak, &LIMITS);
        assert!(g.failures.iter().any(|f| f.starts_with("fds grew")), "{:?}", g.failures);
        // Growth during the warm-up does not count.
        let warm = series(|t| if t < 100.0 { 20 << 20 } else { 60 << 20 }, |_| 520);
        assert!(growth(&warm, &LIMITS).failures.is_empty());
    }

    #[test]
    fn thirds_need_samples_and_take_the_largest() {
        let s = |t: f64, rss: u64| Sample { t, rss, ..Sample::default() };
        assert_eq!(thirds(&[s(0.0, 1), s(1.0, 2)], 0.0, |x| x.rss as i64), None);
        let v = [s(0.0, 9), s(10.0, 5), s(20.0, 1), s(30.0, 3), s(40.0, 2), s(50.0, 4), s(60.0, 7)];
        assert_eq!(thirds(&v, 10.0, |x| x.rss as i64), Some(Thirds { first: 5, last: 7 }));
        assert!(csv_line(&v[0]).starts_with("0.0,9,0,"));
        assert_eq!(CSV_HEADER.split(',').count(), csv_line(&v[0]).split(',').count());
    }
}
