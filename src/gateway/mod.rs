//! The `fanout` gateway: channels, tokens, sequence numbers, history and the HTTP API, built only
//! on the public library API (`Server`, `Handler`, `Ctx`).
//!
//! Owns: `Gateway` (the handler), its per-connection `Session`, and `start`. Invariants: a
//! channel's `seq` grows by one per publish however it arrives (WebSocket or HTTP); a resuming
//! client gets the missed messages in order before any live one, with no gap and no duplicate
//! (a subscribe is applied after its replay is queued, and the library delivers a topic's
//! pending batch before a new member joins it); a client's JSON mistakes get an `error` op and
//! leave the connection usable.

pub mod auth;
pub mod history;
mod http;
pub mod protocol;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::config::{Config, GatewayConfig};
use crate::server::{CloseCode, ConnId, Ctx, Handler, Message, Reject, Request, Response, Server, ServerHandle};
use auth::Permissions;
use history::{History, TooManyChannels};
use protocol::{Op, OpError};

/// The subprotocol the gateway speaks; selected when a client offers it (browsers that send a
/// `bearer.<token>` entry must also offer this one, since they require the server to pick one).
pub const SUBPROTOCOL: &str = "fanout.v1";

/// State shared by the gateway's handlers (one per worker).
struct Shared {
    config: GatewayConfig,
    anonymous: bool,
    history: Mutex<History>,
}

/// The fanout application.
pub struct Gateway {
    shared: Arc<Shared>,
}

/// What the gateway keeps per connection.
pub struct Session {
    permissions: Permissions,
    channels: Vec<Box<str>>,
}

/// Starts the gateway on `server` settings (the subprotocol is added to them).
pub fn start(mut server: Config, gateway: GatewayConfig) -> io::Result<ServerHandle> {
    gateway.validate(server.listen).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if !server.subprotocols.iter().any(|p| p == SUBPROTOCOL) {
        server.subprotocols.push(SUBPROTOCOL.to_owned());
    }
    let history = History::new(gateway.history_size, gateway.history_ttl, gateway.max_channels, new_epoch());
    let shared = Arc::new(Shared {
        anonymous: gateway.anonymous_allowed(server.listen),
        config: gateway,
        history: Mutex::new(history),
    });
    Server::new(server).start(move || Gateway { shared: shared.clone() })
}

/// A short random name for this process's history (RandomState is seeded from the OS).
fn new_epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    format!("{:x}", h.finish() & 0xFFFF_FFFF_FFFF)
}

impl Gateway {
    fn history(&self) -> MutexGuard<'_, History> {
        // A panic while holding the lock leaves the history consistent (every method finishes
        // its update before anything can panic), so a poisoned lock is still usable.
        self.shared.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Assigns a seq, records the message and publishes it; returns the seq. The history lock
    /// is held until the frame is on the bus, so every worker receives a channel's messages in
    /// seq order.
    fn publish(
        &self,
        ctx: &mut Ctx<'_>,
        channel: &str,
        data: &serde_json::value::RawValue,
    ) -> Result<u64, TooManyChannels> {
        let mut history = self.history();
        let (seq, frame) = history.publish(channel, Instant::now(), |seq| protocol::message(channel, seq, data))?;
        ctx.publish(channel, Message::Text(frame));
        drop(history);
        Ok(seq)
    }

    fn permissions_for(&self, request: &Request<'_>) -> Result<Permissions, Reject> {
        let config = &self.shared.config;
        if !config.allowed_origins.is_empty() {
            if let Some(origin) = request.header_str("origin") {
                if !config.allowed_origins.iter().any(|o| o == origin) {
                    return Err(Reject::new(403, "origin not allowed"));
                }
            }
        }
        match (auth::token_from_request(request), &config.jwt_secret) {
            (Some(token), Some(secret)) => match auth::verify(token, secret) {
                Ok(claims) => Ok(Permissions::Token { subscribe: claims.subscribe, publish: claims.publish }),
                Err(reason) => Err(Reject::new(401, reason)),
            },
            _ if self.shared.anonymous => Ok(Permissions::Anonymous),
            _ => Err(Reject::new(401, "missing token")),
        }
    }

    fn handle(&self, ctx: &mut Ctx<'_>, id: ConnId, session: &mut Session, text: &str) -> Result<(), OpError> {
        let request = protocol::parse(text)?;
        let rid = request.id;
        match request.op {
            Op::Subscribe { channel, since, epoch } => {
                if !session.permissions.may_subscribe(&channel) {
                    return Err(OpError::new(rid, "forbidden", format!("not allowed to subscribe to {channel}")));
                }
                if session.channels.iter().any(|c| **c == *channel) {
                    return Err(OpError::new(rid, "already_subscribed", format!("already subscribed to {channel}")));
                }
                let mut history = self.history();
                let resume = history
                    .subscribe(&channel, since, epoch.as_deref(), Instant::now())
                    .map_err(|_| OpError::new(rid, "too_many_channels", "the server tracks too many channels"))?;
                let reply =
                    protocol::subscribed(&channel, resume.last_seq, &resume.epoch, since.map(|_| resume.recovered));
                ctx.send_text(id, &reply);
                for frame in resume.missed {
                    ctx.send(id, Message::Text(frame));
                }
                // Under the history lock: every publish after `last_seq` reaches this worker
                // after the subscribe, and every one up to it before (the replay has those).
                // The replay is queued on the connection before the subscribe takes effect.
                ctx.subscribe(id, &channel);
                drop(history);
                session.channels.push(channel.into());
            }
            Op::Unsubscribe { channel } => {
                if let Some(pos) = session.channels.iter().position(|c| **c == *channel) {
                    session.channels.swap_remove(pos);
                    ctx.unsubscribe(id, &channel);
                    self.history().unsubscribe(&channel, Instant::now());
                }
                ctx.send_text(id, &protocol::unsubscribed(&channel));
            }
            Op::Publish { channel, data } => {
                if !session.permissions.may_publish(&channel) {
                    return Err(OpError::new(rid, "forbidden", format!("not allowed to publish to {channel}")));
                }
                let seq = self
                    .publish(ctx, &channel, data)
                    .map_err(|_| OpError::new(rid, "too_many_channels", "the server tracks too many channels"))?;
                ctx.send_text(id, &protocol::ack(rid, seq));
            }
        }
        Ok(())
    }
}

impl Handler for Gateway {
    type Session = Session;

    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, request: &Request<'_>) -> Result<Session, Reject> {
        let permissions = self.permissions_for(request)?;
        Ok(Session { permissions, channels: Vec::new() })
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, session: &mut Session, message: Message) {
        let Some(text) = message.as_text() else {
            ctx.close(id, CloseCode::UNSUPPORTED_DATA, "binary frames are not supported; send JSON text");
            return;
        };
        if let Err(e) = self.handle(ctx, id, session, text) {
            ctx.send_text(id, &e.to_json());
        }
    }

    fn on_close(&mut self, _: &mut Ctx<'_>, _: ConnId, session: Session, _: CloseCode, _: &str) {
        let now = Instant::now();
        let mut history = self.history();
        for channel in &session.channels {
            history.unsubscribe(channel, now);
        }
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_>, request: &Request<'_>) -> Response {
        http::route(self, ctx, request)
    }
}

/// The address to print for people: `http://127.0.0.1:8080/`.
pub fn describe(addr: SocketAddr) -> String {
    format!("http://{addr}/ (demo page), ws://{addr}/ (WebSocket), POST http://{addr}/api/publish")
}
