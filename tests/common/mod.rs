//! Shared test helpers: servers on port 0, a raw RFC 6455 client built on `fanout::proto`, a
//! condition wait with a deadline (tests wait on state, never on fixed sleeps), and child
//! processes (an example, or the `fanout` binary) started on port 0 and measured from outside.
//!
//! The gateway's tests include this file too (`#[path = "../../tests/common/mod.rs"]`), so it
//! uses only the library's public API, `bytes` and std.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fanout::proto::client::{client_request, parse_response, ClientAccepted};
use fanout::proto::frame::{encode_masked_frame, OpCode, Role, RSV1};
use fanout::proto::{decode_frame, Frame, FrameRules, HttpLimits, Status};
use fanout::{CloseCode, Config, ConnId, Ctx, Handler, Message, Reject, Request, Server, ServerHandle};

pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A config bound to an ephemeral loopback port.
pub fn test_config() -> Config {
    Config { listen: "127.0.0.1:0".parse().unwrap(), ..Config::default() }
}

/// What an `Echo` handler saw, for tests to wait on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Open { id: ConnId, path: String },
    Close { id: ConnId, code: u16, reason: String },
}

/// Echoes every message and reports opens and closes on a channel.
pub struct Echo {
    pub events: mpsc::Sender<Seen>,
}

impl Handler for Echo {
    type Session = ();

    fn on_open(&mut self, _: &mut Ctx<'_>, id: ConnId, req: &Request<'_>) -> Result<(), Reject> {
        if req.path() == "/reject" {
            return Err(Reject::new(403, "not here"));
        }
        let _ = self.events.send(Seen::Open { id, path: req.path().to_owned() });
        Ok(())
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _: &mut (), message: Message) {
        ctx.send(id, message);
    }

    fn on_close(&mut self, _: &mut Ctx<'_>, id: ConnId, _: (), code: CloseCode, reason: &str) {
        let _ = self.events.send(Seen::Close { id, code: code.get(), reason: reason.to_owned() });
    }
}

/// Sends `text` as one text frame.
pub fn say(c: &mut RawClient, text: &str) {
    c.send_frame(true, OpCode::Text, text.as_bytes());
}

/// The next frame's payload as text.
pub fn text(c: &mut RawClient) -> String {
    String::from_utf8(c.recv_frame().payload.to_vec()).unwrap()
}

/// Starts an echo server with `config`; returns it and the stream of open/close events.
pub fn echo_server(config: Config) -> (ServerHandle, mpsc::Receiver<Seen>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let server = Server::new(config).start(move || Echo { events: tx.lock().unwrap().clone() }).expect("server starts");
    (server, rx)
}

/// Waits until `cond` holds, failing the test after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for the server's connection gauge to reach `n`.
pub fn wait_for_connections(server: &ServerHandle, n: u64) {
    wait_until(&format!("{n} connections"), IO_TIMEOUT, || server.stats().connections == n);
}

/// A hand-driven client: exact bytes out, frames in.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl RawClient {
    /// Connects without handshaking.
    pub fn connect_tcp(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient { stream, buf: BytesMut::new() }
    }

    /// Wraps an already connected stream.
    pub fn connect_tcp_with(stream: TcpStream) -> RawClient {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        RawClient { stream, buf: BytesMut::new() }
    }

    /// Reads an HTTP response head and, when it has a Content-Length, its body.
    pub fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end + 4]).into_owned();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    self.fill();
                }
                let all = self.buf.split_to(end + 4 + len);
                return String::from_utf8_lossy(&all).into_owned();
            }
            self.fill();
        }
    }

    /// Connects and completes the upgrade to `path`.
    pub fn connect(addr: SocketAddr, path: &str) -> RawClient {
        RawClient::connect_with(addr, path, &[]).0
    }

    /// Connects and completes the upgrade to `path`, sending `headers` too (an extension
    /// offer); returns what the 101 said.
    pub fn connect_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (RawClient, ClientAccepted) {
        let mut c = RawClient::connect_tcp(addr);
        let (request, accept) = client_request(&addr.to_string(), path, rand_nonce(), &[], headers);
        c.send_raw(&request);
        loop {
            match parse_response(&mut c.buf, &accept, &HttpLimits::default()).expect("101") {
                Status::Complete(accepted) => return (c, accepted),
                Status::Partial => c.fill(),
            }
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends one masked frame.
    pub fn send_frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        let frame = encode_masked_frame(fin, opcode, payload, [0x12, 0x34, 0x56, 0x78]);
        self.send_raw(&frame);
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).expect("read");
        assert!(n > 0, "server closed the connection; buffered: {:02x?}", &self.buf[..self.buf.len().min(64)]);
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// The next frame from the server (which must be unmasked; RSV1 is let through for the
    /// tests of permessage-deflate to look at).
    pub fn recv_frame(&mut self) -> Frame {
        let rules = FrameRules { role: Role::Client, allowed_rsv: RSV1, max_frame_payload: 1 << 30 };
        loop {
            match decode_frame(&mut self.buf, &rules).expect("valid server frame") {
                Status::Complete(f) => return f,
                Status::Partial => self.fill(),
            }
        }
    }

    /// Reads frames until a close frame; returns its code (1005 when empty) and reason.
    pub fn recv_close(&mut self) -> (u16, String) {
        loop {
            let f = self.recv_frame();
            if f.opcode == OpCode::Close {
                if f.payload.len() < 2 {
                    return (1005, String::new());
                }
                let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                return (code, String::from_utf8(f.payload[2..].to_vec()).unwrap());
            }
        }
    }

    /// Reads until the server closes the TCP connection; returns everything read.
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        let mut out = self.buf.split().to_vec();
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
                Err(e) => panic!("waiting for EOF: {e}"),
            }
        }
    }
}

/// Sends `request` on a fresh connection and returns the whole HTTP response (until EOF).
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut c = RawClient::connect_tcp(addr);
    c.send_raw(request);
    String::from_utf8_lossy(&c.read_to_eof()).into_owned()
}

pub fn rand_nonce() -> [u8; 16] {
    let t = Instant::now().elapsed().as_nanos() as u64 ^ std::process::id() as u64;
    let mut n = [0u8; 16];
    n[..8].copy_from_slice(&t.to_le_bytes());
    n[8..].copy_from_slice(&(t.rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15).to_le_bytes());
    n
}

/// How long a child process may take to print its "listening on" line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process, killed and reaped when dropped (a failed test leaves no server behind).
pub struct ChildProcess(pub Child);

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` with stderr piped and waits for its "listening on" line: `NAME: listening
/// on ws://ADDR/` from the examples, `fanout: listening on http://ADDR/ ...` from the binary.
/// Returns the child and ADDR. Stderr is drained for the child's whole life, so it never blocks
/// on a full pipe; a child that exits or stays silent fails the test with what it said.
pub fn spawn_listening(command: Command) -> (ChildProcess, SocketAddr) {
    let (child, addr, _) = spawn_logged(command);
    (child, addr)
}

/// Every line a child wrote on stderr so far.
pub type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// `spawn_listening`, and the child's stderr lines for its whole life (for tests that check
/// what it logged).
pub fn spawn_logged(mut command: Command) -> (ChildProcess, SocketAddr, Log) {
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut child = ChildProcess(child);
    let (lines, said) = mpsc::channel();
    let log = Log::default();
    let kept = log.clone();
    std::thread::spawn(move || {
        let mut line = Vec::new();
        // Reads to EOF; once the line has been found nobody listens, and sends just fail.
        while stderr.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            kept.lock().unwrap().push(text.clone());
            let _ = lines.send(text);
            line.clear();
        }
    });
    let deadline = Instant::now() + START_TIMEOUT;
    let mut before = Vec::new();
    loop {
        match said.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let addr = ["https://", "http://", "wss://", "ws://"]
                        .iter()
                        .fold(url, |url, scheme| url.trim_start_matches(scheme))
                        .trim_end_matches('/');
                    let addr = addr.parse().unwrap_or_else(|e| panic!("{line:?}: no address ({e})"));
                    return (child, addr, log);
                }
                before.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.0.wait();
                panic!("{command:?} exited before listening ({status:?}); it said:\n{}", before.join("\n"));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "{command:?} did not say where it listens within {START_TIMEOUT:?}; it said:\n{}",
                    before.join("\n")
                )
            }
        }
    }
}

/// Starts the example `name` on an ephemeral loopback port. The example is built by `cargo
/// test` next to this test's own executable (target/debug/examples/, this is target/debug/deps/).
pub fn start_example(name: &str) -> (ChildProcess, SocketAddr) {
    start_example_with::<&str>(name, &[])
}

/// `start_example` with more arguments after the address (`--compression`, `--tls-cert FILE
/// --tls-key FILE`).
pub fn start_example_with<A: AsRef<std::ffi::OsStr>>(name: &str, args: &[A]) -> (ChildProcess, SocketAddr) {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    assert!(path.exists(), "{} missing: run the whole `cargo test`, which builds the examples", path.display());
    let mut command = Command::new(path);
    command.arg("127.0.0.1:0").args(args);
    spawn_listening(command)
}

/// The resident memory of process `pid`, in bytes (VmRSS of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// Opens `n` upgraded, idle connections to `addr`: all requests first, then all answers, as a
/// burst would.
pub fn open_upgraded(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    open_upgraded_with(addr, n, "")
}

/// `open_upgraded` with `extra` header lines (each ending in CRLF) in every request.
pub fn open_upgraded_with(addr: SocketAddr, n: usize, extra: &str) -> Vec<TcpStream> {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    let mut conns: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    for s in &mut conns {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
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
