//! TLS end to end: rustls clients (tungstenite's, and bare streams) against a server with a
//! certificate from a test CA the test makes; the bad inputs a TLS port meets (plain HTTP,
//! random bytes, a handshake that stalls), each with its own answer; certificate reload by call
//! and by the file watch.

mod common;
mod tls_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use common::{echo_server, test_config, wait_until, RawClient, Seen, IO_TIMEOUT};
use fanout::{Config, ServerHandle};
use tls_common::{https_exchange, peer_serial, tls_of, tls_stream, wss_connect, Pki};
use tungstenite::Message;

fn tls_config(pki: &Pki, serial: u64) -> Config {
    let (cert, key) = pki.install(&pki.issue(serial, 2031));
    Config { tls_cert: Some(cert), tls_key: Some(key), ..test_config() }
}

fn assert_echoes(ws: &mut tls_common::Wss, text: &str) {
    ws.send(Message::text(text)).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(text));
}

/// A fresh wss connection still upgrades and echoes.
fn assert_serving(server: &ServerHandle, pki: &Pki) {
    let mut ws = wss_connect(server.tls_local_addr().unwrap(), "/", &pki.client_config());
    assert_echoes(&mut ws, "still serving");
}

#[test]
fn tungstenite_over_tls_echoes_with_alpn_http11() {
    let pki = Pki::new("echo");
    let (server, events) = echo_server(tls_config(&pki, 7));
    assert_eq!(server.tls_local_addr(), Some(server.local_addr()), "listen itself serves TLS");
    let mut ws = wss_connect(server.local_addr(), "/chat", &pki.client_config());
    assert!(matches!(events.recv_timeout(IO_TIMEOUT).unwrap(), Seen::Open { ref path, .. } if path == "/chat"));
    assert_eq!(tls_of(&ws).alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(peer_serial(tls_of(&ws)), 7);
    assert_echoes(&mut ws, "hello over TLS");
    // Larger than a record and than a write chunk, both ways.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(big));
    // Many small messages in a burst, answered in order.
    for i in 0..200 {
        ws.send(Message::text(format!("m{i}"))).unwrap();
    }
    for i in 0..200 {
        assert_eq!(ws.read().unwrap(), Message::text(format!("m{i}")));
    }
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("closing: {e}"),
        }
    }
    let closed = events.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(matches!(closed, Seen::Close { code: 1005, .. }), "{closed:?}");
    let stats = server.stats();
    assert_eq!((stats.tls_handshakes, stats.tls_failures), (1, 0));
}

#[test]
fn a_second_connection_resumes_the_session() {
    let pki = Pki::new("resume");
    let (server, _events) = echo_server(tls_config(&pki, 1));
    let client = pki.client_config();
    let mut first = wss_connect(server.local_addr(), "/", &client);
    assert_echoes(&mut first, "one");
    assert_eq!(tls_of(&first).handshake_kind(), Some(rustls::HandshakeKind::Full));
    let mut second = wss_connect(server.local_addr(), "/", &client);
    assert_echoes(&mut second, "two");
    assert_eq!(tls_of(&second).handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    wait_until("the resumption counted", IO_TIMEOUT, || server.stats().tls_resumed == 1);
}

#[test]
fn plain_http_on_the_tls_port_gets_400_in_plain_text_then_the_close() {
    let pki = Pki::new("plain");
    let (server, _events) = echo_server(tls_config(&pki, 1));
    let mut c = RawClient::connect_tcp(server.local_addr());
    c.send_raw(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let answer = String::from_utf8(c.read_to_eof()).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(answer.contains("use https:// or wss://"), "{answer}");
    assert_eq!(server.stats().tls_plain_http, 1);
    assert_serving(&server, &pki);
}

#[test]
fn random_bytes_get_a_fatal_alert_then_the_close() {
    let pki = Pki::new("random");
    let (server, _events) = echo_server(tls_config(&pki, 1));
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut noise: Vec<u8> = (0..512)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    noise[0] = 0x9C; // neither a record type nor a request line's capital letter
    let mut c = RawClient::connect_tcp(server.local_addr());
    c.send_raw(&noise);
    let answer = c.read_to_eof();
    // An alert record (type 21) with level fatal (2), then EOF.
    assert!(answer.len() >= 7 && answer[0] == 21 && answer[5] == 2, "{answer:02x?}");
    wait_until("the failure counted", IO_TIMEOUT, || server.stats().tls_failures == 1);
    assert_serving(&server, &pki);
}

#[test]
fn a_handshake_that_stalls_is_closed_at_the_handshake_timeout() {
    let pki = Pki::new("stall");
    let config = Config { handshake_timeout: Duration::from_secs(1), ..tls_config(&pki, 1) };
    let (server, _events) = echo_server(config);
    // The first bytes of a ClientHello record, and then nothing.
    let mut stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(&[0x16, 0x03, 0x01, 0x00, 0xC8, 0x01, 0x00]).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let waited = started.elapsed();
    assert!(rest.is_empty(), "{rest:02x?}");
    assert!(waited >= Duration::from_millis(700) && waited < Duration::from_secs(5), "closed after {waited:?}");
    assert_eq!(server.stats().handshake_timeouts, 1);
    assert_serving(&server, &pki);
}

#[test]
fn tls_listen_serves_tls_beside_a_plain_listen() {
    let pki = Pki::new("second");
    let config = Config { tls_listen: Some("127.0.0.1:0".parse().unwrap()), ..tls_config(&pki, 3) };
    let (server, _events) = echo_server(config);
    let tls_addr = server.tls_local_addr().unwrap();
    assert_ne!(tls_addr, server.local_addr());
    let mut plain = RawClient::connect(server.local_addr(), "/");
    common::say(&mut plain, "plain");
    assert_eq!(common::text(&mut plain), "plain");
    let mut ws = wss_connect(tls_addr, "/", &pki.client_config());
    assert_echoes(&mut ws, "secure");
    // Plain HTTP and TLS each on its own port.
    let answer = common::http_exchange(server.local_addr(), b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 426 "), "{answer}");
    let answer =
        https_exchange(tls_addr, &pki.client_config(), "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 426 "), "{answer}");
}

#[test]
fn kept_alive_http_requests_over_tls() {
    let pki = Pki::new("http");
    let (server, _events) = echo_server(tls_config(&pki, 1));
    let mut tls = tls_stream(server.local_addr(), &pki.client_config());
    let request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    tls.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(out.matches("HTTP/1.1 426 ").count(), 2, "{out}");
    assert_eq!(server.stats().http_requests, 2);
}

#[test]
fn a_graceful_stop_reaches_tls_clients_with_1001() {
    let pki = Pki::new("drain");
    let config = Config { drain_window: Duration::from_millis(300), ..tls_config(&pki, 1) };
    let (server, _events) = echo_server(config);
    let mut ws = wss_connect(server.local_addr(), "/", &pki.client_config());
    assert_echoes(&mut ws, "before");
    server.shutdown();
    match ws.read().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("{other:?}"),
    }
    server.join().unwrap();
}

#[test]
fn reload_serves_the_new_pair_to_new_handshakes_and_keeps_the_old_on_error() {
    let pki = Pki::new("reload");
    let config = Config { tls_watch_interval: Duration::ZERO, ..tls_config(&pki, 100) };
    let (server, _events) = echo_server(config);
    let client = pki.client_config();
    let expiry_2031 = server.tls_cert_expiry().unwrap();
    assert_eq!(expiry_2031.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_924_992_000);
    let mut old = wss_connect(server.local_addr(), "/", &client);
    assert_eq!(peer_serial(tls_of(&old)), 100);

    pki.install(&pki.issue(200, 2032));
    server.reload_tls().unwrap();
    // A client that resumes keeps the session's certificate: new clients show the new one.
    let client = pki.client_config();
    let mut new = wss_connect(server.local_addr(), "/", &client);
    assert_eq!(peer_serial(tls_of(&new)), 200);
    assert!(server.tls_cert_expiry().unwrap() > expiry_2031);
    assert_echoes(&mut old, "the old connection keeps its session");
    assert_echoes(&mut new, "and the new one has its own");

    // A corrupt certificate, then a key that does not fit: refused, the serving pair stays.
    let (cert, key) = pki.paths();
    let good = pki.issue(300, 2033);
    tls_common::replace(&cert, b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n");
    let err = server.reload_tls().unwrap_err().to_string();
    assert!(err.contains("cert.pem"), "{err}");
    tls_common::replace(&cert, good.chain_pem.as_bytes());
    tls_common::replace(&key, pki.issue(301, 2033).key_pem.as_bytes());
    let err = server.reload_tls().unwrap_err().to_string();
    assert!(err.contains("key.pem") && err.contains("does not fit"), "{err}");
    let mut after = wss_connect(server.local_addr(), "/", &pki.client_config());
    assert_eq!(peer_serial(tls_of(&after)), 200);
    assert_echoes(&mut after, "the pair that was serving still is");
    // A plain server has nothing to reload.
    let (plain, _) = echo_server(test_config());
    assert!(plain.reload_tls().is_err() && plain.tls_cert_expiry().is_none());
}

#[test]
fn the_file_watch_picks_up_a_changed_pair() {
    let pki = Pki::new("watch");
    let config = Config { tls_watch_interval: Duration::from_millis(100), ..tls_config(&pki, 1) };
    let (server, _events) = echo_server(config);
    let client = pki.client_config();
    let mut old = wss_connect(server.local_addr(), "/", &client);
    pki.install(&pki.issue(2, 2031));
    // A fresh client each time: one that resumes keeps the session's certificate.
    wait_until("the new certificate", IO_TIMEOUT, || {
        peer_serial(tls_of(&wss_connect(server.local_addr(), "/", &pki.client_config()))) == 2
    });
    // A broken pair is logged and ignored.
    let (cert, _) = pki.paths();
    tls_common::replace(&cert, b"garbage");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(peer_serial(tls_of(&wss_connect(server.local_addr(), "/", &pki.client_config()))), 2);
    assert_echoes(&mut old, "unaffected");
}

#[test]
fn a_bad_pair_at_start_fails_the_start_with_the_file_named() {
    let pki = Pki::new("start");
    let (cert, key) = pki.paths();
    std::fs::write(&cert, "nothing").unwrap();
    std::fs::write(&key, pki.issue(1, 2031).key_pem).unwrap();
    let config = Config { tls_cert: Some(cert), tls_key: Some(key), ..test_config() };
    let err = fanout::Server::new(config).start(|| common::Echo { events: std::sync::mpsc::channel().0 });
    let err = err.err().expect("refused").to_string();
    assert!(err.contains("cert.pem"), "{err}");
}
