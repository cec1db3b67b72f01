//! The Pusher HTTP API under `/apps/{id}/`, signed as the Pusher server SDKs sign it: trigger
//! events (one, or a batch), read channels and presence users, terminate a user's connections.
//!
//! Owns: `Pusher::rest`, the routing and the answers of `/apps/...`. Statuses: 200 with JSON;
//! 400 for a bad body, a bad channel or too many channels; 401 when the signature check fails
//! (the body says why); 403 for a disabled app; 404 for an unknown app or path; 405 for a known
//! path with another method; 413 for event data over the app's `max_event_size`; 429 when the
//! server tracks too many channels. Every error body is `{"error": "..."}`. Invariants: nothing
//! is published before the whole request is checked; an event's `data` string is forwarded to
//! Pusher clients byte for byte, never re-serialised.

use std::borrow::Cow;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fanout::{Ctx, Message, Pending, Request, Response};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::protocol::{self, Kind};
use super::session::user_topic;
use super::signature::{self, RestRequest};
use super::Pusher;
use crate::cluster::{Cluster, Query, Unavailable};
use crate::space::{app_key, pusher_frame, Channels, Origin, Publish};

/// The publishes of one API request in a cluster, answered once all are numbered.
struct Tally {
    left: AtomicUsize,
    refused: Mutex<Option<Unavailable>>,
    pending: Mutex<Option<Pending>>,
}

impl Tally {
    fn done(&self, refused: Option<Unavailable>) {
        if let Some(e) = refused {
            self.refused.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
        }
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let refused = self.refused.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(pending) = self.pending.lock().unwrap_or_else(|e| e.into_inner()).take() {
                pending.respond(match refused {
                    None => json_response(200, json!({})),
                    Some(e) => e.response(),
                });
            }
        }
    }
}

/// A channel's attributes from its counts: `subscription_count` and, on presence channels,
/// `user_count` (`users` is asked only then).
fn attributes(info: Info, channel: &str, subscriptions: u64, users: impl FnOnce() -> u64) -> Value {
    let mut attrs = Map::new();
    if info.subscription_count {
        attrs.insert("subscription_count".into(), subscriptions.into());
    }
    if info.user_count && Kind::of(channel) == Kind::Presence {
        attrs.insert("user_count".into(), users().into());
    }
    Value::Object(attrs)
}

/// Most channels one trigger may name.
pub const MAX_TRIGGER_CHANNELS: usize = 100;
/// Most events in one batch.
pub const MAX_BATCH_EVENTS: usize = 10;

fn json_response(status: u16, body: Value) -> Response {
    Response::new(status).header("Content-Type", "application/json").body(body.to_string())
}

fn error(status: u16, message: impl std::fmt::Display) -> Response {
    json_response(status, json!({"error": message.to_string()}))
}

fn too_many_channels() -> Response {
    error(429, "the server tracks too many channels")
}

fn param(request: &Request<'_>, name: &str) -> Option<String> {
    request.query_param(name).and_then(signature::decode_component)
}

/// The `info` attributes asked for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Info {
    user_count: bool,
    subscription_count: bool,
}

impl Info {
    fn parse(list: Option<&str>) -> Result<Info, String> {
        let mut info = Info::default();
        for attr in list.unwrap_or_default().split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match attr {
                "user_count" => info.user_count = true,
                "subscription_count" => info.subscription_count = true,
                other => return Err(format!("unknown info attribute {other:?}: use user_count, subscription_count")),
            }
        }
        Ok(info)
    }

    fn any(self) -> bool {
        self.user_count || self.subscription_count
    }
}

/// One event to trigger, from `events` or one item of `batch_events`.
#[derive(Deserialize)]
pub struct EventBody<'a> {
    name: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<EventBody<'a>>,
}

/// The events of a trigger's body: one for `POST /apps/{id}/events`, at most
/// [`MAX_BATCH_EVENTS`] for `batch_events` (`batch`); a 400 saying what was expected otherwise.
/// Public for the fuzz targets.
pub fn read_events(body: &[u8], batch: bool) -> Result<Vec<EventBody<'_>>, Response> {
    if !batch {
        return serde_json::from_slice(body)
            .map(|event| vec![event])
            .map_err(|e| error(400, format_args!("expected {{\"name\":...,\"data\":...,\"channels\":[...]}}: {e}")));
    }
    let batch: BatchBody<'_> = serde_json::from_slice(body).map_err(|e| {
        error(400, format_args!("expected {{\"batch\":[{{\"name\":...,\"channel\":...,\"data\":...}}]}}: {e}"))
    })?;
    if batch.batch.len() > MAX_BATCH_EVENTS {
        return Err(error(400, format_args!("a batch holds at most {MAX_BATCH_EVENTS} events")));
    }
    Ok(batch.batch)
}

/// Checks one event: name, data size (`max_event_size`, the app's), channels, `socket_id` (left
/// out only when it is a connection of `node`, this one), `info`. Public for the fuzz targets.
pub fn check_event<'a>(event: &'a EventBody<'a>, max_event_size: usize, node: u32) -> Result<Trigger<'a>, Response> {
    crate::native::protocol::validate_event(&event.name).map_err(|e| error(400, e))?;
    let data = event.data.get();
    let size = serde_json::from_str::<String>(data).map_or(data.len(), |s| s.len());
    if size > max_event_size {
        return Err(error(413, format_args!("event data is {size} bytes, over the limit of {max_event_size}")));
    }
    let channels = match (&event.channel, &event.channels) {
        (Some(c), None) => vec![c.clone()],
        (None, Some(cs)) if !cs.is_empty() => cs.clone(),
        _ => return Err(error(400, "give either channel or a non-empty channels list")),
    };
    if channels.len() > MAX_TRIGGER_CHANNELS {
        return Err(error(400, format_args!("at most {MAX_TRIGGER_CHANNELS} channels per event")));
    }
    for channel in &channels {
        let valid = match channel.strip_prefix(protocol::USER_CHANNEL_PREFIX) {
            Some(user) => protocol::validate_user_id(user),
            None => protocol::validate_channel(channel),
        };
        valid.map_err(|e| error(400, e))?;
    }
    let except = match event.socket_id.as_deref() {
        None => None,
        Some(s) => {
            let (node_of, id) =
                protocol::parse_socket_id(s).ok_or_else(|| error(400, format_args!("bad socket_id {s:?}")))?;
            // Another node's connection is not here: nobody to leave out on this one.
            (node_of == node).then_some(id)
        }
    };
    let info = Info::parse(event.info.as_deref()).map_err(|e| error(400, e))?;
    Ok(Trigger { name: &event.name, data, channels, except, socket: event.socket_id.as_deref(), info })
}

/// A checked event, ready to publish.
pub struct Trigger<'a> {
    pub name: &'a str,
    pub data: &'a str,
    pub channels: Vec<String>,
    /// The `socket_id` left out, when it is a connection of this node.
    except: Option<fanout::ConnId>,
    /// The `socket_id` left out, as given (in a cluster, any node's).
    socket: Option<&'a str>,
    info: Info,
}

impl<'a> Trigger<'a> {
    /// Publishes to a user's channel: to that user's connections, with no seq and no history.
    fn to_user(&self, ctx: &mut Ctx<'_>, app: usize, channel: &str, user: &str) {
        let frame = Message::Text(pusher_frame(channel, self.name, self.data, None));
        let topic = user_topic(app, user);
        match self.except {
            Some(id) => ctx.publish_except(&topic, frame, id),
            None => ctx.publish(&topic, frame),
        }
    }

    /// The publish of this event on `channel` (keyed `key`).
    fn publish<'b>(&'b self, channel: &'b str, key: &'b str) -> Publish<'b> {
        Publish {
            channel,
            key,
            event: Some(self.name),
            data: self.data,
            origin: Origin::Pusher,
            user_id: None,
            except: self.except,
        }
    }
}

impl Pusher {
    /// Answers a request under `/apps/`.
    pub fn rest(&self, ctx: &mut Ctx<'_>, request: &Request<'_>) -> Response {
        let path = request.path();
        let Some((app_id, route)) = path.strip_prefix("/apps/").and_then(|r| r.split_once('/')) else {
            return error(404, "not found: the API is under /apps/{app_id}/");
        };
        let Some(app) = self.app_by_id(app_id) else {
            return error(404, format_args!("unknown app id {app_id:?}"));
        };
        let config = &self.apps[app].config;
        let body = request.body();
        let signed =
            RestRequest { method: request.method(), path, query: request.query().unwrap_or_default(), body: &body };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if let Err(e) = signature::verify_rest(&signed, &config.key, &config.secret, now) {
            return error(401, e.message());
        }
        if !config.enabled {
            return error(403, "application disabled");
        }
        let segments: Vec<&str> = route.split('/').collect();
        // The one decoder the signature check reads the query with: what the SDK signed is what is read.
        let decoded = |s: &str| signature::decode_component(s).ok_or_else(|| error(400, "the path is not UTF-8"));
        match (request.method(), segments.as_slice()) {
            ("POST", ["events"]) => self.events(ctx, app, &body),
            ("POST", ["batch_events"]) => self.batch_events(ctx, app, &body),
            ("GET", ["channels"]) => self.channels(ctx, app, request),
            ("GET", ["channels", name]) => match decoded(name) {
                Ok(name) => self.channel(ctx, app, &name, request),
                Err(response) => response,
            },
            ("GET", ["channels", name, "users"]) => match decoded(name) {
                Ok(name) => self.users(ctx, app, &name),
                Err(response) => response,
            },
            ("POST", ["users", user, "terminate_connections"]) => match decoded(user) {
                Ok(user) => {
                    self.terminate_user(ctx, app, &user);
                    json_response(200, json!({}))
                }
                Err(response) => response,
            },
            (_, ["events" | "batch_events" | "channels"] | ["channels", _] | ["channels", _, "users"])
            | (_, ["users", _, "terminate_connections"]) => error(405, "method not allowed"),
            _ => error(404, format_args!("not found: {path}")),
        }
    }

    /// `POST /apps/{id}/events`.
    fn events(&self, ctx: &mut Ctx<'_>, app: usize, body: &[u8]) -> Response {
        let events = match read_events(body, false) {
            Ok(events) => events,
            Err(response) => return response,
        };
        let trigger = match self.check(app, &events[0]) {
            Ok(t) => t,
            Err(response) => return response,
        };
        if let Some(cluster) = &self.cluster {
            return self.trigger_cluster(ctx, cluster, app, std::slice::from_ref(&trigger));
        }
        let mut channels = self.space.lock();
        if !self.fits(app, &mut channels, std::slice::from_ref(&trigger)) {
            return too_many_channels();
        }
        match self.trigger(ctx, app, &mut channels, &trigger) {
            Ok(Some(channels)) => json_response(200, json!({"channels": channels})),
            Ok(None) => json_response(200, json!({})),
            Err(response) => response,
        }
    }

    /// `POST /apps/{id}/batch_events`: up to 10 events, all checked before any is published.
    fn batch_events(&self, ctx: &mut Ctx<'_>, app: usize, body: &[u8]) -> Response {
        let batch = match read_events(body, true) {
            Ok(events) => events,
            Err(response) => return response,
        };
        let mut triggers = Vec::with_capacity(batch.len());
        for event in &batch {
            match self.check(app, event) {
                Ok(t) => triggers.push(t),
                Err(response) => return response,
            }
        }
        if let Some(cluster) = &self.cluster {
            return self.trigger_cluster(ctx, cluster, app, &triggers);
        }
        let mut channels = self.space.lock();
        if !self.fits(app, &mut channels, &triggers) {
            return too_many_channels();
        }
        let mut answers = Vec::with_capacity(triggers.len());
        for trigger in &triggers {
            match self.trigger(ctx, app, &mut channels, trigger) {
                // A batch event names one channel: its attributes, or {}.
                Ok(channels) => answers.push(channels.and_then(|c| c.into_iter().next()).map_or(json!({}), |(_, v)| v)),
                Err(response) => return response,
            }
        }
        if triggers.iter().any(|t| t.info.any()) {
            json_response(200, json!({"batch": answers}))
        } else {
            json_response(200, json!({}))
        }
    }

    /// Checks one event for this app and node (`check_event`).
    fn check<'a>(&self, app: usize, event: &'a EventBody<'a>) -> Result<Trigger<'a>, Response> {
        check_event(event, self.apps[app].config.max_event_size, self.node())
    }

    /// Whether every channel the checked events name can be tracked (user channels have no
    /// history). Checked under the lock the publishes then hold, so a request is refused before
    /// any of it is published, never half way (an SDK's retry would duplicate the published part).
    fn fits(&self, app: usize, channels: &mut Channels, triggers: &[Trigger<'_>]) -> bool {
        let keys: Vec<Cow<'_, str>> = triggers
            .iter()
            .flat_map(|t| &t.channels)
            .filter(|c| Kind::of(c) != Kind::User)
            .map(|c| app_key(app, c))
            .collect();
        channels.fits(keys.iter().map(AsRef::as_ref), Instant::now())
    }

    /// Publishes a checked event on each of its channels, under the history lock the caller
    /// holds (after `fits`); with `info`, the channels' attributes.
    fn trigger(
        &self,
        ctx: &mut Ctx<'_>,
        app: usize,
        channels: &mut Channels,
        t: &Trigger<'_>,
    ) -> Result<Option<Map<String, Value>>, Response> {
        let mut answer = Map::new();
        for channel in &t.channels {
            if let Some(user) = channel.strip_prefix(protocol::USER_CHANNEL_PREFIX) {
                t.to_user(ctx, app, channel, user);
                continue;
            }
            let key = app_key(app, channel);
            crate::space::publish_locked(channels, ctx, t.publish(channel, &key)).map_err(|_| too_many_channels())?;
            if t.info.any() {
                let attrs = self.attributes(channels.pusher_subscribers(&key), &key, channel, t.info);
                answer.insert(channel.clone(), attrs);
            }
        }
        Ok(t.info.any().then_some(answer))
    }

    /// Publishes checked events through the Redis engine. The answer is deferred until Redis
    /// has numbered every one: `{}`, or 503 when any was refused (Redis down, queue full). The
    /// `info` attributes are not answered in a cluster (they would need every node's counts).
    fn trigger_cluster(&self, ctx: &mut Ctx<'_>, cluster: &Cluster, app: usize, triggers: &[Trigger<'_>]) -> Response {
        let tally = Arc::new(Tally {
            left: AtomicUsize::new(triggers.iter().map(|t| t.channels.len()).sum()),
            refused: Mutex::new(None),
            pending: Mutex::new(Some(ctx.defer())),
        });
        for t in triggers {
            for channel in &t.channels {
                if let Some(user) = channel.strip_prefix(protocol::USER_CHANNEL_PREFIX) {
                    t.to_user(ctx, app, channel, user); // this node's connections of the user
                    tally.done(None);
                    continue;
                }
                let key = app_key(app, channel);
                let tally = tally.clone();
                cluster.publish_space(
                    &t.publish(channel, &key),
                    t.socket,
                    Box::new(move |result| tally.done(result.err())),
                );
            }
        }
        Response::new(202) // not sent: the deferred answer is
    }

    /// A channel's attributes: `subscription_count` and, on presence channels, `user_count`.
    fn attributes(&self, subscribers: usize, key: &str, channel: &str, info: Info) -> Value {
        attributes(info, channel, subscribers as u64, || self.state().user_count(key) as u64)
    }

    /// Answers a channel query from Redis (in a cluster): deferred until Redis has answered.
    fn ask(
        ctx: &mut Ctx<'_>,
        cluster: &Cluster,
        query: Query,
        answer: impl FnOnce(Vec<(String, u64, u64)>) -> Response + Send + 'static,
    ) -> Response {
        let pending = ctx.defer();
        cluster.query(
            query,
            Box::new(move |rows| {
                pending.respond(match rows {
                    Ok(rows) => answer(rows),
                    Err(e) => e.response(),
                })
            }),
        );
        Response::new(202) // not sent: the deferred answer is
    }

    /// `GET /apps/{id}/channels`: the occupied channels, by prefix, with attributes.
    fn channels(&self, ctx: &mut Ctx<'_>, app: usize, request: &Request<'_>) -> Response {
        let prefix = param(request, "filter_by_prefix").unwrap_or_default();
        let info = match Info::parse(param(request, "info").as_deref()) {
            Ok(info) => info,
            Err(e) => return error(400, e),
        };
        if info.user_count && !prefix.starts_with("presence-") {
            return error(400, "user_count is only for presence channels: add filter_by_prefix=presence-");
        }
        let key_prefix = app_key(app, &prefix).into_owned();
        let strip = key_prefix.len() - prefix.len();
        if let Some(cluster) = &self.cluster {
            return Self::ask(ctx, cluster, Query::Occupied(key_prefix), move |rows| {
                let mut answer = Map::new();
                for (key, subscriptions, users) in rows {
                    if app == 0 && key.starts_with('#') {
                        continue; // another app's channel
                    }
                    let name = &key[strip..];
                    answer.insert(name.to_owned(), attributes(info, name, subscriptions, || users));
                }
                json_response(200, json!({"channels": answer}))
            });
        }
        let channels = self.space.lock();
        let mut answer = Map::new();
        for (key, subscribers) in channels.pusher_occupied(&key_prefix) {
            let name = &key[strip..];
            if app == 0 && key.starts_with('#') {
                continue; // another app's channel
            }
            answer.insert(name.to_owned(), self.attributes(subscribers, key, name, info));
        }
        json_response(200, json!({"channels": answer}))
    }

    /// `GET /apps/{id}/channels/{name}`: `occupied` and the attributes asked for.
    fn channel(&self, ctx: &mut Ctx<'_>, app: usize, name: &str, request: &Request<'_>) -> Response {
        if let Err(e) = protocol::validate_channel(name) {
            return error(400, e);
        }
        let info = match Info::parse(param(request, "info").as_deref()) {
            Ok(info) => info,
            Err(e) => return error(400, e),
        };
        if info.user_count && Kind::of(name) != Kind::Presence {
            return error(400, "user_count is only for presence channels");
        }
        let key = app_key(app, name);
        if let Some(cluster) = &self.cluster {
            let name = name.to_owned();
            return Self::ask(ctx, cluster, Query::Channel(key.into_owned()), move |rows| {
                let (subscriptions, users) = rows.first().map_or((0, 0), |r| (r.1, r.2));
                let mut answer = json!({"occupied": subscriptions > 0});
                if let (Value::Object(a), Value::Object(attrs)) =
                    (&mut answer, attributes(info, &name, subscriptions, || users))
                {
                    a.extend(attrs);
                }
                json_response(200, answer)
            });
        }
        let subscribers = self.space.lock().pusher_subscribers(&key);
        let mut answer = json!({"occupied": subscribers > 0});
        if let (Value::Object(a), Value::Object(attrs)) = (&mut answer, self.attributes(subscribers, &key, name, info))
        {
            a.extend(attrs);
        }
        json_response(200, answer)
    }

    /// `GET /apps/{id}/channels/{name}/users`: a presence channel's users.
    fn users(&self, ctx: &mut Ctx<'_>, app: usize, name: &str) -> Response {
        if let Err(e) = protocol::validate_channel(name) {
            return error(400, e);
        }
        if Kind::of(name) != Kind::Presence {
            return error(400, "users are only listed for presence channels");
        }
        let key = app_key(app, name);
        if let Some(cluster) = &self.cluster {
            return Self::ask(ctx, cluster, Query::Users(key.into_owned()), |rows| {
                let users: Vec<Value> = rows.into_iter().map(|(id, _, _)| json!({"id": id})).collect();
                json_response(200, json!({"users": users}))
            });
        }
        let users: Vec<Value> = self.state().members(&key).map(|(id, _)| json!({"id": id})).collect();
        json_response(200, json!({"users": users}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_lists() {
        assert_eq!(
            Info::parse(Some("user_count,subscription_count")),
            Ok(Info { user_count: true, subscription_count: true })
        );
        assert_eq!(Info::parse(None), Ok(Info::default()));
        assert!(Info::parse(Some("cache")).is_err());
    }
}
