//! A Pusher connection from open to close: the checks at the upgrade, the frames a client sends
//! (ping, subscribe, unsubscribe, sign-in, client events) and what its end undoes.
//!
//! Owns: `PusherSession` (a connection's app, `socket_id`, subscriptions, signed-in user and
//! client-event rate window) and the `Pusher` methods the application's handler calls: `open`,
//! `message`, `idle`, `close`. Subscribing and leaving are in `channels`. Invariants: a refused
//! connection (wrong key, bad version, over quota...) is open at the WebSocket level, gets one
//! `pusher:error` and a close with that code, and counts nowhere; an accepted one is counted in
//! its app until `close`, which leaves every channel it joined (webhooks and `member_removed`
//! included) and signs it out, whether or not the client unsubscribed first.

use std::time::{Duration, Instant};

use fanout::{ConnId, Ctx, Message, Request};
use serde_json::value::RawValue;

use super::protocol::{self, ErrorCode, Incoming, Kind};
use super::webhook::WebhookEvent;
use super::{signature, Pusher};
use crate::http::origin_allowed;
use crate::native::protocol::validate_event;
use crate::space::{app_key, pusher_topic, Origin, Publish};

/// What the gateway keeps per Pusher connection.
pub struct PusherSession {
    /// None: the connection was refused and is closing.
    app: Option<usize>,
    socket_id: Box<str>,
    pub(super) channels: Vec<Subscription>,
    user: Option<Box<str>>,
    rate: RateWindow,
}

/// One channel a connection is subscribed to.
pub(super) struct Subscription {
    pub(super) name: Box<str>,
    /// The channel's key in the space (`space::app_key`).
    pub(super) key: Box<str>,
    /// On a presence channel: the user id this connection is a member as.
    pub(super) member: Option<Box<str>>,
}

/// Client events counted over one-second windows.
#[derive(Default)]
struct RateWindow {
    start: Option<Instant>,
    count: u32,
}

impl RateWindow {
    /// Counts one event; false when it is over `limit` per second (0: no limit).
    fn allow(&mut self, now: Instant, limit: u32) -> bool {
        if limit == 0 {
            return true;
        }
        match self.start {
            Some(start) if now.duration_since(start) < Duration::from_secs(1) => {
                if self.count >= limit {
                    return false;
                }
                self.count += 1;
            }
            _ => {
                self.start = Some(now);
                self.count = 1;
            }
        }
        true
    }
}

impl PusherSession {
    pub fn socket_id(&self) -> &str {
        &self.socket_id
    }
}

impl Pusher {
    /// True for the paths this endpoint serves (`/app/...`).
    pub fn is_endpoint(path: &str) -> bool {
        path.starts_with("/app/")
    }

    /// Opens a connection to `/app/{key}`: checks the path, the key, the protocol version, the
    /// app, the origin and the app's quota, then sends `pusher:connection_established`. A
    /// refusal is sent as `pusher:error` and a close with its code, on an accepted upgrade.
    pub fn open(&self, ctx: &mut Ctx<'_>, id: ConnId, request: &Request<'_>) -> PusherSession {
        let socket_id: Box<str> = protocol::socket_id(id, self.node()).into();
        let refuse = |ctx: &mut Ctx<'_>, code: ErrorCode, message: &str| {
            Self::send(ctx, id, protocol::error(Some(code.code()), message));
            ctx.close(id, code.close_code(), message);
            PusherSession {
                app: None,
                socket_id: socket_id.clone(),
                channels: Vec::new(),
                user: None,
                rate: RateWindow::default(),
            }
        };
        let key = request.path().strip_prefix("/app/").unwrap_or_default();
        if key.is_empty() || key.contains('/') {
            return refuse(ctx, ErrorCode::PathNotFound, "path not found: connect to /app/{key}");
        }
        let Some(app) = self.app_by_key(key) else {
            return refuse(ctx, ErrorCode::UnknownApp, "application does not exist: no app has this key");
        };
        match request.query_param("protocol") {
            None => {
                let message = "no protocol version supplied, so protocol 1, which is unsupported: use protocol=7";
                return refuse(ctx, ErrorCode::UnsupportedVersion, message);
            }
            Some(v) => match v.parse::<u32>() {
                Err(_) => return refuse(ctx, ErrorCode::BadVersionFormat, "invalid version string format"),
                Ok(v) if v != protocol::VERSION => {
                    return refuse(ctx, ErrorCode::UnsupportedVersion, "unsupported protocol version: use 7")
                }
                Ok(_) => {}
            },
        }
        let config = &self.apps[app].config;
        if !config.enabled {
            return refuse(ctx, ErrorCode::AppDisabled, "application disabled");
        }
        if !origin_allowed(&self.allowed_origins, request) {
            return refuse(ctx, ErrorCode::Unauthorized, "connection is unauthorized: origin not allowed");
        }
        if !self.state().connect(app, config.max_connections) {
            return refuse(ctx, ErrorCode::OverQuota, "application is over connection quota");
        }
        Self::send(ctx, id, protocol::connection_established(&socket_id, self.activity_timeout));
        PusherSession { app: Some(app), socket_id, channels: Vec::new(), user: None, rate: RateWindow::default() }
    }

    /// One frame from the client.
    pub fn message(&self, ctx: &mut Ctx<'_>, id: ConnId, s: &mut PusherSession, message: Message) {
        let Some(app) = s.app else {
            return; // refused, closing
        };
        let Some(text) = message.as_text() else {
            Self::send(ctx, id, protocol::error(None, "binary frames are not supported: send JSON text"));
            return;
        };
        let frame = match protocol::parse(text) {
            Ok(frame) => frame,
            Err(e) => return Self::send(ctx, id, protocol::error(None, &e)),
        };
        match frame.event.as_ref() {
            "pusher:ping" => ctx.send_text(id, protocol::PONG),
            "pusher:pong" => {}
            "pusher:subscribe" => self.subscribe(ctx, id, s, app, frame.data),
            "pusher:unsubscribe" => self.unsubscribe(ctx, id, s, app, frame.data),
            "pusher:signin" => self.signin(ctx, id, s, app, frame.data),
            name if name.starts_with("client-") => self.client_event(ctx, id, s, app, &frame),
            other => Self::send(ctx, id, protocol::error(None, &format!("unknown event {other:?}"))),
        }
    }

    /// The connection has been silent for half the idle timeout: Pusher's own ping, which a
    /// client answers with `pusher:pong`.
    pub fn idle(&self, ctx: &mut Ctx<'_>, id: ConnId) {
        ctx.send_text(id, protocol::PING);
    }

    /// The connection ended: leaves its channels (with their webhooks and `member_removed`),
    /// signs it out and uncounts it.
    pub fn close(&self, ctx: &mut Ctx<'_>, id: ConnId, s: PusherSession) {
        let Some(app) = s.app else {
            return;
        };
        for sub in &s.channels {
            self.leave(ctx, id, app, sub);
        }
        let mut state = self.state();
        if let Some(user) = &s.user {
            state.sign_out(app, user, id);
        }
        state.disconnect(app);
    }

    /// `pusher:signin`: checks the signature over `socket_id::user::user_data`, then subscribes
    /// the connection to the user's channel. A bad sign-in gets `pusher:error` 4009 and the
    /// connection stays open (without a user).
    fn signin(&self, ctx: &mut Ctx<'_>, id: ConnId, s: &mut PusherSession, app: usize, data: Option<&RawValue>) {
        let unauthorized = |ctx: &mut Ctx<'_>, message: &str| {
            Self::send(ctx, id, protocol::error(Some(ErrorCode::Unauthorized.code()), message))
        };
        let d: protocol::SigninData = match protocol::data_object(data) {
            Ok(d) => d,
            Err(e) => return unauthorized(ctx, &format!("pusher:signin needs auth and user_data: {e}")),
        };
        let config = &self.apps[app].config;
        if !signature::user_auth_ok(&config.key, &config.secret, &s.socket_id, &d.user_data, &d.auth) {
            return unauthorized(ctx, "invalid signature for pusher:signin");
        }
        let user = match protocol::parse_user_data(&d.user_data) {
            Ok(user) => user,
            Err(e) => return unauthorized(ctx, &e),
        };
        let mut state = self.state();
        if let Some(previous) = s.user.take() {
            state.sign_out(app, &previous, id);
            ctx.unsubscribe(id, &user_topic(app, &previous));
        }
        state.sign_in(app, &user, id);
        drop(state);
        ctx.subscribe(id, &user_topic(app, &user));
        Self::send(ctx, id, protocol::signin_success(&d.user_data));
        s.user = Some(user.into());
    }

    /// `pusher:subscribe` to a signed-in user's own channel, which pusher-js sends without auth
    /// after `signin_success`: the connection is on it already.
    pub(super) fn subscribe_own_user_channel(&self, ctx: &mut Ctx<'_>, id: ConnId, s: &PusherSession, name: &str) {
        let user = name.strip_prefix(protocol::USER_CHANNEL_PREFIX);
        if user.is_some() && user == s.user.as_deref() {
            Self::send(ctx, id, protocol::subscription_succeeded(name));
        } else {
            let message = "only the signed-in user's own #server-to-user- channel can be subscribed";
            Self::send(ctx, id, protocol::subscription_error(name, "AuthError", message, 403));
        }
    }

    /// A `client-*` event: only on a private or presence channel the sender is subscribed to,
    /// when the app allows them, within the size and rate limits; to the channel's other
    /// subscribers (native ones too), never back to the sender.
    fn client_event(&self, ctx: &mut Ctx<'_>, id: ConnId, s: &mut PusherSession, app: usize, frame: &Incoming<'_>) {
        let name = frame.event.as_ref();
        let Some(channel) = frame.channel.as_deref() else {
            return Self::send(ctx, id, protocol::error(None, "a client event needs a channel"));
        };
        let refuse = |ctx: &mut Ctx<'_>, code: Option<u16>, message: &str| {
            Self::send(ctx, id, protocol::channel_error(channel, code, message))
        };
        let config = &self.apps[app].config;
        if !config.client_events {
            return refuse(ctx, None, "client events are not enabled for this app");
        }
        if !matches!(Kind::of(channel), Kind::Private | Kind::Presence) {
            return refuse(ctx, None, "client events are only allowed on private and presence channels");
        }
        let Some(sub) = s.channels.iter().find(|c| &*c.name == channel) else {
            return refuse(ctx, None, &format!("cannot send a client event: not subscribed to {channel}"));
        };
        if let Err(e) = validate_event(name) {
            return refuse(ctx, None, &e);
        }
        let data = frame.data.map_or("null", RawValue::get);
        if data.len() > config.max_event_size {
            return refuse(ctx, None, &format!("client event data is over {} bytes", config.max_event_size));
        }
        if !s.rate.allow(Instant::now(), config.client_event_rate) {
            let message = format!("client event rejected: over {} per second", config.client_event_rate);
            return refuse(ctx, Some(ErrorCode::ClientEventRateLimit.code()), &message);
        }
        let publish = Publish {
            channel,
            key: &sub.key,
            event: Some(name),
            data,
            origin: Origin::Pusher,
            user_id: sub.member.as_deref(),
            except: Some(id),
        };
        if let Some(cluster) = &self.cluster {
            let (remote, channel_name) = (ctx.remote(), channel.to_owned());
            cluster.publish_space(
                &publish,
                Some(&s.socket_id),
                Box::new(move |result| {
                    if let Err(e) = result {
                        let text =
                            protocol::channel_error(&channel_name, None, &format!("client event not sent: {}", e.0));
                        remote.send_text(id, &text);
                    }
                }),
            );
        } else if self.space.publish(ctx, publish).is_err() {
            return refuse(ctx, None, "the server tracks too many channels");
        }
        let data = serde_json::from_str::<String>(data).unwrap_or_else(|_| data.to_owned());
        let hook = WebhookEvent::client_event(channel, name, &data, &s.socket_id, sub.member.as_deref());
        self.webhook(app, hook);
    }
}

/// The topic of a signed-in user's connections.
pub(super) fn user_topic(app: usize, user: &str) -> String {
    pusher_topic(&app_key(app, &format!("{}{user}", protocol::USER_CHANNEL_PREFIX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_window_allows_the_limit_per_second() {
        let mut w = RateWindow::default();
        let t = Instant::now();
        assert!((0..3).all(|_| w.allow(t, 3)));
        assert!(!w.allow(t + Duration::from_millis(999), 3), "fourth in the same second");
        assert!(w.allow(t + Duration::from_secs(1), 3), "a new window");
        assert!((0..100).all(|_| w.allow(t, 0)), "0: no limit");
    }
}
