//! The opening handshake (RFC 6455 §4) and the plain HTTP/1.1 that shares its port.
//!
//! Owns: parsing a request head that may arrive in pieces (httparse; `Partial` is a state, not an
//! error), telling a WebSocket upgrade from a plain request, validating the upgrade (§4.2.1), the
//! accept key (§4.2.2), subprotocol selection, the 101 / error / plain responses, and the client
//! side (request and response check) for tests and the load generator. Invariants: nothing is
//! buffered beyond `HttpLimits`; a parsed `Request` is a view over the received bytes (one
//! `Bytes` plus offsets), so the handshake copies no header.

use std::fmt::Write as _;
use std::ops::Range;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use sha1::{Digest, Sha1};

use super::Status;

/// §1.3: the GUID appended to the client's key before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Hard ceiling on header slots on the stack, whatever the configured limit.
const HEADER_SLOTS: usize = 128;

/// Bounds on what a request may make the server hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request head (request line and headers). Default 8 KiB.
    pub max_request_bytes: usize,
    /// Most headers in one request (at most 128). Default 64.
    pub max_headers: usize,
    /// Largest body of a plain request (`Content-Length`). Default 64 KiB.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits { max_request_bytes: 8 * 1024, max_headers: 64, max_body_bytes: 64 * 1024 }
    }
}

/// Why a handshake was refused; each maps to an HTTP status and a reason sent in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
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
    /// Client side: the server answered with this status instead of 101.
    UnexpectedStatus(u16),
    /// Client side: the 101 lacked the upgrade headers or carried the wrong accept key.
    BadAccept,
}

impl HandshakeError {
    pub const fn status(self) -> u16 {
        match self {
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::RequestTooLarge | HandshakeError::TooManyHeaders => 431,
            HandshakeError::BodyTooLarge => 413,
            HandshakeError::LengthRequired => 411,
            HandshakeError::UnexpectedStatus(s) => s,
            _ => 400,
        }
    }

    pub const fn reason(self) -> &'static str {
        match self {
            HandshakeError::Malformed => "malformed HTTP request",
            HandshakeError::HttpVersion => "WebSocket upgrade requires HTTP/1.1",
            HandshakeError::MethodNotAllowed => "WebSocket upgrade requires GET",
            HandshakeError::MissingHost => "missing Host header",
            HandshakeError::MissingUpgradeToken => "Upgrade header must contain websocket",
            HandshakeError::MissingConnectionToken => "Connection header must contain Upgrade",
            HandshakeError::BadKey => "Sec-WebSocket-Key must be 16 bytes in base64",
            HandshakeError::UnsupportedVersion => "Sec-WebSocket-Version must be 13",
            HandshakeError::RequestTooLarge => "request header too large",
            HandshakeError::TooManyHeaders => "too many request headers",
            HandshakeError::BodyTooLarge => "request body too large",
            HandshakeError::BadContentLength => "invalid Content-Length",
            HandshakeError::LengthRequired => "Content-Length required; chunked bodies are not supported",
            HandshakeError::UnexpectedStatus(_) => "server refused the upgrade",
            HandshakeError::BadAccept => "invalid Sec-WebSocket-Accept",
        }
    }

    /// The response to send before closing the connection.
    pub fn response(self) -> Bytes {
        let mut resp = Response::text(self.status(), self.reason());
        match self {
            HandshakeError::UnsupportedVersion => {
                resp = resp.header("Sec-WebSocket-Version", "13").header("Upgrade", "websocket")
            }
            HandshakeError::MethodNotAllowed => resp = resp.header("Allow", "GET"),
            _ => {}
        }
        resp.encode(false)
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason(), self.status())
    }
}

impl std::error::Error for HandshakeError {}

type Span = Range<u32>;

/// A request head (and body, for plain requests) as received: offsets into one `Bytes`.
#[derive(Clone)]
pub struct Request {
    raw: Bytes,
    method: Span,
    target: Span,
    minor_version: u8,
    headers: Vec<(Span, Span)>,
    body: Span,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values may hold tokens and cookies: Debug shows names only.
        f.debug_struct("Request")
            .field("method", &self.method())
            .field("path", &self.path())
            .field("headers", &self.headers().map(|(n, _)| n).collect::<Vec<_>>())
            .field("body_len", &self.body().len())
            .finish()
    }
}

impl Request {
    fn text(&self, span: &Span) -> &str {
        // Spans come from httparse's &str slices of `raw`, so they are valid UTF-8 by construction.
        std::str::from_utf8(&self.raw[span.start as usize..span.end as usize]).unwrap_or("")
    }

    fn bytes(&self, span: &Span) -> &[u8] {
        &self.raw[span.start as usize..span.end as usize]
    }

    pub fn method(&self) -> &str {
        self.text(&self.method)
    }

    /// The request target as sent: path and query.
    pub fn target(&self) -> &str {
        self.text(&self.target)
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        let t = self.target();
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    /// The raw query string (after `?`), not percent-decoded.
    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, q)| q)
    }

    /// The first value of a query parameter, raw (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    /// HTTP minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }

    /// All headers in order, names as sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (self.text(n), self.bytes(v)))
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// The first header with this name, if its value is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of a header, comma lists split, trimmed: `Connection: keep-alive, Upgrade`.
    pub fn header_tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }

    /// A cookie's value from the Cookie header(s).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                (k.trim() == name).then(|| v.trim().trim_matches('"'))
            })
    }

    /// Whether the client wants the connection kept open after the response: the HTTP/1.1
    /// default unless it sent `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version >= 1 {
            !self.has_token("connection", "close")
        } else {
            self.has_token("connection", "keep-alive")
        }
    }

    /// Subprotocols the client offered, in its order of preference.
    pub fn offered_protocols(&self) -> impl Iterator<Item = &str> {
        self.header_tokens("sec-websocket-protocol")
    }

    /// The body of a plain request (empty for upgrades).
    pub fn body(&self) -> Bytes {
        self.raw.slice(self.body.start as usize..self.body.end as usize)
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_tokens(name).any(|t| t.eq_ignore_ascii_case(token))
    }
}

/// A validated upgrade request.
#[derive(Debug, Clone)]
pub struct Upgrade {
    pub request: Request,
    /// `Sec-WebSocket-Accept` for the 101 response.
    pub accept: String,
}

impl Upgrade {
    /// The first protocol the client offered that the server supports (client's preference order).
    pub fn select_protocol<'a>(&self, supported: &'a [String]) -> Option<&'a str> {
        self.request
            .offered_protocols()
            .find_map(|offered| supported.iter().find(|s| s.as_str() == offered))
            .map(String::as_str)
    }
}

/// What a complete request turned out to be.
#[derive(Debug, Clone)]
pub enum Parsed {
    Upgrade(Upgrade),
    /// A plain HTTP request, for the application's `on_request`.
    Http(Request),
}

/// Parses the request at the front of `buf`. On `Complete`, the request (and any body) has been
/// split off `buf`; bytes after it (frames sent before the 101 arrived) stay in `buf`.
pub fn parse_request(buf: &mut BytesMut, limits: &HttpLimits) -> Result<Status<Parsed>, HandshakeError> {
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let slots = &mut slots[..limits.max_headers.clamp(1, HEADER_SLOTS)];
    let mut req = httparse::Request::new(slots);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= limits.max_request_bytes {
                Err(HandshakeError::RequestTooLarge)
            } else {
                Ok(Status::Partial)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
        Err(_) => return Err(HandshakeError::Malformed),
    };
    if head_len > limits.max_request_bytes {
        return Err(HandshakeError::RequestTooLarge);
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = (s.as_ptr() as usize - base) as u32;
        start..start + s.len() as u32
    };
    let method = span(req.method.unwrap_or("").as_bytes());
    let target = span(req.path.unwrap_or("").as_bytes());
    let minor_version = req.version.unwrap_or(1);
    let mut content_length: Option<usize> = None;
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HandshakeError::LengthRequired);
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or(HandshakeError::BadContentLength)?;
            if content_length.is_some_and(|prev| prev != n) {
                return Err(HandshakeError::BadContentLength);
            }
            content_length = Some(n);
        }
        headers.push((span(h.name.as_bytes()), span(h.value)));
    }
    let body_len = content_length.unwrap_or(0);
    if body_len > limits.max_body_bytes {
        return Err(HandshakeError::BodyTooLarge);
    }
    if buf.len() < head_len + body_len {
        buf.reserve(head_len + body_len - buf.len());
        return Ok(Status::Partial);
    }
    let body = head_len as u32..(head_len + body_len) as u32;
    let request =
        Request { raw: buf.split_to(head_len + body_len).freeze(), method, target, minor_version, headers, body };
    let wants_upgrade = request.has_token("upgrade", "websocket") || request.header("sec-websocket-key").is_some();
    if !wants_upgrade {
        return Ok(Status::Complete(Parsed::Http(request)));
    }
    validate_upgrade(request).map(|u| Status::Complete(Parsed::Upgrade(u)))
}

/// True when `buf` starts with a complete request head that sends `Expect: 100-continue` for
/// a body: the client waits for `100 Continue` before sending the body (curl does so for
/// bodies over 1 KiB and would otherwise stall for a second).
pub fn expects_continue(buf: &[u8], limits: &HttpLimits) -> bool {
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let slots = &mut slots[..limits.max_headers.clamp(1, HEADER_SLOTS)];
    let mut req = httparse::Request::new(slots);
    if !matches!(req.parse(buf), Ok(httparse::Status::Complete(_))) {
        return false;
    }
    let has = |name: &str, pred: &dyn Fn(&[u8]) -> bool| {
        req.headers.iter().any(|h| h.name.eq_ignore_ascii_case(name) && pred(h.value))
    };
    has("expect", &|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"))
        && has("content-length", &|v| v.trim_ascii() != b"0")
}

/// The interim response that tells a client to send its body.
pub const CONTINUE_RESPONSE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// §4.2.1, in the order a client most likely gets wrong first.
fn validate_upgrade(request: Request) -> Result<Upgrade, HandshakeError> {
    if request.method() != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if request.minor_version() < 1 {
        return Err(HandshakeError::HttpVersion);
    }
    if request.header("host").is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !request.has_token("upgrade", "websocket") {
        return Err(HandshakeError::MissingUpgradeToken);
    }
    if !request.has_token("connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionToken);
    }
    // §4.2.2: "If this version does not match a version understood by the server, the server
    // MUST abort the WebSocket handshake ... and instead send an appropriate HTTP error code
    // (such as 426 Upgrade Required) and a |Sec-WebSocket-Version| header field".
    if request.header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let key = request.header("sec-websocket-key").ok_or(HandshakeError::BadKey)?.trim_ascii();
    match BASE64.decode(key) {
        Ok(decoded) if decoded.len() == 16 => {}
        _ => return Err(HandshakeError::BadKey),
    }
    let accept = accept_key(key);
    Ok(Upgrade { request, accept })
}

/// §4.2.2: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// The 101 Switching Protocols response.
pub fn accept_response(accept: &str, protocol: Option<&str>) -> Bytes {
    let mut s = String::with_capacity(160);
    s.push_str(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    s.push_str(accept);
    s.push_str("\r\n");
    if let Some(p) = protocol {
        let _ = write!(s, "Sec-WebSocket-Protocol: {p}\r\n");
    }
    s.push_str("\r\n");
    Bytes::from(s)
}

/// The standard reason phrase for the statuses this server sends.
pub const fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A plain HTTP response, for errors and for the application's `on_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response { status, headers: Vec::new(), body: Bytes::new() }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Self {
        Response::new(status).header("Content-Type", "text/plain; charset=utf-8").body(body)
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Wire bytes. `Content-Length` is always set; `Connection: close` unless `keep_alive`.
    pub fn encode(&self, keep_alive: bool) -> Bytes {
        let mut head = String::with_capacity(128);
        let _ = write!(head, "HTTP/1.1 {} {}\r\n", self.status, reason_phrase(self.status));
        for (n, v) in &self.headers {
            // A header value with CR or LF would split the response: drop such a header.
            if n.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
                continue;
            }
            let _ = write!(head, "{n}: {v}\r\n");
        }
        let _ = write!(
            head,
            "Content-Length: {}\r\nConnection: {}\r\n\r\n",
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" }
        );
        let mut out = BytesMut::with_capacity(head.len() + self.body.len());
        out.put_slice(head.as_bytes());
        out.put_slice(&self.body);
        out.freeze()
    }
}

/// Client side: the upgrade request for `host` and `path` with a caller-chosen 16-byte nonce
/// (proto has no randomness). Returns the request and the accept key to expect.
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

/// Client side: what a valid 101 told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAccepted {
    pub protocol: Option<String>,
}

/// Client side: checks the server's answer. On `Complete`, the response head has been split off
/// `buf` and any frames that followed it stay there.
pub fn parse_response(
    buf: &mut BytesMut,
    expected_accept: &str,
    limits: &HttpLimits,
) -> Result<Status<ClientAccepted>, HandshakeError> {
    let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
    let slots = &mut slots[..limits.max_headers.clamp(1, HEADER_SLOTS)];
    let mut resp = httparse::Response::new(slots);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_request_bytes => {
            return Err(HandshakeError::RequestTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(Status::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
        Err(_) => return Err(HandshakeError::Malformed),
    };
    let status = resp.code.unwrap_or(0);
    if status != 101 {
        return Err(HandshakeError::UnexpectedStatus(status));
    }
    let find = |name: &str| resp.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let has_token = |name: &str, token: &str| {
        resp.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token("upgrade", "websocket")
        || !has_token("connection", "upgrade")
        || find("sec-websocket-accept").map(<[u8]>::trim_ascii) != Some(expected_accept.as_bytes())
    {
        return Err(HandshakeError::BadAccept);
    }
    let protocol =
        find("sec-websocket-protocol").and_then(|v| std::str::from_utf8(v).ok()).map(|s| s.trim().to_owned());
    let _ = buf.split_to(head_len);
    Ok(Status::Complete(ClientAccepted { protocol }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_REQUEST: &str = "GET /chat?room=1&token=abc HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\nCookie: a=1; fanout_token=xyz\r\n\r\n";

    fn parse(text: &str) -> Result<Status<Parsed>, HandshakeError> {
        parse_request(&mut BytesMut::from(text.as_bytes()), &HttpLimits::default())
    }

    fn upgrade(text: &str) -> Upgrade {
        match parse(text) {
            Ok(Status::Complete(Parsed::Upgrade(u))) => u,
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
            assert_eq!(matches!(got, Status::Partial), i + 1 < bytes.len(), "at byte {i}");
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn frames_after_the_head_stay_in_the_buffer() {
        let mut buf = BytesMut::from(RFC_REQUEST.as_bytes());
        buf.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        let Ok(Status::Complete(Parsed::Upgrade(_))) = parse_request(&mut buf, &HttpLimits::default()) else {
            panic!()
        };
        assert_eq!(&buf[..], &[0x81, 0x80, 1, 2, 3, 4]);
    }

    #[test]
    fn bad_upgrades_table() {
        let base = |replace: &str, with: &str| RFC_REQUEST.replacen(replace, with, 1);
        let cases = [
            (base("GET", "POST"), HandshakeError::MethodNotAllowed, 405),
            (base("HTTP/1.1", "HTTP/1.0"), HandshakeError::HttpVersion, 400),
            (base("Host: server.example.com\r\n", ""), HandshakeError::MissingHost, 400),
            (base("Connection: Upgrade", "Connection: keep-alive"), HandshakeError::MissingConnectionToken, 400),
            (base("Upgrade: websocket", "Upgrade: h2c"), HandshakeError::MissingUpgradeToken, 400),
            (base("Version: 13", "Version: 8"), HandshakeError::UnsupportedVersion, 426),
            (base("Sec-WebSocket-Version: 13\r\n", ""), HandshakeError::UnsupportedVersion, 426),
            (base("dGhlIHNhbXBsZSBub25jZQ==", "dG9vc2hvcnQ="), HandshakeError::BadKey, 400),
            (base("dGhlIHNhbXBsZSBub25jZQ==", "!!!notbase64!!!"), HandshakeError::BadKey, 400),
            (base("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), HandshakeError::BadKey, 400),
        ];
        for (req, want, status) in cases {
            assert_eq!(parse(&req).unwrap_err(), want, "{req}");
            assert_eq!(want.status(), status);
        }
    }

    #[test]
    fn error_responses_carry_status_reason_and_extra_headers() {
        let r = HandshakeError::UnsupportedVersion.response();
        let text = std::str::from_utf8(&r).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"), "{text}");
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(text.ends_with("\r\n\r\nSec-WebSocket-Version must be 13"));
        let text = String::from_utf8(HandshakeError::MethodNotAllowed.response().to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 ") && text.contains("Allow: GET\r\n"));
    }

    #[test]
    fn limits() {
        let limits = HttpLimits { max_request_bytes: 64, max_headers: 2, max_body_bytes: 4 };
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nX-Long: "[..]);
        buf.extend_from_slice(&[b'a'; 64]);
        assert_eq!(parse_request(&mut buf, &limits).unwrap_err(), HandshakeError::RequestTooLarge);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"[..]);
        assert_eq!(parse_request(&mut buf, &limits).unwrap_err(), HandshakeError::TooManyHeaders);
        let mut buf = BytesMut::from(&b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"[..]);
        assert_eq!(parse_request(&mut buf, &limits).unwrap_err(), HandshakeError::BodyTooLarge);
        let mut buf = BytesMut::from(&b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..]);
        assert_eq!(parse_request(&mut buf, &limits).unwrap_err(), HandshakeError::LengthRequired);
        let mut buf = BytesMut::from(&b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"[..]);
        assert_eq!(parse_request(&mut buf, &limits).unwrap_err(), HandshakeError::BadContentLength);
    }

    #[test]
    fn random_bytes_are_malformed() {
        let mut buf = BytesMut::from(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03][..]);
        assert_eq!(parse_request(&mut buf, &HttpLimits::default()).unwrap_err(), HandshakeError::Malformed);
        assert_eq!(parse("\r\n\r\n\x00garbage\r\n\r\n").unwrap_err(), HandshakeError::Malformed);
    }

    #[test]
    fn plain_request_with_body_waits_for_the_body() {
        let mut buf = BytesMut::from(&b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel"[..]);
        assert!(matches!(parse_request(&mut buf, &HttpLimits::default()), Ok(Status::Partial)));
        buf.extend_from_slice(b"lo");
        let Ok(Status::Complete(Parsed::Http(r))) = parse_request(&mut buf, &HttpLimits::default()) else { panic!() };
        assert_eq!((r.method(), r.path(), &r.body()[..]), ("POST", "/api/publish", &b"hello"[..]));
    }

    #[test]
    fn keep_alive_and_expect_continue() {
        let parse_http = |text: &str| match parse(text) {
            Ok(Status::Complete(Parsed::Http(r))) => r,
            other => panic!("{other:?}"),
        };
        assert!(parse_http("GET / HTTP/1.1\r\nHost: x\r\n\r\n").keep_alive());
        assert!(!parse_http("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!parse_http("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(parse_http("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        let limits = HttpLimits::default();
        let head = b"POST /api/publish HTTP/1.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n";
        assert!(expects_continue(head, &limits));
        assert!(!expects_continue(&head[..20], &limits), "head not complete yet");
        assert!(!expects_continue(b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", &limits));
    }

    #[test]
    fn response_encoding_drops_header_injection() {
        let r = Response::text(200, "hi").header("X-Ok", "1").header("X-Bad", "a\r\nSet-Cookie: x");
        let text = String::from_utf8(r.encode(true).to_vec()).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nX-Ok: 1\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi"
        );
    }

    #[test]
    fn client_round_trip() {
        let (req, expected) = client_request("127.0.0.1:9", "/x", [7; 16], &["chat"], &[("Origin", "http://o")]);
        let mut buf = BytesMut::from(&req[..]);
        let u = match parse_request(&mut buf, &HttpLimits::default()) {
            Ok(Status::Complete(Parsed::Upgrade(u))) => u,
            other => panic!("{other:?}"),
        };
        assert_eq!(u.accept, expected);
        let mut resp = BytesMut::from(&accept_response(&u.accept, Some("chat"))[..]);
        resp.extend_from_slice(&[0x81, 0x00]);
        let got = parse_response(&mut resp, &expected, &HttpLimits::default()).unwrap();
        assert_eq!(got, Status::Complete(ClientAccepted { protocol: Some("chat".into()) }));
        assert_eq!(&resp[..], &[0x81, 0x00]);
        let mut wrong = BytesMut::from(&accept_response("bogus", None)[..]);
        assert_eq!(parse_response(&mut wrong, &expected, &HttpLimits::default()), Err(HandshakeError::BadAccept));
        let mut refused = BytesMut::from(&HandshakeError::BadKey.response()[..]);
        assert_eq!(
            parse_response(&mut refused, &expected, &HttpLimits::default()),
            Err(HandshakeError::UnexpectedStatus(400))
        );
    }
}
