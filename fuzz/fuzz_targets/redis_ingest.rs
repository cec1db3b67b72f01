//! Fuzz target: Laravel's broadcaster messages read from Redis (`--redis-ingest`,
//! `fanout_gateway::cluster::ingest::parse`), whatever an application publishes there.
//!
//! Input: `[flags][max: u16]`, the Redis channel name, a newline, then the payload. `flags` bit 0:
//! strip Laravel's default prefix `laravel_database_`.
//! Invariants checked, beyond "no panic, no hang":
//! - an accepted broadcast came from a payload within `max`, names a channel both protocols
//!   accept (the Redis channel, less the prefix), a valid event, JSON data (`null` when absent),
//!   and a non-empty socket to leave out, if any;
//! - a refusal has a reason.
#![no_main]

use fanout_fuzz::Input;
use fanout_gateway::cluster::ingest::parse;
use fanout_gateway::native::protocol::validate_event;
use fanout_gateway::pusher::protocol::validate_channel;
use libfuzzer_sys::fuzz_target;

const PREFIX: &str = "laravel_database_";

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let max = usize::from(input.u16());
    let redis_channel = input.until(b'\n');
    let payload = input.rest();
    let strip = (flags & 1 != 0).then_some(PREFIX);
    match parse(redis_channel, payload, strip, max) {
        Ok(broadcast) => {
            assert!(payload.len() <= max);
            validate_channel(&broadcast.channel).expect("an accepted channel is valid");
            let name = std::str::from_utf8(redis_channel).expect("an accepted channel was UTF-8");
            assert!(name.ends_with(&broadcast.channel));
            assert!(name == broadcast.channel || strip.is_some_and(|p| name == format!("{p}{}", broadcast.channel)));
            validate_event(&broadcast.event).expect("an accepted event is valid");
            serde_json::from_str::<serde::de::IgnoredAny>(broadcast.data.get()).expect("data is JSON");
            assert!(broadcast.socket.as_ref().is_none_or(|s| !s.is_empty()));
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
});
