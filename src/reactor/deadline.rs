//! Deadlines: each connection's one pending timeout (handshake, idle ping, pong, close) and
//! what happens when it passes.
//!
//! Owns: `set_deadline`, expiry and the per-phase reaction. Invariants: a connection has at
//! most one deadline; extending it costs nothing (the wheel entry is re-filed only when it
//! fires early), only an earlier deadline files a new entry; an open connection that stays
//! silent gets the service's idle call (by default a ping) at half the idle timeout and a 1001
//! close at the end of it, after the publishes still coalescing for it.

use std::mem;

use bytes::Bytes;

use super::connection::Phase;
use super::read_buf::ReadBuf;
use super::service::ServerClose;
use super::service::Service;
use super::timer::Tick;
use super::token::ConnId;
use super::worker::{get, Worker};
use crate::proto::Response;

impl<S: Service> Worker<S> {
    /// Sets the connection's deadline (0: none). Extending is free; only an earlier deadline
    /// than the one the wheel holds files a new entry.
    pub(super) fn set_deadline(&mut self, id: ConnId, at: Tick) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        conn.deadline = at;
        if at != 0 && (conn.timer_at == 0 || at < conn.timer_at) {
            conn.timer_at = self.timers.schedule(id, at);
        }
    }

    pub(super) fn expire_deadlines(&mut self) {
        let mut due = mem::take(&mut self.due);
        self.timers.expire(self.now, &mut due);
        for (id, at) in due.drain(..) {
            let Some(conn) = get(&mut self.conns, id) else {
                continue;
            };
            if conn.timer_at != at {
                continue; // superseded by an earlier entry
            }
            conn.timer_at = 0;
            if conn.deadline == 0 {
                continue;
            }
            if conn.deadline > self.now {
                conn.timer_at = self.timers.schedule(id, conn.deadline);
                continue;
            }
            self.on_deadline(id);
        }
        self.due = due;
    }

    fn on_deadline(&mut self, id: ConnId) {
        let Some(conn) = get(&mut self.conns, id) else {
            return;
        };
        match conn.phase {
            Phase::Handshake if conn.awaiting => {
                // The deferred response did not come in time. Closed without a response: the
                // handler may still answer, and its answer is then dropped.
                self.metrics.http_deferred_timeouts.add(1);
                conn.rbuf = ReadBuf::default();
                self.finish_with(id, Bytes::new());
            }
            Phase::Handshake => {
                self.metrics.handshake_failures.add(1);
                self.metrics.handshake_timeouts.add(1);
                if conn.tls.as_ref().is_some_and(|tls| tls.is_handshaking()) {
                    // Stalled in its TLS handshake: there is no channel to say 408 on.
                    return self.remove(id);
                }
                self.finish_with(id, Response::text(408, "handshake timeout").encode(false));
            }
            Phase::Open if !conn.ping_sent => {
                conn.ping_sent = true;
                let at = self.now + self.limits.pong_ticks;
                self.set_deadline(id, at);
                if let Some(conn) = get(&mut self.conns, id) {
                    if let Some(session) = conn.session.as_mut() {
                        self.service.idle(&mut self.io, id, session);
                        self.apply_commands();
                    }
                }
            }
            Phase::Open => {
                self.metrics.idle_timeouts.add(1);
                // What is still coalescing for it goes out before its close frame.
                if self.limits.coalesce_us > 0 {
                    self.deliver_pending_to(id);
                }
                self.close_by_server(id, ServerClose::IdleTimeout);
            }
            Phase::CloseSent | Phase::Lingering | Phase::HalfClosed => self.remove(id),
        }
    }
}
