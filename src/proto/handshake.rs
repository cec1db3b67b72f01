//! The server side of the RFC 6455 opening handshake (§4.2).
//!
//! Owns: `parse_request`, the one call the reactor makes for bytes received before the upgrade:
//! it frames the request (through http.rs), tells an upgrade from a plain request, and validates
//! the upgrade (§4.2.1) into an `Upgrade`; the accept key (§4.2.2, checked against the §1.3
//! vector); subprotocol selection; the extensions offered (the permessage-deflate negotiation
//! itself is deflate.rs's); the 101 response; `RequestError`, every refusal of a request with
//! its status and response.
//! Must not: frame HTTP itself (http.rs), hold the client side (client.rs), touch sockets, read a
//! clock, or log.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use sha1::{Digest, Sha1};

use super::deflate::{self, Agreement};
use super::http::{read_request, Framed, HttpError, HttpLimits, Request, Response};

/// §1.3: the GUID appended to the client's key before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why [`parse_request`] refused a request, plain or upgrade; each maps to an HTTP status and a
/// reason sent in the body. The framing refusals come from http.rs, the upgrade's (RFC 6455) from
/// the checks in this file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// Not parseable as HTTP/1.x. 400.
    Malformed,
    /// An upgrade over HTTP/1.0 (§4.1: "the method of the request MUST be GET, and the HTTP
    /// version MUST be at least 1.1"). 400.
    HttpVersion,
    /// An upgrade with a method other than GET. 405.
    MethodNotAllowed,
    /// §4.2.1 item 2: no Host header. 400.
    MissingHost,
    /// §4.2.1 item 3: no `websocket` token in Upgrade. 400.
    MissingUpgradeToken,
    /// §4.2.1 item 4: no `Upgrade` token in Connection. 400.
    MissingConnectionToken,
    /// §4.2.1 item 5: a key that is not 16 bytes in base64. 400.
    BadKey,
    /// §4.2.1 item 6 and §4.4: a version other than 13. 426 with `Sec-WebSocket-Version: 13`.
    UnsupportedVersion,
    /// The head passed `max_request_bytes`. 431.
    RequestTooLarge,
    /// More headers than `max_headers`. 431.
    TooManyHeaders,
    /// A body longer than `max_body_bytes`. 413.
    BodyTooLarge,
    /// A Content-Length that is not a number, or more than one. 400.
    BadContentLength,
    /// Transfer-Encoding (chunked bodies) is not supported. 411.
    LengthRequired,
}

impl RequestError {
    /// The HTTP status this refusal is answered with.
    pub const fn status(self) -> u16 {
        match self {
            RequestError::MethodNotAllowed => 405,
            RequestError::UnsupportedVersion => 426,
            RequestError::RequestTooLarge | RequestError::TooManyHeaders => 431,
            RequestError::BodyTooLarge => 413,
            RequestError::LengthRequired => 411,
            _ => 400,
        }
    }

    /// The human-readable reason sent as the response body.
    pub const fn reason(self) -> &'static str {
        match self {
            RequestError::Malformed => "malformed HTTP request",
            RequestError::HttpVersion => "WebSocket upgrade requires HTTP/1.1",
            RequestError::MethodNotAllowed => "WebSocket upgrade requires GET",
            RequestError::MissingHost => "missing Host header",
            RequestError::MissingUpgradeToken => "Upgrade header must contain websocket",
            RequestError::MissingConnectionToken => "Connection header must contain Upgrade",
            RequestError::BadKey => "Sec-WebSocket-Key must be 16 bytes in base64",
            RequestError::UnsupportedVersion => "Sec-WebSocket-Version must be 13",
            RequestError::RequestTooLarge => "request header too large",
            RequestError::TooManyHeaders => "too many request headers",
            RequestError::BodyTooLarge => "request body too large",
            RequestError::BadContentLength => "invalid Content-Length",
            RequestError::LengthRequired => "Content-Length required; chunked bodies are not supported",
        }
    }

    /// The response to send before closing the connection.
    pub fn response(self) -> Bytes {
        let mut resp = Response::text(self.status(), self.reason());
        match self {
            RequestError::UnsupportedVersion => {
                resp = resp.header("Sec-WebSocket-Version", "13").header("Upgrade", "websocket")
            }
            RequestError::MethodNotAllowed => resp = resp.header("Allow", "GET"),
            _ => {}
        }
        resp.encode(false)
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for RequestError {}

impl From<HttpError> for RequestError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Malformed => RequestError::Malformed,
            HttpError::HeadTooLarge => RequestError::RequestTooLarge,
            HttpError::TooManyHeaders => RequestError::TooManyHeaders,
            HttpError::BodyTooLarge => RequestError::BodyTooLarge,
            HttpError::BadContentLength => RequestError::BadContentLength,
            HttpError::LengthRequired => RequestError::LengthRequired,
        }
    }
}

/// What [`parse_request`] found at the front of the buffer.
#[derive(Debug, Clone)]
pub enum RequestStatus {
    /// A whole request (head and body) was taken off the front of the buffer.
    Complete(Parsed),
    /// More bytes are needed; nothing was consumed. `expects_continue` is true when the head is
    /// complete and valid, its body is still to come, and the client sent `Expect: 100-continue`.
    Partial {
        /// Send `CONTINUE_RESPONSE` (once): the client waits for it before sending the body.
        expects_continue: bool,
    },
}

/// What a complete request turned out to be.
#[derive(Debug, Clone)]
pub enum Parsed {
    /// A valid WebSocket upgrade, to answer with [`accept_response`] (or refuse).
    Upgrade(Upgrade),
    /// A plain HTTP request, for the application's `on_request`.
    Http(Request),
}

/// A validated upgrade request.
#[derive(Debug, Clone)]
pub struct Upgrade {
    /// The request as received, for the application to look at (path, query, cookies, ...).
    pub request: Request,
    /// `Sec-WebSocket-Accept` for the 101 response.
    pub accept: String,
}

impl Upgrade {
    /// The first protocol the client offered that the server supports (client's preference order).
    pub fn select_protocol<'a>(&self, supported: &'a [String]) -> Option<&'a str> {
        if supported.is_empty() {
            // The common case: nothing to choose from, so the offers need no scan.
            return None;
        }
        self.request
            .offered_protocols()
            .find_map(|offered| supported.iter().find(|s| s.as_str() == offered))
            .map(String::as_str)
    }

    /// The first permessage-deflate offer the server can honour (RFC 7692), or `None`: no offer,
    /// or none that can be honoured, which declines the extension without failing the upgrade.
    pub fn negotiate_deflate(&self) -> Option<Agreement> {
        deflate::negotiate(self.request.header_values("sec-websocket-extensions"))
    }
}

impl Request {
    /// Subprotocols the client offered (`Sec-WebSocket-Protocol`), in its order of preference.
    pub fn offered_protocols(&self) -> impl Iterator<Item = &str> {
        self.header_tokens("sec-websocket-protocol")
    }
}

/// Parses the request at the front of `buf`, head once. On `Complete`, the request (and any body)
/// has been split off `buf`; bytes after it (frames sent before the 101 arrived) stay in `buf`.
pub fn parse_request(buf: &mut BytesMut, limits: &HttpLimits) -> Result<RequestStatus, RequestError> {
    let request = match read_request(buf, limits)? {
        Framed::Complete(request) => request,
        Framed::Partial { expects_continue } => return Ok(RequestStatus::Partial { expects_continue }),
    };
    let upgrade_token = request.has_token("upgrade", "websocket");
    if !upgrade_token && request.header("sec-websocket-key").is_none() {
        return Ok(RequestStatus::Complete(Parsed::Http(request)));
    }
    validate_upgrade(request, upgrade_token).map(|u| RequestStatus::Complete(Parsed::Upgrade(u)))
}

/// §4.2.1: "If the server, while reading the handshake, finds that the client did not send a
/// handshake that matches the description below [...], the server MUST stop processing the
/// client's handshake and return an HTTP response with an appropriate error code (such as 400
/// Bad Request)." Checked in the order a client most likely gets wrong first.
/// `upgrade_token`: whether the Upgrade header names websocket (the caller looked already).
fn validate_upgrade(request: Request, upgrade_token: bool) -> Result<Upgrade, RequestError> {
    // §4.1 item 2: "The method of the request MUST be GET, and the HTTP version MUST be at
    // least 1.1."
    if request.method() != "GET" {
        return Err(RequestError::MethodNotAllowed);
    }
    if request.minor_version() < 1 {
        return Err(RequestError::HttpVersion);
    }
    // §4.1 item 4: "The request MUST contain a |Host| header field".
    if request.header("host").is_none() {
        return Err(RequestError::MissingHost);
    }
    // §4.1 item 5: "The request MUST contain an |Upgrade| header field whose value MUST include
    // the "websocket" keyword."
    if !upgrade_token {
        return Err(RequestError::MissingUpgradeToken);
    }
    // §4.1 item 6: "The request MUST contain a |Connection| header field whose value MUST
    // include the "Upgrade" token."
    if !request.has_token("connection", "upgrade") {
        return Err(RequestError::MissingConnectionToken);
    }
    // §4.2.2: "If this version does not match a version understood by the server, the server
    // MUST abort the WebSocket handshake ... and instead send an appropriate HTTP error code
    // (such as 426 Upgrade Required) and a |Sec-WebSocket-Version| header field".
    if request.header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(RequestError::UnsupportedVersion);
    }
    // §4.1 item 7: "The value of this header field MUST be a nonce consisting of a randomly
    // selected 16-byte value that has been base64-encoded".
    let key = request.header("sec-websocket-key").ok_or(RequestError::BadKey)?.trim_ascii();
    match BASE64.decode(key) {
        Ok(decoded) if decoded.len() == 16 => {}
        _ => return Err(RequestError::BadKey),
    }
    let accept = accept_key(key);
    Ok(Upgrade { request, accept })
}

/// §4.2.2: base64(SHA-1(key + GUID)), the `Sec-WebSocket-Accept` for the key the client sent.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// The 101 Switching Protocols response, with the selected subprotocol if any.
pub fn accept_response(accept: &str, protocol: Option<&str>) -> Bytes {
    accept_response_with(accept, protocol, None)
}

/// The 101 Switching Protocols response, with the selected subprotocol and the accepted
/// extensions (`Sec-WebSocket-Extensions`), if any.
pub fn accept_response_with(accept: &str, protocol: Option<&str>, extensions: Option<&str>) -> Bytes {
    let mut s = String::with_capacity(160);
    s.push_str(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    s.push_str(accept);
    s.push_str("\r\n");
    if let Some(p) = protocol {
        let _ = write!(s, "Sec-WebSocket-Protocol: {p}\r\n");
    }
    if let Some(e) = extensions {
        let _ = write!(s, "Sec-WebSocket-Extensions: {e}\r\n");
    }
    s.push_str("\r\n");
    Bytes::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request of RFC 6455 §1.2, with a query, a second subprotocol and a cookie.
    const RFC_REQUEST: &str = "GET /chat?room=1&token=abc HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\nCookie: a=1; fanout_token=xyz\r\n\r\n";

    fn parse(text: &str) -> Result<RequestStatus, RequestError> {
        parse_request(&mut BytesMut::from(text.as_bytes()), &HttpLimits::default())
    }

    fn upgrade(text: &str) -> Upgrade {
        match parse(text) {
            Ok(RequestStatus::Complete(Parsed::Upgrade(u))) => u,
            other => panic!("expected an upgrade, got {other:?}"),
        }
    }

    #[test]
    fn rfc_1_3_accept_key() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(upgrade(RFC_REQUEST).accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn request_accessors() {
        let u = upgrade(RFC_REQUEST);
        let r = &u.request;
        assert_eq!((r.method(), r.path(), r.query()), ("GET", "/chat", Some("room=1&token=abc")));
        assert_eq!(r.query_param("token"), Some("abc"));
        assert_eq!(r.query_param("nope"), None);
        assert_eq!(r.cookie("fanout_token"), Some("xyz"));
        assert_eq!(r.header_str("ORIGIN"), Some("http://example.com"));
        assert_eq!(r.offered_protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
        assert!(!format!("{r:?}").contains("xyz"), "Debug must not print header values");
    }

    #[test]
    fn subprotocol_follows_client_preference_among_supported() {
        let u = upgrade(RFC_REQUEST);
        let supported = vec!["superchat".to_string(), "chat".to_string()];
        assert_eq!(u.select_protocol(&supported), Some("chat"));
        assert_eq!(u.select_protocol(&["mqtt".to_string()]), None);
    }

    #[test]
    fn deflate_offers_across_header_lines_and_the_response() {
        let with = |extra: &str| upgrade(&RFC_REQUEST.replacen("\r\n\r\n", &format!("\r\n{extra}\r\n\r\n"), 1));
        assert_eq!(upgrade(RFC_REQUEST).negotiate_deflate(), None);
        let u = with(
            "Sec-WebSocket-Extensions: x-foo\r\nsec-websocket-extensions: permessage-deflate; client_max_window_bits",
        );
        let agreement = u.negotiate_deflate().expect("the second line's offer");
        assert_eq!(agreement.client_max_window_bits, Some(15));
        let u = with("Sec-WebSocket-Extensions: permessage-deflate; bogus");
        assert_eq!(u.negotiate_deflate(), None, "declined, and the upgrade itself is valid");
        let text = String::from_utf8(accept_response_with("k", None, Some(&agreement.response())).to_vec()).unwrap();
        assert!(text.contains("\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=15\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn tokens_are_case_insensitive_in_comma_lists() {
        let req = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c, WebSocket\r\nConnection: keep-alive, UPGRADE\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
        upgrade(req);
    }

    #[test]
    fn arrives_in_pieces() {
        let bytes = RFC_REQUEST.as_bytes();
        let mut buf = BytesMut::new();
        for (i, b) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = parse_request(&mut buf, &HttpLimits::default()).unwrap();
            assert_eq!(matches!(got, RequestStatus::Partial { .. }), i + 1 < bytes.len(), "at byte {i}");
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn frames_after_the_head_stay_in_the_buffer() {
        let mut buf = BytesMut::from(RFC_REQUEST.as_bytes());
        buf.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        let Ok(RequestStatus::Complete(Parsed::Upgrade(_))) = parse_request(&mut buf, &HttpLimits::default()) else {
            panic!()
        };
        assert_eq!(&buf[..], &[0x81, 0x80, 1, 2, 3, 4]);
    }

    #[test]
    fn plain_requests_are_http_and_wait_for_their_body() {
        for text in
            ["GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET / HTTP/1.0\r\n\r\n", "GET /ws HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"]
        {
            assert!(matches!(parse(text), Ok(RequestStatus::Complete(Parsed::Http(_)))), "{text}");
        }
        let mut buf = BytesMut::from(&b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel"[..]);
        assert!(matches!(parse_request(&mut buf, &HttpLimits::default()), Ok(RequestStatus::Partial { .. })));
        buf.extend_from_slice(b"lo");
        let Ok(RequestStatus::Complete(Parsed::Http(r))) = parse_request(&mut buf, &HttpLimits::default()) else {
            panic!()
        };
        assert_eq!((r.method(), r.path(), &r.body()[..]), ("POST", "/api/publish", &b"hello"[..]));
    }

    #[test]
    fn partial_expects_continue_table() {
        const HEAD: &[u8] = b"POST /api/publish HTTP/1.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n";
        // (bytes received so far, expects_continue, why)
        let cases: &[(&[u8], bool, &str)] = &[
            (HEAD, true, "complete head, body pending, Expect"),
            (b"POST / HTTP/1.1\r\nContent-Length: 50\r\nexpect:  100-Continue \r\n\r\nabc", true, "body started"),
            (&HEAD[..20], false, "head not complete yet"),
            (&HEAD[..HEAD.len() - 2], false, "head without its blank line"),
            (b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", false, "no Expect header"),
            (b"POST / HTTP/1.1\r\nContent-Length: 50\r\nExpect: 100-continue-x\r\n\r\n", false, "other expectation"),
            (b"POST / HTTP/1.0\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n", false, "HTTP/1.0 ignores it"),
        ];
        for (bytes, want, why) in cases {
            let mut buf = BytesMut::from(*bytes);
            match parse_request(&mut buf, &HttpLimits::default()) {
                Ok(RequestStatus::Partial { expects_continue }) => assert_eq!(expects_continue, *want, "{why}"),
                other => panic!("{why}: {other:?}"),
            }
            assert_eq!(&buf[..], *bytes, "{why}: nothing consumed");
        }
        // With no body to wait for there is nothing to continue: the request is complete.
        let no_body = "POST / HTTP/1.1\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n";
        assert!(matches!(parse(no_body), Ok(RequestStatus::Complete(Parsed::Http(_)))));
        // An invalid head is an error, not a Partial that asks for the body.
        let too_big = "POST / HTTP/1.1\r\nContent-Length: 99999999\r\nExpect: 100-continue\r\n\r\n";
        assert_eq!(parse(too_big).unwrap_err(), RequestError::BodyTooLarge);
    }

    #[test]
    fn bad_upgrades_table() {
        let base = |replace: &str, with: &str| RFC_REQUEST.replacen(replace, with, 1);
        let cases = [
            (base("GET", "POST"), RequestError::MethodNotAllowed, 405),
            (base("HTTP/1.1", "HTTP/1.0"), RequestError::HttpVersion, 400),
            (base("Host: server.example.com\r\n", ""), RequestError::MissingHost, 400),
            (base("Connection: Upgrade", "Connection: keep-alive"), RequestError::MissingConnectionToken, 400),
            (base("Upgrade: websocket", "Upgrade: h2c"), RequestError::MissingUpgradeToken, 400),
            (base("Version: 13", "Version: 8"), RequestError::UnsupportedVersion, 426),
            (base("Sec-WebSocket-Version: 13\r\n", ""), RequestError::UnsupportedVersion, 426),
            (base("dGhlIHNhbXBsZSBub25jZQ==", "dG9vc2hvcnQ="), RequestError::BadKey, 400),
            (base("dGhlIHNhbXBsZSBub25jZQ==", "!!!notbase64!!!"), RequestError::BadKey, 400),
            (base("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), RequestError::BadKey, 400),
        ];
        for (req, want, status) in cases {
            assert_eq!(parse(&req).unwrap_err(), want, "{req}");
            assert_eq!(want.status(), status);
        }
    }

    #[test]
    fn framing_refusals_table() {
        let limits = HttpLimits { max_request_bytes: 64, max_headers: 2, max_body_bytes: 4 };
        let long = format!("GET / HTTP/1.1\r\nX-Long: {}", "a".repeat(64));
        let cases: [(&[u8], RequestError, u16); 6] = [
            (long.as_bytes(), RequestError::RequestTooLarge, 431),
            (b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", RequestError::TooManyHeaders, 431),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", RequestError::BodyTooLarge, 413),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", RequestError::LengthRequired, 411),
            (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", RequestError::BadContentLength, 400),
            (&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03], RequestError::Malformed, 400),
        ];
        for (bytes, want, status) in cases {
            assert_eq!(parse_request(&mut BytesMut::from(bytes), &limits).unwrap_err(), want, "{bytes:?}");
            assert_eq!(want.status(), status);
        }
    }

    #[test]
    fn error_responses_carry_status_reason_and_extra_headers() {
        let r = RequestError::UnsupportedVersion.response();
        let text = std::str::from_utf8(&r).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{text}");
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(text.ends_with("\r\n\r\nSec-WebSocket-Version must be 13"));
        let text = String::from_utf8(RequestError::MethodNotAllowed.response().to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 ") && text.contains("Allow: GET\r\n"));
    }
}
