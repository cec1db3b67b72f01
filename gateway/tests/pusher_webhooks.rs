//! Pusher webhooks end to end: a plain HTTP receiver on port 0 collects what the gateway POSTs
//! while raw clients join and leave channels, and `/metrics` shows the queue's counters.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "webhook/receiver.rs"]
mod receiver;

use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Instant;

use common::*;
use fanout::Config;
use fanout_gateway::app::{self as gateway, GatewayConfig};
use fanout_gateway::pusher::apps::AppConfig;
use fanout_gateway::pusher::signature::{sign, webhook_signature};
use receiver::{receiver, Hook};
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

type Client = WebSocket<TcpStream>;

const KEY: &str = "hook-key";
const SECRET: &str = "hook-secret";

/// Collects webhook events until `done` holds for them, checking each request's signature.
fn collect(rx: &mpsc::Receiver<Hook>, events: &mut Vec<Value>, done: impl Fn(&[Value]) -> bool) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while !done(events) {
        let left = deadline.saturating_duration_since(Instant::now());
        let hook = rx.recv_timeout(left).unwrap_or_else(|_| panic!("timed out; webhook events so far: {events:?}"));
        let header = |name: &str| hook.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        assert_eq!(header("x-pusher-key").as_deref(), Some(KEY));
        assert_eq!(header("x-pusher-signature"), Some(webhook_signature(SECRET, hook.body.as_bytes())));
        let body: Value = serde_json::from_str(&hook.body).unwrap();
        assert!(body["time_ms"].as_u64().is_some(), "{body}");
        events.extend(body["events"].as_array().unwrap().iter().cloned());
    }
}

fn has(events: &[Value], name: &str, channel: &str, user: Option<&str>) -> bool {
    events.iter().any(|e| e["name"] == name && e["channel"] == channel && user.is_none_or(|u| e["user_id"] == u))
}

fn connect(addr: SocketAddr) -> (Client, String) {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut ws = tungstenite::client(format!("ws://{addr}/app/{KEY}?protocol=7"), stream).unwrap().0;
    let hello = recv(&mut ws);
    let data: Value = serde_json::from_str(hello["data"].as_str().unwrap()).unwrap();
    (ws, data["socket_id"].as_str().unwrap().to_owned())
}

fn recv(ws: &mut Client) -> Value {
    loop {
        if let Message::Text(t) = ws.read().expect("a frame") {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

fn join(ws: &mut Client, socket_id: &str, channel: &str, channel_data: Option<&str>) {
    let mut d = json!({"channel": channel});
    if let Some(cd) = channel_data {
        d["channel_data"] = cd.into();
        d["auth"] = format!("{KEY}:{}", sign(SECRET, &format!("{socket_id}:{channel}:{cd}"))).into();
    }
    ws.send(Message::text(json!({"event": "pusher:subscribe", "data": d}).to_string())).unwrap();
    // Skip what the channels already joined send meanwhile (member_removed...).
    while recv(ws)["event"] != "pusher_internal:subscription_succeeded" {}
}

fn start(hook: SocketAddr, events: &[&str], workers: usize) -> fanout::ServerHandle {
    let app = AppConfig {
        webhook_url: Some(format!("http://{hook}/pusher/webhook")),
        webhook_events: events.iter().map(|e| e.to_string()).collect(),
        ..AppConfig::new("1", KEY, SECRET)
    };
    let server = Config { workers, ..test_config() };
    gateway::start(server, GatewayConfig { pusher_apps: vec![app], ..GatewayConfig::default() }).unwrap()
}

#[test]
fn webhooks_follow_channels_members_and_client_events() {
    let (hook, rx) = receiver();
    let server = start(hook, &[], 2);
    let addr = server.local_addr();
    let mut events = Vec::new();
    let (mut a, sa) = connect(addr);
    let (mut b, sb) = connect(addr);
    join(&mut a, &sa, "presence-room", Some(r#"{"user_id":"u1"}"#));
    join(&mut b, &sb, "presence-room", Some(r#"{"user_id":"u2"}"#));
    assert_eq!(recv(&mut a)["event"], "pusher_internal:member_added");
    a.send(Message::text(json!({"event": "client-hi", "channel": "presence-room", "data": {"k": 1}}).to_string()))
        .unwrap();
    assert_eq!(recv(&mut b)["event"], "client-hi");
    collect(&rx, &mut events, |e| {
        has(e, "channel_occupied", "presence-room", None)
            && has(e, "member_added", "presence-room", Some("u1"))
            && has(e, "member_added", "presence-room", Some("u2"))
            && has(e, "client_event", "presence-room", Some("u1"))
    });
    let client = events.iter().find(|e| e["name"] == "client_event").unwrap();
    assert_eq!(
        (&client["event"], &client["data"], &client["socket_id"]),
        (&json!("client-hi"), &json!(r#"{"k":1}"#), &json!(sa))
    );
    assert_eq!(events.iter().filter(|e| e["name"] == "channel_occupied").count(), 1, "one occupied for two members");

    // a drops without unsubscribing; b unsubscribes: both members leave, then the channel.
    drop(a);
    collect(&rx, &mut events, |e| has(e, "member_removed", "presence-room", Some("u1")));
    assert!(!has(&events, "channel_vacated", "presence-room", None), "b is still there");
    b.send(Message::text(json!({"event": "pusher:unsubscribe", "data": {"channel": "presence-room"}}).to_string()))
        .unwrap();
    collect(&rx, &mut events, |e| {
        has(e, "member_removed", "presence-room", Some("u2")) && has(e, "channel_vacated", "presence-room", None)
    });
    join(&mut b, &sb, "cache-x", None);
    collect(&rx, &mut events, |e| has(e, "cache_miss", "cache-x", None));

    let (status, metrics) = {
        let response = http_exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        (response.split(' ').nth(1).unwrap().to_owned(), response)
    };
    assert_eq!(status, "200");
    for name in ["queued", "sent_total", "failed_total", "retries_total", "dropped_total"] {
        assert!(metrics.contains(&format!("fanout_webhook_{name}")), "fanout_webhook_{name} missing:\n{metrics}");
    }
    let sent = metrics.lines().find(|l| l.starts_with("fanout_webhook_sent_total")).unwrap();
    assert_ne!(sent.rsplit(' ').next(), Some("0"), "{sent}");
}

#[test]
fn webhook_events_filter_what_is_sent() {
    let (hook, rx) = receiver();
    let server = start(hook, &["channel_vacated"], 1);
    let (mut a, _) = connect(server.local_addr());
    join(&mut a, "", "news", None);
    a.send(Message::text(json!({"event": "pusher:unsubscribe", "data": {"channel": "news"}}).to_string())).unwrap();
    let mut events = Vec::new();
    collect(&rx, &mut events, |e| has(e, "channel_vacated", "news", None));
    assert!(events.iter().all(|e| e["name"] == "channel_vacated"), "{events:?}");
}
