//! Resident memory per idle connection, measured on the echo example in its own process: 10,000
//! open, idle WebSocket connections must cost less than 1 KiB each (slack for the allocator; the
//! goal of 256 B and the measured figure are in BENCHMARKS.md), and one with permessage-deflate
//! negotiated at most 64 B more than one without (it holds no compression state). The TLS
//! measure opens 2,000 idle `wss://` connections. The same measure of the gateway binary is in
//! gateway/tests/memory.rs.

mod common;
mod tls_common;

use common::{open_upgraded, open_upgraded_with, rss_bytes, start_example, start_example_with};

/// The tests here each hold 10,100 connections: one at a time, within the 20,000 descriptors a
/// process may have.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn ten_thousand_idle_connections_cost_under_one_kib_each() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (server, addr) = start_example("echo");
    let pid = server.0.id();
    // Warm up: the first connections grow the slab and allocate the worker's read block.
    let warm = open_upgraded(addr, 100);
    let before = rss_bytes(pid);
    let conns = open_upgraded(addr, 10_000);
    let after = rss_bytes(pid);
    let per_conn = after.saturating_sub(before) / 10_000;
    eprintln!("server RSS {before} -> {after} bytes: {per_conn} B per idle connection");
    assert!(per_conn < 1024, "{per_conn} B per idle connection");
    drop((warm, conns));
}

/// The same measure over TLS: idle `wss://` connections, each holding rustls' state for its
/// session but no buffer. The goal is 4 KiB of user space per connection; the figure is in
/// BENCHMARKS.md.
#[test]
fn idle_tls_connections_cost_under_six_kib_each() {
    use std::io::{Read, Write};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pki = tls_common::Pki::new("memory");
    let (cert, key) = pki.install(&pki.issue(1, 2031));
    let (server, addr) =
        start_example_with("echo", &["--tls-cert".as_ref(), cert.as_os_str(), "--tls-key".as_ref(), key.as_os_str()]);
    let pid = server.0.id();
    let client = pki.client_config();
    let open = |n: usize| -> Vec<_> {
        (0..n)
            .map(|_| {
                let mut tls = tls_common::tls_stream(addr, &client);
                let request = format!(
                    "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                );
                tls.write_all(request.as_bytes()).unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    assert_eq!(tls.read(&mut byte).unwrap(), 1, "closed during the upgrade");
                    head.push(byte[0]);
                }
                assert!(head.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&head));
                tls
            })
            .collect()
    };
    let warm = open(100);
    let before = rss_bytes(pid);
    const N: usize = 2_000;
    let conns = open(N);
    let after = rss_bytes(pid);
    let per_conn = after.saturating_sub(before) / N as u64;
    eprintln!("server RSS {before} -> {after} bytes: {per_conn} B per idle TLS connection");
    assert!(per_conn < 6 * 1024, "{per_conn} B per idle TLS connection");
    drop((warm, conns));
}

/// Resident memory per idle connection of the echo example started with `args`, with each
/// upgrade carrying `extra` header lines.
fn per_idle_connection(args: &[&str], extra: &str) -> u64 {
    let (server, addr) = start_example_with("echo", args);
    let pid = server.0.id();
    let warm = open_upgraded_with(addr, 100, extra);
    let before = rss_bytes(pid);
    let conns = open_upgraded_with(addr, 10_000, extra);
    let after = rss_bytes(pid);
    drop((warm, conns));
    after.saturating_sub(before) / 10_000
}

#[test]
fn an_idle_connection_with_compression_costs_within_64_bytes_of_one_without() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let plain = per_idle_connection(&[], "");
    let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
    let compressed = per_idle_connection(&["--compression"], offer);
    eprintln!("per idle connection: {plain} B without compression, {compressed} B with it negotiated");
    assert!(compressed <= plain + 64, "{compressed} B with compression, {plain} B without");
}
