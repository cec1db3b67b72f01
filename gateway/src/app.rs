//! The gateway application: the library `Handler` that gives each connection its channels,
//! permissions and resume, on the library's public API only (`Server`, `Handler`, `Ctx`).
//!
//! Owns: `GatewayConfig`, `Gateway` (the handler, one per worker, sharing one `Space` and, with
//! a Pusher app, one `Pusher`), its per-connection `Session` (native or Pusher, chosen by the
//! path: `/app/...` is Pusher's endpoint), and `start`. Uses `native` for what a frame means and
//! who may do what, `space` for seq, history and publishing to both protocols, `pusher` for the
//! Pusher side, `http` for plain requests (through the `http::Api` trait this module implements,
//! so `http` never imports the application). Invariants: a channel's
//! `seq` grows by one per publish however it arrives (WebSocket or HTTP); a resuming client gets
//! the missed messages in order before any live one, with no gap and no duplicate (a subscribe
//! is applied after its replay is queued, and the library delivers a topic's pending batch
//! before a new member joins it); a client's JSON mistakes get an `error` op and leave the
//! connection usable.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use fanout::{
    CloseCode, Config, ConnId, Ctx, Handler, Message, Reject, Request, Response, Server, ServerClose, ServerHandle,
};
use serde_json::value::RawValue;

use crate::admin::{self, Servers};
use crate::cluster::{self, Cluster};
use crate::history::{History, TooManyChannels};
use crate::http;
use crate::native::auth::{self, Permissions};
use crate::native::protocol::{self, Op, OpError};
pub use crate::native::SUBPROTOCOL;
use crate::pusher::apps::{self as pusher_apps, AppConfig};
use crate::pusher::protocol::ErrorCode;
use crate::pusher::session::PusherSession;
use crate::pusher::{self, Pusher};
use crate::space::{publish_locked, Origin, Publish, Space};

/// Settings of the `fanout` gateway on top of the server's `Config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// HS256 secret that client tokens are signed with. None: no tokens are checked, and clients
    /// are anonymous (allowed only on loopback or with `allow_anonymous`).
    pub jwt_secret: Option<String>,
    /// Key for `POST /api/publish` (`Authorization: Bearer <key>`). None: the HTTP API is open
    /// exactly when anonymous clients are allowed, and refused otherwise.
    pub api_key: Option<String>,
    /// Lets clients without a token connect, subscribe and publish anywhere. Implied on a
    /// loopback address without a JWT secret; required to bind elsewhere without one.
    pub allow_anonymous: bool,
    /// Browser origins allowed to connect (exact `scheme://host[:port]`); empty allows any.
    pub allowed_origins: Vec<String>,
    /// Messages kept per channel for resume. Default 100. More lets clients resume after longer
    /// absences and costs memory per busy channel.
    pub history_size: usize,
    /// Age after which a message leaves the history. Default 5 min.
    pub history_ttl: Duration,
    /// Channels the gateway tracks at once (with history or subscribers). Default 100,000; past
    /// it, new channels are refused, so a client cannot grow memory by inventing names.
    pub max_channels: usize,
    /// Channels one connection may be subscribed to at once (native or Pusher). Default 100;
    /// past it, a subscribe is refused and the connection stays open, so one client cannot take
    /// the `max_channels` every client shares.
    pub max_channels_per_connection: usize,
    /// Pusher apps; none by default (then `/app/...` and `/apps/...` answer 404). The first one
    /// shares the native channel space.
    pub pusher_apps: Vec<AppConfig>,
    /// The Redis engine (`--redis-url`); None: one process, everything in memory.
    pub redis: Option<cluster::Settings>,
    /// A second address serving `/metrics`, `/api/stats` and `/healthz` (`start_servers`);
    /// then the main listener answers 404 to the first two. None: they stay on the main one.
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token `/metrics` and `/api/stats` require wherever they are served. Required
    /// for an `admin_listen` that is not loopback.
    pub admin_token: Option<String>,
    /// The demo page at `/`. Default on; off, `/` answers 404.
    pub demo: bool,
    /// Messages one `POST /api/publish` array may hold. Default 1,000; more get 413.
    pub publish_batch_max: usize,
    /// Largest `data` of one message published over HTTP, in bytes. Default 64 KiB (the
    /// gateway's `--max-message-size`), so a batch's body limit does not raise it.
    pub max_publish_size: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            jwt_secret: None,
            api_key: None,
            allow_anonymous: false,
            allowed_origins: Vec::new(),
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            max_channels: 100_000,
            max_channels_per_connection: 100,
            pusher_apps: Vec::new(),
            redis: None,
            admin_listen: None,
            admin_token: None,
            demo: true,
            publish_batch_max: 1000,
            max_publish_size: 64 * 1024,
        }
    }
}

impl GatewayConfig {
    /// Whether clients without a token may connect when the server listens on `listen`.
    pub fn anonymous_allowed(&self, listen: SocketAddr) -> bool {
        self.allow_anonymous || (self.jwt_secret.is_none() && listen.ip().is_loopback())
    }

    /// Checks the gateway settings against the listen address.
    pub fn validate(&self, listen: SocketAddr) -> Result<(), String> {
        if self.jwt_secret.is_none() && !listen.ip().is_loopback() && !self.allow_anonymous {
            return Err(format!(
                "refusing to serve anonymous clients on non-loopback address {listen}: set --jwt-secret, or --allow-anonymous to accept that"
            ));
        }
        if self.jwt_secret.as_deref().is_some_and(str::is_empty) {
            return Err("jwt_secret must not be empty".into());
        }
        if self.api_key.as_deref().is_some_and(str::is_empty) {
            return Err("api_key must not be empty".into());
        }
        admin::validate(self.admin_listen, self.admin_token.as_deref())?;
        if self.publish_batch_max == 0 || self.max_publish_size == 0 {
            return Err("publish_batch_max and max_message_size must be greater than 0".into());
        }
        if self.max_channels == 0 {
            return Err("max_channels must be greater than 0".into());
        }
        if self.max_channels_per_connection == 0 {
            return Err("max_channels_per_connection must be greater than 0".into());
        }
        if let Some(redis) = &self.redis {
            redis.validate()?;
        }
        pusher_apps::validate(&self.pusher_apps)
    }
}

/// State shared by the gateway's handlers (one per worker).
struct Shared {
    config: GatewayConfig,
    anonymous: bool,
    endpoints: http::Endpoints,
    space: Arc<Space>,
    pusher: Option<Pusher>,
    /// The Redis engine: with it, seq, history and delivery go through Redis (`crate::cluster`).
    cluster: Option<Arc<Cluster>>,
}

/// The fanout application.
pub struct Gateway {
    shared: Arc<Shared>,
}

/// What the gateway keeps per connection: its protocol's session.
pub enum Session {
    Native(NativeSession),
    Pusher(PusherSession),
}

/// A `fanout.v1` connection's permissions and channels.
pub struct NativeSession {
    permissions: Permissions,
    channels: Vec<Box<str>>,
}

/// Starts the gateway on `server` settings (the subprotocol is added to them), without an
/// admin listener (`start_servers` starts one): an error when `admin_listen` is set.
pub fn start(server: Config, gateway: GatewayConfig) -> io::Result<ServerHandle> {
    if gateway.admin_listen.is_some() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "admin_listen: start the gateway with start_servers"));
    }
    start_servers(server, gateway).map(|servers| servers.main)
}

/// Starts the gateway and, with `admin_listen`, its admin listener (`crate::admin`).
pub fn start_servers(mut server: Config, gateway: GatewayConfig) -> io::Result<Servers> {
    gateway.validate(server.listen).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    if !server.subprotocols.iter().any(|p| p == SUBPROTOCOL) {
        server.subprotocols.push(SUBPROTOCOL.to_owned());
    }
    let history = History::new(gateway.history_size, gateway.history_ttl, gateway.max_channels, new_epoch());
    let space = Arc::new(Space::new(history));
    let (cluster, engine) = match gateway.redis.clone() {
        Some(settings) => {
            let (cluster, engine) = Cluster::new(settings);
            (Some(Arc::new(cluster)), Some(engine))
        }
        None => (None, None),
    };
    let settings = pusher::Settings {
        apps: gateway.pusher_apps.clone(),
        activity_timeout: activity_timeout(server.idle_timeout),
        allowed_origins: gateway.allowed_origins.clone(),
        max_channels_per_connection: gateway.max_channels_per_connection,
        cluster: cluster.clone(),
    };
    let endpoints = http::Endpoints {
        demo: gateway.demo,
        admin_token: gateway.admin_token.clone(),
        admin_elsewhere: gateway.admin_listen.is_some(),
        batch_max: gateway.publish_batch_max,
        max_data: gateway.max_publish_size,
    };
    let shared = Arc::new(Shared {
        anonymous: gateway.anonymous_allowed(server.listen),
        endpoints,
        config: gateway,
        pusher: Pusher::new(settings, space.clone()),
        space,
        cluster: cluster.clone(),
    });
    let cluster_handle = cluster;
    let admin_listen = shared.config.admin_listen;
    let for_admin = shared.clone();
    let handle = Server::new(server).start(move || Gateway { shared: shared.clone() })?;
    if let (Some(engine), Some(cluster)) = (engine, &cluster_handle) {
        // It ends by itself once the handlers, and with them every `Cluster` handle, are gone
        // (the admin server's too: `Servers::join` stops it after the main one).
        engine.start(cluster, handle.remote())?;
    }
    let admin = match admin_listen {
        Some(listen) => Some(admin::start(listen, handle.remote(), move || Gateway { shared: for_admin.clone() })?),
        None => None,
    };
    Ok(Servers { main: handle, admin })
}

/// The `activity_timeout` Pusher clients are told: half the idle timeout, so a client pings
/// well before the server would close it as silent; Pusher's 120 s when the timeout is off.
fn activity_timeout(idle: Duration) -> u64 {
    if idle.is_zero() {
        120
    } else {
        (idle.as_secs() / 2).max(1)
    }
}

/// A short random name for this process's history (RandomState is seeded from the OS).
fn new_epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    format!("{:x}", h.finish() & 0xFFFF_FFFF_FFFF)
}

impl Gateway {
    fn history(&self) -> MutexGuard<'_, crate::space::Channels> {
        self.shared.space.lock()
    }

    /// Assigns a seq, records the message and publishes it to the channel's native and Pusher
    /// subscribers; returns the seq. The history lock is held until the frames are on the bus,
    /// so every worker receives a channel's messages in seq order.
    fn publish(
        &self,
        ctx: &mut Ctx<'_>,
        channel: &str,
        event: Option<&str>,
        data: &RawValue,
    ) -> Result<u64, TooManyChannels> {
        let publish = Publish {
            channel,
            key: channel,
            event,
            data: data.get(),
            origin: Origin::Native,
            user_id: None,
            except: None,
        };
        self.shared.space.publish(ctx, publish)
    }

    fn permissions_for(&self, request: &Request<'_>) -> Result<Permissions, Reject> {
        let config = &self.shared.config;
        if !http::origin_allowed(&config.allowed_origins, request) {
            return Err(Reject::new(403, "origin not allowed"));
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

    fn handle(&self, ctx: &mut Ctx<'_>, id: ConnId, session: &mut NativeSession, text: &str) -> Result<(), OpError> {
        let request = protocol::parse(text)?;
        let rid = request.id;
        match request.op {
            Op::Subscribe { channel, since, epoch } => {
                if !session.permissions.may_subscribe(&channel) {
                    return Err(OpError::new(rid, "forbidden", format!("not allowed to subscribe to {channel}")));
                }
                let again = session.channels.iter().any(|c| **c == *channel);
                if let (Some(cluster), true) = (&self.shared.cluster, again) {
                    // The first join may have been refused (Redis went away): joins are idempotent.
                    self.join(cluster, id, rid, channel, since, epoch);
                    return Ok(());
                }
                if again {
                    return Err(OpError::new(rid, "already_subscribed", format!("already subscribed to {channel}")));
                }
                let cap = self.shared.config.max_channels_per_connection;
                if session.channels.len() >= cap {
                    let message = format!("this connection is on {cap} channels, the most it may be on");
                    return Err(OpError::new(rid, "too_many_channels", message));
                }
                if let Some(cluster) = &self.shared.cluster {
                    self.join(cluster, id, rid, channel.clone(), since, epoch);
                    session.channels.push(channel.into());
                    return Ok(());
                }
                let mut history = self.history();
                let resume = history
                    .subscribe(&channel, since, epoch.as_deref(), Instant::now())
                    .map_err(|_| OpError::new(rid, "too_many_channels", "the server tracks too many channels"))?;
                let reply =
                    protocol::subscribed(&channel, resume.last_seq, &resume.epoch, since.map(|_| resume.recovered));
                ctx.send_text(id, &reply);
                for event in resume.missed {
                    ctx.send(id, Message::Text(event.native_frame()));
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
                    // Out of the topic here in both modes (the cluster's own unsubscribe then
                    // finds it gone): the reply below is ordered behind the channel's messages
                    // already on their way to this worker, so none follows `unsubscribed`.
                    ctx.unsubscribe(id, &channel);
                    match &self.shared.cluster {
                        Some(cluster) => cluster.leave(id, &channel, false, None),
                        None => self.history().unsubscribe(&channel, Instant::now()),
                    }
                }
                ctx.send_text(id, &protocol::unsubscribed(&channel));
            }
            Op::Publish { channel, event, data } => {
                if !session.permissions.may_publish(&channel) {
                    return Err(OpError::new(rid, "forbidden", format!("not allowed to publish to {channel}")));
                }
                if let Some(cluster) = &self.shared.cluster {
                    let (remote, reply_id) = (ctx.remote(), rid.map(|r| r.get().to_owned()));
                    let done: cluster::PublishDone = Box::new(move |result| match result {
                        Ok(seq) => remote.send_text(id, &protocol::ack(reply_id.as_deref(), seq)),
                        Err(e) => {
                            remote.send_text(id, &OpError::new(None, "unavailable", e.0).with_id(reply_id).to_json())
                        }
                    });
                    cluster.publish_native(&channel, event.as_deref(), data, done);
                    return Ok(());
                }
                let seq = self
                    .publish(ctx, &channel, event.as_deref(), data)
                    .map_err(|_| OpError::new(rid, "too_many_channels", "the server tracks too many channels"))?;
                ctx.send_text(id, &protocol::ack(rid.map(RawValue::get), seq));
            }
        }
        Ok(())
    }
}

impl Gateway {
    /// A native subscribe through the Redis engine: the reply, the replay and the topic come
    /// once this node receives the channel from Redis.
    #[allow(clippy::too_many_arguments)]
    fn join(
        &self,
        cluster: &Cluster,
        id: ConnId,
        rid: Option<&RawValue>,
        channel: String,
        since: Option<u64>,
        epoch: Option<String>,
    ) {
        let reply_id = rid.map(|r| r.get().to_owned());
        let name = channel.clone();
        let done: cluster::JoinDone = Box::new(move |remote, result| match result {
            Ok(joined) => {
                let recovered = since.map(|_| joined.recovered);
                remote.send_text(id, &protocol::subscribed(&name, joined.seq, &joined.epoch, recovered));
                for event in joined.replay {
                    remote.send(id, Message::Text(event.native_frame()));
                }
                true
            }
            Err(e) => {
                remote.send_text(id, &OpError::new(None, "unavailable", e.0).with_id(reply_id).to_json());
                false
            }
        });
        cluster.join(id, &channel, &channel, cluster::Side::Native { since, epoch }, done);
    }
}

impl Handler for Gateway {
    type Session = Session;

    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, request: &Request<'_>) -> Result<Session, Reject> {
        if Pusher::is_endpoint(request.path()) {
            // Pusher's endpoint: the upgrade succeeds even for a wrong key (the refusal is a
            // pusher:error and a close), or pusher-js would retry forever.
            return match &self.shared.pusher {
                Some(pusher) => Ok(Session::Pusher(pusher.open(ctx, id, request))),
                None => Err(Reject::new(404, "no Pusher app is configured")),
            };
        }
        let permissions = self.permissions_for(request)?;
        Ok(Session::Native(NativeSession { permissions, channels: Vec::new() }))
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, session: &mut Session, message: Message) {
        let session = match session {
            Session::Native(session) => session,
            Session::Pusher(session) => {
                if let Some(pusher) = &self.shared.pusher {
                    pusher.message(ctx, id, session, message);
                }
                return;
            }
        };
        let Some(text) = message.as_text() else {
            ctx.close(id, CloseCode::UNSUPPORTED_DATA, "binary frames are not supported; send JSON text");
            return;
        };
        if let Err(e) = self.handle(ctx, id, session, text) {
            ctx.send_text(id, &e.to_json());
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, session: Session, _: CloseCode, _: &str) {
        match session {
            Session::Native(session) => {
                if let Some(cluster) = &self.shared.cluster {
                    for channel in &session.channels {
                        cluster.leave(id, channel, false, None);
                    }
                    return;
                }
                let now = Instant::now();
                let mut history = self.history();
                for channel in &session.channels {
                    history.unsubscribe(channel, now);
                }
            }
            Session::Pusher(session) => {
                if let Some(pusher) = &self.shared.pusher {
                    pusher.close(ctx, id, session);
                }
            }
        }
    }

    fn on_idle(&mut self, ctx: &mut Ctx<'_>, id: ConnId, session: &mut Session) {
        match (session, &self.shared.pusher) {
            (Session::Pusher(_), Some(pusher)) => pusher.idle(ctx, id),
            _ => ctx.ping(id, b""),
        }
    }

    fn on_server_close(&mut self, session: &Session, why: ServerClose) -> (CloseCode, &'static str) {
        match (session, why) {
            (Session::Pusher(_), ServerClose::IdleTimeout) => {
                (ErrorCode::PongTimeout.close_code(), "pong reply not received")
            }
            (Session::Pusher(_), ServerClose::Stopping) => {
                (ErrorCode::ReconnectNow.close_code(), "server stopping: reconnect")
            }
            _ => why.default_close(),
        }
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_>, request: &Request<'_>) -> Response {
        http::route(self, ctx, request)
    }
}

impl http::Api for Gateway {
    fn channels(&self) -> usize {
        self.history().len()
    }

    fn api_key(&self) -> Option<&str> {
        self.shared.config.api_key.as_deref()
    }

    fn anonymous_allowed(&self) -> bool {
        self.shared.anonymous
    }

    fn endpoints(&self) -> &http::Endpoints {
        &self.shared.endpoints
    }

    fn publish(&self, ctx: &mut Ctx<'_>, items: &[http::Item<'_>]) -> Result<Vec<u64>, TooManyChannels> {
        // One lock for the whole batch: checked to fit first, so it is published whole or not
        // at all, and no other publish falls between two of its messages on a channel.
        let mut channels = self.history();
        if !channels.fits(items.iter().map(|i| i.channel.as_str()), Instant::now()) {
            return Err(TooManyChannels);
        }
        let mut seqs = Vec::with_capacity(items.len());
        for i in items {
            let p = Publish {
                channel: &i.channel,
                key: &i.channel,
                event: i.event.as_deref(),
                data: i.data.get(),
                origin: Origin::Native,
                user_id: None,
                except: None,
            };
            seqs.push(publish_locked(&mut channels, ctx, p)?);
        }
        Ok(seqs)
    }

    fn pusher_api(&self, ctx: &mut Ctx<'_>, request: &Request<'_>) -> Option<Response> {
        self.shared.pusher.as_ref().map(|pusher| pusher.rest(ctx, request))
    }

    fn extra_metrics(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        let mut lines = self.shared.pusher.as_ref().map(Pusher::metrics).unwrap_or_default();
        lines.extend(self.shared.cluster.as_ref().map(|c| c.metrics()).unwrap_or_default());
        lines
    }

    fn cluster(&self) -> Option<&Cluster> {
        self.shared.cluster.as_deref()
    }
}

/// The address to print for people: `http://127.0.0.1:8080/`; the demo page only when served.
pub fn describe(addr: SocketAddr, tls: Option<SocketAddr>, demo: bool) -> String {
    let (http, ws) = if tls == Some(addr) { ("https", "wss") } else { ("http", "ws") };
    let page = if demo { format!("{http}://{addr}/ (demo page), ") } else { String::new() };
    let mut line = format!("{page}{ws}://{addr}/ (WebSocket), POST {http}://{addr}/api/publish");
    if let Some(tls) = tls.filter(|&tls| tls != addr) {
        line.push_str(&format!("; TLS on https://{tls}/ and wss://{tls}/"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_clients_only_on_loopback_unless_allowed() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let open = GatewayConfig::default();
        assert!(open.anonymous_allowed(loopback) && open.validate(loopback).is_ok());
        assert!(!open.anonymous_allowed(public));
        assert!(open.validate(public).unwrap_err().contains("--jwt-secret"));
        let allowed = GatewayConfig { allow_anonymous: true, ..GatewayConfig::default() };
        assert!(allowed.validate(public).is_ok());
        let secured = GatewayConfig { jwt_secret: Some("s".into()), ..GatewayConfig::default() };
        assert!(secured.validate(public).is_ok() && !secured.anonymous_allowed(loopback));
    }
}
