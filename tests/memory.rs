//! Resident memory per idle connection, measured on the echo example in its own process: 10,000
//! open, idle WebSocket connections must cost less than 1 KiB each (slack for the allocator; the
//! goal of 256 B and the measured figure are in BENCHMARKS.md). The same measure of the gateway
//! binary is in gateway/tests/memory.rs.

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

fn start_echo() -> (Server, SocketAddr) {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join("echo");
    assert!(path.exists(), "{} missing: run the whole `cargo test`, which builds the examples", path.display());
    let mut child = Command::new(path).arg("127.0.0.1:0").stderr(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().rsplit("ws://").next().unwrap().trim_end_matches('/').parse().unwrap();
    (Server(child), addr)
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

#[test]
fn ten_thousand_idle_connections_cost_under_one_kib_each() {
    let (server, addr) = start_echo();
    let pid = server.0.id();
    // Warm up: the first connections grow the slab and allocate the worker's read block.
    let warm = open(addr, 100);
    let before = rss_bytes(pid);
    let conns = open(addr, 10_000);
    let after = rss_bytes(pid);
    let per_conn = after.saturating_sub(before) / 10_000;
    eprintln!("server RSS {before} -> {after} bytes: {per_conn} B per idle connection");
    assert!(per_conn < 1024, "{per_conn} B per idle connection");
    drop((warm, conns));
}
