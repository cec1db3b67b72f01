//! The callback API between the loop and the layer above it: `Service`, which the server layer
//! implements around the application's `Handler`, and `Io`, the outbox a callback acts through.
//!
//! Owns: `Service`, `Io` and `Command` (the worker applies the commands: `worker.rs`), and
//! `Deferred`, a plain HTTP request's response owed for later. A leaf: it knows no worker.
//! Invariants: a callback never touches a connection directly; sends and closes for this
//! worker's connections are queued as commands and applied, in order, as soon as the callback
//! returns; those for another worker's connections, and every subscribe, publish and broadcast,
//! go to the bus at once, so that a caller holding its own lock (the gateway's history) orders
//! them across workers. An unsubscribe goes to the connection's own inbox, where publishes made
//! before it may still wait: until the worker next takes its inbox, what is sent to or closes
//! that connection follows it there (`behind_inbox`), so it reaches the client after the
//! topic's last message for it, not before. The frame encoding and bus calls are `Shared`'s,
//! which the server layer's `Remote` uses too.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::shared::Shared;
use super::token::ConnId;
use crate::metrics::Snapshot;
use crate::proto::frame::{encode_data_frame, encode_frame, OpCode, MAX_CONTROL_PAYLOAD};
use crate::proto::{CloseCode, Request, Response, Upgrade};

/// What the loop calls. Implemented by server.rs around the application's `Handler`.
pub(crate) trait Service: 'static {
    type Session;
    /// A valid upgrade arrived; return the session or the response that refuses it.
    fn open(
        &mut self,
        io: &mut Io,
        id: ConnId,
        upgrade: &Upgrade,
        peer: SocketAddr,
        protocol: Option<&str>,
    ) -> Result<Self::Session, Response>;
    /// A whole message: text (validated UTF-8) or binary.
    fn message(&mut self, io: &mut Io, id: ConnId, session: &mut Self::Session, text: bool, payload: Bytes);
    /// The connection left the open state (close frame either way, error, EOF, timeout).
    fn close(&mut self, io: &mut Io, id: ConnId, session: Self::Session, code: CloseCode, reason: &str);
    /// A plain HTTP request on the WebSocket port. If the callback called `Io::defer`, the
    /// returned response is discarded and the answer comes later through the `Deferred`.
    fn request(&mut self, io: &mut Io, request: &Request, peer: SocketAddr) -> Response;
    /// The open connection has been silent for half the idle timeout: say something that makes
    /// a live peer answer (a ping, or the application protocol's own ping).
    fn idle(&mut self, io: &mut Io, id: ConnId, session: &mut Self::Session);
    /// The close code and reason the server sends when it ends an open connection itself.
    fn closing(&mut self, session: &Self::Session, why: ServerClose) -> (CloseCode, &'static str);
}

/// Why the server itself ends an open connection (not the peer, not the application).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerClose {
    /// Silent for the whole idle timeout, the idle call included. Default 1001 "idle timeout".
    IdleTimeout,
    /// The graceful stop. Default 1001 "server shutting down".
    Stopping,
}

impl ServerClose {
    /// The code and reason the library sends unless the application says otherwise.
    pub fn default_close(self) -> (CloseCode, &'static str) {
        match self {
            ServerClose::IdleTimeout => (CloseCode::GOING_AWAY, "idle timeout"),
            ServerClose::Stopping => (CloseCode::GOING_AWAY, "server shutting down"),
        }
    }
}

pub(crate) enum Command {
    /// Queue `head` then `tail` (often empty) on an open connection. A `ping` is queued whatever
    /// the queue holds (it is small and keeps a live peer from being taken for idle); data is
    /// subject to the queue cap.
    Send { id: ConnId, head: Bytes, tail: Bytes, ping: bool },
    /// Start the close handshake.
    Close { id: ConnId, code: CloseCode, reason: String },
}

/// What a callback asks of the loop. See the module doc for when each request takes effect.
pub(crate) struct Io {
    pub(super) commands: Vec<Command>,
    pub(super) shared: Arc<Shared>,
    pub(super) worker: usize,
    /// The plain HTTP request being answered (its connection, whether it asked for
    /// keep-alive), set only around `Service::request`; `defer` takes it.
    pub(super) request: Option<(ConnId, bool)>,
    /// `defer` was called for that request.
    pub(super) deferred: bool,
    /// This worker's connections with an unsubscribe in the inbox: their sends and closes go
    /// through the inbox behind it until the worker takes the inbox (`take_inbox`).
    pub(super) behind_inbox: Vec<ConnId>,
}

/// An HTTP response owed to a connection waiting in its HTTP phase (`Io::defer`). Answered at
/// most once, from any thread; dropped unanswered, it sends `500` "no response", so a client
/// never waits for nothing. One made outside `Service::request` owes nothing and does nothing.
pub(crate) struct Deferred {
    owed: Option<Owed>,
}

struct Owed {
    shared: Arc<Shared>,
    id: ConnId,
    keep_alive: bool,
}

impl Owed {
    fn send(self, response: &Response) {
        // Encoded here, on the answering thread; the worker only queues the bytes.
        self.shared.respond(self.id, response.encode(self.keep_alive));
    }
}

impl Deferred {
    /// Sends the response to the connection's worker, which writes it if the connection still
    /// waits for it.
    pub(crate) fn respond(mut self, response: &Response) {
        if let Some(owed) = self.owed.take() {
            owed.send(response);
        }
    }

    /// True when this owes a response (made inside `Service::request`, not answered yet).
    pub(crate) fn is_owed(&self) -> bool {
        self.owed.is_some()
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if let Some(owed) = self.owed.take() {
            owed.send(&Response::text(500, "no response"));
        }
    }
}

impl Io {
    /// Queues a data frame (text or binary) on an open connection of any worker.
    pub(crate) fn send_data(&mut self, id: ConnId, text: bool, payload: Bytes) {
        let (head, tail) = encode_data_frame(text, payload);
        self.send_frame(id, head, tail, false);
    }

    /// Queues a ping; payloads longer than a control frame allows are cut to 125 bytes.
    pub(crate) fn ping(&mut self, id: ConnId, payload: &[u8]) {
        let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
        self.send_frame(id, encode_frame(OpCode::Ping, payload), Bytes::new(), true);
    }

    /// A frame for `id`: a command when the connection is this worker's, else an envelope to
    /// its worker.
    fn send_frame(&mut self, id: ConnId, head: Bytes, tail: Bytes, ping: bool) {
        if self.is_direct(id) {
            self.commands.push(Command::Send { id, head, tail, ping });
        } else {
            self.shared.send_frame(self.worker, id, head, tail, ping);
        }
    }

    /// Subscribes a connection of any worker (the subscribe is queued on that worker).
    pub(crate) fn subscribe(&mut self, id: ConnId, topic: &str) {
        self.shared.bus.subscribe(self.worker, id, topic);
    }

    /// Takes a connection out of a topic (the unsubscribe is queued on its worker). What is sent
    /// to the connection afterwards reaches it after the topic's messages published before.
    pub(crate) fn unsubscribe(&mut self, id: ConnId, topic: &str) {
        self.shared.bus.unsubscribe(self.worker, id, topic);
        if id.worker() == self.worker && !self.behind_inbox.contains(&id) {
            self.behind_inbox.push(id);
        }
    }

    /// Whether a send or close for `id` is a command applied when the callback returns, rather
    /// than an envelope in its worker's inbox (another worker's connection, or one of ours with
    /// an unsubscribe in the inbox).
    fn is_direct(&self, id: ConnId) -> bool {
        id.worker() == self.worker && !self.behind_inbox.contains(&id)
    }

    /// The worker is about to apply every envelope queued so far: sends go direct again.
    pub(super) fn take_inbox(&mut self) {
        self.behind_inbox.clear();
    }

    /// Encodes the frame once and hands it to every worker with subscribers of `topic`, except
    /// to the connection `except`.
    pub(crate) fn publish(&mut self, topic: &str, text: bool, payload: Bytes, except: Option<ConnId>) {
        self.shared.publish(self.worker, topic, text, payload, except);
    }

    pub(crate) fn broadcast(&mut self, text: bool, payload: Bytes) {
        self.shared.broadcast(self.worker, text, payload);
    }

    /// What the server shares, for a handle that acts from any thread (`Remote`).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Answers the plain HTTP request of this `Service::request` call later, through the
    /// returned `Deferred` (the first call only; any other call, or one from another callback,
    /// gets a `Deferred` that owes nothing).
    pub(crate) fn defer(&mut self) -> Deferred {
        let Some((id, keep_alive)) = self.request.take() else {
            return Deferred { owed: None };
        };
        self.deferred = true;
        Deferred { owed: Some(Owed { shared: self.shared.clone(), id, keep_alive }) }
    }

    /// True once the server has begun its graceful stop.
    pub(crate) fn stopping(&self) -> bool {
        self.shared.bus.stop_requested()
    }

    /// The `n` topics with the most subscribers, over all workers.
    pub(crate) fn top_topics(&self, n: usize) -> Vec<(String, u64)> {
        self.shared.bus.top_topics(n)
    }

    /// Each worker's counters, in worker order.
    pub(crate) fn worker_stats(&self) -> Vec<Snapshot> {
        self.shared.worker_stats()
    }

    pub(crate) fn worker_index(&self) -> usize {
        self.worker
    }

    /// Starts the close handshake of a connection of any worker.
    pub(crate) fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        if self.is_direct(id) {
            self.commands.push(Command::Close { id, code, reason: reason.to_owned() });
        } else {
            self.shared.close(self.worker, id, code, reason);
        }
    }
}
