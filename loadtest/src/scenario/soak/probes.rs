//! The soak's plain-socket parts, each on a thread of its own with blocking sockets: the HTTP
//! publisher (`POST /api/publish` at a steady rate over one keep-alive connection), the
//! malformed cases (each expects its one answer: a close code or an HTTP status), and the
//! `/metrics` read the sampler uses.
//!
//! Invariants: a publish answered with anything but 200 and a seq, and a malformed case answered
//! with anything but its expected answer, is a failure recorded in `SoakState`. The publisher
//! raises a channel's acknowledged seq only from the server's answer. Must not: read
//! WebSocket subscriptions (the driver's) or judge the server's resources (the sampler's).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fanout::proto::client::{client_request, parse_response};
use fanout::proto::{HttpLimits, OpCode, Status};

use super::state::{add, channel_name, SoakState};
use crate::util::XorShift;
use crate::wire::{json_u64, push_frame, scan_frames};

/// How long any answer may take on a busy box before it counts as none.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server is: its address and the Host header.
#[derive(Debug, Clone)]
pub struct Server {
    pub addr: SocketAddr,
    pub host: String,
}

impl Server {
    fn connect(&self) -> io::Result<TcpStream> {
        let s = TcpStream::connect_timeout(&self.addr, ANSWER_TIMEOUT)?;
        s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        s.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        s.set_nodelay(true)?;
        Ok(s)
    }
}

/// One HTTP response: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server said `Connection: close` (or the response ended with the connection).
    pub close: bool,
}

/// Reads one response (head, then a Content-Length body, or to EOF without one) from `s`;
/// `buf` keeps bytes read past it.
pub fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Answer> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status line"))?;
            let header = |name: &str| {
                head.lines()
                    .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')).map(|v| v.trim().to_owned()))
            };
            let close = header("connection").is_some_and(|v| v == "close");
            let body_start = end + 4;
            match header("content-length").and_then(|v| v.parse::<usize>().ok()) {
                Some(len) => {
                    while buf.len() < body_start + len {
                        let n = s.read(&mut chunk)?;
                        if n == 0 {
                            return Err(io::ErrorKind::UnexpectedEof.into());
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = buf[body_start..body_start + len].to_vec();
                    buf.drain(..body_start + len);
                    return Ok(Answer { status, body, close });
                }
                None => {
                    // No length: the body runs to EOF (or there is none, and EOF follows).
                    loop {
                        match s.read(&mut chunk) {
                            Ok(0) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
                            Err(e) => return Err(e),
                        }
                    }
                    let body = buf[body_start..].to_vec();
                    buf.clear();
                    return Ok(Answer { status, body, close: true });
                }
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Publishes `rate` messages per second, channels in turn, until the soak stops.
pub fn publisher(server: Server, api_key: String, rate: f64, payload: usize, state: Arc<SoakState>) {
    if rate <= 0.0 {
        return;
    }
    let channels = state.acked.len();
    let filler = "x".repeat(payload);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut conn: Option<TcpStream> = None;
    let mut buf = Vec::new();
    let mut k: u64 = 0;
    while !state.stopping() {
        let due = start + interval.mul_f64(k as f64);
        let now = Instant::now();
        if due > now {
            // Pacing a steady rate, not synchronising with anything.
            std::thread::sleep((due - now).min(Duration::from_millis(200)));
            continue;
        }
        let ch = (k % channels as u64) as usize;
        let body = format!(r#"{{"channel":"{}","data":{{"n":{k},"p":"{filler}"}}}}"#, channel_name(ch));
        let request = format!(
            "POST /api/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {api_key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            server.host,
            body.len()
        );
        k += 1;
        if conn.is_none() {
            match server.connect() {
                Ok(s) => {
                    add(&state.n.client_open, 1);
                    conn = Some(s);
                    buf.clear();
                }
                Err(e) => {
                    state.fail(format!("publish: connect: {e}"));
                    continue;
                }
            }
        }
        let Some(s) = conn.as_mut() else { continue };
        let result = s.write_all(request.as_bytes()).and_then(|()| read_answer(s, &mut buf));
        let keep = match result {
            Ok(a) if a.status == 200 => match json_u64(&a.body, "seq") {
                Some(seq) => {
                    state.acked[ch].fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
                    add(&state.n.published, 1);
                    !a.close
                }
                None => {
                    state.fail(format!("publish: 200 without seq: {}", String::from_utf8_lossy(&a.body)));
                    !a.close
                }
            },
            Ok(a) => {
                state.fail(format!("publish: HTTP {} {}", a.status, String::from_utf8_lossy(&a.body)));
                !a.close
            }
            Err(e) => {
                state.fail(format!("publish: {e}"));
                false
            }
        };
        if !keep {
            conn = None;
            state.n.client_open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    if conn.is_some() {
        state.n.client_open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One malformed case: its name, what it sends, the answer it expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// A client frame without the mask bit (RFC 6455 §5.1): close 1002.
    Unmasked,
    /// A text frame that is not UTF-8 (§8.1): close 1007.
    BadUtf8,
    /// A frame whose header claims more than the server's message limit: close 1009.
    Oversize,
    /// Bytes that are not an HTTP request: 400.
    Garbage,
    /// An upgrade without Sec-WebSocket-Key (§4.2.1): 400.
    NoKey,
}

pub const CASES: [Case; 5] = [Case::Unmasked, Case::BadUtf8, Case::Oversize, Case::Garbage, Case::NoKey];

impl Case {
    pub fn name(self) -> &'static str {
        match self {
            Case::Unmasked => "unmasked frame",
            Case::BadUtf8 => "bad UTF-8 text",
            Case::Oversize => "oversize frame",
            Case::Garbage => "garbage handshake",
            Case::NoKey => "no Sec-WebSocket-Key",
        }
    }

    pub fn expected(self) -> &'static str {
        match self {
            Case::Unmasked => "close 1002",
            Case::BadUtf8 => "close 1007",
            Case::Oversize => "close 1009",
            Case::Garbage | Case::NoKey => "HTTP 400",
        }
    }
}

/// Runs the cases in turn, `rate` per second, until the soak stops.
pub fn malformed(server: Server, rate: f64, oversize: u64, state: Arc<SoakState>) {
    if rate <= 0.0 {
        return;
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut rng = XorShift::new(0x50A4);
    let mut k: u64 = 0;
    while !state.stopping() {
        let due = start + interval.mul_f64(k as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(200)));
            continue;
        }
        let case = CASES[(k % CASES.len() as u64) as usize];
        k += 1;
        add(&state.n.client_open, 1);
        let answer = match run_case(&server, case, oversize, &mut rng) {
            Ok(a) => a,
            Err(e) => format!("error: {e}"),
        };
        state.n.client_open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        add(&state.n.malformed, 1);
        state.answer(case.name(), &answer);
        if answer != case.expected() {
            state.fail(format!("{}: answered {answer}, expected {}", case.name(), case.expected()));
        }
    }
}

/// Sends one case on a fresh connection and describes the answer ("close 1002", "HTTP 400", ...).
pub fn run_case(server: &Server, case: Case, oversize: u64, rng: &mut XorShift) -> io::Result<String> {
    let mut s = server.connect()?;
    let key = rng.next_u32().to_ne_bytes();
    match case {
        Case::Garbage => return http_answer(&mut s, b"\x01\x02 this is not HTTP\r\n\r\n"),
        Case::NoKey => {
            let req = format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
                server.host
            );
            return http_answer(&mut s, req.as_bytes());
        }
        _ => {}
    }
    upgrade(&mut s, server, rng)?;
    let mut frame = Vec::new();
    match case {
        Case::Unmasked => frame.extend_from_slice(b"\x81\x05hello"),
        Case::BadUtf8 => push_frame(&mut frame, OpCode::Text, &[b'o', b'k', 0xC3, 0x28], key),
        _ => {
            // The header alone: the server must refuse it from the length, before any payload.
            frame.extend_from_slice(&[0x82, 0x80 | 127]);
            frame.extend_from_slice(&oversize.to_be_bytes());
            frame.extend_from_slice(&key);
        }
    }
    s.write_all(&frame)?;
    close_answer(&mut s)
}

/// A valid upgrade on `s`; what follows the 101 must be nothing yet.
fn upgrade(s: &mut TcpStream, server: &Server, rng: &mut XorShift) -> io::Result<()> {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&rng.next_u64().to_ne_bytes());
    nonce[8..].copy_from_slice(&rng.next_u64().to_ne_bytes());
    let (request, accept) = client_request(&server.host, "/", nonce, &[], &[]);
    s.write_all(&request)?;
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF during the upgrade"));
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_response(&mut buf, &accept, &HttpLimits::default()) {
            Ok(Status::Partial) => {}
            Ok(Status::Complete(_)) => return Ok(()),
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("upgrade: {e:?}"))),
        }
    }
}

/// Reads until the server's close frame: "close CODE"; "EOF" when the connection ends first.
fn close_answer(s: &mut TcpStream) -> io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut code = None;
        let used = scan_frames(&buf, 1 << 20, |f| {
            if f.opcode == OpCode::Close {
                code = Some(match f.payload {
                    [a, b, ..] => u16::from_be_bytes([*a, *b]),
                    _ => 1005,
                });
                return false;
            }
            true
        })
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e:?}")))?;
        if let Some(c) = code {
            return Ok(format!("close {c}"));
        }
        buf.drain(..used);
        match s.read(&mut chunk) {
            Ok(0) => return Ok("EOF".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok("reset".into()),
            Err(e) => return Err(e),
        }
    }
}

/// Writes `request` and describes the HTTP answer ("HTTP 400").
fn http_answer(s: &mut TcpStream, request: &[u8]) -> io::Result<String> {
    s.write_all(request)?;
    let mut buf = Vec::new();
    match read_answer(s, &mut buf) {
        Ok(a) => Ok(format!("HTTP {}", a.status)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok("EOF".into()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok("reset".into()),
        Err(e) => Err(e),
    }
}

/// Reads the server's slow consumer count every second into `SoakState::server_slow`, so that
/// slow readers read again while the server still tries to send them its 1008.
pub fn watch_slow(server: Server, state: Arc<SoakState>) {
    while !state.stopping() {
        if let Ok(m) = metrics(&server) {
            state.server_slow.fetch_max(m.slow_consumers, std::sync::atomic::Ordering::Relaxed);
        }
        // A polling period, not a synchronisation.
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// What `/metrics` says: open connections and slow consumers closed, summed over workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerMetrics {
    pub connections: u64,
    pub slow_consumers: u64,
}

/// Reads `/metrics` on a fresh connection.
pub fn metrics(server: &Server) -> io::Result<ServerMetrics> {
    let mut s = server.connect()?;
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", server.host);
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    let a = read_answer(&mut s, &mut buf)?;
    if a.status != 200 {
        return Err(io::Error::other(format!("/metrics: HTTP {}", a.status)));
    }
    Ok(parse_metrics(&String::from_utf8_lossy(&a.body)))
}

/// Sums the per-worker `fanout_connections` and `fanout_slow_consumers_total` lines.
pub fn parse_metrics(text: &str) -> ServerMetrics {
    let mut m = ServerMetrics::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let name = name.split('{').next().unwrap_or(name);
        let Ok(v) = value.parse::<f64>() else { continue };
        match name {
            "fanout_connections" => m.connections += v as u64,
            "fanout_slow_consumers_total" => m.slow_consumers += v as u64,
            _ => {}
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_sum_over_workers() {
        let text =
            "# TYPE fanout_connections gauge\nfanout_connections{worker=\"0\"} 2\nfanout_connections{worker=\"1\"} 5\n\
                    fanout_connections_total{worker=\"0\"} 99\nfanout_slow_consumers_total{worker=\"1\"} 3\n";
        assert_eq!(parse_metrics(text), ServerMetrics { connections: 7, slow_consumers: 3 });
    }

    #[test]
    fn every_case_expects_one_answer() {
        let names: std::collections::HashSet<_> = CASES.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), CASES.len());
        assert_eq!(Case::Oversize.expected(), "close 1009");
        assert_eq!(Case::NoKey.expected(), "HTTP 400");
    }
}
