//! Fuzz target: HTTP/1.1 request framing and the WebSocket upgrade
//! (`fanout::proto::handshake::parse_request`), the first parser every connection meets.
//!
//! Input: `[limits][step]` then the bytes a client sends (one request, or several pipelined).
//! `limits` picks the default `HttpLimits` or a tight set (so the too-large paths are reached);
//! `step` seeds the split of the bytes into reads (0: all at once).
//! Invariants checked, beyond "no panic, no hang":
//! - fed in any split, the bytes give the same requests and the same final answer as fed whole;
//! - `Partial` consumes nothing; `Complete` consumes at least one byte;
//! - a request's body is its Content-Length and within `max_body_bytes`; its headers are within
//!   `max_headers`; its target is its path and query;
//! - an upgrade is a GET over HTTP/1.1 with a 16-byte key whose accept key it carries, and the
//!   101 built from it (subprotocol, permessage-deflate) is accepted by the client side;
//! - every refusal encodes as a response with its status.
#![no_main]

use bytes::BytesMut;
use fanout::proto::client::{parse_response, ResponseError};
use fanout::proto::handshake::{accept_key, accept_response_with, parse_request, RequestError, RequestStatus};
use fanout::proto::{HttpLimits, Parsed, Request, Status};
use fanout_fuzz::{chunks, Input};
use libfuzzer_sys::fuzz_target;

/// What one complete request or final state looked like, to compare a split feed with a whole one.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Http { head: String, body: Vec<u8> },
    Upgrade { head: String, accept: String },
    Refused(RequestError),
    Partial { expects_continue: bool },
}

const PROTOCOLS: [&str; 2] = ["fanout.v1", "chat"];

fn limits(selector: u8) -> HttpLimits {
    match selector % 4 {
        0 => HttpLimits::default(),
        1 => HttpLimits { max_request_bytes: 256, max_headers: 8, max_body_bytes: 64 },
        2 => HttpLimits { max_request_bytes: 64, max_headers: 1, max_body_bytes: 0 },
        _ => HttpLimits { max_request_bytes: 1 << 16, max_headers: 200, max_body_bytes: 1 << 16 },
    }
}

fn head(request: &Request) -> String {
    // Touch every accessor the gateway uses on a request: none may panic on any input.
    let _ = (request.query_param("token"), request.cookie("fanout_token"), request.header_str("origin"));
    let _ = request.header_tokens("connection").count();
    format!(
        "{} {} 1.{} keep_alive={} headers={:?}",
        request.method(),
        request.target(),
        request.minor_version(),
        request.keep_alive(),
        request.headers().collect::<Vec<_>>()
    )
}

fn check_request(request: &Request, limits: &HttpLimits) {
    let body = request.body();
    assert!(body.len() <= limits.max_body_bytes, "a body over the limit was taken");
    assert!(request.headers().count() <= limits.max_headers.clamp(1, 128), "more headers than slots");
    let declared = request.header_str("content-length").map(|v| v.trim().parse::<usize>().expect("checked"));
    assert_eq!(declared.unwrap_or(0), body.len(), "the body is the Content-Length");
    let target = request.target();
    match request.query() {
        Some(q) => assert_eq!(format!("{}?{q}", request.path()), target),
        None => assert_eq!(request.path(), target),
    }
}

fn check_upgrade(upgrade: &fanout::proto::Upgrade) {
    let request = &upgrade.request;
    assert_eq!(request.method(), "GET");
    assert!(request.minor_version() >= 1);
    let key = request.header("sec-websocket-key").expect("an upgrade has a key").trim_ascii();
    assert_eq!(upgrade.accept, accept_key(key));
    let supported: Vec<String> = PROTOCOLS.iter().map(|p| p.to_string()).collect();
    let protocol = upgrade.select_protocol(&supported);
    if let Some(p) = protocol {
        assert!(request.offered_protocols().any(|o| o == p), "selected a protocol not offered");
    }
    let agreement = upgrade.negotiate_deflate();
    if let Some(a) = agreement {
        for bits in [a.server_max_window_bits, a.client_max_window_bits].into_iter().flatten() {
            assert!((8..=15).contains(&bits), "window bits {bits}");
        }
    }
    // The server's 101 for this request must satisfy the client side of the handshake.
    let extensions = agreement.map(|a| a.response());
    let response = accept_response_with(&upgrade.accept, protocol, extensions.as_deref());
    let mut buf = BytesMut::from(&response[..]);
    match parse_response(&mut buf, &upgrade.accept, &HttpLimits::default()) {
        Ok(Status::Complete(accepted)) => {
            assert_eq!(accepted.protocol.as_deref(), protocol);
            assert_eq!(accepted.extensions, extensions);
            assert!(buf.is_empty());
        }
        other => panic!("the client refused the server's 101: {other:?}"),
    }
}

fn check_refusal(error: RequestError) {
    let mut buf = BytesMut::from(&error.response()[..]);
    match parse_response(&mut buf, "", &HttpLimits::default()) {
        Err(ResponseError::UnexpectedStatus(status)) => assert_eq!(status, error.status()),
        other => panic!("{error:?} encodes as {other:?}"),
    }
}

/// Feeds `pieces` one read at a time, parsing after each until the parser needs more.
fn run<'a>(limits: &HttpLimits, pieces: impl Iterator<Item = &'a [u8]>) -> Vec<Outcome> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut last = Outcome::Partial { expects_continue: false };
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            match parse_request(&mut buf, limits) {
                Ok(RequestStatus::Partial { expects_continue }) => {
                    assert_eq!(buf, before, "Partial consumed bytes");
                    last = Outcome::Partial { expects_continue };
                    break;
                }
                Ok(RequestStatus::Complete(parsed)) => {
                    assert!(buf.len() < before.len(), "Complete consumed nothing");
                    out.push(match parsed {
                        Parsed::Http(request) => {
                            check_request(&request, limits);
                            Outcome::Http { head: head(&request), body: request.body().to_vec() }
                        }
                        Parsed::Upgrade(upgrade) => {
                            check_request(&upgrade.request, limits);
                            check_upgrade(&upgrade);
                            Outcome::Upgrade { head: head(&upgrade.request), accept: upgrade.accept.clone() }
                        }
                    });
                }
                Err(error) => {
                    check_refusal(error);
                    out.push(Outcome::Refused(error));
                    return out;
                }
            }
        }
    }
    out.push(last);
    out
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let limits = limits(input.byte());
    let step = input.byte();
    let wire = input.rest();
    assert_eq!(chunks(wire, step).map(<[u8]>::len).sum::<usize>(), wire.len(), "the split lost bytes");
    let whole = run(&limits, std::iter::once(wire));
    let split = run(&limits, chunks(wire, step));
    assert_eq!(whole, split, "a split feed parsed differently");
});
