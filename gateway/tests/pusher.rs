//! The Pusher protocol end to end with a raw WebSocket client (tungstenite) and raw HTTP:
//! connection, ping, refusals and their close codes, private and presence auth, presence across
//! connections of one user, client events, cache channels, sign-in and users, the signed HTTP
//! API, and one channel space with the native protocol, on one worker and on two.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use fanout::{Config, ServerHandle};
use fanout_gateway::app::{self as gateway, GatewayConfig};
use fanout_gateway::pusher::apps::AppConfig;
use fanout_gateway::pusher::signature::{sign, sign_rest};
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

type Client = WebSocket<TcpStream>;

const KEY: &str = "app-key";
const SECRET: &str = "app-secret";

fn app() -> AppConfig {
    AppConfig::new("1", KEY, SECRET)
}

fn start_apps(workers: usize, apps: Vec<AppConfig>) -> ServerHandle {
    let server = Config { workers, ..test_config() };
    gateway::start(server, GatewayConfig { pusher_apps: apps, ..GatewayConfig::default() }).expect("gateway starts")
}

fn start(workers: usize) -> ServerHandle {
    start_apps(workers, vec![app()])
}

fn ws_connect(addr: SocketAddr, path: &str) -> Client {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tungstenite::client(format!("ws://{addr}{path}"), stream).expect("the upgrade succeeds").0
}

/// The next JSON frame.
fn recv(ws: &mut Client) -> Value {
    loop {
        match ws.read().expect("a frame") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// The close code, after any text frames (returned).
fn closed(ws: &mut Client) -> (Vec<Value>, u16) {
    let mut texts = Vec::new();
    loop {
        match ws.read().expect("a frame") {
            Message::Text(t) => texts.push(serde_json::from_str(&t).unwrap()),
            Message::Close(frame) => return (texts, frame.map_or(1005, |f| u16::from(f.code))),
            _ => {}
        }
    }
}

fn send(ws: &mut Client, v: Value) {
    ws.send(Message::text(v.to_string())).unwrap();
}

/// `data` of a server event, parsed (it is a JSON string).
fn data(event: &Value) -> Value {
    serde_json::from_str(event["data"].as_str().expect("data is a string")).unwrap()
}

/// A connected Pusher client and its socket_id.
fn connect(addr: SocketAddr) -> (Client, String) {
    connect_key(addr, KEY)
}

fn connect_key(addr: SocketAddr, key: &str) -> (Client, String) {
    let mut ws = ws_connect(addr, &format!("/app/{key}?protocol=7&client=js&version=8.4.0&flash=false"));
    let hello = recv(&mut ws);
    assert_eq!(hello["event"], "pusher:connection_established", "{hello}");
    let socket_id = data(&hello)["socket_id"].as_str().unwrap().to_owned();
    (ws, socket_id)
}

fn auth(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    let message = match channel_data {
        Some(d) => format!("{socket_id}:{channel}:{d}"),
        None => format!("{socket_id}:{channel}"),
    };
    format!("{KEY}:{}", sign(SECRET, &message))
}

/// Subscribes (signing private and presence channels) and returns the reply.
fn subscribe(ws: &mut Client, socket_id: &str, channel: &str, channel_data: Option<&str>) -> Value {
    let mut d = json!({"channel": channel});
    if channel.starts_with("private-") || channel.starts_with("presence-") {
        d["auth"] = auth(socket_id, channel, channel_data).into();
    }
    if let Some(cd) = channel_data {
        d["channel_data"] = cd.into();
    }
    send(ws, json!({"event": "pusher:subscribe", "data": d}));
    recv(ws)
}

fn subscribed(ws: &mut Client, socket_id: &str, channel: &str, channel_data: Option<&str>) -> Value {
    let reply = subscribe(ws, socket_id, channel, channel_data);
    assert_eq!(reply["event"], "pusher_internal:subscription_succeeded", "{reply}");
    assert_eq!(reply["channel"], channel);
    reply
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn http(addr: SocketAddr, method: &str, target: &str, body: &str) -> (u16, Value) {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = http_exchange(addr, request.as_bytes());
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())))
}

/// A request to the Pusher HTTP API, signed as the SDKs sign it.
fn api(addr: SocketAddr, method: &str, path: &str, params: &[(&str, &str)], body: &str) -> (u16, Value) {
    let query = sign_rest(method, path, params, body.as_bytes(), KEY, SECRET, now());
    http(addr, method, &format!("{path}?{query}"), body)
}

fn trigger(addr: SocketAddr, body: Value) -> (u16, Value) {
    api(addr, "POST", "/apps/1/events", &[], &body.to_string())
}

#[test]
fn connection_established_and_ping_pong() {
    let server = start(1);
    let (mut ws, socket_id) = connect(server.local_addr());
    let (a, b) = socket_id.split_once('.').expect("A.B");
    assert!(a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok(), "{socket_id}");
    send(&mut ws, json!({"event": "pusher:ping", "data": {}}));
    assert_eq!(recv(&mut ws), json!({"event": "pusher:pong", "data": "{}"}));
    let (_, other) = connect(server.local_addr());
    assert_ne!(socket_id, other);
}

#[test]
fn a_silent_connection_gets_pusher_ping() {
    let config = Config { idle_timeout: std::time::Duration::from_secs(2), ..test_config() };
    let server =
        gateway::start(config, GatewayConfig { pusher_apps: vec![app()], ..GatewayConfig::default() }).unwrap();
    let mut ws = ws_connect(server.local_addr(), &format!("/app/{KEY}?protocol=7"));
    assert_eq!(data(&recv(&mut ws))["activity_timeout"], 1, "half the idle timeout");
    assert_eq!(recv(&mut ws), json!({"event": "pusher:ping", "data": "{}"}), "after a second of silence");
    send(&mut ws, json!({"event": "pusher:pong", "data": {}}));
    send(&mut ws, json!({"event": "pusher:ping"}));
    assert_eq!(recv(&mut ws)["event"], "pusher:pong");
}

#[test]
fn a_connection_that_never_answers_is_closed_with_4201_and_a_stop_says_4200() {
    let config = Config {
        idle_timeout: std::time::Duration::from_secs(2),
        drain_window: std::time::Duration::from_secs(1),
        ..test_config()
    };
    let server =
        gateway::start(config, GatewayConfig { pusher_apps: vec![app()], ..GatewayConfig::default() }).unwrap();
    let mut silent = ws_connect(server.local_addr(), &format!("/app/{KEY}?protocol=7"));
    let (texts, close) = closed(&mut silent);
    let events: Vec<&serde_json::Value> = texts.iter().map(|t| &t["event"]).collect();
    assert_eq!(events, ["pusher:connection_established", "pusher:ping"], "{texts:?}");
    assert_eq!(close, 4201, "pong reply not received: pusher-js reconnects at once");
    let mut open = ws_connect(server.local_addr(), &format!("/app/{KEY}?protocol=7"));
    assert_eq!(recv(&mut open)["event"], "pusher:connection_established");
    server.shutdown();
    let (_, close) = closed(&mut open);
    assert_eq!(close, 4200, "a graceful stop asks pusher-js to reconnect at once");
}

#[test]
fn refusals_are_an_error_and_a_close_with_the_same_code() {
    let server = start(1);
    let addr = server.local_addr();
    for (path, code) in [
        ("/app/wrong-key?protocol=7", 4001),
        ("/app/app-key", 4007),
        ("/app/app-key?protocol=seven", 4006),
        ("/app/app-key?protocol=3", 4007),
        ("/app/app-key?protocol=6", 4007),
        ("/app/?protocol=7", 4005),
        ("/app/app-key/extra?protocol=7", 4005),
    ] {
        let mut ws = ws_connect(addr, path);
        let (texts, close) = closed(&mut ws);
        assert_eq!(texts.len(), 1, "{path}: {texts:?}");
        assert_eq!(texts[0]["event"], "pusher:error", "{path}");
        assert_eq!(texts[0]["data"]["code"], code, "{path}: data is an object with the code");
        assert_eq!(close, code, "{path}");
    }
}

#[test]
fn disabled_apps_and_connection_quotas() {
    let disabled = AppConfig { enabled: false, ..AppConfig::new("2", "off", "s") };
    let small = AppConfig { max_connections: 1, ..AppConfig::new("3", "small", "s") };
    let server = start_apps(1, vec![app(), disabled, small]);
    let addr = server.local_addr();
    let (_, close) = closed(&mut ws_connect(addr, "/app/off?protocol=7"));
    assert_eq!(close, 4003);
    let (first, _) = connect_key(addr, "small");
    let (_, close) = closed(&mut ws_connect(addr, "/app/small?protocol=7"));
    assert_eq!(close, 4004, "over the app's quota");
    drop(first);
    wait_until("the quota frees", IO_TIMEOUT, || {
        let mut ws = ws_connect(addr, "/app/small?protocol=7");
        matches!(ws.read(), Ok(Message::Text(t)) if t.contains("pusher:connection_established"))
    });
}

#[test]
fn without_an_app_the_endpoints_are_404() {
    let server = gateway::start(test_config(), GatewayConfig::default()).unwrap();
    let addr = server.local_addr();
    let stream = TcpStream::connect(addr).unwrap();
    match tungstenite::client(format!("ws://{addr}/app/key?protocol=7"), stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => assert_eq!(r.status(), 404),
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }
    assert_eq!(http(addr, "POST", "/apps/1/events", "{}").0, 404);
}

#[test]
fn private_channels_need_a_valid_signature() {
    let server = start(1);
    let (mut ws, socket_id) = connect(server.local_addr());
    subscribed(&mut ws, &socket_id, "private-orders.1", None);
    let bad = format!("{KEY}:{}", sign("wrong-secret", &format!("{socket_id}:private-x")));
    send(&mut ws, json!({"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": bad}}));
    let reply = recv(&mut ws);
    assert_eq!(reply["event"], "pusher:subscription_error", "{reply}");
    assert_eq!((reply["channel"].as_str(), reply["data"]["status"].as_u64()), (Some("private-x"), Some(401)));
    send(&mut ws, json!({"event": "pusher:subscribe", "data": {"channel": "private-y"}}));
    assert_eq!(recv(&mut ws)["data"]["type"], "AuthError", "no auth at all");
    // Another connection's signature is no good here.
    let (_, other) = connect(server.local_addr());
    let stolen = auth(&other, "private-z", None);
    send(&mut ws, json!({"event": "pusher:subscribe", "data": {"channel": "private-z", "auth": stolen}}));
    assert_eq!(recv(&mut ws)["event"], "pusher:subscription_error");
    // The connection is still usable.
    subscribed(&mut ws, &socket_id, "news", None);
}

fn presence_two_connections_of_one_user(workers: usize) {
    let server = start(workers);
    let addr = server.local_addr();
    let alice = r#"{"user_id":"alice","user_info":{"name":"Alice"}}"#;
    let bob = r#"{"user_id":"bob"}"#;
    let (mut a1, s1) = connect(addr);
    let reply = subscribed(&mut a1, &s1, "presence-room", Some(alice));
    assert_eq!(data(&reply), json!({"presence": {"ids": ["alice"], "hash": {"alice": {"name": "Alice"}}, "count": 1}}));
    let (mut b, sb) = connect(addr);
    let reply = subscribed(&mut b, &sb, "presence-room", Some(bob));
    assert_eq!(data(&reply)["presence"]["count"], 2);
    let added = recv(&mut a1);
    assert_eq!(added["event"], "pusher_internal:member_added");
    assert_eq!(data(&added), json!({"user_id": "bob", "user_info": null}));
    // Alice's second connection: no member_added for anyone, the count stays 2.
    let (mut a2, s2) = connect(addr);
    assert_eq!(data(&subscribed(&mut a2, &s2, "presence-room", Some(alice)))["presence"]["count"], 2);
    let (status, users) = api(addr, "GET", "/apps/1/channels/presence-room/users", &[], "");
    assert_eq!((status, users), (200, json!({"users": [{"id": "alice"}, {"id": "bob"}]})));
    let (_, info) =
        api(addr, "GET", "/apps/1/channels/presence-room", &[("info", "user_count,subscription_count")], "");
    assert_eq!(info, json!({"occupied": true, "user_count": 2, "subscription_count": 3}));
    // One of Alice's connections leaves: nobody hears of it. The other leaves: member_removed.
    drop(a1);
    send(&mut a2, json!({"event": "pusher:unsubscribe", "data": {"channel": "presence-room"}}));
    let removed = recv(&mut b);
    assert_eq!(removed["event"], "pusher_internal:member_removed", "{removed}");
    assert_eq!(data(&removed), json!({"user_id": "alice"}));
    let (_, info) = api(addr, "GET", "/apps/1/channels/presence-room", &[("info", "user_count")], "");
    assert_eq!(info, json!({"occupied": true, "user_count": 1}));
}

#[test]
fn presence_counts_a_user_once_across_connections() {
    presence_two_connections_of_one_user(1);
}

#[test]
fn presence_counts_a_user_once_across_connections_on_two_workers() {
    presence_two_connections_of_one_user(2);
}

#[test]
fn presence_member_limit_and_bad_channel_data() {
    let server = start_apps(1, vec![AppConfig { max_presence_members: 1, ..app() }]);
    let (mut a, sa) = connect(server.local_addr());
    subscribed(&mut a, &sa, "presence-x", Some(r#"{"user_id":1}"#));
    let (mut b, sb) = connect(server.local_addr());
    let reply = subscribe(&mut b, &sb, "presence-x", Some(r#"{"user_id":2}"#));
    assert_eq!(
        (reply["event"].as_str(), reply["data"]["type"].as_str()),
        (Some("pusher:subscription_error"), Some("LimitReached"))
    );
    let reply = subscribe(&mut b, &sb, "presence-y", Some(r#"{"name":"no id"}"#));
    assert_eq!(reply["event"], "pusher:subscription_error");
    let (_, info) =
        api(server.local_addr(), "GET", "/apps/1/channels/presence-x", &[("info", "subscription_count")], "");
    assert_eq!(info["subscription_count"], 1, "refused subscriptions count nowhere");
}

fn client_events(workers: usize) {
    let server = start(workers);
    let addr = server.local_addr();
    let (mut a, sa) = connect(addr);
    let (mut b, sb) = connect(addr);
    subscribed(&mut a, &sa, "private-chat", None);
    subscribed(&mut b, &sb, "private-chat", None);
    let mut native = native_subscriber(addr, "private-chat");
    send(&mut a, json!({"event": "client-typing", "channel": "private-chat", "data": {"on": true}}));
    let got = recv(&mut b);
    assert_eq!(got, json!({"event": "client-typing", "channel": "private-chat", "data": {"on": true}}));
    let n = recv_native(&mut native);
    assert_eq!(
        (n["event"].as_str(), &n["data"], n["seq"].as_u64()),
        (Some("client-typing"), &json!({"on": true}), Some(1))
    );
    // Never echoed: the sender's next event on the channel is the one after.
    assert_eq!(trigger(addr, json!({"name": "after", "channel": "private-chat", "data": "x"})).0, 200);
    assert_eq!(recv(&mut a)["event"], "after");
    // Refused: a public channel, a channel it is not on.
    subscribed(&mut a, &sa, "public", None);
    send(&mut a, json!({"event": "client-x", "channel": "public", "data": {}}));
    assert_eq!(recv(&mut a)["event"], "pusher:error");
    send(&mut a, json!({"event": "client-x", "channel": "private-other", "data": {}}));
    assert_eq!(recv(&mut a)["event"], "pusher:error");
}

#[test]
fn client_events_reach_the_others_never_the_sender() {
    client_events(1);
}

#[test]
fn client_events_reach_the_others_on_two_workers() {
    client_events(2);
}

#[test]
fn client_events_carry_the_user_id_on_presence_channels_and_are_rate_limited() {
    let server = start_apps(1, vec![AppConfig { client_event_rate: 2, ..app() }]);
    let addr = server.local_addr();
    let (mut a, sa) = connect(addr);
    let (mut b, sb) = connect(addr);
    subscribed(&mut a, &sa, "presence-p", Some(r#"{"user_id":"u1"}"#));
    subscribed(&mut b, &sb, "presence-p", Some(r#"{"user_id":"u2"}"#));
    assert_eq!(recv(&mut a)["event"], "pusher_internal:member_added");
    for n in 0..3 {
        send(&mut a, json!({"event": "client-n", "channel": "presence-p", "data": {"n": n}}));
    }
    for n in 0..2 {
        let got = recv(&mut b);
        assert_eq!((&got["data"]["n"], got["user_id"].as_str()), (&json!(n), Some("u1")));
    }
    let refused = recv(&mut a);
    assert_eq!((refused["event"].as_str(), &refused["data"]["code"]), (Some("pusher:error"), &json!(4301)));
    send(&mut a, json!({"event": "pusher:ping"}));
    assert_eq!(recv(&mut a)["event"], "pusher:pong", "the connection stays open");
}

#[test]
fn client_events_can_be_disabled() {
    let server = start_apps(1, vec![AppConfig { client_events: false, ..app() }]);
    let (mut a, sa) = connect(server.local_addr());
    subscribed(&mut a, &sa, "private-c", None);
    send(&mut a, json!({"event": "client-x", "channel": "private-c", "data": {}}));
    let e = recv(&mut a);
    assert_eq!((e["event"].as_str(), e["channel"].as_str()), (Some("pusher:error"), Some("private-c")));
}

#[test]
fn the_signed_api_refuses_tampered_requests() {
    let server = start(1);
    let addr = server.local_addr();
    let body = json!({"name": "e", "channel": "news", "data": "hi"}).to_string();
    let query = sign_rest("POST", "/apps/1/events", &[], body.as_bytes(), KEY, SECRET, now());
    assert_eq!(http(addr, "POST", &format!("/apps/1/events?{query}"), &body), (200, json!({})));
    let tampered = body.replace("hi", "ho");
    let (status, reason) = http(addr, "POST", &format!("/apps/1/events?{query}"), &tampered);
    assert_eq!(status, 401);
    assert!(reason["error"].as_str().unwrap().contains("body_md5"), "{reason}");
    let wrong_secret = sign_rest("POST", "/apps/1/events", &[], body.as_bytes(), KEY, "nope", now());
    assert_eq!(http(addr, "POST", &format!("/apps/1/events?{wrong_secret}"), &body).0, 401);
    let old = sign_rest("POST", "/apps/1/events", &[], body.as_bytes(), KEY, SECRET, now() - 3600);
    assert_eq!(http(addr, "POST", &format!("/apps/1/events?{old}"), &body).0, 401);
    assert_eq!(http(addr, "POST", "/apps/1/events", &body).0, 401, "unsigned");
    assert_eq!(api(addr, "POST", "/apps/9/events", &[], &body).0, 404, "unknown app");
    assert_eq!(api(addr, "GET", "/apps/1/nothing", &[], "").0, 404);
    assert_eq!(api(addr, "GET", "/apps/1/events", &[], "").0, 405);
}

#[test]
fn the_api_checks_what_it_publishes() {
    let server = start(1);
    let addr = server.local_addr();
    let channels: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    assert_eq!(trigger(addr, json!({"name": "e", "channels": channels, "data": "x"})).0, 400);
    assert_eq!(trigger(addr, json!({"name": "e", "channel": "a b", "data": "x"})).0, 400);
    assert_eq!(trigger(addr, json!({"name": "e", "data": "x"})).0, 400, "no channel");
    assert_eq!(trigger(addr, json!({"name": "e", "channel": "c", "data": "x".repeat(10241)})).0, 413);
    assert_eq!(trigger(addr, json!({"name": "pusher:x", "channel": "c", "data": "x"})).0, 400);
    assert_eq!(trigger(addr, json!({"name": "e", "channel": "c", "data": "x", "socket_id": "1"})).0, 400);
    assert_eq!(api(addr, "POST", "/apps/1/events", &[], "{oops").0, 400);
    let batch: Vec<Value> = (0..11).map(|i| json!({"name": "e", "channel": format!("c{i}"), "data": "x"})).collect();
    assert_eq!(api(addr, "POST", "/apps/1/batch_events", &[], &json!({"batch": batch}).to_string()).0, 400);
}

#[test]
fn triggers_exclude_a_socket_and_answer_channel_info() {
    let server = start(2);
    let addr = server.local_addr();
    let (mut a, sa) = connect(addr);
    let (mut b, sb) = connect(addr);
    subscribed(&mut a, &sa, "news", None);
    subscribed(&mut b, &sb, "news", None);
    let (status, answer) = trigger(
        addr,
        json!({"name": "n", "channels": ["news", "empty"], "data": "{\"k\":1}", "socket_id": sa, "info": "subscription_count"}),
    );
    assert_eq!(
        (status, answer),
        (200, json!({"channels": {"news": {"subscription_count": 2}, "empty": {"subscription_count": 0}}}))
    );
    assert_eq!(recv(&mut b), json!({"event": "n", "channel": "news", "data": "{\"k\":1}"}), "data byte for byte");
    let batch = json!({"batch": [
        {"name": "one", "channel": "news", "data": "1"},
        {"name": "two", "channel": "news", "data": "2", "info": "subscription_count"},
    ]});
    let (status, answer) = api(addr, "POST", "/apps/1/batch_events", &[], &batch.to_string());
    assert_eq!((status, answer), (200, json!({"batch": [{}, {"subscription_count": 2}]})));
    assert_eq!(recv(&mut a)["event"], "one", "the excluded socket got nothing before");
    assert_eq!(recv(&mut a)["event"], "two");
    let (_, list) = api(addr, "GET", "/apps/1/channels", &[("info", "subscription_count")], "");
    assert_eq!(list, json!({"channels": {"news": {"subscription_count": 2}}}));
    let (status, _) = api(addr, "GET", "/apps/1/channels", &[("info", "user_count")], "");
    assert_eq!(status, 400, "user_count needs filter_by_prefix=presence-");
    let (_, list) =
        api(addr, "GET", "/apps/1/channels", &[("filter_by_prefix", "presence-"), ("info", "user_count")], "");
    assert_eq!(list, json!({"channels": {}}));
    assert_eq!(api(addr, "GET", "/apps/1/channels/nobody", &[], ""), (200, json!({"occupied": false})));
    assert_eq!(api(addr, "GET", "/apps/1/channels/news/users", &[], "").0, 400, "not presence");
}

#[test]
fn cache_channels_replay_the_last_event_or_say_cache_miss() {
    let server = start(1);
    let addr = server.local_addr();
    let (mut a, sa) = connect(addr);
    subscribed(&mut a, &sa, "cache-score", None);
    assert_eq!(recv(&mut a), json!({"event": "pusher:cache_miss", "channel": "cache-score"}));
    trigger(addr, json!({"name": "score", "channel": "cache-score", "data": "1-0"}));
    trigger(addr, json!({"name": "score", "channel": "cache-score", "data": "2-0"}));
    let (mut b, sb) = connect(addr);
    subscribed(&mut b, &sb, "cache-score", None);
    assert_eq!(recv(&mut b), json!({"event": "score", "channel": "cache-score", "data": "2-0"}));
    // Encrypted payloads pass through untouched.
    let sealed = r#"{"nonce":"bm9uY2U=","ciphertext":"Y2lwaGVy"}"#;
    trigger(addr, json!({"name": "secret", "channel": "private-encrypted-cache-x", "data": sealed}));
    subscribed(&mut b, &sb, "private-encrypted-cache-x", None);
    assert_eq!(recv(&mut b)["data"], sealed);
}

#[test]
fn signin_send_to_user_and_terminate_connections_on_two_workers() {
    let server = start(2);
    let addr = server.local_addr();
    let user_data = r#"{"id":"u7","user_info":{"name":"Ann"}}"#;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (mut ws, socket_id) = connect(addr);
        let signature = sign(SECRET, &format!("{socket_id}::user::{user_data}"));
        send(
            &mut ws,
            json!({"event": "pusher:signin", "data": {"auth": format!("{KEY}:{signature}"), "user_data": user_data}}),
        );
        let ok = recv(&mut ws);
        assert_eq!(ok["event"], "pusher:signin_success", "{ok}");
        assert_eq!(data(&ok)["user_data"], user_data);
        // pusher-js then subscribes to the user's channel without auth.
        send(&mut ws, json!({"event": "pusher:subscribe", "data": {"auth": "", "channel": "#server-to-user-u7"}}));
        assert_eq!(recv(&mut ws)["event"], "pusher_internal:subscription_succeeded");
        clients.push(ws);
    }
    let (mut stranger, _) = connect(addr);
    send(
        &mut stranger,
        json!({"event": "pusher:signin", "data": {"auth": format!("{KEY}:00"), "user_data": user_data}}),
    );
    assert_eq!(recv(&mut stranger)["data"]["code"], 4009, "a bad signature");
    send(&mut stranger, json!({"event": "pusher:subscribe", "data": {"channel": "#server-to-user-u7"}}));
    assert_eq!(recv(&mut stranger)["event"], "pusher:subscription_error");
    assert_eq!(trigger(addr, json!({"name": "hello", "channel": "#server-to-user-u7", "data": "hi"})).0, 200);
    for ws in &mut clients {
        assert_eq!(recv(ws), json!({"event": "hello", "channel": "#server-to-user-u7", "data": "hi"}));
    }
    let (status, _) = api(addr, "POST", "/apps/1/users/u7/terminate_connections", &[], "");
    assert_eq!(status, 200);
    for ws in &mut clients {
        let (texts, code) = closed(ws);
        assert_eq!((texts[0]["data"]["code"].as_u64(), code), (Some(4009), 4009));
    }
    send(&mut stranger, json!({"event": "pusher:ping"}));
    assert_eq!(recv(&mut stranger)["event"], "pusher:pong", "others stay");
}

fn native_subscriber(addr: SocketAddr, channel: &str) -> Client {
    let mut ws = ws_connect(addr, "/");
    send(&mut ws, json!({"op": "subscribe", "channel": channel}));
    assert_eq!(recv(&mut ws)["op"], "subscribed");
    ws
}

fn recv_native(ws: &mut Client) -> Value {
    let m = recv(ws);
    assert_eq!(m["op"], "message", "{m}");
    m
}

fn one_channel_space(workers: usize) {
    let server = start(workers);
    let addr = server.local_addr();
    let (mut p, sp) = connect(addr);
    subscribed(&mut p, &sp, "orders", None);
    let mut native = native_subscriber(addr, "orders");
    // Native -> Pusher, over WebSocket and over /api/publish.
    let mut publisher = ws_connect(addr, "/");
    send(&mut publisher, json!({"op": "publish", "channel": "orders", "event": "created", "data": {"id": 1}, "id": 1}));
    assert_eq!(recv(&mut publisher), json!({"op": "ack", "id": 1, "seq": 1}));
    assert_eq!(recv(&mut p), json!({"event": "created", "channel": "orders", "data": "{\"id\":1}"}));
    let m = recv_native(&mut native);
    assert_eq!((m["seq"].as_u64(), m["event"].as_str()), (Some(1), Some("created")));
    let (status, _) = http(addr, "POST", "/api/publish", &json!({"channel": "orders", "data": "plain"}).to_string());
    assert_eq!(status, 200);
    assert_eq!(recv(&mut p), json!({"event": "message", "channel": "orders", "data": "plain"}));
    let m = recv_native(&mut native);
    assert_eq!((m["seq"].as_u64(), m.get("event")), (Some(2), None), "no event named: the native frame is as before");
    // Pusher -> native: JSON data parsed, other strings kept.
    trigger(addr, json!({"name": "shipped", "channel": "orders", "data": "{\"id\":1}"}));
    let m = recv_native(&mut native);
    assert_eq!(m, json!({"op": "message", "channel": "orders", "seq": 3, "event": "shipped", "data": {"id": 1}}));
    trigger(addr, json!({"name": "note", "channel": "orders", "data": "not json"}));
    assert_eq!(recv_native(&mut native)["data"], "not json");
    assert_eq!(recv(&mut p)["event"], "shipped");
    assert_eq!(recv(&mut p)["data"], "not json");
    // A native resume sees the Pusher publishes in the history.
    let mut late = ws_connect(addr, "/");
    send(&mut late, json!({"op": "subscribe", "channel": "orders", "since": 2}));
    assert_eq!(recv(&mut late)["seq"], 4);
    assert_eq!(recv_native(&mut late)["event"], "shipped");
    assert_eq!(recv_native(&mut late)["seq"], 4);
}

#[test]
fn one_channel_space_both_ways() {
    one_channel_space(1);
}

#[test]
fn one_channel_space_both_ways_on_two_workers() {
    one_channel_space(2);
}

#[test]
fn apps_have_their_own_channels() {
    let server = start_apps(1, vec![app(), AppConfig::new("2", "k2", "s2")]);
    let addr = server.local_addr();
    let (mut other, so) = connect_key(addr, "k2");
    subscribed(&mut other, &so, "news", None);
    let (mut first, sf) = connect(addr);
    subscribed(&mut first, &sf, "news", None);
    trigger(addr, json!({"name": "for-app-1", "channel": "news", "data": "1"}));
    assert_eq!(recv(&mut first)["event"], "for-app-1");
    let body = json!({"name": "for-app-2", "channel": "news", "data": "2"}).to_string();
    let query = sign_rest("POST", "/apps/2/events", &[], body.as_bytes(), "k2", "s2", now());
    assert_eq!(http(addr, "POST", &format!("/apps/2/events?{query}"), &body).0, 200);
    assert_eq!(recv(&mut other)["event"], "for-app-2", "app 2 never saw app 1's event");
    let (_, list) = api(addr, "GET", "/apps/1/channels", &[], "");
    assert_eq!(list, json!({"channels": {"news": {}}}), "app 2's channel is not listed");
}

#[test]
fn a_connection_over_its_channel_cap_is_refused_and_stays_open() {
    let gateway =
        GatewayConfig { pusher_apps: vec![app()], max_channels_per_connection: 2, ..GatewayConfig::default() };
    let server = gateway::start(test_config(), gateway).unwrap();
    let addr = server.local_addr();
    let (mut ws, sid) = connect(addr);
    subscribed(&mut ws, &sid, "a", None);
    subscribed(&mut ws, &sid, "private-b", None);
    subscribed(&mut ws, &sid, "a", None); // already on it: confirmed, not counted again
    let refused = subscribe(&mut ws, &sid, "c", None);
    assert_eq!(refused["event"], "pusher:subscription_error", "{refused}");
    assert_eq!((refused["channel"].as_str(), refused["data"]["type"].as_str()), (Some("c"), Some("LimitReached")));
    send(&mut ws, json!({"event": "pusher:ping"}));
    assert_eq!(recv(&mut ws)["event"], "pusher:pong", "the connection stays open");
    // Leaving one makes room; other connections were never limited by this one.
    send(&mut ws, json!({"event": "pusher:unsubscribe", "data": {"channel": "a"}}));
    subscribed(&mut ws, &sid, "c", None);
    let (mut other, so) = connect(addr);
    subscribed(&mut other, &so, "d", None);
    let (_, list) = api(addr, "GET", "/apps/1/channels", &[], "");
    assert_eq!(list, json!({"channels": {"c": {}, "d": {}, "private-b": {}}}), "the refused subscribe created nothing");
}

#[test]
fn a_trigger_over_the_channel_limit_publishes_nothing() {
    let gateway = GatewayConfig { pusher_apps: vec![app()], max_channels: 2, ..GatewayConfig::default() };
    let server = gateway::start(test_config(), gateway).unwrap();
    let addr = server.local_addr();
    let (mut ws, sid) = connect(addr);
    subscribed(&mut ws, &sid, "a", None);
    // a is tracked, b makes two, c would make three: refused before a is published.
    let (status, body) = trigger(addr, json!({"name": "first", "channels": ["a", "b", "c"], "data": "1"}));
    assert_eq!(status, 429, "{body}");
    let batch = json!({"batch": [
        {"name": "second", "channel": "a", "data": "2"},
        {"name": "second", "channel": "b", "data": "2"},
        {"name": "second", "channel": "c", "data": "2"},
    ]});
    let (status, body) = api(addr, "POST", "/apps/1/batch_events", &[], &batch.to_string());
    assert_eq!(status, 429, "{body}");
    assert_eq!(trigger(addr, json!({"name": "third", "channels": ["a", "b"], "data": "3"})).0, 200, "within the limit");
    assert_eq!(recv(&mut ws)["event"], "third", "nothing of the refused requests reached a");
    let mut native = ws_connect(addr, "/");
    send(&mut native, json!({"op": "subscribe", "channel": "a", "since": 0}));
    assert_eq!(recv(&mut native)["seq"], 1, "one publish in a's history");
}

#[test]
fn a_native_resume_replays_pusher_events_published_with_no_native_subscriber() {
    let server = start(1);
    let addr = server.local_addr();
    let (mut p, sp) = connect(addr);
    subscribed(&mut p, &sp, "solo", None);
    assert_eq!(trigger(addr, json!({"name": "one", "channel": "solo", "data": "{\"n\":1}"})).0, 200);
    assert_eq!(trigger(addr, json!({"name": "two", "channel": "solo", "data": "plain"})).0, 200);
    assert_eq!(recv(&mut p)["event"], "one");
    let mut native = ws_connect(addr, "/");
    send(&mut native, json!({"op": "subscribe", "channel": "solo", "since": 0}));
    let reply = recv(&mut native);
    assert_eq!(
        (reply["op"].as_str(), reply["seq"].as_u64(), reply["recovered"].as_bool()),
        (Some("subscribed"), Some(2), Some(true))
    );
    assert_eq!(
        recv_native(&mut native),
        json!({"op": "message", "channel": "solo", "seq": 1, "event": "one", "data": {"n": 1}})
    );
    assert_eq!(
        recv_native(&mut native),
        json!({"op": "message", "channel": "solo", "seq": 2, "event": "two", "data": "plain"})
    );
    // Live from now on.
    assert_eq!(trigger(addr, json!({"name": "three", "channel": "solo", "data": "3"})).0, 200);
    assert_eq!(recv_native(&mut native)["seq"], 3);
}
