//! Fuzz target: the Pusher protocol 7 frames a client sends (`fanout_gateway::pusher::protocol`):
//! the envelope, the data of `pusher:subscribe`, `pusher:unsubscribe` and `pusher:signin`
//! (also as a JSON string of an object, as some clients send it), a presence subscription's
//! `channel_data`, a sign-in's `user_data`, and `socket_id`s.
//!
//! Input: the text of one frame (not UTF-8: skipped, since the receiver refuses such a frame).
//! The same text is also read as `channel_data`, `user_data` and a `socket_id` directly.
//! Invariants checked, beyond "no panic, no hang":
//! - a presence member read from `channel_data` has a valid user id, and the frames built from
//!   it (`member_added`, `presence_succeeded`) are JSON whose string `data` carries the same id
//!   and `user_info`;
//! - a sign-in's `user_data` gives a valid id, and `signin_success` echoes it exactly;
//! - a `socket_id` that parses prints back to one that parses to the same connection and node.
#![no_main]

use fanout_gateway::pusher::protocol::{
    data_object, member_added, parse, parse_channel_data, parse_socket_id, parse_user_data, presence_succeeded,
    signin_success, socket_id, validate_channel, validate_user_id, Kind, SigninData, SubscribeData, UnsubscribeData,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The `data` of a server frame: a JSON string holding JSON.
fn data_of(frame: &Value) -> Value {
    json(frame["data"].as_str().expect("data is a string"))
}

fn check_channel_data(text: &str) {
    let Ok(member) = parse_channel_data(text) else { return };
    validate_user_id(&member.user_id).expect("a member's id is valid");
    let info = json(&member.user_info);
    let added = data_of(&json(&member_added("presence-x", &member.user_id, &member.user_info)));
    assert_eq!(added["user_id"].as_str(), Some(member.user_id.as_str()));
    assert_eq!(added["user_info"], info);
    let members = [(member.user_id.as_str(), member.user_info.as_str())];
    let presence = data_of(&json(&presence_succeeded("presence-x", members.into_iter())))["presence"].clone();
    assert_eq!(presence["ids"], Value::Array(vec![Value::String(member.user_id.clone())]));
    assert_eq!(presence["hash"][member.user_id.as_str()], info);
    assert_eq!(presence["count"].as_u64(), Some(1));
}

fn check_user_data(text: &str) {
    let Ok(id) = parse_user_data(text) else { return };
    validate_user_id(&id).expect("a signed-in id is valid");
    assert_eq!(data_of(&json(&signin_success(text)))["user_data"].as_str(), Some(text));
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    check_channel_data(text);
    check_user_data(text);
    if let Some((node, id)) = parse_socket_id(text) {
        assert_eq!(parse_socket_id(&socket_id(id, node)), Some((node, id)), "{text:?}");
    }
    let frame = match parse(text) {
        Ok(frame) => frame,
        Err(e) => return assert!(!e.is_empty()),
    };
    if let Ok(subscribe) = data_object::<SubscribeData>(frame.data) {
        if validate_channel(&subscribe.channel).is_ok() && Kind::of(&subscribe.channel) == Kind::Presence {
            if let Some(channel_data) = &subscribe.channel_data {
                check_channel_data(channel_data);
            }
        }
    }
    let _ = data_object::<UnsubscribeData>(frame.data);
    if let Ok(signin) = data_object::<SigninData>(frame.data) {
        check_user_data(&signin.user_data);
    }
});
