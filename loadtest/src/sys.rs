//! CPU time and resident memory of a process, read from /proc (Linux only).
//!
//! Owns: `cpu_ns` (utime + stime of a whole process, every thread included) and `rss_bytes`, and
//! their sums over several processes (a cluster's nodes).
//! Reading /proc instead of calling getrusage keeps the crate free of `unsafe` and works the same
//! for our own process and for the server's (`--server-pid`).

use std::fs;

/// The kernel reports utime and stime in USER_HZ ticks, which is 100 on every mainstream Linux
/// build (it is an ABI constant, unlike the kernel's internal HZ).
const USER_HZ: u64 = 100;

/// CPU time (user + system) used by process `pid` (`None` = this process), in nanoseconds.
pub fn cpu_ns(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    parse_stat_cpu(&fs::read_to_string(path).ok()?)
}

/// Resident set size of process `pid` (`None` = this process), in bytes.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    parse_status_rss(&fs::read_to_string(path).ok()?)
}

/// CPU time of processes `pids` together, in nanoseconds; `None` when there are none or one of
/// them cannot be read (it ended): a sum without it would be too low.
pub fn cpu_ns_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_ns(Some(p))).sum()
}

/// Resident memory of processes `pids` together, in bytes; `None` as for `cpu_ns_sum`.
pub fn rss_bytes_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| rss_bytes(Some(p))).sum()
}

/// utime + stime from the text of /proc/PID/stat, in nanoseconds.
fn parse_stat_cpu(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may itself contain spaces or ')', so
    // count fields from the last ')': state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * (1_000_000_000 / USER_HZ))
}

/// VmRSS from the text of /proc/PID/status, in bytes.
fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line["VmRSS:".len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_paren() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1000 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_cpu(stat), Some(300 * 10_000_000));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn status_rss() {
        let status = "Name:\tfanout\nVmPeak:\t  99999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_status_rss(status), Some(12345 * 1024));
        assert_eq!(parse_status_rss("Name:\tx\n"), None);
    }

    #[test]
    fn reads_our_own_process() {
        assert!(cpu_ns(None).is_some());
        assert!(rss_bytes(None).unwrap() > 0);
        assert!(rss_bytes(Some(std::process::id())).is_some());
        let me = std::process::id();
        assert!(cpu_ns_sum(&[me, me]).is_some());
        assert!(rss_bytes_sum(&[me, me]).unwrap() >= rss_bytes(Some(me)).unwrap());
        assert_eq!(cpu_ns_sum(&[]), None);
        // No process has pid 0 in /proc: the sum is not made without it.
        assert_eq!(cpu_ns_sum(&[me, 0]), None);
    }
}
