//! The per-address handshake rate end to end: after the burst an address's upgrades get 429
//! with `Retry-After` and a reason, counted in the metrics (and their Prometheus text); other
//! addresses are unaffected; tokens come back at the configured rate; plain HTTP is not limited;
//! behind a trusted proxy the forwarded address is the one limited.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use fanout::{Config, RateLimit};

fn limited(rate: &str) -> Config {
    let rate: RateLimit = rate.parse().unwrap();
    Config { handshake_rate_per_ip: Some(rate), trusted_proxies: vec!["127.0.0.1".parse().unwrap()], ..test_config() }
}

/// Sends an upgrade (with `extra` header lines) and returns the response head and the client.
fn upgrade(addr: SocketAddr, extra: &str) -> (String, RawClient) {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    let mut c = RawClient::connect_tcp(addr);
    c.send_raw(request.as_bytes());
    (c.read_head(), c)
}

fn status(head: &str) -> u16 {
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn over_the_burst_upgrades_get_429_with_retry_after_and_are_counted() {
    let (server, _events) = echo_server(limited("1/m:3"));
    let addr = server.local_addr();
    let mut open = Vec::new();
    for _ in 0..3 {
        let (head, c) = upgrade(addr, "");
        assert_eq!(status(&head), 101, "{head}");
        open.push(c);
    }
    let (head, mut refused) = upgrade(addr, "");
    assert!(head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{head}");
    // One token a minute: the next is about 60 s away, rounded up to whole seconds.
    let retry: u64 = head.lines().find_map(|l| l.strip_prefix("Retry-After: ")).expect("Retry-After").parse().unwrap();
    assert!((59..=60).contains(&retry), "{head}");
    assert!(head.ends_with("too many handshakes from this address"), "{head}");
    assert_eq!(refused.read_to_eof(), b"", "closed after the answer");

    // Plain HTTP requests take no token.
    let response = http_exchange(addr, b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(status(&response), 426, "the echo handler's answer, not 429: {response}");

    let stats = server.stats();
    assert_eq!((stats.rejected_handshake_rate, stats.handshakes), (1, 3));
    let text = fanout::metrics::prometheus(&server.worker_stats(), &[]);
    assert!(text.contains("reason=\"handshake_rate\"} 1\n"), "{text}");
}

#[test]
fn each_client_address_has_its_own_bucket_behind_a_trusted_proxy() {
    let (server, _events) = echo_server(limited("1/m:1"));
    let addr = server.local_addr();
    assert_eq!(status(&upgrade(addr, "X-Forwarded-For: 203.0.113.1\r\n").0), 101);
    assert_eq!(status(&upgrade(addr, "X-Forwarded-For: 203.0.113.1\r\n").0), 429);
    assert_eq!(status(&upgrade(addr, "X-Forwarded-For: 203.0.113.2\r\n").0), 101, "another client");
    assert_eq!(status(&upgrade(addr, "").0), 101, "the proxy's own address");
    assert_eq!(server.stats().rejected_handshake_rate, 1);
}

#[test]
fn tokens_come_back_at_the_rate() {
    // 20 a second: one token every 50 ms.
    let (server, _events) = echo_server(limited("20/s:2"));
    let addr = server.local_addr();
    let start = Instant::now();
    let _kept: Vec<_> = (0..2).map(|_| upgrade(addr, "")).collect();
    let refused_at = Instant::now();
    let (head, _) = upgrade(addr, "");
    assert_eq!(status(&head), 429, "{head}");
    assert!(head.contains("Retry-After: 1\r\n"), "under a second is one second: {head}");
    // Retried until a token is back: not before the refill allows, well before the deadline.
    let deadline = refused_at + IO_TIMEOUT;
    let mut refused = 1;
    loop {
        let (head, _) = upgrade(addr, "");
        if status(&head) == 101 {
            break;
        }
        assert_eq!(status(&head), 429, "{head}");
        refused += 1;
        assert!(Instant::now() < deadline, "no token came back");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(start.elapsed() >= Duration::from_millis(50), "a token back after 50 ms, not before");
    assert!(refused_at.elapsed() < Duration::from_secs(5));
    assert_eq!(server.stats().rejected_handshake_rate, refused);
}
