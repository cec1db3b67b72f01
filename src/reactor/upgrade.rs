//! The HTTP phase of a connection: the upgrade to WebSocket and plain HTTP requests on the same
//! port (kept alive when the client asks, `100 Continue` when it waits for one).
//!
//! Owns: acting on `proto`'s parse of a request. Must not: parse HTTP itself. Invariants: a
//! connection is admitted (counted) before the application sees its upgrade and released if the
//! application refuses it; every refusal is an HTTP response with a reason, then the close; a
//! kept-alive connection gets the handshake deadline again for its next request.

use bytes::{Bytes, BytesMut};

use super::connection::Phase;
use super::flush::over_cap;
use super::service::Service;
use super::token::ConnId;
use super::worker::{get, Worker};
use crate::proto::handshake::{accept_response, parse_request};
use crate::proto::http::CONTINUE_RESPONSE;
use crate::proto::{Parsed, Request, RequestStatus, Response, Upgrade};

impl<S: Service> Worker<S> {
    /// Parses the request at the front of `data` and acts on it. Returns whether to go on
    /// reading `data` (after an upgrade, frames may follow in the same read).
    pub(super) fn receive_request(&mut self, id: ConnId, data: &mut BytesMut) -> bool {
        match parse_request(data, &self.limits.http) {
            Ok(RequestStatus::Partial { expects_continue }) => {
                let Some(conn) = get(&mut self.conns, id) else {
                    return false;
                };
                if expects_continue && !conn.continue_sent {
                    conn.continue_sent = true;
                    conn.wq.push(Bytes::from_static(CONTINUE_RESPONSE), &self.metrics.queued_bytes);
                    self.mark_dirty(id);
                }
                false
            }
            Ok(RequestStatus::Complete(Parsed::Upgrade(upgrade))) => {
                self.upgrade(id, upgrade);
                true
            }
            Ok(RequestStatus::Complete(Parsed::Http(request))) => {
                let kept = self.http_request(id, request);
                if !kept {
                    data.clear();
                }
                kept
            }
            Err(e) => {
                log::debug!("handshake refused: {e}");
                self.metrics.handshake_failures.add(1);
                self.metrics.handshake_bad_requests.add(1);
                self.finish_with(id, e.response());
                data.clear();
                false
            }
        }
    }

    fn upgrade(&mut self, id: ConnId, upgrade: Upgrade) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        let Ok(peer) = conn.stream.peer_addr() else {
            self.remove(id);
            return;
        };
        if let Err((counter, reason)) = self.admit_open(id, peer) {
            counter.add(1);
            self.metrics.handshake_failures.add(1);
            self.finish_with(id, Response::text(503, reason).encode(false));
            return;
        }
        // Admitted: counted until the connection leaves the open state.
        let protocol = upgrade.select_protocol(&self.limits.subprotocols);
        match self.service.open(&mut self.io, id, &upgrade, peer, protocol) {
            Ok(session) => {
                let response = accept_response(&upgrade.accept, protocol);
                self.handshaking = self.handshaking.saturating_sub(1);
                if let Some(conn) = self.conns.get_mut(id.slot as usize) {
                    conn.session = Some(session);
                    conn.phase = Phase::Open;
                    conn.wq.push(response, &self.metrics.queued_bytes);
                }
                self.metrics.handshakes.add(1);
                self.mark_dirty(id);
                let at = if self.limits.ping_ticks > 0 { self.now + self.limits.ping_ticks } else { 0 };
                self.set_deadline(id, at);
            }
            Err(response) => {
                self.release_open(id);
                self.metrics.handshake_failures.add(1);
                self.metrics.rejected_by_application.add(1);
                self.finish_with(id, response.encode(false));
            }
        }
        self.apply_commands();
    }

    /// Answers a plain HTTP request. Returns true when the connection stays open for the next
    /// request (HTTP keep-alive), false when it closes after the response.
    fn http_request(&mut self, id: ConnId, request: Request) -> bool {
        let Some(conn) = get(&mut self.conns, id) else {
            return false;
        };
        let Ok(peer) = conn.stream.peer_addr() else {
            self.remove(id);
            return false;
        };
        self.metrics.http_requests.add(1);
        let response = self.service.request(&mut self.io, &request, peer);
        self.apply_commands();
        let max_queued = self.limits.max_queued;
        let keep_alive = request.keep_alive()
            && get(&mut self.conns, id).is_some_and(|c| c.phase == Phase::Handshake && !over_cap(c, 0, max_queued));
        if !keep_alive {
            self.finish_with(id, response.encode(false));
            return false;
        }
        let Some(conn) = get(&mut self.conns, id) else {
            return false;
        };
        conn.wq.push(response.encode(true), &self.metrics.queued_bytes);
        conn.continue_sent = false;
        self.mark_dirty(id);
        // The next request gets the handshake timeout, which also ends an idle kept-alive
        // connection.
        let at = self.now + self.limits.handshake_ticks;
        self.set_deadline(id, at);
        true
    }
}
