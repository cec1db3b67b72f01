//! Fuzz target: the bodies of the Pusher HTTP API's triggers, `POST /apps/{id}/events` and
//! `batch_events` (`fanout_gateway::pusher::rest::{read_events, check_event}`), read and checked
//! as the API does before publishing anything.
//!
//! Input: `[flags][max_event_size: u16]` then the body. `flags` bit 0: a batch; bit 1: this node
//! is node 1 (so a `socket_id` of node 0 is another node's).
//! Invariants checked, beyond "no panic, no hang":
//! - a batch holds at most 10 events; an accepted event has a valid name, 1 to 100 channels, each
//!   a valid channel name or a valid user's channel, and data within `max_event_size` (counted
//!   as the string's text when data is a JSON string);
//! - the data accepted is the body's own bytes, to be relayed as sent;
//! - every refusal is a 400 or a 413 with a JSON body `{"error": "..."}`.
#![no_main]

use fanout::Response;
use fanout_fuzz::Input;
use fanout_gateway::native::protocol::validate_event;
use fanout_gateway::pusher::protocol::{validate_channel, validate_user_id, USER_CHANNEL_PREFIX};
use fanout_gateway::pusher::rest::{check_event, read_events, MAX_BATCH_EVENTS, MAX_TRIGGER_CHANNELS};
use libfuzzer_sys::fuzz_target;

fn check_refusal(response: &Response) {
    assert!(matches!(response.status, 400 | 413), "status {}", response.status);
    let body: serde_json::Value = serde_json::from_slice(&response.body).expect("a JSON error body");
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let max_event_size = usize::from(input.u16());
    let node = u32::from(flags >> 1 & 1);
    let body = input.rest();
    let events = match read_events(body, flags & 1 != 0) {
        Ok(events) => events,
        Err(response) => return check_refusal(&response),
    };
    assert!((1..=MAX_BATCH_EVENTS).contains(&events.len()) || (flags & 1 != 0 && events.is_empty()));
    for event in &events {
        let trigger = match check_event(event, max_event_size, node) {
            Ok(trigger) => trigger,
            Err(response) => {
                check_refusal(&response);
                continue;
            }
        };
        validate_event(trigger.name).expect("an accepted event name is valid");
        assert!((1..=MAX_TRIGGER_CHANNELS).contains(&trigger.channels.len()));
        for channel in &trigger.channels {
            match channel.strip_prefix(USER_CHANNEL_PREFIX) {
                Some(user) => validate_user_id(user).expect("an accepted user channel is valid"),
                None => validate_channel(channel).expect("an accepted channel is valid"),
            }
        }
        let size = serde_json::from_str::<String>(trigger.data).map_or(trigger.data.len(), |s| s.len());
        assert!(size <= max_event_size, "{size} bytes of data over {max_event_size}");
        let start = trigger.data.as_ptr() as usize - body.as_ptr() as usize;
        assert!(start + trigger.data.len() <= body.len(), "the data is not the body's own bytes");
    }
});
