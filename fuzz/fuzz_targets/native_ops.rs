//! Fuzz target: the `fanout.v1` client ops (`fanout_gateway::native::protocol::parse`), one JSON
//! object per text frame, and the replies built from what they carry.
//!
//! Input: the text of one frame (not UTF-8: skipped, since the receiver refuses such a frame).
//! Invariants checked, beyond "no panic, no hang":
//! - an accepted op names a valid channel (and a valid event, for a publish);
//! - the `message` op built from a publish is JSON carrying the same channel, event and data
//!   (data is relayed byte for byte, never re-serialised); `subscribed`, `unsubscribed` and
//!   `ack` are JSON with the same channel and id;
//! - a refused frame gets an `error` op, JSON, with one of the documented codes.
#![no_main]

use fanout_gateway::native::protocol::{
    ack, message, parse, subscribed, unsubscribed, validate_channel, validate_event, Op,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn json(text: &[u8]) -> Value {
    serde_json::from_slice(text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(text)))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let request = match parse(text) {
        Ok(request) => request,
        Err(e) => {
            assert!(["bad_request", "bad_channel", "unknown_op"].contains(&e.code), "code {}", e.code);
            let v = json(e.to_json().as_bytes());
            assert_eq!((v["op"].as_str(), v["code"].as_str()), (Some("error"), Some(e.code)));
            assert_eq!(v["message"].as_str(), Some(e.message.as_str()));
            return;
        }
    };
    let id = request.id.map(|id| id.get());
    if let Ok(id_value) = id.map(serde_json::from_str::<Value>).transpose() {
        let v = json(ack(id, 21).as_bytes());
        assert_eq!((v["op"].as_str(), v["seq"].as_u64()), (Some("ack"), Some(21)));
        assert_eq!(v.get("id").cloned(), id_value);
    }
    match request.op {
        Op::Subscribe { channel, .. } => {
            validate_channel(&channel).expect("an accepted channel is valid");
            let v = json(subscribed(&channel, 3, "ep", Some(true)).as_bytes());
            assert_eq!(v["channel"].as_str(), Some(channel.as_str()));
        }
        Op::Unsubscribe { channel } => {
            validate_channel(&channel).expect("an accepted channel is valid");
            let v = json(unsubscribed(&channel).as_bytes());
            assert_eq!(v["channel"].as_str(), Some(channel.as_str()));
        }
        Op::Publish { channel, event, data } => {
            validate_channel(&channel).expect("an accepted channel is valid");
            if let Some(event) = &event {
                validate_event(event).expect("an accepted event is valid");
            }
            // A number beyond f64 is valid JSON that serde_json's Value will not hold: compare
            // only what Value can represent (the frame still carries it byte for byte).
            let Ok(data_value) = serde_json::from_str::<Value>(data.get()) else { return };
            let frame = message(&channel, 7, event.as_deref(), data.get(), Some("u\"1"));
            let v = json(&frame);
            assert_eq!((v["op"].as_str(), v["seq"].as_u64()), (Some("message"), Some(7)));
            assert_eq!(v["channel"].as_str(), Some(channel.as_str()));
            assert_eq!(v.get("event").and_then(Value::as_str), event.as_deref());
            assert_eq!(v["data"], data_value);
            assert_eq!(v["user_id"].as_str(), Some("u\"1"));
        }
    }
});
