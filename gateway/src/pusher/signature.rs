//! Every signature of the Pusher Channels protocol (protocol 7): channel authorization (private
//! and presence), user authentication (`pusher:signin`), the signed HTTP API and webhook bodies.
//!
//! Owns: HMAC-SHA256 signing and checking, the HTTP API's string to sign and its query parsing.
//! Invariants: pure functions, no I/O and no clock (the caller passes `now`); every comparison of
//! a signature is constant-time (`hmac`'s `verify_slice`); a signature is checked over the exact
//! bytes the signer signed: `channel_data` and `user_data` as the client sent them, query values
//! percent-decoded, since the server SDKs sign the unescaped values.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far `auth_timestamp` may be from the server's clock, in either direction, in seconds.
pub const MAX_CLOCK_SKEW_SECS: u64 = 600;

/// A keyed HMAC-SHA256 with `parts` fed in order (no allocation of the joined message).
fn mac(secret: &str, parts: &[&[u8]]) -> HmacSha256 {
    // HMAC accepts a key of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// Checks `hex_signature` against the MAC in constant time; a signature that is not hex, or is of
/// the wrong length, fails like any other wrong signature.
fn mac_matches(mac: HmacSha256, hex_signature: &str) -> bool {
    match hex::decode(hex_signature) {
        Ok(bytes) => mac.verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

/// Hex HMAC-SHA256 of `message` with `secret` (lower-case hex, as every Pusher SDK writes it).
pub fn sign(secret: &str, message: &str) -> String {
    hex::encode(mac(secret, &[message.as_bytes()]).finalize().into_bytes())
}

/// Splits an `auth` string, `KEY:HEX`, and checks its key; `None` on a missing colon or another key.
/// The key is matched as a prefix, not split at the first colon, since a configured key may hold one.
fn auth_signature<'a>(auth: &'a str, key: &str) -> Option<&'a str> {
    auth.strip_prefix(key)?.strip_prefix(':')
}

/// Checks the `auth` of a `pusher:subscribe` to a private or presence channel.
///
/// `auth` is `KEY:HEX`. A private channel's HMAC is over `socket_id:channel`; a presence channel's
/// over `socket_id:channel:channel_data`, with `channel_data` exactly as the client sent it (pass
/// `Some` whenever the subscribe carried one). False on a wrong key prefix, a malformed `auth` or a
/// wrong signature; the signature is compared in constant time.
pub fn channel_auth_ok(
    key: &str,
    secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    let Some(signature) = auth_signature(auth, key) else { return false };
    let mac = match channel_data {
        None => mac(secret, &[socket_id.as_bytes(), b":", channel.as_bytes()]),
        Some(data) => mac(secret, &[socket_id.as_bytes(), b":", channel.as_bytes(), b":", data.as_bytes()]),
    };
    mac_matches(mac, signature)
}

/// Checks the `auth` of a `pusher:signin`: HMAC over `socket_id::user::user_data`, with
/// `user_data` exactly as the client sent it. Same rules as [`channel_auth_ok`].
pub fn user_auth_ok(key: &str, secret: &str, socket_id: &str, user_data: &str, auth: &str) -> bool {
    let Some(signature) = auth_signature(auth, key) else { return false };
    mac_matches(mac(secret, &[socket_id.as_bytes(), b"::user::", user_data.as_bytes()]), signature)
}

/// Webhook: the `X-Pusher-Signature` header, hex HMAC-SHA256 of the body with the app's secret.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    hex::encode(mac(secret, &[body]).finalize().into_bytes())
}

/// Lower-case hex MD5 of `body`: the HTTP API's `body_md5` parameter.
fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// One request to the signed HTTP API (`/apps/{id}/...`), as received.
#[derive(Debug, Clone, Copy)]
pub struct RestRequest<'a> {
    /// The request method, upper-case (`GET`, `POST`).
    pub method: &'a str,
    /// The request path without the query, as received (`/apps/3/events`).
    pub path: &'a str,
    /// The raw query string without the `?`, percent-encoded as received.
    pub query: &'a str,
    /// The request body (empty for a GET).
    pub body: &'a [u8],
}

/// Why a request to the HTTP API is refused (the gateway answers 401 with [`RestAuthError::message`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestAuthError {
    /// A required parameter is absent: `auth_key`, `auth_timestamp`, `auth_version`,
    /// `auth_signature`, or `body_md5` when the body is not empty.
    Missing(&'static str),
    /// `auth_key` is not this app's key.
    UnknownKey,
    /// `auth_version` is not `1.0`.
    BadVersion,
    /// `auth_timestamp` is more than [`MAX_CLOCK_SKEW_SECS`] away from the server's clock.
    StaleTimestamp,
    /// `body_md5` is not the MD5 of the body.
    BodyMd5,
    /// `auth_signature` does not match.
    Signature,
    /// The query cannot be read: a value that is not UTF-8 once decoded, a parameter given twice
    /// (keys compare case-insensitively), or an `auth_timestamp` that is not a number.
    BadQuery,
}

impl RestAuthError {
    /// A clear reason for the 401 body.
    pub fn message(&self) -> String {
        match self {
            RestAuthError::Missing(name) => format!("Missing required parameter: {name}"),
            RestAuthError::UnknownKey => "Unknown auth_key".to_string(),
            RestAuthError::BadVersion => "Unsupported auth_version: only 1.0 is accepted".to_string(),
            RestAuthError::StaleTimestamp => format!(
                "auth_timestamp is more than {MAX_CLOCK_SKEW_SECS} s away from the server's time: check the clock"
            ),
            RestAuthError::BodyMd5 => "body_md5 does not match the MD5 of the body".to_string(),
            RestAuthError::Signature => "Invalid signature: auth_signature does not match".to_string(),
            RestAuthError::BadQuery => "Malformed query string: a value is not UTF-8, a parameter is repeated, \
                                        or auth_timestamp is not a number"
                .to_string(),
        }
    }
}

impl std::fmt::Display for RestAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for RestAuthError {}

/// Percent-decodes one query component the way form decoding does: `+` is a space, `%XX` a byte.
/// A `%` not followed by two hex digits stays as it is (the Node SDK sends values unescaped, so a
/// literal `%` must survive). `None` when the result is not UTF-8.
pub(super) fn decode_component(raw: &str) -> Option<String> {
    fn hex_val(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (bytes.get(i + 1).copied().and_then(hex_val), bytes.get(i + 2).copied().and_then(hex_val)) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The query's parameters: keys lower-cased, values percent-decoded, each key at most once.
fn parse_query(query: &str) -> Result<Vec<(String, String)>, RestAuthError> {
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode_component(raw_key).ok_or(RestAuthError::BadQuery)?.to_ascii_lowercase();
        let value = decode_component(raw_value).ok_or(RestAuthError::BadQuery)?;
        if params.iter().any(|(k, _)| *k == key) {
            return Err(RestAuthError::BadQuery);
        }
        params.push((key, value));
    }
    Ok(params)
}

/// `METHOD\nPATH\nk=v&k=v` over every parameter but `auth_signature`, sorted by key, values
/// unescaped: the string the Pusher SDKs sign.
fn string_to_sign<'a>(method: &str, path: &str, params: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut sorted: Vec<(&str, &str)> = params.filter(|(k, _)| *k != "auth_signature").collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut out = format!("{method}\n{path}\n");
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Checks a request to the signed HTTP API.
///
/// In order: the query parses; `auth_key`, `auth_timestamp`, `auth_version`, `auth_signature` are
/// present, and `body_md5` too when the body is not empty; `auth_key == app_key`;
/// `auth_version == "1.0"`; `|now - auth_timestamp| <= 600`; `body_md5`, when present, is the MD5
/// of the body; and `auth_signature` is HMAC-SHA256(secret, `METHOD\nPATH\nQUERY`), compared in
/// constant time, where QUERY is every other parameter with keys lower-cased, sorted by key and
/// joined `k=v` with `&`, values *unescaped*, as the Pusher server SDKs (Node, PHP, Ruby, Python,
/// Go) sign them. Keys are case-insensitive, as the lower-casing implies.
pub fn verify_rest(req: &RestRequest<'_>, app_key: &str, app_secret: &str, now_unix: u64) -> Result<(), RestAuthError> {
    let params = parse_query(req.query)?;
    let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let require = |name: &'static str| get(name).ok_or(RestAuthError::Missing(name));

    let key = require("auth_key")?;
    let timestamp = require("auth_timestamp")?;
    let version = require("auth_version")?;
    let signature = require("auth_signature")?;
    let md5 = if req.body.is_empty() { get("body_md5") } else { Some(require("body_md5")?) };

    if key != app_key {
        return Err(RestAuthError::UnknownKey);
    }
    if version != "1.0" {
        return Err(RestAuthError::BadVersion);
    }
    let timestamp: u64 = timestamp.parse().map_err(|_| RestAuthError::BadQuery)?;
    if now_unix.abs_diff(timestamp) > MAX_CLOCK_SKEW_SECS {
        return Err(RestAuthError::StaleTimestamp);
    }
    if let Some(md5) = md5 {
        if !md5.eq_ignore_ascii_case(&body_md5(req.body)) {
            return Err(RestAuthError::BodyMd5);
        }
    }
    let to_sign = string_to_sign(req.method, req.path, params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if mac_matches(mac(app_secret, &[to_sign.as_bytes()]), signature) {
        Ok(())
    } else {
        Err(RestAuthError::Signature)
    }
}

/// Percent-encodes a query component: every byte but the RFC 3986 unreserved ones.
fn encode_component(value: &str, out: &mut String) {
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The parameters the signing adds itself; a caller's `params` must not contain them.
const RESERVED: [&str; 5] = ["auth_key", "auth_timestamp", "auth_version", "auth_signature", "body_md5"];

/// The signed query string for a request, as a server SDK makes it (for tests and load generators):
/// `params` plus `auth_key`, `auth_timestamp`, `auth_version=1.0`, `body_md5` when `body` is not
/// empty, and `auth_signature` last. Values are signed unescaped and percent-encoded in the result.
///
/// # Panics
/// If `params` contains one of the parameters the signing adds (`auth_*`, `body_md5`), as the SDKs
/// refuse it too.
pub fn sign_rest(
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &[u8],
    key: &str,
    secret: &str,
    now_unix: u64,
) -> String {
    for (k, _) in params {
        assert!(!RESERVED.contains(&k.to_ascii_lowercase().as_str()), "{k} is added by the signing");
    }
    let timestamp = now_unix.to_string();
    let md5 = (!body.is_empty()).then(|| body_md5(body));
    let mut all: Vec<(String, &str)> =
        vec![("auth_key".into(), key), ("auth_timestamp".into(), timestamp.as_str()), ("auth_version".into(), "1.0")];
    if let Some(md5) = &md5 {
        all.push(("body_md5".into(), md5));
    }
    all.extend(params.iter().map(|(k, v)| (k.to_ascii_lowercase(), *v)));
    let to_sign = string_to_sign(method, path, all.iter().map(|(k, v)| (k.as_str(), *v)));

    let mut query = String::new();
    for (k, v) in &all {
        encode_component(k, &mut query);
        query.push('=');
        encode_component(v, &mut query);
        query.push('&');
    }
    query.push_str("auth_signature=");
    query.push_str(&sign(secret, &to_sign));
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    // The credentials and socket of the worked examples in Pusher's "auth signatures" and
    // "HTTP API reference" pages.
    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";
    const SOCKET: &str = "1234.1234";
    const PRESENCE_DATA: &str = r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#;
    const USER_DATA: &str = r#"{"id":"12345"}"#;
    const PRIVATE_SIG: &str = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";
    const PRESENCE_SIG: &str = "afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c";
    const USER_SIG: &str = "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba";

    /// (what, socket_id, channel, channel_data, auth, accepted)
    type ChannelCase<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, &'a str, bool);
    /// (method, path, params, body)
    type RoundTripCase<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [u8]);
    /// (what, query, body, now, expected)
    type TamperCase<'a> = (&'a str, String, &'a [u8], u64, Result<(), RestAuthError>);

    #[test]
    fn sign_matches_the_documented_vectors() {
        let cases = [
            ("1234.1234:private-foobar".to_string(), PRIVATE_SIG),
            (format!("1234.1234:presence-foobar:{PRESENCE_DATA}"), PRESENCE_SIG),
            (format!("1234.1234::user::{USER_DATA}"), USER_SIG),
        ];
        for (message, want) in cases {
            assert_eq!(sign(SECRET, &message), want, "{message}");
        }
    }

    #[test]
    fn channel_auth_accepts_the_documented_examples_and_refuses_every_change() {
        let private = format!("{KEY}:{PRIVATE_SIG}");
        let presence = format!("{KEY}:{PRESENCE_SIG}");
        let upper = format!("{KEY}:{}", PRIVATE_SIG.to_ascii_uppercase());
        let short = format!("{KEY}:{}", &PRIVATE_SIG[..62]);
        let long = format!("{KEY}:{PRIVATE_SIG}00");
        let not_hex = format!("{KEY}:{}", "zz".repeat(32));
        let wrong_key = format!("278d425bdf160c739804:{PRIVATE_SIG}");
        let other_data = r#"{"user_id":11,"user_info":{"name":"Mr. Pusher"}}"#;
        let reordered = r#"{"user_info":{"name":"Mr. Pusher"},"user_id":10}"#;
        #[rustfmt::skip]
        let cases: &[ChannelCase] = &[
            ("private example", SOCKET, "private-foobar", None, &private, true),
            ("presence example", SOCKET, "presence-foobar", Some(PRESENCE_DATA), &presence, true),
            ("upper-case hex", SOCKET, "private-foobar", None, &upper, true),
            ("other socket", "1234.1235", "private-foobar", None, &private, false),
            ("other channel", SOCKET, "private-foobaz", None, &private, false),
            ("private auth used with channel_data", SOCKET, "private-foobar", Some(PRESENCE_DATA), &private, false),
            ("presence auth without channel_data", SOCKET, "presence-foobar", None, &presence, false),
            ("other channel_data", SOCKET, "presence-foobar", Some(other_data), &presence, false),
            ("channel_data re-serialised", SOCKET, "presence-foobar", Some(reordered), &presence, false),
            ("wrong key prefix", SOCKET, "private-foobar", None, &wrong_key, false),
            ("no key prefix", SOCKET, "private-foobar", None, PRIVATE_SIG, false),
            ("empty auth", SOCKET, "private-foobar", None, "", false),
            ("signature one byte short", SOCKET, "private-foobar", None, &short, false),
            ("signature one byte long", SOCKET, "private-foobar", None, &long, false),
            ("signature not hex", SOCKET, "private-foobar", None, &not_hex, false),
        ];
        for &(what, socket, channel, data, auth, ok) in cases {
            assert_eq!(channel_auth_ok(KEY, SECRET, socket, channel, data, auth), ok, "{what}");
        }
        assert!(!channel_auth_ok(KEY, "another-secret", SOCKET, "private-foobar", None, &private), "other secret");
    }

    #[test]
    fn user_auth_accepts_the_documented_example_and_refuses_every_change() {
        let good = format!("{KEY}:{USER_SIG}");
        let wrong_key = format!("other:{USER_SIG}");
        let short = format!("{KEY}:{}", &USER_SIG[..32]);
        let cases = [
            ("example", SOCKET, USER_DATA, good.as_str(), true),
            ("other socket", "1.1", USER_DATA, &good, false),
            ("other user_data", SOCKET, r#"{"id":"12346"}"#, &good, false),
            ("wrong key", SOCKET, USER_DATA, &wrong_key, false),
            ("short signature", SOCKET, USER_DATA, &short, false),
            // The private-channel string for the same inputs must not pass as a signin.
            ("channel signature", SOCKET, USER_DATA, &format!("{KEY}:{PRIVATE_SIG}"), false),
        ];
        for (what, socket, data, auth, ok) in cases {
            assert_eq!(user_auth_ok(KEY, SECRET, socket, data, auth), ok, "{what}");
        }
    }

    #[test]
    fn a_key_with_a_colon_signs_and_checks() {
        // Found by the pusher_signature fuzz target: the key was split off `auth` at its first
        // colon, so an app whose key holds one refused every right signature.
        let key = "app:key";
        let auth = format!("{key}:{}", sign(SECRET, "1.2:private-a"));
        assert!(channel_auth_ok(key, SECRET, "1.2", "private-a", None, &auth));
        assert!(!channel_auth_ok("app", SECRET, "1.2", "private-a", None, &auth), "a prefix of the key");
        let user = format!("{key}:{}", sign(SECRET, "1.2::user::{}"));
        assert!(user_auth_ok(key, SECRET, "1.2", "{}", &user));
    }

    #[test]
    fn webhook_signature_is_the_hmac_of_the_body() {
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        // Computed outside Rust (Python's hmac module) over the same bytes.
        assert_eq!(webhook_signature(SECRET, body), "0f68380c330b73326a09b10b791153a49aa56ba9d045aae8b3b6d9ef5e6a2989");
        assert_ne!(webhook_signature("other", body), webhook_signature(SECRET, body));
    }

    /// The body of the HTTP API reference's worked example, and its MD5 from the same page.
    const DOC_BODY: &[u8] = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    const DOC_TS: u64 = 1_353_088_179;

    fn get<'a>(query: &'a str, path: &'a str) -> RestRequest<'a> {
        RestRequest { method: "GET", path, query, body: b"" }
    }

    #[test]
    fn verify_rest_accepts_the_documented_example_and_what_the_sdks_send() {
        // The worked example of Pusher's HTTP API reference, query and signature as printed there.
        let doc_query = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0\
                         &body_md5=ec365a775a4cd0599faeb73354201b6f\
                         &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";
        let post = RestRequest { method: "POST", path: "/apps/3/events", query: doc_query, body: DOC_BODY };
        assert_eq!(verify_rest(&post, KEY, SECRET, DOC_TS), Ok(()));
        assert_eq!(body_md5(DOC_BODY), "ec365a775a4cd0599faeb73354201b6f");

        // A GET with parameters of its own, signed as the SDKs do it: keys lower-cased and sorted,
        // values unescaped. The signatures were computed outside Rust (Python's hmac) over
        //   GET\n/apps/3/channels\nauth_key=..&auth_timestamp=1353088179&auth_version=1.0
        //   &filter_by_prefix=presence-&info=user_count,subscription_count
        // and over the docs' own escaping example, `Name` = `Something else` signed as
        // `name=Something else`.
        const CHANNELS_SIG: &str = "ff97d40ab3fbbd15394386a29c12998c33635305357b2e2abd18dc67efe3f87d";
        const NAME_SIG: &str = "38a7e48fdcd7c5c25587acecee084e188e0877a8286dcda39c4c95b7e1edb738";
        let auth = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0";
        let (channels, users) = ("/apps/3/channels", "/apps/3/channels/presence-room.1/users");
        let (prefix, info) = ("filter_by_prefix=presence-", "info=user_count");
        let upper_sig = CHANNELS_SIG.to_ascii_uppercase();
        let cases = [
            // The Node SDK puts the values in the URL unescaped.
            ("node", channels, format!("{auth}&{prefix}&{info},subscription_count&auth_signature={CHANNELS_SIG}")),
            // The PHP SDK sends them through http_build_query: `,` as %2C.
            ("php", channels, format!("{auth}&auth_signature={CHANNELS_SIG}&{prefix}&{info}%2Csubscription_count")),
            // Any order, lower-case hex escapes, upper-case hex signature.
            ("reordered", channels, format!("{info}%2csubscription_count&auth_signature={upper_sig}&{prefix}&{auth}")),
            // A space as `+` (PHP) or `%20` (RFC 3986 encoders); a key in upper case.
            ("php space", users, format!("{auth}&Name=Something+else&auth_signature={NAME_SIG}")),
            ("rfc3986 space", users, format!("{auth}&name=Something%20else&auth_signature={NAME_SIG}")),
        ];
        for (what, path, query) in &cases {
            assert_eq!(verify_rest(&get(query, path), KEY, SECRET, DOC_TS), Ok(()), "{what}");
        }
    }

    #[test]
    fn sign_rest_round_trips_and_agrees_with_the_documented_example() {
        let query = sign_rest("POST", "/apps/3/events", &[], DOC_BODY, KEY, SECRET, DOC_TS);
        assert!(query.ends_with("auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"));
        let cases: [RoundTripCase; 4] = [
            ("GET", "/apps/1/channels", &[], b""),
            (
                "GET",
                "/apps/1/channels",
                &[("info", "user_count,subscription_count"), ("filter_by_prefix", "presence-")],
                b"",
            ),
            ("GET", "/apps/1/channels/private-orders.1", &[("Name", "Something else & 100% = more")], b""),
            (
                "POST",
                "/apps/1/events",
                &[],
                br#"{"name":"App\\Events\\OrderShipped","channel":"private-orders.1","data":"{}"}"#,
            ),
        ];
        for (method, path, params, body) in cases {
            for skew in [0, 600] {
                let query = sign_rest(method, path, params, body, KEY, SECRET, 10_000);
                let req = RestRequest { method, path, query: &query, body };
                assert_eq!(verify_rest(&req, KEY, SECRET, 10_000 + skew), Ok(()), "{method} {path} {params:?}");
                assert_eq!(verify_rest(&req, KEY, SECRET, 10_000 - skew), Ok(()), "{method} {path} {params:?}");
            }
        }
    }

    #[test]
    fn verify_rest_names_each_tampering() {
        const NOW: u64 = 1_700_000_000;
        let body: &[u8] = br#"{"name":"e","channel":"c","data":"{}"}"#;
        let signed =
            |params: &[(&str, &str)], ts: u64| sign_rest("POST", "/apps/1/events", params, body, KEY, SECRET, ts);
        let good = signed(&[("info", "user_count")], NOW);
        let replace = |from: &str, to: &str| good.replacen(from, to, 1);
        let ts = format!("auth_timestamp={NOW}");
        let sig_at = good.find("auth_signature=").unwrap() + "auth_signature=".len();
        let flipped_sig = format!("{}{}", &good[..good.len() - 1], if good.ends_with('0') { '1' } else { '0' });
        let without =
            |name: &str| good.split('&').filter(|p| !p.starts_with(&format!("{name}="))).collect::<Vec<_>>().join("&");
        use RestAuthError::*;
        #[rustfmt::skip]
        let cases: Vec<TamperCase> = vec![
            ("untouched", good.clone(), body, NOW, Ok(())),
            ("upper-case keys still verify: the signature is over lower-cased keys",
                good.replace("auth_key=", "AUTH_KEY=").replace("info=", "Info="), body, NOW, Ok(())),
            ("changed body", good.clone(), br#"{"name":"e","channel":"d","data":"{}"}"#, NOW, Err(BodyMd5)),
            ("empty body, body_md5 still given", good.clone(), b"", NOW, Err(BodyMd5)),
            ("changed signature", flipped_sig, body, NOW, Err(Signature)),
            ("signature one byte short", good[..good.len() - 2].to_string(), body, NOW, Err(Signature)),
            ("signature empty", good[..sig_at].to_string(), body, NOW, Err(Signature)),
            ("wrong key", replace(KEY, "278d425bdf160c739804"), body, NOW, Err(UnknownKey)),
            ("version 2.0", replace("auth_version=1.0", "auth_version=2.0"), body, NOW, Err(BadVersion)),
            ("601 s old", signed(&[], NOW - 601), body, NOW, Err(StaleTimestamp)),
            ("601 s in the future", signed(&[], NOW + 601), body, NOW, Err(StaleTimestamp)),
            ("timestamp not a number", replace(&ts, "auth_timestamp=soon"), body, NOW, Err(BadQuery)),
            ("changed query value", replace("info=user_count", "info=subscription_count"), body, NOW, Err(Signature)),
            ("added parameter", format!("{good}&extra=1"), body, NOW, Err(Signature)),
            ("removed own parameter", without("info"), body, NOW, Err(Signature)),
            ("changed timestamp", replace(&ts, &format!("auth_timestamp={}", NOW + 1)), body, NOW, Err(Signature)),
            ("same key twice", format!("{good}&info=user_count"), body, NOW, Err(BadQuery)),
            ("same key twice, other case", format!("{good}&INFO=user_count"), body, NOW, Err(BadQuery)),
            ("value not UTF-8", format!("{good}&x=%FF"), body, NOW, Err(BadQuery)),
            ("missing auth_key", without("auth_key"), body, NOW, Err(Missing("auth_key"))),
            ("missing auth_timestamp", without("auth_timestamp"), body, NOW, Err(Missing("auth_timestamp"))),
            ("missing auth_version", without("auth_version"), body, NOW, Err(Missing("auth_version"))),
            ("missing auth_signature", without("auth_signature"), body, NOW, Err(Missing("auth_signature"))),
            ("missing body_md5", without("body_md5"), body, NOW, Err(Missing("body_md5"))),
            ("empty query", String::new(), body, NOW, Err(Missing("auth_key"))),
        ];
        for (what, query, body, now, want) in cases {
            let req = RestRequest { method: "POST", path: "/apps/1/events", query: &query, body };
            assert_eq!(verify_rest(&req, KEY, SECRET, now), want, "{what}: {query}");
        }
        // Method and path are signed too.
        for (method, path) in [("PUT", "/apps/1/events"), ("POST", "/apps/2/events"), ("post", "/apps/1/events")] {
            let req = RestRequest { method, path, query: &good, body };
            assert_eq!(verify_rest(&req, KEY, SECRET, NOW), Err(Signature), "{method} {path}");
        }
        assert_eq!(
            verify_rest(&RestRequest { method: "POST", path: "/apps/1/events", query: &good, body }, KEY, "x", NOW),
            Err(Signature)
        );
    }

    #[test]
    fn query_decoding_is_form_decoding_that_keeps_a_stray_percent() {
        let cases = [
            ("a+b", Some("a b")),
            ("a%20b%2C%2c", Some("a b,,")),
            ("100%", Some("100%")),
            ("100%2", Some("100%2")),
            ("%zz", Some("%zz")),
            ("%E2%82%AC", Some("\u{20ac}")),
            ("%FF", None),
            ("", Some("")),
        ];
        for (raw, want) in cases {
            assert_eq!(decode_component(raw).as_deref(), want, "{raw}");
        }
    }

    #[test]
    #[should_panic(expected = "added by the signing")]
    fn sign_rest_refuses_a_reserved_parameter() {
        sign_rest("GET", "/apps/1/channels", &[("Auth_Key", "x")], b"", KEY, SECRET, 0);
    }

    #[test]
    fn every_error_has_its_own_message() {
        use RestAuthError::*;
        let all = [
            Missing("auth_key"),
            Missing("body_md5"),
            UnknownKey,
            BadVersion,
            StaleTimestamp,
            BodyMd5,
            Signature,
            BadQuery,
        ];
        let messages: std::collections::HashSet<String> = all.iter().map(|e| e.message()).collect();
        assert_eq!(messages.len(), all.len());
        assert!(Missing("body_md5").message().contains("body_md5"));
    }
}
