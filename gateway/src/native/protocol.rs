//! The client protocol: one JSON object per text frame (README.md, "Client protocol").
//!
//! Owns: parsing client ops into `Op` and building the server's replies. Invariants: every
//! malformed input gets a specific `OpError` (code + message), never a panic; `data` is carried
//! as raw JSON and never re-serialised; a `message` op is built once per publish, whatever the
//! number of subscribers. A publish may name its event (`"event"`, optional): Pusher subscribers
//! of the channel get it under that name (`crate::space` has the mapping).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

/// Longest channel name.
pub const MAX_CHANNEL_LEN: usize = 128;

/// A channel name: 1 to 128 of `A-Z a-z 0-9 _ - . : @ /`. (`*` is for patterns only, and no
/// character needs escaping in JSON.)
pub fn validate_channel(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_CHANNEL_LEN {
        return Err(format!("channel must be 1 to {MAX_CHANNEL_LEN} characters"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_-.:@/".contains(*c))) {
        return Err(format!("channel contains {bad:?}; allowed: A-Z a-z 0-9 _ - . : @ /"));
    }
    Ok(())
}

/// Longest event name (Pusher's limit, so an event means the same on both protocols).
pub const MAX_EVENT_LEN: usize = 200;

/// An event name a publish may carry: 1 to 200 characters, not one of Pusher's own
/// (`pusher:...`, `pusher_internal:...`), which a Pusher client would take for the server's.
pub fn validate_event(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().count() > MAX_EVENT_LEN {
        return Err(format!("event must be 1 to {MAX_EVENT_LEN} characters"));
    }
    if name.starts_with("pusher:") || name.starts_with("pusher_internal:") {
        return Err("event names starting with pusher: or pusher_internal: are reserved".into());
    }
    Ok(())
}

#[derive(Deserialize)]
struct Envelope<'a> {
    op: Option<String>,
    channel: Option<String>,
    since: Option<u64>,
    epoch: Option<String>,
    event: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

/// A client request.
#[derive(Debug)]
pub enum Op<'a> {
    /// `since`: resume after this seq; `epoch`: the epoch that seq belongs to, if known.
    Subscribe {
        channel: String,
        since: Option<u64>,
        epoch: Option<String>,
    },
    Unsubscribe {
        channel: String,
    },
    /// `event`: the event name Pusher subscribers see (default `message`).
    Publish {
        channel: String,
        event: Option<String>,
        data: &'a RawValue,
    },
}

/// A request and its optional `id` (any JSON value, echoed in `ack` and `error`).
#[derive(Debug)]
pub struct Request<'a> {
    pub id: Option<&'a RawValue>,
    pub op: Op<'a>,
}

/// An `error` op to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    pub id: Option<String>,
    pub code: &'static str,
    pub message: String,
}

impl OpError {
    pub fn new(id: Option<&RawValue>, code: &'static str, message: impl Into<String>) -> Self {
        OpError { id: id.map(|r| r.get().to_owned()), code, message: message.into() }
    }

    /// The same error answering request `id` (raw JSON, as `id` was sent).
    pub fn with_id(mut self, id: Option<String>) -> Self {
        self.id = id;
        self
    }

    pub fn to_json(&self) -> String {
        let mut v = json!({"op": "error", "code": self.code, "message": self.message});
        if let Some(id) = &self.id {
            v["id"] = serde_json::from_str(id).unwrap_or(serde_json::Value::Null);
        }
        v.to_string()
    }
}

/// Parses one client frame.
pub fn parse(text: &str) -> Result<Request<'_>, OpError> {
    let env: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| OpError::new(None, "bad_request", format!("invalid JSON: {e}")))?;
    let id = env.id;
    let op = env.op.ok_or_else(|| OpError::new(id, "bad_request", "missing \"op\""))?;
    let channel = || -> Result<String, OpError> {
        let channel = env.channel.clone().ok_or_else(|| OpError::new(id, "bad_request", "missing \"channel\""))?;
        validate_channel(&channel).map_err(|m| OpError::new(id, "bad_channel", m))?;
        Ok(channel)
    };
    let op = match op.as_str() {
        "subscribe" => Op::Subscribe { channel: channel()?, since: env.since, epoch: env.epoch.clone() },
        "unsubscribe" => Op::Unsubscribe { channel: channel()? },
        "publish" => {
            let channel = channel()?;
            let data = env.data.ok_or_else(|| OpError::new(id, "bad_request", "missing \"data\""))?;
            if let Some(event) = &env.event {
                validate_event(event).map_err(|m| OpError::new(id, "bad_request", m))?;
            }
            Op::Publish { channel, event: env.event.clone(), data }
        }
        other => {
            return Err(OpError::new(
                id,
                "unknown_op",
                format!("unknown op {other:?}; use subscribe, unsubscribe or publish"),
            ))
        }
    };
    Ok(Request { id, op })
}

/// `{"op":"message","channel":C,"seq":N,"data":D}`, built once per publish; with
/// `"event":E` before `data` when the publish named one (or came from Pusher), and
/// `"user_id":U` after it for a Pusher client event on a presence channel. The channel is
/// validated (nothing to escape), `data` is already JSON, and the names are escaped.
pub fn message(channel: &str, seq: u64, event: Option<&str>, data: &str, user_id: Option<&str>) -> Bytes {
    let mut out = format!(r#"{{"op":"message","channel":"{channel}","seq":{seq},"#);
    if let Some(event) = event {
        out.push_str(r#""event":"#);
        out.push_str(&json_string(event));
        out.push(',');
    }
    out.push_str(r#""data":"#);
    out.push_str(data);
    if let Some(user_id) = user_id {
        out.push_str(r#","user_id":"#);
        out.push_str(&json_string(user_id));
    }
    out.push('}');
    Bytes::from(out)
}

/// `s` as a JSON string literal, quotes and escapes included. The gateway's one encoder for it:
/// the Pusher frames (`pusher::protocol`, `space`) use it too.
pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// The reply to a subscribe. `recovered` is present only when the client asked to resume.
pub fn subscribed(channel: &str, seq: u64, epoch: &str, recovered: Option<bool>) -> String {
    let mut v = json!({"op": "subscribed", "channel": channel, "seq": seq, "epoch": epoch});
    if let Some(r) = recovered {
        v["recovered"] = r.into();
    }
    v.to_string()
}

pub fn unsubscribed(channel: &str) -> String {
    json!({"op": "unsubscribed", "channel": channel}).to_string()
}

/// `{"op":"ack","id":ID,"seq":N}`; `id` is raw JSON as the request sent it.
pub fn ack(id: Option<&str>, seq: u64) -> String {
    match id {
        Some(id) => format!(r#"{{"op":"ack","id":{id},"seq":{seq}}}"#),
        None => format!(r#"{{"op":"ack","seq":{seq}}}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (&'static str, String) {
        let e = parse(text).unwrap_err();
        (e.code, e.message)
    }

    #[test]
    fn parses_each_op() {
        let r = parse(r#"{"op":"subscribe","channel":"news","since":17}"#).unwrap();
        assert!(matches!(r.op, Op::Subscribe { ref channel, since: Some(17), epoch: None } if channel == "news"));
        let r = parse(r#"{"op":"unsubscribe","channel":"news"}"#).unwrap();
        assert!(matches!(r.op, Op::Unsubscribe { ref channel } if channel == "news"));
        let r = parse(r#"{"op":"publish","channel":"chat:1","data":{"t":[1,2]},"id":7}"#).unwrap();
        match r.op {
            Op::Publish { channel, event: None, data } => {
                assert_eq!((channel.as_str(), data.get()), ("chat:1", r#"{"t":[1,2]}"#))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.id.unwrap().get(), "7");
        let r = parse(r#"{"op":"publish","channel":"c","event":"App\\Events\\Sent","data":1}"#).unwrap();
        assert!(matches!(r.op, Op::Publish { event: Some(ref e), .. } if e == "App\\Events\\Sent"));
    }

    #[test]
    fn each_malformed_input_has_its_code() {
        assert_eq!(err("{nope").0, "bad_request");
        assert_eq!(err("[1,2]").0, "bad_request");
        assert_eq!(err(r#"{"channel":"x"}"#), ("bad_request", "missing \"op\"".into()));
        assert_eq!(err(r#"{"op":"dance","channel":"x"}"#).0, "unknown_op");
        assert_eq!(err(r#"{"op":"subscribe"}"#), ("bad_request", "missing \"channel\"".into()));
        assert_eq!(err(r#"{"op":"subscribe","channel":"a b"}"#).0, "bad_channel");
        assert_eq!(err(r#"{"op":"subscribe","channel":""}"#).0, "bad_channel");
        assert_eq!(err(&format!(r#"{{"op":"subscribe","channel":"{}"}}"#, "x".repeat(129))).0, "bad_channel");
        assert_eq!(err(r#"{"op":"publish","channel":"x","id":3}"#), ("bad_request", "missing \"data\"".into()));
        assert_eq!(err(r#"{"op":"subscribe","channel":"x","since":-1}"#).0, "bad_request");
        assert_eq!(err(r#"{"op":"publish","channel":"x","event":"pusher:ping","data":1}"#).0, "bad_request");
        assert_eq!(err(r#"{"op":"publish","channel":"x","event":"","data":1}"#).0, "bad_request");
        assert_eq!(err(r#"{"op":"publish","channel":"x","event":7,"data":1}"#).0, "bad_request");
        let e = parse(r#"{"op":"publish","channel":"x","id":"abc"}"#).unwrap_err();
        assert_eq!(e.to_json(), r#"{"code":"bad_request","id":"abc","message":"missing \"data\"","op":"error"}"#);
    }

    #[test]
    fn replies() {
        let data = RawValue::from_string(r#"{"a":"\u00e9"}"#.into()).unwrap();
        assert_eq!(
            &message("news", 18, None, data.get(), None)[..],
            br#"{"op":"message","channel":"news","seq":18,"data":{"a":"\u00e9"}}"#
        );
        assert_eq!(
            &message("news", 3, Some("App\\E"), "1", Some("u\"1"))[..],
            br#"{"op":"message","channel":"news","seq":3,"event":"App\\E","data":1,"user_id":"u\"1"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&subscribed("news", 20, "k3x9", Some(true))).unwrap();
        assert_eq!(v, json!({"op":"subscribed","channel":"news","seq":20,"epoch":"k3x9","recovered":true}));
        let v: serde_json::Value = serde_json::from_str(&subscribed("news", 0, "k", None)).unwrap();
        assert!(v.get("recovered").is_none());
        let id = RawValue::from_string("7".into()).unwrap();
        assert_eq!(ack(Some(id.get()), 21), r#"{"op":"ack","id":7,"seq":21}"#);
    }
}
