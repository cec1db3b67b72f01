//! New connections: accepting until WouldBlock, and asking admission (`admission.rs`) whether an
//! upgrade may open.
//!
//! Owns: the worker's accept loop with its pending-handshake bound, and the worker's side of
//! admission (which address each admitted connection was counted under). Invariants: a
//! connection admitted by `admit_open` is released exactly once, when it leaves the open state
//! (or when the application refuses it); a flood of half-open handshakes never holds more than
//! the worker's share of `max_pending_handshakes` descriptors, the rest being closed unread.

use std::io;
use std::net::SocketAddr;

use mio::Interest;

use super::admission::Refusal;
use super::connection::Connection;
use super::service::Service;
use super::token::ConnId;
use super::worker::Worker;
use crate::metrics::Counter;

/// Linux errno values for "too many open files" (system-wide, per process).
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;

impl<S: Service> Worker<S> {
    /// Accepts until the listener would block. A new connection starts in the handshake phase
    /// with the handshake deadline, which covers a TLS handshake too.
    /// `second`: the TLS listener beside a plain one, rather than the main listener. A
    /// connection from a TLS listener starts with its TLS state on the config serving now.
    pub(super) fn accept(&mut self, second: bool) {
        let tls = second || self.main_is_tls;
        loop {
            let listener = if second { &self.tls_listener } else { &self.listener };
            let Some(listener) = listener else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    self.metrics.accepted.add(1);
                    if self.handshaking >= self.limits.max_pending_handshakes {
                        // Dropped unread: a flood of half-open handshakes must not hold fds.
                        self.metrics.rejected_pending_handshakes.add(1);
                        continue;
                    }
                    let tls_state = match (tls, self.tls.as_mut()) {
                        (true, Some(worker_tls)) => match worker_tls.accept() {
                            Ok(state) => Some(state),
                            Err(e) => {
                                log::warn!("tls: {e}");
                                continue;
                            }
                        },
                        _ => None,
                    };
                    let proxy_header = self.owes_proxy_header(peer);
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
                    let mut conn = Connection::new(stream, peer, id.generation, tls_state);
                    conn.proxy_header = proxy_header;
                    entry.insert(conn);
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

    /// Admits connection `id` from client address `peer` to the open state, or names the counter of the
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
