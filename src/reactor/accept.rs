//! New connections: accepting until WouldBlock, and admission, which decides who may open a
//! WebSocket.
//!
//! Owns: `Admission` (the server-wide count of open WebSocket connections, in total and per peer
//! address) and the worker's accept loop with its pending-handshake bound. Invariants: a
//! connection counted by `admit` is released exactly once, when it leaves the open state (or
//! when the application refuses it); a flood of half-open handshakes never holds more than the
//! worker's share of `max_pending_handshakes` descriptors, the rest being closed unread.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use mio::Interest;

use super::bus::lock;
use super::connection::Connection;
use super::service::Service;
use super::token::ConnId;
use super::worker::Worker;
use crate::metrics::Counter;

/// Linux errno values for "too many open files" (system-wide, per process).
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;

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
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Admission {
        Admission { open: AtomicUsize::new(0), per_ip: Mutex::new(HashMap::new()), max_total, max_per_ip }
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
}

impl<S: Service> Worker<S> {
    /// Accepts until the listener would block. A new connection starts in the handshake phase
    /// with the handshake deadline.
    pub(super) fn accept(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, _peer)) => {
                    self.metrics.accepted.add(1);
                    if self.handshaking >= self.limits.max_pending_handshakes {
                        // Dropped unread: a flood of half-open handshakes must not hold fds.
                        self.metrics.rejected_pending_handshakes.add(1);
                        continue;
                    }
                    let entry = self.conns.vacant_entry();
                    let Ok(slot) = u32::try_from(entry.key()) else {
                        continue;
                    };
                    self.next_generation =
                        if self.next_generation >= ConnId::MAX_GENERATION { 1 } else { self.next_generation + 1 };
                    let id = ConnId { worker: self.index as u16, slot, generation: self.next_generation };
                    if let Err(e) = self.poll.registry().register(&mut stream, id.token(), Interest::READABLE) {
                        log::warn!("register accepted socket: {e}");
                        continue;
                    }
                    entry.insert(Connection::new(stream, id.generation));
                    self.handshaking += 1;
                    self.metrics.connections.add(1);
                    let at = self.now + self.limits.handshake_ticks;
                    self.set_deadline(id, at);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(ENFILE | EMFILE)) => {
                    // EMFILE / ENFILE: the pending connection stays in the backlog; the listener
                    // is edge-triggered, so retry on a timer rather than wait for a new SYN.
                    log::warn!("accept: {e}; retrying shortly");
                    self.accept_paused = true;
                    return;
                }
                Err(e) => log::debug!("accept: {e}"),
            }
        }
    }

    /// Admits connection `id` from `peer` to the open state, or names the counter of the
    /// refusal and its reason. Refused during a graceful stop.
    pub(super) fn admit_open(&mut self, id: ConnId, peer: SocketAddr) -> Result<(), (&Counter, &'static str)> {
        if self.stop.is_some() {
            return Err((&self.metrics.rejected_draining, "server shutting down"));
        }
        match self.shared.admission.admit(peer.ip()) {
            Ok(()) => {
                if self.limits.per_ip {
                    self.peer_ips.insert(id.slot, peer.ip());
                }
                Ok(())
            }
            Err(Refusal::Total) => Err((&self.metrics.rejected_max_connections, "too many connections")),
            Err(Refusal::PerIp) => Err((&self.metrics.rejected_per_ip, "too many connections from this address")),
        }
    }

    /// Undoes `admit_open` for `id`.
    pub(super) fn release_open(&mut self, id: ConnId) {
        let ip = self.peer_ips.remove(&id.slot);
        self.shared.admission.release(ip);
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
    }
}
