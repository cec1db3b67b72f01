//! Shared by the integration tests: building and starting the main crate's servers, small test
//! servers with injected faults (and, in `pusher`, a small Pusher Channels server), and running
//! `fanout-load` with `--json` to read its result.

#![allow(dead_code)]

pub mod pusher;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fanout::proto::frame::encode_frame;
use fanout::proto::handshake::{accept_key, accept_response};
use fanout::proto::{decode_frame, FrameRules, OpCode, Role, Status};

/// target/debug (or target/release), found from this test executable (target/debug/deps/x).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// Builds the main crate's echo example and fanout binary once per test process, in the same
/// profile as this test.
pub fn build_main_crate() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut cmd = Command::new(cargo);
        cmd.current_dir(root).args(["build", "--example", "echo", "--bin", "fanout"]);
        if target_dir().ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "cargo build of the main crate failed");
    });
}

/// A child process killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `path args` and waits for a stderr line containing `marker` followed by the port
/// (`...127.0.0.1:PORT/...`).
fn start(path: &Path, args: &[&str], marker: &str) -> Server {
    assert!(path.exists(), "{} is missing", path.display());
    let mut child = Command::new(path).args(args).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let port = loop {
        let line = lines.next().expect("server exited before listening").unwrap();
        if let Some(rest) = line.split(marker).nth(1) {
            let rest = rest.split("127.0.0.1:").nth(1).unwrap();
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            break digits.parse().unwrap();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, port }
}

/// The echo example of the main crate on an ephemeral port.
pub fn start_echo() -> Server {
    start_echo_with(&[])
}

/// The echo example with `extra` arguments after its address (`--tls-cert FILE`, ...).
pub fn start_echo_with(extra: &[&str]) -> Server {
    build_main_crate();
    let mut args = vec!["127.0.0.1:0"];
    args.extend_from_slice(extra);
    start(&target_dir().join("examples").join("echo"), &args, "echo: listening on")
}

/// The fanout gateway on an ephemeral port.
pub fn start_gateway(extra: &[&str]) -> Server {
    build_main_crate();
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    start(&target_dir().join("fanout"), &args, "fanout: listening on")
}

/// Runs fanout-load with `args` plus `--json FILE --quiet`; returns the result and stdout.
pub fn run_load(args: &[&str]) -> (serde_json::Value, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let json = std::env::temp_dir().join(format!(
        "fanout-load-test-{}-{}.json",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_fanout-load"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The generator bounds itself; this only keeps a broken build from hanging the suite.
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fanout-load {args:?} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(status.success(), "fanout-load {args:?} failed:\n{out}");
    let text = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    (serde_json::from_str(&text).unwrap(), out)
}

/// Reads `v[a][b]...` as u64.
pub fn num(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64().unwrap_or_else(|| panic!("{path:?} is not a number in {v:#}"))
}

/// How a test server treats each message.
#[derive(Clone, Copy)]
pub enum Behaviour {
    /// Echo each message to its sender after `delay`.
    DelayedEcho(Duration),
    /// Send each message to every connection, with faults by the message's counter `"n"`:
    /// n % 7 == 0 dropped, n % 10 == 0 sent twice, n % 11 == 0 held back and sent after the
    /// next message.
    FaultyBroadcast,
    /// Send each message to every connection, the sender included.
    Broadcast,
    /// Send each message to every connection after `delay`, from a thread of its own, so that
    /// the last deliveries come long after the publisher stopped.
    DelayedBroadcast(Duration),
    /// The websocket-shootout protocol: `echo` back to the sender; `broadcast` to everyone,
    /// then `broadcastResult` to the sender.
    Shootout,
}

/// A blocking WebSocket server with one thread per connection, for tests that need a server
/// whose behaviour is known exactly.
pub fn start_test_server(behaviour: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peers: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let held: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (peers, held) = (peers.clone(), held.clone());
            std::thread::spawn(move || serve(stream, behaviour, &peers, &held));
        }
    });
    addr
}

fn serve(
    mut stream: TcpStream,
    behaviour: Behaviour,
    peers: &Arc<Mutex<Vec<TcpStream>>>,
    held: &Mutex<Option<Vec<u8>>>,
) {
    stream.set_nodelay(true).unwrap();
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 65536];
    // Handshake: read the request head, answer 101.
    let head_end = loop {
        let n = stream.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let key = head
        .lines()
        .find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case("sec-websocket-key").then(|| v.trim().to_owned())
        })
        .unwrap();
    let _ = buf.split_to(head_end);
    // The 101 goes out and the connection joins under one lock: a client that has its 101 may
    // count on every broadcast from then on (n2 starts an iteration as soon as all clients are
    // upgraded), and no broadcast can slip in ahead of the 101.
    {
        let mut peers = peers.lock().unwrap();
        stream.write_all(&accept_response(&accept_key(key.as_bytes()), None)).unwrap();
        peers.push(stream.try_clone().unwrap());
    }
    let rules = FrameRules { role: Role::Server, allowed_rsv: 0, max_frame_payload: 1 << 20 };
    loop {
        while let Ok(Status::Complete(frame)) = decode_frame(&mut buf, &rules) {
            match frame.opcode {
                OpCode::Close => return,
                OpCode::Text | OpCode::Binary => {
                    let out = encode_frame(frame.opcode, &frame.payload);
                    match behaviour {
                        Behaviour::DelayedEcho(d) => {
                            std::thread::sleep(d);
                            if stream.write_all(&out).is_err() {
                                return;
                            }
                        }
                        Behaviour::FaultyBroadcast => broadcast(&frame.payload, &out, peers, held),
                        Behaviour::Broadcast => {
                            for p in peers.lock().unwrap().iter_mut() {
                                let _ = p.write_all(&out);
                            }
                        }
                        Behaviour::DelayedBroadcast(delay) => {
                            let peers = peers.clone();
                            std::thread::spawn(move || {
                                std::thread::sleep(delay);
                                for p in peers.lock().unwrap().iter_mut() {
                                    let _ = p.write_all(&out);
                                }
                            });
                        }
                        Behaviour::Shootout => {
                            if !shootout(&frame.payload, &mut stream, peers) {
                                return;
                            }
                        }
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

fn counter(payload: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?;
    let rest = text.split("\"n\":").nth(1)?;
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()
}

fn broadcast(payload: &[u8], frame: &[u8], peers: &Mutex<Vec<TcpStream>>, held: &Mutex<Option<Vec<u8>>>) {
    let mut peers = peers.lock().unwrap();
    let mut send = |bytes: &[u8]| {
        for p in peers.iter_mut() {
            let _ = p.write_all(bytes);
        }
    };
    let Some(n) = counter(payload) else {
        return send(frame);
    };
    if n % 7 == 0 {
        return;
    }
    let mut held = held.lock().unwrap();
    if n % 11 == 0 {
        *held = Some(frame.to_vec());
        return;
    }
    send(frame);
    if n % 10 == 0 {
        send(frame);
    }
    if let Some(h) = held.take() {
        send(&h);
    }
}

/// One websocket-shootout request; false when the sender's socket failed.
fn shootout(payload: &[u8], sender: &mut TcpStream, peers: &Mutex<Vec<TcpStream>>) -> bool {
    let text = String::from_utf8_lossy(payload);
    let inner = text.split_once("\"payload\":").map(|(_, p)| p.trim_end().trim_end_matches('}')).unwrap_or("null");
    if text.contains("\"type\":\"echo\"") {
        return sender.write_all(&encode_frame(OpCode::Text, payload)).is_ok();
    }
    let all = format!(r#"{{"type":"broadcast","payload":{inner}}}"#);
    let frame = encode_frame(OpCode::Text, all.as_bytes());
    for p in peers.lock().unwrap().iter_mut() {
        let _ = p.write_all(&frame);
    }
    let result = format!(r#"{{"type":"broadcastResult","payload":{inner}}}"#);
    sender.write_all(&encode_frame(OpCode::Text, result.as_bytes())).is_ok()
}
