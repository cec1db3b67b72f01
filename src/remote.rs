//! `Remote`: acting on a running server from any thread (an application's own I/O thread, a
//! Redis client, a timer), where no callback and so no `Ctx` is at hand; and `Pending`, an HTTP
//! response such a thread may give later.
//!
//! Owns: `Remote` (its read-only figures too: counters, top topics, the Prometheus text, the
//! one body `Ctx::prometheus` uses) and `Pending`. Must not: touch a worker's state; every
//! action (a response too) is an envelope in the target worker's inbox, applied at that worker's next turn,
//! exactly as a callback's action for another worker's connection is. Invariants: the actions
//! one thread makes reach each worker in the order they were made (an inbox is FIFO),
//! interleaved with the callbacks' bus actions in the order they were enqueued; a remote
//! publish is counted in no worker's `publishes`, because each counter has one writer, its
//! worker.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::message::Message;
use crate::metrics::{self, Snapshot};
use crate::proto::{CloseCode, Response};
use crate::reactor::{ConnId, Deferred, Shared, NO_WORKER};

/// Acts on a running server from any thread: `Send + Sync + Clone`, cheap to clone (one
/// reference count). Made by `ServerHandle::remote` or, inside a callback, `Ctx::remote`.
///
/// The methods mean what `Ctx`'s methods of the same names mean, with one difference: every
/// action goes through the inbox of the worker it concerns (and wakes that worker), where a
/// callback's sends and closes for its own worker's connections skip the inbox. Each worker's
/// inbox is FIFO, so the actions made from one thread reach a worker in the order they were
/// made, interleaved with the callbacks' publishes, subscribes and cross-worker sends in the
/// order they were enqueued. A thread that sends a connection the history it missed, then
/// subscribes it, then publishes, has that connection receive the history first and the
/// publish after it. A subscribe or unsubscribe takes effect between the publishes before and
/// after it, and a send or close reaches its connection after what was published before it to
/// the connection's topics.
///
/// A publish made here is not counted in `Snapshot::publishes` (each worker's counters have
/// one writer, the worker); its deliveries are.
#[derive(Clone)]
pub struct Remote {
    shared: Arc<Shared>,
}

impl Remote {
    pub(crate) fn new(shared: Arc<Shared>) -> Remote {
        Remote { shared }
    }

    /// Sends a message to one connection; large payloads are queued without copying. A
    /// connection that is not open (closed, or still in its handshake) gets nothing.
    pub fn send(&self, id: ConnId, message: Message) {
        let text = message.is_text();
        self.shared.send_data(NO_WORKER, id, text, message.into_bytes());
    }

    /// Sends a text message to one connection.
    pub fn send_text(&self, id: ConnId, text: &str) {
        self.shared.send_data(NO_WORKER, id, true, Bytes::copy_from_slice(text.as_bytes()));
    }

    /// Starts the close handshake of a connection. 1005 and 1006 are never sent: such a code
    /// sends an empty close.
    pub fn close(&self, id: ConnId, code: CloseCode, reason: &str) {
        self.shared.close(NO_WORKER, id, code, reason);
    }

    /// Subscribes a connection to a topic (no effect unless it is open when its worker applies
    /// it). A publish made after this call reaches the connection.
    pub fn subscribe(&self, id: ConnId, topic: &str) {
        self.shared.bus.subscribe(NO_WORKER, id, topic);
    }

    /// Takes a connection out of a topic.
    pub fn unsubscribe(&self, id: ConnId, topic: &str) {
        self.shared.bus.unsubscribe(NO_WORKER, id, topic);
    }

    /// Sends a message to every subscriber of `topic`, on every worker. The frame is encoded
    /// once, here, on the calling thread.
    pub fn publish(&self, topic: &str, message: Message) {
        let text = message.is_text();
        self.shared.publish(NO_WORKER, topic, text, message.into_bytes(), None);
    }

    /// `publish`, except that the connection `except` does not receive it.
    pub fn publish_except(&self, topic: &str, message: Message, except: ConnId) {
        let text = message.is_text();
        self.shared.publish(NO_WORKER, topic, text, message.into_bytes(), Some(except));
    }

    /// Sends a message to every open connection of the server.
    pub fn broadcast(&self, message: Message) {
        let text = message.is_text();
        self.shared.broadcast(NO_WORKER, text, message.into_bytes());
    }

    /// True once the server is shutting down.
    pub fn draining(&self) -> bool {
        self.shared.bus.stop_requested()
    }

    /// The number of worker threads (a `ConnId`'s `worker()` is below it).
    pub fn workers(&self) -> usize {
        self.shared.workers()
    }

    /// The `n` topics with the most subscribers over all workers, most first (as
    /// `Ctx::top_topics`), for a thread or another server that reports on this one.
    pub fn top_topics(&self, n: usize) -> Vec<(String, u64)> {
        self.shared.bus.top_topics(n)
    }

    /// Each worker's counters, in worker order (as `Ctx::worker_stats`).
    pub fn worker_stats(&self) -> Vec<Snapshot> {
        self.shared.worker_stats()
    }

    /// The server's counters in the Prometheus text format, the same text as
    /// `Ctx::prometheus`: an admin listener served by a second server reports on this one.
    pub fn prometheus(&self, extra: &[(&str, &str, &str, u64)]) -> String {
        prometheus(&self.shared, extra)
    }
}

/// The Prometheus text of the server `shared` belongs to: per worker, the server-wide figures,
/// then the caller's `extra` lines (name, help, type, value). One body for `Ctx` and `Remote`.
pub(crate) fn prometheus(shared: &Shared, extra: &[(&str, &str, &str, u64)]) -> String {
    let bus = &shared.bus;
    let mut all = vec![
        ("websockets", "Open WebSocket connections, all workers.", "gauge", shared.admission.open_count() as u64),
        ("topics", "Topics with at least one subscriber.", "gauge", bus.topic_count() as u64),
        (
            "inbox_overflows_total",
            "Cross-worker envelopes dropped because an inbox was full.",
            "counter",
            bus.inbox_overflows(),
        ),
        ("draining", "1 while the server shuts down.", "gauge", u64::from(bus.stop_requested())),
    ];
    if let Some(expiry) = shared.tls_cert_expiry() {
        all.push((
            "tls_cert_expiry_seconds",
            "The serving TLS certificate's notAfter, in seconds since the Unix epoch.",
            "gauge",
            expiry,
        ));
    }
    all.extend_from_slice(extra);
    metrics::prometheus(&shared.worker_stats(), &all)
}

/// The HTTP response owed to a client whose request `Handler::on_request` deferred
/// (`Ctx::defer`). `Send`: answer it from any thread, or inside the same callback.
///
/// The response goes to the connection's worker through its inbox and is written if the client
/// is still connected and waiting (within `Config::handshake_timeout` of the request; after
/// that the connection was closed without a response, and a late answer is dropped). Dropping
/// a `Pending` unanswered sends `500` with the text "no response", so a client never hangs. A
/// `Pending` from `Ctx::defer` called anywhere but `on_request` owes nothing: `respond` and
/// dropping it do nothing.
pub struct Pending {
    deferred: Deferred,
}

impl Pending {
    pub(crate) fn new(deferred: Deferred) -> Pending {
        Pending { deferred }
    }

    /// Sends `response` to the client (encoded here, on the calling thread, with the
    /// keep-alive the request asked for). A kept-alive connection then reads its next request,
    /// including any the client sent while it waited.
    pub fn respond(self, response: Response) {
        self.deferred.respond(&response);
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending").field("owed", &self.deferred.is_owed()).finish()
    }
}
