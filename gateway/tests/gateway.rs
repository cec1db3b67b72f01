//! The fanout gateway end to end: every client op and error, the auth matrix, resume, the
//! publish/subscribe race, the HTTP API, slow consumers, and the binary's own commands.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use fanout::{Config, ServerHandle};
use fanout_gateway::app::{self as gateway, GatewayConfig};
use fanout_gateway::native::auth;
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

type Client = WebSocket<TcpStream>;

fn start(gateway: GatewayConfig) -> ServerHandle {
    start_with(test_config(), gateway)
}

fn start_with(server: Config, gateway: GatewayConfig) -> ServerHandle {
    gateway::start(server, gateway).expect("gateway starts")
}

fn secured() -> GatewayConfig {
    GatewayConfig { jwt_secret: Some("s3cret".into()), api_key: Some("key".into()), ..GatewayConfig::default() }
}

fn token(sub: &[&str], publish: &[&str], exp_in: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = auth::Claims {
        sub: "alice".into(),
        exp: (now + exp_in) as u64,
        nbf: None,
        subscribe: sub.iter().map(|s| s.to_string()).collect(),
        publish: publish.iter().map(|s| s.to_string()).collect(),
    };
    auth::mint(&claims, "s3cret")
}

/// Connects with extra headers; Err(status) when the upgrade is refused.
fn try_connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<(Client, Option<String>), u16> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    match tungstenite::client(request, stream) {
        Ok((ws, response)) => {
            let protocol = response.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_owned());
            Ok((ws, protocol))
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => Err(r.status().as_u16()),
        Err(e) => panic!("handshake: {e}"),
    }
}

fn connect(addr: SocketAddr) -> Client {
    try_connect(addr, "/", &[]).expect("upgrade").0
}

fn send(ws: &mut Client, v: Value) {
    ws.send(Message::text(v.to_string())).unwrap();
}

/// The next JSON op from the server.
fn recv(ws: &mut Client) -> Value {
    loop {
        match ws.read().expect("a frame") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

fn subscribe(ws: &mut Client, channel: &str) -> Value {
    send(ws, json!({"op": "subscribe", "channel": channel}));
    let reply = recv(ws);
    assert_eq!(reply["op"], "subscribed", "{reply}");
    reply
}

fn http(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = http_exchange(addr, request.as_bytes());
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn http_publish(addr: SocketAddr, channel: &str, data: Value) -> u64 {
    let (status, body) = http(
        addr,
        "POST",
        "/api/publish",
        "Authorization: Bearer key\r\n",
        &json!({"channel": channel, "data": data}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["seq"].as_u64().unwrap()
}

#[test]
fn subscribe_publish_ack_message_unsubscribe() {
    let server = start(GatewayConfig::default());
    let addr = server.local_addr();
    let mut alice = connect(addr);
    let mut bob = connect(addr);
    let reply = subscribe(&mut alice, "news");
    assert_eq!((reply["channel"].as_str(), reply["seq"].as_u64()), (Some("news"), Some(0)));
    assert!(reply["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(reply.get("recovered").is_none(), "no resume asked");
    send(&mut bob, json!({"op": "publish", "channel": "news", "data": {"t": "hi"}, "id": 7}));
    assert_eq!(recv(&mut bob), json!({"op": "ack", "id": 7, "seq": 1}));
    assert_eq!(recv(&mut alice), json!({"op": "message", "channel": "news", "seq": 1, "data": {"t": "hi"}}));
    send(&mut alice, json!({"op": "unsubscribe", "channel": "news"}));
    assert_eq!(recv(&mut alice), json!({"op": "unsubscribed", "channel": "news"}));
    send(&mut bob, json!({"op": "publish", "channel": "news", "data": 2}));
    assert_eq!(recv(&mut bob)["seq"], 2);
    // Alice's next frame is the reply to her next request, not message 2.
    subscribe(&mut alice, "other");
}

#[test]
fn a_connection_over_its_channel_cap_gets_too_many_channels_and_stays_usable() {
    let server = start(GatewayConfig { max_channels_per_connection: 2, ..GatewayConfig::default() });
    let addr = server.local_addr();
    let mut ws = connect(addr);
    subscribe(&mut ws, "a");
    subscribe(&mut ws, "b");
    send(&mut ws, json!({"op": "subscribe", "channel": "c", "id": 3}));
    let refused = recv(&mut ws);
    assert_eq!(
        (refused["op"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("too_many_channels")),
        "{refused}"
    );
    assert_eq!(refused["id"], 3);
    send(&mut ws, json!({"op": "unsubscribe", "channel": "a"}));
    assert_eq!(recv(&mut ws)["op"], "unsubscribed");
    subscribe(&mut ws, "c");
    let mut other = connect(addr);
    subscribe(&mut other, "d");
    let (_, stats) = http(addr, "GET", "/api/stats", "", "");
    assert_eq!(serde_json::from_str::<Value>(&stats).unwrap()["channels"], 3, "b, c and d: the refusal created none");
}

#[test]
fn bad_requests_get_error_ops_and_the_connection_stays_usable() {
    let server = start(GatewayConfig::default());
    let mut c = connect(server.local_addr());
    let cases = [
        ("{not json", "bad_request"),
        (r#"{"channel":"x"}"#, "bad_request"),
        (r#"{"op":"dance","id":1}"#, "unknown_op"),
        (r#"{"op":"subscribe"}"#, "bad_request"),
        (r#"{"op":"subscribe","channel":"has space"}"#, "bad_channel"),
        (r#"{"op":"publish","channel":"x","id":"q"}"#, "bad_request"),
    ];
    for (text, code) in cases {
        c.send(Message::text(text)).unwrap();
        let e = recv(&mut c);
        assert_eq!((e["op"].as_str(), e["code"].as_str()), (Some("error"), Some(code)), "{text}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    subscribe(&mut c, "ok");
    send(&mut c, json!({"op": "subscribe", "channel": "ok", "id": 9}));
    let e = recv(&mut c);
    assert_eq!((e["code"].as_str(), e["id"].as_u64()), (Some("already_subscribed"), Some(9)));
    c.send(Message::binary(vec![1, 2, 3])).unwrap();
    match c.read() {
        Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1003),
        other => panic!("expected close 1003, got {other:?}"),
    }
}

#[test]
fn auth_matrix() {
    let server = start(secured());
    let addr = server.local_addr();
    let good = token(&["news", "chat:*"], &["chat:*"], 3600);
    assert_eq!(try_connect(addr, "/", &[]).err(), Some(401), "no token");
    let forged = {
        let mut t = good.clone();
        t.pop();
        t.push(if good.ends_with('A') { 'B' } else { 'A' });
        t
    };
    assert_eq!(try_connect(addr, &format!("/?token={forged}"), &[]).err(), Some(401), "bad signature");
    let expired = token(&["news"], &[], -10);
    assert_eq!(try_connect(addr, &format!("/?token={expired}"), &[]).err(), Some(401), "expired");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let early = auth::Claims {
        sub: "alice".into(),
        exp: now + 7200,
        nbf: Some(now + 3600),
        subscribe: vec!["news".into()],
        publish: vec![],
    };
    let early = auth::mint(&early, "s3cret");
    assert_eq!(try_connect(addr, &format!("/?token={early}"), &[]).err(), Some(401), "not yet valid (nbf)");
    let auth_header = format!("Bearer {good}");
    let cookie = format!("a=b; fanout_token={good}");
    let protocols = format!("fanout.v1, bearer.{good}");
    type Source<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);
    let sources: [Source<'_>; 4] = [
        ("query", format!("/?token={good}"), vec![]),
        ("header", "/".into(), vec![("Authorization", auth_header.as_str())]),
        ("cookie", "/".into(), vec![("Cookie", cookie.as_str())]),
        ("subprotocol", "/".into(), vec![("Sec-WebSocket-Protocol", protocols.as_str())]),
    ];
    for (name, path, headers) in sources {
        let (mut ws, protocol) = try_connect(addr, &path, &headers).unwrap_or_else(|s| panic!("{name}: {s}"));
        if name == "subprotocol" {
            assert_eq!(protocol.as_deref(), Some("fanout.v1"), "the bearer entry is never echoed");
        }
        subscribe(&mut ws, "chat:lobby");
        send(&mut ws, json!({"op": "subscribe", "channel": "sport", "id": 1}));
        let e = recv(&mut ws);
        assert_eq!(e["code"], "forbidden", "{name}: {e}");
        send(&mut ws, json!({"op": "publish", "channel": "news", "data": 1, "id": 2}));
        assert_eq!(recv(&mut ws)["code"], "forbidden", "{name}: news is subscribe-only");
        send(&mut ws, json!({"op": "publish", "channel": "chat:lobby", "data": 1, "id": 3}));
        assert_eq!(recv(&mut ws)["op"], "ack", "{name}: still usable after forbidden");
    }
}

#[test]
fn origin_allowlist() {
    let config = GatewayConfig { allowed_origins: vec!["https://app.example".into()], ..GatewayConfig::default() };
    let server = start(config);
    let addr = server.local_addr();
    assert_eq!(try_connect(addr, "/", &[("Origin", "https://evil.example")]).err(), Some(403));
    assert!(try_connect(addr, "/", &[("Origin", "https://app.example")]).is_ok());
    assert!(try_connect(addr, "/", &[]).is_ok(), "non-browser clients send no Origin");
}

#[test]
fn resume_gets_exactly_the_missed_messages_then_live_ones() {
    let server = start(secured());
    let addr = server.local_addr();
    let path = format!("/?token={}", token(&["news"], &[], 3600));
    let (mut c, _) = try_connect(addr, &path, &[]).unwrap();
    let first = subscribe(&mut c, "news");
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    http_publish(addr, "news", json!("m1"));
    assert_eq!(recv(&mut c)["seq"], 1);
    drop(c);
    for i in 2..=11 {
        assert_eq!(http_publish(addr, "news", json!(format!("m{i}"))), i);
    }
    let (mut c, _) = try_connect(addr, &path, &[]).unwrap();
    send(&mut c, json!({"op": "subscribe", "channel": "news", "since": 1, "epoch": epoch}));
    let reply = recv(&mut c);
    assert_eq!((reply["seq"].as_u64(), reply["recovered"].as_bool()), (Some(11), Some(true)), "{reply}");
    for i in 2..=11u64 {
        let m = recv(&mut c);
        assert_eq!((m["seq"].as_u64(), m["data"].clone()), (Some(i), json!(format!("m{i}"))));
    }
    http_publish(addr, "news", json!("live"));
    assert_eq!(recv(&mut c)["data"], "live");
    // Resuming across another epoch (a restart) is not a recovery.
    let (mut other, _) = try_connect(addr, &path, &[]).unwrap();
    send(&mut other, json!({"op": "subscribe", "channel": "news", "since": 3, "epoch": "not-this-one"}));
    assert_eq!(recv(&mut other)["recovered"], false);
}

#[test]
fn resume_beyond_the_history_is_not_recovered() {
    let server = start(GatewayConfig { history_size: 5, ..GatewayConfig::default() });
    let addr = server.local_addr();
    for _ in 0..12 {
        let mut p = connect(addr);
        send(&mut p, json!({"op": "publish", "channel": "c", "data": 0}));
        recv(&mut p);
    }
    let mut c = connect(addr);
    send(&mut c, json!({"op": "subscribe", "channel": "c", "since": 2}));
    let reply = recv(&mut c);
    assert_eq!((reply["recovered"].as_bool(), reply["seq"].as_u64()), (Some(false), Some(12)));
    let seqs: Vec<u64> = (0..5).map(|_| recv(&mut c)["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [8, 9, 10, 11, 12], "what history still holds, in order");
}

#[test]
fn subscribing_while_publishes_race_gives_no_gap_and_no_duplicate() {
    race(1);
}

#[test]
fn subscribing_while_publishes_race_across_two_workers() {
    race(2);
}

fn race(workers: usize) {
    const TOTAL: u64 = 6000;
    let server = start_with(
        Config { workers, ..test_config() },
        GatewayConfig { history_size: TOTAL as usize, ..GatewayConfig::default() },
    );
    let addr = server.local_addr();
    let (progress, ticks) = std::sync::mpsc::channel();
    let publisher = std::thread::spawn(move || {
        let mut p = connect(addr);
        for chunk in 0..TOTAL / 50 {
            for i in 0..50 {
                let n = chunk * 50 + i;
                p.write(Message::text(json!({"op": "publish", "channel": "race", "data": n}).to_string())).unwrap();
            }
            p.flush().unwrap();
            if chunk % 5 == 0 {
                let _ = progress.send(());
            }
        }
        for _ in 0..TOTAL {
            recv(&mut p);
        }
    });
    // Subscribe at many points while publishes stream in; each subscriber must see every seq
    // from 1 exactly once, whether it came from the history replay or live.
    let mut subscribers = Vec::new();
    while ticks.recv().is_ok() {
        let mut c = connect(addr);
        send(&mut c, json!({"op": "subscribe", "channel": "race", "since": 0}));
        subscribers.push(c);
    }
    assert!(subscribers.len() >= 20, "subscribed while publishing");
    for mut c in subscribers {
        let reply = recv(&mut c);
        assert_eq!(reply["recovered"], true, "{reply}");
        for expected in 1..=TOTAL {
            let m = recv(&mut c);
            assert_eq!(m["seq"].as_u64(), Some(expected), "gap or duplicate");
            assert_eq!(m["data"].as_u64(), Some(expected - 1));
        }
    }
    publisher.join().unwrap();
}

/// `unsubscribed` is the end of the channel for the client: publishes that reached the
/// connection's worker before the unsubscribe arrive before it, and none after it. The soak
/// found messages after it (the reply went out at once while earlier publishes waited in the
/// worker's inbox). Publishers stream into the channel from both workers meanwhile; after each
/// `unsubscribed` the client asks for an error reply, and nothing of the channel may come
/// between the two.
#[test]
fn nothing_of_a_channel_arrives_after_its_unsubscribed() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let server = start_with(Config { workers: 2, ..test_config() }, GatewayConfig::default());
    let addr = server.local_addr();
    // Publishers until both workers have one (the kernel spreads connections by their ports).
    let mut connected = Vec::new();
    while connected.len() < 2 || server.worker_stats().iter().any(|s| s.connections == 0) {
        assert!(connected.len() < 64, "64 connections all on one worker");
        connected.push(connect(addr));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = connected
        .into_iter()
        .map(|mut p| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for n in 0..20 {
                        p.write(Message::text(json!({"op": "publish", "channel": "flow", "data": n}).to_string()))
                            .unwrap();
                    }
                    p.flush().unwrap();
                    for _ in 0..20 {
                        assert_eq!(recv(&mut p)["op"], "ack");
                    }
                }
            })
        })
        .collect();
    for round in 0..40 {
        let mut c = connect(addr);
        subscribe(&mut c, "flow");
        assert_eq!(recv(&mut c)["op"], "message", "the channel is flowing");
        send(&mut c, json!({"op": "unsubscribe", "channel": "flow"}));
        while recv(&mut c)["op"] != "unsubscribed" {}
        send(&mut c, json!({"op": "no-such-op", "id": round}));
        let reply = recv(&mut c);
        assert_eq!((&reply["op"], &reply["id"]), (&json!("error"), &json!(round)), "round {round}: {reply}");
    }
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.join().unwrap();
    }
}

#[test]
fn two_workers_deliver_every_publish_exactly_once_and_in_order() {
    let server = start_with(Config { workers: 2, ..test_config() }, secured());
    let addr = server.local_addr();
    let path = format!("/?token={}", token(&["*"], &["*"], 3600));
    let mut subscribers: Vec<Client> = (0..24)
        .map(|_| {
            let (mut c, _) = try_connect(addr, &path, &[]).unwrap();
            subscribe(&mut c, "all");
            c
        })
        .collect();
    let per_worker: Vec<u64> = server.worker_stats().iter().map(|s| s.connections).collect();
    assert!(per_worker.iter().all(|&n| n > 0), "connections spread over both workers: {per_worker:?}");
    // Publishers on whichever workers the kernel picks, interleaved with HTTP publishes.
    let mut publishers: Vec<Client> = (0..4).map(|_| try_connect(addr, &path, &[]).unwrap().0).collect();
    let mut expected = Vec::new();
    for round in 0..50 {
        let p = &mut publishers[round % 4];
        send(p, json!({"op": "publish", "channel": "all", "data": round}));
        assert_eq!(recv(p)["op"], "ack");
        expected.push(json!(round));
        let seq = http_publish(addr, "all", json!(format!("http-{round}")));
        assert_eq!(seq, 2 * round as u64 + 2);
        expected.push(json!(format!("http-{round}")));
    }
    for c in &mut subscribers {
        for (i, data) in expected.iter().enumerate() {
            let m = recv(c);
            assert_eq!((m["seq"].as_u64(), &m["data"]), (Some(i as u64 + 1), data), "exactly once, in order");
        }
    }
    // Resume works whichever worker the reconnecting client lands on.
    for _ in 0..6 {
        let (mut c, _) = try_connect(addr, &path, &[]).unwrap();
        send(&mut c, json!({"op": "subscribe", "channel": "all", "since": 90}));
        assert_eq!(recv(&mut c)["recovered"], true);
        let seqs: Vec<u64> = (0..10).map(|_| recv(&mut c)["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (91..=100).collect::<Vec<_>>());
    }
}

#[test]
fn http_api_answers() {
    let server = start_with(Config { max_body_bytes: 1024, ..test_config() }, secured());
    let addr = server.local_addr();
    let body = r#"{"channel":"news","data":{"x":1}}"#;
    let auth = "Authorization: Bearer key\r\n";
    assert_eq!(http(addr, "POST", "/api/publish", auth, body), (200, r#"{"seq":1}"#.into()));
    assert_eq!(http(addr, "POST", "/api/publish", auth, body).1, r#"{"seq":2}"#);
    let (status, reply) = http(addr, "POST", "/api/publish", auth, "{oops");
    assert_eq!(status, 400);
    assert!(serde_json::from_str::<Value>(&reply).unwrap()["error"].as_str().is_some());
    assert_eq!(http(addr, "POST", "/api/publish", auth, r#"{"channel":"a b","data":1}"#).0, 400);
    assert_eq!(http(addr, "POST", "/api/publish", auth, r#"{"data":1}"#).0, 400);
    assert_eq!(http(addr, "POST", "/api/publish", "", body).0, 401);
    assert_eq!(http(addr, "POST", "/api/publish", "Authorization: Bearer nope\r\n", body).0, 401);
    let big = json!({"channel": "news", "data": "x".repeat(2000)}).to_string();
    assert_eq!(http(addr, "POST", "/api/publish", auth, &big).0, 413);
    assert_eq!(http(addr, "GET", "/api/publish", "", "").0, 405);
    assert_eq!(http(addr, "GET", "/healthz", "", ""), (200, r#"{"status":"ok"}"#.into()));
    assert_eq!(http(addr, "GET", "/nope", "", "").0, 404);
    let (status, page) = http(addr, "GET", "/", "", "");
    assert_eq!(status, 200);
    assert!(page.contains("<html") || page.contains("<!doctype"), "demo page");
}

#[test]
fn http_publish_with_expect_continue_and_keep_alive() {
    let server = start(secured());
    let addr = server.local_addr();
    let mut c = RawClient::connect_tcp(addr);
    let body = json!({"channel": "news", "data": "x".repeat(3000)}).to_string();
    // What curl sends for a body over 1 KiB: the head, then the body once 100 Continue arrives.
    c.send_raw(
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let mut interim = [0u8; 25];
    std::io::Read::read_exact(&mut c.stream, &mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.send_raw(body.as_bytes());
    // Kept alive: a second publish on the same connection, then close.
    let second = r#"{"channel":"news","data":2}"#;
    c.send_raw(
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer key\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{second}",
            second.len()
        )
        .as_bytes(),
    );
    let all = String::from_utf8_lossy(&c.read_to_eof()).into_owned();
    assert!(all.contains(r#"{"seq":1}"#) && all.contains(r#"{"seq":2}"#), "{all}");
}

#[test]
fn a_stalled_subscriber_is_closed_while_others_get_every_message() {
    let server = start_with(
        Config { max_queued_bytes: 64 * 1024, close_timeout: Duration::from_secs(1), ..test_config() },
        GatewayConfig::default(),
    );
    let addr = server.local_addr();
    let mut stalled = connect(addr);
    subscribe(&mut stalled, "feed");
    let mut healthy = connect(addr);
    subscribe(&mut healthy, "feed");
    let mut publisher = connect(addr);
    let payload = "z".repeat(2000);
    for round in 0..100u64 {
        for _ in 0..50 {
            publisher
                .write(Message::text(json!({"op": "publish", "channel": "feed", "data": payload}).to_string()))
                .unwrap();
        }
        publisher.flush().unwrap();
        for i in 0..50 {
            assert_eq!(recv(&mut healthy)["seq"].as_u64(), Some(round * 50 + i + 1));
            assert_eq!(recv(&mut publisher)["op"], "ack");
        }
    }
    assert_eq!(server.stats().slow_consumers, 1);
    wait_for_connections(&server, 2);
}

#[test]
fn token_command_prints_a_token_the_server_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args([
            "token",
            "--secret",
            "s3cret",
            "--sub",
            "alice",
            "--subscribe",
            "news,chat:*",
            "--publish",
            "chat:*",
            "--ttl",
            "1h",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let claims = auth::verify(&token, "s3cret").unwrap();
    assert_eq!((claims.sub.as_str(), claims.subscribe.len(), claims.publish.len()), ("alice", 2, 1));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!((now + 3590..=now + 3610).contains(&claims.exp));
    assert_eq!(claims.nbf, None);

    let args = ["token", "--secret", "s3cret", "--sub", "bob", "--not-before", "10m", "--ttl", "1h"];
    let out = Command::new(env!("CARGO_BIN_EXE_fanout")).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let later = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(auth::verify(&later, "s3cret").unwrap_err(), "token not yet valid (nbf)");
}

#[test]
fn anonymous_on_a_public_address_refuses_to_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_fanout")).args(["serve", "--listen", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--jwt-secret"));
}

/// `name{labels}` -> value, from Prometheus text; checks every line is well formed.
fn parse_prometheus(text: &str) -> std::collections::HashMap<String, f64> {
    let mut samples = std::collections::HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let name = key.split('{').next().unwrap();
        assert!(typed.contains(name), "sample before its TYPE: {line}");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
        samples.insert(key.to_owned(), value.parse::<f64>().unwrap_or_else(|_| panic!("{line}")));
    }
    samples
}

fn sum(samples: &std::collections::HashMap<String, f64>, prefix: &str) -> f64 {
    samples.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum()
}

#[test]
fn metrics_and_stats_move_with_traffic() {
    let server = start_with(Config { workers: 2, ..test_config() }, secured());
    let addr = server.local_addr();
    let before = parse_prometheus(&http(addr, "GET", "/metrics", "", "").1);
    assert_eq!(sum(&before, "fanout_websockets"), 0.0);
    let path = format!("/?token={}", token(&["*"], &["*"], 3600));
    let mut clients: Vec<Client> = (0..6).map(|_| try_connect(addr, &path, &[]).unwrap().0).collect();
    for c in &mut clients {
        subscribe(c, "busy");
    }
    subscribe(&mut clients[0], "quiet");
    send(&mut clients[0], json!({"op": "publish", "channel": "busy", "data": 1}));
    assert_eq!(recv(&mut clients[0])["op"], "ack");
    for c in &mut clients {
        assert_eq!(recv(c)["op"], "message");
    }
    assert_eq!(try_connect(addr, "/", &[]).err(), Some(401));
    let after = parse_prometheus(&http(addr, "GET", "/metrics", "", "").1);
    assert_eq!(sum(&after, "fanout_websockets"), 6.0);
    assert_eq!(sum(&after, "fanout_handshakes_total") - sum(&before, "fanout_handshakes_total"), 6.0);
    assert_eq!(sum(&after, "fanout_publishes_total"), 1.0);
    assert_eq!(sum(&after, "fanout_deliveries_total"), 6.0);
    assert!(sum(&after, "fanout_messages_in_total") >= 8.0);
    assert!(sum(&after, "fanout_writev_calls_total") > sum(&before, "fanout_writev_calls_total"));
    assert_eq!(
        sum(&after, "fanout_handshake_failures_total{worker=\"0\",reason=\"rejected\"}")
            + sum(&after, "fanout_handshake_failures_total{worker=\"1\",reason=\"rejected\"}"),
        1.0
    );
    assert_eq!(after.get("fanout_topics"), Some(&2.0));
    assert!(after.contains_key("fanout_loop_lag_us{worker=\"1\"}"));
    // /api/stats: the API key, per-worker counts and the busiest channels.
    assert_eq!(http(addr, "GET", "/api/stats", "", "").0, 401);
    let (status, body) = http(addr, "GET", "/api/stats", "Authorization: Bearer key\r\n", "");
    assert_eq!(status, 200);
    let stats: Value = serde_json::from_str(&body).unwrap();
    let workers = stats["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let conns: u64 = workers.iter().map(|w| w["connections"].as_u64().unwrap()).sum();
    assert!(conns >= 6, "{stats}");
    assert_eq!(stats["top_channels"][0], json!({"channel": "busy", "subscribers": 6}));
    assert_eq!(stats["top_channels"][1], json!({"channel": "quiet", "subscribers": 1}));
}

#[test]
fn with_compression_a_published_message_reaches_a_deflate_client_compressed() {
    use fanout::proto::deflate::Inflater;
    use fanout::proto::frame::RSV1;
    let server = start_with(Config { compression: true, ..test_config() }, GatewayConfig::default());
    let addr = server.local_addr();
    let offer = [("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")];
    let (mut c, accepted) = RawClient::connect_with(addr, "/", &offer);
    assert!(accepted.extensions.unwrap().starts_with("permessage-deflate"));
    say(&mut c, r#"{"op":"subscribe","channel":"news"}"#);
    assert!(text(&mut c).contains("subscribed"), "a short reply goes plain");
    let data: Vec<Value> =
        (0..20).map(|i| json!({"headline": format!("story {i}"), "body": "lorem ipsum dolor"})).collect();
    http_publish(addr, "news", json!(data));
    let frame = c.recv_frame();
    assert_ne!(frame.rsv & RSV1, 0, "the message came compressed");
    let message: Value = serde_json::from_slice(&Inflater::new().inflate(&frame.payload, 1 << 20).unwrap()).unwrap();
    assert_eq!((message["op"].as_str(), &message["data"]), (Some("message"), &json!(data)));
    assert_eq!(server.stats().compressions, 1);
}
