//! The public API: `Server` to start, `Handler` to implement, `Ctx` to act (and, from other
//! threads, `Remote`, in remote.rs).
//!
//! Owns: the application-facing types and the adapter from `Handler` to the reactor's
//! `Service`. Must not: expose a mio type or any reactor internal. One handler instance runs per
//! worker thread (made by the factory closure in that thread), so a handler needs no locks; its
//! per-connection state lives in `Handler::Session`, stored next to the connection.

use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::config::Config;
use crate::metrics::{self, Snapshot};
use crate::proto;
use crate::reactor::{self, Io, Running, Service, Shared};
use crate::remote::{Pending, Remote};

pub use crate::message::Message;
pub use crate::proto::{CloseCode, Response};
pub use crate::reactor::{ConnId, ServerClose};

/// Refuses an upgrade with an HTTP status and a reason (sent as the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The HTTP status, e.g. 401 or 403.
    pub status: u16,
    /// The response body.
    pub reason: String,
}

impl Reject {
    /// A refusal with `status` and `reason`.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Reject { status, reason: reason.into() }
    }
}

/// An upgrade or plain HTTP request with its peer address. Dereferences to the parsed request
/// (method, path, query, headers, cookies, body).
pub struct Request<'a> {
    http: &'a proto::Request,
    peer: SocketAddr,
    protocol: Option<&'a str>,
}

impl Request<'_> {
    /// The client's address: the TCP peer's, or, when that peer is one of
    /// `Config::trusted_proxies`, the one its PROXY header or `X-Forwarded-For` names (port 0
    /// when the header gives none). The same address the per-address limits count.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The subprotocol the server will confirm (the client's first offer that `Config` lists).
    pub fn protocol(&self) -> Option<&str> {
        self.protocol
    }
}

impl Deref for Request<'_> {
    type Target = proto::Request;
    fn deref(&self) -> &proto::Request {
        self.http
    }
}

/// What a handler can do from inside a callback. Actions take effect when the callback returns,
/// in the order they were asked for; the queued bytes go out at the end of the loop turn.
///
/// A `ConnId` may name a connection of any worker: sends, closes and subscribes for another
/// worker's connection go through that worker's inbox and take effect at its next turn (in the
/// order they were asked for, per connection).
pub struct Ctx<'a> {
    io: &'a mut Io,
}

impl Ctx<'_> {
    /// Sends a text message.
    pub fn send_text(&mut self, id: ConnId, text: &str) {
        self.io.send_data(id, true, Bytes::copy_from_slice(text.as_bytes()));
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, id: ConnId, data: impl Into<Bytes>) {
        self.io.send_data(id, false, data.into());
    }

    /// Sends a message; large payloads are queued without copying.
    pub fn send(&mut self, id: ConnId, message: Message) {
        let text = message.is_text();
        self.io.send_data(id, text, message.into_bytes());
    }

    /// Sends a ping (payloads over 125 bytes are cut, as control frames allow no more).
    pub fn ping(&mut self, id: ConnId, payload: &[u8]) {
        self.io.ping(id, payload);
    }

    /// Subscribes a connection to a topic (no effect unless it is open). A closing connection
    /// leaves its topics by itself.
    pub fn subscribe(&mut self, id: ConnId, topic: &str) {
        self.io.subscribe(id, topic);
    }

    /// Takes a connection out of a topic. What is sent to the connection from then on reaches
    /// it after every message of the topic published before the unsubscribe, so a reply to it
    /// can mean "no more of this topic".
    pub fn unsubscribe(&mut self, id: ConnId, topic: &str) {
        self.io.unsubscribe(id, topic);
    }

    /// Sends a message to every subscriber of `topic`. The frame is encoded once; the frames
    /// published to a topic in one loop turn reach each subscriber as one shared buffer.
    pub fn publish(&mut self, topic: &str, message: Message) {
        let text = message.is_text();
        self.io.publish(topic, text, message.into_bytes(), None);
    }

    /// `publish`, except that the connection `except` does not receive it (the sender of a
    /// message that goes to everyone else). The frame is still encoded once; it reaches the
    /// other subscribers on `except`'s worker at once rather than in the turn's batch.
    pub fn publish_except(&mut self, topic: &str, message: Message, except: ConnId) {
        let text = message.is_text();
        self.io.publish(topic, text, message.into_bytes(), Some(except));
    }

    /// `publish` of a text message.
    pub fn publish_text(&mut self, topic: &str, text: &str) {
        self.io.publish(topic, true, Bytes::copy_from_slice(text.as_bytes()), None);
    }

    /// Sends a message to every open connection of the server.
    pub fn broadcast(&mut self, message: Message) {
        let text = message.is_text();
        self.io.broadcast(text, message.into_bytes());
    }

    /// True once the server is shutting down (for health checks to turn 503).
    pub fn draining(&self) -> bool {
        self.io.stopping()
    }

    /// The `n` topics with the most subscribers over all workers, most first.
    pub fn top_topics(&self, n: usize) -> Vec<(String, u64)> {
        self.io.top_topics(n)
    }

    /// Each worker's counters, in worker order.
    pub fn worker_stats(&self) -> Vec<Snapshot> {
        self.io.worker_stats()
    }

    /// The server's counters in the Prometheus text format (per worker, plus server-wide
    /// figures and the caller's `extra` lines: name, help, type, value).
    pub fn prometheus(&self, extra: &[(&str, &str, &str, u64)]) -> String {
        crate::remote::prometheus(self.io.shared(), extra)
    }

    /// A handle for acting on the server from another thread: hand it to a thread the handler
    /// starts. Its actions go through the workers' inboxes; see `Remote` for their order.
    pub fn remote(&self) -> Remote {
        Remote::new(self.io.shared().clone())
    }

    /// Answers the plain HTTP request of this `Handler::on_request` call later: the returned
    /// `Pending` takes the response, from this callback or from any thread (after I/O the
    /// event loop must not wait for). The `Response` that `on_request` returns is then
    /// discarded. The client waits at most `Config::handshake_timeout`; requests it pipelines
    /// meanwhile are answered after this one, in order. Only the first call in `on_request`
    /// defers; a second call, or one from any other callback, returns a `Pending` that owes
    /// nothing and whose `respond` does nothing.
    pub fn defer(&mut self) -> Pending {
        Pending::new(self.io.defer())
    }

    /// Index of the worker running this callback.
    pub fn worker(&self) -> usize {
        self.io.worker_index()
    }

    /// Starts the close handshake. 1005 and 1006 are never sent: such a code sends an empty close.
    pub fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        self.io.close(id, code, reason);
    }
}

/// An application: Ratchet's component interface, Swoole's `$server->on(...)`.
pub trait Handler: 'static {
    /// Per-connection state, created by `on_open` and handed back to `on_close`.
    type Session: 'static;

    /// A valid upgrade request arrived. Return the session to accept, or a `Reject`.
    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, request: &Request<'_>) -> Result<Self::Session, Reject>;

    /// A whole message arrived.
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, session: &mut Self::Session, message: Message);

    /// The connection is no longer open: `code` is the peer's close code, ours if we closed it,
    /// 1005 for a close without a code, 1006 if it ended without a close frame.
    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, session: Self::Session, code: CloseCode, reason: &str) {
        let _ = (ctx, id, session, code, reason);
    }

    /// The connection has been silent for half the idle timeout (`Config::idle_timeout`). The
    /// default sends a WebSocket ping, which a live peer answers; a protocol with a ping of its
    /// own (Pusher's `pusher:ping`) sends that instead. If the peer stays silent for the rest of
    /// the timeout, the connection is closed with 1001.
    fn on_idle(&mut self, ctx: &mut Ctx<'_>, id: ConnId, session: &mut Self::Session) {
        let _ = session;
        ctx.ping(id, b"");
    }

    /// The close code and reason sent when the server itself ends an open connection: after
    /// the idle timeout, or in a graceful stop. The default is 1001 with "idle timeout" or
    /// "server shutting down"; a protocol with codes of its own (Pusher's 4201, 4200) returns
    /// those. `on_close` follows with the same code.
    fn on_server_close(&mut self, session: &Self::Session, why: ServerClose) -> (CloseCode, &'static str) {
        let _ = session;
        why.default_close()
    }

    /// A plain HTTP request on the same port. The default answers 426 Upgrade Required.
    ///
    /// To answer later (after work on another thread), call `ctx.defer()` and answer through
    /// the `Pending` it returns; the `Response` returned here is then discarded.
    fn on_request(&mut self, ctx: &mut Ctx<'_>, request: &Request<'_>) -> Response {
        let _ = (ctx, request);
        Response::text(426, "this endpoint speaks WebSocket")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
    }
}

struct Adapter<H>(H);

impl<H: Handler> Service for Adapter<H> {
    type Session = H::Session;

    fn open(
        &mut self,
        io: &mut Io,
        id: ConnId,
        upgrade: &proto::Upgrade,
        peer: SocketAddr,
        protocol: Option<&str>,
    ) -> Result<H::Session, Response> {
        let request = Request { http: &upgrade.request, peer, protocol };
        self.0.on_open(&mut Ctx { io }, id, &request).map_err(|r| Response::text(r.status, r.reason))
    }

    fn message(&mut self, io: &mut Io, id: ConnId, session: &mut H::Session, text: bool, payload: Bytes) {
        let message = if text { Message::Text(payload) } else { Message::Binary(payload) };
        self.0.on_message(&mut Ctx { io }, id, session, message);
    }

    fn close(&mut self, io: &mut Io, id: ConnId, session: H::Session, code: CloseCode, reason: &str) {
        self.0.on_close(&mut Ctx { io }, id, session, code, reason);
    }

    fn idle(&mut self, io: &mut Io, id: ConnId, session: &mut H::Session) {
        self.0.on_idle(&mut Ctx { io }, id, session);
    }

    fn closing(&mut self, session: &H::Session, why: ServerClose) -> (CloseCode, &'static str) {
        self.0.on_server_close(session, why)
    }

    fn request(&mut self, io: &mut Io, request: &proto::Request, peer: SocketAddr) -> Response {
        self.0.on_request(&mut Ctx { io }, &Request { http: request, peer, protocol: None })
    }
}

/// Starts servers. `Server::new(Config::default()).run(|| MyHandler)` serves until stopped.
pub struct Server {
    config: Config,
}

impl Server {
    /// A server with these settings, not started yet.
    pub fn new(config: Config) -> Self {
        Server { config }
    }

    /// Validates the configuration, binds, and runs the workers on their own threads.
    /// `factory` builds one handler per worker, inside that worker's thread.
    pub fn start<H, F>(self, factory: F) -> io::Result<ServerHandle>
    where
        H: Handler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        self.config.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let running = reactor::spawn(&self.config, move || Adapter(factory()))?;
        Ok(ServerHandle { running: Some(running) })
    }

    /// `start`, then wait until the server stops.
    pub fn run<H, F>(self, factory: F) -> io::Result<()>
    where
        H: Handler,
        F: Fn() -> H + Send + Sync + 'static,
    {
        self.start(factory)?.join()
    }
}

/// A running server. Dropping it stops the server (without waiting).
pub struct ServerHandle {
    running: Option<Running>,
}

impl ServerHandle {
    fn running(&self) -> &Running {
        self.running.as_ref().expect("present until join")
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.running().local_addr
    }

    /// Where TLS is served: `local_addr` when `Config::listen` itself serves TLS, the bound
    /// `Config::tls_listen` address beside it, or `None` without a certificate.
    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.running().tls_addr
    }

    /// Reads `Config::tls_cert` and `tls_key` again: new handshakes use the new pair, open
    /// connections keep theirs. A pair that fails to load (unreadable, not PEM, a key that does
    /// not fit the certificate) is refused with the reason, and the serving pair stays.
    pub fn reload_tls(&self) -> io::Result<()> {
        self.running().shared.reload_tls()
    }

    /// A handle another thread (a SIGHUP handler) can use to call `reload_tls`.
    pub fn tls_reloader(&self) -> TlsReloader {
        TlsReloader { shared: self.running().shared.clone() }
    }

    /// The serving certificate's notAfter, when the server has TLS (also in the Prometheus text
    /// as `fanout_tls_cert_expiry_seconds`).
    pub fn tls_cert_expiry(&self) -> Option<SystemTime> {
        self.running().shared.tls_cert_expiry().map(reactor::unix_time)
    }

    /// Counters summed over all workers.
    pub fn stats(&self) -> Snapshot {
        metrics::merge(self.running().shared.metrics.iter().map(|m| &**m))
    }

    /// Each worker's counters, in worker order.
    pub fn worker_stats(&self) -> Vec<Snapshot> {
        self.running().shared.worker_stats()
    }

    /// Starts a graceful stop: no new connections; open ones get 1001 "going away" spread over
    /// the drain window, after their queued messages; the workers exit when none is left.
    pub fn shutdown(&self) {
        if self.running.is_some() {
            self.shutdown_trigger().shutdown();
        }
    }

    /// Waits for every worker to finish.
    pub fn join(mut self) -> io::Result<()> {
        let mut result = Ok(());
        for thread in self.running.take().map(|r| r.threads).unwrap_or_default() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(io::Error::other("worker thread panicked")),
            }
        }
        result
    }

    /// A handle for acting on the running server from any thread: send to, close, subscribe
    /// and unsubscribe connections, publish and broadcast.
    pub fn remote(&self) -> Remote {
        Remote::new(self.running().shared.clone())
    }

    /// A handle another thread (a signal handler) can use to call `shutdown`.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        ShutdownTrigger { shared: self.running().shared.clone() }
    }

    /// `shutdown` and `join`.
    pub fn stop(self) -> io::Result<()> {
        self.shutdown();
        self.join()
    }
}

/// Starts a graceful stop of a server from any thread; see `ServerHandle::shutdown`.
#[derive(Clone)]
pub struct ShutdownTrigger {
    shared: Arc<Shared>,
}

impl ShutdownTrigger {
    /// Starts the graceful stop; see `ServerHandle::shutdown`.
    pub fn shutdown(&self) {
        self.shared.request_stop();
    }
}

/// Reloads a server's TLS certificate from any thread; see `ServerHandle::reload_tls`.
#[derive(Clone)]
pub struct TlsReloader {
    shared: Arc<Shared>,
}

impl TlsReloader {
    /// See `ServerHandle::reload_tls`.
    pub fn reload(&self) -> io::Result<()> {
        self.shared.reload_tls()
    }

    /// See `ServerHandle::tls_cert_expiry`.
    pub fn cert_expiry(&self) -> Option<SystemTime> {
        self.shared.tls_cert_expiry().map(reactor::unix_time)
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}
