//! Laravel's Redis broadcaster as an input: what one message `PUBLISH`ed on an ingested Redis
//! channel means (`--redis-ingest PATTERN`, `--redis-ingest-strip PREFIX`).
//!
//! Owns: `parse`, pure. Laravel's `RedisBroadcaster` publishes `{"event":E,"data":D,"socket":S}`
//! on `<connection prefix><channel>`; it becomes a publish of `D` as event `E` on the channel,
//! except to the Pusher connection `S`. Invariants: every message is accepted or refused with a
//! reason, never a panic; a refused one costs no seq; a missing `data` is `null`; `data` is
//! carried as raw JSON, never re-serialised; a channel name must be one both protocols accept
//! (Pusher's rules: a Pusher subscriber must be able to hear it).

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::native::protocol::validate_event;
use crate::pusher::protocol::validate_channel;

/// One Laravel broadcast, ready to publish.
#[derive(Debug)]
pub struct Broadcast {
    pub channel: String,
    pub event: String,
    /// One JSON value (`null` when the message had no `data`).
    pub data: Box<RawValue>,
    /// The Pusher `socket_id` that must not receive it (Laravel's `->toOthers()`).
    pub socket: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    event: Option<serde_json::Value>,
    data: Option<Box<RawValue>>,
    socket: Option<serde_json::Value>,
}

/// Reads the message `payload` published on Redis channel `redis_channel`. `strip` is removed
/// from the front of the channel name when present; `max` is the largest payload accepted.
pub fn parse(redis_channel: &[u8], payload: &[u8], strip: Option<&str>, max: usize) -> Result<Broadcast, String> {
    if payload.len() > max {
        return Err(format!("{} bytes, over the message size limit of {max}", payload.len()));
    }
    let channel = std::str::from_utf8(redis_channel).map_err(|_| "the channel name is not UTF-8".to_owned())?;
    let channel = strip.and_then(|p| channel.strip_prefix(p)).unwrap_or(channel);
    validate_channel(channel)?;
    let text = std::str::from_utf8(payload).map_err(|_| "the message is not UTF-8".to_owned())?;
    let message: Message = serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let event = match message.event {
        Some(serde_json::Value::String(e)) => e,
        Some(_) => return Err("\"event\" is not a string".into()),
        None => return Err("no \"event\"".into()),
    };
    validate_event(&event)?;
    let socket = match message.socket {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        Some(serde_json::Value::String(_)) => None,
        Some(_) => return Err("\"socket\" is not a string".into()),
    };
    let data = message.data.unwrap_or_else(|| RawValue::from_string("null".into()).expect("null is JSON"));
    Ok(Broadcast { channel: channel.to_owned(), event, data, socket })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(channel: &str, payload: &str) -> Broadcast {
        parse(channel.as_bytes(), payload.as_bytes(), Some("laravel_database_"), 1000).unwrap()
    }

    fn bad(channel: &[u8], payload: &[u8]) -> String {
        parse(channel, payload, Some("laravel_database_"), 1000).unwrap_err()
    }

    #[test]
    fn laravel_messages() {
        let b = ok(
            "laravel_database_private-orders.1",
            r#"{"event":"App\\Events\\Shipped","data":{"id":1,"socket":null},"socket":"123.456"}"#,
        );
        assert_eq!((b.channel.as_str(), b.event.as_str()), ("private-orders.1", r"App\Events\Shipped"));
        assert_eq!((b.data.get(), b.socket.as_deref()), (r#"{"id":1,"socket":null}"#, Some("123.456")));
        let b = ok("news", r#"{"event":"E"}"#);
        assert_eq!((b.channel.as_str(), b.data.get(), b.socket), ("news", "null", None), "no prefix, no data");
        assert_eq!(ok("news", r#"{"event":"E","data":"text"}"#).data.get(), r#""text""#);
    }

    #[test]
    fn malformed_messages_have_reasons() {
        for (channel, payload, why) in [
            (&b"news"[..], &b"not json"[..], "not a JSON object"),
            (b"news", b"[1]", "not a JSON object"),
            (b"news", br#"{"data":1}"#, "no \"event\""),
            (b"news", br#"{"event":7}"#, "not a string"),
            (b"news", br#"{"event":"pusher:x"}"#, "reserved"),
            (b"news", b"{\"event\":\"\xff\"}", "not UTF-8"),
            (b"bad channel", br#"{"event":"E"}"#, "contains"),
            (b"\xffnews", br#"{"event":"E"}"#, "not UTF-8"),
            (b"news", br#"{"event":"E","socket":5}"#, "socket"),
        ] {
            let e = bad(channel, payload);
            assert!(e.contains(why), "{payload:?}: {e}");
        }
        let big = format!(r#"{{"event":"E","data":"{}"}}"#, "x".repeat(1000));
        assert!(bad(b"news", big.as_bytes()).contains("over the message size limit"));
    }
}
