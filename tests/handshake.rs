//! Bad handshakes each get their answer, and the server keeps serving everyone else.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use fanout::proto::frame::OpCode;
use fanout::{Config, ConnId, Ctx, Handler, Message, Reject, Request, Server};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(method: &str, extra: &str, key: Option<&str>, version: &str) -> String {
    let key = key.map(|k| format!("Sec-WebSocket-Key: {k}\r\n")).unwrap_or_default();
    format!(
        "{method} / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{key}Sec-WebSocket-Version: {version}\r\n{extra}\r\n"
    )
}

fn status_of(response: &str) -> u16 {
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {response:?}"))
}

fn assert_still_serving(addr: std::net::SocketAddr) {
    let mut c = RawClient::connect(addr, "/");
    c.send_frame(true, OpCode::Text, b"ok");
    assert_eq!(&c.recv_frame().payload[..], b"ok");
}

#[test]
fn each_bad_handshake_gets_its_status_and_reason() {
    let (server, _events) = echo_server(test_config());
    let addr = server.local_addr();
    let big_header = format!("X-Filler: {}\r\n", "a".repeat(9000));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("wrong method", upgrade_request("POST", "", Some(KEY), "13"), 405, "requires GET"),
        ("missing key", upgrade_request("GET", "", None, "13"), 400, "Sec-WebSocket-Key"),
        ("short key", upgrade_request("GET", "", Some("c2hvcnQ="), "13"), 400, "Sec-WebSocket-Key"),
        (
            "non-base64 key",
            upgrade_request("GET", "", Some("%%%%%%%%%%%%%%%%%%%%%%%%"), "13"),
            400,
            "Sec-WebSocket-Key",
        ),
        ("wrong version", upgrade_request("GET", "", Some(KEY), "8"), 426, "must be 13"),
        ("oversized request", upgrade_request("GET", &big_header, Some(KEY), "13"), 431, "too large"),
        (
            "no Connection: Upgrade",
            upgrade_request("GET", "", Some(KEY), "13").replace("Connection: Upgrade", "Connection: close"),
            400,
            "Connection",
        ),
        ("HTTP/1.0", upgrade_request("GET", "", Some(KEY), "13").replace("HTTP/1.1", "HTTP/1.0"), 400, "HTTP/1.1"),
    ];
    for (name, request, status, reason) in cases {
        let response = http_exchange(addr, request.as_bytes());
        assert_eq!(status_of(&response), status, "{name}: {response}");
        assert!(response.contains(reason), "{name}: reason {reason:?} missing from {response}");
        if status == 426 {
            assert!(response.contains("Sec-WebSocket-Version: 13\r\n"), "{response}");
        }
    }
    assert_still_serving(addr);
    assert!(server.stats().handshake_failures >= 8);
}

#[test]
fn random_bytes_get_400_and_the_connection_is_closed() {
    let (server, _events) = echo_server(test_config());
    let mut garbage = vec![0x16, 0x03, 0x01]; // looks like a TLS ClientHello
    garbage.extend((0..200u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    let response = http_exchange(server.local_addr(), &garbage); // returns at EOF
    assert_eq!(status_of(&response), 400, "{response}");
    assert_still_serving(server.local_addr());
    wait_for_connections(&server, 0);
}

#[test]
fn a_stalled_half_request_is_closed_at_the_handshake_timeout() {
    let config = Config { handshake_timeout: Duration::from_secs(1), ..test_config() };
    let (server, _events) = echo_server(config);
    let mut c = RawClient::connect_tcp(server.local_addr());
    let start = Instant::now();
    c.send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgr");
    let response = String::from_utf8_lossy(&c.read_to_eof()).into_owned();
    let waited = start.elapsed();
    assert_eq!(status_of(&response), 408, "{response}");
    assert!(waited >= Duration::from_millis(900), "closed too early: {waited:?}");
    assert!(waited < Duration::from_secs(4), "closed too late: {waited:?}");
    assert_still_serving(server.local_addr());
}

#[test]
fn plain_http_gets_the_default_426_and_a_rejecting_handler_its_status() {
    let (server, _events) = echo_server(test_config());
    let response =
        http_exchange(server.local_addr(), b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&response), 426, "{response}");
    let request = upgrade_request("GET", "", Some(KEY), "13").replace("GET / ", "GET /reject ");
    let response = http_exchange(server.local_addr(), request.as_bytes());
    assert_eq!(status_of(&response), 403, "{response}");
    assert!(response.ends_with("not here"), "{response}");
}

#[test]
fn plain_http_keeps_the_connection_alive_for_the_next_request() {
    let (server, _events) = echo_server(test_config());
    let mut c = RawClient::connect_tcp(server.local_addr());
    c.send_raw(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    c.send_raw(b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let all = String::from_utf8_lossy(&c.read_to_eof()).into_owned();
    assert_eq!(all.matches("HTTP/1.1 426 ").count(), 3, "{all}");
    assert_eq!(all.matches("Connection: keep-alive\r\n").count(), 2, "{all}");
    assert!(all.contains("Connection: close\r\n"), "{all}");
    assert_eq!(server.stats().http_requests, 3);
}

#[test]
fn rfc_example_accept_key_and_subprotocol_selection() {
    let config = Config { subprotocols: vec!["chat".into()], ..test_config() };
    let (server, _events) = echo_server(config);
    let request = upgrade_request("GET", "Sec-WebSocket-Protocol: superchat, chat\r\n", Some(KEY), "13");
    let mut c = RawClient::connect_tcp(server.local_addr());
    c.send_raw(request.as_bytes());
    c.send_frame(true, OpCode::Close, &1000u16.to_be_bytes());
    let response = String::from_utf8_lossy(&c.read_to_eof()).into_owned();
    assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{response}");
    assert!(response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{response}");
    assert!(response.contains("Sec-WebSocket-Protocol: chat\r\n"), "{response}");
}

/// Reports what `on_open` saw of the request.
struct Inspect(mpsc::Sender<String>);

impl Handler for Inspect {
    type Session = ();
    fn on_open(&mut self, _: &mut Ctx<'_>, _: ConnId, r: &Request<'_>) -> Result<(), Reject> {
        let seen = format!(
            "path={} query={:?} room={:?} ua={:?} cookie={:?} peer_ip={}",
            r.path(),
            r.query(),
            r.query_param("room"),
            r.header_str("user-agent"),
            r.cookie("session"),
            r.peer().ip()
        );
        let _ = self.0.send(seen);
        Ok(())
    }
    fn on_message(&mut self, _: &mut Ctx<'_>, _: ConnId, _: &mut (), _: Message) {}
}

#[test]
fn on_open_sees_path_query_headers_cookies_and_peer() {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let server = Server::new(test_config()).start(move || Inspect(tx.lock().unwrap().clone())).unwrap();
    let request = upgrade_request("GET", "User-Agent: probe/1\r\nCookie: a=b; session=s3cr3t\r\n", Some(KEY), "13")
        .replace("GET / ", "GET /rooms?room=42&x=1 ");
    let mut c = RawClient::connect_tcp(server.local_addr());
    c.send_raw(request.as_bytes());
    let seen = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(
        seen,
        "path=/rooms query=Some(\"room=42&x=1\") room=Some(\"42\") ua=Some(\"probe/1\") cookie=Some(\"s3cr3t\") peer_ip=127.0.0.1"
    );
}
