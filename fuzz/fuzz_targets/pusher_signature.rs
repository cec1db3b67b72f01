//! Fuzz target: the Pusher signatures (`fanout_gateway::pusher::signature`): the signed HTTP
//! API's query (percent-decoding, parameters, timestamp, `body_md5`, HMAC), and the channel and
//! user authorization strings of `pusher:subscribe` and `pusher:signin`.
//!
//! Structure-aware where it matters: a random query never carries a valid HMAC, so besides
//! checking arbitrary requests the target signs requests as the server SDKs do and checks that
//! they pass, and that each change to them fails with its own reason.
//! Input: `[mode]` then fields separated by NUL, by `mode % 3`:
//! - 0: method, path, query, key, secret, `[now: 8 bytes]`, body: checked as received;
//! - 1: method, path, key, secret, `[now: 4 bytes]`, body, then parameters `k=v`, one per line:
//!   signed with `sign_rest`, then checked;
//! - 2: key, secret, socket_id, channel, channel_data (empty: none), auth: a subscription's and a
//!   sign-in's `auth` as received, and the ones the right secret makes.
//!
//! Invariants checked, beyond "no panic, no hang":
//! - a request `sign_rest` signed passes `verify_rest`; a later clock fails `StaleTimestamp`, another
//!   secret `Signature`, another key `UnknownKey`, another body `BodyMd5`, another path `Signature`;
//! - an `auth` made with the secret passes; for another channel, socket or secret it fails; an
//!   `auth` that passes is the right key and the right signature, in either case of hex;
//! - a refusal's message is non-empty.
#![no_main]

use fanout_fuzz::Input;
use fanout_gateway::pusher::signature::{
    channel_auth_ok, sign, sign_rest, user_auth_ok, verify_rest, RestAuthError, RestRequest, MAX_CLOCK_SKEW_SECS,
};
use libfuzzer_sys::fuzz_target;

const RESERVED: [&str; 5] = ["auth_key", "auth_timestamp", "auth_version", "auth_signature", "body_md5"];

fn as_received(input: &mut Input) {
    let method = input.text_until(0);
    let path = input.text_until(0);
    let query = input.text_until(0);
    let key = input.text_until(0);
    let secret = input.text_until(0);
    let now = u64::from_le_bytes(std::array::from_fn(|_| input.byte()));
    let body = input.rest();
    let request = RestRequest { method: &method, path: &path, query: &query, body };
    if let Err(e) = verify_rest(&request, &key, &secret, now) {
        assert!(!e.message().is_empty());
    }
}

fn signed(input: &mut Input) {
    let method = input.text_until(0);
    let path = input.text_until(0);
    let key = input.text_until(0);
    let secret = input.text_until(0);
    let now = u64::from(u32::from_le_bytes(std::array::from_fn(|_| input.byte())));
    let body = input.until(0);
    let lines = input.text_until(0);
    let mut params: Vec<(&str, &str)> = Vec::new();
    for line in lines.lines() {
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        let lower = k.to_ascii_lowercase();
        // The SDKs refuse to sign their own parameters, and keys compare case-insensitively.
        if !RESERVED.contains(&lower.as_str()) && !params.iter().any(|(p, _)| p.eq_ignore_ascii_case(k)) {
            params.push((k, v));
        }
    }
    let query = sign_rest(&method, &path, &params, body, &key, &secret, now);
    let request = RestRequest { method: &method, path: &path, query: &query, body };
    assert_eq!(verify_rest(&request, &key, &secret, now), Ok(()), "a signed request was refused: {query}");
    let later = now + MAX_CLOCK_SKEW_SECS + 1;
    assert_eq!(verify_rest(&request, &key, &secret, later), Err(RestAuthError::StaleTimestamp));
    assert_eq!(verify_rest(&request, &key, &format!("{secret}x"), now), Err(RestAuthError::Signature));
    assert_eq!(verify_rest(&request, &format!("{key}x"), &secret, now), Err(RestAuthError::UnknownKey));
    let other_path = format!("{path}x");
    let moved = RestRequest { path: &other_path, ..request };
    assert_eq!(verify_rest(&moved, &key, &secret, now), Err(RestAuthError::Signature));
    if !body.is_empty() {
        let other_body = [body, b"x"].concat();
        let changed = RestRequest { body: &other_body, ..request };
        assert_eq!(verify_rest(&changed, &key, &secret, now), Err(RestAuthError::BodyMd5));
    }
}

fn auth_strings(input: &mut Input) {
    let key = input.text_until(0);
    let secret = input.text_until(0);
    let socket = input.text_until(0);
    let channel = input.text_until(0);
    let channel_data = Some(input.text_until(0)).filter(|d| !d.is_empty());
    let auth = input.text_until(0);
    let data = channel_data.as_deref();

    let message = match data {
        Some(d) => format!("{socket}:{channel}:{d}"),
        None => format!("{socket}:{channel}"),
    };
    let good = format!("{key}:{}", sign(&secret, &message));
    assert!(channel_auth_ok(&key, &secret, &socket, &channel, data, &good), "a right signature failed");
    assert!(!channel_auth_ok(&key, &secret, &socket, &format!("{channel}x"), data, &good));
    assert!(!channel_auth_ok(&key, &secret, &format!("{socket}x"), &channel, data, &good));
    assert!(!channel_auth_ok(&key, &format!("{secret}x"), &socket, &channel, data, &good));
    if channel_auth_ok(&key, &secret, &socket, &channel, data, &auth) {
        assert!(auth.eq_ignore_ascii_case(&good), "{auth:?} passed for {good:?}");
    }

    let user_data = data.unwrap_or_default();
    let good_user = format!("{key}:{}", sign(&secret, &format!("{socket}::user::{user_data}")));
    assert!(user_auth_ok(&key, &secret, &socket, user_data, &good_user));
    assert!(!user_auth_ok(&key, &secret, &format!("{socket}x"), user_data, &good_user));
    if user_auth_ok(&key, &secret, &socket, user_data, &auth) {
        assert!(auth.eq_ignore_ascii_case(&good_user), "{auth:?} passed for {good_user:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() % 3 {
        0 => as_received(&mut input),
        1 => signed(&mut input),
        _ => auth_strings(&mut input),
    }
});
