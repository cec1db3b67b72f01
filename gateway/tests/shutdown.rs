//! Graceful shutdown of the `fanout` binary: SIGTERM drains (healthz 503, new upgrades 503,
//! queued messages delivered, then 1001 spread over the window) and the process exits 0 within
//! the window; a second signal exits at once.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

fn start(args: &[&str]) -> (ChildProcess, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fanout"));
    command.args(["serve", "--listen", "127.0.0.1:0", "--api-key", "key"]).args(args);
    spawn_listening(command)
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args(["-s", name, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn status_of(addr: SocketAddr, request: &str) -> u16 {
    let response = http_exchange(addr, request.as_bytes());
    response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "fanout did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_drains_delivers_queued_messages_spreads_closes_and_exits_zero() {
    let (mut fanout, addr) = start(&["--workers", "2", "--drain-window", "2"]);
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let (mut ws, _) = tungstenite::client(format!("ws://{addr}/"), stream).unwrap();
            ws.send(Message::text(json!({"op": "subscribe", "channel": "news"}).to_string())).unwrap();
            match ws.read().unwrap() {
                Message::Text(t) => assert!(t.contains("subscribed")),
                other => panic!("{other:?}"),
            }
            ws
        })
        .collect();
    for i in 0..5 {
        let body = json!({"channel": "news", "data": i}).to_string();
        let request = format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer key\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(status_of(addr, &request), 200);
    }
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            std::thread::spawn(move || {
                let mut seqs = Vec::new();
                loop {
                    match ws.read() {
                        Ok(Message::Text(t)) => {
                            let v: Value = serde_json::from_str(&t).unwrap();
                            seqs.push(v["seq"].as_u64().unwrap());
                        }
                        Ok(Message::Close(frame)) => {
                            let code = frame.map(|f| u16::from(f.code));
                            return (seqs, code, Instant::now());
                        }
                        Ok(_) => {}
                        Err(e) => panic!("before the close frame: {e}"),
                    }
                }
            })
        })
        .collect();
    let signalled = Instant::now();
    signal(&fanout.0, "TERM");
    wait_until("healthz 503", IO_TIMEOUT, || {
        status_of(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") == 503
    });
    let upgrade = "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    assert_eq!(status_of(addr, upgrade), 503, "no new clients while draining");
    let results: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    for (seqs, code, _) in &results {
        assert_eq!(seqs, &[1, 2, 3, 4, 5], "everything queued before the signal arrives");
        assert_eq!(*code, Some(1001));
    }
    let first = results.iter().map(|r| r.2).min().unwrap();
    let last = results.iter().map(|r| r.2).max().unwrap();
    assert!(last - first >= Duration::from_millis(700), "closes spread over the window, got {:?}", last - first);
    let status = wait_exit(
        &mut fanout.0,
        Duration::from_secs(2) + Duration::from_millis(1500) - signalled.elapsed().min(Duration::from_secs(1)),
    );
    assert_eq!(status.code(), Some(0));
    assert!(signalled.elapsed() < Duration::from_millis(3500), "exited within the window: {:?}", signalled.elapsed());
}

#[test]
fn a_second_signal_exits_at_once() {
    let (mut fanout, addr) = start(&["--drain-window", "30"]);
    let stream = TcpStream::connect(addr).unwrap();
    let (_ws, _) = tungstenite::client(format!("ws://{addr}/"), stream).unwrap();
    signal(&fanout.0, "TERM");
    wait_until("healthz 503", IO_TIMEOUT, || {
        status_of(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") == 503
    });
    signal(&fanout.0, "INT");
    let status = wait_exit(&mut fanout.0, Duration::from_secs(3));
    assert_ne!(status.code(), Some(0), "the forced exit is not a clean one");
}
