//! Which side limited a run: the bottleneck verdict every report carries.
//!
//! Owns: `Bound` (the verdict and the loads it was made from), `verdict` (pure: CPU figures in,
//! verdict out) and `allowed_cpus` (the CPUs a process may run on, from /proc). A side is
//! saturated when its CPU over the measured phase exceeds the threshold of what it can use: for
//! the generator, per thread (one reactor thread cannot use more than a core) or in total over
//! the cores its affinity allows; for the server, over `--server-cores`, or the cores its
//! affinity allows. "generator" (the generator saturated, the server not) means the figures are
//! the generator's limit, not the server's: the scripts refuse to print a ratio from such a run
//! without saying so. Must not: know scenarios or print anything.

use serde::{Deserialize, Serialize};

/// The verdict of one run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bound {
    /// `generator`, `server`, `both`, `neither`, or `unknown` (the generator below the threshold
    /// and the server's CPU not measured).
    pub by: String,
    /// Percent of its capacity above which a side counts as saturated (`--bound-pct`).
    pub threshold_pct: f64,
    /// The generator's CPU as a percent of its capacity: the larger of its CPU per thread and
    /// its CPU over the cores it may use.
    pub generator_load_pct: f64,
    pub generator_cores: usize,
    /// How many times the run's rate the generator could drive at the threshold, its cost per
    /// operation staying the same (threshold / load): below 2, a server faster than this one by
    /// half would already meet the generator's limit.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub generator_headroom: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub server_load_pct: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub server_cores: Option<f64>,
}

impl Bound {
    pub fn generator_bound(&self) -> bool {
        self.by == "generator" || self.by == "both"
    }

    /// A short explanation for the table.
    pub fn text(&self) -> String {
        let server = match (self.server_load_pct, self.server_cores) {
            (Some(l), Some(c)) => format!("server at {l:.0}% of {c} core{}", if c == 1.0 { "" } else { "s" }),
            _ => "server CPU not measured (--server-pid)".to_owned(),
        };
        let head = match self.by.as_str() {
            "generator" => "generator (generator-bound: not a server figure)",
            "both" => "both sides saturated (the generator too: not a clean server figure)",
            "server" => "server",
            "neither" => "neither side saturated (latency, rate or client count bound)",
            _ => "unknown",
        };
        let headroom = self.generator_headroom.map_or_else(String::new, |h| format!(", headroom x{h:.1}"));
        format!(
            "{head}; generator at {:.0}% of its capacity ({} core{}{headroom}), {server}; threshold {:.0}%",
            self.generator_load_pct,
            self.generator_cores,
            if self.generator_cores == 1 { "" } else { "s" },
            self.threshold_pct
        )
    }
}

/// The verdict from the generator's CPU (`gen_pct` of one core in all, over `workers` reactor
/// threads on `gen_cores` usable cores) and the server's (`server_pct` of one core on
/// `server_cores`).
pub fn verdict(
    threshold_pct: f64,
    gen_pct: f64,
    workers: usize,
    gen_cores: usize,
    server: Option<(f64, f64)>,
) -> Bound {
    let per_thread = gen_pct / workers.max(1) as f64;
    let over_cores = gen_pct / gen_cores.max(1) as f64;
    let generator_load_pct = per_thread.max(over_cores);
    let gen_sat = generator_load_pct > threshold_pct;
    let server_load_pct = server.map(|(pct, cores)| pct / cores.max(0.01));
    let by = match (gen_sat, server_load_pct.map(|l| l > threshold_pct)) {
        (true, Some(true)) => "both",
        (true, _) => "generator",
        (false, Some(true)) => "server",
        (false, Some(false)) => "neither",
        (false, None) => "unknown",
    };
    Bound {
        by: by.to_owned(),
        threshold_pct,
        generator_load_pct,
        generator_cores: gen_cores,
        generator_headroom: (generator_load_pct > 0.0).then(|| threshold_pct / generator_load_pct),
        server_load_pct,
        server_cores: server.map(|(_, c)| c),
    }
}

/// A note when the machine ran more than it has CPUs (the 1-minute load average, this run's
/// own threads included): the CPU of either side was then not its own to use, and no verdict
/// made from it holds.
pub fn busy_machine_note() -> Option<String> {
    let load: f64 = std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpus =
        stat.lines().filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)).count();
    (cpus > 0 && load > cpus as f64).then(|| {
        format!(
            "the machine was busy: load average {load:.1} on {cpus} CPUs (this run included); CPU figures and the \
             bound-by verdict assume cores free for each side"
        )
    })
}

/// How many CPUs process `pid` (`None`: this one) may run on, from `Cpus_allowed_list`.
pub fn allowed_cpus(pid: Option<u32>) -> Option<usize> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let list = text.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    count_cpu_list(list.trim())
}

/// The number of CPUs in a list such as `0-3,6,8-9`.
fn count_cpu_list(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.trim().parse::<usize>().ok()?.checked_sub(a.trim().parse::<usize>().ok()?)? + 1,
            None => {
                part.trim().parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-3,6,8-9"), Some(7));
        assert_eq!(count_cpu_list("1"), Some(1));
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(count_cpu_list("3-1"), None);
        assert!(allowed_cpus(None).is_some_and(|n| n >= 1));
    }

    #[test]
    fn the_verdict_names_the_saturated_side() {
        // One generator thread at 97% against a server at 40% of its one core.
        let b = verdict(85.0, 97.0, 1, 2, Some((40.0, 1.0)));
        assert_eq!(b.by, "generator");
        assert!(b.generator_bound());
        assert!(b.text().contains("generator-bound: not a server figure"), "{}", b.text());
        // Four threads on one allowed core: 30% each, but 120% of that core.
        assert_eq!(verdict(85.0, 120.0, 4, 1, Some((50.0, 1.0))).by, "generator");
        assert_eq!(verdict(85.0, 50.0, 1, 2, Some((99.0, 1.0))).by, "server");
        assert_eq!(verdict(85.0, 95.0, 1, 2, Some((99.0, 1.0))).by, "both");
        assert_eq!(verdict(85.0, 20.0, 1, 2, Some((150.0, 2.0))).by, "neither");
        assert_eq!(verdict(85.0, 20.0, 1, 2, None).by, "unknown");
        assert!(!verdict(85.0, 20.0, 1, 2, None).generator_bound());
        // At 40% of its capacity the generator could drive the run about twice as fast.
        let h = verdict(80.0, 40.0, 1, 1, None).generator_headroom.unwrap();
        assert!((h - 2.0).abs() < 1e-9, "{h}");
        assert!(verdict(80.0, 0.0, 1, 1, None).generator_headroom.is_none());
    }
}
