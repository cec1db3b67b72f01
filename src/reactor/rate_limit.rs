//! The per-address handshake rate (`Config::handshake_rate_per_ip`): a token bucket per client
//! address, shared by every worker.
//!
//! Owns: `RateLimiter`. The bucket is kept as the generic cell rate algorithm's one instant per
//! address (the "theoretical arrival time": when the bucket would be full again), which is a
//! token bucket of `burst` tokens refilled at `count` per `per` with one `Instant` of state.
//! Invariants: the table never holds more than `max_addresses` entries; an address whose bucket
//! is full is the same as an absent one, so forgetting it changes no answer; the clock is the
//! caller's (`now`), so tests step it. A leaf: it knows no worker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::bus::lock;
use crate::config::RateLimit;

/// Full buckets are swept out of a full table at most this often; between sweeps a full table
/// forgets an arbitrary address, so a flood of new addresses costs O(1) each, not a scan.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Token buckets per client address.
pub(crate) struct RateLimiter {
    /// Time one token takes to come back.
    interval: Duration,
    /// How far ahead of now an address's full-again instant may be and still take a token:
    /// `burst - 1` intervals.
    tolerance: Duration,
    max_addresses: usize,
    table: Mutex<Table>,
}

struct Table {
    /// When each address's bucket is full again; a past instant is a full bucket.
    full_at: HashMap<IpAddr, Instant>,
    last_sweep: Option<Instant>,
}

impl RateLimiter {
    pub(crate) fn new(rate: RateLimit, max_addresses: usize) -> RateLimiter {
        let interval = rate.per / rate.count.max(1);
        RateLimiter {
            interval,
            tolerance: interval * rate.burst.saturating_sub(1),
            max_addresses: max_addresses.max(1),
            table: Mutex::new(Table { full_at: HashMap::new(), last_sweep: None }),
        }
    }

    /// Takes a token for `ip` at `now`, or says how long until one is there.
    pub(crate) fn take(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut table = lock(&self.table);
        let full_at = table.full_at.get(&ip).copied().unwrap_or(now).max(now);
        let ahead = full_at - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        if !table.full_at.contains_key(&ip) && table.full_at.len() >= self.max_addresses {
            table.make_room(now, self.max_addresses);
        }
        table.full_at.insert(ip, full_at + self.interval);
        Ok(())
    }

    /// Addresses remembered now.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        lock(&self.table).full_at.len()
    }
}

impl Table {
    /// Frees one entry at least: the full buckets if a sweep is due, else an arbitrary address.
    fn make_room(&mut self, now: Instant, max: usize) {
        if self.last_sweep.is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY) {
            self.last_sweep = Some(now);
            self.full_at.retain(|_, full_at| *full_at > now);
        }
        if self.full_at.len() >= max {
            if let Some(&ip) = self.full_at.keys().next() {
                self.full_at.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(n.into())
    }

    #[test]
    fn a_burst_then_one_per_interval() {
        let limiter = RateLimiter::new("10/s:3".parse().unwrap(), 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.take(ip(1), t0).unwrap();
        }
        let wait = limiter.take(ip(1), t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100), "one token back after 1/10 s");
        assert!(limiter.take(ip(2), t0).is_ok(), "another address has its own bucket");
        assert!(limiter.take(ip(1), t0 + Duration::from_millis(99)).is_err());
        assert!(limiter.take(ip(1), t0 + Duration::from_millis(100)).is_ok());
        assert!(limiter.take(ip(1), t0 + Duration::from_millis(100)).is_err(), "and only one");
        // A quiet second refills the whole burst, no more.
        let later = t0 + Duration::from_secs(2);
        for _ in 0..3 {
            limiter.take(ip(1), later).unwrap();
        }
        assert!(limiter.take(ip(1), later).is_err());
    }

    #[test]
    fn the_table_stays_bounded_and_forgets_full_buckets_first() {
        let limiter = RateLimiter::new("1/s:1".parse().unwrap(), 4);
        let t0 = Instant::now();
        for n in 0..4 {
            limiter.take(ip(n), t0).unwrap();
        }
        // Address 0 refills; the others take again and stay busy.
        let t1 = t0 + Duration::from_secs(1);
        for n in 1..4 {
            limiter.take(ip(n), t1).unwrap();
        }
        limiter.take(ip(9), t1).unwrap();
        assert_eq!(limiter.tracked(), 4);
        for n in 1..4 {
            assert!(limiter.take(ip(n), t1).is_err(), "busy address {n} kept its bucket");
        }
        // A flood of new addresses within the sweep interval evicts, never grows.
        for n in 100..200 {
            limiter.take(ip(n), t1).unwrap();
            assert!(limiter.tracked() <= 4);
        }
    }
}
