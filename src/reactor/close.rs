//! Every way a connection ends, in one place: failing it for a protocol violation, answering
//! the peer's close, closing it ourselves, a slow consumer, the peer's EOF, an I/O error.
//!
//! Owns: the moves out of the open state and out of the slab. Invariants: `on_close` runs
//! exactly once for a connection that reached `Open` (`leave_open` takes the session); the
//! connection leaves its topics and admission when it leaves the open state; once removed
//! from the slab its descriptor is closed (dropping the stream also removes it from epoll).

use bytes::Bytes;

use super::connection::Phase;
use super::service::{ServerClose, Service};
use super::token::ConnId;
use super::worker::{get, Worker};
use crate::proto::close::encode_close_frame;
use crate::proto::{CloseCode, ProtocolError};

impl<S: Service> Worker<S> {
    /// Fails the connection (§7.1.7): a close frame with the violation's code, then the TCP close.
    pub(super) fn fail(&mut self, id: ConnId, error: ProtocolError) {
        if get(&mut self.conns, id).is_none() {
            return;
        }
        log::debug!("connection {id}: {error}");
        self.metrics.protocol_errors.add(1);
        self.close_and_linger(id, error.close_code(), error.reason());
    }

    /// Our last word on a connection: a close frame with `code` if it is still open (none if
    /// ours already went out), then the TCP shutdown once it is written; `on_close` sees `code`.
    pub(super) fn close_and_linger(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        let was_open = get(&mut self.conns, id).is_some_and(|c| c.phase == Phase::Open);
        let frame = if was_open { encode_close_frame(code, reason) } else { Bytes::new() };
        self.finish_with(id, frame);
        if was_open {
            self.leave_open(id, code, reason);
        }
    }

    /// Queues a last response (HTTP or close) and shuts the connection down after it.
    pub(super) fn finish_with(&mut self, id: ConnId, bytes: Bytes) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        conn.wq.push(bytes, &self.metrics.queued_bytes);
        if conn.phase == Phase::Handshake {
            self.handshaking = self.handshaking.saturating_sub(1);
        }
        conn.phase = Phase::Lingering;
        self.mark_dirty(id);
        let at = self.now + self.limits.close_ticks;
        self.set_deadline(id, at);
    }

    /// Starts a server-side close handshake on an open connection.
    pub(super) fn close_conn(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        conn.wq.push(encode_close_frame(code, reason), &self.metrics.queued_bytes);
        conn.phase = Phase::CloseSent;
        self.mark_dirty(id);
        let at = self.now + self.limits.close_ticks;
        self.set_deadline(id, at);
        self.leave_open(id, code, reason);
    }

    /// Ends an open connection for a reason of the server's own, with the code and reason the
    /// service chooses for it.
    pub(super) fn close_by_server(&mut self, id: ConnId, why: ServerClose) {
        let Some(session) = get(&mut self.conns, id).and_then(|c| c.session.as_ref()) else {
            return;
        };
        let (code, reason) = self.service.closing(session, why);
        self.close_conn(id, code, reason);
    }

    /// Runs `on_close` once, when the connection stops being open.
    fn leave_open(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        let Some(session) = get(&mut self.conns, id).and_then(|c| c.session.take()) else {
            return;
        };
        let (bus, index) = (&self.shared.bus, self.index);
        self.topics.leave_all(id.slot, |topic| bus.uncount(index, topic));
        self.release_open(id);
        self.service.close(&mut self.io, id, session, code, reason);
        self.apply_commands();
    }

    /// The client reads slower than we send: drop what it has not taken and close with 1008,
    /// so its memory stays bounded whatever it does.
    pub(super) fn slow_consumer(&mut self, id: ConnId) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        if conn.phase != Phase::Open {
            return;
        }
        self.metrics.slow_consumers.add(1);
        conn.wq.clear(&self.metrics.queued_bytes);
        self.close_and_linger(id, CloseCode::POLICY_VIOLATION, "slow consumer");
    }

    /// The peer closed its side (read returned 0).
    pub(super) fn peer_closed(&mut self, id: ConnId) {
        // Best effort to deliver a close reply or error response already queued.
        if get(&mut self.conns, id).is_some_and(|c| !c.wq.is_empty()) {
            self.flush(id);
        }
        self.remove(id);
    }

    /// Drops the connection; `on_close` sees 1006 if it was still open.
    pub(super) fn remove(&mut self, id: ConnId) {
        if get(&mut self.conns, id).is_none() {
            return;
        }
        self.leave_open(id, CloseCode::ABNORMAL, "");
        if get(&mut self.conns, id).is_some() {
            // Dropping the stream closes the descriptor, which also removes it from epoll.
            let conn = self.conns.remove(id.slot as usize);
            if conn.phase == Phase::Handshake {
                self.handshaking = self.handshaking.saturating_sub(1);
            }
            self.metrics.queued_bytes.sub(conn.wq.queued_bytes() as u64);
            self.metrics.connections.sub(1);
        }
    }
}
