//! The one channel space: a channel's publishes reach its native (`fanout.v1`) subscribers and
//! its Pusher subscribers alike, each publish numbered once in the history.
//!
//! Owns: `Space` (the history behind its lock, shared by every worker's handler), `Event` (one
//! publish: its event name and data stored once, and the two encodings built from them, each at
//! most once), the topic names and `publish`. Invariants:
//!
//! - Two library topics per channel, because the two protocols' frames are different bytes: the
//!   channel's key for native subscribers, `#p:` + key for Pusher subscribers. Native channel
//!   names cannot contain `#`, so no native channel is ever a Pusher topic.
//! - A channel's key is its name for the first Pusher app (the one that shares the native
//!   channel space) and for native clients; other apps' channels are keyed `#<app>:<name>`, so
//!   apps never see each other's channels and native clients see none of theirs.
//! - Each publish is serialised once per protocol and handed to `Ctx::publish` (or
//!   `publish_except`) once: never per subscriber. A protocol's frame is not built, nor
//!   published, while the channel has no subscriber of that protocol (the history keeps the
//!   event: a native resume or a cache channel's replay builds the frame later).
//! - The history lock is held from the seq until both frames are on the bus, so every worker
//!   receives a channel's messages in seq order. Lock order: this lock first, then the Pusher
//!   state's (`pusher::state`), never the other way round.
//!
//! The mapping between the protocols (README, "Coming from Pusher"):
//!
//! - native -> Pusher: the event name is the publish's optional `"event"` (default `message`);
//!   the Pusher `data` is the native `data` itself when it is a JSON string, else its JSON text
//!   as a JSON string.
//! - Pusher -> native: `{"op":"message","channel":C,"seq":N,"event":E,"data":D}`, where `D` is the
//!   Pusher data string parsed as JSON when it is valid JSON, else the string itself (a client
//!   event's non-string data passes as it is), plus `"user_id"` for a client event on a presence
//!   channel.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use fanout::{ConnId, Ctx, Message};

use crate::history::{History, TooManyChannels};
use crate::native::protocol::{self, json_string};

/// The history as the gateway keeps it: one shared `Event` per publish.
pub type Channels = History<Arc<Event>>;

/// Where a publish came from, which decides how its data maps to the other protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `fanout.v1` or `POST /api/publish`: `data` is any JSON value.
    Native,
    /// The Pusher HTTP API or a client event: `data` is normally a JSON string.
    Pusher,
}

/// One publish, as the history keeps it.
#[derive(Debug)]
pub struct Event {
    channel: Box<str>,
    seq: u64,
    name: Option<Box<str>>,
    /// One JSON value, exactly as received.
    data: Box<str>,
    origin: Origin,
    user_id: Option<Box<str>>,
    native: OnceLock<Bytes>,
    pusher: OnceLock<Bytes>,
}

impl Event {
    /// The publish numbered `seq` on `channel` (its frames are built on first use).
    pub fn new(
        channel: &str,
        seq: u64,
        name: Option<&str>,
        data: &str,
        origin: Origin,
        user_id: Option<&str>,
    ) -> Event {
        Event {
            channel: channel.into(),
            seq,
            name: name.map(Into::into),
            data: data.into(),
            origin,
            user_id: user_id.map(Into::into),
            native: OnceLock::new(),
            pusher: OnceLock::new(),
        }
    }

    /// The channel's seq of this publish.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The `fanout.v1` `message` op (built on first use, then shared).
    pub fn native_frame(&self) -> Bytes {
        self.native
            .get_or_init(|| {
                let event = match self.origin {
                    Origin::Native => self.name.as_deref(),
                    Origin::Pusher => Some(self.name.as_deref().unwrap_or(DEFAULT_EVENT)),
                };
                protocol::message(&self.channel, self.seq, event, &self.native_data(), self.user_id.as_deref())
            })
            .clone()
    }

    /// The Pusher event frame (built on first use, then shared).
    pub fn pusher_frame(&self) -> Bytes {
        self.pusher
            .get_or_init(|| {
                let name = self.name.as_deref().unwrap_or(DEFAULT_EVENT);
                pusher_frame(&self.channel, name, &self.pusher_data(), self.user_id.as_deref())
            })
            .clone()
    }

    fn native_data(&self) -> Cow<'_, str> {
        let data = self.data.trim();
        if self.origin == Origin::Native || !data.starts_with('"') {
            return Cow::Borrowed(data);
        }
        match serde_json::from_str::<String>(data) {
            Ok(inner) if serde_json::from_str::<serde::de::IgnoredAny>(&inner).is_ok() => Cow::Owned(inner),
            _ => Cow::Borrowed(data),
        }
    }

    fn pusher_data(&self) -> Cow<'_, str> {
        let data = self.data.trim();
        if self.origin == Origin::Pusher || data.starts_with('"') {
            Cow::Borrowed(data)
        } else {
            Cow::Owned(json_string(data))
        }
    }
}

/// The Pusher event name of a native publish that names none.
pub const DEFAULT_EVENT: &str = "message";

/// What to publish.
#[derive(Debug, Clone, Copy)]
pub struct Publish<'a> {
    /// The channel's name as its subscribers see it.
    pub channel: &'a str,
    /// Its key (`app_key`): the history's name and the native topic.
    pub key: &'a str,
    pub event: Option<&'a str>,
    /// One JSON value.
    pub data: &'a str,
    pub origin: Origin,
    /// A presence channel's client event: the sender's user id.
    pub user_id: Option<&'a str>,
    /// A Pusher connection that must not receive it (the sender, or the API's `socket_id`).
    pub except: Option<ConnId>,
}

/// The channels and their history, shared by every worker's handler.
pub struct Space {
    channels: Mutex<Channels>,
}

impl Space {
    pub fn new(channels: Channels) -> Self {
        Space { channels: Mutex::new(channels) }
    }

    /// The history, locked. Take it before the Pusher state's lock, never after.
    pub fn lock(&self) -> MutexGuard<'_, Channels> {
        // A panic while holding the lock leaves the history consistent (every method finishes
        // its update before anything can panic), so a poisoned lock is still usable.
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Assigns the next seq, records the event and publishes it to both protocols' subscribers.
    pub fn publish(&self, ctx: &mut Ctx<'_>, p: Publish<'_>) -> Result<u64, TooManyChannels> {
        publish_locked(&mut self.lock(), ctx, p)
    }
}

/// `Space::publish` for a caller that already holds the lock.
pub fn publish_locked(channels: &mut Channels, ctx: &mut Ctx<'_>, p: Publish<'_>) -> Result<u64, TooManyChannels> {
    let (seq, event) = channels.publish(p.key, Instant::now(), is_cache_channel(p.channel), |seq| {
        Arc::new(Event::new(p.channel, seq, p.event, p.data, p.origin, p.user_id))
    })?;
    // Only for native subscribers (a resume builds the frame from the history's event later).
    if p.key == p.channel && channels.native_subscribers(p.key) > 0 && protocol::validate_channel(p.channel).is_ok() {
        ctx.publish(p.key, Message::Text(event.native_frame()));
    }
    if channels.pusher_subscribers(p.key) > 0 {
        let topic = pusher_topic(p.key);
        match p.except {
            Some(id) => ctx.publish_except(&topic, Message::Text(event.pusher_frame()), id),
            None => ctx.publish(&topic, Message::Text(event.pusher_frame())),
        }
    }
    Ok(seq)
}

/// The key of Pusher app `app`'s channel `name`: the name itself for the first app, which shares
/// the native channel space; `#<app>:<name>` for the others.
pub fn app_key(app: usize, name: &str) -> Cow<'_, str> {
    if app == 0 {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("#{app}:{name}"))
    }
}

/// The app and channel name of key `key` (the inverse of `app_key`).
pub fn split_key(key: &str) -> (usize, &str) {
    key.strip_prefix('#')
        .and_then(|rest| rest.split_once(':'))
        .and_then(|(app, name)| Some((app.parse().ok()?, name)))
        .unwrap_or((0, key))
}

/// The library topic of a channel's Pusher subscribers.
pub fn pusher_topic(key: &str) -> String {
    format!("#p:{key}")
}

/// Channels whose last event is replayed to each new subscriber.
pub fn is_cache_channel(name: &str) -> bool {
    ["cache-", "private-cache-", "presence-cache-", "private-encrypted-cache-"].iter().any(|p| name.starts_with(p))
}

/// `{"event":E,"channel":C,"data":D}` (plus `"user_id"`), `data` already JSON.
pub fn pusher_frame(channel: &str, event: &str, data: &str, user_id: Option<&str>) -> Bytes {
    let mut out = format!(r#"{{"event":{},"channel":{},"data":{data}"#, json_string(event), json_string(channel));
    if let Some(user_id) = user_id {
        out.push_str(r#","user_id":"#);
        out.push_str(&json_string(user_id));
    }
    out.push('}');
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(origin: Origin, name: Option<&str>, data: &str, user_id: Option<&str>) -> Event {
        Event::new("news", 4, name, data, origin, user_id)
    }

    fn text(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn native_publishes_map_to_pusher_events() {
        let e = event(Origin::Native, None, r#"{"text":"hi"}"#, None);
        assert_eq!(text(e.native_frame()), r#"{"op":"message","channel":"news","seq":4,"data":{"text":"hi"}}"#);
        assert_eq!(text(e.pusher_frame()), r#"{"event":"message","channel":"news","data":"{\"text\":\"hi\"}"}"#);
        let e = event(Origin::Native, Some("App\\Sent"), r#""plain""#, None);
        assert_eq!(
            text(e.native_frame()),
            r#"{"op":"message","channel":"news","seq":4,"event":"App\\Sent","data":"plain"}"#
        );
        assert_eq!(text(e.pusher_frame()), r#"{"event":"App\\Sent","channel":"news","data":"plain"}"#);
        assert_eq!(
            text(event(Origin::Native, None, "12", None).pusher_frame()),
            r#"{"event":"message","channel":"news","data":"12"}"#
        );
    }

    #[test]
    fn pusher_events_map_to_native_messages() {
        let e = event(Origin::Pusher, Some("order"), r#""{\"id\":1}""#, None);
        assert_eq!(text(e.pusher_frame()), r#"{"event":"order","channel":"news","data":"{\"id\":1}"}"#);
        assert_eq!(
            text(e.native_frame()),
            r#"{"op":"message","channel":"news","seq":4,"event":"order","data":{"id":1}}"#
        );
        let e = event(Origin::Pusher, Some("order"), r#""not json""#, None);
        assert_eq!(
            text(e.native_frame()),
            r#"{"op":"message","channel":"news","seq":4,"event":"order","data":"not json"}"#
        );
        let e = event(Origin::Pusher, Some("client-typing"), r#"{"on":true}"#, Some("7"));
        assert_eq!(
            text(e.pusher_frame()),
            r#"{"event":"client-typing","channel":"news","data":{"on":true},"user_id":"7"}"#
        );
        assert_eq!(
            text(e.native_frame()),
            r#"{"op":"message","channel":"news","seq":4,"event":"client-typing","data":{"on":true},"user_id":"7"}"#
        );
    }

    #[test]
    fn frames_are_built_once() {
        let e = event(Origin::Native, None, "1", None);
        assert_eq!(e.pusher_frame().as_ptr(), e.pusher_frame().as_ptr());
        assert_eq!(e.native_frame().as_ptr(), e.native_frame().as_ptr());
    }

    #[test]
    fn keys_and_cache_channels() {
        assert_eq!(app_key(0, "news"), "news");
        assert_eq!(app_key(2, "news"), "#2:news");
        assert_eq!((split_key("#2:news"), split_key("news")), ((2, "news"), (0, "news")));
        assert_eq!(pusher_topic("news"), "#p:news");
        for name in ["cache-a", "private-cache-a", "presence-cache-a", "private-encrypted-cache-a"] {
            assert!(is_cache_channel(name), "{name}");
        }
        assert!(!is_cache_channel("private-a") && !is_cache_channel("a-cache-b"));
    }
}
