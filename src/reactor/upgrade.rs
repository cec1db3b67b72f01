//! The HTTP phase of a connection: the upgrade to WebSocket and plain HTTP requests on the same
//! port (kept alive when the client asks, `100 Continue` when it waits for one).
//!
//! Owns: acting on `proto`'s parse of a request, and deferred responses (`Ctx::defer`). Must
//! not: parse HTTP itself. Invariants: a request is acted on for its client address
//! (`proxy.rs`: a trusted proxy's word included), and an upgrade takes one of that address's
//! handshake tokens before admission (none left: 429 with `Retry-After`); a connection is
//! admitted (counted) before the application sees its upgrade and released if the application
//! refuses it; every refusal is an HTTP response with a reason, then the close; a kept-alive connection gets the handshake
//! deadline again for its next request. A connection awaiting a deferred response stays in the
//! HTTP phase under the handshake deadline and parses nothing: what arrives meanwhile waits
//! unparsed in its own buffer (at most `max_request_bytes`) and is read once the response is
//! queued, so pipelined requests are answered in order; a response for a connection that
//! closed, or that no longer awaits one, is dropped.

use std::mem;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::connection::Phase;
use super::deflate::Compression;
use super::flush::over_cap;
use super::read_buf::ReadBuf;
use super::service::Service;
use super::token::ConnId;
use super::worker::{get, Worker};
use crate::proto::handshake::{accept_response_with, parse_request};
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
        let Some(peer) = self.client_addr(id, &upgrade.request) else {
            self.remove(id);
            return;
        };
        if self.stop.is_none() {
            if let Err(wait) = self.shared.admission.handshake_token(peer.ip(), Instant::now()) {
                log::debug!("upgrade from {peer} refused: over handshake_rate_per_ip");
                self.metrics.rejected_handshake_rate.add(1);
                self.metrics.handshake_failures.add(1);
                let response = Response::text(429, "too many handshakes from this address")
                    .header("Retry-After", retry_after(wait).to_string());
                self.finish_with(id, response.encode(false));
                return;
            }
        }
        if let Err((counter, reason)) = self.admit_open(id, peer) {
            log::debug!("upgrade from {peer} refused: {reason}");
            counter.add(1);
            self.metrics.handshake_failures.add(1);
            self.finish_with(id, Response::text(503, reason).encode(false));
            return;
        }
        // Admitted: counted until the connection leaves the open state.
        let protocol = upgrade.select_protocol(&self.limits.subprotocols);
        match self.service.open(&mut self.io, id, &upgrade, peer, protocol) {
            Ok(session) => {
                // permessage-deflate: an offer that cannot be honoured is declined, never refused.
                let deflate = if self.deflate.enabled { upgrade.negotiate_deflate() } else { None };
                let extensions = deflate.as_ref().map(|a| a.response());
                let response = accept_response_with(&upgrade.accept, protocol, extensions.as_deref());
                self.handshaking = self.handshaking.saturating_sub(1);
                if let Some(conn) = self.conns.get_mut(id.slot as usize) {
                    conn.session = Some(session);
                    conn.phase = Phase::Open;
                    conn.hop = None;
                    conn.compression = Compression::of(deflate.as_ref());
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
        let Some(peer) = self.client_addr(id, &request) else {
            self.remove(id);
            return false;
        };
        self.metrics.http_requests.add(1);
        let asked_keep_alive = request.keep_alive();
        self.io.request = Some((id, asked_keep_alive));
        let response = self.service.request(&mut self.io, &request, peer);
        self.io.request = None;
        let deferred = mem::take(&mut self.io.deferred);
        self.apply_commands();
        if deferred {
            // `response` is discarded: the answer comes through the `Deferred`. Going on
            // reading lets `hold` keep whatever follows.
            self.await_response(id, asked_keep_alive);
            return true;
        }
        let max_queued = self.limits.max_queued;
        let keep_alive = asked_keep_alive
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

    /// The handler deferred its response: the connection waits for it under the handshake
    /// deadline, which also bounds how long the client waits.
    fn await_response(&mut self, id: ConnId, keep_alive: bool) {
        self.metrics.http_deferred.add(1);
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        conn.awaiting = true;
        conn.keep_alive = keep_alive;
        let at = self.now + self.limits.handshake_ticks;
        self.set_deadline(id, at);
    }

    /// Keeps the bytes that arrive while a deferred response is awaited (pipelined requests)
    /// unparsed: they are parsed once the response is out, so requests are answered in order.
    /// Once `max_request_bytes` are held, reading pauses (`read_paused`): what else the client
    /// pipelines waits in the kernel, and TCP slows the client down, instead of the connection
    /// being dropped with requests on it.
    pub(super) fn hold(&mut self, id: ConnId, data: &mut BytesMut) {
        let limit = self.limits.http.max_request_bytes;
        if let Some(conn) = get(&mut self.conns, id) {
            conn.read_paused |= data.len() >= limit;
        }
    }

    /// A deferred response arrived (`Envelope::Respond`). It is written if connection `id` is
    /// still the one that asked and still waits for it; otherwise (closed, timed out) dropped.
    pub(super) fn respond_deferred(&mut self, id: ConnId, response: Bytes) {
        let max_queued = self.limits.max_queued;
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        if conn.phase != Phase::Handshake || !conn.awaiting {
            return;
        }
        conn.awaiting = false;
        if !conn.keep_alive || over_cap(conn, 0, max_queued) {
            // Requests sent after this one are never answered. Over the cap, a response that
            // says keep-alive is followed by the close, which HTTP/1.1 allows after any
            // response (RFC 9112 §9.6).
            conn.rbuf = ReadBuf::default();
            self.finish_with(id, response);
            return;
        }
        conn.wq.push(response, &self.metrics.queued_bytes);
        conn.continue_sent = false;
        let mut held = mem::take(&mut conn.rbuf);
        let paused = mem::take(&mut conn.read_paused);
        self.mark_dirty(id);
        let at = self.now + self.limits.handshake_ticks;
        self.set_deadline(id, at);
        // The requests that arrived meanwhile, answered now and in order (one may be deferred
        // in turn, or be an upgrade).
        if !held.is_empty() {
            self.process(id, &mut held);
        }
        self.stash(id, held, true);
        if paused {
            // No new edge announces what waited in the kernel: read it next turn.
            self.read_again.push(id);
        }
    }
}

/// `Retry-After` in whole seconds, rounded up: a client that waits that long finds a token.
fn retry_after(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}
