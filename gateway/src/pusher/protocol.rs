//! The Pusher Channels wire protocol, version 7: what a client frame says, the frames the server
//! sends, channel names and kinds, `socket_id`s and the close codes.
//!
//! Owns: parsing (`parse`, `SubscribeData`, `SigninData`, `ChannelData`, `UserData`) and
//! building frames; `Kind` and `validate_channel`; `socket_id` to and from a `ConnId`; the
//! `ErrorCode`s. Invariants: in every server event but `pusher:error` (and the
//! `pusher:subscription_error` pusher-js itself defines) `data` is a JSON-encoded string; names
//! and messages are JSON-escaped, never pasted; a malformed frame is an error value, never a
//! panic. Imports nothing else of this crate but `native::protocol::json_string` (one JSON
//! string encoder for every frame; that module is a leaf), and touches no connection or state.

use std::borrow::Cow;

use fanout::{CloseCode, ConnId};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::native::protocol::json_string;

/// The protocol version served: 7, the one the protocol's documentation describes and every
/// current client (pusher-js, the mobile SDKs) sends. Others get 4007.
pub const VERSION: u32 = 7;

/// Longest channel name the HTTP API and the client accept.
pub const MAX_CHANNEL_LEN: usize = 164;

/// Longest user id (presence `user_id`, sign-in `id`).
pub const MAX_USER_ID_LEN: usize = 128;

/// The channel a signed-in user's connections receive the user's events on.
pub const USER_CHANNEL_PREFIX: &str = "#server-to-user-";

/// The error codes of the protocol (its "Error Codes" section). 4000-4099: the client must not
/// reconnect with the same settings; 4100-4199: reconnect after backing off; 4200-4299:
/// reconnect at once; 4300-4399: other errors, the connection stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 4001: no app has this key.
    UnknownApp = 4001,
    /// 4003: the app is disabled.
    AppDisabled = 4003,
    /// 4004: the app is over its connection quota.
    OverQuota = 4004,
    /// 4005: the path is not `/app/{key}`.
    PathNotFound = 4005,
    /// 4006: `protocol` is not a number.
    BadVersionFormat = 4006,
    /// 4007: `protocol` is a version this server does not speak (anything but 7). Also for no
    /// `protocol` at all: the protocol's documentation says a missing version means version 1
    /// (4008, "no protocol version supplied", is announced as its future replacement).
    UnsupportedVersion = 4007,
    /// 4009: the connection is not authorized (origin refused, user terminated by the API).
    Unauthorized = 4009,
    /// 4200: reconnect at once (the server is stopping; another node, or this one restarted,
    /// takes the client).
    ReconnectNow = 4200,
    /// 4201: a `pusher:ping` got no `pusher:pong` within the idle timeout.
    PongTimeout = 4201,
    /// 4301: a client event over the rate limit, refused; the connection stays open.
    ClientEventRateLimit = 4301,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        self as u16
    }

    pub fn close_code(self) -> CloseCode {
        CloseCode::new(self.code())
    }
}

/// What a channel's name makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Public,
    /// `private-` (and `private-cache-`): subscribing needs a signature.
    Private,
    /// `private-encrypted-`: signed like a private channel; payloads pass through untouched.
    Encrypted,
    /// `presence-`: signed over `channel_data` too; members are tracked.
    Presence,
    /// `#server-to-user-<id>`: a signed-in user's own channel.
    User,
}

impl Kind {
    pub fn of(name: &str) -> Kind {
        if name.starts_with("private-encrypted-") {
            Kind::Encrypted
        } else if name.starts_with("private-") {
            Kind::Private
        } else if name.starts_with("presence-") {
            Kind::Presence
        } else if name.starts_with(USER_CHANNEL_PREFIX) {
            Kind::User
        } else {
            Kind::Public
        }
    }

    /// Whether subscribing needs an `auth` signature.
    pub fn needs_auth(self) -> bool {
        matches!(self, Kind::Private | Kind::Encrypted | Kind::Presence)
    }
}

/// A channel name: 1 to 164 of `A-Z a-z 0-9 _ - = @ , . ;` (Pusher's set).
pub fn validate_channel(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CHANNEL_LEN {
        return Err(format!("channel names are 1 to {MAX_CHANNEL_LEN} characters"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_-=@,.;".contains(*c))) {
        return Err(format!("channel name {name:?} contains {bad:?}; allowed: A-Z a-z 0-9 _ - = @ , . ;"));
    }
    Ok(())
}

/// A user id: 1 to 128 characters, no control characters.
pub fn validate_user_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.chars().count() > MAX_USER_ID_LEN || id.chars().any(char::is_control) {
        return Err(format!("user ids are 1 to {MAX_USER_ID_LEN} characters, none a control character"));
    }
    Ok(())
}

/// The `socket_id` of connection `id` on cluster node `node` (0 without a cluster): "A.B", as
/// the server SDKs require (`^\d+\.\d+$`), A the worker and slot, B the node and the slot's
/// generation, so that in a cluster a `socket_id` names one connection of one node.
pub fn socket_id(id: ConnId, node: u32) -> String {
    let (high, low) = id.to_parts();
    format!("{high}.{}", (u64::from(node) << 32) | u64::from(low))
}

/// The node and connection a `socket_id` names (None when it is not "A.B" with A and B numbers).
pub fn parse_socket_id(s: &str) -> Option<(u32, ConnId)> {
    let (high, low) = s.split_once('.')?;
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !digits(high) || !digits(low) {
        return None;
    }
    let low: u64 = low.parse().ok()?;
    Some(((low >> 32) as u32, ConnId::from_parts(high.parse().ok()?, low as u32)))
}

/// A frame from a client.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    pub event: Cow<'a, str>,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
}

/// Parses one client frame.
pub fn parse(text: &str) -> Result<Incoming<'_>, String> {
    serde_json::from_str(text).map_err(|e| format!("expected {{\"event\":...,\"data\":...}}: {e}"))
}

/// Reads a frame's `data` object, also when a client sent it as a JSON string of one.
pub fn data_object<T: DeserializeOwned>(data: Option<&RawValue>) -> Result<T, String> {
    let raw = data.ok_or("missing data")?.get();
    let parsed = if raw.starts_with('"') {
        let inner: String = serde_json::from_str(raw).map_err(|e| e.to_string())?;
        serde_json::from_str(&inner)
    } else {
        serde_json::from_str(raw)
    };
    parsed.map_err(|e| format!("bad data: {e}"))
}

/// `pusher:subscribe`'s data.
#[derive(Debug, Deserialize)]
pub struct SubscribeData {
    pub channel: String,
    #[serde(default)]
    pub auth: Option<String>,
    /// Presence only: the exact string that was signed.
    #[serde(default)]
    pub channel_data: Option<String>,
}

/// `pusher:unsubscribe`'s data.
#[derive(Debug, Deserialize)]
pub struct UnsubscribeData {
    pub channel: String,
}

/// `pusher:signin`'s data.
#[derive(Debug, Deserialize)]
pub struct SigninData {
    pub auth: String,
    /// The exact string that was signed.
    pub user_data: String,
}

/// A presence subscription's `channel_data`: who the member is.
#[derive(Debug)]
pub struct ChannelData {
    pub user_id: String,
    /// `user_info` as JSON (`null` when absent).
    pub user_info: String,
}

/// A user id is a string; SDKs also send numbers, which count as their decimal text.
fn id_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads `channel_data`: `{"user_id": ..., "user_info": ...}`.
pub fn parse_channel_data(text: &str) -> Result<ChannelData, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("channel_data is not JSON: {e}"))?;
    let user_id = v.get("user_id").and_then(id_text).ok_or("channel_data has no user_id")?;
    validate_user_id(&user_id)?;
    let user_info = v.get("user_info").map_or_else(|| "null".to_owned(), |i| i.to_string());
    Ok(ChannelData { user_id, user_info })
}

/// Reads a sign-in's `user_data`: `{"id": ..., ...}`; returns the id.
pub fn parse_user_data(text: &str) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("user_data is not JSON: {e}"))?;
    let id = v.get("id").and_then(id_text).ok_or("user_data has no id")?;
    validate_user_id(&id)?;
    Ok(id)
}

/// `pusher:connection_established`, `data` a string.
pub fn connection_established(socket_id: &str, activity_timeout: u64) -> String {
    let data = json!({"socket_id": socket_id, "activity_timeout": activity_timeout}).to_string();
    json!({"event": "pusher:connection_established", "data": data}).to_string()
}

/// `pusher:error`: here `data` is an object; `code` may be null (an error with no code).
pub fn error(code: Option<u16>, message: &str) -> String {
    json!({"event": "pusher:error", "data": {"code": code, "message": message}}).to_string()
}

/// `pusher:error` about one channel (a client event refused).
pub fn channel_error(channel: &str, code: Option<u16>, message: &str) -> String {
    json!({"event": "pusher:error", "channel": channel, "data": {"code": code, "message": message}}).to_string()
}

pub const PONG: &str = r#"{"event":"pusher:pong","data":"{}"}"#;
pub const PING: &str = r#"{"event":"pusher:ping","data":"{}"}"#;

/// `pusher_internal:subscription_succeeded` of a channel without members.
pub fn subscription_succeeded(channel: &str) -> String {
    format!(r#"{{"event":"pusher_internal:subscription_succeeded","channel":{},"data":"{{}}"}}"#, json_string(channel))
}

/// `pusher_internal:subscription_succeeded` of a presence channel: its members, as
/// `{"presence":{"ids":[...],"hash":{id: user_info},"count":N}}` in a string.
pub fn presence_succeeded<'a>(channel: &str, members: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let (mut ids, mut hash, mut count) = (String::new(), String::new(), 0usize);
    for (id, info) in members {
        let sep = if count == 0 { "" } else { "," };
        ids.push_str(sep);
        ids.push_str(&json_string(id));
        hash.push_str(sep);
        hash.push_str(&json_string(id));
        hash.push(':');
        hash.push_str(info);
        count += 1;
    }
    let data = format!(r#"{{"presence":{{"ids":[{ids}],"hash":{{{hash}}},"count":{count}}}}}"#);
    json!({"event": "pusher_internal:subscription_succeeded", "channel": channel, "data": data}).to_string()
}

/// `pusher:subscription_error` on the channel, shaped like the error pusher-js itself emits when
/// its authorizer fails (`type`, `error`, `status`), so applications handle both alike.
pub fn subscription_error(channel: &str, kind: &str, message: &str, status: u16) -> String {
    json!({"event": "pusher:subscription_error", "channel": channel, "data": {"type": kind, "error": message, "status": status}})
        .to_string()
}

/// `pusher_internal:member_added`, to the channel's other members.
pub fn member_added(channel: &str, user_id: &str, user_info: &str) -> String {
    let data = format!(r#"{{"user_id":{},"user_info":{user_info}}}"#, json_string(user_id));
    json!({"event": "pusher_internal:member_added", "channel": channel, "data": data}).to_string()
}

/// `pusher_internal:member_removed`, to the channel's remaining members.
pub fn member_removed(channel: &str, user_id: &str) -> String {
    let data = json!({"user_id": user_id}).to_string();
    json!({"event": "pusher_internal:member_removed", "channel": channel, "data": data}).to_string()
}

/// `pusher:signin_success`, echoing the signed `user_data`.
pub fn signin_success(user_data: &str) -> String {
    let data = json!({"user_data": user_data}).to_string();
    json!({"event": "pusher:signin_success", "data": data}).to_string()
}

/// `pusher:cache_miss`: a cache channel had nothing to replay.
pub fn cache_miss(channel: &str) -> String {
    json!({"event": "pusher:cache_miss", "channel": channel}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn v(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn kinds_and_names() {
        assert_eq!(Kind::of("news"), Kind::Public);
        assert_eq!(Kind::of("private-a"), Kind::Private);
        assert_eq!(Kind::of("private-cache-a"), Kind::Private);
        assert_eq!(Kind::of("private-encrypted-a"), Kind::Encrypted);
        assert_eq!(Kind::of("presence-cache-a"), Kind::Presence);
        assert_eq!(Kind::of("#server-to-user-7"), Kind::User);
        assert!(validate_channel("private-App.Models.User.1").is_ok());
        assert!(validate_channel("a=b@c,d;e").is_ok());
        assert!(validate_channel("a b").is_err() && validate_channel("").is_err());
        assert!(validate_channel("#server-to-user-1").is_err(), "not subscribable by name");
        assert!(validate_channel(&"x".repeat(165)).is_err());
    }

    #[test]
    fn socket_ids_round_trip_and_look_like_the_sdks_want() {
        let id = ConnId::from_parts((1 << 32) | 5, 9);
        let s = socket_id(id, 0);
        assert!(s.split('.').count() == 2 && s.bytes().all(|b| b.is_ascii_digit() || b == b'.'), "{s}");
        assert_eq!(parse_socket_id(&s), Some((0, id)));
        let s = socket_id(id, 0xdead_beef);
        assert_eq!(parse_socket_id(&s), Some((0xdead_beef, id)), "{s}: the node travels with it");
        for bad in ["", "1", "1.", ".1", "1.2.3", "a.1", "-1.2", "1.99999999999999999999"] {
            assert_eq!(parse_socket_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn client_frames() {
        let f = parse(r#"{"event":"pusher:subscribe","data":{"channel":"presence-a","auth":"k:s","channel_data":"{\"user_id\":1}"}}"#).unwrap();
        let d: SubscribeData = data_object(f.data).unwrap();
        assert_eq!((d.channel.as_str(), d.auth.as_deref()), ("presence-a", Some("k:s")));
        let cd = parse_channel_data(d.channel_data.as_deref().unwrap()).unwrap();
        assert_eq!((cd.user_id.as_str(), cd.user_info.as_str()), ("1", "null"));
        let f = parse(r#"{"event":"pusher:unsubscribe","data":"{\"channel\":\"a\"}"}"#).unwrap();
        assert_eq!(data_object::<UnsubscribeData>(f.data).unwrap().channel, "a");
        let f = parse(r#"{"event":"client-x","channel":"private-a","data":{"k":1}}"#).unwrap();
        assert_eq!(
            (f.event.as_ref(), f.channel.as_deref(), f.data.unwrap().get()),
            ("client-x", Some("private-a"), r#"{"k":1}"#)
        );
        assert!(parse("{nope").is_err() && parse(r#"{"data":1}"#).is_err());
        assert!(data_object::<SubscribeData>(None).is_err());
        assert!(parse_channel_data(r#"{"user_info":{}}"#).is_err());
        assert_eq!(parse_user_data(r#"{"id":"u1","user_info":{"n":1}}"#).unwrap(), "u1");
        assert!(parse_user_data(r#"{"name":"x"}"#).is_err());
    }

    #[test]
    fn server_frames_have_string_data_except_errors() {
        let e = v(&connection_established("1.2", 60));
        assert_eq!(e["event"], "pusher:connection_established");
        assert_eq!(v(e["data"].as_str().unwrap()), json!({"socket_id":"1.2","activity_timeout":60}));
        assert_eq!(v(&error(Some(4001), "no")), json!({"event":"pusher:error","data":{"code":4001,"message":"no"}}));
        assert_eq!(v(&error(None, "x"))["data"]["code"], Value::Null);
        assert_eq!(v(&subscription_succeeded("a\"b"))["channel"], "a\"b");
        let p = v(&presence_succeeded("presence-a", [("1", r#"{"n":"x"}"#), ("2", "null")].into_iter()));
        assert_eq!(
            v(p["data"].as_str().unwrap()),
            json!({"presence":{"ids":["1","2"],"hash":{"1":{"n":"x"},"2":null},"count":2}})
        );
        let empty = v(&presence_succeeded("presence-a", std::iter::empty()));
        assert_eq!(v(empty["data"].as_str().unwrap()), json!({"presence":{"ids":[],"hash":{},"count":0}}));
        let m = v(&member_added("presence-a", "1", r#"{"n":1}"#));
        assert_eq!(v(m["data"].as_str().unwrap()), json!({"user_id":"1","user_info":{"n":1}}));
        let m = v(&member_removed("presence-a", "1"));
        assert_eq!(v(m["data"].as_str().unwrap()), json!({"user_id":"1"}));
        let s = v(&signin_success(r#"{"id":"1"}"#));
        assert_eq!(v(s["data"].as_str().unwrap()), json!({"user_data":"{\"id\":\"1\"}"}));
        assert_eq!(v(&cache_miss("cache-a")), json!({"event":"pusher:cache_miss","channel":"cache-a"}));
        assert_eq!(v(&subscription_error("private-a", "AuthError", "bad", 401))["data"]["status"], 401);
        assert_eq!(v(PING)["event"], "pusher:ping");
        assert_eq!(v(PONG)["data"], "{}");
    }
}
