//! The client side of the RFC 6455 opening handshake (§4.1): the upgrade request, and the check of
//! the server's answer.
//!
//! Owns: `client_request`, `parse_response`, `ClientAccepted`, `ResponseError`. Used by the tests
//! and the load generator; the server never calls it.
//! Must not: choose its own nonce (proto has no randomness: the caller passes one), hold
//! server-side rules (handshake.rs), touch sockets, read a clock, or log.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};

use super::handshake::accept_key;
use super::http::{has_list_token, head_len, with_header_slots, HttpError, HttpLimits};
use super::status::Status;

/// Why the server's answer to an upgrade request was not a valid 101.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// Not parseable as an HTTP/1.x response.
    Malformed,
    /// The response head passed `max_request_bytes`.
    TooLarge,
    /// More headers than `max_headers`.
    TooManyHeaders,
    /// The server answered with this status instead of 101.
    UnexpectedStatus(u16),
    /// §4.1: the 101 lacked the `Upgrade: websocket` or `Connection: Upgrade` header, or carried
    /// the wrong `Sec-WebSocket-Accept`.
    BadAccept,
}

impl From<HttpError> for ResponseError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::HeadTooLarge => ResponseError::TooLarge,
            HttpError::TooManyHeaders => ResponseError::TooManyHeaders,
            // The rest are body rules, for requests: a response head fails only the two above.
            _ => ResponseError::Malformed,
        }
    }
}

impl std::fmt::Display for ResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResponseError::Malformed => f.write_str("malformed HTTP response"),
            ResponseError::TooLarge => f.write_str("response header too large"),
            ResponseError::TooManyHeaders => f.write_str("too many response headers"),
            ResponseError::UnexpectedStatus(s) => write!(f, "server refused the upgrade ({s})"),
            ResponseError::BadAccept => f.write_str("invalid Sec-WebSocket-Accept"),
        }
    }
}

impl std::error::Error for ResponseError {}

/// The upgrade request for `host` and `path` with a caller-chosen 16-byte nonce (proto has no
/// randomness), offering `protocols`, plus `extra_headers`. Returns the request and the accept
/// key to expect.
pub fn client_request(
    host: &str,
    path: &str,
    nonce: [u8; 16],
    protocols: &[&str],
    extra_headers: &[(&str, &str)],
) -> (Bytes, String) {
    let key = BASE64.encode(nonce);
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if !protocols.is_empty() {
        let _ = write!(s, "Sec-WebSocket-Protocol: {}\r\n", protocols.join(", "));
    }
    for (n, v) in extra_headers {
        let _ = write!(s, "{n}: {v}\r\n");
    }
    s.push_str("\r\n");
    (Bytes::from(s), accept_key(key.as_bytes()))
}

/// What a valid 101 told the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAccepted {
    /// The subprotocol the server selected (`Sec-WebSocket-Protocol`), if any.
    pub protocol: Option<String>,
    /// The extensions the server accepted (`Sec-WebSocket-Extensions`), as sent, if any.
    pub extensions: Option<String>,
}

/// Checks the server's answer to [`client_request`] against the accept key it returned. On
/// `Complete`, the response head has been split off `buf` and any frames that followed it stay
/// there; `Partial`: more bytes are needed and nothing was consumed.
pub fn parse_response(
    buf: &mut BytesMut,
    expected_accept: &str,
    limits: &HttpLimits,
) -> Result<Status<ClientAccepted>, ResponseError> {
    let bytes: &[u8] = buf;
    let parsed = with_header_slots(limits, |slots| -> Result<Option<(usize, ClientAccepted)>, ResponseError> {
        let mut resp = httparse::Response::new(slots);
        let Some(len) = head_len(resp.parse(bytes), bytes.len(), limits)? else {
            return Ok(None);
        };
        let status = resp.code.unwrap_or(0);
        if status != 101 {
            return Err(ResponseError::UnexpectedStatus(status));
        }
        let headers = || resp.headers.iter().map(|h| (h.name, h.value));
        let find = |name: &str| headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v);
        // §4.1: "If the response lacks an |Upgrade| header field or the |Upgrade| header field
        // contains a value that is not an ASCII case-insensitive match for the value "websocket",
        // the client MUST _Fail the WebSocket Connection_." Likewise for |Connection| and
        // "Upgrade", and for a |Sec-WebSocket-Accept| other than the expected one, "ignoring
        // any leading and trailing whitespace".
        if !has_list_token(headers(), "upgrade", "websocket")
            || !has_list_token(headers(), "connection", "upgrade")
            || find("sec-websocket-accept").map(<[u8]>::trim_ascii) != Some(expected_accept.as_bytes())
        {
            return Err(ResponseError::BadAccept);
        }
        let text = |name: &str| find(name).and_then(|v| std::str::from_utf8(v).ok()).map(|s| s.trim().to_owned());
        let (protocol, extensions) = (text("sec-websocket-protocol"), text("sec-websocket-extensions"));
        Ok(Some((len, ClientAccepted { protocol, extensions })))
    })?;
    let Some((len, accepted)) = parsed else {
        return Ok(Status::Partial);
    };
    let _ = buf.split_to(len);
    Ok(Status::Complete(accepted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::handshake::{accept_response, parse_request, Parsed, RequestError, RequestStatus};

    fn check(response: &[u8], expected: &str) -> Result<Status<ClientAccepted>, ResponseError> {
        parse_response(&mut BytesMut::from(response), expected, &HttpLimits::default())
    }

    #[test]
    fn client_round_trip() {
        let (req, expected) = client_request("127.0.0.1:9", "/x", [7; 16], &["chat"], &[("Origin", "http://o")]);
        let mut buf = BytesMut::from(&req[..]);
        let u = match parse_request(&mut buf, &HttpLimits::default()) {
            Ok(RequestStatus::Complete(Parsed::Upgrade(u))) => u,
            other => panic!("{other:?}"),
        };
        assert_eq!(u.accept, expected);
        let mut resp = BytesMut::from(&accept_response(&u.accept, Some("chat"))[..]);
        resp.extend_from_slice(&[0x81, 0x00]);
        let got = parse_response(&mut resp, &expected, &HttpLimits::default()).unwrap();
        assert_eq!(got, Status::Complete(ClientAccepted { protocol: Some("chat".into()), extensions: None }));
        assert_eq!(&resp[..], &[0x81, 0x00]);
        let mut wrong = BytesMut::from(&accept_response("bogus", None)[..]);
        assert_eq!(parse_response(&mut wrong, &expected, &HttpLimits::default()), Err(ResponseError::BadAccept));
        let mut refused = BytesMut::from(&RequestError::BadKey.response()[..]);
        assert_eq!(
            parse_response(&mut refused, &expected, &HttpLimits::default()),
            Err(ResponseError::UnexpectedStatus(400))
        );
    }

    #[test]
    fn responses_table() {
        const OK: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: a=\r\n\r\n";
        let base = |replace: &str, with: &str| OK.replacen(replace, with, 1);
        let accepted = |protocol: Option<&str>| {
            Ok(Status::Complete(ClientAccepted { protocol: protocol.map(Into::into), extensions: None }))
        };
        let cases = [
            (OK.to_string(), accepted(None)),
            (base("Upgrade: websocket", "Upgrade: WebSocket"), accepted(None)),
            (base("Connection: Upgrade", "Connection: keep-alive, upgrade"), accepted(None)),
            (base("a=\r\n", " a= \r\nSec-WebSocket-Protocol:  chat \r\n"), accepted(Some("chat"))),
            (OK[..OK.len() - 2].to_string(), Ok(Status::Partial)),
            (base("Upgrade: websocket", "Upgrade: h2c"), Err(ResponseError::BadAccept)),
            (base("Connection: Upgrade", "Connection: keep-alive"), Err(ResponseError::BadAccept)),
            (base("Sec-WebSocket-Accept: a=\r\n", ""), Err(ResponseError::BadAccept)),
            (base("101 Switching Protocols", "403 Forbidden"), Err(ResponseError::UnexpectedStatus(403))),
            ("\x16\x03\x01 hello\r\n\r\n".to_string(), Err(ResponseError::Malformed)),
        ];
        for (response, want) in cases {
            assert_eq!(check(response.as_bytes(), "a="), want, "{response}");
        }
        let limits = HttpLimits { max_request_bytes: 64, max_headers: 2, ..HttpLimits::default() };
        let mut buf = BytesMut::from(OK.as_bytes());
        assert_eq!(parse_response(&mut buf, "a=", &limits), Err(ResponseError::TooManyHeaders));
        let mut buf = BytesMut::from(&OK.as_bytes()[..64]);
        assert_eq!(parse_response(&mut buf, "a=", &limits), Err(ResponseError::TooLarge));
    }
}
