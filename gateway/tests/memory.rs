//! Resident memory per connection of the `fanout` binary in its own process: 10,000 open
//! WebSocket connections, each subscribed to one channel, must cost less than 1 KiB each (the
//! library's own figure, on the echo example, is in tests/memory.rs).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use common::{open_upgraded, rss_bytes, spawn_listening, ChildProcess};

fn start_gateway() -> (ChildProcess, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fanout"));
    command.args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--log-level", "warn"]);
    spawn_listening(command)
}

/// Subscribes every connection to `channel` and waits for each reply.
fn subscribe_all(conns: &mut [TcpStream], channel: &str) {
    let payload = format!(r#"{{"op":"subscribe","channel":"{channel}"}}"#);
    // A zero masking key leaves the payload as it is (RFC 6455 §5.3), which keeps this simple.
    let mut frame = vec![0x81, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload.as_bytes());
    for s in conns.iter_mut() {
        s.write_all(&frame).unwrap();
    }
    for s in conns.iter_mut() {
        let mut header = [0u8; 2];
        s.read_exact(&mut header).unwrap();
        let mut reply = vec![0u8; usize::from(header[1] & 0x7F)];
        s.read_exact(&mut reply).unwrap();
        assert!(String::from_utf8_lossy(&reply).contains(r#""op":"subscribed""#));
    }
}

#[test]
fn ten_thousand_subscribed_gateway_connections_cost_under_one_kib_each() {
    let (server, addr) = start_gateway();
    let pid = server.0.id();
    let mut warm = open_upgraded(addr, 100);
    subscribe_all(&mut warm, "news");
    let before = rss_bytes(pid);
    let mut conns = open_upgraded(addr, 10_000);
    subscribe_all(&mut conns, "news");
    let after = rss_bytes(pid);
    let per_conn = after.saturating_sub(before) / 10_000;
    eprintln!("gateway RSS {before} -> {after} bytes: {per_conn} B per connection subscribed to one channel");
    assert!(per_conn < 1024, "{per_conn} B per subscribed connection");
    drop((warm, conns));
}
