//! Fuzz target: channel names and the channel patterns of a token's claims
//! (`fanout_gateway::native::auth::{pattern_matches, Permissions}`, both protocols'
//! `validate_channel`, `validate_event`, `validate_user_id`, Pusher's `Kind`).
//!
//! Input: a pattern, a newline, a channel name, a newline, then more patterns, one per line.
//! Invariants checked, beyond "no panic":
//! - a pattern without a trailing `*` matches exactly its own text; with one, exactly the names
//!   that start with what precedes it; `*` matches everything; every name matches itself;
//! - `Permissions` allow a channel exactly when one of their patterns matches, and anonymous
//!   clients everything;
//! - an accepted channel name, event name or user id is within its length and character set.
#![no_main]

use fanout_fuzz::Input;
use fanout_gateway::native::auth::{pattern_matches, Permissions};
use fanout_gateway::native::protocol::{self as native, validate_event};
use fanout_gateway::pusher::protocol::{self as pusher, validate_user_id, Kind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let pattern = input.text_until(b'\n');
    let channel = input.text_until(b'\n');
    let mut patterns: Vec<String> = String::from_utf8_lossy(input.rest()).lines().map(str::to_owned).collect();
    patterns.push(pattern.clone());

    let matched = pattern_matches(&pattern, &channel);
    match pattern.strip_suffix('*') {
        Some(prefix) => assert_eq!(matched, channel.starts_with(prefix), "{pattern:?} ~ {channel:?}"),
        None => assert_eq!(matched, pattern == channel, "{pattern:?} ~ {channel:?}"),
    }
    assert!(pattern_matches("*", &channel));
    assert!(pattern_matches(&channel, &channel), "a name does not match itself");
    assert!(pattern_matches(&format!("{channel}*"), &format!("{channel}{pattern}")));

    let any = patterns.iter().any(|p| pattern_matches(p, &channel));
    let token = Permissions::Token { subscribe: patterns.clone(), publish: Vec::new() };
    assert_eq!(token.may_subscribe(&channel), any);
    assert!(!token.may_publish(&channel));
    let token = Permissions::Token { subscribe: Vec::new(), publish: patterns };
    assert_eq!(token.may_publish(&channel), any);
    assert!(Permissions::Anonymous.may_subscribe(&channel) && Permissions::Anonymous.may_publish(&channel));

    for name in [&pattern, &channel] {
        if native::validate_channel(name).is_ok() {
            assert!((1..=native::MAX_CHANNEL_LEN).contains(&name.len()));
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:@/".contains(&b)), "{name:?}");
        }
        if pusher::validate_channel(name).is_ok() {
            assert!((1..=pusher::MAX_CHANNEL_LEN).contains(&name.len()));
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-=@,.;".contains(&b)), "{name:?}");
            let kind = Kind::of(name);
            assert_eq!(kind.needs_auth(), name.starts_with("private-") || name.starts_with("presence-"));
        }
        if validate_event(name).is_ok() {
            assert!((1..=native::MAX_EVENT_LEN).contains(&name.chars().count()));
            assert!(!name.starts_with("pusher:") && !name.starts_with("pusher_internal:"));
        }
        if validate_user_id(name).is_ok() {
            assert!((1..=pusher::MAX_USER_ID_LEN).contains(&name.chars().count()));
            assert!(!name.chars().any(char::is_control));
        }
    }
});
