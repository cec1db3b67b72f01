//! Admission: the server-wide count of open WebSocket connections, in total and per client
//! address, against the configured limits, and the per-address handshake rate. Shared by every
//! worker.
//!
//! Owns: `Admission` and `Refusal`. Invariants: the count never passes `max_connections`, nor
//! `max_connections_per_ip` for one address; an address whose count drops to zero is forgotten,
//! so the table holds only addresses with open connections. The address is the client's as the
//! worker established it (a trusted proxy's word included), the same at admit and release. A
//! leaf: it knows no worker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::bus::lock;
use super::rate_limit::RateLimiter;
use crate::config::RateLimit;

/// Why admission turned a connection away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` are open.
    Total,
    /// `max_connections_per_ip` are open from this address.
    PerIp,
}

/// Open WebSocket connections over all workers, against the configured limits.
pub(crate) struct Admission {
    open: AtomicUsize,
    /// Open connections per peer address, kept only when `max_per_ip` is set.
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    max_total: usize,
    /// 0: no per-address limit.
    max_per_ip: usize,
    /// `handshake_rate_per_ip`, when set.
    rate: Option<RateLimiter>,
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Admission {
        Admission { open: AtomicUsize::new(0), per_ip: Mutex::new(HashMap::new()), max_total, max_per_ip, rate: None }
    }

    /// Adds the per-address handshake rate, remembering at most `max_addresses` addresses.
    pub(crate) fn with_handshake_rate(mut self, rate: Option<RateLimit>, max_addresses: usize) -> Admission {
        self.rate = rate.map(|rate| RateLimiter::new(rate, max_addresses));
        self
    }

    /// Takes one of `ip`'s handshake tokens, or says how long until one is back.
    pub(crate) fn handshake_token(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        self.rate.as_ref().map_or(Ok(()), |rate| rate.take(ip, now))
    }

    /// Counts a new open connection from `ip` if the limits allow it.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<(), Refusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_total {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        if self.max_per_ip > 0 {
            let mut per_ip = lock(&self.per_ip);
            let n = per_ip.entry(ip).or_insert(0);
            if *n as usize >= self.max_per_ip {
                drop(per_ip);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::PerIp);
            }
            *n += 1;
        }
        Ok(())
    }

    /// Undoes `admit` for a connection from `ip` (`None` when it was not counted per address).
    pub(crate) fn release(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            let mut map = lock(&self.per_ip);
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// Open WebSocket connections over all workers.
    pub(crate) fn open_count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Addresses with open connections counted per address.
    #[cfg(test)]
    pub(crate) fn addresses(&self) -> usize {
        lock(&self.per_ip).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_limits_total_and_per_address() {
        let admission = Admission::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(admission.admit(a).is_ok() && admission.admit(a).is_ok());
        assert_eq!(admission.admit(a), Err(Refusal::PerIp), "third from the same address");
        assert!(admission.admit(b).is_ok());
        assert_eq!(admission.admit(b), Err(Refusal::Total), "total reached");
        admission.release(Some(a));
        assert!(admission.admit(b).is_ok());
        assert_eq!(admission.open_count(), 3);
        admission.release(Some(a));
        admission.release(Some(b));
        admission.release(Some(b));
        assert_eq!((admission.open_count(), admission.addresses()), (0, 0), "balanced, and forgotten");
    }

    #[test]
    fn the_handshake_rate_is_off_unless_set() {
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let open = Admission::new(3, 0);
        assert!((0..100).all(|_| open.handshake_token(a, now).is_ok()));
        let limited = Admission::new(3, 0).with_handshake_rate(Some("1/s:2".parse().unwrap()), 10);
        assert!(limited.handshake_token(a, now).is_ok() && limited.handshake_token(a, now).is_ok());
        assert_eq!(limited.handshake_token(a, now), Err(Duration::from_secs(1)));
    }
}
