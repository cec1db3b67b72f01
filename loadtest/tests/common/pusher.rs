//! A tiny Pusher Channels server (protocol 7) for the tests: public channels over WebSocket at
//! `/app/KEY`, and `POST /apps/ID/events` checked the way the HTTP API reference says (key,
//! timestamp within 600 s, `body_md5`, the HMAC-SHA256 signature over the sorted query). One
//! blocking thread per connection; every write to a subscriber happens under one lock, so frames
//! never interleave. With `one_shot`, the API answers `Connection: close` and closes after each
//! answer, as sockudo does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use fanout::proto::frame::encode_frame;
use fanout::proto::handshake::{accept_key, accept_response};
use fanout::proto::{decode_frame, FrameRules, OpCode, Role, Status};
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

/// The app the server knows.
#[derive(Clone)]
pub struct App {
    pub id: &'static str,
    pub key: &'static str,
    pub secret: &'static str,
}

/// What the server saw, for the tests to check.
#[derive(Default)]
pub struct Seen {
    /// `pusher:pong` answers to the `pusher:ping` each subscriber gets once subscribed.
    pub pongs: AtomicUsize,
    /// Events triggered through the HTTP API and sent to subscribers.
    pub triggered: AtomicUsize,
    /// HTTP API requests refused (401 or 400).
    pub refused: AtomicUsize,
    /// HTTP API connections accepted.
    pub api_conns: AtomicUsize,
}

struct Shared {
    app: App,
    one_shot: bool,
    seen: Arc<Seen>,
    /// Subscribed connections: (channel, stream).
    subscribers: Mutex<Vec<(String, TcpStream)>>,
    sockets: AtomicUsize,
}

/// Starts the server on an ephemeral port.
pub fn start_pusher_server(app: App, one_shot: bool) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let shared = Arc::new(Shared {
        app,
        one_shot,
        seen: seen.clone(),
        subscribers: Mutex::default(),
        sockets: AtomicUsize::new(0),
    });
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let shared = shared.clone();
            std::thread::spawn(move || connection(stream, &shared));
        }
    });
    (addr, seen)
}

/// The head of the first request tells a WebSocket client from an HTTP API client.
fn connection(mut stream: TcpStream, shared: &Shared) {
    stream.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    let Some(head_len) = read_head(&mut stream, &mut buf) else { return };
    let head = String::from_utf8_lossy(&buf[..head_len]).to_string();
    if head.to_ascii_lowercase().contains("upgrade: websocket") {
        buf.drain(..head_len);
        websocket(stream, shared, &head, buf);
    } else {
        http(stream, shared, buf);
    }
}

/// Reads until `buf` holds a whole request head; returns its length.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn send(stream: &mut TcpStream, text: &str) -> bool {
    stream.write_all(&encode_frame(OpCode::Text, text.as_bytes())).is_ok()
}

fn websocket(mut stream: TcpStream, shared: &Shared, head: &str, rest: Vec<u8>) {
    let key = header(head, "sec-websocket-key").unwrap().to_owned();
    stream.write_all(&accept_response(&accept_key(key.as_bytes()), None)).unwrap();
    let target = head.split_whitespace().nth(1).unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    if path != format!("/app/{}", shared.app.key) || !target.contains("protocol=7") {
        let error = r#"{"event":"pusher:error","data":{"code":4001,"message":"App key not found"}}"#;
        send(&mut stream, error);
        let _ = stream.write_all(&encode_frame(OpCode::Close, &4001u16.to_be_bytes()));
        return;
    }
    let n = shared.sockets.fetch_add(1, Ordering::Relaxed);
    let established = format!(
        r#"{{"event":"pusher:connection_established","data":"{{\"socket_id\":\"{n}.{}\",\"activity_timeout\":120}}"}}"#,
        n * 7 + 1
    );
    if !send(&mut stream, &established) {
        return;
    }
    let rules = FrameRules { role: Role::Server, allowed_rsv: 0, max_frame_payload: 1 << 20 };
    let mut buf = BytesMut::from(&rest[..]);
    let mut chunk = [0u8; 65536];
    loop {
        while let Ok(Status::Complete(frame)) = decode_frame(&mut buf, &rules) {
            match frame.opcode {
                OpCode::Close => return,
                OpCode::Text => {
                    let msg: serde_json::Value = serde_json::from_slice(&frame.payload).unwrap();
                    match msg["event"].as_str() {
                        Some("pusher:subscribe") => {
                            let channel = msg["data"]["channel"].as_str().unwrap().to_owned();
                            let ok = format!(
                                r#"{{"event":"pusher_internal:subscription_succeeded","channel":"{channel}","data":"{{}}"}}"#
                            );
                            // Under the lock: no trigger can slip in ahead of the confirmation.
                            let mut subs = shared.subscribers.lock().unwrap();
                            send(&mut stream, &ok);
                            send(&mut stream, r#"{"event":"pusher:ping","data":{}}"#);
                            subs.push((channel, stream.try_clone().unwrap()));
                        }
                        Some("pusher:pong") => {
                            shared.seen.pongs.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// HTTP API connection: requests answered in order, kept alive unless `one_shot`.
fn http(mut stream: TcpStream, shared: &Shared, mut buf: Vec<u8>) {
    shared.seen.api_conns.fetch_add(1, Ordering::Relaxed);
    loop {
        let Some(head_len) = read_head(&mut stream, &mut buf) else { return };
        let head = String::from_utf8_lossy(&buf[..head_len]).to_string();
        let len: usize = header(&head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut chunk = [0u8; 65536];
        while buf.len() < head_len + len {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_len..head_len + len].to_vec();
        buf.drain(..head_len + len);
        let (status, answer) = match trigger(shared, &head, &body) {
            Ok(()) => ("200 OK", "{}".to_owned()),
            Err(why) => {
                shared.seen.refused.fetch_add(1, Ordering::Relaxed);
                ("401 Unauthorized", format!(r#"{{"error":"{why}"}}"#))
            }
        };
        let close = if shared.one_shot { "Connection: close\r\n" } else { "" };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{close}Content-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() || shared.one_shot {
            return;
        }
    }
}

/// Checks a `POST /apps/ID/events` and sends its event to the channels' subscribers.
fn trigger(shared: &Shared, head: &str, body: &[u8]) -> Result<(), &'static str> {
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "POST" || path != format!("/apps/{}/events", shared.app.id) {
        return Err("no such route");
    }
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    let signature = params.iter().find(|(k, _)| k == "auth_signature").map(|(_, v)| v.clone()).ok_or("unsigned")?;
    params.retain(|(k, _)| k != "auth_signature");
    params.sort();
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if param("auth_key") != Some(shared.app.key) {
        return Err("wrong key");
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let ts: i64 = param("auth_timestamp").and_then(|t| t.parse().ok()).ok_or("no timestamp")?;
    if (now - ts).abs() > 600 {
        return Err("stale timestamp");
    }
    if param("body_md5") != Some(hex::encode(Md5::digest(body)).as_str()) {
        return Err("body_md5 mismatch");
    }
    let sorted: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut mac = Hmac::<Sha256>::new_from_slice(shared.app.secret.as_bytes()).unwrap();
    mac.update(format!("{method}\n{path}\n{}", sorted.join("&")).as_bytes());
    if hex::encode(mac.finalize().into_bytes()) != signature {
        return Err("bad signature");
    }
    let event: serde_json::Value = serde_json::from_slice(body).map_err(|_| "bad body")?;
    let (name, data) = (event["name"].as_str().ok_or("no name")?, event["data"].as_str().ok_or("data not a string")?);
    let channels = event["channels"].as_array().ok_or("no channels")?;
    let mut subs = shared.subscribers.lock().unwrap();
    for channel in channels.iter().filter_map(|c| c.as_str()) {
        // `data` goes out as the string it came as.
        let frame = serde_json::json!({"event": name, "channel": channel, "data": data}).to_string();
        let frame = encode_frame(OpCode::Text, frame.as_bytes());
        for (_, s) in subs.iter_mut().filter(|(c, _)| c == channel) {
            let _ = s.write_all(&frame);
        }
    }
    shared.seen.triggered.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
