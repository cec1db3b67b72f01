//! The library's examples run as their own processes with two workers (`FANOUT_WORKERS=2`),
//! seen through an independent client (tungstenite): echo echoes, every chat member hears every
//! other, every connection gets every broadcast, and shootout's `broadcastResult` counts the
//! connections of both workers.
//!
//! Connections land on a worker by the kernel's SO_REUSEPORT hash of their addresses, which
//! the test cannot choose; each test opens `CLIENTS` connections, so the chance that all of
//! them land on one worker (and a per-worker bug goes unseen) is 2 in 2^16. The examples are
//! built by `cargo test` (or `cargo build -p fanout --examples` before `cargo test -p fanout
//! --test examples`); a binary older than its source fails the test rather than testing old
//! code.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use common::{spawn_listening, ChildProcess, IO_TIMEOUT};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

type Client = WebSocket<TcpStream>;

/// Enough connections that both workers certainly hold some (see the module doc).
const CLIENTS: usize = 16;

/// The newest modification time of the example's own source and of `examples/common/`.
fn newest_source(name: &str) -> (PathBuf, SystemTime) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let common = std::fs::read_dir(dir.join("common")).unwrap().map(|e| e.unwrap().path());
    std::iter::once(dir.join(format!("{name}.rs")))
        .chain(common)
        .map(|p| {
            let t = std::fs::metadata(&p).unwrap().modified().unwrap();
            (p, t)
        })
        .max_by_key(|(_, t)| *t)
        .unwrap()
}

/// Starts the example `name` with two workers on an ephemeral loopback port.
fn start_two_workers(name: &str) -> (ChildProcess, SocketAddr) {
    // target/debug/deps/THIS_TEST -> target/debug/examples/NAME
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples").join(name);
    let build = "build them with `cargo build -p fanout --examples` (a whole `cargo test` does)";
    assert!(path.exists(), "{} missing: {build}", path.display());
    let built = std::fs::metadata(&path).unwrap().modified().unwrap();
    let (source, changed) = newest_source(name);
    assert!(built >= changed, "{} is older than {}: {build}", path.display(), source.display());
    let mut command = Command::new(path);
    command.arg("127.0.0.1:0").env("FANOUT_WORKERS", "2");
    spawn_listening(command)
}

fn connect(addr: SocketAddr) -> Client {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let config = WebSocketConfig { max_message_size: None, max_frame_size: None, ..Default::default() };
    let (ws, _) = tungstenite::client::client_with_config(format!("ws://{addr}/"), stream, Some(config)).unwrap();
    ws
}

/// `CLIENTS` connections, each upgraded (so each is open on its worker) before the next.
fn connect_all(addr: SocketAddr) -> Vec<Client> {
    (0..CLIENTS).map(|_| connect(addr)).collect()
}

/// The next text or binary message; a timeout names the client and what it waited for.
fn next_data(ws: &mut Client, waiting: &str) -> Message {
    loop {
        match ws.read() {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => return m,
            Ok(_) => continue,
            Err(e) => panic!("waiting for {waiting}: {e}"),
        }
    }
}

fn next_text(ws: &mut Client, waiting: &str) -> String {
    match next_data(ws, waiting) {
        Message::Text(t) => t,
        other => panic!("waiting for {waiting}: expected text, got {other:?}"),
    }
}

/// Ends the close handshake: once the server's close frame is read, its `on_close` has run.
fn leave(mut ws: Client) {
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => return,
            Err(e) => panic!("closing: {e}"),
        }
    }
}

#[test]
fn echo_with_two_workers_answers_each_client_and_only_it() {
    let (_server, addr) = start_two_workers("echo");
    let mut clients = connect_all(addr);
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(Message::text(format!("hello {i}"))).unwrap();
        c.send(Message::binary(vec![i as u8; 70_000])).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(next_data(c, "the text echo"), Message::text(format!("hello {i}")));
        assert_eq!(next_data(c, "the binary echo"), Message::binary(vec![i as u8; 70_000]));
    }
    // Nothing else was queued for anyone: the next message is the answer to the next send.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(Message::text(format!("again {i}"))).unwrap();
        assert_eq!(next_data(c, "the second echo"), Message::text(format!("again {i}")));
    }
}

#[test]
fn chat_with_two_workers_lets_every_member_hear_every_other() {
    let (_server, addr) = start_two_workers("chat");
    let mut clients = connect_all(addr);
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(Message::text(format!("from {i}"))).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let mut heard: Vec<String> =
            (1..CLIENTS).map(|_| next_text(c, &format!("client {i}'s chat messages"))).collect();
        heard.sort();
        let mut others: Vec<String> = (0..CLIENTS).filter(|&j| j != i).map(|j| format!("from {j}")).collect();
        others.sort();
        assert_eq!(heard, others, "client {i} hears every other member once and never itself");
    }

    // A member who leaves is no longer sent to; one who joins later hears the next message.
    leave(clients.pop().unwrap());
    clients.push(connect(addr));
    clients[0].send(Message::binary(vec![1, 2, 3])).unwrap();
    for (i, c) in clients.iter_mut().enumerate().skip(1) {
        assert_eq!(
            next_data(c, &format!("client {i}: the message after a leave and a join")),
            Message::binary(vec![1, 2, 3])
        );
    }
    clients[1].send(Message::text("last")).unwrap();
    assert_eq!(next_text(&mut clients[0], "the last message"), "last", "the first sender hears the others");
}

#[test]
fn broadcast_with_two_workers_reaches_every_connection() {
    let (_server, addr) = start_two_workers("broadcast");
    let mut clients = connect_all(addr);
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(Message::text(format!("from {i}"))).unwrap();
    }
    let mut all: Vec<String> = (0..CLIENTS).map(|j| format!("from {j}")).collect();
    all.sort();
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got: Vec<String> = (0..CLIENTS).map(|_| next_text(c, &format!("client {i}'s broadcasts"))).collect();
        got.sort();
        assert_eq!(got, all, "client {i} gets every broadcast once, its own included");
    }
    // A large message is shared, not copied, on each worker: every connection still gets it whole.
    clients[CLIENTS - 1].send(Message::binary(vec![9u8; 70_000])).unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(next_data(c, &format!("client {i}: the large broadcast")), Message::binary(vec![9u8; 70_000]));
    }
}

#[test]
fn shootout_with_two_workers_broadcasts_to_all_and_counts_them() {
    let (_server, addr) = start_two_workers("shootout");
    let mut clients = connect_all(addr);
    for (i, c) in clients.iter_mut().enumerate() {
        let echo = format!(r#"{{"type":"echo","payload":{{"i":{i}}}}}"#);
        c.send(Message::text(echo.clone())).unwrap();
        assert_eq!(next_text(c, "the echo"), echo, "echo returns the message byte for byte");
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(Message::text(format!(r#"{{"type":"broadcast","payload":[{i}]}}"#))).unwrap();
    }
    let mut all: Vec<String> = (0..CLIENTS).map(|j| format!(r#"{{"type":"broadcast","payload":[{j}]}}"#)).collect();
    all.sort();
    for (i, c) in clients.iter_mut().enumerate() {
        // Every broadcast and one broadcastResult, in no guaranteed order between the two kinds.
        let mut got: Vec<String> = (0..=CLIENTS).map(|_| next_text(c, &format!("client {i}'s broadcasts"))).collect();
        let result = format!(r#"{{"type":"broadcastResult","payload":[{i}],"listenerCount":{CLIENTS}}}"#);
        let at = got.iter().position(|m| m.contains("broadcastResult")).expect("a broadcastResult");
        assert_eq!(got.remove(at), result, "client {i}: the result counts the connections of both workers");
        got.sort();
        assert_eq!(got, all, "client {i} gets every broadcast once, its own included");
    }

    // After four leave, the count is of those still open, wherever they are.
    for c in clients.drain(CLIENTS - 4..) {
        leave(c);
    }
    clients[0].send(Message::text(r#"{"type":"broadcast","payload":"after"}"#)).unwrap();
    let broadcast = r#"{"type":"broadcast","payload":"after"}"#;
    let result = format!(r#"{{"type":"broadcastResult","payload":"after","listenerCount":{}}}"#, CLIENTS - 4);
    let mut to_sender = [next_text(&mut clients[0], "the result"), next_text(&mut clients[0], "the broadcast")];
    to_sender.sort();
    assert_eq!(to_sender, [broadcast.to_owned(), result]);
    for (i, c) in clients.iter_mut().enumerate().skip(1) {
        assert_eq!(next_text(c, &format!("client {i}: the broadcast after the leaves")), broadcast);
    }
}
