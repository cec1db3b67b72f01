//! The Pusher Channels protocol (version 7), client side: what `broadcast --protocol pusher` sends
//! and reads, and how it signs its HTTP API requests.
//!
//! Owns: `ws_path` (the upgrade path `/app/KEY?protocol=7&...`), `parse_event` (the top-level
//! `event`, `channel` and `data` of a server frame; `data` is a JSON-encoded string in every
//! server event but `pusher:error`), `unescape` (a JSON string's contents), `Subscriber` (one
//! connection's state: connected, subscribing, subscribed, and the `Step` each frame asks for),
//! `subscribe`, `PONG`, and `signed_query` / `sign` (the HTTP API's `auth_*` and `body_md5`
//! parameters). Pure functions of bytes, unit-tested here; must not know connections, scenarios
//! or the command line.
//!
//! Cost: a frame is walked once at its top level (values skipped, not parsed); only the `data`
//! string of a delivery is unescaped, into a buffer the caller keeps.

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

/// The protocol version the generator speaks.
pub const PROTOCOL: u32 = 7;

/// The name of the event the generator triggers and measures.
pub const EVENT: &str = "bench";

/// The answer to `pusher:ping`.
pub const PONG: &[u8] = br#"{"event":"pusher:pong","data":{}}"#;

/// The WebSocket request target for app `key`.
pub fn ws_path(key: &str) -> String {
    format!("/app/{key}?protocol={PROTOCOL}&client=fanout-load&version=1.0")
}

/// Appends the subscribe message for a public `channel` to `out`.
pub fn subscribe(out: &mut Vec<u8>, channel: &str) {
    out.extend_from_slice(br#"{"event":"pusher:subscribe","data":{"channel":""#);
    out.extend_from_slice(channel.as_bytes());
    out.extend_from_slice(br#""}}"#);
}

/// The `data` member of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data<'a> {
    /// A JSON string: its contents between the quotes, still escaped (see `unescape`).
    Str(&'a [u8]),
    /// Any other JSON value (an object, as in `pusher:error`), as it lies in the frame.
    Json(&'a [u8]),
}

impl<'a> Data<'a> {
    /// The bytes as they lie in the frame (escaped, for a string).
    pub fn raw(&self) -> &'a [u8] {
        match *self {
            Data::Str(b) | Data::Json(b) => b,
        }
    }

    /// Replaces `out` with the JSON text the data carries: a string's contents unescaped, any
    /// other value as it is. False if the string has a malformed escape.
    pub fn text_into(&self, out: &mut Vec<u8>) -> bool {
        out.clear();
        match *self {
            Data::Str(raw) => unescape(raw, out),
            Data::Json(raw) => {
                out.extend_from_slice(raw);
                true
            }
        }
    }
}

/// The members of a server frame the generator reads. `event` and `channel` are the strings'
/// contents as they lie in the frame (escapes kept: compare them with names that have none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    pub event: &'a [u8],
    pub channel: Option<&'a [u8]>,
    pub data: Option<Data<'a>>,
}

/// The top-level `event`, `channel` and `data` of a JSON object; `None` if `buf` is not one
/// object or has no string `event`. Other members are skipped, in any order.
pub fn parse_event(buf: &[u8]) -> Option<Event<'_>> {
    let mut p = skip_ws(buf, 0);
    if buf.get(p) != Some(&b'{') {
        return None;
    }
    p = skip_ws(buf, p + 1);
    let (mut event, mut channel, mut data) = (None, None, None);
    if buf.get(p) == Some(&b'}') {
        return None;
    }
    loop {
        if buf.get(p) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(buf, p)?;
        let key = &buf[p + 1..key_end];
        p = skip_ws(buf, key_end + 1);
        if buf.get(p) != Some(&b':') {
            return None;
        }
        let start = skip_ws(buf, p + 1);
        let end = value_end(buf, start)?;
        let string = (buf[start] == b'"').then(|| &buf[start + 1..end - 1]);
        match key {
            b"event" => event = string,
            b"channel" => channel = string,
            b"data" => data = Some(string.map_or(Data::Json(&buf[start..end]), Data::Str)),
            _ => {}
        }
        p = skip_ws(buf, end);
        match buf.get(p) {
            Some(b',') => p = skip_ws(buf, p + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    Some(Event { event: event?, channel, data })
}

fn skip_ws(buf: &[u8], mut p: usize) -> usize {
    while buf.get(p).is_some_and(|b| b.is_ascii_whitespace()) {
        p += 1;
    }
    p
}

/// Index of the quote that closes the string opening at `p`.
fn string_end(buf: &[u8], p: usize) -> Option<usize> {
    let mut i = p + 1;
    while i < buf.len() {
        match buf[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Index just after the JSON value starting at `p` (strings, nesting and literals skipped whole).
fn value_end(buf: &[u8], p: usize) -> Option<usize> {
    match *buf.get(p)? {
        b'"' => string_end(buf, p).map(|e| e + 1),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = p;
            while i < buf.len() {
                match buf[i] {
                    b'"' => i = string_end(buf, i)?,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let len = buf[p..].iter().position(|&b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace());
            let end = p + len.unwrap_or(buf.len() - p);
            (end > p).then_some(end)
        }
    }
}

/// Appends the unescaped contents of a JSON string (as `Data::Str` holds them) to `out`; false
/// if an escape is malformed.
pub fn unescape(raw: &[u8], out: &mut Vec<u8>) -> bool {
    let mut i = 0;
    while i < raw.len() {
        let Some(at) = raw[i..].iter().position(|&b| b == b'\\') else {
            out.extend_from_slice(&raw[i..]);
            return true;
        };
        out.extend_from_slice(&raw[i..i + at]);
        i += at + 1;
        let simple = match raw.get(i) {
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 8,
            Some(b'f') => 12,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                let Some((c, used)) = unicode_escape(&raw[i + 1..]) else {
                    return false;
                };
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                i += 1 + used;
                continue;
            }
            _ => return false,
        };
        out.push(simple);
        i += 1;
    }
    true
}

/// The character of a `\u` escape whose four hex digits start `s` (a surrogate pair takes two
/// escapes), and how many bytes of `s` it used.
fn unicode_escape(s: &[u8]) -> Option<(char, usize)> {
    let hex4 = |b: &[u8]| -> Option<u32> { u32::from_str_radix(std::str::from_utf8(b.get(..4)?).ok()?, 16).ok() };
    let hi = hex4(s)?;
    if (0xD800..0xDC00).contains(&hi) {
        if s.get(4..6) != Some(b"\\u") {
            return None;
        }
        let lo = hex4(&s[6..])?;
        if !(0xDC00..0xE000).contains(&lo) {
            return None;
        }
        return char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)).map(|c| (c, 10));
    }
    char::from_u32(hi).map(|c| (c, 4))
}

/// Where a subscriber is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Subscriber {
    /// Upgraded; waiting for `pusher:connection_established`.
    #[default]
    Connected,
    /// `pusher:subscribe` sent; waiting for `pusher_internal:subscription_succeeded`.
    Subscribing,
    Subscribed,
}

/// What a frame asks of the subscriber's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'a> {
    /// Connection established: send `subscribe(channel)`.
    Subscribe,
    /// `pusher:ping`: send `PONG`.
    Pong,
    /// The subscription succeeded: the subscriber is set up.
    Subscribed,
    /// The measured event on the subscribed channel.
    Delivery(Data<'a>),
    /// `pusher:error` or `pusher:subscription_error`, with its `data` (`{"code":..,"message":..}`
    /// or `{"type":..,"error":..,"status":..}`).
    Error(&'a [u8]),
    /// Anything else (other events, other channels).
    Ignore,
    /// Not a Pusher frame (not a JSON object with an `event`).
    Garbled,
}

impl Subscriber {
    /// The next step for `frame`, on a connection subscribing to `channel` and measuring the
    /// events named `event`.
    pub fn on_frame<'a>(&mut self, frame: &'a [u8], channel: &[u8], event: &[u8]) -> Step<'a> {
        let Some(e) = parse_event(frame) else {
            return Step::Garbled;
        };
        let ours = e.channel.is_none_or(|c| c == channel);
        match e.event {
            b"pusher:connection_established" if *self == Subscriber::Connected => {
                *self = Subscriber::Subscribing;
                Step::Subscribe
            }
            b"pusher_internal:subscription_succeeded" if ours && *self == Subscriber::Subscribing => {
                *self = Subscriber::Subscribed;
                Step::Subscribed
            }
            b"pusher:ping" => Step::Pong,
            b"pusher:error" | b"pusher:subscription_error" => Step::Error(e.data.map_or(&b""[..], |d| d.raw())),
            name if name == event && ours && *self == Subscriber::Subscribed => match e.data {
                Some(d) => Step::Delivery(d),
                None => Step::Garbled,
            },
            _ => Step::Ignore,
        }
    }
}

/// Lower-case hex HMAC-SHA256 of `METHOD\nPATH\nQUERY` with the app's secret: `auth_signature`.
pub fn sign(secret: &str, method: &str, path: &str, query: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(method.as_bytes());
    mac.update(b"\n");
    mac.update(path.as_bytes());
    mac.update(b"\n");
    mac.update(query.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The signed query of an HTTP API request with `body` (empty: no `body_md5`) at unix time
/// `timestamp`: `auth_key`, `auth_timestamp`, `auth_version=1.0`, `body_md5` (sorted, as
/// signed), then `auth_signature`. Key and values are written as they are: the app key must
/// need no URL encoding (the command line checks it).
pub fn signed_query(method: &str, path: &str, key: &str, secret: &str, body: &[u8], timestamp: u64) -> String {
    let mut q = format!("auth_key={key}&auth_timestamp={timestamp}&auth_version=1.0");
    if !body.is_empty() {
        let _ = write!(q, "&body_md5={}", hex::encode(Md5::digest(body)));
    }
    let signature = sign(secret, method, path, &q);
    let _ = write!(q, "&auth_signature={signature}");
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    /// The worked example of the Pusher Channels HTTP API reference ("Authentication"): app 3,
    /// the key and secret above, this body at unix time 1353088179.
    #[test]
    fn signs_the_documented_example() {
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        let q = signed_query("POST", "/apps/3/events", KEY, SECRET, body, 1_353_088_179);
        assert_eq!(
            q,
            "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0\
             &body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        let to_sign = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0\
                       &body_md5=ec365a775a4cd0599faeb73354201b6f";
        assert_eq!(
            sign(SECRET, "POST", "/apps/3/events", to_sign),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        // Without a body there is no body_md5.
        let q = signed_query("GET", "/apps/3/channels", KEY, SECRET, b"", 1_353_088_179);
        assert!(
            q.starts_with("auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&auth_signature=")
        );
        assert_eq!(q.len(), "auth_key=&auth_timestamp=&auth_version=1.0&auth_signature=".len() + 20 + 10 + 64);
    }

    #[test]
    fn paths_and_messages() {
        assert_eq!(ws_path("abc"), "/app/abc?protocol=7&client=fanout-load&version=1.0");
        let mut out = Vec::new();
        subscribe(&mut out, "bench");
        assert_eq!(out, br#"{"event":"pusher:subscribe","data":{"channel":"bench"}}"#);
        let e = parse_event(&out).unwrap();
        assert_eq!(e.data, Some(Data::Json(&br#"{"channel":"bench"}"#[..])));
        assert!(parse_event(PONG).is_some());
    }

    #[test]
    fn parses_frames_whatever_the_order_and_spacing() {
        let f = br#"{"event":"bench","channel":"bench","data":"{\"t\":12,\"n\":3,\"p\":\"x\"}"}"#;
        let e = parse_event(f).unwrap();
        assert_eq!((e.event, e.channel), (&b"bench"[..], Some(&b"bench"[..])));
        assert_eq!(e.data, Some(Data::Str(&br#"{\"t\":12,\"n\":3,\"p\":\"x\"}"#[..])));
        let mut out = b"old".to_vec();
        assert!(e.data.unwrap().text_into(&mut out));
        assert_eq!(out, br#"{"t":12,"n":3,"p":"x"}"#);
        assert!(Data::Json(b"{\"n\":1}").text_into(&mut out));
        assert_eq!(out, b"{\"n\":1}");

        let f = br#" { "data" : {"code":4001,"message":"App key x not found"} , "user_id":"u{1}" ,
                      "event" : "pusher:error", "n": [1, {"a": "]}"}], "z": null } "#;
        let e = parse_event(f).unwrap();
        assert_eq!((e.event, e.channel), (&b"pusher:error"[..], None));
        assert_eq!(e.data, Some(Data::Json(&br#"{"code":4001,"message":"App key x not found"}"#[..])));
        // A string with escaped quotes and backslashes is skipped whole.
        let e = parse_event(br#"{"x":"a\"b\\","event":"e\\v","channel":"c"}"#).unwrap();
        assert_eq!((e.event, e.channel, e.data), (&br"e\\v"[..], Some(&b"c"[..]), None));

        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            b"{\"data\":1}",
            b"{\"event\":1}",
            b"{\"event\":\"a\"",
            b"{\"event\":\"a\",}",
            b"x",
        ] {
            assert_eq!(parse_event(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn unescapes_json_strings() {
        let mut out = Vec::new();
        assert!(unescape(br#"a\"b\\c\/d\n\t\r\b\f \u00e9 \ud83d\ude00 end"#, &mut out));
        assert_eq!(String::from_utf8(out).unwrap(), "a\"b\\c/d\n\t\r\u{8}\u{c} é 😀 end");
        for bad in [&br"\x"[..], br"\u12", br"\ud83d", br"\ud83d\u0041", b"\\"] {
            assert!(!unescape(bad, &mut Vec::new()), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_subscriber_connects_subscribes_and_takes_only_its_events() {
        let (ch, ev) = (&b"bench"[..], &b"bench"[..]);
        let mut s = Subscriber::default();
        let established =
            br#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#;
        let succeeded = br#"{"event":"pusher_internal:subscription_succeeded","channel":"bench","data":"{}"}"#;
        let delivery = br#"{"event":"bench","channel":"bench","data":"{\"t\":1,\"n\":1}"}"#;
        // Nothing is delivered before the subscription succeeded.
        assert_eq!(s.on_frame(delivery, ch, ev), Step::Ignore);
        assert_eq!(s.on_frame(succeeded, ch, ev), Step::Ignore);
        assert_eq!(s.on_frame(established, ch, ev), Step::Subscribe);
        assert_eq!(s, Subscriber::Subscribing);
        assert_eq!(s.on_frame(established, ch, ev), Step::Ignore, "established once");
        let other = br#"{"event":"pusher_internal:subscription_succeeded","channel":"other","data":"{}"}"#;
        assert_eq!(s.on_frame(other, ch, ev), Step::Ignore);
        assert_eq!(s.on_frame(succeeded, ch, ev), Step::Subscribed);
        assert_eq!(s, Subscriber::Subscribed);
        assert_eq!(s.on_frame(delivery, ch, ev), Step::Delivery(Data::Str(&br#"{\"t\":1,\"n\":1}"#[..])));
        assert_eq!(s.on_frame(br#"{"event":"bench","channel":"other","data":"{}"}"#, ch, ev), Step::Ignore);
        assert_eq!(s.on_frame(br#"{"event":"other","channel":"bench","data":"{}"}"#, ch, ev), Step::Ignore);
        assert_eq!(s.on_frame(br#"{"event":"bench","channel":"bench"}"#, ch, ev), Step::Garbled);
        assert_eq!(s.on_frame(br#"{"event":"pusher:ping","data":{}}"#, ch, ev), Step::Pong);
        assert_eq!(s.on_frame(b"not json", ch, ev), Step::Garbled);
        let error = br#"{"event":"pusher:error","data":{"code":4201,"message":"Pong reply not received"}}"#;
        assert_eq!(
            s.on_frame(error, ch, ev),
            Step::Error(&br#"{"code":4201,"message":"Pong reply not received"}"#[..])
        );
        let mut s = Subscriber::Subscribing;
        let refused =
            br#"{"event":"pusher:subscription_error","channel":"bench","data":{"type":"AuthError","status":401}}"#;
        assert!(matches!(s.on_frame(refused, ch, ev), Step::Error(_)));
        assert_eq!(s, Subscriber::Subscribing);
    }
}
