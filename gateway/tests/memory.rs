//! Resident memory per connection of the `fanout` binary in its own process: 10,000 open
//! WebSocket connections, each subscribed to one channel, must cost less than 1 KiB each (the
//! library's own figure, on the echo example, is in tests/memory.rs).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// Opens `n` upgraded connections: all requests first, then all answers, as a burst would.
fn open(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut conns: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    for s in &mut conns {
        s.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "server closed during the upgrade");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101 "), "{}", String::from_utf8_lossy(&head));
    }
    conns
}

fn start_gateway() -> (Server, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "1", "--log-level", "warn"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    while !line.contains("listening on") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "fanout exited before listening");
    }
    let addr = line.split("http://").nth(1).unwrap().split('/').next().unwrap().parse().unwrap();
    (Server(child), addr)
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
    let mut warm = open(addr, 100);
    subscribe_all(&mut warm, "news");
    let before = rss_bytes(pid);
    let mut conns = open(addr, 10_000);
    subscribe_all(&mut conns, "news");
    let after = rss_bytes(pid);
    let per_conn = after.saturating_sub(before) / 10_000;
    eprintln!("gateway RSS {before} -> {after} bytes: {per_conn} B per connection subscribed to one channel");
    assert!(per_conn < 1024, "{per_conn} B per subscribed connection");
    drop((warm, conns));
}
